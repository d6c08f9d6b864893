//! The Berth agent: registers its host as a container instance, polls the
//! server for the tasks placed on it, runs them through a [`Runtime`] and
//! reports what happens.
//!
//! Restarts are safe: the agent keeps its identity in its data directory,
//! adopts the containers it finds with its labels (never creating a second
//! copy), and stops those whose task the server no longer wants.
//!
//! Architecture invariant: the agent talks to the server only through the
//! agent protocol (`berth_model::agent_protocol`); it never reads the store.

pub mod awslogs;
pub mod cgroups;
pub mod client;
pub mod dns_relay;
pub mod exec;
pub mod netpolicy;
pub mod run_dir;
pub mod spec;
pub mod task_endpoint;
pub mod task_runner;
pub mod vpcnet;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_model::agent_protocol::{
    AssignedTask, GetNetworkPolicyRequest, GetNetworkPolicyResponse, GetTaskRoleCredentialsRequest,
    GetTaskRoleCredentialsResponse, LogPosition, OpenLogStreamRequest, OpenLogStreamResponse,
    PollTasksRequest, PollTasksResponse, PutTaskLogsRequest, PutTaskLogsResponse,
    RegisterAgentRequest, RegisterAgentResponse, SubmitTaskStateRequest, SubmitTaskStateResponse,
    TaskLogEvent, TARGET_PREFIX,
};
use berth_model::shapes::ecs::{Attribute, Resource, VersionInfo};
use berth_runtime::{ContainerState, Runtime, RuntimeEvent};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

pub use client::{ClientError, Credentials, ServerClient};
use task_endpoint::TaskEndpoint;
use task_runner::TaskRunner;

/// How an agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// e.g. `http://127.0.0.1:4566`
    pub server: String,
    pub region: String,
    pub cluster: String,
    /// The host's stable name; becomes the instance's `ec2InstanceId`.
    pub name: String,
    /// Extra attributes (`--attribute k=v`, or `k` alone).
    pub attributes: Vec<(String, Option<String>)>,
    /// Where the agent keeps its identity.
    pub data_dir: PathBuf,
    /// Account credentials for a first registration (a user or role needs
    /// `berth:RegisterAgent` on the cluster). Once registered, the agent
    /// registers again with the credential minted for its instance.
    pub registration: Credentials,
    /// The operator's agent registration token (the server's
    /// `<data-dir>/agent-token`), sent with every registration.
    pub registration_token: String,
    /// CPU units to offer instead of 1024 per core.
    pub cpu: Option<i64>,
    /// Memory (MiB) to offer instead of the host's memory minus the reserve.
    pub memory_mib: Option<i64>,
    pub reserved_memory_mib: i64,
    pub availability_zone: Option<String>,
    pub instance_type: String,
    /// The Berth DNS server this agent's tasks use (through the host's DNS
    /// relay), instead of the one the server names when the agent
    /// registers (`--dns-endpoint`).
    pub dns_endpoint: Option<std::net::SocketAddr>,
}

/// The DNS server the agent's tasks use: the override, else what the
/// server said at registration; an unspecified address (a server
/// listening on every address) is the server's own host, named by
/// `server_url` when it is an IP address, else this host.
pub fn effective_dns_endpoint(
    overridden: Option<std::net::SocketAddr>,
    answered: Option<&str>,
    server_url: &str,
) -> Option<std::net::SocketAddr> {
    if overridden.is_some() {
        return overridden;
    }
    let mut address: std::net::SocketAddr = answered?.parse().ok()?;
    if address.ip().is_unspecified() {
        let host = server_url
            .split_once("://")
            .map_or(server_url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let ip = host
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| host.parse::<std::net::IpAddr>())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        address.set_ip(ip);
    }
    Some(address)
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the container runtime is unavailable: {0}")]
    Runtime(#[from] berth_runtime::RuntimeError),
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error("agent state in {path}: {message}")]
    State { path: String, message: String },
}

/// Sends task reports (a trait so the runner does not depend on HTTP).
#[async_trait::async_trait]
pub trait Reporter: Send + Sync + 'static {
    /// Returns the task's desired status as the server sees it.
    async fn submit(&self, report: SubmitTaskStateRequest) -> Result<String, ClientError>;

    /// Credentials for pulling `image`, when it lives in the server's own
    /// registry (an ECR token, as the task execution role would get).
    async fn registry_auth(&self, image: &str) -> Option<berth_runtime::RegistryAuth>;

    /// The values of the task's `secrets` and `secretOptions`, fetched at
    /// container creation and kept only in memory.
    async fn resolve_secrets(
        &self,
        task_arn: &str,
    ) -> Result<berth_model::agent_protocol::ResolveSecretsResponse, ClientError>;

    /// Makes sure a container's awslogs stream exists and answers how far
    /// its shipping has come.
    async fn open_log_stream(
        &self,
        task_arn: &str,
        region: &str,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<Option<LogPosition>, ClientError>;

    /// Stores a batch of a container's log events; answers the stream's
    /// cursor after it.
    async fn put_task_logs(
        &self,
        task_arn: &str,
        region: &str,
        group: &str,
        stream: &str,
        events: Vec<TaskLogEvent>,
    ) -> Result<Option<LogPosition>, ClientError>;

    /// Temporary credentials of the task's role `which`
    /// (`berth_model::agent_protocol::ROLE_TASK` or `ROLE_EXECUTION`); kept
    /// in memory only.
    async fn task_role_credentials(
        &self,
        task_arn: &str,
        which: &str,
    ) -> Result<GetTaskRoleCredentialsResponse, ClientError>;

    /// The security-group rules of an awsvpc task's interface as they
    /// stand now (`GetNetworkPolicy`).
    async fn network_policy(&self, task_arn: &str)
        -> Result<GetNetworkPolicyResponse, ClientError>;
}

/// The credentials of a task's role `which`, fetched from the server.
pub async fn role_credentials(
    reporter: &dyn Reporter,
    task_arn: &str,
    which: &str,
) -> Result<task_endpoint::RoleCredentials, ClientError> {
    let answer = reporter.task_role_credentials(task_arn, which).await?;
    Ok(task_endpoint::RoleCredentials {
        role_arn: answer.role_arn,
        access_key_id: answer.access_key_id,
        secret_access_key: answer.secret_access_key,
        token: answer.session_token,
        expiration: answer.expiration,
    })
}

/// The credentials of a task's execution role (`executionRoleArn`), for
/// what the agent does on the task's behalf (pulls, secrets, logs).
pub async fn execution_role_credentials(
    reporter: &dyn Reporter,
    task_arn: &str,
) -> Result<task_endpoint::RoleCredentials, ClientError> {
    role_credentials(
        reporter,
        task_arn,
        berth_model::agent_protocol::ROLE_EXECUTION,
    )
    .await
}

/// The identity the agent keeps across restarts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Identity {
    server: String,
    cluster: String,
    name: String,
    container_instance_arn: String,
    access_key_id: String,
    secret_access_key: String,
}

/// The credential the agent signs with once registered.
fn identity_credentials(identity: &Identity) -> Credentials {
    Credentials {
        access_key_id: identity.access_key_id.clone(),
        secret_access_key: identity.secret_access_key.clone(),
    }
}

fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent-identity.json")
}

fn state_error(path: &Path, message: impl std::fmt::Display) -> AgentError {
    AgentError::State {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn load_identity(config: &AgentConfig) -> Option<Identity> {
    let text = std::fs::read_to_string(identity_path(&config.data_dir)).ok()?;
    let identity: Identity = serde_json::from_str(&text).ok()?;
    (identity.server == config.server
        && identity.cluster == config.cluster
        && identity.name == config.name)
        .then_some(identity)
}

fn save_identity(config: &AgentConfig, identity: &Identity) -> Result<(), AgentError> {
    let path = identity_path(&config.data_dir);
    std::fs::create_dir_all(&config.data_dir).map_err(|e| state_error(&path, e))?;
    let text = serde_json::to_vec_pretty(identity).map_err(|e| state_error(&path, e))?;
    let tmp = path.with_extension("json.tmp");
    // Readable by the agent's user only, from the moment it exists.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| state_error(&path, e))?;
    std::io::Write::write_all(&mut file, &text).map_err(|e| state_error(&path, e))?;
    file.sync_all().map_err(|e| state_error(&path, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| state_error(&path, e))
}

fn integer(name: &str, value: i64) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(value.clamp(0, i64::from(i32::MAX)) as i32),
        double_value: Some(0.0),
        long_value: Some(0),
        ..Resource::default()
    }
}

fn attribute(name: &str, value: Option<&str>) -> Attribute {
    Attribute {
        name: Some(name.into()),
        value: value.map(str::to_string),
        target_type: None,
        target_id: None,
    }
}

/// The container instance attribute naming the host's primary IPv4
/// address (the one its default route leaves from).
pub const HOST_IPV4_ATTRIBUTE: &str = "berth.host-ipv4";

/// The host's primary IPv4 address: the source address of its route to a
/// public address (a UDP "connect" sends nothing). `None` without such a
/// route.
fn host_ipv4() -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    // TEST-NET-3: never answered, only routed.
    socket.connect(("203.0.113.1", 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
        _ => None,
    }
}

/// Docker remote API versions the ECS agent advertises as capabilities.
const DOCKER_API_VERSIONS: &[&str] = &[
    "1.17", "1.18", "1.19", "1.20", "1.21", "1.22", "1.23", "1.24", "1.25", "1.26", "1.27", "1.28",
    "1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36", "1.37", "1.38", "1.39", "1.40",
    "1.41",
];

/// What the agent registers: resources from the runtime (or overrides) and
/// the capabilities it really has.
fn registration_request(
    config: &AgentConfig,
    info: &berth_runtime::RuntimeInfo,
    task_roles: bool,
) -> RegisterAgentRequest {
    let cpu = config.cpu.unwrap_or(1024 * i64::from(info.cpus.max(1)));
    let memory = config
        .memory_mib
        .unwrap_or((info.memory_bytes / (1024 * 1024)) as i64 - config.reserved_memory_mib)
        .max(0);
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    let zone = config
        .availability_zone
        .clone()
        .unwrap_or_else(|| format!("{}a", config.region));
    let mut attributes = vec![
        attribute("ecs.os-type", Some("linux")),
        attribute("ecs.os-family", Some("LINUX")),
        attribute("ecs.cpu-architecture", Some(arch)),
        attribute("ecs.instance-type", Some(&config.instance_type)),
        attribute("ecs.availability-zone", Some(&zone)),
        attribute("ecs.capability.container-health-check", None),
        attribute("ecs.capability.container-ordering", None),
        attribute("ecs.capability.secrets.asm.environment-variables", None),
        attribute("ecs.capability.secrets.ssm.environment-variables", None),
        attribute(
            "com.amazonaws.ecs.capability.logging-driver.json-file",
            None,
        ),
        attribute("com.amazonaws.ecs.capability.logging-driver.syslog", None),
        attribute("com.amazonaws.ecs.capability.logging-driver.awslogs", None),
        attribute("com.amazonaws.ecs.capability.logging-driver.none", None),
    ];
    if cfg!(target_arch = "x86_64") {
        // awsvpc tasks need the pause image, which Berth builds for x86_64.
        attributes.push(attribute("ecs.capability.task-eni", None));
    }
    if task_roles {
        // Tasks with a taskRoleArn are placed only where the credentials
        // endpoint runs, as ECS places them.
        attributes.push(attribute(
            "com.amazonaws.ecs.capability.task-iam-role",
            None,
        ));
    }
    if let Some(ip) = host_ipv4() {
        // Where the host's published (bridge and host mode) ports answer:
        // service discovery gives it to SRV records of such tasks.
        attributes.push(attribute(HOST_IPV4_ATTRIBUTE, Some(&ip.to_string())));
    }
    for v in DOCKER_API_VERSIONS {
        attributes.push(attribute(
            &format!("com.amazonaws.ecs.capability.docker-remote-api.{v}"),
            None,
        ));
    }
    for (name, value) in &config.attributes {
        attributes.retain(|a| a.name.as_deref() != Some(name.as_str()));
        attributes.push(attribute(name, value.as_deref()));
    }
    RegisterAgentRequest {
        registration_token: config.registration_token.clone(),
        cluster: config.cluster.clone(),
        name: config.name.clone(),
        total_resources: vec![integer("CPU", cpu), integer("MEMORY", memory)],
        attributes,
        version_info: VersionInfo {
            agent_version: Some(format!("berth-{}", env!("CARGO_PKG_VERSION"))),
            agent_hash: None,
            docker_version: Some(format!("DockerVersion: {}", info.server_version)),
        },
    }
}

struct HttpReporter {
    client: ServerClient,
    credentials: Credentials,
    tokens: Arc<tokio::sync::Mutex<Option<(berth_runtime::RegistryAuth, std::time::Instant)>>>,
}

/// ECR tokens live 12 hours; the agent renews them well before.
const TOKEN_REUSE: Duration = Duration::from_secs(6 * 3600);

#[async_trait::async_trait]
impl Reporter for HttpReporter {
    async fn submit(&self, report: SubmitTaskStateRequest) -> Result<String, ClientError> {
        let answer: SubmitTaskStateResponse = self
            .client
            .call(
                &self.credentials,
                TARGET_PREFIX,
                "SubmitTaskState",
                &report,
                Duration::from_secs(15),
            )
            .await?;
        Ok(answer.desired_status)
    }

    async fn resolve_secrets(
        &self,
        task_arn: &str,
    ) -> Result<berth_model::agent_protocol::ResolveSecretsResponse, ClientError> {
        let request = berth_model::agent_protocol::ResolveSecretsRequest {
            task_arn: task_arn.to_string(),
        };
        self.client
            .call(
                &self.credentials,
                TARGET_PREFIX,
                "ResolveSecrets",
                &request,
                Duration::from_secs(15),
            )
            .await
    }

    async fn open_log_stream(
        &self,
        task_arn: &str,
        region: &str,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<Option<LogPosition>, ClientError> {
        let request = OpenLogStreamRequest {
            task_arn: task_arn.to_string(),
            region: region.to_string(),
            log_group_name: group.to_string(),
            log_stream_name: stream.to_string(),
            create_group,
        };
        let answer: OpenLogStreamResponse = self
            .client
            .call(
                &self.credentials,
                TARGET_PREFIX,
                "OpenLogStream",
                &request,
                Duration::from_secs(15),
            )
            .await?;
        Ok(answer.cursor)
    }

    async fn put_task_logs(
        &self,
        task_arn: &str,
        region: &str,
        group: &str,
        stream: &str,
        events: Vec<TaskLogEvent>,
    ) -> Result<Option<LogPosition>, ClientError> {
        let request = PutTaskLogsRequest {
            task_arn: task_arn.to_string(),
            region: region.to_string(),
            log_group_name: group.to_string(),
            log_stream_name: stream.to_string(),
            events,
        };
        let answer: PutTaskLogsResponse = self
            .client
            .call(
                &self.credentials,
                TARGET_PREFIX,
                "PutTaskLogs",
                &request,
                Duration::from_secs(30),
            )
            .await?;
        Ok(answer.cursor)
    }

    async fn task_role_credentials(
        &self,
        task_arn: &str,
        which: &str,
    ) -> Result<GetTaskRoleCredentialsResponse, ClientError> {
        let request = GetTaskRoleCredentialsRequest {
            task_arn: task_arn.to_string(),
            which: which.to_string(),
        };
        self.client
            .call(
                &self.credentials,
                TARGET_PREFIX,
                "GetTaskRoleCredentials",
                &request,
                Duration::from_secs(30),
            )
            .await
    }

    async fn network_policy(
        &self,
        task_arn: &str,
    ) -> Result<GetNetworkPolicyResponse, ClientError> {
        let request = GetNetworkPolicyRequest {
            task_arn: task_arn.to_string(),
        };
        self.client
            .call(
                &self.credentials,
                TARGET_PREFIX,
                "GetNetworkPolicy",
                &request,
                Duration::from_secs(15),
            )
            .await
    }

    async fn registry_auth(&self, image: &str) -> Option<berth_runtime::RegistryAuth> {
        // Images of the installation's registry: any of its servers.
        let host = self
            .client
            .hosts()
            .find(|host| image.starts_with(&format!("{host}/")))?
            .to_string();
        let mut cached = self.tokens.lock().await;
        if let Some((auth, at)) = cached.as_ref() {
            if at.elapsed() < TOKEN_REUSE {
                return Some(auth.clone());
            }
        }
        let answer: serde_json::Value = match self
            .client
            .call_service(
                &self.credentials,
                "ecr",
                "AmazonEC2ContainerRegistry_V20150921",
                "GetAuthorizationToken",
                &serde_json::json!({}),
                Duration::from_secs(15),
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot get a registry token; pulling without one");
                return None;
            }
        };
        let token = answer["authorizationData"][0]["authorizationToken"].as_str()?;
        let decoded = base64_decode(token)?;
        let (username, password) = decoded.split_once(':')?;
        let auth = berth_runtime::RegistryAuth {
            username: username.to_string(),
            password: password.to_string(),
            server_address: host.to_string(),
        };
        *cached = Some((auth.clone(), std::time::Instant::now()));
        Some(auth)
    }
}

/// Decodes an ECR authorization token (standard base64 of `user:password`).
fn base64_decode(text: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

struct Worker {
    updates: watch::Sender<AssignedTask>,
    handle: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn task(&self) -> AssignedTask {
        self.updates.borrow().clone()
    }
}

/// How long a poll waits on the server for a change.
const POLL_WAIT_SECONDS: u32 = 20;

/// The agent.
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    client: ServerClient,
    tokens: Arc<tokio::sync::Mutex<Option<(berth_runtime::RegistryAuth, std::time::Instant)>>>,
    endpoint: Option<Arc<TaskEndpoint>>,
    /// The endpoint this agent started, once: registration advertises
    /// `task-iam-role` only when it is up.
    started_endpoint: tokio::sync::OnceCell<Arc<TaskEndpoint>>,
}

impl Agent {
    /// Serves task credentials and metadata through `endpoint` instead of
    /// the one the agent starts on `169.254.170.2:80`.
    pub fn with_task_endpoint(mut self, endpoint: Arc<TaskEndpoint>) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// The endpoint given, or the one started on `169.254.170.2:80`
    /// (adding the address to `lo` when missing).
    async fn task_endpoint(&self) -> Arc<TaskEndpoint> {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => {
                let zone = self
                    .config
                    .availability_zone
                    .clone()
                    .unwrap_or_else(|| format!("{}a", self.config.region));
                self.started_endpoint
                    .get_or_init(|| TaskEndpoint::start(self.runtime.clone(), Some(zone)))
                    .await
                    .clone()
            }
        }
    }

    pub fn new(config: AgentConfig, runtime: Arc<dyn Runtime>) -> Result<Self, AgentError> {
        let client = ServerClient::new(&config.server, &config.region)?;
        Ok(Agent {
            config,
            runtime,
            client,
            tokens: Arc::new(tokio::sync::Mutex::new(None)),
            endpoint: None,
            started_endpoint: tokio::sync::OnceCell::new(),
        })
    }

    /// Registers the host: with the credential of the instance it registered
    /// before when it has one (only that credential may register a live
    /// instance again), else, or when that credential is refused (the
    /// instance was deregistered, the server lost it), with the account
    /// credentials.
    async fn register(&self) -> Result<Identity, AgentError> {
        let info = self.runtime.info().await?;
        let roles = self.task_endpoint().await.available().is_ok();
        let request = registration_request(&self.config, &info, roles);
        if let Some(saved) = load_identity(&self.config) {
            let own = Credentials {
                access_key_id: saved.access_key_id.clone(),
                secret_access_key: saved.secret_access_key.clone(),
            };
            match self.register_with(&own, &request).await {
                Err(AgentError::Server(e))
                    if e.is_auth() && !self.config.registration.access_key_id.is_empty() =>
                {
                    tracing::warn!(instance = %saved.container_instance_arn, error = %e, "the instance's own credential cannot register it again; registering with the account credentials");
                }
                other => return other,
            }
        }
        self.register_with(&self.config.registration, &request)
            .await
    }

    async fn register_with(
        &self,
        credentials: &Credentials,
        request: &RegisterAgentRequest,
    ) -> Result<Identity, AgentError> {
        let answer: RegisterAgentResponse = self
            .client
            .call(
                credentials,
                TARGET_PREFIX,
                "RegisterAgent",
                request,
                Duration::from_secs(30),
            )
            .await?;
        // Registering again with the instance's credential keeps it (the
        // server does not send the secret back).
        let secret_access_key = if answer.secret_access_key.is_empty()
            && answer.access_key_id == credentials.access_key_id
        {
            credentials.secret_access_key.clone()
        } else {
            answer.secret_access_key
        };
        let identity = Identity {
            server: self.config.server.clone(),
            cluster: self.config.cluster.clone(),
            name: self.config.name.clone(),
            container_instance_arn: answer.container_instance_arn,
            access_key_id: answer.access_key_id,
            secret_access_key,
        };
        save_identity(&self.config, &identity)?;
        let dns = effective_dns_endpoint(
            self.config.dns_endpoint,
            answer.dns_endpoint.as_deref(),
            &self.config.server,
        );
        if dns.is_none() && answer.dns_endpoint.is_some() {
            tracing::warn!(answered = ?answer.dns_endpoint, "the server named a DNS server this agent cannot read");
        }
        // Tasks created from now on use it through the host's DNS relay.
        self.task_endpoint().await.set_dns_endpoint(dns);
        tracing::info!(instance = %identity.container_instance_arn, cluster = %self.config.cluster, "registered container instance");
        Ok(identity)
    }

    /// Registers (with retries while the server is unreachable). A
    /// restarted agent registers again too, with its saved credential: the
    /// server learns its current resources and attributes, and the agent
    /// gets its instance back.
    async fn identity(&self) -> Result<Identity, AgentError> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.register().await {
                Ok(identity) => return Ok(identity),
                Err(AgentError::Server(ClientError::Unreachable(e))) => {
                    tracing::warn!(error = %e, "server unreachable; retrying registration");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Runs until `shutdown` resolves or the instance is deregistered.
    /// Containers keep running when the agent stops, as with ECS.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        tokio::select! {
            result = self.run_forever() => result,
            _ = &mut shutdown => {
                tracing::info!("agent stopping");
                Ok(())
            }
        }
    }

    async fn run_forever(&self) -> Result<(), AgentError> {
        let mut identity = self.identity().await?;
        let instance_id = identity
            .container_instance_arn
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let endpoint = self.task_endpoint().await;
        // awsvpc tasks need it; generated here once, so no task waits for it.
        if let Err(e) = berth_runtime::pause::ensure_pause_image(self.runtime.as_ref()).await {
            tracing::warn!(error = %e, "cannot load the pause image; awsvpc tasks will retry");
        }
        // VPC routers, bridges and host routes left without tasks (by this
        // agent before a restart, or by agents that are gone) are removed.
        {
            use vpcnet::TaskNetworks;
            if let Err(e) = vpcnet::VpcNetworks::new(self.runtime.clone())
                .collect()
                .await
            {
                tracing::warn!(error = %e, "cannot clean up the host's VPC networks");
            }
        }
        let (events_tx, _) = broadcast::channel::<RuntimeEvent>(1024);
        let pump = tokio::spawn(pump_events(self.runtime.clone(), events_tx.clone()));
        // `berth exec` sessions, signed with the agent's current credential.
        let (exec_credentials, credentials) = watch::channel(identity_credentials(&identity));
        let exec = tokio::spawn(exec::run(
            self.client.clone(),
            credentials,
            self.runtime.clone(),
        ));
        let result = self
            .main_loop(
                &mut identity,
                &instance_id,
                &events_tx,
                &endpoint,
                &exec_credentials,
            )
            .await;
        pump.abort();
        exec.abort();
        result
    }

    async fn main_loop(
        &self,
        identity: &mut Identity,
        instance_id: &str,
        events: &broadcast::Sender<RuntimeEvent>,
        endpoint: &Arc<TaskEndpoint>,
        exec_credentials: &watch::Sender<Credentials>,
    ) -> Result<(), AgentError> {
        // Containers this instance owned before a restart, by task.
        let mut adoptable: HashMap<String, Vec<ContainerState>> = HashMap::new();
        for c in self
            .runtime
            .list_owned(spec::LABEL_INSTANCE, Some(instance_id))
            .await?
        {
            if let Some(task) = c.labels.get(spec::LABEL_TASK_ARN) {
                adoptable.entry(task.clone()).or_default().push(c);
            }
        }
        let mut workers: HashMap<String, Worker> = HashMap::new();
        let mut since = 0u64;
        let mut first = true;
        let mut delay = Duration::from_millis(200);
        loop {
            let credentials = identity_credentials(identity);
            exec_credentials.send_if_modified(|c| {
                let changed = *c != credentials;
                *c = credentials.clone();
                changed
            });
            let request = PollTasksRequest {
                since_revision: since,
                wait_seconds: if first { 0 } else { POLL_WAIT_SECONDS },
            };
            let answer: Result<PollTasksResponse, ClientError> = self
                .client
                .call(
                    &credentials,
                    TARGET_PREFIX,
                    "PollTasks",
                    &request,
                    Duration::from_secs(u64::from(POLL_WAIT_SECONDS) + 15),
                )
                .await;
            let answer = match answer {
                Ok(a) => {
                    delay = Duration::from_millis(200);
                    a
                }
                Err(e) if e.is_auth() => {
                    tracing::warn!(error = %e, "agent credential refused; registering again");
                    *identity = self.identity().await?;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "polling the server failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            since = answer.revision;
            if answer.instance_status == "INACTIVE" {
                tracing::warn!(instance = %identity.container_instance_arn, "the container instance was deregistered; the agent stops");
                return Ok(());
            }
            let reporter: Arc<dyn Reporter> = Arc::new(HttpReporter {
                client: self.client.clone(),
                credentials,
                tokens: self.tokens.clone(),
            });
            let listed: BTreeMap<String, AssignedTask> = answer
                .tasks
                .into_iter()
                .map(|t| (t.task_arn.clone(), t))
                .collect();
            for (arn, task) in &listed {
                match workers.get(arn) {
                    Some(w) => {
                        let _ = w.updates.send(task.clone());
                    }
                    None if task.last_status == "STOPPED" => {
                        // Stopped while the agent was down: finish shipping
                        // its containers' logs.
                        let Some(adopted) = adoptable.remove(arn) else {
                            continue;
                        };
                        let (pauses, adopted): (Vec<_>, Vec<_>) =
                            adopted.into_iter().partition(|c| {
                                c.labels.get(spec::LABEL_CONTAINER_NAME).map(String::as_str)
                                    == Some(spec::PAUSE_CONTAINER_NAME)
                            });
                        // Its namespace and cgroup are no longer needed.
                        for pause in &pauses {
                            if let Err(e) = self.runtime.remove(&pause.id).await {
                                tracing::warn!(task = %arn, error = %e, "removing the pause container failed");
                            }
                        }
                        if !cgroups::task_size(task).is_empty() {
                            self.remove_cgroup(arn, true).await;
                        }
                        for c in adopted {
                            let definition = task
                                .task_definition
                                .container_definitions
                                .iter()
                                .flatten()
                                .find(|d| {
                                    d.name.as_ref() == c.labels.get(spec::LABEL_CONTAINER_NAME)
                                });
                            if let Some(Ok(Some(config))) =
                                definition.map(|d| awslogs::config(arn, d, &[]))
                            {
                                awslogs::Shipper {
                                    runtime: self.runtime.clone(),
                                    reporter: reporter.clone(),
                                    task_arn: arn.clone(),
                                    container_id: c.id.clone(),
                                    config,
                                }
                                .spawn();
                            }
                        }
                    }
                    None => {
                        let adopted = adoptable.remove(arn).unwrap_or_default();
                        let runner = TaskRunner::new(
                            self.runtime.clone(),
                            reporter.clone(),
                            instance_id.to_string(),
                            task.clone(),
                            adopted,
                            endpoint.clone(),
                        );
                        let (tx, rx) = watch::channel(task.clone());
                        let handle = tokio::spawn(runner.run(rx, events.subscribe()));
                        workers.insert(
                            arn.clone(),
                            Worker {
                                updates: tx,
                                handle,
                            },
                        );
                    }
                }
            }
            // Tasks the server forgot (garbage-collected): clean up after them.
            let gone: Vec<String> = workers
                .keys()
                .filter(|a| !listed.contains_key(*a))
                .cloned()
                .collect();
            for arn in gone {
                if let Some(w) = workers.remove(&arn) {
                    w.handle.abort();
                    self.clean_up(&w.task()).await;
                }
            }
            if first {
                // Containers of tasks the server does not know at all: never
                // leave them running unaccounted for.
                for (arn, containers) in adoptable.drain() {
                    if listed.contains_key(&arn) {
                        continue;
                    }
                    tracing::warn!(task = %arn, "removing containers of a task the server does not know");
                    for c in containers {
                        let _ = self.runtime.stop(&c.id, Duration::from_secs(10)).await;
                        let _ = self.runtime.remove(&c.id).await;
                    }
                    // Its size is unknown, so whether it had a cgroup is too.
                    self.remove_cgroup(&arn, true).await;
                }
                first = false;
            }
        }
    }

    /// Removes a forgotten task's containers and task-scoped volumes.
    async fn clean_up(&self, task: &AssignedTask) {
        match self
            .runtime
            .list_owned(spec::LABEL_TASK_ARN, Some(&task.task_arn))
            .await
        {
            Ok(containers) => {
                for c in containers {
                    if let Err(e) = self.runtime.remove(&c.id).await {
                        tracing::warn!(container = %c.id, error = %e, "removing container failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing containers failed"),
        }
        let sized = !cgroups::task_size(task).is_empty();
        if sized {
            self.remove_cgroup(&task.task_arn, false).await;
        }
        for source in spec::volumes(task).into_values() {
            if let spec::VolumeSource::Docker {
                name,
                task_scoped: true,
            } = source
            {
                if let Err(e) = self.runtime.remove_volume(&name).await {
                    tracing::warn!(volume = %name, error = %e, "removing task volume failed");
                }
            }
        }
    }
}

impl Agent {
    /// Removes a task's cgroup (after its containers); `quiet` when it
    /// may never have existed.
    async fn remove_cgroup(&self, task_arn: &str, quiet: bool) {
        use cgroups::TaskCgroups;
        let removed = cgroups::HostCgroups::new(self.runtime.clone())
            .remove(spec::task_id(task_arn))
            .await;
        if let Err(e) = removed {
            if quiet {
                tracing::debug!(task = %task_arn, error = %e, "removing the task cgroup failed");
            } else {
                tracing::warn!(task = %task_arn, error = %e, "removing the task cgroup failed");
            }
        }
    }
}

/// Forwards runtime events to the task runners, re-subscribing when the
/// runtime connection drops.
async fn pump_events(runtime: Arc<dyn Runtime>, tx: broadcast::Sender<RuntimeEvent>) {
    loop {
        let mut stream = runtime.events(spec::LABEL_TASK_ARN);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    let _ = tx.send(e);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "runtime event stream ended");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{base64_decode, effective_dns_endpoint};

    #[test]
    fn the_dns_server_tasks_use() {
        let at = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        let server = "http://127.0.0.1:4566";
        assert_eq!(
            effective_dns_endpoint(None, Some("127.0.0.1:8053"), server),
            at("127.0.0.1:8053")
        );
        // The operator's override wins, even over none.
        assert_eq!(
            effective_dns_endpoint(at("10.1.1.1:53"), Some("127.0.0.1:8053"), server),
            at("10.1.1.1:53")
        );
        assert_eq!(
            effective_dns_endpoint(at("10.1.1.1:53"), None, server),
            at("10.1.1.1:53")
        );
        assert_eq!(effective_dns_endpoint(None, None, server), None);
        assert_eq!(effective_dns_endpoint(None, Some("nonsense"), server), None);
        // A server listening on every address: its own host.
        assert_eq!(
            effective_dns_endpoint(None, Some("0.0.0.0:8053"), "http://10.0.0.5:4566/"),
            at("10.0.0.5:8053")
        );
        assert_eq!(
            effective_dns_endpoint(None, Some("0.0.0.0:8053"), "http://10.0.0.6"),
            at("10.0.0.6:8053")
        );
        assert_eq!(
            effective_dns_endpoint(None, Some("0.0.0.0:8053"), "https://berth.example:4566"),
            at("127.0.0.1:8053")
        );
    }

    #[test]
    fn decodes_ecr_tokens() {
        assert_eq!(
            base64_decode("QVdTOnNlY3JldA==").as_deref(),
            Some("AWS:secret")
        );
        assert_eq!(base64_decode("not base64!"), None);
    }
}
