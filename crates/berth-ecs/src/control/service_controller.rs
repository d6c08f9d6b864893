//! The service controller: keeps each service's tasks at its desired count,
//! rolls deployments within minimumHealthyPercent/maximumPercent, trips the
//! circuit breaker, runs daemons on every instance, and moves tasks off
//! draining or lost instances.
//!
//! Level-triggered: each pass reads the service and its tasks and decides
//! from scratch (`reconcile`, a pure function), so a pass can crash at any
//! line and the next one (or the next server) converges again. Decisions are
//! re-made and applied inside one store mutation per service, so they are
//! never based on stale state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::shapes::ecs::Deployment;
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::launch::capacity::{self, Capacity};
use crate::launch::ec2::place_on;
use crate::launch::request::prepare_launch;
use crate::launch::snapshot::snapshot;
use crate::launch::usage::usage_of_instance;
use crate::launch::{place_batch, policy};
use crate::state::clock::{self, Clock};
use crate::state::instances::{self, InstanceRecord, Presence};
use crate::state::keys::{self, Scope};
use crate::state::load_balancers;
use crate::state::records::{decode, encode, load};
use crate::state::services::{
    self, ServiceRecord, ACTIVE, COMPLETED, DRAINING, FAILED, INACTIVE, IN_PROGRESS, PRIMARY,
};
use crate::state::tasks::{request_stop, TaskRecord, TaskStatus};
use crate::state::{blue_green, index, ledger, task_definitions};

/// How an instance looks to the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InstanceState {
    pub draining: bool,
    /// Deregistered, or its agent has been gone past the timeout: its tasks
    /// are lost and replaced elsewhere.
    pub lost: bool,
    pub active: bool,
}

/// What a pass decided to do for one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Actions {
    /// Tasks to stop: id, stop code, reason, whether their instance is lost
    /// (then they are marked STOPPED at once: no agent will report them).
    pub stop: Vec<(String, String, String, bool)>,
    /// New tasks of the primary deployment to place anywhere.
    pub start: usize,
    /// Instances that need a daemon task.
    pub start_on: Vec<String>,
    /// New tasks of task sets (EXTERNAL controller): task set id, count.
    pub start_sets: Vec<(String, usize)>,
}

impl Actions {
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty()
            && self.start == 0
            && self.start_on.is_empty()
            && self.start_sets.is_empty()
    }
}

fn short_id(task: &TaskRecord) -> &str {
    &task.id
}

pub(crate) use crate::state::services::failure_threshold;

/// Seconds to wait before launching again after `failures` consecutive
/// failed tasks (ECS throttles restarts of failing services).
pub(crate) fn backoff_secs(failures: u32) -> f64 {
    match failures {
        0..=3 => 0.0,
        n => f64::from(1u32 << (n - 3).min(8)).min(300.0),
    }
}

fn has_health_check(task: &TaskRecord) -> bool {
    task.definition
        .container_definitions
        .iter()
        .flatten()
        .any(|c| c.essential != Some(false) && c.health_check.is_some())
}

/// Whether a task counts as healthy: RUNNING, HEALTHY when its definition
/// has a health check, and, for a service with load balancers
/// (`balanced`), every target it holds healthy.
fn is_healthy(task: &TaskRecord, balanced: bool) -> bool {
    task.last_status() == TaskStatus::Running
        && task.desired_status() == TaskStatus::Running
        && (!has_health_check(task) || task.task.health_status.as_deref() == Some("HEALTHY"))
        && (!balanced || load_balancers::targets_healthy(task))
}

/// Whether the service registers its tasks with load balancers.
fn is_balanced(record: &ServiceRecord) -> bool {
    record.has_balancers()
}

fn failed_stop(task: &TaskRecord) -> bool {
    matches!(
        task.task.stop_code.as_deref(),
        Some("EssentialContainerExited" | "TaskFailedToStart")
    ) || task
        .task
        .stopped_reason
        .as_deref()
        .is_some_and(|r| r.contains("health checks"))
}

fn deployment_mut<'a>(record: &'a mut ServiceRecord, id: &str) -> Option<&'a mut Deployment> {
    record
        .service
        .deployments
        .iter_mut()
        .flatten()
        .find(|d| d.id.as_deref() == Some(id))
}

/// Decides what to do for one service. Updates the record's bookkeeping
/// (counts, deployment states, events about state changes, failure
/// counting) and returns the task actions to apply.
#[cfg(test)]
pub(crate) fn reconcile(
    record: &mut ServiceRecord,
    tasks: &[&TaskRecord],
    instances: &HashMap<String, InstanceState>,
    at: f64,
) -> Actions {
    reconcile_with(
        record,
        tasks,
        instances,
        at,
        blue_green::DEFAULT_MINUTE_SECONDS,
    )
}

/// [`reconcile`] with `minute` seconds in a deployment's minute (bake
/// times of blue/green, linear and canary deployments).
pub(crate) fn reconcile_with(
    record: &mut ServiceRecord,
    tasks: &[&TaskRecord],
    instances: &HashMap<String, InstanceState>,
    at: f64,
    minute: f64,
) -> Actions {
    let name = record.name.clone();
    let mut actions = Actions::default();
    let primary_id = record
        .deployments()
        .iter()
        .find(|d| d.status.as_deref() == Some(PRIMARY))
        .and_then(|d| d.id.clone())
        .unwrap_or_default();
    let grace = f64::from(
        record
            .service
            .health_check_grace_period_seconds
            .unwrap_or(0),
    );

    // Count failures of the primary deployment once per stopped task.
    for t in tasks
        .iter()
        .filter(|t| t.last_status() == TaskStatus::Stopped)
    {
        if t.task.started_by.as_deref() == Some(primary_id.as_str())
            && failed_stop(t)
            && !record.counted_failures.contains(&t.id)
        {
            record.counted_failures.insert(t.id.clone());
            record.consecutive_failures += 1;
            record.next_launch_at = at + backoff_secs(record.consecutive_failures);
            if let Some(d) = deployment_mut(record, &primary_id) {
                d.failed_tasks = Some(d.failed_tasks.unwrap_or(0) + 1);
            }
        }
    }

    let live: Vec<&TaskRecord> = tasks
        .iter()
        .copied()
        .filter(|t| t.last_status() != TaskStatus::Stopped)
        .collect();
    let instance_of = |t: &TaskRecord| -> InstanceState {
        t.instance_id
            .as_ref()
            .and_then(|i| instances.get(i).copied())
            .unwrap_or(InstanceState {
                lost: true,
                ..InstanceState::default()
            })
    };
    // Tasks whose instance is gone: stop them now, they will never report.
    for t in &live {
        if instance_of(t).lost {
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                "Container instance is no longer available".into(),
                true,
            ));
        }
    }
    // Running tasks that fail their health checks after the grace period.
    for t in &live {
        let past_grace = t.task.started_at.is_some_and(|s| at - s >= grace);
        if t.desired_status() == TaskStatus::Running
            && t.last_status() == TaskStatus::Running
            && t.task.health_status.as_deref() == Some("UNHEALTHY")
            && past_grace
            && !instance_of(t).lost
        {
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                "Task failed container health checks".into(),
                false,
            ));
            continue;
        }
        // A target its load balancer found unhealthy, after the grace
        // period: the task is replaced.
        let target = load_balancers::unhealthy_target(t);
        if let Some(target) = target.filter(|_| {
            t.desired_status() == TaskStatus::Running
                && t.last_status() == TaskStatus::Running
                && past_grace
                && !instance_of(t).lost
        }) {
            record.event(load_balancers::unhealthy_event(&name, t, target), at);
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                load_balancers::unhealthy_reason(target),
                false,
            ));
        }
    }
    let stopping: Vec<&str> = actions.stop.iter().map(|s| s.0.as_str()).collect();
    let active: Vec<&TaskRecord> = live
        .iter()
        .copied()
        .filter(|t| t.desired_status() == TaskStatus::Running && !stopping.contains(&t.id.as_str()))
        .collect();

    let service_draining = record.status() == DRAINING;
    let primary_failed = record.deployments().iter().any(|d| {
        d.id.as_deref() == Some(primary_id.as_str()) && d.rollout_state.as_deref() == Some(FAILED)
    });
    let may_launch = !service_draining && !primary_failed && at >= record.next_launch_at;

    if record.is_external() {
        task_sets(record, &live, &active, may_launch, &mut actions, at);
        if service_draining && live.is_empty() {
            record.service.status = Some(INACTIVE.into());
            record.service.task_sets = Some(Vec::new());
            record.event(format!("(service {name}) has been deleted."), at);
        }
        return actions;
    }

    if record.is_daemon() {
        daemon(
            record,
            &active,
            instances,
            &primary_id,
            may_launch,
            &mut actions,
        );
    } else {
        match traffic_shift(record, &active, &primary_id, at, minute) {
            Shift::Rolling => replica(
                record,
                &live,
                &active,
                &primary_id,
                may_launch,
                &mut actions,
                |t| instance_of(t),
                at,
            ),
            mode => shifting_replica(record, &active, &primary_id, may_launch, mode, &mut actions),
        }
    }

    // Counts, per deployment and for the service.
    let stopping: Vec<String> = actions.stop.iter().map(|s| s.0.clone()).collect();
    let mut running_total = 0;
    let mut pending_total = 0;
    let desired = record.service.desired_count.unwrap_or(0);
    for d in record.service.deployments.iter_mut().flatten() {
        let id = d.id.clone().unwrap_or_default();
        let mine: Vec<&&TaskRecord> = active
            .iter()
            .filter(|t| {
                t.task.started_by.as_deref() == Some(id.as_str()) && !stopping.contains(&t.id)
            })
            .collect();
        let running = mine
            .iter()
            .filter(|t| t.last_status() == TaskStatus::Running)
            .count() as i32;
        let pending = mine.len() as i32 - running;
        running_total += running;
        pending_total += pending;
        let is_primary = d.status.as_deref() == Some(PRIMARY);
        let wanted = if is_primary { desired } else { 0 };
        if d.running_count != Some(running)
            || d.pending_count != Some(pending)
            || d.desired_count != Some(wanted)
        {
            d.running_count = Some(running);
            d.pending_count = Some(pending);
            d.desired_count = Some(wanted);
            d.updated_at = Some(at);
        }
    }
    record.service.running_count = Some(running_total);
    record.service.pending_count = Some(pending_total);

    deployment_progress(record, &active, &primary_id, &name, at, &actions);
    // The breaker tripped in this pass (the primary failed, or another
    // deployment took over): what was decided for the failed primary does
    // not start; the next pass decides for the new state.
    let still_primary = record.deployments().iter().any(|d| {
        d.id.as_deref() == Some(primary_id.as_str())
            && d.status.as_deref() == Some(PRIMARY)
            && d.rollout_state.as_deref() != Some(FAILED)
    });
    if !still_primary && !primary_failed {
        actions.start = 0;
        actions.start_on.clear();
    }

    // A deleted service is gone once every task is STOPPED (ECS already
    // at STOPPING; Berth waits until the containers are gone).
    if service_draining && live.is_empty() {
        record.service.status = Some(INACTIVE.into());
        record.service.deployments = Some(Vec::new());
        record.event(format!("(service {name}) has been deleted."), at);
    }
    actions
}

/// A service with the EXTERNAL deployment controller: each task set runs
/// its scale's share of the desired count (rounded up); a DRAINING task set
/// (DeleteTaskSet) or a service being deleted runs none, and a DRAINING set
/// leaves the service once its tasks are gone. Tasks of no task set stop.
/// Stability is ECS's: STEADY_STATE when the running count is the computed
/// desired count and nothing is pending, else STABILIZING.
fn task_sets(
    record: &mut ServiceRecord,
    live: &[&TaskRecord],
    active: &[&TaskRecord],
    may_launch: bool,
    actions: &mut Actions,
    at: f64,
) {
    use crate::state::task_sets::{
        computed_desired, DRAINING as SET_DRAINING, STABILIZING, STEADY_STATE,
    };
    let desired = record.service.desired_count.unwrap_or(0);
    let service_draining = record.status() == DRAINING;
    let sets = record.service.task_sets.clone().unwrap_or_default();
    let ids: Vec<String> = sets.iter().filter_map(|s| s.id.clone()).collect();
    let already: Vec<String> = actions.stop.iter().map(|s| s.0.clone()).collect();
    for t in active {
        let owned = t
            .task
            .started_by
            .as_ref()
            .is_some_and(|by| ids.contains(by));
        if !owned && !already.contains(&t.id) {
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                "Task set deleted".into(),
                false,
            ));
        }
    }
    let (mut running_total, mut pending_total) = (0, 0);
    let mut kept_sets = Vec::new();
    for mut set in sets {
        let id = set.id.clone().unwrap_or_default();
        let draining = set.status.as_deref() == Some(SET_DRAINING);
        let wanted = if draining || service_draining {
            0
        } else {
            computed_desired(desired, set.scale.as_ref())
        };
        let mut mine: Vec<&TaskRecord> = active
            .iter()
            .copied()
            .filter(|t| t.task.started_by.as_deref() == Some(id.as_str()))
            .collect();
        // Scale in: pending tasks first, then the newest.
        mine.sort_by(|a, b| {
            let running = |t: &TaskRecord| t.last_status() == TaskStatus::Running;
            running(b).cmp(&running(a)).then(
                a.task
                    .created_at
                    .partial_cmp(&b.task.created_at)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        let wanted_n = wanted.max(0) as usize;
        while mine.len() > wanted_n {
            if let Some(t) = mine.pop() {
                let reason = if draining {
                    format!("Task set {id} deleted")
                } else {
                    format!("Scaling activity initiated by (task set {id})")
                };
                actions.stop.push((
                    t.id.clone(),
                    "ServiceSchedulerInitiated".into(),
                    reason,
                    false,
                ));
            }
        }
        if mine.len() < wanted_n && may_launch {
            actions.start_sets.push((id.clone(), wanted_n - mine.len()));
        }
        let running = mine
            .iter()
            .filter(|t| t.last_status() == TaskStatus::Running)
            .count() as i32;
        let pending = mine.len() as i32 - running;
        running_total += running;
        pending_total += pending;
        let stability = if running == wanted && pending == 0 {
            STEADY_STATE
        } else {
            STABILIZING
        };
        if set.computed_desired_count != Some(wanted)
            || set.running_count != Some(running)
            || set.pending_count != Some(pending)
        {
            set.computed_desired_count = Some(wanted);
            set.running_count = Some(running);
            set.pending_count = Some(pending);
            set.updated_at = Some(at);
        }
        if set.stability_status.as_deref() != Some(stability) {
            set.stability_status = Some(stability.into());
            set.stability_status_at = Some(at);
        }
        let has_live = live
            .iter()
            .any(|t| t.task.started_by.as_deref() == Some(id.as_str()));
        if draining && !has_live {
            record.task_set_networks.remove(&id);
            record.event(
                format!("(service {}, taskSet {id}) has been deleted.", record.name),
                at,
            );
            continue;
        }
        kept_sets.push(set);
    }
    record.service.task_sets = Some(kept_sets);
    record.service.running_count = Some(running_total);
    record.service.pending_count = Some(pending_total);
}

#[allow(clippy::too_many_arguments)]
fn replica(
    record: &mut ServiceRecord,
    live: &[&TaskRecord],
    active: &[&TaskRecord],
    primary_id: &str,
    may_launch: bool,
    actions: &mut Actions,
    instance_of: impl Fn(&TaskRecord) -> InstanceState,
    at: f64,
) {
    let balanced = is_balanced(record);
    let desired = record.service.desired_count.unwrap_or(0).max(0) as usize;
    let config = record
        .service
        .deployment_configuration
        .clone()
        .unwrap_or_default();
    let max_percent = config.maximum_percent.unwrap_or(200).max(100) as usize;
    let min_percent = config.minimum_healthy_percent.unwrap_or(100).clamp(0, 100) as usize;
    let max_total = desired * max_percent / 100;
    let min_healthy = (desired * min_percent).div_ceil(100);

    let (good, mut replaceable): (Vec<&TaskRecord>, Vec<&TaskRecord>) =
        active.iter().partition(|t| {
            t.task.started_by.as_deref() == Some(primary_id) && !instance_of(t).draining
        });
    // Everything not yet STOPPED occupies a slot of maximumPercent.
    let already_stopping = actions.stop.len();
    let occupied = live.len().saturating_sub(already_stopping);

    // Scale down: surplus primary tasks go, pending ones first; tasks with
    // scale-in protection stay while it lasts (even above the desired count).
    let mut good = good;
    if good.len() > desired {
        good.sort_by_key(|t| {
            (
                t.is_protected(at),
                t.last_status() == TaskStatus::Running,
                std::cmp::Reverse(t.task.created_at.map(|c| (c * 1000.0) as i64)),
            )
        });
        let unprotected = good.iter().filter(|t| !t.is_protected(at)).count();
        let surplus = (good.len() - desired).min(unprotected);
        for t in good.drain(..surplus) {
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                "Scaling activity initiated by (deployment ".to_string() + primary_id + ")",
                false,
            ));
        }
    }
    let healthy_total = good
        .iter()
        .chain(replaceable.iter())
        .filter(|t| is_healthy(t, balanced))
        .count();
    // Old tasks go, unhealthy ones first, healthy ones only while enough stay healthy.
    replaceable.sort_by_key(|t| {
        (
            is_healthy(t, balanced),
            t.last_status() == TaskStatus::Running,
        )
    });
    let mut budget = healthy_total.saturating_sub(min_healthy);
    let mut stopped_now = 0;
    for t in &replaceable {
        // A protected task of an older deployment stays until its
        // protection ends; the deployment completes after that.
        if t.is_protected(at) {
            continue;
        }
        if is_healthy(t, balanced) {
            if budget == 0 {
                continue;
            }
            // Keep old healthy tasks while the new ones are not there yet,
            // unless the budget allows making room (minimumHealthyPercent < 100).
            budget -= 1;
        }
        actions.stop.push((
            t.id.clone(),
            "ServiceSchedulerInitiated".into(),
            format!("Task replaced by (deployment {primary_id})"),
            false,
        ));
        stopped_now += 1;
    }
    let _ = stopped_now;
    if may_launch && good.len() < desired {
        let want = desired - good.len();
        let room = max_total.saturating_sub(occupied);
        actions.start = want.min(room);
    }
}

/// How the tasks of a service deploying by traffic shift are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shift {
    /// No traffic shift under way: the rolling rules apply.
    Rolling,
    /// Both revisions run: the new one scales up, the old one stays.
    Hold,
    /// The old revision's tasks stop.
    CleanUp,
}

/// Advances a blue/green (linear, canary) deployment by one step: from the
/// stored state, the tasks' health and the weights the target controller
/// confirmed it set. Starts one when the primary deployment is new and
/// another deployment's tasks serve production.
fn traffic_shift(
    record: &mut ServiceRecord,
    active: &[&TaskRecord],
    primary_id: &str,
    at: f64,
    minute: f64,
) -> Shift {
    use blue_green::{
        BlueGreen, Weights, BAKE_TIME, CLEAN_UP, PRODUCTION_TRAFFIC_SHIFT, SCALE_UP,
        TEST_TRAFFIC_SHIFT,
    };
    let name = record.name.clone();
    if !blue_green::shifts_traffic(record) {
        record.blue_green = None;
        return Shift::Rolling;
    }
    let config = blue_green::effective_configuration(record);
    let desired = record.service.desired_count.unwrap_or(0).max(0) as usize;
    let Some(mut bg) = record.blue_green.clone() else {
        let in_progress = record.deployments().iter().any(|d| {
            d.id.as_deref() == Some(primary_id) && d.rollout_state.as_deref() == Some(IN_PROGRESS)
        });
        // The source serves production: its tasks are targets of the blue
        // groups (a deployment rolled back from may still run in green).
        let blue: Vec<String> = blue_green::pairs(record)
            .into_iter()
            .map(|p| p.blue)
            .collect();
        let mut sources: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for t in active {
            if let Some(by) = t.task.started_by.as_deref().filter(|b| *b != primary_id) {
                let entry = sources.entry(by).or_default();
                entry.1 += 1;
                if t.targets
                    .iter()
                    .any(|target| blue.contains(&target.target_group_arn))
                {
                    entry.0 += 1;
                }
            }
        }
        let Some(source) = sources
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(id, _)| id.to_string())
        else {
            return Shift::Rolling;
        };
        if !in_progress {
            return Shift::Rolling;
        }
        let strategy = blue_green::strategy(Some(&config)).to_string();
        let green: Vec<String> = blue_green::pairs(record)
            .into_iter()
            .map(|p| p.green)
            .collect();
        record.blue_green = Some(BlueGreen {
            deployment: primary_id.to_string(),
            source,
            strategy: strategy.clone(),
            stage: SCALE_UP.into(),
            wanted: Weights::default(),
            applied: None,
            applied_at: 0.0,
            bake_from: 0.0,
            minute,
            rolling_back: false,
        });
        record.event(
            format!(
                "(service {name}) (deployment {primary_id}) {strategy} deployment: the new revision starts in (target-group {}).",
                green.join(", ")
            ),
            at,
        );
        return Shift::Hold;
    };
    if bg.deployment != primary_id && !bg.rolling_back {
        // Rolled back (circuit breaker, StopServiceDeployment) or replaced
        // by a newer deployment: production and test traffic go back to
        // blue before the new revision's tasks stop.
        bg.rolling_back = true;
        bg.wanted = Weights::default();
        record.event(
            format!(
                "(service {name}) (deployment {}) shifting traffic back to the original revision.",
                bg.deployment
            ),
            at,
        );
    }
    if bg.rolling_back {
        if bg.settled() {
            record
                .lifecycle_stages
                .insert(bg.deployment.clone(), bg.stage.clone());
            record.blue_green = None;
            record.event(
                format!(
                    "(service {name}) (deployment {}) production traffic is back on the original revision.",
                    bg.deployment
                ),
                at,
            );
            if primary_id != bg.source {
                // A newer deployment replaced it: it starts from blue now.
                return traffic_shift(record, active, primary_id, at, minute);
            }
            return Shift::Rolling;
        }
        record.blue_green = Some(bg);
        return Shift::Hold;
    }
    let balanced = is_balanced(record);
    let mut mode = Shift::Hold;
    let mut stage_event = None;
    match bg.stage.as_str() {
        SCALE_UP => {
            let healthy = active
                .iter()
                .filter(|t| {
                    t.task.started_by.as_deref() == Some(primary_id) && is_healthy(t, balanced)
                })
                .count();
            if desired > 0 && healthy >= desired {
                bg.stage = TEST_TRAFFIC_SHIFT.into();
                bg.wanted.test_on_green = true;
                stage_event = Some("test traffic shifting to the new revision".to_string());
            }
        }
        // CodeDeploy's STOP_DEPLOYMENT: production waits for ContinueDeployment.
        TEST_TRAFFIC_SHIFT
            if bg.settled()
                && !record
                    .code_deploy
                    .as_ref()
                    .is_some_and(|cd| cd.holds(&bg.deployment)) =>
        {
            let first = blue_green::steps(&config)
                .first()
                .map(|(p, _)| *p)
                .unwrap_or(100);
            bg.stage = PRODUCTION_TRAFFIC_SHIFT.into();
            bg.wanted.production = first;
            stage_event = Some(format!(
                "shifting {first}% of production traffic to the new revision"
            ));
        }
        PRODUCTION_TRAFFIC_SHIFT if bg.settled() => {
            if bg.wanted.production >= 100 {
                bg.stage = BAKE_TIME.into();
                bg.bake_from = bg.applied_at;
                stage_event = Some(format!(
                    "all production traffic is on the new revision; bake time of {} minutes",
                    config.bake_time_in_minutes.unwrap_or(0)
                ));
            } else if let Some((next, bake)) = blue_green::next_step(&config, bg.wanted.production)
            {
                if at - bg.applied_at >= f64::from(bake.max(0)) * bg.minute {
                    bg.wanted.production = next;
                    stage_event = Some(format!(
                        "shifting {next}% of production traffic to the new revision"
                    ));
                }
            }
        }
        BAKE_TIME => {
            let bake = f64::from(config.bake_time_in_minutes.unwrap_or(0).max(0)) * bg.minute;
            let ended = record
                .code_deploy
                .as_ref()
                .is_some_and(|cd| cd.bake_ended(&bg.deployment));
            if ended || at - bg.bake_from >= bake {
                bg.stage = CLEAN_UP.into();
                stage_event = Some("bake time over; stopping the original revision".to_string());
                mode = Shift::CleanUp;
            }
        }
        CLEAN_UP => {
            let others = active
                .iter()
                .any(|t| t.task.started_by.as_deref() != Some(primary_id));
            if others {
                mode = Shift::CleanUp;
            } else {
                // Done: the green groups serve production from now on.
                record.alternate_serving = !record.alternate_serving;
                record
                    .lifecycle_stages
                    .insert(bg.deployment.clone(), CLEAN_UP.into());
                record.blue_green = None;
                return Shift::Rolling;
            }
        }
        _ => {}
    }
    if let Some(text) = stage_event {
        record.event(
            format!("(service {name}) (deployment {primary_id}) {text}."),
            at,
        );
    }
    record.blue_green = Some(bg);
    mode
}

/// The tasks of a service during a traffic shift: the primary deployment
/// scales up to the desired count beside the tasks serving production
/// (which stay until the clean-up); tasks of any other deployment stop.
fn shifting_replica(
    record: &ServiceRecord,
    active: &[&TaskRecord],
    primary_id: &str,
    may_launch: bool,
    mode: Shift,
    actions: &mut Actions,
) {
    let desired = record.service.desired_count.unwrap_or(0).max(0) as usize;
    let (source, rolling_back) = record
        .blue_green
        .as_ref()
        .map(|bg| (bg.source.clone(), bg.rolling_back))
        .unwrap_or_default();
    let green = record
        .blue_green
        .as_ref()
        .map(|bg| bg.deployment.clone())
        .unwrap_or_default();
    let mut good: Vec<&TaskRecord> = Vec::new();
    for t in active {
        let by = t.task.started_by.as_deref().unwrap_or("");
        if by == primary_id {
            good.push(t);
            continue;
        }
        let keep = match mode {
            Shift::CleanUp => false,
            // While traffic goes back, both revisions stay.
            _ if rolling_back => by == green || by == source,
            _ => by == source,
        };
        if !keep {
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                format!("Task replaced by (deployment {primary_id})"),
                false,
            ));
        }
    }
    if good.len() > desired {
        good.sort_by_key(|t| t.last_status() == TaskStatus::Running);
        for t in good.drain(..good.len() - desired) {
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                format!("Scaling activity initiated by (deployment {primary_id})"),
                false,
            ));
        }
    }
    // A newer deployment waits until traffic is back on blue: its tasks
    // must register in the group that is then free.
    let superseded = rolling_back && primary_id != source;
    if may_launch && !superseded && good.len() < desired {
        actions.start = desired - good.len();
    }
}

fn daemon(
    record: &mut ServiceRecord,
    active: &[&TaskRecord],
    instances: &HashMap<String, InstanceState>,
    primary_id: &str,
    may_launch: bool,
    actions: &mut Actions,
) {
    let targets: Vec<&String> = instances
        .iter()
        .filter(|(_, s)| s.active && !s.draining && !s.lost)
        .map(|(id, _)| id)
        .collect();
    record.service.desired_count = Some(if record.status() == DRAINING {
        0
    } else {
        targets.len() as i32
    });
    let mut by_instance: BTreeMap<&str, Vec<&TaskRecord>> = BTreeMap::new();
    for t in active {
        if let Some(i) = &t.instance_id {
            by_instance.entry(i.as_str()).or_default().push(t);
        }
    }
    for (instance, list) in &by_instance {
        let wanted = targets.iter().any(|t| t.as_str() == *instance) && record.status() != DRAINING;
        let mut kept_primary = false;
        for t in list {
            let keep = wanted && t.task.started_by.as_deref() == Some(primary_id) && !kept_primary;
            if keep {
                kept_primary = true;
                continue;
            }
            actions.stop.push((
                t.id.clone(),
                "ServiceSchedulerInitiated".into(),
                if wanted {
                    format!("Task replaced by (deployment {primary_id})")
                } else {
                    "Daemon task no longer needed on this container instance".into()
                },
                false,
            ));
        }
    }
    if may_launch {
        for target in targets {
            // Start once the instance has no task of this daemon left running.
            if !by_instance.contains_key(target.as_str()) {
                actions.start_on.push(target.clone());
            }
        }
        actions.start_on.sort();
    }
}

fn deployment_progress(
    record: &mut ServiceRecord,
    active: &[&TaskRecord],
    primary_id: &str,
    name: &str,
    at: f64,
    actions: &Actions,
) {
    let balanced = is_balanced(record);
    let desired = record.service.desired_count.unwrap_or(0);
    let breaker = record
        .service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.clone())
        .unwrap_or_default();
    let Some(primary) = record
        .deployments()
        .iter()
        .find(|d| d.id.as_deref() == Some(primary_id))
        .cloned()
    else {
        return;
    };
    let in_progress = primary.rollout_state.as_deref() == Some(IN_PROGRESS);
    let failed = primary.failed_tasks.unwrap_or(0) as u32;
    if in_progress && breaker.enable == Some(true) && failed >= failure_threshold(desired) {
        if let Some(d) = deployment_mut(record, primary_id) {
            d.rollout_state = Some(FAILED.into());
            d.rollout_state_reason = Some(format!(
                "ECS deployment circuit breaker: tasks failed to start. ({failed} tasks failed)"
            ));
            d.updated_at = Some(at);
        }
        record.event(
            format!("(service {name}) (deployment {primary_id}) deployment failed: tasks failed to start."),
            at,
        );
        record.steady = false;
        if breaker.rollback == Some(true) {
            let reason = format!(
                "ECS deployment circuit breaker: rolling back to the last deployment that completed, from {primary_id}."
            );
            services::roll_back(record, primary_id, reason, at);
        }
        return;
    }
    let healthy_primary = active
        .iter()
        .filter(|t| t.task.started_by.as_deref() == Some(primary_id) && is_healthy(t, balanced))
        .count() as i32;
    let others_active = active
        .iter()
        .any(|t| t.task.started_by.as_deref() != Some(primary_id));
    let settled = healthy_primary == desired && !others_active && actions.is_empty();
    if in_progress && settled {
        if let Some(d) = deployment_mut(record, primary_id) {
            d.rollout_state = Some(COMPLETED.into());
            d.rollout_state_reason = Some(format!("ECS deployment {primary_id} completed."));
            d.updated_at = Some(at);
        }
        record.last_completed_task_definition = primary.task_definition.clone();
        record.consecutive_failures = 0;
        services::retire_others(record, primary_id, at);
        record.event(
            format!("(service {name}) (deployment {primary_id}) deployment completed."),
            at,
        );
    }
    let completed = record
        .deployments()
        .iter()
        .find(|d| d.id.as_deref() == Some(primary_id))
        .is_some_and(|d| d.rollout_state.as_deref() != Some(IN_PROGRESS));
    if settled && completed && record.deployments().len() == 1 {
        if healthy_primary == desired && record.consecutive_failures > 0 {
            record.consecutive_failures = 0;
        }
        if !record.steady && record.status() == ACTIVE {
            record.steady = true;
            record.event(format!("(service {name}) has reached a steady state."), at);
        }
    } else if !actions.is_empty() {
        record.steady = false;
    }
}

/// What the controller observed about the last passes (for `/_berth/health`
/// and the benchmark).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStats {
    pub passes: u64,
    pub services: usize,
    pub last_pass_micros: u64,
    pub writes: u64,
}

/// Runs the controller: a pass on every relevant change (debounced) and at
/// least once a second.
pub struct ServiceController {
    store: Arc<dyn Store>,
    presence: Arc<Presence>,
    /// When each instance was first seen disconnected (controller-local: a
    /// restarted server gives agents the full timeout to come back).
    /// (The clock's monotonic reading.)
    disconnected_since: Mutex<HashMap<String, Duration>>,
    lost_after: Duration,
    stats: Mutex<ControllerStats>,
    /// Decoded tasks by key and revision, so an idle pass decodes nothing.
    task_cache: Mutex<TaskCache>,
    service_cache: Mutex<HashMap<String, (u64, Arc<ServiceRecord>)>>,
    clock: Arc<dyn Clock>,
    /// Seconds in a deployment's minute (bake times).
    minute: f64,
}

type TaskCache = HashMap<String, (u64, Arc<TaskRecord>)>;

/// A service's tasks through its index, decoding only what changed since
/// the last pass.
fn service_tasks(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    name: &str,
    cache: &mut TaskCache,
    next: &mut TaskCache,
) -> Vec<Arc<TaskRecord>> {
    let mut out = Vec::new();
    for entry in view.range(&scope.service_tasks(cluster, name), None, usize::MAX) {
        let Some(id) = entry.key.rsplit('/').next() else {
            continue;
        };
        let key = scope.task(cluster, id);
        let Some(kv) = view.get(&key) else { continue };
        let task = match cache.remove(&key) {
            Some((rev, task)) if rev == kv.mod_revision => task,
            _ => match decode::<TaskRecord>(&kv) {
                Ok(t) => Arc::new(t),
                Err(_) => continue,
            },
        };
        next.insert(key, (kv.mod_revision, task.clone()));
        out.push(task);
    }
    out
}

/// An agent gone this long has lost its tasks.
pub(crate) const LOST_AFTER: Duration = Duration::from_secs(120);

impl ServiceController {
    pub fn new(store: Arc<dyn Store>, presence: Arc<Presence>) -> Arc<Self> {
        Self::with_clock(store, presence, clock::system())
    }

    /// A controller reading time from `clock` (tests drive it).
    pub(crate) fn with_clock(
        store: Arc<dyn Store>,
        presence: Arc<Presence>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(ServiceController {
            clock,
            store,
            presence,
            disconnected_since: Mutex::new(HashMap::new()),
            lost_after: LOST_AFTER,
            stats: Mutex::new(ControllerStats::default()),
            task_cache: Mutex::new(HashMap::new()),
            service_cache: Mutex::new(HashMap::new()),
            minute: blue_green::DEFAULT_MINUTE_SECONDS,
        })
    }

    /// A controller whose deployments' minutes (bake times of blue/green,
    /// linear and canary deployments) last `minute_seconds` (60 on AWS;
    /// shorter in tests).
    pub fn with_deployment_minute(
        store: Arc<dyn Store>,
        presence: Arc<Presence>,
        minute_seconds: f64,
    ) -> Arc<Self> {
        let mut controller = Self::with_clock(store, presence, clock::system());
        if let Some(c) = Arc::get_mut(&mut controller) {
            c.minute = minute_seconds.max(0.0);
        }
        controller
    }

    pub fn stats(&self) -> ControllerStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            let mut watch = match self.store.watch("/ecs/", self.store.revision()).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "service controller cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let started = Instant::now();
                let writes = self.pass().await;
                {
                    let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                    stats.passes += 1;
                    stats.last_pass_micros = started.elapsed().as_micros() as u64;
                    stats.writes += writes;
                }
                // Wait for a change or the tick, then let a burst of changes settle.
                match tokio::time::timeout(Duration::from_secs(1), watch.next()).await {
                    Ok(None) | Ok(Some(Err(_))) => break,
                    _ => {}
                }
                let settle = tokio::time::sleep(Duration::from_millis(20));
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        next = watch.next() => if matches!(next, None | Some(Err(_))) { break },
                    }
                }
            }
        }
    }

    fn instance_states(
        &self,
        view: &dyn ReadView,
        scope: &Scope,
        cluster: &str,
    ) -> HashMap<String, InstanceState> {
        let mut states = HashMap::new();
        let now = self.clock.monotonic();
        let mut since = self
            .disconnected_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Every cluster's hosts: Fargate tasks run on hosts registered in
        // any cluster; only the cluster's own container instances take
        // daemon tasks.
        for kv in view.range(&scope.all_instances(), None, usize::MAX) {
            let Ok(record) = decode::<InstanceRecord>(&kv) else {
                continue;
            };
            let member = record.cluster == cluster && record.offers_ec2();
            let connected = self.presence.connected(record.arn());
            let gone_too_long = if connected {
                since.remove(record.arn());
                false
            } else {
                let first = *since.entry(record.arn().to_string()).or_insert(now);
                now.saturating_sub(first) >= self.lost_after
            };
            let inactive = record.status() == instances::INACTIVE;
            states.insert(
                record.id.clone(),
                InstanceState {
                    draining: record.status() == instances::DRAINING,
                    lost: inactive || gone_too_long,
                    active: record.status() == instances::ACTIVE && connected && member,
                },
            );
        }
        states
    }

    /// One pass over every service. Returns how many services were written.
    pub(crate) async fn pass(&self) -> u64 {
        let services = self.all_services();
        let mut writes = 0;
        {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.services = services.len();
        }
        let mut instances_by_cluster: HashMap<(Scope, String), HashMap<String, InstanceState>> =
            HashMap::new();
        let mut cache =
            std::mem::take(&mut *self.task_cache.lock().unwrap_or_else(|p| p.into_inner()));
        let mut next_cache = HashMap::new();
        for (scope, record) in services {
            let instances = instances_by_cluster
                .entry((scope.clone(), record.cluster.clone()))
                .or_insert_with(|| {
                    self.instance_states(self.store.as_ref(), &scope, &record.cluster)
                })
                .clone();
            let instances = if record.is_daemon() {
                daemon_states(
                    self.store.as_ref(),
                    &scope,
                    &record,
                    instances,
                    &self.presence,
                )
            } else {
                instances
            };
            let tasks = service_tasks(
                self.store.as_ref(),
                &scope,
                &record.cluster,
                &record.name,
                &mut cache,
                &mut next_cache,
            );
            let mine: Vec<&TaskRecord> = tasks.iter().map(|t| t.as_ref()).collect();
            let mut trial = (*record).clone();
            let actions =
                reconcile_with(&mut trial, &mine, &instances, self.clock.now(), self.minute);
            let unchanged = actions.is_empty()
                && record.service == trial.service
                && trial.steady == record.steady
                && trial.counted_failures == record.counted_failures
                && trial.blue_green == record.blue_green
                && trial.alternate_serving == record.alternate_serving;
            if unchanged {
                continue;
            }
            match self
                .apply(&scope, &record.cluster, &record.name, instances)
                .await
            {
                Ok(true) => writes += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(service = %record.name, error = %e.message, "service reconcile failed")
                }
            }
        }
        *self.task_cache.lock().unwrap_or_else(|p| p.into_inner()) = next_cache;
        writes
    }

    /// Every service that is not INACTIVE, by account and region. Decoded
    /// records are cached by revision, so an idle pass decodes nothing.
    fn all_services(&self) -> Vec<(Scope, Arc<ServiceRecord>)> {
        let mut out = Vec::new();
        let mut cache = self.service_cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for scope in keys::scopes(self.store.as_ref()) {
            let prefix = scope.all_services();
            for kv in self.store.range(&prefix, None, usize::MAX) {
                let record = match cache.remove(&kv.key) {
                    Some((rev, record)) if rev == kv.mod_revision => record,
                    _ => match decode::<ServiceRecord>(&kv) {
                        Ok(r) => Arc::new(r),
                        Err(_) => continue,
                    },
                };
                next.insert(kv.key.clone(), (kv.mod_revision, record.clone()));
                if record.status() != INACTIVE {
                    out.push((scope.clone(), record));
                }
            }
        }
        *cache = next;
        out
    }

    /// Decides again inside a mutation and applies the decision.
    async fn apply(
        &self,
        scope: &Scope,
        cluster: &str,
        name: &str,
        instances: HashMap<String, InstanceState>,
    ) -> Result<bool, AwsError> {
        let scope = scope.clone();
        let cluster = cluster.to_string();
        let name = name.to_string();
        let presence = self.presence.clone();
        let at = self.clock.now();
        let minute = self.minute;
        let (_, wrote) = self
            .store
            .update(move |view| {
                let key = scope.service(&cluster, &name);
                let Some(kv) = view.get(&key) else {
                    return Ok((Vec::new(), false));
                };
                let mut record: ServiceRecord = decode(&kv)?;
                let tasks: Vec<TaskRecord> = view
                    .range(&scope.service_tasks(&cluster, &name), None, usize::MAX)
                    .iter()
                    .filter_map(|kv| view.get(&scope.task(&cluster, kv.key.rsplit('/').next()?)))
                    .filter_map(|kv| decode::<TaskRecord>(&kv).ok())
                    .collect();
                let refs: Vec<&TaskRecord> = tasks.iter().collect();
                let actions = reconcile_with(&mut record, &refs, &instances, at, minute);
                let mut ops = Vec::new();
                let mut stopped = Vec::new();
                for (id, code, reason, lost) in &actions.stop {
                    if let Some(t) = tasks.iter().find(|t| &t.id == id) {
                        let mut t = t.clone();
                        if request_stop(&mut t, code, reason, at, *lost) {
                            ops.extend(index::put_task(&scope, &t)?);
                            ops.extend(ledger::ledger_op(&scope, &t)?);
                            stopped.push(short_id(&t).to_string());
                        }
                    }
                }
                if !stopped.is_empty() {
                    let list: Vec<String> =
                        stopped.iter().map(|id| format!("(task {id})")).collect();
                    record.event(
                        format!(
                            "(service {name}) has stopped {} running tasks: {}.",
                            stopped.len(),
                            list.join(" ")
                        ),
                        at,
                    );
                }
                let started = launch(
                    view,
                    &scope,
                    &cluster,
                    &mut record,
                    &refs,
                    &actions,
                    &presence,
                    at,
                    &mut ops,
                )?;
                if started > 0 {
                    // The new tasks count as pending at once.
                    record.steady = false;
                    let n = started as i32;
                    let s = &mut record.service;
                    s.pending_count = Some(s.pending_count.unwrap_or(0) + n);
                    if let Some(d) = s
                        .deployments
                        .iter_mut()
                        .flatten()
                        .find(|d| d.status.as_deref() == Some(PRIMARY))
                    {
                        d.pending_count = Some(d.pending_count.unwrap_or(0) + n);
                        d.updated_at = Some(at);
                    }
                }
                // Nothing decided and nothing placed (say, no room for the
                // tasks it wants): no write, so the pass does not wake
                // itself through the store's watch again and again.
                let value = encode(&record)?;
                if ops.is_empty() && value == kv.value {
                    return Ok((ops, false));
                }
                ops.push(Op::put(key, value));
                Ok::<_, AwsError>((ops, true))
            })
            .await
            .map_err(error::store)??;
        Ok(wrote)
    }
}

/// A daemon runs only where its `memberOf` constraints (the service's and
/// its task definition's) admit it: other instances are no target of it
/// (not counted in its desired count, and its tasks there stop).
fn daemon_states(
    view: &dyn ReadView,
    scope: &Scope,
    record: &ServiceRecord,
    mut states: HashMap<String, InstanceState>,
    presence: &Presence,
) -> HashMap<String, InstanceState> {
    let constraints = record
        .service
        .placement_constraints
        .as_deref()
        .unwrap_or(&[]);
    let Ok(mut policy) = policy::policy(constraints, &[]) else {
        return states;
    };
    let definition = record
        .service
        .task_definition
        .as_deref()
        .and_then(|d| task_definitions::parse_reference(scope, d).ok())
        .and_then(|r| task_definitions::find(view, scope, &r).ok().flatten());
    if let Some((d, _)) = &definition {
        match policy::with_definition(&policy, &d.task_definition) {
            Ok(p) => policy = p,
            Err(_) => return states,
        }
    }
    let expressions: Vec<&berth_scheduler::Expression> = policy
        .constraints
        .iter()
        .filter_map(|c| match c {
            berth_scheduler::Constraint::MemberOf(e) => Some(e),
            berth_scheduler::Constraint::DistinctInstance => None,
        })
        .collect();
    if expressions.is_empty() {
        return states;
    }
    for (id, state) in states.iter_mut().filter(|(_, s)| s.active) {
        let Ok(Some((instance, _))) =
            load::<InstanceRecord>(view, &scope.instance(&record.cluster, id))
        else {
            continue;
        };
        let Ok(usage) = usage_of_instance(view, scope, &record.cluster, id) else {
            continue;
        };
        let snap = snapshot(&instance, &usage, presence);
        if !expressions.iter().all(|e| e.matches(&snap)) {
            state.active = false;
        }
    }
    states
}

/// Places the tasks `actions` asks for; records events for what started and
/// what could not be placed. Returns how many started.
#[allow(clippy::too_many_arguments)]
fn launch(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    record: &mut ServiceRecord,
    service_tasks: &[&TaskRecord],
    actions: &Actions,
    presence: &Presence,
    at: f64,
    ops: &mut Vec<Op>,
) -> Result<usize, AwsError> {
    if !actions.start_sets.is_empty() {
        return launch_task_sets(
            view,
            scope,
            cluster,
            record,
            service_tasks,
            actions,
            presence,
            at,
            ops,
        );
    }
    if actions.start == 0 && actions.start_on.is_empty() {
        return Ok(0);
    }
    let name = record.name.clone();
    let Some(primary) = record
        .deployments()
        .iter()
        .find(|d| d.status.as_deref() == Some(PRIMARY))
        .cloned()
    else {
        return Ok(0);
    };
    let definition = primary.task_definition.clone().unwrap_or_default();
    let capacity = match capacity::service_capacity(&record.service) {
        Ok(c) => c,
        Err(e) => {
            note(
                record,
                format!("(service {name}) was unable to start tasks: {}", e.message),
                at,
            );
            return Ok(0);
        }
    };
    let tags = match record.service.propagate_tags.as_deref() {
        Some("SERVICE") => record.service.tags.clone().unwrap_or_default(),
        _ => Vec::new(),
    };
    let launch = match prepare_launch(
        view,
        scope,
        cluster,
        &definition,
        Default::default(),
        Some(record.group()),
        primary.id.clone(),
        tags,
        record
            .service
            .propagate_tags
            .clone()
            .filter(|p| p == "TASK_DEFINITION"),
        record.service.enable_execute_command.unwrap_or(false),
        capacity,
        record.network.clone(),
        record.service.platform_version.as_deref(),
    ) {
        Ok(mut l) => {
            if let Capacity::Fargate(_) = &l.capacity {
                l.provider_counts = capacity::provider_counts(service_tasks.iter().copied());
            }
            l
        }
        Err(e) => {
            note(
                record,
                format!("(service {name}) was unable to start tasks: {}", e.message),
                at,
            );
            return Ok(0);
        }
    };
    let mut started = Vec::new();
    let mut failures = Vec::new();
    let policy = policy::policy(
        record
            .service
            .placement_constraints
            .as_deref()
            .unwrap_or(&[]),
        record.service.placement_strategy.as_deref().unwrap_or(&[]),
    )
    .and_then(|p| policy::with_definition(&p, &launch.definition));
    let policy = match policy {
        Ok(p) => p,
        Err(e) => {
            note(
                record,
                format!("(service {name}) cannot place tasks: {}", e.message),
                at,
            );
            return Ok(0);
        }
    };
    if actions.start > 0 {
        match place_batch(view, scope, &launch, actions.start, presence, &policy, at) {
            Ok((mut new_ops, new_tasks, new_failures)) => {
                ops.append(&mut new_ops);
                started.extend(new_tasks.iter().map(|t| t.id.clone()));
                failures.extend(new_failures);
            }
            Err(e) => {
                note(
                    record,
                    format!(
                        "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {}",
                        e.message
                    ),
                    at,
                );
            }
        }
    }
    if !actions.start_on.is_empty() {
        for id in &actions.start_on {
            let Some(kv) = view.get(&scope.instance(cluster, id)) else {
                continue;
            };
            let instance: InstanceRecord = decode(&kv)?;
            // The instance's own tasks only.
            let u = &mut usage_of_instance(view, scope, cluster, id)?;
            // Daemons honour memberOf: an instance outside it gets no task.
            let snap = snapshot(&instance, u, presence);
            let excluded = policy.constraints.iter().any(|c| match c {
                berth_scheduler::Constraint::MemberOf(e) => !e.matches(&snap),
                berth_scheduler::Constraint::DistinctInstance => false,
            });
            if excluded {
                continue;
            }
            match place_on(scope, &launch, &instance, u, presence, at)? {
                Ok((new_ops, task)) => {
                    ops.extend(new_ops);
                    started.push(task.id.clone());
                }
                Err(f) => failures.push(f),
            }
        }
    }
    if !started.is_empty() {
        let list: Vec<String> = started.iter().map(|id| format!("(task {id})")).collect();
        record.event(
            format!(
                "(service {name}) has started {} tasks: {}.",
                started.len(),
                list.join(" ")
            ),
            at,
        );
    }
    if !failures.is_empty() {
        let reasons: Vec<String> = failures
            .iter()
            .map(|f| {
                format!(
                    "(container-instance {}) {}",
                    f.arn
                        .as_deref()
                        .unwrap_or("")
                        .rsplit('/')
                        .next()
                        .unwrap_or(""),
                    f.reason.as_deref().unwrap_or("")
                )
            })
            .collect();
        note(
            record,
            format!(
                "(service {name}) was unable to place a task because no container instance met all of its requirements. Reasons: {}.",
                reasons.join(", ")
            ),
            at,
        );
    }
    Ok(started.len())
}

/// Places the tasks of task sets (EXTERNAL controller) `actions` asks for,
/// each with its task set's task definition, capacity and network, started
/// by the task set's id. Returns how many started.
#[allow(clippy::too_many_arguments)]
fn launch_task_sets(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    record: &mut ServiceRecord,
    service_tasks: &[&TaskRecord],
    actions: &Actions,
    presence: &Presence,
    at: f64,
    ops: &mut Vec<Op>,
) -> Result<usize, AwsError> {
    let name = record.name.clone();
    let mut started = Vec::new();
    let mut problems = Vec::new();
    for (id, count) in &actions.start_sets {
        let Some(set) = record
            .service
            .task_sets
            .iter()
            .flatten()
            .find(|s| s.id.as_deref() == Some(id.as_str()))
            .cloned()
        else {
            continue;
        };
        let shape = berth_model::shapes::ecs::Service {
            launch_type: set.launch_type.clone(),
            capacity_provider_strategy: set.capacity_provider_strategy.clone(),
            ..Default::default()
        };
        let tags = match record.service.propagate_tags.as_deref() {
            Some("SERVICE") => record.service.tags.clone().unwrap_or_default(),
            _ => Vec::new(),
        };
        let prepared = capacity::service_capacity(&shape).and_then(|capacity| {
            prepare_launch(
                view,
                scope,
                cluster,
                set.task_definition.as_deref().unwrap_or_default(),
                Default::default(),
                Some(record.group()),
                Some(id.clone()),
                tags,
                record
                    .service
                    .propagate_tags
                    .clone()
                    .filter(|p| p == "TASK_DEFINITION"),
                record.service.enable_execute_command.unwrap_or(false),
                capacity,
                record.task_set_networks.get(id).cloned(),
                set.platform_version.as_deref(),
            )
        });
        let mut launch = match prepared {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("(taskSet {id}) {}", e.message));
                continue;
            }
        };
        if let Capacity::Fargate(_) = &launch.capacity {
            launch.provider_counts = capacity::provider_counts(service_tasks.iter().copied());
        }
        let policy = policy::policy(
            record
                .service
                .placement_constraints
                .as_deref()
                .unwrap_or(&[]),
            record.service.placement_strategy.as_deref().unwrap_or(&[]),
        )
        .and_then(|p| policy::with_definition(&p, &launch.definition));
        let policy = match policy {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("(taskSet {id}) {}", e.message));
                continue;
            }
        };
        match place_batch(view, scope, &launch, *count, presence, &policy, at) {
            Ok((mut new_ops, new_tasks, failures)) => {
                ops.append(&mut new_ops);
                started.extend(new_tasks.iter().map(|t| t.id.clone()));
                for f in failures {
                    problems.push(format!(
                        "(taskSet {id}) {}",
                        f.reason
                            .as_deref()
                            .unwrap_or("no container instance met its requirements")
                    ));
                }
            }
            Err(e) => problems.push(format!("(taskSet {id}) {}", e.message)),
        }
    }
    if !started.is_empty() {
        let list: Vec<String> = started.iter().map(|id| format!("(task {id})")).collect();
        record.event(
            format!(
                "(service {name}) has started {} tasks: {}.",
                started.len(),
                list.join(" ")
            ),
            at,
        );
    }
    if !problems.is_empty() {
        note(
            record,
            format!(
                "(service {name}) was unable to place a task because no container instance met all of its requirements. Reasons: {}.",
                problems.join(", ")
            ),
            at,
        );
    }
    Ok(started.len())
}

/// Adds an event unless the newest one already says the same.
fn note(record: &mut ServiceRecord, message: String, at: f64) {
    let repeated = record
        .service
        .events
        .as_ref()
        .and_then(|e| e.first())
        .is_some_and(|e| e.message.as_deref() == Some(message.as_str()));
    if !repeated {
        record.event(message, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::services;

    const RUNNING: &str = "RUNNING";
    const STOPPED: &str = "STOPPED";
    use berth_model::shapes::ecs::{
        DeploymentCircuitBreaker, DeploymentConfiguration, Service, Task,
    };

    fn service(desired: i32, min: i32, max: i32) -> ServiceRecord {
        let mut d = services::new_deployment("td:2", desired, 0.0, None);
        d.id = Some("new".into());
        let mut old = services::new_deployment("td:1", 0, 0.0, None);
        old.id = Some("old".into());
        old.status = Some(ACTIVE.into());
        old.rollout_state = Some(COMPLETED.into());
        ServiceRecord {
            name: "web".into(),
            cluster: "default".into(),
            service: Service {
                status: Some(ACTIVE.into()),
                desired_count: Some(desired),
                deployments: Some(vec![d, old]),
                deployment_configuration: Some(DeploymentConfiguration {
                    minimum_healthy_percent: Some(min),
                    maximum_percent: Some(max),
                    deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
                        enable: Some(true),
                        rollback: Some(true),
                        ..DeploymentCircuitBreaker::default()
                    }),
                    ..DeploymentConfiguration::default()
                }),
                ..Service::default()
            },
            last_completed_task_definition: Some("td:1".into()),
            ..ServiceRecord::default()
        }
    }

    fn task(id: &str, deployment: &str, last: &str) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            cluster: "default".into(),
            instance_id: Some("i1".into()),
            task: Task {
                started_by: Some(deployment.into()),
                last_status: Some(last.into()),
                desired_status: Some(if last == STOPPED { STOPPED } else { RUNNING }.into()),
                group: Some("service:web".into()),
                ..Task::default()
            },
            ..TaskRecord::default()
        }
    }

    fn instances() -> HashMap<String, InstanceState> {
        HashMap::from([(
            "i1".to_string(),
            InstanceState {
                draining: false,
                lost: false,
                active: true,
            },
        )])
    }

    #[test]
    fn rolling_100_200_starts_new_before_stopping_old() {
        let old: Vec<TaskRecord> = (0..3)
            .map(|i| task(&format!("o{i}"), "old", RUNNING))
            .collect();
        let refs: Vec<&TaskRecord> = old.iter().collect();
        let mut s = service(3, 100, 200);
        let a = reconcile(&mut s, &refs, &instances(), 1.0);
        assert_eq!((a.start, a.stop.len()), (3, 0));
        // New tasks pending: nothing more to do yet.
        let mut all = old.clone();
        all.extend((0..3).map(|i| task(&format!("n{i}"), "new", "PENDING")));
        let refs: Vec<&TaskRecord> = all.iter().collect();
        let a = reconcile(&mut s, &refs, &instances(), 2.0);
        assert_eq!((a.start, a.stop.len()), (0, 0));
        // New tasks healthy: the three old ones go.
        for t in all.iter_mut().skip(3) {
            t.task.last_status = Some(RUNNING.into());
        }
        let refs: Vec<&TaskRecord> = all.iter().collect();
        let a = reconcile(&mut s, &refs, &instances(), 3.0);
        assert_eq!(a.start, 0);
        let mut stopped: Vec<&str> = a.stop.iter().map(|s| s.0.as_str()).collect();
        stopped.sort();
        assert_eq!(stopped, ["o0", "o1", "o2"]);
    }

    #[test]
    fn rolling_50_100_stops_before_starting() {
        let old: Vec<TaskRecord> = (0..4)
            .map(|i| task(&format!("o{i}"), "old", RUNNING))
            .collect();
        let refs: Vec<&TaskRecord> = old.iter().collect();
        let mut s = service(4, 50, 100);
        let a = reconcile(&mut s, &refs, &instances(), 1.0);
        assert_eq!(a.start, 0, "no room above 100%");
        assert_eq!(a.stop.len(), 2, "half may go");
    }

    #[test]
    fn circuit_breaker_rolls_back_after_threshold() {
        assert_eq!(failure_threshold(3), 3);
        assert_eq!(failure_threshold(10), 5);
        assert_eq!(failure_threshold(1000), 200);
        let mut tasks: Vec<TaskRecord> = (0..3)
            .map(|i| task(&format!("o{i}"), "old", RUNNING))
            .collect();
        for i in 0..3 {
            let mut t = task(&format!("f{i}"), "new", STOPPED);
            t.task.stop_code = Some("EssentialContainerExited".into());
            tasks.push(t);
        }
        let refs: Vec<&TaskRecord> = tasks.iter().collect();
        let mut s = service(3, 100, 200);
        reconcile(&mut s, &refs, &instances(), 5.0);
        let failed = s
            .deployments()
            .iter()
            .find(|d| d.id.as_deref() == Some("new"))
            .unwrap();
        assert_eq!(failed.rollout_state.as_deref(), Some(FAILED));
        assert_eq!(failed.status.as_deref(), Some(ACTIVE));
        let primary = &s.deployments()[0];
        assert_eq!(primary.status.as_deref(), Some(PRIMARY));
        assert_eq!(primary.task_definition.as_deref(), Some("td:1"));
        assert_eq!(
            primary.id.as_deref(),
            Some("old"),
            "the deployment still running td:1 takes over"
        );
        // Counting is idempotent: the same stopped tasks are not counted twice.
        let before = s.counted_failures.len();
        reconcile(&mut s, &refs, &instances(), 6.0);
        assert_eq!(s.counted_failures.len(), before);
    }

    #[test]
    fn lost_instances_lose_their_tasks() {
        let tasks = [task("a", "new", RUNNING)];
        let refs: Vec<&TaskRecord> = tasks.iter().collect();
        let mut s = service(1, 100, 200);
        let gone = HashMap::from([(
            "i1".to_string(),
            InstanceState {
                draining: false,
                lost: true,
                active: false,
            },
        )]);
        let a = reconcile(&mut s, &refs, &gone, 1.0);
        assert_eq!(a.stop.len(), 1);
        assert!(a.stop[0].3, "marked lost: stopped without an agent");
        assert_eq!(a.start, 1);
    }

    #[test]
    fn daemon_wants_one_task_per_active_instance() {
        let mut s = service(0, 0, 100);
        s.service.scheduling_strategy = Some(services::DAEMON.into());
        let mut states = instances();
        states.insert(
            "i2".into(),
            InstanceState {
                draining: false,
                lost: false,
                active: true,
            },
        );
        states.insert(
            "i3".into(),
            InstanceState {
                draining: true,
                lost: false,
                active: true,
            },
        );
        let tasks = [task("a", "new", RUNNING)];
        let refs: Vec<&TaskRecord> = tasks.iter().collect();
        let a = reconcile(&mut s, &refs, &states, 1.0);
        assert_eq!(a.start_on, vec!["i2".to_string()]);
        assert_eq!(s.service.desired_count, Some(2));
    }
}

#[cfg(test)]
mod harness_tests {
    //! The controller's passes through the handler harness: services
    //! created and changed through the API, simulated agents reporting
    //! RUNNING and STOPPED, the fake clock for grace periods, throttling
    //! and lost agents. What it places counts the tasks earlier passes (and
    //! RunTask) placed.

    use serde_json::{json, Value};

    use super::{reconcile, ServiceController};
    use crate::state::index;
    use crate::state::records::load;
    use crate::state::services::ServiceRecord;
    use crate::state::tasks::{TaskRecord, TaskStatus};
    use crate::test_support::{Harness, Instance, Spec};

    fn service_tasks(h: &Harness, service: &str) -> Vec<TaskRecord> {
        h.service_tasks("default", service)
    }

    fn live(h: &Harness, service: &str) -> Vec<TaskRecord> {
        service_tasks(h, service)
            .into_iter()
            .filter(|t| t.last_status() != TaskStatus::Stopped)
            .collect()
    }

    fn record(h: &Harness, service: &str) -> ServiceRecord {
        load::<ServiceRecord>(h.store.as_ref(), &h.scope().service("default", service))
            .ok()
            .flatten()
            .map(|(r, _)| r)
            .unwrap_or_default()
    }

    async fn describe(h: &Harness, service: &str) -> Value {
        h.ok("DescribeServices", json!({"services": [service]}))
            .await["services"][0]
            .clone()
    }

    fn events(s: &Value) -> Vec<String> {
        s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Passes and agent reports until nothing changes (at most `rounds`).
    async fn converge(h: &Harness, controller: &ServiceController, agents: &[&Instance]) {
        for _ in 0..20 {
            let writes = controller.pass().await;
            let reports = h.agents_act(agents).await;
            if writes == 0 && reports == 0 {
                return;
            }
        }
        panic!("the service did not settle");
    }

    #[tokio::test]
    async fn a_service_scaled_in_steps_keeps_distinct_instances() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                "placementConstraints": [{"type": "distinctInstance"}]}),
        )
        .await;
        let controller = h.controller();
        controller.pass().await;
        assert_eq!(service_tasks(&h, "web").len(), 1);
        h.ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 2}),
        )
        .await;
        controller.pass().await;
        let mut on: Vec<String> = service_tasks(&h, "web")
            .iter()
            .filter_map(|t| t.instance_id.clone())
            .collect();
        on.sort();
        let mut both = vec![a.id.clone(), b.id.clone()];
        both.sort();
        assert_eq!(on, both);
        // A third has nowhere to go.
        h.ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 3}),
        )
        .await;
        controller.pass().await;
        assert_eq!(service_tasks(&h, "web").len(), 2);
        let out = h.ok("DescribeServices", json!({"services": ["web"]})).await;
        let event = out["services"][0]["events"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            event.contains("DistinctInstance placement constraint unsatisfied"),
            "{event}"
        );
        // A RunTask of the service's group on a fresh instance counts too.
        let c = h.instance("default", Spec::default()).await;
        h.ok(
            "StartTask",
            json!({"taskDefinition": "web", "group": "service:web", "containerInstances": [c.arn]}),
        )
        .await;
        controller.pass().await;
        let held = index::instance_tasks(h.store.as_ref(), &h.scope(), "default", &c.id)
            .unwrap_or_default();
        assert_eq!(held.len(), 1, "the controller placed nothing more on c");
    }

    #[tokio::test]
    async fn daemons_start_once_per_instance() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("agent", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "daemon", "taskDefinition": "agent",
                "schedulingStrategy": "DAEMON"}),
        )
        .await;
        let controller = h.controller();
        controller.pass().await;
        controller.pass().await;
        let tasks = service_tasks(&h, "daemon");
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].instance_id.as_deref(), Some(a.id.as_str()));
        let b = h.instance("default", Spec::default()).await;
        controller.pass().await;
        let mut on: Vec<String> = service_tasks(&h, "daemon")
            .iter()
            .filter_map(|t| t.instance_id.clone())
            .collect();
        on.sort();
        let mut both = vec![a.id, b.id];
        both.sort();
        assert_eq!(on, both);
    }

    #[tokio::test]
    async fn a_service_reaches_a_steady_state() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 4}),
        )
        .await;
        let controller = h.controller();
        controller.pass().await;
        let s = describe(&h, "web").await;
        assert_eq!(
            (s["runningCount"].clone(), s["pendingCount"].clone()),
            (json!(0), json!(4))
        );
        assert!(
            events(&s)[0].contains("has started 4 tasks"),
            "{:?}",
            events(&s)
        );
        // Spread over instances by default: two each.
        let on_a = live(&h, "web")
            .iter()
            .filter(|t| t.instance_id.as_deref() == Some(a.id.as_str()))
            .count();
        assert_eq!(on_a, 2);
        converge(&h, &controller, &[&a, &b]).await;
        let s = describe(&h, "web").await;
        assert_eq!(
            (s["runningCount"].clone(), s["pendingCount"].clone()),
            (json!(4), json!(0))
        );
        let d = &s["deployments"][0];
        assert_eq!(d["rolloutState"], "COMPLETED");
        assert_eq!(d["runningCount"], 4);
        assert!(
            events(&s)[0].contains("has reached a steady state"),
            "{:?}",
            events(&s)
        );
        // An idle pass writes nothing.
        assert_eq!(controller.pass().await, 0);
        // Tasks are started by the deployment, in the service's group.
        let t = &live(&h, "web")[0];
        assert_eq!(t.task.group.as_deref(), Some("service:web"));
        assert_eq!(t.task.started_by, d["id"].as_str().map(str::to_string));
    }

    #[tokio::test]
    async fn a_task_that_stops_is_replaced() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        let victim = live(&h, "web")[0].arn().to_string();
        h.report_with(&a, &victim, "STOPPED", json!({"exitCode": 0}))
            .await
            .unwrap();
        controller.pass().await;
        let tasks = live(&h, "web");
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|t| t.arn() != victim));
        // Someone stopping a task by hand: the same.
        let other = tasks[0].arn().to_string();
        h.ok("StopTask", json!({"task": other})).await;
        converge(&h, &controller, &[&a]).await;
        assert_eq!(describe(&h, "web").await["runningCount"], 2);
    }

    #[tokio::test]
    async fn scaling_in_stops_pending_tasks_before_running_ones() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        let running: Vec<String> = live(&h, "web").iter().map(|t| t.id.clone()).collect();
        h.ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 4}),
        )
        .await;
        controller.pass().await;
        assert_eq!(live(&h, "web").len(), 4, "two more, not yet running");
        h.ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 2}),
        )
        .await;
        controller.pass().await;
        let still: Vec<String> = service_tasks(&h, "web")
            .iter()
            .filter(|t| t.desired_status() == TaskStatus::Running)
            .map(|t| t.id.clone())
            .collect();
        let mut still_sorted = still.clone();
        still_sorted.sort();
        let mut running_sorted = running.clone();
        running_sorted.sort();
        assert_eq!(still_sorted, running_sorted, "the pending ones went");
        let s = describe(&h, "web").await;
        assert!(
            events(&s)[0].contains("has stopped 2 running tasks"),
            "{:?}",
            events(&s)
        );
    }

    /// A service of `desired` tasks at `min`/`max` percent, settled on
    /// revision 1, then moved to revision 2.
    async fn deployment(
        min: i32,
        max: i32,
        desired: i32,
    ) -> (Harness, Vec<Instance>, std::sync::Arc<ServiceController>) {
        let h = Harness::new();
        let mut instances = Vec::new();
        for _ in 0..2 {
            instances.push(h.instance("default", Spec::default()).await);
        }
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": desired,
                "deploymentConfiguration": {"minimumHealthyPercent": min, "maximumPercent": max}}),
        )
        .await;
        let controller = h.controller();
        let refs: Vec<&Instance> = instances.iter().collect();
        converge(&h, &controller, &refs).await;
        h.task_definition("web", json!({"memory": 128})).await;
        h.ok(
            "UpdateService",
            json!({"service": "web", "taskDefinition": "web"}),
        )
        .await;
        (h, instances, controller)
    }

    fn revisions(h: &Harness) -> (usize, usize) {
        let tasks = live(h, "web");
        let new = tasks
            .iter()
            .filter(|t| {
                t.task
                    .task_definition_arn
                    .as_deref()
                    .is_some_and(|a| a.ends_with(":2"))
            })
            .count();
        (tasks.len() - new, new)
    }

    #[tokio::test]
    async fn rolling_deployment_100_200_starts_new_tasks_first() {
        let (h, instances, controller) = deployment(100, 200, 4).await;
        let refs: Vec<&Instance> = instances.iter().collect();
        controller.pass().await;
        assert_eq!(
            revisions(&h),
            (4, 4),
            "up to 200 %: all new tasks at once, no old one stopped"
        );
        let s = describe(&h, "web").await;
        assert_eq!(s["deployments"][0]["status"], "PRIMARY");
        assert_eq!(s["deployments"][0]["pendingCount"], 4);
        assert_eq!(s["deployments"][1]["runningCount"], 4);
        // New tasks run: the old ones go.
        h.agents_act(&refs).await;
        controller.pass().await;
        let old_stopping = service_tasks(&h, "web")
            .iter()
            .filter(|t| {
                t.task
                    .task_definition_arn
                    .as_deref()
                    .is_some_and(|a| a.ends_with(":1"))
            })
            .all(|t| t.desired_status() == TaskStatus::Stopped);
        assert!(old_stopping);
        converge(&h, &controller, &refs).await;
        assert_eq!(revisions(&h), (0, 4));
        let s = describe(&h, "web").await;
        assert_eq!(s["deployments"].as_array().map(Vec::len), Some(1));
        assert_eq!(s["deployments"][0]["rolloutState"], "COMPLETED");
        assert_eq!(s["taskDefinition"], h.scope().arn("task-definition/web:2"));
    }

    #[tokio::test]
    async fn rolling_deployment_50_100_stops_old_tasks_first() {
        let (h, instances, controller) = deployment(50, 100, 4).await;
        let refs: Vec<&Instance> = instances.iter().collect();
        controller.pass().await;
        let stopping = service_tasks(&h, "web")
            .iter()
            .filter(|t| t.desired_status() == TaskStatus::Stopped)
            .count();
        assert_eq!(stopping, 2, "half may go below 100 %");
        assert_eq!(revisions(&h).1, 0, "no room above 100 % until they stopped");
        // Never more than 4 tasks, never fewer than 2 running, until done.
        for _ in 0..20 {
            h.agents_act(&refs).await;
            let all = live(&h, "web");
            assert!(all.len() <= 4, "{} tasks above maximumPercent", all.len());
            let running = all
                .iter()
                .filter(|t| {
                    t.last_status() == TaskStatus::Running
                        && t.desired_status() == TaskStatus::Running
                })
                .count();
            assert!(
                running >= 2,
                "{running} healthy below minimumHealthyPercent"
            );
            if controller.pass().await == 0 {
                break;
            }
        }
        assert_eq!(revisions(&h), (0, 4));
    }

    #[tokio::test]
    async fn the_circuit_breaker_rolls_back_to_the_last_completed_revision() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
                "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        h.task_definition("web", json!({"image": "broken"})).await;
        h.ok(
            "UpdateService",
            json!({"service": "web", "taskDefinition": "web"}),
        )
        .await;
        // Every new task exits at once; three failures trip the breaker.
        let mut failed = None;
        for _ in 0..6 {
            controller.pass().await;
            let s = describe(&h, "web").await;
            if let Some(d) = s["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["rolloutState"] == "FAILED")
            {
                failed.get_or_insert(d.clone());
            }
            for t in live(&h, "web") {
                if t.task
                    .task_definition_arn
                    .as_deref()
                    .is_some_and(|d| d.ends_with(":2"))
                {
                    h.report_with(
                        &a,
                        t.arn(),
                        "STOPPED",
                        json!({
                        "stopCode": "EssentialContainerExited",
                        "stoppedReason": "Essential container in task exited", "exitCode": 1}),
                    )
                    .await
                    .unwrap();
                }
            }
        }
        let failed = failed.unwrap_or_else(|| panic!("the breaker never tripped"));
        assert_eq!(
            failed["status"], "ACTIVE",
            "no longer PRIMARY once it failed"
        );
        assert!(failed["failedTasks"].as_i64().unwrap_or(0) >= 3, "{failed}");
        assert_eq!(
            failed["taskDefinition"],
            h.scope().arn("task-definition/web:2")
        );
        let s = describe(&h, "web").await;
        let deployments = s["deployments"].as_array().cloned().unwrap_or_default();
        assert_eq!(deployments[0]["status"], "PRIMARY");
        assert_eq!(
            deployments[0]["taskDefinition"],
            h.scope().arn("task-definition/web:1")
        );
        assert_eq!(s["taskDefinition"], h.scope().arn("task-definition/web:1"));
        assert!(events(&s)
            .iter()
            .any(|e| e.contains("deployment failed: tasks failed to start")));
        assert!(events(&s)
            .iter()
            .any(|e| e.contains("rolling back to task definition")));
        // The old tasks kept running all along and the service settles on them.
        converge(&h, &controller, &[&a]).await;
        assert_eq!(revisions(&h), (2, 0));
        assert_eq!(describe(&h, "web").await["runningCount"], 2);
    }

    #[tokio::test]
    async fn a_breaker_without_rollback_stops_launching() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": false}}}),
        )
        .await;
        let controller = h.controller();
        let mut launched = 0;
        for _ in 0..8 {
            controller.pass().await;
            for t in live(&h, "web") {
                launched += 1;
                h.report_with(
                    &a,
                    t.arn(),
                    "STOPPED",
                    json!({"stopCode": "TaskFailedToStart"}),
                )
                .await
                .unwrap();
            }
            h.advance(600.0);
        }
        assert_eq!(
            launched, 3,
            "the breaker trips after 3 failures and no more tasks start"
        );
        let s = describe(&h, "web").await;
        assert_eq!(s["deployments"][0]["rolloutState"], "FAILED");
        assert_eq!(s["deployments"][0]["status"], "PRIMARY");
        assert!(events(&s)
            .iter()
            .any(|e| e.contains("cannot roll back") || e.contains("deployment failed")));
    }

    #[tokio::test]
    async fn repeated_failures_throttle_launches() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        )
        .await;
        let controller = h.controller();
        let fail = |h: &Harness| {
            let tasks = live(h, "web");
            assert_eq!(tasks.len(), 1);
            tasks[0].arn().to_string()
        };
        // The first three failures are replaced at once.
        for _ in 0..3 {
            controller.pass().await;
            let arn = fail(&h);
            h.report_with(
                &a,
                &arn,
                "STOPPED",
                json!({"stopCode": "EssentialContainerExited"}),
            )
            .await
            .unwrap();
        }
        controller.pass().await;
        let arn = fail(&h);
        h.report_with(
            &a,
            &arn,
            "STOPPED",
            json!({"stopCode": "EssentialContainerExited"}),
        )
        .await
        .unwrap();
        // The fourth waits 2 s, the fifth 4 s.
        controller.pass().await;
        assert!(live(&h, "web").is_empty(), "throttled");
        h.advance(1.5);
        controller.pass().await;
        assert!(live(&h, "web").is_empty(), "still throttled");
        h.advance(0.5);
        controller.pass().await;
        let arn = fail(&h);
        h.report_with(
            &a,
            &arn,
            "STOPPED",
            json!({"stopCode": "EssentialContainerExited"}),
        )
        .await
        .unwrap();
        controller.pass().await;
        h.advance(3.9);
        controller.pass().await;
        assert!(live(&h, "web").is_empty());
        h.advance(0.1);
        controller.pass().await;
        assert_eq!(live(&h, "web").len(), 1);
        // A task that runs resets the count.
        h.agents_act(&[&a]).await;
        controller.pass().await;
        controller.pass().await;
        assert_eq!(record(&h, "web").consecutive_failures, 0);
    }

    #[tokio::test]
    async fn tasks_on_a_draining_instance_move_elsewhere() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        let b = h.instance("default", Spec::default()).await;
        h.ok(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [a.arn], "status": "DRAINING"}),
        )
        .await;
        controller.pass().await;
        // Replacements start on b before anything on a stops (100 % healthy).
        let tasks = live(&h, "web");
        assert_eq!(tasks.len(), 4);
        assert!(tasks
            .iter()
            .filter(|t| t.instance_id.as_deref() == Some(a.id.as_str()))
            .all(|t| t.desired_status() == TaskStatus::Running));
        converge(&h, &controller, &[&a, &b]).await;
        let tasks = live(&h, "web");
        assert_eq!(tasks.len(), 2);
        assert!(tasks
            .iter()
            .all(|t| t.instance_id.as_deref() == Some(b.id.as_str())));
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [a.arn]}),
            )
            .await;
        assert_eq!(out["containerInstances"][0]["runningTasksCount"], 0);
        assert_eq!(out["containerInstances"][0]["status"], "DRAINING");
    }

    #[tokio::test]
    async fn tasks_of_a_lost_agent_are_replaced_after_two_minutes() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
                "placementConstraints": [{"type": "distinctInstance"}]}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a, &b]).await;
        h.silence(&a);
        h.advance(46.0);
        controller.pass().await;
        h.advance(119.0);
        controller.pass().await;
        assert_eq!(
            live(&h, "web").len(),
            2,
            "a disconnected agent may come back"
        );
        h.advance(2.0);
        controller.pass().await;
        let on_a: Vec<TaskRecord> = service_tasks(&h, "web")
            .into_iter()
            .filter(|t| t.instance_id.as_deref() == Some(a.id.as_str()))
            .collect();
        assert_eq!(on_a.len(), 1);
        assert_eq!(
            on_a[0].last_status(),
            TaskStatus::Stopped,
            "no agent will report it"
        );
        assert_eq!(
            on_a[0].task.stopped_reason.as_deref(),
            Some("Container instance is no longer available")
        );
        // Its replacement cannot go to a (AGENT) nor to b (distinctInstance).
        assert_eq!(live(&h, "web").len(), 1);
        let c = h.instance("default", Spec::default()).await;
        converge(&h, &controller, &[&b, &c]).await;
        assert_eq!(live(&h, "web").len(), 2);
        assert!(live(&h, "web")
            .iter()
            .any(|t| t.instance_id.as_deref() == Some(c.id.as_str())));
    }

    #[tokio::test]
    async fn tasks_of_a_deregistered_instance_are_replaced_at_once() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a, &b]).await;
        let e = h
            .err(
                "DeregisterContainerInstance",
                json!({"containerInstance": a.arn}),
            )
            .await;
        assert_eq!(
            e.code, "InvalidParameterException",
            "it has tasks: {}",
            e.message
        );
        h.ok(
            "DeregisterContainerInstance",
            json!({"containerInstance": a.arn, "force": true}),
        )
        .await;
        converge(&h, &controller, &[&b]).await;
        let tasks = live(&h, "web");
        assert_eq!(tasks.len(), 2);
        assert!(tasks
            .iter()
            .all(|t| t.instance_id.as_deref() == Some(b.id.as_str())));
    }

    #[tokio::test]
    async fn unhealthy_tasks_are_replaced_after_the_grace_period() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition(
            "web",
            json!({"healthCheck": {"command": ["CMD-SHELL", "true"]}}),
        )
        .await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                "healthCheckGracePeriodSeconds": 60}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        let arn = live(&h, "web")[0].arn().to_string();
        assert_eq!(h.task(&arn).task.health_status.as_deref(), Some("HEALTHY"));
        h.report_with(&a, &arn, "RUNNING", json!({"health": "UNHEALTHY"}))
            .await
            .unwrap();
        assert_eq!(
            h.task(&arn).task.health_status.as_deref(),
            Some("UNHEALTHY")
        );
        h.advance(30.0);
        controller.pass().await;
        assert_eq!(
            h.task(&arn).desired_status(),
            TaskStatus::Running,
            "within the grace period"
        );
        h.advance(31.0);
        controller.pass().await;
        let t = h.task(&arn);
        assert_eq!(t.desired_status(), TaskStatus::Stopped);
        assert_eq!(
            t.task.stopped_reason.as_deref(),
            Some("Task failed container health checks")
        );
        converge(&h, &controller, &[&a]).await;
        let tasks = live(&h, "web");
        assert_eq!(tasks.len(), 1);
        assert_ne!(tasks[0].arn(), arn);
    }

    #[tokio::test]
    async fn a_forced_delete_stops_the_tasks_then_the_service_goes_inactive() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 3}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        h.ok("DeleteService", json!({"service": "web", "force": true}))
            .await;
        controller.pass().await;
        assert!(service_tasks(&h, "web")
            .iter()
            .all(|t| t.desired_status() == TaskStatus::Stopped));
        assert_eq!(
            describe(&h, "web").await["status"],
            "DRAINING",
            "tasks still running"
        );
        h.agents_act(&[&a]).await;
        controller.pass().await;
        let s = describe(&h, "web").await;
        assert_eq!(s["status"], "INACTIVE");
        assert!(events(&s)[0].contains("has been deleted"));
        // An INACTIVE service is left alone.
        assert_eq!(controller.pass().await, 0);
    }

    #[tokio::test]
    async fn daemons_skip_draining_instances_and_honour_member_of() {
        let h = Harness::new();
        let a = h
            .instance("default", Spec::default().attribute("role", "web"))
            .await;
        let b = h
            .instance("default", Spec::default().attribute("role", "web"))
            .await;
        let db = h
            .instance("default", Spec::default().attribute("role", "db"))
            .await;
        h.task_definition("agent", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "d", "taskDefinition": "agent", "schedulingStrategy": "DAEMON",
                "placementConstraints": [{"type": "memberOf", "expression": "attribute:role == web"}]}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a, &b, &db]).await;
        let on: Vec<String> = live(&h, "d")
            .iter()
            .filter_map(|t| t.instance_id.clone())
            .collect();
        assert_eq!(on.len(), 2);
        assert!(!on.contains(&db.id));
        assert_eq!(
            describe(&h, "d").await["desiredCount"],
            2,
            "db is no target"
        );
        h.ok(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [b.arn], "status": "DRAINING"}),
        )
        .await;
        converge(&h, &controller, &[&a, &b, &db]).await;
        let on: Vec<String> = live(&h, "d")
            .iter()
            .filter_map(|t| t.instance_id.clone())
            .collect();
        assert_eq!(
            on,
            vec![a.id.clone()],
            "the draining instance's daemon task stopped"
        );
        assert_eq!(describe(&h, "d").await["desiredCount"], 1);
        // An instance that stops matching loses its daemon task.
        h.ok(
            "PutAttributes",
            json!({"attributes": [{"name": "role", "value": "db", "targetId": a.arn}]}),
        )
        .await;
        converge(&h, &controller, &[&a, &b, &db]).await;
        assert!(live(&h, "d").is_empty());
        assert_eq!(describe(&h, "d").await["desiredCount"], 0);
    }

    #[tokio::test]
    async fn placement_failures_become_service_events() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default().size(4096, 512)).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 3}),
        )
        .await;
        let controller = h.controller();
        converge(&h, &controller, &[&a]).await;
        assert_eq!(live(&h, "web").len(), 2);
        let s = describe(&h, "web").await;
        let e = events(&s);
        assert!(
            e.iter()
                .any(|m| m.contains("was unable to place a task") && m.contains("RESOURCE:MEMORY")),
            "{e:?}"
        );
        // The same event is not repeated pass after pass.
        let before = e.len();
        controller.pass().await;
        controller.pass().await;
        assert_eq!(events(&describe(&h, "web").await).len(), before);
        assert_eq!(s["deployments"][0]["rolloutState"], "IN_PROGRESS");
    }

    #[tokio::test]
    async fn reconcile_decides_from_the_stored_service_and_tasks() {
        // The pure decision, on what the harness stored: no writes.
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 3}),
        )
        .await;
        let controller = h.controller();
        let mut service = record(&h, "web");
        let states = controller.instance_states(h.store.as_ref(), &h.scope(), "default");
        assert!(states.get(&a.id).is_some_and(|s| s.active && !s.lost));
        let actions = reconcile(&mut service, &[], &states, h.now());
        assert_eq!((actions.start, actions.stop.len()), (3, 0));
        let revision = h.store.revision();
        assert_eq!(h.store.revision(), revision, "deciding wrote nothing");
        converge(&h, &controller, &[&a]).await;
        let tasks = service_tasks(&h, "web");
        let refs: Vec<&TaskRecord> = tasks.iter().collect();
        let mut service = record(&h, "web");
        let actions = reconcile(&mut service, &refs, &states, h.now());
        assert!(actions.is_empty(), "{actions:?}");
        // Lower the count on the record alone: the decision stops one.
        service.service.desired_count = Some(2);
        let actions = reconcile(&mut service, &refs, &states, h.now());
        assert_eq!(actions.stop.len(), 1);
    }
}
