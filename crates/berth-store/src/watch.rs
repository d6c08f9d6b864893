//! Watches: a change stream under a key prefix that starts at any retained
//! revision, catches up from the stored history and then follows live commits.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::{Event, Revision, StoreError};

/// Revisions read from history per page while catching up.
const HISTORY_PAGE: u64 = 1024;

/// A stream of changes, in revision order.
pub struct Watch {
    rx: mpsc::Receiver<Result<Event, StoreError>>,
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
    // Subscribe before reading history so nothing committed in between is lost;
    // the cursor drops what history already delivered.
    let live = source.subscribe();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(source, prefix, after, live, tx));
    Ok(Watch { rx })
}

type Sink = mpsc::Sender<Result<Event, StoreError>>;

/// Delivers history from `cursor` up to the current revision. Returns the new
/// cursor, or `None` when the watcher went away or failed.
async fn catch_up<S: EventSource>(
    source: &Arc<S>,
    prefix: &str,
    mut cursor: Revision,
    tx: &Sink,
) -> Option<Revision> {
    loop {
        let target = source.revision();
        if cursor >= target {
            return Some(cursor);
        }
        let upto = target.min(cursor + HISTORY_PAGE);
        let reader = source.clone();
        let page = tokio::task::spawn_blocking(move || reader.history(cursor, upto)).await;
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return None;
            }
            Err(e) => {
                let _ = tx.send(Err(StoreError::Io(e.to_string()))).await;
                return None;
            }
        };
        let compact_revision = source.compact_revision();
        if compact_revision > cursor {
            let _ = tx
                .send(Err(StoreError::Compacted {
                    requested: cursor,
                    compact_revision,
                }))
                .await;
            return None;
        }
        for event in page {
            if event.kv.key.starts_with(prefix) && tx.send(Ok(event)).await.is_err() {
                return None;
            }
        }
        cursor = upto;
    }
}

async fn run<S: EventSource>(
    source: Arc<S>,
    prefix: String,
    after: Revision,
    mut live: broadcast::Receiver<Arc<[Event]>>,
    tx: Sink,
) {
    let Some(mut cursor) = catch_up(&source, &prefix, after, &tx).await else {
        return;
    };
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            _ = tx.closed() => return,
        };
        match received {
            Ok(batch) => {
                for event in batch.iter() {
                    if event.kv.mod_revision <= cursor {
                        continue;
                    }
                    if event.kv.key.starts_with(&prefix)
                        && tx.send(Ok(event.clone())).await.is_err()
                    {
                        return;
                    }
                }
                if let Some(last) = batch.last() {
                    cursor = cursor.max(last.kv.mod_revision);
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match catch_up(&source, &prefix, cursor, &tx).await {
                    Some(next) => cursor = next,
                    None => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
