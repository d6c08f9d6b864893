//! Fargate placement on Berth's own Fargate hosts (agents registered with
//! [`FARGATE_CAPACITY_ATTRIBUTE`](crate::state::instances::FARGATE_CAPACITY_ATTRIBUTE),
//! in any cluster of the account):
//! providers by the strategy, subnets in turn, hosts by the default spread;
//! an on-demand task may reclaim FARGATE_SPOT capacity.

use std::collections::BTreeMap;

use berth_model::shapes::ecs::Failure;
use berth_model::AwsError;
use berth_scheduler::capacity::{split_tasks, StrategyItem};
use berth_scheduler::{InstanceSnapshot, Placement};
use berth_store::ReadView;

use crate::error;
use crate::launch::capacity::{FARGATE, FARGATE_SPOT};
use crate::launch::request::{new_task, Batch, Launch, Slot};
use crate::launch::snapshot::{snapshot, task_request};
use crate::launch::usage::usage_of_instance;
use crate::state::index;
use crate::state::instances::{self, InstanceRecord, Presence};
use crate::state::keys::Scope;
use crate::state::records::decode;
use crate::state::tasks::{request_stop, TaskRecord, SPOT_INTERRUPTION, SPOT_REASON};

/// ECS's failure when Fargate has no room.
pub(crate) const NO_CAPACITY: &str =
    "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// Every live host offering Fargate capacity in the account+region.
fn hosts(view: &dyn ReadView, scope: &Scope) -> Result<Vec<InstanceRecord>, AwsError> {
    Ok(view
        .range(&scope.all_instances(), None, usize::MAX)
        .iter()
        .map(decode::<InstanceRecord>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|r| r.status() == instances::ACTIVE && r.offers_fargate())
        .collect())
}

/// Places `count` tasks of a Fargate launch: providers by the strategy
/// (given how many tasks of the same service each already runs in
/// `launch.provider_counts`), subnets in turn, hosts by the default
/// spread. An on-demand task that finds no room reclaims FARGATE_SPOT
/// tasks on one host (they stop with `SpotInterruption`).
pub(crate) fn place(
    view: &dyn ReadView,
    scope: &Scope,
    launch: &Launch,
    strategy: &[StrategyItem],
    count: usize,
    presence: &Presence,
    created_at: f64,
) -> Result<Batch, AwsError> {
    let providers = split_tasks(strategy, &launch.provider_counts, count as u32)
        .map_err(|e| error::invalid_parameter(e.0))?;
    let hosts = hosts(view, scope)?;
    // A host's usage: its EC2 tasks and the Fargate tasks it runs for every
    // cluster, from its own index entries.
    let mut snapshots = Vec::new();
    for h in &hosts {
        let usage = usage_of_instance(view, scope, &h.cluster, &h.id)?;
        let mut snapshot = snapshot(h, &usage, presence);
        // Fargate tasks have their own addresses: no host ports.
        snapshot.ports_tcp_used.clear();
        snapshot.ports_udp_used.clear();
        snapshots.push(snapshot);
    }
    // The hosts' tasks, read only when a FARGATE task needs to reclaim
    // FARGATE_SPOT capacity.
    let mut hosted: Option<Vec<Vec<TaskRecord>>> = None;
    let mut request = task_request(launch);
    request.host_ports_tcp.clear();
    request.host_ports_udp.clear();
    request.required_attributes.clear();
    let policy = berth_scheduler::Policy::default();
    let mut ops = Vec::new();
    let mut placed = Vec::new();
    let mut failures = Vec::new();
    let mut interrupted: BTreeMap<String, TaskRecord> = BTreeMap::new();
    let subnet_start = launch.provider_counts.values().sum::<u32>() as usize;
    for (i, provider) in providers.iter().enumerate() {
        let subnet = launch
            .network
            .as_ref()
            .and_then(|n| n.subnets.get((subnet_start + i) % n.subnets.len().max(1)))
            .cloned();
        let plan = berth_scheduler::place_with(
            &mut snapshots,
            std::slice::from_ref(&request),
            &policy,
            rand::random(),
        );
        let mut host = match plan.first() {
            Some(Placement::Placed(h)) => Some(*h),
            _ => None,
        };
        if host.is_none() && provider == FARGATE {
            if hosted.is_none() {
                let mut tasks = Vec::with_capacity(hosts.len());
                for h in &hosts {
                    tasks.push(index::instance_tasks(view, scope, &h.cluster, &h.id)?);
                }
                hosted = Some(tasks);
            }
            host = reclaim_spot(
                &mut snapshots,
                hosted.as_deref().unwrap_or(&[]),
                &request,
                &mut interrupted,
                created_at,
            );
        }
        let Some(h) = host else {
            failures.push(Failure {
                arn: None,
                reason: Some(NO_CAPACITY.into()),
                detail: None,
            });
            continue;
        };
        let slot = Slot {
            provider: Some(provider.clone()),
            subnet,
        };
        let record = new_task(scope, launch, &hosts[h], &slot, created_at);
        ops.extend(index::put_task(scope, &record)?);
        placed.push(record);
    }
    for (_, record) in interrupted {
        ops.extend(index::put_task(scope, &record)?);
    }
    Ok((ops, placed, failures))
}

/// Stops FARGATE_SPOT tasks on the first host where that makes room for
/// `request`, youngest first, and gives their capacity to it. Answers the
/// host.
fn reclaim_spot(
    snapshots: &mut [InstanceSnapshot],
    hosted: &[Vec<TaskRecord>],
    request: &berth_scheduler::TaskRequest,
    interrupted: &mut BTreeMap<String, TaskRecord>,
    at: f64,
) -> Option<usize> {
    for (h, snapshot) in snapshots.iter_mut().enumerate() {
        if !snapshot.agent_connected {
            continue;
        }
        let mut spot: Vec<&TaskRecord> = hosted
            .get(h)
            .into_iter()
            .flatten()
            .filter(|t| {
                t.task.capacity_provider_name.as_deref() == Some(FARGATE_SPOT)
                    && t.holds_resources()
                    && !interrupted.contains_key(&t.id)
            })
            .collect();
        spot.sort_by(|a, b| {
            b.task
                .created_at
                .partial_cmp(&a.task.created_at)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let (mut cpu, mut memory) = (snapshot.cpu_remaining, snapshot.memory_remaining);
        let mut chosen = Vec::new();
        for t in spot {
            if cpu >= request.cpu && memory >= request.memory {
                break;
            }
            cpu += t.reservation.cpu;
            memory += t.reservation.memory;
            chosen.push(t);
        }
        if cpu < request.cpu || memory < request.memory || chosen.is_empty() {
            continue;
        }
        for t in chosen {
            let mut record = t.clone();
            request_stop(&mut record, SPOT_INTERRUPTION, SPOT_REASON, at, false);
            interrupted.insert(record.id.clone(), record);
        }
        snapshot.cpu_remaining = cpu - request.cpu;
        snapshot.memory_remaining = memory - request.memory;
        snapshot.task_count += 1;
        return Some(h);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tasks::TaskStatus;
    use berth_scheduler::InstanceStatus;

    fn spot_task(id: &str, cpu: i64, created: f64) -> TaskRecord {
        let mut t = TaskRecord {
            id: id.into(),
            cluster: "default".into(),
            ..TaskRecord::default()
        };
        t.task.capacity_provider_name = Some(FARGATE_SPOT.into());
        t.task.last_status = Some(TaskStatus::Running.into());
        t.task.desired_status = Some(TaskStatus::Running.into());
        t.task.created_at = Some(created);
        t.reservation.cpu = cpu;
        t.reservation.memory = 512;
        t
    }

    fn full_host() -> InstanceSnapshot {
        InstanceSnapshot {
            arn: "host".into(),
            ec2_instance_id: String::new(),
            status: InstanceStatus::Active,
            agent_connected: true,
            cpu_remaining: 0,
            memory_remaining: 1024,
            ports_tcp_used: Default::default(),
            ports_udp_used: Default::default(),
            custom_remaining: Default::default(),
            attributes: Default::default(),
            task_count: 3,
            groups: Default::default(),
            agent_version: None,
            registered_at: None,
        }
    }

    #[test]
    fn on_demand_reclaims_the_youngest_spot_tasks_it_needs() {
        let mut snapshots = vec![full_host()];
        let hosted = vec![vec![
            spot_task("old", 256, 1.0),
            spot_task("young", 256, 3.0),
            spot_task("middle", 256, 2.0),
        ]];
        let request = berth_scheduler::TaskRequest {
            cpu: 512,
            memory: 512,
            ..Default::default()
        };
        let mut interrupted = BTreeMap::new();
        let host = reclaim_spot(&mut snapshots, &hosted, &request, &mut interrupted, 10.0);
        assert_eq!(host, Some(0));
        let ids: Vec<&str> = interrupted.keys().map(|k| k.as_str()).collect();
        assert_eq!(ids, ["middle", "young"]);
        let stopped = &interrupted["young"];
        assert_eq!(stopped.desired_status(), TaskStatus::Stopped);
        assert_eq!(stopped.task.stop_code.as_deref(), Some(SPOT_INTERRUPTION));
        assert_eq!(stopped.task.stopped_reason.as_deref(), Some(SPOT_REASON));
        assert!(stopped.reclaimed());
        assert_eq!(snapshots[0].cpu_remaining, 0);

        // Nothing left to reclaim: no host.
        let request = berth_scheduler::TaskRequest {
            cpu: 1024,
            memory: 512,
            ..Default::default()
        };
        assert_eq!(
            reclaim_spot(&mut snapshots, &hosted, &request, &mut interrupted, 11.0),
            None
        );
    }
}
