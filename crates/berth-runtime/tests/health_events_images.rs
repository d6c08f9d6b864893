//! Health checks, the event stream and images against the real Docker daemon.

mod common;

use std::time::{Duration, Instant};

use berth_runtime::{
    HealthCheckSpec, HealthState, RegistryAuth, Runtime, RuntimeError, RuntimeEvent,
};
use common::{run, setup, shell, unique, wait_until, IMAGE};
use futures::StreamExt;

fn health_check(script: &str, retries: u32) -> HealthCheckSpec {
    HealthCheckSpec {
        command: vec!["CMD-SHELL".into(), script.into()],
        interval_secs: 1,
        timeout_secs: 2,
        retries,
        start_period_secs: 0,
    }
}

async fn health_goes_to(script: &str, retries: u32, expected: HealthState) {
    let (runtime, cleanup) = setup().await;
    let mut spec = shell(&unique("health"), "exec sleep 60");
    spec.health_check = Some(health_check(script, retries));
    let id = run(&runtime, &cleanup, &spec).await;

    // The first check runs one interval after the start.
    let first = runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(first.health, Some(HealthState::Starting), "{first:?}");

    wait_until(
        &format!("{id} to be {expected:?}"),
        Duration::from_secs(30),
        || async {
            let state = runtime.inspect(&id).await.unwrap().unwrap();
            (state.health == Some(expected)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn health_check_becomes_healthy() {
    health_goes_to("true", 3, HealthState::Healthy).await;
}

#[tokio::test]
async fn health_check_becomes_unhealthy() {
    health_goes_to("false", 1, HealthState::Unhealthy).await;
}

#[tokio::test]
async fn events_report_die_for_labelled_containers_only() {
    let (runtime, cleanup) = setup().await;
    let key = unique("events");
    // Subscribed before the container exists, polled only after it has
    // started: the stream still sees everything after this call.
    let mut events = runtime.events(&key);

    let mut watched = shell(&unique("watched"), "sleep 1; exit 0");
    watched.labels.insert(key.clone(), "1".into());
    let watched_id = run(&runtime, &cleanup, &watched).await;
    let other_id = run(&runtime, &cleanup, &shell(&unique("other"), "exit 0")).await;

    let mut actions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !actions.iter().any(|a| a == "die") {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("no die event within 30 s; saw {actions:?}"))
            .expect("the event stream ended")
            .expect("event");
        let RuntimeEvent::Container { id, action } = event;
        assert_ne!(id, other_id, "an unlabelled container's event leaked in");
        assert_eq!(id, watched_id);
        actions.push(action);
    }
    for expected in ["create", "start", "die"] {
        assert!(actions.iter().any(|a| a == expected), "{actions:?}");
    }
}

#[tokio::test]
async fn pulling_a_missing_image_fails_fast() {
    let (runtime, _cleanup) = setup().await;
    let auth = RegistryAuth {
        username: "user".into(),
        password: "secret".into(),
        server_address: "127.0.0.1:1".into(),
    };
    for auth in [None, Some(&auth)] {
        let begun = Instant::now();
        let result = runtime.pull("127.0.0.1:1/nope:latest", auth).await;
        let took = begun.elapsed();
        match result {
            Err(RuntimeError::ImagePull(message)) => {
                assert!(message.contains("127.0.0.1:1"), "{message}");
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("pulling from a closed port: {other:?}"),
        }
        assert!(took < Duration::from_secs(15), "pull took {took:?}");
    }
}

#[tokio::test]
async fn image_present_reflects_the_local_store() {
    let (runtime, _cleanup) = setup().await;
    assert!(runtime.image_present(IMAGE).await.unwrap());
    assert!(!runtime
        .image_present("berth-test/does-not-exist:never")
        .await
        .unwrap());
}
