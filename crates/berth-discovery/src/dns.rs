//! What Cloud Map publishes in Berth's DNS registry
//! ([`berth_model::dns_registry`]): a private DNS namespace is a hosted
//! zone, and each instance of a service with a DnsConfig is one record set
//! per record type (its set id the instance id), as Route 53 holds them
//! for Cloud Map. Written in the same mutation as the records they come
//! from.

use berth_model::dns_registry::{self, HostedZone, RecordSet, RecordType, Routing};
use berth_model::AwsError;

use crate::model::{InstanceRecord, NamespaceRecord, ServiceRecord, Tx, DEFAULT_SOA_TTL};

/// The zone a private DNS namespace publishes.
pub fn zone_of(ns: &NamespaceRecord, scope: &crate::model::Scope) -> Option<HostedZone> {
    let id = ns.hosted_zone_id.clone()?;
    Some(HostedZone {
        id,
        name: dns_registry::normalize_name(&ns.name),
        vpc_ids: ns.vpc.iter().cloned().collect(),
        account: scope.account.clone(),
        region: scope.region.clone(),
        publisher: "servicediscovery".to_string(),
        negative_ttl: ttl_u32(ns.soa_ttl.unwrap_or(DEFAULT_SOA_TTL)),
    })
}

fn ttl_u32(ttl: i64) -> u32 {
    u32::try_from(ttl.max(0)).unwrap_or(u32::MAX)
}

/// Whether `id` can stand as the first label of a DNS name (SRV targets
/// are `<instance id>.<service>.<namespace>`).
fn label_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The record sets an instance publishes, with their registry keys.
pub fn instance_sets(
    ns: &NamespaceRecord,
    svc: &ServiceRecord,
    inst: &InstanceRecord,
) -> Vec<(String, RecordSet)> {
    let (Some(zone), Some(config)) = (ns.hosted_zone_id.as_deref(), svc.dns_config.as_ref()) else {
        return Vec::new();
    };
    let name = dns_registry::normalize_name(&format!("{}.{}", svc.name, ns.name));
    let routing = if config.routing_policy == "WEIGHTED" {
        Routing::Weighted
    } else {
        Routing::Multivalue
    };
    let weight = (routing == Routing::Weighted).then_some(1);
    let healthy = inst.custom_health.as_deref() != Some("UNHEALTHY");
    let source = format!("servicediscovery:{}/{}", svc.arn, inst.id);
    let set = |name: &str, record_type: RecordType, ttl: i64, value: String| {
        (
            dns_registry::record_key(zone, name, record_type, &inst.id),
            RecordSet {
                name: dns_registry::normalize_name(name),
                record_type,
                ttl: ttl_u32(ttl),
                values: vec![value],
                routing,
                weight,
                healthy,
                source: source.clone(),
            },
        )
    };
    let attr = |k: &str| inst.attributes.get(k).cloned();
    let mut out = Vec::new();
    for spec in &config.records {
        match spec.record_type.as_str() {
            "A" => {
                if let Some(ip) = attr("AWS_INSTANCE_IPV4") {
                    out.push(set(&name, RecordType::A, spec.ttl, ip));
                }
            }
            "AAAA" => {
                if let Some(ip) = attr("AWS_INSTANCE_IPV6") {
                    out.push(set(&name, RecordType::Aaaa, spec.ttl, ip));
                }
            }
            "CNAME" => {
                if let Some(target) = attr("AWS_INSTANCE_CNAME") {
                    let target = dns_registry::normalize_name(&target);
                    out.push(set(&name, RecordType::Cname, spec.ttl, target));
                }
            }
            "SRV" => {
                let Some(port) = attr("AWS_INSTANCE_PORT") else {
                    continue;
                };
                let target = dns_registry::normalize_name(&format!("{}.{name}", inst.id));
                out.push(set(
                    &name,
                    RecordType::Srv,
                    spec.ttl,
                    format!("1 1 {port} {target}"),
                ));
                // As Cloud Map does: the SRV target's own A/AAAA records.
                if label_safe(&inst.id) {
                    if let Some(ip) = attr("AWS_INSTANCE_IPV4") {
                        out.push(set(&target, RecordType::A, spec.ttl, ip));
                    }
                    if let Some(ip) = attr("AWS_INSTANCE_IPV6") {
                        out.push(set(&target, RecordType::Aaaa, spec.ttl, ip));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Writes an instance and its record sets in `tx`, removing the sets it
/// published before that it no longer has.
pub fn put_instance(
    tx: &mut Tx<'_>,
    key: String,
    ns: &NamespaceRecord,
    svc: &ServiceRecord,
    mut inst: InstanceRecord,
    previous_keys: &[String],
) -> Result<InstanceRecord, AwsError> {
    let sets = instance_sets(ns, svc, &inst);
    let keys: Vec<String> = sets.iter().map(|(k, _)| k.clone()).collect();
    for old in previous_keys {
        if !keys.contains(old) {
            tx.delete(old.clone());
        }
    }
    for (k, set) in &sets {
        tx.put(k.clone(), set)?;
    }
    inst.dns_keys = keys;
    tx.put(key, &inst)?;
    Ok(inst)
}

/// Removes an instance and its record sets in `tx`.
pub fn delete_instance(tx: &mut Tx<'_>, key: String, inst: &InstanceRecord) {
    for k in &inst.dns_keys {
        tx.delete(k.clone());
    }
    tx.delete(key);
}
