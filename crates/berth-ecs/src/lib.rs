//! Amazon ECS for Berth: the ECS API over the store, the agent protocol's
//! server side, and the controllers that act on what the API records.
//!
//! Four layers, each a module:
//!
//! - `state`: records, keys, indexes, queries, typed statuses;
//! - `launch`: reservations, usage, instance snapshots, EC2 and Fargate
//!   placement;
//! - `api`: one module per ECS resource, plus what each operation needs
//!   from IAM;
//! - `control`: the service controller, the network controller, task
//!   garbage collection, the agent protocol and the metering reports.
//!
//! Architecture invariant: a layer imports only the layers below it (and
//! the shared `error`); `api` modules never import each other and `control`
//! modules never import each other or `api`. `architecture_tests` checks it
//! on every `cargo test`.

mod error;

pub(crate) mod api;
pub(crate) mod control;
pub(crate) mod launch;
pub(crate) mod state;

#[cfg(test)]
mod architecture_tests;
#[cfg(test)]
mod placement_sequences;
#[cfg(test)]
pub(crate) mod test_support;

pub use api::code_deploy::{
    CodeDeployStart, CodeDeployTarget, ContinueWait, ServiceDeploymentState, TrafficShift,
};
pub use api::not_implemented::NOT_IMPLEMENTED;
pub use api::{EcsService, ExecService};
pub use control::agent_api::{self, AgentService};
pub use control::gateways::{self as gateway_control, GatewayControl, GatewayJob};
pub use control::gc::run_task_gc;
pub use control::load_balancing::{self, run_target_controller};
pub use control::metering;
pub use control::networking::{self, run_network_controller};
pub use control::registration::{self, run_registration_controller};
pub use control::service_controller::{self, ServiceController};
pub use state::exec::ExecHub;
pub use state::index::backfill as backfill_indexes;
pub use state::instances::{
    instance_host_ipv4, Presence, SharedPresence, FARGATE_CAPACITY_ATTRIBUTE, FARGATE_DEDICATED,
    FARGATE_SHARED,
};
pub use state::keys::Scope;
pub use state::network::{AttachedInterface, SubnetInfo, TaskNetworks};
pub use state::records::decoded;
pub use state::tasks::{Reservation, TaskRecord, TaskStatus};
