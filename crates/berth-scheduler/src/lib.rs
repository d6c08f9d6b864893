//! Task placement as a pure function: a snapshot of the cluster's container
//! instances, a batch of task requests and a placement policy (ECS's
//! strategies and constraints) in, a placement or ECS's failure reasons per
//! task out.
//!
//! Placement follows ECS's order: an instance must have the task's CPU,
//! memory, ports and custom resources ([`rejection`]), then satisfy every
//! constraint ([`Constraint`]); among those, the strategies ([`Strategy`])
//! pick one, each breaking the ties of the one before, and the snapshot order
//! breaks the last ties. Tasks of a batch are placed one after another, each
//! seeing what the ones before it took.
//!
//! [`place_with`] answers from an index (ordered sets per strategy, kept up to
//! date as tasks are placed), so a placement costs about `O(log instances)`
//! instead of a scan of every instance; [`reference::place_with`] is the
//! plain scan it is tested against.
//!
//! Architecture invariant: no I/O, no clock, no randomness that is not seeded;
//! the same input always gives the same plan.

use std::collections::{BTreeMap, BTreeSet};

pub mod capacity;
mod engine;
mod expr;
mod policy;
pub mod reference;
mod rng;

#[cfg(test)]
mod tests;

pub use expr::{parse_expression, Expression, ParseError};
pub use policy::{
    default_strategies, parse_constraint, parse_strategy, BinpackField, Constraint, Policy,
    PolicyError, Strategy, MAX_CONSTRAINTS, MAX_EXPRESSION_CHARS, MAX_STRATEGIES,
};

/// Whether an instance takes new tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceStatus {
    #[default]
    Active,
    Draining,
    Inactive,
}

/// One container instance as placement sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceSnapshot {
    /// The container instance ARN; failures name it.
    pub arn: String,
    /// The EC2 instance id (`host` spreading, `ec2InstanceId` in
    /// expressions). Empty when unknown.
    pub ec2_instance_id: String,
    pub status: InstanceStatus,
    pub agent_connected: bool,
    pub cpu_remaining: i64,
    pub memory_remaining: i64,
    pub ports_tcp_used: BTreeSet<u16>,
    pub ports_udp_used: BTreeSet<u16>,
    /// Remaining amount of each custom integer resource the instance
    /// registered (e.g. `GPU`).
    pub custom_remaining: BTreeMap<String, i64>,
    /// Shared, not copied: an instance's attributes change only when it
    /// is re-registered or its attributes are put, not per placement.
    pub attributes: std::sync::Arc<BTreeMap<String, Option<String>>>,
    /// Tasks on the instance that are not stopped; `runningTasksCount` in
    /// expressions.
    pub task_count: u32,
    /// The same tasks counted by task group (`service:web`,
    /// `family:nginx`, …): spreading, `distinctInstance` and `task:group`.
    pub groups: BTreeMap<String, u32>,
    /// `agentVersion` in expressions (e.g. `1.14.5`).
    pub agent_version: Option<String>,
    /// `registeredAt` in expressions, in seconds since the Unix epoch.
    pub registered_at: Option<i64>,
}

/// What one task needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskRequest {
    pub cpu: i64,
    pub memory: i64,
    pub host_ports_tcp: Vec<u16>,
    pub host_ports_udp: Vec<u16>,
    /// Custom integer resources by name (e.g. `GPU`).
    pub custom: BTreeMap<String, i64>,
    /// Attributes the instance must have (`requiresAttributes`): name and,
    /// when given, value.
    pub required_attributes: Vec<(String, Option<String>)>,
    /// The task group (`family:<name>` by default for RunTask,
    /// `service:<name>` for services). Spread counts, `distinctInstance` and
    /// `task:group` look at tasks of the same group.
    pub group: String,
}

/// Why an instance cannot take a task, in ECS's words.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    Inactive,
    Agent,
    MissingAttribute(String),
    Cpu,
    Memory,
    Ports,
    PortsUdp,
    /// A custom resource (e.g. `GPU`) the instance lacks or has too little of.
    Resource(String),
    DistinctInstance,
    MemberOf,
}

impl Rejection {
    /// The `reason` of a RunTask `failures[]` entry.
    pub fn reason(&self) -> String {
        match self {
            Rejection::Inactive => "INACTIVE".to_string(),
            Rejection::Agent => "AGENT".to_string(),
            Rejection::MissingAttribute(name) => format!("MissingAttribute: {name}"),
            Rejection::Cpu => "RESOURCE:CPU".to_string(),
            Rejection::Memory => "RESOURCE:MEMORY".to_string(),
            Rejection::Ports => "RESOURCE:PORTS".to_string(),
            Rejection::PortsUdp => "RESOURCE:PORTS_UDP".to_string(),
            Rejection::Resource(name) => format!("RESOURCE:{name}"),
            Rejection::DistinctInstance => {
                "DistinctInstance placement constraint unsatisfied.".to_string()
            }
            Rejection::MemberOf => "MemberOf placement constraint unsatisfied.".to_string(),
        }
    }
}

/// Where a task went, or why it went nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Index into the snapshot's instances.
    Placed(usize),
    /// Every instance with why it was rejected (the first reason in ECS's
    /// order: status, agent, attributes, resources, then constraints); empty
    /// only when the cluster has no instances.
    ///
    /// When an identical request already failed earlier in the same batch,
    /// only the instances whose reason changed since that failure are listed
    /// (or the first instance, if none changed): the set of (instance,
    /// reason) pairs over the batch is the same, and a large batch that
    /// does not fit costs memory per distinct request rather than per task.
    Unplaced(Vec<(usize, Rejection)>),
}

/// Why `instance` cannot run `task` right now, if it cannot: status, agent,
/// required attributes and resources (no placement constraints).
pub fn rejection(instance: &InstanceSnapshot, task: &TaskRequest) -> Option<Rejection> {
    if instance.status != InstanceStatus::Active {
        return Some(Rejection::Inactive);
    }
    if !instance.agent_connected {
        return Some(Rejection::Agent);
    }
    if let Some(name) = missing_attribute(instance, task) {
        return Some(Rejection::MissingAttribute(name.to_string()));
    }
    resource_rejection(instance, task)
}

/// The first of `task`'s required attributes that `instance` lacks.
pub(crate) fn missing_attribute<'t>(
    instance: &InstanceSnapshot,
    task: &'t TaskRequest,
) -> Option<&'t str> {
    task.required_attributes
        .iter()
        .find(
            |(name, value)| match (instance.attributes.get(name), value) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(have), Some(want)) => have.as_deref() != Some(want.as_str()),
            },
        )
        .map(|(name, _)| name.as_str())
}

/// CPU, memory, ports and custom resources only.
pub(crate) fn resource_rejection(
    instance: &InstanceSnapshot,
    task: &TaskRequest,
) -> Option<Rejection> {
    if task.cpu > instance.cpu_remaining {
        return Some(Rejection::Cpu);
    }
    if task.memory > instance.memory_remaining {
        return Some(Rejection::Memory);
    }
    if task
        .host_ports_tcp
        .iter()
        .any(|p| instance.ports_tcp_used.contains(p))
    {
        return Some(Rejection::Ports);
    }
    if task
        .host_ports_udp
        .iter()
        .any(|p| instance.ports_udp_used.contains(p))
    {
        return Some(Rejection::PortsUdp);
    }
    for (name, need) in &task.custom {
        if *need > 0 && instance.custom_remaining.get(name).copied().unwrap_or(0) < *need {
            return Some(Rejection::Resource(name.clone()));
        }
    }
    None
}

/// Takes `task`'s resources on `instance` and counts the task there.
pub(crate) fn reserve(instance: &mut InstanceSnapshot, task: &TaskRequest) {
    instance.cpu_remaining -= task.cpu;
    instance.memory_remaining -= task.memory;
    instance
        .ports_tcp_used
        .extend(task.host_ports_tcp.iter().copied());
    instance
        .ports_udp_used
        .extend(task.host_ports_udp.iter().copied());
    for (name, amount) in &task.custom {
        if let Some(left) = instance.custom_remaining.get_mut(name) {
            *left -= amount;
        }
    }
    instance.task_count += 1;
    match instance.groups.get_mut(&task.group) {
        Some(count) => *count += 1,
        None => {
            instance.groups.insert(task.group.clone(), 1);
        }
    }
}

/// Places `tasks` with ECS's default policy for RunTask (see
/// [`default_strategies`]) and seed 0.
pub fn place(instances: &mut [InstanceSnapshot], tasks: &[TaskRequest]) -> Vec<Placement> {
    place_with(instances, tasks, &Policy::default(), 0)
}

/// Places `tasks` one after another under `policy`, reserving each placed
/// task's resources in `instances` so later tasks of the batch see them
/// taken. An empty `policy.strategies` means [`default_strategies`]; at most
/// [`MAX_STRATEGIES`] are honoured, and none after `random` (it breaks every
/// tie). `seed` drives `random`; the same input and seed give the same plan.
///
/// Every task comes out [`Placement::Placed`] or [`Placement::Unplaced`] with
/// a reason for every instance (an empty list only when there are no
/// instances).
pub fn place_with(
    instances: &mut [InstanceSnapshot],
    tasks: &[TaskRequest],
    policy: &Policy,
    seed: u64,
) -> Vec<Placement> {
    if instances.is_empty() {
        return tasks
            .iter()
            .map(|_| Placement::Unplaced(Vec::new()))
            .collect();
    }
    engine::place(instances, tasks, policy, seed)
}
