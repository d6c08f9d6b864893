//! AWS Secrets Manager (`secretsmanager`, JSON 1.1).
//!
//! Store layout: `/secretsmanager/<account>/<region>/secrets/<name>` holds one
//! [`SecretRecord`] with every version of the secret, so moving staging labels
//! between versions is one write. Values are sealed with the master key; the
//! store never sees plaintext.
//!
//! A deleted secret keeps its record with a deletion date until that date has
//! passed; after that it counts as gone (reads ignore it, and the next write of
//! the name replaces it), which is what AWS's asynchronous purge looks like to
//! a client.
//!
//! Replication (see [`replication`]): a replica is a real secret record in
//! the other Region's prefix, written in the same transaction as every
//! change of its primary. Rotation needs a Lambda function, which Berth
//! cannot run (see [`rotation`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use berth_model::authz::Requirement;
use berth_model::shapes::secretsmanager as sm;
use berth_model::{AwsError, JsonService, RequestContext};
use berth_store::{Op, ReadView, Store, StoreExt};
// Secrets Manager reports its dates in whole seconds.
use berth_util::time::now_secs;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::authz::{
    resolve_secret, secret_requirement, with_tags, SecretTarget, SM_RESOURCE_TAG_PREFIX,
};
use crate::common::{corrupt, decode_token, encode_token, page_size, store_error, validation};
use crate::crypto::{MasterKey, Sealed};

mod list;
mod replication;
mod rotation;

pub use list::filter_matches;

/// The Secrets Manager operations Berth does not implement, and why.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "AssociateCrossAccountReplica",
        "Berth serves a single account (--account-id), so there is no other account to hold a \
         cross-account replica; replicate to Berth's other Regions with ReplicateSecretToRegions.",
    ),
    (
        "DisassociateCrossAccountReplica",
        "Berth serves a single account (--account-id), so no secret has a cross-account replica \
         to disassociate.",
    ),
];

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
pub const AWSPENDING: &str = "AWSPENDING";
const DEFAULT_RECOVERY_DAYS: i64 = 30;
const MAX_VERSIONS: usize = 100;
const MARKED_FOR_DELETION: &str =
    "You can't perform this operation on the secret because it was marked for deletion.";

/// A secret as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub arn: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    pub created: f64,
    pub last_changed: f64,
    /// When DeleteSecret ran, and when the secret is gone for good.
    #[serde(default)]
    pub deleted: Option<f64>,
    #[serde(default)]
    pub purge_at: Option<f64>,
    /// Version id → version.
    pub versions: BTreeMap<String, VersionRecord>,
    /// The secret's resource policy (PutResourcePolicy), which takes part
    /// in IAM decisions on the secret.
    #[serde(default)]
    pub resource_policy: Option<String>,
    /// For a replica: the Region of its primary secret.
    #[serde(default)]
    pub primary_region: Option<String>,
    /// For a primary: its replicas in other Regions.
    #[serde(default)]
    pub replicas: Vec<replication::Replica>,
    /// The day (midnight UTC) the value was last read in this Region.
    #[serde(default)]
    pub last_accessed: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    pub stages: Vec<String>,
    pub created: f64,
    /// Whether the value was given as SecretBinary.
    pub binary: bool,
    pub sealed: Sealed,
}

impl SecretRecord {
    /// Whether the record only awaits its purge: treat it as absent.
    fn purged(&self, now: f64) -> bool {
        self.purge_at.is_some_and(|t| t <= now)
    }

    fn version_with_stage(&self, stage: &str) -> Option<(&String, &VersionRecord)> {
        self.versions
            .iter()
            .find(|(_, v)| v.stages.iter().any(|s| s == stage))
    }

    fn stages_map(&self) -> BTreeMap<String, Vec<String>> {
        self.versions
            .iter()
            .filter(|(_, v)| !v.stages.is_empty())
            .map(|(id, v)| (id.clone(), v.stages.clone()))
            .collect()
    }

    fn tags(&self) -> Option<Vec<sm::Tag>> {
        Some(
            self.tags
                .iter()
                .map(|(k, v)| sm::Tag {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
        )
    }

    /// Adds a version and moves `stages` onto it. When AWSCURRENT moves, the
    /// version that had it gets AWSPREVIOUS, as Secrets Manager does.
    fn add_version(&mut self, id: String, version: VersionRecord, now: f64) {
        let stages = version.stages.clone();
        let old_current = if stages.iter().any(|s| s == AWSCURRENT) {
            self.version_with_stage(AWSCURRENT)
                .map(|(id, _)| id.clone())
        } else {
            None
        };
        for v in self.versions.values_mut() {
            v.stages.retain(|s| !stages.contains(s));
        }
        if let Some(old) = old_current.filter(|old| *old != id) {
            for v in self.versions.values_mut() {
                v.stages.retain(|s| s != AWSPREVIOUS);
            }
            if let Some(v) = self.versions.get_mut(&old) {
                v.stages.push(AWSPREVIOUS.to_string());
            }
        }
        self.versions.insert(id, version);
        // AWS drops versions without labels beyond its quota; do the same so a
        // record cannot grow without bound. Oldest unlabeled go first.
        while self.versions.len() > MAX_VERSIONS {
            let oldest = self
                .versions
                .iter()
                .filter(|(_, v)| v.stages.is_empty())
                .min_by(|a, b| a.1.created.total_cmp(&b.1.created))
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.versions.remove(&id);
                }
                None => break,
            }
        }
        self.last_changed = now;
    }
}

pub fn prefix(account: &str, region: &str) -> String {
    format!("/secretsmanager/{account}/{region}/secrets/")
}

fn not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
    )
}

fn version_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret value for staging label or version id.",
    )
}

fn invalid_parameter(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidParameterException", message)
}

fn invalid_request(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidRequestException", message)
}

fn marked_for_deletion() -> AwsError {
    invalid_request(MARKED_FOR_DELETION)
}

/// A Secrets Manager operation Berth does not implement: why, never a fake
/// success.
fn unsupported(operation: &str) -> AwsError {
    let why = NOT_IMPLEMENTED
        .iter()
        .find(|(op, _)| *op == operation)
        .map_or("it is not part of Berth.", |(_, why)| *why);
    invalid_request(format!(
        "Berth does not implement the Secrets Manager operation {operation}: {why}"
    ))
}

/// A write to a replica, which only its primary's Region may change.
fn replica_refused() -> AwsError {
    invalid_parameter(
        "Operation not permitted on a replica secret. Call must be made in primary secret's \
         region.",
    )
}

fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, AwsError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid_parameter(format!(
            "You must provide a value for the {member} parameter."
        ))),
    }
}

/// Finds a secret by name, full ARN or partial ARN (the ARN without the six
/// random characters AWS appends). Returns the store key and the record.
pub fn find_secret<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    secret_id: &str,
    now: f64,
) -> Result<Option<(String, SecretRecord)>, AwsError> {
    let (account, region, name) = match secret_id.strip_prefix("arn:") {
        Some(_) => {
            let parts: Vec<&str> = secret_id.splitn(7, ':').collect();
            match parts.as_slice() {
                // Only the caller's own account and region: Berth serves
                // one account, so another account's ARN opens nothing.
                [_, _, "secretsmanager", r, a, "secret", rest] if *a == account && *r == region => {
                    (*a, *r, *rest)
                }
                _ => return Ok(None),
            }
        }
        None => (account, region, secret_id),
    };
    let prefix = prefix(account, region);
    let lookup = |name: &str| -> Result<Option<(String, SecretRecord)>, AwsError> {
        let key = format!("{prefix}{name}");
        let Some(kv) = view.get(&key) else {
            return Ok(None);
        };
        let record: SecretRecord = serde_json::from_slice(&kv.value).map_err(|_| corrupt(&key))?;
        if record.purged(now) {
            return Ok(None);
        }
        Ok(Some((key, record)))
    };
    if secret_id.starts_with("arn:") {
        // A full ARN ends in `-` and six characters; try it as one first, and
        // accept it only when it is exactly the secret's ARN.
        if let Some(base) = strip_suffix(name) {
            if let Some(found) = lookup(base)? {
                if found.1.arn == secret_id {
                    return Ok(Some(found));
                }
            }
        }
        // A partial ARN names the secret itself.
        return lookup(name);
    }
    lookup(name)
}

/// `name-AbCdEf` → `name`.
fn strip_suffix(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(base)
}

/// A value as the caller gave it: exactly one of string or base64 binary.
enum Value {
    String(String),
    Binary(Vec<u8>),
}

impl Value {
    fn from_request(
        string: &Option<String>,
        binary: &Option<String>,
    ) -> Result<Option<Value>, AwsError> {
        match (string, binary) {
            (Some(_), Some(_)) => Err(invalid_parameter(
                "You can't specify both a binary secret value and a string secret value in the same secret.",
            )),
            (Some(s), None) => {
                if s.is_empty() {
                    return Err(validation(
                        "1 validation error detected: Value at 'secretString' failed to satisfy \
                         constraint: Member must have length greater than or equal to 1",
                    ));
                }
                if s.len() > 65536 {
                    // As AWS's request validation: the value itself is never echoed.
                    return Err(validation(
                        "1 validation error detected: Value at 'secretString' failed to satisfy \
                         constraint: Member must have length less than or equal to 65536",
                    ));
                }
                Ok(Some(Value::String(s.clone())))
            }
            (None, Some(b)) => {
                let bytes = B64
                    .decode(b)
                    .map_err(|_| invalid_parameter("SecretBinary is not valid base64."))?;
                if bytes.is_empty() || bytes.len() > 65536 {
                    return Err(validation(format!(
                        "1 validation error detected: Value at 'secretBinary' failed to satisfy \
                         constraint: Member must have length {}",
                        if bytes.is_empty() {
                            "greater than or equal to 1"
                        } else {
                            "less than or equal to 65536"
                        }
                    )));
                }
                Ok(Some(Value::Binary(bytes)))
            }
            (None, None) => Ok(None),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Value::String(s) => s.as_bytes(),
            Value::Binary(b) => b,
        }
    }

    fn is_binary(&self) -> bool {
        matches!(self, Value::Binary(_))
    }
}

fn check_token(token: &Option<String>) -> Result<String, AwsError> {
    match token {
        Some(t) if (32..=64).contains(&t.len()) => Ok(t.clone()),
        Some(_) => Err(invalid_parameter(
            "ClientRequestToken must be between 32 and 64 characters long.",
        )),
        None => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

fn check_stages(stages: &[String]) -> Result<(), AwsError> {
    if stages.is_empty() {
        return Err(validation(
            "1 validation error detected: Value '[]' at 'versionStages' failed to satisfy \
             constraint: Member must have length greater than or equal to 1",
        ));
    }
    if stages.len() > 20 || stages.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(invalid_parameter(
            "VersionStages must hold 1 to 20 labels of 1 to 256 characters.",
        ));
    }
    Ok(())
}

fn check_tags(tags: &[sm::Tag]) -> Result<Vec<(String, String)>, AwsError> {
    if tags.len() > 50 {
        return Err(invalid_parameter("A secret can have at most 50 tags."));
    }
    tags.iter()
        .map(|t| {
            let key = t.key.clone().unwrap_or_default();
            let value = t.value.clone().unwrap_or_default();
            if key.is_empty() || key.len() > 128 || value.len() > 256 {
                return Err(invalid_parameter(
                    "Tag keys must be 1 to 128 characters and values at most 256.",
                ));
            }
            if key.to_ascii_lowercase().starts_with("aws:") {
                return Err(invalid_parameter("Tag keys can't start with 'aws:'."));
            }
            Ok((key, value))
        })
        .collect()
}

fn merge_tags(existing: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (k, v) in new {
        match existing.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => existing.push((k, v)),
        }
    }
}

/// A secret name: 1 to 512 characters (the model's constraint, answered as
/// AWS's request validation does) of letters, digits and `/_+=.@-` (AWS's
/// own check, an InvalidParameterException).
fn check_name(name: &str) -> Result<(), AwsError> {
    if name.chars().count() > 512 {
        return Err(validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: \
             Member must have length less than or equal to 512"
        )));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
    if name.is_empty() || !ok_chars {
        return Err(invalid_parameter(
            "Invalid name. Must be a valid name containing alphanumeric characters, or any of \
             the following: -/_+=.@!",
        ));
    }
    Ok(())
}

/// The six characters Secrets Manager appends to a secret's name in its ARN.
fn random_suffix() -> String {
    berth_util::ids::token(6)
}

/// The Secrets Manager service.
pub struct SecretsManagerService {
    store: Arc<dyn Store>,
    keys: Arc<MasterKey>,
}

impl SecretsManagerService {
    pub fn new(store: Arc<dyn Store>, keys: Arc<MasterKey>) -> Self {
        SecretsManagerService { store, keys }
    }
}

use berth_model::json_op as op;

#[async_trait::async_trait]
impl JsonService for SecretsManagerService {
    fn target_prefix(&self) -> &'static str {
        sm::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        sm::SIGNING_NAME
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        match operation {
            "CreateSecret" => op!(body, |i| self.create(ctx, i).await),
            "GetSecretValue" => op!(body, |i| self.get_value(ctx, i).await),
            "PutSecretValue" => op!(body, |i| self.put_value(ctx, i).await),
            "DescribeSecret" => op!(body, |i| self.describe(ctx, i)),
            "ListSecrets" => op!(body, |i| self.list(ctx, i)),
            "DeleteSecret" => op!(body, |i| self.delete(ctx, i).await),
            "RestoreSecret" => op!(body, |i| self.restore(ctx, i).await),
            "UpdateSecret" => op!(body, |i| self.update(ctx, i).await),
            "TagResource" => op!(body, |i| self.tag(ctx, i).await),
            "UntagResource" => op!(body, |i| self.untag(ctx, i).await),
            "GetRandomPassword" => op!(
                ctx,
                body,
                |i| berth_model::authz::on("secretsmanager:GetRandomPassword", Vec::new())
                    => get_random_password(i)
            ),
            "ListSecretVersionIds" => op!(body, |i| self.list_versions(ctx, i)),
            "UpdateSecretVersionStage" => op!(body, |i| self.update_stage(ctx, i).await),
            "BatchGetSecretValue" => op!(body, |i| self.batch_get(ctx, i).await),
            "PutResourcePolicy" => op!(body, |i| self.put_policy(ctx, i).await),
            "GetResourcePolicy" => op!(body, |i| self.get_policy(ctx, i)),
            "DeleteResourcePolicy" => op!(body, |i| self.delete_policy(ctx, i).await),
            "ValidateResourcePolicy" => op!(body, |i| self.validate_policy(ctx, i)),
            "ListResourcePolicies" => op!(body, |i| self.list_policies(ctx, i)),
            "ReplicateSecretToRegions" => op!(body, |i| self.replicate(ctx, i).await),
            "RemoveRegionsFromReplication" => op!(body, |i| self.remove_regions(ctx, i).await),
            "StopReplicationToReplica" => op!(body, |i| self.stop_replication(ctx, i).await),
            "RotateSecret" => op!(body, |i| self.rotate(ctx, i)),
            "CancelRotateSecret" => op!(body, |i| self.cancel_rotate(ctx, i)),
            other if sm::OPERATIONS.contains(&other) => Err(unsupported(other)),
            other => Err(AwsError::unknown_operation(format!(
                "Secrets Manager has no operation named '{other}'."
            ))),
        }
    }
}

fn encode(key: &str, record: &SecretRecord) -> Result<Op, AwsError> {
    let bytes = serde_json::to_vec(record).map_err(|_| corrupt(key))?;
    Ok(Op::put(key, bytes))
}

impl SecretsManagerService {
    /// Resolves `secret_id` to the stored secret (or the ARN as written) and
    /// asks IAM for `secretsmanager:<operation>` on it, with the condition
    /// keys `extra` adds. Answers the stored secret's full ARN, which the
    /// call then acts on; a reference that names no secret is
    /// ResourceNotFoundException once the caller may know that.
    fn authorize_secret(
        &self,
        ctx: &RequestContext,
        operation: &str,
        secret_id: &str,
        extra: impl FnOnce(Requirement) -> Requirement,
    ) -> Result<String, AwsError> {
        let target = self.target(ctx, secret_id)?;
        ctx.authorize(&[extra(target.requirement(operation))])?;
        target.found_arn().map(str::to_string).ok_or_else(not_found)
    }

    fn target(&self, ctx: &RequestContext, secret_id: &str) -> Result<SecretTarget, AwsError> {
        resolve_secret(
            self.store.as_ref(),
            &ctx.account_id,
            &ctx.region,
            secret_id,
            now_secs() as f64,
        )
    }

    /// Runs `f` on the secret `secret_id` inside one store mutation and writes
    /// the record back when `f` says so.
    async fn modify<T, F>(
        &self,
        ctx: &RequestContext,
        secret_id: String,
        mut f: F,
    ) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: FnMut(&mut SecretRecord, f64) -> Result<(bool, T), AwsError> + Send + 'static,
    {
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let now = now_secs() as f64;
                let (key, mut record) =
                    find_secret(view, &account, &region, &secret_id, now)?.ok_or_else(not_found)?;
                if record.primary_region.is_some() {
                    return Err(replica_refused());
                }
                let (write, out) = f(&mut record, now)?;
                let mut ops = Vec::new();
                if write {
                    // Replicas follow every change of their primary, in the
                    // same transaction.
                    ops = replication::sync_ops(view, &account, &region, &mut record, now)?;
                    ops.push(encode(&key, &record)?);
                }
                Ok::<_, AwsError>((ops, out))
            })
            .await
            .map_err(store_error)?;
        result.map(|(_, out)| out)
    }

    async fn create(
        &self,
        ctx: &RequestContext,
        input: sm::CreateSecretRequest,
    ) -> Result<sm::CreateSecretResponse, AwsError> {
        let name = required(&input.name, "Name")?.to_string();
        check_name(&name)?;
        let value = Value::from_request(&input.secret_string, &input.secret_binary)?;
        let token = check_token(&input.client_request_token)?;
        let tags = check_tags(input.tags.as_deref().unwrap_or_default())?;
        let replica_regions =
            replication::check_regions(&ctx.region, input.add_replica_regions.as_ref())?;
        let force_overwrite = input.force_overwrite_replica_secret.unwrap_or(false);
        if input.cross_account_primary_arn.is_some() {
            return Err(invalid_request(
                "Berth serves a single account (--account-id), so a secret can't be a \
                 cross-account replica of another account's secret (CrossAccountPrimaryARN).",
            ));
        }
        if input.r#type.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(invalid_request(
                "Berth has no managed external secret partners: a secret's Type names the \
                 third-party partner that holds and rotates it, and Berth holds every secret \
                 itself. Leave Type out.",
            ));
        }
        let sealed = match &value {
            Some(v) => Some(
                self.keys
                    .seal(v.bytes())
                    .map_err(|_| AwsError::internal("An internal error occurred."))?,
            ),
            None => None,
        };
        let binary = value.as_ref().is_some_and(Value::is_binary);
        let plain = value.map(|v| v.bytes().to_vec());
        let keys = self.keys.clone();
        let version_id = token.clone();
        let key = format!("{}{name}", prefix(&ctx.account_id, &ctx.region));
        // The new secret's ARN is chosen before IAM is asked, so a policy on
        // `secret:<name>-??????` covers its creation; a secret that already
        // has the name (a retry answers it) is asked about as itself.
        let new_arn = format!(
            "{}-{}",
            ctx.arn("secretsmanager", &format!("secret:{name}")),
            random_suffix()
        );
        let existing = self.target(ctx, &name)?.record;
        let arn = existing.as_ref().map_or(new_arn.clone(), |r| r.arn.clone());
        let mut create = Requirement::new("secretsmanager:CreateSecret", arn.clone())
            .condition("secretsmanager:Name", name.clone());
        if let Some(d) = &input.description {
            create = create.condition("secretsmanager:Description", d.clone());
        }
        if let Some(k) = &input.kms_key_id {
            create = create.condition("secretsmanager:KmsKeyId", k.clone());
        }
        let request_tags = || tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        create = create.request_tags(request_tags());
        if let Some(r) = &existing {
            create = with_tags(create, &r.tags, SM_RESOURCE_TAG_PREFIX);
        }
        let mut requirements = vec![create];
        if !replica_regions.is_empty() {
            let target = SecretTarget {
                arn: arn.clone(),
                record: existing.clone(),
            };
            requirements.push(
                target
                    .requirement("ReplicateSecretToRegions")
                    .condition_values(
                        "secretsmanager:AddReplicaRegions",
                        replica_regions.iter().map(|(r, _)| r.clone()),
                    ),
            );
        }
        // Tags given at creation also need secretsmanager:TagResource.
        if !tags.is_empty() {
            let target = SecretTarget {
                arn: arn.clone(),
                record: existing.clone(),
            };
            requirements.push(
                target
                    .requirement("TagResource")
                    .request_tags(request_tags()),
            );
        }
        ctx.authorize(&requirements)?;
        let (description, kms_key_id) = (input.description.clone(), input.kms_key_id.clone());
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let now = now_secs() as f64;
                if let Some(kv) = view.get(&key) {
                    let existing: SecretRecord =
                        serde_json::from_slice(&kv.value).map_err(|_| corrupt(&key))?;
                    if !existing.purged(now) {
                        if existing.deleted.is_some() {
                            return Err(invalid_request(
                                "You can't create this secret because a secret with this name is already scheduled for deletion.",
                            ));
                        }
                        // A retry of the same request (same token, same value)
                        // succeeds without writing, as AWS's idempotency does.
                        if let Some(v) = existing.versions.get(&token) {
                            let same = keys
                                .open(&v.sealed)
                                .ok()
                                .is_some_and(|p| Some(p) == plain && v.binary == binary);
                            if same {
                                let statuses = replication::statuses(&existing);
                                return Ok((
                                    vec![],
                                    (existing.arn.clone(), existing.name.clone(), statuses),
                                ));
                            }
                        }
                        return Err(AwsError::bad_request(
                            "ResourceExistsException",
                            format!("The operation failed because the secret {} already exists.", existing.name),
                        ));
                    }
                }
                let mut record = SecretRecord {
                    name: name.clone(),
                    arn: new_arn.clone(),
                    description: description.clone(),
                    kms_key_id: kms_key_id.clone(),
                    tags: tags.clone(),
                    created: now,
                    last_changed: now,
                    deleted: None,
                    purge_at: None,
                    versions: BTreeMap::new(),
                    resource_policy: None,
                    primary_region: None,
                    replicas: Vec::new(),
                    last_accessed: None,
                };
                if let Some(sealed) = &sealed {
                    record.add_version(
                        token.clone(),
                        VersionRecord {
                            stages: vec![AWSCURRENT.to_string()],
                            created: now,
                            binary,
                            sealed: sealed.clone(),
                        },
                        now,
                    );
                }
                let mut ops = replication::add_ops(
                    view,
                    &account,
                    &region,
                    &mut record,
                    &replica_regions,
                    force_overwrite,
                    now,
                )?;
                ops.push(encode(&key, &record)?);
                let statuses = replication::statuses(&record);
                Ok((ops, (record.arn, record.name, statuses)))
            })
            .await
            .map_err(store_error)?;
        let (_, (arn, name, statuses)) = result?;
        Ok(sm::CreateSecretResponse {
            arn: Some(arn),
            name: Some(name),
            version_id: sealed_version(
                &input.secret_string,
                &input.secret_binary,
                &Some(version_id),
            ),
            replication_status: statuses,
        })
    }

    /// Records that the secret `arn` was read today (Secrets Manager keeps
    /// the date only, so at most one write a day).
    async fn touch(&self, ctx: &RequestContext, record: &SecretRecord) -> Result<(), AwsError> {
        let today = (now_secs() / 86400 * 86400) as f64;
        if record.last_accessed == Some(today) {
            return Ok(());
        }
        let (account, region, arn) = (
            ctx.account_id.clone(),
            ctx.region.clone(),
            record.arn.clone(),
        );
        self.store
            .update(move |view| {
                let now = now_secs() as f64;
                let Some((key, mut record)) = find_secret(view, &account, &region, &arn, now)?
                else {
                    return Ok((vec![], ()));
                };
                if record.arn != arn || record.last_accessed == Some(today) {
                    return Ok((vec![], ()));
                }
                record.last_accessed = Some(today);
                Ok::<_, AwsError>((vec![encode(&key, &record)?], ()))
            })
            .await
            .map_err(store_error)??;
        Ok(())
    }

    async fn get_value(
        &self,
        ctx: &RequestContext,
        input: sm::GetSecretValueRequest,
    ) -> Result<sm::GetSecretValueResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        let target = self.target(ctx, secret_id)?;
        let mut requirement = target.requirement("GetSecretValue");
        if let Some(id) = input.version_id.as_deref().filter(|s| !s.is_empty()) {
            requirement = requirement.condition("secretsmanager:VersionId", id);
        }
        if let Some(stage) = input.version_stage.as_deref().filter(|s| !s.is_empty()) {
            requirement = requirement.condition("secretsmanager:VersionStage", stage);
        }
        ctx.authorize(&[requirement])?;
        let record = target.record.ok_or_else(not_found)?;
        let (version_id, version) = select_version(
            &record,
            input.version_id.as_deref(),
            input.version_stage.as_deref(),
        )?;
        let plain = open(&self.keys, &version.sealed)?;
        let (secret_string, secret_binary) = if version.binary {
            (None, Some(B64.encode(&plain)))
        } else {
            (
                Some(
                    String::from_utf8(plain)
                        .map_err(|_| AwsError::internal("An internal error occurred."))?,
                ),
                None,
            )
        };
        self.touch(ctx, &record).await?;
        Ok(sm::GetSecretValueResponse {
            arn: Some(record.arn.clone()),
            name: Some(record.name.clone()),
            version_id: Some(version_id.clone()),
            secret_string,
            secret_binary,
            version_stages: Some(version.stages.clone()),
            created_date: Some(version.created),
        })
    }

    async fn put_value(
        &self,
        ctx: &RequestContext,
        input: sm::PutSecretValueRequest,
    ) -> Result<sm::PutSecretValueResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let value =
            Value::from_request(&input.secret_string, &input.secret_binary)?.ok_or_else(|| {
                invalid_parameter("You must provide either SecretString or SecretBinary.")
            })?;
        let token = check_token(&input.client_request_token)?;
        let stages = input
            .version_stages
            .clone()
            .unwrap_or_else(|| vec![AWSCURRENT.to_string()]);
        check_stages(&stages)?;
        let secret_id = self.authorize_secret(ctx, "PutSecretValue", &secret_id, |r| r)?;
        let sealed = self
            .keys
            .seal(value.bytes())
            .map_err(|_| AwsError::internal("An internal error occurred."))?;
        let (binary, plain) = (value.is_binary(), value.bytes().to_vec());
        let keys = self.keys.clone();
        let token2 = token.clone();
        let (arn, name, stages) = self
            .modify(ctx, secret_id, move |record, now| {
                if record.deleted.is_some() {
                    return Err(marked_for_deletion());
                }
                // The first version of a secret is AWSCURRENT whatever the
                // request says, as AWS does.
                let mut stages = stages.clone();
                if record.version_with_stage(AWSCURRENT).is_none()
                    && !stages.iter().any(|s| s == AWSCURRENT)
                {
                    stages.push(AWSCURRENT.to_string());
                }
                add_or_repeat(record, &keys, &token2, &sealed, binary, &plain, stages, now)?;
                let stages = record
                    .versions
                    .get(&token2)
                    .map(|v| v.stages.clone())
                    .unwrap_or_default();
                Ok((true, (record.arn.clone(), record.name.clone(), stages)))
            })
            .await?;
        Ok(sm::PutSecretValueResponse {
            arn: Some(arn),
            name: Some(name),
            version_id: Some(token),
            version_stages: Some(stages),
        })
    }

    fn describe(
        &self,
        ctx: &RequestContext,
        input: sm::DescribeSecretRequest,
    ) -> Result<sm::DescribeSecretResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        let target = self.target(ctx, secret_id)?;
        ctx.authorize(&[target.requirement("DescribeSecret")])?;
        let r = target.record.ok_or_else(not_found)?;
        Ok(sm::DescribeSecretResponse {
            arn: Some(r.arn.clone()),
            name: Some(r.name.clone()),
            description: r.description.clone(),
            kms_key_id: r.kms_key_id.clone(),
            // Never configured for rotation (Berth cannot run rotation
            // functions), which Secrets Manager reports as null.
            rotation_enabled: None,
            last_changed_date: Some(r.last_changed),
            last_accessed_date: r.last_accessed,
            deleted_date: r.deleted,
            tags: r.tags(),
            version_ids_to_stages: Some(r.stages_map()),
            created_date: Some(r.created),
            primary_region: Some(
                r.primary_region
                    .clone()
                    .unwrap_or_else(|| ctx.region.clone()),
            ),
            replication_status: replication::statuses(&r),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        ctx: &RequestContext,
        input: sm::DeleteSecretRequest,
    ) -> Result<sm::DeleteSecretResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let force = input.force_delete_without_recovery.unwrap_or(false);
        if force && input.recovery_window_in_days.is_some() {
            return Err(invalid_parameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
            ));
        }
        let days = input
            .recovery_window_in_days
            .unwrap_or(DEFAULT_RECOVERY_DAYS);
        if !(7..=30).contains(&days) {
            return Err(invalid_parameter(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
            ));
        }
        let window = input.recovery_window_in_days;
        let secret_id = self.authorize_secret(ctx, "DeleteSecret", &secret_id, |mut r| {
            if let Some(days) = window {
                r = r.condition("secretsmanager:RecoveryWindowInDays", days.to_string());
            }
            r.condition(
                "secretsmanager:ForceDeleteWithoutRecovery",
                force.to_string(),
            )
        })?;
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let now = now_secs() as f64;
                let (key, mut record) =
                    find_secret(view, &account, &region, &secret_id, now)?.ok_or_else(not_found)?;
                if record.primary_region.is_some() {
                    return Err(replica_refused());
                }
                if !record.replicas.is_empty() {
                    let regions: Vec<&str> =
                        record.replicas.iter().map(|r| r.region.as_str()).collect();
                    return Err(invalid_parameter(format!(
                        "You can't delete secret {} that still has replica regions [{}]. Remove \
                         them first with RemoveRegionsFromReplication.",
                        record.name,
                        regions.join(",")
                    )));
                }
                if force {
                    let out = (record.arn.clone(), record.name.clone(), now);
                    return Ok((vec![Op::delete(key)], out));
                }
                if record.deleted.is_some() {
                    return Err(marked_for_deletion());
                }
                let purge_at = now + (days * 86400) as f64;
                record.deleted = Some(now);
                record.purge_at = Some(purge_at);
                let out = (record.arn.clone(), record.name.clone(), purge_at);
                Ok((vec![encode(&key, &record)?], out))
            })
            .await
            .map_err(store_error)?;
        let (_, (arn, name, deletion)) = result?;
        Ok(sm::DeleteSecretResponse {
            arn: Some(arn),
            name: Some(name),
            deletion_date: Some(deletion),
        })
    }

    async fn restore(
        &self,
        ctx: &RequestContext,
        input: sm::RestoreSecretRequest,
    ) -> Result<sm::RestoreSecretResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let secret_id = self.authorize_secret(ctx, "RestoreSecret", &secret_id, |r| r)?;
        let (arn, name) = self
            .modify(ctx, secret_id, |record, now| {
                let write = record.deleted.is_some();
                record.deleted = None;
                record.purge_at = None;
                if write {
                    record.last_changed = now;
                }
                Ok((write, (record.arn.clone(), record.name.clone())))
            })
            .await?;
        Ok(sm::RestoreSecretResponse {
            arn: Some(arn),
            name: Some(name),
        })
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        input: sm::UpdateSecretRequest,
    ) -> Result<sm::UpdateSecretResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let value = Value::from_request(&input.secret_string, &input.secret_binary)?;
        let token = check_token(&input.client_request_token)?;
        let secret_id = self.authorize_secret(ctx, "UpdateSecret", &secret_id, |mut r| {
            if let Some(d) = &input.description {
                r = r.condition("secretsmanager:Description", d.clone());
            }
            if let Some(k) = &input.kms_key_id {
                r = r.condition("secretsmanager:KmsKeyId", k.clone());
            }
            r
        })?;
        let sealed = match &value {
            Some(v) => Some(
                self.keys
                    .seal(v.bytes())
                    .map_err(|_| AwsError::internal("An internal error occurred."))?,
            ),
            None => None,
        };
        let binary = value.as_ref().is_some_and(Value::is_binary);
        let plain = value.map(|v| v.bytes().to_vec()).unwrap_or_default();
        let keys = self.keys.clone();
        let (description, kms_key_id) = (input.description.clone(), input.kms_key_id.clone());
        let token2 = token.clone();
        let (arn, name) = self
            .modify(ctx, secret_id, move |record, now| {
                if record.deleted.is_some() {
                    return Err(marked_for_deletion());
                }
                if let Some(d) = &description {
                    record.description = Some(d.clone());
                }
                if let Some(k) = &kms_key_id {
                    record.kms_key_id = Some(k.clone());
                }
                if let Some(sealed) = &sealed {
                    add_or_repeat(
                        record,
                        &keys,
                        &token2,
                        sealed,
                        binary,
                        &plain,
                        vec![AWSCURRENT.to_string()],
                        now,
                    )?;
                }
                record.last_changed = now;
                Ok((true, (record.arn.clone(), record.name.clone())))
            })
            .await?;
        Ok(sm::UpdateSecretResponse {
            arn: Some(arn),
            name: Some(name),
            version_id: sealed_version(&input.secret_string, &input.secret_binary, &Some(token)),
        })
    }

    async fn tag(
        &self,
        ctx: &RequestContext,
        input: sm::TagResourceRequest,
    ) -> Result<serde_json::Value, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let tags = check_tags(input.tags.as_deref().unwrap_or_default())?;
        let secret_id = self.authorize_secret(ctx, "TagResource", &secret_id, |r| {
            r.request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })?;
        self.modify(ctx, secret_id, move |record, _| {
            merge_tags(&mut record.tags, tags.clone());
            if record.tags.len() > 50 {
                return Err(invalid_parameter("A secret can have at most 50 tags."));
            }
            Ok((true, ()))
        })
        .await?;
        Ok(serde_json::json!({}))
    }

    async fn untag(
        &self,
        ctx: &RequestContext,
        input: sm::UntagResourceRequest,
    ) -> Result<serde_json::Value, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let keys = input.tag_keys.clone().unwrap_or_default();
        let secret_id = self.authorize_secret(ctx, "UntagResource", &secret_id, |r| {
            r.tag_keys(keys.iter().cloned())
        })?;
        self.modify(ctx, secret_id, move |record, _| {
            record.tags.retain(|(k, _)| !keys.contains(k));
            Ok((true, ()))
        })
        .await?;
        Ok(serde_json::json!({}))
    }
}

/// The VersionId a create/update answers with: only when it stored a value.
fn sealed_version(
    string: &Option<String>,
    binary: &Option<String>,
    token: &Option<String>,
) -> Option<String> {
    if string.is_none() && binary.is_none() {
        return None;
    }
    token.clone()
}

/// Adds version `token`, or accepts a retry of the same request: a version id
/// that exists with the same value is success, with another value an error
/// (AWS never changes a version's value).
#[allow(clippy::too_many_arguments)]
fn add_or_repeat(
    record: &mut SecretRecord,
    keys: &MasterKey,
    token: &str,
    sealed: &Sealed,
    binary: bool,
    plain: &[u8],
    stages: Vec<String>,
    now: f64,
) -> Result<(), AwsError> {
    if let Some(existing) = record.versions.get(token) {
        let same = keys
            .open(&existing.sealed)
            .ok()
            .is_some_and(|p| p == plain && existing.binary == binary);
        if same {
            return Ok(());
        }
        return Err(AwsError::bad_request(
            "ResourceExistsException",
            "You can't modify an existing version, you can only create a new version.",
        ));
    }
    record.add_version(
        token.to_string(),
        VersionRecord {
            stages,
            created: now,
            binary,
            sealed: sealed.clone(),
        },
        now,
    );
    Ok(())
}

/// The version a read asks for: by id, by stage, or AWSCURRENT.
pub fn select_version<'a>(
    record: &'a SecretRecord,
    version_id: Option<&str>,
    stage: Option<&str>,
) -> Result<(&'a String, &'a VersionRecord), AwsError> {
    if record.deleted.is_some() {
        return Err(marked_for_deletion());
    }
    let found = match (
        version_id.filter(|s| !s.is_empty()),
        stage.filter(|s| !s.is_empty()),
    ) {
        (Some(id), stage) => record
            .versions
            .get_key_value(id)
            .filter(|(_, v)| stage.is_none_or(|s| v.stages.iter().any(|x| x == s))),
        (None, Some(stage)) => record.version_with_stage(stage),
        (None, None) => record.version_with_stage(AWSCURRENT),
    };
    found.ok_or_else(version_not_found)
}

pub(crate) fn open(keys: &MasterKey, sealed: &Sealed) -> Result<Vec<u8>, AwsError> {
    keys.open(sealed).map_err(|e| {
        // The error names no value; it says the key or the data is wrong.
        tracing::error!(error = %e, "a stored secret cannot be decrypted");
        AwsError::internal("The secret value cannot be decrypted with this server's master key.")
    })
}

const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn get_random_password(
    input: sm::GetRandomPasswordRequest,
) -> Result<sm::GetRandomPasswordResponse, AwsError> {
    let length = input.password_length.unwrap_or(32);
    if !(1..=4096).contains(&length) {
        return Err(invalid_parameter(
            "PasswordLength must be between 1 and 4096.",
        ));
    }
    let exclude = input.exclude_characters.unwrap_or_default();
    let mut classes: Vec<Vec<char>> = Vec::new();
    let mut add = |off: Option<bool>, chars: &str| {
        if !off.unwrap_or(false) {
            let set: Vec<char> = chars.chars().filter(|c| !exclude.contains(*c)).collect();
            if !set.is_empty() {
                classes.push(set);
            }
        }
    };
    add(input.exclude_lowercase, "abcdefghijklmnopqrstuvwxyz");
    add(input.exclude_uppercase, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    add(input.exclude_numbers, "0123456789");
    add(input.exclude_punctuation, PUNCTUATION);
    add(input.include_space.map(|i| !i).or(Some(true)), " ");
    let all: Vec<char> = classes.iter().flatten().copied().collect();
    if all.is_empty() {
        return Err(invalid_parameter("The request excludes every character."));
    }
    let require_each = input.require_each_included_type.unwrap_or(true);
    let length = length as usize;
    if require_each && classes.len() > length {
        return Err(invalid_parameter(
            "PasswordLength is too short to include every required character type.",
        ));
    }
    let mut rng = rand::thread_rng();
    let mut password: Vec<char> = Vec::with_capacity(length);
    if require_each {
        for class in &classes {
            password.push(class[rng.gen_range(0..class.len())]);
        }
    }
    while password.len() < length {
        password.push(all[rng.gen_range(0..all.len())]);
    }
    // Shuffle so the required characters are not always first.
    use rand::seq::SliceRandom;
    password.shuffle(&mut rng);
    Ok(sm::GetRandomPasswordResponse {
        random_password: Some(password.into_iter().collect()),
    })
}

/// A secret value as reads answer it: SecretString, or SecretBinary base64.
fn value_fields(
    keys: &MasterKey,
    version: &VersionRecord,
) -> Result<(Option<String>, Option<String>), AwsError> {
    let plain = open(keys, &version.sealed)?;
    if version.binary {
        return Ok((None, Some(B64.encode(&plain))));
    }
    let s =
        String::from_utf8(plain).map_err(|_| AwsError::internal("An internal error occurred."))?;
    Ok((Some(s), None))
}

fn invalid_next_token() -> AwsError {
    AwsError::bad_request(
        "InvalidNextTokenException",
        "The NextToken value is invalid.",
    )
}

impl SecretsManagerService {
    fn list_versions(
        &self,
        ctx: &RequestContext,
        input: sm::ListSecretVersionIdsRequest,
    ) -> Result<sm::ListSecretVersionIdsResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        let max = page_size(input.max_results, 100)?;
        let include_deprecated = input.include_deprecated.unwrap_or(false);
        // Pages run newest first; a token names the last version shown by
        // (created, id), so versions added between calls never shift a page.
        let after = match &input.next_token {
            Some(t) => {
                let raw = decode_token(t).ok_or_else(invalid_next_token)?;
                let (created, id) = raw.split_once('|').ok_or_else(invalid_next_token)?;
                let created: f64 = created.parse().map_err(|_| invalid_next_token())?;
                Some((created, id.to_string()))
            }
            None => None,
        };
        let target = self.target(ctx, secret_id)?;
        ctx.authorize(&[target.requirement("ListSecretVersionIds")])?;
        let record = target.record.ok_or_else(not_found)?;
        let mut versions: Vec<(&String, &VersionRecord)> = record
            .versions
            .iter()
            .filter(|(_, v)| include_deprecated || !v.stages.is_empty())
            .collect();
        let order = |a: (f64, &str), b: (f64, &str)| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1));
        versions.sort_by(|a, b| order((a.1.created, a.0), (b.1.created, b.0)));
        if let Some((created, id)) = &after {
            versions.retain(|(vid, v)| {
                order((v.created, vid.as_str()), (*created, id.as_str())).is_gt()
            });
        }
        let more = versions.len() > max;
        versions.truncate(max);
        let next = if more {
            versions
                .last()
                .map(|(id, v)| encode_token(&format!("{}|{id}", v.created)))
        } else {
            None
        };
        let kms = record
            .kms_key_id
            .clone()
            .unwrap_or_else(|| "DefaultEncryptionKey".to_string());
        Ok(sm::ListSecretVersionIdsResponse {
            versions: Some(
                versions
                    .into_iter()
                    .map(|(id, v)| sm::SecretVersionsListEntry {
                        version_id: Some(id.clone()),
                        version_stages: Some(v.stages.clone()),
                        created_date: Some(v.created),
                        kms_key_ids: Some(vec![kms.clone()]),
                        last_accessed_date: None,
                    })
                    .collect(),
            ),
            next_token: next,
            arn: Some(record.arn.clone()),
            name: Some(record.name.clone()),
        })
    }

    async fn update_stage(
        &self,
        ctx: &RequestContext,
        input: sm::UpdateSecretVersionStageRequest,
    ) -> Result<sm::UpdateSecretVersionStageResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let stage = required(&input.version_stage, "VersionStage")?.to_string();
        if stage.len() > 256 {
            return Err(validation(format!(
                "1 validation error detected: Value '{stage}' at 'versionStage' failed to \
                 satisfy constraint: Member must have length less than or equal to 256"
            )));
        }
        for (member, id) in [
            ("removeFromVersionId", &input.remove_from_version_id),
            ("moveToVersionId", &input.move_to_version_id),
        ] {
            if let Some(id) = id {
                if !(32..=64).contains(&id.len()) {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{id}' at '{member}' failed to \
                         satisfy constraint: Member must have length {}",
                        if id.len() < 32 {
                            "greater than or equal to 32"
                        } else {
                            "less than or equal to 64"
                        }
                    )));
                }
            }
        }
        let secret_id =
            self.authorize_secret(ctx, "UpdateSecretVersionStage", &secret_id, |r| {
                r.condition("secretsmanager:VersionStage", stage.clone())
            })?;
        let remove_from = input.remove_from_version_id.clone();
        let move_to = input.move_to_version_id.clone();
        let (arn, name) = self
            .modify(ctx, secret_id, move |record, now| {
                if record.deleted.is_some() {
                    return Err(marked_for_deletion());
                }
                let out = (record.arn.clone(), record.name.clone());
                for id in remove_from.iter().chain(move_to.iter()) {
                    if !record.versions.contains_key(id) {
                        return Err(invalid_parameter(format!(
                            "Secrets Manager can't find the specified secret version: {id}"
                        )));
                    }
                }
                let holder = record.version_with_stage(&stage).map(|(id, _)| id.clone());
                if let Some(rm) = &remove_from {
                    if holder.as_ref() != Some(rm) {
                        return Err(invalid_parameter(format!(
                            "The parameter RemoveFromVersionId is invalid. Staging label {stage} \
                             is not attached to version {rm}."
                        )));
                    }
                }
                match (&move_to, &holder) {
                    // Already where it should be: nothing to do.
                    (Some(mv), Some(h)) if mv == h => return Ok((false, out)),
                    (Some(_), Some(h)) if remove_from.as_ref() != Some(h) => {
                        return Err(invalid_parameter(format!(
                            "The parameter RemoveFromVersionId can't be empty. Staging label \
                             {stage} is currently attached to version {h}, so you must \
                             explicitly reference that version in RemoveFromVersionId."
                        )));
                    }
                    (None, _) if stage == AWSCURRENT && remove_from.is_some() => {
                        return Err(invalid_parameter(
                            "You can't remove the staging label AWSCURRENT from a version \
                             without attaching it to another version. Specify MoveToVersionId.",
                        ));
                    }
                    (None, _) if remove_from.is_none() => {
                        return Err(invalid_parameter(
                            "You must specify MoveToVersionId, RemoveFromVersionId, or both.",
                        ));
                    }
                    _ => {}
                }
                if let Some(target) = &move_to {
                    let labels = record.versions.get(target).map_or(0, |v| v.stages.len());
                    if labels >= 20 {
                        return Err(AwsError::bad_request(
                            "LimitExceededException",
                            "A version can have at most 20 staging labels.",
                        ));
                    }
                }
                if let Some(rm) = &remove_from {
                    if let Some(v) = record.versions.get_mut(rm) {
                        v.stages.retain(|s| *s != stage);
                    }
                }
                if let Some(target) = &move_to {
                    if stage == AWSCURRENT {
                        // The version AWSCURRENT left becomes AWSPREVIOUS.
                        for v in record.versions.values_mut() {
                            v.stages.retain(|s| s != AWSPREVIOUS);
                        }
                        if let Some(old) = remove_from
                            .as_ref()
                            .and_then(|rm| record.versions.get_mut(rm))
                        {
                            old.stages.push(AWSPREVIOUS.to_string());
                        }
                    }
                    if let Some(v) = record.versions.get_mut(target) {
                        v.stages.push(stage.clone());
                    }
                }
                record.last_changed = now;
                Ok((true, out))
            })
            .await?;
        Ok(sm::UpdateSecretVersionStageResponse {
            arn: Some(arn),
            name: Some(name),
        })
    }

    async fn batch_get(
        &self,
        ctx: &RequestContext,
        input: sm::BatchGetSecretValueRequest,
    ) -> Result<sm::BatchGetSecretValueResponse, AwsError> {
        let ids = input.secret_id_list.clone();
        let filters = input.filters.clone();
        match (&ids, &filters) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid_parameter(
                    "Either 'SecretIdList' or 'Filters' must be provided, but not both.",
                ))
            }
            _ => {}
        }
        if input.max_results.is_some() && filters.is_none() {
            return Err(invalid_parameter(
                "'Filters' not specified. 'Filters' must also be specified when 'MaxResults' is provided.",
            ));
        }
        // The call itself needs secretsmanager:BatchGetSecretValue (and, with
        // filters, secretsmanager:ListSecrets); each secret it returns must
        // pass secretsmanager:GetSecretValue on its own.
        let mut call = berth_model::authz::on("secretsmanager:BatchGetSecretValue", Vec::new());
        if filters.is_some() {
            call.push(Requirement::new("secretsmanager:ListSecrets", "*"));
        }
        ctx.authorize(&call)?;
        let may_read = |requirement: Requirement| {
            ctx.decide(&[requirement]).map_err(|denial| {
                AwsError::bad_request("AccessDeniedException", denial.message(&ctx.principal.arn))
            })
        };
        let now = now_secs() as f64;
        let entry = |r: &SecretRecord| -> Result<Result<sm::SecretValueEntry, AwsError>, AwsError> {
            let (id, version) = match select_version(r, None, None) {
                Ok(found) => found,
                Err(e) => return Ok(Err(e)),
            };
            let (secret_string, secret_binary) = value_fields(&self.keys, version)?;
            Ok(Ok(sm::SecretValueEntry {
                arn: Some(r.arn.clone()),
                name: Some(r.name.clone()),
                version_id: Some(id.clone()),
                secret_string,
                secret_binary,
                version_stages: Some(version.stages.clone()),
                created_date: Some(version.created),
            }))
        };
        let error = |secret_id: &str, e: AwsError| sm::APIErrorType {
            secret_id: Some(secret_id.to_string()),
            error_code: Some(e.code.to_string()),
            message: Some(e.message),
        };
        let mut values = Vec::new();
        let mut errors = Vec::new();
        let mut read: Vec<SecretRecord> = Vec::new();
        if let Some(ids) = ids {
            if ids.is_empty() || ids.len() > 20 {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'secretIdList' failed to satisfy \
                     constraint: Member must have length {}",
                    if ids.is_empty() {
                        "greater than or equal to 1"
                    } else {
                        "less than or equal to 20"
                    }
                )));
            }
            for id in &ids {
                let target =
                    resolve_secret(self.store.as_ref(), &ctx.account_id, &ctx.region, id, now)?;
                if let Err(denied) = may_read(target.requirement("GetSecretValue")) {
                    errors.push(error(id, denied));
                    continue;
                }
                match &target.record {
                    None => errors.push(error(id, not_found())),
                    Some(r) => match entry(r)? {
                        Ok(v) => {
                            values.push(v);
                            read.push(r.clone());
                        }
                        Err(e) => errors.push(error(id, e)),
                    },
                }
            }
            for r in &read {
                self.touch(ctx, r).await?;
            }
            return Ok(sm::BatchGetSecretValueResponse {
                secret_values: Some(values),
                next_token: None,
                errors: Some(errors),
            });
        }
        let filters = list::check_filters(filters.as_deref().unwrap_or_default())?;
        let max = page_size(input.max_results, 20)?;
        let prefix = prefix(&ctx.account_id, &ctx.region);
        let mut after = match &input.next_token {
            Some(t) => Some(
                decode_token(t)
                    .filter(|k| k.starts_with(&prefix))
                    .ok_or_else(invalid_next_token)?,
            ),
            None => None,
        };
        let mut next = None;
        let mut shown = 0;
        'scan: loop {
            let batch = self.store.range(&prefix, after.as_deref(), 256);
            if batch.is_empty() {
                break;
            }
            for kv in &batch {
                let r: SecretRecord =
                    serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?;
                let wanted = !r.purged(now)
                    && r.deleted.is_none()
                    && filters
                        .iter()
                        .all(|(k, v)| filter_matches(&r, &ctx.region, k, v));
                // Filters list only the secrets the caller may read.
                let wanted = wanted
                    && may_read(secret_requirement("GetSecretValue", &r.arn, &r.tags)).is_ok();
                if wanted && shown == max {
                    next = after.as_deref().map(encode_token);
                    break 'scan;
                }
                after = Some(kv.key.clone());
                if !wanted {
                    continue;
                }
                shown += 1;
                match entry(&r)? {
                    Ok(v) => {
                        values.push(v);
                        read.push(r);
                    }
                    Err(e) => errors.push(error(&r.name, e)),
                }
            }
        }
        for r in &read {
            self.touch(ctx, r).await?;
        }
        Ok(sm::BatchGetSecretValueResponse {
            secret_values: Some(values),
            next_token: next,
            errors: Some(errors),
        })
    }
}

/// Checks a resource policy's text: JSON 1 to 20,480 characters that parses
/// as a resource-based policy (every statement names a principal).
fn check_resource_policy(policy: &str) -> Result<(), AwsError> {
    if policy.chars().count() > 20480 {
        return Err(validation(
            "1 validation error detected: Value at 'resourcePolicy' failed to satisfy \
             constraint: Member must have length less than or equal to 20480",
        ));
    }
    berth_policy::Policy::parse_resource(policy).map_err(|e| {
        AwsError::bad_request(
            "MalformedPolicyDocumentException",
            format!("The resource policy has syntax errors: {e}"),
        )
    })?;
    Ok(())
}

/// Condition keys that narrow who a statement applies to, so that a
/// wildcard principal with one of them is not broad access (as Secrets
/// Manager's check treats an account, organization, source or network
/// restriction).
const NARROWING_KEYS: [&str; 13] = [
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceowner",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceip",
    "aws:userid",
    "aws:username",
    "aws:principalservicename",
];

/// Whether a resource policy allows a wide range of principals: an Allow
/// statement whose principal is `*` (or `{"AWS": "*"}`), or that uses
/// NotPrincipal, with no condition narrowing the principal.
fn is_public_policy(policy: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(policy) else {
        return false;
    };
    let statements = match doc.get("Statement") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(one) => vec![one.clone()],
        None => Vec::new(),
    };
    let wildcard = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s == "*",
        serde_json::Value::Array(items) => items.iter().any(|i| i.as_str() == Some("*")),
        _ => false,
    };
    let narrowed = |s: &serde_json::Value| {
        s.get("Condition")
            .and_then(|c| c.as_object())
            .is_some_and(|operators| {
                operators.values().any(|block| {
                    block.as_object().is_some_and(|keys| {
                        keys.keys()
                            .any(|k| NARROWING_KEYS.contains(&k.to_ascii_lowercase().as_str()))
                    })
                })
            })
    };
    statements.iter().any(|s| {
        let broad = s.get("NotPrincipal").is_some()
            || match s.get("Principal") {
                Some(p @ serde_json::Value::String(_)) => wildcard(p),
                Some(serde_json::Value::Object(m)) => m.get("AWS").is_some_and(wildcard),
                _ => false,
            };
        s.get("Effect").and_then(|e| e.as_str()) == Some("Allow") && broad && !narrowed(s)
    })
}

/// The caller as the policy engine names principals, or `None` for callers
/// no resource policy names (Berth's agents).
fn caller(ctx: &RequestContext) -> Option<berth_policy::PrincipalRef> {
    let p = &ctx.principal;
    let account = &p.account_id;
    match p.kind {
        berth_model::PrincipalKind::Root => Some(berth_policy::PrincipalRef::root(account)),
        berth_model::PrincipalKind::User => {
            let rest = p.arn.split_once(":user/")?.1;
            let (path, name) = match rest.rsplit_once('/') {
                Some((path, name)) => (format!("/{path}/"), name),
                None => ("/".to_string(), rest),
            };
            Some(berth_policy::PrincipalRef::user(
                account, &path, name, &p.user_id,
            ))
        }
        berth_model::PrincipalKind::AssumedRole => {
            let rest = p.arn.split_once(":assumed-role/")?.1;
            let (role, session) = rest.split_once('/')?;
            let role_id = p.user_id.split(':').next().unwrap_or_default();
            Some(berth_policy::PrincipalRef::assumed_role(
                account, "/", role, session, role_id,
            ))
        }
        berth_model::PrincipalKind::Agent => None,
    }
}

/// Whether `policy` would refuse the caller the right to change it again
/// (an explicit Deny of PutResourcePolicy or DeleteResourcePolicy on the
/// secret): Secrets Manager's lock-out check.
fn locks_out(ctx: &RequestContext, policy: &str, secret_arn: &str) -> bool {
    let (Ok(doc), Some(principal)) = (berth_policy::Policy::parse_resource(policy), caller(ctx))
    else {
        return false;
    };
    let context = berth_policy::Context::new();
    ["PutResourcePolicy", "DeleteResourcePolicy"]
        .iter()
        .any(|operation| {
            let action = format!("secretsmanager:{operation}");
            let request = berth_policy::Request::new(&principal, &action, secret_arn, &context);
            matches!(
                berth_policy::evaluate(&[], Some(&doc), &request),
                berth_policy::Decision::ExplicitDeny(_)
            )
        })
}

fn public_policy() -> AwsError {
    AwsError::bad_request(
        "PublicPolicyException",
        "The BlockPublicPolicy parameter is set to true, and the resource policy did not \
         prevent broad access to the secret.",
    )
}

impl SecretsManagerService {
    async fn put_policy(
        &self,
        ctx: &RequestContext,
        input: sm::PutResourcePolicyRequest,
    ) -> Result<sm::PutResourcePolicyResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let policy = required(&input.resource_policy, "ResourcePolicy")?.to_string();
        check_resource_policy(&policy)?;
        let block = input.block_public_policy.unwrap_or(false);
        let secret_id = self.authorize_secret(ctx, "PutResourcePolicy", &secret_id, |r| {
            r.condition("secretsmanager:BlockPublicPolicy", block.to_string())
        })?;
        if block && is_public_policy(&policy) {
            return Err(public_policy());
        }
        let (arn, name) = self
            .modify(ctx, secret_id, move |record, now| {
                if record.deleted.is_some() {
                    return Err(marked_for_deletion());
                }
                record.resource_policy = Some(policy.clone());
                record.last_changed = now;
                Ok((true, (record.arn.clone(), record.name.clone())))
            })
            .await?;
        Ok(sm::PutResourcePolicyResponse {
            arn: Some(arn),
            name: Some(name),
            ..Default::default()
        })
    }

    fn get_policy(
        &self,
        ctx: &RequestContext,
        input: sm::GetResourcePolicyRequest,
    ) -> Result<sm::GetResourcePolicyResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        let target = self.target(ctx, secret_id)?;
        ctx.authorize(&[target.requirement("GetResourcePolicy")])?;
        let record = target.record.ok_or_else(not_found)?;
        Ok(sm::GetResourcePolicyResponse {
            arn: Some(record.arn),
            name: Some(record.name),
            resource_policy: record.resource_policy,
            ..Default::default()
        })
    }

    async fn delete_policy(
        &self,
        ctx: &RequestContext,
        input: sm::DeleteResourcePolicyRequest,
    ) -> Result<sm::DeleteResourcePolicyResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let secret_id = self.authorize_secret(ctx, "DeleteResourcePolicy", &secret_id, |r| r)?;
        let (arn, name) = self
            .modify(ctx, secret_id, |record, now| {
                let write = record.resource_policy.take().is_some();
                if write {
                    record.last_changed = now;
                }
                Ok((write, (record.arn.clone(), record.name.clone())))
            })
            .await?;
        Ok(sm::DeleteResourcePolicyResponse {
            arn: Some(arn),
            name: Some(name),
            ..Default::default()
        })
    }

    fn validate_policy(
        &self,
        ctx: &RequestContext,
        input: sm::ValidateResourcePolicyRequest,
    ) -> Result<sm::ValidateResourcePolicyResponse, AwsError> {
        let policy = required(&input.resource_policy, "ResourcePolicy")?;
        // The secret is optional; without one the call concerns no resource.
        let secret_arn = match input.secret_id.as_deref().filter(|s| !s.is_empty()) {
            Some(secret_id) => {
                let target = self.target(ctx, secret_id)?;
                ctx.authorize(&[
                    target.requirement("ValidateResourcePolicy"),
                    target.requirement("PutResourcePolicy"),
                ])?;
                target.record.ok_or_else(not_found)?.arn
            }
            None => {
                ctx.authorize(&[
                    Requirement::new("secretsmanager:ValidateResourcePolicy", "*"),
                    Requirement::new("secretsmanager:PutResourcePolicy", "*"),
                ])?;
                ctx.arn("secretsmanager", "secret:*")
            }
        };
        // The syntax check: a policy that does not parse is refused outright.
        check_resource_policy(policy)?;
        let mut errors = Vec::new();
        if is_public_policy(policy) {
            errors.push(sm::ValidationErrorsEntry {
                check_name: None,
                error_message: Some(
                    "The resource policy grants a wide range of principals access to the \
                     secret: a statement allows Principal \"*\" (or uses NotPrincipal) without \
                     a condition limiting it to an account, organization, source or network."
                        .to_string(),
                ),
            });
        }
        if locks_out(ctx, policy, &secret_arn) {
            errors.push(sm::ValidationErrorsEntry {
                check_name: None,
                error_message: Some(format!(
                    "The resource policy would lock you out: it denies {} \
                     secretsmanager:PutResourcePolicy or secretsmanager:DeleteResourcePolicy on \
                     the secret, so you could not change or remove it.",
                    ctx.principal.arn
                )),
            });
        }
        Ok(sm::ValidateResourcePolicyResponse {
            policy_validation_passed: Some(errors.is_empty()),
            validation_errors: Some(errors),
        })
    }

    fn list_policies(
        &self,
        ctx: &RequestContext,
        input: sm::ListResourcePoliciesRequest,
    ) -> Result<sm::ListResourcePoliciesResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        page_size(input.max_results, 100)?;
        // A secret has one policy at most, so no list has a second page.
        if input.next_token.is_some() {
            return Err(invalid_next_token());
        }
        let target = self.target(ctx, secret_id)?;
        ctx.authorize(&[target.requirement("ListResourcePolicies")])?;
        let record = target.record.ok_or_else(not_found)?;
        Ok(sm::ListResourcePoliciesResponse {
            resource_policies: Some(
                record
                    .resource_policy
                    .iter()
                    .map(|_| sm::ResourcePolicySummary {
                        policy_name: Some("default".to_string()),
                    })
                    .collect(),
            ),
            next_token: None,
        })
    }
}
