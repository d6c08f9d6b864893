//! Berth's container runtime driver: the [`Runtime`] trait the agent drives
//! tasks through, and [`DockerRuntime`], its implementation on the Docker
//! Engine API (via `bollard`, over the local unix socket).
//!
//! The trait speaks in ECS terms ([`ContainerSpec`] mirrors an ECS container
//! definition after the agent has resolved it) so that another runtime (the
//! native crun/overlayfs driver planned for the Fargate launch type) can
//! implement it without the agent noticing.
//!
//! Containers are identified by the id [`Runtime::create`] returns, though
//! every method taking an `id` also accepts the container's name, as Docker
//! does. Ownership is expressed with labels: the agent labels what it creates
//! and finds it again after a restart with [`Runtime::list_owned`].
//!
//! Architecture invariant: the driver never pulls, restarts or removes a
//! container on its own; every change to the host is one explicit call.

mod docker;
mod error;
mod exec;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod pause;
mod spec;
mod state;
pub mod test_image;
mod time;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;

pub use docker::DockerRuntime;
pub use error::RuntimeError;
pub use exec::{ExecOutput, ExecProcess, ExecSpec};
pub use spec::{
    ContainerSpec, HealthCheckSpec, Mount, NetworkMode, NetworkSpec, PortSpec, Protocol,
    RegistryAuth, Tmpfs, Ulimit,
};
pub use state::{
    ContainerDetails, ContainerState, ContainerStatus, HealthState, LogLine, PortBinding,
    RuntimeEvent, RuntimeInfo,
};
pub use test_image::build_busybox_image;

/// A container runtime as the agent sees it.
///
/// Methods taking an `id` accept a container id (full or unique prefix) or
/// name. Errors are classified so the agent can decide what to tell ECS:
/// [`RuntimeError::Unavailable`] means "try again later", everything else is
/// an answer about the request itself.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Host capacity and identity, for registering the container instance.
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError>;

    /// Whether `image` (a reference such as `busybox`, `repo:tag` or
    /// `repo@sha256:…`) is already in the local image store.
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;

    /// Pulls `image` (`:latest` when it names neither tag nor digest), reading
    /// the whole progress stream. Any failure reported by the registry or the
    /// daemon is [`RuntimeError::ImagePull`]. There is no overall time limit
    /// (a large image may take long); callers wrap it in their own.
    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), RuntimeError>;

    /// Creates (does not start) a container and returns its id. The image
    /// must already be present: create never pulls. A name in use is
    /// [`RuntimeError::Conflict`]; a spec the runtime rejects, or one that
    /// refers to something missing (image, container to share a network or
    /// volumes with), is [`RuntimeError::InvalidSpec`] with the runtime's
    /// message.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Starts a created or stopped container. Starting a running container
    /// is `Ok`.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// Sends the container's stop signal (SIGTERM unless the image says
    /// otherwise) and SIGKILL once `timeout` (rounded up to whole seconds)
    /// has passed; returns once the container has exited. Stopping a stopped
    /// container is `Ok`; a missing one is [`RuntimeError::NotFound`].
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// The container's current state, or `None` when it does not exist.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError>;

    /// What an inspect tells beyond [`Runtime::inspect`] (image id,
    /// creation time, environment, every address), or `None` when the
    /// container does not exist.
    async fn details(&self, id: &str) -> Result<Option<ContainerDetails>, RuntimeError>;

    /// One sample of the container's resource usage in the Docker Engine
    /// API's stats shape (`read`, `cpu_stats`, `precpu_stats`,
    /// `memory_stats`, `networks` …), which is what ECS's task metadata
    /// endpoint v4 serves. A missing container is
    /// [`RuntimeError::NotFound`].
    async fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError>;

    /// Every container (running or not) carrying label `label` (with value
    /// `value` when given), fully inspected. Containers removed while the
    /// list is being built are left out.
    async fn list_owned(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<ContainerState>, RuntimeError>;

    /// Force-removes the container (killing it if needed) and its anonymous
    /// volumes. Removing a container that does not exist is `Ok`.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// Creates a named local volume; creating one that exists is `Ok`.
    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError>;

    /// Removes a named volume; removing one that does not exist is `Ok`, one
    /// still used by a container is [`RuntimeError::Conflict`].
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;

    /// The last `lines` lines of the container's stdout and stderr together,
    /// in the order the runtime logged them (Docker copies the two streams
    /// separately, so lines written to both at nearly the same moment may
    /// swap).
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError>;

    /// The container's output from `since_secs` (whole seconds since the
    /// epoch; 0 for all), each line with the runtime's timestamp. With
    /// `follow` the stream stays open while the container runs and ends when
    /// it has exited and everything was delivered; without, it ends at the
    /// current end. An error ends the stream.
    fn log_lines(
        &self,
        id: &str,
        since_secs: i64,
        follow: bool,
    ) -> BoxStream<'static, Result<LogLine, RuntimeError>>;

    /// Events for containers carrying `label`; the stream ends when the
    /// runtime connection drops (caller re-subscribes).
    ///
    /// Events that happen after this call are delivered even if the stream
    /// is first polled later. `action` is the event's verb without its
    /// detail: Docker's `"health_status: healthy"` arrives as
    /// `"health_status"` (inspect the container for the value).
    fn events(&self, label: &str) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>>;

    /// Makes sure a bridge network named `spec.name` exists with the
    /// spec's subnet and gateway (any free block when the spec names none)
    /// and driver options, creating it when missing, and returns its id.
    /// An existing network with that name but another subnet is
    /// [`RuntimeError::Conflict`]: containers on it could not take the
    /// addresses they are given.
    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<String, RuntimeError> {
        Err(RuntimeError::InvalidSpec(format!(
            "this runtime cannot create network {}",
            spec.name
        )))
    }

    /// Removes a network; a missing one is `Ok`, one still in use is
    /// [`RuntimeError::Conflict`].
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::InvalidSpec(format!(
            "this runtime cannot remove network {name}"
        )))
    }

    /// The names of the networks carrying label `label` (with value
    /// `value` when given), so an agent finds what it created before a
    /// restart. A runtime without networks has none.
    async fn list_networks(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<String>, RuntimeError> {
        let _ = (label, value);
        Ok(Vec::new())
    }

    /// Starts `spec.command` in the running container `id` (as `docker
    /// exec` does), attached to its output (and input with `spec.stdin`).
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError> {
        let _ = spec;
        Err(RuntimeError::InvalidSpec(format!(
            "this runtime cannot run commands in container {id}"
        )))
    }

    /// Resizes the terminal of the exec instance `exec_id`.
    async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), RuntimeError> {
        let _ = (exec_id, rows, cols);
        Ok(())
    }

    /// The exit code of the exec instance `exec_id`, once it has exited.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let _ = exec_id;
        Ok(None)
    }

    /// Loads images from a tarball in `docker save` format (the way the
    /// agent installs images it generates itself, with no registry).
    async fn load_image(&self, tarball: Vec<u8>) -> Result<(), RuntimeError> {
        let _ = tarball;
        Err(RuntimeError::InvalidSpec(
            "this runtime cannot load image tarballs".into(),
        ))
    }
}
