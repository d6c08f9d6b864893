//! Berth's storage interface: a revisioned key-value store with compare-and-swap
//! transactions and ordered watches, shaped like etcd's API so that an etcd
//! backend is a thin adapter (as k3s's kine does for Kubernetes).
//!
//! Reads (`get`, `range`) are served from memory and never block on disk.
//! Writes go through [`Store::mutate`]: a closure that reads a consistent view
//! and returns the operations to apply. The backend runs it so that no other
//! write interleaves between its reads and its writes, makes the result durable
//! and only then makes it visible and resolves the call.
//!
//! Architecture invariant: an acknowledged write is durable, and every watcher
//! sees every change after its starting revision, in revision order, exactly once.

mod elections;
mod etcd;
mod etcd_client;
mod in_memory;
mod leased_set;
mod memory;
mod sqlite;
mod watch;

use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use elections::{Elections, EtcdElections, Leadership, SoleServer};
pub use etcd::{EtcdOptions, EtcdStore};
pub use in_memory::MemoryStore;
pub use leased_set::LeasedSet;
pub use sqlite::{SqliteOptions, SqliteStore};
pub use watch::Watch;

/// A store revision: every committed mutation gets the next one. 0 means "none".
pub type Revision = u64;

/// A stored key with its value and revision metadata (as etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the mutation that created the key.
    pub create_revision: Revision,
    /// Revision of the last mutation that wrote the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after creation).
    pub version: u64,
}

/// One write inside a mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A condition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals `revision`; 0 means the key must be absent.
    ModRevision { key: String, revision: Revision },
}

/// An etcd-style transaction: if every compare holds, apply `ops`.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// What a [`Txn`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The revision the transaction committed at, when it wrote something.
    pub revision: Option<Revision>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watcher. For deletes `kv.value` is empty and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// A consistent read-only view of the store.
pub trait ReadView {
    fn get(&self, key: &str) -> Option<KeyValue>;
    /// Keys starting with `prefix`, in key order, strictly after `start_after`
    /// when given, at most `limit` of them.
    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Vec<KeyValue>;
}

/// Returned by a mutation closure that decides not to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted;

/// A mutation: reads a view, returns the writes to apply. Backends that use
/// optimistic concurrency may call it more than once.
pub type MutationFn = Box<dyn FnMut(&dyn ReadView) -> Result<Vec<Op>, Aborted> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("revision {requested} has been compacted (oldest available is {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("a mutation failed: {0}")]
    Mutation(String),
}

/// The storage interface every backend implements.
#[async_trait::async_trait]
pub trait Store: ReadView + Send + Sync + 'static {
    /// The latest committed revision.
    fn revision(&self) -> Revision;

    /// Number of keys under `prefix`.
    fn count(&self, prefix: &str) -> usize;

    /// Runs `f` against the latest state and durably applies the operations it
    /// returns as one revision. Returns that revision, or `None` when `f`
    /// aborted or returned no effective writes.
    async fn mutate(&self, f: MutationFn) -> Result<Option<Revision>, StoreError>;

    /// Streams every change under `prefix` with a revision greater than `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError>;

    /// A short backend name for health reports, e.g. `sqlite`.
    fn backend(&self) -> &'static str;
}

/// Typed conveniences over [`Store::mutate`].
#[async_trait::async_trait]
pub trait StoreExt: Store {
    /// Runs an etcd-style compare-and-swap transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let Txn { compares, ops } = txn;
        let outcome = self
            .update(move |view| {
                let holds = compares.iter().all(|c| match c {
                    Compare::ModRevision { key, revision } => {
                        view.get(key).map_or(0, |kv| kv.mod_revision) == *revision
                    }
                });
                if holds {
                    Ok((ops.clone(), ()))
                } else {
                    Err(())
                }
            })
            .await?;
        Ok(match outcome {
            Ok((revision, ())) => TxnOutcome {
                succeeded: true,
                revision,
            },
            Err(()) => TxnOutcome {
                succeeded: false,
                revision: None,
            },
        })
    }

    /// Runs `f` as a mutation that also produces a value (`Ok`) or a reason not
    /// to write (`Err`). The outer result is the store's own failure.
    async fn update<T, E, F>(
        &self,
        mut f: F,
    ) -> Result<Result<(Option<Revision>, T), E>, StoreError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnMut(&dyn ReadView) -> Result<(Vec<Op>, T), E> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
        let inner = slot.clone();
        let revision = self
            .mutate(Box::new(move |view| {
                let (ops, result) = match f(view) {
                    Ok((ops, value)) => (Ok(ops), Ok(value)),
                    Err(e) => (Err(Aborted), Err(e)),
                };
                *inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                ops
            }))
            .await?;
        let result = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| StoreError::Mutation("the mutation did not run".into()))?;
        Ok(result.map(|value| (revision, value)))
    }

    /// Writes `value` at `key` unconditionally.
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let op = Op::put(key, value);
        let rev = self.mutate(Box::new(move |_| Ok(vec![op.clone()]))).await?;
        rev.ok_or_else(|| StoreError::Mutation("put wrote nothing".into()))
    }

    /// Deletes `key`; returns the revision when it existed.
    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        let op = Op::delete(key);
        self.mutate(Box::new(move |_| Ok(vec![op.clone()]))).await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The smallest string greater than every string starting with `prefix`, or
/// `None` when no such bound exists (all bytes 0xff).
pub fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod etcd_tests;
