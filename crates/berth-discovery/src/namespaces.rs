//! Namespaces: HTTP and private DNS (a hosted zone in Berth's DNS
//! registry, tied to a VPC of berth-ec2), their updates and deletion.

use berth_model::dns_registry;
use berth_model::shapes::servicediscovery as sd;
use berth_model::{AwsError, RequestContext};
use berth_util::time::now_epoch;

use crate::authz;
use crate::dns::zone_of;
use crate::model::{
    self, fingerprint, invalid, namespace_not_found, read, read_all, NamespaceRecord, Scope,
    ServiceRecord, Tx, DNS_PRIVATE, HTTP,
};
use crate::support::{
    earlier_request, filter, namespace_shape, namespace_summary, page, record_operation,
    remember_request,
};
use crate::validate;
use crate::DiscoveryService;

fn already_exists(name: &str) -> AwsError {
    AwsError::bad_request(
        "NamespaceAlreadyExists",
        format!("Namespace with name {name} already exists"),
    )
}

/// The HttpName a new namespace gets: its name, or its name with a suffix
/// when another namespace already has that HttpName (as Cloud Map does).
fn free_http_name(existing: &[NamespaceRecord], name: &str) -> String {
    if !existing.iter().any(|ns| ns.http_name == name) {
        return name.to_string();
    }
    loop {
        let candidate = format!(
            "{name}-{}",
            berth_util::ids::random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 8)
        );
        if !existing.iter().any(|ns| ns.http_name == candidate) {
            return candidate;
        }
    }
}

fn soa_ttl(ttl: Option<i64>) -> Result<i64, AwsError> {
    let ttl = ttl.ok_or_else(|| invalid("SOA TTL is required"))?;
    if !(0..=2_147_483_647).contains(&ttl) {
        return Err(invalid(format!(
            "SOA TTL {ttl} is not valid: it must be between 0 and 2147483647"
        )));
    }
    Ok(ttl)
}

/// The namespace named by `id` (an id or an ARN), or NamespaceNotFound.
pub(crate) fn namespace_in(
    tx: &Tx<'_>,
    scope: &Scope,
    id: &str,
) -> Result<NamespaceRecord, AwsError> {
    tx.get(&scope.namespace_key(id))?
        .ok_or_else(namespace_not_found)
}

impl DiscoveryService {
    /// Resolves a namespace id or ARN and reads it (for authorization).
    fn namespace_for_auth(
        &self,
        scope: &Scope,
        value: Option<&String>,
    ) -> Result<(String, Option<NamespaceRecord>), AwsError> {
        let value = validate::required(&value.cloned(), "Id")?.to_string();
        validate::max_len(Some(&value), 255, "Id")?;
        let id = validate::namespace_id(scope, &value).ok_or_else(namespace_not_found)?;
        let ns = read(self.store.as_ref(), &scope.namespace_key(&id))?;
        Ok((id, ns))
    }

    pub(crate) async fn create_http_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::CreateHttpNamespaceRequest,
    ) -> Result<sd::CreateHttpNamespaceResponse, AwsError> {
        let name = validate::required(&input.name, "Name")?.to_string();
        validate::namespace_name(&name, 1024, "Namespace name")?;
        validate::max_len(input.description.as_deref(), 1024, "Description")?;
        validate::max_len(input.creator_request_id.as_deref(), 64, "CreatorRequestId")?;
        let tags = validate::tags(&input.tags)?;
        if tags.len() > model::MAX_TAGS {
            return Err(validate::too_many_tags(&name));
        }
        ctx.authorize(&[authz::with_request_tags(
            authz::anywhere("CreateHttpNamespace"),
            &tags,
        )])?;
        let print = fingerprint(&("http", &input));
        let scope = scope.clone();
        let operation_id = self
            .mutate(move |tx| {
                let crid = input.creator_request_id.as_deref();
                if let Some(op) = earlier_request(tx, &scope, "namespace", crid, &print)? {
                    return Ok(op);
                }
                let existing: Vec<NamespaceRecord> = tx.list(&scope.namespaces())?;
                if existing
                    .iter()
                    .any(|ns| ns.ns_type == HTTP && ns.name == name)
                {
                    return Err(already_exists(&name));
                }
                let id = model::new_namespace_id();
                let ns = NamespaceRecord {
                    arn: scope.namespace_arn(&id),
                    id: id.clone(),
                    name: name.clone(),
                    http_name: free_http_name(&existing, &name),
                    ns_type: HTTP.to_string(),
                    description: input.description.clone(),
                    vpc: None,
                    hosted_zone_id: None,
                    soa_ttl: None,
                    created: now_epoch(),
                    creator_request_id: input.creator_request_id.clone(),
                    tags: tags.clone(),
                    service_count: 0,
                };
                tx.put(scope.namespace_key(&id), &ns)?;
                let op = record_operation(tx, &scope, "CREATE_NAMESPACE", &[("NAMESPACE", &id)])?;
                remember_request(tx, &scope, "namespace", crid, &print, &op)?;
                Ok(op)
            })
            .await?;
        Ok(sd::CreateHttpNamespaceResponse {
            operation_id: Some(operation_id),
        })
    }

    pub(crate) async fn create_private_dns_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::CreatePrivateDnsNamespaceRequest,
    ) -> Result<sd::CreatePrivateDnsNamespaceResponse, AwsError> {
        let name = validate::required(&input.name, "Name")?.to_string();
        validate::private_namespace_name(&name)?;
        let vpc = validate::required(&input.vpc, "Vpc")?.to_string();
        validate::max_len(Some(&vpc), 64, "Vpc")?;
        validate::max_len(input.description.as_deref(), 1024, "Description")?;
        validate::max_len(input.creator_request_id.as_deref(), 64, "CreatorRequestId")?;
        let ttl = match &input.properties {
            None => model::DEFAULT_SOA_TTL,
            Some(p) => soa_ttl(
                p.dns_properties
                    .as_ref()
                    .and_then(|d| d.soa.as_ref())
                    .and_then(|s| s.ttl),
            )?,
        };
        let tags = validate::tags(&input.tags)?;
        if tags.len() > model::MAX_TAGS {
            return Err(validate::too_many_tags(&name));
        }
        ctx.authorize(&[authz::with_request_tags(
            authz::anywhere("CreatePrivateDnsNamespace"),
            &tags,
        )])?;
        let print = fingerprint(&("private", &input));
        let scope = scope.clone();
        let operation_id = self
            .mutate(move |tx| {
                let crid = input.creator_request_id.as_deref();
                if let Some(op) = earlier_request(tx, &scope, "namespace", crid, &print)? {
                    return Ok(op);
                }
                if !tx.exists(&scope.vpc_key(&vpc)) {
                    return Err(invalid(format!(
                        "The VPC ID '{vpc}' does not exist in {} of account {}",
                        scope.region, scope.account
                    )));
                }
                let existing: Vec<NamespaceRecord> = tx.list(&scope.namespaces())?;
                let zone_name = dns_registry::normalize_name(&name);
                if existing.iter().any(|ns| {
                    ns.ns_type == DNS_PRIVATE
                        && ns.vpc.as_deref() == Some(vpc.as_str())
                        && dns_registry::normalize_name(&ns.name) == zone_name
                }) {
                    return Err(already_exists(&name));
                }
                let id = model::new_namespace_id();
                let ns = NamespaceRecord {
                    arn: scope.namespace_arn(&id),
                    id: id.clone(),
                    name: name.clone(),
                    http_name: free_http_name(&existing, &name),
                    ns_type: DNS_PRIVATE.to_string(),
                    description: input.description.clone(),
                    vpc: Some(vpc.clone()),
                    hosted_zone_id: Some(model::new_hosted_zone_id()),
                    soa_ttl: Some(ttl),
                    created: now_epoch(),
                    creator_request_id: input.creator_request_id.clone(),
                    tags: tags.clone(),
                    service_count: 0,
                };
                if let Some(zone) = zone_of(&ns, &scope) {
                    tx.put(dns_registry::zone_key(&zone.id), &zone)?;
                }
                tx.put(scope.namespace_key(&id), &ns)?;
                let op = record_operation(tx, &scope, "CREATE_NAMESPACE", &[("NAMESPACE", &id)])?;
                remember_request(tx, &scope, "namespace", crid, &print, &op)?;
                Ok(op)
            })
            .await?;
        Ok(sd::CreatePrivateDnsNamespaceResponse {
            operation_id: Some(operation_id),
        })
    }

    pub(crate) async fn create_public_dns_namespace(
        &self,
        ctx: &RequestContext,
        input: sd::CreatePublicDnsNamespaceRequest,
    ) -> Result<sd::CreatePublicDnsNamespaceResponse, AwsError> {
        let name = validate::required(&input.name, "Name")?.to_string();
        validate::private_namespace_name(&name)?;
        validate::max_len(input.description.as_deref(), 1024, "Description")?;
        validate::max_len(input.creator_request_id.as_deref(), 64, "CreatorRequestId")?;
        let tags = validate::tags(&input.tags)?;
        if tags.len() > model::MAX_TAGS {
            return Err(validate::too_many_tags(&name));
        }
        ctx.authorize(&[authz::with_request_tags(
            authz::anywhere("CreatePublicDnsNamespace"),
            &tags,
        )])?;
        Err(invalid(format!(
            "Berth serves no public DNS, so it cannot create the public DNS namespace {name}: its DNS \
             server answers only inside Berth's VPCs. Use CreatePrivateDnsNamespace (DNS inside a VPC) \
             or CreateHttpNamespace (DiscoverInstances only)."
        )))
    }

    pub(crate) async fn get_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::GetNamespaceRequest,
    ) -> Result<sd::GetNamespaceResponse, AwsError> {
        let (id, ns) = self.namespace_for_auth(scope, input.id.as_ref())?;
        ctx.authorize(&[authz::on_namespace("GetNamespace", scope, &id, ns.as_ref())])?;
        let ns = ns.ok_or_else(namespace_not_found)?;
        Ok(sd::GetNamespaceResponse {
            namespace: Some(namespace_shape(&ns, scope)),
        })
    }

    pub(crate) async fn list_namespaces(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::ListNamespacesRequest,
    ) -> Result<sd::ListNamespacesResponse, AwsError> {
        let size = validate::page_size(input.max_results, 100, 100)?;
        let mut filters = Vec::new();
        for f in input.filters.iter().flatten() {
            let f = filter(
                f.name.as_deref(),
                f.condition.as_deref(),
                f.values.as_ref(),
                sd::NAMESPACE_FILTER_NAME_VALUES,
                &[
                    ("TYPE", &["EQ", "IN", "BEGINS_WITH"]),
                    ("NAME", &["EQ", "IN", "BEGINS_WITH"]),
                    ("HTTP_NAME", &["EQ", "IN", "BEGINS_WITH"]),
                    ("RESOURCE_OWNER", &["EQ"]),
                ],
            )?;
            if f.name == "TYPE" && f.condition != "BEGINS_WITH" {
                if let Some(bad) = f
                    .values
                    .iter()
                    .find(|v| !sd::NAMESPACE_TYPE_VALUES.contains(&v.as_str()))
                {
                    return Err(invalid(format!(
                        "'{bad}' is not a namespace type: use HTTP, DNS_PUBLIC or DNS_PRIVATE"
                    )));
                }
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
        ctx.authorize(&[authz::anywhere("ListNamespaces")])?;
        let all: Vec<NamespaceRecord> = read_all(self.store.as_ref(), &scope.namespaces())?;
        let matching: Vec<NamespaceRecord> = all
            .into_iter()
            .filter(|ns| {
                filters.iter().all(|f| match f.name.as_str() {
                    "TYPE" => f.matches(&ns.ns_type),
                    "NAME" => f.matches(&ns.name),
                    "HTTP_NAME" => f.matches(&ns.http_name),
                    // Every namespace Berth holds is the caller's own.
                    "RESOURCE_OWNER" => f.matches("SELF"),
                    _ => true,
                })
            })
            .collect();
        let (items, next) = page(
            matching,
            |n| n.id.clone(),
            input.next_token.as_deref(),
            size,
        )?;
        Ok(sd::ListNamespacesResponse {
            namespaces: Some(items.iter().map(|n| namespace_summary(n, scope)).collect()),
            next_token: next,
        })
    }

    /// UpdateHttpNamespace / UpdatePrivateDnsNamespace: the checks and the
    /// write they share.
    #[allow(clippy::too_many_arguments)]
    async fn update_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        operation: &'static str,
        want_type: &'static str,
        id: Option<&String>,
        updater_request_id: Option<String>,
        description: Option<String>,
        soa: Option<i64>,
        print: String,
    ) -> Result<String, AwsError> {
        validate::max_len(updater_request_id.as_deref(), 64, "UpdaterRequestId")?;
        validate::max_len(description.as_deref(), 1024, "Description")?;
        let (id, ns) = self.namespace_for_auth(scope, id)?;
        ctx.authorize(&[authz::on_namespace(operation, scope, &id, ns.as_ref())])?;
        let scope = scope.clone();
        self.mutate(move |tx| {
            let urid = updater_request_id.as_deref();
            if let Some(op) = earlier_request(tx, &scope, "update-namespace", urid, &print)? {
                return Ok(op);
            }
            let mut ns = namespace_in(tx, &scope, &id)?;
            if ns.ns_type != want_type {
                return Err(invalid(format!(
                    "Namespace {id} is a {} namespace; {operation} updates {want_type} namespaces only",
                    ns.ns_type
                )));
            }
            if let Some(d) = &description {
                ns.description = Some(d.clone());
            }
            if let Some(ttl) = soa {
                ns.soa_ttl = Some(ttl);
                if let Some(zone) = zone_of(&ns, &scope) {
                    tx.put(dns_registry::zone_key(&zone.id), &zone)?;
                }
            }
            tx.put(scope.namespace_key(&id), &ns)?;
            let op = record_operation(tx, &scope, "UPDATE_NAMESPACE", &[("NAMESPACE", &id)])?;
            remember_request(tx, &scope, "update-namespace", urid, &print, &op)?;
            Ok(op)
        })
        .await
    }

    pub(crate) async fn update_http_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UpdateHttpNamespaceRequest,
    ) -> Result<sd::UpdateHttpNamespaceResponse, AwsError> {
        let change = input
            .namespace
            .as_ref()
            .ok_or_else(|| invalid("Namespace is required"))?;
        let description = change
            .description
            .clone()
            .ok_or_else(|| invalid("Namespace.Description is required"))?;
        let print = fingerprint(&("http", &input));
        let op = self
            .update_namespace(
                ctx,
                scope,
                "UpdateHttpNamespace",
                HTTP,
                input.id.as_ref(),
                input.updater_request_id.clone(),
                Some(description),
                None,
                print,
            )
            .await?;
        Ok(sd::UpdateHttpNamespaceResponse {
            operation_id: Some(op),
        })
    }

    pub(crate) async fn update_private_dns_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UpdatePrivateDnsNamespaceRequest,
    ) -> Result<sd::UpdatePrivateDnsNamespaceResponse, AwsError> {
        let change = input
            .namespace
            .as_ref()
            .ok_or_else(|| invalid("Namespace is required"))?;
        let soa = match &change.properties {
            None => None,
            Some(p) => Some(soa_ttl(
                p.dns_properties
                    .as_ref()
                    .and_then(|d| d.soa.as_ref())
                    .and_then(|s| s.ttl),
            )?),
        };
        if change.description.is_none() && soa.is_none() {
            return Err(invalid(
                "Namespace must change the Description or the Properties",
            ));
        }
        let print = fingerprint(&("private", &input));
        let op = self
            .update_namespace(
                ctx,
                scope,
                "UpdatePrivateDnsNamespace",
                DNS_PRIVATE,
                input.id.as_ref(),
                input.updater_request_id.clone(),
                change.description.clone(),
                soa,
                print,
            )
            .await?;
        Ok(sd::UpdatePrivateDnsNamespaceResponse {
            operation_id: Some(op),
        })
    }

    /// Berth holds no public namespaces: an id names none, or names a
    /// namespace of another type.
    pub(crate) async fn update_public_dns_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::UpdatePublicDnsNamespaceRequest,
    ) -> Result<sd::UpdatePublicDnsNamespaceResponse, AwsError> {
        if input.namespace.is_none() {
            return Err(invalid("Namespace is required"));
        }
        validate::max_len(input.updater_request_id.as_deref(), 64, "UpdaterRequestId")?;
        let (id, ns) = self.namespace_for_auth(scope, input.id.as_ref())?;
        ctx.authorize(&[authz::on_namespace(
            "UpdatePublicDnsNamespace",
            scope,
            &id,
            ns.as_ref(),
        )])?;
        let ns = ns.ok_or_else(namespace_not_found)?;
        Err(invalid(format!(
            "Namespace {} is a {} namespace; UpdatePublicDnsNamespace updates DNS_PUBLIC namespaces only",
            ns.id, ns.ns_type
        )))
    }

    pub(crate) async fn delete_namespace(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        input: sd::DeleteNamespaceRequest,
    ) -> Result<sd::DeleteNamespaceResponse, AwsError> {
        let (id, ns) = self.namespace_for_auth(scope, input.id.as_ref())?;
        ctx.authorize(&[authz::on_namespace(
            "DeleteNamespace",
            scope,
            &id,
            ns.as_ref(),
        )])?;
        let scope = scope.clone();
        let op = self
            .mutate(move |tx| {
                let ns = namespace_in(tx, &scope, &id)?;
                let services: Vec<ServiceRecord> = tx.list(&scope.services())?;
                if services.iter().any(|s| s.namespace_id == id) {
                    return Err(AwsError::bad_request(
                        "ResourceInUse",
                        format!("Namespace {id} has associated services; delete them first"),
                    ));
                }
                if let Some(zone) = &ns.hosted_zone_id {
                    tx.delete(dns_registry::zone_key(zone));
                }
                tx.delete(scope.namespace_key(&id));
                record_operation(tx, &scope, "DELETE_NAMESPACE", &[("NAMESPACE", &id)])
            })
            .await?;
        Ok(sd::DeleteNamespaceResponse {
            operation_id: Some(op),
        })
    }
}
