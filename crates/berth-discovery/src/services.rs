//! Services: their DNS settings and health checks, updates (which rewrite
//! the record sets of every instance), attributes and deletion.

use berth_model::shapes::servicediscovery as sd;
use berth_model::{AwsError, RequestContext};
use berth_util::time::now_epoch;

use crate::authz;
use crate::dns;
use crate::model::{
    self, fingerprint, invalid, namespace_not_found, read, read_all, service_not_found,
    DnsConfigRecord, DnsRecordSpec, InstanceRecord, NamespaceRecord, Scope, ServiceRecord, Tx,
    DNS_HTTP, HTTP, MAX_SERVICE_ATTRIBUTES,
};
use crate::namespaces::namespace_in;
use crate::support::{
    earlier_request, filter, page, record_operation, remember_request, service_shape,
    service_summary,
};
use crate::validate;
use crate::DiscoveryService;

const NO_ROUTE53_CHECKS: &str =
    "Berth runs no Route 53 health checks, so HealthCheckConfig is not \
     supported; use HealthCheckCustomConfig and UpdateInstanceCustomHealthStatus";

/// The service named by `id`, or ServiceNotFound.
pub(crate) fn service_in(tx: &Tx<'_>, scope: &Scope, id: &str) -> Result<ServiceRecord, AwsError> {
    tx.get(&scope.service_key(id))?
        .ok_or_else(service_not_found)
}

/// Whether two service names collide in `ns` (DNS names ignore case).
fn same_name(ns: &NamespaceRecord, a: &str, b: &str) -> bool {
    if ns.is_dns() {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn dns_config(config: &sd::DnsConfig) -> Result<DnsConfigRecord, AwsError> {
    let routing_policy = config
        .routing_policy
        .clone()
        .unwrap_or_else(|| "MULTIVALUE".to_string());
    if !sd::ROUTING_POLICY_VALUES.contains(&routing_policy.as_str()) {
        return Err(invalid(format!(
            "RoutingPolicy '{routing_policy}' is not valid: use MULTIVALUE or WEIGHTED"
        )));
    }
    let records = validate::dns_records(&config.dns_records)?;
    if records.iter().any(|(t, _)| t == "CNAME") && routing_policy != "WEIGHTED" {
        return Err(invalid(
            "A service with a CNAME record must use the WEIGHTED routing policy",
        ));
    }
    Ok(DnsConfigRecord {
        routing_policy,
        records: records
            .into_iter()
            .map(|(record_type, ttl)| DnsRecordSpec { record_type, ttl })
            .collect(),
    })
}

/// Rewrites the record sets of every instance of `svc` (after a change of
/// its DNS settings).
fn republish(
    tx: &mut Tx<'_>,
    scope: &Scope,
    ns: &NamespaceRecord,
    svc: &ServiceRecord,
) -> Result<(), AwsError> {
    let instances: Vec<InstanceRecord> = tx.list(&scope.instances(&svc.id))?;
    for inst in instances {
        let previous = inst.dns_keys.clone();
        let key = scope.instance_key(&svc.id, &inst.id);
        dns::put_instance(tx, key, ns, svc, inst, &previous)?;
    }
    Ok(())
}

impl DiscoveryService {
    /// Resolves a service id or ARN and reads it (for authorization).
    pub(crate) fn service_for_auth(
        &self,
        scope: &Scope,
        value: Option<&String>,
        what: &str,
    ) -> Result<(String, Option<ServiceRecord>), AwsError> {
        let value = validate::required(&value.cloned(), what)?.to_string();
        validate::max_len(Some(&value), 255, what)?;
        let id = validate::service_id(scope, &value).ok_or_else(service_not_found)?;
        let svc = read(self.store.as_ref(), &scope.service_key(&id))?;
        Ok((id, svc))
    }

    pub(crate) async fn create_service(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::CreateServiceRequest,
    ) -> Result<sd::CreateServiceResponse, AwsError> {
        let name = validate::required(&input.name, "Name")?.to_string();
        validate::service_name(&name)?;
        let namespace = input
            .namespace_id
            .clone()
            .or_else(|| {
                input
                    .dns_config
                    .as_ref()
                    .and_then(|d| d.namespace_id.clone())
            })
            .ok_or_else(|| invalid("NamespaceId is required"))?;
        validate::max_len(Some(&namespace), 255, "NamespaceId")?;
        validate::max_len(input.description.as_deref(), 1024, "Description")?;
        validate::max_len(input.creator_request_id.as_deref(), 64, "CreatorRequestId")?;
        if let Some(t) = input.r#type.as_deref() {
            if t != HTTP {
                return Err(invalid(format!(
                    "Type '{t}' is not valid: the only value is HTTP"
                )));
            }
            if input.dns_config.is_some() {
                return Err(invalid(
                    "A service of Type HTTP cannot have a DnsConfig: its instances are discovered with DiscoverInstances only",
                ));
            }
        }
        if input.health_check_config.is_some() && input.health_check_custom_config.is_some() {
            return Err(invalid(
                "Specify HealthCheckConfig or HealthCheckCustomConfig, not both",
            ));
        }
        if input.health_check_config.is_some() {
            return Err(invalid(NO_ROUTE53_CHECKS));
        }
        if let Some(t) = input
            .health_check_custom_config
            .as_ref()
            .and_then(|c| c.failure_threshold)
        {
            if !(1..=10).contains(&t) {
                return Err(invalid(format!(
                    "FailureThreshold {t} is not valid: it must be between 1 and 10"
                )));
            }
        }
        let config = input.dns_config.as_ref().map(dns_config).transpose()?;
        let tags = validate::tags(&input.tags)?;
        if tags.len() > model::MAX_TAGS {
            return Err(validate::too_many_tags(&name));
        }
        let ns_id = validate::namespace_id(scope, &namespace).ok_or_else(namespace_not_found)?;
        let ns: Option<NamespaceRecord> = read(self.store.as_ref(), &scope.namespace_key(&ns_id))?;
        let id = model::new_service_id();
        ctx.authorize(&[
            authz::with_request_tags(
                authz::on_namespace("CreateService", scope, &ns_id, ns.as_ref()),
                &tags,
            ),
            authz::with_request_tags(authz::on_service("CreateService", scope, &id, None), &tags),
        ])?;
        let print = fingerprint(&input);
        let scope2 = scope.clone();
        let svc = self
            .mutate(move |tx| {
                let scope = &scope2;
                let crid = input.creator_request_id.as_deref();
                if let Some(earlier) = earlier_request(tx, scope, "service", crid, &print)? {
                    if let Some(svc) = tx.get::<ServiceRecord>(&scope.service_key(&earlier))? {
                        return Ok(svc);
                    }
                }
                let mut ns = namespace_in(tx, scope, &ns_id)?;
                if config.is_some() && !ns.is_dns() {
                    return Err(invalid(format!(
                        "Namespace {ns_id} is an HTTP namespace: its services cannot have a DnsConfig"
                    )));
                }
                let services: Vec<ServiceRecord> = tx.list(&scope.services())?;
                if let Some(existing) = services
                    .iter()
                    .find(|s| s.namespace_id == ns_id && same_name(&ns, &s.name, &name))
                {
                    return Err(AwsError::bad_request(
                        "ServiceAlreadyExists",
                        format!(
                            "Service {} already exists in namespace {ns_id} ({})",
                            existing.name, existing.id
                        ),
                    ));
                }
                let service_type = if config.is_some() { DNS_HTTP } else { HTTP };
                let svc = ServiceRecord {
                    id: id.clone(),
                    arn: scope.service_arn(&id),
                    name: name.clone(),
                    namespace_id: ns_id.clone(),
                    description: input.description.clone(),
                    service_type: service_type.to_string(),
                    dns_config: config.clone(),
                    custom_health: input.health_check_custom_config.is_some(),
                    created: now_epoch(),
                    creator_request_id: input.creator_request_id.clone(),
                    tags: tags.clone(),
                    instance_count: 0,
                    instances_revision: 0,
                    attributes: Default::default(),
                };
                ns.service_count += 1;
                tx.put(scope.namespace_key(&ns_id), &ns)?;
                tx.put(scope.service_key(&id), &svc)?;
                remember_request(tx, scope, "service", crid, &print, &id)?;
                Ok(svc)
            })
            .await?;
        Ok(sd::CreateServiceResponse {
            service: Some(service_shape(&svc, scope)),
        })
    }

    pub(crate) async fn get_service(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::GetServiceRequest,
    ) -> Result<sd::GetServiceResponse, AwsError> {
        let (id, svc) = self.service_for_auth(scope, input.id.as_ref(), "Id")?;
        ctx.authorize(&[authz::on_service("GetService", scope, &id, svc.as_ref())])?;
        let svc = svc.ok_or_else(service_not_found)?;
        Ok(sd::GetServiceResponse {
            service: Some(service_shape(&svc, scope)),
        })
    }

    pub(crate) async fn list_services(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::ListServicesRequest,
    ) -> Result<sd::ListServicesResponse, AwsError> {
        let size = validate::page_size(input.max_results, 100, 100)?;
        let mut filters = Vec::new();
        for f in input.filters.iter().flatten() {
            let mut f = filter(
                f.name.as_deref(),
                f.condition.as_deref(),
                f.values.as_ref(),
                sd::SERVICE_FILTER_NAME_VALUES,
                &[("NAMESPACE_ID", &["EQ"]), ("RESOURCE_OWNER", &["EQ"])],
            )?;
            if f.name == "NAMESPACE_ID" {
                // An id or an ARN; one naming nothing here matches nothing.
                f.values = f
                    .values
                    .iter()
                    .map(|v| validate::namespace_id(scope, v).unwrap_or_default())
                    .collect();
            }
            if f.name == "RESOURCE_OWNER"
                && f.values
                    .iter()
                    .any(|v| v != "SELF" && v != "OTHER_ACCOUNTS")
            {
                return Err(invalid("RESOURCE_OWNER takes SELF or OTHER_ACCOUNTS"));
            }
            filters.push(f);
        }
        crate::support::decode_token(input.next_token.as_deref())?;
        ctx.authorize(&[authz::anywhere("ListServices")])?;
        let all: Vec<ServiceRecord> = read_all(self.store.as_ref(), &scope.services())?;
        let matching: Vec<ServiceRecord> = all
            .into_iter()
            .filter(|s| {
                filters.iter().all(|f| match f.name.as_str() {
                    "NAMESPACE_ID" => f.matches(&s.namespace_id),
                    "RESOURCE_OWNER" => f.matches("SELF"),
                    _ => true,
                })
            })
            .collect();
        let (items, next) = page(
            matching,
            |s| s.id.clone(),
            input.next_token.as_deref(),
            size,
        )?;
        Ok(sd::ListServicesResponse {
            services: Some(items.iter().map(|s| service_summary(s, scope)).collect()),
            next_token: next,
        })
    }

    pub(crate) async fn update_service(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UpdateServiceRequest,
    ) -> Result<sd::UpdateServiceResponse, AwsError> {
        let change = input
            .service
            .clone()
            .ok_or_else(|| invalid("Service is required"))?;
        validate::max_len(change.description.as_deref(), 1024, "Description")?;
        if change.health_check_config.is_some() {
            return Err(invalid(NO_ROUTE53_CHECKS));
        }
        let records = match &change.dns_config {
            Some(c) => Some(validate::dns_records(&c.dns_records)?),
            None => None,
        };
        let (id, svc) = self.service_for_auth(scope, input.id.as_ref(), "Id")?;
        ctx.authorize(&[authz::on_service("UpdateService", scope, &id, svc.as_ref())])?;
        let scope = scope.clone();
        let op = self
            .mutate(move |tx| {
                let mut svc = service_in(tx, &scope, &id)?;
                let ns = namespace_in(tx, &scope, &svc.namespace_id)?;
                if !ns.is_dns() {
                    return Err(invalid(format!(
                        "Service {id} is in the HTTP namespace {}: UpdateService cannot update services of HTTP namespaces",
                        ns.id
                    )));
                }
                if let Some(d) = &change.description {
                    svc.description = Some(d.clone());
                }
                if let Some(records) = &records {
                    let config = svc.dns_config.as_mut().ok_or_else(|| {
                        invalid(format!("Service {id} has no DnsConfig to update"))
                    })?;
                    let mut old: Vec<&str> =
                        config.records.iter().map(|r| r.record_type.as_str()).collect();
                    let mut new: Vec<&str> = records.iter().map(|(t, _)| t.as_str()).collect();
                    old.sort_unstable();
                    new.sort_unstable();
                    if old != new {
                        return Err(invalid(
                            "The record types of a service cannot be changed: only their TTLs can. Delete and recreate the service to change its record types",
                        ));
                    }
                    config.records = records
                        .iter()
                        .map(|(t, ttl)| DnsRecordSpec {
                            record_type: t.clone(),
                            ttl: *ttl,
                        })
                        .collect();
                }
                tx.put(scope.service_key(&id), &svc)?;
                republish(tx, &scope, &ns, &svc)?;
                record_operation(tx, &scope, "UPDATE_SERVICE", &[("SERVICE", &id)])
            })
            .await?;
        Ok(sd::UpdateServiceResponse {
            operation_id: Some(op),
        })
    }

    pub(crate) async fn delete_service(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::DeleteServiceRequest,
    ) -> Result<sd::DeleteServiceResponse, AwsError> {
        let (id, svc) = self.service_for_auth(scope, input.id.as_ref(), "Id")?;
        ctx.authorize(&[authz::on_service("DeleteService", scope, &id, svc.as_ref())])?;
        let scope = scope.clone();
        self.mutate(move |tx| {
            let svc = service_in(tx, &scope, &id)?;
            let instances: Vec<InstanceRecord> = tx.list(&scope.instances(&id))?;
            if !instances.is_empty() {
                return Err(AwsError::bad_request(
                    "ResourceInUse",
                    format!(
                        "Service {id} has {} registered instance(s); deregister them first",
                        instances.len()
                    ),
                ));
            }
            if let Some(mut ns) =
                tx.get::<NamespaceRecord>(&scope.namespace_key(&svc.namespace_id))?
            {
                ns.service_count = (ns.service_count - 1).max(0);
                tx.put(scope.namespace_key(&ns.id), &ns)?;
            }
            tx.delete(scope.service_key(&id));
            Ok(())
        })
        .await?;
        Ok(sd::DeleteServiceResponse {})
    }

    pub(crate) async fn get_service_attributes(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::GetServiceAttributesRequest,
    ) -> Result<sd::GetServiceAttributesResponse, AwsError> {
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "GetServiceAttributes",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        let svc = svc.ok_or_else(service_not_found)?;
        Ok(sd::GetServiceAttributesResponse {
            service_attributes: Some(sd::ServiceAttributes {
                service_arn: Some(svc.arn.clone()),
                resource_owner: Some(scope.account.clone()),
                attributes: crate::support::attributes_shape(&svc.attributes),
            }),
        })
    }

    pub(crate) async fn update_service_attributes(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UpdateServiceAttributesRequest,
    ) -> Result<sd::UpdateServiceAttributesResponse, AwsError> {
        let attrs = input
            .attributes
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid("Attributes must contain at least one attribute"))?;
        if attrs.len() > MAX_SERVICE_ATTRIBUTES {
            return Err(invalid(format!(
                "Attributes can hold at most {MAX_SERVICE_ATTRIBUTES} attributes"
            )));
        }
        for (k, v) in &attrs {
            if k.is_empty() || k.chars().count() > 255 || v.chars().count() > 1024 {
                return Err(invalid(format!(
                    "Service attribute '{k}' is not valid: keys are 1 to 255 characters, values 1024 at most"
                )));
            }
        }
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "UpdateServiceAttributes",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        let scope = scope.clone();
        self.mutate(move |tx| {
            let mut svc = service_in(tx, &scope, &id)?;
            svc.attributes.extend(attrs.clone());
            if svc.attributes.len() > MAX_SERVICE_ATTRIBUTES {
                return Err(AwsError::bad_request(
                    "ServiceAttributesLimitExceededException",
                    format!("A service can have at most {MAX_SERVICE_ATTRIBUTES} attributes"),
                ));
            }
            tx.put(scope.service_key(&id), &svc)
        })
        .await?;
        Ok(sd::UpdateServiceAttributesResponse {})
    }

    pub(crate) async fn delete_service_attributes(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::DeleteServiceAttributesRequest,
    ) -> Result<sd::DeleteServiceAttributesResponse, AwsError> {
        let keys = input
            .attributes
            .clone()
            .filter(|a| !a.is_empty() && a.len() <= MAX_SERVICE_ATTRIBUTES)
            .ok_or_else(|| invalid("Attributes must name 1 to 30 attribute keys"))?;
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "DeleteServiceAttributes",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        let scope = scope.clone();
        self.mutate(move |tx| {
            let mut svc = service_in(tx, &scope, &id)?;
            for k in &keys {
                svc.attributes.remove(k);
            }
            tx.put(scope.service_key(&id), &svc)
        })
        .await?;
        Ok(sd::DeleteServiceAttributesResponse {})
    }
}
