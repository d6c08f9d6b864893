//! The data plane's runtimes: one single-threaded tokio runtime per core,
//! each on its own thread, as haproxy runs one event loop per thread. A
//! client connection is accepted on the caller's runtime and handed whole
//! to one of them (round robin), so everything it does (its requests, its
//! target connections, their wake-ups) stays on one thread; target
//! connections are pooled per runtime ([`shard`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;

/// Pools keep this many shelves at most (runtimes beyond it share).
pub const MAX_SHARDS: usize = 64;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shelf of the runtime running on this thread: 1.. for the data
/// plane's runtimes, 0 anywhere else (health checks, tests).
pub fn shard() -> usize {
    SHARD.with(Cell::get)
}

/// The running runtimes; dropping this stops them (their tasks are
/// dropped, closing their connections).
pub struct Runtimes {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: tokio::sync::watch::Sender<()>,
}

impl Runtimes {
    /// One runtime per available core (at least one). When a thread or
    /// runtime cannot be made, fewer run; with none, connections stay on
    /// the caller's runtime.
    pub fn start() -> Arc<Runtimes> {
        let count = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, MAX_SHARDS - 1);
        let (stop, stopped) = tokio::sync::watch::channel(());
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut stopped = stopped.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("berth-lb-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::warn!(error = %e, "starting a load balancer runtime failed");
                            return;
                        }
                    };
                    SHARD.with(|s| s.set(index + 1));
                    let _ = tx.send(runtime.handle().clone());
                    // Runs until the data plane is dropped.
                    runtime.block_on(async move { while stopped.changed().await.is_ok() {} });
                });
            if spawned.is_ok() {
                if let Ok(handle) = rx.recv() {
                    handles.push(handle);
                }
            }
        }
        Arc::new(Runtimes {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The runtime the next connection goes to (None: keep it where it is).
    pub fn next(&self) -> Option<&Handle> {
        if self.handles.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_round_robin_to_runtimes_with_shelves_of_their_own() {
        assert_eq!(shard(), 0);
        let runtimes = Runtimes::start();
        let count = runtimes.handles.len();
        assert!(count >= 1);
        let mut seen = Vec::new();
        for _ in 0..count * 2 {
            let handle = runtimes.next().expect("a runtime");
            let (tx, rx) = tokio::sync::oneshot::channel();
            handle.spawn(async move {
                let _ = tx.send((shard(), std::thread::current().name().map(str::to_string)));
            });
            seen.push(rx.await.expect("the task ran"));
        }
        let mut shards: Vec<usize> = seen.iter().map(|(s, _)| *s).collect();
        // Each runtime in turn, twice, each with its own shelf (1..).
        assert_eq!(shards[..count], shards[count..]);
        shards.truncate(count);
        shards.sort_unstable();
        assert_eq!(shards, (1..=count).collect::<Vec<_>>());
        assert!(seen
            .iter()
            .all(|(_, name)| name.as_deref().is_some_and(|n| n.starts_with("berth-lb-"))));
        // Dropped: the threads end.
        let handle = runtimes.next().expect("a runtime").clone();
        drop(runtimes);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                handle.spawn(async move {
                    let _ = tx.send(());
                });
                if rx.await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the runtimes stopped");
    }
}
