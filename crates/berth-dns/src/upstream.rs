//! Forwarding the names that are not Berth's to upstream resolvers, with a
//! bounded wait: each upstream gets `timeout`, tried in order, and the
//! caller answers SERVFAIL when none answered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// The upstream resolvers and how long each may take.
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// Parses `ip`, `ip:port` or `[v6]:port` (port 53 by default).
pub fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("'{text}' is not an IP address or IP:port"))
}

/// The host's resolvers from a resolv.conf, leaving out loopback ones (a
/// local stub resolver may itself forward Berth's zones here, which would
/// loop).
pub fn system_upstreams(resolv_conf: &Path) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(resolv_conf) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (`fe80::1%eth0`) keeps only the address.
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(SocketAddr::new(ip, 53))
        })
        .collect()
}

impl Upstreams {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Sends the query bytes to each upstream in turn (over TCP when `tcp`,
    /// e.g. the client came over TCP after a truncated answer) and returns
    /// the first answer.
    pub async fn exchange(&self, query: &[u8], tcp: bool) -> Option<Message> {
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        for server in &self.servers {
            let attempt = async {
                if tcp {
                    exchange_tcp(*server, query).await
                } else {
                    exchange_udp(*server, query, id).await
                }
            };
            match timeout(self.timeout, attempt).await {
                Ok(Ok(message)) if message.metadata.id == id => return Some(message),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(%server, error = %e, "upstream DNS query failed"),
                Err(_) => tracing::debug!(%server, "upstream DNS query timed out"),
            }
        }
        None
    }

    /// Resolves `name`/`qtype` upstream (a CNAME of Berth's pointing
    /// outside), asking for recursion.
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Option<Message> {
        let mut message = Message::query();
        message.metadata.id = rand::random();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name.clone(), qtype));
        let bytes = message.to_vec().ok()?;
        self.exchange(&bytes, false).await
    }
}

async fn exchange_udp(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buffer).await?;
        // Anything else arriving on the port (a late answer, a spoof) is
        // not this answer.
        if let Ok(message) = Message::from_vec(&buffer[..n]) {
            if message.metadata.id == id && message.metadata.message_type == MessageType::Response {
                return Ok(message);
            }
        }
    }
}

async fn exchange_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let length = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let length = stream.read_u16().await?;
    let mut buffer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buffer).await?;
    Message::from_vec(&buffer).map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse() {
        assert_eq!(
            parse_upstream("10.0.0.2").unwrap(),
            "10.0.0.2:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[fd00::1]:54").unwrap(),
            "[fd00::1]:54".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("fd00::1").unwrap(),
            "[fd00::1]:53".parse().unwrap()
        );
        assert!(parse_upstream("resolver.example").is_err());
    }

    #[test]
    fn resolv_conf_leaves_out_loopback() {
        let dir = std::env::temp_dir().join(format!("berth-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch corp\nnameserver ::1\nnameserver fe80::1%eth0\n",
        )
        .unwrap();
        assert_eq!(
            system_upstreams(&path),
            vec![
                "10.255.255.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert!(system_upstreams(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
