//! Handler and engine tests over an in-memory store and a fake ECS.

use std::sync::{Arc, Mutex};

use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{MemoryStore, Store};
use serde_json::{json, Value};

use crate::ecs::*;
use crate::engine::{apply, next_step, Observation, Step};
use crate::CodeDeployService;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const ROLE: &str = "arn:aws:iam::123456789012:role/codedeploy";
const PROD: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/lb/0123456789abcdef/1";
const TEST: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/lb/0123456789abcdef/2";

fn ctx() -> RequestContext {
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

/// A fake ECS: services by `cluster/service` with their controller; the
/// status of each started deployment is set by the test.
#[derive(Default)]
struct FakeEcs {
    services: Mutex<Vec<(String, String)>>,
    started: Mutex<Vec<EcsDeploymentPlan>>,
    status: Mutex<Option<Result<EcsDeploymentStatus, EcsError>>>,
    start_error: Mutex<Option<EcsError>>,
    stopped: Mutex<Vec<String>>,
    continued: Mutex<Vec<(String, WaitType)>>,
}

#[async_trait::async_trait]
impl EcsDeployments for FakeEcs {
    fn service(
        &self,
        _: &str,
        _: &str,
        cluster: &str,
        service: &str,
    ) -> Result<EcsServiceFacts, EcsError> {
        let services = self.services.lock().unwrap();
        let (_, controller) = services
            .iter()
            .find(|(n, _)| *n == format!("{cluster}/{service}"))
            .ok_or_else(|| EcsError::ServiceNotFound(format!("Service {service} not found.")))?;
        Ok(EcsServiceFacts {
            cluster_arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"),
            service_arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{service}"),
            deployment_controller: controller.clone(),
            target_group_arns: vec![],
        })
    }
    async fn start(&self, _: &str, _: &str, plan: &EcsDeploymentPlan) -> Result<String, EcsError> {
        if let Some(e) = self.start_error.lock().unwrap().clone() {
            return Err(e);
        }
        let mut started = self.started.lock().unwrap();
        if !started
            .iter()
            .any(|p| p.deployment_id == plan.deployment_id)
        {
            started.push(plan.clone());
        }
        Ok(format!("arn:ecs:sd/{}", plan.deployment_id))
    }
    fn status(&self, _: &str, _: &str, _: &str) -> Result<EcsDeploymentStatus, EcsError> {
        self.status
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Ok(EcsDeploymentStatus::InProgress {
                stage: "SCALE_UP".into(),
                waiting_to_continue: false,
            }))
    }
    async fn continue_deployment(
        &self,
        _: &str,
        _: &str,
        arn: &str,
        wait: WaitType,
    ) -> Result<(), EcsError> {
        self.continued.lock().unwrap().push((arn.to_string(), wait));
        Ok(())
    }
    async fn stop(&self, _: &str, _: &str, arn: &str) -> Result<(), EcsError> {
        self.stopped.lock().unwrap().push(arn.to_string());
        Ok(())
    }
}

struct World {
    store: Arc<dyn Store>,
    ecs: Arc<FakeEcs>,
    svc: CodeDeployService,
}

fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ecs = Arc::new(FakeEcs::default());
    ecs.services.lock().unwrap().extend([
        ("c1/web".to_string(), "CODE_DEPLOY".to_string()),
        ("c1/api".to_string(), "CODE_DEPLOY".to_string()),
        ("c1/rolling".to_string(), "ECS".to_string()),
    ]);
    let svc = CodeDeployService::new(store.clone(), ecs.clone());
    World { store, ecs, svc }
}

fn group_body(app: &str, group: &str, service: &str) -> Value {
    json!({
        "applicationName": app,
        "deploymentGroupName": group,
        "serviceRoleArn": ROLE,
        "deploymentStyle": {"deploymentType": "BLUE_GREEN", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
        "blueGreenDeploymentConfiguration": {
            "terminateBlueInstancesOnDeploymentSuccess": {"action": "TERMINATE", "terminationWaitTimeInMinutes": 5},
            "deploymentReadyOption": {"actionOnTimeout": "CONTINUE_DEPLOYMENT"}
        },
        "ecsServices": [{"serviceName": service, "clusterName": "c1"}],
        "loadBalancerInfo": {"targetGroupPairInfoList": [{
            "targetGroups": [{"name": "blue"}, {"name": "green"}],
            "prodTrafficRoute": {"listenerArns": [PROD]},
            "testTrafficRoute": {"listenerArns": [TEST]}
        }]},
        "autoRollbackConfiguration": {"enabled": true, "events": ["DEPLOYMENT_FAILURE"]},
        "tags": [{"Key": "team", "Value": "web"}]
    })
}

const APPSPEC: &str = "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: web:2\n        LoadBalancerInfo:\n          ContainerName: app\n          ContainerPort: 80\n";

fn deployment_body(content: &str) -> Value {
    json!({
        "applicationName": "shop",
        "deploymentGroupName": "shop-dg",
        "revision": {"revisionType": "AppSpecContent", "appSpecContent": {"content": content}}
    })
}

impl World {
    async fn call(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        let out = self
            .svc
            .handle(&ctx(), op, body.to_string().as_bytes())
            .await?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    async fn ok(&self, op: &str, body: Value) -> Value {
        match self.call(op, body).await {
            Ok(v) => v,
            Err(e) => panic!("{op}: {} {}", e.code, e.message),
        }
    }

    async fn code(&self, op: &str, body: Value) -> String {
        match self.call(op, body).await {
            Ok(v) => panic!("{op} succeeded: {v}"),
            Err(e) => e.code.to_string(),
        }
    }

    async fn setup(&self) {
        self.ok(
            "CreateApplication",
            json!({"applicationName": "shop", "computePlatform": "ECS"}),
        )
        .await;
        self.ok(
            "CreateDeploymentGroup",
            group_body("shop", "shop-dg", "web"),
        )
        .await;
    }

    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        self.store
            .range("codedeploy/", None, usize::MAX)
            .into_iter()
            .map(|kv| (kv.key, kv.value.to_vec()))
            .collect()
    }

    async fn run(&self) -> usize {
        self.run_at(1000.0).await
    }

    /// A pass at `now`, with minutes of 60 s.
    async fn run_at(&self, now: f64) -> usize {
        self.svc
            .run_deployments(self.ecs.as_ref(), now, 60.0)
            .await
            .unwrap()
    }

    fn set_status(&self, status: EcsDeploymentStatus) {
        *self.ecs.status.lock().unwrap() = Some(Ok(status));
    }

    async fn deployment(&self, id: &str) -> Value {
        self.ok("GetDeployment", json!({"deploymentId": id})).await["deploymentInfo"].clone()
    }
}

#[tokio::test]
async fn applications_lifecycle() {
    let w = world();
    let out = w
        .ok(
            "CreateApplication",
            json!({"applicationName": "shop", "computePlatform": "ECS", "tags": [{"Key": "a", "Value": "1"}]}),
        )
        .await;
    assert!(out["applicationId"].is_string());
    let got = w
        .ok("GetApplication", json!({"applicationName": "shop"}))
        .await;
    assert_eq!(got["application"]["computePlatform"], "ECS");
    let listed = w.ok("ListApplications", json!({})).await;
    assert_eq!(listed["applications"], json!(["shop"]));
    let arn = format!("arn:aws:codedeploy:{REGION}:{ACCOUNT}:application:shop");
    let tags = w
        .ok("ListTagsForResource", json!({"ResourceArn": arn}))
        .await;
    assert_eq!(tags["Tags"], json!([{"Key": "a", "Value": "1"}]));
    w.ok(
        "TagResource",
        json!({"ResourceArn": arn, "Tags": [{"Key": "b", "Value": "2"}]}),
    )
    .await;
    w.ok(
        "UntagResource",
        json!({"ResourceArn": arn, "TagKeys": ["a"]}),
    )
    .await;
    let tags = w
        .ok("ListTagsForResource", json!({"ResourceArn": arn}))
        .await;
    assert_eq!(tags["Tags"], json!([{"Key": "b", "Value": "2"}]));
    w.ok("CreateDeploymentGroup", group_body("shop", "dg", "web"))
        .await;
    w.ok(
        "UpdateApplication",
        json!({"applicationName": "shop", "newApplicationName": "store"}),
    )
    .await;
    assert_eq!(
        w.code("GetApplication", json!({"applicationName": "shop"}))
            .await,
        "ApplicationDoesNotExistException"
    );
    let group = w
        .ok(
            "GetDeploymentGroup",
            json!({"applicationName": "store", "deploymentGroupName": "dg"}),
        )
        .await;
    assert_eq!(group["deploymentGroupInfo"]["applicationName"], "store");
    let batch = w
        .ok(
            "BatchGetApplications",
            json!({"applicationNames": ["store"]}),
        )
        .await;
    assert_eq!(batch["applicationsInfo"][0]["applicationName"], "store");
    w.ok("DeleteApplication", json!({"applicationName": "store"}))
        .await;
    assert!(w.snapshot().is_empty());
}

#[tokio::test]
async fn deployment_configs() {
    let w = world();
    let listed = w.ok("ListDeploymentConfigs", json!({})).await;
    assert_eq!(listed["deploymentConfigsList"].as_array().unwrap().len(), 5);
    let canary = w
        .ok(
            "GetDeploymentConfig",
            json!({"deploymentConfigName": "CodeDeployDefault.ECSCanary10Percent5Minutes"}),
        )
        .await;
    assert_eq!(
        canary["deploymentConfigInfo"]["trafficRoutingConfig"],
        json!({"type": "TimeBasedCanary", "timeBasedCanary": {"canaryPercentage": 10, "canaryInterval": 5}})
    );
    w.ok(
        "CreateDeploymentConfig",
        json!({"deploymentConfigName": "lin20", "computePlatform": "ECS",
               "trafficRoutingConfig": {"type": "TimeBasedLinear", "timeBasedLinear": {"linearPercentage": 20, "linearInterval": 2}}}),
    )
    .await;
    let got = w
        .ok(
            "GetDeploymentConfig",
            json!({"deploymentConfigName": "lin20"}),
        )
        .await;
    assert_eq!(got["deploymentConfigInfo"]["computePlatform"], "ECS");
    // In use by a group: refused; once the group is gone: deleted.
    w.ok(
        "CreateApplication",
        json!({"applicationName": "shop", "computePlatform": "ECS"}),
    )
    .await;
    let mut body = group_body("shop", "dg", "web");
    body["deploymentConfigName"] = json!("lin20");
    w.ok("CreateDeploymentGroup", body).await;
    assert_eq!(
        w.code(
            "DeleteDeploymentConfig",
            json!({"deploymentConfigName": "lin20"})
        )
        .await,
        "DeploymentConfigInUseException"
    );
    w.ok(
        "DeleteDeploymentGroup",
        json!({"applicationName": "shop", "deploymentGroupName": "dg"}),
    )
    .await;
    w.ok(
        "DeleteDeploymentConfig",
        json!({"deploymentConfigName": "lin20"}),
    )
    .await;
    assert_eq!(
        w.code(
            "GetDeploymentConfig",
            json!({"deploymentConfigName": "lin20"})
        )
        .await,
        "DeploymentConfigDoesNotExistException"
    );
}

#[tokio::test]
async fn deployment_succeeds() {
    let w = world();
    w.setup().await;
    let id = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(w.deployment(&id).await["status"], "Created");
    // One active deployment per group.
    assert_eq!(
        w.code("CreateDeployment", deployment_body(APPSPEC)).await,
        "DeploymentLimitExceededException"
    );
    assert_eq!(w.run().await, 1);
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "InProgress");
    assert_eq!(info["computePlatform"], "ECS");
    {
        let started = w.ecs.started.lock().unwrap();
        let plan = &started[0];
        assert_eq!(plan.deployment_id, id);
        assert_eq!(plan.cluster, "c1");
        assert_eq!(plan.service, "web");
        assert_eq!(plan.task_definition, "web:2");
        assert_eq!(plan.container_name, "app");
        assert_eq!(plan.container_port, 80);
        assert_eq!(plan.target_group_names, vec!["blue", "green"]);
        assert_eq!(plan.production_listener_arns, vec![PROD]);
        assert_eq!(plan.test_listener_arns, vec![TEST]);
        assert_eq!(plan.traffic, TrafficRouting::AllAtOnce);
        assert_eq!(plan.termination_wait_minutes, 5);
    }
    // Same stage again: nothing to write.
    assert_eq!(w.run().await, 1);
    assert_eq!(w.run().await, 0);
    let target = w
        .ok(
            "GetDeploymentTarget",
            json!({"deploymentId": id, "targetId": "c1:web"}),
        )
        .await;
    assert_eq!(
        target["deploymentTarget"]["ecsTarget"]["status"],
        "InProgress"
    );
    *w.ecs.status.lock().unwrap() = Some(Ok(EcsDeploymentStatus::Succeeded));
    assert_eq!(w.run().await, 1);
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "Succeeded");
    assert!(info["completeTime"].is_number());
    let group = w
        .ok(
            "GetDeploymentGroup",
            json!({"applicationName": "shop", "deploymentGroupName": "shop-dg"}),
        )
        .await;
    assert_eq!(
        group["deploymentGroupInfo"]["lastSuccessfulDeployment"]["deploymentId"],
        json!(id)
    );
    let listed = w
        .ok(
            "ListDeployments",
            json!({"applicationName": "shop", "deploymentGroupName": "shop-dg", "includeOnlyStatuses": ["Succeeded"]}),
        )
        .await;
    assert_eq!(listed["deployments"], json!([id]));
    assert_eq!(
        w.code("StopDeployment", json!({"deploymentId": id})).await,
        "DeploymentAlreadyCompletedException"
    );
    // A new deployment may start now, with the canary configuration.
    let mut body = deployment_body(APPSPEC);
    body["deploymentConfigName"] = json!("CodeDeployDefault.ECSCanary10Percent5Minutes");
    w.ok("CreateDeployment", body).await;
    w.run().await;
    assert_eq!(
        w.ecs.started.lock().unwrap()[1].traffic,
        TrafficRouting::Canary {
            percentage: 10,
            interval_minutes: 5
        }
    );
}

#[tokio::test]
async fn stop_rolls_back() {
    let w = world();
    w.setup().await;
    let id = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.run().await;
    let out = w.ok("StopDeployment", json!({"deploymentId": id})).await;
    assert_eq!(out["status"], "Pending");
    assert_eq!(w.run().await, 1);
    assert_eq!(
        *w.ecs.stopped.lock().unwrap(),
        vec![format!("arn:ecs:sd/{id}")]
    );
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "Stopped");
    assert_eq!(info["errorInformation"]["code"], "MANUAL_STOP");
    assert!(info["rollbackInfo"]["rollbackMessage"].is_string());
    assert_eq!(w.run().await, 0);
}

#[tokio::test]
async fn stop_before_start_never_reaches_ecs() {
    let w = world();
    w.setup().await;
    let id = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.ok("StopDeployment", json!({"deploymentId": id})).await;
    w.run().await;
    assert_eq!(w.deployment(&id).await["status"], "Stopped");
    assert!(w.ecs.started.lock().unwrap().is_empty());
    assert!(w.ecs.stopped.lock().unwrap().is_empty());
}

#[tokio::test]
async fn ecs_failure_fails_and_rolls_back() {
    let w = world();
    w.setup().await;
    let id = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.run().await;
    *w.ecs.status.lock().unwrap() = Some(Ok(EcsDeploymentStatus::Failed {
        reason: "tasks failed to start".into(),
    }));
    w.run().await; // failure seen: rollback asked for
    w.run().await; // ECS stopped
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "Failed");
    assert_eq!(info["errorInformation"]["code"], "ECS_UPDATE_ERROR");
    assert_eq!(info["errorInformation"]["message"], "tasks failed to start");
    assert!(info["rollbackInfo"]["rollbackMessage"].is_string());
    assert_eq!(w.ecs.stopped.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn start_refused_and_unavailable() {
    let w = world();
    w.setup().await;
    let id = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    *w.ecs.start_error.lock().unwrap() = Some(EcsError::Unavailable("later".into()));
    assert_eq!(w.run().await, 0);
    assert_eq!(w.deployment(&id).await["status"], "Created");
    *w.ecs.start_error.lock().unwrap() =
        Some(EcsError::Invalid("container app is not in web:2".into()));
    w.run().await;
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "Failed");
    assert_eq!(
        info["errorInformation"]["message"],
        "container app is not in web:2"
    );
}

#[tokio::test]
async fn bad_appspec_and_hooks_fail_the_deployment() {
    let w = world();
    w.setup().await;
    let id = w
        .ok(
            "CreateDeployment",
            deployment_body("version: 0.0\nResources: ["),
        )
        .await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.run().await;
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "Failed");
    assert_eq!(info["errorInformation"]["code"], "INVALID_REVISION");
    let hooked = format!("{APPSPEC}Hooks:\n  - BeforeInstall: check\n");
    let id = w.ok("CreateDeployment", deployment_body(&hooked)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.run().await;
    let info = w.deployment(&id).await;
    assert_eq!(info["status"], "Failed");
    assert_eq!(info["errorInformation"]["code"], "INVALID_LAMBDA_FUNCTION");
    assert!(w.ecs.started.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_inputs_change_nothing() {
    let w = world();
    w.setup().await;
    let before = w.snapshot();
    let mut cases: Vec<(&str, Value, &str)> = vec![
        (
            "CreateApplication",
            json!({}),
            "ApplicationNameRequiredException",
        ),
        (
            "CreateApplication",
            json!({"applicationName": "bad name", "computePlatform": "ECS"}),
            "InvalidApplicationNameException",
        ),
        (
            "CreateApplication",
            json!({"applicationName": "srv", "computePlatform": "Server"}),
            "InvalidComputePlatformException",
        ),
        (
            "CreateApplication",
            json!({"applicationName": "shop", "computePlatform": "ECS"}),
            "ApplicationAlreadyExistsException",
        ),
        (
            "GetApplication",
            json!({"applicationName": "nope"}),
            "ApplicationDoesNotExistException",
        ),
        (
            "CreateDeploymentConfig",
            json!({"deploymentConfigName": "CodeDeployDefault.Mine", "computePlatform": "ECS"}),
            "InvalidDeploymentConfigNameException",
        ),
        (
            "CreateDeploymentConfig",
            json!({"deploymentConfigName": "c", "computePlatform": "ECS",
                   "trafficRoutingConfig": {"type": "TimeBasedCanary", "timeBasedCanary": {"canaryPercentage": 100, "canaryInterval": 5}}}),
            "InvalidTrafficRoutingConfigurationException",
        ),
        (
            "CreateDeploymentConfig",
            json!({"deploymentConfigName": "c", "computePlatform": "ECS",
                   "minimumHealthyHosts": {"type": "HOST_COUNT", "value": 1}}),
            "InvalidMinimumHealthyHostValueException",
        ),
        (
            "DeleteDeploymentConfig",
            json!({"deploymentConfigName": "CodeDeployDefault.ECSAllAtOnce"}),
            "InvalidOperationException",
        ),
        (
            "CreateDeploymentGroup",
            group_body("shop", "shop-dg", "api"),
            "DeploymentGroupAlreadyExistsException",
        ),
        (
            "CreateDeploymentGroup",
            group_body("shop", "other", "web"),
            "ECSServiceMappingLimitExceededException",
        ),
        (
            "CreateDeploymentGroup",
            group_body("shop", "other", "rolling"),
            "InvalidECSServiceException",
        ),
        (
            "CreateDeploymentGroup",
            group_body("shop", "other", "missing"),
            "InvalidECSServiceException",
        ),
        (
            "CreateDeploymentGroup",
            group_body("nope", "other", "api"),
            "ApplicationDoesNotExistException",
        ),
        (
            "GetDeploymentGroup",
            json!({"applicationName": "shop", "deploymentGroupName": "nope"}),
            "DeploymentGroupDoesNotExistException",
        ),
        (
            "CreateDeployment",
            json!({"applicationName": "shop", "deploymentGroupName": "shop-dg"}),
            "RevisionRequiredException",
        ),
        (
            "CreateDeployment",
            json!({"applicationName": "shop", "deploymentGroupName": "shop-dg",
                   "revision": {"revisionType": "S3", "s3Location": {"bucket": "b", "key": "k", "bundleType": "YAML"}}}),
            "InvalidRevisionException",
        ),
        (
            "CreateDeployment",
            json!({"applicationName": "shop", "deploymentGroupName": "shop-dg",
                   "revision": {"revisionType": "AppSpecContent", "appSpecContent": {"content": APPSPEC, "sha256": "00"}}}),
            "InvalidRevisionException",
        ),
        (
            "CreateDeployment",
            json!({"applicationName": "shop", "deploymentGroupName": "nope",
                   "revision": {"revisionType": "AppSpecContent", "appSpecContent": {"content": APPSPEC}}}),
            "DeploymentGroupDoesNotExistException",
        ),
        (
            "CreateDeployment",
            {
                let mut b = deployment_body(APPSPEC);
                b["deploymentConfigName"] = json!("nope");
                b
            },
            "DeploymentConfigDoesNotExistException",
        ),
        (
            "GetDeployment",
            json!({"deploymentId": "x"}),
            "InvalidDeploymentIdException",
        ),
        (
            "GetDeployment",
            json!({"deploymentId": "d-ABCDEFGHI"}),
            "DeploymentDoesNotExistException",
        ),
        (
            "StopDeployment",
            json!({"deploymentId": "d-ABCDEFGHI"}),
            "DeploymentDoesNotExistException",
        ),
        (
            "ListDeployments",
            json!({"applicationName": "shop"}),
            "DeploymentGroupNameRequiredException",
        ),
        (
            "ListDeployments",
            json!({"includeOnlyStatuses": ["Bogus"]}),
            "InvalidDeploymentStatusException",
        ),
        (
            "ListApplications",
            json!({"nextToken": "%%%"}),
            "InvalidNextTokenException",
        ),
        (
            "TagResource",
            json!({"ResourceArn": format!("arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentconfig:x"), "Tags": [{"Key": "k", "Value": "v"}]}),
            "ArnNotSupportedException",
        ),
        (
            "TagResource",
            json!({"ResourceArn": "not-an-arn", "Tags": [{"Key": "k", "Value": "v"}]}),
            "InvalidArnException",
        ),
        (
            "ContinueDeployment",
            json!({"deploymentId": "d-ABCDEFGHI"}),
            "DeploymentDoesNotExistException",
        ),
        (
            "ContinueDeployment",
            json!({}),
            "DeploymentIdRequiredException",
        ),
        (
            "ContinueDeployment",
            json!({"deploymentId": "d-ABCDEFGHI", "deploymentWaitType": "SOON"}),
            "InvalidDeploymentWaitTypeException",
        ),
    ];
    // Group bodies broken one member at a time.
    type Breaker = (fn(&mut Value), &'static str);
    let broken: Vec<Breaker> = vec![
        (
            |b| {
                b.as_object_mut().unwrap().remove("serviceRoleArn");
            },
            "RoleRequiredException",
        ),
        (
            |b| b["serviceRoleArn"] = json!("role"),
            "InvalidRoleException",
        ),
        (
            |b| b["deploymentStyle"]["deploymentType"] = json!("IN_PLACE"),
            "InvalidDeploymentStyleException",
        ),
        (
            |b| {
                b["blueGreenDeploymentConfiguration"]["deploymentReadyOption"] =
                    json!({"actionOnTimeout": "STOP_DEPLOYMENT", "waitTimeInMinutes": 3000})
            },
            "InvalidBlueGreenDeploymentConfigurationException",
        ),
        (
            |b| {
                b["blueGreenDeploymentConfiguration"]["terminateBlueInstancesOnDeploymentSuccess"]
                    ["terminationWaitTimeInMinutes"] = json!(3000)
            },
            "InvalidBlueGreenDeploymentConfigurationException",
        ),
        (
            |b| {
                b["loadBalancerInfo"]["targetGroupPairInfoList"][0]["targetGroups"] =
                    json!([{"name": "blue"}])
            },
            "InvalidTargetGroupPairException",
        ),
        (
            |b| b["ecsServices"] = json!([]),
            "InvalidECSServiceException",
        ),
        (
            |b| b["alarmConfiguration"] = json!({"enabled": true, "alarms": [{"name": "cpu"}]}),
            "InvalidAlarmConfigException",
        ),
        (
            |b| b["deploymentConfigName"] = json!("nope"),
            "DeploymentConfigDoesNotExistException",
        ),
        (
            |b| b["ec2TagFilters"] = json!([{"Key": "a", "Value": "b", "Type": "KEY_AND_VALUE"}]),
            "InvalidEC2TagException",
        ),
    ];
    for (change, code) in broken {
        let mut body = group_body("shop", "other", "api");
        change(&mut body);
        cases.push(("CreateDeploymentGroup", body, code));
    }
    for (op, body, code) in cases {
        assert_eq!(w.code(op, body.clone()).await, code, "{op} {body}");
        assert_eq!(w.snapshot(), before, "{op} {body} changed the store");
    }
}

#[tokio::test]
async fn update_deployment_group() {
    let w = world();
    w.setup().await;
    w.ok(
        "UpdateDeploymentGroup",
        json!({"applicationName": "shop", "currentDeploymentGroupName": "shop-dg",
               "newDeploymentGroupName": "dg2",
               "deploymentConfigName": "CodeDeployDefault.ECSLinear10PercentEvery1Minutes"}),
    )
    .await;
    let got = w
        .ok(
            "GetDeploymentGroup",
            json!({"applicationName": "shop", "deploymentGroupName": "dg2"}),
        )
        .await;
    let info = &got["deploymentGroupInfo"];
    assert_eq!(
        info["deploymentConfigName"],
        "CodeDeployDefault.ECSLinear10PercentEvery1Minutes"
    );
    assert_eq!(info["ecsServices"][0]["serviceName"], "web");
    assert_eq!(
        info["loadBalancerInfo"]["targetGroupPairInfoList"][0]["prodTrafficRoute"]["listenerArns"],
        json!([PROD])
    );
    let arn = format!("arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentgroup:shop/dg2");
    let tags = w
        .ok("ListTagsForResource", json!({"ResourceArn": arn}))
        .await;
    assert_eq!(tags["Tags"], json!([{"Key": "team", "Value": "web"}]));
    let listed = w
        .ok("ListDeploymentGroups", json!({"applicationName": "shop"}))
        .await;
    assert_eq!(listed["deploymentGroups"], json!(["dg2"]));
}

#[test]
fn pure_steps() {
    let plan = EcsDeploymentPlan {
        deployment_id: "d-AAAAAAAAA".into(),
        cluster: "c".into(),
        service: "s".into(),
        task_definition: "t:1".into(),
        container_name: "app".into(),
        container_port: 80,
        platform_version: None,
        network_configuration: None,
        capacity_provider_strategy: None,
        target_group_names: vec!["a".into(), "b".into()],
        production_listener_arns: vec![PROD.into()],
        test_listener_arns: vec![],
        traffic: TrafficRouting::AllAtOnce,
        termination_wait_minutes: 0,
        wait_to_continue: false,
    };
    let record = crate::DeploymentRecord {
        id: "d-AAAAAAAAA".into(),
        application: "a".into(),
        group: "g".into(),
        config_name: "CodeDeployDefault.ECSAllAtOnce".into(),
        status: "Created".into(),
        create_time: 1.0,
        start_time: None,
        complete_time: None,
        revision: Default::default(),
        description: None,
        creator: "user".into(),
        plan: Some(plan.clone()),
        invalid: None,
        auto_rollback: None,
        blue_green: Default::default(),
        load_balancer_info: Default::default(),
        target_id: "c:s".into(),
        service_deployment_arn: None,
        stage: None,
        error: None,
        rollback_message: None,
        ending: None,
        ready_since: None,
        continues: vec![],
        status_messages: vec![],
        updated_at: 1.0,
    };
    let step = next_step(&record, 2.0, 60.0);
    assert_eq!(step, Step::Start(Box::new(plan)));
    // ECS unavailable: nothing changes.
    assert_eq!(
        apply(
            &record,
            &step,
            Observation::Started(Err(EcsError::Unavailable("x".into()))),
            2.0
        ),
        None
    );
    let started = apply(&record, &step, Observation::Started(Ok("arn".into())), 2.0).unwrap();
    assert_eq!(started.status, "InProgress");
    assert_eq!(next_step(&started, 2.0, 60.0), Step::Poll("arn".into()));
    let rolled = apply(
        &started,
        &Step::Poll("arn".into()),
        Observation::Status(Ok(EcsDeploymentStatus::RolledBack {
            reason: "circuit breaker".into(),
        })),
        3.0,
    )
    .unwrap();
    assert_eq!(rolled.status, "Failed");
    assert!(rolled.rollback_message.is_some());
    assert_eq!(next_step(&rolled, 3.0, 60.0), Step::Nothing);
    // Without automatic rollback, a failure ends the deployment at once.
    let failed = apply(
        &started,
        &Step::Poll("arn".into()),
        Observation::Status(Ok(EcsDeploymentStatus::Failed {
            reason: "boom".into(),
        })),
        3.0,
    )
    .unwrap();
    assert_eq!(failed.status, "Failed");
    assert_eq!(failed.complete_time, Some(3.0));
}

#[tokio::test]
async fn a_stop_deployment_group_waits_for_continue_deployment() {
    let w = world();
    w.ok(
        "CreateApplication",
        json!({"applicationName": "shop", "computePlatform": "ECS"}),
    )
    .await;
    let mut body = group_body("shop", "shop-dg", "web");
    body["blueGreenDeploymentConfiguration"]["deploymentReadyOption"] =
        json!({"actionOnTimeout": "STOP_DEPLOYMENT", "waitTimeInMinutes": 5});
    w.ok("CreateDeploymentGroup", body).await;
    let group = w
        .ok(
            "GetDeploymentGroup",
            json!({"applicationName": "shop", "deploymentGroupName": "shop-dg"}),
        )
        .await;
    assert_eq!(
        group["deploymentGroupInfo"]["blueGreenDeploymentConfiguration"]["deploymentReadyOption"],
        json!({"actionOnTimeout": "STOP_DEPLOYMENT", "waitTimeInMinutes": 5})
    );
    let id = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.run().await;
    assert!(w.ecs.started.lock().unwrap()[0].wait_to_continue);
    let arn = format!("arn:ecs:sd/{id}");
    // Not waiting yet: refused, nothing changes.
    let before = w.snapshot();
    for wait in ["READY_WAIT", "TERMINATION_WAIT"] {
        assert_eq!(
            w.code(
                "ContinueDeployment",
                json!({"deploymentId": id, "deploymentWaitType": wait})
            )
            .await,
            "DeploymentIsNotInReadyStateException"
        );
    }
    assert_eq!(w.snapshot(), before);
    // Test traffic is on the new revision: Ready.
    w.set_status(EcsDeploymentStatus::InProgress {
        stage: "TEST_TRAFFIC_SHIFT".into(),
        waiting_to_continue: true,
    });
    w.run_at(1000.0).await;
    assert_eq!(w.deployment(&id).await["status"], "Ready");
    let target = w
        .ok(
            "GetDeploymentTarget",
            json!({"deploymentId": id, "targetId": "c1:web"}),
        )
        .await;
    assert_eq!(target["deploymentTarget"]["ecsTarget"]["status"], "Ready");
    // Still within the 5 minutes.
    w.run_at(1299.0).await;
    assert_eq!(w.deployment(&id).await["status"], "Ready");
    w.ok("ContinueDeployment", json!({"deploymentId": id}))
        .await;
    // Asked twice before it is carried out: once.
    w.ok(
        "ContinueDeployment",
        json!({"deploymentId": id, "deploymentWaitType": "READY_WAIT"}),
    )
    .await;
    w.set_status(EcsDeploymentStatus::InProgress {
        stage: "PRODUCTION_TRAFFIC_SHIFT".into(),
        waiting_to_continue: false,
    });
    w.run_at(1400.0).await;
    assert_eq!(
        *w.ecs.continued.lock().unwrap(),
        vec![(arn.clone(), WaitType::Ready)]
    );
    assert_eq!(w.deployment(&id).await["status"], "InProgress");
    // The termination wait, ended early.
    w.set_status(EcsDeploymentStatus::InProgress {
        stage: "BAKE_TIME".into(),
        waiting_to_continue: false,
    });
    w.run_at(1401.0).await;
    w.ok(
        "ContinueDeployment",
        json!({"deploymentId": id, "deploymentWaitType": "TERMINATION_WAIT"}),
    )
    .await;
    w.run_at(1402.0).await;
    assert_eq!(
        w.ecs.continued.lock().unwrap().last().cloned(),
        Some((arn.clone(), WaitType::Termination))
    );
    w.set_status(EcsDeploymentStatus::Succeeded);
    w.run_at(1403.0).await;
    assert_eq!(w.deployment(&id).await["status"], "Succeeded");
    assert_eq!(
        w.code("ContinueDeployment", json!({"deploymentId": id}))
            .await,
        "DeploymentAlreadyCompletedException"
    );

    // Nobody continues the next one: it stops after 5 minutes, rolled back.
    let next = w.ok("CreateDeployment", deployment_body(APPSPEC)).await["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    w.set_status(EcsDeploymentStatus::InProgress {
        stage: "TEST_TRAFFIC_SHIFT".into(),
        waiting_to_continue: true,
    });
    w.run_at(2000.0).await;
    w.run_at(2001.0).await;
    assert_eq!(w.deployment(&next).await["status"], "Ready");
    // Ready since 2001: 4 min 59 s later it still waits.
    w.run_at(2300.0).await;
    assert_eq!(w.deployment(&next).await["status"], "Ready");
    w.run_at(2301.0).await;
    w.run_at(2302.0).await;
    let info = w.deployment(&next).await;
    assert_eq!(info["status"], "Stopped", "{info}");
    assert_eq!(info["errorInformation"]["code"], "TIMEOUT");
    assert!(w
        .ecs
        .stopped
        .lock()
        .unwrap()
        .contains(&format!("arn:ecs:sd/{next}")));
}
