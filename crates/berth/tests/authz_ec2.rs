//! EC2 authorization through the real EC2 handlers and the real
//! `IamAuthorizer`: every action of AWS's EC2 model made by a user with no
//! policy (the implemented ones are refused by IAM as EC2 refuses, the rest
//! answer UnsupportedOperation with their reason), and policy cases on the
//! resources around a VPC — canonical ARNs, `ec2:Vpc`, `aws:ResourceTag`,
//! `aws:RequestTag` and `ec2:CreateTags` with `ec2:CreateAction` on creates.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_ec2::Ec2Service;
use berth_iam::{Iam, IamAuthorizer};
use berth_model::credentials::CredentialSource;
use berth_model::{
    Access, AwsError, DenialStyle, Principal, PrincipalKind, QueryService, RequestContext,
};
use berth_store::{MemoryStore, Store};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const EC2_OPERATIONS: &str = include_str!("../../berth-ec2/src/operations.txt");

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The text of the first `<name>` element.
fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).map(|i| i + open.len()).unwrap_or(0);
    let end = xml[start..]
        .find(&format!("</{name}>"))
        .map_or(start, |i| i + start);
    xml[start..end].to_string()
}

fn arn(r: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{r}")
}

/// The resources the cases name.
#[derive(Default)]
struct Ids {
    vpc: String,
    vpc_assoc: String,
    subnet: String,
    sg: String,
    rule: String,
    igw: String,
    rtb: String,
    rtb_assoc: String,
    nat: String,
    eip: String,
    eip2: String,
    eip_assoc: String,
    eni: String,
}

struct World {
    iam: Arc<Iam>,
    iam_svc: Arc<berth_iam::IamService>,
    ec2: Arc<Ec2Service>,
    authorizer: Arc<IamAuthorizer>,
    root: RequestContext,
    users: std::cell::Cell<u32>,
    ids: Ids,
}

impl World {
    async fn new() -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let iam = Iam::new(store.clone());
        let ec2 = Arc::new(Ec2Service::new(store.clone()));
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
        let mut w = World {
            iam_svc: iam.iam_service(),
            authorizer: Arc::new(IamAuthorizer::new(iam.clone())),
            iam,
            ec2,
            root,
            users: std::cell::Cell::new(0),
            ids: Ids::default(),
        };
        // A VPC (team=blue) with a second block, a subnet, a group with a
        // rule, an attached internet gateway, a route table (team=red)
        // associated with the subnet, two elastic IPs (one on a NAT
        // gateway, one on a task's interface).
        let out = w
            .root_ec2(
                "CreateVpc",
                &[
                    ("CidrBlock", "10.0.0.0/16"),
                    ("TagSpecification.1.ResourceType", "vpc"),
                    ("TagSpecification.1.Tag.1.Key", "team"),
                    ("TagSpecification.1.Tag.1.Value", "blue"),
                ],
            )
            .await;
        let vpc = tag(&out, "vpcId");
        let out = w
            .root_ec2(
                "AssociateVpcCidrBlock",
                &[("VpcId", &vpc), ("CidrBlock", "10.1.0.0/16")],
            )
            .await;
        w.ids.vpc_assoc = tag(&out, "associationId");
        let out = w
            .root_ec2(
                "CreateSubnet",
                &[("VpcId", &vpc), ("CidrBlock", "10.0.1.0/24")],
            )
            .await;
        let subnet = tag(&out, "subnetId");
        let out = w
            .root_ec2(
                "CreateSecurityGroup",
                &[
                    ("VpcId", &vpc),
                    ("GroupName", "web"),
                    ("GroupDescription", "web"),
                ],
            )
            .await;
        let sg = tag(&out, "groupId");
        let out = w
            .root_ec2(
                "AuthorizeSecurityGroupIngress",
                &[
                    ("GroupId", &sg),
                    ("IpPermissions.1.IpProtocol", "tcp"),
                    ("IpPermissions.1.FromPort", "80"),
                    ("IpPermissions.1.ToPort", "80"),
                    ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
                ],
            )
            .await;
        w.ids.rule = tag(&out, "securityGroupRuleId");
        let igw = tag(
            &w.root_ec2("CreateInternetGateway", &[]).await,
            "internetGatewayId",
        );
        w.root_ec2(
            "AttachInternetGateway",
            &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
        )
        .await;
        let out = w
            .root_ec2(
                "CreateRouteTable",
                &[
                    ("VpcId", &vpc),
                    ("TagSpecification.1.ResourceType", "route-table"),
                    ("TagSpecification.1.Tag.1.Key", "team"),
                    ("TagSpecification.1.Tag.1.Value", "red"),
                ],
            )
            .await;
        let rtb = tag(&out, "routeTableId");
        let out = w
            .root_ec2(
                "AssociateRouteTable",
                &[("RouteTableId", &rtb), ("SubnetId", &subnet)],
            )
            .await;
        w.ids.rtb_assoc = tag(&out, "associationId");
        w.root_ec2(
            "CreateRoute",
            &[
                ("RouteTableId", &rtb),
                ("DestinationCidrBlock", "0.0.0.0/0"),
                ("GatewayId", &igw),
            ],
        )
        .await;
        let eip = tag(&w.root_ec2("AllocateAddress", &[]).await, "allocationId");
        let eip2 = tag(&w.root_ec2("AllocateAddress", &[]).await, "allocationId");
        let out = w
            .root_ec2(
                "CreateNatGateway",
                &[("SubnetId", &subnet), ("AllocationId", &eip)],
            )
            .await;
        w.ids.nat = tag(&out, "natGatewayId");
        let eni = w
            .ec2
            .create_task_eni(ACCOUNT, REGION, &subnet, &[], "task")
            .await
            .unwrap()
            .id;
        let out = w
            .root_ec2(
                "AssociateAddress",
                &[("AllocationId", &eip2), ("NetworkInterfaceId", &eni)],
            )
            .await;
        w.ids.eip_assoc = tag(&out, "associationId");
        w.ids = Ids {
            vpc,
            subnet,
            sg,
            igw,
            rtb,
            eip,
            eip2,
            eni,
            ..std::mem::take(&mut w.ids)
        };
        w
    }

    async fn root_ec2(&self, action: &str, p: &[(&str, &str)]) -> String {
        self.ec2
            .handle(&self.root, action, &params(p))
            .await
            .unwrap_or_else(|e| panic!("{action}: {} {}", e.code, e.message))
    }

    async fn root_iam(&self, action: &str, p: &[(&str, &str)]) -> String {
        self.iam_svc
            .handle(&self.root, action, &params(p))
            .await
            .unwrap_or_else(|e| panic!("{action}: {} {}", e.code, e.message))
    }

    /// A new user holding `policy` (none when empty); its principal.
    async fn user(&self, policy: &str) -> Principal {
        let n = self.users.get() + 1;
        self.users.set(n);
        let name = format!("caller{n}");
        self.root_iam("CreateUser", &[("UserName", &name)]).await;
        if !policy.is_empty() {
            self.root_iam(
                "PutUserPolicy",
                &[
                    ("UserName", &name),
                    ("PolicyName", "case"),
                    ("PolicyDocument", policy),
                ],
            )
            .await;
        }
        let out = self
            .root_iam("CreateAccessKey", &[("UserName", &name)])
            .await;
        self.iam
            .credentials()
            .resolve(&tag(&out, "AccessKeyId"))
            .expect("the new key resolves")
            .principal
    }

    async fn call(
        &self,
        principal: &Principal,
        action: &str,
        p: &[(String, String)],
    ) -> Result<String, AwsError> {
        let ctx = RequestContext::for_principal(principal.clone(), REGION).with_access(
            Access::new(Some(self.authorizer.clone()), DenialStyle::Ec2, false),
        );
        let result = self.ec2.handle(&ctx, action, p).await;
        if result.is_ok() {
            assert!(
                ctx.access.checked(),
                "{action} answered without authorizing"
            );
        }
        result
    }

    /// Input good enough for `action` to get past validation to IAM.
    fn plausible(&self, action: &str) -> Vec<(String, String)> {
        let i = &self.ids;
        let p: Vec<(&str, &str)> = match action {
            "CreateVpc" => vec![("CidrBlock", "10.9.0.0/16")],
            "DeleteVpc" | "DescribeVpcAttribute" | "ModifyVpcAttribute" => vec![
                ("VpcId", &i.vpc),
                ("Attribute", "enableDnsSupport"),
                ("EnableDnsSupport.Value", "true"),
            ],
            "AssociateVpcCidrBlock" => vec![("VpcId", &i.vpc), ("CidrBlock", "10.2.0.0/16")],
            "DisassociateVpcCidrBlock" => vec![("AssociationId", &i.vpc_assoc)],
            "CreateSubnet" => vec![("VpcId", &i.vpc), ("CidrBlock", "10.0.9.0/24")],
            "DeleteSubnet" => vec![("SubnetId", &i.subnet)],
            "ModifySubnetAttribute" => vec![
                ("SubnetId", &i.subnet),
                ("MapPublicIpOnLaunch.Value", "true"),
            ],
            "AssociateSubnetCidrBlock" => {
                vec![("SubnetId", &i.subnet), ("Ipv6CidrBlock", "2600:1f18::/64")]
            }
            "DisassociateSubnetCidrBlock" => {
                vec![("AssociationId", "subnet-cidr-assoc-0123456789abcdef0")]
            }
            "CreateSecurityGroup" => vec![
                ("VpcId", &i.vpc),
                ("GroupName", "new"),
                ("GroupDescription", "d"),
            ],
            "DeleteSecurityGroup" => vec![("GroupId", &i.sg)],
            "AuthorizeSecurityGroupIngress"
            | "AuthorizeSecurityGroupEgress"
            | "RevokeSecurityGroupIngress"
            | "RevokeSecurityGroupEgress"
            | "UpdateSecurityGroupRuleDescriptionsIngress"
            | "UpdateSecurityGroupRuleDescriptionsEgress" => vec![
                ("GroupId", &i.sg),
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "80"),
                ("IpPermissions.1.ToPort", "80"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
            ],
            "ModifySecurityGroupRules" => vec![
                ("GroupId", &i.sg),
                ("SecurityGroupRule.1.SecurityGroupRuleId", &i.rule),
                ("SecurityGroupRule.1.SecurityGroupRule.IpProtocol", "tcp"),
                ("SecurityGroupRule.1.SecurityGroupRule.FromPort", "81"),
                ("SecurityGroupRule.1.SecurityGroupRule.ToPort", "81"),
                (
                    "SecurityGroupRule.1.SecurityGroupRule.CidrIpv4",
                    "0.0.0.0/0",
                ),
            ],
            "CreateTags" => vec![
                ("ResourceId.1", &i.vpc),
                ("Tag.1.Key", "a"),
                ("Tag.1.Value", "b"),
            ],
            "DeleteTags" => vec![("ResourceId.1", &i.vpc), ("Tag.1.Key", "team")],
            "AttachInternetGateway" | "DetachInternetGateway" | "DeleteInternetGateway" => {
                vec![("InternetGatewayId", &i.igw), ("VpcId", &i.vpc)]
            }
            "CreateRouteTable" => vec![("VpcId", &i.vpc)],
            "DeleteRouteTable" => vec![("RouteTableId", &i.rtb)],
            "AssociateRouteTable" => vec![("RouteTableId", &i.rtb), ("SubnetId", &i.subnet)],
            "DisassociateRouteTable" => vec![("AssociationId", &i.rtb_assoc)],
            "ReplaceRouteTableAssociation" => {
                vec![("AssociationId", &i.rtb_assoc), ("RouteTableId", &i.rtb)]
            }
            "CreateRoute" | "ReplaceRoute" | "DeleteRoute" => vec![
                ("RouteTableId", &i.rtb),
                ("DestinationCidrBlock", "1.0.0.0/8"),
                ("GatewayId", &i.igw),
            ],
            "CreateNatGateway" => vec![("SubnetId", &i.subnet), ("AllocationId", &i.eip)],
            "DeleteNatGateway" => vec![("NatGatewayId", &i.nat)],
            "ReleaseAddress" => vec![("AllocationId", &i.eip)],
            "AssociateAddress" => vec![("AllocationId", &i.eip2), ("NetworkInterfaceId", &i.eni)],
            "DisassociateAddress" => vec![("AssociationId", &i.eip_assoc)],
            // Describe*, AllocateAddress, CreateInternetGateway, and the
            // actions Berth does not implement.
            _ => vec![],
        };
        params(&p)
    }
}

fn doc(statements: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
}

fn allow(action: &str, resource: &str) -> String {
    format!(r#"{{"Effect":"Allow","Action":"{action}","Resource":"{resource}"}}"#)
}

fn deny(action: &str, resource: &str) -> String {
    format!(r#"{{"Effect":"Deny","Action":"{action}","Resource":"{resource}"}}"#)
}

fn allow_if(action: &str, resource: &str, condition: &str) -> String {
    format!(
        r#"{{"Effect":"Allow","Action":"{action}","Resource":"{resource}","Condition":{condition}}}"#
    )
}

/// Every action of the EC2 model, made with plausible input by a user
/// without policies: the implemented ones are refused by IAM (naming the
/// action and a resource), the others answer UnsupportedOperation with the
/// reason Berth lists for them.
#[tokio::test]
async fn every_ec2_action_refuses_a_user_without_policies() {
    let w = World::new().await;
    let nobody = w.user("").await;
    let mut refused = BTreeSet::new();
    let mut odd = Vec::new();
    for action in EC2_OPERATIONS.lines().filter(|l| !l.is_empty()) {
        let p = w.plausible(action);
        match w.call(&nobody, action, &p).await {
            Err(e) if e.code == "UnauthorizedOperation" => {
                assert_eq!(e.status, 403);
                assert!(
                    e.message
                        .starts_with("You are not authorized to perform this operation. User: ")
                        && e.message
                            .contains(&format!("perform: ec2:{action} on resource:")),
                    "{action}: {}",
                    e.message
                );
                refused.insert(action.to_string());
            }
            Err(e) if e.code == "UnsupportedOperation" => {
                let reason = berth_ec2::NOT_IMPLEMENTED
                    .iter()
                    .find(|(op, _)| *op == action)
                    .map(|(_, r)| *r);
                match reason {
                    Some(r) if e.message.contains(r) => {}
                    _ => odd.push(format!(
                        "{action}: unlisted UnsupportedOperation: {}",
                        e.message
                    )),
                }
            }
            other => odd.push(format!("{action}: {other:?}")),
        }
    }
    assert!(odd.is_empty(), "{}", odd.join("\n"));
    let implemented: BTreeSet<String> = berth_ec2::IMPLEMENTED
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refused, implemented);
    let total = EC2_OPERATIONS.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(implemented.len() + berth_ec2::NOT_IMPLEMENTED.len(), total);
}

/// A policy case: its name, the caller's policy, the action, the request's
/// parameters, the expected outcome.
type Case = (
    &'static str,
    String,
    &'static str,
    Vec<(String, String)>,
    Outcome,
);

/// How a call came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Allow,
    Deny,
    NoMatch,
}

use Outcome::{Allow, Deny, NoMatch};

/// A refusal names the action called, or `ec2:CreateTags` for the tags a
/// create asks for.
fn outcome(result: &Result<String, AwsError>, action: &str) -> Outcome {
    match result {
        Err(e) if e.code == "UnauthorizedOperation" => {
            assert!(
                e.message
                    .contains(&format!("perform: ec2:{action} on resource:"))
                    || e.message.contains("perform: ec2:CreateTags on resource:"),
                "{}",
                e.message
            );
            if e.message.contains("explicit deny") {
                Deny
            } else {
                NoMatch
            }
        }
        _ => Allow,
    }
}

#[tokio::test]
async fn ec2_resource_policies() {
    let w = World::new().await;
    let i = &w.ids;
    let vpc_arn = arn(&format!("vpc/{}", i.vpc));
    let blue_vpcs = doc(&allow_if(
        "ec2:*",
        "*",
        r#"{"StringEquals":{"aws:ResourceTag/team":"blue"}}"#,
    ));
    let in_vpc = doc(&allow_if(
        "ec2:*",
        "*",
        &format!(r#"{{"ArnEquals":{{"ec2:Vpc":"{vpc_arn}"}}}}"#),
    ));
    let deny_igw = doc(&format!(
        "{},{}",
        allow("ec2:*", "*"),
        deny("ec2:*", &arn(&format!("internet-gateway/{}", i.igw)))
    ));
    let deny_eip = doc(&format!(
        "{},{}",
        allow("ec2:*", "*"),
        deny("ec2:ReleaseAddress", &arn(&format!("elastic-ip/{}", i.eip)))
    ));
    let create_tagged_only = doc(&format!(
        "{},{}",
        allow_if(
            "ec2:CreateInternetGateway",
            "*",
            r#"{"StringEquals":{"aws:RequestTag/team":"blue"}}"#
        ),
        allow_if(
            "ec2:CreateTags",
            "*",
            r#"{"StringEquals":{"ec2:CreateAction":"CreateInternetGateway"}}"#
        )
    ));
    let create_no_tags = doc(&allow("ec2:CreateInternetGateway", "*"));
    let tagged_igw = |team: &str| {
        vec![
            (
                "TagSpecification.1.ResourceType".to_string(),
                "internet-gateway".to_string(),
            ),
            ("TagSpecification.1.Tag.1.Key".into(), "team".into()),
            ("TagSpecification.1.Tag.1.Value".into(), team.into()),
        ]
    };
    let p = |pairs: &[(&str, &str)]| params(pairs);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // aws:ResourceTag from the stored tags.
        ("blue vpc attribute", blue_vpcs.clone(), "ModifyVpcAttribute",
            p(&[("VpcId", &i.vpc), ("EnableDnsHostnames.Value", "true")]), Allow),
        ("blue: red route table", blue_vpcs.clone(), "CreateRoute",
            p(&[("RouteTableId", &i.rtb), ("DestinationCidrBlock", "2.0.0.0/8"), ("GatewayId", &i.igw)]), NoMatch),
        ("blue: tag the vpc", blue_vpcs.clone(), "CreateTags",
            p(&[("ResourceId.1", &i.vpc), ("Tag.1.Key", "x"), ("Tag.1.Value", "y")]), Allow),
        ("blue: tag vpc and table", blue_vpcs.clone(), "CreateTags",
            p(&[("ResourceId.1", &i.vpc), ("ResourceId.2", &i.rtb), ("Tag.1.Key", "x")]), NoMatch),
        // ec2:Vpc on subnets, route tables, interfaces.
        ("vpc: subnet attribute", in_vpc.clone(), "ModifySubnetAttribute",
            p(&[("SubnetId", &i.subnet), ("MapPublicIpOnLaunch.Value", "true")]), Allow),
        ("vpc: route in its table", in_vpc.clone(), "CreateRoute",
            p(&[("RouteTableId", &i.rtb), ("DestinationCidrBlock", "3.0.0.0/8"), ("GatewayId", &i.igw)]), Allow),
        ("vpc: the vpc itself", in_vpc.clone(), "DescribeVpcAttribute",
            p(&[("VpcId", &i.vpc), ("Attribute", "enableDnsSupport")]), NoMatch),
        // A Deny on one gateway's ARN.
        ("deny igw: detach", deny_igw.clone(), "DetachInternetGateway",
            p(&[("InternetGatewayId", &i.igw), ("VpcId", &i.vpc)]), Deny),
        ("deny igw: route to it is on the table", deny_igw.clone(), "DescribeInternetGateways", vec![], Allow),
        ("deny igw: association to it", deny_igw.clone(), "AssociateRouteTable",
            p(&[("RouteTableId", &i.rtb), ("GatewayId", &i.igw)]), Deny),
        // Elastic IPs by allocation id or public address.
        ("deny eip by id", deny_eip.clone(), "ReleaseAddress", p(&[("AllocationId", &i.eip)]), Deny),
        ("deny eip by address", deny_eip.clone(), "ReleaseAddress", p(&[("PublicIp", "198.51.100.1")]), Deny),
        ("deny eip, other one", deny_eip.clone(), "ReleaseAddress", p(&[("AllocationId", &i.eip2)]), Allow),
        // Tags on create need ec2:CreateTags with ec2:CreateAction.
        ("create tagged blue", create_tagged_only.clone(), "CreateInternetGateway", tagged_igw("blue"), Allow),
        ("create tagged red", create_tagged_only.clone(), "CreateInternetGateway", tagged_igw("red"), NoMatch),
        ("create untagged", create_no_tags.clone(), "CreateInternetGateway", vec![], Allow),
        ("create tagged, no CreateTags", create_no_tags, "CreateInternetGateway", tagged_igw("blue"), NoMatch),
    ];
    let mut failures = Vec::new();
    for (name, policy, action, p, expected) in cases {
        let user = w.user(&policy).await;
        let result = w.call(&user, action, &p).await;
        let got = outcome(&result, action);
        if got != expected {
            failures.push(format!("{name}: {action} gave {result:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
