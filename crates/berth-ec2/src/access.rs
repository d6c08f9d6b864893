//! What each EC2 action needs from IAM: `ec2:<Action>` on the ARNs the
//! Service Authorization Reference lists for it, resolved from the request
//! and the account's state.
//!
//! * Describe* name no resource: `*`.
//! * Create* are authorized on the new resource as `<type>/*` (its id does
//!   not exist yet) with the request's tags (`aws:RequestTag/*`,
//!   `aws:TagKeys` from `TagSpecification`), and on the VPC it goes into.
//! * Everything else on the resource it changes: `vpc/<id>`, `subnet/<id>`,
//!   `security-group/<id>`, with `ec2:Vpc` (the ARN of the VPC the subnet or
//!   group is in) where the reference lists it. A security group named by
//!   `GroupName` is resolved to its id first, so a Deny on
//!   `security-group/sg-…` cannot be bypassed by naming the group, and the
//!   handler then acts on that id.
//!
//! * A resource's stored tags are its `aws:ResourceTag/*`; tags a create
//!   puts on (TagSpecification) also need `ec2:CreateTags` on the new
//!   resource with `ec2:CreateAction`, as AWS requires.

use berth_model::authz::Requirement;
use berth_model::AwsError;

use crate::model::{Ec2Error, Scope, State, ZONES};
use crate::wire::Params;

fn arn(scope: &Scope, kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{}:{}:{kind}/{id}", scope.region, scope.account)
}

/// The tags `TagSpecification.N` asks to put on a new `resource_type`.
fn request_tags(p: &Params, resource_type: &str) -> Vec<(String, String)> {
    let mut tags = Vec::new();
    for spec in p.structs("TagSpecification") {
        if spec.get("ResourceType") != Some(resource_type) {
            continue;
        }
        for tag in spec.structs("Tag") {
            if let Some(key) = tag.get("Key") {
                tags.push((key.to_string(), tag.get("Value").unwrap_or("").to_string()));
            }
        }
    }
    tags
}

fn with_request_tags(r: Requirement, tags: &[(String, String)]) -> Requirement {
    r.request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// `action` on an existing resource `kind/id`, with its stored tags.
fn on(scope: &Scope, state: &State, action: &str, kind: &str, id: &str) -> Requirement {
    Requirement::new(action, arn(scope, kind, id)).resource_tags(state.tags_of(id))
}

/// The ARN kind of a resource id, from its prefix.
fn kind_of(id: &str) -> &'static str {
    match id.split_once('-').map(|(p, _)| p) {
        Some("vpc") => "vpc",
        Some("subnet") => "subnet",
        Some("sg") => "security-group",
        Some("sgr") => "security-group-rule",
        Some("eni") => "network-interface",
        Some("igw") => "internet-gateway",
        Some("rtb") => "route-table",
        Some("nat") => "natgateway",
        Some("eipalloc") => "elastic-ip",
        _ => "*",
    }
}

/// A create of `kind` with the tags its TagSpecification asks for: the
/// create itself, and `ec2:CreateTags` when there are tags.
fn create(scope: &Scope, action: &str, p: &Params, kind: &str) -> Vec<Requirement> {
    let tags = request_tags(p, kind);
    let mut out = vec![with_request_tags(
        Requirement::new(format!("ec2:{action}"), arn(scope, kind, "*")),
        &tags,
    )];
    if !tags.is_empty() {
        out.push(with_request_tags(
            Requirement::new("ec2:CreateTags", arn(scope, kind, "*"))
                .condition("ec2:CreateAction", action),
            &tags,
        ));
    }
    out
}

/// The VPC a resource id belongs to, if it exists.
fn vpc_of(state: &State, id: &str) -> Option<String> {
    if let Some(s) = state.subnets.get(id) {
        return Some(s.vpc_id.clone());
    }
    if let Some(g) = state.groups.get(id) {
        return Some(g.vpc_id.clone());
    }
    if let Some(t) = state.route_tables.get(id) {
        return Some(t.vpc_id.clone());
    }
    if let Some(n) = state.nats.get(id) {
        return Some(n.vpc_id.clone());
    }
    state.enis.get(id).map(|e| e.vpc_id.clone())
}

/// `on` plus `ec2:Vpc` when the resource is in a VPC.
fn in_vpc(scope: &Scope, state: &State, action: &str, kind: &str, id: &str) -> Requirement {
    let r = on(scope, state, action, kind, id);
    match vpc_of(state, id) {
        Some(v) => r.condition("ec2:Vpc", arn(scope, "vpc", &v)),
        None => r,
    }
}

/// The id of the group a request names by `GroupId`, or by `GroupName` in
/// the default VPC when that group exists.
pub fn named_group_id(p: &Params, state: &State) -> Option<String> {
    if let Some(id) = p.get("GroupId") {
        return Some(id.to_string());
    }
    let name = p.get("GroupName")?;
    let vpc = state.default_vpc()?;
    state.group_named(&vpc.id, name).map(|g| g.id.clone())
}

/// Whether `action` acts on one security group named by `GroupId` or
/// `GroupName`.
pub fn targets_a_group(action: &str) -> bool {
    matches!(
        action,
        "DeleteSecurityGroup"
            | "AuthorizeSecurityGroupIngress"
            | "AuthorizeSecurityGroupEgress"
            | "RevokeSecurityGroupIngress"
            | "RevokeSecurityGroupEgress"
            | "UpdateSecurityGroupRuleDescriptionsIngress"
            | "UpdateSecurityGroupRuleDescriptionsEgress"
            | "ModifySecurityGroupRules"
    )
}

/// `ec2:<action>` on the security group the request names, with `ec2:Vpc`.
fn on_group(scope: &Scope, state: &State, action: &str, p: &Params) -> Requirement {
    match named_group_id(p, state) {
        Some(id) => {
            let r = on(scope, state, action, "security-group", &id);
            match state.groups.get(&id) {
                Some(g) => r.condition("ec2:Vpc", arn(scope, "vpc", &g.vpc_id)),
                None => r,
            }
        }
        // A name that names no group: nothing will be acted on (the call
        // answers InvalidGroup.NotFound).
        None => Requirement::new(action, arn(scope, "security-group", "*")),
    }
}

/// What `action` (one of [`crate::api::IMPLEMENTED`]) needs. Errors are the
/// input errors found on the way (a missing id), as the handler would
/// answer them.
pub fn requirements(
    action: &str,
    p: &Params,
    state: &State,
    scope: &Scope,
) -> Result<Vec<Requirement>, AwsError> {
    let a = format!("ec2:{action}");
    let vpc_arn = |id: &str| arn(scope, "vpc", id);
    Ok(match action {
        "DescribeVpcs"
        | "DescribeSubnets"
        | "DescribeSecurityGroups"
        | "DescribeNetworkInterfaces"
        | "DescribeTags"
        | "DescribeAvailabilityZones"
        | "DescribeRegions"
        | "DescribeAccountAttributes"
        | "DescribeSecurityGroupRules"
        | "DescribeInternetGateways"
        | "DescribeRouteTables"
        | "DescribeNatGateways"
        | "DescribeAddresses" => vec![Requirement::new(a, "*")],
        "CreateVpc" => create(scope, action, p, "vpc"),
        "DeleteVpc" | "DescribeVpcAttribute" | "ModifyVpcAttribute" | "AssociateVpcCidrBlock" => {
            let id = p.required("VpcId", "vpcId")?;
            vec![on(scope, state, &a, "vpc", id)]
        }
        "DisassociateVpcCidrBlock" => {
            let assoc = p.required("AssociationId", "associationId")?;
            let vpc = state
                .vpcs
                .values()
                .find(|v| v.blocks().iter().any(|(x, _)| *x == assoc))
                .map_or_else(|| "*".to_string(), |v| v.id.clone());
            vec![on(scope, state, &a, "vpc", &vpc)]
        }
        "ModifySubnetAttribute" | "AssociateSubnetCidrBlock" => {
            let id = p.required("SubnetId", "subnetId")?;
            vec![in_vpc(scope, state, &a, "subnet", id)]
        }
        // No subnet has an IPv6 block association to name.
        "DisassociateSubnetCidrBlock" => {
            p.required("AssociationId", "associationId")?;
            vec![Requirement::new(a, arn(scope, "subnet", "*"))]
        }
        "CreateTags" | "DeleteTags" => {
            let ids = p.list("ResourceId");
            if ids.is_empty() {
                return Err(Ec2Error::Missing("resourceIdSet").into());
            }
            let tags: Vec<(String, String)> = p
                .structs("Tag")
                .iter()
                .filter_map(|t| {
                    Some((
                        t.get("Key")?.to_string(),
                        t.get("Value").unwrap_or("").to_string(),
                    ))
                })
                .collect();
            ids.iter()
                .map(|id| {
                    let r = on(scope, state, &a, kind_of(id), id);
                    if action == "CreateTags" {
                        with_request_tags(r, &tags)
                    } else {
                        r.tag_keys(tags.iter().map(|(k, _)| k.clone()))
                    }
                })
                .collect()
        }
        "CreateInternetGateway" => create(scope, action, p, "internet-gateway"),
        "DeleteInternetGateway" => {
            let id = p.required("InternetGatewayId", "internetGatewayId")?;
            vec![on(scope, state, &a, "internet-gateway", id)]
        }
        "AttachInternetGateway" | "DetachInternetGateway" => {
            let id = p.required("InternetGatewayId", "internetGatewayId")?;
            let vpc = p.required("VpcId", "vpcId")?;
            vec![
                on(scope, state, &a, "internet-gateway", id),
                on(scope, state, &a, "vpc", vpc),
            ]
        }
        "CreateRouteTable" => {
            let vpc = p.required("VpcId", "vpcId")?;
            let mut out = create(scope, action, p, "route-table");
            out[0] = out[0].clone().condition("ec2:Vpc", vpc_arn(vpc));
            out.push(on(scope, state, &a, "vpc", vpc));
            out
        }
        "DeleteRouteTable" | "CreateRoute" | "ReplaceRoute" | "DeleteRoute" => {
            let id = p.required("RouteTableId", "routeTableId")?;
            vec![in_vpc(scope, state, &a, "route-table", id)]
        }
        "AssociateRouteTable" => {
            let id = p.required("RouteTableId", "routeTableId")?;
            let mut out = vec![in_vpc(scope, state, &a, "route-table", id)];
            if let Some(s) = p.get("SubnetId") {
                out.push(in_vpc(scope, state, &a, "subnet", s));
            }
            if let Some(g) = p.get("GatewayId") {
                out.push(on(scope, state, &a, "internet-gateway", g));
            }
            out
        }
        "DisassociateRouteTable" | "ReplaceRouteTableAssociation" => {
            let assoc = p.required("AssociationId", "associationId")?;
            let owner = state.route_tables.values().find(|t| {
                t.main_association.as_deref() == Some(assoc)
                    || t.associations.iter().any(|x| x.id == assoc)
            });
            let mut out = vec![match owner {
                Some(t) => in_vpc(scope, state, &a, "route-table", &t.id),
                None => Requirement::new(a.clone(), arn(scope, "route-table", "*")),
            }];
            if let Some(subnet) = owner
                .and_then(|t| t.associations.iter().find(|x| x.id == assoc))
                .and_then(|x| x.subnet_id.clone())
            {
                out.push(in_vpc(scope, state, &a, "subnet", &subnet));
            }
            if action == "ReplaceRouteTableAssociation" {
                let target = p.required("RouteTableId", "routeTableId")?;
                out.push(in_vpc(scope, state, &a, "route-table", target));
            }
            out
        }
        "CreateNatGateway" => {
            let mut out = create(scope, action, p, "natgateway");
            if let Some(s) = p.get("SubnetId") {
                out.push(in_vpc(scope, state, &a, "subnet", s));
            }
            if let Some(alloc) = p.get("AllocationId") {
                out.push(on(scope, state, &a, "elastic-ip", alloc));
            }
            out
        }
        "DeleteNatGateway" => {
            let id = p.required("NatGatewayId", "NatGatewayId")?;
            vec![on(scope, state, &a, "natgateway", id)]
        }
        "AllocateAddress" => create(scope, action, p, "elastic-ip"),
        "ReleaseAddress" | "AssociateAddress" => {
            if p.get("AllocationId").is_none() && p.get("PublicIp").is_none() {
                return Err(Ec2Error::Missing("AllocationId").into());
            }
            let alloc = crate::net::allocation_of(state, p).unwrap_or_else(|| "*".into());
            let mut out = vec![on(scope, state, &a, "elastic-ip", &alloc)];
            if let Some(eni) = p.get("NetworkInterfaceId") {
                out.push(in_vpc(scope, state, &a, "network-interface", eni));
            }
            out
        }
        "DisassociateAddress" => {
            if p.get("AssociationId").is_none() && p.get("PublicIp").is_none() {
                return Err(Ec2Error::Missing("AssociationId").into());
            }
            let alloc = crate::net::association_owner(state, p).unwrap_or_else(|| "*".into());
            let mut out = vec![on(scope, state, &a, "elastic-ip", &alloc)];
            if let Some(eni) = state
                .eips
                .get(&alloc)
                .and_then(|e| e.association.as_ref())
                .map(|x| x.eni_id.clone())
            {
                out.push(in_vpc(scope, state, &a, "network-interface", &eni));
            }
            out
        }
        "CreateSubnet" => {
            let vpc = p.required("VpcId", "vpcId")?;
            let zone = p
                .get("AvailabilityZone")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}{}", scope.region, ZONES[0]));
            let mut out = create(scope, action, p, "subnet");
            out[0] = out[0]
                .clone()
                .condition("ec2:Vpc", vpc_arn(vpc))
                .condition("ec2:AvailabilityZone", zone);
            out.push(on(scope, state, &a, "vpc", vpc));
            out
        }
        "DeleteSubnet" => {
            let id = p.required("SubnetId", "subnetId")?;
            let r = in_vpc(scope, state, &a, "subnet", id);
            vec![match state.subnets.get(id) {
                Some(s) => r.condition("ec2:AvailabilityZone", s.availability_zone.clone()),
                None => r,
            }]
        }
        "CreateSecurityGroup" => {
            let vpc = match p.get("VpcId") {
                Some(v) => Some(v.to_string()),
                None => state.default_vpc().map(|v| v.id.clone()),
            };
            let mut out = create(scope, action, p, "security-group");
            out[0] = out[0].clone().condition(
                "ec2:Vpc",
                vpc.as_ref().map_or_else(|| vpc_arn("*"), |v| vpc_arn(v)),
            );
            out.push(match &vpc {
                Some(v) => on(scope, state, &a, "vpc", v),
                None => Requirement::new(a.clone(), vpc_arn("*")),
            });
            out
        }
        _ if targets_a_group(action) => {
            if p.get("GroupId").is_none() && p.get("GroupName").is_none() {
                return Err(Ec2Error::Missing("groupId").into());
            }
            let mut out = vec![on_group(scope, state, &a, p)];
            // Tags put on new rules (TagSpecification security-group-rule).
            let tags = request_tags(p, "security-group-rule");
            if !tags.is_empty() {
                out.push(with_request_tags(
                    Requirement::new("ec2:CreateTags", arn(scope, "security-group-rule", "*"))
                        .condition("ec2:CreateAction", action),
                    &tags,
                ));
            }
            out
        }
        // Every implemented action is listed above; one that is not is
        // refused rather than allowed.
        _ => vec![Requirement::new(a, "*")],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn group_names_resolve_to_their_ids() {
        let scope = Scope::new("123456789012", "us-east-1");
        let mut state = State::default();
        state.seed_defaults("us-east-1");
        let vpc = state.default_vpc().unwrap().id.clone();
        let id = state.group_named(&vpc, "default").unwrap().id.clone();
        let r = requirements(
            "DeleteSecurityGroup",
            &p(&[("GroupName", "default")]),
            &state,
            &scope,
        )
        .unwrap();
        assert_eq!(
            r[0].resource,
            format!("arn:aws:ec2:us-east-1:123456789012:security-group/{id}")
        );
        assert_eq!(
            r[0].condition_of("ec2:Vpc"),
            Some(&[format!("arn:aws:ec2:us-east-1:123456789012:vpc/{vpc}")][..])
        );
        let r = requirements(
            "AuthorizeSecurityGroupIngress",
            &p(&[("GroupName", "nope")]),
            &state,
            &scope,
        )
        .unwrap();
        assert!(r[0].resource.ends_with(":security-group/*"));
        assert!(requirements("DeleteSecurityGroup", &p(&[]), &state, &scope).is_err());
        let r = requirements(
            "CreateVpc",
            &p(&[
                ("CidrBlock", "10.0.0.0/16"),
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "team"),
                ("TagSpecification.1.Tag.1.Value", "blue"),
            ]),
            &state,
            &scope,
        )
        .unwrap();
        assert_eq!(r[0].resource, "arn:aws:ec2:us-east-1:123456789012:vpc/*");
        assert_eq!(
            r[0].condition_of("aws:RequestTag/team"),
            Some(&["blue".to_string()][..])
        );
        let r = requirements("DescribeVpcs", &p(&[]), &state, &scope).unwrap();
        assert_eq!(
            (r[0].action.as_str(), r[0].resource.as_str()),
            ("ec2:DescribeVpcs", "*")
        );
    }
}
