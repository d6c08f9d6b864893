//! Service records: the service as the API shows it plus the controller's
//! bookkeeping, its deployments, and service references.

use std::collections::{BTreeMap, BTreeSet};

use berth_model::shapes::ecs::{Deployment, DeploymentConfiguration, Service, ServiceEvent};
use berth_model::{Arn, AwsError};
use berth_store::ReadView;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;
use crate::state::network::AwsVpc;
use crate::state::records::decode;

pub(crate) const ACTIVE: &str = "ACTIVE";

pub(crate) const DRAINING: &str = "DRAINING";

pub(crate) const INACTIVE: &str = "INACTIVE";

pub(crate) const PRIMARY: &str = "PRIMARY";

pub(crate) const REPLICA: &str = "REPLICA";

pub(crate) const DAEMON: &str = "DAEMON";

pub(crate) const IN_PROGRESS: &str = "IN_PROGRESS";

pub(crate) const COMPLETED: &str = "COMPLETED";

pub(crate) const FAILED: &str = "FAILED";

/// The deployment controller of services that run task sets.
pub(crate) const EXTERNAL: &str = "EXTERNAL";
pub(crate) const CODE_DEPLOY: &str = "CODE_DEPLOY";

/// Events kept per service, newest first (ECS shows the latest 100).
pub(crate) const MAX_EVENTS: usize = 100;

/// A stored service: the API's view plus the controller's bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceRecord {
    pub name: String,
    pub cluster: String,
    pub service: Service,
    #[serde(default)]
    pub client_token: Option<String>,
    /// A fingerprint of the CreateService call that created it (empty in
    /// records written before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
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
    pub network: Option<AwsVpc>,
    /// Deployments no longer in `deployments` (newest first, at most
    /// [`MAX_PAST_DEPLOYMENTS`]), with when they left it: what
    /// ListServiceDeployments and DescribeServiceRevisions read back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub past_deployments: Vec<PastDeployment>,
    /// Deployments rolled back (circuit breaker or StopServiceDeployment),
    /// by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollbacks: BTreeMap<String, RollbackNote>,
    /// The awsvpc configuration of each task set (EXTERNAL controller),
    /// with its subnets looked up, by task set id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_set_networks: BTreeMap<String, AwsVpc>,
    /// CreateTaskSet's client tokens: token to task set id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_set_tokens: BTreeMap<String, String>,
    /// The blue/green (linear, canary) deployment under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    /// Whether the alternate target groups serve production (they swap
    /// roles at the end of each blue/green deployment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alternate_serving: bool,
    /// The last lifecycle stage of blue/green deployments, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lifecycle_stages: BTreeMap<String, String>,
    /// A CODE_DEPLOY service's target group pair, listeners and traffic
    /// routing, as its last CodeDeploy deployment set them (kept after it:
    /// the pair says where the service's tasks register).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_deploy: Option<CodeDeployRouting>,
    /// The service's gateway connectors (CreateService/UpdateService
    /// `gatewayConnectors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_connectors: Vec<berth_model::shapes::ecs::GatewayConnector>,
    /// The gateway routes the gateway controller keeps for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_routes: Vec<crate::state::gateway_routes::GatewayRouteRecord>,
}

/// How CodeDeploy deploys a CODE_DEPLOY service: through ECS's own
/// blue/green engine, with the pair, listeners and routing of the
/// deployment group and configuration instead of the service's
/// `advancedConfiguration` and `deploymentConfiguration.strategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeDeployRouting {
    /// CodeDeploy's deployment id (`d-…`).
    pub deployment_id: String,
    /// The ECS deployment it started (`ecs-svc/…`).
    pub ecs_deployment: String,
    /// The pair's other target group (the service's `loadBalancers` name
    /// the first).
    pub alternate_target_group_arn: String,
    pub production_listener: String,
    #[serde(default)]
    pub test_listener: Option<String>,
    /// BLUE_GREEN, CANARY or LINEAR with its steps and the bake time
    /// (CodeDeploy's termination wait).
    pub configuration: DeploymentConfiguration,
    /// Production traffic waits, once the test listener reaches the new
    /// revision, until CodeDeploy's ContinueDeployment (READY_WAIT) clears
    /// this (deploymentReadyOption STOP_DEPLOYMENT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_production: bool,
    /// ContinueDeployment (TERMINATION_WAIT) ended the bake: the original
    /// revision stops now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end_bake: bool,
}

impl ServiceRecord {
    /// Whether the service registers its tasks with load balancers: its
    /// own `loadBalancers`, or target groups of its gateway routes.
    pub(crate) fn has_balancers(&self) -> bool {
        self.service
            .load_balancers
            .as_ref()
            .is_some_and(|l| !l.is_empty())
            || !crate::state::gateway_routes::balancers(&self.gateway_routes).is_empty()
    }
}

impl CodeDeployRouting {
    /// Whether this routing holds the ECS deployment `deployment` before
    /// production traffic moves.
    pub(crate) fn holds(&self, deployment: &str) -> bool {
        self.hold_production && self.ecs_deployment == deployment
    }

    /// Whether ContinueDeployment ended the bake of `deployment`.
    pub(crate) fn bake_ended(&self, deployment: &str) -> bool {
        self.end_bake && self.ecs_deployment == deployment
    }
}

/// A blue/green (linear, canary) deployment's state: see
/// `state::blue_green`.
/// Listener rule weights: the percentage of production traffic on the
/// green groups, and whether the test rules reach green.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Weights {
    pub production: u32,
    pub test_on_green: bool,
}

/// A native blue/green (or linear, canary) deployment under way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlueGreen {
    /// The deployment bringing the new revision (green).
    pub deployment: String,
    /// The deployment whose tasks serve production (blue).
    pub source: String,
    /// BLUE_GREEN, LINEAR or CANARY.
    pub strategy: String,
    /// ECS's lifecycle stage.
    pub stage: String,
    /// The weights this state wants on the listener rules.
    pub wanted: Weights,
    /// The weights last set on the load balancer, and when.
    #[serde(default)]
    pub applied: Option<Weights>,
    #[serde(default)]
    pub applied_at: f64,
    /// When the bake time (of the whole deployment, or of a canary or
    /// linear step) started.
    #[serde(default)]
    pub bake_from: f64,
    /// Seconds in a minute of this deployment's bake times.
    pub minute: f64,
    /// Going back to blue (the deployment failed or was replaced).
    #[serde(default)]
    pub rolling_back: bool,
}

impl BlueGreen {
    /// Whether the load balancer has what this state wants.
    pub fn settled(&self) -> bool {
        self.applied == Some(self.wanted)
    }
}

/// The circuit breaker's failure threshold: half the desired count, at least
/// 3 and at most 200 (ECS's documented formula).
pub(crate) fn failure_threshold(desired: i32) -> u32 {
    ((f64::from(desired.max(0)) * 0.5).ceil() as u32).clamp(3, 200)
}

/// Deployments kept per service after they end.
pub(crate) const MAX_PAST_DEPLOYMENTS: usize = 50;

/// A deployment that left the service's list, and when.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PastDeployment {
    pub deployment: Deployment,
    pub finished_at: f64,
}

/// A rollback away from a deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RollbackNote {
    /// The deployment that took over.
    pub to: String,
    pub reason: String,
    pub at: f64,
}

/// Keeps only deployment `keep` in the service's list; the others go to
/// its history.
pub(crate) fn retire_others(record: &mut ServiceRecord, keep: &str, at: f64) {
    let deployments = record.service.deployments.get_or_insert_with(Vec::new);
    let (kept, retired): (Vec<Deployment>, Vec<Deployment>) = std::mem::take(deployments)
        .into_iter()
        .partition(|d| d.id.as_deref() == Some(keep));
    *deployments = kept;
    for d in retired {
        record.past_deployments.insert(
            0,
            PastDeployment {
                deployment: d,
                finished_at: at,
            },
        );
    }
    record.past_deployments.truncate(MAX_PAST_DEPLOYMENTS);
}

/// Rolls the service back from deployment `from` to the task definition
/// of the last deployment that completed: the deployment still running it
/// takes over again (its healthy tasks are kept), or a new one starts.
/// Returns the deployment that took over (`None`: nothing completed before).
pub(crate) fn roll_back(
    record: &mut ServiceRecord,
    from: &str,
    reason: String,
    at: f64,
) -> Option<String> {
    let name = record.name.clone();
    let desired = record.service.desired_count.unwrap_or(0);
    let Some(td) = record.last_completed_task_definition.clone() else {
        record.event(
            format!("(service {name}) cannot roll back: no earlier deployment completed."),
            at,
        );
        return None;
    };
    for d in record.service.deployments.iter_mut().flatten() {
        if d.status.as_deref() == Some(PRIMARY) {
            d.status = Some(ACTIVE.into());
        }
    }
    let reused = record.service.deployments.iter_mut().flatten().find(|d| {
        d.task_definition.as_deref() == Some(td.as_str()) && d.id.as_deref() != Some(from)
    });
    let new_id = match reused {
        Some(d) => {
            d.status = Some(PRIMARY.into());
            d.rollout_state = Some(IN_PROGRESS.into());
            d.rollout_state_reason = Some(reason.clone());
            d.desired_count = Some(desired);
            d.updated_at = Some(at);
            d.id.clone().unwrap_or_default()
        }
        None => {
            let mut rollback = deployment_for(&record.service, &td, desired, at);
            rollback.rollout_state_reason = Some(reason.clone());
            let id = rollback.id.clone().unwrap_or_default();
            record
                .service
                .deployments
                .get_or_insert_with(Vec::new)
                .insert(0, rollback);
            id
        }
    };
    record
        .service
        .deployments
        .get_or_insert_with(Vec::new)
        .sort_by_key(|d| d.status.as_deref() != Some(PRIMARY));
    record.service.task_definition = Some(td.clone());
    record.counted_failures.clear();
    record.consecutive_failures = 0;
    record.next_launch_at = 0.0;
    record.rollbacks.insert(
        from.to_string(),
        RollbackNote {
            to: new_id.clone(),
            reason,
            at,
        },
    );
    record.event(
        format!("(service {name}) rolling back to task definition {td} in (deployment {new_id})."),
        at,
    );
    Some(new_id)
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

    /// Whether task sets (the EXTERNAL deployment controller) run it.
    /// Whether CodeDeploy deploys this service.
    pub fn is_code_deploy(&self) -> bool {
        self.service
            .deployment_controller
            .as_ref()
            .and_then(|c| c.r#type.as_deref())
            == Some(CODE_DEPLOY)
    }

    pub fn is_external(&self) -> bool {
        self.service
            .deployment_controller
            .as_ref()
            .and_then(|c| c.r#type.as_deref())
            == Some(EXTERNAL)
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
pub(crate) fn deployment_id() -> String {
    use berth_util::ids::random_string;
    format!(
        "ecs-svc/{}{}",
        random_string(b"123456789", 1),
        random_string(b"0123456789", 18)
    )
}

pub(crate) fn new_deployment(
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
pub(crate) fn deployment_for(
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

pub(crate) fn check_service_name(name: &str) -> Result<(), AwsError> {
    let ok = crate::state::records::is_plain_name(name);
    if ok {
        Ok(())
    } else {
        Err(error::invalid_parameter(
            "Service name is invalid. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ))
    }
}

/// Turns a service reference (name or ARN) into its name.
pub(crate) fn resolve_service(
    scope: &Scope,
    cluster: &str,
    reference: &str,
) -> Result<String, AwsError> {
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

pub(crate) fn service_not_found() -> AwsError {
    AwsError::bad_request("ServiceNotFoundException", "Service not found.")
}

/// Services of a cluster that are not INACTIVE (for the cluster's counts).
pub(crate) fn active_count(view: &(impl ReadView + ?Sized), scope: &Scope, cluster: &str) -> i32 {
    view.range(&scope.services(cluster), None, usize::MAX)
        .iter()
        .filter(|kv| decode::<ServiceRecord>(kv).is_ok_and(|r| r.status() == ACTIVE))
        .count() as i32
}

/// The cluster, service and id a service-deployment or service-revision
/// ARN names (`kind`: its resource type).
pub(crate) fn parse_deployment_arn(
    scope: &Scope,
    kind: &str,
    text: &str,
) -> Option<(String, String, String)> {
    let arn = Arn::parse(text).filter(|a| a.service == "ecs" && a.resource_type() == kind)?;
    if arn.account != scope.account || arn.region != scope.region {
        return None;
    }
    let mut parts = arn.resource_id().splitn(3, '/');
    let (cluster, service, id) = (parts.next()?, parts.next()?, parts.next()?);
    crate::state::clusters::check_name(cluster).ok()?;
    check_service_name(service).ok()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((cluster.to_string(), service.to_string(), id.to_string()))
}
