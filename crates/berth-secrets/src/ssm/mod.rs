//! AWS Systems Manager Parameter Store (`AmazonSSM`, JSON 1.1): parameters,
//! their versions, labels, tags, policies and resource policies, and
//! Parameter Store's service settings. The rest of Systems Manager manages
//! nodes Berth does not have; those operations answer why (see
//! [`NOT_IMPLEMENTED`]).
//!
//! Store layout: `/ssm/<account>/<region>/params/<name>` holds one
//! [`ParamRecord`] with the parameter's recent versions. SecureString values
//! are sealed with the master key; String and StringList values are stored as
//! given, as they are not secret in AWS either.
//!
//! Names: a one-level name is the same parameter with or without its leading
//! `/` (`/x` and `x`), as in Parameter Store; it is stored under the name
//! without it and answers with the name it was created with. A hierarchical
//! name starts with `/` and has at most 15 levels.

use std::sync::Arc;

use berth_model::shapes::ssm;
use berth_model::{AwsError, JsonService, RequestContext};
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::authz::{resolve_parameter, ParamTarget};
use crate::common::{corrupt, decode_token, encode_token, page_size, store_error, validation};
use crate::crypto::{MasterKey, Sealed};

mod data_types;
mod filters;
pub mod policies;
mod resource_policy;
mod settings;
mod unsupported;

pub use policies::spawn_parameter_expiry;
pub use resource_policy::combined as combined_resource_policy;
pub use unsupported::NOT_IMPLEMENTED;

pub const STRING: &str = "String";
pub const STRING_LIST: &str = "StringList";
pub const SECURE_STRING: &str = "SecureString";
pub(crate) const DEFAULT_KEY_ID: &str = "alias/aws/ssm";
/// AWS keeps a parameter's last 100 versions.
const MAX_HISTORY: usize = 100;

/// A parameter as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamRecord {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub tier: String,
    pub data_type: String,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Oldest first; never empty.
    pub versions: Vec<ParamVersion>,
    /// Resource policies (PutResourcePolicy), which take part in IAM
    /// decisions on the parameter.
    #[serde(default)]
    pub resource_policies: Vec<resource_policy::StoredPolicy>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamVersion {
    pub version: i64,
    pub r#type: String,
    #[serde(default)]
    pub key_id: Option<String>,
    pub value: StoredValue,
    pub modified: f64,
    pub user: String,
    #[serde(default)]
    pub labels: Vec<String>,
    /// The regular expression values must match (AllowedPattern); a new
    /// version keeps the previous one's unless the request gives one.
    #[serde(default)]
    pub allowed_pattern: Option<String>,
    /// The parameter's policies as of this version; likewise inherited.
    #[serde(default)]
    pub policies: Vec<policies::ParamPolicy>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StoredValue {
    Plain(String),
    Sealed(Sealed),
}

impl ParamRecord {
    /// When the parameter's Expiration policy deletes it (epoch seconds).
    pub fn expires_at(&self) -> Option<i64> {
        self.versions
            .last()
            .and_then(|v| policies::expiry(&v.policies))
    }

    fn latest(&self) -> Result<&ParamVersion, AwsError> {
        self.versions.last().ok_or_else(|| corrupt(&self.name))
    }

    /// The version a selector (`""`, a version number or a label) names.
    fn select(&self, selector: &str) -> Result<&ParamVersion, AwsError> {
        if selector.is_empty() {
            return self.latest();
        }
        let found = match selector.parse::<i64>() {
            Ok(n) => self.versions.iter().find(|v| v.version == n),
            Err(_) => self
                .versions
                .iter()
                .find(|v| v.labels.iter().any(|l| l == selector)),
        };
        found.ok_or_else(|| {
            AwsError::bad_request(
                "ParameterVersionNotFound",
                format!(
                    "Systems Manager could not find version {selector} of {}. \
                     Verify the version and try again.",
                    self.name
                ),
            )
        })
    }
}

pub fn prefix(account: &str, region: &str) -> String {
    format!("/ssm/{account}/{region}/params/")
}

/// The name a parameter is stored under: a one-level name without its
/// leading `/` (`/x` and `x` are one parameter), any other name as given.
pub fn storage_name(name: &str) -> &str {
    match name.strip_prefix('/') {
        Some(bare) if !bare.contains('/') => bare,
        _ => name,
    }
}

/// The store writes that replace `before` with `after` at `key` (either may
/// be absent), keeping the Expiration index in step.
fn record_ops(
    account: &str,
    region: &str,
    key: &str,
    before: Option<&ParamRecord>,
    after: Option<&ParamRecord>,
) -> Result<Vec<Op>, AwsError> {
    let name = &key[prefix(account, region).len()..];
    let mut ops = policies::index_ops(
        account,
        region,
        name,
        before.and_then(ParamRecord::expires_at),
        after.and_then(ParamRecord::expires_at),
    );
    match after {
        Some(record) => {
            let bytes = serde_json::to_vec(record).map_err(|_| corrupt(key))?;
            ops.push(Op::put(key, bytes));
        }
        None => ops.push(Op::delete(key)),
    }
    Ok(ops)
}

pub fn parameter_arn(account: &str, region: &str, name: &str) -> String {
    berth_model::arn::ssm_parameter_arn(region, account, name)
}

fn not_found(name: &str) -> AwsError {
    AwsError::bad_request("ParameterNotFound", format!("Parameter {name} not found."))
}

/// An SSM operation Berth does not implement: why, never a fake success.
fn unsupported(operation: &str) -> AwsError {
    let why = unsupported::reason(operation)
        .unwrap_or("Berth implements Parameter Store only within Systems Manager.");
    AwsError::bad_request(
        "UnsupportedOperationException",
        format!("Berth does not implement the Systems Manager operation {operation}: {why}"),
    )
}

/// A parameter reference split into account, region, name and selector:
/// `name`, `name:selector`, or the parameter's ARN (with an optional selector).
pub fn parse_reference<'a>(
    account: &'a str,
    region: &'a str,
    reference: &'a str,
) -> Result<(&'a str, &'a str, String, &'a str), AwsError> {
    let (own_account, own_region) = (account, region);
    let (account, region, rest) = if reference.starts_with("arn:") {
        let parts: Vec<&str> = reference.splitn(6, ':').collect();
        match parts.as_slice() {
            [_, _, "ssm", r, a, rest] => match rest.strip_prefix("parameter") {
                Some(name) if name.starts_with('/') => (*a, *r, name),
                _ => return Err(validation(format!("{reference} is not a parameter ARN."))),
            },
            _ => return Err(validation(format!("{reference} is not a parameter ARN."))),
        }
    } else {
        (account, region, reference)
    };
    let (name, selector) = rest.rsplit_once(':').unwrap_or((rest, ""));
    // Only the caller's own account and region: Berth has no cross-account
    // sharing, so another account's ARN finds nothing.
    if reference.starts_with("arn:") && (account != own_account || region != own_region) {
        return Err(not_found(name));
    }
    Ok((account, region, name.to_string(), selector))
}

/// Reads a parameter by name (with or without the leading `/` of a
/// one-level name). Answers its store key and record.
pub fn find_param<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    name: &str,
) -> Result<Option<(String, ParamRecord)>, AwsError> {
    let prefix = prefix(account, region);
    let stored = storage_name(name);
    let mut keys = vec![format!("{prefix}{stored}")];
    // Data directories from before one-level names were stored without
    // their `/` keep them under `/x`.
    if !stored.starts_with('/') {
        keys.push(format!("{prefix}/{stored}"));
    }
    for key in keys {
        if let Some(kv) = view.get(&key) {
            let record = serde_json::from_slice(&kv.value).map_err(|_| corrupt(&key))?;
            return Ok(Some((key, record)));
        }
    }
    Ok(None)
}

/// Checks a new parameter's name as Parameter Store does: letters, digits
/// and `_.-`, with `/` between the levels of a hierarchy (which must start
/// with `/`, at most 15 levels); not prefixed with `aws` or `ssm`; at most
/// 1011 characters counting the ARN before it.
fn check_name(ctx: &RequestContext, name: &str) -> Result<(), AwsError> {
    let bad = || {
        validation(
            "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). \
             If formed as a path, it can consist of sub-paths divided by slash symbol; each \
             sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_",
        )
    };
    if name.is_empty() || name.chars().count() > 2048 {
        return Err(validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: \
             Member must have length {}",
            if name.is_empty() {
                "greater than or equal to 1"
            } else {
                "less than or equal to 2048"
            }
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
    {
        return Err(bad());
    }
    let hierarchical = name.trim_start_matches('/').contains('/');
    let first = name.trim_start_matches('/').to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        if hierarchical && first.starts_with("aws") {
            return Err(AwsError::bad_request(
                "AccessDeniedException",
                format!("No access to reserved parameter name: {name}."),
            ));
        }
        return Err(validation(if hierarchical {
            "Parameter name: can't be prefixed with \"ssm\" (case-insensitive). If formed as a \
             path, it can consist of sub-paths divided by slash symbol; each sub-path can be \
             formed as a mix of letters, numbers and the following 3 symbols .-_"
        } else {
            "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive)."
        }));
    }
    if hierarchical {
        if !name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(bad());
        }
        if name.matches('/').count() > 15 {
            return Err(AwsError::bad_request(
                "HierarchyLevelLimitExceededException",
                "A hierarchy can have a maximum of 15 levels. For more information, see \
                 Requirements and constraints for parameter names in the Amazon Web Services \
                 Systems Manager User Guide.",
            ));
        }
    } else if name == "/" {
        return Err(bad());
    }
    // 1011 characters, counting `arn:aws:ssm:<region>:<account>:parameter/`.
    let arn = parameter_arn(&ctx.account_id, &ctx.region, name);
    if arn.chars().count() > 1011 {
        return Err(validation(format!(
            "Parameter name {name} is too long: a parameter's name can be at most 1011 \
             characters including the ARN before it ({} here).",
            arn.chars().count() - name.trim_start_matches('/').chars().count()
        )));
    }
    Ok(())
}

/// The SSM service (Parameter Store operations).
pub struct SsmService {
    store: Arc<dyn Store>,
    keys: Arc<MasterKey>,
}

impl SsmService {
    pub fn new(store: Arc<dyn Store>, keys: Arc<MasterKey>) -> Self {
        SsmService { store, keys }
    }

    /// The parameter `reference` names, resolved for authorization.
    fn target(&self, ctx: &RequestContext, reference: &str) -> Result<ParamTarget, AwsError> {
        resolve_parameter(self.store.as_ref(), &ctx.account_id, &ctx.region, reference)
    }

    /// Asks IAM for `ssm:<operation>` on each parameter `references` names
    /// (once per parameter).
    fn authorize_each(
        &self,
        ctx: &RequestContext,
        operation: &str,
        references: &[String],
    ) -> Result<(), AwsError> {
        let mut requirements: Vec<berth_model::authz::Requirement> = Vec::new();
        for reference in references {
            let requirement = self.target(ctx, reference)?.requirement(operation);
            if !requirements
                .iter()
                .any(|r| r.resource == requirement.resource)
            {
                requirements.push(requirement);
            }
        }
        ctx.authorize(&requirements)
    }
}

use berth_model::json_op as op;

#[async_trait::async_trait]
impl JsonService for SsmService {
    fn target_prefix(&self) -> &'static str {
        ssm::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        ssm::SIGNING_NAME
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        match operation {
            "PutParameter" => op!(body, |i| self.put(ctx, i).await),
            "GetParameter" => op!(body, |i| self.get(ctx, i)),
            "GetParameters" => op!(body, |i| self.get_many(ctx, i)),
            "GetParametersByPath" => op!(body, |i| self.by_path(ctx, i)),
            "DeleteParameter" => op!(body, |i| self.delete(ctx, i).await),
            "DeleteParameters" => op!(body, |i| self.delete_many(ctx, i).await),
            "DescribeParameters" => op!(body, |i| self.describe(ctx, i)),
            "GetParameterHistory" => op!(body, |i| self.history(ctx, i)),
            "LabelParameterVersion" => op!(body, |i| self.label(ctx, i).await),
            "UnlabelParameterVersion" => op!(body, |i| self.unlabel(ctx, i).await),
            "AddTagsToResource" => op!(body, |i| self.add_tags(ctx, i).await),
            "RemoveTagsFromResource" => op!(body, |i| self.remove_tags(ctx, i).await),
            "ListTagsForResource" => op!(body, |i| self.list_tags(ctx, i)),
            "GetServiceSetting" => op!(body, |i| self.get_setting(ctx, i)),
            "UpdateServiceSetting" => op!(body, |i| self.update_setting(ctx, i).await),
            "ResetServiceSetting" => op!(body, |i| self.reset_setting(ctx, i).await),
            "PutResourcePolicy" => op!(body, |i| self.put_resource_policy(ctx, i).await),
            "GetResourcePolicies" => op!(body, |i| self.get_resource_policies(ctx, i)),
            "DeleteResourcePolicy" => op!(body, |i| self.delete_resource_policy(ctx, i).await),
            other if ssm::OPERATIONS.contains(&other) => Err(unsupported(other)),
            other => Err(AwsError::unknown_operation(format!(
                "Systems Manager has no operation named '{other}'."
            ))),
        }
    }
}

/// What a read shows of a version. Without decryption a SecureString shows its
/// ciphertext, as AWS does.
fn render(
    keys: &MasterKey,
    account: &str,
    region: &str,
    record: &ParamRecord,
    version: &ParamVersion,
    decrypt: bool,
    selector: Option<String>,
) -> Result<ssm::Parameter, AwsError> {
    let value = match &version.value {
        StoredValue::Plain(v) => v.clone(),
        StoredValue::Sealed(sealed) if decrypt => {
            let plain = crate::secretsmanager::open(keys, sealed)?;
            String::from_utf8(plain).map_err(|_| corrupt(&record.name))?
        }
        StoredValue::Sealed(sealed) => sealed.opaque(),
    };
    Ok(ssm::Parameter {
        name: Some(record.name.clone()),
        r#type: Some(version.r#type.clone()),
        value: Some(value),
        version: Some(version.version),
        selector,
        last_modified_date: Some(version.modified),
        arn: Some(parameter_arn(account, region, &record.name)),
        data_type: Some(record.data_type.clone()),
        ..Default::default()
    })
}

/// The plaintext of a version, for the agent-side resolver.
pub fn plaintext(
    keys: &MasterKey,
    record: &ParamRecord,
    version: &ParamVersion,
) -> Result<String, AwsError> {
    match &version.value {
        StoredValue::Plain(v) => Ok(v.clone()),
        StoredValue::Sealed(sealed) => {
            let plain = crate::secretsmanager::open(keys, sealed)?;
            String::from_utf8(plain).map_err(|_| corrupt(&record.name))
        }
    }
}

/// Looks up `reference` (name, `name:selector` or ARN) and picks the version.
pub fn lookup<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    reference: &str,
) -> Result<(ParamRecord, i64, Option<String>), AwsError> {
    let (a, r, name, selector) = parse_reference(account, region, reference)?;
    let (_, record) = find_param(view, a, r, &name)?.ok_or_else(|| not_found(&name))?;
    let version = record.select(selector)?.version;
    let selector = (!selector.is_empty()).then(|| format!(":{selector}"));
    Ok((record, version, selector))
}

impl SsmService {
    async fn put(
        &self,
        ctx: &RequestContext,
        input: ssm::PutParameterRequest,
    ) -> Result<ssm::PutParameterResult, AwsError> {
        let name = input.name.clone().unwrap_or_default();
        check_name(ctx, &name)?;
        let value = input.value.clone().unwrap_or_default();
        if value.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '' at 'value' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1.",
            ));
        }
        if let Some(tier) = &input.tier {
            if !filters::TIERS.contains(&tier.as_str()) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{tier}' at 'tier' failed to satisfy \
                     constraint: Member must satisfy enum value set: [Standard, Advanced, \
                     Intelligent-Tiering]"
                )));
            }
        }
        if let Some(t) = &input.r#type {
            if ![STRING, STRING_LIST, SECURE_STRING].contains(&t.as_str()) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{t}' at 'type' failed to satisfy \
                     constraint: Member must satisfy enum value set: [SecureString, StringList, String]"
                )));
            }
        }
        if let Some(k) = &input.key_id {
            let ok = !k.is_empty()
                && k.len() <= 256
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b));
            if !ok {
                return Err(validation(format!(
                    "1 validation error detected: Value '{k}' at 'keyId' failed to satisfy \
                     constraint: Member must satisfy regular expression pattern: \
                     ^([a-zA-Z0-9:/_-]+)$"
                )));
            }
        }
        if input
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024)
        {
            return Err(validation(
                "1 validation error detected: Value at 'description' failed to satisfy \
                 constraint: Member must have length less than or equal to 1024",
            ));
        }
        let overwrite = input.overwrite.unwrap_or(false);
        let tags = check_ssm_tags(input.tags.as_deref().unwrap_or_default())?;
        if overwrite && !tags.is_empty() {
            return Err(validation(
                "Invalid request: tags and overwrite can't be used together. To create a parameter \
                 with tags, please remove overwrite flag. To update tags for an existing parameter, \
                 please use AddTagsToResource or RemoveTagsFromResource.",
            ));
        }
        if tags.len() > MAX_TAGS {
            return Err(too_many_tags());
        }
        let pattern = match &input.allowed_pattern {
            Some(p) => Some(compile_pattern(p)?),
            None => None,
        };
        let now_secs = berth_util::time::now_secs();
        let new_policies = match &input.policies {
            Some(text) => Some(policies::parse(text, now_secs)?),
            None => None,
        };
        if let Some(dt) = &input.data_type {
            data_types::check_known(dt)?;
        }
        let explicit_tier = input.tier.clone();
        let requested_tier = explicit_tier.clone().unwrap_or_else(|| {
            settings::default_tier(self.store.as_ref(), &ctx.account_id, &ctx.region)
        });
        let requirement = self
            .target(ctx, &name)?
            .requirement("PutParameter")
            .condition("ssm:Overwrite", overwrite.to_string())
            .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ctx.authorize(&[requirement])?;
        // Seal outside the mutation: the type may come from the existing
        // parameter, so seal whenever it could be a SecureString and drop the
        // ciphertext if it turns out not to be.
        let sealed = self
            .keys
            .seal(value.as_bytes())
            .map_err(|_| AwsError::internal("An internal error occurred."))?;
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let user = ctx.principal.arn.clone();
        let result =
            self.store
                .update(move |view| {
                    let now = berth_util::time::now_epoch();
                    let existing = find_param(view, &account, &region, &name)?;
                    let key = match &existing {
                        Some((key, _)) => key.clone(),
                        None => format!("{}{}", prefix(&account, &region), storage_name(&name)),
                    };
                    let before = existing.as_ref().map(|(_, r)| r.clone());
                    let mut record =
                        match existing {
                            Some(_) if !overwrite => return Err(AwsError::bad_request(
                                "ParameterAlreadyExists",
                                "The parameter already exists. To overwrite this value, set the \
                             overwrite option in the request to true.",
                            )),
                            Some((_, mut r)) => {
                                if input.description.is_some() {
                                    r.description = input.description.clone();
                                }
                                r
                            }
                            None => {
                                if input.r#type.is_none() {
                                    return Err(validation(
                                        "A parameter type is required when you create a parameter.",
                                    ));
                                }
                                ParamRecord {
                                    name: name.clone(),
                                    description: input.description.clone(),
                                    tier: "Standard".to_string(),
                                    data_type: data_types::TEXT.to_string(),
                                    tags: tags.clone(),
                                    versions: Vec::new(),
                                    resource_policies: Vec::new(),
                                }
                            }
                        };
                    let created = before.is_none();
                    let previous = record.versions.last().cloned();
                    let r#type = match (&input.r#type, &previous) {
                        (Some(t), _) => t.clone(),
                        (None, Some(p)) => p.r#type.clone(),
                        (None, None) => STRING.to_string(),
                    };
                    let secure = r#type == SECURE_STRING;
                    if input.key_id.is_some() && !secure {
                        return Err(validation(
                            "KeyId is required for SecureString type parameter only.",
                        ));
                    }
                    let key_id = if secure {
                        input
                            .key_id
                            .clone()
                            .or_else(|| previous.as_ref().and_then(|p| p.key_id.clone()))
                            .or_else(|| Some(DEFAULT_KEY_ID.to_string()))
                    } else {
                        None
                    };
                    let data_type = input
                        .data_type
                        .clone()
                        .unwrap_or_else(|| record.data_type.clone());
                    if !created {
                        data_types::check_change(&record.name, &record.data_type, &data_type)?;
                    }
                    data_types::check_value(&record.name, &r#type, &data_type, &value)?;
                    let allowed_pattern = match &pattern {
                        Some((text, _)) => Some(text.clone()),
                        None => previous.as_ref().and_then(|p| p.allowed_pattern.clone()),
                    };
                    if let Some(text) = &allowed_pattern {
                        let matches = match &pattern {
                            Some((_, re)) => re.is_match(&value),
                            None => compile_pattern(text)?.1.is_match(&value),
                        };
                        if !matches {
                            return Err(AwsError::bad_request(
                                "ParameterPatternMismatchException",
                                format!(
                                    "Parameter value, cannot be validated against allowedPattern: \
                                 {text}"
                                ),
                            ));
                        }
                    }
                    let version_policies = match &new_policies {
                        Some(p) => p.clone(),
                        None => previous
                            .as_ref()
                            .map(|p| p.policies.clone())
                            .unwrap_or_default(),
                    };
                    let tier = resolve_tier(
                        &record.name,
                        (!created).then_some(record.tier.as_str()),
                        &requested_tier,
                        explicit_tier.is_some(),
                        value.chars().count(),
                        !version_policies.is_empty(),
                        &data_type,
                    )?;
                    record.tier = tier;
                    record.data_type = data_type;
                    let version = previous.as_ref().map_or(0, |p| p.version) + 1;
                    record.versions.push(ParamVersion {
                        version,
                        r#type,
                        key_id,
                        value: if secure {
                            StoredValue::Sealed(sealed.clone())
                        } else {
                            StoredValue::Plain(value.clone())
                        },
                        modified: now,
                        user: user.clone(),
                        labels: Vec::new(),
                        allowed_pattern,
                        policies: version_policies,
                    });
                    if record.versions.len() > MAX_HISTORY {
                        let excess = record.versions.len() - MAX_HISTORY;
                        // AWS refuses to drop a labelled version to make room.
                        if let Some(v) = record.versions[..excess]
                            .iter()
                            .find(|v| !v.labels.is_empty())
                        {
                            return Err(AwsError::bad_request(
                                "ParameterMaxVersionLimitExceeded",
                                format!(
                                "You attempted to create a new version of {name} by calling the \
                                 PutParameter API with the overwrite flag. Version {}, the oldest \
                                 version, can't be deleted because it has a label associated with \
                                 it. Move the label to another version of the parameter, and try \
                                 again.",
                                v.version
                            ),
                            ));
                        }
                        record.versions.drain(..excess);
                    }
                    let ops = record_ops(&account, &region, &key, before.as_ref(), Some(&record))?;
                    Ok((ops, (version, record.tier.clone())))
                })
                .await
                .map_err(store_error)?;
        let (_, (version, tier)) = result?;
        Ok(ssm::PutParameterResult {
            version: Some(version),
            tier: Some(tier),
        })
    }

    fn get(
        &self,
        ctx: &RequestContext,
        input: ssm::GetParameterRequest,
    ) -> Result<ssm::GetParameterResult, AwsError> {
        let reference = input.name.clone().unwrap_or_default();
        if reference.is_empty() {
            return Err(validation("Name is required."));
        }
        let decrypt = input.with_decryption.unwrap_or(false);
        ctx.authorize(&[self.target(ctx, &reference)?.requirement("GetParameter")])?;
        let (record, version, selector) = lookup(
            self.store.as_ref(),
            &ctx.account_id,
            &ctx.region,
            &reference,
        )?;
        let v = record.select(&version.to_string())?;
        Ok(ssm::GetParameterResult {
            parameter: Some(render(
                &self.keys,
                &ctx.account_id,
                &ctx.region,
                &record,
                v,
                decrypt,
                selector,
            )?),
        })
    }

    fn get_many(
        &self,
        ctx: &RequestContext,
        input: ssm::GetParametersRequest,
    ) -> Result<ssm::GetParametersResult, AwsError> {
        let names = input.names.clone().unwrap_or_default();
        if names.is_empty() || names.len() > 10 {
            return Err(validation(
                "Names must hold between 1 and 10 parameter names.",
            ));
        }
        let decrypt = input.with_decryption.unwrap_or(false);
        // Every parameter named must be readable, or the call is refused.
        self.authorize_each(ctx, "GetParameters", &names)?;
        let mut parameters = Vec::new();
        let mut invalid = Vec::new();
        for reference in names {
            match lookup(
                self.store.as_ref(),
                &ctx.account_id,
                &ctx.region,
                &reference,
            ) {
                Ok((record, version, selector)) => {
                    let v = record.select(&version.to_string())?;
                    parameters.push(render(
                        &self.keys,
                        &ctx.account_id,
                        &ctx.region,
                        &record,
                        v,
                        decrypt,
                        selector,
                    )?);
                }
                Err(e) if e.code == "ParameterNotFound" || e.code == "ParameterVersionNotFound" => {
                    invalid.push(reference)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ssm::GetParametersResult {
            parameters: Some(parameters),
            invalid_parameters: Some(invalid),
        })
    }

    fn by_path(
        &self,
        ctx: &RequestContext,
        input: ssm::GetParametersByPathRequest,
    ) -> Result<ssm::GetParametersByPathResult, AwsError> {
        let path = input.path.clone().unwrap_or_default();
        let path_ok = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if !path.starts_with('/') || path.contains("//") || !path_ok {
            return Err(validation(
                "The parameter doesn't meet the parameter name requirements. The parameter name \
                 must begin with a forward slash \"/\". It can't be prefixed with \"aws\" or \
                 \"ssm\" (case-insensitive). It must use only letters, numbers, or the following \
                 symbols: . (period), - (hyphen), _ (underscore). Special characters are not \
                 allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". \
                 Valid example: /get/parameters2-/by1./path0_.",
            ));
        }
        if path.matches('/').count() > 15 {
            return Err(AwsError::bad_request(
                "HierarchyLevelLimitExceededException",
                "A hierarchy can have a maximum of 15 levels.",
            ));
        }
        let max = match input.max_results {
            None => 10,
            Some(n) if (1..=10).contains(&n) => n as usize,
            Some(n) => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
                     constraint: Member must have value {}",
                    if n < 1 {
                        "greater than or equal to 1"
                    } else {
                        "less than or equal to 10"
                    }
                )))
            }
        };
        let filters = filters::parse_parameter_filters(
            input.parameter_filters.as_deref().unwrap_or_default(),
            filters::Operation::GetParametersByPath,
        )?;
        let recursive = input.recursive.unwrap_or(false);
        let decrypt = input.with_decryption.unwrap_or(false);
        // As AWS: the path's ARN decides, for every parameter under it.
        ctx.authorize(&[berth_model::authz::Requirement::new(
            "ssm:GetParametersByPath",
            parameter_arn(&ctx.account_id, &ctx.region, &path),
        )
        .condition("ssm:Recursive", recursive.to_string())])?;
        let base = prefix(&ctx.account_id, &ctx.region);
        let labels = filters::labels(&filters).map(<[String]>::to_vec);
        // The version shown: the one a Label filter names, else the latest.
        let shown = |r: &ParamRecord| -> Option<ParamVersion> {
            match &labels {
                Some(labels) => r
                    .versions
                    .iter()
                    .find(|v| v.labels.iter().any(|l| labels.contains(l)))
                    .cloned(),
                None => r.versions.last().cloned(),
            }
        };
        let keep = |rest: &str, r: &ParamRecord| -> bool {
            shown(r).is_some_and(|v| filters.iter().all(|f| f.matches(r, &v)))
                && (recursive || !rest.trim_start_matches('/').contains('/'))
        };
        // `/` holds the one-level names (stored without their `/`) and,
        // recursively, everything; any other path the names below it.
        let scan = if path == "/" {
            base
        } else {
            format!("{base}{}/", path.trim_end_matches('/'))
        };
        let (records, next) = self.scan(&scan, input.next_token.as_deref(), max, keep)?;
        let parameters = records
            .iter()
            .filter_map(|r| shown(r).map(|v| (r, v)))
            .map(|(r, v)| {
                let selector = labels.as_ref().and_then(|labels| {
                    v.labels
                        .iter()
                        .find(|l| labels.contains(l))
                        .map(|l| format!(":{l}"))
                });
                render(
                    &self.keys,
                    &ctx.account_id,
                    &ctx.region,
                    r,
                    &v,
                    decrypt,
                    selector,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ssm::GetParametersByPathResult {
            parameters: Some(parameters),
            next_token: next,
        })
    }

    /// One page of the records under `scan` that pass `keep` (given the key
    /// after `scan` and the record), and the token of the next page.
    fn scan(
        &self,
        scan: &str,
        token: Option<&str>,
        max: usize,
        keep: impl Fn(&str, &ParamRecord) -> bool,
    ) -> Result<(Vec<ParamRecord>, Option<String>), AwsError> {
        let mut after =
            match token {
                Some(t) => Some(decode_token(t).filter(|k| k.starts_with(scan)).ok_or_else(
                    || {
                        AwsError::bad_request(
                            "InvalidNextToken",
                            "The specified token isn't valid.",
                        )
                    },
                )?),
                None => None,
            };
        let mut out = Vec::new();
        loop {
            let batch = self.store.range(scan, after.as_deref(), 256);
            if batch.is_empty() {
                return Ok((out, None));
            }
            for kv in batch {
                let record: ParamRecord =
                    serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?;
                if !keep(&kv.key[scan.len()..], &record) {
                    after = Some(kv.key);
                    continue;
                }
                if out.len() == max {
                    return Ok((out, after.as_deref().map(encode_token)));
                }
                out.push(record);
                after = Some(kv.key);
            }
        }
    }

    async fn delete(
        &self,
        ctx: &RequestContext,
        input: ssm::DeleteParameterRequest,
    ) -> Result<ssm::DeleteParameterResult, AwsError> {
        let name = input.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '' at 'name' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1",
            ));
        }
        ctx.authorize(&[self.target(ctx, &name)?.requirement("DeleteParameter")])?;
        let deleted = self.delete_names(ctx, vec![name.clone()]).await?;
        if deleted.is_empty() {
            return Err(not_found(&name));
        }
        Ok(ssm::DeleteParameterResult {})
    }

    async fn delete_many(
        &self,
        ctx: &RequestContext,
        input: ssm::DeleteParametersRequest,
    ) -> Result<ssm::DeleteParametersResult, AwsError> {
        let names = input.names.clone().unwrap_or_default();
        if names.is_empty() || names.len() > 10 {
            return Err(validation(
                "Names must hold between 1 and 10 parameter names.",
            ));
        }
        self.authorize_each(ctx, "DeleteParameters", &names)?;
        let deleted = self.delete_names(ctx, names.clone()).await?;
        let invalid = names.into_iter().filter(|n| !deleted.contains(n)).collect();
        Ok(ssm::DeleteParametersResult {
            deleted_parameters: Some(deleted),
            invalid_parameters: Some(invalid),
        })
    }

    /// Deletes the parameters that exist; returns their names as given.
    async fn delete_names(
        &self,
        ctx: &RequestContext,
        names: Vec<String>,
    ) -> Result<Vec<String>, AwsError> {
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let mut ops = Vec::new();
                let mut keys: Vec<String> = Vec::new();
                let mut deleted = Vec::new();
                for reference in &names {
                    let (a, r, name, _) = parse_reference(&account, &region, reference)?;
                    if let Some((key, record)) = find_param(view, a, r, &name)? {
                        if !keys.contains(&key) {
                            ops.extend(record_ops(a, r, &key, Some(&record), None)?);
                            keys.push(key);
                        }
                        deleted.push(reference.clone());
                    }
                }
                Ok::<_, AwsError>((ops, deleted))
            })
            .await
            .map_err(store_error)?;
        result.map(|(_, d)| d)
    }

    fn describe(
        &self,
        ctx: &RequestContext,
        input: ssm::DescribeParametersRequest,
    ) -> Result<ssm::DescribeParametersResult, AwsError> {
        let legacy = input.filters.as_deref().unwrap_or_default();
        let modern = input.parameter_filters.as_deref().unwrap_or_default();
        if !legacy.is_empty() && !modern.is_empty() {
            return Err(validation(
                "You can use either Filters or ParameterFilters in a single request.",
            ));
        }
        let max = match input.max_results {
            None => 10,
            Some(n) if (1..=50).contains(&n) => n as usize,
            Some(n) => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
                     constraint: Member must have value {}",
                    if n < 1 {
                        "greater than or equal to 1"
                    } else {
                        "less than or equal to 50"
                    }
                )))
            }
        };
        let filters = if legacy.is_empty() {
            filters::parse_parameter_filters(modern, filters::Operation::DescribeParameters)?
        } else {
            filters::parse_legacy_filters(legacy)?
        };
        ctx.authorize(&berth_model::authz::on(
            "ssm:DescribeParameters",
            Vec::new(),
        ))?;
        // Parameters other accounts share with this one: Berth serves one
        // account, so there are none.
        if input.shared.unwrap_or(false) {
            return Ok(ssm::DescribeParametersResult {
                parameters: Some(Vec::new()),
                next_token: None,
            });
        }
        let scan = prefix(&ctx.account_id, &ctx.region);
        let keep = |_: &str, r: &ParamRecord| {
            r.versions
                .last()
                .is_some_and(|v| filters.iter().all(|f| f.matches(r, v)))
        };
        let (records, next) = self.scan(&scan, input.next_token.as_deref(), max, keep)?;
        let parameters = records
            .iter()
            .map(|r| {
                let v = r.latest()?;
                Ok(ssm::ParameterMetadata {
                    name: Some(r.name.clone()),
                    arn: Some(parameter_arn(&ctx.account_id, &ctx.region, &r.name)),
                    r#type: Some(v.r#type.clone()),
                    key_id: v.key_id.clone(),
                    last_modified_date: Some(v.modified),
                    last_modified_user: Some(v.user.clone()),
                    description: r.description.clone(),
                    allowed_pattern: v.allowed_pattern.clone(),
                    version: Some(v.version),
                    tier: Some(r.tier.clone()),
                    policies: Some(
                        v.policies
                            .iter()
                            .map(policies::ParamPolicy::shape)
                            .collect(),
                    ),
                    data_type: Some(r.data_type.clone()),
                })
            })
            .collect::<Result<Vec<_>, AwsError>>()?;
        Ok(ssm::DescribeParametersResult {
            parameters: Some(parameters),
            next_token: next,
        })
    }
}

/// An AllowedPattern and its compiled form, anchored at both ends: the
/// whole value must match, as Parameter Store's (Java) matching requires.
fn compile_pattern(pattern: &str) -> Result<(String, regex::Regex), AwsError> {
    if pattern.chars().count() > 1024 {
        return Err(validation(
            "1 validation error detected: Value at 'allowedPattern' failed to satisfy \
             constraint: Member must have length less than or equal to 1024",
        ));
    }
    let compiled = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            AwsError::bad_request(
                "InvalidAllowedPatternException",
                format!(
                    "The request doesn't meet the regular expression requirement: {pattern} is \
                     not a regular expression Berth can use ({}). Look-around and \
                     backreferences are not supported.",
                    e.to_string().lines().last().unwrap_or_default().trim()
                ),
            )
        })?;
    Ok((pattern.to_string(), compiled))
}

/// The tier a PutParameter gives the parameter. `current` is the existing
/// parameter's tier; `requested` the request's tier or else the default
/// tier setting (`explicit` says which).
fn resolve_tier(
    name: &str,
    current: Option<&str>,
    requested: &str,
    explicit: bool,
    value_chars: usize,
    has_policies: bool,
    data_type: &str,
) -> Result<String, AwsError> {
    let needs_advanced =
        value_chars > 4096 || has_policies || data_types::needs_advanced(data_type);
    let advanced = match requested {
        "Advanced" => true,
        "Intelligent-Tiering" => needs_advanced || current == Some("Advanced"),
        _ if current == Some("Advanced") => {
            if explicit {
                return Err(validation(
                    "This parameter uses the advanced-parameter tier. You can't downgrade a \
                     parameter from the advanced-parameter tier to the standard-parameter tier. \
                     If necessary, you can delete the advanced parameter and recreate it as a \
                     standard parameter.",
                ));
            }
            true
        }
        _ => false,
    };
    if advanced {
        if value_chars > 8192 {
            return Err(validation(
                "Advanced tier parameters support a maximum parameter value of 8192 characters.",
            ));
        }
        return Ok("Advanced".to_string());
    }
    if value_chars > 4096 {
        return Err(validation(
            "Standard tier parameters support a maximum parameter value of 4096 characters. To \
             create a larger parameter value, upgrade the parameter to use the \
             advanced-parameter tier. For more information, see \
             https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html",
        ));
    }
    if has_policies {
        return Err(validation(format!(
            "Parameter policies are available for advanced parameters only; {name} would be a \
             Standard parameter. Specify the Advanced tier (or Intelligent-Tiering) to use \
             policies."
        )));
    }
    if data_types::needs_advanced(data_type) {
        return Err(validation(format!(
            "The {data_type} data type needs the advanced-parameter tier; {name} would be a \
             Standard parameter. Specify the Advanced tier (or Intelligent-Tiering)."
        )));
    }
    Ok("Standard".to_string())
}

/// A parameter version holds at most this many labels.
const MAX_LABELS: usize = 10;
/// A parameter holds at most this many tags.
const MAX_TAGS: usize = 50;
const RESOURCE_TYPES: [&str; 10] = [
    "Document",
    "ManagedInstance",
    "MaintenanceWindow",
    "Parameter",
    "PatchBaseline",
    "OpsItem",
    "OpsMetadata",
    "Automation",
    "Association",
    "CloudConnector",
];

/// Whether `label` meets AWS's label rules: 1 to 100 letters, numbers, `.`,
/// `-` or `_`, not starting with a number, `aws` or `ssm` (any case).
pub fn valid_label(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    !label.is_empty()
        && label.len() <= 100
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !label.as_bytes()[0].is_ascii_digit()
        && !lower.starts_with("aws")
        && !lower.starts_with("ssm")
}

/// The model's constraints on `Labels`: 1 to 10 entries of 1 to 100
/// characters. Breaking them is a ValidationException, as AWS's request
/// validation answers.
fn check_label_list(labels: &[String]) -> Result<(), AwsError> {
    if labels.is_empty() || labels.len() > MAX_LABELS {
        return Err(validation(format!(
            "1 validation error detected: Value '[{}]' at 'labels' failed to satisfy constraint: \
             Member must have length less than or equal to 10, Member must have length greater \
             than or equal to 1",
            labels.join(", ")
        )));
    }
    if let Some(bad) = labels.iter().find(|l| l.is_empty() || l.len() > 100) {
        return Err(validation(format!(
            "1 validation error detected: Value '[{bad}]' at 'labels' failed to satisfy \
             constraint: Member must satisfy constraint: [Member must have length less than or \
             equal to 100, Member must have length greater than or equal to 1]"
        )));
    }
    Ok(())
}

fn version_not_found(name: &str, version: impl std::fmt::Display) -> AwsError {
    AwsError::bad_request(
        "ParameterVersionNotFound",
        format!(
            "Systems Manager could not find version {version} of {name}. \
             Verify the version and try again."
        ),
    )
}

/// Tags as SSM takes them: keys 1 to 128 characters, values up to 256, both
/// from letters, numbers, spaces and `_.:/=+-@`; no `aws:` keys.
pub fn check_ssm_tags(tags: &[ssm::Tag]) -> Result<Vec<(String, String)>, AwsError> {
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
    };
    tags.iter()
        .map(|t| {
            let key = t.key.clone().unwrap_or_default();
            let value = t.value.clone().unwrap_or_default();
            if key.is_empty() || key.chars().count() > 128 || !ok(&key) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{key}' at 'tags.1.member.key' failed to \
                     satisfy constraint: Member must have length between 1 and 128 and match \
                     pattern ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)$"
                )));
            }
            if value.chars().count() > 256 || !ok(&value) {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'tags.1.member.value' of tag {key} \
                     failed to satisfy constraint: Member must have length less than or equal to \
                     256 and match pattern ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)$"
                )));
            }
            if key.to_ascii_lowercase().starts_with("aws:") {
                return Err(validation(
                    "Tag keys beginning with 'aws:' are reserved for AWS use.",
                ));
            }
            Ok((key, value))
        })
        .collect()
}

fn too_many_tags() -> AwsError {
    AwsError::bad_request(
        "TooManyTagsError",
        "The Tags parameter is not valid. A resource can have a maximum of 50 tags.",
    )
}

fn invalid_resource_id() -> AwsError {
    AwsError::bad_request(
        "InvalidResourceId",
        "The resource ID is not valid. Verify that you entered the correct ID and try again.",
    )
}

/// Checks `ResourceType`/`ResourceId` of a tagging call and returns the
/// parameter reference. Berth tags parameters only; the other resource types
/// AWS knows are refused as InvalidResourceType.
fn tag_target(
    resource_type: &Option<String>,
    resource_id: &Option<String>,
) -> Result<String, AwsError> {
    let resource_type = resource_type.clone().unwrap_or_default();
    if !RESOURCE_TYPES.contains(&resource_type.as_str()) {
        return Err(validation(format!(
            "1 validation error detected: Value '{resource_type}' at 'resourceType' failed to \
             satisfy constraint: Member must satisfy enum value set: [{}]",
            RESOURCE_TYPES.join(", ")
        )));
    }
    if resource_type != "Parameter" {
        return Err(AwsError::bad_request(
            "InvalidResourceType",
            format!("Berth can tag resources of type Parameter only, not {resource_type}."),
        ));
    }
    match resource_id.as_deref() {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(invalid_resource_id()),
    }
}

impl SsmService {
    /// Runs `f` on the parameter `reference` (a name or ARN, no selector)
    /// inside one store mutation; writes the record back when `f` says so.
    /// `missing` is the error for a parameter that does not exist.
    async fn modify_param<T, F>(
        &self,
        ctx: &RequestContext,
        reference: String,
        missing: fn(&str) -> AwsError,
        mut f: F,
    ) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: FnMut(&mut ParamRecord) -> Result<(bool, T), AwsError> + Send + 'static,
    {
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let (key, mut record) = find_reference(view, &account, &region, &reference)?
                    .ok_or_else(|| missing(&reference))?;
                let (write, out) = f(&mut record)?;
                let ops = if write {
                    let bytes = serde_json::to_vec(&record).map_err(|_| corrupt(&key))?;
                    vec![Op::put(key, bytes)]
                } else {
                    vec![]
                };
                Ok::<_, AwsError>((ops, out))
            })
            .await
            .map_err(store_error)?;
        result.map(|(_, out)| out)
    }

    fn history(
        &self,
        ctx: &RequestContext,
        input: ssm::GetParameterHistoryRequest,
    ) -> Result<ssm::GetParameterHistoryResult, AwsError> {
        let reference = input.name.clone().unwrap_or_default();
        if reference.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '' at 'name' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1",
            ));
        }
        let max = page_size(input.max_results, 50)?;
        let after = match &input.next_token {
            Some(t) => Some(
                decode_token(t)
                    .and_then(|s| s.strip_prefix("v:").and_then(|n| n.parse::<i64>().ok()))
                    .ok_or_else(|| {
                        AwsError::bad_request(
                            "InvalidNextToken",
                            "The specified token isn't valid.",
                        )
                    })?,
            ),
            None => None,
        };
        let decrypt = input.with_decryption.unwrap_or(false);
        ctx.authorize(&[self
            .target(ctx, &reference)?
            .requirement("GetParameterHistory")])?;
        let (_, record) = find_reference(
            self.store.as_ref(),
            &ctx.account_id,
            &ctx.region,
            &reference,
        )?
        .ok_or_else(|| not_found(&reference))?;
        let remaining: Vec<&ParamVersion> = record
            .versions
            .iter()
            .filter(|v| after.is_none_or(|a| v.version > a))
            .collect();
        let page = &remaining[..remaining.len().min(max)];
        let next = (remaining.len() > max)
            .then(|| {
                page.last()
                    .map(|v| encode_token(&format!("v:{}", v.version)))
            })
            .flatten();
        let parameters = page
            .iter()
            .map(|v| {
                let p = render(
                    &self.keys,
                    &ctx.account_id,
                    &ctx.region,
                    &record,
                    v,
                    decrypt,
                    None,
                )?;
                Ok(ssm::ParameterHistory {
                    name: p.name,
                    r#type: p.r#type,
                    key_id: v.key_id.clone(),
                    last_modified_date: Some(v.modified),
                    last_modified_user: Some(v.user.clone()),
                    description: record.description.clone(),
                    value: p.value,
                    version: Some(v.version),
                    labels: Some(v.labels.clone()),
                    allowed_pattern: v.allowed_pattern.clone(),
                    tier: Some(record.tier.clone()),
                    policies: Some(
                        v.policies
                            .iter()
                            .map(policies::ParamPolicy::shape)
                            .collect(),
                    ),
                    data_type: Some(record.data_type.clone()),
                })
            })
            .collect::<Result<Vec<_>, AwsError>>()?;
        Ok(ssm::GetParameterHistoryResult {
            parameters: Some(parameters),
            next_token: next,
        })
    }

    async fn label(
        &self,
        ctx: &RequestContext,
        input: ssm::LabelParameterVersionRequest,
    ) -> Result<ssm::LabelParameterVersionResult, AwsError> {
        let reference = input.name.clone().unwrap_or_default();
        if reference.is_empty() {
            return Err(validation("1 validation error detected: Value '' at 'name' failed to satisfy constraint: Member must have length greater than or equal to 1"));
        }
        let labels = input.labels.clone().unwrap_or_default();
        check_label_list(&labels)?;
        let (valid, invalid): (Vec<String>, Vec<String>) =
            labels.into_iter().partition(|l| valid_label(l));
        let mut wanted: Vec<String> = Vec::new();
        for l in valid {
            if !wanted.contains(&l) {
                wanted.push(l);
            }
        }
        let requested = input.parameter_version;
        ctx.authorize(&[self
            .target(ctx, &reference)?
            .requirement("LabelParameterVersion")])?;
        let version = self
            .modify_param(ctx, reference, not_found, move |record| {
                let target = match requested {
                    Some(n) => n,
                    None => record.latest()?.version,
                };
                let name = record.name.clone();
                let index = record
                    .versions
                    .iter()
                    .position(|v| v.version == target)
                    .ok_or_else(|| version_not_found(&name, target))?;
                let current = &record.versions[index].labels;
                let added = wanted.iter().filter(|l| !current.contains(l)).count();
                if current.len() + added > MAX_LABELS {
                    return Err(AwsError::bad_request(
                        "ParameterVersionLabelLimitExceeded",
                        "A parameter version can have maximum 10 labels. Move one or more \
                         labels to another version and try again.",
                    ));
                }
                if wanted.is_empty() {
                    return Ok((false, target));
                }
                // A label names one version: labelling moves it here.
                for (i, v) in record.versions.iter_mut().enumerate() {
                    if i == index {
                        for l in &wanted {
                            if !v.labels.contains(l) {
                                v.labels.push(l.clone());
                            }
                        }
                    } else {
                        v.labels.retain(|l| !wanted.contains(l));
                    }
                }
                Ok((true, target))
            })
            .await?;
        Ok(ssm::LabelParameterVersionResult {
            invalid_labels: Some(invalid),
            parameter_version: Some(version),
        })
    }

    async fn unlabel(
        &self,
        ctx: &RequestContext,
        input: ssm::UnlabelParameterVersionRequest,
    ) -> Result<ssm::UnlabelParameterVersionResult, AwsError> {
        let reference = input.name.clone().unwrap_or_default();
        if reference.is_empty() {
            return Err(validation("1 validation error detected: Value '' at 'name' failed to satisfy constraint: Member must have length greater than or equal to 1"));
        }
        let Some(target) = input.parameter_version else {
            return Err(validation(
                "1 validation error detected: Value null at 'parameterVersion' failed to \
                 satisfy constraint: Member must not be null",
            ));
        };
        let labels = input.labels.clone().unwrap_or_default();
        check_label_list(&labels)?;
        ctx.authorize(&[self
            .target(ctx, &reference)?
            .requirement("UnlabelParameterVersion")])?;
        let (removed, invalid) = self
            .modify_param(ctx, reference, not_found, move |record| {
                let name = record.name.clone();
                let version = record
                    .versions
                    .iter_mut()
                    .find(|v| v.version == target)
                    .ok_or_else(|| version_not_found(&name, target))?;
                let mut removed = Vec::new();
                let mut invalid = Vec::new();
                for l in &labels {
                    if version.labels.contains(l) {
                        version.labels.retain(|x| x != l);
                        removed.push(l.clone());
                    } else if !removed.contains(l) {
                        invalid.push(l.clone());
                    }
                }
                Ok((!removed.is_empty(), (removed, invalid)))
            })
            .await?;
        Ok(ssm::UnlabelParameterVersionResult {
            removed_labels: Some(removed),
            invalid_labels: Some(invalid),
        })
    }

    async fn add_tags(
        &self,
        ctx: &RequestContext,
        input: ssm::AddTagsToResourceRequest,
    ) -> Result<ssm::AddTagsToResourceResult, AwsError> {
        let reference = tag_target(&input.resource_type, &input.resource_id)?;
        let tags = check_ssm_tags(input.tags.as_deref().unwrap_or_default())?;
        if tags.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '[]' at 'tags' failed to satisfy \
                 constraint: Member must have length greater than or equal to 1",
            ));
        }
        let requirement = self
            .target(ctx, &reference)?
            .requirement("AddTagsToResource")
            .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ctx.authorize(&[requirement])?;
        self.modify_param(
            ctx,
            reference,
            |_| invalid_resource_id(),
            move |record| {
                let mut merged = record.tags.clone();
                for (k, v) in &tags {
                    match merged.iter_mut().find(|(ek, _)| ek == k) {
                        Some(slot) => slot.1 = v.clone(),
                        None => merged.push((k.clone(), v.clone())),
                    }
                }
                if merged.len() > MAX_TAGS {
                    return Err(too_many_tags());
                }
                record.tags = merged;
                Ok((true, ()))
            },
        )
        .await?;
        Ok(ssm::AddTagsToResourceResult {})
    }

    async fn remove_tags(
        &self,
        ctx: &RequestContext,
        input: ssm::RemoveTagsFromResourceRequest,
    ) -> Result<ssm::RemoveTagsFromResourceResult, AwsError> {
        let reference = tag_target(&input.resource_type, &input.resource_id)?;
        let keys = input.tag_keys.clone().unwrap_or_default();
        let requirement = self
            .target(ctx, &reference)?
            .requirement("RemoveTagsFromResource")
            .tag_keys(keys.iter().cloned());
        ctx.authorize(&[requirement])?;
        self.modify_param(
            ctx,
            reference,
            |_| invalid_resource_id(),
            move |record| {
                let before = record.tags.len();
                record.tags.retain(|(k, _)| !keys.contains(k));
                Ok((record.tags.len() != before, ()))
            },
        )
        .await?;
        Ok(ssm::RemoveTagsFromResourceResult {})
    }

    fn list_tags(
        &self,
        ctx: &RequestContext,
        input: ssm::ListTagsForResourceRequest,
    ) -> Result<ssm::ListTagsForResourceResult, AwsError> {
        let reference = tag_target(&input.resource_type, &input.resource_id)?;
        ctx.authorize(&[self
            .target(ctx, &reference)?
            .requirement("ListTagsForResource")])?;
        let (_, record) = find_reference(
            self.store.as_ref(),
            &ctx.account_id,
            &ctx.region,
            &reference,
        )?
        .ok_or_else(invalid_resource_id)?;
        Ok(ssm::ListTagsForResourceResult {
            tag_list: Some(
                record
                    .tags
                    .iter()
                    .map(|(k, v)| ssm::Tag {
                        key: Some(k.clone()),
                        value: Some(v.clone()),
                    })
                    .collect(),
            ),
        })
    }
}

/// A parameter by name or ARN, with no version selector: a reference with one
/// names no parameter.
fn find_reference<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    reference: &str,
) -> Result<Option<(String, ParamRecord)>, AwsError> {
    let Ok((a, r, name, selector)) = parse_reference(account, region, reference) else {
        return Ok(None);
    };
    if !selector.is_empty() {
        return Ok(None);
    }
    find_param(view, a, r, &name)
}
