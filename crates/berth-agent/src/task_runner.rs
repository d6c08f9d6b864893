//! Runs one task: pulls its images, starts its containers in `dependsOn`
//! order, watches them, stops them when asked or when an essential container
//! exits, and reports every change of state to the server.
//!
//! The runner is level-triggered: each step re-reads the containers' real
//! state from the runtime and derives what to do and what to report from it,
//! so it can start from adopted containers after an agent restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_model::agent_protocol::{
    AssignedTask, ContainerReport, ContainerSecrets, SubmitTaskStateRequest,
};
use berth_model::shapes::ecs::{ContainerDefinition, NetworkBinding};
use berth_runtime::{
    ContainerState, ContainerStatus, HealthState, Runtime, RuntimeError, RuntimeEvent,
};
use tokio::sync::{broadcast, watch};

use crate::awslogs;
use crate::spec::{self, VolumeSource};
use crate::Reporter;

const RUNNING: &str = "RUNNING";
const PENDING: &str = "PENDING";
const STOPPED: &str = "STOPPED";
const DEPROVISIONING: &str = "DEPROVISIONING";

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
                .filter(|s| s.oom_killed)
                .map(|_| "OutOfMemoryError: Container killed due to memory usage".to_string())
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
                    name,
                }
            })
            .collect();
        let all_exist = !containers.is_empty() && containers.iter().all(|c| c.id.is_some());
        // Timestamps the server already holds are kept there (set-once).
        TaskRunner {
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
        }
    }

    /// Runs until the task is STOPPED and that is reported.
    pub async fn run(
        mut self,
        mut updates: watch::Receiver<AssignedTask>,
        mut events: broadcast::Receiver<RuntimeEvent>,
    ) {
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
        self.start_ready().await;
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
        if self.containers.iter().any(|c| c.essential && c.exited()) {
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
        let spec = spec::container_spec(&self.task, &definition, &self.instance_id, secrets);
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
        let stops = self
            .containers
            .iter()
            .filter(|c| c.running())
            .filter_map(|c| {
                let id = c.id.clone()?;
                let timeout = Duration::from_secs(
                    c.definition
                        .stop_timeout
                        .map(|t| t.max(0) as u64)
                        .unwrap_or(spec::DEFAULT_STOP_TIMEOUT_SECS),
                );
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
