//! Helpers shared by the integration tests. They drive the real Docker
//! daemon: when it cannot be reached the tests fail, never skip.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_runtime::{
    build_busybox_image, ContainerSpec, ContainerState, ContainerStatus, DockerRuntime, Runtime,
};

/// The locally built busybox image every test runs.
pub const IMAGE: &str = "berth-test/busybox:latest";
/// Carried by every container the tests create, to find leftovers by hand
/// (`docker ps -a --filter label=berth-runtime-test`).
pub const TEST_LABEL: &str = "berth-runtime-test";

/// Connects to Docker and makes sure the test image exists.
pub async fn setup() -> (DockerRuntime, Cleanup) {
    let runtime = match DockerRuntime::connect().await {
        Ok(runtime) => runtime,
        Err(e) => panic!(
            "these tests need a running Docker daemon (start one with \
             `nohup dockerd >/var/log/dockerd.log 2>&1 &`): {e}"
        ),
    };
    // Once per test binary, one test at a time: concurrent builds on a cold
    // cache each produce an image and leave all but the last one dangling.
    static BUILT: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut built = BUILT.lock().await;
    if !*built {
        if let Err(e) = build_busybox_image(&runtime, IMAGE).await {
            panic!("cannot build the test image {IMAGE}: {e}");
        }
        *built = true;
    }
    drop(built);
    (runtime, Cleanup::default())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "berth-rt-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A busybox container running `script` with `sh -c`.
pub fn shell(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: IMAGE.to_string(),
        labels: BTreeMap::from([(TEST_LABEL.to_string(), "1".to_string())]),
        entry_point: Some(vec!["sh".to_string(), "-c".to_string()]),
        command: Some(vec![script.to_string()]),
        ..Default::default()
    }
}

/// Removes, when dropped (also on panic), every container and volume
/// registered with it.
#[derive(Default)]
pub struct Cleanup {
    containers: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

impl Cleanup {
    /// Registers a container (by name) for removal; returns the name.
    pub fn container(&self, name: &str) -> String {
        if let Ok(mut names) = self.containers.lock() {
            names.push(name.to_string());
        }
        name.to_string()
    }

    pub fn volume(&self, name: &str) -> String {
        if let Ok(mut names) = self.volumes.lock() {
            names.push(name.to_string());
        }
        name.to_string()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let containers =
            std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        let volumes = std::mem::take(&mut *self.volumes.lock().unwrap_or_else(|e| e.into_inner()));
        if containers.is_empty() && volumes.is_empty() {
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down:
        // clean up from a thread with a runtime of its own.
        let cleaner = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let docker = DockerRuntime::connect().await.expect("cleanup connect");
                // Containers first: a volume in use cannot be removed.
                for name in containers {
                    if let Err(e) = docker.remove(&name).await {
                        eprintln!("cleanup: removing container {name}: {e}");
                    }
                }
                for name in volumes {
                    if let Err(e) = docker.remove_volume(&name).await {
                        eprintln!("cleanup: removing volume {name}: {e}");
                    }
                }
            });
        });
        let _ = cleaner.join();
    }
}

/// Polls `probe` every 100 ms until it yields a value; panics after
/// `timeout`, naming what it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the container reaches `status` and returns its state.
pub async fn wait_for_status(
    runtime: &DockerRuntime,
    id: &str,
    status: ContainerStatus,
    timeout: Duration,
) -> ContainerState {
    wait_until(&format!("{id} to be {status:?}"), timeout, || async {
        runtime
            .inspect(id)
            .await
            .expect("inspect")
            .filter(|s| s.status == status)
    })
    .await
}

/// Waits until the container's logs contain `needle`.
pub async fn wait_for_log(runtime: &DockerRuntime, id: &str, needle: &str, timeout: Duration) {
    wait_until(
        &format!("{needle:?} in the logs of {id}"),
        timeout,
        || async {
            let logs = runtime.logs_tail(id, 100).await.expect("logs");
            logs.contains(needle).then_some(())
        },
    )
    .await
}

/// Creates and starts a container, registering it for cleanup.
pub async fn run(runtime: &DockerRuntime, cleanup: &Cleanup, spec: &ContainerSpec) -> String {
    cleanup.container(&spec.name);
    let id = runtime.create(spec).await.expect("create");
    runtime.start(&id).await.expect("start");
    id
}
