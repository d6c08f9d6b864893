//! Policy simulation through the real IAM, STS and EC2 handlers and the real
//! `IamAuthorizer`: for each case a user holds one policy and makes one call
//! naming its resource the way a client would (a name, a path, an ARN, a
//! group name), and the call is allowed, refused by an explicit Deny, or
//! refused for want of an Allow — as AWS decides it on the resource's
//! canonical ARN. Then every IAM, STS and EC2 operation of the AWS models is
//! made by a user with no policy: none may succeed but GetCallerIdentity.

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
const IAM_OPERATIONS: &str = include_str!("data/iam_operations.txt");
const STS_OPERATIONS: &str = include_str!("data/sts_operations.txt");

const TRUST_ACCOUNT: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
const ALLOW_LOGS: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#;
const SSM_READ: &str = "arn:aws:iam::aws:policy/AmazonSSMReadOnlyAccess";
const ADMIN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";

/// A simulation case: its name, the caller's policy, the action, the
/// request's parameters, the expected outcome.
type Case = (
    &'static str,
    String,
    &'static str,
    Vec<(&'static str, String)>,
    Outcome,
);

/// How a call came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Allow,
    /// Refused by an explicit Deny.
    Deny,
    /// Refused: no statement allows it.
    NoMatch,
}

use Outcome::{Allow, Deny, NoMatch};

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

/// Classifies a result; `refusal` is the error code refusals carry.
fn outcome(result: &Result<String, AwsError>, refusal: &str, action: &str) -> Outcome {
    match result {
        Ok(_) => Allow,
        Err(e) if e.code == refusal => {
            assert!(
                e.message
                    .contains(&format!("perform: {action} on resource:")),
                "{action}: {}",
                e.message
            );
            if e.message.contains("with an explicit deny") {
                Deny
            } else {
                assert!(
                    e.message
                        .contains("because no identity-based policy allows"),
                    "{}",
                    e.message
                );
                NoMatch
            }
        }
        // Any other error got past authorization (e.g. a name not found).
        Err(_) => Allow,
    }
}

struct World {
    iam: Arc<Iam>,
    iam_svc: Arc<berth_iam::IamService>,
    sts: Arc<berth_iam::StsService>,
    ec2: Arc<Ec2Service>,
    authorizer: Arc<IamAuthorizer>,
    root: RequestContext,
    users: std::cell::Cell<u32>,
    /// The resources the cases name.
    bob_key: String,
    v2: String,
    s2: String,
    web: String,
    db: String,
    default_vpc: String,
}

impl World {
    async fn new() -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let iam = Iam::new(store.clone());
        let ec2 = Arc::new(Ec2Service::new(store.clone()));
        ec2.ensure_defaults(ACCOUNT, REGION).await.unwrap();
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
            sts: iam.sts_service(),
            authorizer: Arc::new(IamAuthorizer::new(iam.clone())),
            iam,
            ec2,
            root,
            users: std::cell::Cell::new(0),
            bob_key: String::new(),
            v2: String::new(),
            s2: String::new(),
            web: String::new(),
            db: String::new(),
            default_vpc: String::new(),
        };
        // IAM: bob under /division/, carol at /, roles app (/service/,
        // team=blue) and red (team=red), a managed policy under /team/.
        w.root_iam("CreateUser", &[("UserName", "bob"), ("Path", "/division/")])
            .await;
        w.root_iam("CreateUser", &[("UserName", "carol")]).await;
        let key = w.root_iam("CreateAccessKey", &[("UserName", "bob")]).await;
        w.bob_key = tag(&key, "AccessKeyId");
        for (name, path, team) in [("app", "/service/", "blue"), ("red", "/", "red")] {
            w.root_iam(
                "CreateRole",
                &[
                    ("RoleName", name),
                    ("Path", path),
                    ("AssumeRolePolicyDocument", TRUST_ACCOUNT),
                    ("Tags.member.1.Key", "team"),
                    ("Tags.member.1.Value", team),
                ],
            )
            .await;
        }
        w.root_iam(
            "CreatePolicy",
            &[
                ("PolicyName", "Pol"),
                ("Path", "/team/"),
                ("PolicyDocument", ALLOW_LOGS),
            ],
        )
        .await;
        // EC2: a second VPC with a subnet and a group; a group in the default VPC.
        let out = w
            .root_ec2("CreateVpc", &[("CidrBlock", "10.0.0.0/16")])
            .await;
        w.v2 = tag(&out, "vpcId");
        let out = w
            .root_ec2(
                "CreateSubnet",
                &[("VpcId", &w.v2.clone()), ("CidrBlock", "10.0.1.0/24")],
            )
            .await;
        w.s2 = tag(&out, "subnetId");
        let out = w
            .root_ec2(
                "CreateSecurityGroup",
                &[("GroupName", "web"), ("GroupDescription", "web")],
            )
            .await;
        w.web = tag(&out, "groupId");
        let out = w
            .root_ec2(
                "CreateSecurityGroup",
                &[
                    ("GroupName", "db"),
                    ("GroupDescription", "db"),
                    ("VpcId", &w.v2.clone()),
                ],
            )
            .await;
        w.db = tag(&out, "groupId");
        let out = w
            .root_ec2(
                "DescribeVpcs",
                &[
                    ("Filter.1.Name", "is-default"),
                    ("Filter.1.Value.1", "true"),
                ],
            )
            .await;
        w.default_vpc = tag(&out, "vpcId");
        w
    }

    async fn root_iam(&self, action: &str, p: &[(&str, &str)]) -> String {
        self.iam_svc
            .handle(&self.root, action, &params(p))
            .await
            .unwrap_or_else(|e| panic!("{action}: {} {}", e.code, e.message))
    }

    async fn root_ec2(&self, action: &str, p: &[(&str, &str)]) -> String {
        self.ec2
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

    /// A fresh request context for `principal`, IAM enforced.
    fn ctx(&self, principal: &Principal, style: DenialStyle) -> RequestContext {
        RequestContext::for_principal(principal.clone(), REGION).with_access(Access::new(
            Some(self.authorizer.clone()),
            style,
            false,
        ))
    }

    /// Runs `action` as `principal` and checks that a handler that answered
    /// asked for authorization.
    async fn call(
        &self,
        service: &dyn QueryService,
        style: DenialStyle,
        principal: &Principal,
        action: &str,
        p: &[(String, String)],
    ) -> Result<String, AwsError> {
        let ctx = self.ctx(principal, style);
        let result = service.handle(&ctx, action, p).await;
        if result.is_ok() {
            assert!(
                ctx.access.checked(),
                "{action} answered without authorizing"
            );
        }
        result
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

#[tokio::test]
async fn iam_and_sts_policy_simulation() {
    let w = World::new().await;
    let a = |r: &str| format!("arn:aws:iam::{ACCOUNT}:{r}");
    let pol = a("policy/team/Pol");
    let deny_division = doc(&format!(
        "{},{}",
        allow("iam:*", "*"),
        deny("iam:*", &a("user/division/*"))
    ));
    let attach_ssm_only = doc(&allow_if(
        "iam:AttachUserPolicy",
        &a("user/carol"),
        &format!(r#"{{"ArnEquals":{{"iam:PolicyARN":"{SSM_READ}"}}}}"#),
    ));
    let blue_roles = doc(&allow_if(
        "iam:GetRole",
        "*",
        r#"{"StringEquals":{"aws:ResourceTag/team":"blue"}}"#,
    ));
    let blue_creates = doc(&allow_if(
        "iam:CreateRole",
        "*",
        r#"{"StringEquals":{"aws:RequestTag/team":"blue"}}"#,
    ));
    let create_role = |name: &'static str, team: &'static str| {
        vec![
            ("RoleName", name.to_string()),
            ("AssumeRolePolicyDocument", TRUST_ACCOUNT.to_string()),
            ("Tags.member.1.Key", "team".to_string()),
            ("Tags.member.1.Value", team.to_string()),
        ]
    };
    let own = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // A Deny on a path is not bypassed by naming the user (in any case).
        ("deny path, by name", deny_division.clone(), "GetUser", own(&[("UserName", "bob")]), Deny),
        ("deny path, other case", deny_division.clone(), "GetUser", own(&[("UserName", "BOB")]), Deny),
        ("deny path, access key", deny_division.clone(), "CreateAccessKey", own(&[("UserName", "bob")]), Deny),
        ("deny path, key by id", deny_division.clone(), "UpdateAccessKey",
            own(&[("UserName", "bob"), ("AccessKeyId", &w.bob_key), ("Status", "Active")]), Deny),
        ("deny path, attach", deny_division.clone(), "AttachUserPolicy",
            own(&[("UserName", "bob"), ("PolicyArn", ADMIN)]), Deny),
        ("deny path, list the path", deny_division.clone(), "ListUsers", own(&[("PathPrefix", "/division/")]), Deny),
        ("deny path, other user", deny_division.clone(), "GetUser", own(&[("UserName", "carol")]), Allow),
        ("deny path, list all", deny_division.clone(), "ListUsers", own(&[]), Allow),
        // An Allow names the canonical ARN: with the path, not without.
        ("allow path ARN", doc(&allow("iam:GetUser", &a("user/division/bob"))), "GetUser",
            own(&[("UserName", "bob")]), Allow),
        ("allow pathless ARN", doc(&allow("iam:GetUser", &a("user/bob"))), "GetUser",
            own(&[("UserName", "bob")]), NoMatch),
        ("allow path list", doc(&allow("iam:ListUsers", &a("user/division/*"))), "ListUsers",
            own(&[("PathPrefix", "/division/")]), Allow),
        ("allow path list, list all", doc(&allow("iam:ListUsers", &a("user/division/*"))), "ListUsers",
            own(&[]), NoMatch),
        ("other action", doc(&allow("iam:GetUser", "*")), "DeleteUser", own(&[("UserName", "carol")]), NoMatch),
        // Attachments: on the principal, with iam:PolicyARN.
        ("attach allowed policy", attach_ssm_only.clone(), "AttachUserPolicy",
            own(&[("UserName", "carol"), ("PolicyArn", SSM_READ)]), Allow),
        ("attach other policy", attach_ssm_only.clone(), "AttachUserPolicy",
            own(&[("UserName", "carol"), ("PolicyArn", ADMIN)]), NoMatch),
        ("attach other user", attach_ssm_only, "AttachUserPolicy",
            own(&[("UserName", "bob"), ("PolicyArn", SSM_READ)]), NoMatch),
        // Tags.
        ("resource tag blue", blue_roles.clone(), "GetRole", own(&[("RoleName", "app")]), Allow),
        ("resource tag red", blue_roles, "GetRole", own(&[("RoleName", "red")]), NoMatch),
        ("request tag blue", blue_creates.clone(), "CreateRole", create_role("blue1", "blue"), Allow),
        ("request tag red", blue_creates, "CreateRole", create_role("red1", "red"), NoMatch),
        // Roles by name carry their path; policies by ARN.
        ("deny role path", doc(&format!("{},{}", allow("*", "*"), deny("iam:*", &a("role/service/*")))),
            "PutRolePolicy", own(&[("RoleName", "app"), ("PolicyName", "x"), ("PolicyDocument", ALLOW_LOGS)]), Deny),
        ("allow policy path", doc(&allow("iam:GetPolicy", &a("policy/team/*"))), "GetPolicy",
            own(&[("PolicyArn", &pol)]), Allow),
        ("deny policy", doc(&format!("{},{}", allow("iam:*", "*"), deny("iam:DeletePolicy", &pol))),
            "DeletePolicy", own(&[("PolicyArn", &pol)]), Deny),
        ("list policies", doc(&allow("iam:ListPolicies", "*")), "ListPolicies", own(&[]), Allow),
    ];
    assert!(cases.len() >= 10);
    for (name, policy, action, p, expected) in cases {
        let user = w.user(&policy).await;
        let p: Vec<(String, String)> = p.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let result = w
            .call(w.iam_svc.as_ref(), DenialStyle::Query, &user, action, &p)
            .await;
        let got = outcome(&result, "AccessDenied", &format!("iam:{action}"));
        assert_eq!(got, expected, "{name}: {action} gave {result:?}");
    }

    // STS: AssumeRole is decided by STS on the role's canonical ARN and tags.
    let app = a("role/service/app");
    let red = a("role/red");
    let assume = |arn: &str| params(&[("RoleArn", arn), ("RoleSessionName", "case")]);
    #[rustfmt::skip]
    let sts_cases: Vec<(&str, String, String, bool)> = vec![
        ("allow role path", doc(&allow("sts:AssumeRole", &a("role/service/*"))), app.clone(), true),
        ("allow pathless ARN", doc(&allow("sts:AssumeRole", &a("role/app"))), app.clone(), false),
        ("deny role", doc(&format!("{},{}", allow("sts:*", "*"), deny("sts:AssumeRole", &app))), app.clone(), false),
        ("resource tag", doc(&allow_if("sts:AssumeRole", "*", r#"{"StringEquals":{"aws:ResourceTag/team":"blue"}}"#)),
            app.clone(), true),
        ("resource tag, red", doc(&allow_if("sts:AssumeRole", "*", r#"{"StringEquals":{"aws:ResourceTag/team":"blue"}}"#)),
            red.clone(), false),
        ("no policy", String::new(), app.clone(), false),
    ];
    for (name, policy, role, ok) in sts_cases {
        let user = w.user(&policy).await;
        let result = w
            .call(
                w.sts.as_ref(),
                DenialStyle::Query,
                &user,
                "AssumeRole",
                &assume(&role),
            )
            .await;
        assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
        if let Err(e) = result {
            assert_eq!(e.code, "AccessDenied", "{name}");
        }
    }
}

#[tokio::test]
async fn ec2_policy_simulation() {
    let w = World::new().await;
    let a = |r: &str| format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{r}");
    let deny_web = doc(&format!(
        "{},{}",
        allow("ec2:*", "*"),
        deny(
            "ec2:DeleteSecurityGroup",
            &a(&format!("security-group/{}", w.web))
        )
    ));
    let v2_groups_only = doc(&allow_if(
        "ec2:AuthorizeSecurityGroupIngress",
        &a("security-group/*"),
        &format!(
            r#"{{"ArnEquals":{{"ec2:Vpc":"{}"}}}}"#,
            a(&format!("vpc/{}", w.v2))
        ),
    ));
    let ingress = |group: (&'static str, String)| {
        vec![
            group,
            ("IpPermissions.1.IpProtocol", "tcp".to_string()),
            ("IpPermissions.1.FromPort", "443".to_string()),
            ("IpPermissions.1.ToPort", "443".to_string()),
            (
                "IpPermissions.1.IpRanges.1.CidrIp",
                "10.9.0.0/16".to_string(),
            ),
        ]
    };
    // Tags on create also need ec2:CreateTags (with ec2:CreateAction).
    let blue_vpcs = doc(&allow_if(
        "ec2:Create*",
        "*",
        r#"{"StringEquals":{"aws:RequestTag/team":"blue"}}"#,
    ));
    let create_vpc = |cidr: &str, team: &str| {
        vec![
            ("CidrBlock", cidr.to_string()),
            ("TagSpecification.1.ResourceType", "vpc".to_string()),
            ("TagSpecification.1.Tag.1.Key", "team".to_string()),
            ("TagSpecification.1.Tag.1.Value", team.to_string()),
        ]
    };
    let subnet_in_v2 = vec![
        ("VpcId", w.v2.clone()),
        ("CidrBlock", "10.0.2.0/24".to_string()),
    ];
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("describe on *", doc(&allow("ec2:Describe*", "*")), "DescribeVpcs", vec![], Allow),
        ("describe on a VPC ARN", doc(&allow("ec2:DescribeVpcs", &a("vpc/*"))), "DescribeVpcs", vec![], NoMatch),
        ("describe, other service", doc(&allow("ecs:*", "*")), "DescribeSecurityGroups", vec![], NoMatch),
        // A Deny on a group's id is not bypassed by naming the group.
        ("deny group, by name", deny_web.clone(), "DeleteSecurityGroup", vec![("GroupName", "web".into())], Deny),
        ("deny group, by id", deny_web.clone(), "DeleteSecurityGroup", vec![("GroupId", w.web.clone())], Deny),
        ("deny group, other group", deny_web.clone(), "DeleteSecurityGroup", vec![("GroupId", "sg-0000000000000000f".into())], Allow),
        // ec2:Vpc.
        ("vpc condition, in v2", v2_groups_only.clone(), "AuthorizeSecurityGroupIngress",
            ingress(("GroupId", w.db.clone())), Allow),
        ("vpc condition, default vpc by name", v2_groups_only.clone(), "AuthorizeSecurityGroupIngress",
            ingress(("GroupName", "web".into())), NoMatch),
        ("deny subnets of v2", doc(&format!(r#"{},{{"Effect":"Deny","Action":"ec2:DeleteSubnet","Resource":"*","Condition":{{"ArnEquals":{{"ec2:Vpc":"{}"}}}}}}"#,
            allow("ec2:*", "*"), a(&format!("vpc/{}", w.v2)))), "DeleteSubnet", vec![("SubnetId", w.s2.clone())], Deny),
        // Creates: on <type>/* and the VPC they go into.
        ("create subnet, both", doc(&format!("{},{}", allow("ec2:CreateSubnet", &a("subnet/*")),
            allow("ec2:CreateSubnet", &a(&format!("vpc/{}", w.v2))))), "CreateSubnet", subnet_in_v2.clone(), Allow),
        ("create subnet, no vpc", doc(&allow("ec2:CreateSubnet", &a("subnet/*"))), "CreateSubnet", subnet_in_v2, NoMatch),
        ("group into the default vpc", doc(&format!("{},{}", allow("ec2:*", "*"),
            deny("ec2:CreateSecurityGroup", &a(&format!("vpc/{}", w.default_vpc))))),
            "CreateSecurityGroup", vec![("GroupName", "g1".into()), ("GroupDescription", "d".into())], Deny),
        ("request tag blue", blue_vpcs.clone(), "CreateVpc", create_vpc("10.1.0.0/16", "blue"), Allow),
        ("request tag red", blue_vpcs, "CreateVpc", create_vpc("10.2.0.0/16", "red"), NoMatch),
        ("delete vpc by id", doc(&allow("ec2:DeleteVpc", &a("vpc/vpc-*"))), "DeleteVpc",
            vec![("VpcId", "vpc-0000000000000000f".into())], Allow),
    ];
    assert!(cases.len() >= 10);
    for (name, policy, action, p, expected) in cases {
        let user = w.user(&policy).await;
        let p: Vec<(String, String)> = p.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let result = w
            .call(w.ec2.as_ref(), DenialStyle::Ec2, &user, action, &p)
            .await;
        if let Err(e) = &result {
            if e.code == "UnauthorizedOperation" {
                assert_eq!(e.status, 403);
                assert!(e
                    .message
                    .starts_with("You are not authorized to perform this operation."));
            }
        }
        let got = outcome(&result, "UnauthorizedOperation", &format!("ec2:{action}"));
        assert_eq!(got, expected, "{name}: {action} gave {result:?}");
    }

    // A dry run answers whether the call would be allowed.
    let user = w.user(&doc(&allow("ec2:DescribeVpcs", "*"))).await;
    let dry = params(&[("DryRun", "true")]);
    let e = w
        .call(
            w.ec2.as_ref(),
            DenialStyle::Ec2,
            &user,
            "DescribeVpcs",
            &dry,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "DryRunOperation");
    let e = w
        .call(
            w.ec2.as_ref(),
            DenialStyle::Ec2,
            &user,
            "DescribeSubnets",
            &dry,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "UnauthorizedOperation");
}

/// Every operation of the IAM, STS and EC2 models, made with valid input by
/// a user without policies: each is refused (or not implemented), except
/// GetCallerIdentity.
#[tokio::test]
async fn a_user_without_policies_can_do_nothing() {
    let w = World::new().await;
    let nobody = w.user("").await;
    let pol = format!("arn:aws:iam::{ACCOUNT}:policy/team/Pol");
    let iam_params = params(&[
        ("UserName", "bob"),
        ("RoleName", "app"),
        ("PolicyArn", &pol),
        ("PolicyName", "inline1"),
        ("PolicyDocument", ALLOW_LOGS),
        ("AssumeRolePolicyDocument", TRUST_ACCOUNT),
        ("AccessKeyId", &w.bob_key),
        ("Status", "Inactive"),
        ("VersionId", "v1"),
        ("AWSServiceName", "ecs.amazonaws.com"),
        ("GroupName", "devs"),
        ("InstanceProfileName", "web"),
        ("ClientID", "sts.amazonaws.com"),
        ("OldPassword", "Old-passw0rd!"),
        ("NewPassword", "New-passw0rd!"),
        ("Password", "New-passw0rd!"),
        ("Url", "https://oidc.example.com"),
        (
            "OpenIDConnectProviderArn",
            &format!("arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.example.com"),
        ),
        ("ServerCertificateName", "site"),
        ("CertificateBody", include_str!("data/site-cert.pem")),
        ("PrivateKey", include_str!("data/site-key.pem")),
        ("PolicyInputList.member.1", ALLOW_LOGS),
        ("PolicySourceArn", &pol),
        ("ActionNames.member.1", "logs:PutLogEvents"),
        ("Tags.member.1.Key", "team"),
        ("Tags.member.1.Value", "a"),
        ("TagKeys.member.1", "team"),
        (
            "ThumbprintList.member.1",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("Description", "d"),
    ]);
    let mut refused = BTreeSet::new();
    let mut odd = Vec::new();
    // UpdateAssumeRolePolicy's PolicyDocument is a trust policy.
    let mut trust_params = iam_params.clone();
    trust_params.retain(|(k, _)| k != "PolicyDocument");
    trust_params.push(("PolicyDocument".into(), TRUST_ACCOUNT.into()));
    for action in IAM_OPERATIONS.lines().filter(|l| !l.is_empty()) {
        let iam_params = if action == "UpdateAssumeRolePolicy" {
            &trust_params
        } else {
            &iam_params
        };
        let result = w
            .call(
                w.iam_svc.as_ref(),
                DenialStyle::Query,
                &nobody,
                action,
                iam_params,
            )
            .await;
        match result {
            Err(e) if e.code == "AccessDenied" => {
                // Account-wide operations name "*"; the others the
                // resource's ARN.
                let resource = format!("arn:aws:iam::{ACCOUNT}:");
                assert!(
                    e.message
                        .contains(&format!("perform: iam:{action} on resource: {resource}"))
                        || e.message
                            .contains(&format!("perform: iam:{action} on resource: *")),
                    "{action}: {}",
                    e.message
                );
                refused.insert(action.to_string());
            }
            Err(e) if e.code == "NotImplemented" => {}
            other => odd.push(format!("{action}: {other:?}")),
        }
    }
    assert!(
        odd.is_empty(),
        "answered a user without policies:\n{}",
        odd.join("\n")
    );
    // Every IAM operation of AWS's model that Berth performs is refused
    // without a policy; the rest answer NotImplemented.
    let implemented: BTreeSet<String> = IAM_OPERATIONS
        .lines()
        .filter(|l| !l.is_empty())
        .filter(|op| {
            !berth_iam::NOT_IMPLEMENTED
                .iter()
                .any(|(name, _)| name.strip_prefix("iam:") == Some(*op))
        })
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refused, implemented);

    // STS: only GetCallerIdentity answers.
    let role = format!("arn:aws:iam::{ACCOUNT}:role/service/app");
    let sts_params = params(&[
        ("RoleArn", &role),
        ("RoleSessionName", "s1"),
        ("WebIdentityToken", "not-a-token"),
        ("EncodedMessage", "not-a-message"),
        ("AccessKeyId", &w.bob_key),
        ("Name", "fed"),
    ]);
    for action in STS_OPERATIONS.lines().filter(|l| !l.is_empty()) {
        let result = w
            .call(
                w.sts.as_ref(),
                DenialStyle::Query,
                &nobody,
                action,
                &sts_params,
            )
            .await;
        match (action, result) {
            ("GetCallerIdentity", Ok(out)) => {
                assert!(out.contains(&nobody.arn));
            }
            // Any identity may get a session token, as on AWS.
            ("GetSessionToken", Ok(out)) => assert!(out.contains("<SessionToken>")),
            // A web identity call is authorized by its token, not a policy.
            ("AssumeRoleWithWebIdentity", Err(e)) => assert_eq!(e.code, "InvalidIdentityToken"),
            (
                "AssumeRole"
                | "DecodeAuthorizationMessage"
                | "GetAccessKeyInfo"
                | "GetFederationToken",
                Err(e),
            ) => assert_eq!(e.code, "AccessDenied", "{action}: {}", e.message),
            (_, Err(e)) if e.code == "NotImplemented" => {}
            (action, other) => odd.push(format!("{action}: {other:?}")),
        }
    }
    assert!(
        odd.is_empty(),
        "STS answered a user without policies:\n{}",
        odd.join("\n")
    );

    // EC2: every action of its model is walked with its own input in
    // authz_ec2.rs.
}
