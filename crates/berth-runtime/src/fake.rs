//! [`FakeRuntime`]: the [`Runtime`] contract in memory, for tests of what
//! drives a runtime (the agent's task runner, its task endpoint) without
//! Docker. Enabled by the `fake` feature (and in this crate's tests).
//!
//! Containers are records: `create` files one (name `n` gets id `id-n`),
//! `start` marks it running with a process id and (in bridge mode) an
//! address, `stop` marks it exited with code 0. Every image is present
//! unless a test says otherwise. A test can make any call fail
//! ([`FakeRuntime::fail`]), run a hook when a call begins
//! ([`FakeRuntime::on_call`], e.g. to ask for a stop in the middle of a
//! step), read back every call made ([`FakeRuntime::calls`]) and change a
//! container's state behind the caller's back ([`FakeRuntime::exit`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::stream::{self, BoxStream, StreamExt};

use crate::spec::{ContainerSpec, NetworkMode, NetworkSpec, RegistryAuth};
use crate::state::{
    ContainerDetails, ContainerState, ContainerStatus, HealthState, LogLine, RuntimeEvent,
    RuntimeInfo,
};
use crate::{Runtime, RuntimeError};

/// The calls of the [`Runtime`] trait, to fail or watch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    Info,
    ImagePresent,
    Pull,
    Create,
    Start,
    Stop,
    Inspect,
    Details,
    Stats,
    ListOwned,
    Remove,
    CreateVolume,
    RemoveVolume,
    EnsureNetwork,
    RemoveNetwork,
    LoadImage,
}

/// A hook run when a call begins, with the call's target (the container
/// id or name, image, volume or network name).
pub type Hook = Box<dyn Fn(&str) + Send + Sync>;
type SharedHook = Arc<dyn Fn(&str) + Send + Sync>;

struct Failure {
    call: Call,
    /// Only calls whose target contains this.
    target: Option<String>,
    error: RuntimeError,
    /// How many more calls fail (`None`: all of them).
    remaining: Option<u32>,
}

/// One container as the fake keeps it.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub spec: ContainerSpec,
    pub state: ContainerState,
}

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, FakeContainer>,
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    networks: BTreeMap<String, NetworkSpec>,
    missing_images: BTreeSet<String>,
    failures: Vec<Failure>,
    calls: Vec<(Call, String)>,
    stop_timeouts: Vec<Duration>,
    started: u32,
}

/// An in-memory [`Runtime`]; see the module documentation.
#[derive(Default)]
pub struct FakeRuntime {
    inner: Mutex<Inner>,
    hooks: Mutex<Vec<(Call, SharedHook)>>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("containers", &self.lock().containers.len())
            .finish_non_exhaustive()
    }
}

/// The process id the fake gives the `n`th container it starts.
pub const FIRST_PID: u32 = 4242;

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every later `call` (on a target containing `target`, when
    /// given) fail with `error`, `times` times (`None`: until cleared).
    pub fn fail(&self, call: Call, target: Option<&str>, error: RuntimeError, times: Option<u32>) {
        self.lock().failures.push(Failure {
            call,
            target: target.map(str::to_string),
            error,
            remaining: times,
        });
    }

    /// Forgets every failure set with [`FakeRuntime::fail`].
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Runs `hook` whenever `call` begins (before it can fail).
    pub fn on_call(&self, call: Call, hook: Hook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((call, Arc::from(hook)));
    }

    /// Every call made so far with its target, in order.
    pub fn calls(&self) -> Vec<(Call, String)> {
        self.lock().calls.clone()
    }

    /// How many times `call` was made.
    pub fn count(&self, call: Call) -> usize {
        self.lock().calls.iter().filter(|(c, _)| *c == call).count()
    }

    /// The timeouts `stop` was called with, in order.
    pub fn stop_timeouts(&self) -> Vec<Duration> {
        self.lock().stop_timeouts.clone()
    }

    /// Every container, by name.
    pub fn containers(&self) -> Vec<FakeContainer> {
        let mut all: Vec<FakeContainer> = self.lock().containers.values().cloned().collect();
        all.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        all
    }

    /// The container with this id or name.
    pub fn container(&self, id: &str) -> Option<FakeContainer> {
        let inner = self.lock();
        find(&inner, id).and_then(|key| inner.containers.get(&key).cloned())
    }

    /// The names of the volumes that exist.
    pub fn volumes(&self) -> Vec<String> {
        self.lock().volumes.keys().cloned().collect()
    }

    /// The names of the networks that exist.
    pub fn networks(&self) -> Vec<String> {
        self.lock().networks.keys().cloned().collect()
    }

    /// Makes `image` absent (until pulled).
    pub fn remove_image(&self, image: &str) {
        self.lock().missing_images.insert(image.to_string());
    }

    /// Files a container as if it had been created (and started, when
    /// `state.status` says so) earlier, e.g. before an agent restart.
    pub fn insert(&self, spec: ContainerSpec, state: ContainerState) {
        let mut state = state;
        if state.id.is_empty() {
            state.id = format!("id-{}", spec.name);
        }
        if state.name.is_empty() {
            state.name = spec.name.clone();
        }
        self.lock()
            .containers
            .insert(state.id.clone(), FakeContainer { spec, state });
    }

    /// The container's process ends with `exit_code` (`oom` when the
    /// OOM killer ended it), as if on its own.
    pub fn exit(&self, id: &str, exit_code: i64, oom: bool) {
        let mut inner = self.lock();
        if let Some(key) = find(&inner, id) {
            if let Some(c) = inner.containers.get_mut(&key) {
                stopped(&mut c.state, exit_code);
                c.state.oom_killed = oom;
            }
        }
    }

    /// Sets the container's health check status.
    pub fn set_health(&self, id: &str, health: Option<HealthState>) {
        let mut inner = self.lock();
        if let Some(key) = find(&inner, id) {
            if let Some(c) = inner.containers.get_mut(&key) {
                c.state.health = health;
            }
        }
    }

    /// Records the call, runs its hooks, and answers the failure set for
    /// it, if any.
    fn begin(&self, call: Call, target: &str) -> Result<(), RuntimeError> {
        self.lock().calls.push((call, target.to_string()));
        let hooks: Vec<_> = self
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(c, _)| *c == call)
            .map(|(_, h)| h.clone())
            .collect();
        for hook in hooks {
            hook(target);
        }
        let mut inner = self.lock();
        let hit = inner.failures.iter_mut().position(|f| {
            f.call == call
                && f.target.as_deref().is_none_or(|t| target.contains(t))
                && f.remaining != Some(0)
        });
        let Some(i) = hit else { return Ok(()) };
        let failure = &mut inner.failures[i];
        if let Some(n) = failure.remaining.as_mut() {
            *n -= 1;
        }
        Err(failure.error.clone())
    }
}

/// The key of the container with id or name `id`.
fn find(inner: &Inner, id: &str) -> Option<String> {
    if inner.containers.contains_key(id) {
        return Some(id.to_string());
    }
    inner
        .containers
        .iter()
        .find(|(_, c)| c.state.name == id)
        .map(|(k, _)| k.clone())
}

fn stopped(state: &mut ContainerState, exit_code: i64) {
    if matches!(
        state.status,
        ContainerStatus::Exited | ContainerStatus::Dead
    ) {
        return;
    }
    state.status = ContainerStatus::Exited;
    state.exit_code = Some(exit_code);
    state.finished_at = Some(SystemTime::now());
    state.pid = None;
    state.ip_address = None;
    state.port_bindings.clear();
}

fn missing(id: &str) -> RuntimeError {
    RuntimeError::NotFound(id.to_string())
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        self.begin(Call::Info, "")?;
        Ok(RuntimeInfo {
            cpus: 2,
            memory_bytes: 4 << 30,
            os_type: "linux".into(),
            server_version: "fake".into(),
            name: "fake-host".into(),
            cgroup_version: "2".into(),
            cgroup_driver: "cgroupfs".into(),
            ..RuntimeInfo::default()
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        self.begin(Call::ImagePresent, image)?;
        Ok(!self.lock().missing_images.contains(image))
    }

    async fn pull(&self, image: &str, _auth: Option<&RegistryAuth>) -> Result<(), RuntimeError> {
        self.begin(Call::Pull, image)?;
        self.lock().missing_images.remove(image);
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.begin(Call::Create, &spec.name)?;
        let mut inner = self.lock();
        if find(&inner, &spec.name).is_some() {
            return Err(RuntimeError::Conflict(format!(
                "Conflict. The container name \"/{}\" is already in use",
                spec.name
            )));
        }
        if inner.missing_images.contains(&spec.image) {
            return Err(RuntimeError::InvalidSpec(format!(
                "No such image: {}",
                spec.image
            )));
        }
        let id = format!("id-{}", spec.name);
        let state = ContainerState {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            status: ContainerStatus::Created,
            ..ContainerState::default()
        };
        inner.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                state,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.begin(Call::Start, id)?;
        let mut inner = self.lock();
        let key = find(&inner, id).ok_or_else(|| missing(id))?;
        let n = inner.started;
        let Some(c) = inner.containers.get_mut(&key) else {
            return Err(missing(id));
        };
        if c.state.status == ContainerStatus::Running {
            return Ok(());
        }
        c.state.status = ContainerStatus::Running;
        c.state.exit_code = None;
        c.state.finished_at = None;
        c.state.started_at = Some(SystemTime::now());
        c.state.pid = Some(FIRST_PID + n);
        c.state.ip_address = match c.spec.network_mode {
            NetworkMode::Bridge | NetworkMode::Network(_) => Some(
                c.spec
                    .ipv4_address
                    .clone()
                    .unwrap_or_else(|| Ipv4Addr::from(0xac11_0002 + n).to_string()),
            ),
            _ => None,
        };
        inner.started += 1;
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.begin(Call::Stop, id)?;
        let mut inner = self.lock();
        inner.stop_timeouts.push(timeout);
        let key = find(&inner, id).ok_or_else(|| missing(id))?;
        if let Some(c) = inner.containers.get_mut(&key) {
            stopped(&mut c.state, 0);
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        self.begin(Call::Inspect, id)?;
        let inner = self.lock();
        Ok(find(&inner, id).and_then(|key| inner.containers.get(&key).map(|c| c.state.clone())))
    }

    async fn details(&self, id: &str) -> Result<Option<ContainerDetails>, RuntimeError> {
        self.begin(Call::Details, id)?;
        let inner = self.lock();
        let Some(c) = find(&inner, id).and_then(|key| inner.containers.get(&key)) else {
            return Ok(None);
        };
        Ok(Some(ContainerDetails {
            image_id: Some(format!("sha256:{}", c.state.image)),
            created_at: Some("2026-11-30T11:59:00.5Z".into()),
            env: c.spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ip_addresses: c
                .state
                .ip_address
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .into_iter()
                .collect(),
        }))
    }

    async fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        self.begin(Call::Stats, id)?;
        let inner = self.lock();
        let c = find(&inner, id)
            .and_then(|key| inner.containers.get(&key))
            .ok_or_else(|| missing(id))?;
        Ok(serde_json::json!({
            "id": c.state.id,
            "name": format!("/{}", c.state.name),
            "read": "2026-11-30T12:00:00Z",
            "memory_stats": {"usage": 1_048_576},
        }))
    }

    async fn list_owned(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<ContainerState>, RuntimeError> {
        self.begin(Call::ListOwned, label)?;
        let inner = self.lock();
        let mut owned: Vec<ContainerState> = inner
            .containers
            .values()
            .filter(|c| match (c.state.labels.get(label), value) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
            .map(|c| c.state.clone())
            .collect();
        owned.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(owned)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.begin(Call::Remove, id)?;
        let mut inner = self.lock();
        if let Some(key) = find(&inner, id) {
            inner.containers.remove(&key);
        }
        Ok(())
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.begin(Call::CreateVolume, name)?;
        self.lock()
            .volumes
            .entry(name.to_string())
            .or_insert_with(|| labels.clone());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.begin(Call::RemoveVolume, name)?;
        let mut inner = self.lock();
        let in_use = inner
            .containers
            .values()
            .any(|c| c.spec.mounts.iter().any(|m| m.source == name));
        if in_use {
            return Err(RuntimeError::Conflict(format!(
                "remove {name}: volume is in use"
            )));
        }
        inner.volumes.remove(name);
        Ok(())
    }

    async fn logs_tail(&self, id: &str, _lines: usize) -> Result<String, RuntimeError> {
        let inner = self.lock();
        find(&inner, id)
            .map(|_| String::new())
            .ok_or_else(|| missing(id))
    }

    fn log_lines(
        &self,
        _id: &str,
        _since_secs: i64,
        _follow: bool,
    ) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
        stream::empty().boxed()
    }

    fn events(&self, _label: &str) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
        // Callers look again on their own ticks.
        stream::pending().boxed()
    }

    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<String, RuntimeError> {
        self.begin(Call::EnsureNetwork, &spec.name)?;
        self.lock()
            .networks
            .entry(spec.name.clone())
            .or_insert_with(|| spec.clone());
        Ok(format!("net-{}", spec.name))
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.begin(Call::RemoveNetwork, name)?;
        self.lock().networks.remove(name);
        Ok(())
    }

    async fn list_networks(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<String>, RuntimeError> {
        let inner = self.lock();
        Ok(inner
            .networks
            .values()
            .filter(|n| match (n.labels.get(label), value) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
            .map(|n| n.name.clone())
            .collect())
    }

    async fn load_image(&self, _tarball: Vec<u8>) -> Result<(), RuntimeError> {
        self.begin(Call::LoadImage, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "busybox".into(),
            labels: BTreeMap::from([("owner".to_string(), "t1".to_string())]),
            ..ContainerSpec::default()
        }
    }

    #[tokio::test]
    async fn containers_live_and_die_as_in_docker() {
        let fake = FakeRuntime::new();
        let id = fake.create(&spec("web")).await.unwrap();
        assert!(matches!(
            fake.create(&spec("web")).await,
            Err(RuntimeError::Conflict(_))
        ));
        assert_eq!(
            fake.inspect("web").await.unwrap().unwrap().status,
            ContainerStatus::Created
        );
        fake.start(&id).await.unwrap();
        let running = fake.inspect(&id).await.unwrap().unwrap();
        assert_eq!(running.status, ContainerStatus::Running);
        assert_eq!(running.pid, Some(FIRST_PID));
        assert_eq!(running.ip_address.as_deref(), Some("172.17.0.2"));
        let details = fake.details(&id).await.unwrap().unwrap();
        assert_eq!(
            details.ip_addresses,
            vec!["172.17.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(fake.stats(&id).await.unwrap()["id"], "id-web");
        assert_eq!(fake.list_owned("owner", Some("t1")).await.unwrap().len(), 1);
        assert!(fake
            .list_owned("owner", Some("t2"))
            .await
            .unwrap()
            .is_empty());
        fake.stop(&id, Duration::from_secs(3)).await.unwrap();
        let exited = fake.inspect(&id).await.unwrap().unwrap();
        assert_eq!(
            (exited.status, exited.exit_code, exited.pid),
            (ContainerStatus::Exited, Some(0), None)
        );
        fake.remove(&id).await.unwrap();
        fake.remove(&id).await.unwrap();
        assert_eq!(fake.inspect(&id).await.unwrap(), None);
        assert_eq!(fake.details(&id).await.unwrap(), None);
        assert!(matches!(
            fake.stats(&id).await,
            Err(RuntimeError::NotFound(_))
        ));
        assert_eq!(fake.stop_timeouts(), vec![Duration::from_secs(3)]);
    }

    #[tokio::test]
    async fn failures_hooks_and_volumes() {
        let fake = Arc::new(FakeRuntime::new());
        fake.fail(
            Call::Create,
            Some("bad"),
            RuntimeError::InvalidSpec("no".into()),
            Some(1),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        fake.on_call(
            Call::Create,
            Box::new(move |target| log.lock().unwrap().push(target.to_string())),
        );
        assert!(fake.create(&spec("bad")).await.is_err());
        // Once only.
        assert!(fake.create(&spec("bad")).await.is_ok());
        assert!(fake.create(&spec("good")).await.is_ok());
        assert_eq!(*seen.lock().unwrap(), vec!["bad", "bad", "good"]);
        assert_eq!(fake.count(Call::Create), 3);

        fake.create_volume("v1", &BTreeMap::new()).await.unwrap();
        let mut user = spec("user");
        user.mounts.push(crate::Mount {
            source: "v1".into(),
            target: "/v".into(),
            read_only: false,
        });
        fake.create(&user).await.unwrap();
        assert!(matches!(
            fake.remove_volume("v1").await,
            Err(RuntimeError::Conflict(_))
        ));
        fake.remove("user").await.unwrap();
        fake.remove_volume("v1").await.unwrap();
        assert!(fake.volumes().is_empty());

        fake.remove_image("busybox");
        assert!(!fake.image_present("busybox").await.unwrap());
        assert!(fake.create(&spec("new")).await.is_err());
        fake.pull("busybox", None).await.unwrap();
        assert!(fake.image_present("busybox").await.unwrap());
    }
}
