//! Capacity providers: CreateCapacityProvider, DescribeCapacityProviders,
//! UpdateCapacityProvider, DeleteCapacityProvider.
//!
//! Auto Scaling group providers are validated and stored as ECS stores
//! them; Berth has no Auto Scaling groups yet, so managed scaling,
//! termination protection and draining are recorded, not acted on.

use berth_model::shapes::ecs::{
    AutoScalingGroupProvider, CapacityProvider, CreateCapacityProviderRequest,
    CreateCapacityProviderResponse, DeleteCapacityProviderRequest, DeleteCapacityProviderResponse,
    DescribeCapacityProvidersRequest, DescribeCapacityProvidersResponse, ManagedScaling,
    UpdateCapacityProviderRequest, UpdateCapacityProviderResponse,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::capacity_providers::{self as providers, ACTIVE, BUILTIN, INACTIVE};
use crate::state::clusters;
use crate::state::keys::Scope;
use crate::state::records::{decode, encode};
use crate::state::{pagination, tags};

const ENABLED: &str = "ENABLED";
const DISABLED: &str = "DISABLED";

fn on_off(value: Option<&str>, member: &str, default: &str) -> Result<String, AwsError> {
    match value {
        None => Ok(default.to_string()),
        Some(v @ (ENABLED | DISABLED)) => Ok(v.to_string()),
        Some(other) => Err(error::invalid_parameter(format!(
            "Invalid value '{other}' for {member}. Valid values: ENABLED, DISABLED."
        ))),
    }
}

/// Checks `managedScaling` and fills ECS's defaults (status ENABLED when
/// given without one, target 100 %, steps 1..10000, warm-up 300 s).
fn managed_scaling(
    given: Option<&ManagedScaling>,
    current: Option<&ManagedScaling>,
) -> Result<ManagedScaling, AwsError> {
    let base = current.cloned().unwrap_or(ManagedScaling {
        status: Some(DISABLED.into()),
        target_capacity: Some(100),
        minimum_scaling_step_size: Some(1),
        maximum_scaling_step_size: Some(10_000),
        instance_warmup_period: Some(300),
    });
    let Some(given) = given else {
        return Ok(base);
    };
    let status = on_off(
        given.status.as_deref(),
        "managedScaling.status",
        if current.is_some() {
            base.status.as_deref().unwrap_or(ENABLED)
        } else {
            ENABLED
        },
    )?;
    let target = given
        .target_capacity
        .or(base.target_capacity)
        .unwrap_or(100);
    if !(1..=100).contains(&target) {
        return Err(error::invalid_parameter(
            "The managed scaling target capacity must be greater than 0 and less than or equal to 100.",
        ));
    }
    let min = given
        .minimum_scaling_step_size
        .or(base.minimum_scaling_step_size)
        .unwrap_or(1);
    let max = given
        .maximum_scaling_step_size
        .or(base.maximum_scaling_step_size)
        .unwrap_or(10_000);
    for (name, v) in [
        ("minimumScalingStepSize", min),
        ("maximumScalingStepSize", max),
    ] {
        if !(1..=10_000).contains(&v) {
            return Err(error::invalid_parameter(format!(
                "The managed scaling {name} must be between 1 and 10000."
            )));
        }
    }
    if min > max {
        return Err(error::invalid_parameter(
            "The managed scaling minimumScalingStepSize cannot be greater than the maximumScalingStepSize.",
        ));
    }
    let warmup = given
        .instance_warmup_period
        .or(base.instance_warmup_period)
        .unwrap_or(300);
    if !(0..=10_000).contains(&warmup) {
        return Err(error::invalid_parameter(
            "The managed scaling instanceWarmupPeriod must be between 0 and 10000.",
        ));
    }
    Ok(ManagedScaling {
        status: Some(status),
        target_capacity: Some(target),
        minimum_scaling_step_size: Some(min),
        maximum_scaling_step_size: Some(max),
        instance_warmup_period: Some(warmup),
    })
}

/// An Auto Scaling group's ARN or name, as ECS accepts it.
fn check_group(scope: &Scope, group: &str) -> Result<(), AwsError> {
    if group.is_empty() {
        return Err(error::missing(
            "autoScalingGroupProvider.autoScalingGroupArn",
        ));
    }
    if !group.starts_with("arn:") {
        let ok = group.len() <= 255 && !group.contains(':');
        return if ok {
            Ok(())
        } else {
            Err(error::invalid_parameter(format!(
                "The Auto Scaling group name '{group}' is invalid."
            )))
        };
    }
    let arn = berth_model::Arn::parse(group);
    let ok = arn.as_ref().is_some_and(|a| {
        a.service == "autoscaling"
            && a.resource_type() == "autoScalingGroup"
            && a.resource.contains(":autoScalingGroupName/")
    });
    if !ok {
        return Err(error::invalid_parameter(format!(
            "The Auto Scaling group ARN '{group}' is invalid. Specify an ARN of the form arn:aws:autoscaling:<region>:<account>:autoScalingGroup:<uuid>:autoScalingGroupName/<name>."
        )));
    }
    if arn.is_some_and(|a| a.account != scope.account || a.region != scope.region) {
        return Err(error::client(
            "The specified Auto Scaling group must be in the same account and Region as the capacity provider.",
        ));
    }
    Ok(())
}

fn check_termination(provider: &AutoScalingGroupProvider) -> Result<(), AwsError> {
    let protected = provider.managed_termination_protection.as_deref() == Some(ENABLED);
    let scaling = provider
        .managed_scaling
        .as_ref()
        .and_then(|s| s.status.as_deref())
        == Some(ENABLED);
    if protected && !scaling {
        return Err(error::invalid_parameter(
            "The managed termination protection setting for the capacity provider is invalid. To enable managed termination protection for a capacity provider, managed scaling must also be enabled.",
        ));
    }
    Ok(())
}

fn managed_instances_unavailable() -> AwsError {
    AwsError::bad_request(
        "UnsupportedFeatureException",
        "Amazon ECS Managed Instances capacity providers need Berth to launch EC2 instances, which it does not do; create an Auto Scaling group capacity provider (autoScalingGroupProvider) instead.",
    )
}

fn reserved(name: &str) -> AwsError {
    error::client(format!(
        "The capacity provider {name} is reserved by Amazon ECS and cannot be updated or deleted."
    ))
}

/// The provider as shown: tags only when asked for.
fn present(mut provider: CapacityProvider, with_tags: bool) -> CapacityProvider {
    if !with_tags {
        provider.tags = None;
    }
    provider
}

pub(crate) async fn create(
    store: &dyn Store,
    scope: &Scope,
    input: CreateCapacityProviderRequest,
) -> Result<CreateCapacityProviderResponse, AwsError> {
    let name = input
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("name"))?;
    providers::check_name(&name)?;
    if input.managed_instances_provider.is_some() {
        return Err(managed_instances_unavailable());
    }
    if input.cluster.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(error::invalid_parameter(
            "cluster can only be specified for Amazon ECS Managed Instances capacity providers.",
        ));
    }
    let given = input.auto_scaling_group_provider.ok_or_else(|| {
        error::invalid_parameter(
            "A capacity provider requires either autoScalingGroupProvider or managedInstancesProvider.",
        )
    })?;
    let group = given.auto_scaling_group_arn.clone().unwrap_or_default();
    check_group(scope, &group)?;
    let provider = AutoScalingGroupProvider {
        auto_scaling_group_arn: Some(group.clone()),
        managed_scaling: Some(managed_scaling(given.managed_scaling.as_ref(), None)?),
        managed_termination_protection: Some(on_off(
            given.managed_termination_protection.as_deref(),
            "managedTerminationProtection",
            DISABLED,
        )?),
        managed_draining: Some(on_off(
            given.managed_draining.as_deref(),
            "managedDraining",
            ENABLED,
        )?),
    };
    check_termination(&provider)?;
    let tags = input.tags.unwrap_or_default();
    tags::check_new(&tags, std::iter::empty())?;
    let record = CapacityProvider {
        capacity_provider_arn: Some(providers::arn(scope, &name)),
        name: Some(name.clone()),
        status: Some(ACTIVE.into()),
        auto_scaling_group_provider: Some(provider),
        update_status: None,
        tags: Some(tags),
        r#type: Some("EC2_AUTOSCALING".into()),
        ..CapacityProvider::default()
    };
    let owned_scope = scope.clone();
    let (_, created) = store
        .update(move |view| {
            if let Some((existing, _)) = providers::find(view, &owned_scope, &name)? {
                if existing.status.as_deref() == Some(ACTIVE) {
                    return Err(error::client(
                        "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
                    ));
                }
            }
            for kv in view.range(&owned_scope.capacity_providers(), None, usize::MAX) {
                let other: CapacityProvider = decode(&kv)?;
                let same_group = other
                    .auto_scaling_group_provider
                    .as_ref()
                    .and_then(|p| p.auto_scaling_group_arn.as_deref())
                    == Some(group.as_str());
                if other.status.as_deref() == Some(ACTIVE) && same_group {
                    return Err(error::client(
                        "The specified Auto Scaling group ARN is already being used by another capacity provider. Specify a unique Auto Scaling group ARN and try again.",
                    ));
                }
            }
            Ok((
                vec![Op::put(owned_scope.capacity_provider(&name), encode(&record)?)],
                record.clone(),
            ))
        })
        .await
        .map_err(error::store)??;
    Ok(CreateCapacityProviderResponse {
        capacity_provider: Some(created),
    })
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeCapacityProvidersRequest,
) -> Result<DescribeCapacityProvidersResponse, AwsError> {
    let with_tags = error::include_tags(input.include)?;
    let cluster = match input.cluster.as_deref().filter(|c| !c.is_empty()) {
        Some(reference) => {
            let name = clusters::resolve_name(scope, Some(reference))?;
            Some(clusters::require_active(view, scope, &name)?.0)
        }
        None => None,
    };
    let limit = match input.max_results {
        None => usize::MAX,
        Some(n) if (1..=10).contains(&n) => n as usize,
        Some(n) => {
            return Err(error::invalid_parameter(format!(
                "maxResults must be between 1 and 10; got {n}."
            )))
        }
    };
    let mut failures = Vec::new();
    // Every provider named (or, with none named, every one there is), in order.
    let mut all: Vec<CapacityProvider> = Vec::new();
    match input.capacity_providers.filter(|p| !p.is_empty()) {
        Some(references) => {
            if references.len() > 100 {
                return Err(error::invalid_parameter(
                    "DescribeCapacityProviders accepts at most 100 capacity providers per call.",
                ));
            }
            for reference in references {
                let name = providers::resolve_name(scope, &reference).ok();
                let found = match name.as_deref() {
                    Some(n) if BUILTIN.contains(&n) => Some(providers::builtin(scope, n)),
                    Some(n) => providers::find(view, scope, n)?.map(|(p, _)| p),
                    None => None,
                };
                match found {
                    Some(p) => all.push(p),
                    None => failures.push(error::missing_failure(scope, reference, |n| {
                        format!("capacity-provider/{n}")
                    })),
                }
            }
        }
        None => {
            all.extend(BUILTIN.iter().map(|n| providers::builtin(scope, n)));
            for kv in view.range(&scope.capacity_providers(), None, usize::MAX) {
                all.push(decode(&kv)?);
            }
        }
    }
    if let Some(cluster) = &cluster {
        let associated = cluster.capacity_providers.clone().unwrap_or_default();
        all.retain(|p| p.name.as_ref().is_some_and(|n| associated.contains(n)));
    }
    let start = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => pagination::decode(token)?
            .parse::<usize>()
            .map_err(|_| error::invalid_parameter("Invalid nextToken."))?,
        None => 0,
    };
    let end = start.saturating_add(limit).min(all.len());
    let next_token = (end < all.len()).then(|| pagination::encode(&end.to_string()));
    let page = all
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .map(|p| present(p, with_tags))
        .collect();
    Ok(DescribeCapacityProvidersResponse {
        capacity_providers: Some(page),
        failures: Some(failures),
        next_token,
    })
}

pub(crate) async fn update(
    store: &dyn Store,
    scope: &Scope,
    input: UpdateCapacityProviderRequest,
) -> Result<UpdateCapacityProviderResponse, AwsError> {
    let reference = input
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("name"))?;
    let name = providers::resolve_name(scope, &reference)?;
    if BUILTIN.contains(&name.as_str()) {
        return Err(reserved(&name));
    }
    if input.managed_instances_provider.is_some() {
        return Err(managed_instances_unavailable());
    }
    let update = input.auto_scaling_group_provider.ok_or_else(|| {
        error::invalid_parameter(
            "UpdateCapacityProvider requires autoScalingGroupProvider for an Auto Scaling group capacity provider.",
        )
    })?;
    if let Some(s) = &update.managed_scaling {
        managed_scaling(Some(s), None)?;
    }
    on_off(
        update.managed_termination_protection.as_deref(),
        "managedTerminationProtection",
        DISABLED,
    )?;
    on_off(
        update.managed_draining.as_deref(),
        "managedDraining",
        ENABLED,
    )?;
    let owned_scope = scope.clone();
    let (_, updated) = store
        .update(move |view| {
            let (mut provider, _) = providers::find(view, &owned_scope, &name)?
                .filter(|(p, _)| p.status.as_deref() == Some(ACTIVE))
                .ok_or_else(providers::not_found)?;
            let mut group = provider
                .auto_scaling_group_provider
                .clone()
                .unwrap_or_default();
            group.managed_scaling = Some(managed_scaling(
                update.managed_scaling.as_ref(),
                group.managed_scaling.as_ref(),
            )?);
            if let Some(v) = &update.managed_termination_protection {
                group.managed_termination_protection = Some(v.clone());
            }
            if let Some(v) = &update.managed_draining {
                group.managed_draining = Some(v.clone());
            }
            check_termination(&group)?;
            provider.auto_scaling_group_provider = Some(group);
            provider.update_status = Some("UPDATE_COMPLETE".into());
            Ok((
                vec![Op::put(
                    owned_scope.capacity_provider(&name),
                    encode(&provider)?,
                )],
                provider,
            ))
        })
        .await
        .map_err(error::store)??;
    Ok(UpdateCapacityProviderResponse {
        capacity_provider: Some(present(updated, false)),
    })
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    input: DeleteCapacityProviderRequest,
) -> Result<DeleteCapacityProviderResponse, AwsError> {
    let reference = input
        .capacity_provider
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("capacityProvider"))?;
    let name = providers::resolve_name(scope, &reference)?;
    if BUILTIN.contains(&name.as_str()) {
        return Err(reserved(&name));
    }
    let owned_scope = scope.clone();
    let (_, deleted) = store
        .update(move |view| {
            let (mut provider, _) = providers::find(view, &owned_scope, &name)?
                .filter(|(p, _)| p.status.as_deref() == Some(ACTIVE))
                .ok_or_else(providers::not_found)?;
            if let Some(cluster) = providers::associated_cluster(view, &owned_scope, &name)? {
                if let Some(service) = providers::service_using(view, &owned_scope, &cluster, &name)? {
                    return Err(error::client(format!(
                        "The specified capacity provider is in use and cannot be removed. It is used by the capacity provider strategy of service {service} in cluster {cluster}; update the service to remove it first."
                    )));
                }
                return Err(error::client(format!(
                    "The specified capacity provider is associated with cluster {cluster}. Remove it from the cluster with PutClusterCapacityProviders, or delete the cluster, and try again."
                )));
            }
            provider.status = Some(INACTIVE.into());
            provider.update_status = Some("DELETE_COMPLETE".into());
            Ok((
                vec![Op::put(owned_scope.capacity_provider(&name), encode(&provider)?)],
                provider,
            ))
        })
        .await
        .map_err(error::store)??;
    Ok(DeleteCapacityProviderResponse {
        capacity_provider: Some(present(deleted, false)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::test_support::{user, Harness, Spec};

    const ASG: &str = "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:1b2c3d4e-0000-4000-8000-000000000001:autoScalingGroupName/asg-1";

    #[tokio::test]
    async fn capacity_providers_are_validated_stored_and_attached() {
        let h = Harness::new();
        let out = h
            .ok(
                "CreateCapacityProvider",
                json!({"name": "cp1", "autoScalingGroupProvider": {"autoScalingGroupArn": ASG,
                    "managedScaling": {"targetCapacity": 80}}, "tags": [{"key": "t", "value": "v"}]}),
            )
            .await;
        let cp = &out["capacityProvider"];
        assert_eq!(cp["status"], "ACTIVE");
        assert_eq!(
            cp["capacityProviderArn"],
            h.scope().arn("capacity-provider/cp1")
        );
        let asg = &cp["autoScalingGroupProvider"];
        assert_eq!(asg["managedScaling"]["status"], "ENABLED");
        assert_eq!(asg["managedScaling"]["targetCapacity"], 80);
        assert_eq!(asg["managedScaling"]["maximumScalingStepSize"], 10000);
        assert_eq!(asg["managedTerminationProtection"], "DISABLED");
        assert_eq!(asg["managedDraining"], "ENABLED");

        for (input, code) in [
            (
                json!({"name": "cp1", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-2"}}),
                "ClientException",
            ),
            (
                json!({"name": "awsy", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-2"}}),
                "ClientException",
            ),
            (
                json!({"name": "bad name", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-2"}}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "cp2", "autoScalingGroupProvider": {"autoScalingGroupArn": ASG}}),
                "ClientException",
            ),
            (
                json!({"name": "cp2", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-2",
                "managedScaling": {"targetCapacity": 101}}}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "cp2", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-2",
                "managedScaling": {"minimumScalingStepSize": 5, "maximumScalingStepSize": 2}}}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "cp2", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-2",
                "managedTerminationProtection": "ENABLED", "managedScaling": {"status": "DISABLED"}}}),
                "InvalidParameterException",
            ),
            (json!({"name": "cp2"}), "InvalidParameterException"),
            (
                json!({"name": "cp2", "managedInstancesProvider": {}}),
                "UnsupportedFeatureException",
            ),
        ] {
            let e = h.err("CreateCapacityProvider", input.clone()).await;
            assert_eq!(e.code, code, "{input}: {}", e.message);
        }

        let out = h.ok("DescribeCapacityProviders", json!({})).await;
        let names: Vec<&str> = out["capacityProviders"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["FARGATE", "FARGATE_SPOT", "cp1"]);
        let out = h
            .ok(
                "DescribeCapacityProviders",
                json!({"capacityProviders": ["cp1", "nope"], "include": ["TAGS"]}),
            )
            .await;
        assert_eq!(out["capacityProviders"][0]["tags"][0]["key"], "t");
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        let page = h
            .ok("DescribeCapacityProviders", json!({"maxResults": 2}))
            .await;
        assert_eq!(page["capacityProviders"].as_array().unwrap().len(), 2);
        let rest = h
            .ok(
                "DescribeCapacityProviders",
                json!({"maxResults": 2, "nextToken": page["nextToken"]}),
            )
            .await;
        assert_eq!(rest["capacityProviders"][0]["name"], "cp1");
        assert!(rest.get("nextToken").is_none());

        let out = h
            .ok(
                "UpdateCapacityProvider",
                json!({"name": "cp1", "autoScalingGroupProvider": {"managedDraining": "DISABLED",
                    "managedScaling": {"targetCapacity": 50}}}),
            )
            .await;
        let asg = &out["capacityProvider"]["autoScalingGroupProvider"];
        assert_eq!(asg["managedDraining"], "DISABLED");
        assert_eq!(asg["managedScaling"]["targetCapacity"], 50);
        assert_eq!(out["capacityProvider"]["updateStatus"], "UPDATE_COMPLETE");
        let e = h
            .err(
                "UpdateCapacityProvider",
                json!({"name": "FARGATE", "autoScalingGroupProvider": {}}),
            )
            .await;
        assert_eq!(e.code, "ClientException");

        // Attached to a cluster, used as its default strategy, it launches
        // on the cluster's container instances.
        h.ok("CreateCluster", json!({"clusterName": "c"})).await;
        let e = h
            .err(
                "PutClusterCapacityProviders",
                json!({"cluster": "c", "capacityProviders": ["cp1", "FARGATE"],
                    "defaultCapacityProviderStrategy": [{"capacityProvider": "cp1", "weight": 1},
                        {"capacityProvider": "FARGATE", "weight": 1}]}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        assert!(e.message.contains("mix"), "{}", e.message);
        let e = h
            .err(
                "PutClusterCapacityProviders",
                json!({"cluster": "c", "capacityProviders": ["gone"], "defaultCapacityProviderStrategy": []}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let out = h
            .ok(
                "PutClusterCapacityProviders",
                json!({"cluster": "c", "capacityProviders": ["cp1"],
                    "defaultCapacityProviderStrategy": [{"capacityProvider": "cp1", "weight": 1}]}),
            )
            .await;
        assert_eq!(out["cluster"]["capacityProviders"], json!(["cp1"]));
        h.ok("CreateCluster", json!({"clusterName": "d"})).await;
        let e = h
            .err(
                "PutClusterCapacityProviders",
                json!({"cluster": "d", "capacityProviders": ["cp1"], "defaultCapacityProviderStrategy": []}),
            )
            .await;
        assert_eq!(e.code, "ClientException");
        let e = h
            .err(
                "PutClusterCapacityProviders",
                json!({"cluster": "nope", "capacityProviders": [], "defaultCapacityProviderStrategy": []}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
        h.instance("c", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, failures) = h
            .run(json!({"cluster": "c", "taskDefinition": "web"}))
            .await;
        assert_eq!((arns.len(), failures.len()), (1, 0));
        assert_eq!(h.task(&arns[0]).task.launch_type.as_deref(), Some("EC2"));
        let out = h
            .ok(
                "CreateService",
                json!({"cluster": "c", "serviceName": "s", "taskDefinition": "web", "desiredCount": 0,
                    "capacityProviderStrategy": [{"capacityProvider": "cp1", "weight": 1}]}),
            )
            .await;
        assert_eq!(
            out["service"]["capacityProviderStrategy"][0]["capacityProvider"],
            "cp1"
        );
        let e = h
            .err(
                "CreateService",
                json!({"cluster": "d", "serviceName": "s", "taskDefinition": "web", "desiredCount": 0,
                    "capacityProviderStrategy": [{"capacityProvider": "cp1", "weight": 1}]}),
            )
            .await;
        assert!(e.message.contains("not associated"), "{}", e.message);

        // In use: neither removed from the cluster nor deleted.
        let e = h
            .err(
                "PutClusterCapacityProviders",
                json!({"cluster": "c", "capacityProviders": [], "defaultCapacityProviderStrategy": []}),
            )
            .await;
        assert_eq!(e.code, "ResourceInUseException");
        assert!(e
            .message
            .starts_with("The specified capacity provider is in use"));
        let e = h
            .err("DeleteCapacityProvider", json!({"capacityProvider": "cp1"}))
            .await;
        assert_eq!(e.code, "ClientException");
        h.ok(
            "DeleteService",
            json!({"cluster": "c", "service": "s", "force": true}),
        )
        .await;
        h.controller().pass().await;
        h.ok(
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": [], "defaultCapacityProviderStrategy": []}),
        )
        .await;
        let out = h
            .ok(
                "DeleteCapacityProvider",
                json!({"capacityProvider": h.scope().arn("capacity-provider/cp1")}),
            )
            .await;
        assert_eq!(out["capacityProvider"]["status"], "INACTIVE");
        let e = h
            .err("DeleteCapacityProvider", json!({"capacityProvider": "cp1"}))
            .await;
        assert_eq!(e.code, "ClientException");
        let e = h
            .err(
                "DeleteCapacityProvider",
                json!({"capacityProvider": "FARGATE"}),
            )
            .await;
        assert_eq!(e.code, "ClientException");
    }

    #[tokio::test]
    async fn capacity_provider_calls_authorize_on_the_provider_arn() {
        let h = Harness::new();
        let ctx = user("u", &["ecs:DescribeCapacityProviders"]);
        let e = h
            .ecs_as(
                &ctx,
                "CreateCapacityProvider",
                json!({"name": "cp1", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg"}}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        assert!(
            e.message.contains(&h.scope().arn("capacity-provider/cp1")),
            "{}",
            e.message
        );
        h.ecs_as(&ctx, "DescribeCapacityProviders", json!({}))
            .await
            .unwrap();
    }
}
