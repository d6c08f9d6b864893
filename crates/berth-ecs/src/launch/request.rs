//! One launch: everything fixed about the tasks of a RunTask or StartTask
//! call or a service's deployment, and the task records it creates.

use berth_model::shapes::ecs::{
    Attribute, Container, ContainerDefinition, ContainerOverride, Failure, Tag, Task,
    TaskDefinition, TaskOverride,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView};

use crate::error;
use crate::launch::capacity::{self, AwsVpc, Capacity};
use crate::launch::reservation::{check_overrides, container_override, reservation};
use crate::state::instances::InstanceRecord;
use crate::state::keys::Scope;
use crate::state::network::{self, SubnetInfo};
use crate::state::tasks::{Reservation, TaskRecord, TaskStatus};
use crate::state::{tags, task_definitions};

/// What differs between the tasks of one launch: the Fargate capacity
/// provider and the subnet of each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    pub provider: Option<String>,
    pub subnet: Option<SubnetInfo>,
}

/// Everything fixed about the tasks of one RunTask/StartTask call.
#[derive(Clone)]
pub(crate) struct Launch {
    pub capacity: Capacity,
    pub network: Option<AwsVpc>,
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
        last_status: Some(TaskStatus::Pending.into()),
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
    // ECS task ids are 32 hex digits.
    let id = berth_util::ids::random_hex(16);
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
            r#type: Some(network::ENI_ATTACHMENT.into()),
            status: Some(network::PRECREATED.into()),
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
    tags::merge(&mut tags, &launch.tags);
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
        platform_version: fargate.then(|| capacity::PLATFORM_VERSION.to_string()),
        platform_family: fargate.then(|| "Linux".to_string()),
        ephemeral_storage: fargate.then(|| berth_model::shapes::ecs::EphemeralStorage {
            size_in_gi_b: Some(
                launch
                    .definition
                    .ephemeral_storage
                    .as_ref()
                    .and_then(|e| e.size_in_gi_b)
                    .unwrap_or(capacity::DEFAULT_EPHEMERAL_GIB),
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
        desired_status: Some(TaskStatus::Running.into()),
        enable_execute_command: Some(launch.enable_execute_command),
        group: Some(launch.group.clone()),
        health_status: Some("UNKNOWN".into()),
        last_status: Some(TaskStatus::Provisioning.into()),
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
        ..TaskRecord::default()
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
    capacity: Capacity,
    network: Option<AwsVpc>,
    platform_version: Option<&str>,
) -> Result<Launch, AwsError> {
    let reference = task_definitions::parse_reference(scope, task_definition)?;
    let (record, _): (task_definitions::TaskDefinitionRecord, u64) =
        task_definitions::find(view, scope, &reference)?
            .ok_or_else(|| error::invalid_parameter("TaskDefinition not found."))?;
    let definition = record.task_definition;
    if definition.status.as_deref() == Some(task_definitions::DELETE_IN_PROGRESS)
        || (definition.status.as_deref() != Some(task_definitions::ACTIVE)
            && matches!(reference, task_definitions::Reference::Family(_)))
    {
        return Err(error::client("TaskDefinition is inactive"));
    }
    capacity::check_definition(
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

/// An EC2-launch-type task's slot: its awsvpc tasks use the first subnet.
pub(crate) fn first_subnet(launch: &Launch) -> Slot {
    Slot {
        provider: None,
        subnet: launch
            .network
            .as_ref()
            .and_then(|n| n.subnets.first().cloned()),
    }
}

/// A placed batch: the writes, the tasks, and ECS's failures.
pub(crate) type Batch = (Vec<Op>, Vec<TaskRecord>, Vec<Failure>);
