//! `berth agent`, and the agent `berth up` runs in-process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use berth_agent::{Agent, AgentConfig, Credentials};
use berth_runtime::{DockerRuntime, Runtime};

use crate::credentials::RootKeys;

#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// The Berth server to register with, e.g. http://127.0.0.1:4566, or
    /// several servers of one installation separated by commas: the agent
    /// moves to the next when the one it talks to cannot be reached (a DNS
    /// name with several addresses works the same way).
    #[arg(long, value_name = "URL[,URL…]")]
    pub server: String,

    /// The cluster to join (created on demand when it is `default`).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub cluster: String,

    /// This host's stable name; it becomes the container instance's
    /// ec2InstanceId, and registering the same name again returns the same
    /// container instance [default: the host name].
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,

    /// A custom attribute for placement constraints: `key=value`, or `key`
    /// alone. Repeatable.
    #[arg(long = "attribute", value_name = "K=V")]
    pub attributes: Vec<String>,

    /// What this host offers: `ec2` (a container instance of --cluster),
    /// `fargate` (serverless capacity for FARGATE tasks of every cluster,
    /// never listed as a container instance), or `both`.
    #[arg(long, value_enum, default_value = "ec2")]
    pub capacity: CapacityKind,

    /// Where the agent keeps its identity
    /// [default: $XDG_DATA_HOME/berth/agents/<name> or ~/.local/share/berth/agents/<name>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The region the agent signs its requests for.
    #[arg(
        long,
        default_value = "us-east-1",
        env = "AWS_DEFAULT_REGION",
        value_name = "REGION"
    )]
    pub region: String,

    /// A file holding the agent registration token: a copy of the server's
    /// `<data-dir>/agent-token` (or what its BERTH_AGENT_TOKEN says). Without
    /// it, the token comes from the environment variable BERTH_AGENT_TOKEN.
    #[arg(long, value_name = "PATH")]
    pub registration_token_file: Option<PathBuf>,

    /// Account credentials for the first registration, allowed
    /// berth:RegisterAgent on the cluster (afterwards the agent registers
    /// with the credential minted for its container instance).
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub access_key_id: Option<String>,

    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,

    /// CPU units to offer [default: 1024 per core].
    #[arg(long, value_name = "UNITS")]
    pub cpu: Option<i64>,

    /// Memory to offer in MiB [default: the host's memory minus --reserved-memory].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<i64>,

    /// Memory (MiB) kept back for the host when offering its memory.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub reserved_memory: i64,

    /// The ecs.availability-zone attribute [default: <region>a].
    #[arg(long, value_name = "ZONE")]
    pub availability_zone: Option<String>,

    /// The ecs.instance-type attribute.
    #[arg(long, default_value = "berth.local", value_name = "TYPE")]
    pub instance_type: String,

    /// The DNS server (ip:port) this host's tasks use, through the host's
    /// DNS relay on 169.254.170.2:53 [default: the one the server names
    /// when the agent registers, its --dns-listen].
    #[arg(long, value_name = "IP:PORT")]
    pub dns_endpoint: Option<SocketAddr>,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log: String,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "berth-host".to_string())
}

fn parse_attributes(raw: &[String]) -> anyhow::Result<Vec<(String, Option<String>)>> {
    raw.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Some(v.to_string()))),
            None if !a.is_empty() => Ok((a.clone(), None)),
            _ => bail!("--attribute expects key=value or key, got '{a}'"),
        })
        .collect()
}

fn default_agent_dir(name: &str) -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(xdg) => PathBuf::from(xdg),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?)
                .join(".local/share")
        }
    };
    Ok(base.join("berth/agents").join(name))
}

/// The capacity a `berth agent` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CapacityKind {
    Ec2,
    Fargate,
    Both,
}

/// The registration attribute that offers Fargate capacity, if any.
fn capacity_attribute(kind: CapacityKind) -> Option<(String, Option<String>)> {
    let value = match kind {
        CapacityKind::Ec2 => return None,
        CapacityKind::Fargate => berth_ecs::FARGATE_DEDICATED,
        CapacityKind::Both => berth_ecs::FARGATE_SHARED,
    };
    Some((
        berth_ecs::FARGATE_CAPACITY_ATTRIBUTE.to_string(),
        Some(value.to_string()),
    ))
}

/// The environment variable holding the agent registration token, for
/// `berth up` (instead of `<data-dir>/agent-token`) and `berth agent`.
pub const TOKEN_ENV: &str = "BERTH_AGENT_TOKEN";

/// The file `berth up` keeps the agent registration token in.
pub const TOKEN_FILE: &str = "agent-token";

/// Where the server's agent registration token came from.
pub enum TokenOrigin {
    Environment,
    File(PathBuf),
}

/// The agent registration token a server accepts.
pub struct AgentToken {
    pub token: String,
    pub origin: TokenOrigin,
}

fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the agent registration token {}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        bail!(
            "the agent registration token file {} is empty",
            path.display()
        );
    }
    Ok(token)
}

/// The token agents must present to register: BERTH_AGENT_TOKEN, else
/// `<data-dir>/agent-token`, generated (random, mode 0600) on first start.
pub fn load_or_create_token(data_dir: &Path) -> anyhow::Result<AgentToken> {
    if let Some(token) = token_from_env() {
        return Ok(AgentToken {
            token,
            origin: TokenOrigin::Environment,
        });
    }
    let path = data_dir.join(TOKEN_FILE);
    berth_util::private_file::read_or_create_private(&path, || {
        format!("{}\n", berth_util::ids::token(48)).into_bytes()
    })
    .with_context(|| format!("reading or creating {}", path.display()))?;
    Ok(AgentToken {
        token: read_token_file(&path)?,
        origin: TokenOrigin::File(path),
    })
}

/// The token `berth agent` presents: --registration-token-file, else
/// BERTH_AGENT_TOKEN, else none (the server then refuses, saying so).
fn agent_token(args: &AgentArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.registration_token_file {
        return read_token_file(path);
    }
    Ok(token_from_env().unwrap_or_else(|| {
        tracing::warn!("no agent registration token: pass --registration-token-file (a copy of the server's <data-dir>/agent-token) or set {TOKEN_ENV}");
        String::new()
    }))
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    // The agent's identity (its credential) is private to this user.
    crate::private_dir::private_umask();
    let registration_token = agent_token(&args)?;
    let name = args.name.clone().unwrap_or_else(host_name);
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_agent_dir(&name)?,
    };
    let runtime = DockerRuntime::connect()
        .await
        .context("the agent needs Docker: is dockerd running?")?;
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    runtime
        .info()
        .await
        .context("asking Docker about this host")?;
    let config = AgentConfig {
        server: args.server.clone(),
        region: args.region.clone(),
        cluster: args.cluster.clone(),
        name,
        attributes: parse_attributes(&args.attributes)?
            .into_iter()
            .chain(capacity_attribute(args.capacity))
            .collect(),
        data_dir,
        registration: Credentials {
            access_key_id: args.access_key_id.clone().unwrap_or_default(),
            secret_access_key: args.secret_access_key.clone().unwrap_or_default(),
        },
        registration_token,
        cpu: args.cpu,
        memory_mib: args.memory,
        reserved_memory_mib: args.reserved_memory,
        availability_zone: args.availability_zone.clone(),
        instance_type: args.instance_type.clone(),
        dns_endpoint: args.dns_endpoint,
    };
    let agent = Agent::new(config, runtime)?;
    agent.run(crate::up::shutdown_signal()).await?;
    Ok(())
}

/// Starts the agent of `berth up` on the `default` cluster when Docker is
/// reachable; says so clearly when it is not. It registers with the root
/// keys and the registration token, handed over in-process.
pub async fn spawn_local(
    address: SocketAddr,
    region: &str,
    data_dir: &Path,
    root: &RootKeys,
    token: &AgentToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let runtime = match DockerRuntime::connect().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no container runtime is reachable: the API works, but tasks cannot run here until dockerd runs (or start `berth agent` elsewhere); pass --no-agent to silence this");
            return None;
        }
    };
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    if let Err(e) = runtime.info().await {
        tracing::warn!(error = %e, "the container runtime does not answer: the API works, but tasks cannot run here; pass --no-agent to silence this");
        return None;
    }
    let server = if address.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", address.port())
    } else {
        format!("http://{address}")
    };
    let config = AgentConfig {
        server,
        region: region.to_string(),
        cluster: "default".to_string(),
        name: host_name(),
        // `berth up`'s host is both a container instance and Fargate capacity.
        attributes: capacity_attribute(CapacityKind::Both).into_iter().collect(),
        data_dir: data_dir.join("agent"),
        registration: Credentials {
            access_key_id: root.access_key_id.clone(),
            secret_access_key: root.secret_access_key.clone(),
        },
        registration_token: token.token.clone(),
        cpu: None,
        memory_mib: None,
        reserved_memory_mib: 256,
        availability_zone: None,
        instance_type: "berth.local".to_string(),
        // The server's, as it answers the registration.
        dns_endpoint: None,
    };
    let agent = match Agent::new(config, runtime) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "the in-process agent cannot start");
            return None;
        }
    };
    tracing::info!("starting the in-process agent on cluster default");
    Some(tokio::spawn(async move {
        if let Err(e) = agent.run(std::future::pending()).await {
            tracing::error!(error = %e, "the in-process agent stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_generated_once_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        if token_from_env().is_some() {
            return; // BERTH_AGENT_TOKEN set for the whole test run
        }
        let first = load_or_create_token(dir.path()).unwrap();
        let path = dir.path().join(TOKEN_FILE);
        assert!(matches!(&first.origin, TokenOrigin::File(p) if *p == path));
        assert_eq!(first.token.len(), 48);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_token(dir.path()).unwrap();
        assert_eq!(again.token, first.token);
        assert_eq!(read_token_file(&path).unwrap(), first.token);
        std::fs::write(&path, " \n").unwrap();
        assert!(load_or_create_token(dir.path())
            .err()
            .is_some_and(|e| e.to_string().contains("is empty")));
    }
}
