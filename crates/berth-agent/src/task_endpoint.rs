//! The task endpoint at `169.254.170.2:80`, as the ECS agent serves it:
//! IAM role credentials for tasks (`/v2/credentials/<id>`, the address in
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`) and the task metadata endpoint
//! (`/v3/<token>` and `/v4/<token>`, with `/task`, `/stats`, `/task/stats`).
//!
//! Every answer is only given to the task's own containers: the request's
//! source address must be one of the task's containers' addresses (for tasks
//! in `host` network mode, a host address). Credentials live in memory only.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The link-local address containers reach the endpoint at.
pub const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
pub const ENDPOINT_PORT: u16 = 80;
/// The environment variable naming a task's credentials path.
pub const CREDENTIALS_ENV: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
pub const METADATA_V4_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
pub const METADATA_V3_ENV: &str = "ECS_CONTAINER_METADATA_URI";
const CREDENTIALS_PREFIX: &str = "/v2/credentials/";

/// Temporary credentials of a task's role, as served to its containers.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    /// Seconds since the epoch.
    pub expiration: i64,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// How long to wait before refreshing credentials issued at `issued_at` that
/// expire at `expiration` (seconds since the epoch), at `now`: refresh when
/// less than 15 minutes remain, or a quarter of the lifetime when that is
/// shorter.
pub fn refresh_delay(issued_at: i64, expiration: i64, now: i64) -> Duration {
    let lifetime = (expiration - issued_at).max(0);
    let margin = (lifetime / 4).min(15 * 60);
    let at = expiration - margin;
    Duration::from_secs((at - now).max(0) as u64)
}

/// Formats seconds since the epoch as ISO 8601 (`2026-11-30T12:00:00Z`).
pub fn iso8601(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn iso8601_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = iso8601(d.as_secs() as i64);
    format!("{}.{:09}Z", base.trim_end_matches('Z'), d.subsec_nanos())
}

fn iso8601_f64(secs: f64) -> String {
    iso8601_time(UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
}

// Howard Hinnant's days → civil date.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// What the endpoint asks the container runtime beyond the [`Runtime`]
/// trait (stats, image ids, environment).
///
/// [`Runtime`]: berth_runtime::Runtime
#[async_trait::async_trait]
pub trait ContainerInspector: Send + Sync + 'static {
    /// One stats sample of the container, as Docker's stats API answers it.
    async fn stats(&self, id: &str) -> Result<Value, String>;
    /// Details of the container; None when it cannot be inspected.
    async fn details(&self, id: &str) -> Option<ContainerDetails>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    pub image_id: Option<String>,
    pub created_at: Option<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// [`ContainerInspector`] on the local Docker daemon (`DOCKER_HOST` or
/// `/var/run/docker.sock`), connected on first use.
#[derive(Default)]
pub struct DockerInspector {
    docker: tokio::sync::OnceCell<Option<bollard::Docker>>,
}

impl DockerInspector {
    async fn client(&self) -> Option<&bollard::Docker> {
        self.docker
            .get_or_init(|| async {
                let docker = bollard::Docker::connect_with_local_defaults().ok()?;
                docker.negotiate_version().await.ok()
            })
            .await
            .as_ref()
    }
}

#[async_trait::async_trait]
impl ContainerInspector for DockerInspector {
    async fn stats(&self, id: &str) -> Result<Value, String> {
        use futures::StreamExt;
        let docker = self
            .client()
            .await
            .ok_or_else(|| "the container runtime is unavailable".to_string())?;
        let options = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut stream = docker.stats(id, Some(options));
        match stream.next().await {
            Some(Ok(stats)) => serde_json::to_value(stats).map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no stats".to_string()),
        }
    }

    async fn details(&self, id: &str) -> Option<ContainerDetails> {
        let docker = self.client().await?;
        let c = docker.inspect_container(id, None).await.ok()?;
        let ip_addresses = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|e| e.ip_address)
            .filter_map(|ip| ip.parse().ok())
            .collect();
        Some(ContainerDetails {
            image_id: c.image,
            created_at: c.created,
            env: c.config.and_then(|c| c.env).unwrap_or_default(),
            ip_addresses,
        })
    }
}

/// What the endpoint knows about a task (kept up to date by its runner).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskView {
    pub task_arn: String,
    pub cluster: String,
    pub family: String,
    pub revision: String,
    pub desired_status: String,
    pub known_status: String,
    /// Task-level CPU in vCPUs.
    pub cpu: Option<f64>,
    /// Task-level memory in MiB.
    pub memory: Option<i64>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    /// `bridge`, `host`, `none` or `awsvpc`.
    pub network_mode: String,
    /// The awsvpc task's interface (its metadata `Networks` describe it).
    pub interface: Option<berth_model::agent_protocol::TaskNetworkInterface>,
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    pub name: String,
    /// The token of the container's metadata URI.
    pub token: String,
    pub docker_id: Option<String>,
    pub docker_name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub desired_status: String,
    pub known_status: String,
    pub cpu: i64,
    pub memory: Option<i64>,
    pub started_at: Option<SystemTime>,
    pub ip_address: Option<IpAddr>,
    pub container_arn: Option<String>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
}

#[derive(Default)]
struct TaskEntry {
    view: TaskView,
    credentials_id: Option<String>,
    credentials: Option<RoleCredentials>,
}

#[derive(Default)]
struct State {
    tasks: HashMap<String, TaskEntry>,
    by_credentials: HashMap<String, String>,
    /// container token → (task ARN, container name)
    by_token: HashMap<String, (String, String)>,
}

/// The endpoint: the routes and the state they answer from.
pub struct TaskEndpoint {
    /// Why the endpoint does not listen, when it does not.
    unavailable: Option<String>,
    state: RwLock<State>,
    inspector: Arc<dyn ContainerInspector>,
    availability_zone: Option<String>,
}

/// An answer: HTTP status and JSON body.
pub type Answer = (u16, Value);

fn error(status: u16, code: &str, message: &str) -> Answer {
    (status, json!({"code": code, "message": message}))
}

impl TaskEndpoint {
    /// An endpoint that does not listen (the task credentials of tasks with
    /// a role cannot be served: such tasks fail to start).
    pub fn unavailable(why: impl Into<String>, inspector: Arc<dyn ContainerInspector>) -> Self {
        TaskEndpoint {
            unavailable: Some(why.into()),
            state: RwLock::default(),
            inspector,
            availability_zone: None,
        }
    }

    /// An endpoint whose routes answer (for callers that serve it
    /// themselves, and tests).
    pub fn new(inspector: Arc<dyn ContainerInspector>, availability_zone: Option<String>) -> Self {
        TaskEndpoint {
            unavailable: None,
            state: RwLock::default(),
            inspector,
            availability_zone,
        }
    }

    /// Makes sure `169.254.170.2` is on `lo`, listens on it and serves the
    /// endpoint. When any of that fails the endpoint is unavailable (logged).
    pub async fn start(
        inspector: Arc<dyn ContainerInspector>,
        availability_zone: Option<String>,
    ) -> Arc<Self> {
        if let Err(why) = ensure_address().await {
            tracing::warn!(error = %why, "the task endpoint (IAM roles for tasks, task metadata) is unavailable: tasks with a taskRoleArn cannot start on this host");
            return Arc::new(Self::unavailable(why, inspector));
        }
        let address = SocketAddr::from((ENDPOINT_IP, ENDPOINT_PORT));
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(l) => l,
            Err(e) => {
                let why = format!("cannot listen on {address}: {e}");
                tracing::warn!(error = %why, "the task endpoint (IAM roles for tasks, task metadata) is unavailable: tasks with a taskRoleArn cannot start on this host");
                return Arc::new(Self::unavailable(why, inspector));
            }
        };
        let endpoint = Arc::new(Self::new(inspector, availability_zone));
        let router = router(endpoint.clone());
        tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::warn!(error = %e, "the task endpoint stopped");
            }
        });
        tracing::info!(%address, "serving task credentials and metadata");
        endpoint
    }

    /// Ok when the endpoint listens; otherwise why not.
    pub fn available(&self) -> Result<(), String> {
        match &self.unavailable {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records or updates a task (its containers' tokens included).
    pub fn update_task(&self, view: TaskView) {
        let mut state = self.write();
        let arn = view.task_arn.clone();
        for c in &view.containers {
            state
                .by_token
                .insert(c.token.clone(), (arn.clone(), c.name.clone()));
        }
        state.tasks.entry(arn).or_default().view = view;
    }

    /// Serves `credentials` to the task's containers at
    /// `/v2/credentials/<credentials_id>`. The task must have been recorded
    /// with [`TaskEndpoint::update_task`]; answers false when it is not (it
    /// was removed).
    pub fn set_credentials(
        &self,
        task_arn: &str,
        credentials_id: &str,
        credentials: RoleCredentials,
    ) -> bool {
        let mut state = self.write();
        let Some(entry) = state.tasks.get_mut(task_arn) else {
            return false;
        };
        entry.credentials_id = Some(credentials_id.to_string());
        entry.credentials = Some(credentials);
        state
            .by_credentials
            .insert(credentials_id.to_string(), task_arn.to_string());
        true
    }

    /// What the endpoint asks the runtime.
    pub fn inspector(&self) -> &Arc<dyn ContainerInspector> {
        &self.inspector
    }

    /// Forgets the task: its credentials and metadata are no longer served.
    pub fn remove_task(&self, task_arn: &str) {
        let mut state = self.write();
        state.tasks.remove(task_arn);
        state.by_credentials.retain(|_, t| t != task_arn);
        state.by_token.retain(|_, (t, _)| t != task_arn);
    }

    /// Whether `source` may read the task's answers.
    async fn allowed(&self, view: &TaskView, source: IpAddr) -> bool {
        if view.network_mode == "host" {
            // Host-network containers share the host's addresses.
            return source.is_loopback() || source == IpAddr::V4(ENDPOINT_IP);
        }
        if view.containers.iter().any(|c| c.ip_address == Some(source)) {
            return true;
        }
        // A container that just started may ask before its runner has seen
        // its address: look again.
        for c in &view.containers {
            let Some(id) = &c.docker_id else { continue };
            if let Some(details) = self.inspector.details(id).await {
                if details.ip_addresses.contains(&source) {
                    return true;
                }
            }
        }
        tracing::debug!(%source, task = %view.task_arn, "task endpoint refused a caller that is not one of the task's containers");
        false
    }

    /// Answers a GET of `path` from `source`.
    pub async fn route(&self, path: &str, source: IpAddr) -> Answer {
        let path = path.split('?').next().unwrap_or(path);
        let path = path.trim_end_matches('/');
        if let Some(id) = path.strip_prefix(CREDENTIALS_PREFIX) {
            return self.credentials(id, source).await;
        }
        let rest = path
            .strip_prefix("/v4/")
            .map(|r| (r, 4))
            .or_else(|| path.strip_prefix("/v3/").map(|r| (r, 3)));
        if let Some((rest, _version)) = rest {
            let (token, sub) = match rest.split_once('/') {
                Some((t, s)) => (t, s),
                None => (rest, ""),
            };
            return self.metadata(token, sub, source).await;
        }
        error(404, "NotFound", "Not found")
    }

    async fn credentials(&self, id: &str, source: IpAddr) -> Answer {
        let invalid = || {
            error(
                400,
                "InvalidIdInRequest",
                &format!(
                    "CredentialsV2Request: Credentials not found: Invalid credentials ID: {id}"
                ),
            )
        };
        let found = {
            let state = self.read();
            state
                .by_credentials
                .get(id)
                .and_then(|arn| state.tasks.get(arn))
                .map(|t| (t.view.clone(), t.credentials.clone()))
        };
        let Some((view, credentials)) = found else {
            return invalid();
        };
        if !self.allowed(&view, source).await {
            return invalid();
        }
        match credentials {
            Some(c) => (
                200,
                json!({
                    "RoleArn": c.role_arn,
                    "AccessKeyId": c.access_key_id,
                    "SecretAccessKey": c.secret_access_key,
                    "Token": c.token,
                    "Expiration": iso8601(c.expiration),
                }),
            ),
            None => invalid(),
        }
    }

    async fn metadata(&self, token: &str, sub: &str, source: IpAddr) -> Answer {
        let invalid = || {
            error(
                404,
                "InvalidMetadataRequest",
                "TaskMetadata: unable to find container for the request",
            )
        };
        let found = {
            let state = self.read();
            state.by_token.get(token).and_then(|(arn, name)| {
                state.tasks.get(arn).map(|t| (t.view.clone(), name.clone()))
            })
        };
        let Some((view, name)) = found else {
            return invalid();
        };
        if !self.allowed(&view, source).await {
            return invalid();
        }
        let Some(container) = view.containers.iter().find(|c| c.name == name) else {
            return invalid();
        };
        match sub {
            "" => (200, self.container_metadata(&view, container).await),
            "task" => {
                let mut containers = Vec::new();
                for c in &view.containers {
                    containers.push(self.container_metadata(&view, c).await);
                }
                (200, self.task_metadata(&view, containers))
            }
            "stats" => match &container.docker_id {
                Some(id) => match self.inspector.stats(id).await {
                    Ok(stats) => (200, stats),
                    Err(e) => error(
                        500,
                        "StatsUnavailable",
                        &format!("unable to get stats: {e}"),
                    ),
                },
                None => (200, Value::Null),
            },
            "task/stats" => {
                let mut all = serde_json::Map::new();
                for c in &view.containers {
                    let Some(id) = &c.docker_id else { continue };
                    let stats = self.inspector.stats(id).await.unwrap_or(Value::Null);
                    all.insert(id.clone(), stats);
                }
                (200, Value::Object(all))
            }
            _ => error(404, "NotFound", "Not found"),
        }
    }

    fn task_metadata(&self, view: &TaskView, containers: Vec<Value>) -> Value {
        let mut task = serde_json::Map::new();
        task.insert("Cluster".into(), json!(view.cluster));
        task.insert("TaskARN".into(), json!(view.task_arn));
        task.insert("Family".into(), json!(view.family));
        task.insert("Revision".into(), json!(view.revision));
        task.insert("DesiredStatus".into(), json!(view.desired_status));
        task.insert("KnownStatus".into(), json!(view.known_status));
        let mut limits = serde_json::Map::new();
        if let Some(cpu) = view.cpu {
            limits.insert("CPU".into(), json!(cpu));
        }
        if let Some(memory) = view.memory {
            limits.insert("Memory".into(), json!(memory));
        }
        if !limits.is_empty() {
            task.insert("Limits".into(), Value::Object(limits));
        }
        if let Some(t) = view.pull_started_at {
            task.insert("PullStartedAt".into(), json!(iso8601_f64(t)));
        }
        if let Some(t) = view.pull_stopped_at {
            task.insert("PullStoppedAt".into(), json!(iso8601_f64(t)));
        }
        if let Some(az) = &self.availability_zone {
            task.insert("AvailabilityZone".into(), json!(az));
        }
        task.insert("LaunchType".into(), json!("EC2"));
        task.insert("Containers".into(), Value::Array(containers));
        Value::Object(task)
    }

    async fn container_metadata(&self, view: &TaskView, c: &ContainerView) -> Value {
        let details = match &c.docker_id {
            Some(id) => self.inspector.details(id).await,
            None => None,
        };
        let mut m = serde_json::Map::new();
        if let Some(id) = &c.docker_id {
            m.insert("DockerId".into(), json!(id));
        }
        m.insert("Name".into(), json!(c.name));
        m.insert("DockerName".into(), json!(c.docker_name));
        m.insert("Image".into(), json!(c.image));
        if let Some(image_id) = details.as_ref().and_then(|d| d.image_id.clone()) {
            m.insert("ImageID".into(), json!(image_id));
        }
        m.insert("Labels".into(), json!(c.labels));
        m.insert("DesiredStatus".into(), json!(c.desired_status));
        m.insert("KnownStatus".into(), json!(c.known_status));
        let mut limits = serde_json::Map::new();
        limits.insert("CPU".into(), json!(c.cpu));
        if let Some(memory) = c.memory {
            limits.insert("Memory".into(), json!(memory));
        }
        m.insert("Limits".into(), Value::Object(limits));
        if let Some(created) = details.as_ref().and_then(|d| d.created_at.clone()) {
            m.insert("CreatedAt".into(), json!(created));
        }
        if let Some(started) = c.started_at {
            m.insert("StartedAt".into(), json!(iso8601_time(started)));
        }
        m.insert("Type".into(), json!("NORMAL"));
        if let Some(driver) = &c.log_driver {
            m.insert("LogDriver".into(), json!(driver));
            m.insert("LogOptions".into(), json!(c.log_options));
        }
        if let Some(arn) = &c.container_arn {
            m.insert("ContainerARN".into(), json!(arn));
        }
        let mut network = serde_json::Map::new();
        network.insert("NetworkMode".into(), json!(view.network_mode));
        if let Some(ip) = c.ip_address {
            network.insert("IPv4Addresses".into(), json!([ip.to_string()]));
        }
        if let Some(eni) = view
            .interface
            .as_ref()
            .filter(|_| view.network_mode == "awsvpc")
        {
            awsvpc_network(&mut network, eni);
        }
        if view.network_mode != "none" {
            m.insert("Networks".into(), json!([Value::Object(network)]));
        }
        Value::Object(m)
    }
}

/// What ECS's metadata v4 adds to an awsvpc container's network: the
/// interface's MAC, subnet, DNS name and router (as `<router>/<prefix>`).
fn awsvpc_network(
    network: &mut serde_json::Map<String, Value>,
    eni: &berth_model::agent_protocol::TaskNetworkInterface,
) {
    let prefix = eni
        .subnet_cidr
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or("32");
    network.insert("AttachmentIndex".into(), json!(0));
    network.insert("IPv4Addresses".into(), json!([eni.private_ip]));
    network.insert("MACAddress".into(), json!(eni.mac));
    network.insert("IPv4SubnetCIDRBlock".into(), json!(eni.subnet_cidr));
    network.insert(
        "PrivateDNSName".into(),
        json!(format!(
            "ip-{}.ec2.internal",
            eni.private_ip.replace('.', "-")
        )),
    );
    network.insert(
        "SubnetGatewayIpv4Address".into(),
        json!(format!("{}/{prefix}", eni.gateway)),
    );
}

/// The axum router serving `endpoint` (needs connect info for the source
/// address).
pub fn router(endpoint: Arc<TaskEndpoint>) -> axum::Router {
    use axum::extract::{ConnectInfo, State};
    use axum::http::{StatusCode, Uri};
    async fn handle(
        State(endpoint): State<Arc<TaskEndpoint>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        method: axum::http::Method,
        uri: Uri,
    ) -> (StatusCode, axum::Json<Value>) {
        let (status, body) = if method == axum::http::Method::GET {
            endpoint.route(uri.path(), peer.ip()).await
        } else {
            error(405, "MethodNotAllowed", "Only GET is supported")
        };
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
    }
    axum::Router::new().fallback(handle).with_state(endpoint)
}

/// Adds `169.254.170.2/32` to `lo` unless it is there.
async fn ensure_address() -> Result<(), String> {
    let shown = tokio::process::Command::new("ip")
        .args(["-4", "addr", "show", "dev", "lo"])
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    let needle = format!("inet {ENDPOINT_IP}/");
    if String::from_utf8_lossy(&shown.stdout).contains(&needle) {
        return Ok(());
    }
    let added = tokio::process::Command::new("ip")
        .args(["addr", "add", &format!("{ENDPOINT_IP}/32"), "dev", "lo"])
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if added.status.success() {
        tracing::info!(address = %ENDPOINT_IP, "added the task endpoint address to lo");
        Ok(())
    } else {
        Err(format!(
            "cannot add {ENDPOINT_IP}/32 to lo: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        ))
    }
}

/// The id in a container's `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` entry.
pub fn credentials_id_from_env(env: &[String]) -> Option<String> {
    env.iter()
        .find_map(|e| e.strip_prefix(&format!("{CREDENTIALS_ENV}=")))
        .and_then(|v| v.strip_prefix(CREDENTIALS_PREFIX))
        .map(str::to_string)
}

/// The token in a container's `ECS_CONTAINER_METADATA_URI_V4` entry.
pub fn metadata_token_from_env(env: &[String]) -> Option<String> {
    let value = env
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{METADATA_V4_ENV}=")))?;
    value.rsplit('/').next().map(str::to_string)
}

/// A new random id (credentials ids, metadata tokens).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeInspector {
        /// Addresses a fresh inspect reports, by container id.
        late_ips: HashMap<String, IpAddr>,
    }

    #[async_trait::async_trait]
    impl ContainerInspector for FakeInspector {
        async fn stats(&self, id: &str) -> Result<Value, String> {
            Ok(json!({"id": id, "read": "2026-11-30T12:00:00Z"}))
        }
        async fn details(&self, id: &str) -> Option<ContainerDetails> {
            Some(ContainerDetails {
                image_id: Some(format!("sha256:{id}")),
                created_at: Some("2026-11-30T11:59:00.5Z".into()),
                env: Vec::new(),
                ip_addresses: self.late_ips.get(id).copied().into_iter().collect(),
            })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn view(arn: &str, containers: &[(&str, &str, &str, Option<&str>)]) -> TaskView {
        TaskView {
            task_arn: arn.into(),
            cluster: "default".into(),
            family: "web".into(),
            revision: "3".into(),
            desired_status: "RUNNING".into(),
            known_status: "RUNNING".into(),
            cpu: Some(0.25),
            memory: Some(512),
            pull_started_at: Some(1_700_000_000.0),
            pull_stopped_at: Some(1_700_000_001.5),
            network_mode: "bridge".into(),
            interface: None,
            containers: containers
                .iter()
                .map(|(name, token, id, address)| ContainerView {
                    name: (*name).into(),
                    token: (*token).into(),
                    docker_id: Some((*id).into()),
                    docker_name: format!("ecs-web-3-{name}-x"),
                    image: "busybox".into(),
                    desired_status: "RUNNING".into(),
                    known_status: "RUNNING".into(),
                    cpu: 10,
                    memory: Some(128),
                    started_at: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_002)),
                    ip_address: address.map(ip),
                    container_arn: Some(format!("arn:aws:ecs:us-east-1:0:container/{id}")),
                    log_driver: Some("awslogs".into()),
                    log_options: BTreeMap::from([("awslogs-group".into(), "g".into())]),
                    ..ContainerView::default()
                })
                .collect(),
        }
    }

    fn credentials(key: &str) -> RoleCredentials {
        RoleCredentials {
            role_arn: "arn:aws:iam::000000000000:role/app".into(),
            access_key_id: key.into(),
            secret_access_key: "secret".into(),
            token: "session".into(),
            expiration: 1_795_003_200, // 2026-11-18T12:00:00Z
        }
    }

    fn endpoint() -> TaskEndpoint {
        let late_ips = HashMap::from([("c3".to_string(), ip("172.17.0.9"))]);
        let e = TaskEndpoint::new(
            Arc::new(FakeInspector { late_ips }),
            Some("us-east-1a".into()),
        );
        e.update_task(view(
            "arn:t1",
            &[
                ("app", "tok-app", "c1", Some("172.17.0.2")),
                ("side", "tok-side", "c3", None),
            ],
        ));
        e.update_task(view(
            "arn:t2",
            &[("app", "tok-other", "c2", Some("172.17.0.3"))],
        ));
        assert!(e.set_credentials("arn:t1", "cred-1", credentials("ASIA1")));
        assert!(e.set_credentials("arn:t2", "cred-2", credentials("ASIA2")));
        e
    }

    #[tokio::test]
    async fn serves_credentials_to_the_task_only() {
        let e = endpoint();
        let (status, body) = e.route("/v2/credentials/cred-1", ip("172.17.0.2")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({
                "RoleArn": "arn:aws:iam::000000000000:role/app",
                "AccessKeyId": "ASIA1",
                "SecretAccessKey": "secret",
                "Token": "session",
                "Expiration": "2026-11-18T12:00:00Z",
            })
        );
        // The other task's container asking for this task's id.
        let (status, body) = e.route("/v2/credentials/cred-1", ip("172.17.0.3")).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "InvalidIdInRequest");
        // A stranger, an unknown id.
        assert_eq!(
            e.route("/v2/credentials/cred-1", ip("10.0.0.1")).await.0,
            400
        );
        assert_eq!(
            e.route("/v2/credentials/nope", ip("172.17.0.2")).await.0,
            400
        );
        // A container whose address the runner has not seen yet.
        assert_eq!(
            e.route("/v2/credentials/cred-1", ip("172.17.0.9")).await.0,
            200
        );
        // Its own.
        let (status, body) = e.route("/v2/credentials/cred-2", ip("172.17.0.3")).await;
        assert_eq!((status, body["AccessKeyId"].as_str()), (200, Some("ASIA2")));
        // Removed with the task.
        e.remove_task("arn:t1");
        assert_eq!(
            e.route("/v2/credentials/cred-1", ip("172.17.0.2")).await.0,
            400
        );
        assert!(!e.set_credentials("arn:t1", "cred-1", credentials("ASIA3")));
        assert_eq!(e.route("/v4/tok-app", ip("172.17.0.2")).await.0, 404);
    }

    #[tokio::test]
    async fn serves_metadata() {
        let e = endpoint();
        let (status, c) = e.route("/v4/tok-app", ip("172.17.0.2")).await;
        assert_eq!(status, 200);
        assert_eq!(c["DockerId"], "c1");
        assert_eq!(c["Name"], "app");
        assert_eq!(c["DockerName"], "ecs-web-3-app-x");
        assert_eq!(c["Image"], "busybox");
        assert_eq!(c["ImageID"], "sha256:c1");
        assert_eq!(c["DesiredStatus"], "RUNNING");
        assert_eq!(c["KnownStatus"], "RUNNING");
        assert_eq!(c["Limits"], json!({"CPU": 10, "Memory": 128}));
        assert_eq!(c["CreatedAt"], "2026-11-30T11:59:00.5Z");
        assert_eq!(c["StartedAt"], "2023-11-14T22:13:22.000000000Z");
        assert_eq!(c["Type"], "NORMAL");
        assert_eq!(c["LogDriver"], "awslogs");
        assert_eq!(c["LogOptions"]["awslogs-group"], "g");
        assert_eq!(c["ContainerARN"], "arn:aws:ecs:us-east-1:0:container/c1");
        assert_eq!(
            c["Networks"],
            json!([{"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.2"]}])
        );
        // v3 answers the same.
        assert_eq!(e.route("/v3/tok-app", ip("172.17.0.2")).await.1, c);

        let (status, t) = e.route("/v4/tok-app/task", ip("172.17.0.2")).await;
        assert_eq!(status, 200);
        assert_eq!(t["Cluster"], "default");
        assert_eq!(t["TaskARN"], "arn:t1");
        assert_eq!(t["Family"], "web");
        assert_eq!(t["Revision"], "3");
        assert_eq!(t["Limits"], json!({"CPU": 0.25, "Memory": 512}));
        assert_eq!(t["PullStartedAt"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(t["AvailabilityZone"], "us-east-1a");
        assert_eq!(t["LaunchType"], "EC2");
        assert_eq!(t["Containers"].as_array().map(Vec::len), Some(2));
        assert_eq!(t["Containers"][0], c);

        let (status, s) = e.route("/v4/tok-app/stats", ip("172.17.0.2")).await;
        assert_eq!((status, s["id"].as_str()), (200, Some("c1")));
        let (status, s) = e.route("/v4/tok-app/task/stats", ip("172.17.0.2")).await;
        assert_eq!(status, 200);
        assert_eq!(s["c1"]["id"], "c1");
        assert_eq!(s["c3"]["id"], "c3");

        // Another task's container, a stranger, an unknown token or path.
        assert_eq!(e.route("/v4/tok-app", ip("172.17.0.3")).await.0, 404);
        assert_eq!(e.route("/v4/tok-app/task", ip("10.1.1.1")).await.0, 404);
        assert_eq!(e.route("/v4/nope", ip("172.17.0.2")).await.0, 404);
        assert_eq!(e.route("/v4/tok-app/bogus", ip("172.17.0.2")).await.0, 404);
        assert_eq!(e.route("/", ip("172.17.0.2")).await.0, 404);
    }

    #[tokio::test]
    async fn host_network_tasks_answer_host_addresses() {
        let e = TaskEndpoint::new(
            Arc::new(FakeInspector {
                late_ips: HashMap::new(),
            }),
            None,
        );
        let mut v = view("arn:h", &[("app", "tok-h", "h1", None)]);
        v.network_mode = "host".into();
        e.update_task(v);
        assert!(e.set_credentials("arn:h", "cred-h", credentials("ASIAH")));
        assert_eq!(
            e.route("/v2/credentials/cred-h", ip("169.254.170.2"))
                .await
                .0,
            200
        );
        assert_eq!(
            e.route("/v2/credentials/cred-h", ip("127.0.0.1")).await.0,
            200
        );
        assert_eq!(
            e.route("/v2/credentials/cred-h", ip("172.17.0.5")).await.0,
            400
        );
        let (_, c) = e.route("/v4/tok-h", ip("127.0.0.1")).await;
        assert_eq!(c["Networks"], json!([{"NetworkMode": "host"}]));
    }

    #[tokio::test]
    async fn router_uses_the_source_address() {
        use tower::ServiceExt;
        let e = Arc::new(endpoint());
        let request = |path: &str, from: &str| {
            let mut r = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            r.extensions_mut()
                .insert(axum::extract::ConnectInfo(SocketAddr::new(ip(from), 40000)));
            r
        };
        let ok = router(e.clone())
            .oneshot(request("/v2/credentials/cred-1", "172.17.0.2"))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let refused = router(e)
            .oneshot(request("/v2/credentials/cred-1", "172.17.0.3"))
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
    }

    #[test]
    fn refresh_timing() {
        // One hour: refresh 15 minutes before expiry.
        assert_eq!(refresh_delay(0, 3600, 0), Duration::from_secs(2700));
        assert_eq!(refresh_delay(0, 3600, 2000), Duration::from_secs(700));
        // Short lifetimes: a quarter before expiry.
        assert_eq!(refresh_delay(0, 900, 0), Duration::from_secs(675));
        // Overdue or already expired: now.
        assert_eq!(refresh_delay(0, 3600, 3000), Duration::ZERO);
        assert_eq!(refresh_delay(0, 3600, 5000), Duration::ZERO);
        assert_eq!(refresh_delay(100, 50, 100), Duration::ZERO);
        // Six hours: still 15 minutes.
        assert_eq!(refresh_delay(0, 21_600, 0), Duration::from_secs(20_700));
    }

    #[test]
    fn formats_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_003_200), "2026-11-18T12:00:00Z");
        assert_eq!(iso8601(951_825_600), "2000-02-29T12:00:00Z");
    }

    #[test]
    fn ids_from_env() {
        let env = vec![
            "A=1".to_string(),
            format!("{CREDENTIALS_ENV}=/v2/credentials/abc"),
            format!("{METADATA_V4_ENV}=http://169.254.170.2/v4/tok"),
        ];
        assert_eq!(credentials_id_from_env(&env).as_deref(), Some("abc"));
        assert_eq!(metadata_token_from_env(&env).as_deref(), Some("tok"));
        assert_eq!(credentials_id_from_env(&[]), None);
    }
}
