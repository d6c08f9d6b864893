//! CodeDeploy's records in the store.

use berth_model::shapes::codedeploy as sh;
use serde::{Deserialize, Serialize};

use crate::ecs::{EcsDeploymentPlan, WaitType};

/// An application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    /// Always `ECS` in Berth.
    pub compute_platform: String,
    pub create_time: f64,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// A custom deployment configuration (the predefined ones live in
/// [`crate::configs`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub id: String,
    pub name: String,
    pub compute_platform: String,
    pub create_time: f64,
    pub traffic_routing_config: sh::TrafficRoutingConfig,
}

/// A deployment group of an ECS application: one ECS service, one target
/// group pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    pub application: String,
    pub name: String,
    pub config_name: String,
    pub service_role_arn: String,
    pub cluster: String,
    pub service: String,
    /// Names of the pair's two target groups.
    pub target_groups: Vec<String>,
    pub prod_listeners: Vec<String>,
    #[serde(default)]
    pub test_listeners: Vec<String>,
    pub termination_wait_minutes: i32,
    /// deploymentReadyOption STOP_DEPLOYMENT's wait (minutes) for
    /// ContinueDeployment; `None`: CONTINUE_DEPLOYMENT.
    #[serde(default)]
    pub ready_wait_minutes: Option<i32>,
    #[serde(default)]
    pub auto_rollback: Option<sh::AutoRollbackConfiguration>,
    #[serde(default)]
    pub alarm_configuration: Option<sh::AlarmConfiguration>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    pub create_time: f64,
}

impl GroupRecord {
    pub fn blue_green(&self) -> sh::BlueGreenDeploymentConfiguration {
        sh::BlueGreenDeploymentConfiguration {
            terminate_blue_instances_on_deployment_success: Some(
                sh::BlueInstanceTerminationOption {
                    action: Some("TERMINATE".into()),
                    termination_wait_time_in_minutes: Some(self.termination_wait_minutes),
                },
            ),
            deployment_ready_option: Some(match self.ready_wait_minutes {
                None => sh::DeploymentReadyOption {
                    action_on_timeout: Some("CONTINUE_DEPLOYMENT".into()),
                    wait_time_in_minutes: Some(0),
                },
                Some(wait) => sh::DeploymentReadyOption {
                    action_on_timeout: Some("STOP_DEPLOYMENT".into()),
                    wait_time_in_minutes: Some(wait),
                },
            }),
            ..Default::default()
        }
    }

    pub fn load_balancer_info(&self) -> sh::LoadBalancerInfo {
        let route = |arns: &Vec<String>| sh::TrafficRoute {
            listener_arns: Some(arns.clone()),
        };
        sh::LoadBalancerInfo {
            target_group_pair_info_list: Some(vec![sh::TargetGroupPairInfo {
                target_groups: Some(
                    self.target_groups
                        .iter()
                        .map(|name| sh::TargetGroupInfo {
                            name: Some(name.clone()),
                        })
                        .collect(),
                ),
                prod_traffic_route: Some(route(&self.prod_listeners)),
                test_traffic_route: (!self.test_listeners.is_empty())
                    .then(|| route(&self.test_listeners)),
            }]),
            ..Default::default()
        }
    }

    /// Whether a deployment that fails is rolled back (`DEPLOYMENT_FAILURE`).
    pub fn rolls_back_on_failure(config: Option<&sh::AutoRollbackConfiguration>) -> bool {
        config.is_some_and(|c| {
            c.enabled == Some(true)
                && c.events
                    .as_ref()
                    .is_some_and(|e| e.iter().any(|e| e == "DEPLOYMENT_FAILURE"))
        })
    }
}

/// How a deployment ends once ECS has been told to stop (StopDeployment,
/// or an automatic rollback after a failure).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    /// `Stopped` or `Failed`.
    pub status: String,
    pub code: String,
    pub message: String,
    /// The rollback message, when production goes back to the original
    /// revision.
    #[serde(default)]
    pub rollback_message: Option<String>,
}

/// A deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub application: String,
    pub group: String,
    pub config_name: String,
    /// Created, InProgress, Succeeded, Failed, Stopped.
    pub status: String,
    pub create_time: f64,
    #[serde(default)]
    pub start_time: Option<f64>,
    #[serde(default)]
    pub complete_time: Option<f64>,
    pub revision: sh::RevisionLocation,
    #[serde(default)]
    pub description: Option<String>,
    pub creator: String,
    /// What ECS is asked to do; `None` when the AppSpec could not be read.
    #[serde(default)]
    pub plan: Option<EcsDeploymentPlan>,
    /// Why the deployment fails as soon as it runs (code, message): an
    /// unreadable AppSpec, Lambda hooks.
    #[serde(default)]
    pub invalid: Option<(String, String)>,
    #[serde(default)]
    pub auto_rollback: Option<sh::AutoRollbackConfiguration>,
    /// The group's settings when the deployment was created.
    pub blue_green: sh::BlueGreenDeploymentConfiguration,
    pub load_balancer_info: sh::LoadBalancerInfo,
    /// `<cluster>:<service>`: the ECS target's id.
    pub target_id: String,
    /// ECS's service deployment, once started.
    #[serde(default)]
    pub service_deployment_arn: Option<String>,
    /// ECS's lifecycle stage, as last seen.
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub error: Option<sh::ErrorInformation>,
    #[serde(default)]
    pub rollback_message: Option<String>,
    /// A stop asked for and not yet carried out.
    #[serde(default)]
    pub ending: Option<Ending>,
    /// When the deployment became Ready (waiting for ContinueDeployment).
    #[serde(default)]
    pub ready_since: Option<f64>,
    /// ContinueDeployment requests not yet carried out, in order.
    #[serde(default)]
    pub continues: Vec<WaitType>,
    #[serde(default)]
    pub status_messages: Vec<String>,
    /// When the record last changed (the ECS target's lastUpdatedAt).
    pub updated_at: f64,
}

pub const CREATED: &str = "Created";
pub const IN_PROGRESS: &str = "InProgress";
/// Waiting for ContinueDeployment before production traffic moves.
pub const READY: &str = "Ready";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
pub const STOPPED: &str = "Stopped";

impl DeploymentRecord {
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), SUCCEEDED | FAILED | STOPPED)
    }
}
