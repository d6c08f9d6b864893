//! Cloud Map's records as stored, their keys, ids and errors, and [`Tx`]:
//! the typed view of one store mutation every write goes through.
//!
//! Keys, under `servicediscovery/<account>/<region>/`:
//! * `ns/<namespace id>` → [`NamespaceRecord`]
//! * `srv/<service id>` → [`ServiceRecord`]
//! * `inst/<service id>/<instance id>` → [`InstanceRecord`]
//! * `op/<operation id>` → [`OperationRecord`]
//! * `req/<kind>/<creator request id>` → [`RequestRecord`] (idempotency)

use std::collections::BTreeMap;

use berth_model::AwsError;
use berth_store::{Op, ReadView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Namespace types as the API names them.
pub const DNS_PRIVATE: &str = "DNS_PRIVATE";
pub const DNS_PUBLIC: &str = "DNS_PUBLIC";
pub const HTTP: &str = "HTTP";
/// Service types.
pub const DNS_HTTP: &str = "DNS_HTTP";

/// Cloud Map's quota of tags per resource.
pub const MAX_TAGS: usize = 50;
/// Custom attributes an instance may carry, and their total size.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 30;
pub const MAX_ATTRIBUTES_SIZE: usize = 5000;
/// Service attributes (UpdateServiceAttributes) a service may carry.
pub const MAX_SERVICE_ATTRIBUTES: usize = 30;
/// The SOA TTL of a private namespace created without one.
pub const DEFAULT_SOA_TTL: i64 = 15;

/// An account in a Region: the unit Cloud Map state is kept in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: &str, region: &str) -> Scope {
        Scope {
            account: account.to_string(),
            region: region.to_string(),
        }
    }

    pub fn prefix(&self) -> String {
        format!("servicediscovery/{}/{}/", self.account, self.region)
    }

    pub fn namespaces(&self) -> String {
        format!("{}ns/", self.prefix())
    }

    pub fn namespace_key(&self, id: &str) -> String {
        format!("{}ns/{id}", self.prefix())
    }

    pub fn services(&self) -> String {
        format!("{}srv/", self.prefix())
    }

    pub fn service_key(&self, id: &str) -> String {
        format!("{}srv/{id}", self.prefix())
    }

    pub fn instances(&self, service_id: &str) -> String {
        format!("{}inst/{service_id}/", self.prefix())
    }

    pub fn instance_key(&self, service_id: &str, instance_id: &str) -> String {
        format!("{}inst/{service_id}/{instance_id}", self.prefix())
    }

    pub fn operations(&self) -> String {
        format!("{}op/", self.prefix())
    }

    pub fn operation_key(&self, id: &str) -> String {
        format!("{}op/{id}", self.prefix())
    }

    pub fn request_key(&self, kind: &str, id: &str) -> String {
        format!("{}req/{kind}/{id}", self.prefix())
    }

    pub fn arn(&self, resource: &str) -> String {
        format!(
            "arn:aws:servicediscovery:{}:{}:{resource}",
            self.region, self.account
        )
    }

    pub fn namespace_arn(&self, id: &str) -> String {
        self.arn(&format!("namespace/{id}"))
    }

    pub fn service_arn(&self, id: &str) -> String {
        self.arn(&format!("service/{id}"))
    }

    /// Where berth-ec2 keeps a VPC of this account and Region (its
    /// `ec2/<account>/<region>/vpc/<id>` layout).
    pub fn vpc_key(&self, vpc_id: &str) -> String {
        format!("ec2/{}/{}/vpc/{vpc_id}", self.account, self.region)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub id: String,
    pub arn: String,
    pub name: String,
    /// The name DiscoverInstances takes (the name, or the name with a
    /// suffix when another namespace already had it).
    pub http_name: String,
    /// `HTTP` or `DNS_PRIVATE`.
    pub ns_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub vpc: Option<String>,
    #[serde(default)]
    pub hosted_zone_id: Option<String>,
    #[serde(default)]
    pub soa_ttl: Option<i64>,
    pub created: f64,
    #[serde(default)]
    pub creator_request_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub service_count: i32,
}

impl NamespaceRecord {
    pub fn is_dns(&self) -> bool {
        self.ns_type != HTTP
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsRecordSpec {
    /// `A`, `AAAA`, `SRV` or `CNAME`.
    pub record_type: String,
    pub ttl: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsConfigRecord {
    /// `MULTIVALUE` or `WEIGHTED`.
    pub routing_policy: String,
    pub records: Vec<DnsRecordSpec>,
}

impl DnsConfigRecord {
    pub fn has(&self, record_type: &str) -> bool {
        self.records.iter().any(|r| r.record_type == record_type)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub namespace_id: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `HTTP`, `DNS_HTTP` or `DNS`.
    pub service_type: String,
    #[serde(default)]
    pub dns_config: Option<DnsConfigRecord>,
    /// HealthCheckCustomConfig was given (its FailureThreshold is always 1).
    #[serde(default)]
    pub custom_health: bool,
    pub created: f64,
    #[serde(default)]
    pub creator_request_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub instance_count: i32,
    /// Bumped by every change of the service's instances
    /// (DiscoverInstancesRevision).
    #[serde(default)]
    pub instances_revision: i64,
    /// Service attributes (UpdateServiceAttributes).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub service_id: String,
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub creator_request_id: Option<String>,
    pub created_by: String,
    /// The custom health status (services with HealthCheckCustomConfig).
    #[serde(default)]
    pub custom_health: Option<String>,
    /// The DNS registry keys written for this instance, so a deregistration
    /// removes exactly them whatever the service's settings are by then.
    #[serde(default)]
    pub dns_keys: Vec<String>,
}

impl InstanceRecord {
    /// HEALTHY, UNHEALTHY or UNKNOWN (no health check: Cloud Map knows nothing).
    pub fn health_status(&self) -> &str {
        self.custom_health.as_deref().unwrap_or("UNKNOWN")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub id: String,
    pub op_type: String,
    pub status: String,
    pub created: f64,
    pub updated: f64,
    pub targets: BTreeMap<String, String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// What a request with a CreatorRequestId did: the digest of its input and
/// what it answered (an operation id or a service id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub fingerprint: String,
    pub result: String,
}

// ---- ids ------------------------------------------------------------------

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

pub fn new_namespace_id() -> String {
    format!("ns-{}", berth_util::ids::random_string(LOWER_ALNUM, 16))
}

pub fn new_service_id() -> String {
    format!("srv-{}", berth_util::ids::random_string(LOWER_ALNUM, 16))
}

/// Cloud Map's operation ids look like `gv4g5meo7ndmeh4fqskygvk23d2fijwa-k9302yzd`.
pub fn new_operation_id() -> String {
    format!(
        "{}-{}",
        berth_util::ids::random_string(LOWER_ALNUM, 32),
        berth_util::ids::random_string(LOWER_ALNUM, 8)
    )
}

/// Route 53 hosted zone ids: `Z` and 20 upper-case letters and digits.
pub fn new_hosted_zone_id() -> String {
    format!("Z{}", berth_util::ids::random_string(UPPER_ALNUM, 20))
}

/// A digest of a request's input, to tell a retry from a reuse of its
/// CreatorRequestId.
pub fn fingerprint<T: Serialize>(input: &T) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}

// ---- errors ---------------------------------------------------------------

pub fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidInput", message)
}

pub fn namespace_not_found() -> AwsError {
    AwsError::bad_request("NamespaceNotFound", "Namespace not found")
}

pub fn service_not_found() -> AwsError {
    AwsError::bad_request("ServiceNotFound", "Service not found")
}

pub fn instance_not_found(id: &str) -> AwsError {
    AwsError::bad_request("InstanceNotFound", format!("Instance not found: {id}"))
}

pub fn operation_not_found() -> AwsError {
    AwsError::bad_request("OperationNotFound", "Operation not found")
}

pub fn resource_not_found(arn: &str) -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        format!("Resource not found: {arn}"),
    )
}

pub fn duplicate_request(operation_id: &str) -> AwsError {
    AwsError::bad_request(
        "DuplicateRequest",
        format!(
            "The CreatorRequestId was used before with a different request (operation {operation_id})"
        ),
    )
}

pub fn store_error(e: berth_store::StoreError) -> AwsError {
    tracing::error!(error = %e, "store failure");
    AwsError::internal("The request could not be stored; retry it.")
}

pub fn corrupt(key: &str) -> AwsError {
    tracing::error!(key, "undecodable record in the store");
    AwsError::internal("An internal error occurred.")
}

pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, AwsError> {
    serde_json::from_slice(bytes).map_err(|_| corrupt(key))
}

/// Reads a record outside a mutation.
pub fn read<T: DeserializeOwned>(view: &dyn ReadView, key: &str) -> Result<Option<T>, AwsError> {
    view.get(key).map(|kv| decode(key, &kv.value)).transpose()
}

/// Reads every record under `prefix` outside a mutation, in key order.
pub fn read_all<T: DeserializeOwned>(
    view: &dyn ReadView,
    prefix: &str,
) -> Result<Vec<T>, AwsError> {
    view.range(prefix, None, usize::MAX)
        .iter()
        .map(|kv| decode(&kv.key, &kv.value))
        .collect()
}

// ---- one mutation -----------------------------------------------------------

/// The records of one store mutation: reads see the writes made so far, and
/// [`Tx::into_ops`] gives the writes to commit together.
pub struct Tx<'a> {
    view: &'a dyn ReadView,
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl<'a> Tx<'a> {
    pub fn new(view: &'a dyn ReadView) -> Tx<'a> {
        Tx {
            view,
            writes: BTreeMap::new(),
        }
    }

    pub fn exists(&self, key: &str) -> bool {
        match self.writes.get(key) {
            Some(w) => w.is_some(),
            None => self.view.get(key).is_some(),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AwsError> {
        match self.writes.get(key) {
            Some(Some(bytes)) => decode(key, bytes).map(Some),
            Some(None) => Ok(None),
            None => read(self.view, key),
        }
    }

    /// Every record under `prefix`, in key order, with the writes applied.
    pub fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, AwsError> {
        let mut merged: BTreeMap<String, Vec<u8>> = self
            .view
            .range(prefix, None, usize::MAX)
            .into_iter()
            .map(|kv| (kv.key, kv.value.to_vec()))
            .collect();
        for (key, write) in self.writes.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match write {
                Some(bytes) => merged.insert(key.clone(), bytes.clone()),
                None => merged.remove(key),
            };
        }
        merged.iter().map(|(k, v)| decode(k, v)).collect()
    }

    pub fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), AwsError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| AwsError::internal(format!("encoding a record failed: {e}")))?;
        self.writes.insert(key, Some(bytes));
        Ok(())
    }

    pub fn delete(&mut self, key: String) {
        self.writes.insert(key, None);
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.writes
            .into_iter()
            .map(|(key, write)| match write {
                Some(bytes) => Op::put(key, bytes),
                None => Op::delete(key),
            })
            .collect()
    }
}
