//! What CodeDeploy asks of ECS for a service with the CODE_DEPLOY
//! deployment controller. A CodeDeploy deployment is one ECS service
//! deployment run by ECS's own blue/green engine (`state::blue_green`): the
//! deployment group's target group pair and listeners stand in for the
//! service's `advancedConfiguration`, the deployment configuration's
//! traffic routing and termination wait for its strategy and bake time
//! (`ServiceRecord::code_deploy`).

use berth_model::shapes::ecs::{
    CanaryConfiguration, CapacityProviderStrategyItem, DeploymentConfiguration,
    LinearConfiguration, LoadBalancer, NetworkConfiguration, StopServiceDeploymentRequest,
    UpdateServiceRequest,
};
use berth_model::AwsError;
use berth_store::{Op, StoreExt};

use super::deployments;
use super::services::{self, Ports};
use super::EcsService;
use crate::error;
use crate::state::blue_green::{BLUE_GREEN, CANARY, LINEAR};
use crate::state::clusters::resolve_name;
use crate::state::keys::Scope;
use crate::state::records::{encode, load};
use crate::state::services::{
    resolve_service, service_not_found, CodeDeployRouting, ServiceRecord, ACTIVE,
};

/// A service as CodeDeploy's deployment groups see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeDeployTarget {
    pub cluster_arn: String,
    pub service_arn: String,
    /// ECS, CODE_DEPLOY or EXTERNAL.
    pub deployment_controller: String,
    /// Whether the service is ACTIVE.
    pub active: bool,
    /// The target groups of its `loadBalancers`.
    pub target_group_arns: Vec<String>,
}

/// How production traffic moves to the new revision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrafficShift {
    AllAtOnce,
    /// `percent` first, the rest `minutes` later.
    Canary {
        percent: f64,
        minutes: i32,
    },
    /// `percent` more every `minutes`.
    Linear {
        percent: f64,
        minutes: i32,
    },
}

/// One CodeDeploy deployment of a CODE_DEPLOY service.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeDeployStart {
    /// CodeDeploy's deployment id: starting the same one again is a no-op.
    pub deployment_id: String,
    pub cluster: String,
    pub service: String,
    pub task_definition: String,
    pub container_name: String,
    pub container_port: i32,
    pub platform_version: Option<String>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    /// The deployment group's pair: the service's target group and the
    /// other one.
    pub target_group_arns: Vec<String>,
    pub production_listener: String,
    pub test_listener: Option<String>,
    pub traffic: TrafficShift,
    /// Minutes the original revision keeps running once production is on
    /// the new one.
    pub termination_wait_minutes: i32,
    /// Production waits, once the test listener reaches the new revision,
    /// for [`EcsService::continue_code_deploy`] (CodeDeploy's
    /// deploymentReadyOption STOP_DEPLOYMENT).
    pub wait_to_continue: bool,
}

/// What CodeDeploy's ContinueDeployment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContinueWait {
    /// The wait before production traffic moves (READY_WAIT).
    Ready,
    /// The bake before the original revision stops (TERMINATION_WAIT).
    Termination,
}

/// Where an ECS service deployment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceDeploymentState {
    /// `stage`: ECS's lifecycle stage (or ROLLBACK_IN_PROGRESS).
    InProgress {
        stage: String,
        /// The test listener reaches the new revision and production waits
        /// for [`EcsService::continue_code_deploy`].
        waiting_to_continue: bool,
    },
    Succeeded,
    /// Production is back on the original revision.
    RolledBack {
        reason: String,
    },
    /// Stopped without rolling back (replaced, or failed).
    Failed {
        reason: String,
    },
}

fn configuration(traffic: TrafficShift, wait: i32) -> DeploymentConfiguration {
    let mut config = DeploymentConfiguration {
        bake_time_in_minutes: Some(wait.max(0)),
        ..DeploymentConfiguration::default()
    };
    match traffic {
        TrafficShift::AllAtOnce => config.strategy = Some(BLUE_GREEN.into()),
        TrafficShift::Canary { percent, minutes } => {
            config.strategy = Some(CANARY.into());
            config.canary_configuration = Some(CanaryConfiguration {
                canary_percent: Some(percent),
                canary_bake_time_in_minutes: Some(minutes),
            });
        }
        TrafficShift::Linear { percent, minutes } => {
            config.strategy = Some(LINEAR.into());
            config.linear_configuration = Some(LinearConfiguration {
                step_percent: Some(percent),
                step_bake_time_in_minutes: Some(minutes),
            });
        }
    }
    config
}

impl EcsService {
    /// The service a CodeDeploy deployment group names.
    pub fn code_deploy_target(
        &self,
        account: &str,
        region: &str,
        cluster: &str,
        service: &str,
    ) -> Result<CodeDeployTarget, AwsError> {
        let scope = Scope {
            account: account.into(),
            region: region.into(),
        };
        let cluster = resolve_name(&scope, Some(cluster))?;
        let name = resolve_service(&scope, &cluster, service)?;
        let (record, _) =
            load::<ServiceRecord>(self.store.as_ref(), &scope.service(&cluster, &name))?
                .ok_or_else(service_not_found)?;
        Ok(CodeDeployTarget {
            cluster_arn: scope.arn(&format!("cluster/{cluster}")),
            service_arn: record.arn().to_string(),
            deployment_controller: record
                .service
                .deployment_controller
                .as_ref()
                .and_then(|c| c.r#type.clone())
                .unwrap_or_else(|| "ECS".into()),
            active: record.status() == ACTIVE,
            target_group_arns: record
                .service
                .load_balancers
                .iter()
                .flatten()
                .filter_map(|lb| lb.target_group_arn.clone())
                .collect(),
        })
    }

    /// Starts `start` (or finds it started): the service runs its task
    /// definition in the pair's other target group, and ECS's blue/green
    /// engine moves production as `start.traffic` says. Answers the ECS
    /// service deployment's ARN.
    pub async fn start_code_deploy(
        &self,
        account: &str,
        region: &str,
        start: CodeDeployStart,
    ) -> Result<String, AwsError> {
        let scope = Scope {
            account: account.into(),
            region: region.into(),
        };
        let target = self.code_deploy_target(account, region, &start.cluster, &start.service)?;
        let Some(primary) = target.target_group_arns.first().cloned() else {
            return Err(error::invalid_parameter(
                "The service has no target group to deploy behind.",
            ));
        };
        if !start.target_group_arns.contains(&primary) {
            return Err(error::invalid_parameter(format!(
                "The deployment group's target groups do not include the service's target group {primary}."
            )));
        }
        let Some(alternate) = start
            .target_group_arns
            .iter()
            .find(|g| **g != primary)
            .cloned()
        else {
            return Err(error::invalid_parameter(
                "The deployment group needs two different target groups.",
            ));
        };
        let routing = CodeDeployRouting {
            deployment_id: start.deployment_id.clone(),
            ecs_deployment: String::new(),
            alternate_target_group_arn: alternate,
            production_listener: start.production_listener.clone(),
            test_listener: start.test_listener.clone(),
            configuration: configuration(start.traffic, start.termination_wait_minutes),
            hold_production: start.wait_to_continue,
            end_bake: false,
        };
        let input = UpdateServiceRequest {
            cluster: Some(start.cluster.clone()),
            service: Some(start.service.clone()),
            task_definition: Some(start.task_definition.clone()),
            network_configuration: start.network_configuration.clone(),
            platform_version: start.platform_version.clone(),
            capacity_provider_strategy: start.capacity_provider_strategy.clone(),
            load_balancers: Some(vec![LoadBalancer {
                target_group_arn: Some(primary),
                container_name: Some(start.container_name.clone()),
                container_port: Some(start.container_port),
                ..LoadBalancer::default()
            }]),
            force_new_deployment: Some(true),
            ..UpdateServiceRequest::default()
        };
        let ports = Ports {
            networks: self.networks.as_deref(),
            registries: self.registries.as_deref(),
            balancers: self.balancers.as_deref(),
        };
        let now = self.clock.now();
        let record = services::update_with(
            self.store.as_ref(),
            &scope,
            ports,
            now,
            input,
            Some(routing),
        )
        .await?;
        let id = record
            .code_deploy
            .as_ref()
            .filter(|cd| cd.deployment_id == start.deployment_id)
            .map(|cd| cd.ecs_deployment.clone())
            .ok_or_else(|| error::server("the CodeDeploy deployment was not recorded"))?;
        Ok(deployments::deployment_arn(
            &scope,
            &record.cluster,
            &record.name,
            &id,
        ))
    }

    /// Where the ECS service deployment `arn` stands.
    pub fn service_deployment_state(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<ServiceDeploymentState, AwsError> {
        let scope = Scope {
            account: account.into(),
            region: region.into(),
        };
        let state = deployments::state(self.store.as_ref(), &scope, arn)?.ok_or_else(|| {
            AwsError::bad_request(
                "ServiceDeploymentNotFoundException",
                "The service deployment does not exist.",
            )
        })?;
        let reason = state.reason.unwrap_or_default();
        Ok(match state.status {
            "SUCCESSFUL" => ServiceDeploymentState::Succeeded,
            "ROLLBACK_SUCCESSFUL" => ServiceDeploymentState::RolledBack { reason },
            "ROLLBACK_IN_PROGRESS" => ServiceDeploymentState::InProgress {
                stage: "ROLLBACK_IN_PROGRESS".into(),
                waiting_to_continue: false,
            },
            "STOPPED" => ServiceDeploymentState::Failed { reason },
            _ => ServiceDeploymentState::InProgress {
                stage: state.lifecycle_stage.unwrap_or_else(|| "SCALE_UP".into()),
                waiting_to_continue: state.waiting_to_continue,
            },
        })
    }

    /// Rolls the ECS service deployment `arn` back (StopServiceDeployment
    /// with ROLLBACK): production returns to the original revision.
    pub async fn roll_back_service_deployment(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<(), AwsError> {
        let scope = Scope {
            account: account.into(),
            region: region.into(),
        };
        let input = StopServiceDeploymentRequest {
            service_deployment_arn: Some(arn.to_string()),
            stop_type: Some("ROLLBACK".into()),
        };
        deployments::stop(self.store.as_ref(), &scope, self.clock.now(), input)
            .await
            .map(|_| ())
    }

    /// Ends a wait of the CodeDeploy deployment behind the ECS service
    /// deployment `arn`: production traffic moves ([`ContinueWait::Ready`])
    /// or the original revision stops ([`ContinueWait::Termination`]).
    /// Idempotent; a deployment that is no longer the service's CodeDeploy
    /// deployment answers ServiceDeploymentNotFoundException.
    pub async fn continue_code_deploy(
        &self,
        account: &str,
        region: &str,
        arn: &str,
        wait: ContinueWait,
    ) -> Result<(), AwsError> {
        let scope = Scope {
            account: account.into(),
            region: region.into(),
        };
        let not_found = || {
            AwsError::bad_request(
                "ServiceDeploymentNotFoundException",
                "The service deployment is not a CodeDeploy deployment under way.",
            )
        };
        let (cluster, name, id) =
            crate::state::services::parse_deployment_arn(&scope, "service-deployment", arn)
                .ok_or_else(not_found)?;
        let key = scope.service(&cluster, &name);
        self.store
            .update(move |view| {
                let (mut record, _) = load::<ServiceRecord>(view, &key)?.ok_or_else(not_found)?;
                let Some(cd) = record
                    .code_deploy
                    .as_mut()
                    .filter(|cd| deployments::number(&cd.ecs_deployment) == id)
                else {
                    return Err(not_found());
                };
                match wait {
                    ContinueWait::Ready if cd.hold_production => cd.hold_production = false,
                    ContinueWait::Termination if !cd.end_bake => cd.end_bake = true,
                    _ => return Ok((vec![], ())),
                }
                Ok((vec![Op::put(key.clone(), encode(&record)?)], ()))
            })
            .await
            .map_err(error::store)?
            .map(|_| ())
    }
}
