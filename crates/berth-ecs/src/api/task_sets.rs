//! Task sets (CreateTaskSet, DescribeTaskSets, UpdateTaskSet, DeleteTaskSet,
//! UpdateServicePrimaryTaskSet) of services with the EXTERNAL deployment
//! controller. Each runs `computedDesiredCount` tasks (its scale's share of
//! the service's desired count, rounded up) of its own task definition,
//! launch type and network configuration; the service controller starts
//! and stops them.

use berth_model::shapes::ecs::{
    CreateTaskSetRequest, CreateTaskSetResponse, DeleteTaskSetRequest, DeleteTaskSetResponse,
    DescribeTaskSetsRequest, DescribeTaskSetsResponse, Failure, Service, TaskSet,
    UpdateServicePrimaryTaskSetRequest, UpdateServicePrimaryTaskSetResponse, UpdateTaskSetRequest,
    UpdateTaskSetResponse,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::launch::capacity::{self, Capacity};
use crate::state::clusters::{self, resolve_name};
use crate::state::keys::Scope;
use crate::state::network::TaskNetworks;
use crate::state::records::{encode, load};
use crate::state::services::{resolve_service, service_not_found, ServiceRecord, ACTIVE};
use crate::state::task_sets::{
    self, check_scale, computed_desired, ACTIVE as SET_ACTIVE, DRAINING, PRIMARY, STABILIZING,
    STEADY_STATE,
};
use crate::state::{tags, task_definitions};

fn service_not_active() -> AwsError {
    AwsError::bad_request("ServiceNotActiveException", "Service was not ACTIVE.")
}

fn not_external() -> AwsError {
    error::invalid_parameter(
        "Amazon ECS only supports task set management on services configured to use external deployment controllers.",
    )
}

/// The cluster and service names a request names.
fn names(
    scope: &Scope,
    cluster: Option<&str>,
    service: Option<&str>,
) -> Result<(String, String), AwsError> {
    let cluster = resolve_name(scope, cluster)?;
    let reference = service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error::missing("service"))?;
    let name = resolve_service(scope, &cluster, reference)?;
    Ok((cluster, name))
}

/// The ACTIVE EXTERNAL service a task set call concerns.
fn external_service(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    name: &str,
) -> Result<ServiceRecord, AwsError> {
    clusters::require_active(view, scope, cluster)?;
    let (record, _) = load::<ServiceRecord>(view, &scope.service(cluster, name))?
        .ok_or_else(service_not_found)?;
    if record.status() != ACTIVE {
        return Err(service_not_active());
    }
    if !record.is_external() {
        return Err(not_external());
    }
    Ok(record)
}

fn present(mut set: TaskSet, include_tags: bool) -> TaskSet {
    if !include_tags {
        set.tags = None;
    }
    set
}

fn write(scope: &Scope, record: &ServiceRecord) -> Result<Op, AwsError> {
    Ok(Op::put(
        scope.service(&record.cluster, &record.name),
        encode(record)?,
    ))
}

pub(crate) async fn create(
    store: &dyn Store,
    scope: &Scope,
    networks: Option<&dyn TaskNetworks>,
    now: f64,
    input: CreateTaskSetRequest,
) -> Result<CreateTaskSetResponse, AwsError> {
    let (cluster, name) = names(scope, input.cluster.as_deref(), input.service.as_deref())?;
    let definition = input
        .task_definition
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let scale = check_scale(input.scale.clone())?;
    if input.load_balancers.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(AwsError::bad_request(
            "UnsupportedFeatureException",
            "Berth registers the tasks of a service's loadBalancers, not a task set's: set them on the service, or use the ECS or CODE_DEPLOY deployment controller.",
        ));
    }
    if input
        .service_registries
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return Err(AwsError::bad_request(
            "UnsupportedFeatureException",
            "Berth registers the tasks of a service's serviceRegistries, not a task set's: set them on the service.",
        ));
    }
    if input.external_id.as_ref().is_some_and(|e| e.len() > 255) {
        return Err(error::invalid_parameter(
            "externalId can be at most 255 characters.",
        ));
    }
    let client_token = input.client_token.clone().filter(|t| !t.is_empty());
    if client_token.as_ref().is_some_and(|t| t.len() > 36) {
        return Err(error::invalid_parameter(
            "clientToken: up to 36 ASCII characters are allowed.",
        ));
    }
    let tags = input.tags.clone().unwrap_or_default();
    tags::check_new(&tags, std::iter::empty())?;
    let (requested, network) = capacity::launch_request(
        networks,
        scope,
        input.launch_type.as_deref(),
        input.capacity_provider_strategy.as_deref(),
        input.network_configuration.as_ref(),
        "task sets",
    )?;
    let strategy_given = input
        .capacity_provider_strategy
        .clone()
        .filter(|s| !s.is_empty());
    let platform_version = input.platform_version.clone().filter(|v| !v.is_empty());
    let scope_owned = scope.clone();
    let (_, set) = store
        .update(move |view| {
            let scope = &scope_owned;
            let mut record = external_service(view, scope, &cluster, &name)?;
            if let Some(id) = client_token
                .as_ref()
                .and_then(|t| record.task_set_tokens.get(t))
            {
                if let Some(i) = task_sets::position(&record, id) {
                    let existing = record.service.task_sets.as_deref().unwrap_or(&[])[i].clone();
                    return Ok((Vec::new(), existing));
                }
            }
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
            let parsed = task_definitions::parse_reference(scope, &definition)?;
            let td = task_definitions::find(view, scope, &parsed)?
                .map(|(r, _)| r.task_definition)
                .ok_or_else(|| error::invalid_parameter("TaskDefinition not found."))?;
            if td.status.as_deref() != Some(task_definitions::ACTIVE) {
                return Err(error::invalid_parameter("TaskDefinition is inactive."));
            }
            capacity::check_definition(
                &td,
                &Default::default(),
                &capacity,
                network.as_ref(),
                platform_version.as_deref(),
            )?;
            let id = task_sets::new_id();
            let (launch_type, strategy) = match (&input.launch_type, &capacity) {
                (Some(l), _) => (Some(l.clone()), None),
                (None, Capacity::Ec2) if strategy_given.is_some() => (None, strategy_given.clone()),
                (None, Capacity::Ec2) => (Some("EC2".to_string()), None),
                (None, Capacity::Fargate(items)) => (None, Some(capacity::strategy_shape(items))),
            };
            let computed =
                computed_desired(record.service.desired_count.unwrap_or(0), Some(&scale));
            let fargate = capacity != Capacity::Ec2;
            let set = TaskSet {
                id: Some(id.clone()),
                task_set_arn: Some(task_sets::arn(scope, &cluster, &name, &id)),
                service_arn: Some(record.arn().to_string()),
                cluster_arn: Some(scope.arn(&format!("cluster/{cluster}"))),
                started_by: None,
                external_id: input.external_id.clone().filter(|e| !e.is_empty()),
                status: Some(SET_ACTIVE.into()),
                task_definition: td.task_definition_arn.clone(),
                computed_desired_count: Some(computed),
                pending_count: Some(0),
                running_count: Some(0),
                created_at: Some(now),
                updated_at: Some(now),
                launch_type,
                capacity_provider_strategy: strategy,
                platform_version: fargate
                    .then(|| platform_version.clone().unwrap_or_else(|| "LATEST".into())),
                platform_family: fargate.then(|| "Linux".into()),
                network_configuration: input.network_configuration.clone(),
                load_balancers: Some(Vec::new()),
                service_registries: Some(Vec::new()),
                scale: Some(scale.clone()),
                stability_status: Some(
                    if computed == 0 {
                        STEADY_STATE
                    } else {
                        STABILIZING
                    }
                    .into(),
                ),
                stability_status_at: Some(now),
                tags: Some(tags.clone()),
                fargate_ephemeral_storage: None,
            };
            record
                .service
                .task_sets
                .get_or_insert_with(Vec::new)
                .push(set.clone());
            if let Some(n) = &network {
                record.task_set_networks.insert(id.clone(), n.clone());
            }
            if let Some(t) = &client_token {
                record.task_set_tokens.insert(t.clone(), id.clone());
            }
            record.steady = false;
            Ok::<_, AwsError>((vec![write(scope, &record)?], set))
        })
        .await
        .map_err(error::store)??;
    Ok(CreateTaskSetResponse {
        task_set: Some(present(set, true)),
    })
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeTaskSetsRequest,
) -> Result<DescribeTaskSetsResponse, AwsError> {
    let (cluster, name) = names(scope, input.cluster.as_deref(), input.service.as_deref())?;
    let include_tags = error::include_tags(input.include)?;
    let record = external_service(view, scope, &cluster, &name)?;
    let sets = record.service.task_sets.clone().unwrap_or_default();
    let mut found = Vec::new();
    let mut failures = Vec::new();
    match input.task_sets.filter(|r| !r.is_empty()) {
        None => found = sets,
        Some(references) => {
            for reference in references {
                let id = task_sets::id_of(&reference);
                match sets.iter().find(|s| s.id.as_deref() == Some(id.as_str())) {
                    Some(s) => found.push(s.clone()),
                    None => failures.push(Failure {
                        arn: Some(reference),
                        reason: Some("MISSING".into()),
                        detail: None,
                    }),
                }
            }
        }
    }
    Ok(DescribeTaskSetsResponse {
        task_sets: Some(
            found
                .into_iter()
                .map(|s| present(s, include_tags))
                .collect(),
        ),
        failures: Some(failures),
    })
}

/// Changes one task set of an EXTERNAL service inside one mutation.
async fn change(
    store: &dyn Store,
    scope: &Scope,
    cluster: Option<&str>,
    service: Option<&str>,
    reference: Option<&str>,
    what: &'static str,
    apply: impl Fn(&mut ServiceRecord, usize) -> Result<(), AwsError> + Send + 'static,
) -> Result<TaskSet, AwsError> {
    let (cluster, name) = names(scope, cluster, service)?;
    let reference = reference
        .filter(|r| !r.is_empty())
        .ok_or_else(|| error::missing(what))?
        .to_string();
    let scope_owned = scope.clone();
    let (_, set) = store
        .update(move |view| {
            let scope = &scope_owned;
            let mut record = external_service(view, scope, &cluster, &name)?;
            let i = task_sets::position(&record, &reference).ok_or_else(task_sets::not_found)?;
            apply(&mut record, i)?;
            record.steady = false;
            let set = record.service.task_sets.as_deref().unwrap_or(&[])[i].clone();
            Ok::<_, AwsError>((vec![write(scope, &record)?], set))
        })
        .await
        .map_err(error::store)??;
    Ok(set)
}

fn set_at(record: &mut ServiceRecord, i: usize) -> Result<&mut TaskSet, AwsError> {
    record
        .service
        .task_sets
        .as_mut()
        .and_then(|s| s.get_mut(i))
        .ok_or_else(task_sets::not_found)
}

pub(crate) async fn update(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: UpdateTaskSetRequest,
) -> Result<UpdateTaskSetResponse, AwsError> {
    if input.scale.is_none() {
        return Err(error::missing("scale"));
    }
    let scale = check_scale(input.scale)?;
    let set = change(
        store,
        scope,
        input.cluster.as_deref(),
        input.service.as_deref(),
        input.task_set.as_deref(),
        "taskSet",
        move |record, i| {
            let desired = record.service.desired_count.unwrap_or(0);
            let set = set_at(record, i)?;
            if set.status.as_deref() == Some(DRAINING) {
                return Err(error::invalid_parameter(
                    "The task set is being deleted (DRAINING) and cannot be scaled.",
                ));
            }
            let computed = computed_desired(desired, Some(&scale));
            set.scale = Some(scale.clone());
            set.updated_at = Some(now);
            if set.computed_desired_count != Some(computed) {
                set.computed_desired_count = Some(computed);
                set.stability_status = Some(STABILIZING.into());
                set.stability_status_at = Some(now);
            }
            Ok(())
        },
    )
    .await?;
    Ok(UpdateTaskSetResponse {
        task_set: Some(present(set, true)),
    })
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: DeleteTaskSetRequest,
) -> Result<DeleteTaskSetResponse, AwsError> {
    let force = input.force.unwrap_or(false);
    let set = change(
        store,
        scope,
        input.cluster.as_deref(),
        input.service.as_deref(),
        input.task_set.as_deref(),
        "taskSet",
        move |record, i| {
            let set = set_at(record, i)?;
            if set.status.as_deref() == Some(PRIMARY) && !force {
                return Err(error::invalid_parameter(
                    "Cannot delete the primary task set of a service unless force is set.",
                ));
            }
            if set.status.as_deref() != Some(DRAINING) {
                set.status = Some(DRAINING.into());
                set.computed_desired_count = Some(0);
                set.updated_at = Some(now);
                set.stability_status = Some(STABILIZING.into());
                set.stability_status_at = Some(now);
            }
            Ok(())
        },
    )
    .await?;
    Ok(DeleteTaskSetResponse {
        task_set: Some(present(set, true)),
    })
}

pub(crate) async fn update_primary(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: UpdateServicePrimaryTaskSetRequest,
) -> Result<UpdateServicePrimaryTaskSetResponse, AwsError> {
    let set = change(
        store,
        scope,
        input.cluster.as_deref(),
        input.service.as_deref(),
        input.primary_task_set.as_deref(),
        "primaryTaskSet",
        move |record, i| {
            if set_at(record, i)?.status.as_deref() == Some(DRAINING) {
                return Err(error::invalid_parameter(
                    "A task set being deleted (DRAINING) cannot become the primary task set.",
                ));
            }
            for (j, set) in record.service.task_sets.iter_mut().flatten().enumerate() {
                if j == i {
                    if set.status.as_deref() != Some(PRIMARY) {
                        set.status = Some(PRIMARY.into());
                        set.updated_at = Some(now);
                    }
                } else if set.status.as_deref() == Some(PRIMARY) {
                    set.status = Some(SET_ACTIVE.into());
                    set.updated_at = Some(now);
                }
            }
            // The service shows what its primary task set runs.
            let primary = set_at(record, i)?.clone();
            let s: &mut Service = &mut record.service;
            s.task_definition = primary.task_definition.clone();
            Ok(())
        },
    )
    .await?;
    Ok(UpdateServicePrimaryTaskSetResponse {
        task_set: Some(present(set, true)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::test_support::{user, Harness, Instance, Spec};

    async fn converge(h: &Harness, agents: &[&Instance]) {
        let controller = h.controller();
        for _ in 0..20 {
            let writes = controller.pass().await;
            let reports = h.agents_act(agents).await;
            if writes == 0 && reports == 0 {
                return;
            }
        }
        panic!("the service did not settle");
    }

    async fn sets(h: &Harness) -> Vec<Value> {
        h.ok("DescribeTaskSets", json!({"service": "ext"})).await["taskSets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn find<'a>(sets: &'a [Value], id: &str) -> Option<&'a Value> {
        sets.iter().find(|s| s["id"] == id)
    }

    fn live_of(h: &Harness, id: &str) -> usize {
        h.service_tasks("default", "ext")
            .iter()
            .filter(|t| {
                t.task.started_by.as_deref() == Some(id)
                    && t.last_status() != crate::state::tasks::TaskStatus::Stopped
            })
            .count()
    }

    #[tokio::test]
    async fn task_sets_scale_stabilize_and_drain() {
        let h = Harness::new();
        let a = h
            .instance("default", Spec::default().size(8192, 8192))
            .await;
        h.task_definition("web", json!({})).await;
        h.task_definition("web2", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "plain", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
        let out = h
            .ok(
                "CreateService",
                json!({"serviceName": "ext", "desiredCount": 4,
                    "deploymentController": {"type": "EXTERNAL"}}),
            )
            .await;
        assert_eq!(out["service"]["deploymentController"]["type"], "EXTERNAL");
        assert_eq!(out["service"]["deployments"], json!([]));
        assert_eq!(out["service"]["taskSets"], json!([]));
        // No task set, no task.
        converge(&h, &[&a]).await;
        assert!(h.service_tasks("default", "ext").is_empty());

        // Bad input, as ECS answers it; nothing is created.
        for (op, input, code) in [
            (
                "CreateTaskSet",
                json!({"service": "plain", "taskDefinition": "web"}),
                "InvalidParameterException",
            ),
            (
                "CreateTaskSet",
                json!({"service": "nope", "taskDefinition": "web"}),
                "ServiceNotFoundException",
            ),
            (
                "CreateTaskSet",
                json!({"cluster": "nope", "service": "ext", "taskDefinition": "web"}),
                "ClusterNotFoundException",
            ),
            (
                "CreateTaskSet",
                json!({"service": "ext"}),
                "InvalidParameterException",
            ),
            (
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "nope:1"}),
                "InvalidParameterException",
            ),
            (
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web", "scale": {"value": 150.0, "unit": "PERCENT"}}),
                "InvalidParameterException",
            ),
            (
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web", "scale": {"value": 5.0, "unit": "COUNT"}}),
                "InvalidParameterException",
            ),
            (
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web", "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/1", "containerName": "app", "containerPort": 80}]}),
                "UnsupportedFeatureException",
            ),
            (
                "UpdateTaskSet",
                json!({"service": "ext", "taskSet": "ecs-svc/1", "scale": {"value": 5.0, "unit": "PERCENT"}}),
                "TaskSetNotFoundException",
            ),
            (
                "UpdateTaskSet",
                json!({"service": "ext", "taskSet": "ecs-svc/1"}),
                "InvalidParameterException",
            ),
            (
                "DeleteTaskSet",
                json!({"service": "ext", "taskSet": "ecs-svc/1"}),
                "TaskSetNotFoundException",
            ),
            (
                "UpdateServicePrimaryTaskSet",
                json!({"service": "ext", "primaryTaskSet": "ecs-svc/1"}),
                "TaskSetNotFoundException",
            ),
            (
                "DescribeTaskSets",
                json!({"service": "plain"}),
                "InvalidParameterException",
            ),
            (
                "UpdateService",
                json!({"service": "ext", "taskDefinition": "web"}),
                "InvalidParameterException",
            ),
        ] {
            let e = h.err(op, input.clone()).await;
            assert_eq!(e.code, code, "{op} {input}");
        }
        assert!(sets(&h).await.is_empty());
        let e = h
            .ecs_as(
                &user("u", &[]),
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web"}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");

        // Half of 4, then the other set's quarter of 4.
        let one = h
            .ok(
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web", "externalId": "blue",
                    "scale": {"value": 50.0, "unit": "PERCENT"}, "clientToken": "t1"}),
            )
            .await["taskSet"]
            .clone();
        let id1 = one["id"].as_str().unwrap().to_string();
        assert!(id1.starts_with("ecs-svc/"), "{id1}");
        assert_eq!(
            one["taskSetArn"],
            format!("arn:aws:ecs:us-east-1:000000000000:task-set/default/ext/{id1}")
        );
        assert_eq!(one["computedDesiredCount"], 2);
        assert_eq!(one["stabilityStatus"], "STABILIZING");
        assert_eq!(one["status"], "ACTIVE");
        assert_eq!(one["launchType"], "EC2");
        // The same client token: the same task set.
        let again = h
            .ok(
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web", "externalId": "blue",
                    "scale": {"value": 50.0, "unit": "PERCENT"}, "clientToken": "t1"}),
            )
            .await;
        assert_eq!(again["taskSet"]["id"], id1.as_str());
        converge(&h, &[&a]).await;
        let now = sets(&h).await;
        let s1 = find(&now, &id1).unwrap();
        assert_eq!(
            (s1["runningCount"].as_i64(), s1["pendingCount"].as_i64()),
            (Some(2), Some(0))
        );
        assert_eq!(s1["stabilityStatus"], "STEADY_STATE");
        assert_eq!(live_of(&h, &id1), 2);

        let two = h
            .ok(
                "CreateTaskSet",
                json!({"service": "ext", "taskDefinition": "web2",
                    "scale": {"value": 10.0, "unit": "PERCENT"}}),
            )
            .await["taskSet"]
            .clone();
        let id2 = two["id"].as_str().unwrap().to_string();
        assert_eq!(two["computedDesiredCount"], 1, "10% of 4 rounds up to 1");
        let out = h
            .ok(
                "UpdateServicePrimaryTaskSet",
                json!({"service": "ext", "primaryTaskSet": two["taskSetArn"]}),
            )
            .await;
        assert_eq!(out["taskSet"]["status"], "PRIMARY");
        let svc =
            h.ok("DescribeServices", json!({"services": ["ext"]})).await["services"][0].clone();
        assert!(svc["taskDefinition"].as_str().unwrap().ends_with("web2:1"));
        let e = h
            .err("DeleteTaskSet", json!({"service": "ext", "taskSet": id2}))
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        h.ok(
            "UpdateTaskSet",
            json!({"service": "ext", "taskSet": id1, "scale": {"value": 100.0, "unit": "PERCENT"}}),
        )
        .await;
        converge(&h, &[&a]).await;
        assert_eq!(live_of(&h, &id1), 4);
        assert_eq!(live_of(&h, &id2), 1);
        let svc =
            h.ok("DescribeServices", json!({"services": ["ext"]})).await["services"][0].clone();
        assert_eq!(svc["runningCount"], 5);
        assert_eq!(svc["taskSets"].as_array().unwrap().len(), 2);
        // The tasks belong to the service.
        let t = &h.service_tasks("default", "ext")[0];
        assert_eq!(t.task.group.as_deref(), Some("service:ext"));

        // The desired count scales every set.
        h.ok(
            "UpdateService",
            json!({"service": "ext", "desiredCount": 2}),
        )
        .await;
        converge(&h, &[&a]).await;
        assert_eq!((live_of(&h, &id1), live_of(&h, &id2)), (2, 1));

        // Deleting drains: its tasks stop, then it is gone.
        let out = h
            .ok("DeleteTaskSet", json!({"service": "ext", "taskSet": id1}))
            .await;
        assert_eq!(out["taskSet"]["status"], "DRAINING");
        converge(&h, &[&a]).await;
        assert_eq!(live_of(&h, &id1), 0);
        let now = sets(&h).await;
        assert!(find(&now, &id1).is_none(), "{now:?}");
        let out = h
            .ok(
                "DescribeTaskSets",
                json!({"service": "ext", "taskSets": [id1, id2], "include": ["TAGS"]}),
            )
            .await;
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        assert_eq!(out["taskSets"][0]["id"], id2.as_str());
        // The primary goes only with force.
        h.ok(
            "DeleteTaskSet",
            json!({"service": "ext", "taskSet": id2, "force": true}),
        )
        .await;
        converge(&h, &[&a]).await;
        assert!(sets(&h).await.is_empty());
        assert!(h
            .service_tasks("default", "ext")
            .iter()
            .all(|t| t.last_status() == crate::state::tasks::TaskStatus::Stopped));
    }
}
