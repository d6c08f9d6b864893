//! Instances as the scheduler sees them: remaining resources, attributes,
//! and the tasks (by group) not yet STOPPED.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use berth_model::AwsError;
use berth_scheduler::{InstanceSnapshot, InstanceStatus, TaskRequest};
use berth_store::ReadView;

use crate::launch::request::Launch;
use crate::launch::reservation::required_attributes;
use crate::launch::usage::Usage;
use crate::state::instances::{self, InstanceRecord, Presence};
use crate::state::keys::Scope;
use crate::state::records::{decode, same_stored_value};

pub(crate) fn snapshot(
    record: &InstanceRecord,
    usage: &Usage,
    presence: &Presence,
) -> InstanceSnapshot {
    let mut ports_tcp: BTreeSet<u16> = record.reserved_ports("PORTS").into_iter().collect();
    ports_tcp.extend(usage.ports_tcp.iter().copied());
    let mut ports_udp: BTreeSet<u16> = record.reserved_ports("PORTS_UDP").into_iter().collect();
    ports_udp.extend(usage.ports_udp.iter().copied());
    InstanceSnapshot {
        arn: record.arn().to_string(),
        status: match record.status() {
            instances::ACTIVE => InstanceStatus::Active,
            instances::DRAINING => InstanceStatus::Draining,
            _ => InstanceStatus::Inactive,
        },
        agent_connected: presence.connected(record.arn()),
        cpu_remaining: record.registered_integer("CPU") - usage.cpu,
        memory_remaining: record.registered_integer("MEMORY") - usage.memory,
        ports_tcp_used: ports_tcp,
        ports_udp_used: ports_udp,
        attributes: record.placement_attributes(),
        task_count: usage.running + usage.pending,
        ec2_instance_id: record.instance.ec2_instance_id.clone().unwrap_or_default(),
        custom_remaining: record
            .instance
            .registered_resources
            .iter()
            .flatten()
            .filter(|r| r.r#type.as_deref() == Some("INTEGER"))
            .filter_map(|r| {
                let name = r.name.as_deref()?;
                if matches!(name, "CPU" | "MEMORY") {
                    return None;
                }
                let have = i64::from(r.integer_value.unwrap_or(0));
                Some((
                    name.to_string(),
                    have - usage.custom.get(name).copied().unwrap_or(0),
                ))
            })
            .collect(),
        groups: usage.groups.clone(),
        agent_version: record
            .instance
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.clone()),
        registered_at: record.instance.registered_at.map(|t| t as i64),
    }
}

pub(crate) fn task_request(launch: &Launch) -> TaskRequest {
    TaskRequest {
        cpu: launch.reservation.cpu,
        memory: launch.reservation.memory,
        host_ports_tcp: launch.reservation.ports_tcp.clone(),
        host_ports_udp: launch.reservation.ports_udp.clone(),
        required_attributes: required_attributes(&launch.definition),
        group: launch.group.clone(),
        custom: launch.reservation.custom.clone(),
    }
}

/// Decoded instance records by key, with the stored value they were
/// decoded from: a cluster's instances change rarely, and placing a task
/// must not decode ten thousand of them again.
type Decoded = HashMap<String, (Bytes, Arc<InstanceRecord>)>;

fn decoded() -> std::sync::MutexGuard<'static, Decoded> {
    static DECODED: OnceLock<Mutex<Decoded>> = OnceLock::new();
    DECODED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// More instances than one server holds: past this the memo starts over.
const DECODED_LIMIT: usize = 100_000;

/// The ACTIVE and DRAINING instances of a cluster. A record whose stored
/// value is byte for byte the one decoded before is not decoded again.
pub(crate) fn live_instances(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> Result<Vec<Arc<InstanceRecord>>, AwsError> {
    let stored = view.range(&scope.instances(cluster), None, usize::MAX);
    let mut records = Vec::with_capacity(stored.len());
    let mut fresh = Vec::new();
    {
        let memo = decoded();
        for kv in &stored {
            match memo.get(&kv.key) {
                Some((value, record)) if same_stored_value(value, &kv.value) => {
                    records.push(record.clone())
                }
                _ => {
                    let record = Arc::new(decode::<InstanceRecord>(kv)?);
                    fresh.push((kv.key.clone(), kv.value.clone(), record.clone()));
                    records.push(record);
                }
            }
        }
    }
    if !fresh.is_empty() {
        let mut memo = decoded();
        if memo.len() + fresh.len() > DECODED_LIMIT {
            memo.clear();
        }
        for (key, value, record) in fresh {
            memo.insert(key, (value, record));
        }
    }
    records.retain(|r| r.status() != instances::INACTIVE && r.offers_ec2());
    Ok(records)
}
