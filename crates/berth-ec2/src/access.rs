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
//! EC2 records carry no tags in Berth, so there is no `aws:ResourceTag`.

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
    )
}

/// `ec2:<action>` on the security group the request names, with `ec2:Vpc`.
fn on_group(scope: &Scope, state: &State, action: &str, p: &Params) -> Requirement {
    match named_group_id(p, state) {
        Some(id) => {
            let r = Requirement::new(action, arn(scope, "security-group", &id));
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
        | "DescribeNetworkInterfaces" => vec![Requirement::new(a, "*")],
        "CreateVpc" => vec![with_request_tags(
            Requirement::new(a, arn(scope, "vpc", "*")),
            &request_tags(p, "vpc"),
        )],
        "DeleteVpc" => {
            let id = p.required("VpcId", "vpcId")?;
            vec![Requirement::new(a, vpc_arn(id))]
        }
        "CreateSubnet" => {
            let vpc = p.required("VpcId", "vpcId")?;
            let zone = p
                .get("AvailabilityZone")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}{}", scope.region, ZONES[0]));
            vec![
                with_request_tags(
                    Requirement::new(a.clone(), arn(scope, "subnet", "*"))
                        .condition("ec2:Vpc", vpc_arn(vpc))
                        .condition("ec2:AvailabilityZone", zone),
                    &request_tags(p, "subnet"),
                ),
                Requirement::new(a, vpc_arn(vpc)),
            ]
        }
        "DeleteSubnet" => {
            let id = p.required("SubnetId", "subnetId")?;
            let r = Requirement::new(a, arn(scope, "subnet", id));
            vec![match state.subnets.get(id) {
                Some(s) => r
                    .condition("ec2:Vpc", vpc_arn(&s.vpc_id))
                    .condition("ec2:AvailabilityZone", s.availability_zone.clone()),
                None => r,
            }]
        }
        "CreateSecurityGroup" => {
            let vpc = match p.get("VpcId") {
                Some(v) => Some(v.to_string()),
                None => state.default_vpc().map(|v| v.id.clone()),
            };
            let vpc = vpc.map_or_else(|| vpc_arn("*"), |v| vpc_arn(&v));
            vec![
                with_request_tags(
                    Requirement::new(a.clone(), arn(scope, "security-group", "*"))
                        .condition("ec2:Vpc", vpc.clone()),
                    &request_tags(p, "security-group"),
                ),
                Requirement::new(a, vpc),
            ]
        }
        _ if targets_a_group(action) => {
            if p.get("GroupId").is_none() && p.get("GroupName").is_none() {
                return Err(Ec2Error::Missing("groupId").into());
            }
            vec![on_group(scope, state, &a, p)]
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
