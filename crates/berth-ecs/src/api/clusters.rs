//! Clusters: CreateCluster, DescribeClusters, ListClusters, UpdateCluster,
//! UpdateClusterSettings, PutClusterCapacityProviders, DeleteCluster.

use berth_model::shapes::ecs::{
    CapacityProviderStrategyItem, Cluster, ClusterServiceConnectDefaults,
    ClusterServiceConnectDefaultsRequest, ClusterSetting, CreateClusterRequest,
    CreateClusterResponse, DeleteClusterRequest, DeleteClusterResponse, DescribeClustersRequest,
    DescribeClustersResponse, KeyValuePair, ListClustersRequest, ListClustersResponse,
    PutClusterCapacityProvidersRequest, PutClusterCapacityProvidersResponse, UpdateClusterRequest,
    UpdateClusterResponse, UpdateClusterSettingsRequest, UpdateClusterSettingsResponse,
    CLUSTER_FIELD_VALUES,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::clusters::{
    check_name, require_active, resolve_name, ACTIVE, DEFAULT_CLUSTER, INACTIVE,
};
use crate::state::keys::Scope;
use crate::state::records::{decode, encode, load};
use crate::state::{account_settings, capacity_providers, index, pagination, services, tags};

/// Live counts that ECS reports on a cluster.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterCounts {
    pub registered_instances: i32,
    pub running_tasks: i32,
    pub pending_tasks: i32,
    pub running_fargate_tasks: i32,
    pub pending_fargate_tasks: i32,
    pub active_services: i32,
}

pub(crate) fn counts(view: &(impl ReadView + ?Sized), scope: &Scope, name: &str) -> ClusterCounts {
    let registered_instances = view
        .range(&scope.instances(name), None, usize::MAX)
        .iter()
        .filter(|kv| {
            decode::<crate::state::instances::InstanceRecord>(kv)
                .is_ok_and(|r| r.status() != crate::state::instances::INACTIVE && r.offers_ec2())
        })
        .count() as i32;
    let (tasks, fargate) = index::cluster_task_counts(view, scope, name);
    ClusterCounts {
        registered_instances,
        running_tasks: (tasks.running + fargate.running) as i32,
        pending_tasks: (tasks.pending + fargate.pending) as i32,
        running_fargate_tasks: fargate.running as i32,
        pending_fargate_tasks: fargate.pending as i32,
        active_services: services::active_count(view, scope, name),
    }
}

fn check_settings(settings: &[ClusterSetting]) -> Result<(), AwsError> {
    for setting in settings {
        match setting.name.as_deref() {
            Some("containerInsights") => {}
            Some(other) => {
                return Err(error::invalid_parameter(format!(
                    "Invalid cluster setting name '{other}'. Valid names: containerInsights."
                )))
            }
            None => return Err(error::missing("settings.name")),
        }
        match setting.value.as_deref() {
            Some("enabled" | "disabled" | "enhanced") => {}
            other => {
                return Err(error::invalid_parameter(format!(
                    "Invalid value '{}' for cluster setting containerInsights. Valid values: enabled, disabled, enhanced.",
                    other.unwrap_or("")
                )))
            }
        }
    }
    Ok(())
}

fn check_capacity_providers(
    providers: &[String],
    strategy: &[CapacityProviderStrategyItem],
) -> Result<(), AwsError> {
    for (i, p) in providers.iter().enumerate() {
        if p.is_empty() {
            return Err(error::missing("capacityProviders"));
        }
        if providers[..i].contains(p) {
            return Err(error::invalid_parameter(format!(
                "The capacity provider '{p}' is listed more than once."
            )));
        }
    }
    let mut with_base = 0;
    for (i, item) in strategy.iter().enumerate() {
        let name = item
            .capacity_provider
            .as_deref()
            .ok_or_else(|| error::missing("defaultCapacityProviderStrategy.capacityProvider"))?;
        if !providers.iter().any(|p| p == name) {
            return Err(error::invalid_parameter(format!(
                "The specified capacity provider strategy includes '{name}', which is not associated with the cluster. Associate the capacity provider with the cluster and try again."
            )));
        }
        if strategy[..i]
            .iter()
            .any(|other| other.capacity_provider.as_deref() == Some(name))
        {
            return Err(error::invalid_parameter(format!(
                "The capacity provider strategy lists '{name}' more than once."
            )));
        }
        if let Some(w) = item.weight {
            if !(0..=1000).contains(&w) {
                return Err(error::invalid_parameter(
                    "Capacity provider strategy weight must be between 0 and 1000.",
                ));
            }
        }
        match item.base {
            Some(b) if !(0..=100_000).contains(&b) => {
                return Err(error::invalid_parameter(
                    "Capacity provider strategy base must be between 0 and 100000.",
                ))
            }
            Some(b) if b > 0 => with_base += 1,
            _ => {}
        }
    }
    if with_base > 1 {
        return Err(error::invalid_parameter(
            "Only one capacity provider in a strategy can have a base defined.",
        ));
    }
    let fargate = |n: &str| capacity_providers::BUILTIN.contains(&n);
    let names = strategy
        .iter()
        .filter_map(|i| i.capacity_provider.as_deref());
    let (builtin, custom): (Vec<&str>, Vec<&str>) = names.partition(|n| fargate(n));
    if !builtin.is_empty() && !custom.is_empty() {
        return Err(error::invalid_parameter(
            "A capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
        ));
    }
    Ok(())
}

/// The state checks of a cluster's capacity providers: each exists and is
/// ACTIVE, and an Auto Scaling group provider belongs to no other cluster.
fn check_providers_in_store(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    providers: &[String],
) -> Result<(), AwsError> {
    for p in providers {
        let name = capacity_providers::resolve_name(scope, p)?;
        if !capacity_providers::is_active(view, scope, &name)? {
            return Err(error::invalid_parameter(format!(
                "The specified capacity provider '{p}' is not in an ACTIVE state. Specify a valid capacity provider and try again."
            )));
        }
        if capacity_providers::BUILTIN.contains(&name.as_str()) {
            continue;
        }
        if let Some(other) = capacity_providers::associated_cluster(view, scope, &name)? {
            if other != cluster {
                return Err(error::client(format!(
                    "The specified capacity provider '{name}' is already associated with cluster {other}. A capacity provider that uses an Auto Scaling group can be associated with one cluster only."
                )));
            }
        }
    }
    Ok(())
}

fn service_connect(
    request: Option<ClusterServiceConnectDefaultsRequest>,
) -> Result<Option<ClusterServiceConnectDefaults>, AwsError> {
    match request {
        None => Ok(None),
        Some(r) => {
            let namespace = r
                .namespace
                .filter(|n| !n.is_empty())
                .ok_or_else(|| error::missing("serviceConnectDefaults.namespace"))?;
            Ok(Some(ClusterServiceConnectDefaults {
                namespace: Some(namespace),
            }))
        }
    }
}

/// Settings a new cluster starts with: the request's, else the account default.
fn initial_settings(
    view: &dyn ReadView,
    scope: &Scope,
    principal_arn: &str,
    requested: Option<Vec<ClusterSetting>>,
) -> Vec<ClusterSetting> {
    if let Some(s) = requested.filter(|s| !s.is_empty()) {
        return s;
    }
    let insights =
        account_settings::effective_value(view, scope, "containerInsights", principal_arn)
            .unwrap_or_else(|| "disabled".to_string());
    vec![ClusterSetting {
        name: Some("containerInsights".into()),
        value: Some(insights),
    }]
}

pub(crate) async fn create(
    store: &dyn Store,
    scope: &Scope,
    principal_arn: &str,
    input: CreateClusterRequest,
) -> Result<CreateClusterResponse, AwsError> {
    let name = match input.cluster_name.as_deref() {
        None | Some("") => DEFAULT_CLUSTER.to_string(),
        Some(n) => {
            check_name(n)?;
            n.to_string()
        }
    };
    let tags = input.tags.unwrap_or_default();
    tags::check_new(&tags, std::iter::empty())?;
    if let Some(settings) = &input.settings {
        check_settings(settings)?;
    }
    let providers = input.capacity_providers.unwrap_or_default();
    let strategy = input.default_capacity_provider_strategy.unwrap_or_default();
    check_capacity_providers(&providers, &strategy)?;
    let service_connect = service_connect(input.service_connect_defaults)?;

    let key = scope.cluster(&name);
    let arn = scope.arn(&format!("cluster/{name}"));
    let settings = input.settings;
    let configuration = input.configuration;
    let principal_arn = principal_arn.to_string();
    let owned_scope = scope.clone();
    let outcome = store
        .update(move |view| {
            if let Some((existing, _)) = load::<Cluster>(view, &key)? {
                if existing.status.as_deref() == Some(ACTIVE) {
                    // ECS answers CreateCluster for an existing cluster with the cluster as it is.
                    return Ok((Vec::new(), existing));
                }
            }
            check_providers_in_store(view, &owned_scope, &name, &providers)?;
            let cluster = Cluster {
                cluster_arn: Some(arn.clone()),
                cluster_name: Some(name.clone()),
                status: Some(ACTIVE.into()),
                configuration: configuration.clone(),
                settings: Some(initial_settings(
                    view,
                    &owned_scope,
                    &principal_arn,
                    settings.clone(),
                )),
                tags: Some(tags.clone()),
                capacity_providers: Some(providers.clone()),
                default_capacity_provider_strategy: Some(strategy.clone()),
                service_connect_defaults: service_connect.clone(),
                ..Cluster::default()
            };
            Ok((vec![Op::put(key.clone(), encode(&cluster)?)], cluster))
        })
        .await
        .map_err(error::store)?;
    let (_, cluster) = outcome?;
    let view_cluster = present(store, scope, cluster, &Include::for_create());
    Ok(CreateClusterResponse {
        cluster: Some(view_cluster),
    })
}

/// Which optional parts of a cluster DescribeClusters returns.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Include {
    pub attachments: bool,
    pub configurations: bool,
    pub settings: bool,
    pub statistics: bool,
    pub tags: bool,
}

impl Include {
    pub fn parse(fields: &[String]) -> Result<Include, AwsError> {
        let mut include = Include::default();
        for field in fields {
            match field.as_str() {
                "ATTACHMENTS" => include.attachments = true,
                "CONFIGURATIONS" => include.configurations = true,
                "SETTINGS" => include.settings = true,
                "STATISTICS" => include.statistics = true,
                "TAGS" => include.tags = true,
                other => {
                    return Err(error::invalid_parameter(format!(
                        "Invalid include value '{other}'. Valid values: {}.",
                        CLUSTER_FIELD_VALUES.join(", ")
                    )))
                }
            }
        }
        Ok(include)
    }

    /// Create and update responses show the whole cluster.
    pub fn for_create() -> Include {
        Include {
            attachments: true,
            configurations: true,
            settings: true,
            statistics: false,
            tags: true,
        }
    }
}

/// The cluster as the API shows it: live counts filled in, optional parts per `include`.
pub(crate) fn present(
    view: &dyn ReadView,
    scope: &Scope,
    mut cluster: Cluster,
    include: &Include,
) -> Cluster {
    let name = cluster.cluster_name.clone().unwrap_or_default();
    let active = cluster.status.as_deref() == Some(ACTIVE);
    let c = if active {
        counts(view, scope, &name)
    } else {
        ClusterCounts::default()
    };
    cluster.registered_container_instances_count = Some(c.registered_instances);
    cluster.running_tasks_count = Some(c.running_tasks);
    cluster.pending_tasks_count = Some(c.pending_tasks);
    cluster.active_services_count = Some(c.active_services);
    cluster.statistics = Some(if include.statistics {
        statistics(&c)
    } else {
        Vec::new()
    });
    if !include.tags {
        cluster.tags = Some(Vec::new());
    }
    if !include.settings {
        cluster.settings = None;
    }
    if !include.configurations {
        cluster.configuration = None;
    }
    if !include.attachments {
        cluster.attachments = None;
        cluster.attachments_status = None;
    }
    cluster.capacity_providers.get_or_insert_with(Vec::new);
    cluster
        .default_capacity_provider_strategy
        .get_or_insert_with(Vec::new);
    cluster
}

fn statistics(c: &ClusterCounts) -> Vec<KeyValuePair> {
    let pair = |name: &str, value: i32| KeyValuePair {
        name: Some(name.into()),
        value: Some(value.to_string()),
    };
    vec![
        pair(
            "runningEC2TasksCount",
            c.running_tasks - c.running_fargate_tasks,
        ),
        pair("runningFargateTasksCount", c.running_fargate_tasks),
        pair(
            "pendingEC2TasksCount",
            c.pending_tasks - c.pending_fargate_tasks,
        ),
        pair("pendingFargateTasksCount", c.pending_fargate_tasks),
        pair("activeEC2ServiceCount", c.active_services),
        pair("activeFargateServiceCount", 0),
        pair("drainingEC2ServiceCount", 0),
        pair("drainingFargateServiceCount", 0),
    ]
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeClustersRequest,
) -> Result<DescribeClustersResponse, AwsError> {
    let include = Include::parse(&input.include.unwrap_or_default())?;
    let references = input
        .clusters
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_CLUSTER.to_string()]);
    if references.len() > 100 {
        return Err(error::invalid_parameter(
            "DescribeClusters accepts at most 100 clusters per call.",
        ));
    }
    let mut clusters = Vec::new();
    let mut failures = Vec::new();
    for reference in references {
        let found = resolve_name(scope, Some(&reference))
            .ok()
            .map(|name| load::<Cluster>(view, &scope.cluster(&name)))
            .transpose()?
            .flatten();
        match found {
            Some((cluster, _)) => clusters.push(present(view, scope, cluster, &include)),
            None => failures.push(error::missing_failure(scope, reference, |name| {
                format!("cluster/{name}")
            })),
        }
    }
    Ok(DescribeClustersResponse {
        clusters: Some(clusters),
        failures: Some(failures),
    })
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListClustersRequest,
) -> Result<ListClustersResponse, AwsError> {
    let limit = pagination::page_size(input.max_results, 100)?;
    let prefix = scope.clusters();
    let mut after = match input.next_token.as_deref() {
        Some(token) if !token.is_empty() => Some(format!("{prefix}{}", pagination::decode(token)?)),
        _ => None,
    };
    let mut arns = Vec::new();
    let mut last_key = None;
    'scan: loop {
        let page = view.range(&prefix, after.as_deref(), 256);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|kv| kv.key.clone());
        for kv in page {
            let cluster: Cluster = decode(&kv)?;
            if cluster.status.as_deref() != Some(ACTIVE) {
                continue;
            }
            if arns.len() == limit {
                break 'scan;
            }
            arns.push(cluster.cluster_arn.unwrap_or_default());
            last_key = Some(kv.key);
        }
    }
    // A token is returned only when a further active cluster exists.
    let next_token = match &last_key {
        Some(key) if arns.len() == limit && has_active_after(view, &prefix, key)? => {
            Some(pagination::encode(&key[prefix.len()..]))
        }
        _ => None,
    };
    Ok(ListClustersResponse {
        cluster_arns: Some(arns),
        next_token,
    })
}

fn has_active_after(view: &dyn ReadView, prefix: &str, key: &str) -> Result<bool, AwsError> {
    let mut after = key.to_string();
    loop {
        let page = view.range(prefix, Some(&after), 256);
        let Some(last) = page.last() else {
            return Ok(false);
        };
        after = last.key.clone();
        for kv in &page {
            if decode::<Cluster>(kv)?.status.as_deref() == Some(ACTIVE) {
                return Ok(true);
            }
        }
    }
}

/// Applies `change` to an ACTIVE cluster atomically and returns it as shown after.
async fn modify(
    store: &dyn Store,
    scope: &Scope,
    reference: Option<String>,
    change: impl Fn(&mut Cluster) -> Result<(), AwsError> + Send + 'static,
) -> Result<Cluster, AwsError> {
    modify_with_view(store, scope, reference, move |_, cluster| change(cluster)).await
}

/// [`modify`] for changes that read other records in the same mutation.
async fn modify_with_view(
    store: &dyn Store,
    scope: &Scope,
    reference: Option<String>,
    change: impl Fn(&dyn ReadView, &mut Cluster) -> Result<(), AwsError> + Send + 'static,
) -> Result<Cluster, AwsError> {
    let reference = reference
        .filter(|r| !r.is_empty())
        .ok_or_else(|| error::missing("cluster"))?;
    let name = resolve_name(scope, Some(&reference))?;
    let key = scope.cluster(&name);
    let owned_scope = scope.clone();
    let (_, cluster) = store
        .update(move |view| {
            let (mut cluster, _) = require_active(view, &owned_scope, &name)?;
            change(view, &mut cluster)?;
            Ok::<_, AwsError>((vec![Op::put(key.clone(), encode(&cluster)?)], cluster))
        })
        .await
        .map_err(error::store)??;
    Ok(present(store, scope, cluster, &Include::for_create()))
}

pub(crate) async fn update(
    store: &dyn Store,
    scope: &Scope,
    input: UpdateClusterRequest,
) -> Result<UpdateClusterResponse, AwsError> {
    if let Some(settings) = &input.settings {
        check_settings(settings)?;
    }
    let service_connect = service_connect(input.service_connect_defaults)?;
    let settings = input.settings;
    let configuration = input.configuration;
    let cluster = modify(store, scope, input.cluster, move |cluster| {
        if let Some(settings) = &settings {
            merge_settings(cluster, settings);
        }
        if let Some(configuration) = &configuration {
            cluster.configuration = Some(configuration.clone());
        }
        if let Some(sc) = &service_connect {
            cluster.service_connect_defaults = Some(sc.clone());
        }
        Ok(())
    })
    .await?;
    Ok(UpdateClusterResponse {
        cluster: Some(cluster),
    })
}

fn merge_settings(cluster: &mut Cluster, settings: &[ClusterSetting]) {
    let current = cluster.settings.get_or_insert_with(Vec::new);
    for setting in settings {
        match current.iter_mut().find(|s| s.name == setting.name) {
            Some(existing) => existing.value = setting.value.clone(),
            None => current.push(setting.clone()),
        }
    }
}

pub(crate) async fn update_settings(
    store: &dyn Store,
    scope: &Scope,
    input: UpdateClusterSettingsRequest,
) -> Result<UpdateClusterSettingsResponse, AwsError> {
    let settings = input.settings.ok_or_else(|| error::missing("settings"))?;
    check_settings(&settings)?;
    let cluster = modify(store, scope, input.cluster, move |cluster| {
        merge_settings(cluster, &settings);
        Ok(())
    })
    .await?;
    Ok(UpdateClusterSettingsResponse {
        cluster: Some(cluster),
    })
}

pub(crate) async fn put_capacity_providers(
    store: &dyn Store,
    scope: &Scope,
    input: PutClusterCapacityProvidersRequest,
) -> Result<PutClusterCapacityProvidersResponse, AwsError> {
    let providers = input
        .capacity_providers
        .ok_or_else(|| error::missing("capacityProviders"))?;
    let strategy = input
        .default_capacity_provider_strategy
        .ok_or_else(|| error::missing("defaultCapacityProviderStrategy"))?;
    check_capacity_providers(&providers, &strategy)?;
    let check_scope = scope.clone();
    let cluster = modify_with_view(store, scope, input.cluster, move |view, cluster| {
        let name = cluster.cluster_name.clone().unwrap_or_default();
        check_providers_in_store(view, &check_scope, &name, &providers)?;
        // A provider leaving the cluster must not be in a service's strategy.
        let names: Vec<String> = providers
            .iter()
            .map(|p| capacity_providers::resolve_name(&check_scope, p))
            .collect::<Result<_, _>>()?;
        for old in cluster.capacity_providers.iter().flatten() {
            if names.contains(old) {
                continue;
            }
            if let Some(service) = capacity_providers::service_using(view, &check_scope, &name, old)? {
                return Err(AwsError::bad_request(
                    "ResourceInUseException",
                    format!("The specified capacity provider is in use and cannot be removed. Capacity provider {old} is used by service {service}."),
                ));
            }
        }
        cluster.capacity_providers = Some(names);
        cluster.default_capacity_provider_strategy = Some(strategy.clone());
        Ok(())
    })
    .await?;
    Ok(PutClusterCapacityProvidersResponse {
        cluster: Some(cluster),
    })
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    input: DeleteClusterRequest,
) -> Result<DeleteClusterResponse, AwsError> {
    let reference = input
        .cluster
        .filter(|r| !r.is_empty())
        .ok_or_else(|| error::missing("cluster"))?;
    let name = resolve_name(scope, Some(&reference))?;
    let key = scope.cluster(&name);
    let owned_scope = scope.clone();
    let (_, cluster) = store
        .update(move |view| {
            let (mut cluster, _) = require_active(view, &owned_scope, &name)?;
            let c = counts(view, &owned_scope, &name);
            if c.registered_instances > 0 {
                return Err(AwsError::bad_request(
                    "ClusterContainsContainerInstancesException",
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
            if c.active_services > 0 {
                return Err(AwsError::bad_request(
                    "ClusterContainsServicesException",
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
            if c.running_tasks + c.pending_tasks > 0 {
                return Err(AwsError::bad_request(
                    "ClusterContainsTasksException",
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            cluster.status = Some(INACTIVE.into());
            Ok((vec![Op::put(key.clone(), encode(&cluster)?)], cluster))
        })
        .await
        .map_err(error::store)??;
    Ok(DeleteClusterResponse {
        cluster: Some(present(store, scope, cluster, &Include::for_create())),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::state::records::decoded;
    use crate::state::tasks::TaskRecord;
    use crate::test_support::{Harness, Spec};

    #[tokio::test]
    async fn describe_clusters_counts_instances_tasks_and_services() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web", "count": 4})).await;
        // Spread: two on each instance; one of a's stops, one runs.
        let on_a: Vec<&String> = arns.iter().filter(|t| h.instance_of(t) == a.id).collect();
        assert_eq!(on_a.len(), 2);
        h.report(&a, on_a[0], "STOPPED").await;
        h.report(&a, on_a[1], "RUNNING").await;
        h.ok(
            "CreateService",
            json!({"serviceName": "s", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
        h.ok(
            "CreateService",
            json!({"serviceName": "gone", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
        h.ok("DeleteService", json!({"service": "gone"})).await;
        let out = h
            .ok("DescribeClusters", json!({"clusters": ["default", "nope"]}))
            .await;
        let c = &out["clusters"][0];
        assert_eq!(c["registeredContainerInstancesCount"], 2);
        assert_eq!(c["runningTasksCount"], 1);
        assert_eq!(c["pendingTasksCount"], 2);
        assert_eq!(c["activeServicesCount"], 1);
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        assert_eq!(out["failures"][0]["arn"], h.scope().arn("cluster/nope"));
        // The counts come from the live-task entries: no task is decoded.
        let before = decoded::of::<TaskRecord>();
        h.ok("DescribeClusters", json!({"clusters": ["default"]}))
            .await;
        h.ok("ListTasks", json!({})).await;
        h.ok(
            "ListTasks",
            json!({"desiredStatus": "PENDING", "launchType": "EC2"}),
        )
        .await;
        assert_eq!(decoded::of::<TaskRecord>() - before, 0);
        // A family filter reads the live tasks' records, never the STOPPED one.
        let listed = h.ok("ListTasks", json!({"family": "web"})).await;
        assert_eq!(listed["taskArns"].as_array().map(Vec::len), Some(3));
        assert_eq!(decoded::of::<TaskRecord>() - before, 3);
    }

    #[tokio::test]
    async fn delete_cluster_refuses_while_it_holds_anything() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        let e = h.err("DeleteCluster", json!({"cluster": "default"})).await;
        assert_eq!(e.code, "ClusterContainsContainerInstancesException");
        h.ok(
            "DeregisterContainerInstance",
            json!({"containerInstance": a.arn, "force": true}),
        )
        .await;
        let e = h.err("DeleteCluster", json!({"cluster": "default"})).await;
        assert_eq!(e.code, "ClusterContainsTasksException");
        h.ok("StopTask", json!({"task": arns[0]})).await;
        h.ok(
            "CreateService",
            json!({"serviceName": "s", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
        let e = h.err("DeleteCluster", json!({"cluster": "default"})).await;
        assert_eq!(e.code, "ClusterContainsServicesException");
        h.ok("DeleteService", json!({"service": "s"})).await;
        let out = h.ok("DeleteCluster", json!({"cluster": "default"})).await;
        assert_eq!(out["cluster"]["status"], "INACTIVE");
        let e = h.err("RunTask", json!({"taskDefinition": "web"})).await;
        assert_eq!(e.code, "ClusterNotFoundException");
        let e = h.err("DeleteCluster", json!({"cluster": "nope"})).await;
        assert_eq!(e.code, "ClusterNotFoundException");
    }
}
