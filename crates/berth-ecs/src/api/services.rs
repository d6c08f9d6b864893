//! Services: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices. Handlers record what the user wants (the service and its
//! deployments); the service controller (`service_controller`) makes it so.

use berth_model::shapes::ecs::{
    CreateServiceRequest, CreateServiceResponse, DeleteServiceRequest, DeleteServiceResponse,
    DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentController,
    DescribeServicesRequest, DescribeServicesResponse, ListServicesRequest, ListServicesResponse,
    LoadBalancer, PlacementConstraint, PlacementStrategy, Service, ServiceRegistry, Tag,
    UpdateServiceRequest, UpdateServiceResponse,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::launch::capacity::{self, Capacity};
use crate::launch::policy;
use crate::state::blue_green;
use crate::state::clusters::{self, resolve_name};
use crate::state::keys::Scope;
use crate::state::load_balancers::{self, LoadBalancerTargets, RuleInfo, TargetGroupInfo};
use crate::state::network::TaskNetworks;
use crate::state::records::{decode, encode, fingerprint, load, load_each};
use crate::state::registry::{self, RegistryInfo, ServiceRegistries};
use crate::state::services::{
    check_service_name, deployment_for, resolve_service, service_not_found, CodeDeployRouting,
    ServiceRecord, ACTIVE, CODE_DEPLOY, DAEMON, DRAINING, EXTERNAL, INACTIVE, PRIMARY, REPLICA,
};
use crate::state::task_definitions::{self, TaskDefinitionRecord};
use crate::state::{pagination, tags};

fn service_not_active() -> AwsError {
    AwsError::bad_request("ServiceNotActiveException", "Service was not ACTIVE.")
}

/// Checks the deployment configuration and fills ECS's defaults.
fn deployment_configuration(
    given: Option<DeploymentConfiguration>,
    daemon: bool,
    current: Option<&DeploymentConfiguration>,
) -> Result<DeploymentConfiguration, AwsError> {
    let mut config = current.cloned().unwrap_or_default();
    let (default_max, default_min) = if daemon { (100, 0) } else { (200, 100) };
    if let Some(g) = given {
        if g.maximum_percent.is_some() {
            config.maximum_percent = g.maximum_percent;
        }
        if g.minimum_healthy_percent.is_some() {
            config.minimum_healthy_percent = g.minimum_healthy_percent;
        }
        if g.deployment_circuit_breaker.is_some() {
            config.deployment_circuit_breaker = g.deployment_circuit_breaker;
        }
        if g.alarms.is_some() {
            config.alarms = g.alarms;
        }
        if let Some(strategy) = g.strategy {
            if !["ROLLING", "BLUE_GREEN", "LINEAR", "CANARY"].contains(&strategy.as_str()) {
                return Err(error::invalid_parameter(format!(
                    "Invalid deployment strategy '{strategy}'. Valid values: ROLLING, BLUE_GREEN, LINEAR, CANARY."
                )));
            }
            config.strategy = Some(strategy);
        }
        if let Some(bake) = g.bake_time_in_minutes {
            check_minutes("bakeTimeInMinutes", bake)?;
            config.bake_time_in_minutes = Some(bake);
        }
        if let Some(linear) = g.linear_configuration {
            if let Some(p) = linear.step_percent {
                if !(3.0..=100.0).contains(&p) {
                    return Err(error::invalid_parameter(
                        "linearConfiguration.stepPercent must be between 3.0 and 100.0.",
                    ));
                }
            }
            if let Some(m) = linear.step_bake_time_in_minutes {
                check_minutes("linearConfiguration.stepBakeTimeInMinutes", m)?;
            }
            config.linear_configuration = Some(linear);
        }
        if let Some(canary) = g.canary_configuration {
            if let Some(p) = canary.canary_percent {
                if !(0.1..=100.0).contains(&p) {
                    return Err(error::invalid_parameter(
                        "canaryConfiguration.canaryPercent must be between 0.1 and 100.0.",
                    ));
                }
            }
            if let Some(m) = canary.canary_bake_time_in_minutes {
                check_minutes("canaryConfiguration.canaryBakeTimeInMinutes", m)?;
            }
            config.canary_configuration = Some(canary);
        }
        if let Some(hooks) = g.lifecycle_hooks {
            if let Some(hook) = hooks.first() {
                return Err(error::invalid_parameter(format!(
                    "lifecycleHooks are not supported: their hookTargetArn ({}) names an AWS Lambda \
                     function, and Berth has no AWS Lambda to invoke it.",
                    hook.hook_target_arn.as_deref().unwrap_or("")
                )));
            }
            config.lifecycle_hooks = Some(hooks);
        }
    }
    let strategy = config.strategy.as_deref().unwrap_or("ROLLING");
    if config.linear_configuration.is_some() && strategy != "LINEAR" {
        return Err(error::invalid_parameter(
            "linearConfiguration is only valid with the LINEAR deployment strategy.",
        ));
    }
    if config.canary_configuration.is_some() && strategy != "CANARY" {
        return Err(error::invalid_parameter(
            "canaryConfiguration is only valid with the CANARY deployment strategy.",
        ));
    }
    if daemon && strategy != "ROLLING" {
        return Err(error::invalid_parameter(format!(
            "The daemon scheduling strategy supports the ROLLING deployment strategy only, not {strategy}."
        )));
    }
    let max = *config.maximum_percent.get_or_insert(default_max);
    let min = *config.minimum_healthy_percent.get_or_insert(default_min);
    if !(0..=100).contains(&min) {
        return Err(error::invalid_parameter(
            "minimumHealthyPercent must be between 0 and 100.",
        ));
    }
    if max < 100 && !daemon || !(0..=2000).contains(&max) {
        return Err(error::invalid_parameter(
            "maximumPercent must be at least 100 and at most 2000.",
        ));
    }
    if daemon && max != 100 && max != 0 {
        return Err(error::invalid_parameter(
            "The daemon scheduling strategy supports a maximumPercent of 100 only.",
        ));
    }
    let breaker = config
        .deployment_circuit_breaker
        .get_or_insert(DeploymentCircuitBreaker::default());
    breaker.enable.get_or_insert(false);
    breaker.rollback.get_or_insert(false);
    Ok(config)
}

/// A deployment's number of minutes: 0 to 1440.
fn check_minutes(member: &str, minutes: i32) -> Result<(), AwsError> {
    if (0..=1440).contains(&minutes) {
        Ok(())
    } else {
        Err(error::invalid_parameter(format!(
            "{member} must be between 0 and 1440."
        )))
    }
}

fn check_placement(
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
    daemon: bool,
) -> Result<(), AwsError> {
    if constraints.len() > 10 {
        return Err(error::invalid_parameter(
            "A service can have at most 10 placement constraints.",
        ));
    }
    if strategies.len() > 5 {
        return Err(error::invalid_parameter(
            "A service can have at most 5 placement strategies.",
        ));
    }
    if daemon && !strategies.is_empty() {
        return Err(error::invalid_parameter(
            "The daemon scheduling strategy does not support placement strategies.",
        ));
    }
    policy::check(constraints, strategies)
}

/// Resolves a task definition reference to an existing ACTIVE revision.
fn resolve_task_definition(
    view: &dyn ReadView,
    scope: &Scope,
    reference: &str,
) -> Result<berth_model::shapes::ecs::TaskDefinition, AwsError> {
    let td = stored_definition(view, scope, reference)?
        .ok_or_else(|| error::invalid_parameter("TaskDefinition not found."))?;
    if td.status.as_deref() != Some(task_definitions::ACTIVE) {
        return Err(error::invalid_parameter("TaskDefinition is inactive."));
    }
    Ok(td)
}

/// The stored revision a reference names, whatever its status.
pub(crate) fn stored_definition(
    view: &dyn ReadView,
    scope: &Scope,
    reference: &str,
) -> Result<Option<berth_model::shapes::ecs::TaskDefinition>, AwsError> {
    let parsed = task_definitions::parse_reference(scope, reference)?;
    let found: Option<(TaskDefinitionRecord, u64)> = task_definitions::find(view, scope, &parsed)?;
    Ok(found.map(|(record, _)| record.task_definition))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn create(
    store: &dyn Store,
    scope: &Scope,
    caller_arn: &str,
    networks: Option<&dyn TaskNetworks>,
    registries: Option<&dyn ServiceRegistries>,
    balancers: Option<&dyn LoadBalancerTargets>,
    now: f64,
    input: CreateServiceRequest,
) -> Result<CreateServiceResponse, AwsError> {
    let request = fingerprint(&CreateServiceRequest {
        client_token: None,
        ..input.clone()
    });
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let name = input
        .service_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("serviceName"))?;
    check_service_name(&name)?;
    let controller = match input
        .deployment_controller
        .as_ref()
        .and_then(|c| c.r#type.as_deref())
    {
        None | Some("ECS") => "ECS",
        Some(EXTERNAL) => EXTERNAL,
        // CodeDeploy deploys it (through ECS's blue/green engine); it
        // starts like an ECS-controlled service.
        Some(CODE_DEPLOY) => {
            if input.load_balancers.as_ref().is_none_or(|l| l.len() != 1) {
                return Err(error::invalid_parameter(
                    "A service with the CODE_DEPLOY deployment controller must use exactly one Application Load Balancer or Network Load Balancer target group.",
                ));
            }
            CODE_DEPLOY
        }
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid deploymentController type '{other}'. Valid values: ECS, CODE_DEPLOY, EXTERNAL."
            )))
        }
    };
    let external = controller == EXTERNAL;
    // A service with the EXTERNAL controller runs what its task sets name.
    let task_definition = input.task_definition.filter(|t| !t.is_empty());
    if task_definition.is_none() && !external {
        return Err(error::missing("taskDefinition"));
    }
    let strategy = input.scheduling_strategy.unwrap_or_else(|| REPLICA.into());
    let daemon = match strategy.as_str() {
        REPLICA => false,
        DAEMON => true,
        other => {
            return Err(error::invalid_parameter(format!(
                "Invalid schedulingStrategy '{other}'. Valid values: REPLICA, DAEMON."
            )))
        }
    };
    let desired = match (daemon, input.desired_count) {
        (true, Some(_)) => {
            return Err(error::invalid_parameter(
                "The daemon scheduling strategy does not support a desired count for services.",
            ))
        }
        (true, None) => 0,
        (false, None) => {
            return Err(error::invalid_parameter(
                "desiredCount is required for services with the REPLICA scheduling strategy.",
            ))
        }
        (false, Some(n)) if n < 0 => {
            return Err(error::invalid_parameter("desiredCount cannot be negative."))
        }
        (false, Some(n)) => n,
    };
    let (requested, network) = capacity::launch_request(
        networks,
        scope,
        input.launch_type.as_deref(),
        input.capacity_provider_strategy.as_deref(),
        input.network_configuration.as_ref(),
        "services",
    )?;
    let strategy_given = input
        .capacity_provider_strategy
        .clone()
        .filter(|s| !s.is_empty());
    let platform_version = input.platform_version.clone().filter(|v| !v.is_empty());
    let network_configuration = input.network_configuration.clone();
    let asked_launch_type = input.launch_type.clone();
    if daemon && requested.as_ref().is_some_and(|c| *c != Capacity::Ec2) {
        return Err(error::invalid_parameter(
            "The daemon scheduling strategy does not support the Fargate launch type or capacity providers.",
        ));
    }
    if (external || controller == CODE_DEPLOY) && daemon {
        return Err(error::invalid_parameter(format!(
            "The {controller} deployment controller supports the REPLICA scheduling strategy only."
        )));
    }
    let config = deployment_configuration(input.deployment_configuration, daemon, None)?;
    let constraints = input.placement_constraints.unwrap_or_default();
    let strategies = input.placement_strategy.unwrap_or_default();
    check_placement(&constraints, &strategies, daemon)?;
    if input
        .health_check_grace_period_seconds
        .is_some_and(|g| !(0..=2_147_483_647).contains(&g))
    {
        return Err(error::invalid_parameter(
            "healthCheckGracePeriodSeconds must be between 0 and 2147483647.",
        ));
    }
    let tags: Vec<Tag> = input.tags.unwrap_or_default();
    tags::check_new(&tags, std::iter::empty())?;
    match input.propagate_tags.as_deref() {
        None | Some("TASK_DEFINITION" | "SERVICE" | "NONE") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid propagateTags '{other}'. Valid values: TASK_DEFINITION, SERVICE, NONE."
            )))
        }
    }
    let client_token = input.client_token.filter(|t| !t.is_empty());
    if client_token
        .as_ref()
        .is_some_and(|t| t.len() > 36 || !t.bytes().all(|b| (33..=126).contains(&b)))
    {
        return Err(error::invalid_parameter(
            "clientToken: up to 36 ASCII characters in the range 33-126 are allowed.",
        ));
    }
    let asked_registries = input.service_registries.clone().unwrap_or_default();
    let registry_infos = describe_registries(registries, scope, &asked_registries)?;
    let asked_balancers = input.load_balancers.clone().unwrap_or_default();
    load_balancers::check_shape(&asked_balancers)?;
    let mut group_infos = describe_target_groups(balancers, scope, &asked_balancers)?;
    let rule_infos = describe_advanced(balancers, scope, &asked_balancers, &mut group_infos)?;
    let asked_role = input.role.clone();
    let connectors = input.gateway_connectors.clone().unwrap_or_default();
    let scope_owned = scope.clone();
    let caller = caller_arn.to_string();
    let template = Service {
        service_name: Some(name.clone()),
        cluster_arn: Some(scope.arn(&format!("cluster/{cluster}"))),
        service_arn: Some(scope.arn(&format!("service/{cluster}/{name}"))),
        load_balancers: Some(input.load_balancers.unwrap_or_default()),
        service_registries: Some(input.service_registries.unwrap_or_default()),
        status: Some(ACTIVE.into()),
        desired_count: Some(desired),
        running_count: Some(0),
        pending_count: Some(0),
        deployment_configuration: Some(config),
        placement_constraints: Some(constraints),
        placement_strategy: Some(strategies),
        health_check_grace_period_seconds: input.health_check_grace_period_seconds,
        scheduling_strategy: Some(strategy),
        deployment_controller: Some(DeploymentController {
            r#type: Some(controller.into()),
        }),
        task_sets: external.then(Vec::new),
        tags: Some(tags),
        created_by: Some(caller),
        enable_ecs_managed_tags: Some(input.enable_ecs_managed_tags.unwrap_or(false)),
        propagate_tags: Some(input.propagate_tags.unwrap_or_else(|| "NONE".into())),
        enable_execute_command: Some(input.enable_execute_command.unwrap_or(false)),
        role_arn: input.role,
        events: Some(Vec::new()),
        ..Service::default()
    };
    let (_, record) = store
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
            let key = scope.service(&cluster, &name);
            if let Some((existing, _)) = load::<ServiceRecord>(view, &key)? {
                if existing.status() != INACTIVE {
                    // The same call again (same token, same input) gets the
                    // same answer; anything else is refused.
                    let same_call = existing.request.is_empty() || existing.request == request;
                    if client_token.is_some() && existing.client_token == client_token && same_call
                    {
                        return Ok((Vec::new(), existing));
                    }
                    return Err(error::invalid_parameter(
                        "Creation of service was not idempotent.",
                    ));
                }
            }
            let at = now;
            let mut service = template.clone();
            let mut arn = String::new();
            if let Some(task_definition) = &task_definition {
                let td = resolve_task_definition(view, scope, task_definition)?;
                capacity::check_definition(
                    &td,
                    &Default::default(),
                    &capacity,
                    network.as_ref(),
                    platform_version.as_deref(),
                )?;
                let service_registries = registry::check(&asked_registries, &td, &|arn| {
                    registry_info(&registry_infos, arn)
                })?;
                let balanced = load_balancers::check(&asked_balancers, &td, &|arn| {
                    group_info(&group_infos, arn)
                })?;
                super::gateways::check_connectors(view, scope, &cluster, &connectors, &td)?;
                super::gateways::check_strategy(
                    &connectors,
                    blue_green::strategy(service.deployment_configuration.as_ref()),
                )?;
                load_balancers::check_advanced(
                    &balanced,
                    blue_green::strategy(service.deployment_configuration.as_ref()),
                    &|arn| group_info(&group_infos, arn),
                    &|arn| rule_info(&rule_infos, arn),
                )?;
                service.role_arn = load_balancers::check_role(
                    asked_role.as_deref(),
                    &scope.account,
                    &balanced,
                    td.network_mode.as_deref().unwrap_or("bridge"),
                    !service_registries.is_empty(),
                )?;
                if !balanced.is_empty() && service.health_check_grace_period_seconds.is_none() {
                    service.health_check_grace_period_seconds = Some(0);
                }
                arn = td.task_definition_arn.unwrap_or_default();
                service.service_registries = Some(service_registries);
                service.load_balancers = Some(balanced);
                service.task_definition = Some(arn.clone());
            } else if !asked_registries.is_empty() {
                return Err(error::invalid_parameter(
                    "serviceRegistries need the service's taskDefinition.",
                ));
            } else if !asked_balancers.is_empty() {
                return Err(error::invalid_parameter(
                    "loadBalancers of a service with the EXTERNAL deployment controller are set on its task sets.",
                ));
            } else if !connectors.is_empty() {
                return Err(error::invalid_parameter(
                    "gatewayConnectors need the service's taskDefinition; a service with the EXTERNAL deployment controller cannot use them.",
                ));
            } else {
                service.role_arn = load_balancers::check_role(
                    asked_role.as_deref(),
                    &scope.account,
                    &[],
                    "bridge",
                    false,
                )?;
            }
            service.created_at = Some(at);
            let (launch_type, strategy) = match (&asked_launch_type, &capacity) {
                (Some(l), _) => (Some(l.clone()), None),
                (None, Capacity::Ec2) if strategy_given.is_some() => (None, strategy_given.clone()),
                (None, Capacity::Ec2) => (Some("EC2".to_string()), None),
                (None, Capacity::Fargate(items)) => (None, Some(capacity::strategy_shape(items))),
            };
            service.launch_type = launch_type;
            service.capacity_provider_strategy = strategy;
            service.network_configuration = network_configuration.clone();
            if capacity != Capacity::Ec2 {
                service.platform_version =
                    Some(platform_version.clone().unwrap_or_else(|| "LATEST".into()));
                service.platform_family = Some("Linux".into());
            }
            service.deployments = Some(if external {
                Vec::new()
            } else {
                vec![deployment_for(&service, &arn, desired, at)]
            });
            let record = ServiceRecord {
                name: name.clone(),
                cluster: cluster.clone(),
                service,
                client_token: client_token.clone(),
                request: request.clone(),
                network: network.clone(),
                gateway_connectors: connectors.clone(),
                ..ServiceRecord::default()
            };
            Ok::<_, AwsError>((vec![Op::put(key, encode(&record)?)], record))
        })
        .await
        .map_err(error::store)??;
    Ok(CreateServiceResponse {
        service: Some(present(record, true)),
    })
}

pub(crate) async fn update(
    store: &dyn Store,
    scope: &Scope,
    networks: Option<&dyn TaskNetworks>,
    registries: Option<&dyn ServiceRegistries>,
    balancers: Option<&dyn LoadBalancerTargets>,
    now: f64,
    input: UpdateServiceRequest,
) -> Result<UpdateServiceResponse, AwsError> {
    let ports = Ports {
        networks,
        registries,
        balancers,
    };
    update_with(store, scope, ports, now, input, None)
        .await
        .map(|record| UpdateServiceResponse {
            service: Some(present(record, true)),
        })
}

/// The services UpdateService reaches beyond ECS.
#[derive(Clone, Copy)]
pub(crate) struct Ports<'a> {
    pub networks: Option<&'a dyn TaskNetworks>,
    pub registries: Option<&'a dyn ServiceRegistries>,
    pub balancers: Option<&'a dyn LoadBalancerTargets>,
}

/// UpdateService; with `code_deploy`, CodeDeploy deploying a CODE_DEPLOY
/// service (`input` then forces a new deployment). Answers the service's
/// record as stored.
pub(crate) async fn update_with(
    store: &dyn Store,
    scope: &Scope,
    ports: Ports<'_>,
    now: f64,
    input: UpdateServiceRequest,
    code_deploy: Option<CodeDeployRouting>,
) -> Result<ServiceRecord, AwsError> {
    let Ports {
        networks,
        registries,
        balancers,
    } = ports;
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error::missing("service"))?;
    let name = resolve_service(scope, &cluster, &reference)?;
    if input.desired_count.is_some_and(|n| n < 0) {
        return Err(error::invalid_parameter("desiredCount cannot be negative."));
    }
    let new_strategy = match input.capacity_provider_strategy.as_deref() {
        Some(items) if !items.is_empty() => Some(capacity::strategy_items(items)?),
        _ => None,
    };
    let new_network = capacity::resolve_network(
        networks,
        &scope.account,
        &scope.region,
        input.network_configuration.as_ref(),
    )?;
    if let Some(c) = &input.placement_constraints {
        check_placement(c, &[], false)?;
    }
    if let Some(s) = &input.placement_strategy {
        check_placement(&[], s, false)?;
    }
    if let Some(tags) = &input.propagate_tags {
        if !["TASK_DEFINITION", "SERVICE", "NONE"].contains(&tags.as_str()) {
            return Err(error::invalid_parameter(format!(
                "Invalid propagateTags '{tags}'. Valid values: TASK_DEFINITION, SERVICE, NONE."
            )));
        }
    }
    let asked_registries = input.service_registries.clone();
    let registry_infos = describe_registries(
        registries,
        scope,
        asked_registries.as_deref().unwrap_or(&[]),
    )?;
    let asked_balancers = input.load_balancers.clone();
    if let Some(asked) = &asked_balancers {
        load_balancers::check_shape(asked)?;
    }
    let mut group_infos =
        describe_target_groups(balancers, scope, asked_balancers.as_deref().unwrap_or(&[]))?;
    // Blue/green: the groups and rules the load balancers (given, or as
    // stored) name, checked when either they or the deployment
    // configuration change.
    let check_shift = asked_balancers.is_some() || input.deployment_configuration.is_some();
    let rule_infos = if check_shift {
        let list = match &asked_balancers {
            Some(list) => list.clone(),
            None => load::<ServiceRecord>(store, &scope.service(&cluster, &name))?
                .and_then(|(r, _)| r.service.load_balancers)
                .unwrap_or_default(),
        };
        let mut more = describe_target_groups(balancers, scope, &list)?;
        let rules = describe_advanced(balancers, scope, &list, &mut more)?;
        for (k, v) in more {
            group_infos.entry(k).or_insert(v);
        }
        rules
    } else {
        std::collections::HashMap::new()
    };
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            let scope = &scope_owned;
            clusters::require_active(view, scope, &cluster)?;
            let key = scope.service(&cluster, &name);
            let (mut record, _) =
                load::<ServiceRecord>(view, &key)?.ok_or_else(service_not_found)?;
            if record.status() != ACTIVE {
                return Err(service_not_active());
            }
            if record.is_external()
                && (input.task_definition.as_deref().is_some_and(|t| !t.is_empty())
                    || new_strategy.is_some()
                    || new_network.is_some()
                    || input.platform_version.as_deref().is_some_and(|v| !v.is_empty())
                    || input.force_new_deployment == Some(true)
                || asked_balancers.as_ref().is_some_and(|l| !l.is_empty()))
            {
                return Err(error::invalid_parameter(
                    "Unable to update the task definition, capacity, network configuration or platform version of a service with an EXTERNAL deployment controller, or to force a new deployment: create a task set instead.",
                ));
            }
            match &code_deploy {
                None if record.is_code_deploy()
                    && (input.task_definition.as_deref().is_some_and(|t| !t.is_empty())
                        || new_strategy.is_some()
                        || new_network.is_some()
                        || input.platform_version.as_deref().is_some_and(|v| !v.is_empty())
                        || input.force_new_deployment == Some(true)
                        || asked_balancers.is_some()) =>
                {
                    return Err(error::invalid_parameter(
                        "Unable to update task definition on services with a CODE_DEPLOY deployment controller. Use AWS CodeDeploy to trigger a new deployment.",
                    ));
                }
                Some(_) if !record.is_code_deploy() => {
                    return Err(error::invalid_parameter(format!(
                        "The service {name} does not use the CODE_DEPLOY deployment controller."
                    )));
                }
                // The same CodeDeploy deployment again (after a crash):
                // already started.
                Some(cd)
                    if record
                        .code_deploy
                        .as_ref()
                        .is_some_and(|r| r.deployment_id == cd.deployment_id) =>
                {
                    return Ok((Vec::new(), record));
                }
                Some(_) if record.blue_green.is_some() => {
                    return Err(error::invalid_parameter(format!(
                        "The service {name} has a deployment in progress."
                    )));
                }
                _ => {}
            }
            let daemon = record.is_daemon();
            let s = &mut record.service;
            if let Some(n) = input.desired_count {
                if daemon {
                    return Err(error::invalid_parameter(
                        "The daemon scheduling strategy does not support a desired count for services.",
                    ));
                }
                s.desired_count = Some(n);
            }
            if input.deployment_configuration.is_some() {
                s.deployment_configuration = Some(deployment_configuration(
                    input.deployment_configuration.clone(),
                    daemon,
                    s.deployment_configuration.as_ref(),
                )?);
            }
            if let Some(c) = &input.placement_constraints {
                s.placement_constraints = Some(c.clone());
            }
            if let Some(p) = &input.placement_strategy {
                if daemon && !p.is_empty() {
                    return Err(error::invalid_parameter(
                        "The daemon scheduling strategy does not support placement strategies.",
                    ));
                }
                s.placement_strategy = Some(p.clone());
            }
            if let Some(g) = input.health_check_grace_period_seconds {
                s.health_check_grace_period_seconds = Some(g);
            }
            if let Some(t) = &input.propagate_tags {
                s.propagate_tags = Some(t.clone());
            }
            if let Some(e) = input.enable_execute_command {
                s.enable_execute_command = Some(e);
            }
            let new_definition = match input.task_definition.as_deref().filter(|t| !t.is_empty()) {
                Some(reference) => Some(resolve_task_definition(view, scope, reference)?),
                None => None,
            };
            let changed_definition = new_definition
                .as_ref()
                .is_some_and(|td| td.task_definition_arn != s.task_definition);
            // Capacity, network and platform changes take effect through a
            // new deployment, as on ECS.
            let mut changed_launch = false;
            if let Some(items) = &new_strategy {
                if capacity::service_capacity(s)? == Capacity::Ec2 {
                    return Err(error::invalid_parameter(
                        "A service using the EC2 launch type cannot be moved to a capacity provider strategy; create a new service.",
                    ));
                }
                s.launch_type = None;
                s.capacity_provider_strategy = Some(capacity::strategy_shape(items));
                changed_launch = true;
            }
            if new_network.is_some() {
                s.network_configuration = input.network_configuration.clone();
                changed_launch = true;
            }
            if let Some(v) = input.platform_version.as_deref().filter(|v| !v.is_empty()) {
                s.platform_version = Some(v.to_string());
                changed_launch = true;
            }
            let capacity = capacity::service_capacity(s)?;
            if new_network.is_some() {
                record.network = new_network.clone();
            }
            let network = record.network.clone();
            let s = &mut record.service;
            let checked = match &new_definition {
                Some(td) => Some(td.clone()),
                None if changed_launch => stored_definition(
                    view,
                    scope,
                    s.task_definition.as_deref().unwrap_or_default(),
                )?,
                None => None,
            };
            if let Some(asked) = &asked_registries {
                let definition = match &new_definition {
                    Some(td) => Some(td.clone()),
                    None => stored_definition(
                        view,
                        scope,
                        s.task_definition.as_deref().unwrap_or_default(),
                    )?,
                };
                if let Some(td) = definition {
                    s.service_registries = Some(registry::check(asked, &td, &|arn| {
                        registry_info(&registry_infos, arn)
                    })?);
                }
            }
            // Gateway connectors are checked against the definition the
            // service runs next; the gateway controller follows the change.
            let connectors_next = input
                .gateway_connectors
                .clone()
                .unwrap_or_else(|| record.gateway_connectors.clone());
            if !connectors_next.is_empty()
                && (input.gateway_connectors.is_some() || new_definition.is_some())
            {
                let definition = match &new_definition {
                    Some(td) => Some(td.clone()),
                    None => stored_definition(
                        view,
                        scope,
                        record.service.task_definition.as_deref().unwrap_or_default(),
                    )?,
                };
                let td = definition.ok_or_else(|| {
                    error::invalid_parameter(
                        "gatewayConnectors need the service's taskDefinition; a service with the EXTERNAL deployment controller cannot use them.",
                    )
                })?;
                super::gateways::check_connectors(view, scope, &record.cluster, &connectors_next, &td)?;
            }
            record.gateway_connectors = connectors_next;
            let s = &mut record.service;
            // Load balancers are checked against the definition the
            // service runs next; a change takes effect through a new
            // deployment, as on ECS.
            let mut changed_balancers = false;
            let balanced_now: Vec<LoadBalancer> = s.load_balancers.clone().unwrap_or_default();
            let next_definition = match &new_definition {
                Some(td) => Some(td.clone()),
                None if asked_balancers.is_some() || !balanced_now.is_empty() => {
                    stored_definition(
                        view,
                        scope,
                        s.task_definition.as_deref().unwrap_or_default(),
                    )?
                }
                None => None,
            };
            if let Some(td) = &next_definition {
                let asked = asked_balancers.as_deref().unwrap_or(&balanced_now);
                let balanced = if asked_balancers.is_some() {
                    load_balancers::check(asked, td, &|arn| group_info(&group_infos, arn))?
                } else if new_definition.is_some() {
                    // The new revision must still have what they name.
                    load_balancers::check_containers(asked, td)?;
                    asked.to_vec()
                } else {
                    asked.to_vec()
                };
                changed_balancers = balanced != balanced_now;
                let has_registries = s
                    .service_registries
                    .as_ref()
                    .is_some_and(|r| !r.is_empty());
                if changed_balancers && balanced.is_empty() && s.role_arn.is_some() {
                    s.role_arn = None;
                }
                if let Some(role) = s.role_arn.clone() {
                    load_balancers::check_role(
                        Some(&role),
                        &scope.account,
                        &balanced,
                        td.network_mode.as_deref().unwrap_or("bridge"),
                        has_registries,
                    )?;
                }
                if !balanced.is_empty() && s.health_check_grace_period_seconds.is_none() {
                    s.health_check_grace_period_seconds = Some(0);
                }
                s.load_balancers = Some(balanced);
            }
            if let Some(td) = checked {
                let platform = s.platform_version.clone().filter(|v| v != "LATEST");
                capacity::check_definition(
                    &td,
                    &Default::default(),
                    &capacity,
                    network.as_ref(),
                    platform.as_deref().filter(|_| capacity != Capacity::Ec2),
                )?;
            }
            if check_shift {
                load_balancers::check_advanced(
                    s.load_balancers.as_deref().unwrap_or(&[]),
                    blue_green::strategy(s.deployment_configuration.as_ref()),
                    &|arn| group_info(&group_infos, arn),
                    &|arn| rule_info(&rule_infos, arn),
                )?;
            }
            let desired = s.desired_count.unwrap_or(0);
            let at = now;
            if changed_definition
                || changed_launch
                || changed_balancers
                || input.force_new_deployment == Some(true)
            {
                let arn = new_definition
                    .and_then(|td| td.task_definition_arn)
                    .or_else(|| s.task_definition.clone())
                    .unwrap_or_default();
                s.task_definition = Some(arn.clone());
                let fresh = deployment_for(s, &arn, desired, at);
                let deployments = s.deployments.get_or_insert_with(Vec::new);
                for d in deployments.iter_mut() {
                    if d.status.as_deref() == Some(PRIMARY) {
                        d.status = Some(ACTIVE.into());
                        d.updated_at = Some(at);
                    }
                }
                if let Some(mut cd) = code_deploy.clone() {
                    cd.ecs_deployment = fresh.id.clone().unwrap_or_default();
                    record.code_deploy = Some(cd);
                }
                deployments.insert(0, fresh);
                record.counted_failures.clear();
                record.consecutive_failures = 0;
                record.next_launch_at = 0.0;
                record.steady = false;
            } else if let Some(primary) = s
                .deployments
                .get_or_insert_with(Vec::new)
                .iter_mut()
                .find(|d| d.status.as_deref() == Some(PRIMARY))
            {
                if primary.desired_count != Some(desired) {
                    primary.desired_count = Some(desired);
                    primary.updated_at = Some(at);
                    record.steady = false;
                }
            }
            super::gateways::check_strategy(
                &record.gateway_connectors,
                blue_green::strategy(record.service.deployment_configuration.as_ref()),
            )?;
            Ok::<_, AwsError>((vec![Op::put(key, encode(&record)?)], record))
        })
        .await
        .map_err(error::store)??;
    Ok(record)
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: DeleteServiceRequest,
) -> Result<DeleteServiceResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error::missing("service"))?;
    let name = resolve_service(scope, &cluster, &reference)?;
    let force = input.force.unwrap_or(false);
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            let scope = &scope_owned;
            clusters::require_active(view, scope, &cluster)?;
            let key = scope.service(&cluster, &name);
            let (mut record, _) =
                load::<ServiceRecord>(view, &key)?.ok_or_else(service_not_found)?;
            if record.status() != ACTIVE {
                return Err(service_not_active());
            }
            if !record.is_daemon() && record.service.desired_count.unwrap_or(0) > 0 && !force {
                return Err(error::invalid_parameter(
                    "The service cannot be stopped while it is scaled above 0.",
                ));
            }
            let at = now;
            record.service.status = Some(DRAINING.into());
            record.service.desired_count = Some(0);
            for d in record.service.deployments.iter_mut().flatten() {
                d.desired_count = Some(0);
                d.updated_at = Some(at);
            }
            Ok::<_, AwsError>((vec![Op::put(key, encode(&record)?)], record))
        })
        .await
        .map_err(error::store)??;
    Ok(DeleteServiceResponse {
        service: Some(present(record, true)),
    })
}

/// The service as the API shows it.
pub(crate) fn present(record: ServiceRecord, include_tags: bool) -> Service {
    let mut service = record.service;
    if !include_tags {
        service.tags = None;
    }
    service
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeServicesRequest,
) -> Result<DescribeServicesResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let include_tags = error::include_tags(input.include)?;
    let refs = input
        .services
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error::missing("services"))?;
    if refs.len() > 10 {
        return Err(error::invalid_parameter(
            "DescribeServices accepts at most 10 services per call.",
        ));
    }
    clusters::require_active(view, scope, &cluster)?;
    let (found, missing) = load_each::<ServiceRecord>(view, refs, |reference| {
        let name = resolve_service(scope, &cluster, reference).ok()?;
        Some(scope.service(&cluster, &name))
    })?;
    let failures = missing.into_iter().map(|reference| {
        error::missing_failure(scope, reference, |name| format!("service/{cluster}/{name}"))
    });
    Ok(DescribeServicesResponse {
        services: Some(
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
    input: ListServicesRequest,
) -> Result<ListServicesResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let limit = pagination::page_size(input.max_results, 10)?;
    if let Some(l) = input.launch_type.as_deref() {
        if !["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"].contains(&l) {
            return Err(error::invalid_parameter(format!(
                "Invalid launchType '{l}'."
            )));
        }
    }
    if let Some(s) = input.scheduling_strategy.as_deref() {
        if ![REPLICA, DAEMON].contains(&s) {
            return Err(error::invalid_parameter(format!(
                "Invalid schedulingStrategy '{s}'."
            )));
        }
    }
    clusters::require_active(view, scope, &cluster)?;
    let (arns, next_token) = pagination::filtered_page(
        view,
        &scope.services(&cluster),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: ServiceRecord = decode(kv)?;
            let s = &record.service;
            // DRAINING services are no longer listed, as on ECS.
            let wanted = record.status() == ACTIVE
                && input
                    .launch_type
                    .as_ref()
                    .is_none_or(|l| s.launch_type.as_ref() == Some(l))
                && input
                    .scheduling_strategy
                    .as_ref()
                    .is_none_or(|x| s.scheduling_strategy.as_ref() == Some(x));
            Ok(wanted.then(|| record.arn().to_string()))
        },
    )?;
    Ok(ListServicesResponse {
        service_arns: Some(arns),
        next_token,
    })
}

/// The Cloud Map services `serviceRegistries` name, described before the
/// mutation that checks them against the task definition.
fn describe_registries(
    registries: Option<&dyn ServiceRegistries>,
    scope: &Scope,
    asked: &[ServiceRegistry],
) -> Result<std::collections::HashMap<String, RegistryInfo>, AwsError> {
    let mut out = std::collections::HashMap::new();
    if asked.is_empty() {
        return Ok(out);
    }
    let Some(registries) = registries else {
        return Err(error::invalid_parameter(
            "Service discovery (AWS Cloud Map) is not available on this server.",
        ));
    };
    for arn in asked.iter().filter_map(|r| r.registry_arn.as_deref()) {
        if !arn.is_empty() && !out.contains_key(arn) {
            out.insert(
                arn.to_string(),
                registries.describe(&scope.account, &scope.region, arn)?,
            );
        }
    }
    Ok(out)
}

/// The target groups `loadBalancers` name, described before the mutation
/// that checks them against the task definition.
fn describe_target_groups(
    balancers: Option<&dyn LoadBalancerTargets>,
    scope: &Scope,
    asked: &[LoadBalancer],
) -> Result<std::collections::HashMap<String, TargetGroupInfo>, AwsError> {
    let mut out = std::collections::HashMap::new();
    if asked.is_empty() {
        return Ok(out);
    }
    let Some(balancers) = balancers else {
        return Err(error::invalid_parameter(
            "Elastic Load Balancing is not available on this server.",
        ));
    };
    for arn in asked.iter().filter_map(|l| l.target_group_arn.as_deref()) {
        if !arn.is_empty() && !out.contains_key(arn) {
            out.insert(
                arn.to_string(),
                balancers.describe_target_group(&scope.account, &scope.region, arn)?,
            );
        }
    }
    Ok(out)
}

/// The alternate target groups (added to `groups`) and the listener rules
/// that `advancedConfiguration`s name, described before the mutation that
/// checks them.
fn describe_advanced(
    balancers: Option<&dyn LoadBalancerTargets>,
    scope: &Scope,
    asked: &[LoadBalancer],
    groups: &mut std::collections::HashMap<String, TargetGroupInfo>,
) -> Result<std::collections::HashMap<String, RuleInfo>, AwsError> {
    let mut rules = std::collections::HashMap::new();
    let Some(balancers) = balancers else {
        return Ok(rules);
    };
    for adv in asked
        .iter()
        .filter_map(|l| l.advanced_configuration.as_ref())
    {
        if let Some(arn) = adv
            .alternate_target_group_arn
            .as_deref()
            .filter(|a| !a.is_empty() && !groups.contains_key(*a))
        {
            groups.insert(
                arn.to_string(),
                balancers.describe_target_group(&scope.account, &scope.region, arn)?,
            );
        }
        for arn in [&adv.production_listener_rule, &adv.test_listener_rule]
            .into_iter()
            .flatten()
        {
            if !arn.is_empty() && !rules.contains_key(arn) {
                rules.insert(
                    arn.clone(),
                    balancers.describe_rule(&scope.account, &scope.region, arn)?,
                );
            }
        }
    }
    Ok(rules)
}

fn rule_info(
    infos: &std::collections::HashMap<String, RuleInfo>,
    arn: &str,
) -> Result<RuleInfo, AwsError> {
    infos
        .get(arn)
        .cloned()
        .ok_or_else(|| error::invalid_parameter(format!("The listener rule {arn} does not exist.")))
}

fn group_info(
    infos: &std::collections::HashMap<String, TargetGroupInfo>,
    arn: &str,
) -> Result<TargetGroupInfo, AwsError> {
    infos.get(arn).cloned().ok_or_else(|| {
        error::invalid_parameter(format!(
            "The target group with targetGroupArn {arn} does not exist."
        ))
    })
}

fn registry_info(
    infos: &std::collections::HashMap<String, RegistryInfo>,
    arn: &str,
) -> Result<RegistryInfo, AwsError> {
    infos.get(arn).cloned().ok_or_else(|| {
        error::invalid_parameter(format!("The service registry {arn} was not found."))
    })
}

#[cfg(test)]
mod tests {
    //! CreateService, UpdateService, DeleteService, DescribeServices and
    //! ListServices through the handler harness.

    use serde_json::{json, Value};

    use crate::test_support::{Harness, Spec};

    async fn setup() -> Harness {
        let h = Harness::new();
        h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h
    }

    fn service(h: &Harness, name: &str) -> Value {
        let record = crate::state::records::load::<crate::state::services::ServiceRecord>(
            h.store.as_ref(),
            &h.scope().service("default", name),
        )
        .ok()
        .flatten()
        .map(|(r, _)| r.service)
        .unwrap_or_default();
        serde_json::to_value(record).unwrap_or_default()
    }

    #[tokio::test]
    async fn create_service_refuses_bad_input_before_touching_state() {
        let h = setup().await;
        let base = json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1});
        let with = |extra: Value| {
            let mut v = base.clone();
            for (k, x) in extra.as_object().cloned().unwrap_or_default() {
                v[k] = x;
            }
            v
        };
        let cases = [
            json!({"serviceName": "web", "taskDefinition": "web"}),
            json!({"serviceName": "", "taskDefinition": "web", "desiredCount": 1}),
            with(json!({"serviceName": "no spaces"})),
            with(json!({"taskDefinition": ""})),
            with(json!({"desiredCount": -1})),
            with(json!({"schedulingStrategy": "SOMETIMES"})),
            with(json!({"schedulingStrategy": "DAEMON"})),
            with(json!({"deploymentConfiguration": {"maximumPercent": 50}})),
            with(json!({"deploymentConfiguration": {"minimumHealthyPercent": 150}})),
            with(json!({"deploymentController": {"type": "CODE_DEPLOY"}})),
            with(
                json!({"placementStrategy": vec![json!({"type": "spread", "field": "instanceId"}); 6]}),
            ),
            with(
                json!({"placementConstraints": [{"type": "memberOf", "expression": "nonsense =="}]}),
            ),
            with(json!({"propagateTags": "EVERYWHERE"})),
            with(json!({"clientToken": "x".repeat(37)})),
        ];
        for input in cases {
            let e = h.err("CreateService", input.clone()).await;
            assert_eq!(
                e.code, "InvalidParameterException",
                "{input}: {}",
                e.message
            );
        }
        let e = h
            .err("CreateService", with(json!({"cluster": "nope"})))
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
        let e = h
            .err("CreateService", with(json!({"taskDefinition": "missing"})))
            .await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            ("InvalidParameterException", "TaskDefinition not found.")
        );
        let listed = h.ok("ListServices", json!({})).await;
        assert_eq!(listed["serviceArns"], json!([]), "nothing was written");
    }

    #[tokio::test]
    async fn create_service_fills_ecs_defaults() {
        let h = setup().await;
        let out = h
            .ok(
                "CreateService",
                json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
            )
            .await;
        let s = &out["service"];
        assert_eq!(s["status"], "ACTIVE");
        assert_eq!(s["launchType"], "EC2");
        assert_eq!(s["schedulingStrategy"], "REPLICA");
        assert_eq!(s["deploymentConfiguration"]["maximumPercent"], 200);
        assert_eq!(s["deploymentConfiguration"]["minimumHealthyPercent"], 100);
        assert_eq!(
            s["deploymentConfiguration"]["deploymentCircuitBreaker"],
            json!({"enable": false, "rollback": false})
        );
        assert_eq!(s["deployments"].as_array().map(Vec::len), Some(1));
        let d = &s["deployments"][0];
        assert_eq!(d["status"], "PRIMARY");
        assert_eq!(d["rolloutState"], "IN_PROGRESS");
        assert_eq!(d["desiredCount"], 2);
        assert_eq!(d["createdAt"], json!(h.now()));
        let id = d["id"].as_str().unwrap_or_default();
        let digits = id.strip_prefix("ecs-svc/").unwrap_or_default();
        assert!(
            digits.len() == 19 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{id}"
        );
        assert_eq!(s["serviceArn"], h.scope().arn("service/default/web"));
        // A daemon: no desired count, max 100 %, min 0 %.
        let out = h
            .ok(
                "CreateService",
                json!({"serviceName": "d", "taskDefinition": "web", "schedulingStrategy": "DAEMON"}),
            )
            .await;
        assert_eq!(
            out["service"]["deploymentConfiguration"]["maximumPercent"],
            100
        );
        assert_eq!(
            out["service"]["deploymentConfiguration"]["minimumHealthyPercent"],
            0
        );
    }

    #[tokio::test]
    async fn create_service_client_token_is_idempotent_for_the_same_call_only() {
        let h = setup().await;
        h.task_definition("other", json!({})).await;
        let call = json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
            "clientToken": "tok-1"});
        let first = h.ok("CreateService", call.clone()).await;
        h.advance(10.0);
        let again = h.ok("CreateService", call.clone()).await;
        assert_eq!(first, again, "the same call gets the same answer");
        for different in [
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
                "clientToken": "tok-1"}),
            json!({"serviceName": "web", "taskDefinition": "other", "desiredCount": 1,
                "clientToken": "tok-1"}),
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                "clientToken": "tok-2"}),
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        ] {
            let e = h.err("CreateService", different.clone()).await;
            assert_eq!(
                (e.code.as_ref(), e.message.as_str()),
                (
                    "InvalidParameterException",
                    "Creation of service was not idempotent."
                ),
                "{different}"
            );
        }
        assert_eq!(service(&h, "web")["desiredCount"], 1);
    }

    #[tokio::test]
    async fn a_deleted_name_is_free_again_once_inactive() {
        let h = setup().await;
        let call = json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 0});
        h.ok("CreateService", call.clone()).await;
        let out = h.ok("DeleteService", json!({"service": "web"})).await;
        assert_eq!(out["service"]["status"], "DRAINING");
        let e = h.err("CreateService", call.clone()).await;
        assert_eq!(
            e.code, "InvalidParameterException",
            "DRAINING still holds the name"
        );
        // No tasks: the controller's next pass makes it INACTIVE.
        h.controller().pass().await;
        assert_eq!(service(&h, "web")["status"], "INACTIVE");
        let out = h.ok("CreateService", call).await;
        assert_eq!(out["service"]["status"], "ACTIVE");
        assert_eq!(
            out["service"]["deployments"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[tokio::test]
    async fn update_service_errors_as_ecs() {
        let h = setup().await;
        let e = h
            .err(
                "UpdateService",
                json!({"service": "ghost", "desiredCount": 1}),
            )
            .await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            ("ServiceNotFoundException", "Service not found.")
        );
        let e = h
            .err(
                "UpdateService",
                json!({"service": "web", "cluster": "nope"}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
        for bad in [
            json!({"service": "web", "desiredCount": -1}),
            json!({"service": "web", "taskDefinition": "missing"}),
            json!({"service": "web", "deploymentConfiguration": {"maximumPercent": 99}}),
            json!({"service": "web", "propagateTags": "EVERYWHERE"}),
            json!({"service": "web", "placementStrategy": [{"type": "binpack", "field": "disk"}]}),
        ] {
            let e = h.err("UpdateService", bad.clone()).await;
            assert_eq!(e.code, "InvalidParameterException", "{bad}: {}", e.message);
        }
        h.ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "web:1"}),
        )
        .await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "web:2"}),
        )
        .await;
        let e = h
            .err(
                "UpdateService",
                json!({"service": "web", "taskDefinition": "web:2"}),
            )
            .await;
        assert_eq!(
            e.code, "InvalidParameterException",
            "an INACTIVE revision: {}",
            e.message
        );
        // Scaling a service whose revision is INACTIVE still works, as on ECS.
        let out = h
            .ok(
                "UpdateService",
                json!({"service": "web", "desiredCount": 1}),
            )
            .await;
        assert_eq!(out["service"]["desiredCount"], 1);
        h.ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 0}),
        )
        .await;
        h.ok("DeleteService", json!({"service": "web"})).await;
        let e = h
            .err(
                "UpdateService",
                json!({"service": "web", "desiredCount": 1}),
            )
            .await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            ("ServiceNotActiveException", "Service was not ACTIVE.")
        );
        let e = h.err("DeleteService", json!({"service": "web"})).await;
        assert_eq!(e.code, "ServiceNotActiveException");
        let e = h.err("DeleteService", json!({"service": "ghost"})).await;
        assert_eq!(e.code, "ServiceNotFoundException");
    }

    #[tokio::test]
    async fn update_service_deploys_only_when_the_tasks_change() {
        let h = setup().await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        )
        .await;
        let first = service(&h, "web")["deployments"][0]["id"].clone();
        // A new desired count changes the primary deployment only.
        h.advance(1.0);
        let out = h
            .ok(
                "UpdateService",
                json!({"service": "web", "desiredCount": 3}),
            )
            .await;
        let deployments = out["service"]["deployments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(deployments.len(), 1);
        assert_eq!(deployments[0]["id"], first);
        assert_eq!(deployments[0]["desiredCount"], 3);
        assert_eq!(deployments[0]["updatedAt"], json!(h.now()));
        // The same revision again is no change either.
        let out = h
            .ok(
                "UpdateService",
                json!({"service": "web", "taskDefinition": "web:1"}),
            )
            .await;
        assert_eq!(
            out["service"]["deployments"].as_array().map(Vec::len),
            Some(1)
        );
        // A new revision: a new PRIMARY, the old one ACTIVE.
        let td2 = h.task_definition("web", json!({"memory": 128})).await;
        let out = h
            .ok(
                "UpdateService",
                json!({"service": "web", "taskDefinition": "web"}),
            )
            .await;
        let s = &out["service"];
        assert_eq!(s["taskDefinition"], td2.as_str());
        let statuses: Vec<(Value, Value)> = s["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["status"].clone(), d["taskDefinition"].clone()))
            .collect();
        assert_eq!(
            statuses,
            [
                (json!("PRIMARY"), json!(td2)),
                (
                    json!("ACTIVE"),
                    json!(h.scope().arn("task-definition/web:1"))
                )
            ]
        );
        assert_eq!(s["deployments"][0]["desiredCount"], 3);
        // forceNewDeployment: another deployment of the same revision.
        let out = h
            .ok(
                "UpdateService",
                json!({"service": "web", "forceNewDeployment": true}),
            )
            .await;
        assert_eq!(
            out["service"]["deployments"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(
            out["service"]["deployments"][0]["taskDefinition"],
            td2.as_str()
        );
    }

    #[tokio::test]
    async fn delete_service_needs_force_while_scaled_up() {
        let h = setup().await;
        h.ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
        let e = h.err("DeleteService", json!({"service": "web"})).await;
        assert_eq!(
            (e.code.as_ref(), e.message.as_str()),
            (
                "InvalidParameterException",
                "The service cannot be stopped while it is scaled above 0."
            )
        );
        assert_eq!(service(&h, "web")["status"], "ACTIVE");
        let out = h
            .ok("DeleteService", json!({"service": "web", "force": true}))
            .await;
        assert_eq!(out["service"]["status"], "DRAINING");
        assert_eq!(out["service"]["desiredCount"], 0);
        assert!(out["service"]["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|d| d["desiredCount"] == 0));
        // A DRAINING service is described but no longer listed.
        let listed = h.ok("ListServices", json!({})).await;
        assert_eq!(listed["serviceArns"], json!([]));
        let out = h.ok("DescribeServices", json!({"services": ["web"]})).await;
        assert_eq!(out["services"][0]["status"], "DRAINING");
        // A daemon needs no force.
        h.ok(
            "CreateService",
            json!({"serviceName": "d", "taskDefinition": "web", "schedulingStrategy": "DAEMON"}),
        )
        .await;
        h.ok("DeleteService", json!({"service": "d"})).await;
    }

    #[tokio::test]
    async fn describe_and_list_services() {
        let h = setup().await;
        for name in ["a", "b", "c"] {
            h.ok(
                "CreateService",
                json!({"serviceName": name, "taskDefinition": "web", "desiredCount": 0,
                    "tags": [{"key": "name", "value": name}]}),
            )
            .await;
        }
        let out = h
            .ok(
                "DescribeServices",
                json!({"services": ["a", h.scope().arn("service/default/b"), "zzz"]}),
            )
            .await;
        assert_eq!(out["services"].as_array().map(Vec::len), Some(2));
        assert!(out["services"][0].get("tags").is_none());
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        assert_eq!(
            out["failures"][0]["arn"],
            h.scope().arn("service/default/zzz")
        );
        let out = h
            .ok(
                "DescribeServices",
                json!({"services": ["a"], "include": ["TAGS"]}),
            )
            .await;
        assert_eq!(
            out["services"][0]["tags"],
            json!([{"key": "name", "value": "a"}])
        );
        let many: Vec<String> = (0..11).map(|i| format!("s{i}")).collect();
        let e = h.err("DescribeServices", json!({"services": many})).await;
        assert_eq!(e.code, "InvalidParameterException");
        let e = h
            .err(
                "DescribeServices",
                json!({"services": ["a"], "cluster": "nope"}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
        let page = h.ok("ListServices", json!({"maxResults": 2})).await;
        assert_eq!(page["serviceArns"].as_array().map(Vec::len), Some(2));
        let rest = h
            .ok(
                "ListServices",
                json!({"maxResults": 2, "nextToken": page["nextToken"]}),
            )
            .await;
        assert_eq!(rest["serviceArns"].as_array().map(Vec::len), Some(1));
        assert!(rest.get("nextToken").is_none());
        let none = h.ok("ListServices", json!({"launchType": "FARGATE"})).await;
        assert_eq!(none["serviceArns"], json!([]));
        let e = h
            .err("ListServices", json!({"schedulingStrategy": "X"}))
            .await;
        assert_eq!(e.code, "InvalidParameterException");
    }
}
