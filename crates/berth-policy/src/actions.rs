//! Mapping API operations to IAM action names.
//!
//! An IAM action is `<service prefix>:<operation>`. For the services Berth
//! speaks, the SigV4 signing name and the IAM prefix coincide (`ecs`, `ecr`,
//! `secretsmanager`, `ssm`, `logs`, `sts`, `iam`, `elasticloadbalancing`,
//! `application-autoscaling`); the few AWS services where they differ are
//! mapped below so the gateway can always pass the signing name.
//!
//! # Resources per request
//!
//! Extracting the resource ARN is each service's job (it knows its request
//! shapes); this crate only matches it. Notes for the services:
//!
//! * Operations without resource-level permissions are evaluated against
//!   the resource `"*"`, so only statements with `"Resource": "*"` (or a
//!   pattern matching the literal `*`) grant them. In Berth these include
//!   `ecr:GetAuthorizationToken`, `ecs:ListClusters`,
//!   `ecs:RegisterTaskDefinition`, `ecs:DeregisterTaskDefinition`,
//!   `ecs:DescribeTaskDefinition`, `ecs:ListTaskDefinitions`,
//!   `ecs:ListTaskDefinitionFamilies`, `ecs:ListAccountSettings`,
//!   `ecs:PutAccountSetting(Default)`, `ecs:DiscoverPollEndpoint`,
//!   `secretsmanager:ListSecrets`, `secretsmanager:GetRandomPassword`,
//!   `ssm:DescribeParameters`, `logs:DescribeLogGroups` and the `iam:List*`
//!   calls without a path, and `sts:GetSessionToken`.
//! * `sts:GetCallerIdentity` needs no permission at all in AWS; the gateway
//!   should not authorize it.
//! * ECS: `ecs:CreateCluster` uses the new cluster's ARN;
//!   `ecs:CreateService`/`UpdateService`/`DeleteService`/`DescribeServices`
//!   use `service/<cluster>/<name>`; `ecs:RunTask` and `ecs:StartTask` use
//!   the *task definition* ARN (`task-definition/<family>:<rev>`), with the
//!   cluster in the `ecs:cluster` condition key; `ecs:StopTask` and
//!   `ecs:DescribeTasks` use `task/<cluster>/<id>`; `ecs:ListServices`,
//!   `ecs:ListTasks` and `ecs:ListContainerInstances` use the cluster ARN;
//!   `ecs:DescribeContainerInstances` and the agent's
//!   `ecs:RegisterContainerInstance`/`SubmitTaskStateChange` use the cluster
//!   ARN; `ecs:TagResource`/`UntagResource`/`ListTagsForResource` use the
//!   tagged resource's ARN. Batch calls (`DescribeClusters` with several
//!   names) are authorized once per named resource.
//! * ECR: every repository call uses `repository/<name>`. The OCI
//!   distribution endpoints map to actions as AWS documents for
//!   `docker pull` (`ecr:BatchGetImage`, `ecr:GetDownloadUrlForLayer`,
//!   `ecr:BatchCheckLayerAvailability`) and `docker push`
//!   (`ecr:InitiateLayerUpload`, `ecr:UploadLayerPart`,
//!   `ecr:CompleteLayerUpload`, `ecr:PutImage`, plus
//!   `ecr:BatchCheckLayerAvailability`); the registry's bearer token comes
//!   from `ecr:GetAuthorizationToken` on `*`.
//! * Secrets Manager: the secret's full ARN including the six-character
//!   suffix (`secret:<name>-AbCdEf`), even when the caller passed a name.
//! * SSM Parameter Store: `parameter/<name without leading slash>`, so
//!   `/app/db` is `arn:aws:ssm:<r>:<a>:parameter/app/db`;
//!   `ssm:GetParametersByPath` uses the path as if it were a parameter.
//! * CloudWatch Logs: `log-group:<name>` for group calls and
//!   `log-group:<name>:log-stream:<stream>` for stream calls
//!   (`logs:PutLogEvents`, `logs:GetLogEvents`).
//! * STS: `sts:AssumeRole` uses the role ARN, and also needs the role's
//!   trust policy ([`crate::evaluate_trust`]).
//! * IAM: `user/<path><name>`, `role/<path><name>`, `policy/<path><name>`;
//!   `iam:PassRole` is checked by ECS on the task/execution role ARN with
//!   `iam:PassedToService` set to `ecs-tasks.amazonaws.com`.

/// Returns the IAM action for an operation called on a service identified by
/// its SigV4 signing name: `("ecs", "DescribeClusters")` gives
/// `"ecs:DescribeClusters"`.
pub fn iam_action(signing_service: &str, operation: &str) -> String {
    format!("{}:{operation}", iam_prefix(signing_service))
}

/// The IAM service prefix for a SigV4 signing name.
pub fn iam_prefix(signing_service: &str) -> &str {
    match signing_service {
        // CloudWatch metrics sign as `monitoring` but authorize as `cloudwatch`.
        "monitoring" => "cloudwatch",
        // SES signs as `email` (v1) but its actions are `ses:`.
        "email" => "ses",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names() {
        let cases = [
            ("ecs", "DescribeClusters", "ecs:DescribeClusters"),
            ("ecs", "RunTask", "ecs:RunTask"),
            (
                "ecs",
                "RegisterTaskDefinition",
                "ecs:RegisterTaskDefinition",
            ),
            ("ecr", "GetAuthorizationToken", "ecr:GetAuthorizationToken"),
            ("ecr", "BatchGetImage", "ecr:BatchGetImage"),
            ("ecr", "SetRepositoryPolicy", "ecr:SetRepositoryPolicy"),
            (
                "secretsmanager",
                "GetSecretValue",
                "secretsmanager:GetSecretValue",
            ),
            (
                "secretsmanager",
                "PutResourcePolicy",
                "secretsmanager:PutResourcePolicy",
            ),
            ("ssm", "GetParameters", "ssm:GetParameters"),
            ("ssm", "GetParametersByPath", "ssm:GetParametersByPath"),
            ("logs", "PutLogEvents", "logs:PutLogEvents"),
            ("logs", "CreateLogGroup", "logs:CreateLogGroup"),
            ("sts", "AssumeRole", "sts:AssumeRole"),
            ("sts", "GetCallerIdentity", "sts:GetCallerIdentity"),
            ("iam", "CreateRole", "iam:CreateRole"),
            ("iam", "PassRole", "iam:PassRole"),
            ("monitoring", "PutMetricData", "cloudwatch:PutMetricData"),
            ("email", "SendEmail", "ses:SendEmail"),
            (
                "application-autoscaling",
                "RegisterScalableTarget",
                "application-autoscaling:RegisterScalableTarget",
            ),
        ];
        for (svc, op, want) in cases {
            assert_eq!(iam_action(svc, op), want, "{svc} {op}");
        }
    }

    #[test]
    fn prefixes_pass_through_for_berth_services() {
        for svc in ["ecs", "ecr", "secretsmanager", "ssm", "logs", "iam", "sts"] {
            assert_eq!(iam_prefix(svc), svc);
        }
    }
}
