//! What IAM authorization a call needs, and how a refusal reads.
//!
//! Each operation maps to its IAM action (`<service prefix>:<Operation>`) and
//! the resource ARNs the Service Authorization Reference lists for it, read
//! from the request's own parameters; operations without a resource type
//! check `*`. The decision itself belongs to an [`Authorizer`] (the IAM
//! policy engine); this module is pure.

use berth_model::{AwsError, RequestContext};
use serde_json::Value;

/// One permission a call needs: an IAM action on a resource ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub action: String,
    pub resource: String,
}

/// Why a caller was refused: the first requirement not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub action: String,
    pub resource: String,
    /// An explicit `Deny` matched (rather than no `Allow`).
    pub explicit: bool,
    /// The explicit `Deny` was in the resource's own policy.
    pub in_resource_policy: bool,
}

/// Where the authorizer finds a resource's own policy (ECR repository
/// policies), which can allow or deny beside the caller's identity policies.
pub trait ResourcePolicySource: Send + Sync + 'static {
    /// The policy document attached to `resource_arn`, if any.
    fn resource_policy(&self, resource_arn: &str) -> Option<String>;
}

impl Denial {
    /// AWS's wording: `User: <arn> is not authorized to perform: <action> on
    /// resource: <arn> because no identity-based policy allows the <action>
    /// action` (or `with an explicit deny in an identity-based policy`).
    pub fn message(&self, caller_arn: &str) -> String {
        let why = if self.explicit && self.in_resource_policy {
            "with an explicit deny in a resource-based policy".to_string()
        } else if self.explicit {
            "with an explicit deny in an identity-based policy".to_string()
        } else {
            format!(
                "because no identity-based policy allows the {} action",
                self.action
            )
        };
        format!(
            "User: {caller_arn} is not authorized to perform: {} on resource: {} {why}",
            self.action, self.resource
        )
    }

    /// The error a JSON 1.1 service answers (`AccessDeniedException`, 400 as
    /// ECS and the other JSON services answer it).
    pub fn json_error(&self, caller_arn: &str) -> AwsError {
        AwsError::new(400, "AccessDeniedException", self.message(caller_arn))
    }

    /// The error EC2 answers (`UnauthorizedOperation`, 403).
    pub fn ec2_error(&self, caller_arn: &str) -> AwsError {
        AwsError::new(
            403,
            "UnauthorizedOperation",
            format!(
                "You are not authorized to perform this operation. {}",
                self.message(caller_arn)
            ),
        )
    }

    /// The error a Query service answers (`AccessDenied`, 403).
    pub fn query_error(&self, caller_arn: &str) -> AwsError {
        AwsError::new(403, "AccessDenied", self.message(caller_arn))
    }
}

/// Decides whether the request's principal may do everything required.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, ctx: &RequestContext, requirements: &[Requirement]) -> Result<(), Denial>;
}

/// The IAM action prefix of a signing name.
fn prefix(signing_name: &str) -> &str {
    signing_name
}

struct Arns<'a> {
    ctx: &'a RequestContext,
    service: &'a str,
}

impl Arns<'_> {
    /// `arn:aws:<service>:<region>:<account>:<rest>`, or `name` itself when it
    /// already is an ARN.
    fn arn(&self, rest: &str) -> String {
        format!(
            "arn:aws:{}:{}:{}:{rest}",
            self.service, self.ctx.region, self.ctx.account_id
        )
    }

    fn named(&self, kind: &str, name: &str) -> String {
        if name.starts_with("arn:") {
            name.to_string()
        } else {
            self.arn(&format!("{kind}{name}"))
        }
    }
}

fn string<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str)
}

fn strings<'a>(body: &'a Value, field: &str) -> Vec<&'a str> {
    body.get(field)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The cluster name of an ECS request (`cluster` as a name or ARN).
fn ecs_cluster(body: &Value) -> String {
    let cluster = string(body, "cluster").unwrap_or("default");
    cluster
        .rsplit_once(":cluster/")
        .map_or(cluster, |(_, name)| name)
        .to_string()
}

fn ecs_resources(arns: &Arns, operation: &str, body: &Value) -> Vec<String> {
    let cluster = ecs_cluster(body);
    let scoped = |kind: &str, id: &str| arns.named(&format!("{kind}/{cluster}/"), id);
    let task_definition = |td: &str| {
        if td.starts_with("arn:") || td.contains(':') {
            arns.named("task-definition/", td)
        } else {
            arns.arn(&format!("task-definition/{td}:*"))
        }
    };
    let many = |field: &str, f: &dyn Fn(&str) -> String| -> Vec<String> {
        strings(body, field).into_iter().map(f).collect()
    };
    match operation {
        "CreateCluster" => {
            vec![arns.named("cluster/", string(body, "clusterName").unwrap_or("default"))]
        }
        "DescribeClusters" => {
            let names = strings(body, "clusters");
            if names.is_empty() {
                vec![arns.named("cluster/", "default")]
            } else {
                names
                    .into_iter()
                    .map(|n| arns.named("cluster/", n))
                    .collect()
            }
        }
        "DeleteCluster"
        | "UpdateCluster"
        | "UpdateClusterSettings"
        | "PutClusterCapacityProviders"
        | "ListContainerInstances"
        | "RegisterContainerInstance"
        | "PutAttributes"
        | "DeleteAttributes" => vec![arns.named("cluster/", &cluster)],
        "DescribeContainerInstances" | "UpdateContainerInstancesState" => {
            many("containerInstances", &|id| scoped("container-instance", id))
        }
        "DeregisterContainerInstance" => string(body, "containerInstance")
            .map(|id| vec![scoped("container-instance", id)])
            .unwrap_or_default(),
        "DescribeTasks" => many("tasks", &|id| scoped("task", id)),
        "StopTask" => string(body, "task")
            .map(|id| vec![scoped("task", id)])
            .unwrap_or_default(),
        "DescribeServices" => many("services", &|id| scoped("service", id)),
        "CreateService" => string(body, "serviceName")
            .map(|name| vec![scoped("service", name)])
            .unwrap_or_default(),
        "UpdateService" | "DeleteService" => string(body, "service")
            .map(|name| vec![scoped("service", name)])
            .unwrap_or_default(),
        "RunTask" | "StartTask" | "DescribeTaskDefinition" | "DeregisterTaskDefinition" => {
            string(body, "taskDefinition")
                .map(|td| vec![task_definition(td)])
                .unwrap_or_default()
        }
        "DeleteTaskDefinitions" => many("taskDefinitions", &|td| task_definition(td)),
        "TagResource" | "UntagResource" | "ListTagsForResource" => string(body, "resourceArn")
            .map(|a| vec![a.to_string()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn ecr_resources(arns: &Arns, body: &Value) -> Vec<String> {
    if let Some(arn) = string(body, "resourceArn") {
        return vec![arn.to_string()];
    }
    string(body, "repositoryName")
        .map(|name| vec![arns.named("repository/", name)])
        .unwrap_or_default()
}

fn secret_resources(arns: &Arns, body: &Value) -> Vec<String> {
    if let Some(id) = string(body, "SecretId").or_else(|| string(body, "Name")) {
        return vec![arns.named("secret:", id)];
    }
    strings(body, "SecretIdList")
        .into_iter()
        .map(|id| arns.named("secret:", id))
        .collect()
}

fn parameter_arn(arns: &Arns, name: &str) -> String {
    if name.starts_with("arn:") {
        return name.to_string();
    }
    // `name:version` / `name:label` selectors name the parameter.
    let name = name.split(':').next().unwrap_or(name);
    berth_model::arn::ssm_parameter_arn(&arns.ctx.region, &arns.ctx.account_id, name)
}

fn ssm_resources(arns: &Arns, body: &Value) -> Vec<String> {
    if let Some(name) = string(body, "Name").or_else(|| string(body, "Path")) {
        return vec![parameter_arn(arns, name)];
    }
    if let Some(id) = string(body, "ResourceId") {
        return vec![parameter_arn(arns, id)];
    }
    strings(body, "Names")
        .into_iter()
        .map(|n| parameter_arn(arns, n))
        .collect()
}

fn logs_resources(arns: &Arns, body: &Value) -> Vec<String> {
    if let Some(arn) = string(body, "resourceArn") {
        return vec![arn.to_string()];
    }
    let Some(group) = string(body, "logGroupName").or_else(|| string(body, "logGroupIdentifier"))
    else {
        return Vec::new();
    };
    if group.starts_with("arn:") {
        return vec![group.to_string()];
    }
    match string(body, "logStreamName") {
        Some(stream) => vec![arns.arn(&format!("log-group:{group}:log-stream:{stream}"))],
        None => vec![arns.arn(&format!("log-group:{group}"))],
    }
}

/// What a JSON 1.1 call needs. `body` is the raw request; a body that does
/// not parse needs `<action>` on `*` (the handler then refuses it anyway).
pub fn json_requirements(
    ctx: &RequestContext,
    signing_name: &str,
    operation: &str,
    body: &[u8],
) -> Vec<Requirement> {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let arns = Arns {
        ctx,
        service: signing_name,
    };
    let resources = match signing_name {
        "ecs" => ecs_resources(&arns, operation, &parsed),
        "ecr" => ecr_resources(&arns, &parsed),
        "secretsmanager" => secret_resources(&arns, &parsed),
        "ssm" => ssm_resources(&arns, &parsed),
        "logs" => logs_resources(&arns, &parsed),
        _ => Vec::new(),
    };
    requirements(signing_name, operation, resources)
}

fn requirements(signing_name: &str, operation: &str, resources: Vec<String>) -> Vec<Requirement> {
    let action = format!("{}:{operation}", prefix(signing_name));
    if resources.is_empty() {
        return vec![Requirement {
            action,
            resource: "*".to_string(),
        }];
    }
    resources
        .into_iter()
        .map(|resource| Requirement {
            action: action.clone(),
            resource,
        })
        .collect()
}

/// What a Query call needs. STS's GetCallerIdentity needs nothing (AWS
/// answers it even under an explicit deny), and AssumeRole is decided by the
/// STS service itself (trust policy plus the caller's policies).
pub fn query_requirements(
    ctx: &RequestContext,
    signing_name: &str,
    action: &str,
    params: &[(String, String)],
) -> Vec<Requirement> {
    if signing_name == "sts" {
        return Vec::new();
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let account = &ctx.account_id;
    let mut resources = Vec::new();
    if signing_name == "iam" {
        if let Some(arn) = param("PolicyArn") {
            resources.push(arn.to_string());
        } else if let Some(name) = param("PolicyName").filter(|_| action == "CreatePolicy") {
            resources.push(format!("arn:aws:iam::{account}:policy/{name}"));
        }
        if let Some(user) = param("UserName") {
            resources.push(format!("arn:aws:iam::{account}:user/{user}"));
        }
        if let Some(role) = param("RoleName") {
            resources.push(format!("arn:aws:iam::{account}:role/{role}"));
        }
        // A policy action is authorized on the policy, an attachment on the
        // principal it changes: keep the principal when both are named.
        if resources.len() > 1 {
            resources.remove(0);
        }
    }
    requirements(signing_name, action, resources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::{Principal, PrincipalKind};

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: "r".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            principal: Principal {
                kind: PrincipalKind::User,
                arn: "arn:aws:iam::123456789012:user/alice".into(),
                user_id: "AIDA".into(),
                account_id: "123456789012".into(),
                access_key_id: "AKIA".into(),
            },
        }
    }

    fn resources(service: &str, op: &str, body: &str) -> Vec<String> {
        json_requirements(&ctx(), service, op, body.as_bytes())
            .into_iter()
            .map(|r| {
                assert_eq!(r.action, format!("{service}:{op}"));
                r.resource
            })
            .collect()
    }

    #[test]
    fn ecs_operations_name_their_resources() {
        let arn = "arn:aws:ecs:us-east-1:123456789012";
        assert_eq!(
            resources(
                "ecs",
                "DescribeClusters",
                r#"{"clusters":["a","arn:aws:ecs:us-east-1:123456789012:cluster/b"]}"#
            ),
            [format!("{arn}:cluster/a"), format!("{arn}:cluster/b")]
        );
        assert_eq!(
            resources("ecs", "DescribeClusters", "{}"),
            [format!("{arn}:cluster/default")]
        );
        assert_eq!(
            resources("ecs", "CreateCluster", r#"{"clusterName":"x"}"#),
            [format!("{arn}:cluster/x")]
        );
        assert_eq!(
            resources("ecs", "DescribeTasks", r#"{"cluster":"c","tasks":["t1"]}"#),
            [format!("{arn}:task/c/t1")]
        );
        assert_eq!(
            resources(
                "ecs",
                "UpdateService",
                r#"{"cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/c","service":"web"}"#
            ),
            [format!("{arn}:service/c/web")]
        );
        assert_eq!(
            resources("ecs", "RunTask", r#"{"taskDefinition":"web"}"#),
            [format!("{arn}:task-definition/web:*")]
        );
        assert_eq!(
            resources("ecs", "RunTask", r#"{"taskDefinition":"web:3"}"#),
            [format!("{arn}:task-definition/web:3")]
        );
        assert_eq!(resources("ecs", "ListClusters", "{}"), ["*"]);
        assert_eq!(
            resources("ecs", "DescribeClusters", "not json"),
            [format!("{arn}:cluster/default")]
        );
    }

    #[test]
    fn other_services_name_their_resources() {
        assert_eq!(
            resources("secretsmanager", "GetSecretValue", r#"{"SecretId":"db"}"#),
            ["arn:aws:secretsmanager:us-east-1:123456789012:secret:db"]
        );
        assert_eq!(
            resources("ssm", "GetParameter", r#"{"Name":"/app/db:3"}"#),
            ["arn:aws:ssm:us-east-1:123456789012:parameter/app/db"]
        );
        assert_eq!(
            resources("ssm", "GetParameters", r#"{"Names":["a","/b"]}"#),
            [
                "arn:aws:ssm:us-east-1:123456789012:parameter/a",
                "arn:aws:ssm:us-east-1:123456789012:parameter/b"
            ]
        );
        assert_eq!(
            resources(
                "logs",
                "PutLogEvents",
                r#"{"logGroupName":"/g","logStreamName":"s"}"#
            ),
            ["arn:aws:logs:us-east-1:123456789012:log-group:/g:log-stream:s"]
        );
        assert_eq!(
            resources("ecr", "DescribeImages", r#"{"repositoryName":"web"}"#),
            ["arn:aws:ecr:us-east-1:123456789012:repository/web"]
        );
        assert_eq!(resources("ecr", "GetAuthorizationToken", "{}"), ["*"]);
    }

    #[test]
    fn query_operations_name_their_resources() {
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = query_requirements(&ctx(), "iam", "CreateUser", &p(&[("UserName", "bob")]));
        assert_eq!(r[0].action, "iam:CreateUser");
        assert_eq!(r[0].resource, "arn:aws:iam::123456789012:user/bob");
        let r = query_requirements(
            &ctx(),
            "iam",
            "AttachUserPolicy",
            &p(&[
                ("UserName", "bob"),
                ("PolicyArn", "arn:aws:iam::aws:policy/X"),
            ]),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].resource, "arn:aws:iam::123456789012:user/bob");
        assert_eq!(
            query_requirements(&ctx(), "iam", "ListUsers", &[])[0].resource,
            "*"
        );
        assert!(query_requirements(&ctx(), "sts", "GetCallerIdentity", &[]).is_empty());
    }

    #[test]
    fn denial_messages_read_like_aws() {
        let d = Denial {
            action: "ecs:CreateCluster".into(),
            resource: "arn:aws:ecs:us-east-1:1:cluster/x".into(),
            explicit: false,
            in_resource_policy: false,
        };
        assert_eq!(
            d.message("arn:aws:iam::1:user/a"),
            "User: arn:aws:iam::1:user/a is not authorized to perform: ecs:CreateCluster on \
             resource: arn:aws:ecs:us-east-1:1:cluster/x because no identity-based policy \
             allows the ecs:CreateCluster action"
        );
        let e = Denial {
            explicit: true,
            ..d
        }
        .query_error("arn:aws:iam::1:user/a");
        assert_eq!((e.status, &*e.code), (403, "AccessDenied"));
        assert!(e
            .message
            .ends_with("with an explicit deny in an identity-based policy"));
    }
}
