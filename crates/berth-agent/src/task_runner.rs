//! Runs one task: pulls its images, starts its containers in `dependsOn`
//! order, watches them, stops them when asked or when an essential container
//! exits, and reports every change of state to the server.
//!
//! The runner is level-triggered: each step re-reads the containers' real
//! state from the runtime and derives what to do and what to report from it,
//! so it can start from adopted containers after an agent restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_model::agent_protocol::{
    AssignedTask, ContainerReport, ContainerSecrets, GetNetworkPolicyResponse,
    SubmitTaskStateRequest, SPOT_INTERRUPTION_GRACE_SECONDS,
};
use berth_model::shapes::ecs::{ContainerDefinition, NetworkBinding};
use berth_runtime::{
    ContainerState, ContainerStatus, HealthState, Runtime, RuntimeError, RuntimeEvent,
};
use tokio::sync::{broadcast, watch};

use crate::awslogs;
use crate::cgroups::{self, TaskCgroup};
use crate::netpolicy;
use crate::spec::{self, EndpointEnv, VolumeSource};
use crate::task_endpoint::{self, ContainerView, TaskEndpoint, TaskView};
use crate::vpcnet::{TaskNetworks, VpcNetworks};
use crate::Reporter;

const RUNNING: &str = "RUNNING";
const PENDING: &str = "PENDING";
const STOPPED: &str = "STOPPED";
const DEPROVISIONING: &str = "DEPROVISIONING";
/// ECS's reason for a container the OOM killer ended.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// The stop code under which containers get Fargate's two-minute warning.
const SPOT_INTERRUPTION: &str = "SpotInterruption";
/// How long an awsvpc task waits for its interface (and for its network
/// to be set up) before it fails to start.
const NETWORK_SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a running awsvpc task's security groups are looked up.
const POLICY_POLL: Duration = Duration::from_secs(2);
/// Every how many policy polls a running awsvpc task's interface is
/// checked (and plumbed again when it is gone).
const INTERFACE_CHECK_POLLS: u32 = 5;
/// How often removing a stopped task's cgroup is tried before leaving it
/// to the task's clean-up.
const CGROUP_REMOVE_ATTEMPTS: u32 = 5;

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// What the runner knows about one container of the task.
#[derive(Debug, Clone)]
struct Tracked {
    name: String,
    definition: ContainerDefinition,
    essential: bool,
    id: Option<String>,
    state: Option<ContainerState>,
    /// Why the container could not be pulled, created or started.
    failure: Option<String>,
    /// Killed by the OOM killer for the task's (cgroup's) memory, which
    /// Docker does not see as its own OOM.
    task_oom: bool,
}

impl Tracked {
    fn exited(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| s.status),
            Some(ContainerStatus::Exited | ContainerStatus::Dead)
        ) || (self.id.is_some() && self.state.is_none())
    }

    fn running(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| s.status),
            Some(ContainerStatus::Running | ContainerStatus::Restarting | ContainerStatus::Paused)
        )
    }

    fn started(&self) -> bool {
        self.running()
            || (self.exited() && self.state.as_ref().is_some_and(|s| s.started_at.is_some()))
    }

    fn healthy(&self) -> bool {
        self.state.as_ref().and_then(|s| s.health) == Some(HealthState::Healthy)
    }

    fn last_status(&self) -> &'static str {
        if self.exited() || (self.failure.is_some() && !self.running()) {
            STOPPED
        } else if self.running() {
            RUNNING
        } else {
            PENDING
        }
    }

    fn report(&self) -> ContainerReport {
        let state = self.state.as_ref();
        let exit_code = state
            .filter(|_| self.exited())
            .and_then(|s| s.exit_code)
            .map(|c| c as i32);
        let reason = self.failure.clone().or_else(|| {
            state
                .filter(|s| s.oom_killed || (self.task_oom && self.exited()))
                .map(|_| OOM_REASON.to_string())
        });
        let health = match state.and_then(|s| s.health) {
            Some(HealthState::Healthy) => "HEALTHY",
            Some(HealthState::Unhealthy) => "UNHEALTHY",
            _ => "UNKNOWN",
        };
        let network_bindings = state
            .filter(|_| self.running())
            .map(|s| {
                s.port_bindings
                    .iter()
                    .map(|b| NetworkBinding {
                        bind_ip: Some(b.host_ip.clone()),
                        container_port: Some(i32::from(b.container_port)),
                        host_port: Some(i32::from(b.host_port)),
                        protocol: Some(b.protocol.as_str().to_string()),
                        ..NetworkBinding::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ContainerReport {
            name: self.name.clone(),
            last_status: self.last_status().to_string(),
            runtime_id: self.id.clone(),
            exit_code,
            reason,
            network_bindings,
            health_status: health.to_string(),
            image_digest: None,
        }
    }
}

/// Why and how the task is being stopped by the agent itself.
#[derive(Debug, Clone)]
struct SelfStop {
    code: &'static str,
    reason: String,
}

pub struct TaskRunner {
    runtime: Arc<dyn Runtime>,
    reporter: Arc<dyn Reporter>,
    instance_id: String,
    task: AssignedTask,
    containers: Vec<Tracked>,
    pulled: bool,
    volumes_ready: bool,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    started_at: Option<f64>,
    self_stop: Option<SelfStop>,
    last_report: Option<SubmitTaskStateRequest>,
    /// Secret values for containers still to create; memory only.
    secrets: Option<Vec<ContainerSecrets>>,
    /// Serves the task's role credentials and metadata to its containers.
    endpoint: Arc<TaskEndpoint>,
    /// The id of the task's credentials at the endpoint, when it has a task role.
    credentials_id: Option<String>,
    /// Whether the task role's credentials are served (or not needed).
    role_ready: bool,
    /// Metadata tokens by container name.
    tokens: BTreeMap<String, String>,
    /// Refreshes the task role's credentials before they expire.
    refresher: Option<tokio::task::JoinHandle<()>>,
    /// The task's cgroup, when it has task-level sizes (`None` until made).
    cgroup: Option<TaskCgroup>,
    cgroup_ready: bool,
    /// The task cgroup's OOM kill count already attributed.
    oom_kills_seen: u64,
    /// The pause container (awsvpc tasks), created or adopted.
    pause_id: Option<String>,
    /// Whether the awsvpc namespace is up with its security groups applied.
    network_ready: bool,
    /// The pause container stopped or vanished after the namespace was up:
    /// the task's containers have lost their network.
    pause_lost: bool,
    /// Since when the runner has been waiting for the network to be ready.
    network_wait_started: Option<Instant>,
    /// Re-applies the security groups when they change.
    enforcer: Option<tokio::task::JoinHandle<()>>,
    /// Plumbs awsvpc interfaces into the host's VPC routers.
    networks: Arc<dyn TaskNetworks>,
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        if let Some(e) = self.enforcer.take() {
            e.abort();
        }
        self.endpoint.remove_task(&self.task.task_arn);
    }
}

/// The task role of `task` (its override first), when it has one.
pub fn task_role_arn(task: &AssignedTask) -> Option<&str> {
    task.overrides
        .task_role_arn
        .as_deref()
        .or(task.task_definition.task_role_arn.as_deref())
        .filter(|r| !r.is_empty())
}

fn epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn client_message(e: &crate::ClientError) -> String {
    match e {
        crate::ClientError::Api { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

/// Keeps the task role's credentials at the endpoint fresh until aborted.
async fn refresh_credentials(
    reporter: Arc<dyn Reporter>,
    endpoint: Arc<TaskEndpoint>,
    task_arn: String,
    credentials_id: String,
    mut issued_at: i64,
    mut expiration: i64,
) {
    loop {
        let delay = task_endpoint::refresh_delay(issued_at, expiration, epoch_secs());
        tokio::time::sleep(delay).await;
        match crate::role_credentials(
            reporter.as_ref(),
            &task_arn,
            berth_model::agent_protocol::ROLE_TASK,
        )
        .await
        {
            Ok(credentials) => {
                issued_at = epoch_secs();
                expiration = credentials.expiration;
                if !endpoint.set_credentials(&task_arn, &credentials_id, credentials) {
                    return;
                }
                tracing::debug!(task = %task_arn, "refreshed task role credentials");
            }
            Err(e) => {
                tracing::warn!(task = %task_arn, error = %client_message(&e), "refreshing task role credentials failed; retrying");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

/// Where a setup step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prep {
    Ready,
    /// Not yet (e.g. no interface attached); look again on the next pass.
    Wait,
    /// Cannot be done: the stop reason is set.
    Failed,
}

/// Renders and applies `policy` in the namespace of process `pid`.
async fn apply_policy(
    task_arn: &str,
    pid: u32,
    policy: &GetNetworkPolicyResponse,
) -> Result<(), netpolicy::PolicyError> {
    let (script, warnings) = netpolicy::render_ruleset(policy);
    for warning in warnings {
        tracing::warn!(task = %task_arn, "security groups: {warning}");
    }
    netpolicy::apply(pid, &script).await
}

/// What plumbs a running awsvpc task's interface again when it is gone.
struct Replumbing {
    networks: Arc<dyn TaskNetworks>,
    task_id: String,
    eni: berth_model::agent_protocol::TaskNetworkInterface,
}

impl Replumbing {
    /// Plumbs the interface again when the namespace of `pid` lost it.
    async fn check(&self, task_arn: &str, pid: u32) {
        match self.networks.is_attached(pid).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(task = %task_arn, "the task's interface is gone; plumbing it again");
                if let Err(e) = self.networks.attach(&self.task_id, &self.eni, pid).await {
                    tracing::warn!(task = %task_arn, error = %e, "plumbing the task's interface again failed; retrying");
                }
            }
            Err(e) => {
                tracing::debug!(task = %task_arn, error = %e, "checking the task's interface failed")
            }
        }
    }
}

/// Keeps an awsvpc task's security groups in force while it runs: looks
/// them up every [`POLICY_POLL`] and re-applies them when they changed (or
/// the namespace's process did), and every [`INTERFACE_CHECK_POLLS`] polls
/// makes sure the interface is still there. Ends when the pause container
/// is gone; the runner aborts it when the task stops.
async fn enforce_policy(
    runtime: Arc<dyn Runtime>,
    reporter: Arc<dyn Reporter>,
    task_arn: String,
    pause_id: String,
    mut applied: GetNetworkPolicyResponse,
    mut applied_pid: u32,
    replumbing: Option<Replumbing>,
) {
    let mut polls = 0u32;
    loop {
        tokio::time::sleep(POLICY_POLL).await;
        let pid = match runtime.inspect(&pause_id).await {
            Ok(Some(state)) => state.pid,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(task = %task_arn, error = %e, "inspecting the pause container failed");
                continue;
            }
        };
        let Some(pid) = pid else { continue };
        polls = polls.wrapping_add(1);
        if let Some(replumbing) = replumbing
            .as_ref()
            .filter(|_| polls.is_multiple_of(INTERFACE_CHECK_POLLS))
        {
            replumbing.check(&task_arn, pid).await;
        }
        let policy = match reporter.network_policy(&task_arn).await {
            Ok(policy) => policy,
            Err(e) => {
                tracing::debug!(task = %task_arn, error = %client_message(&e), "looking up security groups failed; keeping the last ones");
                continue;
            }
        };
        if policy == applied && pid == applied_pid {
            continue;
        }
        match apply_policy(&task_arn, pid, &policy).await {
            Ok(()) => {
                tracing::info!(task = %task_arn, "security groups changed; re-applied");
                applied = policy;
                applied_pid = pid;
            }
            Err(e) => {
                tracing::warn!(task = %task_arn, error = %e, "re-applying security groups failed; retrying")
            }
        }
    }
}

/// How long the runner waits between looks while nothing happens.
const TICK_STARTING: Duration = Duration::from_millis(500);
const TICK_STEADY: Duration = Duration::from_secs(2);

impl TaskRunner {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        reporter: Arc<dyn Reporter>,
        instance_id: String,
        task: AssignedTask,
        adopted: Vec<ContainerState>,
        endpoint: Arc<TaskEndpoint>,
    ) -> Self {
        let containers: Vec<Tracked> = task
            .task_definition
            .container_definitions
            .iter()
            .flatten()
            .map(|d| {
                let name = d.name.clone().unwrap_or_default();
                let existing = adopted
                    .iter()
                    .find(|c| c.labels.get(spec::LABEL_CONTAINER_NAME) == Some(&name));
                Tracked {
                    essential: d.essential.unwrap_or(true),
                    definition: d.clone(),
                    id: existing.map(|c| c.id.clone()),
                    state: existing.cloned(),
                    failure: None,
                    task_oom: false,
                    name,
                }
            })
            .collect();
        let all_exist = !containers.is_empty() && containers.iter().all(|c| c.id.is_some());
        let tokens = containers
            .iter()
            .map(|c| (c.name.clone(), task_endpoint::new_id()))
            .collect();
        let credentials_id = task_role_arn(&task).map(|_| task_endpoint::new_id());
        let pause_id = adopted
            .iter()
            .find(|c| {
                c.labels.get(spec::LABEL_CONTAINER_NAME).map(String::as_str)
                    == Some(spec::PAUSE_CONTAINER_NAME)
            })
            .map(|c| c.id.clone());
        // Timestamps the server already holds are kept there (set-once).
        TaskRunner {
            networks: Arc::new(VpcNetworks::new(runtime.clone())),
            runtime,
            reporter,
            instance_id,
            pulled: all_exist,
            volumes_ready: all_exist,
            task,
            containers,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            self_stop: None,
            last_report: None,
            secrets: None,
            role_ready: credentials_id.is_none(),
            credentials_id,
            tokens,
            endpoint,
            refresher: None,
            cgroup: None,
            cgroup_ready: false,
            oom_kills_seen: 0,
            pause_id,
            network_ready: false,
            pause_lost: false,
            network_wait_started: None,
            enforcer: None,
        }
    }

    /// Plumbs awsvpc interfaces through `networks` instead of this host's
    /// VPC routers (tests).
    pub fn with_networks(mut self, networks: Arc<dyn TaskNetworks>) -> Self {
        self.networks = networks;
        self
    }

    /// Adopted containers keep the credentials id and metadata tokens they
    /// were created with (their environment says which).
    async fn recover_ids(&mut self) {
        for c in &self.containers {
            let Some(id) = &c.id else { continue };
            let Some(details) = self.endpoint.inspector().details(id).await else {
                continue;
            };
            if let Some(token) = task_endpoint::metadata_token_from_env(&details.env) {
                self.tokens.insert(c.name.clone(), token);
            }
            if self.credentials_id.is_some() {
                if let Some(cid) = task_endpoint::credentials_id_from_env(&details.env) {
                    self.credentials_id = Some(cid);
                }
            }
        }
    }

    /// What the task endpoint serves about the task.
    fn view(&self) -> TaskView {
        let def = &self.task.task_definition;
        let known = self
            .last_report
            .as_ref()
            .map(|r| r.last_status.clone())
            .unwrap_or_else(|| self.task.last_status.clone());
        let cpu = self
            .task
            .overrides
            .cpu
            .as_deref()
            .or(def.cpu.as_deref())
            .and_then(|c| c.parse::<f64>().ok())
            .map(|c| c / 1024.0);
        let memory = self
            .task
            .overrides
            .memory
            .as_deref()
            .or(def.memory.as_deref())
            .and_then(|m| m.parse::<i64>().ok());
        let network_mode = def
            .network_mode
            .clone()
            .unwrap_or_else(|| "bridge".to_string());
        let containers = self
            .containers
            .iter()
            .map(|c| {
                let state = c.state.as_ref();
                let log = c.definition.log_configuration.as_ref();
                ContainerView {
                    name: c.name.clone(),
                    token: self.tokens.get(&c.name).cloned().unwrap_or_default(),
                    docker_id: c.id.clone(),
                    docker_name: spec::docker_name(&self.task, &c.name),
                    image: c.definition.image.clone().unwrap_or_default(),
                    labels: state.map(|s| s.labels.clone()).unwrap_or_default(),
                    desired_status: self.task.desired_status.clone(),
                    known_status: c.last_status().to_string(),
                    cpu: i64::from(c.definition.cpu.unwrap_or(0)),
                    memory: c.definition.memory.map(i64::from),
                    started_at: state.and_then(|s| s.started_at),
                    // awsvpc containers share the task's address (the
                    // endpoint tells callers apart by it).
                    ip_address: state
                        .and_then(|s| s.ip_address.as_deref())
                        .and_then(|ip| ip.parse().ok())
                        .or_else(|| {
                            state.filter(|s| s.status == ContainerStatus::Running)?;
                            self.task
                                .network_interface
                                .as_ref()
                                .filter(|_| spec::is_awsvpc(&self.task))
                                .and_then(|eni| eni.private_ip.parse().ok())
                        }),
                    container_arn: self
                        .task
                        .containers
                        .iter()
                        .find(|k| k.name.as_deref() == Some(c.name.as_str()))
                        .and_then(|k| k.container_arn.clone()),
                    log_driver: log.and_then(|l| l.log_driver.clone()),
                    log_options: log.and_then(|l| l.options.clone()).unwrap_or_default(),
                }
            })
            .collect();
        TaskView {
            task_arn: self.task.task_arn.clone(),
            cluster: self
                .task
                .cluster_arn
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            family: def.family.clone().unwrap_or_default(),
            revision: def.revision.unwrap_or(0).to_string(),
            desired_status: self.task.desired_status.clone(),
            known_status: known,
            cpu,
            memory,
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            interface: self
                .task
                .network_interface
                .clone()
                .filter(|_| spec::is_awsvpc(&self.task)),
            network_mode,
            containers,
        }
    }

    fn publish(&self) {
        self.endpoint.update_task(self.view());
    }

    /// Fetches the task role's credentials (once) and serves them. Returns
    /// false (with the stop reason set) when a task that has not created a
    /// container yet cannot have them; a task with containers already
    /// (adopted after a restart) tries again on its next pass.
    async fn fetch_role(&mut self) -> bool {
        if self.role_ready {
            return true;
        }
        let Some(credentials_id) = self.credentials_id.clone() else {
            self.role_ready = true;
            return true;
        };
        let started = self.containers.iter().any(|c| c.id.is_some());
        let result = match self.endpoint.available() {
            Err(why) => Err(format!(
                "the task credentials endpoint ({}:{}) is unavailable on this host: {why}",
                task_endpoint::ENDPOINT_IP,
                task_endpoint::ENDPOINT_PORT
            )),
            Ok(()) => crate::role_credentials(
                self.reporter.as_ref(),
                &self.task.task_arn,
                berth_model::agent_protocol::ROLE_TASK,
            )
            .await
            .map_err(|e| client_message(&e)),
        };
        match result {
            Ok(credentials) => {
                let expiration = credentials.expiration;
                self.publish();
                self.endpoint
                    .set_credentials(&self.task.task_arn, &credentials_id, credentials);
                self.refresher = Some(tokio::spawn(refresh_credentials(
                    self.reporter.clone(),
                    self.endpoint.clone(),
                    self.task.task_arn.clone(),
                    credentials_id,
                    epoch_secs(),
                    expiration,
                )));
                self.role_ready = true;
                true
            }
            Err(message) if started => {
                tracing::warn!(task = %self.task.task_arn, error = %message, "cannot get task role credentials; retrying");
                true
            }
            Err(message) => {
                self.self_stop = Some(SelfStop {
                    code: "TaskFailedToStart",
                    reason: format!(
                        "ResourceInitializationError: unable to get task role credentials: {message}"
                    ),
                });
                false
            }
        }
    }

    /// Runs until the task is STOPPED and that is reported.
    pub async fn run(
        mut self,
        mut updates: watch::Receiver<AssignedTask>,
        mut events: broadcast::Receiver<RuntimeEvent>,
    ) {
        self.recover_ids().await;
        // Containers adopted after an agent restart resume shipping where
        // the server's copy of their log ends.
        for c in &self.containers {
            let Some(id) = &c.id else { continue };
            if let Ok(Some(config)) = awslogs::config(&self.task.task_arn, &c.definition, &[]) {
                self.ship_logs(id, config);
            }
        }
        loop {
            // A stop the server confirmed in a report answer is never undone by
            // an older poll answer.
            let stop_seen = self.task.desired_status == STOPPED;
            self.task = updates.borrow_and_update().clone();
            if stop_seen {
                self.task.desired_status = STOPPED.into();
            }
            let finished = self.step().await;
            if finished {
                return;
            }
            self.publish();
            let tick = if self.task.last_status == RUNNING
                && self.containers.iter().all(|c| c.started() || c.exited())
            {
                TICK_STEADY
            } else {
                TICK_STARTING
            };
            let ids: HashSet<String> = self
                .containers
                .iter()
                .filter_map(|c| c.id.clone())
                .collect();
            let sleep = tokio::time::sleep(tick);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    changed = updates.changed() => {
                        if changed.is_err() {
                            // The agent dropped this task (it is gone from the server).
                            return;
                        }
                        break;
                    }
                    event = events.recv() => match event {
                        Ok(RuntimeEvent::Container { id, .. }) if ids.contains(&id) => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => { sleep.as_mut().await; break; }
                    },
                    _ = &mut sleep => break,
                }
            }
        }
    }

    /// One pass: observe, decide, act, report. Returns true when done.
    async fn step(&mut self) -> bool {
        self.refresh().await;
        if self.self_stop.is_none() {
            self.self_stop = self.detect_stop();
        }
        let stopping = self.task.desired_status == STOPPED || self.self_stop.is_some();
        if stopping {
            return self.stop_all().await;
        }
        // Role credentials come first: without them nothing is pulled.
        if !self.fetch_role().await {
            return self.stop_all().await;
        }
        if !self.pulled {
            self.report_now(PENDING).await;
            self.pull().await;
            if self.self_stop.is_some() {
                return self.stop_all().await;
            }
        }
        if !self.volumes_ready {
            self.prepare_volumes().await;
            if self.self_stop.is_some() {
                return self.stop_all().await;
            }
        }
        if !self.fetch_secrets().await {
            return self.stop_all().await;
        }
        // Containers are created only inside the task's cgroup and (awsvpc)
        // namespace; until those are ready the task stays as it is (an
        // adopted running task keeps running and reporting).
        let mut ready = match self.prepare_cgroup().await {
            Prep::Ready => true,
            Prep::Wait => false,
            Prep::Failed => return self.stop_all().await,
        };
        if ready && spec::is_awsvpc(&self.task) {
            ready = match self.prepare_network().await {
                Prep::Ready => true,
                Prep::Wait => false,
                Prep::Failed => return self.stop_all().await,
            };
        }
        if ready {
            self.start_ready().await;
        }
        if self.self_stop.is_none() {
            self.self_stop = self.detect_stop();
        }
        if self.self_stop.is_some() {
            return self.stop_all().await;
        }
        let all_started = self.containers.iter().all(|c| c.started() || c.exited());
        let essentials_running = self
            .containers
            .iter()
            .filter(|c| c.essential)
            .all(|c| c.running());
        let status = if all_started && essentials_running {
            RUNNING
        } else {
            PENDING
        };
        if status == RUNNING {
            self.started_at.get_or_insert_with(epoch_now);
        }
        self.report(status).await;
        false
    }

    async fn refresh(&mut self) {
        for c in &mut self.containers {
            let Some(id) = c.id.clone() else { continue };
            match self.runtime.inspect(&id).await {
                Ok(state) => c.state = state,
                Err(e) => tracing::debug!(container = %id, error = %e, "inspect failed"),
            }
        }
        self.attribute_task_ooms();
        if let Some(pause) = self.pause_id.clone().filter(|_| self.network_ready) {
            match self.runtime.inspect(&pause).await {
                Ok(Some(state)) => {
                    self.pause_lost = matches!(
                        state.status,
                        ContainerStatus::Exited | ContainerStatus::Dead
                    )
                }
                Ok(None) => self.pause_lost = true,
                Err(e) => tracing::debug!(container = %pause, error = %e, "inspect failed"),
            }
        }
    }

    /// A container SIGKILLed (137) while the task's cgroup counted a new
    /// OOM kill was killed for the task's memory: Docker only sees OOMs of
    /// the container's own limit. Containers the agent is stopping are
    /// not attributed (their SIGKILL is the agent's).
    fn attribute_task_ooms(&mut self) {
        let Some(cgroup) = &self.cgroup else { return };
        if self.task.desired_status == STOPPED || self.self_stop.is_some() {
            return;
        }
        let candidates: Vec<usize> = (0..self.containers.len())
            .filter(|&i| {
                let c = &self.containers[i];
                !c.task_oom
                    && c.exited()
                    && c.state
                        .as_ref()
                        .is_some_and(|s| !s.oom_killed && s.exit_code == Some(137))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let Some(kills) = cgroup.oom_kills() else {
            return;
        };
        if kills <= self.oom_kills_seen {
            return;
        }
        self.oom_kills_seen = kills;
        for i in candidates {
            tracing::info!(task = %self.task.task_arn, container = %self.containers[i].name, "container killed for the task's memory");
            self.containers[i].task_oom = true;
        }
    }

    /// Makes the task's cgroup when it has task-level sizes.
    async fn prepare_cgroup(&mut self) -> Prep {
        if self.cgroup_ready {
            return Prep::Ready;
        }
        let size = cgroups::task_size(&self.task);
        if size.is_empty() {
            self.cgroup_ready = true;
            return Prep::Ready;
        }
        let started = self.containers.iter().any(|c| c.id.is_some());
        let info = match self.runtime.info().await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(task = %self.task.task_arn, error = %e, "cannot read the runtime's cgroup setup; retrying");
                return Prep::Wait;
            }
        };
        let cgroup = TaskCgroup::new(
            cgroups::Layout::from_info(&info),
            spec::task_id(&self.task.task_arn),
        );
        match cgroup.create(size.limits()).await {
            Ok(()) => {
                tracing::debug!(task = %self.task.task_arn, parent = %cgroup.parent(), ?size, "task cgroup ready");
                self.oom_kills_seen = cgroup.oom_kills().unwrap_or(0);
                self.cgroup = Some(cgroup);
                self.cgroup_ready = true;
                Prep::Ready
            }
            Err(e) if started => {
                // Adopted containers keep running under whatever they have.
                tracing::warn!(task = %self.task.task_arn, error = %e, "cannot update the task cgroup");
                self.cgroup = Some(cgroup);
                self.cgroup_ready = true;
                Prep::Ready
            }
            Err(e) => {
                self.self_stop = Some(SelfStop {
                    code: "TaskFailedToStart",
                    reason: format!(
                        "ResourceInitializationError: unable to create the task cgroup: {e}"
                    ),
                });
                Prep::Failed
            }
        }
    }

    /// Waits for (`Prep::Wait`) or gives up on (`Prep::Failed`, with the
    /// stop reason set) the network once [`NETWORK_SETUP_TIMEOUT`] passed.
    fn network_wait(&mut self, why: String) -> Prep {
        let since = *self.network_wait_started.get_or_insert_with(Instant::now);
        if since.elapsed() < NETWORK_SETUP_TIMEOUT || self.has_containers() {
            tracing::debug!(task = %self.task.task_arn, %why, "waiting for the task network");
            return Prep::Wait;
        }
        self.network_failed(why)
    }

    /// Whether any container of the task was created (e.g. adopted after
    /// an agent restart): such a task is never failed for its network,
    /// whose namespace (with the rules last applied) outlives the agent.
    fn has_containers(&self) -> bool {
        self.containers.iter().any(|c| c.id.is_some())
    }

    fn network_failed(&mut self, why: String) -> Prep {
        if self.has_containers() {
            tracing::warn!(task = %self.task.task_arn, %why, "the task network cannot be refreshed; retrying");
            return Prep::Wait;
        }
        tracing::warn!(task = %self.task.task_arn, %why, "the task network cannot be set up");
        self.self_stop = Some(SelfStop {
            code: "TaskFailedToStart",
            reason: format!("ResourceInitializationError: {why}"),
        });
        Prep::Failed
    }

    /// Sets up an awsvpc task's namespace: the pause container, the
    /// interface plumbed into it from its VPC's router on this host, and
    /// the security groups in it, before any container of the task is
    /// created.
    async fn prepare_network(&mut self) -> Prep {
        if self.network_ready {
            return Prep::Ready;
        }
        // The server attaches the interface shortly after placement; a
        // later poll brings it.
        let Some(eni) = self.task.network_interface.clone() else {
            return self.network_wait("the task's network interface is not attached yet".into());
        };
        if let Err(e) = berth_runtime::pause::ensure_pause_image(self.runtime.as_ref()).await {
            return self.runtime_failure("unable to load the pause image", e);
        }
        let pause_id = match self.pause_id.clone() {
            Some(id) => id,
            None => {
                let spec = spec::pause_spec(
                    &self.task,
                    &self.instance_id,
                    self.cgroup.as_ref().map(TaskCgroup::parent),
                );
                let id = match self.runtime.create(&spec).await {
                    Ok(id) => id,
                    // Created before a crash but not yet seen: take it over.
                    Err(RuntimeError::Conflict(_)) => {
                        match self.runtime.inspect(&spec.name).await {
                            Ok(Some(state)) => state.id,
                            _ => {
                                return self.network_failed(format!(
                                    "unable to create the pause container: name {} is taken",
                                    spec.name
                                ))
                            }
                        }
                    }
                    Err(e) => {
                        return self.runtime_failure("unable to create the pause container", e)
                    }
                };
                self.pause_id = Some(id.clone());
                id
            }
        };
        if let Err(e) = self.runtime.start(&pause_id).await {
            return self.runtime_failure("unable to start the pause container", e);
        }
        let pause = match self.runtime.inspect(&pause_id).await {
            Ok(state) => state,
            Err(e) => return self.runtime_failure("unable to inspect the pause container", e),
        };
        let Some(pid) = pause.as_ref().and_then(|p| p.pid) else {
            return self.network_wait("the pause container is not running".into());
        };
        // A pause container of an earlier version sits on a Docker network
        // of its own subnet, with its address: it keeps it.
        let on_docker_network = pause.as_ref().is_some_and(|p| p.ip_address.is_some());
        if !on_docker_network {
            let task_id = spec::task_id(&self.task.task_arn).to_string();
            if let Err(e) = self.networks.attach(&task_id, &eni, pid).await {
                let why = format!(
                    "unable to connect the task to subnet {} of {}: {e}",
                    eni.subnet_id,
                    if eni.vpc_id.is_empty() {
                        "its VPC"
                    } else {
                        eni.vpc_id.as_str()
                    }
                );
                return if e.is_unavailable() {
                    self.network_wait(why)
                } else {
                    self.network_failed(why)
                };
            }
        }
        let policy = match self.reporter.network_policy(&self.task.task_arn).await {
            Ok(policy) => policy,
            Err(e) => {
                return self.network_wait(format!(
                    "unable to get the task's security groups: {}",
                    client_message(&e)
                ))
            }
        };
        if let Err(e) = apply_policy(&self.task.task_arn, pid, &policy).await {
            return self.network_failed(format!("unable to apply the task's security groups: {e}"));
        }
        tracing::info!(task = %self.task.task_arn, ip = %eni.private_ip, subnet = %eni.subnet_id, vpc = %eni.vpc_id, "task network ready");
        let replumbing = (!on_docker_network).then(|| Replumbing {
            networks: self.networks.clone(),
            task_id: spec::task_id(&self.task.task_arn).to_string(),
            eni: eni.clone(),
        });
        self.enforcer = Some(tokio::spawn(enforce_policy(
            self.runtime.clone(),
            self.reporter.clone(),
            self.task.task_arn.clone(),
            pause_id,
            policy,
            pid,
            replumbing,
        )));
        self.network_ready = true;
        Prep::Ready
    }

    /// A runtime that cannot be reached is waited for; any other answer
    /// fails the task.
    fn runtime_failure(&mut self, what: &str, e: RuntimeError) -> Prep {
        match e {
            RuntimeError::Unavailable(_) => self.network_wait(format!("{what}: {e}")),
            _ => self.network_failed(format!("{what}: {e}")),
        }
    }

    /// Once the task's containers are stopped: its pause container and
    /// cgroup go (the exited containers stay, for their logs and exit
    /// codes, until the task is cleaned up).
    async fn release_task_resources(&mut self) {
        if let Some(enforcer) = self.enforcer.take() {
            enforcer.abort();
        }
        if let Some(pause) = self.pause_id.clone() {
            match self.runtime.remove(&pause).await {
                Ok(()) => {
                    self.pause_id = None;
                    self.network_ready = false;
                    // Its interface goes with its namespace; the bridge,
                    // router and host routes once no task uses them.
                    let task_id = spec::task_id(&self.task.task_arn).to_string();
                    let released = match &self.task.network_interface {
                        Some(eni) => self.networks.detach(&task_id, eni).await,
                        None => self.networks.collect().await,
                    };
                    if let Err(e) = released {
                        tracing::warn!(task = %self.task.task_arn, error = %e, "cleaning up the host's VPC networks failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %self.task.task_arn, error = %e, "removing the pause container failed")
                }
            }
        }
        if let Some(cgroup) = self.cgroup.clone() {
            // The runtime removes each container's own cgroup shortly after
            // it exits; until then the task's is busy.
            for attempt in 1..=CGROUP_REMOVE_ATTEMPTS {
                match cgroup.remove().await {
                    Ok(()) => {
                        self.cgroup = None;
                        break;
                    }
                    Err(e) if attempt == CGROUP_REMOVE_ATTEMPTS => {
                        // The agent tries again when the task is cleaned up.
                        tracing::debug!(task = %self.task.task_arn, error = %e, "removing the task cgroup failed");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }

    /// Whether the task must stop on its own: an essential container exited,
    /// a container failed to start, or a dependency can never be met.
    fn detect_stop(&self) -> Option<SelfStop> {
        if let Some(c) = self.containers.iter().find(|c| c.failure.is_some()) {
            return Some(SelfStop {
                code: "TaskFailedToStart",
                reason: c.failure.clone().unwrap_or_default(),
            });
        }
        // ECS's pause container is an essential (internal) container.
        if self.pause_lost || self.containers.iter().any(|c| c.essential && c.exited()) {
            return Some(SelfStop {
                code: "EssentialContainerExited",
                reason: "Essential container in task exited".into(),
            });
        }
        for c in self.containers.iter().filter(|c| c.id.is_none()) {
            for dep in c.definition.depends_on.iter().flatten() {
                let Some(target) = self.find(dep.container_name.as_deref().unwrap_or("")) else {
                    continue;
                };
                let impossible = match dep.condition.as_deref().unwrap_or("START") {
                    "SUCCESS" => {
                        target.exited()
                            && target.state.as_ref().and_then(|s| s.exit_code) != Some(0)
                    }
                    "HEALTHY" => target.exited(),
                    _ => false,
                };
                if impossible {
                    return Some(SelfStop {
                        code: "TaskFailedToStart",
                        reason: format!(
                            "Dependency condition {} of container {} on {} can no longer be met",
                            dep.condition.as_deref().unwrap_or("START"),
                            c.name,
                            target.name
                        ),
                    });
                }
            }
        }
        None
    }

    fn find(&self, name: &str) -> Option<&Tracked> {
        self.containers.iter().find(|c| c.name == name)
    }

    fn dependencies_met(&self, c: &Tracked) -> bool {
        c.definition.depends_on.iter().flatten().all(|dep| {
            let Some(target) = self.find(dep.container_name.as_deref().unwrap_or("")) else {
                return true;
            };
            match dep.condition.as_deref().unwrap_or("START") {
                "COMPLETE" => target.exited(),
                "SUCCESS" => {
                    target.exited() && target.state.as_ref().and_then(|s| s.exit_code) == Some(0)
                }
                "HEALTHY" => target.healthy(),
                _ => target.started(),
            }
        })
    }

    async fn pull(&mut self) {
        self.pull_started_at.get_or_insert_with(epoch_now);
        let mut images: Vec<String> = Vec::new();
        for c in &self.containers {
            let image = c.definition.image.clone().unwrap_or_default();
            if !images.contains(&image) {
                images.push(image);
            }
        }
        for image in images {
            let present = self.runtime.image_present(&image).await.unwrap_or(false);
            if present {
                continue;
            }
            let auth = self.reporter.registry_auth(&image).await;
            if let Err(e) = self.runtime.pull(&image, auth.as_ref()).await {
                let reason = format!("CannotPullContainerError: {e}");
                tracing::warn!(task = %self.task.task_arn, %image, error = %e, "pull failed");
                for c in &mut self.containers {
                    if c.definition.image.as_deref() == Some(image.as_str()) {
                        c.failure = Some(reason.clone());
                    }
                }
                self.self_stop = Some(SelfStop {
                    code: "TaskFailedToStart",
                    reason,
                });
                break;
            }
        }
        self.pull_stopped_at = Some(epoch_now());
        self.pulled = true;
    }

    /// Fetches secret values once, before the first container that needs
    /// them is created. Returns false (and sets the stop reason) when they
    /// cannot be had: the task then stops before any container exists.
    async fn fetch_secrets(&mut self) -> bool {
        if self.secrets.is_some() {
            return true;
        }
        let needed = self.containers.iter().any(|c| {
            c.id.is_none()
                && (c.definition.secrets.as_ref().is_some_and(|s| !s.is_empty())
                    || c.definition
                        .log_configuration
                        .as_ref()
                        .and_then(|l| l.secret_options.as_ref())
                        .is_some_and(|s| !s.is_empty()))
        });
        if !needed {
            self.secrets = Some(Vec::new());
            return true;
        }
        match self.reporter.resolve_secrets(&self.task.task_arn).await {
            Ok(answer) => {
                self.secrets = Some(answer.containers);
                true
            }
            Err(e) => {
                let message = match &e {
                    crate::ClientError::Api { code, message, .. } => format!("{code}: {message}"),
                    other => other.to_string(),
                };
                self.self_stop = Some(SelfStop {
                    code: "TaskFailedToStart",
                    reason: format!(
                        "ResourceInitializationError: unable to pull secrets or registry auth: {message}"
                    ),
                });
                false
            }
        }
    }

    async fn prepare_volumes(&mut self) {
        let mut labels = BTreeMap::new();
        labels.insert(spec::LABEL_TASK_ARN.to_string(), self.task.task_arn.clone());
        labels.insert(spec::LABEL_INSTANCE.to_string(), self.instance_id.clone());
        for (name, source) in spec::volumes(&self.task) {
            if let VolumeSource::Docker { name: docker, .. } = source {
                if let Err(e) = self.runtime.create_volume(&docker, &labels).await {
                    self.self_stop = Some(SelfStop {
                        code: "TaskFailedToStart",
                        reason: format!("CannotCreateVolumeError: volume {name}: {e}"),
                    });
                    return;
                }
            }
        }
        self.volumes_ready = true;
    }

    async fn start_ready(&mut self) {
        loop {
            let ready: Vec<usize> = (0..self.containers.len())
                .filter(|&i| {
                    let c = &self.containers[i];
                    c.id.is_none() && c.failure.is_none() && self.dependencies_met(c)
                })
                .collect();
            if ready.is_empty() {
                return;
            }
            for i in ready {
                self.create_and_start(i).await;
            }
            // Containers that depend only on START of what just started can go now.
            self.refresh().await;
            if self.containers.iter().any(|c| c.failure.is_some()) {
                return;
            }
        }
    }

    async fn create_and_start(&mut self, i: usize) {
        let definition = self.containers[i].definition.clone();
        if let Some(why) = spec::unsupported(&definition) {
            self.containers[i].failure = Some(format!("CannotStartContainerError: {why}"));
            return;
        }
        let name = self.containers[i].name.clone();
        let secrets = self
            .secrets
            .as_ref()
            .and_then(|all| all.iter().find(|s| s.name == name));
        let log_secrets = secrets
            .map(|s| s.log_options.as_slice())
            .unwrap_or_default();
        let awslogs = match awslogs::config(&self.task.task_arn, &definition, log_secrets) {
            Ok(config) => config,
            Err(why) => {
                self.containers[i].failure = Some(format!(
                    "CannotStartContainerError: Error response from daemon: failed to initialize logging driver: {why}"
                ));
                return;
            }
        };
        let endpoint = EndpointEnv {
            credentials_id: self.credentials_id.as_deref().filter(|_| self.role_ready),
            metadata_token: self
                .tokens
                .get(&name)
                .map(String::as_str)
                .filter(|_| self.endpoint.available().is_ok()),
        };
        let mut spec = spec::container_spec(
            &self.task,
            &definition,
            &self.instance_id,
            secrets,
            endpoint,
        );
        if spec::is_awsvpc(&self.task) {
            let Some(pause_id) = self.pause_id.clone().filter(|_| self.network_ready) else {
                // prepare_network runs first; never create outside the namespace.
                self.containers[i].failure = Some(
                    "CannotCreateContainerError: the task's network namespace is not ready".into(),
                );
                return;
            };
            spec::join_task_network(&mut spec, &definition, &pause_id);
        }
        spec.cgroup_parent = self.cgroup.as_ref().map(TaskCgroup::parent);
        let id = match self.runtime.create(&spec).await {
            Ok(id) => id,
            // Created before a crash but not yet seen: take it over.
            Err(RuntimeError::Conflict(_)) => match self.runtime.inspect(&spec.name).await {
                Ok(Some(state)) => state.id,
                _ => {
                    self.containers[i].failure = Some(format!(
                        "CannotCreateContainerError: name {} is taken",
                        spec.name
                    ));
                    return;
                }
            },
            Err(e) => {
                self.containers[i].failure = Some(format!("CannotCreateContainerError: {e}"));
                return;
            }
        };
        self.containers[i].id = Some(id.clone());
        // The endpoint must know the container before it runs: it may ask
        // for its credentials at once, and the endpoint finds its address
        // by inspecting it.
        self.publish();
        if let Some(config) = &awslogs {
            // As with Docker's driver, a missing group fails the start, not
            // the create (the stream may be named after the container id).
            let stream = config.stream_name(&id);
            if let Err(e) = self
                .reporter
                .open_log_stream(
                    &self.task.task_arn,
                    &config.region,
                    &config.group,
                    &stream,
                    config.create_group,
                )
                .await
            {
                let why = match &e {
                    crate::ClientError::Api { code, message, .. } => format!("{code}: {message}"),
                    other => other.to_string(),
                };
                self.containers[i].failure = Some(format!(
                    "CannotStartContainerError: Error response from daemon: failed to initialize logging driver: failed to create Cloudwatch log stream: {why}"
                ));
                return;
            }
        }
        if let Err(e) = self.runtime.start(&id).await {
            self.containers[i].failure = Some(format!("CannotStartContainerError: {e}"));
            return;
        }
        if let Some(config) = awslogs {
            self.ship_logs(&id, config);
        }
        if let Ok(state) = self.runtime.inspect(&id).await {
            self.containers[i].state = state;
        }
        // The container may ask the endpoint at once: let it know its address.
        self.publish();
        tracing::debug!(task = %self.task.task_arn, container = %self.containers[i].name, "started");
    }

    /// Ships a container's awslogs output until it has exited and all is
    /// stored; the shipper outlives the runner if it must.
    fn ship_logs(&self, container_id: &str, config: awslogs::AwslogsConfig) {
        awslogs::Shipper {
            runtime: self.runtime.clone(),
            reporter: self.reporter.clone(),
            task_arn: self.task.task_arn.clone(),
            container_id: container_id.to_string(),
            config,
        }
        .spawn();
    }

    /// Stops every container, reports DEPROVISIONING then STOPPED. Returns
    /// true once STOPPED is reported.
    async fn stop_all(&mut self) -> bool {
        let runtime = self.runtime.clone();
        // Fargate Spot's reclaim gives the containers two minutes.
        let spot = self.task.stop_code.as_deref() == Some(SPOT_INTERRUPTION)
            && self.task.desired_status == STOPPED;
        let stops = self
            .containers
            .iter()
            .filter(|c| c.running())
            .filter_map(|c| {
                let id = c.id.clone()?;
                let timeout = Duration::from_secs(if spot {
                    u64::from(SPOT_INTERRUPTION_GRACE_SECONDS)
                } else {
                    c.definition
                        .stop_timeout
                        .map(|t| t.max(0) as u64)
                        .unwrap_or(spec::DEFAULT_STOP_TIMEOUT_SECS)
                });
                let runtime = runtime.clone();
                Some(async move {
                    if let Err(e) = runtime.stop(&id, timeout).await {
                        tracing::warn!(container = %id, error = %e, "stop failed");
                    }
                })
            });
        let stops: Vec<_> = stops.collect();
        if !stops.is_empty() {
            self.report(DEPROVISIONING).await;
            futures::future::join_all(stops).await;
        }
        self.refresh().await;
        if self.containers.iter().any(|c| c.running()) {
            // Something refused to stop; try again on the next pass.
            return false;
        }
        self.release_task_resources().await;
        self.report(STOPPED).await;
        self.last_report
            .as_ref()
            .is_some_and(|r| r.last_status == STOPPED)
    }

    fn build_report(&self, status: &str) -> SubmitTaskStateRequest {
        let stopped = status == STOPPED;
        SubmitTaskStateRequest {
            task_arn: self.task.task_arn.clone(),
            last_status: status.to_string(),
            containers: self
                .containers
                .iter()
                .map(|c| {
                    let mut r = c.report();
                    // A stopped task has no container left to start.
                    if stopped {
                        r.last_status = STOPPED.into();
                    }
                    r
                })
                .collect(),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            started_at: self.started_at,
            execution_stopped_at: stopped.then(epoch_now),
            stop_code: self.self_stop.as_ref().map(|s| s.code.to_string()),
            stopped_reason: self.self_stop.as_ref().map(|s| s.reason.clone()),
        }
    }

    /// Reports `status` when it differs from the last report that got through.
    async fn report(&mut self, status: &str) {
        let report = self.build_report(status);
        let same = self.last_report.as_ref().is_some_and(|last| {
            let mut a = last.clone();
            let mut b = report.clone();
            a.execution_stopped_at = None;
            b.execution_stopped_at = None;
            a == b
        });
        if !same {
            self.send(report).await;
        }
    }

    async fn report_now(&mut self, status: &str) {
        self.pull_started_at.get_or_insert_with(epoch_now);
        let report = self.build_report(status);
        self.send(report).await;
    }

    async fn send(&mut self, report: SubmitTaskStateRequest) {
        match self.reporter.submit(report.clone()).await {
            Ok(desired) => {
                if desired == STOPPED {
                    self.task.desired_status = STOPPED.into();
                }
                self.last_report = Some(report);
            }
            Err(e) => {
                tracing::warn!(task = %self.task.task_arn, error = %e, "reporting task state failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::Mutex;

    use berth_model::agent_protocol::{
        GetTaskRoleCredentialsResponse, LogPosition, ResolveSecretsResponse, TaskLogEvent,
    };
    use berth_model::shapes::ecs::TaskDefinition;
    use berth_runtime::{ContainerSpec, LogLine, RegistryAuth, RuntimeInfo};
    use futures::stream::BoxStream;
    use futures::StreamExt;
    use serde_json::Value;

    use super::*;
    use crate::task_endpoint::{ContainerDetails, ContainerInspector};
    use crate::ClientError;

    const IP: &str = "172.17.0.7";

    #[derive(Default)]
    struct FakeRuntime {
        containers: Mutex<HashMap<String, (ContainerSpec, ContainerStatus)>>,
        networks: Mutex<Vec<berth_runtime::NetworkSpec>>,
        stop_timeouts: Mutex<Vec<Duration>>,
        removed: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Runtime for FakeRuntime {
        async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
            Ok(RuntimeInfo::default())
        }
        async fn image_present(&self, _: &str) -> Result<bool, RuntimeError> {
            Ok(true)
        }
        async fn pull(&self, _: &str, _: Option<&RegistryAuth>) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
            let id = format!("id-{}", spec.name);
            self.containers
                .lock()
                .unwrap()
                .insert(id.clone(), (spec.clone(), ContainerStatus::Created));
            Ok(id)
        }
        async fn start(&self, id: &str) -> Result<(), RuntimeError> {
            if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
                c.1 = ContainerStatus::Running;
            }
            Ok(())
        }
        async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
            self.stop_timeouts.lock().unwrap().push(timeout);
            if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
                c.1 = ContainerStatus::Exited;
            }
            Ok(())
        }
        async fn inspect(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
            Ok(self
                .containers
                .lock()
                .unwrap()
                .get(id)
                .map(|(spec, status)| ContainerState {
                    id: id.to_string(),
                    name: spec.name.clone(),
                    image: spec.image.clone(),
                    labels: spec.labels.clone(),
                    status: *status,
                    exit_code: (*status == ContainerStatus::Exited).then_some(0),
                    started_at: Some(SystemTime::now()),
                    ip_address: (*status == ContainerStatus::Running
                        && spec.network_mode != berth_runtime::NetworkMode::None)
                        .then(|| IP.to_string()),
                    pid: (*status == ContainerStatus::Running).then_some(4242),
                    ..ContainerState::default()
                }))
        }
        async fn list_owned(
            &self,
            _: &str,
            _: Option<&str>,
        ) -> Result<Vec<ContainerState>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
            self.removed.lock().unwrap().push(id.to_string());
            Ok(())
        }
        async fn ensure_network(
            &self,
            spec: &berth_runtime::NetworkSpec,
        ) -> Result<String, RuntimeError> {
            self.networks.lock().unwrap().push(spec.clone());
            Ok(format!("net-{}", spec.name))
        }
        async fn create_volume(
            &self,
            _: &str,
            _: &BTreeMap<String, String>,
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn remove_volume(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn logs_tail(&self, _: &str, _: usize) -> Result<String, RuntimeError> {
            Ok(String::new())
        }
        fn log_lines(
            &self,
            _: &str,
            _: i64,
            _: bool,
        ) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
            futures::stream::empty().boxed()
        }
        fn events(&self, _: &str) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
            futures::stream::pending().boxed()
        }
    }

    struct FakeReporter {
        reports: Mutex<Vec<SubmitTaskStateRequest>>,
        role: Result<GetTaskRoleCredentialsResponse, (String, String)>,
    }

    #[async_trait::async_trait]
    impl Reporter for FakeReporter {
        async fn submit(&self, report: SubmitTaskStateRequest) -> Result<String, ClientError> {
            self.reports.lock().unwrap().push(report);
            Ok(RUNNING.into())
        }
        async fn registry_auth(&self, _: &str) -> Option<RegistryAuth> {
            None
        }
        async fn resolve_secrets(&self, _: &str) -> Result<ResolveSecretsResponse, ClientError> {
            Ok(ResolveSecretsResponse::default())
        }
        async fn open_log_stream(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: bool,
        ) -> Result<Option<LogPosition>, ClientError> {
            Ok(None)
        }
        async fn put_task_logs(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: Vec<TaskLogEvent>,
        ) -> Result<Option<LogPosition>, ClientError> {
            Ok(None)
        }
        async fn task_role_credentials(
            &self,
            _: &str,
            which: &str,
        ) -> Result<GetTaskRoleCredentialsResponse, ClientError> {
            assert_eq!(which, berth_model::agent_protocol::ROLE_TASK);
            self.role
                .clone()
                .map_err(|(code, message)| ClientError::Api {
                    status: 400,
                    code,
                    message,
                })
        }
        async fn network_policy(&self, _: &str) -> Result<GetNetworkPolicyResponse, ClientError> {
            Ok(GetNetworkPolicyResponse::default())
        }
    }

    struct NoInspector;

    #[async_trait::async_trait]
    impl ContainerInspector for NoInspector {
        async fn stats(&self, _: &str) -> Result<Value, String> {
            Err("no stats".into())
        }
        async fn details(&self, _: &str) -> Option<ContainerDetails> {
            None
        }
    }

    fn role_task() -> AssignedTask {
        AssignedTask {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/default/t1".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/default".into(),
            desired_status: RUNNING.into(),
            last_status: "PROVISIONING".into(),
            task_definition: TaskDefinition {
                family: Some("web".into()),
                revision: Some(1),
                task_role_arn: Some("arn:aws:iam::000000000000:role/app".into()),
                container_definitions: Some(vec![ContainerDefinition {
                    name: Some("app".into()),
                    image: Some("busybox".into()),
                    ..ContainerDefinition::default()
                }]),
                ..TaskDefinition::default()
            },
            ..AssignedTask::default()
        }
    }

    fn credentials() -> GetTaskRoleCredentialsResponse {
        GetTaskRoleCredentialsResponse {
            role_arn: "arn:aws:iam::000000000000:role/app".into(),
            access_key_id: "ASIATASK".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expiration: epoch_secs() + 3600,
        }
    }

    async fn run_to_stop(
        endpoint: Arc<TaskEndpoint>,
        role: Result<GetTaskRoleCredentialsResponse, (String, String)>,
    ) -> (Arc<FakeRuntime>, Arc<FakeReporter>) {
        let runtime = Arc::new(FakeRuntime::default());
        let reporter = Arc::new(FakeReporter {
            reports: Mutex::new(Vec::new()),
            role,
        });
        let task = role_task();
        let runner = TaskRunner::new(
            runtime.clone(),
            reporter.clone(),
            "i1".into(),
            task.clone(),
            Vec::new(),
            endpoint,
        );
        let (_tx, rx) = watch::channel(task);
        let (_events, events_rx) = broadcast::channel(8);
        tokio::time::timeout(Duration::from_secs(10), runner.run(rx, events_rx))
            .await
            .expect("the task stops");
        (runtime, reporter)
    }

    fn last_report(reporter: &FakeReporter) -> SubmitTaskStateRequest {
        reporter.reports.lock().unwrap().last().cloned().unwrap()
    }

    #[tokio::test]
    async fn role_task_fails_without_endpoint() {
        let endpoint = Arc::new(TaskEndpoint::unavailable(
            "cannot listen",
            Arc::new(NoInspector),
        ));
        let (runtime, reporter) = run_to_stop(endpoint, Ok(credentials())).await;
        let report = last_report(&reporter);
        assert_eq!(report.last_status, STOPPED);
        assert_eq!(report.stop_code.as_deref(), Some("TaskFailedToStart"));
        let reason = report.stopped_reason.unwrap_or_default();
        assert!(
            reason.starts_with("ResourceInitializationError: unable to get task role credentials: the task credentials endpoint (169.254.170.2:80) is unavailable"),
            "{reason}"
        );
        assert!(runtime.containers.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn role_task_fails_when_the_server_refuses() {
        let endpoint = Arc::new(TaskEndpoint::new(Arc::new(NoInspector), None));
        let refused = Err((
            "ClientException".to_string(),
            "This Berth server does not issue role credentials.".to_string(),
        ));
        let (runtime, reporter) = run_to_stop(endpoint, refused).await;
        let report = last_report(&reporter);
        assert_eq!(report.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert_eq!(
            report.stopped_reason.as_deref(),
            Some("ResourceInitializationError: unable to get task role credentials: ClientException: This Berth server does not issue role credentials.")
        );
        assert!(runtime.containers.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn role_task_gets_credentials_until_it_stops() {
        let endpoint = Arc::new(TaskEndpoint::new(Arc::new(NoInspector), None));
        let runtime = Arc::new(FakeRuntime::default());
        let reporter = Arc::new(FakeReporter {
            reports: Mutex::new(Vec::new()),
            role: Ok(credentials()),
        });
        let task = role_task();
        let runner = TaskRunner::new(
            runtime.clone(),
            reporter.clone(),
            "i1".into(),
            task.clone(),
            Vec::new(),
            endpoint.clone(),
        );
        let (tx, rx) = watch::channel(task.clone());
        let (_events, events_rx) = broadcast::channel(8);
        let handle = tokio::spawn(runner.run(rx, events_rx));
        let mut env = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some((spec, _)) = runtime.containers.lock().unwrap().values().next() {
                env = spec.env.clone();
                break;
            }
        }
        let uri = env
            .iter()
            .find(|(k, _)| k == task_endpoint::CREDENTIALS_ENV)
            .map(|(_, v)| v.clone())
            .expect("the credentials variable is set");
        let v4 = env
            .iter()
            .find(|(k, _)| k == task_endpoint::METADATA_V4_ENV)
            .map(|(_, v)| v.clone())
            .expect("the metadata variable is set");
        let ip: IpAddr = IP.parse().unwrap();
        let (status, body) = endpoint.route(&uri, ip).await;
        assert_eq!(status, 200);
        assert_eq!(body["AccessKeyId"], "ASIATASK");
        let path = v4.trim_start_matches("http://169.254.170.2");
        let (status, body) = endpoint.route(&format!("{path}/task"), ip).await;
        assert_eq!(status, 200);
        assert_eq!(body["TaskARN"], task.task_arn);
        assert_eq!(body["Containers"][0]["Name"], "app");
        // Another address is refused.
        assert_eq!(
            endpoint.route(&uri, "172.17.0.99".parse().unwrap()).await.0,
            400
        );

        let mut stop = task;
        stop.desired_status = STOPPED.into();
        tx.send(stop).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the task stops")
            .unwrap();
        assert_eq!(last_report(&reporter).last_status, STOPPED);
        // Gone with the task.
        assert_eq!(endpoint.route(&uri, ip).await.0, 400);
    }

    fn plain_task() -> AssignedTask {
        let mut task = role_task();
        task.task_definition.task_role_arn = None;
        task
    }

    fn awsvpc_task() -> AssignedTask {
        let mut task = plain_task();
        task.task_definition.network_mode = Some("awsvpc".into());
        task
    }

    fn eni() -> berth_model::agent_protocol::TaskNetworkInterface {
        berth_model::agent_protocol::TaskNetworkInterface {
            eni_id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            subnet_cidr: "172.31.0.0/20".into(),
            gateway: "172.31.0.1".into(),
            private_ip: "172.31.0.9".into(),
            mac: "02:00:ac:1f:00:09".into(),
            vpc_id: "vpc-1".into(),
            vpc_cidr: "172.31.0.0/16".into(),
        }
    }

    /// Records what the runner asks of the host's network; attaching fails
    /// with `attach_error` when set.
    #[derive(Default)]
    struct FakeNetworks {
        attached: Mutex<
            Vec<(
                String,
                berth_model::agent_protocol::TaskNetworkInterface,
                u32,
            )>,
        >,
        detached: Mutex<Vec<String>>,
        collections: Mutex<u32>,
        attach_error: Option<String>,
    }

    #[async_trait::async_trait]
    impl TaskNetworks for FakeNetworks {
        async fn attach(
            &self,
            task_id: &str,
            eni: &berth_model::agent_protocol::TaskNetworkInterface,
            pid: u32,
        ) -> Result<(), crate::vpcnet::NetError> {
            self.attached
                .lock()
                .unwrap()
                .push((task_id.to_string(), eni.clone(), pid));
            match &self.attach_error {
                Some(e) => Err(crate::vpcnet::NetError::Invalid(e.clone())),
                None => Ok(()),
            }
        }
        async fn detach(
            &self,
            task_id: &str,
            _: &berth_model::agent_protocol::TaskNetworkInterface,
        ) -> Result<(), crate::vpcnet::NetError> {
            self.detached.lock().unwrap().push(task_id.to_string());
            Ok(())
        }
        async fn collect(&self) -> Result<(), crate::vpcnet::NetError> {
            *self.collections.lock().unwrap() += 1;
            Ok(())
        }
        async fn is_attached(&self, _: u32) -> Result<bool, crate::vpcnet::NetError> {
            Ok(true)
        }
    }

    /// A runner for `task` on fake Docker and a fake server, running: its
    /// runtime, reporter, task updates, runtime events and handle.
    #[allow(clippy::type_complexity)]
    fn spawn_runner(
        task: AssignedTask,
    ) -> (
        Arc<FakeRuntime>,
        Arc<FakeReporter>,
        watch::Sender<AssignedTask>,
        broadcast::Sender<RuntimeEvent>,
        tokio::task::JoinHandle<()>,
    ) {
        spawn_runner_with(task, Arc::new(FakeNetworks::default()))
    }

    #[allow(clippy::type_complexity)]
    fn spawn_runner_with(
        task: AssignedTask,
        networks: Arc<FakeNetworks>,
    ) -> (
        Arc<FakeRuntime>,
        Arc<FakeReporter>,
        watch::Sender<AssignedTask>,
        broadcast::Sender<RuntimeEvent>,
        tokio::task::JoinHandle<()>,
    ) {
        let endpoint = Arc::new(TaskEndpoint::new(Arc::new(NoInspector), None));
        let runtime = Arc::new(FakeRuntime::default());
        let reporter = reporter();
        let runner = TaskRunner::new(
            runtime.clone(),
            reporter.clone(),
            "i1".into(),
            task.clone(),
            Vec::new(),
            endpoint,
        )
        .with_networks(networks);
        let (tx, rx) = watch::channel(task);
        let (events, events_rx) = broadcast::channel(8);
        let handle = tokio::spawn(runner.run(rx, events_rx));
        (runtime, reporter, tx, events, handle)
    }

    fn reporter() -> Arc<FakeReporter> {
        Arc::new(FakeReporter {
            reports: Mutex::new(Vec::new()),
            role: Ok(credentials()),
        })
    }

    fn specs(runtime: &FakeRuntime) -> Vec<ContainerSpec> {
        let mut specs: Vec<ContainerSpec> = runtime
            .containers
            .lock()
            .unwrap()
            .values()
            .map(|(spec, _)| spec.clone())
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    #[tokio::test]
    async fn awsvpc_task_waits_for_its_interface_then_starts_its_pause_container() {
        let task = awsvpc_task();
        let networks = Arc::new(FakeNetworks {
            attach_error: Some("no router here".into()),
            ..FakeNetworks::default()
        });
        let (runtime, reporter, tx, _events, handle) =
            spawn_runner_with(task.clone(), networks.clone());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // No interface, no container of any kind.
        assert!(runtime.containers.lock().unwrap().is_empty());
        assert_eq!(last_report(&reporter).last_status, PENDING);

        let mut attached = task.clone();
        attached.network_interface = Some(eni());
        tx.send(attached.clone()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the task stops")
            .unwrap();
        // The pause container holds the namespace; it starts with no
        // network and its interface is plumbed into it afterwards.
        let [pause] = specs(&runtime)
            .try_into()
            .expect("only the pause container");
        assert_eq!(pause.image, berth_runtime::pause::PAUSE_IMAGE);
        assert_eq!(pause.network_mode, berth_runtime::NetworkMode::None);
        assert_eq!(pause.ipv4_address, None);
        assert_eq!(pause.mac_address, None);
        assert_eq!(
            pause
                .labels
                .get(spec::LABEL_CONTAINER_NAME)
                .map(String::as_str),
            Some(spec::PAUSE_CONTAINER_NAME)
        );
        let calls = networks.attached.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![(spec::task_id(&task.task_arn).to_string(), eni(), 4242)]
        );
        // Plumbing that cannot be done fails the task before any of its
        // containers exists.
        let report = last_report(&reporter);
        assert_eq!(report.last_status, STOPPED);
        assert_eq!(report.stop_code.as_deref(), Some("TaskFailedToStart"));
        let reason = report.stopped_reason.unwrap_or_default();
        assert!(
            reason.starts_with(
                "ResourceInitializationError: unable to connect the task to subnet subnet-1 of vpc-1: no router here"
            ),
            "{reason}"
        );
        // The pause container goes with the task, and its interface and
        // what it used with it.
        assert_eq!(
            runtime.removed.lock().unwrap().clone(),
            vec![format!("id-{}", pause.name)]
        );
        assert_eq!(
            networks.detached.lock().unwrap().clone(),
            vec![spec::task_id(&task.task_arn).to_string()]
        );
    }

    #[tokio::test]
    async fn spot_interruption_gives_containers_two_minutes() {
        let task = plain_task();
        let (runtime, reporter, tx, _events, handle) = spawn_runner(task.clone());
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if reporter
                .reports
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.last_status == RUNNING)
            {
                break;
            }
        }
        let mut stop = task;
        stop.desired_status = STOPPED.into();
        stop.stop_code = Some("SpotInterruption".into());
        tx.send(stop).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the task stops")
            .unwrap();
        assert_eq!(
            runtime.stop_timeouts.lock().unwrap().clone(),
            vec![Duration::from_secs(120)]
        );
    }

    #[test]
    fn oom_reasons() {
        let mut tracked = Tracked {
            name: "app".into(),
            definition: ContainerDefinition::default(),
            essential: true,
            id: Some("c1".into()),
            state: Some(ContainerState {
                status: ContainerStatus::Exited,
                exit_code: Some(137),
                ..ContainerState::default()
            }),
            failure: None,
            task_oom: false,
        };
        assert_eq!(tracked.report().reason, None);
        tracked.task_oom = true;
        assert_eq!(tracked.report().reason.as_deref(), Some(OOM_REASON));
        tracked.task_oom = false;
        if let Some(state) = tracked.state.as_mut() {
            state.oom_killed = true;
        }
        assert_eq!(
            tracked.report().reason.as_deref(),
            Some("OutOfMemoryError: Container killed due to memory usage")
        );
    }
}
