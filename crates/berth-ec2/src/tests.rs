//! EC2 over a real store: the actions as the gateway calls them (form fields
//! in, XML out) and the API other components use.

use std::sync::Arc;

use berth_model::{AwsError, Principal, PrincipalKind, QueryService, RequestContext};
use berth_store::{SqliteOptions, SqliteStore, Store};

use crate::{Ec2Service, Peer};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    svc: Ec2Service,
    ctx: RequestContext,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
    Fixture {
        svc: Ec2Service::new(store.clone()),
        store,
        _dir: dir,
        ctx: RequestContext {
            request_id: "req".into(),
            account_id: ACCOUNT.into(),
            region: REGION.into(),
            principal: Principal {
                kind: PrincipalKind::Root,
                arn: format!("arn:aws:iam::{ACCOUNT}:root"),
                user_id: ACCOUNT.into(),
                account_id: ACCOUNT.into(),
                access_key_id: "AKIAROOTROOTROOTROOT".into(),
            },
            source_ip: None,
            secure_transport: false,
            access: Default::default(),
        },
    }
}

impl Fixture {
    async fn call(&self, action: &str, pairs: &[(&str, &str)]) -> Result<String, AwsError> {
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.svc.handle(&self.ctx, action, &params).await
    }

    async fn ok(&self, action: &str, pairs: &[(&str, &str)]) -> String {
        match self.call(action, pairs).await {
            Ok(xml) => xml,
            Err(e) => panic!("{action} failed: {e}"),
        }
    }

    async fn err(&self, action: &str, pairs: &[(&str, &str)]) -> AwsError {
        match self.call(action, pairs).await {
            Ok(xml) => panic!("{action} succeeded: {xml}"),
            Err(e) => e,
        }
    }

    async fn vpc(&self, cidr: &str) -> String {
        let xml = self.ok("CreateVpc", &[("CidrBlock", cidr)]).await;
        tag(&xml, "vpcId").unwrap()
    }

    async fn subnet(&self, vpc: &str, cidr: &str) -> String {
        let xml = self
            .ok("CreateSubnet", &[("VpcId", vpc), ("CidrBlock", cidr)])
            .await;
        tag(&xml, "subnetId").unwrap()
    }

    async fn group(&self, vpc: &str, name: &str) -> String {
        let xml = self
            .ok(
                "CreateSecurityGroup",
                &[
                    ("VpcId", vpc),
                    ("GroupName", name),
                    ("GroupDescription", "d"),
                ],
            )
            .await;
        tag(&xml, "groupId").unwrap()
    }
}

/// The text of the first `<name>` element.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}

/// The texts of every `<name>` element.
fn tags(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

#[tokio::test]
async fn defaults_are_created_once() {
    let f = fixture();
    f.svc.ensure_defaults(ACCOUNT, REGION).await.unwrap();
    let revision = f.store.revision();
    f.svc.ensure_defaults(ACCOUNT, REGION).await.unwrap();
    let xml = f.ok("DescribeVpcs", &[]).await;
    assert_eq!(f.store.revision(), revision, "defaults were written twice");
    assert!(xml.starts_with("<vpcSet><item><vpcId>vpc-"), "{xml}");
    assert_eq!(tags(&xml, "isDefault"), ["true"]);
    assert_eq!(tag(&xml, "cidrBlock").unwrap(), "172.31.0.0/16");
    let vpc = tag(&xml, "vpcId").unwrap();
    assert_eq!(vpc.len(), "vpc-".len() + 17);

    let xml = f.ok("DescribeSubnets", &[]).await;
    let mut zones = tags(&xml, "availabilityZone");
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    let mut cidrs = tags(&xml, "cidrBlock");
    cidrs.sort();
    assert_eq!(cidrs, ["172.31.0.0/20", "172.31.16.0/20", "172.31.32.0/20"]);
    assert_eq!(tags(&xml, "defaultForAz"), ["true"; 3]);
    assert_eq!(tags(&xml, "mapPublicIpOnLaunch"), ["true"; 3]);
    assert_eq!(tags(&xml, "availableIpAddressCount"), ["4091"; 3]);

    let xml = f.ok("DescribeSecurityGroups", &[]).await;
    assert_eq!(tags(&xml, "groupName"), ["default"]);
    let sg = tag(&xml, "groupId").unwrap();
    // The default group admits its own members and lets everything out.
    let ingress = tag(&xml, "ipPermissions").unwrap();
    assert!(
        ingress.contains("<ipProtocol>-1</ipProtocol><groups><item><userId>123456789012</userId>"),
        "{ingress}"
    );
    assert!(
        ingress.contains(&format!("<groupId>{sg}</groupId>")),
        "{ingress}"
    );
    let egress = tag(&xml, "ipPermissionsEgress").unwrap();
    assert!(
        egress.contains("<ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges>"),
        "{egress}"
    );

    // Another region gets its own.
    let mut other = f.ctx.clone();
    other.region = "eu-west-1".into();
    let xml = f.svc.handle(&other, "DescribeSubnets", &[]).await.unwrap();
    assert!(xml.contains("<availabilityZone>eu-west-1b</availabilityZone>"));
    assert!(!xml.contains(&vpc));
}

#[tokio::test]
async fn deleted_defaults_stay_deleted() {
    let f = fixture();
    let xml = f.ok("DescribeSubnets", &[]).await;
    for subnet in tags(&xml, "subnetId") {
        f.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    }
    let xml = f.ok("DescribeVpcs", &[]).await;
    let vpc = tag(&xml, "vpcId").unwrap();
    // Its internet gateway is attached: AWS refuses until it is detached.
    let e = f.err("DeleteVpc", &[("VpcId", &vpc)]).await;
    assert_eq!(e.code, "DependencyViolation");
    let igw = tag(
        &f.ok("DescribeInternetGateways", &[]).await,
        "internetGatewayId",
    )
    .unwrap();
    f.ok(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    f.ok("DeleteInternetGateway", &[("InternetGatewayId", &igw)])
        .await;
    f.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
    assert_eq!(
        f.ok("DescribeRouteTables", &[]).await,
        "<routeTableSet></routeTableSet>"
    );
    assert_eq!(f.ok("DescribeVpcs", &[]).await, "<vpcSet></vpcSet>");
    assert_eq!(
        f.ok("DescribeSecurityGroups", &[]).await,
        "<securityGroupInfo></securityGroupInfo>"
    );
    f.svc.ensure_defaults(ACCOUNT, REGION).await.unwrap();
    assert_eq!(f.ok("DescribeVpcs", &[]).await, "<vpcSet></vpcSet>");
    let e = f
        .err(
            "CreateSecurityGroup",
            &[("GroupName", "a"), ("GroupDescription", "d")],
        )
        .await;
    assert_eq!(e.code, "VPCIdNotSpecified");
}

#[tokio::test]
async fn vpc_cidrs_are_validated() {
    let f = fixture();
    let e = f.err("CreateVpc", &[]).await;
    assert_eq!((e.code.as_ref(), e.status), ("MissingParameter", 400));
    for (cidr, code) in [
        ("10.0.0.0/8", "InvalidVpc.Range"),
        ("10.0.0.0/29", "InvalidVpc.Range"),
        ("10.0.0.0", "InvalidParameterValue"),
        ("10.0.0.1/16", "InvalidParameterValue"),
        ("300.0.0.0/16", "InvalidParameterValue"),
    ] {
        let e = f.err("CreateVpc", &[("CidrBlock", cidr)]).await;
        assert_eq!(e.code, code, "{cidr}: {e}");
    }
    let vpc = f.vpc("10.0.0.0/16").await;
    let xml = f.ok("DescribeVpcs", &[("VpcId.1", &vpc)]).await;
    assert_eq!(tags(&xml, "vpcId"), [vpc.as_str()]);
    assert_eq!(tag(&xml, "isDefault").unwrap(), "false");
    // A new VPC has its own default group.
    let xml = f
        .ok(
            "DescribeSecurityGroups",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert_eq!(tags(&xml, "groupName"), ["default"]);

    let e = f
        .err("DescribeVpcs", &[("VpcId.1", "vpc-0123456789abcdef0")])
        .await;
    assert_eq!(e.code, "InvalidVpcID.NotFound");
    assert_eq!(
        e.message,
        "The vpc ID 'vpc-0123456789abcdef0' does not exist"
    );
    let e = f.err("DeleteVpc", &[("VpcId", "nope")]).await;
    assert_eq!(e.code, "InvalidVpcID.Malformed");
}

#[tokio::test]
async fn filters_select() {
    let f = fixture();
    let vpc = f.vpc("10.1.0.0/16").await;
    let xml = f
        .ok(
            "DescribeVpcs",
            &[
                ("Filter.1.Name", "is-default"),
                ("Filter.1.Value.1", "false"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "vpcId"), [vpc.as_str()]);
    let xml = f
        .ok(
            "DescribeVpcs",
            &[
                ("Filter.1.Name", "cidr"),
                ("Filter.1.Value.1", "10.9.0.0/16"),
                ("Filter.1.Value.2", "10.1.*"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "vpcId"), [vpc.as_str()]);
    let xml = f
        .ok(
            "DescribeVpcs",
            &[
                ("Filter.1.Name", "cidr"),
                ("Filter.1.Value.1", "10.1.0.0/16"),
                ("Filter.2.Name", "is-default"),
                ("Filter.2.Value.1", "true"),
            ],
        )
        .await;
    assert_eq!(xml, "<vpcSet></vpcSet>");
    let e = f
        .err(
            "DescribeVpcs",
            &[("Filter.1.Name", "bogus"), ("Filter.1.Value.1", "x")],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue");

    let subnet = f.subnet(&vpc, "10.1.2.0/24").await;
    let xml = f
        .ok(
            "DescribeSubnets",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "availability-zone"),
                ("Filter.2.Value.1", "us-east-1a"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "subnetId"), [subnet.as_str()]);
    let xml = f
        .ok(
            "DescribeSubnets",
            &[
                ("Filter.1.Name", "default-for-az"),
                ("Filter.1.Value.1", "true"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "subnetId").len(), 3);
    let xml = f
        .ok(
            "DescribeSubnets",
            &[
                ("Filter.1.Name", "cidr-block"),
                ("Filter.1.Value.1", "10.1.2.0/24"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "subnetId"), [subnet]);

    let sg = f.group(&vpc, "web").await;
    let xml = f
        .ok(
            "DescribeSecurityGroups",
            &[("Filter.1.Name", "group-name"), ("Filter.1.Value.1", "web")],
        )
        .await;
    assert_eq!(tags(&xml, "groupId"), [sg.as_str()]);
    let xml = f.ok("DescribeSecurityGroups", &[("GroupId.1", &sg)]).await;
    assert_eq!(tags(&xml, "groupName"), ["web"]);
    // Names without a VPC refer to the default VPC.
    let e = f
        .err("DescribeSecurityGroups", &[("GroupName.1", "web")])
        .await;
    assert_eq!(e.code, "InvalidGroup.NotFound");
    let xml = f
        .ok("DescribeSecurityGroups", &[("GroupName.1", "default")])
        .await;
    assert_eq!(tags(&xml, "groupName"), ["default"]);
}

#[tokio::test]
async fn subnets_fit_their_vpc() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let xml = f
        .ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.1.0/24"),
                ("AvailabilityZone", "us-east-1b"),
            ],
        )
        .await;
    assert!(xml.starts_with("<subnet><subnetId>subnet-"), "{xml}");
    assert_eq!(tag(&xml, "availableIpAddressCount").unwrap(), "251");
    assert_eq!(tag(&xml, "availabilityZone").unwrap(), "us-east-1b");
    assert_eq!(tag(&xml, "defaultForAz").unwrap(), "false");
    let before = f.store.revision();
    for (cidr, code) in [
        ("10.1.0.0/24", "InvalidSubnet.Range"),
        ("10.0.0.0/29", "InvalidSubnet.Range"),
        ("10.0.0.0/15", "InvalidSubnet.Range"),
        ("10.0.1.128/25", "InvalidSubnet.Conflict"),
        ("10.0.0.0/23", "InvalidSubnet.Conflict"),
        ("10.0.1.0/24", "InvalidSubnet.Conflict"),
        ("bad", "InvalidParameterValue"),
    ] {
        let e = f
            .err("CreateSubnet", &[("VpcId", &vpc), ("CidrBlock", cidr)])
            .await;
        assert_eq!(e.code, code, "{cidr}: {e}");
    }
    let e = f
        .err(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.2.0/24"),
                ("AvailabilityZone", "us-west-2a"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    let e = f
        .err(
            "CreateSubnet",
            &[
                ("VpcId", "vpc-0123456789abcdef0"),
                ("CidrBlock", "10.0.2.0/24"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidVpcID.NotFound");
    assert_eq!(f.store.revision(), before, "a refused request wrote");
    // Another VPC may reuse the block.
    let other = f.vpc("10.0.0.0/16").await;
    let xml = f
        .ok(
            "CreateSubnet",
            &[("VpcId", &other), ("CidrBlock", "10.0.1.0/24")],
        )
        .await;
    assert_eq!(tag(&xml, "availabilityZone").unwrap(), "us-east-1a");
}

#[tokio::test]
async fn dependencies_block_deletes() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let subnet = f.subnet(&vpc, "10.0.0.0/24").await;
    let sg = f.group(&vpc, "app").await;
    let e = f.err("DeleteVpc", &[("VpcId", &vpc)]).await;
    assert_eq!(e.code, "DependencyViolation");
    assert_eq!(
        e.message,
        format!("The vpc '{vpc}' has dependencies and cannot be deleted.")
    );

    let eni = f
        .svc
        .create_task_eni(ACCOUNT, REGION, &subnet, std::slice::from_ref(&sg), "task")
        .await
        .unwrap();
    let e = f.err("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    assert_eq!(e.code, "DependencyViolation");
    let e = f.err("DeleteSecurityGroup", &[("GroupId", &sg)]).await;
    assert_eq!(e.code, "DependencyViolation");
    assert!(f.svc.delete_eni(ACCOUNT, REGION, &eni.id).await.unwrap());
    assert!(!f.svc.delete_eni(ACCOUNT, REGION, &eni.id).await.unwrap());

    f.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    let e = f.err("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    assert_eq!(e.code, "InvalidSubnetID.NotFound");
    let xml = f.ok("DeleteSecurityGroup", &[("GroupId", &sg)]).await;
    assert_eq!(xml, format!("<return>true</return><groupId>{sg}</groupId>"));
    let default = tag(
        &f.ok(
            "DescribeSecurityGroups",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await,
        "groupId",
    )
    .unwrap();
    let e = f.err("DeleteSecurityGroup", &[("GroupId", &default)]).await;
    assert_eq!(e.code, "CannotDelete");
    assert_eq!(
        f.ok("DeleteVpc", &[("VpcId", &vpc)]).await,
        "<return>true</return>"
    );
    // The VPC's default group went with it.
    let e = f
        .err("DescribeSecurityGroups", &[("GroupId.1", &default)])
        .await;
    assert_eq!(e.code, "InvalidGroup.NotFound");
    let e = f.err("DeleteSecurityGroup", &[("GroupId", &default)]).await;
    assert_eq!(e.code, "InvalidGroup.NotFound");
}

#[tokio::test]
async fn security_group_names_and_rules() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let e = f
        .err(
            "CreateSecurityGroup",
            &[("VpcId", &vpc), ("GroupName", "x")],
        )
        .await;
    assert_eq!(e.code, "MissingParameter");
    let e = f
        .err(
            "CreateSecurityGroup",
            &[
                ("VpcId", &vpc),
                ("GroupName", "sg-x"),
                ("GroupDescription", "d"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    let web = f.group(&vpc, "web").await;
    let e = f
        .err(
            "CreateSecurityGroup",
            &[
                ("VpcId", &vpc),
                ("GroupName", "web"),
                ("GroupDescription", "d"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidGroup.Duplicate");
    let db = f.group(&vpc, "db").await;

    // A new group only lets everything out.
    let xml = f.ok("DescribeSecurityGroups", &[("GroupId.1", &web)]).await;
    assert!(xml.contains("<ipPermissions></ipPermissions>"), "{xml}");
    assert!(xml.contains("<ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><groups></groups><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges>"), "{xml}");

    let http = [
        ("GroupId", web.as_str()),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "80"),
        ("IpPermissions.1.ToPort", "80"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ("IpPermissions.1.IpRanges.2.CidrIp", "10.0.0.0/8"),
    ];
    let xml = f.ok("AuthorizeSecurityGroupIngress", &http).await;
    assert!(
        xml.starts_with(
            "<return>true</return><securityGroupRuleSet><item><securityGroupRuleId>sgr-"
        ),
        "{xml}"
    );
    assert_eq!(tags(&xml, "cidrIpv4"), ["0.0.0.0/0", "10.0.0.0/8"]);
    let e = f.err("AuthorizeSecurityGroupIngress", &http).await;
    assert_eq!(e.code, "InvalidPermission.Duplicate");

    // From another group, SG to SG.
    let from_web = [
        ("GroupId", db.as_str()),
        ("IpPermissions.1.IpProtocol", "6"),
        ("IpPermissions.1.FromPort", "5432"),
        ("IpPermissions.1.ToPort", "5432"),
        ("IpPermissions.1.Groups.1.GroupId", web.as_str()),
    ];
    f.ok("AuthorizeSecurityGroupIngress", &from_web).await;
    let xml = f.ok("DescribeSecurityGroups", &[("GroupId.1", &db)]).await;
    let ingress = tag(&xml, "ipPermissions").unwrap();
    assert_eq!(
        ingress,
        format!("<item><ipProtocol>tcp</ipProtocol><fromPort>5432</fromPort><toPort>5432</toPort><groups><item><userId>{ACCOUNT}</userId><groupId>{web}</groupId></item></groups><ipRanges></ipRanges><ipv6Ranges></ipv6Ranges><prefixListIds></prefixListIds></item>")
    );
    // web is referenced by db now.
    let e = f.err("DeleteSecurityGroup", &[("GroupId", &web)]).await;
    assert_eq!(e.code, "DependencyViolation");

    let rules = f
        .svc
        .security_group_rules(
            ACCOUNT,
            REGION,
            &[web.clone(), db.clone(), "sg-missing".into()],
        )
        .unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].ingress.len(), 2);
    assert_eq!(rules[1].ingress[0].peer, Peer::Group(web.clone()));
    assert_eq!(rules[1].ingress[0].from_port, Some(5432));

    // Invalid rules change nothing.
    let before = f.store.revision();
    for bad in [
        vec![
            ("GroupId", web.as_str()),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ],
        vec![
            ("GroupId", web.as_str()),
            ("IpPermissions.1.IpProtocol", "bogus"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ],
        vec![
            ("GroupId", web.as_str()),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "90"),
            ("IpPermissions.1.ToPort", "80"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ],
        vec![
            ("GroupId", web.as_str()),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "1"),
            ("IpPermissions.1.ToPort", "2"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "1.2.3.4/8"),
        ],
    ] {
        let e = f.err("AuthorizeSecurityGroupIngress", &bad).await;
        assert_eq!(e.code, "InvalidParameterValue", "{bad:?}: {e}");
    }
    // One duplicate spoils the batch.
    let e = f
        .err(
            "AuthorizeSecurityGroupIngress",
            &[
                ("GroupId", &web),
                ("IpPermissions.1.IpProtocol", "udp"),
                ("IpPermissions.1.FromPort", "53"),
                ("IpPermissions.1.ToPort", "53"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
                ("IpPermissions.2.IpProtocol", "tcp"),
                ("IpPermissions.2.FromPort", "80"),
                ("IpPermissions.2.ToPort", "80"),
                ("IpPermissions.2.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidPermission.Duplicate");
    let e = f
        .err(
            "AuthorizeSecurityGroupIngress",
            &[
                ("GroupId", &web),
                ("IpPermissions.1.IpProtocol", "-1"),
                ("IpPermissions.1.Groups.1.GroupId", "sg-0123456789abcdef0"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidGroup.NotFound");
    assert_eq!(f.store.revision(), before);

    // Revoke.
    let one = [
        ("GroupId", web.as_str()),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "80"),
        ("IpPermissions.1.ToPort", "80"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
    ];
    assert_eq!(
        f.ok("RevokeSecurityGroupIngress", &one).await,
        "<return>true</return>"
    );
    let e = f.err("RevokeSecurityGroupIngress", &one).await;
    assert_eq!(e.code, "InvalidPermission.NotFound");
    let xml = f.ok("DescribeSecurityGroups", &[("GroupId.1", &web)]).await;
    assert_eq!(tags(&xml, "cidrIp"), ["0.0.0.0/0", "0.0.0.0/0"]);

    // Egress: the default allow-all rule can be revoked and re-added.
    let all_out = [
        ("GroupId", web.as_str()),
        ("IpPermissions.1.IpProtocol", "-1"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
    ];
    let e = f.err("AuthorizeSecurityGroupEgress", &all_out).await;
    assert_eq!(e.code, "InvalidPermission.Duplicate");
    f.ok("RevokeSecurityGroupEgress", &all_out).await;
    let xml = f.ok("DescribeSecurityGroups", &[("GroupId.1", &web)]).await;
    assert!(
        xml.contains("<ipPermissionsEgress></ipPermissionsEgress>"),
        "{xml}"
    );
    f.ok("AuthorizeSecurityGroupEgress", &all_out).await;
}

#[tokio::test]
async fn enis_take_sequential_addresses() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let subnet = f.subnet(&vpc, "10.0.0.0/28").await;
    let sg = f.group(&vpc, "task").await;
    let groups = [sg.clone()];
    let mut enis = Vec::new();
    // /28: 16 addresses, 5 reserved.
    for i in 0..11 {
        let eni = f
            .svc
            .create_task_eni(ACCOUNT, REGION, &subnet, &groups, "t")
            .await
            .unwrap();
        assert_eq!(eni.private_ip, format!("10.0.0.{}", 4 + i));
        assert_eq!(eni.gateway, "10.0.0.1");
        assert_eq!(eni.subnet_cidr, "10.0.0.0/28");
        assert!(eni.id.starts_with("eni-") && eni.id.len() == 21);
        assert!(eni.mac.starts_with("0a:"));
        enis.push(eni);
    }
    let xml = f.ok("DescribeSubnets", &[("SubnetId.1", &subnet)]).await;
    assert_eq!(tag(&xml, "availableIpAddressCount").unwrap(), "0");
    let e = f
        .svc
        .create_task_eni(ACCOUNT, REGION, &subnet, &groups, "t")
        .await
        .unwrap_err();
    assert_eq!(e.code, "InsufficientFreeAddressesInSubnet");
    // A freed address is taken again, the lowest first.
    f.svc
        .delete_eni(ACCOUNT, REGION, &enis[3].id)
        .await
        .unwrap();
    let again = f
        .svc
        .create_task_eni(ACCOUNT, REGION, &subnet, &[], "t")
        .await
        .unwrap();
    assert_eq!(again.private_ip, "10.0.0.7");
    // No groups: the VPC's default group.
    let xml = f
        .ok(
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "group-name"),
                ("Filter.2.Value.1", "default"),
            ],
        )
        .await;
    assert_eq!(again.security_group_ids, [tag(&xml, "groupId").unwrap()]);

    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &again.id)],
        )
        .await;
    assert!(
        xml.starts_with("<networkInterfaceSet><item><networkInterfaceId>eni-"),
        "{xml}"
    );
    assert_eq!(tag(&xml, "privateIpAddress").unwrap(), "10.0.0.7");
    assert_eq!(tag(&xml, "macAddress").unwrap(), again.mac);
    assert_eq!(
        tag(&xml, "privateDnsName").unwrap(),
        "ip-10-0-0-7.ec2.internal"
    );
    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[("Filter.1.Name", "group-id"), ("Filter.1.Value.1", &sg)],
        )
        .await;
    assert_eq!(tags(&xml, "networkInterfaceId").len(), 10);
    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[
                ("Filter.1.Name", "subnet-id"),
                ("Filter.1.Value.1", &subnet),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "networkInterfaceId").len(), 11);
    let e = f
        .err(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &enis[3].id)],
        )
        .await;
    assert_eq!(e.code, "InvalidNetworkInterfaceID.NotFound");
}

#[tokio::test]
async fn load_balancer_interfaces_are_hosted_addresses_of_their_vpc() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let other = f.vpc("10.1.0.0/16").await;
    let subnet = f.subnet(&vpc, "10.0.0.0/24").await;
    let elsewhere = f.subnet(&other, "10.1.0.0/24").await;
    let task = f
        .svc
        .create_task_eni(ACCOUNT, REGION, &subnet, &[], "task")
        .await
        .unwrap();
    let alb = f
        .svc
        .create_load_balancer_eni(
            ACCOUNT,
            REGION,
            &subnet,
            &[],
            "ELB app/web/0123456789abcdef",
            false,
        )
        .await
        .unwrap();
    let nlb = f
        .svc
        .create_load_balancer_eni(
            ACCOUNT,
            REGION,
            &elsewhere,
            &[],
            "ELB net/tcp/0123456789abcdef",
            true,
        )
        .await
        .unwrap();
    // A task learns the load balancers of its own VPC only.
    let policy = f.svc.interface_policy(ACCOUNT, REGION, &task.id).unwrap();
    assert_eq!(policy.hosted_addresses, vec![alb.private_ip.clone()]);
    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &alb.id)],
        )
        .await;
    assert_eq!(tag(&xml, "requesterId").unwrap(), "amazon-elb");
    assert_eq!(tag(&xml, "interfaceType").unwrap(), "interface");
    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &nlb.id)],
        )
        .await;
    assert_eq!(tag(&xml, "interfaceType").unwrap(), "network_load_balancer");
    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &task.id)],
        )
        .await;
    assert_eq!(tag(&xml, "requesterId"), None);
    f.svc.delete_eni(ACCOUNT, REGION, &alb.id).await.unwrap();
    let policy = f.svc.interface_policy(ACCOUNT, REGION, &task.id).unwrap();
    assert!(policy.hosted_addresses.is_empty());
}

#[tokio::test]
async fn eni_groups_are_checked() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let subnet = f.subnet(&vpc, "10.0.0.0/24").await;
    let xml = f
        .ok("DescribeSecurityGroups", &[("GroupName.1", "default")])
        .await;
    let elsewhere = tag(&xml, "groupId").unwrap();
    let before = f.store.revision();
    let e = f
        .svc
        .create_task_eni(ACCOUNT, REGION, &subnet, &[elsewhere], "t")
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidParameter");
    let e = f
        .svc
        .create_task_eni(
            ACCOUNT,
            REGION,
            &subnet,
            &["sg-0123456789abcdef0".into()],
            "t",
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidGroup.NotFound");
    let e = f
        .svc
        .create_task_eni(ACCOUNT, REGION, "subnet-0123456789abcdef0", &[], "t")
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidSubnetID.NotFound");
    assert_eq!(f.store.revision(), before);
}

#[tokio::test]
async fn other_actions_are_refused_in_ec2_words() {
    let f = fixture();
    let e = f.err("RunInstances", &[]).await;
    assert_eq!((e.code.as_ref(), e.status), ("UnsupportedOperation", 400));
    assert_eq!(
        e.message,
        "The operation RunInstances is not supported by Berth: Berth runs containers, not virtual machines: it has no EC2 instances."
    );
    let e = f.err("Frobnicate", &[]).await;
    assert_eq!(e.code, "InvalidAction");
    let e = f.err("DescribeVpcs", &[("DryRun", "true")]).await;
    assert_eq!(e.code, "DryRunOperation");
}

// ---- the records around a VPC ------------------------------------------------

/// Every model action is implemented or listed with its reason, once.
#[test]
fn not_implemented_covers_the_model() {
    let ops: Vec<&str> = crate::MODEL_OPERATIONS
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    for op in crate::IMPLEMENTED {
        assert!(ops.contains(op), "{op} is not in the model");
        assert!(
            !crate::NOT_IMPLEMENTED.iter().any(|(n, _)| n == op),
            "{op} is both implemented and listed"
        );
    }
    for (op, reason) in crate::NOT_IMPLEMENTED {
        assert!(ops.contains(op), "{op} is not in the model");
        assert!(!reason.is_empty());
    }
    assert_eq!(
        crate::IMPLEMENTED.len() + crate::NOT_IMPLEMENTED.len(),
        ops.len()
    );
}

#[tokio::test]
async fn tags_on_create_and_after() {
    let f = fixture();
    let xml = f
        .ok(
            "CreateVpc",
            &[
                ("CidrBlock", "10.0.0.0/16"),
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "main"),
            ],
        )
        .await;
    let vpc = tag(&xml, "vpcId").unwrap();
    assert!(xml.contains("<tagSet><item><key>Name</key><value>main</value></item></tagSet>"));
    let subnet = f.subnet(&vpc, "10.0.1.0/24").await;
    f.ok(
        "CreateTags",
        &[
            ("ResourceId.1", &vpc),
            ("ResourceId.2", &subnet),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "blue"),
        ],
    )
    .await;
    let xml = f
        .ok(
            "DescribeTags",
            &[("Filter.1.Name", "key"), ("Filter.1.Value.1", "team")],
        )
        .await;
    assert_eq!(tags(&xml, "resourceType"), ["subnet", "vpc"]);
    let xml = f
        .ok(
            "DescribeSubnets",
            &[("Filter.1.Name", "tag:team"), ("Filter.1.Value.1", "blue")],
        )
        .await;
    assert_eq!(tags(&xml, "subnetId"), std::slice::from_ref(&subnet));
    let xml = f
        .ok(
            "DescribeVpcs",
            &[("Filter.1.Name", "tag-key"), ("Filter.1.Value.1", "Name")],
        )
        .await;
    assert_eq!(tags(&xml, "vpcId"), std::slice::from_ref(&vpc));
    // A value given deletes only a matching tag.
    f.ok(
        "DeleteTags",
        &[
            ("ResourceId.1", &vpc),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "red"),
        ],
    )
    .await;
    let xml = f
        .ok(
            "DescribeTags",
            &[("Filter.1.Name", "resource-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert_eq!(tags(&xml, "key"), ["Name", "team"]);
    f.ok(
        "DeleteTags",
        &[("ResourceId.1", &vpc), ("Tag.1.Key", "team")],
    )
    .await;
    let xml = f
        .ok(
            "DescribeTags",
            &[("Filter.1.Name", "resource-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert_eq!(tags(&xml, "key"), ["Name"]);
    // Bad input changes nothing.
    let before = f.store.revision();
    for (pairs, code) in [
        (
            vec![
                ("ResourceId.1", "vpc-0123456789abcdef0"),
                ("Tag.1.Key", "a"),
            ],
            "InvalidVpcID.NotFound",
        ),
        (
            vec![("ResourceId.1", vpc.as_str()), ("Tag.1.Key", "aws:x")],
            "InvalidParameterValue",
        ),
        (
            vec![("ResourceId.1", "frob-1"), ("Tag.1.Key", "a")],
            "InvalidID",
        ),
    ] {
        assert_eq!(f.err("CreateTags", &pairs).await.code, code);
    }
    let e = f
        .err(
            "CreateVpc",
            &[
                ("CidrBlock", "10.1.0.0/16"),
                ("TagSpecification.1.ResourceType", "subnet"),
                ("TagSpecification.1.Tag.1.Key", "a"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    assert_eq!(f.store.revision(), before);
    // 50 tags at most.
    let mut many: Vec<(String, String)> = vec![("ResourceId.1".into(), subnet.clone())];
    for i in 1..=51 {
        many.push((format!("Tag.{i}.Key"), format!("k{i}")));
    }
    let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(f.err("CreateTags", &pairs).await.code, "TagLimitExceeded");
    // Tags go with their resource.
    f.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    let xml = f.ok("DescribeTags", &[]).await;
    assert!(!xml.contains(&subnet));
}

#[tokio::test]
async fn zones_regions_and_account_attributes() {
    let f = fixture();
    let xml = f.ok("DescribeAvailabilityZones", &[]).await;
    assert_eq!(
        tags(&xml, "zoneName"),
        ["us-east-1a", "us-east-1b", "us-east-1c"]
    );
    assert_eq!(tags(&xml, "zoneId"), ["use1-az1", "use1-az2", "use1-az3"]);
    assert_eq!(tags(&xml, "zoneState"), ["available"; 3]);
    let xml = f
        .ok(
            "DescribeAvailabilityZones",
            &[
                ("Filter.1.Name", "zone-id"),
                ("Filter.1.Value.1", "use1-az2"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "zoneName"), ["us-east-1b"]);
    let e = f
        .err("DescribeAvailabilityZones", &[("ZoneName.1", "us-east-1z")])
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    // The subnets name the same zone ids.
    let xml = f.ok("DescribeSubnets", &[]).await;
    let mut ids = tags(&xml, "availabilityZoneId");
    ids.sort();
    assert_eq!(ids, ["use1-az1", "use1-az2", "use1-az3"]);
    let xml = f
        .ok("DescribeRegions", &[("RegionName.1", "eu-west-1")])
        .await;
    assert_eq!(
        tags(&xml, "regionEndpoint"),
        ["ec2.eu-west-1.amazonaws.com"]
    );
    let xml = f.ok("DescribeAccountAttributes", &[]).await;
    assert_eq!(
        tags(&xml, "attributeName"),
        [
            "supported-platforms",
            "default-vpc",
            "max-instances",
            "vpc-max-security-groups-per-interface",
            "max-elastic-ips",
            "vpc-max-elastic-ips"
        ]
    );
    let vpc = tag(&f.ok("DescribeVpcs", &[]).await, "vpcId").unwrap();
    let xml = f
        .ok(
            "DescribeAccountAttributes",
            &[("AttributeName.1", "default-vpc")],
        )
        .await;
    assert_eq!(tags(&xml, "attributeValue"), [vpc]);
}

#[tokio::test]
async fn rules_have_stable_ids_quotas_and_modifications() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let sg = f.group(&vpc, "web").await;
    let peer = f.group(&vpc, "peer").await;
    let xml = f
        .ok(
            "AuthorizeSecurityGroupIngress",
            &[
                ("GroupId", &sg),
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "80"),
                ("IpPermissions.1.ToPort", "80"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
                ("TagSpecification.1.ResourceType", "security-group-rule"),
                ("TagSpecification.1.Tag.1.Key", "why"),
                ("TagSpecification.1.Tag.1.Value", "web"),
            ],
        )
        .await;
    let rule = tag(&xml, "securityGroupRuleId").unwrap();
    let by_group = [
        ("Filter.1.Name", "group-id"),
        ("Filter.1.Value.1", sg.as_str()),
    ];
    let xml = f.ok("DescribeSecurityGroupRules", &by_group).await;
    assert!(xml.contains(&rule));
    assert_eq!(tags(&xml, "securityGroupRuleId").len(), 2);
    assert_eq!(
        f.ok("DescribeSecurityGroupRules", &by_group).await,
        xml,
        "rule ids are stable"
    );
    f.ok(
        "ModifySecurityGroupRules",
        &[
            ("GroupId", &sg),
            ("SecurityGroupRule.1.SecurityGroupRuleId", &rule),
            ("SecurityGroupRule.1.SecurityGroupRule.IpProtocol", "tcp"),
            ("SecurityGroupRule.1.SecurityGroupRule.FromPort", "8080"),
            ("SecurityGroupRule.1.SecurityGroupRule.ToPort", "8081"),
            (
                "SecurityGroupRule.1.SecurityGroupRule.ReferencedGroupId",
                &peer,
            ),
            (
                "SecurityGroupRule.1.SecurityGroupRule.Description",
                "from peers",
            ),
        ],
    )
    .await;
    let xml = f
        .ok(
            "DescribeSecurityGroupRules",
            &[("SecurityGroupRuleId.1", &rule)],
        )
        .await;
    assert_eq!(tag(&xml, "fromPort").unwrap(), "8080");
    assert_eq!(tag(&xml, "description").unwrap(), "from peers");
    assert!(xml.contains("<key>why</key>"), "tags stay: {xml}");
    // The enforcement view follows.
    let rules = f
        .svc
        .security_group_rules(ACCOUNT, REGION, std::slice::from_ref(&sg))
        .unwrap();
    assert_eq!(rules[0].ingress[0].peer, Peer::Group(peer.clone()));
    assert_eq!(rules[0].ingress[0].from_port, Some(8080));
    // Descriptions by id.
    f.ok(
        "UpdateSecurityGroupRuleDescriptionsIngress",
        &[
            ("GroupId", &sg),
            ("SecurityGroupRuleDescription.1.SecurityGroupRuleId", &rule),
            ("SecurityGroupRuleDescription.1.Description", "renamed"),
        ],
    )
    .await;
    let xml = f
        .ok(
            "DescribeSecurityGroupRules",
            &[("SecurityGroupRuleId.1", &rule)],
        )
        .await;
    assert_eq!(tag(&xml, "description").unwrap(), "renamed");
    // Bad input changes nothing.
    let before = f.store.revision();
    let e = f
        .err(
            "ModifySecurityGroupRules",
            &[
                ("GroupId", &peer),
                ("SecurityGroupRule.1.SecurityGroupRuleId", &rule),
                ("SecurityGroupRule.1.SecurityGroupRule.IpProtocol", "tcp"),
                ("SecurityGroupRule.1.SecurityGroupRule.FromPort", "1"),
                ("SecurityGroupRule.1.SecurityGroupRule.ToPort", "1"),
                (
                    "SecurityGroupRule.1.SecurityGroupRule.CidrIpv4",
                    "0.0.0.0/0",
                ),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidSecurityGroupRuleId.NotFound");
    let e = f
        .err(
            "DescribeSecurityGroupRules",
            &[("SecurityGroupRuleId.1", "sgr-0123456789abcdef0")],
        )
        .await;
    assert_eq!(e.code, "InvalidSecurityGroupRuleId.NotFound");
    assert_eq!(f.store.revision(), before);
    // 60 inbound rules at most.
    let mut pairs: Vec<(String, String)> = vec![("GroupId".into(), sg.clone())];
    for i in 1..=59 {
        pairs.push((format!("IpPermissions.{i}.IpProtocol"), "tcp".into()));
        pairs.push((
            format!("IpPermissions.{i}.FromPort"),
            (1000 + i).to_string(),
        ));
        pairs.push((format!("IpPermissions.{i}.ToPort"), (1000 + i).to_string()));
        pairs.push((
            format!("IpPermissions.{i}.IpRanges.1.CidrIp"),
            "10.0.0.0/8".into(),
        ));
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    f.ok("AuthorizeSecurityGroupIngress", &refs).await;
    let before = f.store.revision();
    let e = f
        .err(
            "AuthorizeSecurityGroupIngress",
            &[
                ("GroupId", &sg),
                ("IpPermissions.1.IpProtocol", "udp"),
                ("IpPermissions.1.FromPort", "53"),
                ("IpPermissions.1.ToPort", "53"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ],
        )
        .await;
    assert_eq!(e.code, "RulesPerSecurityGroupLimitExceeded");
    assert_eq!(
        e.message,
        "The maximum number of rules per security group has been reached."
    );
    assert_eq!(f.store.revision(), before);
    // Pagination walks every rule once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let mut q = vec![
            ("Filter.1.Name", "group-id"),
            ("Filter.1.Value.1", sg.as_str()),
            ("MaxResults", "25"),
        ];
        if !token.is_empty() {
            q.push(("NextToken", &token));
        }
        let xml = f.ok("DescribeSecurityGroupRules", &q).await;
        seen.extend(tags(&xml, "securityGroupRuleId"));
        match tag(&xml, "nextToken") {
            Some(t) => token = t,
            None => break,
        }
    }
    assert_eq!(seen.len(), 61);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 61);
}

#[tokio::test]
async fn vpc_attributes_blocks_and_subnet_attributes() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let get = |attr: &'static str| {
        let vpc = vpc.clone();
        let f = &f;
        async move {
            let xml = f
                .ok(
                    "DescribeVpcAttribute",
                    &[("VpcId", &vpc), ("Attribute", attr)],
                )
                .await;
            tag(&xml, "value").unwrap()
        }
    };
    assert_eq!(get("enableDnsSupport").await, "true");
    assert_eq!(get("enableDnsHostnames").await, "false");
    f.ok(
        "ModifyVpcAttribute",
        &[("VpcId", &vpc), ("EnableDnsHostnames.Value", "true")],
    )
    .await;
    assert_eq!(get("enableDnsHostnames").await, "true");
    let e = f
        .err(
            "ModifyVpcAttribute",
            &[
                ("VpcId", &vpc),
                ("EnableDnsHostnames.Value", "true"),
                ("EnableDnsSupport.Value", "true"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterCombination");
    // Secondary blocks.
    let xml = f
        .ok(
            "AssociateVpcCidrBlock",
            &[("VpcId", &vpc), ("CidrBlock", "10.1.0.0/16")],
        )
        .await;
    let assoc = tag(&xml, "associationId").unwrap();
    let subnet = f.subnet(&vpc, "10.1.5.0/24").await;
    let before = f.store.revision();
    for (cidr, code) in [
        ("10.0.128.0/17", "InvalidVpc.Range"),
        ("192.168.0.0/16", "InvalidVpc.Range"),
        ("10.2.0.0/29", "InvalidVpc.Range"),
    ] {
        let e = f
            .err(
                "AssociateVpcCidrBlock",
                &[("VpcId", &vpc), ("CidrBlock", cidr)],
            )
            .await;
        assert_eq!(e.code, code, "{cidr}");
    }
    let e = f
        .err(
            "AssociateVpcCidrBlock",
            &[("VpcId", &vpc), ("AmazonProvidedIpv6CidrBlock", "true")],
        )
        .await;
    assert_eq!(e.code, "UnsupportedOperation");
    let e = f
        .err("DisassociateVpcCidrBlock", &[("AssociationId", &assoc)])
        .await;
    assert_eq!(e.code, "DependencyViolation");
    assert_eq!(f.store.revision(), before);
    for i in 2..=4 {
        let cidr = format!("10.{i}.0.0/16");
        f.ok(
            "AssociateVpcCidrBlock",
            &[("VpcId", &vpc), ("CidrBlock", &cidr)],
        )
        .await;
    }
    let e = f
        .err(
            "AssociateVpcCidrBlock",
            &[("VpcId", &vpc), ("CidrBlock", "10.9.0.0/16")],
        )
        .await;
    assert_eq!(e.code, "CidrLimitExceeded");
    // Every block has a local route in the main table.
    let xml = f
        .ok(
            "DescribeRouteTables",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert_eq!(tags(&xml, "gatewayId"), ["local"; 5]);
    // Subnet attributes.
    f.ok(
        "ModifySubnetAttribute",
        &[("SubnetId", &subnet), ("MapPublicIpOnLaunch.Value", "true")],
    )
    .await;
    f.ok(
        "ModifySubnetAttribute",
        &[
            ("SubnetId", &subnet),
            ("PrivateDnsHostnameTypeOnLaunch", "resource-name"),
        ],
    )
    .await;
    f.ok(
        "ModifySubnetAttribute",
        &[("SubnetId", &subnet), ("EnableDns64.Value", "true")],
    )
    .await;
    let xml = f.ok("DescribeSubnets", &[("SubnetId.1", &subnet)]).await;
    assert_eq!(tag(&xml, "mapPublicIpOnLaunch").unwrap(), "true");
    assert_eq!(tag(&xml, "hostnameType").unwrap(), "resource-name");
    assert_eq!(tag(&xml, "enableDns64").unwrap(), "true");
    let e = f
        .err(
            "ModifySubnetAttribute",
            &[("SubnetId", &subnet), ("Ipv6Native.Value", "true")],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    let e = f
        .err(
            "AssociateSubnetCidrBlock",
            &[("SubnetId", &subnet), ("Ipv6CidrBlock", "2600:1f18::/64")],
        )
        .await;
    assert_eq!(e.code, "UnsupportedOperation");
    f.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    f.ok("DisassociateVpcCidrBlock", &[("AssociationId", &assoc)])
        .await;
}

#[tokio::test]
async fn gateways_route_tables_and_routes() {
    let f = fixture();
    // The default VPC as AWS makes it.
    let xml = f
        .ok(
            "DescribeRouteTables",
            &[
                ("Filter.1.Name", "association.main"),
                ("Filter.1.Value.1", "true"),
            ],
        )
        .await;
    assert_eq!(
        tags(&xml, "destinationCidrBlock"),
        ["172.31.0.0/16", "0.0.0.0/0"]
    );
    assert!(tag(&xml, "gatewayId").unwrap() == "local");
    let vpc = f.vpc("10.0.0.0/16").await;
    let subnet = f.subnet(&vpc, "10.0.1.0/24").await;
    let igw = tag(
        &f.ok("CreateInternetGateway", &[]).await,
        "internetGatewayId",
    )
    .unwrap();
    f.ok(
        "AttachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    let second = tag(
        &f.ok("CreateInternetGateway", &[]).await,
        "internetGatewayId",
    )
    .unwrap();
    let before = f.store.revision();
    let e = f
        .err(
            "AttachInternetGateway",
            &[("InternetGatewayId", &second), ("VpcId", &vpc)],
        )
        .await;
    assert_eq!(e.code, "Resource.AlreadyAssociated");
    let e = f
        .err("DeleteInternetGateway", &[("InternetGatewayId", &igw)])
        .await;
    assert_eq!(e.code, "DependencyViolation");
    assert_eq!(f.store.revision(), before);
    let xml = f
        .ok(
            "DescribeInternetGateways",
            &[
                ("Filter.1.Name", "attachment.vpc-id"),
                ("Filter.1.Value.1", &vpc),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "internetGatewayId"), std::slice::from_ref(&igw));

    let xml = f
        .ok(
            "CreateRouteTable",
            &[
                ("VpcId", &vpc),
                ("TagSpecification.1.ResourceType", "route-table"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "public"),
            ],
        )
        .await;
    let rtb = tag(&xml, "routeTableId").unwrap();
    assert_eq!(tags(&xml, "destinationCidrBlock"), ["10.0.0.0/16"]);
    f.ok(
        "CreateRoute",
        &[
            ("RouteTableId", &rtb),
            ("DestinationCidrBlock", "0.0.0.0/0"),
            ("GatewayId", &igw),
        ],
    )
    .await;
    let before = f.store.revision();
    for (pairs, code) in [
        (
            vec![
                ("DestinationCidrBlock", "0.0.0.0/0"),
                ("GatewayId", igw.as_str()),
            ],
            "RouteAlreadyExists",
        ),
        (
            vec![
                ("DestinationCidrBlock", "10.0.0.0/16"),
                ("GatewayId", igw.as_str()),
            ],
            "RouteAlreadyExists",
        ),
        (
            vec![
                ("DestinationCidrBlock", "1.0.0.0/8"),
                ("GatewayId", second.as_str()),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("DestinationCidrBlock", "1.0.0.0/8"),
                ("NatGatewayId", "nat-0123456789abcdef0"),
            ],
            "InvalidNatGatewayID.NotFound",
        ),
        (
            vec![
                ("DestinationCidrBlock", "1.0.0.0/8"),
                ("InstanceId", "i-0123456789abcdef0"),
            ],
            "UnsupportedOperation",
        ),
    ] {
        let mut q = vec![("RouteTableId", rtb.as_str())];
        q.extend(pairs);
        assert_eq!(f.err("CreateRoute", &q).await.code, code, "{q:?}");
    }
    let e = f
        .err(
            "ReplaceRoute",
            &[
                ("RouteTableId", &rtb),
                ("DestinationCidrBlock", "1.0.0.0/8"),
                ("GatewayId", &igw),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidRoute.NotFound");
    let e = f
        .err(
            "DeleteRoute",
            &[
                ("RouteTableId", &rtb),
                ("DestinationCidrBlock", "10.0.0.0/16"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    assert_eq!(f.store.revision(), before);

    // Associations.
    let xml = f
        .ok(
            "AssociateRouteTable",
            &[("RouteTableId", &rtb), ("SubnetId", &subnet)],
        )
        .await;
    let assoc = tag(&xml, "associationId").unwrap();
    let other = tag(
        &f.ok("CreateRouteTable", &[("VpcId", &vpc)]).await,
        "routeTableId",
    )
    .unwrap();
    let e = f
        .err(
            "AssociateRouteTable",
            &[("RouteTableId", &other), ("SubnetId", &subnet)],
        )
        .await;
    assert_eq!(e.code, "Resource.AlreadyAssociated");
    let e = f.err("DeleteRouteTable", &[("RouteTableId", &rtb)]).await;
    assert_eq!(e.code, "DependencyViolation");
    let xml = f
        .ok(
            "DescribeRouteTables",
            &[
                ("Filter.1.Name", "association.subnet-id"),
                ("Filter.1.Value.1", &subnet),
            ],
        )
        .await;
    assert_eq!(tag(&xml, "routeTableId").unwrap(), rtb);
    let xml = f
        .ok(
            "ReplaceRouteTableAssociation",
            &[("AssociationId", &assoc), ("RouteTableId", &other)],
        )
        .await;
    let assoc = tag(&xml, "newAssociationId").unwrap();
    f.ok("DisassociateRouteTable", &[("AssociationId", &assoc)])
        .await;
    let e = f
        .err("DisassociateRouteTable", &[("AssociationId", &assoc)])
        .await;
    assert_eq!(e.code, "InvalidAssociationID.NotFound");
    // The main association moves with ReplaceRouteTableAssociation.
    let xml = f
        .ok(
            "DescribeRouteTables",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "association.main"),
                ("Filter.2.Value.1", "true"),
            ],
        )
        .await;
    let main_assoc = tag(&xml, "routeTableAssociationId").unwrap();
    let old_main = tag(&xml, "routeTableId").unwrap();
    let e = f
        .err("DisassociateRouteTable", &[("AssociationId", &main_assoc)])
        .await;
    assert_eq!(e.code, "InvalidParameterValue");
    f.ok(
        "ReplaceRouteTableAssociation",
        &[("AssociationId", &main_assoc), ("RouteTableId", &rtb)],
    )
    .await;
    let e = f.err("DeleteRouteTable", &[("RouteTableId", &rtb)]).await;
    assert_eq!(e.code, "DependencyViolation");
    // A detached gateway leaves a blackhole.
    f.ok(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    let xml = f
        .ok("DescribeRouteTables", &[("RouteTableId.1", &rtb)])
        .await;
    assert!(xml.contains("<gatewayId>"));
    assert!(xml.contains("<state>blackhole</state>"), "{xml}");
    f.ok(
        "DeleteRoute",
        &[
            ("RouteTableId", &rtb),
            ("DestinationCidrBlock", "0.0.0.0/0"),
        ],
    )
    .await;
    let e = f
        .err(
            "DeleteRoute",
            &[
                ("RouteTableId", &rtb),
                ("DestinationCidrBlock", "0.0.0.0/0"),
            ],
        )
        .await;
    assert_eq!(e.code, "InvalidRoute.NotFound");
    // The VPC goes only once its extra table is gone.
    f.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    let e = f.err("DeleteVpc", &[("VpcId", &vpc)]).await;
    assert_eq!(e.code, "DependencyViolation");
    f.ok("DeleteRouteTable", &[("RouteTableId", &other)]).await;
    f.ok("DeleteRouteTable", &[("RouteTableId", &old_main)])
        .await;
    f.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
}

#[tokio::test]
async fn nat_gateways_and_elastic_ips() {
    let f = fixture();
    let vpc = f.vpc("10.0.0.0/16").await;
    let subnet = f.subnet(&vpc, "10.0.1.0/24").await;
    let xml = f
        .ok(
            "AllocateAddress",
            &[
                ("Domain", "vpc"),
                ("TagSpecification.1.ResourceType", "elastic-ip"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "nat"),
            ],
        )
        .await;
    let alloc = tag(&xml, "allocationId").unwrap();
    assert!(alloc.starts_with("eipalloc-"));
    assert_eq!(tag(&xml, "publicIp").unwrap(), "198.51.100.1");
    // A public NAT gateway in a VPC without an internet gateway fails.
    let xml = f
        .ok(
            "CreateNatGateway",
            &[("SubnetId", &subnet), ("AllocationId", &alloc)],
        )
        .await;
    assert_eq!(tag(&xml, "state").unwrap(), "pending");
    let failed = tag(&xml, "natGatewayId").unwrap();
    let xml = f
        .ok("DescribeNatGateways", &[("NatGatewayId.1", &failed)])
        .await;
    assert_eq!(tag(&xml, "state").unwrap(), "failed");
    assert_eq!(tag(&xml, "failureCode").unwrap(), "Gateway.NotAttached");
    let igw = tag(
        &f.ok("CreateInternetGateway", &[]).await,
        "internetGatewayId",
    )
    .unwrap();
    f.ok(
        "AttachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    let xml = f
        .ok(
            "CreateNatGateway",
            &[
                ("SubnetId", &subnet),
                ("AllocationId", &alloc),
                ("ClientToken", "tok"),
            ],
        )
        .await;
    let nat = tag(&xml, "natGatewayId").unwrap();
    assert_eq!(tag(&xml, "privateIp").unwrap(), "10.0.1.4");
    // Idempotent with its token.
    let again = f
        .ok(
            "CreateNatGateway",
            &[
                ("SubnetId", &subnet),
                ("AllocationId", &alloc),
                ("ClientToken", "tok"),
            ],
        )
        .await;
    assert_eq!(tag(&again, "natGatewayId").unwrap(), nat);
    let xml = f
        .ok(
            "DescribeNatGateways",
            &[
                ("Filter.1.Name", "state"),
                ("Filter.1.Value.1", "available"),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "natGatewayId"), std::slice::from_ref(&nat));
    assert_eq!(tag(&xml, "publicIp").unwrap(), "198.51.100.1");
    // Task interfaces skip the gateway's address.
    let eni = f
        .svc
        .create_task_eni(ACCOUNT, REGION, &subnet, &[], "task")
        .await
        .unwrap();
    assert_eq!(eni.private_ip, "10.0.1.5");
    let before = f.store.revision();
    let e = f.err("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    assert_eq!(e.code, "DependencyViolation");
    let e = f.err("ReleaseAddress", &[("AllocationId", &alloc)]).await;
    assert_eq!(e.code, "InvalidIPAddress.InUse");
    let e = f
        .err(
            "AssociateAddress",
            &[("AllocationId", &alloc), ("NetworkInterfaceId", &eni.id)],
        )
        .await;
    assert_eq!(e.code, "Resource.AlreadyAssociated");
    let e = f
        .err(
            "ReleaseAddress",
            &[("AllocationId", "eipalloc-0123456789abcdef0")],
        )
        .await;
    assert_eq!(e.code, "InvalidAllocationID.NotFound");
    let e = f
        .err(
            "DetachInternetGateway",
            &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
        )
        .await;
    assert_eq!(e.code, "DependencyViolation");
    assert_eq!(f.store.revision(), before);
    // An address on the task's interface.
    let second = tag(&f.ok("AllocateAddress", &[]).await, "allocationId").unwrap();
    let xml = f
        .ok(
            "AssociateAddress",
            &[("AllocationId", &second), ("NetworkInterfaceId", &eni.id)],
        )
        .await;
    let assoc = tag(&xml, "associationId").unwrap();
    assert!(assoc.starts_with("eipassoc-"));
    let xml = f
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &eni.id)],
        )
        .await;
    assert!(xml.contains("<publicIp>198.51.100.2</publicIp>"), "{xml}");
    let xml = f
        .ok(
            "DescribeAddresses",
            &[
                ("Filter.1.Name", "network-interface-id"),
                ("Filter.1.Value.1", &eni.id),
            ],
        )
        .await;
    assert_eq!(tags(&xml, "allocationId"), std::slice::from_ref(&second));
    f.ok("DisassociateAddress", &[("AssociationId", &assoc)])
        .await;
    let e = f
        .err("DisassociateAddress", &[("AssociationId", &assoc)])
        .await;
    assert_eq!(e.code, "InvalidAssociationID.NotFound");
    // Routes to the NAT gateway, and deletion.
    let main = tag(
        &f.ok(
            "DescribeRouteTables",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await,
        "routeTableId",
    )
    .unwrap();
    f.ok(
        "CreateRoute",
        &[
            ("RouteTableId", &main),
            ("DestinationCidrBlock", "0.0.0.0/0"),
            ("NatGatewayId", &nat),
        ],
    )
    .await;
    let xml = f.ok("DeleteNatGateway", &[("NatGatewayId", &nat)]).await;
    assert_eq!(tag(&xml, "natGatewayId").unwrap(), nat);
    let xml = f
        .ok("DescribeNatGateways", &[("NatGatewayId.1", &nat)])
        .await;
    assert_eq!(tag(&xml, "state").unwrap(), "deleted");
    assert!(xml.contains("<deleteTime>"));
    let e = f.err("DeleteNatGateway", &[("NatGatewayId", &nat)]).await;
    assert_eq!(e.code, "InvalidNatGatewayID.NotFound");
    let xml = f
        .ok("DescribeRouteTables", &[("RouteTableId.1", &main)])
        .await;
    assert!(xml.contains("<state>blackhole</state>"));
    f.ok("ReleaseAddress", &[("AllocationId", &alloc)]).await;
    // Five addresses at most.
    for _ in 0..4 {
        f.ok("AllocateAddress", &[]).await;
    }
    assert_eq!(
        f.err("AllocateAddress", &[]).await.code,
        "AddressLimitExceeded"
    );
}
