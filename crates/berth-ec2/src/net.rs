//! Internet gateways, route tables and routes, NAT gateways and elastic IPs:
//! records with AWS's fields and rules. Task traffic does not follow them
//! (Berth's data path is the host's), but tools that build and read a VPC
//! see what they would see on AWS.

use berth_model::AwsError;

use crate::api::{check_id, returns_true, set_tags};
use crate::meta::not_found;
use crate::model::{
    ipv4, new_id, Cidr, Ec2Error, EipAssociation, EipRecord, IgwRecord, NatRecord, RouteRecord,
    RouteTableRecord, RouteTarget, RtbAssociation, Scope, State, EIP_POOL, MAX_EIPS,
};
use crate::wire::{
    filters, matches, max_results, page, render_page, render_tags, tag_field, tag_specs, Params,
    Xml,
};
use crate::Ec2Service;

const ACTIONS: &[&str] = &[
    "CreateInternetGateway",
    "AttachInternetGateway",
    "DetachInternetGateway",
    "DeleteInternetGateway",
    "DescribeInternetGateways",
    "CreateRouteTable",
    "DeleteRouteTable",
    "DescribeRouteTables",
    "AssociateRouteTable",
    "DisassociateRouteTable",
    "ReplaceRouteTableAssociation",
    "CreateRoute",
    "ReplaceRoute",
    "DeleteRoute",
    "CreateNatGateway",
    "DeleteNatGateway",
    "DescribeNatGateways",
    "AllocateAddress",
    "ReleaseAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "DescribeAddresses",
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
        "CreateInternetGateway" => create_igw(svc, scope, p).await,
        "AttachInternetGateway" => attach_igw(svc, scope, p, true).await,
        "DetachInternetGateway" => attach_igw(svc, scope, p, false).await,
        "DeleteInternetGateway" => delete_igw(svc, scope, p).await,
        "DescribeInternetGateways" => describe_igws(svc, scope, p),
        "CreateRouteTable" => create_table(svc, scope, p).await,
        "DeleteRouteTable" => delete_table(svc, scope, p).await,
        "DescribeRouteTables" => describe_tables(svc, scope, p),
        "AssociateRouteTable" => associate_table(svc, scope, p).await,
        "DisassociateRouteTable" => disassociate_table(svc, scope, p).await,
        "ReplaceRouteTableAssociation" => replace_association(svc, scope, p).await,
        "CreateRoute" => route(svc, scope, p, RouteOp::Create).await,
        "ReplaceRoute" => route(svc, scope, p, RouteOp::Replace).await,
        "DeleteRoute" => route(svc, scope, p, RouteOp::Delete).await,
        "CreateNatGateway" => create_nat(svc, scope, p).await,
        "DeleteNatGateway" => delete_nat(svc, scope, p).await,
        "DescribeNatGateways" => describe_nats(svc, scope, p),
        "AllocateAddress" => allocate(svc, scope, p).await,
        "ReleaseAddress" => release(svc, scope, p).await,
        "AssociateAddress" => associate_address(svc, scope, p).await,
        "DisassociateAddress" => disassociate_address(svc, scope, p).await,
        "DescribeAddresses" => describe_addresses(svc, scope, p),
        _ => Err(AwsError::bad_request(
            "InvalidAction",
            format!("The action {action} is not valid for this web service."),
        )),
    }
}

fn igw<'a>(state: &'a State, id: &str) -> Result<&'a IgwRecord, Ec2Error> {
    state.igws.get(id).ok_or_else(|| not_found(id))
}

fn table<'a>(state: &'a State, id: &str) -> Result<&'a RouteTableRecord, Ec2Error> {
    state.route_tables.get(id).ok_or_else(|| not_found(id))
}

fn table_mut<'a>(state: &'a mut State, id: &str) -> Result<&'a mut RouteTableRecord, Ec2Error> {
    state.route_tables.get_mut(id).ok_or_else(|| not_found(id))
}

// ---- internet gateways ---------------------------------------------------------------

fn render_igw(x: &mut Xml, scope: &Scope, state: &State, g: &IgwRecord) {
    x.open("attachmentSet");
    if let Some(vpc) = &g.vpc_id {
        x.open("item")
            .text("vpcId", vpc)
            .text("state", "available")
            .close("item");
    }
    x.close("attachmentSet")
        .text("internetGatewayId", &g.id)
        .text("ownerId", &scope.account);
    render_tags(x, &state.tags_of(&g.id));
}

async fn create_igw(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let tags = tag_specs(p, "internet-gateway")?;
    let record = IgwRecord {
        id: new_id("igw"),
        vpc_id: None,
    };
    let stored = record.clone();
    let state = svc
        .mutate(scope, move |state| {
            state.igws.insert(stored.id.clone(), stored.clone());
            set_tags(state, &stored.id, &tags);
            Ok(state.clone())
        })
        .await?;
    let mut x = Xml::default();
    x.open("internetGateway");
    render_igw(&mut x, scope, &state, &record);
    x.close("internetGateway");
    Ok(x.0)
}

async fn attach_igw(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
    attach: bool,
) -> Result<String, AwsError> {
    let id = p
        .required("InternetGatewayId", "internetGatewayId")?
        .to_string();
    check_id(&id, "igw", "InvalidInternetGatewayID.Malformed")?;
    let vpc = p.required("VpcId", "vpcId")?.to_string();
    check_id(&vpc, "vpc", "InvalidVpcID.Malformed")?;
    svc.mutate(scope, move |state| {
        let gateway = igw(state, &id)?.clone();
        state.vpc(&vpc)?;
        if attach {
            if let Some(other) = &gateway.vpc_id {
                return Err(Ec2Error::Other(
                    "Resource.AlreadyAssociated",
                    format!("resource {id} is already attached to network {other}"),
                )
                .into());
            }
            if let Some(other) = state
                .igws
                .values()
                .find(|g| g.vpc_id.as_deref() == Some(vpc.as_str()))
            {
                return Err(Ec2Error::Other(
                    "Resource.AlreadyAssociated",
                    format!(
                        "resource {vpc} is already attached to internet gateway {} (a VPC may have one)",
                        other.id
                    ),
                )
                .into());
            }
        } else {
            if gateway.vpc_id.as_deref() != Some(vpc.as_str()) {
                return Err(Ec2Error::Other(
                    "Gateway.NotAttached",
                    format!("resource {id} is not attached to network {vpc}"),
                )
                .into());
            }
            // AWS refuses while public addresses in the VPC are mapped.
            let mapped = state.eips.values().any(|e| {
                e.association
                    .as_ref()
                    .and_then(|a| state.enis.get(&a.eni_id))
                    .is_some_and(|eni| eni.vpc_id == vpc)
                    || e.association.as_ref().is_some_and(|a| {
                        a.nat_id
                            .as_ref()
                            .and_then(|n| state.nats.get(n))
                            .is_some_and(|n| n.vpc_id == vpc)
                    })
            });
            if mapped {
                return Err(Ec2Error::Dependency(format!(
                    "Network {vpc} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway."
                ))
                .into());
            }
        }
        if let Some(g) = state.igws.get_mut(&id) {
            g.vpc_id = attach.then(|| vpc.clone());
        }
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

async fn delete_igw(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p
        .required("InternetGatewayId", "internetGatewayId")?
        .to_string();
    check_id(&id, "igw", "InvalidInternetGatewayID.Malformed")?;
    svc.mutate(scope, move |state| {
        if igw(state, &id)?.vpc_id.is_some() {
            return Err(Ec2Error::Dependency(format!(
                "The internetGateway '{id}' has dependencies and cannot be deleted."
            ))
            .into());
        }
        state.igws.remove(&id);
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

fn describe_igws(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "attachment.state",
            "attachment.vpc-id",
            "internet-gateway-id",
            "owner-id",
            "tag:",
            "tag-key",
        ],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("InternetGatewayId");
    let state = svc.read(scope)?;
    for id in &ids {
        igw(&state, id)?;
    }
    let selected: Vec<&IgwRecord> = state
        .igws
        .values()
        .filter(|g| ids.is_empty() || ids.contains(&g.id))
        .filter(|g| {
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&g.id), name) {
                    return t;
                }
                match name {
                    "attachment.state" => g.vpc_id.iter().map(|_| "available".into()).collect(),
                    "attachment.vpc-id" => g.vpc_id.iter().cloned().collect(),
                    "internet-gateway-id" => vec![g.id.clone()],
                    "owner-id" => vec![scope.account.clone()],
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |g| g.id.clone(), limit)?;
    Ok(render_page(
        "internetGatewaySet",
        selected,
        &token,
        |x, g| {
            render_igw(x, scope, &state, g);
        },
    ))
}

// ---- route tables --------------------------------------------------------------------

/// Whether a route's target still exists (and, for a gateway, is attached
/// to the table's VPC): `active`, or `blackhole` as AWS shows it.
fn route_state(state: &State, vpc_id: &str, r: &RouteRecord) -> &'static str {
    let alive = match &r.target {
        RouteTarget::Gateway(id) => state
            .igws
            .get(id)
            .is_some_and(|g| g.vpc_id.as_deref() == Some(vpc_id)),
        RouteTarget::NatGateway(id) => state.nats.get(id).is_some_and(|n| n.state == "available"),
        RouteTarget::NetworkInterface(id) => state.enis.contains_key(id),
    };
    if alive {
        "active"
    } else {
        "blackhole"
    }
}

fn render_association(
    x: &mut Xml,
    table_id: &str,
    id: &str,
    main: bool,
    a: Option<&RtbAssociation>,
) {
    x.bool("main", main)
        .text("routeTableAssociationId", id)
        .text("routeTableId", table_id);
    if let Some(subnet) = a.and_then(|a| a.subnet_id.as_ref()) {
        x.text("subnetId", subnet);
    }
    if let Some(gateway) = a.and_then(|a| a.gateway_id.as_ref()) {
        x.text("gatewayId", gateway);
    }
    x.open("associationState")
        .text("state", "associated")
        .close("associationState");
}

fn render_table(x: &mut Xml, scope: &Scope, state: &State, t: &RouteTableRecord) {
    x.open("associationSet");
    if let Some(main) = &t.main_association {
        x.open("item");
        render_association(x, &t.id, main, true, None);
        x.close("item");
    }
    for a in &t.associations {
        x.open("item");
        render_association(x, &t.id, &a.id, false, Some(a));
        x.close("item");
    }
    x.close("associationSet")
        .open("propagatingVgwSet")
        .close("propagatingVgwSet")
        .text("routeTableId", &t.id)
        .open("routeSet");
    if let Some(vpc) = state.vpcs.get(&t.vpc_id) {
        for (_, cidr) in vpc.blocks() {
            x.open("item")
                .text("destinationCidrBlock", cidr)
                .text("gatewayId", "local")
                .text("origin", "CreateRouteTable")
                .text("state", "active")
                .close("item");
        }
    }
    for r in &t.routes {
        x.open("item").text("destinationCidrBlock", &r.destination);
        match &r.target {
            RouteTarget::Gateway(id) => x.text("gatewayId", id),
            RouteTarget::NatGateway(id) => x.text("natGatewayId", id),
            RouteTarget::NetworkInterface(id) => x.text("networkInterfaceId", id),
        };
        x.text("origin", &r.origin)
            .text("state", route_state(state, &t.vpc_id, r))
            .close("item");
    }
    x.close("routeSet");
    render_tags(x, &state.tags_of(&t.id));
    x.text("vpcId", &t.vpc_id).text("ownerId", &scope.account);
}

async fn create_table(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let vpc = p.required("VpcId", "vpcId")?.to_string();
    check_id(&vpc, "vpc", "InvalidVpcID.Malformed")?;
    let tags = tag_specs(p, "route-table")?;
    let record = RouteTableRecord {
        id: new_id("rtb"),
        vpc_id: vpc,
        main_association: None,
        associations: Vec::new(),
        routes: Vec::new(),
    };
    let stored = record.clone();
    let state = svc
        .mutate(scope, move |state| {
            state.vpc(&stored.vpc_id)?;
            state.route_tables.insert(stored.id.clone(), stored.clone());
            set_tags(state, &stored.id, &tags);
            Ok(state.clone())
        })
        .await?;
    let mut x = Xml::default();
    x.open("routeTable");
    render_table(&mut x, scope, &state, &record);
    x.close("routeTable");
    Ok(x.0)
}

async fn delete_table(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("RouteTableId", "routeTableId")?.to_string();
    check_id(&id, "rtb", "InvalidRouteTableID.Malformed")?;
    svc.mutate(scope, move |state| {
        let t = table(state, &id)?;
        if t.main_association.is_some() || !t.associations.is_empty() {
            return Err(Ec2Error::Dependency(format!(
                "The routeTable '{id}' has dependencies and cannot be deleted."
            ))
            .into());
        }
        state.route_tables.remove(&id);
        Ok(())
    })
    .await?;
    Ok(returns_true())
}

fn describe_tables(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "association.gateway-id",
            "association.route-table-association-id",
            "association.route-table-id",
            "association.subnet-id",
            "association.main",
            "owner-id",
            "route-table-id",
            "route.destination-cidr-block",
            "route.destination-ipv6-cidr-block",
            "route.destination-prefix-list-id",
            "route.egress-only-internet-gateway-id",
            "route.gateway-id",
            "route.instance-id",
            "route.nat-gateway-id",
            "route.transit-gateway-id",
            "route.origin",
            "route.state",
            "route.vpc-peering-connection-id",
            "tag:",
            "tag-key",
            "vpc-id",
        ],
    )?;
    let limit = max_results(p, 5, 100)?;
    let ids = p.list("RouteTableId");
    let state = svc.read(scope)?;
    for id in &ids {
        table(&state, id)?;
    }
    let selected: Vec<&RouteTableRecord> = state
        .route_tables
        .values()
        .filter(|t| ids.is_empty() || ids.contains(&t.id))
        .filter(|t| {
            let local: Vec<String> = state
                .vpcs
                .get(&t.vpc_id)
                .map(|v| v.blocks().iter().map(|(_, c)| c.to_string()).collect())
                .unwrap_or_default();
            matches(&filters, |name| {
                if let Some(tags) = tag_field(&state.tags_of(&t.id), name) {
                    return tags;
                }
                let assoc_ids = || -> Vec<String> {
                    t.main_association
                        .iter()
                        .cloned()
                        .chain(t.associations.iter().map(|a| a.id.clone()))
                        .collect()
                };
                match name {
                    "association.gateway-id" => t
                        .associations
                        .iter()
                        .filter_map(|a| a.gateway_id.clone())
                        .collect(),
                    "association.route-table-association-id" => assoc_ids(),
                    "association.route-table-id" => {
                        if assoc_ids().is_empty() {
                            Vec::new()
                        } else {
                            vec![t.id.clone()]
                        }
                    }
                    "association.subnet-id" => t
                        .associations
                        .iter()
                        .filter_map(|a| a.subnet_id.clone())
                        .collect(),
                    // AWS: `false` matches tables that have a non-main
                    // association, `true` the main one.
                    "association.main" => {
                        let mut v = Vec::new();
                        if t.main_association.is_some() {
                            v.push("true".to_string());
                        }
                        if !t.associations.is_empty() {
                            v.push("false".to_string());
                        }
                        v
                    }
                    "owner-id" => vec![scope.account.clone()],
                    "route-table-id" => vec![t.id.clone()],
                    "vpc-id" => vec![t.vpc_id.clone()],
                    "route.destination-cidr-block" => local
                        .iter()
                        .cloned()
                        .chain(t.routes.iter().map(|r| r.destination.clone()))
                        .collect(),
                    "route.gateway-id" => {
                        let mut v: Vec<String> = t
                            .routes
                            .iter()
                            .filter_map(|r| match &r.target {
                                RouteTarget::Gateway(g) => Some(g.clone()),
                                _ => None,
                            })
                            .collect();
                        v.push("local".into());
                        v
                    }
                    "route.nat-gateway-id" => t
                        .routes
                        .iter()
                        .filter_map(|r| match &r.target {
                            RouteTarget::NatGateway(n) => Some(n.clone()),
                            _ => None,
                        })
                        .collect(),
                    "route.origin" => {
                        let mut v: Vec<String> =
                            t.routes.iter().map(|r| r.origin.clone()).collect();
                        v.push("CreateRouteTable".into());
                        v
                    }
                    "route.state" => {
                        let mut v: Vec<String> = t
                            .routes
                            .iter()
                            .map(|r| route_state(&state, &t.vpc_id, r).to_string())
                            .collect();
                        v.push("active".into());
                        v
                    }
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |t| t.id.clone(), limit)?;
    Ok(render_page("routeTableSet", selected, &token, |x, t| {
        render_table(x, scope, &state, t);
    }))
}

fn association_not_found(id: &str) -> Ec2Error {
    Ec2Error::Other(
        "InvalidAssociationID.NotFound",
        format!("The association ID '{id}' does not exist"),
    )
}

fn associated_state(x: &mut Xml) {
    x.open("associationState")
        .text("state", "associated")
        .close("associationState");
}

async fn associate_table(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("RouteTableId", "routeTableId")?.to_string();
    check_id(&id, "rtb", "InvalidRouteTableID.Malformed")?;
    let subnet = p.get("SubnetId").map(str::to_string);
    let gateway = p.get("GatewayId").map(str::to_string);
    if p.get("PublicIpv4Pool").is_some() {
        return Err(Ec2Error::Other(
            "UnsupportedOperation",
            "Berth has no public IPv4 pools (BYOIP).".into(),
        )
        .into());
    }
    match (&subnet, &gateway) {
        (Some(s), None) => check_id(s, "subnet", "InvalidSubnetID.Malformed")?,
        (None, Some(g)) => check_id(g, "igw", "InvalidGatewayID.Malformed")?,
        (None, None) => return Err(Ec2Error::Missing("subnetId or gatewayId").into()),
        (Some(_), Some(_)) => {
            return Err(Ec2Error::Other(
                "InvalidParameterCombination",
                "Specify either a subnet or a gateway, not both.".into(),
            )
            .into())
        }
    }
    let association = new_id("rtbassoc");
    let answer = association.clone();
    svc.mutate(scope, move |state| {
        let vpc = table(state, &id)?.vpc_id.clone();
        let (member, member_vpc) = match (&subnet, &gateway) {
            (Some(s), _) => (s.clone(), Some(state.subnet(s)?.vpc_id.clone())),
            (_, Some(g)) => (g.clone(), igw(state, g)?.vpc_id.clone()),
            _ => return Err(Ec2Error::Missing("subnetId or gatewayId").into()),
        };
        if member_vpc.as_deref() != Some(vpc.as_str()) {
            return Err(Ec2Error::InvalidValue(format!(
                "Route table {id} and network {member} belong to different networks"
            ))
            .into());
        }
        let taken = state.route_tables.values().find_map(|t| {
            t.associations
                .iter()
                .find(|a| {
                    a.subnet_id.as_deref() == Some(member.as_str())
                        || a.gateway_id.as_deref() == Some(member.as_str())
                })
                .map(|a| a.id.clone())
        });
        if let Some(existing) = taken {
            return Err(Ec2Error::Other(
                "Resource.AlreadyAssociated",
                format!(
                    "the specified association for route table {id} conflicts with an existing association ({existing} of {member})"
                ),
            )
            .into());
        }
        table_mut(state, &id)?.associations.push(RtbAssociation {
            id: association.clone(),
            subnet_id: subnet.clone(),
            gateway_id: gateway.clone(),
        });
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("associationId", &answer);
    associated_state(&mut x);
    Ok(x.0)
}

async fn disassociate_table(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let id = p.required("AssociationId", "associationId")?.to_string();
    svc.mutate(scope, move |state| {
        if state
            .route_tables
            .values()
            .any(|t| t.main_association.as_deref() == Some(id.as_str()))
        {
            return Err(Ec2Error::InvalidValue(format!(
                "cannot disassociate the main route table association {id}"
            ))
            .into());
        }
        let table = state
            .route_tables
            .values_mut()
            .find(|t| t.associations.iter().any(|a| a.id == id))
            .ok_or_else(|| association_not_found(&id))?;
        table.associations.retain(|a| a.id != id);
        Ok(())
    })
    .await?;
    Ok(String::new())
}

async fn replace_association(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let id = p.required("AssociationId", "associationId")?.to_string();
    let target = p.required("RouteTableId", "routeTableId")?.to_string();
    check_id(&target, "rtb", "InvalidRouteTableID.Malformed")?;
    let new_association = new_id("rtbassoc");
    let answer = new_association.clone();
    svc.mutate(scope, move |state| {
        let new_vpc = table(state, &target)?.vpc_id.clone();
        // The main association moves: the target becomes the VPC's main table.
        if let Some(old) = state
            .route_tables
            .values()
            .find(|t| t.main_association.as_deref() == Some(id.as_str()))
            .map(|t| (t.id.clone(), t.vpc_id.clone()))
        {
            if old.1 != new_vpc {
                return Err(Ec2Error::InvalidValue(format!(
                    "Route table {target} and the main association {id} belong to different networks"
                ))
                .into());
            }
            table_mut(state, &old.0)?.main_association = None;
            table_mut(state, &target)?.main_association = Some(new_association.clone());
            return Ok(());
        }
        let (old_table, association) = state
            .route_tables
            .values()
            .find_map(|t| {
                t.associations
                    .iter()
                    .find(|a| a.id == id)
                    .map(|a| (t.id.clone(), a.clone()))
            })
            .ok_or_else(|| association_not_found(&id))?;
        let old_vpc = table(state, &old_table)?.vpc_id.clone();
        if old_vpc != new_vpc {
            return Err(Ec2Error::InvalidValue(format!(
                "Route table {target} and association {id} belong to different networks"
            ))
            .into());
        }
        table_mut(state, &old_table)?
            .associations
            .retain(|a| a.id != id);
        table_mut(state, &target)?.associations.push(RtbAssociation {
            id: new_association.clone(),
            ..association
        });
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("newAssociationId", &answer);
    associated_state(&mut x);
    Ok(x.0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteOp {
    Create,
    Replace,
    Delete,
}

/// The route targets Berth keeps, and why the others are refused.
fn route_target(p: &Params) -> Result<RouteTarget, Ec2Error> {
    const OTHERS: &[(&str, &str)] = &[
        ("InstanceId", "Berth runs containers, not EC2 instances"),
        (
            "VpcPeeringConnectionId",
            "Berth has no VPC peering connections",
        ),
        ("TransitGatewayId", "Berth has no transit gateways"),
        (
            "EgressOnlyInternetGatewayId",
            "Berth's VPCs are IPv4-only and have no egress-only internet gateways",
        ),
        ("VpcEndpointId", "Berth has no VPC endpoints"),
        ("LocalGatewayId", "Berth has no AWS Outposts local gateways"),
        (
            "CarrierGatewayId",
            "Berth has no Wavelength carrier gateways",
        ),
        ("CoreNetworkArn", "Berth has no AWS Cloud WAN core networks"),
        ("OdbNetworkArn", "Berth has no Oracle Database@AWS networks"),
    ];
    let mut targets = Vec::new();
    if let Some(g) = p.get("GatewayId") {
        targets.push(RouteTarget::Gateway(g.to_string()));
    }
    if let Some(n) = p.get("NatGatewayId") {
        check_id(n, "nat", "InvalidNatGatewayID.Malformed")?;
        targets.push(RouteTarget::NatGateway(n.to_string()));
    }
    if let Some(e) = p.get("NetworkInterfaceId") {
        check_id(e, "eni", "InvalidNetworkInterfaceID.Malformed")?;
        targets.push(RouteTarget::NetworkInterface(e.to_string()));
    }
    for (param, why) in OTHERS {
        if p.get(param).is_some() {
            return Err(Ec2Error::Other(
                "UnsupportedOperation",
                format!("Routes to a {param} cannot be created: {why}."),
            ));
        }
    }
    match targets.len() {
        1 => Ok(targets.remove(0)),
        0 => Err(Ec2Error::Missing(
            "gatewayId, natGatewayId or networkInterfaceId",
        )),
        _ => Err(Ec2Error::Other(
            "InvalidParameterCombination",
            "More than one target specified. Specify exactly one of gatewayId, natGatewayId and networkInterfaceId.".into(),
        )),
    }
}

async fn route(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
    op: RouteOp,
) -> Result<String, AwsError> {
    let id = p.required("RouteTableId", "routeTableId")?.to_string();
    check_id(&id, "rtb", "InvalidRouteTableID.Malformed")?;
    if p.get("DestinationIpv6CidrBlock").is_some() {
        return Err(Ec2Error::Other(
            "UnsupportedOperation",
            "Berth's VPCs are IPv4-only: IPv6 routes cannot be kept.".into(),
        )
        .into());
    }
    if p.get("DestinationPrefixListId").is_some() {
        return Err(Ec2Error::Other(
            "UnsupportedOperation",
            "Berth has no managed prefix lists to route to.".into(),
        )
        .into());
    }
    let text = p.required("DestinationCidrBlock", "destinationCidrBlock")?;
    let destination = Cidr::parse(text).ok_or_else(|| {
        Ec2Error::InvalidValue(format!(
            "Value ({text}) for parameter destinationCidrBlock is invalid. This is not a valid CIDR block."
        ))
    })?;
    let target = match op {
        RouteOp::Delete => None,
        _ if p.bool("LocalTarget")? == Some(true) => None,
        _ => Some(route_target(p)?),
    };
    if op == RouteOp::Create && target.is_none() {
        return Err(Ec2Error::Missing("gatewayId, natGatewayId or networkInterfaceId").into());
    }
    let dest = destination.to_string();
    svc.mutate(scope, move |state| {
        let t = table(state, &id)?.clone();
        let vpc = state.vpc(&t.vpc_id)?.clone();
        let local = vpc
            .blocks()
            .iter()
            .any(|(_, c)| Cidr::parse(c) == Some(destination));
        let no_route = || {
            Ec2Error::Other(
                "InvalidRoute.NotFound",
                format!("There is no route defined for '{dest}' in the route table. Use CreateRoute instead."),
            )
        };
        if let Some(target) = &target {
            match target {
                RouteTarget::Gateway(g) => {
                    if g == "local" {
                        if !local {
                            return Err(Ec2Error::InvalidValue(format!(
                                "The destination CIDR block {dest} is not a CIDR block of network {}, so it cannot target local.",
                                vpc.id
                            ))
                            .into());
                        }
                    } else {
                        check_id(g, "igw", "InvalidGatewayID.NotFound")?;
                        let gw = igw(state, g)?;
                        if gw.vpc_id.as_deref() != Some(vpc.id.as_str()) {
                            return Err(Ec2Error::InvalidValue(format!(
                                "route table {id} and network gateway {g} belong to different networks"
                            ))
                            .into());
                        }
                    }
                }
                RouteTarget::NatGateway(n) => {
                    let nat = state.nats.get(n).filter(|n| n.state != "deleted").ok_or_else(|| not_found(n))?;
                    if nat.vpc_id != vpc.id {
                        return Err(Ec2Error::InvalidValue(format!(
                            "route table {id} and NAT gateway {n} belong to different networks"
                        ))
                        .into());
                    }
                }
                RouteTarget::NetworkInterface(e) => {
                    let eni = state.enis.get(e).ok_or_else(|| not_found(e))?;
                    if eni.vpc_id != vpc.id {
                        return Err(Ec2Error::InvalidValue(format!(
                            "route table {id} and interface {e} belong to different networks"
                        ))
                        .into());
                    }
                }
            }
        }
        let existing = t.routes.iter().position(|r| r.destination == dest);
        let table = table_mut(state, &id)?;
        match op {
            RouteOp::Create => {
                if local || existing.is_some() {
                    return Err(Ec2Error::Other(
                        "RouteAlreadyExists",
                        format!("The route identified by {dest} already exists."),
                    )
                    .into());
                }
                if let Some(target) = target.clone() {
                    table.routes.push(RouteRecord {
                        destination: dest.clone(),
                        target,
                        origin: "CreateRoute".into(),
                    });
                }
            }
            RouteOp::Replace => {
                if local {
                    // The local route stays local (LocalTarget) — it cannot
                    // be pointed elsewhere in Berth.
                    if matches!(&target, None | Some(RouteTarget::Gateway(_)))
                        && target.as_ref().is_none_or(|t| t.id() == "local")
                    {
                        return Ok(());
                    }
                    return Err(Ec2Error::InvalidValue(format!(
                        "The local route {dest} of route table {id} can only target local in Berth."
                    ))
                    .into());
                }
                let slot = existing.ok_or_else(no_route)?;
                let Some(target) = target.clone() else {
                    return Err(Ec2Error::InvalidValue(format!(
                        "The route {dest} is not a local route; LocalTarget cannot be set."
                    ))
                    .into());
                };
                table.routes[slot].target = target;
                table.routes[slot].origin = "CreateRoute".into();
            }
            RouteOp::Delete => {
                if local {
                    return Err(Ec2Error::InvalidValue(format!(
                        "cannot remove local route {dest} in route table {id}"
                    ))
                    .into());
                }
                let slot = existing.ok_or_else(|| {
                    Ec2Error::Other(
                        "InvalidRoute.NotFound",
                        format!("no route with destination-cidr-block {dest} in route table {id}"),
                    )
                })?;
                table.routes.remove(slot);
            }
        }
        Ok(())
    })
    .await?;
    Ok(match op {
        RouteOp::Create => returns_true(),
        _ => String::new(),
    })
}

// ---- NAT gateways ---------------------------------------------------------------------

/// How long a deleted NAT gateway stays visible, as AWS (about an hour).
const DELETED_NAT_KEPT_MS: i64 = 60 * 60 * 1000;

fn render_nat(x: &mut Xml, state: &State, n: &NatRecord, shown_state: &str) {
    x.text(
        "createTime",
        &berth_util::time::format_iso8601_millis(n.create_time),
    );
    if let Some(t) = n.delete_time {
        x.text("deleteTime", &berth_util::time::format_iso8601_millis(t));
    }
    if let Some((code, message)) = &n.failure {
        x.text("failureCode", code).text("failureMessage", message);
    }
    x.open("natGatewayAddressSet");
    if n.state != "failed" {
        x.open("item");
        if let Some(a) = &n.allocation_id {
            x.text("allocationId", a);
            if let Some(eip) = state.eips.get(a) {
                x.text("publicIp", &eip.public_ip);
            }
        }
        if let Some(a) = &n.association_id {
            x.text("associationId", a);
        }
        x.text("networkInterfaceId", &n.eni_id)
            .text("privateIp", &n.private_ip)
            .bool("isPrimary", true)
            .text(
                "status",
                if n.state == "deleted" {
                    "disassociating"
                } else {
                    "succeeded"
                },
            )
            .close("item");
    }
    x.close("natGatewayAddressSet")
        .text("natGatewayId", &n.id)
        .text("state", shown_state)
        .text("subnetId", &n.subnet_id)
        .text("vpcId", &n.vpc_id);
    render_tags(x, &state.tags_of(&n.id));
    x.text("connectivityType", &n.connectivity)
        .text("availabilityMode", "zonal");
}

async fn create_nat(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    if p.get("AvailabilityMode").is_some_and(|m| m == "regional") || p.get("VpcId").is_some() {
        return Err(Ec2Error::Other(
            "UnsupportedOperation",
            "Berth keeps zonal NAT gateways only: give SubnetId (regional NAT gateways span zones Berth's records do not model).".into(),
        )
        .into());
    }
    let subnet_id = p.required("SubnetId", "SubnetId")?.to_string();
    check_id(&subnet_id, "subnet", "InvalidSubnetID.Malformed")?;
    let connectivity = p.get("ConnectivityType").unwrap_or("public").to_string();
    if connectivity != "public" && connectivity != "private" {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({connectivity}) for parameter ConnectivityType is invalid. Valid values: public, private."
        ))
        .into());
    }
    let allocation = p.get("AllocationId").map(str::to_string);
    match (&allocation, connectivity.as_str()) {
        (None, "public") => {
            return Err(Ec2Error::Missing("AllocationId").into());
        }
        (Some(_), "private") => {
            return Err(Ec2Error::Other(
                "InvalidParameterCombination",
                "A private NAT gateway cannot have an elastic IP address (AllocationId).".into(),
            )
            .into());
        }
        (Some(a), _) => check_id(a, "eipalloc", "InvalidAllocationID.Malformed")?,
        _ => {}
    }
    if p.list("SecondaryAllocationId").len() + p.list("SecondaryPrivateIpAddress").len() > 0
        || p.get("SecondaryPrivateIpAddressCount").is_some()
    {
        return Err(Ec2Error::Other(
            "UnsupportedOperation",
            "Berth's NAT gateway records have one address; secondary addresses are not kept."
                .into(),
        )
        .into());
    }
    let private_ip = p.get("PrivateIpAddress").map(str::to_string);
    let tags = tag_specs(p, "natgateway")?;
    let token = p.get("ClientToken").map(str::to_string);
    let id = new_id("nat");
    let eni_id = new_id("eni");
    let association_id = new_id("eipassoc");
    let now = berth_util::time::now_millis();
    let (record, state) = svc
        .mutate(scope, move |state| {
            // Idempotent retries answer the gateway the token made.
            if let Some(t) = &token {
                if let Some(n) = state
                    .nats
                    .values()
                    .find(|n| n.client_token.as_deref() == Some(t.as_str()))
                {
                    return Ok((n.clone(), state.clone()));
                }
            }
            state.nats.retain(|_, n| {
                n.delete_time
                    .is_none_or(|t| now.saturating_sub(t) < DELETED_NAT_KEPT_MS)
            });
            let subnet = state.subnet(&subnet_id)?.clone();
            let cidr = Cidr::parse(&subnet.cidr)
                .ok_or_else(|| AwsError::internal("a stored subnet has an invalid CIDR block"))?;
            if let Some(a) = &allocation {
                let eip = state.eips.get(a).ok_or_else(|| not_found(a))?;
                if let Some(assoc) = &eip.association {
                    return Err(Ec2Error::Other(
                        "Resource.AlreadyAssociated",
                        format!(
                            "Elastic IP address [{a}] is already associated ({})",
                            assoc.id
                        ),
                    )
                    .into());
                }
            }
            let ip = match &private_ip {
                Some(ip) => {
                    let addr = crate::model::parse_ipv4(ip).ok_or_else(|| {
                        Ec2Error::InvalidValue(format!(
                            "Value ({ip}) for parameter PrivateIpAddress is invalid."
                        ))
                    })?;
                    let usable = cidr.addr.saturating_add(4)..cidr.last();
                    if !usable.contains(&addr) {
                        return Err(Ec2Error::InvalidValue(format!(
                            "Address {ip} does not fall within the subnet's address range"
                        ))
                        .into());
                    }
                    if state.held_addresses(&subnet.id).contains(ip.as_str()) {
                        return Err(Ec2Error::Other(
                            "InvalidIPAddress.InUse",
                            format!("Address {ip} is in use."),
                        )
                        .into());
                    }
                    ip.clone()
                }
                None => state.next_free_address(&subnet.id, cidr).ok_or_else(|| {
                    Ec2Error::Other(
                        "InsufficientFreeAddressesInSubnet",
                        "The specified subnet does not have enough free addresses to satisfy the request.".into(),
                    )
                })?,
            };
            // As AWS: a public NAT gateway in a VPC without an internet
            // gateway fails (and gives its address back).
            let has_igw = state
                .igws
                .values()
                .any(|g| g.vpc_id.as_deref() == Some(subnet.vpc_id.as_str()));
            let failed = connectivity == "public" && !has_igw;
            let record = NatRecord {
                id: id.clone(),
                subnet_id: subnet.id.clone(),
                vpc_id: subnet.vpc_id.clone(),
                connectivity: connectivity.clone(),
                allocation_id: allocation.clone(),
                association_id: (allocation.is_some() && !failed).then(|| association_id.clone()),
                eni_id: eni_id.clone(),
                private_ip: ip.clone(),
                state: if failed { "failed" } else { "available" }.into(),
                failure: failed.then(|| {
                    (
                        "Gateway.NotAttached".to_string(),
                        format!("Network {} has no Internet gateway attached", subnet.vpc_id),
                    )
                }),
                create_time: now,
                delete_time: None,
                client_token: token.clone(),
            };
            if let (Some(a), false) = (&allocation, failed) {
                if let Some(eip) = state.eips.get_mut(a) {
                    eip.association = Some(EipAssociation {
                        id: association_id.clone(),
                        eni_id: eni_id.clone(),
                        private_ip: ip.clone(),
                        nat_id: Some(id.clone()),
                    });
                }
            }
            state.nats.insert(record.id.clone(), record.clone());
            set_tags(state, &record.id, &tags);
            Ok((record, state.clone()))
        })
        .await?;
    let mut x = Xml::default();
    x.open("natGateway");
    // A new gateway answers `pending`, as on AWS; it reads `available`
    // (or `failed`) from then on.
    render_nat(&mut x, &state, &record, "pending");
    x.close("natGateway");
    if let Some(t) = &record.client_token {
        x.text("clientToken", t);
    }
    Ok(x.0)
}

async fn delete_nat(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let id = p.required("NatGatewayId", "NatGatewayId")?.to_string();
    check_id(&id, "nat", "InvalidNatGatewayID.Malformed")?;
    let now = berth_util::time::now_millis();
    let answer = id.clone();
    svc.mutate(scope, move |state| {
        let nat = state
            .nats
            .get_mut(&id)
            .filter(|n| n.state != "deleted")
            .ok_or_else(|| not_found(&id))?;
        nat.state = "deleted".into();
        nat.delete_time = Some(now);
        for eip in state.eips.values_mut() {
            if eip
                .association
                .as_ref()
                .is_some_and(|a| a.nat_id.as_deref() == Some(id.as_str()))
            {
                eip.association = None;
            }
        }
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("natGatewayId", &answer);
    Ok(x.0)
}

fn describe_nats(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "nat-gateway-id",
            "state",
            "subnet-id",
            "tag:",
            "tag-key",
            "vpc-id",
        ],
    )?;
    let limit = max_results(p, 5, 1000)?;
    let ids = p.list("NatGatewayId");
    let state = svc.read(scope)?;
    for id in &ids {
        if !state.nats.contains_key(id) {
            return Err(not_found(id).into());
        }
    }
    let now = berth_util::time::now_millis();
    let selected: Vec<&NatRecord> = state
        .nats
        .values()
        .filter(|n| {
            n.delete_time
                .is_none_or(|t| now.saturating_sub(t) < DELETED_NAT_KEPT_MS)
        })
        .filter(|n| ids.is_empty() || ids.contains(&n.id))
        .filter(|n| {
            matches(&filters, |name| {
                if let Some(t) = tag_field(&state.tags_of(&n.id), name) {
                    return t;
                }
                match name {
                    "nat-gateway-id" => vec![n.id.clone()],
                    "state" => vec![n.state.clone()],
                    "subnet-id" => vec![n.subnet_id.clone()],
                    "vpc-id" => vec![n.vpc_id.clone()],
                    _ => Vec::new(),
                }
            })
        })
        .collect();
    let (selected, token) = page(p, selected, |n| n.id.clone(), limit)?;
    Ok(render_page("natGatewaySet", selected, &token, |x, n| {
        render_nat(x, &state, n, &n.state);
    }))
}

// ---- elastic IPs -----------------------------------------------------------------------

fn address_limit() -> Ec2Error {
    Ec2Error::Other(
        "AddressLimitExceeded",
        "The maximum number of addresses has been reached.".into(),
    )
}

async fn allocate(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    if let Some(d) = p.get("Domain").filter(|d| *d != "vpc") {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({d}) for parameter domain is invalid. EC2-Classic ('standard') addresses no longer exist; use 'vpc'."
        ))
        .into());
    }
    for (param, why) in [
        (
            "Address",
            "Berth has no bring-your-own-IP (BYOIP) pools to take a given address from",
        ),
        (
            "PublicIpv4Pool",
            "Berth has one address pool (198.51.100.0/24) and no BYOIP pools",
        ),
        (
            "CustomerOwnedIpv4Pool",
            "Berth has no AWS Outposts customer-owned pools",
        ),
        ("IpamPoolId", "Berth has no IP Address Manager (IPAM) pools"),
    ] {
        if p.get(param)
            .is_some_and(|v| !(param == "PublicIpv4Pool" && v == "amazon"))
        {
            return Err(Ec2Error::Other(
                "UnsupportedOperation",
                format!("{param} cannot be honoured: {why}."),
            )
            .into());
        }
    }
    if let Some(g) = p.get("NetworkBorderGroup").filter(|g| *g != scope.region) {
        return Err(Ec2Error::InvalidValue(format!(
            "Value ({g}) for parameter NetworkBorderGroup is invalid. The only network border group of {} is {}.",
            scope.region, scope.region
        ))
        .into());
    }
    let tags = tag_specs(p, "elastic-ip")?;
    let allocation = new_id("eipalloc");
    let (record, state) = svc
        .mutate(scope, move |state| {
            if state.eips.len() >= MAX_EIPS {
                return Err(address_limit().into());
            }
            let pool = Cidr::parse(EIP_POOL)
                .ok_or_else(|| AwsError::internal("the address pool is malformed"))?;
            let used: Vec<&str> = state.eips.values().map(|e| e.public_ip.as_str()).collect();
            let ip = (pool.addr.saturating_add(1)..pool.last())
                .map(ipv4)
                .find(|ip| !used.contains(&ip.as_str()))
                .ok_or_else(address_limit)?;
            let record = EipRecord {
                allocation_id: allocation.clone(),
                public_ip: ip,
                association: None,
            };
            state
                .eips
                .insert(record.allocation_id.clone(), record.clone());
            set_tags(state, &record.allocation_id, &tags);
            Ok((record, state.clone()))
        })
        .await?;
    let _ = &state;
    let mut x = Xml::default();
    x.text("publicIp", &record.public_ip)
        .text("domain", "vpc")
        .text("allocationId", &record.allocation_id)
        .text("publicIpv4Pool", "amazon")
        .text("networkBorderGroup", &scope.region);
    Ok(x.0)
}

/// The allocation an address request names by `AllocationId` or `PublicIp`.
fn allocation_named(state: &State, p: &Params) -> Result<String, AwsError> {
    if let Some(a) = p.get("AllocationId") {
        check_id(a, "eipalloc", "InvalidAllocationID.Malformed")?;
        return Ok(state
            .eips
            .get(a)
            .ok_or_else(|| not_found(a))?
            .allocation_id
            .clone());
    }
    let Some(ip) = p.get("PublicIp") else {
        return Err(Ec2Error::Missing("AllocationId").into());
    };
    state
        .eips
        .values()
        .find(|e| e.public_ip == ip)
        .map(|e| e.allocation_id.clone())
        .ok_or_else(|| {
            Ec2Error::Other(
                "InvalidAddress.NotFound",
                format!("Address '{ip}' not found."),
            )
            .into()
        })
}

/// The allocation id of the address a request names, if it names one
/// that exists (for authorization).
pub fn allocation_of(state: &State, p: &Params) -> Option<String> {
    allocation_named(state, p).ok()
}

async fn release(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    if p.get("AllocationId").is_none() && p.get("PublicIp").is_none() {
        return Err(Ec2Error::Missing("AllocationId").into());
    }
    let params = Params(p.0.clone());
    svc.mutate(scope, move |state| {
        let id = allocation_named(state, &params)?;
        let eip = &state.eips[&id];
        if eip.association.is_some() {
            return Err(Ec2Error::Other(
                "InvalidIPAddress.InUse",
                format!("Address {} is in use.", eip.public_ip),
            )
            .into());
        }
        state.eips.remove(&id);
        Ok(())
    })
    .await?;
    Ok(String::new())
}

async fn associate_address(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    if p.get("AllocationId").is_none() && p.get("PublicIp").is_none() {
        return Err(Ec2Error::Missing("AllocationId").into());
    }
    if let Some(i) = p.get("InstanceId") {
        return Err(Ec2Error::Other(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{i}' does not exist (Berth runs containers, not EC2 instances; associate with a NetworkInterfaceId)"),
        )
        .into());
    }
    let eni_id = p
        .required("NetworkInterfaceId", "networkInterfaceId")?
        .to_string();
    check_id(&eni_id, "eni", "InvalidNetworkInterfaceID.Malformed")?;
    let reassociate = p.bool("AllowReassociation")? == Some(true);
    let private_ip = p.get("PrivateIpAddress").map(str::to_string);
    let params = Params(p.0.clone());
    let association = new_id("eipassoc");
    let answer = association.clone();
    svc.mutate(scope, move |state| {
        let id = allocation_named(state, &params)?;
        let eni = state
            .enis
            .get(&eni_id)
            .ok_or_else(|| not_found(&eni_id))?
            .clone();
        let ip = private_ip.clone().unwrap_or(eni.private_ip.clone());
        if ip != eni.private_ip {
            return Err(Ec2Error::InvalidValue(format!(
                "The private IP address {ip} is not assigned to network interface {eni_id}."
            ))
            .into());
        }
        if !state
            .igws
            .values()
            .any(|g| g.vpc_id.as_deref() == Some(eni.vpc_id.as_str()))
        {
            return Err(Ec2Error::Other(
                "Gateway.NotAttached",
                format!("Network {} is not attached to any internet gateway", eni.vpc_id),
            )
            .into());
        }
        let eip = &state.eips[&id];
        if let Some(current) = &eip.association {
            if current.nat_id.is_some() || !reassociate {
                return Err(Ec2Error::Other(
                    "Resource.AlreadyAssociated",
                    format!(
                        "resource {id} is already associated with associate-id {}",
                        current.id
                    ),
                )
                .into());
            }
        }
        let holder = state
            .eips
            .values()
            .find(|e| {
                e.allocation_id != id
                    && e.association.as_ref().is_some_and(|a| a.eni_id == eni_id)
            })
            .map(|e| e.allocation_id.clone());
        if let Some(other) = holder {
            if !reassociate {
                return Err(Ec2Error::Other(
                    "Resource.AlreadyAssociated",
                    format!("The network interface {eni_id} already has an elastic IP address ({other}) on {ip}"),
                )
                .into());
            }
            if let Some(e) = state.eips.get_mut(&other) {
                e.association = None;
            }
        }
        if let Some(e) = state.eips.get_mut(&id) {
            e.association = Some(EipAssociation {
                id: association.clone(),
                eni_id: eni_id.clone(),
                private_ip: ip,
                nat_id: None,
            });
        }
        Ok(())
    })
    .await?;
    let mut x = Xml::default();
    x.text("return", "true").text("associationId", &answer);
    Ok(x.0)
}

/// The allocation whose association `AssociationId` (or `PublicIp`) names.
pub fn association_owner(state: &State, p: &Params) -> Option<String> {
    if let Some(a) = p.get("AssociationId") {
        return state
            .eips
            .values()
            .find(|e| e.association.as_ref().is_some_and(|s| s.id == a))
            .map(|e| e.allocation_id.clone());
    }
    let ip = p.get("PublicIp")?;
    state
        .eips
        .values()
        .find(|e| e.public_ip == ip)
        .map(|e| e.allocation_id.clone())
}

async fn disassociate_address(
    svc: &Ec2Service,
    scope: &Scope,
    p: &Params,
) -> Result<String, AwsError> {
    let association = p.get("AssociationId").map(str::to_string);
    let public_ip = p.get("PublicIp").map(str::to_string);
    if association.is_none() && public_ip.is_none() {
        return Err(Ec2Error::Missing("AssociationId").into());
    }
    let params = Params(p.0.clone());
    svc.mutate(scope, move |state| {
        let not_found = || -> AwsError {
            match &association {
                Some(a) => Ec2Error::Other(
                    "InvalidAssociationID.NotFound",
                    format!("The association ID '{a}' does not exist"),
                )
                .into(),
                None => Ec2Error::Other(
                    "InvalidAddress.NotFound",
                    format!(
                        "Address '{}' not found.",
                        public_ip.as_deref().unwrap_or("")
                    ),
                )
                .into(),
            }
        };
        let id = association_owner(state, &params).ok_or_else(not_found)?;
        let eip = state.eips.get_mut(&id).ok_or_else(not_found)?;
        let Some(current) = &eip.association else {
            return Err(not_found());
        };
        if let Some(nat) = &current.nat_id {
            return Err(Ec2Error::Other(
                "OperationNotPermitted",
                format!(
                    "The address {} is in use by NAT gateway {nat}; delete the NAT gateway to release it.",
                    eip.public_ip
                ),
            )
            .into());
        }
        eip.association = None;
        Ok(())
    })
    .await?;
    Ok(String::new())
}

fn render_address(x: &mut Xml, scope: &Scope, state: &State, e: &EipRecord) {
    x.text("allocationId", &e.allocation_id);
    if let Some(a) = &e.association {
        x.text("associationId", &a.id);
    }
    x.text("domain", "vpc");
    if let Some(a) = &e.association {
        x.text("networkInterfaceId", &a.eni_id)
            .text("networkInterfaceOwnerId", &scope.account)
            .text("privateIpAddress", &a.private_ip);
        if let Some(subnet) = state
            .enis
            .get(&a.eni_id)
            .map(|eni| eni.subnet_id.clone())
            .or_else(|| {
                a.nat_id
                    .as_ref()
                    .and_then(|n| state.nats.get(n))
                    .map(|n| n.subnet_id.clone())
            })
        {
            x.text("subnetId", &subnet);
        }
    }
    render_tags(x, &state.tags_of(&e.allocation_id));
    x.text("publicIpv4Pool", "amazon")
        .text("networkBorderGroup", &scope.region)
        .text("publicIp", &e.public_ip);
}

fn describe_addresses(svc: &Ec2Service, scope: &Scope, p: &Params) -> Result<String, AwsError> {
    let filters = filters(
        p,
        &[
            "allocation-id",
            "association-id",
            "domain",
            "instance-id",
            "network-border-group",
            "network-interface-id",
            "network-interface-owner-id",
            "private-ip-address",
            "public-ip",
            "tag:",
            "tag-key",
        ],
    )?;
    let ids = p.list("AllocationId");
    let ips = p.list("PublicIp");
    let state = svc.read(scope)?;
    for id in &ids {
        if !state.eips.contains_key(id) {
            return Err(not_found(id).into());
        }
    }
    for ip in &ips {
        if !state.eips.values().any(|e| &e.public_ip == ip) {
            return Err(Ec2Error::Other(
                "InvalidAddress.NotFound",
                format!("Address '{ip}' not found."),
            )
            .into());
        }
    }
    let mut x = Xml::default();
    x.open("addressesSet");
    for e in state.eips.values() {
        if (!ids.is_empty() || !ips.is_empty())
            && !ids.contains(&e.allocation_id)
            && !ips.contains(&e.public_ip)
        {
            continue;
        }
        let ok = matches(&filters, |name| {
            if let Some(t) = tag_field(&state.tags_of(&e.allocation_id), name) {
                return t;
            }
            let a = e.association.as_ref();
            match name {
                "allocation-id" => vec![e.allocation_id.clone()],
                "association-id" => a.map(|a| a.id.clone()).into_iter().collect(),
                "domain" => vec!["vpc".into()],
                "network-border-group" => vec![scope.region.clone()],
                "network-interface-id" => a.map(|a| a.eni_id.clone()).into_iter().collect(),
                "network-interface-owner-id" => {
                    a.map(|_| scope.account.clone()).into_iter().collect()
                }
                "private-ip-address" => a.map(|a| a.private_ip.clone()).into_iter().collect(),
                "public-ip" => vec![e.public_ip.clone()],
                _ => Vec::new(),
            }
        });
        if ok {
            x.open("item");
            render_address(&mut x, scope, &state, e);
            x.close("item");
        }
    }
    x.close("addressesSet");
    Ok(x.0)
}
