//! The EC2 actions Berth implements: parse and validate, then one mutation.

use berth_model::AwsError;

use crate::model::{
    allow_all_egress, default_group, new_id, well_formed, Cidr, Ec2Error, EniRecord, Peer, Scope,
    SgRecord, SgRule, State, SubnetRecord, VpcRecord, ZONES,
};
use crate::wire::{filters, matches, Params, Xml};
use crate::Ec2Service;

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
        _ => Err(AwsError::bad_request(
            "InvalidAction",
            format!("The action {action} is not valid for this web service."),
        )),
    }
}

fn returns_true() -> String {
    "<return>true</return>".into()
}

/// An id parameter that must look like `<prefix>-…`.
fn check_id(id: &str, prefix: &str, code: &'static str) -> Result<(), Ec2Error> {
    if well_formed(id, prefix) {
        Ok(())
    } else {
        Err(Ec2Error::Malformed(code, id.to_string()))
    }
}

fn cidr_param(p: &Params, range_code: &'static str) -> Result<Cidr, Ec2Error> {
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

fn render_vpc(x: &mut Xml, scope: &Scope, v: &VpcRecord) {
    x.text("vpcId", &v.id)
        .text("ownerId", &scope.account)
        .text("state", "available")
        .text("cidrBlock", &v.cidr)
        .open("cidrBlockAssociationSet")
        .open("item")
        .text("associationId", &v.association_id)
        .text("cidrBlock", &v.cidr)
        .open("cidrBlockState")
        .text("state", "associated")
        .close("cidrBlockState")
        .close("item")
        .close("cidrBlockAssociationSet")
        .text("dhcpOptionsId", "default")
        .text("instanceTenancy", "default")
        .bool("isDefault", v.is_default)
        .open("tagSet")
        .close("tagSet");
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
    let vpc = VpcRecord {
        id: new_id("vpc"),
        cidr: cidr.to_string(),
        association_id: new_id("vpc-cidr-assoc"),
        is_default: false,
    };
    let record = vpc.clone();
    svc.mutate(scope, move |state| {
        state.vpcs.insert(record.id.clone(), record.clone());
        let group = default_group(&record.id);
        state.groups.insert(group.id.clone(), group);
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.open("vpc");
    render_vpc(&mut x, scope, &vpc);
    x.close("vpc");
    Ok(x.0)
}

fn describe_vpcs(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "vpc-id",
            "cidr",
            "cidr-block",
            "is-default",
            "state",
            "owner-id",
        ],
    )?;
    let ids = p.list("VpcId");
    let state = svc.read(scope)?;
    for id in &ids {
        state.vpc(id)?;
    }
    let mut x = Xml::default();
    x.open("vpcSet");
    for v in state.vpcs.values() {
        if !ids.is_empty() && !ids.contains(&v.id) {
            continue;
        }
        let ok = matches(&filters, |name| match name {
            "vpc-id" => vec![v.id.clone()],
            "cidr" | "cidr-block" => vec![v.cidr.clone()],
            "is-default" => vec![v.is_default.to_string()],
            "state" => vec!["available".into()],
            "owner-id" => vec![scope.account.clone()],
            _ => Vec::new(),
        });
        if ok {
            x.open("item");
            render_vpc(&mut x, scope, v);
            x.close("item");
        }
    }
    x.close("vpcSet");
    Ok(x.0)
}

async fn delete_vpc(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("VpcId", "vpcId")?.to_string();
    check_id(&id, "vpc", "InvalidVpcID.Malformed")?;
    svc.mutate(scope, move |state| {
        state.vpc(&id)?;
        let busy = state.subnets.values().any(|s| s.vpc_id == id)
            || state
                .groups
                .values()
                .any(|g| g.vpc_id == id && !g.is_default);
        if busy {
            return Err(Ec2Error::Dependency(format!(
                "The vpc '{id}' has dependencies and cannot be deleted."
            ))
            .into());
        }
        state.vpcs.remove(&id);
        state.groups.retain(|_, g| g.vpc_id != id);
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

// ---- subnets ------------------------------------------------------------------

fn render_subnet(x: &mut Xml, scope: &Scope, state: &State, s: &SubnetRecord) {
    let size = Cidr::parse(&s.cidr).map_or(0, |c| c.size());
    let available = size.saturating_sub(5 + state.used_addresses(&s.id) as u64);
    let zone_index = ZONES
        .iter()
        .position(|z| s.availability_zone.ends_with(z))
        .map_or(1, |i| i + 1);
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
            &format!("{}-az{zone_index}", scope.region),
        )
        .bool("defaultForAz", s.default_for_az)
        .bool("mapPublicIpOnLaunch", s.map_public_ip_on_launch)
        .bool("assignIpv6AddressOnCreation", false)
        .open("ipv6CidrBlockAssociationSet")
        .close("ipv6CidrBlockAssociationSet")
        .open("tagSet")
        .close("tagSet");
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
    let subnet = SubnetRecord {
        id: new_id("subnet"),
        vpc_id,
        cidr: cidr.to_string(),
        availability_zone: zone,
        default_for_az: false,
        map_public_ip_on_launch: false,
    };
    let record = subnet.clone();
    let state = svc
        .mutate(scope, move |state| {
            let vpc = state.vpc(&record.vpc_id)?;
            let vpc_cidr = Cidr::parse(&vpc.cidr)
                .ok_or_else(|| AwsError::internal("a stored VPC has an invalid CIDR block"))?;
            if !vpc_cidr.contains(cidr) {
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
            "availability-zone",
            "availabilityZone",
            "default-for-az",
            "defaultForAz",
            "cidr-block",
            "cidr",
            "cidrBlock",
            "state",
            "owner-id",
        ],
    )?;
    let ids = p.list("SubnetId");
    let state = svc.read(scope)?;
    for id in &ids {
        state.subnet(id)?;
    }
    let mut x = Xml::default();
    x.open("subnetSet");
    for s in state.subnets.values() {
        if !ids.is_empty() && !ids.contains(&s.id) {
            continue;
        }
        let ok = matches(&filters, |name| match name {
            "vpc-id" => vec![s.vpc_id.clone()],
            "subnet-id" => vec![s.id.clone()],
            "availability-zone" | "availabilityZone" => vec![s.availability_zone.clone()],
            "default-for-az" | "defaultForAz" => vec![s.default_for_az.to_string()],
            "cidr-block" | "cidr" | "cidrBlock" => vec![s.cidr.clone()],
            "state" => vec!["available".into()],
            "owner-id" => vec![scope.account.clone()],
            _ => Vec::new(),
        });
        if ok {
            x.open("item");
            render_subnet(&mut x, scope, &state, s);
            x.close("item");
        }
    }
    x.close("subnetSet");
    Ok(x.0)
}

async fn delete_subnet(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("SubnetId", "subnetId")?.to_string();
    check_id(&id, "subnet", "InvalidSubnetID.Malformed")?;
    svc.mutate(scope, move |state| {
        state.subnet(&id)?;
        if state.enis.values().any(|e| e.subnet_id == id) {
            return Err(Ec2Error::Dependency(format!(
                "The subnet '{id}' has dependencies and cannot be deleted."
            ))
            .into());
        }
        state.subnets.remove(&id);
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

fn render_group(x: &mut Xml, scope: &Scope, g: &SgRecord) {
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
    x.open("tagSet").close("tagSet");
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
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("groupId", &id)
        .text(
            "securityGroupArn",
            &format!(
                "arn:aws:ec2:{}:{}:security-group/{id}",
                scope.region, scope.account
            ),
        )
        .open("tagSet")
        .close("tagSet");
    Ok(x.0)
}

fn describe_groups(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "vpc-id",
            "group-name",
            "group-id",
            "description",
            "owner-id",
        ],
    )?;
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
    let mut x = Xml::default();
    x.open("securityGroupInfo");
    for g in state.groups.values() {
        if (!ids.is_empty() || !names.is_empty())
            && !ids.contains(&g.id)
            && !by_name.contains(&g.id)
        {
            continue;
        }
        let ok = matches(&filters, |name| match name {
            "vpc-id" => vec![g.vpc_id.clone()],
            "group-name" => vec![g.name.clone()],
            "group-id" => vec![g.id.clone()],
            "description" => vec![g.description.clone()],
            "owner-id" => vec![scope.account.clone()],
            _ => Vec::new(),
        });
        if ok {
            x.open("item");
            render_group(&mut x, scope, g);
            x.close("item");
        }
    }
    x.close("securityGroupInfo");
    Ok(x.0)
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
        let from = perm.int("FromPort")?;
        let to = perm.int("ToPort")?;
        let (from, to) = match proto.as_str() {
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
        };
        if !perm.structs("Ipv6Ranges").is_empty() || !perm.structs("PrefixListIds").is_empty() {
            return Err(Ec2Error::InvalidValue(
                "IPv6 ranges and prefix lists are not supported by Berth.".into(),
            ));
        }
        let mut peers = Vec::new();
        for range in perm.structs("IpRanges") {
            let text = range.required("CidrIp", "cidrIp")?;
            let cidr = Cidr::parse(text)
                .ok_or_else(|| Ec2Error::InvalidValue(format!("CIDR block {text} is malformed")))?;
            peers.push((
                Peer::Cidr(cidr.to_string()),
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
    let (group_id, added) = svc
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
            Ok((id, rules.clone()))
        })
        .await?;
    let mut x = Xml::default();
    x.text("return", "true").open("securityGroupRuleSet");
    for r in &added {
        x.open("item")
            .text("securityGroupRuleId", &r.id)
            .text("groupId", &group_id)
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
                    .text("userId", &scope.account)
                    .close("referencedGroupInfo");
            }
        }
        if let Some(d) = &r.description {
            x.text("description", d);
        }
        x.close("item");
    }
    x.close("securityGroupRuleSet");
    Ok(x.0)
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
        .text("macAddress", &e.mac)
        .text("privateIpAddress", &e.private_ip)
        .text("privateDnsName", &dns)
        .bool("sourceDestCheck", true)
        .open("groupSet");
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
        .text("interfaceType", "interface")
        .open("tagSet")
        .close("tagSet");
}

fn private_dns_name(region: &str, ip: &str) -> String {
    berth_model::dns_registry::private_dns_name(region, ip)
}

fn describe_enis(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "network-interface-id",
            "subnet-id",
            "vpc-id",
            "group-id",
            "availability-zone",
            "private-ip-address",
            "addresses.private-ip-address",
            "mac-address",
            "status",
            "description",
            "interface-type",
            "owner-id",
            "requester-managed",
        ],
    )?;
    let ids = p.list("NetworkInterfaceId");
    let state = svc.read(scope)?;
    for id in &ids {
        if !state.enis.contains_key(id) {
            return Err(Ec2Error::EniNotFound(id.clone()).into());
        }
    }
    let mut x = Xml::default();
    x.open("networkInterfaceSet");
    for e in state.enis.values() {
        if !ids.is_empty() && !ids.contains(&e.id) {
            continue;
        }
        let ok = matches(&filters, |name| match name {
            "network-interface-id" => vec![e.id.clone()],
            "subnet-id" => vec![e.subnet_id.clone()],
            "vpc-id" => vec![e.vpc_id.clone()],
            "group-id" => e.group_ids.clone(),
            "availability-zone" => vec![e.availability_zone.clone()],
            "private-ip-address" | "addresses.private-ip-address" => vec![e.private_ip.clone()],
            "mac-address" => vec![e.mac.clone()],
            "status" => vec!["in-use".into()],
            "description" => vec![e.description.clone()],
            "interface-type" => vec!["interface".into()],
            "owner-id" => vec![scope.account.clone()],
            "requester-managed" => vec!["true".into()],
            _ => Vec::new(),
        });
        if ok {
            x.open("item");
            render_eni(&mut x, scope, &state, e);
            x.close("item");
        }
    }
    x.close("networkInterfaceSet");
    Ok(x.0)
}
