//! What runs beside a task while it runs: the refresher of its role's
//! credentials and the enforcer of an awsvpc task's security groups. The
//! runner holds their handles in its [`super::resources::Resources`] and
//! aborts them when it releases the task.

use std::sync::Arc;
use std::time::Duration;

use berth_model::agent_protocol::{GetNetworkPolicyResponse, TaskNetworkInterface};
use berth_runtime::Runtime;

use crate::task_endpoint::{self, TaskEndpoint};
use crate::vpcnet::TaskNetworks;
use crate::Reporter;

/// How often a running awsvpc task's security groups are looked up.
const POLICY_POLL: Duration = Duration::from_secs(2);
/// Every how many policy polls a running awsvpc task's interface is
/// checked (and plumbed again when it is gone).
const INTERFACE_CHECK_POLLS: u32 = 5;

pub(super) fn epoch_secs() -> i64 {
    berth_util::time::now_secs()
}

pub(super) fn client_message(e: &crate::ClientError) -> String {
    match e {
        crate::ClientError::Api { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

/// Keeps the task role's credentials at the endpoint fresh until aborted.
pub(super) async fn refresh_credentials(
    reporter: Arc<dyn Reporter>,
    endpoint: Arc<TaskEndpoint>,
    task_arn: String,
    credentials_id: String,
    mut issued_at: i64,
    mut expiration: i64,
) {
    loop {
        let delay = task_endpoint::refresh_delay(issued_at, expiration, epoch_secs());
        tokio::time::sleep(delay).await;
        match crate::role_credentials(
            reporter.as_ref(),
            &task_arn,
            berth_model::agent_protocol::ROLE_TASK,
        )
        .await
        {
            Ok(credentials) => {
                issued_at = epoch_secs();
                expiration = credentials.expiration;
                if !endpoint.set_credentials(&task_arn, &credentials_id, credentials) {
                    return;
                }
                tracing::debug!(task = %task_arn, "refreshed task role credentials");
            }
            Err(e) => {
                tracing::warn!(task = %task_arn, error = %client_message(&e), "refreshing task role credentials failed; retrying");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

/// What plumbs a running awsvpc task's interface again when it is gone.
pub(super) struct Replumbing {
    pub task_id: String,
    pub eni: TaskNetworkInterface,
}

/// Keeps an awsvpc task's security groups in force while it runs: looks
/// them up every [`POLICY_POLL`] and re-applies them when they changed (or
/// the namespace's process did), and every [`INTERFACE_CHECK_POLLS`] polls
/// makes sure the interface is still there. Ends when the pause container
/// is gone; the runner aborts it when the task stops.
pub(super) struct Enforcer {
    pub runtime: Arc<dyn Runtime>,
    pub reporter: Arc<dyn Reporter>,
    pub networks: Arc<dyn TaskNetworks>,
    pub task_arn: String,
    pub pause_id: String,
    pub applied: GetNetworkPolicyResponse,
    pub applied_pid: u32,
    pub replumbing: Option<Replumbing>,
    /// The VPC's resolver, whose DNS the groups never filter.
    pub resolver: Option<std::net::Ipv4Addr>,
    /// The task's interface (its VPC's router routes load balancers).
    pub eni: TaskNetworkInterface,
}

impl Enforcer {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let task_arn = self.task_arn.clone();
        let mut polls = 0u32;
        loop {
            tokio::time::sleep(POLICY_POLL).await;
            let pid = match self.runtime.inspect(&self.pause_id).await {
                Ok(Some(state)) => state.pid,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(task = %task_arn, error = %e, "inspecting the pause container failed");
                    continue;
                }
            };
            let Some(pid) = pid else { continue };
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(INTERFACE_CHECK_POLLS) {
                self.check_interface(pid).await;
            }
            let policy = match self.reporter.network_policy(&task_arn).await {
                Ok(policy) => policy,
                Err(e) => {
                    tracing::debug!(task = %task_arn, error = %client_message(&e), "looking up security groups failed; keeping the last ones");
                    continue;
                }
            };
            if policy == self.applied && pid == self.applied_pid {
                continue;
            }
            match self
                .networks
                .apply_policy(&task_arn, pid, &policy, self.resolver)
                .await
            {
                Ok(()) => {
                    tracing::info!(task = %task_arn, "security groups changed; re-applied");
                    if let Err(e) = self
                        .networks
                        .route_hosted(&self.eni, &super::hosted_addresses(&policy))
                        .await
                    {
                        tracing::warn!(task = %task_arn, error = %e, "routing load balancers' addresses failed; retrying");
                        continue;
                    }
                    self.applied = policy;
                    self.applied_pid = pid;
                }
                Err(e) => {
                    tracing::warn!(task = %task_arn, error = %e, "re-applying security groups failed; retrying")
                }
            }
        }
    }

    /// Plumbs the interface again when the namespace of `pid` lost it.
    async fn check_interface(&mut self, pid: u32) {
        let Some(replumbing) = &self.replumbing else {
            return;
        };
        let task_arn = self.task_arn.clone();
        match self.networks.is_attached(pid).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(task = %task_arn, "the task's interface is gone; plumbing it again");
                let plumbed = self
                    .networks
                    .attach(&replumbing.task_id, &replumbing.eni, pid)
                    .await;
                match plumbed {
                    // A new router: the policy's routes go in again.
                    Ok(()) => self.applied = GetNetworkPolicyResponse::default(),
                    Err(e) => {
                        tracing::warn!(task = %task_arn, error = %e, "plumbing the task's interface again failed; retrying")
                    }
                }
            }
            Err(e) => {
                tracing::debug!(task = %task_arn, error = %e, "checking the task's interface failed")
            }
        }
    }
}
