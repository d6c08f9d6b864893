//! Registry-level records (one registry per account and region): the
//! registry policy, account settings, the registry scanning and replication
//! configurations, repository creation templates, pull-through cache rules,
//! and per-repository lifecycle policy previews and image replication
//! statuses. All live beside the repositories under
//! `/ecr/<account>/<region>/`:
//!
//! - `registry/policy`, `registry/settings/<NAME>`, `registry/scanning`,
//!   `registry/replication`
//! - `templates/<prefix>` (`ROOT` for the root template)
//! - `ptc/<ecr repository prefix>`
//! - `lifecycle-preview/<repo>|`, `replication/<repo>|<digest>`

use berth_model::shapes::ecr;
use berth_store::ReadView;
use serde::{Deserialize, Serialize};

use crate::meta::{self, ExclusionFilter, RepoRecord, Scope, TagPair};

impl Scope {
    pub fn registry_policy(&self) -> String {
        format!("{}registry/policy", self.root())
    }
    pub fn account_setting(&self, name: &str) -> String {
        format!("{}registry/settings/{name}", self.root())
    }
    pub fn scanning_configuration(&self) -> String {
        format!("{}registry/scanning", self.root())
    }
    pub fn replication_configuration(&self) -> String {
        format!("{}registry/replication", self.root())
    }
    pub fn templates(&self) -> String {
        format!("{}templates/", self.root())
    }
    pub fn template(&self, prefix: &str) -> String {
        format!("{}templates/{prefix}", self.root())
    }
    pub fn cache_rules(&self) -> String {
        format!("{}ptc/", self.root())
    }
    pub fn cache_rule(&self, prefix: &str) -> String {
        format!("{}ptc/{prefix}", self.root())
    }
    pub fn lifecycle_preview(&self, name: &str) -> String {
        format!("{}lifecycle-preview/{name}|", self.root())
    }
    pub fn replication_statuses(&self, name: &str) -> String {
        format!("{}replication/{name}|", self.root())
    }
    pub fn replication_status(&self, name: &str, digest: &str) -> String {
        format!("{}replication/{name}|{digest}", self.root())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPolicyRecord {
    pub policy_text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingRecord {
    pub value: String,
}

/// A lifecycle policy preview: computed at once, kept until the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewRecord {
    pub policy_text: String,
    pub status: String,
    pub results: Vec<ecr::LifecyclePolicyPreviewResult>,
    pub started_at: f64,
}

/// Where an image went, per destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRecord {
    pub statuses: Vec<ecr::ImageReplicationStatus>,
    /// The tag the image was pushed with (replicated with it), and when
    /// replication started: an IN_PROGRESS destination older than a pass
    /// of the collector was cut short by a crash and is done again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default)]
    pub started_at: f64,
}

/// The account settings ECR knows, their allowed values and defaults.
pub const ACCOUNT_SETTINGS: &[(&str, &[&str], &str)] = &[
    (
        "BASIC_SCAN_TYPE_VERSION",
        &["AWS_NATIVE", "CLAIR"],
        "AWS_NATIVE",
    ),
    ("REGISTRY_POLICY_SCOPE", &["V1", "V2"], "V2"),
    ("BLOB_MOUNTING", &["ENABLED", "DISABLED"], "ENABLED"),
];

/// The value of account setting `name` (its default when never set).
pub fn account_setting(view: &(impl ReadView + ?Sized), scope: &Scope, name: &str) -> String {
    meta::get::<SettingRecord>(view, &scope.account_setting(name))
        .map(|s| s.value)
        .or_else(|| {
            ACCOUNT_SETTINGS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, _, d)| d.to_string())
        })
        .unwrap_or_default()
}

/// The actions a registry policy governs under scope V1.
const V1_ACTIONS: &[&str] = &[
    "ecr:ReplicateImage",
    "ecr:BatchImportUpstreamImage",
    "ecr:CreateRepository",
];

fn as_list(value: &serde_json::Value) -> Vec<serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => items.clone(),
        serde_json::Value::Null => Vec::new(),
        one => vec![one.clone()],
    }
}

/// A registry policy statement restricted to the V1 actions it names, or
/// nothing when it names none of them.
fn v1_statement(statement: &serde_json::Value) -> Option<serde_json::Value> {
    let mut statement = statement.clone();
    let matches = |pattern: &str, action: &str| {
        meta::wildcard_match(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
    };
    let object = statement.as_object_mut()?;
    if let Some(actions) = object.get("Action").map(as_list) {
        let kept: Vec<serde_json::Value> = V1_ACTIONS
            .iter()
            .filter(|a| {
                actions
                    .iter()
                    .filter_map(|p| p.as_str())
                    .any(|p| matches(p, a))
            })
            .map(|a| serde_json::Value::String(a.to_string()))
            .collect();
        if kept.is_empty() {
            return None;
        }
        object.insert("Action".into(), serde_json::Value::Array(kept));
    } else if let Some(excluded) = object.remove("NotAction").map(|v| as_list(&v)) {
        let kept: Vec<serde_json::Value> = V1_ACTIONS
            .iter()
            .filter(|a| {
                !excluded
                    .iter()
                    .filter_map(|p| p.as_str())
                    .any(|p| matches(p, a))
            })
            .map(|a| serde_json::Value::String(a.to_string()))
            .collect();
        if kept.is_empty() {
            return None;
        }
        object.insert("Action".into(), serde_json::Value::Array(kept));
    }
    Some(statement)
}

/// The resource policy that governs repository `name`: its repository
/// policy's statements and the registry policy's (all of them under
/// REGISTRY_POLICY_SCOPE V2; under V1 only for ecr:ReplicateImage,
/// ecr:BatchImportUpstreamImage and ecr:CreateRepository), as one
/// document. Statements of both kinds are evaluated together, which is how
/// IAM combines two resource policies on one request.
pub fn effective_policy(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    repository_policy: Option<String>,
) -> Option<String> {
    let registry = meta::get::<RegistryPolicyRecord>(view, &scope.registry_policy());
    let Some(registry) = registry else {
        return repository_policy;
    };
    let Ok(registry_doc) = serde_json::from_str::<serde_json::Value>(&registry.policy_text) else {
        return repository_policy;
    };
    let v1 = account_setting(view, scope, "REGISTRY_POLICY_SCOPE") == "V1";
    let mut statements: Vec<serde_json::Value> = as_list(&registry_doc["Statement"])
        .iter()
        .filter_map(|s| if v1 { v1_statement(s) } else { Some(s.clone()) })
        .collect();
    let mut version = registry_doc["Version"].clone();
    if let Some(text) = &repository_policy {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
            return repository_policy;
        };
        let mut own = as_list(&doc["Statement"]);
        own.append(&mut statements);
        statements = own;
        if doc["Version"].is_string() {
            version = doc["Version"].clone();
        }
    }
    if statements.is_empty() {
        return repository_policy;
    }
    if !version.is_string() {
        version = serde_json::Value::String("2012-10-17".into());
    }
    Some(serde_json::json!({"Version": version, "Statement": statements}).to_string())
}

/// How a repository came to be created, for the templates' `appliedFor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    Replication,
    PullThroughCache,
    CreateOnPush,
}

impl Creation {
    pub fn as_str(self) -> &'static str {
        match self {
            Creation::Replication => "REPLICATION",
            Creation::PullThroughCache => "PULL_THROUGH_CACHE",
            Creation::CreateOnPush => "CREATE_ON_PUSH",
        }
    }
}

/// The template key of a prefix: without its trailing `/`.
pub fn template_key(prefix: &str) -> &str {
    if prefix == "ROOT" {
        prefix
    } else {
        prefix.trim_end_matches('/')
    }
}

/// The template that applies to repository `name` created by `how`: the
/// longest prefix `p` with `name` under `p/`, else `ROOT`.
pub fn template_for(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
    how: Creation,
) -> Option<ecr::RepositoryCreationTemplate> {
    let applies = |t: &ecr::RepositoryCreationTemplate| {
        t.applied_for
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s == how.as_str()))
    };
    let prefix = scope.templates();
    let mut best: Option<(usize, ecr::RepositoryCreationTemplate)> = None;
    let mut root = None;
    for kv in meta::scan(view, &prefix) {
        let key = &kv.key[prefix.len()..];
        let Some(t) = meta::decode::<ecr::RepositoryCreationTemplate>(&kv) else {
            continue;
        };
        if !applies(&t) {
            continue;
        }
        if key == "ROOT" {
            root = Some(t);
        } else if name.starts_with(&format!("{key}/"))
            && best.as_ref().is_none_or(|(len, _)| key.len() > *len)
        {
            best = Some((key.len(), t));
        }
    }
    best.map(|(_, t)| t).or(root)
}

/// A new repository `name` as `template` (or ECR's defaults) makes it.
pub fn new_repository(
    name: &str,
    template: Option<&ecr::RepositoryCreationTemplate>,
    now: f64,
) -> RepoRecord {
    let mut record = RepoRecord {
        name: name.to_string(),
        created_at: now,
        image_tag_mutability: "MUTABLE".into(),
        mutability_exclusions: Vec::new(),
        scan_on_push: false,
        encryption_type: "AES256".into(),
        kms_key: None,
        tags: Vec::new(),
        policy: None,
        lifecycle_policy: None,
        lifecycle_evaluated_at: None,
    };
    let Some(t) = template else {
        return record;
    };
    if let Some(m) = &t.image_tag_mutability {
        record.image_tag_mutability = m.clone();
    }
    record.mutability_exclusions = t
        .image_tag_mutability_exclusion_filters
        .iter()
        .flatten()
        .map(|f| ExclusionFilter {
            filter_type: f.filter_type.clone().unwrap_or_default(),
            filter: f.filter.clone().unwrap_or_default(),
        })
        .collect();
    if let Some(e) = &t.encryption_configuration {
        if let Some(kind) = &e.encryption_type {
            record.encryption_type = kind.clone();
        }
        record.kms_key = e.kms_key.clone();
    }
    record.tags = t
        .resource_tags
        .iter()
        .flatten()
        .map(|tag| TagPair {
            key: tag.key.clone().unwrap_or_default(),
            value: tag.value.clone().unwrap_or_default(),
        })
        .collect();
    record.policy = t.repository_policy.clone().filter(|p| !p.is_empty());
    record.lifecycle_policy = t.lifecycle_policy.clone().filter(|p| !p.is_empty());
    record
}

/// Whether a replication or scanning filter `filter` of `kind` selects
/// repository `name` (PREFIX_MATCH: a name prefix; WILDCARD: `*` globs).
pub fn filter_matches(kind: &str, filter: &str, name: &str) -> bool {
    match kind {
        "PREFIX_MATCH" => name.starts_with(filter),
        "WILDCARD" => meta::wildcard_match(filter, name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::{MemoryStore, StoreExt};
    use bytes::Bytes;

    fn scope() -> Scope {
        Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        }
    }

    #[tokio::test]
    async fn registry_policy_joins_repository_policy_by_scope() {
        let store = MemoryStore::new();
        let s = scope();
        let repo = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:ListImages"}]}"#;
        assert_eq!(
            effective_policy(&store, &s, Some(repo.into())).as_deref(),
            Some(repo)
        );
        let registry = serde_json::json!({"Version":"2012-10-17","Statement":{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":["ecr:*"],
            "Resource":"arn:aws:ecr:us-east-1:000000000000:repository/*"}});
        store
            .put(
                &s.registry_policy(),
                meta::encode(&RegistryPolicyRecord {
                    policy_text: registry.to_string(),
                }),
            )
            .await
            .unwrap();
        let merged: serde_json::Value =
            serde_json::from_str(&effective_policy(&store, &s, Some(repo.into())).unwrap())
                .unwrap();
        assert_eq!(merged["Statement"].as_array().unwrap().len(), 2);
        assert_eq!(
            merged["Statement"][1]["Action"],
            serde_json::json!(["ecr:*"])
        );
        // V1: only the three replication/import/create actions.
        store
            .put(
                &s.account_setting("REGISTRY_POLICY_SCOPE"),
                Bytes::from_static(br#"{"value":"V1"}"#),
            )
            .await
            .unwrap();
        let v1: serde_json::Value =
            serde_json::from_str(&effective_policy(&store, &s, None).unwrap()).unwrap();
        assert_eq!(
            v1["Statement"][0]["Action"],
            serde_json::json!(V1_ACTIONS),
            "{v1}"
        );
    }

    #[tokio::test]
    async fn templates_pick_the_longest_prefix_then_root() {
        let store = MemoryStore::new();
        let s = scope();
        for (prefix, applied, mutability) in [
            ("prod", "REPLICATION", "IMMUTABLE"),
            ("prod/team", "REPLICATION", "MUTABLE_WITH_EXCLUSION"),
            ("ROOT", "PULL_THROUGH_CACHE", "IMMUTABLE"),
        ] {
            let t = ecr::RepositoryCreationTemplate {
                prefix: Some(prefix.into()),
                applied_for: Some(vec![applied.into()]),
                image_tag_mutability: Some(mutability.into()),
                ..Default::default()
            };
            store
                .put(&s.template(prefix), meta::encode(&t))
                .await
                .unwrap();
        }
        let pick = |name: &str, how| template_for(&store, &s, name, how).and_then(|t| t.prefix);
        assert_eq!(
            pick("prod/team/a", Creation::Replication).as_deref(),
            Some("prod/team")
        );
        assert_eq!(
            pick("prod/a", Creation::Replication).as_deref(),
            Some("prod")
        );
        assert_eq!(pick("production", Creation::Replication), None);
        assert_eq!(
            pick("x/y", Creation::PullThroughCache).as_deref(),
            Some("ROOT")
        );
        let t = template_for(&store, &s, "prod/a", Creation::Replication);
        let r = new_repository("prod/a", t.as_ref(), 1.0);
        assert_eq!(r.image_tag_mutability, "IMMUTABLE");
    }
}
