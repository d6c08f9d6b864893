//! What each ECS operation needs from IAM, as the Service Authorization
//! Reference lists it for Amazon ECS: the action `ecs:<Operation>` on the
//! canonical ARN of every resource the call concerns, the condition keys
//! that describe the resource and the request, and the dependent actions
//! (`iam:PassRole` for the roles a call hands to ECS, `ecs:TagResource` for
//! tags set at creation).
//!
//! Resources are named by their canonical ARN whatever form the caller used:
//! a name, a full ARN, or an old-format ARN without the cluster
//! (`task/<id>`, `container-instance/<id>`, `service/<name>`), resolved with
//! the same functions the handlers use, so a policy can never be matched
//! against one name while the handler acts on another. Where the resolution
//! depends on the store (a family resolves to its latest ACTIVE revision, an
//! old-format ARN to the cluster that holds the resource, a role name to its
//! ARN), the request is rewritten to name what was authorized, so the handler
//! acts on exactly that even if the store changes in between.
//!
//! An input that does not resolve needs the action on `*`: the handler then
//! refuses the input with its own error before it touches any state.

use berth_model::authz::{self as port, Requirement};
use berth_model::shapes::ecs::{
    CapacityProviderStrategyItem, Cluster, CreateClusterRequest, CreateServiceRequest,
    DeleteAccountSettingRequest, DeleteAttributesRequest, DeleteClusterRequest,
    DeleteServiceRequest, DeleteTaskDefinitionsRequest, DeregisterContainerInstanceRequest,
    DescribeClustersRequest, DescribeContainerInstancesRequest, DescribeServicesRequest,
    DescribeTasksRequest, ListAttributesRequest, ListContainerInstancesRequest,
    ListServicesRequest, ListTagsForResourceRequest, ListTasksRequest, NetworkConfiguration,
    PutAccountSettingDefaultRequest, PutAccountSettingRequest, PutAttributesRequest,
    PutClusterCapacityProvidersRequest, RegisterContainerInstanceRequest,
    RegisterTaskDefinitionRequest, RunTaskRequest, StartTaskRequest, StopTaskRequest, Tag,
    TagResourceRequest, TaskOverride, UntagResourceRequest, UpdateClusterRequest,
    UpdateClusterSettingsRequest, UpdateContainerInstancesStateRequest, UpdateServiceRequest,
};
use berth_model::shapes::ecs::{
    ContinueServiceDeploymentRequest, CreateCapacityProviderRequest, DeleteCapacityProviderRequest,
    DescribeCapacityProvidersRequest, DescribeServiceDeploymentsRequest,
    DescribeServiceRevisionsRequest, ExecuteCommandRequest, GetTaskProtectionRequest,
    ListServiceDeploymentsRequest, StopServiceDeploymentRequest, UpdateCapacityProviderRequest,
    UpdateContainerAgentRequest, UpdateTaskProtectionRequest,
};
use berth_model::{Arn, AwsError, RequestContext};
use berth_store::{ReadView, Store};

use crate::state::clusters;
use crate::state::instances::{self, InstanceRecord};
use crate::state::keys::Scope;
use crate::state::records::load;
use crate::state::services::{self, ServiceRecord};
use crate::state::task_definitions::{self, Reference, TaskDefinitionRecord};
use crate::state::tasks::{self, TaskRecord};

/// The service task roles (task and execution roles) are passed to.
pub(crate) const TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";
/// The service a service's own role (load balancer management) is passed to.
pub(crate) const ECS_SERVICE: &str = "ecs.amazonaws.com";

/// ECS's condition keys that Berth fills in.
pub(crate) mod keys {
    pub const CLUSTER: &str = "ecs:cluster";
    pub const TASK_DEFINITION: &str = "ecs:task-definition";
    pub const CAPACITY_PROVIDER: &str = "ecs:capacity-provider";
    pub const CONTAINER_INSTANCES: &str = "ecs:container-instances";
    pub const ENABLE_EXECUTE_COMMAND: &str = "ecs:enable-execute-command";
    pub const ENABLE_MANAGED_TAGS: &str = "ecs:enable-ecs-managed-tags";
    pub const PROPAGATE_TAGS: &str = "ecs:propagate-tags";
    pub const SUBNET: &str = "ecs:subnet";
    pub const AUTO_ASSIGN_PUBLIC_IP: &str = "ecs:auto-assign-public-ip";
    pub const ACCOUNT_SETTING: &str = "ecs:account-setting";
    pub const CREATE_ACTION: &str = "ecs:CreateAction";
    pub const COMPUTE_COMPATIBILITY: &str = "ecs:compute-compatibility";
    pub const PRIVILEGED: &str = "ecs:privileged";
    pub const TASK_CPU: &str = "ecs:task-cpu";
    pub const TASK_MEMORY: &str = "ecs:task-memory";
    /// ECS's own spelling of `aws:ResourceTag/<key>`.
    pub const RESOURCE_TAG_PREFIX: &str = "ecs:ResourceTag/";
}

/// A revision number no family reaches (revisions count up from 1 in a
/// `u32`): a family with no ACTIVE revision at authorization time is pinned
/// to it, so the handler answers "not found" as it would have and never runs
/// a revision registered after the check.
const UNREACHABLE_REVISION: u32 = u32::MAX;

fn action(operation: &str) -> String {
    format!("ecs:{operation}")
}

/// `ecs:<operation>` on `*`: for operations without a resource type, and for
/// inputs that do not resolve (the handler refuses them).
fn anywhere(operation: &str) -> Vec<Requirement> {
    port::on(&action(operation), Vec::new())
}

fn bool_text(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

fn tag_pairs(tags: &[Tag]) -> Vec<(&str, &str)> {
    tags.iter()
        .filter_map(|t| Some((t.key.as_deref()?, t.value.as_deref().unwrap_or(""))))
        .collect()
}

/// `aws:ResourceTag/<k>` and `ecs:ResourceTag/<k>` for each of the
/// resource's tags.
fn with_resource_tags(requirement: Requirement, tags: &[Tag]) -> Requirement {
    let pairs = tag_pairs(tags);
    let mut requirement = requirement.resource_tags(pairs.iter().copied());
    for (key, value) in pairs {
        requirement = requirement.condition(format!("{}{key}", keys::RESOURCE_TAG_PREFIX), value);
    }
    requirement
}

/// `aws:RequestTag/<k>` and `aws:TagKeys` for the tags a request sets.
fn with_request_tags(requirement: Requirement, tags: &[Tag]) -> Requirement {
    requirement.request_tags(tag_pairs(tags))
}

/// The ARN of cluster `name`.
pub(crate) fn cluster_arn(scope: &Scope, name: &str) -> String {
    scope.arn(&format!("cluster/{name}"))
}

/// The canonical ARN of a task named by id, full ARN or old-format ARN in
/// `cluster` (the cluster the request names, `default` when it names none).
#[cfg(test)]
pub(crate) fn task_arn(scope: &Scope, cluster: &str, reference: &str) -> Result<String, AwsError> {
    let id = tasks::resolve_task_id(scope, cluster, reference)?;
    Ok(scope.arn(&format!("task/{cluster}/{id}")))
}

/// The canonical ARN of a container instance named by id, full ARN or
/// old-format ARN in `cluster`.
#[cfg(test)]
pub(crate) fn instance_arn(
    scope: &Scope,
    cluster: &str,
    reference: &str,
) -> Result<String, AwsError> {
    let id = instances::resolve_id(scope, cluster, reference)?;
    Ok(scope.arn(&format!("container-instance/{cluster}/{id}")))
}

/// The canonical ARN of a service named by name, full ARN or old-format ARN
/// in `cluster`.
#[cfg(test)]
pub(crate) fn service_arn(
    scope: &Scope,
    cluster: &str,
    reference: &str,
) -> Result<String, AwsError> {
    let name = services::resolve_service(scope, cluster, reference)?;
    Ok(scope.arn(&format!("service/{cluster}/{name}")))
}

/// The ARN of a role named by ARN, name or `path/name` (ECS accepts all
/// three for task, execution and service roles).
pub(crate) fn role_arn(account: &str, reference: &str) -> String {
    if reference.starts_with("arn:") {
        reference.to_string()
    } else {
        format!(
            "arn:aws:iam::{account}:role/{}",
            reference.trim_start_matches('/')
        )
    }
}

/// The ARN of a capacity provider named by name or ARN.
pub(crate) fn capacity_provider_arn(scope: &Scope, reference: &str) -> String {
    if reference.starts_with("arn:") {
        reference.to_string()
    } else {
        scope.arn(&format!("capacity-provider/{reference}"))
    }
}

fn capacity_providers<'a>(scope: &Scope, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .map(|n| capacity_provider_arn(scope, n))
        .collect()
}

fn strategy_providers(
    scope: &Scope,
    strategy: Option<&[CapacityProviderStrategyItem]>,
) -> Vec<String> {
    capacity_providers(
        scope,
        strategy
            .unwrap_or(&[])
            .iter()
            .filter_map(|i| i.capacity_provider.as_deref()),
    )
}

/// A task definition reference resolved to the revision it names now.
#[derive(Debug, Clone)]
pub(crate) enum Definition {
    /// The stored revision (its canonical ARN is in the record).
    Found(Box<TaskDefinitionRecord>),
    /// No such revision, or a family without an ACTIVE revision: the ARN
    /// authorized and the reference the handler is given instead.
    Missing { arn: String, pinned: String },
}

/// Resolves a `taskDefinition` parameter (family, `family:revision`, ARN)
/// to the revision it names: a family names its latest ACTIVE revision, as
/// ECS resolves it before authorization.
pub(crate) fn task_definition(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    text: &str,
) -> Result<Option<Definition>, AwsError> {
    let Ok(reference) = task_definitions::parse_reference(scope, text) else {
        return Ok(None);
    };
    if let Some((record, _)) = task_definitions::find(view, scope, &reference)? {
        return Ok(Some(Definition::Found(Box::new(record))));
    }
    let (family, revision) = match &reference {
        Reference::Revision(family, revision) => (family.clone(), *revision),
        Reference::Family(family) => (family.clone(), UNREACHABLE_REVISION),
    };
    let arn = scope.arn(&format!("task-definition/{family}:{revision}"));
    Ok(Some(Definition::Missing {
        pinned: arn.clone(),
        arn,
    }))
}

impl Definition {
    pub fn arn(&self) -> &str {
        match self {
            Definition::Found(record) => record
                .task_definition
                .task_definition_arn
                .as_deref()
                .unwrap_or(""),
            Definition::Missing { arn, .. } => arn,
        }
    }

    /// The reference the handler acts on: the revision authorized.
    pub fn pinned(&self) -> String {
        match self {
            Definition::Found(_) => self.arn().to_string(),
            Definition::Missing { pinned, .. } => pinned.clone(),
        }
    }

    fn tags(&self) -> &[Tag] {
        match self {
            Definition::Found(record) => &record.tags,
            Definition::Missing { .. } => &[],
        }
    }

    /// The task and execution roles of the revision.
    fn roles(&self) -> Vec<&str> {
        match self {
            Definition::Found(record) => {
                let d = &record.task_definition;
                [d.task_role_arn.as_deref(), d.execution_role_arn.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|r| !r.is_empty())
                    .collect()
            }
            Definition::Missing { .. } => Vec::new(),
        }
    }
}

/// An ECS resource named by a full ARN (TagResource and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    Cluster(String),
    TaskDefinition(String, u32),
    Task { cluster: String, id: String },
    Service { cluster: String, name: String },
    ContainerInstance { cluster: String, id: String },
}

impl Resource {
    pub fn arn(&self, scope: &Scope) -> String {
        scope.arn(&match self {
            Resource::Cluster(name) => format!("cluster/{name}"),
            Resource::TaskDefinition(family, revision) => {
                format!("task-definition/{family}:{revision}")
            }
            Resource::Task { cluster, id } => format!("task/{cluster}/{id}"),
            Resource::Service { cluster, name } => format!("service/{cluster}/{name}"),
            Resource::ContainerInstance { cluster, id } => {
                format!("container-instance/{cluster}/{id}")
            }
        })
    }

    /// The tags the resource has now (none when it does not exist).
    fn tags(&self, view: &(impl ReadView + ?Sized), scope: &Scope) -> Result<Vec<Tag>, AwsError> {
        Ok(match self {
            Resource::Cluster(name) => load::<Cluster>(view, &scope.cluster(name))?
                .and_then(|(c, _)| c.tags)
                .unwrap_or_default(),
            Resource::TaskDefinition(family, revision) => {
                load::<TaskDefinitionRecord>(view, &scope.task_definition(family, *revision))?
                    .map(|(r, _)| r.tags)
                    .unwrap_or_default()
            }
            Resource::Task { cluster, id } => load::<TaskRecord>(view, &scope.task(cluster, id))?
                .and_then(|(r, _)| r.task.tags)
                .unwrap_or_default(),
            Resource::Service { cluster, name } => {
                load::<ServiceRecord>(view, &scope.service(cluster, name))?
                    .and_then(|(r, _)| r.service.tags)
                    .unwrap_or_default()
            }
            Resource::ContainerInstance { cluster, id } => {
                load::<InstanceRecord>(view, &scope.instance(cluster, id))?
                    .and_then(|(r, _)| r.instance.tags)
                    .unwrap_or_default()
            }
        })
    }
}

fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The clusters of the account and region (every one ever created).
fn cluster_names(view: &(impl ReadView + ?Sized), scope: &Scope) -> Vec<String> {
    let prefix = scope.clusters();
    view.range(&prefix, None, usize::MAX)
        .into_iter()
        .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// The cluster that holds the resource an old-format ARN names (its key
/// under each cluster is `key(cluster)`): `default` when it holds it or no
/// cluster does, the one cluster that does, `None` when several do.
fn cluster_holding(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    key: impl Fn(&str) -> String,
) -> Option<String> {
    let default = clusters::DEFAULT_CLUSTER;
    if view.get(&key(default)).is_some() {
        return Some(default.to_string());
    }
    let mut holding = cluster_names(view, scope)
        .into_iter()
        .filter(|c| view.get(&key(c)).is_some());
    match (holding.next(), holding.next()) {
        (None, _) => Some(default.to_string()),
        (Some(one), None) => Some(one),
        (Some(_), Some(_)) => None,
    }
}

/// Resolves a resource ARN (new or old format) in this account and region
/// to the resource it names; `None` when it names none (the handler refuses
/// it).
pub(crate) fn resource(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    text: &str,
) -> Option<Resource> {
    let arn = Arn::parse(text).filter(|a| a.service == "ecs")?;
    if arn.account != scope.account || arn.region != scope.region {
        return None;
    }
    let rest = arn.resource_id();
    // `<cluster>/<id>` (new format) or `<id>` (old format, found in the store).
    let scoped = |key: &dyn Fn(&str, &str) -> String| -> Option<(String, String)> {
        match rest.split_once('/') {
            Some((cluster, id)) => {
                clusters::check_name(cluster).ok()?;
                plain_id(id).then(|| (cluster.to_string(), id.to_string()))
            }
            None => {
                if !plain_id(rest) {
                    return None;
                }
                let cluster = cluster_holding(view, scope, |c| key(c, rest))?;
                Some((cluster, rest.to_string()))
            }
        }
    };
    match arn.resource_type() {
        "cluster" => {
            clusters::check_name(rest).ok()?;
            Some(Resource::Cluster(rest.to_string()))
        }
        "task-definition" => {
            let (family, revision) = task_definitions::parse_family_revision(rest)?;
            Some(Resource::TaskDefinition(family.to_string(), revision))
        }
        "task" => {
            let (cluster, id) = scoped(&|c, id| scope.task(c, id))?;
            Some(Resource::Task { cluster, id })
        }
        "service" => {
            let (cluster, name) = scoped(&|c, name| scope.service(c, name))?;
            Some(Resource::Service { cluster, name })
        }
        "container-instance" => {
            let (cluster, id) = scoped(&|c, id| scope.instance(c, id))?;
            Some(Resource::ContainerInstance { cluster, id })
        }
        _ => None,
    }
}

/// The subnets and public-IP choice of an awsvpc configuration.
fn network_keys(requirement: Requirement, network: Option<&NetworkConfiguration>) -> Requirement {
    let Some(vpc) = network.and_then(|n| n.awsvpc_configuration.as_ref()) else {
        return requirement;
    };
    let mut requirement = requirement;
    if let Some(subnets) = vpc.subnets.as_ref().filter(|s| !s.is_empty()) {
        requirement = requirement.condition_values(keys::SUBNET, subnets.iter().cloned());
    }
    let public = vpc.assign_public_ip.as_deref() == Some("ENABLED");
    requirement.condition(keys::AUTO_ASSIGN_PUBLIC_IP, bool_text(public))
}

/// What ECS operations need, read from the store of one account and region.
pub(crate) struct Authz<'a> {
    view: &'a dyn Store,
    scope: &'a Scope,
    caller: &'a str,
}

impl<'a> Authz<'a> {
    pub fn new(view: &'a dyn Store, scope: &'a Scope, ctx: &'a RequestContext) -> Self {
        Authz {
            view,
            scope,
            caller: &ctx.principal.arn,
        }
    }

    /// For callers without a request context (tests).
    #[cfg(test)]
    pub(crate) fn for_caller(view: &'a dyn Store, scope: &'a Scope, caller: &'a str) -> Self {
        Authz {
            view,
            scope,
            caller,
        }
    }

    fn cluster_tags(&self, name: &str) -> Result<Vec<Tag>, AwsError> {
        Resource::Cluster(name.to_string()).tags(self.view, self.scope)
    }

    /// `ecs:<operation>` on cluster `name`, with its tags.
    fn on_cluster(&self, operation: &str, name: &str) -> Result<Requirement, AwsError> {
        let requirement = Requirement::new(action(operation), cluster_arn(self.scope, name));
        Ok(with_resource_tags(requirement, &self.cluster_tags(name)?))
    }

    /// `ecs:<operation>` on the cluster a request names; `required`: the
    /// operation has no default cluster (a missing one is refused).
    fn cluster_operation(
        &self,
        operation: &str,
        reference: Option<&str>,
        required: bool,
    ) -> Result<Vec<Requirement>, AwsError> {
        let reference = reference.filter(|r| !r.is_empty());
        if required && reference.is_none() {
            return Ok(anywhere(operation));
        }
        match clusters::resolve_name(self.scope, reference) {
            Ok(name) => Ok(vec![self.on_cluster(operation, &name)?]),
            Err(_) => Ok(anywhere(operation)),
        }
    }

    /// `ecs:<operation>` on a resource in `cluster`, with its tags and
    /// `ecs:cluster`.
    fn in_cluster(
        &self,
        operation: &str,
        cluster: &str,
        resource: &Resource,
    ) -> Result<Requirement, AwsError> {
        let requirement = Requirement::new(action(operation), resource.arn(self.scope))
            .condition(keys::CLUSTER, cluster_arn(self.scope, cluster));
        Ok(with_resource_tags(
            requirement,
            &resource.tags(self.view, self.scope)?,
        ))
    }

    fn task(&self, cluster: &str, reference: &str) -> Option<Resource> {
        let id = tasks::resolve_task_id(self.scope, cluster, reference).ok()?;
        Some(Resource::Task {
            cluster: cluster.to_string(),
            id,
        })
    }

    fn service(&self, cluster: &str, reference: &str) -> Option<Resource> {
        let name = services::resolve_service(self.scope, cluster, reference).ok()?;
        Some(Resource::Service {
            cluster: cluster.to_string(),
            name,
        })
    }

    fn instance(&self, cluster: &str, reference: &str) -> Option<Resource> {
        let id = instances::resolve_id(self.scope, cluster, reference).ok()?;
        Some(Resource::ContainerInstance {
            cluster: cluster.to_string(),
            id,
        })
    }

    /// `operation` on each resource of `references` (in the request's
    /// cluster) that resolves; on `*` when none does.
    fn each_in_cluster(
        &self,
        operation: &str,
        cluster: Option<&str>,
        references: &[String],
        resolve: impl Fn(&Self, &str, &str) -> Option<Resource>,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Ok(cluster) = clusters::resolve_name(self.scope, cluster) else {
            return Ok(anywhere(operation));
        };
        let mut out = Vec::new();
        for reference in references {
            if let Some(resource) = resolve(self, &cluster, reference) {
                out.push(self.in_cluster(operation, &cluster, &resource)?);
            }
        }
        if out.is_empty() {
            return Ok(anywhere(operation));
        }
        Ok(out)
    }

    /// `ecs:TagResource` on a resource being created with tags, when the
    /// caller's `tagResourceAuthorization` account setting is on (ECS's
    /// default).
    fn tag_on_create(
        &self,
        operation: &str,
        resource: String,
        tags: &[Tag],
    ) -> Option<Requirement> {
        if tag_pairs(tags).is_empty() {
            return None;
        }
        let setting = crate::state::account_settings::effective_value(
            self.view,
            self.scope,
            "tagResourceAuthorization",
            self.caller,
        );
        if setting.as_deref() == Some("off") {
            return None;
        }
        Some(
            with_request_tags(Requirement::new("ecs:TagResource", resource), tags)
                .condition(keys::CREATE_ACTION, operation),
        )
    }

    /// `iam:PassRole` on each role (deduplicated, in order), passed to
    /// `service`.
    fn pass_roles<'r>(
        &self,
        roles: impl IntoIterator<Item = &'r str>,
        service: &str,
    ) -> Vec<Requirement> {
        let mut seen: Vec<String> = Vec::new();
        for role in roles.into_iter().filter(|r| !r.is_empty()) {
            let arn = role_arn(&self.scope.account, role);
            if !seen.contains(&arn) {
                seen.push(arn);
            }
        }
        seen.into_iter()
            .map(|arn| Requirement::pass_role(arn, service))
            .collect()
    }

    /// Resolves a request's `taskDefinition`, pinning the request to the
    /// revision found.
    fn pin_definition(
        &self,
        reference: &mut Option<String>,
    ) -> Result<Option<Definition>, AwsError> {
        let Some(text) = reference.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let found = task_definition(self.view, self.scope, text)?;
        if let Some(definition) = &found {
            *reference = Some(definition.pinned());
        }
        Ok(found)
    }

    // -----------------------------------------------------------------
    // Clusters

    pub fn create_cluster(
        &self,
        input: &CreateClusterRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let name = match input.cluster_name.as_deref() {
            None | Some("") => clusters::DEFAULT_CLUSTER,
            Some(n) if clusters::check_name(n).is_ok() => n,
            Some(_) => return Ok(anywhere("CreateCluster")),
        };
        let arn = cluster_arn(self.scope, name);
        let tags = input.tags.as_deref().unwrap_or(&[]);
        let mut requirement =
            with_request_tags(Requirement::new(action("CreateCluster"), arn.clone()), tags);
        if let Some(providers) = input.capacity_providers.as_ref().filter(|p| !p.is_empty()) {
            requirement = requirement.condition_values(
                keys::CAPACITY_PROVIDER,
                capacity_providers(self.scope, providers.iter().map(String::as_str)),
            );
        }
        let mut out = vec![requirement];
        out.extend(self.tag_on_create("CreateCluster", arn, tags));
        Ok(out)
    }

    pub fn describe_clusters(
        &self,
        input: &DescribeClustersRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let default = vec![clusters::DEFAULT_CLUSTER.to_string()];
        let references = input
            .clusters
            .as_ref()
            .filter(|c| !c.is_empty())
            .unwrap_or(&default);
        let mut out = Vec::new();
        for reference in references {
            if let Ok(name) = clusters::resolve_name(self.scope, Some(reference)) {
                out.push(self.on_cluster("DescribeClusters", &name)?);
            }
        }
        if out.is_empty() {
            return Ok(anywhere("DescribeClusters"));
        }
        Ok(out)
    }

    pub fn update_cluster(
        &self,
        input: &UpdateClusterRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation("UpdateCluster", input.cluster.as_deref(), true)
    }

    pub fn update_cluster_settings(
        &self,
        input: &UpdateClusterSettingsRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation("UpdateClusterSettings", input.cluster.as_deref(), true)
    }

    pub fn put_cluster_capacity_providers(
        &self,
        input: &PutClusterCapacityProvidersRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let mut out = self.cluster_operation(
            "PutClusterCapacityProviders",
            input.cluster.as_deref(),
            true,
        )?;
        let providers = input.capacity_providers.as_deref().unwrap_or(&[]);
        if let Some(first) = out.first_mut().filter(|_| !providers.is_empty()) {
            *first = first.clone().condition_values(
                keys::CAPACITY_PROVIDER,
                capacity_providers(self.scope, providers.iter().map(String::as_str)),
            );
        }
        Ok(out)
    }

    pub fn delete_cluster(
        &self,
        input: &DeleteClusterRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation("DeleteCluster", input.cluster.as_deref(), true)
    }

    // -----------------------------------------------------------------
    // Task definitions

    /// The revision RegisterTaskDefinition will create: the family's
    /// counter plus one (read from its counter record).
    fn next_revision(&self, family: &str) -> u32 {
        let last = self
            .view
            .get(&self.scope.family_counter(family))
            .and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
            .and_then(|v| v.get("lastRevision").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        u32::try_from(last).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// RegisterTaskDefinition: the new revision, `iam:PassRole` for its task
    /// and execution roles (passed to `ecs-tasks.amazonaws.com`). Role names
    /// become the ARNs authorized.
    pub fn register_task_definition(
        &self,
        input: &mut RegisterTaskDefinitionRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        for role in [&mut input.task_role_arn, &mut input.execution_role_arn] {
            if let Some(r) = role.as_mut().filter(|r| !r.is_empty()) {
                *r = role_arn(&self.scope.account, r);
            }
        }
        let Ok(definition) = crate::state::taskdef::normalize(input) else {
            return Ok(anywhere("RegisterTaskDefinition"));
        };
        let family = definition.family.clone().unwrap_or_default();
        let arn = self.scope.arn(&format!(
            "task-definition/{family}:{}",
            self.next_revision(&family)
        ));
        let tags = input.tags.as_deref().unwrap_or(&[]);
        let privileged = definition
            .container_definitions
            .iter()
            .flatten()
            .any(|c| c.privileged == Some(true));
        let mut requirement = with_request_tags(
            Requirement::new(action("RegisterTaskDefinition"), arn.clone()),
            tags,
        )
        .condition(keys::PRIVILEGED, bool_text(privileged));
        if let Some(compat) = input
            .requires_compatibilities
            .as_ref()
            .filter(|c| !c.is_empty())
        {
            requirement =
                requirement.condition_values(keys::COMPUTE_COMPATIBILITY, compat.iter().cloned());
        }
        if let Some(cpu) = definition.cpu.as_deref() {
            requirement = requirement.condition(keys::TASK_CPU, cpu);
        }
        if let Some(memory) = definition.memory.as_deref() {
            requirement = requirement.condition(keys::TASK_MEMORY, memory);
        }
        let mut out = vec![requirement];
        out.extend(self.tag_on_create("RegisterTaskDefinition", arn, tags));
        out.extend(
            self.pass_roles(
                [
                    input.task_role_arn.as_deref(),
                    input.execution_role_arn.as_deref(),
                ]
                .into_iter()
                .flatten(),
                TASKS_SERVICE,
            ),
        );
        Ok(out)
    }

    pub fn delete_task_definitions(
        &self,
        input: &DeleteTaskDefinitionsRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let mut out = Vec::new();
        for text in input.task_definitions.iter().flatten() {
            if let Ok(Reference::Revision(family, revision)) =
                task_definitions::parse_reference(self.scope, text)
            {
                let resource = Resource::TaskDefinition(family, revision);
                let requirement =
                    Requirement::new(action("DeleteTaskDefinitions"), resource.arn(self.scope));
                out.push(with_resource_tags(
                    requirement,
                    &resource.tags(self.view, self.scope)?,
                ));
            }
        }
        if out.is_empty() {
            return Ok(anywhere("DeleteTaskDefinitions"));
        }
        Ok(out)
    }

    // -----------------------------------------------------------------
    // Account settings (no resource type; the setting's name as a key)

    fn account_setting(operation: &str, name: Option<&str>) -> Vec<Requirement> {
        let mut out = anywhere(operation);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out = out
                .into_iter()
                .map(|r| r.condition(keys::ACCOUNT_SETTING, name))
                .collect();
        }
        out
    }

    pub fn put_account_setting(&self, input: &PutAccountSettingRequest) -> Vec<Requirement> {
        Self::account_setting("PutAccountSetting", input.name.as_deref())
    }

    pub fn put_account_setting_default(
        &self,
        input: &PutAccountSettingDefaultRequest,
    ) -> Vec<Requirement> {
        Self::account_setting("PutAccountSettingDefault", input.name.as_deref())
    }

    pub fn delete_account_setting(&self, input: &DeleteAccountSettingRequest) -> Vec<Requirement> {
        Self::account_setting("DeleteAccountSetting", input.name.as_deref())
    }

    // -----------------------------------------------------------------
    // Container instances

    pub fn register_container_instance(
        &self,
        input: &RegisterContainerInstanceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Ok(cluster) = clusters::resolve_name(self.scope, input.cluster.as_deref()) else {
            return Ok(anywhere("RegisterContainerInstance"));
        };
        let tags = input.tags.as_deref().unwrap_or(&[]);
        let requirement = with_request_tags(
            self.on_cluster("RegisterContainerInstance", &cluster)?,
            tags,
        );
        let instance = input
            .container_instance_arn
            .as_deref()
            .filter(|a| !a.is_empty())
            .and_then(|a| self.instance(&cluster, a))
            .map(|r| r.arn(self.scope))
            .unwrap_or_else(|| self.scope.arn(&format!("container-instance/{cluster}/*")));
        let mut out = vec![requirement];
        out.extend(self.tag_on_create("RegisterContainerInstance", instance, tags));
        Ok(out)
    }

    pub fn deregister_container_instance(
        &self,
        input: &DeregisterContainerInstanceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation(
            "DeregisterContainerInstance",
            input.cluster.as_deref(),
            false,
        )
    }

    pub fn describe_container_instances(
        &self,
        input: &DescribeContainerInstancesRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.each_in_cluster(
            "DescribeContainerInstances",
            input.cluster.as_deref(),
            input.container_instances.as_deref().unwrap_or(&[]),
            Self::instance,
        )
    }

    pub fn list_container_instances(
        &self,
        input: &ListContainerInstancesRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation("ListContainerInstances", input.cluster.as_deref(), false)
    }

    pub fn update_container_instances_state(
        &self,
        input: &UpdateContainerInstancesStateRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.each_in_cluster(
            "UpdateContainerInstancesState",
            input.cluster.as_deref(),
            input.container_instances.as_deref().unwrap_or(&[]),
            Self::instance,
        )
    }

    fn attributes(
        &self,
        operation: &str,
        cluster: Option<&str>,
        attributes: &[berth_model::shapes::ecs::Attribute],
    ) -> Result<Vec<Requirement>, AwsError> {
        let targets: Vec<String> = attributes
            .iter()
            .filter(|a| matches!(a.target_type.as_deref(), None | Some("container-instance")))
            .filter_map(|a| a.target_id.clone())
            .collect();
        self.each_in_cluster(operation, cluster, &targets, Self::instance)
    }

    pub fn put_attributes(
        &self,
        input: &PutAttributesRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.attributes(
            "PutAttributes",
            input.cluster.as_deref(),
            input.attributes.as_deref().unwrap_or(&[]),
        )
    }

    pub fn delete_attributes(
        &self,
        input: &DeleteAttributesRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.attributes(
            "DeleteAttributes",
            input.cluster.as_deref(),
            input.attributes.as_deref().unwrap_or(&[]),
        )
    }

    pub fn list_attributes(
        &self,
        input: &ListAttributesRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation("ListAttributes", input.cluster.as_deref(), false)
    }

    // -----------------------------------------------------------------
    // Services

    /// `iam:PassRole` for a definition's roles.
    fn definition_roles(&self, definition: Option<&Definition>) -> Vec<Requirement> {
        self.pass_roles(
            definition.map(Definition::roles).unwrap_or_default(),
            TASKS_SERVICE,
        )
    }

    /// The service keys CreateService and UpdateService share.
    fn service_keys(
        &self,
        mut requirement: Requirement,
        definition: Option<&Definition>,
        strategy: Option<&[CapacityProviderStrategyItem]>,
        network: Option<&NetworkConfiguration>,
    ) -> Requirement {
        if let Some(definition) = definition {
            requirement = requirement.condition(keys::TASK_DEFINITION, definition.arn());
        }
        let providers = strategy_providers(self.scope, strategy);
        if !providers.is_empty() {
            requirement = requirement.condition_values(keys::CAPACITY_PROVIDER, providers);
        }
        network_keys(requirement, network)
    }

    /// CreateService: the new service, `iam:PassRole` for its definition's
    /// roles (to `ecs-tasks.amazonaws.com`) and for its own `role` (to
    /// `ecs.amazonaws.com`).
    pub fn create_service(
        &self,
        input: &mut CreateServiceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let cluster = clusters::resolve_name(self.scope, input.cluster.as_deref());
        let name = input.service_name.as_deref().filter(|n| !n.is_empty());
        let (Ok(cluster), Some(name)) = (cluster, name) else {
            return Ok(anywhere("CreateService"));
        };
        let arn = self.scope.arn(&format!("service/{cluster}/{name}"));
        let definition = self.pin_definition(&mut input.task_definition)?;
        if let Some(role) = input.role.as_mut().filter(|r| !r.is_empty()) {
            *role = role_arn(&self.scope.account, role);
        }
        let tags = input.tags.as_deref().unwrap_or(&[]);
        let requirement =
            with_request_tags(Requirement::new(action("CreateService"), arn.clone()), tags)
                .condition(keys::CLUSTER, cluster_arn(self.scope, &cluster))
                .condition(
                    keys::ENABLE_EXECUTE_COMMAND,
                    bool_text(input.enable_execute_command.unwrap_or(false)),
                )
                .condition(
                    keys::ENABLE_MANAGED_TAGS,
                    bool_text(input.enable_ecs_managed_tags.unwrap_or(false)),
                )
                .condition(
                    keys::PROPAGATE_TAGS,
                    input.propagate_tags.as_deref().unwrap_or("NONE"),
                );
        let requirement = self.service_keys(
            requirement,
            definition.as_ref(),
            input.capacity_provider_strategy.as_deref(),
            input.network_configuration.as_ref(),
        );
        let mut out = vec![requirement];
        out.extend(self.tag_on_create("CreateService", arn, tags));
        out.extend(self.definition_roles(definition.as_ref()));
        out.extend(self.pass_roles(input.role.as_deref(), ECS_SERVICE));
        Ok(out)
    }

    /// UpdateService: the service, and `iam:PassRole` for the roles of a new
    /// task definition.
    pub fn update_service(
        &self,
        input: &mut UpdateServiceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let cluster = clusters::resolve_name(self.scope, input.cluster.as_deref());
        let service = match (&cluster, input.service.as_deref()) {
            (Ok(cluster), Some(reference)) => self.service(cluster, reference),
            _ => None,
        };
        let (Ok(cluster), Some(service)) = (cluster, service) else {
            return Ok(anywhere("UpdateService"));
        };
        let definition = self.pin_definition(&mut input.task_definition)?;
        let mut requirement = self.in_cluster("UpdateService", &cluster, &service)?;
        if let Some(exec) = input.enable_execute_command {
            requirement = requirement.condition(keys::ENABLE_EXECUTE_COMMAND, bool_text(exec));
        }
        if let Some(managed) = input.enable_ecs_managed_tags {
            requirement = requirement.condition(keys::ENABLE_MANAGED_TAGS, bool_text(managed));
        }
        if let Some(propagate) = input.propagate_tags.as_deref() {
            requirement = requirement.condition(keys::PROPAGATE_TAGS, propagate);
        }
        let requirement = self.service_keys(
            requirement,
            definition.as_ref(),
            input.capacity_provider_strategy.as_deref(),
            input.network_configuration.as_ref(),
        );
        let mut out = vec![requirement];
        out.extend(self.definition_roles(definition.as_ref()));
        Ok(out)
    }

    pub fn delete_service(
        &self,
        input: &DeleteServiceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let references: Vec<String> = input.service.iter().cloned().collect();
        self.each_in_cluster(
            "DeleteService",
            input.cluster.as_deref(),
            &references,
            Self::service,
        )
    }

    pub fn describe_services(
        &self,
        input: &DescribeServicesRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.each_in_cluster(
            "DescribeServices",
            input.cluster.as_deref(),
            input.services.as_deref().unwrap_or(&[]),
            Self::service,
        )
    }

    /// ListServices has no resource type; `ecs:cluster` names the cluster.
    pub fn list_services(&self, input: &ListServicesRequest) -> Vec<Requirement> {
        let mut out = anywhere("ListServices");
        if let Ok(cluster) = clusters::resolve_name(self.scope, input.cluster.as_deref()) {
            let arn = cluster_arn(self.scope, &cluster);
            out = out
                .into_iter()
                .map(|r| r.condition(keys::CLUSTER, arn.clone()))
                .collect();
        }
        out
    }

    // -----------------------------------------------------------------
    // Tasks

    /// RunTask and StartTask: the task definition revision (a family is
    /// pinned to its latest ACTIVE revision), its tags, the request's tags
    /// and keys, and `iam:PassRole` for the definition's roles and the
    /// overrides' roles.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        operation: &str,
        cluster: &str,
        reference: &mut Option<String>,
        tags: &[Tag],
        enable_execute_command: Option<bool>,
        overrides: Option<&TaskOverride>,
        extra: impl FnOnce(Requirement) -> Requirement,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Some(definition) = self.pin_definition(reference)? else {
            return Ok(anywhere(operation));
        };
        let requirement = Requirement::new(action(operation), definition.arn())
            .condition(keys::CLUSTER, cluster_arn(self.scope, cluster))
            .condition(
                keys::ENABLE_EXECUTE_COMMAND,
                bool_text(enable_execute_command.unwrap_or(false)),
            );
        let requirement = with_request_tags(
            with_resource_tags(extra(requirement), definition.tags()),
            tags,
        );
        let mut out = vec![requirement];
        out.extend(self.tag_on_create(
            operation,
            self.scope.arn(&format!("task/{cluster}/*")),
            tags,
        ));
        let mut roles = definition.roles();
        if let Some(o) = overrides {
            roles.extend(
                [o.task_role_arn.as_deref(), o.execution_role_arn.as_deref()]
                    .into_iter()
                    .flatten(),
            );
        }
        out.extend(self.pass_roles(roles, TASKS_SERVICE));
        Ok(out)
    }

    pub fn run_task(&self, input: &mut RunTaskRequest) -> Result<Vec<Requirement>, AwsError> {
        let Ok(cluster) = clusters::resolve_name(self.scope, input.cluster.as_deref()) else {
            return Ok(anywhere("RunTask"));
        };
        let providers = strategy_providers(self.scope, input.capacity_provider_strategy.as_deref());
        self.launch(
            "RunTask",
            &cluster,
            &mut input.task_definition,
            input.tags.as_deref().unwrap_or(&[]),
            input.enable_execute_command,
            input.overrides.as_ref(),
            |r| {
                if providers.is_empty() {
                    r
                } else {
                    r.condition_values(keys::CAPACITY_PROVIDER, providers)
                }
            },
        )
    }

    pub fn start_task(&self, input: &mut StartTaskRequest) -> Result<Vec<Requirement>, AwsError> {
        let Ok(cluster) = clusters::resolve_name(self.scope, input.cluster.as_deref()) else {
            return Ok(anywhere("StartTask"));
        };
        let instances: Vec<String> = input
            .container_instances
            .iter()
            .flatten()
            .filter_map(|r| self.instance(&cluster, r))
            .map(|r| r.arn(self.scope))
            .collect();
        self.launch(
            "StartTask",
            &cluster,
            &mut input.task_definition,
            input.tags.as_deref().unwrap_or(&[]),
            input.enable_execute_command,
            input.overrides.as_ref(),
            |r| {
                if instances.is_empty() {
                    r
                } else {
                    r.condition_values(keys::CONTAINER_INSTANCES, instances)
                }
            },
        )
    }

    pub fn stop_task(&self, input: &StopTaskRequest) -> Result<Vec<Requirement>, AwsError> {
        let references: Vec<String> = input.task.iter().cloned().collect();
        self.each_in_cluster(
            "StopTask",
            input.cluster.as_deref(),
            &references,
            Self::task,
        )
    }

    pub fn describe_tasks(
        &self,
        input: &DescribeTasksRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.each_in_cluster(
            "DescribeTasks",
            input.cluster.as_deref(),
            input.tasks.as_deref().unwrap_or(&[]),
            Self::task,
        )
    }

    /// ListTasks: on the container instance it filters by (on `*` when it
    /// names none), with `ecs:cluster`.
    pub fn list_tasks(&self, input: &ListTasksRequest) -> Result<Vec<Requirement>, AwsError> {
        let Ok(cluster) = clusters::resolve_name(self.scope, input.cluster.as_deref()) else {
            return Ok(anywhere("ListTasks"));
        };
        let instance = input
            .container_instance
            .as_deref()
            .filter(|c| !c.is_empty())
            .and_then(|c| self.instance(&cluster, c));
        match instance {
            Some(instance) => Ok(vec![self.in_cluster("ListTasks", &cluster, &instance)?]),
            None => Ok(anywhere("ListTasks")
                .into_iter()
                .map(|r| r.condition(keys::CLUSTER, cluster_arn(self.scope, &cluster)))
                .collect()),
        }
    }

    // -----------------------------------------------------------------
    // Tags

    /// Resolves `resourceArn` to its resource and rewrites it to the
    /// canonical ARN (old-format ARNs name the cluster that holds it).
    fn tag_target(
        &self,
        operation: &str,
        resource_arn: &mut Option<String>,
    ) -> Result<Option<Requirement>, AwsError> {
        let Some(resource) = resource_arn
            .as_deref()
            .and_then(|text| resource(self.view, self.scope, text))
        else {
            return Ok(None);
        };
        let arn = resource.arn(self.scope);
        *resource_arn = Some(arn.clone());
        Ok(Some(with_resource_tags(
            Requirement::new(action(operation), arn),
            &resource.tags(self.view, self.scope)?,
        )))
    }

    pub fn tag_resource(
        &self,
        input: &mut TagResourceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        match self.tag_target("TagResource", &mut input.resource_arn)? {
            Some(r) => Ok(vec![with_request_tags(
                r,
                input.tags.as_deref().unwrap_or(&[]),
            )]),
            None => Ok(anywhere("TagResource")),
        }
    }

    pub fn untag_resource(
        &self,
        input: &mut UntagResourceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        match self.tag_target("UntagResource", &mut input.resource_arn)? {
            Some(r) => Ok(vec![r.tag_keys(input.tag_keys.iter().flatten().cloned())]),
            None => Ok(anywhere("UntagResource")),
        }
    }

    pub fn list_tags_for_resource(
        &self,
        input: &mut ListTagsForResourceRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        match self.tag_target("ListTagsForResource", &mut input.resource_arn)? {
            Some(r) => Ok(vec![r]),
            None => Ok(anywhere("ListTagsForResource")),
        }
    }
}

/// The operations of issue 19: capacity providers, task protection,
/// service deployments and revisions, the agent and exec calls.
impl<'a> Authz<'a> {
    /// `ecs:<operation>` on a capacity provider (name or ARN), with its tags.
    fn on_capacity_provider(
        &self,
        operation: &str,
        reference: &str,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Ok(name) = crate::state::capacity_providers::resolve_name(self.scope, reference) else {
            return Ok(anywhere(operation));
        };
        let tags = crate::state::capacity_providers::find(self.view, self.scope, &name)?
            .and_then(|(p, _)| p.tags)
            .unwrap_or_default();
        let requirement =
            Requirement::new(action(operation), capacity_provider_arn(self.scope, &name));
        Ok(vec![with_resource_tags(requirement, &tags)])
    }

    pub fn create_capacity_provider(
        &self,
        input: &CreateCapacityProviderRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Some(name) = input
            .name
            .as_deref()
            .filter(|n| !n.is_empty() && !n.starts_with("arn:"))
        else {
            return Ok(anywhere("CreateCapacityProvider"));
        };
        let arn = capacity_provider_arn(self.scope, name);
        let tags = input.tags.as_deref().unwrap_or(&[]);
        let mut out = vec![with_request_tags(
            Requirement::new(action("CreateCapacityProvider"), arn.clone()),
            tags,
        )];
        out.extend(self.tag_on_create("CreateCapacityProvider", arn, tags));
        Ok(out)
    }

    pub fn describe_capacity_providers(
        &self,
        input: &DescribeCapacityProvidersRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let mut out = Vec::new();
        for reference in input.capacity_providers.iter().flatten() {
            let r = self.on_capacity_provider("DescribeCapacityProviders", reference)?;
            if r.iter().any(|r| r.resource != "*") {
                out.extend(r);
            }
        }
        if out.is_empty() {
            return Ok(anywhere("DescribeCapacityProviders"));
        }
        Ok(out)
    }

    pub fn update_capacity_provider(
        &self,
        input: &UpdateCapacityProviderRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.on_capacity_provider(
            "UpdateCapacityProvider",
            input.name.as_deref().unwrap_or(""),
        )
    }

    /// `ecs:<operation>` on a gateway named by name or ARN, with its tags.
    fn on_gateway(&self, operation: &str, reference: &str) -> Result<Vec<Requirement>, AwsError> {
        let Ok(name) = crate::state::gateways::resolve_name(self.scope, reference) else {
            return Ok(anywhere(operation));
        };
        let tags = crate::state::gateways::find(self.view, self.scope, &name)?
            .and_then(|g| g.gateway.tags)
            .unwrap_or_default();
        let requirement = Requirement::new(
            action(operation),
            crate::state::gateways::gateway_arn(self.scope, &name),
        );
        Ok(vec![with_resource_tags(requirement, &tags)])
    }

    /// CreateGateway: the new gateway, `iam:PassRole` for its
    /// infrastructure role (passed to ECS), `ecs:TagResource` when tagged.
    pub fn create_gateway(
        &self,
        input: &berth_model::shapes::ecs::CreateGatewayRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Some(name) = input
            .name
            .as_deref()
            .filter(|n| !n.is_empty() && !n.starts_with("arn:"))
        else {
            return Ok(anywhere("CreateGateway"));
        };
        let arn = crate::state::gateways::gateway_arn(self.scope, name);
        let tags = input.tags.as_deref().unwrap_or(&[]);
        let mut out = vec![with_request_tags(
            Requirement::new(action("CreateGateway"), arn.clone()),
            tags,
        )];
        out.extend(self.pass_roles(input.infrastructure_role_arn.as_deref(), ECS_SERVICE));
        out.extend(self.tag_on_create("CreateGateway", arn, tags));
        Ok(out)
    }

    /// UpdateGateway: the gateway, and `iam:PassRole` for a new role.
    pub fn update_gateway(
        &self,
        input: &berth_model::shapes::ecs::UpdateGatewayRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let mut out = self.on_gateway("UpdateGateway", input.gateway.as_deref().unwrap_or(""))?;
        out.extend(self.pass_roles(input.infrastructure_role_arn.as_deref(), ECS_SERVICE));
        Ok(out)
    }

    /// Operations on one gateway (Describe, Delete, DescribeGatewayResources,
    /// Associate/Disassociate: the gateway is the resource, as in ECS's
    /// service authorization reference).
    pub fn gateway(
        &self,
        operation: &str,
        reference: Option<&str>,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.on_gateway(operation, reference.unwrap_or(""))
    }

    pub fn delete_capacity_provider(
        &self,
        input: &DeleteCapacityProviderRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.on_capacity_provider(
            "DeleteCapacityProvider",
            input.capacity_provider.as_deref().unwrap_or(""),
        )
    }

    /// `ecs:<operation>` on each task named (the cluster is required).
    fn on_tasks(
        &self,
        operation: &str,
        cluster: Option<&str>,
        tasks: Option<&[String]>,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Some(cluster) = cluster.filter(|c| !c.is_empty()) else {
            return Ok(anywhere(operation));
        };
        self.each_in_cluster(operation, Some(cluster), tasks.unwrap_or(&[]), Self::task)
    }

    pub fn get_task_protection(
        &self,
        input: &GetTaskProtectionRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.on_tasks(
            "GetTaskProtection",
            input.cluster.as_deref(),
            input.tasks.as_deref(),
        )
    }

    pub fn update_task_protection(
        &self,
        input: &UpdateTaskProtectionRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.on_tasks(
            "UpdateTaskProtection",
            input.cluster.as_deref(),
            input.tasks.as_deref(),
        )
    }

    pub fn list_service_deployments(
        &self,
        input: &ListServiceDeploymentsRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let references: Vec<String> = input.service.iter().cloned().collect();
        self.each_in_cluster(
            "ListServiceDeployments",
            input.cluster.as_deref(),
            &references,
            Self::service,
        )
    }

    /// `ecs:<operation>` on each service-deployment or service-revision
    /// ARN (`kind`) that parses, in its canonical form, with `ecs:cluster`
    /// and `ecs:service`.
    fn on_deployment_arns(&self, operation: &str, kind: &str, arns: &[String]) -> Vec<Requirement> {
        let mut out = Vec::new();
        for text in arns {
            if let Some((cluster, service, id)) =
                services::parse_deployment_arn(self.scope, kind, text)
            {
                out.push(
                    Requirement::new(
                        action(operation),
                        self.scope.arn(&format!("{kind}/{cluster}/{service}/{id}")),
                    )
                    .condition(keys::CLUSTER, cluster_arn(self.scope, &cluster))
                    .condition(
                        "ecs:service",
                        self.scope.arn(&format!("service/{cluster}/{service}")),
                    ),
                );
            }
        }
        if out.is_empty() {
            return anywhere(operation);
        }
        out
    }

    pub fn describe_service_deployments(
        &self,
        input: &DescribeServiceDeploymentsRequest,
    ) -> Vec<Requirement> {
        self.on_deployment_arns(
            "DescribeServiceDeployments",
            "service-deployment",
            input.service_deployment_arns.as_deref().unwrap_or(&[]),
        )
    }

    pub fn describe_service_revisions(
        &self,
        input: &DescribeServiceRevisionsRequest,
    ) -> Vec<Requirement> {
        self.on_deployment_arns(
            "DescribeServiceRevisions",
            "service-revision",
            input.service_revision_arns.as_deref().unwrap_or(&[]),
        )
    }

    pub fn stop_service_deployment(
        &self,
        input: &StopServiceDeploymentRequest,
    ) -> Vec<Requirement> {
        let arns: Vec<String> = input.service_deployment_arn.iter().cloned().collect();
        self.on_deployment_arns("StopServiceDeployment", "service-deployment", &arns)
    }

    pub fn continue_service_deployment(
        &self,
        input: &ContinueServiceDeploymentRequest,
    ) -> Vec<Requirement> {
        let arns: Vec<String> = input.service_deployment_arn.iter().cloned().collect();
        self.on_deployment_arns("ContinueServiceDeployment", "service-deployment", &arns)
    }

    pub fn update_container_agent(
        &self,
        input: &UpdateContainerAgentRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let references: Vec<String> = input.container_instance.iter().cloned().collect();
        self.each_in_cluster(
            "UpdateContainerAgent",
            input.cluster.as_deref(),
            &references,
            Self::instance,
        )
    }

    /// CreateTaskSet, DescribeTaskSets and UpdateServicePrimaryTaskSet: on
    /// the service (with `ecs:cluster`); CreateTaskSet's tags also need
    /// `ecs:TagResource` on the new task set.
    pub fn on_task_sets_service(
        &self,
        operation: &str,
        cluster: Option<&str>,
        service: Option<&str>,
        tags: &[Tag],
    ) -> Result<Vec<Requirement>, AwsError> {
        let references: Vec<String> = service
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .into_iter()
            .collect();
        let mut out = self.each_in_cluster(operation, cluster, &references, Self::service)?;
        if let (Ok(cluster), Some(service)) = (
            clusters::resolve_name(self.scope, cluster),
            references.first(),
        ) {
            if let Ok(name) = services::resolve_service(self.scope, &cluster, service) {
                let resource = crate::state::task_sets::arn(self.scope, &cluster, &name, "*");
                out.extend(self.tag_on_create(operation, resource, tags));
            }
        }
        Ok(out)
    }

    /// UpdateTaskSet and DeleteTaskSet: on the task set's canonical ARN
    /// (`task-set/<cluster>/<service>/<id>`, from an id or an ARN), with its
    /// tags and `ecs:cluster`.
    pub fn on_task_set(
        &self,
        operation: &str,
        cluster: Option<&str>,
        service: Option<&str>,
        task_set: Option<&str>,
    ) -> Result<Vec<Requirement>, AwsError> {
        let Ok(cluster) = clusters::resolve_name(self.scope, cluster) else {
            return Ok(anywhere(operation));
        };
        let (Some(service), Some(set)) = (
            service.filter(|s| !s.is_empty()),
            task_set.filter(|s| !s.is_empty()),
        ) else {
            return Ok(anywhere(operation));
        };
        let Ok(name) = services::resolve_service(self.scope, &cluster, service) else {
            return Ok(anywhere(operation));
        };
        let id = crate::state::task_sets::id_of(set);
        let arn = crate::state::task_sets::arn(self.scope, &cluster, &name, &id);
        let tags: Vec<Tag> =
            load::<ServiceRecord>(self.view, &self.scope.service(&cluster, &name))?
                .and_then(|(record, _)| {
                    record
                        .service
                        .task_sets
                        .unwrap_or_default()
                        .into_iter()
                        .find(|t| t.id.as_deref() == Some(id.as_str()))
                        .and_then(|t| t.tags)
                })
                .unwrap_or_default();
        let requirement = Requirement::new(action(operation), arn)
            .condition(keys::CLUSTER, cluster_arn(self.scope, &cluster));
        Ok(vec![with_resource_tags(requirement, &tags)])
    }

    /// SubmitTaskStateChange, SubmitContainerStateChange and
    /// SubmitAttachmentStateChanges: on the cluster, as the Service
    /// Authorization Reference lists them.
    pub fn submit_state_change(
        &self,
        operation: &str,
        cluster: Option<&str>,
    ) -> Result<Vec<Requirement>, AwsError> {
        self.cluster_operation(operation, cluster, false)
    }

    /// ExecuteCommand: on the task, with `ecs:cluster`, `ecs:task` and
    /// `ecs:container-name`.
    pub fn execute_command(
        &self,
        input: &ExecuteCommandRequest,
    ) -> Result<Vec<Requirement>, AwsError> {
        let references: Vec<String> = input.task.iter().cloned().collect();
        let mut out = self.each_in_cluster(
            "ExecuteCommand",
            input.cluster.as_deref(),
            &references,
            Self::task,
        )?;
        for r in &mut out {
            if r.resource == "*" {
                continue;
            }
            let task = r.resource.clone();
            let mut with = r.clone().condition("ecs:task", task);
            if let Some(container) = input.container.as_deref().filter(|c| !c.is_empty()) {
                with = with.condition("ecs:container-name", container);
            }
            *r = with;
        }
        Ok(out)
    }
}

/// What an operation without a resource type needs: the action on `*`
/// (ListClusters, ListTaskDefinitions, ListTaskDefinitionFamilies,
/// DescribeTaskDefinition, DeregisterTaskDefinition, ListAccountSettings).
pub(crate) fn unscoped(operation: &str) -> Vec<Requirement> {
    anywhere(operation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::authz::keys::{PASSED_TO_SERVICE, REQUEST_TAG_PREFIX, TAG_KEYS};
    use berth_model::shapes::ecs::{ContainerDefinition, Task};
    use berth_store::{SqliteOptions, SqliteStore, StoreExt};

    use crate::state::records::encode;

    const ACCOUNT: &str = "123456789012";
    const REGION: &str = "us-east-1";
    const ID: &str = "0123456789abcdef0123456789abcdef";
    const CALLER: &str = "arn:aws:iam::123456789012:user/alice";

    fn scope() -> Scope {
        Scope {
            account: ACCOUNT.into(),
            region: REGION.into(),
        }
    }

    fn ecs(resource: &str) -> String {
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:{resource}")
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("s.db"))).unwrap();
        (dir, store)
    }

    async fn put(store: &SqliteStore, key: String, value: bytes::Bytes) {
        store
            .update(move |_| {
                Ok::<_, AwsError>((vec![berth_store::Op::put(key.clone(), value.clone())], ()))
            })
            .await
            .unwrap()
            .unwrap();
    }

    fn tag(key: &str, value: &str) -> Tag {
        Tag {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    async fn put_task(store: &SqliteStore, cluster: &str, id: &str, tags: Vec<Tag>) {
        let record = TaskRecord {
            id: id.into(),
            cluster: cluster.into(),
            task: Task {
                task_arn: Some(ecs(&format!("task/{cluster}/{id}"))),
                tags: Some(tags),
                ..Task::default()
            },
            ..TaskRecord::default()
        };
        put(store, scope().task(cluster, id), encode(&record).unwrap()).await;
    }

    async fn put_cluster(store: &SqliteStore, name: &str, tags: Vec<Tag>) {
        let cluster = Cluster {
            cluster_arn: Some(ecs(&format!("cluster/{name}"))),
            cluster_name: Some(name.into()),
            status: Some(clusters::ACTIVE.into()),
            tags: Some(tags),
            ..Cluster::default()
        };
        put(store, scope().cluster(name), encode(&cluster).unwrap()).await;
    }

    async fn register(store: &SqliteStore, family: &str, task_role: Option<&str>) -> String {
        let input = RegisterTaskDefinitionRequest {
            family: Some(family.into()),
            task_role_arn: task_role.map(str::to_string),
            execution_role_arn: Some(format!("arn:aws:iam::{ACCOUNT}:role/exec")),
            container_definitions: Some(vec![ContainerDefinition {
                name: Some("app".into()),
                image: Some("busybox".into()),
                memory: Some(64),
                ..ContainerDefinition::default()
            }]),
            tags: Some(vec![tag("team", "blue")]),
            ..RegisterTaskDefinitionRequest::default()
        };
        crate::api::task_definitions::register(store, &scope(), CALLER, 0.0, input)
            .await
            .unwrap()
            .task_definition
            .unwrap()
            .task_definition_arn
            .unwrap()
    }

    fn resources(requirements: &[Requirement], action: &str) -> Vec<String> {
        requirements
            .iter()
            .filter(|r| r.action == action)
            .map(|r| r.resource.clone())
            .collect()
    }

    fn condition(r: &Requirement, key: &str) -> Vec<String> {
        r.condition_of(key)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    #[test]
    fn every_task_reference_form_names_the_canonical_arn() {
        let s = scope();
        let want = ecs(&format!("task/default/{ID}"));
        for reference in [
            ID.to_string(),
            ecs(&format!("task/{ID}")),
            ecs(&format!("task/default/{ID}")),
        ] {
            assert_eq!(
                task_arn(&s, "default", &reference).unwrap(),
                want,
                "{reference}"
            );
        }
        // Another cluster's ARN, another account and garbage do not resolve.
        assert!(task_arn(&s, "default", &ecs(&format!("task/prod/{ID}"))).is_err());
        let foreign = format!("arn:aws:ecs:{REGION}:999999999999:task/default/{ID}");
        assert!(task_arn(&s, "default", &foreign).is_err());
        assert!(task_arn(&s, "default", "../x").is_err());
    }

    #[test]
    fn every_instance_service_and_cluster_form_names_the_canonical_arn() {
        let s = scope();
        let instance = ecs("container-instance/prod/i-1");
        for reference in [
            "i-1".to_string(),
            ecs("container-instance/i-1"),
            instance.clone(),
        ] {
            assert_eq!(instance_arn(&s, "prod", &reference).unwrap(), instance);
        }
        let service = ecs("service/prod/web");
        for reference in ["web".to_string(), ecs("service/web"), service.clone()] {
            assert_eq!(service_arn(&s, "prod", &reference).unwrap(), service);
        }
        for reference in ["prod".to_string(), ecs("cluster/prod")] {
            let name = clusters::resolve_name(&s, Some(&reference)).unwrap();
            assert_eq!(cluster_arn(&s, &name), ecs("cluster/prod"));
        }
        assert_eq!(
            clusters::resolve_name(&s, None).unwrap(),
            clusters::DEFAULT_CLUSTER
        );
        let role = format!("arn:aws:iam::{ACCOUNT}:role/admin");
        assert_eq!(role_arn(ACCOUNT, "admin"), role);
        assert_eq!(role_arn(ACCOUNT, &role), role);
        assert_eq!(
            role_arn(ACCOUNT, "/ops/admin"),
            format!("arn:aws:iam::{ACCOUNT}:role/ops/admin")
        );
        assert_eq!(
            capacity_provider_arn(&s, "FARGATE"),
            ecs("capacity-provider/FARGATE")
        );
    }

    #[tokio::test]
    async fn old_format_resource_arns_find_their_cluster_in_the_store() {
        let (_dir, store) = store();
        let s = scope();
        put_cluster(&store, "prod", vec![]).await;
        put_task(&store, "prod", ID, vec![]).await;
        assert_eq!(
            resource(&store, &s, &ecs(&format!("task/{ID}"))),
            Some(Resource::Task {
                cluster: "prod".into(),
                id: ID.into()
            })
        );
        assert_eq!(
            resource(&store, &s, &ecs(&format!("task/prod/{ID}"))).map(|r| r.arn(&s)),
            Some(ecs(&format!("task/prod/{ID}")))
        );
        // A resource no cluster holds is looked for in `default`.
        assert_eq!(
            resource(&store, &s, &ecs("task/ffff")).map(|r| r.arn(&s)),
            Some(ecs("task/default/ffff"))
        );
        assert_eq!(
            resource(&store, &s, &ecs("task-definition/web:3")),
            Some(Resource::TaskDefinition("web".into(), 3))
        );
        assert_eq!(
            resource(&store, &s, &ecs("cluster/prod")),
            Some(Resource::Cluster("prod".into()))
        );
        assert_eq!(resource(&store, &s, &ecs("task-definition/web")), None);
        assert_eq!(resource(&store, &s, &ecs("widget/x")), None);
        let foreign = format!("arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/prod");
        assert_eq!(resource(&store, &s, &foreign), None);
    }

    #[tokio::test]
    async fn a_family_names_its_latest_active_revision_and_the_request_is_pinned() {
        let (_dir, store) = store();
        let s = scope();
        register(&store, "web", None).await;
        let second = register(&store, "web", Some("admin")).await;
        assert_eq!(second, ecs("task-definition/web:2"));
        for reference in ["web", "web:2", second.as_str()] {
            let found = task_definition(&store, &s, reference).unwrap().unwrap();
            assert_eq!(found.arn(), second);
            assert!(matches!(found, Definition::Found(_)));
        }
        // No ACTIVE revision: pinned to one that cannot exist.
        let missing = task_definition(&store, &s, "api").unwrap().unwrap();
        assert_eq!(
            missing.pinned(),
            ecs(&format!("task-definition/api:{UNREACHABLE_REVISION}"))
        );
        assert!(task_definition(&store, &s, "web:0").unwrap().is_none());

        let a = Authz::for_caller(&store, &s, CALLER);
        let mut run = RunTaskRequest {
            task_definition: Some("web".into()),
            overrides: Some(TaskOverride {
                execution_role_arn: Some(format!("arn:aws:iam::{ACCOUNT}:role/other")),
                ..TaskOverride::default()
            }),
            ..RunTaskRequest::default()
        };
        let needs = a.run_task(&mut run).unwrap();
        assert_eq!(run.task_definition.as_deref(), Some(second.as_str()));
        assert_eq!(
            resources(&needs, "ecs:RunTask"),
            std::slice::from_ref(&second)
        );
        assert_eq!(
            condition(&needs[0], keys::CLUSTER),
            [ecs("cluster/default")]
        );
        assert_eq!(condition(&needs[0], "aws:ResourceTag/team"), ["blue"]);
        assert_eq!(condition(&needs[0], "ecs:ResourceTag/team"), ["blue"]);
        assert_eq!(
            condition(&needs[0], keys::ENABLE_EXECUTE_COMMAND),
            ["false"]
        );
        assert_eq!(
            resources(&needs, "iam:PassRole"),
            [
                format!("arn:aws:iam::{ACCOUNT}:role/admin"),
                format!("arn:aws:iam::{ACCOUNT}:role/exec"),
                format!("arn:aws:iam::{ACCOUNT}:role/other"),
            ]
        );
        for pass in needs.iter().filter(|r| r.action == "iam:PassRole") {
            assert_eq!(condition(pass, PASSED_TO_SERVICE), [TASKS_SERVICE]);
        }
    }

    #[tokio::test]
    async fn register_needs_pass_role_on_the_role_arns_it_stores() {
        let (_dir, store) = store();
        let s = scope();
        register(&store, "web", None).await;
        let a = Authz::for_caller(&store, &s, CALLER);
        let mut input = RegisterTaskDefinitionRequest {
            family: Some("web".into()),
            task_role_arn: Some("admin".into()),
            container_definitions: Some(vec![ContainerDefinition {
                name: Some("app".into()),
                image: Some("busybox".into()),
                memory: Some(64),
                privileged: Some(true),
                ..ContainerDefinition::default()
            }]),
            requires_compatibilities: Some(vec!["EC2".into()]),
            tags: Some(vec![tag("team", "red")]),
            ..RegisterTaskDefinitionRequest::default()
        };
        let needs = a.register_task_definition(&mut input).unwrap();
        let admin = format!("arn:aws:iam::{ACCOUNT}:role/admin");
        assert_eq!(input.task_role_arn.as_deref(), Some(admin.as_str()));
        let register = &needs[0];
        assert_eq!(register.resource, ecs("task-definition/web:2"));
        assert_eq!(
            condition(register, &format!("{REQUEST_TAG_PREFIX}team")),
            ["red"]
        );
        assert_eq!(condition(register, TAG_KEYS), ["team"]);
        assert_eq!(condition(register, keys::PRIVILEGED), ["true"]);
        assert_eq!(condition(register, keys::COMPUTE_COMPATIBILITY), ["EC2"]);
        // Tags at creation need ecs:TagResource, the role iam:PassRole.
        assert_eq!(
            resources(&needs, "ecs:TagResource"),
            [ecs("task-definition/web:2")]
        );
        assert_eq!(resources(&needs, "iam:PassRole"), [admin]);
    }

    #[tokio::test]
    async fn task_operations_name_tasks_canonically_with_their_tags() {
        let (_dir, store) = store();
        let s = scope();
        put_cluster(&store, "default", vec![tag("env", "prod")]).await;
        put_task(&store, "default", ID, vec![tag("team", "red")]).await;
        let a = Authz::for_caller(&store, &s, CALLER);
        let canonical = ecs(&format!("task/default/{ID}"));
        let describe = DescribeTasksRequest {
            tasks: Some(vec![
                ID.into(),
                ecs(&format!("task/{ID}")),
                canonical.clone(),
                "not a task!".into(),
            ]),
            ..DescribeTasksRequest::default()
        };
        let needs = a.describe_tasks(&describe).unwrap();
        assert_eq!(
            resources(&needs, "ecs:DescribeTasks"),
            vec![canonical.clone(); 3]
        );
        assert_eq!(condition(&needs[0], "aws:ResourceTag/team"), ["red"]);
        let stop = StopTaskRequest {
            cluster: Some(ecs("cluster/default")),
            task: Some(ecs(&format!("task/{ID}"))),
            ..StopTaskRequest::default()
        };
        let needs = a.stop_task(&stop).unwrap();
        assert_eq!(
            resources(&needs, "ecs:StopTask"),
            std::slice::from_ref(&canonical)
        );
        assert_eq!(
            condition(&needs[0], keys::CLUSTER),
            [ecs("cluster/default")]
        );
        // Nothing that resolves: the action on `*` (the handler refuses it).
        let needs = a.stop_task(&StopTaskRequest::default()).unwrap();
        assert_eq!(resources(&needs, "ecs:StopTask"), ["*"]);
        // Cluster operations carry the cluster's tags.
        let needs = a
            .describe_clusters(&DescribeClustersRequest::default())
            .unwrap();
        assert_eq!(
            resources(&needs, "ecs:DescribeClusters"),
            [ecs("cluster/default")]
        );
        assert_eq!(condition(&needs[0], "aws:ResourceTag/env"), ["prod"]);
        // Tagging by an old-format ARN is rewritten to the canonical one.
        let mut untag = UntagResourceRequest {
            resource_arn: Some(ecs(&format!("task/{ID}"))),
            tag_keys: Some(vec!["team".into()]),
        };
        let needs = a.untag_resource(&mut untag).unwrap();
        assert_eq!(untag.resource_arn.as_deref(), Some(canonical.as_str()));
        assert_eq!(resources(&needs, "ecs:UntagResource"), [canonical]);
        assert_eq!(condition(&needs[0], TAG_KEYS), ["team"]);
    }

    #[tokio::test]
    async fn creates_carry_request_tags_and_services_pass_their_roles() {
        let (_dir, store) = store();
        let s = scope();
        register(&store, "web", Some("admin")).await;
        let a = Authz::for_caller(&store, &s, CALLER);
        let needs = a
            .create_cluster(&CreateClusterRequest {
                cluster_name: Some("blue".into()),
                tags: Some(vec![tag("team", "blue")]),
                capacity_providers: Some(vec!["FARGATE".into()]),
                ..CreateClusterRequest::default()
            })
            .unwrap();
        assert_eq!(
            resources(&needs, "ecs:CreateCluster"),
            [ecs("cluster/blue")]
        );
        assert_eq!(condition(&needs[0], "aws:RequestTag/team"), ["blue"]);
        assert_eq!(
            condition(&needs[0], keys::CAPACITY_PROVIDER),
            [ecs("capacity-provider/FARGATE")]
        );
        assert_eq!(condition(&needs[1], keys::CREATE_ACTION), ["CreateCluster"]);
        let mut create = CreateServiceRequest {
            cluster: Some("prod".into()),
            service_name: Some("api".into()),
            task_definition: Some("web".into()),
            role: Some("lb-role".into()),
            enable_execute_command: Some(true),
            ..CreateServiceRequest::default()
        };
        let needs = a.create_service(&mut create).unwrap();
        assert_eq!(
            create.task_definition.as_deref(),
            Some(ecs("task-definition/web:1").as_str())
        );
        assert_eq!(
            resources(&needs, "ecs:CreateService"),
            [ecs("service/prod/api")]
        );
        assert_eq!(
            condition(&needs[0], keys::TASK_DEFINITION),
            [ecs("task-definition/web:1")]
        );
        assert_eq!(condition(&needs[0], keys::ENABLE_EXECUTE_COMMAND), ["true"]);
        let passes: Vec<(String, Vec<String>)> = needs
            .iter()
            .filter(|r| r.action == "iam:PassRole")
            .map(|r| (r.resource.clone(), condition(r, PASSED_TO_SERVICE)))
            .collect();
        assert_eq!(
            passes,
            [
                (
                    format!("arn:aws:iam::{ACCOUNT}:role/admin"),
                    vec![TASKS_SERVICE.to_string()]
                ),
                (
                    format!("arn:aws:iam::{ACCOUNT}:role/exec"),
                    vec![TASKS_SERVICE.to_string()]
                ),
                (
                    format!("arn:aws:iam::{ACCOUNT}:role/lb-role"),
                    vec![ECS_SERVICE.to_string()]
                ),
            ]
        );
        // With tagResourceAuthorization off, tags at creation need no
        // ecs:TagResource.
        crate::api::account_settings::put(
            &store,
            &s,
            CALLER,
            berth_model::shapes::ecs::PutAccountSettingRequest {
                name: Some("tagResourceAuthorization".into()),
                value: Some("off".into()),
                principal_arn: None,
            },
        )
        .await
        .unwrap();
        let needs = a
            .create_cluster(&CreateClusterRequest {
                cluster_name: Some("blue".into()),
                tags: Some(vec![tag("team", "blue")]),
                ..CreateClusterRequest::default()
            })
            .unwrap();
        assert!(resources(&needs, "ecs:TagResource").is_empty());
    }
}
