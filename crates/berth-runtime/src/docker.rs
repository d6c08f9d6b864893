//! [`Runtime`] on the Docker Engine API.
//!
//! Mapping notes (all checked against Docker 20.10, API 1.41):
//! - bollard's models follow a newer API; the client negotiates down on
//!   connect, and fields the old daemon does not know are left unset.
//! - Host mounts and named volumes go through `Binds` rather than `Mounts`,
//!   as the ECS agent does: a missing host directory is created instead of
//!   failing the start, and a missing named volume is created on demand.
//! - Every call has bollard's client timeout (2 minutes) on getting the
//!   response headers; `stop` raises it, because Docker answers only once the
//!   container has exited.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointIpamConfig,
    EndpointSettings, EventMessage, EventMessageTypeEnum, HealthConfig, HealthStatusEnum,
    HostConfig, HostConfigLogConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding as DockerPortBinding, ResourcesUlimits, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ImportImageOptions,
    InspectNetworkOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StatsOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::stream::{self, BoxStream, StreamExt};
use tracing::{debug, warn};

use crate::spec::{ContainerSpec, NetworkMode, NetworkSpec, Protocol, RegistryAuth};
use crate::state::{
    ContainerDetails, ContainerState, ContainerStatus, HealthState, LogLine, PortBinding,
    RuntimeEvent, RuntimeInfo,
};
use crate::time::parse_docker_time;
use crate::{Runtime, RuntimeError};

const MIB: u64 = 1024 * 1024;
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// bollard's own default, kept for every call but `stop`.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How many containers `list_owned` inspects at once.
const INSPECT_CONCURRENCY: usize = 8;

/// The Docker driver. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects to the local daemon: `DOCKER_HOST` when it is a `unix://`
    /// address, `/var/run/docker.sock` otherwise. Fails with
    /// [`RuntimeError::Unavailable`] unless the daemon answers.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let address = default_socket_description();
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| unavailable_at(&address, &e))?;
        Self::from_client(docker, &address).await
    }

    /// Connects to the daemon listening on the unix socket at `path`.
    pub async fn connect_with_socket(path: &str) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_unix(
            path,
            DEFAULT_CLIENT_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unavailable_at(path, &e))?;
        Self::from_client(docker, path).await
    }

    // The daemon may be older than the API bollard's models describe (Debian
    // ships Docker 20.10, API 1.41): without negotiating, every request
    // carries a version the daemon rejects.
    async fn from_client(docker: Docker, address: &str) -> Result<Self, RuntimeError> {
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unavailable_at(address, &e))?;
        debug!(version = ?docker.client_version(), %address, "connected to docker");
        Ok(Self { docker })
    }

    /// The underlying bollard client, for calls the trait does not cover
    /// (exec) and for tests.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The id of the network `spec.name` when it exists with the spec's
    /// subnet (any, when the spec names none); a network of that name on
    /// another subnet is a conflict.
    async fn existing_network(&self, spec: &NetworkSpec) -> Result<Option<String>, RuntimeError> {
        let network = match self
            .docker
            .inspect_network(&spec.name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => n,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let subnets: Vec<String> = network
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.subnet)
            .collect();
        if !spec.subnet.is_empty() && !subnets.iter().any(|s| s == &spec.subnet) {
            return Err(RuntimeError::Conflict(format!(
                "network {} exists with subnets {subnets:?}, not {}",
                spec.name, spec.subnet
            )));
        }
        Ok(network.id)
    }
}

fn default_socket_description() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => host,
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

fn unavailable_at(address: &str, e: &DockerError) -> RuntimeError {
    RuntimeError::Unavailable(format!("docker at {address}: {}", describe(e)))
}

/// The error's message with its causes: hyper's top-level messages alone
/// ("client error (Connect)") do not say what went wrong.
fn describe(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        _ => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    }
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_connection_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::HyperLegacyError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::IOError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

/// Classification shared by every call; callers handle the status codes
/// that mean something specific to them first.
fn classify(e: DockerError) -> RuntimeError {
    if is_connection_error(&e) {
        return RuntimeError::Unavailable(describe(&e));
    }
    match status_code(&e) {
        Some(409) => RuntimeError::Conflict(describe(&e)),
        _ => RuntimeError::Other(describe(&e)),
    }
}

/// Splits Docker's `<RFC 3339 nano timestamp> <text>` framing; frames without
/// a readable timestamp are dropped (Docker always sends one when asked).
fn to_log_line(message: &[u8], stderr: bool) -> Option<LogLine> {
    let space = message.iter().position(|&b| b == b' ')?;
    let stamp = std::str::from_utf8(&message[..space]).ok()?;
    let at = parse_docker_time(stamp)?.duration_since(UNIX_EPOCH).ok()?;
    Some(LogLine {
        nanos: i64::try_from(at.as_nanos()).ok()?,
        stderr,
        text: message[space + 1..].to_vec(),
    })
}

fn not_found_or(id: &str, e: DockerError) -> RuntimeError {
    if status_code(&e) == Some(404) {
        RuntimeError::NotFound(id.to_string())
    } else {
        classify(e)
    }
}

/// Docker pulls every tag of a repository when the reference names none;
/// ECS means `:latest`.
pub(crate) fn with_default_tag(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let last_component = image.rsplit('/').next().unwrap_or(image);
    if last_component.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn secs_to_nanos(secs: u64) -> Option<i64> {
    (secs > 0).then(|| to_i64(secs.saturating_mul(NANOS_PER_SEC)))
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn invalid(message: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec(message.into())
}

/// Translates a spec into Docker's create body, rejecting what Docker would
/// misread rather than reject (e.g. a `:` inside a bind path).
pub(crate) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, RuntimeError> {
    if spec.name.is_empty() {
        return Err(invalid("container name must not be empty"));
    }
    if spec.image.is_empty() {
        return Err(invalid("image must not be empty"));
    }

    let mut env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return Err(invalid(format!(
                "invalid environment variable name {key:?}"
            )));
        }
        env.push(format!("{key}={value}"));
    }

    let network_mode = match &spec.network_mode {
        NetworkMode::Bridge => "bridge".to_string(),
        NetworkMode::Host => "host".to_string(),
        NetworkMode::None => "none".to_string(),
        NetworkMode::Container(other) if other.is_empty() => {
            return Err(invalid(
                "container network mode needs a container name or id",
            ));
        }
        NetworkMode::Container(other) => format!("container:{other}"),
        NetworkMode::Network(name) if name.is_empty() => {
            return Err(invalid("network mode needs a network name"));
        }
        NetworkMode::Network(name) => name.clone(),
    };
    // A fixed address belongs to an endpoint on a user-defined network;
    // Docker would silently ignore it anywhere else.
    let networking_config = match &spec.network_mode {
        NetworkMode::Network(name) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                name.clone(),
                EndpointSettings {
                    ipam_config: spec.ipv4_address.clone().map(|ip| EndpointIpamConfig {
                        ipv4_address: Some(ip),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        _ if spec.ipv4_address.is_some() => {
            return Err(invalid("a fixed IP address needs a user-defined network"));
        }
        _ => None,
    };

    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for port in &spec.ports {
        if port.container_port == 0 {
            return Err(invalid("container port must not be 0"));
        }
        let key = format!("{}/{}", port.container_port, port.protocol.as_str());
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        // An empty HostPort makes Docker allocate a free port.
        let host_port = match port.host_port {
            None | Some(0) => String::new(),
            Some(p) => p.to_string(),
        };
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: None,
                host_port: Some(host_port),
            });
    }

    let mut binds = Vec::new();
    let mut anonymous_volumes = Vec::new();
    for mount in &spec.mounts {
        if !mount.target.starts_with('/') {
            return Err(invalid(format!(
                "mount target {:?} must be an absolute path",
                mount.target
            )));
        }
        if mount.target.contains(':') || mount.source.contains(':') {
            return Err(invalid(format!(
                "mount {:?} -> {:?}: paths must not contain ':'",
                mount.source, mount.target
            )));
        }
        if mount.source.is_empty() {
            if mount.read_only {
                return Err(invalid(format!(
                    "anonymous volume at {:?} cannot be read-only: it would stay empty",
                    mount.target
                )));
            }
            anonymous_volumes.push(mount.target.clone());
        } else {
            let mode = if mount.read_only { ":ro" } else { "" };
            binds.push(format!("{}:{}{mode}", mount.source, mount.target));
        }
    }

    let mut volumes_from = Vec::with_capacity(spec.volumes_from.len());
    for (container, read_only) in &spec.volumes_from {
        if container.is_empty() {
            return Err(invalid("volumes_from needs a container name or id"));
        }
        volumes_from.push(format!(
            "{container}:{}",
            if *read_only { "ro" } else { "rw" }
        ));
    }

    let mut tmpfs = HashMap::new();
    for mount in &spec.tmpfs {
        if !mount.path.starts_with('/') {
            return Err(invalid(format!(
                "tmpfs path {:?} must be an absolute path",
                mount.path
            )));
        }
        let mut options = Vec::with_capacity(mount.options.len() + 1);
        if mount.size_mib > 0 {
            options.push(format!("size={}m", mount.size_mib));
        }
        options.extend(mount.options.iter().cloned());
        tmpfs.insert(mount.path.clone(), options.join(","));
    }

    let ulimits = spec
        .ulimits
        .iter()
        .map(|u| ResourcesUlimits {
            name: Some(u.name.clone()),
            soft: Some(u.soft),
            hard: Some(u.hard),
        })
        .collect();

    let extra_hosts = spec
        .extra_hosts
        .iter()
        .map(|(host, ip)| format!("{host}:{ip}"))
        .collect();

    let healthcheck = match &spec.health_check {
        None => None,
        Some(check) => {
            if check.command.is_empty() {
                return Err(invalid("health check command must not be empty"));
            }
            Some(HealthConfig {
                test: Some(check.command.clone()),
                interval: secs_to_nanos(check.interval_secs),
                timeout: secs_to_nanos(check.timeout_secs),
                retries: (check.retries > 0).then_some(i64::from(check.retries)),
                start_period: secs_to_nanos(check.start_period_secs),
                start_interval: None,
            })
        }
    };

    let log_config = spec
        .log_driver
        .as_ref()
        .map(|(driver, options)| HostConfigLogConfig {
            typ: Some(driver.clone()),
            config: Some(
                options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        });

    let host_config = HostConfig {
        // Docker reads 0 as "unset" (1024 shares); the kernel minimum is 2.
        cpu_shares: spec.cpu_shares.map(|shares| to_i64(shares.max(2))),
        memory: spec.memory_mib.map(|m| to_i64(m.saturating_mul(MIB))),
        memory_reservation: spec
            .memory_reservation_mib
            .map(|m| to_i64(m.saturating_mul(MIB))),
        network_mode: Some(network_mode),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        binds: non_empty(binds),
        volumes_from: non_empty(volumes_from),
        links: non_empty(spec.links.clone()),
        ulimits: non_empty(ulimits),
        cap_add: non_empty(spec.cap_add.clone()),
        cap_drop: non_empty(spec.cap_drop.clone()),
        init: spec.init.then_some(true),
        shm_size: spec.shm_size_mib.map(|m| to_i64(m.saturating_mul(MIB))),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        readonly_rootfs: spec.readonly_rootfs.then_some(true),
        privileged: spec.privileged.then_some(true),
        dns: non_empty(spec.dns_servers.clone()),
        dns_search: non_empty(spec.dns_search.clone()),
        extra_hosts: non_empty(extra_hosts),
        security_opt: non_empty(spec.docker_security_options.clone()),
        sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.iter().cloned().collect()),
        log_config,
        cgroup_parent: spec.cgroup_parent.clone(),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entry_point.clone(),
        cmd: spec.command.clone(),
        env: non_empty(env),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: non_empty(exposed_ports),
        volumes: non_empty(anonymous_volumes),
        stop_timeout: spec.stop_timeout_secs.map(to_i64),
        healthcheck,
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    })
}

fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

pub(crate) fn to_state(response: ContainerInspectResponse) -> ContainerState {
    let state = response.state.unwrap_or_default();
    let config = response.config.unwrap_or_default();

    let status = match state.status {
        // Newer daemons report "stopping" while the stop signal is pending;
        // the process is still running then.
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            ContainerStatus::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerStatus::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerStatus::Dead,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerStatus::Removing,
        Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None => {
            ContainerStatus::Created
        }
    };
    let exited = matches!(status, ContainerStatus::Exited | ContainerStatus::Dead);

    let health = state.health.and_then(|h| h.status).and_then(|s| match s {
        HealthStatusEnum::STARTING => Some(HealthState::Starting),
        HealthStatusEnum::HEALTHY => Some(HealthState::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(HealthState::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    });

    let network = response.network_settings.unwrap_or_default();
    let mut port_bindings = Vec::new();
    for (key, bindings) in network.ports.unwrap_or_default() {
        let Some((container_port, protocol)) = parse_port_key(&key) else {
            continue;
        };
        for binding in bindings.unwrap_or_default() {
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
            else {
                continue;
            };
            port_bindings.push(PortBinding {
                container_port,
                host_port,
                protocol,
                host_ip: binding.host_ip.unwrap_or_default(),
            });
        }
    }
    port_bindings.sort();

    let mut networks: Vec<_> = network.networks.unwrap_or_default().into_iter().collect();
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let ip_address = networks
        .into_iter()
        .filter_map(|(_, endpoint)| endpoint.ip_address)
        .find(|ip| !ip.is_empty());

    ContainerState {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        status,
        exit_code: if exited { state.exit_code } else { None },
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state.error.filter(|e| !e.is_empty()),
        started_at: state.started_at.as_deref().and_then(parse_docker_time),
        finished_at: state.finished_at.as_deref().and_then(parse_docker_time),
        health,
        port_bindings,
        ip_address,
        pid: state
            .pid
            .filter(|_| status == ContainerStatus::Running)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
    }
}

pub(crate) fn to_details(response: ContainerInspectResponse) -> ContainerDetails {
    let mut ip_addresses: Vec<IpAddr> = response
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_values()
        .filter_map(|endpoint| endpoint.ip_address)
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ip_addresses.sort();
    ContainerDetails {
        image_id: response.image.filter(|i| !i.is_empty()),
        created_at: response.created.filter(|c| !c.is_empty()),
        env: response.config.and_then(|c| c.env).unwrap_or_default(),
        ip_addresses,
    }
}

/// `"health_status: healthy"` → `"health_status"`, `"exec_start: sh -c …"` →
/// `"exec_start"`: subscribers match on the verb.
pub(crate) fn event_action(action: &str) -> &str {
    action.split(':').next().unwrap_or(action).trim()
}

fn to_event(message: EventMessage) -> Option<RuntimeEvent> {
    if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let id = message.actor.and_then(|a| a.id)?;
    let action = event_action(message.action.as_deref()?).to_string();
    Some(RuntimeEvent::Container { id, action })
}

fn unix_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        let info = self.docker.info().await.map_err(classify)?;
        Ok(RuntimeInfo {
            cpus: info
                .ncpu
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_default(),
            memory_bytes: info
                .mem_total
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or_default(),
            os_type: info.os_type.unwrap_or_default(),
            kernel_version: info.kernel_version.unwrap_or_default(),
            server_version: info.server_version.unwrap_or_default(),
            name: info.name.unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), RuntimeError> {
        let reference = with_default_tag(image);
        debug!(image = %reference, authenticated = auth.is_some(), "pulling image");
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..Default::default()
        };
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server_address.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                // A timeout here means the daemon took the request but the
                // registry kept it from answering: a pull failure.
                if is_connection_error(&e) && !matches!(e, DockerError::RequestTimeoutError) {
                    return Err(RuntimeError::Unavailable(describe(&e)));
                }
                // The ECS agent words pull failures the same way.
                return Err(RuntimeError::ImagePull(format!(
                    "Error response from daemon: {}",
                    describe(&e)
                )));
            }
        }
        debug!(image = %reference, "pulled image");
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let body = create_body(spec)?;
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let response = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match status_code(&e) {
                Some(400) | Some(404) => RuntimeError::InvalidSpec(describe(&e)),
                _ => classify(e),
            })?;
        for warning in &response.warnings {
            warn!(container = %spec.name, %warning, "docker warned on create");
        }
        debug!(container = %spec.name, id = %response.id, "created container");
        Ok(response.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        debug!(container = %id, "starting container");
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| not_found_or(id, e))
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let options = StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        // Docker answers only after the container is gone, which can take
        // the whole grace period plus the kill.
        let client = self
            .docker
            .clone()
            .with_timeout(DEFAULT_CLIENT_TIMEOUT.max(Duration::from_secs(secs.saturating_add(60))));
        debug!(container = %id, timeout_secs = secs, "stopping container");
        client
            .stop_container(id, Some(options))
            .await
            .map_err(|e| not_found_or(id, e))
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(response) => Ok(Some(to_state(response))),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn details(&self, id: &str) -> Result<Option<ContainerDetails>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(response) => Ok(Some(to_details(response))),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        // One sample with the previous one alongside (Docker waits a
        // moment for it), so a reader can compute CPU use from it.
        let options = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut samples = self.docker.stats(id, Some(options));
        match samples.next().await {
            Some(Ok(sample)) => serde_json::to_value(sample)
                .map_err(|e| RuntimeError::Other(format!("encoding the stats of {id}: {e}"))),
            Some(Err(e)) => Err(not_found_or(id, e)),
            None => Err(RuntimeError::Other(format!(
                "docker answered no stats for {id}"
            ))),
        }
    }

    async fn list_owned(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<ContainerState>, RuntimeError> {
        let filter = match value {
            Some(value) => format!("{label}={value}"),
            None => label.to_string(),
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(classify)?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let inspected: Vec<Option<ContainerState>> = stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffered(INSPECT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut states: Vec<ContainerState> = inspected.into_iter().flatten().collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => {
                debug!(container = %id, "removed container");
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            // Someone else is already removing it; the outcome is the same.
            Err(e) if status_code(&e) == Some(409) && describe(&e).contains("in progress") => {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        // Docker answers an existing name with the existing volume.
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| match status_code(&e) {
                Some(400) => RuntimeError::InvalidSpec(describe(&e)),
                _ => classify(e),
            })
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut output = self.docker.logs(id, Some(options));
        let mut text = Vec::new();
        while let Some(item) = output.next().await {
            let chunk = item.map_err(|e| not_found_or(id, e))?;
            text.extend_from_slice(chunk.as_ref());
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn log_lines(
        &self,
        id: &str,
        since_secs: i64,
        follow: bool,
    ) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            follow,
            timestamps: true,
            since: i32::try_from(since_secs.max(0)).unwrap_or(i32::MAX),
            ..Default::default()
        };
        let id = id.to_string();
        let frames = self.docker.logs(&id, Some(options));
        frames
            .filter_map(move |frame| {
                let line = match frame {
                    Ok(LogOutput::StdOut { message }) => to_log_line(&message, false).map(Ok),
                    Ok(LogOutput::StdErr { message }) => to_log_line(&message, true).map(Ok),
                    Ok(LogOutput::Console { message }) => to_log_line(&message, false).map(Ok),
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(not_found_or(&id, e))),
                };
                futures::future::ready(line)
            })
            .boxed()
    }

    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<String, RuntimeError> {
        if let Some(id) = self.existing_network(spec).await? {
            return Ok(id);
        }
        let config = (!spec.subnet.is_empty()).then(|| {
            vec![IpamConfig {
                subnet: Some(spec.subnet.clone()),
                gateway: Some(spec.gateway.clone()).filter(|g| !g.is_empty()),
                ..Default::default()
            }]
        });
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config,
                options: None,
            }),
            labels: Some(
                spec.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            options: (!spec.options.is_empty()).then(|| {
                spec.options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(created) => {
                debug!(network = %spec.name, subnet = %spec.subnet, "created network");
                Ok(created.id)
            }
            Err(e) => {
                // Another task on the same subnet may have created it
                // meanwhile: use that one.
                if let Some(id) = self.existing_network(spec).await? {
                    return Ok(id);
                }
                Err(match status_code(&e) {
                    Some(400) | Some(403) => RuntimeError::InvalidSpec(describe(&e)),
                    _ => classify(e),
                })
            }
        }
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) if status_code(&e) == Some(403) => Err(RuntimeError::Conflict(describe(&e))),
            Err(e) => Err(classify(e)),
        }
    }

    async fn list_networks(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<String>, RuntimeError> {
        let filter = match value {
            Some(value) => format!("{label}={value}"),
            None => label.to_string(),
        };
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
        };
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(classify)?;
        let mut names: Vec<String> = networks.into_iter().filter_map(|n| n.name).collect();
        names.sort();
        Ok(names)
    }

    async fn exec(
        &self,
        id: &str,
        spec: &crate::ExecSpec,
    ) -> Result<crate::ExecProcess, RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions::<String> {
                    attach_stdin: Some(spec.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(spec.tty),
                    cmd: Some(spec.command.clone()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => RuntimeError::NotFound(id.to_string()),
                // Docker: "container ... is not running".
                Some(409) => RuntimeError::Conflict(describe(&e)),
                _ => classify(e),
            })?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: spec.tty,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(classify)?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Other("the exec started detached".into()));
        };
        if let Some((rows, cols)) = spec.size {
            // The terminal exists once the exec has started.
            let _ = self.exec_resize(&created.id, rows, cols).await;
        }
        let output = output
            .filter_map(|item| async move {
                match item {
                    Ok(LogOutput::StdErr { message }) => {
                        Some(Ok(crate::ExecOutput::Stderr(message.to_vec())))
                    }
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        Some(Ok(crate::ExecOutput::Stdout(message.to_vec())))
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(classify(e))),
                }
            })
            .boxed();
        Ok(crate::ExecProcess {
            id: created.id,
            output,
            input,
        })
    }

    async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), RuntimeError> {
        self.docker
            .resize_exec(
                exec_id,
                bollard::exec::ResizeExecOptions {
                    height: rows,
                    width: cols,
                },
            )
            .await
            .map_err(classify)
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let inspected = self.docker.inspect_exec(exec_id).await.map_err(classify)?;
        if inspected.running == Some(true) {
            return Ok(None);
        }
        Ok(inspected.exit_code)
    }

    async fn load_image(&self, tarball: Vec<u8>) -> Result<(), RuntimeError> {
        let options = ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut output =
            self.docker
                .import_image(options, bollard::body_full(tarball.into()), None);
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream.as_deref().map(str::trim_end) {
                        debug!("image load: {line}");
                    }
                }
                Err(e) if is_connection_error(&e) => {
                    return Err(RuntimeError::Unavailable(describe(&e)))
                }
                Err(e) => {
                    return Err(RuntimeError::Other(format!(
                        "loading image: {}",
                        describe(&e)
                    )))
                }
            }
        }
        Ok(())
    }

    fn events(&self, label: &str) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
        // `since` makes Docker replay what happened between this call and
        // the moment the stream is first polled (when the request is sent).
        let options = EventsOptions {
            since: Some(unix_timestamp(SystemTime::now())),
            until: None,
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![label.to_string()]),
            ])),
        };
        let messages = self.docker.events(Some(options)).boxed();
        // One error ends the stream: after it the connection is unusable and
        // the caller re-subscribes.
        stream::unfold(Some(messages), |messages| async move {
            let mut messages = messages?;
            loop {
                match messages.next().await {
                    None => return None,
                    Some(Ok(message)) => {
                        if let Some(event) = to_event(message) {
                            return Some((Ok(event), Some(messages)));
                        }
                    }
                    Some(Err(e)) => {
                        let error = if is_connection_error(&e) {
                            RuntimeError::Unavailable(describe(&e))
                        } else {
                            RuntimeError::Other(describe(&e))
                        };
                        return Some((Err(error), None));
                    }
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{HealthCheckSpec, Mount, PortSpec, Tmpfs, Ulimit};

    fn base() -> ContainerSpec {
        ContainerSpec {
            name: "c1".into(),
            image: "busybox:latest".into(),
            ..Default::default()
        }
    }

    fn host(body: &ContainerCreateBody) -> &HostConfig {
        body.host_config.as_ref().unwrap()
    }

    #[test]
    fn minimal_spec() {
        let body = create_body(&base()).unwrap();
        assert_eq!(body.image.as_deref(), Some("busybox:latest"));
        assert_eq!(host(&body).network_mode.as_deref(), Some("bridge"));
        assert_eq!(body.exposed_ports, None);
        assert_eq!(host(&body).port_bindings, None);
        assert_eq!(host(&body).init, None);
        assert_eq!(body.healthcheck, None);
    }

    #[test]
    fn resources_and_process() {
        let spec = ContainerSpec {
            entry_point: Some(vec!["sh".into(), "-c".into()]),
            command: Some(vec!["echo hi".into()]),
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            working_dir: Some("/w".into()),
            user: Some("1000:1000".into()),
            hostname: Some("h".into()),
            cpu_shares: Some(0),
            memory_mib: Some(64),
            memory_reservation_mib: Some(32),
            shm_size_mib: Some(8),
            stop_timeout_secs: Some(7),
            init: true,
            ..base()
        };
        let body = create_body(&spec).unwrap();
        assert_eq!(body.env, Some(vec!["A=1".to_string(), "B=x=y".to_string()]));
        assert_eq!(body.entrypoint, spec.entry_point);
        assert_eq!(body.cmd, spec.command);
        assert_eq!(body.working_dir.as_deref(), Some("/w"));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.hostname.as_deref(), Some("h"));
        assert_eq!(body.stop_timeout, Some(7));
        let h = host(&body);
        assert_eq!(h.cpu_shares, Some(2));
        assert_eq!(h.memory, Some(64 * 1024 * 1024));
        assert_eq!(h.memory_reservation, Some(32 * 1024 * 1024));
        assert_eq!(h.shm_size, Some(8 * 1024 * 1024));
        assert_eq!(h.init, Some(true));
    }

    #[test]
    fn ports() {
        let spec = ContainerSpec {
            ports: vec![
                PortSpec {
                    container_port: 80,
                    host_port: None,
                    protocol: Protocol::Tcp,
                },
                PortSpec {
                    container_port: 80,
                    host_port: Some(8080),
                    protocol: Protocol::Tcp,
                },
                PortSpec {
                    container_port: 53,
                    host_port: Some(0),
                    protocol: Protocol::Udp,
                },
            ],
            ..base()
        };
        let body = create_body(&spec).unwrap();
        assert_eq!(
            body.exposed_ports,
            Some(vec!["80/tcp".to_string(), "53/udp".to_string()])
        );
        let bindings = host(&body).port_bindings.clone().unwrap();
        let ports = |key: &str| -> Vec<String> {
            bindings[key]
                .clone()
                .unwrap()
                .into_iter()
                .map(|b| b.host_port.unwrap())
                .collect()
        };
        assert_eq!(ports("80/tcp"), vec!["".to_string(), "8080".to_string()]);
        assert_eq!(ports("53/udp"), vec!["".to_string()]);
    }

    #[test]
    fn network_modes() {
        for (mode, expected) in [
            (NetworkMode::Host, "host"),
            (NetworkMode::None, "none"),
            (NetworkMode::Container("pause".into()), "container:pause"),
        ] {
            let body = create_body(&ContainerSpec {
                network_mode: mode,
                ..base()
            })
            .unwrap();
            assert_eq!(host(&body).network_mode.as_deref(), Some(expected));
        }
        assert!(matches!(
            create_body(&ContainerSpec {
                network_mode: NetworkMode::Container(String::new()),
                ..base()
            }),
            Err(RuntimeError::InvalidSpec(_))
        ));
    }

    #[test]
    fn fixed_address_on_a_user_network() {
        let spec = ContainerSpec {
            network_mode: NetworkMode::Network("berth-subnet-1".into()),
            ipv4_address: Some("10.0.0.9".into()),
            cgroup_parent: Some("/berth/t1".into()),
            ..base()
        };
        let body = create_body(&spec).unwrap();
        assert_eq!(host(&body).network_mode.as_deref(), Some("berth-subnet-1"));
        assert_eq!(host(&body).cgroup_parent.as_deref(), Some("/berth/t1"));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .unwrap();
        let endpoint = &endpoints["berth-subnet-1"];
        assert_eq!(
            endpoint
                .ipam_config
                .as_ref()
                .and_then(|i| i.ipv4_address.as_deref()),
            Some("10.0.0.9")
        );
        // Anywhere else a fixed address would be silently ignored.
        assert!(matches!(
            create_body(&ContainerSpec {
                ipv4_address: Some("10.0.0.9".into()),
                ..base()
            }),
            Err(RuntimeError::InvalidSpec(_))
        ));
    }

    #[test]
    fn mounts_tmpfs_and_friends() {
        let spec = ContainerSpec {
            mounts: vec![
                Mount {
                    source: "/srv/data".into(),
                    target: "/data".into(),
                    read_only: true,
                },
                Mount {
                    source: "vol1".into(),
                    target: "/v".into(),
                    read_only: false,
                },
                Mount {
                    source: String::new(),
                    target: "/scratch".into(),
                    read_only: false,
                },
            ],
            volumes_from: vec![("a".into(), true), ("b".into(), false)],
            links: vec!["db:database".into()],
            tmpfs: vec![
                Tmpfs {
                    path: "/run".into(),
                    size_mib: 64,
                    options: vec!["noexec".into(), "mode=1777".into()],
                },
                Tmpfs {
                    path: "/t".into(),
                    size_mib: 0,
                    options: vec![],
                },
            ],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 4096,
            }],
            extra_hosts: vec![("db".into(), "10.0.0.2".into())],
            dns_servers: vec!["172.31.0.2".into()],
            dns_search: vec!["ec2.internal".into()],
            sysctls: vec![("net.core.somaxconn".into(), "1024".into())],
            log_driver: Some((
                "json-file".into(),
                BTreeMap::from([("max-size".into(), "1m".into())]),
            )),
            ..base()
        };
        let body = create_body(&spec).unwrap();
        let h = host(&body);
        assert_eq!(
            h.binds,
            Some(vec![
                "/srv/data:/data:ro".to_string(),
                "vol1:/v".to_string()
            ])
        );
        assert_eq!(body.volumes, Some(vec!["/scratch".to_string()]));
        assert_eq!(
            h.volumes_from,
            Some(vec!["a:ro".to_string(), "b:rw".to_string()])
        );
        assert_eq!(h.links, Some(vec!["db:database".to_string()]));
        let tmpfs = h.tmpfs.clone().unwrap();
        assert_eq!(tmpfs["/run"], "size=64m,noexec,mode=1777");
        assert_eq!(tmpfs["/t"], "");
        let ulimit = &h.ulimits.as_ref().unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(1024), Some(4096))
        );
        assert_eq!(h.extra_hosts, Some(vec!["db:10.0.0.2".to_string()]));
        assert_eq!(h.dns, Some(vec!["172.31.0.2".to_string()]));
        assert_eq!(h.dns_search, Some(vec!["ec2.internal".to_string()]));
        assert_eq!(h.sysctls.as_ref().unwrap()["net.core.somaxconn"], "1024");
        let log = h.log_config.as_ref().unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.as_ref().unwrap()["max-size"], "1m");
    }

    #[test]
    fn health_check_in_nanoseconds() {
        let spec = ContainerSpec {
            health_check: Some(HealthCheckSpec {
                command: vec!["CMD-SHELL".into(), "true".into()],
                interval_secs: 1,
                timeout_secs: 2,
                retries: 3,
                start_period_secs: 0,
            }),
            ..base()
        };
        let check = create_body(&spec).unwrap().healthcheck.unwrap();
        assert_eq!(
            check.test,
            Some(vec!["CMD-SHELL".to_string(), "true".to_string()])
        );
        assert_eq!(check.interval, Some(1_000_000_000));
        assert_eq!(check.timeout, Some(2_000_000_000));
        assert_eq!(check.retries, Some(3));
        assert_eq!(check.start_period, None);
    }

    #[test]
    fn rejects_specs_docker_would_misread() {
        let bad = [
            ContainerSpec {
                name: String::new(),
                ..base()
            },
            ContainerSpec {
                env: vec![("A=B".into(), "1".into())],
                ..base()
            },
            ContainerSpec {
                mounts: vec![Mount {
                    source: "/a:b".into(),
                    target: "/c".into(),
                    read_only: false,
                }],
                ..base()
            },
            ContainerSpec {
                mounts: vec![Mount {
                    source: "/a".into(),
                    target: "relative".into(),
                    read_only: false,
                }],
                ..base()
            },
            ContainerSpec {
                mounts: vec![Mount {
                    source: String::new(),
                    target: "/ro".into(),
                    read_only: true,
                }],
                ..base()
            },
            ContainerSpec {
                ports: vec![PortSpec {
                    container_port: 0,
                    host_port: None,
                    protocol: Protocol::Tcp,
                }],
                ..base()
            },
        ];
        for spec in bad {
            assert!(
                matches!(create_body(&spec), Err(RuntimeError::InvalidSpec(_))),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn default_tag() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            with_default_tag("localhost:5000/team/app"),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            with_default_tag("localhost:5000/app:v1"),
            "localhost:5000/app:v1"
        );
        assert_eq!(
            with_default_tag("app@sha256:0123abcd"),
            "app@sha256:0123abcd"
        );
    }

    #[test]
    fn event_actions() {
        assert_eq!(event_action("die"), "die");
        assert_eq!(event_action("health_status: healthy"), "health_status");
        assert_eq!(event_action("exec_start: sh -c true"), "exec_start");
    }

    #[test]
    fn inspect_response_of_docker_20_10() {
        // Trimmed from a real `GET /containers/{id}/json` of Docker 20.10.
        let json = r#"{
            "Id": "abc123",
            "Name": "/web-1",
            "Image": "sha256:deadbeef",
            "State": {
                "Status": "exited", "Running": false, "Paused": false,
                "Restarting": false, "OOMKilled": true, "Dead": false,
                "Pid": 0, "ExitCode": 137, "Error": "",
                "StartedAt": "2026-11-25T09:13:47.123456789Z",
                "FinishedAt": "2026-11-25T09:13:49.5Z",
                "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": []}
            },
            "Config": {
                "Image": "berth-test/busybox:latest",
                "Labels": {"owner": "berth"}
            },
            "NetworkSettings": {
                "IPAddress": "",
                "Ports": {
                    "8080/tcp": [
                        {"HostIp": "0.0.0.0", "HostPort": "49153"},
                        {"HostIp": "::", "HostPort": "49153"}
                    ],
                    "9000/udp": null,
                    "7/sctp": [{"HostIp": "0.0.0.0", "HostPort": "7"}]
                },
                "Networks": {
                    "bridge": {"IPAddress": "172.17.0.2"}
                }
            }
        }"#;
        let response: ContainerInspectResponse = serde_json::from_str(json).unwrap();
        let state = to_state(response);
        assert_eq!(state.id, "abc123");
        assert_eq!(state.name, "web-1");
        assert_eq!(state.image, "berth-test/busybox:latest");
        assert_eq!(state.labels["owner"], "berth");
        assert_eq!(state.status, ContainerStatus::Exited);
        assert_eq!(state.exit_code, Some(137));
        assert!(state.oom_killed);
        assert_eq!(state.error, None);
        assert!(state.started_at.is_some());
        assert!(state.finished_at > state.started_at);
        assert_eq!(state.health, Some(HealthState::Unhealthy));
        assert_eq!(
            state.port_bindings,
            vec![
                PortBinding {
                    container_port: 8080,
                    host_port: 49153,
                    protocol: Protocol::Tcp,
                    host_ip: "0.0.0.0".into()
                },
                PortBinding {
                    container_port: 8080,
                    host_port: 49153,
                    protocol: Protocol::Tcp,
                    host_ip: "::".into()
                },
            ]
        );
        assert_eq!(state.ip_address.as_deref(), Some("172.17.0.2"));
    }

    #[test]
    fn details_of_docker_20_10() {
        let json = r#"{
            "Id": "abc123", "Name": "/web-1",
            "Created": "2026-11-25T09:13:46.5Z",
            "Image": "sha256:deadbeef",
            "State": {"Status": "running"},
            "Config": {"Image": "busybox", "Env": ["A=1", "SECRET=s3cr3t"]},
            "NetworkSettings": {"Networks": {
                "b": {"IPAddress": "10.0.0.3"},
                "a": {"IPAddress": "172.17.0.2"},
                "none": {"IPAddress": ""}
            }}
        }"#;
        let details = to_details(serde_json::from_str(json).unwrap());
        assert_eq!(details.image_id.as_deref(), Some("sha256:deadbeef"));
        assert_eq!(
            details.created_at.as_deref(),
            Some("2026-11-25T09:13:46.5Z")
        );
        assert_eq!(details.env, vec!["A=1", "SECRET=s3cr3t"]);
        assert_eq!(
            details.ip_addresses,
            vec![
                "10.0.0.3".parse::<IpAddr>().unwrap(),
                "172.17.0.2".parse().unwrap()
            ]
        );
        // Secret values stay out of logs.
        let logged = format!("{details:?}");
        assert!(
            logged.contains("SECRET") && !logged.contains("s3cr3t"),
            "{logged}"
        );
    }

    #[test]
    fn created_container_has_no_times_or_exit_code() {
        let json = r#"{
            "Id": "abc", "Name": "/c",
            "State": {"Status": "created", "ExitCode": 0, "Error": "",
                      "StartedAt": "0001-01-01T00:00:00Z",
                      "FinishedAt": "0001-01-01T00:00:00Z"},
            "Config": {"Image": "x"}
        }"#;
        let state = to_state(serde_json::from_str(json).unwrap());
        assert_eq!(state.status, ContainerStatus::Created);
        assert_eq!(state.exit_code, None);
        assert_eq!(state.started_at, None);
        assert_eq!(state.finished_at, None);
        assert_eq!(state.health, None);
        assert_eq!(state.ip_address, None);
    }
}
