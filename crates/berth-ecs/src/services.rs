//! Services: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices. Handlers record what the user wants (the service and its
//! deployments); the service controller (`service_controller`) makes it so.

use std::collections::BTreeSet;

use berth_model::shapes::ecs::{
    CreateServiceRequest, CreateServiceResponse, DeleteServiceRequest, DeleteServiceResponse,
    Deployment, DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentController,
    DescribeServicesRequest, DescribeServicesResponse, ListServicesRequest, ListServicesResponse,
    PlacementConstraint, PlacementStrategy, Service, ServiceEvent, Tag, UpdateServiceRequest,
    UpdateServiceResponse,
};
use berth_model::{Arn, AwsError};
use berth_store::{Op, ReadView, Store, StoreExt};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::clusters::{self, resolve_name};
use crate::keys::Scope;
use crate::records::{decode, encode, load, now};
use crate::task_definitions::{self, TaskDefinitionRecord};
use crate::{error, pagination, tagging};

pub const ACTIVE: &str = "ACTIVE";
pub const DRAINING: &str = "DRAINING";
pub const INACTIVE: &str = "INACTIVE";
pub const PRIMARY: &str = "PRIMARY";
pub const REPLICA: &str = "REPLICA";
pub const DAEMON: &str = "DAEMON";
pub const IN_PROGRESS: &str = "IN_PROGRESS";
pub const COMPLETED: &str = "COMPLETED";
pub const FAILED: &str = "FAILED";

/// Events kept per service, newest first (ECS shows the latest 100).
pub const MAX_EVENTS: usize = 100;

/// A stored service: the API's view plus the controller's bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub name: String,
    pub cluster: String,
    pub service: Service,
    #[serde(default)]
    pub client_token: Option<String>,
    /// The task definition of the last deployment that COMPLETED (rollback target).
    #[serde(default)]
    pub last_completed_task_definition: Option<String>,
    /// Stopped tasks already counted as failures of the primary deployment.
    #[serde(default)]
    pub counted_failures: BTreeSet<String>,
    /// Launch throttling after repeated failures: no new task before this time.
    #[serde(default)]
    pub next_launch_at: f64,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the service was last seen steady (to report it once per change).
    #[serde(default)]
    pub steady: bool,
    /// The awsvpc configuration with its subnets looked up (their zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::fargate::AwsVpc>,
}

impl ServiceRecord {
    pub fn status(&self) -> &str {
        self.service.status.as_deref().unwrap_or(ACTIVE)
    }

    pub fn arn(&self) -> &str {
        self.service.service_arn.as_deref().unwrap_or("")
    }

    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }

    pub fn is_daemon(&self) -> bool {
        self.service.scheduling_strategy.as_deref() == Some(DAEMON)
    }

    pub fn deployments(&self) -> &[Deployment] {
        self.service.deployments.as_deref().unwrap_or(&[])
    }

    /// Adds an event (newest first), keeping at most [`MAX_EVENTS`].
    pub fn event(&mut self, message: String, at: f64) {
        let events = self.service.events.get_or_insert_with(Vec::new);
        events.insert(
            0,
            ServiceEvent {
                id: Some(uuid::Uuid::new_v4().to_string()),
                created_at: Some(at),
                message: Some(message),
            },
        );
        events.truncate(MAX_EVENTS);
    }
}

/// A new deployment id in ECS's form (`ecs-svc/` and 19 digits).
pub fn deployment_id() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "ecs-svc/{:019}",
        rng.gen_range(1_000_000_000_000_000_000u64..10_000_000_000_000_000_000u64)
    )
}

pub fn new_deployment(
    task_definition: &str,
    desired: i32,
    at: f64,
    launch_type: Option<String>,
) -> Deployment {
    Deployment {
        id: Some(deployment_id()),
        status: Some(PRIMARY.into()),
        task_definition: Some(task_definition.to_string()),
        desired_count: Some(desired),
        pending_count: Some(0),
        running_count: Some(0),
        failed_tasks: Some(0),
        created_at: Some(at),
        updated_at: Some(at),
        launch_type,
        rollout_state: Some(IN_PROGRESS.into()),
        rollout_state_reason: Some("ECS deployment ecs-svc in progress.".into()),
        ..Deployment::default()
    }
}

/// A new primary deployment of `service` running `task_definition`, with
/// the service's launch type or capacity provider strategy and network.
pub fn deployment_for(
    service: &Service,
    task_definition: &str,
    desired: i32,
    at: f64,
) -> Deployment {
    let mut d = new_deployment(task_definition, desired, at, service.launch_type.clone());
    d.capacity_provider_strategy = service.capacity_provider_strategy.clone();
    d.network_configuration = service.network_configuration.clone();
    d.platform_version = service.platform_version.clone();
    d.platform_family = service.platform_family.clone();
    d
}

fn check_service_name(name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(error::invalid_parameter(
            "Service name is invalid. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ))
    }
}

/// Turns a service reference (name or ARN) into its name.
pub fn resolve_service(scope: &Scope, cluster: &str, reference: &str) -> Result<String, AwsError> {
    if reference.starts_with("arn:") {
        let arn = Arn::parse(reference)
            .filter(|a| a.service == "ecs" && a.resource_type() == "service")
            .ok_or_else(|| error::invalid_parameter(format!("Invalid service ARN: {reference}")))?;
        if arn.account != scope.account || arn.region != scope.region {
            return Err(service_not_found());
        }
        let rest = arn.resource_id();
        let name = match rest.rsplit_once('/') {
            Some((c, n)) if c == cluster => n,
            Some(_) => return Err(service_not_found()),
            None => rest,
        };
        check_service_name(name)?;
        return Ok(name.to_string());
    }
    check_service_name(reference)?;
    Ok(reference.to_string())
}

pub fn service_not_found() -> AwsError {
    AwsError::bad_request("ServiceNotFoundException", "Service not found.")
}

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
            if strategy != "ROLLING" {
                return Err(error::invalid_parameter(format!(
                    "Berth supports the ROLLING deployment strategy only, not {strategy}."
                )));
            }
        }
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
    crate::placement::check(constraints, strategies)
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
fn stored_definition(
    view: &dyn ReadView,
    scope: &Scope,
    reference: &str,
) -> Result<Option<berth_model::shapes::ecs::TaskDefinition>, AwsError> {
    let parsed = task_definitions::parse_reference(scope, reference)?;
    let found: Option<(TaskDefinitionRecord, u64)> = task_definitions::find(view, scope, &parsed)?;
    Ok(found.map(|(record, _)| record.task_definition))
}

pub async fn create(
    store: &dyn Store,
    scope: &Scope,
    caller_arn: &str,
    networks: Option<&dyn crate::networking::TaskNetworks>,
    input: CreateServiceRequest,
) -> Result<CreateServiceResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let name = input
        .service_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("serviceName"))?;
    check_service_name(&name)?;
    let task_definition = input
        .task_definition
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinition"))?;
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
    let (requested, network) = crate::fargate::launch_request(
        networks,
        scope,
        input.launch_type.as_deref(),
        input.capacity_provider_strategy.as_deref(),
        input.network_configuration.as_ref(),
        "services",
    )?;
    let platform_version = input.platform_version.clone().filter(|v| !v.is_empty());
    let network_configuration = input.network_configuration.clone();
    let asked_launch_type = input.launch_type.clone();
    if daemon
        && requested
            .as_ref()
            .is_some_and(|c| *c != crate::fargate::Capacity::Ec2)
    {
        return Err(error::invalid_parameter(
            "The daemon scheduling strategy does not support the Fargate launch type or capacity providers.",
        ));
    }
    if let Some(controller) = &input.deployment_controller {
        if controller.r#type.as_deref().is_some_and(|t| t != "ECS") {
            return Err(error::invalid_parameter(
                "Berth supports the ECS deployment controller only.",
            ));
        }
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
    tagging::check_new(&tags, std::iter::empty())?;
    match input.propagate_tags.as_deref() {
        None | Some("TASK_DEFINITION" | "SERVICE" | "NONE") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid propagateTags '{other}'. Valid values: TASK_DEFINITION, SERVICE, NONE."
            )))
        }
    }
    let client_token = input.client_token.filter(|t| !t.is_empty());
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
            r#type: Some("ECS".into()),
        }),
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
            let capacity = crate::fargate::effective_capacity(
                requested.clone(),
                cluster_record
                    .default_capacity_provider_strategy
                    .as_deref()
                    .unwrap_or(&[]),
            )?;
            let key = scope.service(&cluster, &name);
            if let Some((existing, _)) = load::<ServiceRecord>(view, &key)? {
                if existing.status() != INACTIVE {
                    if client_token.is_some() && existing.client_token == client_token {
                        return Ok((Vec::new(), existing));
                    }
                    return Err(error::invalid_parameter(
                        "Creation of service was not idempotent.",
                    ));
                }
            }
            let td = resolve_task_definition(view, scope, &task_definition)?;
            crate::fargate::check_definition(
                &td,
                &Default::default(),
                &capacity,
                network.as_ref(),
                platform_version.as_deref(),
            )?;
            let arn = td.task_definition_arn.unwrap_or_default();
            let at = now();
            let mut service = template.clone();
            service.task_definition = Some(arn.clone());
            service.created_at = Some(at);
            let (launch_type, strategy) = match (&asked_launch_type, &capacity) {
                (Some(l), _) => (Some(l.clone()), None),
                (None, crate::fargate::Capacity::Ec2) => (Some("EC2".to_string()), None),
                (None, crate::fargate::Capacity::Fargate(items)) => {
                    (None, Some(crate::fargate::strategy_shape(items)))
                }
            };
            service.launch_type = launch_type;
            service.capacity_provider_strategy = strategy;
            service.network_configuration = network_configuration.clone();
            if capacity != crate::fargate::Capacity::Ec2 {
                service.platform_version =
                    Some(platform_version.clone().unwrap_or_else(|| "LATEST".into()));
                service.platform_family = Some("Linux".into());
            }
            service.deployments = Some(vec![deployment_for(&service, &arn, desired, at)]);
            let record = ServiceRecord {
                name: name.clone(),
                cluster: cluster.clone(),
                service,
                client_token: client_token.clone(),
                network: network.clone(),
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

pub async fn update(
    store: &dyn Store,
    scope: &Scope,
    networks: Option<&dyn crate::networking::TaskNetworks>,
    input: UpdateServiceRequest,
) -> Result<UpdateServiceResponse, AwsError> {
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
        Some(items) if !items.is_empty() => Some(crate::fargate::strategy_items(items)?),
        _ => None,
    };
    let new_network = crate::fargate::resolve_network(
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
                if crate::fargate::service_capacity(s)? == crate::fargate::Capacity::Ec2 {
                    return Err(error::invalid_parameter(
                        "A service using the EC2 launch type cannot be moved to a capacity provider strategy; create a new service.",
                    ));
                }
                s.launch_type = None;
                s.capacity_provider_strategy = Some(crate::fargate::strategy_shape(items));
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
            let capacity = crate::fargate::service_capacity(s)?;
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
            if let Some(td) = checked {
                let platform = s.platform_version.clone().filter(|v| v != "LATEST");
                crate::fargate::check_definition(
                    &td,
                    &Default::default(),
                    &capacity,
                    network.as_ref(),
                    platform.as_deref().filter(|_| capacity != crate::fargate::Capacity::Ec2),
                )?;
            }
            let desired = s.desired_count.unwrap_or(0);
            let at = now();
            if changed_definition || changed_launch || input.force_new_deployment == Some(true) {
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
            Ok::<_, AwsError>((vec![Op::put(key, encode(&record)?)], record))
        })
        .await
        .map_err(error::store)??;
    Ok(UpdateServiceResponse {
        service: Some(present(record, true)),
    })
}

pub async fn delete(
    store: &dyn Store,
    scope: &Scope,
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
            let at = now();
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
pub fn present(record: ServiceRecord, include_tags: bool) -> Service {
    let mut service = record.service;
    if !include_tags {
        service.tags = None;
    }
    service
}

pub fn describe(
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
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for reference in refs {
        let found = match resolve_service(scope, &cluster, &reference) {
            Ok(name) => load::<ServiceRecord>(view, &scope.service(&cluster, &name))?,
            Err(_) => None,
        };
        match found {
            Some((record, _)) => services.push(present(record, include_tags)),
            None => failures.push(error::missing_failure(scope, reference, |name| {
                format!("service/{cluster}/{name}")
            })),
        }
    }
    Ok(DescribeServicesResponse {
        services: Some(services),
        failures: Some(failures),
    })
}

pub fn list(
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
            let wanted = record.status() != INACTIVE
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

/// Services of a cluster that are not INACTIVE (for the cluster's counts).
pub fn active_count(view: &(impl ReadView + ?Sized), scope: &Scope, cluster: &str) -> i32 {
    view.range(&scope.services(cluster), None, usize::MAX)
        .iter()
        .filter(|kv| decode::<ServiceRecord>(kv).is_ok_and(|r| r.status() == ACTIVE))
        .count() as i32
}
