//! What Secrets Manager and Parameter Store calls ask of IAM: the resource's
//! canonical ARN, resolved from whatever form the caller used, and the
//! condition keys the Service Authorization Reference lists for it.
//!
//! A secret's ARN ends in `-` and six random characters (`secret:prod/db-AbCdEf`);
//! a caller may name it by name (`prod/db`), by partial ARN (without the
//! suffix) or by full ARN. Every form resolves to the stored secret's full
//! ARN before IAM is asked, so a Deny on `secret:prod/db-??????` holds
//! whichever form the caller writes. A reference that names no secret is
//! authorized as written (AWS answers AccessDenied or ResourceNotFound
//! accordingly).
//!
//! Parameters: `/a/b` and `a` have the ARNs `parameter/a/b` and `parameter/a`;
//! a `name:version` or `name:label` selector names the parameter itself.

use berth_model::authz::Requirement;
use berth_model::AwsError;
use berth_store::ReadView;

use crate::secretsmanager::{find_secret, SecretRecord};
use crate::ssm::{find_param, ParamRecord};

/// The IAM action prefix of Secrets Manager.
pub const SECRETS_MANAGER: &str = "secretsmanager";
/// `secretsmanager:SecretId`: the secret's ARN.
pub const SECRET_ID: &str = "secretsmanager:SecretId";
/// `secretsmanager:ResourceTag/<key>`, Secrets Manager's own spelling of
/// `aws:ResourceTag/<key>`.
pub const SM_RESOURCE_TAG_PREFIX: &str = "secretsmanager:ResourceTag/";
/// `ssm:resourceTag/<key>`, SSM's own spelling of `aws:ResourceTag/<key>`.
pub const SSM_RESOURCE_TAG_PREFIX: &str = "ssm:resourceTag/";

/// A secret as a call names it, resolved for authorization.
#[derive(Debug, Clone)]
pub struct SecretTarget {
    /// The stored secret's full ARN, or the ARN the caller's reference
    /// names when no secret matches it.
    pub arn: String,
    /// The stored secret, when the reference names one.
    pub record: Option<SecretRecord>,
}

impl SecretTarget {
    /// The requirement of `secretsmanager:<operation>` on this secret, with
    /// `secretsmanager:SecretId` and the secret's tags
    /// (`aws:ResourceTag/<k>` and `secretsmanager:ResourceTag/<k>`).
    pub fn requirement(&self, operation: &str) -> Requirement {
        secret_requirement(
            operation,
            &self.arn,
            self.record.as_ref().map_or(&[][..], |r| &r.tags[..]),
        )
    }

    /// The stored secret's ARN: what the handler acts on after the check
    /// (so a secret replaced meanwhile is not found, never another one).
    pub fn found_arn(&self) -> Option<&str> {
        self.record.as_ref().map(|r| r.arn.as_str())
    }
}

/// `secretsmanager:<operation>` on the secret `arn` with tags `tags`.
pub fn secret_requirement(operation: &str, arn: &str, tags: &[(String, String)]) -> Requirement {
    let requirement =
        Requirement::new(format!("{SECRETS_MANAGER}:{operation}"), arn).condition(SECRET_ID, arn);
    with_tags(requirement, tags, SM_RESOURCE_TAG_PREFIX)
}

/// `aws:ResourceTag/<k>` and the service's own `<prefix><k>` for each tag.
pub(crate) fn with_tags(
    requirement: Requirement,
    tags: &[(String, String)],
    prefix: &str,
) -> Requirement {
    let mut requirement =
        requirement.resource_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (key, value) in tags {
        requirement = requirement.condition(format!("{prefix}{key}"), value.clone());
    }
    requirement
}

/// The ARN a secret reference names when no stored secret matches it: an
/// ARN as written, a name as the (suffix-less) ARN of that name.
pub fn secret_arn_as_given(account: &str, region: &str, secret_id: &str) -> String {
    if secret_id.starts_with("arn:") {
        secret_id.to_string()
    } else {
        format!("arn:aws:{SECRETS_MANAGER}:{region}:{account}:secret:{secret_id}")
    }
}

/// Resolves `secret_id` (a name, a partial ARN or a full ARN) to the stored
/// secret, or to the ARN as written when none matches.
pub fn resolve_secret<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    secret_id: &str,
    now: f64,
) -> Result<SecretTarget, AwsError> {
    let found = if secret_id.is_empty() {
        None
    } else {
        find_secret(view, account, region, secret_id, now)?
    };
    Ok(match found {
        Some((_, record)) => SecretTarget {
            arn: record.arn.clone(),
            record: Some(record),
        },
        None => SecretTarget {
            arn: secret_arn_as_given(account, region, secret_id),
            record: None,
        },
    })
}

/// The canonical ARN of the secret a Secrets Manager ARN (full or partial)
/// names, or the ARN as written when it names none: what a check of
/// `secretsmanager:GetSecretValue` on a container's `valueFrom` must name.
pub fn canonical_secret_arn<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    secret_arn: &str,
) -> String {
    resolve_secret(
        view,
        account,
        region,
        secret_arn,
        berth_util::time::now_secs() as f64,
    )
    .map(|t| t.arn)
    .unwrap_or_else(|_| secret_arn.to_string())
}

/// A parameter as a call names it, resolved for authorization.
#[derive(Debug, Clone)]
pub struct ParamTarget {
    /// `arn:aws:ssm:<region>:<account>:parameter/<name without leading />`.
    pub arn: String,
    /// The stored parameter, when the reference names one.
    pub record: Option<ParamRecord>,
}

impl ParamTarget {
    /// The requirement of `ssm:<operation>` on this parameter, with its
    /// tags (`aws:ResourceTag/<k>` and `ssm:resourceTag/<k>`).
    pub fn requirement(&self, operation: &str) -> Requirement {
        let requirement = Requirement::new(format!("ssm:{operation}"), self.arn.clone());
        match &self.record {
            Some(record) => with_tags(requirement, &record.tags, SSM_RESOURCE_TAG_PREFIX),
            None => requirement,
        }
    }
}

/// Resolves a parameter reference (a name, `name:selector`, or the
/// parameter's ARN with an optional selector) to the parameter's ARN and
/// record. Another account's or region's ARN is authorized as written and
/// names no record. A malformed ARN is the caller's ValidationException.
pub fn resolve_parameter<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    region: &str,
    reference: &str,
) -> Result<ParamTarget, AwsError> {
    if !reference.starts_with("arn:") {
        let name = reference
            .rsplit_once(':')
            .map_or(reference, |(name, _)| name);
        let record = find_param(view, account, region, name)?.map(|(_, r)| r);
        return Ok(ParamTarget {
            arn: berth_model::arn::ssm_parameter_arn(region, account, name),
            record,
        });
    }
    let invalid = || crate::common::validation(format!("{reference} is not a parameter ARN."));
    let parts: Vec<&str> = reference.splitn(6, ':').collect();
    let [_, partition, "ssm", r, a, rest] = parts.as_slice() else {
        return Err(invalid());
    };
    let name = match rest.strip_prefix("parameter") {
        Some(name) if name.starts_with('/') => name,
        _ => return Err(invalid()),
    };
    let name = name.rsplit_once(':').map_or(name, |(name, _)| name);
    let record = if *a == account && *r == region {
        find_param(view, account, region, name)?.map(|(_, r)| r)
    } else {
        None
    };
    let arn = match &record {
        Some(record) => berth_model::arn::ssm_parameter_arn(region, account, &record.name),
        None => format!("arn:{partition}:ssm:{r}:{a}:parameter{name}"),
    };
    Ok(ParamTarget { arn, record })
}

/// Resource policies for the IAM authorizer: the policy attached to the
/// secret an ARN names exactly (Secrets Manager's PutResourcePolicy), and
/// the policies attached to a parameter (Parameter Store's
/// PutResourcePolicy), combined into one document.
pub struct SecretPolicies {
    store: std::sync::Arc<dyn berth_store::Store>,
}

impl SecretPolicies {
    pub fn new(store: std::sync::Arc<dyn berth_store::Store>) -> Self {
        SecretPolicies { store }
    }
}

impl berth_model::authz::ResourcePolicySource for SecretPolicies {
    fn resource_policy(&self, resource_arn: &str) -> Option<String> {
        // Cheap refusal of every other service's ARNs: the authorizer asks
        // for each requirement of each call.
        let rest = resource_arn.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let (_, service, region, account) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let resource = parts.next()?;
        if service == "ssm" && resource.starts_with("parameter/") {
            let name = &resource["parameter".len()..];
            let (_, record) = find_param(self.store.as_ref(), account, region, name).ok()??;
            // Only the parameter's own ARN: authorization always names it.
            let canonical = berth_model::arn::ssm_parameter_arn(region, account, &record.name);
            return (canonical == resource_arn)
                .then(|| crate::ssm::combined_resource_policy(&record.resource_policies))
                .flatten();
        }
        if service != SECRETS_MANAGER || !resource.starts_with("secret:") {
            return None;
        }
        let now = berth_util::time::now_secs() as f64;
        let (_, record) =
            find_secret(self.store.as_ref(), account, region, resource_arn, now).ok()??;
        // Only the secret's own (full) ARN: authorization always names it.
        (record.arn == resource_arn)
            .then_some(record.resource_policy)
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use berth_model::authz::ResourcePolicySource;
    use berth_store::{SqliteOptions, SqliteStore, Store, StoreExt};

    use crate::secretsmanager::prefix as secret_prefix;
    use crate::ssm::{prefix as param_prefix, ParamVersion, StoredValue};

    const A: &str = "000000000000";
    const R: &str = "us-east-1";
    const DB: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db-AbCdEf";

    fn secret(name: &str, arn: &str, tags: &[(&str, &str)]) -> SecretRecord {
        serde_json::from_value(serde_json::json!({
            "name": name, "arn": arn, "created": 1.0, "last_changed": 1.0,
            "versions": {},
            "tags": tags.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
            "resource_policy": "{\"Statement\":[]}",
        }))
        .unwrap()
    }

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("s.db"))).unwrap());
        for record in [
            secret("prod/db", DB, &[("team", "blue")]),
            // A secret whose *name* looks like a suffixed ARN's tail.
            secret(
                "prod/db-XyZ123",
                "arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db-XyZ123-Qwerty",
                &[],
            ),
        ] {
            let key = format!("{}{}", secret_prefix(A, R), record.name);
            let bytes = serde_json::to_vec(&record).unwrap();
            store.put(&key, bytes.into()).await.unwrap();
        }
        for name in ["/app/db", "plain"] {
            let record = ParamRecord {
                name: name.to_string(),
                description: None,
                tier: "Standard".into(),
                data_type: "text".into(),
                tags: vec![("env".into(), "prod".into())],
                versions: vec![ParamVersion {
                    version: 1,
                    r#type: "String".into(),
                    key_id: None,
                    value: StoredValue::Plain("v".into()),
                    modified: 1.0,
                    user: "u".into(),
                    labels: vec![],
                    allowed_pattern: None,
                    policies: vec![],
                }],
                resource_policies: vec![],
            };
            let key = format!("{}{name}", param_prefix(A, R));
            let bytes = serde_json::to_vec(&record).unwrap();
            store.put(&key, bytes.into()).await.unwrap();
        }
        (dir, store)
    }

    #[tokio::test]
    async fn every_form_of_a_secret_resolves_to_its_full_arn() {
        let (_dir, store) = store().await;
        let view = store.as_ref();
        let partial = "arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db";
        for form in ["prod/db", partial, DB] {
            let t = resolve_secret(view, A, R, form, 2.0).unwrap();
            assert_eq!(t.arn, DB, "{form}");
            assert_eq!(t.found_arn(), Some(DB));
            let r = t.requirement("GetSecretValue");
            assert_eq!(r.action, "secretsmanager:GetSecretValue");
            assert_eq!(r.resource, DB);
            assert_eq!(r.condition_of(SECRET_ID), Some(&[DB.to_string()][..]));
            assert_eq!(
                r.condition_of("aws:ResourceTag/team"),
                Some(&["blue".to_string()][..])
            );
            assert_eq!(
                r.condition_of("secretsmanager:ResourceTag/team"),
                Some(&["blue".to_string()][..])
            );
        }
        // A name with a suffix-like tail is that secret, not prod/db.
        let t = resolve_secret(view, A, R, "prod/db-XyZ123", 2.0).unwrap();
        assert!(t.arn.ends_with(":secret:prod/db-XyZ123-Qwerty"));
        // A full ARN with the wrong suffix names nothing and is authorized
        // as written; so are unknown names and other accounts' ARNs.
        let wrong = "arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db-ZZZZZZ";
        for (form, arn) in [
            (wrong, wrong.to_string()),
            (
                "nope",
                "arn:aws:secretsmanager:us-east-1:000000000000:secret:nope".to_string(),
            ),
            (
                "arn:aws:secretsmanager:us-east-1:111111111111:secret:prod/db",
                "arn:aws:secretsmanager:us-east-1:111111111111:secret:prod/db".to_string(),
            ),
        ] {
            let t = resolve_secret(view, A, R, form, 2.0).unwrap();
            assert_eq!((t.arn.as_str(), t.found_arn()), (arn.as_str(), None));
            assert!(t
                .requirement("DescribeSecret")
                .condition_of("aws:ResourceTag/team")
                .is_none());
        }
    }

    #[tokio::test]
    async fn parameter_references_name_the_parameter() {
        let (_dir, store) = store().await;
        let view = store.as_ref();
        let db = "arn:aws:ssm:us-east-1:000000000000:parameter/app/db";
        for form in [
            "/app/db",
            "/app/db:1",
            "/app/db:prod-label",
            db,
            &format!("{db}:1"),
        ] {
            let t = resolve_parameter(view, A, R, form).unwrap();
            assert_eq!(t.arn, db, "{form}");
            let r = t.requirement("GetParameter");
            assert_eq!(
                r.condition_of("aws:ResourceTag/env"),
                Some(&["prod".to_string()][..])
            );
            assert_eq!(
                r.condition_of("ssm:resourceTag/env"),
                Some(&["prod".to_string()][..])
            );
        }
        let plain = "arn:aws:ssm:us-east-1:000000000000:parameter/plain";
        for form in ["plain", "plain:1", plain] {
            let t = resolve_parameter(view, A, R, form).unwrap();
            assert_eq!(t.arn, plain, "{form}");
            assert!(t.record.is_some());
        }
        let t = resolve_parameter(view, A, R, "/missing/x:3").unwrap();
        assert_eq!(
            t.arn,
            "arn:aws:ssm:us-east-1:000000000000:parameter/missing/x"
        );
        assert!(t.record.is_none());
        let other = "arn:aws:ssm:eu-west-1:000000000000:parameter/app/db";
        let t = resolve_parameter(view, A, R, other).unwrap();
        assert_eq!((t.arn.as_str(), t.record.is_none()), (other, true));
        assert!(resolve_parameter(view, A, R, "arn:aws:ssm:us-east-1:0:document/x").is_err());
    }

    #[tokio::test]
    async fn secret_policies_answer_for_the_full_arn_only() {
        let (_dir, store) = store().await;
        let policies = SecretPolicies::new(store);
        assert!(policies.resource_policy(DB).is_some());
        let partial = "arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db";
        assert_eq!(policies.resource_policy(partial), None);
        assert_eq!(policies.resource_policy("*"), None);
        assert_eq!(
            policies.resource_policy("arn:aws:ecr:us-east-1:000000000000:repository/x"),
            None
        );
    }
}
