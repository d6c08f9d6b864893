//! Service convergence with simulated agents: registers agents through the
//! agent protocol that report every task RUNNING at once (no containers), so
//! the figures measure Berth's control plane (API, store, service
//! controller, placement, agent protocol), not Docker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_client::{Credentials, Get, ServerClient};
use berth_model::agent_protocol::{
    ContainerReport, PollTasksRequest, PollTasksResponse, RegisterAgentRequest,
    RegisterAgentResponse, SubmitTaskStateRequest, SubmitTaskStateResponse,
};
use berth_model::shapes::ecs::{Attribute, Resource, VersionInfo};
use clap::Parser;
use serde_json::{json, Value};

const ECS: &str = "AmazonEC2ContainerServiceV20141113";
const AGENT: &str = "BerthAgentV1";
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
struct Args {
    #[arg(long)]
    endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret_access_key: String,
    /// The server's agent registration token.
    #[arg(long, env = "BERTH_AGENT_TOKEN", hide_env_values = true)]
    registration_token: String,
    /// The berth server's pid, to read its CPU time.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10)]
    agents: usize,
    #[arg(long, default_value_t = 100)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    tasks: usize,
    /// Services in the second phase (each with one task), to time passes.
    #[arg(long, default_value_t = 1000)]
    total_services: usize,
}

fn integer(name: &str, v: i32) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(v),
        ..Resource::default()
    }
}

/// One simulated agent: acknowledges every task state change at once.
async fn simulated_agent(client: ServerClient, creds: Credentials) {
    let mut since = 0;
    loop {
        let request = PollTasksRequest {
            since_revision: since,
            wait_seconds: if since == 0 { 0 } else { 20 },
        };
        let answer: PollTasksResponse = match client
            .call(
                &creds,
                AGENT,
                "PollTasks",
                &request,
                Duration::from_secs(40),
            )
            .await
        {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        since = answer.revision;
        for task in answer.tasks {
            let target = match (task.desired_status.as_str(), task.last_status.as_str()) {
                ("RUNNING", "PROVISIONING" | "PENDING") => "RUNNING",
                ("STOPPED", last) if last != "STOPPED" => "STOPPED",
                _ => continue,
            };
            let containers = task
                .task_definition
                .container_definitions
                .iter()
                .flatten()
                .map(|c| ContainerReport {
                    name: c.name.clone().unwrap_or_default(),
                    last_status: target.into(),
                    exit_code: (target == "STOPPED").then_some(0),
                    health_status: "UNKNOWN".into(),
                    ..ContainerReport::default()
                })
                .collect();
            let report = SubmitTaskStateRequest {
                task_arn: task.task_arn.clone(),
                last_status: target.into(),
                containers,
                started_at: Some(0.0).filter(|_| target == "RUNNING"),
                ..SubmitTaskStateRequest::default()
            };
            let _: Result<SubmitTaskStateResponse, _> = client
                .call(&creds, AGENT, "SubmitTaskState", &report, TIMEOUT)
                .await;
        }
    }
}

async fn ecs(
    client: &ServerClient,
    creds: &Credentials,
    op: &str,
    body: Value,
) -> anyhow::Result<Value> {
    client
        .call(creds, ECS, op, &body, TIMEOUT)
        .await
        .with_context(|| format!("{op} failed"))
}

/// Waits until every named service is steady with `tasks` running.
async fn wait_steady(
    client: &ServerClient,
    creds: &Credentials,
    names: &[String],
    tasks: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<String> = names.to_vec();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            let sample = ecs(
                client,
                creds,
                "DescribeServices",
                json!({"cluster": "bench", "services": [pending[0]]}),
            )
            .await?;
            bail!(
                "{} services did not converge; e.g. {}",
                pending.len(),
                sample
            );
        }
        let mut still = Vec::new();
        for chunk in pending.chunks(10) {
            let out = ecs(
                client,
                creds,
                "DescribeServices",
                json!({"cluster": "bench", "services": chunk}),
            )
            .await?;
            for s in out["services"].as_array().into_iter().flatten() {
                let deployments = s["deployments"].as_array().cloned().unwrap_or_default();
                let ok = deployments.len() == 1
                    && deployments[0]["rolloutState"] == "COMPLETED"
                    && s["runningCount"].as_u64() == Some(tasks as u64);
                if !ok {
                    still.push(s["serviceName"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat (1-based).
    Ok(fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0))
}

/// `GET /_berth/controllers`, signed with the root keys (it is an
/// authorized endpoint, like every call).
async fn controller_stats(client: &ServerClient, creds: &Credentials) -> anyhow::Result<Value> {
    let get = Get::new("/_berth/controllers", "ecs");
    Ok(client.get(creds, get, TIMEOUT).await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = ServerClient::new(&args.endpoint, "us-east-1")?;
    let root = Credentials {
        access_key_id: args.access_key_id.clone(),
        secret_access_key: args.secret_access_key.clone(),
    };
    ecs(
        &client,
        &root,
        "CreateCluster",
        json!({"clusterName": "bench"}),
    )
    .await?;
    for i in 0..args.agents {
        let request = RegisterAgentRequest {
            cluster: "bench".into(),
            name: format!("sim-{i}"),
            total_resources: vec![integer("CPU", 1_000_000), integer("MEMORY", 10_000_000)],
            // What a real agent advertises, so task definitions place as they would.
            attributes: (17..=41)
                .map(|v| Attribute {
                    name: Some(format!(
                        "com.amazonaws.ecs.capability.docker-remote-api.1.{v}"
                    )),
                    ..Attribute::default()
                })
                .collect(),
            version_info: VersionInfo::default(),
            registration_token: args.registration_token.clone(),
        };
        let answer: RegisterAgentResponse = client
            .call(&root, AGENT, "RegisterAgent", &request, TIMEOUT)
            .await?;
        let creds = Credentials {
            access_key_id: answer.access_key_id,
            secret_access_key: answer.secret_access_key,
        };
        tokio::spawn(simulated_agent(client.clone(), creds));
    }
    ecs(
        &client,
        &root,
        "RegisterTaskDefinition",
        json!({
            "family": "bench-svc",
            "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 16}]
        }),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let names: Vec<String> = (0..args.services).map(|i| format!("svc-{i}")).collect();
    for name in &names {
        ecs(&client, &root, "CreateService", json!({
            "cluster": "bench", "serviceName": name, "taskDefinition": "bench-svc", "desiredCount": args.tasks
        })).await?;
    }
    let created = started.elapsed();
    wait_steady(&client, &root, &names, args.tasks).await?;
    let converged = started.elapsed();
    println!(
        "converge {} services x {} tasks ({} simulated agents): {:.2} s (creating took {:.2} s)",
        args.services,
        args.tasks,
        args.agents,
        converged.as_secs_f64(),
        created.as_secs_f64()
    );

    let extra: Vec<String> = (args.services..args.total_services)
        .map(|i| format!("svc-{i}"))
        .collect();
    let phase2 = Instant::now();
    for name in &extra {
        ecs(&client, &root, "CreateService", json!({
            "cluster": "bench", "serviceName": name, "taskDefinition": "bench-svc", "desiredCount": 1
        })).await?;
    }
    wait_steady(&client, &root, &extra, 1).await?;
    println!(
        "converge {} more services x 1 task: {:.2} s",
        extra.len(),
        phase2.elapsed().as_secs_f64()
    );
    // Idle passes at the full service count: CPU per pass from the process's
    // CPU time over a window, and the controller's own timing of its last pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_stats = controller_stats(&client, &root).await?;
    let before_cpu = cpu_ticks(args.pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_cpu = cpu_ticks(args.pid)?;
    let after_stats = controller_stats(&client, &root).await?;
    let passes = after_stats["services"]["passes"].as_u64().unwrap_or(0)
        - before_stats["services"]["passes"].as_u64().unwrap_or(0);
    let ticks_per_sec = 100.0;
    let cpu_ms = (after_cpu - before_cpu) as f64 * 1000.0 / ticks_per_sec;
    let mut summary: HashMap<&str, Value> = HashMap::new();
    summary.insert("services", after_stats["services"]["services"].clone());
    println!(
        "idle reconcile at {} services: {} passes in 10 s, last pass {:.2} ms, server CPU {:.2} ms per pass (whole process)",
        summary["services"],
        passes,
        after_stats["services"]["lastPassMicros"].as_f64().unwrap_or(0.0) / 1000.0,
        if passes > 0 { cpu_ms / passes as f64 } else { f64::NAN }
    );
    Ok(())
}
