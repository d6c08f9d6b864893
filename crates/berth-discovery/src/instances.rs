//! Instances: registration (with their DNS record sets), deregistration,
//! custom health, and discovery.

use std::collections::BTreeMap;

use berth_model::shapes::servicediscovery as sd;
use berth_model::{AwsError, RequestContext};
use rand::seq::SliceRandom;

use crate::authz;
use crate::dns;
use crate::model::{
    fingerprint, instance_not_found, invalid, namespace_not_found, read, read_all,
    service_not_found, InstanceRecord, NamespaceRecord, Scope, ServiceRecord,
};
use crate::namespaces::namespace_in;
use crate::services::service_in;
use crate::support::{attributes_shape, earlier_request, page, record_operation, remember_request};
use crate::validate;
use crate::DiscoveryService;

/// Checks an instance's attributes against what its service publishes.
fn attributes_fit(
    ns: &NamespaceRecord,
    svc: &ServiceRecord,
    attrs: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    if attrs.contains_key("AWS_ALIAS_DNS_NAME") {
        return Err(invalid(
            "Berth cannot create alias records (AWS_ALIAS_DNS_NAME): they route to Elastic Load Balancing load balancers through Route 53, which Berth's DNS does not serve",
        ));
    }
    if attrs.contains_key("AWS_EC2_INSTANCE_ID") {
        return Err(invalid(
            "Berth has no EC2 instances to register by AWS_EC2_INSTANCE_ID; register the address with AWS_INSTANCE_IPV4",
        ));
    }
    let Some(config) = &svc.dns_config else {
        return Ok(());
    };
    let need = |key: &str, why: &str| -> Result<(), AwsError> {
        if attrs.contains_key(key) {
            Ok(())
        } else {
            Err(invalid(format!(
                "Attribute {key} is required: service {} has {why}",
                svc.id
            )))
        }
    };
    for spec in &config.records {
        match spec.record_type.as_str() {
            "A" => need("AWS_INSTANCE_IPV4", "an A record")?,
            "AAAA" => need("AWS_INSTANCE_IPV6", "an AAAA record")?,
            "CNAME" => need("AWS_INSTANCE_CNAME", "a CNAME record")?,
            "SRV" => {
                need("AWS_INSTANCE_PORT", "an SRV record")?;
                if !attrs.contains_key("AWS_INSTANCE_IPV4")
                    && !attrs.contains_key("AWS_INSTANCE_IPV6")
                {
                    return Err(invalid(format!(
                        "Attribute AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6 is required: service {} has an SRV record",
                        svc.id
                    )));
                }
            }
            _ => {}
        }
    }
    let _ = ns;
    Ok(())
}

/// The order-independent identity of a registration (for CreatorRequestId).
#[derive(serde::Serialize)]
struct Registration<'a> {
    service: &'a str,
    instance: &'a str,
    attributes: &'a BTreeMap<String, String>,
}

impl DiscoveryService {
    /// Registers (or re-registers) an instance in one mutation with its DNS
    /// record sets; returns the operation id. `service_id` is resolved.
    pub(crate) async fn register_core(
        &self,
        scope: &Scope,
        service_id: String,
        instance_id: String,
        attributes: BTreeMap<String, String>,
        creator_request_id: Option<String>,
    ) -> Result<String, AwsError> {
        let print = fingerprint(&Registration {
            service: &service_id,
            instance: &instance_id,
            attributes: &attributes,
        });
        let scope = scope.clone();
        self.mutate(move |tx| {
            let crid = creator_request_id.as_deref();
            if let Some(op) = earlier_request(tx, &scope, "register", crid, &print)? {
                return Ok(op);
            }
            let mut svc = service_in(tx, &scope, &service_id)?;
            let ns = namespace_in(tx, &scope, &svc.namespace_id)?;
            attributes_fit(&ns, &svc, &attributes)?;
            let key = scope.instance_key(&service_id, &instance_id);
            let existing: Option<InstanceRecord> = tx.get(&key)?;
            let custom_health = if svc.custom_health {
                attributes
                    .get("AWS_INIT_HEALTH_STATUS")
                    .cloned()
                    .or_else(|| existing.as_ref().and_then(|e| e.custom_health.clone()))
                    .or_else(|| Some("HEALTHY".to_string()))
            } else {
                None
            };
            let previous = existing
                .as_ref()
                .map(|e| e.dns_keys.clone())
                .unwrap_or_default();
            if existing.is_none() {
                svc.instance_count += 1;
            }
            svc.instances_revision += 1;
            let inst = InstanceRecord {
                id: instance_id.clone(),
                service_id: service_id.clone(),
                attributes: attributes.clone(),
                creator_request_id: creator_request_id.clone(),
                created_by: scope.account.clone(),
                custom_health,
                dns_keys: Vec::new(),
            };
            dns::put_instance(tx, key, &ns, &svc, inst, &previous)?;
            tx.put(scope.service_key(&service_id), &svc)?;
            let op = record_operation(
                tx,
                &scope,
                "REGISTER_INSTANCE",
                &[("INSTANCE", &instance_id), ("SERVICE", &service_id)],
            )?;
            remember_request(tx, &scope, "register", crid, &print, &op)?;
            Ok(op)
        })
        .await
    }

    /// Deregisters an instance and removes its record sets; `Ok(None)` when
    /// `missing_ok` and it was not registered.
    pub(crate) async fn deregister_core(
        &self,
        scope: &Scope,
        service_id: String,
        instance_id: String,
        missing_ok: bool,
    ) -> Result<Option<String>, AwsError> {
        let scope = scope.clone();
        self.mutate(move |tx| {
            let mut svc = service_in(tx, &scope, &service_id)?;
            let key = scope.instance_key(&service_id, &instance_id);
            let Some(inst) = tx.get::<InstanceRecord>(&key)? else {
                if missing_ok {
                    return Ok(None);
                }
                return Err(instance_not_found(&instance_id));
            };
            dns::delete_instance(tx, key, &inst);
            svc.instance_count = (svc.instance_count - 1).max(0);
            svc.instances_revision += 1;
            tx.put(scope.service_key(&service_id), &svc)?;
            record_operation(
                tx,
                &scope,
                "DEREGISTER_INSTANCE",
                &[("INSTANCE", &instance_id), ("SERVICE", &service_id)],
            )
            .map(Some)
        })
        .await
    }

    /// Sets an instance's custom health status (and its record sets'
    /// health) in one mutation.
    pub(crate) async fn custom_health_core(
        &self,
        scope: &Scope,
        service_id: String,
        instance_id: String,
        status: &'static str,
    ) -> Result<(), AwsError> {
        let scope = scope.clone();
        self.mutate(move |tx| {
            let mut svc = service_in(tx, &scope, &service_id)?;
            let key = scope.instance_key(&service_id, &instance_id);
            let mut inst: InstanceRecord = tx
                .get(&key)?
                .ok_or_else(|| instance_not_found(&instance_id))?;
            if !svc.custom_health {
                return Err(AwsError::bad_request(
                    "CustomHealthNotFound",
                    format!(
                        "Service {service_id} has no HealthCheckCustomConfig: only custom health checks can be updated"
                    ),
                ));
            }
            if inst.custom_health.as_deref() == Some(status) {
                return Ok(());
            }
            let ns = namespace_in(tx, &scope, &svc.namespace_id)?;
            inst.custom_health = Some(status.to_string());
            let previous = inst.dns_keys.clone();
            dns::put_instance(tx, key, &ns, &svc, inst, &previous)?;
            svc.instances_revision += 1;
            tx.put(scope.service_key(&service_id), &svc)
        })
        .await
    }

    pub(crate) async fn http_register_instance(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::RegisterInstanceRequest,
    ) -> Result<sd::RegisterInstanceResponse, AwsError> {
        let instance_id = validate::required(&input.instance_id, "InstanceId")?.to_string();
        validate::instance_id(&instance_id)?;
        validate::max_len(input.creator_request_id.as_deref(), 64, "CreatorRequestId")?;
        let attributes = input
            .attributes
            .clone()
            .ok_or_else(|| invalid("Attributes is required"))?;
        validate::attributes(&attributes)?;
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "RegisterInstance",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        let op = self
            .register_core(scope, id, instance_id, attributes, input.creator_request_id)
            .await?;
        Ok(sd::RegisterInstanceResponse {
            operation_id: Some(op),
        })
    }

    pub(crate) async fn http_deregister_instance(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::DeregisterInstanceRequest,
    ) -> Result<sd::DeregisterInstanceResponse, AwsError> {
        let instance_id = validate::required(&input.instance_id, "InstanceId")?.to_string();
        validate::max_len(Some(&instance_id), 64, "InstanceId")?;
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "DeregisterInstance",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        let op = self.deregister_core(scope, id, instance_id, false).await?;
        Ok(sd::DeregisterInstanceResponse { operation_id: op })
    }

    pub(crate) async fn get_instance(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::GetInstanceRequest,
    ) -> Result<sd::GetInstanceResponse, AwsError> {
        let instance_id = validate::required(&input.instance_id, "InstanceId")?.to_string();
        validate::max_len(Some(&instance_id), 64, "InstanceId")?;
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service("GetInstance", scope, &id, svc.as_ref())])?;
        svc.ok_or_else(service_not_found)?;
        let inst: InstanceRecord =
            read(self.store.as_ref(), &scope.instance_key(&id, &instance_id))?
                .ok_or_else(|| instance_not_found(&instance_id))?;
        Ok(sd::GetInstanceResponse {
            resource_owner: Some(scope.account.clone()),
            instance: Some(sd::Instance {
                id: Some(inst.id),
                creator_request_id: inst.creator_request_id,
                attributes: attributes_shape(&inst.attributes),
                created_by_account: Some(inst.created_by),
            }),
        })
    }

    pub(crate) async fn list_instances_api(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::ListInstancesRequest,
    ) -> Result<sd::ListInstancesResponse, AwsError> {
        let size = validate::page_size(input.max_results, 100, 100)?;
        crate::support::decode_token(input.next_token.as_deref())?;
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service("ListInstances", scope, &id, svc.as_ref())])?;
        svc.ok_or_else(service_not_found)?;
        let all: Vec<InstanceRecord> = read_all(self.store.as_ref(), &scope.instances(&id))?;
        let (items, next) = page(all, |i| i.id.clone(), input.next_token.as_deref(), size)?;
        Ok(sd::ListInstancesResponse {
            resource_owner: Some(scope.account.clone()),
            instances: Some(
                items
                    .into_iter()
                    .map(|i| sd::InstanceSummary {
                        id: Some(i.id),
                        attributes: attributes_shape(&i.attributes),
                        created_by_account: Some(i.created_by),
                    })
                    .collect(),
            ),
            next_token: next,
        })
    }

    /// The namespace (by HttpName) and service (by name) DiscoverInstances
    /// names, authorized with `operation`.
    fn discovered(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        operation: &str,
        namespace_name: Option<&String>,
        service_name: Option<&String>,
        owner: Option<&String>,
    ) -> Result<(NamespaceRecord, ServiceRecord), AwsError> {
        let ns_name = validate::required(&namespace_name.cloned(), "NamespaceName")?.to_string();
        validate::namespace_name(&ns_name, 1024, "NamespaceName")?;
        let svc_name = validate::required(&service_name.cloned(), "ServiceName")?.to_string();
        validate::service_name(&svc_name)?;
        if let Some(o) = owner {
            if o.len() != 12 || !o.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("OwnerAccount must be a 12-digit account id"));
            }
        }
        let namespaces: Vec<NamespaceRecord> = read_all(self.store.as_ref(), &scope.namespaces())?;
        let ns = namespaces.into_iter().find(|n| n.http_name == ns_name);
        let requirement = match &ns {
            Some(ns) => authz::on_namespace(operation, scope, &ns.id, Some(ns)),
            None => authz::anywhere(operation).condition(authz::NAMESPACE_NAME, ns_name.clone()),
        }
        .condition(authz::SERVICE_NAME, svc_name.clone());
        ctx.authorize(&[requirement])?;
        if owner.is_some_and(|o| *o != scope.account) {
            return Err(namespace_not_found());
        }
        let ns = ns.ok_or_else(namespace_not_found)?;
        let services: Vec<ServiceRecord> = read_all(self.store.as_ref(), &scope.services())?;
        let svc = services
            .into_iter()
            .find(|s| {
                s.namespace_id == ns.id
                    && if ns.is_dns() {
                        s.name.eq_ignore_ascii_case(&svc_name)
                    } else {
                        s.name == svc_name
                    }
            })
            .ok_or_else(service_not_found)?;
        Ok((ns, svc))
    }

    pub(crate) async fn discover_instances(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::DiscoverInstancesRequest,
    ) -> Result<sd::DiscoverInstancesResponse, AwsError> {
        let max = match input.max_results {
            None => 100,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            Some(n) => {
                return Err(invalid(format!(
                    "MaxResults {n} is not valid: it must be between 1 and 1000"
                )))
            }
        };
        let health = input
            .health_status
            .clone()
            .unwrap_or_else(|| "ALL".to_string());
        if !sd::HEALTH_STATUS_FILTER_VALUES.contains(&health.as_str()) {
            return Err(invalid(format!(
                "HealthStatus '{health}' is not valid: use HEALTHY, UNHEALTHY, ALL or HEALTHY_OR_ELSE_ALL"
            )));
        }
        let query = input.query_parameters.clone().unwrap_or_default();
        let optional = input.optional_parameters.clone().unwrap_or_default();
        for (k, v) in query.iter().chain(optional.iter()) {
            if k.is_empty() || k.len() > 255 || v.len() > 1024 {
                return Err(invalid(format!("Query parameter '{k}' is not valid")));
            }
        }
        let (ns, svc) = self.discovered(
            ctx,
            scope,
            "DiscoverInstances",
            input.namespace_name.as_ref(),
            input.service_name.as_ref(),
            input.owner_account.as_ref(),
        )?;
        let all: Vec<InstanceRecord> = read_all(self.store.as_ref(), &scope.instances(&svc.id))?;
        let matches = |i: &InstanceRecord, params: &BTreeMap<String, String>| {
            params.iter().all(|(k, v)| i.attributes.get(k) == Some(v))
        };
        let mut found: Vec<InstanceRecord> =
            all.into_iter().filter(|i| matches(i, &query)).collect();
        // The filter applies to services with a health check only.
        if svc.custom_health {
            let healthy = |i: &InstanceRecord| i.custom_health.as_deref() != Some("UNHEALTHY");
            found = match health.as_str() {
                "HEALTHY" => found.into_iter().filter(healthy).collect(),
                "UNHEALTHY" => found.into_iter().filter(|i| !healthy(i)).collect(),
                "HEALTHY_OR_ELSE_ALL" => {
                    if found.iter().any(healthy) {
                        found.into_iter().filter(healthy).collect()
                    } else {
                        found
                    }
                }
                _ => found,
            };
        }
        if !optional.is_empty() {
            let preferred: Vec<InstanceRecord> = found
                .iter()
                .filter(|i| matches(i, &optional))
                .cloned()
                .collect();
            if !preferred.is_empty() {
                found = preferred;
            }
        }
        // As Cloud Map: a random order, so callers spread their traffic.
        found.shuffle(&mut rand::thread_rng());
        found.truncate(max);
        Ok(sd::DiscoverInstancesResponse {
            instances: Some(
                found
                    .into_iter()
                    .map(|i| sd::HttpInstanceSummary {
                        namespace_name: Some(ns.http_name.clone()),
                        service_name: Some(svc.name.clone()),
                        health_status: Some(i.health_status().to_string()),
                        attributes: Some(i.attributes),
                        instance_id: Some(i.id),
                    })
                    .collect(),
            ),
            instances_revision: Some(svc.instances_revision),
        })
    }

    pub(crate) async fn discover_instances_revision(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::DiscoverInstancesRevisionRequest,
    ) -> Result<sd::DiscoverInstancesRevisionResponse, AwsError> {
        let (_, svc) = self.discovered(
            ctx,
            scope,
            "DiscoverInstancesRevision",
            input.namespace_name.as_ref(),
            input.service_name.as_ref(),
            input.owner_account.as_ref(),
        )?;
        Ok(sd::DiscoverInstancesRevisionResponse {
            instances_revision: Some(svc.instances_revision),
        })
    }

    pub(crate) async fn get_instances_health_status(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::GetInstancesHealthStatusRequest,
    ) -> Result<sd::GetInstancesHealthStatusResponse, AwsError> {
        let size = validate::page_size(input.max_results, 100, 100)?;
        crate::support::decode_token(input.next_token.as_deref())?;
        if let Some(ids) = &input.instances {
            if ids.is_empty() || ids.iter().any(|i| i.is_empty() || i.len() > 64) {
                return Err(invalid(
                    "Instances must hold one or more instance ids of 1 to 64 characters",
                ));
            }
        }
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "GetInstancesHealthStatus",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        svc.ok_or_else(service_not_found)?;
        let all: Vec<InstanceRecord> = read_all(self.store.as_ref(), &scope.instances(&id))?;
        let mut chosen: Vec<InstanceRecord> = match &input.instances {
            None => all,
            Some(ids) => {
                let mut out = Vec::new();
                for want in ids {
                    let inst = all
                        .iter()
                        .find(|i| i.id == *want)
                        .ok_or_else(|| instance_not_found(want))?;
                    if !out.iter().any(|i: &InstanceRecord| i.id == inst.id) {
                        out.push(inst.clone());
                    }
                }
                out
            }
        };
        chosen.sort_by(|a, b| a.id.cmp(&b.id));
        let (items, next) = page(chosen, |i| i.id.clone(), input.next_token.as_deref(), size)?;
        Ok(sd::GetInstancesHealthStatusResponse {
            status: Some(
                items
                    .iter()
                    .map(|i| (i.id.clone(), i.health_status().to_string()))
                    .collect(),
            ),
            next_token: next,
        })
    }

    pub(crate) async fn update_instance_custom_health_status(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UpdateInstanceCustomHealthStatusRequest,
    ) -> Result<serde_json::Value, AwsError> {
        let instance_id = validate::required(&input.instance_id, "InstanceId")?.to_string();
        validate::max_len(Some(&instance_id), 64, "InstanceId")?;
        let status: &'static str = match input.status.as_deref() {
            Some("HEALTHY") => "HEALTHY",
            Some("UNHEALTHY") => "UNHEALTHY",
            other => {
                return Err(invalid(format!(
                    "Status '{}' is not valid: use HEALTHY or UNHEALTHY",
                    other.unwrap_or_default()
                )))
            }
        };
        let (id, svc) = self.service_for_auth(scope, input.service_id.as_ref(), "ServiceId")?;
        ctx.authorize(&[authz::on_service(
            "UpdateInstanceCustomHealthStatus",
            scope,
            &id,
            svc.as_ref(),
        )])?;
        self.custom_health_core(scope, id, instance_id, status)
            .await?;
        Ok(serde_json::json!({}))
    }
}
