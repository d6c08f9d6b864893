//! The host's DNS relay: UDP and TCP on the task endpoint's address
//! (`169.254.170.2:53`), served by the agent that serves the endpoint
//! (see `task_endpoint`). Tasks ask it (bridge-mode containers name it in
//! their `resolv.conf`; awsvpc tasks ask their VPC's resolver address,
//! which their VPC's router sends here keeping the task's address), and it
//! relays each query, unchanged, to the Berth DNS server of the agent that
//! registered the asking task, found by the query's source address
//! ([`Upstreams`]): several Berth installations may share a host, each with
//! its own DNS server.
//!
//! The relay does not interpret DNS beyond telling a query from garbage:
//! queries and answers pass through as they are. It answers itself only
//! `REFUSED` to a source no task of the host has, and `SERVFAIL` when the
//! upstream does not answer within [`UPSTREAM_TIMEOUT`] (never a hang).
//! Its state is bounded: at most [`MAX_UDP_IN_FLIGHT`] queries and
//! [`MAX_TCP_CONNECTIONS`] connections at once (more are dropped; clients
//! retry), each with a deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// How long the relay waits for the upstream's answer to one query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Queries relayed at once over UDP; further ones are dropped.
pub const MAX_UDP_IN_FLIGHT: usize = 1024;
/// TCP connections relayed at once; further ones are closed.
pub const MAX_TCP_CONNECTIONS: usize = 128;
/// How long one TCP connection may last (DNS over TCP is short-lived).
const TCP_LIFETIME: Duration = Duration::from_secs(30);
/// The largest DNS message (over UDP with EDNS, or TCP).
const MAX_MESSAGE: usize = 65_535;

/// Where the queries of a source address go.
#[async_trait::async_trait]
pub trait Upstreams: Send + Sync + 'static {
    /// The DNS server for queries from `source`; None for a source no task
    /// of the host has (refused).
    async fn upstream(&self, source: IpAddr) -> Option<SocketAddr>;
}

/// The relay's own answer `code` to `query` (its id, opcode and question
/// kept, as resolvers expect); None when `query` is not a DNS query (such
/// datagrams are dropped).
pub fn answer_with(query: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut answer = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.add_queries(query.queries.iter().cloned());
    answer.to_vec().ok()
}

/// Whether `bytes` is a DNS query the relay passes on.
fn is_query(bytes: &[u8]) -> bool {
    Message::from_vec(bytes).is_ok_and(|m| m.metadata.message_type == MessageType::Query)
}

/// Sends `query` to `upstream` over UDP from a fresh socket and answers
/// the first reply within `timeout`.
pub async fn exchange_udp(
    upstream: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let exchange = async {
        let socket = UdpSocket::bind(local).await?;
        // Connected: only the upstream's datagrams arrive.
        socket.connect(upstream).await?;
        socket.send(query).await?;
        let mut buffer = vec![0u8; MAX_MESSAGE];
        let n = socket.recv(&mut buffer).await?;
        buffer.truncate(n);
        Ok(buffer)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
}

/// The relay over one routing of sources to DNS servers.
pub struct Relay {
    upstreams: Arc<dyn Upstreams>,
    timeout: Duration,
}

impl Relay {
    pub fn new(upstreams: Arc<dyn Upstreams>) -> Self {
        Relay {
            upstreams,
            timeout: UPSTREAM_TIMEOUT,
        }
    }

    /// Waits `timeout` for upstream answers instead (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Relays the queries arriving on `socket` until dropped.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let permits = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
        let mut buffer = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, from) = match socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(e) => {
                    // ICMP errors of earlier replies and the like: the
                    // socket still works.
                    tracing::debug!(error = %e, "the DNS relay's receive failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%from, "the DNS relay is saturated; dropped a query");
                continue;
            };
            let query = buffer[..n].to_vec();
            let relay = self.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Some(answer) = relay.answer_datagram(&query, from.ip()).await {
                    let _ = socket.send_to(&answer, from).await;
                }
                drop(permit);
            });
        }
    }

    /// What to send back for the datagram `query` from `source` (nothing
    /// for what is not a DNS query).
    pub async fn answer_datagram(&self, query: &[u8], source: IpAddr) -> Option<Vec<u8>> {
        if !is_query(query) {
            return None;
        }
        let Some(upstream) = self.upstreams.upstream(source).await else {
            tracing::debug!(%source, "the DNS relay refused a source no task of this host has");
            return answer_with(query, ResponseCode::Refused);
        };
        match exchange_udp(upstream, query, self.timeout).await {
            Ok(answer) => Some(answer),
            Err(e) => {
                tracing::debug!(%source, %upstream, error = %e, "the Berth DNS server did not answer a relayed query");
                answer_with(query, ResponseCode::ServFail)
            }
        }
    }

    /// Relays the connections accepted on `listener` until dropped.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "the DNS relay's accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%from, "the DNS relay has too many connections; closed one");
                continue;
            };
            let relay = self.clone();
            tokio::spawn(async move {
                relay.relay_stream(stream, from.ip()).await;
                drop(permit);
            });
        }
    }

    /// Pipes one client connection to its upstream's TCP port (DNS over
    /// TCP frames pass through unchanged); a source no task has is closed.
    async fn relay_stream(&self, mut client: TcpStream, source: IpAddr) {
        let Some(upstream) = self.upstreams.upstream(source).await else {
            tracing::debug!(%source, "the DNS relay closed a connection from a source no task of this host has");
            return;
        };
        let connected = tokio::time::timeout(self.timeout, TcpStream::connect(upstream)).await;
        let mut server = match connected {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => {
                tracing::debug!(%upstream, error = %e, "cannot reach the Berth DNS server over TCP");
                return;
            }
            Err(_) => return,
        };
        let _ = tokio::time::timeout(
            TCP_LIFETIME,
            tokio::io::copy_bidirectional(&mut client, &mut server),
        )
        .await;
    }
}

/// A stand-in for Berth's DNS server, and DNS messages to ask it (tests).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    /// A UDP socket and a TCP listener on one free loopback port (the UDP
    /// port may be taken for TCP by another process: try again).
    pub async fn udp_and_tcp() -> (UdpSocket, TcpListener) {
        for _ in 0..100 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let at = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(at).await {
                return (udp, tcp);
            }
        }
        panic!("no loopback port free for both UDP and TCP");
    }

    /// A DNS server on a loopback port answering every A question with
    /// `address` (UDP and TCP), standing in for Berth's.
    pub async fn upstream(address: Ipv4Addr) -> SocketAddr {
        let (udp, tcp) = udp_and_tcp().await;
        let at = udp.local_addr().unwrap();
        let answer = move |bytes: &[u8]| {
            let q = Message::from_vec(bytes).unwrap();
            let mut a = Message::response(q.metadata.id, q.metadata.op_code);
            a.metadata.authoritative = true;
            a.add_queries(q.queries.iter().cloned());
            let name = q.queries[0].name().clone();
            a.add_answer(Record::from_rdata(
                name,
                5,
                RData::A(hickory_proto::rr::rdata::A(address)),
            ));
            a.to_vec().unwrap()
        };
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buffer).await {
                let _ = udp.send_to(&answer(&buffer[..n]), from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).await.is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if s.read_exact(&mut q).await.is_err() {
                    continue;
                }
                let a = answer(&q);
                let _ = s.write_all(&(a.len() as u16).to_be_bytes()).await;
                let _ = s.write_all(&a).await;
            }
        });
        at
    }

    pub fn a_records(bytes: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
        let m = Message::from_vec(bytes).unwrap();
        let ips = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        (m.metadata.response_code, ips)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{a_records, query, upstream};
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Table(HashMap<IpAddr, SocketAddr>);

    #[async_trait::async_trait]
    impl Upstreams for Table {
        async fn upstream(&self, source: IpAddr) -> Option<SocketAddr> {
            self.0.get(&source).copied()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn relays_by_source_refuses_strangers_and_fails_cleanly() {
        let a = upstream("10.0.0.1".parse().unwrap()).await;
        let b = upstream("10.0.0.2".parse().unwrap()).await;
        // Nothing listens there (a port just freed).
        let silent = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let relay = Relay::new(Arc::new(Table(HashMap::from([
            (ip("172.17.0.2"), a),
            (ip("172.31.0.9"), b),
            (ip("172.17.0.3"), silent),
        ]))))
        .with_timeout(Duration::from_millis(300));
        let q = query(4242, "api.corp.local.");
        let answer = relay.answer_datagram(&q, ip("172.17.0.2")).await.unwrap();
        assert_eq!(Message::from_vec(&answer).unwrap().metadata.id, 4242);
        assert_eq!(
            a_records(&answer),
            (ResponseCode::NoError, vec!["10.0.0.1".parse().unwrap()])
        );
        let answer = relay.answer_datagram(&q, ip("172.31.0.9")).await.unwrap();
        assert_eq!(
            a_records(&answer).1,
            vec!["10.0.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        // A stranger: REFUSED, with the question and id.
        let refused = relay.answer_datagram(&q, ip("192.0.2.7")).await.unwrap();
        let m = Message::from_vec(&refused).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.queries, Message::from_vec(&q).unwrap().queries);
        // An upstream that does not answer: SERVFAIL within the deadline.
        let started = std::time::Instant::now();
        let failed = relay.answer_datagram(&q, ip("172.17.0.3")).await.unwrap();
        assert_eq!(a_records(&failed).0, ResponseCode::ServFail);
        assert!(started.elapsed() < Duration::from_secs(2));
        // Not DNS, or an answer rather than a query: dropped.
        assert_eq!(
            relay.answer_datagram(b"hello", ip("172.17.0.2")).await,
            None
        );
        assert_eq!(relay.answer_datagram(&answer, ip("172.17.0.2")).await, None);
    }

    #[tokio::test]
    async fn serves_udp_and_tcp() {
        let a = upstream("10.9.9.9".parse().unwrap()).await;
        let relay = Arc::new(Relay::new(Arc::new(Table(HashMap::from([(
            ip("127.0.0.1"),
            a,
        )])))));
        let (udp, tcp) = super::testing::udp_and_tcp().await;
        let at = udp.local_addr().unwrap();
        tokio::spawn(relay.clone().serve_udp(udp));
        tokio::spawn(relay.serve_tcp(tcp));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(at).await.unwrap();
        client.send(&query(7, "db.corp.local.")).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            a_records(&buffer[..n]).1,
            vec!["10.9.9.9".parse::<Ipv4Addr>().unwrap()]
        );

        let mut stream = TcpStream::connect(at).await.unwrap();
        let q = query(8, "db.corp.local.");
        stream
            .write_all(&(q.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            a_records(&answer).1,
            vec!["10.9.9.9".parse::<Ipv4Addr>().unwrap()]
        );
        // A source without a task: the connection is closed.
        let strangers = Arc::new(Relay::new(Arc::new(Table(HashMap::new()))));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = listener.local_addr().unwrap();
        tokio::spawn(strangers.serve_tcp(listener));
        let mut stream = TcpStream::connect(other).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(read.is_ok_and(|n| n == 0) || rest.is_empty());
    }
}
