//! The HTTP listener: accepts connections and serves a router on each, with
//! the limits that keep clients who never authenticate from exhausting the
//! server (issue: slowloris and idle-connection floods).
//!
//! - **Header and idle timeout**: a connection must deliver a complete
//!   request head within `header_timeout` of starting to wait for one, so a
//!   connection idle between requests is closed after the same time (hyper's
//!   `header_read_timeout`, which runs from the moment the connection waits
//!   for a head).
//! - **Stall timeout**: a connection on which no byte moved in either
//!   direction for `stall_timeout` is closed, whatever it was doing (a body
//!   trickled byte by byte stops counting as progress only when it stops).
//!   Agents' long polls wait at most 30 s, well inside it.
//! - **Connection limit**: at `max_connections`, a new connection evicts the
//!   connection that has been quiet longest among those with no request in
//!   flight (half-sent heads and idle keep-alives), so a flood of idle
//!   sockets cannot lock out a health check or a signed call; when every
//!   connection has a request in flight, the new one is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time allowed for a request head, counted from the moment the
    /// connection waits for one (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// A connection on which nothing moved for this long is closed.
    pub stall_timeout: Duration,
    /// Connections held at most; see the module documentation.
    pub max_connections: usize,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(120),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// One connection's liveness, shared between its task and the listener.
struct ConnState {
    /// Milliseconds since the listener started, when a byte last moved.
    last_io_ms: AtomicU64,
    /// Requests whose response head has not been produced yet.
    in_flight: AtomicUsize,
    close: Notify,
}

struct Connections {
    started: Instant,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Connections {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            last_io_ms: AtomicU64::new(self.now_ms()),
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
        });
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Closes the connection quiet longest among those with no request in
    /// flight. Whether there was one.
    fn evict_quietest(&self) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let victim = live
            .values()
            .filter(|c| c.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.last_io_ms.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                // `notify_one` stores a permit, so a connection task not yet
                // waiting still sees it.
                c.close.notify_one();
                // Count it as active so the next eviction picks another.
                c.last_io_ms.store(u64::MAX, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Closes connections on which nothing moved for `stall`.
    fn close_stalled(&self, stall: Duration) {
        let now = self.now_ms();
        let limit = stall.as_millis() as u64;
        for c in self.live.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let last = c.last_io_ms.load(Ordering::Relaxed);
            if last != u64::MAX && now.saturating_sub(last) > limit {
                c.close.notify_one();
                c.last_io_ms.store(u64::MAX, Ordering::Relaxed);
            }
        }
    }
}

/// A socket that records when bytes last moved on it.
struct ActivityIo<T> {
    inner: T,
    state: Arc<ConnState>,
    connections: Arc<Connections>,
}

impl<T> ActivityIo<T> {
    fn touch(&self) {
        let now = self.connections.now_ms();
        // A connection marked for closing stays marked.
        let _ = self
            .state
            .last_io_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                (last != u64::MAX).then_some(now)
            });
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Decrements a connection's in-flight count when a request's response head
/// is ready (or the request is dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// requests in flight finish for up to `limits.shutdown_grace`. Each request
/// carries `ConnectInfo<SocketAddr>` (the peer) in its extensions.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let connections = Arc::new(Connections {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        live: Mutex::new(HashMap::new()),
    });
    let (stopping_tx, stopping) = watch::channel(false);
    let reaper = {
        let connections = connections.clone();
        let stall = limits.stall_timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                connections.close_stalled(stall);
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset
                // before accept: make room and go on rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                connections.evict_quietest();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if connections.len() >= limits.max_connections && !connections.evict_quietest() {
            tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached; closing the new connection");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (id, state) = connections.add();
        let io = ActivityIo {
            inner: stream,
            state: state.clone(),
            connections: connections.clone(),
        };
        tokio::spawn(serve_connection(
            io,
            peer,
            router.clone(),
            limits.header_timeout,
            state,
            stopping.clone(),
            connections.clone(),
            id,
        ));
    }
    reaper.abort();
    let _ = stopping_tx.send(true);
    let deadline = Instant::now() + limits.shutdown_grace;
    while connections.len() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    io: ActivityIo<tokio::net::TcpStream>,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    state: Arc<ConnState>,
    mut stopping: watch::Receiver<bool>,
    connections: Arc<Connections>,
    id: u64,
) {
    let request_state = state.clone();
    let service = tower::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::start(&request_state);
        let router = router.clone();
        async move {
            let response = tower::ServiceExt::oneshot(router, request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let mut graceful = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                break;
            }
            () = state.close.notified() => break,
            changed = stopping.changed(), if !graceful => {
                graceful = true;
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
    connections.remove(id);
}

/// Raises this process's open-file limit to its hard limit, so the
/// connection limit is not the descriptor limit. Returns the limit now in
/// force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The default connection limit for a descriptor limit: leave room for the
/// store, logs, blobs and Docker's socket.
pub fn default_max_connections(fd_limit: u64) -> usize {
    let usable = fd_limit.saturating_sub(256).max(64);
    usable.min(65_536) as usize
}
