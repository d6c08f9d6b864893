//! AWS Systems Manager Parameter Store (`AmazonSSM`, JSON 1.1): the parameter
//! operations only.
//!
//! Store layout: `/ssm/<account>/<region>/params/<name>` holds one
//! [`ParamRecord`] with the parameter's recent versions. SecureString values
//! are sealed with the master key; String and StringList values are stored as
//! given, as they are not secret in AWS either.

use std::sync::Arc;

use berth_model::shapes::ssm;
use berth_model::{AwsError, JsonService, RequestContext};
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::authz::{resolve_parameter, ParamTarget};
use crate::common::{corrupt, decode_token, encode_token, page_size, store_error, validation};
use crate::crypto::{MasterKey, Sealed};

pub const STRING: &str = "String";
pub const STRING_LIST: &str = "StringList";
pub const SECURE_STRING: &str = "SecureString";
const DEFAULT_KEY_ID: &str = "alias/aws/ssm";
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StoredValue {
    Plain(String),
    Sealed(Sealed),
}

impl ParamRecord {
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

pub fn parameter_arn(account: &str, region: &str, name: &str) -> String {
    berth_model::arn::ssm_parameter_arn(region, account, name)
}

fn not_found(name: &str) -> AwsError {
    AwsError::bad_request("ParameterNotFound", format!("Parameter {name} not found."))
}

/// An SSM operation Berth does not implement yet: a clear refusal, never a
/// fake success.
fn unsupported(operation: &str) -> AwsError {
    AwsError::bad_request(
        "UnsupportedOperationException",
        format!("Berth does not implement the Systems Manager operation {operation} yet."),
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

/// Reads a parameter. From an ARN the name may or may not start with `/`
/// (`parameter/a/b` is `/a/b`, `parameter/x` is `x`), so both are tried.
pub fn find_param<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    name: &str,
    from_arn: bool,
) -> Result<Option<(String, ParamRecord)>, AwsError> {
    let prefix = prefix(account, region);
    let mut candidates = vec![name.to_string()];
    if from_arn {
        if let Some(stripped) = name.strip_prefix('/') {
            candidates.push(stripped.to_string());
        }
    }
    for candidate in candidates {
        let key = format!("{prefix}{candidate}");
        if let Some(kv) = view.get(&key) {
            let record = serde_json::from_slice(&kv.value).map_err(|_| corrupt(&key))?;
            return Ok(Some((key, record)));
        }
    }
    Ok(None)
}

fn check_name(name: &str) -> Result<(), AwsError> {
    let bad = || {
        validation(
            "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). \
             If formed as a path, it can consist of sub-paths divided by slash symbol; each \
             sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_",
        )
    };
    if name.is_empty() || name.len() > 1011 {
        return Err(bad());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
    {
        return Err(bad());
    }
    let first = name.trim_start_matches('/').to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err(bad());
    }
    if name.contains('/') {
        if !name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(bad());
        }
        if name.matches('/').count() > 15 {
            return Err(AwsError::bad_request(
                "HierarchyLevelLimitExceededException",
                "A hierarchy can have a maximum of 15 levels.",
            ));
        }
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
    let (_, record) = find_param(view, a, r, &name, reference.starts_with("arn:"))?
        .ok_or_else(|| not_found(&name))?;
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
        check_name(&name)?;
        let value = input.value.clone().unwrap_or_default();
        if value.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '' at 'value' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1.",
            ));
        }
        let tier = input.tier.clone().unwrap_or_else(|| "Standard".to_string());
        let limit = match tier.as_str() {
            "Standard" => 4096,
            "Advanced" | "Intelligent-Tiering" => 8192,
            _ => return Err(validation(format!("Tier {tier} is not valid."))),
        };
        if value.chars().count() > limit {
            return Err(validation(if tier == "Standard" {
                "Standard tier parameters support a maximum parameter value of 4096 characters. \
                 To create a larger parameter value, upgrade the parameter to use the \
                 advanced-parameter tier. For more information, see \
                 https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html"
            } else {
                "Advanced tier parameters support a maximum parameter value of 8192 characters."
            }));
        }
        if let Some(t) = &input.r#type {
            if ![STRING, STRING_LIST, SECURE_STRING].contains(&t.as_str()) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{t}' at 'type' failed to satisfy \
                     constraint: Member must satisfy enum value set: [SecureString, StringList, String]"
                )));
            }
        }
        if input.key_id.is_some() && input.r#type.as_deref() != Some(SECURE_STRING) {
            return Err(validation(
                "KeyId is required for SecureString type parameter only.",
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
        if input.allowed_pattern.is_some() {
            return Err(unsupported("PutParameter with AllowedPattern"));
        }
        if input.policies.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(unsupported("PutParameter with Policies"));
        }
        let data_type = input
            .data_type
            .clone()
            .unwrap_or_else(|| "text".to_string());
        if data_type != "text" {
            return Err(unsupported(&format!(
                "PutParameter with DataType {data_type}"
            )));
        }
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
        let key = format!("{}{name}", prefix(&ctx.account_id, &ctx.region));
        let user = ctx.principal.arn.clone();
        let result = self
            .store
            .update(move |view| {
                let now = berth_util::time::now_epoch();
                let existing: Option<ParamRecord> = match view.get(&key) {
                    Some(kv) => Some(serde_json::from_slice(&kv.value).map_err(|_| corrupt(&key))?),
                    None => None,
                };
                let mut record = match existing {
                    Some(_) if !overwrite => {
                        return Err(AwsError::bad_request(
                            "ParameterAlreadyExists",
                            "The parameter already exists. To overwrite this value, set the \
                             overwrite option in the request to true.",
                        ))
                    }
                    Some(mut r) => {
                        if input.description.is_some() {
                            r.description = input.description.clone();
                        }
                        r.tier = tier.clone();
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
                            tier: tier.clone(),
                            data_type: data_type.clone(),
                            tags: tags.clone(),
                            versions: Vec::new(),
                        }
                    }
                };
                let previous = record.versions.last();
                let r#type = match (&input.r#type, previous) {
                    (Some(t), _) => t.clone(),
                    (None, Some(p)) => p.r#type.clone(),
                    (None, None) => STRING.to_string(),
                };
                let secure = r#type == SECURE_STRING;
                let key_id = if secure {
                    input
                        .key_id
                        .clone()
                        .or_else(|| previous.and_then(|p| p.key_id.clone()))
                        .or_else(|| Some(DEFAULT_KEY_ID.to_string()))
                } else {
                    None
                };
                let version = previous.map_or(0, |p| p.version) + 1;
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
                let bytes = serde_json::to_vec(&record).map_err(|_| corrupt(&key))?;
                Ok((
                    vec![Op::put(key.clone(), bytes)],
                    (version, record.tier.clone()),
                ))
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
        if !path.starts_with('/') || path.contains("//") {
            return Err(validation(
                "The parameter doesn't meet the parameter name requirements. The parameter name \
                 must begin with a forward slash \"/\".",
            ));
        }
        if input
            .parameter_filters
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            return Err(unsupported("GetParametersByPath with ParameterFilters"));
        }
        let max = match input.max_results {
            None => 10,
            Some(n) if (1..=10).contains(&n) => n as usize,
            Some(_) => return Err(validation("MaxResults must be between 1 and 10.")),
        };
        let recursive = input.recursive.unwrap_or(false);
        let decrypt = input.with_decryption.unwrap_or(false);
        // As AWS: the path's ARN decides, for every parameter under it.
        ctx.authorize(&[berth_model::authz::Requirement::new(
            "ssm:GetParametersByPath",
            parameter_arn(&ctx.account_id, &ctx.region, &path),
        )
        .condition("ssm:Recursive", recursive.to_string())])?;
        let base = prefix(&ctx.account_id, &ctx.region);
        let scan = format!("{base}{}/", path.trim_end_matches('/'));
        let (records, next) = self.scan(&scan, input.next_token.as_deref(), max, |rest| {
            recursive || !rest.contains('/')
        })?;
        let parameters = records
            .iter()
            .map(|r| {
                let v = r.latest()?;
                render(
                    &self.keys,
                    &ctx.account_id,
                    &ctx.region,
                    r,
                    v,
                    decrypt,
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ssm::GetParametersByPathResult {
            parameters: Some(parameters),
            next_token: next,
        })
    }

    /// One page of the records under `scan` whose key after `scan` passes
    /// `keep`, and the token of the next page.
    fn scan(
        &self,
        scan: &str,
        token: Option<&str>,
        max: usize,
        keep: impl Fn(&str) -> bool,
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
                if !keep(&kv.key[scan.len()..]) {
                    after = Some(kv.key);
                    continue;
                }
                if out.len() == max {
                    return Ok((out, after.as_deref().map(encode_token)));
                }
                out.push(serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?);
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
                let mut deleted = Vec::new();
                for reference in &names {
                    let (a, r, name, _) = parse_reference(&account, &region, reference)?;
                    if let Some((key, _)) =
                        find_param(view, a, r, &name, reference.starts_with("arn:"))?
                    {
                        ops.push(Op::delete(key));
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
        if input.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(unsupported(
                "DescribeParameters with Filters (use ParameterFilters)",
            ));
        }
        let max = match input.max_results {
            None => 10,
            Some(n) if (1..=50).contains(&n) => n as usize,
            Some(_) => return Err(validation("MaxResults must be between 1 and 50.")),
        };
        ctx.authorize(&berth_model::authz::on(
            "ssm:DescribeParameters",
            Vec::new(),
        ))?;
        // Supported filters: Name (Equals, BeginsWith) and Type (Equals).
        // (is the Name filter, option, value)
        let mut checks: Vec<(bool, String, String)> = Vec::new();
        for f in input.parameter_filters.iter().flatten() {
            let key = f.key.clone().unwrap_or_default();
            let option = f.option.clone().unwrap_or_else(|| "Equals".to_string());
            let values = f.values.clone().unwrap_or_default();
            let is_name = match key.as_str() {
                "Name" => true,
                "Type" => false,
                other => {
                    return Err(unsupported(&format!(
                        "DescribeParameters with the {other} filter"
                    )))
                }
            };
            if option != "Equals" && !(is_name && option == "BeginsWith") {
                return Err(validation(format!(
                    "The option {option} is not valid for the {key} filter."
                )));
            }
            for v in values {
                checks.push((is_name, option.clone(), v));
            }
        }
        let scan = prefix(&ctx.account_id, &ctx.region);
        let matches = |rest: &str| -> bool {
            let names: Vec<&(bool, String, String)> = checks.iter().filter(|c| c.0).collect();
            names.is_empty()
                || names.iter().any(|(_, option, v)| {
                    if option == "BeginsWith" {
                        rest.starts_with(v.as_str())
                    } else {
                        rest == v
                    }
                })
        };
        let type_filter: Vec<String> = checks
            .iter()
            .filter(|c| !c.0)
            .map(|c| c.2.clone())
            .collect();
        // Type filters need the record, so they are applied page by page; a
        // page may then hold fewer than MaxResults, which AWS also allows.
        let (records, next) = self.scan(&scan, input.next_token.as_deref(), max, matches)?;
        let mut parameters = Vec::new();
        for r in &records {
            let v = r.latest()?;
            if !type_filter.is_empty() && !type_filter.contains(&v.r#type) {
                continue;
            }
            parameters.push(ssm::ParameterMetadata {
                name: Some(r.name.clone()),
                arn: Some(parameter_arn(&ctx.account_id, &ctx.region, &r.name)),
                r#type: Some(v.r#type.clone()),
                key_id: v.key_id.clone(),
                last_modified_date: Some(v.modified),
                last_modified_user: Some(v.user.clone()),
                description: r.description.clone(),
                version: Some(v.version),
                tier: Some(r.tier.clone()),
                policies: Some(Vec::new()),
                data_type: Some(r.data_type.clone()),
                ..Default::default()
            });
        }
        Ok(ssm::DescribeParametersResult {
            parameters: Some(parameters),
            next_token: next,
        })
    }
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
                    tier: Some(record.tier.clone()),
                    policies: Some(Vec::new()),
                    data_type: Some(record.data_type.clone()),
                    ..Default::default()
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
    find_param(view, a, r, &name, reference.starts_with("arn:"))
}
