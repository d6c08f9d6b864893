//! Service deployments and revisions: ListServiceDeployments,
//! DescribeServiceDeployments, DescribeServiceRevisions,
//! StopServiceDeployment.
//!
//! Read from the deployments a service record keeps (the current ones and
//! its history, see `state::services`): each deployment is one service
//! deployment (`service-deployment/<cluster>/<service>/<id>`) and targets
//! one service revision (`service-revision/<cluster>/<service>/<id>`, the
//! same id); its sources are the deployments it replaced.

use berth_model::shapes::ecs::{
    ContainerImage, ContinueServiceDeploymentRequest, ContinueServiceDeploymentResponse,
    Deployment, DescribeServiceDeploymentsRequest, DescribeServiceDeploymentsResponse,
    DescribeServiceRevisionsRequest, DescribeServiceRevisionsResponse, Failure,
    ListServiceDeploymentsRequest, ListServiceDeploymentsResponse, Rollback, ServiceDeployment,
    ServiceDeploymentBrief, ServiceDeploymentCircuitBreaker, ServiceRevision,
    ServiceRevisionSummary, StopServiceDeploymentRequest, StopServiceDeploymentResponse,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::blue_green::TEST_TRAFFIC_SHIFT;
use crate::state::clusters::{require_active, resolve_name};
use crate::state::keys::Scope;
use crate::state::records::{encode, load};
use crate::state::services::{
    self, resolve_service, service_not_found, ServiceRecord, ACTIVE, COMPLETED, FAILED,
    IN_PROGRESS, PRIMARY,
};
use crate::state::task_definitions::{self, TaskDefinitionRecord};

/// The number in a deployment id (`ecs-svc/<digits>`).
pub(crate) fn number(deployment_id: &str) -> &str {
    deployment_id
        .strip_prefix("ecs-svc/")
        .unwrap_or(deployment_id)
}

pub(crate) fn deployment_arn(scope: &Scope, cluster: &str, service: &str, id: &str) -> String {
    scope.arn(&format!(
        "service-deployment/{cluster}/{service}/{}",
        number(id)
    ))
}

pub(crate) fn revision_arn(scope: &Scope, cluster: &str, service: &str, id: &str) -> String {
    scope.arn(&format!(
        "service-revision/{cluster}/{service}/{}",
        number(id)
    ))
}

/// A service's deployments, newest first: the current ones, then its
/// history (with when each left the list).
fn all_deployments(record: &ServiceRecord) -> Vec<(Deployment, Option<f64>)> {
    let mut out: Vec<(Deployment, Option<f64>)> = record
        .deployments()
        .iter()
        .map(|d| (d.clone(), None))
        .collect();
    out.sort_by(|a, b| {
        b.0.created_at
            .unwrap_or(0.0)
            .total_cmp(&a.0.created_at.unwrap_or(0.0))
    });
    out.extend(
        record
            .past_deployments
            .iter()
            .map(|p| (p.deployment.clone(), Some(p.finished_at))),
    );
    out
}

fn summary(scope: &Scope, record: &ServiceRecord, d: &Deployment) -> ServiceRevisionSummary {
    ServiceRevisionSummary {
        arn: Some(revision_arn(
            scope,
            &record.cluster,
            &record.name,
            d.id.as_deref().unwrap_or(""),
        )),
        requested_task_count: d.desired_count,
        running_task_count: d.running_count,
        pending_task_count: d.pending_count,
        ..ServiceRevisionSummary::default()
    }
}

/// The service deployment status ECS reports for a deployment.
fn status(record: &ServiceRecord, d: &Deployment, finished: bool) -> &'static str {
    let id = d.id.as_deref().unwrap_or("");
    let rollout = d.rollout_state.as_deref().unwrap_or(IN_PROGRESS);
    if let Some(note) = record.rollbacks.get(id) {
        let target_done = all_deployments(record).iter().any(|(t, _)| {
            t.id.as_deref() == Some(note.to.as_str())
                && t.rollout_state.as_deref() == Some(COMPLETED)
        });
        return if target_done {
            "ROLLBACK_SUCCESSFUL"
        } else {
            "ROLLBACK_IN_PROGRESS"
        };
    }
    match rollout {
        COMPLETED => "SUCCESSFUL",
        FAILED => "STOPPED",
        _ if finished || d.status.as_deref() == Some(ACTIVE) => "STOPPED",
        _ => "IN_PROGRESS",
    }
}

fn full(
    scope: &Scope,
    record: &ServiceRecord,
    d: &Deployment,
    left_at: Option<f64>,
) -> ServiceDeployment {
    let id = d.id.clone().unwrap_or_default();
    let all = all_deployments(record);
    let status = status(record, d, left_at.is_some());
    // Sources: what ran when it started (the deployments created before it
    // and still there then): the current older ones, else the one before.
    let created = d.created_at.unwrap_or(0.0);
    let older: Vec<&(Deployment, Option<f64>)> = all
        .iter()
        .filter(|(o, left)| {
            o.id != d.id
                && o.created_at.unwrap_or(0.0) <= created
                && left.is_none_or(|l| l >= created)
        })
        .collect();
    let sources = older
        .iter()
        .map(|(o, _)| summary(scope, record, o))
        .collect();
    let breaker = record
        .service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.clone())
        .unwrap_or_default();
    let failed = d.failed_tasks.unwrap_or(0);
    let breaker_status = if breaker.enable != Some(true) {
        "DISABLED"
    } else if d.rollout_state.as_deref() == Some(FAILED) {
        "TRIGGERED"
    } else if d.rollout_state.as_deref() == Some(IN_PROGRESS) {
        "MONITORING"
    } else {
        "MONITORING_COMPLETE"
    };
    let rollback = record.rollbacks.get(&id).map(|note| Rollback {
        reason: Some(note.reason.clone()),
        started_at: Some(note.at),
        service_revision_arn: Some(revision_arn(scope, &record.cluster, &record.name, &note.to)),
    });
    let finished_at = match status {
        "SUCCESSFUL" | "ROLLBACK_SUCCESSFUL" | "STOPPED" => {
            left_at.or(d.updated_at).or(d.created_at)
        }
        _ => None,
    };
    ServiceDeployment {
        service_deployment_arn: Some(deployment_arn(scope, &record.cluster, &record.name, &id)),
        service_arn: Some(record.arn().to_string()),
        cluster_arn: Some(scope.arn(&format!("cluster/{}", record.cluster))),
        created_at: d.created_at,
        started_at: d.created_at,
        finished_at,
        stopped_at: (status == "STOPPED").then_some(finished_at).flatten(),
        updated_at: d.updated_at,
        source_service_revisions: Some(sources),
        target_service_revision: Some(summary(scope, record, d)),
        status: Some(status.into()),
        status_reason: d.rollout_state_reason.clone(),
        deployment_configuration: record.service.deployment_configuration.clone(),
        rollback,
        deployment_circuit_breaker: Some(ServiceDeploymentCircuitBreaker {
            status: Some(breaker_status.into()),
            failure_count: Some(failed),
            threshold: Some(
                crate::state::services::failure_threshold(d.desired_count.unwrap_or(0)) as i32,
            ),
        }),
        lifecycle_stage: record
            .blue_green
            .as_ref()
            .filter(|bg| bg.deployment == id)
            .map(|bg| bg.stage.clone())
            .or_else(|| record.lifecycle_stages.get(&id).cloned()),
        ..ServiceDeployment::default()
    }
}

/// Loads a service by cluster and name (any status).
fn service(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    name: &str,
) -> Result<Option<ServiceRecord>, AwsError> {
    Ok(load::<ServiceRecord>(view, &scope.service(cluster, name))?.map(|(r, _)| r))
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListServiceDeploymentsRequest,
) -> Result<ListServiceDeploymentsResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error::missing("service"))?;
    let name = resolve_service(scope, &cluster, &reference)?;
    let limit = crate::state::pagination::page_size(input.max_results, 20)?;
    let statuses = input.status.unwrap_or_default();
    for s in &statuses {
        if !berth_model::shapes::ecs::SERVICE_DEPLOYMENT_STATUS_VALUES.contains(&s.as_str()) {
            return Err(error::invalid_parameter(format!(
                "Invalid status '{s}'. Valid values: {}.",
                berth_model::shapes::ecs::SERVICE_DEPLOYMENT_STATUS_VALUES.join(", ")
            )));
        }
    }
    let (after, before) = input
        .created_at
        .map(|c| (c.after, c.before))
        .unwrap_or_default();
    require_active(view, scope, &cluster)?;
    let record = service(view, scope, &cluster, &name)?.ok_or_else(service_not_found)?;
    let start = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => crate::state::pagination::decode(token)?
            .parse::<usize>()
            .map_err(|_| error::invalid_parameter("Invalid nextToken."))?,
        None => 0,
    };
    let matching: Vec<ServiceDeploymentBrief> = all_deployments(&record)
        .iter()
        .map(|(d, left)| full(scope, &record, d, *left))
        .filter(|d| {
            let created = d.created_at.unwrap_or(0.0);
            (statuses.is_empty() || statuses.iter().any(|s| Some(s) == d.status.as_ref()))
                && after.is_none_or(|a| created >= a)
                && before.is_none_or(|b| created <= b)
        })
        .map(|d| ServiceDeploymentBrief {
            service_deployment_arn: d.service_deployment_arn,
            service_arn: d.service_arn,
            cluster_arn: d.cluster_arn,
            started_at: d.started_at,
            created_at: d.created_at,
            finished_at: d.finished_at,
            target_service_revision_arn: d.target_service_revision.and_then(|t| t.arn),
            status: d.status,
            status_reason: d.status_reason,
        })
        .collect();
    let end = start.saturating_add(limit).min(matching.len());
    let next_token =
        (end < matching.len()).then(|| crate::state::pagination::encode(&end.to_string()));
    Ok(ListServiceDeploymentsResponse {
        service_deployments: Some(
            matching
                .into_iter()
                .skip(start)
                .take(end.saturating_sub(start))
                .collect(),
        ),
        next_token,
    })
}

fn check_arns(arns: Option<Vec<String>>, member: &str) -> Result<Vec<String>, AwsError> {
    let arns = arns
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing(member))?;
    if arns.len() > 20 {
        return Err(error::invalid_parameter(format!(
            "{member} can have at most 20 items."
        )));
    }
    Ok(arns)
}

fn missing(arn: String) -> Failure {
    Failure {
        arn: Some(arn),
        reason: Some("MISSING".into()),
        detail: None,
    }
}

/// Finds the deployment an ARN of `kind` names.
fn find(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    kind: &str,
    text: &str,
) -> Result<Option<(ServiceRecord, Deployment, Option<f64>)>, AwsError> {
    let Some((cluster, name, id)) = services::parse_deployment_arn(scope, kind, text) else {
        return Ok(None);
    };
    let Some(record) = service(view, scope, &cluster, &name)? else {
        return Ok(None);
    };
    let found = all_deployments(&record)
        .into_iter()
        .find(|(d, _)| d.id.as_deref().map(number) == Some(id.as_str()));
    Ok(found.map(|(d, left)| (record, d, left)))
}

/// What ECS reports of one service deployment.
pub(crate) struct DeploymentState {
    pub status: &'static str,
    pub lifecycle_stage: Option<String>,
    /// The status reason, or why it was rolled back.
    pub reason: Option<String>,
    /// The test listener reaches the new revision and production waits
    /// for CodeDeploy's ContinueDeployment.
    pub waiting_to_continue: bool,
}

/// Where the service deployment `arn` stands (None: no such deployment).
pub(crate) fn state(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    arn: &str,
) -> Result<Option<DeploymentState>, AwsError> {
    Ok(
        find(view, scope, "service-deployment", arn)?.map(|(record, d, left)| {
            let full = full(scope, &record, &d, left);
            let reason = record
                .rollbacks
                .get(d.id.as_deref().unwrap_or(""))
                .map(|note| note.reason.clone())
                .or(full.status_reason);
            let id = d.id.as_deref().unwrap_or_default();
            let waiting_to_continue =
                record.blue_green.as_ref().is_some_and(|bg| {
                    bg.deployment == id
                        && bg.stage == TEST_TRAFFIC_SHIFT
                        && !bg.rolling_back
                        && bg.settled()
                }) && record.code_deploy.as_ref().is_some_and(|cd| cd.holds(id));
            DeploymentState {
                status: status(&record, &d, left.is_some()),
                lifecycle_stage: full.lifecycle_stage,
                reason,
                waiting_to_continue,
            }
        }),
    )
}

pub(crate) fn describe_deployments(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeServiceDeploymentsRequest,
) -> Result<DescribeServiceDeploymentsResponse, AwsError> {
    let arns = check_arns(input.service_deployment_arns, "serviceDeploymentArns")?;
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for arn in arns {
        match find(view, scope, "service-deployment", &arn)? {
            Some((record, d, left)) => found.push(full(scope, &record, &d, left)),
            None => failures.push(missing(arn)),
        }
    }
    Ok(DescribeServiceDeploymentsResponse {
        service_deployments: Some(found),
        failures: Some(failures),
    })
}

fn container_images(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    td: &str,
) -> Option<Vec<ContainerImage>> {
    let reference = task_definitions::parse_reference(scope, td).ok()?;
    let (record, _): (TaskDefinitionRecord, u64) = task_definitions::find(view, scope, &reference)
        .ok()
        .flatten()?;
    Some(
        record
            .task_definition
            .container_definitions
            .unwrap_or_default()
            .into_iter()
            .map(|c| ContainerImage {
                container_name: c.name,
                image: c.image,
                image_digest: None,
            })
            .collect(),
    )
}

pub(crate) fn describe_revisions(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeServiceRevisionsRequest,
) -> Result<DescribeServiceRevisionsResponse, AwsError> {
    let arns = check_arns(input.service_revision_arns, "serviceRevisionArns")?;
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for arn in arns {
        let Some((record, d, _)) = find(view, scope, "service-revision", &arn)? else {
            failures.push(missing(arn));
            continue;
        };
        let id = d.id.clone().unwrap_or_default();
        let td = d.task_definition.clone().unwrap_or_default();
        found.push(ServiceRevision {
            service_revision_arn: Some(revision_arn(scope, &record.cluster, &record.name, &id)),
            service_arn: Some(record.arn().to_string()),
            cluster_arn: Some(scope.arn(&format!("cluster/{}", record.cluster))),
            container_images: container_images(view, scope, &td),
            task_definition: Some(td),
            capacity_provider_strategy: d.capacity_provider_strategy.clone(),
            launch_type: d.launch_type.clone(),
            platform_version: d.platform_version.clone(),
            platform_family: d.platform_family.clone(),
            load_balancers: record.service.load_balancers.clone(),
            service_registries: record.service.service_registries.clone(),
            network_configuration: d.network_configuration.clone(),
            service_connect_configuration: d.service_connect_configuration.clone(),
            guard_duty_enabled: Some(false),
            created_at: d.created_at,
            ..ServiceRevision::default()
        });
    }
    Ok(DescribeServiceRevisionsResponse {
        service_revisions: Some(found),
        failures: Some(failures),
    })
}

pub(crate) async fn stop(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: StopServiceDeploymentRequest,
) -> Result<StopServiceDeploymentResponse, AwsError> {
    let arn = input
        .service_deployment_arn
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing("serviceDeploymentArn"))?;
    match input.stop_type.as_deref() {
        None | Some("ROLLBACK") => {}
        Some("ABORT") => {
            return Err(AwsError::bad_request(
                "UnsupportedFeatureException",
                "The ABORT stop type is only supported for service deployments that use lifecycle hooks with the ECS blue/green deployment strategy, which Berth does not run; use ROLLBACK.",
            ))
        }
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid stopType '{other}'. Valid values: ABORT, ROLLBACK."
            )))
        }
    }
    let not_found = || {
        AwsError::bad_request(
            "ServiceDeploymentNotFoundException",
            "The service deployment does not exist.",
        )
    };
    let (cluster, name, id) =
        services::parse_deployment_arn(scope, "service-deployment", &arn).ok_or_else(not_found)?;
    let owned_scope = scope.clone();
    let answer = arn.clone();
    store
        .update(move |view| {
            let scope = &owned_scope;
            let key = scope.service(&cluster, &name);
            let (mut record, _) = load::<ServiceRecord>(view, &key)?.ok_or_else(not_found)?;
            let current = record
                .deployments()
                .iter()
                .find(|d| d.id.as_deref().map(number) == Some(id.as_str()))
                .cloned();
            let Some(d) = current else {
                if find(view, scope, "service-deployment", &arn)?.is_some() {
                    return Err(conflict());
                }
                return Err(not_found());
            };
            let in_progress = d.status.as_deref() == Some(PRIMARY)
                && d.rollout_state.as_deref() == Some(IN_PROGRESS)
                && !record.rollbacks.contains_key(d.id.as_deref().unwrap_or(""));
            if !in_progress {
                return Err(conflict());
            }
            if record.last_completed_task_definition.is_none() {
                return Err(AwsError::bad_request(
                    "ConflictException",
                    "The service deployment cannot be rolled back: the service has no earlier service revision that completed.",
                ));
            }
            let from = d.id.clone().unwrap_or_default();
            for dep in record.service.deployments.iter_mut().flatten() {
                if dep.id.as_deref() == Some(from.as_str()) {
                    dep.rollout_state = Some(FAILED.into());
                    dep.rollout_state_reason =
                        Some("Service deployment stopped by StopServiceDeployment (ROLLBACK).".into());
                    dep.updated_at = Some(now);
                }
            }
            record.steady = false;
            let reason = format!(
                "StopServiceDeployment: rolling back to the last service revision that completed, from {from}."
            );
            services::roll_back(&mut record, &from, reason, now);
            Ok((vec![Op::put(key, encode(&record)?)], ()))
        })
        .await
        .map_err(error::store)??;
    Ok(StopServiceDeploymentResponse {
        service_deployment_arn: Some(answer),
    })
}

fn conflict() -> AwsError {
    AwsError::bad_request(
        "ConflictException",
        "The service deployment is not in progress; only an in-progress service deployment can be stopped.",
    )
}

/// ContinueServiceDeployment: Berth's deployments have no lifecycle hooks,
/// so no deployment ever waits at one; an existing deployment is answered
/// with ECS's refusal for a hook that is not waiting.
pub(crate) fn continue_deployment(
    view: &dyn ReadView,
    scope: &Scope,
    input: ContinueServiceDeploymentRequest,
) -> Result<ContinueServiceDeploymentResponse, AwsError> {
    let arn = input
        .service_deployment_arn
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing("serviceDeploymentArn"))?;
    let hook = input
        .hook_id
        .filter(|h| !h.is_empty())
        .ok_or_else(|| error::missing("hookId"))?;
    match input.action.as_deref() {
        None | Some("CONTINUE" | "ROLLBACK") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid action '{other}'. Valid values: CONTINUE, ROLLBACK."
            )))
        }
    }
    if find(view, scope, "service-deployment", &arn)?.is_none() {
        return Err(AwsError::bad_request(
            "ServiceDeploymentNotFoundException",
            "The service deployment does not exist.",
        ));
    }
    Err(error::invalid_parameter(format!(
        "The service deployment is not paused at lifecycle hook {hook}: its deployment configuration has no lifecycle hooks (Berth runs rolling deployments without hooks)."
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::test_support::{Harness, Instance, Spec};

    async fn converge(h: &Harness, instances: &[&Instance]) {
        let controller = h.controller();
        for _ in 0..6 {
            controller.pass().await;
            h.agents_act(instances).await;
        }
        controller.pass().await;
    }

    async fn listed(h: &Harness) -> Vec<Value> {
        h.ok("ListServiceDeployments", json!({"service": "web"}))
            .await["serviceDeployments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn deployments_and_revisions_are_listed_described_and_rolled_back() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        )
        .await;
        converge(&h, &[&a]).await;
        let first = listed(&h).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["status"], "SUCCESSFUL");
        let arn = first[0]["serviceDeploymentArn"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            arn.starts_with(&h.scope().arn("service-deployment/default/web/")),
            "{arn}"
        );

        // A second revision that never runs: stopped with a rollback.
        h.task_definition("web", json!({"memory": 128})).await;
        h.ok(
            "UpdateService",
            json!({"service": "web", "taskDefinition": "web"}),
        )
        .await;
        h.controller().pass().await;
        let now = listed(&h).await;
        assert_eq!(now.len(), 2);
        assert_eq!(now[0]["status"], "IN_PROGRESS");
        let second = now[0]["serviceDeploymentArn"].as_str().unwrap().to_string();
        let e = h
            .err(
                "StopServiceDeployment",
                json!({"serviceDeploymentArn": arn}),
            )
            .await;
        assert_eq!(e.code, "ConflictException", "a finished one cannot stop");
        let e = h
            .err(
                "StopServiceDeployment",
                json!({"serviceDeploymentArn": h.scope().arn("service-deployment/default/web/123")}),
            )
            .await;
        assert_eq!(e.code, "ServiceDeploymentNotFoundException");
        let e = h
            .err(
                "StopServiceDeployment",
                json!({"serviceDeploymentArn": second, "stopType": "PAUSE"}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        h.ok(
            "StopServiceDeployment",
            json!({"serviceDeploymentArn": second, "stopType": "ROLLBACK"}),
        )
        .await;
        converge(&h, &[&a]).await;
        let described = h
            .ok(
                "DescribeServiceDeployments",
                json!({"serviceDeploymentArns": [second, "arn:aws:ecs:us-east-1:000000000000:service-deployment/default/web/9"]}),
            )
            .await;
        let d = &described["serviceDeployments"][0];
        assert_eq!(d["status"], "ROLLBACK_SUCCESSFUL", "{d}");
        assert!(d["rollback"]["serviceRevisionArn"].is_string());
        assert_eq!(described["failures"][0]["reason"], "MISSING");
        let s = h.ok("DescribeServices", json!({"services": ["web"]})).await;
        assert!(s["services"][0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with(":1"));

        let target = d["targetServiceRevision"]["arn"]
            .as_str()
            .unwrap()
            .to_string();
        let revisions = h
            .ok(
                "DescribeServiceRevisions",
                json!({"serviceRevisionArns": [target]}),
            )
            .await;
        let r = &revisions["serviceRevisions"][0];
        assert!(r["taskDefinition"].as_str().unwrap().ends_with(":2"));
        assert_eq!(r["containerImages"][0]["containerName"], "app");
        assert_eq!(
            d["sourceServiceRevisions"][0]["arn"]
                .as_str()
                .map(|a| a.contains("service-revision/default/web/")),
            Some(true)
        );

        let only = h
            .ok(
                "ListServiceDeployments",
                json!({"service": "web", "status": ["ROLLBACK_SUCCESSFUL"]}),
            )
            .await;
        assert_eq!(only["serviceDeployments"].as_array().unwrap().len(), 1);
        for (input, code) in [
            (json!({"service": "nope"}), "ServiceNotFoundException"),
            (
                json!({"service": "web", "cluster": "nope"}),
                "ClusterNotFoundException",
            ),
            (
                json!({"service": "web", "status": ["DONE"]}),
                "InvalidParameterException",
            ),
            (
                json!({"service": "web", "maxResults": 0}),
                "InvalidParameterException",
            ),
        ] {
            let e = h.err("ListServiceDeployments", input.clone()).await;
            assert_eq!(e.code, code, "{input}");
        }
        let e = h
            .err(
                "ContinueServiceDeployment",
                json!({"serviceDeploymentArn": arn, "hookId": "h1"}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
    }
}
