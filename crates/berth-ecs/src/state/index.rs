//! The task indexes, written in the same store mutation as the tasks they
//! index:
//!
//! - `instance-tasks/<host cluster>/<instance id>/<task cluster>/<task id>`:
//!   every task placed on an instance (EC2 tasks, and the Fargate tasks a
//!   host runs for any cluster). The value is what the task holds there
//!   ([`Held`]; empty once it holds nothing), so placement and usage read
//!   the instances' own entries instead of decoding every task of the
//!   cluster, and an agent's long poll watches its own prefix: every write
//!   of a task writes its entry, so the watch wakes for exactly the
//!   instance's task changes.
//! - `svc-tasks/<cluster>/<service>/<task id>` (empty values): a service's
//!   tasks, for the service controller.
//! - `live-tasks/<cluster>/<task id>`: the cluster's tasks not yet STOPPED,
//!   valued `<desiredStatus> <lastStatus> <launchType>` ([`Live`]), so the
//!   cluster's counts and ListTasks of live tasks read these short values
//!   instead of decoding every task (STOPPED ones included) of the cluster.
//! - `stopped-tasks/<stoppedAt ms, 15 digits>/<cluster>/<task id>` (empty):
//!   STOPPED tasks in the order they stopped, so the collector reads only
//!   the ones past their retention.
//! - `eni-tasks/<cluster>/<task id>` (empty): awsvpc tasks whose interface
//!   is not yet DELETED, so the network controller's full pass and its
//!   watch see only those.
//!
//! Every write of a task goes through [`put_task`] and every delete through
//! [`delete_task`]; a task never changes instance after it is placed, so its
//! entries never move. Both also write the instance's
//! `instance-tasks-version/<host cluster>/<instance id>` with a fresh random
//! value, so what is computed from an instance's entries (its usage) can be
//! kept until that key changes. A data directory from before these indexes
//! gets them once at startup ([`backfill`]).

use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::{self, Scope};
use crate::state::records::{decode, encode, load, same_stored_value};
use std::sync::Arc;

use crate::state::tasks::{Reservation, TaskCounts, TaskRecord, TaskStatus};

/// What a task holds on its instance while it is not STOPPED (and not
/// being reclaimed): its status, task group and reservation. Stored in its
/// `instance-tasks/` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Held {
    pub last_status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub reservation: Reservation,
}

impl Held {
    /// What `record` holds, or `None` when it holds nothing.
    pub fn of(record: &TaskRecord) -> Option<Held> {
        record.holds_resources().then(|| Held {
            last_status: Some(record.last_status()),
            group: record.task.group.clone().unwrap_or_default(),
            reservation: record.reservation.clone(),
        })
    }

    pub fn status(&self) -> TaskStatus {
        self.last_status.unwrap_or(TaskStatus::Provisioning)
    }
}

/// A new version of an instance's entries: a random value, so a version
/// written by a mutation that was never committed is never mistaken for
/// the one committed at the same revision.
fn version_op(scope: &Scope, host_cluster: &str, instance_id: &str) -> Op {
    Op::put(
        scope.instance_tasks_version(host_cluster, instance_id),
        bytes::Bytes::from(rand::random::<u64>().to_le_bytes().to_vec()),
    )
}

/// What a `live-tasks/` entry says of its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live<'a> {
    pub desired: TaskStatus,
    pub last: TaskStatus,
    pub launch_type: &'a str,
}

impl<'a> Live<'a> {
    fn value(record: &TaskRecord) -> bytes::Bytes {
        let launch = record.task.launch_type.as_deref().unwrap_or("EC2");
        bytes::Bytes::from(format!(
            "{} {} {launch}",
            record.desired_status(),
            record.last_status()
        ))
    }

    /// Reads an entry's value (no JSON: three words).
    pub fn parse(value: &'a [u8]) -> Option<Live<'a>> {
        let text = std::str::from_utf8(value).ok()?;
        let mut words = text.split(' ');
        Some(Live {
            desired: TaskStatus::parse(words.next()?)?,
            last: TaskStatus::parse(words.next()?)?,
            launch_type: words.next()?,
        })
    }
}

/// When a STOPPED task stopped, in milliseconds (its `stopped-tasks/` key).
fn stopped_ms(record: &TaskRecord) -> u64 {
    let t = &record.task;
    let at = t.stopped_at.or(t.execution_stopped_at).unwrap_or(0.0);
    (at.max(0.0) * 1000.0) as u64
}

/// Whether the task has an interface not yet released.
fn has_interface(record: &TaskRecord) -> bool {
    record.task.attachments.iter().flatten().any(|a| {
        a.r#type.as_deref() == Some(crate::state::network::ENI_ATTACHMENT)
            && a.status.as_deref() != Some(crate::state::network::DELETED)
    })
}

/// The index writes for `record` as it will be stored.
fn index_ops(scope: &Scope, record: &TaskRecord) -> Result<Vec<Op>, AwsError> {
    let mut ops = Vec::new();
    let (cluster, id) = (&record.cluster, &record.id);
    if record.last_status() == TaskStatus::Stopped {
        ops.push(Op::delete(scope.live_task(cluster, id)));
        ops.push(Op::put(
            scope.stopped_task(stopped_ms(record), cluster, id),
            bytes::Bytes::new(),
        ));
    } else {
        ops.push(Op::put(scope.live_task(cluster, id), Live::value(record)));
    }
    if has_interface(record) {
        ops.push(Op::put(scope.eni_task(cluster, id), bytes::Bytes::new()));
    } else {
        ops.push(Op::delete(scope.eni_task(cluster, id)));
    }
    if let Some(instance) = &record.instance_id {
        let value = match Held::of(record) {
            Some(held) => encode(&held)?,
            None => bytes::Bytes::new(),
        };
        ops.push(Op::put(
            scope.instance_task(record.host_cluster(), instance, &record.cluster, &record.id),
            value,
        ));
        ops.push(version_op(scope, record.host_cluster(), instance));
    }
    if let Some(service) = record.service() {
        ops.push(Op::put(
            scope.service_task(&record.cluster, service, &record.id),
            bytes::Bytes::new(),
        ));
    }
    Ok(ops)
}

/// The writes that store `record` (new or changed) with its index entries.
pub(crate) fn put_task(scope: &Scope, record: &TaskRecord) -> Result<Vec<Op>, AwsError> {
    let mut ops = vec![Op::put(
        scope.task(&record.cluster, &record.id),
        encode(record)?,
    )];
    ops.extend(index_ops(scope, record)?);
    Ok(ops)
}

/// The deletes that remove `record` and its index entries.
pub(crate) fn delete_task(scope: &Scope, record: &TaskRecord) -> Vec<Op> {
    let (cluster, id) = (&record.cluster, &record.id);
    let mut ops = vec![
        Op::delete(scope.task(cluster, id)),
        Op::delete(scope.live_task(cluster, id)),
        Op::delete(scope.stopped_task(stopped_ms(record), cluster, id)),
        Op::delete(scope.eni_task(cluster, id)),
    ];
    if let Some(instance) = &record.instance_id {
        ops.push(Op::delete(scope.instance_task(
            record.host_cluster(),
            instance,
            &record.cluster,
            &record.id,
        )));
        ops.push(version_op(scope, record.host_cluster(), instance));
    }
    if let Some(service) = record.service() {
        ops.push(Op::delete(scope.service_task(
            &record.cluster,
            service,
            &record.id,
        )));
    }
    ops
}

/// What the tasks on one instance hold. Entries of tasks that hold nothing
/// are skipped undecoded.
pub(crate) fn held(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    host_cluster: &str,
    instance_id: &str,
    mut each: impl FnMut(&Held),
) -> Result<(), AwsError> {
    let prefix = scope.instance_tasks(host_cluster, instance_id);
    let entries = view.range(&prefix, None, usize::MAX);
    let mut fresh = Vec::new();
    {
        let memo = held_memo();
        for kv in entries {
            if kv.value.is_empty() {
                continue;
            }
            match memo.get(&kv.key) {
                Some((value, held)) if same_stored_value(value, &kv.value) => each(held),
                _ => {
                    let held = Arc::new(decode::<Held>(&kv)?);
                    each(&held);
                    fresh.push((kv.key, kv.value, held));
                }
            }
        }
    }
    if !fresh.is_empty() {
        let mut memo = held_memo();
        if memo.len() + fresh.len() > HELD_MEMO_LIMIT {
            memo.clear();
        }
        for (key, value, held) in fresh {
            memo.insert(key, (value, held));
        }
    }
    Ok(())
}

/// Decoded `Held` entries by key, with the stored value they came from: an
/// instance's usage is summed again when one of its tasks changes, and
/// the other entries need not be decoded again for that.
type HeldMemo = std::collections::HashMap<String, (bytes::Bytes, Arc<Held>)>;

fn held_memo() -> std::sync::MutexGuard<'static, HeldMemo> {
    static MEMO: std::sync::OnceLock<std::sync::Mutex<HeldMemo>> = std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// More live tasks than one server holds: past this the memo starts over.
const HELD_MEMO_LIMIT: usize = 500_000;

/// Every task of one instance (STOPPED ones too, until they are collected),
/// whichever cluster it belongs to: what its agent is told.
pub(crate) fn instance_tasks(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    host_cluster: &str,
    instance_id: &str,
) -> Result<Vec<TaskRecord>, AwsError> {
    let prefix = scope.instance_tasks(host_cluster, instance_id);
    let mut out = Vec::new();
    for kv in view.range(&prefix, None, usize::MAX) {
        let Some((cluster, id)) = keys::indexed_task(&prefix, &kv.key) else {
            continue;
        };
        if let Some((record, _)) = load::<TaskRecord>(view, &scope.task(cluster, id))? {
            out.push(record);
        }
    }
    Ok(out)
}

/// Running and pending tasks of a cluster (for its counts): EC2 launch
/// type first, then Fargate. Reads the cluster's `live-tasks/` entries
/// (short values, no task record decoded; STOPPED tasks have none).
pub(crate) fn cluster_task_counts(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> (TaskCounts, TaskCounts) {
    let (mut ec2, mut fargate) = (TaskCounts::default(), TaskCounts::default());
    for kv in view.range(&scope.live_tasks(cluster), None, usize::MAX) {
        if let Some(live) = Live::parse(&kv.value) {
            let total = if live.launch_type == "FARGATE" {
                &mut fargate
            } else {
                &mut ec2
            };
            total.add(live.last);
        }
    }
    (ec2, fargate)
}

/// Marks a store whose tasks all have every entry [`put_task`] writes
/// (`instance-tasks/`, `live-tasks/`, `stopped-tasks/`, `eni-tasks/`).
pub(crate) const INDEX_MARKER: &str = "/berth/ecs/task-indexes-2";

/// The marker of the first index (`instance-tasks/` only), replaced.
const OLD_MARKER: &str = "/berth/ecs/instance-tasks-index";

/// How many tasks one backfill mutation indexes.
const BACKFILL_BATCH: usize = 500;

/// Gives every stored task its index entries once, for a data directory
/// written before the indexes existed, and drops the older
/// `fargate-hosted/` index they replace. Returns how many tasks it indexed
/// (0 when the store has the indexes already).
pub async fn backfill(store: &dyn Store) -> Result<usize, AwsError> {
    if store.get(INDEX_MARKER).is_some() {
        return Ok(0);
    }
    let mut indexed = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.range("/ecs/", after.as_deref(), BACKFILL_BATCH);
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let keys: Vec<String> = page
            .into_iter()
            .map(|kv| kv.key)
            .filter(|k| {
                keys::is_task_key(k)
                    || keys::split_key(k)
                        .is_some_and(|(_, rest)| rest.starts_with("fargate-hosted/"))
            })
            .collect();
        if keys.is_empty() {
            continue;
        }
        let (_, n) = store
            .update(move |view| {
                let mut ops = Vec::new();
                let mut n = 0;
                for key in &keys {
                    let Some((scope, _)) = keys::split_key(key) else {
                        continue;
                    };
                    if !keys::is_task_key(key) {
                        ops.push(Op::delete(key.clone()));
                        continue;
                    }
                    // A record that does not decode is left as it is.
                    if let Ok(Some((record, _))) = load::<TaskRecord>(view, key) {
                        ops.extend(index_ops(&scope, &record)?);
                        n += 1;
                    }
                }
                Ok::<_, AwsError>((ops, n))
            })
            .await
            .map_err(error::store)??;
        indexed += n;
    }
    store
        .update(|_| {
            Ok::<_, AwsError>((
                vec![
                    Op::put(INDEX_MARKER, bytes::Bytes::from_static(b"1")),
                    Op::delete(OLD_MARKER),
                ],
                (),
            ))
        })
        .await
        .map_err(error::store)??;
    if indexed > 0 {
        tracing::info!(tasks = indexed, "indexed stored tasks by instance");
    }
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::records::encode;
    use crate::test_support::{Harness, Spec};

    #[tokio::test]
    async fn a_store_from_before_the_index_gets_it_once() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web", "count": 3})).await;
        let scope = h.scope();
        h.report(&a, &arns[2], "STOPPED").await;
        // Make it look like an older data directory: no task indexes, and
        // a Fargate task indexed the old way.
        let prefix = scope.instance_tasks("default", &a.id);
        let mut ops: Vec<Op> = [
            prefix.clone(),
            scope.live_tasks("default"),
            scope.stopped_tasks(),
        ]
        .iter()
        .flat_map(|p| h.store.range(p, None, usize::MAX))
        .map(|kv| Op::delete(kv.key))
        .collect();
        let old = format!(
            "/ecs/{}/{}/fargate-hosted/default/{}/web/t1",
            scope.account, scope.region, a.id
        );
        ops.push(Op::put(old.clone(), bytes::Bytes::new()));
        ops.push(Op::delete(INDEX_MARKER));
        h.store
            .update(move |_| Ok::<_, AwsError>((ops.clone(), ())))
            .await
            .unwrap()
            .unwrap();
        assert!(h.poll(&a, 0, 0).await.tasks.is_empty(), "nothing indexed");

        assert_eq!(backfill(h.store.as_ref()).await.unwrap(), 3);
        assert_eq!(h.poll(&a, 0, 0).await.tasks.len(), 3);
        assert_eq!(h.store.count(&scope.live_tasks("default")), 2);
        assert_eq!(h.store.count(&scope.stopped_tasks()), 1);
        assert!(h.store.get(OLD_MARKER).is_none());
        assert!(h.store.get(&old).is_none(), "the old index is gone");
        // What the entries say matches the tasks.
        for arn in &arns {
            let task = h.task(arn);
            let entry = h
                .store
                .get(&scope.instance_task("default", &a.id, "default", &task.id))
                .unwrap();
            let want = match Held::of(&task) {
                Some(held) => encode(&held).unwrap(),
                None => bytes::Bytes::new(),
            };
            assert_eq!(entry.value, want);
        }
        // Once is enough.
        assert_eq!(backfill(h.store.as_ref()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn entries_follow_every_change_of_their_task() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web", "group": "g"})).await;
        let task = h.task(&arns[0]);
        let key = h
            .scope()
            .instance_task("default", &a.id, "default", &task.id);
        let held = |h: &Harness| {
            let kv = h.store.get(&key).unwrap();
            (!kv.value.is_empty()).then(|| decode::<Held>(&kv).unwrap())
        };
        let scope = h.scope();
        let live = |h: &Harness| {
            h.store
                .get(&scope.live_task("default", &task.id))
                .map(|kv| String::from_utf8_lossy(&kv.value).to_string())
        };
        let first = held(&h).unwrap();
        assert_eq!(first.status(), TaskStatus::Provisioning);
        assert_eq!(first.group, "g");
        assert_eq!(live(&h).as_deref(), Some("RUNNING PROVISIONING EC2"));
        h.report(&a, &arns[0], "RUNNING").await;
        assert_eq!(held(&h).unwrap().status(), TaskStatus::Running);
        h.ok("StopTask", json!({"task": arns[0]})).await;
        assert_eq!(live(&h).as_deref(), Some("STOPPED RUNNING EC2"));
        assert_eq!(h.store.count(&scope.stopped_tasks()), 0);
        h.advance(1.5);
        h.report(&a, &arns[0], "STOPPED").await;
        assert_eq!(held(&h), None, "a STOPPED task holds nothing");
        assert_eq!(live(&h), None, "nor is it live");
        let stopped_ms = (h.now() * 1000.0) as u64;
        assert!(h
            .store
            .get(&scope.stopped_task(stopped_ms, "default", &task.id))
            .is_some());
        // Collected: every entry goes with the task.
        let record = h.task(&arns[0]);
        let deletes = delete_task(&scope, &record);
        h.store
            .update(move |_| Ok::<_, AwsError>((deletes.clone(), ())))
            .await
            .unwrap()
            .unwrap();
        for prefix in [
            scope.live_tasks("default"),
            scope.stopped_tasks(),
            scope.instance_tasks("default", &a.id),
            scope.eni_tasks(),
        ] {
            assert_eq!(h.store.count(&prefix), 0, "{prefix}");
        }
    }
}
