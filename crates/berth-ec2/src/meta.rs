//! What tools read around a VPC besides the network itself: tags, the
//! region's zones, the regions, the account's attributes, VPC and subnet
//! attributes and secondary CIDR blocks.

use berth_model::AwsError;

use crate::api::{check_id, returns_true};
use crate::model::{new_id, Cidr, CidrAssociation, Ec2Error, Scope, State, ZONES};
use crate::wire::{
    check_tag, filters, matches, max_results, page, render_page, tag_field, Params, Xml, MAX_TAGS,
};
use crate::Ec2Service;

const ACTIONS: &[&str] = &[
    "CreateTags",
    "DeleteTags",
    "DescribeTags",
    "DescribeAvailabilityZones",
    "DescribeRegions",
    "DescribeAccountAttributes",
    "DescribeVpcAttribute",
    "ModifyVpcAttribute",
    "AssociateVpcCidrBlock",
    "DisassociateVpcCidrBlock",
    "AssociateSubnetCidrBlock",
    "DisassociateSubnetCidrBlock",
    "ModifySubnetAttribute",
];

pub fn handles(action: &str) -> bool {
    ACTIONS.contains(&action)
}

pub async fn handle(
    svc: &Ec2Service,
    scope: &Scope,
    action: &str,
    p: &Params,
) -> Result<String, AwsError> {
    match action {
        "CreateTags" => create_tags(svc, scope, p).await,
        "DeleteTags" => delete_tags(svc, scope, p).await,
        "DescribeTags" => describe_tags(svc, scope, p),
        "DescribeAvailabilityZones" => describe_zones(scope, p),
        "DescribeRegions" => describe_regions(scope, p),
        "DescribeAccountAttributes" => describe_account_attributes(svc, scope, p),
        "DescribeVpcAttribute" => describe_vpc_attribute(svc, scope, p),
        "ModifyVpcAttribute" => modify_vpc_attribute(svc, scope, p).await,
        "AssociateVpcCidrBlock" => associate_vpc_cidr(svc, scope, p).await,
        "DisassociateVpcCidrBlock" => disassociate_vpc_cidr(svc, scope, p).await,
        "AssociateSubnetCidrBlock" => associate_subnet_cidr(svc, scope, p),
        "DisassociateSubnetCidrBlock" => disassociate_subnet_cidr(svc, scope, p),
        "ModifySubnetAttribute" => modify_subnet_attribute(svc, scope, p).await,
        _ => Err(AwsError::bad_request(
            "InvalidAction",
            format!("The action {action} is not valid for this web service."),
        )),
    }
}

// ---- regions and zones ------------------------------------------------------------

/// The regions Berth answers for, with their names as AWS writes them.
/// Berth serves any region a request is signed for; these are the ones
/// DescribeRegions lists (plus the caller's own, when it is another).
pub const REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "US East (N. Virginia)"),
    ("us-east-2", "US East (Ohio)"),
    ("us-west-1", "US West (N. California)"),
    ("us-west-2", "US West (Oregon)"),
    ("ca-central-1", "Canada (Central)"),
    ("sa-east-1", "South America (Sao Paulo)"),
    ("eu-central-1", "Europe (Frankfurt)"),
    ("eu-west-1", "Europe (Ireland)"),
    ("eu-west-2", "Europe (London)"),
    ("eu-west-3", "Europe (Paris)"),
    ("eu-north-1", "Europe (Stockholm)"),
    ("ap-south-1", "Asia Pacific (Mumbai)"),
    ("ap-northeast-1", "Asia Pacific (Tokyo)"),
    ("ap-northeast-2", "Asia Pacific (Seoul)"),
    ("ap-northeast-3", "Asia Pacific (Osaka)"),
    ("ap-southeast-1", "Asia Pacific (Singapore)"),
    ("ap-southeast-2", "Asia Pacific (Sydney)"),
];

fn region_long_name(region: &str) -> String {
    REGIONS
        .iter()
        .find(|(r, _)| *r == region)
        .map_or_else(|| region.to_string(), |(_, name)| name.to_string())
}

/// AWS's short code of a region in zone ids: `us-east-1` → `use1`,
/// `ap-southeast-2` → `apse2`, `eu-central-1` → `euc1`.
fn region_code(region: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    let [area, direction, number] = parts.as_slice() else {
        return region.replace('-', "");
    };
    let dir = match *direction {
        "northeast" => "ne",
        "northwest" => "nw",
        "southeast" => "se",
        "southwest" => "sw",
        other => other.get(..1).unwrap_or(""),
    };
    format!("{area}{dir}{number}")
}

/// The zone id of `zone` (`us-east-1a` → `use1-az1`).
pub fn zone_id(region: &str, zone: &str) -> String {
    let index = ZONES
        .iter()
        .position(|z| zone.strip_prefix(region) == Some(z))
        .map_or(1, |i| i + 1);
    format!("{}-az{index}", region_code(region))
}

fn describe_zones(scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "group-long-name",
            "group-name",
            "message",
            "opt-in-status",
            "parent-zone-id",
            "parent-zone-name",
            "region-name",
            "state",
            "zone-id",
            "zone-name",
            "zone-type",
        ],
    )?;
    p.bool("AllAvailabilityZones")?;
    let region = &scope.region;
    let zones: Vec<(String, String)> = ZONES
        .iter()
        .map(|z| {
            let name = format!("{region}{z}");
            let id = zone_id(region, &name);
            (name, id)
        })
        .collect();
    let names = p.list("ZoneName");
    let ids = p.list("ZoneId");
    for n in &names {
        if !zones.iter().any(|(z, _)| z == n) {
            return Err(Ec2Error::InvalidValue(format!("Invalid availability zone: [{n}]")).into());
        }
    }
    for i in &ids {
        if !zones.iter().any(|(_, z)| z == i) {
            return Err(Ec2Error::InvalidValue(format!("Invalid availability zone: [{i}]")).into());
        }
    }
    let long = region_long_name(region);
    let mut x = Xml::default();
    x.open("availabilityZoneInfo");
    for (name, id) in &zones {
        if (!names.is_empty() || !ids.is_empty()) && !names.contains(name) && !ids.contains(id) {
            continue;
        }
        let group_long = format!("{long} {}", id.rsplit("az").next().unwrap_or("1"));
        let ok = matches(&filters, |f| match f {
            "group-long-name" => vec![group_long.clone()],
            "group-name" | "region-name" => vec![region.clone()],
            "opt-in-status" => vec!["opt-in-not-required".into()],
            "state" => vec!["available".into()],
            "zone-id" => vec![id.clone()],
            "zone-name" => vec![name.clone()],
            "zone-type" => vec!["availability-zone".into()],
            _ => Vec::new(),
        });
        if !ok {
            continue;
        }
        x.open("item")
            .text("optInStatus", "opt-in-not-required")
            .open("messageSet")
            .close("messageSet")
            .text("regionName", region)
            .text("zoneName", name)
            .text("zoneId", id)
            .text("groupName", region)
            .text("networkBorderGroup", region)
            .text("zoneType", "availability-zone")
            .text("groupLongName", &group_long)
            .text("zoneState", "available")
            .close("item");
    }
    x.close("availabilityZoneInfo");
    Ok(x.0)
}

fn describe_regions(scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(p, &["endpoint", "opt-in-status", "region-name"])?;
    p.bool("AllRegions")?;
    let mut regions: Vec<&str> = REGIONS.iter().map(|(r, _)| *r).collect();
    if !regions.contains(&scope.region.as_str()) {
        regions.push(&scope.region);
    }
    let names = p.list("RegionName");
    for n in &names {
        if !regions.contains(&n.as_str()) {
            return Err(
                Ec2Error::Other("InvalidParameterValue", format!("Invalid region: {n}")).into(),
            );
        }
    }
    let mut x = Xml::default();
    x.open("regionInfo");
    for r in regions {
        if !names.is_empty() && !names.iter().any(|n| n == r) {
            continue;
        }
        let endpoint = format!("ec2.{r}.amazonaws.com");
        let ok = matches(&filters, |f| match f {
            "endpoint" => vec![endpoint.clone()],
            "opt-in-status" => vec!["opt-in-not-required".into()],
            "region-name" => vec![r.to_string()],
            _ => Vec::new(),
        });
        if ok {
            x.open("item")
                .text("regionName", r)
                .text("regionEndpoint", &endpoint)
                .text("optInStatus", "opt-in-not-required")
                .close("item");
        }
    }
    x.close("regionInfo");
    Ok(x.0)
}

/// DescribeAccountAttributes' names, in AWS's order.
const ACCOUNT_ATTRIBUTES: &[&str] = &[
    "supported-platforms",
    "default-vpc",
    "max-instances",
    "vpc-max-security-groups-per-interface",
    "max-elastic-ips",
    "vpc-max-elastic-ips",
];

fn describe_account_attributes(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let asked = p.list("AttributeName");
    for a in &asked {
        if !ACCOUNT_ATTRIBUTES.contains(&a.as_str()) {
            return Err(Ec2Error::InvalidValue(format!(
                "Value ({a}) for parameter attributeName is invalid. Unknown attribute name."
            ))
            .into());
        }
    }
    let state = svc.read(scope)?;
    let default_vpc = state
        .default_vpc()
        .map_or_else(|| "none".to_string(), |v| v.id.clone());
    let mut x = Xml::default();
    x.open("accountAttributeSet");
    for name in ACCOUNT_ATTRIBUTES {
        if !asked.is_empty() && !asked.iter().any(|a| a == name) {
            continue;
        }
        let value = match *name {
            "supported-platforms" => "VPC".to_string(),
            "default-vpc" => default_vpc.clone(),
            // Berth runs containers, never EC2 instances.
            "max-instances" => "0".to_string(),
            "vpc-max-security-groups-per-interface" => crate::model::MAX_GROUPS_PER_ENI.to_string(),
            _ => crate::model::MAX_EIPS.to_string(),
        };
        x.open("item")
            .text("attributeName", name)
            .open("attributeValueSet")
            .open("item")
            .text("attributeValue", &value)
            .close("item")
            .close("attributeValueSet")
            .close("item");
    }
    x.close("accountAttributeSet");
    Ok(x.0)
}

// ---- tags ---------------------------------------------------------------------------

/// `Tag.N.Key`/`Tag.N.Value` of CreateTags/DeleteTags.
fn tag_params(p: &Params) -> Vec<(String, Option<String>)> {
    p.structs("Tag")
        .iter()
        .map(|t| {
            (
                t.get("Key").unwrap_or("").to_string(),
                t.get("Value").map(str::to_string),
            )
        })
        .collect()
}

/// The error EC2 gives for an id of `kind` that does not exist.
pub fn not_found(id: &str) -> Ec2Error {
    let (code, what) = match id.split_once('-').map(|(p, _)| p) {
        Some("vpc") => ("InvalidVpcID.NotFound", "vpc ID"),
        Some("subnet") => ("InvalidSubnetID.NotFound", "subnet ID"),
        Some("sg") => ("InvalidGroup.NotFound", "security group"),
        Some("sgr") => (
            "InvalidSecurityGroupRuleId.NotFound",
            "security group rule ID",
        ),
        Some("eni") => ("InvalidNetworkInterfaceID.NotFound", "networkInterface ID"),
        Some("igw") => ("InvalidInternetGatewayID.NotFound", "internetGateway ID"),
        Some("rtb") => ("InvalidRouteTableID.NotFound", "routeTable ID"),
        Some("nat") => ("InvalidNatGatewayID.NotFound", "natGateway ID"),
        Some("eipalloc") => ("InvalidAllocationID.NotFound", "allocation ID"),
        _ => {
            return Ec2Error::Other("InvalidID", format!("The ID '{id}' is not valid"));
        }
    };
    Ec2Error::Other(code, format!("The {what} '{id}' does not exist"))
}

fn resources(p: &Params) -> Result<Vec<String>, Ec2Error> {
    let ids = p.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::Missing("resourceIdSet"));
    }
    Ok(ids)
}

async fn create_tags(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let ids = resources(p)?;
    let tags = tag_params(p);
    if tags.is_empty() {
        return Err(Ec2Error::Missing("tagSet").into());
    }
    for (k, v) in &tags {
        check_tag(k, v.as_deref().unwrap_or(""))?;
    }
    svc.mutate(scope, move |state| {
        for id in &ids {
            if state.resource_type(id).is_none() {
                return Err(not_found(id).into());
            }
        }
        for id in &ids {
            let entry = state.tags.entry(id.clone()).or_default();
            for (k, v) in &tags {
                entry.insert(k.clone(), v.clone().unwrap_or_default());
            }
            if entry.len() > MAX_TAGS {
                return Err(Ec2Error::Other(
                    "TagLimitExceeded",
                    "The maximum number of Tags for a resource has been reached.".into(),
                )
                .into());
            }
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

async fn delete_tags(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let ids = resources(p)?;
    let tags = tag_params(p);
    for (k, _) in &tags {
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(Ec2Error::InvalidValue(
                "Tag keys starting with 'aws:' are reserved for internal use".into(),
            )
            .into());
        }
    }
    svc.mutate(scope, move |state| {
        for id in &ids {
            if state.resource_type(id).is_none() {
                return Err(not_found(id).into());
            }
        }
        for id in &ids {
            let Some(entry) = state.tags.get_mut(id) else {
                continue;
            };
            if tags.is_empty() {
                // No keys: every tag, as EC2.
                entry.clear();
            }
            for (k, v) in &tags {
                // A value given removes the tag only when it has that value.
                if v.as_ref().is_none_or(|v| entry.get(k) == Some(v)) {
                    entry.remove(k);
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

fn describe_tags(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(p, &["key", "resource-id", "resource-type", "tag:", "value"])?;
    let limit = max_results(p, 5, 1000)?;
    let state = svc.read(scope)?;
    let mut rows: Vec<(String, &str, &str, &str)> = Vec::new();
    for (id, tags) in &state.tags {
        let Some(kind) = state.resource_type(id) else {
            continue;
        };
        let all = state.tags_of(id);
        for (k, v) in tags {
            let ok = matches(&filters, |f| {
                if f.starts_with("tag:") {
                    return tag_field(&all, f).unwrap_or_default();
                }
                match f {
                    "key" => vec![k.clone()],
                    "value" => vec![v.clone()],
                    "resource-id" => vec![id.clone()],
                    "resource-type" => vec![kind.to_string()],
                    _ => Vec::new(),
                }
            });
            if ok {
                rows.push((format!("{id}\u{0}{k}"), id, k, v));
            }
        }
    }
    let (rows, token) = page(p, rows, |r| r.0.clone(), limit)?;
    Ok(render_page("tagSet", rows, &token, |x, (_, id, k, v)| {
        let kind = state.resource_type(id).unwrap_or("");
        x.text("resourceId", id)
            .text("resourceType", kind)
            .text("key", k)
            .text("value", v);
    }))
}

// ---- VPC attributes and blocks ----------------------------------------------------

const VPC_ATTRIBUTES: [(&str, &str); 3] = [
    ("enableDnsSupport", "EnableDnsSupport"),
    ("enableDnsHostnames", "EnableDnsHostnames"),
    (
        "enableNetworkAddressUsageMetrics",
        "EnableNetworkAddressUsageMetrics",
    ),
];

fn describe_vpc_attribute(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("VpcId", "vpcId")?;
    check_id(id, "vpc", "InvalidVpcID.Malformed")?;
    let attribute = p.required("Attribute", "attribute")?;
    if !VPC_ATTRIBUTES.iter().any(|(a, _)| *a == attribute) {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({attribute}) for parameter attribute is invalid. Unknown attribute."
        ))
        .into());
    }
    let state = svc.read(scope)?;
    let vpc = state.vpc(id)?;
    let value = match attribute {
        "enableDnsSupport" => vpc.dns_support(),
        "enableDnsHostnames" => vpc.dns_hostnames(),
        _ => vpc.nau_metrics,
    };
    let mut x = Xml::default();
    x.text("vpcId", &vpc.id)
        .open(attribute)
        .bool("value", value)
        .close(attribute);
    Ok(x.0)
}

async fn modify_vpc_attribute(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let id = p.required("VpcId", "vpcId")?.to_string();
    check_id(&id, "vpc", "InvalidVpcID.Malformed")?;
    let mut given: Vec<(&str, bool)> = Vec::new();
    for (attr, param) in VPC_ATTRIBUTES {
        if let Some(v) = p.bool(&format!("{param}.Value"))? {
            given.push((attr, v));
        }
    }
    let (attribute, value) = match given.as_slice() {
        [one] => *one,
        [] => {
            return Err(Ec2Error::Missing(
                "enableDnsSupport, enableDnsHostnames or enableNetworkAddressUsageMetrics",
            )
            .into())
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(a, _)| *a).collect();
            return Err(Ec2Error::Other(
                "InvalidParameterCombination",
                format!(
                    "Fields for multiple attribute types specified: {}",
                    names.join(", ")
                ),
            )
            .into());
        }
    };
    svc.mutate(scope, move |state| {
        let vpc = state
            .vpcs
            .get_mut(&id)
            .ok_or_else(|| Ec2Error::VpcNotFound(id.clone()))?;
        match attribute {
            "enableDnsSupport" => vpc.dns_support = Some(value),
            "enableDnsHostnames" => {
                if value && !vpc.dns_support() {
                    return Err(Ec2Error::InvalidValue(
                        "Cannot enable DNS hostnames: the VPC does not support DNS resolution (enableDnsSupport is false).".into(),
                    )
                    .into());
                }
                vpc.dns_hostnames = Some(value);
            }
            _ => vpc.nau_metrics = value,
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

/// The most IPv4 blocks a VPC may have (primary included), AWS's default.
const MAX_VPC_BLOCKS: usize = 5;

/// The RFC 1918 range a block is in, if any.
fn private_range(c: Cidr) -> Option<&'static str> {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .into_iter()
        .find(|r| Cidr::parse(r).is_some_and(|r| r.contains(c)))
}

fn ipv6_unsupported(what: &str) -> AwsError {
    Ec2Error::Other(
        "UnsupportedOperation",
        format!(
            "{what}: Berth's VPCs are IPv4-only; task networking has no IPv6 data path, so Berth does not allocate IPv6 blocks."
        ),
    )
    .into()
}

async fn associate_vpc_cidr(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let id = p.required("VpcId", "vpcId")?.to_string();
    check_id(&id, "vpc", "InvalidVpcID.Malformed")?;
    let ipv6 = p.bool("AmazonProvidedIpv6CidrBlock")? == Some(true)
        || [
            "Ipv6CidrBlock",
            "Ipv6Pool",
            "Ipv6IpamPoolId",
            "Ipv6NetmaskLength",
        ]
        .iter()
        .any(|k| p.get(k).is_some());
    if ipv6 {
        return Err(ipv6_unsupported("IPv6 CIDR blocks are not available"));
    }
    if p.get("Ipv4IpamPoolId").is_some() || p.get("Ipv4NetmaskLength").is_some() {
        return Err(Ec2Error::Other(
            "UnsupportedOperation",
            "Berth has no IP Address Manager (IPAM) pools; give the block with CidrBlock.".into(),
        )
        .into());
    }
    if p.get("CidrBlock").is_none() {
        return Err(Ec2Error::Missing("cidrBlock or amazonProvidedIpv6CidrBlock").into());
    }
    let cidr = crate::api::cidr_param(p, "InvalidVpc.Range")?;
    let association = CidrAssociation {
        association_id: new_id("vpc-cidr-assoc"),
        cidr: cidr.to_string(),
    };
    let assoc = association.clone();
    svc.mutate(scope, move |state| {
        let vpc = state
            .vpcs
            .get_mut(&id)
            .ok_or_else(|| Ec2Error::VpcNotFound(id.clone()))?;
        let blocks: Vec<Cidr> = vpc
            .blocks()
            .iter()
            .filter_map(|(_, c)| Cidr::parse(c))
            .collect();
        if blocks.iter().any(|b| b.overlaps(cidr)) {
            return Err(Ec2Error::Other(
                "InvalidVpc.Range",
                format!("The CIDR '{cidr}' conflicts with another CIDR block of network '{id}'."),
            )
            .into());
        }
        // AWS's restriction: a VPC whose primary block is in one RFC 1918
        // range cannot add a block from another.
        if let (Some(primary), Some(range)) = (
            blocks.first().and_then(|b| private_range(*b)),
            private_range(cidr),
        ) {
            if primary != range {
                return Err(Ec2Error::Other(
                    "InvalidVpc.Range",
                    format!("The CIDR '{cidr}' is restricted. Use a CIDR from the same private address range as the current VPC CIDR, or use a publicly-routable CIDR."),
                )
                .into());
            }
        }
        if blocks.len() >= MAX_VPC_BLOCKS {
            return Err(Ec2Error::Other(
                "CidrLimitExceeded",
                format!("This network '{id}' has met its maximum number of allowed CIDRs: {MAX_VPC_BLOCKS}"),
            )
            .into());
        }
        vpc.secondary.push(assoc.clone());
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("vpcId", p.get("VpcId").unwrap_or(""))
        .open("cidrBlockAssociation")
        .text("associationId", &association.association_id)
        .text("cidrBlock", &association.cidr)
        .open("cidrBlockState")
        .text("state", "associating")
        .close("cidrBlockState")
        .close("cidrBlockAssociation");
    Ok(x.0)
}

async fn disassociate_vpc_cidr(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let association = p.required("AssociationId", "associationId")?.to_string();
    let (vpc_id, cidr) = svc
        .mutate(scope, move |state| {
            let not_found = || {
                Ec2Error::Other(
                    "InvalidVpcCidrBlockAssociationID.NotFound",
                    format!("The vpc CIDR block association ID '{association}' does not exist"),
                )
            };
            let vpc = state
                .vpcs
                .values()
                .find(|v| v.blocks().iter().any(|(a, _)| *a == association))
                .ok_or_else(not_found)?
                .clone();
            if vpc.association_id == association {
                return Err(Ec2Error::Other(
                    "OperationNotPermitted",
                    format!(
                        "The vpc {} primary CIDR block {} cannot be disassociated.",
                        vpc.id, vpc.cidr
                    ),
                )
                .into());
            }
            let block = vpc
                .secondary
                .iter()
                .find(|a| a.association_id == association)
                .ok_or_else(not_found)?
                .clone();
            let cidr = Cidr::parse(&block.cidr)
                .ok_or_else(|| AwsError::internal("a stored VPC block is invalid"))?;
            let used = state
                .subnets
                .values()
                .filter(|s| s.vpc_id == vpc.id)
                .any(|s| Cidr::parse(&s.cidr).is_some_and(|c| cidr.contains(c)));
            if used {
                return Err(Ec2Error::Dependency(format!(
                    "The CIDR '{}' of network '{}' has dependencies (subnets) and cannot be disassociated.",
                    block.cidr, vpc.id
                ))
                .into());
            }
            if let Some(v) = state.vpcs.get_mut(&vpc.id) {
                v.secondary.retain(|a| a.association_id != association);
            }
            Ok((vpc.id, block))
        })
        .await?;
    let mut x = Xml::default();
    x.text("vpcId", &vpc_id)
        .open("cidrBlockAssociation")
        .text("associationId", &cidr.association_id)
        .text("cidrBlock", &cidr.cidr)
        .open("cidrBlockState")
        .text("state", "disassociating")
        .close("cidrBlockState")
        .close("cidrBlockAssociation");
    Ok(x.0)
}

/// Berth's VPCs have no IPv6 block, so no subnet can take one.
fn associate_subnet_cidr(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("SubnetId", "subnetId")?;
    check_id(id, "subnet", "InvalidSubnetID.Malformed")?;
    if p.get("Ipv6CidrBlock").is_none() && p.get("Ipv6IpamPoolId").is_none() {
        return Err(Ec2Error::Missing("ipv6CidrBlock").into());
    }
    let state = svc.read(scope)?;
    let subnet = state.subnet(id)?;
    Err(ipv6_unsupported(&format!(
        "The subnet '{id}' cannot take an IPv6 CIDR block because its VPC '{}' has none",
        subnet.vpc_id
    )))
}

fn disassociate_subnet_cidr(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let association = p.required("AssociationId", "associationId")?;
    // No subnet has an IPv6 block, so no association exists.
    let _state: State = svc.read(scope)?;
    Err(Ec2Error::Other(
        "InvalidSubnetCidrBlockAssociationID.NotFound",
        format!("The subnet CIDR block association ID '{association}' does not exist"),
    )
    .into())
}

async fn modify_subnet_attribute(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let id = p.required("SubnetId", "subnetId")?.to_string();
    check_id(&id, "subnet", "InvalidSubnetID.Malformed")?;
    let boolean = |name: &str| p.bool(&format!("{name}.Value"));
    let mut changes: Vec<&str> = Vec::new();
    let map_public = boolean("MapPublicIpOnLaunch")?;
    let dns64 = boolean("EnableDns64")?;
    let a_record = boolean("EnableResourceNameDnsARecordOnLaunch")?;
    let hostname_type = p.get("PrivateDnsHostnameTypeOnLaunch").map(str::to_string);
    for (name, set) in [
        ("MapPublicIpOnLaunch", map_public.is_some()),
        ("EnableDns64", dns64.is_some()),
        ("EnableResourceNameDnsARecordOnLaunch", a_record.is_some()),
        ("PrivateDnsHostnameTypeOnLaunch", hostname_type.is_some()),
    ] {
        if set {
            changes.push(name);
        }
    }
    // Attributes that need IPv6 blocks or Outposts, which Berth lacks:
    // turning them off is what they already are.
    for name in [
        "AssignIpv6AddressOnCreation",
        "EnableResourceNameDnsAAAARecordOnLaunch",
        "MapCustomerOwnedIpOnLaunch",
        "Ipv6Native",
        "DisableLniAtDeviceIndex",
    ] {
        if let Some(v) = boolean(name)? {
            if v && name != "DisableLniAtDeviceIndex" {
                return Err(Ec2Error::InvalidValue(format!(
                    "Value (true) for parameter {name} is invalid: the subnet '{id}' has no {}.",
                    if name == "MapCustomerOwnedIpOnLaunch" {
                        "customer-owned IP pool (Berth has no Outposts)"
                    } else {
                        "IPv6 CIDR block (Berth's VPCs are IPv4-only)"
                    }
                ))
                .into());
            }
            changes.push(name);
        }
    }
    if p.get("EnableLniAtDeviceIndex").is_some() {
        return Err(Ec2Error::InvalidValue(
            "EnableLniAtDeviceIndex applies to subnets on AWS Outposts, which Berth does not have."
                .into(),
        )
        .into());
    }
    if p.get("CustomerOwnedIpv4Pool").is_some() {
        return Err(Ec2Error::InvalidValue(
            "Berth has no customer-owned IP pools (AWS Outposts).".into(),
        )
        .into());
    }
    if let Some(t) = &hostname_type {
        if t != "ip-name" && t != "resource-name" {
            return Err(Ec2Error::InvalidValue(format!(
                "Value ({t}) for parameter PrivateDnsHostnameTypeOnLaunch is invalid. Valid values: ip-name, resource-name."
            ))
            .into());
        }
    }
    match changes.len() {
        0 => return Err(Ec2Error::Missing("attribute").into()),
        1 => {}
        _ => {
            return Err(Ec2Error::Other(
                "InvalidParameterCombination",
                format!(
                    "Fields for multiple attribute types specified: {}",
                    changes.join(", ")
                ),
            )
            .into())
        }
    }
    svc.mutate(scope, move |state| {
        let subnet = state
            .subnets
            .get_mut(&id)
            .ok_or_else(|| Ec2Error::SubnetNotFound(id.clone()))?;
        if let Some(v) = map_public {
            subnet.map_public_ip_on_launch = v;
        }
        if let Some(v) = dns64 {
            subnet.options.enable_dns64 = v;
        }
        if let Some(v) = a_record {
            subnet.options.resource_name_a_record = v;
        }
        if let Some(t) = &hostname_type {
            subnet.options.hostname_type = (t != "ip-name").then(|| t.clone());
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_read_as_aws() {
        assert_eq!(zone_id("us-east-1", "us-east-1a"), "use1-az1");
        assert_eq!(zone_id("us-east-1", "us-east-1c"), "use1-az3");
        assert_eq!(zone_id("ap-southeast-2", "ap-southeast-2b"), "apse2-az2");
        assert_eq!(zone_id("eu-central-1", "eu-central-1a"), "euc1-az1");
        assert_eq!(zone_id("eu-west-1", "eu-west-1a"), "euw1-az1");
    }
}
