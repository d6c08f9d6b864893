//! ECS authorization through the real handler and the real IAM authorizer:
//! a policy-simulation table (principal policy, operation with names,
//! partial ARNs and old-format ARNs, expected Allow / explicit Deny / no
//! match), and a walk over every ECS operation as a user without policies.

use std::sync::Arc;

use berth_ecs::{EcsService, Presence};
use berth_iam::{Iam, IamAuthorizer, IamService};
use berth_model::shapes::ecs::OPERATIONS;
use berth_model::{
    Access, AwsError, CredentialSource, DenialStyle, JsonService, Principal, PrincipalKind,
    QueryService, RequestContext,
};
use berth_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn arn(resource: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:{resource}")
}

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    iam: Arc<Iam>,
    iam_svc: Arc<IamService>,
    ecs: EcsService,
    presence: Arc<Presence>,
    root: RequestContext,
    authorizer: Arc<IamAuthorizer>,
    users: std::cell::Cell<u32>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
        let iam = Iam::new(store.clone());
        let root = RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::Root,
                arn: format!("arn:aws:iam::{ACCOUNT}:root"),
                user_id: ACCOUNT.into(),
                account_id: ACCOUNT.into(),
                access_key_id: "AKIAROOTROOTROOTROOT".into(),
            },
            REGION,
        );
        let presence = Arc::new(Presence::default());
        Fixture {
            iam_svc: iam.iam_service(),
            authorizer: Arc::new(IamAuthorizer::new(iam.clone())),
            ecs: EcsService::new(store.clone(), presence.clone()),
            store,
            presence,
            iam,
            root,
            _dir: dir,
            users: std::cell::Cell::new(0),
        }
    }

    fn iam_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn iam(&self, action: &str, params: &[(&str, &str)]) -> String {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.iam_svc
            .handle(&self.root, action, &params)
            .await
            .unwrap_or_else(|e| panic!("{action}: {e:?}"))
    }

    /// A new user with `policy` (none when `None`), as its requests reach
    /// the ECS handler: IAM enforced by the real authorizer.
    async fn user(&self, policy: Option<Value>) -> RequestContext {
        let n = self.users.get() + 1;
        self.users.set(n);
        let name = format!("user{n}");
        self.iam("CreateUser", &[("UserName", &name)]).await;
        if let Some(policy) = policy {
            self.iam(
                "PutUserPolicy",
                &[
                    ("UserName", &name),
                    ("PolicyName", "p"),
                    ("PolicyDocument", &policy.to_string()),
                ],
            )
            .await;
        }
        let out = self.iam("CreateAccessKey", &[("UserName", &name)]).await;
        let start = out.find("<AccessKeyId>").unwrap() + "<AccessKeyId>".len();
        let end = out[start..].find('<').unwrap() + start;
        let principal = self
            .iam
            .credentials()
            .resolve(&out[start..end])
            .unwrap()
            .principal;
        RequestContext::for_principal(principal, REGION).with_access(Access::new(
            Some(self.authorizer.clone()),
            DenialStyle::Json,
            false,
        ))
    }

    async fn call(&self, ctx: &RequestContext, op: &str, input: &Value) -> Result<Value, AwsError> {
        let body = serde_json::to_vec(input).unwrap();
        let out = self.ecs.handle(ctx, op, &body).await?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    async fn root(&self, op: &str, input: Value) -> Value {
        self.call(&self.root, op, &input)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e:?}"))
    }
}

fn allow_all_but(deny: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"},
        deny,
    ]})
}

fn allow(statement: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": [statement]})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allow,
    ExplicitDeny,
    NoMatch,
}

/// The state the table acts on: clusters `default`, `prod`, `blue` (tagged
/// team=blue) and `red` (team=red); one container instance and one task in
/// `default`; a service `web` in `prod`; task definitions `web` (no role)
/// and `admin` (an admin task role).
struct World {
    task_id: String,
    instance_id: String,
}

async fn world(f: &Fixture) -> World {
    for (name, team) in [
        ("default", None),
        ("prod", None),
        ("blue", Some("blue")),
        ("red", Some("red")),
    ] {
        let mut input = json!({"clusterName": name});
        if let Some(team) = team {
            input["tags"] = json!([{"key": "team", "value": team}]);
        }
        f.root("CreateCluster", input).await;
    }
    let resources = json!([
        {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 8192},
    ]);
    let out = f
        .root(
            "RegisterContainerInstance",
            json!({"cluster": "default", "totalResources": resources, "attributes": [
                {"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"},
                {"name": "com.amazonaws.ecs.capability.task-iam-role"},
            ]}),
        )
        .await;
    let instance_arn = out["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string();
    // As if its agent were connected, so RunTask places on it.
    f.presence.touch(&instance_arn);
    let container = json!([{"name": "app", "image": "busybox", "memory": 64}]);
    f.root(
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": container}),
    )
    .await;
    f.root(
        "RegisterTaskDefinition",
        json!({"family": "admin", "taskRoleArn": role("admin"), "containerDefinitions": container}),
    )
    .await;
    let out = f
        .root(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web"}),
        )
        .await;
    let task_arn = out["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    f.root(
        "CreateService",
        json!({"cluster": "prod", "serviceName": "web", "taskDefinition": "web", "desiredCount": 0}),
    )
    .await;
    World {
        task_id: task_arn.rsplit('/').next().unwrap().to_string(),
        instance_id: instance_arn.rsplit('/').next().unwrap().to_string(),
    }
}

fn outcome(result: &Result<Value, AwsError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Allow,
        Err(e) if e.code == "AccessDeniedException" => {
            if e.message
                .ends_with("with an explicit deny in an identity-based policy")
            {
                Outcome::ExplicitDeny
            } else {
                assert!(
                    e.message
                        .contains("because no identity-based policy allows"),
                    "{e:?}"
                );
                Outcome::NoMatch
            }
        }
        // An answer after authorization (the call was allowed).
        Err(_) => Outcome::Allow,
    }
}

#[tokio::test]
async fn policy_simulation_table() {
    let f = Fixture::new();
    let w = world(&f).await;
    let id = w.task_id.as_str();
    let deny_default_tasks = allow_all_but(json!(
        {"Effect": "Deny", "Action": "ecs:*", "Resource": "arn:aws:ecs:*:*:task/default/*"}
    ));
    let tasks_of_default = allow(json!(
        {"Effect": "Allow", "Action": "ecs:DescribeTasks", "Resource": "arn:aws:ecs:*:*:task/default/*"}
    ));
    let prod_cluster = allow(json!(
        {"Effect": "Allow", "Action": "ecs:DescribeClusters", "Resource": arn("cluster/prod")}
    ));
    let prod_services = allow(json!(
        {"Effect": "Allow", "Action": "ecs:DescribeServices", "Resource": arn("service/prod/*")}
    ));
    let deny_prod_web = allow_all_but(json!(
        {"Effect": "Deny", "Action": "ecs:UpdateService", "Resource": arn("service/prod/web")}
    ));
    let deny_prod_cluster = allow_all_but(json!(
        {"Effect": "Deny", "Action": "ecs:DeleteCluster", "Resource": arn("cluster/prod")}
    ));
    let default_instances = allow(json!(
        {"Effect": "Allow", "Action": "ecs:DescribeContainerInstances",
         "Resource": arn("container-instance/default/*")}
    ));
    let deny_admin_family = allow_all_but(json!(
        {"Effect": "Deny", "Action": "ecs:RunTask", "Resource": "arn:aws:ecs:*:*:task-definition/admin:*"}
    ));
    let ecs_only = allow(json!({"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}));
    let ecs_and_pass_admin = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": role("admin"),
         "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
    ]});
    let blue_team = allow(json!(
        {"Effect": "Allow", "Action": "ecs:DescribeClusters", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}
    ));
    let tagged_creates = allow(json!(
        {"Effect": "Allow", "Action": ["ecs:CreateCluster", "ecs:TagResource"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}}
    ));
    let prod_list = allow(json!(
        {"Effect": "Allow", "Action": "ecs:ListServices", "Resource": "*",
         "Condition": {"ArnEquals": {"ecs:cluster": arn("cluster/prod")}}}
    ));
    let container = json!([{"name": "app", "image": "busybox", "memory": 64}]);
    let protect_default_tasks = allow(json!(
        {"Effect": "Allow", "Action": "ecs:UpdateTaskProtection", "Resource": "arn:aws:ecs:*:*:task/default/*"}
    ));
    let team_providers = allow(json!(
        {"Effect": "Allow", "Action": "ecs:CreateCapacityProvider", "Resource": arn("capacity-provider/team-*")}
    ));
    let exec_app_only = allow(json!(
        {"Effect": "Allow", "Action": "ecs:ExecuteCommand", "Resource": "*",
         "Condition": {"StringEquals": {"ecs:container-name": "app"}}}
    ));

    use Outcome::*;
    let table: Vec<(&str, &Value, &str, Value, Outcome)> = vec![
        // An explicit Deny on task/default/* holds whatever form names the task.
        (
            "deny by bare id",
            &deny_default_tasks,
            "DescribeTasks",
            json!({"tasks": [id]}),
            ExplicitDeny,
        ),
        (
            "deny by old-format ARN",
            &deny_default_tasks,
            "DescribeTasks",
            json!({"tasks": [arn(&format!("task/{id}"))]}),
            ExplicitDeny,
        ),
        (
            "deny by full ARN",
            &deny_default_tasks,
            "StopTask",
            json!({"task": arn(&format!("task/default/{id}"))}),
            ExplicitDeny,
        ),
        (
            "deny by old-format ARN and cluster ARN",
            &deny_default_tasks,
            "StopTask",
            json!({"cluster": arn("cluster/default"), "task": arn(&format!("task/{id}"))}),
            ExplicitDeny,
        ),
        (
            "deny by old-format ARN when tagging",
            &deny_default_tasks,
            "TagResource",
            json!({"resourceArn": arn(&format!("task/{id}")), "tags": [{"key": "k", "value": "v"}]}),
            ExplicitDeny,
        ),
        (
            "the deny leaves other resources alone",
            &deny_default_tasks,
            "DescribeClusters",
            json!({"clusters": ["prod"]}),
            Allow,
        ),
        // Allows match the canonical ARN from ids and old-format ARNs.
        (
            "allow by bare id",
            &tasks_of_default,
            "DescribeTasks",
            json!({"tasks": [id]}),
            Allow,
        ),
        (
            "allow by old-format ARN",
            &tasks_of_default,
            "DescribeTasks",
            json!({"tasks": [arn(&format!("task/{id}"))]}),
            Allow,
        ),
        (
            "no match in another cluster",
            &tasks_of_default,
            "DescribeTasks",
            json!({"cluster": "prod", "tasks": [id]}),
            NoMatch,
        ),
        (
            "cluster by name",
            &prod_cluster,
            "DescribeClusters",
            json!({"clusters": ["prod"]}),
            Allow,
        ),
        (
            "cluster by ARN",
            &prod_cluster,
            "DescribeClusters",
            json!({"clusters": [arn("cluster/prod")]}),
            Allow,
        ),
        (
            "the default cluster is not prod",
            &prod_cluster,
            "DescribeClusters",
            json!({}),
            NoMatch,
        ),
        (
            "service by name",
            &prod_services,
            "DescribeServices",
            json!({"cluster": "prod", "services": ["web"]}),
            Allow,
        ),
        (
            "service by old-format ARN",
            &prod_services,
            "DescribeServices",
            json!({"cluster": arn("cluster/prod"), "services": [arn("service/web")]}),
            Allow,
        ),
        (
            "service of another cluster",
            &prod_services,
            "DescribeServices",
            json!({"services": ["web"]}),
            NoMatch,
        ),
        (
            "deny on a service by old-format ARN",
            &deny_prod_web,
            "UpdateService",
            json!({"cluster": "prod", "service": arn("service/web"), "desiredCount": 0}),
            ExplicitDeny,
        ),
        (
            "deny on a cluster by ARN",
            &deny_prod_cluster,
            "DeleteCluster",
            json!({"cluster": arn("cluster/prod")}),
            ExplicitDeny,
        ),
        (
            "instance by id",
            &default_instances,
            "DescribeContainerInstances",
            json!({"containerInstances": [w.instance_id]}),
            Allow,
        ),
        (
            "instance by old-format ARN",
            &default_instances,
            "DescribeContainerInstances",
            json!({"containerInstances": [arn(&format!("container-instance/{}", w.instance_id))]}),
            Allow,
        ),
        // A family is authorized as its latest revision.
        (
            "deny on a family by family name",
            &deny_admin_family,
            "RunTask",
            json!({"taskDefinition": "admin"}),
            ExplicitDeny,
        ),
        // iam:PassRole.
        (
            "a role needs PassRole to be registered",
            &ecs_only,
            "RegisterTaskDefinition",
            json!({"family": "x", "taskRoleArn": "admin", "containerDefinitions": container}),
            NoMatch,
        ),
        (
            "running an admin-role definition needs PassRole",
            &ecs_only,
            "RunTask",
            json!({"taskDefinition": "admin"}),
            NoMatch,
        ),
        (
            "an override role needs PassRole",
            &ecs_only,
            "RunTask",
            json!({"taskDefinition": "web", "overrides": {"taskRoleArn": role("admin")}}),
            NoMatch,
        ),
        (
            "PassRole allowed",
            &ecs_and_pass_admin,
            "RegisterTaskDefinition",
            json!({"family": "x", "taskRoleArn": role("admin"), "containerDefinitions": container}),
            Allow,
        ),
        // Tags.
        (
            "resource tag matches",
            &blue_team,
            "DescribeClusters",
            json!({"clusters": ["blue"]}),
            Allow,
        ),
        (
            "resource tag differs",
            &blue_team,
            "DescribeClusters",
            json!({"clusters": [arn("cluster/red")]}),
            NoMatch,
        ),
        (
            "request tag matches",
            &tagged_creates,
            "CreateCluster",
            json!({"clusterName": "t1", "tags": [{"key": "team", "value": "blue"}]}),
            Allow,
        ),
        (
            "no request tag",
            &tagged_creates,
            "CreateCluster",
            json!({"clusterName": "t2"}),
            NoMatch,
        ),
        // ecs:cluster.
        (
            "ecs:cluster matches",
            &prod_list,
            "ListServices",
            json!({"cluster": arn("cluster/prod")}),
            Allow,
        ),
        (
            "ecs:cluster differs",
            &prod_list,
            "ListServices",
            json!({}),
            NoMatch,
        ),
        // Issue 19's operations name canonical ARNs too.
        (
            "task protection by bare id",
            &protect_default_tasks,
            "UpdateTaskProtection",
            json!({"cluster": "default", "tasks": [id], "protectionEnabled": false}),
            Allow,
        ),
        (
            "task protection elsewhere",
            &protect_default_tasks,
            "UpdateTaskProtection",
            json!({"cluster": "prod", "tasks": [id], "protectionEnabled": false}),
            NoMatch,
        ),
        (
            "capacity provider name matches",
            &team_providers,
            "CreateCapacityProvider",
            json!({"name": "team-a", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-a"}}),
            Allow,
        ),
        (
            "capacity provider name differs",
            &team_providers,
            "CreateCapacityProvider",
            json!({"name": "other", "autoScalingGroupProvider": {"autoScalingGroupArn": "asg-b"}}),
            NoMatch,
        ),
        (
            "exec container name differs",
            &exec_app_only,
            "ExecuteCommand",
            json!({"task": id, "container": "sidecar", "command": "ls", "interactive": true}),
            NoMatch,
        ),
    ];
    let mut failures = Vec::new();
    for (name, policy, op, input, want) in &table {
        let ctx = f.user(Some((*policy).clone())).await;
        let result = f.call(&ctx, op, input).await;
        let got = outcome(&result);
        if got != *want {
            failures.push(format!(
                "{name}: {op} {input} → {got:?} ({result:?}), want {want:?}"
            ));
        }
    }
    assert!(table.len() >= 10);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Refused writes change nothing: the admin family still has one
    // revision, the task still runs, no cluster t2.
    let out = f
        .root("ListTaskDefinitions", json!({"familyPrefix": "x"}))
        .await;
    assert_eq!(out["taskDefinitionArns"].as_array().unwrap().len(), 1);
    let out = f.root("DescribeTasks", json!({"tasks": [id]})).await;
    assert_eq!(out["tasks"][0]["desiredStatus"], "RUNNING");
    let out = f
        .root("DescribeClusters", json!({"clusters": ["t2"]}))
        .await;
    assert_eq!(out["failures"][0]["reason"], "MISSING");
}

#[tokio::test]
async fn pass_role_refusals_read_as_aws_and_name_the_role() {
    let f = Fixture::new();
    let ctx = f
        .user(Some(allow(json!(
            {"Effect": "Allow", "Action": ["ecs:RegisterTaskDefinition", "ecs:RunTask"], "Resource": "*"}
        ))))
        .await;
    let input = json!({
        "family": "evil", "taskRoleArn": role("admin"),
        "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64}],
    });
    let e = f
        .call(&ctx, "RegisterTaskDefinition", &input)
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    assert_eq!(
        e.message,
        format!(
            "User: {} is not authorized to perform: iam:PassRole on resource: {} because no \
             identity-based policy allows the iam:PassRole action",
            ctx.principal.arn,
            role("admin")
        )
    );
    let out = f.root("ListTaskDefinitionFamilies", json!({})).await;
    assert_eq!(out["families"], json!([]));
}

#[tokio::test]
async fn no_operation_answers_a_user_without_policies() {
    let f = Fixture::new();
    world(&f).await;
    let ctx = f.user(None).await;
    for op in OPERATIONS {
        let result = f.call(&ctx, op, &json!({})).await;
        match result {
            Ok(out) => panic!("{op} answered a user without policies: {out}"),
            Err(e) => assert!(
                e.code == "AccessDeniedException" || e.code == "UnsupportedFeatureException",
                "{op}: {e:?}"
            ),
        }
    }
}

/// `berth exec`'s calls (`BerthExecV1`): starting a session is
/// ecs:ExecuteCommand on the task's canonical ARN (given by id), refused as
/// IAM words it; the other calls drive only the caller's own sessions.
#[tokio::test]
async fn berth_exec_is_authorized_as_execute_command() {
    let f = Fixture::new();
    let w = world(&f).await;
    let hub = berth_ecs::ExecHub::new();
    let exec = berth_ecs::ExecService::new(f.iam_store(), hub);
    let call = |ctx: RequestContext, op: &'static str, input: Value| {
        let exec = &exec;
        async move {
            let body = serde_json::to_vec(&input).unwrap();
            exec.handle(&ctx, op, &body).await
        }
    };
    let task = arn(&format!("task/default/{}", w.task_id));
    let nobody = f.user(None).await;
    let e = call(
        nobody.clone(),
        "StartExecSession",
        json!({"task": w.task_id, "container": "app", "command": ["ls"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    assert!(
        e.message
            .contains(&format!("ecs:ExecuteCommand on resource: {task}")),
        "{}",
        e.message
    );
    for op in ["SendExecInput", "ReadExecOutput", "EndExecSession"] {
        let e = call(nobody.clone(), op, json!({"sessionId": "x"}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException", "{op}");
    }
    // Allowed on the task for container app only.
    let allowed = f
        .user(Some(allow(json!({
            "Effect": "Allow", "Action": "ecs:ExecuteCommand", "Resource": task,
            "Condition": {"StringEquals": {"ecs:container-name": "app"}}
        }))))
        .await;
    let e = call(
        allowed.clone(),
        "StartExecSession",
        json!({"task": w.task_id, "container": "other", "command": ["ls"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    // Past IAM, refused as ECS's ExecuteCommand: the task is not RUNNING.
    let e = call(
        allowed,
        "StartExecSession",
        json!({"task": w.task_id, "container": "app", "command": ["ls"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "InvalidParameterException", "{e:?}");
}
