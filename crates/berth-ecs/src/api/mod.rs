//! The third layer: Amazon ECS's API (`AmazonEC2ContainerServiceV20141113`).
//! One module per resource; [`EcsService`] parses each operation's input,
//! asks IAM what [`authz`] says it needs, and runs the handler.
//!
//! Every handler validates its input completely before it reads or writes
//! state; state-dependent checks and writes happen inside one store mutation
//! so concurrent requests cannot interleave between them.
//!
//! Architecture invariant: handlers never run containers; they write desired
//! state that controllers and agents act on. A resource module imports only
//! `state` and `launch` (and the shared `error`), never another `api` module:
//! what two of them share lives in a lower layer.

pub(crate) mod account_settings;
pub(crate) mod agent_calls;
pub(crate) mod authz;
pub(crate) mod capacity_providers;
pub(crate) mod clusters;
pub(crate) mod code_deploy;
pub(crate) mod deployments;
pub(crate) mod gateways;
pub(crate) mod instances;
pub(crate) mod not_implemented;
pub(crate) mod protection;
pub(crate) mod services;
pub(crate) mod tagging;
pub(crate) mod task_definitions;
pub(crate) mod task_sets;
pub(crate) mod tasks;

use std::sync::Arc;

use berth_model::shapes::ecs;
use berth_model::{AwsError, JsonService, RequestContext};
use berth_store::Store;

use crate::error;
use crate::state::clock::{self, Clock};
use crate::state::instances::Presence;
use crate::state::keys::Scope;
use crate::state::network::TaskNetworks;

/// The ECS API service.
pub struct EcsService {
    store: Arc<dyn Store>,
    presence: Arc<Presence>,
    networks: Option<Arc<dyn TaskNetworks>>,
    registries: Option<Arc<dyn crate::state::registry::ServiceRegistries>>,
    balancers: Option<Arc<dyn crate::state::load_balancers::LoadBalancerTargets>>,
    clock: Arc<dyn Clock>,
    /// Where agents reach this server (DiscoverPollEndpoint).
    endpoint: String,
}

impl EcsService {
    /// `presence` is shared with the [`AgentService`](crate::AgentService) so instances show
    /// whether their agent is connected.
    pub fn new(store: Arc<dyn Store>, presence: Arc<Presence>) -> Self {
        EcsService {
            store,
            presence,
            networks: None,
            registries: None,
            balancers: None,
            clock: clock::system(),
            endpoint: "http://127.0.0.1:4566".into(),
        }
    }

    /// Reads time from `clock` (tests drive it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The URL agents reach this server at (DiscoverPollEndpoint's answer).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// The VPC service awsvpc tasks take their subnets and interfaces from.
    pub fn with_networks(mut self, networks: Arc<dyn TaskNetworks>) -> Self {
        self.networks = Some(networks);
        self
    }

    /// The Cloud Map service `serviceRegistries` name their registries in.
    pub fn with_registries(
        mut self,
        registries: Arc<dyn crate::state::registry::ServiceRegistries>,
    ) -> Self {
        self.registries = Some(registries);
        self
    }

    /// Elastic Load Balancing, whose target groups `loadBalancers` name.
    pub fn with_load_balancers(
        mut self,
        balancers: Arc<dyn crate::state::load_balancers::LoadBalancerTargets>,
    ) -> Self {
        self.balancers = Some(balancers);
        self
    }
}

/// One operation: parses the input, works out what it needs from IAM (which
/// may rewrite the input to name the resources authorized, see [`authz`]),
/// asks the request's [`Access`](berth_model::authz::Access), then runs the
/// handler.
macro_rules! op {
    ($ctx:expr, $body:expr, |$input:ident| $requirements:expr => $call:expr) => {{
        #[allow(unused_mut)]
        let mut $input = berth_model::json::parse_input($body)?;
        let requirements: Vec<berth_model::authz::Requirement> = $requirements;
        $ctx.authorize(&requirements)?;
        let output = $call?;
        berth_model::json::to_body(&output)
    }};
}

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
        let registries = self.registries.as_deref();
        let balancers = self.balancers.as_deref();
        let now = self.clock.now();
        let a = authz::Authz::new(store, scope, ctx);
        let unscoped = || authz::unscoped(operation);
        match operation {
            "CreateCluster" => op!(ctx, body, |i| a.create_cluster(&i)?
                => clusters::create(store, scope, caller, i).await),
            "DescribeClusters" => op!(ctx, body, |i| a.describe_clusters(&i)?
                => clusters::describe(store, scope, i)),
            "ListClusters" => op!(ctx, body, |i| unscoped() => clusters::list(store, scope, i)),
            "UpdateCluster" => op!(ctx, body, |i| a.update_cluster(&i)?
                => clusters::update(store, scope, i).await),
            "UpdateClusterSettings" => op!(ctx, body, |i| a.update_cluster_settings(&i)?
                => clusters::update_settings(store, scope, i).await),
            "PutClusterCapacityProviders" => {
                op!(ctx, body, |i| a.put_cluster_capacity_providers(&i)?
                    => clusters::put_capacity_providers(store, scope, i).await)
            }
            "DeleteCluster" => op!(ctx, body, |i| a.delete_cluster(&i)?
                => clusters::delete(store, scope, i).await),

            "RegisterTaskDefinition" => op!(ctx, body, |i| a.register_task_definition(&mut i)?
                => task_definitions::register(store, scope, caller, now, i).await),
            "DescribeTaskDefinition" => op!(ctx, body, |i| unscoped()
                => task_definitions::describe(store, scope, i)),
            "ListTaskDefinitions" => op!(ctx, body, |i| unscoped()
                => task_definitions::list(store, scope, i)),
            "ListTaskDefinitionFamilies" => op!(ctx, body, |i| unscoped()
                => task_definitions::list_families(store, scope, i)),
            "DeregisterTaskDefinition" => op!(ctx, body, |i| unscoped()
                => task_definitions::deregister(store, scope, now, i).await),
            "DeleteTaskDefinitions" => op!(ctx, body, |i| a.delete_task_definitions(&i)?
                => task_definitions::delete(store, scope, now, i).await),

            "PutAccountSetting" => op!(ctx, body, |i| a.put_account_setting(&i)
                => account_settings::put(store, scope, caller, i).await),
            "PutAccountSettingDefault" => op!(ctx, body, |i| a.put_account_setting_default(&i)
                => account_settings::put_default(store, scope, i).await),
            "ListAccountSettings" => op!(ctx, body, |i| unscoped()
                => account_settings::list(store, scope, caller, i)),
            "DeleteAccountSetting" => op!(ctx, body, |i| a.delete_account_setting(&i)
                => account_settings::delete(store, scope, caller, i).await),

            "RegisterContainerInstance" => {
                op!(ctx, body, |i| a.register_container_instance(&i)?
                    => instances::register(store, scope, presence, now, i).await)
            }
            "DeregisterContainerInstance" => {
                op!(ctx, body, |i| a.deregister_container_instance(&i)?
                    => instances::deregister(store, scope, presence, i).await)
            }
            "DescribeContainerInstances" => {
                op!(ctx, body, |i| a.describe_container_instances(&i)?
                    => instances::describe(store, scope, presence, i))
            }
            "ListContainerInstances" => op!(ctx, body, |i| a.list_container_instances(&i)?
                => instances::list(store, scope, presence, i)),
            "UpdateContainerInstancesState" => {
                op!(ctx, body, |i| a.update_container_instances_state(&i)?
                    => instances::update_state(store, scope, presence, i).await)
            }
            "PutAttributes" => op!(ctx, body, |i| a.put_attributes(&i)?
                => instances::put_attributes(store, scope, i).await),
            "DeleteAttributes" => op!(ctx, body, |i| a.delete_attributes(&i)?
                => instances::delete_attributes(store, scope, i).await),
            "ListAttributes" => op!(ctx, body, |i| a.list_attributes(&i)?
                => instances::list_attributes(store, scope, i)),

            "CreateService" => op!(ctx, body, |i| a.create_service(&mut i)?
                => services::create(store, scope, caller, networks, registries, balancers, now, i).await),
            "UpdateService" => op!(ctx, body, |i| a.update_service(&mut i)?
                => services::update(store, scope, networks, registries, balancers, now, i).await),
            "DeleteService" => op!(ctx, body, |i| a.delete_service(&i)?
                => services::delete(store, scope, now, i).await),
            "DescribeServices" => op!(ctx, body, |i| a.describe_services(&i)?
                => services::describe(store, scope, i)),
            "ListServices" => op!(ctx, body, |i| a.list_services(&i)
                => services::list(store, scope, i)),

            "RunTask" => op!(ctx, body, |i| a.run_task(&mut i)?
                => tasks::run(store, scope, presence, networks, now, i).await),
            "StartTask" => op!(ctx, body, |i| a.start_task(&mut i)?
                => tasks::start(store, scope, presence, networks, now, i).await),
            "StopTask" => {
                op!(ctx, body, |i| a.stop_task(&i)? => tasks::stop(store, scope, now, i).await)
            }
            "DescribeTasks" => op!(ctx, body, |i| a.describe_tasks(&i)?
                => tasks::describe(store, scope, i)),
            "ListTasks" => op!(ctx, body, |i| a.list_tasks(&i)? => tasks::list(store, scope, i)),

            "TagResource" => op!(ctx, body, |i| a.tag_resource(&mut i)?
                => tagging::tag(store, scope, i).await),
            "UntagResource" => op!(ctx, body, |i| a.untag_resource(&mut i)?
                => tagging::untag(store, scope, i).await),
            "ListTagsForResource" => op!(ctx, body, |i| a.list_tags_for_resource(&mut i)?
                => tagging::list(store, scope, i)),

            "CreateCapacityProvider" => op!(ctx, body, |i| a.create_capacity_provider(&i)?
                => capacity_providers::create(store, scope, i).await),
            "DescribeCapacityProviders" => op!(ctx, body, |i| a.describe_capacity_providers(&i)?
                => capacity_providers::describe(store, scope, i)),
            "UpdateCapacityProvider" => op!(ctx, body, |i| a.update_capacity_provider(&i)?
                => capacity_providers::update(store, scope, i).await),
            "DeleteCapacityProvider" => op!(ctx, body, |i| a.delete_capacity_provider(&i)?
                => capacity_providers::delete(store, scope, i).await),

            "GetTaskProtection" => op!(ctx, body, |i| a.get_task_protection(&i)?
                => protection::get(store, scope, now, i)),
            "UpdateTaskProtection" => op!(ctx, body, |i| a.update_task_protection(&i)?
                => protection::update(store, scope, now, i).await),

            "ListServiceDeployments" => op!(ctx, body, |i| a.list_service_deployments(&i)?
                => deployments::list(store, scope, i)),
            "DescribeServiceDeployments" => op!(ctx, body, |i| a.describe_service_deployments(&i)
                => deployments::describe_deployments(store, scope, i)),
            "DescribeServiceRevisions" => op!(ctx, body, |i| a.describe_service_revisions(&i)
                => deployments::describe_revisions(store, scope, i)),
            "StopServiceDeployment" => op!(ctx, body, |i| a.stop_service_deployment(&i)
                => deployments::stop(store, scope, now, i).await),
            "ContinueServiceDeployment" => op!(ctx, body, |i| a.continue_service_deployment(&i)
                => deployments::continue_deployment(store, scope, i)),

            "CreateGateway" => op!(ctx, body, |i| a.create_gateway(&i)?
                => gateways::create(store, scope, networks, now, i).await),
            "DescribeGateway" => {
                op!(ctx, body, |i| { let r: &berth_model::shapes::ecs::DescribeGatewayRequest = &i; a.gateway("DescribeGateway", r.gateway.as_deref())? }
                => gateways::describe(store, scope, i))
            }
            "ListGateways" => op!(ctx, body, |i| unscoped() => gateways::list(store, scope, i)),
            "UpdateGateway" => op!(ctx, body, |i| a.update_gateway(&i)?
                => gateways::update(store, scope, networks, now, i).await),
            "DeleteGateway" => {
                op!(ctx, body, |i| { let r: &berth_model::shapes::ecs::DeleteGatewayRequest = &i; a.gateway("DeleteGateway", r.gateway.as_deref())? }
                => gateways::delete(store, scope, now, i).await)
            }
            "AssociateGatewayWithCluster" => {
                op!(ctx, body, |i| { let r: &berth_model::shapes::ecs::AssociateGatewayWithClusterRequest = &i; a.gateway("AssociateGatewayWithCluster", r.gateway.as_deref())? }
                => gateways::associate(store, scope, i).await)
            }
            "DisassociateGatewayFromCluster" => {
                op!(ctx, body, |i| { let r: &berth_model::shapes::ecs::DisassociateGatewayFromClusterRequest = &i; a.gateway("DisassociateGatewayFromCluster", r.gateway.as_deref())? }
                => gateways::disassociate(store, scope, i).await)
            }
            "ListGatewayClusterAssociations" => op!(ctx, body, |i| unscoped()
                => gateways::list_associations(store, scope, i)),
            "ListGatewayRoutes" => {
                op!(ctx, body, |i| unscoped() => gateways::list_routes(store, scope, i))
            }
            "DescribeGatewayRoute" => op!(ctx, body, |i| unscoped()
                => gateways::describe_route(store, scope, i)),
            "DescribeGatewayResources" => {
                op!(ctx, body, |i| { let r: &berth_model::shapes::ecs::DescribeGatewayResourcesRequest = &i; a.gateway("DescribeGatewayResources", r.gateway.as_deref())? }
                => gateways::describe_resources(store, scope, i))
            }
            "DiscoverPollEndpoint" => op!(ctx, body, |i| unscoped()
                => agent_calls::discover_poll_endpoint(&self.endpoint, i)),
            "UpdateContainerAgent" => op!(ctx, body, |i| a.update_container_agent(&i)?
                => agent_calls::update_container_agent(store, scope, i)),
            "ExecuteCommand" => op!(ctx, body, |i| a.execute_command(&i)?
                => agent_calls::execute_command(store, scope, i)),
            "ListServicesByNamespace" => op!(ctx, body, |i| unscoped()
                => agent_calls::list_services_by_namespace(store, scope, i)),

            "CreateTaskSet" => {
                op!(ctx, body, |i| { let i: &ecs::CreateTaskSetRequest = &i; a.on_task_sets_service(
                    operation, i.cluster.as_deref(), i.service.as_deref(),
                    i.tags.as_deref().unwrap_or(&[]))? }
                => task_sets::create(store, scope, networks, now, i).await)
            }
            "DescribeTaskSets" => {
                op!(ctx, body, |i| { let i: &ecs::DescribeTaskSetsRequest = &i; a.on_task_sets_service(
                    operation, i.cluster.as_deref(), i.service.as_deref(), &[])? }
                => task_sets::describe(store, scope, i))
            }
            "UpdateServicePrimaryTaskSet" => {
                op!(ctx, body, |i| { let i: &ecs::UpdateServicePrimaryTaskSetRequest = &i; a.on_task_sets_service(
                    operation, i.cluster.as_deref(), i.service.as_deref(), &[])? }
                => task_sets::update_primary(store, scope, now, i).await)
            }
            "UpdateTaskSet" => {
                op!(ctx, body, |i| { let i: &ecs::UpdateTaskSetRequest = &i; a.on_task_set(
                    operation, i.cluster.as_deref(), i.service.as_deref(), i.task_set.as_deref())? }
                => task_sets::update(store, scope, now, i).await)
            }
            "DeleteTaskSet" => {
                op!(ctx, body, |i| { let i: &ecs::DeleteTaskSetRequest = &i; a.on_task_set(
                    operation, i.cluster.as_deref(), i.service.as_deref(), i.task_set.as_deref())? }
                => task_sets::delete(store, scope, now, i).await)
            }

            "SubmitTaskStateChange" => {
                let input: ecs::SubmitTaskStateChangeRequest =
                    berth_model::json::parse_input(body)?;
                let reporter = state_reporter(ctx, &a, operation, input.cluster.as_deref())?;
                berth_model::json::to_body(
                    &agent_calls::submit_task_state_change(
                        store,
                        scope,
                        reporter.as_ref(),
                        now,
                        input,
                    )
                    .await?,
                )
            }
            "SubmitContainerStateChange" => {
                let input: ecs::SubmitContainerStateChangeRequest =
                    berth_model::json::parse_input(body)?;
                let reporter = state_reporter(ctx, &a, operation, input.cluster.as_deref())?;
                berth_model::json::to_body(
                    &agent_calls::submit_container_state_change(
                        store,
                        scope,
                        reporter.as_ref(),
                        now,
                        input,
                    )
                    .await?,
                )
            }
            "SubmitAttachmentStateChanges" => {
                let input: ecs::SubmitAttachmentStateChangesRequest =
                    berth_model::json::parse_input(body)?;
                let reporter = state_reporter(ctx, &a, operation, input.cluster.as_deref())?;
                berth_model::json::to_body(
                    &agent_calls::submit_attachment_state_changes(
                        store,
                        scope,
                        reporter.as_ref(),
                        input,
                    )
                    .await?,
                )
            }

            other if not_implemented::reason(other).is_some() => {
                ctx.authorize(&unscoped())?;
                Err(not_implemented::refuse(
                    other,
                    not_implemented::reason(other).unwrap_or_default(),
                ))
            }
            other if ecs::OPERATIONS.contains(&other) => Err(error::unsupported(other)),
            other => Err(AwsError::unknown_operation(format!(
                "ECS has no operation named '{other}'."
            ))),
        }
    }
}

/// Who reports a state change through the public agent calls: an agent
/// credential speaks for its container instance (like an ECS container
/// instance's role) and reports only on the tasks running there, which the
/// handler checks; any other caller needs `ecs:Submit…` on the cluster.
fn state_reporter(
    ctx: &RequestContext,
    a: &authz::Authz<'_>,
    operation: &str,
    cluster: Option<&str>,
) -> Result<Option<agent_calls::ReportingInstance>, AwsError> {
    if ctx.principal.kind == berth_model::PrincipalKind::Agent {
        // Bound to its instance: `report_on_task` refuses other tasks.
        ctx.no_authorization_needed();
        return agent_calls::reporting_instance(&ctx.principal.arn).map(Some);
    }
    ctx.authorize(&a.submit_state_change(operation, cluster)?)?;
    Ok(None)
}

/// `berth exec`'s client half (`BerthExecV1`, see
/// `berth_model::exec_protocol`): a session is authorized as
/// `ecs:ExecuteCommand` on the task and refused as ECS's ExecuteCommand is;
/// the agent of the task's instance runs it through the agent protocol.
pub struct ExecService {
    store: Arc<dyn Store>,
    hub: Arc<crate::state::exec::ExecHub>,
}

impl ExecService {
    /// `hub` is shared with the [`AgentService`](crate::AgentService)
    /// (`AgentService::with_exec`).
    pub fn new(store: Arc<dyn Store>, hub: Arc<crate::state::exec::ExecHub>) -> Self {
        ExecService { store, hub }
    }
}

#[async_trait::async_trait]
impl JsonService for ExecService {
    fn target_prefix(&self) -> &'static str {
        berth_model::exec_protocol::TARGET_PREFIX
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
        use berth_model::exec_protocol as exec;
        use berth_model::json::{parse_input, to_body};
        let store = self.store.as_ref();
        let scope = &Scope::of(ctx);
        let owner = ctx.principal.arn.as_str();
        let account = ctx.principal.account_id.as_str();
        let hub = self.hub.as_ref();
        if operation != "StartExecSession" {
            // No IAM permission beyond the session's: StartExecSession was
            // authorized as ecs:ExecuteCommand, and only the principal that
            // started a session may drive it (`ExecHub::owned`).
            ctx.no_authorization_needed();
        }
        match operation {
            "StartExecSession" => {
                let input: exec::StartExecSessionRequest = parse_input(body)?;
                let a = authz::Authz::new(store, scope, ctx);
                let requirements = a.execute_command(&agent_calls::as_execute_command(&input))?;
                ctx.authorize(&requirements)?;
                to_body(&agent_calls::start_exec_session(
                    store, scope, hub, owner, input,
                )?)
            }
            "SendExecInput" => {
                let input: exec::SendExecInputRequest = parse_input(body)?;
                hub.client_input(owner, account, input)?;
                to_body(&exec::SendExecInputResponse {})
            }
            "ReadExecOutput" => {
                let input: exec::ReadExecOutputRequest = parse_input(body)?;
                to_body(
                    &hub.client_output(
                        owner,
                        account,
                        &input.session_id,
                        input.ack,
                        input.wait_seconds,
                    )
                    .await?,
                )
            }
            "EndExecSession" => {
                let input: exec::EndExecSessionRequest = parse_input(body)?;
                hub.client_end(owner, account, &input.session_id)?;
                to_body(&exec::EndExecSessionResponse {})
            }
            other => Err(AwsError::unknown_operation(format!(
                "berth exec has no operation named '{other}'."
            ))),
        }
    }
}
