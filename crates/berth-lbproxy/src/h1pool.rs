//! HTTP/1.1 keep-alive connections to one target, driven inside the task of the client request
//! that uses them (no task, channel or wake-up between the two sides per request), pooled per
//! target while idle.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::group::InFlight;
use crate::io::{self, TargetConnector, TargetStream};

/// Idle connections kept per target at most.
const MAX_IDLE: usize = 1024;

type Conn = http1::Connection<TokioIo<TargetStream>, Incoming>;

pub struct Idle {
    sender: http1::SendRequest<Incoming>,
    conn: Pin<Box<Conn>>,
    ended: bool,
}

impl Idle {
    /// Lets the connection make progress; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if self.ended {
            return false;
        }
        if self.conn.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        !self.ended
    }
}

/// Idle connections to one target, one shelf per data-plane runtime: a
/// connection's socket belongs to the runtime that opened it, so it is only
/// ever used there (see [`crate::runtimes`]).
pub struct Pool(Box<[Mutex<Vec<Idle>>]>);

impl Default for Pool {
    fn default() -> Self {
        Pool(
            (0..crate::runtimes::MAX_SHARDS)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        )
    }
}

impl Pool {
    fn shelf(&self) -> &Mutex<Vec<Idle>> {
        &self.0[crate::runtimes::shard() % self.0.len()]
    }

    fn pop(&self) -> Option<Idle> {
        self.shelf().lock().ok()?.pop()
    }

    /// Closes every idle connection (the group's protocol or source addresses changed).
    pub fn clear(&self) {
        for shelf in self.0.iter() {
            if let Ok(mut v) = shelf.lock() {
                v.clear();
            }
        }
    }

    fn put(&self, idle: Idle) {
        if let Ok(mut v) = self.shelf().lock() {
            if v.len() < MAX_IDLE {
                v.push(idle);
            }
        }
    }
}

pub enum SendError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

async fn checkout(pool: &Pool) -> Option<Idle> {
    loop {
        let mut idle = pool.pop()?;
        let ready = poll_fn(|cx| {
            Poll::Ready(idle.drive(cx) && matches!(idle.sender.poll_ready(cx), Poll::Ready(Ok(()))))
        })
        .await;
        if ready {
            return Some(idle);
        }
    }
}

async fn connect(addr: SocketAddr, connector: &TargetConnector) -> Result<Idle, SendError> {
    let tcp = io::connect_tcp(addr, &connector.sources, &connector.next)
        .await
        .map_err(SendError::Connect)?;
    let stream = match &connector.tls {
        Some(cfg) => TargetStream::Tls(Box::new(
            io::connect_tls(tcp, cfg.clone(), addr)
                .await
                .map_err(SendError::Connect)?,
        )),
        None => TargetStream::Plain(tcp),
    };
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    Ok(Idle {
        sender,
        conn: Box::pin(conn),
        ended: false,
    })
}

/// Sends `req` on a pooled connection to `addr` (a new one when none is idle; again on a new one
/// when a pooled connection turns out closed before the request went out).
pub async fn send(
    pool: &Pool,
    addr: SocketAddr,
    connector: &TargetConnector,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Idle), SendError> {
    loop {
        let (mut idle, pooled) = match checkout(pool).await {
            Some(i) => (i, true),
            // Boxed: a new connection (and its TLS handshake) is the rare case, and its large future
            // would otherwise be copied with every request's future.
            None => (Box::pin(connect(addr, connector)).await?, false),
        };
        let fut = idle.sender.try_send_request(req);
        tokio::pin!(fut);
        let r = poll_fn(|cx| {
            idle.drive(cx);
            fut.as_mut().poll(cx)
        })
        .await;
        match r {
            Ok(resp) => return Ok((resp, idle)),
            Err(mut e) => match e.take_message() {
                Some(back) if pooled => req = back,
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
}

/// A target's response body that keeps its connection going while the client reads it, and puts
/// the connection back in the pool when done (if it can carry another request).
pub struct DrivenBody {
    inner: Incoming,
    idle: Option<Idle>,
    pool: Arc<crate::group::TargetRt>,
    finished: bool,
    _inflight: InFlight,
}

impl DrivenBody {
    pub fn new(inner: Incoming, idle: Idle, inflight: InFlight) -> Self {
        let pool = inflight.0.clone();
        DrivenBody {
            inner,
            idle: Some(idle),
            pool,
            finished: false,
            _inflight: inflight,
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(idle) = this.idle.as_mut() {
            idle.drive(cx);
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            this.finished = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        let Some(mut idle) = self.idle.take() else {
            return;
        };
        if !(self.finished || self.inner.is_end_stream()) {
            return;
        }
        // One more turn of the connection so it notes the response's end; whatever it waits for
        // next registers the real waker of the next request that drives it.
        let mut cx = Context::from_waker(Waker::noop());
        if idle.drive(&mut cx) && idle.sender.is_ready() {
            self.pool.pool.put(idle);
        }
    }
}
