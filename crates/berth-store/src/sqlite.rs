//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the write connection. It drains every pending
//! mutation into a batch, runs each closure against the committed state plus
//! the batch's earlier writes, and commits the whole batch in one SQLite
//! transaction — one fsync acknowledges many writes (group commit). Only after
//! the commit does it update the in-memory map that serves reads, publish the
//! events to watchers and answer the callers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{broadcast, oneshot};

use crate::memory::{count_map, range_map, KeyMap, Overlay, OverlayView};
use crate::watch::{self, EventSource};
use crate::{
    Aborted, Event, EventKind, KeyValue, MutationFn, ReadView, Revision, Store, StoreError, Watch,
};

/// Tunables of the SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// How many revisions of change history to keep for watchers that resume.
    pub retain_revisions: u64,
    /// The most mutations committed by one transaction.
    pub max_batch: usize,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            retain_revisions: 100_000,
            max_batch: 2048,
        }
    }
}

struct WriteRequest {
    mutation: MutationFn,
    reply: oneshot::Sender<Result<Option<Revision>, StoreError>>,
}

/// State shared between the writer thread, readers and watchers.
pub(crate) struct Shared {
    map: RwLock<KeyMap>,
    revision: AtomicU64,
    compact_revision: AtomicU64,
    events: broadcast::Sender<Arc<[Event]>>,
    /// Routes committed batches to watchers.
    hub: Arc<watch::WatchHub>,
    /// A read-only connection for watchers catching up from history.
    history: Mutex<Connection>,
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB,
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

fn read_meta(conn: &Connection, name: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(io)?;
    Ok(v.unwrap_or(0) as u64)
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    berth_util::private_file::private_database(path).map_err(io)?;
    let conn = Connection::open(path).map_err(io)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(io)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(io)?;
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(io)?;
    // Overwrite freed pages, so a credential sealed after an upgrade (or a
    // deleted record) does not linger in the file in its old form.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(io)?;
    conn.execute_batch(SCHEMA).map_err(io)?;
    Ok(conn)
}

fn load_map(conn: &Connection) -> Result<KeyMap, StoreError> {
    let mut stmt = conn
        .prepare("SELECT key, value, create_rev, mod_rev, version FROM kv")
        .map_err(io)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(KeyValue {
                key: r.get(0)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                create_revision: r.get::<_, i64>(2)? as u64,
                mod_revision: r.get::<_, i64>(3)? as u64,
                version: r.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(io)?;
    let mut map = KeyMap::new();
    for row in rows {
        let kv = row.map_err(io)?;
        map.insert(kv.key.clone(), kv);
    }
    Ok(map)
}

impl SqliteStore {
    /// Opens (or creates) the database and starts the writer thread.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let conn = open_writer(&options.path)?;
        let map = load_map(&conn)?;
        let revision = read_meta(&conn, "revision")?;
        let compact_revision = read_meta(&conn, "compact_revision")?;
        let history = Connection::open_with_flags(
            &options.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(io)?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            map: RwLock::new(map),
            revision: AtomicU64::new(revision),
            compact_revision: AtomicU64::new(compact_revision),
            events,
            hub: Arc::default(),
            history: Mutex::new(history),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer_loop(conn, writer_shared, rx, options))
            .map_err(io)?;
        Ok(SqliteStore {
            shared,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops accepting writes, lets the writer finish what is queued and waits for it.
    pub fn close(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, KeyMap> {
        self.shared.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl ReadView for SqliteStore {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.map().get(key).cloned()
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Vec<KeyValue> {
        range_map(&self.map(), prefix, start_after, limit)
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
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
        "sqlite"
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
        let conn = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare_cached(
                "SELECT rev, key, value, create_rev, version FROM log
                 WHERE rev > ?1 AND rev <= ?2 ORDER BY rev, seq",
            )
            .map_err(io)?;
        let rows = stmt
            .query_map(params![after as i64, upto as i64], |r| {
                let value: Option<Vec<u8>> = r.get(2)?;
                let kind = if value.is_some() {
                    EventKind::Put
                } else {
                    EventKind::Delete
                };
                Ok(Event {
                    kind,
                    kv: KeyValue {
                        key: r.get(1)?,
                        value: value.map(Bytes::from).unwrap_or_default(),
                        create_revision: r.get::<_, i64>(3)? as u64,
                        mod_revision: r.get::<_, i64>(0)? as u64,
                        version: r.get::<_, i64>(4)? as u64,
                    },
                })
            })
            .map_err(io)?;
        rows.map(|r| r.map_err(io)).collect()
    }
}

fn writer_loop(
    mut conn: Connection,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WriteRequest>,
    options: SqliteOptions,
) {
    let mut batches_since_compaction = 0u32;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < options.max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &shared, batch);
        batches_since_compaction += 1;
        if batches_since_compaction >= 256 {
            batches_since_compaction = 0;
            if let Err(e) = compact(&mut conn, &shared, options.retain_revisions) {
                tracing::warn!(error = %e, "store history compaction failed");
            }
        }
    }
}

/// What one mutation did: the revision it wrote at, nothing (a no-op), or why it failed.
pub(crate) type MutationOutcome = Result<Option<Revision>, StoreError>;

/// Evaluates a batch of mutations in order against committed state plus the
/// batch's own earlier writes. Returns the per-mutation outcome, the pending
/// writes and the events they produce.
pub(crate) fn evaluate<'a>(
    map: &KeyMap,
    start: Revision,
    mutations: impl Iterator<Item = &'a mut MutationFn>,
) -> (Vec<MutationOutcome>, Overlay, Vec<Event>) {
    let mut overlay = Overlay::new();
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    let mut revision = start;
    for mutation in mutations {
        let view = OverlayView {
            base: map,
            overlay: &overlay,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mutation(&view)));
        let ops = match result {
            Err(_) => {
                outcomes.push(Err(StoreError::Mutation("the mutation panicked".into())));
                continue;
            }
            Ok(Err(Aborted)) => {
                outcomes.push(Ok(None));
                continue;
            }
            Ok(Ok(ops)) => ops,
        };
        let next = revision + 1;
        let mut changed = false;
        for op in ops {
            let previous = match overlay.get(op.key()) {
                Some(pending) => pending.clone(),
                None => map.get(op.key()).cloned(),
            };
            match op {
                crate::Op::Put { key, value } => {
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: previous.as_ref().map_or(next, |p| p.create_revision),
                        mod_revision: next,
                        version: previous.as_ref().map_or(1, |p| p.version + 1),
                    };
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                    });
                    overlay.insert(key, Some(kv));
                    changed = true;
                }
                crate::Op::Delete { key } => {
                    if let Some(previous) = previous {
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Bytes::new(),
                                create_revision: previous.create_revision,
                                mod_revision: next,
                                version: 0,
                            },
                        });
                        overlay.insert(key, None);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            revision = next;
            outcomes.push(Ok(Some(next)));
        } else {
            outcomes.push(Ok(None));
        }
    }
    (outcomes, overlay, events)
}

fn persist(
    conn: &mut Connection,
    overlay: &Overlay,
    events: &[Event],
    revision: Revision,
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO kv (key, value, create_rev, mod_rev, version) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, create_rev = excluded.create_rev,
             mod_rev = excluded.mod_rev, version = excluded.version",
        )?;
        let mut remove = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        for (key, pending) in overlay {
            match pending {
                Some(kv) => {
                    upsert.execute(params![
                        key,
                        kv.value.as_ref(),
                        kv.create_revision as i64,
                        kv.mod_revision as i64,
                        kv.version as i64
                    ])?;
                }
                None => {
                    remove.execute([key])?;
                }
            }
        }
        let mut log = tx.prepare_cached(
            "INSERT INTO log (rev, seq, key, value, create_rev, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (seq, event) in events.iter().enumerate() {
            let value: Option<&[u8]> = match event.kind {
                EventKind::Put => Some(event.kv.value.as_ref()),
                EventKind::Delete => None,
            };
            log.execute(params![
                event.kv.mod_revision as i64,
                seq as i64,
                event.kv.key,
                value,
                event.kv.create_revision as i64,
                event.kv.version as i64
            ])?;
        }
        tx.prepare_cached(
            "INSERT INTO meta (name, value) VALUES ('revision', ?1)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        )?
        .execute([revision as i64])?;
    }
    tx.commit()
}

fn commit_batch(conn: &mut Connection, shared: &Shared, batch: Vec<WriteRequest>) {
    let start = shared.revision.load(Ordering::Acquire);
    let (mut mutations, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|r| (r.mutation, r.reply)).unzip();
    let (mut outcomes, overlay, events) = {
        let map = shared.map.read().unwrap_or_else(|p| p.into_inner());
        evaluate(&map, start, mutations.iter_mut())
    };
    if !events.is_empty() {
        let revision = events
            .iter()
            .map(|e| e.kv.mod_revision)
            .max()
            .unwrap_or(start);
        match persist(conn, &overlay, &events, revision) {
            Ok(()) => {
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
                    shared.revision.store(revision, Ordering::Release);
                }
                let _ = shared.events.send(Arc::from(events));
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the batch is rejected");
                let message = e.to_string();
                outcomes = outcomes
                    .into_iter()
                    .map(|_| Err(StoreError::Io(message.clone())))
                    .collect();
            }
        }
    }
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

fn compact(conn: &mut Connection, shared: &Shared, retain: u64) -> Result<(), rusqlite::Error> {
    let revision = shared.revision.load(Ordering::Acquire);
    let target = revision.saturating_sub(retain);
    if target <= shared.compact_revision.load(Ordering::Acquire) {
        return Ok(());
    }
    // Advertise the new horizon before deleting, so a watcher reading history
    // concurrently notices that rows may be gone.
    shared.compact_revision.store(target, Ordering::Release);
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM log WHERE rev <= ?1", [target as i64])?;
    tx.execute(
        "INSERT INTO meta (name, value) VALUES ('compact_revision', ?1)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        [target as i64],
    )?;
    tx.commit()
}

#[cfg(all(test, unix))]
mod file_mode_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::StoreExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_database_and_its_wal_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // An existing, world-readable database (an older data directory).
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(SqliteOptions::new(path.clone())).unwrap();
        store.put("/k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        let wal = dir.path().join("store.db-wal");
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600);
        assert_eq!(mode(&dir.path().join("store.db-shm")), 0o600);
        store.close();
    }
}
