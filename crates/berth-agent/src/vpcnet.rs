//! The awsvpc data path: VPCs on one host, routed as a VPC routes.
//!
//! Each VPC with a task on the host gets a **router**: a network namespace
//! held by a container of the pause image named `berth-vpc-<vpc id>`
//! (label `berth.vpc-router=<vpc id>`), with forwarding on. Inside it, every
//! subnet of the VPC that has a task here is a bridge (`br<address in
//! hex>-<prefix>`) holding the subnet's router address (`.1`), so the
//! subnets of one VPC reach each other (the VPC's local route) and nothing
//! else does: addresses of the VPC's block that are on no bridge here are
//! `unreachable`, and VPCs are separate namespaces, so two VPCs with the
//! same block never meet. A task's pause container starts with no network
//! and gets a veth pair: `eth0` (the ENI's address and MAC, default route
//! via the subnet's router) in the task's namespace, `t<task id>` on its
//! subnet's bridge. Security groups stay enforced inside each task's own
//! namespace (`netpolicy`).
//!
//! The routers' other leg is the Docker network `berth-uplink` (host
//! device `berth-uplink`, block [`UPLINK_BLOCK`], inter-container traffic
//! off, so routers cannot reach each other through it): the host reaches
//! the tasks through host routes `<subnet> via <router> proto 190`, and
//! tasks reach the task endpoint (`169.254.170.2`, with their own source
//! address) and the outside (masqueraded by the router, then by Docker)
//! through it. A host
//! has one routing table, so a subnet block is routed to the first VPC
//! that claims it; a block that overlaps a route the host already has
//! (another VPC's, a Docker network's, the host's own networks) is not
//! claimed, and the host and the task endpoint do not reach that VPC's
//! tasks until the block is free again.
//!
//! Every change happens under one host-wide lock (`/run/berth/network.lock`),
//! so the agents of a host never race each other, and each ends with a
//! collection pass: bridges without tasks, routers without bridges, host
//! routes to either, and the uplink when no router is left are removed.
//! Everything is named deterministically and found again by name and label
//! after an agent restart.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use berth_model::agent_protocol::{GetNetworkPolicyResponse, TaskNetworkInterface};
use berth_runtime::{
    ContainerSpec, ContainerStatus, NetworkMode, NetworkSpec, Runtime, RuntimeError,
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::run_dir::{FileLock, RUN_DIR};
use crate::task_endpoint::ENDPOINT_IP;

/// The Docker network between the host and the routers, and its host device.
pub const UPLINK_NETWORK: &str = "berth-uplink";
/// The uplink's block: link-local, so never a VPC's (AWS accepts no VPC
/// there) and never one of the host's own networks, and fixed, so it does
/// not wander through Docker's pools (where the default VPC's 172.31.0.0/16
/// is one) each time it is created again. The host is `.1`.
pub const UPLINK_BLOCK: &str = "169.254.176.0/22";
const UPLINK_GATEWAY: &str = "169.254.176.1";
/// Router containers are named this plus their VPC's id.
pub const ROUTER_PREFIX: &str = "berth-vpc-";
/// The label naming a router's VPC.
pub const LABEL_ROUTER: &str = "berth.vpc-router";
/// The protocol number of the host routes Berth adds (`ip route … proto 190`).
pub const ROUTE_PROTOCOL: u8 = 190;
/// A task's interface in its namespace.
pub const TASK_DEVICE: &str = "eth0";
/// The nftables table masquerading a router's outbound traffic.
const NAT_TABLE: &str = "berth_router";
/// The router's leg on the uplink (Docker names it).
const ROUTER_UPLINK_DEVICE: &str = "eth0";
/// The metric of a router's `unreachable <VPC block>` route, above the
/// bridges' own routes (metric 0) even when a subnet is the whole block.
const UNREACHABLE_METRIC: u32 = 4242;
/// How long one `ip`/`nft` run may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Docker's options for the uplink: a fixed device name, and no traffic
/// between the containers on it (the routers of different VPCs).
const DOCKER_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const DOCKER_ICC: &str = "com.docker.network.bridge.enable_icc";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("`{0}` did not finish within {1:?}")]
    Timeout(String, Duration),
    #[error("cannot read what `{command}` answered: {message}")]
    Output { command: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot take the host's network lock: {0}")]
    Lock(std::io::Error),
    #[error(transparent)]
    Policy(#[from] crate::netpolicy::PolicyError),
}

impl NetError {
    /// The container runtime could not be reached: worth trying again.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, NetError::Runtime(RuntimeError::Unavailable(_)))
    }
}

/// An IPv4 block, kept in canonical form (no host bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        (prefix <= 32).then(|| Cidr {
            network: Ipv4Addr::from(u32::from(address) & Self::mask(prefix)),
            prefix,
        })
    }

    /// `a.b.c.d/n`, or a bare address (a /32).
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        match text.split_once('/') {
            Some((address, prefix)) => Cidr::new(address.parse().ok()?, prefix.parse().ok()?),
            None => Cidr::new(text.parse().ok()?, 32),
        }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        }
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = Self::mask(shorter);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// Whether `other` lies wholly inside this block.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.network)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A MAC address in the form `ip` takes, or nothing when it is not one.
fn mac_address(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| text.trim().to_ascii_lowercase())
}

/// Keeps `[A-Za-z0-9-]`, so a name is safe in a container name, a label
/// and a command line.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// What the agent plumbs for one interface, checked: every field that
/// reaches a command line is a parsed address or a sanitized name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    /// The VPC's id (or, from servers that do not send it, the subnet's).
    pub vpc: String,
    /// The VPC's block, when known.
    pub vpc_block: Option<Cidr>,
    pub subnet: Cidr,
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
    pub mac: Option<String>,
}

impl Addressing {
    pub fn from_interface(eni: &TaskNetworkInterface) -> Result<Addressing, NetError> {
        let invalid = |what: &str| {
            NetError::Invalid(format!(
                "the interface {} has an invalid {what}",
                sanitize(&eni.eni_id)
            ))
        };
        let subnet = Cidr::parse(&eni.subnet_cidr).ok_or_else(|| invalid("subnet block"))?;
        let address: Ipv4Addr = eni
            .private_ip
            .parse()
            .map_err(|_| invalid("private address"))?;
        let gateway: Ipv4Addr = eni.gateway.parse().map_err(|_| invalid("gateway"))?;
        if subnet.prefix > 30 || !subnet.contains(address) || !subnet.contains(gateway) {
            return Err(invalid("address for its subnet"));
        }
        let vpc_block = Cidr::parse(&eni.vpc_cidr).filter(|v| v.covers(&subnet));
        let vpc = [&eni.vpc_id, &eni.subnet_id]
            .into_iter()
            .map(|id| sanitize(id))
            .find(|id| !id.is_empty())
            .unwrap_or_else(|| format!("subnet-{:08x}", u32::from(subnet.network)));
        Ok(Addressing {
            vpc,
            vpc_block,
            subnet,
            gateway,
            address,
            mac: mac_address(&eni.mac),
        })
    }

    /// The router container of the interface's VPC.
    pub fn router_name(&self) -> String {
        router_name(&self.vpc)
    }

    /// The subnet's bridge inside the router.
    pub fn bridge(&self) -> String {
        bridge_name(&self.subnet)
    }

    /// The VPC's resolver address (block base + 2), when the block is known.
    pub fn resolver(&self) -> Option<Ipv4Addr> {
        let block = self.vpc_block?;
        (block.prefix <= 30).then(|| Ipv4Addr::from(u32::from(block.network) + 2))
    }
}

/// The router container of VPC `vpc`.
pub fn router_name(vpc: &str) -> String {
    format!("{ROUTER_PREFIX}{}", sanitize(vpc))
}

/// The VPC's resolver (AWS's AmazonProvidedDNS): the base of the VPC's
/// block plus two, e.g. `172.31.0.2`. None when the interface does not
/// name its VPC's block.
pub fn vpc_resolver(eni: &TaskNetworkInterface) -> Option<Ipv4Addr> {
    Addressing::from_interface(eni).ok()?.resolver()
}

/// The port the task endpoint's DNS relay answers on.
pub const DNS_PORT: u16 = 53;

/// The router of an interface (as the task endpoint names it).
pub fn router_of(eni: &TaskNetworkInterface) -> Option<String> {
    Addressing::from_interface(eni)
        .ok()
        .map(|a| a.router_name())
}

/// A subnet's bridge in its VPC's router (at most 15 characters).
pub fn bridge_name(subnet: &Cidr) -> String {
    format!("br{:08x}-{}", u32::from(subnet.network), subnet.prefix)
}

/// A task's leg on its subnet's bridge (at most 15 characters).
pub fn veth_name(task_id: &str) -> String {
    let id = sanitize(task_id).to_ascii_lowercase();
    let short: String = if id.len() >= 14 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        id.chars().take(14).collect()
    } else {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(task_id.as_bytes()))
            .chars()
            .take(14)
            .collect()
    };
    format!("t{short}")
}

/// The uplink network as the runtime creates it.
pub fn uplink_spec() -> NetworkSpec {
    NetworkSpec {
        name: UPLINK_NETWORK.into(),
        subnet: UPLINK_BLOCK.into(),
        gateway: UPLINK_GATEWAY.into(),
        labels: [(
            crate::spec::LABEL_NETWORK_OWNER.to_string(),
            "uplink".to_string(),
        )]
        .into(),
        options: [
            (DOCKER_BRIDGE_NAME.to_string(), UPLINK_NETWORK.to_string()),
            (DOCKER_ICC.to_string(), "false".to_string()),
        ]
        .into(),
    }
}

/// The router container of VPC `vpc`: the pause image on the uplink, with
/// forwarding on in its namespace.
pub fn router_spec(vpc: &str) -> ContainerSpec {
    ContainerSpec {
        name: router_name(vpc),
        image: berth_runtime::pause::PAUSE_IMAGE.to_string(),
        labels: [
            (LABEL_ROUTER.to_string(), sanitize(vpc)),
            (
                crate::spec::LABEL_NETWORK_OWNER.to_string(),
                "router".to_string(),
            ),
        ]
        .into(),
        network_mode: NetworkMode::Network(UPLINK_NETWORK.into()),
        sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
        stop_timeout_secs: Some(0),
        ..ContainerSpec::default()
    }
}

// --- what `ip -j` answers ----------------------------------------------------

#[derive(Debug, Deserialize)]
struct IpAddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

#[derive(Debug, Deserialize)]
struct IpLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    linkinfo: Option<IpLinkInfo>,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Debug, Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
}

/// A network device as `ip -j -d addr show` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// `bridge`, `veth`, … (none for plain devices such as `lo`).
    pub kind: Option<String>,
    pub master: Option<String>,
    pub up: bool,
    pub mac: Option<String>,
    /// IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// A route as `ip -j route show` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// None for the default route.
    pub dst: Option<Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub protocol: Option<String>,
    /// `unicast` unless `ip` says otherwise (`unreachable`, `blackhole` …).
    pub kind: String,
    pub metric: u32,
}

impl Route {
    fn is_berths(&self) -> bool {
        self.protocol.as_deref() == Some(ROUTE_PROTOCOL.to_string().as_str())
            && self.dev.as_deref() == Some(UPLINK_NETWORK)
    }
}

pub fn parse_links(json: &str) -> Result<Vec<Link>, String> {
    let links: Vec<IpLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .map(|l| Link {
            up: l.flags.iter().any(|f| f == "UP"),
            kind: l.linkinfo.and_then(|i| i.info_kind),
            master: l.master,
            mac: l.address.map(|a| a.to_ascii_lowercase()),
            addresses: l
                .addr_info
                .iter()
                .filter(|a| a.family == "inet")
                .filter_map(|a| Some((a.local.as_deref()?.parse().ok()?, a.prefixlen?)))
                .collect(),
            name: l.ifname,
        })
        .collect())
}

pub fn parse_routes(json: &str) -> Result<Vec<Route>, String> {
    let routes: Vec<IpRoute> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            let dst = if r.dst == "default" {
                None
            } else {
                // Other families, or forms this module never writes.
                Some(Cidr::parse(&r.dst)?)
            };
            Some(Route {
                dst,
                gateway: r.gateway.and_then(|g| g.parse().ok()),
                dev: r.dev,
                protocol: r.protocol,
                kind: r.kind.unwrap_or_else(|| "unicast".into()),
                metric: r.metric.unwrap_or(0),
            })
        })
        .collect())
}

// --- plans (pure) ------------------------------------------------------------

/// The `ip -batch` lines that give a router the bridge of `a`'s subnet and
/// the `unreachable` route of its VPC's block, and, with `veth` (the
/// task's leg name and its pause container's PID), the task's veth pair.
pub fn router_commands(
    links: &[Link],
    routes: &[Route],
    a: &Addressing,
    veth: Option<(&str, u32)>,
) -> Vec<String> {
    let bridge = a.bridge();
    let mut out = Vec::new();
    let existing = links.iter().find(|l| l.name == bridge);
    if existing.is_none() {
        out.push(format!("link add {bridge} type bridge"));
    }
    if !existing.is_some_and(|l| l.addresses.contains(&(a.gateway, a.subnet.prefix))) {
        out.push(format!(
            "addr replace {}/{} dev {bridge}",
            a.gateway, a.subnet.prefix
        ));
    }
    if !existing.is_some_and(|l| l.up) {
        out.push(format!("link set {bridge} up"));
    }
    if let Some(resolver) = a.resolver() {
        // The VPC's resolver answers from the router (ARP on every subnet
        // bridge included, as the address is local): [`nat_script`] sends
        // its DNS on to the host's relay.
        let present = links
            .iter()
            .any(|l| l.name == "lo" && l.addresses.contains(&(resolver, 32)));
        if !present {
            out.push(format!("addr replace {resolver}/32 dev lo"));
        }
    }
    if let Some(block) = a.vpc_block {
        let present = routes
            .iter()
            .any(|r| r.kind == "unreachable" && r.dst == Some(block));
        if !present {
            out.push(format!(
                "route replace unreachable {block} metric {UNREACHABLE_METRIC}"
            ));
        }
    }
    if let Some((name, pid)) = veth {
        let leg = links.iter().find(|l| l.name == name);
        if leg.is_none() {
            let mac = a
                .mac
                .as_deref()
                .map(|m| format!(" address {m}"))
                .unwrap_or_default();
            out.push(format!(
                "link add {name} type veth peer name {TASK_DEVICE}{mac} netns {pid}"
            ));
        }
        if !leg.is_some_and(|l| l.up && l.master.as_deref() == Some(bridge.as_str())) {
            out.push(format!("link set {name} master {bridge} up"));
        }
    }
    out
}

/// The `ip -batch` lines that give the task's `eth0` its address, MAC and
/// default route via the subnet's router.
pub fn task_commands(
    links: &[Link],
    routes: &[Route],
    a: &Addressing,
) -> Result<Vec<String>, NetError> {
    let Some(device) = links.iter().find(|l| l.name == TASK_DEVICE) else {
        return Err(NetError::Invalid(format!(
            "the task's namespace has no {TASK_DEVICE}"
        )));
    };
    let mut out = Vec::new();
    let mut up = device.up;
    if let Some(mac) = &a.mac {
        if device.mac.as_deref() != Some(mac.as_str()) {
            out.push(format!("link set {TASK_DEVICE} down"));
            out.push(format!("link set {TASK_DEVICE} address {mac}"));
            up = false;
        }
    }
    if !device.addresses.contains(&(a.address, a.subnet.prefix)) {
        out.push(format!(
            "addr replace {}/{} dev {TASK_DEVICE}",
            a.address, a.subnet.prefix
        ));
    }
    if !up {
        out.push(format!("link set {TASK_DEVICE} up"));
    }
    let routed = routes
        .iter()
        .any(|r| r.dst.is_none() && r.gateway == Some(a.gateway));
    if !routed {
        out.push(format!(
            "route replace default via {} dev {TASK_DEVICE}",
            a.gateway
        ));
    }
    Ok(out)
}

/// A subnet block the host should route to a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub block: Cidr,
    pub router: Ipv4Addr,
}

/// The `ip -batch` lines that bring the host's routes to the routers in
/// line with `claims` (in priority order): Berth's routes that no claim
/// wants go; a claim gets its route unless the block overlaps a route the
/// host has (another VPC's claim included), so the first claim of a block
/// keeps it and the host's own networks are never shadowed.
pub fn host_route_commands(routes: &[Route], claims: &[Claim]) -> Vec<String> {
    let mut out = Vec::new();
    let wanted = |r: &Route| {
        claims
            .iter()
            .any(|c| r.dst == Some(c.block) && r.gateway == Some(c.router))
    };
    let mut table: Vec<(Cidr, Option<Ipv4Addr>)> = Vec::new();
    for route in routes {
        let Some(dst) = route.dst else { continue };
        if route.is_berths() && !wanted(route) {
            let via = route
                .gateway
                .map(|g| format!(" via {g}"))
                .unwrap_or_default();
            out.push(format!(
                "route del {dst}{via} dev {UPLINK_NETWORK} proto {ROUTE_PROTOCOL}"
            ));
            continue;
        }
        table.push((
            dst,
            if route.is_berths() {
                route.gateway
            } else {
                None
            },
        ));
    }
    for claim in claims {
        if table
            .iter()
            .any(|(dst, via)| *dst == claim.block && *via == Some(claim.router))
        {
            continue;
        }
        if table.iter().any(|(dst, _)| dst.overlaps(&claim.block)) {
            continue;
        }
        out.push(format!(
            "route add {} via {} dev {UPLINK_NETWORK} proto {ROUTE_PROTOCOL}",
            claim.block, claim.router
        ));
        table.push((claim.block, Some(claim.router)));
    }
    out
}

/// The nft script masquerading what leaves a router for the uplink, except
/// what goes to the task endpoint (which tells tasks apart by their own
/// addresses), and, with `resolver`, sending DNS (UDP and TCP port 53) for
/// the VPC's resolver address to the task endpoint's DNS relay, which
/// relays it to the Berth DNS server of the task's agent. What goes to the
/// VPC's own block through the uplink (its load balancers, which live on
/// the host) keeps the task's address too, so a load balancer sees its
/// client. One atomic replace, as in `netpolicy`.
pub fn nat_script(resolver: Option<Ipv4Addr>, vpc_block: Option<Cidr>) -> String {
    let kept = match vpc_block {
        Some(block) => format!("{{ {ENDPOINT_IP}, {block} }}"),
        None => ENDPOINT_IP.to_string(),
    };
    let prerouting = match resolver {
        Some(resolver) => format!(
            "\x20 chain prerouting {{\n\
             \x20   type nat hook prerouting priority -100; policy accept;\n\
             \x20   ip daddr {resolver} meta l4proto {{ tcp, udp }} th dport {DNS_PORT} dnat to {ENDPOINT_IP}:{DNS_PORT}\n\
             \x20 }}\n"
        ),
        None => String::new(),
    };
    format!(
        "table ip {NAT_TABLE}\n\
         delete table ip {NAT_TABLE}\n\
         table ip {NAT_TABLE} {{\n\
         {prerouting}\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority 100; policy accept;\n\
         \x20   oifname \"{ROUTER_UPLINK_DEVICE}\" ip daddr != {kept} masquerade\n\
         \x20 }}\n\
         }}\n"
    )
}

/// A proxy-ARP entry (`ip -j neigh show proxy`): the router answers ARP
/// for `address` on `dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEntry {
    pub address: Ipv4Addr,
    pub dev: String,
}

#[derive(Debug, Deserialize)]
struct IpNeigh {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
}

pub fn parse_proxies(json: &str) -> Result<Vec<ProxyEntry>, String> {
    let entries: Vec<IpNeigh> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .filter_map(|n| {
            Some(ProxyEntry {
                address: n.dst.parse().ok()?,
                dev: n.dev?,
            })
        })
        .collect())
}

/// The `ip -batch` lines that make a router send `hosted` addresses (load
/// balancers' interfaces, which live on the host) to the host through its
/// uplink, and answer ARP for them on the bridge of their subnet, since a
/// task of that subnet looks for them on its link (an address of a subnet
/// without a bridge here is only routed: tasks reach it through their
/// gateway). Routes and entries for addresses no longer hosted are removed.
pub fn hosted_commands(
    links: &[Link],
    routes: &[Route],
    proxies: &[ProxyEntry],
    hosted: &[Ipv4Addr],
) -> Vec<String> {
    let subnet_bridge = |address: Ipv4Addr| {
        links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("bridge"))
            .find(|l| {
                l.addresses
                    .iter()
                    .any(|(a, p)| Cidr::new(*a, *p).is_some_and(|c| c.contains(address)))
            })
    };
    let protocol = ROUTE_PROTOCOL.to_string();
    let is_hosted_route = |r: &Route| {
        r.protocol.as_deref() == Some(protocol.as_str())
            && r.dev.as_deref() == Some(ROUTER_UPLINK_DEVICE)
            && r.dst.is_some_and(|d| d.prefix == 32)
    };
    let wanted: Vec<(Ipv4Addr, Option<&Link>)> =
        hosted.iter().map(|a| (*a, subnet_bridge(*a))).collect();
    let mut out = Vec::new();
    for route in routes.iter().filter(|r| is_hosted_route(r)) {
        if let Some(dst) = route.dst {
            if !wanted.iter().any(|(a, _)| *a == dst.network) {
                out.push(format!("route del {dst} dev {ROUTER_UPLINK_DEVICE}"));
            }
        }
    }
    for entry in proxies {
        if !wanted
            .iter()
            .any(|(a, b)| *a == entry.address && b.is_some_and(|b| b.name == entry.dev))
        {
            out.push(format!(
                "neigh del proxy {} dev {}",
                entry.address, entry.dev
            ));
        }
    }
    for (address, bridge) in &wanted {
        let routed = routes.iter().any(|r| {
            is_hosted_route(r)
                && r.dst.is_some_and(|d| d.network == *address)
                && r.gateway.is_some_and(|g| g.to_string() == UPLINK_GATEWAY)
        });
        if !routed {
            out.push(format!(
                "route replace {address}/32 via {UPLINK_GATEWAY} dev {ROUTER_UPLINK_DEVICE} proto {ROUTE_PROTOCOL}"
            ));
        }
        let Some(bridge) = bridge else { continue };
        if !proxies
            .iter()
            .any(|p| p.address == *address && p.dev == bridge.name)
        {
            out.push(format!("neigh replace proxy {address} dev {}", bridge.name));
        }
    }
    out
}

/// The bridges of a router (by name) that hold at least one port, and
/// those that hold none.
fn bridges(links: &[Link]) -> (Vec<&Link>, Vec<&Link>) {
    links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .partition(|b| {
            links
                .iter()
                .any(|l| l.master.as_deref() == Some(b.name.as_str()))
        })
}

// --- running commands ----------------------------------------------------------

/// Runs `program args` (in the network namespace of `pid` when given),
/// feeding `input`, and answers its standard output.
async fn run(
    pid: Option<u32>,
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, NetError> {
    let namespace = pid.map(|p| format!("--net=/proc/{p}/ns/net"));
    let mut command = match &namespace {
        Some(ns) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(ns).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    };
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = || {
        let mut text = format!("{program} {}", args.join(" "));
        if let Some(p) = pid {
            text.push_str(&format!(" (in the namespace of {p})"));
        }
        text
    };
    let mut child = command.spawn().map_err(|source| NetError::Spawn {
        program: if pid.is_some() { "nsenter" } else { program }.to_string(),
        source,
    })?;
    let exchange = async {
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await?;
            drop(stdin);
        }
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| NetError::Timeout(shown(), COMMAND_TIMEOUT))?
        .map_err(|source| NetError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if let Some(text) = input {
            message.push_str(&format!(" (input: {})", text.trim().replace('\n', "; ")));
        }
        return Err(NetError::Command {
            command: shown(),
            message,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn links_in(pid: Option<u32>) -> Result<Vec<Link>, NetError> {
    let json = run(pid, "ip", &["-j", "-d", "addr", "show"], None).await?;
    parse_links(&json).map_err(|message| NetError::Output {
        command: "ip -j -d addr show".into(),
        message,
    })
}

async fn routes_in(pid: Option<u32>) -> Result<Vec<Route>, NetError> {
    let json = run(pid, "ip", &["-j", "route", "show", "table", "main"], None).await?;
    parse_routes(&json).map_err(|message| NetError::Output {
        command: "ip -j route show".into(),
        message,
    })
}

async fn batch_in(pid: Option<u32>, commands: &[String]) -> Result<(), NetError> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut input = commands.join("\n");
    input.push('\n');
    run(pid, "ip", &["-batch", "-"], Some(&input)).await?;
    Ok(())
}

/// The block of the host's uplink device, when it exists.
async fn uplink_block() -> Result<Option<Cidr>, NetError> {
    let links = match run(
        None,
        "ip",
        &["-j", "addr", "show", "dev", UPLINK_NETWORK],
        None,
    )
    .await
    {
        Ok(json) => parse_links(&json).map_err(|message| NetError::Output {
            command: "ip -j addr show".into(),
            message,
        })?,
        Err(NetError::Command { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(links
        .iter()
        .flat_map(|l| l.addresses.iter())
        .find_map(|(address, prefix)| Cidr::new(*address, *prefix)))
}

/// Where the host sends packets for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Through a router (gateway) address.
    Via(Ipv4Addr),
    /// Straight onto a link (a network the host is on).
    OnLink,
    /// Nowhere.
    Unroutable,
}

/// How the host routes, for the task endpoint's check that an address is
/// routed to the VPC of the task it claims to be.
#[async_trait::async_trait]
pub trait HostRoutes: Send + Sync + 'static {
    async fn next_hop(&self, to: Ipv4Addr) -> NextHop;
}

/// [`HostRoutes`] through `ip route get`.
#[derive(Debug, Default)]
pub struct IpRouteLookup;

#[async_trait::async_trait]
impl HostRoutes for IpRouteLookup {
    async fn next_hop(&self, to: Ipv4Addr) -> NextHop {
        let address = to.to_string();
        let Ok(json) = run(None, "ip", &["-j", "route", "get", &address], None).await else {
            return NextHop::Unroutable;
        };
        match parse_routes(&json).ok().and_then(|r| r.into_iter().next()) {
            Some(Route {
                gateway: Some(g), ..
            }) => NextHop::Via(g),
            Some(_) => NextHop::OnLink,
            None => NextHop::Unroutable,
        }
    }
}

// --- the plumber -----------------------------------------------------------------

/// A router as found running.
#[derive(Debug, Clone, Copy)]
struct Router {
    pid: u32,
    uplink: Ipv4Addr,
}

/// What the task runner asks of the host's network.
#[async_trait::async_trait]
pub trait TaskNetworks: Send + Sync + 'static {
    /// Connects the namespace of process `pid` (a task's pause container)
    /// to its VPC as `eni` says; repeating it changes nothing.
    async fn attach(
        &self,
        task_id: &str,
        eni: &TaskNetworkInterface,
        pid: u32,
    ) -> Result<(), NetError>;

    /// Removes the task's leg from its subnet's bridge (its namespace is
    /// going; the kernel may take a moment to tear it down), then what no
    /// task uses any more.
    async fn detach(&self, task_id: &str, eni: &TaskNetworkInterface) -> Result<(), NetError>;

    /// Removes what no task uses any more (when the agent starts, and
    /// after a task's network is gone).
    async fn collect(&self) -> Result<(), NetError>;

    /// Whether the namespace of process `pid` still has its interface (a
    /// router removed by hand takes its tasks' interfaces with it).
    async fn is_attached(&self, pid: u32) -> Result<bool, NetError>;

    /// Enforces `policy` (the task's security groups) in the namespace of
    /// process `pid`, replacing the rules applied before; DNS to the VPC's
    /// `resolver` always passes.
    async fn apply_policy(
        &self,
        task_arn: &str,
        pid: u32,
        policy: &GetNetworkPolicyResponse,
        resolver: Option<Ipv4Addr>,
    ) -> Result<(), NetError>;

    /// Makes the router of `eni`'s VPC send `hosted` addresses (the VPC's
    /// load balancers, which live on this host) to the host.
    async fn route_hosted(
        &self,
        _eni: &TaskNetworkInterface,
        _hosted: &[Ipv4Addr],
    ) -> Result<(), NetError> {
        Ok(())
    }
}

/// [`TaskNetworks`] on this host, with `ip`, `nsenter` and `nft`, the
/// routers run by `runtime`.
pub struct VpcNetworks {
    runtime: Arc<dyn Runtime>,
    lock: PathBuf,
}

impl VpcNetworks {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        VpcNetworks {
            runtime,
            lock: PathBuf::from(RUN_DIR).join("network.lock"),
        }
    }

    async fn lock(&self) -> Result<FileLock, NetError> {
        FileLock::acquire(&self.lock).await.map_err(NetError::Lock)
    }

    /// The VPC's router, created or started when needed.
    async fn ensure_router(&self, vpc: &str) -> Result<Router, NetError> {
        let spec = router_spec(vpc);
        let state = match self.runtime.inspect(&spec.name).await? {
            Some(state) => state,
            None => {
                match self.runtime.create(&spec).await {
                    Ok(_) | Err(RuntimeError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                self.runtime.inspect(&spec.name).await?.ok_or_else(|| {
                    NetError::Invalid(format!("the router {} vanished", spec.name))
                })?
            }
        };
        let state = if state.status == ContainerStatus::Running {
            state
        } else {
            // A router that stopped lost its namespace: a fresh one is
            // set up again below.
            self.runtime.start(&state.id).await?;
            self.runtime
                .inspect(&state.id)
                .await?
                .ok_or_else(|| NetError::Invalid(format!("the router {} vanished", spec.name)))?
        };
        let pid = state
            .pid
            .ok_or_else(|| NetError::Invalid(format!("the router {} is not running", spec.name)))?;
        let uplink = state
            .ip_address
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| {
                NetError::Invalid(format!("the router {} has no uplink address", spec.name))
            })?;
        Ok(Router { pid, uplink })
    }

    /// The collection pass and the host routes, under the lock.
    async fn reconcile(&self) -> Result<(), NetError> {
        let mut routers = self.runtime.list_owned(LABEL_ROUTER, None).await?;
        // Older routers first: their claims were made first.
        routers.sort_by_key(|r| r.started_at);
        let mut claims = Vec::new();
        let mut live = 0usize;
        for router in routers {
            let running = router.status == ContainerStatus::Running;
            let (Some(pid), Some(uplink), true) = (
                router.pid,
                router.ip_address.as_deref().and_then(|i| i.parse().ok()),
                running,
            ) else {
                tracing::info!(router = %router.name, "removing a router that no longer runs");
                self.runtime.remove(&router.id).await?;
                continue;
            };
            let links = links_in(Some(pid)).await?;
            let (used, unused) = bridges(&links);
            if used.is_empty() {
                tracing::info!(router = %router.name, "removing a router without tasks");
                self.runtime.remove(&router.id).await?;
                continue;
            }
            let deletions: Vec<String> = unused
                .iter()
                .map(|b| format!("link del {}", b.name))
                .collect();
            batch_in(Some(pid), &deletions).await?;
            live += 1;
            for bridge in used {
                for (address, prefix) in &bridge.addresses {
                    if let Some(block) = Cidr::new(*address, *prefix) {
                        claims.push(Claim {
                            block,
                            router: uplink,
                        });
                    }
                }
            }
        }
        // The per-subnet Docker networks of earlier versions, once unused.
        for name in self
            .runtime
            .list_networks(crate::spec::LABEL_NETWORK_OWNER, Some("subnet"))
            .await?
        {
            match self.runtime.remove_network(&name).await {
                Ok(()) => tracing::info!(network = %name, "removed an unused subnet network"),
                Err(RuntimeError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let routes = routes_in(None).await?;
        let changes = host_route_commands(&routes, &claims);
        if !changes.is_empty() {
            tracing::info!(?changes, "updating the host's routes to VPC routers");
        }
        batch_in(None, &changes).await?;
        if live == 0 {
            match self.runtime.remove_network(UPLINK_NETWORK).await {
                Ok(()) | Err(RuntimeError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl TaskNetworks for VpcNetworks {
    async fn attach(
        &self,
        task_id: &str,
        eni: &TaskNetworkInterface,
        pid: u32,
    ) -> Result<(), NetError> {
        let a = Addressing::from_interface(eni)?;
        let _lock = self.lock().await?;
        match self.runtime.ensure_network(&uplink_spec()).await {
            Ok(_) => {}
            // Made with another block (by an earlier version): used as it
            // is until no router is left on it.
            Err(RuntimeError::Conflict(e)) => {
                tracing::debug!(error = %e, "using the existing uplink")
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(uplink) = uplink_block().await? {
            let block = a.vpc_block.unwrap_or(a.subnet);
            if uplink.overlaps(&block) {
                return Err(NetError::Invalid(format!(
                    "the VPC block {block} overlaps the host's uplink network {uplink}"
                )));
            }
        }
        let router = self.ensure_router(&a.vpc).await?;
        let veth = veth_name(task_id);
        let links = links_in(Some(router.pid)).await?;
        let routes = routes_in(Some(router.pid)).await?;
        batch_in(
            Some(router.pid),
            &router_commands(&links, &routes, &a, Some((&veth, pid))),
        )
        .await?;
        run(
            Some(router.pid),
            "nft",
            &["-f", "-"],
            Some(&nat_script(a.resolver(), a.vpc_block)),
        )
        .await?;
        let links = links_in(Some(pid)).await?;
        let routes = routes_in(Some(pid)).await?;
        batch_in(Some(pid), &task_commands(&links, &routes, &a)?).await?;
        tracing::debug!(task = %task_id, router = %a.router_name(), uplink = %router.uplink, bridge = %a.bridge(), "task interface attached");
        self.reconcile().await
    }

    async fn detach(&self, task_id: &str, eni: &TaskNetworkInterface) -> Result<(), NetError> {
        let a = Addressing::from_interface(eni)?;
        let _lock = self.lock().await?;
        let router = self.runtime.inspect(&a.router_name()).await?;
        if let Some(pid) = router
            .filter(|r| r.status == ContainerStatus::Running)
            .and_then(|r| r.pid)
        {
            let veth = veth_name(task_id);
            let links = links_in(Some(pid)).await?;
            if links.iter().any(|l| l.name == veth) {
                match batch_in(Some(pid), &[format!("link del {veth}")]).await {
                    // Gone meanwhile with the task's namespace (a veth pair
                    // goes with either end): what detaching wanted.
                    Err(NetError::Command { message, .. })
                        if message.contains("Cannot find device") => {}
                    other => other?,
                }
            }
        }
        self.reconcile().await
    }

    async fn collect(&self) -> Result<(), NetError> {
        let _lock = self.lock().await?;
        self.reconcile().await
    }

    async fn is_attached(&self, pid: u32) -> Result<bool, NetError> {
        let links = links_in(Some(pid)).await?;
        Ok(links
            .iter()
            .any(|l| l.name == TASK_DEVICE && !l.addresses.is_empty()))
    }

    async fn apply_policy(
        &self,
        task_arn: &str,
        pid: u32,
        policy: &GetNetworkPolicyResponse,
        resolver: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        let (script, warnings) = crate::netpolicy::render_ruleset_for(policy, resolver);
        for warning in warnings {
            tracing::warn!(task = %task_arn, "security groups: {warning}");
        }
        Ok(crate::netpolicy::apply(pid, &script).await?)
    }

    async fn route_hosted(
        &self,
        eni: &TaskNetworkInterface,
        hosted: &[Ipv4Addr],
    ) -> Result<(), NetError> {
        let a = Addressing::from_interface(eni)?;
        let _lock = self.lock().await?;
        let Some(pid) = self
            .runtime
            .inspect(&a.router_name())
            .await?
            .filter(|r| r.status == ContainerStatus::Running)
            .and_then(|r| r.pid)
        else {
            return Ok(());
        };
        let links = links_in(Some(pid)).await?;
        let routes = routes_in(Some(pid)).await?;
        let json = run(Some(pid), "ip", &["-j", "neigh", "show", "proxy"], None).await?;
        let proxies = parse_proxies(&json).map_err(|message| NetError::Output {
            command: "ip -j neigh show proxy".into(),
            message,
        })?;
        let commands = hosted_commands(&links, &routes, &proxies, hosted);
        if !commands.is_empty() {
            tracing::info!(router = %a.router_name(), ?commands, "routing load balancers' addresses to the host");
        }
        batch_in(Some(pid), &commands).await
    }
}

/// The VPCs whose routers run on this host (by their label), for tests
/// and diagnostics.
pub async fn routers(runtime: &dyn Runtime) -> Result<BTreeSet<String>, RuntimeError> {
    Ok(runtime
        .list_owned(LABEL_ROUTER, None)
        .await?
        .into_iter()
        .filter_map(|r| r.labels.get(LABEL_ROUTER).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap()
    }

    fn eni() -> TaskNetworkInterface {
        TaskNetworkInterface {
            eni_id: "eni-1".into(),
            subnet_id: "subnet-a".into(),
            subnet_cidr: "172.31.16.0/20".into(),
            gateway: "172.31.16.1".into(),
            private_ip: "172.31.16.9".into(),
            mac: "02:00:AC:1F:10:09".into(),
            vpc_id: "vpc-0123".into(),
            vpc_cidr: "172.31.0.0/16".into(),
        }
    }

    #[test]
    fn blocks() {
        assert_eq!(cidr("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(cidr("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(cidr("0.0.0.0/0").prefix, 0);
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0/8").is_none());
        assert!(Cidr::parse("x; rm").is_none());
        assert!(cidr("172.31.0.0/16").overlaps(&cidr("172.31.16.0/20")));
        assert!(cidr("172.31.16.0/20").overlaps(&cidr("172.31.0.0/16")));
        assert!(!cidr("172.31.0.0/20").overlaps(&cidr("172.31.16.0/20")));
        assert!(cidr("0.0.0.0/0").overlaps(&cidr("10.0.0.0/8")));
        assert!(cidr("172.31.0.0/16").covers(&cidr("172.31.16.0/20")));
        assert!(!cidr("172.31.16.0/20").covers(&cidr("172.31.0.0/16")));
        assert!(cidr("172.31.16.0/20").contains("172.31.31.255".parse().unwrap()));
        assert!(!cidr("172.31.16.0/20").contains("172.31.32.0".parse().unwrap()));
    }

    #[test]
    fn addressing_from_an_interface() {
        let a = Addressing::from_interface(&eni()).unwrap();
        assert_eq!(a.vpc, "vpc-0123");
        assert_eq!(a.vpc_block, Some(cidr("172.31.0.0/16")));
        assert_eq!(a.subnet, cidr("172.31.16.0/20"));
        assert_eq!(a.mac.as_deref(), Some("02:00:ac:1f:10:09"));
        assert_eq!(a.router_name(), "berth-vpc-vpc-0123");
        assert_eq!(a.bridge(), "brac1f1000-20");
        assert!(a.bridge().len() <= 15);

        // Older servers send neither the VPC nor its block: the subnet
        // stands for its VPC.
        let old = TaskNetworkInterface {
            vpc_id: String::new(),
            vpc_cidr: String::new(),
            ..eni()
        };
        let a = Addressing::from_interface(&old).unwrap();
        assert_eq!((a.vpc.as_str(), a.vpc_block), ("subnet-a", None));

        // Nothing unchecked reaches a command line.
        let hostile = TaskNetworkInterface {
            vpc_id: "vpc-1; reboot".into(),
            mac: "02:00:00:00:00:01 netns 1".into(),
            vpc_cidr: "10.0.0.0/8".into(),
            ..eni()
        };
        let a = Addressing::from_interface(&hostile).unwrap();
        assert_eq!(a.vpc, "vpc-1reboot");
        assert_eq!(a.mac, None);
        // A block that does not hold the subnet is ignored.
        assert_eq!(a.vpc_block, None);
        for bad in [
            TaskNetworkInterface {
                private_ip: "172.31.0.9".into(),
                ..eni()
            },
            TaskNetworkInterface {
                gateway: "10.0.0.1".into(),
                ..eni()
            },
            TaskNetworkInterface {
                subnet_cidr: "172.31.16.0".into(),
                ..eni()
            },
            TaskNetworkInterface {
                private_ip: "172.31.16.9 dev lo".into(),
                ..eni()
            },
        ] {
            assert!(Addressing::from_interface(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_fit_interface_names() {
        assert_eq!(
            veth_name("0123456789abcdef0123456789abcdef"),
            "t0123456789abcd"
        );
        assert_eq!(veth_name("0123456789abcdef0123456789abcdef").len(), 15);
        let odd = veth_name("not-a-task-id");
        assert_eq!(odd.len(), 15);
        assert!(odd[1..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(bridge_name(&cidr("255.255.255.252/30")), "brfffffffc-30");
    }

    const ROUTER_LINKS: &str = r#"[
      {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"address":"00:00:00:00:00:00",
       "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},
                    {"family":"inet","local":"172.31.0.2","prefixlen":32}]},
      {"ifindex":4,"ifname":"brac1f1000-20","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
       "address":"a2:11:22:33:44:55","linkinfo":{"info_kind":"bridge","info_data":{}},
       "addr_info":[{"family":"inet","local":"172.31.16.1","prefixlen":20},
                    {"family":"inet6","local":"fe80::1","prefixlen":64}]},
      {"ifindex":5,"link_index":2,"ifname":"t0123456789abcd","flags":["BROADCAST","UP"],
       "master":"brac1f1000-20","address":"b2:00:00:00:00:01","link_netnsid":1,
       "linkinfo":{"info_kind":"veth","info_slave_kind":"bridge"},"addr_info":[]},
      {"ifindex":6,"ifname":"brac1f0000-20","flags":["BROADCAST","UP"],
       "linkinfo":{"info_kind":"bridge"},"addr_info":[{"family":"inet","local":"172.31.0.1","prefixlen":20}]},
      {"ifindex":7,"link_index":8,"ifname":"eth0","flags":["BROADCAST","UP"],"address":"02:42:ac:12:00:02",
       "link_netnsid":0,"linkinfo":{"info_kind":"veth"},
       "addr_info":[{"family":"inet","local":"172.18.0.2","prefixlen":16}]}
    ]"#;

    const ROUTER_ROUTES: &str = r#"[
      {"dst":"default","gateway":"172.18.0.1","dev":"eth0","flags":[]},
      {"type":"unreachable","dst":"172.31.0.0/16","metric":4242,"flags":[]},
      {"dst":"172.18.0.0/16","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"172.18.0.2","flags":[]},
      {"dst":"172.31.16.0/20","dev":"brac1f1000-20","protocol":"kernel","scope":"link","prefsrc":"172.31.16.1","flags":[]},
      {"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[]}
    ]"#;

    #[test]
    fn parses_what_ip_answers() {
        let links = parse_links(ROUTER_LINKS).unwrap();
        assert_eq!(links.len(), 5);
        let bridge = &links[1];
        assert_eq!(bridge.kind.as_deref(), Some("bridge"));
        assert!(bridge.up);
        assert_eq!(bridge.addresses, vec![("172.31.16.1".parse().unwrap(), 20)]);
        assert_eq!(links[2].master.as_deref(), Some("brac1f1000-20"));
        let (used, unused) = bridges(&links);
        assert_eq!(used.len(), 1);
        assert_eq!(unused[0].name, "brac1f0000-20");

        let routes = parse_routes(ROUTER_ROUTES).unwrap();
        // The IPv6 route is left out.
        assert_eq!(routes.len(), 4);
        assert_eq!(routes[0].dst, None);
        assert_eq!(routes[0].gateway, Some("172.18.0.1".parse().unwrap()));
        assert_eq!(routes[1].kind, "unreachable");
        assert_eq!(routes[1].metric, 4242);
        assert_eq!(routes[2].kind, "unicast");
        assert!(parse_links("not json").is_err());
    }

    #[test]
    fn a_new_router_gets_the_bridge_the_vpc_route_and_the_task_leg() {
        let a = Addressing::from_interface(&eni()).unwrap();
        let lines = router_commands(&[], &[], &a, Some(("t0123456789abcd", 4321)));
        assert_eq!(
            lines,
            vec![
                "link add brac1f1000-20 type bridge",
                "addr replace 172.31.16.1/20 dev brac1f1000-20",
                "link set brac1f1000-20 up",
                "addr replace 172.31.0.2/32 dev lo",
                "route replace unreachable 172.31.0.0/16 metric 4242",
                "link add t0123456789abcd type veth peer name eth0 address 02:00:ac:1f:10:09 netns 4321",
                "link set t0123456789abcd master brac1f1000-20 up",
            ]
        );
    }

    #[test]
    fn a_router_set_up_already_needs_nothing() {
        let a = Addressing::from_interface(&eni()).unwrap();
        let links = parse_links(ROUTER_LINKS).unwrap();
        let routes = parse_routes(ROUTER_ROUTES).unwrap();
        assert!(router_commands(&links, &routes, &a, Some(("t0123456789abcd", 1))).is_empty());
        // A second task on the same subnet only adds its leg.
        assert_eq!(
            router_commands(&links, &routes, &a, Some(("tffffffffffffff", 77))),
            vec![
                "link add tffffffffffffff type veth peer name eth0 address 02:00:ac:1f:10:09 netns 77",
                "link set tffffffffffffff master brac1f1000-20 up",
            ]
        );
        // A subnet of its own VPC block needs no unreachable route.
        let whole = TaskNetworkInterface {
            vpc_cidr: String::new(),
            ..eni()
        };
        let a = Addressing::from_interface(&whole).unwrap();
        assert!(router_commands(&links, &[], &a, None).is_empty());
    }

    #[test]
    fn the_task_side_gets_address_mac_and_default_route() {
        let a = Addressing::from_interface(&eni()).unwrap();
        let fresh = parse_links(
            r#"[{"ifname":"lo","flags":["LOOPBACK"]},
                {"ifname":"eth0","flags":["BROADCAST"],"address":"02:00:ac:1f:10:09","addr_info":[]}]"#,
        )
        .unwrap();
        assert_eq!(
            task_commands(&fresh, &[], &a).unwrap(),
            vec![
                "addr replace 172.31.16.9/20 dev eth0",
                "link set eth0 up",
                "route replace default via 172.31.16.1 dev eth0",
            ]
        );
        let done = parse_links(
            r#"[{"ifname":"eth0","flags":["UP"],"address":"02:00:ac:1f:10:09",
                 "addr_info":[{"family":"inet","local":"172.31.16.9","prefixlen":20}]}]"#,
        )
        .unwrap();
        let routes =
            parse_routes(r#"[{"dst":"default","gateway":"172.31.16.1","dev":"eth0"}]"#).unwrap();
        assert!(task_commands(&done, &routes, &a).unwrap().is_empty());
        // Another MAC: changed while the device is down.
        let other_mac = parse_links(
            r#"[{"ifname":"eth0","flags":["UP"],"address":"02:00:00:00:00:99",
                 "addr_info":[{"family":"inet","local":"172.31.16.9","prefixlen":20}]}]"#,
        )
        .unwrap();
        assert_eq!(
            task_commands(&other_mac, &routes, &a).unwrap(),
            vec![
                "link set eth0 down",
                "link set eth0 address 02:00:ac:1f:10:09",
                "link set eth0 up",
            ]
        );
        assert!(task_commands(&[], &[], &a).is_err());
    }

    fn route(dst: &str, gateway: Option<&str>, dev: &str, protocol: Option<&str>) -> Route {
        Route {
            dst: Cidr::parse(dst),
            gateway: gateway.map(|g| g.parse().unwrap()),
            dev: Some(dev.into()),
            protocol: protocol.map(str::to_string),
            kind: "unicast".into(),
            metric: 0,
        }
    }

    fn claim(block: &str, router: &str) -> Claim {
        Claim {
            block: cidr(block),
            router: router.parse().unwrap(),
        }
    }

    #[test]
    fn the_first_vpc_to_claim_a_block_keeps_it() {
        let host = vec![
            Route {
                dst: None,
                gateway: Some("192.0.2.1".parse().unwrap()),
                dev: Some("eth0".into()),
                ..Route::default()
            },
            route("192.0.2.0/24", None, "eth0", Some("kernel")),
            route("172.17.0.0/16", None, "docker0", Some("kernel")),
            route("172.18.0.0/16", None, UPLINK_NETWORK, Some("kernel")),
            route(
                "172.31.0.0/20",
                Some("172.18.0.2"),
                UPLINK_NETWORK,
                Some("190"),
            ),
        ];
        let claims = vec![
            // VPC A (router .2) owns 172.31.0.0/20 already and adds a subnet.
            claim("172.31.0.0/20", "172.18.0.2"),
            claim("172.31.16.0/20", "172.18.0.2"),
            // VPC B (router .3) has the same block: not routed.
            claim("172.31.0.0/20", "172.18.0.3"),
            claim("172.31.0.0/24", "172.18.0.3"),
            // Its other subnet is free.
            claim("10.9.0.0/24", "172.18.0.3"),
            // Blocks of the host's own networks are never shadowed.
            claim("192.0.2.128/25", "172.18.0.3"),
            claim("172.17.5.0/24", "172.18.0.3"),
            claim("172.18.1.0/24", "172.18.0.3"),
        ];
        assert_eq!(
            host_route_commands(&host, &claims),
            vec![
                "route add 172.31.16.0/20 via 172.18.0.2 dev berth-uplink proto 190",
                "route add 10.9.0.0/24 via 172.18.0.3 dev berth-uplink proto 190",
            ]
        );
    }

    #[test]
    fn routes_no_claim_wants_go_and_free_blocks_pass_on() {
        let host = vec![
            route(
                "172.31.0.0/20",
                Some("172.18.0.2"),
                UPLINK_NETWORK,
                Some("190"),
            ),
            route(
                "172.31.16.0/20",
                Some("172.18.0.2"),
                UPLINK_NETWORK,
                Some("190"),
            ),
            // Somebody else's route through the uplink is left alone.
            route(
                "10.99.0.0/16",
                Some("172.18.0.9"),
                UPLINK_NETWORK,
                Some("static"),
            ),
        ];
        // VPC A's router is gone; B has the same block.
        let claims = vec![claim("172.31.0.0/20", "172.18.0.3")];
        assert_eq!(
            host_route_commands(&host, &claims),
            vec![
                "route del 172.31.0.0/20 via 172.18.0.2 dev berth-uplink proto 190",
                "route del 172.31.16.0/20 via 172.18.0.2 dev berth-uplink proto 190",
                "route add 172.31.0.0/20 via 172.18.0.3 dev berth-uplink proto 190",
            ]
        );
        assert!(host_route_commands(&[], &[]).is_empty());
    }

    #[test]
    fn nat_spares_the_task_endpoint() {
        let script = nat_script(None, None);
        assert!(script.starts_with("table ip berth_router\ndelete table ip berth_router\n"));
        assert!(script.contains("oifname \"eth0\" ip daddr != 169.254.170.2 masquerade"));
        assert!(!script.contains("dnat"));
    }

    #[test]
    fn the_vpc_resolver_is_the_block_base_plus_two_and_relayed() {
        assert_eq!(vpc_resolver(&eni()), Some("172.31.0.2".parse().unwrap()));
        let other = TaskNetworkInterface {
            vpc_cidr: "10.20.0.0/16".into(),
            subnet_cidr: "10.20.128.0/24".into(),
            gateway: "10.20.128.1".into(),
            private_ip: "10.20.128.9".into(),
            ..eni()
        };
        assert_eq!(vpc_resolver(&other), Some("10.20.0.2".parse().unwrap()));
        // Servers that do not send the VPC's block: none.
        let unknown = TaskNetworkInterface {
            vpc_cidr: String::new(),
            ..eni()
        };
        assert_eq!(vpc_resolver(&unknown), None);
        // DNS for it goes to the host's relay on the task endpoint's
        // address, which the masquerade spares, so the relay sees the
        // task's own address.
        let script = nat_script(vpc_resolver(&eni()), Some(cidr("172.31.0.0/16")));
        assert!(
            script.contains("type nat hook prerouting priority -100; policy accept;"),
            "{script}"
        );
        assert!(
            script.contains(
                "ip daddr 172.31.0.2 meta l4proto { tcp, udp } th dport 53 dnat to 169.254.170.2:53"
            ),
            "{script}"
        );
        assert!(script
            .contains("oifname \"eth0\" ip daddr != { 169.254.170.2, 172.31.0.0/16 } masquerade"));
    }

    #[test]
    fn uplink_and_router_specs() {
        let uplink = uplink_spec();
        assert_eq!(uplink.name, "berth-uplink");
        assert_eq!(
            (uplink.subnet.as_str(), uplink.gateway.as_str()),
            ("169.254.176.0/22", "169.254.176.1")
        );
        // Link-local: apart from the task endpoint's address.
        assert!(!cidr(UPLINK_BLOCK).contains(ENDPOINT_IP));
        assert_eq!(uplink.options[DOCKER_ICC], "false");
        assert_eq!(uplink.options[DOCKER_BRIDGE_NAME], "berth-uplink");
        let router = router_spec("vpc-0a1");
        assert_eq!(router.name, "berth-vpc-vpc-0a1");
        assert_eq!(router.labels[LABEL_ROUTER], "vpc-0a1");
        assert_eq!(
            router.network_mode,
            NetworkMode::Network("berth-uplink".into())
        );
        assert!(router
            .sysctls
            .contains(&("net.ipv4.ip_forward".to_string(), "1".to_string())));
        // The router carries no task or instance labels: no agent adopts it.
        assert!(!router.labels.contains_key(crate::spec::LABEL_INSTANCE));
    }

    fn bridge_link(name: &str, address: &str, prefix: u8) -> Link {
        Link {
            name: name.into(),
            kind: Some("bridge".into()),
            up: true,
            addresses: vec![(address.parse().unwrap(), prefix)],
            ..Link::default()
        }
    }

    #[test]
    fn hosted_addresses_are_routed_to_the_host_and_answered_for_on_their_subnet() {
        let links = vec![
            bridge_link("brac1f0000-20", "172.31.0.1", 20),
            bridge_link("brac1f1000-20", "172.31.16.1", 20),
        ];
        let lb: Ipv4Addr = "172.31.0.10".parse().unwrap();
        let elsewhere: Ipv4Addr = "172.31.32.9".parse().unwrap();
        let plan = hosted_commands(&links, &[], &[], &[lb, elsewhere]);
        assert_eq!(
            plan,
            vec![
                "route replace 172.31.0.10/32 via 169.254.176.1 dev eth0 proto 190".to_string(),
                "neigh replace proxy 172.31.0.10 dev brac1f0000-20".to_string(),
                "route replace 172.31.32.9/32 via 169.254.176.1 dev eth0 proto 190".to_string(),
            ],
            "an address of a subnet without a bridge here is routed, with no ARP to answer"
        );
        // Done: nothing more to do.
        let routes = vec![route(
            "172.31.0.10/32",
            Some("169.254.176.1"),
            "eth0",
            Some("190"),
        )];
        let proxies = vec![ProxyEntry {
            address: lb,
            dev: "brac1f0000-20".into(),
        }];
        assert!(hosted_commands(&links, &routes, &proxies, &[lb]).is_empty());
        // The load balancer went away: its route and entry go too; other
        // routes (the unreachable block, the default) are kept.
        let mut all = routes.clone();
        all.push(route("default", Some("169.254.176.1"), "eth0", None));
        assert_eq!(
            hosted_commands(&links, &all, &proxies, &[]),
            vec![
                "route del 172.31.0.10/32 dev eth0".to_string(),
                "neigh del proxy 172.31.0.10 dev brac1f0000-20".to_string(),
            ]
        );
        let parsed =
            parse_proxies(r#"[{"dst":"172.31.0.10","dev":"brac1f0000-20","proxy":null}]"#).unwrap();
        assert_eq!(parsed, proxies);
    }
}
