//! The stored records, the per account+region state a request works on,
//! IPv4 CIDR arithmetic, ids and EC2's error wording.

use std::collections::BTreeMap;
use std::fmt;

use berth_model::AwsError;
use berth_store::{Op, ReadView, StoreError};
use serde::{Deserialize, Serialize};

/// The default VPC's CIDR block, as AWS's.
pub const DEFAULT_VPC_CIDR: &str = "172.31.0.0/16";
/// The availability zone suffixes Berth offers in every region.
pub const ZONES: [&str; 3] = ["a", "b", "c"];
/// The default subnets' blocks, one per zone.
const DEFAULT_SUBNETS: [&str; 3] = ["172.31.0.0/20", "172.31.16.0/20", "172.31.32.0/20"];
/// The most security groups one network interface may have.
pub const MAX_GROUPS_PER_ENI: usize = 5;

// ---- errors -------------------------------------------------------------------

/// EC2's client errors, all 400.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("The request must contain the parameter {0}")]
    Missing(&'static str),
    #[error("{0}")]
    InvalidValue(String),
    #[error("The vpc ID '{0}' does not exist")]
    VpcNotFound(String),
    #[error("The subnet ID '{0}' does not exist")]
    SubnetNotFound(String),
    #[error("The security group '{0}' does not exist")]
    GroupNotFound(String),
    #[error("The networkInterface ID '{0}' does not exist")]
    EniNotFound(String),
    #[error("Invalid id: \"{1}\"")]
    Malformed(&'static str, String),
    #[error("{0}")]
    Dependency(String),
    #[error("{1}")]
    Other(&'static str, String),
}

impl From<Ec2Error> for AwsError {
    fn from(e: Ec2Error) -> AwsError {
        let code = match &e {
            Ec2Error::Missing(_) => "MissingParameter",
            Ec2Error::InvalidValue(_) => "InvalidParameterValue",
            Ec2Error::VpcNotFound(_) => "InvalidVpcID.NotFound",
            Ec2Error::SubnetNotFound(_) => "InvalidSubnetID.NotFound",
            Ec2Error::GroupNotFound(_) => "InvalidGroup.NotFound",
            Ec2Error::EniNotFound(_) => "InvalidNetworkInterfaceID.NotFound",
            Ec2Error::Malformed(code, _) => code,
            Ec2Error::Dependency(_) => "DependencyViolation",
            Ec2Error::Other(code, _) => code,
        };
        AwsError::bad_request(code, e.to_string())
    }
}

pub fn store_error(e: StoreError) -> AwsError {
    tracing::error!(error = %e, "EC2 store access failed");
    AwsError::new(
        500,
        "InternalError",
        "An internal error has occurred; the server log has the details.",
    )
}

fn corrupt(key: &str) -> AwsError {
    tracing::error!(key, "EC2 record cannot be decoded");
    AwsError::new(
        500,
        "InternalError",
        format!("The stored record {key} cannot be read."),
    )
}

// ---- ids ----------------------------------------------------------------------

/// `<prefix>-` and 17 lowercase hex digits.
pub fn new_id(prefix: &str) -> String {
    let digits = berth_util::ids::random_string(berth_util::ids::LOWER_HEX, 17);
    format!("{prefix}-{digits}")
}

/// A locally administered unicast MAC address, `0a:xx:xx:xx:xx:xx`.
pub fn new_mac() -> String {
    let bytes = berth_util::ids::random_bytes::<5>();
    let mut mac = String::from("0a");
    for b in bytes {
        mac.push_str(&format!(":{b:02x}"));
    }
    mac
}

/// Whether `id` is `<prefix>-` and 8 or 17 lowercase hex digits.
pub fn well_formed(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

// ---- CIDR ---------------------------------------------------------------------

/// An IPv4 network in CIDR notation with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: u32,
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; `None` when malformed or host bits are set.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, len) = text.split_once('/')?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u8 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        let addr = parse_ipv4(ip)?;
        let cidr = Cidr { addr, len };
        (addr & !cidr.mask() == 0).then_some(cidr)
    }

    pub fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// Number of addresses in the block.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    pub fn last(self) -> u32 {
        self.addr | !self.mask()
    }

    pub fn contains(self, other: Cidr) -> bool {
        other.len >= self.len && other.addr & self.mask() == self.addr
    }

    pub fn overlaps(self, other: Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", ipv4(self.addr), self.len)
    }
}

/// Parses a dotted quad strictly (no leading zeros beyond `0`).
pub fn parse_ipv4(text: &str) -> Option<u32> {
    let mut addr: u32 = 0;
    let mut parts = 0;
    for part in text.split('.') {
        parts += 1;
        if parts > 4
            || part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        let octet: u32 = part.parse().ok()?;
        if octet > 255 {
            return None;
        }
        addr = (addr << 8) | octet;
    }
    (parts == 4).then_some(addr)
}

pub fn ipv4(addr: u32) -> String {
    std::net::Ipv4Addr::from(addr).to_string()
}

// ---- records --------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcRecord {
    pub id: String,
    pub cidr: String,
    pub association_id: String,
    pub is_default: bool,
    /// Secondary IPv4 blocks (AssociateVpcCidrBlock), in association order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary: Vec<CidrAssociation>,
    /// `enableDnsSupport`; `None` is AWS's default, on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_support: Option<bool>,
    /// `enableDnsHostnames`; `None` is AWS's default: on in the default
    /// VPC, off in others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_hostnames: Option<bool>,
    /// `enableNetworkAddressUsageMetrics`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nau_metrics: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A secondary IPv4 block of a VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrAssociation {
    pub association_id: String,
    pub cidr: String,
}

impl VpcRecord {
    /// Every IPv4 block, the primary first: (association id, block).
    pub fn blocks(&self) -> Vec<(&str, &str)> {
        let mut out = vec![(self.association_id.as_str(), self.cidr.as_str())];
        out.extend(
            self.secondary
                .iter()
                .map(|a| (a.association_id.as_str(), a.cidr.as_str())),
        );
        out
    }

    pub fn dns_support(&self) -> bool {
        self.dns_support.unwrap_or(true)
    }

    pub fn dns_hostnames(&self) -> bool {
        self.dns_hostnames.unwrap_or(self.is_default)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRecord {
    pub id: String,
    pub vpc_id: String,
    pub cidr: String,
    pub availability_zone: String,
    pub default_for_az: bool,
    pub map_public_ip_on_launch: bool,
    /// The attributes ModifySubnetAttribute sets beyond the public IP.
    #[serde(default, skip_serializing_if = "SubnetOptions::is_default")]
    pub options: SubnetOptions,
}

/// A subnet's launch options, as ModifySubnetAttribute sets them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetOptions {
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_dns64: bool,
    /// `ip-name` (AWS's default) or `resource-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_type: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub resource_name_a_record: bool,
}

impl SubnetOptions {
    pub fn is_default(&self) -> bool {
        *self == SubnetOptions::default()
    }

    pub fn hostname_type(&self) -> &str {
        self.hostname_type.as_deref().unwrap_or("ip-name")
    }
}

/// Where a security group rule lets traffic come from or go to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Peer {
    /// An IPv4 CIDR block.
    Cidr(String),
    /// Members of a security group (its network interfaces' addresses).
    Group(String),
}

/// One security group rule: a protocol, a port range and one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// `sgr-…`.
    pub id: String,
    /// `tcp`, `udp`, `icmp`, `-1` (everything) or another protocol number.
    pub protocol: String,
    /// For tcp/udp the first port; for icmp the type (-1: any). `None` for
    /// `-1` and protocols without ports.
    pub from_port: Option<i32>,
    /// For tcp/udp the last port; for icmp the code (-1: any).
    pub to_port: Option<i32>,
    pub peer: Peer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl SgRule {
    /// Whether two rules allow the same traffic (ids and descriptions aside).
    pub fn same_as(&self, other: &SgRule) -> bool {
        self.protocol == other.protocol
            && self.from_port == other.from_port
            && self.to_port == other.to_port
            && self.peer == other.peer
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRecord {
    pub id: String,
    pub vpc_id: String,
    pub name: String,
    pub description: String,
    pub is_default: bool,
    pub ingress: Vec<SgRule>,
    pub egress: Vec<SgRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniRecord {
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub private_ip: String,
    pub mac: String,
    pub group_ids: Vec<String>,
    pub description: String,
    /// Who manages the interface when not ECS: `amazon-elb` for a load
    /// balancer's (its address lives on the server's host, see
    /// `interface_policy`'s `hosted_addresses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
    /// EC2's `interfaceType` when not `interface` (`network_load_balancer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_type: Option<String>,
}

/// An internet gateway and the VPC it is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgwRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
}

/// Where a route sends traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteTarget {
    /// An internet gateway (`igw-…`).
    Gateway(String),
    NatGateway(String),
    NetworkInterface(String),
}

impl RouteTarget {
    pub fn id(&self) -> &str {
        match self {
            RouteTarget::Gateway(id)
            | RouteTarget::NatGateway(id)
            | RouteTarget::NetworkInterface(id) => id,
        }
    }
}

/// A route a caller created (a table's `local` routes follow its VPC's
/// blocks and are not stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub destination: String,
    pub target: RouteTarget,
    /// `CreateRoute`, or `CreateRouteTable` for the default VPC's route to
    /// its internet gateway.
    pub origin: String,
}

/// A route table's association with a subnet or a gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtbAssociation {
    /// `rtbassoc-…`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTableRecord {
    pub id: String,
    pub vpc_id: String,
    /// The id of the main association when this is its VPC's main table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_association: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associations: Vec<RtbAssociation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteRecord>,
}

/// A NAT gateway, kept (as `deleted`) for an hour after its deletion as
/// AWS does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRecord {
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    /// `public` or `private`.
    pub connectivity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_id: Option<String>,
    /// The id of the gateway's (requester-managed) network interface.
    pub eni_id: String,
    pub private_ip: String,
    /// `available`, `failed` or `deleted`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<(String, String)>,
    /// Milliseconds since the epoch.
    pub create_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

impl NatRecord {
    /// Whether the gateway still holds its address and its subnet.
    pub fn live(&self) -> bool {
        self.state != "deleted" && self.state != "failed"
    }
}

/// Where an elastic IP is associated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipAssociation {
    /// `eipassoc-…`.
    pub id: String,
    pub eni_id: String,
    pub private_ip: String,
    /// The NAT gateway the interface belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipRecord {
    /// `eipalloc-…`.
    pub allocation_id: String,
    pub public_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association: Option<EipAssociation>,
}

/// The pool elastic IPs come from: 198.51.100.0/24 (TEST-NET-2, RFC 5737,
/// documentation only, so never a real host's address).
pub const EIP_POOL: &str = "198.51.100.0/24";
/// The most elastic IPs an account may hold in a region, AWS's default.
pub const MAX_EIPS: usize = 5;

/// The allow-all egress rule every new group starts with.
pub fn allow_all_egress() -> SgRule {
    SgRule {
        id: new_id("sgr"),
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        peer: Peer::Cidr("0.0.0.0/0".into()),
        description: None,
    }
}

/// A VPC's main route table (its `local` routes are implied by its blocks).
pub fn main_route_table(vpc_id: &str) -> RouteTableRecord {
    RouteTableRecord {
        id: new_id("rtb"),
        vpc_id: vpc_id.to_string(),
        main_association: Some(new_id("rtbassoc")),
        associations: Vec::new(),
        routes: Vec::new(),
    }
}

/// A VPC's `default` group: all traffic from itself, all traffic out.
pub fn default_group(vpc_id: &str) -> SgRecord {
    let id = new_id("sg");
    SgRecord {
        ingress: vec![SgRule {
            id: new_id("sgr"),
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            peer: Peer::Group(id.clone()),
            description: None,
        }],
        egress: vec![allow_all_egress()],
        id,
        vpc_id: vpc_id.to_string(),
        name: "default".into(),
        description: "default VPC security group".into(),
        is_default: true,
    }
}

// ---- state ----------------------------------------------------------------------

/// An account in a region: the unit EC2 state is kept in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: &str, region: &str) -> Scope {
        Scope {
            account: account.to_string(),
            region: region.to_string(),
        }
    }

    pub fn prefix(&self) -> String {
        format!("ec2/{}/{}/", self.account, self.region)
    }

    /// The marker written with the default VPC.
    pub fn defaults_key(&self) -> String {
        format!("{}defaults", self.prefix())
    }
}

/// Everything EC2 keeps for one account+region, loaded for a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub defaults_done: bool,
    pub vpcs: BTreeMap<String, VpcRecord>,
    pub subnets: BTreeMap<String, SubnetRecord>,
    pub groups: BTreeMap<String, SgRecord>,
    pub enis: BTreeMap<String, EniRecord>,
    pub igws: BTreeMap<String, IgwRecord>,
    pub route_tables: BTreeMap<String, RouteTableRecord>,
    pub nats: BTreeMap<String, NatRecord>,
    pub eips: BTreeMap<String, EipRecord>,
    /// Each tagged resource's tags, by resource id.
    pub tags: BTreeMap<String, BTreeMap<String, String>>,
}

fn load_kind<T: serde::de::DeserializeOwned>(
    view: &dyn ReadView,
    prefix: &str,
) -> Result<BTreeMap<String, T>, AwsError> {
    let mut out = BTreeMap::new();
    for kv in view.range(prefix, None, usize::MAX) {
        let value = serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?;
        out.insert(kv.key[prefix.len()..].to_string(), value);
    }
    Ok(out)
}

fn diff_kind<T: Serialize + PartialEq>(
    prefix: &str,
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    ops: &mut Vec<Op>,
) -> Result<(), AwsError> {
    for (id, value) in after {
        if before.get(id) != Some(value) {
            let bytes = serde_json::to_vec(value)
                .map_err(|e| AwsError::internal(format!("encoding a record failed: {e}")))?;
            ops.push(Op::put(format!("{prefix}{id}"), bytes));
        }
    }
    for id in before.keys() {
        if !after.contains_key(id) {
            ops.push(Op::delete(format!("{prefix}{id}")));
        }
    }
    Ok(())
}

/// The zone of a region's interface names (`ec2.internal` …) in the DNS
/// registry; one per account and region.
pub fn eni_dns_zone_id(scope: &Scope) -> String {
    format!("ec2-{}-{}", scope.account, scope.region)
}

/// Publishes each interface's private DNS name (`ip-a-b-c-d.ec2.internal`,
/// as DescribeNetworkInterfaces shows it) in the DNS registry, in the same
/// mutation as the interface: its A record set (set id: the interface id)
/// and the region's zone with it.
fn eni_dns_ops(
    before: &BTreeMap<String, EniRecord>,
    after: &BTreeMap<String, EniRecord>,
    scope: &Scope,
    ops: &mut Vec<Op>,
) -> Result<(), AwsError> {
    use berth_model::dns_registry as dns;
    let zone_id = eni_dns_zone_id(scope);
    let key = |e: &EniRecord| {
        let name = dns::private_dns_name(&scope.region, &e.private_ip);
        (
            dns::record_key(&zone_id, &name, dns::RecordType::A, &e.id),
            name,
        )
    };
    let mut wrote = false;
    for (id, eni) in after {
        let old = before.get(id);
        if old.map(|o| &o.private_ip) == Some(&eni.private_ip) {
            continue;
        }
        if let Some(old) = old {
            ops.push(Op::delete(key(old).0));
        }
        let (record_key, name) = key(eni);
        let set = dns::RecordSet {
            name,
            record_type: dns::RecordType::A,
            ttl: 60,
            values: vec![eni.private_ip.clone()],
            routing: dns::Routing::Simple,
            weight: None,
            healthy: true,
            source: format!("ec2:{}", eni.id),
        };
        ops.push(Op::put(record_key, encode_dns(&set)?));
        wrote = true;
    }
    for (id, eni) in before {
        if !after.contains_key(id) {
            ops.push(Op::delete(key(eni).0));
        }
    }
    if wrote {
        let zone = dns::HostedZone {
            id: zone_id.clone(),
            name: dns::private_dns_zone(&scope.region),
            vpc_ids: Vec::new(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            publisher: "ec2".into(),
            negative_ttl: 60,
        };
        ops.push(Op::put(dns::zone_key(&zone_id), encode_dns(&zone)?));
    }
    Ok(())
}

fn encode_dns<T: Serialize>(value: &T) -> Result<Vec<u8>, AwsError> {
    serde_json::to_vec(value)
        .map_err(|e| AwsError::internal(format!("encoding a DNS record failed: {e}")))
}

impl State {
    pub fn load(view: &dyn ReadView, scope: &Scope) -> Result<State, AwsError> {
        let p = scope.prefix();
        Ok(State {
            defaults_done: view.get(&scope.defaults_key()).is_some(),
            vpcs: load_kind(view, &format!("{p}vpc/"))?,
            subnets: load_kind(view, &format!("{p}subnet/"))?,
            groups: load_kind(view, &format!("{p}sg/"))?,
            enis: load_kind(view, &format!("{p}eni/"))?,
            igws: load_kind(view, &format!("{p}igw/"))?,
            route_tables: load_kind(view, &format!("{p}rtb/"))?,
            nats: load_kind(view, &format!("{p}nat/"))?,
            eips: load_kind(view, &format!("{p}eip/"))?,
            tags: load_kind(view, &format!("{p}tags/"))?,
        })
    }

    /// The writes that turn `before` into `self`.
    pub fn diff(&self, before: &State, scope: &Scope) -> Result<Vec<Op>, AwsError> {
        let p = scope.prefix();
        let mut ops = Vec::new();
        if self.defaults_done && !before.defaults_done {
            ops.push(Op::put(scope.defaults_key(), b"1".to_vec()));
        }
        diff_kind(&format!("{p}vpc/"), &before.vpcs, &self.vpcs, &mut ops)?;
        diff_kind(
            &format!("{p}subnet/"),
            &before.subnets,
            &self.subnets,
            &mut ops,
        )?;
        diff_kind(&format!("{p}sg/"), &before.groups, &self.groups, &mut ops)?;
        diff_kind(&format!("{p}eni/"), &before.enis, &self.enis, &mut ops)?;
        eni_dns_ops(&before.enis, &self.enis, scope, &mut ops)?;
        diff_kind(&format!("{p}igw/"), &before.igws, &self.igws, &mut ops)?;
        diff_kind(
            &format!("{p}rtb/"),
            &before.route_tables,
            &self.route_tables,
            &mut ops,
        )?;
        diff_kind(&format!("{p}nat/"), &before.nats, &self.nats, &mut ops)?;
        diff_kind(&format!("{p}eip/"), &before.eips, &self.eips, &mut ops)?;
        diff_kind(&format!("{p}tags/"), &before.tags, &self.tags, &mut ops)?;
        Ok(ops)
    }

    /// Creates the default VPC, its subnets and its `default` group, once.
    pub fn seed_defaults(&mut self, region: &str) {
        if self.defaults_done {
            return;
        }
        self.defaults_done = true;
        let vpc = VpcRecord {
            id: new_id("vpc"),
            cidr: DEFAULT_VPC_CIDR.into(),
            association_id: new_id("vpc-cidr-assoc"),
            is_default: true,
            secondary: Vec::new(),
            dns_support: None,
            dns_hostnames: None,
            nau_metrics: false,
        };
        for (zone, cidr) in ZONES.iter().zip(DEFAULT_SUBNETS) {
            let subnet = SubnetRecord {
                id: new_id("subnet"),
                vpc_id: vpc.id.clone(),
                cidr: cidr.into(),
                availability_zone: format!("{region}{zone}"),
                default_for_az: true,
                map_public_ip_on_launch: true,
                options: SubnetOptions::default(),
            };
            self.subnets.insert(subnet.id.clone(), subnet);
        }
        let group = default_group(&vpc.id);
        self.groups.insert(group.id.clone(), group);
        // As AWS: the default VPC has an internet gateway and its main
        // route table sends 0.0.0.0/0 there.
        let igw = IgwRecord {
            id: new_id("igw"),
            vpc_id: Some(vpc.id.clone()),
        };
        let mut table = main_route_table(&vpc.id);
        table.routes.push(RouteRecord {
            destination: "0.0.0.0/0".into(),
            target: RouteTarget::Gateway(igw.id.clone()),
            origin: "CreateRouteTable".into(),
        });
        self.route_tables.insert(table.id.clone(), table);
        self.igws.insert(igw.id.clone(), igw);
        self.vpcs.insert(vpc.id.clone(), vpc);
    }

    /// Gives every VPC without one (VPCs stored before route tables were
    /// kept) its main route table. Whether anything changed.
    pub fn ensure_main_tables(&mut self) -> bool {
        let missing: Vec<String> = self
            .vpcs
            .keys()
            .filter(|v| self.main_table_of(v).is_none())
            .cloned()
            .collect();
        for vpc in &missing {
            let table = main_route_table(vpc);
            self.route_tables.insert(table.id.clone(), table);
        }
        !missing.is_empty()
    }

    pub fn main_table_of(&self, vpc_id: &str) -> Option<&RouteTableRecord> {
        self.route_tables
            .values()
            .find(|t| t.vpc_id == vpc_id && t.main_association.is_some())
    }

    /// The addresses of a subnet its network interfaces and live NAT
    /// gateways hold.
    pub fn held_addresses(&self, subnet_id: &str) -> std::collections::HashSet<&str> {
        self.enis
            .values()
            .filter(|e| e.subnet_id == subnet_id)
            .map(|e| e.private_ip.as_str())
            .chain(
                self.nats
                    .values()
                    .filter(|n| n.subnet_id == subnet_id && n.live())
                    .map(|n| n.private_ip.as_str()),
            )
            .collect()
    }

    /// The first free private address of a subnet (the first four and the
    /// broadcast address are AWS's).
    pub fn next_free_address(&self, subnet_id: &str, cidr: Cidr) -> Option<String> {
        let used = self.held_addresses(subnet_id);
        (cidr.addr.saturating_add(4)..cidr.last())
            .map(ipv4)
            .find(|ip| !used.contains(ip.as_str()))
    }

    /// Every resource id tags may be put on, with its resource type.
    pub fn resource_type(&self, id: &str) -> Option<&'static str> {
        let kind = if self.vpcs.contains_key(id) {
            "vpc"
        } else if self.subnets.contains_key(id) {
            "subnet"
        } else if self.groups.contains_key(id) {
            "security-group"
        } else if self.enis.contains_key(id) {
            "network-interface"
        } else if self.igws.contains_key(id) {
            "internet-gateway"
        } else if self.route_tables.contains_key(id) {
            "route-table"
        } else if self.nats.contains_key(id) {
            "natgateway"
        } else if self.eips.contains_key(id) {
            "elastic-ip"
        } else if self.rule(id).is_some() {
            "security-group-rule"
        } else {
            return None;
        };
        Some(kind)
    }

    /// A security group rule by id: its group and whether it is egress.
    pub fn rule(&self, id: &str) -> Option<(&SgRecord, &SgRule, bool)> {
        self.groups.values().find_map(|g| {
            g.ingress
                .iter()
                .map(|r| (r, false))
                .chain(g.egress.iter().map(|r| (r, true)))
                .find(|(r, _)| r.id == id)
                .map(|(r, egress)| (g, r, egress))
        })
    }

    /// Drops the tags of resources that no longer exist.
    pub fn prune_tags(&mut self) {
        let gone: Vec<String> = self
            .tags
            .iter()
            .filter(|(id, tags)| tags.is_empty() || self.resource_type(id).is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.tags.remove(&id);
        }
    }

    /// A resource's tags (none when untagged).
    pub fn tags_of(&self, id: &str) -> Vec<(&str, &str)> {
        self.tags
            .get(id)
            .map(|t| t.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .unwrap_or_default()
    }

    pub fn default_vpc(&self) -> Option<&VpcRecord> {
        self.vpcs.values().find(|v| v.is_default)
    }

    pub fn vpc(&self, id: &str) -> Result<&VpcRecord, Ec2Error> {
        self.vpcs
            .get(id)
            .ok_or_else(|| Ec2Error::VpcNotFound(id.to_string()))
    }

    pub fn subnet(&self, id: &str) -> Result<&SubnetRecord, Ec2Error> {
        self.subnets
            .get(id)
            .ok_or_else(|| Ec2Error::SubnetNotFound(id.to_string()))
    }

    pub fn group(&self, id: &str) -> Result<&SgRecord, Ec2Error> {
        self.groups
            .get(id)
            .ok_or_else(|| Ec2Error::GroupNotFound(id.to_string()))
    }

    /// A group by name in a VPC.
    pub fn group_named(&self, vpc_id: &str, name: &str) -> Option<&SgRecord> {
        self.groups
            .values()
            .find(|g| g.vpc_id == vpc_id && g.name == name)
    }

    pub fn default_group_of(&self, vpc_id: &str) -> Option<&SgRecord> {
        self.groups
            .values()
            .find(|g| g.vpc_id == vpc_id && g.is_default)
    }

    /// Addresses of a subnet its network interfaces and NAT gateways hold.
    pub fn used_addresses(&self, subnet_id: &str) -> usize {
        self.held_addresses(subnet_id).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let c = Cidr::parse("10.0.0.0/16").unwrap();
        assert_eq!(c.size(), 65536);
        assert_eq!(c.to_string(), "10.0.0.0/16");
        assert!(Cidr::parse("10.0.0.1/16").is_none());
        assert!(Cidr::parse("10.0.0/16").is_none());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
        assert!(Cidr::parse("256.0.0.0/8").is_none());
        assert!(Cidr::parse("01.0.0.0/8").is_none());
        let sub = Cidr::parse("10.0.1.0/24").unwrap();
        assert!(c.contains(sub) && !sub.contains(c) && c.overlaps(sub));
        assert!(!sub.overlaps(Cidr::parse("10.0.2.0/24").unwrap()));
        assert_eq!(ipv4(sub.last()), "10.0.1.255");
    }

    #[test]
    fn ids_and_macs() {
        let id = new_id("vpc");
        assert_eq!(id.len(), 4 + 17);
        assert!(well_formed(&id, "vpc"));
        assert!(!well_formed(&id, "sg"));
        assert!(!well_formed("vpc-XYZ", "vpc"));
        let mac = new_mac();
        assert!(mac.starts_with("0a:") && mac.len() == 17, "{mac}");
    }

    #[test]
    fn interfaces_publish_their_private_dns_names() {
        let scope = Scope::new("000000000000", "us-east-1");
        let eni = EniRecord {
            id: "eni-0123456789abcdef0".into(),
            subnet_id: "subnet-1".into(),
            vpc_id: "vpc-1".into(),
            availability_zone: "us-east-1a".into(),
            private_ip: "172.31.0.5".into(),
            mac: "0a:00:00:00:00:01".into(),
            group_ids: vec![],
            description: String::new(),
            requester_id: None,
            interface_type: None,
        };
        let before = State::default();
        let mut after = State::default();
        after.enis.insert(eni.id.clone(), eni.clone());
        let ops = after.diff(&before, &scope).unwrap();
        let record = "dns/records/ec2-000000000000-us-east-1/ip-172-31-0-5.ec2.internal/A/eni-0123456789abcdef0";
        let set = ops.iter().find_map(|op| match op {
            Op::Put { key, value } if key == record => Some(value.clone()),
            _ => None,
        });
        let set: berth_model::dns_registry::RecordSet =
            serde_json::from_slice(&set.expect("the record set is written")).unwrap();
        assert_eq!(set.values, ["172.31.0.5"]);
        assert!(ops
            .iter()
            .any(|op| op.key() == "dns/zones/ec2-000000000000-us-east-1"));
        // Deleting the interface deletes its name.
        let ops = before.diff(&after, &scope).unwrap();
        assert!(ops
            .iter()
            .any(|op| matches!(op, Op::Delete { key } if key == record)));
        // An unchanged interface writes nothing for DNS.
        assert!(after.diff(&after, &scope).unwrap().is_empty());
    }
}
