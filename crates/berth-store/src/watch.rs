//! Watches: a change stream under a key prefix that starts at any retained
//! revision, catches up from the stored history and then follows live commits.
//!
//! Live commits reach watchers through one [`WatchHub`] per store: a single
//! dispatcher receives each committed batch and hands every event only to
//! the watchers whose prefix it falls under (looked up by the key's
//! prefixes, not by asking every watcher). So a commit costs the same
//! whether 10 or 20,000 watches are open (10,000 agents each long-poll
//! their own instance's keys), and an idle watcher is never woken.
//!
//! A watcher is either *live* (the dispatcher sends it events) or *catching
//! up* (a task of its own reads the stored history and sends it). It starts
//! catching up from the revision it asked for; it goes live once it reached
//! the revision the dispatcher has handed out (`dispatched`), checked under
//! the hub's lock so no batch slips between the two. A live watcher whose
//! channel is full goes back to catching up from where it stood, so a slow
//! reader never blocks the dispatcher or loses an event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{broadcast, mpsc};

use crate::{Event, Revision, StoreError};

/// Revisions read from history per page while catching up.
const HISTORY_PAGE: u64 = 1024;

/// Events a watcher may have waiting before it is moved to catching up.
const WATCH_BUFFER: usize = 256;

/// A stream of changes, in revision order.
pub struct Watch {
    rx: mpsc::Receiver<Result<Event, StoreError>>,
    /// Where it is registered, to leave the hub when dropped.
    registration: Option<(Weak<WatchHub>, u64, String)>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Closed first: a catch-up task about to make it live sees that
        // under the hub's lock and does not.
        self.rx.close();
        if let Some((hub, id, prefix)) = self.registration.take() {
            if let Some(hub) = hub.upgrade() {
                hub.lock().remove_live(&prefix, id);
            }
        }
    }
}

impl Watch {
    /// The next change; `None` when the store shut down. After an `Err` the
    /// watch ends (e.g. [`StoreError::Compacted`]: list again, then re-watch).
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.recv().await
    }
}

/// What a backend offers to feed watches.
pub(crate) trait EventSource: Send + Sync + 'static {
    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>>;
    fn revision(&self) -> Revision;
    fn compact_revision(&self) -> Revision;
    /// Every stored event with `after < revision <= upto`, in order.
    fn history(&self, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError>;
    /// The hub that routes this store's commits to its watchers.
    fn hub(&self) -> &Arc<WatchHub>;
}

type Sink = mpsc::Sender<Result<Event, StoreError>>;

/// Where a watcher that is catching up resumes: every event up to
/// `revision` was delivered, and the first `skip` matching events of the
/// next revision too (a batch may carry several events of one revision).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Resume {
    revision: Revision,
    skip: usize,
}

struct Live {
    prefix: String,
    tx: Sink,
}

#[derive(Default)]
struct HubState {
    /// Whether the dispatcher task runs.
    started: bool,
    /// Every event with a revision up to this was handed to live watchers
    /// (or is in the history a catching-up watcher reads).
    dispatched: Revision,
    next_id: u64,
    /// Live watchers by prefix.
    live: HashMap<String, BTreeMap<u64, Live>>,
    /// How many live prefixes have each length, to look a key's prefixes
    /// up only at lengths some watcher uses.
    lengths: BTreeMap<usize, usize>,
    /// The store shut down: new watches end at once.
    closed: bool,
}

impl HubState {
    fn add_live(&mut self, id: u64, live: Live) {
        let len = live.prefix.len();
        let slot = self.live.entry(live.prefix.clone()).or_default();
        if slot.is_empty() {
            *self.lengths.entry(len).or_default() += 1;
        }
        slot.insert(id, live);
    }

    fn remove_live(&mut self, prefix: &str, id: u64) -> Option<Live> {
        let slot = self.live.get_mut(prefix)?;
        let removed = slot.remove(&id);
        if slot.is_empty() {
            self.live.remove(prefix);
            if let Some(n) = self.lengths.get_mut(&prefix.len()) {
                *n -= 1;
                if *n == 0 {
                    self.lengths.remove(&prefix.len());
                }
            }
        }
        removed
    }
}

/// Routes one store's committed batches to its watchers.
#[derive(Default)]
pub(crate) struct WatchHub {
    state: Mutex<HubState>,
}

impl WatchHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live watchers.
    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.lock().live.values().map(BTreeMap::len).sum()
    }
}

pub(crate) fn start<S: EventSource>(
    source: Arc<S>,
    prefix: String,
    after: Revision,
) -> Result<Watch, StoreError> {
    let compact_revision = source.compact_revision();
    if after < compact_revision {
        return Err(StoreError::Compacted {
            requested: after,
            compact_revision,
        });
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let id = {
        let mut state = source.hub().lock();
        if state.closed {
            return Ok(Watch {
                rx,
                registration: None,
            });
        }
        if !state.started {
            state.started = true;
            // Subscribe before reading the revision: a batch committed in
            // between is both in the channel and at or below `dispatched`,
            // and the dispatcher skips what is at or below it.
            let live = source.subscribe();
            state.dispatched = source.revision();
            tokio::spawn(dispatch(Arc::downgrade(&source), live));
        }
        state.next_id += 1;
        state.next_id
    };
    let registration = Some((Arc::downgrade(source.hub()), id, prefix.clone()));
    tokio::spawn(catch_up(
        source,
        id,
        prefix,
        Resume {
            revision: after,
            skip: 0,
        },
        tx,
    ));
    Ok(Watch { rx, registration })
}

/// Sends `event` if it is past `resume`; false when the watcher went away.
async fn deliver(tx: &Sink, event: Event, resume: &mut Resume) -> bool {
    let revision = event.kv.mod_revision;
    if revision <= resume.revision {
        return true;
    }
    if resume.skip > 0 && revision == resume.revision + 1 {
        resume.skip -= 1;
        return true;
    }
    tx.send(Ok(event)).await.is_ok()
}

/// Brings one watcher from `resume` up to the hub's `dispatched` revision
/// from the stored history, then makes it live.
async fn catch_up<S: EventSource>(
    source: Arc<S>,
    id: u64,
    prefix: String,
    mut resume: Resume,
    tx: Sink,
) {
    loop {
        // Go live if nothing is left to read; under the lock, so the
        // dispatcher hands it every batch after `dispatched`.
        let target = {
            let mut state = source.hub().lock();
            if state.closed {
                return;
            }
            // (A partly delivered revision is at or below `dispatched`:
            // the dispatcher moves it past a batch before unlocking.)
            if resume.revision >= state.dispatched {
                if !tx.is_closed() {
                    state.add_live(id, Live { prefix, tx });
                }
                return;
            }
            state.dispatched
        };
        while resume.revision < target {
            let from = resume.revision;
            let upto = target.min(from + HISTORY_PAGE);
            let reader = source.clone();
            let page = tokio::task::spawn_blocking(move || reader.history(from, upto)).await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(StoreError::Io(e.to_string()))).await;
                    return;
                }
            };
            let compact_revision = source.compact_revision();
            if compact_revision > from {
                let _ = tx
                    .send(Err(StoreError::Compacted {
                        requested: from,
                        compact_revision,
                    }))
                    .await;
                return;
            }
            for event in page {
                if event.kv.key.starts_with(&prefix) && !deliver(&tx, event, &mut resume).await {
                    return;
                }
            }
            resume = Resume {
                revision: upto,
                skip: 0,
            };
        }
    }
}

/// The hub's one subscriber: hands each committed event to the live
/// watchers whose prefix it falls under.
async fn dispatch<S: EventSource>(source: Weak<S>, mut live: broadcast::Receiver<Arc<[Event]>>) {
    loop {
        let received = live.recv().await;
        let Some(source) = source.upgrade() else {
            return;
        };
        match received {
            Ok(batch) => route(&source, &batch),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Batches were lost to this dispatcher: every live watcher
                // reads them from history instead.
                let mut state = source.hub().lock();
                let resume = Resume {
                    revision: state.dispatched,
                    skip: 0,
                };
                state.dispatched = state.dispatched.max(source.revision());
                let watchers: Vec<(u64, Live)> = std::mem::take(&mut state.live)
                    .into_values()
                    .flat_map(BTreeMap::into_iter)
                    .collect();
                state.lengths.clear();
                drop(state);
                for (id, watcher) in watchers {
                    tokio::spawn(catch_up(
                        source.clone(),
                        id,
                        watcher.prefix,
                        resume,
                        watcher.tx,
                    ));
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                let mut state = source.hub().lock();
                state.closed = true;
                state.live.clear();
                state.lengths.clear();
                return;
            }
        }
    }
}

/// Routes one batch (under the hub's lock, never waiting on a watcher).
fn route<S: EventSource>(source: &Arc<S>, batch: &[Event]) {
    let mut state = source.hub().lock();
    let dispatched = state.dispatched;
    // Watchers that fell behind: where each resumes.
    let mut behind: Vec<(String, u64, Resume)> = Vec::new();
    // Matching events of the current revision each watcher got so far.
    let mut current: Option<Revision> = None;
    let mut sent_in_revision: HashMap<u64, usize> = HashMap::new();
    for event in batch {
        let revision = event.kv.mod_revision;
        if revision <= dispatched {
            continue;
        }
        if current != Some(revision) {
            current = Some(revision);
            sent_in_revision.clear();
        }
        let key = event.kv.key.as_str();
        let lengths: Vec<usize> = state
            .lengths
            .range(..=key.len())
            .map(|(len, _)| *len)
            .filter(|len| key.is_char_boundary(*len))
            .collect();
        for len in lengths {
            let prefix = &key[..len];
            let Some(watchers) = state.live.get(prefix) else {
                continue;
            };
            for (id, watcher) in watchers {
                match watcher.tx.try_send(Ok(event.clone())) {
                    Ok(()) => *sent_in_revision.entry(*id).or_default() += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => behind.push((
                        prefix.to_string(),
                        *id,
                        Resume {
                            revision: revision - 1,
                            skip: sent_in_revision.get(id).copied().unwrap_or(0),
                        },
                    )),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        behind.push((prefix.to_string(), *id, Resume::GONE))
                    }
                }
            }
        }
        // Watchers that fell behind stop receiving at once, so nothing is
        // delivered out of order behind their gap.
        for (prefix, id, resume) in behind.drain(..) {
            if let Some(watcher) = state.remove_live(&prefix, id) {
                if resume != Resume::GONE {
                    tokio::spawn(catch_up(source.clone(), id, prefix, resume, watcher.tx));
                }
            }
        }
    }
    if let Some(last) = batch.last() {
        state.dispatched = state.dispatched.max(last.kv.mod_revision);
    }
}

impl Resume {
    /// Marks a watcher whose receiver was dropped.
    const GONE: Resume = Resume {
        revision: Revision::MAX,
        skip: usize::MAX,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, Store, StoreExt};

    async fn put(store: &MemoryStore, key: &str, value: &str) -> Revision {
        let (key, value) = (key.to_string(), value.to_string());
        store.put(&key, value.into_bytes().into()).await.unwrap()
    }

    #[tokio::test]
    async fn a_slow_watcher_falls_back_to_history_and_misses_nothing() {
        let store = MemoryStore::new();
        let mut slow = store.watch("a/", 0).await.unwrap();
        let mut other = store.watch("b/", 0).await.unwrap();
        // Let both go live.
        while store.live_watchers() < 2 {
            tokio::task::yield_now().await;
        }
        let n = WATCH_BUFFER * 3;
        for i in 0..n {
            put(&store, &format!("a/{i}"), "x").await;
        }
        put(&store, "b/1", "y").await;
        let b = other.next().await.unwrap().unwrap();
        assert_eq!(b.kv.key, "b/1");
        for i in 0..n {
            let e = slow.next().await.unwrap().unwrap();
            assert_eq!(e.kv.key, format!("a/{i}"));
        }
        put(&store, "a/last", "z").await;
        assert_eq!(slow.next().await.unwrap().unwrap().kv.key, "a/last");
    }

    #[tokio::test]
    async fn events_reach_only_the_watchers_whose_prefix_they_match() {
        let store = MemoryStore::new();
        let mut watches = Vec::new();
        for i in 0..50 {
            watches.push(store.watch(&format!("inst/{i}/"), 0).await.unwrap());
        }
        let mut all = store.watch("", 0).await.unwrap();
        while store.live_watchers() < 51 {
            tokio::task::yield_now().await;
        }
        put(&store, "inst/7/task", "x").await;
        put(&store, "inst/17/task", "x").await;
        assert_eq!(all.next().await.unwrap().unwrap().kv.key, "inst/7/task");
        assert_eq!(all.next().await.unwrap().unwrap().kv.key, "inst/17/task");
        assert_eq!(
            watches[7].next().await.unwrap().unwrap().kv.key,
            "inst/7/task"
        );
        assert_eq!(
            watches[17].next().await.unwrap().unwrap().kv.key,
            "inst/17/task"
        );
        for (i, w) in watches.iter_mut().enumerate() {
            if i != 7 && i != 17 {
                assert!(w.rx.try_recv().is_err(), "watch {i} woke");
            }
        }
        drop(watches);
        put(&store, "inst/3/task", "x").await;
        assert_eq!(all.next().await.unwrap().unwrap().kv.key, "inst/3/task");
        // Dropped watchers leave the hub.
        assert_eq!(store.live_watchers(), 1);
    }
}
