//! A handler-level test harness: an in-memory store, simulated container
//! instances (registered through the agent protocol, as real agents do, so
//! each has an agent credential to poll and report with), and calls to the
//! ECS API and the agent protocol as a given principal. No Docker, no
//! network, no disk.
//!
//! Time is a [`FakeClock`] that only moves when a test says so
//! ([`Harness::advance`]); simulated agents keep polling while it moves
//! unless a test silences them.
//!
//! Extend it rather than building fixtures by hand: a test that writes
//! records directly misses the indexes every real write keeps.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_model::agent_protocol::{
    PollTasksRequest, PollTasksResponse, RegisterAgentRequest, RegisterAgentResponse,
};
use berth_model::authz::{Access, Authorizer, Denial, DenialStyle, Requirement};
use berth_model::shapes::ecs::{Attribute, Resource};
use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{MemoryStore, Store};
use serde_json::{json, Value};

use crate::api::{EcsService, ExecService};
use crate::control::agent_api::{agent_credential, agent_principal, AgentService};
use crate::control::service_controller::ServiceController;
use crate::state::clock::Clock;
use crate::state::instances::{Presence, AGENT_TIMEOUT};
use crate::state::keys::Scope;
use crate::state::network::{AttachedInterface, SubnetInfo, TaskNetworks};
use crate::state::records::load;
use crate::state::tasks::TaskRecord;

pub(crate) const ACCOUNT: &str = "000000000000";
pub(crate) const REGION: &str = "us-east-1";
pub(crate) const TOKEN: &str = "harness-agent-registration-token";

/// The account's root user (IAM not enforced).
pub(crate) fn root() -> RequestContext {
    RequestContext::for_principal(
        Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            user_id: ACCOUNT.into(),
            account_id: ACCOUNT.into(),
            access_key_id: "AKIAHARNESSROOT".into(),
        },
        REGION,
    )
}

/// An IAM engine allowing the actions listed (`svc:*` allows a service).
struct Allow(Vec<String>);

impl Authorizer for Allow {
    fn authorize(&self, _: &RequestContext, reqs: &[Requirement]) -> Result<(), Denial> {
        for r in reqs {
            let allowed = self.0.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => r.action.starts_with(prefix),
                None => *a == r.action,
            });
            if !allowed {
                return Err(Denial::implicit(r));
            }
        }
        Ok(())
    }
}

/// An IAM user allowed exactly `actions` (on any resource).
pub(crate) fn user(name: &str, actions: &[&str]) -> RequestContext {
    let authorizer: Arc<dyn Authorizer> =
        Arc::new(Allow(actions.iter().map(|a| a.to_string()).collect()));
    RequestContext::for_principal(
        Principal {
            kind: PrincipalKind::User,
            arn: format!("arn:aws:iam::{ACCOUNT}:user/{name}"),
            user_id: format!("AIDA{}", name.to_uppercase()),
            account_id: ACCOUNT.into(),
            access_key_id: format!("AKIA{}", name.to_uppercase()),
        },
        REGION,
    )
    .with_access(Access::new(Some(authorizer), DenialStyle::Json, false))
}

/// A VPC service where every subnet `subnet-<n>` exists in `vpc-1`, in
/// zone `us-east-1a` (even n) or `us-east-1b` (odd n); interfaces are not
/// created (no network controller runs here).
pub(crate) struct FakeNetworks;

#[async_trait::async_trait]
impl TaskNetworks for FakeNetworks {
    fn check(
        &self,
        _account: &str,
        _region: &str,
        subnets: &[String],
        _security_groups: &[String],
    ) -> Result<Vec<SubnetInfo>, AwsError> {
        subnets
            .iter()
            .map(|s| {
                let n: u32 = s
                    .strip_prefix("subnet-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        AwsError::bad_request(
                            "InvalidParameterException",
                            format!("No subnet {s}."),
                        )
                    })?;
                Ok(SubnetInfo {
                    subnet_id: s.clone(),
                    vpc_id: "vpc-1".into(),
                    availability_zone: if n.is_multiple_of(2) {
                        "us-east-1a"
                    } else {
                        "us-east-1b"
                    }
                    .into(),
                })
            })
            .collect()
    }

    async fn attach(
        &self,
        _account: &str,
        _region: &str,
        _subnet_id: &str,
        _security_groups: &[String],
        _description: &str,
    ) -> Result<AttachedInterface, AwsError> {
        Err(AwsError::internal("The harness creates no interfaces."))
    }

    async fn release(&self, _account: &str, _region: &str, _eni_id: &str) -> Result<(), AwsError> {
        Ok(())
    }

    fn policy(
        &self,
        _account: &str,
        _region: &str,
        _eni_id: &str,
    ) -> Result<berth_model::agent_protocol::GetNetworkPolicyResponse, AwsError> {
        Ok(Default::default())
    }
}

/// A simulated container instance: its agent's credential and identity.
#[derive(Clone)]
pub(crate) struct Instance {
    pub id: String,
    pub arn: String,
    /// Signs as the instance's agent.
    pub agent: RequestContext,
}

/// What a simulated instance registers.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub cpu: i32,
    pub memory: i32,
    pub attributes: Vec<(String, String)>,
    /// Custom integer resources, e.g. `("GPU", 2)`.
    pub custom: Vec<(String, i32)>,
}

/// The capabilities a Berth agent registers (valueless attributes).
pub(crate) const CAPABILITIES: &[&str] = &[
    "com.amazonaws.ecs.capability.docker-remote-api.1.17",
    "com.amazonaws.ecs.capability.docker-remote-api.1.18",
    "com.amazonaws.ecs.capability.docker-remote-api.1.19",
    "com.amazonaws.ecs.capability.docker-remote-api.1.24",
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "com.amazonaws.ecs.capability.task-iam-role",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.secrets.asm.environment-variables",
    "ecs.capability.secrets.ssm.environment-variables",
    "ecs.capability.task-eni",
];

impl Default for Spec {
    /// 4 vCPU, 8 GiB, the agent's capabilities.
    fn default() -> Self {
        Spec {
            cpu: 4096,
            memory: 8192,
            attributes: Vec::new(),
            custom: Vec::new(),
        }
    }
}

impl Spec {
    pub fn attribute(mut self, name: &str, value: &str) -> Spec {
        self.attributes.push((name.into(), value.into()));
        self
    }

    pub fn resource(mut self, name: &str, amount: i32) -> Spec {
        self.custom.push((name.into(), amount));
        self
    }

    pub fn size(mut self, cpu: i32, memory: i32) -> Spec {
        self.cpu = cpu;
        self.memory = memory;
        self
    }
}

/// A clock that moves only when told: wall time starts at
/// 2026-01-01T00:00:00Z, the monotonic reading at zero.
pub(crate) struct FakeClock {
    /// Milliseconds since the start.
    elapsed_ms: std::sync::atomic::AtomicU64,
}

/// Where the fake clock starts (seconds since the epoch).
pub(crate) const START: f64 = 1_767_225_600.0;

impl FakeClock {
    pub fn new() -> FakeClock {
        FakeClock {
            elapsed_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.elapsed_ms
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> f64 {
        START + self.monotonic().as_secs_f64()
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// The services over one in-memory store.
pub(crate) struct Harness {
    pub store: Arc<dyn Store>,
    pub presence: Arc<Presence>,
    pub clock: Arc<FakeClock>,
    pub ecs: EcsService,
    pub agents: AgentService,
    /// `berth exec`'s client half, relaying through the agents' hub.
    pub exec: ExecService,
    _shutdown: tokio::sync::watch::Sender<bool>,
    instances: std::sync::atomic::AtomicU32,
    /// Agents that keep polling while time moves (by instance ARN).
    polling: Mutex<BTreeSet<String>>,
}

impl Harness {
    pub fn new() -> Harness {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(FakeClock::new());
        let presence = Arc::new(Presence::with_timeout(AGENT_TIMEOUT).with_clock(clock.clone()));
        let (shutdown, stopping) = tokio::sync::watch::channel(false);
        let hub = crate::state::exec::ExecHub::new();
        Harness {
            exec: ExecService::new(store.clone(), hub.clone()),
            ecs: EcsService::new(store.clone(), presence.clone())
                .with_networks(Arc::new(FakeNetworks))
                .with_clock(clock.clone()),
            agents: AgentService::new(store.clone(), presence.clone(), stopping)
                .with_registration_token(crate::control::agent_api::RegistrationToken::new(TOKEN))
                .with_exec(hub)
                .with_clock(clock.clone()),
            store,
            presence,
            clock,
            _shutdown: shutdown,
            instances: std::sync::atomic::AtomicU32::new(0),
            polling: Mutex::new(BTreeSet::new()),
        }
    }

    /// The harness clock's time (seconds since the epoch).
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// Moves time forward; agents that were not silenced keep polling
    /// through it (they stay connected).
    pub fn advance(&self, secs: f64) {
        self.clock.advance(Duration::from_secs_f64(secs));
        for arn in self
            .polling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            self.presence.touch(arn);
        }
    }

    /// The instance's agent stops polling (its host went away).
    pub fn silence(&self, instance: &Instance) {
        self.polling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&instance.arn);
    }

    /// A service controller over the harness's store, presence and clock.
    pub fn controller(&self) -> Arc<ServiceController> {
        ServiceController::with_clock(
            self.store.clone(),
            self.presence.clone(),
            self.clock.clone(),
        )
    }

    pub fn scope(&self) -> Scope {
        Scope {
            account: ACCOUNT.into(),
            region: REGION.into(),
        }
    }

    /// Calls an ECS operation as `ctx`.
    pub async fn ecs_as(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        let body = serde_json::to_vec(&input).unwrap_or_default();
        let out = self.ecs.handle(ctx, operation, &body).await?;
        Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    /// Calls an ECS operation as the root user.
    pub async fn ecs(&self, operation: &str, input: Value) -> Result<Value, AwsError> {
        self.ecs_as(&root(), operation, input).await
    }

    /// Calls an ECS operation as root and fails the test on an error.
    pub async fn ok(&self, operation: &str, input: Value) -> Value {
        self.ecs(operation, input)
            .await
            .unwrap_or_else(|e| panic!("{operation}: {}: {}", e.code, e.message))
    }

    /// Calls a `berth exec` operation (`BerthExecV1`) as `ctx`.
    pub async fn exec_as(
        &self,
        ctx: &RequestContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        let body = serde_json::to_vec(&input).unwrap_or_default();
        let out = self.exec.handle(ctx, operation, &body).await?;
        Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    /// Calls an agent protocol operation as `instance`'s agent.
    pub async fn agent(
        &self,
        instance: &Instance,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        let body = serde_json::to_vec(&input).unwrap_or_default();
        let out = self
            .agents
            .handle(&instance.agent, operation, &body)
            .await?;
        Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    /// Registers a simulated instance in `cluster` through the agent
    /// protocol; its agent counts as connected.
    pub async fn instance(&self, cluster: &str, spec: Spec) -> Instance {
        let n = self
            .instances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut resources = vec![integer("CPU", spec.cpu), integer("MEMORY", spec.memory)];
        for (name, amount) in &spec.custom {
            resources.push(integer(name, *amount));
        }
        let request = RegisterAgentRequest {
            cluster: cluster.into(),
            name: format!("i-harness{n:04}"),
            total_resources: resources,
            attributes: CAPABILITIES
                .iter()
                .map(|name| (name.to_string(), None))
                .chain(
                    spec.attributes
                        .iter()
                        .map(|(n, v)| (n.clone(), Some(v.clone()))),
                )
                .map(|(name, value)| Attribute {
                    name: Some(name),
                    value,
                    target_type: None,
                    target_id: None,
                })
                .collect(),
            registration_token: TOKEN.into(),
            ..RegisterAgentRequest::default()
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let out = self
            .agents
            .handle(&root(), "RegisterAgent", &body)
            .await
            .unwrap_or_else(|e| panic!("RegisterAgent: {}: {}", e.code, e.message));
        let answer: RegisterAgentResponse = serde_json::from_slice(&out).unwrap_or_default();
        let credential = agent_credential(self.store.as_ref(), &answer.access_key_id)
            .unwrap_or_else(|| panic!("no credential for {}", answer.access_key_id));
        let agent = RequestContext::for_principal(
            agent_principal(&answer.access_key_id, &credential),
            REGION,
        )
        .with_access(Access::new(None, DenialStyle::Json, true));
        self.polling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(answer.container_instance_arn.clone());
        Instance {
            id: credential.instance_id,
            arn: answer.container_instance_arn,
            agent,
        }
    }

    /// Registers a task definition of one container (`containers` extends
    /// or replaces its fields) and answers its ARN.
    pub async fn task_definition(&self, family: &str, container: Value) -> String {
        let mut c = json!({"name": "app", "image": "busybox", "cpu": 256, "memory": 256});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        let out = self
            .ok(
                "RegisterTaskDefinition",
                json!({"family": family, "containerDefinitions": [c]}),
            )
            .await;
        out["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// RunTask as root; answers the placed tasks' ARNs and the failures.
    pub async fn run(&self, input: Value) -> (Vec<String>, Vec<Value>) {
        let out = self.ok("RunTask", input).await;
        let arns = out["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
            .collect();
        let failures = out["failures"].as_array().cloned().unwrap_or_default();
        (arns, failures)
    }

    /// The stored task an ARN names.
    pub fn task(&self, arn: &str) -> TaskRecord {
        let (cluster, id) = arn
            .rsplit_once(":task/")
            .and_then(|(_, rest)| rest.split_once('/'))
            .unwrap_or_default();
        load::<TaskRecord>(self.store.as_ref(), &self.scope().task(cluster, id))
            .ok()
            .flatten()
            .map(|(t, _)| t)
            .unwrap_or_else(|| panic!("no task {arn}"))
    }

    /// The instance id a task was placed on.
    pub fn instance_of(&self, arn: &str) -> String {
        self.task(arn).instance_id.unwrap_or_default()
    }

    /// The instance's agent reports `status` for a task (all containers
    /// the same; RUNNING carries `startedAt`, as a real agent's report).
    pub async fn report(&self, instance: &Instance, task_arn: &str, status: &str) {
        self.report_with(instance, task_arn, status, json!({}))
            .await
            .unwrap_or_else(|e| panic!("SubmitTaskState: {}: {}", e.code, e.message));
    }

    /// A report with more fields (`stopCode`, `stoppedReason`, or
    /// `health`: every container's health status, `exitCode`: theirs).
    pub async fn report_with(
        &self,
        instance: &Instance,
        task_arn: &str,
        status: &str,
        extra: Value,
    ) -> Result<Value, AwsError> {
        let task = self.task(task_arn);
        let health = extra["health"].as_str().unwrap_or("UNKNOWN").to_string();
        let containers = task
            .task
            .containers
            .iter()
            .flatten()
            .map(|c| {
                let mut report =
                    json!({"name": c.name, "lastStatus": status, "healthStatus": health});
                if let Some(code) = extra.get("exitCode") {
                    report["exitCode"] = code.clone();
                }
                report
            })
            .collect::<Vec<_>>();
        let mut report = json!({
            "taskArn": task_arn,
            "lastStatus": status,
            "containers": containers,
        });
        if status == "RUNNING" {
            report["startedAt"] = json!(self.now());
        }
        for field in ["stopCode", "stoppedReason"] {
            if let Some(v) = extra.get(field) {
                report[field] = v.clone();
            }
        }
        self.agent(instance, "SubmitTaskState", report).await
    }

    /// Every agent acts on what its poll lists, as a real one would, but
    /// at once: tasks to run report RUNNING (healthy when the definition
    /// has a health check), tasks to stop report STOPPED. Answers how many
    /// reports were made.
    pub async fn agents_act(&self, instances: &[&Instance]) -> usize {
        let mut reports = 0;
        for instance in instances {
            for task in self.poll(instance, 0, 0).await.tasks {
                let checked = task
                    .task_definition
                    .container_definitions
                    .iter()
                    .flatten()
                    .any(|c| c.health_check.is_some());
                let health = if checked { "HEALTHY" } else { "UNKNOWN" };
                let status = match (task.desired_status.as_str(), task.last_status.as_str()) {
                    ("RUNNING", "PROVISIONING" | "PENDING" | "ACTIVATING") => "RUNNING",
                    ("STOPPED", last) if last != "STOPPED" => "STOPPED",
                    _ => continue,
                };
                self.report_with(instance, &task.task_arn, status, json!({"health": health}))
                    .await
                    .unwrap_or_else(|e| panic!("SubmitTaskState: {}: {}", e.code, e.message));
                reports += 1;
            }
        }
        reports
    }

    /// Calls an ECS operation as root and answers its error (fails the
    /// test when it succeeds).
    pub async fn err(&self, operation: &str, input: Value) -> AwsError {
        match self.ecs(operation, input).await {
            Ok(out) => panic!("{operation} succeeded: {out}"),
            Err(e) => e,
        }
    }

    /// Every stored task of `cluster`.
    pub fn tasks(&self, cluster: &str) -> Vec<TaskRecord> {
        self.store
            .range(&self.scope().tasks(cluster), None, usize::MAX)
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect()
    }

    /// The tasks of a service (through its index).
    pub fn service_tasks(&self, cluster: &str, service: &str) -> Vec<TaskRecord> {
        self.store
            .range(
                &self.scope().service_tasks(cluster, service),
                None,
                usize::MAX,
            )
            .iter()
            .filter_map(|kv| {
                let id = kv.key.rsplit('/').next()?;
                load::<TaskRecord>(self.store.as_ref(), &self.scope().task(cluster, id))
                    .ok()
                    .flatten()
                    .map(|(t, _)| t)
            })
            .collect()
    }

    /// One agent poll (`since_revision` 0: the full list at once).
    pub async fn poll(
        &self,
        instance: &Instance,
        since_revision: u64,
        wait_seconds: u32,
    ) -> PollTasksResponse {
        let input = PollTasksRequest {
            since_revision,
            wait_seconds,
        };
        let out = self
            .agent(
                instance,
                "PollTasks",
                serde_json::to_value(input).unwrap_or_default(),
            )
            .await
            .unwrap_or_else(|e| panic!("PollTasks: {}: {}", e.code, e.message));
        serde_json::from_value(out).unwrap_or_else(|e| panic!("PollTasks answer: {e}"))
    }
}

/// The `reason`s of ECS `failures[]` entries.
pub(crate) fn reasons(failures: &[Value]) -> Vec<String> {
    failures
        .iter()
        .filter_map(|f| f["reason"].as_str().map(str::to_string))
        .collect()
}

fn integer(name: &str, value: i32) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(value),
        ..Resource::default()
    }
}

/// A definition of two containers ("a" with two port mappings, "b"),
/// for reservation and usage tests.
pub(crate) fn web_definition() -> berth_model::shapes::ecs::TaskDefinition {
    berth_model::shapes::ecs::TaskDefinition {
        family: Some("web".into()),
        container_definitions: Some(vec![
            berth_model::shapes::ecs::ContainerDefinition {
                name: Some("a".into()),
                cpu: Some(100),
                memory: Some(256),
                memory_reservation: Some(128),
                port_mappings: Some(vec![
                    berth_model::shapes::ecs::PortMapping {
                        container_port: Some(80),
                        host_port: Some(8080),
                        ..Default::default()
                    },
                    berth_model::shapes::ecs::PortMapping {
                        container_port: Some(81),
                        host_port: Some(0),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            berth_model::shapes::ecs::ContainerDefinition {
                name: Some("b".into()),
                cpu: Some(50),
                memory: Some(64),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}
