//! RegisterTaskDefinition's checks and the normal form ECS stores: defaults
//! filled in, task size in CPU units and MiB, computed compatibilities and
//! required attributes. Pure: no store, no clock.

use std::collections::BTreeSet;

use berth_model::shapes::ecs::{
    Attribute, ContainerDefinition, PortMapping, RegisterTaskDefinitionRequest, TaskDefinition,
    APPLICATION_PROTOCOL_VALUES, COMPATIBILITY_VALUES, CONTAINER_CONDITION_VALUES,
    CPU_ARCHITECTURE_VALUES, IPC_MODE_VALUES, LOG_DRIVER_VALUES, NETWORK_MODE_VALUES,
    OS_FAMILY_VALUES, PID_MODE_VALUES, TRANSPORT_PROTOCOL_VALUES, ULIMIT_NAME_VALUES,
};
use berth_model::AwsError;

use crate::error::{client, invalid_parameter};

pub(crate) const MAX_CONTAINERS: usize = 10;
/// Docker refuses containers with less memory than this.
pub(crate) const MIN_CONTAINER_MEMORY_MIB: i32 = 6;

/// Checks a family name: 1–255 letters, digits, hyphens and underscores.
pub(crate) fn check_family(family: &str) -> Result<(), AwsError> {
    if family.is_empty() {
        return Err(client("Family is required and cannot be empty."));
    }
    if family.len() > 255
        || !family
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(client(
            "Family contains invalid characters. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ));
    }
    Ok(())
}

fn check_enum(what: &str, value: &str, allowed: &[&str]) -> Result<(), AwsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(client(format!(
            "Invalid value '{value}' for {what}. Valid values: {}.",
            allowed.join(", ")
        )))
    }
}

/// Parses task-level CPU: CPU units ("1024") or vCPUs ("1 vCPU", "0.25 vcpu").
pub(crate) fn parse_task_cpu(text: &str) -> Option<u32> {
    let t = text.trim();
    if let Ok(units) = t.parse::<u32>() {
        return Some(units);
    }
    let lower = t.to_ascii_lowercase();
    let number = lower.strip_suffix("vcpu")?.trim();
    let vcpus: f64 = number.parse().ok()?;
    let units = vcpus * 1024.0;
    (units.is_finite() && units > 0.0 && units.fract() == 0.0).then_some(units as u32)
}

/// Parses task-level memory: MiB ("2048") or GB ("2 GB", "0.5GB").
pub(crate) fn parse_task_memory(text: &str) -> Option<u32> {
    let t = text.trim();
    if let Ok(mib) = t.parse::<u32>() {
        return Some(mib);
    }
    let lower = t.to_ascii_lowercase();
    let number = lower.strip_suffix("gb")?.trim();
    let gb: f64 = number.parse().ok()?;
    let mib = gb * 1024.0;
    (mib.is_finite() && mib > 0.0 && mib.fract() == 0.0).then_some(mib as u32)
}

/// Fargate's task sizes: CPU units → allowed memory (MiB) as (min, max, step).
const FARGATE_SIZES: &[(u32, u32, u32, u32)] = &[
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// ECS's refusal of a task size Fargate does not offer.
pub(crate) fn fargate_size_message(
    cpu: impl std::fmt::Display,
    memory: impl std::fmt::Display,
) -> String {
    format!(
        "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
    )
}

/// Whether `cpu`/`memory` is one of Fargate's valid combinations.
pub(crate) fn fargate_size_valid(cpu: u32, memory: u32) -> bool {
    FARGATE_SIZES.iter().any(|&(c, min, max, step)| {
        if c != cpu || !(min..=max).contains(&memory) {
            return false;
        }
        // 256 CPU allows 512, 1024 and 2048: its steps start at 512 but 1536 is not offered.
        if c == 256 {
            [512, 1024, 2048].contains(&memory)
        } else {
            (memory - min).is_multiple_of(step)
        }
    })
}

fn container_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The validated, normalised task definition (without ARN, revision, status
/// and registration metadata, which the handler adds).
pub(crate) fn normalize(input: &RegisterTaskDefinitionRequest) -> Result<TaskDefinition, AwsError> {
    let family = input.family.as_deref().unwrap_or("");
    check_family(family)?;

    let requires: Vec<String> = input.requires_compatibilities.clone().unwrap_or_default();
    for c in &requires {
        check_enum("requiresCompatibilities", c, COMPATIBILITY_VALUES)?;
    }
    let fargate = requires.iter().any(|c| c == "FARGATE");

    if let Some(mode) = &input.network_mode {
        check_enum("networkMode", mode, NETWORK_MODE_VALUES)?;
    }
    let network_mode = input.network_mode.as_deref();
    if fargate && network_mode != Some("awsvpc") {
        return Err(client("Fargate only supports network mode ‘awsvpc’."));
    }
    if let Some(pid) = &input.pid_mode {
        check_enum("pidMode", pid, PID_MODE_VALUES)?;
        if fargate && pid == "host" {
            return Err(client("Fargate does not support pidMode 'host'."));
        }
    }
    if let Some(ipc) = &input.ipc_mode {
        check_enum("ipcMode", ipc, IPC_MODE_VALUES)?;
        if fargate {
            return Err(client("Fargate does not support ipcMode."));
        }
    }

    let task_cpu = match input.cpu.as_deref() {
        None => None,
        Some(text) => Some(parse_task_cpu(text).ok_or_else(|| {
            client(format!(
                "Invalid 'cpu' setting for task. '{text}' is not a number of CPU units or vCPUs."
            ))
        })?),
    };
    let task_memory = match input.memory.as_deref() {
        None => None,
        Some(text) => Some(parse_task_memory(text).ok_or_else(|| {
            client(format!(
                "Invalid 'memory' setting for task. '{text}' is not a number of MiB or GB."
            ))
        })?),
    };
    if let Some(cpu) = task_cpu {
        if !(128..=196_608).contains(&cpu) {
            return Err(client(format!(
                "Invalid 'cpu' setting for task. Task CPU must be between 128 and 196608 units; got {cpu}."
            )));
        }
    }
    if let Some(memory) = task_memory {
        if memory < 128 {
            return Err(client(format!(
                "Invalid 'memory' setting for task. Task memory must be at least 128 MiB; got {memory}."
            )));
        }
    }
    if fargate {
        let (Some(cpu), Some(memory)) = (task_cpu, task_memory) else {
            return Err(client(
                "Task definition does not support launch_type FARGATE. Fargate requires that 'cpu' and 'memory' be defined at the task level.",
            ));
        };
        if !fargate_size_valid(cpu, memory) {
            return Err(client(fargate_size_message(cpu, memory)));
        }
    }
    if let Some(storage) = &input.ephemeral_storage {
        let size = storage.size_in_gi_b.unwrap_or(0);
        if !(21..=200).contains(&size) {
            return Err(client(format!(
                "The ephemeral storage size must be between 21 and 200 GiB; got {size}."
            )));
        }
    }
    if let Some(platform) = &input.runtime_platform {
        if let Some(arch) = &platform.cpu_architecture {
            check_enum(
                "runtimePlatform.cpuArchitecture",
                arch,
                CPU_ARCHITECTURE_VALUES,
            )?;
        }
        if let Some(os) = &platform.operating_system_family {
            check_enum(
                "runtimePlatform.operatingSystemFamily",
                os,
                OS_FAMILY_VALUES,
            )?;
        }
    }
    for constraint in input.placement_constraints.iter().flatten() {
        if constraint.r#type.as_deref() != Some("memberOf") {
            return Err(client(
                "Task definition placement constraints support only type 'memberOf'.",
            ));
        }
        if constraint.expression.as_deref().is_none_or(str::is_empty) {
            return Err(client(
                "A memberOf placement constraint requires an expression.",
            ));
        }
    }
    if input
        .placement_constraints
        .as_ref()
        .is_some_and(|c| c.len() > 10)
    {
        return Err(client(
            "A task definition can have at most 10 placement constraints.",
        ));
    }

    let volumes = input.volumes.clone().unwrap_or_default();
    let mut volume_names = BTreeSet::new();
    for volume in &volumes {
        let name = volume.name.as_deref().unwrap_or("");
        if !container_name_ok(name) {
            return Err(client(format!(
                "Invalid volume name '{name}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            )));
        }
        if !volume_names.insert(name.to_string()) {
            return Err(client(format!("Duplicate volume name '{name}'.")));
        }
        if fargate
            && volume
                .host
                .as_ref()
                .is_some_and(|h| h.source_path.is_some())
        {
            return Err(client(
                "Fargate does not support host volumes with a sourcePath.",
            ));
        }
    }

    let containers = input.container_definitions.clone().unwrap_or_default();
    if containers.is_empty() {
        return Err(client("Container list cannot be empty."));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(client(format!(
            "Too many containers. A task definition can have at most {MAX_CONTAINERS} containers; got {}.",
            containers.len()
        )));
    }
    let mut names = BTreeSet::new();
    for c in &containers {
        let name = c.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(client("Container.name should not be null or empty."));
        }
        if !container_name_ok(name) {
            return Err(client(format!(
                "Container name '{name}' is invalid. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            )));
        }
        if !names.insert(name.to_string()) {
            return Err(client(format!(
                "Duplicate container name '{name}'. Container names must be unique within a task definition."
            )));
        }
    }

    let mut normalized = Vec::with_capacity(containers.len());
    let mut container_memory_total: i64 = 0;
    let mut used_host_ports: BTreeSet<(i32, String)> = BTreeSet::new();
    for c in containers {
        let c = normalize_container(
            c,
            &names,
            &volume_names,
            network_mode,
            task_memory,
            task_cpu,
            fargate,
            &mut used_host_ports,
        )?;
        container_memory_total += i64::from(c.memory_reservation.or(c.memory).unwrap_or(0));
        normalized.push(c);
    }
    if !normalized.iter().any(|c| c.essential == Some(true)) {
        return Err(client(
            "Invalid setting for container. At least one container in the task definition must be essential.",
        ));
    }
    if let Some(memory) = task_memory {
        if container_memory_total > i64::from(memory) {
            return Err(client(format!(
                "The sum of the memory reserved by the containers ({container_memory_total} MiB) is greater than the task memory ({memory} MiB)."
            )));
        }
    }
    if let Some(proxy) = &input.proxy_configuration {
        let target = proxy.container_name.as_deref().unwrap_or("");
        if !names.contains(target) {
            return Err(client(format!(
                "proxyConfiguration names container '{target}', which is not in the task definition."
            )));
        }
    }

    let mut definition = TaskDefinition {
        family: Some(family.to_string()),
        task_role_arn: input.task_role_arn.clone(),
        execution_role_arn: input.execution_role_arn.clone(),
        network_mode: input.network_mode.clone(),
        container_definitions: Some(normalized),
        volumes: Some(volumes),
        placement_constraints: Some(input.placement_constraints.clone().unwrap_or_default()),
        requires_compatibilities: input.requires_compatibilities.clone(),
        cpu: task_cpu.map(|c| c.to_string()),
        memory: task_memory.map(|m| m.to_string()),
        pid_mode: input.pid_mode.clone(),
        ipc_mode: input.ipc_mode.clone(),
        proxy_configuration: input.proxy_configuration.clone(),
        inference_accelerators: input.inference_accelerators.clone(),
        ephemeral_storage: input.ephemeral_storage.clone(),
        runtime_platform: input.runtime_platform.clone(),
        enable_fault_injection: input.enable_fault_injection,
        ..TaskDefinition::default()
    };
    check_execution_role(&definition)?;
    definition.requires_attributes = Some(required_attributes(&definition));
    definition.compatibilities = Some(compatibilities(&definition));
    Ok(definition)
}

#[allow(clippy::too_many_arguments)]
fn normalize_container(
    mut c: ContainerDefinition,
    names: &BTreeSet<String>,
    volumes: &BTreeSet<String>,
    network_mode: Option<&str>,
    task_memory: Option<u32>,
    task_cpu: Option<u32>,
    fargate: bool,
    used_host_ports: &mut BTreeSet<(i32, String)>,
) -> Result<ContainerDefinition, AwsError> {
    let name = c.name.clone().unwrap_or_default();
    match c.image.as_deref() {
        None | Some("") => {
            return Err(client(format!(
                "Container.image should not be null or empty for container '{name}'."
            )))
        }
        Some(image) if image.len() > 255 || image.chars().any(char::is_whitespace) => {
            return Err(client(format!(
                "Invalid image '{image}' for container '{name}'."
            )))
        }
        _ => {}
    }

    let cpu = c.cpu.unwrap_or(0);
    if cpu < 0 {
        return Err(client(format!(
            "Invalid 'cpu' setting for container '{name}'. CPU units cannot be negative."
        )));
    }
    if let Some(task_cpu) = task_cpu {
        if cpu as u32 > task_cpu {
            return Err(client(format!(
                "Invalid 'cpu' setting for container '{name}'. Container CPU ({cpu}) must be less than or equal to task CPU ({task_cpu})."
            )));
        }
    }
    c.cpu = Some(cpu);

    match (c.memory, c.memory_reservation) {
        (None, None) if task_memory.is_none() => {
            return Err(client(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )))
        }
        (Some(hard), Some(soft)) if soft > hard => {
            return Err(client(format!(
                "Invalid setting for container '{name}'. 'memoryReservation' ({soft}) must be less than or equal to 'memory' ({hard})."
            )))
        }
        _ => {}
    }
    for (field, value) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(v) = value {
            if v < MIN_CONTAINER_MEMORY_MIB {
                return Err(client(format!(
                    "Invalid '{field}' setting for container '{name}'. The minimum is {MIN_CONTAINER_MEMORY_MIB} MiB; got {v}."
                )));
            }
            if let Some(task) = task_memory {
                if v as u32 > task {
                    return Err(client(format!(
                        "Invalid '{field}' setting for container '{name}'. Container {field} ({v} MiB) must be less than or equal to the task memory ({task} MiB)."
                    )));
                }
            }
        }
    }

    let mut mappings = Vec::new();
    let mut seen_container_ports = BTreeSet::new();
    for mapping in c.port_mappings.take().unwrap_or_default() {
        let m = normalize_port_mapping(mapping, &name, network_mode)?;
        let protocol = m.protocol.clone().unwrap_or_default();
        if let Some(port) = m.container_port {
            if !seen_container_ports.insert((port, protocol.clone())) {
                return Err(client(format!(
                    "Invalid port mappings for container '{name}'. Container port {port}/{protocol} is mapped more than once."
                )));
            }
        }
        if let Some(host) = m.host_port.filter(|p| *p > 0) {
            if !used_host_ports.insert((host, protocol.clone())) {
                return Err(client(format!(
                    "Invalid port mappings. Host port {host}/{protocol} is used by more than one container."
                )));
            }
        }
        mappings.push(m);
    }
    c.port_mappings = Some(mappings);

    if c.essential.is_none() {
        c.essential = Some(true);
    }
    c.environment.get_or_insert_with(Vec::new);
    c.mount_points.get_or_insert_with(Vec::new);
    c.volumes_from.get_or_insert_with(Vec::new);
    c.system_controls.get_or_insert_with(Vec::new);

    for env in c.environment.iter().flatten() {
        if env.name.as_deref().is_none_or(str::is_empty) {
            return Err(client(format!(
                "Invalid environment variable for container '{name}': the name cannot be empty."
            )));
        }
    }
    for file in c.environment_files.iter().flatten() {
        if file.r#type.as_deref() != Some("s3") || file.value.as_deref().is_none_or(str::is_empty) {
            return Err(client(format!(
                "Invalid environmentFiles for container '{name}': each needs type 's3' and an S3 object ARN value."
            )));
        }
    }
    for mount in c.mount_points.iter().flatten() {
        let source = mount.source_volume.as_deref().unwrap_or("");
        if !volumes.contains(source) {
            return Err(client(format!(
                "Invalid 'mountPoints' setting for container '{name}'. Volume '{source}' is not defined in the task definition's volumes."
            )));
        }
        if mount.container_path.as_deref().is_none_or(str::is_empty) {
            return Err(client(format!(
                "Invalid 'mountPoints' setting for container '{name}'. containerPath is required."
            )));
        }
    }
    for from in c.volumes_from.iter().flatten() {
        let source = from.source_container.as_deref().unwrap_or("");
        if !names.contains(source) || source == name {
            return Err(client(format!(
                "Invalid 'volumesFrom' setting for container '{name}'. Container '{source}' is not another container of the task definition."
            )));
        }
    }
    for link in c.links.iter().flatten() {
        if network_mode.is_some_and(|m| m != "bridge") {
            return Err(client(format!(
                "Links are not supported when networkMode={}.",
                network_mode.unwrap_or("bridge")
            )));
        }
        let target = link.split(':').next().unwrap_or("");
        if !names.contains(target) || target == name {
            return Err(client(format!(
                "Invalid 'links' setting for container '{name}'. Container '{target}' is not another container of the task definition."
            )));
        }
    }
    for dependency in c.depends_on.iter().flatten() {
        let target = dependency.container_name.as_deref().unwrap_or("");
        let condition = dependency.condition.as_deref().unwrap_or("");
        if !names.contains(target) {
            return Err(client(format!(
                "Invalid 'dependsOn' setting for container '{name}'. Container '{target}' does not exist in the task definition."
            )));
        }
        if target == name {
            return Err(client(format!(
                "Invalid 'dependsOn' setting for container '{name}'. A container cannot depend on itself."
            )));
        }
        check_enum("dependsOn.condition", condition, CONTAINER_CONDITION_VALUES)?;
    }
    if let Some(hc) = &c.health_check {
        let command = hc.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(client(format!(
                "Invalid 'healthCheck' setting for container '{name}'. The command is required."
            )));
        }
        let bounds = [
            ("interval", hc.interval, 5, 300),
            ("timeout", hc.timeout, 2, 120),
            ("retries", hc.retries, 1, 10),
            ("startPeriod", hc.start_period, 0, 300),
        ];
        for (field, value, min, max) in bounds {
            if let Some(v) = value {
                if !(min..=max).contains(&v) {
                    return Err(client(format!(
                        "Invalid 'healthCheck' setting for container '{name}'. {field} must be between {min} and {max} seconds; got {v}."
                    )));
                }
            }
        }
    }
    if let Some(t) = c.stop_timeout {
        if !(0..=120).contains(&t) && fargate {
            return Err(client(format!(
                "Invalid 'stopTimeout' setting for container '{name}'. Fargate allows 0 to 120 seconds; got {t}."
            )));
        }
        if t < 0 {
            return Err(client(format!(
                "Invalid 'stopTimeout' setting for container '{name}'. It cannot be negative."
            )));
        }
    }
    for ulimit in c.ulimits.iter().flatten() {
        let u = ulimit.name.as_deref().unwrap_or("");
        check_enum("ulimits.name", u, ULIMIT_NAME_VALUES)?;
        if ulimit.soft_limit.unwrap_or(0) > ulimit.hard_limit.unwrap_or(0) {
            return Err(client(format!(
                "Invalid ulimit '{u}' for container '{name}': softLimit must not exceed hardLimit."
            )));
        }
    }
    if let Some(log) = &c.log_configuration {
        let driver = log.log_driver.as_deref().unwrap_or("");
        check_enum("logConfiguration.logDriver", driver, LOG_DRIVER_VALUES)?;
        if fargate && !["awslogs", "splunk", "awsfirelens"].contains(&driver) {
            return Err(client(format!(
                "Fargate does not support log driver '{driver}'. Supported: awslogs, splunk, awsfirelens."
            )));
        }
        for secret in log.secret_options.iter().flatten() {
            check_secret(&name, secret.name.as_deref(), secret.value_from.as_deref())?;
        }
    }
    for secret in c.secrets.iter().flatten() {
        check_secret(&name, secret.name.as_deref(), secret.value_from.as_deref())?;
    }
    if fargate {
        if c.privileged == Some(true) {
            return Err(client(format!(
                "Fargate does not support privileged containers ('{name}')."
            )));
        }
        if c.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(client("Fargate does not support links."));
        }
    }
    Ok(c)
}

fn check_secret(
    container: &str,
    name: Option<&str>,
    value_from: Option<&str>,
) -> Result<(), AwsError> {
    if name.is_none_or(str::is_empty) {
        return Err(client(format!(
            "Invalid secret for container '{container}': the name is required."
        )));
    }
    if value_from.is_none_or(str::is_empty) {
        return Err(client(format!(
            "Invalid secret '{}' for container '{container}': valueFrom is required.",
            name.unwrap_or("")
        )));
    }
    Ok(())
}

fn normalize_port_mapping(
    mut m: PortMapping,
    container: &str,
    network_mode: Option<&str>,
) -> Result<PortMapping, AwsError> {
    let protocol = m.protocol.clone().unwrap_or_else(|| "tcp".into());
    check_enum(
        "portMappings.protocol",
        &protocol,
        TRANSPORT_PROTOCOL_VALUES,
    )?;
    m.protocol = Some(protocol);
    if let Some(app) = &m.app_protocol {
        check_enum("portMappings.appProtocol", app, APPLICATION_PROTOCOL_VALUES)?;
    }
    let in_range = |p: i32| (0..=65535).contains(&p);
    if let Some(range) = &m.container_port_range {
        if m.container_port.is_some() {
            return Err(client(format!(
                "Invalid port mapping for container '{container}': specify either containerPort or containerPortRange, not both."
            )));
        }
        let valid = range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<i32>().ok()?, b.trim().parse::<i32>().ok()?)))
            .is_some_and(|(a, b)| a >= 1 && a < b && b <= 65535);
        if !valid {
            return Err(client(format!(
                "Invalid containerPortRange '{range}' for container '{container}'."
            )));
        }
        return Ok(m);
    }
    let container_port = m.container_port.ok_or_else(|| {
        client(format!(
            "Invalid port mapping for container '{container}': containerPort is required."
        ))
    })?;
    if !in_range(container_port) || container_port == 0 {
        return Err(invalid_parameter(format!(
            "Invalid containerPort {container_port} for container '{container}': ports must be between 1 and 65535."
        )));
    }
    match network_mode {
        Some("awsvpc") | Some("host") => match m.host_port {
            None | Some(0) => m.host_port = Some(container_port),
            Some(h) if h != container_port => {
                return Err(client(format!(
                    "When networkMode={}, host ports must either be undefined or equal to container port values (container '{container}': hostPort {h}, containerPort {container_port}).",
                    network_mode.unwrap_or("")
                )))
            }
            _ => {}
        },
        Some("none") => {
            return Err(client(
                "Port mappings are not supported when networkMode=none.",
            ))
        }
        _ => {
            let host = m.host_port.unwrap_or(0);
            if !in_range(host) {
                return Err(invalid_parameter(format!(
                    "Invalid hostPort {host} for container '{container}': ports must be between 0 and 65535."
                )));
            }
            m.host_port = Some(host);
        }
    }
    Ok(m)
}

/// A Fargate or awslogs task whose execution role is missing cannot start.
fn check_execution_role(definition: &TaskDefinition) -> Result<(), AwsError> {
    let fargate = definition
        .requires_compatibilities
        .iter()
        .flatten()
        .any(|c| c == "FARGATE");
    let containers = definition.container_definitions.iter().flatten();
    let needs_role = containers.clone().any(|c| {
        c.log_configuration
            .as_ref()
            .is_some_and(|l| l.log_driver.as_deref() == Some("awslogs"))
    }) && fargate;
    let has_secrets = containers
        .clone()
        .any(|c| c.secrets.as_ref().is_some_and(|s| !s.is_empty()));
    if definition.execution_role_arn.is_none() && needs_role {
        return Err(client(
            "Fargate requires task definition to have execution role ARN to support log driver awslogs.",
        ));
    }
    if definition.execution_role_arn.is_none() && has_secrets {
        return Err(client(
            "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.",
        ));
    }
    Ok(())
}

fn attribute(name: &str) -> Attribute {
    Attribute {
        name: Some(name.to_string()),
        ..Attribute::default()
    }
}

/// The agent capabilities a container instance must advertise to run this task
/// definition, named as ECS names them.
pub(crate) fn required_attributes(definition: &TaskDefinition) -> Vec<Attribute> {
    let mut names = BTreeSet::new();
    names.insert("com.amazonaws.ecs.capability.docker-remote-api.1.18");
    if definition.network_mode.as_deref() == Some("awsvpc") {
        names.insert("ecs.capability.task-eni");
    }
    if definition.task_role_arn.is_some() {
        names.insert("com.amazonaws.ecs.capability.task-iam-role");
    }
    for c in definition.container_definitions.iter().flatten() {
        if let Some(log) = &c.log_configuration {
            if let Some(driver) = &log.log_driver {
                if driver == "awslogs" {
                    names.insert("com.amazonaws.ecs.capability.logging-driver.awslogs");
                    names.insert("com.amazonaws.ecs.capability.docker-remote-api.1.19");
                    if definition.execution_role_arn.is_some() {
                        names.insert("ecs.capability.execution-role-awslogs");
                    }
                }
            }
        }
        if c.health_check.is_some() {
            names.insert("ecs.capability.container-health-check");
            names.insert("com.amazonaws.ecs.capability.docker-remote-api.1.24");
        }
        if c.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
            names.insert("ecs.capability.container-ordering");
        }
        for secret in c.secrets.iter().flatten() {
            let from = secret.value_from.as_deref().unwrap_or("");
            if from.contains(":secretsmanager:") {
                names.insert("ecs.capability.secrets.asm.environment-variables");
            } else {
                names.insert("ecs.capability.secrets.ssm.environment-variables");
            }
        }
        if c.environment_files.as_ref().is_some_and(|f| !f.is_empty()) {
            names.insert("ecs.capability.env-files.s3");
        }
        if c.image.as_deref().is_some_and(|i| i.contains(".dkr.ecr.")) {
            names.insert("com.amazonaws.ecs.capability.ecr-auth");
            if definition.execution_role_arn.is_some() {
                names.insert("ecs.capability.execution-role-ecr-pull");
            }
        }
        if c.stop_timeout.is_some() || c.start_timeout.is_some() {
            names.insert("ecs.capability.container-ordering");
        }
    }
    names.into_iter().map(attribute).collect()
}

/// The launch types this task definition can run on, as ECS computes them.
pub(crate) fn compatibilities(definition: &TaskDefinition) -> Vec<String> {
    let mut out = vec!["EC2".to_string()];
    let awsvpc = definition.network_mode.as_deref() == Some("awsvpc");
    let sized = match (definition.cpu.as_deref(), definition.memory.as_deref()) {
        (Some(c), Some(m)) => match (c.parse::<u32>(), m.parse::<u32>()) {
            (Ok(c), Ok(m)) => fargate_size_valid(c, m),
            _ => false,
        },
        _ => false,
    };
    let fargate_safe = definition.container_definitions.iter().flatten().all(|c| {
        c.privileged != Some(true)
            && c.links.as_ref().is_none_or(|l| l.is_empty())
            && c.log_configuration.as_ref().is_none_or(|l| {
                matches!(
                    l.log_driver.as_deref(),
                    Some("awslogs" | "splunk" | "awsfirelens")
                )
            })
    }) && definition.pid_mode.as_deref() != Some("host")
        && definition.ipc_mode.is_none();
    if awsvpc && sized && fargate_safe {
        out.push("FARGATE".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_table() {
        assert!(fargate_size_valid(256, 512));
        assert!(fargate_size_valid(256, 2048));
        assert!(!fargate_size_valid(256, 1536));
        assert!(!fargate_size_valid(256, 4096));
        assert!(fargate_size_valid(512, 3072));
        assert!(!fargate_size_valid(512, 512));
        assert!(fargate_size_valid(4096, 30720));
        assert!(!fargate_size_valid(4096, 31744));
        assert!(fargate_size_valid(8192, 20480));
        assert!(!fargate_size_valid(8192, 17408));
        assert!(fargate_size_valid(16384, 122880));
        assert!(!fargate_size_valid(100, 512));
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse_task_cpu("1 vCPU"), Some(1024));
        assert_eq!(parse_task_cpu(".25 vcpu"), Some(256));
        assert_eq!(parse_task_cpu("512"), Some(512));
        assert_eq!(parse_task_cpu("lots"), None);
        assert_eq!(parse_task_memory("2 GB"), Some(2048));
        assert_eq!(parse_task_memory("0.5GB"), Some(512));
        assert_eq!(parse_task_memory("1000"), Some(1000));
        assert_eq!(parse_task_memory("1 TB"), None);
    }
}
