//! ECS gateways (`gateways/<name>`), their cluster associations
//! (`gateway-associations/<gateway>/<cluster>`) and the routes a gateway
//! keeps for each service connector (on the service record, see
//! [`GatewayRouteRecord`]).
//!
//! A gateway is configuration until a service connects: the gateway
//! controller (leader work in the binary, over Elastic Load Balancing, ACM
//! and EC2) provisions its Application Load Balancer, HTTPS listener and
//! certificate for the first route, and a target group and host-header
//! rule for each route. What it must do is decided here, purely:
//! [`plan`] compares the routes services should have with the routes they
//! have.

use berth_model::shapes::ecs::{Gateway, GatewayConnector, Tag};
use berth_model::{Arn, AwsError};
use berth_store::ReadView;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::{decode, load};
use crate::state::services::{ServiceRecord, ACTIVE as SERVICE_ACTIVE};

pub use crate::state::gateway_routes::{
    GatewayRouteRecord, RouteResources, ROUTE_ACTIVE, ROUTE_CREATING, ROUTE_FAILED,
};

pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const UPDATE_COMPLETE: &str = "UPDATE_COMPLETE";
pub(crate) const DELETED: &str = "DELETED";

pub(crate) const ASSOCIATION_ACTIVE: &str = "ACTIVE";
pub(crate) const DISASSOCIATING: &str = "DISASSOCIATING";

pub(crate) const PUBLIC: &str = "PUBLIC";
pub(crate) const PRIVATE: &str = "PRIVATE";

/// Gateways a cluster may be associated with (ECS's quota).
pub(crate) const MAX_GATEWAYS_PER_CLUSTER: usize = 5;

impl Scope {
    pub fn gateways(&self) -> String {
        format!("/ecs/{}/{}/gateways/", self.account, self.region)
    }

    pub fn gateway(&self, name: &str) -> String {
        format!("{}{name}", self.gateways())
    }

    pub fn gateway_associations(&self) -> String {
        format!(
            "/ecs/{}/{}/gateway-associations/",
            self.account, self.region
        )
    }

    pub fn gateway_association(&self, gateway: &str, cluster: &str) -> String {
        format!("{}{gateway}/{cluster}", self.gateway_associations())
    }
}

/// What the gateway controller provisioned for a gateway: its load
/// balancer, HTTPS listener, certificate and security group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAlb {
    pub load_balancer_arn: String,
    pub listener_arn: String,
    pub certificate_arn: String,
    /// The load balancer's security group (the gateway's own, or the
    /// caller's `inboundSecurityGroup`).
    pub security_group: String,
    /// The DNS domain the routes' host names are under.
    pub domain: String,
}

/// A stored gateway: the API's view plus what the controller provisioned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRecord {
    pub gateway: Gateway,
    #[serde(default)]
    pub client_token: Option<String>,
    /// A fingerprint of the CreateGateway call (for clientToken retries).
    #[serde(default)]
    pub request: String,
    /// The VPC of the gateway's subnets.
    #[serde(default)]
    pub vpc_id: String,
    #[serde(default)]
    pub albs: Vec<GatewayAlb>,
}

impl GatewayRecord {
    pub fn name(&self) -> &str {
        self.gateway.name.as_deref().unwrap_or_default()
    }

    pub fn arn(&self) -> &str {
        self.gateway.gateway_arn.as_deref().unwrap_or_default()
    }

    pub fn access_type(&self) -> &str {
        self.gateway.access_type.as_deref().unwrap_or(PUBLIC)
    }

    pub fn scheme(&self) -> &str {
        self.alb_config()
            .and_then(|c| c.scheme.as_deref())
            .unwrap_or("internet-facing")
    }

    pub fn subnets(&self) -> Vec<String> {
        self.alb_config()
            .and_then(|c| c.network_configuration.as_ref())
            .and_then(|n| n.subnets.clone())
            .unwrap_or_default()
    }

    pub fn inbound_security_group(&self) -> Option<&str> {
        self.alb_config()
            .and_then(|c| c.network_configuration.as_ref())
            .and_then(|n| n.inbound_security_group.as_deref())
    }

    pub fn http_desync(&self) -> &str {
        self.alb_config()
            .and_then(|c| c.http_desync.as_deref())
            .unwrap_or("defensive")
    }

    pub fn deletion_protection(&self) -> bool {
        self.gateway.deletion_protection.unwrap_or(true)
    }

    pub fn tags(&self) -> &[Tag] {
        self.gateway.tags.as_deref().unwrap_or(&[])
    }

    pub fn propagates_tags(&self) -> bool {
        self.gateway.propagate_tags.as_deref() != Some("NONE")
    }

    fn alb_config(&self) -> Option<&berth_model::shapes::ecs::DescribeGatewayAlbConfiguration> {
        self.gateway
            .configuration
            .as_ref()
            .and_then(|c| c.host_shared_alb.as_ref())
    }
}

/// A gateway's association with a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationRecord {
    pub gateway: String,
    pub gateway_arn: String,
    pub cluster: String,
    pub cluster_arn: String,
    pub status: String,
}

pub(crate) fn gateway_arn(scope: &Scope, name: &str) -> String {
    scope.arn(&format!("gateway/{name}"))
}

pub(crate) fn route_arn(scope: &Scope, cluster: &str, service: &str, id: &str) -> String {
    scope.arn(&format!("gateway-route/{cluster}/{service}/{id}"))
}

pub(crate) fn not_found() -> AwsError {
    AwsError::bad_request(
        "GatewayNotFoundException",
        "The specified gateway was not found. Specify a valid gateway name or ARN and try again.",
    )
}

/// Checks a new gateway's name: up to 255 letters, digits, hyphens and
/// underscores.
pub(crate) fn check_name(name: &str) -> Result<(), AwsError> {
    let ok = crate::state::records::is_plain_name(name);
    if ok {
        Ok(())
    } else {
        Err(error::invalid_parameter(
            "The gateway name is invalid. Up to 255 characters are allowed, including letters (upper and lowercase), numbers, underscores, and hyphens.",
        ))
    }
}

/// A gateway reference (name or ARN) as its name.
pub(crate) fn resolve_name(scope: &Scope, reference: &str) -> Result<String, AwsError> {
    if reference.is_empty() {
        return Err(error::missing("gateway"));
    }
    if !reference.starts_with("arn:") {
        return Ok(reference.to_string());
    }
    let arn = Arn::parse(reference)
        .filter(|a| a.service == "ecs" && a.resource_type() == "gateway")
        .ok_or_else(|| error::invalid_parameter(format!("Invalid gateway ARN: {reference}")))?;
    if arn.account != scope.account || arn.region != scope.region {
        return Err(not_found());
    }
    Ok(arn.resource_id().to_string())
}

/// A gateway that exists (not DELETED).
pub(crate) fn find(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<Option<GatewayRecord>, AwsError> {
    Ok(load::<GatewayRecord>(view, &scope.gateway(name))?
        .map(|(g, _)| g)
        .filter(|g| g.gateway.status.as_deref() != Some(DELETED)))
}

pub(crate) fn require(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<GatewayRecord, AwsError> {
    find(view, scope, name)?.ok_or_else(not_found)
}

/// Every association (any status).
pub(crate) fn associations(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
) -> Result<Vec<AssociationRecord>, AwsError> {
    view.range(&scope.gateway_associations(), None, usize::MAX)
        .iter()
        .map(decode)
        .collect()
}

/// The route a service should have through a gateway for one connector.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedRoute {
    pub gateway: String,
    pub port_name: String,
    pub access_type: String,
}

/// The gateways' part of a service record: its connectors as given.
pub(crate) fn connectors(record: &ServiceRecord) -> &[GatewayConnector] {
    &record.gateway_connectors
}

/// The access types a connector accepts (both when it names none).
fn accepts(connector: &GatewayConnector, access_type: &str) -> bool {
    match connector
        .filters
        .as_ref()
        .and_then(|f| f.access_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(types) => types.iter().any(|t| t == access_type),
        None => true,
    }
}

/// The routes `service` should have: one per connector and gateway that
/// is associated (ACTIVE) with its cluster, in the connector's VPC and
/// accepted by its access-type filter. None for a service that is not
/// ACTIVE.
pub fn wanted_routes(
    service: &ServiceRecord,
    gateways: &[GatewayRecord],
    associations: &[AssociationRecord],
) -> Vec<WantedRoute> {
    if service.service.status.as_deref() != Some(SERVICE_ACTIVE) {
        return Vec::new();
    }
    let service_vpc = service_vpc(service);
    let mut out = Vec::new();
    for connector in connectors(service) {
        let port = connector.port_name.clone().unwrap_or_default();
        for association in associations
            .iter()
            .filter(|a| a.cluster == service.cluster && a.status == ASSOCIATION_ACTIVE)
        {
            let Some(gateway) = gateways.iter().find(|g| {
                g.name() == association.gateway && g.gateway.status.as_deref() != Some(DELETED)
            }) else {
                continue;
            };
            if !gateway.vpc_id.is_empty() && gateway.vpc_id != service_vpc {
                continue;
            }
            if !accepts(connector, gateway.access_type()) {
                continue;
            }
            out.push(WantedRoute {
                gateway: gateway.name().to_string(),
                port_name: port.clone(),
                access_type: gateway.access_type().to_string(),
            });
        }
    }
    out
}

/// The VPC of a service's awsvpc subnets ("" without awsvpc).
pub(crate) fn service_vpc(service: &ServiceRecord) -> &str {
    service
        .network
        .as_ref()
        .and_then(|n| n.subnets.first())
        .map(|s| s.vpc_id.as_str())
        .unwrap_or_default()
}

/// What the gateway controller must do for one service.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteWork {
    /// Provision a route (a new one, or one whose creation failed or was
    /// interrupted).
    Create(WantedRoute),
    /// Remove a route no longer wanted (and its rule and target group).
    Remove(Box<GatewayRouteRecord>),
}

/// The work that brings `service`'s routes to what is wanted.
/// `definition` is the task definition the service runs: an ACTIVE route
/// is provisioned again when it maps the route's port name to another
/// container or port, or when the route's connector changed.
pub fn plan(
    service: &ServiceRecord,
    gateways: &[GatewayRecord],
    associations: &[AssociationRecord],
    definition: Option<&berth_model::shapes::ecs::TaskDefinition>,
) -> Vec<RouteWork> {
    let wanted = wanted_routes(service, gateways, associations);
    let mut work = Vec::new();
    let mut again = Vec::new();
    for route in &service.gateway_routes {
        // A route through a gateway being disassociated stays while the
        // service keeps its connector (ECS: until the service is updated).
        let winding_down = service.service.status.as_deref() == Some(SERVICE_ACTIVE)
            && associations.iter().any(|a| {
                a.gateway == route.gateway
                    && a.cluster == service.cluster
                    && a.status == DISASSOCIATING
            })
            && connectors(service)
                .iter()
                .any(|c| c.port_name.as_deref() == Some(route.port_name.as_str()));
        let still = winding_down
            || wanted
                .iter()
                .any(|w| w.gateway == route.gateway && w.port_name == route.port_name);
        if !still {
            work.push(RouteWork::Remove(Box::new(route.clone())));
        } else if route.status == ROUTE_ACTIVE && is_stale(service, route, definition) {
            again.push(RouteWork::Create(WantedRoute {
                gateway: route.gateway.clone(),
                port_name: route.port_name.clone(),
                access_type: route.access_type.clone(),
            }));
        }
    }
    for w in wanted {
        let have = service
            .gateway_routes
            .iter()
            .find(|r| r.gateway == w.gateway && r.port_name == w.port_name);
        match have {
            Some(r) if r.status == ROUTE_ACTIVE => {}
            // Failed routes are retried by the sweep; the reason stays shown.
            _ => work.push(RouteWork::Create(w)),
        }
    }
    work.extend(again);
    work
}

/// Whether an ACTIVE route no longer matches what the service asks: its
/// port name now names another container or port in the definition, or
/// its connector changed since it was provisioned.
fn is_stale(
    service: &ServiceRecord,
    route: &GatewayRouteRecord,
    definition: Option<&berth_model::shapes::ecs::TaskDefinition>,
) -> bool {
    let Some((name, port)) = definition.and_then(|td| named_port(td, &route.port_name)) else {
        return false;
    };
    let changed_connector = connectors(service)
        .iter()
        .find(|c| c.port_name.as_deref() == Some(route.port_name.as_str()))
        .is_some_and(|c| crate::state::records::fingerprint(c) != route.connector);
    changed_connector || name != route.container_name || port != route.container_port
}

/// The target groups of a service's provisioned routes, as load balancers
/// its tasks register in (beside the service's own `loadBalancers`).
pub(crate) fn route_balancers(
    service: &ServiceRecord,
) -> Vec<berth_model::shapes::ecs::LoadBalancer> {
    crate::state::gateway_routes::balancers(&service.gateway_routes)
}

/// The container and port a connector's port name names in the service's
/// task definition.
pub(crate) fn named_port(
    definition: &berth_model::shapes::ecs::TaskDefinition,
    port_name: &str,
) -> Option<(String, i32)> {
    for container in definition.container_definitions.iter().flatten() {
        for mapping in container.port_mappings.iter().flatten() {
            if mapping.name.as_deref() == Some(port_name) {
                let port = mapping.container_port?;
                return Some((container.name.clone().unwrap_or_default(), port));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::{GatewayConnectorFilters, Service};

    fn gateway(name: &str, access: &str) -> GatewayRecord {
        GatewayRecord {
            gateway: Gateway {
                name: Some(name.into()),
                status: Some(ACTIVE.into()),
                access_type: Some(access.into()),
                ..Gateway::default()
            },
            vpc_id: "vpc-1".into(),
            ..GatewayRecord::default()
        }
    }

    fn association(gateway: &str, cluster: &str, status: &str) -> AssociationRecord {
        AssociationRecord {
            gateway: gateway.into(),
            cluster: cluster.into(),
            status: status.into(),
            ..AssociationRecord::default()
        }
    }

    fn service(connectors: Vec<GatewayConnector>) -> ServiceRecord {
        ServiceRecord {
            name: "web".into(),
            cluster: "c1".into(),
            service: Service {
                status: Some(SERVICE_ACTIVE.into()),
                ..Service::default()
            },
            network: Some(crate::state::network::AwsVpc {
                subnets: vec![crate::state::network::SubnetInfo {
                    subnet_id: "subnet-1".into(),
                    vpc_id: "vpc-1".into(),
                    availability_zone: "us-east-1a".into(),
                }],
                security_groups: Vec::new(),
                assign_public_ip: "DISABLED".into(),
            }),
            gateway_connectors: connectors,
            ..ServiceRecord::default()
        }
    }

    fn connector(port: &str, types: Option<&[&str]>) -> GatewayConnector {
        GatewayConnector {
            port_name: Some(port.into()),
            filters: types.map(|t| GatewayConnectorFilters {
                access_types: Some(t.iter().map(|s| s.to_string()).collect()),
            }),
            ..GatewayConnector::default()
        }
    }

    #[test]
    fn routes_follow_associations_filters_and_vpcs() {
        let gateways = vec![
            gateway("pub", PUBLIC),
            gateway("priv", PRIVATE),
            GatewayRecord {
                vpc_id: "vpc-other".into(),
                ..gateway("elsewhere", PUBLIC)
            },
            gateway("unassociated", PUBLIC),
        ];
        let associations = vec![
            association("pub", "c1", ASSOCIATION_ACTIVE),
            association("priv", "c1", ASSOCIATION_ACTIVE),
            association("elsewhere", "c1", ASSOCIATION_ACTIVE),
            association("unassociated", "c1", DISASSOCIATING),
            association("unassociated", "c2", ASSOCIATION_ACTIVE),
        ];
        let all = wanted_routes(
            &service(vec![connector("http", None)]),
            &gateways,
            &associations,
        );
        let names: Vec<_> = all.iter().map(|w| w.gateway.as_str()).collect();
        assert_eq!(names, ["pub", "priv"]);
        let public_only = wanted_routes(
            &service(vec![connector("http", Some(&[PUBLIC]))]),
            &gateways,
            &associations,
        );
        assert_eq!(public_only.len(), 1);
        assert_eq!(public_only[0].access_type, PUBLIC);
        let mut draining = service(vec![connector("http", None)]);
        draining.service.status = Some("DRAINING".into());
        assert!(wanted_routes(&draining, &gateways, &associations).is_empty());
    }

    #[test]
    fn plan_creates_missing_retries_failed_and_removes_unwanted() {
        let gateways = vec![gateway("pub", PUBLIC), gateway("old", PUBLIC)];
        let associations = vec![association("pub", "c1", ASSOCIATION_ACTIVE)];
        let mut record = service(vec![connector("http", None)]);
        let work = plan(&record, &gateways, &associations, None);
        assert!(matches!(&work[..], [RouteWork::Create(w)] if w.gateway == "pub"));
        record.gateway_routes = vec![
            GatewayRouteRecord {
                gateway: "pub".into(),
                port_name: "http".into(),
                status: ROUTE_ACTIVE.into(),
                ..GatewayRouteRecord::default()
            },
            GatewayRouteRecord {
                gateway: "old".into(),
                port_name: "http".into(),
                status: ROUTE_ACTIVE.into(),
                ..GatewayRouteRecord::default()
            },
        ];
        let work = plan(&record, &gateways, &associations, None);
        assert!(matches!(&work[..], [RouteWork::Remove(r)] if r.gateway == "old"));
        record.gateway_routes.truncate(1);
        record.gateway_routes[0].status = ROUTE_FAILED.into();
        let work = plan(&record, &gateways, &associations, None);
        assert!(matches!(&work[..], [RouteWork::Create(w)] if w.gateway == "pub"));
    }
}
