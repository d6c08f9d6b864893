//! Berth's load balancers' data plane (ELBv2 ALB and NLB): listeners bound on the load balancers'
//! addresses, rule routing, proxying over pooled connections, TLS termination with SNI, TCP
//! pass-through, and health checks. Driven by a plain [`DataPlaneConfig`]; reports target health on
//! a channel. It knows nothing about the store, ARNs' meaning or IAM.

pub mod config;
mod group;
mod h1pool;
mod io;
pub mod matching;
mod proxy;
mod runtimes;
mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::HeaderValue;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};

pub use config::*;
use group::GroupRt;
use proxy::{ActionRt, ConnCtx, FwdGroup, ListenerSnap, RuleRt};

/// How long a connection from a source the security groups refuse is held before it is closed.
pub const HELD_FOR: Duration = Duration::from_secs(30);
/// At most this many such connections are held at once; beyond, they are closed at once.
pub const MAX_HELD: usize = 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A task (an accept loop, a connection's watcher); dropping it stops the task soon (an accept
/// loop's socket closes then), `close` at once.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn close(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ListenerRt {
    snap: Arc<ArcSwap<ListenerSnap>>,
    sockets: HashMap<SocketAddr, AbortOnDrop>,
    /// Set when the listener is removed: its open HTTP connections finish
    /// the requests under way and close, instead of serving more with the
    /// removed listener's rules.
    removed: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Arc<GroupRt>>,
    listeners: HashMap<String, ListenerRt>,
}

/// The running data plane. Dropping it closes every listener and stops the health checks.
pub struct DataPlane {
    state: tokio::sync::Mutex<State>,
    health_tx: mpsc::Sender<HealthReport>,
    held: Arc<Semaphore>,
    /// Where client connections are served (one runtime per core).
    runtimes: Arc<runtimes::Runtimes>,
}

impl DataPlane {
    /// A data plane serving nothing yet, and the receiver of its health reports.
    pub fn new() -> (DataPlane, mpsc::Receiver<HealthReport>) {
        let (tx, rx) = mpsc::channel(4096);
        (
            DataPlane {
                state: tokio::sync::Mutex::new(State::default()),
                health_tx: tx,
                held: Arc::new(Semaphore::new(MAX_HELD)),
                runtimes: runtimes::Runtimes::start(),
            },
            rx,
        )
    }

    /// Makes the data plane serve `config`: binds new listener addresses, closes removed ones (their
    /// open HTTP connections finish the requests under way, then close), swaps rules and targets in place, keeps the health of targets
    /// that stay. Idempotent. Must run inside a tokio runtime.
    pub async fn apply(&self, config: DataPlaneConfig) -> Vec<BindError> {
        let mut st = self.state.lock().await;
        let mut errors = Vec::new();
        for (id, cfg) in &config.target_groups {
            match st.groups.get(id) {
                Some(g) => g.update(cfg),
                None => {
                    let g = GroupRt::new(id.clone(), cfg, self.health_tx.clone());
                    st.groups.insert(id.clone(), g);
                }
            }
        }
        st.groups
            .retain(|id, _| config.target_groups.contains_key(id));

        // Close first, so an address moving between listeners can be bound again.
        let mut snaps = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            match build_snap(l, &st.groups) {
                Ok(s) => snaps.push((l, Some(s))),
                Err(message) => {
                    errors.push(BindError {
                        listener_id: l.id.clone(),
                        address: None,
                        message,
                    });
                    snaps.push((l, None));
                }
            }
        }
        let wanted: HashMap<&str, &ListenerConfig> = snaps
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(l, _)| (l.id.as_str(), *l))
            .collect();
        let mut closing = Vec::new();
        let gone: Vec<String> = st
            .listeners
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(rt) = st.listeners.remove(&id) {
                rt.removed.send_replace(true);
                closing.extend(rt.sockets.into_values());
            }
        }
        for (id, rt) in st.listeners.iter_mut() {
            if let Some(l) = wanted.get(id.as_str()) {
                let removed: Vec<SocketAddr> = rt
                    .sockets
                    .keys()
                    .filter(|a| !l.bind.contains(a))
                    .copied()
                    .collect();
                closing.extend(removed.iter().filter_map(|a| rt.sockets.remove(a)));
            }
        }
        // The sockets are closed when apply returns (and can be bound again below).
        for c in closing {
            c.close().await;
        }
        for (l, snap) in snaps {
            let Some(snap) = snap else { continue };
            let rt = st
                .listeners
                .entry(l.id.clone())
                .or_insert_with(|| ListenerRt {
                    snap: Arc::new(ArcSwap::from_pointee(empty_snap(l))),
                    sockets: HashMap::new(),
                    removed: tokio::sync::watch::channel(false).0,
                });
            rt.snap.store(Arc::new(snap));
            for addr in &l.bind {
                if rt.sockets.contains_key(addr) {
                    continue;
                }
                match bind(*addr) {
                    Ok(listener) => {
                        let task = tokio::spawn(accept_loop(
                            listener,
                            rt.snap.clone(),
                            rt.removed.subscribe(),
                            self.held.clone(),
                            self.runtimes.clone(),
                        ));
                        rt.sockets.insert(*addr, AbortOnDrop(task));
                    }
                    Err(e) => errors.push(BindError {
                        listener_id: l.id.clone(),
                        address: Some(*addr),
                        message: e.to_string(),
                    }),
                }
            }
        }
        errors
    }

    /// The addresses currently bound, per listener id (for diagnostics and tests).
    pub async fn bound(&self) -> HashMap<String, Vec<SocketAddr>> {
        let st = self.state.lock().await;
        st.listeners
            .iter()
            .map(|(id, rt)| (id.clone(), rt.sockets.keys().copied().collect()))
            .collect()
    }
}

fn empty_snap(l: &ListenerConfig) -> ListenerSnap {
    ListenerSnap {
        cfg: l.clone(),
        rules: Vec::new(),
        tls: None,
    }
}

fn build_snap(
    l: &ListenerConfig,
    groups: &HashMap<String, Arc<GroupRt>>,
) -> Result<ListenerSnap, String> {
    let tls = match l.protocol {
        ListenerProtocol::Https | ListenerProtocol::Tls => {
            let http = l.protocol == ListenerProtocol::Https;
            Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
                &l.certificates,
                l.alpn_http2,
                http,
            )?))
        }
        _ => None,
    };
    let rules = l
        .rules
        .iter()
        .map(|r| RuleRt {
            conditions: r.conditions.clone(),
            action: match &r.action {
                Action::Forward {
                    groups: gs,
                    group_stickiness,
                } => {
                    let groups: Vec<FwdGroup> = gs
                        .iter()
                        .map(|(id, w)| FwdGroup {
                            group: groups.get(id).cloned(),
                            weight: *w,
                            cookie: format!("{:016x}", group::stable_hash(id)),
                        })
                        .collect();
                    let total = groups.iter().map(|g| u64::from(g.weight)).sum();
                    ActionRt::Forward {
                        groups,
                        total,
                        stickiness: *group_stickiness,
                    }
                }
                Action::Redirect {
                    protocol,
                    host,
                    port,
                    path,
                    query,
                    status_code,
                } => ActionRt::Redirect {
                    protocol: protocol.clone(),
                    host: host.clone(),
                    port: port.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    status: StatusCode::from_u16(*status_code)
                        .unwrap_or(StatusCode::MOVED_PERMANENTLY),
                },
                Action::FixedResponse {
                    status_code,
                    content_type,
                    body,
                } => ActionRt::Fixed {
                    status: StatusCode::from_u16(*status_code).unwrap_or(StatusCode::OK),
                    content_type: content_type
                        .as_deref()
                        .and_then(|c| HeaderValue::from_str(c).ok())
                        .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8")),
                    body: Bytes::from(body.clone()),
                },
            },
        })
        .collect();
    Ok(ListenerSnap {
        cfg: l.clone(),
        rules,
        tls,
    })
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    snap: Arc<ArcSwap<ListenerSnap>>,
    removed: tokio::sync::watch::Receiver<bool>,
    held: Arc<Semaphore>,
    runtimes: Arc<runtimes::Runtimes>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let local = stream.local_addr().unwrap_or(peer);
                let serve = {
                    let (snap, removed, held) = (snap.clone(), removed.clone(), held.clone());
                    move |stream| serve_conn(stream, Endpoints { peer, local }, snap, removed, held)
                };
                // Handed whole to one of the data plane's runtimes: its
                // socket is registered there, and stays there.
                let Some(runtime) = runtimes.next() else {
                    tokio::spawn(serve(stream));
                    continue;
                };
                match stream.into_std() {
                    Ok(std_stream) => {
                        runtime.spawn(async move {
                            if let Ok(stream) = TcpStream::from_std(std_stream) {
                                serve(stream).await;
                            }
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "handing a connection over failed"),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                // Out of descriptors or a transient error: back off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A connection's two ends.
struct Endpoints {
    peer: SocketAddr,
    local: SocketAddr,
}

async fn serve_conn(
    stream: TcpStream,
    ends: Endpoints,
    snap_ptr: Arc<ArcSwap<ListenerSnap>>,
    removed: tokio::sync::watch::Receiver<bool>,
    held: Arc<Semaphore>,
) {
    let Endpoints { peer, local } = ends;
    let snap = snap_ptr.load_full();
    if let Some(filter) = &snap.cfg.source_filter {
        if !filter.iter().any(|n| matching::net_contains(n, peer.ip())) {
            // As a security group drops the SYN: no byte, no answer; the client times out.
            if let Ok(permit) = held.try_acquire_owned() {
                tokio::time::sleep(HELD_FOR).await;
                drop((permit, stream));
            }
            return;
        }
    }
    let _ = stream.set_nodelay(true);
    let idle = snap.cfg.idle_timeout.max(Duration::from_millis(1));
    let secure = snap.tls.is_some();
    let ctx = Arc::new(ConnCtx::new(snap_ptr.clone(), peer, local, secure, removed));
    // What serves the connection is boxed: until then the task holds only this small future, so
    // an ALB client that has connected but sent nothing yet costs a socket and a few hundred bytes,
    // not a TLS session and HTTP/1 buffers.
    match (snap.cfg.protocol, snap.tls.clone()) {
        (ListenerProtocol::Http, _) => {
            if !first_bytes(&stream, &ctx, idle).await {
                return;
            }
            Box::pin(serve_http(stream, ctx, false, idle)).await
        }
        // NLB: the target is connected at once (server-first protocols speak before the client).
        (ListenerProtocol::Tcp, _) => Box::pin(serve_tcp(stream, &snap, peer, local)).await,
        (ListenerProtocol::Https, Some(acceptor)) => {
            // A TLS client speaks first (ClientHello) and has the handshake's time to do it.
            if !first_bytes(&stream, &ctx, idle.min(TLS_HANDSHAKE_TIMEOUT)).await {
                return;
            }
            Box::pin(serve_https(stream, acceptor, ctx, idle)).await
        }
        (ListenerProtocol::Tls, Some(acceptor)) => {
            Box::pin(async {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                serve_tcp(tls, &snap, peer, local).await
            })
            .await
        }
        _ => {}
    }
}

/// Waits until an ALB client connection has something to read (or has closed): false when the
/// listener's idle timeout passed first or the listener was removed (the connection is closed, as
/// ALB closes a connection idle for its idle timeout).
async fn first_bytes(stream: &TcpStream, ctx: &ConnCtx, idle: Duration) -> bool {
    tokio::select! {
        ready = stream.readable() => ready.is_ok(),
        _ = closing(&ctx.activity, || idle, ctx.removed.clone()) => false,
    }
}

/// Why a client connection is to be closed.
#[derive(PartialEq, Eq)]
enum Closing {
    Idle,
    ListenerRemoved,
}

/// Resolves once a client connection has been idle for its idle timeout (`idle`, read at each
/// check) or its listener was removed: the moment it is to be closed, and why.
async fn closing(
    activity: &std::sync::atomic::AtomicU64,
    idle: impl Fn() -> Duration,
    mut removed: tokio::sync::watch::Receiver<bool>,
) -> Closing {
    tokio::select! {
        _ = io::idle_elapsed_with(activity, idle) => Closing::Idle,
        _ = async { removed.wait_for(|gone| *gone).await.is_ok() } => Closing::ListenerRemoved,
    }
}

async fn serve_https(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<ConnCtx>,
    idle: Duration,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
    else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(tls, ctx, h2, idle).await
}

/// Watches a client connection in a task of its own. Once it has been idle
/// for its listener's idle timeout (as that is at each check) or its
/// listener was removed, the returned receiver is answered
/// (the connection finishes what is under way and closes); once it has been
/// idle, the connection's alarm is raised too (a request still waiting on
/// its target answers 504; a removed listener's requests are not cut short
/// otherwise). A task per connection rather than timers in the connection's
/// and each request's futures: those are polled at every read and write, the
/// watcher only when its timer fires. The watcher stops with the returned
/// guard.
fn watch_connection(ctx: &Arc<ConnCtx>) -> (AbortOnDrop, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ctx = ctx.clone();
    let watcher = tokio::spawn(async move {
        // The listener's idle timeout as it is now: a change reaches open connections too.
        let current = || {
            ctx.listener
                .load()
                .cfg
                .idle_timeout
                .max(Duration::from_millis(1))
        };
        let why = closing(&ctx.activity, current, ctx.removed.clone()).await;
        let _ = tx.send(());
        if why == Closing::ListenerRemoved {
            io::idle_elapsed_with(&ctx.activity, current).await;
        }
        ctx.alarm.raise();
    });
    (AbortOnDrop(watcher), rx)
}

macro_rules! run_with_idle {
    ($conn:expr, $closed:expr, $idle:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        // Idle for the idle timeout, or the listener was removed: finish
        // what is under way, then close.
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = $closed => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout($idle, conn).await;
            }
        }
    }};
}

async fn serve_http<S>(stream: S, ctx: Arc<ConnCtx>, h2: bool, idle: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io::Tracked::sharing(stream, ctx.activity.clone()));
    let (_watcher, closed) = watch_connection(&ctx);
    let svc = hyper::service::service_fn(move |req| {
        // Called as hyper hands the request over, not at the future's first poll: the request's
        // head is routed, written out for its target and dropped before hyper reads on.
        let answer = proxy::handle(ctx.clone(), req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new());
        run_with_idle!(b.serve_connection(io, svc), closed, idle);
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(None);
        run_with_idle!(b.serve_connection(io, svc).with_upgrades(), closed, idle);
    }
}

/// NLB: picks a target by the flow's hash and copies bytes both ways until either side closes or
/// the flow stays idle for the listener's idle timeout.
async fn serve_tcp<S>(client: S, snap: &ListenerSnap, peer: SocketAddr, local: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let flow = group::stable_hash(&(peer, local, 6u8));
    let Some(rule) = snap.rules.last() else {
        return;
    };
    let ActionRt::Forward { groups, total, .. } = &rule.action else {
        return;
    };
    let fg = if groups.len() == 1 || *total == 0 {
        groups.first()
    } else {
        let mut x = flow.rotate_left(17) % total;
        groups.iter().find(|g| {
            let hit = x < u64::from(g.weight);
            x = x.saturating_sub(u64::from(g.weight));
            hit
        })
    };
    let Some(group) = fg.and_then(|g| g.group.clone()) else {
        return;
    };
    let gsnap = group.snap.load_full();
    let Some(target) = group.pick(&gsnap, None, Some(flow)) else {
        return;
    };
    let inflight = group::InFlight::new(target.clone());
    let Ok(tcp) = io::connect_tcp(
        target.address,
        &gsnap.cfg.source_addresses,
        &group.source_next,
    )
    .await
    else {
        return;
    };
    let mut upstream = match (gsnap.cfg.protocol, gsnap.tls.clone()) {
        (TargetProtocol::Tls, Some(cfg)) => match io::connect_tls(tcp, cfg, target.address).await {
            Ok(t) => io::TargetStream::Tls(Box::new(t)),
            Err(_) => return,
        },
        _ => io::TargetStream::Plain(tcp),
    };
    let idle = snap.cfg.idle_timeout.max(Duration::from_millis(1));
    let (mut tracked, last) = io::Tracked::new(client);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut tracked, &mut upstream) => {}
        _ = io::idle_elapsed(&last, idle) => {}
    }
    drop(inflight);
}

#[cfg(test)]
mod connection_tests {
    use super::*;

    #[test]
    fn a_connection_that_has_sent_nothing_holds_a_small_future() {
        // The task of every accepted connection holds this future from the start; what serves
        // HTTP, TLS or TCP is boxed once the client speaks (or at once for NLB's TCP).
        fn future_size<A, B, C, D, E, F, Fut>(_: F) -> usize
        where
            F: Fn(A, B, C, D, E) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = future_size(serve_conn);
        assert!(size <= 1024, "a connection's future takes {size} bytes");
    }
}
