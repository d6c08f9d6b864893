//! Amazon ECS's API (`AmazonEC2ContainerServiceV20141113`) over the Berth store.
//!
//! Every handler validates its input completely before it reads or writes
//! state; state-dependent checks and writes happen inside one store mutation so
//! concurrent requests cannot interleave between them.
//!
//! Architecture invariant: handlers never run containers; they write desired
//! state that controllers and agents act on.

pub mod account_settings;
pub mod agent_api;
pub mod clusters;
mod error;
pub mod fargate;
pub mod instances;
pub mod keys;
pub mod metering;
pub mod networking;
mod pagination;
pub mod placement;
pub mod records;
pub mod service_controller;
pub mod services;
mod tagging;
pub mod task_definitions;
pub mod taskdef_validation;
pub mod tasks;

use std::sync::Arc;

use berth_model::shapes::ecs;
use berth_model::{AwsError, JsonService, RequestContext};
use berth_store::Store;

use keys::Scope;

pub use agent_api::AgentService;
pub use instances::Presence;

/// The ECS API service.
pub struct EcsService {
    store: Arc<dyn Store>,
    presence: Arc<Presence>,
    networks: Option<Arc<dyn networking::TaskNetworks>>,
}

impl EcsService {
    /// `presence` is shared with the [`AgentService`] so instances show
    /// whether their agent is connected.
    pub fn new(store: Arc<dyn Store>, presence: Arc<Presence>) -> Self {
        EcsService {
            store,
            presence,
            networks: None,
        }
    }

    /// The VPC service awsvpc tasks take their subnets and interfaces from.
    pub fn with_networks(mut self, networks: Arc<dyn networking::TaskNetworks>) -> Self {
        self.networks = Some(networks);
        self
    }
}

use berth_model::json_op as op;

#[async_trait::async_trait]
impl JsonService for EcsService {
    fn target_prefix(&self) -> &'static str {
        ecs::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        ecs::SIGNING_NAME
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let store = self.store.as_ref();
        let scope = &Scope::of(ctx);
        let caller = ctx.principal.arn.as_str();
        let presence = &self.presence;
        let networks = self.networks.as_deref();
        match operation {
            "CreateCluster" => op!(body, |i| clusters::create(store, scope, caller, i).await),
            "DescribeClusters" => op!(body, |i| clusters::describe(store, scope, i)),
            "ListClusters" => op!(body, |i| clusters::list(store, scope, i)),
            "UpdateCluster" => op!(body, |i| clusters::update(store, scope, i).await),
            "UpdateClusterSettings" => {
                op!(body, |i| clusters::update_settings(store, scope, i).await)
            }
            "PutClusterCapacityProviders" => {
                op!(body, |i| clusters::put_capacity_providers(store, scope, i)
                    .await)
            }
            "DeleteCluster" => op!(body, |i| clusters::delete(store, scope, i).await),

            "RegisterTaskDefinition" => {
                op!(body, |i| task_definitions::register(
                    store, scope, caller, i
                )
                .await)
            }
            "DescribeTaskDefinition" => op!(body, |i| task_definitions::describe(store, scope, i)),
            "ListTaskDefinitions" => op!(body, |i| task_definitions::list(store, scope, i)),
            "ListTaskDefinitionFamilies" => {
                op!(body, |i| task_definitions::list_families(store, scope, i))
            }
            "DeregisterTaskDefinition" => {
                op!(body, |i| task_definitions::deregister(store, scope, i)
                    .await)
            }
            "DeleteTaskDefinitions" => {
                op!(body, |i| task_definitions::delete(store, scope, i).await)
            }

            "PutAccountSetting" => {
                op!(body, |i| account_settings::put(store, scope, caller, i)
                    .await)
            }
            "PutAccountSettingDefault" => {
                op!(body, |i| account_settings::put_default(store, scope, i)
                    .await)
            }
            "ListAccountSettings" => {
                op!(body, |i| account_settings::list(store, scope, caller, i))
            }
            "DeleteAccountSetting" => {
                op!(body, |i| account_settings::delete(store, scope, caller, i)
                    .await)
            }

            "RegisterContainerInstance" => {
                op!(body, |i| instances::register(store, scope, presence, i)
                    .await)
            }
            "DeregisterContainerInstance" => {
                op!(body, |i| instances::deregister(store, scope, presence, i)
                    .await)
            }
            "DescribeContainerInstances" => {
                op!(body, |i| instances::describe(store, scope, presence, i))
            }
            "ListContainerInstances" => {
                op!(body, |i| instances::list(store, scope, presence, i))
            }
            "UpdateContainerInstancesState" => {
                op!(body, |i| instances::update_state(store, scope, presence, i)
                    .await)
            }
            "PutAttributes" => op!(body, |i| instances::put_attributes(store, scope, i).await),
            "DeleteAttributes" => {
                op!(body, |i| instances::delete_attributes(store, scope, i)
                    .await)
            }
            "ListAttributes" => op!(body, |i| instances::list_attributes(store, scope, i)),

            "CreateService" => {
                op!(body, |i| services::create(
                    store, scope, caller, networks, i
                )
                .await)
            }
            "UpdateService" => {
                op!(body, |i| services::update(store, scope, networks, i).await)
            }
            "DeleteService" => op!(body, |i| services::delete(store, scope, i).await),
            "DescribeServices" => op!(body, |i| services::describe(store, scope, i)),
            "ListServices" => op!(body, |i| services::list(store, scope, i)),

            "RunTask" => op!(body, |i| tasks::run(store, scope, presence, networks, i)
                .await),
            "StartTask" => op!(body, |i| tasks::start(store, scope, presence, networks, i)
                .await),
            "StopTask" => op!(body, |i| tasks::stop(store, scope, i).await),
            "DescribeTasks" => op!(body, |i| tasks::describe(store, scope, i)),
            "ListTasks" => op!(body, |i| tasks::list(store, scope, i)),

            "TagResource" => op!(body, |i| tagging::tag(store, scope, i).await),
            "UntagResource" => op!(body, |i| tagging::untag(store, scope, i).await),
            "ListTagsForResource" => op!(body, |i| tagging::list(store, scope, i)),

            other if ecs::OPERATIONS.contains(&other) => Err(error::unsupported(other)),
            other => Err(AwsError::unknown_operation(format!(
                "ECS has no operation named '{other}'."
            ))),
        }
    }
}
