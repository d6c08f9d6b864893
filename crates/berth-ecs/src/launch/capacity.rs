//! Which capacity a launch uses (the EC2 launch type, or Fargate split over
//! FARGATE/FARGATE_SPOT by a capacity provider strategy, or the cluster's
//! default), its `awsvpcConfiguration`, and the checks of a task definition
//! against both.

use std::collections::BTreeMap;

use berth_model::shapes::ecs::{
    CapacityProviderStrategyItem, NetworkConfiguration, TaskDefinition, TaskOverride,
};
use berth_model::AwsError;
use berth_scheduler::capacity::{validate_strategy, StrategyItem};

use crate::error;
use crate::state::keys::Scope;
pub(crate) use crate::state::network::AwsVpc;
use crate::state::network::TaskNetworks;
use crate::state::taskdef;
use crate::state::tasks::{TaskRecord, TaskStatus};

pub(crate) const FARGATE: &str = "FARGATE";

pub(crate) const FARGATE_SPOT: &str = "FARGATE_SPOT";

/// What `LATEST` means (the only Linux platform version Berth implements).
pub(crate) const PLATFORM_VERSION: &str = "1.4.0";

/// Fargate's default ephemeral storage, in GiB.
pub(crate) const DEFAULT_EPHEMERAL_GIB: i32 = 20;

/// Where the tasks of a launch run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Capacity {
    /// The cluster's container instances (launch type EC2).
    Ec2,
    /// Berth's Fargate hosts, split over FARGATE/FARGATE_SPOT.
    Fargate(Vec<StrategyItem>),
}

/// A strategy as the API shows it (a service's `capacityProviderStrategy`).
pub(crate) fn strategy_shape(items: &[StrategyItem]) -> Vec<CapacityProviderStrategyItem> {
    items
        .iter()
        .map(|i| CapacityProviderStrategyItem {
            capacity_provider: Some(i.provider.clone()),
            base: Some(i.base as i32),
            weight: Some(i.weight as i32),
        })
        .collect()
}

/// The capacity a call asks for, before the cluster's default strategy is
/// known (`None`: neither a launch type nor a strategy was given).
pub(crate) fn requested_capacity(
    launch_type: Option<&str>,
    strategy: Option<&[CapacityProviderStrategyItem]>,
    what: &str,
) -> Result<Option<Capacity>, AwsError> {
    let strategy = strategy.filter(|s| !s.is_empty());
    match (launch_type, strategy) {
        (Some(_), Some(_)) => Err(error::invalid_parameter(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        )),
        (Some("EC2"), None) => Ok(Some(Capacity::Ec2)),
        (Some(FARGATE), None) => Ok(Some(Capacity::Fargate(vec![StrategyItem {
            provider: FARGATE.into(),
            base: 0,
            weight: 1,
        }]))),
        (Some(other @ ("EXTERNAL" | "MANAGED_INSTANCES")), None) => {
            Err(error::invalid_parameter(format!(
                "Berth runs {what} with launchType EC2 or FARGATE; {other} is not available."
            )))
        }
        (Some(other), None) => Err(error::invalid_parameter(format!(
            "Invalid launchType '{other}'. Valid values: EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES."
        ))),
        (None, Some(items)) => Ok(Some(capacity_of(strategy_items(items)?))),
        (None, None) => Ok(None),
    }
}

/// What a RunTask or CreateService asks for, checked before any state is
/// read: the capacity (`None`: the cluster's default decides) and the
/// awsvpc network.
pub(crate) fn launch_request(
    networks: Option<&dyn TaskNetworks>,
    scope: &Scope,
    launch_type: Option<&str>,
    strategy: Option<&[CapacityProviderStrategyItem]>,
    network_configuration: Option<&NetworkConfiguration>,
    what: &str,
) -> Result<(Option<Capacity>, Option<AwsVpc>), AwsError> {
    let capacity = requested_capacity(launch_type, strategy, what)?;
    let network = resolve_network(
        networks,
        &scope.account,
        &scope.region,
        network_configuration,
    )?;
    Ok((capacity, network))
}

/// A capacity provider strategy as the splitter takes it, checked as ECS
/// checks it. Only FARGATE and FARGATE_SPOT exist in Berth.
pub(crate) fn strategy_items(
    items: &[CapacityProviderStrategyItem],
) -> Result<Vec<StrategyItem>, AwsError> {
    let mut out = Vec::new();
    for item in items {
        let provider = item.capacity_provider.clone().unwrap_or_default();
        if provider.is_empty() {
            return Err(error::invalid_parameter(
                "capacityProvider is required in every capacity provider strategy item.",
            ));
        }
        let base = item.base.unwrap_or(0);
        let weight = item.weight.unwrap_or(0);
        if base < 0 || weight < 0 {
            return Err(error::invalid_parameter(
                "The base and weight of a capacity provider strategy item cannot be negative.",
            ));
        }
        out.push(StrategyItem {
            provider,
            base: base as u32,
            weight: weight as u32,
        });
    }
    let fargate = out.iter().filter(|i| is_fargate(&i.provider)).count();
    if fargate != 0 && fargate != out.len() {
        return Err(error::invalid_parameter(
            "A capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
        ));
    }
    validate_strategy(&out).map_err(|e| error::invalid_parameter(e.0))?;
    Ok(out)
}

fn is_fargate(provider: &str) -> bool {
    provider == FARGATE || provider == FARGATE_SPOT
}

/// Where a checked strategy launches: Fargate providers on Berth's Fargate
/// hosts; Auto Scaling group providers (Berth has no Auto Scaling groups)
/// on the cluster's registered container instances, as the EC2 launch type.
pub(crate) fn capacity_of(items: Vec<StrategyItem>) -> Capacity {
    if items.iter().all(|i| is_fargate(&i.provider)) {
        Capacity::Fargate(items)
    } else {
        Capacity::Ec2
    }
}

/// ECS's check that every Auto Scaling group provider of a strategy is
/// associated with the cluster (`associated`: the cluster's providers).
pub(crate) fn check_associated(
    strategy: Option<&[CapacityProviderStrategyItem]>,
    associated: &[String],
) -> Result<(), AwsError> {
    for item in strategy.unwrap_or(&[]) {
        let name = item.capacity_provider.as_deref().unwrap_or("");
        if !is_fargate(name) && !associated.iter().any(|a| a == name) {
            return Err(error::invalid_parameter(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
            ));
        }
    }
    Ok(())
}

/// The capacity of a call: what it asked for, else the cluster's default
/// capacity provider strategy, else the EC2 launch type.
pub(crate) fn effective_capacity(
    requested: Option<Capacity>,
    cluster_default: &[CapacityProviderStrategyItem],
) -> Result<Capacity, AwsError> {
    match requested {
        Some(c) => Ok(c),
        None if cluster_default.is_empty() => Ok(Capacity::Ec2),
        None => Ok(capacity_of(strategy_items(cluster_default)?)),
    }
}

/// Checks a `networkConfiguration`'s shape and looks its subnets and groups
/// up. `None` when the call gave none.
pub(crate) fn resolve_network(
    networks: Option<&dyn TaskNetworks>,
    account: &str,
    region: &str,
    configuration: Option<&NetworkConfiguration>,
) -> Result<Option<AwsVpc>, AwsError> {
    let Some(vpc) = configuration.and_then(|c| c.awsvpc_configuration.as_ref()) else {
        return Ok(None);
    };
    let subnets = vpc.subnets.clone().unwrap_or_default();
    if subnets.is_empty() {
        return Err(error::invalid_parameter("subnets can not be empty."));
    }
    if subnets.len() > 16 {
        return Err(error::invalid_parameter(
            "subnets can have at most 16 items.",
        ));
    }
    let groups = vpc.security_groups.clone().unwrap_or_default();
    if groups.len() > 5 {
        return Err(error::invalid_parameter(
            "securityGroups can have at most 5 items.",
        ));
    }
    let assign_public_ip = match vpc.assign_public_ip.as_deref() {
        None | Some("DISABLED") => "DISABLED".to_string(),
        Some("ENABLED") => "ENABLED".to_string(),
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid assignPublicIp '{other}'. Valid values: ENABLED, DISABLED."
            )))
        }
    };
    let networks = networks.ok_or_else(|| {
        error::invalid_parameter("This Berth server has no VPC service for awsvpc networking.")
    })?;
    let subnets = networks.check(account, region, &subnets, &groups)?;
    Ok(Some(AwsVpc {
        subnets,
        security_groups: groups,
        assign_public_ip,
    }))
}

/// Checks a definition (with overrides) against the capacity and network
/// configuration a launch uses.
pub(crate) fn check_definition(
    definition: &TaskDefinition,
    overrides: &TaskOverride,
    capacity: &Capacity,
    network: Option<&AwsVpc>,
    platform_version: Option<&str>,
) -> Result<(), AwsError> {
    let wanted = match capacity {
        Capacity::Ec2 => "EC2",
        Capacity::Fargate(_) => FARGATE,
    };
    let compatible = definition
        .compatibilities
        .as_ref()
        .is_none_or(|c| c.iter().any(|c| c == wanted));
    if !compatible {
        return Err(error::invalid_parameter(format!(
            "Task definition does not support launch_type {wanted}."
        )));
    }
    let awsvpc = definition.network_mode.as_deref() == Some("awsvpc");
    match (awsvpc, network) {
        (true, None) => {
            return Err(error::invalid_parameter(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            ))
        }
        (false, Some(_)) => return Err(error::invalid_parameter(
            "Network Configuration is not valid for the given networkMode of this task definition.",
        )),
        _ => {}
    }
    if let Some(vpc) = network {
        if *capacity == Capacity::Ec2 && vpc.assign_public_ip == "ENABLED" {
            return Err(error::invalid_parameter(
                "Assign public IP is not supported for this launch type.",
            ));
        }
    }
    match (capacity, platform_version) {
        (Capacity::Ec2, Some(_)) => {
            return Err(error::invalid_parameter(
                "Platform version is only supported for tasks using the Fargate launch type.",
            ))
        }
        (Capacity::Fargate(_), Some(v)) if v != "LATEST" && v != PLATFORM_VERSION => {
            return Err(error::invalid_parameter(format!(
                "The specified platform version ({v}) does not exist. Berth implements LATEST ({PLATFORM_VERSION})."
            )))
        }
        _ => {}
    }
    if let Capacity::Fargate(_) = capacity {
        let cpu = overrides.cpu.as_deref().or(definition.cpu.as_deref());
        let memory = overrides.memory.as_deref().or(definition.memory.as_deref());
        let (Some(cpu), Some(memory)) = (cpu, memory) else {
            return Err(error::client(
                "Task-level cpu and memory are required for the Fargate launch type: set both in the task definition or the overrides.",
            ));
        };
        let parsed = (cpu.trim().parse::<u32>(), memory.trim().parse::<u32>());
        let valid = matches!(parsed, (Ok(c), Ok(m)) if taskdef::fargate_size_valid(c, m));
        if !valid {
            return Err(error::client(taskdef::fargate_size_message(cpu, memory)));
        }
    }
    Ok(())
}

/// The capacity a stored service launches on.
pub(crate) fn service_capacity(
    service: &berth_model::shapes::ecs::Service,
) -> Result<Capacity, AwsError> {
    let strategy = service.capacity_provider_strategy.as_deref().unwrap_or(&[]);
    if !strategy.is_empty() {
        return Ok(capacity_of(strategy_items(strategy)?));
    }
    Ok(
        requested_capacity(service.launch_type.as_deref(), None, "services")?
            .unwrap_or(Capacity::Ec2),
    )
}

/// Counts a service's live tasks by capacity provider.
pub(crate) fn provider_counts<'a>(
    tasks: impl Iterator<Item = &'a TaskRecord>,
) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        if t.desired_status() == TaskStatus::Stopped || t.last_status() == TaskStatus::Stopped {
            continue;
        }
        if let Some(p) = &t.task.capacity_provider_name {
            *counts.entry(p.clone()).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::network::SubnetInfo;

    fn item(provider: &str, base: i32, weight: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: Some(provider.into()),
            base: Some(base),
            weight: Some(weight),
        }
    }

    fn message(e: AwsError) -> String {
        e.message
    }

    #[test]
    fn launch_type_and_strategy_exclude_each_other() {
        let strategy = [item(FARGATE, 0, 1)];
        let e = requested_capacity(Some(FARGATE), Some(&strategy), "tasks").unwrap_err();
        assert!(
            message(e).starts_with("Specifying both a launch type and capacity provider strategy")
        );
        assert_eq!(
            requested_capacity(Some("EC2"), Some(&[]), "tasks").unwrap(),
            Some(Capacity::Ec2)
        );
        assert_eq!(requested_capacity(None, None, "tasks").unwrap(), None);
        let fargate = requested_capacity(Some(FARGATE), None, "tasks").unwrap();
        assert!(
            matches!(fargate, Some(Capacity::Fargate(ref items)) if items[0].provider == FARGATE)
        );
        assert!(requested_capacity(Some("EXTERNAL"), None, "tasks").is_err());
        assert!(requested_capacity(Some("BOGUS"), None, "tasks").is_err());
    }

    #[test]
    fn strategies_do_not_mix_provider_kinds_and_have_one_base() {
        let e = strategy_items(&[item("MY_ASG", 0, 1), item(FARGATE, 0, 1)]).unwrap_err();
        assert!(message(e).contains("cannot contain a mix"));
        let asg = strategy_items(&[item("MY_ASG", 0, 1)]).unwrap();
        assert_eq!(capacity_of(asg), Capacity::Ec2);
        let e = check_associated(Some(&[item("MY_ASG", 0, 1)]), &[]).unwrap_err();
        assert!(message(e).contains("not associated with the cluster"));
        check_associated(Some(&[item("MY_ASG", 0, 1)]), &["MY_ASG".into()]).unwrap();
        let e = strategy_items(&[item(FARGATE, 1, 1), item(FARGATE_SPOT, 1, 1)]).unwrap_err();
        assert!(message(e).contains("Only one capacity provider"));
        let e = strategy_items(&[item(FARGATE, -1, 1)]).unwrap_err();
        assert!(message(e).contains("negative"));
        let ok = strategy_items(&[item(FARGATE, 1, 1), item(FARGATE_SPOT, 0, 3)]).unwrap();
        assert_eq!(ok[1].weight, 3);
    }

    #[test]
    fn the_cluster_default_applies_only_when_nothing_was_asked() {
        let default = [item(FARGATE_SPOT, 0, 1)];
        assert_eq!(
            effective_capacity(Some(Capacity::Ec2), &default).unwrap(),
            Capacity::Ec2
        );
        assert!(matches!(
            effective_capacity(None, &default).unwrap(),
            Capacity::Fargate(ref items) if items[0].provider == FARGATE_SPOT
        ));
        assert_eq!(effective_capacity(None, &[]).unwrap(), Capacity::Ec2);
    }

    fn fargate_definition(cpu: &str, memory: &str) -> TaskDefinition {
        TaskDefinition {
            network_mode: Some("awsvpc".into()),
            compatibilities: Some(vec!["EC2".into(), FARGATE.into()]),
            cpu: Some(cpu.into()),
            memory: Some(memory.into()),
            ..TaskDefinition::default()
        }
    }

    fn vpc() -> AwsVpc {
        AwsVpc {
            subnets: vec![SubnetInfo {
                subnet_id: "subnet-1".into(),
                vpc_id: "vpc-1".into(),
                availability_zone: "us-east-1a".into(),
            }],
            security_groups: Vec::new(),
            assign_public_ip: "DISABLED".into(),
        }
    }

    #[test]
    fn definitions_are_checked_against_capacity_network_and_size() {
        let fargate = Capacity::Fargate(vec![StrategyItem {
            provider: FARGATE.into(),
            base: 0,
            weight: 1,
        }]);
        let none = TaskOverride::default();
        let td = fargate_definition("256", "512");
        check_definition(&td, &none, &fargate, Some(&vpc()), Some("LATEST")).unwrap();
        check_definition(&td, &none, &Capacity::Ec2, Some(&vpc()), None).unwrap();
        let e = check_definition(&td, &none, &fargate, None, None).unwrap_err();
        assert!(message(e).starts_with("Network Configuration must be provided"));
        let e = check_definition(&td, &none, &fargate, Some(&vpc()), Some("1.3.0")).unwrap_err();
        assert!(message(e).contains("(1.3.0) does not exist"));
        let e =
            check_definition(&td, &none, &Capacity::Ec2, Some(&vpc()), Some("1.4.0")).unwrap_err();
        assert!(message(e).contains("only supported for tasks using the Fargate launch type"));
        let big = TaskOverride {
            memory: Some("4096".into()),
            ..TaskOverride::default()
        };
        let e = check_definition(&td, &big, &fargate, Some(&vpc()), None).unwrap_err();
        assert_eq!(e.code, "ClientException");
        assert!(message(e).starts_with(
            "No Fargate configuration exists for given values: 256 CPU, 4096 memory."
        ));
        let bridge = TaskDefinition {
            compatibilities: Some(vec!["EC2".into()]),
            ..TaskDefinition::default()
        };
        let e = check_definition(&bridge, &none, &fargate, None, None).unwrap_err();
        assert_eq!(
            message(e),
            "Task definition does not support launch_type FARGATE."
        );
        let e = check_definition(&bridge, &none, &Capacity::Ec2, Some(&vpc()), None).unwrap_err();
        assert!(message(e).starts_with("Network Configuration is not valid"));
    }
}
