//! The event store: one SQLite database (WAL, `synchronous=FULL`) of its own,
//! separate from the control-plane store, because log traffic is append-heavy
//! and must not slow down or bloat the revisioned KV store.
//!
//! Writes go through one writer thread that group-commits: it takes every job
//! queued while the previous commit was syncing, applies them in one
//! transaction (each in its own savepoint, so one failing job does not fail the
//! others) and answers each caller only after the commit is durable. Group and
//! stream metadata is cached in memory ([`Catalog`]) and updated by the writer
//! after each commit, so Describe calls never touch disk. Event reads use a
//! small pool of read-only connections, which WAL lets run beside the writer.
//!
//! Events are keyed `(stream_id, ts, seq)` in a `WITHOUT ROWID` table, so a
//! stream's time range is one contiguous b-tree range; `seq` is a global
//! counter that orders events with equal timestamps and makes every event's
//! key unique.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use berth_model::AwsError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::ingest::Position;
use crate::limits::DAY_MS;
use crate::tokens::EventKey;
use crate::LogsError;

/// The most jobs one commit takes, so one commit's latency stays bounded.
const MAX_JOBS_PER_COMMIT: usize = 512;
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// (account, region, log group name).
pub type GroupKey = (String, String, String);

pub fn group_key(account: &str, region: &str, name: &str) -> GroupKey {
    (account.to_string(), region.to_string(), name.to_string())
}

/// A log group's settings as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub id: i64,
    pub name: String,
    pub created_ms: i64,
    pub retention_days: Option<i32>,
    pub kms_key_id: Option<String>,
    pub class: String,
    pub tags: BTreeMap<String, String>,
}

/// A log stream's metadata as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub id: i64,
    pub name: String,
    pub created_ms: i64,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    pub last_ingestion_ms: Option<i64>,
    pub stored_bytes: i64,
    /// The agent's ingest cursor: the greatest position stored.
    pub cursor: Option<Position>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    pub info: GroupInfo,
    pub streams: BTreeMap<String, StreamInfo>,
}

impl GroupEntry {
    pub fn stored_bytes(&self) -> i64 {
        self.streams.values().map(|s| s.stored_bytes).sum()
    }
}

/// Where a small record kept beside the log groups lives: metric
/// filters, data protection and resource policies, query definitions.
/// `scope` is the log group a record belongs to (deleted with it), or ""
/// for records of the account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub account: String,
    pub region: String,
    pub kind: &'static str,
    pub scope: String,
    pub name: String,
}

/// The kinds of [`ObjectKey`] records.
pub mod kinds {
    pub const METRIC_FILTER: &str = "metric-filter";
    pub const DATA_PROTECTION: &str = "data-protection";
    pub const RESOURCE_POLICY: &str = "resource-policy";
    pub const QUERY_DEFINITION: &str = "query-definition";
    pub const DELETION_PROTECTION: &str = "deletion-protection";
    pub const ALL: &[&str] = &[
        METRIC_FILTER,
        DATA_PROTECTION,
        RESOURCE_POLICY,
        QUERY_DEFINITION,
        DELETION_PROTECTION,
    ];

    pub fn known(kind: &str) -> Option<&'static str> {
        ALL.iter().copied().find(|k| *k == kind)
    }
}

/// Every group and stream, and the records beside them, kept current by
/// the writer.
#[derive(Debug, Default)]
pub struct Catalog {
    pub groups: BTreeMap<GroupKey, GroupEntry>,
    /// Records as JSON text.
    pub objects: BTreeMap<ObjectKey, String>,
}

impl Catalog {
    pub fn group(&self, account: &str, region: &str, name: &str) -> Option<&GroupEntry> {
        // BTreeMap<(String, String, String)> cannot be probed with borrowed
        // parts, so build the key; group names are short.
        self.groups.get(&group_key(account, region, name))
    }

    /// The groups of one account and region, in name order, starting after
    /// `after` when given.
    pub fn groups_of<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a GroupEntry> + 'a {
        let start = group_key(account, region, after.unwrap_or(""));
        self.groups
            .range(start..)
            .take_while(move |(k, _)| k.0 == account && k.1 == region)
            .filter(move |(k, _)| after.is_none_or(|a| k.2.as_str() > a))
            .map(|(_, entry)| entry)
    }

    /// The records of one kind and scope, in name order.
    pub fn objects_in<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
        kind: &'static str,
        scope: &'a str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a String)> + 'a {
        let start = ObjectKey {
            account: account.to_string(),
            region: region.to_string(),
            kind,
            scope: scope.to_string(),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.account == account && k.region == region && k.kind == kind && k.scope == scope
        })
    }

    /// The records of one kind in every scope of an account and region.
    pub fn objects_of_kind<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
        kind: &'static str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a String)> + 'a {
        let start = ObjectKey {
            account: account.to_string(),
            region: region.to_string(),
            kind,
            scope: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.account == account && k.region == region && k.kind == kind)
    }

    pub fn object(&self, key: &ObjectKey) -> Option<&String> {
        self.objects.get(key)
    }

    fn apply(&mut self, delta: Delta) {
        match delta {
            Delta::PutObject(key, value) => {
                self.objects.insert(key, value);
            }
            Delta::RemoveObject(key) => {
                self.objects.remove(&key);
            }
            Delta::Appended(_) => {}
            Delta::PutGroup(key, info) => {
                self.groups
                    .entry(key)
                    .and_modify(|e| e.info = info.clone())
                    .or_insert_with(|| GroupEntry {
                        info,
                        streams: BTreeMap::new(),
                    });
            }
            Delta::RemoveGroup(key) => {
                self.groups.remove(&key);
            }
            Delta::PutStream(key, stream) => {
                if let Some(entry) = self.groups.get_mut(&key) {
                    entry.streams.insert(stream.name.clone(), stream);
                }
            }
            Delta::RemoveStream(key, name) => {
                if let Some(entry) = self.groups.get_mut(&key) {
                    entry.streams.remove(&name);
                }
            }
        }
    }
}

/// A change to the catalog, applied once its transaction has committed.
#[derive(Debug, Clone)]
enum Delta {
    PutGroup(GroupKey, GroupInfo),
    RemoveGroup(GroupKey),
    PutStream(GroupKey, StreamInfo),
    RemoveStream(GroupKey, String),
    PutObject(ObjectKey, String),
    RemoveObject(ObjectKey),
    /// Events stored, for live tail sessions (not a catalog change).
    Appended(Arc<Appended>),
}

/// Events one append stored, as live tail sessions see them.
#[derive(Debug, Clone)]
pub struct Appended {
    pub group: GroupKey,
    pub stream: String,
    pub ingest_ms: i64,
    /// (timestamp, message) of each event stored, in order.
    pub events: Vec<(i64, String)>,
}

/// How a put of a record is checked inside its transaction.
#[derive(Debug, Clone, Default)]
pub struct PutRules {
    /// The log group that must exist.
    pub group: Option<GroupKey>,
    /// At most this many records of the kind in the scope (the record
    /// being replaced not counted), else the error.
    pub max_in_scope: Option<(usize, AwsError)>,
    /// The record must already exist, else the error.
    pub must_exist: Option<AwsError>,
    /// The record must not exist yet, else the error.
    pub must_not_exist: Option<AwsError>,
}

/// Settings for a group a write creates.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    pub created_ms: i64,
    pub kms_key_id: Option<String>,
    pub class: String,
    pub tags: BTreeMap<String, String>,
}

/// A change to an existing group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupChange {
    SetRetention(Option<i32>),
    /// Tags to add or overwrite; the 50-tag limit is checked against the
    /// stored tags inside the transaction.
    Tag(BTreeMap<String, String>),
    Untag(Vec<String>),
}

/// One event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub timestamp: i64,
    pub message: String,
    /// The agent's position; events at or below the stream's cursor are
    /// dropped when the append deduplicates.
    pub position: Option<Position>,
}

/// What the writer does.
#[derive(Debug, Clone)]
pub enum WriteOp {
    CreateGroup {
        key: GroupKey,
        group: NewGroup,
    },
    DeleteGroup {
        key: GroupKey,
    },
    ChangeGroup {
        key: GroupKey,
        change: GroupChange,
    },
    CreateStream {
        key: GroupKey,
        stream: String,
        created_ms: i64,
        /// Create the group too when it is missing.
        create_group: Option<NewGroup>,
        /// An existing stream is success, not ResourceAlreadyExists.
        exists_ok: bool,
    },
    DeleteStream {
        key: GroupKey,
        stream: String,
    },
    Append {
        key: GroupKey,
        stream: String,
        events: Vec<NewEvent>,
        ingest_ms: i64,
        /// Drop events at or below the stream's cursor (as it was before
        /// this append: pieces of one split message share a position).
        deduplicate: bool,
        /// Move the stream's cursor to at least this position, in the same
        /// transaction as the events.
        advance_cursor_to: Option<Position>,
    },
    Compact {
        now_ms: i64,
    },
    PutObject {
        key: ObjectKey,
        value: String,
        rules: PutRules,
    },
    DeleteObject {
        key: ObjectKey,
        /// The error when it does not exist.
        missing: AwsError,
    },
}

/// What a write produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Appended {
        stored: usize,
        last_key: Option<EventKey>,
        stream_id: i64,
        cursor: Option<Position>,
    },
    Compacted(u64),
}

type Reply = Box<dyn FnOnce(Result<Outcome, AwsError>) + Send>;

struct Job {
    op: WriteOp,
    reply: Reply,
}

/// An event as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub stream_id: i64,
    pub key: EventKey,
    pub ingest_ms: i64,
    pub message: String,
}

pub struct Store {
    path: PathBuf,
    sender: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    catalog: Arc<RwLock<Catalog>>,
    readers: Mutex<Vec<Connection>>,
    tail: tokio::sync::broadcast::Sender<Arc<Appended>>,
}

/// Appends a live tail subscriber may fall behind by before it is told it
/// missed some (and reports its session as sampled).
const TAIL_BACKLOG: usize = 4096;

pub fn group_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "The specified log group does not exist.",
    )
}

pub fn stream_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "The specified log stream does not exist.",
    )
}

fn db_failure(e: &rusqlite::Error) -> AwsError {
    tracing::error!(error = %e, "log store write failed");
    AwsError::internal("The log store could not commit the write; retry it.")
}

fn writer_stopped() -> AwsError {
    AwsError::internal("The log store is shutting down; retry the request.")
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_groups (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    retention_days INTEGER,
    kms_key_id TEXT,
    class TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (account, region, name)
);
CREATE TABLE IF NOT EXISTS log_streams (
    id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    first_event_ms INTEGER,
    last_event_ms INTEGER,
    last_ingestion_ms INTEGER,
    stored_bytes INTEGER NOT NULL DEFAULT 0,
    cursor_nanos INTEGER,
    cursor_seq INTEGER,
    UNIQUE (group_id, name)
);
CREATE TABLE IF NOT EXISTS events (
    stream_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ingest_ms INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (stream_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (account, region, kind, scope, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

fn open_writer_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before the writer answers anyone.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn load_catalog(conn: &Connection) -> Result<Catalog, rusqlite::Error> {
    let mut catalog = Catalog::default();
    let mut by_id: BTreeMap<i64, GroupKey> = BTreeMap::new();
    let mut groups = conn.prepare(
        "SELECT id, account, region, name, created_ms, retention_days, kms_key_id, class, tags
         FROM log_groups",
    )?;
    let rows = groups.query_map([], |row| {
        let tags: String = row.get(8)?;
        Ok((
            group_key(
                &row.get::<_, String>(1)?,
                &row.get::<_, String>(2)?,
                &row.get::<_, String>(3)?,
            ),
            GroupInfo {
                id: row.get(0)?,
                name: row.get(3)?,
                created_ms: row.get(4)?,
                retention_days: row.get(5)?,
                kms_key_id: row.get(6)?,
                class: row.get(7)?,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
            },
        ))
    })?;
    for row in rows {
        let (key, info) = row?;
        by_id.insert(info.id, key.clone());
        catalog.groups.insert(
            key,
            GroupEntry {
                info,
                streams: BTreeMap::new(),
            },
        );
    }
    let mut streams = conn.prepare(&format!(
        "SELECT group_id, {STREAM_COLUMNS} FROM log_streams"
    ))?;
    let rows = streams.query_map([], |row| {
        Ok((row.get::<_, i64>(0)?, stream_from_row(row, 1)?))
    })?;
    for row in rows {
        let (group_id, stream) = row?;
        if let Some(entry) = by_id.get(&group_id).and_then(|k| catalog.groups.get_mut(k)) {
            entry.streams.insert(stream.name.clone(), stream);
        }
    }
    let mut objects =
        conn.prepare("SELECT account, region, kind, scope, name, value FROM objects")?;
    let rows = objects.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
        ))
    })?;
    for row in rows {
        let (account, region, kind, scope, name, value) = row?;
        // A kind this version does not know is kept on disk, unused.
        if let Some(kind) = kinds::known(&kind) {
            catalog.objects.insert(
                ObjectKey {
                    account,
                    region,
                    kind,
                    scope,
                    name,
                },
                value,
            );
        }
    }
    Ok(catalog)
}

const STREAM_COLUMNS: &str = "id, name, created_ms, first_event_ms, last_event_ms, \
     last_ingestion_ms, stored_bytes, cursor_nanos, cursor_seq";

fn stream_from_row(row: &rusqlite::Row<'_>, at: usize) -> Result<StreamInfo, rusqlite::Error> {
    let cursor_nanos: Option<i64> = row.get(at + 7)?;
    let cursor_seq: Option<i64> = row.get(at + 8)?;
    Ok(StreamInfo {
        id: row.get(at)?,
        name: row.get(at + 1)?,
        created_ms: row.get(at + 2)?,
        first_event_ms: row.get(at + 3)?,
        last_event_ms: row.get(at + 4)?,
        last_ingestion_ms: row.get(at + 5)?,
        stored_bytes: row.get(at + 6)?,
        cursor: match (cursor_nanos, cursor_seq) {
            (Some(nanos), Some(seq)) => Some(Position {
                nanos,
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
            }),
            _ => None,
        },
    })
}

impl Store {
    /// Opens (creating if needed) the database at `path` and starts the writer.
    pub fn open(path: &Path) -> Result<Store, LogsError> {
        berth_util::private_file::private_database(path).map_err(|source| LogsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = open_writer_connection(path)?;
        let catalog = Arc::new(RwLock::new(load_catalog(&conn)?));
        let next_seq: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let writer_catalog = Arc::clone(&catalog);
        let (tail, _) = tokio::sync::broadcast::channel(TAIL_BACKLOG);
        let writer_tail = tail.clone();
        let writer = std::thread::Builder::new()
            .name("berth-logs-writer".into())
            .spawn(move || run_writer(conn, receiver, writer_catalog, writer_tail, next_seq))
            .map_err(|source| LogsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Store {
            path: path.to_path_buf(),
            sender: Some(sender),
            writer: Some(writer),
            catalog,
            readers: Mutex::new(Vec::new()),
            tail,
        })
    }

    /// Every append from now on, for a live tail session.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Appended>> {
        self.tail.subscribe()
    }

    /// The in-memory view of groups and streams.
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // catalog itself is replaced atomically per delta, so keep serving.
        self.catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enqueue(&self, op: WriteOp, reply: Reply) {
        let job = Job { op, reply };
        match &self.sender {
            Some(sender) => {
                if let Err(mpsc::SendError(job)) = sender.send(job) {
                    (job.reply)(Err(writer_stopped()));
                }
            }
            None => (job.reply)(Err(writer_stopped())),
        }
    }

    /// Queues a write and waits (asynchronously) for its durable commit.
    pub async fn write(&self, op: WriteOp) -> Result<Outcome, AwsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(
            op,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.await.unwrap_or_else(|_| Err(writer_stopped()))
    }

    /// Queues a write and blocks the calling thread until its durable commit.
    pub fn write_blocking(&self, op: WriteOp) -> Result<Outcome, AwsError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(
            op,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or_else(|_| Err(writer_stopped()))
    }

    /// Runs `f` on a pooled read-only connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, AwsError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(|e| read_failure(&e))?,
        };
        let result = f(&conn).map_err(|e| read_failure(&e));
        let mut idle = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn read_failure(e: &rusqlite::Error) -> AwsError {
    tracing::error!(error = %e, "log store read failed");
    AwsError::internal("The log store could not be read; retry the request.")
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued jobs and exit;
        // joining makes sure the database is closed when drop returns.
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Scans one stream's events with `lower < (ts, seq) < upper`, oldest first
/// or newest first, at most `limit` rows.
pub fn scan_stream(
    conn: &Connection,
    stream_id: i64,
    lower: EventKey,
    upper: EventKey,
    ascending: bool,
    limit: usize,
) -> Result<Vec<StoredEvent>, rusqlite::Error> {
    let sql = if ascending {
        "SELECT ts, seq, ingest_ms, message FROM events
         WHERE stream_id = ?1 AND (ts, seq) > (?2, ?3) AND (ts, seq) < (?4, ?5)
         ORDER BY ts, seq LIMIT ?6"
    } else {
        "SELECT ts, seq, ingest_ms, message FROM events
         WHERE stream_id = ?1 AND (ts, seq) > (?2, ?3) AND (ts, seq) < (?4, ?5)
         ORDER BY ts DESC, seq DESC LIMIT ?6"
    };
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(
        params![
            stream_id,
            lower.timestamp,
            lower.seq,
            upper.timestamp,
            upper.seq,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |row| {
            Ok(StoredEvent {
                stream_id,
                key: EventKey {
                    timestamp: row.get(0)?,
                    seq: row.get(1)?,
                },
                ingest_ms: row.get(2)?,
                message: row.get(3)?,
            })
        },
    )?;
    rows.collect()
}

// ----------------------------------------------------------------- writer ---

enum OpFail {
    Aws(AwsError),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for OpFail {
    fn from(e: rusqlite::Error) -> Self {
        OpFail::Db(e)
    }
}

impl From<AwsError> for OpFail {
    fn from(e: AwsError) -> Self {
        OpFail::Aws(e)
    }
}

fn run_writer(
    mut conn: Connection,
    receiver: mpsc::Receiver<Job>,
    catalog: Arc<RwLock<Catalog>>,
    tail: tokio::sync::broadcast::Sender<Arc<Appended>>,
    mut next_seq: i64,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let ops: Vec<&WriteOp> = jobs.iter().map(|j| &j.op).collect();
        let tailing = tail.receiver_count() > 0;
        match commit_batch(&mut conn, &ops, &mut next_seq, tailing) {
            Ok((results, deltas)) => {
                let mut appended = Vec::new();
                {
                    let mut catalog = catalog
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for delta in deltas {
                        match delta {
                            Delta::Appended(batch) => appended.push(batch),
                            other => catalog.apply(other),
                        }
                    }
                }
                for batch in appended {
                    // No receiver left is fine: nobody is tailing.
                    let _ = tail.send(batch);
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    (job.reply)(result);
                }
            }
            Err(e) => {
                let error = db_failure(&e);
                for job in jobs {
                    (job.reply)(Err(error.clone()));
                }
            }
        }
    }
}

type BatchResult = (Vec<Result<Outcome, AwsError>>, Vec<Delta>);

fn commit_batch(
    conn: &mut Connection,
    ops: &[&WriteOp],
    next_seq: &mut i64,
    tailing: bool,
) -> Result<BatchResult, rusqlite::Error> {
    let mut tx = conn.transaction()?;
    let mut results = Vec::with_capacity(ops.len());
    let mut deltas = Vec::new();
    for op in ops {
        let savepoint = tx.savepoint()?;
        let mut op_deltas = Vec::new();
        match apply_op(&savepoint, op, next_seq, tailing, &mut op_deltas) {
            Ok(outcome) => {
                savepoint.commit()?;
                deltas.extend(op_deltas);
                results.push(Ok(outcome));
            }
            // Dropping the savepoint rolls back this job only.
            Err(OpFail::Aws(e)) => {
                drop(savepoint);
                results.push(Err(e));
            }
            Err(OpFail::Db(e)) => return Err(e),
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?1)",
        [*next_seq],
    )?;
    tx.commit()?;
    Ok((results, deltas))
}

fn find_group(tx: &Connection, key: &GroupKey) -> Result<Option<GroupInfo>, rusqlite::Error> {
    tx.prepare_cached(
        "SELECT id, created_ms, retention_days, kms_key_id, class, tags FROM log_groups
         WHERE account = ?1 AND region = ?2 AND name = ?3",
    )?
    .query_row(params![key.0, key.1, key.2], |row| {
        let tags: String = row.get(5)?;
        Ok(GroupInfo {
            id: row.get(0)?,
            name: key.2.clone(),
            created_ms: row.get(1)?,
            retention_days: row.get(2)?,
            kms_key_id: row.get(3)?,
            class: row.get(4)?,
            tags: serde_json::from_str(&tags).unwrap_or_default(),
        })
    })
    .optional()
}

fn find_stream(
    tx: &Connection,
    group_id: i64,
    name: &str,
) -> Result<Option<StreamInfo>, rusqlite::Error> {
    tx.prepare_cached(&format!(
        "SELECT {STREAM_COLUMNS} FROM log_streams WHERE group_id = ?1 AND name = ?2"
    ))?
    .query_row(params![group_id, name], |row| stream_from_row(row, 0))
    .optional()
}

fn insert_group(tx: &Connection, key: &GroupKey, group: &NewGroup) -> Result<GroupInfo, OpFail> {
    let tags = serde_json::to_string(&group.tags)
        .map_err(|e| OpFail::Aws(AwsError::internal(format!("could not encode tags: {e}"))))?;
    tx.execute(
        "INSERT INTO log_groups (account, region, name, created_ms, retention_days, kms_key_id, class, tags)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7)",
        params![key.0, key.1, key.2, group.created_ms, group.kms_key_id, group.class, tags],
    )?;
    Ok(GroupInfo {
        id: tx.last_insert_rowid(),
        name: key.2.clone(),
        created_ms: group.created_ms,
        retention_days: None,
        kms_key_id: group.kms_key_id.clone(),
        class: group.class.clone(),
        tags: group.tags.clone(),
    })
}

fn delete_stream_events(tx: &Connection, stream_id: i64) -> Result<(), rusqlite::Error> {
    tx.execute("DELETE FROM events WHERE stream_id = ?1", [stream_id])?;
    Ok(())
}

fn save_stream(tx: &Connection, stream: &StreamInfo) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "UPDATE log_streams SET first_event_ms = ?2, last_event_ms = ?3, last_ingestion_ms = ?4,
         stored_bytes = ?5, cursor_nanos = ?6, cursor_seq = ?7 WHERE id = ?1",
    )?
    .execute(params![
        stream.id,
        stream.first_event_ms,
        stream.last_event_ms,
        stream.last_ingestion_ms,
        stream.stored_bytes,
        stream.cursor.map(|c| c.nanos),
        stream.cursor.map(|c| i64::from(c.seq)),
    ])?;
    Ok(())
}

fn apply_op(
    tx: &Connection,
    op: &WriteOp,
    next_seq: &mut i64,
    tailing: bool,
    deltas: &mut Vec<Delta>,
) -> Result<Outcome, OpFail> {
    match op {
        WriteOp::CreateGroup { key, group } => {
            if find_group(tx, key)?.is_some() {
                return Err(OpFail::Aws(AwsError::bad_request(
                    "ResourceAlreadyExistsException",
                    "The specified log group already exists",
                )));
            }
            let info = insert_group(tx, key, group)?;
            deltas.push(Delta::PutGroup(key.clone(), info));
            Ok(Outcome::Done)
        }
        WriteOp::DeleteGroup { key } => {
            let group = find_group(tx, key)?.ok_or_else(group_not_found)?;
            let protected: Option<String> = tx
                .query_row(
                    "SELECT value FROM objects WHERE account = ?1 AND region = ?2 AND kind = ?3
                     AND scope = ?4 AND name = ''",
                    params![key.0, key.1, kinds::DELETION_PROTECTION, key.2],
                    |row| row.get(0),
                )
                .optional()?;
            if protected.is_some_and(|v| v == "true") {
                return Err(OpFail::Aws(AwsError::bad_request(
                    "InvalidOperationException",
                    format!(
                        "Log group {} has deletion protection enabled; disable it with \
                         PutLogGroupDeletionProtection before deleting the log group.",
                        key.2
                    ),
                )));
            }
            let owned: Vec<(String, String)> = tx
                .prepare(
                    "SELECT kind, name FROM objects WHERE account = ?1 AND region = ?2 AND scope = ?3",
                )?
                .query_map(params![key.0, key.1, key.2], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            tx.execute(
                "DELETE FROM objects WHERE account = ?1 AND region = ?2 AND scope = ?3",
                params![key.0, key.1, key.2],
            )?;
            for (kind, name) in owned {
                if let Some(kind) = kinds::known(&kind) {
                    deltas.push(Delta::RemoveObject(ObjectKey {
                        account: key.0.clone(),
                        region: key.1.clone(),
                        kind,
                        scope: key.2.clone(),
                        name,
                    }));
                }
            }
            tx.execute(
                "DELETE FROM events WHERE stream_id IN (SELECT id FROM log_streams WHERE group_id = ?1)",
                [group.id],
            )?;
            tx.execute("DELETE FROM log_streams WHERE group_id = ?1", [group.id])?;
            tx.execute("DELETE FROM log_groups WHERE id = ?1", [group.id])?;
            deltas.push(Delta::RemoveGroup(key.clone()));
            Ok(Outcome::Done)
        }
        WriteOp::ChangeGroup { key, change } => {
            let mut group = find_group(tx, key)?.ok_or_else(group_not_found)?;
            match change {
                GroupChange::SetRetention(days) => group.retention_days = *days,
                GroupChange::Tag(tags) => {
                    let new = tags.iter().map(|(k, v)| berth_model::tags::TagRef {
                        key: k.as_str(),
                        value: v.as_str(),
                    });
                    berth_model::tags::check_user_tags(new, group.tags.keys().map(String::as_str))
                        .map_err(crate::limits::invalid)?;
                    group
                        .tags
                        .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                GroupChange::Untag(keys) => {
                    for k in keys {
                        group.tags.remove(k);
                    }
                }
            }
            let tags = serde_json::to_string(&group.tags).map_err(|e| {
                OpFail::Aws(AwsError::internal(format!("could not encode tags: {e}")))
            })?;
            tx.execute(
                "UPDATE log_groups SET retention_days = ?2, tags = ?3 WHERE id = ?1",
                params![group.id, group.retention_days, tags],
            )?;
            deltas.push(Delta::PutGroup(key.clone(), group));
            Ok(Outcome::Done)
        }
        WriteOp::CreateStream {
            key,
            stream,
            created_ms,
            create_group,
            exists_ok,
        } => {
            let group = match (find_group(tx, key)?, create_group) {
                (Some(group), _) => group,
                (None, Some(new_group)) => {
                    let info = insert_group(tx, key, new_group)?;
                    deltas.push(Delta::PutGroup(key.clone(), info.clone()));
                    info
                }
                (None, None) => return Err(OpFail::Aws(group_not_found())),
            };
            if find_stream(tx, group.id, stream)?.is_some() {
                if *exists_ok {
                    return Ok(Outcome::Done);
                }
                return Err(OpFail::Aws(AwsError::bad_request(
                    "ResourceAlreadyExistsException",
                    "The specified log stream already exists",
                )));
            }
            tx.execute(
                "INSERT INTO log_streams (group_id, name, created_ms) VALUES (?1, ?2, ?3)",
                params![group.id, stream, created_ms],
            )?;
            deltas.push(Delta::PutStream(
                key.clone(),
                StreamInfo {
                    id: tx.last_insert_rowid(),
                    name: stream.clone(),
                    created_ms: *created_ms,
                    first_event_ms: None,
                    last_event_ms: None,
                    last_ingestion_ms: None,
                    stored_bytes: 0,
                    cursor: None,
                },
            ));
            Ok(Outcome::Done)
        }
        WriteOp::DeleteStream { key, stream } => {
            let group = find_group(tx, key)?.ok_or_else(group_not_found)?;
            let info = find_stream(tx, group.id, stream)?.ok_or_else(stream_not_found)?;
            delete_stream_events(tx, info.id)?;
            tx.execute("DELETE FROM log_streams WHERE id = ?1", [info.id])?;
            deltas.push(Delta::RemoveStream(key.clone(), stream.clone()));
            Ok(Outcome::Done)
        }
        WriteOp::Append {
            key,
            stream,
            events,
            ingest_ms,
            deduplicate,
            advance_cursor_to,
        } => {
            let group = find_group(tx, key)?.ok_or_else(group_not_found)?;
            let mut info = find_stream(tx, group.id, stream)?.ok_or_else(stream_not_found)?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (stream_id, ts, seq, ingest_ms, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut stored = 0usize;
            let mut last_key = None;
            let start_cursor = info.cursor;
            let mut tailed = Vec::new();
            for event in events {
                if *deduplicate {
                    match (event.position, start_cursor) {
                        (Some(position), Some(cursor)) if position <= cursor => continue,
                        _ => {}
                    }
                }
                let key = EventKey {
                    timestamp: event.timestamp,
                    seq: *next_seq,
                };
                *next_seq += 1;
                insert.execute(params![
                    info.id,
                    key.timestamp,
                    key.seq,
                    ingest_ms,
                    event.message
                ])?;
                stored += 1;
                last_key = Some(key);
                if tailing {
                    tailed.push((event.timestamp, event.message.clone()));
                }
                info.first_event_ms = Some(
                    info.first_event_ms
                        .map_or(event.timestamp, |t| t.min(event.timestamp)),
                );
                info.last_event_ms = Some(
                    info.last_event_ms
                        .map_or(event.timestamp, |t| t.max(event.timestamp)),
                );
                info.stored_bytes += i64::try_from(event.message.len()).unwrap_or(i64::MAX);
            }
            if let Some(position) = advance_cursor_to {
                info.cursor = Some(info.cursor.map_or(*position, |c| c.max(*position)));
            }
            if stored > 0 {
                info.last_ingestion_ms = Some(*ingest_ms);
            }
            if stored > 0 || info.cursor != start_cursor {
                save_stream(tx, &info)?;
                deltas.push(Delta::PutStream(key.clone(), info.clone()));
            }
            if !tailed.is_empty() {
                deltas.push(Delta::Appended(Arc::new(Appended {
                    group: key.clone(),
                    stream: stream.clone(),
                    ingest_ms: *ingest_ms,
                    events: tailed,
                })));
            }
            Ok(Outcome::Appended {
                stored,
                last_key,
                stream_id: info.id,
                cursor: info.cursor,
            })
        }
        WriteOp::Compact { now_ms } => compact(tx, *now_ms, deltas),
        WriteOp::PutObject { key, value, rules } => put_object(tx, key, value, rules, deltas),
        WriteOp::DeleteObject { key, missing } => {
            let removed = tx.execute(
                "DELETE FROM objects WHERE account = ?1 AND region = ?2 AND kind = ?3
                 AND scope = ?4 AND name = ?5",
                params![key.account, key.region, key.kind, key.scope, key.name],
            )?;
            if removed == 0 {
                return Err(OpFail::Aws(missing.clone()));
            }
            deltas.push(Delta::RemoveObject(key.clone()));
            Ok(Outcome::Done)
        }
    }
}

fn put_object(
    tx: &Connection,
    key: &ObjectKey,
    value: &str,
    rules: &PutRules,
    deltas: &mut Vec<Delta>,
) -> Result<Outcome, OpFail> {
    if let Some(group) = &rules.group {
        find_group(tx, group)?.ok_or_else(group_not_found)?;
    }
    let exists: bool = tx
        .query_row(
            "SELECT 1 FROM objects WHERE account = ?1 AND region = ?2 AND kind = ?3
             AND scope = ?4 AND name = ?5",
            params![key.account, key.region, key.kind, key.scope, key.name],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if let (false, Some(error)) = (exists, &rules.must_exist) {
        return Err(OpFail::Aws(error.clone()));
    }
    if let (true, Some(error)) = (exists, &rules.must_not_exist) {
        return Err(OpFail::Aws(error.clone()));
    }
    if let (false, Some((max, error))) = (exists, &rules.max_in_scope) {
        let count: i64 = tx.query_row(
            "SELECT count(*) FROM objects WHERE account = ?1 AND region = ?2 AND kind = ?3
             AND scope = ?4",
            params![key.account, key.region, key.kind, key.scope],
            |row| row.get(0),
        )?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= *max {
            return Err(OpFail::Aws(error.clone()));
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO objects (account, region, kind, scope, name, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.account,
            key.region,
            key.kind,
            key.scope,
            key.name,
            value
        ],
    )?;
    deltas.push(Delta::PutObject(key.clone(), value.to_string()));
    Ok(Outcome::Done)
}

/// Deletes events older than each group's retention.
fn compact(tx: &Connection, now_ms: i64, deltas: &mut Vec<Delta>) -> Result<Outcome, OpFail> {
    let groups: Vec<(GroupKey, i64, i32)> = tx
        .prepare(
            "SELECT account, region, name, id, retention_days FROM log_groups
             WHERE retention_days IS NOT NULL",
        )?
        .query_map([], |row| {
            Ok((
                group_key(
                    &row.get::<_, String>(0)?,
                    &row.get::<_, String>(1)?,
                    &row.get::<_, String>(2)?,
                ),
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut removed = 0u64;
    for (key, group_id, days) in groups {
        let cutoff = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        let streams: Vec<StreamInfo> = tx
            .prepare(&format!(
                "SELECT {STREAM_COLUMNS} FROM log_streams WHERE group_id = ?1 AND first_event_ms < ?2"
            ))?
            .query_map(params![group_id, cutoff], |row| stream_from_row(row, 0))?
            .collect::<Result<_, _>>()?;
        for mut stream in streams {
            let (count, bytes): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(length(CAST(message AS BLOB))), 0) FROM events
                 WHERE stream_id = ?1 AND ts < ?2",
                params![stream.id, cutoff],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            if count == 0 {
                continue;
            }
            tx.execute(
                "DELETE FROM events WHERE stream_id = ?1 AND ts < ?2",
                params![stream.id, cutoff],
            )?;
            removed += u64::try_from(count).unwrap_or(0);
            stream.stored_bytes = (stream.stored_bytes - bytes).max(0);
            stream.first_event_ms = tx.query_row(
                "SELECT min(ts) FROM events WHERE stream_id = ?1",
                [stream.id],
                |row| row.get(0),
            )?;
            if stream.first_event_ms.is_none() {
                stream.last_event_ms = None;
            }
            save_stream(tx, &stream)?;
            deltas.push(Delta::PutStream(key.clone(), stream));
        }
    }
    Ok(Outcome::Compacted(removed))
}

/// Events of several streams merged in `(ts, seq)` order, read in chunks.
pub struct MergedScan<'c> {
    conn: &'c Connection,
    upper: EventKey,
    chunk: usize,
    cursors: Vec<StreamCursor>,
}

struct StreamCursor {
    stream_id: i64,
    after: EventKey,
    buffer: std::collections::VecDeque<StoredEvent>,
    exhausted: bool,
}

impl<'c> MergedScan<'c> {
    /// Scans `stream_ids` for `lower < (ts, seq) < upper`.
    pub fn new(
        conn: &'c Connection,
        stream_ids: &[i64],
        lower: EventKey,
        upper: EventKey,
        chunk: usize,
    ) -> Self {
        MergedScan {
            conn,
            upper,
            chunk: chunk.max(1),
            cursors: stream_ids
                .iter()
                .map(|id| StreamCursor {
                    stream_id: *id,
                    after: lower,
                    buffer: Default::default(),
                    exhausted: false,
                })
                .collect(),
        }
    }

    /// The next event across all streams, or `None` when all are done.
    pub fn next_event(&mut self) -> Result<Option<StoredEvent>, rusqlite::Error> {
        let mut best: Option<usize> = None;
        for i in 0..self.cursors.len() {
            let cursor = &mut self.cursors[i];
            if cursor.buffer.is_empty() && !cursor.exhausted {
                let rows = scan_stream(
                    self.conn,
                    cursor.stream_id,
                    cursor.after,
                    self.upper,
                    true,
                    self.chunk,
                )?;
                cursor.exhausted = rows.len() < self.chunk;
                if let Some(last) = rows.last() {
                    cursor.after = last.key;
                }
                cursor.buffer.extend(rows);
            }
            if let Some(head) = self.cursors[i].buffer.front() {
                let better = match best {
                    None => true,
                    Some(b) => self.cursors[b]
                        .buffer
                        .front()
                        .is_none_or(|current| head.key < current.key),
                };
                if better {
                    best = Some(i);
                }
            }
        }
        Ok(best.and_then(|i| self.cursors[i].buffer.pop_front()))
    }
}

#[cfg(all(test, unix))]
mod file_mode_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_log_database_and_its_wal_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&path).unwrap();
        for file in ["logs.db", "logs.db-wal", "logs.db-shm"] {
            let file = dir.path().join(file);
            if file.exists() {
                let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", file.display());
            }
        }
        assert!(dir.path().join("logs.db-wal").exists());
        drop(store);
    }
}
