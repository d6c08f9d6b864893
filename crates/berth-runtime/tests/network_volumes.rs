//! Published ports and volumes against the real Docker daemon.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use berth_runtime::{
    ContainerStatus, DockerRuntime, Mount, PortSpec, Protocol, Runtime, RuntimeError,
};
use common::{run, setup, shell, unique, wait_for_status, wait_until, Cleanup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.0 GET; `None` until something answers with a status line.
async fn http_get(port: u16) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        // docker-proxy accepts before the server listens, then hangs up.
        response.starts_with("HTTP/1.").then_some(response)
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
}

async fn start_web_server(
    runtime: &DockerRuntime,
    cleanup: &Cleanup,
    body: &str,
    host_port: Option<u16>,
) -> u16 {
    let mut spec = shell(
        &unique("httpd"),
        &format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"),
    );
    spec.ports = vec![PortSpec {
        container_port: 8080,
        host_port,
        protocol: Protocol::Tcp,
    }];
    let id = run(runtime, cleanup, &spec).await;
    let state = runtime.inspect(&id).await.unwrap().unwrap();
    let ipv4: Vec<_> = state
        .port_bindings
        .iter()
        .filter(|b| b.host_ip == "0.0.0.0")
        .collect();
    assert_eq!(ipv4.len(), 1, "{:?}", state.port_bindings);
    assert_eq!(ipv4[0].container_port, 8080);
    assert_eq!(ipv4[0].protocol, Protocol::Tcp);
    assert_ne!(ipv4[0].host_port, 0);
    ipv4[0].host_port
}

#[tokio::test]
async fn dynamic_host_ports_are_distinct_and_serve() {
    let (runtime, cleanup) = setup().await;
    let port_a = start_web_server(&runtime, &cleanup, "server-a", None).await;
    let port_b = start_web_server(&runtime, &cleanup, "server-b", Some(0)).await;
    assert_ne!(port_a, port_b);

    for (port, body) in [(port_a, "server-a"), (port_b, "server-b")] {
        let response = wait_until(
            &format!("httpd on host port {port}"),
            Duration::from_secs(20),
            || http_get(port),
        )
        .await;
        assert!(
            response.lines().next().is_some_and(|l| l.contains(" 200 ")),
            "{response}"
        );
        assert!(response.contains(body), "{response}");
    }
}

#[tokio::test]
async fn named_volume_and_volumes_from() {
    let (runtime, cleanup) = setup().await;
    let volume = cleanup.volume(&unique("vol"));
    let labels = BTreeMap::from([("berth-runtime-test".to_string(), "1".to_string())]);
    runtime.create_volume(&volume, &labels).await.unwrap();
    // Idempotent.
    runtime.create_volume(&volume, &labels).await.unwrap();
    let inspected = runtime.client().inspect_volume(&volume).await.unwrap();
    assert_eq!(
        inspected
            .labels
            .get("berth-runtime-test")
            .map(String::as_str),
        Some("1")
    );

    let mut writer = shell(&unique("writer"), "echo hello > /data/f");
    writer.mounts = vec![Mount {
        source: volume.clone(),
        target: "/data".into(),
        read_only: false,
    }];
    let writer_id = run(&runtime, &cleanup, &writer).await;
    let state = wait_for_status(
        &runtime,
        &writer_id,
        ContainerStatus::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(state.exit_code, Some(0));

    // The writer's volumes, shared read-only.
    let mut sharer = shell(
        &unique("sharer"),
        "cat /data/f; touch /data/g 2>/dev/null && echo writable || echo read-only",
    );
    sharer.volumes_from = vec![(writer.name.clone(), true)];
    let sharer_id = run(&runtime, &cleanup, &sharer).await;
    wait_for_status(
        &runtime,
        &sharer_id,
        ContainerStatus::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        runtime.logs_tail(&sharer_id, 10).await.unwrap(),
        "hello\nread-only\n"
    );

    // The same volume mounted directly, read-only.
    let mut reader = shell(&unique("reader"), "cat /v/f");
    reader.mounts = vec![Mount {
        source: volume.clone(),
        target: "/v".into(),
        read_only: true,
    }];
    let reader_id = run(&runtime, &cleanup, &reader).await;
    wait_for_status(
        &runtime,
        &reader_id,
        ContainerStatus::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(runtime.logs_tail(&reader_id, 10).await.unwrap(), "hello\n");

    match runtime.remove_volume(&volume).await {
        Err(RuntimeError::Conflict(message)) => assert!(message.contains("in use"), "{message}"),
        other => panic!("removing a volume in use: {other:?}"),
    }
    for id in [&writer_id, &sharer_id, &reader_id] {
        runtime.remove(id).await.unwrap();
    }
    runtime.remove_volume(&volume).await.unwrap();
    let gone = runtime.client().inspect_volume(&volume).await;
    assert!(gone.is_err(), "{gone:?}");
    runtime.remove_volume(&volume).await.unwrap();
}
