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
    f.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
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
        "The operation RunInstances is not supported by Berth yet."
    );
    let e = f.err("Frobnicate", &[]).await;
    assert_eq!(e.code, "InvalidAction");
    let e = f.err("DescribeVpcs", &[("DryRun", "true")]).await;
    assert_eq!(e.code, "DryRunOperation");
}
