//! The `berth` binary: `berth up` runs the all-in-one server.

mod agent;
mod agent_credentials;
mod ca_certificate;
mod cluster;
mod code_deploy;
mod coverage;
mod credentials;
mod dns;
mod exec;
mod gateways;
mod lb_addresses;
mod load_balancing;
mod logs_place;
mod node;
mod private_dir;
mod server;
mod up;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a self-hosted, Amazon-ECS-compatible container platform",
    long_about = "Berth runs clusters, task definitions, tasks and services that the stock aws CLI, \
                  boto3 and the AWS SDKs drive unchanged: point AWS_ENDPOINT_URL at it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Berth all-in-one: API server, embedded store and local runtime.
    Up(UpArgs),
    /// Run one of several Berth servers sharing an etcd and a shared
    /// directory (agents join with `berth agent --server URL1,URL2,…`).
    Server(ServerArgs),
    /// Run an agent: register this host as a container instance of a
    /// cluster and run the tasks placed on it (needs Docker).
    Agent(agent::AgentArgs),
    /// Report what tasks used and cost (vCPU-, GB- and storage GB-seconds,
    /// per second with a one-minute minimum, as Fargate bills), by task,
    /// cluster and service; signed with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
    Usage(usage::UsageArgs),
    /// Run a command in a task's container (the task must have been
    /// started with enableExecuteCommand; needs ecs:ExecuteCommand on it):
    /// `berth exec --cluster C --task T --container N [-i] [-t] -- CMD…`.
    /// Signed with the AWS credentials the aws CLI would use; exits with
    /// the command's exit code.
    Exec(exec::ExecArgs),
    /// Print Berth's local certificate authority (PEM), which signs the
    /// certificates ACM's RequestCertificate issues: trust it with
    /// `curl --cacert` or add it to a trust store.
    CaCertificate(ca_certificate::CaCertificateArgs),
    /// Print, as JSON by service, the operations of the AWS models Berth
    /// serves that it does not implement, each with the reason.
    NotImplemented,
    /// Print the version.
    Version,
}

#[derive(clap::Args, Clone, Debug)]
/// What `berth up` and `berth server` share: the API listener, identity,
/// IAM mode, timers and limits.
pub struct ServeArgs {
    /// Address the API listens on (all AWS APIs and the registry share it).
    #[arg(long, default_value = "127.0.0.1:4566", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The 12-digit AWS account id Berth's resources belong to.
    #[arg(long, default_value = "000000000000", value_name = "ID")]
    pub account_id: String,

    /// The default region printed for clients; requests use the region they are signed for.
    #[arg(long, default_value = "us-east-1", value_name = "REGION")]
    pub region: String,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// How long STOPPED tasks stay describable before they are removed.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub task_retention: u64,

    /// The host:port clients (docker, remote agents) reach the registry's
    /// `/v2/` at; it prefixes every ECR repositoryUri
    /// [default: the listen address, 127.0.0.1 when listening on all addresses].
    #[arg(long, value_name = "HOST:PORT")]
    pub registry_host: Option<String>,

    /// How often log retention policies are enforced (events older than a
    /// group's retention are deleted).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub log_compaction_interval: u64,

    /// `enforce`: callers other than the account's root are held to their
    /// IAM policies; `off`: every authenticated caller may do anything.
    #[arg(long, value_enum, default_value_t = IamMode::Enforce)]
    pub iam: IamMode,

    /// A JSON price table for `berth usage` / `GET /_berth/usage`, by
    /// capacity provider: `{"FARGATE": {"vcpuHour": 0.04048, "gbHour":
    /// 0.004445, "storageGbHour": 0.000111, "freeStorageGb": 20},
    /// "FARGATE_SPOT": {…}}` [default: Fargate's us-east-1 Linux/x86 prices].
    #[arg(long, value_name = "FILE")]
    pub fargate_prices: Option<PathBuf>,

    /// Connections the API listener holds at most; at the limit a new
    /// connection closes the quietest idle one [default: the open-file
    /// limit (raised to its hard limit at start) minus 256].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Time a connection has to send a request's headers, counted from when
    /// it starts waiting for one (so also how long an idle keep-alive
    /// connection stays open).
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub header_timeout: u64,

    /// A connection on which no byte moved for this long is closed.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub stall_timeout: u64,

    /// Time a client has to send a whole API request body.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub body_timeout: u64,

    /// Megabytes that all API request bodies being read may hold at once;
    /// past it requests are refused with 503 until memory frees up.
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub body_budget: usize,

    /// UDP and TCP address of Berth's DNS server, authoritative for Berth's
    /// zones (Cloud Map namespaces, interface names such as
    /// ip-172-31-0-5.ec2.internal); `off` disables it.
    #[arg(long, default_value = "127.0.0.1:8053", value_name = "IP:PORT|off")]
    pub dns_listen: String,

    /// A resolver for the names outside Berth's zones (repeatable; `none`:
    /// answer them REFUSED) [default: the non-loopback nameservers of
    /// /etc/resolv.conf].
    #[arg(long, value_name = "IP[:PORT]")]
    pub dns_upstream: Vec<String>,

    /// How many seconds a deployment's minute lasts: the bake times of ECS
    /// blue/green, linear and canary deployments (bakeTimeInMinutes,
    /// stepBakeTimeInMinutes, canaryBakeTimeInMinutes) count in these
    /// minutes. Keep 60 except to shorten deployments in tests.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub deployment_minute_seconds: u64,

    /// How long a tag pulled through an ECR pull-through cache is served
    /// before the next pull by tag asks the upstream registry again (ECR's
    /// 24 hours). Keep the default except to shorten it in tests.
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
    pub pull_through_refresh_seconds: u64,

    /// A PEM file of certificate authorities (one or more) that upstream
    /// registries of ECR pull-through cache rules may be signed by, besides
    /// the system's (a private registry's own CA).
    #[arg(long, value_name = "FILE")]
    pub pull_through_ca: Option<PathBuf>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Directory for the store, credentials and blobs
    /// [default: $XDG_DATA_HOME/berth or ~/.local/share/berth].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Do not start the in-process agent (the control plane still works;
    /// tasks run only on agents started with `berth agent`).
    #[arg(long)]
    pub no_agent: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// etcd client URLs, comma-separated (e.g.
    /// http://10.0.0.1:2379,http://10.0.0.2:2379); every server of the
    /// installation names the same etcd.
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL,…")]
    pub etcd: Vec<String>,

    /// The prefix of every key this installation keeps in etcd, so several
    /// installations can share one etcd.
    #[arg(long, default_value = "/berth", value_name = "PREFIX")]
    pub etcd_namespace: String,

    /// A directory every server of the installation reaches (NFS or
    /// another shared filesystem): keys and root credentials, registry
    /// blobs and uploads, and the log store.
    #[arg(long, value_name = "DIR")]
    pub shared_dir: PathBuf,

    /// The URL other servers reach this one at (they forward CloudWatch
    /// Logs calls to the leader) [default: http:// + --listen, 127.0.0.1
    /// when listening on all addresses].
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,

    /// This server's name among the installation's servers
    /// [default: the hostname and the listen port].
    #[arg(long, value_name = "NAME")]
    pub server_id: Option<String>,

    /// Seconds a leader keeps the controllers after it stops renewing its
    /// etcd lease (a new leader takes over within about this long).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub leader_ttl: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IamMode {
    Enforce,
    Off,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::NotImplemented => coverage::print(),
        Command::Server(args) => {
            init_logging(&args.serve.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("berth")
                .build()?;
            runtime.block_on(server::run(args))
        }
        Command::Up(args) => {
            init_logging(&args.serve.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("berth")
                .build()?;
            runtime.block_on(up::run(args))
        }
        Command::Usage(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(usage::run(args))
        }
        Command::CaCertificate(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(ca_certificate::run(args))
        }
        Command::Exec(args) => {
            init_logging("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(exec::run(args))
        }
        Command::Agent(args) => {
            init_logging(&args.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("berth-agent")
                .build()?;
            runtime.block_on(agent::run(args))
        }
    }
}

fn init_logging(default: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // hickory-server logs every DNS query at info: only its warnings,
    // unless the filter names it.
    let text = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    if !text.contains("hickory") {
        if let Ok(directive) = "hickory_server=warn".parse() {
            filter = filter.add_directive(directive);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
