//! CodeDeploy's port to ECS ([`berth_codedeploy::EcsDeployments`]) over
//! berth-ecs and berth-elb: deployment groups name their target groups by
//! name and their listeners by ARN; ECS wants ARNs and runs the deployment
//! with its own blue/green engine (`EcsService::start_code_deploy`).

use std::sync::Arc;

use berth_codedeploy::{
    EcsDeploymentPlan, EcsDeploymentStatus, EcsDeployments, EcsError, EcsServiceFacts,
    TrafficRouting, WaitType,
};
use berth_ecs::{CodeDeployStart, ContinueWait, EcsService, ServiceDeploymentState, TrafficShift};
use berth_elb::ElbService;
use berth_model::AwsError;

pub struct EcsForCodeDeploy {
    pub ecs: Arc<EcsService>,
    pub elb: Arc<ElbService>,
}

/// ECS's and ELB's errors as CodeDeploy's port says them.
fn port_error(e: AwsError) -> EcsError {
    match e.code.as_ref() {
        "ServiceNotFoundException" | "ClusterNotFoundException" => {
            EcsError::ServiceNotFound(e.message)
        }
        "InvalidParameterException"
        | "ClientException"
        | "TargetGroupNotFound"
        | "RuleNotFound"
        | "ListenerNotFound"
        | "InvalidConfigurationRequest"
        | "ConflictException"
        | "ServiceDeploymentNotFoundException" => EcsError::Invalid(e.message),
        _ => EcsError::Unavailable(e.message),
    }
}

fn shift(traffic: TrafficRouting) -> TrafficShift {
    match traffic {
        TrafficRouting::AllAtOnce => TrafficShift::AllAtOnce,
        TrafficRouting::Canary {
            percentage,
            interval_minutes,
        } => TrafficShift::Canary {
            percent: f64::from(percentage),
            minutes: interval_minutes,
        },
        TrafficRouting::Linear {
            percentage,
            interval_minutes,
        } => TrafficShift::Linear {
            percent: f64::from(percentage),
            minutes: interval_minutes,
        },
    }
}

impl EcsForCodeDeploy {
    /// The listener's forward action must reach one of `groups`.
    fn check_listener(
        &self,
        account: &str,
        region: &str,
        listener: &str,
        groups: &[String],
    ) -> Result<(), EcsError> {
        let forward = self
            .elb
            .rule_forward(account, region, listener)
            .map_err(port_error)?;
        if forward
            .groups
            .iter()
            .any(|(g, _)| groups.iter().any(|p| p == g))
        {
            Ok(())
        } else {
            Err(EcsError::Invalid(format!(
                "The listener {listener} does not forward to the deployment group's target groups."
            )))
        }
    }
}

#[async_trait::async_trait]
impl EcsDeployments for EcsForCodeDeploy {
    fn service(
        &self,
        account: &str,
        region: &str,
        cluster: &str,
        service: &str,
    ) -> Result<EcsServiceFacts, EcsError> {
        let target = self
            .ecs
            .code_deploy_target(account, region, cluster, service)
            .map_err(port_error)?;
        if !target.active {
            return Err(EcsError::ServiceNotFound(format!(
                "The ECS service {service} in cluster {cluster} is not ACTIVE."
            )));
        }
        if target.deployment_controller != "CODE_DEPLOY" {
            return Err(EcsError::NotCodeDeploy(format!(
                "The ECS service {service} in cluster {cluster} uses the {} deployment controller, not CODE_DEPLOY.",
                target.deployment_controller
            )));
        }
        Ok(EcsServiceFacts {
            cluster_arn: target.cluster_arn,
            service_arn: target.service_arn,
            deployment_controller: target.deployment_controller,
            target_group_arns: target.target_group_arns,
        })
    }

    async fn start(
        &self,
        account: &str,
        region: &str,
        plan: &EcsDeploymentPlan,
    ) -> Result<String, EcsError> {
        let mut groups = Vec::new();
        for name in &plan.target_group_names {
            let arn = self
                .elb
                .target_group_arn(account, region, name)
                .map_err(port_error)?
                .ok_or_else(|| {
                    EcsError::Invalid(format!("The target group {name} does not exist."))
                })?;
            groups.push(arn);
        }
        let Some(production) = plan.production_listener_arns.first().cloned() else {
            return Err(EcsError::Invalid(
                "The deployment group has no production listener.".into(),
            ));
        };
        self.check_listener(account, region, &production, &groups)?;
        let test = plan.test_listener_arns.first().cloned();
        if let Some(test) = &test {
            self.check_listener(account, region, test, &groups)?;
        }
        let network_configuration = plan
            .network_configuration
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| {
                EcsError::Invalid(format!(
                    "The AppSpec's NetworkConfiguration is invalid: {e}"
                ))
            })?;
        let capacity_provider_strategy = plan
            .capacity_provider_strategy
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| {
                EcsError::Invalid(format!(
                    "The AppSpec's CapacityProviderStrategy is invalid: {e}"
                ))
            })?;
        let start = CodeDeployStart {
            deployment_id: plan.deployment_id.clone(),
            cluster: plan.cluster.clone(),
            service: plan.service.clone(),
            task_definition: plan.task_definition.clone(),
            container_name: plan.container_name.clone(),
            container_port: plan.container_port,
            platform_version: plan.platform_version.clone(),
            network_configuration,
            capacity_provider_strategy,
            target_group_arns: groups,
            production_listener: production,
            test_listener: test,
            traffic: shift(plan.traffic),
            termination_wait_minutes: plan.termination_wait_minutes,
            wait_to_continue: plan.wait_to_continue,
        };
        self.ecs
            .start_code_deploy(account, region, start)
            .await
            .map_err(port_error)
    }

    fn status(
        &self,
        account: &str,
        region: &str,
        service_deployment_arn: &str,
    ) -> Result<EcsDeploymentStatus, EcsError> {
        let state = self
            .ecs
            .service_deployment_state(account, region, service_deployment_arn)
            .map_err(port_error)?;
        Ok(match state {
            ServiceDeploymentState::InProgress {
                stage,
                waiting_to_continue,
            } => EcsDeploymentStatus::InProgress {
                stage,
                waiting_to_continue,
            },
            ServiceDeploymentState::Succeeded => EcsDeploymentStatus::Succeeded,
            ServiceDeploymentState::RolledBack { reason } => {
                EcsDeploymentStatus::RolledBack { reason }
            }
            ServiceDeploymentState::Failed { reason } => EcsDeploymentStatus::Failed { reason },
        })
    }

    async fn continue_deployment(
        &self,
        account: &str,
        region: &str,
        service_deployment_arn: &str,
        wait: WaitType,
    ) -> Result<(), EcsError> {
        let wait = match wait {
            WaitType::Ready => ContinueWait::Ready,
            WaitType::Termination => ContinueWait::Termination,
        };
        self.ecs
            .continue_code_deploy(account, region, service_deployment_arn, wait)
            .await
            .map_err(port_error)
    }

    async fn stop(
        &self,
        account: &str,
        region: &str,
        service_deployment_arn: &str,
    ) -> Result<(), EcsError> {
        self.ecs
            .roll_back_service_deployment(account, region, service_deployment_arn)
            .await
            .map_err(port_error)
    }
}

/// Leader work: moves CodeDeploy's deployments along (start, follow the
/// ECS service deployment, stop) whenever a CodeDeploy record changes, and
/// every second to follow ECS's progress. Every step is a store write that
/// repeats harmlessly, so another leader picks up where this one stopped.
/// `minute`: seconds in a minute of the deployments' waits (60; tests
/// shorten it with `--deployment-minute-seconds`).
pub async fn run_deployments(
    store: Arc<dyn berth_store::Store>,
    codedeploy: Arc<berth_codedeploy::CodeDeployService>,
    port: Arc<EcsForCodeDeploy>,
    minute: f64,
) {
    let mut last_failure: Option<String> = None;
    loop {
        let revision = store.revision();
        match codedeploy
            .run_deployments(port.as_ref(), berth_util::time::now_epoch(), minute)
            .await
        {
            Ok(_) => last_failure = None,
            Err(e) => {
                let why = e.to_string();
                if last_failure.as_deref() != Some(why.as_str()) {
                    tracing::warn!(error = %why, "moving CodeDeploy deployments failed; retrying");
                    last_failure = Some(why);
                }
            }
        }
        let mut watch = store.watch("codedeploy/", revision).await.ok();
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = async {
                match watch.as_mut() {
                    Some(w) => { w.next().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}
