//! Service discovery for ECS services (`serviceRegistries`): the
//! [`ServiceRegistries`] port through which ECS registers its tasks with
//! AWS Cloud Map (Berth's `servicediscovery`, wired in the binary so this
//! crate does not depend on it), the checks CreateService and UpdateService
//! make, and what a task's registration should be, decided from the task
//! alone ([`step`]).
//!
//! A task is registered once it is RUNNING (and, when its definition has a
//! container health check, HEALTHY), with the attributes ECS sets; its
//! custom health status follows its containers' health; it is deregistered
//! as soon as it is asked to stop. The agent is shown the stop only once
//! the task's registrations are gone (see [`agent_desired_status`]), so a
//! stopping task leaves DNS before its containers get SIGTERM.

use std::collections::BTreeMap;

use berth_model::shapes::ecs::{ServiceRegistry, TaskDefinition};
use berth_model::AwsError;

use crate::error;
pub use crate::state::tasks::TaskRegistration;
use crate::state::tasks::{TaskRecord, TaskStatus};

/// The container instance attribute the agent reports its host's address
/// in (bridge and host tasks are reached there).
pub(crate) const HOST_IPV4_ATTRIBUTE: &str = "berth.host-ipv4";

/// What ECS needs to know of a Cloud Map service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryInfo {
    /// The service's ARN, canonical.
    pub arn: String,
    /// The types of its DNS records (`A`, `AAAA`, `SRV`, `CNAME`); empty
    /// for an HTTP-only service.
    pub record_types: Vec<String>,
    /// Whether it has a `HealthCheckCustomConfig` (ECS then drives its
    /// instances' health).
    pub custom_health: bool,
}

/// An instance of a Cloud Map service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisteredInstance {
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

/// What ECS needs from Cloud Map (implemented by `berth-discovery` in the
/// binary).
#[async_trait::async_trait]
pub trait ServiceRegistries: Send + Sync + 'static {
    /// The Cloud Map service a `registryArn` names; an ECS
    /// InvalidParameterException when there is none.
    fn describe(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
    ) -> Result<RegistryInfo, AwsError>;

    /// Registers (or updates) an instance.
    async fn register(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
        instance_id: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), AwsError>;

    /// Deregisters an instance; nothing when it (or its service) is gone.
    async fn deregister(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
        instance_id: &str,
    ) -> Result<(), AwsError>;

    /// Sets an instance's custom health status.
    async fn set_health(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
        instance_id: &str,
        healthy: bool,
    ) -> Result<(), AwsError>;

    /// The instances of a service (empty when it is gone).
    fn instances(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
    ) -> Result<Vec<RegisteredInstance>, AwsError>;
}

/// Checks a service's `serviceRegistries` against its task definition and
/// the registries Cloud Map has, as ECS does. Answers the registries with
/// canonical ARNs.
pub(crate) fn check(
    registries: &[ServiceRegistry],
    definition: &TaskDefinition,
    describe: &dyn Fn(&str) -> Result<RegistryInfo, AwsError>,
) -> Result<Vec<ServiceRegistry>, AwsError> {
    if registries.len() > 1 {
        return Err(error::invalid_parameter(
            "Multiple service registries are not supported. A service can be associated with \
             only one service registry.",
        ));
    }
    let network_mode = definition.network_mode.as_deref().unwrap_or("bridge");
    let mut out = Vec::new();
    for registry in registries {
        let arn = registry.registry_arn.as_deref().unwrap_or("");
        if arn.is_empty() {
            return Err(error::invalid_parameter(
                "The service registry must have a registryArn.",
            ));
        }
        let info = describe(arn)?;
        if let Some(port) = registry.port {
            if !(1..=65535).contains(&port) {
                return Err(error::invalid_parameter(format!(
                    "The service registry port {port} is not a valid port number."
                )));
            }
        }
        if let Some(port) = registry.container_port {
            if !(0..=65535).contains(&port) {
                return Err(error::invalid_parameter(format!(
                    "The service registry containerPort {port} is not a valid port number."
                )));
            }
        }
        let container = match (&registry.container_name, registry.container_port) {
            (Some(name), Some(port)) => {
                let Some(def) = definition
                    .container_definitions
                    .iter()
                    .flatten()
                    .find(|c| c.name.as_deref() == Some(name.as_str()))
                else {
                    return Err(error::invalid_parameter(format!(
                        "The container {name} does not exist in the task definition."
                    )));
                };
                let maps = def.port_mappings.iter().flatten().any(|m| {
                    m.container_port == Some(port)
                        && m.protocol.as_deref().unwrap_or("tcp") == "tcp"
                });
                if !maps {
                    return Err(error::invalid_parameter(format!(
                        "The container {name} did not have a container port {port} defined."
                    )));
                }
                true
            }
            (None, None) => false,
            _ => {
                return Err(error::invalid_parameter(
                    "When specifying a service registry, containerName and containerPort must \
                     be specified together.",
                ))
            }
        };
        if container && registry.port.is_some() {
            return Err(error::invalid_parameter(
                "The service registry can specify either a port or a containerName and \
                 containerPort combination, not both.",
            ));
        }
        let srv = info.record_types.iter().any(|t| t == "SRV");
        let address = info.record_types.iter().any(|t| t == "A" || t == "AAAA");
        if network_mode == "awsvpc" {
            if srv && !container && registry.port.is_none() {
                return Err(error::invalid_parameter(
                    "The service registry has an SRV record: the service must specify either a \
                     containerName and containerPort combination or a port.",
                ));
            }
        } else {
            if address {
                return Err(error::invalid_parameter(format!(
                    "The service registry {arn} has an A or AAAA record, which needs the task's \
                     own address: only the awsvpc network mode supports it. Use an SRV record \
                     with the {network_mode} network mode."
                )));
            }
            if srv && !container {
                return Err(error::invalid_parameter(format!(
                    "Your task definition uses the {network_mode} network mode: the service \
                     registry must specify a containerName and containerPort combination from \
                     the task definition."
                )));
            }
        }
        out.push(ServiceRegistry {
            registry_arn: Some(info.arn.clone()),
            port: registry.port,
            container_name: registry.container_name.clone(),
            container_port: registry.container_port,
        });
    }
    Ok(out)
}

/// What to do for one task's registrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Register with these registries, these attributes.
    Register(Vec<(String, BTreeMap<String, String>)>),
    /// Set the custom health status of these registrations.
    SetHealth(Vec<(String, bool)>),
    /// The task stops: deregister every registration.
    Deregister,
    Nothing,
}

/// Whether a task is live for discovery: running and not asked to stop.
fn live(record: &TaskRecord) -> bool {
    record.last_status() == TaskStatus::Running && record.desired_status() == TaskStatus::Running
}

fn has_health_check(record: &TaskRecord) -> bool {
    record
        .definition
        .container_definitions
        .iter()
        .flatten()
        .any(|c| c.essential != Some(false) && c.health_check.is_some())
}

/// Decides a task's next registration step. `registries` are its service's
/// `serviceRegistries`; `host_ipv4` is its container instance's address.
pub(crate) fn step(
    record: &TaskRecord,
    registries: &[ServiceRegistry],
    host_ipv4: Option<&str>,
    region: &str,
) -> Step {
    if !live(record) {
        return if record.registrations.is_empty() {
            Step::Nothing
        } else {
            Step::Deregister
        };
    }
    let health = record.task.health_status.as_deref().unwrap_or("UNKNOWN");
    let checked = has_health_check(record);
    if record.registrations.is_empty() {
        if registries.is_empty() || (checked && health != "HEALTHY") {
            return Step::Nothing;
        }
        let mut out = Vec::new();
        for registry in registries {
            let Some(arn) = registry.registry_arn.clone() else {
                continue;
            };
            match attributes(record, registry, host_ipv4, region) {
                Some(attrs) => out.push((arn, attrs)),
                // No address yet (the interface is not attached): wait.
                None => return Step::Nothing,
            }
        }
        return if out.is_empty() {
            Step::Nothing
        } else {
            Step::Register(out)
        };
    }
    let healthy = !checked || health != "UNHEALTHY";
    let changes: Vec<(String, bool)> = record
        .registrations
        .iter()
        .filter(|r| r.healthy.is_some_and(|h| h != healthy))
        .map(|r| (r.registry_arn.clone(), healthy))
        .collect();
    if changes.is_empty() {
        Step::Nothing
    } else {
        Step::SetHealth(changes)
    }
}

/// The attributes ECS registers a task with; `None` while the task has no
/// address yet.
pub(crate) fn attributes(
    record: &TaskRecord,
    registry: &ServiceRegistry,
    host_ipv4: Option<&str>,
    region: &str,
) -> Option<BTreeMap<String, String>> {
    let awsvpc = record.definition.network_mode.as_deref() == Some("awsvpc");
    let mut out = BTreeMap::new();
    let (address, port) = if awsvpc {
        let address = record.network.as_ref().map(|n| n.private_ip.clone())?;
        let port = registry.port.or(registry.container_port);
        (address, port)
    } else {
        let address = host_ipv4?.to_string();
        let port = match (&registry.container_name, registry.container_port) {
            (Some(name), Some(container_port)) => {
                crate::state::tasks::ipv4_host_port(&record.task, name, container_port)
            }
            _ => registry.port,
        };
        (address, port)
    };
    out.insert("AWS_INSTANCE_IPV4".into(), address);
    if let Some(port) = port {
        out.insert("AWS_INSTANCE_PORT".into(), port.to_string());
    }
    if let Some(zone) = &record.task.availability_zone {
        out.insert("AVAILABILITY_ZONE".into(), zone.clone());
    }
    out.insert("ECS_CLUSTER_NAME".into(), record.cluster.clone());
    if let Some(service) = record.service() {
        out.insert("ECS_SERVICE_NAME".into(), service.to_string());
    }
    if let Some(family) = &record.definition.family {
        out.insert("ECS_TASK_DEFINITION_FAMILY".into(), family.clone());
    }
    out.insert("REGION".into(), region.to_string());
    Some(out)
}

/// The desired status the task's agent is shown: a task asked to stop
/// still runs for its agent until its registrations are gone and its load
/// balancer targets have drained, so it leaves service discovery and the
/// load balancers before its containers are signalled.
pub(crate) fn agent_desired_status(record: &TaskRecord) -> TaskStatus {
    let desired = record.desired_status();
    if desired == TaskStatus::Stopped
        && (!record.registrations.is_empty() || !record.targets.is_empty())
        && record.last_status() < TaskStatus::Stopped
    {
        TaskStatus::Running
    } else {
        desired
    }
}
