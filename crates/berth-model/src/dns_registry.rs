//! The DNS registry: the names Berth's services publish for Berth's DNS
//! server (`berth-dns`), kept in the store so that every server answers the
//! same and a change reaches the DNS server through its watch.
//!
//! Publishers (Cloud Map namespaces and instances, task network interfaces,
//! later load balancers and databases) write [`HostedZone`]s and
//! [`RecordSet`]s under the keys below, in the same store mutation as the
//! record they publish for, so the registry never drifts from its sources.
//! The DNS server only reads.
//!
//! Keys:
//! * `dns/zones/<zone id>` → [`HostedZone`] (a Cloud Map private namespace
//!   is one zone; its id is the namespace's hosted-zone id).
//! * `dns/records/<zone id>/<owner name>/<type>/<set id>` → [`RecordSet`].
//!   A name may have several sets of one type (Cloud Map writes one set per
//!   instance, its set id the instance id); the server answers them merged
//!   as the sets' [`Routing`] says.
//!
//! Names are stored lower-case, without the trailing dot.

use serde::{Deserialize, Serialize};

/// Prefix of every registry key.
pub const PREFIX: &str = "dns/";
/// Prefix of the zones.
pub const ZONES_PREFIX: &str = "dns/zones/";
/// Prefix of the record sets.
pub const RECORDS_PREFIX: &str = "dns/records/";

/// A zone Berth's DNS answers for authoritatively: every name at or under
/// `name` gets an answer or NXDOMAIN, never a forward upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostedZone {
    /// The zone id (Cloud Map: the namespace's `HostedZoneId`, `Z…`).
    pub id: String,
    /// The apex, lower-case, without the trailing dot (`corp.local`).
    pub name: String,
    /// The VPCs the zone is visible in (empty: every VPC).
    #[serde(default)]
    pub vpc_ids: Vec<String>,
    pub account: String,
    pub region: String,
    /// Who published it (`servicediscovery`, `ec2`, `elasticloadbalancing` …).
    pub publisher: String,
    /// The SOA's minimum TTL: how long a resolver may cache NXDOMAIN.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
}

fn default_negative_ttl() -> u32 {
    // Route 53's SOA record for a new zone: 86400, but Cloud Map's private
    // namespaces use 15 for names that come and go.
    15
}

/// The record types the registry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Srv,
    Cname,
}

impl RecordType {
    /// The type as it appears in keys and in zone files (`A`, `AAAA` …).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
            RecordType::Cname => "CNAME",
        }
    }

    pub fn parse(text: &str) -> Option<RecordType> {
        match text {
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            "SRV" => Some(RecordType::Srv),
            "CNAME" => Some(RecordType::Cname),
            _ => None,
        }
    }
}

/// How the sets of one name and type are answered together (Route 53's
/// routing policies, as Cloud Map uses them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Routing {
    /// One set; answered whole.
    #[default]
    Simple,
    /// Up to 8 healthy sets, in random order.
    Multivalue,
    /// One healthy set, chosen at random by weight.
    Weighted,
}

/// One record set: the values of one name and type published by one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordSet {
    /// The owner name, lower-case, without the trailing dot.
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    pub ttl: u32,
    /// Values in zone-file presentation form: `10.0.0.5` (A), `fd00::5`
    /// (AAAA), `1 1 8080 host.corp.local` (SRV: priority weight port
    /// target), `target.example.com` (CNAME).
    pub values: Vec<String>,
    #[serde(default)]
    pub routing: Routing,
    /// Weighted routing's weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Unhealthy sets are left out of answers while a healthy one exists.
    #[serde(default = "healthy")]
    pub healthy: bool,
    /// Who published it, for operators (`servicediscovery:<instance arn>` …).
    #[serde(default)]
    pub source: String,
}

fn healthy() -> bool {
    true
}

/// The key of a zone.
pub fn zone_key(zone_id: &str) -> String {
    format!("{ZONES_PREFIX}{zone_id}")
}

/// The prefix of every record set of a zone.
pub fn zone_records_prefix(zone_id: &str) -> String {
    format!("{RECORDS_PREFIX}{zone_id}/")
}

/// The key of one record set.
pub fn record_key(zone_id: &str, name: &str, record_type: RecordType, set_id: &str) -> String {
    format!(
        "{RECORDS_PREFIX}{zone_id}/{}/{}/{set_id}",
        normalize_name(name),
        record_type.as_str()
    )
}

/// The prefix of every set a name has in a zone (any type).
pub fn name_records_prefix(zone_id: &str, name: &str) -> String {
    format!("{RECORDS_PREFIX}{zone_id}/{}/", normalize_name(name))
}

/// A name as the registry stores it: lower-case, no trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a record key into (zone id, owner name, type, set id).
pub fn parse_record_key(key: &str) -> Option<(&str, &str, RecordType, &str)> {
    let rest = key.strip_prefix(RECORDS_PREFIX)?;
    let mut parts = rest.splitn(4, '/');
    let zone = parts.next()?;
    let name = parts.next()?;
    let record_type = RecordType::parse(parts.next()?)?;
    let set = parts.next()?;
    if zone.is_empty() || name.is_empty() || set.is_empty() {
        return None;
    }
    Some((zone, name, record_type, set))
}

/// The private DNS name AWS gives an interface's primary address
/// (`ip-172-31-0-5.ec2.internal` in us-east-1, else
/// `ip-…​.<region>.compute.internal`).
pub fn private_dns_name(region: &str, ip: &str) -> String {
    format!("ip-{}.{}", ip.replace('.', "-"), private_dns_zone(region))
}

/// The zone of the interface names of a region.
pub fn private_dns_zone(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".to_string()
    } else {
        format!("{region}.compute.internal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip() {
        let key = record_key("Z123", "API.corp.local.", RecordType::Srv, "i-1");
        assert_eq!(key, "dns/records/Z123/api.corp.local/SRV/i-1");
        assert_eq!(
            parse_record_key(&key),
            Some(("Z123", "api.corp.local", RecordType::Srv, "i-1"))
        );
        assert!(key.starts_with(&name_records_prefix("Z123", "api.corp.local")));
        assert_eq!(parse_record_key("dns/records/Z1/x/MX/i"), None);
        assert_eq!(parse_record_key("dns/zones/Z1"), None);
    }

    #[test]
    fn interface_names_follow_aws() {
        assert_eq!(
            private_dns_name("us-east-1", "172.31.0.5"),
            "ip-172-31-0-5.ec2.internal"
        );
        assert_eq!(
            private_dns_name("eu-west-1", "10.0.1.9"),
            "ip-10-0-1-9.eu-west-1.compute.internal"
        );
    }

    #[test]
    fn record_sets_serialize_with_defaults() {
        let set: RecordSet =
            serde_json::from_str(r#"{"name":"a.b","type":"A","ttl":5,"values":["10.0.0.1"]}"#)
                .unwrap();
        assert!(set.healthy);
        assert_eq!(set.routing, Routing::Simple);
        assert_eq!(set.record_type, RecordType::A);
    }
}
