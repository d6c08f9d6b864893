//! AWS managed policies that ECS users commonly attach, as published by AWS.
//!
//! The documents are copied from AWS's managed policy reference (default
//! versions as noted on each constant) so that `attach-role-policy
//! --policy-arn arn:aws:iam::aws:policy/...` means the same thing in Berth.
//! Many grant actions on services Berth does not implement; those actions
//! simply never come up in a Berth request.
//!
//! AWS revises these documents over time; when refreshing, keep the text
//! byte-for-byte as `aws iam get-policy-version` returns it.

/// An AWS managed policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedPolicy {
    /// The policy name, e.g. `AdministratorAccess`.
    pub name: &'static str,
    /// The policy ARN, e.g. `arn:aws:iam::aws:policy/AdministratorAccess`.
    pub arn: &'static str,
    /// The AWS default version id this copy corresponds to.
    pub version_id: &'static str,
    /// The policy document JSON.
    pub document: &'static str,
}

impl ManagedPolicy {
    /// Parses the document; the unit tests guarantee this succeeds.
    pub fn policy(&self) -> Result<crate::Policy, crate::PolicyError> {
        crate::Policy::parse_identity(self.document)
    }

    /// The IAM path AWS reports for the policy (`/` or `/service-role/`).
    pub fn path(&self) -> &'static str {
        match self.arn.strip_prefix("arn:aws:iam::aws:policy") {
            Some(rest) => match rest.rfind('/') {
                Some(i) => &rest[..=i],
                None => "/",
            },
            None => "/",
        }
    }
}

/// `AmazonECSTaskExecutionRolePolicy` (v1): Lets the ECS agent pull images from ECR and write container logs (the task *execution* role).
pub const AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY: ManagedPolicy = ManagedPolicy {
    name: "AmazonECSTaskExecutionRolePolicy",
    arn: "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
    version_id: "v1",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Effect" : "Allow",
      "Action" : [
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents"
      ],
      "Resource" : "*"
    }
  ]
}"#,
};

/// `AmazonEC2ContainerRegistryReadOnly` (v3): Read-only access to ECR repositories, including image pulls.
pub const AMAZON_EC2_CONTAINER_REGISTRY_READ_ONLY: ManagedPolicy = ManagedPolicy {
    name: "AmazonEC2ContainerRegistryReadOnly",
    arn: "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    version_id: "v3",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Effect" : "Allow",
      "Action" : [
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:GetRepositoryPolicy",
        "ecr:DescribeRepositories",
        "ecr:ListImages",
        "ecr:DescribeImages",
        "ecr:BatchGetImage",
        "ecr:GetLifecyclePolicy",
        "ecr:GetLifecyclePolicyPreview",
        "ecr:ListTagsForResource",
        "ecr:DescribeImageScanFindings"
      ],
      "Resource" : "*"
    }
  ]
}"#,
};

/// `SecretsManagerReadWrite` (v5): Read/write access to Secrets Manager (plus the console's lookups in other services).
pub const SECRETS_MANAGER_READ_WRITE: ManagedPolicy = ManagedPolicy {
    name: "SecretsManagerReadWrite",
    arn: "arn:aws:iam::aws:policy/SecretsManagerReadWrite",
    version_id: "v5",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Sid" : "BasePermissions",
      "Effect" : "Allow",
      "Action" : [
        "secretsmanager:*",
        "cloudformation:CreateChangeSet",
        "cloudformation:DescribeChangeSet",
        "cloudformation:DescribeStackResource",
        "cloudformation:DescribeStacks",
        "cloudformation:ExecuteChangeSet",
        "docdb-elastic:GetCluster",
        "docdb-elastic:ListClusters",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "kms:DescribeKey",
        "kms:ListAliases",
        "kms:ListKeys",
        "lambda:ListFunctions",
        "rds:DescribeDBClusters",
        "rds:DescribeDBInstances",
        "redshift:DescribeClusters",
        "redshift-serverless:ListWorkgroups",
        "redshift-serverless:GetNamespace",
        "tag:GetResources"
      ],
      "Resource" : "*"
    },
    {
      "Sid" : "LambdaPermissions",
      "Effect" : "Allow",
      "Action" : [
        "lambda:AddPermission",
        "lambda:CreateFunction",
        "lambda:GetFunction",
        "lambda:InvokeFunction",
        "lambda:UpdateFunctionConfiguration"
      ],
      "Resource" : "arn:aws:lambda:*:*:function:SecretsManager*"
    },
    {
      "Sid" : "SARPermissions",
      "Effect" : "Allow",
      "Action" : [
        "serverlessrepo:CreateCloudFormationChangeSet",
        "serverlessrepo:GetApplication"
      ],
      "Resource" : "arn:aws:serverlessrepo:*:*:applications/SecretsManager*"
    },
    {
      "Sid" : "S3Permissions",
      "Effect" : "Allow",
      "Action" : [
        "s3:GetObject"
      ],
      "Resource" : [
        "arn:aws:s3:::awsserverlessrepo-changesets*",
        "arn:aws:s3:::secrets-manager-rotation-apps-*/*"
      ]
    }
  ]
}"#,
};

/// `AmazonSSMReadOnlyAccess` (v1): Read-only access to Systems Manager, including Parameter Store reads.
pub const AMAZON_SSM_READ_ONLY_ACCESS: ManagedPolicy = ManagedPolicy {
    name: "AmazonSSMReadOnlyAccess",
    arn: "arn:aws:iam::aws:policy/AmazonSSMReadOnlyAccess",
    version_id: "v1",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Effect" : "Allow",
      "Action" : [
        "ssm:Describe*",
        "ssm:Get*",
        "ssm:List*"
      ],
      "Resource" : "*"
    }
  ]
}"#,
};

/// `CloudWatchLogsFullAccess` (v8): Full access to CloudWatch Logs.
pub const CLOUDWATCH_LOGS_FULL_ACCESS: ManagedPolicy = ManagedPolicy {
    name: "CloudWatchLogsFullAccess",
    arn: "arn:aws:iam::aws:policy/CloudWatchLogsFullAccess",
    version_id: "v8",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Sid" : "CloudWatchLogsFullAccess",
      "Effect" : "Allow",
      "Action" : [
        "logs:*",
        "cloudwatch:GenerateQuery",
        "cloudwatch:GenerateQueryResultsSummary",
        "observabilityadmin:GetS3TableIntegration",
        "observabilityadmin:ListS3TableIntegrations",
        "observabilityadmin:ListTelemetryPipelines"
      ],
      "Resource" : "*"
    }
  ]
}"#,
};

/// `AdministratorAccess` (v1): Every action on every resource.
pub const ADMINISTRATOR_ACCESS: ManagedPolicy = ManagedPolicy {
    name: "AdministratorAccess",
    arn: "arn:aws:iam::aws:policy/AdministratorAccess",
    version_id: "v1",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Effect" : "Allow",
      "Action" : "*",
      "Resource" : "*"
    }
  ]
}"#,
};

/// `AmazonECS_FullAccess` (v21): Administrative access to ECS and the integrations its console uses.
pub const AMAZON_ECS_FULL_ACCESS: ManagedPolicy = ManagedPolicy {
    name: "AmazonECS_FullAccess",
    arn: "arn:aws:iam::aws:policy/AmazonECS_FullAccess",
    version_id: "v21",
    document: r#"{
  "Version" : "2012-10-17",
  "Statement" : [
    {
      "Sid" : "ECSIntegrationsManagementPolicy",
      "Effect" : "Allow",
      "Action" : [
        "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:DescribeScalingActivities",
        "application-autoscaling:DescribeScalingPolicies",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:RegisterScalableTarget",
        "appmesh:DescribeVirtualGateway",
        "appmesh:DescribeVirtualNode",
        "appmesh:ListMeshes",
        "appmesh:ListVirtualGateways",
        "appmesh:ListVirtualNodes",
        "autoscaling:CreateAutoScalingGroup",
        "autoscaling:CreateLaunchConfiguration",
        "autoscaling:DeleteAutoScalingGroup",
        "autoscaling:DeleteLaunchConfiguration",
        "autoscaling:Describe*",
        "autoscaling:UpdateAutoScalingGroup",
        "cloudformation:CreateStack",
        "cloudformation:DeleteStack",
        "cloudformation:DescribeStack*",
        "cloudformation:UpdateStack",
        "cloudwatch:DeleteAlarms",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:GetMetricStatistics",
        "cloudwatch:PutMetricAlarm",
        "codedeploy:BatchGetApplicationRevisions",
        "codedeploy:BatchGetApplications",
        "codedeploy:BatchGetDeploymentGroups",
        "codedeploy:BatchGetDeployments",
        "codedeploy:ContinueDeployment",
        "codedeploy:CreateApplication",
        "codedeploy:CreateDeployment",
        "codedeploy:CreateDeploymentGroup",
        "codedeploy:GetApplication",
        "codedeploy:GetApplicationRevision",
        "codedeploy:GetDeployment",
        "codedeploy:GetDeploymentConfig",
        "codedeploy:GetDeploymentGroup",
        "codedeploy:GetDeploymentTarget",
        "codedeploy:ListApplicationRevisions",
        "codedeploy:ListApplications",
        "codedeploy:ListDeploymentConfigs",
        "codedeploy:ListDeploymentGroups",
        "codedeploy:ListDeployments",
        "codedeploy:ListDeploymentTargets",
        "codedeploy:RegisterApplicationRevision",
        "codedeploy:StopDeployment",
        "ec2:AssociateRouteTable",
        "ec2:AttachInternetGateway",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:CancelSpotFleetRequests",
        "ec2:CreateInternetGateway",
        "ec2:CreateLaunchTemplate",
        "ec2:CreateRoute",
        "ec2:CreateRouteTable",
        "ec2:CreateSecurityGroup",
        "ec2:CreateSubnet",
        "ec2:CreateVpc",
        "ec2:DeleteLaunchTemplate",
        "ec2:DeleteSubnet",
        "ec2:DeleteVpc",
        "ec2:Describe*",
        "ec2:DetachInternetGateway",
        "ec2:DisassociateRouteTable",
        "ec2:ModifySubnetAttribute",
        "ec2:ModifyVpcAttribute",
        "ec2:RequestSpotFleet",
        "ec2:RunInstances",
        "ecs:*",
        "elasticfilesystem:DescribeAccessPoints",
        "elasticfilesystem:DescribeFileSystems",
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:CreateTargetGroup",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteRule",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeRules",
        "elasticloadbalancing:DescribeTargetGroups",
        "events:DeleteRule",
        "events:DescribeRule",
        "events:ListRuleNamesByTarget",
        "events:ListTargetsByRule",
        "events:PutRule",
        "events:PutTargets",
        "events:RemoveTargets",
        "fsx:DescribeFileSystems",
        "iam:ListAttachedRolePolicies",
        "iam:ListInstanceProfiles",
        "iam:ListRoles",
        "lambda:ListFunctions",
        "logs:CreateLogGroup",
        "logs:DescribeLogGroups",
        "logs:FilterLogEvents",
        "route53:CreateHostedZone",
        "route53:DeleteHostedZone",
        "route53:GetHealthCheck",
        "route53:GetHostedZone",
        "route53:ListHostedZonesByName",
        "servicediscovery:CreatePrivateDnsNamespace",
        "servicediscovery:CreateService",
        "servicediscovery:DeleteService",
        "servicediscovery:GetNamespace",
        "servicediscovery:GetOperation",
        "servicediscovery:GetService",
        "servicediscovery:ListNamespaces",
        "servicediscovery:ListServices",
        "servicediscovery:UpdateService",
        "sns:ListTopics"
      ],
      "Resource" : [
        "*"
      ]
    },
    {
      "Sid" : "SSMPolicy",
      "Effect" : "Allow",
      "Action" : [
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath"
      ],
      "Resource" : "arn:aws:ssm:*:*:parameter/aws/service/ecs*"
    },
    {
      "Sid" : "ManagedCloudformationResourcesCleanupPolicy",
      "Effect" : "Allow",
      "Action" : [
        "ec2:DeleteInternetGateway",
        "ec2:DeleteRoute",
        "ec2:DeleteRouteTable",
        "ec2:DeleteSecurityGroup"
      ],
      "Resource" : [
        "*"
      ],
      "Condition" : {
        "StringLike" : {
          "ec2:ResourceTag/aws:cloudformation:stack-name" : "EC2ContainerService-*"
        }
      }
    },
    {
      "Sid" : "TasksPassRolePolicy",
      "Effect" : "Allow",
      "Action" : "iam:PassRole",
      "Resource" : [
        "*"
      ],
      "Condition" : {
        "StringLike" : {
          "iam:PassedToService" : "ecs-tasks.amazonaws.com"
        }
      }
    },
    {
      "Sid" : "InfrastructurePassRolePolicy",
      "Effect" : "Allow",
      "Action" : "iam:PassRole",
      "Resource" : [
        "arn:aws:iam::*:role/ecsInfrastructureRole"
      ],
      "Condition" : {
        "StringEquals" : {
          "iam:PassedToService" : "ecs.amazonaws.com"
        }
      }
    },
    {
      "Sid" : "InstancePassRolePolicy",
      "Effect" : "Allow",
      "Action" : "iam:PassRole",
      "Resource" : [
        "arn:aws:iam::*:role/ecsInstanceRole*"
      ],
      "Condition" : {
        "StringLike" : {
          "iam:PassedToService" : [
            "ec2.amazonaws.com",
            "ec2.amazonaws.com.cn"
          ]
        }
      }
    },
    {
      "Sid" : "AutoScalingPassRolePolicy",
      "Effect" : "Allow",
      "Action" : "iam:PassRole",
      "Resource" : [
        "arn:aws:iam::*:role/ecsAutoscaleRole*"
      ],
      "Condition" : {
        "StringLike" : {
          "iam:PassedToService" : [
            "application-autoscaling.amazonaws.com",
            "application-autoscaling.amazonaws.com.cn"
          ]
        }
      }
    },
    {
      "Sid" : "ServiceLinkedRoleCreationPolicy",
      "Effect" : "Allow",
      "Action" : "iam:CreateServiceLinkedRole",
      "Resource" : "*",
      "Condition" : {
        "StringLike" : {
          "iam:AWSServiceName" : [
            "ecs.amazonaws.com",
            "autoscaling.amazonaws.com",
            "ecs.application-autoscaling.amazonaws.com",
            "spot.amazonaws.com",
            "spotfleet.amazonaws.com"
          ]
        }
      }
    },
    {
      "Sid" : "ELBTaggingPolicy",
      "Effect" : "Allow",
      "Action" : [
        "elasticloadbalancing:AddTags"
      ],
      "Resource" : "*",
      "Condition" : {
        "StringEquals" : {
          "elasticloadbalancing:CreateAction" : [
            "CreateTargetGroup",
            "CreateRule",
            "CreateListener",
            "CreateLoadBalancer"
          ]
        }
      }
    }
  ]
}"#,
};

/// Every managed policy Berth ships.
pub const ALL: &[ManagedPolicy] = &[
    AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY,
    AMAZON_EC2_CONTAINER_REGISTRY_READ_ONLY,
    SECRETS_MANAGER_READ_WRITE,
    AMAZON_SSM_READ_ONLY_ACCESS,
    CLOUDWATCH_LOGS_FULL_ACCESS,
    ADMINISTRATOR_ACCESS,
    AMAZON_ECS_FULL_ACCESS,
];

/// Looks a managed policy up by ARN.
pub fn by_arn(arn: &str) -> Option<&'static ManagedPolicy> {
    ALL.iter().find(|p| p.arn == arn)
}

/// Looks a managed policy up by name.
pub fn by_name(name: &str) -> Option<&'static ManagedPolicy> {
    ALL.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_managed_policy_parses_as_an_identity_policy() {
        for p in ALL {
            let policy = p.policy().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(!policy.statements.is_empty(), "{}", p.name);
            assert!(p.arn.ends_with(p.name), "{}", p.name);
        }
    }

    #[test]
    fn lookups_and_paths() {
        let exec = by_name("AmazonECSTaskExecutionRolePolicy").expect("present");
        assert_eq!(exec.path(), "/service-role/");
        assert_eq!(by_arn(exec.arn), Some(exec));
        assert_eq!(ADMINISTRATOR_ACCESS.path(), "/");
        assert!(by_name("NoSuchPolicy").is_none());
    }
}
