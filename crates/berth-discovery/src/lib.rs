//! AWS Cloud Map (`servicediscovery`, JSON 1.1, target prefix
//! `Route53AutoNaming_v20170314`) for Berth.
//!
//! * [`DiscoveryService`] is the [`JsonService`] to register with the
//!   gateway; it also gives other crates (ECS's service registries) a Rust
//!   API that needs no HTTP: [`DiscoveryService::register_instance`],
//!   [`DiscoveryService::deregister_instance`],
//!   [`DiscoveryService::set_custom_health`],
//!   [`DiscoveryService::list_instances`] and
//!   [`DiscoveryService::service_info`].
//! * Namespaces (HTTP and private DNS, the latter tied to a VPC that exists
//!   in berth-ec2's state), services and instances live in the store (see
//!   [`model`] for the layout). A private DNS namespace publishes a hosted
//!   zone in Berth's DNS registry ([`berth_model::dns_registry`]) and every
//!   instance of a service with a DnsConfig publishes one record set per
//!   record type, in the same store mutation as the instance (see [`dns`]).
//! * Calls AWS runs asynchronously (namespace create/update/delete, service
//!   update, instance register/deregister) return an OperationId; Berth
//!   finishes them within the call and records them as `SUCCESS`, so
//!   GetOperation and ListOperations answer as AWS's do once the operation
//!   has run.
//! * Every call authorizes `servicediscovery:<Operation>` on the canonical
//!   namespace or service ARN (see [`authz`]).
//!
//! Architecture invariant: a request is validated completely before state
//! changes, and every state-dependent check runs in the same store mutation
//! as the write it guards, so a refused request changes nothing; the DNS
//! registry entries of an instance change only with the instance record.

pub mod api;
pub mod authz;
pub mod dns;
mod instances;
pub mod model;
mod namespaces;
mod services;
mod support;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use berth_model::shapes::servicediscovery as sd;
use berth_model::{json_op, AwsError, JsonService, RequestContext};
use berth_store::{Store, StoreExt};

pub use api::{RegisteredInstance, ServiceInfo};
use model::{store_error, Scope, Tx};

/// The model operations Berth answers only with an error, and why.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[(
    "CreatePublicDnsNamespace",
    "Berth serves no public DNS: its DNS server answers only inside Berth's VPCs and on the \
     host address of `berth up --dns-listen`, so a public hosted zone could not be delegated \
     to; use CreatePrivateDnsNamespace (DNS inside the VPC) or CreateHttpNamespace \
     (DiscoverInstances only).",
)];

/// AWS Cloud Map. Register with `GatewayBuilder::json_service`.
pub struct DiscoveryService {
    store: Arc<dyn Store>,
}

impl DiscoveryService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        DiscoveryService { store }
    }

    /// Runs `f` in one store mutation, committing its writes when it
    /// succeeds and nothing when it fails.
    pub(crate) async fn mutate<T, F>(&self, mut f: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T, AwsError> + Send + 'static,
    {
        let outcome = self
            .store
            .update(move |view| {
                let mut tx = Tx::new(view);
                let value = f(&mut tx)?;
                Ok((tx.into_ops(), value))
            })
            .await;
        match outcome {
            Ok(Ok((_, value))) => Ok(value),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(store_error(e)),
        }
    }
}

fn scope_of(ctx: &RequestContext) -> Scope {
    Scope::new(&ctx.account_id, &ctx.region)
}

#[async_trait::async_trait]
impl JsonService for DiscoveryService {
    fn target_prefix(&self) -> &'static str {
        sd::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        sd::SIGNING_NAME
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let scope = scope_of(ctx);
        let s = &scope;
        match operation {
            "CreateHttpNamespace" => {
                json_op!(body, |i| self.create_http_namespace(ctx, s, i).await)
            }
            "CreatePrivateDnsNamespace" => {
                json_op!(body, |i| self.create_private_dns_namespace(ctx, s, i).await)
            }
            "CreatePublicDnsNamespace" => {
                json_op!(body, |i| self.create_public_dns_namespace(ctx, i).await)
            }
            "GetNamespace" => json_op!(body, |i| self.get_namespace(ctx, s, i).await),
            "ListNamespaces" => json_op!(body, |i| self.list_namespaces(ctx, s, i).await),
            "UpdateHttpNamespace" => {
                json_op!(body, |i| self.update_http_namespace(ctx, s, i).await)
            }
            "UpdatePrivateDnsNamespace" => {
                json_op!(body, |i| self.update_private_dns_namespace(ctx, s, i).await)
            }
            "UpdatePublicDnsNamespace" => {
                json_op!(body, |i| self.update_public_dns_namespace(ctx, s, i).await)
            }
            "DeleteNamespace" => json_op!(body, |i| self.delete_namespace(ctx, s, i).await),
            "CreateService" => json_op!(body, |i| self.create_service(ctx, s, i).await),
            "GetService" => json_op!(body, |i| self.get_service(ctx, s, i).await),
            "ListServices" => json_op!(body, |i| self.list_services(ctx, s, i).await),
            "UpdateService" => json_op!(body, |i| self.update_service(ctx, s, i).await),
            "DeleteService" => json_op!(body, |i| self.delete_service(ctx, s, i).await),
            "GetServiceAttributes" => {
                json_op!(body, |i| self.get_service_attributes(ctx, s, i).await)
            }
            "UpdateServiceAttributes" => {
                json_op!(body, |i| self.update_service_attributes(ctx, s, i).await)
            }
            "DeleteServiceAttributes" => {
                json_op!(body, |i| self.delete_service_attributes(ctx, s, i).await)
            }
            "RegisterInstance" => json_op!(body, |i| self.http_register_instance(ctx, s, i).await),
            "DeregisterInstance" => {
                json_op!(body, |i| self.http_deregister_instance(ctx, s, i).await)
            }
            "GetInstance" => json_op!(body, |i| self.get_instance(ctx, s, i).await),
            "ListInstances" => json_op!(body, |i| self.list_instances_api(ctx, s, i).await),
            "DiscoverInstances" => json_op!(body, |i| self.discover_instances(ctx, s, i).await),
            "DiscoverInstancesRevision" => {
                json_op!(body, |i| self.discover_instances_revision(ctx, s, i).await)
            }
            "GetInstancesHealthStatus" => {
                json_op!(body, |i| self.get_instances_health_status(ctx, s, i).await)
            }
            "UpdateInstanceCustomHealthStatus" => {
                json_op!(body, |i| self
                    .update_instance_custom_health_status(ctx, s, i)
                    .await)
            }
            "GetOperation" => json_op!(body, |i| self.get_operation(ctx, s, i).await),
            "ListOperations" => json_op!(body, |i| self.list_operations(ctx, s, i).await),
            "TagResource" => json_op!(body, |i| self.tag_resource(ctx, s, i).await),
            "UntagResource" => json_op!(body, |i| self.untag_resource(ctx, s, i).await),
            "ListTagsForResource" => {
                json_op!(body, |i| self.list_tags_for_resource(ctx, s, i).await)
            }
            other => Err(AwsError::unknown_operation(format!(
                "Operation {other} is not supported by AWS Cloud Map (Route53AutoNaming_v20170314)."
            ))),
        }
    }
}
