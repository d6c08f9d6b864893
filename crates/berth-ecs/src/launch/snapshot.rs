//! Instances as the scheduler sees them: remaining resources, attributes,
//! and the tasks (by group) not yet STOPPED.

use std::collections::BTreeSet;

use berth_model::AwsError;
use berth_scheduler::{InstanceSnapshot, InstanceStatus, TaskRequest};
use berth_store::ReadView;

use crate::launch::request::Launch;
use crate::launch::reservation::required_attributes;
use crate::launch::usage::Usage;
use crate::state::instances::{self, InstanceRecord, Presence};
use crate::state::keys::Scope;
use crate::state::records::decode;

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
        attributes: record
            .attributes()
            .iter()
            .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
            .collect(),
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

/// The ACTIVE and DRAINING instances of a cluster.
pub(crate) fn live_instances(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> Result<Vec<InstanceRecord>, AwsError> {
    Ok(view
        .range(&scope.instances(cluster), None, usize::MAX)
        .iter()
        .map(decode::<InstanceRecord>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|r| r.status() != instances::INACTIVE && r.offers_ec2())
        .collect())
}
