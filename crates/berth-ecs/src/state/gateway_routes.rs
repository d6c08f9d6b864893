//! Gateway routes as a service record keeps them (see
//! [`crate::state::gateways`] for what makes them).

use berth_model::shapes::ecs::LoadBalancer;
use serde::{Deserialize, Serialize};

pub const ROUTE_CREATING: &str = "CREATE_IN_PROGRESS";
pub const ROUTE_ACTIVE: &str = "ACTIVE";
pub const ROUTE_FAILED: &str = "CREATE_FAILED";

/// What a route was given: the rule, target group and host name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteResources {
    pub load_balancer_arn: String,
    pub listener_arn: String,
    pub listener_rule_arn: String,
    pub target_group_arn: String,
    pub certificate_arn: String,
    pub load_balancer_security_group: String,
    /// The service security group given ingress from the load balancer.
    #[serde(default)]
    pub service_security_group: Option<String>,
}

/// A gateway route: one service connector through one gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRouteRecord {
    pub id: String,
    pub arn: String,
    pub gateway: String,
    pub gateway_arn: String,
    pub port_name: String,
    pub container_name: String,
    pub container_port: i32,
    pub access_type: String,
    pub status: String,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// `https://<host>` once the route is provisioned.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub resources: Option<RouteResources>,
    /// A fingerprint of the connector the route was provisioned for: a
    /// changed health check or deregistration delay provisions it again.
    #[serde(default)]
    pub connector: String,
}

impl GatewayRouteRecord {
    pub fn service_url(&self) -> Option<String> {
        (!self.host.is_empty()).then(|| format!("https://{}", self.host))
    }
}

/// The target groups of provisioned routes, as load balancers a
/// service's tasks register in.
pub(crate) fn balancers(routes: &[GatewayRouteRecord]) -> Vec<LoadBalancer> {
    routes
        .iter()
        .filter(|r| r.status == ROUTE_ACTIVE)
        .filter_map(|r| {
            let resources = r.resources.as_ref()?;
            Some(LoadBalancer {
                target_group_arn: Some(resources.target_group_arn.clone()),
                container_name: Some(r.container_name.clone()),
                container_port: Some(r.container_port),
                ..Default::default()
            })
        })
        .collect()
}
