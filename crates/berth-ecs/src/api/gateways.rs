//! ECS gateways: CreateGateway, DescribeGateway, ListGateways,
//! UpdateGateway, DeleteGateway, AssociateGatewayWithCluster,
//! DisassociateGatewayFromCluster, ListGatewayClusterAssociations,
//! ListGatewayRoutes, DescribeGatewayRoute, DescribeGatewayResources.
//!
//! The calls keep records; the gateway controller (see
//! [`crate::state::gateways`]) provisions what they imply.

use berth_model::shapes::ecs::{
    AssociateGatewayWithClusterRequest, AssociateGatewayWithClusterResponse, CreateGatewayRequest,
    CreateGatewayResponse, DeleteGatewayRequest, DeleteGatewayResponse,
    DescribeGatewayAlbConfiguration, DescribeGatewayConfiguration, DescribeGatewayRequest,
    DescribeGatewayResourcesRequest, DescribeGatewayResourcesResponse, DescribeGatewayResponse,
    DescribeGatewayRouteRequest, DescribeGatewayRouteResponse,
    DisassociateGatewayFromClusterRequest, DisassociateGatewayFromClusterResponse,
    ElbGatewayResources, Gateway, GatewayAlbTestTrafficRules, GatewayClusterAssociationSummary,
    GatewayElbNetworkConfiguration, GatewayInfrastructureResources, GatewayResources, GatewayRoute,
    GatewayRouteAlbResources, GatewayRouteLoadBalancerSecurityGroup, GatewayRouteResources,
    GatewayRouteSummary, GatewaySummary, ListGatewayClusterAssociationsRequest,
    ListGatewayClusterAssociationsResponse, ListGatewayRoutesRequest, ListGatewayRoutesResponse,
    ListGatewaysRequest, ListGatewaysResponse, UpdateGatewayRequest, UpdateGatewayResponse,
};
use berth_model::{Arn, AwsError};
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::clusters;
use crate::state::gateways::{
    self as gw, AssociationRecord, GatewayRecord, GatewayRouteRecord, ASSOCIATION_ACTIVE,
    DISASSOCIATING, MAX_GATEWAYS_PER_CLUSTER,
};
use crate::state::keys::Scope;
use crate::state::network::TaskNetworks;
use crate::state::records::{decode, encode, fingerprint};
use crate::state::services::ServiceRecord;
use crate::state::{pagination, tags};

// The enums' allowed values, as the model lists them.
use berth_model::shapes::ecs::{
    ACCESS_TYPE_VALUES, GATEWAY_ALB_DESYNC_MITIGATION_MODE_VALUES as DESYNC,
    GATEWAY_CLUSTER_ASSOCIATION_STATUS_VALUES as ASSOCIATION_STATUSES,
    GATEWAY_CONNECTOR_HEALTH_CHECK_PROTOCOL_VALUES, GATEWAY_ELB_IP_ADDRESS_TYPE_VALUES,
    GATEWAY_ELB_SCHEME_VALUES as SCHEMES, GATEWAY_ROUTE_STATUS_VALUES as ROUTE_STATUSES,
    GATEWAY_STATUS_VALUES as STATUSES, PROPAGATE_GATEWAY_TAGS_VALUES,
};

fn one_of(value: &str, allowed: &[&str], member: &str) -> Result<(), AwsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(error::invalid_parameter(format!(
            "Invalid value '{value}' for {member}. Valid values: {}.",
            allowed.join(", ")
        )))
    }
}

fn statuses(
    given: Option<&[String]>,
    allowed: &[&str],
    member: &str,
) -> Result<Vec<String>, AwsError> {
    let given = given.unwrap_or(&[]);
    for s in given {
        one_of(s, allowed, member)?;
    }
    Ok(given.to_vec())
}

/// An IAM role ARN of this account.
fn check_role(scope: &Scope, role: &str) -> Result<(), AwsError> {
    let ok = Arn::parse(role).is_some_and(|a| {
        a.service == "iam" && a.resource.starts_with("role/") && a.account == scope.account
    });
    if ok {
        Ok(())
    } else {
        Err(error::invalid_parameter(format!(
            "infrastructureRoleArn '{role}' is not a valid IAM role ARN of account {}.",
            scope.account
        )))
    }
}

fn check_desync(value: Option<&str>) -> Result<(), AwsError> {
    value.map_or(Ok(()), |v| one_of(v, DESYNC, "httpDesync"))
}

fn check_max_albs(value: Option<i32>) -> Result<(), AwsError> {
    match value {
        Some(n) if !(1..=50).contains(&n) => Err(error::invalid_parameter(format!(
            "maxAlbCount must be between 1 and 50; got {n}."
        ))),
        _ => Ok(()),
    }
}

fn check_test_rules(rules: Option<&GatewayAlbTestTrafficRules>) -> Result<(), AwsError> {
    let Some(header) = rules.and_then(|r| r.header.as_ref()) else {
        return Ok(());
    };
    let name = header.name.as_deref().unwrap_or_default();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > 40 || !name.chars().all(token) {
        return Err(error::invalid_parameter(
            "testTrafficRules.header.name must be an HTTP header name of 1 to 40 characters.",
        ));
    }
    let values = header.values.as_deref().unwrap_or(&[]);
    if values.is_empty() || values.len() > 5 || values.iter().any(|v| v.is_empty() || v.len() > 128)
    {
        return Err(error::invalid_parameter(
            "testTrafficRules.header.values must hold 1 to 5 values of 1 to 128 characters.",
        ));
    }
    Ok(())
}

/// What Berth cannot do for a gateway's load balancers: WAF and access logs
/// to S3 (Berth has neither service).
fn check_unavailable(web_acl: Option<&str>, logs: bool) -> Result<(), AwsError> {
    if web_acl.is_some_and(|a| !a.is_empty()) {
        return Err(error::invalid_parameter(
            "webACLArn cannot be used: Berth has no AWS WAF, so no web ACL can be associated with the gateway's load balancers.",
        ));
    }
    if logs {
        return Err(error::invalid_parameter(
            "accessLogs cannot be used: Berth has no Amazon S3 to deliver the load balancers' access logs to.",
        ));
    }
    Ok(())
}

fn present(record: &GatewayRecord) -> Gateway {
    let mut gateway = record.gateway.clone();
    if let Some(alb) = gateway
        .configuration
        .as_mut()
        .and_then(|c| c.host_shared_alb.as_mut())
    {
        alb.current_alb_count = Some(record.albs.len() as i32);
    }
    gateway
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn create(
    store: &dyn Store,
    scope: &Scope,
    networks: Option<&dyn TaskNetworks>,
    now: f64,
    input: CreateGatewayRequest,
) -> Result<CreateGatewayResponse, AwsError> {
    let request = fingerprint(&CreateGatewayRequest {
        client_token: None,
        ..input.clone()
    });
    let name = input
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("name"))?;
    gw::check_name(&name)?;
    let role = input
        .infrastructure_role_arn
        .filter(|r| !r.is_empty())
        .ok_or_else(|| error::missing("infrastructureRoleArn"))?;
    check_role(scope, &role)?;
    let config = input
        .configuration
        .and_then(|c| c.host_shared_alb)
        .ok_or_else(|| {
            error::invalid_parameter(
                "configuration must set exactly one gateway type; Berth supports hostSharedAlb.",
            )
        })?;
    let scheme = config
        .scheme
        .clone()
        .unwrap_or_else(|| "internet-facing".into());
    one_of(&scheme, SCHEMES, "scheme")?;
    if let Some(port) = config.port {
        if port != 443 {
            return Err(error::invalid_parameter(format!(
                "port {port} is not supported: the gateway's listener uses port 443."
            )));
        }
    }
    if let Some(protocol) = config.protocol.as_deref() {
        if protocol != "HTTPS" {
            return Err(error::invalid_parameter(format!(
                "protocol {protocol} is not supported: the gateway's listener uses HTTPS."
            )));
        }
    }
    check_max_albs(config.max_alb_count)?;
    check_desync(config.http_desync.as_deref())?;
    check_test_rules(config.test_traffic_rules.as_ref())?;
    check_unavailable(config.web_acl_arn.as_deref(), config.access_logs.is_some())?;
    let network = config.network_configuration.clone().unwrap_or_default();
    match network.ip_address_type.as_deref() {
        None | Some("ipv4") => {}
        Some(other @ ("dualstack" | "dualstack-without-public-ipv4")) => {
            return Err(error::invalid_parameter(format!(
                "ipAddressType {other} is not supported: Berth's load balancers and VPCs are IPv4-only; use ipv4."
            )))
        }
        Some(other) => one_of(other, GATEWAY_ELB_IP_ADDRESS_TYPE_VALUES, "ipAddressType")?,
    }
    let subnets = network.subnets.clone().unwrap_or_default();
    let groups: Vec<String> = network.inbound_security_group.iter().cloned().collect();
    let vpc_id = match networks {
        Some(networks) => {
            let found = if subnets.is_empty() {
                networks.default_subnets(&scope.account, &scope.region)?
            } else {
                networks.check(&scope.account, &scope.region, &subnets, &groups)?
            };
            if let Some(g) = network.inbound_security_group.as_deref() {
                if subnets.is_empty() {
                    networks.check(
                        &scope.account,
                        &scope.region,
                        &found
                            .iter()
                            .map(|s| s.subnet_id.clone())
                            .collect::<Vec<_>>(),
                        &[g.to_string()],
                    )?;
                }
            }
            found.first().map(|s| s.vpc_id.clone()).ok_or_else(|| {
                error::invalid_parameter(
                    "The gateway needs subnets: give networkConfiguration.subnets, or create a default VPC.",
                )
            })?
        }
        None => String::new(),
    };
    let tag_list = input.tags.unwrap_or_default();
    tags::check_new(&tag_list, std::iter::empty())?;
    let propagate = input.propagate_tags.unwrap_or_else(|| "GATEWAY".into());
    one_of(&propagate, PROPAGATE_GATEWAY_TAGS_VALUES, "propagateTags")?;
    let access = if scheme == "internal" {
        gw::PRIVATE
    } else {
        gw::PUBLIC
    };
    let gateway = Gateway {
        gateway_arn: Some(gw::gateway_arn(scope, &name)),
        name: Some(name.clone()),
        status: Some(gw::ACTIVE.into()),
        status_reason: None,
        failures: None,
        infrastructure_role_arn: Some(role),
        deletion_protection: Some(input.deletion_protection.unwrap_or(true)),
        configuration: Some(DescribeGatewayConfiguration {
            host_shared_alb: Some(DescribeGatewayAlbConfiguration {
                network_configuration: Some(GatewayElbNetworkConfiguration {
                    inbound_security_group: network.inbound_security_group,
                    subnets: (!subnets.is_empty()).then_some(subnets),
                    ip_address_type: Some("ipv4".into()),
                }),
                scheme: Some(scheme),
                access_logs: None,
                web_acl_arn: None,
                port: Some(443),
                protocol: Some("HTTPS".into()),
                max_alb_count: Some(config.max_alb_count.unwrap_or(10)),
                current_alb_count: Some(0),
                http_desync: Some(config.http_desync.unwrap_or_else(|| "defensive".into())),
                test_traffic_rules: config.test_traffic_rules,
            }),
        }),
        access_type: Some(access.into()),
        propagate_tags: Some(propagate),
        tags: Some(tag_list),
        created_at: Some(now),
        updated_at: Some(now),
    };
    let record = GatewayRecord {
        gateway,
        client_token: input.client_token.filter(|t| !t.is_empty()),
        request,
        vpc_id,
        albs: Vec::new(),
    };
    let owned = scope.clone();
    let (_, created) = store
        .update(move |view| {
            if let Some((existing, _)) =
                crate::state::records::load::<GatewayRecord>(view, &owned.gateway(&name))?
            {
                let same_call = existing.client_token.is_some()
                    && existing.client_token == record.client_token
                    && existing.request == record.request;
                if same_call && existing.gateway.status.as_deref() != Some(gw::DELETED) {
                    return Ok((Vec::new(), existing));
                }
                if existing.gateway.status.as_deref() != Some(gw::DELETED)
                    || !existing.albs.is_empty()
                {
                    return Err(error::invalid_parameter(format!(
                        "A gateway named {name} already exists in this account and Region."
                    )));
                }
            }
            Ok((
                vec![Op::put(owned.gateway(&name), encode(&record)?)],
                record.clone(),
            ))
        })
        .await
        .map_err(error::store)??;
    let gateway = present(&created);
    Ok(CreateGatewayResponse {
        gateway_arn: gateway.gateway_arn,
        name: gateway.name,
        status: gateway.status,
    })
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeGatewayRequest,
) -> Result<DescribeGatewayResponse, AwsError> {
    let name = gw::resolve_name(scope, input.gateway.as_deref().unwrap_or_default())?;
    let record = gw::require(view, scope, &name)?;
    Ok(DescribeGatewayResponse {
        gateway: Some(present(&record)),
    })
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListGatewaysRequest,
) -> Result<ListGatewaysResponse, AwsError> {
    let names = input.names.unwrap_or_default();
    if names.len() > 10 {
        return Err(error::invalid_parameter(
            "names accepts at most 10 gateway names.",
        ));
    }
    let wanted = statuses(input.status.as_deref(), STATUSES, "status")?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let (gateways, next_token) = pagination::filtered_page(
        view,
        &scope.gateways(),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: GatewayRecord = decode(kv)?;
            let status = record.gateway.status.clone().unwrap_or_default();
            let shown = status != gw::DELETED
                && (names.is_empty() || names.iter().any(|n| n == record.name()))
                && (wanted.is_empty() || wanted.contains(&status));
            Ok(shown.then(|| GatewaySummary {
                gateway_arn: record.gateway.gateway_arn.clone(),
                name: record.gateway.name.clone(),
                status: Some(status),
                created_at: record.gateway.created_at,
            }))
        },
    )?;
    Ok(ListGatewaysResponse {
        gateways: Some(gateways),
        next_token,
    })
}

pub(crate) async fn update(
    store: &dyn Store,
    scope: &Scope,
    networks: Option<&dyn TaskNetworks>,
    now: f64,
    input: UpdateGatewayRequest,
) -> Result<UpdateGatewayResponse, AwsError> {
    let name = gw::resolve_name(scope, input.gateway.as_deref().unwrap_or_default())?;
    if let Some(role) = input.infrastructure_role_arn.as_deref() {
        check_role(scope, role)?;
    }
    if let Some(p) = input.propagate_tags.as_deref() {
        one_of(p, PROPAGATE_GATEWAY_TAGS_VALUES, "propagateTags")?;
    }
    let change = input.configuration.and_then(|c| c.host_shared_alb);
    if let Some(c) = &change {
        check_max_albs(c.max_alb_count)?;
        check_desync(c.http_desync.as_deref())?;
        check_test_rules(c.test_traffic_rules.as_ref())?;
        check_unavailable(c.web_acl_arn.as_deref(), c.access_logs.is_some())?;
    }
    let new_group = change
        .as_ref()
        .and_then(|c| c.network_configuration.as_ref())
        .and_then(|n| n.inbound_security_group.clone());
    // The group must be in the gateway's VPC: checked with its subnets.
    if let (Some(group), Some(networks)) = (new_group.as_deref(), networks) {
        let current = gw::require(store, scope, &name)?;
        let subnets = match current.subnets() {
            s if s.is_empty() => networks
                .default_subnets(&scope.account, &scope.region)?
                .into_iter()
                .map(|s| s.subnet_id)
                .collect(),
            s => s,
        };
        networks.check(
            &scope.account,
            &scope.region,
            &subnets,
            &[group.to_string()],
        )?;
    }
    let owned = scope.clone();
    let (_, updated) = store
        .update(move |view| {
            let mut record = gw::require(view, &owned, &name)?;
            if new_group.is_some()
                && !record.albs.is_empty()
                && new_group.as_deref() != record.inbound_security_group()
            {
                return Err(error::invalid_parameter(
                    "Berth cannot change inboundSecurityGroup once the gateway has provisioned load balancers: its routes' ingress rules name the load balancers' current group.",
                ));
            }
            let g = &mut record.gateway;
            if let Some(role) = &input.infrastructure_role_arn {
                g.infrastructure_role_arn = Some(role.clone());
            }
            if let Some(p) = input.deletion_protection {
                g.deletion_protection = Some(p);
            }
            if let Some(p) = &input.propagate_tags {
                g.propagate_tags = Some(p.clone());
            }
            if let (Some(c), Some(alb)) = (
                &change,
                g.configuration
                    .as_mut()
                    .and_then(|c| c.host_shared_alb.as_mut()),
            ) {
                if let Some(n) = c.max_alb_count {
                    alb.max_alb_count = Some(n);
                }
                if let Some(d) = &c.http_desync {
                    alb.http_desync = Some(d.clone());
                }
                if let Some(r) = &c.test_traffic_rules {
                    alb.test_traffic_rules = Some(r.clone());
                }
                if let Some(group) = &new_group {
                    alb.network_configuration
                        .get_or_insert_with(Default::default)
                        .inbound_security_group = Some(group.clone());
                }
            }
            g.updated_at = Some(now);
            // Load balancers already provisioned take the change from the
            // gateway controller, which then completes the update.
            g.status = Some(if record.albs.is_empty() {
                gw::UPDATE_COMPLETE.into()
            } else {
                "UPDATE_IN_PROGRESS".into()
            });
            g.status_reason = None;
            g.failures = None;
            Ok((
                vec![Op::put(owned.gateway(&name), encode(&record)?)],
                record,
            ))
        })
        .await
        .map_err(error::store)??;
    Ok(UpdateGatewayResponse {
        gateway_arn: updated.gateway.gateway_arn.clone(),
        name: updated.gateway.name.clone(),
        status: updated.gateway.status.clone(),
    })
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: DeleteGatewayRequest,
) -> Result<DeleteGatewayResponse, AwsError> {
    let name = gw::resolve_name(scope, input.gateway.as_deref().unwrap_or_default())?;
    let owned = scope.clone();
    let (_, deleted) = store
        .update(move |view| {
            let mut record = gw::require(view, &owned, &name)?;
            if record.deletion_protection() {
                return Err(error::client(format!(
                    "The gateway {name} has deletion protection enabled. Disable it with UpdateGateway, then delete the gateway."
                )));
            }
            let associated: Vec<String> = gw::associations(view, &owned)?
                .into_iter()
                .filter(|a| a.gateway == name)
                .map(|a| a.cluster)
                .collect();
            if !associated.is_empty() {
                return Err(error::client(format!(
                    "The gateway {name} is associated with clusters ({}). Disassociate every cluster, then delete the gateway.",
                    associated.join(", ")
                )));
            }
            record.gateway.status = Some(gw::DELETED.into());
            record.gateway.updated_at = Some(now);
            // What the gateway controller made for it (recorded, or left
            // by an interrupted pass) is deleted by the controller, which
            // then removes the record.
            Ok((vec![Op::put(owned.gateway(&name), encode(&record)?)], record))
        })
        .await
        .map_err(error::store)??;
    Ok(DeleteGatewayResponse {
        gateway_arn: deleted.gateway.gateway_arn,
        name: deleted.gateway.name,
        status: deleted.gateway.status,
    })
}

/// The gateway and cluster names an association call gives (both required).
fn gateway_and_cluster(
    scope: &Scope,
    gateway: Option<&str>,
    cluster: Option<&str>,
) -> Result<(String, String), AwsError> {
    let name = gw::resolve_name(scope, gateway.unwrap_or_default())?;
    if cluster.is_none_or(str::is_empty) {
        return Err(error::missing("cluster"));
    }
    Ok((name, clusters::resolve_name(scope, cluster)?))
}

pub(crate) async fn associate(
    store: &dyn Store,
    scope: &Scope,
    input: AssociateGatewayWithClusterRequest,
) -> Result<AssociateGatewayWithClusterResponse, AwsError> {
    let (name, cluster) =
        gateway_and_cluster(scope, input.gateway.as_deref(), input.cluster.as_deref())?;
    let owned = scope.clone();
    let (_, association) = store
        .update(move |view| {
            let (cluster_record, _) = clusters::require_active(view, &owned, &cluster)?;
            let gateway = gw::require(view, &owned, &name)?;
            let all = gw::associations(view, &owned)?;
            if let Some(existing) = all.iter().find(|a| a.gateway == name && a.cluster == cluster) {
                if existing.status == ASSOCIATION_ACTIVE {
                    return Ok((Vec::new(), existing.clone()));
                }
            }
            let on_cluster = all
                .iter()
                .filter(|a| a.cluster == cluster && a.gateway != name)
                .count();
            if on_cluster >= MAX_GATEWAYS_PER_CLUSTER {
                return Err(error::client(format!(
                    "The cluster {cluster} is already associated with {MAX_GATEWAYS_PER_CLUSTER} gateways, the most a cluster can have."
                )));
            }
            let record = AssociationRecord {
                gateway: name.clone(),
                gateway_arn: gateway.arn().to_string(),
                cluster: cluster.clone(),
                cluster_arn: cluster_record.cluster_arn.clone().unwrap_or_default(),
                status: ASSOCIATION_ACTIVE.into(),
            };
            Ok((
                vec![Op::put(owned.gateway_association(&name, &cluster), encode(&record)?)],
                record,
            ))
        })
        .await
        .map_err(error::store)??;
    Ok(AssociateGatewayWithClusterResponse {
        gateway_arn: Some(association.gateway_arn),
        cluster_arn: Some(association.cluster_arn),
        status: Some(association.status),
    })
}

pub(crate) async fn disassociate(
    store: &dyn Store,
    scope: &Scope,
    input: DisassociateGatewayFromClusterRequest,
) -> Result<DisassociateGatewayFromClusterResponse, AwsError> {
    let (name, cluster) =
        gateway_and_cluster(scope, input.gateway.as_deref(), input.cluster.as_deref())?;
    let owned = scope.clone();
    let (_, association) = store
        .update(move |view| {
            if view.get(&owned.cluster(&cluster)).is_none() {
                return Err(error::cluster_not_found());
            }
            gw::require(view, &owned, &name)?;
            let key = owned.gateway_association(&name, &cluster);
            let Some((mut record, _)) =
                crate::state::records::load::<AssociationRecord>(view, &key)?
            else {
                return Err(AwsError::bad_request(
                    "ResourceNotFoundException",
                    format!("The gateway {name} is not associated with the cluster {cluster}."),
                ));
            };
            // Routes through the gateway stay until their services drop
            // the connector; the association goes with the last of them.
            let routes = routes_on(view, &owned, Some(&cluster))?
                .into_iter()
                .any(|(_, r)| r.gateway == name);
            record.status = DISASSOCIATING.into();
            let op = if routes {
                Op::put(key, encode(&record)?)
            } else {
                Op::delete(key)
            };
            Ok((vec![op], record))
        })
        .await
        .map_err(error::store)??;
    Ok(DisassociateGatewayFromClusterResponse {
        gateway_arn: Some(association.gateway_arn),
        cluster_arn: Some(association.cluster_arn),
        status: Some(association.status),
    })
}

pub(crate) fn list_associations(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListGatewayClusterAssociationsRequest,
) -> Result<ListGatewayClusterAssociationsResponse, AwsError> {
    let gateway = match input.gateway.as_deref().filter(|g| !g.is_empty()) {
        Some(g) => Some(gw::resolve_name(scope, g)?),
        None => None,
    };
    let cluster = match input.cluster.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(clusters::resolve_name(scope, Some(c))?),
        None => None,
    };
    let wanted = statuses(input.status.as_deref(), ASSOCIATION_STATUSES, "status")?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let (items, next_token) = pagination::filtered_page(
        view,
        &scope.gateway_associations(),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let a: AssociationRecord = decode(kv)?;
            let shown = gateway.as_ref().is_none_or(|g| *g == a.gateway)
                && cluster.as_ref().is_none_or(|c| *c == a.cluster)
                && (wanted.is_empty() || wanted.contains(&a.status));
            Ok(shown.then_some(GatewayClusterAssociationSummary {
                gateway_arn: Some(a.gateway_arn),
                cluster_arn: Some(a.cluster_arn),
                status: Some(a.status),
            }))
        },
    )?;
    Ok(ListGatewayClusterAssociationsResponse {
        gateway_cluster_associations: Some(items),
        next_token,
    })
}

/// Every route of the services of `cluster` (or all clusters), with its
/// service record.
fn routes_on(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: Option<&str>,
) -> Result<Vec<(ServiceRecord, GatewayRouteRecord)>, AwsError> {
    let prefix = match cluster {
        Some(c) => scope.services(c),
        None => scope.all_services(),
    };
    let mut out = Vec::new();
    for kv in view.range(&prefix, None, usize::MAX) {
        let record: ServiceRecord = decode(&kv)?;
        for route in &record.gateway_routes {
            out.push((record.clone(), route.clone()));
        }
    }
    Ok(out)
}

/// A security group's ARN, from its id.
fn group_arn(scope: &Scope, id: &str) -> String {
    format!(
        "arn:aws:ec2:{}:{}:security-group/{id}",
        scope.region, scope.account
    )
}

fn route_view(scope: &Scope, service: &ServiceRecord, route: &GatewayRouteRecord) -> GatewayRoute {
    GatewayRoute {
        gateway_route_arn: Some(route.arn.clone()),
        service_arn: service.service.service_arn.clone(),
        service_container_port_name: Some(route.port_name.clone()),
        status: Some(route.status.clone()),
        service_url: route.service_url(),
        resources: route.resources.as_ref().map(|r| GatewayRouteResources {
            host_shared_alb: Some(vec![GatewayRouteAlbResources {
                acm_certificate_arn: Some(r.certificate_arn.clone()),
                load_balancer_arn: Some(r.load_balancer_arn.clone()),
                listener_arn: Some(r.listener_arn.clone()),
                listener_rule_arn: Some(r.listener_rule_arn.clone()),
                test_listener_rule_arns: Some(Vec::new()),
                load_balancer_security_groups: Some(vec![GatewayRouteLoadBalancerSecurityGroup {
                    arn: Some(group_arn(scope, &r.load_balancer_security_group)),
                    rule_arns: None,
                }]),
                service_security_group_arn: r
                    .service_security_group
                    .as_deref()
                    .map(|g| group_arn(scope, g)),
            }]),
        }),
    }
}

pub(crate) fn list_routes(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListGatewayRoutesRequest,
) -> Result<ListGatewayRoutesResponse, AwsError> {
    let gateway = match input.gateway.as_deref().filter(|g| !g.is_empty()) {
        Some(g) => {
            let name = gw::resolve_name(scope, g)?;
            gw::require(view, scope, &name)?;
            Some(name)
        }
        None => None,
    };
    let cluster = match input.cluster.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(clusters::resolve_name(scope, Some(c))?),
        None => None,
    };
    // A service is named by name (any cluster) or ARN.
    let service = input.service.as_deref().filter(|s| !s.is_empty()).map(|s| {
        if s.starts_with("arn:") {
            (true, s.to_string())
        } else {
            (false, s.to_string())
        }
    });
    let wanted = statuses(input.status.as_deref(), ROUTE_STATUSES, "status")?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let mut all: Vec<GatewayRouteSummary> = routes_on(view, scope, cluster.as_deref())?
        .into_iter()
        .filter(|(s, r)| {
            gateway.as_ref().is_none_or(|g| *g == r.gateway)
                && service.as_ref().is_none_or(|(by_arn, v)| {
                    if *by_arn {
                        s.service.service_arn.as_deref() == Some(v.as_str())
                    } else {
                        s.name == *v
                    }
                })
                && input
                    .service_container_port_name
                    .as_ref()
                    .is_none_or(|p| *p == r.port_name)
                && (wanted.is_empty() || wanted.contains(&r.status))
        })
        .map(|(s, r)| GatewayRouteSummary {
            gateway_route_arn: Some(r.arn.clone()),
            gateway_arn: Some(r.gateway_arn.clone()),
            cluster_arn: s.service.cluster_arn.clone(),
            service_arn: s.service.service_arn.clone(),
            service_container_port_name: Some(r.port_name.clone()),
            status: Some(r.status.clone()),
        })
        .collect();
    all.sort_by(|a, b| a.gateway_route_arn.cmp(&b.gateway_route_arn));
    let start = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => {
            let last = pagination::decode(token)?;
            all.iter()
                .position(|r| {
                    r.gateway_route_arn
                        .as_deref()
                        .is_some_and(|a| a > last.as_str())
                })
                .unwrap_or(all.len())
        }
        None => 0,
    };
    let page: Vec<_> = all.iter().skip(start).take(limit).cloned().collect();
    let next_token = (start + page.len() < all.len())
        .then(|| {
            page.last()
                .and_then(|r| r.gateway_route_arn.as_deref())
                .map(pagination::encode)
        })
        .flatten();
    Ok(ListGatewayRoutesResponse {
        gateway_routes: Some(page),
        next_token,
    })
}

fn route_not_found(arn: &str) -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        format!("The gateway route {arn} was not found."),
    )
}

pub(crate) fn describe_route(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeGatewayRouteRequest,
) -> Result<DescribeGatewayRouteResponse, AwsError> {
    let arn = input
        .gateway_route_arn
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing("gatewayRouteArn"))?;
    let parsed = Arn::parse(&arn)
        .filter(|a| a.service == "ecs" && a.resource_type() == "gateway-route")
        .ok_or_else(|| error::invalid_parameter(format!("Invalid gateway route ARN: {arn}")))?;
    if parsed.account != scope.account || parsed.region != scope.region {
        return Err(route_not_found(&arn));
    }
    let mut parts = parsed.resource.splitn(4, '/').skip(1);
    let (Some(cluster), Some(service)) = (parts.next(), parts.next()) else {
        return Err(error::invalid_parameter(format!(
            "Invalid gateway route ARN: {arn}"
        )));
    };
    let record: Option<ServiceRecord> =
        crate::state::records::load(view, &scope.service(cluster, service))?.map(|(s, _)| s);
    let found = record.and_then(|s| {
        let route = s.gateway_routes.iter().find(|r| r.arn == arn)?.clone();
        Some(route_view(scope, &s, &route))
    });
    Ok(DescribeGatewayRouteResponse {
        gateway_route: Some(found.ok_or_else(|| route_not_found(&arn))?),
    })
}

pub(crate) fn describe_resources(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeGatewayResourcesRequest,
) -> Result<DescribeGatewayResourcesResponse, AwsError> {
    let name = gw::resolve_name(scope, input.gateway.as_deref().unwrap_or_default())?;
    let record = gw::require(view, scope, &name)?;
    let limit = match input.max_results {
        None => 10,
        Some(n) if (1..=20).contains(&n) => n as usize,
        Some(n) => {
            return Err(error::invalid_parameter(format!(
                "maxResults must be between 1 and 20; got {n}."
            )))
        }
    };
    let start = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => pagination::decode(token)?
            .parse::<usize>()
            .map_err(|_| error::invalid_parameter("Invalid nextToken."))?,
        None => 0,
    };
    let routes = routes_on(view, scope, None)?;
    let albs: Vec<ElbGatewayResources> = record
        .albs
        .iter()
        .skip(start)
        .take(limit)
        .map(|alb| ElbGatewayResources {
            load_balancer_arn: Some(alb.load_balancer_arn.clone()),
            listener_arn: Some(alb.listener_arn.clone()),
            security_group: Some(alb.security_group.clone()),
            gateway_route_arns: Some(
                routes
                    .iter()
                    .filter(|(_, r)| {
                        r.gateway == name
                            && r.resources
                                .as_ref()
                                .is_some_and(|x| x.load_balancer_arn == alb.load_balancer_arn)
                    })
                    .map(|(_, r)| r.arn.clone())
                    .collect(),
            ),
        })
        .collect();
    let end = start + albs.len();
    Ok(DescribeGatewayResourcesResponse {
        gateway_resources: Some(GatewayResources {
            gateway_arn: Some(record.arn().to_string()),
            resources: Some(GatewayInfrastructureResources {
                host_shared_alb: Some(albs),
            }),
        }),
        next_token: (end < record.albs.len()).then(|| pagination::encode(&end.to_string())),
    })
}

/// Gateway routes deploy as rolling deployments: Berth's gateways keep no
/// test listener rules or alternate target groups for blue/green, linear
/// or canary deployments through them.
pub(crate) fn check_strategy(
    connectors: &[berth_model::shapes::ecs::GatewayConnector],
    strategy: &str,
) -> Result<(), AwsError> {
    if connectors.is_empty() || strategy == "ROLLING" {
        return Ok(());
    }
    Err(error::invalid_parameter(format!(
        "gatewayConnectors deploy with the ROLLING strategy in Berth: its gateways keep no test listener rules or alternate target groups for {strategy} deployments."
    )))
}

fn in_range(value: Option<i32>, min: i32, max: i32, member: &str) -> Result<(), AwsError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(error::invalid_parameter(format!(
            "{member} must be between {min} and {max}; got {v}."
        ))),
        _ => Ok(()),
    }
}

/// Checks a service's `gatewayConnectors` against its task definition and
/// cluster, as CreateService and UpdateService do before writing: awsvpc,
/// each port name once and defined on a container, health-check and
/// deregistration settings in range, and an ACTIVE gateway association on
/// the cluster (else the service would deploy without a URL).
pub(crate) fn check_connectors(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    connectors: &[berth_model::shapes::ecs::GatewayConnector],
    definition: &berth_model::shapes::ecs::TaskDefinition,
) -> Result<(), AwsError> {
    if connectors.is_empty() {
        return Ok(());
    }
    if definition.network_mode.as_deref() != Some("awsvpc") {
        return Err(error::invalid_parameter(
            "gatewayConnectors require a task definition that uses the awsvpc network mode.",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for c in connectors {
        let port = c
            .port_name
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| error::missing("gatewayConnectors.portName"))?;
        if seen.contains(&port) {
            return Err(error::invalid_parameter(format!(
                "The port name {port} is used by more than one gateway connector."
            )));
        }
        seen.push(port);
        if gw::named_port(definition, port).is_none() {
            return Err(error::invalid_parameter(format!(
                "The task definition does not define a container port named {port}: name the port in a container's portMappings."
            )));
        }
        if let Some(h) = &c.health_check {
            if let Some(p) = h.health_check_protocol.as_deref() {
                one_of(
                    p,
                    GATEWAY_CONNECTOR_HEALTH_CHECK_PROTOCOL_VALUES,
                    "healthCheck.healthCheckProtocol",
                )?;
            }
            in_range(h.health_check_port, 1, 65535, "healthCheck.healthCheckPort")?;
            in_range(
                h.health_check_interval_seconds,
                5,
                300,
                "healthCheck.healthCheckIntervalSeconds",
            )?;
            in_range(
                h.health_check_timeout_seconds,
                2,
                120,
                "healthCheck.healthCheckTimeoutSeconds",
            )?;
            in_range(
                h.healthy_threshold_count,
                2,
                10,
                "healthCheck.healthyThresholdCount",
            )?;
            in_range(
                h.unhealthy_threshold_count,
                2,
                10,
                "healthCheck.unhealthyThresholdCount",
            )?;
            if let (Some(t), Some(i)) = (
                h.health_check_timeout_seconds,
                h.health_check_interval_seconds,
            ) {
                if t >= i {
                    return Err(error::invalid_parameter(
                        "healthCheck.healthCheckTimeoutSeconds must be less than healthCheckIntervalSeconds.",
                    ));
                }
            }
            if let Some(path) = h.health_check_path.as_deref() {
                if !path.starts_with('/') || path.len() > 1024 {
                    return Err(error::invalid_parameter(
                        "healthCheck.healthCheckPath must start with / and be at most 1024 characters.",
                    ));
                }
            }
            if let Some(code) = h.matcher.as_ref().and_then(|m| m.http_code.as_deref()) {
                let ok = code
                    .split([',', '-'])
                    .all(|p| p.parse::<u16>().is_ok_and(|n| (200..=499).contains(&n)));
                if !ok {
                    return Err(error::invalid_parameter(format!(
                        "healthCheck.matcher.httpCode '{code}' is invalid: give codes from 200 to 499, as a list (200,202) or a range (200-299)."
                    )));
                }
            }
            if h.matcher.as_ref().is_some_and(|m| m.grpc_code.is_some()) {
                return Err(error::invalid_parameter(
                    "healthCheck.matcher.grpcCode applies to gRPC target groups; gateway routes forward HTTP/1.1.",
                ));
            }
        }
        if let Some(d) = &c.deregistration_delay {
            in_range(
                d.timeout_seconds,
                0,
                3600,
                "deregistrationDelay.timeoutSeconds",
            )?;
        }
        for t in c
            .filters
            .as_ref()
            .and_then(|f| f.access_types.as_deref())
            .unwrap_or(&[])
        {
            one_of(t, ACCESS_TYPE_VALUES, "filters.accessTypes")?;
        }
    }
    let active = gw::associations(view, scope)?
        .into_iter()
        .any(|a| a.cluster == cluster && a.status == ASSOCIATION_ACTIVE);
    if !active {
        return Err(error::invalid_parameter(format!(
            "No gateway is associated with the cluster {cluster}: associate one (AssociateGatewayWithCluster) before adding gatewayConnectors."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The gateway calls through the harness, and what they leave for the
    //! gateway controller.
    use serde_json::json;

    use crate::control::gateways::{GatewayControl, GatewayJob};
    use crate::test_support::Harness;

    const ROLE: &str = "arn:aws:iam::000000000000:role/infra";

    #[tokio::test]
    async fn gateways_associations_and_connectors_leave_route_work() {
        let h = Harness::new();
        let config = json!({"hostSharedAlb": {"networkConfiguration": {"subnets": ["subnet-1", "subnet-2"]}}});
        let out = h
            .ok(
                "CreateGateway",
                json!({"name": "edge", "infrastructureRoleArn": ROLE, "configuration": config}),
            )
            .await;
        assert_eq!(out["status"], "ACTIVE");
        for (input, code) in [
            (
                json!({"name": "x", "infrastructureRoleArn": ROLE}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "x", "infrastructureRoleArn": "arn:aws:iam::111111111111:role/r", "configuration": config}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "x", "infrastructureRoleArn": ROLE, "configuration": {"hostSharedAlb": {"accessLogs": {"destination": {"s3": {"bucket": "b"}}}}}}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "edge", "infrastructureRoleArn": ROLE, "configuration": config}),
                "InvalidParameterException",
            ),
        ] {
            assert_eq!(h.err("CreateGateway", input).await.code, code);
        }
        h.ok("CreateCluster", json!({"clusterName": "c"})).await;
        h.ok(
            "RegisterTaskDefinition",
            json!({"family": "web", "networkMode": "awsvpc", "containerDefinitions": [{
                "name": "web", "image": "i", "memory": 64,
                "portMappings": [{"containerPort": 8080, "name": "http"}]}]}),
        )
        .await;
        let service = json!({"cluster": "c", "serviceName": "s", "taskDefinition": "web",
            "desiredCount": 0,
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
            "gatewayConnectors": [{"portName": "http"}]});
        let e = h.err("CreateService", service.clone()).await;
        assert!(
            e.message.contains("No gateway is associated"),
            "{}",
            e.message
        );
        h.ok(
            "AssociateGatewayWithCluster",
            json!({"gateway": "edge", "cluster": "c"}),
        )
        .await;
        let mut blue_green = service.clone();
        blue_green["deploymentConfiguration"] = json!({"strategy": "BLUE_GREEN"});
        let e = h.err("CreateService", blue_green).await;
        assert!(e.message.contains("ROLLING"), "{}", e.message);
        h.ok("CreateService", service).await;
        let e = h
            .err(
                "UpdateService",
                json!({"cluster": "c", "service": "s",
                    "deploymentConfiguration": {"strategy": "CANARY",
                        "canaryConfiguration": {"canaryPercent": 10, "canaryBakeTimeInMinutes": 1}}}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");

        let control = GatewayControl::new(h.store.clone());
        let jobs = control.jobs(true).unwrap();
        let [GatewayJob::CreateRoute(route)] = &jobs[..] else {
            panic!("{jobs:?}");
        };
        assert_eq!(route.gateway.name(), "edge");
        assert_eq!(route.target, Some(("web".to_string(), 8080)));
        assert_eq!(route.vpc_id, "vpc-1");
        assert!(route
            .arn
            .starts_with("arn:aws:ecs:us-east-1:000000000000:gateway-route/c/s/"));

        // Recorded ACTIVE, the route shows and its target group becomes
        // one the service's tasks register in.
        let mut record = crate::state::gateways::GatewayRouteRecord {
            id: route.id.clone(),
            arn: route.arn.clone(),
            gateway: "edge".into(),
            gateway_arn: route.gateway.arn().into(),
            port_name: "http".into(),
            container_name: "web".into(),
            container_port: 8080,
            access_type: "PUBLIC".into(),
            status: "ACTIVE".into(),
            host: "s-1.example".into(),
            connector: route.connector_fingerprint.clone(),
            ..Default::default()
        };
        record.resources = Some(crate::state::gateways::RouteResources {
            target_group_arn: "arn:tg".into(),
            ..Default::default()
        });
        control
            .record_route(&h.scope(), "c", "s", record.clone())
            .await
            .unwrap();
        assert!(control.jobs(true).unwrap().is_empty());
        let listed = h.ok("ListGatewayRoutes", json!({"cluster": "c"})).await;
        assert_eq!(listed["gatewayRoutes"][0]["status"], "ACTIVE");
        let described = h
            .ok(
                "DescribeGatewayRoute",
                json!({"gatewayRouteArn": route.arn}),
            )
            .await;
        assert_eq!(
            described["gatewayRoute"]["serviceUrl"],
            "https://s-1.example"
        );
        let stored: crate::state::services::ServiceRecord =
            crate::state::records::load(h.store.as_ref(), &h.scope().service("c", "s"))
                .unwrap()
                .unwrap()
                .0;
        assert!(stored.has_balancers());
        // A changed health check provisions the route again.
        h.ok(
            "UpdateService",
            json!({"cluster": "c", "service": "s", "gatewayConnectors": [
                {"portName": "http", "healthCheck": {"healthCheckIntervalSeconds": 10}}]}),
        )
        .await;
        let jobs = control.jobs(true).unwrap();
        let [GatewayJob::CreateRoute(again)] = &jobs[..] else {
            panic!("{jobs:?}");
        };
        assert!(again.existing.is_some());
        assert_ne!(again.connector_fingerprint, record.connector);
        // Provisioned again, the route is up to date.
        record.connector = again.connector_fingerprint.clone();
        control
            .record_route(&h.scope(), "c", "s", record.clone())
            .await
            .unwrap();
        assert!(control.jobs(true).unwrap().is_empty());

        // Disassociating keeps the association while the route exists;
        // dropping the connector removes the route, then the association.
        let out = h
            .ok(
                "DisassociateGatewayFromCluster",
                json!({"gateway": "edge", "cluster": "c"}),
            )
            .await;
        assert_eq!(out["status"], "DISASSOCIATING");
        assert!(control.jobs(true).unwrap().is_empty());
        h.ok(
            "UpdateService",
            json!({"cluster": "c", "service": "s", "gatewayConnectors": []}),
        )
        .await;
        let jobs = control.jobs(true).unwrap();
        let [GatewayJob::RemoveRoute { route: gone, .. }] = &jobs[..] else {
            panic!("{jobs:?}");
        };
        control
            .forget_route(&h.scope(), "c", "s", &gone.id)
            .await
            .unwrap();
        let associations = h
            .ok("ListGatewayClusterAssociations", json!({"gateway": "edge"}))
            .await;
        assert_eq!(associations["gatewayClusterAssociations"], json!([]));
        // Protected until told otherwise; deleted, it is gone at once when
        // nothing was provisioned.
        assert_eq!(
            h.err("DeleteGateway", json!({"gateway": "edge"}))
                .await
                .code,
            "ClientException"
        );
        h.ok(
            "UpdateGateway",
            json!({"gateway": "edge", "deletionProtection": false}),
        )
        .await;
        h.ok("DeleteGateway", json!({"gateway": "edge"})).await;
        assert_eq!(
            h.err("DescribeGateway", json!({"gateway": "edge"}))
                .await
                .code,
            "GatewayNotFoundException"
        );
    }
}
