//! The runner on fakes (runtime, server, host network, cgroups; the task
//! endpoint is the real one, in memory). Every phase's failure, and a stop
//! asked for during each phase, must end in STOPPED with exactly what the
//! task acquired released.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use berth_model::agent_protocol::{
    GetNetworkPolicyResponse, GetTaskRoleCredentialsResponse, LogPosition, ResolveSecretsResponse,
    TaskLogEvent, TaskNetworkInterface,
};
use berth_model::shapes::ecs::{
    ContainerDefinition, ContainerDependency, MountPoint, Secret, TaskDefinition, Volume,
};
use berth_runtime::fake::{Call, FakeRuntime};
use berth_runtime::{ContainerSpec, RegistryAuth};

use super::*;
use crate::cgroups::{CgroupError, Limits};
use crate::vpcnet::NetError;
use crate::ClientError;

type Hook = Arc<dyn Fn() + Send + Sync>;

/// Hooks run when the fakes are asked something, by what was asked.
#[derive(Default)]
struct Triggers(Mutex<Vec<(&'static str, Hook)>>);

impl Triggers {
    fn on(&self, what: &'static str, hook: Hook) {
        self.0.lock().unwrap().push((what, hook));
    }

    fn fire(&self, what: &str) {
        let hooks: Vec<Hook> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|(_, h)| h.clone())
            .collect();
        for hook in hooks {
            hook();
        }
    }
}

fn api_error(code: &str, message: &str) -> ClientError {
    ClientError::Api {
        status: 400,
        code: code.into(),
        message: message.into(),
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

/// The server: records reports, answers credentials, secrets and
/// security groups; any of them can be refused.
#[derive(Default)]
struct FakeServer {
    triggers: Arc<Triggers>,
    reports: Mutex<Vec<SubmitTaskStateRequest>>,
    /// Refuses role credentials with (code, message).
    role_refused: Mutex<Option<(String, String)>>,
    secrets_refused: Mutex<Option<(String, String)>>,
    /// How many more reports fail.
    submit_failures: AtomicU32,
}

#[async_trait::async_trait]
impl Reporter for FakeServer {
    async fn submit(&self, report: SubmitTaskStateRequest) -> Result<String, ClientError> {
        self.triggers.fire("submit");
        if self
            .submit_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ClientError::Unreachable("connection refused".into()));
        }
        self.reports.lock().unwrap().push(report);
        Ok(RUNNING.into())
    }
    async fn registry_auth(&self, _: &str) -> Option<RegistryAuth> {
        None
    }
    async fn resolve_secrets(&self, _: &str) -> Result<ResolveSecretsResponse, ClientError> {
        self.triggers.fire("secrets");
        if let Some((code, message)) = self.secrets_refused.lock().unwrap().clone() {
            return Err(api_error(&code, &message));
        }
        Ok(ResolveSecretsResponse {
            containers: vec![berth_model::agent_protocol::ContainerSecrets {
                name: "app".into(),
                environment: vec![("DB_PASSWORD".into(), "s3cr3t".into())],
                log_options: Vec::new(),
            }],
        })
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
        self.triggers.fire("credentials");
        match self.role_refused.lock().unwrap().clone() {
            Some((code, message)) => Err(api_error(&code, &message)),
            None => Ok(credentials()),
        }
    }
    async fn network_policy(&self, _: &str) -> Result<GetNetworkPolicyResponse, ClientError> {
        self.triggers.fire("policy");
        Ok(GetNetworkPolicyResponse::default())
    }
}

/// The host's VPC networks: records what is plumbed; attaching or
/// applying the security groups fails when told.
#[derive(Default)]
struct FakeNetworks {
    triggers: Arc<Triggers>,
    attached: Mutex<Vec<(String, TaskNetworkInterface, u32)>>,
    detached: Mutex<Vec<String>>,
    collections: AtomicU32,
    policies: Mutex<Vec<u32>>,
    attach_error: Mutex<Option<NetError>>,
    policy_error: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl TaskNetworks for FakeNetworks {
    async fn attach(
        &self,
        task_id: &str,
        eni: &TaskNetworkInterface,
        pid: u32,
    ) -> Result<(), NetError> {
        self.triggers.fire("attach");
        self.attached
            .lock()
            .unwrap()
            .push((task_id.to_string(), eni.clone(), pid));
        let mut error = self.attach_error.lock().unwrap();
        match error.take() {
            Some(NetError::Invalid(e)) => {
                // Fails every time.
                *error = Some(NetError::Invalid(e.clone()));
                Err(NetError::Invalid(e))
            }
            // Fails once.
            Some(other) => Err(other),
            None => Ok(()),
        }
    }
    async fn detach(&self, task_id: &str, _: &TaskNetworkInterface) -> Result<(), NetError> {
        self.detached.lock().unwrap().push(task_id.to_string());
        Ok(())
    }
    async fn collect(&self) -> Result<(), NetError> {
        self.collections.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn is_attached(&self, _: u32) -> Result<bool, NetError> {
        Ok(true)
    }
    async fn apply_policy(
        &self,
        _: &str,
        pid: u32,
        _: &GetNetworkPolicyResponse,
        _: Option<std::net::Ipv4Addr>,
    ) -> Result<(), NetError> {
        self.policies.lock().unwrap().push(pid);
        match self.policy_error.lock().unwrap().clone() {
            Some(e) => Err(NetError::Invalid(e)),
            None => Ok(()),
        }
    }
}

/// The host's cgroups: which exist.
#[derive(Default)]
struct FakeCgroups {
    triggers: Arc<Triggers>,
    live: Mutex<BTreeSet<String>>,
    created: Mutex<Vec<(String, Limits)>>,
    removed: Mutex<Vec<String>>,
    create_error: Mutex<Option<String>>,
    /// How many more removals fail (the cgroup still busy).
    busy: AtomicU32,
    oom_kills: AtomicU32,
}

#[async_trait::async_trait]
impl TaskCgroups for FakeCgroups {
    async fn parent(&self, task_id: &str) -> Result<String, CgroupError> {
        Ok(format!("/berth/{task_id}"))
    }
    async fn create(&self, task_id: &str, limits: Limits) -> Result<(), CgroupError> {
        self.triggers.fire("cgroup");
        self.created
            .lock()
            .unwrap()
            .push((task_id.to_string(), limits));
        // Made in part even when it fails.
        self.live.lock().unwrap().insert(task_id.to_string());
        match self.create_error.lock().unwrap().clone() {
            Some(e) => Err(CgroupError::Systemd(e)),
            None => Ok(()),
        }
    }
    async fn oom_kills(&self, _: &str) -> Option<u64> {
        Some(u64::from(self.oom_kills.load(Ordering::SeqCst)))
    }
    async fn remove(&self, task_id: &str) -> Result<(), CgroupError> {
        self.removed.lock().unwrap().push(task_id.to_string());
        if self
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(CgroupError::Systemd("busy".into()));
        }
        self.live.lock().unwrap().remove(task_id);
        Ok(())
    }
}

const TASK_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:task/default/t1";
const ROLE: &str = "arn:aws:iam::000000000000:role/app";

fn container(name: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: Some(name.into()),
        image: Some("busybox".into()),
        ..ContainerDefinition::default()
    }
}

/// One container, nothing else.
fn plain_task() -> AssignedTask {
    AssignedTask {
        task_arn: TASK_ARN.into(),
        cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/default".into(),
        desired_status: RUNNING.into(),
        last_status: "PROVISIONING".into(),
        task_definition: TaskDefinition {
            family: Some("web".into()),
            revision: Some(1),
            container_definitions: Some(vec![container("app")]),
            ..TaskDefinition::default()
        },
        ..AssignedTask::default()
    }
}

fn role_task() -> AssignedTask {
    let mut task = plain_task();
    task.task_definition.task_role_arn = Some(ROLE.into());
    task
}

fn eni() -> TaskNetworkInterface {
    TaskNetworkInterface {
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

/// What goes through every phase: a task role, a task volume, a secret,
/// a task-level size, awsvpc with its interface attached, and a second
/// container that waits for the first.
fn full_task() -> AssignedTask {
    let mut task = role_task();
    let def = &mut task.task_definition;
    def.network_mode = Some("awsvpc".into());
    def.cpu = Some("256".into());
    def.memory = Some("512".into());
    def.volumes = Some(vec![Volume {
        name: Some("data".into()),
        ..Volume::default()
    }]);
    let mut app = container("app");
    app.secrets = Some(vec![Secret {
        name: Some("DB_PASSWORD".into()),
        value_from: Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf".into()),
    }]);
    app.mount_points = Some(vec![MountPoint {
        source_volume: Some("data".into()),
        container_path: Some("/data".into()),
        read_only: Some(false),
    }]);
    let mut side = container("side");
    side.depends_on = Some(vec![ContainerDependency {
        container_name: Some("app".into()),
        condition: Some("START".into()),
    }]);
    def.container_definitions = Some(vec![app, side]);
    task.network_interface = Some(eni());
    task
}

fn task_volume() -> String {
    spec::task_volume_name(&full_task(), "data")
}

fn stopped(task: &AssignedTask) -> AssignedTask {
    let mut stop = task.clone();
    stop.desired_status = STOPPED.into();
    stop
}

/// A runner for a task on fakes, and what it was given.
struct Harness {
    runtime: Arc<FakeRuntime>,
    server: Arc<FakeServer>,
    networks: Arc<FakeNetworks>,
    cgroups: Arc<FakeCgroups>,
    endpoint: Arc<TaskEndpoint>,
    triggers: Arc<Triggers>,
    task: AssignedTask,
    updates: Arc<watch::Sender<AssignedTask>>,
    receiver: Mutex<Option<watch::Receiver<AssignedTask>>>,
}

impl Harness {
    fn new(task: AssignedTask) -> Self {
        Self::with_endpoint(task, |runtime| TaskEndpoint::new(runtime, None))
    }

    fn with_endpoint(
        task: AssignedTask,
        endpoint: impl FnOnce(Arc<dyn Runtime>) -> TaskEndpoint,
    ) -> Self {
        let triggers = Arc::new(Triggers::default());
        let runtime = Arc::new(FakeRuntime::new());
        let (tx, rx) = watch::channel(task.clone());
        Harness {
            endpoint: Arc::new(endpoint(runtime.clone())),
            runtime,
            server: Arc::new(FakeServer {
                triggers: triggers.clone(),
                ..FakeServer::default()
            }),
            networks: Arc::new(FakeNetworks {
                triggers: triggers.clone(),
                ..FakeNetworks::default()
            }),
            cgroups: Arc::new(FakeCgroups {
                triggers: triggers.clone(),
                ..FakeCgroups::default()
            }),
            triggers,
            task,
            updates: Arc::new(tx),
            receiver: Mutex::new(Some(rx)),
        }
    }

    /// The server asks for a stop when `what` happens (a server call
    /// such as "credentials", or "cgroup", "attach"), or when the runtime
    /// gets `call`.
    fn stop_on(&self, what: &'static str) {
        let updates = self.updates.clone();
        let stop = stopped(&self.task);
        self.triggers.on(
            what,
            Arc::new(move || {
                let _ = updates.send(stop.clone());
            }),
        );
    }

    fn stop_on_call(&self, call: Call, target: &'static str) {
        let updates = self.updates.clone();
        let stop = stopped(&self.task);
        self.runtime.on_call(
            call,
            Box::new(move |t| {
                if t.contains(target) {
                    let _ = updates.send(stop.clone());
                }
            }),
        );
    }

    fn stop(&self) {
        self.updates.send(stopped(&self.task)).unwrap();
    }

    fn runner(&self, adopted: Vec<ContainerState>) -> TaskRunner {
        TaskRunner::new(
            self.runtime.clone(),
            self.server.clone(),
            "i1".into(),
            self.task.clone(),
            adopted,
            self.endpoint.clone(),
        )
        .with_networks(self.networks.clone())
        .with_cgroups(self.cgroups.clone())
    }

    fn spawn_with(&self, adopted: Vec<ContainerState>) -> tokio::task::JoinHandle<()> {
        let runner = self.runner(adopted);
        let rx = self.receiver.lock().unwrap().take().expect("run once");
        let (_events, events_rx) = broadcast::channel(8);
        tokio::spawn(async move {
            let _keep = _events;
            runner.run(rx, events_rx).await
        })
    }

    fn spawn(&self) -> tokio::task::JoinHandle<()> {
        self.spawn_with(Vec::new())
    }

    /// Runs the task until it ends (bounded).
    async fn run(&self) {
        let handle = self.spawn();
        ended(handle).await;
    }

    fn reports(&self) -> Vec<SubmitTaskStateRequest> {
        self.server.reports.lock().unwrap().clone()
    }

    fn last_report(&self) -> SubmitTaskStateRequest {
        self.reports().last().cloned().expect("a report")
    }

    fn statuses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.reports() {
            if out.last() != Some(&r.last_status) {
                out.push(r.last_status);
            }
        }
        out
    }

    async fn wait_for_status(&self, status: &str) {
        for _ in 0..500 {
            if self.reports().iter().any(|r| r.last_status == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the task never reported {status}: {:?}", self.statuses());
    }

    /// The task's containers in the runtime (the pause container too).
    fn task_containers(&self) -> Vec<berth_runtime::fake::FakeContainer> {
        self.runtime
            .containers()
            .into_iter()
            .filter(|c| {
                c.state.labels.get(spec::LABEL_TASK_ARN).map(String::as_str) == Some(TASK_ARN)
            })
            .collect()
    }

    fn pause(&self) -> Option<berth_runtime::fake::FakeContainer> {
        self.task_containers().into_iter().find(|c| {
            c.state
                .labels
                .get(spec::LABEL_CONTAINER_NAME)
                .map(String::as_str)
                == Some(spec::PAUSE_CONTAINER_NAME)
        })
    }

    /// The task ended STOPPED with nothing it acquired left: no container
    /// running, no pause container, cgroup, interface, credentials or
    /// metadata, and no task volume unless a container that mounts it is
    /// kept.
    fn assert_released(&self) {
        let last = self.last_report();
        assert_eq!(last.last_status, STOPPED, "{:?}", self.statuses());
        assert!(last.containers.iter().all(|c| c.last_status == STOPPED));
        let left = self.task_containers();
        assert!(
            left.iter()
                .all(|c| c.state.status != ContainerStatus::Running),
            "{left:?}"
        );
        assert!(self.pause().is_none(), "the pause container is removed");
        assert!(
            self.cgroups.live.lock().unwrap().is_empty(),
            "the task cgroup is removed"
        );
        let attached: BTreeSet<String> = self
            .networks
            .attached
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _, _)| t.clone())
            .collect();
        let detached: BTreeSet<String> = self
            .networks
            .detached
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert!(attached.is_subset(&detached), "every interface is detached");
        assert!(
            !self.endpoint.knows(TASK_ARN),
            "credentials and metadata are no longer served"
        );
        if left.is_empty() {
            assert!(
                !self.runtime.volumes().contains(&task_volume()),
                "task volumes without containers are removed"
            );
        }
    }

    /// Nothing of `what` was touched: releasing touches only what was
    /// acquired.
    fn assert_untouched_network(&self) {
        assert!(self.networks.attached.lock().unwrap().is_empty());
        assert!(self.networks.detached.lock().unwrap().is_empty());
        assert_eq!(self.runtime.count(Call::Remove), 0);
    }

    fn assert_untouched_cgroup(&self) {
        assert!(self.cgroups.created.lock().unwrap().is_empty());
        assert!(self.cgroups.removed.lock().unwrap().is_empty());
    }

    fn stop_reason(&self) -> (Option<String>, String) {
        let last = self.last_report();
        (last.stop_code, last.stopped_reason.unwrap_or_default())
    }
}

async fn ended(handle: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("the task stops in time")
        .expect("the runner ends cleanly");
}

// --- the whole way --------------------------------------------------------

#[tokio::test]
async fn a_full_task_runs_then_releases_everything_on_stop() {
    let h = Harness::new(full_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    // Every phase did its part, in order.
    let pause = h.pause().expect("the pause container");
    assert_eq!(pause.spec.network_mode, berth_runtime::NetworkMode::None);
    assert_eq!(pause.spec.cgroup_parent.as_deref(), Some("/berth/t1"));
    assert_eq!(
        h.networks.attached.lock().unwrap().clone(),
        vec![("t1".to_string(), eni(), pause.state.pid.unwrap())]
    );
    assert_eq!(h.networks.policies.lock().unwrap().len(), 1);
    assert!(h.runtime.volumes().contains(&task_volume()));
    let created = h.cgroups.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].1.memory_bytes, Some(512 << 20));
    let app = h
        .task_containers()
        .into_iter()
        .find(|c| c.spec.name.contains("-app-"))
        .unwrap();
    assert_eq!(
        app.spec.network_mode,
        berth_runtime::NetworkMode::Container(pause.state.id.clone())
    );
    assert_eq!(app.spec.cgroup_parent.as_deref(), Some("/berth/t1"));
    assert!(app
        .spec
        .env
        .contains(&("DB_PASSWORD".to_string(), "s3cr3t".to_string())));
    let credentials_uri = app
        .spec
        .env
        .iter()
        .find(|(k, _)| k == task_endpoint::CREDENTIALS_ENV)
        .map(|(_, v)| v.clone())
        .expect("the credentials variable is set");
    // The containers share the interface's address; the endpoint serves
    // them (the host routes the address on its link here).
    assert!(h.endpoint.knows(TASK_ARN));
    let calls: Vec<Call> = h.runtime.calls().into_iter().map(|(c, _)| c).collect();
    let first = |call: Call| calls.iter().position(|c| *c == call).unwrap();
    assert!(first(Call::CreateVolume) < first(Call::Create));

    h.stop();
    ended(handle).await;
    assert_eq!(
        h.statuses(),
        vec![PENDING, RUNNING, DEPROVISIONING, STOPPED]
    );
    assert_eq!(h.stop_reason().0, None);
    h.assert_released();
    // The exited containers stay (logs, exit codes), with their volume.
    assert_eq!(h.task_containers().len(), 2);
    assert!(h.runtime.volumes().contains(&task_volume()));
    assert_eq!(h.networks.detached.lock().unwrap().clone(), vec!["t1"]);
    assert_eq!(
        h.endpoint
            .route(&credentials_uri, "172.31.0.9".parse().unwrap())
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn a_task_stopped_before_it_starts_acquires_nothing() {
    let h = Harness::new(stopped(&full_task()));
    h.run().await;
    assert_eq!(h.statuses(), vec![STOPPED]);
    assert!(h.runtime.calls().iter().all(|(c, _)| *c != Call::Create));
    h.assert_untouched_network();
    h.assert_untouched_cgroup();
    h.assert_released();
}

// --- every phase's failure releases what was acquired ----------------------

#[tokio::test]
async fn credentials_failure_acquires_nothing() {
    let h = Harness::new(full_task());
    *h.server.role_refused.lock().unwrap() = Some((
        "ClientException".into(),
        "This Berth server does not issue role credentials.".into(),
    ));
    h.run().await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("TaskFailedToStart".into()),
            "ResourceInitializationError: unable to get task role credentials: ClientException: This Berth server does not issue role credentials.".into()
        )
    );
    assert!(h.runtime.calls().iter().all(|(c, _)| *c != Call::Pull));
    h.assert_untouched_network();
    h.assert_untouched_cgroup();
    h.assert_released();
}

#[tokio::test]
async fn role_task_fails_without_endpoint() {
    let h = Harness::with_endpoint(role_task(), |runtime| {
        TaskEndpoint::unavailable("cannot listen", runtime)
    });
    h.run().await;
    let (code, reason) = h.stop_reason();
    assert_eq!(code.as_deref(), Some("TaskFailedToStart"));
    assert!(
        reason.starts_with("ResourceInitializationError: unable to get task role credentials: the task credentials endpoint (169.254.170.2:80) is unavailable"),
        "{reason}"
    );
    assert!(h.task_containers().is_empty());
}

#[tokio::test]
async fn pull_failure_releases_the_credentials() {
    let h = Harness::new(full_task());
    h.runtime.remove_image("busybox");
    h.runtime.fail(
        Call::Pull,
        None,
        RuntimeError::ImagePull("Error response from daemon: manifest unknown".into()),
        None,
    );
    h.run().await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("TaskFailedToStart".into()),
            "CannotPullContainerError: Error response from daemon: manifest unknown".into()
        )
    );
    let last = h.last_report();
    assert!(last.pull_started_at.is_some() && last.pull_stopped_at.is_some());
    assert!(last.containers.iter().all(|c| c.reason.is_some()));
    assert_eq!(h.runtime.count(Call::CreateVolume), 0);
    h.assert_untouched_network();
    h.assert_untouched_cgroup();
    h.assert_released();
}

#[tokio::test]
async fn volume_failure_removes_the_volumes_made() {
    let mut task = full_task();
    task.task_definition.volumes.as_mut().unwrap().push(Volume {
        name: Some("scratch".into()),
        ..Volume::default()
    });
    let h = Harness::new(task.clone());
    let second = spec::task_volume_name(&task, "scratch");
    h.runtime.fail(
        Call::CreateVolume,
        Some("scratch"),
        RuntimeError::InvalidSpec("no space left".into()),
        None,
    );
    h.run().await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("TaskFailedToStart".into()),
            "CannotCreateVolumeError: volume scratch: no space left".into()
        )
    );
    // Both were asked for; the one made and the one that failed are
    // removed.
    let removed: BTreeSet<String> = h
        .runtime
        .calls()
        .into_iter()
        .filter(|(c, _)| *c == Call::RemoveVolume)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(removed, BTreeSet::from([task_volume(), second]));
    assert!(h.runtime.volumes().is_empty());
    assert_eq!(h.cgroups.created.lock().unwrap().len(), 0);
    h.assert_untouched_network();
    h.assert_released();
}

#[tokio::test]
async fn secrets_failure_releases_volumes_and_credentials() {
    let h = Harness::new(full_task());
    *h.server.secrets_refused.lock().unwrap() = Some((
        "AccessDeniedException".into(),
        "not allowed to read db".into(),
    ));
    h.run().await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("TaskFailedToStart".into()),
            "ResourceInitializationError: unable to pull secrets or registry auth: AccessDeniedException: not allowed to read db".into()
        )
    );
    assert!(h.runtime.volumes().is_empty());
    h.assert_untouched_network();
    h.assert_untouched_cgroup();
    h.assert_released();
}

#[tokio::test]
async fn cgroup_failure_removes_what_was_made_of_it() {
    let h = Harness::new(full_task());
    *h.cgroups.create_error.lock().unwrap() = Some("Permission denied".into());
    h.run().await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("TaskFailedToStart".into()),
            "ResourceInitializationError: unable to create the task cgroup: Permission denied"
                .into()
        )
    );
    assert_eq!(h.cgroups.removed.lock().unwrap().clone(), vec!["t1"]);
    assert!(h.runtime.volumes().is_empty());
    h.assert_untouched_network();
    h.assert_released();
}

#[tokio::test]
async fn interface_failure_removes_the_namespace_and_detaches() {
    let h = Harness::new(full_task());
    *h.networks.attach_error.lock().unwrap() = Some(NetError::Invalid("no router here".into()));
    h.run().await;
    let (code, reason) = h.stop_reason();
    assert_eq!(code.as_deref(), Some("TaskFailedToStart"));
    assert_eq!(
        reason,
        "ResourceInitializationError: unable to connect the task to subnet subnet-1 of vpc-1: no router here"
    );
    // The pause container was the only container.
    assert_eq!(h.runtime.count(Call::Create), 1);
    assert_eq!(h.networks.detached.lock().unwrap().clone(), vec!["t1"]);
    assert_eq!(h.cgroups.removed.lock().unwrap().clone(), vec!["t1"]);
    assert!(h.runtime.volumes().is_empty());
    h.assert_released();
}

#[tokio::test]
async fn pause_container_failure_leaves_no_interface_to_detach() {
    let h = Harness::new(full_task());
    h.runtime.fail(
        Call::Create,
        Some("internalecspause"),
        RuntimeError::InvalidSpec("invalid cgroup parent".into()),
        None,
    );
    h.run().await;
    assert_eq!(
        h.stop_reason().1,
        "ResourceInitializationError: unable to create the pause container: invalid cgroup parent"
    );
    h.assert_untouched_network();
    assert_eq!(h.cgroups.removed.lock().unwrap().clone(), vec!["t1"]);
    h.assert_released();
}

#[tokio::test]
async fn security_group_failure_removes_the_namespace() {
    let h = Harness::new(full_task());
    *h.networks.policy_error.lock().unwrap() = Some("nft refused the ruleset".into());
    h.run().await;
    assert_eq!(
        h.stop_reason().1,
        "ResourceInitializationError: unable to apply the task's security groups: nft refused the ruleset"
    );
    assert_eq!(h.networks.detached.lock().unwrap().clone(), vec!["t1"]);
    assert!(h.task_containers().is_empty());
    h.assert_released();
}

#[tokio::test]
async fn container_failure_stops_the_started_ones_and_releases() {
    let h = Harness::new(full_task());
    h.runtime.fail(
        Call::Create,
        Some("-side-"),
        RuntimeError::InvalidSpec("invalid mount config".into()),
        None,
    );
    h.run().await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("TaskFailedToStart".into()),
            "CannotCreateContainerError: invalid mount config".into()
        )
    );
    let app = h
        .task_containers()
        .into_iter()
        .find(|c| c.spec.name.contains("-app-"))
        .expect("app stays, exited");
    assert_eq!(app.state.status, ContainerStatus::Exited);
    assert_eq!(h.runtime.count(Call::Stop), 1);
    // Mounted by the kept container: removed with it at clean-up.
    assert!(h.runtime.volumes().contains(&task_volume()));
    h.assert_released();
}

#[tokio::test]
async fn start_failure_stops_the_task() {
    let h = Harness::new(plain_task());
    h.runtime.fail(
        Call::Start,
        None,
        RuntimeError::Other("OCI runtime create failed".into()),
        None,
    );
    h.run().await;
    assert_eq!(
        h.stop_reason().1,
        "CannotStartContainerError: OCI runtime create failed"
    );
    h.assert_released();
}

fn task_with_port(host_port: Option<i32>) -> AssignedTask {
    let mut task = plain_task();
    let def = &mut task.task_definition;
    if let Some(c) = def
        .container_definitions
        .as_mut()
        .and_then(|c| c.first_mut())
    {
        c.port_mappings = Some(vec![berth_model::shapes::ecs::PortMapping {
            container_port: Some(8080),
            host_port,
            ..Default::default()
        }]);
    }
    task
}

fn port_taken(port: u16) -> RuntimeError {
    RuntimeError::Other(format!(
        "driver failed programming external connectivity on endpoint x: Error starting \
         userland proxy: listen tcp4 0.0.0.0:{port}: bind: address already in use"
    ))
}

#[tokio::test]
async fn a_taken_dynamic_host_port_is_picked_again() {
    let h = Harness::new(task_with_port(None));
    h.runtime
        .fail(Call::Start, None, port_taken(32942), Some(2));
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    assert_eq!(h.runtime.count(Call::Start), 3);
    h.stop();
    ended(handle).await;

    // Taken every time: the task fails after a bounded number of starts.
    let h = Harness::new(task_with_port(Some(0)));
    h.runtime.fail(Call::Start, None, port_taken(32942), None);
    h.run().await;
    assert!(h.stop_reason().1.contains("address already in use"));
    assert_eq!(h.runtime.count(Call::Start), 5);
    h.assert_released();
}

#[tokio::test]
async fn a_taken_host_port_the_definition_names_fails_at_once() {
    let h = Harness::new(task_with_port(Some(8080)));
    h.runtime.fail(Call::Start, None, port_taken(8080), None);
    h.run().await;
    assert_eq!(
        h.stop_reason().1,
        format!("CannotStartContainerError: {}", port_taken(8080))
    );
    assert_eq!(h.runtime.count(Call::Start), 1);
    h.assert_released();
}

#[tokio::test]
async fn essential_exit_while_running_releases_everything() {
    let h = Harness::new(full_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    let app = h
        .task_containers()
        .into_iter()
        .find(|c| c.spec.name.contains("-app-"))
        .unwrap();
    h.runtime.exit(&app.state.id, 3, false);
    ended(handle).await;
    assert_eq!(
        h.stop_reason(),
        (
            Some("EssentialContainerExited".into()),
            "Essential container in task exited".into()
        )
    );
    let report = h.last_report();
    let app_report = report.containers.iter().find(|c| c.name == "app").unwrap();
    assert_eq!(app_report.exit_code, Some(3));
    // Only the other container was still running.
    assert_eq!(h.runtime.count(Call::Stop), 1);
    h.assert_released();
}

#[tokio::test]
async fn losing_the_pause_container_stops_the_task() {
    let h = Harness::new(full_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    let pause = h.pause().unwrap();
    h.runtime.exit(&pause.state.id, 137, false);
    ended(handle).await;
    assert_eq!(
        h.stop_reason().0.as_deref(),
        Some("EssentialContainerExited")
    );
    h.assert_released();
}

#[tokio::test]
async fn a_container_that_refuses_to_stop_is_stopped_again() {
    let h = Harness::new(plain_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    h.runtime.fail(
        Call::Stop,
        None,
        RuntimeError::Unavailable("docker is restarting".into()),
        Some(2),
    );
    h.stop();
    ended(handle).await;
    assert_eq!(h.runtime.count(Call::Stop), 3);
    assert_eq!(
        h.statuses(),
        vec![PENDING, RUNNING, DEPROVISIONING, STOPPED]
    );
    h.assert_released();
}

#[tokio::test]
async fn releasing_is_tried_again() {
    let h = Harness::new(full_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    h.runtime.fail(
        Call::Remove,
        Some("internalecspause"),
        RuntimeError::Unavailable("docker is restarting".into()),
        Some(1),
    );
    // The cgroup stays busy for longer than one release tries.
    h.cgroups.busy.store(6, Ordering::SeqCst);
    h.stop();
    ended(handle).await;
    assert_eq!(h.runtime.count(Call::Remove), 2);
    // Never detached before its namespace was gone.
    assert_eq!(h.networks.detached.lock().unwrap().clone(), vec!["t1"]);
    h.assert_released();
}

#[tokio::test]
async fn what_cannot_be_released_is_left_to_the_clean_up() {
    let h = Harness::new(full_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    h.runtime.fail(
        Call::Remove,
        Some("internalecspause"),
        RuntimeError::Other("device or resource busy".into()),
        None,
    );
    h.stop();
    ended(handle).await;
    assert_eq!(h.last_report().last_status, STOPPED);
    assert_eq!(h.runtime.count(Call::Remove), RELEASE_ATTEMPTS as usize);
    // Its interface stays with it; everything else went.
    assert!(h.networks.detached.lock().unwrap().is_empty());
    assert!(h.cgroups.live.lock().unwrap().is_empty());
    assert!(!h.endpoint.knows(TASK_ARN));
}

#[tokio::test]
async fn a_stopped_report_that_fails_is_sent_again() {
    let h = Harness::new(plain_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    h.server.submit_failures.store(3, Ordering::SeqCst);
    h.stop();
    ended(handle).await;
    h.assert_released();
}

// --- a stop during each phase ----------------------------------------------

/// Runs the full task with the server asking for a stop when `what`
/// happens, and checks it ends with everything released.
async fn stop_during(what: &'static str) -> Harness {
    let h = Harness::new(full_task());
    h.stop_on(what);
    h.run().await;
    assert_eq!(h.stop_reason().0, None, "the server's stop, not a failure");
    h.assert_released();
    h
}

#[tokio::test]
async fn stop_during_credentials() {
    let h = stop_during("credentials").await;
    assert!(h.runtime.calls().iter().all(|(c, _)| *c != Call::Pull));
    h.assert_untouched_cgroup();
    h.assert_untouched_network();
}

#[tokio::test]
async fn stop_during_pull() {
    let h = Harness::new(full_task());
    h.runtime.remove_image("busybox");
    h.stop_on_call(Call::Pull, "busybox");
    h.run().await;
    h.assert_released();
    assert_eq!(h.runtime.count(Call::CreateVolume), 0);
    h.assert_untouched_cgroup();
    h.assert_untouched_network();
}

#[tokio::test]
async fn stop_during_volumes() {
    let h = Harness::new(full_task());
    h.stop_on_call(Call::CreateVolume, "data");
    h.run().await;
    h.assert_released();
    assert!(h.runtime.volumes().is_empty());
    h.assert_untouched_cgroup();
}

#[tokio::test]
async fn stop_during_secrets() {
    let h = stop_during("secrets").await;
    assert!(h.runtime.volumes().is_empty());
    h.assert_untouched_cgroup();
}

#[tokio::test]
async fn stop_during_cgroup() {
    let h = stop_during("cgroup").await;
    assert_eq!(h.cgroups.removed.lock().unwrap().clone(), vec!["t1"]);
    h.assert_untouched_network();
}

#[tokio::test]
async fn stop_during_network() {
    let h = stop_during("attach").await;
    assert_eq!(h.networks.detached.lock().unwrap().clone(), vec!["t1"]);
    // No container of the task was created outside its namespace.
    assert_eq!(h.runtime.count(Call::Create), 1);
}

#[tokio::test]
async fn stop_during_starting() {
    let h = Harness::new(full_task());
    // `side` waits for `app` to start; the stop comes meanwhile.
    h.stop_on_call(Call::Start, "-app-");
    h.run().await;
    h.assert_released();
    assert!(h
        .task_containers()
        .iter()
        .all(|c| !c.spec.name.contains("-side-")));
}

#[tokio::test]
async fn stop_while_waiting_for_the_interface() {
    let mut task = full_task();
    task.network_interface = None;
    let h = Harness::new(task);
    let handle = h.spawn();
    h.wait_for_status(PENDING).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Nothing of the network without an interface.
    assert!(h.task_containers().is_empty());
    h.stop();
    ended(handle).await;
    h.assert_released();
    h.assert_untouched_network();
    assert_eq!(h.cgroups.removed.lock().unwrap().clone(), vec!["t1"]);
}

#[tokio::test]
async fn stop_while_waiting_for_a_dependency() {
    let mut task = plain_task();
    let mut side = container("side");
    side.depends_on = Some(vec![ContainerDependency {
        container_name: Some("app".into()),
        condition: Some("HEALTHY".into()),
    }]);
    task.task_definition
        .container_definitions
        .as_mut()
        .unwrap()
        .push(side);
    let h = Harness::new(task);
    let handle = h.spawn();
    h.wait_for_status(PENDING).await;
    for _ in 0..100 {
        if !h.task_containers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.stop();
    ended(handle).await;
    assert_eq!(h.task_containers().len(), 1, "side never started");
    h.assert_released();
}

// --- adoption after an agent restart --------------------------------------

#[tokio::test]
async fn adopted_containers_are_run_on_and_released() {
    let task = full_task();
    let h = Harness::new(task.clone());
    // What an earlier agent left running: the pause container and both
    // containers, the app's environment naming its credentials id.
    let labels = |name: &str| {
        BTreeMap::from([
            (spec::LABEL_TASK_ARN.to_string(), TASK_ARN.to_string()),
            (spec::LABEL_CONTAINER_NAME.to_string(), name.to_string()),
            (spec::LABEL_INSTANCE.to_string(), "i1".to_string()),
        ])
    };
    let mut adopted = Vec::new();
    for (name, docker) in [
        (
            spec::PAUSE_CONTAINER_NAME,
            spec::docker_name(&task, "internalecspause"),
        ),
        ("app", spec::docker_name(&task, "app")),
        ("side", spec::docker_name(&task, "side")),
    ] {
        let env = if name == "app" {
            vec![(
                task_endpoint::CREDENTIALS_ENV.to_string(),
                "/v2/credentials/old-id".to_string(),
            )]
        } else {
            Vec::new()
        };
        let state = ContainerState {
            id: format!("id-{docker}"),
            name: docker.clone(),
            labels: labels(name),
            status: ContainerStatus::Running,
            pid: Some(77),
            started_at: Some(std::time::SystemTime::now()),
            ..ContainerState::default()
        };
        h.runtime.insert(
            ContainerSpec {
                name: docker,
                image: "busybox".into(),
                env,
                ..ContainerSpec::default()
            },
            state.clone(),
        );
        adopted.push(state);
    }
    let handle = h.spawn_with(adopted);
    h.wait_for_status(RUNNING).await;
    // Nothing created or pulled again; the namespace is plumbed again.
    assert_eq!(h.runtime.count(Call::Create), 0);
    assert_eq!(h.runtime.count(Call::Pull), 0);
    assert_eq!(h.runtime.count(Call::CreateVolume), 0);
    assert_eq!(h.networks.attached.lock().unwrap().len(), 1);
    // The credentials are served under the id the containers know.
    for _ in 0..100 {
        if h.endpoint.knows(TASK_ARN) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.endpoint.knows(TASK_ARN));
    h.stop();
    ended(handle).await;
    assert_eq!(h.runtime.count(Call::Stop), 2);
    h.assert_released();
}

#[tokio::test]
async fn an_adopted_task_is_not_failed_while_the_server_refuses_credentials() {
    let task = role_task();
    let h = Harness::new(task.clone());
    let docker = spec::docker_name(&task, "app");
    let state = ContainerState {
        id: format!("id-{docker}"),
        name: docker.clone(),
        labels: BTreeMap::from([
            (spec::LABEL_TASK_ARN.to_string(), TASK_ARN.to_string()),
            (spec::LABEL_CONTAINER_NAME.to_string(), "app".to_string()),
        ]),
        status: ContainerStatus::Running,
        started_at: Some(std::time::SystemTime::now()),
        ip_address: Some("172.17.0.5".into()),
        ..ContainerState::default()
    };
    h.runtime.insert(
        ContainerSpec {
            name: docker,
            image: "busybox".into(),
            env: vec![(
                task_endpoint::CREDENTIALS_ENV.to_string(),
                "/v2/credentials/old-id".to_string(),
            )],
            ..ContainerSpec::default()
        },
        state.clone(),
    );
    *h.server.role_refused.lock().unwrap() = Some(("ServerException".into(), "try later".into()));
    let handle = h.spawn_with(vec![state]);
    h.wait_for_status(RUNNING).await;
    let ip: IpAddr = "172.17.0.5".parse().unwrap();
    assert_eq!(h.endpoint.route("/v2/credentials/old-id", ip).await.0, 400);
    // The server answers again: the running task gets them, under the
    // id its container knows.
    *h.server.role_refused.lock().unwrap() = None;
    let mut status = 0;
    for _ in 0..300 {
        status = h.endpoint.route("/v2/credentials/old-id", ip).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200);
    h.stop();
    ended(handle).await;
    assert_eq!(h.stop_reason().0, None);
    h.assert_released();
}

// --- what the task's containers get --------------------------------------

#[tokio::test]
async fn role_task_gets_credentials_until_it_stops() {
    let h = Harness::new(role_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    let app = h.task_containers().pop().expect("the container");
    let env = app.spec.env.clone();
    let get = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} is set"))
    };
    let uri = get(task_endpoint::CREDENTIALS_ENV);
    let v4 = get(task_endpoint::METADATA_V4_ENV);
    let ip: IpAddr = app.state.ip_address.as_deref().unwrap().parse().unwrap();
    let (status, body) = h.endpoint.route(&uri, ip).await;
    assert_eq!(status, 200);
    assert_eq!(body["AccessKeyId"], "ASIATASK");
    let path = v4.trim_start_matches("http://169.254.170.2");
    let (status, body) = h.endpoint.route(&format!("{path}/task"), ip).await;
    assert_eq!(status, 200);
    assert_eq!(body["TaskARN"], TASK_ARN);
    assert_eq!(body["Containers"][0]["Name"], "app");
    assert_eq!(body["Containers"][0]["ImageID"], "sha256:busybox");
    // Stats come from the runtime the runner uses.
    let (status, stats) = h.endpoint.route(&format!("{path}/stats"), ip).await;
    assert_eq!(
        (status, stats["id"].as_str()),
        (200, Some(app.state.id.as_str()))
    );
    // Another address is refused.
    assert_eq!(
        h.endpoint
            .route(&uri, "172.17.0.99".parse().unwrap())
            .await
            .0,
        400
    );
    h.stop();
    ended(handle).await;
    assert_eq!(h.endpoint.route(&uri, ip).await.0, 400);
    h.assert_released();
}

#[tokio::test]
async fn spot_interruption_gives_containers_two_minutes() {
    let h = Harness::new(plain_task());
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    let mut stop = stopped(&plain_task());
    stop.stop_code = Some("SpotInterruption".into());
    h.updates.send(stop).unwrap();
    ended(handle).await;
    assert_eq!(h.runtime.stop_timeouts(), vec![Duration::from_secs(120)]);
}

#[tokio::test]
async fn a_kill_for_the_task_memory_is_reported_as_oom() {
    let mut task = plain_task();
    task.task_definition.memory = Some("128".into());
    let h = Harness::new(task);
    let handle = h.spawn();
    h.wait_for_status(RUNNING).await;
    let app = h.task_containers().pop().unwrap();
    h.cgroups.oom_kills.store(1, Ordering::SeqCst);
    h.runtime.exit(&app.state.id, 137, false);
    ended(handle).await;
    let report = h.last_report();
    assert_eq!(report.containers[0].reason.as_deref(), Some(OOM_REASON));
    h.assert_released();
}
