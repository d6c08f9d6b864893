//! The port to ECS: what CodeDeploy asks of Amazon ECS for a service whose
//! deployment controller is `CODE_DEPLOY`. The binary implements it over
//! berth-ecs; tests use fakes.

/// What CodeDeploy needs of ECS; implemented in the binary over berth-ecs.
#[async_trait::async_trait]
pub trait EcsDeployments: Send + Sync + 'static {
    /// The service a deployment group names: ACTIVE and deployed by CODE_DEPLOY.
    fn service(
        &self,
        account: &str,
        region: &str,
        cluster: &str,
        service: &str,
    ) -> Result<EcsServiceFacts, EcsError>;
    /// Starts the ECS side of `plan` (idempotent for the same plan.deployment_id: a repeated call after a crash answers
    /// the same service deployment ARN). Answers ECS's service deployment ARN.
    async fn start(
        &self,
        account: &str,
        region: &str,
        plan: &EcsDeploymentPlan,
    ) -> Result<String, EcsError>;
    /// Where an ECS service deployment (its ARN, as `start` answered) stands.
    fn status(
        &self,
        account: &str,
        region: &str,
        service_deployment_arn: &str,
    ) -> Result<EcsDeploymentStatus, EcsError>;
    /// Ends a wait of the ECS service deployment: production traffic moves
    /// ([`WaitType::Ready`]) or the original task set stops
    /// ([`WaitType::Termination`]). Idempotent.
    async fn continue_deployment(
        &self,
        account: &str,
        region: &str,
        service_deployment_arn: &str,
        wait: WaitType,
    ) -> Result<(), EcsError>;
    /// Stops it: production traffic goes back to the original task set's target group, the new tasks stop.
    async fn stop(
        &self,
        account: &str,
        region: &str,
        service_deployment_arn: &str,
    ) -> Result<(), EcsError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsServiceFacts {
    pub cluster_arn: String,
    pub service_arn: String,
    pub deployment_controller: String,
    /// The target group ARNs of the service's loadBalancers.
    pub target_group_arns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EcsDeploymentPlan {
    /// CodeDeploy's "d-XXXXXXXXX".
    pub deployment_id: String,
    pub cluster: String,
    pub service: String,
    /// As the AppSpec gives it.
    pub task_definition: String,
    pub container_name: String,
    pub container_port: i32,
    pub platform_version: Option<String>,
    /// The AppSpec's NetworkConfiguration / CapacityProviderStrategy turned into ECS's JSON shapes
    /// (awsvpcConfiguration {subnets, securityGroups, assignPublicIp}; [{capacityProvider, weight, base}]).
    pub network_configuration: Option<serde_json::Value>,
    pub capacity_provider_strategy: Option<serde_json::Value>,
    /// The group's pair (2).
    pub target_group_names: Vec<String>,
    pub production_listener_arns: Vec<String>,
    pub test_listener_arns: Vec<String>,
    pub traffic: TrafficRouting,
    pub termination_wait_minutes: i32,
    /// Production traffic waits for ContinueDeployment once the test
    /// listener reaches the new revision (deploymentReadyOption
    /// STOP_DEPLOYMENT).
    #[serde(default)]
    pub wait_to_continue: bool,
}

/// ContinueDeployment's `deploymentWaitType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WaitType {
    /// READY_WAIT: reroute production traffic now.
    Ready,
    /// TERMINATION_WAIT: stop the original task set now.
    Termination,
}

impl WaitType {
    pub fn parse(text: Option<&str>) -> Option<WaitType> {
        match text {
            None | Some("READY_WAIT") => Some(WaitType::Ready),
            Some("TERMINATION_WAIT") => Some(WaitType::Termination),
            Some(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TrafficRouting {
    AllAtOnce,
    Canary {
        percentage: i32,
        interval_minutes: i32,
    },
    Linear {
        percentage: i32,
        interval_minutes: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsDeploymentStatus {
    /// `stage`: ECS's lifecycle stage (SCALE_UP, TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME, CLEAN_UP ...).
    InProgress {
        stage: String,
        /// The test listener reaches the new revision and production waits
        /// for ContinueDeployment.
        waiting_to_continue: bool,
    },
    Succeeded,
    /// Rolled back (by `stop`, or by ECS's circuit breaker): production is on the original revision.
    RolledBack {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    #[error("{0}")]
    ServiceNotFound(String),
    #[error("{0}")]
    NotCodeDeploy(String),
    /// The plan does not fit the service (task definition, container, target groups, listeners): the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A port that answers [`EcsError::Unavailable`] to everything: for a
/// server whose ECS side is not connected (and for tests).
pub struct NoEcs;

const NO_ECS: &str = "Amazon ECS is not connected to CodeDeploy in this server.";

#[async_trait::async_trait]
impl EcsDeployments for NoEcs {
    fn service(&self, _: &str, _: &str, _: &str, _: &str) -> Result<EcsServiceFacts, EcsError> {
        Err(EcsError::Unavailable(NO_ECS.into()))
    }
    async fn start(&self, _: &str, _: &str, _: &EcsDeploymentPlan) -> Result<String, EcsError> {
        Err(EcsError::Unavailable(NO_ECS.into()))
    }
    fn status(&self, _: &str, _: &str, _: &str) -> Result<EcsDeploymentStatus, EcsError> {
        Err(EcsError::Unavailable(NO_ECS.into()))
    }
    async fn continue_deployment(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: WaitType,
    ) -> Result<(), EcsError> {
        Err(EcsError::Unavailable(NO_ECS.into()))
    }
    async fn stop(&self, _: &str, _: &str, _: &str) -> Result<(), EcsError> {
        Err(EcsError::Unavailable(NO_ECS.into()))
    }
}
