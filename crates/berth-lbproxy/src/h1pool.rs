//! HTTP/1.1 keep-alive connections to one target for requests without a body: the request's head
//! is written and the answer's head parsed here (httparse), its body relayed as it arrives, all
//! inside the task of the client request that uses the connection (no connection task, channel
//! or wake-up between the two sides per request). Connections are pooled per target while idle.
//!
//! Requests with a body take the group's hyper client instead (as upgrades and HTTP/2 targets
//! do): a target may answer an upload before it has been sent whole, which that client handles.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::group::InFlight;
use crate::io::{self, TargetConnector, TargetStream};

/// Idle connections kept per target at most, and for how long (as hyper-util's pool: 90 s).
const MAX_IDLE: usize = 1024;
const POOL_IDLE_MS: u64 = 90_000;
/// A pooled connection's request-head buffer is dropped beyond this capacity (its read buffer
/// beyond four times it).
const KEPT_BUFFER: usize = 16 * 1024;
/// An answer's head may take this many bytes, and this many header fields, at most.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk-size line of a chunked answer may take this many bytes at most (extensions included).
const MAX_LINE: usize = 4096;
/// A chunked answer's trailer section may take this many bytes, and fields, at most (its fields
/// are dropped).
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 32;
/// How much is read from a target at once.
const READ_SIZE: usize = 16 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to a target and what has been read from it but not used yet.
pub struct Conn {
    stream: TargetStream,
    buf: BytesMut,
    /// The next request's head, written here (the allocation kept from request to request).
    out: Vec<u8>,
    /// When it went into the pool (`io::now_ms`).
    pooled_at: u64,
}

impl Conn {
    /// Whether a pooled connection is still open with nothing to read: the target may have
    /// closed it (or, against the protocol, sent something) while it sat idle.
    fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Reads what the target sends next into the buffer: how many bytes (0 at its end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = self.stream.read_buf(&mut self.buf);
        tokio::pin!(read);
        read.poll(cx)
    }
}

/// Idle connections to one target, one shelf per data-plane runtime: a
/// connection's socket belongs to the runtime that opened it, so it is only
/// ever used there (see [`crate::runtimes`]).
pub struct Pool(Box<[Mutex<Vec<Conn>>]>);

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
    fn shelf(&self) -> &Mutex<Vec<Conn>> {
        &self.0[crate::runtimes::shard() % self.0.len()]
    }

    /// An idle connection still open, if the shelf has one.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let mut conn = self.shelf().lock().ok()?.pop()?;
            let fresh = io::now_ms().saturating_sub(conn.pooled_at) < POOL_IDLE_MS;
            if fresh && conn.still_open() {
                return Some(conn);
            }
        }
    }

    /// Closes every idle connection (the group's protocol or source addresses changed).
    pub fn clear(&self) {
        for shelf in self.0.iter() {
            if let Ok(mut v) = shelf.lock() {
                v.clear();
            }
        }
    }

    fn put(&self, mut conn: Conn) {
        // A large request or answer head once must not stay allocated for as long as the
        // connection idles.
        if conn.out.capacity() > KEPT_BUFFER {
            conn.out = Vec::new();
        }
        if conn.buf.capacity() > KEPT_BUFFER * 4 {
            conn.buf = BytesMut::new();
        }
        conn.pooled_at = io::now_ms();
        if let Ok(mut v) = self.shelf().lock() {
            if v.len() < MAX_IDLE {
                v.push(conn);
            }
        }
    }
}

#[derive(Debug)]
pub enum SendError {
    Connect(std::io::Error),
    Io(std::io::Error),
    /// The target's answer is not HTTP/1 as a load balancer relays it.
    Protocol(&'static str),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) | SendError::Io(e) => e.fmt(f),
            SendError::Protocol(why) => f.write_str(why),
        }
    }
}

/// A new connection to `addr`, carrying `head` (a request's head, written already) as the next
/// to send.
async fn connect(
    addr: SocketAddr,
    connector: &TargetConnector,
    head: Vec<u8>,
) -> Result<Conn, SendError> {
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
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: head,
        pooled_at: 0,
    })
}

/// Writes the head of a request without a body, as it goes to the target, into `out`.
fn write_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How an answer's body is delimited (RFC 9112, section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer's head as parsed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// The target's reason phrase, when not the status code's usual one (relayed as hyper does).
    pub reason: Option<hyper::ext::ReasonPhrase>,
    pub version: Version,
    pub headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Whether a comma-separated header list (Connection, Transfer-Encoding) has `token`.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses an answer's head at the start of `buf`: `None` while incomplete; the head and its
/// length once complete. An interim (1xx) answer comes back as such: the caller skips it.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, SendError> {
    // Left uninitialised: zeroing room for every field the head could have costs more than
    // parsing the few it has.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::Protocol("too many header fields in the answer"))
        }
        Err(_) => return Err(SendError::Protocol("malformed answer head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(SendError::Protocol("malformed status code"))?;
    let reason = parsed
        .reason
        .filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| SendError::Protocol("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| SendError::Protocol("malformed header value"))?;
        headers.append(name, value);
    }
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            // RFC 9112 6.1: faulty framing (hyper refused it too).
            return Err(SendError::Protocol(
                "Transfer-Encoding in an HTTP/1.0 answer",
            ));
        }
        // Transfer-Encoding overrides Content-Length, which is dropped; chunked must come last,
        // else the body lasts until the connection closes.
        headers.remove(header::CONTENT_LENGTH);
        let last_is_chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        if last_is_chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        // Several values (fields or a list) must all agree.
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            let text = value
                .to_str()
                .map_err(|_| SendError::Protocol("malformed Content-Length"))?;
            for part in text.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SendError::Protocol("malformed Content-Length"));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| SendError::Protocol("malformed Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(SendError::Protocol("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
        match length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    } else {
        Framing::UntilClose
    };
    // `close` wins over anything else the Connection header says.
    let keep_alive = framing != Framing::UntilClose
        && !has_token(&headers, &header::CONNECTION, "close")
        && (version == Version::HTTP_11 || has_token(&headers, &header::CONNECTION, "keep-alive"));
    Ok(Some((
        Head {
            status,
            reason,
            version,
            headers,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// Why an exchange failed, and whether the target can have seen nothing of the request (then,
/// on a pooled connection, an idempotent request is sent again on a new one).
struct Failed {
    error: SendError,
    nothing_back: bool,
}

/// Writes the request's head (in `conn.out`) and reads the answer's (interim answers skipped).
async fn exchange(conn: &mut Conn, head_request: bool) -> Result<Head, Failed> {
    let io_failed = |error, nothing_back| Failed {
        error: SendError::Io(error),
        nothing_back,
    };
    conn.buf.clear();
    conn.stream
        .write_all(&conn.out)
        .await
        .map_err(|e| io_failed(e, true))?;
    conn.stream.flush().await.map_err(|e| io_failed(e, true))?;
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&conn.buf, head_request) {
                Ok(Some((head, len))) if head.status.is_informational() => {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Failed {
                            error: SendError::Protocol("an upgrade nobody asked for"),
                            nothing_back: false,
                        });
                    }
                    conn.buf.advance(len);
                    continue;
                }
                Ok(Some((head, len))) => {
                    conn.buf.advance(len);
                    return Ok(head);
                }
                Ok(None) if conn.buf.len() >= MAX_HEAD => {
                    return Err(Failed {
                        error: SendError::Protocol("answer head too large"),
                        nothing_back: false,
                    })
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(Failed {
                        error,
                        nothing_back: false,
                    })
                }
            }
        }
        let n = std::future::poll_fn(|cx| conn.poll_fill(cx))
            .await
            .map_err(|e| io_failed(e, !received))?;
        if n == 0 {
            return Err(io_failed(
                std::io::ErrorKind::UnexpectedEof.into(),
                !received,
            ));
        }
        received = true;
    }
}

/// Methods that may be sent again when a reused connection turns out closed (RFC 9110 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A request without a body, its head written out for its target and the request itself dropped:
/// [`prepare`] then [`send`].
pub struct Prepared {
    /// The idle connection it goes out on, its head already in the connection's `out`.
    pooled: Option<Conn>,
    /// The head, when the pool had no idle connection.
    head: Vec<u8>,
    head_request: bool,
    idempotent: bool,
}

/// Takes an idle connection from `pool` (on this runtime's shelf) and writes the request's head
/// (its method, origin-form target and headers) into it, at once. The request is dropped before
/// anything is awaited: a server's parsed header values share its connection's read buffer, and
/// hyper reads on (to see a client that closes while its request waits), which with the buffer
/// still shared would take a new one for every request.
pub fn prepare(pool: &Pool, request: http::request::Parts) -> Prepared {
    let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut pooled = pool.checkout();
    let mut head = Vec::new();
    let out = match pooled.as_mut() {
        Some(conn) => &mut conn.out,
        None => &mut head,
    };
    write_request_head(out, &request.method, path, &request.headers);
    Prepared {
        pooled,
        head,
        head_request: request.method == Method::HEAD,
        idempotent: idempotent(&request.method),
    }
}

/// Sends a [`prepare`]d request on its pooled connection to `addr` (a new one when none was
/// idle; once more, on a new one, when a pooled connection turns out closed before anything came
/// back, for an idempotent method): the answer's head and the connection its body is to be read
/// from.
pub async fn send(
    request: Prepared,
    addr: SocketAddr,
    connector: &TargetConnector,
) -> Result<(Head, Conn), SendError> {
    let Prepared {
        pooled,
        head,
        head_request,
        idempotent,
    } = request;
    let mut retry = pooled.is_some() && idempotent;
    let mut conn = match pooled {
        Some(conn) => conn,
        // Boxed: a new connection (and its TLS handshake) is the rare case, and its large
        // future would otherwise be copied with every request's future.
        None => Box::pin(connect(addr, connector, head)).await?,
    };
    loop {
        match exchange(&mut conn, head_request).await {
            Ok(answer) => return Ok((answer, conn)),
            Err(Failed {
                nothing_back: true, ..
            }) if retry => {
                retry = false;
                // The head stays in `out` once written: the same bytes, on a new connection.
                let head = std::mem::take(&mut conn.out);
                conn = Box::pin(connect(addr, connector, head)).await?;
            }
            Err(failed) => return Err(failed.error),
        }
    }
}

/// Where a chunked body's decoding is.
#[derive(Clone, Copy, Debug)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Within a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// The trailer section (its fields dropped), up to its empty line.
    Trailers,
}

#[derive(Clone, Copy, Debug)]
enum Reading {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// A target's answer body, read from its connection as the client takes it. At its end the
/// connection goes back to the pool when it can carry another request.
pub struct TargetBody {
    conn: Option<Conn>,
    reading: Reading,
    keep_alive: bool,
    /// Data already cut from the buffer for the next frame.
    ready: Option<Bytes>,
    inflight: InFlight,
}

/// Cuts what `buf` holds of the `left` bytes still to come: those bytes, and how many are left.
fn cut(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let take = left.min(buf.len() as u64);
    (buf.split_to(take as usize).freeze(), left - take)
}

fn body_error(why: &'static str) -> BoxError {
    why.into()
}

impl TargetBody {
    pub fn new(head: &Head, mut conn: Conn, inflight: InFlight) -> Self {
        let reading = match head.framing {
            Framing::Empty => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Chunk::Size),
            Framing::UntilClose => Reading::UntilClose,
        };
        let mut body = TargetBody {
            conn: None,
            reading,
            keep_alive: head.keep_alive,
            ready: None,
            inflight,
        };
        // Mostly the whole body came with the head: cut it at once and give the connection back
        // before the client has even taken the answer.
        if let Reading::Length(n) = body.reading {
            if conn.buf.len() as u64 >= n {
                body.ready = Some(conn.buf.split_to(n as usize).freeze());
                body.reading = Reading::Done;
            }
        }
        body.conn = Some(conn);
        if matches!(body.reading, Reading::Done) {
            body.release();
        }
        body
    }

    /// The body has been read whole: its connection goes back to the pool if it may carry
    /// another request (nothing more than the answer was sent).
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.inflight.0.pool.put(conn);
            }
        }
    }

    /// Advances the decoding with what is buffered: a frame's data, or `None` when more must be
    /// read first (or the body has ended: `reading` is `Done`).
    fn step(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        loop {
            match self.reading {
                Reading::Done => return Ok(None),
                Reading::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let (data, left) = cut(buf, left);
                    self.reading = if left == 0 {
                        Reading::Done
                    } else {
                        Reading::Length(left)
                    };
                    return Ok(Some(data));
                }
                Reading::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Reading::Chunked(Chunk::Size) => {
                    // httparse reads the chunk-size line (extensions skipped).
                    let (line, size) = match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete(parsed)) => parsed,
                        Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                            return Err(body_error("chunk-size line too long"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(_) => return Err(body_error("malformed chunk size")),
                    };
                    buf.advance(line);
                    self.reading = Reading::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Reading::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let (data, left) = cut(buf, left);
                    self.reading = Reading::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(data));
                }
                Reading::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(body_error("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.reading = Reading::Chunked(Chunk::Size);
                }
                Reading::Chunked(Chunk::Trailers) => {
                    // httparse reads the trailer section whole (its fields are dropped).
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, _))) => {
                            buf.advance(len);
                            self.reading = Reading::Done;
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                            return Err(body_error("trailer section too large"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(_) => return Err(body_error("malformed trailer section")),
                    }
                }
            }
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            let stepped = this.step();
            if matches!(this.reading, Reading::Done) {
                this.release();
            }
            match stepped {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if matches!(this.reading, Reading::Done) => return Poll::Ready(None),
                Ok(None) => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    if matches!(this.reading, Reading::UntilClose) {
                        this.reading = Reading::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(body_error(
                        "the target closed the connection within the answer's body",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.ready, self.reading) {
            (Some(data), _) => SizeHint::with_exact(data.len() as u64),
            (None, Reading::Done) => SizeHint::with_exact(0),
            (None, Reading::Length(left)) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Option<(Head, usize)>, SendError> {
        parse_head(text.as_bytes(), head_request)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (h, len) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.framing, h.keep_alive, len),
            (Framing::Length(5), true, 38)
        );
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        let (h, _) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let (h, _) = head("HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let (h, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.headers[header::CONTENT_LENGTH], "9");
        let (h, _) = head(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(4), false));
        let (h, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.version, h.keep_alive), (Version::HTTP_10, false));
        let (h, _) = head(
            "HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: Keep-Alive\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.keep_alive);
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(head(bad, false).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let mut out = b"left from the last request".to_vec();
        write_request_head(&mut out, &Method::GET, "/p?q=1", &h);
        assert_eq!(
            out,
            b"GET /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
    }
}
