//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks, and the
//! reports agents send about the tasks they run.
//!
//! RunTask places tasks through the pure scheduler inside the same store
//! mutation that writes them, so concurrent calls never overcommit an
//! instance. Handlers only write desired state; the agent of the chosen
//! instance runs the containers and reports what happened.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use berth_model::agent_protocol::{ContainerReport, SubmitTaskStateRequest};
use berth_model::shapes::ecs::{
    Attribute, Container, ContainerDefinition, ContainerOverride, DescribeTasksRequest,
    DescribeTasksResponse, Failure, ListTasksRequest, ListTasksResponse, RunTaskRequest,
    RunTaskResponse, StartTaskRequest, StartTaskResponse, StopTaskRequest, StopTaskResponse, Tag,
    Task, TaskDefinition, TaskOverride,
};
use berth_model::{Arn, AwsError};
use berth_scheduler::{InstanceSnapshot, InstanceStatus, Placement, TaskRequest};
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::clusters::{self, resolve_name};
use crate::instances::{self, InstanceRecord, Presence};
use crate::keys::Scope;
use crate::records::{decode, encode, load, now};
use crate::task_definitions::{self, TaskDefinitionRecord};
use crate::{error, pagination, tagging};

pub const PROVISIONING: &str = "PROVISIONING";
pub const PENDING: &str = "PENDING";
pub const ACTIVATING: &str = "ACTIVATING";
pub const RUNNING: &str = "RUNNING";
pub const DEACTIVATING: &str = "DEACTIVATING";
pub const STOPPING: &str = "STOPPING";
pub const DEPROVISIONING: &str = "DEPROVISIONING";
pub const STOPPED: &str = "STOPPED";

/// The order of ECS's task lifecycle; a task never moves backwards.
const LIFECYCLE: &[&str] = &[
    PROVISIONING,
    PENDING,
    ACTIVATING,
    RUNNING,
    DEACTIVATING,
    STOPPING,
    DEPROVISIONING,
    STOPPED,
];

pub fn rank(status: &str) -> Option<usize> {
    LIFECYCLE.iter().position(|s| *s == status)
}

/// What a task holds on its instance until it is STOPPED.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub cpu: i64,
    pub memory: i64,
    pub ports_tcp: Vec<u16>,
    pub ports_udp: Vec<u16>,
    /// Custom integer resources such as GPU (`resourceRequirements`).
    #[serde(default)]
    pub custom: std::collections::BTreeMap<String, i64>,
}

/// A stored task: the API's view plus what the agent needs to run it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub id: String,
    pub cluster: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    pub task: Task,
    /// The revision as it was when the task started (it may be deleted later).
    pub definition: TaskDefinition,
    pub reservation: Reservation,
    /// The awsvpc task's interface once attached (with what the agent needs
    /// beyond the attachment's details: the subnet's CIDR and router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<berth_model::agent_protocol::TaskNetworkInterface>,
    /// For Fargate tasks, the cluster of the host (`instance_id`) running
    /// them: hosts serve every cluster of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cluster: Option<String>,
    /// The awsvpc task's security groups (its interface is created in them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

impl TaskRecord {
    pub fn last_status(&self) -> &str {
        self.task.last_status.as_deref().unwrap_or(PROVISIONING)
    }

    pub fn desired_status(&self) -> &str {
        self.task.desired_status.as_deref().unwrap_or(RUNNING)
    }

    pub fn arn(&self) -> &str {
        self.task.task_arn.as_deref().unwrap_or("")
    }

    pub(crate) fn bump(&mut self) {
        self.task.version = Some(self.task.version.unwrap_or(0) + 1);
    }
}

/// What the tasks on one instance use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub ports_tcp: BTreeSet<u16>,
    pub ports_udp: BTreeSet<u16>,
    pub running: u32,
    pub pending: u32,
    /// Tasks not yet STOPPED by task group (for spread and distinctInstance).
    pub groups: std::collections::BTreeMap<String, u32>,
    pub custom: std::collections::BTreeMap<String, i64>,
}

impl Usage {
    pub(crate) fn add(&mut self, record: &TaskRecord) {
        if record.last_status() == STOPPED || crate::fargate::reclaimed(record) {
            return;
        }
        self.cpu += record.reservation.cpu;
        self.memory += record.reservation.memory;
        self.ports_tcp
            .extend(record.reservation.ports_tcp.iter().copied());
        self.ports_udp
            .extend(record.reservation.ports_udp.iter().copied());
        match record.last_status() {
            RUNNING => self.running += 1,
            PROVISIONING | PENDING | ACTIVATING => self.pending += 1,
            _ => {}
        }
    }
}

fn cluster_tasks(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> Result<Vec<TaskRecord>, AwsError> {
    view.range(&scope.tasks(cluster), None, usize::MAX)
        .iter()
        .map(decode::<TaskRecord>)
        .collect()
}

/// Usage of every instance of a cluster, by instance id.
pub fn usage_by_instance(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> Result<HashMap<String, Usage>, AwsError> {
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for record in cluster_tasks(view, scope, cluster)? {
        // Fargate tasks count on their host through its index, below.
        if record.host_cluster.is_some() {
            continue;
        }
        if let Some(id) = &record.instance_id {
            usage.entry(id.clone()).or_default().add(&record);
        }
    }
    for kv in view.range(&scope.instances(cluster), None, usize::MAX) {
        let host: InstanceRecord = decode(&kv)?;
        if !host.offers_fargate() {
            continue;
        }
        let u = usage.entry(host.id.clone()).or_default();
        for t in crate::fargate::hosted_tasks(view, scope, cluster, &host.id)? {
            u.add(&t);
        }
    }
    Ok(usage)
}

pub fn usage_of_instance(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    instance_id: &str,
) -> Result<Usage, AwsError> {
    Ok(usage_by_instance(view, scope, cluster)?
        .remove(instance_id)
        .unwrap_or_default())
}

/// Running and pending tasks of a cluster (for its counts): EC2 launch
/// type first, then Fargate.
pub fn cluster_task_counts(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> (Usage, Usage) {
    let (mut ec2, mut fargate) = (Usage::default(), Usage::default());
    for kv in view.range(&scope.tasks(cluster), None, usize::MAX) {
        if let Ok(record) = decode::<TaskRecord>(&kv) {
            let total = if record.host_cluster.is_some() {
                &mut fargate
            } else {
                &mut ec2
            };
            match record.last_status() {
                RUNNING => total.running += 1,
                PROVISIONING | PENDING | ACTIVATING => total.pending += 1,
                _ => {}
            }
        }
    }
    (ec2, fargate)
}

/// Turns a task reference (id or ARN) into its id.
pub fn resolve_task_id(scope: &Scope, cluster: &str, reference: &str) -> Result<String, AwsError> {
    let id = if reference.starts_with("arn:") {
        let arn = Arn::parse(reference)
            .filter(|a| a.service == "ecs" && a.resource_type() == "task")
            .ok_or_else(|| error::invalid_parameter(format!("Invalid task ARN: {reference}")))?;
        if arn.account != scope.account || arn.region != scope.region {
            return Err(error::invalid_parameter(format!(
                "The task {reference} is not in this account and region."
            )));
        }
        let rest = arn.resource_id();
        match rest.rsplit_once('/') {
            Some((c, id)) if c == cluster => id.to_string(),
            Some(_) => {
                return Err(error::invalid_parameter(format!(
                    "The task {reference} does not belong to cluster {cluster}."
                )))
            }
            None => rest.to_string(),
        }
    } else {
        reference.to_string()
    };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(error::invalid_parameter(format!(
            "Invalid task id: '{id}'."
        )));
    }
    Ok(id)
}

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

fn check_overrides(definition: &TaskDefinition, overrides: &TaskOverride) -> Result<(), AwsError> {
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

fn container_override<'a>(
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
pub fn reservation(
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

fn required_attributes(definition: &TaskDefinition) -> Vec<(String, Option<String>)> {
    definition
        .requires_attributes
        .iter()
        .flatten()
        .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
        .collect()
}

/// What differs between the tasks of one launch: the Fargate capacity
/// provider and the subnet of each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    pub provider: Option<String>,
    pub subnet: Option<crate::networking::SubnetInfo>,
}

/// Everything fixed about the tasks of one RunTask/StartTask call.
#[derive(Clone)]
pub(crate) struct Launch {
    pub capacity: crate::fargate::Capacity,
    pub network: Option<crate::fargate::AwsVpc>,
    /// Live tasks of the same service by capacity provider (the strategy
    /// split continues from them).
    pub provider_counts: std::collections::BTreeMap<String, u32>,
    pub cluster: String,
    pub definition: TaskDefinition,
    pub definition_tags: Vec<Tag>,
    pub overrides: TaskOverride,
    pub group: String,
    pub started_by: Option<String>,
    pub tags: Vec<Tag>,
    pub propagate: Option<String>,
    pub reservation: Reservation,
    pub enable_execute_command: bool,
}

fn container_view(
    definition: &ContainerDefinition,
    o: Option<&ContainerOverride>,
    task_arn: &str,
    scope: &Scope,
    cluster: &str,
    task_id: &str,
) -> Container {
    let cpu = o.and_then(|o| o.cpu).or(definition.cpu).unwrap_or(0);
    Container {
        container_arn: Some(scope.arn(&format!(
            "container/{cluster}/{task_id}/{}",
            uuid::Uuid::new_v4()
        ))),
        task_arn: Some(task_arn.to_string()),
        name: definition.name.clone(),
        image: definition.image.clone(),
        last_status: Some(PENDING.into()),
        network_bindings: Some(Vec::new()),
        network_interfaces: Some(Vec::new()),
        health_status: Some("UNKNOWN".into()),
        cpu: Some(cpu.to_string()),
        memory: o
            .and_then(|o| o.memory)
            .or(definition.memory)
            .map(|m| m.to_string()),
        memory_reservation: o
            .and_then(|o| o.memory_reservation)
            .or(definition.memory_reservation)
            .map(|m| m.to_string()),
        ..Container::default()
    }
}

pub(crate) fn new_task(
    scope: &Scope,
    launch: &Launch,
    instance: &InstanceRecord,
    slot: &Slot,
    created_at: f64,
) -> TaskRecord {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let task_arn = scope.arn(&format!("task/{}/{id}", launch.cluster));
    let containers = launch
        .definition
        .container_definitions
        .iter()
        .flatten()
        .map(|c| {
            let o = container_override(&launch.overrides, c.name.as_deref().unwrap_or(""));
            container_view(c, o, &task_arn, scope, &launch.cluster, &id)
        })
        .collect();
    // ECS echoes one container override per container.
    let mut overrides = launch.overrides.clone();
    let mut container_overrides = Vec::new();
    for c in launch.definition.container_definitions.iter().flatten() {
        let name = c.name.clone().unwrap_or_default();
        container_overrides.push(
            container_override(&launch.overrides, &name)
                .cloned()
                .unwrap_or(ContainerOverride {
                    name: Some(name),
                    ..ContainerOverride::default()
                }),
        );
    }
    overrides.container_overrides = Some(container_overrides);
    overrides
        .inference_accelerator_overrides
        .get_or_insert_with(Vec::new);
    let availability_zone = match &slot.subnet {
        Some(subnet) => Some(subnet.availability_zone.clone()),
        None => instance
            .attributes()
            .iter()
            .find(|a| a.name.as_deref() == Some("ecs.availability-zone"))
            .and_then(|a| a.value.clone()),
    };
    let fargate = slot.provider.is_some();
    let attachments = match &slot.subnet {
        Some(subnet) => vec![berth_model::shapes::ecs::Attachment {
            id: Some(uuid::Uuid::new_v4().to_string()),
            r#type: Some(crate::networking::ENI_ATTACHMENT.into()),
            status: Some(crate::networking::PRECREATED.into()),
            details: Some(vec![berth_model::shapes::ecs::KeyValuePair {
                name: Some("subnetId".into()),
                value: Some(subnet.subnet_id.clone()),
            }]),
        }],
        None => Vec::new(),
    };
    let mut tags = match launch.propagate.as_deref() {
        Some("TASK_DEFINITION") => launch.definition_tags.clone(),
        _ => Vec::new(),
    };
    tagging::merge(&mut tags, &launch.tags);
    let task = Task {
        attachments: Some(attachments),
        attributes: Some(vec![Attribute {
            name: Some("ecs.cpu-architecture".into()),
            value: Some("x86_64".into()),
            target_type: None,
            target_id: None,
        }]),
        availability_zone,
        cluster_arn: Some(scope.arn(&format!("cluster/{}", launch.cluster))),
        container_instance_arn: (!fargate).then(|| instance.arn().to_string()),
        capacity_provider_name: slot.provider.clone(),
        platform_version: fargate.then(|| crate::fargate::PLATFORM_VERSION.to_string()),
        platform_family: fargate.then(|| "Linux".to_string()),
        ephemeral_storage: fargate.then(|| berth_model::shapes::ecs::EphemeralStorage {
            size_in_gi_b: Some(
                launch
                    .definition
                    .ephemeral_storage
                    .as_ref()
                    .and_then(|e| e.size_in_gi_b)
                    .unwrap_or(crate::fargate::DEFAULT_EPHEMERAL_GIB),
            ),
        }),
        containers: Some(containers),
        cpu: launch
            .definition
            .cpu
            .clone()
            .or_else(|| Some(launch.reservation.cpu.to_string())),
        memory: launch
            .definition
            .memory
            .clone()
            .or_else(|| Some(launch.reservation.memory.to_string())),
        created_at: Some(created_at),
        desired_status: Some(RUNNING.into()),
        enable_execute_command: Some(launch.enable_execute_command),
        group: Some(launch.group.clone()),
        health_status: Some("UNKNOWN".into()),
        last_status: Some(PROVISIONING.into()),
        launch_type: Some(if fargate { "FARGATE" } else { "EC2" }.into()),
        overrides: Some(overrides),
        started_by: launch.started_by.clone(),
        tags: Some(tags),
        task_arn: Some(task_arn),
        task_definition_arn: launch.definition.task_definition_arn.clone(),
        version: Some(1),
        ..Task::default()
    };
    TaskRecord {
        id,
        cluster: launch.cluster.clone(),
        instance_id: Some(instance.id.clone()),
        task,
        definition: launch.definition.clone(),
        reservation: launch.reservation.clone(),
        network: None,
        host_cluster: fargate.then(|| instance.cluster.clone()),
        security_groups: launch
            .network
            .as_ref()
            .map(|n| n.security_groups.clone())
            .unwrap_or_default(),
    }
}

pub(crate) fn snapshot(
    record: &InstanceRecord,
    usage: &Usage,
    presence: &Presence,
) -> InstanceSnapshot {
    let mut ports_tcp: BTreeSet<u16> = record.reserved_ports("PORTS").into_iter().collect();
    ports_tcp.extend(usage.ports_tcp.iter().copied());
    let mut ports_udp: BTreeSet<u16> = record.reserved_ports("PORTS_UDP").into_iter().collect();
    ports_udp.extend(usage.ports_udp.iter().copied());
    InstanceSnapshot {
        arn: record.arn().to_string(),
        status: match record.status() {
            instances::ACTIVE => InstanceStatus::Active,
            instances::DRAINING => InstanceStatus::Draining,
            _ => InstanceStatus::Inactive,
        },
        agent_connected: presence.connected(record.arn()),
        cpu_remaining: record.registered_integer("CPU") - usage.cpu,
        memory_remaining: record.registered_integer("MEMORY") - usage.memory,
        ports_tcp_used: ports_tcp,
        ports_udp_used: ports_udp,
        attributes: record
            .attributes()
            .iter()
            .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
            .collect(),
        task_count: usage.running + usage.pending,
        ec2_instance_id: record.instance.ec2_instance_id.clone().unwrap_or_default(),
        custom_remaining: record
            .instance
            .registered_resources
            .iter()
            .flatten()
            .filter(|r| r.r#type.as_deref() == Some("INTEGER"))
            .filter_map(|r| {
                let name = r.name.as_deref()?;
                if matches!(name, "CPU" | "MEMORY") {
                    return None;
                }
                let have = i64::from(r.integer_value.unwrap_or(0));
                Some((
                    name.to_string(),
                    have - usage.custom.get(name).copied().unwrap_or(0),
                ))
            })
            .collect(),
        groups: usage.groups.clone(),
        agent_version: record
            .instance
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.clone()),
        registered_at: record.instance.registered_at.map(|t| t as i64),
    }
}

pub(crate) fn task_request(launch: &Launch) -> TaskRequest {
    TaskRequest {
        cpu: launch.reservation.cpu,
        memory: launch.reservation.memory,
        host_ports_tcp: launch.reservation.ports_tcp.clone(),
        host_ports_udp: launch.reservation.ports_udp.clone(),
        required_attributes: required_attributes(&launch.definition),
        group: launch.group.clone(),
        custom: launch.reservation.custom.clone(),
    }
}

/// Checks shared by RunTask and StartTask; resolves the definition.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_launch(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    task_definition: &str,
    overrides: TaskOverride,
    group: Option<String>,
    started_by: Option<String>,
    tags: Vec<Tag>,
    propagate: Option<String>,
    enable_execute_command: bool,
    capacity: crate::fargate::Capacity,
    network: Option<crate::fargate::AwsVpc>,
    platform_version: Option<&str>,
) -> Result<Launch, AwsError> {
    let reference = task_definitions::parse_reference(scope, task_definition)?;
    let (record, _): (TaskDefinitionRecord, u64) = task_definitions::find(view, scope, &reference)?
        .ok_or_else(|| error::invalid_parameter("TaskDefinition not found."))?;
    let definition = record.task_definition;
    if definition.status.as_deref() == Some(task_definitions::DELETE_IN_PROGRESS)
        || (definition.status.as_deref() != Some(task_definitions::ACTIVE)
            && matches!(reference, task_definitions::Reference::Family(_)))
    {
        return Err(error::client("TaskDefinition is inactive"));
    }
    crate::fargate::check_definition(
        &definition,
        &overrides,
        &capacity,
        network.as_ref(),
        platform_version,
    )?;
    check_overrides(&definition, &overrides)?;
    let mut reservation = reservation(&definition, &overrides)?;
    if network.is_some() {
        // Each awsvpc task has its own address: it takes no host ports.
        reservation.ports_tcp.clear();
        reservation.ports_udp.clear();
    }
    let family = definition.family.clone().unwrap_or_default();
    Ok(Launch {
        capacity,
        network,
        provider_counts: Default::default(),
        cluster: cluster.to_string(),
        definition_tags: record.tags,
        definition,
        overrides,
        group: group.unwrap_or_else(|| format!("family:{family}")),
        started_by,
        tags,
        propagate,
        reservation,
        enable_execute_command,
    })
}

fn check_common(
    group: Option<&str>,
    started_by: Option<&str>,
    tags: &[Tag],
    propagate: Option<&str>,
) -> Result<(), AwsError> {
    if let Some(g) = group {
        let ok = !g.is_empty()
            && g.len() <= 255
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:./".contains(&b));
        if !ok {
            return Err(error::invalid_parameter(
                "group: up to 255 letters, numbers, hyphens, underscores, colons, periods and forward slashes are allowed.",
            ));
        }
    }
    if let Some(s) = started_by {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b));
        if !ok {
            return Err(error::invalid_parameter(
                "startedBy: up to 128 letters (uppercase and lowercase), numbers, hyphens, forward slashes and underscores are allowed.",
            ));
        }
    }
    tagging::check_new(tags, std::iter::empty())?;
    match propagate {
        None | Some("TASK_DEFINITION" | "NONE") => Ok(()),
        Some("SERVICE") => Err(error::invalid_parameter(
            "propagateTags SERVICE is only valid for tasks started by a service.",
        )),
        Some(other) => Err(error::invalid_parameter(format!(
            "Invalid propagateTags '{other}'. Valid values: TASK_DEFINITION, SERVICE, NONE."
        ))),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientTokenRecord {
    task_ids: Vec<String>,
    failures: Vec<Failure>,
}

/// Outcome of a placement mutation: tasks written and failures.
type Launched = (Vec<TaskRecord>, Vec<Failure>);

/// The ACTIVE and DRAINING instances of a cluster.
pub(crate) fn live_instances(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
) -> Result<Vec<InstanceRecord>, AwsError> {
    Ok(view
        .range(&scope.instances(cluster), None, usize::MAX)
        .iter()
        .map(decode::<InstanceRecord>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|r| r.status() != instances::INACTIVE && r.offers_ec2())
        .collect())
}

/// A placed batch: the writes, the tasks, and ECS's failures.
pub(crate) type Batch = (Vec<Op>, Vec<TaskRecord>, Vec<Failure>);

/// Places `count` tasks of `launch` through the scheduler and returns the
/// writes, the tasks and ECS's failures. Call it inside a mutation.
pub(crate) fn place_batch(
    view: &dyn ReadView,
    scope: &Scope,
    launch: &Launch,
    count: usize,
    presence: &Presence,
    policy: &berth_scheduler::Policy,
) -> Result<Batch, AwsError> {
    if let crate::fargate::Capacity::Fargate(strategy) = &launch.capacity {
        return crate::fargate::place(view, scope, launch, strategy, count, presence);
    }
    let cluster = &launch.cluster;
    let records = live_instances(view, scope, cluster)?;
    if records.is_empty() {
        return Err(error::invalid_parameter(
            "No Container Instances were found in your cluster.",
        ));
    }
    let usage = usage_by_instance(view, scope, cluster)?;
    let mut snapshots: Vec<InstanceSnapshot> = records
        .iter()
        .map(|r| snapshot(r, usage.get(&r.id).unwrap_or(&Usage::default()), presence))
        .collect();
    let requests = vec![task_request(launch); count];
    let plan = berth_scheduler::place_with(&mut snapshots, &requests, policy, rand::random());
    let created_at = now();
    let mut ops = Vec::new();
    let mut tasks = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for placement in plan {
        match placement {
            Placement::Placed(i) => {
                let slot = first_subnet(launch);
                let record = new_task(scope, launch, &records[i], &slot, created_at);
                ops.extend(task_ops(scope, &record)?);
                tasks.push(record);
            }
            Placement::Unplaced(rejections) => {
                for (i, rejection) in rejections {
                    let reason = rejection.reason();
                    if seen.insert((i, reason.clone())) {
                        failures.push(Failure {
                            arn: Some(records[i].arn().to_string()),
                            reason: Some(reason),
                            detail: None,
                        });
                    }
                }
            }
        }
    }
    Ok((ops, tasks, failures))
}

/// Places one task of `launch` on a given instance (StartTask, daemons).
pub(crate) fn place_on(
    view: &dyn ReadView,
    scope: &Scope,
    launch: &Launch,
    instance: &InstanceRecord,
    usage: &mut Usage,
    presence: &Presence,
) -> Result<Result<(Vec<Op>, TaskRecord), Failure>, AwsError> {
    let snap = snapshot(instance, usage, presence);
    if let Some(rejection) = berth_scheduler::rejection(&snap, &task_request(launch)) {
        return Ok(Err(Failure {
            arn: Some(instance.arn().to_string()),
            reason: Some(rejection.reason()),
            detail: None,
        }));
    }
    let _ = view;
    let task = new_task(scope, launch, instance, &first_subnet(launch), now());
    usage.add(&task);
    Ok(Ok((task_ops(scope, &task)?, task)))
}

/// An EC2-launch-type task's slot: its awsvpc tasks use the first subnet.
fn first_subnet(launch: &Launch) -> Slot {
    Slot {
        provider: None,
        subnet: launch
            .network
            .as_ref()
            .and_then(|n| n.subnets.first().cloned()),
    }
}

/// The writes that store a new task (and index it under its service, and
/// under its Fargate host).
pub(crate) fn task_ops(scope: &Scope, task: &TaskRecord) -> Result<Vec<Op>, AwsError> {
    let mut ops = vec![Op::put(scope.task(&task.cluster, &task.id), encode(task)?)];
    if let (Some(host_cluster), Some(host)) = (&task.host_cluster, &task.instance_id) {
        ops.push(Op::put(
            scope.hosted_task(host_cluster, host, &task.cluster, &task.id),
            bytes::Bytes::new(),
        ));
    }
    if let Some(service) = task
        .task
        .group
        .as_deref()
        .and_then(|g| g.strip_prefix("service:"))
    {
        ops.push(Op::put(
            scope.service_task(&task.cluster, service, &task.id),
            bytes::Bytes::new(),
        ));
    }
    Ok(ops)
}

pub async fn run(
    store: &dyn Store,
    scope: &Scope,
    presence: &Arc<Presence>,
    networks: Option<&dyn crate::networking::TaskNetworks>,
    input: RunTaskRequest,
) -> Result<RunTaskResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let count = input.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(error::invalid_parameter("count must be between 1 and 10."));
    }
    let task_definition = input
        .task_definition
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let (requested, network) = crate::fargate::launch_request(
        networks,
        scope,
        input.launch_type.as_deref(),
        input.capacity_provider_strategy.as_deref(),
        input.network_configuration.as_ref(),
        "tasks",
    )?;
    let platform_version = input.platform_version.filter(|v| !v.is_empty());
    let request_policy = crate::placement::policy(
        input.placement_constraints.as_deref().unwrap_or(&[]),
        input.placement_strategy.as_deref().unwrap_or(&[]),
    )?;
    let tags = input.tags.unwrap_or_default();
    check_common(
        input.group.as_deref(),
        input.started_by.as_deref(),
        &tags,
        input.propagate_tags.as_deref(),
    )?;
    let client_token = input.client_token.filter(|t| !t.is_empty());
    if client_token.as_ref().is_some_and(|t| t.len() > 64) {
        return Err(error::invalid_parameter(
            "clientToken can be at most 64 characters.",
        ));
    }
    let overrides = input.overrides.unwrap_or_default();
    let scope_owned = scope.clone();
    let presence = presence.clone();
    let group = input.group;
    let started_by = input.started_by;
    let propagate = input.propagate_tags;
    let enable_exec = input.enable_execute_command.unwrap_or(false);
    let fargate_policy =
        !request_policy.constraints.is_empty() || !request_policy.strategies.is_empty();
    let (_, (tasks, failures)): (_, Launched) = store
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
            if fargate_policy && capacity != crate::fargate::Capacity::Ec2 {
                return Err(error::invalid_parameter(
                    "Task placement constraints and strategies are not supported for tasks using Fargate capacity.",
                ));
            }
            if let Some(token) = &client_token {
                if let Some((previous, _)) =
                    load::<ClientTokenRecord>(view, &scope.task_client_token(&cluster, token))?
                {
                    let mut tasks = Vec::new();
                    for id in &previous.task_ids {
                        if let Some((t, _)) = load::<TaskRecord>(view, &scope.task(&cluster, id))? {
                            tasks.push(t);
                        }
                    }
                    return Ok((Vec::new(), (tasks, previous.failures)));
                }
            }
            let launch = prepare_launch(
                view,
                scope,
                &cluster,
                &task_definition,
                overrides.clone(),
                group.clone(),
                started_by.clone(),
                tags.clone(),
                propagate.clone(),
                enable_exec,
                capacity,
                network.clone(),
                platform_version.as_deref(),
            )?;
            let policy = crate::placement::with_definition(&request_policy, &launch.definition)?;
            let (mut ops, tasks, failures) =
                place_batch(view, scope, &launch, count as usize, &presence, &policy)?;
            if let Some(token) = &client_token {
                let record = ClientTokenRecord {
                    task_ids: tasks.iter().map(|t| t.id.clone()).collect(),
                    failures: failures.clone(),
                };
                ops.push(Op::put(
                    scope.task_client_token(&cluster, token),
                    encode(&record)?,
                ));
            }
            Ok::<_, AwsError>((ops, (tasks, failures)))
        })
        .await
        .map_err(error::store)??;
    Ok(RunTaskResponse {
        tasks: Some(tasks.into_iter().map(|t| present(t, true)).collect()),
        failures: Some(failures),
    })
}

pub async fn start(
    store: &dyn Store,
    scope: &Scope,
    presence: &Arc<Presence>,
    networks: Option<&dyn crate::networking::TaskNetworks>,
    input: StartTaskRequest,
) -> Result<StartTaskResponse, AwsError> {
    let network = crate::fargate::resolve_network(
        networks,
        &scope.account,
        &scope.region,
        input.network_configuration.as_ref(),
    )?;
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let targets = input
        .container_instances
        .filter(|c| !c.is_empty())
        .ok_or_else(|| error::missing("containerInstances"))?;
    if targets.len() > 10 {
        return Err(error::invalid_parameter(
            "StartTask accepts at most 10 container instances.",
        ));
    }
    let ids = targets
        .iter()
        .map(|t| instances::resolve_id(scope, &cluster, t))
        .collect::<Result<Vec<_>, _>>()?;
    let task_definition = input
        .task_definition
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let tags = input.tags.unwrap_or_default();
    check_common(
        input.group.as_deref(),
        input.started_by.as_deref(),
        &tags,
        input.propagate_tags.as_deref(),
    )?;
    let overrides = input.overrides.unwrap_or_default();
    let scope_owned = scope.clone();
    let presence = presence.clone();
    let group = input.group;
    let started_by = input.started_by;
    let propagate = input.propagate_tags;
    let enable_exec = input.enable_execute_command.unwrap_or(false);
    let (_, (tasks, failures)): (_, Launched) = store
        .update(move |view| {
            let scope = &scope_owned;
            clusters::require_active(view, scope, &cluster)?;
            let launch = prepare_launch(
                view,
                scope,
                &cluster,
                &task_definition,
                overrides.clone(),
                group.clone(),
                started_by.clone(),
                tags.clone(),
                propagate.clone(),
                enable_exec,
                crate::fargate::Capacity::Ec2,
                network.clone(),
                None,
            )?;
            let mut usage = usage_by_instance(view, scope, &cluster)?;
            let mut ops = Vec::new();
            let mut tasks = Vec::new();
            let mut failures = Vec::new();
            for (reference, id) in targets.iter().zip(&ids) {
                let Some((record, _)) =
                    load::<InstanceRecord>(view, &scope.instance(&cluster, id))?
                        .filter(|(r, _)| r.status() != instances::INACTIVE)
                else {
                    failures.push(Failure {
                        arn: Some(reference.clone()),
                        reason: Some("MISSING".into()),
                        detail: None,
                    });
                    continue;
                };
                let u = usage.entry(id.clone()).or_default();
                match place_on(view, scope, &launch, &record, u, &presence)? {
                    Ok((new_ops, task)) => {
                        ops.extend(new_ops);
                        tasks.push(task);
                    }
                    Err(failure) => failures.push(failure),
                }
            }
            Ok::<_, AwsError>((ops, (tasks, failures)))
        })
        .await
        .map_err(error::store)??;
    Ok(StartTaskResponse {
        tasks: Some(tasks.into_iter().map(|t| present(t, true)).collect()),
        failures: Some(failures),
    })
}

/// Marks a task to be stopped (idempotent). Tasks no agent will ever run
/// again go straight to STOPPED.
pub fn request_stop(
    record: &mut TaskRecord,
    stop_code: &str,
    reason: &str,
    at: f64,
    agent_gone: bool,
) -> bool {
    if record.last_status() == STOPPED {
        return false;
    }
    let mut changed = false;
    if record.desired_status() != STOPPED {
        record.task.desired_status = Some(STOPPED.into());
        record.task.stopping_at = Some(at);
        record.task.stop_code = Some(stop_code.into());
        record.task.stopped_reason = Some(reason.into());
        changed = true;
    }
    let never_started = record.last_status() == PROVISIONING && record.instance_id.is_none();
    if agent_gone || never_started {
        record.task.last_status = Some(STOPPED.into());
        record.task.stopped_at = Some(at);
        record.task.execution_stopped_at.get_or_insert(at);
        for c in record.task.containers.iter_mut().flatten() {
            if c.last_status.as_deref() != Some(STOPPED) {
                c.last_status = Some(STOPPED.into());
            }
        }
        changed = true;
    }
    if changed {
        record.bump();
    }
    changed
}

pub async fn stop(
    store: &dyn Store,
    scope: &Scope,
    input: StopTaskRequest,
) -> Result<StopTaskResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .task
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("task"))?;
    let id = resolve_task_id(scope, &cluster, &reference)?;
    let reason = input.reason.unwrap_or_default();
    if reason.len() > 1024 {
        return Err(error::invalid_parameter(
            "reason can be at most 1024 characters.",
        ));
    }
    let reason = if reason.is_empty() {
        "Task stopped by user".to_string()
    } else {
        reason
    };
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            let scope = &scope_owned;
            clusters::require_active(view, scope, &cluster)?;
            let key = scope.task(&cluster, &id);
            let (mut record, _) = load::<TaskRecord>(view, &key)?
                .ok_or_else(|| error::invalid_parameter("The referenced task was not found."))?;
            let host_cluster = record
                .host_cluster
                .clone()
                .unwrap_or_else(|| cluster.clone());
            let agent_gone = match &record.instance_id {
                Some(instance) => {
                    load::<InstanceRecord>(view, &scope.instance(&host_cluster, instance))?
                        .is_none_or(|(r, _)| r.status() == instances::INACTIVE)
                }
                None => true,
            };
            let ops = if request_stop(&mut record, "UserInitiated", &reason, now(), agent_gone) {
                let mut ops = vec![Op::put(key, encode(&record)?)];
                ops.extend(crate::metering::ledger_op(scope, &record)?);
                ops
            } else {
                Vec::new()
            };
            Ok::<_, AwsError>((ops, record))
        })
        .await
        .map_err(error::store)??;
    Ok(StopTaskResponse {
        task: Some(present(record, true)),
    })
}

/// The task as the API shows it.
pub fn present(record: TaskRecord, include_tags: bool) -> Task {
    let mut task = record.task;
    if !include_tags {
        task.tags = None;
    }
    task
}

pub fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeTasksRequest,
) -> Result<DescribeTasksResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let include_tags = error::include_tags(input.include)?;
    let refs = input
        .tasks
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("tasks"))?;
    if refs.len() > 100 {
        return Err(error::invalid_parameter(
            "tasks can name at most 100 tasks.",
        ));
    }
    clusters::require_active(view, scope, &cluster)?;
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for reference in refs {
        let found = match resolve_task_id(scope, &cluster, &reference) {
            Ok(id) => load::<TaskRecord>(view, &scope.task(&cluster, &id))?,
            Err(_) => None,
        };
        match found {
            Some((record, _)) => tasks.push(present(record, include_tags)),
            None => failures.push(error::missing_failure(scope, reference, |id| {
                format!("task/{cluster}/{id}")
            })),
        }
    }
    Ok(DescribeTasksResponse {
        tasks: Some(tasks),
        failures: Some(failures),
    })
}

pub fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListTasksRequest,
) -> Result<ListTasksResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let desired = match input.desired_status.as_deref() {
        None => RUNNING,
        Some(s @ (RUNNING | PENDING | STOPPED)) => s,
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid desiredStatus '{other}'. Valid values: RUNNING, PENDING, STOPPED."
            )))
        }
    };
    if input.family.is_some() && input.service_name.is_some() {
        return Err(error::invalid_parameter(
            "family and serviceName cannot both be given.",
        ));
    }
    let instance = input
        .container_instance
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| instances::resolve_id(scope, &cluster, c))
        .transpose()?;
    let launch_type = match input.launch_type.as_deref() {
        None => None,
        Some(l @ ("EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES")) => Some(l.to_string()),
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid launchType '{other}'. Valid values: EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES."
            )))
        }
    };
    let service_group = input.service_name.as_ref().map(|s| format!("service:{s}"));
    clusters::require_active(view, scope, &cluster)?;
    let (arns, next_token) = pagination::filtered_page(
        view,
        &scope.tasks(&cluster),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: TaskRecord = decode(kv)?;
            let t = &record.task;
            let wanted = match desired {
                PENDING => record.desired_status() == RUNNING && record.last_status() != RUNNING,
                d => record.desired_status() == d,
            } && input
                .family
                .as_ref()
                .is_none_or(|f| record.definition.family.as_ref() == Some(f))
                && input
                    .started_by
                    .as_ref()
                    .is_none_or(|s| t.started_by.as_ref() == Some(s))
                && service_group
                    .as_ref()
                    .is_none_or(|g| t.group.as_ref() == Some(g))
                && instance
                    .as_ref()
                    .is_none_or(|i| record.instance_id.as_ref() == Some(i))
                && launch_type
                    .as_ref()
                    .is_none_or(|l| t.launch_type.as_ref() == Some(l));
            Ok(wanted.then(|| record.arn().to_string()))
        },
    )?;
    Ok(ListTasksResponse {
        task_arns: Some(arns),
        next_token,
    })
}

// ---------------------------------------------------------------------------
// Agent reports.

fn task_health(record: &TaskRecord) -> String {
    let containers = record.task.containers.as_deref().unwrap_or(&[]);
    let mut any_checked = false;
    let mut all_healthy = true;
    for def in record.definition.container_definitions.iter().flatten() {
        if def.essential == Some(false) || def.health_check.is_none() {
            continue;
        }
        any_checked = true;
        let status = containers
            .iter()
            .find(|c| c.name == def.name)
            .and_then(|c| c.health_status.as_deref())
            .unwrap_or("UNKNOWN");
        match status {
            "UNHEALTHY" => return "UNHEALTHY".into(),
            "HEALTHY" => {}
            _ => all_healthy = false,
        }
    }
    if any_checked && all_healthy {
        "HEALTHY".into()
    } else {
        "UNKNOWN".into()
    }
}

fn apply_container(container: &mut Container, report: &ContainerReport) {
    let current = container.last_status.as_deref().and_then(rank).unwrap_or(0);
    if rank(&report.last_status).is_some_and(|r| r >= current) {
        container.last_status = Some(report.last_status.clone());
    }
    if report.runtime_id.is_some() {
        container.runtime_id = report.runtime_id.clone();
    }
    if report.exit_code.is_some() {
        container.exit_code = report.exit_code;
    }
    if report.reason.is_some() {
        container.reason = report.reason.clone();
    }
    if !report.network_bindings.is_empty() {
        container.network_bindings = Some(report.network_bindings.clone());
    }
    if report.image_digest.is_some() {
        container.image_digest = report.image_digest.clone();
    }
    container.health_status = Some(report.health_status.clone());
}

/// Applies an agent's report to a task. Statuses only move forward and
/// timestamps are set once, so a report that arrives twice or late changes
/// nothing. Returns whether anything changed.
pub fn apply_report(
    record: &mut TaskRecord,
    report: &SubmitTaskStateRequest,
    at: f64,
) -> Result<bool, AwsError> {
    let new_rank = rank(&report.last_status).ok_or_else(|| {
        error::invalid_parameter(format!("Unknown task status '{}'.", report.last_status))
    })?;
    let before = serde_json::to_vec(&record.task).unwrap_or_default();
    let current = rank(record.last_status()).unwrap_or(0);
    if current == rank(STOPPED).unwrap_or(usize::MAX) {
        return Ok(false);
    }
    if new_rank > current {
        record.task.last_status = Some(report.last_status.clone());
    }
    let t = &mut record.task;
    if let Some(v) = report.pull_started_at {
        t.pull_started_at.get_or_insert(v);
    }
    if let Some(v) = report.pull_stopped_at {
        t.pull_stopped_at.get_or_insert(v);
    }
    if let Some(v) = report.started_at {
        t.started_at.get_or_insert(v);
    }
    if let Some(v) = report.execution_stopped_at {
        t.execution_stopped_at.get_or_insert(v);
    }
    if let Some(code) = &report.stop_code {
        if t.desired_status.as_deref() != Some(STOPPED) {
            t.desired_status = Some(STOPPED.into());
            t.stopping_at = Some(at);
            t.stop_code = Some(code.clone());
            t.stopped_reason = report.stopped_reason.clone();
        }
    }
    if report.last_status == STOPPED {
        t.stopped_at.get_or_insert(at);
        t.execution_stopped_at.get_or_insert(at);
        t.desired_status = Some(STOPPED.into());
        t.stopping_at.get_or_insert(at);
    }
    for c in t.containers.iter_mut().flatten() {
        if let Some(r) = report
            .containers
            .iter()
            .find(|r| Some(&r.name) == c.name.as_ref())
        {
            apply_container(c, r);
        }
    }
    let health = task_health(record);
    record.task.health_status = Some(health);
    let changed = serde_json::to_vec(&record.task).unwrap_or_default() != before;
    if changed {
        record.bump();
    }
    Ok(changed)
}

/// Keys of STOPPED tasks whose `stoppedAt` is older than `before` (seconds
/// since the epoch), across every account and region, at most `limit`.
pub fn expired_tasks(view: &dyn ReadView, before: f64, limit: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for (task_key, index_keys) in expired_task_keys(view, before, limit) {
        keys.push(task_key);
        keys.extend(index_keys);
    }
    keys
}

/// Expired task keys with their service-index key, when they have one.
fn expired_task_keys(view: &dyn ReadView, before: f64, limit: usize) -> Vec<(String, Vec<String>)> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = view.range("/ecs/", after.as_deref(), 1024);
        if page.is_empty() {
            return keys;
        }
        after = page.last().map(|kv| kv.key.clone());
        for kv in page {
            if !kv.key.contains("/tasks/") {
                continue;
            }
            let Ok(record) = decode::<TaskRecord>(&kv) else {
                continue;
            };
            if record.last_status() == STOPPED && record.task.stopped_at.is_some_and(|s| s < before)
            {
                // /ecs/<account>/<region>/tasks/<cluster>/<id>
                let parts: Vec<&str> = kv.key.split('/').collect();
                let mut index = Vec::new();
                if let (Some(account), Some(region)) = (parts.get(2), parts.get(3)) {
                    let scope = Scope {
                        account: account.to_string(),
                        region: region.to_string(),
                    };
                    if let Some(service) = record
                        .task
                        .group
                        .as_deref()
                        .and_then(|g| g.strip_prefix("service:"))
                    {
                        index.push(scope.service_task(&record.cluster, service, &record.id));
                    }
                    if let (Some(host_cluster), Some(host)) =
                        (&record.host_cluster, &record.instance_id)
                    {
                        index.push(scope.hosted_task(
                            host_cluster,
                            host,
                            &record.cluster,
                            &record.id,
                        ));
                    }
                }
                keys.push((kv.key, index));
                if keys.len() >= limit {
                    return keys;
                }
            }
        }
    }
}

/// Deletes STOPPED tasks older than `retention_secs`. Returns how many went.
pub async fn collect_garbage(store: &dyn Store, retention_secs: f64) -> Result<usize, AwsError> {
    let keys = expired_tasks(store, now() - retention_secs, 1000);
    if keys.is_empty() {
        return Ok(0);
    }
    let n = keys.len();
    store
        .update(move |view| {
            // Check again inside the mutation: only still-expired tasks go.
            let ops = keys
                .iter()
                .filter(|k| view.get(k).is_some())
                .map(|k| Op::delete(k.clone()))
                .collect::<Vec<_>>();
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(n)
}

/// The tasks of one instance, for its agent.
pub fn instance_tasks(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    instance_id: &str,
) -> Result<Vec<TaskRecord>, AwsError> {
    let mut tasks: Vec<TaskRecord> = cluster_tasks(view, scope, cluster)?
        .into_iter()
        .filter(|t| t.instance_id.as_deref() == Some(instance_id) && t.host_cluster.is_none())
        .collect();
    tasks.extend(crate::fargate::hosted_tasks(
        view,
        scope,
        cluster,
        instance_id,
    )?);
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::PortMapping;

    fn definition() -> TaskDefinition {
        TaskDefinition {
            family: Some("web".into()),
            container_definitions: Some(vec![
                ContainerDefinition {
                    name: Some("a".into()),
                    cpu: Some(100),
                    memory: Some(256),
                    memory_reservation: Some(128),
                    port_mappings: Some(vec![
                        PortMapping {
                            container_port: Some(80),
                            host_port: Some(8080),
                            ..PortMapping::default()
                        },
                        PortMapping {
                            container_port: Some(81),
                            host_port: Some(0),
                            ..PortMapping::default()
                        },
                    ]),
                    ..ContainerDefinition::default()
                },
                ContainerDefinition {
                    name: Some("b".into()),
                    cpu: Some(50),
                    memory: Some(64),
                    ..ContainerDefinition::default()
                },
            ]),
            ..TaskDefinition::default()
        }
    }

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

    fn record() -> TaskRecord {
        TaskRecord {
            id: "t1".into(),
            cluster: "default".into(),
            instance_id: Some("i1".into()),
            task: Task {
                task_arn: Some("arn:aws:ecs:us-east-1:000000000000:task/default/t1".into()),
                last_status: Some(PROVISIONING.into()),
                desired_status: Some(RUNNING.into()),
                containers: Some(vec![Container {
                    name: Some("a".into()),
                    last_status: Some(PENDING.into()),
                    ..Container::default()
                }]),
                version: Some(1),
                ..Task::default()
            },
            definition: definition(),
            reservation: Reservation::default(),
            network: None,
            host_cluster: None,
            security_groups: Vec::new(),
        }
    }

    fn report(status: &str) -> SubmitTaskStateRequest {
        SubmitTaskStateRequest {
            task_arn: "t1".into(),
            last_status: status.into(),
            containers: vec![ContainerReport {
                name: "a".into(),
                last_status: status.into(),
                health_status: "UNKNOWN".into(),
                ..ContainerReport::default()
            }],
            started_at: (status == RUNNING).then_some(10.0),
            ..SubmitTaskStateRequest::default()
        }
    }

    #[test]
    fn reports_only_move_forward_and_set_timestamps_once() {
        let mut r = record();
        assert!(apply_report(&mut r, &report(RUNNING), 10.0).unwrap());
        assert_eq!(r.last_status(), RUNNING);
        assert_eq!(r.task.version, Some(2));
        // A late PENDING report changes nothing.
        assert!(!apply_report(&mut r, &report(PENDING), 11.0).unwrap());
        assert_eq!(r.last_status(), RUNNING);
        let mut again = report(RUNNING);
        again.started_at = Some(99.0);
        apply_report(&mut r, &again, 12.0).unwrap();
        assert_eq!(r.task.started_at, Some(10.0));

        let mut exit = report(STOPPED);
        exit.stop_code = Some("EssentialContainerExited".into());
        exit.stopped_reason = Some("Essential container in task exited".into());
        exit.containers[0].exit_code = Some(3);
        assert!(apply_report(&mut r, &exit, 20.0).unwrap());
        assert_eq!(r.desired_status(), STOPPED);
        assert_eq!(
            r.task.stop_code.as_deref(),
            Some("EssentialContainerExited")
        );
        assert_eq!(r.task.stopped_at, Some(20.0));
        let c = &r.task.containers.as_ref().unwrap()[0];
        assert_eq!(
            (c.last_status.as_deref(), c.exit_code),
            (Some(STOPPED), Some(3))
        );
        // Nothing changes a STOPPED task.
        assert!(!apply_report(&mut r, &report(RUNNING), 30.0).unwrap());
    }

    #[test]
    fn user_stop_wins_over_later_agent_reasons() {
        let mut r = record();
        assert!(request_stop(&mut r, "UserInitiated", "bye", 5.0, false));
        assert_eq!(
            r.last_status(),
            PROVISIONING,
            "the agent still has to stop it"
        );
        assert!(!request_stop(&mut r, "UserInitiated", "again", 6.0, false));
        let mut exit = report(STOPPED);
        exit.stop_code = Some("EssentialContainerExited".into());
        apply_report(&mut r, &exit, 7.0).unwrap();
        assert_eq!(r.task.stop_code.as_deref(), Some("UserInitiated"));
        assert_eq!(r.task.stopped_reason.as_deref(), Some("bye"));

        let mut orphan = record();
        assert!(request_stop(&mut orphan, "UserInitiated", "bye", 5.0, true));
        assert_eq!(orphan.last_status(), STOPPED, "no agent will report it");
    }
}
