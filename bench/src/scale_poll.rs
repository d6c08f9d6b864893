//! Work proportional to what changed (issue 17, item 6): RunTask latency in
//! a cluster with few and with many existing tasks, and what an agent's
//! poll decodes when 1,000 agents share a region.
//!
//! Two parts:
//!
//! - over HTTP, against a running `berth up --no-agent` (`--endpoint`):
//!   100 simulated container instances (registered through the agent
//!   protocol; they acknowledge nothing, so every task stays placed), RunTask
//!   p50/p99 with 100 and with 10,000 tasks not STOPPED in the cluster. Each
//!   measured task is stopped again (StopTask, then its agent reports
//!   STOPPED) outside the timed call, so the live count stays put;
//! - in process, on the same ECS and agent-protocol services the binary
//!   runs (over `MemoryStore`), counting the task records each call decodes
//!   (`berth_ecs::decoded`, per thread): 1,000 agents with 10 tasks each
//!   (10,000 in the cluster), every agent polls once; and RunTask's own
//!   decodes at that size.
//!
//! The "before" figures are what the code before the instance index did:
//! every PollTasks and every RunTask decoded every task of the cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_client::{Credentials, ServerClient};
use berth_ecs::agent_api::{agent_credential, agent_principal, RegistrationToken};
use berth_ecs::{decoded, AgentService, EcsService, Presence, TaskRecord};
use berth_model::agent_protocol::{
    PollTasksRequest, PollTasksResponse, RegisterAgentRequest, RegisterAgentResponse,
    SubmitTaskStateRequest, SubmitTaskStateResponse,
};
use berth_model::authz::{Access, DenialStyle};
use berth_model::shapes::ecs::{Attribute, Resource, VersionInfo};
use berth_model::{JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{MemoryStore, Store};
use clap::Parser;
use serde_json::{json, Value};

const ECS: &str = "AmazonEC2ContainerServiceV20141113";
const AGENT: &str = "BerthAgentV1";
const TIMEOUT: Duration = Duration::from_secs(60);
const REGION: &str = "us-east-1";
const IN_PROCESS_TOKEN: &str = "scale-poll-in-process-token";

#[derive(Parser)]
struct Args {
    /// A running `berth up --no-agent`; without it only the in-process part runs.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret_access_key: Option<String>,
    /// The server's agent registration token.
    #[arg(long, env = "BERTH_AGENT_TOKEN", hide_env_values = true)]
    registration_token: Option<String>,
    /// Container instances of the HTTP part.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Task counts to time RunTask at (tasks not STOPPED in the cluster).
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    sizes: Vec<usize>,
    /// Timed RunTask calls per size.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Agents of the in-process part.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Tasks per agent in the in-process part.
    #[arg(long, default_value_t = 10)]
    tasks_per_agent: usize,
    /// Every simulated agent of the HTTP part keeps a long poll open, as a
    /// real agent does, for the whole run (one connection each).
    #[arg(long)]
    hold_polls: bool,
    /// The server's process id, to report its memory at each size.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Concurrent calls while registering agents and filling the cluster.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Skip the in-process part.
    #[arg(long)]
    http_only: bool,
}

/// A process's resident and peak resident memory in MiB, from /proc.
fn memory_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Figures of one cluster size over HTTP.
struct SizeFigures {
    size: usize,
    run_p50: f64,
    run_p99: f64,
    poll_p50: f64,
    poll_p99: f64,
    memory: Option<(f64, f64)>,
}

fn integer(name: &str, v: i32) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(v),
        ..Resource::default()
    }
}

/// What a real agent advertises, so task definitions place as they would.
fn capabilities() -> Vec<Attribute> {
    (17..=41)
        .map(|v| Attribute {
            name: Some(format!(
                "com.amazonaws.ecs.capability.docker-remote-api.1.{v}"
            )),
            ..Attribute::default()
        })
        .collect()
}

fn registration(name: String, token: &str) -> RegisterAgentRequest {
    RegisterAgentRequest {
        cluster: "scale".into(),
        name,
        total_resources: vec![integer("CPU", 10_000_000), integer("MEMORY", 10_000_000)],
        attributes: capabilities(),
        version_info: VersionInfo::default(),
        registration_token: token.to_string(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- over HTTP -----------------------------------------------------------------

#[derive(Clone)]
struct Remote {
    client: ServerClient,
    root: Credentials,
    /// Each instance's ARN and agent credential.
    agents: Arc<Vec<(String, Credentials)>>,
}

/// Long polls the held agents completed, and those that failed.
#[derive(Default)]
struct PollCounters {
    completed: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl Remote {
    /// Keeps one long poll open per agent until `stop` turns true, as real
    /// agents do (each resumes from the revision it last saw).
    fn hold_polls(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
        counters: Arc<PollCounters>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        use std::sync::atomic::Ordering;
        (0..self.agents.len())
            .map(|i| {
                let remote = self.clone();
                let mut stop = stop.clone();
                let counters = counters.clone();
                tokio::spawn(async move {
                    let mut since = 0;
                    loop {
                        let creds = &remote.agents[i].1;
                        let request = PollTasksRequest {
                            since_revision: since,
                            wait_seconds: 20,
                        };
                        let poll = remote.client.call::<_, PollTasksResponse>(
                            creds,
                            AGENT,
                            "PollTasks",
                            &request,
                            TIMEOUT,
                        );
                        tokio::select! {
                            _ = stop.changed() => return,
                            answer = poll => match answer {
                                Ok(answer) => {
                                    since = answer.revision;
                                    counters.completed.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => {
                                    counters.failed.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                }
                            },
                        }
                        if *stop.borrow() {
                            return;
                        }
                    }
                })
            })
            .collect()
    }

    /// One poll that does not wait, timed: what an agent's poll costs.
    async fn timed_poll(&self, i: usize) -> anyhow::Result<f64> {
        let request = PollTasksRequest {
            since_revision: 0,
            wait_seconds: 0,
        };
        let started = Instant::now();
        let _: PollTasksResponse = self
            .client
            .call(&self.agents[i].1, AGENT, "PollTasks", &request, TIMEOUT)
            .await?;
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    }

    async fn ecs(&self, op: &str, body: Value) -> anyhow::Result<Value> {
        self.client
            .call(&self.root, ECS, op, &body, TIMEOUT)
            .await
            .with_context(|| format!("{op} failed"))
    }

    /// Every agent polls once (without waiting), so all count as connected.
    async fn touch(&self) -> anyhow::Result<()> {
        for (_, creds) in self.agents.iter() {
            let request = PollTasksRequest {
                since_revision: 0,
                wait_seconds: 0,
            };
            let _: PollTasksResponse = self
                .client
                .call(creds, AGENT, "PollTasks", &request, TIMEOUT)
                .await?;
        }
        Ok(())
    }

    async fn run(&self, count: usize) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .ecs(
                "RunTask",
                json!({"cluster": "scale", "taskDefinition": "scale", "count": count}),
            )
            .await?;
        if out["failures"].as_array().is_some_and(|f| !f.is_empty()) {
            bail!("RunTask failed to place: {}", out["failures"]);
        }
        Ok(out["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["taskArn"].as_str().unwrap_or_default().to_string(),
                    t["containerInstanceArn"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect())
    }

    /// Stops a task and has its agent report it STOPPED.
    async fn stop(&self, task_arn: &str, instance_arn: &str) -> anyhow::Result<()> {
        self.ecs("StopTask", json!({"cluster": "scale", "task": task_arn}))
            .await?;
        let Some((_, creds)) = self.agents.iter().find(|(arn, _)| arn == instance_arn) else {
            bail!("no agent for {instance_arn}");
        };
        let report = SubmitTaskStateRequest {
            task_arn: task_arn.to_string(),
            last_status: "STOPPED".into(),
            ..SubmitTaskStateRequest::default()
        };
        let _: SubmitTaskStateResponse = self
            .client
            .call(creds, AGENT, "SubmitTaskState", &report, TIMEOUT)
            .await?;
        Ok(())
    }
}

async fn over_http(args: &Args, endpoint: &str) -> anyhow::Result<Vec<SizeFigures>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (Some(key), Some(secret), Some(token)) = (
        args.access_key_id.clone(),
        args.secret_access_key.clone(),
        args.registration_token.clone(),
    ) else {
        bail!("--endpoint needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and BERTH_AGENT_TOKEN");
    };
    let client = ServerClient::new(endpoint, REGION)?;
    let root = Credentials {
        access_key_id: key,
        secret_access_key: secret,
    };
    let mut remote = Remote {
        client: client.clone(),
        root: root.clone(),
        agents: Arc::new(Vec::new()),
    };
    remote
        .ecs("CreateCluster", json!({"clusterName": "scale"}))
        .await?;
    // Register the agents, `concurrency` at a time.
    let registered = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, root, token, next) =
            (client.clone(), root.clone(), token.clone(), next.clone());
        let total = args.instances;
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(mine);
                }
                let answer: RegisterAgentResponse = client
                    .call(
                        &root,
                        AGENT,
                        "RegisterAgent",
                        &registration(format!("scale-{i}"), &token),
                        TIMEOUT,
                    )
                    .await?;
                mine.push((
                    answer.container_instance_arn,
                    Credentials {
                        access_key_id: answer.access_key_id,
                        secret_access_key: answer.secret_access_key,
                    },
                ));
            }
        });
    }
    let mut agents = Vec::with_capacity(args.instances);
    while let Some(done) = workers.join_next().await {
        agents.extend(done??);
    }
    remote.agents = Arc::new(agents);
    eprintln!(
        "  {} agents registered in {:.1} s",
        remote.agents.len(),
        registered.elapsed().as_secs_f64()
    );
    let (stop_polls, stop) = tokio::sync::watch::channel(false);
    let counters = Arc::new(PollCounters::default());
    let held = if args.hold_polls {
        let handles = remote.hold_polls(stop, counters.clone());
        // Every agent's first poll answers at once; wait for them.
        let deadline = Instant::now() + Duration::from_secs(600);
        while counters.completed.load(Ordering::Relaxed) < remote.agents.len() as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "  {} agents hold a long poll open ({} failed polls so far)",
            remote.agents.len(),
            counters.failed.load(Ordering::Relaxed)
        );
        handles
    } else {
        Vec::new()
    };
    remote
        .ecs(
            "RegisterTaskDefinition",
            json!({"family": "scale",
                "containerDefinitions": [{"name": "app", "image": "busybox", "cpu": 1, "memory": 6}]}),
        )
        .await?;
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    let placed = Arc::new(AtomicUsize::new(0));
    let mut figures = Vec::new();
    for size in sizes {
        let fill = Instant::now();
        let mut fillers = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency.max(1) {
            let (remote, placed) = (remote.clone(), placed.clone());
            fillers.spawn(async move {
                loop {
                    // Claim up to ten tasks of what is left.
                    let claimed = placed
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                            (p < size).then(|| p + (size - p).min(10))
                        })
                        .map_err(|_| ());
                    let Ok(before) = claimed else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let n = (size - before).min(10);
                    let got = remote.run(n).await?.len();
                    if got != n {
                        bail!("RunTask placed {got} of {n}");
                    }
                }
            });
        }
        let mut last_touch = Instant::now();
        while let Some(done) = fillers.join_next().await {
            done??;
            if !args.hold_polls && last_touch.elapsed() > Duration::from_secs(20) {
                remote.touch().await?;
                last_touch = Instant::now();
            }
        }
        eprintln!(
            "  cluster filled to {size} tasks in {:.1} s",
            fill.elapsed().as_secs_f64()
        );
        if !args.hold_polls {
            remote.touch().await?;
        }
        let mut times = Vec::with_capacity(args.samples);
        let mut polls = Vec::with_capacity(args.samples);
        let mut last_touch = Instant::now();
        for sample in 0..args.samples {
            let started = Instant::now();
            let tasks = remote.run(1).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            for (task, instance) in &tasks {
                remote.stop(task, instance).await?;
            }
            // Spread the timed polls over the agents.
            let agent = (sample * 7919) % remote.agents.len().max(1);
            polls.push(remote.timed_poll(agent).await?);
            if !args.hold_polls && last_touch.elapsed() > Duration::from_secs(20) {
                remote.touch().await?;
                last_touch = Instant::now();
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        polls.sort_by(|a, b| a.total_cmp(b));
        figures.push(SizeFigures {
            size,
            run_p50: percentile(&times, 50.0),
            run_p99: percentile(&times, 99.0),
            poll_p50: percentile(&polls, 50.0),
            poll_p99: percentile(&polls, 99.0),
            memory: args.server_pid.and_then(memory_of),
        });
    }
    let _ = stop_polls.send(true);
    for handle in held {
        let _ = handle.await;
    }
    if args.hold_polls {
        println!(
            "long polls held by {} agents: {} completed, {} failed",
            remote.agents.len(),
            counters.completed.load(Ordering::Relaxed),
            counters.failed.load(Ordering::Relaxed)
        );
    }
    Ok(figures)
}

// ---- in process -----------------------------------------------------------------

fn root() -> RequestContext {
    RequestContext::for_principal(
        Principal {
            kind: PrincipalKind::Root,
            arn: "arn:aws:iam::000000000000:root".into(),
            user_id: "000000000000".into(),
            account_id: "000000000000".into(),
            access_key_id: "AKIASCALEPOLLROOT000".into(),
        },
        REGION,
    )
}

async fn call<T: serde::de::DeserializeOwned>(
    service: &dyn JsonService,
    ctx: &RequestContext,
    op: &str,
    input: &impl serde::Serialize,
) -> anyhow::Result<T> {
    let body = serde_json::to_vec(input)?;
    let out = service
        .handle(ctx, op, &body)
        .await
        .map_err(|e| anyhow::anyhow!("{op}: {}: {}", e.code, e.message))?;
    Ok(serde_json::from_slice(&out)?)
}

struct InProcess {
    polls: usize,
    tasks: usize,
    decoded_per_poll_avg: f64,
    decoded_per_poll_max: u64,
    tasks_listed_per_poll: f64,
    run_task_decodes: u64,
    /// RunTask p50 and p99 in ms, on the store in memory (no HTTP, no disk).
    run_task_ms: (f64, f64),
}

async fn in_process(args: &Args) -> anyhow::Result<InProcess> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let presence = Arc::new(Presence::default());
    let (_shutdown, stopping) = tokio::sync::watch::channel(false);
    let ecs = EcsService::new(store.clone(), presence.clone());
    let agents_service = AgentService::new(store.clone(), presence.clone(), stopping)
        .with_registration_token(RegistrationToken::new(IN_PROCESS_TOKEN));
    let root = root();
    let _: Value = call(
        &ecs,
        &root,
        "CreateCluster",
        &json!({"clusterName": "scale"}),
    )
    .await?;
    let mut agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let answer: RegisterAgentResponse = call(
            &agents_service,
            &root,
            "RegisterAgent",
            &registration(format!("poll-{i}"), IN_PROCESS_TOKEN),
        )
        .await?;
        let credential = agent_credential(store.as_ref(), &answer.access_key_id)
            .context("the agent credential was not stored")?;
        agents.push(
            RequestContext::for_principal(
                agent_principal(&answer.access_key_id, &credential),
                REGION,
            )
            .with_access(Access::new(None, DenialStyle::Json, true)),
        );
    }
    let _: Value = call(
        &ecs,
        &root,
        "RegisterTaskDefinition",
        &json!({"family": "scale",
            "containerDefinitions": [{"name": "app", "image": "busybox", "cpu": 1, "memory": 6}]}),
    )
    .await?;
    // The default strategy spreads over instances: each gets its share.
    let total = args.agents * args.tasks_per_agent;
    let arns: Vec<String> = agents.iter().map(|a| a.principal.arn.clone()).collect();
    let mut placed = 0;
    let mut last_touch = Instant::now();
    while placed < total {
        if last_touch.elapsed() > Duration::from_secs(20) {
            // The agents are polling all along, as real ones would.
            for arn in &arns {
                presence.touch(arn);
            }
            last_touch = Instant::now();
        }
        let n = (total - placed).min(10);
        let out: Value = call(
            &ecs,
            &root,
            "RunTask",
            &json!({"cluster": "scale", "taskDefinition": "scale", "count": n}),
        )
        .await?;
        placed += out["tasks"].as_array().map(Vec::len).unwrap_or(0);
        if out["failures"].as_array().is_some_and(|f| !f.is_empty()) {
            bail!("in-process RunTask failed to place: {}", out["failures"]);
        }
    }
    // Every agent polls once; decodes are counted on this thread.
    let mut max = 0;
    let mut sum = 0;
    let mut listed = 0;
    for agent in &agents {
        let before = decoded::of::<TaskRecord>();
        let answer: PollTasksResponse = call(
            &agents_service,
            agent,
            "PollTasks",
            &PollTasksRequest {
                since_revision: 0,
                wait_seconds: 0,
            },
        )
        .await?;
        let n = decoded::of::<TaskRecord>() - before;
        max = max.max(n);
        sum += n;
        listed += answer.tasks.len();
    }
    let before = decoded::of::<TaskRecord>();
    let _: Value = call(
        &ecs,
        &root,
        "RunTask",
        &json!({"cluster": "scale", "taskDefinition": "scale"}),
    )
    .await?;
    let run_task_decodes = decoded::of::<TaskRecord>() - before;
    // RunTask timed at this size; each task is stopped again (its agent
    // reports STOPPED) outside the timed call, so the size holds.
    let mut times = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let started = Instant::now();
        let out: Value = call(
            &ecs,
            &root,
            "RunTask",
            &json!({"cluster": "scale", "taskDefinition": "scale"}),
        )
        .await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        for task in out["tasks"].as_array().into_iter().flatten() {
            let arn = task["taskArn"].as_str().unwrap_or_default();
            let instance = task["containerInstanceArn"].as_str().unwrap_or_default();
            let _: Value = call(
                &ecs,
                &root,
                "StopTask",
                &json!({"cluster": "scale", "task": arn}),
            )
            .await?;
            let Some(agent) = agents.iter().find(|a| a.principal.arn == instance) else {
                bail!("no agent for {instance}");
            };
            let _: SubmitTaskStateResponse = call(
                &agents_service,
                agent,
                "SubmitTaskState",
                &SubmitTaskStateRequest {
                    task_arn: arn.to_string(),
                    last_status: "STOPPED".into(),
                    ..SubmitTaskStateRequest::default()
                },
            )
            .await?;
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(InProcess {
        run_task_ms: (percentile(&times, 50.0), percentile(&times, 99.0)),
        polls: agents.len(),
        tasks: total,
        decoded_per_poll_avg: sum as f64 / agents.len().max(1) as f64,
        decoded_per_poll_max: max,
        tasks_listed_per_poll: listed as f64 / agents.len().max(1) as f64,
        run_task_decodes,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Held long polls need one socket each.
    berth_api::server::raise_fd_limit();
    // One thread: the decode counters are per thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = match &args.endpoint {
            Some(endpoint) => Some(over_http(&args, endpoint).await?),
            None => None,
        };
        if let Some(figures) = &http {
            for f in figures {
                println!(
                    "{} instances, {} tasks not STOPPED: RunTask p50 {:.2} ms, p99 {:.2} ms; \
                     PollTasks p50 {:.2} ms, p99 {:.2} ms{}",
                    args.instances,
                    f.size,
                    f.run_p50,
                    f.run_p99,
                    f.poll_p50,
                    f.poll_p99,
                    f.memory
                        .map(|(rss, peak)| format!("; server RSS {rss:.0} MiB (peak {peak:.0} MiB)"))
                        .unwrap_or_default()
                );
            }
            if let (Some(first), Some(last)) = (figures.first(), figures.last()) {
                println!(
                    "RunTask p50 ratio {} / {} tasks: {:.2}x (goal: within 1.5x); PollTasks p50 ratio {:.2}x",
                    last.size,
                    first.size,
                    last.run_p50 / first.run_p50,
                    last.poll_p50 / first.poll_p50
                );
            }
        }
        if args.http_only {
            return Ok(());
        }
        let local = in_process(&args).await?;
        println!(
            "PollTasks in process, {} agents, {} tasks: {:.1} task records decoded per poll (max {}), {:.1} tasks listed per poll (before: {} per poll)",
            local.polls,
            local.tasks,
            local.decoded_per_poll_avg,
            local.decoded_per_poll_max,
            local.tasks_listed_per_poll,
            local.tasks
        );
        println!(
            "RunTask in process at {} tasks: {} task records decoded (before: {}); p50 {:.2} ms, p99 {:.2} ms",
            local.tasks,
            local.run_task_decodes,
            local.tasks,
            local.run_task_ms.0,
            local.run_task_ms.1
        );
        Ok(())
    })
}
