//! Container lifecycle against the real Docker daemon: create, start,
//! inspect, stop (TERM then KILL), exit codes, removal, ownership labels.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_runtime::{ContainerStatus, Mount, Runtime, RuntimeError};
use common::{run, setup, shell, unique, wait_for_log, wait_for_status, IMAGE, TEST_LABEL};

#[tokio::test]
async fn info_describes_the_host() {
    let (runtime, _cleanup) = setup().await;
    let info = runtime.info().await.unwrap();
    assert!(info.cpus > 0, "{info:?}");
    assert!(info.memory_bytes > 0, "{info:?}");
    assert_eq!(info.os_type, "linux");
    assert!(!info.kernel_version.is_empty(), "{info:?}");
    assert!(!info.server_version.is_empty(), "{info:?}");
    assert!(!info.name.is_empty(), "{info:?}");
}

#[tokio::test]
async fn create_start_inspect_running() {
    let (runtime, cleanup) = setup().await;
    let name = cleanup.container(&unique("run"));
    let mut spec = shell(&name, "exec sleep 60");
    spec.labels.insert("role".into(), "web".into());

    let id = runtime.create(&spec).await.unwrap();
    let created = runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(created.status, ContainerStatus::Created);
    assert_eq!(created.started_at, None);
    assert_eq!(created.exit_code, None);

    runtime.start(&id).await.unwrap();
    // Starting a running container is not an error.
    runtime.start(&id).await.unwrap();

    let state = runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(state.id, id);
    assert_eq!(state.name, name);
    assert_eq!(state.image, IMAGE);
    assert_eq!(state.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(state.labels.get(TEST_LABEL).map(String::as_str), Some("1"));
    assert_eq!(state.status, ContainerStatus::Running);
    assert_eq!(state.exit_code, None);
    assert!(!state.oom_killed);
    assert_eq!(state.error, None);
    assert!(state.started_at.is_some());
    assert_eq!(state.finished_at, None);
    assert_eq!(state.health, None);
    assert!(state.port_bindings.is_empty());
    assert!(state.ip_address.is_some(), "bridge mode has an address");

    // The name works wherever the id does.
    let by_name = runtime.inspect(&name).await.unwrap().unwrap();
    assert_eq!(by_name.id, id);

    match runtime.create(&spec).await {
        Err(RuntimeError::Conflict(message)) => assert!(message.contains(&name), "{message}"),
        other => panic!("creating a duplicate name: {other:?}"),
    }

    let missing_image = shell(&unique("noimage"), "true");
    let missing_image = berth_runtime::ContainerSpec {
        image: "berth-test/does-not-exist:never".into(),
        ..missing_image
    };
    cleanup.container(&missing_image.name);
    match runtime.create(&missing_image).await {
        Err(RuntimeError::InvalidSpec(message)) => {
            assert!(message.contains("No such image"), "{message}")
        }
        other => panic!("creating from a missing image: {other:?}"),
    }
}

#[tokio::test]
async fn details_and_stats_of_a_running_container() {
    let (runtime, cleanup) = setup().await;
    let name = cleanup.container(&unique("stats"));
    let mut spec = shell(&name, "exec sleep 60");
    spec.env = vec![("TOKEN".into(), "t-1".into())];
    let id = runtime.create(&spec).await.unwrap();
    runtime.start(&id).await.unwrap();

    let details = runtime.details(&name).await.unwrap().expect("it exists");
    assert!(
        details
            .image_id
            .as_deref()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{details:?}"
    );
    assert!(details.created_at.is_some(), "{details:?}");
    assert!(details.env.contains(&"TOKEN=t-1".to_string()));
    let state = runtime.inspect(&id).await.unwrap().unwrap();
    let address: std::net::IpAddr = state.ip_address.unwrap().parse().unwrap();
    assert_eq!(details.ip_addresses, vec![address]);

    let stats = runtime.stats(&id).await.unwrap();
    assert!(stats["read"].is_string(), "{stats}");
    assert!(stats["memory_stats"].is_object(), "{stats}");
    assert!(
        stats["cpu_stats"]["cpu_usage"]["total_usage"].is_number(),
        "{stats}"
    );

    runtime.remove(&id).await.unwrap();
    assert_eq!(runtime.details(&id).await.unwrap(), None);
    assert!(matches!(
        runtime.stats(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn env_command_working_dir_and_user_reach_the_process() {
    let (runtime, cleanup) = setup().await;
    let name = unique("env");
    let mut spec = shell(
        &name,
        // Docker copies stdout and stderr separately: lines written to both
        // in quick succession may be logged in either order.
        "echo \"foo=$FOO\"; pwd; id -u; id -g; echo line1; sleep 0.3; \
         echo line2 >&2; sleep 0.3; echo line3",
    );
    spec.env = vec![("FOO".into(), "bar baz".into())];
    spec.working_dir = Some("/work/dir".into());
    spec.user = Some("1234:5678".into());
    spec.hostname = Some("berth-host".into());
    let id = run(&runtime, &cleanup, &spec).await;

    let state = wait_for_status(
        &runtime,
        &id,
        ContainerStatus::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(state.exit_code, Some(0), "{state:?}");
    let logs = runtime.logs_tail(&id, 100).await.unwrap();
    assert_eq!(
        logs,
        "foo=bar baz\n/work/dir\n1234\n5678\nline1\nline2\nline3\n"
    );
    // stderr and stdout are interleaved and counted together.
    assert_eq!(runtime.logs_tail(&id, 2).await.unwrap(), "line2\nline3\n");
    assert_eq!(runtime.logs_tail(&id, 0).await.unwrap(), "");

    let config = runtime
        .client()
        .inspect_container(&id, None)
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.hostname.as_deref(), Some("berth-host"));
    assert!(config
        .env
        .unwrap_or_default()
        .contains(&"FOO=bar baz".to_string()));
}

#[tokio::test]
async fn memory_limit_and_cpu_shares_are_applied() {
    let (runtime, cleanup) = setup().await;
    let name = unique("limits");
    let mut spec = shell(
        &name,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
         || cat /sys/fs/cgroup/memory.max",
    );
    spec.memory_mib = Some(64);
    spec.memory_reservation_mib = Some(32);
    spec.cpu_shares = Some(512);
    let id = run(&runtime, &cleanup, &spec).await;

    let host = runtime
        .client()
        .inspect_container(&id, None)
        .await
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.memory_reservation, Some(32 * 1024 * 1024));
    assert_eq!(host.cpu_shares, Some(512));

    // The kernel enforces the limit, not just Docker's record of it.
    wait_for_status(
        &runtime,
        &id,
        ContainerStatus::Exited,
        Duration::from_secs(20),
    )
    .await;
    let logs = runtime.logs_tail(&id, 10).await.unwrap();
    assert_eq!(logs.trim(), (64 * 1024 * 1024).to_string());
}

#[tokio::test]
async fn exit_code_is_reported() {
    let (runtime, cleanup) = setup().await;
    let id = run(&runtime, &cleanup, &shell(&unique("exit3"), "exit 3")).await;
    let state = wait_for_status(
        &runtime,
        &id,
        ContainerStatus::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(state.exit_code, Some(3));
    assert!(!state.oom_killed);
    // Both are set, but not necessarily in order: Docker records the start
    // time after `start` returns, which can be after a quick exit.
    assert!(state.started_at.is_some(), "{state:?}");
    assert!(state.finished_at.is_some(), "{state:?}");
    // Stopping an exited container is a no-op.
    runtime.stop(&id, Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn stop_sends_sigterm_first() {
    let (runtime, cleanup) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = shell(
        &unique("term"),
        "trap 'echo term > /out/term; exit 0' TERM; echo ready; \
         while :; do sleep 1 & wait $!; done",
    );
    spec.mounts = vec![Mount {
        source: dir.path().to_string_lossy().into_owned(),
        target: "/out".into(),
        read_only: false,
    }];
    let id = run(&runtime, &cleanup, &spec).await;
    wait_for_log(&runtime, &id, "ready", Duration::from_secs(20)).await;

    let begun = Instant::now();
    runtime.stop(&id, Duration::from_secs(20)).await.unwrap();
    let took = begun.elapsed();
    assert!(took < Duration::from_secs(5), "stop took {took:?}");

    let state = runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(state.status, ContainerStatus::Exited);
    assert_eq!(state.exit_code, Some(0), "the TERM handler ran exit 0");
    let written = std::fs::read_to_string(dir.path().join("term")).unwrap();
    assert_eq!(written, "term\n");
}

#[tokio::test]
async fn stop_kills_after_the_timeout() {
    let (runtime, cleanup) = setup().await;
    let spec = shell(
        &unique("kill"),
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    );
    let id = run(&runtime, &cleanup, &spec).await;
    wait_for_log(&runtime, &id, "ready", Duration::from_secs(20)).await;

    let begun = Instant::now();
    runtime.stop(&id, Duration::from_secs(2)).await.unwrap();
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "stop took {took:?}"
    );
    let state = runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(state.status, ContainerStatus::Exited);
    assert_eq!(state.exit_code, Some(137), "SIGKILL");
}

#[tokio::test]
async fn remove_is_idempotent_and_missing_containers_are_reported() {
    let (runtime, cleanup) = setup().await;
    let name = unique("remove");
    let id = run(&runtime, &cleanup, &shell(&name, "exec sleep 60")).await;

    // Force: a running container is killed and removed.
    runtime.remove(&id).await.unwrap();
    assert_eq!(runtime.inspect(&id).await.unwrap(), None);
    runtime.remove(&id).await.unwrap();
    runtime.remove("berth-rt-never-existed").await.unwrap();

    assert_eq!(
        runtime.stop(&name, Duration::from_secs(1)).await,
        Err(RuntimeError::NotFound(name.clone()))
    );
    assert_eq!(
        runtime.start(&name).await,
        Err(RuntimeError::NotFound(name.clone()))
    );
    assert_eq!(
        runtime.logs_tail(&name, 10).await,
        Err(RuntimeError::NotFound(name.clone()))
    );
}

#[tokio::test]
async fn list_owned_finds_labelled_containers_only() {
    let (runtime, cleanup) = setup().await;
    let key = unique("owner");
    let labelled = |name: &str, value: Option<&str>| {
        let mut spec = shell(name, "exec sleep 60");
        if let Some(value) = value {
            spec.labels.insert(key.clone(), value.to_string());
        }
        spec
    };
    let (a1, a2, b1, none) = (
        unique("a1"),
        unique("a2"),
        unique("b1"),
        unique("unlabelled"),
    );
    run(&runtime, &cleanup, &labelled(&a1, Some("a"))).await;
    cleanup.container(&a2);
    runtime.create(&labelled(&a2, Some("a"))).await.unwrap();
    cleanup.container(&b1);
    runtime.create(&labelled(&b1, Some("b"))).await.unwrap();
    cleanup.container(&none);
    runtime.create(&labelled(&none, None)).await.unwrap();

    let owned = runtime.list_owned(&key, Some("a")).await.unwrap();
    let found: BTreeMap<String, ContainerStatus> =
        owned.iter().map(|s| (s.name.clone(), s.status)).collect();
    assert_eq!(
        found,
        BTreeMap::from([
            (a1.clone(), ContainerStatus::Running),
            (a2.clone(), ContainerStatus::Created)
        ])
    );
    assert!(owned
        .iter()
        .all(|s| s.labels.get(&key).map(String::as_str) == Some("a")));

    let mut any_value: Vec<String> = runtime
        .list_owned(&key, None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    any_value.sort();
    let mut expected = vec![a1, a2, b1];
    expected.sort();
    assert_eq!(any_value, expected);

    assert!(runtime
        .list_owned(&key, Some("nobody"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn log_lines_carry_timestamps_and_follow_until_exit() {
    use futures::StreamExt;
    let (runtime, cleanup) = setup().await;
    let name = cleanup.container(&unique("loglines"));
    let spec = shell(&name, "echo one; echo two >&2; sleep 1; echo three");
    let id = run(&runtime, &cleanup, &spec).await;

    // Following while it runs ends once it has exited and all was delivered.
    let followed: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        runtime.log_lines(&id, 0, true).collect::<Vec<_>>(),
    )
    .await
    .expect("the follow stream ends when the container exits")
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let texts: Vec<_> = followed
        .iter()
        .map(|l| (String::from_utf8_lossy(&l.text).into_owned(), l.stderr))
        .collect();
    // stdout and stderr are separate pipes: lines printed back to back on
    // different streams may arrive in either order; each stream keeps its own.
    let stdout: Vec<_> = texts
        .iter()
        .filter(|(_, e)| !e)
        .map(|(t, _)| t.as_str())
        .collect();
    let stderr: Vec<_> = texts
        .iter()
        .filter(|(_, e)| *e)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(stdout, ["one\n", "three\n"], "{texts:?}");
    assert_eq!(stderr, ["two\n"], "{texts:?}");
    assert_eq!(texts.last().map(|(t, _)| t.as_str()), Some("three\n"));
    assert!(followed.windows(2).all(|w| w[0].nanos <= w[1].nanos));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(followed
        .iter()
        .all(|l| l.nanos > now - 60_000_000_000 && l.nanos <= now));
    assert!(followed[2].nanos - followed[0].nanos >= 900_000_000);

    // `since` in whole seconds, past the last line: nothing.
    let later = followed[2].nanos / 1_000_000_000 + 1;
    let none: Vec<_> = runtime.log_lines(&id, later, false).collect().await;
    assert!(none.is_empty());
    let missing: Vec<_> = runtime
        .log_lines("berth-no-such-container", 0, false)
        .collect()
        .await;
    assert!(matches!(
        missing.as_slice(),
        [Err(RuntimeError::NotFound(_))]
    ));
}
