use super::*;
use crate::engine::{full_rejection, Compiled};
use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, ProptestConfig};
use proptest::strategy::Strategy as _;

fn instance(arn: &str, cpu: i64, memory: i64) -> InstanceSnapshot {
    InstanceSnapshot {
        arn: arn.to_string(),
        ec2_instance_id: format!("i-{arn}"),
        status: InstanceStatus::Active,
        agent_connected: true,
        cpu_remaining: cpu,
        memory_remaining: memory,
        ..InstanceSnapshot::default()
    }
}

fn zoned(arn: &str, zone: &str, cpu: i64, memory: i64) -> InstanceSnapshot {
    let mut i = instance(arn, cpu, memory);
    std::sync::Arc::make_mut(&mut i.attributes).insert("zone".into(), Some(zone.into()));
    std::sync::Arc::make_mut(&mut i.attributes).insert(
        "ecs.availability-zone".into(),
        Some(format!("us-east-1{zone}")),
    );
    i
}

fn task(cpu: i64, memory: i64) -> TaskRequest {
    TaskRequest {
        cpu,
        memory,
        group: "family:app".into(),
        ..TaskRequest::default()
    }
}

fn policy(strategies: &[(&str, Option<&str>)], constraints: &[(&str, Option<&str>)]) -> Policy {
    Policy::new(
        strategies
            .iter()
            .map(|(k, f)| parse_strategy(k, *f).unwrap())
            .collect(),
        constraints
            .iter()
            .map(|(k, e)| parse_constraint(k, *e).unwrap())
            .collect(),
    )
    .unwrap()
}

fn placed(plan: &[Placement]) -> Vec<usize> {
    plan.iter()
        .filter_map(|p| match p {
            Placement::Placed(i) => Some(*i),
            Placement::Unplaced(_) => None,
        })
        .collect()
}

/// Places with the index and with the scan and checks they agree.
fn place_both(
    instances: &[InstanceSnapshot],
    tasks: &[TaskRequest],
    policy: &Policy,
    seed: u64,
) -> (Vec<Placement>, Vec<InstanceSnapshot>) {
    let mut fast = instances.to_vec();
    let plan = place_with(&mut fast, tasks, policy, seed);
    let mut slow = instances.to_vec();
    assert_eq!(plan, reference::place_with(&mut slow, tasks, policy, seed));
    assert_eq!(fast, slow);
    (plan, fast)
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
    assert_eq!(instances[0].memory_remaining, 100);
    assert_eq!(instances[0].task_count, 3);
    assert_eq!(instances[0].groups["family:app"], 3);
}

#[test]
fn static_ports_conflict_and_spread() {
    let mut instances = vec![instance("a", 1024, 1024), instance("b", 1024, 1024)];
    let web = TaskRequest {
        host_ports_tcp: vec![80],
        host_ports_udp: vec![53],
        ..task(10, 10)
    };
    let dns = TaskRequest {
        host_ports_udp: vec![53],
        ..task(10, 10)
    };
    let plan = place(&mut instances, &[web.clone(), web.clone(), web, dns]);
    assert_eq!(plan[0], Placement::Placed(0));
    assert_eq!(plan[1], Placement::Placed(1));
    assert_eq!(
        plan[2],
        Placement::Unplaced(vec![(0, Rejection::Ports), (1, Rejection::Ports)])
    );
    assert_eq!(
        plan[3],
        Placement::Unplaced(vec![(0, Rejection::PortsUdp), (1, Rejection::PortsUdp)])
    );
}

#[test]
fn draining_disconnected_and_attributes() {
    let mut draining = instance("a", 1024, 1024);
    draining.status = InstanceStatus::Draining;
    let mut gone = instance("b", 1024, 1024);
    gone.agent_connected = false;
    let mut zone_a = instance("c", 1024, 1024);
    std::sync::Arc::make_mut(&mut zone_a.attributes).insert("zone".into(), Some("a".into()));
    let mut inactive = instance("d", 1024, 1024);
    inactive.status = InstanceStatus::Inactive;
    let mut instances = vec![draining, gone, zone_a, inactive];
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
            (2, Rejection::MissingAttribute("zone".into())),
            (3, Rejection::Inactive),
        ])
    );
    assert_eq!(plan[1], Placement::Placed(2));
}

#[test]
fn no_instances_no_reasons() {
    let plan = place_with(&mut [], &[task(1, 1), task(1, 1)], &Policy::default(), 0);
    assert_eq!(plan, vec![Placement::Unplaced(vec![]); 2]);
    assert!(place(&mut [instance("a", 1, 1)], &[]).is_empty());
}

#[test]
fn binpack_memory_fills_the_fullest_instance_first() {
    let instances = vec![
        instance("roomy", 4096, 4000),
        instance("full", 4096, 1000),
        instance("half", 4096, 2500),
    ];
    let p = policy(&[("binpack", Some("memory"))], &[]);
    let tasks = vec![task(10, 500); 4];
    let (plan, after) = place_both(&instances, &tasks, &p, 0);
    // 1000 → 500 → 0, then the next fullest (2500) twice.
    assert_eq!(placed(&plan), [1, 1, 2, 2]);
    assert_eq!(after[1].memory_remaining, 0);
    assert_eq!(after[2].memory_remaining, 1500);
    // A task only the roomy instance can hold goes there.
    let (plan, _) = place_both(&after, &[task(10, 3000)], &p, 0);
    assert_eq!(placed(&plan), [0]);
    // binpack cpu looks at CPU instead.
    let by_cpu = vec![instance("a", 300, 9000), instance("b", 200, 9000)];
    let (plan, _) = place_both(
        &by_cpu,
        &vec![task(100, 1); 3],
        &policy(&[("binpack", Some("cpu"))], &[]),
        0,
    );
    assert_eq!(placed(&plan), [1, 1, 0]);
}

#[test]
fn spread_over_three_zones_gives_three_each() {
    let instances = vec![
        zoned("a0", "a", 4096, 8192),
        zoned("a1", "a", 4096, 8192),
        zoned("b0", "b", 4096, 8192),
        zoned("b1", "b", 4096, 8192),
        zoned("c0", "c", 4096, 8192),
        zoned("c1", "c", 4096, 8192),
    ];
    let tasks = vec![task(10, 10); 9];
    let p = policy(&[("spread", Some("attribute:zone"))], &[]);
    let (plan, _) = place_both(&instances, &tasks, &p, 0);
    let zone_of = |i: usize| i / 2;
    let mut per_zone = [0; 3];
    for i in placed(&plan) {
        per_zone[zone_of(i)] += 1;
    }
    assert_eq!(per_zone, [3, 3, 3]);
    // Zone only: within a zone, snapshot order decides.
    assert_eq!(placed(&plan), [0, 2, 4, 0, 2, 4, 0, 2, 4]);

    // The default policy spreads over ecs.availability-zone, then instances.
    let (plan, _) = place_both(&instances, &tasks, &Policy::default(), 0);
    assert_eq!(placed(&plan), [0, 2, 4, 1, 3, 5, 0, 2, 4]);

    // Tasks of the group already running count; other groups do not.
    let mut busy = instances.clone();
    busy[0].groups.insert("family:app".into(), 2);
    busy[2].groups.insert("service:other".into(), 5);
    let (plan, _) = place_both(&busy, &vec![task(10, 10); 4], &p, 0);
    assert_eq!(placed(&plan), [2, 4, 2, 4]);
}

#[test]
fn spread_instance_and_host() {
    let mut instances = vec![
        instance("a", 1024, 1024),
        instance("b", 1024, 1024),
        instance("c", 1024, 1024),
    ];
    // Two container instances on one EC2 host.
    instances[1].ec2_instance_id = "i-a".into();
    let by_host = policy(&[("spread", Some("host"))], &[]);
    let (plan, _) = place_both(&instances, &vec![task(1, 1); 4], &by_host, 0);
    assert_eq!(placed(&plan), [0, 2, 0, 2]);
    let by_instance = policy(&[("spread", Some("instanceId"))], &[]);
    let (plan, _) = place_both(&instances, &vec![task(1, 1); 4], &by_instance, 0);
    assert_eq!(placed(&plan), [0, 1, 2, 0]);
}

#[test]
fn distinct_instance_places_one_per_instance() {
    let instances = vec![
        instance("a", 1024, 1024),
        instance("b", 1024, 1024),
        instance("c", 1024, 1024),
    ];
    let p = policy(&[], &[("distinctInstance", None)]);
    let (plan, _) = place_both(&instances, &vec![task(1, 1); 4], &p, 0);
    assert_eq!(placed(&plan), [0, 1, 2]);
    assert_eq!(
        plan[3],
        Placement::Unplaced(vec![
            (0, Rejection::DistinctInstance),
            (1, Rejection::DistinctInstance),
            (2, Rejection::DistinctInstance),
        ])
    );
    assert_eq!(
        Rejection::DistinctInstance.reason(),
        "DistinctInstance placement constraint unsatisfied."
    );
    // A task of the group already running takes its instance out; tasks of
    // other groups do not.
    let mut busy = instances.clone();
    busy[1].groups.insert("family:app".into(), 1);
    busy[2].groups.insert("family:other".into(), 3);
    let (plan, _) = place_both(&busy, &vec![task(1, 1); 3], &p, 0);
    assert_eq!(placed(&plan), [0, 2]);
    // Resources are reported before constraints.
    let small = vec![instance("a", 1024, 1)];
    let (plan, _) = place_both(&small, &[task(1, 1), task(1, 1)], &p, 0);
    assert_eq!(plan[1], Placement::Unplaced(vec![(0, Rejection::Memory)]));
}

#[test]
fn member_of_keeps_tasks_out_of_zone_c() {
    let instances: Vec<_> = ["a", "b", "c"]
        .iter()
        .flat_map(|z| (0..3).map(move |k| zoned(&format!("{z}{k}"), z, 1024, 1000)))
        .collect();
    let p = policy(&[], &[("memberOf", Some("attribute:zone in [a, b]"))]);
    let (plan, _) = place_both(&instances, &vec![task(1, 500); 14], &p, 0);
    let used = placed(&plan);
    assert_eq!(
        used.len(),
        12,
        "six instances of 1000 MiB hold twelve tasks"
    );
    assert!(used.iter().all(|&i| i < 6), "never zone c: {used:?}");
    let mut expected: Vec<(usize, Rejection)> = (0..6).map(|i| (i, Rejection::Memory)).collect();
    expected.extend((6..9).map(|i| (i, Rejection::MemberOf)));
    assert_eq!(plan[12], Placement::Unplaced(expected));
    // The same request failing again with nothing changed names one instance.
    assert_eq!(plan[13], Placement::Unplaced(vec![(0, Rejection::Memory)]));
    assert_eq!(
        Rejection::MemberOf.reason(),
        "MemberOf placement constraint unsatisfied."
    );
}

#[test]
fn member_of_task_group_affinity_and_anti_affinity() {
    let mut instances = vec![
        instance("a", 1024, 1024),
        instance("b", 1024, 1024),
        instance("c", 1024, 1024),
    ];
    instances[1].groups.insert("service:db".into(), 1);
    instances[1].task_count = 1;
    let near_db = policy(&[], &[("memberOf", Some("task:group == service:db"))]);
    let (plan, _) = place_both(&instances, &vec![task(1, 1); 3], &near_db, 0);
    assert_eq!(placed(&plan), [1, 1, 1]);

    // Anti-affinity with the task's own group changes as the batch is placed.
    let apart = policy(&[], &[("memberOf", Some("not(task:group == family:app)"))]);
    let (plan, _) = place_both(&instances, &vec![task(1, 1); 4], &apart, 0);
    assert_eq!(placed(&plan), [0, 1, 2]);
    assert_eq!(
        plan[3],
        Placement::Unplaced(vec![
            (0, Rejection::MemberOf),
            (1, Rejection::MemberOf),
            (2, Rejection::MemberOf)
        ])
    );

    // Affinity with the task's own group: the first task goes anywhere
    // allowed only if an instance already runs the group.
    let mut seeded = instances.clone();
    seeded[2].groups.insert("family:app".into(), 1);
    let together = policy(&[], &[("memberOf", Some("task:group == family:app"))]);
    let (plan, _) = place_both(&seeded, &vec![task(1, 1); 3], &together, 0);
    assert_eq!(placed(&plan), [2, 2, 2]);

    // runningTasksCount counts the batch's tasks too.
    let few = policy(
        &[("spread", Some("instanceId"))],
        &[("memberOf", Some("runningTasksCount < 2"))],
    );
    let (plan, _) = place_both(&instances, &vec![task(1, 1); 6], &few, 0);
    // Spread counts family:app only, so b (running one db task) is as empty
    // as the others at first; it is full after one.
    assert_eq!(placed(&plan), [0, 1, 2, 0, 2]);
    assert!(
        matches!(&plan[5], Placement::Unplaced(r) if r.iter().all(|(_, r)| *r == Rejection::MemberOf))
    );
}

#[test]
fn random_is_deterministic_for_a_seed() {
    let instances: Vec<_> = (0..20)
        .map(|k| instance(&format!("i{k}"), 1024, 1024))
        .collect();
    let p = policy(&[("random", None)], &[]);
    let tasks = vec![task(1, 1); 40];
    let run = |seed| {
        let mut snapshot = instances.clone();
        place_with(&mut snapshot, &tasks, &p, seed)
    };
    assert_eq!(run(7), run(7));
    let plans: Vec<_> = (0..5).map(run).collect();
    assert!(
        plans.windows(2).any(|w| w[0] != w[1]),
        "seeds change the plan"
    );
    let used: BTreeSet<usize> = placed(&plans[0]).into_iter().collect();
    assert!(used.len() > 10, "random uses many instances: {used:?}");
}

#[test]
fn random_is_roughly_uniform() {
    let instances: Vec<_> = (0..4)
        .map(|k| instance(&format!("i{k}"), 100_000, 100_000))
        .collect();
    let mut counts = [0usize; 4];
    let mut snapshot = instances.clone();
    let plan = place_with(
        &mut snapshot,
        &vec![task(1, 1); 4000],
        &policy(&[("random", None)], &[]),
        3,
    );
    for i in placed(&plan) {
        counts[i] += 1;
    }
    assert!(
        counts.iter().all(|&c| (850..1150).contains(&c)),
        "{counts:?}"
    );
    // Spread over zones, then random within the zone: even zones.
    let zones = vec![
        zoned("a0", "a", 100_000, 100_000),
        zoned("a1", "a", 100_000, 100_000),
        zoned("a2", "a", 100_000, 100_000),
        zoned("b0", "b", 100_000, 100_000),
    ];
    let mut snapshot = zones.clone();
    let plan = place_with(
        &mut snapshot,
        &vec![task(1, 1); 300],
        &policy(&[("spread", Some("attribute:zone")), ("random", None)], &[]),
        5,
    );
    let in_b = placed(&plan).iter().filter(|&&i| i == 3).count();
    assert_eq!(in_b, 150);
}

#[test]
fn strategies_chain_spread_zone_then_binpack() {
    let instances = vec![
        zoned("a-1000", "a", 4096, 1000),
        zoned("a-3000", "a", 4096, 3000),
        zoned("b-2000", "b", 4096, 2000),
        zoned("b-500", "b", 4096, 500),
    ];
    let p = policy(
        &[
            ("spread", Some("attribute:ecs.availability-zone")),
            ("binpack", Some("memory")),
        ],
        &[],
    );
    let (plan, after) = place_both(&instances, &vec![task(10, 400); 4], &p, 0);
    // Tie: b's 500 MiB is fuller than a's 1000. Then a (fewer tasks): 1000.
    // Tie again: a's 600 beats b's 2000 (500 left only 100). Then b: 2000.
    assert_eq!(placed(&plan), [3, 0, 0, 2]);
    assert_eq!(after[0].memory_remaining, 200);
    assert_eq!(after[2].memory_remaining, 1600);
}

#[test]
fn custom_resources_are_counted() {
    let mut gpu = instance("gpu", 4096, 4096);
    gpu.custom_remaining.insert("GPU".into(), 2);
    let instances = vec![instance("plain", 4096, 4096), gpu];
    let wants_gpu = TaskRequest {
        custom: [("GPU".to_string(), 1)].into(),
        ..task(1, 1)
    };
    let (plan, after) = place_both(&instances, &vec![wants_gpu; 3], &Policy::default(), 0);
    assert_eq!(placed(&plan), [1, 1]);
    assert_eq!(
        plan[2],
        Placement::Unplaced(vec![
            (0, Rejection::Resource("GPU".into())),
            (1, Rejection::Resource("GPU".into()))
        ])
    );
    assert_eq!(Rejection::Resource("GPU".into()).reason(), "RESOURCE:GPU");
    assert_eq!(after[1].custom_remaining["GPU"], 0);
}

#[test]
fn policies_are_checked_like_ecs() {
    assert_eq!(
        parse_strategy("binpack", Some("MEMORY")),
        Ok(Strategy::Binpack(BinpackField::Memory))
    );
    assert_eq!(
        parse_strategy("spread", Some("host")),
        Ok(Strategy::Spread("host".into()))
    );
    assert_eq!(
        parse_strategy("spread", Some("instanceid")),
        Ok(Strategy::Spread("instanceId".into()))
    );
    assert_eq!(
        parse_strategy("spread", Some("Attribute:ecs.availability-zone")),
        Ok(Strategy::Spread("attribute:ecs.availability-zone".into()))
    );
    assert_eq!(
        parse_strategy("spread", Some("rack")),
        Ok(Strategy::Spread("attribute:rack".into()))
    );
    assert_eq!(parse_strategy("random", Some("")), Ok(Strategy::Random));
    for (kind, field, message) in [
        ("binpack", Some("disk"), "cpu or memory"),
        ("binpack", None, "cpu or memory"),
        ("spread", None, "needs a field"),
        ("spread", Some("attribute:"), "attribute name"),
        ("random", Some("cpu"), "does not take a field"),
        ("pack", None, "Valid values: random, spread, binpack"),
    ] {
        let e = parse_strategy(kind, field).unwrap_err();
        assert!(e.to_string().contains(message), "{kind} {field:?}: {e}");
    }
    assert_eq!(
        parse_constraint("distinctInstance", None),
        Ok(Constraint::DistinctInstance)
    );
    assert!(parse_constraint("distinctInstance", Some("attribute:a exists")).is_err());
    assert!(parse_constraint("memberOf", None).is_err());
    assert!(parse_constraint("sameHost", None).is_err());
    match parse_constraint("memberOf", Some("attribute:zone ==")) {
        Err(PolicyError::Expression(e)) => assert_eq!(e.position, 17),
        other => panic!("{other:?}"),
    }
    let long = format!("attribute:a == {}", "x".repeat(2000));
    assert!(matches!(
        parse_constraint("memberOf", Some(&long)),
        Err(PolicyError::Invalid(_))
    ));
    assert!(Policy::new(vec![Strategy::Random; 6], vec![]).is_err());
    assert!(Policy::new(vec![], vec![Constraint::DistinctInstance; 11]).is_err());
}

#[test]
fn many_valued_spreads_and_random_tie_breaks_agree_with_the_scan() {
    // 100 hosts: too many values for buckets, so host is a key component.
    let instances: Vec<_> = (0..100)
        .map(|k| {
            let mut i = zoned(
                &format!("i{k}"),
                ["a", "b", "c"][k % 3],
                2048,
                1000 + (k as i64 % 7) * 100,
            );
            i.ec2_instance_id = format!("i-{}", k / 2);
            i
        })
        .collect();
    let tasks = vec![task(64, 300); 250];
    for strategies in [
        vec![("spread", Some("host"))],
        vec![
            ("spread", Some("attribute:zone")),
            ("spread", Some("host")),
            ("binpack", Some("memory")),
        ],
        vec![
            ("binpack", Some("memory")),
            ("spread", Some("attribute:zone")),
        ],
        vec![
            ("spread", Some("instanceId")),
            ("spread", Some("attribute:zone")),
        ],
    ] {
        place_both(&instances, &tasks, &policy(&strategies, &[]), 0);
    }
    for strategies in [
        vec![("binpack", Some("memory")), ("random", None)],
        vec![("spread", Some("host")), ("random", None)],
        vec![("random", None), ("binpack", Some("memory"))],
    ] {
        let p = policy(&strategies, &[]);
        let mut snapshot = instances.clone();
        let plan = place_with(&mut snapshot, &tasks, &p, 9);
        check_plan(&instances, &tasks, &p, &plan);
    }
}

#[test]
fn many_task_groups_use_the_scan_with_the_same_result() {
    let instances: Vec<_> = (0..6)
        .map(|k| zoned(&format!("i{k}"), ["a", "b"][k % 2], 1024, 1024))
        .collect();
    let tasks: Vec<_> = (0..30)
        .map(|k| TaskRequest {
            group: format!("family:f{}", k % 12),
            ..task(10, 60)
        })
        .collect();
    let p = policy(&[], &[("distinctInstance", None)]);
    let (plan, _) = place_both(&instances, &tasks, &p, 0);
    check_plan(&instances, &tasks, &p, &plan);
}

/// Replays `plan` from `initial`: every placed task fit (resources and
/// constraints) where it went at its turn, and every unplaced one fit
/// nowhere, with each instance's first reason (for a request that failed
/// before in the batch: the instances whose reason changed since, or the
/// first instance).
fn check_plan(
    initial: &[InstanceSnapshot],
    tasks: &[TaskRequest],
    policy: &Policy,
    plan: &[Placement],
) {
    let compiled = Compiled::new(policy);
    let mut state = initial.to_vec();
    let mut last: Vec<(&TaskRequest, Vec<(usize, Rejection)>)> = Vec::new();
    assert_eq!(plan.len(), tasks.len());
    for (t, (task, placement)) in tasks.iter().zip(plan).enumerate() {
        match placement {
            Placement::Placed(i) => {
                assert_eq!(
                    full_rejection(&state[*i], task, &compiled),
                    None,
                    "task {t} placed on {i}"
                );
                reserve(&mut state[*i], task);
            }
            Placement::Unplaced(reasons) => {
                let all: Vec<_> = state
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (
                            i,
                            full_rejection(s, task, &compiled)
                                .expect("a reason for every instance"),
                        )
                    })
                    .collect();
                assert_eq!(reasons.is_empty(), initial.is_empty(), "task {t}");
                match last.iter_mut().find(|(r, _)| *r == task) {
                    None => {
                        assert_eq!(reasons, &all, "task {t}");
                        last.push((task, all));
                    }
                    Some((_, before)) => {
                        let changed: Vec<_> = all
                            .iter()
                            .zip(before.iter())
                            .filter(|(now, was)| now != was)
                            .map(|(now, _)| now.clone())
                            .collect();
                        if changed.is_empty() {
                            assert_eq!(reasons, &all[..all.len().min(1)], "task {t}");
                        } else {
                            assert_eq!(reasons, &changed, "task {t}");
                        }
                        *before = all;
                    }
                }
            }
        }
    }
    for (s, i) in state.iter().zip(initial) {
        assert!(s.cpu_remaining >= i.cpu_remaining.min(0));
        assert!(s.memory_remaining >= i.memory_remaining.min(0));
    }
}

// ------------------------------------------------------------ properties

const EXPRESSIONS: &[&str] = &[
    "attribute:zone in [a, b]",
    "attribute:zone != c",
    "not(task:group == g1)",
    "task:group == g2 or attribute:zone == a",
    "runningTasksCount < 3",
    "attribute:gpu exists and runningTasksCount <= 4",
    "attribute:zone =~ '[ab]' and not(task:group in [g2])",
];

const STRATEGIES: &[(&str, Option<&str>)] = &[
    ("binpack", Some("memory")),
    ("binpack", Some("cpu")),
    ("spread", Some("attribute:zone")),
    ("spread", Some("instanceId")),
    ("spread", Some("host")),
    ("spread", Some("attribute:gpu")),
    ("random", None),
];

fn arb_cluster() -> impl proptest::strategy::Strategy<Value = Vec<InstanceSnapshot>> {
    proptest::collection::vec(
        (
            0i64..4096,
            0i64..4096,
            proptest::option::of(0usize..3),
            proptest::option::of(1u16..4),
            0u32..3,
            0u32..2,
            proptest::option::of(0i64..3),
            0u8..10,
            0u8..3,
        ),
        0..8,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(
                |(k, (cpu, memory, zone, port, g1, g2, gpu, status, host))| {
                    let mut i = instance(&format!("i{k}"), cpu, memory);
                    if let Some(z) = zone {
                        std::sync::Arc::make_mut(&mut i.attributes)
                            .insert("zone".into(), Some(["a", "b", "c"][z].into()));
                    }
                    if let Some(p) = port {
                        i.ports_tcp_used.insert(p);
                    }
                    if let Some(n) = gpu {
                        i.custom_remaining.insert("GPU".into(), n);
                        std::sync::Arc::make_mut(&mut i.attributes).insert("gpu".into(), None);
                    }
                    for (g, n) in [("g1", g1), ("g2", g2)] {
                        if n > 0 {
                            i.groups.insert(g.into(), n);
                            i.task_count += n;
                        }
                    }
                    match status {
                        0 => i.status = InstanceStatus::Draining,
                        1 => i.agent_connected = false,
                        _ => {}
                    }
                    i.ec2_instance_id = format!("h{host}");
                    i
                },
            )
            .collect()
    })
}

fn arb_tasks() -> impl proptest::strategy::Strategy<Value = Vec<TaskRequest>> {
    proptest::collection::vec(
        (
            0i64..1500,
            0i64..1500,
            proptest::option::of(1u16..4),
            proptest::option::of(1u16..3),
            proptest::option::of(0i64..2),
            any::<bool>(),
            0u8..4,
        ),
        1..5,
    )
    .prop_flat_map(|pool| {
        let n = pool.len();
        proptest::collection::vec(0..n, 0..30)
            .prop_map(move |picks| picks.iter().map(|&k| pool[k]).collect::<Vec<_>>())
    })
    .prop_map(|specs| {
        specs
            .into_iter()
            .map(|(cpu, memory, tcp, udp, gpu, group, attr)| TaskRequest {
                cpu,
                memory,
                host_ports_tcp: tcp.into_iter().collect(),
                host_ports_udp: udp.into_iter().collect(),
                custom: gpu.map(|n| ("GPU".to_string(), n)).into_iter().collect(),
                required_attributes: if attr == 0 {
                    vec![("zone".into(), None)]
                } else {
                    vec![]
                },
                group: if group { "g1" } else { "g2" }.into(),
            })
            .collect()
    })
}

fn arb_policy() -> impl proptest::strategy::Strategy<Value = Policy> {
    (
        proptest::collection::vec(0..STRATEGIES.len(), 0..4),
        any::<bool>(),
        proptest::collection::vec(0..EXPRESSIONS.len(), 0..2),
    )
        .prop_map(|(strategies, distinct, exprs)| {
            let mut constraints: Vec<(&str, Option<&str>)> = exprs
                .into_iter()
                .map(|e| ("memberOf", Some(EXPRESSIONS[e])))
                .collect();
            if distinct {
                constraints.push(("distinctInstance", None));
            }
            policy(
                &strategies
                    .into_iter()
                    .map(|s| STRATEGIES[s])
                    .collect::<Vec<_>>(),
                &constraints,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    /// The index gives exactly the scan's plan when nothing is random, and a
    /// valid plan always: no overcommitted CPU, memory, ports or custom
    /// resources, constraints held, every request placed or rejected with a
    /// reason per instance, and never rejected when an instance could take it.
    #[test]
    fn index_matches_scan_and_plans_are_valid(
        instances in arb_cluster(),
        tasks in arb_tasks(),
        policy in arb_policy(),
        seed in any::<u64>(),
    ) {
        let mut fast = instances.clone();
        let plan = place_with(&mut fast, &tasks, &policy, seed);
        check_plan(&instances, &tasks, &policy, &plan);
        if !policy.strategies.contains(&Strategy::Random) {
            let mut slow = instances.clone();
            let expected = reference::place_with(&mut slow, &tasks, &policy, seed);
            prop_assert_eq!(&plan, &expected);
            prop_assert_eq!(&fast, &slow);
        }
        // Same seed, same plan.
        let mut again = instances.clone();
        prop_assert_eq!(place_with(&mut again, &tasks, &policy, seed), plan);
        prop_assert_eq!(again, fast);
    }

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
            match p {
                Placement::Placed(i) => {
                    used[*i].0 += t.cpu;
                    used[*i].1 += t.memory;
                    for port in &t.host_ports_tcp {
                        prop_assert!(used[*i].2.insert(*port), "port {} given twice", port);
                    }
                }
                Placement::Unplaced(reasons) => prop_assert!(!reasons.is_empty()),
            }
        }
        for (i, (c, m)) in caps.iter().enumerate() {
            prop_assert!(used[i].0 <= *c && used[i].1 <= *m);
            prop_assert_eq!(instances[i].cpu_remaining, c - used[i].0);
        }
    }
}
