//! awsvpc plumbing against the real Docker daemon: a subnet network, a
//! pause container at a fixed address and MAC, security groups applied
//! with nftables inside its namespace, and the task's containers sharing
//! it; plus a task-level memory limit through the task cgroup. Needs root,
//! Docker, `nsenter` and `nft`; it fails, never skips, without them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_agent::cgroups::{self, TaskCgroup, TaskSize};
use berth_agent::netpolicy;
use berth_agent::spec::{self, EndpointEnv};
use berth_model::agent_protocol::{
    AssignedTask, GetNetworkPolicyResponse, NetworkRule, TaskNetworkInterface,
};
use berth_model::shapes::ecs::{ContainerDefinition, TaskDefinition};
use berth_runtime::{
    build_busybox_image, pause, ContainerSpec, ContainerStatus, DockerRuntime, Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMAGE: &str = "berth-test/busybox:latest";

/// Removes what a test created, also when it fails half way.
struct Cleanup {
    containers: Vec<String>,
    network: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Drop cannot await; the CLI does the same job synchronously.
        for id in self.containers.iter().rev() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", id])
                .output();
        }
        if let Some(network) = &self.network {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", network])
                .output();
        }
    }
}

fn task(id: &str, network_mode: &str) -> AssignedTask {
    AssignedTask {
        task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/default/{id}"),
        cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/default".into(),
        desired_status: "RUNNING".into(),
        last_status: "PENDING".into(),
        task_definition: TaskDefinition {
            family: Some("awsvpc-test".into()),
            revision: Some(1),
            network_mode: Some(network_mode.into()),
            ..TaskDefinition::default()
        },
        ..AssignedTask::default()
    }
}

fn app(task: &AssignedTask, name: &str, script: &str) -> (ContainerDefinition, ContainerSpec) {
    let definition = ContainerDefinition {
        name: Some(name.into()),
        image: Some(IMAGE.into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..ContainerDefinition::default()
    };
    let spec = spec::container_spec(task, &definition, "itest", None, EndpointEnv::default());
    (definition, spec)
}

async fn setup() -> DockerRuntime {
    let runtime = DockerRuntime::connect()
        .await
        .expect("this test needs a running Docker daemon");
    build_busybox_image(&runtime, IMAGE)
        .await
        .expect("building the busybox test image");
    pause::ensure_pause_image(&runtime)
        .await
        .expect("loading the generated pause image");
    runtime
}

async fn create_and_start(
    runtime: &DockerRuntime,
    cleanup: &mut Cleanup,
    spec: &ContainerSpec,
) -> String {
    let _ = runtime.remove(&spec.name).await;
    let id = runtime.create(spec).await.expect("create");
    cleanup.containers.push(id.clone());
    runtime.start(&id).await.expect("start");
    id
}

/// One HTTP/1.0 GET. `Err(true)` when the connection attempt timed out
/// (the packets were dropped), `Err(false)` for any other failure.
async fn http_get(ip: &str, port: u16) -> Result<String, bool> {
    let connect =
        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect((ip, port))).await;
    let mut stream = match connect {
        Err(_) => return Err(true),
        Ok(Err(_)) => return Err(false),
        Ok(Ok(s)) => s,
    };
    let exchange = async {
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: task\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        Some(String::from_utf8_lossy(&response).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), exchange).await {
        Ok(Some(r)) if r.starts_with("HTTP/1.") => Ok(r),
        _ => Err(false),
    }
}

/// Waits (bounded) for a one-shot container to exit; returns its output.
async fn wait_exit(runtime: &DockerRuntime, id: &str, limit: Duration) -> (Option<i64>, String) {
    let deadline = Instant::now() + limit;
    loop {
        let state = runtime.inspect(id).await.expect("inspect").expect("exists");
        if state.status == ContainerStatus::Exited || Instant::now() > deadline {
            let logs = runtime.logs_tail(id, 50).await.unwrap_or_default();
            return (state.exit_code, logs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tcp(port: i32) -> NetworkRule {
    NetworkRule {
        protocol: "tcp".into(),
        from_port: Some(port),
        to_port: Some(port),
        cidrs: vec!["0.0.0.0/0".into()],
    }
}

#[tokio::test]
async fn awsvpc_namespace_enforces_security_groups() {
    let runtime = setup().await;
    let suffix = std::process::id();
    let task = task(&format!("vpc{suffix}"), "awsvpc");
    let host = 10 + (suffix % 200);
    let eni = TaskNetworkInterface {
        eni_id: "eni-test".into(),
        subnet_id: format!("subnet-t{suffix}"),
        subnet_cidr: "10.251.0.0/24".into(),
        gateway: "10.251.0.1".into(),
        private_ip: format!("10.251.0.{host}"),
        mac: format!("02:42:0a:fb:00:{host:02x}"),
    };
    let network = spec::subnet_network(&eni);
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: Some(network.name.clone()),
    };
    let network_id = runtime
        .ensure_network(&network)
        .await
        .expect("create the subnet network");
    // Present already: the same network is reused.
    assert_eq!(
        runtime.ensure_network(&network).await.expect("reuse"),
        network_id
    );

    let pause_spec = spec::pause_spec(&task, &eni, "itest", None);
    let pause_id = create_and_start(&runtime, &mut cleanup, &pause_spec).await;
    let pause = runtime.inspect(&pause_id).await.unwrap().unwrap();
    assert_eq!(pause.status, ContainerStatus::Running);
    assert_eq!(pause.ip_address.as_deref(), Some(eni.private_ip.as_str()));
    let pid = pause.pid.expect("a running pause container has a PID");
    let raw = runtime
        .client()
        .inspect_container(&pause_id, None)
        .await
        .unwrap();
    let mac = raw
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&network.name).cloned())
        .and_then(|e| e.mac_address);
    assert_eq!(mac.as_deref(), Some(eni.mac.as_str()));

    // Security groups: tcp 80 only in, anything out.
    let mut policy = GetNetworkPolicyResponse {
        ingress: vec![tcp(80)],
        egress: vec![NetworkRule {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            cidrs: vec!["0.0.0.0/0".into()],
        }],
    };
    let (script, warnings) = netpolicy::render_ruleset(&policy);
    assert!(warnings.is_empty());
    netpolicy::apply(pid, &script)
        .await
        .expect("applying the ruleset with nft");

    let serve = |port: u16| {
        format!("mkdir -p /www && echo served-{port} > /www/index.html && exec httpd -f -p {port} -h /www")
    };
    for (name, port) in [("web", 80u16), ("other", 81u16)] {
        let (definition, mut spec) = app(&task, name, &serve(port));
        spec::join_task_network(&mut spec, &definition, &pause_id);
        assert!(spec.ports.is_empty());
        create_and_start(&runtime, &mut cleanup, &spec).await;
    }

    // Port 80 answers from the host at the task's own address.
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match http_get(&eni.private_ip, 80).await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(timed_out) => panic!("port 80 never answered (timed out: {timed_out})"),
        }
    };
    assert!(response.contains("served-80"), "{response}");

    // Another container of the task reaches both over localhost (port 81
    // is listening: only the security group keeps the host out).
    let (definition, mut spec) = app(
        &task,
        "client",
        "wget -q -O - http://127.0.0.1:80/ && wget -q -O - http://127.0.0.1:81/",
    );
    spec::join_task_network(&mut spec, &definition, &pause_id);
    let client = create_and_start(&runtime, &mut cleanup, &spec).await;
    let (code, output) = wait_exit(&runtime, &client, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("served-80") && output.contains("served-81"),
        "{output}"
    );

    // Port 81 is dropped, not refused: the connection attempt times out.
    assert_eq!(http_get(&eni.private_ip, 81).await, Err(true));

    // A changed policy replaces the table atomically.
    policy.ingress.push(tcp(81));
    let (script, _) = netpolicy::render_ruleset(&policy);
    netpolicy::apply(pid, &script).await.expect("re-applying");
    let response = http_get(&eni.private_ip, 81)
        .await
        .expect("port 81 answers once allowed");
    assert!(response.contains("served-81"), "{response}");
}

#[tokio::test]
async fn task_cgroup_limits_memory_and_counts_oom_kills() {
    let runtime = setup().await;
    let info = runtime.info().await.expect("docker info");
    let suffix = std::process::id();
    let task = task(&format!("cg{suffix}"), "bridge");
    let cgroup = TaskCgroup::new(
        cgroups::Layout::from_info(&info),
        spec::task_id(&task.task_arn),
    );
    let size = TaskSize {
        cpu_units: Some(256),
        memory_mib: Some(32),
    };
    cgroup
        .create(size.limits())
        .await
        .expect("creating the task cgroup");
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: None,
    };
    // Holds far more than 32 MiB in one shell variable.
    let (_, mut spec) = app(
        &task,
        "hog",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    spec.cgroup_parent = Some(cgroup.parent());
    spec.labels.extend(BTreeMap::from([(
        "berth-agent-test".to_string(),
        "1".to_string(),
    )]));
    let id = create_and_start(&runtime, &mut cleanup, &spec).await;
    let (code, output) = wait_exit(&runtime, &id, Duration::from_secs(60)).await;
    assert!(!output.contains("survived"), "{output}");
    assert_eq!(code, Some(137), "{output}");
    // The agent's rule: Docker saw the OOM (cgroup v1 notifies the
    // container's cgroup when its parent hits the limit), or the task
    // cgroup counted a kill (cgroup v2 counts up the hierarchy).
    let state = runtime.inspect(&id).await.unwrap().unwrap();
    assert!(
        state.oom_killed || cgroup.oom_kills().unwrap_or(0) > 0,
        "no OOM seen: {state:?}"
    );
    drop(cleanup);
    // Docker removed the container's own cgroup; the task's goes now.
    let mut removed = Err(String::new());
    for _ in 0..20 {
        removed = cgroup.remove().await.map_err(|e| e.to_string());
        if removed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    removed.expect("removing the task cgroup");
}

/// A server stand-in for the runner: accepts reports, serves a policy the
/// test can change.
struct TestReporter {
    policy: std::sync::Mutex<GetNetworkPolicyResponse>,
    statuses: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl berth_agent::Reporter for TestReporter {
    async fn submit(
        &self,
        report: berth_model::agent_protocol::SubmitTaskStateRequest,
    ) -> Result<String, berth_agent::ClientError> {
        let mut statuses = self.statuses.lock().unwrap();
        if statuses.last() != Some(&report.last_status) {
            statuses.push(report.last_status.clone());
        }
        Ok("RUNNING".into())
    }
    async fn registry_auth(&self, _: &str) -> Option<berth_runtime::RegistryAuth> {
        None
    }
    async fn resolve_secrets(
        &self,
        _: &str,
    ) -> Result<berth_model::agent_protocol::ResolveSecretsResponse, berth_agent::ClientError> {
        Ok(Default::default())
    }
    async fn open_log_stream(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: bool,
    ) -> Result<Option<berth_model::agent_protocol::LogPosition>, berth_agent::ClientError> {
        Ok(None)
    }
    async fn put_task_logs(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: Vec<berth_model::agent_protocol::TaskLogEvent>,
    ) -> Result<Option<berth_model::agent_protocol::LogPosition>, berth_agent::ClientError> {
        Ok(None)
    }
    async fn task_role_credentials(
        &self,
        _: &str,
        _: &str,
    ) -> Result<berth_model::agent_protocol::GetTaskRoleCredentialsResponse, berth_agent::ClientError>
    {
        Err(berth_agent::ClientError::Api {
            status: 400,
            code: "ClientException".into(),
            message: "no roles here".into(),
        })
    }
    async fn network_policy(
        &self,
        _: &str,
    ) -> Result<GetNetworkPolicyResponse, berth_agent::ClientError> {
        Ok(self.policy.lock().unwrap().clone())
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The runner end to end: it waits for the interface, builds the
/// namespace, applies and then re-applies the security groups, sizes the
/// task's cgroup, and removes the pause container and cgroup on stop.
#[tokio::test]
async fn runner_runs_an_awsvpc_task() {
    use std::sync::Arc;

    use berth_agent::task_endpoint::{DockerInspector, TaskEndpoint};
    use berth_agent::task_runner::TaskRunner;
    use tokio::sync::{broadcast, watch};

    let runtime = Arc::new(setup().await);
    let suffix = std::process::id();
    let mut task = task(&format!("run{suffix}"), "awsvpc");
    task.task_definition.cpu = Some("256".into());
    task.task_definition.memory = Some("128".into());
    let serve = |port: u16| {
        format!("mkdir -p /www && echo served-{port} > /www/index.html && exec httpd -f -p {port} -h /www")
    };
    task.task_definition.container_definitions = Some(vec![
        ContainerDefinition {
            name: Some("web".into()),
            image: Some(IMAGE.into()),
            command: Some(vec!["sh".into(), "-c".into(), serve(80)]),
            // httpd as PID 1 ignores SIGTERM: do not wait the default 30 s.
            stop_timeout: Some(1),
            ..ContainerDefinition::default()
        },
        ContainerDefinition {
            name: Some("side".into()),
            image: Some(IMAGE.into()),
            command: Some(vec!["sh".into(), "-c".into(), serve(81)]),
            // httpd as PID 1 ignores SIGTERM: do not wait the default 30 s.
            stop_timeout: Some(1),
            ..ContainerDefinition::default()
        },
    ]);
    let host = 10 + ((suffix + 7) % 200);
    let eni = TaskNetworkInterface {
        eni_id: "eni-run".into(),
        subnet_id: format!("subnet-r{suffix}"),
        subnet_cidr: "10.250.0.0/24".into(),
        gateway: "10.250.0.1".into(),
        private_ip: format!("10.250.0.{host}"),
        mac: format!("02:42:0a:fa:00:{host:02x}"),
    };
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: Some(spec::subnet_network(&eni).name),
    };
    let reporter = Arc::new(TestReporter {
        policy: std::sync::Mutex::new(GetNetworkPolicyResponse {
            ingress: vec![tcp(80)],
            egress: vec![],
        }),
        statuses: std::sync::Mutex::new(Vec::new()),
    });
    let endpoint = Arc::new(TaskEndpoint::new(
        Arc::new(DockerInspector::default()),
        None,
    ));
    let runner = TaskRunner::new(
        runtime.clone(),
        reporter.clone(),
        "itest".into(),
        task.clone(),
        Vec::new(),
        endpoint,
    );
    let (tx, rx) = watch::channel(task.clone());
    let (_events, events_rx) = broadcast::channel(64);
    let handle = tokio::spawn(runner.run(rx, events_rx));

    let owned = || async {
        runtime
            .list_owned(spec::LABEL_TASK_ARN, Some(&task.task_arn))
            .await
            .expect("list")
    };
    // No interface yet: nothing is created.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(owned().await.is_empty());
    let mut attached = task.clone();
    attached.network_interface = Some(eni.clone());
    tx.send(attached.clone()).unwrap();

    eventually("the task to run", Duration::from_secs(60), || async {
        reporter.statuses.lock().unwrap().last().map(String::as_str) == Some("RUNNING")
    })
    .await;
    let containers = owned().await;
    cleanup
        .containers
        .extend(containers.iter().map(|c| c.id.clone()));
    assert_eq!(containers.len(), 3, "{containers:?}");
    let pause = containers
        .iter()
        .find(|c| c.image == pause::PAUSE_IMAGE)
        .expect("the pause container");
    let cgroup_parent = format!("/berth/run{suffix}");
    for c in &containers {
        let raw = runtime
            .client()
            .inspect_container(&c.id, None)
            .await
            .unwrap();
        let host_config = raw.host_config.unwrap_or_default();
        assert_eq!(
            host_config.cgroup_parent.as_deref(),
            Some(cgroup_parent.as_str())
        );
        if c.id != pause.id {
            assert_eq!(
                host_config.network_mode,
                Some(format!("container:{}", pause.id))
            );
        }
    }
    let info = runtime.info().await.unwrap();
    if info.cgroup_version == "1" && info.cgroup_driver == "cgroupfs" {
        let limit = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{cgroup_parent}/memory.limit_in_bytes"
        ))
        .unwrap();
        assert_eq!(limit.trim(), (128u64 * 1024 * 1024).to_string());
        let quota = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/cpu{cgroup_parent}/cpu.cfs_quota_us"
        ))
        .unwrap();
        assert_eq!(quota.trim(), "25000");
    }

    eventually("port 80 to answer", Duration::from_secs(20), || async {
        http_get(&eni.private_ip, 80).await.is_ok()
    })
    .await;
    assert_eq!(http_get(&eni.private_ip, 81).await, Err(true));
    // The server's answer changes: the runner re-applies it.
    reporter.policy.lock().unwrap().ingress.push(tcp(81));
    eventually("port 81 to be allowed", Duration::from_secs(20), || async {
        http_get(&eni.private_ip, 81).await.is_ok()
    })
    .await;

    let mut stop = attached;
    stop.desired_status = "STOPPED".into();
    tx.send(stop).unwrap();
    tokio::time::timeout(Duration::from_secs(90), handle)
        .await
        .expect("the task stops in time")
        .expect("the runner ends cleanly");
    assert_eq!(
        reporter.statuses.lock().unwrap().last().map(String::as_str),
        Some("STOPPED")
    );
    let left = owned().await;
    assert!(
        left.iter().all(|c| c.id != pause.id),
        "the pause container is removed"
    );
    assert!(
        left.iter().all(|c| c.status == ContainerStatus::Exited),
        "{left:?}"
    );
    if info.cgroup_driver == "cgroupfs" {
        let memory = if info.cgroup_version == "1" {
            format!("/sys/fs/cgroup/memory{cgroup_parent}")
        } else {
            format!("/sys/fs/cgroup{cgroup_parent}")
        };
        assert!(
            !std::path::Path::new(&memory).exists(),
            "{memory} is removed"
        );
    }
}
