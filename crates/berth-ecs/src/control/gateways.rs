//! The gateway controller's side in ECS: which routes, load balancers and
//! gateways need work ([`GatewayControl::jobs`], from
//! [`crate::state::gateways::plan`]), and the records of what was done
//! (`record_*`). The provisioning itself (Elastic Load Balancing, ACM,
//! EC2) is the binary's, which runs this as leader work.

use std::sync::Arc;

use berth_model::shapes::ecs::GatewayConnector;
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::gateways::{
    self as gw, AssociationRecord, GatewayAlb, GatewayRecord, GatewayRouteRecord, RouteWork,
    DISASSOCIATING,
};
use crate::state::keys::{self, Scope};
use crate::state::records::{decode, encode, fingerprint, load};
use crate::state::services::ServiceRecord;
use crate::state::task_definitions::{self, TaskDefinitionRecord};

pub use crate::state::gateways::{GatewayAlb as ProvisionedAlb, RouteResources, WantedRoute};

/// A route to provision.
#[derive(Debug, Clone)]
pub struct RouteToCreate {
    pub scope: Scope,
    pub cluster: String,
    pub service: String,
    pub gateway: GatewayRecord,
    pub wanted: WantedRoute,
    pub connector: GatewayConnector,
    /// The route as recorded so far (a retry), if any.
    pub existing: Option<GatewayRouteRecord>,
    /// The id and ARN the route has (kept across retries).
    pub id: String,
    pub arn: String,
    /// The container and port the connector's port name names, when the
    /// service's task definition still defines it.
    pub target: Option<(String, i32)>,
    pub vpc_id: String,
    pub service_security_groups: Vec<String>,
    /// What to record as the route's `connector` once provisioned.
    pub connector_fingerprint: String,
}

/// One piece of work for the gateway controller.
#[derive(Debug, Clone)]
pub enum GatewayJob {
    CreateRoute(Box<RouteToCreate>),
    RemoveRoute {
        scope: Scope,
        cluster: String,
        service: String,
        route: GatewayRouteRecord,
    },
    /// A deleted gateway whose load balancers remain.
    DeleteGateway {
        scope: Scope,
        gateway: GatewayRecord,
    },
    /// An updated gateway whose load balancers take the change.
    ApplyUpdate {
        scope: Scope,
        gateway: GatewayRecord,
    },
}

/// The task definition a service runs (its current revision).
fn task_definition_of(
    view: &dyn ReadView,
    scope: &Scope,
    service: &ServiceRecord,
) -> Option<berth_model::shapes::ecs::TaskDefinition> {
    let reference = service
        .service
        .task_definition
        .as_deref()
        .filter(|r| !r.is_empty())?;
    let parsed = task_definitions::parse_reference(scope, reference).ok()?;
    task_definitions::find(view, scope, &parsed)
        .ok()?
        .map(|(r, _): (TaskDefinitionRecord, u64)| r.task_definition)
}

/// ECS's records for the gateway controller.
pub struct GatewayControl {
    store: Arc<dyn Store>,
}

/// A route's id: a digest of what it joins, so no two routes of a region
/// share one (their host names are made from it).
fn route_id(cluster: &str, service: &str, gateway: &str, port_name: &str) -> String {
    use sha2::Digest;
    let digest =
        sha2::Sha256::digest(format!("{cluster}\n{service}\n{gateway}\n{port_name}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl GatewayControl {
    pub fn new(store: Arc<dyn Store>) -> Self {
        GatewayControl { store }
    }

    /// The prefix whose changes may make work.
    pub fn watch_prefix() -> &'static str {
        "/ecs/"
    }

    /// Everything that needs doing now, across accounts and regions.
    /// `thorough`: also look for routes left on services in accounts and
    /// regions without gateways (a read of every service there, so only
    /// on the controller's sweep, not on every write).
    pub fn jobs(&self, thorough: bool) -> Result<Vec<GatewayJob>, AwsError> {
        let view = self.store.as_ref();
        let mut jobs = Vec::new();
        for scope in keys::scopes(view) {
            let gateways: Vec<GatewayRecord> = view
                .range(&scope.gateways(), None, usize::MAX)
                .iter()
                .map(decode)
                .collect::<Result<_, _>>()?;
            let associations = gw::associations(view, &scope)?;
            for g in &gateways {
                match g.gateway.status.as_deref() {
                    Some(gw::DELETED) => jobs.push(GatewayJob::DeleteGateway {
                        scope: scope.clone(),
                        gateway: g.clone(),
                    }),
                    Some("UPDATE_IN_PROGRESS") => jobs.push(GatewayJob::ApplyUpdate {
                        scope: scope.clone(),
                        gateway: g.clone(),
                    }),
                    _ => {}
                }
            }
            if gateways.is_empty() && associations.is_empty() {
                if !thorough {
                    continue;
                }
                // Services can still hold routes of a gateway gone.
                let any_routes = view
                    .range(&scope.all_services(), None, usize::MAX)
                    .iter()
                    .any(|s| s.value.windows(15).any(|w| w == b"\"gatewayRoutes\""));
                if !any_routes {
                    continue;
                }
            }
            for skv in view.range(&scope.all_services(), None, usize::MAX) {
                // One unreadable service must not stop the others' work.
                let service: ServiceRecord = match decode(&skv) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(key = %skv.key, error = %e.message, "a service record is unreadable");
                        continue;
                    }
                };
                if service.gateway_connectors.is_empty() && service.gateway_routes.is_empty() {
                    continue;
                }
                let definition = task_definition_of(view, &scope, &service);
                let work = gw::plan(&service, &gateways, &associations, definition.as_ref());
                for w in work {
                    match self.job(&scope, &service, definition.as_ref(), &gateways, w) {
                        Ok(job) => jobs.push(job),
                        Err(e) => {
                            tracing::warn!(service = %service.name, error = %e.message, "gateway work skipped")
                        }
                    }
                }
            }
        }
        Ok(jobs)
    }

    fn job(
        &self,
        scope: &Scope,
        service: &ServiceRecord,
        definition: Option<&berth_model::shapes::ecs::TaskDefinition>,
        gateways: &[GatewayRecord],
        work: RouteWork,
    ) -> Result<GatewayJob, AwsError> {
        match work {
            RouteWork::Remove(route) => Ok(GatewayJob::RemoveRoute {
                scope: scope.clone(),
                cluster: service.cluster.clone(),
                service: service.name.clone(),
                route: *route,
            }),
            RouteWork::Create(wanted) => {
                let gateway = gateways
                    .iter()
                    .find(|g| g.name() == wanted.gateway)
                    .cloned()
                    .ok_or_else(gw::not_found)?;
                let connector = service
                    .gateway_connectors
                    .iter()
                    .find(|c| c.port_name.as_deref() == Some(wanted.port_name.as_str()))
                    .cloned()
                    .unwrap_or_default();
                let connector_fingerprint = fingerprint(&connector);
                let existing = service
                    .gateway_routes
                    .iter()
                    .find(|r| r.gateway == wanted.gateway && r.port_name == wanted.port_name)
                    .cloned();
                let id = existing.as_ref().map(|r| r.id.clone()).unwrap_or_else(|| {
                    route_id(
                        &service.cluster,
                        &service.name,
                        &wanted.gateway,
                        &wanted.port_name,
                    )
                });
                let arn = gw::route_arn(scope, &service.cluster, &service.name, &id);
                let target = definition.and_then(|td| gw::named_port(td, &wanted.port_name));
                Ok(GatewayJob::CreateRoute(Box::new(RouteToCreate {
                    scope: scope.clone(),
                    cluster: service.cluster.clone(),
                    service: service.name.clone(),
                    gateway,
                    wanted,
                    connector,
                    existing,
                    id,
                    arn,
                    target,
                    vpc_id: gw::service_vpc(service).to_string(),
                    service_security_groups: service
                        .network
                        .as_ref()
                        .map(|n| n.security_groups.clone())
                        .unwrap_or_default(),
                    connector_fingerprint,
                })))
            }
        }
    }

    /// Records a gateway's provisioned load balancer (once).
    /// `seen_updated_at` is the gateway's `updatedAt` as the controller
    /// read it when it configured the load balancer: an UpdateGateway
    /// answered meanwhile (UPDATE_COMPLETE, nothing was provisioned then)
    /// is applied again.
    pub async fn record_alb(
        &self,
        scope: &Scope,
        gateway: &str,
        alb: GatewayAlb,
        seen_updated_at: Option<f64>,
    ) -> Result<(), AwsError> {
        self.edit_gateway(scope, gateway, move |record| {
            if record
                .albs
                .iter()
                .any(|a| a.load_balancer_arn == alb.load_balancer_arn)
            {
                return false;
            }
            record.albs.push(alb.clone());
            if record.gateway.updated_at != seen_updated_at
                && record.gateway.status.as_deref() != Some(gw::DELETED)
            {
                record.gateway.status = Some("UPDATE_IN_PROGRESS".into());
            }
            true
        })
        .await
    }

    /// Whether a route other than `except` still needs ingress on
    /// `service_group` from `lb_group` on `port`.
    pub fn ingress_in_use(
        &self,
        scope: &Scope,
        service_group: &str,
        lb_group: &str,
        port: i32,
        except: &str,
    ) -> bool {
        self.store
            .range(&scope.all_services(), None, usize::MAX)
            .iter()
            .filter_map(|kv| decode::<ServiceRecord>(kv).ok())
            .any(|s| {
                s.gateway_routes.iter().any(|r| {
                    r.id != except
                        && r.container_port == port
                        && r.resources.as_ref().is_some_and(|x| {
                            x.service_security_group.as_deref() == Some(service_group)
                                && x.load_balancer_security_group == lb_group
                        })
                })
            })
    }

    /// Changes a stored gateway with `change` (which answers whether it
    /// changed anything) in one store mutation; nothing when it is gone.
    async fn edit_gateway(
        &self,
        scope: &Scope,
        gateway: &str,
        change: impl Fn(&mut GatewayRecord) -> bool + Send + 'static,
    ) -> Result<(), AwsError> {
        let (scope, gateway) = (scope.clone(), gateway.to_string());
        self.store
            .update(move |view| {
                let key = scope.gateway(&gateway);
                let Some((mut record, _)) = load::<GatewayRecord>(view, &key)? else {
                    return Ok((Vec::new(), ()));
                };
                if !change(&mut record) {
                    return Ok((Vec::new(), ()));
                }
                Ok((vec![Op::put(key, encode(&record)?)], ()))
            })
            .await
            .map_err(error::store)??;
        Ok(())
    }

    /// Records a route's state (created, failed) on its service, unless
    /// the service no longer wants it.
    pub async fn record_route(
        &self,
        scope: &Scope,
        cluster: &str,
        service: &str,
        route: GatewayRouteRecord,
    ) -> Result<(), AwsError> {
        let (scope, cluster, service) = (scope.clone(), cluster.to_string(), service.to_string());
        self.store
            .update(move |view| {
                let key = scope.service(&cluster, &service);
                let Some((mut record, _)) = load::<ServiceRecord>(view, &key)? else {
                    return Ok((Vec::new(), ()));
                };
                let slot = record
                    .gateway_routes
                    .iter_mut()
                    .find(|r| r.gateway == route.gateway && r.port_name == route.port_name);
                let before = match slot {
                    Some(existing) if *existing == route => return Ok((Vec::new(), ())),
                    Some(existing) => Some(std::mem::replace(existing, route.clone())),
                    None => {
                        record.gateway_routes.push(route.clone());
                        None
                    }
                };
                // The service's events say what became of the route (the
                // route itself has no reason to show).
                let changed = before.as_ref().is_none_or(|b| {
                    b.status != route.status || b.status_reason != route.status_reason
                });
                if changed {
                    let name = record.name.clone();
                    let what = match (route.status.as_str(), route.service_url()) {
                        (gw::ROUTE_ACTIVE, Some(url)) => format!(
                            "(service {name}) gateway route (port {}) through (gateway {}) serves {url}.",
                            route.port_name, route.gateway
                        ),
                        (gw::ROUTE_FAILED, _) => format!(
                            "(service {name}) was unable to create the gateway route (port {}) through (gateway {}): {}",
                            route.port_name,
                            route.gateway,
                            route.status_reason.as_deref().unwrap_or("unknown reason")
                        ),
                        _ => String::new(),
                    };
                    if !what.is_empty() {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or_default();
                        record.event(what, now);
                    }
                }
                Ok((vec![Op::put(key, encode(&record)?)], ()))
            })
            .await
            .map_err(error::store)??;
        Ok(())
    }

    /// Forgets a route whose resources are gone; an association left
    /// DISASSOCIATING goes with its last route.
    pub async fn forget_route(
        &self,
        scope: &Scope,
        cluster: &str,
        service: &str,
        route_id: &str,
    ) -> Result<(), AwsError> {
        let (scope, cluster, service, id) = (
            scope.clone(),
            cluster.to_string(),
            service.to_string(),
            route_id.to_string(),
        );
        self.store
            .update(move |view| {
                let key = scope.service(&cluster, &service);
                let Some((mut record, _)) = load::<ServiceRecord>(view, &key)? else {
                    return Ok((Vec::new(), ()));
                };
                let Some(index) = record.gateway_routes.iter().position(|r| r.id == id) else {
                    return Ok((Vec::new(), ()));
                };
                let gone = record.gateway_routes.remove(index);
                let mut ops = vec![Op::put(key, encode(&record)?)];
                let association_key = scope.gateway_association(&gone.gateway, &cluster);
                if let Some((association, _)) = load::<AssociationRecord>(view, &association_key)? {
                    let others = view
                        .range(&scope.services(&cluster), None, usize::MAX)
                        .iter()
                        .filter(|kv| kv.key != scope.service(&cluster, &service))
                        .filter_map(|kv| decode::<ServiceRecord>(kv).ok())
                        .any(|s| s.gateway_routes.iter().any(|r| r.gateway == gone.gateway));
                    let left = others
                        || record
                            .gateway_routes
                            .iter()
                            .any(|r| r.gateway == gone.gateway);
                    if association.status == DISASSOCIATING && !left {
                        ops.push(Op::delete(association_key));
                    }
                }
                Ok((ops, ()))
            })
            .await
            .map_err(error::store)??;
        Ok(())
    }

    /// A deleted gateway's load balancers are gone: the record goes.
    pub async fn finish_delete(&self, scope: &Scope, gateway: &str) -> Result<(), AwsError> {
        let (scope, gateway) = (scope.clone(), gateway.to_string());
        self.store
            .update(move |view| {
                let key = scope.gateway(&gateway);
                match load::<GatewayRecord>(view, &key)? {
                    Some((g, _)) if g.gateway.status.as_deref() == Some(gw::DELETED) => {
                        Ok((vec![Op::delete(key)], ()))
                    }
                    _ => Ok((Vec::new(), ())),
                }
            })
            .await
            .map_err(error::store)??;
        Ok(())
    }

    /// An update reached every load balancer (or failed on some).
    pub async fn finish_update(
        &self,
        scope: &Scope,
        gateway: &str,
        updated_at: Option<f64>,
        failures: Vec<berth_model::shapes::ecs::GatewayResourceFailure>,
    ) -> Result<(), AwsError> {
        self.edit_gateway(scope, gateway, move |record| {
            // A newer update started meanwhile: it gets its own pass.
            if record.gateway.status.as_deref() != Some("UPDATE_IN_PROGRESS")
                || record.gateway.updated_at != updated_at
            {
                return false;
            }
            if failures.is_empty() {
                record.gateway.status = Some(gw::UPDATE_COMPLETE.into());
                record.gateway.status_reason = None;
                record.gateway.failures = None;
            } else {
                record.gateway.status = Some("UPDATE_FAILED".into());
                record.gateway.status_reason = Some(format!(
                    "The update could not be applied to {} of the gateway's load balancers.",
                    failures.len()
                ));
                record.gateway.failures = Some(failures.clone());
            }
            true
        })
        .await
    }
}

/// The route states the controller writes.
pub mod route_status {
    pub use crate::state::gateways::{
        ROUTE_ACTIVE as ACTIVE, ROUTE_CREATING as CREATING, ROUTE_FAILED as FAILED,
    };
}

pub use crate::state::gateways::{GatewayRecord as Gateway, GatewayRouteRecord as Route};
