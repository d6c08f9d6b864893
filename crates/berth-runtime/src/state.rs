//! What the runtime reports back: host information, container state, events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::spec::Protocol;

/// The host as the runtime sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub os_type: String,
    pub kernel_version: String,
    pub server_version: String,
    /// the host name
    pub name: String,
    /// `1` or `2` (Docker's `CgroupVersion`; empty when not reported)
    pub cgroup_version: String,
    /// `cgroupfs` or `systemd`
    pub cgroup_driver: String,
}

/// Docker's container lifecycle states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ContainerStatus {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    Removing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    Starting,
    Healthy,
    Unhealthy,
}

/// A published port as actually bound on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBinding {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
    /// `0.0.0.0`, `::` or a specific address
    pub host_ip: String,
}

/// One container as the runtime sees it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    /// without Docker's leading '/'
    pub name: String,
    /// the image reference the container was created from (not its digest)
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub status: ContainerStatus,
    /// Some only once exited
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// docker State.Error when non-empty (e.g. why a start failed)
    pub error: Option<String>,
    /// None until the container has started
    pub started_at: Option<SystemTime>,
    /// None until the container has exited. Docker stamps `started_at` once
    /// the start call returns, so for a container that exits at once it can
    /// be slightly later than `finished_at`.
    pub finished_at: Option<SystemTime>,
    /// None when the container has no health check
    pub health: Option<HealthState>,
    /// actual bindings (dynamic ports resolved), sorted; Docker lists IPv4
    /// and IPv6 bindings of the same port separately
    pub port_bindings: Vec<PortBinding>,
    /// the address on its first network (by network name); None in host or
    /// none network mode and while the container is not running
    pub ip_address: Option<String>,
    /// the host PID of the container's main process while it runs (to
    /// enter its namespaces)
    pub pid: Option<u32>,
}

/// Something happened to a container the subscriber owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuntimeEvent {
    /// a container with the filter label changed: "start", "die", "health_status", "oom", "destroy", ...
    Container { id: String, action: String },
}

/// One line (one runtime log message) of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the runtime received it, in nanoseconds since the Unix epoch.
    pub nanos: i64,
    pub stderr: bool,
    /// The bytes as written, with the trailing newline when there was one.
    pub text: Vec<u8>,
}

/// What an inspect tells beyond [`ContainerState`]: the task metadata
/// endpoint serves it, and a restarted agent reads a container's
/// environment back from it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    /// The image the container runs, by content (`sha256:…`).
    pub image_id: Option<String>,
    /// When the container was created, as the runtime reports it (RFC 3339).
    pub created_at: Option<String>,
    /// `NAME=value` entries (values may be secrets: never logged).
    pub env: Vec<String>,
    /// Its addresses on every network it is attached to.
    pub ip_addresses: Vec<IpAddr>,
}

// Hand-written so that logging details never prints a secret value.
impl std::fmt::Debug for ContainerDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .env
            .iter()
            .map(|e| e.split_once('=').map_or(e.as_str(), |(name, _)| name))
            .collect();
        f.debug_struct("ContainerDetails")
            .field("image_id", &self.image_id)
            .field("created_at", &self.created_at)
            .field("env", &names)
            .field("ip_addresses", &self.ip_addresses)
            .finish()
    }
}
