//! Container instance records: what was registered, the registration logic
//! the API and the agent protocol share, references, and the agents'
//! in-memory presence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_model::shapes::ecs::{Attribute, ContainerInstance, Resource, Tag, VersionInfo};
use berth_model::{Arn, AwsError};
use berth_store::{Op, ReadView};
use berth_util::ids;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::clock::{self, Clock};
use crate::state::keys::Scope;
use crate::state::records::{encode, load};
use crate::state::{clusters, tags};

pub(crate) const ACTIVE: &str = "ACTIVE";

pub(crate) const DRAINING: &str = "DRAINING";

pub(crate) const INACTIVE: &str = "INACTIVE";

/// Ports ECS reserves on every instance unless told otherwise.
pub(crate) const DEFAULT_RESERVED_PORTS: &[&str] = &["22", "2375", "2376", "51678", "51679"];

/// A registered container instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceRecord {
    pub id: String,
    pub cluster: String,
    pub instance: ContainerInstance,
    /// The access key id of the agent credential currently bound to it.
    #[serde(default)]
    pub agent_access_key_id: Option<String>,
    /// Its attributes as placement reads them, made once per decoded record.
    #[serde(skip)]
    pub placement_attributes: std::sync::OnceLock<PlacementAttributes>,
}

/// Attribute names and values, as the scheduler matches them.
pub(crate) type PlacementAttributes =
    std::sync::Arc<std::collections::BTreeMap<String, Option<String>>>;

/// The host address (`berth.host-ipv4`, which agents report) of the
/// container instance whose `ec2InstanceId` is `ec2_instance_id`, in any
/// cluster of the account and region: where an ELB `instance` target with
/// that id is reached.
pub fn instance_host_ipv4(
    view: &(impl ReadView + ?Sized),
    account: &str,
    region: &str,
    ec2_instance_id: &str,
) -> Option<std::net::Ipv4Addr> {
    let prefix = Scope {
        account: account.to_string(),
        region: region.to_string(),
    }
    .all_instances();
    let mut after: Option<String> = None;
    loop {
        let page = view.range(&prefix, after.as_deref(), 256);
        let last = page.last()?.key.clone();
        for kv in &page {
            let Ok(record) = crate::state::records::decode::<InstanceRecord>(kv) else {
                continue;
            };
            if record.instance.ec2_instance_id.as_deref() == Some(ec2_instance_id)
                && record.instance.status.as_deref() == Some(ACTIVE)
            {
                return record
                    .attributes()
                    .iter()
                    .find(|a| {
                        a.name.as_deref() == Some(crate::state::registry::HOST_IPV4_ATTRIBUTE)
                    })
                    .and_then(|a| a.value.as_deref()?.parse().ok());
            }
        }
        after = Some(last);
    }
}

impl InstanceRecord {
    /// The attributes as placement reads them (computed once per record).
    pub fn placement_attributes(&self) -> PlacementAttributes {
        self.placement_attributes
            .get_or_init(|| {
                std::sync::Arc::new(
                    self.attributes()
                        .iter()
                        .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
                        .collect(),
                )
            })
            .clone()
    }

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

/// Presence shared between servers (several `berth server`s over etcd):
/// which agents are connected to *some* server. The binary implements it on
/// etcd keys bound to each server's lease, so a dead server's agents count
/// as gone once its lease runs out.
pub trait SharedPresence: Send + Sync + 'static {
    /// This server now serves the agent of `instance_arn`.
    fn mark(&self, instance_arn: &str);
    /// This server no longer hears from it.
    fn unmark(&self, instance_arn: &str);
    /// Whether any server serves it.
    fn connected(&self, instance_arn: &str) -> bool;
    /// Whether the shared entry names this server (an agent that left and
    /// came back must be published again once another server held it).
    fn held_here(&self, instance_arn: &str) -> bool;
}

/// When each agent last talked to this server. In-memory on purpose: presence
/// is a liveness signal, and writing every heartbeat to the store would cost
/// a durable write per agent per poll for nothing a crash needs to keep.
/// With several servers, an agent's arrival and departure (not every poll)
/// are also published through a [`SharedPresence`].
pub struct Presence {
    /// When each agent was last heard from (the clock's monotonic reading).
    seen: Mutex<HashMap<String, Duration>>,
    timeout: Duration,
    shared: Option<Arc<dyn SharedPresence>>,
    clock: Arc<dyn Clock>,
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
            shared: None,
            clock: clock::system(),
        }
    }

    /// Reads time from `clock` (tests drive it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long ago `at` (a monotonic reading) was.
    fn since(&self, at: Duration) -> Duration {
        self.clock.monotonic().saturating_sub(at)
    }

    /// Also publishes arrivals and departures to other servers.
    pub fn shared(mut self, shared: Arc<dyn SharedPresence>) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn touch(&self, instance_arn: &str) {
        let now = self.clock.monotonic();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let arrived = seen
            .insert(instance_arn.to_string(), now)
            .is_none_or(|at| now.saturating_sub(at) >= self.timeout);
        drop(seen);
        if let Some(shared) = &self.shared {
            if arrived || !shared.held_here(instance_arn) {
                shared.mark(instance_arn);
            }
        }
    }

    pub fn connected(&self, instance_arn: &str) -> bool {
        let here = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get(instance_arn)
                .is_some_and(|at| self.since(*at) < self.timeout)
        };
        here || self
            .shared
            .as_ref()
            .is_some_and(|shared| shared.connected(instance_arn))
    }

    pub fn forget(&self, instance_arn: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(instance_arn);
        drop(seen);
        if let Some(shared) = &self.shared {
            shared.unmark(instance_arn);
        }
    }

    /// Drops agents silent for longer than the timeout (and tells the other
    /// servers); the binary calls it periodically.
    pub fn sweep(&self) {
        let gone: Vec<String> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<String> = seen
                .iter()
                .filter(|(_, at)| self.since(**at) >= self.timeout)
                .map(|(arn, _)| arn.clone())
                .collect();
            for arn in &gone {
                seen.remove(arn);
            }
            gone
        };
        if let Some(shared) = &self.shared {
            for arn in gone {
                shared.unmark(&arn);
            }
        }
    }
}

/// Turns a container-instance reference (id or ARN) into its id.
pub(crate) fn resolve_id(
    scope: &Scope,
    cluster: &str,
    reference: &str,
) -> Result<String, AwsError> {
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
pub(crate) fn check_attribute(a: &Attribute) -> Result<(), AwsError> {
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
pub(crate) struct Registration {
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

pub(crate) fn merge_attributes(base: &mut Vec<Attribute>, extra: &[Attribute]) {
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
pub(crate) fn check_registration(r: &Registration) -> Result<(), AwsError> {
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
    tags::check_new(&r.tags, std::iter::empty())?;
    Ok(())
}

/// Registers (or re-registers, by name) a container instance inside a
/// mutation. The `default` cluster is created on demand, as ECS does.
pub(crate) fn register_in(
    view: &dyn ReadView,
    scope: &Scope,
    r: &Registration,
    at: f64,
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
        .unwrap_or_else(|| ids::random_hex(16));
    // An EC2 instance id: `i-` and 17 hex digits.
    let name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("i-{}", ids::random_string(ids::LOWER_HEX, 17)));
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
                .unwrap_or(at),
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
        placement_attributes: Default::default(),
    };
    ops.push(Op::put(scope.instance(&r.cluster, &id), encode(&record)?));
    ops.push(Op::put(
        scope.instance_name(&r.cluster, &name),
        bytes::Bytes::from(id.into_bytes()),
    ));
    Ok((ops, record))
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
