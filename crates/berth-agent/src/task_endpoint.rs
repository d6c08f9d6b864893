//! The task endpoint at `169.254.170.2:80`, as the ECS agent serves it:
//! IAM role credentials for tasks (`/v2/credentials/<id>`, the address in
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`) and the task metadata endpoint
//! (`/v3/<token>` and `/v4/<token>`, with `/task`, `/stats`, `/task/stats`).
//!
//! Every answer is only given to the task's own containers: the request's
//! source address must be one of the task's containers' addresses (for tasks
//! in `host` network mode, a host address; for awsvpc tasks, the interface's
//! address as the host routes it to the task's VPC). Credentials live in
//! memory only.
//!
//! The agents of one host share one endpoint (see [`TaskEndpoint`]): one
//! serves it, the others register their tasks with it over a unix socket
//! only root can use. The serving agent also runs the host's DNS relay on
//! `169.254.170.2:53` ([`crate::dns_relay`]), which sends each task's
//! queries to the Berth DNS server of the agent that registered it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_runtime::{ContainerDetails, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::run_dir::FileLock;
use crate::vpcnet::{self, HostRoutes, IpRouteLookup, NextHop};

/// The link-local address containers reach the endpoint at.
pub const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
pub const ENDPOINT_PORT: u16 = 80;
/// The environment variable naming a task's credentials path.
pub const CREDENTIALS_ENV: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
pub const METADATA_V4_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
pub const METADATA_V3_ENV: &str = "ECS_CONTAINER_METADATA_URI";
const CREDENTIALS_PREFIX: &str = "/v2/credentials/";

/// Temporary credentials of a task's role, as served to its containers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    berth_util::time::format_iso8601(secs)
}

fn iso8601_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    berth_util::time::format_iso8601_nanos(d.as_nanos() as i128)
}

fn iso8601_f64(secs: f64) -> String {
    iso8601_time(UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
}

/// What the endpoint knows about a task (kept up to date by its runner).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The Berth DNS server the host's DNS relay sends the task's queries
    /// to (its agent's; stamped by the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_endpoint: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// Whose task an entry is: this agent's, or one an agent connected to
/// this one's endpoint registered (by connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Local,
    Remote(u64),
}

struct TaskEntry {
    view: TaskView,
    credentials_id: Option<String>,
    credentials: Option<RoleCredentials>,
    owner: Owner,
}

/// A change to the tasks an endpoint serves, as an agent sends it to the
/// agent serving its host's endpoint (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Change {
    #[serde(rename_all = "camelCase")]
    Update { view: Box<TaskView> },
    #[serde(rename_all = "camelCase")]
    Credentials {
        task_arn: String,
        credentials_id: String,
        credentials: RoleCredentials,
    },
    #[serde(rename_all = "camelCase")]
    Remove { task_arn: String },
}

/// What the serving agent tells the agents connected to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerStatus {
    /// Why it cannot serve `169.254.170.2:80`, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    /// Whether the host's DNS relay listens (false from agents that have
    /// none).
    #[serde(default)]
    dns_relay: bool,
}

#[derive(Default)]
struct State {
    tasks: HashMap<String, TaskEntry>,
    by_credentials: HashMap<String, String>,
    /// container token → (task ARN, container name)
    by_token: HashMap<String, (String, String)>,
    /// Where this agent's own changes go while another agent serves the
    /// host's endpoint.
    upstream: Option<mpsc::UnboundedSender<Change>>,
    /// This agent's Berth DNS server, stamped on its tasks' views.
    dns_endpoint: Option<SocketAddr>,
    /// Bumped by every change (the DNS relay's routes are cached per
    /// generation).
    generation: u64,
}

impl State {
    /// Applies a change made by `owner`; false when it names a task that
    /// `owner` has not recorded (credentials for a removed task).
    fn apply(&mut self, change: Change, owner: Owner) -> bool {
        self.generation = self.generation.wrapping_add(1);
        match change {
            Change::Update { view } => {
                let view = *view;
                let arn = view.task_arn.clone();
                if self.tasks.get(&arn).is_some_and(|t| t.owner != owner) {
                    // Another agent's task of that ARN: not this one's to change.
                    return false;
                }
                for c in &view.containers {
                    self.by_token
                        .insert(c.token.clone(), (arn.clone(), c.name.clone()));
                }
                match self.tasks.get_mut(&arn) {
                    Some(entry) => entry.view = view,
                    None => {
                        self.tasks.insert(
                            arn,
                            TaskEntry {
                                view,
                                credentials_id: None,
                                credentials: None,
                                owner,
                            },
                        );
                    }
                }
                true
            }
            Change::Credentials {
                task_arn,
                credentials_id,
                credentials,
            } => {
                let Some(entry) = self.tasks.get_mut(&task_arn).filter(|t| t.owner == owner) else {
                    return false;
                };
                entry.credentials_id = Some(credentials_id.clone());
                entry.credentials = Some(credentials);
                self.by_credentials.insert(credentials_id, task_arn);
                true
            }
            Change::Remove { task_arn } => {
                if !self.tasks.get(&task_arn).is_some_and(|t| t.owner == owner) {
                    return false;
                }
                self.forget(|arn, _| arn == task_arn);
                true
            }
        }
    }

    /// Forgets every task `which` picks.
    fn forget(&mut self, which: impl Fn(&str, &TaskEntry) -> bool) {
        self.generation = self.generation.wrapping_add(1);
        let gone: Vec<String> = self
            .tasks
            .iter()
            .filter(|(arn, t)| which(arn, t))
            .map(|(arn, _)| arn.clone())
            .collect();
        for arn in &gone {
            self.tasks.remove(arn);
        }
        self.by_credentials.retain(|_, t| !gone.contains(t));
        self.by_token.retain(|_, (t, _)| !gone.contains(t));
    }

    /// This agent's own tasks as the changes that record them.
    fn local_changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for entry in self.tasks.values().filter(|t| t.owner == Owner::Local) {
            out.push(Change::Update {
                view: Box::new(entry.view.clone()),
            });
            if let (Some(id), Some(credentials)) = (&entry.credentials_id, &entry.credentials) {
                out.push(Change::Credentials {
                    task_arn: entry.view.task_arn.clone(),
                    credentials_id: id.clone(),
                    credentials: credentials.clone(),
                });
            }
        }
        out
    }
}

/// The state and the routes answering from it (shared by the endpoint,
/// its HTTP server and the connections of other agents).
struct Shared {
    state: RwLock<State>,
    /// Inspects the containers callers claim to be (their addresses), and
    /// answers their stats and details.
    runtime: Arc<dyn Runtime>,
    routes: Arc<dyn HostRoutes>,
    availability_zone: Option<String>,
    /// Whether the host's DNS relay listens (this agent's, or the serving
    /// agent's as it says).
    relay_up: AtomicBool,
    /// Whether the host's DNS relay has listened since this agent started:
    /// when it is down after that, another agent is taking it over.
    relay_seen: AtomicBool,
    /// Recent answers of [`Shared::dns_upstream`]: source → (DNS server,
    /// state generation, when).
    dns_routes: Mutex<HashMap<IpAddr, DnsRoute>>,
}

/// A remembered DNS route: the source's DNS server (none: refused), the
/// state generation it was found in, and when.
type DnsRoute = (Option<SocketAddr>, u64, Instant);

/// How long the DNS relay reuses a source's route (also dropped by any
/// change to the tasks).
const DNS_ROUTE_TTL: Duration = Duration::from_secs(5);
/// Most sources whose routes the relay remembers.
const DNS_ROUTE_CAPACITY: usize = 4096;

/// The endpoint: the routes and the state they answer from.
///
/// Several agents on one host share one endpoint: the first to take
/// `<run dir>/task-endpoint.lock` serves `169.254.170.2:80` and listens on
/// `<run dir>/task-endpoint.sock` (root's only); the others register their
/// tasks (views and credentials) there and keep them current. When the
/// serving agent goes away, its lock is released: another agent takes it
/// over and the rest register again. Each agent keeps its own tasks in
/// memory either way.
pub struct TaskEndpoint {
    shared: Arc<Shared>,
    /// How this agent takes part in serving the host's endpoint.
    role: watch::Receiver<Role>,
    /// The task that takes part (aborted when the endpoint is dropped).
    taking_part: Option<tokio::task::JoinHandle<()>>,
}

/// Where an endpoint stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Deciding whether to serve or to register with another agent.
    Starting,
    /// This agent serves the host's endpoint.
    Serving,
    /// Another agent serves it; this agent's tasks are registered there.
    Registered,
    /// Nobody can serve it: why.
    Unavailable(String),
}

impl Drop for TaskEndpoint {
    fn drop(&mut self) {
        if let Some(task) = self.taking_part.take() {
            task.abort();
        }
    }
}

/// Where the agents of a host meet to share the endpoint, and what the
/// serving agent listens on.
#[derive(Debug, Clone)]
pub struct SharingConfig {
    /// Holds `task-endpoint.lock` and `task-endpoint.sock`.
    pub dir: PathBuf,
    /// `169.254.170.2:80` (tests use another address).
    pub listen: SocketAddr,
    /// Whether the serving agent adds `169.254.170.2` to `lo` first.
    pub add_address: bool,
    /// Where the serving agent runs the host's DNS relay (UDP and TCP):
    /// `169.254.170.2:53`; none runs without.
    pub dns_listen: Option<SocketAddr>,
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            dir: PathBuf::from(crate::run_dir::RUN_DIR),
            listen: SocketAddr::from((ENDPOINT_IP, ENDPOINT_PORT)),
            add_address: true,
            dns_listen: Some(SocketAddr::from((ENDPOINT_IP, vpcnet::DNS_PORT))),
        }
    }
}

impl SharingConfig {
    fn lock_path(&self) -> PathBuf {
        self.dir.join("task-endpoint.lock")
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.join("task-endpoint.sock")
    }
}

/// An answer: HTTP status and JSON body.
pub type Answer = (u16, Value);

fn error(status: u16, code: &str, message: &str) -> Answer {
    (status, json!({"code": code, "message": message}))
}

impl TaskEndpoint {
    fn with_role(runtime: Arc<dyn Runtime>, availability_zone: Option<String>, role: Role) -> Self {
        let (_, receiver) = watch::channel(role);
        TaskEndpoint {
            shared: Arc::new(Shared {
                state: RwLock::default(),
                runtime,
                routes: Arc::new(IpRouteLookup),
                availability_zone,
                relay_up: AtomicBool::new(false),
                relay_seen: AtomicBool::new(false),
                dns_routes: Mutex::new(HashMap::new()),
            }),
            role: receiver,
            taking_part: None,
        }
    }

    /// An endpoint that does not listen (the task credentials of tasks with
    /// a role cannot be served: such tasks fail to start).
    pub fn unavailable(why: impl Into<String>, runtime: Arc<dyn Runtime>) -> Self {
        Self::with_role(runtime, None, Role::Unavailable(why.into()))
    }

    /// An endpoint whose routes answer (for callers that serve it
    /// themselves, and tests).
    pub fn new(runtime: Arc<dyn Runtime>, availability_zone: Option<String>) -> Self {
        Self::with_role(runtime, availability_zone, Role::Serving)
    }

    /// Asks `routes` how the host routes task addresses (tests).
    pub fn with_host_routes(mut self, routes: Arc<dyn HostRoutes>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.routes = routes;
        }
        self
    }

    /// Serves the host's endpoint on `169.254.170.2:80` (adding the
    /// address to `lo` when missing), or registers with the agent of this
    /// host that serves it. When neither works the endpoint is unavailable
    /// (logged).
    pub async fn start(runtime: Arc<dyn Runtime>, availability_zone: Option<String>) -> Arc<Self> {
        Self::start_shared(SharingConfig::default(), runtime, availability_zone).await
    }

    /// [`TaskEndpoint::start`] with the meeting place and address of
    /// `config`. Answers once the endpoint knows its role (or after a few
    /// seconds).
    pub async fn start_shared(
        config: SharingConfig,
        runtime: Arc<dyn Runtime>,
        availability_zone: Option<String>,
    ) -> Arc<Self> {
        let mut endpoint = Self::with_role(runtime, availability_zone, Role::Starting);
        let (sender, receiver) = watch::channel(Role::Starting);
        endpoint.role = receiver.clone();
        endpoint.taking_part = Some(tokio::spawn(take_part(
            endpoint.shared.clone(),
            config,
            sender,
        )));
        let mut receiver = receiver;
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            receiver.wait_for(|r| *r != Role::Starting),
        )
        .await;
        Arc::new(endpoint)
    }

    /// Ok when the endpoint serves this agent's tasks (itself, or through
    /// the agent of this host that serves it); otherwise why not.
    pub fn available(&self) -> Result<(), String> {
        match &*self.role.borrow() {
            Role::Serving | Role::Registered => Ok(()),
            Role::Starting => Err("the task endpoint is starting".into()),
            Role::Unavailable(why) => Err(why.clone()),
        }
    }

    /// Whether this agent serves the host's endpoint itself (rather than
    /// through another agent).
    pub fn serving(&self) -> bool {
        *self.role.borrow() == Role::Serving
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared.write()
    }

    /// Applies this agent's own change, and passes it on to the agent that
    /// serves the host's endpoint when that is another agent.
    fn change(&self, mut change: Change) -> bool {
        let mut state = self.write();
        if let Change::Update { view } = &mut change {
            view.dns_endpoint = state.dns_endpoint;
        }
        if let Some(upstream) = &state.upstream {
            // A closed channel means the connection just went; the next
            // one starts from the whole state.
            let _ = upstream.send(change.clone());
        }
        state.apply(change, Owner::Local)
    }

    /// Sends the DNS queries of this agent's tasks (relayed by the host's
    /// DNS relay) to `endpoint`, this agent's Berth DNS server; None: the
    /// relay refuses them.
    pub fn set_dns_endpoint(&self, endpoint: Option<SocketAddr>) {
        let views: Vec<TaskView> = {
            let mut state = self.write();
            if state.dns_endpoint == endpoint {
                return;
            }
            state.dns_endpoint = endpoint;
            state
                .tasks
                .values()
                .filter(|t| t.owner == Owner::Local)
                .map(|t| t.view.clone())
                .collect()
        };
        for view in views {
            self.update_task(view);
        }
    }

    /// The address of the host's DNS relay when this agent's tasks can use
    /// it: the relay listens (here or at the agent serving the endpoint)
    /// and this agent knows its Berth DNS server.
    pub fn dns_relay(&self) -> Option<Ipv4Addr> {
        let known = self.shared.read().dns_endpoint.is_some();
        let up = self.shared.relay_up.load(Ordering::SeqCst)
            && matches!(*self.role.borrow(), Role::Serving | Role::Registered);
        (known && up).then_some(ENDPOINT_IP)
    }

    /// [`TaskEndpoint::dns_relay`], waiting up to `wait` while the host's
    /// relay, seen listening before, is down: its agent went away and another
    /// is taking it over (a few hundred milliseconds, or one 2 s retry). A
    /// container created in that gap would keep Docker's DNS for its life.
    pub async fn dns_relay_within(&self, wait: Duration) -> Option<Ipv4Addr> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(relay) = self.dns_relay() {
                return Some(relay);
            }
            let expected = self.shared.relay_seen.load(Ordering::SeqCst)
                && self.shared.read().dns_endpoint.is_some()
                && !matches!(*self.role.borrow(), Role::Unavailable(_));
            if !expected || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the DNS relay sends the queries of `source` (tests).
    #[cfg(test)]
    pub(crate) async fn dns_upstream(&self, source: IpAddr) -> Option<SocketAddr> {
        self.shared.dns_upstream(source).await
    }

    /// Records or updates a task (its containers' tokens included).
    pub fn update_task(&self, view: TaskView) {
        self.change(Change::Update {
            view: Box::new(view),
        });
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
        self.change(Change::Credentials {
            task_arn: task_arn.to_string(),
            credentials_id: credentials_id.to_string(),
            credentials,
        })
    }

    /// Whether the endpoint holds the task (tests).
    #[cfg(test)]
    pub(crate) fn knows(&self, task_arn: &str) -> bool {
        self.shared.read().tasks.contains_key(task_arn)
    }

    /// Forgets the task: its credentials and metadata are no longer served.
    pub fn remove_task(&self, task_arn: &str) {
        self.change(Change::Remove {
            task_arn: task_arn.to_string(),
        });
    }

    /// Answers a GET of `path` from `source` (for this agent's tasks and,
    /// when it serves the host's endpoint, those of the agents registered
    /// with it).
    pub async fn route(&self, path: &str, source: IpAddr) -> Answer {
        self.shared.route(path, source).await
    }
}

impl Shared {
    fn set_relay_up(&self, up: bool) {
        self.relay_up.store(up, Ordering::SeqCst);
        if up {
            self.relay_seen.store(true, Ordering::SeqCst);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The container's details, when it can be inspected.
    async fn details(&self, id: &str) -> Option<ContainerDetails> {
        match self.runtime.details(id).await {
            Ok(details) => details,
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "inspecting a container failed");
                None
            }
        }
    }

    /// Whether `source` may read the task's answers.
    async fn allowed(&self, view: &TaskView, source: IpAddr) -> bool {
        if view.network_mode == "host" {
            // Host-network containers share the host's addresses.
            return source.is_loopback() || source == IpAddr::V4(ENDPOINT_IP);
        }
        if view.network_mode == "awsvpc" {
            return self.is_interface_caller(view, source).await;
        }
        if view.containers.iter().any(|c| c.ip_address == Some(source)) {
            return true;
        }
        // A container that just started may ask before its runner has seen
        // its address: look again.
        for c in &view.containers {
            let Some(id) = &c.docker_id else { continue };
            if let Some(details) = self.details(id).await {
                if details.ip_addresses.contains(&source) {
                    return true;
                }
            }
        }
        tracing::debug!(%source, task = %view.task_arn, "task endpoint refused a caller that is not one of the task's containers");
        false
    }

    /// An awsvpc task's containers share its interface's address; VPCs
    /// may share blocks, so the address must also be the one the host
    /// routes to the task's own VPC (to its router; a Docker network of
    /// an earlier version is on the host's link).
    async fn is_interface_caller(&self, view: &TaskView, source: IpAddr) -> bool {
        let Some(eni) = &view.interface else {
            return false;
        };
        let Ok(address) = eni.private_ip.parse::<Ipv4Addr>() else {
            return false;
        };
        if source != IpAddr::V4(address) {
            tracing::debug!(%source, task = %view.task_arn, "task endpoint refused a caller that is not the task's interface");
            return false;
        }
        let routed = match self.routes.next_hop(address).await {
            NextHop::OnLink => true,
            NextHop::Unroutable => false,
            NextHop::Via(hop) => match vpcnet::router_of(eni) {
                Some(router) => self
                    .details(&router)
                    .await
                    .is_some_and(|r| r.ip_addresses.contains(&IpAddr::V4(hop))),
                None => false,
            },
        };
        if !routed {
            tracing::debug!(%source, task = %view.task_arn, "task endpoint refused a caller: the host routes its address to another VPC");
        }
        routed
    }

    /// The Berth DNS server for queries from `source`: that of the task
    /// the address is, remembered briefly.
    async fn dns_upstream(&self, source: IpAddr) -> Option<SocketAddr> {
        let generation = self.read().generation;
        let cached = {
            let routes = self.dns_routes.lock().unwrap_or_else(|e| e.into_inner());
            routes
                .get(&source)
                .filter(|(_, g, at)| *g == generation && at.elapsed() < DNS_ROUTE_TTL)
                .map(|(upstream, _, _)| *upstream)
        };
        if let Some(upstream) = cached {
            return upstream;
        }
        let found = self.find_dns_upstream(source).await;
        let mut routes = self.dns_routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.len() >= DNS_ROUTE_CAPACITY {
            routes.retain(|_, (_, g, at)| *g == generation && at.elapsed() < DNS_ROUTE_TTL);
            if routes.len() >= DNS_ROUTE_CAPACITY {
                routes.clear();
            }
        }
        routes.insert(source, (found, generation, Instant::now()));
        found
    }

    async fn find_dns_upstream(&self, source: IpAddr) -> Option<SocketAddr> {
        // Tasks recorded with that address, and bridge tasks with a
        // container whose address the runner has not seen yet.
        let (recorded, unseen) = {
            let state = self.read();
            let mut recorded = Vec::new();
            let mut unseen = Vec::new();
            for view in state.tasks.values().map(|t| &t.view) {
                if view.dns_endpoint.is_none()
                    || matches!(view.network_mode.as_str(), "host" | "none")
                {
                    continue;
                }
                if records_address(view, source) {
                    recorded.push(view.clone());
                } else if view.network_mode != "awsvpc"
                    && view
                        .containers
                        .iter()
                        .any(|c| c.docker_id.is_some() && c.ip_address.is_none())
                {
                    unseen.push(view.clone());
                }
            }
            (recorded, unseen)
        };
        let servers: BTreeSet<SocketAddr> =
            recorded.iter().filter_map(|v| v.dns_endpoint).collect();
        if servers.len() == 1 {
            return servers.into_iter().next();
        }
        if servers.len() > 1 {
            // Tasks of several installations share the address (VPCs with
            // the same block): the one the host routes it to.
            for view in &recorded {
                if self.allowed(view, source).await {
                    return view.dns_endpoint;
                }
            }
            return None;
        }
        for view in &unseen {
            if self.allowed(view, source).await {
                return view.dns_endpoint;
            }
        }
        None
    }

    /// Answers a GET of `path` from `source`.
    async fn route(&self, path: &str, source: IpAddr) -> Answer {
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
                Some(id) => match self.runtime.stats(id).await {
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
                    let stats = self.runtime.stats(id).await.unwrap_or(Value::Null);
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
            Some(id) => self.details(id).await,
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

/// Whether the task is recorded with address `source` (its interface's,
/// or one of its containers').
fn records_address(view: &TaskView, source: IpAddr) -> bool {
    if view.network_mode == "awsvpc" {
        return view
            .interface
            .as_ref()
            .and_then(|eni| eni.private_ip.parse::<IpAddr>().ok())
            == Some(source);
    }
    view.containers.iter().any(|c| c.ip_address == Some(source))
}

#[async_trait::async_trait]
impl crate::dns_relay::Upstreams for Shared {
    async fn upstream(&self, source: IpAddr) -> Option<SocketAddr> {
        self.dns_upstream(source).await
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
    shared_router(endpoint.shared.clone())
}

fn shared_router(shared: Arc<Shared>) -> axum::Router {
    use axum::extract::{ConnectInfo, State};
    use axum::http::{StatusCode, Uri};
    async fn handle(
        State(shared): State<Arc<Shared>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        method: axum::http::Method,
        uri: Uri,
    ) -> (StatusCode, axum::Json<Value>) {
        let (status, body) = if method == axum::http::Method::GET {
            shared.route(uri.path(), peer.ip()).await
        } else {
            error(405, "MethodNotAllowed", "Only GET is supported")
        };
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
    }
    axum::Router::new().fallback(handle).with_state(shared)
}

/// How long an agent waits before trying again to serve or to register.
const RETRY: Duration = Duration::from_millis(200);
/// Longest line an agent may send (a task's view with its credentials is
/// a few KiB).
const MAX_LINE: usize = 1 << 20;

/// Takes part in serving the host's endpoint until aborted: serves it when
/// this agent holds the lock, otherwise registers this agent's tasks with
/// the agent that does, and starts over whenever that agent goes away.
async fn take_part(shared: Arc<Shared>, config: SharingConfig, role: watch::Sender<Role>) {
    let mut last_failure: Option<String> = None;
    loop {
        let lock = tokio::task::spawn_blocking({
            let path = config.lock_path();
            move || FileLock::try_acquire(&path)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match lock {
            Ok(Some(lock)) => {
                let why = serve(&shared, &config, &role).await;
                shared.relay_up.store(false, Ordering::SeqCst);
                drop(lock);
                tracing::warn!(error = %why, "stopped serving the task endpoint");
                role.send_replace(Role::Unavailable(why));
                tokio::time::sleep(RETRY).await;
            }
            Ok(None) => match UnixStream::connect(config.socket_path()).await {
                Ok(stream) => {
                    last_failure = None;
                    register(&shared, stream, &role).await;
                    tracing::info!("the agent serving this host's task endpoint went away");
                    // Never a busy loop, whatever the other side does.
                    tokio::time::sleep(RETRY / 4).await;
                }
                // The serving agent is starting, or just went away.
                Err(_) => tokio::time::sleep(RETRY).await,
            },
            Err(e) => {
                let why = format!("cannot use {}: {e}", config.dir.display());
                if last_failure.as_deref() != Some(why.as_str()) {
                    tracing::warn!(error = %why, "the task endpoint (IAM roles for tasks, task metadata) is unavailable: tasks with a taskRoleArn cannot start on this host");
                    last_failure = Some(why.clone());
                }
                role.send_replace(Role::Unavailable(why));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Serves the endpoint and the other agents' registrations (this agent
/// holds the lock); answers why it stopped.
async fn serve(shared: &Arc<Shared>, config: &SharingConfig, role: &watch::Sender<Role>) -> String {
    // Tasks of agents registered with a previous holder are theirs to
    // register again.
    {
        let mut state = shared.write();
        state.forget(|_, t| t.owner != Owner::Local);
        state.upstream = None;
    }
    // The HTTP side first, so the agents that register learn at once
    // whether their tasks are served.
    let mut first = Some(listen_http(config).await);
    let (status, _) = watch::channel(ServerStatus {
        unavailable: match &first {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        },
        dns_relay: false,
    });
    let socket = config.socket_path();
    let _ = std::fs::remove_file(&socket);
    let agents = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => return format!("cannot listen on {}: {e}", socket.display()),
    };
    if let Err(e) = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)) {
        return format!("cannot restrict {}: {e}", socket.display());
    }
    let mut connections = tokio::task::JoinSet::new();
    let accept_agents = async {
        let mut next = 0u64;
        loop {
            let (stream, _) = match agents.accept().await {
                Ok(c) => c,
                Err(e) => return format!("accepting agents on {}: {e}", socket.display()),
            };
            if !peer_is_trusted(&stream) {
                tracing::warn!(
                    "refused a connection to the task endpoint's socket from another user"
                );
                continue;
            }
            next += 1;
            connections.spawn(serve_agent(
                shared.clone(),
                stream,
                next,
                status.subscribe(),
            ));
            // Finished connections are reaped as new ones come.
            while connections.try_join_next().is_some() {}
        }
    };
    let listen = async {
        // Retried until it works: agents stay registered meanwhile, and
        // learn why their tasks are not served.
        let mut failures = 0;
        loop {
            let attempt = match first.take() {
                Some(attempt) => attempt,
                None => listen_http(config).await,
            };
            match attempt {
                Ok(listener) => {
                    failures = 0;
                    status.send_modify(|s| s.unavailable = None);
                    role.send_replace(Role::Serving);
                    tracing::info!(address = %config.listen, "serving task credentials and metadata for this host's agents");
                    let service = shared_router(shared.clone())
                        .into_make_service_with_connect_info::<SocketAddr>();
                    if let Err(e) = axum::serve(listener, service).await {
                        tracing::warn!(error = %e, "the task endpoint stopped; starting it again");
                    }
                }
                Err(why) => {
                    if *role.borrow() != Role::Unavailable(why.clone()) {
                        tracing::warn!(error = %why, "the task endpoint (IAM roles for tasks, task metadata) is unavailable: tasks with a taskRoleArn cannot start on this host");
                    }
                    status.send_modify(|s| s.unavailable = Some(why.clone()));
                    role.send_replace(Role::Unavailable(why));
                    failures += 1;
                }
            }
            tokio::time::sleep(rebind_delay(failures)).await;
        }
    };
    let relay = async {
        let Some(address) = config.dns_listen else {
            return std::future::pending().await;
        };
        let mut last_failure: Option<String> = None;
        let mut failures = 0;
        loop {
            match listen_dns(config, address).await {
                Ok((udp, tcp)) => {
                    last_failure = None;
                    failures = 0;
                    shared.set_relay_up(true);
                    status.send_modify(|s| s.dns_relay = true);
                    tracing::info!(%address, "relaying the DNS of this host's tasks to their Berth DNS servers");
                    let relay = Arc::new(crate::dns_relay::Relay::new(shared.clone()));
                    tokio::select! {
                        _ = relay.clone().serve_udp(udp) => {}
                        _ = relay.serve_tcp(tcp) => {}
                    }
                    shared.relay_up.store(false, Ordering::SeqCst);
                    status.send_modify(|s| s.dns_relay = false);
                }
                Err(why) => {
                    if last_failure.as_deref() != Some(why.as_str()) {
                        tracing::warn!(error = %why, "the host's DNS relay is unavailable: tasks keep Docker's DNS settings");
                        last_failure = Some(why);
                    }
                    failures += 1;
                }
            }
            tokio::time::sleep(rebind_delay(failures)).await;
        }
    };
    tokio::select! {
        why = accept_agents => why,
        never = listen => never,
        never = relay => never,
    }
}

/// How long to wait before binding again after `failures` failures in a
/// row: soon at first (an agent that just died may not have closed its
/// sockets when its lock was released), then every 2 s.
fn rebind_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(5)).min(Duration::from_secs(2))
}

/// Binds the DNS relay's UDP socket and TCP listener on `address` (adding
/// the endpoint's address when configured to).
async fn listen_dns(
    config: &SharingConfig,
    address: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), String> {
    if config.add_address {
        ensure_address().await?;
    }
    let udp = tokio::net::UdpSocket::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}/udp: {e}"))?;
    let tcp = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}/tcp: {e}"))?;
    Ok((udp, tcp))
}

/// Adds the address when configured to, and listens.
async fn listen_http(config: &SharingConfig) -> Result<tokio::net::TcpListener, String> {
    if config.add_address {
        ensure_address().await?;
    }
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))
}

/// Only root (or this agent's own user) may register tasks.
fn peer_is_trusted(stream: &UnixStream) -> bool {
    let own = std::fs::metadata("/proc/self").map(|m| m.uid());
    match (stream.peer_cred(), own) {
        (Ok(peer), Ok(own)) => peer.uid() == 0 || peer.uid() == own,
        _ => false,
    }
}

/// Applies what one registered agent sends until it goes; its tasks go
/// with it. Tells it whether the endpoint is served.
async fn serve_agent(
    shared: Arc<Shared>,
    stream: UnixStream,
    connection: u64,
    mut status: watch::Receiver<ServerStatus>,
) {
    let (reader, mut writer) = stream.into_split();
    let owner = Owner::Remote(connection);
    let tell = async move {
        loop {
            let text = serde_json::to_string(&*status.borrow_and_update()).unwrap_or_default();
            if writer
                .write_all(format!("{text}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    };
    let listen = async {
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        while let Ok(true) = read_line(&mut reader, &mut line).await {
            match serde_json::from_str::<Change>(&line) {
                Ok(change) => {
                    shared.write().apply(change, owner);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an agent sent the task endpoint something unreadable; closing its connection");
                    return;
                }
            }
        }
    };
    // Either side ending ends the connection.
    tokio::select! {
        _ = tell => {}
        _ = listen => {}
    }
    shared.write().forget(|_, t| t.owner == owner);
}

/// Reads one line of at most [`MAX_LINE`] bytes; false at the end.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> std::io::Result<bool> {
    let mut bytes = Vec::new();
    let mut limited = reader.take(MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut bytes).await?;
    if n == 0 {
        return Ok(false);
    }
    if bytes.len() > MAX_LINE || !bytes.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long or cut short",
        ));
    }
    *line = String::from_utf8(bytes).map_err(std::io::Error::other)?;
    Ok(true)
}

/// Registers this agent's tasks with the agent serving the host's endpoint
/// and keeps them current until that agent goes away.
async fn register(shared: &Arc<Shared>, stream: UnixStream, role: &watch::Sender<Role>) {
    let (reader, mut writer) = stream.into_split();
    let (sender, mut changes) = mpsc::unbounded_channel();
    // Under the lock: every change before this is in the snapshot, every
    // later one goes through the channel.
    let snapshot = {
        let mut state = shared.write();
        state.upstream = Some(sender);
        state.local_changes()
    };
    let forward = async {
        for change in snapshot {
            if send(&mut writer, &change).await.is_err() {
                return;
            }
        }
        while let Some(change) = changes.recv().await {
            if send(&mut writer, &change).await.is_err() {
                return;
            }
        }
    };
    let listen = async {
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        while let Ok(true) = read_line(&mut reader, &mut line).await {
            let status = serde_json::from_str::<ServerStatus>(&line);
            if let Ok(status) = &status {
                shared.set_relay_up(status.dns_relay);
            }
            match status {
                Ok(ServerStatus {
                    unavailable: None, ..
                }) => {
                    if *role.borrow() != Role::Registered {
                        tracing::info!("another agent serves this host's task endpoint; this agent's tasks are registered with it");
                    }
                    role.send_replace(Role::Registered);
                }
                Ok(ServerStatus {
                    unavailable: Some(why),
                    ..
                }) => {
                    role.send_replace(Role::Unavailable(why));
                }
                Err(_) => return,
            }
        }
    };
    // Either side ending means the serving agent went away.
    tokio::select! {
        _ = forward => {}
        _ = listen => {}
    }
    shared.write().upstream = None;
    shared.relay_up.store(false, Ordering::SeqCst);
}

async fn send(writer: &mut OwnedWriteHalf, change: &Change) -> std::io::Result<()> {
    let mut text = serde_json::to_string(change).map_err(std::io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes()).await
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

    use berth_runtime::fake::FakeRuntime;
    use berth_runtime::{ContainerSpec, ContainerState, ContainerStatus};

    /// A runtime running containers `(id, address)` (by id; an address a
    /// fresh inspect reports).
    fn runtime(containers: &[(&str, Option<&str>)]) -> Arc<FakeRuntime> {
        let fake = FakeRuntime::new();
        for (id, address) in containers {
            fake.insert(
                ContainerSpec {
                    name: (*id).into(),
                    image: "busybox".into(),
                    ..ContainerSpec::default()
                },
                ContainerState {
                    id: (*id).into(),
                    status: ContainerStatus::Running,
                    image: "busybox".into(),
                    ip_address: address.map(str::to_string),
                    ..ContainerState::default()
                },
            );
        }
        Arc::new(fake)
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
            dns_endpoint: None,
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
        let e = TaskEndpoint::new(
            runtime(&[("c1", None), ("c2", None), ("c3", Some("172.17.0.9"))]),
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
        assert_eq!(c["ImageID"], "sha256:busybox");
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
        let e = TaskEndpoint::new(runtime(&[]), None);
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

    /// Routes every address through one next hop.
    struct FixedRoute(std::sync::Mutex<vpcnet::NextHop>);

    #[async_trait::async_trait]
    impl HostRoutes for FixedRoute {
        async fn next_hop(&self, _: Ipv4Addr) -> vpcnet::NextHop {
            *self.0.lock().unwrap()
        }
    }

    fn awsvpc_view(arn: &str, vpc: &str, address: &str) -> TaskView {
        let mut v = view(arn, &[("app", &format!("tok-{arn}"), "c9", None)]);
        v.network_mode = "awsvpc".into();
        v.interface = Some(berth_model::agent_protocol::TaskNetworkInterface {
            eni_id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            subnet_cidr: "172.31.0.0/20".into(),
            gateway: "172.31.0.1".into(),
            private_ip: address.into(),
            mac: "02:00:00:00:00:04".into(),
            vpc_id: vpc.into(),
            vpc_cidr: "172.31.0.0/16".into(),
        });
        v
    }

    #[tokio::test]
    async fn awsvpc_tasks_answer_their_address_as_routed_to_their_vpc() {
        // The routers of VPCs a and b, on the uplink.
        let routers = runtime(&[
            ("berth-vpc-vpc-a", Some("172.18.0.2")),
            ("berth-vpc-vpc-b", Some("172.18.0.3")),
        ]);
        let hop = Arc::new(FixedRoute(std::sync::Mutex::new(vpcnet::NextHop::Via(
            "172.18.0.2".parse().unwrap(),
        ))));
        let e = TaskEndpoint::new(routers, None).with_host_routes(hop.clone());
        // Two VPCs with the same block: both tasks have 172.31.0.4.
        e.update_task(awsvpc_view("arn:a", "vpc-a", "172.31.0.4"));
        e.update_task(awsvpc_view("arn:b", "vpc-b", "172.31.0.4"));
        assert!(e.set_credentials("arn:a", "cred-a", credentials("ASIAA")));
        assert!(e.set_credentials("arn:b", "cred-b", credentials("ASIAB")));
        let from = ip("172.31.0.4");
        // The host routes 172.31.0.4 to VPC a's router: a's task is the
        // caller, b's cannot be.
        assert_eq!(e.route("/v2/credentials/cred-a", from).await.0, 200);
        assert_eq!(e.route("/v2/credentials/cred-b", from).await.0, 400);
        assert_eq!(e.route("/v4/tok-arn:a", from).await.0, 200);
        assert_eq!(e.route("/v4/tok-arn:b", from).await.0, 404);
        // Another address of the subnet is not the task.
        assert_eq!(
            e.route("/v2/credentials/cred-a", ip("172.31.0.5")).await.0,
            400
        );
        // Once the block is routed to b (a's tasks are gone), b answers.
        *hop.0.lock().unwrap() = vpcnet::NextHop::Via("172.18.0.3".parse().unwrap());
        assert_eq!(e.route("/v2/credentials/cred-a", from).await.0, 400);
        assert_eq!(e.route("/v2/credentials/cred-b", from).await.0, 200);
        // Routed nowhere, or elsewhere: nobody.
        *hop.0.lock().unwrap() = vpcnet::NextHop::Unroutable;
        assert_eq!(e.route("/v2/credentials/cred-b", from).await.0, 400);
        *hop.0.lock().unwrap() = vpcnet::NextHop::Via("192.0.2.1".parse().unwrap());
        assert_eq!(e.route("/v2/credentials/cred-b", from).await.0, 400);
        // On the host's link (a Docker network of an earlier version).
        *hop.0.lock().unwrap() = vpcnet::NextHop::OnLink;
        assert_eq!(e.route("/v2/credentials/cred-a", from).await.0, 200);
    }

    fn sharing(dir: &std::path::Path, port: u16) -> SharingConfig {
        SharingConfig {
            dir: dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            add_address: false,
            dns_listen: None,
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn idle_runtime() -> Arc<dyn Runtime> {
        runtime(&[])
    }

    /// Waits (bounded) until `check` holds.
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// A GET over TCP (the way a container asks), answering the status.
    async fn http_status(port: u16, path: &str) -> Option<u16> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn host_view(arn: &str) -> TaskView {
        let mut v = view(arn, &[("app", &format!("tok-{arn}"), "h", None)]);
        v.network_mode = "host".into();
        v
    }

    #[tokio::test]
    async fn agents_of_one_host_share_the_endpoint_and_take_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = sharing(&dir.path().join("run"), port);
        let first = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        assert!(first.serving());
        let second = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        let third = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        // Both registered with the first: they offer task roles too.
        for e in [&second, &third] {
            assert!(!e.serving());
            assert_eq!(e.available(), Ok(()));
        }
        let socket = config.socket_path();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&config.dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        // Each agent's task, with its own credentials. Host-network tasks
        // answer loopback callers, so the test can ask over TCP.
        first.update_task(host_view("arn:1"));
        assert!(first.set_credentials("arn:1", "cred-1", credentials("ASIA1")));
        second.update_task(host_view("arn:2"));
        assert!(second.set_credentials("arn:2", "cred-2", credentials("ASIA2")));
        third.update_task(view("arn:3", &[("app", "tok-3", "c3", Some("172.17.0.3"))]));
        assert!(third.set_credentials("arn:3", "cred-3", credentials("ASIA3")));
        eventually("the second agent's task to be served", || async {
            http_status(port, "/v2/credentials/cred-2").await == Some(200)
        })
        .await;
        assert_eq!(http_status(port, "/v2/credentials/cred-1").await, Some(200));
        eventually("the third agent's task to be served", || async {
            first
                .route("/v2/credentials/cred-3", ip("172.17.0.3"))
                .await
                .0
                == 200
        })
        .await;
        let (_, body) = first
            .route("/v2/credentials/cred-3", ip("172.17.0.3"))
            .await;
        assert_eq!(body["AccessKeyId"], "ASIA3");
        // Only to that task's own containers.
        assert_eq!(http_status(port, "/v2/credentials/cred-3").await, Some(400));
        assert_eq!(
            first
                .route("/v2/credentials/cred-2", ip("172.17.0.3"))
                .await
                .0,
            400
        );
        // Refreshed credentials reach the serving agent too.
        assert!(second.set_credentials("arn:2", "cred-2", credentials("ASIA2B")));
        eventually("refreshed credentials", || async {
            first
                .route("/v2/credentials/cred-2", ip("127.0.0.1"))
                .await
                .1["AccessKeyId"]
                == "ASIA2B"
        })
        .await;
        // A task removed by its agent is no longer served.
        second.remove_task("arn:2");
        eventually("the removed task to be gone", || async {
            http_status(port, "/v2/credentials/cred-2").await == Some(400)
        })
        .await;
        second.update_task(host_view("arn:2"));
        assert!(second.set_credentials("arn:2", "cred-2", credentials("ASIA2C")));

        // The serving agent goes: one of the others takes over, the other
        // registers again, and the first agent's tasks are gone.
        drop(first);
        eventually("another agent to serve", || async {
            second.serving() || third.serving()
        })
        .await;
        let (server, other) = if second.serving() {
            (&second, &third)
        } else {
            (&third, &second)
        };
        eventually("the other agent to register again", || async {
            other.available().is_ok()
                && server
                    .route("/v2/credentials/cred-3", ip("172.17.0.3"))
                    .await
                    .0
                    == 200
                && http_status(port, "/v2/credentials/cred-2").await == Some(200)
        })
        .await;
        assert_eq!(http_status(port, "/v2/credentials/cred-1").await, Some(400));
        let (_, body) = server
            .route("/v2/credentials/cred-2", ip("127.0.0.1"))
            .await;
        assert_eq!(body["AccessKeyId"], "ASIA2C");
    }

    #[tokio::test]
    async fn an_endpoint_that_cannot_listen_tells_the_agents_registered_with_it() {
        let dir = tempfile::tempdir().unwrap();
        // Something else holds the port.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let config = sharing(&dir.path().join("run"), port);
        let first = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        let why = first.available().unwrap_err();
        assert!(why.contains("cannot listen on 127.0.0.1"), "{why}");
        let second = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        assert_eq!(second.available().unwrap_err(), why);
        // Once the port is free, both offer task roles.
        drop(taken);
        eventually("the endpoint to listen", || async {
            first.available().is_ok() && second.available().is_ok()
        })
        .await;
        assert!(first.serving() && !second.serving());
    }

    #[tokio::test]
    async fn a_container_waits_for_a_relay_that_is_being_taken_over() {
        let e = Arc::new(TaskEndpoint::new(runtime(&[]), None));
        let wait = Duration::from_secs(5);
        // Never seen listening (or no DNS server known): no wait.
        let started = std::time::Instant::now();
        assert_eq!(e.dns_relay_within(wait).await, None);
        e.set_dns_endpoint(Some("127.0.0.1:8053".parse().unwrap()));
        assert_eq!(e.dns_relay_within(wait).await, None);
        assert!(started.elapsed() < Duration::from_secs(1));
        e.shared.set_relay_up(true);
        assert_eq!(e.dns_relay_within(wait).await, Some(ENDPOINT_IP));
        // Down after it was seen: waits until it is back.
        e.shared.set_relay_up(false);
        let back = tokio::spawn({
            let e = e.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                e.shared.set_relay_up(true);
            }
        });
        assert_eq!(e.dns_relay_within(wait).await, Some(ENDPOINT_IP));
        back.await.unwrap();
        // ... but not forever.
        e.shared.set_relay_up(false);
        let started = std::time::Instant::now();
        assert_eq!(e.dns_relay_within(Duration::from_millis(200)).await, None);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(rebind_delay(0), Duration::from_millis(100));
        assert_eq!(rebind_delay(1), Duration::from_millis(200));
        assert_eq!(rebind_delay(9), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_dns_relay_routes_each_task_to_its_agents_dns_server() {
        let a: SocketAddr = "127.0.0.1:8053".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9053".parse().unwrap();
        let routers = runtime(&[
            ("c1", None),
            ("c3", Some("172.17.0.9")),
            ("berth-vpc-vpc-a", Some("172.18.0.2")),
            ("berth-vpc-vpc-b", Some("172.18.0.3")),
        ]);
        let hop = Arc::new(FixedRoute(std::sync::Mutex::new(vpcnet::NextHop::Via(
            "172.18.0.3".parse().unwrap(),
        ))));
        let e = TaskEndpoint::new(routers, None).with_host_routes(hop.clone());
        // Recorded before this agent knows its DNS server: stamped later.
        e.update_task(view(
            "arn:bridge",
            &[
                ("app", "tok-app", "c1", Some("172.17.0.2")),
                ("side", "tok-side", "c3", None),
            ],
        ));
        assert_eq!(e.dns_upstream(ip("172.17.0.2")).await, None);
        e.set_dns_endpoint(Some(a));
        e.update_task(awsvpc_view("arn:vpc-a", "vpc-a", "172.31.0.4"));
        e.update_task(host_view("arn:host"));
        // Another agent's tasks (registered with this one), with its own
        // DNS server: a bridge task, and an awsvpc task of a VPC with the
        // same block as this agent's.
        let mut other = view("arn:other", &[("app", "tok-o", "c9", Some("172.17.0.5"))]);
        other.dns_endpoint = Some(b);
        let mut other_vpc = awsvpc_view("arn:vpc-b", "vpc-b", "172.31.0.4");
        other_vpc.dns_endpoint = Some(b);
        {
            let mut state = e.shared.write();
            for v in [other, other_vpc] {
                assert!(state.apply(Change::Update { view: Box::new(v) }, Owner::Remote(1)));
            }
        }
        assert_eq!(e.dns_upstream(ip("172.17.0.2")).await, Some(a));
        assert_eq!(e.dns_upstream(ip("172.17.0.5")).await, Some(b));
        // A container whose address the runner has not seen yet.
        assert_eq!(e.dns_upstream(ip("172.17.0.9")).await, Some(a));
        // Strangers, and host-network tasks (their queries come from the
        // host's own addresses, which no task owns).
        assert_eq!(e.dns_upstream(ip("10.0.0.1")).await, None);
        assert_eq!(e.dns_upstream(ip("127.0.0.1")).await, None);
        // 172.31.0.4 is a task of both VPCs: the one the host routes it to.
        assert_eq!(e.dns_upstream(ip("172.31.0.4")).await, Some(b));
        *hop.0.lock().unwrap() = vpcnet::NextHop::Via("172.18.0.2".parse().unwrap());
        // Remembered until a change or a few seconds.
        assert_eq!(e.dns_upstream(ip("172.31.0.4")).await, Some(b));
        e.remove_task("arn:host");
        assert_eq!(e.dns_upstream(ip("172.31.0.4")).await, Some(a));
        // Without a DNS server, this agent's tasks are refused.
        e.set_dns_endpoint(None);
        assert_eq!(e.dns_upstream(ip("172.17.0.2")).await, None);
        assert_eq!(e.dns_upstream(ip("172.17.0.5")).await, Some(b));
        // Bounded memory: the routes of many sources stay capped.
        for i in 0..(DNS_ROUTE_CAPACITY as u32 + 10) {
            e.dns_upstream(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                .await;
        }
        assert!(e.shared.dns_routes.lock().unwrap().len() <= DNS_ROUTE_CAPACITY);
    }

    #[tokio::test]
    async fn the_serving_agent_relays_dns_for_every_agent_of_the_host() {
        use crate::dns_relay::testing::{a_records, query, upstream};
        use hickory_proto::op::ResponseCode;
        let dir = tempfile::tempdir().unwrap();
        let dns_port = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let relay = SocketAddr::from(([127, 0, 0, 1], dns_port));
        let config = SharingConfig {
            dns_listen: Some(relay),
            ..sharing(&dir.path().join("run"), free_port())
        };
        let first = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        let second = TaskEndpoint::start_shared(config.clone(), idle_runtime(), None).await;
        // Each agent's own Berth DNS server.
        first.set_dns_endpoint(Some(upstream("10.0.0.1".parse().unwrap()).await));
        second.set_dns_endpoint(Some(upstream("10.0.0.2".parse().unwrap()).await));
        eventually("the relay to be up for both agents", || async {
            first.dns_relay().is_some() && second.dns_relay().is_some()
        })
        .await;
        assert_eq!(first.dns_relay(), Some(ENDPOINT_IP));
        // Their tasks' containers, at loopback addresses the test can send
        // from.
        first.update_task(view("arn:1", &[("app", "tok-1", "x1", Some("127.0.0.2"))]));
        second.update_task(view("arn:2", &[("app", "tok-2", "x2", Some("127.0.0.3"))]));
        let ask = |from: &'static str| async move {
            let client = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
            client
                .send_to(&query(99, "api.corp.local."), relay)
                .await
                .unwrap();
            let mut buffer = vec![0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buffer)).await {
                Ok(Ok(n)) => Some(a_records(&buffer[..n])),
                _ => None,
            }
        };
        eventually("the second agent's task to be relayed", || async {
            ask("127.0.0.3")
                .await
                .is_some_and(|(_, ips)| ips == ["10.0.0.2".parse::<Ipv4Addr>().unwrap()])
        })
        .await;
        let (code, ips) = ask("127.0.0.2").await.unwrap();
        assert_eq!(
            (code, ips),
            (ResponseCode::NoError, vec!["10.0.0.1".parse().unwrap()])
        );
        let (code, ips) = ask("127.0.0.4").await.unwrap();
        assert_eq!((code, ips.len()), (ResponseCode::Refused, 0));
        // The serving agent goes: the other takes the relay over.
        drop(first);
        eventually("the second agent to relay", || async {
            second.serving()
                && ask("127.0.0.3")
                    .await
                    .is_some_and(|(_, ips)| ips == ["10.0.0.2".parse::<Ipv4Addr>().unwrap()])
        })
        .await;
        assert_eq!(
            ask("127.0.0.2").await.map(|r| r.0),
            Some(ResponseCode::Refused)
        );
    }

    #[test]
    fn changes_travel_as_json_lines() {
        let change = Change::Credentials {
            task_arn: "arn:t".into(),
            credentials_id: "id".into(),
            credentials: credentials("ASIA"),
        };
        let text = serde_json::to_string(&change).unwrap();
        assert!(
            text.starts_with(r#"{"op":"credentials","taskArn":"arn:t""#),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
        let mut state = State::default();
        // Credentials for a task nobody recorded are refused.
        assert!(!state.apply(change.clone(), Owner::Remote(1)));
        assert!(state.apply(
            Change::Update {
                view: Box::new(host_view("arn:t"))
            },
            Owner::Remote(1)
        ));
        // Another agent cannot change or remove it.
        assert!(!state.apply(change.clone(), Owner::Remote(2)));
        assert!(!state.apply(
            Change::Remove {
                task_arn: "arn:t".into()
            },
            Owner::Remote(2)
        ));
        assert!(!state.apply(
            Change::Update {
                view: Box::new(host_view("arn:t"))
            },
            Owner::Local
        ));
        assert!(state.apply(change, Owner::Remote(1)));
        assert!(state.local_changes().is_empty());
        state.forget(|_, t| t.owner == Owner::Remote(1));
        assert!(
            state.tasks.is_empty() && state.by_credentials.is_empty() && state.by_token.is_empty()
        );
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
