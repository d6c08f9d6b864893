//! awsvpc plumbing against the real Docker daemon: a pause container whose
//! namespace gets the interface's address and MAC from its VPC's router,
//! security groups applied with nftables inside it, and the task's
//! containers sharing it; subnets of one VPC routing to each other while
//! VPCs (even with the same block) stay apart, and what the agent created
//! collected once no task uses it; plus a task-level memory limit through
//! the task cgroup. Needs root, Docker, `ip`, `nsenter` and `nft`; it
//! fails, never skips, without them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_agent::cgroups::{self, TaskCgroup, TaskSize};
use berth_agent::netpolicy;
use berth_agent::spec::{self, EndpointEnv};
use berth_agent::vpcnet::{self, TaskNetworks, VpcNetworks};
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

/// Removes what a test created, also when it fails half way (the next
/// collection pass removes the routers its tasks used).
struct Cleanup {
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Drop cannot await; the CLI does the same job synchronously.
        for id in self.containers.iter().rev() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", id])
                .output();
        }
    }
}

/// An interface of subnet `subnet` (a /24) in VPC `vpc` (`block`), at
/// host number `host`.
fn interface(vpc: &str, block: &str, subnet: &str, host: u32) -> TaskNetworkInterface {
    let base = subnet.trim_end_matches(".0/24");
    TaskNetworkInterface {
        eni_id: format!("eni-{vpc}-{host}"),
        subnet_id: format!("subnet-{base}"),
        subnet_cidr: subnet.into(),
        gateway: format!("{base}.1"),
        private_ip: format!("{base}.{host}"),
        mac: format!("02:42:0a:{:02x}:00:{host:02x}", host % 200),
        vpc_id: vpc.into(),
        vpc_cidr: block.into(),
    }
}

/// Runs `command` in the network namespace of `pid`; its output.
fn in_namespace(pid: u32, command: &[&str]) -> String {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(command)
        .output()
        .expect("nsenter");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The host's routes (`ip route show`).
fn host_routes() -> String {
    let output = std::process::Command::new("ip")
        .args(["route", "show"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&output.stdout).into_owned()
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
    let runtime = Arc::new(setup().await);
    let networks = VpcNetworks::new(runtime.clone());
    let suffix = std::process::id();
    let task = task(&format!("vpc{suffix}"), "awsvpc");
    let host = 10 + (suffix % 200);
    let eni = interface(
        &format!("vpc-sg{suffix}"),
        "10.251.0.0/16",
        "10.251.0.0/24",
        host,
    );
    let mut cleanup = Cleanup {
        containers: Vec::new(),
    };

    let pause_spec = spec::pause_spec(&task, "itest", None);
    let pause_id = create_and_start(&runtime, &mut cleanup, &pause_spec).await;
    let pause = runtime.inspect(&pause_id).await.unwrap().unwrap();
    assert_eq!(pause.status, ContainerStatus::Running);
    // No Docker network: the agent plumbs the interface.
    assert_eq!(pause.ip_address, None);
    let pid = pause.pid.expect("a running pause container has a PID");
    networks
        .attach(spec::task_id(&task.task_arn), &eni, pid)
        .await
        .expect("plumbing the interface");
    // Attaching again changes nothing.
    networks
        .attach(spec::task_id(&task.task_arn), &eni, pid)
        .await
        .expect("plumbing the interface again");
    let link = in_namespace(pid, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        link.contains(&format!("inet {}/24", eni.private_ip)),
        "{link}"
    );
    let mac = in_namespace(pid, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(mac.contains(&format!("link/ether {}", eni.mac)), "{mac}");
    let routes = in_namespace(pid, &["ip", "route", "show"]);
    assert!(
        routes.contains("default via 10.251.0.1 dev eth0"),
        "{routes}"
    );

    // Security groups: tcp 80 only in, anything out.
    let mut policy = GetNetworkPolicyResponse {
        ingress: vec![tcp(80)],
        egress: vec![NetworkRule {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            cidrs: vec!["0.0.0.0/0".into()],
        }],
        ..Default::default()
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

    // Once the task is gone, so are its VPC's router and host route.
    let router = vpcnet::router_name(&format!("vpc-sg{suffix}"));
    assert!(runtime.inspect(&router).await.unwrap().is_some());
    assert!(host_routes().contains("10.251.0.0/24 via"));
    drop(cleanup);
    networks
        .detach(spec::task_id(&task.task_arn), &eni)
        .await
        .expect("detaching");
    assert!(runtime.inspect(&router).await.unwrap().is_none());
    assert!(!host_routes().contains("10.251.0.0/24 via"));
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

/// A task of the routing test: its pause container (with the interface
/// plumbed and `policy` applied) and, when `page` is given, an httpd
/// serving it on port 80.
async fn routed_task(
    runtime: &DockerRuntime,
    networks: &VpcNetworks,
    cleanup: &mut Cleanup,
    name: &str,
    eni: &TaskNetworkInterface,
    page: Option<&str>,
) -> String {
    let task = task(name, "awsvpc");
    let pause_id =
        create_and_start(runtime, cleanup, &spec::pause_spec(&task, "itest", None)).await;
    let pid = runtime
        .inspect(&pause_id)
        .await
        .unwrap()
        .unwrap()
        .pid
        .unwrap();
    networks
        .attach(spec::task_id(&task.task_arn), eni, pid)
        .await
        .expect("plumbing the interface");
    let policy = GetNetworkPolicyResponse {
        ingress: vec![tcp(80)],
        egress: vec![NetworkRule {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            cidrs: vec!["0.0.0.0/0".into()],
        }],
        ..Default::default()
    };
    netpolicy::apply(pid, &netpolicy::render_ruleset(&policy).0)
        .await
        .expect("applying the security groups");
    if let Some(page) = page {
        let script = format!(
            "mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 80 -h /www"
        );
        let (definition, mut spec) = app(&task, "web", &script);
        spec::join_task_network(&mut spec, &definition, &pause_id);
        create_and_start(runtime, cleanup, &spec).await;
    }
    pause_id
}

/// What a one-shot container in the namespace of `pause_id` gets from
/// `http://{ip}/` (or `FAILED`).
async fn fetch_from(
    runtime: &DockerRuntime,
    cleanup: &mut Cleanup,
    pause_id: &str,
    name: &str,
    ip: &str,
) -> String {
    let task = task(&format!("probe-{name}"), "awsvpc");
    let (definition, mut spec) = app(
        &task,
        name,
        &format!("timeout 5 wget -q -O - http://{ip}:80/ || echo FAILED"),
    );
    spec::join_task_network(&mut spec, &definition, pause_id);
    let id = create_and_start(runtime, cleanup, &spec).await;
    let (code, output) = wait_exit(runtime, &id, Duration::from_secs(20)).await;
    if code != Some(0) {
        return format!("exit {code:?}: {output}");
    }
    // A timed-out attempt adds the shell's "Terminated".
    match output.trim() {
        o if o.lines().any(|l| l == "FAILED") => "FAILED".into(),
        o => o.to_string(),
    }
}

/// Two subnets of VPC A reach each other; VPC B has the same block (and
/// the same addresses) and its own tasks reach each other, never A's; VPC
/// C's tasks are out of A's reach though the host reaches them; the host
/// reaches A (the first to claim the block), not B. Then everything goes.
#[tokio::test]
async fn subnets_of_a_vpc_route_to_each_other_and_vpcs_stay_apart() {
    let runtime = Arc::new(setup().await);
    let networks = VpcNetworks::new(runtime.clone());
    let suffix = std::process::id();
    let (vpc_a, vpc_b, vpc_c) = (
        format!("vpc-a{suffix}"),
        format!("vpc-b{suffix}"),
        format!("vpc-c{suffix}"),
    );
    let mut cleanup = Cleanup {
        containers: Vec::new(),
    };
    let a1 = interface(&vpc_a, "10.252.0.0/16", "10.252.0.0/24", 10);
    let a2 = interface(&vpc_a, "10.252.0.0/16", "10.252.1.0/24", 10);
    let b1 = interface(&vpc_b, "10.252.0.0/16", "10.252.0.0/24", 10);
    let b2 = interface(&vpc_b, "10.252.0.0/16", "10.252.2.0/24", 11);
    let c1 = interface(&vpc_c, "10.253.0.0/16", "10.253.0.0/24", 10);
    routed_task(
        &runtime,
        &networks,
        &mut cleanup,
        &format!("a1{suffix}"),
        &a1,
        Some("page-a1"),
    )
    .await;
    let a2_pause = routed_task(
        &runtime,
        &networks,
        &mut cleanup,
        &format!("a2{suffix}"),
        &a2,
        None,
    )
    .await;
    routed_task(
        &runtime,
        &networks,
        &mut cleanup,
        &format!("b1{suffix}"),
        &b1,
        Some("page-b1"),
    )
    .await;
    let b2_pause = routed_task(
        &runtime,
        &networks,
        &mut cleanup,
        &format!("b2{suffix}"),
        &b2,
        None,
    )
    .await;
    routed_task(
        &runtime,
        &networks,
        &mut cleanup,
        &format!("c1{suffix}"),
        &c1,
        Some("page-c1"),
    )
    .await;

    // The host reaches A (it claimed 10.252.0.0/24 first) and C.
    for (ip, page) in [("10.252.0.10", "page-a1"), ("10.253.0.10", "page-c1")] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match http_get(ip, 80).await {
                Ok(r) if r.contains(page) => break,
                other if Instant::now() > deadline => panic!("{ip}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    let routes = host_routes();
    assert_eq!(routes.matches("10.252.0.0/24 via").count(), 1, "{routes}");
    // A's other subnet reaches A1 through A's router.
    assert_eq!(
        fetch_from(&runtime, &mut cleanup, &a2_pause, "a2a1", "10.252.0.10").await,
        "page-a1"
    );
    // B's tasks reach B's address 10.252.0.10, which is B1, not A1.
    assert_eq!(
        fetch_from(&runtime, &mut cleanup, &b2_pause, "b2b1", "10.252.0.10").await,
        "page-b1"
    );
    // C is another VPC: out of A's reach, though the host reaches it.
    assert_eq!(
        fetch_from(&runtime, &mut cleanup, &a2_pause, "a2c1", "10.253.0.10").await,
        "FAILED"
    );
    // An address of A's block with nothing behind it on this host.
    assert_eq!(
        fetch_from(&runtime, &mut cleanup, &a2_pause, "a2void", "10.252.9.9").await,
        "FAILED"
    );

    // Everything goes once its tasks do.
    drop(cleanup);
    for (name, eni) in [
        ("a1", &a1),
        ("a2", &a2),
        ("b1", &b1),
        ("b2", &b2),
        ("c1", &c1),
    ] {
        networks
            .detach(&format!("{name}{suffix}"), eni)
            .await
            .expect("detaching");
    }
    let left = vpcnet::routers(runtime.as_ref()).await.unwrap();
    for vpc in [&vpc_a, &vpc_b, &vpc_c] {
        assert!(!left.contains(vpc.as_str()), "{vpc} left: {left:?}");
    }
    let routes = host_routes();
    assert!(
        !routes.contains("10.252.") && !routes.contains("10.253."),
        "{routes}"
    );
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

    use berth_agent::task_endpoint::TaskEndpoint;
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
    let vpc = format!("vpc-run{suffix}");
    let eni = interface(&vpc, "10.250.0.0/16", "10.250.0.0/24", host);
    let mut cleanup = Cleanup {
        containers: Vec::new(),
    };
    let reporter = Arc::new(TestReporter {
        policy: std::sync::Mutex::new(GetNetworkPolicyResponse {
            ingress: vec![tcp(80)],
            egress: vec![],
            ..Default::default()
        }),
        statuses: std::sync::Mutex::new(Vec::new()),
    });
    let endpoint = Arc::new(TaskEndpoint::new(runtime.clone(), None));
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
    // Removing the VPC's router by hand takes the task's interface with
    // it: the runner plumbs it again.
    runtime
        .remove(&vpcnet::router_name(&vpc))
        .await
        .expect("removing the router");
    assert!(http_get(&eni.private_ip, 80).await.is_err());
    eventually(
        "the interface to be plumbed again",
        Duration::from_secs(30),
        || async { http_get(&eni.private_ip, 80).await.is_ok() },
    )
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
    // With it its VPC's router and host route (no other task used them).
    assert!(runtime
        .inspect(&vpcnet::router_name(&vpc))
        .await
        .unwrap()
        .is_none());
    assert!(!host_routes().contains("10.250.0.0/24 via"));
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
