//! ECR's registry-level operations and the newer per-repository ones:
//! DescribeRegistry, the registry policy, account settings, scanning
//! configuration (and the scan calls Berth answers without a scanner),
//! ListImageReferrers, repository creation templates, lifecycle policy
//! previews, replication configuration and status, pull-through cache rules.
//!
//! Registry-level calls are authorized on `*` (the Service Authorization
//! Reference lists no resource type for them); per-repository ones on the
//! repository's canonical ARN.

use berth_model::authz::{self, Requirement};
use berth_model::shapes::ecr;
use berth_model::AwsError;
use berth_store::{Op, StoreExt};

use super::{
    check_mutability, check_name, invalid, missing, paginate, resolve_id, store_error, Call,
};
use crate::meta::{self, RepoRecord, Scope};
use crate::settings::{
    self, PreviewRecord, RegistryPolicyRecord, ReplicationRecord, SettingRecord, ACCOUNT_SETTINGS,
};
use crate::{lifecycle, pull_through};

fn validation(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("ValidationException", message)
}

fn on_registry(action: &str) -> Vec<Requirement> {
    authz::on(action, Vec::new())
}

// --- DescribeRegistry, registry policy -------------------------------------------

pub(super) fn describe_registry_requirements() -> Vec<Requirement> {
    on_registry("ecr:DescribeRegistry")
}

pub(super) fn describe_registry(
    c: &Call,
    _i: ecr::DescribeRegistryRequest,
) -> Result<ecr::DescribeRegistryResponse, AwsError> {
    let replication =
        meta::get::<ecr::ReplicationConfiguration>(c.store(), &c.scope.replication_configuration())
            .unwrap_or(ecr::ReplicationConfiguration {
                rules: Some(Vec::new()),
            });
    Ok(ecr::DescribeRegistryResponse {
        registry_id: Some(c.scope.account.clone()),
        replication_configuration: Some(replication),
    })
}

fn registry_policy_not_found(c: &Call) -> AwsError {
    AwsError::bad_request(
        "RegistryPolicyNotFoundException",
        format!(
            "Registry policy does not exist in the registry with id '{}'",
            c.scope.account
        ),
    )
}

/// A registry policy: a JSON policy whose statements each have an Effect,
/// a Principal, an Action and a Resource, within 10,240 characters.
fn check_registry_policy(text: &str) -> Result<(), AwsError> {
    let bad = |why: &str| {
        invalid(format!(
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided: {why}'"
        ))
    };
    if text.len() > 10240 {
        return Err(bad("the policy is longer than 10240 characters"));
    }
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|_| bad("the policy is not valid JSON"))?;
    let statements = match &doc["Statement"] {
        serde_json::Value::Array(s) if !s.is_empty() => s.clone(),
        serde_json::Value::Object(_) => vec![doc["Statement"].clone()],
        _ => return Err(bad("the policy has no Statement")),
    };
    for s in &statements {
        match s["Effect"].as_str() {
            Some("Allow") | Some("Deny") => {}
            _ => return Err(bad("each statement needs Effect Allow or Deny")),
        }
        if s.get("Principal").is_none() && s.get("NotPrincipal").is_none() {
            return Err(bad("each statement needs a Principal"));
        }
        if s.get("Action").is_none() && s.get("NotAction").is_none() {
            return Err(bad("each statement needs an Action"));
        }
        if s.get("Resource").is_none() && s.get("NotResource").is_none() {
            return Err(bad("each statement needs a Resource"));
        }
        let actions = settings_list(&s["Action"]);
        if actions
            .iter()
            .any(|a| !a.to_ascii_lowercase().starts_with("ecr:") && a != "*")
        {
            return Err(bad("a registry policy may only name ecr: actions"));
        }
    }
    Ok(())
}

fn settings_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) async fn put_registry_policy(
    c: &Call<'_>,
    i: ecr::PutRegistryPolicyRequest,
) -> Result<ecr::PutRegistryPolicyResponse, AwsError> {
    let text = i.policy_text.ok_or_else(|| missing("policyText"))?;
    check_registry_policy(&text)?;
    c.registry
        .store
        .put(
            &c.scope.registry_policy(),
            meta::encode(&RegistryPolicyRecord {
                policy_text: text.clone(),
            }),
        )
        .await
        .map_err(store_error)?;
    Ok(ecr::PutRegistryPolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        policy_text: Some(text),
    })
}

pub(super) fn get_registry_policy(
    c: &Call,
    _i: ecr::GetRegistryPolicyRequest,
) -> Result<ecr::GetRegistryPolicyResponse, AwsError> {
    let record = meta::get::<RegistryPolicyRecord>(c.store(), &c.scope.registry_policy())
        .ok_or_else(|| registry_policy_not_found(c))?;
    Ok(ecr::GetRegistryPolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        policy_text: Some(record.policy_text),
    })
}

pub(super) async fn delete_registry_policy(
    c: &Call<'_>,
    _i: ecr::DeleteRegistryPolicyRequest,
) -> Result<ecr::DeleteRegistryPolicyResponse, AwsError> {
    let key = c.scope.registry_policy();
    let not_found = registry_policy_not_found(c);
    let (_, record) = c
        .registry
        .store
        .update(move |view| {
            let record = meta::get::<RegistryPolicyRecord>(view, &key).ok_or(not_found.clone())?;
            Ok((vec![Op::delete(key.clone())], record))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::DeleteRegistryPolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        policy_text: Some(record.policy_text),
    })
}

// --- account settings -------------------------------------------------------------

fn setting_name(
    name: &Option<String>,
) -> Result<&'static (&'static str, &'static [&'static str], &'static str), AwsError> {
    let name = name.as_deref().ok_or_else(|| missing("name"))?;
    ACCOUNT_SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| {
            invalid(format!(
                "Invalid parameter at 'name' failed to satisfy constraint: 'Member must be one of {:?}', got '{name}'",
                ACCOUNT_SETTINGS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>()
            ))
        })
}

pub(super) fn get_account_setting(
    c: &Call,
    i: ecr::GetAccountSettingRequest,
) -> Result<ecr::GetAccountSettingResponse, AwsError> {
    let (name, _, _) = setting_name(&i.name)?;
    Ok(ecr::GetAccountSettingResponse {
        name: Some(name.to_string()),
        value: Some(settings::account_setting(c.store(), &c.scope, name)),
    })
}

pub(super) fn check_account_setting(i: &ecr::PutAccountSettingRequest) -> Result<(), AwsError> {
    let (name, values, _) = setting_name(&i.name)?;
    let value = i.value.as_deref().ok_or_else(|| missing("value"))?;
    if !values.contains(&value) {
        return Err(invalid(format!(
            "Invalid parameter at 'value' failed to satisfy constraint: 'Member must be one of {values:?} for {name}', got '{value}'"
        )));
    }
    Ok(())
}

pub(super) async fn put_account_setting(
    c: &Call<'_>,
    i: ecr::PutAccountSettingRequest,
) -> Result<ecr::PutAccountSettingResponse, AwsError> {
    check_account_setting(&i)?;
    let (name, value) = (i.name.unwrap_or_default(), i.value.unwrap_or_default());
    c.registry
        .store
        .put(
            &c.scope.account_setting(&name),
            meta::encode(&SettingRecord {
                value: value.clone(),
            }),
        )
        .await
        .map_err(store_error)?;
    Ok(ecr::PutAccountSettingResponse {
        name: Some(name),
        value: Some(value),
    })
}

// --- ListImageReferrers -----------------------------------------------------------

/// ECR documents ecr:BatchGetImage as the permission ListImageReferrers needs.
pub(super) fn list_referrers_requirements(
    c: &Call,
    i: &ecr::ListImageReferrersRequest,
) -> Result<Vec<Requirement>, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    Ok(vec![c.on_name("ecr:BatchGetImage", &name)])
}

pub(super) fn list_image_referrers(
    c: &Call,
    i: ecr::ListImageReferrersRequest,
) -> Result<ecr::ListImageReferrersResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let subject = i
        .subject_id
        .and_then(|s| s.image_digest)
        .ok_or_else(|| missing("subjectId.imageDigest"))?;
    crate::digest::Digest::parse(&subject).map_err(|e| {
        invalid(format!(
            "Invalid parameter at 'subjectId.imageDigest' failed to satisfy constraint: '{e}'"
        ))
    })?;
    let max = match i.max_results {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n,
        Some(n) => {
            return Err(invalid(format!(
                "Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and 50', got {n}"
            )))
        }
    };
    let filter = i.filter.unwrap_or_default();
    let status = filter.artifact_status.unwrap_or_else(|| "ACTIVE".into());
    if !ecr::ARTIFACT_STATUS_FILTER_VALUES.contains(&status.as_str()) {
        return Err(invalid(format!(
            "Invalid parameter at 'filter.artifactStatus' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}'",
            ecr::ARTIFACT_STATUS_FILTER_VALUES
        )));
    }
    let types = filter.artifact_types.unwrap_or_default();
    c.repo(&name)?;
    let prefix = c.scope.referrers(&name, &subject);
    let mut items = Vec::new();
    for kv in meta::scan(c.store(), &prefix) {
        let Some(d) = meta::decode::<serde_json::Value>(&kv) else {
            continue;
        };
        let artifact_type = d["artifactType"].as_str().map(str::to_string);
        if !types.is_empty() && !artifact_type.as_ref().is_some_and(|t| types.contains(t)) {
            continue;
        }
        // Berth keeps every artifact ACTIVE (it has no archive class).
        if status == "ARCHIVED" || status == "ACTIVATING" {
            continue;
        }
        let annotations = d["annotations"].as_object().map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        });
        items.push((
            kv.key[prefix.len()..].to_string(),
            ecr::ImageReferrer {
                digest: d["digest"].as_str().map(str::to_string),
                media_type: d["mediaType"].as_str().map(str::to_string),
                artifact_type,
                size: d["size"].as_i64(),
                annotations,
                artifact_status: Some("ACTIVE".into()),
            },
        ));
    }
    let (referrers, next) = paginate(items, &i.next_token, Some(max))?;
    Ok(ecr::ListImageReferrersResponse {
        referrers: Some(referrers),
        next_token: next,
    })
}

// --- scanning ---------------------------------------------------------------------

fn registry_scanning(c: &Call) -> ecr::RegistryScanningConfiguration {
    meta::get(c.store(), &c.scope.scanning_configuration()).unwrap_or(
        ecr::RegistryScanningConfiguration {
            scan_type: Some("BASIC".into()),
            rules: Some(Vec::new()),
        },
    )
}

pub(super) fn get_registry_scanning(
    c: &Call,
    _i: ecr::GetRegistryScanningConfigurationRequest,
) -> Result<ecr::GetRegistryScanningConfigurationResponse, AwsError> {
    Ok(ecr::GetRegistryScanningConfigurationResponse {
        registry_id: Some(c.scope.account.clone()),
        scanning_configuration: Some(registry_scanning(c)),
    })
}

fn valid_scan_filter(f: &str) -> bool {
    // ^[a-z0-9*](?:[._\-/a-z0-9*]?[a-z0-9*]+)*$, 1-255
    let b = f.as_bytes();
    let word = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'*';
    if b.is_empty() || b.len() > 255 || !word(b[0]) || !word(b[b.len() - 1]) {
        return false;
    }
    b.windows(2).all(|w| word(w[0]) || word(w[1]))
        && b.iter().all(|c| word(*c) || b"._-/".contains(c))
}

pub(super) fn check_scanning(
    i: &ecr::PutRegistryScanningConfigurationRequest,
) -> Result<(String, Vec<ecr::RegistryScanningRule>), AwsError> {
    let scan_type = i.scan_type.clone().unwrap_or_else(|| "BASIC".into());
    if !ecr::SCAN_TYPE_VALUES.contains(&scan_type.as_str()) {
        return Err(invalid(format!(
            "Invalid parameter at 'scanType' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}'",
            ecr::SCAN_TYPE_VALUES
        )));
    }
    if scan_type == "ENHANCED" {
        return Err(validation(
            "Enhanced scanning needs Amazon Inspector, which Berth does not have: only scanType BASIC can be configured.",
        ));
    }
    let rules = i.rules.clone().unwrap_or_default();
    if rules.len() > 2 {
        return Err(invalid(
            "Invalid parameter at 'rules' failed to satisfy constraint: 'Member must have length less than or equal to 2'",
        ));
    }
    let mut seen = Vec::new();
    for r in &rules {
        let freq = r
            .scan_frequency
            .as_deref()
            .ok_or_else(|| missing("rules.scanFrequency"))?;
        if !["SCAN_ON_PUSH", "MANUAL"].contains(&freq) {
            return Err(invalid(format!(
                "Invalid parameter at 'rules.scanFrequency': {freq} is not valid for scanType BASIC (SCAN_ON_PUSH or MANUAL)"
            )));
        }
        if seen.contains(&freq) {
            return Err(invalid(format!(
                "Invalid parameter at 'rules': scanFrequency {freq} is used by more than one rule"
            )));
        }
        seen.push(freq);
        let filters = r
            .repository_filters
            .as_deref()
            .filter(|f| !f.is_empty())
            .ok_or_else(|| missing("rules.repositoryFilters"))?;
        if filters.len() > 100 {
            return Err(invalid(
                "Invalid parameter at 'rules.repositoryFilters' failed to satisfy constraint: 'Member must have length less than or equal to 100'",
            ));
        }
        for f in filters {
            let value = f.filter.as_deref().unwrap_or("");
            if f.filter_type.as_deref() != Some("WILDCARD") || !valid_scan_filter(value) {
                return Err(invalid(format!(
                    "Invalid parameter at 'rules.repositoryFilters': filterType must be WILDCARD and filter must satisfy '^[a-z0-9*](?:[._\\-/a-z0-9*]?[a-z0-9*]+)*$', got '{value}'"
                )));
            }
        }
    }
    Ok((scan_type, rules))
}

pub(super) async fn put_registry_scanning(
    c: &Call<'_>,
    i: ecr::PutRegistryScanningConfigurationRequest,
) -> Result<ecr::PutRegistryScanningConfigurationResponse, AwsError> {
    let (scan_type, rules) = check_scanning(&i)?;
    let config = ecr::RegistryScanningConfiguration {
        scan_type: Some(scan_type),
        rules: Some(rules),
    };
    c.registry
        .store
        .put(&c.scope.scanning_configuration(), meta::encode(&config))
        .await
        .map_err(store_error)?;
    Ok(ecr::PutRegistryScanningConfigurationResponse {
        registry_scanning_configuration: Some(config),
    })
}

fn check_names(names: &Option<Vec<String>>, max: usize) -> Result<Vec<String>, AwsError> {
    let names = names
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("repositoryNames"))?;
    if names.len() > max {
        return Err(invalid(format!(
            "Invalid parameter at 'repositoryNames' failed to satisfy constraint: 'Member must have length less than or equal to {max}'"
        )));
    }
    for n in &names {
        check_name(n)?;
    }
    Ok(names)
}

pub(super) fn batch_scanning_requirements(
    c: &Call,
    i: &ecr::BatchGetRepositoryScanningConfigurationRequest,
) -> Result<Vec<Requirement>, AwsError> {
    Ok(check_names(&i.repository_names, 25)?
        .iter()
        .map(|n| c.on_name("ecr:BatchGetRepositoryScanningConfiguration", n))
        .collect())
}

pub(super) fn batch_get_repository_scanning(
    c: &Call,
    i: ecr::BatchGetRepositoryScanningConfigurationRequest,
) -> Result<ecr::BatchGetRepositoryScanningConfigurationResponse, AwsError> {
    let names = check_names(&i.repository_names, 25)?;
    let config = registry_scanning(c);
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for name in names {
        let Some(repo) = meta::get::<RepoRecord>(c.store(), &c.scope.repo(&name)) else {
            failures.push(ecr::RepositoryScanningConfigurationFailure {
                repository_name: Some(name.clone()),
                failure_code: Some("REPOSITORY_NOT_FOUND".into()),
                failure_reason: Some(format!(
                    "The repository with name '{name}' does not exist in the registry with id '{}'",
                    c.scope.account
                )),
            });
            continue;
        };
        let matching = |freq: &str| -> Vec<ecr::ScanningRepositoryFilter> {
            config
                .rules
                .iter()
                .flatten()
                .filter(|r| r.scan_frequency.as_deref() == Some(freq))
                .flat_map(|r| r.repository_filters.clone().unwrap_or_default())
                .filter(|f| {
                    settings::filter_matches(
                        f.filter_type.as_deref().unwrap_or(""),
                        f.filter.as_deref().unwrap_or(""),
                        &name,
                    )
                })
                .collect()
        };
        let on_push = matching("SCAN_ON_PUSH");
        let scan_on_push = repo.scan_on_push || !on_push.is_empty();
        found.push(ecr::RepositoryScanningConfiguration {
            repository_arn: Some(c.scope.repo_arn(&name)),
            repository_name: Some(name.clone()),
            scan_on_push: Some(scan_on_push),
            scan_frequency: Some(
                if scan_on_push {
                    "SCAN_ON_PUSH"
                } else {
                    "MANUAL"
                }
                .into(),
            ),
            applied_scan_filters: Some(if on_push.is_empty() {
                matching("MANUAL")
            } else {
                on_push
            }),
        });
    }
    Ok(ecr::BatchGetRepositoryScanningConfigurationResponse {
        scanning_configurations: Some(found),
        failures: Some(failures),
    })
}

/// The digest an image id names, or ECR's ImageNotFoundException.
fn image_digest(
    c: &Call,
    name: &str,
    id: &Option<ecr::ImageIdentifier>,
) -> Result<String, AwsError> {
    let id = id.as_ref().ok_or_else(|| missing("imageId"))?;
    c.repo(name)?;
    resolve_id(c.store(), &c.scope, name, id).map_err(|(code, reason)| {
        let shown = format!(
            "{{imageDigest:'{}', imageTag:'{}'}}",
            id.image_digest.as_deref().unwrap_or("null"),
            id.image_tag.as_deref().unwrap_or("null")
        );
        if code == "ImageNotFound" || code == "ImageTagDoesNotMatchDigest" {
            AwsError::bad_request(
                "ImageNotFoundException",
                format!("The image with imageId {shown} does not exist within the repository with name '{name}' in the registry with id '{}'", c.scope.account),
            )
        } else {
            invalid(format!("Invalid image identifier {shown}: {reason}"))
        }
    })
}

pub(super) fn start_image_scan(
    c: &Call,
    i: ecr::StartImageScanRequest,
) -> Result<ecr::StartImageScanResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let digest = image_digest(c, &name, &i.image_id)?;
    Err(AwsError::bad_request(
        "UnsupportedImageTypeException",
        format!(
            "The image {digest} in the repository with name '{name}' cannot be scanned: Berth has no vulnerability scanner (neither ECR basic scanning nor Amazon Inspector), so no image can be scanned."
        ),
    ))
}

pub(super) fn describe_image_scan_findings(
    c: &Call,
    i: ecr::DescribeImageScanFindingsRequest,
) -> Result<ecr::DescribeImageScanFindingsResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let digest = image_digest(c, &name, &i.image_id)?;
    Err(AwsError::bad_request(
        "ScanNotFoundException",
        format!(
            "Image scan does not exist for the image with '{digest}' in the repository with name '{name}' in the registry with id '{}': Berth has no vulnerability scanner, so no image is ever scanned.",
            c.scope.account
        ),
    ))
}

// --- repository creation templates ------------------------------------------------

fn check_prefix(prefix: &Option<String>) -> Result<String, AwsError> {
    let prefix = prefix.as_deref().ok_or_else(|| missing("prefix"))?;
    let trimmed = settings::template_key(prefix);
    let ok = prefix == "ROOT"
        || (prefix.len() <= 256
            && !trimmed.is_empty()
            && trimmed.split('/').all(|part| {
                meta::valid_repository_name(&format!("{part}{part}")) && !part.is_empty()
            }));
    if !ok {
        return Err(invalid(format!(
            "Invalid parameter at 'prefix' failed to satisfy constraint: 'Member must satisfy regular expression pattern: ^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*\\/?|ROOT)$', got '{prefix}'"
        )));
    }
    Ok(prefix.to_string())
}

fn template_not_found(c: &Call, prefix: &str) -> AwsError {
    AwsError::bad_request(
        "TemplateNotFoundException",
        format!(
            "The repository creation template with prefix '{prefix}' does not exist in the registry with id '{}'",
            c.scope.account
        ),
    )
}

/// Checks a template's settings; `creating` requires appliedFor.
fn check_template(t: &mut ecr::RepositoryCreationTemplate, creating: bool) -> Result<(), AwsError> {
    if t.description.as_ref().is_some_and(|d| d.len() > 256) {
        return Err(invalid(
            "Invalid parameter at 'description' failed to satisfy constraint: 'Member must have length less than or equal to 256'",
        ));
    }
    match &t.applied_for {
        None if creating => return Err(missing("appliedFor")),
        Some(list) if list.is_empty() => return Err(missing("appliedFor")),
        Some(list) => {
            for a in list {
                if !ecr::RCT_APPLIED_FOR_VALUES.contains(&a.as_str()) {
                    return Err(invalid(format!(
                        "Invalid parameter at 'appliedFor' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}', got '{a}'",
                        ecr::RCT_APPLIED_FOR_VALUES
                    )));
                }
            }
        }
        None => {}
    }
    if let Some(m) = &t.image_tag_mutability {
        check_mutability(m, &t.image_tag_mutability_exclusion_filters)?;
    } else if t.image_tag_mutability_exclusion_filters.is_some() {
        check_mutability("MUTABLE", &t.image_tag_mutability_exclusion_filters)?;
    }
    if let Some(e) = &t.encryption_configuration {
        let kind = e.encryption_type.as_deref().unwrap_or("");
        if !ecr::ENCRYPTION_TYPE_VALUES.contains(&kind) {
            return Err(invalid(format!(
                "Invalid parameter at 'encryptionConfiguration.encryptionType' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}'",
                ecr::ENCRYPTION_TYPE_VALUES
            )));
        }
        if kind == "AES256" && e.kms_key.is_some() {
            return Err(invalid(
                "A KMS key may only be given with encryptionType KMS or KMS_DSSE.",
            ));
        }
    }
    if let Some(p) = t.repository_policy.as_deref().filter(|p| !p.is_empty()) {
        let ok = p.len() <= 10240
            && serde_json::from_str::<serde_json::Value>(p)
                .ok()
                .is_some_and(|v| v.get("Statement").is_some());
        if !ok {
            return Err(invalid(
                "Invalid parameter at 'repositoryPolicy' failed to satisfy constraint: 'Invalid repository policy provided'",
            ));
        }
    }
    if let Some(p) = t.lifecycle_policy.as_deref().filter(|p| !p.is_empty()) {
        lifecycle::parse(p).map_err(invalid)?;
    }
    if let Some(tags) = &t.resource_tags {
        super::check_tags(tags, &[])?;
    }
    if let Some(role) = t.custom_role_arn.as_deref().filter(|r| !r.is_empty()) {
        if role.len() > 2048 || !role.starts_with("arn:aws:iam::") || !role.contains(":role/") {
            return Err(invalid(format!(
                "Invalid parameter at 'customRoleArn': '{role}' is not an IAM role ARN"
            )));
        }
    }
    Ok(())
}

pub(super) async fn create_template(
    c: &Call<'_>,
    i: ecr::CreateRepositoryCreationTemplateRequest,
) -> Result<ecr::CreateRepositoryCreationTemplateResponse, AwsError> {
    let prefix = check_prefix(&i.prefix)?;
    let now = berth_util::time::now_epoch();
    let mut t = ecr::RepositoryCreationTemplate {
        prefix: Some(prefix.clone()),
        description: i.description,
        encryption_configuration: i.encryption_configuration.or(Some(
            ecr::EncryptionConfigurationForRepositoryCreationTemplate {
                encryption_type: Some("AES256".into()),
                kms_key: None,
            },
        )),
        resource_tags: Some(i.resource_tags.unwrap_or_default()),
        image_tag_mutability: Some(i.image_tag_mutability.unwrap_or_else(|| "MUTABLE".into())),
        image_tag_mutability_exclusion_filters: i.image_tag_mutability_exclusion_filters,
        repository_policy: i.repository_policy,
        lifecycle_policy: i.lifecycle_policy,
        applied_for: i.applied_for,
        custom_role_arn: i.custom_role_arn,
        created_at: Some(now),
        updated_at: Some(now),
    };
    check_template(&mut t, true)?;
    let key = c.scope.template(settings::template_key(&prefix));
    let (value, account, shown) = (t.clone(), c.scope.account.clone(), prefix.clone());
    c.registry
        .store
        .update(move |view| {
            if view.get(&key).is_some() {
                return Err(AwsError::bad_request(
                    "TemplateAlreadyExistsException",
                    format!("The repository creation template with prefix '{shown}' already exists in the registry with id '{account}'"),
                ));
            }
            Ok((vec![Op::put(key.clone(), meta::encode(&value))], ()))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::CreateRepositoryCreationTemplateResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_creation_template: Some(t),
    })
}

pub(super) async fn update_template(
    c: &Call<'_>,
    i: ecr::UpdateRepositoryCreationTemplateRequest,
) -> Result<ecr::UpdateRepositoryCreationTemplateResponse, AwsError> {
    let prefix = check_prefix(&i.prefix)?;
    let key = c.scope.template(settings::template_key(&prefix));
    let not_found = template_not_found(c, &prefix);
    let (_, t) = c
        .registry
        .store
        .update(move |view| {
            let mut t: ecr::RepositoryCreationTemplate =
                meta::get(view, &key).ok_or_else(|| not_found.clone())?;
            if let Some(v) = &i.description {
                t.description = Some(v.clone());
            }
            if let Some(v) = &i.encryption_configuration {
                t.encryption_configuration = Some(v.clone());
            }
            if let Some(v) = &i.resource_tags {
                t.resource_tags = Some(v.clone());
            }
            if let Some(v) = &i.image_tag_mutability {
                t.image_tag_mutability = Some(v.clone());
                t.image_tag_mutability_exclusion_filters =
                    i.image_tag_mutability_exclusion_filters.clone();
            } else if let Some(v) = &i.image_tag_mutability_exclusion_filters {
                t.image_tag_mutability_exclusion_filters = Some(v.clone());
            }
            if let Some(v) = &i.repository_policy {
                t.repository_policy = Some(v.clone());
            }
            if let Some(v) = &i.lifecycle_policy {
                t.lifecycle_policy = Some(v.clone());
            }
            if let Some(v) = &i.applied_for {
                t.applied_for = Some(v.clone());
            }
            if let Some(v) = &i.custom_role_arn {
                t.custom_role_arn = Some(v.clone());
            }
            check_template(&mut t, false)?;
            t.updated_at = Some(berth_util::time::now_epoch());
            Ok((vec![Op::put(key.clone(), meta::encode(&t))], t))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::UpdateRepositoryCreationTemplateResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_creation_template: Some(t),
    })
}

pub(super) async fn delete_template(
    c: &Call<'_>,
    i: ecr::DeleteRepositoryCreationTemplateRequest,
) -> Result<ecr::DeleteRepositoryCreationTemplateResponse, AwsError> {
    let prefix = check_prefix(&i.prefix)?;
    let key = c.scope.template(settings::template_key(&prefix));
    let not_found = template_not_found(c, &prefix);
    let (_, t) = c
        .registry
        .store
        .update(move |view| {
            let t: ecr::RepositoryCreationTemplate =
                meta::get(view, &key).ok_or_else(|| not_found.clone())?;
            Ok((vec![Op::delete(key.clone())], t))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::DeleteRepositoryCreationTemplateResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_creation_template: Some(t),
    })
}

pub(super) fn describe_templates(
    c: &Call,
    i: ecr::DescribeRepositoryCreationTemplatesRequest,
) -> Result<ecr::DescribeRepositoryCreationTemplatesResponse, AwsError> {
    let wanted: Vec<String> = i
        .prefixes
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|p| check_prefix(&Some(p.clone())).map(|p| settings::template_key(&p).to_string()))
        .collect::<Result<_, _>>()?;
    let prefix = c.scope.templates();
    let items: Vec<(String, ecr::RepositoryCreationTemplate)> = meta::scan(c.store(), &prefix)
        .iter()
        .filter_map(|kv| {
            let key = kv.key[prefix.len()..].to_string();
            if !wanted.is_empty() && !wanted.contains(&key) {
                return None;
            }
            Some((key, meta::decode(kv)?))
        })
        .collect();
    let (templates, next) = paginate(items, &i.next_token, i.max_results)?;
    Ok(ecr::DescribeRepositoryCreationTemplatesResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_creation_templates: Some(templates),
        next_token: next,
    })
}

// --- lifecycle policy preview -----------------------------------------------------

fn preview_results(
    view: &(impl berth_store::ReadView + ?Sized),
    scope: &Scope,
    name: &str,
    policy: &lifecycle::Policy,
    now: f64,
) -> Vec<ecr::LifecyclePolicyPreviewResult> {
    let images = meta::images(view, scope, name);
    let input: Vec<lifecycle::Image> = images
        .iter()
        .map(|i| lifecycle::Image {
            digest: i.record.digest.clone(),
            tags: i.tags.clone(),
            pushed_at: i.record.pushed_at,
        })
        .collect();
    lifecycle::evaluate(policy, &input, now)
        .into_iter()
        .filter_map(|(digest, priority)| {
            let image = images.iter().find(|i| i.record.digest == digest)?;
            let mut tags = image.tags.clone();
            tags.sort();
            Some(ecr::LifecyclePolicyPreviewResult {
                image_tags: Some(tags),
                image_digest: Some(digest),
                image_pushed_at: Some(image.record.pushed_at),
                action: Some(ecr::LifecyclePolicyRuleAction {
                    r#type: Some("EXPIRE".into()),
                    target_storage_class: None,
                }),
                applied_rule_priority: Some(priority as i32),
                storage_class: Some("STANDARD".into()),
            })
        })
        .collect()
}

/// Computes the preview at once (nothing is deleted) and keeps it for
/// GetLifecyclePolicyPreview.
pub(super) async fn start_lifecycle_preview(
    c: &Call<'_>,
    i: ecr::StartLifecyclePolicyPreviewRequest,
) -> Result<ecr::StartLifecyclePolicyPreviewResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    if let Some(text) = &i.lifecycle_policy_text {
        if text.len() < 100 || text.len() > 30720 {
            return Err(invalid(
                "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Member must have length between 100 and 30720'",
            ));
        }
        lifecycle::parse(text).map_err(invalid)?;
    }
    let repo = c.repo(&name)?;
    let text = match i.lifecycle_policy_text {
        Some(t) => t,
        None => repo
            .lifecycle_policy
            .ok_or_else(|| super::lifecycle_not_found(c, &name))?,
    };
    let policy = lifecycle::parse(&text).map_err(invalid)?;
    let now = berth_util::time::now_epoch();
    let results = preview_results(c.store(), &c.scope, &name, &policy, now);
    let record = PreviewRecord {
        policy_text: text.clone(),
        status: "COMPLETE".into(),
        results,
        started_at: now,
    };
    c.registry
        .store
        .put(&c.scope.lifecycle_preview(&name), meta::encode(&record))
        .await
        .map_err(store_error)?;
    Ok(ecr::StartLifecyclePolicyPreviewResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        lifecycle_policy_text: Some(text),
        status: Some(record.status),
    })
}

pub(super) fn get_lifecycle_preview(
    c: &Call,
    i: ecr::GetLifecyclePolicyPreviewRequest,
) -> Result<ecr::GetLifecyclePolicyPreviewResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let status = super::tag_status(i.filter.and_then(|f| f.tag_status))?;
    if let Some(n) = i.max_results {
        if !(1..=100).contains(&n) {
            return Err(invalid(format!(
                "Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and 100', got {n}"
            )));
        }
    }
    c.repo(&name)?;
    let record = meta::get::<PreviewRecord>(c.store(), &c.scope.lifecycle_preview(&name))
        .ok_or_else(|| {
            AwsError::bad_request(
                "LifecyclePolicyPreviewNotFoundException",
                format!("There is no lifecycle policy preview for the repository with name '{name}' in the registry with id '{}'", c.scope.account),
            )
        })?;
    let ids = i.image_ids.unwrap_or_default();
    let summary = ecr::LifecyclePolicyPreviewSummary {
        expiring_image_total_count: Some(record.results.len() as i32),
        transitioning_image_total_counts: None,
    };
    let items: Vec<(String, ecr::LifecyclePolicyPreviewResult)> = record
        .results
        .into_iter()
        .filter(|r| {
            let tagged = r.image_tags.as_ref().is_some_and(|t| !t.is_empty());
            match status.as_str() {
                "TAGGED" => tagged,
                "UNTAGGED" => !tagged,
                _ => true,
            }
        })
        .filter(|r| {
            ids.is_empty()
                || ids.iter().any(|id| {
                    id.image_digest.as_ref() == r.image_digest.as_ref()
                        || id.image_tag.as_ref().is_some_and(|t| {
                            r.image_tags.as_ref().is_some_and(|tags| tags.contains(t))
                        })
                })
        })
        .enumerate()
        .map(|(n, r)| (format!("{n:08}"), r))
        .collect();
    let (results, next) = paginate(items, &i.next_token, i.max_results.or(Some(100)))?;
    Ok(ecr::GetLifecyclePolicyPreviewResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        lifecycle_policy_text: Some(record.policy_text),
        status: Some(record.status),
        next_token: next,
        preview_results: Some(results),
        summary: Some(summary),
    })
}

// --- replication --------------------------------------------------------------------

fn valid_filter_value(f: &str) -> bool {
    // ^(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*$, 2-256
    (2..=256).contains(&f.len())
        && f.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        && !f.starts_with('/')
        && !f.contains("//")
}

pub(super) fn check_replication(
    c: &Call,
    i: &ecr::PutReplicationConfigurationRequest,
) -> Result<ecr::ReplicationConfiguration, AwsError> {
    let config = i
        .replication_configuration
        .clone()
        .ok_or_else(|| missing("replicationConfiguration"))?;
    let rules = config
        .rules
        .clone()
        .ok_or_else(|| missing("replicationConfiguration.rules"))?;
    if rules.len() > 10 {
        return Err(invalid(
            "Invalid parameter at 'replicationConfiguration.rules' failed to satisfy constraint: 'Member must have length less than or equal to 10'",
        ));
    }
    let mut destinations_total = 0;
    for rule in &rules {
        let destinations = rule
            .destinations
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| missing("replicationConfiguration.rules.destinations"))?;
        destinations_total += destinations.len();
        for d in destinations {
            let region = d.region.as_deref().unwrap_or("");
            let registry = d.registry_id.as_deref().unwrap_or("");
            let region_ok = (2..=25).contains(&region.len())
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !region_ok {
                return Err(invalid(format!(
                    "Invalid parameter at 'destinations.region' failed to satisfy constraint: 'Member must satisfy regular expression pattern: [0-9a-z-]{{2,25}}', got '{region}'"
                )));
            }
            if registry.len() != 12 || !registry.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "Invalid parameter at 'destinations.registryId' failed to satisfy constraint: 'Member must satisfy regular expression pattern: [0-9]{{12}}', got '{registry}'"
                )));
            }
            if region == c.scope.region && registry == c.scope.account {
                return Err(invalid(format!(
                    "Invalid parameter at 'destinations': replication to the source registry itself ({registry}, {region}) is not allowed"
                )));
            }
        }
        for f in rule.repository_filters.iter().flatten() {
            let value = f.filter.as_deref().unwrap_or("");
            if f.filter_type.as_deref() != Some("PREFIX_MATCH") || !valid_filter_value(value) {
                return Err(invalid(format!(
                    "Invalid parameter at 'repositoryFilters': filterType must be PREFIX_MATCH and filter a repository name prefix of 2-256 characters, got '{value}'"
                )));
            }
        }
        if rule
            .repository_filters
            .as_ref()
            .is_some_and(|f| f.len() > 100)
        {
            return Err(invalid(
                "Invalid parameter at 'repositoryFilters' failed to satisfy constraint: 'Member must have length less than or equal to 100'",
            ));
        }
    }
    if destinations_total > 25 {
        return Err(invalid(
            "A replication configuration may have at most 25 unique destinations across its rules.",
        ));
    }
    Ok(config)
}

pub(super) async fn put_replication(
    c: &Call<'_>,
    i: ecr::PutReplicationConfigurationRequest,
) -> Result<ecr::PutReplicationConfigurationResponse, AwsError> {
    let config = check_replication(c, &i)?;
    c.registry
        .store
        .put(&c.scope.replication_configuration(), meta::encode(&config))
        .await
        .map_err(store_error)?;
    Ok(ecr::PutReplicationConfigurationResponse {
        replication_configuration: Some(config),
    })
}

pub(super) fn describe_replication_status(
    c: &Call,
    i: ecr::DescribeImageReplicationStatusRequest,
) -> Result<ecr::DescribeImageReplicationStatusResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let digest = image_digest(c, &name, &i.image_id)?;
    let record =
        meta::get::<ReplicationRecord>(c.store(), &c.scope.replication_status(&name, &digest))
            .unwrap_or_default();
    Ok(ecr::DescribeImageReplicationStatusResponse {
        repository_name: Some(name),
        image_id: Some(ecr::ImageIdentifier {
            image_digest: Some(digest),
            image_tag: i.image_id.and_then(|id| id.image_tag),
        }),
        replication_statuses: Some(record.statuses),
    })
}

// --- pull-through cache rules -------------------------------------------------------

fn check_cache_prefix(prefix: &Option<String>, member: &str) -> Result<String, AwsError> {
    let prefix = prefix.as_deref().ok_or_else(|| missing(member))?;
    let trimmed = prefix.trim_end_matches('/');
    let ok = prefix == "ROOT"
        || ((2..=30).contains(&prefix.len())
            && !trimmed.is_empty()
            && trimmed
                .split('/')
                .all(|p| !p.is_empty() && meta::valid_repository_name(&format!("{p}{p}"))));
    if !ok {
        return Err(invalid(format!(
            "Invalid parameter at '{member}' failed to satisfy constraint: 'Member must satisfy regular expression pattern: ^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*\\/?|ROOT)$ and have length between 2 and 30', got '{prefix}'"
        )));
    }
    Ok(if prefix == "ROOT" {
        prefix.to_string()
    } else {
        trimmed.to_string()
    })
}

fn rule_not_found(c: &Call, prefix: &str) -> AwsError {
    AwsError::bad_request(
        "PullThroughCacheRuleNotFoundException",
        format!(
            "The pull through cache rule with prefix '{prefix}' does not exist in the registry with id '{}'",
            c.scope.account
        ),
    )
}

fn check_credential_arn(c: &Call, arn: &Option<String>) -> Result<(), AwsError> {
    let Some(arn) = arn else { return Ok(()) };
    let ok = (50..=612).contains(&arn.len())
        && arn.starts_with("arn:aws:secretsmanager:")
        && arn.contains(":secret:ecr-pullthroughcache/");
    if !ok {
        return Err(invalid(format!(
            "Invalid parameter at 'credentialArn' failed to satisfy constraint: 'Member must satisfy regular expression pattern: ^arn:aws(-\\w+)*:secretsmanager:[a-zA-Z0-9-:]+:secret:ecr\\-pullthroughcache\\/[a-zA-Z0-9\\/_+=.@-]+$', got '{arn}'"
        )));
    }
    match c.registry.upstream_credentials(&c.scope, arn) {
        Ok(_) => Ok(()),
        Err(pull_through::CredentialError::NotFound) => Err(AwsError::bad_request(
            "SecretNotFoundException",
            format!("The secret {arn} does not exist or the registry cannot read it."),
        )),
        Err(pull_through::CredentialError::Unreadable(why)) => Err(AwsError::bad_request(
            "UnableToAccessSecretException",
            format!("The secret {arn} cannot be used for a pull through cache rule: {why}"),
        )),
    }
}

pub(super) async fn create_cache_rule(
    c: &Call<'_>,
    i: ecr::CreatePullThroughCacheRuleRequest,
) -> Result<ecr::CreatePullThroughCacheRuleResponse, AwsError> {
    c.check_registry(&i.registry_id)?;
    let prefix = check_cache_prefix(&i.ecr_repository_prefix, "ecrRepositoryPrefix")?;
    let upstream_prefix = match &i.upstream_repository_prefix {
        Some(p) => Some(check_cache_prefix(
            &Some(p.clone()),
            "upstreamRepositoryPrefix",
        )?),
        None => None,
    };
    let url = i
        .upstream_registry_url
        .clone()
        .ok_or_else(|| missing("upstreamRegistryUrl"))?;
    let kind = pull_through::check_upstream(&url, i.upstream_registry.as_deref())
        .map_err(|m| AwsError::bad_request("UnsupportedUpstreamRegistryException", m))?;
    check_credential_arn(c, &i.credential_arn)?;
    let now = berth_util::time::now_epoch();
    let rule = ecr::PullThroughCacheRule {
        ecr_repository_prefix: Some(prefix.clone()),
        upstream_registry_url: Some(url),
        created_at: Some(now),
        registry_id: Some(c.scope.account.clone()),
        credential_arn: i.credential_arn,
        custom_role_arn: i.custom_role_arn,
        upstream_repository_prefix: Some(upstream_prefix.unwrap_or_else(|| "ROOT".into())),
        upstream_registry: kind,
        updated_at: Some(now),
    };
    let (key, all) = (c.scope.cache_rule(&prefix), c.scope.cache_rules());
    let (value, account) = (rule.clone(), c.scope.account.clone());
    c.registry
        .store
        .update(move |view| {
            if view.get(&key).is_some() {
                return Err(AwsError::bad_request(
                    "PullThroughCacheRuleAlreadyExistsException",
                    format!("A pull through cache rule with the prefix '{prefix}' already exists in the registry with id '{account}'"),
                ));
            }
            if meta::scan(view, &all).len() >= 50 {
                return Err(AwsError::bad_request(
                    "LimitExceededException",
                    "The registry already has 50 pull through cache rules.",
                ));
            }
            Ok((vec![Op::put(key.clone(), meta::encode(&value))], ()))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::CreatePullThroughCacheRuleResponse {
        ecr_repository_prefix: rule.ecr_repository_prefix,
        upstream_registry_url: rule.upstream_registry_url,
        created_at: rule.created_at,
        registry_id: rule.registry_id,
        upstream_registry: rule.upstream_registry,
        credential_arn: rule.credential_arn,
        custom_role_arn: rule.custom_role_arn,
        upstream_repository_prefix: rule.upstream_repository_prefix,
    })
}

pub(super) fn describe_cache_rules(
    c: &Call,
    i: ecr::DescribePullThroughCacheRulesRequest,
) -> Result<ecr::DescribePullThroughCacheRulesResponse, AwsError> {
    c.check_registry(&i.registry_id)?;
    let wanted: Vec<String> = i
        .ecr_repository_prefixes
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|p| check_cache_prefix(&Some(p.clone()), "ecrRepositoryPrefixes"))
        .collect::<Result<_, _>>()?;
    for w in &wanted {
        if c.store().get(&c.scope.cache_rule(w)).is_none() {
            return Err(rule_not_found(c, w));
        }
    }
    let prefix = c.scope.cache_rules();
    let items: Vec<(String, ecr::PullThroughCacheRule)> = meta::scan(c.store(), &prefix)
        .iter()
        .filter_map(|kv| {
            let key = kv.key[prefix.len()..].to_string();
            if !wanted.is_empty() && !wanted.contains(&key) {
                return None;
            }
            Some((key, meta::decode(kv)?))
        })
        .collect();
    let (rules, next) = paginate(items, &i.next_token, i.max_results)?;
    Ok(ecr::DescribePullThroughCacheRulesResponse {
        pull_through_cache_rules: Some(rules),
        next_token: next,
    })
}

pub(super) async fn update_cache_rule(
    c: &Call<'_>,
    i: ecr::UpdatePullThroughCacheRuleRequest,
) -> Result<ecr::UpdatePullThroughCacheRuleResponse, AwsError> {
    c.check_registry(&i.registry_id)?;
    let prefix = check_cache_prefix(&i.ecr_repository_prefix, "ecrRepositoryPrefix")?;
    check_credential_arn(c, &i.credential_arn)?;
    let key = c.scope.cache_rule(&prefix);
    let not_found = rule_not_found(c, &prefix);
    let (_, rule) = c
        .registry
        .store
        .update(move |view| {
            let mut rule: ecr::PullThroughCacheRule =
                meta::get(view, &key).ok_or_else(|| not_found.clone())?;
            if let Some(v) = &i.credential_arn {
                rule.credential_arn = Some(v.clone());
            }
            if let Some(v) = &i.custom_role_arn {
                rule.custom_role_arn = Some(v.clone());
            }
            rule.updated_at = Some(berth_util::time::now_epoch());
            Ok((vec![Op::put(key.clone(), meta::encode(&rule))], rule))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::UpdatePullThroughCacheRuleResponse {
        ecr_repository_prefix: rule.ecr_repository_prefix,
        registry_id: rule.registry_id,
        updated_at: rule.updated_at,
        credential_arn: rule.credential_arn,
        custom_role_arn: rule.custom_role_arn,
        upstream_repository_prefix: rule.upstream_repository_prefix,
    })
}

pub(super) async fn delete_cache_rule(
    c: &Call<'_>,
    i: ecr::DeletePullThroughCacheRuleRequest,
) -> Result<ecr::DeletePullThroughCacheRuleResponse, AwsError> {
    c.check_registry(&i.registry_id)?;
    let prefix = check_cache_prefix(&i.ecr_repository_prefix, "ecrRepositoryPrefix")?;
    let key = c.scope.cache_rule(&prefix);
    let not_found = rule_not_found(c, &prefix);
    let (_, rule) = c
        .registry
        .store
        .update(move |view| {
            let rule: ecr::PullThroughCacheRule =
                meta::get(view, &key).ok_or_else(|| not_found.clone())?;
            Ok((vec![Op::delete(key.clone())], rule))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::DeletePullThroughCacheRuleResponse {
        ecr_repository_prefix: rule.ecr_repository_prefix,
        upstream_registry_url: rule.upstream_registry_url,
        created_at: rule.created_at,
        registry_id: rule.registry_id,
        credential_arn: rule.credential_arn,
        custom_role_arn: rule.custom_role_arn,
        upstream_repository_prefix: rule.upstream_repository_prefix,
    })
}

pub(super) async fn validate_cache_rule(
    c: &Call<'_>,
    i: ecr::ValidatePullThroughCacheRuleRequest,
) -> Result<ecr::ValidatePullThroughCacheRuleResponse, AwsError> {
    c.check_registry(&i.registry_id)?;
    let prefix = check_cache_prefix(&i.ecr_repository_prefix, "ecrRepositoryPrefix")?;
    let rule: ecr::PullThroughCacheRule = meta::get(c.store(), &c.scope.cache_rule(&prefix))
        .ok_or_else(|| rule_not_found(c, &prefix))?;
    let failure = c.registry.probe_upstream(&c.scope, &rule).await.err();
    Ok(ecr::ValidatePullThroughCacheRuleResponse {
        ecr_repository_prefix: rule.ecr_repository_prefix,
        registry_id: rule.registry_id,
        upstream_registry_url: rule.upstream_registry_url,
        credential_arn: rule.credential_arn,
        custom_role_arn: rule.custom_role_arn,
        upstream_repository_prefix: rule.upstream_repository_prefix,
        is_valid: Some(failure.is_none()),
        failure,
    })
}
