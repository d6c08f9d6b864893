//! The network controller: creates the network interfaces of awsvpc tasks
//! through the [`TaskNetworks`] port (Berth's EC2 service) and deletes them
//! once the tasks stop.

use std::sync::Arc;
use std::time::Duration;

use berth_model::shapes::ecs::{KeyValuePair, NetworkInterface};
use berth_model::AwsError;
use berth_store::{Store, StoreExt};

use crate::state::index;
use crate::state::keys::{self, Scope};
use crate::state::network::{
    attachment_details, attachment_status, eni_attachment_mut, ATTACHED, DELETED, ENI_ATTACHMENT,
    PRECREATED,
};
pub use crate::state::network::{AttachedInterface, SubnetInfo, TaskNetworks};
use crate::state::records::load;
use crate::state::tasks::{request_stop, TaskRecord, TaskStatus};

/// What the controller does for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Create the interface in this subnet.
    Attach {
        subnet: String,
    },
    /// The task stopped: delete its interface (if it got one).
    Release,
    Nothing,
}

fn step(record: &TaskRecord) -> Step {
    let stopped = record.last_status() == TaskStatus::Stopped;
    match attachment_status(&record.task) {
        Some(PRECREATED) if stopped || record.desired_status() == TaskStatus::Stopped => {
            Step::Release
        }
        Some(PRECREATED) => {
            let subnet = record
                .task
                .attachments
                .iter()
                .flatten()
                .flat_map(|a| a.details.iter().flatten())
                .find(|d| d.name.as_deref() == Some("subnetId"))
                .and_then(|d| d.value.clone())
                .unwrap_or_default();
            Step::Attach { subnet }
        }
        Some(ATTACHED) if stopped => Step::Release,
        _ => Step::Nothing,
    }
}

/// Gives awsvpc tasks their network interfaces and deletes them once the
/// tasks stop. It follows the store (a full pass at start, so a restart
/// finishes what a crash interrupted, then every change) and works one task
/// at a time, so each interface is created once. It reads only the tasks
/// with an `eni-tasks/` entry (awsvpc tasks whose interface is not yet
/// DELETED): every write of such a task writes its entry in the same
/// mutation, so the entry's events are the only ones it acts on.
pub async fn run_network_controller(store: Arc<dyn Store>, networks: Arc<dyn TaskNetworks>) {
    loop {
        let from = store.revision();
        for scope in keys::scopes(store.as_ref()) {
            let prefix = scope.eni_tasks();
            let mut after: Option<String> = None;
            loop {
                let page = store.range(&prefix, after.as_deref(), 1024);
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                for kv in page {
                    if let Some(task) = keys::task_of_eni_entry(&kv.key) {
                        handle(&store, networks.as_ref(), &task).await;
                    }
                }
            }
        }
        let mut watch = match store.watch("/ecs/", from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "network controller cannot watch the store");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(Ok(event)) = watch.next().await {
            if event.kv.value.is_empty() && event.kind == berth_store::EventKind::Delete {
                continue;
            }
            if let Some(task) = keys::task_of_eni_entry(&event.kv.key) {
                handle(&store, networks.as_ref(), &task).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Acts on the task at `key` as it is now: an event can be older than the
/// record (the controller's own writes come after it).
async fn handle(store: &Arc<dyn Store>, networks: &dyn TaskNetworks, key: &str) {
    let Ok(Some((record, _))) = load::<TaskRecord>(store.as_ref(), key) else {
        return;
    };
    let Some((scope, _)) = keys::split_key(key) else {
        return;
    };
    let outcome = match step(&record) {
        Step::Nothing => return,
        Step::Attach { subnet } => attach(store, networks, &scope, key, &record, &subnet).await,
        Step::Release => release(store, networks, &scope, key, &record).await,
    };
    if let Err(e) = outcome {
        tracing::warn!(task = %record.arn(), error = %e.message, "task network interface");
    }
}

async fn attach(
    store: &Arc<dyn Store>,
    networks: &dyn TaskNetworks,
    scope: &Scope,
    key: &str,
    record: &TaskRecord,
    subnet: &str,
) -> Result<(), AwsError> {
    let groups = record.security_groups.clone();
    // The description names the attachment, so creating the interface again
    // after a crash between its creation and the task's update finds the
    // first one instead of leaking an address.
    let attachment_id = record
        .task
        .attachments
        .iter()
        .flatten()
        .find(|a| a.r#type.as_deref() == Some(ENI_ATTACHMENT))
        .and_then(|a| a.id.clone())
        .unwrap_or_default();
    let description = format!(
        "arn:aws:ecs:{}:{}:attachment/{attachment_id}",
        scope.region, scope.account
    );
    let created = networks
        .attach(&scope.account, &scope.region, subnet, &groups, &description)
        .await;
    let key_owned = key.to_string();
    let scope_owned = scope.clone();
    let (attached, failure) = match created {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e)),
    };
    let attached_for_update = attached.clone();
    let (_, stale) = store
        .update(move |view| {
            let Some((mut record, _)) = load::<TaskRecord>(view, &key_owned)? else {
                return Ok::<_, AwsError>((Vec::new(), true));
            };
            if attachment_status(&record.task) != Some(PRECREATED) {
                // Attached already (to this very interface, when the
                // creation above found it again): nothing to undo then.
                let same = match (&record.network, &attached_for_update) {
                    (Some(n), Some(a)) => n.eni_id == a.interface.eni_id,
                    _ => false,
                };
                return Ok((Vec::new(), !same));
            }
            match (&attached_for_update, &failure) {
                (Some(a), _) if record.desired_status() != TaskStatus::Stopped => {
                    set_attached(&mut record, a);
                }
                (Some(_), _) => return Ok((Vec::new(), true)),
                (None, Some(e)) => {
                    if let Some(att) = eni_attachment_mut(&mut record.task) {
                        att.status = Some(DELETED.into());
                    }
                    request_stop(
                        &mut record,
                        "TaskFailedToStart",
                        &format!(
                            "ResourceInitializationError: failed to create the task's network interface: {}: {}",
                            e.code, e.message
                        ),
                        berth_util::time::now_epoch(),
                        true,
                    );
                }
                (None, None) => return Ok((Vec::new(), true)),
            }
            record.bump();
            Ok((index::put_task(&scope_owned, &record)?, false))
        })
        .await
        .map_err(crate::error::store)??;
    // The task stopped (or vanished) while its interface was created.
    if let (true, Some(a)) = (stale, attached) {
        networks
            .release(&scope.account, &scope.region, &a.interface.eni_id)
            .await?;
    }
    Ok(())
}

fn set_attached(record: &mut TaskRecord, attached: &AttachedInterface) {
    let details = attachment_details(attached);
    let mut attachment_id = None;
    if let Some(att) = eni_attachment_mut(&mut record.task) {
        att.status = Some(ATTACHED.into());
        att.details = Some(
            details
                .into_iter()
                .map(|(name, value)| KeyValuePair {
                    name: Some(name.to_string()),
                    value: Some(value),
                })
                .collect(),
        );
        attachment_id = att.id.clone();
    }
    for c in record.task.containers.iter_mut().flatten() {
        c.network_interfaces = Some(vec![NetworkInterface {
            attachment_id: attachment_id.clone(),
            private_ipv4_address: Some(attached.interface.private_ip.clone()),
            ipv6_address: None,
        }]);
    }
    record.task.availability_zone = Some(attached.availability_zone.clone());
    record.network = Some(attached.interface.clone());
}

async fn release(
    store: &Arc<dyn Store>,
    networks: &dyn TaskNetworks,
    scope: &Scope,
    key: &str,
    record: &TaskRecord,
) -> Result<(), AwsError> {
    if let Some(interface) = &record.network {
        networks
            .release(&scope.account, &scope.region, &interface.eni_id)
            .await?;
    }
    let key_owned = key.to_string();
    let scope_owned = scope.clone();
    store
        .update(move |view| {
            let Some((mut record, _)) = load::<TaskRecord>(view, &key_owned)? else {
                return Ok::<_, AwsError>((Vec::new(), ()));
            };
            if !matches!(step(&record), Step::Release) {
                return Ok((Vec::new(), ()));
            }
            let never_attached = attachment_status(&record.task) == Some(PRECREATED);
            if let Some(att) = eni_attachment_mut(&mut record.task) {
                att.status = Some(DELETED.into());
            }
            if never_attached {
                // No container of an awsvpc task exists before its interface
                // does: the task is stopped already.
                request_stop(
                    &mut record,
                    "UserInitiated",
                    "Task stopped",
                    berth_util::time::now_epoch(),
                    true,
                );
            }
            record.bump();
            Ok((index::put_task(&scope_owned, &record)?, ()))
        })
        .await
        .map_err(crate::error::store)??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::agent_protocol::TaskNetworkInterface;

    const STOPPED: &str = "STOPPED";
    use berth_model::shapes::ecs::Attachment;

    fn task(status: &str, last: &str, desired: &str) -> TaskRecord {
        let mut t = TaskRecord::default();
        t.task.last_status = Some(last.into());
        t.task.desired_status = Some(desired.into());
        t.task.attachments = Some(vec![Attachment {
            id: Some("a1".into()),
            r#type: Some(ENI_ATTACHMENT.into()),
            status: Some(status.into()),
            details: Some(vec![KeyValuePair {
                name: Some("subnetId".into()),
                value: Some("subnet-1".into()),
            }]),
        }]);
        t
    }

    #[test]
    fn interfaces_are_created_for_placed_tasks_and_deleted_after_they_stop() {
        assert_eq!(
            step(&task(PRECREATED, "PROVISIONING", "RUNNING")),
            Step::Attach {
                subnet: "subnet-1".into()
            }
        );
        assert_eq!(
            step(&task(PRECREATED, "PROVISIONING", STOPPED)),
            Step::Release
        );
        assert_eq!(step(&task(ATTACHED, "RUNNING", "RUNNING")), Step::Nothing);
        assert_eq!(step(&task(ATTACHED, "RUNNING", STOPPED)), Step::Nothing);
        assert_eq!(step(&task(ATTACHED, STOPPED, STOPPED)), Step::Release);
        assert_eq!(step(&task(DELETED, STOPPED, STOPPED)), Step::Nothing);
        assert_eq!(step(&TaskRecord::default()), Step::Nothing);
    }

    #[test]
    fn attached_interfaces_show_as_ecs_shows_them() {
        let mut record = task(PRECREATED, "PROVISIONING", "RUNNING");
        record.task.containers = Some(vec![Default::default()]);
        let attached = AttachedInterface {
            interface: TaskNetworkInterface {
                eni_id: "eni-1".into(),
                subnet_id: "subnet-1".into(),
                subnet_cidr: "172.31.0.0/20".into(),
                gateway: "172.31.0.1".into(),
                private_ip: "172.31.0.4".into(),
                mac: "02:00:00:00:00:01".into(),
                ..TaskNetworkInterface::default()
            },
            availability_zone: "us-east-1a".into(),
            vpc_id: "vpc-1".into(),
        };
        set_attached(&mut record, &attached);
        let attachment = &record.task.attachments.as_ref().unwrap()[0];
        assert_eq!(attachment.status.as_deref(), Some(ATTACHED));
        let names: Vec<&str> = attachment
            .details
            .iter()
            .flatten()
            .filter_map(|d| d.name.as_deref())
            .collect();
        assert_eq!(
            names,
            [
                "subnetId",
                "networkInterfaceId",
                "macAddress",
                "privateDnsName",
                "privateIPv4Address"
            ]
        );
        let interfaces = record.task.containers.as_ref().unwrap()[0]
            .network_interfaces
            .clone()
            .unwrap();
        assert_eq!(
            interfaces[0].private_ipv4_address.as_deref(),
            Some("172.31.0.4")
        );
        assert_eq!(interfaces[0].attachment_id.as_deref(), Some("a1"));
        assert_eq!(
            record.network.as_ref().map(|n| n.gateway.as_str()),
            Some("172.31.0.1")
        );
    }
}
