//! What each Cloud Map call asks IAM for: `servicediscovery:<Operation>`
//! on the namespace or service ARN (canonical, whatever form the caller
//! used), with the resource's tags as `aws:ResourceTag/…` and the Service
//! Authorization Reference's condition keys; calls without a resource type
//! (creating namespaces, the List calls, operations) on `*`.

use berth_model::authz::Requirement;

use crate::model::{NamespaceRecord, Scope, ServiceRecord};

pub const NAMESPACE_ARN: &str = "servicediscovery:NamespaceArn";
pub const NAMESPACE_NAME: &str = "servicediscovery:NamespaceName";
pub const SERVICE_ARN: &str = "servicediscovery:ServiceArn";
pub const SERVICE_NAME: &str = "servicediscovery:ServiceName";

pub fn action(operation: &str) -> String {
    format!("servicediscovery:{operation}")
}

fn tag_refs(tags: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// `operation` on `*`.
pub fn anywhere(operation: &str) -> Requirement {
    Requirement::new(action(operation), "*")
}

/// `operation` on namespace `id` (its record, when it exists, gives the
/// tags and name).
pub fn on_namespace(
    operation: &str,
    scope: &Scope,
    id: &str,
    ns: Option<&NamespaceRecord>,
) -> Requirement {
    let arn = scope.namespace_arn(id);
    let mut r = Requirement::new(action(operation), arn.clone()).condition(NAMESPACE_ARN, arn);
    if let Some(ns) = ns {
        r = r
            .condition(NAMESPACE_NAME, ns.name.clone())
            .resource_tags(tag_refs(&ns.tags));
    }
    r
}

/// `operation` on service `id`.
pub fn on_service(
    operation: &str,
    scope: &Scope,
    id: &str,
    svc: Option<&ServiceRecord>,
) -> Requirement {
    let arn = scope.service_arn(id);
    let mut r = Requirement::new(action(operation), arn.clone()).condition(SERVICE_ARN, arn);
    if let Some(svc) = svc {
        r = r
            .condition(SERVICE_NAME, svc.name.clone())
            .condition(NAMESPACE_ARN, scope.namespace_arn(&svc.namespace_id))
            .resource_tags(tag_refs(&svc.tags));
    }
    r
}

/// The request's tags (`aws:RequestTag/…`, `aws:TagKeys`).
pub fn with_request_tags(r: Requirement, tags: &[(String, String)]) -> Requirement {
    r.request_tags(tag_refs(tags))
}
