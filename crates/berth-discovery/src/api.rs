//! The Rust API other Berth crates use (ECS's service registries): the
//! same registrations as RegisterInstance / DeregisterInstance /
//! UpdateInstanceCustomHealthStatus, with the same checks and DNS
//! publication, but no HTTP and no IAM (the caller acts for Berth itself,
//! on the service the user named in `serviceRegistries`, which ECS
//! authorized when the ECS service was created).

use std::collections::BTreeMap;

use berth_model::AwsError;

use crate::model::{
    read, read_all, service_not_found, InstanceRecord, NamespaceRecord, Scope, ServiceRecord,
};
use crate::validate;
use crate::DiscoveryService;

/// A registered instance, as ListInstances / DiscoverInstances show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredInstance {
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    /// `HEALTHY`, `UNHEALTHY`, or `UNKNOWN` for a service without a health
    /// check.
    pub health_status: String,
}

/// What a caller needs to know to register into a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub namespace_id: String,
    pub namespace_name: String,
    /// The DNS record types its instances publish (`A`, `AAAA`, `SRV`,
    /// `CNAME`); empty for an HTTP-only service.
    pub record_types: Vec<String>,
    /// Whether it has a HealthCheckCustomConfig (then
    /// [`DiscoveryService::set_custom_health`] applies).
    pub custom_health: bool,
}

impl DiscoveryService {
    fn resolve_service(&self, scope: &Scope, service: &str) -> Result<String, AwsError> {
        validate::service_id(scope, service).ok_or_else(service_not_found)
    }

    /// The service named by `service` (an id `srv-…` or its ARN, such as an
    /// ECS `serviceRegistries[].registryArn`).
    pub fn service_info(
        &self,
        account: &str,
        region: &str,
        service: &str,
    ) -> Result<ServiceInfo, AwsError> {
        let scope = Scope::new(account, region);
        let id = self.resolve_service(&scope, service)?;
        let svc: ServiceRecord =
            read(self.store.as_ref(), &scope.service_key(&id))?.ok_or_else(service_not_found)?;
        let ns: Option<NamespaceRecord> =
            read(self.store.as_ref(), &scope.namespace_key(&svc.namespace_id))?;
        Ok(ServiceInfo {
            id: svc.id.clone(),
            arn: svc.arn.clone(),
            name: svc.name.clone(),
            namespace_id: svc.namespace_id.clone(),
            namespace_name: ns.map(|n| n.name).unwrap_or_default(),
            record_types: svc
                .dns_config
                .iter()
                .flat_map(|c| c.records.iter().map(|r| r.record_type.clone()))
                .collect(),
            custom_health: svc.custom_health,
        })
    }

    /// Registers (or updates) `instance_id` in `service` with `attributes`
    /// (`AWS_INSTANCE_IPV4`, `AWS_INSTANCE_PORT`, custom ones …), writing its
    /// DNS record sets in the same mutation. Returns the operation id.
    /// Errors as RegisterInstance's (ServiceNotFound, InvalidInput …).
    pub async fn register_instance(
        &self,
        account: &str,
        region: &str,
        service: &str,
        instance_id: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<String, AwsError> {
        let scope = Scope::new(account, region);
        validate::instance_id(instance_id)?;
        validate::attributes(&attributes)?;
        let id = self.resolve_service(&scope, service)?;
        self.register_core(&scope, id, instance_id.to_string(), attributes, None)
            .await
    }

    /// Deregisters `instance_id` and removes its DNS record sets. `Ok(None)`
    /// when it was not registered (deregistering twice is harmless), else
    /// the operation id.
    pub async fn deregister_instance(
        &self,
        account: &str,
        region: &str,
        service: &str,
        instance_id: &str,
    ) -> Result<Option<String>, AwsError> {
        let scope = Scope::new(account, region);
        let id = self.resolve_service(&scope, service)?;
        self.deregister_core(&scope, id, instance_id.to_string(), true)
            .await
    }

    /// Sets the custom health status of an instance (its DNS record sets
    /// follow). CustomHealthNotFound when the service has no
    /// HealthCheckCustomConfig; InstanceNotFound when it is not registered.
    pub async fn set_custom_health(
        &self,
        account: &str,
        region: &str,
        service: &str,
        instance_id: &str,
        healthy: bool,
    ) -> Result<(), AwsError> {
        let scope = Scope::new(account, region);
        let id = self.resolve_service(&scope, service)?;
        let status = if healthy { "HEALTHY" } else { "UNHEALTHY" };
        self.custom_health_core(&scope, id, instance_id.to_string(), status)
            .await
    }

    /// Every instance registered in `service`, by id.
    pub fn list_instances(
        &self,
        account: &str,
        region: &str,
        service: &str,
    ) -> Result<Vec<RegisteredInstance>, AwsError> {
        let scope = Scope::new(account, region);
        let id = self.resolve_service(&scope, service)?;
        if self.store.get(&scope.service_key(&id)).is_none() {
            return Err(service_not_found());
        }
        let all: Vec<InstanceRecord> = read_all(self.store.as_ref(), &scope.instances(&id))?;
        Ok(all
            .into_iter()
            .map(|i| RegisteredInstance {
                health_status: i.health_status().to_string(),
                id: i.id,
                attributes: i.attributes,
            })
            .collect())
    }
}
