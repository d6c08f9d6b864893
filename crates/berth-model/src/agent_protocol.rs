//! The protocol between `berth agent` and the server: AWS JSON 1.1 over the
//! same gateway as every API (SigV4-signed, routed by `X-Amz-Target:
//! BerthAgentV1.<Operation>`), so it shares authentication, errors and
//! codecs. `RegisterAgent` carries the operator's agent registration token
//! and mints a credential bound to the container instance; every other call is
//! signed with that credential. A first registration is signed with account
//! credentials allowed `berth:RegisterAgent` on the cluster; registering a live
//! instance again must be signed with its current agent credential (so nobody
//! else can take it over).
//!
//! Resumable: `PollTasks` takes the store revision the agent last saw and
//! answers (long-polling) once something about the agent's tasks changed after
//! it, with the complete list of the instance's tasks (level-triggered: an agent
//! that missed an answer loses nothing).

use serde::{Deserialize, Serialize};

use crate::shapes::ecs::{
    Attribute, Container, NetworkBinding, Resource, TaskDefinition, TaskOverride, VersionInfo,
};

pub const TARGET_PREFIX: &str = "BerthAgentV1";
/// Agents sign with the ECS signing name, as the ECS agent does.
pub const SIGNING_NAME: &str = "ecs";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterAgentRequest {
    pub cluster: String,
    /// The host's stable name (the container instance's `ec2InstanceId`);
    /// registering the same name again returns the same container instance.
    pub name: String,
    pub total_resources: Vec<Resource>,
    pub attributes: Vec<Attribute>,
    pub version_info: VersionInfo,
    /// The agent registration token the server's operator gave this host
    /// (`<data-dir>/agent-token` of `berth up`, or its `BERTH_AGENT_TOKEN`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registration_token: String,
}

/// The IAM action a user or role session needs (on the cluster's ARN) to
/// register an agent. Not an `ecs:` action, so `ecs:*` does not grant it.
pub const REGISTER_AGENT_ACTION: &str = "berth:RegisterAgent";

/// The instance's agent credential. Registering a live instance again (signed
/// with its credential) keeps that credential: the answer names it again and
/// leaves `secret_access_key` empty, as the agent has it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterAgentResponse {
    pub container_instance_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Berth's DNS server (`ip:port`), which the agent's tasks use through
    /// the host's DNS relay (`169.254.170.2:53`, and each VPC's resolver
    /// address for awsvpc tasks). Absent when the server runs none. An
    /// unspecified address (`0.0.0.0:port`) means "the server's own host".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_endpoint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollTasksRequest {
    /// The revision of the last answer; 0 asks for the current state at once.
    pub since_revision: u64,
    /// How long to wait for a change before answering anyway (at most 30).
    pub wait_seconds: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollTasksResponse {
    pub revision: u64,
    /// ACTIVE, DRAINING or INACTIVE (deregistered: the agent should stop).
    pub instance_status: String,
    pub tasks: Vec<AssignedTask>,
}

/// A task placed on the agent's instance, with everything needed to run it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AssignedTask {
    pub task_arn: String,
    pub cluster_arn: String,
    pub desired_status: String,
    pub last_status: String,
    pub task_definition: TaskDefinition,
    pub overrides: TaskOverride,
    /// The containers as last reported (runtime ids let a restarted agent adopt them).
    pub containers: Vec<Container>,
    /// Bumped on every change of the task record.
    pub version: i64,
    /// The task's network interface (awsvpc tasks), once Berth attached it:
    /// an awsvpc task without one must wait before it creates containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<TaskNetworkInterface>,
    /// Why the task is being stopped (`SpotInterruption` gives containers
    /// [`SPOT_INTERRUPTION_GRACE_SECONDS`] between SIGTERM and SIGKILL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
}

/// How long a FARGATE_SPOT task's containers get after SIGTERM when Berth
/// reclaims its capacity: Fargate's two-minute warning.
pub const SPOT_INTERRUPTION_GRACE_SECONDS: u32 = 120;

/// The elastic network interface of an awsvpc task, as the agent plumbs it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskNetworkInterface {
    /// `eni-…`.
    pub eni_id: String,
    pub subnet_id: String,
    /// The subnet's CIDR block, e.g. `172.31.0.0/20`.
    pub subnet_cidr: String,
    /// The subnet's router (network address + 1).
    pub gateway: String,
    pub private_ip: String,
    pub mac: String,
    /// The interface's VPC (`vpc-…`): the agent routes between the subnets
    /// of one VPC on its host and keeps VPCs apart. Empty from servers
    /// that predate it (the subnet is then treated as a VPC of its own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc_id: String,
    /// The VPC's CIDR block, e.g. `172.31.0.0/16`: addresses in it never
    /// leave the VPC (empty from older servers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc_cidr: String,
}

/// Asks for the security-group rules that apply to an awsvpc task's
/// interface now (rules naming other groups come resolved to addresses).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetNetworkPolicyRequest {
    pub task_arn: String,
}

/// One allowed flow: `protocol` is `tcp`, `udp`, `icmp`, `-1` (all) or a
/// protocol number; for tcp/udp `from_port..=to_port` (absent: all ports);
/// `cidrs` are the peers (IPv4 CIDR blocks).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRule {
    pub protocol: String,
    #[serde(default)]
    pub from_port: Option<i32>,
    #[serde(default)]
    pub to_port: Option<i32>,
    pub cidrs: Vec<String>,
}

/// The union of the interface's groups' rules: traffic not allowed is
/// dropped (security groups are stateful: replies to allowed flows pass).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GetNetworkPolicyResponse {
    pub ingress: Vec<NetworkRule>,
    pub egress: Vec<NetworkRule>,
    /// Addresses of the task's VPC that live on the server's host (load
    /// balancers' interfaces): the VPC's router sends them to the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosted_addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub name: String,
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// What the agent observed about one task. Timestamps are seconds since the
/// epoch, set once (later reports do not move them).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubmitTaskStateRequest {
    pub task_arn: String,
    pub last_status: String,
    pub containers: Vec<ContainerReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    /// Set when the agent itself decides the task must stop (an essential
    /// container exited, an image could not be pulled ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubmitTaskStateResponse {
    pub desired_status: String,
    pub version: i64,
}

/// Asks for the values of a task's `secrets` (and `secretOptions`), at the
/// moment its containers are created. The answer is never stored: not in the
/// task record, not in the agent's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResolveSecretsRequest {
    pub task_arn: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecrets {
    pub name: String,
    /// Environment variables from `secrets[]`.
    pub environment: Vec<(String, String)>,
    /// Log driver options from `logConfiguration.secretOptions`.
    pub log_options: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResolveSecretsResponse {
    pub containers: Vec<ContainerSecrets>,
}

/// Where a container's log shipping stands: the runtime's timestamp of a line
/// (nanoseconds since the epoch) and its index among lines with that same
/// timestamp. Positions only grow, so the server keeps the greatest one it
/// stored for a stream and drops anything at or before it: a batch sent again
/// after a crash is never stored twice.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct LogPosition {
    pub nanos: i64,
    pub seq: u32,
}

/// Makes sure a task's awslogs stream exists (creating the group too when the
/// container asks with `awslogs-create-group`) and answers how far shipping to
/// it has come.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenLogStreamRequest {
    pub task_arn: String,
    pub region: String,
    pub log_group_name: String,
    pub log_stream_name: String,
    #[serde(default)]
    pub create_group: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenLogStreamResponse {
    #[serde(default)]
    pub cursor: Option<LogPosition>,
}

/// One log event as the agent ships it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskLogEvent {
    /// Milliseconds since the epoch, as CloudWatch Logs counts.
    pub timestamp: i64,
    pub message: String,
    pub position: LogPosition,
}

/// A batch of a container's log events, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PutTaskLogsRequest {
    pub task_arn: String,
    pub region: String,
    pub log_group_name: String,
    pub log_stream_name: String,
    pub events: Vec<TaskLogEvent>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PutTaskLogsResponse {
    #[serde(default)]
    pub cursor: Option<LogPosition>,
}

/// `which` of [`GetTaskRoleCredentialsRequest`]: the task's `taskRoleArn`.
pub const ROLE_TASK: &str = "task";
/// `which` of [`GetTaskRoleCredentialsRequest`]: the task's `executionRoleArn`.
pub const ROLE_EXECUTION: &str = "execution";

/// Asks for temporary credentials of one of a task's roles (IAM roles for
/// tasks). The answer is never stored: the agent keeps it in memory and
/// serves the task role's to the task's containers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetTaskRoleCredentialsRequest {
    pub task_arn: String,
    /// [`ROLE_TASK`] or [`ROLE_EXECUTION`].
    pub which: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetTaskRoleCredentialsResponse {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When the credentials expire, in seconds since the epoch.
    pub expiration: i64,
}
