//! What the tasks on an instance use: every task not yet STOPPED (and not
//! being reclaimed), from every earlier call, read from the instance's own
//! `instance-tasks/` entries.
//!
//! Architecture invariant: every placement (RunTask, StartTask, the service
//! controller, Fargate) sees an instance through [`Usage`], so CPU, memory,
//! ports, custom resources and task groups of placed tasks count the same
//! way everywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use berth_model::AwsError;
use berth_store::ReadView;
use bytes::Bytes;

use crate::state::index::{self, Held};
use crate::state::keys::Scope;
use crate::state::tasks::{TaskRecord, TaskStatus};

/// What the tasks on one instance use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub ports_tcp: BTreeSet<u16>,
    pub ports_udp: BTreeSet<u16>,
    pub running: u32,
    pub pending: u32,
    /// Tasks not yet STOPPED by task group (spread, distinctInstance,
    /// `task:group`).
    pub groups: BTreeMap<String, u32>,
    /// Custom integer resources (GPU …) the tasks reserve.
    pub custom: BTreeMap<String, i64>,
}

impl Usage {
    /// Counts what a task holds.
    pub(crate) fn add_held(&mut self, held: &Held) {
        let r = &held.reservation;
        self.cpu += r.cpu;
        self.memory += r.memory;
        self.ports_tcp.extend(r.ports_tcp.iter().copied());
        self.ports_udp.extend(r.ports_udp.iter().copied());
        for (name, amount) in &r.custom {
            *self.custom.entry(name.clone()).or_insert(0) += amount;
        }
        if !held.group.is_empty() {
            *self.groups.entry(held.group.clone()).or_insert(0) += 1;
        }
        match held.status() {
            TaskStatus::Running => self.running += 1,
            s if s.is_pending() => self.pending += 1,
            _ => {}
        }
    }

    /// Counts a task, unless it holds nothing (STOPPED or reclaimed).
    pub(crate) fn add(&mut self, record: &TaskRecord) {
        if let Some(held) = Held::of(record) {
            self.add_held(&held);
        }
    }
}

/// Usages computed from instances' entries, by the key of the instance's
/// entries version, with that key's revision and value when computed.
type Cache = HashMap<String, (u64, Bytes, Usage)>;

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// More instances than one server runs: past this the cache starts over.
const CACHE_LIMIT: usize = 100_000;

/// Usage of one instance (its EC2 tasks and the Fargate tasks it hosts for
/// any cluster), from its own entries only. Kept in memory until the
/// instance's entries change (their version key moves), so placing a task
/// on a cluster reads each instance's entries once per change, not once
/// per call.
pub(crate) fn usage_of_instance(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    instance_id: &str,
) -> Result<Usage, AwsError> {
    let version_key = scope.instance_tasks_version(cluster, instance_id);
    let version = view.get(&version_key);
    if let Some(v) = &version {
        if let Some((revision, value, usage)) = cache().get(&version_key) {
            if *revision == v.mod_revision && *value == v.value {
                return Ok(usage.clone());
            }
        }
    }
    let mut usage = Usage::default();
    index::held(view, scope, cluster, instance_id, |held| {
        usage.add_held(held)
    })?;
    if let Some(v) = version {
        let mut cache = cache();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(version_key, (v.mod_revision, v.value, usage.clone()));
    }
    Ok(usage)
}
