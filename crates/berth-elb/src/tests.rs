//! The handlers through an in-memory store and fake ports.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use berth_model::{AwsError, Principal, PrincipalKind, QueryService, RequestContext};
use berth_store::{MemoryStore, Store};

use crate::model::HealthState;
use crate::*;

const A: &str = "000000000000";
const R: &str = "us-east-1";
const VPC: &str = "vpc-1";

#[derive(Default)]
struct FakeNet {
    next: AtomicU32,
    attached: Mutex<Vec<String>>,
    /// SetSecurityGroups' interface updates: (interface, groups).
    grouped: Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait::async_trait]
impl LoadBalancerNetworks for FakeNet {
    fn subnets(&self, _: &str, _: &str, ids: &[String]) -> Result<Vec<SubnetInfo>, AwsError> {
        ids.iter()
            .map(|id| {
                let (az, vpc, cidr) = match id.as_str() {
                    "subnet-a" => ("us-east-1a", VPC, "172.31.0.0/20"),
                    "subnet-b" => ("us-east-1b", VPC, "172.31.16.0/20"),
                    "subnet-a2" => ("us-east-1a", VPC, "172.31.32.0/20"),
                    "subnet-x" => ("us-east-1c", "vpc-2", "10.0.0.0/24"),
                    _ => {
                        return Err(AwsError::bad_request(
                            "SubnetNotFound",
                            format!("The subnet ID '{id}' is not found"),
                        ))
                    }
                };
                Ok(SubnetInfo {
                    subnet_id: id.clone(),
                    vpc_id: vpc.into(),
                    availability_zone: az.into(),
                    zone_id: "use1-az1".into(),
                    cidr: cidr.into(),
                })
            })
            .collect()
    }

    fn security_groups(
        &self,
        _: &str,
        _: &str,
        _: &str,
        ids: &[String],
    ) -> Result<Vec<String>, AwsError> {
        if ids.is_empty() {
            return Ok(vec!["sg-default".into()]);
        }
        for id in ids {
            if !id.starts_with("sg-") {
                return Err(AwsError::bad_request(
                    "InvalidSecurityGroup",
                    format!("The security group '{id}' does not exist"),
                ));
            }
        }
        Ok(ids.to_vec())
    }

    fn vpc_cidr(&self, _: &str, _: &str, vpc: &str) -> Result<Option<String>, AwsError> {
        Ok((vpc == VPC).then(|| "172.31.0.0/16".to_string()))
    }

    async fn attach(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &[String],
        _: &str,
    ) -> Result<(String, Ipv4Addr), AwsError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let id = format!("eni-{n}");
        self.attached.lock().unwrap().push(id.clone());
        Ok((id, Ipv4Addr::new(172, 31, 0, 10 + n as u8)))
    }

    async fn detach(&self, _: &str, _: &str, eni: &str) -> Result<(), AwsError> {
        self.attached.lock().unwrap().retain(|e| e != eni);
        Ok(())
    }

    async fn set_groups(
        &self,
        _: &str,
        _: &str,
        eni: &str,
        groups: &[String],
    ) -> Result<(), AwsError> {
        self.grouped
            .lock()
            .unwrap()
            .push((eni.to_string(), groups.to_vec()));
        Ok(())
    }
}

struct FakeInstances;
impl InstanceDirectory for FakeInstances {
    fn instance_ipv4(&self, _: &str, _: &str, id: &str) -> Option<Ipv4Addr> {
        (id == "i-0123456789abcdef0").then_some(Ipv4Addr::new(192, 168, 1, 5))
    }
}

struct FakeCerts;
impl CertificateDirectory for FakeCerts {
    fn check(&self, _: &str, _: &str, arn: &str) -> Result<(), AwsError> {
        if arn.ends_with("certificate/good") {
            Ok(())
        } else {
            Err(AwsError::bad_request(
                "CertificateNotFound",
                format!("Certificate '{arn}' not found"),
            ))
        }
    }
}

struct H {
    store: Arc<dyn Store>,
    net: Arc<FakeNet>,
    elb: Arc<ElbService>,
}

fn root() -> RequestContext {
    RequestContext::for_principal(
        Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{A}:root"),
            user_id: A.into(),
            account_id: A.into(),
            access_key_id: "AKIAROOT".into(),
        },
        R,
    )
}

fn harness() -> H {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let net = Arc::new(FakeNet::default());
    let elb = Arc::new(ElbService::new(
        store.clone(),
        net.clone(),
        Arc::new(FakeInstances),
        Arc::new(FakeCerts),
    ));
    H { store, net, elb }
}

fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    xml.split_once(&open)
        .and_then(|(_, r)| r.split_once(&close))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

impl H {
    async fn call(&self, op: &str, params: &[(&str, &str)]) -> Result<String, AwsError> {
        let p: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.elb.handle(&root(), op, &p).await
    }

    async fn ok(&self, op: &str, params: &[(&str, &str)]) -> String {
        self.call(op, params)
            .await
            .unwrap_or_else(|e| panic!("{op}: {} {}", e.code, e.message))
    }

    async fn err(&self, op: &str, params: &[(&str, &str)]) -> String {
        let before = self.store.revision();
        let e = self.call(op, params).await.expect_err(op);
        assert_eq!(
            self.store.revision(),
            before,
            "{op} changed state while failing"
        );
        e.code.to_string()
    }

    async fn alb(&self) -> String {
        let out = self
            .ok(
                "CreateLoadBalancer",
                &[
                    ("Name", "web"),
                    ("Subnets.member.1", "subnet-a"),
                    ("Subnets.member.2", "subnet-b"),
                ],
            )
            .await;
        tag(&out, "LoadBalancerArn")
    }

    async fn tg(&self, name: &str, protocol: &str, kind: &str) -> String {
        let out = self
            .ok(
                "CreateTargetGroup",
                &[
                    ("Name", name),
                    ("Protocol", protocol),
                    ("Port", "80"),
                    ("VpcId", VPC),
                    ("TargetType", kind),
                ],
            )
            .await;
        tag(&out, "TargetGroupArn")
    }

    async fn listener(&self, lb: &str, port: &str, tg: &str) -> String {
        let out = self
            .ok(
                "CreateListener",
                &[
                    ("LoadBalancerArn", lb),
                    ("Protocol", "HTTP"),
                    ("Port", port),
                    ("DefaultActions.member.1.Type", "forward"),
                    ("DefaultActions.member.1.TargetGroupArn", tg),
                ],
            )
            .await;
        tag(&out, "ListenerArn")
    }
}

#[tokio::test]
async fn load_balancer_lifecycle_publishes_dns() {
    let h = harness();
    let arn = h.alb().await;
    assert!(arn.starts_with(&format!(
        "arn:aws:elasticloadbalancing:{R}:{A}:loadbalancer/app/web/"
    )));
    assert_eq!(arn.rsplit('/').next().unwrap().len(), 16);
    let out = h
        .ok("DescribeLoadBalancers", &[("Names.member.1", "web")])
        .await;
    let dns = tag(&out, "DNSName");
    assert!(
        dns.starts_with("web-") && dns.ends_with(".us-east-1.elb.amazonaws.com"),
        "{dns}"
    );
    assert_eq!(tag(&out, "CanonicalHostedZoneId"), "Z35SXDOTRQ7X7K");
    assert!(out.contains("<SecurityGroups><member>sg-default</member>"));
    let records = h.store.range("dns/records/elb-app-us-east-1/", None, 10);
    assert_eq!(records.len(), 1);
    let set: berth_model::dns_registry::RecordSet =
        serde_json::from_slice(&records[0].value).unwrap();
    assert_eq!(set.values, vec!["172.31.0.10", "172.31.0.11"]);
    assert!(h.store.get("dns/zones/elb-app-us-east-1").is_some());
    // Idempotent create; attributes; protection.
    let again = h
        .ok(
            "CreateLoadBalancer",
            &[
                ("Name", "web"),
                ("Subnets.member.1", "subnet-a"),
                ("Subnets.member.2", "subnet-b"),
            ],
        )
        .await;
    assert_eq!(tag(&again, "LoadBalancerArn"), arn);
    let attrs = h
        .ok(
            "DescribeLoadBalancerAttributes",
            &[("LoadBalancerArn", &arn)],
        )
        .await;
    assert!(attrs.contains("<Key>idle_timeout.timeout_seconds</Key><Value>60</Value>"));
    assert_eq!(
        h.err(
            "ModifyLoadBalancerAttributes",
            &[
                ("LoadBalancerArn", &arn),
                ("Attributes.member.1.Key", "idle_timeout.timeout_seconds"),
                ("Attributes.member.1.Value", "4001"),
            ],
        )
        .await,
        "InvalidConfigurationRequest"
    );
    h.ok(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &arn),
            ("Attributes.member.1.Key", "deletion_protection.enabled"),
            ("Attributes.member.1.Value", "true"),
        ],
    )
    .await;
    assert_eq!(
        h.err("DeleteLoadBalancer", &[("LoadBalancerArn", &arn)])
            .await,
        "OperationNotPermitted"
    );
    h.ok(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &arn),
            ("Attributes.member.1.Key", "deletion_protection.enabled"),
            ("Attributes.member.1.Value", "false"),
        ],
    )
    .await;
    h.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &arn)])
        .await;
    assert!(h
        .store
        .range("dns/records/elb-app-us-east-1/", None, 10)
        .is_empty());
    assert!(h.net.attached.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_load_balancers_change_nothing() {
    let h = harness();
    let one = [("Name", "a"), ("Subnets.member.1", "subnet-a")];
    assert_eq!(h.err("CreateLoadBalancer", &one).await, "ValidationError");
    let same_az = [
        ("Name", "a"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-a2"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &same_az).await,
        "InvalidConfigurationRequest"
    );
    let two_vpcs = [
        ("Name", "a"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-x"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &two_vpcs).await,
        "InvalidConfigurationRequest"
    );
    let missing = [
        ("Name", "a"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-zz"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &missing).await,
        "SubnetNotFound"
    );
    let long = "a".repeat(33);
    let long_name = [
        ("Name", long.as_str()),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-b"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &long_name).await,
        "ValidationError"
    );
    let bad_chars = [
        ("Name", "a_b"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-b"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &bad_chars).await,
        "ValidationError"
    );
    let dual = [
        ("Name", "a"),
        ("IpAddressType", "dualstack"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-b"),
    ];
    assert_eq!(h.err("CreateLoadBalancer", &dual).await, "ValidationError");
    let bad_sg = [
        ("Name", "a"),
        ("SecurityGroups.member.1", "nope"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-b"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &bad_sg).await,
        "InvalidSecurityGroup"
    );
    let arn = h.alb().await;
    let dup = [
        ("Name", "web"),
        ("Scheme", "internal"),
        ("Subnets.member.1", "subnet-a"),
        ("Subnets.member.2", "subnet-b"),
    ];
    assert_eq!(
        h.err("CreateLoadBalancer", &dup).await,
        "DuplicateLoadBalancerName"
    );
    assert_eq!(
        h.net.attached.lock().unwrap().len(),
        2,
        "a refused create left interfaces"
    );
    let _ = arn;
}

#[tokio::test]
async fn listeners_rules_and_target_groups() {
    let h = harness();
    let lb = h.alb().await;
    let tg = h.tg("api", "HTTP", "ip").await;
    let out = h
        .ok("DescribeTargetGroups", &[("TargetGroupArns.member.1", &tg)])
        .await;
    assert_eq!(tag(&out, "HealthCheckPath"), "/");
    assert_eq!(tag(&out, "HealthCheckIntervalSeconds"), "30");
    assert_eq!(tag(&out, "HealthyThresholdCount"), "5");
    assert_eq!(tag(&out, "UnhealthyThresholdCount"), "2");
    assert_eq!(tag(&out, "HttpCode"), "200");
    let listener = h.listener(&lb, "80", &tg).await;
    assert!(listener.contains(":listener/app/web/"));
    // Second listener on the port; TCP on an ALB; HTTPS without / with an unknown certificate.
    let dup = [
        ("LoadBalancerArn", lb.as_str()),
        ("Protocol", "HTTP"),
        ("Port", "80"),
        ("DefaultActions.member.1.Type", "forward"),
        ("DefaultActions.member.1.TargetGroupArn", tg.as_str()),
    ];
    assert_eq!(h.err("CreateListener", &dup).await, "DuplicateListener");
    let mut tcp = dup.to_vec();
    tcp[1] = ("Protocol", "TCP");
    tcp[2] = ("Port", "81");
    assert_eq!(h.err("CreateListener", &tcp).await, "IncompatibleProtocols");
    let mut https = dup.to_vec();
    https[1] = ("Protocol", "HTTPS");
    https[2] = ("Port", "443");
    assert_eq!(h.err("CreateListener", &https).await, "CertificateNotFound");
    https.push((
        "Certificates.member.1.CertificateArn",
        "arn:aws:acm:us-east-1:000000000000:certificate/bad",
    ));
    assert_eq!(h.err("CreateListener", &https).await, "CertificateNotFound");
    let last = https.len() - 1;
    https[last] = (
        "Certificates.member.1.CertificateArn",
        "arn:aws:acm:us-east-1:000000000000:certificate/good",
    );
    let out = h.ok("CreateListener", &https).await;
    assert_eq!(tag(&out, "SslPolicy"), "ELBSecurityPolicy-2016-08");
    // Rules.
    let rule = [
        ("ListenerArn", listener.as_str()),
        ("Priority", "10"),
        ("Conditions.member.1.Field", "path-pattern"),
        ("Conditions.member.1.Values.member.1", "/api/*"),
        ("Actions.member.1.Type", "fixed-response"),
        ("Actions.member.1.FixedResponseConfig.StatusCode", "404"),
        ("Actions.member.1.FixedResponseConfig.MessageBody", "nope"),
    ];
    let out = h.ok("CreateRule", &rule).await;
    let rule_arn = tag(&out, "RuleArn");
    assert!(rule_arn.contains(":listener-rule/app/web/"));
    assert_eq!(h.err("CreateRule", &rule).await, "PriorityInUse");
    let mut six = vec![("ListenerArn", listener.as_str()), ("Priority", "11")];
    let keys: Vec<String> = (1..=6)
        .map(|i| format!("Conditions.member.1.HostHeaderConfig.Values.member.{i}"))
        .collect();
    six.push(("Conditions.member.1.Field", "host-header"));
    for k in &keys {
        six.push((k.as_str(), "a.example.com"));
    }
    six.push(("Actions.member.1.Type", "forward"));
    six.push(("Actions.member.1.TargetGroupArn", tg.as_str()));
    assert_eq!(h.err("CreateRule", &six).await, "ValidationError");
    let redirect_loop = [
        ("ListenerArn", listener.as_str()),
        ("Priority", "12"),
        ("Conditions.member.1.Field", "path-pattern"),
        ("Conditions.member.1.Values.member.1", "/x"),
        ("Actions.member.1.Type", "redirect"),
        ("Actions.member.1.RedirectConfig.StatusCode", "HTTP_301"),
    ];
    assert_eq!(
        h.err("CreateRule", &redirect_loop).await,
        "InvalidLoadBalancerAction"
    );
    let rules = h.ok("DescribeRules", &[("ListenerArn", &listener)]).await;
    assert!(rules.contains("<Priority>default</Priority>"));
    assert!(rules.contains("<Priority>10</Priority>"));
    // In use.
    assert_eq!(
        h.err("DeleteTargetGroup", &[("TargetGroupArn", &tg)]).await,
        "ResourceInUse"
    );
    // Health-check validation.
    let bad = [
        ("TargetGroupArn", tg.as_str()),
        ("HealthCheckTimeoutSeconds", "40"),
    ];
    assert_eq!(h.err("ModifyTargetGroup", &bad).await, "ValidationError");
    let bad = [("TargetGroupArn", tg.as_str()), ("Matcher.HttpCode", "600")];
    assert_eq!(h.err("ModifyTargetGroup", &bad).await, "ValidationError");
    // Deleting the load balancer removes its listeners and rules.
    h.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &lb)])
        .await;
    assert_eq!(
        h.err("DescribeRules", &[("RuleArns.member.1", &rule_arn)])
            .await,
        "RuleNotFound"
    );
    h.ok("DeleteTargetGroup", &[("TargetGroupArn", &tg)]).await;
}

#[tokio::test]
async fn targets_health_and_draining() {
    let h = harness();
    let lb = h.alb().await;
    let tg = h.tg("ips", "HTTP", "ip").await;
    let reg = [
        ("TargetGroupArn", tg.as_str()),
        ("Targets.member.1.Id", "10.9.9.9"),
    ];
    assert_eq!(h.err("RegisterTargets", &reg).await, "InvalidTarget");
    let reg = [
        ("TargetGroupArn", tg.as_str()),
        ("Targets.member.1.Id", "172.31.5.5"),
        ("Targets.member.1.Port", "8080"),
    ];
    h.ok("RegisterTargets", &reg).await;
    let out = h
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &tg)])
        .await;
    assert_eq!(tag(&out, "State"), "unused");
    assert_eq!(tag(&out, "Reason"), "Target.NotInUse");
    h.listener(&lb, "80", &tg).await;
    let out = h
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &tg)])
        .await;
    assert_eq!(tag(&out, "Reason"), "Elb.RegistrationInProgress");
    h.elb
        .set_target_health(
            &tg,
            "172.31.5.5",
            8080,
            HealthState::Unhealthy,
            Some("Target.ResponseCodeMismatch"),
            Some("Health checks failed with these codes: [500]"),
        )
        .await
        .unwrap();
    let out = h
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &tg)])
        .await;
    assert_eq!(tag(&out, "State"), "unhealthy");
    assert_eq!(
        tag(&out, "Description"),
        "Health checks failed with these codes: [500]"
    );
    let snap = h.elb.snapshot().unwrap();
    assert_eq!(snap.load_balancers.len(), 1);
    assert_eq!(snap.load_balancers[0].listeners.len(), 1);
    assert_eq!(
        snap.target_groups[0].targets[0].address,
        Some(Ipv4Addr::new(172, 31, 5, 5))
    );
    // Instances through the directory.
    let itg = h.tg("inst", "HTTP", "instance").await;
    let bad = [
        ("TargetGroupArn", itg.as_str()),
        ("Targets.member.1.Id", "i-unknown"),
    ];
    assert_eq!(h.err("RegisterTargets", &bad).await, "InvalidTarget");
    h.elb
        .register_targets(A, R, &itg, &[("i-0123456789abcdef0".into(), 32768)])
        .await
        .unwrap();
    // Draining.
    h.ok("DeregisterTargets", &reg).await;
    let out = h
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &tg)])
        .await;
    assert_eq!(tag(&out, "State"), "draining");
    let st = h
        .elb
        .target_state(A, R, &tg, "172.31.5.5", 8080)
        .unwrap()
        .unwrap();
    assert_eq!(st.reason, Some("Target.DeregistrationInProgress"));
    h.ok(
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", &tg),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            ),
            ("Attributes.member.1.Value", "0"),
        ],
    )
    .await;
    // Not registered any more: asked for, it is unused/NotRegistered once gone.
    let st = h.elb.expire_draining().await.unwrap();
    assert!(st.is_some(), "the 300 s deadline is still ahead");
    let asked = [
        ("TargetGroupArn", tg.as_str()),
        ("Targets.member.1.Id", "172.31.9.9"),
        ("Targets.member.1.Port", "80"),
    ];
    let out = h.ok("DescribeTargetHealth", &asked).await;
    assert_eq!(tag(&out, "Reason"), "Target.NotRegistered");
    let bad = [
        ("TargetGroupArn", tg.as_str()),
        ("Attributes.member.1.Key", "slow_start.duration_seconds"),
        ("Attributes.member.1.Value", "10"),
    ];
    assert_eq!(
        h.err("ModifyTargetGroupAttributes", &bad).await,
        "InvalidConfigurationRequest"
    );
    let summary = h.elb.target_group_summary(A, R, &tg).unwrap();
    assert_eq!(summary.load_balancer_arns, vec![lb]);
}

#[tokio::test]
async fn tags_limits_and_policies() {
    let h = harness();
    let lb = h.alb().await;
    h.ok(
        "AddTags",
        &[
            ("ResourceArns.member.1", &lb),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "blue"),
        ],
    )
    .await;
    let out = h
        .ok("DescribeTags", &[("ResourceArns.member.1", &lb)])
        .await;
    assert!(out.contains("<Key>team</Key><Value>blue</Value>"));
    let dup = [
        ("ResourceArns.member.1", lb.as_str()),
        ("Tags.member.1.Key", "a"),
        ("Tags.member.2.Key", "a"),
    ];
    assert_eq!(h.err("AddTags", &dup).await, "DuplicateTagKeys");
    h.ok(
        "RemoveTags",
        &[("ResourceArns.member.1", &lb), ("TagKeys.member.1", "team")],
    )
    .await;
    let out = h.ok("DescribeAccountLimits", &[]).await;
    assert!(out.contains("<Name>application-load-balancers</Name><Max>50</Max>"));
    let out = h
        .ok(
            "DescribeSSLPolicies",
            &[("Names.member.1", "ELBSecurityPolicy-2016-08")],
        )
        .await;
    assert!(out.contains("ECDHE-ECDSA-AES128-GCM-SHA256"));
    assert_eq!(
        h.err("DescribeSSLPolicies", &[("Names.member.1", "nope")])
            .await,
        "SSLPolicyNotFound"
    );
    assert_eq!(
        h.err("CreateTrustStore", &[("Name", "t")]).await,
        "OperationNotPermitted"
    );
}

#[tokio::test]
async fn draining_targets_go_when_the_delay_ends() {
    let h = harness();
    let lb = h.alb().await;
    let tg = h.tg("short", "HTTP", "ip").await;
    h.listener(&lb, "80", &tg).await;
    h.ok(
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", &tg),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            ),
            ("Attributes.member.1.Value", "1"),
        ],
    )
    .await;
    h.elb
        .register_targets(
            A,
            R,
            &tg,
            &[("172.31.1.1".into(), 80), ("172.31.1.2".into(), 80)],
        )
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let timers = tokio::spawn(h.elb.clone().run_timers(rx));
    h.elb
        .deregister_targets(
            A,
            R,
            &tg,
            &[("172.31.1.1".into(), 80), ("10.0.0.9".into(), 80)],
        )
        .await
        .unwrap();
    let st = h
        .elb
        .target_state(A, R, &tg, "172.31.1.1", 80)
        .unwrap()
        .unwrap();
    assert_eq!(st.state, "draining");
    let snap = h.elb.snapshot().unwrap();
    assert!(snap.target_groups[0]
        .targets
        .iter()
        .any(|t| t.drain_until.is_some()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h
        .elb
        .target_state(A, R, &tg, "172.31.1.1", 80)
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the draining target stayed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(h
        .elb
        .target_state(A, R, &tg, "172.31.1.2", 80)
        .unwrap()
        .is_some());
    tx.send(true).unwrap();
    timers.await.unwrap();
}

#[tokio::test]
async fn subnets_and_groups_change_with_their_interfaces() {
    let h = harness();
    let lb = h.alb().await;
    let out = h
        .ok(
            "SetSubnets",
            &[
                ("LoadBalancerArn", &lb),
                ("Subnets.member.1", "subnet-b"),
                ("Subnets.member.2", "subnet-a2"),
            ],
        )
        .await;
    assert!(out.contains("<SubnetId>subnet-a2</SubnetId>"));
    assert!(!out.contains("<SubnetId>subnet-a</SubnetId>"));
    assert_eq!(h.net.attached.lock().unwrap().len(), 2);
    let records = h.store.range("dns/records/elb-app-us-east-1/", None, 10);
    let set: berth_model::dns_registry::RecordSet =
        serde_json::from_slice(&records[0].value).unwrap();
    assert_eq!(set.values, vec!["172.31.0.11", "172.31.0.12"]);
    let bad = [
        ("LoadBalancerArn", lb.as_str()),
        ("Subnets.member.1", "subnet-b"),
        ("Subnets.member.2", "subnet-x"),
    ];
    assert_eq!(
        h.err("SetSubnets", &bad).await,
        "InvalidConfigurationRequest"
    );
    let out = h
        .ok(
            "SetSecurityGroups",
            &[
                ("LoadBalancerArn", &lb),
                ("SecurityGroups.member.1", "sg-web"),
            ],
        )
        .await;
    assert_eq!(tag(&out, "SecurityGroupIds"), "<member>sg-web</member>");
    // Each of the load balancer's interfaces is put in the new group.
    let mut grouped = h.net.grouped.lock().unwrap().clone();
    grouped.sort();
    let mut attached = h.net.attached.lock().unwrap().clone();
    attached.sort();
    assert_eq!(
        grouped,
        attached
            .iter()
            .map(|e| (e.clone(), vec!["sg-web".to_string()]))
            .collect::<Vec<_>>()
    );
    let bad = [
        ("LoadBalancerArn", lb.as_str()),
        ("SecurityGroups.member.1", "nope"),
    ];
    assert_eq!(
        h.err("SetSecurityGroups", &bad).await,
        "InvalidSecurityGroup"
    );
}

#[tokio::test]
async fn certificate_users_are_the_load_balancers_whose_listeners_name_it() {
    let h = harness();
    let lb = h.alb().await;
    let good = "arn:aws:acm:us-east-1:000000000000:certificate/good";
    let out = h
        .ok(
            "CreateListener",
            &[
                ("LoadBalancerArn", lb.as_str()),
                ("Protocol", "HTTPS"),
                ("Port", "443"),
                ("Certificates.member.1.CertificateArn", good),
                ("DefaultActions.member.1.Type", "fixed-response"),
                (
                    "DefaultActions.member.1.FixedResponseConfig.StatusCode",
                    "200",
                ),
            ],
        )
        .await;
    let listener = tag(&out, "ListenerArn");
    let users = |arn: &str| crate::certificate_users(h.store.as_ref(), A, R, arn);
    assert_eq!(users(good), vec![lb.clone()]);
    assert!(users("arn:aws:acm:us-east-1:000000000000:certificate/other").is_empty());
    assert!(crate::certificate_users(h.store.as_ref(), A, "eu-west-1", good).is_empty());
    h.ok("DeleteListener", &[("ListenerArn", listener.as_str())])
        .await;
    assert!(users(good).is_empty());
}

#[tokio::test]
async fn ecs_reads_and_sets_forward_weights_of_rules_and_default_rules() {
    let h = harness();
    let lb = h.alb().await;
    let blue = h.tg("blue", "HTTP", "instance").await;
    let green = h.tg("green", "HTTP", "instance").await;
    let listener = h.listener(&lb, "80", &blue).await;
    let out = h
        .ok(
            "CreateRule",
            &[
                ("ListenerArn", &listener),
                ("Priority", "10"),
                ("Conditions.member.1.Field", "path-pattern"),
                ("Conditions.member.1.Values.member.1", "/*"),
                ("Actions.member.1.Type", "forward"),
                ("Actions.member.1.TargetGroupArn", &blue),
            ],
        )
        .await;
    let rule = tag(&out, "RuleArn");
    let read = h.elb.rule_forward(A, R, &rule).unwrap();
    assert_eq!(read.listener_arn, listener);
    assert_eq!(read.load_balancer_arn, lb);
    assert_eq!(read.groups, vec![(blue.clone(), None)]);
    let weights = vec![(blue.clone(), 90), (green.clone(), 10)];
    h.elb
        .set_forward_weights(A, R, &rule, &weights)
        .await
        .unwrap();
    assert_eq!(
        h.elb.rule_forward(A, R, &rule).unwrap().groups,
        vec![(blue.clone(), Some(90)), (green.clone(), Some(10))]
    );
    // The green group is now in use by the load balancer.
    assert_eq!(
        h.elb
            .target_group_summary(A, R, &green)
            .unwrap()
            .load_balancer_arns,
        vec![lb.clone()]
    );
    let described = h.ok("DescribeRules", &[("RuleArns.member.1", &rule)]).await;
    assert!(described.contains("<Weight>10</Weight>"), "{described}");
    // A listener's ARN names its default rule.
    let default = h.elb.rule_forward(A, R, &listener).unwrap();
    assert_ne!(default.rule_arn, rule);
    h.elb
        .set_forward_weights(A, R, &default.rule_arn, &[(green.clone(), 100)])
        .await
        .unwrap();
    assert_eq!(
        h.elb.rule_forward(A, R, &listener).unwrap().groups,
        vec![(green.clone(), Some(100))]
    );
    // Unknown rules and groups.
    let before = h.store.revision();
    let missing = format!("{rule}0");
    assert_eq!(
        h.elb.rule_forward(A, R, &missing).unwrap_err().code,
        "RuleNotFound"
    );
    let e = h
        .elb
        .set_forward_weights(A, R, &rule, &[(format!("{green}0"), 1)])
        .await
        .unwrap_err();
    assert_eq!(e.code, "TargetGroupNotFound");
    assert_eq!(h.store.revision(), before);
}
