//! Task garbage collection: STOPPED tasks past their retention go, with
//! their index entries, in one mutation.

use std::sync::Arc;
use std::time::Duration;

use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::index;
use crate::state::keys;
use crate::state::records::load;
use crate::state::tasks::{TaskRecord, TaskStatus};

/// The deletes of STOPPED tasks whose `stoppedAt` is older than `before`
/// (seconds since the epoch), across every account and region, with their
/// index entries; at most `limit` tasks. Reads only the `stopped-tasks/`
/// entries before `before` (and decodes only those tasks).
pub(crate) fn expired_tasks(view: &dyn ReadView, before: f64, limit: usize) -> Vec<Vec<Op>> {
    let before_ms = (before.max(0.0) * 1000.0) as u64;
    let mut expired = Vec::new();
    for scope in keys::scopes(view) {
        let prefix = scope.stopped_tasks();
        let end = scope.stopped_tasks_from(before_ms);
        let mut after: Option<String> = None;
        loop {
            let page = view.range(&prefix, after.as_deref(), 256);
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for kv in page {
                if kv.key >= end {
                    break;
                }
                let Some((cluster, id)) = kv
                    .key
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(_, rest)| rest.split_once('/'))
                else {
                    continue;
                };
                let deletes = match load::<TaskRecord>(view, &scope.task(cluster, id)) {
                    Ok(Some((record, _))) if record.last_status() == TaskStatus::Stopped => {
                        index::delete_task(&scope, &record)
                    }
                    // An entry whose task is gone (or unreadable) goes alone.
                    Ok(None) => vec![Op::delete(kv.key.clone())],
                    _ => continue,
                };
                expired.push(deletes);
                if expired.len() >= limit {
                    return expired;
                }
            }
            if after.as_ref().is_some_and(|a| *a >= end) {
                break;
            }
        }
    }
    expired
}

/// Deletes STOPPED tasks that stopped more than `retention_secs` before
/// `now`. Returns how many went.
pub(crate) async fn collect_garbage(
    store: &dyn Store,
    retention_secs: f64,
    now: f64,
) -> Result<usize, AwsError> {
    let expired = expired_tasks(store, now - retention_secs, 1000);
    if expired.is_empty() {
        return Ok(0);
    }
    let (_, n) = store
        .update(move |view| {
            // Only tasks still there go (a STOPPED task never changes again).
            let mut ops = Vec::new();
            let mut n = 0;
            for deletes in &expired {
                if deletes
                    .first()
                    .is_some_and(|op| view.get(op.key()).is_some())
                {
                    ops.extend(deletes.iter().cloned());
                    n += 1;
                }
            }
            Ok::<_, AwsError>((ops, n))
        })
        .await
        .map_err(error::store)??;
    Ok(n)
}

/// Garbage-collects stopped tasks forever (every minute).
pub async fn run_task_gc(store: Arc<dyn Store>, retention: Duration) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        match collect_garbage(
            store.as_ref(),
            retention.as_secs_f64(),
            berth_util::time::now_epoch(),
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "removed stopped tasks past retention"),
            Err(e) => tracing::warn!(error = %e.message, "task garbage collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::records::decoded;
    use crate::test_support::{Harness, Spec};

    #[tokio::test]
    async fn collected_tasks_leave_no_index_entries() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "svc", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "web", "group": "service:svc",
                    "containerInstances": [a.arn, a.arn]}),
            )
            .await;
        let arns: Vec<String> = out["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
            .collect();
        h.report(&a, &arns[0], "STOPPED").await;
        let scope = h.scope();
        assert_eq!(h.store.count(&scope.service_tasks("default", "svc")), 2);
        // Nothing is old enough yet.
        assert_eq!(
            collect_garbage(h.store.as_ref(), 3600.0, h.now())
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            collect_garbage(h.store.as_ref(), -1.0, h.now())
                .await
                .unwrap(),
            1
        );
        let prefix = scope.instance_tasks("default", &a.id);
        assert_eq!(
            h.store.count(&prefix),
            1,
            "only the live task stays indexed"
        );
        assert_eq!(h.store.count(&scope.service_tasks("default", "svc")), 1);
        let listed = h.poll(&a, 0, 0).await;
        assert_eq!(listed.tasks.len(), 1);
        assert_eq!(listed.tasks[0].task_arn, arns[1]);
    }

    #[tokio::test]
    async fn stopped_tasks_stay_for_their_retention_then_go() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web", "count": 3})).await;
        h.report(&a, &arns[0], "RUNNING").await;
        h.report(&a, &arns[0], "STOPPED").await;
        h.advance(600.0);
        h.report(&a, &arns[1], "STOPPED").await;
        let retention = 3600.0;
        h.advance(3000.0);
        // arns[0] stopped 3,600 s ago: not yet past its retention.
        assert_eq!(
            collect_garbage(h.store.as_ref(), retention, h.now())
                .await
                .unwrap(),
            0
        );
        h.advance(1.0);
        assert_eq!(
            collect_garbage(h.store.as_ref(), retention, h.now())
                .await
                .unwrap(),
            1
        );
        let out = h
            .ok(
                "DescribeTasks",
                json!({"tasks": [arns[0], arns[1], arns[2]]}),
            )
            .await;
        assert_eq!(out["failures"][0]["arn"], arns[0].as_str());
        assert_eq!(out["tasks"].as_array().map(Vec::len), Some(2));
        h.advance(600.0);
        assert_eq!(
            collect_garbage(h.store.as_ref(), retention, h.now())
                .await
                .unwrap(),
            1
        );
        // A task that never stops is never collected, however old.
        h.advance(1e6);
        assert_eq!(
            collect_garbage(h.store.as_ref(), retention, h.now())
                .await
                .unwrap(),
            0
        );
        assert_eq!(h.tasks("default").len(), 1);
        assert_eq!(h.poll(&a, 0, 0).await.tasks.len(), 1);
    }

    #[tokio::test]
    async fn the_collector_reads_only_tasks_past_their_retention() {
        let h = Harness::new();
        let a = h
            .instance("default", Spec::default().size(100_000, 100_000))
            .await;
        h.task_definition("web", json!({"cpu": 1, "memory": 8}))
            .await;
        let mut arns = Vec::new();
        for _ in 0..5 {
            arns.extend(h.run(json!({"taskDefinition": "web", "count": 10})).await.0);
        }
        for (i, arn) in arns.iter().enumerate() {
            if i == 10 {
                h.advance(3600.0);
            }
            h.report(&a, arn, "STOPPED").await;
        }
        h.advance(1.0);
        // Ten stopped over an hour ago, forty just now, none running.
        let before = decoded::of::<TaskRecord>();
        let expired = expired_tasks(h.store.as_ref(), h.now() - 3600.0, 1000);
        assert_eq!(expired.len(), 10);
        assert_eq!(
            decoded::of::<TaskRecord>() - before,
            10,
            "only those are read"
        );
        assert_eq!(
            collect_garbage(h.store.as_ref(), 3600.0, h.now())
                .await
                .unwrap(),
            10
        );
        assert_eq!(h.tasks("default").len(), 40);
    }

    #[tokio::test]
    async fn a_stopped_task_is_listed_until_collected() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        h.ok("StopTask", json!({"task": arns[0]})).await;
        h.advance(7200.0);
        // Asked to stop but not STOPPED yet: kept.
        assert_eq!(
            collect_garbage(h.store.as_ref(), 3600.0, h.now())
                .await
                .unwrap(),
            0
        );
        h.report(&a, &arns[0], "STOPPED").await;
        let listed = h.ok("ListTasks", json!({"desiredStatus": "STOPPED"})).await;
        assert_eq!(listed["taskArns"], json!([arns[0]]));
        h.advance(3601.0);
        assert_eq!(
            collect_garbage(h.store.as_ref(), 3600.0, h.now())
                .await
                .unwrap(),
            1
        );
        let listed = h.ok("ListTasks", json!({"desiredStatus": "STOPPED"})).await;
        assert_eq!(listed["taskArns"], json!([]));
    }
}
