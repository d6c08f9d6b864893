//! What the handlers share: response shapes of the records, operations,
//! idempotency, pagination, filters; and the operation and tagging calls.

use std::collections::BTreeMap;

use base64::Engine;
use berth_model::shapes::servicediscovery as sd;
use berth_model::{AwsError, RequestContext};
use berth_util::time::now_epoch;

use crate::authz;
use crate::model::{
    self, duplicate_request, invalid, read, read_all, resource_not_found, NamespaceRecord,
    OperationRecord, RequestRecord, Scope, ServiceRecord, Tx, MAX_TAGS,
};
use crate::validate;
use crate::DiscoveryService;

const URL: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

// ---- shapes ---------------------------------------------------------------

pub fn namespace_properties(ns: &NamespaceRecord) -> sd::NamespaceProperties {
    let dns = if ns.is_dns() {
        sd::DnsProperties {
            hosted_zone_id: ns.hosted_zone_id.clone(),
            soa: Some(sd::SOA {
                ttl: Some(ns.soa_ttl.unwrap_or(model::DEFAULT_SOA_TTL)),
            }),
        }
    } else {
        sd::DnsProperties::default()
    };
    sd::NamespaceProperties {
        dns_properties: Some(dns),
        http_properties: Some(sd::HttpProperties {
            http_name: Some(ns.http_name.clone()),
        }),
    }
}

pub fn namespace_shape(ns: &NamespaceRecord, scope: &Scope) -> sd::Namespace {
    sd::Namespace {
        id: Some(ns.id.clone()),
        arn: Some(ns.arn.clone()),
        resource_owner: Some(scope.account.clone()),
        name: Some(ns.name.clone()),
        r#type: Some(ns.ns_type.clone()),
        description: ns.description.clone(),
        service_count: Some(ns.service_count),
        properties: Some(namespace_properties(ns)),
        create_date: Some(ns.created),
        creator_request_id: ns.creator_request_id.clone(),
    }
}

pub fn namespace_summary(ns: &NamespaceRecord, scope: &Scope) -> sd::NamespaceSummary {
    sd::NamespaceSummary {
        id: Some(ns.id.clone()),
        arn: Some(ns.arn.clone()),
        resource_owner: Some(scope.account.clone()),
        name: Some(ns.name.clone()),
        r#type: Some(ns.ns_type.clone()),
        description: ns.description.clone(),
        service_count: Some(ns.service_count),
        properties: Some(namespace_properties(ns)),
        create_date: Some(ns.created),
    }
}

pub fn dns_config_shape(svc: &ServiceRecord) -> Option<sd::DnsConfig> {
    svc.dns_config.as_ref().map(|c| sd::DnsConfig {
        namespace_id: Some(svc.namespace_id.clone()),
        routing_policy: Some(c.routing_policy.clone()),
        dns_records: Some(
            c.records
                .iter()
                .map(|r| sd::DnsRecord {
                    r#type: Some(r.record_type.clone()),
                    ttl: Some(r.ttl),
                })
                .collect(),
        ),
    })
}

fn custom_health_shape(svc: &ServiceRecord) -> Option<sd::HealthCheckCustomConfig> {
    svc.custom_health.then_some(sd::HealthCheckCustomConfig {
        failure_threshold: Some(1),
    })
}

pub fn service_shape(svc: &ServiceRecord, scope: &Scope) -> sd::Service {
    sd::Service {
        id: Some(svc.id.clone()),
        arn: Some(svc.arn.clone()),
        resource_owner: Some(scope.account.clone()),
        name: Some(svc.name.clone()),
        namespace_id: Some(svc.namespace_id.clone()),
        description: svc.description.clone(),
        instance_count: Some(svc.instance_count),
        dns_config: dns_config_shape(svc),
        r#type: Some(svc.service_type.clone()),
        health_check_config: None,
        health_check_custom_config: custom_health_shape(svc),
        create_date: Some(svc.created),
        creator_request_id: svc.creator_request_id.clone(),
        created_by_account: Some(scope.account.clone()),
    }
}

pub fn service_summary(svc: &ServiceRecord, scope: &Scope) -> sd::ServiceSummary {
    sd::ServiceSummary {
        id: Some(svc.id.clone()),
        arn: Some(svc.arn.clone()),
        resource_owner: Some(scope.account.clone()),
        name: Some(svc.name.clone()),
        r#type: Some(svc.service_type.clone()),
        description: svc.description.clone(),
        instance_count: Some(svc.instance_count),
        dns_config: dns_config_shape(svc),
        health_check_config: None,
        health_check_custom_config: custom_health_shape(svc),
        create_date: Some(svc.created),
        created_by_account: Some(scope.account.clone()),
    }
}

pub fn tag_shapes(tags: &[(String, String)]) -> Vec<sd::Tag> {
    tags.iter()
        .map(|(k, v)| sd::Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

// ---- operations -------------------------------------------------------------

/// Records an operation Berth ran to completion within the call, as AWS
/// shows one that has finished.
pub fn record_operation(
    tx: &mut Tx<'_>,
    scope: &Scope,
    op_type: &str,
    targets: &[(&str, &str)],
) -> Result<String, AwsError> {
    let id = model::new_operation_id();
    let now = now_epoch();
    let record = OperationRecord {
        id: id.clone(),
        op_type: op_type.to_string(),
        status: "SUCCESS".to_string(),
        created: now,
        updated: now,
        targets: targets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        error_code: None,
        error_message: None,
    };
    tx.put(scope.operation_key(&id), &record)?;
    Ok(id)
}

/// A request carrying a creator (or updater) request id: `Some(result)` when
/// it repeats an earlier request exactly, DuplicateRequest when it reuses
/// the id with other input, `None` when the id is new.
pub fn earlier_request(
    tx: &Tx<'_>,
    scope: &Scope,
    kind: &str,
    request_id: Option<&str>,
    fingerprint: &str,
) -> Result<Option<String>, AwsError> {
    let Some(request_id) = request_id else {
        return Ok(None);
    };
    match tx.get::<RequestRecord>(&scope.request_key(kind, request_id))? {
        Some(earlier) if earlier.fingerprint == fingerprint => Ok(Some(earlier.result)),
        Some(earlier) => Err(duplicate_request(&earlier.result)),
        None => Ok(None),
    }
}

pub fn remember_request(
    tx: &mut Tx<'_>,
    scope: &Scope,
    kind: &str,
    request_id: Option<&str>,
    fingerprint: &str,
    result: &str,
) -> Result<(), AwsError> {
    if let Some(request_id) = request_id {
        tx.put(
            scope.request_key(kind, request_id),
            &RequestRecord {
                fingerprint: fingerprint.to_string(),
                result: result.to_string(),
            },
        )?;
    }
    Ok(())
}

// ---- pagination -------------------------------------------------------------

pub fn encode_token(last: &str) -> String {
    URL.encode(last)
}

pub fn decode_token(token: Option<&str>) -> Result<Option<String>, AwsError> {
    match token {
        None => Ok(None),
        Some(t) => URL
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| invalid("The NextToken is not valid")),
    }
}

/// One page of `items` (sorted by `key`) after `token`.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    token: Option<&str>,
    size: usize,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let after = decode_token(token)?;
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| after.as_ref().is_none_or(|a| key(i) > *a))
        .collect();
    let next = if rest.len() > size {
        rest.truncate(size);
        rest.last().map(|i| encode_token(&key(i)))
    } else {
        None
    };
    Ok((rest, next))
}

// ---- filters ----------------------------------------------------------------

/// A checked filter: its name, condition and values.
pub struct Filter {
    pub name: String,
    pub condition: String,
    pub values: Vec<String>,
}

/// Checks a filter: `name` among `names`, the condition among `conditions`
/// (EQ by default), one value for EQ and BEGINS_WITH, two for BETWEEN.
pub fn filter(
    name: Option<&str>,
    condition: Option<&str>,
    values: Option<&Vec<String>>,
    names: &[&str],
    conditions: &[(&str, &[&str])],
) -> Result<Filter, AwsError> {
    let name = name.unwrap_or_default();
    if !names.contains(&name) {
        return Err(invalid(format!("Filter name '{name}' is not valid")));
    }
    let condition = condition.unwrap_or("EQ");
    let allowed = conditions
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .unwrap_or(&["EQ"]);
    if !allowed.contains(&condition) {
        return Err(invalid(format!(
            "Condition '{condition}' is not supported for filter {name}"
        )));
    }
    let values = values.cloned().unwrap_or_default();
    let count_ok = match condition {
        "EQ" | "BEGINS_WITH" => values.len() == 1,
        "BETWEEN" => values.len() == 2,
        _ => !values.is_empty(),
    };
    if !count_ok {
        return Err(invalid(format!(
            "Filter {name} with condition {condition} takes {} value(s)",
            match condition {
                "BETWEEN" => "two",
                "IN" => "one or more",
                _ => "exactly one",
            }
        )));
    }
    Ok(Filter {
        name: name.to_string(),
        condition: condition.to_string(),
        values,
    })
}

impl Filter {
    /// Whether `value` passes an EQ / IN / BEGINS_WITH filter.
    pub fn matches(&self, value: &str) -> bool {
        match self.condition.as_str() {
            "BEGINS_WITH" => self.values.iter().any(|v| value.starts_with(v.as_str())),
            _ => self.values.iter().any(|v| v == value),
        }
    }
}

// ---- resources named by ARN ---------------------------------------------------

/// A taggable resource: a namespace or a service of this account and Region.
pub enum Resource {
    Namespace(String),
    Service(String),
}

pub fn resource_of(scope: &Scope, arn: &str) -> Result<Resource, AwsError> {
    if arn.is_empty() || arn.len() > 1011 {
        return Err(invalid("ResourceARN must be 1 to 1011 characters long"));
    }
    if !arn.starts_with("arn:") {
        return Err(invalid(format!("'{arn}' is not a valid ARN")));
    }
    if arn.starts_with(&scope.arn("namespace/")) {
        if let Some(id) = validate::namespace_id(scope, arn) {
            return Ok(Resource::Namespace(id));
        }
    }
    if arn.starts_with(&scope.arn("service/")) {
        if let Some(id) = validate::service_id(scope, arn) {
            return Ok(Resource::Service(id));
        }
    }
    Err(resource_not_found(arn))
}

// ---- operations and tags ---------------------------------------------------------

impl DiscoveryService {
    pub(crate) async fn get_operation(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::GetOperationRequest,
    ) -> Result<sd::GetOperationResponse, AwsError> {
        let id = validate::required(&input.operation_id, "OperationId")?.to_string();
        validate::max_len(Some(&id), 255, "OperationId")?;
        if let Some(owner) = input.owner_account.as_deref() {
            if owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("OwnerAccount must be a 12-digit account id"));
            }
        }
        ctx.authorize(&[authz::anywhere("GetOperation")])?;
        if input
            .owner_account
            .as_deref()
            .is_some_and(|o| o != scope.account)
        {
            return Err(model::operation_not_found());
        }
        let op: OperationRecord = read(self.store.as_ref(), &scope.operation_key(&id))?
            .ok_or_else(model::operation_not_found)?;
        Ok(sd::GetOperationResponse {
            operation: Some(sd::Operation {
                id: Some(op.id),
                owner_account: Some(scope.account.clone()),
                r#type: Some(op.op_type),
                status: Some(op.status),
                error_message: op.error_message,
                error_code: op.error_code,
                create_date: Some(op.created),
                update_date: Some(op.updated),
                targets: Some(op.targets),
            }),
        })
    }

    pub(crate) async fn list_operations(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::ListOperationsRequest,
    ) -> Result<sd::ListOperationsResponse, AwsError> {
        let size = validate::page_size(input.max_results, 100, 100)?;
        let mut filters = Vec::new();
        for f in input.filters.iter().flatten() {
            let f = filter(
                f.name.as_deref(),
                f.condition.as_deref(),
                f.values.as_ref(),
                sd::OPERATION_FILTER_NAME_VALUES,
                &[
                    ("NAMESPACE_ID", &["EQ"]),
                    ("SERVICE_ID", &["EQ"]),
                    ("STATUS", &["EQ", "IN"]),
                    ("TYPE", &["EQ", "IN"]),
                    ("UPDATE_DATE", &["BETWEEN"]),
                ],
            )?;
            if f.name == "UPDATE_DATE" && f.values.iter().any(|v| v.parse::<f64>().is_err()) {
                return Err(invalid(
                    "UPDATE_DATE takes a start and an end date in Unix time",
                ));
            }
            filters.push(f);
        }
        decode_token(input.next_token.as_deref())?;
        ctx.authorize(&[authz::anywhere("ListOperations")])?;
        let ops: Vec<OperationRecord> = read_all(self.store.as_ref(), &scope.operations())?;
        let ops: Vec<OperationRecord> = ops
            .into_iter()
            .filter(|op| {
                filters.iter().all(|f| match f.name.as_str() {
                    "NAMESPACE_ID" => op.targets.get("NAMESPACE").is_some_and(|v| f.matches(v)),
                    "SERVICE_ID" => op.targets.get("SERVICE").is_some_and(|v| f.matches(v)),
                    "STATUS" => f.matches(&op.status),
                    "TYPE" => f.matches(&op.op_type),
                    "UPDATE_DATE" => {
                        let from = f.values[0].parse::<f64>().unwrap_or(f64::MIN);
                        let to = f.values[1].parse::<f64>().unwrap_or(f64::MAX);
                        op.updated >= from && op.updated <= to
                    }
                    _ => true,
                })
            })
            .collect();
        let (ops, next) = page(ops, |o| o.id.clone(), input.next_token.as_deref(), size)?;
        Ok(sd::ListOperationsResponse {
            operations: Some(
                ops.into_iter()
                    .map(|o| sd::OperationSummary {
                        id: Some(o.id),
                        status: Some(o.status),
                    })
                    .collect(),
            ),
            next_token: next,
        })
    }

    /// The tags and the requirement of `operation` on the resource `arn`.
    fn tagged_resource(
        &self,
        scope: &Scope,
        operation: &str,
        arn: &str,
    ) -> Result<(Resource, berth_model::authz::Requirement), AwsError> {
        let resource = resource_of(scope, arn)?;
        let requirement = match &resource {
            Resource::Namespace(id) => {
                let ns: Option<NamespaceRecord> =
                    read(self.store.as_ref(), &scope.namespace_key(id))?;
                authz::on_namespace(operation, scope, id, ns.as_ref())
            }
            Resource::Service(id) => {
                let svc: Option<ServiceRecord> = read(self.store.as_ref(), &scope.service_key(id))?;
                authz::on_service(operation, scope, id, svc.as_ref())
            }
        };
        Ok((resource, requirement))
    }

    pub(crate) async fn tag_resource(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::TagResourceRequest,
    ) -> Result<sd::TagResourceResponse, AwsError> {
        let arn = validate::required(&input.resource_arn, "ResourceARN")?.to_string();
        if input.tags.is_none() {
            return Err(invalid("Tags is required"));
        }
        let tags = validate::tags(&input.tags)?;
        if tags.len() > MAX_TAGS {
            return Err(validate::too_many_tags(&arn));
        }
        let (resource, requirement) = self.tagged_resource(scope, "TagResource", &arn)?;
        ctx.authorize(&[authz::with_request_tags(requirement, &tags)])?;
        let scope = scope.clone();
        self.mutate(move |tx| {
            let merge = |existing: &mut Vec<(String, String)>| -> Result<(), AwsError> {
                for (k, v) in &tags {
                    if let Some(e) = existing.iter_mut().find(|(ek, _)| ek == k) {
                        e.1 = v.clone();
                    } else {
                        existing.push((k.clone(), v.clone()));
                    }
                }
                if existing.len() > MAX_TAGS {
                    return Err(validate::too_many_tags(&arn));
                }
                Ok(())
            };
            match &resource {
                Resource::Namespace(id) => {
                    let key = scope.namespace_key(id);
                    let mut ns: NamespaceRecord =
                        tx.get(&key)?.ok_or_else(|| resource_not_found(&arn))?;
                    merge(&mut ns.tags)?;
                    tx.put(key, &ns)
                }
                Resource::Service(id) => {
                    let key = scope.service_key(id);
                    let mut svc: ServiceRecord =
                        tx.get(&key)?.ok_or_else(|| resource_not_found(&arn))?;
                    merge(&mut svc.tags)?;
                    tx.put(key, &svc)
                }
            }
        })
        .await?;
        Ok(sd::TagResourceResponse {})
    }

    pub(crate) async fn untag_resource(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UntagResourceRequest,
    ) -> Result<sd::UntagResourceResponse, AwsError> {
        let arn = validate::required(&input.resource_arn, "ResourceARN")?.to_string();
        let keys = input
            .tag_keys
            .clone()
            .ok_or_else(|| invalid("TagKeys is required"))?;
        if keys.len() > 200 || keys.iter().any(|k| k.is_empty() || k.chars().count() > 128) {
            return Err(invalid(
                "TagKeys must hold up to 200 keys of 1 to 128 characters",
            ));
        }
        let (resource, requirement) = self.tagged_resource(scope, "UntagResource", &arn)?;
        ctx.authorize(&[requirement.tag_keys(keys.iter().cloned())])?;
        let scope = scope.clone();
        self.mutate(move |tx| match &resource {
            Resource::Namespace(id) => {
                let key = scope.namespace_key(id);
                let mut ns: NamespaceRecord =
                    tx.get(&key)?.ok_or_else(|| resource_not_found(&arn))?;
                ns.tags.retain(|(k, _)| !keys.contains(k));
                tx.put(key, &ns)
            }
            Resource::Service(id) => {
                let key = scope.service_key(id);
                let mut svc: ServiceRecord =
                    tx.get(&key)?.ok_or_else(|| resource_not_found(&arn))?;
                svc.tags.retain(|(k, _)| !keys.contains(k));
                tx.put(key, &svc)
            }
        })
        .await?;
        Ok(sd::UntagResourceResponse {})
    }

    pub(crate) async fn list_tags_for_resource(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::ListTagsForResourceRequest,
    ) -> Result<sd::ListTagsForResourceResponse, AwsError> {
        let arn = validate::required(&input.resource_arn, "ResourceARN")?.to_string();
        let (resource, requirement) = self.tagged_resource(scope, "ListTagsForResource", &arn)?;
        ctx.authorize(&[requirement])?;
        let tags = match resource {
            Resource::Namespace(id) => {
                read::<NamespaceRecord>(self.store.as_ref(), &scope.namespace_key(&id))?
                    .ok_or_else(|| resource_not_found(&arn))?
                    .tags
            }
            Resource::Service(id) => {
                read::<ServiceRecord>(self.store.as_ref(), &scope.service_key(&id))?
                    .ok_or_else(|| resource_not_found(&arn))?
                    .tags
            }
        };
        Ok(sd::ListTagsForResourceResponse {
            tags: Some(tag_shapes(&tags)),
        })
    }
}

/// Attribute maps as the responses carry them (absent when empty).
pub fn attributes_shape(attrs: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!attrs.is_empty()).then(|| attrs.clone())
}
