//! Task scale-in protection: GetTaskProtection, UpdateTaskProtection.
//!
//! Protection is kept on the task record (`protected_until`); the service
//! controller does not choose a protected task when it scales in or
//! replaces tasks in a deployment, until the protection expires.

use berth_model::shapes::ecs::{
    Failure, GetTaskProtectionRequest, GetTaskProtectionResponse, ProtectedTask,
    UpdateTaskProtectionRequest, UpdateTaskProtectionResponse,
};
use berth_model::AwsError;
use berth_store::{ReadView, Store, StoreExt};

use crate::error;
use crate::state::clusters::{require_active, resolve_name};
use crate::state::index;
use crate::state::keys::Scope;
use crate::state::records::load;
use crate::state::tasks::{resolve_task_id, TaskRecord, TaskStatus};

/// How long protection lasts when the call does not say, in minutes.
pub(crate) const DEFAULT_MINUTES: i32 = 120;
/// The longest protection ECS grants, in minutes (48 hours).
pub(crate) const MAX_MINUTES: i32 = 2880;
/// Tasks per call.
const MAX_TASKS: usize = 10;

fn check_tasks(tasks: Option<Vec<String>>) -> Result<Vec<String>, AwsError> {
    let tasks = tasks
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("tasks"))?;
    if tasks.len() > MAX_TASKS {
        return Err(error::invalid_parameter(format!(
            "tasks can have at most {MAX_TASKS} items."
        )));
    }
    Ok(tasks)
}

fn cluster_of(scope: &Scope, reference: Option<&str>) -> Result<String, AwsError> {
    let reference = reference
        .filter(|c| !c.is_empty())
        .ok_or_else(|| error::missing("cluster"))?;
    resolve_name(scope, Some(reference))
}

fn failure(arn: String, reason: &str, detail: Option<&str>) -> Failure {
    Failure {
        arn: Some(arn),
        reason: Some(reason.into()),
        detail: detail.map(str::to_string),
    }
}

fn shown(record: &TaskRecord, at: f64) -> ProtectedTask {
    let protected = record.is_protected(at);
    ProtectedTask {
        task_arn: record.task.task_arn.clone(),
        protection_enabled: Some(protected),
        expiration_date: record.protected_until.filter(|_| protected),
    }
}

/// The task a reference names, or the failure ECS reports for it.
fn lookup(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    reference: &str,
) -> Result<Result<TaskRecord, Failure>, AwsError> {
    let arn_of = |id: &str| scope.arn(&format!("task/{cluster}/{id}"));
    let Ok(id) = resolve_task_id(scope, cluster, reference) else {
        return Ok(Err(failure(reference.to_string(), "MISSING", None)));
    };
    let given = if reference.starts_with("arn:") {
        reference.to_string()
    } else {
        arn_of(&id)
    };
    match load::<TaskRecord>(view, &scope.task(cluster, &id))? {
        None => Ok(Err(failure(given, "MISSING", None))),
        Some((record, _)) => Ok(Ok(record)),
    }
}

pub(crate) fn get(
    view: &dyn ReadView,
    scope: &Scope,
    now: f64,
    input: GetTaskProtectionRequest,
) -> Result<GetTaskProtectionResponse, AwsError> {
    let cluster = cluster_of(scope, input.cluster.as_deref())?;
    let tasks = check_tasks(input.tasks)?;
    require_active(view, scope, &cluster)?;
    let mut protected = Vec::new();
    let mut failures = Vec::new();
    for reference in tasks {
        match lookup(view, scope, &cluster, &reference)? {
            Ok(record) => protected.push(shown(&record, now)),
            Err(f) => failures.push(f),
        }
    }
    Ok(GetTaskProtectionResponse {
        protected_tasks: Some(protected),
        failures: Some(failures),
    })
}

pub(crate) async fn update(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: UpdateTaskProtectionRequest,
) -> Result<UpdateTaskProtectionResponse, AwsError> {
    let cluster = cluster_of(scope, input.cluster.as_deref())?;
    let tasks = check_tasks(input.tasks)?;
    let enabled = input
        .protection_enabled
        .ok_or_else(|| error::missing("protectionEnabled"))?;
    let minutes = input.expires_in_minutes.unwrap_or(DEFAULT_MINUTES);
    if enabled && !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(error::invalid_parameter(format!(
            "expiresInMinutes must be between 1 and {MAX_MINUTES}; got {minutes}."
        )));
    }
    let until = enabled.then(|| now + f64::from(minutes) * 60.0);
    let owned_scope = scope.clone();
    let (_, out) = store
        .update(move |view| {
            let scope = &owned_scope;
            require_active(view, scope, &cluster)?;
            let mut ops = Vec::new();
            let mut protected = Vec::new();
            let mut failures = Vec::new();
            for reference in &tasks {
                let mut record = match lookup(view, scope, &cluster, reference)? {
                    Ok(record) => record,
                    Err(f) => {
                        failures.push(f);
                        continue;
                    }
                };
                let arn = record.task.task_arn.clone().unwrap_or_default();
                let in_service = record
                    .task
                    .group
                    .as_deref()
                    .is_some_and(|g| g.starts_with("service:"));
                if !in_service {
                    failures.push(failure(
                        arn,
                        "TASK_NOT_VALID",
                        Some("The task is not part of a service. Task protection applies only to tasks that a service started."),
                    ));
                    continue;
                }
                if record.desired_status() == TaskStatus::Stopped
                    || record.last_status() == TaskStatus::Stopped
                {
                    failures.push(failure(
                        arn,
                        "TASK_NOT_VALID",
                        Some("The task is stopping or stopped."),
                    ));
                    continue;
                }
                record.protected_until = until;
                ops.extend(index::put_task(scope, &record)?);
                protected.push(shown(&record, now));
            }
            Ok::<_, AwsError>((ops, (protected, failures)))
        })
        .await
        .map_err(error::store)??;
    let (protected, failures) = out;
    Ok(UpdateTaskProtectionResponse {
        protected_tasks: Some(protected),
        failures: Some(failures),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::test_support::{Harness, Instance, Spec};

    async fn converge(h: &Harness, instances: &[&Instance]) {
        let controller = h.controller();
        for _ in 0..6 {
            controller.pass().await;
            h.agents_act(instances).await;
        }
        controller.pass().await;
    }

    fn running(h: &Harness) -> Vec<String> {
        h.service_tasks("default", "web")
            .into_iter()
            .filter(|t| t.desired_status() == crate::state::tasks::TaskStatus::Running)
            .filter_map(|t| t.task.task_arn)
            .collect()
    }

    #[tokio::test]
    async fn protected_tasks_survive_scale_in_until_protection_expires() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 3}),
        )
        .await;
        converge(&h, &[&a]).await;
        let tasks = running(&h);
        assert_eq!(tasks.len(), 3);

        let out = h
            .ok(
                "UpdateTaskProtection",
                json!({"cluster": "default", "tasks": [tasks[0], tasks[1], "0123456789abcdef0123456789abcdef"],
                    "protectionEnabled": true, "expiresInMinutes": 5}),
            )
            .await;
        assert_eq!(out["protectedTasks"].as_array().unwrap().len(), 2);
        assert_eq!(out["protectedTasks"][0]["protectionEnabled"], true);
        let expires = out["protectedTasks"][0]["expirationDate"].as_f64().unwrap();
        assert!((expires - (h.now() + 300.0)).abs() < 1.0);
        assert_eq!(out["failures"][0]["reason"], "MISSING");

        h.ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 0}),
        )
        .await;
        converge(&h, &[&a]).await;
        let mut left = running(&h);
        left.sort();
        let mut protected = vec![tasks[0].clone(), tasks[1].clone()];
        protected.sort();
        assert_eq!(left, protected, "only the unprotected task stopped");
        let got = h
            .ok(
                "GetTaskProtection",
                json!({"cluster": "default", "tasks": [tasks[0], tasks[2]]}),
            )
            .await;
        assert_eq!(got["protectedTasks"][0]["protectionEnabled"], true);
        assert_eq!(got["protectedTasks"][1]["protectionEnabled"], false);

        // Protection switched off for one, expired for the other.
        h.ok(
            "UpdateTaskProtection",
            json!({"cluster": "default", "tasks": [tasks[0]], "protectionEnabled": false}),
        )
        .await;
        converge(&h, &[&a]).await;
        assert_eq!(running(&h), vec![tasks[1].clone()]);
        h.advance(301.0);
        converge(&h, &[&a]).await;
        assert!(running(&h).is_empty());
    }

    #[tokio::test]
    async fn task_protection_refuses_bad_input_as_ecs() {
        let h = Harness::new();
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        let out = h
            .ok(
                "UpdateTaskProtection",
                json!({"cluster": "default", "tasks": [arns[0]], "protectionEnabled": true}),
            )
            .await;
        assert_eq!(
            out["failures"][0]["reason"], "TASK_NOT_VALID",
            "a standalone task"
        );
        for (input, code) in [
            (
                json!({"cluster": "nope", "tasks": [arns[0]], "protectionEnabled": true}),
                "ClusterNotFoundException",
            ),
            (
                json!({"cluster": "default", "tasks": [arns[0]], "protectionEnabled": true, "expiresInMinutes": 2881}),
                "InvalidParameterException",
            ),
            (
                json!({"cluster": "default", "tasks": [arns[0]], "protectionEnabled": true, "expiresInMinutes": 0}),
                "InvalidParameterException",
            ),
            (
                json!({"cluster": "default", "tasks": [], "protectionEnabled": true}),
                "InvalidParameterException",
            ),
            (
                json!({"cluster": "default", "tasks": [arns[0]]}),
                "InvalidParameterException",
            ),
        ] {
            let e = h.err("UpdateTaskProtection", input.clone()).await;
            assert_eq!(e.code, code, "{input}");
        }
        let e = h
            .err(
                "GetTaskProtection",
                json!({"cluster": "nope", "tasks": [arns[0]]}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
    }
}
