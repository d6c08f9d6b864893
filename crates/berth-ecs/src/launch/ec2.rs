//! EC2 launch type placement: the cluster's container instances through
//! the scheduler, or one named instance (StartTask, daemons).

use berth_model::shapes::ecs::Failure;
use berth_model::AwsError;
use berth_scheduler::{InstanceSnapshot, Placement, Policy};
use berth_store::{Op, ReadView};

use crate::error;
use crate::launch::request::{first_subnet, new_task, Batch, Launch};
use crate::launch::snapshot::{live_instances, snapshot, task_request};
use crate::launch::usage::{usage_of_instance, Usage};
use crate::state::index;
use crate::state::instances::{InstanceRecord, Presence};
use crate::state::keys::Scope;
use crate::state::tasks::TaskRecord;

/// Places `count` tasks of an EC2 launch on the cluster's container
/// instances through the scheduler and returns the writes, the tasks and
/// ECS's failures. Call it inside a mutation.
pub(crate) fn place(
    view: &dyn ReadView,
    scope: &Scope,
    launch: &Launch,
    count: usize,
    presence: &Presence,
    policy: &Policy,
    created_at: f64,
) -> Result<Batch, AwsError> {
    let cluster = &launch.cluster;
    let records = live_instances(view, scope, cluster)?;
    if records.is_empty() {
        return Err(error::invalid_parameter(
            "No Container Instances were found in your cluster.",
        ));
    }
    let mut snapshots: Vec<InstanceSnapshot> = Vec::with_capacity(records.len());
    for r in &records {
        let usage = usage_of_instance(view, scope, cluster, &r.id)?;
        snapshots.push(snapshot(r, &usage, presence));
    }
    let requests = vec![task_request(launch); count];
    let plan = berth_scheduler::place_with(&mut snapshots, &requests, policy, rand::random());
    let mut ops = Vec::new();
    let mut tasks = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for placement in plan {
        match placement {
            Placement::Placed(i) => {
                let slot = first_subnet(launch);
                let record = new_task(scope, launch, &records[i], &slot, created_at);
                ops.extend(index::put_task(scope, &record)?);
                tasks.push(record);
            }
            Placement::Unplaced(rejections) => {
                for (i, rejection) in rejections {
                    let reason = rejection.reason();
                    if seen.insert((i, reason.clone())) {
                        failures.push(Failure {
                            arn: Some(records[i].arn().to_string()),
                            reason: Some(reason),
                            detail: None,
                        });
                    }
                }
            }
        }
    }
    Ok((ops, tasks, failures))
}

/// Places one task of `launch` on a given instance (StartTask, daemons),
/// given what the instance's tasks use (read it with
/// [`usage_of_instance`]); the new
/// task is added to `usage`.
pub(crate) fn place_on(
    scope: &Scope,
    launch: &Launch,
    instance: &InstanceRecord,
    usage: &mut Usage,
    presence: &Presence,
    created_at: f64,
) -> Result<Result<(Vec<Op>, TaskRecord), Failure>, AwsError> {
    let snap = snapshot(instance, usage, presence);
    if let Some(rejection) = berth_scheduler::rejection(&snap, &task_request(launch)) {
        return Ok(Err(Failure {
            arn: Some(instance.arn().to_string()),
            reason: Some(rejection.reason()),
            detail: None,
        }));
    }
    let task = new_task(scope, launch, instance, &first_subnet(launch), created_at);
    usage.add(&task);
    Ok(Ok((index::put_task(scope, &task)?, task)))
}
