//! `EtcdStore`: the `Store` contract on etcd v3, for several Berth servers
//! sharing one state.
//!
//! - **Reads are served from memory**: at open the store lists its namespace
//!   and then follows it with one etcd watch (as Kubernetes' informers and
//!   kine do), so `get`/`range` cost what they cost on SQLite.
//! - **Mutations are etcd transactions with compare-and-swap**: a batch of
//!   mutations is evaluated against the cache (as the SQLite writer does),
//!   and written in one transaction that also bumps a sequence key
//!   (`<namespace>//\0seq`) and compares that key's mod revision with the one
//!   the cache had: any write by any server in between makes the compare
//!   fail, and the batch is evaluated again once the cache caught up. A
//!   mutation's reads therefore never go stale, exactly as with the single
//!   SQLite writer. The call is answered once the watch has delivered the
//!   write, so a server reads its own writes.
//! - **Revisions are etcd's**: monotonic across every server (with gaps where
//!   other namespaces wrote). A Berth watch resumes from any revision etcd
//!   still holds, from the in-memory ring or, further back, from etcd's
//!   own history; below etcd's compaction it answers `Compacted`.
//! - **Namespaces**: every key is stored as `<namespace>/<key>` (whether or
//!   not the Berth key starts with `/`), so several installations can share
//!   one etcd and every key lies in the range the store lists and watches.
//!
//! etcd must accept transactions as large as Berth's largest mutation: run
//! it with `--max-txn-ops 10000 --max-request-bytes 16777216`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch as tokio_watch};

use crate::etcd_client::{b64, int, range_end, unb64, EtcdClient};
use crate::memory::{count_map, range_map, KeyMap};
use crate::sqlite::evaluate;
use crate::watch::{self, EventSource};
use crate::{Event, EventKind, KeyValue, MutationFn, ReadView, Revision, Store, StoreError, Watch};

/// Where and how to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prefix of every key this installation stores, e.g. `/berth`.
    pub namespace: String,
    /// Events kept in memory for watchers that resume.
    pub retain_events: usize,
    /// Mutations committed by one transaction at most.
    pub max_batch: usize,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            namespace: "/berth".to_string(),
            retain_events: 100_000,
            max_batch: 64,
        }
    }
}

/// The key every mutation bumps, inside the namespace's range.
const SEQUENCE_KEY: &str = "/\u{0}seq";
/// Keys listed per page when loading the namespace.
const PAGE: u64 = 2000;

struct WriteRequest {
    mutation: MutationFn,
    reply: oneshot::Sender<Result<Option<Revision>, StoreError>>,
}

pub(crate) struct Shared {
    namespace: String,
    client: EtcdClient,
    map: RwLock<KeyMap>,
    /// The etcd revision the cache reflects.
    revision: AtomicU64,
    /// Mod revision of the sequence key in the cache.
    sequence: AtomicU64,
    /// Below this, history must come from etcd itself.
    ring_start: AtomicU64,
    /// etcd's compaction horizon as last seen.
    compact_revision: AtomicU64,
    history: Mutex<VecDeque<Event>>,
    retain_events: usize,
    events: broadcast::Sender<Arc<[Event]>>,
    /// Routes committed batches to watchers.
    hub: Arc<watch::WatchHub>,
    applied: tokio_watch::Sender<Revision>,
}

/// The store on etcd.
pub struct EtcdStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<mpsc::UnboundedSender<WriteRequest>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    fn etcd_key(&self, key: &str) -> Vec<u8> {
        // The separator is always added: a Berth key without a leading `/`
        // (e.g. `ec2/…`) must still fall inside `range_bounds`.
        format!("{}/{key}", self.namespace).into_bytes()
    }

    fn range_bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}/", self.namespace).into_bytes();
        let end = range_end(&start);
        (start, end)
    }

    /// A Berth key from an etcd key of this namespace.
    fn berth_key(&self, raw: &[u8]) -> Option<String> {
        let text = String::from_utf8(raw.to_vec()).ok()?;
        text.strip_prefix(&self.namespace)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    fn key_value(&self, kv: &Value) -> Result<Option<KeyValue>, StoreError> {
        let raw = unb64(kv.get("key").and_then(Value::as_str).unwrap_or(""))?;
        let Some(key) = self.berth_key(&raw) else {
            return Ok(None);
        };
        let value = unb64(kv.get("value").and_then(Value::as_str).unwrap_or(""))?;
        Ok(Some(KeyValue {
            key,
            value: Bytes::from(value),
            create_revision: int(kv, "create_revision"),
            mod_revision: int(kv, "mod_revision"),
            version: int(kv, "version"),
        }))
    }

    /// Lists the whole namespace at one revision.
    async fn list(&self) -> Result<(KeyMap, Revision, Revision), StoreError> {
        let (start, end) = self.range_bounds();
        let mut map = KeyMap::new();
        let mut sequence = 0;
        let mut key = start.clone();
        let mut at = 0;
        loop {
            let page = self.client.range(&key, &end, at, PAGE).await?;
            if at == 0 {
                at = int(page.get("header").unwrap_or(&Value::Null), "revision");
            }
            let kvs = page
                .get("kvs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut last = None;
            for kv in &kvs {
                if let Some(entry) = self.key_value(kv)? {
                    last = Some(self.etcd_key(&entry.key));
                    if entry.key == SEQUENCE_KEY {
                        sequence = entry.mod_revision;
                    } else {
                        map.insert(entry.key.clone(), entry);
                    }
                }
            }
            let more = page.get("more").and_then(Value::as_bool).unwrap_or(false);
            match (more, last) {
                (true, Some(mut last)) => {
                    last.push(0);
                    key = last;
                }
                _ => break,
            }
        }
        Ok((map, at, sequence))
    }

    /// Converts one watch response's events; the sequence key's moves are
    /// returned apart.
    fn events_of(&self, result: &Value) -> Result<(Vec<Event>, Option<Revision>), StoreError> {
        let mut out = Vec::new();
        let mut sequence = None;
        for event in result
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = match event.get("type").and_then(Value::as_str) {
                Some("DELETE") => EventKind::Delete,
                _ => EventKind::Put,
            };
            let Some(kv) = event.get("kv") else { continue };
            let Some(mut entry) = self.key_value(kv)? else {
                continue;
            };
            if entry.key == SEQUENCE_KEY {
                sequence = Some(entry.mod_revision);
                continue;
            }
            if kind == EventKind::Delete {
                entry.value = Bytes::new();
                entry.version = 0;
            }
            out.push(Event { kind, kv: entry });
        }
        Ok((out, sequence))
    }

    /// Applies events (in order) to the cache and publishes them.
    fn apply(&self, events: Vec<Event>, sequence: Option<Revision>, revision: Revision) {
        {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            // The sequence moves with the map it describes (writers read
            // both under this lock).
            if let Some(sequence) = sequence {
                self.sequence.fetch_max(sequence, Ordering::AcqRel);
            }
            for event in &events {
                match event.kind {
                    EventKind::Put => {
                        map.insert(event.kv.key.clone(), event.kv.clone());
                    }
                    EventKind::Delete => {
                        map.remove(&event.kv.key);
                    }
                }
            }
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.extend(events.iter().cloned());
            while history.len() > self.retain_events {
                if let Some(dropped) = history.pop_front() {
                    self.ring_start
                        .fetch_max(dropped.kv.mod_revision, Ordering::AcqRel);
                }
            }
        }
        self.revision.fetch_max(revision, Ordering::AcqRel);
        if !events.is_empty() {
            let _ = self.events.send(Arc::from(events));
        }
        self.applied
            .send_replace(self.revision.load(Ordering::Acquire));
    }

    /// Waits until the cache saw the sequence key move past `sequence`
    /// (another server's write, which made a transaction's compare fail).
    async fn wait_sequence_after(&self, sequence: Revision) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.sequence.load(Ordering::Acquire) <= sequence {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Replaces the cache after the watch lost its place (etcd compacted
    /// past it): publishes the difference as events at the new revision so
    /// live watchers stay consistent.
    fn replace(&self, map: KeyMap, revision: Revision, sequence: Revision) {
        let mut events = Vec::new();
        {
            let old = self.map.read().unwrap_or_else(|p| p.into_inner());
            for (key, kv) in &map {
                if old.get(key).map(|o| o.mod_revision) != Some(kv.mod_revision) {
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: KeyValue {
                            mod_revision: revision,
                            ..kv.clone()
                        },
                    });
                }
            }
            for (key, kv) in old.iter() {
                if !map.contains_key(key) {
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: kv.create_revision,
                            mod_revision: revision,
                            version: 0,
                        },
                    });
                }
            }
        }
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = map;
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.ring_start.store(revision, Ordering::Release);
        self.compact_revision.fetch_max(revision, Ordering::AcqRel);
        self.sequence.store(sequence, Ordering::Release);
        self.revision.fetch_max(revision, Ordering::AcqRel);
        if !events.is_empty() {
            let _ = self.events.send(Arc::from(events));
        }
        self.applied
            .send_replace(self.revision.load(Ordering::Acquire));
    }

    async fn wait_applied(&self, revision: Revision) -> Result<(), StoreError> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if *applied.borrow_and_update() >= revision {
                    return true;
                }
                if applied.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Io(format!(
                "etcd: the watch did not deliver revision {revision} in time"
            ))),
        }
    }

    /// Events with `after < revision <= upto` from etcd's own history.
    async fn etcd_history(
        &self,
        after: Revision,
        upto: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        let (start, end) = self.range_bounds();
        let mut stream = self
            .client
            .stream(
                "/v3/watch",
                json!({"create_request": {
                    "key": b64(&start), "range_end": b64(&end),
                    "start_revision": (after + 1).to_string()}}),
            )
            .await?;
        let mut out = Vec::new();
        loop {
            // etcd sends the history at once; a quiet stream means it all
            // arrived (a revision of `upto`'s may hold only other keys).
            let message = match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Err(_) => break,
                Ok(message) => message?,
            };
            let Some(message) = message else { break };
            let result = message.get("result").unwrap_or(&message);
            let compacted = int(result, "compact_revision");
            if compacted > 0 {
                self.compact_revision.fetch_max(compacted, Ordering::AcqRel);
                return Err(StoreError::Compacted {
                    requested: after,
                    compact_revision: compacted,
                });
            }
            let (events, sequence) = self.events_of(result)?;
            let mut reached = sequence.is_some_and(|r| r >= upto);
            for event in events {
                if event.kv.mod_revision > upto {
                    reached = true;
                    break;
                }
                reached |= event.kv.mod_revision >= upto;
                out.push(event);
            }
            if reached {
                break;
            }
        }
        Ok(out)
    }
}

impl EtcdStore {
    /// Connects, lists the namespace and starts following it.
    pub async fn open(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let client = EtcdClient::new(&options.endpoints)?;
        let namespace = options.namespace.trim_end_matches('/').to_string();
        if namespace.is_empty() || !namespace.starts_with('/') {
            return Err(StoreError::Io(format!(
                "the etcd namespace must start with '/', not '{}'",
                options.namespace
            )));
        }
        let (events, _) = broadcast::channel(4096);
        let (applied, _) = tokio_watch::channel(0);
        let shared = Arc::new(Shared {
            namespace,
            client,
            map: RwLock::new(KeyMap::new()),
            revision: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            ring_start: AtomicU64::new(0),
            compact_revision: AtomicU64::new(0),
            history: Mutex::new(VecDeque::new()),
            retain_events: options.retain_events.max(1),
            events,
            hub: Arc::default(),
            applied,
        });
        let (map, revision, sequence) = shared.list().await?;
        *shared.map.write().unwrap_or_else(|p| p.into_inner()) = map;
        shared.revision.store(revision, Ordering::Release);
        shared.sequence.store(sequence, Ordering::Release);
        shared.ring_start.store(revision, Ordering::Release);
        shared.applied.send_replace(revision);
        let (tx, rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(follow(shared.clone()));
        let writer = tokio::spawn(write_loop(shared.clone(), rx, options.max_batch.max(1)));
        Ok(EtcdStore {
            shared,
            writer: Mutex::new(Some(tx)),
            tasks: vec![follower, writer],
        })
    }

    /// Stops accepting writes.
    pub fn close(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, KeyMap> {
        self.shared.map.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The client, for leases and elections on the same etcd.
    pub(crate) fn client(&self) -> EtcdClient {
        self.shared.client.clone()
    }

    /// The namespace keys are stored under.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }
}

impl ReadView for EtcdStore {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.map().get(key).cloned()
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Vec<KeyValue> {
        range_map(&self.map(), prefix, start_after, limit)
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn count(&self, prefix: &str) -> usize {
        count_map(&self.map(), prefix)
    }

    async fn mutate(&self, mutation: MutationFn) -> Result<Option<Revision>, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let writer = writer.as_ref().ok_or(StoreError::Closed)?;
            writer
                .send(WriteRequest { mutation, reply })
                .map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        watch::start(self.shared.clone(), prefix.to_string(), after)
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}

impl EventSource for Shared {
    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.events.subscribe()
    }

    fn hub(&self) -> &Arc<watch::WatchHub> {
        &self.hub
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    fn compact_revision(&self) -> Revision {
        self.compact_revision.load(Ordering::Acquire)
    }

    fn history(&self, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError> {
        if after >= self.ring_start.load(Ordering::Acquire) {
            let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(history
                .iter()
                .filter(|e| e.kv.mod_revision > after && e.kv.mod_revision <= upto)
                .cloned()
                .collect());
        }
        // Older than this server's memory: etcd still has it unless it
        // compacted. Called on a blocking thread, so it may wait.
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Io("etcd history needs a runtime".into()))?;
        handle.block_on(self.etcd_history(after, upto))
    }
}

/// Follows the namespace with one etcd watch, reconnecting (to any endpoint)
/// from the last revision applied.
async fn follow(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let after = shared.revision.load(Ordering::Acquire);
        let (start, end) = shared.range_bounds();
        let request = json!({"create_request": {
            "key": b64(&start), "range_end": b64(&end),
            "start_revision": (after + 1).to_string()}});
        let mut stream = match shared.client.stream("/v3/watch", request).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            let message = match stream.next().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd watch stream broke; resuming");
                    break;
                }
            };
            backoff = Duration::from_millis(50);
            let result = message.get("result").unwrap_or(&message);
            let compacted = int(result, "compact_revision");
            if compacted > 0 {
                tracing::warn!(
                    compacted,
                    "etcd compacted past this server's watch; listing again"
                );
                match shared.list().await {
                    Ok((map, revision, sequence)) => shared.replace(map, revision, sequence),
                    Err(e) => tracing::warn!(error = %e, "listing etcd again failed"),
                }
                break;
            }
            match shared.events_of(result) {
                Ok((events, sequence)) => {
                    let Some(revision) = events
                        .iter()
                        .map(|e| e.kv.mod_revision)
                        .chain(sequence)
                        .max()
                    else {
                        continue;
                    };
                    shared.apply(events, sequence, revision);
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable etcd watch event; resuming");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Evaluates batches of mutations against the cache and commits each batch
/// as one etcd transaction guarded by the sequence key.
async fn write_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
    max_batch: usize,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit(&shared, batch).await;
    }
}

async fn commit(shared: &Shared, batch: Vec<WriteRequest>) {
    let (mut mutations, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|r| (r.mutation, r.reply)).unzip();
    let mut attempts = 0u32;
    let outcomes = loop {
        attempts += 1;
        let start = shared.revision.load(Ordering::Acquire);
        // Mutations may run again after a conflict, as the trait allows.
        let (sequence, outcomes, overlay, events) = {
            let map = shared.map.read().unwrap_or_else(|p| p.into_inner());
            let sequence = shared.sequence.load(Ordering::Acquire);
            let (outcomes, overlay, events) = evaluate(&map, start, mutations.iter_mut());
            (sequence, outcomes, overlay, events)
        };
        if events.is_empty() {
            break outcomes;
        }
        let mut success = Vec::new();
        for (key, pending) in &overlay {
            let key = shared.etcd_key(key);
            match pending {
                Some(kv) => success.push(json!({"request_put": {
                    "key": b64(&key), "value": b64(&kv.value)}})),
                None => success.push(json!({"request_delete_range": {"key": b64(&key)}})),
            }
        }
        let sequence_key = shared.etcd_key(SEQUENCE_KEY);
        success.push(json!({"request_put": {"key": b64(&sequence_key), "value": ""}}));
        let txn = json!({
            "compare": [{"key": b64(&sequence_key), "target": "MOD", "result": "EQUAL",
                          "mod_revision": sequence.to_string()}],
            "success": success,
        });
        match shared.client.call("/v3/kv/txn", txn).await {
            Ok(answer) => {
                let revision = int(answer.get("header").unwrap_or(&Value::Null), "revision");
                let succeeded = answer
                    .get("succeeded")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if succeeded {
                    if let Err(e) = shared.wait_applied(revision).await {
                        let message = e.to_string();
                        break (0..replies.len())
                            .map(|_| Err(StoreError::Io(message.clone())))
                            .collect();
                    }
                    // Every mutation that wrote shares the transaction's
                    // revision.
                    break outcomes
                        .into_iter()
                        .map(|o| o.map(|r| r.map(|_| revision)))
                        .collect();
                }
                // Another server wrote first: catch up and evaluate again.
                if attempts > 1000 {
                    break (0..replies.len())
                        .map(|_| Err(StoreError::Io("etcd: too many write conflicts".into())))
                        .collect();
                }
                shared.wait_sequence_after(sequence).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd transaction failed");
                break (0..replies.len())
                    .map(|_| Err(StoreError::Io(e.to_string())))
                    .collect();
            }
        }
    };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}
