//! What a task holds on the host besides its containers, and the one
//! place it is released ([`Resources::release`]).
//!
//! Each phase records what it acquires here *before* acquiring it, so a
//! step that fails halfway (a cgroup made for one controller but not the
//! other, a veth created but not configured) is released too; releasing
//! something that is not there is fine everywhere.
//!
//! The task's containers are not here: the runner stops them in
//! [`super::Phase::Stopping`] and keeps them, exited, for their logs and
//! exit codes until the agent cleans the task up (as ECS does); the
//! task-scoped volumes they mount stay with them.

use std::sync::Arc;
use std::time::Duration;

use berth_model::agent_protocol::TaskNetworkInterface;
use berth_runtime::Runtime;
use tokio::task::JoinHandle;

use crate::cgroups::TaskCgroups;
use crate::task_endpoint::TaskEndpoint;
use crate::vpcnet::TaskNetworks;

/// How often removing the task's cgroup is tried in one release: the
/// runtime removes each container's own cgroup shortly after it exits,
/// and until then the task's is busy.
const CGROUP_REMOVE_ATTEMPTS: u32 = 5;
const CGROUP_REMOVE_PAUSE: Duration = Duration::from_millis(200);

/// The task role's credentials served at the task endpoint, and what
/// keeps them fresh.
pub(super) struct CredentialsLease {
    /// The id in the containers' `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
    pub id: String,
    pub refresher: JoinHandle<()>,
}

/// What the task holds; see the module documentation.
#[derive(Default)]
pub(super) struct Resources {
    /// The task role's credentials at the task endpoint.
    pub credentials: Option<CredentialsLease>,
    /// Task-scoped Docker volumes created for the task.
    pub volumes: Vec<String>,
    /// The task's cgroup (its parent path or slice).
    pub cgroup: Option<String>,
    /// The pause container holding an awsvpc task's namespace, created or
    /// adopted.
    pub pause: Option<String>,
    /// The interface plumbed into the pause container's namespace (its
    /// veth leg on the subnet's bridge in the VPC's router).
    pub interface: Option<TaskNetworkInterface>,
    /// Keeps the security groups applied while the task runs.
    pub enforcer: Option<JoinHandle<()>>,
}

/// What releasing needs to reach.
pub(super) struct Host<'a> {
    pub runtime: &'a Arc<dyn Runtime>,
    pub networks: &'a Arc<dyn TaskNetworks>,
    pub cgroups: &'a Arc<dyn TaskCgroups>,
    pub endpoint: &'a Arc<TaskEndpoint>,
    pub task_arn: &'a str,
    pub task_id: &'a str,
}

impl Resources {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.credentials.is_none()
            && self.volumes.is_empty()
            && self.cgroup.is_none()
            && self.pause.is_none()
            && self.interface.is_none()
            && self.enforcer.is_none()
    }

    /// Stops what runs in the background (when the runner goes away
    /// without releasing, e.g. aborted by the agent).
    pub fn abort_background(&mut self) {
        if let Some(lease) = self.credentials.take() {
            lease.refresher.abort();
        }
        if let Some(enforcer) = self.enforcer.take() {
            enforcer.abort();
        }
    }

    /// Releases what is held, once the task's containers have stopped.
    /// `containers_exist`: some container of the task was created (its
    /// volumes then stay with it). Answers whether everything is
    /// released; what could not be is kept, to try again.
    pub async fn release(&mut self, host: &Host<'_>, containers_exist: bool) -> bool {
        let task = host.task_arn;
        // Credentials and metadata are no longer served.
        self.abort_background();
        host.endpoint.remove_task(task);

        let mut released = true;
        let mut pause_removed = false;
        if let Some(pause) = self.pause.clone() {
            match host.runtime.remove(&pause).await {
                Ok(()) => {
                    self.pause = None;
                    pause_removed = true;
                }
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "removing the pause container failed");
                    released = false;
                }
            }
        }
        // The interface goes with its namespace, then the bridge, router
        // and host routes once no task uses them.
        if self.pause.is_none() {
            let outcome = match &self.interface {
                Some(eni) => host.networks.detach(host.task_id, eni).await,
                // A namespace without a known interface (adopted from a
                // task the server no longer describes) may still leave
                // something unused behind.
                None if pause_removed => host.networks.collect().await,
                None => Ok(()),
            };
            match outcome {
                Ok(()) => self.interface = None,
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "cleaning up the host's VPC networks failed");
                    released &= self.interface.is_none();
                }
            }
        }
        if self.cgroup.is_some() {
            for attempt in 1..=CGROUP_REMOVE_ATTEMPTS {
                match host.cgroups.remove(host.task_id).await {
                    Ok(()) => {
                        self.cgroup = None;
                        break;
                    }
                    Err(e) if attempt == CGROUP_REMOVE_ATTEMPTS => {
                        tracing::debug!(task = %task, error = %e, "removing the task cgroup failed");
                        released = false;
                    }
                    Err(_) => tokio::time::sleep(CGROUP_REMOVE_PAUSE).await,
                }
            }
        }
        if containers_exist {
            // Mounted by the task's exited containers: removed with them
            // when the agent cleans the task up.
            self.volumes.clear();
        }
        let mut kept = Vec::new();
        for volume in std::mem::take(&mut self.volumes) {
            if let Err(e) = host.runtime.remove_volume(&volume).await {
                tracing::warn!(task = %task, %volume, error = %e, "removing the task volume failed");
                kept.push(volume);
            }
        }
        released &= kept.is_empty();
        self.volumes = kept;
        released
    }
}
