//! IAM for AWS Cloud Map (`servicediscovery`): a walk over every operation
//! of the model as a user without policies (each is refused by IAM), and
//! policies scoped to a namespace or service ARN and to resource tags, run
//! through the real handlers with the real `IamAuthorizer` deciding.

use std::sync::Arc;

use berth_discovery::DiscoveryService;
use berth_model::shapes::servicediscovery::OPERATIONS;
use berth_model::{
    Access, AwsError, DenialStyle, JsonService, Principal, PrincipalKind, QueryService,
    RequestContext,
};
use berth_store::{MemoryStore, Store, StoreExt};
use serde_json::{json, Value};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
const VPC: &str = "vpc-0123456789abcdef0";

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
    sd: DiscoveryService,
    user_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl World {
    async fn new() -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store
            .put(
                &format!("ec2/{ACCOUNT}/{REGION}/vpc/{VPC}"),
                serde_json::to_vec(&json!({"id": VPC})).unwrap().into(),
            )
            .await
            .unwrap();
        let iam = berth_iam::Iam::new(store.clone());
        World {
            iam_svc: iam.iam_service(),
            authorizer: Arc::new(berth_iam::IamAuthorizer::new(iam.clone())),
            sd: DiscoveryService::new(store),
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
        let out = self.sd.handle(ctx, op, body.to_string().as_bytes()).await;
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

    /// A private namespace, a service with an A record and one instance:
    /// (namespace id, service id).
    async fn seed(&self) -> (String, String) {
        let op = self
            .root_call(
                "CreatePrivateDnsNamespace",
                json!({"Name": "corp.local", "Vpc": VPC, "Tags": [{"Key": "team", "Value": "blue"}]}),
            )
            .await;
        let op = self
            .root_call("GetOperation", json!({"OperationId": op["OperationId"]}))
            .await;
        let ns = op["Operation"]["Targets"]["NAMESPACE"]
            .as_str()
            .unwrap()
            .to_string();
        let srv = self
            .root_call(
                "CreateService",
                json!({"Name": "api", "NamespaceId": ns,
                       "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 5}]},
                       "HealthCheckCustomConfig": {}}),
            )
            .await["Service"]["Id"]
            .as_str()
            .unwrap()
            .to_string();
        self.root_call(
            "RegisterInstance",
            json!({"ServiceId": srv, "InstanceId": "i1", "Attributes": {"AWS_INSTANCE_IPV4": "172.31.0.5"}}),
        )
        .await;
        (ns, srv)
    }
}

/// A valid request for each operation, naming the seeded resources.
fn plausible(op: &str, ns: &str, srv: &str, op_id: &str) -> Value {
    let ns_arn = format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/{ns}");
    match op {
        "CreateHttpNamespace" => json!({"Name": "apps"}),
        "CreatePrivateDnsNamespace" => json!({"Name": "other.local", "Vpc": VPC}),
        "CreatePublicDnsNamespace" => json!({"Name": "example.com"}),
        "GetNamespace" | "DeleteNamespace" => json!({"Id": ns}),
        "UpdateHttpNamespace" => json!({"Id": ns, "Namespace": {"Description": "d"}}),
        "UpdatePrivateDnsNamespace" | "UpdatePublicDnsNamespace" => {
            json!({"Id": ns, "Namespace": {"Description": "d"}})
        }
        "ListNamespaces" | "ListServices" | "ListOperations" => json!({}),
        "CreateService" => json!({"Name": "web", "NamespaceId": ns}),
        "GetService" | "DeleteService" => json!({"Id": srv}),
        "UpdateService" => json!({"Id": srv, "Service": {"Description": "d"}}),
        "GetServiceAttributes" => json!({"ServiceId": srv}),
        "UpdateServiceAttributes" => json!({"ServiceId": srv, "Attributes": {"a": "b"}}),
        "DeleteServiceAttributes" => json!({"ServiceId": srv, "Attributes": ["a"]}),
        "RegisterInstance" => {
            json!({"ServiceId": srv, "InstanceId": "i2", "Attributes": {"AWS_INSTANCE_IPV4": "172.31.0.6"}})
        }
        "DeregisterInstance" | "GetInstance" => json!({"ServiceId": srv, "InstanceId": "i1"}),
        "ListInstances" | "GetInstancesHealthStatus" => json!({"ServiceId": srv}),
        "UpdateInstanceCustomHealthStatus" => {
            json!({"ServiceId": srv, "InstanceId": "i1", "Status": "UNHEALTHY"})
        }
        "DiscoverInstances" | "DiscoverInstancesRevision" => {
            json!({"NamespaceName": "corp.local", "ServiceName": "api"})
        }
        "GetOperation" => json!({"OperationId": op_id}),
        "TagResource" => json!({"ResourceARN": ns_arn, "Tags": [{"Key": "a", "Value": "b"}]}),
        "UntagResource" => json!({"ResourceARN": ns_arn, "TagKeys": ["team"]}),
        "ListTagsForResource" => json!({"ResourceARN": ns_arn}),
        other => panic!("no plausible input for {other}"),
    }
}

#[tokio::test]
async fn every_operation_refuses_a_user_without_policies() {
    let w = World::new().await;
    let (ns, srv) = w.seed().await;
    let ops = w.root_call("ListOperations", json!({})).await;
    let op_id = ops["Operations"][0]["Id"].as_str().unwrap().to_string();
    w.user("nobody", None).await;
    let mut failures = Vec::new();
    for op in OPERATIONS {
        let body = plausible(op, &ns, &srv, &op_id);
        match w.call_as(&w.ctx("nobody"), op, &body).await {
            Ok(out) => failures.push(format!("{op} answered success: {out}")),
            Err(e) if e.code != "AccessDeniedException" => {
                failures.push(format!("{op} was not refused by IAM: {e:?}"))
            }
            Err(e) => assert!(
                e.message.starts_with(&format!(
                    "User: arn:aws:iam::{ACCOUNT}:user/nobody is not authorized to perform: servicediscovery:{op} on resource: "
                )),
                "{op}: {}",
                e.message
            ),
        }
    }
    for (op, _) in berth_discovery::NOT_IMPLEMENTED {
        assert!(OPERATIONS.contains(op), "{op} is not in the model");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn policies_scope_to_namespace_and_service_arns_and_tags() {
    let w = World::new().await;
    let (ns, srv) = w.seed().await;
    let ns_arn = format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/{ns}");
    let srv_arn = format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/{srv}");
    w.user(
        "reader",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "servicediscovery:GetNamespace", "Resource": ns_arn},
            {"Effect": "Allow", "Action": ["servicediscovery:GetService", "servicediscovery:RegisterInstance"], "Resource": srv_arn},
            {"Effect": "Allow", "Action": "servicediscovery:DeleteNamespace", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/team": "red"}}},
            {"Effect": "Allow", "Action": "servicediscovery:DiscoverInstances", "Resource": "*",
             "Condition": {"StringEquals": {"servicediscovery:ServiceName": "api"}}}
        ]})),
    )
    .await;
    let ctx = || w.ctx("reader");
    // The namespace named by id and by ARN: the same canonical ARN.
    w.call_as(&ctx(), "GetNamespace", &json!({"Id": ns}))
        .await
        .unwrap();
    w.call_as(&ctx(), "GetNamespace", &json!({"Id": ns_arn}))
        .await
        .unwrap();
    w.call_as(&ctx(), "GetService", &json!({"Id": srv}))
        .await
        .unwrap();
    w.call_as(
        &ctx(),
        "RegisterInstance",
        &json!({"ServiceId": srv_arn, "InstanceId": "i9", "Attributes": {"AWS_INSTANCE_IPV4": "172.31.0.9"}}),
    )
    .await
    .unwrap();
    w.call_as(
        &ctx(),
        "DiscoverInstances",
        &json!({"NamespaceName": "corp.local", "ServiceName": "api"}),
    )
    .await
    .unwrap();
    let denied = |r: Result<Value, AwsError>| match r {
        Err(e) => e.code == "AccessDeniedException",
        Ok(_) => false,
    };
    // Another namespace's id; the namespace tagged blue, not red.
    assert!(denied(
        w.call_as(
            &ctx(),
            "GetNamespace",
            &json!({"Id": "ns-aaaaaaaaaaaaaaaa"})
        )
        .await
    ));
    assert!(denied(
        w.call_as(&ctx(), "DeleteNamespace", &json!({"Id": ns}))
            .await
    ));
    assert!(denied(
        w.call_as(
            &ctx(),
            "DeregisterInstance",
            &json!({"ServiceId": srv, "InstanceId": "i1"})
        )
        .await
    ));
}
