//! Task placement as a pure function: a snapshot of the cluster's container
//! instances and a batch of task requests in, a placement or ECS's failure
//! reasons per task out.
//!
//! Architecture invariant: no I/O, no clock, no randomness that is not seeded;
//! the same input always gives the same plan.

use std::collections::{BTreeMap, BTreeSet};

/// Whether an instance takes new tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceStatus {
    Active,
    Draining,
    Inactive,
}

/// One container instance as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSnapshot {
    /// The container instance ARN; failures name it.
    pub arn: String,
    pub status: InstanceStatus,
    pub agent_connected: bool,
    pub cpu_remaining: i64,
    pub memory_remaining: i64,
    pub ports_tcp_used: BTreeSet<u16>,
    pub ports_udp_used: BTreeSet<u16>,
    pub attributes: BTreeMap<String, Option<String>>,
    /// Tasks on the instance that are not stopped (for spreading).
    pub task_count: u32,
}

/// What one task needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRequest {
    pub cpu: i64,
    pub memory: i64,
    pub host_ports_tcp: Vec<u16>,
    pub host_ports_udp: Vec<u16>,
    /// Attributes the instance must have (`requiresAttributes`): name and,
    /// when given, value.
    pub required_attributes: Vec<(String, Option<String>)>,
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
        }
    }
}

/// Where a task went, or why it went nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Index into the snapshot's instances.
    Placed(usize),
    /// Each considered instance with why it was rejected; empty when the
    /// cluster has no instances.
    Unplaced(Vec<(usize, Rejection)>),
}

/// Why `instance` cannot run `task` right now, if it cannot.
pub fn rejection(instance: &InstanceSnapshot, task: &TaskRequest) -> Option<Rejection> {
    if instance.status != InstanceStatus::Active {
        return Some(Rejection::Inactive);
    }
    if !instance.agent_connected {
        return Some(Rejection::Agent);
    }
    for (name, value) in &task.required_attributes {
        let ok = match (instance.attributes.get(name), value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(have), Some(want)) => have.as_deref() == Some(want.as_str()),
        };
        if !ok {
            return Some(Rejection::MissingAttribute(name.clone()));
        }
    }
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
    None
}

fn reserve(instance: &mut InstanceSnapshot, task: &TaskRequest) {
    instance.cpu_remaining -= task.cpu;
    instance.memory_remaining -= task.memory;
    instance
        .ports_tcp_used
        .extend(task.host_ports_tcp.iter().copied());
    instance
        .ports_udp_used
        .extend(task.host_ports_udp.iter().copied());
    instance.task_count += 1;
}

/// Places `tasks` one after another, each on the instance with the fewest
/// tasks that can take it (ties: snapshot order), reserving its resources
/// in `instances` so later tasks of the batch see them taken.
pub fn place(instances: &mut [InstanceSnapshot], tasks: &[TaskRequest]) -> Vec<Placement> {
    tasks
        .iter()
        .map(|task| {
            let mut rejections = Vec::new();
            let mut best: Option<usize> = None;
            for (i, instance) in instances.iter().enumerate() {
                match rejection(instance, task) {
                    Some(r) => rejections.push((i, r)),
                    None => {
                        if best.is_none_or(|b| instance.task_count < instances[b].task_count) {
                            best = Some(i);
                        }
                    }
                }
            }
            match best {
                Some(i) => {
                    reserve(&mut instances[i], task);
                    Placement::Placed(i)
                }
                None => Placement::Unplaced(rejections),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn instance(arn: &str, cpu: i64, memory: i64) -> InstanceSnapshot {
        InstanceSnapshot {
            arn: arn.to_string(),
            status: InstanceStatus::Active,
            agent_connected: true,
            cpu_remaining: cpu,
            memory_remaining: memory,
            ports_tcp_used: BTreeSet::new(),
            ports_udp_used: BTreeSet::new(),
            attributes: BTreeMap::new(),
            task_count: 0,
        }
    }

    fn task(cpu: i64, memory: i64) -> TaskRequest {
        TaskRequest {
            cpu,
            memory,
            ..TaskRequest::default()
        }
    }

    #[test]
    fn memory_runs_out() {
        let mut instances = vec![instance("a", 4096, 1000)];
        let plan = place(
            &mut instances,
            &[task(0, 300), task(0, 300), task(0, 300), task(0, 300)],
        );
        assert_eq!(
            plan[..3],
            [
                Placement::Placed(0),
                Placement::Placed(0),
                Placement::Placed(0)
            ]
        );
        assert_eq!(plan[3], Placement::Unplaced(vec![(0, Rejection::Memory)]));
        assert_eq!(Rejection::Memory.reason(), "RESOURCE:MEMORY");
    }

    #[test]
    fn static_ports_conflict_and_spread() {
        let mut instances = vec![instance("a", 1024, 1024), instance("b", 1024, 1024)];
        let web = TaskRequest {
            host_ports_tcp: vec![80],
            ..task(10, 10)
        };
        let plan = place(&mut instances, &[web.clone(), web.clone(), web]);
        assert_eq!(plan[0], Placement::Placed(0));
        assert_eq!(plan[1], Placement::Placed(1));
        assert_eq!(
            plan[2],
            Placement::Unplaced(vec![(0, Rejection::Ports), (1, Rejection::Ports)])
        );
    }

    #[test]
    fn draining_disconnected_and_attributes() {
        let mut draining = instance("a", 1024, 1024);
        draining.status = InstanceStatus::Draining;
        let mut gone = instance("b", 1024, 1024);
        gone.agent_connected = false;
        let mut zone_a = instance("c", 1024, 1024);
        zone_a.attributes.insert("zone".into(), Some("a".into()));
        let mut instances = vec![draining, gone, zone_a];
        let wants_b = TaskRequest {
            required_attributes: vec![("zone".into(), Some("b".into()))],
            ..task(1, 1)
        };
        let wants_zone = TaskRequest {
            required_attributes: vec![("zone".into(), None)],
            ..task(1, 1)
        };
        let plan = place(&mut instances, &[wants_b, wants_zone]);
        assert_eq!(
            plan[0],
            Placement::Unplaced(vec![
                (0, Rejection::Inactive),
                (1, Rejection::Agent),
                (2, Rejection::MissingAttribute("zone".into()))
            ])
        );
        assert_eq!(plan[1], Placement::Placed(2));
    }

    proptest! {
        /// Whatever the batch, no instance ends up overcommitted and every
        /// placed task fit where it went.
        #[test]
        fn never_overcommits(
            caps in proptest::collection::vec((0i64..4096, 0i64..4096), 1..6),
            asks in proptest::collection::vec((0i64..2048, 0i64..2048, proptest::option::of(1u16..6)), 0..40),
        ) {
            let mut instances: Vec<_> = caps.iter().enumerate()
                .map(|(i, (c, m))| instance(&format!("i{i}"), *c, *m)).collect();
            let tasks: Vec<_> = asks.iter().map(|(c, m, p)| TaskRequest {
                host_ports_tcp: p.iter().copied().collect(),
                ..task(*c, *m)
            }).collect();
            let plan = place(&mut instances, &tasks);
            let mut used = vec![(0i64, 0i64, BTreeSet::new()); caps.len()];
            for (t, p) in tasks.iter().zip(&plan) {
                if let Placement::Placed(i) = p {
                    used[*i].0 += t.cpu;
                    used[*i].1 += t.memory;
                    for port in &t.host_ports_tcp {
                        prop_assert!(used[*i].2.insert(*port), "port {} given twice", port);
                    }
                }
            }
            for (i, (c, m)) in caps.iter().enumerate() {
                prop_assert!(used[i].0 <= *c && used[i].1 <= *m);
                prop_assert_eq!(instances[i].cpu_remaining, c - used[i].0);
            }
        }
    }
}
