//! The EC2 actions Berth implements: parse and validate, then one mutation.

use berth_model::AwsError;

use crate::meta::zone_id;
use crate::model::{
    allow_all_egress, default_group, main_route_table, new_id, well_formed, Cidr, Ec2Error,
    EniRecord, Peer, Scope, SgRecord, SgRule, State, SubnetOptions, SubnetRecord, VpcRecord, ZONES,
};
use crate::wire::{
    filters, matches, max_results, page, render_page, render_tags, tag_field, tag_specs, Params,
    Xml,
};
use crate::Ec2Service;

/// The most inbound (and, separately, outbound) rules a security group may
/// have, AWS's default quota.
pub const MAX_RULES_PER_DIRECTION: usize = 60;

pub const IMPLEMENTED: &[&str] = &[
    "CreateVpc",
    "DescribeVpcs",
    "DeleteVpc",
    "CreateSubnet",
    "DescribeSubnets",
    "DeleteSubnet",
    "CreateSecurityGroup",
    "DescribeSecurityGroups",
    "DeleteSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "DescribeNetworkInterfaces",
    // Tags.
    "CreateTags",
    "DeleteTags",
    "DescribeTags",
    // The region and the account.
    "DescribeAvailabilityZones",
    "DescribeRegions",
    "DescribeAccountAttributes",
    // Security group rules.
    "DescribeSecurityGroupRules",
    "ModifySecurityGroupRules",
    "UpdateSecurityGroupRuleDescriptionsIngress",
    "UpdateSecurityGroupRuleDescriptionsEgress",
    // VPC and subnet attributes and blocks.
    "DescribeVpcAttribute",
    "ModifyVpcAttribute",
    "AssociateVpcCidrBlock",
    "DisassociateVpcCidrBlock",
    "AssociateSubnetCidrBlock",
    "DisassociateSubnetCidrBlock",
    "ModifySubnetAttribute",
    // Internet gateways.
    "CreateInternetGateway",
    "AttachInternetGateway",
    "DetachInternetGateway",
    "DeleteInternetGateway",
    "DescribeInternetGateways",
    // Route tables and routes.
    "CreateRouteTable",
    "DeleteRouteTable",
    "DescribeRouteTables",
    "AssociateRouteTable",
    "DisassociateRouteTable",
    "ReplaceRouteTableAssociation",
    "CreateRoute",
    "ReplaceRoute",
    "DeleteRoute",
    // NAT gateways.
    "CreateNatGateway",
    "DeleteNatGateway",
    "DescribeNatGateways",
    // Elastic IPs.
    "AllocateAddress",
    "ReleaseAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "DescribeAddresses",
];

pub async fn handle(
    svc: &Ec2Service,
    scope: &Scope,
    action: &str,
    p: Params,
) -> Result<String, AwsError> {
    match action {
        "CreateVpc" => create_vpc(svc, scope, &p).await,
        "DescribeVpcs" => describe_vpcs(svc, scope, &p),
        "DeleteVpc" => delete_vpc(svc, scope, &p).await,
        "CreateSubnet" => create_subnet(svc, scope, &p).await,
        "DescribeSubnets" => describe_subnets(svc, scope, &p),
        "DeleteSubnet" => delete_subnet(svc, scope, &p).await,
        "CreateSecurityGroup" => create_group(svc, scope, &p).await,
        "DescribeSecurityGroups" => describe_groups(svc, scope, &p),
        "DeleteSecurityGroup" => delete_group(svc, scope, &p).await,
        "AuthorizeSecurityGroupIngress" => authorize(svc, scope, &p, false).await,
        "AuthorizeSecurityGroupEgress" => authorize(svc, scope, &p, true).await,
        "RevokeSecurityGroupIngress" => revoke(svc, scope, &p, false).await,
        "RevokeSecurityGroupEgress" => revoke(svc, scope, &p, true).await,
        "DescribeNetworkInterfaces" => describe_enis(svc, scope, &p),
        "ModifySecurityGroupRules" => modify_rules(svc, scope, &p).await,
        "UpdateSecurityGroupRuleDescriptionsIngress" => {
            update_descriptions(svc, scope, &p, false).await
        }
        "UpdateSecurityGroupRuleDescriptionsEgress" => {
            update_descriptions(svc, scope, &p, true).await
        }
        "DescribeSecurityGroupRules" => describe_rules(svc, scope, &p),
        _ if crate::meta::handles(action) => crate::meta::handle(svc, scope, action, &p).await,
        _ if crate::net::handles(action) => crate::net::handle(svc, scope, action, &p).await,
        _ => Err(AwsError::bad_request(
            "InvalidAction",
            format!("The action {action} is not valid for this web service."),
        )),
    }
}

pub fn returns_true() -> String {
    "<return>true</return>".into()
}

/// An id parameter that must look like `<prefix>-…`.
pub fn check_id(id: &str, prefix: &str, code: &'static str) -> Result<(), Ec2Error> {
    if well_formed(id, prefix) {
        Ok(())
    } else {
        Err(Ec2Error::Malformed(code, id.to_string()))
    }
}

pub fn cidr_param(p: &Params, range_code: &'static str) -> Result<Cidr, Ec2Error> {
    let text = p.required("CidrBlock", "cidrBlock")?;
    let cidr = Cidr::parse(text).ok_or_else(|| {
        Ec2Error::InvalidValue(format!(
            "Value ({text}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
        ))
    })?;
    if !(16..=28).contains(&cidr.len) {
        return Err(Ec2Error::Other(
            range_code,
            format!("The CIDR '{text}' is invalid."),
        ));
    }
    Ok(cidr)
}

// ---- VPCs ---------------------------------------------------------------------

fn render_vpc(x: &mut Xml, scope: &Scope, state: &State, v: &VpcRecord) {
    x.text("vpcId", &v.id)
        .text("ownerId", &scope.account)
        .text("state", "available")
        .text("cidrBlock", &v.cidr)
        .open("cidrBlockAssociationSet");
    for (association, cidr) in v.blocks() {
        x.open("item")
            .text("associationId", association)
            .text("cidrBlock", cidr)
            .open("cidrBlockState")
            .text("state", "associated")
            .close("cidrBlockState")
            .close("item");
    }
    x.close("cidrBlockAssociationSet")
        .open("ipv6CidrBlockAssociationSet")
        .close("ipv6CidrBlockAssociationSet")
        .text("dhcpOptionsId", "default")
        .text("instanceTenancy", "default")
        .bool("isDefault", v.is_default);
    render_tags(x, &state.tags_of(&v.id));
}

async fn create_vpc(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    if p.get("CidrBlock").is_none() {
        return Err(Ec2Error::Missing("cidrBlock").into());
    }
    let cidr = cidr_param(p, "InvalidVpc.Range")?;
    if let Some(t) = p.get("InstanceTenancy").filter(|t| *t != "default") {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({t}) for parameter instanceTenancy is invalid. Berth supports only 'default'."
        ))
        .into());
    }
    let tags = tag_specs(p, "vpc")?;
    let vpc = VpcRecord {
        id: new_id("vpc"),
        cidr: cidr.to_string(),
        association_id: new_id("vpc-cidr-assoc"),
        is_default: false,
        secondary: Vec::new(),
        dns_support: None,
        dns_hostnames: None,
        nau_metrics: false,
    };
    let record = vpc.clone();
    let state = svc
        .mutate(scope, move |state| {
            state.vpcs.insert(record.id.clone(), record.clone());
            let group = default_group(&record.id);
            state.groups.insert(group.id.clone(), group);
            let table = main_route_table(&record.id);
            state.route_tables.insert(table.id.clone(), table);
            set_tags(state, &record.id, &tags);
            Ok(state.clone())
        })
        .await?;
    let mut x = Xml::default();
    x.open("vpc");
    render_vpc(&mut x, scope, &state, &vpc);
    x.close("vpc");
    Ok(x.0)
}

/// Puts `tags` on a resource (replacing values of keys it has).
pub fn set_tags(state: &mut State, id: &str, tags: &[(String, String)]) {
    if tags.is_empty() {
        return;
    }
    let entry = state.tags.entry(id.to_string()).or_default();
    for (k, v) in tags {
        entry.insert(k.clone(), v.clone());
    }
}

fn describe_vpcs(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "vpc-id",
            "cidr",
            "cidr-block",
            "cidr-block-association.cidr-block",
            "cidr-block-association.association-id",
            "cidr-block-association.state",
            "dhcp-options-id",
            "ipv6-cidr-block-association.ipv6-cidr-block",
            "ipv6-cidr-block-association.ipv6-pool",
            "ipv6-cidr-block-association.association-id",
            "ipv6-cidr-block-association.state",
            "is-default",
            "state",
            "owner-id",
            "tag:",
            "tag-key",
        ],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("VpcId");
    let state = svc.read(scope)?;
    for id in &ids {
        state.vpc(id)?;
    }
    let selected: Vec<&VpcRecord> = state
        .vpcs
        .values()
        .filter(|v| ids.is_empty() || ids.contains(&v.id))
        .filter(|v| {
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&v.id), name) {
                    return t;
                }
                match name {
                    "vpc-id" => vec![v.id.clone()],
                    "cidr" => vec![v.cidr.clone()],
                    "cidr-block" | "cidr-block-association.cidr-block" => {
                        v.blocks().iter().map(|(_, c)| c.to_string()).collect()
                    }
                    "cidr-block-association.association-id" => {
                        v.blocks().iter().map(|(a, _)| a.to_string()).collect()
                    }
                    "cidr-block-association.state" => vec!["associated".into()],
                    "dhcp-options-id" => vec!["default".into()],
                    "is-default" => vec![v.is_default.to_string()],
                    "state" => vec!["available".into()],
                    "owner-id" => vec![scope.account.clone()],
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |v| v.id.clone(), limit)?;
    Ok(render_page("vpcSet", selected, &token, |x, v| {
        render_vpc(x, scope, &state, v);
    }))
}

async fn delete_vpc(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("VpcId", "vpcId")?.to_string();
    check_id(&id, "vpc", "InvalidVpcID.Malformed")?;
    svc.mutate(scope, move |state| {
        state.vpc(&id)?;
        // As AWS: subnets, other groups, gateways and route tables beyond
        // the main one must go first; the main table and the default
        // group go with the VPC.
        let busy = state.subnets.values().any(|s| s.vpc_id == id)
            || state
                .groups
                .values()
                .any(|g| g.vpc_id == id && !g.is_default)
            || state
                .igws
                .values()
                .any(|g| g.vpc_id.as_deref() == Some(id.as_str()))
            || state
                .route_tables
                .values()
                .any(|t| t.vpc_id == id && t.main_association.is_none())
            || state.nats.values().any(|n| n.vpc_id == id && n.live());
        if busy {
            return Err(Ec2Error::Dependency(format!(
                "The vpc '{id}' has dependencies and cannot be deleted."
            ))
            .into());
        }
        state.vpcs.remove(&id);
        state.groups.retain(|_, g| g.vpc_id != id);
        state.route_tables.retain(|_, t| t.vpc_id != id);
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

// ---- subnets ------------------------------------------------------------------

fn render_subnet(x: &mut Xml, scope: &Scope, state: &State, s: &SubnetRecord) {
    let size = Cidr::parse(&s.cidr).map_or(0, |c| c.size());
    let available = size.saturating_sub(5 + state.used_addresses(&s.id) as u64);
    x.text("subnetId", &s.id)
        .text(
            "subnetArn",
            &format!(
                "arn:aws:ec2:{}:{}:subnet/{}",
                scope.region, scope.account, s.id
            ),
        )
        .text("state", "available")
        .text("ownerId", &scope.account)
        .text("vpcId", &s.vpc_id)
        .text("cidrBlock", &s.cidr)
        .text("availableIpAddressCount", &available.to_string())
        .text("availabilityZone", &s.availability_zone)
        .text(
            "availabilityZoneId",
            &zone_id(&scope.region, &s.availability_zone),
        )
        .bool("defaultForAz", s.default_for_az)
        .bool("mapPublicIpOnLaunch", s.map_public_ip_on_launch)
        .bool("mapCustomerOwnedIpOnLaunch", false)
        .bool("assignIpv6AddressOnCreation", false)
        .open("ipv6CidrBlockAssociationSet")
        .close("ipv6CidrBlockAssociationSet")
        .bool("enableDns64", s.options.enable_dns64)
        .bool("ipv6Native", false)
        .open("privateDnsNameOptionsOnLaunch")
        .text("hostnameType", s.options.hostname_type())
        .bool(
            "enableResourceNameDnsARecord",
            s.options.resource_name_a_record,
        )
        .bool("enableResourceNameDnsAAAARecord", false)
        .close("privateDnsNameOptionsOnLaunch")
        .open("blockPublicAccessStates")
        .text("internetGatewayBlockMode", "off")
        .close("blockPublicAccessStates");
    render_tags(x, &state.tags_of(&s.id));
}

async fn create_subnet(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let vpc_id = p.required("VpcId", "vpcId")?.to_string();
    check_id(&vpc_id, "vpc", "InvalidVpcID.Malformed")?;
    let cidr = cidr_param(p, "InvalidSubnet.Range")?;
    let zones: Vec<String> = ZONES
        .iter()
        .map(|z| format!("{}{z}", scope.region))
        .collect();
    let zone = match p.get("AvailabilityZone") {
        None => zones[0].clone(),
        Some(z) if zones.iter().any(|k| k == z) => z.to_string(),
        Some(z) => {
            return Err(Ec2Error::InvalidValue(format!(
                "Value ({z}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
                zones.join(", ")
            ))
            .into())
        }
    };
    let tags = tag_specs(p, "subnet")?;
    let subnet = SubnetRecord {
        id: new_id("subnet"),
        vpc_id,
        cidr: cidr.to_string(),
        availability_zone: zone,
        default_for_az: false,
        map_public_ip_on_launch: false,
        options: SubnetOptions::default(),
    };
    let record = subnet.clone();
    let state = svc
        .mutate(scope, move |state| {
            let vpc = state.vpc(&record.vpc_id)?;
            // Any of the VPC's blocks, as AWS.
            let inside = vpc
                .blocks()
                .iter()
                .filter_map(|(_, c)| Cidr::parse(c))
                .any(|c| c.contains(cidr));
            if !inside {
                return Err(Ec2Error::Other(
                    "InvalidSubnet.Range",
                    format!("The CIDR '{cidr}' is invalid."),
                )
                .into());
            }
            let conflict = state
                .subnets
                .values()
                .filter(|s| s.vpc_id == record.vpc_id)
                .any(|s| Cidr::parse(&s.cidr).is_some_and(|c| c.overlaps(cidr)));
            if conflict {
                return Err(Ec2Error::Other(
                    "InvalidSubnet.Conflict",
                    format!("The CIDR '{cidr}' conflicts with another subnet"),
                )
                .into());
            }
            state.subnets.insert(record.id.clone(), record.clone());
            set_tags(state, &record.id, &tags);
            Ok(state.clone())
        })
        .await?;
    let mut x = Xml::default();
    x.open("subnet");
    render_subnet(&mut x, scope, &state, &subnet);
    x.close("subnet");
    Ok(x.0)
}

fn describe_subnets(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "vpc-id",
            "subnet-id",
            "subnet-arn",
            "availability-zone",
            "availabilityZone",
            "availability-zone-id",
            "available-ip-address-count",
            "customer-owned-ipv4-pool",
            "default-for-az",
            "defaultForAz",
            "enable-dns64",
            "enable-lni-at-device-index",
            "ipv6-cidr-block-association.ipv6-cidr-block",
            "ipv6-cidr-block-association.association-id",
            "ipv6-cidr-block-association.state",
            "ipv6-native",
            "map-customer-owned-ip-on-launch",
            "map-public-ip-on-launch",
            "outpost-arn",
            "private-dns-name-options-on-launch.hostname-type",
            "private-dns-name-options-on-launch.enable-resource-name-dns-a-record",
            "private-dns-name-options-on-launch.enable-resource-name-dns-aaaa-record",
            "cidr-block",
            "cidr",
            "cidrBlock",
            "state",
            "owner-id",
            "tag:",
            "tag-key",
        ],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("SubnetId");
    let state = svc.read(scope)?;
    for id in &ids {
        state.subnet(id)?;
    }
    let selected: Vec<&SubnetRecord> = state
        .subnets
        .values()
        .filter(|s| ids.is_empty() || ids.contains(&s.id))
        .filter(|s| {
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&s.id), name) {
                    return t;
                }
                let size = Cidr::parse(&s.cidr).map_or(0, |c| c.size());
                match name {
                    "vpc-id" => vec![s.vpc_id.clone()],
                    "subnet-id" => vec![s.id.clone()],
                    "subnet-arn" => vec![format!(
                        "arn:aws:ec2:{}:{}:subnet/{}",
                        scope.region, scope.account, s.id
                    )],
                    "availability-zone" | "availabilityZone" => {
                        vec![s.availability_zone.clone()]
                    }
                    "availability-zone-id" => vec![zone_id(&scope.region, &s.availability_zone)],
                    "available-ip-address-count" => vec![size
                        .saturating_sub(5 + state.used_addresses(&s.id) as u64)
                        .to_string()],
                    "default-for-az" | "defaultForAz" => vec![s.default_for_az.to_string()],
                    "enable-dns64" => vec![s.options.enable_dns64.to_string()],
                    "ipv6-native" | "map-customer-owned-ip-on-launch" => vec!["false".into()],
                    "map-public-ip-on-launch" => vec![s.map_public_ip_on_launch.to_string()],
                    "private-dns-name-options-on-launch.hostname-type" => {
                        vec![s.options.hostname_type().to_string()]
                    }
                    "private-dns-name-options-on-launch.enable-resource-name-dns-a-record" => {
                        vec![s.options.resource_name_a_record.to_string()]
                    }
                    "private-dns-name-options-on-launch.enable-resource-name-dns-aaaa-record" => {
                        vec!["false".into()]
                    }
                    "cidr-block" | "cidr" | "cidrBlock" => vec![s.cidr.clone()],
                    "state" => vec!["available".into()],
                    "owner-id" => vec![scope.account.clone()],
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |s| s.id.clone(), limit)?;
    Ok(render_page("subnetSet", selected, &token, |x, s| {
        render_subnet(x, scope, &state, s);
    }))
}

async fn delete_subnet(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("SubnetId", "subnetId")?.to_string();
    check_id(&id, "subnet", "InvalidSubnetID.Malformed")?;
    svc.mutate(scope, move |state| {
        state.subnet(&id)?;
        let busy = state.enis.values().any(|e| e.subnet_id == id)
            || state.nats.values().any(|n| n.subnet_id == id && n.live());
        if busy {
            return Err(Ec2Error::Dependency(format!(
                "The subnet '{id}' has dependencies and cannot be deleted."
            ))
            .into());
        }
        state.subnets.remove(&id);
        // Its route table association goes with it, as on AWS.
        for table in state.route_tables.values_mut() {
            table
                .associations
                .retain(|a| a.subnet_id.as_deref() != Some(id.as_str()));
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

// ---- security groups -------------------------------------------------------------

/// Renders rules as EC2's `IpPermission`s: one per protocol and port range.
fn render_permissions(x: &mut Xml, element: &str, scope: &Scope, rules: &[SgRule]) {
    type Ports = (Option<i32>, Option<i32>);
    let mut groups: Vec<(&str, Ports, Vec<&SgRule>)> = Vec::new();
    for r in rules {
        let ports = (r.from_port, r.to_port);
        match groups
            .iter_mut()
            .find(|(p, range, _)| *p == r.protocol && *range == ports)
        {
            Some(g) => g.2.push(r),
            None => groups.push((&r.protocol, ports, vec![r])),
        }
    }
    x.open(element);
    for (protocol, (from, to), rules) in groups {
        x.open("item").text("ipProtocol", protocol);
        if let Some(from) = from {
            x.text("fromPort", &from.to_string());
        }
        if let Some(to) = to {
            x.text("toPort", &to.to_string());
        }
        x.open("groups");
        for r in &rules {
            if let Peer::Group(g) = &r.peer {
                x.open("item")
                    .text("userId", &scope.account)
                    .text("groupId", g);
                if let Some(d) = &r.description {
                    x.text("description", d);
                }
                x.close("item");
            }
        }
        x.close("groups").open("ipRanges");
        for r in &rules {
            if let Peer::Cidr(c) = &r.peer {
                x.open("item").text("cidrIp", c);
                if let Some(d) = &r.description {
                    x.text("description", d);
                }
                x.close("item");
            }
        }
        x.close("ipRanges")
            .open("ipv6Ranges")
            .close("ipv6Ranges")
            .open("prefixListIds")
            .close("prefixListIds")
            .close("item");
    }
    x.close(element);
}

fn render_group(x: &mut Xml, scope: &Scope, state: &State, g: &SgRecord) {
    x.text("ownerId", &scope.account)
        .text("groupId", &g.id)
        .text("groupName", &g.name)
        .text("groupDescription", &g.description)
        .text("vpcId", &g.vpc_id)
        .text(
            "securityGroupArn",
            &format!(
                "arn:aws:ec2:{}:{}:security-group/{}",
                scope.region, scope.account, g.id
            ),
        );
    render_permissions(x, "ipPermissions", scope, &g.ingress);
    render_permissions(x, "ipPermissionsEgress", scope, &g.egress);
    render_tags(x, &state.tags_of(&g.id));
}

/// The group a request names by `GroupId`, or by `GroupName` in the default VPC.
fn named_group(state: &State, id: Option<&str>, name: Option<&str>) -> Result<String, AwsError> {
    if let Some(id) = id {
        return Ok(state.group(id)?.id.clone());
    }
    let Some(name) = name else {
        return Err(Ec2Error::Missing("groupName or groupId").into());
    };
    let found = state
        .default_vpc()
        .and_then(|vpc| state.group_named(&vpc.id, name));
    match found {
        Some(g) => Ok(g.id.clone()),
        None => Err(Ec2Error::Other(
            "InvalidGroup.NotFound",
            match state.default_vpc() {
                Some(vpc) => format!(
                    "The security group '{name}' does not exist in default VPC '{}'",
                    vpc.id
                ),
                None => format!("The security group '{name}' does not exist"),
            },
        )
        .into()),
    }
}

async fn create_group(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let name = p.required("GroupName", "groupName")?.to_string();
    let description = p
        .required("GroupDescription", "groupDescription")?
        .to_string();
    if name.chars().count() > 255 {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({name}) for parameter groupName is invalid. Group names may be at most 255 characters."
        ))
        .into());
    }
    if name.to_ascii_lowercase().starts_with("sg-") {
        return Err(Ec2Error::InvalidValue(
            "Group names may not be in the format sg-*.".to_string(),
        )
        .into());
    }
    if description.chars().count() > 255 {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({description}) for parameter GroupDescription is invalid. Descriptions may be at most 255 characters."
        ))
        .into());
    }
    let vpc_id = p.get("VpcId").map(str::to_string);
    if let Some(v) = &vpc_id {
        check_id(v, "vpc", "InvalidVpcID.Malformed")?;
    }
    let tags = tag_specs(p, "security-group")?;
    let tag_list = tags.clone();
    let id = new_id("sg");
    let egress = allow_all_egress();
    let group_id = id.clone();
    svc.mutate(scope, move |state| {
        let vpc_id = match &vpc_id {
            Some(v) => state.vpc(v)?.id.clone(),
            None => state
                .default_vpc()
                .ok_or_else(|| {
                    Ec2Error::Other("VPCIdNotSpecified", "No default VPC for this user".into())
                })?
                .id
                .clone(),
        };
        if state.group_named(&vpc_id, &name).is_some() {
            return Err(Ec2Error::Other(
                "InvalidGroup.Duplicate",
                format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
            )
            .into());
        }
        let group = SgRecord {
            id: group_id.clone(),
            vpc_id,
            name: name.clone(),
            description: description.clone(),
            is_default: false,
            ingress: Vec::new(),
            egress: vec![egress.clone()],
        };
        state.groups.insert(group.id.clone(), group);
        set_tags(state, &group_id, &tags);
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("groupId", &id).text(
        "securityGroupArn",
        &format!(
            "arn:aws:ec2:{}:{}:security-group/{id}",
            scope.region, scope.account
        ),
    );
    let tag_refs: Vec<(&str, &str)> = tag_list
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    render_tags(&mut x, &tag_refs);
    Ok(x.0)
}

fn describe_groups(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "description",
            "egress.ip-permission.cidr",
            "egress.ip-permission.from-port",
            "egress.ip-permission.group-id",
            "egress.ip-permission.group-name",
            "egress.ip-permission.ipv6-cidr",
            "egress.ip-permission.prefix-list-id",
            "egress.ip-permission.protocol",
            "egress.ip-permission.to-port",
            "egress.ip-permission.user-id",
            "group-id",
            "group-name",
            "ip-permission.cidr",
            "ip-permission.from-port",
            "ip-permission.group-id",
            "ip-permission.group-name",
            "ip-permission.ipv6-cidr",
            "ip-permission.prefix-list-id",
            "ip-permission.protocol",
            "ip-permission.to-port",
            "ip-permission.user-id",
            "owner-id",
            "tag:",
            "tag-key",
            "vpc-id",
        ],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("GroupId");
    let names = p.list("GroupName");
    let state = svc.read(scope)?;
    for id in &ids {
        state.group(id)?;
    }
    let mut by_name = Vec::new();
    for name in &names {
        by_name.push(named_group(&state, None, Some(name))?);
    }
    let rule_field = |rules: &[SgRule], field: &str| -> Vec<String> {
        rules
            .iter()
            .filter_map(|r| match field {
                "cidr" => match &r.peer {
                    Peer::Cidr(c) => Some(c.clone()),
                    Peer::Group(_) => None,
                },
                "group-id" => match &r.peer {
                    Peer::Group(g) => Some(g.clone()),
                    Peer::Cidr(_) => None,
                },
                "group-name" => match &r.peer {
                    Peer::Group(g) => state.groups.get(g).map(|g| g.name.clone()),
                    Peer::Cidr(_) => None,
                },
                "user-id" => match &r.peer {
                    Peer::Group(_) => Some(scope.account.clone()),
                    Peer::Cidr(_) => None,
                },
                "from-port" => Some(r.from_port.unwrap_or(-1).to_string()),
                "to-port" => Some(r.to_port.unwrap_or(-1).to_string()),
                "protocol" => Some(r.protocol.clone()),
                _ => None,
            })
            .collect()
    };
    let selected: Vec<&SgRecord> = state
        .groups
        .values()
        .filter(|g| {
            (ids.is_empty() && names.is_empty()) || ids.contains(&g.id) || by_name.contains(&g.id)
        })
        .filter(|g| {
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&g.id), name) {
                    return t;
                }
                if let Some(field) = name.strip_prefix("egress.ip-permission.") {
                    return rule_field(&g.egress, field);
                }
                if let Some(field) = name.strip_prefix("ip-permission.") {
                    return rule_field(&g.ingress, field);
                }
                match name {
                    "vpc-id" => vec![g.vpc_id.clone()],
                    "group-name" => vec![g.name.clone()],
                    "group-id" => vec![g.id.clone()],
                    "description" => vec![g.description.clone()],
                    "owner-id" => vec![scope.account.clone()],
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |g| g.id.clone(), limit)?;
    Ok(render_page(
        "securityGroupInfo",
        selected,
        &token,
        |x, g| {
            render_group(x, scope, &state, g);
        },
    ))
}

async fn delete_group(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.get("GroupId").map(str::to_string);
    let name = p.get("GroupName").map(str::to_string);
    if id.is_none() && name.is_none() {
        return Err(Ec2Error::Missing("groupName or groupId").into());
    }
    let deleted = svc
        .mutate(scope, move |state| {
            let id = named_group(state, id.as_deref(), name.as_deref())?;
            let group = state.group(&id)?;
            if group.is_default {
                return Err(Ec2Error::Other(
                    "CannotDelete",
                    format!(
                        "the specified group: \"{id}\" name: \"{}\" cannot be deleted by a user",
                        group.name
                    ),
                )
                .into());
            }
            let referenced = state.groups.values().any(|g| {
                g.id != id
                    && g.ingress
                        .iter()
                        .chain(&g.egress)
                        .any(|r| r.peer == Peer::Group(id.clone()))
            });
            let in_use = state.enis.values().any(|e| e.group_ids.contains(&id));
            if referenced || in_use {
                return Err(
                    Ec2Error::Dependency(format!("resource {id} has a dependent object")).into(),
                );
            }
            state.groups.remove(&id);
            Ok(id)
        })
        .await?;
    let mut x = Xml::default();
    x.text("return", "true").text("groupId", &deleted);
    Ok(x.0)
}

/// Normalizes an IP protocol as EC2 stores it.
fn protocol(text: &str) -> Result<String, Ec2Error> {
    let lower = text.to_ascii_lowercase();
    let normal = match lower.as_str() {
        "tcp" | "6" => "tcp",
        "udp" | "17" => "udp",
        "icmp" | "1" => "icmp",
        "-1" | "all" => "-1",
        other => {
            return match other.parse::<u8>() {
                Ok(n) => Ok(n.to_string()),
                Err(_) => Err(Ec2Error::InvalidValue(format!(
                    "Invalid value '{text}' for IP protocol. Unknown protocol."
                ))),
            }
        }
    };
    Ok(normal.to_string())
}

/// The rules of a request's `IpPermissions` (or the legacy top-level
/// `IpProtocol`/`FromPort`/`ToPort`/`CidrIp`), with group peers unresolved.
fn parse_rules(p: &Params) -> Result<Vec<SgRule>, Ec2Error> {
    let mut perms = p.structs("IpPermissions");
    if perms.is_empty() {
        if let Some(proto) = p.get("IpProtocol") {
            let mut fields = vec![("IpProtocol".to_string(), proto.to_string())];
            for (from, to) in [
                ("FromPort", "FromPort"),
                ("ToPort", "ToPort"),
                ("CidrIp", "IpRanges.1.CidrIp"),
            ] {
                if let Some(v) = p.get(from) {
                    fields.push((to.to_string(), v.to_string()));
                }
            }
            perms.push(Params(fields));
        }
    }
    if perms.is_empty() {
        return Err(Ec2Error::Missing("ipPermissions"));
    }
    let mut rules = Vec::new();
    for perm in perms {
        let proto = protocol(perm.required("IpProtocol", "ipProtocol")?)?;
        let (from, to) = ports(&proto, perm.int("FromPort")?, perm.int("ToPort")?)?;
        if !perm.structs("Ipv6Ranges").is_empty() || !perm.structs("PrefixListIds").is_empty() {
            return Err(Ec2Error::InvalidValue(
                "IPv6 ranges and prefix lists are not supported by Berth.".into(),
            ));
        }
        let mut peers = Vec::new();
        for range in perm.structs("IpRanges") {
            let text = range.required("CidrIp", "cidrIp")?;
            peers.push((
                cidr_peer(text)?,
                range.get("Description").map(str::to_string),
            ));
        }
        let mut pairs = perm.structs("Groups");
        pairs.extend(perm.structs("UserIdGroupPairs"));
        for pair in pairs {
            let group = pair.required("GroupId", "groupId")?;
            check_id(group, "sg", "InvalidGroupId.Malformed")?;
            peers.push((
                Peer::Group(group.to_string()),
                pair.get("Description").map(str::to_string),
            ));
        }
        if peers.is_empty() {
            return Err(Ec2Error::Missing("ipRanges or groups"));
        }
        for (peer, description) in peers {
            rules.push(SgRule {
                id: new_id("sgr"),
                protocol: proto.clone(),
                from_port: from,
                to_port: to,
                peer,
                description,
            });
        }
    }
    Ok(rules)
}

fn cidr_peer(text: &str) -> Result<Peer, Ec2Error> {
    let cidr = Cidr::parse(text)
        .ok_or_else(|| Ec2Error::InvalidValue(format!("CIDR block {text} is malformed")))?;
    Ok(Peer::Cidr(cidr.to_string()))
}

/// A rule's port range (ICMP type and code) for its protocol, checked.
fn ports(
    proto: &str,
    from: Option<i32>,
    to: Option<i32>,
) -> Result<(Option<i32>, Option<i32>), Ec2Error> {
    Ok(match proto {
            "tcp" | "udp" => match (from, to) {
                (Some(f), Some(t)) if (0..=65535).contains(&f) && (f..=65535).contains(&t) => {
                    (Some(f), Some(t))
                }
                (Some(f), Some(t)) => {
                    return Err(Ec2Error::InvalidValue(format!(
                        "Invalid port range: from port {f} to port {t}. Ports must be 0-65535 with from <= to."
                    )))
                }
                _ => {
                    return Err(Ec2Error::InvalidValue(
                        "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange".into(),
                    ))
                }
            },
            "icmp" => {
                let f = from.unwrap_or(-1);
                let t = to.unwrap_or(-1);
                if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) {
                    return Err(Ec2Error::InvalidValue(format!(
                        "Invalid value for ICMP type {f} or code {t}; both must be -1 to 255."
                    )));
                }
                (Some(f), Some(t))
            }
            _ => (None, None),
    })
}

fn describe_rule(r: &SgRule) -> String {
    let peer = match &r.peer {
        Peer::Cidr(c) => c.clone(),
        Peer::Group(g) => g.clone(),
    };
    let proto = if r.protocol == "-1" {
        "ALL".to_string()
    } else {
        r.protocol.to_ascii_uppercase()
    };
    format!(
        "peer: {peer}, {proto}, from port: {}, to port: {}, ALLOW",
        r.from_port.map_or("None".into(), |p| p.to_string()),
        r.to_port.map_or("None".into(), |p| p.to_string()),
    )
}

fn group_param(p: &Params) -> Result<(Option<String>, Option<String>), Ec2Error> {
    let id = p.get("GroupId").map(str::to_string);
    let name = p.get("GroupName").map(str::to_string);
    if id.is_none() && name.is_none() {
        return Err(Ec2Error::Missing("groupId"));
    }
    if let Some(id) = &id {
        check_id(id, "sg", "InvalidGroupId.Malformed")?;
    }
    Ok((id, name))
}

async fn authorize(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
    egress: bool,
) -> Result<String, AwsError> {
    let (id, name) = group_param(p)?;
    let rules = parse_rules(p)?;
    let tags = tag_specs(p, "security-group-rule")?;
    let (group_id, added, state) = svc
        .mutate(scope, move |state| {
            let id = named_group(state, id.as_deref(), name.as_deref())?;
            for r in &rules {
                if let Peer::Group(g) = &r.peer {
                    state.group(g)?;
                }
            }
            let group = state.group(&id)?;
            let existing = if egress {
                &group.egress
            } else {
                &group.ingress
            };
            for (i, r) in rules.iter().enumerate() {
                if existing.iter().chain(&rules[..i]).any(|e| e.same_as(r)) {
                    return Err(Ec2Error::Other(
                        "InvalidPermission.Duplicate",
                        format!("the specified rule \"{}\" already exists", describe_rule(r)),
                    )
                    .into());
                }
            }
            if existing.len() + rules.len() > MAX_RULES_PER_DIRECTION {
                return Err(rules_limit().into());
            }
            let group = state
                .groups
                .get_mut(&id)
                .ok_or_else(|| Ec2Error::GroupNotFound(id.clone()))?;
            let list = if egress {
                &mut group.egress
            } else {
                &mut group.ingress
            };
            list.extend(rules.iter().cloned());
            for r in &rules {
                set_tags(state, &r.id, &tags);
            }
            Ok((id, rules.clone(), state.clone()))
        })
        .await?;
    let mut x = Xml::default();
    x.text("return", "true").open("securityGroupRuleSet");
    for r in &added {
        x.open("item");
        render_rule(&mut x, scope, &state, &group_id, egress, r);
        x.close("item");
    }
    x.close("securityGroupRuleSet");
    Ok(x.0)
}

fn rules_limit() -> Ec2Error {
    Ec2Error::Other(
        "RulesPerSecurityGroupLimitExceeded",
        "The maximum number of rules per security group has been reached.".into(),
    )
}

/// One `SecurityGroupRule`.
fn render_rule(
    x: &mut Xml,
    scope: &Scope,
    state: &State,
    group_id: &str,
    egress: bool,
    r: &SgRule,
) {
    x.text("securityGroupRuleId", &r.id)
        .text("groupId", group_id)
        .text("groupOwnerId", &scope.account)
        .bool("isEgress", egress)
        .text("ipProtocol", &r.protocol)
        .text("fromPort", &r.from_port.unwrap_or(-1).to_string())
        .text("toPort", &r.to_port.unwrap_or(-1).to_string());
    match &r.peer {
        Peer::Cidr(c) => {
            x.text("cidrIpv4", c);
        }
        Peer::Group(g) => {
            x.open("referencedGroupInfo")
                .text("groupId", g)
                .text("userId", &scope.account);
            if let Some(group) = state.groups.get(g) {
                x.text("vpcId", &group.vpc_id);
            }
            x.close("referencedGroupInfo");
        }
    }
    if let Some(d) = &r.description {
        x.text("description", d);
    }
    render_tags(x, &state.tags_of(&r.id));
    x.text(
        "securityGroupRuleArn",
        &format!(
            "arn:aws:ec2:{}:{}:security-group-rule/{}",
            scope.region, scope.account, r.id
        ),
    );
}

fn describe_rules(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &["group-id", "security-group-rule-id", "tag:", "tag-key"],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("SecurityGroupRuleId");
    let state = svc.read(scope)?;
    for id in &ids {
        if state.rule(id).is_none() {
            return Err(rule_not_found(id).into());
        }
    }
    let mut rules: Vec<(&SgRecord, &SgRule, bool)> = state
        .groups
        .values()
        .flat_map(|g| {
            g.ingress
                .iter()
                .map(move |r| (g, r, false))
                .chain(g.egress.iter().map(move |r| (g, r, true)))
        })
        .filter(|(_, r, _)| ids.is_empty() || ids.contains(&r.id))
        .filter(|(g, r, _)| {
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&r.id), name) {
                    return t;
                }
                match name {
                    "group-id" => vec![g.id.clone()],
                    "security-group-rule-id" => vec![r.id.clone()],
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    rules.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    let (rules, token) = page(p, rules, |(_, r, _)| r.id.clone(), limit)?;
    Ok(render_page(
        "securityGroupRuleSet",
        rules,
        &token,
        |x, (g, r, egress)| {
            render_rule(x, scope, &state, &g.id, egress, r);
        },
    ))
}

fn rule_not_found(id: &str) -> Ec2Error {
    Ec2Error::Other(
        "InvalidSecurityGroupRuleId.NotFound",
        format!("The security group rule ID '{id}' does not exist"),
    )
}

/// ModifySecurityGroupRules: each named rule of the group takes the given
/// protocol, ports, peer and description, keeping its id (and so its tags).
async fn modify_rules(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let group_id = p.required("GroupId", "GroupId")?.to_string();
    check_id(&group_id, "sg", "InvalidGroupId.Malformed")?;
    let updates = p.structs("SecurityGroupRule");
    if updates.is_empty() {
        return Err(Ec2Error::Missing("SecurityGroupRule").into());
    }
    let mut changes: Vec<SgRule> = Vec::new();
    for u in &updates {
        let id = u.required("SecurityGroupRuleId", "SecurityGroupRuleId")?;
        let rule = Params(
            u.0.iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("SecurityGroupRule.")
                        .map(|k| (k.to_string(), v.clone()))
                })
                .collect(),
        );
        let proto = protocol(rule.required("IpProtocol", "IpProtocol")?)?;
        let (from, to) = ports(&proto, rule.int("FromPort")?, rule.int("ToPort")?)?;
        if rule.get("CidrIpv6").is_some() || rule.get("PrefixListId").is_some() {
            return Err(Ec2Error::InvalidValue(
                "IPv6 ranges and prefix lists are not supported by Berth.".into(),
            )
            .into());
        }
        let peer = match (rule.get("CidrIpv4"), rule.get("ReferencedGroupId")) {
            (Some(c), None) => cidr_peer(c)?,
            (None, Some(g)) => {
                check_id(g, "sg", "InvalidGroupId.Malformed")?;
                Peer::Group(g.to_string())
            }
            _ => {
                return Err(Ec2Error::Other(
                    "InvalidParameterCombination",
                    "Exactly one of CidrIpv4, CidrIpv6, PrefixListId and ReferencedGroupId must be specified.".into(),
                )
                .into())
            }
        };
        changes.push(SgRule {
            id: id.to_string(),
            protocol: proto,
            from_port: from,
            to_port: to,
            peer,
            description: rule.get("Description").map(str::to_string),
        });
    }
    svc.mutate(scope, move |state| {
        state.group(&group_id)?;
        for c in &changes {
            if let Peer::Group(g) = &c.peer {
                state.group(g)?;
            }
            match state.rule(&c.id) {
                Some((g, _, _)) if g.id == group_id => {}
                _ => return Err(rule_not_found(&c.id).into()),
            }
        }
        let group = state
            .groups
            .get_mut(&group_id)
            .ok_or_else(|| Ec2Error::GroupNotFound(group_id.clone()))?;
        for list in [&mut group.ingress, &mut group.egress] {
            for c in &changes {
                if let Some(slot) = list.iter().position(|r| r.id == c.id) {
                    list[slot] = c.clone();
                }
            }
            for (i, r) in list.iter().enumerate() {
                if list[..i].iter().any(|e| e.same_as(r)) {
                    return Err(Ec2Error::Other(
                        "InvalidPermission.Duplicate",
                        format!("the specified rule \"{}\" already exists", describe_rule(r)),
                    )
                    .into());
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

/// UpdateSecurityGroupRuleDescriptions{Ingress,Egress}: by rule id
/// (`SecurityGroupRuleDescription.N`) or by matching `IpPermissions`
/// (each range's or pair's description; none removes it).
async fn update_descriptions(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
    egress: bool,
) -> Result<String, AwsError> {
    let (id, name) = group_param(p)?;
    let by_id: Vec<(String, Option<String>)> = p
        .structs("SecurityGroupRuleDescription")
        .iter()
        .map(|d| {
            Ok((
                d.required("SecurityGroupRuleId", "SecurityGroupRuleId")?
                    .to_string(),
                d.get("Description").map(str::to_string),
            ))
        })
        .collect::<Result<_, Ec2Error>>()?;
    let by_rule = if by_id.is_empty() {
        parse_rules(p)?
    } else {
        Vec::new()
    };
    for d in by_id
        .iter()
        .filter_map(|(_, d)| d.as_ref())
        .chain(by_rule.iter().filter_map(|r| r.description.as_ref()))
    {
        if d.chars().count() > 255 {
            return Err(Ec2Error::InvalidValue(format!(
                "Value ({d}) for parameter Description is invalid. Descriptions may be at most 255 characters."
            ))
            .into());
        }
    }
    svc.mutate(scope, move |state| {
        let id = named_group(state, id.as_deref(), name.as_deref())?;
        let group = state
            .groups
            .get_mut(&id)
            .ok_or_else(|| Ec2Error::GroupNotFound(id.clone()))?;
        let list = if egress {
            &mut group.egress
        } else {
            &mut group.ingress
        };
        for (rule_id, description) in &by_id {
            let rule = list
                .iter_mut()
                .find(|r| &r.id == rule_id)
                .ok_or_else(|| rule_not_found(rule_id))?;
            rule.description = description.clone();
        }
        for wanted in &by_rule {
            let rule = list.iter_mut().find(|r| r.same_as(wanted)).ok_or_else(|| {
                Ec2Error::Other(
                    "InvalidPermission.NotFound",
                    "The specified rule does not exist in this security group.".into(),
                )
            })?;
            rule.description = wanted.description.clone();
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

async fn revoke(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
    egress: bool,
) -> Result<String, AwsError> {
    let (id, name) = group_param(p)?;
    let rule_ids = p.list("SecurityGroupRuleId");
    let rules = if rule_ids.is_empty() {
        parse_rules(p)?
    } else {
        Vec::new()
    };
    svc.mutate(scope, move |state| {
        let id = named_group(state, id.as_deref(), name.as_deref())?;
        let group = state
            .groups
            .get_mut(&id)
            .ok_or_else(|| Ec2Error::GroupNotFound(id.clone()))?;
        let list = if egress {
            &mut group.egress
        } else {
            &mut group.ingress
        };
        for rule_id in &rule_ids {
            if !list.iter().any(|r| &r.id == rule_id) {
                return Err(Ec2Error::Other(
                    "InvalidSecurityGroupRuleId.NotFound",
                    format!("The security group rule ID '{rule_id}' does not exist"),
                )
                .into());
            }
        }
        for r in &rules {
            if !list.iter().any(|e| e.same_as(r)) {
                return Err(Ec2Error::Other(
                    "InvalidPermission.NotFound",
                    "The specified rule does not exist in this security group.".into(),
                )
                .into());
            }
        }
        list.retain(|e| !rule_ids.contains(&e.id) && !rules.iter().any(|r| r.same_as(e)));
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

// ---- network interfaces ------------------------------------------------------------

fn render_eni(x: &mut Xml, scope: &Scope, state: &State, e: &EniRecord) {
    let dns = private_dns_name(&scope.region, &e.private_ip);
    x.text("networkInterfaceId", &e.id)
        .text("subnetId", &e.subnet_id)
        .text("vpcId", &e.vpc_id)
        .text("availabilityZone", &e.availability_zone)
        .text("description", &e.description)
        .text("ownerId", &scope.account)
        .bool("requesterManaged", true)
        .text("status", "in-use")
        .opt_text("requesterId", e.requester_id.as_deref())
        .text("macAddress", &e.mac)
        .text("privateIpAddress", &e.private_ip)
        .text("privateDnsName", &dns)
        .bool("sourceDestCheck", true);
    let eip = state
        .eips
        .values()
        .find(|a| a.association.as_ref().is_some_and(|s| s.eni_id == e.id));
    if let Some(eip) = eip {
        render_eni_association(x, scope, eip);
    }
    x.open("groupSet");
    for g in &e.group_ids {
        x.open("item").text("groupId", g);
        if let Some(group) = state.groups.get(g) {
            x.text("groupName", &group.name);
        }
        x.close("item");
    }
    x.close("groupSet")
        .open("privateIpAddressesSet")
        .open("item")
        .text("privateIpAddress", &e.private_ip)
        .text("privateDnsName", &dns)
        .bool("primary", true)
        .close("item")
        .close("privateIpAddressesSet")
        .open("ipv6AddressesSet")
        .close("ipv6AddressesSet")
        .text(
            "interfaceType",
            e.interface_type.as_deref().unwrap_or("interface"),
        );
    render_tags(x, &state.tags_of(&e.id));
}

/// An interface's `association` with its elastic IP.
fn render_eni_association(x: &mut Xml, scope: &Scope, eip: &crate::model::EipRecord) {
    x.open("association")
        .text("publicIp", &eip.public_ip)
        .text("ipOwnerId", &scope.account)
        .text("allocationId", &eip.allocation_id);
    if let Some(a) = &eip.association {
        x.text("associationId", &a.id);
    }
    x.close("association");
}

fn private_dns_name(region: &str, ip: &str) -> String {
    berth_model::dns_registry::private_dns_name(region, ip)
}

fn describe_enis(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "association.allocation-id",
            "association.association-id",
            "addresses.association.owner-id",
            "addresses.association.public-ip",
            "addresses.primary",
            "addresses.private-ip-address",
            "association.ip-owner-id",
            "association.public-ip",
            "association.public-dns-name",
            "attachment.attach-time",
            "attachment.attachment-id",
            "attachment.delete-on-termination",
            "attachment.device-index",
            "attachment.instance-id",
            "attachment.instance-owner-id",
            "attachment.status",
            "availability-zone",
            "availability-zone-id",
            "description",
            "group-id",
            "group-name",
            "ipv6-addresses.ipv6-address",
            "interface-type",
            "mac-address",
            "network-interface-id",
            "operator.managed",
            "operator.principal",
            "owner-id",
            "private-dns-name",
            "private-ip-address",
            "requester-id",
            "requester-managed",
            "source-dest-check",
            "status",
            "subnet-id",
            "tag:",
            "tag-key",
            "vpc-id",
        ],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("NetworkInterfaceId");
    let state = svc.read(scope)?;
    for id in &ids {
        if !state.enis.contains_key(id) {
            return Err(Ec2Error::EniNotFound(id.clone()).into());
        }
    }
    let selected: Vec<&EniRecord> = state
        .enis
        .values()
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .filter(|e| {
            let eip = state
                .eips
                .values()
                .find(|a| a.association.as_ref().is_some_and(|s| s.eni_id == e.id));
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&e.id), name) {
                    return t;
                }
                match name {
                    "network-interface-id" => vec![e.id.clone()],
                    "subnet-id" => vec![e.subnet_id.clone()],
                    "vpc-id" => vec![e.vpc_id.clone()],
                    "group-id" => e.group_ids.clone(),
                    "group-name" => e
                        .group_ids
                        .iter()
                        .filter_map(|g| state.groups.get(g).map(|g| g.name.clone()))
                        .collect(),
                    "availability-zone" => vec![e.availability_zone.clone()],
                    "availability-zone-id" => vec![zone_id(&scope.region, &e.availability_zone)],
                    "private-ip-address" | "addresses.private-ip-address" => {
                        vec![e.private_ip.clone()]
                    }
                    "private-dns-name" => vec![private_dns_name(&scope.region, &e.private_ip)],
                    "addresses.primary" | "source-dest-check" | "requester-managed" => {
                        vec!["true".into()]
                    }
                    "operator.managed" => vec!["false".into()],
                    "mac-address" => vec![e.mac.clone()],
                    "status" => vec!["in-use".into()],
                    "description" => vec![e.description.clone()],
                    "interface-type" => {
                        vec![e
                            .interface_type
                            .clone()
                            .unwrap_or_else(|| "interface".into())]
                    }
                    "requester-id" => e.requester_id.clone().into_iter().collect(),
                    "owner-id" => vec![scope.account.clone()],
                    "association.allocation-id" => {
                        eip.map(|a| a.allocation_id.clone()).into_iter().collect()
                    }
                    "association.association-id" => eip
                        .and_then(|a| a.association.as_ref().map(|s| s.id.clone()))
                        .into_iter()
                        .collect(),
                    "association.public-ip" | "addresses.association.public-ip" => {
                        eip.map(|a| a.public_ip.clone()).into_iter().collect()
                    }
                    "association.ip-owner-id" | "addresses.association.owner-id" => {
                        eip.map(|_| scope.account.clone()).into_iter().collect()
                    }
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |e| e.id.clone(), limit)?;
    Ok(render_page(
        "networkInterfaceSet",
        selected,
        &token,
        |x, e| {
            render_eni(x, scope, &state, e);
        },
    ))
}
