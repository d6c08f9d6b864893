//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks.
//!
//! RunTask places tasks through the launch layer inside the same store
//! mutation that writes them, so concurrent calls never overcommit an
//! instance. Handlers only write desired state; the agent of the chosen
//! instance runs the containers and reports what happened.

use std::sync::Arc;

use berth_model::shapes::ecs::{
    DescribeTasksRequest, DescribeTasksResponse, Failure, ListTasksRequest, ListTasksResponse,
    RunTaskRequest, RunTaskResponse, StartTaskRequest, StartTaskResponse, StopTaskRequest,
    StopTaskResponse, Tag, Task,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::error;
use crate::launch::capacity::{self, Capacity};
use crate::launch::ec2::place_on;
use crate::launch::request::prepare_launch;
use crate::launch::usage::{usage_of_instance, Usage};
use crate::launch::{place_batch, policy};
use crate::state::clusters::{self, resolve_name};
use crate::state::instances::{self, InstanceRecord, Presence};
use crate::state::keys::Scope;
use crate::state::network::TaskNetworks;
use crate::state::records::{decode, encode, fingerprint, load, load_each};
use crate::state::tasks::{request_stop, resolve_task_id, TaskRecord, TaskStatus};
use crate::state::{index, ledger, pagination, tags, task_definitions};
use std::collections::HashMap;

fn check_common(
    group: Option<&str>,
    started_by: Option<&str>,
    tags: &[Tag],
    propagate: Option<&str>,
) -> Result<(), AwsError> {
    if let Some(g) = group {
        let ok = !g.is_empty()
            && g.len() <= 255
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:./".contains(&b));
        if !ok {
            return Err(error::invalid_parameter(
                "group: up to 255 letters, numbers, hyphens, underscores, colons, periods and forward slashes are allowed.",
            ));
        }
    }
    if let Some(s) = started_by {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b));
        if !ok {
            return Err(error::invalid_parameter(
                "startedBy: up to 128 letters (uppercase and lowercase), numbers, hyphens, forward slashes and underscores are allowed.",
            ));
        }
    }
    tags::check_new(tags, std::iter::empty())?;
    match propagate {
        None | Some("TASK_DEFINITION" | "NONE") => Ok(()),
        Some("SERVICE") => Err(error::invalid_parameter(
            "propagateTags SERVICE is only valid for tasks started by a service.",
        )),
        Some(other) => Err(error::invalid_parameter(format!(
            "Invalid propagateTags '{other}'. Valid values: TASK_DEFINITION, SERVICE, NONE."
        ))),
    }
}

/// What a RunTask `clientToken` remembers: the call's answer, and a
/// fingerprint of the call (empty in records written before it was kept).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientTokenRecord {
    task_ids: Vec<String>,
    failures: Vec<Failure>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    request: String,
}

/// ECS's answer to a `clientToken` already used by another RunTask call.
fn token_conflict(cluster: &str, scope: &Scope, task_ids: &[String]) -> AwsError {
    let arns: Vec<String> = task_ids
        .iter()
        .map(|id| scope.arn(&format!("task/{cluster}/{id}")))
        .collect();
    AwsError::bad_request(
        "ConflictException",
        format!(
            "The clientToken is already in use with a different RunTask request. \
             Tasks associated with it: [{}]. Run RunTask with a unique clientToken, \
             or with the clientToken and the original set of parameters.",
            arns.join(", ")
        ),
    )
}

/// New tasks never start from an INACTIVE revision, however it is named
/// (services scaling an existing deployment still may, as on ECS).
fn require_active_definition(launch: &crate::launch::request::Launch) -> Result<(), AwsError> {
    if launch.definition.status.as_deref() == Some(task_definitions::ACTIVE) {
        Ok(())
    } else {
        Err(error::client("TaskDefinition is inactive"))
    }
}

/// Outcome of a placement mutation: tasks written and failures.
type Launched = (Vec<TaskRecord>, Vec<Failure>);

pub(crate) async fn run(
    store: &dyn Store,
    scope: &Scope,
    presence: &Arc<Presence>,
    networks: Option<&dyn TaskNetworks>,
    now: f64,
    input: RunTaskRequest,
) -> Result<RunTaskResponse, AwsError> {
    // The call as a clientToken remembers it (the token itself aside).
    let request = match input.client_token.as_deref() {
        Some(t) if !t.is_empty() => fingerprint(&RunTaskRequest {
            client_token: None,
            ..input.clone()
        }),
        _ => String::new(),
    };
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let count = input.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(error::invalid_parameter("count must be between 1 and 10."));
    }
    let task_definition = input
        .task_definition
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let (requested, network) = capacity::launch_request(
        networks,
        scope,
        input.launch_type.as_deref(),
        input.capacity_provider_strategy.as_deref(),
        input.network_configuration.as_ref(),
        "tasks",
    )?;
    let strategy_given = input
        .capacity_provider_strategy
        .clone()
        .filter(|s| !s.is_empty());
    let platform_version = input.platform_version.filter(|v| !v.is_empty());
    let request_policy = policy::policy(
        input.placement_constraints.as_deref().unwrap_or(&[]),
        input.placement_strategy.as_deref().unwrap_or(&[]),
    )?;
    let tags = input.tags.unwrap_or_default();
    check_common(
        input.group.as_deref(),
        input.started_by.as_deref(),
        &tags,
        input.propagate_tags.as_deref(),
    )?;
    let client_token = input.client_token.clone().filter(|t| !t.is_empty());
    if client_token
        .as_ref()
        .is_some_and(|t| t.len() > 64 || !t.bytes().all(|b| (33..=126).contains(&b)))
    {
        return Err(error::invalid_parameter(
            "clientToken: up to 64 characters in the range 33-126 are allowed.",
        ));
    }

    let overrides = input.overrides.unwrap_or_default();
    let scope_owned = scope.clone();
    let presence = presence.clone();
    let group = input.group;
    let started_by = input.started_by;
    let propagate = input.propagate_tags;
    let enable_exec = input.enable_execute_command.unwrap_or(false);
    let fargate_policy =
        !request_policy.constraints.is_empty() || !request_policy.strategies.is_empty();
    let (_, (tasks, failures)): (_, Launched) = store
        .update(move |view| {
            let scope = &scope_owned;
            let (cluster_record, _) = clusters::require_active(view, scope, &cluster)?;
            capacity::check_associated(
                strategy_given.as_deref(),
                cluster_record.capacity_providers.as_deref().unwrap_or(&[]),
            )?;
            let capacity = capacity::effective_capacity(
                requested.clone(),
                cluster_record
                    .default_capacity_provider_strategy
                    .as_deref()
                    .unwrap_or(&[]),
            )?;
            if fargate_policy && capacity != Capacity::Ec2 {
                return Err(error::invalid_parameter(
                    "Task placement constraints and strategies are not supported for tasks using Fargate capacity.",
                ));
            }
            if let Some(token) = &client_token {
                if let Some((previous, _)) =
                    load::<ClientTokenRecord>(view, &scope.task_client_token(&cluster, token))?
                {
                    if !previous.request.is_empty() && previous.request != request {
                        return Err(token_conflict(&cluster, scope, &previous.task_ids));
                    }
                    let mut tasks = Vec::new();
                    for id in &previous.task_ids {
                        if let Some((t, _)) = load::<TaskRecord>(view, &scope.task(&cluster, id))? {
                            tasks.push(t);
                        }
                    }
                    return Ok((Vec::new(), (tasks, previous.failures)));
                }
            }
            let launch = prepare_launch(
                view,
                scope,
                &cluster,
                &task_definition,
                overrides.clone(),
                group.clone(),
                started_by.clone(),
                tags.clone(),
                propagate.clone(),
                enable_exec,
                capacity,
                network.clone(),
                platform_version.as_deref(),
            )?;
            require_active_definition(&launch)?;
            let policy = policy::with_definition(&request_policy, &launch.definition)?;
            let (mut ops, tasks, failures) =
                place_batch(view, scope, &launch, count as usize, &presence, &policy, now)?;
            if let Some(token) = &client_token {
                let record = ClientTokenRecord {
                    task_ids: tasks.iter().map(|t| t.id.clone()).collect(),
                    failures: failures.clone(),
                    request: request.clone(),
                };
                ops.push(Op::put(
                    scope.task_client_token(&cluster, token),
                    encode(&record)?,
                ));
            }
            Ok::<_, AwsError>((ops, (tasks, failures)))
        })
        .await
        .map_err(error::store)??;
    Ok(RunTaskResponse {
        tasks: Some(tasks.into_iter().map(|t| present(t, true)).collect()),
        failures: Some(failures),
    })
}

pub(crate) async fn start(
    store: &dyn Store,
    scope: &Scope,
    presence: &Arc<Presence>,
    networks: Option<&dyn TaskNetworks>,
    now: f64,
    input: StartTaskRequest,
) -> Result<StartTaskResponse, AwsError> {
    let network = capacity::resolve_network(
        networks,
        &scope.account,
        &scope.region,
        input.network_configuration.as_ref(),
    )?;
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let targets = input
        .container_instances
        .filter(|c| !c.is_empty())
        .ok_or_else(|| error::missing("containerInstances"))?;
    if targets.len() > 10 {
        return Err(error::invalid_parameter(
            "StartTask accepts at most 10 container instances.",
        ));
    }
    let ids = targets
        .iter()
        .map(|t| instances::resolve_id(scope, &cluster, t))
        .collect::<Result<Vec<_>, _>>()?;
    let task_definition = input
        .task_definition
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let tags = input.tags.unwrap_or_default();
    check_common(
        input.group.as_deref(),
        input.started_by.as_deref(),
        &tags,
        input.propagate_tags.as_deref(),
    )?;
    let overrides = input.overrides.unwrap_or_default();
    let scope_owned = scope.clone();
    let presence = presence.clone();
    let group = input.group;
    let started_by = input.started_by;
    let propagate = input.propagate_tags;
    let enable_exec = input.enable_execute_command.unwrap_or(false);
    let (_, (tasks, failures)): (_, Launched) = store
        .update(move |view| {
            let scope = &scope_owned;
            clusters::require_active(view, scope, &cluster)?;
            let launch = prepare_launch(
                view,
                scope,
                &cluster,
                &task_definition,
                overrides.clone(),
                group.clone(),
                started_by.clone(),
                tags.clone(),
                propagate.clone(),
                enable_exec,
                Capacity::Ec2,
                network.clone(),
                None,
            )?;
            require_active_definition(&launch)?;
            // Each target's own tasks, read once (a target may be named twice).
            let mut usage: HashMap<String, Usage> = HashMap::new();
            let mut ops = Vec::new();
            let mut tasks = Vec::new();
            let mut failures = Vec::new();
            for (reference, id) in targets.iter().zip(&ids) {
                let Some((record, _)) =
                    load::<InstanceRecord>(view, &scope.instance(&cluster, id))?
                        .filter(|(r, _)| r.status() != instances::INACTIVE)
                else {
                    failures.push(Failure {
                        arn: Some(reference.clone()),
                        reason: Some("MISSING".into()),
                        detail: None,
                    });
                    continue;
                };
                if !usage.contains_key(id) {
                    usage.insert(id.clone(), usage_of_instance(view, scope, &cluster, id)?);
                }
                let u = usage.entry(id.clone()).or_default();
                match place_on(scope, &launch, &record, u, &presence, now)? {
                    Ok((new_ops, task)) => {
                        ops.extend(new_ops);
                        tasks.push(task);
                    }
                    Err(failure) => failures.push(failure),
                }
            }
            Ok::<_, AwsError>((ops, (tasks, failures)))
        })
        .await
        .map_err(error::store)??;
    Ok(StartTaskResponse {
        tasks: Some(tasks.into_iter().map(|t| present(t, true)).collect()),
        failures: Some(failures),
    })
}

pub(crate) async fn stop(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: StopTaskRequest,
) -> Result<StopTaskResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .task
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("task"))?;
    let id = resolve_task_id(scope, &cluster, &reference)?;
    let reason = input.reason.unwrap_or_default();
    if reason.len() > 1024 {
        return Err(error::invalid_parameter(
            "reason can be at most 1024 characters.",
        ));
    }
    let reason = if reason.is_empty() {
        "Task stopped by user".to_string()
    } else {
        reason
    };
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            let scope = &scope_owned;
            clusters::require_active(view, scope, &cluster)?;
            let key = scope.task(&cluster, &id);
            let (mut record, _) = load::<TaskRecord>(view, &key)?
                .ok_or_else(|| error::invalid_parameter("The referenced task was not found."))?;
            let agent_gone = match &record.instance_id {
                Some(instance) => {
                    load::<InstanceRecord>(view, &scope.instance(record.host_cluster(), instance))?
                        .is_none_or(|(r, _)| r.status() == instances::INACTIVE)
                }
                None => true,
            };
            let ops = if request_stop(&mut record, "UserInitiated", &reason, now, agent_gone) {
                let mut ops = index::put_task(scope, &record)?;
                ops.extend(ledger::ledger_op(scope, &record)?);
                ops
            } else {
                Vec::new()
            };
            Ok::<_, AwsError>((ops, record))
        })
        .await
        .map_err(error::store)??;
    Ok(StopTaskResponse {
        task: Some(present(record, true)),
    })
}

/// The task as the API shows it.
pub(crate) fn present(record: TaskRecord, include_tags: bool) -> Task {
    let mut task = record.task;
    if !include_tags {
        task.tags = None;
    }
    task
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeTasksRequest,
) -> Result<DescribeTasksResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let include_tags = error::include_tags(input.include)?;
    let refs = input
        .tasks
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("tasks"))?;
    if refs.len() > 100 {
        return Err(error::invalid_parameter(
            "tasks can name at most 100 tasks.",
        ));
    }
    clusters::require_active(view, scope, &cluster)?;
    let (found, missing) = load_each::<TaskRecord>(view, refs, |reference| {
        let id = resolve_task_id(scope, &cluster, reference).ok()?;
        Some(scope.task(&cluster, &id))
    })?;
    let failures = missing.into_iter().map(|reference| {
        error::missing_failure(scope, reference, |id| format!("task/{cluster}/{id}"))
    });
    Ok(DescribeTasksResponse {
        tasks: Some(
            found
                .into_iter()
                .map(|r| present(r, include_tags))
                .collect(),
        ),
        failures: Some(failures.collect()),
    })
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListTasksRequest,
) -> Result<ListTasksResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let desired = match input
        .desired_status
        .as_deref()
        .map(|s| (s, TaskStatus::parse(s)))
    {
        None => TaskStatus::Running,
        Some((_, Some(s @ (TaskStatus::Running | TaskStatus::Pending | TaskStatus::Stopped)))) => s,
        Some((other, _)) => {
            return Err(error::invalid_parameter(format!(
                "Invalid desiredStatus '{other}'. Valid values: RUNNING, PENDING, STOPPED."
            )))
        }
    };
    if input.family.is_some() && input.service_name.is_some() {
        return Err(error::invalid_parameter(
            "family and serviceName cannot both be given.",
        ));
    }
    let instance = input
        .container_instance
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| instances::resolve_id(scope, &cluster, c))
        .transpose()?;
    let launch_type = match input.launch_type.as_deref() {
        None => None,
        Some(l @ ("EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES")) => Some(l.to_string()),
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid launchType '{other}'. Valid values: EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES."
            )))
        }
    };
    let service_group = input.service_name.as_ref().map(|s| format!("service:{s}"));
    clusters::require_active(view, scope, &cluster)?;
    let wanted_status = |desired_status: TaskStatus, last_status: TaskStatus| match desired {
        TaskStatus::Pending => {
            desired_status == TaskStatus::Running && last_status != TaskStatus::Running
        }
        d => desired_status == d,
    };
    let wanted = |record: &TaskRecord| {
        let t = &record.task;
        wanted_status(record.desired_status(), record.last_status())
            && input
                .family
                .as_ref()
                .is_none_or(|f| record.definition.family.as_ref() == Some(f))
            && input
                .started_by
                .as_ref()
                .is_none_or(|s| t.started_by.as_ref() == Some(s))
            && service_group
                .as_ref()
                .is_none_or(|g| t.group.as_ref() == Some(g))
            && instance
                .as_ref()
                .is_none_or(|i| record.instance_id.as_ref() == Some(i))
            && launch_type
                .as_ref()
                .is_none_or(|l| t.launch_type.as_ref() == Some(l))
    };
    // The narrowest index that holds every task the call can list; each
    // is keyed by task id under its prefix, so page tokens (the last id)
    // read the same whichever one a call uses.
    let by_index = |prefix: String| {
        pagination::filtered_page(view, &prefix, input.next_token.as_deref(), limit, |kv| {
            let Some(id) = kv.key.rsplit('/').next() else {
                return Ok(None);
            };
            Ok(load::<TaskRecord>(view, &scope.task(&cluster, id))?
                .map(|(record, _)| record)
                .filter(|record| wanted(record))
                .map(|record| record.arn().to_string()))
        })
    };
    let (arns, next_token) = if let Some(instance) = &instance {
        // The instance's own entries (of this cluster's tasks).
        by_index(scope.instance_task(&cluster, instance, &cluster, ""))?
    } else if let Some(service) = &input.service_name {
        by_index(scope.service_tasks(&cluster, service))?
    } else if desired != TaskStatus::Stopped {
        // Live tasks: their entries say enough unless the call filters on
        // what only the record holds.
        let needs_record = input.family.is_some() || input.started_by.is_some();
        pagination::filtered_page(
            view,
            &scope.live_tasks(&cluster),
            input.next_token.as_deref(),
            limit,
            |kv| {
                let Some(id) = kv.key.rsplit('/').next() else {
                    return Ok(None);
                };
                let Some(live) = index::Live::parse(&kv.value) else {
                    return Ok(None);
                };
                let quick = wanted_status(live.desired, live.last)
                    && launch_type.as_deref().is_none_or(|l| l == live.launch_type);
                if !quick {
                    return Ok(None);
                }
                if !needs_record {
                    return Ok(Some(scope.arn(&format!("task/{cluster}/{id}"))));
                }
                Ok(load::<TaskRecord>(view, &scope.task(&cluster, id))?
                    .map(|(record, _)| record)
                    .filter(|record| wanted(record))
                    .map(|record| record.arn().to_string()))
            },
        )?
    } else {
        pagination::filtered_page(
            view,
            &scope.tasks(&cluster),
            input.next_token.as_deref(),
            limit,
            |kv| {
                let record: TaskRecord = decode(kv)?;
                Ok(wanted(&record).then(|| record.arn().to_string()))
            },
        )?
    };
    Ok(ListTasksResponse {
        task_arns: Some(arns),
        next_token,
    })
}

#[cfg(test)]
mod tests {
    //! RunTask, StartTask and StopTask through the handler, as a client
    //! calls them: placement sees every task not yet STOPPED from every
    //! earlier call (groups, custom resources, spread), and reads only the
    //! instance index, never every task of the cluster.

    use serde_json::json;

    use crate::state::index::Held;
    use crate::state::records::decoded;
    use crate::state::tasks::TaskRecord;
    use crate::test_support::{reasons, user, Harness, Spec};

    #[tokio::test]
    async fn distinct_instance_holds_across_separate_calls() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let run = json!({
            "taskDefinition": "web", "group": "cache",
            "placementConstraints": [{"type": "distinctInstance"}],
        });
        let (first, _) = h.run(run.clone()).await;
        let (second, _) = h.run(run.clone()).await;
        assert_eq!((first.len(), second.len()), (1, 1));
        let mut on = vec![h.instance_of(&first[0]), h.instance_of(&second[0])];
        on.sort();
        let mut both = vec![a.id.clone(), b.id.clone()];
        both.sort();
        assert_eq!(on, both, "the second call avoids the first task's instance");
        // A third finds both instances taken by the group.
        let (third, failures) = h.run(run).await;
        assert!(third.is_empty());
        assert_eq!(
            reasons(&failures),
            ["DistinctInstance placement constraint unsatisfied."; 2]
        );
        // Another group is free to go anywhere.
        let (other, _) = h
            .run(json!({"taskDefinition": "web", "group": "other",
                "placementConstraints": [{"type": "distinctInstance"}]}))
            .await;
        assert_eq!(other.len(), 1);
    }

    #[tokio::test]
    async fn member_of_task_group_sees_tasks_placed_by_earlier_calls() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        // A task of group `cache` on b, placed by StartTask.
        h.ok(
            "StartTask",
            json!({"taskDefinition": "web", "group": "cache", "containerInstances": [b.arn]}),
        )
        .await;
        for _ in 0..3 {
            let (near, _) = h
                .run(json!({"taskDefinition": "web", "placementConstraints": [
                    {"type": "memberOf", "expression": "task:group == cache"}]}))
                .await;
            assert_eq!(h.instance_of(&near[0]), b.id, "next to the cache");
            let (away, _) = h
                .run(json!({"taskDefinition": "web", "placementConstraints": [
                    {"type": "memberOf", "expression": "not(task:group == cache)"}]}))
                .await;
            assert_eq!(h.instance_of(&away[0]), a.id, "away from the cache");
        }
    }

    #[tokio::test]
    async fn spread_counts_tasks_of_earlier_calls() {
        let h = Harness::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(h.instance("default", Spec::default()).await.id);
        }
        h.task_definition("web", json!({})).await;
        let mut placed = Vec::new();
        for _ in 0..6 {
            let (arns, _) = h
                .run(json!({"taskDefinition": "web",
                    "placementStrategy": [{"type": "spread", "field": "instanceId"}]}))
                .await;
            placed.push(h.instance_of(&arns[0]));
        }
        for id in &ids {
            assert_eq!(placed.iter().filter(|p| *p == id).count(), 2, "{placed:?}");
        }
        // The default strategy (no strategy given) spreads the same way.
        let mut defaults = Vec::new();
        for _ in 0..3 {
            let (arns, _) = h
                .run(json!({"taskDefinition": "web", "group": "defaults"}))
                .await;
            defaults.push(h.instance_of(&arns[0]));
        }
        defaults.sort();
        defaults.dedup();
        assert_eq!(defaults.len(), 3, "one task of the group per instance");
    }

    #[tokio::test]
    async fn custom_resources_are_not_overcommitted_across_calls() {
        let h = Harness::new();
        let gpu = h
            .instance("default", Spec::default().resource("GPU", 2))
            .await;
        h.task_definition(
            "train",
            json!({"resourceRequirements": [{"type": "GPU", "value": "2"}]}),
        )
        .await;
        let (first, _) = h.run(json!({"taskDefinition": "train"})).await;
        assert_eq!(h.instance_of(&first[0]), gpu.id);
        let (second, failures) = h.run(json!({"taskDefinition": "train"})).await;
        assert!(second.is_empty());
        assert_eq!(reasons(&failures), ["RESOURCE:GPU"]);
        // StartTask on the same instance is refused the same way.
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "train", "containerInstances": [gpu.arn]}),
            )
            .await;
        assert_eq!(out["failures"][0]["reason"], "RESOURCE:GPU");
        // The instance shows what is left.
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [gpu.arn]}),
            )
            .await;
        let remaining = out["containerInstances"][0]["remainingResources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let left = remaining
            .iter()
            .find(|r| r["name"] == "GPU")
            .map(|r| r["integerValue"].clone());
        assert_eq!(left, Some(json!(0)));
        // Once the task is STOPPED its GPUs are free again.
        h.report(&gpu, &first[0], "STOPPED").await;
        let (third, _) = h.run(json!({"taskDefinition": "train"})).await;
        assert_eq!(third.len(), 1);
    }

    #[tokio::test]
    async fn fargate_placement_counts_earlier_tasks() {
        let h = Harness::new();
        let mut hosts = Vec::new();
        for _ in 0..2 {
            let spec = Spec::default().attribute("berth.capacity.fargate", "dedicated");
            hosts.push(h.instance("default", spec).await.id);
        }
        h.ok(
            "RegisterTaskDefinition",
            json!({"family": "fg", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        let run = json!({"taskDefinition": "fg", "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}});
        let mut on = Vec::new();
        for _ in 0..4 {
            let (arns, failures) = h.run(run.clone()).await;
            assert!(failures.is_empty(), "{failures:?}");
            on.push(h.instance_of(&arns[0]));
        }
        for host in &hosts {
            assert_eq!(on.iter().filter(|o| *o == host).count(), 2, "{on:?}");
        }
    }

    #[tokio::test]
    async fn a_stopped_task_frees_its_resources() {
        let h = Harness::new();
        let small = h
            .instance("default", Spec::default().size(1024, 1024))
            .await;
        h.task_definition("big", json!({"memory": 1024, "cpu": 512}))
            .await;
        let (first, _) = h.run(json!({"taskDefinition": "big"})).await;
        let (_, failures) = h.run(json!({"taskDefinition": "big"})).await;
        assert_eq!(reasons(&failures), ["RESOURCE:MEMORY"]);
        // StopTask asks; the resources stay taken until the agent says STOPPED.
        h.ok("StopTask", json!({"task": first[0]})).await;
        let (_, failures) = h.run(json!({"taskDefinition": "big"})).await;
        assert_eq!(reasons(&failures), ["RESOURCE:MEMORY"]);
        h.report(&small, &first[0], "STOPPED").await;
        let (again, failures) = h.run(json!({"taskDefinition": "big"})).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(h.instance_of(&again[0]), small.id);
    }

    #[tokio::test]
    async fn run_task_reads_the_index_not_the_cluster_tasks() {
        let h = Harness::new();
        let mut instances = Vec::new();
        for _ in 0..4 {
            instances.push(
                h.instance("default", Spec::default().size(100_000, 100_000))
                    .await,
            );
        }
        h.task_definition("web", json!({"cpu": 1, "memory": 8}))
            .await;
        for _ in 0..5 {
            h.run(json!({"taskDefinition": "web", "count": 10})).await;
        }
        // Ten of them are STOPPED: they hold nothing and are not decoded.
        let stopped: Vec<String> = crate::state::index::instance_tasks(
            h.store.as_ref(),
            &h.scope(),
            "default",
            &instances[0].id,
        )
        .unwrap()
        .into_iter()
        .take(10)
        .map(|t| t.arn().to_string())
        .collect();
        for arn in &stopped {
            h.report(&instances[0], arn, "STOPPED").await;
        }
        let (tasks, held) = (decoded::of::<TaskRecord>(), decoded::of::<Held>());
        let (arns, _) = h.run(json!({"taskDefinition": "web", "count": 1})).await;
        assert_eq!(arns.len(), 1);
        assert_eq!(decoded::of::<TaskRecord>() - tasks, 0, "no task is decoded");
        // At most the entries of the 40 live tasks, and only those not
        // decoded before in the form they are stored in now (a memo keeps
        // the others).
        let decoded_held = decoded::of::<Held>() - held;
        assert!(
            decoded_held <= 40,
            "only what the 40 live tasks hold: {decoded_held}"
        );
        let again = decoded::of::<Held>();
        h.run(json!({"taskDefinition": "web", "count": 1})).await;
        assert!(
            decoded::of::<Held>() - again <= 1,
            "an unchanged entry is not decoded again"
        );
    }

    #[tokio::test]
    async fn stop_task_and_client_tokens() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let run = json!({"taskDefinition": "web", "count": 2, "clientToken": "once"});
        let (first, _) = h.run(run.clone()).await;
        let (again, _) = h.run(run).await;
        assert_eq!(first, again, "the same clientToken answers the same tasks");
        let out = h
            .ok("StopTask", json!({"task": first[0], "reason": "bye"}))
            .await;
        assert_eq!(out["task"]["desiredStatus"], "STOPPED");
        assert_eq!(out["task"]["stoppedReason"], "bye");
        // The agent hears of it through its poll.
        let poll = h.poll(&a, 0, 0).await;
        let stopping = poll
            .tasks
            .iter()
            .find(|t| t.task_arn == first[0])
            .map(|t| t.desired_status.clone());
        assert_eq!(stopping.as_deref(), Some("STOPPED"));
        let e = h
            .ecs(
                "StopTask",
                json!({"task": "0123456789abcdef0123456789abcdef"}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        let id = first[1].rsplit('/').next().unwrap_or_default();
        let e = h
            .ecs("StopTask", json!({"cluster": "nope", "task": id}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "ClusterNotFoundException");
    }

    #[tokio::test]
    async fn callers_need_the_actions_on_the_cluster() {
        let h = Harness::new();
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let reader = user("reader", &["ecs:Describe*", "ecs:List*"]);
        let e = h
            .ecs_as(&reader, "RunTask", json!({"taskDefinition": "web"}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        assert!(e.message.contains("ecs:RunTask"), "{}", e.message);
        let listed = h.ecs_as(&reader, "ListTasks", json!({})).await.unwrap();
        assert_eq!(listed["taskArns"], json!([]), "refused calls write nothing");
        let runner = user("runner", &["ecs:RunTask"]);
        let out = h
            .ecs_as(&runner, "RunTask", json!({"taskDefinition": "web"}))
            .await
            .unwrap();
        assert_eq!(out["tasks"].as_array().map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn run_task_refuses_bad_input_before_touching_state() {
        let h = Harness::new();
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let cases = [
            (
                json!({"taskDefinition": "web", "count": 0}),
                "count must be between 1 and 10.",
            ),
            (
                json!({"taskDefinition": "web", "count": 11}),
                "count must be between 1 and 10.",
            ),
            (
                json!({"taskDefinition": ""}),
                "taskDefinition is required and cannot be empty.",
            ),
            (json!({}), "taskDefinition is required and cannot be empty."),
            (
                json!({"taskDefinition": "web", "group": "a b"}),
                "group: up to 255",
            ),
            (
                json!({"taskDefinition": "web", "startedBy": "x".repeat(129)}),
                "startedBy: up to 128",
            ),
            (
                json!({"taskDefinition": "web", "propagateTags": "SERVICE"}),
                "propagateTags SERVICE",
            ),
            (
                json!({"taskDefinition": "web", "clientToken": "x".repeat(65)}),
                "clientToken",
            ),
            (
                json!({"taskDefinition": "web", "clientToken": "with space"}),
                "clientToken",
            ),
            (
                json!({"taskDefinition": "web", "placementConstraints": [
                {"type": "memberOf", "expression": "attribute:color =="}]}),
                "",
            ),
            (
                json!({"taskDefinition": "web", "placementStrategy": [{"type": "fastest"}]}),
                "",
            ),
        ];
        for (input, message) in cases {
            let e = h.err("RunTask", input.clone()).await;
            assert_eq!(
                e.code, "InvalidParameterException",
                "{input}: {}",
                e.message
            );
            assert!(e.message.starts_with(message), "{input}: {}", e.message);
        }
        assert!(h.tasks("default").is_empty(), "nothing was written");
        let e = h
            .err(
                "RunTask",
                json!({"taskDefinition": "web", "cluster": "nope"}),
            )
            .await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            ("ClusterNotFoundException", "Cluster not found.")
        );
    }

    #[tokio::test]
    async fn run_task_needs_an_active_definition_and_instances() {
        let h = Harness::new();
        h.task_definition("web", json!({})).await;
        let e = h.err("RunTask", json!({"taskDefinition": "web"})).await;
        assert_eq!(e.code, "ClusterNotFoundException", "no default cluster yet");
        h.ok("CreateCluster", json!({})).await;
        let e = h.err("RunTask", json!({"taskDefinition": "web"})).await;
        assert_eq!(e.code, "InvalidParameterException");
        assert_eq!(
            e.message,
            "No Container Instances were found in your cluster."
        );
        h.instance("default", Spec::default()).await;
        let e = h.err("RunTask", json!({"taskDefinition": "nothing"})).await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            ("InvalidParameterException", "TaskDefinition not found.")
        );
        let e = h.err("RunTask", json!({"taskDefinition": "web:7"})).await;
        assert_eq!(e.code, "InvalidParameterException");
        // A deregistered revision runs no new task: a family has no ACTIVE
        // revision left, and the revision itself is inactive.
        h.ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "web:1"}),
        )
        .await;
        let e = h.err("RunTask", json!({"taskDefinition": "web"})).await;
        assert_eq!(e.code, "InvalidParameterException");
        let e = h.err("RunTask", json!({"taskDefinition": "web:1"})).await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            ("ClientException", "TaskDefinition is inactive")
        );
        let out = h
            .ecs(
                "StartTask",
                json!({"taskDefinition": "web:1", "containerInstances": ["x"]}),
            )
            .await;
        assert!(out.is_err());
        assert!(h.tasks("default").is_empty());
    }

    #[tokio::test]
    async fn a_client_token_answers_the_same_call_and_refuses_another() {
        let h = Harness::new();
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.task_definition("other", json!({})).await;
        let call = json!({"taskDefinition": "web", "count": 2, "clientToken": "abc-123"});
        let (first, _) = h.run(call.clone()).await;
        let (again, _) = h.run(call.clone()).await;
        assert_eq!(first, again);
        assert_eq!(h.tasks("default").len(), 2, "no task started twice");
        for different in [
            json!({"taskDefinition": "web", "count": 3, "clientToken": "abc-123"}),
            json!({"taskDefinition": "other", "count": 2, "clientToken": "abc-123"}),
            json!({"taskDefinition": "web", "count": 2, "clientToken": "abc-123", "group": "g"}),
        ] {
            let e = h.err("RunTask", different.clone()).await;
            assert_eq!(e.code, "ConflictException", "{different}");
            for arn in &first {
                assert!(e.message.contains(arn.as_str()), "{}", e.message);
            }
        }
        assert_eq!(h.tasks("default").len(), 2);
        // Tokens are case sensitive: another token is another call.
        let (other, _) = h
            .run(json!({"taskDefinition": "web", "count": 2, "clientToken": "ABC-123"}))
            .await;
        assert_eq!(other.len(), 2);
        assert!(other.iter().all(|a| !first.contains(a)));
    }

    #[tokio::test]
    async fn a_client_token_replays_failures_too() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default().size(1024, 512)).await;
        h.task_definition("big", json!({"memory": 1024})).await;
        let call = json!({"taskDefinition": "big", "clientToken": "t1"});
        let (placed, failures) = h.run(call.clone()).await;
        assert!(placed.is_empty());
        assert_eq!(reasons(&failures), ["RESOURCE:MEMORY"]);
        assert_eq!(failures[0]["arn"], a.arn.as_str());
        // The answer is the one given, even once the call would fit.
        h.ok(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [a.arn], "status": "DRAINING"}),
        )
        .await;
        let (placed, failures) = h.run(call).await;
        assert!(placed.is_empty());
        assert_eq!(reasons(&failures), ["RESOURCE:MEMORY"]);
    }

    #[tokio::test]
    async fn placement_failures_name_every_instance_with_its_reason() {
        let h = Harness::new();
        let small = h.instance("default", Spec::default().size(256, 4096)).await;
        let tiny = h.instance("default", Spec::default().size(4096, 128)).await;
        h.task_definition("web", json!({"cpu": 512, "memory": 256}))
            .await;
        let (placed, failures) = h.run(json!({"taskDefinition": "web", "count": 3})).await;
        assert!(placed.is_empty());
        let mut got: Vec<(String, String)> = failures
            .iter()
            .map(|f| {
                assert_eq!(
                    f.as_object().map(|o| o.len()),
                    Some(2),
                    "arn and reason: {f}"
                );
                (
                    f["arn"].as_str().unwrap_or("").to_string(),
                    f["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        got.sort();
        let mut want = vec![
            (small.arn.clone(), "RESOURCE:CPU".to_string()),
            (tiny.arn.clone(), "RESOURCE:MEMORY".to_string()),
        ];
        want.sort();
        assert_eq!(
            got, want,
            "one failure per instance and reason, however many tasks"
        );
        // Part of a batch fits: the tasks that fit are placed, the rest fail.
        let roomy = h
            .instance("default", Spec::default().size(1024, 1024))
            .await;
        let (placed, failures) = h.run(json!({"taskDefinition": "web", "count": 3})).await;
        assert_eq!(placed.len(), 2);
        assert!(placed.iter().all(|arn| h.instance_of(arn) == roomy.id));
        assert!(
            reasons(&failures).contains(&"RESOURCE:CPU".to_string()),
            "{failures:?}"
        );
    }

    #[tokio::test]
    async fn host_ports_are_held_across_calls() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition(
            "web",
            json!({"portMappings": [{"containerPort": 80, "hostPort": 8080}]}),
        )
        .await;
        let (first, _) = h.run(json!({"taskDefinition": "web"})).await;
        assert_eq!(first.len(), 1);
        let (second, failures) = h.run(json!({"taskDefinition": "web"})).await;
        assert!(second.is_empty());
        assert_eq!(reasons(&failures), ["RESOURCE:PORTS"]);
        // Reserved ports count too (22 is reserved by default).
        h.task_definition(
            "ssh",
            json!({"portMappings": [{"containerPort": 22, "hostPort": 22}]}),
        )
        .await;
        let (_, failures) = h.run(json!({"taskDefinition": "ssh"})).await;
        assert_eq!(reasons(&failures), ["RESOURCE:PORTS"]);
        // Dynamic host ports (0) never conflict.
        h.task_definition(
            "dyn",
            json!({"portMappings": [{"containerPort": 80, "hostPort": 0}]}),
        )
        .await;
        let (many, _) = h.run(json!({"taskDefinition": "dyn", "count": 3})).await;
        assert_eq!(many.len(), 3);
        h.report(&a, &first[0], "STOPPED").await;
        let (third, _) = h.run(json!({"taskDefinition": "web"})).await;
        assert_eq!(third.len(), 1, "the port is free once its task STOPPED");
    }

    #[tokio::test]
    async fn an_instance_whose_agent_went_quiet_fails_with_agent() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.silence(&a);
        h.advance(30.0);
        assert_eq!(
            h.run(json!({"taskDefinition": "web"})).await.0.len(),
            1,
            "still within the timeout"
        );
        h.advance(20.0);
        let (placed, failures) = h.run(json!({"taskDefinition": "web"})).await;
        assert!(placed.is_empty());
        assert_eq!(reasons(&failures), ["AGENT"]);
        assert_eq!(failures[0]["arn"], a.arn.as_str());
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [a.arn]}),
            )
            .await;
        assert_eq!(out["containerInstances"][0]["agentConnected"], false);
        // The agent polls again: it takes tasks again.
        h.poll(&a, 0, 0).await;
        assert_eq!(h.run(json!({"taskDefinition": "web"})).await.0.len(), 1);
    }

    #[tokio::test]
    async fn draining_instances_take_no_new_tasks() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [a.arn], "status": "DRAINING"}),
        )
        .await;
        let (placed, _) = h.run(json!({"taskDefinition": "web", "count": 4})).await;
        assert_eq!(placed.len(), 4);
        assert!(placed.iter().all(|arn| h.instance_of(arn) == b.id));
        h.ok(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [b.arn], "status": "DRAINING"}),
        )
        .await;
        let (placed, failures) = h.run(json!({"taskDefinition": "web"})).await;
        assert!(placed.is_empty());
        assert_eq!(failures.len(), 2, "{failures:?}");
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": [a.arn]}),
            )
            .await;
        assert_eq!(out["failures"].as_array().map(Vec::len), Some(1));
        // Active again: placement resumes.
        h.ok(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [a.arn], "status": "ACTIVE"}),
        )
        .await;
        let (placed, _) = h.run(json!({"taskDefinition": "web"})).await;
        assert_eq!(h.instance_of(&placed[0]), a.id);
    }

    #[tokio::test]
    async fn member_of_attribute_constraints() {
        let h = Harness::new();
        let red = h
            .instance("default", Spec::default().attribute("color", "red"))
            .await;
        let blue = h
            .instance("default", Spec::default().attribute("color", "blue"))
            .await;
        h.task_definition("web", json!({})).await;
        for _ in 0..3 {
            let (placed, _) = h
                .run(json!({"taskDefinition": "web", "placementConstraints": [
                    {"type": "memberOf", "expression": "attribute:color == red"}]}))
                .await;
            assert_eq!(h.instance_of(&placed[0]), red.id);
        }
        let (placed, _) = h
            .run(json!({"taskDefinition": "web", "placementConstraints": [
                {"type": "memberOf", "expression": "attribute:color in [blue, green]"}]}))
            .await;
        assert_eq!(h.instance_of(&placed[0]), blue.id);
        let (placed, failures) = h
            .run(json!({"taskDefinition": "web", "placementConstraints": [
                {"type": "memberOf", "expression": "attribute:color == green"}]}))
            .await;
        assert!(placed.is_empty());
        assert_eq!(
            reasons(&failures),
            ["MemberOf placement constraint unsatisfied."; 2]
        );
        // The definition's own constraints apply as well as the call's.
        h.ok(
            "RegisterTaskDefinition",
            json!({"family": "blue-only", "placementConstraints": [
                    {"type": "memberOf", "expression": "attribute:color == blue"}],
                "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64}]}),
        )
        .await;
        let (placed, _) = h
            .run(json!({"taskDefinition": "blue-only", "count": 3}))
            .await;
        assert!(placed.iter().all(|arn| h.instance_of(arn) == blue.id));
        let (placed, failures) = h
            .run(
                json!({"taskDefinition": "blue-only", "placementConstraints": [
                {"type": "memberOf", "expression": "attribute:color == red"}]}),
            )
            .await;
        assert!(placed.is_empty());
        assert_eq!(failures.len(), 2);
    }

    #[tokio::test]
    async fn start_task_places_on_the_named_instances_only() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default().size(4096, 512)).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": [a.arn, a.id, b.arn],
                    "startedBy": "me"}),
            )
            .await;
        let placed: Vec<String> = out["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
            .collect();
        assert_eq!(placed.len(), 3, "an instance named twice takes two tasks");
        let on: Vec<String> = placed.iter().map(|t| h.instance_of(t)).collect();
        assert_eq!(on, [a.id.clone(), a.id.clone(), b.id.clone()]);
        assert_eq!(out["tasks"][0]["startedBy"], "me");
        assert_eq!(out["tasks"][0]["containerInstanceArn"], a.arn.as_str());
        // a is full now (512 MiB, two tasks of 256).
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": [a.arn]}),
            )
            .await;
        assert_eq!(out["failures"][0]["reason"], "RESOURCE:MEMORY");
        assert_eq!(out["failures"][0]["arn"], a.arn.as_str());
        // Unknown and deregistered instances are MISSING.
        let gone = h.instance("default", Spec::default()).await;
        h.ok(
            "DeregisterContainerInstance",
            json!({"containerInstance": gone.arn}),
        )
        .await;
        let unknown = "0123456789abcdef0123456789abcdef";
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": [gone.arn, unknown]}),
            )
            .await;
        assert_eq!(
            reasons(out["failures"].as_array().unwrap()),
            ["MISSING", "MISSING"]
        );
        assert_eq!(out["failures"][0]["arn"], gone.arn.as_str());
        assert_eq!(out["failures"][1]["arn"], unknown);
        let e = h
            .err(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": []}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let many: Vec<String> = (0..11).map(|_| b.arn.clone()).collect();
        let e = h
            .err(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": many}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let e = h
            .err(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": [b.id],
                "cluster": "nope"}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
    }

    #[tokio::test]
    async fn stop_task_asks_and_the_agent_stops() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        h.report(&a, &arns[0], "RUNNING").await;
        h.advance(5.0);
        let out = h.ok("StopTask", json!({"task": arns[0]})).await;
        let task = &out["task"];
        assert_eq!(task["desiredStatus"], "STOPPED");
        assert_eq!(
            task["lastStatus"], "RUNNING",
            "the agent has not stopped it yet"
        );
        assert_eq!(task["stopCode"], "UserInitiated");
        assert_eq!(task["stoppedReason"], "Task stopped by user");
        assert_eq!(task["stoppingAt"], json!(h.now()));
        assert!(task.get("stoppedAt").is_none());
        let version = task["version"].clone();
        // Asking again changes nothing.
        h.advance(1.0);
        let out = h
            .ok("StopTask", json!({"task": arns[0], "reason": "again"}))
            .await;
        assert_eq!(out["task"]["version"], version);
        assert_eq!(out["task"]["stoppedReason"], "Task stopped by user");
        // The agent stops it.
        h.report(&a, &arns[0], "DEPROVISIONING").await;
        h.advance(2.0);
        h.report(&a, &arns[0], "STOPPED").await;
        let out = h.ok("DescribeTasks", json!({"tasks": [arns[0]]})).await;
        let task = &out["tasks"][0];
        assert_eq!(task["lastStatus"], "STOPPED");
        assert_eq!(task["stoppedAt"], json!(h.now()));
        assert_eq!(task["stopCode"], "UserInitiated");
        // StopTask on a STOPPED task answers it as it is.
        let out = h.ok("StopTask", json!({"task": arns[0]})).await;
        assert_eq!(out["task"]["lastStatus"], "STOPPED");
        let e = h
            .err(
                "StopTask",
                json!({"task": arns[0], "reason": "x".repeat(1025)}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let e = h.err("StopTask", json!({})).await;
        assert_eq!(e.code, "InvalidParameterException");
    }

    #[tokio::test]
    async fn stop_task_on_a_deregistered_instance_stops_at_once() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        h.report(&a, &arns[0], "RUNNING").await;
        h.ok(
            "DeregisterContainerInstance",
            json!({"containerInstance": a.arn, "force": true}),
        )
        .await;
        let out = h
            .ok("StopTask", json!({"task": arns[0], "reason": "host gone"}))
            .await;
        assert_eq!(
            out["task"]["lastStatus"], "STOPPED",
            "no agent will report it"
        );
        assert_eq!(out["task"]["stoppedReason"], "host gone");
        assert_eq!(out["task"]["stoppedAt"], json!(h.now()));
        assert!(out["task"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["lastStatus"] == "STOPPED"));
    }

    #[tokio::test]
    async fn describe_tasks_reports_missing_ones_and_tags_on_request() {
        let h = Harness::new();
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h
            .run(json!({"taskDefinition": "web", "tags": [{"key": "team", "value": "a"}]}))
            .await;
        let id = arns[0].rsplit('/').next().unwrap_or_default().to_string();
        let missing = "0123456789abcdef0123456789abcdef";
        let out = h.ok("DescribeTasks", json!({"tasks": [id, missing]})).await;
        assert_eq!(out["tasks"][0]["taskArn"], arns[0].as_str());
        assert!(
            out["tasks"][0].get("tags").is_none(),
            "tags only when asked for"
        );
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        assert_eq!(
            out["failures"][0]["arn"],
            h.scope().arn(&format!("task/default/{missing}"))
        );
        let out = h
            .ok(
                "DescribeTasks",
                json!({"tasks": [arns[0]], "include": ["TAGS"]}),
            )
            .await;
        assert_eq!(
            out["tasks"][0]["tags"],
            json!([{"key": "team", "value": "a"}])
        );
        let e = h
            .err(
                "DescribeTasks",
                json!({"tasks": [arns[0]], "include": ["EVERYTHING"]}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let many: Vec<&str> = (0..101).map(|_| missing).collect();
        let e = h.err("DescribeTasks", json!({"tasks": many})).await;
        assert_eq!(e.code, "InvalidParameterException");
        let e = h
            .err(
                "DescribeTasks",
                json!({"tasks": [missing], "cluster": "nope"}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
    }

    #[tokio::test]
    async fn list_tasks_filters_and_pages() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({"memory": 64})).await;
        h.task_definition("batch", json!({"memory": 64})).await;
        let (web, _) = h
            .run(json!({"taskDefinition": "web", "count": 4, "startedBy": "ci"}))
            .await;
        let (batch, _) = h.run(json!({"taskDefinition": "batch", "count": 2})).await;
        let list = |input: serde_json::Value| {
            let h = &h;
            async move {
                let out = h.ok("ListTasks", input).await;
                let mut arns: Vec<String> = out["taskArns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                arns.sort();
                arns
            }
        };
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert_eq!(list(json!({})).await.len(), 6);
        assert_eq!(list(json!({"family": "web"})).await, sorted(&web));
        assert_eq!(list(json!({"startedBy": "ci"})).await, sorted(&web));
        assert_eq!(list(json!({"launchType": "EC2"})).await.len(), 6);
        assert!(list(json!({"launchType": "FARGATE"})).await.is_empty());
        let on_a = list(json!({"containerInstance": a.arn})).await;
        let on_b = list(json!({"containerInstance": b.id})).await;
        assert_eq!(on_a.len() + on_b.len(), 6);
        // One RUNNING, one STOPPED: PENDING lists those not yet running.
        let instance_of = |arn: &str| if h.instance_of(arn) == a.id { &a } else { &b };
        h.report(instance_of(&batch[0]), &batch[0], "RUNNING").await;
        h.report(instance_of(&batch[1]), &batch[1], "STOPPED").await;
        assert_eq!(
            list(json!({"desiredStatus": "STOPPED"})).await,
            vec![batch[1].clone()]
        );
        assert_eq!(
            list(json!({"desiredStatus": "PENDING"})).await,
            sorted(&web)
        );
        assert_eq!(list(json!({})).await.len(), 5);
        // Pages of two, stable: every task once.
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut input = json!({"maxResults": 2});
            if let Some(t) = &token {
                input["nextToken"] = json!(t);
            }
            let out = h.ok("ListTasks", input).await;
            let page = out["taskArns"].as_array().cloned().unwrap_or_default();
            assert!(page.len() <= 2);
            seen.extend(
                page.into_iter()
                    .filter_map(|a| a.as_str().map(str::to_string)),
            );
            match out["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, list(json!({})).await);
        for bad in [
            json!({"desiredStatus": "RUNNINGISH"}),
            json!({"family": "web", "serviceName": "svc"}),
            json!({"launchType": "SPACESHIP"}),
            json!({"maxResults": 0}),
            json!({"nextToken": "garbage"}),
        ] {
            let e = h.err("ListTasks", bad.clone()).await;
            assert_eq!(e.code, "InvalidParameterException", "{bad}");
        }
    }
}
