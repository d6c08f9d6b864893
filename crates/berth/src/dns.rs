//! Starting Berth's DNS server (`berth-dns`) from the server flags
//! `--dns-listen` and `--dns-upstream`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use berth_dns::{DnsConfig, DnsServer};
use berth_store::Store;

use crate::ServeArgs;

/// The upstream resolvers: `--dns-upstream` (`none`: no forwarding), else
/// the host's non-loopback nameservers.
pub fn upstreams(args: &ServeArgs) -> anyhow::Result<Vec<SocketAddr>> {
    if args.dns_upstream.is_empty() {
        return Ok(berth_dns::system_upstreams(std::path::Path::new(
            "/etc/resolv.conf",
        )));
    }
    if args.dns_upstream.iter().any(|u| u == "none") {
        return Ok(Vec::new());
    }
    args.dns_upstream
        .iter()
        .map(|u| berth_dns::parse_upstream(u).map_err(|e| anyhow::anyhow!("--dns-upstream: {e}")))
        .collect()
}

/// Starts the DNS server unless `--dns-listen off`, and tells registering
/// agents its address (127.0.0.1 for an all-addresses listener).
pub async fn start(
    args: &ServeArgs,
    store: Arc<dyn Store>,
    endpoint: &berth_ecs::agent_api::DnsEndpoint,
) -> anyhow::Result<Option<DnsServer>> {
    if args.dns_listen == "off" {
        tracing::info!("the DNS server is off (--dns-listen off)");
        return Ok(None);
    }
    let listen: SocketAddr = args
        .dns_listen
        .parse()
        .with_context(|| format!("--dns-listen: '{}' is not IP:PORT or off", args.dns_listen))?;
    let mut config = DnsConfig::new(listen);
    config.upstreams = upstreams(args)?;
    let server = DnsServer::start(config, store).await?;
    let mut advertised = server.local_addr();
    if advertised.ip().is_unspecified() {
        advertised.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    endpoint.set(Some(advertised));
    Ok(Some(server))
}
