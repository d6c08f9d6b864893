//! What the agent asks the runtime to create: an ECS container definition
//! after the agent has resolved it (names, volumes, secrets, ports).

use std::collections::BTreeMap;

/// Credentials for a private registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub server_address: String,
}

// Hand-written so that logging a spec or an error context never prints a
// password.
impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server_address", &self.server_address)
            .finish()
    }
}

/// The network namespace a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    #[default]
    Bridge,
    Host,
    None,
    /// share another container's network namespace (docker `container:<id>`)
    Container(String),
    /// join a user-defined network by name (e.g. an awsvpc task's subnet
    /// network), optionally at a fixed address (see
    /// [`ContainerSpec::ipv4_address`])
    Network(String),
}

/// A bridge network (the agent's uplink between the host and its VPC
/// routers, for example).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// IPv4 CIDR block, e.g. `172.31.0.0/20`; empty: the runtime picks a
    /// free one
    pub subnet: String,
    /// the address the host takes on the bridge (empty with `subnet`)
    pub gateway: String,
    pub labels: BTreeMap<String, String>,
    /// driver options, e.g. `com.docker.network.bridge.enable_icc`
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The suffix Docker uses in port keys such as `8080/tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A container port to publish on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub container_port: u16,
    /// None or Some(0) = docker picks a free host port
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

/// A volume or host directory mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    /// host path (starts with '/') or docker volume name; empty = a fresh
    /// anonymous volume, removed with the container
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tmpfs {
    pub path: String,
    /// 0 = no explicit size (the kernel's default, half of RAM)
    pub size_mib: u64,
    /// mount options such as `noexec` or `mode=1777`
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// A container health check, in the ECS form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckSpec {
    /// ECS form: ["CMD-SHELL", "..."] or ["CMD", "exe", ...]; pass through to docker Test
    pub command: Vec<String>,
    /// 0 = the runtime's default (30 s) for this and the other durations
    pub interval_secs: u64,
    pub timeout_secs: u64,
    /// 0 = the runtime's default (3)
    pub retries: u32,
    pub start_period_secs: u64,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// docker container name (unique)
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// docker CpuShares (ECS container cpu units); values below 2 become 2,
    /// as the ECS agent does, since Docker reads 0 as "default" (1024)
    pub cpu_shares: Option<u64>,
    /// hard limit (docker Memory), MiB
    pub memory_mib: Option<u64>,
    /// soft limit (docker MemoryReservation), MiB
    pub memory_reservation_mib: Option<u64>,
    pub network_mode: NetworkMode,
    pub ports: Vec<PortSpec>,
    pub mounts: Vec<Mount>,
    /// (container name or id, read_only)
    pub volumes_from: Vec<(String, bool)>,
    /// `name` or `name:alias`
    pub links: Vec<String>,
    pub ulimits: Vec<Ulimit>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// run an init process (docker-init) as PID 1
    pub init: bool,
    pub shm_size_mib: Option<u64>,
    pub tmpfs: Vec<Tmpfs>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub dns_servers: Vec<String>,
    /// search domains of the container's `resolv.conf` (docker DnsSearch)
    pub dns_search: Vec<String>,
    /// (hostname, ip address)
    pub extra_hosts: Vec<(String, String)>,
    pub docker_security_options: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    /// grace period used when the container is stopped other than through
    /// [`crate::Runtime::stop`] (e.g. by `docker stop`)
    pub stop_timeout_secs: Option<u64>,
    pub health_check: Option<HealthCheckSpec>,
    /// (driver, options)
    pub log_driver: Option<(String, BTreeMap<String, String>)>,
    /// fixed IPv4 address on the [`NetworkMode::Network`] network
    pub ipv4_address: Option<String>,
    /// the cgroup (cgroupfs path such as `/berth/<task>`, or a systemd
    /// slice) the container's own cgroup is created under
    pub cgroup_parent: Option<String>,
}
