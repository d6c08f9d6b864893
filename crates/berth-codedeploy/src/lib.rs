//! The AWS CodeDeploy subset Amazon ECS blue/green deployments need
//! (`codedeploy`, JSON 1.1, target prefix `CodeDeploy_20141006`), for the
//! ECS compute platform only: Berth has no EC2 instances for CodeDeploy's
//! agent and no AWS Lambda.
//!
//! Applications, deployment configurations (the predefined ECS ones and
//! custom TimeBasedCanary / TimeBasedLinear / AllAtOnce ones), deployment
//! groups naming one ECS service with a target group pair and listeners,
//! and deployments of an AppSpec (YAML or JSON, [`appspec`]). A deployment
//! is carried out by ECS's own blue/green engine, reached through the
//! [`EcsDeployments`] port the binary implements; [`CodeDeployService::run_deployments`]
//! (leader-only) moves deployments along: Created → InProgress (ECS
//! started) → Succeeded / Failed / Stopped.
//!
//! Store layout, under `codedeploy/<account>/<region>/`:
//! `applications/<name>` ([`AppRecord`]), `configs/<name>` (custom
//! [`ConfigRecord`]s), `groups/<application>/<group>` ([`GroupRecord`]),
//! `deployments/<id>` ([`DeploymentRecord`]).

pub mod appspec;
pub mod configs;
pub mod ecs;
pub mod engine;
mod ops;
mod records;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use berth_model::shapes::codedeploy as shapes;
use berth_model::{json_op, AwsError, JsonService, RequestContext};
use berth_store::Store;

pub use ecs::{
    EcsDeploymentPlan, EcsDeploymentStatus, EcsDeployments, EcsError, EcsServiceFacts, NoEcs,
    TrafficRouting, WaitType,
};
pub use records::{AppRecord, ConfigRecord, DeploymentRecord, Ending, GroupRecord};

const SERVER_OR_LAMBDA: &str = "Berth deploys to Amazon ECS only: it has no EC2 or on-premises \
                                instances running the CodeDeploy agent and no AWS Lambda.";

/// The CodeDeploy operations Berth does not implement, and why.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "AddTagsToOnPremisesInstances",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only and \
         has no on-premises instances.",
    ),
    (
        "RemoveTagsFromOnPremisesInstances",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only and \
         has no on-premises instances.",
    ),
    (
        "RegisterOnPremisesInstance",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only.",
    ),
    (
        "DeregisterOnPremisesInstance",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only.",
    ),
    (
        "GetOnPremisesInstance",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only.",
    ),
    (
        "BatchGetOnPremisesInstances",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only.",
    ),
    (
        "ListOnPremisesInstances",
        "On-premises instances run the CodeDeploy agent; Berth deploys to Amazon ECS only.",
    ),
    (
        "BatchGetDeploymentInstances",
        "Deployment instances are EC2/on-premises targets; Berth's deployments target Amazon \
         ECS services (see BatchGetDeploymentTargets).",
    ),
    (
        "GetDeploymentInstance",
        "Deployment instances are EC2/on-premises targets; Berth's deployments target Amazon \
         ECS services (see GetDeploymentTarget).",
    ),
    (
        "ListDeploymentInstances",
        "Deployment instances are EC2/on-premises targets; Berth's deployments target Amazon \
         ECS services (see ListDeploymentTargets).",
    ),
    (
        "SkipWaitTimeForInstanceTermination",
        "Skipping the wait before terminating original instances applies to EC2 blue/green \
         deployments; Berth has no EC2 instances.",
    ),
    (
        "DeleteGitHubAccountToken",
        "Berth does not connect to GitHub: ECS revisions are AppSpec content given to \
         CreateDeployment.",
    ),
    (
        "ListGitHubAccountTokenNames",
        "Berth does not connect to GitHub: ECS revisions are AppSpec content given to \
         CreateDeployment.",
    ),
    (
        "RegisterApplicationRevision",
        "Berth keeps no revision registry (S3 or GitHub): an ECS deployment's AppSpec content \
         is given to CreateDeployment and shown by GetDeployment.",
    ),
    (
        "GetApplicationRevision",
        "Berth keeps no revision registry (S3 or GitHub): an ECS deployment's AppSpec content \
         is shown by GetDeployment.",
    ),
    (
        "ListApplicationRevisions",
        "Berth keeps no revision registry (S3 or GitHub): an ECS deployment's AppSpec content \
         is shown by GetDeployment.",
    ),
    (
        "BatchGetApplicationRevisions",
        "Berth keeps no revision registry (S3 or GitHub): an ECS deployment's AppSpec content \
         is shown by GetDeployment.",
    ),
    (
        "PutLifecycleEventHookExecutionStatus",
        "Lifecycle hooks are AWS Lambda functions, and Berth has no AWS Lambda: a deployment \
         whose AppSpec has Hooks fails.",
    ),
    (
        "DeleteResourcesByExternalId",
        "External ids link deployments to AWS CloudFormation stacks, which Berth does not have.",
    ),
];

/// The CodeDeploy service.
pub struct CodeDeployService {
    store: Arc<dyn Store>,
    ecs: Arc<dyn EcsDeployments>,
}

impl CodeDeployService {
    /// `ecs`: the port to ECS deployment groups are checked against (the
    /// service they name exists and uses the CODE_DEPLOY controller).
    pub fn new(store: Arc<dyn Store>, ecs: Arc<dyn EcsDeployments>) -> Self {
        CodeDeployService { store, ecs }
    }

    /// Moves every unfinished deployment of every account and Region one
    /// step: Created → ECS started (InProgress) → Succeeded / Failed, and
    /// stops requested by StopDeployment or by an automatic rollback.
    /// Leader-only; safe to call again at any time (after a crash too).
    /// Answers how many deployment records it changed.
    /// `minute`: seconds in a minute of the deployments' waits.
    pub async fn run_deployments(
        &self,
        port: &dyn EcsDeployments,
        now: f64,
        minute: f64,
    ) -> Result<usize, berth_store::StoreError> {
        engine::run(&self.store, port, now, minute).await
    }
}

#[async_trait::async_trait]
impl JsonService for CodeDeployService {
    fn target_prefix(&self) -> &'static str {
        shapes::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        shapes::SIGNING_NAME
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let s = self;
        match operation {
            "CreateApplication" => json_op!(body, |i| ops::create_application(s, ctx, i).await),
            "GetApplication" => json_op!(body, |i| ops::get_application(s, ctx, i)),
            "BatchGetApplications" => {
                json_op!(body, |i| ops::batch_get_applications(s, ctx, i))
            }
            "ListApplications" => json_op!(body, |i| ops::list_applications(s, ctx, i)),
            "UpdateApplication" => json_op!(body, |i| ops::update_application(s, ctx, i).await),
            "DeleteApplication" => json_op!(body, |i| ops::delete_application(s, ctx, i).await),
            "CreateDeploymentConfig" => {
                json_op!(body, |i| ops::create_deployment_config(s, ctx, i).await)
            }
            "GetDeploymentConfig" => json_op!(body, |i| ops::get_deployment_config(s, ctx, i)),
            "ListDeploymentConfigs" => {
                json_op!(body, |i| ops::list_deployment_configs(s, ctx, i))
            }
            "DeleteDeploymentConfig" => {
                json_op!(body, |i| ops::delete_deployment_config(s, ctx, i).await)
            }
            "CreateDeploymentGroup" => {
                json_op!(body, |i| ops::create_deployment_group(s, ctx, i).await)
            }
            "GetDeploymentGroup" => json_op!(body, |i| ops::get_deployment_group(s, ctx, i)),
            "BatchGetDeploymentGroups" => {
                json_op!(body, |i| ops::batch_get_deployment_groups(s, ctx, i))
            }
            "ListDeploymentGroups" => {
                json_op!(body, |i| ops::list_deployment_groups(s, ctx, i))
            }
            "UpdateDeploymentGroup" => {
                json_op!(body, |i| ops::update_deployment_group(s, ctx, i).await)
            }
            "DeleteDeploymentGroup" => {
                json_op!(body, |i| ops::delete_deployment_group(s, ctx, i).await)
            }
            "CreateDeployment" => json_op!(body, |i| ops::create_deployment(s, ctx, i).await),
            "GetDeployment" => json_op!(body, |i| ops::get_deployment(s, ctx, i)),
            "BatchGetDeployments" => json_op!(body, |i| ops::batch_get_deployments(s, ctx, i)),
            "ListDeployments" => json_op!(body, |i| ops::list_deployments(s, ctx, i)),
            "StopDeployment" => json_op!(body, |i| ops::stop_deployment(s, ctx, i).await),
            "ContinueDeployment" => {
                json_op!(body, |i| ops::continue_deployment(s, ctx, i).await)
            }
            "GetDeploymentTarget" => json_op!(body, |i| ops::get_deployment_target(s, ctx, i)),
            "BatchGetDeploymentTargets" => {
                json_op!(body, |i| ops::batch_get_deployment_targets(s, ctx, i))
            }
            "ListDeploymentTargets" => {
                json_op!(body, |i| ops::list_deployment_targets(s, ctx, i))
            }
            "TagResource" => json_op!(body, |i| ops::tag_resource(s, ctx, i).await),
            "UntagResource" => json_op!(body, |i| ops::untag_resource(s, ctx, i).await),
            "ListTagsForResource" => {
                json_op!(body, |i| ops::list_tags_for_resource(s, ctx, i))
            }
            other => {
                if let Some((_, reason)) = NOT_IMPLEMENTED.iter().find(|(op, _)| *op == other) {
                    ctx.no_authorization_needed();
                    return Err(AwsError::bad_request(
                        "UnsupportedActionForDeploymentTypeException",
                        format!("{other} is not available in Berth: {reason}"),
                    ));
                }
                Err(AwsError::unknown_operation(format!(
                    "Operation {other} is not supported."
                )))
            }
        }
    }
}
