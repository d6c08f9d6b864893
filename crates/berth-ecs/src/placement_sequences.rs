//! Property tests over sequences of calls, through the handler harness:
//! random RunTask calls (`distinctInstance`, `spread` over `instanceId`
//! and over an attribute, `memberOf task:group`, GPU requests), StopTask
//! with the agent reporting STOPPED, service scale changes with controller
//! passes, and agents reporting RUNNING, on four simulated instances of
//! different sizes, zones and GPU counts. After every step:
//!
//! - no instance holds two live tasks of a `distinctInstance` group;
//! - every task a spread call placed went to a value (instance, zone) with
//!   the fewest live tasks of its group among those with room for it, and
//!   a spread call fails only when no instance has room;
//! - `task:group` expressions see every live task: a task placed next to
//!   `cache` is on an instance running one, a task placed away from it is
//!   not, and such a call fails only when no admissible instance has room;
//! - no instance's CPU, memory or GPUs are overcommitted.
//!
//! The model of what instances hold is computed here from the stored tasks
//! (not through `launch::usage`), so it checks the placement path
//! independently.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::state::tasks::{TaskRecord, TaskStatus};
use crate::test_support::{Harness, Instance, Spec};

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Step {
    /// RunTask of definition `def` (0 small, 1 gpu, 2 big), `count` tasks,
    /// with the placement `kind` (see [`KINDS`]).
    Run { def: usize, count: u32, kind: usize },
    /// StopTask of a live task; its agent reports STOPPED.
    Stop(prop::sample::Index),
    /// A service's desired count changes and the controller passes.
    Scale { service: usize, desired: i32 },
    /// Every agent reports what its poll lists (RUNNING / STOPPED).
    Act,
}

const DEFINITIONS: [&str; 3] = ["small", "gpu", "big"];

/// Group, constraints and strategy of each kind of RunTask call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Cache,
    Distinct,
    SpreadInstance,
    SpreadZone,
    Near,
    Away,
    Plain,
}

const KINDS: [Kind; 7] = [
    Kind::Cache,
    Kind::Distinct,
    Kind::SpreadInstance,
    Kind::SpreadZone,
    Kind::Near,
    Kind::Away,
    Kind::Plain,
];

impl Kind {
    fn group(self) -> &'static str {
        match self {
            Kind::Cache => "cache",
            Kind::Distinct => "d1",
            Kind::SpreadInstance => "s1",
            Kind::SpreadZone => "s2",
            Kind::Near => "near",
            Kind::Away => "away",
            Kind::Plain => "plain",
        }
    }

    fn call(self, def: &str, count: u32) -> Value {
        let mut call = json!({"taskDefinition": def, "count": count, "group": self.group()});
        match self {
            Kind::Distinct => {
                call["placementConstraints"] = json!([{"type": "distinctInstance"}]);
            }
            Kind::SpreadInstance => {
                call["placementStrategy"] = json!([{"type": "spread", "field": "instanceId"}]);
            }
            Kind::SpreadZone => {
                call["placementStrategy"] = json!([{"type": "spread", "field": "attribute:zone"}]);
            }
            Kind::Near => {
                call["placementConstraints"] =
                    json!([{"type": "memberOf", "expression": "task:group == cache"}]);
            }
            Kind::Away => {
                call["placementConstraints"] =
                    json!([{"type": "memberOf", "expression": "not(task:group == cache)"}]);
            }
            Kind::Cache | Kind::Plain => {}
        }
        call
    }
}

/// Groups that are only ever placed with `distinctInstance`.
const DISTINCT_GROUPS: [&str; 2] = ["d1", "service:svc-distinct"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..3usize, 1..=3u32, 0..KINDS.len())
            .prop_map(|(def, count, kind)| Step::Run { def, count, kind }),
        2 => any::<prop::sample::Index>().prop_map(Step::Stop),
        2 => (0..2usize, 0..=4i32).prop_map(|(service, desired)| Step::Scale { service, desired }),
        1 => Just(Step::Act),
    ]
}

/// An instance as the model sees it.
struct Host {
    instance: Instance,
    zone: &'static str,
    cpu: i64,
    memory: i64,
    gpu: i64,
}

/// What a launch needs: CPU, memory, GPUs.
type Need = (i64, i64, i64);

fn need_of(def: &str) -> Need {
    match def {
        "gpu" => (128, 128, 1),
        "big" => (256, 512, 0),
        _ => (128, 128, 0),
    }
}

/// The live (not STOPPED) tasks by instance id.
fn live_by_host(h: &Harness) -> BTreeMap<String, Vec<TaskRecord>> {
    let mut out: BTreeMap<String, Vec<TaskRecord>> = BTreeMap::new();
    for t in h.tasks("default") {
        if t.last_status() != TaskStatus::Stopped {
            out.entry(t.instance_id.clone().unwrap_or_default())
                .or_default()
                .push(t);
        }
    }
    out
}

/// Remaining CPU, memory and GPUs of each host, from its live tasks.
fn remaining(hosts: &[Host], live: &BTreeMap<String, Vec<TaskRecord>>) -> Vec<Need> {
    hosts
        .iter()
        .map(|host| {
            let mut left = (host.cpu, host.memory, host.gpu);
            for t in live.get(&host.instance.id).into_iter().flatten() {
                left.0 -= t.reservation.cpu;
                left.1 -= t.reservation.memory;
                left.2 -= t.reservation.custom.get("GPU").copied().unwrap_or(0);
            }
            left
        })
        .collect()
}

fn fits(left: Need, need: Need) -> bool {
    left.0 >= need.0 && left.1 >= need.1 && left.2 >= need.2
}

fn count_group(live: &BTreeMap<String, Vec<TaskRecord>>, host: &Host, group: &str) -> usize {
    live.get(&host.instance.id)
        .into_iter()
        .flatten()
        .filter(|t| t.task.group.as_deref() == Some(group))
        .count()
}

/// The invariants that hold after every step.
fn check_state(h: &Harness, hosts: &[Host]) -> Result<(), TestCaseError> {
    let live = live_by_host(h);
    for (host, left) in hosts.iter().zip(remaining(hosts, &live)) {
        prop_assert!(
            left.0 >= 0 && left.1 >= 0 && left.2 >= 0,
            "{} overcommitted: {:?} left",
            host.instance.id,
            left
        );
        for group in DISTINCT_GROUPS {
            prop_assert!(
                count_group(&live, host, group) <= 1,
                "{} holds two live tasks of {group}",
                host.instance.id
            );
        }
    }
    Ok(())
}

/// Checks one RunTask answer against the state before it.
fn check_run(
    hosts: &[Host],
    before: &BTreeMap<String, Vec<TaskRecord>>,
    kind: Kind,
    need: Need,
    count: u32,
    placed_on: &[String],
) -> Result<(), TestCaseError> {
    let mut left = remaining(hosts, before);
    let group = kind.group();
    let mut counts: Vec<usize> = hosts
        .iter()
        .map(|h| count_group(before, h, group))
        .collect();
    let cache: Vec<bool> = hosts
        .iter()
        .map(|h| count_group(before, h, "cache") > 0)
        .collect();
    let admissible = |i: usize, counts: &[usize]| match kind {
        Kind::Near => cache[i],
        Kind::Away => !cache[i],
        Kind::Distinct => counts[i] == 0,
        _ => true,
    };
    for n in 0..count as usize {
        let candidates: Vec<usize> = (0..hosts.len())
            .filter(|&i| fits(left[i], need) && admissible(i, &counts))
            .collect();
        let Some(id) = placed_on.get(n) else {
            prop_assert!(
                candidates.is_empty(),
                "task {n} of {group} unplaced though {:?} had room",
                candidates
                    .iter()
                    .map(|&i| &hosts[i].instance.id)
                    .collect::<Vec<_>>()
            );
            continue;
        };
        let Some(p) = hosts.iter().position(|h| &h.instance.id == id) else {
            return Err(TestCaseError::fail(format!("placed on unknown {id}")));
        };
        prop_assert!(
            candidates.contains(&p),
            "{group} placed on {id}, which was not admissible or had no room"
        );
        match kind {
            Kind::SpreadInstance => {
                let least = candidates.iter().map(|&i| counts[i]).min().unwrap_or(0);
                prop_assert_eq!(counts[p], least, "spread over instances: not the emptiest");
            }
            Kind::SpreadZone => {
                let zone_count = |zone: &str| -> usize {
                    (0..hosts.len())
                        .filter(|&i| hosts[i].zone == zone)
                        .map(|i| counts[i])
                        .sum()
                };
                let least = candidates
                    .iter()
                    .map(|&i| zone_count(hosts[i].zone))
                    .min()
                    .unwrap_or(0);
                prop_assert_eq!(
                    zone_count(hosts[p].zone),
                    least,
                    "spread over zones: not the emptiest zone with room"
                );
            }
            _ => {}
        }
        counts[p] += 1;
        left[p].0 -= need.0;
        left[p].1 -= need.1;
        left[p].2 -= need.2;
    }
    Ok(())
}

async fn setup() -> (Harness, Vec<Host>) {
    let h = Harness::new();
    let shapes: [(&str, i64, i64, i64); 4] = [
        ("a", 1024, 1024, 2),
        ("a", 1024, 1024, 0),
        ("b", 512, 2048, 1),
        ("c", 2048, 512, 2),
    ];
    let mut hosts = Vec::new();
    for (zone, cpu, memory, gpu) in shapes {
        let mut spec = Spec::default()
            .size(cpu as i32, memory as i32)
            .attribute("zone", zone);
        if gpu > 0 {
            spec = spec.resource("GPU", gpu as i32);
        }
        hosts.push(Host {
            instance: h.instance("default", spec).await,
            zone,
            cpu,
            memory,
            gpu,
        });
    }
    for def in DEFINITIONS {
        let (cpu, memory, gpu) = need_of(def);
        let mut container = json!({"cpu": cpu, "memory": memory});
        if gpu > 0 {
            container["resourceRequirements"] = json!([{"type": "GPU", "value": gpu.to_string()}]);
        }
        h.task_definition(def, container).await;
    }
    h.ok(
        "CreateService",
        json!({"serviceName": "svc-distinct", "taskDefinition": "small", "desiredCount": 0,
            "placementConstraints": [{"type": "distinctInstance"}]}),
    )
    .await;
    h.ok(
        "CreateService",
        json!({"serviceName": "svc-zones", "taskDefinition": "small", "desiredCount": 0,
            "placementStrategy": [{"type": "spread", "field": "attribute:zone"}]}),
    )
    .await;
    (h, hosts)
}

async fn run_sequence(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let (h, hosts) = setup().await;
    let controller = h.controller();
    let agents: Vec<&Instance> = hosts.iter().map(|h| &h.instance).collect();
    for step in steps {
        match &step {
            Step::Run { def, count, kind } => {
                let (def, kind) = (DEFINITIONS[*def], KINDS[*kind]);
                let before = live_by_host(&h);
                let (arns, failures) = h.run(kind.call(def, *count)).await;
                let placed_on: Vec<String> = arns.iter().map(|a| h.instance_of(a)).collect();
                prop_assert_eq!(
                    arns.len() < *count as usize,
                    !failures.is_empty(),
                    "failures exactly when not every task was placed"
                );
                check_run(&hosts, &before, kind, need_of(def), *count, &placed_on)?;
            }
            Step::Stop(index) => {
                let live: Vec<TaskRecord> = live_by_host(&h).into_values().flatten().collect();
                if live.is_empty() {
                    continue;
                }
                let task = &live[index.index(live.len())];
                h.ok("StopTask", json!({"task": task.arn()})).await;
                let host = hosts
                    .iter()
                    .find(|x| Some(&x.instance.id) == task.instance_id.as_ref())
                    .map(|x| &x.instance);
                if let Some(instance) = host {
                    h.report(instance, task.arn(), "STOPPED").await;
                }
            }
            Step::Scale { service, desired } => {
                let name = ["svc-distinct", "svc-zones"][*service];
                h.ok(
                    "UpdateService",
                    json!({"service": name, "desiredCount": desired}),
                )
                .await;
                controller.pass().await;
            }
            Step::Act => {
                h.agents_act(&agents).await;
                controller.pass().await;
            }
        }
        check_state(&h, &hosts).map_err(|e| TestCaseError::fail(format!("after {step:?}: {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn placement_holds_across_sequences_of_calls(steps in prop::collection::vec(step(), 1..16)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(run_sequence(steps))?;
    }
}
