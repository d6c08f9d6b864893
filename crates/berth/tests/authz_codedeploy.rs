//! IAM for CodeDeploy (`codedeploy`): a walk over every implemented
//! operation as a user without policies (each is refused by IAM, naming the
//! application, deployment group or deployment configuration ARN), and a
//! policy scoped to one deployment group, run through the real handlers with
//! the real `IamAuthorizer` deciding.

use std::sync::Arc;

use berth_codedeploy::{
    CodeDeployService, EcsDeploymentPlan, EcsDeploymentStatus, EcsDeployments, EcsError,
    EcsServiceFacts, WaitType,
};
use berth_model::shapes::codedeploy::OPERATIONS;
use berth_model::{
    Access, AwsError, DenialStyle, JsonService, Principal, PrincipalKind, QueryService,
    RequestContext,
};
use berth_store::{MemoryStore, Store};
use serde_json::{json, Value};

/// Every ECS service exists and uses the CODE_DEPLOY controller.
struct FakeEcs;

#[async_trait::async_trait]
impl EcsDeployments for FakeEcs {
    fn service(&self, a: &str, r: &str, c: &str, s: &str) -> Result<EcsServiceFacts, EcsError> {
        Ok(EcsServiceFacts {
            cluster_arn: format!("arn:aws:ecs:{r}:{a}:cluster/{c}"),
            service_arn: format!("arn:aws:ecs:{r}:{a}:service/{c}/{s}"),
            deployment_controller: "CODE_DEPLOY".into(),
            target_group_arns: vec![],
        })
    }
    async fn start(&self, _: &str, _: &str, p: &EcsDeploymentPlan) -> Result<String, EcsError> {
        Ok(p.deployment_id.clone())
    }
    fn status(&self, _: &str, _: &str, _: &str) -> Result<EcsDeploymentStatus, EcsError> {
        Ok(EcsDeploymentStatus::Succeeded)
    }
    async fn continue_deployment(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: WaitType,
    ) -> Result<(), EcsError> {
        Ok(())
    }
    async fn stop(&self, _: &str, _: &str, _: &str) -> Result<(), EcsError> {
        Ok(())
    }
}

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn root() -> RequestContext {
    RequestContext::for_principal(
        Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            user_id: ACCOUNT.into(),
            account_id: ACCOUNT.into(),
            access_key_id: "AKIAROOT".into(),
        },
        REGION,
    )
}

struct World {
    iam_svc: Arc<berth_iam::IamService>,
    authorizer: Arc<berth_iam::IamAuthorizer>,
    svc: CodeDeployService,
    user_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl World {
    fn new() -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let iam = berth_iam::Iam::new(store.clone());
        World {
            iam_svc: iam.iam_service(),
            authorizer: Arc::new(berth_iam::IamAuthorizer::new(iam.clone())),
            svc: CodeDeployService::new(store, Arc::new(FakeEcs)),
            user_ids: Default::default(),
        }
    }

    async fn user(&self, name: &str, policy: Option<Value>) {
        let root = root();
        let params = |p: Vec<(&str, String)>| -> Vec<(String, String)> {
            p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
        };
        let out = self
            .iam_svc
            .handle(
                &root,
                "CreateUser",
                &params(vec![("UserName", name.into())]),
            )
            .await
            .unwrap();
        let id = out
            .split_once("<UserId>")
            .and_then(|(_, rest)| rest.split_once("</UserId>"))
            .map(|(id, _)| id.to_string())
            .unwrap();
        self.user_ids.lock().unwrap().insert(name.to_string(), id);
        if let Some(policy) = policy {
            self.iam_svc
                .handle(
                    &root,
                    "PutUserPolicy",
                    &params(vec![
                        ("UserName", name.into()),
                        ("PolicyName", "p".into()),
                        ("PolicyDocument", policy.to_string()),
                    ]),
                )
                .await
                .unwrap();
        }
    }

    fn ctx(&self, name: &str) -> RequestContext {
        RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::User,
                arn: format!("arn:aws:iam::{ACCOUNT}:user/{name}"),
                user_id: self.user_ids.lock().unwrap()[name].clone(),
                account_id: ACCOUNT.into(),
                access_key_id: format!("AKIA{name}"),
            },
            REGION,
        )
        .with_access(Access::new(
            Some(self.authorizer.clone()),
            DenialStyle::Json,
            false,
        ))
    }

    async fn call_as(
        &self,
        ctx: &RequestContext,
        op: &str,
        body: &Value,
    ) -> Result<Value, AwsError> {
        let out = self.svc.handle(ctx, op, body.to_string().as_bytes()).await;
        if out.is_ok() {
            assert!(ctx.access.checked(), "{op} answered without asking IAM");
        }
        out.map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn root_call(&self, op: &str, body: Value) -> Value {
        self.call_as(&root(), op, &body)
            .await
            .unwrap_or_else(|e| panic!("{op} as root: {e:?}"))
    }

    /// Application `app` with group `dg` (service `service`) and a
    /// deployment of it: the deployment id.
    async fn seed(&self, app: &str, service: &str) -> String {
        self.root_call(
            "CreateApplication",
            json!({"applicationName": app, "computePlatform": "ECS"}),
        )
        .await;
        self.root_call("CreateDeploymentGroup", group(app, "dg", service))
            .await;
        self.root_call(
            "CreateDeployment",
            json!({"applicationName": app, "deploymentGroupName": "dg", "revision": revision()}),
        )
        .await["deploymentId"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

const APPSPEC: &str = "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: web:2\n        LoadBalancerInfo:\n          ContainerName: app\n          ContainerPort: 80\n";

fn revision() -> Value {
    json!({"revisionType": "AppSpecContent", "appSpecContent": {"content": APPSPEC}})
}

fn group(app: &str, name: &str, service: &str) -> Value {
    json!({
        "applicationName": app,
        "deploymentGroupName": name,
        "serviceRoleArn": format!("arn:aws:iam::{ACCOUNT}:role/cd"),
        "deploymentStyle": {"deploymentType": "BLUE_GREEN", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
        "blueGreenDeploymentConfiguration": {
            "terminateBlueInstancesOnDeploymentSuccess": {"action": "TERMINATE", "terminationWaitTimeInMinutes": 0},
            "deploymentReadyOption": {"actionOnTimeout": "CONTINUE_DEPLOYMENT"}
        },
        "ecsServices": [{"serviceName": service, "clusterName": "c1"}],
        "loadBalancerInfo": {"targetGroupPairInfoList": [{
            "targetGroups": [{"name": "blue"}, {"name": "green"}],
            "prodTrafficRoute": {"listenerArns": [format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener/app/lb/1/1")]}
        }]}
    })
}

fn app_arn(app: &str) -> String {
    format!("arn:aws:codedeploy:{REGION}:{ACCOUNT}:application:{app}")
}

fn group_arn(app: &str, group: &str) -> String {
    format!("arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentgroup:{app}/{group}")
}

/// A valid request for each implemented operation, and the resource IAM
/// is asked about.
fn plausible(op: &str, id: &str) -> (Value, String) {
    let app = || json!({"applicationName": "shop"});
    let dg = || json!({"applicationName": "shop", "deploymentGroupName": "dg"});
    let config =
        |name: &str| format!("arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentconfig:{name}");
    let dep = || json!({"deploymentId": id});
    match op {
        "CreateApplication" => (
            json!({"applicationName": "new", "computePlatform": "ECS"}),
            app_arn("new"),
        ),
        "GetApplication" | "DeleteApplication" | "ListDeploymentGroups" => (app(), app_arn("shop")),
        "UpdateApplication" => (
            json!({"applicationName": "shop", "newApplicationName": "shop2"}),
            app_arn("shop"),
        ),
        "BatchGetApplications" => (json!({"applicationNames": ["shop"]}), app_arn("shop")),
        "ListApplications" | "ListDeploymentConfigs" => (json!({}), "*".into()),
        "CreateDeploymentConfig" => (
            json!({"deploymentConfigName": "mine", "computePlatform": "ECS"}),
            config("mine"),
        ),
        "GetDeploymentConfig" | "DeleteDeploymentConfig" => {
            (json!({"deploymentConfigName": "mine"}), config("mine"))
        }
        "CreateDeploymentGroup" => (group("shop", "dg2", "api"), group_arn("shop", "dg2")),
        "GetDeploymentGroup" | "DeleteDeploymentGroup" | "ListDeployments" => {
            (dg(), group_arn("shop", "dg"))
        }
        "BatchGetDeploymentGroups" => (
            json!({"applicationName": "shop", "deploymentGroupNames": ["dg"]}),
            group_arn("shop", "dg"),
        ),
        "UpdateDeploymentGroup" => (
            json!({"applicationName": "shop", "currentDeploymentGroupName": "dg"}),
            group_arn("shop", "dg"),
        ),
        "CreateDeployment" => (
            json!({"applicationName": "shop", "deploymentGroupName": "dg", "revision": revision()}),
            group_arn("shop", "dg"),
        ),
        "GetDeployment" | "StopDeployment" | "ContinueDeployment" | "ListDeploymentTargets" => {
            (dep(), group_arn("shop", "dg"))
        }
        "BatchGetDeployments" => (json!({"deploymentIds": [id]}), group_arn("shop", "dg")),
        "GetDeploymentTarget" => (
            json!({"deploymentId": id, "targetId": "c1:web"}),
            group_arn("shop", "dg"),
        ),
        "BatchGetDeploymentTargets" => (
            json!({"deploymentId": id, "targetIds": ["c1:web"]}),
            group_arn("shop", "dg"),
        ),
        "TagResource" => (
            json!({"ResourceArn": app_arn("shop"), "Tags": [{"Key": "a", "Value": "b"}]}),
            app_arn("shop"),
        ),
        "UntagResource" => (
            json!({"ResourceArn": app_arn("shop"), "TagKeys": ["a"]}),
            app_arn("shop"),
        ),
        "ListTagsForResource" => (json!({"ResourceArn": app_arn("shop")}), app_arn("shop")),
        other => panic!("no plausible input for {other}"),
    }
}

#[tokio::test]
async fn every_operation_refuses_a_user_without_policies() {
    let w = World::new();
    let id = w.seed("shop", "web").await;
    w.user("nobody", None).await;
    let mut failures = Vec::new();
    for op in OPERATIONS {
        let unimplemented = berth_codedeploy::NOT_IMPLEMENTED
            .iter()
            .any(|(o, _)| o == op);
        if unimplemented {
            if let Ok(out) = w.call_as(&w.ctx("nobody"), op, &json!({})).await {
                failures.push(format!("unimplemented {op} answered success: {out}"));
            }
            continue;
        }
        let (body, resource) = plausible(op, &id);
        match w.call_as(&w.ctx("nobody"), op, &body).await {
            Ok(out) => failures.push(format!("{op} answered success: {out}")),
            Err(e) if e.code != "AccessDeniedException" => {
                failures.push(format!("{op} was not refused by IAM: {e:?}"))
            }
            Err(e) => {
                let expected = format!(
                    "User: arn:aws:iam::{ACCOUNT}:user/nobody is not authorized to perform: \
                     codedeploy:{op} on resource: {resource} because no identity-based policy \
                     allows the codedeploy:{op} action"
                );
                if e.message != expected {
                    failures.push(format!("{op}: {}", e.message));
                }
            }
        }
    }
    for (op, _) in berth_codedeploy::NOT_IMPLEMENTED {
        assert!(OPERATIONS.contains(op), "{op} is not in the model");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_policy_scoped_to_one_deployment_group() {
    let w = World::new();
    let shop = w.seed("shop", "web").await;
    let other = w.seed("other", "api").await;
    w.user(
        "deployer",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["codedeploy:GetDeployment", "codedeploy:StopDeployment"],
             "Resource": group_arn("shop", "dg")}
        ]})),
    )
    .await;
    let ctx = w.ctx("deployer");
    w.call_as(&ctx, "GetDeployment", &json!({"deploymentId": shop}))
        .await
        .unwrap();
    let e = w
        .call_as(&ctx, "GetDeployment", &json!({"deploymentId": other}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    w.call_as(&ctx, "StopDeployment", &json!({"deploymentId": shop}))
        .await
        .unwrap();
    // CreateDeploymentGroup also needs iam:PassRole on the service role.
    w.user(
        "creator",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "codedeploy:CreateDeploymentGroup", "Resource": "*"}
        ]})),
    )
    .await;
    let e = w
        .call_as(
            &w.ctx("creator"),
            "CreateDeploymentGroup",
            &group("shop", "dg3", "db"),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("iam:PassRole"), "{}", e.message);
}
