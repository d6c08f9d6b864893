//! Task records: the task as the API shows it plus what its agent needs,
//! its lifecycle ([`TaskStatus`]), references, and the state changes agents
//! and stop requests make.

use berth_model::agent_protocol::{ContainerReport, SubmitTaskStateRequest};
use berth_model::shapes::ecs::{Container, Task, TaskDefinition};
use berth_model::{Arn, AwsError};
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;

/// Where a task (or one of its containers) is in ECS's lifecycle. The
/// order is the lifecycle's: a task never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Provisioning,
        TaskStatus::Pending,
        TaskStatus::Activating,
        TaskStatus::Running,
        TaskStatus::Deactivating,
        TaskStatus::Stopping,
        TaskStatus::Deprovisioning,
        TaskStatus::Stopped,
    ];

    /// The status as ECS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    /// Reads ECS's spelling; `None` for anything else.
    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Not yet RUNNING (ECS's `pendingTasksCount`).
    pub fn is_pending(self) -> bool {
        self < TaskStatus::Running
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TaskStatus> for String {
    fn from(status: TaskStatus) -> String {
        status.as_str().to_string()
    }
}

/// The stop code of a FARGATE_SPOT task whose capacity an on-demand task
/// reclaimed.
pub(crate) const SPOT_INTERRUPTION: &str = "SpotInterruption";
pub(crate) const SPOT_REASON: &str = "Your Spot Task was interrupted.";

/// What a task holds on its instance until it is STOPPED.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub cpu: i64,
    pub memory: i64,
    pub ports_tcp: Vec<u16>,
    pub ports_udp: Vec<u16>,
    /// Custom integer resources such as GPU (`resourceRequirements`).
    #[serde(default)]
    pub custom: std::collections::BTreeMap<String, i64>,
}

/// A registration a task holds, as stored on the task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRegistration {
    pub registry_arn: String,
    /// The Cloud Map instance id: the task's id.
    pub instance_id: String,
    /// Whether the custom health status last set was HEALTHY (`None`: the
    /// service has no custom health check).
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// A target's health, as DescribeTargetHealth answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealthInfo {
    /// `initial` | `healthy` | `unhealthy` | `draining` | `unused` |
    /// `unavailable`.
    pub state: String,
    /// The reason code (`Elb.InitialHealthChecking`,
    /// `Target.ResponseCodeMismatch` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The description (`Health checks failed with these codes: [500]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A target a task holds in a target group, as stored on the task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskTarget {
    pub target_group_arn: String,
    /// The instance id (`instance` targets) or the task's address (`ip`).
    pub target_id: String,
    pub port: u16,
    /// `instance` | `ip`.
    pub target_type: String,
    /// The load balancer has the target (false: recorded, the call to
    /// register it not yet confirmed).
    #[serde(default)]
    pub registered: bool,
    /// Deregistration was asked for: the target drains.
    #[serde(default)]
    pub draining: bool,
    /// The last health the load balancer reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<TargetHealthInfo>,
    /// In the target group of a gateway route (added and forgotten as the
    /// service's routes come and go, unlike the service's own groups).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway: bool,
}

impl TaskTarget {
    /// What identifies the target in its group.
    pub fn key(&self) -> (&str, &str, u16) {
        (&self.target_group_arn, &self.target_id, self.port)
    }

    pub fn is_healthy(&self) -> bool {
        self.registered
            && !self.draining
            && self.health.as_ref().is_some_and(|h| h.state == "healthy")
    }

    pub fn is_unhealthy(&self) -> bool {
        self.registered
            && !self.draining
            && self.health.as_ref().is_some_and(|h| h.state == "unhealthy")
    }
}

/// A stored task: the API's view plus what the agent needs to run it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub id: String,
    pub cluster: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    pub task: Task,
    /// The revision as it was when the task started (it may be deleted later).
    pub definition: TaskDefinition,
    pub reservation: Reservation,
    /// The awsvpc task's interface once attached (with what the agent needs
    /// beyond the attachment's details: the subnet's CIDR and router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<berth_model::agent_protocol::TaskNetworkInterface>,
    /// For Fargate tasks, the cluster of the host (`instance_id`) running
    /// them: hosts serve every cluster of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cluster: Option<String>,
    /// The awsvpc task's security groups (its interface is created in them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Scale-in protection (UpdateTaskProtection): the service scheduler
    /// does not stop the task before this time (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until: Option<f64>,
    /// The service-discovery registrations the task holds (its service's
    /// `serviceRegistries`), until it is deregistered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registrations: Vec<TaskRegistration>,
    /// The load balancer targets the task holds (its service's
    /// `loadBalancers`), until their deregistration delay is over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TaskTarget>,
}

impl TaskRecord {
    /// Whether scale-in protection keeps the service scheduler from
    /// stopping the task at `at`.
    pub fn is_protected(&self, at: f64) -> bool {
        self.protected_until.is_some_and(|until| until > at)
    }

    /// `lastStatus` (PROVISIONING until the agent reports).
    pub fn last_status(&self) -> TaskStatus {
        self.task
            .last_status
            .as_deref()
            .and_then(TaskStatus::parse)
            .unwrap_or(TaskStatus::Provisioning)
    }

    /// `desiredStatus` (RUNNING until a stop is asked for).
    pub fn desired_status(&self) -> TaskStatus {
        self.task
            .desired_status
            .as_deref()
            .and_then(TaskStatus::parse)
            .unwrap_or(TaskStatus::Running)
    }

    pub fn arn(&self) -> &str {
        self.task.task_arn.as_deref().unwrap_or("")
    }

    pub(crate) fn bump(&mut self) {
        self.task.version = Some(self.task.version.unwrap_or(0) + 1);
    }

    /// The cluster of the instance running the task: a Fargate task's host
    /// may be registered in another cluster than the task.
    pub fn host_cluster(&self) -> &str {
        self.host_cluster.as_deref().unwrap_or(&self.cluster)
    }

    /// The service that started the task (its group `service:<name>`).
    pub fn service(&self) -> Option<&str> {
        self.task
            .group
            .as_deref()
            .and_then(|g| g.strip_prefix("service:"))
    }

    /// Whether the task's capacity is being reclaimed for an on-demand task
    /// (it no longer counts on its host).
    pub fn reclaimed(&self) -> bool {
        self.desired_status() == TaskStatus::Stopped
            && self.task.stop_code.as_deref() == Some(SPOT_INTERRUPTION)
    }

    /// Whether the task holds resources on its instance: not STOPPED, and
    /// not being reclaimed.
    pub fn holds_resources(&self) -> bool {
        self.last_status() != TaskStatus::Stopped && !self.reclaimed()
    }
}

/// How many tasks of a cluster run and wait to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TaskCounts {
    pub running: u32,
    pub pending: u32,
}

impl TaskCounts {
    pub fn add(&mut self, status: TaskStatus) {
        if status == TaskStatus::Running {
            self.running += 1;
        } else if status.is_pending() {
            self.pending += 1;
        }
    }
}

/// Turns a task reference (id or ARN) into its id.
pub(crate) fn resolve_task_id(
    scope: &Scope,
    cluster: &str,
    reference: &str,
) -> Result<String, AwsError> {
    let id = if reference.starts_with("arn:") {
        let arn = Arn::parse(reference)
            .filter(|a| a.service == "ecs" && a.resource_type() == "task")
            .ok_or_else(|| error::invalid_parameter(format!("Invalid task ARN: {reference}")))?;
        if arn.account != scope.account || arn.region != scope.region {
            return Err(error::invalid_parameter(format!(
                "The task {reference} is not in this account and region."
            )));
        }
        let rest = arn.resource_id();
        match rest.rsplit_once('/') {
            Some((c, id)) if c == cluster => id.to_string(),
            Some(_) => {
                return Err(error::invalid_parameter(format!(
                    "The task {reference} does not belong to cluster {cluster}."
                )))
            }
            None => rest.to_string(),
        }
    } else {
        reference.to_string()
    };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(error::invalid_parameter(format!(
            "Invalid task id: '{id}'."
        )));
    }
    Ok(id)
}

/// Marks a task to be stopped (idempotent). Tasks no agent will ever run
/// again go straight to STOPPED.
pub(crate) fn request_stop(
    record: &mut TaskRecord,
    stop_code: &str,
    reason: &str,
    at: f64,
    agent_gone: bool,
) -> bool {
    if record.last_status() == TaskStatus::Stopped {
        return false;
    }
    let mut changed = false;
    if record.desired_status() != TaskStatus::Stopped {
        record.task.desired_status = Some(TaskStatus::Stopped.into());
        record.task.stopping_at = Some(at);
        record.task.stop_code = Some(stop_code.into());
        record.task.stopped_reason = Some(reason.into());
        changed = true;
    }
    let never_started =
        record.last_status() == TaskStatus::Provisioning && record.instance_id.is_none();
    if agent_gone || never_started {
        record.task.last_status = Some(TaskStatus::Stopped.into());
        record.task.stopped_at = Some(at);
        record.task.execution_stopped_at.get_or_insert(at);
        for c in record.task.containers.iter_mut().flatten() {
            if c.last_status.as_deref() != Some(TaskStatus::Stopped.as_str()) {
                c.last_status = Some(TaskStatus::Stopped.into());
            }
        }
        changed = true;
    }
    if changed {
        record.bump();
    }
    changed
}

// ---------------------------------------------------------------------------
// Agent reports.

fn task_health(record: &TaskRecord) -> String {
    let containers = record.task.containers.as_deref().unwrap_or(&[]);
    let mut any_checked = false;
    let mut all_healthy = true;
    for def in record.definition.container_definitions.iter().flatten() {
        if def.essential == Some(false) || def.health_check.is_none() {
            continue;
        }
        any_checked = true;
        let status = containers
            .iter()
            .find(|c| c.name == def.name)
            .and_then(|c| c.health_status.as_deref())
            .unwrap_or("UNKNOWN");
        match status {
            "UNHEALTHY" => return "UNHEALTHY".into(),
            "HEALTHY" => {}
            _ => all_healthy = false,
        }
    }
    if any_checked && all_healthy {
        "HEALTHY".into()
    } else {
        "UNKNOWN".into()
    }
}

fn apply_container(container: &mut Container, report: &ContainerReport) {
    let current = container
        .last_status
        .as_deref()
        .and_then(TaskStatus::parse)
        .unwrap_or(TaskStatus::Provisioning);
    if TaskStatus::parse(&report.last_status).is_some_and(|r| r >= current) {
        container.last_status = Some(report.last_status.clone());
    }
    if report.runtime_id.is_some() {
        container.runtime_id = report.runtime_id.clone();
    }
    if report.exit_code.is_some() {
        container.exit_code = report.exit_code;
    }
    if report.reason.is_some() {
        container.reason = report.reason.clone();
    }
    if !report.network_bindings.is_empty() {
        container.network_bindings = Some(report.network_bindings.clone());
    }
    if report.image_digest.is_some() {
        container.image_digest = report.image_digest.clone();
    }
    container.health_status = Some(report.health_status.clone());
}

/// Applies an agent's report to a task. Statuses only move forward and
/// timestamps are set once, so a report that arrives twice or late changes
/// nothing. Returns whether anything changed.
pub(crate) fn apply_report(
    record: &mut TaskRecord,
    report: &SubmitTaskStateRequest,
    at: f64,
) -> Result<bool, AwsError> {
    let new_status = TaskStatus::parse(&report.last_status).ok_or_else(|| {
        error::invalid_parameter(format!("Unknown task status '{}'.", report.last_status))
    })?;
    let before = serde_json::to_vec(&record.task).unwrap_or_default();
    let current = record.last_status();
    if current == TaskStatus::Stopped {
        return Ok(false);
    }
    if new_status > current {
        record.task.last_status = Some(report.last_status.clone());
    }
    let t = &mut record.task;
    if let Some(v) = report.pull_started_at {
        t.pull_started_at.get_or_insert(v);
    }
    if let Some(v) = report.pull_stopped_at {
        t.pull_stopped_at.get_or_insert(v);
    }
    if let Some(v) = report.started_at {
        t.started_at.get_or_insert(v);
    }
    if let Some(v) = report.execution_stopped_at {
        t.execution_stopped_at.get_or_insert(v);
    }
    if let Some(code) = &report.stop_code {
        if t.desired_status.as_deref() != Some(TaskStatus::Stopped.as_str()) {
            t.desired_status = Some(TaskStatus::Stopped.into());
            t.stopping_at = Some(at);
            t.stop_code = Some(code.clone());
            t.stopped_reason = report.stopped_reason.clone();
        }
    }
    if new_status == TaskStatus::Stopped {
        t.stopped_at.get_or_insert(at);
        t.execution_stopped_at.get_or_insert(at);
        t.desired_status = Some(TaskStatus::Stopped.into());
        t.stopping_at.get_or_insert(at);
    }
    for c in t.containers.iter_mut().flatten() {
        if let Some(r) = report
            .containers
            .iter()
            .find(|r| Some(&r.name) == c.name.as_ref())
        {
            apply_container(c, r);
        }
    }
    let health = task_health(record);
    record.task.health_status = Some(health);
    let changed = serde_json::to_vec(&record.task).unwrap_or_default() != before;
    if changed {
        record.bump();
    }
    Ok(changed)
}

/// The host port a bridge-mode container's `container_port` (TCP) is
/// published on, as the host's IPv4 address reaches it. Docker may publish
/// IPv4 and IPv6 on different ports and report either first, so the IPv4
/// binding wins when there is one.
pub(crate) fn ipv4_host_port(
    task: &berth_model::shapes::ecs::Task,
    container: &str,
    container_port: i32,
) -> Option<i32> {
    let bindings: Vec<&berth_model::shapes::ecs::NetworkBinding> = task
        .containers
        .iter()
        .flatten()
        .filter(|c| c.name.as_deref() == Some(container))
        .flat_map(|c| c.network_bindings.iter().flatten())
        .filter(|b| {
            b.container_port == Some(container_port)
                && b.protocol.as_deref().unwrap_or("tcp") == "tcp"
        })
        .collect();
    bindings
        .iter()
        .find(|b| !b.bind_ip.as_deref().unwrap_or("0.0.0.0").contains(':'))
        .or_else(|| bindings.first())
        .and_then(|b| b.host_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVISIONING: &str = "PROVISIONING";
    const PENDING: &str = "PENDING";
    const RUNNING: &str = "RUNNING";
    const STOPPED: &str = "STOPPED";

    use crate::test_support::web_definition as definition;

    fn record() -> TaskRecord {
        TaskRecord {
            id: "t1".into(),
            cluster: "default".into(),
            instance_id: Some("i1".into()),
            task: Task {
                task_arn: Some("arn:aws:ecs:us-east-1:000000000000:task/default/t1".into()),
                last_status: Some(PROVISIONING.into()),
                desired_status: Some(RUNNING.into()),
                containers: Some(vec![Container {
                    name: Some("a".into()),
                    last_status: Some(PENDING.into()),
                    ..Container::default()
                }]),
                version: Some(1),
                ..Task::default()
            },
            definition: definition(),
            reservation: Reservation::default(),
            network: None,
            host_cluster: None,
            security_groups: Vec::new(),
            ..TaskRecord::default()
        }
    }

    fn report(status: &str) -> SubmitTaskStateRequest {
        SubmitTaskStateRequest {
            task_arn: "t1".into(),
            last_status: status.into(),
            containers: vec![ContainerReport {
                name: "a".into(),
                last_status: status.into(),
                health_status: "UNKNOWN".into(),
                ..ContainerReport::default()
            }],
            started_at: (status == RUNNING).then_some(10.0),
            ..SubmitTaskStateRequest::default()
        }
    }

    #[test]
    fn reports_only_move_forward_and_set_timestamps_once() {
        let mut r = record();
        assert!(apply_report(&mut r, &report(RUNNING), 10.0).unwrap());
        assert_eq!(r.last_status(), TaskStatus::Running);
        assert_eq!(r.task.version, Some(2));
        // A late PENDING report changes nothing.
        assert!(!apply_report(&mut r, &report(PENDING), 11.0).unwrap());
        assert_eq!(r.last_status(), TaskStatus::Running);
        let mut again = report(RUNNING);
        again.started_at = Some(99.0);
        apply_report(&mut r, &again, 12.0).unwrap();
        assert_eq!(r.task.started_at, Some(10.0));

        let mut exit = report(STOPPED);
        exit.stop_code = Some("EssentialContainerExited".into());
        exit.stopped_reason = Some("Essential container in task exited".into());
        exit.containers[0].exit_code = Some(3);
        assert!(apply_report(&mut r, &exit, 20.0).unwrap());
        assert_eq!(r.desired_status(), TaskStatus::Stopped);
        assert_eq!(
            r.task.stop_code.as_deref(),
            Some("EssentialContainerExited")
        );
        assert_eq!(r.task.stopped_at, Some(20.0));
        let c = &r.task.containers.as_ref().unwrap()[0];
        assert_eq!(
            (c.last_status.as_deref(), c.exit_code),
            (Some(STOPPED), Some(3))
        );
        // Nothing changes a STOPPED task.
        assert!(!apply_report(&mut r, &report(RUNNING), 30.0).unwrap());
    }

    #[test]
    fn user_stop_wins_over_later_agent_reasons() {
        let mut r = record();
        assert!(request_stop(&mut r, "UserInitiated", "bye", 5.0, false));
        assert_eq!(
            r.last_status(),
            TaskStatus::Provisioning,
            "the agent still has to stop it"
        );
        assert!(!request_stop(&mut r, "UserInitiated", "again", 6.0, false));
        let mut exit = report(STOPPED);
        exit.stop_code = Some("EssentialContainerExited".into());
        apply_report(&mut r, &exit, 7.0).unwrap();
        assert_eq!(r.task.stop_code.as_deref(), Some("UserInitiated"));
        assert_eq!(r.task.stopped_reason.as_deref(), Some("bye"));

        let mut orphan = record();
        assert!(request_stop(&mut orphan, "UserInitiated", "bye", 5.0, true));
        assert_eq!(
            orphan.last_status(),
            TaskStatus::Stopped,
            "no agent will report it"
        );
    }
}
