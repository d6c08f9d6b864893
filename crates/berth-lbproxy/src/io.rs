//! Sockets: connecting to targets (source address, TLS), activity tracking for idle timeouts.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// How long a connection to a target may take (ELB: 10 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since the data plane's clock base (monotonic).
pub fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64
}

/// Connects to `addr`, binding one of `sources` of the same family when given.
pub async fn connect_tcp(
    addr: SocketAddr,
    sources: &[IpAddr],
    next: &AtomicUsize,
) -> io::Result<TcpStream> {
    let family: Vec<IpAddr> = sources
        .iter()
        .copied()
        .filter(|s| s.is_ipv4() == addr.is_ipv4())
        .collect();
    let fut = async {
        let stream = if family.is_empty() {
            TcpStream::connect(addr).await?
        } else {
            let src = family[next.fetch_add(1, Ordering::Relaxed) % family.len()];
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(src, 0))?;
            sock.connect(addr).await?
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

pub async fn connect_tls(
    tcp: TcpStream,
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::IpAddress(addr.ip().into());
    let fut = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// A connection to a target, plain or TLS.
pub enum TargetStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for TargetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TargetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        // As for client connections ([`Tracked`]): one send(2) per message.
        false
    }
}

impl Connection for TargetStream {
    fn connected(&self) -> Connected {
        match self {
            TargetStream::Plain(_) => Connected::new(),
            TargetStream::Tls(s) => {
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

/// The hyper-util client's connector for one target group: the URI's authority is the target's
/// socket address; TLS when the group's protocol is HTTPS.
#[derive(Clone)]
pub struct TargetConnector {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sources: Arc<Vec<IpAddr>>,
    pub next: Arc<AtomicUsize>,
}

impl tower_service::Service<http::Uri> for TargetConnector {
    type Response = TokioIo<TargetStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TargetStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "target address"))?;
            let tcp = connect_tcp(addr, &this.sources, &this.next).await?;
            match this.tls {
                Some(cfg) => Ok(TokioIo::new(TargetStream::Tls(Box::new(
                    connect_tls(tcp, cfg, addr).await?,
                )))),
                None => Ok(TokioIo::new(TargetStream::Plain(tcp))),
            }
        })
    }
}

/// Wraps a client-side stream and notes the time of its last read or write.
pub struct Tracked<S> {
    pub inner: S,
    pub last: Arc<AtomicU64>,
}

/// A fresh activity clock (now) for [`Tracked::sharing`].
pub fn activity() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(now_ms()))
}

impl<S> Tracked<S> {
    /// Notes activity in `last`, which others read (a request waiting on
    /// its target counts the client connection's activity).
    pub fn sharing(inner: S, last: Arc<AtomicU64>) -> Self {
        last.store(now_ms(), Ordering::Relaxed);
        Tracked { inner, last }
    }

    pub fn new(inner: S) -> (Self, Arc<AtomicU64>) {
        let last = Arc::new(AtomicU64::new(now_ms()));
        (
            Tracked {
                inner,
                last: last.clone(),
            },
            last,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        // hyper then gathers a message's head and body in its buffer and
        // writes them with one send(2): cheaper per call than writev(2) on
        // a socket (which goes through the file layer), and the small
        // answers a load balancer mostly carries cost no copy worth noting.
        false
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Raised once a client connection is to close: idle for the listener's
/// idle timeout, or its listener removed. A request still waiting on its
/// target then answers 504. One task per connection keeps the timer
/// ([`crate::watch_connection`]), so neither the connection's future nor each
/// request's registers and polls a timer of its own.
#[derive(Default)]
pub struct Alarm {
    raised: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Alarm {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once raised (at once when it already was).
    pub async fn raised(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a raise in between still wakes it.
        notified.as_mut().enable();
        if self.raised.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Resolves once `idle` has passed with no activity noted in `last`.
pub async fn idle_elapsed(last: &AtomicU64, idle: Duration) {
    idle_elapsed_with(last, || idle).await
}

/// As [`idle_elapsed`], with the idle timeout read again at each check (a listener's may change
/// while its connections are open).
pub async fn idle_elapsed_with(last: &AtomicU64, idle: impl Fn() -> Duration) {
    loop {
        let idle_ms = idle().as_millis().max(1) as u64;
        let since = now_ms().saturating_sub(last.load(Ordering::Relaxed));
        if since >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
    }
}
