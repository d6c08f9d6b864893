//! What a task reserves on its instance, from its definition and overrides.

use berth_model::shapes::ecs::{ContainerOverride, TaskDefinition, TaskOverride};
use berth_model::{Arn, AwsError};

use crate::error;
use crate::state::tasks::Reservation;

// ---------------------------------------------------------------------------
// Building a task from a definition and overrides.

fn parse_units(value: Option<&str>, member: &str) -> Result<Option<i64>, AwsError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                error::invalid_parameter(format!("{member} '{v}' is not a valid number."))
            }),
    }
}

pub(crate) fn check_overrides(
    definition: &TaskDefinition,
    overrides: &TaskOverride,
) -> Result<(), AwsError> {
    let names: Vec<&str> = definition
        .container_definitions
        .iter()
        .flatten()
        .filter_map(|c| c.name.as_deref())
        .collect();
    for o in overrides.container_overrides.iter().flatten() {
        let name = o.name.as_deref().unwrap_or("");
        if !names.contains(&name) {
            return Err(error::invalid_parameter(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        }
        for (member, v) in [
            ("cpu", o.cpu),
            ("memory", o.memory),
            ("memoryReservation", o.memory_reservation),
        ] {
            if v.is_some_and(|v| v < 0) {
                return Err(error::invalid_parameter(format!(
                    "Container override {member} for {name} cannot be negative."
                )));
            }
        }
        for env in o.environment.iter().flatten() {
            if env.name.as_deref().is_none_or(str::is_empty) {
                return Err(error::invalid_parameter(format!(
                    "Container override environment for {name} has a variable without a name."
                )));
            }
        }
    }
    parse_units(overrides.cpu.as_deref(), "overrides.cpu")?;
    parse_units(overrides.memory.as_deref(), "overrides.memory")?;
    for arn in [&overrides.task_role_arn, &overrides.execution_role_arn]
        .into_iter()
        .flatten()
    {
        if Arn::parse(arn).is_none_or(|a| a.service != "iam") {
            return Err(error::invalid_parameter(format!("Invalid role ARN: {arn}")));
        }
    }
    Ok(())
}

pub(crate) fn container_override<'a>(
    overrides: &'a TaskOverride,
    name: &str,
) -> Option<&'a ContainerOverride> {
    overrides
        .container_overrides
        .iter()
        .flatten()
        .find(|o| o.name.as_deref() == Some(name))
}

/// The resources a task reserves: task-level values when the definition or
/// overrides set them, else the sum over its containers (reservation before
/// hard limit, as ECS places), plus its static host ports.
pub(crate) fn reservation(
    definition: &TaskDefinition,
    overrides: &TaskOverride,
) -> Result<Reservation, AwsError> {
    let containers = definition.container_definitions.as_deref().unwrap_or(&[]);
    let task_cpu = match parse_units(overrides.cpu.as_deref(), "overrides.cpu")? {
        Some(v) => Some(v),
        None => parse_units(definition.cpu.as_deref(), "cpu")?,
    };
    let task_memory = match parse_units(overrides.memory.as_deref(), "overrides.memory")? {
        Some(v) => Some(v),
        None => parse_units(definition.memory.as_deref(), "memory")?,
    };
    let mut cpu = 0i64;
    let mut memory = 0i64;
    let mut ports_tcp = Vec::new();
    let mut ports_udp = Vec::new();
    let mut custom = std::collections::BTreeMap::new();
    let host_mode = definition.network_mode.as_deref() == Some("host");
    for c in containers {
        let name = c.name.as_deref().unwrap_or("");
        let o = container_override(overrides, name);
        cpu += i64::from(o.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0));
        let reservation = o
            .and_then(|o| o.memory_reservation)
            .or(c.memory_reservation);
        let hard = o.and_then(|o| o.memory).or(c.memory);
        memory += i64::from(reservation.or(hard).unwrap_or(0));
        let requirements = o
            .and_then(|o| o.resource_requirements.as_ref())
            .or(c.resource_requirements.as_ref());
        for r in requirements.into_iter().flatten() {
            if r.r#type.as_deref() == Some("GPU") {
                let n: i64 = r.value.as_deref().unwrap_or("0").parse().map_err(|_| {
                    error::invalid_parameter(format!(
                        "GPU requirement of {name} must be a whole number."
                    ))
                })?;
                *custom.entry("GPU".to_string()).or_insert(0) += n;
            }
        }
        for p in c.port_mappings.iter().flatten() {
            let host_port = if host_mode {
                p.container_port
            } else {
                p.host_port
            };
            let Some(port) = host_port
                .filter(|p| *p > 0)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            if p.protocol.as_deref() == Some("udp") {
                ports_udp.push(port);
            } else {
                ports_tcp.push(port);
            }
        }
    }
    Ok(Reservation {
        cpu: task_cpu.unwrap_or(cpu),
        memory: task_memory.unwrap_or(memory),
        ports_tcp,
        ports_udp,
        custom,
    })
}

pub(crate) fn required_attributes(definition: &TaskDefinition) -> Vec<(String, Option<String>)> {
    definition
        .requires_attributes
        .iter()
        .flatten()
        .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::web_definition as definition;

    #[test]
    fn reservation_sums_containers_and_static_ports() {
        let r = reservation(&definition(), &TaskOverride::default()).unwrap();
        assert_eq!(r.cpu, 150);
        assert_eq!(
            r.memory,
            128 + 64,
            "reservation counts before the hard limit"
        );
        assert_eq!(r.ports_tcp, vec![8080], "dynamic ports are not reserved");
        let overrides = TaskOverride {
            memory: Some("1024".into()),
            container_overrides: Some(vec![ContainerOverride {
                name: Some("b".into()),
                cpu: Some(10),
                ..ContainerOverride::default()
            }]),
            ..TaskOverride::default()
        };
        let r = reservation(&definition(), &overrides).unwrap();
        assert_eq!((r.cpu, r.memory), (110, 1024));
        let mut gpu = definition();
        if let Some(c) = gpu
            .container_definitions
            .as_mut()
            .and_then(|c| c.first_mut())
        {
            c.resource_requirements = Some(vec![berth_model::shapes::ecs::ResourceRequirement {
                r#type: Some("GPU".into()),
                value: Some("2".into()),
                ..Default::default()
            }]);
        }
        let r = reservation(&gpu, &TaskOverride::default()).unwrap();
        assert_eq!(r.custom.get("GPU"), Some(&2));
        let mut host = definition();
        host.network_mode = Some("host".into());
        let r = reservation(&host, &TaskOverride::default()).unwrap();
        assert_eq!(
            r.ports_tcp,
            vec![80, 81],
            "host mode reserves container ports"
        );
    }
}
