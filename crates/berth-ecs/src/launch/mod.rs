//! The second layer: placing tasks. What a launch reserves
//! ([`reservation`]), what instances' tasks already use ([`usage`], read
//! from the instance index), instances as the scheduler sees them
//! ([`snapshot`]), the capacity and network a launch uses ([`capacity`]),
//! placement policies ([`policy`]), and placement itself on container
//! instances ([`ec2`]) or Fargate hosts ([`fargate`]). Everything runs inside
//! the caller's store mutation and returns the writes to make.
//!
//! Architecture invariant: `launch` imports only `state` (and the shared
//! `error`), never `api` or `control`.

pub(crate) mod capacity;
pub(crate) mod ec2;
pub(crate) mod fargate;
pub(crate) mod policy;
pub(crate) mod request;
pub(crate) mod reservation;
pub(crate) mod snapshot;
pub(crate) mod usage;

use berth_model::AwsError;
use berth_scheduler::Policy;
use berth_store::ReadView;

use crate::launch::capacity::Capacity;
use crate::launch::request::{Batch, Launch};
use crate::state::instances::Presence;
use crate::state::keys::Scope;

/// Places `count` tasks of `launch` where its capacity says (the cluster's
/// container instances, or Fargate hosts) and returns the writes, the tasks
/// and ECS's failures. Call it inside a mutation.
pub(crate) fn place_batch(
    view: &dyn ReadView,
    scope: &Scope,
    launch: &Launch,
    count: usize,
    presence: &Presence,
    policy: &Policy,
    at: f64,
) -> Result<Batch, AwsError> {
    match &launch.capacity {
        Capacity::Fargate(strategy) => {
            fargate::place(view, scope, launch, strategy, count, presence, at)
        }
        Capacity::Ec2 => ec2::place(view, scope, launch, count, presence, policy, at),
    }
}
