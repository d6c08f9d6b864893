//! The task endpoint against the real Docker daemon: containers on the
//! bridge reach `169.254.170.2`, get their task's credentials and metadata,
//! and another task's container is refused. Needs root (the endpoint adds
//! its address to `lo`) and Docker; it fails, never skips, without them.

use std::sync::Arc;
use std::time::Duration;

use berth_agent::spec::{self, EndpointEnv};
use berth_agent::task_endpoint::{ContainerView, RoleCredentials, TaskEndpoint, TaskView};
use berth_model::agent_protocol::AssignedTask;
use berth_model::shapes::ecs::{ContainerDefinition, TaskDefinition};
use berth_runtime::{build_busybox_image, DockerRuntime, Runtime};

const IMAGE: &str = "berth-test/busybox:latest";

fn task(id: &str) -> AssignedTask {
    AssignedTask {
        task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/default/{id}"),
        cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/default".into(),
        desired_status: "RUNNING".into(),
        last_status: "PENDING".into(),
        task_definition: TaskDefinition {
            family: Some("endpoint-test".into()),
            revision: Some(1),
            ..TaskDefinition::default()
        },
        ..AssignedTask::default()
    }
}

fn view(task: &AssignedTask, token: &str, docker_id: &str) -> TaskView {
    TaskView {
        task_arn: task.task_arn.clone(),
        cluster: "default".into(),
        family: "endpoint-test".into(),
        revision: "1".into(),
        desired_status: "RUNNING".into(),
        known_status: "RUNNING".into(),
        network_mode: "bridge".into(),
        interface: None,
        containers: vec![ContainerView {
            name: "app".into(),
            token: token.into(),
            docker_id: Some(docker_id.into()),
            docker_name: spec::docker_name(task, "app"),
            image: IMAGE.into(),
            ..ContainerView::default()
        }],
        ..TaskView::default()
    }
}

#[tokio::test]
async fn containers_get_their_own_task_credentials_only() {
    let runtime = DockerRuntime::connect()
        .await
        .expect("this test needs a running Docker daemon");
    build_busybox_image(&runtime, IMAGE)
        .await
        .expect("building the busybox test image");
    let endpoint = TaskEndpoint::start(Arc::new(runtime.clone()), None).await;
    endpoint
        .available()
        .expect("the task endpoint needs root to add 169.254.170.2 to lo and bind port 80");

    let suffix = std::process::id();
    let one = task(&format!("one{suffix}"));
    let two = task(&format!("two{suffix}"));
    let def = |script: &str| ContainerDefinition {
        name: Some("app".into()),
        image: Some(IMAGE.into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..ContainerDefinition::default()
    };
    // One reads its credentials and task metadata; two tries one's credentials.
    let script_one = "sleep 1; wget -q -O - http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; echo; wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/task; echo; sleep 30";
    let script_two = "sleep 1; wget -q -O - http://169.254.170.2/v2/credentials/cred-one-$SUFFIX || echo REFUSED; sleep 30";
    let mut spec_one = spec::container_spec(
        &one,
        &def(script_one),
        "i",
        None,
        EndpointEnv {
            credentials_id: Some(&format!("cred-one-{suffix}")),
            metadata_token: Some(&format!("tok-one-{suffix}")),
        },
    );
    let mut spec_two = spec::container_spec(
        &two,
        &def(script_two),
        "i",
        None,
        EndpointEnv {
            credentials_id: Some(&format!("cred-two-{suffix}")),
            metadata_token: Some(&format!("tok-two-{suffix}")),
        },
    );
    spec_two.env.push(("SUFFIX".into(), suffix.to_string()));
    spec_one
        .labels
        .insert("berth-agent-test".into(), "1".into());
    spec_two
        .labels
        .insert("berth-agent-test".into(), "1".into());
    let _ = runtime.remove(&spec_one.name).await;
    let _ = runtime.remove(&spec_two.name).await;
    let id_one = runtime.create(&spec_one).await.expect("create one");
    let id_two = runtime.create(&spec_two).await.expect("create two");
    // The addresses are not known yet: the endpoint looks them up.
    endpoint.update_task(view(&one, &format!("tok-one-{suffix}"), &id_one));
    endpoint.update_task(view(&two, &format!("tok-two-{suffix}"), &id_two));
    let credentials = |key: &str| RoleCredentials {
        role_arn: "arn:aws:iam::000000000000:role/app".into(),
        access_key_id: key.into(),
        secret_access_key: "secret".into(),
        token: "session".into(),
        expiration: 1_795_003_200,
    };
    assert!(endpoint.set_credentials(
        &one.task_arn,
        &format!("cred-one-{suffix}"),
        credentials("ASIAONE")
    ));
    assert!(endpoint.set_credentials(
        &two.task_arn,
        &format!("cred-two-{suffix}"),
        credentials("ASIATWO")
    ));
    runtime.start(&id_one).await.expect("start one");
    runtime.start(&id_two).await.expect("start two");

    let mut out_one = String::new();
    let mut out_two = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        out_one = runtime.logs_tail(&id_one, 100).await.unwrap_or_default();
        out_two = runtime.logs_tail(&id_two, 100).await.unwrap_or_default();
        if out_one.contains("\"Containers\"")
            && (out_two.contains("REFUSED") || out_two.contains("ASIA"))
        {
            break;
        }
    }
    let _ = runtime.remove(&id_one).await;
    let _ = runtime.remove(&id_two).await;
    assert!(out_one.contains("\"AccessKeyId\":\"ASIAONE\""), "{out_one}");
    assert!(
        out_one.contains("\"Expiration\":\"2026-11-18T12:00:00Z\""),
        "{out_one}"
    );
    assert!(
        out_one.contains(&format!("\"TaskARN\":\"{}\"", one.task_arn)),
        "{out_one}"
    );
    assert!(
        out_one.contains("\"IPv4Addresses\"") || out_one.contains("\"DockerId\""),
        "{out_one}"
    );
    assert!(out_two.contains("REFUSED"), "{out_two}");
    assert!(!out_two.contains("ASIAONE"), "{out_two}");
}

/// Output the container logged after its first `skip` bytes.
async fn logs_after(runtime: &DockerRuntime, id: &str, skip: usize) -> String {
    let all = runtime.logs_tail(id, 10_000).await.unwrap_or_default();
    all.get(skip..).unwrap_or_default().to_string()
}

/// Two agents of one host share one endpoint: the first serves it, the
/// second registers its task there; each task's containers get their own
/// role's credentials and not the other's. When the serving agent goes,
/// the second takes over and its task is served again. (The endpoint
/// listens on the Docker bridge's gateway here, so the test does not need
/// `169.254.170.2:80`, which an agent of this host may hold.)
#[tokio::test]
async fn two_agents_share_the_endpoint_and_the_survivor_takes_it_over() {
    use berth_agent::task_endpoint::SharingConfig;

    let runtime = DockerRuntime::connect()
        .await
        .expect("this test needs a running Docker daemon");
    build_busybox_image(&runtime, IMAGE)
        .await
        .expect("building the busybox test image");
    // The host's address on Docker's default bridge.
    let shown = std::process::Command::new("ip")
        .args(["-j", "-4", "addr", "show", "dev", "docker0"])
        .output()
        .expect("ip");
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("ip -j");
    let gateway: std::net::IpAddr = shown[0]["addr_info"][0]["local"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("docker0 has an IPv4 address");
    let port = std::net::TcpListener::bind((gateway, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let meeting = tempfile::tempdir().unwrap();
    let config = SharingConfig {
        dir: meeting.path().join("run"),
        listen: std::net::SocketAddr::new(gateway, port),
        add_address: false,
        dns_listen: None,
    };
    let first = TaskEndpoint::start_shared(config.clone(), Arc::new(runtime.clone()), None).await;
    let second = TaskEndpoint::start_shared(config.clone(), Arc::new(runtime.clone()), None).await;
    assert!(first.serving(), "{:?}", first.available());
    assert!(!second.serving());
    assert_eq!(second.available(), Ok(()));

    let suffix = std::process::id();
    let one = task(&format!("share1{suffix}"));
    let two = task(&format!("share2{suffix}"));
    // Each asks for its own credentials, then for the other task's.
    let script = |own: &str, other: &str| {
        format!(
            "while true; do wget -q -O - http://{gateway}:{port}/v2/credentials/{own} || echo OWN-REFUSED; echo; \
             wget -q -O - http://{gateway}:{port}/v2/credentials/{other} || echo OTHER-REFUSED; echo; sleep 0.5; done"
        )
    };
    let (cred_one, cred_two) = (format!("cred-s1-{suffix}"), format!("cred-s2-{suffix}"));
    let mut ids = Vec::new();
    for (task, own, other) in [(&one, &cred_one, &cred_two), (&two, &cred_two, &cred_one)] {
        let definition = ContainerDefinition {
            name: Some("app".into()),
            image: Some(IMAGE.into()),
            command: Some(vec!["sh".into(), "-c".into(), script(own, other)]),
            ..ContainerDefinition::default()
        };
        let mut spec = spec::container_spec(task, &definition, "i", None, EndpointEnv::default());
        spec.labels.insert("berth-agent-test".into(), "1".into());
        let _ = runtime.remove(&spec.name).await;
        ids.push(runtime.create(&spec).await.expect("create"));
    }
    let credentials = |key: &str| RoleCredentials {
        role_arn: "arn:aws:iam::000000000000:role/app".into(),
        access_key_id: key.into(),
        secret_access_key: "secret".into(),
        token: "session".into(),
        expiration: 1_795_003_200,
    };
    first.update_task(view(&one, "tok-s1", &ids[0]));
    assert!(first.set_credentials(&one.task_arn, &cred_one, credentials("ASIAFIRST")));
    second.update_task(view(&two, "tok-s2", &ids[1]));
    assert!(second.set_credentials(&two.task_arn, &cred_two, credentials("ASIASECOND")));
    for id in &ids {
        runtime.start(id).await.expect("start");
    }

    let wait_for = |id: String, skip: usize, wanted: &'static [&'static str]| {
        let runtime = &runtime;
        async move {
            let mut out = String::new();
            for _ in 0..80 {
                out = logs_after(runtime, &id, skip).await;
                if wanted.iter().all(|w| out.contains(w)) {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            out
        }
    };
    let out_one = wait_for(ids[0].clone(), 0, &["ASIAFIRST", "OTHER-REFUSED"]).await;
    let out_two = wait_for(ids[1].clone(), 0, &["ASIASECOND", "OTHER-REFUSED"]).await;
    let check = || {
        assert!(
            out_one.contains("\"AccessKeyId\":\"ASIAFIRST\""),
            "{out_one}"
        );
        assert!(
            out_one.contains("OTHER-REFUSED") && !out_one.contains("ASIASECOND"),
            "{out_one}"
        );
        assert!(
            out_two.contains("\"AccessKeyId\":\"ASIASECOND\""),
            "{out_two}"
        );
        assert!(
            out_two.contains("OTHER-REFUSED") && !out_two.contains("ASIAFIRST"),
            "{out_two}"
        );
    };
    if std::panic::catch_unwind(check).is_err() {
        for id in &ids {
            let _ = runtime.remove(id).await;
        }
        panic!("before the takeover: one: {out_one}\ntwo: {out_two}");
    }

    // The serving agent goes away; the second takes over.
    let seen_two = runtime
        .logs_tail(&ids[1], 10_000)
        .await
        .unwrap_or_default()
        .len();
    let seen_one = runtime
        .logs_tail(&ids[0], 10_000)
        .await
        .unwrap_or_default()
        .len();
    drop(first);
    let mut took_over = false;
    for _ in 0..80 {
        if second.serving() {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_two = wait_for(ids[1].clone(), seen_two, &["ASIASECOND"]).await;
    let after_one = wait_for(ids[0].clone(), seen_one, &["OWN-REFUSED"]).await;
    for id in &ids {
        let _ = runtime.remove(id).await;
    }
    assert!(took_over, "the second agent never served");
    assert!(
        after_two.contains("\"AccessKeyId\":\"ASIASECOND\""),
        "{after_two}"
    );
    // The first agent's task went with it.
    assert!(after_one.contains("OWN-REFUSED"), "{after_one}");
}
