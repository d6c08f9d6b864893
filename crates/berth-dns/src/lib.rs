//! Berth's DNS server.
//!
//! It answers authoritatively for every zone of the DNS registry
//! (`berth_model::dns_registry`: Cloud Map private namespaces, the
//! `ec2.internal` / `<region>.compute.internal` names of network interfaces,
//! later load balancers and databases), from an in-memory [`Index`] that
//! follows the store's watch, so a published change is answered within
//! milliseconds and no lookup touches the store. Names outside Berth's
//! zones are forwarded to upstream resolvers when some are configured, with
//! a bounded wait (SERVFAIL when none answers); without upstreams they are
//! REFUSED at once.
//!
//! The wire protocol (UDP and TCP, EDNS, truncation of answers larger than
//! the client's UDP payload) is `hickory-server`'s; this crate only decides
//! the records of each answer ([`answer`]).
//!
//! Architecture invariant: the DNS server never writes the store, and
//! answering a query never reads it (only the index).

mod answer;
mod index;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_store::Store;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio_util_shim::CancelOnDrop;

pub use answer::{Answer, MULTIVALUE_MAX};
pub use index::{Index, Snapshot};
pub use upstream::{parse_upstream, system_upstreams, Upstreams};

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding the DNS listener {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the DNS index did not load from the store")]
    NotLoaded,
}

/// How the server listens and forwards.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// UDP and TCP address (port 0: any free port; see
    /// [`DnsServer::local_addr`]).
    pub listen: SocketAddr,
    /// Resolvers for the names outside Berth's zones (empty: REFUSED).
    pub upstreams: Vec<SocketAddr>,
    /// How long each upstream may take before the next is tried.
    pub upstream_timeout: Duration,
    /// UDP receive loops on the listening socket (0: one per CPU).
    pub udp_workers: usize,
}

impl DnsConfig {
    pub fn new(listen: SocketAddr) -> DnsConfig {
        DnsConfig {
            listen,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_millis(1500),
            udp_workers: 0,
        }
    }
}

/// A running DNS server; dropping it stops it.
pub struct DnsServer {
    local_addr: SocketAddr,
    index: Arc<Index>,
    _tasks: CancelOnDrop,
    /// Dropped with the server: the UDP threads end.
    _stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl DnsServer {
    /// Loads the registry from `store`, binds the listener and starts
    /// answering; returns once both are done.
    pub async fn start(config: DnsConfig, store: Arc<dyn Store>) -> Result<DnsServer, DnsError> {
        let index = Arc::new(Index::default());
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let follower = tokio::spawn(index::follow(store, index.clone(), Some(ready_tx)));
        ready.await.map_err(|_| DnsError::NotLoaded)?;

        let (udp, tcp, local_addr) = bind(config.listen).map_err(|source| DnsError::Bind {
            address: config.listen,
            source,
        })?;
        let workers = if config.udp_workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.udp_workers
        };
        let handler = Handler {
            index: index.clone(),
            upstreams: Arc::new(Upstreams {
                servers: config.upstreams.clone(),
                timeout: config.upstream_timeout,
            }),
        };
        let mut tasks = vec![follower];
        // UDP: our own receive loops, each on a thread of its own with a
        // single-threaded runtime (several on one socket, through
        // duplicated descriptors): a query is read, answered and sent on
        // one thread, with no task, channel or cross-thread wake-up; the
        // queries that wait for an upstream get a task of their own there.
        let (stop, stopped) = tokio::sync::watch::channel(());
        for n in 0..workers {
            let spawned = udp.try_clone().and_then(|socket| {
                let handler = handler.clone();
                let stopped = stopped.clone();
                std::thread::Builder::new()
                    .name(format!("berth-dns-udp-{n}"))
                    .spawn(move || udp_thread(socket, handler, stopped))
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "DNS: one UDP receive loop fewer");
            }
        }
        drop(udp);
        // TCP: hickory-server's listener (framing, idle timeout).
        let mut server = Server::new(handler);
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| DnsError::Bind {
            address: local_addr,
            source,
        })?;
        server.register_listener(tcp, TCP_IDLE, 64);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.block_until_done().await {
                tracing::error!(error = %e, "the DNS server stopped");
            }
        }));
        tracing::info!(address = %local_addr, upstreams = ?config.upstreams, "DNS server is answering");
        Ok(DnsServer {
            local_addr,
            index,
            _tasks: CancelOnDrop(tasks),
            _stop: stop,
        })
    }

    /// The address the server answers on (UDP and TCP): agents relay their
    /// tasks' queries here.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The index the server answers from.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }
}

/// The UDP socket and TCP listener on one address (the TCP port is the
/// UDP one's when `address` asks for any port).
fn bind(
    address: SocketAddr,
) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener, SocketAddr)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind(address)?;
        let local = udp.local_addr()?;
        match std::net::TcpListener::bind(local) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                let socket = socket2::SockRef::from(&udp);
                // Bursts of queries wait in the kernel rather than drop.
                let _ = socket.set_recv_buffer_size(4 << 20);
                return Ok((udp, tcp, local));
            }
            // Only a free port chosen for UDP can be taken for TCP: retry.
            Err(e) if address.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

mod tokio_util_shim {
    /// Aborts the tasks when dropped.
    pub struct CancelOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            for task in &self.0 {
                task.abort();
            }
        }
    }
}

/// Answers each request from the index or upstream.
#[derive(Clone)]
struct Handler {
    index: Arc<Index>,
    upstreams: Arc<Upstreams>,
}

impl Handler {
    /// Whether answering `request` may wait for an upstream (a name outside
    /// Berth's zones, or a Berth CNAME that may lead outside).
    fn may_wait(&self, request: &Request) -> bool {
        if self.upstreams.is_empty() {
            return false;
        }
        let [query] = request.queries.queries() else {
            return false;
        };
        let snapshot = self.index.snapshot();
        if snapshot.zone_of(query.name()).is_none() {
            return true;
        }
        snapshot
            .names
            .get(query.name())
            .is_some_and(|e| e.get(hickory_proto::rr::RecordType::CNAME).is_some())
    }
}

/// A UDP receive loop's thread: runs the loop until the server is dropped.
fn udp_thread(
    socket: std::net::UdpSocket,
    handler: Handler,
    mut stopped: tokio::sync::watch::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "DNS: a UDP thread cannot start its runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let socket = match tokio::net::UdpSocket::from_std(socket) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                tracing::error!(error = %e, "DNS: a UDP socket cannot be registered");
                return;
            }
        };
        tokio::select! {
            _ = udp_loop(socket, handler) => {}
            _ = stopped.changed() => {}
        }
    });
}

/// One UDP receive loop: parse, answer, send, with a task only for queries
/// that may wait for an upstream.
async fn udp_loop(socket: Arc<tokio::net::UdpSocket>, handler: Handler) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let (n, source) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors of earlier answers surface here on Linux and
                // mean nothing for the next query; anything else (memory
                // pressure …) gets a breath before the next read.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) {
                    tracing::debug!(error = %e, "DNS: UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        if source.port() == 0 {
            continue;
        }
        let Ok(request) = Request::from_bytes(buffer[..n].to_vec(), source, Protocol::Udp) else {
            continue;
        };
        // Answers are never answered (reflection).
        if request.metadata.message_type == MessageType::Response {
            continue;
        }
        let reply = UdpReply {
            socket: socket.clone(),
            destination: source,
        };
        if handler.may_wait(&request) {
            let handler = handler.clone();
            tokio::spawn(async move {
                handler
                    .handle_request::<_, TokioTime>(&request, reply)
                    .await;
            });
        } else {
            handler
                .handle_request::<_, TokioTime>(&request, reply)
                .await;
        }
    }
}

/// Sends an answer back over UDP, truncated by hickory to the client's
/// payload size (512 without EDNS).
#[derive(Clone)]
struct UdpReply {
    socket: Arc<tokio::net::UdpSocket>,
    destination: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        match self.socket.try_send_to(&bytes, self.destination) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.socket.send_to(&bytes, self.destination).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(info)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|e| {
            let mut edns = Edns::new();
            edns.set_max_payload(e.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = !self.upstreams.is_empty();
        let builder = || MessageResponseBuilder::new(&request.queries, response_edns.as_ref());

        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            let mut edns = response_edns.clone().unwrap_or_default();
            edns.set_rcode_high(ResponseCode::BADVERS.high());
            let response = MessageResponseBuilder::new(&request.queries, Some(&edns))
                .error_msg(&request.metadata, ResponseCode::BADVERS);
            return send(&mut response_handle, response, &metadata).await;
        }
        let queries = request.queries.queries();
        if request.metadata.op_code != OpCode::Query {
            let response = builder().error_msg(&request.metadata, ResponseCode::NotImp);
            return send(&mut response_handle, response, &metadata).await;
        }
        let [query] = queries else {
            let response = builder().error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response_handle, response, &metadata).await;
        };

        let snapshot = self.index.snapshot();
        let answer = if query.query_class() == DNSClass::IN {
            snapshot.answer(query.name(), query.query_type(), &mut rand::thread_rng())
        } else {
            None
        };
        if let Some(answer) = answer {
            metadata.authoritative = true;
            metadata.response_code = answer.rcode;
            let mut outside = None;
            if let Some(target) = &answer.outside_target {
                // A Berth name aliasing an outside one: the rest of the
                // chain comes from upstream, as a recursive resolver's
                // answer would hold it.
                if !self.upstreams.is_empty() && request.metadata.recursion_desired {
                    outside = self.upstreams.resolve(target, query.query_type()).await;
                }
            }
            let mut answers: Vec<&Record> = answer.answers;
            let mut authorities = answer.authorities;
            if let Some(outside) = &outside {
                metadata.response_code = outside.metadata.response_code;
                answers.extend(outside.answers.iter());
                authorities.extend(outside.authorities.iter());
            }
            let response = builder().build(
                metadata,
                answers,
                authorities,
                std::iter::empty(),
                answer.additionals,
            );
            return send(&mut response_handle, response, &metadata).await;
        }

        if self.upstreams.is_empty() {
            let response = builder().error_msg(&request.metadata, ResponseCode::Refused);
            return send(&mut response_handle, response, &metadata).await;
        }
        let tcp = request.protocol() != Protocol::Udp;
        match self.upstreams.exchange(request.as_slice(), tcp).await {
            Some(upstream) => {
                metadata.response_code = upstream.metadata.response_code;
                metadata.truncation = upstream.metadata.truncation;
                metadata.authentic_data = upstream.metadata.authentic_data;
                let response = builder().build(
                    metadata,
                    upstream.answers.iter(),
                    upstream.authorities.iter(),
                    std::iter::empty(),
                    upstream.additionals.iter(),
                );
                send(&mut response_handle, response, &metadata).await
            }
            None => {
                let response = builder().error_msg(&request.metadata, ResponseCode::ServFail);
                send(&mut response_handle, response, &metadata).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS answer failed");
            let mut metadata = *metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests;
