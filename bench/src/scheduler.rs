//! Scheduler benchmark: placements per second of `berth_scheduler::place_with`
//! on a synthetic cluster, single-threaded, for several policies and batch
//! sizes, with the process's peak resident memory. See bench/README.md.

use std::time::Instant;

use berth_scheduler::{
    parse_constraint, parse_strategy, place_with, reference, InstanceSnapshot, InstanceStatus,
    Placement, Policy, Strategy, TaskRequest,
};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Placements per second of berth-scheduler on a synthetic cluster")]
struct Args {
    /// Container instances in the cluster.
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    /// Batch sizes (tasks placed in one call), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [25_000, 50_000, 100_000])]
    tasks: Vec<usize>,
    /// Seed of the synthetic cluster and of `place_with`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also time the plain scan (`berth_scheduler::reference`) on this many
    /// tasks, for comparison (0: skip).
    #[arg(long, default_value_t = 2_000)]
    scan_tasks: usize,
}

/// SplitMix64, so the cluster is the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Instance types: name, CPU units, memory MiB as ECS registers them.
const TYPES: [(&str, i64, i64); 5] = [
    ("m5.large", 2048, 7680),
    ("m5.xlarge", 4096, 15_576),
    ("m5.2xlarge", 8192, 31_403),
    ("c5.xlarge", 4096, 7484),
    ("r5.large", 2048, 15_576),
];
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
/// Task shapes: CPU units, memory MiB.
const SHAPES: [(i64, i64); 4] = [(32, 128), (64, 256), (128, 512), (256, 1024)];

fn cluster(n: usize, seed: u64) -> Vec<InstanceSnapshot> {
    let mut g = Gen(seed);
    (0..n)
        .map(|k| {
            let (kind, cpu, memory) = TYPES[g.below(TYPES.len() as u64) as usize];
            let zone = ZONES[g.below(ZONES.len() as u64) as usize];
            let mut inst = InstanceSnapshot {
                arn: format!(
                    "arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{k:032x}"
                ),
                ec2_instance_id: format!("i-{k:017x}"),
                status: InstanceStatus::Active,
                agent_connected: true,
                cpu_remaining: cpu,
                memory_remaining: memory,
                ports_tcp_used: [22, 2375, 2376, 51678, 51679].into(),
                attributes: std::sync::Arc::new(
                    [
                        ("ecs.instance-type", kind),
                        ("ecs.availability-zone", zone),
                        ("ecs.os-type", "linux"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                    .collect(),
                ),
                agent_version: Some("1.80.0".to_string()),
                ..InstanceSnapshot::default()
            };
            // A third of the instances already run a few tasks of another
            // service.
            if k % 3 == 0 {
                let running = g.below(4) as u32;
                inst.task_count = running;
                inst.cpu_remaining -= i64::from(running) * 128;
                inst.memory_remaining -= i64::from(running) * 512;
                if running > 0 {
                    inst.groups.insert("service:other".to_string(), running);
                }
            }
            inst
        })
        .collect()
}

fn tasks(n: usize, seed: u64) -> Vec<TaskRequest> {
    let mut g = Gen(seed ^ 0x5EED);
    (0..n)
        .map(|_| {
            let (cpu, memory) = SHAPES[g.below(SHAPES.len() as u64) as usize];
            TaskRequest {
                cpu,
                memory,
                group: "family:bench".to_string(),
                ..TaskRequest::default()
            }
        })
        .collect()
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

/// Current resident memory of this process (VmRSS), in MiB.
fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each figure shows its
/// own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

type Placer = fn(&mut [InstanceSnapshot], &[TaskRequest], &Policy, u64) -> Vec<Placement>;

/// Times `placer` on a fresh copy of the cluster `RUNS` times and prints the
/// median, the outcome and the peak resident memory of those runs; returns
/// that peak.
fn measure(
    name: &str,
    base: &[InstanceSnapshot],
    batch: &[TaskRequest],
    policy: &Policy,
    seed: u64,
    placer: Placer,
    runs: usize,
) -> f64 {
    reset_peak();
    let mut times = Vec::with_capacity(runs);
    let mut placed = 0;
    for _ in 0..runs {
        let mut instances = base.to_vec();
        let start = Instant::now();
        let plan = placer(&mut instances, batch, policy, seed);
        times.push(start.elapsed().as_secs_f64());
        placed = plan
            .iter()
            .filter(|p| matches!(p, Placement::Placed(_)))
            .count();
        let overcommitted = instances
            .iter()
            .filter(|i| i.cpu_remaining < 0 || i.memory_remaining < 0)
            .count();
        assert_eq!(overcommitted, 0, "{name}: instances overcommitted");
    }
    let peak = peak_mib();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{name:<46} {:>6} instances x {:>7} tasks: {:>10.0} placements/s  (median of {runs}: {:.4} s, {} placed, peak RSS {:.1} MiB)",
        base.len(),
        batch.len(),
        batch.len() as f64 / median,
        median,
        placed,
        peak,
    );
    peak
}

fn main() {
    let args = Args::parse();
    let base = cluster(args.instances, args.seed);
    let largest = args.tasks.iter().copied().max().unwrap_or(0);
    let all_tasks = tasks(largest.max(args.scan_tasks), args.seed);
    let cpu: i64 = base.iter().map(|i| i.cpu_remaining).sum();
    let memory: i64 = base.iter().map(|i| i.memory_remaining).sum();
    println!(
        "cluster: {} instances ({} types, 3 zones), {} CPU units and {} GiB free; tasks of {} shapes, group family:bench",
        base.len(),
        TYPES.len(),
        cpu,
        memory / 1024,
        SHAPES.len()
    );
    let member_of = "attribute:ecs.instance-type =~ m5.* and attribute:ecs.availability-zone in [us-east-1a, us-east-1b]";
    let scenarios: Vec<(&str, Policy)> = vec![
        (
            "(a) binpack memory",
            Policy {
                strategies: vec![parse_strategy("binpack", Some("memory")).expect("strategy")],
                constraints: vec![],
            },
        ),
        (
            "(b) spread zone + binpack memory",
            Policy {
                strategies: vec![
                    parse_strategy("spread", Some("attribute:ecs.availability-zone"))
                        .expect("strategy"),
                    parse_strategy("binpack", Some("memory")).expect("strategy"),
                ],
                constraints: vec![],
            },
        ),
        (
            "(c) memberOf m5.* in 2 zones, default spread",
            Policy {
                strategies: vec![],
                constraints: vec![
                    parse_constraint("memberOf", Some(member_of)).expect("constraint")
                ],
            },
        ),
        (
            "(d) random",
            Policy {
                strategies: vec![Strategy::Random],
                constraints: vec![],
            },
        ),
    ];
    println!("(c) expression: {member_of}");
    println!(
        "resident before placing (cluster snapshot and {} tasks built): {:.1} MiB",
        all_tasks.len(),
        rss_mib()
    );
    // Warm-up: fault in the heap the runs will reuse.
    let mut warm = base.to_vec();
    place_with(&mut warm, &all_tasks, &scenarios[0].1, args.seed);
    drop(warm);
    let mut peak = peak_mib();
    for (name, policy) in &scenarios {
        for &n in &args.tasks {
            let p = measure(
                name,
                &base,
                &all_tasks[..n],
                policy,
                args.seed,
                place_with,
                3,
            );
            peak = peak.max(p);
        }
    }
    if args.scan_tasks > 0 {
        for (name, policy) in &scenarios[..2] {
            let label = format!("{name} [plain scan]");
            let p = measure(
                &label,
                &base,
                &all_tasks[..args.scan_tasks],
                policy,
                args.seed,
                reference::place_with,
                1,
            );
            peak = peak.max(p);
        }
    }
    println!("peak RSS of the whole run: {peak:.1} MiB");
}
