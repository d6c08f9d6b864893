//! Container instances: RegisterContainerInstance, DeregisterContainerInstance,
//! DescribeContainerInstances, ListContainerInstances,
//! UpdateContainerInstancesState and the attribute operations.
//!
//! The stored record holds what was registered; the live figures ECS shows
//! (remaining resources, task counts, agentConnected) are computed when an
//! instance is presented, from the tasks placed on it and the agents' presence.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_model::shapes::ecs::{
    Attribute, ContainerInstance, DeleteAttributesRequest, DeleteAttributesResponse,
    DeregisterContainerInstanceRequest, DeregisterContainerInstanceResponse,
    DescribeContainerInstancesRequest, DescribeContainerInstancesResponse, Failure,
    ListAttributesRequest, ListAttributesResponse, ListContainerInstancesRequest,
    ListContainerInstancesResponse, PutAttributesRequest, PutAttributesResponse,
    RegisterContainerInstanceRequest, RegisterContainerInstanceResponse, Resource, Tag,
    UpdateContainerInstancesStateRequest, UpdateContainerInstancesStateResponse, VersionInfo,
};
use berth_model::{Arn, AwsError};
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::clusters::{self, resolve_name};
use crate::keys::Scope;
use crate::records::{decode, encode, load, now};
use crate::tasks::{self, Usage};
use crate::{error, pagination, tagging};

pub const ACTIVE: &str = "ACTIVE";
pub const DRAINING: &str = "DRAINING";
pub const INACTIVE: &str = "INACTIVE";

/// Ports ECS reserves on every instance unless told otherwise.
pub const DEFAULT_RESERVED_PORTS: &[&str] = &["22", "2375", "2376", "51678", "51679"];

/// A registered container instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: String,
    pub cluster: String,
    pub instance: ContainerInstance,
    /// The access key id of the agent credential currently bound to it.
    #[serde(default)]
    pub agent_access_key_id: Option<String>,
}

impl InstanceRecord {
    pub fn arn(&self) -> &str {
        self.instance
            .container_instance_arn
            .as_deref()
            .unwrap_or("")
    }

    pub fn status(&self) -> &str {
        self.instance.status.as_deref().unwrap_or(ACTIVE)
    }

    pub fn registered_integer(&self, name: &str) -> i64 {
        resource(&self.instance.registered_resources, name)
            .and_then(|r| r.integer_value)
            .map(i64::from)
            .unwrap_or(0)
    }

    pub fn reserved_ports(&self, name: &str) -> Vec<u16> {
        resource(&self.instance.registered_resources, name)
            .and_then(|r| r.string_set_value.as_ref())
            .map(|set| set.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    pub fn attributes(&self) -> &[Attribute] {
        self.instance.attributes.as_deref().unwrap_or(&[])
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes()
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// Whether the host's agent offers Fargate capacity.
    pub fn offers_fargate(&self) -> bool {
        matches!(
            self.attribute(FARGATE_CAPACITY_ATTRIBUTE),
            Some(FARGATE_SHARED | FARGATE_DEDICATED)
        )
    }

    /// Whether the host is a container instance of its cluster (EC2 launch
    /// type); hosts dedicated to Fargate are invisible to the ECS API.
    pub fn offers_ec2(&self) -> bool {
        self.attribute(FARGATE_CAPACITY_ATTRIBUTE) != Some(FARGATE_DEDICATED)
    }
}

/// The attribute a `berth agent` registers to offer Fargate capacity:
/// [`FARGATE_SHARED`] (also a container instance of its cluster, as `berth
/// up`'s agent) or [`FARGATE_DEDICATED`] (`berth agent --capacity fargate`).
pub const FARGATE_CAPACITY_ATTRIBUTE: &str = "berth.capacity.fargate";
pub const FARGATE_SHARED: &str = "shared";
pub const FARGATE_DEDICATED: &str = "dedicated";

fn resource<'a>(resources: &'a Option<Vec<Resource>>, name: &str) -> Option<&'a Resource> {
    resources
        .as_ref()?
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
}

/// When each agent last talked to this server. In-memory on purpose: presence
/// is a liveness signal, and writing every heartbeat to the store would cost
/// a durable write per agent per poll for nothing a crash needs to keep.
pub struct Presence {
    seen: Mutex<HashMap<String, Instant>>,
    timeout: Duration,
}

/// An agent that has not polled for this long is shown disconnected (its
/// long polls last 20 s, and it retries within seconds).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(45);

impl Default for Presence {
    fn default() -> Self {
        Presence::with_timeout(AGENT_TIMEOUT)
    }
}

impl Presence {
    pub fn with_timeout(timeout: Duration) -> Self {
        Presence {
            seen: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    pub fn touch(&self, instance_arn: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(instance_arn.to_string(), Instant::now());
    }

    pub fn connected(&self, instance_arn: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(instance_arn)
            .is_some_and(|at| at.elapsed() < self.timeout)
    }

    pub fn forget(&self, instance_arn: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(instance_arn);
    }
}

/// Turns a container-instance reference (id or ARN) into its id.
pub fn resolve_id(scope: &Scope, cluster: &str, reference: &str) -> Result<String, AwsError> {
    if reference.starts_with("arn:") {
        let arn = Arn::parse(reference)
            .filter(|a| a.service == "ecs" && a.resource_type() == "container-instance")
            .ok_or_else(|| {
                error::invalid_parameter(format!("Invalid container instance ARN: {reference}"))
            })?;
        if arn.account != scope.account || arn.region != scope.region {
            return Err(error::invalid_parameter(format!(
                "The container instance {reference} is not in this account and region."
            )));
        }
        // Both `container-instance/<id>` and `container-instance/<cluster>/<id>` exist.
        let id = arn.resource_id();
        let (arn_cluster, id) = match id.rsplit_once('/') {
            Some((c, i)) => (Some(c), i),
            None => (None, id),
        };
        if arn_cluster.is_some_and(|c| c != cluster) {
            return Err(error::invalid_parameter(format!(
                "The container instance {reference} does not belong to cluster {cluster}."
            )));
        }
        check_id(id)?;
        return Ok(id.to_string());
    }
    check_id(reference)?;
    Ok(reference.to_string())
}

fn check_id(id: &str) -> Result<(), AwsError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(error::invalid_parameter(format!(
            "Invalid container instance id: '{id}'."
        )));
    }
    Ok(())
}

fn check_resources(resources: &[Resource]) -> Result<(), AwsError> {
    for r in resources {
        let name = r.name.as_deref().unwrap_or("");
        match name {
            "CPU" | "MEMORY" if r.integer_value.is_none_or(|v| v < 0) => {
                return Err(error::invalid_parameter(format!(
                    "Resource {name} needs a non-negative integerValue."
                )));
            }
            "PORTS" | "PORTS_UDP" => {
                for p in r.string_set_value.as_deref().unwrap_or(&[]) {
                    if p.parse::<u16>().map_or(true, |n| n == 0) {
                        return Err(error::invalid_parameter(format!(
                            "Resource {name} lists '{p}', which is not a port number."
                        )));
                    }
                }
            }
            "" => return Err(error::missing("totalResources.name")),
            _ => {}
        }
    }
    Ok(())
}

/// Attribute names: up to 128 letters, numbers, hyphens, underscores, periods,
/// at signs and forward slashes; values up to 128 characters.
pub fn check_attribute(a: &Attribute) -> Result<(), AwsError> {
    let name = a.name.as_deref().unwrap_or("");
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@".contains(&b));
    if !ok {
        return Err(error::invalid_parameter(format!(
            "Attribute name '{name}' is invalid. Up to 128 letters, numbers, hyphens, underscores, periods, at signs (@) and forward slashes are allowed."
        )));
    }
    if let Some(value) = &a.value {
        let ok = !value.is_empty()
            && value.len() <= 128
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./@:() ".contains(c));
        if !ok {
            return Err(error::invalid_parameter(format!(
                "Attribute value '{value}' for '{name}' is invalid. Up to 128 letters, numbers, hyphens, underscores, periods, at signs, forward slashes, colons, parentheses and spaces are allowed."
            )));
        }
    }
    Ok(())
}

/// What a registration asks for; shared by the public API and the agent protocol.
pub struct Registration {
    pub cluster: String,
    /// The host's stable name (`ec2InstanceId`); `None` makes one up.
    pub name: Option<String>,
    pub total_resources: Vec<Resource>,
    pub attributes: Vec<Attribute>,
    pub version_info: Option<VersionInfo>,
    pub tags: Vec<Tag>,
}

fn with_defaults(mut resources: Vec<Resource>) -> Vec<Resource> {
    let mut add = |name: &str, resource: Resource| {
        if !resources.iter().any(|r| r.name.as_deref() == Some(name)) {
            resources.push(resource);
        }
    };
    let integer = |name: &str| Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(0),
        double_value: Some(0.0),
        long_value: Some(0),
        ..Resource::default()
    };
    add("CPU", integer("CPU"));
    add("MEMORY", integer("MEMORY"));
    let set = |name: &str, values: &[&str]| Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        string_set_value: Some(values.iter().map(|v| v.to_string()).collect()),
        double_value: Some(0.0),
        long_value: Some(0),
        integer_value: Some(0),
    };
    add("PORTS", set("PORTS", DEFAULT_RESERVED_PORTS));
    add("PORTS_UDP", set("PORTS_UDP", &[]));
    for r in &mut resources {
        if r.r#type.is_none() {
            r.r#type = Some(
                if r.string_set_value.is_some() {
                    "STRINGSET"
                } else {
                    "INTEGER"
                }
                .into(),
            );
        }
        r.double_value.get_or_insert(0.0);
        r.long_value.get_or_insert(0);
        r.integer_value.get_or_insert(0);
    }
    resources
}

fn merge_attributes(base: &mut Vec<Attribute>, extra: &[Attribute]) {
    for a in extra {
        let stripped = Attribute {
            name: a.name.clone(),
            value: a.value.clone(),
            target_type: None,
            target_id: None,
        };
        match base.iter_mut().find(|b| b.name == a.name) {
            Some(existing) => *existing = stripped,
            None => base.push(stripped),
        }
    }
}

/// Validates a registration before it touches state.
pub fn check_registration(r: &Registration) -> Result<(), AwsError> {
    clusters::check_name(&r.cluster)?;
    if let Some(name) = &r.name {
        let ok = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(error::invalid_parameter(format!(
                "Invalid instance name '{name}': up to 255 letters, numbers, hyphens, underscores and periods."
            )));
        }
    }
    check_resources(&r.total_resources)?;
    if r.attributes.len() > 128 {
        return Err(error::invalid_parameter(
            "A container instance can have at most 128 attributes.",
        ));
    }
    for a in &r.attributes {
        check_attribute(a)?;
    }
    tagging::check_new(&r.tags, std::iter::empty())?;
    Ok(())
}

/// Registers (or re-registers, by name) a container instance inside a
/// mutation. The `default` cluster is created on demand, as ECS does.
pub fn register_in(
    view: &dyn ReadView,
    scope: &Scope,
    r: &Registration,
) -> Result<(Vec<Op>, InstanceRecord), AwsError> {
    let mut ops = Vec::new();
    if let Some(op) = clusters::create_default_on_demand(view, scope, &r.cluster)? {
        ops.push(op);
    } else {
        clusters::require_active(view, scope, &r.cluster)?;
    }
    let existing = match &r.name {
        Some(name) => match view.get(&scope.instance_name(&r.cluster, name)) {
            Some(kv) => {
                let id = String::from_utf8_lossy(&kv.value).to_string();
                load::<InstanceRecord>(view, &scope.instance(&r.cluster, &id))?.map(|(rec, _)| rec)
            }
            None => None,
        },
        None => None,
    };
    let id = existing
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17]));
    let mut attributes = vec![Attribute {
        name: Some("ecs.os-type".into()),
        value: Some("linux".into()),
        target_type: None,
        target_id: None,
    }];
    if let Some(e) = &existing {
        // Attributes put through PutAttributes survive a re-registration.
        merge_attributes(&mut attributes, e.attributes());
    }
    merge_attributes(&mut attributes, &r.attributes);
    let version = existing
        .as_ref()
        .and_then(|e| e.instance.version)
        .unwrap_or(0)
        + 1;
    let instance = ContainerInstance {
        container_instance_arn: Some(scope.arn(&format!("container-instance/{}/{id}", r.cluster))),
        ec2_instance_id: Some(name.clone()),
        version: Some(version),
        version_info: Some(r.version_info.clone().unwrap_or_default()),
        registered_resources: Some(with_defaults(r.total_resources.clone())),
        status: Some(ACTIVE.into()),
        agent_connected: Some(false),
        agent_update_status: None,
        attributes: Some(attributes),
        registered_at: Some(
            existing
                .as_ref()
                .and_then(|e| e.instance.registered_at)
                .unwrap_or_else(now),
        ),
        tags: Some(if r.tags.is_empty() {
            existing
                .as_ref()
                .and_then(|e| e.instance.tags.clone())
                .unwrap_or_default()
        } else {
            r.tags.clone()
        }),
        attachments: Some(Vec::new()),
        ..ContainerInstance::default()
    };
    let record = InstanceRecord {
        id: id.clone(),
        cluster: r.cluster.clone(),
        instance,
        agent_access_key_id: existing.and_then(|e| e.agent_access_key_id),
    };
    ops.push(Op::put(scope.instance(&r.cluster, &id), encode(&record)?));
    ops.push(Op::put(
        scope.instance_name(&r.cluster, &name),
        bytes::Bytes::from(id.into_bytes()),
    ));
    Ok((ops, record))
}

/// Which optional parts DescribeContainerInstances returns.
#[derive(Clone, Copy, Default)]
pub struct Include {
    pub tags: bool,
}

impl Include {
    pub fn parse(fields: &[String]) -> Result<Include, AwsError> {
        let mut include = Include::default();
        for f in fields {
            match f.as_str() {
                "TAGS" => include.tags = true,
                "CONTAINER_INSTANCE_HEALTH" => {}
                other => {
                    return Err(error::invalid_parameter(format!(
                        "Invalid include value '{other}'. Valid values: TAGS, CONTAINER_INSTANCE_HEALTH."
                    )))
                }
            }
        }
        Ok(include)
    }
}

/// The instance as the API shows it, with live figures.
pub fn present(
    record: &InstanceRecord,
    usage: &Usage,
    presence: &Presence,
    include: Include,
) -> ContainerInstance {
    let mut instance = record.instance.clone();
    let registered = instance.registered_resources.clone().unwrap_or_default();
    let remaining = registered
        .iter()
        .map(|r| {
            let mut r = r.clone();
            match r.name.as_deref() {
                Some("CPU") => {
                    let v = r.integer_value.unwrap_or(0) as i64 - usage.cpu;
                    r.integer_value = Some(v.max(0) as i32);
                }
                Some("MEMORY") => {
                    let v = r.integer_value.unwrap_or(0) as i64 - usage.memory;
                    r.integer_value = Some(v.max(0) as i32);
                }
                Some("PORTS") => {
                    let set = r.string_set_value.get_or_insert_with(Vec::new);
                    set.extend(usage.ports_tcp.iter().map(|p| p.to_string()));
                }
                Some("PORTS_UDP") => {
                    let set = r.string_set_value.get_or_insert_with(Vec::new);
                    set.extend(usage.ports_udp.iter().map(|p| p.to_string()));
                }
                Some(custom) => {
                    if let Some(used) = usage.custom.get(custom) {
                        let v = i64::from(r.integer_value.unwrap_or(0)) - used;
                        r.integer_value = Some(v.max(0) as i32);
                    }
                }
                None => {}
            }
            r
        })
        .collect();
    instance.remaining_resources = Some(remaining);
    instance.running_tasks_count = Some(usage.running as i32);
    instance.pending_tasks_count = Some(usage.pending as i32);
    instance.agent_connected =
        Some(record.status() != INACTIVE && presence.connected(record.arn()));
    if !include.tags {
        instance.tags = None;
    }
    instance
}

fn missing_instance(scope: &Scope, cluster: &str, reference: &str) -> Failure {
    error::missing_failure(scope, reference.to_string(), |id| {
        format!("container-instance/{cluster}/{id}")
    })
}

fn references(list: Option<Vec<String>>, member: &str) -> Result<Vec<String>, AwsError> {
    let list = list
        .filter(|l| !l.is_empty())
        .ok_or_else(|| error::missing(member))?;
    if list.len() > 100 {
        return Err(error::invalid_parameter(format!(
            "{member} can name at most 100 container instances."
        )));
    }
    Ok(list)
}

pub async fn register(
    store: &dyn Store,
    scope: &Scope,
    presence: &Presence,
    input: RegisterContainerInstanceRequest,
) -> Result<RegisterContainerInstanceResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let name = match input.container_instance_arn.as_deref() {
        // Re-registering an existing instance by ARN keeps its identity.
        Some(arn) if !arn.is_empty() => {
            let id = resolve_id(scope, &cluster, arn)?;
            let (record, _) = load::<InstanceRecord>(store, &scope.instance(&cluster, &id))?
                .ok_or_else(|| {
                    error::invalid_parameter(format!("Container instance {arn} not found."))
                })?;
            record.instance.ec2_instance_id
        }
        _ => None,
    };
    let registration = Registration {
        cluster,
        name,
        total_resources: input.total_resources.unwrap_or_default(),
        attributes: input.attributes.unwrap_or_default(),
        version_info: input.version_info,
        tags: input.tags.unwrap_or_default(),
    };
    check_registration(&registration)?;
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| register_in(view, &scope_owned, &registration))
        .await
        .map_err(error::store)??;
    Ok(RegisterContainerInstanceResponse {
        container_instance: Some(present(
            &record,
            &Usage::default(),
            presence,
            Include { tags: true },
        )),
    })
}

pub async fn deregister(
    store: &dyn Store,
    scope: &Scope,
    presence: &Presence,
    input: DeregisterContainerInstanceRequest,
) -> Result<DeregisterContainerInstanceResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .container_instance
        .filter(|c| !c.is_empty())
        .ok_or_else(|| error::missing("containerInstance"))?;
    let id = resolve_id(scope, &cluster, &reference)?;
    let force = input.force.unwrap_or(false);
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            clusters::require_active(view, &scope_owned, &cluster)?;
            let key = scope_owned.instance(&cluster, &id);
            let (mut record, _) = load::<InstanceRecord>(view, &key)?
                .filter(|(r, _)| r.status() != INACTIVE)
                .ok_or_else(|| {
                    error::invalid_parameter(format!(
                        "The referenced container instance {reference} is not registered to cluster {cluster}."
                    ))
                })?;
            let usage = tasks::usage_of_instance(view, &scope_owned, &cluster, &id)?;
            if usage.running + usage.pending > 0 && !force {
                return Err(error::invalid_parameter(format!(
                    "The container instance has {} tasks that are not stopped. Stop them first or deregister with force.",
                    usage.running + usage.pending
                )));
            }
            record.instance.status = Some(INACTIVE.into());
            record.instance.version = Some(record.instance.version.unwrap_or(0) + 1);
            let mut ops = vec![Op::put(key, encode(&record)?)];
            if let Some(name) = &record.instance.ec2_instance_id {
                ops.push(Op::delete(scope_owned.instance_name(&cluster, name)));
            }
            Ok::<_, AwsError>((ops, record))
        })
        .await
        .map_err(error::store)??;
    presence.forget(record.arn());
    Ok(DeregisterContainerInstanceResponse {
        container_instance: Some(present(
            &record,
            &Usage::default(),
            presence,
            Include { tags: true },
        )),
    })
}

pub fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    presence: &Presence,
    input: DescribeContainerInstancesRequest,
) -> Result<DescribeContainerInstancesResponse, AwsError> {
    let include = Include::parse(&input.include.unwrap_or_default())?;
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let refs = references(input.container_instances, "containerInstances")?;
    clusters::require_active(view, scope, &cluster)?;
    let usage = tasks::usage_by_instance(view, scope, &cluster)?;
    let mut instances = Vec::new();
    let mut failures = Vec::new();
    for reference in refs {
        let found = match resolve_id(scope, &cluster, &reference) {
            Ok(id) => load::<InstanceRecord>(view, &scope.instance(&cluster, &id))?
                .filter(|(r, _)| r.offers_ec2()),
            Err(_) => None,
        };
        match found {
            Some((record, _)) => {
                let u = usage.get(&record.id).cloned().unwrap_or_default();
                instances.push(present(&record, &u, presence, include));
            }
            None => failures.push(missing_instance(scope, &cluster, &reference)),
        }
    }
    Ok(DescribeContainerInstancesResponse {
        container_instances: Some(instances),
        failures: Some(failures),
    })
}

pub fn list(
    view: &dyn ReadView,
    scope: &Scope,
    presence: &Presence,
    input: ListContainerInstancesRequest,
) -> Result<ListContainerInstancesResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let status = match input.status.as_deref() {
        None => None,
        Some(s @ (ACTIVE | DRAINING | INACTIVE | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED")) => {
            Some(s.to_string())
        }
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid status '{other}'. Valid values: ACTIVE, DRAINING, REGISTERING, DEREGISTERING, REGISTRATION_FAILED."
            )))
        }
    };
    // The cluster query language, as placement constraints use it.
    let filter = match input.filter.as_deref() {
        Some(f) if !f.trim().is_empty() => Some(
            berth_scheduler::parse_expression(f)
                .map_err(|e| error::invalid_parameter(format!("Invalid filter expression: {e}")))?,
        ),
        _ => None,
    };
    clusters::require_active(view, scope, &cluster)?;
    let usage = match filter {
        Some(_) => tasks::usage_by_instance(view, scope, &cluster)?,
        None => HashMap::new(),
    };
    let (arns, next_token) = pagination::filtered_page(
        view,
        &scope.instances(&cluster),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: InstanceRecord = decode(kv)?;
            let wanted = record.offers_ec2()
                && match &status {
                    Some(s) => record.status() == s,
                    None => record.status() != INACTIVE,
                };
            let matches = filter.as_ref().is_none_or(|f| {
                let u = usage.get(&record.id).cloned().unwrap_or_default();
                f.matches(&tasks::snapshot(&record, &u, presence))
            });
            Ok((wanted && matches).then(|| record.arn().to_string()))
        },
    )?;
    Ok(ListContainerInstancesResponse {
        container_instance_arns: Some(arns),
        next_token,
    })
}

pub async fn update_state(
    store: &dyn Store,
    scope: &Scope,
    presence: &Presence,
    input: UpdateContainerInstancesStateRequest,
) -> Result<UpdateContainerInstancesStateResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let refs = references(input.container_instances, "containerInstances")?;
    let status = match input.status.as_deref() {
        Some(s @ (ACTIVE | DRAINING)) => s.to_string(),
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid status '{other}'. Valid values: ACTIVE, DRAINING."
            )))
        }
        None => return Err(error::missing("status")),
    };
    let scope_owned = scope.clone();
    let (_, (records, failures, usage)) = store
        .update(move |view| {
            clusters::require_active(view, &scope_owned, &cluster)?;
            let mut ops = Vec::new();
            let mut records = Vec::new();
            let mut failures = Vec::new();
            for reference in &refs {
                let found = match resolve_id(&scope_owned, &cluster, reference) {
                    Ok(id) => load::<InstanceRecord>(view, &scope_owned.instance(&cluster, &id))?,
                    Err(_) => None,
                };
                match found {
                    Some((mut record, _)) if record.status() != INACTIVE => {
                        if record.status() != status {
                            record.instance.status = Some(status.clone());
                            record.instance.version =
                                Some(record.instance.version.unwrap_or(0) + 1);
                            ops.push(Op::put(
                                scope_owned.instance(&cluster, &record.id),
                                encode(&record)?,
                            ));
                        }
                        records.push(record);
                    }
                    _ => failures.push(missing_instance(&scope_owned, &cluster, reference)),
                }
            }
            let usage = tasks::usage_by_instance(view, &scope_owned, &cluster)?;
            Ok::<_, AwsError>((ops, (records, failures, usage)))
        })
        .await
        .map_err(error::store)??;
    let instances = records
        .iter()
        .map(|r| {
            let u = usage.get(&r.id).cloned().unwrap_or_default();
            present(r, &u, presence, Include::default())
        })
        .collect();
    Ok(UpdateContainerInstancesStateResponse {
        container_instances: Some(instances),
        failures: Some(failures),
    })
}

/// An attribute's target, resolved to a stored instance.
fn attribute_target(scope: &Scope, cluster: &str, a: &Attribute) -> Result<String, AwsError> {
    match a.target_type.as_deref() {
        None | Some("container-instance") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid targetType '{other}'. Valid values: container-instance."
            )))
        }
    }
    let target = a
        .target_id
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("attributes.targetId"))?;
    resolve_id(scope, cluster, target)
}

async fn change_attributes(
    store: &dyn Store,
    scope: &Scope,
    cluster_ref: Option<&str>,
    attributes: Option<Vec<Attribute>>,
    put: bool,
) -> Result<Vec<Attribute>, AwsError> {
    let cluster = resolve_name(scope, cluster_ref)?;
    let attributes = attributes
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing("attributes"))?;
    if attributes.len() > 10 {
        return Err(error::invalid_parameter(
            "At most 10 attributes can be changed per call.",
        ));
    }
    let mut targets = Vec::new();
    for a in &attributes {
        check_attribute(a)?;
        targets.push(attribute_target(scope, &cluster, a)?);
    }
    let scope_owned = scope.clone();
    let echo = attributes.clone();
    store
        .update(move |view| {
            clusters::require_active(view, &scope_owned, &cluster)?;
            let mut changed: BTreeMap<String, InstanceRecord> = BTreeMap::new();
            for (a, id) in attributes.iter().zip(&targets) {
                let record = match changed.remove(id) {
                    Some(r) => r,
                    None => load::<InstanceRecord>(view, &scope_owned.instance(&cluster, id))?
                        .filter(|(r, _)| r.status() != INACTIVE)
                        .map(|(r, _)| r)
                        .ok_or_else(|| {
                            AwsError::bad_request(
                                "TargetNotFoundException",
                                format!(
                                    "Could not find {}. Verify the targetId and try again.",
                                    a.target_id.as_deref().unwrap_or("")
                                ),
                            )
                        })?,
                };
                let mut record = record;
                let list = record.instance.attributes.get_or_insert_with(Vec::new);
                if put {
                    merge_attributes(list, std::slice::from_ref(a));
                    if list.len() > 128 {
                        return Err(AwsError::bad_request(
                            "AttributeLimitExceededException",
                            "A container instance can have at most 128 attributes.",
                        ));
                    }
                } else {
                    list.retain(|x| x.name != a.name);
                }
                changed.insert(id.clone(), record);
            }
            let mut ops = Vec::new();
            for (id, record) in changed {
                ops.push(Op::put(
                    scope_owned.instance(&cluster, &id),
                    encode(&record)?,
                ));
            }
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(echo)
}

pub async fn put_attributes(
    store: &dyn Store,
    scope: &Scope,
    input: PutAttributesRequest,
) -> Result<PutAttributesResponse, AwsError> {
    let attributes = change_attributes(
        store,
        scope,
        input.cluster.as_deref(),
        input.attributes,
        true,
    )
    .await?;
    Ok(PutAttributesResponse {
        attributes: Some(attributes),
    })
}

pub async fn delete_attributes(
    store: &dyn Store,
    scope: &Scope,
    input: DeleteAttributesRequest,
) -> Result<DeleteAttributesResponse, AwsError> {
    let attributes = change_attributes(
        store,
        scope,
        input.cluster.as_deref(),
        input.attributes,
        false,
    )
    .await?;
    Ok(DeleteAttributesResponse {
        attributes: Some(attributes),
    })
}

pub fn list_attributes(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListAttributesRequest,
) -> Result<ListAttributesResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    match input.target_type.as_deref() {
        Some("container-instance") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid targetType '{other}'. Valid values: container-instance."
            )))
        }
        None => return Err(error::missing("targetType")),
    }
    if input.attribute_value.is_some() && input.attribute_name.is_none() {
        return Err(error::invalid_parameter(
            "attributeValue can only be given together with attributeName.",
        ));
    }
    let limit = pagination::page_size(input.max_results, 100)?;
    clusters::require_active(view, scope, &cluster)?;
    // Tokens name the last instance whose attributes were listed completely;
    // pages are whole instances, so a page may exceed the limit slightly less
    // often than it stops short of it.
    let (pages, next_token) = pagination::filtered_page(
        view,
        &scope.instances(&cluster),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: InstanceRecord = decode(kv)?;
            if record.status() == INACTIVE {
                return Ok(None);
            }
            let found: Vec<Attribute> = record
                .attributes()
                .iter()
                .filter(|a| {
                    input
                        .attribute_name
                        .as_ref()
                        .is_none_or(|n| a.name.as_ref() == Some(n))
                })
                .filter(|a| {
                    input
                        .attribute_value
                        .as_ref()
                        .is_none_or(|v| a.value.as_ref() == Some(v))
                })
                .map(|a| Attribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                    target_type: Some("container-instance".into()),
                    target_id: Some(record.arn().to_string()),
                })
                .collect();
            Ok((!found.is_empty()).then_some(found))
        },
    )?;
    Ok(ListAttributesResponse {
        attributes: Some(pages.into_iter().flatten().collect()),
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_expires_and_is_forgotten() {
        let presence = Presence::with_timeout(Duration::from_millis(50));
        assert!(!presence.connected("a"));
        presence.touch("a");
        assert!(presence.connected("a"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !presence.connected("a"),
            "an agent that stopped polling shows disconnected"
        );
        presence.touch("a");
        presence.forget("a");
        assert!(!presence.connected("a"));
    }
}
