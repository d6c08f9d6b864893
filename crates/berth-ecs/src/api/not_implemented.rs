//! The ECS operations of the model Berth does not perform, each with the
//! reason: the caller is authorized for `ecs:<operation>` (so a refusal
//! reads as IAM's when it applies) and then told precisely what is missing,
//! never a fake success.

use berth_model::AwsError;

const DAEMONS: &str = "ECS Managed Daemons (daemons, daemon task definitions, their revisions and deployments) run only on Amazon ECS Managed Instances capacity providers, and Berth has no Managed Instances: it does not launch EC2 instances (CreateCapacityProvider refuses managedInstancesProvider). To run one task on every container instance, create a service with schedulingStrategy DAEMON.";
const EXPRESS: &str = "Express gateway services provision an Application Load Balancer, target groups, security groups and auto scaling policies; Berth has no Application Auto Scaling service yet.";

/// Every model operation Berth leaves unimplemented, with the reason.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("CreateDaemon", DAEMONS),
    ("DeleteDaemon", DAEMONS),
    ("DeleteDaemonTaskDefinition", DAEMONS),
    ("DescribeDaemon", DAEMONS),
    ("DescribeDaemonDeployments", DAEMONS),
    ("DescribeDaemonRevisions", DAEMONS),
    ("DescribeDaemonTaskDefinition", DAEMONS),
    ("ListDaemonDeployments", DAEMONS),
    ("ListDaemonTaskDefinitions", DAEMONS),
    ("ListDaemons", DAEMONS),
    ("RegisterDaemonTaskDefinition", DAEMONS),
    ("UpdateDaemon", DAEMONS),
    ("CreateExpressGatewayService", EXPRESS),
    ("DeleteExpressGatewayService", EXPRESS),
    ("DescribeExpressGatewayService", EXPRESS),
    ("UpdateExpressGatewayService", EXPRESS),
];

/// The reason `operation` is not implemented, if it is listed.
pub(crate) fn reason(operation: &str) -> Option<&'static str> {
    NOT_IMPLEMENTED
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, why)| *why)
}

/// The answer to an operation Berth does not perform.
pub(crate) fn refuse(operation: &str, why: &str) -> AwsError {
    AwsError::bad_request(
        "UnsupportedFeatureException",
        format!("Berth does not support {operation}: {why}"),
    )
}
