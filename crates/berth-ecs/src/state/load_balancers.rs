//! Load balancing for ECS services (`loadBalancers`): the
//! [`LoadBalancerTargets`] port through which ECS registers its tasks as
//! targets of Elastic Load Balancing v2 target groups (Berth's `elbv2`,
//! wired in the binary so this crate does not depend on it), the checks
//! CreateService and UpdateService make, and what a task's targets should
//! be, decided from the task alone ([`step`]).
//!
//! A task is registered in every target group of its service once it is
//! RUNNING (bridge: its instance's `ec2InstanceId` and the host port bound
//! to the container port; host: the container port; awsvpc: its
//! interface's address and the container port). The targets it holds are
//! recorded on the task ([`TaskTarget`]) and, beside it, in a ledger of
//! what ECS registered (`lb-targets/<cluster>/<task id>`), so a task lost
//! or deleted while the server was down is deregistered later and targets
//! registered by hand are never touched. A task asked to stop is
//! deregistered at once; its agent is shown the stop only once the load
//! balancer no longer holds any of its targets (the deregistration delay
//! is over, see [`agent_desired_status`]).

use berth_model::shapes::ecs::{LoadBalancer, TaskDefinition};
use berth_model::AwsError;
use berth_store::Op;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::encode;
pub use crate::state::tasks::{TargetHealthInfo, TaskTarget};
use crate::state::tasks::{TaskRecord, TaskStatus};

/// ECS's limit of load balancers (target groups) per service.
pub(crate) const MAX_LOAD_BALANCERS: usize = 5;

/// What ECS needs to know of a target group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetGroupInfo {
    /// The target group's ARN, canonical.
    pub arn: String,
    /// `instance` | `ip` | `lambda` | `alb`.
    pub target_type: String,
    /// `HTTP`, `HTTPS`, `TCP`, `TLS`, `UDP`, `TCP_UDP`, `GENEVE`.
    pub protocol: String,
    pub port: Option<u16>,
    /// The load balancers whose listeners or rules forward to it.
    pub load_balancer_arns: Vec<String>,
}

/// A listener rule's forward action, for blue/green deployments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule's ARN (a listener's default rule when a listener or its
    /// default rule was named).
    pub arn: String,
    pub listener_arn: String,
    pub load_balancer_arn: String,
    /// The forward action's target groups and weights (empty: it does not
    /// forward).
    pub groups: Vec<(String, Option<u32>)>,
}

/// What ECS needs from Elastic Load Balancing (implemented with
/// `berth-elb` in the binary).
#[async_trait::async_trait]
pub trait LoadBalancerTargets: Send + Sync + 'static {
    /// A target group: its target type, protocol, port and the load
    /// balancers it is attached to. Unknown: the ECS
    /// InvalidParameterException to answer.
    fn describe_target_group(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<TargetGroupInfo, AwsError>;

    /// Registers a target (idempotent).
    async fn register(
        &self,
        account: &str,
        region: &str,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Result<(), AwsError>;

    /// Deregisters a target: it drains for the target group's
    /// deregistration delay. Nothing when it (or its group) is gone.
    async fn deregister(
        &self,
        account: &str,
        region: &str,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Result<(), AwsError>;

    /// `None` once the target is no longer registered (its deregistration
    /// delay is over, or its group is gone); else its health.
    async fn health(
        &self,
        account: &str,
        region: &str,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Result<Option<TargetHealthInfo>, AwsError>;

    /// A listener rule (or a listener's default rule; a listener's ARN
    /// names its default rule) and its forward action. Unknown: the ECS
    /// InvalidParameterException to answer.
    fn describe_rule(&self, account: &str, region: &str, arn: &str) -> Result<RuleInfo, AwsError> {
        let _ = (account, region);
        Err(error::invalid_parameter(format!(
            "The listener rule {arn} cannot be read: this load balancer port has no rules."
        )))
    }

    /// Sets a rule's forward action to exactly these target groups and
    /// weights, at once (idempotent).
    async fn set_forward_weights(
        &self,
        account: &str,
        region: &str,
        rule_arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), AwsError> {
        let _ = (account, region, weights);
        Err(error::invalid_parameter(format!(
            "The listener rule {rule_arn} cannot be changed: this load balancer port has no rules."
        )))
    }
}

/// One ledger entry: a target ECS registered for a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerTarget {
    pub target_group_arn: String,
    pub target_id: String,
    pub port: u16,
}

/// The ledger of what ECS registered for a task: one key per task that
/// holds targets, written in the same mutation as the task.
pub(crate) fn ledger_key(scope: &Scope, cluster: &str, task_id: &str) -> String {
    format!(
        "/ecs/{}/{}/lb-targets/{cluster}/{task_id}",
        scope.account, scope.region
    )
}

pub(crate) fn ledger_prefix(scope: &Scope) -> String {
    format!("/ecs/{}/{}/lb-targets/", scope.account, scope.region)
}

/// The op that makes the ledger match what the task holds.
pub(crate) fn ledger_op(scope: &Scope, record: &TaskRecord) -> Result<Op, AwsError> {
    let key = ledger_key(scope, &record.cluster, &record.id);
    if record.targets.is_empty() {
        return Ok(Op::delete(key));
    }
    let entries: Vec<LedgerTarget> = record
        .targets
        .iter()
        .map(|t| LedgerTarget {
            target_group_arn: t.target_group_arn.clone(),
            target_id: t.target_id.clone(),
            port: t.port,
        })
        .collect();
    Ok(Op::put(key, encode(&entries)?))
}

/// Checks a service's `loadBalancers` against its task definition and the
/// target groups ELB has, as ECS does. Answers them with canonical ARNs.
pub(crate) fn check(
    balancers: &[LoadBalancer],
    definition: &TaskDefinition,
    describe: &dyn Fn(&str) -> Result<TargetGroupInfo, AwsError>,
) -> Result<Vec<LoadBalancer>, AwsError> {
    let network_mode = definition.network_mode.as_deref().unwrap_or("bridge");
    let mut out: Vec<LoadBalancer> = Vec::new();
    for lb in balancers {
        let info = describe(lb.target_group_arn.as_deref().unwrap_or(""))?;
        if info.load_balancer_arns.is_empty() {
            return Err(error::invalid_parameter(format!(
                "The target group with targetGroupArn {} does not have an associated load balancer.",
                info.arn
            )));
        }
        let name = lb.container_name.as_deref().unwrap_or("");
        let port = lb.container_port.unwrap_or(0);
        check_container(lb, definition)?;
        let wanted = if network_mode == "awsvpc" {
            "ip"
        } else {
            "instance"
        };
        if info.target_type != wanted {
            return Err(error::invalid_parameter(format!(
                "The provided target group {} has target type {}, which is incompatible with the \
                 {network_mode} network mode specified in the task definition.",
                info.arn, info.target_type
            )));
        }
        let checked = LoadBalancer {
            target_group_arn: Some(info.arn.clone()),
            load_balancer_name: None,
            container_name: Some(name.to_string()),
            container_port: Some(port),
            advanced_configuration: lb.advanced_configuration.clone(),
        };
        if out.iter().any(|o| {
            o.target_group_arn == checked.target_group_arn
                && o.container_name == checked.container_name
                && o.container_port == checked.container_port
        }) {
            return Err(error::invalid_parameter(format!(
                "The target group {} is given twice for container {name} port {port}.",
                info.arn
            )));
        }
        out.push(checked);
    }
    Ok(out)
}

/// Checks that the container a load balancer names is in the definition
/// and maps the port.
fn check_container(lb: &LoadBalancer, definition: &TaskDefinition) -> Result<(), AwsError> {
    let name = lb.container_name.as_deref().unwrap_or("");
    let port = lb.container_port.unwrap_or(0);
    let Some(container) = definition
        .container_definitions
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(name))
    else {
        return Err(error::invalid_parameter(format!(
            "The container {name} does not exist in the task definition."
        )));
    };
    let mapped =
        container.port_mappings.iter().flatten().any(|m| {
            m.container_port == Some(port) && m.protocol.as_deref().unwrap_or("tcp") == "tcp"
        });
    if !mapped {
        return Err(error::invalid_parameter(format!(
            "The container {name} did not have a container port {port} defined."
        )));
    }
    Ok(())
}

/// Checks a service's load balancers against a new revision of its task
/// definition (the target groups were checked when they were set).
pub(crate) fn check_containers(
    balancers: &[LoadBalancer],
    definition: &TaskDefinition,
) -> Result<(), AwsError> {
    balancers
        .iter()
        .try_for_each(|lb| check_container(lb, definition))
}

/// The checks that need no target group: the count, the members each
/// load balancer must (and must not) have. Made before anything is read.
pub(crate) fn check_shape(balancers: &[LoadBalancer]) -> Result<(), AwsError> {
    if balancers.len() > MAX_LOAD_BALANCERS {
        return Err(error::invalid_parameter(format!(
            "A service can have at most {MAX_LOAD_BALANCERS} load balancers (target groups); \
             {} were given.",
            balancers.len()
        )));
    }
    for lb in balancers {
        if lb
            .load_balancer_name
            .as_deref()
            .is_some_and(|n| !n.is_empty())
        {
            return Err(error::invalid_parameter(
                "Classic Load Balancers (loadBalancerName) are not supported: Berth has \
                 Elastic Load Balancing v2 only. Give the targetGroupArn of an Application or \
                 Network Load Balancer's target group instead.",
            ));
        }
        if lb.target_group_arn.as_deref().unwrap_or("").is_empty() {
            return Err(error::invalid_parameter(
                "Target Group ARN can not be blank.",
            ));
        }
        if lb.container_name.as_deref().unwrap_or("").is_empty() {
            return Err(error::invalid_parameter("Container Name can not be blank."));
        }
        match lb.container_port {
            None => return Err(error::invalid_parameter("Container Port can not be blank.")),
            Some(p) if !(1..=65535).contains(&p) => {
                return Err(error::invalid_parameter(format!(
                    "The container port {p} is not a valid port number."
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// ECS's rules for a service's `role`: only with load balancers, and not
/// where the service-linked role is required (awsvpc, several target
/// groups, service discovery). Answers the role as a full ARN.
pub(crate) fn check_role(
    role: Option<&str>,
    account: &str,
    balancers: &[LoadBalancer],
    network_mode: &str,
    has_registries: bool,
) -> Result<Option<String>, AwsError> {
    let Some(role) = role.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if balancers.is_empty() {
        return Err(error::invalid_parameter(
            "The role parameter is only valid for services configured to use load balancers.",
        ));
    }
    if network_mode == "awsvpc" || balancers.len() > 1 || has_registries {
        return Err(error::invalid_parameter(
            "You cannot specify an IAM role for services that require a service linked role.",
        ));
    }
    if role.starts_with("arn:") {
        return Ok(Some(role.to_string()));
    }
    // A name, possibly prefixed with its path (`/foo/bar`).
    let path_and_name = role.trim_start_matches('/');
    Ok(Some(format!("arn:aws:iam::{account}:role/{path_and_name}")))
}

/// What to do for one task's targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Record these targets on the task (and in the ledger), then register
    /// them.
    Record(Vec<TaskTarget>),
    /// Register the recorded targets not yet confirmed.
    Register,
    /// Deregister the targets not yet draining.
    Deregister,
    /// Ask the load balancer how the targets are (health while the task
    /// runs; whether draining is over while it stops).
    Poll,
    Nothing,
}

/// Whether a task should be a target: running and not asked to stop.
fn live(record: &TaskRecord) -> bool {
    record.last_status() == TaskStatus::Running && record.desired_status() == TaskStatus::Running
}

/// Decides a task's next step. `balancers` are its service's
/// `loadBalancers`; `ec2_instance_id` is its container instance's.
pub(crate) fn step(
    record: &TaskRecord,
    balancers: &[LoadBalancer],
    ec2_instance_id: Option<&str>,
) -> Step {
    if !live(record) {
        if record.targets.is_empty() {
            return Step::Nothing;
        }
        if record.targets.iter().any(|t| !t.draining) {
            return Step::Deregister;
        }
        return Step::Poll;
    }
    if record.targets.is_empty() {
        if balancers.is_empty() {
            return Step::Nothing;
        }
        return match targets(record, balancers, ec2_instance_id) {
            Some(list) if !list.is_empty() => Step::Record(list),
            _ => Step::Nothing,
        };
    }
    if record.targets.iter().any(|t| !t.registered) {
        return Step::Register;
    }
    Step::Poll
}

/// The targets a running task is registered as, one per load balancer;
/// `None` while it has no address or port yet.
pub(crate) fn targets(
    record: &TaskRecord,
    balancers: &[LoadBalancer],
    ec2_instance_id: Option<&str>,
) -> Option<Vec<TaskTarget>> {
    let mode = record
        .definition
        .network_mode
        .as_deref()
        .unwrap_or("bridge");
    let mut out: Vec<TaskTarget> = Vec::new();
    for lb in balancers {
        let (Some(arn), Some(name), Some(container_port)) = (
            lb.target_group_arn.as_deref(),
            lb.container_name.as_deref(),
            lb.container_port,
        ) else {
            continue;
        };
        let container_port = u16::try_from(container_port).ok()?;
        let (target_id, port, target_type) = match mode {
            "awsvpc" => {
                let address = record.network.as_ref().map(|n| n.private_ip.clone())?;
                (address, container_port, "ip")
            }
            "host" => (ec2_instance_id?.to_string(), container_port, "instance"),
            _ => {
                let host_port = crate::state::tasks::ipv4_host_port(
                    &record.task,
                    name,
                    i32::from(container_port),
                )?;
                let host_port = u16::try_from(host_port).ok()?;
                (ec2_instance_id?.to_string(), host_port, "instance")
            }
        };
        let target = TaskTarget {
            target_group_arn: arn.to_string(),
            target_id,
            port,
            target_type: target_type.into(),
            ..TaskTarget::default()
        };
        if !out.iter().any(|t| t.key() == target.key()) {
            out.push(target);
        }
    }
    Some(out)
}

/// A live task's targets brought to its service's gateway routes, which
/// come and go while it runs: the route targets it lacks (to record, then
/// register) and the groups of gateway targets whose route is gone (to
/// forget: the gateway controller deletes those groups). `None` when
/// nothing changes.
pub(crate) fn route_changes(
    record: &TaskRecord,
    balancers: &[LoadBalancer],
    route_groups: &[String],
    ec2_instance_id: Option<&str>,
) -> Option<(Vec<TaskTarget>, Vec<String>)> {
    if !live(record) || record.targets.is_empty() {
        return None;
    }
    let add: Vec<TaskTarget> = targets(record, balancers, ec2_instance_id)?
        .into_iter()
        .filter(|t| {
            route_groups.contains(&t.target_group_arn)
                && !record
                    .targets
                    .iter()
                    .any(|x| x.target_group_arn == t.target_group_arn)
        })
        .map(|t| TaskTarget { gateway: true, ..t })
        .collect();
    let remove: Vec<String> = record
        .targets
        .iter()
        .filter(|t| t.gateway && !route_groups.contains(&t.target_group_arn))
        .map(|t| t.target_group_arn.clone())
        .collect();
    (!add.is_empty() || !remove.is_empty()).then_some((add, remove))
}

/// Whether a service task counts as healthy for its load balancers: every
/// target it holds is healthy (and it holds some).
pub(crate) fn targets_healthy(record: &TaskRecord) -> bool {
    !record.targets.is_empty() && record.targets.iter().all(TaskTarget::is_healthy)
}

/// The first target of a task that its load balancer found unhealthy.
pub(crate) fn unhealthy_target(record: &TaskRecord) -> Option<&TaskTarget> {
    record.targets.iter().find(|t| t.is_unhealthy())
}

/// ECS's service event for a target found unhealthy.
pub(crate) fn unhealthy_event(service: &str, record: &TaskRecord, target: &TaskTarget) -> String {
    let who = if target.target_type == "ip" {
        format!("(task {})", record.id)
    } else {
        format!("(instance {})", target.target_id)
    };
    let reason = target
        .health
        .as_ref()
        .and_then(|h| h.description.clone().or_else(|| h.reason.clone()))
        .unwrap_or_else(|| "Health checks failed".into());
    format!(
        "(service {service}) {who} (port {}) is unhealthy in (target-group {}) due to (reason {reason}).",
        target.port, target.target_group_arn
    )
}

/// The stopped reason of a task stopped for failing its load balancer's
/// health checks.
pub(crate) fn unhealthy_reason(target: &TaskTarget) -> String {
    format!(
        "Task failed ELB health checks in (target-group {})",
        target.target_group_arn
    )
}

/// ECS's checks of `advancedConfiguration` (blue/green, linear and canary
/// deployments): required with those strategies, an alternate target group
/// of the same type behind the same load balancer, listener rules of that
/// load balancer forwarding to one of the two groups, a role.
pub(crate) fn check_advanced(
    balancers: &[LoadBalancer],
    strategy: &str,
    groups: &dyn Fn(&str) -> Result<TargetGroupInfo, AwsError>,
    rules: &dyn Fn(&str) -> Result<RuleInfo, AwsError>,
) -> Result<(), AwsError> {
    let shifting = matches!(strategy, "BLUE_GREEN" | "LINEAR" | "CANARY");
    for lb in balancers {
        let primary_arn = lb.target_group_arn.as_deref().unwrap_or("");
        let Some(adv) = lb.advanced_configuration.as_ref() else {
            if shifting {
                return Err(error::invalid_parameter(format!(
                    "advancedConfiguration is required for the load balancer with targetGroupArn \
                     {primary_arn} when the deployment strategy is {strategy}."
                )));
            }
            continue;
        };
        let alternate = adv
            .alternate_target_group_arn
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                error::invalid_parameter(
                    "advancedConfiguration.alternateTargetGroupArn can not be blank.",
                )
            })?;
        let production = adv
            .production_listener_rule
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                error::invalid_parameter(
                    "advancedConfiguration.productionListenerRule can not be blank.",
                )
            })?;
        let role = adv.role_arn.as_deref().unwrap_or("");
        if role.is_empty() {
            return Err(error::invalid_parameter(
                "advancedConfiguration.roleArn can not be blank.",
            ));
        }
        if !(role.starts_with("arn:") && role.contains(":iam::") && role.contains(":role/")) {
            return Err(error::invalid_parameter(format!(
                "advancedConfiguration.roleArn {role} is not a valid IAM role ARN."
            )));
        }
        let primary = groups(primary_arn)?;
        let alt = groups(alternate)?;
        if alt.arn == primary.arn {
            return Err(error::invalid_parameter(format!(
                "The alternate target group {} must be different from the target group {}.",
                alt.arn, primary.arn
            )));
        }
        if alt.target_type != primary.target_type {
            return Err(error::invalid_parameter(format!(
                "The alternate target group {} has target type {}, but the target group {} has \
                 target type {}.",
                alt.arn, alt.target_type, primary.arn, primary.target_type
            )));
        }
        if !alt
            .load_balancer_arns
            .iter()
            .any(|a| primary.load_balancer_arns.contains(a))
        {
            return Err(error::invalid_parameter(format!(
                "The alternate target group {} must be associated with the same load balancer as \
                 the target group {}.",
                alt.arn, primary.arn
            )));
        }
        let pair = [primary.arn.as_str(), alt.arn.as_str()];
        let named = [
            ("productionListenerRule", Some(production)),
            (
                "testListenerRule",
                adv.test_listener_rule.as_deref().filter(|r| !r.is_empty()),
            ),
        ];
        for (member, arn) in named {
            let Some(arn) = arn else { continue };
            let rule = rules(arn)?;
            if !primary.load_balancer_arns.contains(&rule.load_balancer_arn) {
                return Err(error::invalid_parameter(format!(
                    "The {member} {arn} does not belong to a listener of the load balancer of the \
                     target group {}.",
                    primary.arn
                )));
            }
            if rule.groups.is_empty()
                || rule.groups.iter().any(|(g, _)| !pair.contains(&g.as_str()))
            {
                return Err(error::invalid_parameter(format!(
                    "The {member} {arn} must forward to the target group {} or the alternate \
                     target group {} only.",
                    primary.arn, alt.arn
                )));
            }
        }
    }
    Ok(())
}
