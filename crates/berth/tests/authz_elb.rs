//! IAM for Elastic Load Balancing v2: a walk over every operation of the
//! model as a user without policies (each is refused by IAM), and policies
//! scoped to load balancer ARNs and resource tags, run through the real
//! handlers with the real `IamAuthorizer` deciding.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use berth_elb::{
    CertificateDirectory, ElbService, InstanceDirectory, LoadBalancerNetworks, SubnetInfo,
};
use berth_model::{
    Access, AwsError, DenialStyle, Principal, PrincipalKind, QueryService, RequestContext,
};
use berth_store::{MemoryStore, Store};
use serde_json::{json, Value};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
const VPC: &str = "vpc-1";
const CERT: &str = "arn:aws:acm:us-east-1:000000000000:certificate/good";

/// Every operation of botocore's elbv2 2015-12-01 model.
const OPERATIONS: &[&str] = &[
    "AddListenerCertificates",
    "AddTags",
    "AddTrustStoreRevocations",
    "CreateListener",
    "CreateLoadBalancer",
    "CreateRule",
    "CreateTargetGroup",
    "CreateTrustStore",
    "DeleteListener",
    "DeleteLoadBalancer",
    "DeleteRule",
    "DeleteSharedTrustStoreAssociation",
    "DeleteTargetGroup",
    "DeleteTrustStore",
    "DeregisterTargets",
    "DescribeAccountLimits",
    "DescribeCapacityReservation",
    "DescribeListenerAttributes",
    "DescribeListenerCertificates",
    "DescribeListeners",
    "DescribeLoadBalancerAttributes",
    "DescribeLoadBalancers",
    "DescribeRules",
    "DescribeSSLPolicies",
    "DescribeTags",
    "DescribeTargetGroupAttributes",
    "DescribeTargetGroups",
    "DescribeTargetHealth",
    "DescribeTrustStoreAssociations",
    "DescribeTrustStoreRevocations",
    "DescribeTrustStores",
    "GetResourcePolicy",
    "GetTrustStoreCaCertificatesBundle",
    "GetTrustStoreRevocationContent",
    "ModifyCapacityReservation",
    "ModifyIpPools",
    "ModifyListener",
    "ModifyListenerAttributes",
    "ModifyLoadBalancerAttributes",
    "ModifyRule",
    "ModifyTargetGroup",
    "ModifyTargetGroupAttributes",
    "ModifyTrustStore",
    "RegisterTargets",
    "RemoveListenerCertificates",
    "RemoveTags",
    "RemoveTrustStoreRevocations",
    "SetIpAddressType",
    "SetRulePriorities",
    "SetSecurityGroups",
    "SetSubnets",
];

#[derive(Default)]
struct Net(AtomicU8);

#[async_trait::async_trait]
impl LoadBalancerNetworks for Net {
    fn subnets(&self, _: &str, _: &str, ids: &[String]) -> Result<Vec<SubnetInfo>, AwsError> {
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| SubnetInfo {
                subnet_id: id.clone(),
                vpc_id: VPC.into(),
                availability_zone: format!("us-east-1{}", (b'a' + i as u8) as char),
                zone_id: format!("use1-az{}", i + 1),
                cidr: format!("172.31.{}.0/20", i * 16),
            })
            .collect())
    }
    fn security_groups(
        &self,
        _: &str,
        _: &str,
        _: &str,
        ids: &[String],
    ) -> Result<Vec<String>, AwsError> {
        Ok(if ids.is_empty() {
            vec!["sg-default".into()]
        } else {
            ids.to_vec()
        })
    }
    fn vpc_cidr(&self, _: &str, _: &str, _: &str) -> Result<Option<String>, AwsError> {
        Ok(Some("172.31.0.0/16".into()))
    }
    async fn attach(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &[String],
        _: &str,
    ) -> Result<(String, Ipv4Addr), AwsError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok((format!("eni-{n}"), Ipv4Addr::new(172, 31, 0, 10 + n)))
    }
    async fn detach(&self, _: &str, _: &str, _: &str) -> Result<(), AwsError> {
        Ok(())
    }

    async fn set_groups(&self, _: &str, _: &str, _: &str, _: &[String]) -> Result<(), AwsError> {
        Ok(())
    }
}

struct Instances;
impl InstanceDirectory for Instances {
    fn instance_ipv4(&self, _: &str, _: &str, _: &str) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(192, 168, 0, 1))
    }
}

struct Certs;
impl CertificateDirectory for Certs {
    fn check(&self, _: &str, _: &str, _: &str) -> Result<(), AwsError> {
        Ok(())
    }
}

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
    elb: ElbService,
    user_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tag(xml: &str, name: &str) -> String {
    xml.split_once(&format!("<{name}>"))
        .and_then(|(_, r)| r.split_once(&format!("</{name}>")))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

struct Seed {
    lb: String,
    tg: String,
    listener: String,
    rule: String,
}

impl World {
    fn new() -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let iam = berth_iam::Iam::new(store.clone());
        World {
            iam_svc: iam.iam_service(),
            authorizer: Arc::new(berth_iam::IamAuthorizer::new(iam.clone())),
            elb: ElbService::new(
                store,
                Arc::new(Net::default()),
                Arc::new(Instances),
                Arc::new(Certs),
            ),
            user_ids: Default::default(),
        }
    }

    async fn user(&self, name: &str, policy: Option<Value>) {
        let root = root();
        let out = self
            .iam_svc
            .handle(&root, "CreateUser", &params(&[("UserName", name)]))
            .await
            .unwrap();
        self.user_ids
            .lock()
            .unwrap()
            .insert(name.to_string(), tag(&out, "UserId"));
        if let Some(policy) = policy {
            let doc = policy.to_string();
            self.iam_svc
                .handle(
                    &root,
                    "PutUserPolicy",
                    &params(&[
                        ("UserName", name),
                        ("PolicyName", "p"),
                        ("PolicyDocument", &doc),
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
            DenialStyle::Query,
            false,
        ))
    }

    async fn call_as(
        &self,
        ctx: &RequestContext,
        op: &str,
        p: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        let out = self.elb.handle(ctx, op, &params(p)).await;
        if out.is_ok() {
            assert!(ctx.access.checked(), "{op} answered without asking IAM");
        }
        out
    }

    async fn root_call(&self, op: &str, p: &[(&str, &str)]) -> String {
        self.call_as(&root(), op, p)
            .await
            .unwrap_or_else(|e| panic!("{op} as root: {e:?}"))
    }

    async fn seed(&self) -> Seed {
        let lb = tag(
            &self
                .root_call(
                    "CreateLoadBalancer",
                    &[
                        ("Name", "web"),
                        ("Subnets.member.1", "subnet-a"),
                        ("Subnets.member.2", "subnet-b"),
                        ("Tags.member.1.Key", "team"),
                        ("Tags.member.1.Value", "blue"),
                    ],
                )
                .await,
            "LoadBalancerArn",
        );
        let tg = tag(
            &self
                .root_call(
                    "CreateTargetGroup",
                    &[
                        ("Name", "api"),
                        ("Protocol", "HTTP"),
                        ("Port", "80"),
                        ("VpcId", VPC),
                        ("TargetType", "ip"),
                    ],
                )
                .await,
            "TargetGroupArn",
        );
        let listener = tag(
            &self
                .root_call(
                    "CreateListener",
                    &[
                        ("LoadBalancerArn", &lb),
                        ("Protocol", "HTTPS"),
                        ("Port", "443"),
                        ("Certificates.member.1.CertificateArn", CERT),
                        ("DefaultActions.member.1.Type", "forward"),
                        ("DefaultActions.member.1.TargetGroupArn", &tg),
                    ],
                )
                .await,
            "ListenerArn",
        );
        let rule = tag(
            &self
                .root_call(
                    "CreateRule",
                    &[
                        ("ListenerArn", &listener),
                        ("Priority", "10"),
                        ("Conditions.member.1.Field", "path-pattern"),
                        ("Conditions.member.1.Values.member.1", "/api/*"),
                        ("Actions.member.1.Type", "forward"),
                        ("Actions.member.1.TargetGroupArn", &tg),
                    ],
                )
                .await,
            "RuleArn",
        );
        self.root_call(
            "RegisterTargets",
            &[
                ("TargetGroupArn", &tg),
                ("Targets.member.1.Id", "172.31.1.1"),
            ],
        )
        .await;
        Seed {
            lb,
            tg,
            listener,
            rule,
        }
    }
}

fn plausible<'a>(op: &str, s: &'a Seed) -> Vec<(&'static str, &'a str)> {
    let lb = s.lb.as_str();
    let tg = s.tg.as_str();
    let l = s.listener.as_str();
    let rule = s.rule.as_str();
    match op {
        "CreateLoadBalancer" => vec![
            ("Name", "other"),
            ("Subnets.member.1", "subnet-a"),
            ("Subnets.member.2", "subnet-b"),
        ],
        "DescribeLoadBalancers" | "DescribeAccountLimits" | "DescribeSSLPolicies" => vec![],
        "DeleteLoadBalancer"
        | "DescribeLoadBalancerAttributes"
        | "DescribeCapacityReservation"
        | "ModifyCapacityReservation"
        | "ModifyIpPools" => vec![("LoadBalancerArn", lb)],
        "SetIpAddressType" => vec![("LoadBalancerArn", lb), ("IpAddressType", "ipv4")],
        "SetSubnets" => vec![
            ("LoadBalancerArn", lb),
            ("Subnets.member.1", "subnet-a"),
            ("Subnets.member.2", "subnet-b"),
        ],
        "SetSecurityGroups" => vec![("LoadBalancerArn", lb), ("SecurityGroups.member.1", "sg-1")],
        "ModifyLoadBalancerAttributes" => vec![
            ("LoadBalancerArn", lb),
            ("Attributes.member.1.Key", "idle_timeout.timeout_seconds"),
            ("Attributes.member.1.Value", "30"),
        ],
        "CreateTargetGroup" => vec![
            ("Name", "other"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("VpcId", VPC),
        ],
        "DescribeTargetGroups" => vec![],
        "ModifyTargetGroup" => vec![("TargetGroupArn", tg), ("HealthCheckPath", "/health")],
        "DeleteTargetGroup" | "DescribeTargetGroupAttributes" | "DescribeTargetHealth" => {
            vec![("TargetGroupArn", tg)]
        }
        "ModifyTargetGroupAttributes" => vec![
            ("TargetGroupArn", tg),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            ),
            ("Attributes.member.1.Value", "10"),
        ],
        "RegisterTargets" | "DeregisterTargets" => vec![
            ("TargetGroupArn", tg),
            ("Targets.member.1.Id", "172.31.1.1"),
        ],
        "CreateListener" => vec![
            ("LoadBalancerArn", lb),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("DefaultActions.member.1.Type", "fixed-response"),
            (
                "DefaultActions.member.1.FixedResponseConfig.StatusCode",
                "404",
            ),
        ],
        "DescribeListeners" => vec![("LoadBalancerArn", lb)],
        "ModifyListener" => vec![("ListenerArn", l), ("Port", "8443")],
        "DeleteListener" | "DescribeListenerAttributes" | "DescribeListenerCertificates" => {
            vec![("ListenerArn", l)]
        }
        "ModifyListenerAttributes" => vec![
            ("ListenerArn", l),
            (
                "Attributes.member.1.Key",
                "routing.http.response.server.enabled",
            ),
            ("Attributes.member.1.Value", "false"),
        ],
        "AddListenerCertificates" | "RemoveListenerCertificates" => {
            vec![
                ("ListenerArn", l),
                (
                    "Certificates.member.1.CertificateArn",
                    "arn:aws:acm:us-east-1:000000000000:certificate/x",
                ),
            ]
        }
        "CreateRule" => vec![
            ("ListenerArn", l),
            ("Priority", "20"),
            ("Conditions.member.1.Field", "host-header"),
            ("Conditions.member.1.Values.member.1", "a.example.com"),
            ("Actions.member.1.Type", "forward"),
            ("Actions.member.1.TargetGroupArn", tg),
        ],
        "DescribeRules" => vec![("ListenerArn", l)],
        "ModifyRule" | "DeleteRule" => vec![("RuleArn", rule)],
        "SetRulePriorities" => vec![
            ("RulePriorities.member.1.RuleArn", rule),
            ("RulePriorities.member.1.Priority", "30"),
        ],
        "AddTags" => vec![
            ("ResourceArns.member.1", lb),
            ("Tags.member.1.Key", "a"),
            ("Tags.member.1.Value", "b"),
        ],
        "RemoveTags" => vec![("ResourceArns.member.1", lb), ("TagKeys.member.1", "team")],
        "DescribeTags" => vec![("ResourceArns.member.1", lb)],
        _ => vec![],
    }
}

#[tokio::test]
async fn every_operation_refuses_a_user_without_policies() {
    let w = World::new();
    let seed = w.seed().await;
    w.user("nobody", None).await;
    let mut failures = Vec::new();
    for op in OPERATIONS {
        let p = plausible(op, &seed);
        match w.call_as(&w.ctx("nobody"), op, &p).await {
            Ok(out) => failures.push(format!("{op} answered success: {out}")),
            Err(e) if e.code != "AccessDenied" => {
                failures.push(format!("{op} was not refused by IAM: {e:?}"))
            }
            Err(e) => assert!(
                e.message.starts_with(&format!(
                    "User: arn:aws:iam::{ACCOUNT}:user/nobody is not authorized to perform: elasticloadbalancing:{op} on resource: "
                )),
                "{op}: {}",
                e.message
            ),
        }
    }
    for (op, _) in berth_elb::NOT_IMPLEMENTED {
        assert!(OPERATIONS.contains(op), "{op} is not in the model");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn policies_scope_to_arns_and_tags() {
    let w = World::new();
    let seed = w.seed().await;
    w.user(
        "ops",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "elasticloadbalancing:Describe*", "Resource": "*"},
            {"Effect": "Allow", "Action": "elasticloadbalancing:ModifyLoadBalancerAttributes", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}},
            {"Effect": "Allow", "Action": "elasticloadbalancing:CreateTargetGroup", "Resource": "*"},
            {"Effect": "Allow", "Action": "elasticloadbalancing:RegisterTargets", "Resource": seed.tg}
        ]})),
    )
    .await;
    let ctx = || w.ctx("ops");
    w.call_as(&ctx(), "DescribeLoadBalancers", &[])
        .await
        .unwrap();
    w.call_as(
        &ctx(),
        "ModifyLoadBalancerAttributes",
        &plausible("ModifyLoadBalancerAttributes", &seed),
    )
    .await
    .unwrap();
    w.call_as(
        &ctx(),
        "RegisterTargets",
        &plausible("RegisterTargets", &seed),
    )
    .await
    .unwrap();
    w.call_as(
        &ctx(),
        "CreateTargetGroup",
        &plausible("CreateTargetGroup", &seed),
    )
    .await
    .unwrap();
    // Tags on create need elasticloadbalancing:AddTags too.
    let mut tagged = plausible("CreateTargetGroup", &seed);
    tagged[0] = ("Name", "tagged");
    tagged.push(("Tags.member.1.Key", "k"));
    tagged.push(("Tags.member.1.Value", "v"));
    let e = w
        .call_as(&ctx(), "CreateTargetGroup", &tagged)
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");
    assert!(
        e.message.contains("elasticloadbalancing:AddTags"),
        "{}",
        e.message
    );
    let e = w
        .call_as(
            &ctx(),
            "DeleteLoadBalancer",
            &[("LoadBalancerArn", &seed.lb)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");
}
