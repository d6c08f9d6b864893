//! Runs one task: gets it what it needs (role credentials, images,
//! volumes, secrets, cgroup, awsvpc namespace), starts its containers in
//! `dependsOn` order, watches them, stops them when asked or when an
//! essential container exits, releases what the task acquired, and
//! reports every change of state to the server.
//!
//! The runner is an explicit state machine: the task is in one [`Phase`]
//! and [`transition`] is the only way from one phase to another (see
//! `phase.rs`). What the task holds on the host is recorded in one
//! `Resources` value as it is acquired and released in one place, in
//! [`Phase::Deprovisioning`], which every way to STOPPED goes through.
//!
//! It is also level-triggered: each pass re-reads the containers' real
//! state from the runtime and derives what to report from it, so it can
//! start from adopted containers after an agent restart (each phase finds
//! what is already there).

mod background;
mod phase;
mod resources;
mod tracked;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::agent_protocol::{
    AssignedTask, ContainerSecrets, GetNetworkPolicyResponse, SubmitTaskStateRequest,
    SPOT_INTERRUPTION_GRACE_SECONDS,
};
use berth_runtime::{ContainerState, ContainerStatus, Runtime, RuntimeError, RuntimeEvent};
use tokio::sync::{broadcast, watch};

use crate::awslogs;
use crate::cgroups::{self, HostCgroups, TaskCgroups};
use crate::spec::{self, EndpointEnv, VolumeSource};
use crate::task_endpoint::{self, ContainerView, TaskEndpoint, TaskView};
use crate::vpcnet::{self, TaskNetworks, VpcNetworks};
use crate::Reporter;

use background::{client_message, epoch_secs, Enforcer, Replumbing};
pub use phase::{transition, Event, Phase};
use resources::{CredentialsLease, Host, Resources};
use tracked::Tracked;

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
/// How many passes releasing the task's resources is tried before the
/// task is reported STOPPED anyway (what is left is the agent's clean-up).
const RELEASE_ATTEMPTS: u32 = 3;
/// How long a task's first container waits for the host's DNS relay while
/// another agent takes it over (see `TaskEndpoint::dns_relay_within`).
const RELAY_TAKEOVER: Duration = Duration::from_secs(5);
/// How many times a container is started while the dynamic host port
/// Docker picks for it is taken by another process.
const DYNAMIC_PORT_ATTEMPTS: u32 = 5;
/// How long the runner waits between looks while nothing happens.
const TICK_STARTING: Duration = Duration::from_millis(500);
const TICK_STEADY: Duration = Duration::from_secs(2);

fn epoch_now() -> f64 {
    berth_util::time::now_millis() as f64 / 1000.0
}

/// Why and how the task is being stopped by the agent itself.
#[derive(Debug, Clone)]
struct SelfStop {
    code: &'static str,
    reason: String,
}

const FAILED_TO_START: &str = "TaskFailedToStart";

/// The task role of `task` (its override first), when it has one.
pub fn task_role_arn(task: &AssignedTask) -> Option<&str> {
    task.overrides
        .task_role_arn
        .as_deref()
        .or(task.task_definition.task_role_arn.as_deref())
        .filter(|r| !r.is_empty())
}

pub struct TaskRunner {
    runtime: Arc<dyn Runtime>,
    reporter: Arc<dyn Reporter>,
    /// Serves the task's role credentials and metadata to its containers.
    endpoint: Arc<TaskEndpoint>,
    /// Plumbs awsvpc interfaces into the host's VPC routers.
    networks: Arc<dyn TaskNetworks>,
    /// Makes the task cgroups.
    cgroups: Arc<dyn TaskCgroups>,
    instance_id: String,
    task: AssignedTask,
    phase: Phase,
    /// What the task holds on the host besides its containers.
    held: Resources,
    containers: Vec<Tracked>,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    started_at: Option<f64>,
    self_stop: Option<SelfStop>,
    last_report: Option<SubmitTaskStateRequest>,
    /// Secret values for containers still to create; memory only.
    secrets: Option<Vec<ContainerSecrets>>,
    /// The id of the task's credentials at the endpoint, when it has a
    /// task role (recovered from adopted containers).
    credentials_id: Option<String>,
    /// Metadata tokens by container name.
    tokens: BTreeMap<String, String>,
    /// The task cgroup's OOM kill count already attributed.
    oom_kills_seen: u64,
    /// The pause container stopped or vanished after the namespace was up:
    /// the task's containers have lost their network.
    pause_lost: bool,
    /// Since when the runner has been waiting for the network to be ready.
    network_wait_started: Option<Instant>,
    /// Passes spent releasing the task's resources.
    release_attempts: u32,
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        // Aborted before the end (the agent dropped the task): what runs
        // in the background goes; the agent cleans up the rest.
        self.held.abort_background();
        self.endpoint.remove_task(&self.task.task_arn);
    }
}

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
                Tracked::new(d, existing)
            })
            .collect();
        let tokens = containers
            .iter()
            .map(|c| (c.name.clone(), task_endpoint::new_id()))
            .collect();
        let credentials_id = task_role_arn(&task).map(|_| task_endpoint::new_id());
        // An adopted pause container is the task's as much as one it
        // creates: it is released with the task.
        let held = Resources {
            pause: adopted
                .iter()
                .find(|c| {
                    c.labels.get(spec::LABEL_CONTAINER_NAME).map(String::as_str)
                        == Some(spec::PAUSE_CONTAINER_NAME)
                })
                .map(|c| c.id.clone()),
            ..Resources::default()
        };
        // Timestamps the server already holds are kept there (set-once).
        TaskRunner {
            networks: Arc::new(VpcNetworks::new(runtime.clone())),
            cgroups: Arc::new(HostCgroups::new(runtime.clone())),
            runtime,
            reporter,
            endpoint,
            instance_id,
            task,
            phase: Phase::FIRST,
            held,
            containers,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            self_stop: None,
            last_report: None,
            secrets: None,
            credentials_id,
            tokens,
            oom_kills_seen: 0,
            pause_lost: false,
            network_wait_started: None,
            release_attempts: 0,
        }
    }

    /// Plumbs awsvpc interfaces through `networks` instead of this host's
    /// VPC routers (tests).
    pub fn with_networks(mut self, networks: Arc<dyn TaskNetworks>) -> Self {
        self.networks = networks;
        self
    }

    /// Makes task cgroups through `cgroups` instead of this host's (tests).
    pub fn with_cgroups(mut self, cgroups: Arc<dyn TaskCgroups>) -> Self {
        self.cgroups = cgroups;
        self
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
            if self.step(&mut updates).await {
                return;
            }
            self.publish();
            let steady = self.phase == Phase::Running
                && self
                    .last_report
                    .as_ref()
                    .is_some_and(|r| r.last_status == RUNNING);
            let tick = if steady { TICK_STEADY } else { TICK_STARTING };
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

    /// Takes the server's latest view of the task. A stop the server
    /// confirmed in a report answer is never undone by an older poll
    /// answer.
    fn take_updates(&mut self, updates: &mut watch::Receiver<AssignedTask>) {
        let stop_seen = self.task.desired_status == STOPPED;
        self.task = updates.borrow_and_update().clone();
        if stop_seen {
            self.task.desired_status = STOPPED.into();
        }
    }

    /// One pass: observe, then work through the phases until one has to
    /// wait, then report. Returns true once STOPPED is reported.
    async fn step(&mut self, updates: &mut watch::Receiver<AssignedTask>) -> bool {
        self.take_updates(updates);
        self.refresh().await;
        loop {
            if !self.phase.stopping() && self.must_stop() {
                self.enter(transition(self.phase, Event::Stop));
                continue;
            }
            let event = self.work(updates).await;
            let next = transition(self.phase, event);
            if next != self.phase {
                self.enter(next);
                // A stop asked for meanwhile is honoured before anything
                // more is acquired.
                self.take_updates(updates);
                continue;
            }
            if event == Event::Wait && !self.phase.stopping() && self.must_stop() {
                continue;
            }
            break;
        }
        if self.phase == Phase::Stopped {
            return self
                .last_report
                .as_ref()
                .is_some_and(|r| r.last_status == STOPPED);
        }
        if !self.phase.stopping() {
            let status = self.status();
            if status == RUNNING {
                self.started_at.get_or_insert_with(epoch_now);
            }
            self.report(status).await;
        }
        false
    }

    fn enter(&mut self, phase: Phase) {
        tracing::debug!(task = %self.task.task_arn, from = ?self.phase, to = ?phase, "task phase");
        self.phase = phase;
    }

    /// The current phase's work.
    async fn work(&mut self, updates: &mut watch::Receiver<AssignedTask>) -> Event {
        match self.phase {
            Phase::Credentials => self.acquire_credentials().await,
            Phase::Pulling => self.pull().await,
            Phase::Volumes => self.create_volumes().await,
            Phase::Secrets => self.fetch_secrets().await,
            Phase::Cgroup => self.make_cgroup().await,
            Phase::Network => self.make_network().await,
            Phase::Starting => self.start_containers(updates).await,
            Phase::Running => self.keep_running().await,
            Phase::Stopping => self.stop_containers().await,
            Phase::Deprovisioning => self.release().await,
            Phase::Stopped => {
                self.report(STOPPED).await;
                Event::Done
            }
        }
    }

    /// Whether the task must stop: the server wants it, or the runner
    /// decided it (recorded in `self_stop`).
    fn must_stop(&mut self) -> bool {
        if self.task.desired_status == STOPPED || self.self_stop.is_some() {
            return true;
        }
        self.self_stop = self.detect_stop();
        self.self_stop.is_some()
    }

    /// Records why the task fails (unless it is stopping already).
    fn fail(&mut self, reason: String) -> Event {
        self.self_stop.get_or_insert(SelfStop {
            code: FAILED_TO_START,
            reason,
        });
        Event::Failed
    }

    /// What the task is, as ECS reports it, while it is not stopping.
    fn status(&self) -> &'static str {
        let all_started = self.containers.iter().all(|c| c.started() || c.exited());
        let essentials_running = self
            .containers
            .iter()
            .filter(|c| c.essential)
            .all(|c| c.running());
        if all_started && essentials_running {
            RUNNING
        } else {
            PENDING
        }
    }

    /// Whether any container of the task was created (or adopted after an
    /// agent restart): such a task is never failed for what it needs
    /// around its containers, which keep running under what they have.
    fn has_containers(&self) -> bool {
        self.containers.iter().any(|c| c.id.is_some())
    }

    fn all_containers_exist(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.id.is_some())
    }

    fn task_id(&self) -> String {
        spec::task_id(&self.task.task_arn).to_string()
    }

    // --- observing ---------------------------------------------------------

    /// Adopted containers keep the credentials id and metadata tokens they
    /// were created with (their environment says which).
    async fn recover_ids(&mut self) {
        for c in &self.containers {
            let Some(id) = &c.id else { continue };
            let details = match self.runtime.details(id).await {
                Ok(Some(details)) => details,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "inspecting an adopted container failed");
                    continue;
                }
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

    async fn refresh(&mut self) {
        for c in &mut self.containers {
            let Some(id) = c.id.clone() else { continue };
            match self.runtime.inspect(&id).await {
                Ok(state) => c.state = state,
                Err(e) => tracing::debug!(container = %id, error = %e, "inspect failed"),
            }
        }
        self.attribute_task_ooms().await;
        // Once the namespace is up, the pause container is essential.
        if let Some(pause) = self
            .held
            .pause
            .clone()
            .filter(|_| self.held.enforcer.is_some())
        {
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
    async fn attribute_task_ooms(&mut self) {
        if self.held.cgroup.is_none()
            || self.task.desired_status == STOPPED
            || self.self_stop.is_some()
            || self.phase.stopping()
        {
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
        let Some(kills) = self.cgroups.oom_kills(&self.task_id()).await else {
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

    /// Whether the task must stop on its own: an essential container exited,
    /// a container failed to start, or a dependency can never be met.
    fn detect_stop(&self) -> Option<SelfStop> {
        if let Some(c) = self.containers.iter().find(|c| c.failure.is_some()) {
            return Some(SelfStop {
                code: FAILED_TO_START,
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
                    "SUCCESS" => target.exited() && target.exit_code() != Some(0),
                    "HEALTHY" => target.exited(),
                    _ => false,
                };
                if impossible {
                    return Some(SelfStop {
                        code: FAILED_TO_START,
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
                "SUCCESS" => target.exited() && target.exit_code() == Some(0),
                "HEALTHY" => target.healthy(),
                _ => target.started(),
            }
        })
    }

    // --- Phase::Credentials (and Running, for adopted tasks) ---------------

    async fn acquire_credentials(&mut self) -> Event {
        match self.serve_credentials().await {
            Ok(()) => Event::Done,
            Err(message) if self.has_containers() => {
                // Adopted containers keep running; Running tries again.
                tracing::warn!(task = %self.task.task_arn, error = %message, "cannot get task role credentials; retrying");
                Event::Done
            }
            Err(message) => self.fail(format!(
                "ResourceInitializationError: unable to get task role credentials: {message}"
            )),
        }
    }

    /// Fetches the task role's credentials and serves them, once (nothing
    /// to do without a task role).
    async fn serve_credentials(&mut self) -> Result<(), String> {
        if self.held.credentials.is_some() {
            return Ok(());
        }
        let Some(id) = self.credentials_id.clone() else {
            return Ok(());
        };
        self.endpoint.available().map_err(|why| {
            format!(
                "the task credentials endpoint ({}:{}) is unavailable on this host: {why}",
                task_endpoint::ENDPOINT_IP,
                task_endpoint::ENDPOINT_PORT
            )
        })?;
        let credentials = crate::role_credentials(
            self.reporter.as_ref(),
            &self.task.task_arn,
            berth_model::agent_protocol::ROLE_TASK,
        )
        .await
        .map_err(|e| client_message(&e))?;
        let expiration = credentials.expiration;
        self.publish();
        self.endpoint
            .set_credentials(&self.task.task_arn, &id, credentials);
        let refresher = tokio::spawn(background::refresh_credentials(
            self.reporter.clone(),
            self.endpoint.clone(),
            self.task.task_arn.clone(),
            id.clone(),
            epoch_secs(),
            expiration,
        ));
        self.held.credentials = Some(CredentialsLease { id, refresher });
        Ok(())
    }

    // --- Phase::Pulling ----------------------------------------------------

    async fn pull(&mut self) -> Event {
        if self.all_containers_exist() {
            // Adopted: nothing left to create from an image.
            return Event::Done;
        }
        self.report_now(PENDING).await;
        let mut images: Vec<String> = Vec::new();
        for c in &self.containers {
            let image = c.definition.image.clone().unwrap_or_default();
            if !images.contains(&image) {
                images.push(image);
            }
        }
        let mut failure = None;
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
                failure = Some(reason);
                break;
            }
        }
        self.pull_stopped_at = Some(epoch_now());
        match failure {
            Some(reason) => self.fail(reason),
            None => Event::Done,
        }
    }

    // --- Phase::Volumes ----------------------------------------------------

    async fn create_volumes(&mut self) -> Event {
        if self.all_containers_exist() {
            return Event::Done;
        }
        let mut labels = BTreeMap::new();
        labels.insert(spec::LABEL_TASK_ARN.to_string(), self.task.task_arn.clone());
        labels.insert(spec::LABEL_INSTANCE.to_string(), self.instance_id.clone());
        for (name, source) in spec::volumes(&self.task) {
            let VolumeSource::Docker {
                name: docker,
                task_scoped,
            } = source
            else {
                continue;
            };
            // Shared volumes outlive the task; its own go with it.
            if task_scoped && !self.held.volumes.contains(&docker) {
                self.held.volumes.push(docker.clone());
            }
            if let Err(e) = self.runtime.create_volume(&docker, &labels).await {
                return self.fail(format!("CannotCreateVolumeError: volume {name}: {e}"));
            }
        }
        Event::Done
    }

    // --- Phase::Secrets ----------------------------------------------------

    /// Fetches secret values once, before the first container that needs
    /// them is created; the task stops before any such container exists
    /// when they cannot be had.
    async fn fetch_secrets(&mut self) -> Event {
        if self.secrets.is_some() {
            return Event::Done;
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
            return Event::Done;
        }
        match self.reporter.resolve_secrets(&self.task.task_arn).await {
            Ok(answer) => {
                self.secrets = Some(answer.containers);
                Event::Done
            }
            Err(e) => self.fail(format!(
                "ResourceInitializationError: unable to pull secrets or registry auth: {}",
                client_message(&e)
            )),
        }
    }

    // --- Phase::Cgroup -----------------------------------------------------

    /// Makes the task's cgroup when it has task-level sizes.
    async fn make_cgroup(&mut self) -> Event {
        let size = cgroups::task_size(&self.task);
        if size.is_empty() {
            return Event::Done;
        }
        let task_id = self.task_id();
        let parent = match self.cgroups.parent(&task_id).await {
            Ok(parent) => parent,
            Err(e) => {
                tracing::warn!(task = %self.task.task_arn, error = %e, "cannot place the task cgroup; retrying");
                return Event::Wait;
            }
        };
        self.held.cgroup = Some(parent.clone());
        match self.cgroups.create(&task_id, size.limits()).await {
            Ok(()) => {
                tracing::debug!(task = %self.task.task_arn, %parent, ?size, "task cgroup ready");
                self.oom_kills_seen = self.cgroups.oom_kills(&task_id).await.unwrap_or(0);
                Event::Done
            }
            Err(e) if self.has_containers() => {
                tracing::warn!(task = %self.task.task_arn, error = %e, "cannot update the task cgroup");
                Event::Done
            }
            Err(e) => self.fail(format!(
                "ResourceInitializationError: unable to create the task cgroup: {e}"
            )),
        }
    }

    // --- Phase::Network ----------------------------------------------------

    /// Sets up an awsvpc task's namespace: the pause container, the
    /// interface plumbed into it from its VPC's router on this host, and
    /// the security groups in it, before any container of the task is
    /// created.
    async fn make_network(&mut self) -> Event {
        if !spec::is_awsvpc(&self.task) {
            return Event::Done;
        }
        // The server attaches the interface shortly after placement; a
        // later poll brings it.
        let Some(eni) = self.task.network_interface.clone() else {
            return self.network_wait("the task's network interface is not attached yet".into());
        };
        if let Err(e) = berth_runtime::pause::ensure_pause_image(self.runtime.as_ref()).await {
            return self.runtime_failure("unable to load the pause image", e);
        }
        let pause_id = match self.held.pause.clone() {
            Some(id) => id,
            None => {
                let mut spec =
                    spec::pause_spec(&self.task, &self.instance_id, self.held.cgroup.clone());
                // The task's resolv.conf (every container shares the pause
                // container's): the VPC's resolver, when the host relays
                // DNS to a Berth DNS server.
                if self
                    .endpoint
                    .dns_relay_within(RELAY_TAKEOVER)
                    .await
                    .is_some()
                {
                    let region = spec::arn_region(&self.task.task_arn).unwrap_or("us-east-1");
                    if let Some((servers, search)) = spec::awsvpc_dns(&eni, region) {
                        spec.dns_servers = servers;
                        spec.dns_search = search;
                    }
                }
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
                self.held.pause = Some(id.clone());
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
        // Recorded before plumbing: a half-plumbed interface is released
        // too (detaching one that is not there is fine).
        self.held.interface = Some(eni.clone());
        let task_id = self.task_id();
        if !on_docker_network {
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
        if let Err(e) = self
            .networks
            .apply_policy(
                &self.task.task_arn,
                pid,
                &policy,
                vpcnet::vpc_resolver(&eni),
            )
            .await
        {
            return self.network_failed(format!("unable to apply the task's security groups: {e}"));
        }
        let routed = match self
            .networks
            .route_hosted(&eni, &hosted_addresses(&policy))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                // Only load balancers' traffic needs it: the enforcer tries
                // again on its next poll.
                tracing::warn!(task = %self.task.task_arn, error = %e, "routing load balancers' addresses failed");
                false
            }
        };
        tracing::info!(task = %self.task.task_arn, ip = %eni.private_ip, subnet = %eni.subnet_id, vpc = %eni.vpc_id, "task network ready");
        self.held.enforcer = Some(
            Enforcer {
                runtime: self.runtime.clone(),
                reporter: self.reporter.clone(),
                networks: self.networks.clone(),
                task_arn: self.task.task_arn.clone(),
                pause_id,
                // Nothing counts as applied until the routes are in.
                applied: if routed {
                    policy
                } else {
                    GetNetworkPolicyResponse::default()
                },
                applied_pid: pid,
                resolver: vpcnet::vpc_resolver(&eni),
                eni: eni.clone(),
                replumbing: (!on_docker_network).then_some(Replumbing { task_id, eni }),
            }
            .spawn(),
        );
        Event::Done
    }

    /// Waits for the network, or gives up on it once
    /// [`NETWORK_SETUP_TIMEOUT`] passed.
    fn network_wait(&mut self, why: String) -> Event {
        let since = *self.network_wait_started.get_or_insert_with(Instant::now);
        if since.elapsed() < NETWORK_SETUP_TIMEOUT || self.has_containers() {
            tracing::debug!(task = %self.task.task_arn, %why, "waiting for the task network");
            return Event::Wait;
        }
        self.network_failed(why)
    }

    /// A task with containers is never failed for its network, whose
    /// namespace (with the rules last applied) outlives the agent.
    fn network_failed(&mut self, why: String) -> Event {
        if self.has_containers() {
            tracing::warn!(task = %self.task.task_arn, %why, "the task network cannot be refreshed; retrying");
            return Event::Wait;
        }
        tracing::warn!(task = %self.task.task_arn, %why, "the task network cannot be set up");
        self.fail(format!("ResourceInitializationError: {why}"))
    }

    /// A runtime that cannot be reached is waited for; any other answer
    /// fails the task.
    fn runtime_failure(&mut self, what: &str, e: RuntimeError) -> Event {
        match e {
            RuntimeError::Unavailable(_) => self.network_wait(format!("{what}: {e}")),
            _ => self.network_failed(format!("{what}: {e}")),
        }
    }

    // --- Phase::Starting ---------------------------------------------------

    /// Creates and starts every container whose dependencies are met;
    /// done once every container exists. Between rounds (a round starts
    /// what the last one made ready) a stop is honoured at once.
    async fn start_containers(&mut self, updates: &mut watch::Receiver<AssignedTask>) -> Event {
        loop {
            let ready: Vec<usize> = (0..self.containers.len())
                .filter(|&i| {
                    let c = &self.containers[i];
                    c.id.is_none() && c.failure.is_none() && self.dependencies_met(c)
                })
                .collect();
            if ready.is_empty() {
                break;
            }
            for i in ready {
                self.create_and_start(i).await;
            }
            // Containers that depend only on START of what just started can go now.
            self.refresh().await;
            self.take_updates(updates);
            if self.must_stop() {
                return Event::Stop;
            }
        }
        if self.containers.iter().all(|c| c.id.is_some()) {
            Event::Done
        } else {
            Event::Wait
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
            credentials_id: self.held.credentials.as_ref().map(|l| l.id.as_str()),
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
            let Some(pause_id) = self
                .held
                .pause
                .clone()
                .filter(|_| self.held.enforcer.is_some())
            else {
                // The Network phase comes first; never create outside the
                // namespace.
                self.containers[i].failure = Some(
                    "CannotCreateContainerError: the task's network namespace is not ready".into(),
                );
                return;
            };
            spec::join_task_network(&mut spec, &definition, &pause_id);
        } else if let Some(relay) = self.endpoint.dns_relay_within(RELAY_TAKEOVER).await {
            // Bridge-mode containers ask the host's DNS relay, which
            // relays to this agent's Berth DNS server.
            spec::use_dns_relay(&mut spec, relay);
        }
        spec.cgroup_parent = self.held.cgroup.clone();
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
                self.containers[i].failure = Some(format!(
                    "CannotStartContainerError: Error response from daemon: failed to initialize logging driver: failed to create Cloudwatch log stream: {}",
                    client_message(&e)
                ));
                return;
            }
        }
        let mut attempts = 1;
        while let Err(e) = self.runtime.start(&id).await {
            // Docker picks a dynamic host port without knowing what else
            // binds ports on the host: when another process holds the one
            // it picked, starting again picks the next one. A host port
            // the task definition names fails at once, as in ECS.
            let message = e.to_string();
            let dynamic = spec::port_in_use(&message)
                .is_some_and(|port| !spec.ports.iter().any(|p| p.host_port == Some(port)));
            if !dynamic || attempts >= DYNAMIC_PORT_ATTEMPTS {
                self.containers[i].failure = Some(format!("CannotStartContainerError: {e}"));
                return;
            }
            attempts += 1;
            tracing::info!(task = %self.task.task_arn, container = %name, error = %message,
                "a dynamic host port Docker picked is in use; starting again");
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

    // --- Phase::Running ----------------------------------------------------

    /// Nothing to do but watch; an adopted task whose role credentials
    /// could not be had yet tries again.
    async fn keep_running(&mut self) -> Event {
        if let Err(message) = self.serve_credentials().await {
            tracing::warn!(task = %self.task.task_arn, error = %message, "cannot get task role credentials; retrying");
        }
        Event::Wait
    }

    // --- Phase::Stopping ---------------------------------------------------

    /// Stops every running container (reporting DEPROVISIONING while it
    /// does); done once none runs.
    async fn stop_containers(&mut self) -> Event {
        // Fargate Spot's reclaim gives the containers two minutes.
        let spot = self.task.stop_code.as_deref() == Some(SPOT_INTERRUPTION)
            && self.task.desired_status == STOPPED;
        let stops: Vec<_> = self
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
                let runtime = self.runtime.clone();
                Some(async move {
                    if let Err(e) = runtime.stop(&id, timeout).await {
                        tracing::warn!(container = %id, error = %e, "stop failed");
                    }
                })
            })
            .collect();
        if !stops.is_empty() {
            self.report(DEPROVISIONING).await;
            futures::future::join_all(stops).await;
        }
        self.refresh().await;
        if self.containers.iter().any(|c| c.running()) {
            // Something refused to stop; try again on the next pass.
            return Event::Wait;
        }
        Event::Done
    }

    // --- Phase::Deprovisioning ---------------------------------------------

    async fn release(&mut self) -> Event {
        let task_id = self.task_id();
        let host = Host {
            runtime: &self.runtime,
            networks: &self.networks,
            cgroups: &self.cgroups,
            endpoint: &self.endpoint,
            task_arn: &self.task.task_arn,
            task_id: &task_id,
        };
        let containers_exist = self.containers.iter().any(|c| c.id.is_some());
        let released = self.held.release(&host, containers_exist).await;
        self.release_attempts += 1;
        if released {
            debug_assert!(self.held.is_empty());
            return Event::Done;
        }
        if self.release_attempts >= RELEASE_ATTEMPTS {
            tracing::warn!(task = %self.task.task_arn, "some of the task's resources could not be released; the agent's clean-up takes them");
            return Event::Done;
        }
        Event::Wait
    }

    // --- the task endpoint -------------------------------------------------

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
            // The endpoint stamps its agent's DNS server.
            dns_endpoint: None,
        }
    }

    /// Tells the endpoint about the task, until its resources are
    /// released (then it is no longer served).
    fn publish(&self) {
        if self.phase < Phase::Deprovisioning {
            self.endpoint.update_task(self.view());
        }
    }

    // --- reporting ---------------------------------------------------------

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
mod tests;

/// The addresses a network policy says live on the host (load balancers').
pub(crate) fn hosted_addresses(
    policy: &berth_model::agent_protocol::GetNetworkPolicyResponse,
) -> Vec<std::net::Ipv4Addr> {
    policy
        .hosted_addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}
