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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRecord {
    pub id: String,
    pub vpc_id: String,
    pub cidr: String,
    pub availability_zone: String,
    pub default_for_az: bool,
    pub map_public_ip_on_launch: bool,
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
}

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

impl State {
    pub fn load(view: &dyn ReadView, scope: &Scope) -> Result<State, AwsError> {
        let p = scope.prefix();
        Ok(State {
            defaults_done: view.get(&scope.defaults_key()).is_some(),
            vpcs: load_kind(view, &format!("{p}vpc/"))?,
            subnets: load_kind(view, &format!("{p}subnet/"))?,
            groups: load_kind(view, &format!("{p}sg/"))?,
            enis: load_kind(view, &format!("{p}eni/"))?,
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
        };
        for (zone, cidr) in ZONES.iter().zip(DEFAULT_SUBNETS) {
            let subnet = SubnetRecord {
                id: new_id("subnet"),
                vpc_id: vpc.id.clone(),
                cidr: cidr.into(),
                availability_zone: format!("{region}{zone}"),
                default_for_az: true,
                map_public_ip_on_launch: true,
            };
            self.subnets.insert(subnet.id.clone(), subnet);
        }
        let group = default_group(&vpc.id);
        self.groups.insert(group.id.clone(), group);
        self.vpcs.insert(vpc.id.clone(), vpc);
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

    /// Addresses of a subnet its network interfaces hold.
    pub fn used_addresses(&self, subnet_id: &str) -> usize {
        self.enis
            .values()
            .filter(|e| e.subnet_id == subnet_id)
            .count()
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
}
