//! `MemoryStore`: the `Store` contract with nothing on disk, for handler
//! harnesses and tests that need a store but no durability. Mutations run
//! one at a time under a lock, with the same evaluation as the SQLite
//! backend; history is kept in memory for watchers to resume from.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::memory::{count_map, range_map, KeyMap};
use crate::sqlite::evaluate;
use crate::watch::{self, EventSource};
use crate::{Event, KeyValue, MutationFn, ReadView, Revision, Store, StoreError, Watch};

/// How many revisions of history a `MemoryStore` keeps for watchers.
const RETAIN_EVENTS: usize = 100_000;

struct Shared {
    map: RwLock<KeyMap>,
    revision: AtomicU64,
    compact_revision: AtomicU64,
    history: Mutex<VecDeque<Event>>,
    events: broadcast::Sender<Arc<[Event]>>,
    /// Serializes mutations, as the SQLite writer thread does.
    writer: Mutex<()>,
    hub: Arc<watch::WatchHub>,
}

/// A store held entirely in memory.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        let (events, _) = broadcast::channel(4096);
        MemoryStore {
            shared: Arc::new(Shared {
                map: RwLock::new(KeyMap::new()),
                revision: AtomicU64::new(0),
                compact_revision: AtomicU64::new(0),
                history: Mutex::new(VecDeque::new()),
                events,
                writer: Mutex::new(()),
                hub: Arc::default(),
            }),
        }
    }

    /// Watches the routing hub delivers to now.
    #[cfg(test)]
    pub(crate) fn live_watchers(&self) -> usize {
        self.shared.hub.live_count()
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, KeyMap> {
        self.shared.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadView for MemoryStore {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.map().get(key).cloned()
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Vec<KeyValue> {
        range_map(&self.map(), prefix, start_after, limit)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn count(&self, prefix: &str) -> usize {
        count_map(&self.map(), prefix)
    }

    async fn mutate(&self, mut mutation: MutationFn) -> Result<Option<Revision>, StoreError> {
        let shared = &self.shared;
        let _writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let start = shared.revision.load(Ordering::Acquire);
        let (mut outcomes, overlay, events) = {
            let map = shared.map.read().unwrap_or_else(|p| p.into_inner());
            evaluate(&map, start, std::iter::once(&mut mutation))
        };
        let outcome = outcomes.pop().unwrap_or(Ok(None));
        if events.is_empty() {
            return outcome;
        }
        let revision = events
            .iter()
            .map(|e| e.kv.mod_revision)
            .max()
            .unwrap_or(start);
        {
            let mut map = shared.map.write().unwrap_or_else(|p| p.into_inner());
            for (key, pending) in overlay {
                match pending {
                    Some(kv) => {
                        map.insert(key, kv);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
            let mut history = shared.history.lock().unwrap_or_else(|p| p.into_inner());
            history.extend(events.iter().cloned());
            while history.len() > RETAIN_EVENTS {
                if let Some(dropped) = history.pop_front() {
                    shared
                        .compact_revision
                        .fetch_max(dropped.kv.mod_revision, Ordering::AcqRel);
                }
            }
            shared.revision.store(revision, Ordering::Release);
        }
        let _ = shared.events.send(Arc::from(events));
        outcome
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        watch::start(self.shared.clone(), prefix.to_string(), after)
    }

    fn backend(&self) -> &'static str {
        "memory"
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
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        Ok(history
            .iter()
            .filter(|e| e.kv.mod_revision > after && e.kv.mod_revision <= upto)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, StoreExt};
    use bytes::Bytes;

    #[tokio::test]
    async fn behaves_like_a_store() {
        let store = MemoryStore::new();
        let r1 = store.put("/a", Bytes::from("1")).await.unwrap();
        let r2 = store.put("/a", Bytes::from("2")).await.unwrap();
        assert_eq!((r1, r2), (1, 2));
        let kv = store.get("/a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
        let mut watch = store.watch("/", 0).await.unwrap();
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.kv.mod_revision, 1);
        let second = watch.next().await.unwrap().unwrap();
        assert_eq!(second.kv.mod_revision, 2);
        store
            .mutate(Box::new(|_| Ok(vec![Op::delete("/a")])))
            .await
            .unwrap();
        let third = watch.next().await.unwrap().unwrap();
        assert_eq!(third.kind, crate::EventKind::Delete);
        assert_eq!(store.count("/"), 0);
        // A mutation that writes nothing makes no revision.
        assert_eq!(
            store
                .mutate(Box::new(|_| Ok(vec![Op::delete("/missing")])))
                .await
                .unwrap(),
            None
        );
    }
}
