//! ListSecrets, and the filters it shares with BatchGetSecretValue.
//!
//! Filters (as Secrets Manager documents them): `name`, `tag-key`,
//! `tag-value`, `primary-region` and `owning-service` match prefixes, case
//! sensitive; `description` and `all` break the value into words and match
//! each as a case-insensitive prefix of a word (`all` of the name, the
//! description, tag keys and values, and the primary Region). A value
//! starting with `!` negates: the secret passes when nothing matches it.
//! Values of one filter are alternatives; filters combine with AND. No
//! Berth secret is owned by another service, so `owning-service` matches
//! none (and `!x` all).
//!
//! ListSecrets sorts by `SortBy` (created date unless given; the name breaks
//! ties) in `SortOrder` (ascending unless given), and its tokens name the
//! last secret shown by that order, so pages stay stable while secrets come
//! and go.

use berth_model::shapes::secretsmanager as sm;
use berth_model::{AwsError, RequestContext};
use berth_util::time::now_secs;

use super::{invalid_next_token, prefix, SecretRecord, SecretsManagerService};
use crate::common::{corrupt, decode_token, encode_token, validation};

pub const FILTER_KEYS: [&str; 7] = [
    "description",
    "name",
    "tag-key",
    "tag-value",
    "primary-region",
    "owning-service",
    "all",
];

/// A checked filter: its key and values.
pub type Filter = (String, Vec<String>);

/// Checks `Filters` against the model's constraints.
pub fn check_filters(filters: &[sm::Filter]) -> Result<Vec<Filter>, AwsError> {
    if filters.len() > 10 {
        return Err(validation(
            "1 validation error detected: Value at 'filters' failed to satisfy constraint: \
             Member must have length less than or equal to 10",
        ));
    }
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let n = i + 1;
            let key = f.key.clone().unwrap_or_default();
            if !FILTER_KEYS.contains(&key.as_str()) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{key}' at 'filters.{n}.member.key' \
                     failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                    FILTER_KEYS.join(", ")
                )));
            }
            let values = f.values.clone().unwrap_or_default();
            if values.is_empty() || values.len() > 10 {
                return Err(validation(format!(
                    "1 validation error detected: Value '[{}]' at 'filters.{n}.member.values' \
                     failed to satisfy constraint: Member must have length less than or equal to \
                     10, Member must have length greater than or equal to 1",
                    values.join(", ")
                )));
            }
            for v in &values {
                let chars_ok = v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || " :_@/+=.-!".contains(c));
                if !chars_ok || v.chars().count() > 512 {
                    return Err(validation(format!(
                        "1 validation error detected: Value '[{}]' at 'filters.{n}.member.values' \
                         failed to satisfy constraint: Member must satisfy constraint: [Member \
                         must have length less than or equal to 512, Member must satisfy regular \
                         expression pattern: ^\\!?[a-zA-Z0-9 :_@\\/\\+\\=\\.\\-\\!]*$]",
                        values.join(", ")
                    )));
                }
            }
            Ok((key, values))
        })
        .collect()
}

/// Words of a string: runs of letters and digits, split again where a
/// lower-case letter meets an upper-case one (`MyDbPassword` → My, Db,
/// Password).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        let mut word = String::new();
        let mut prev_lower = false;
        for c in run.chars() {
            if c.is_uppercase() && prev_lower && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            word.push(c);
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out
}

/// Whether every word of `wanted` begins (case-insensitively) a word of one
/// of `fields`.
fn words_match(fields: &[&str], wanted: &str) -> bool {
    let wanted = words(wanted);
    if wanted.is_empty() {
        return false;
    }
    let have: Vec<String> = fields
        .iter()
        .flat_map(|f| words(f))
        .map(|w| w.to_lowercase())
        .collect();
    wanted.iter().all(|w| {
        let w = w.to_lowercase();
        have.iter().any(|h| h.starts_with(&w))
    })
}

/// Whether `record` passes the filter `key` with `values`. `region` is the
/// Region of the listing.
pub fn filter_matches(record: &SecretRecord, region: &str, key: &str, values: &[String]) -> bool {
    let primary = record.primary_region.as_deref().unwrap_or(region);
    let hit = |v: &str| -> bool {
        match key {
            "name" => record.name.starts_with(v),
            "tag-key" => record.tags.iter().any(|(k, _)| k.starts_with(v)),
            "tag-value" => record.tags.iter().any(|(_, t)| t.starts_with(v)),
            "primary-region" => primary.starts_with(v),
            "owning-service" => false,
            "description" => record.description.as_deref().is_some_and(|d| {
                d.to_lowercase().starts_with(&v.to_lowercase()) || words_match(&[d], v)
            }),
            _ => {
                let mut fields = vec![record.name.as_str(), primary];
                fields.extend(record.description.as_deref());
                fields.extend(
                    record
                        .tags
                        .iter()
                        .flat_map(|(k, t)| [k.as_str(), t.as_str()]),
                );
                words_match(&fields, v)
            }
        }
    };
    let (negated, positive): (Vec<&String>, Vec<&String>) =
        values.iter().partition(|v| v.starts_with('!'));
    (positive.is_empty() || positive.iter().any(|v| hit(v)))
        && !negated.iter().any(|v| hit(&v[1..]))
}

/// The order ListSecrets lists in: a number (a date, or 0 when sorting by
/// name) and the name.
fn sort_key(record: &SecretRecord, sort_by: &str) -> (f64, String) {
    let number = match sort_by {
        "last-changed-date" => record.last_changed,
        "last-accessed-date" => record.last_accessed.unwrap_or(-1.0),
        "name" => 0.0,
        _ => record.created,
    };
    (number, record.name.clone())
}

fn compare(a: &(f64, String), b: &(f64, String)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1))
}

impl SecretsManagerService {
    pub(super) fn list(
        &self,
        ctx: &RequestContext,
        input: sm::ListSecretsRequest,
    ) -> Result<sm::ListSecretsResponse, AwsError> {
        let max = match input.max_results {
            None => 100,
            Some(n) if (1..=100).contains(&n) => n as usize,
            Some(n) => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
                     constraint: Member must have value {}",
                    if n < 1 {
                        "greater than or equal to 1"
                    } else {
                        "less than or equal to 100"
                    }
                )))
            }
        };
        let sort_by = input
            .sort_by
            .clone()
            .unwrap_or_else(|| "created-date".to_string());
        if !sm::SORT_BY_TYPE_VALUES.contains(&sort_by.as_str()) {
            return Err(validation(format!(
                "1 validation error detected: Value '{sort_by}' at 'sortBy' failed to satisfy \
                 constraint: Member must satisfy enum value set: [{}]",
                sm::SORT_BY_TYPE_VALUES.join(", ")
            )));
        }
        let descending = match input.sort_order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{other}' at 'sortOrder' failed to \
                     satisfy constraint: Member must satisfy enum value set: [asc, desc]"
                )))
            }
        };
        let filters = check_filters(input.filters.as_deref().unwrap_or_default())?;
        let after = match &input.next_token {
            Some(t) => {
                let raw = decode_token(t).ok_or_else(invalid_next_token)?;
                let mut parts = raw.splitn(4, '|');
                let (Some("v1"), Some(by), Some(number), Some(name)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(invalid_next_token());
                };
                if by != sort_by {
                    return Err(invalid_next_token());
                }
                let number: f64 = number.parse().map_err(|_| invalid_next_token())?;
                Some((number, name.to_string()))
            }
            None => None,
        };
        let include_deleted = input.include_planned_deletion.unwrap_or(false);
        ctx.authorize(&berth_model::authz::on(
            "secretsmanager:ListSecrets",
            Vec::new(),
        ))?;
        let now = now_secs() as f64;
        let prefix = prefix(&ctx.account_id, &ctx.region);
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let batch = self.store.range(&prefix, cursor.as_deref(), 512);
            let Some(last) = batch.last() else {
                break;
            };
            cursor = Some(last.key.clone());
            for kv in &batch {
                let r: SecretRecord =
                    serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?;
                if r.purged(now) || (r.deleted.is_some() && !include_deleted) {
                    continue;
                }
                if filters
                    .iter()
                    .all(|(k, v)| filter_matches(&r, &ctx.region, k, v))
                {
                    records.push((sort_key(&r, &sort_by), r));
                }
            }
        }
        records.sort_by(|a, b| {
            let order = compare(&a.0, &b.0);
            if descending {
                order.reverse()
            } else {
                order
            }
        });
        if let Some(after) = &after {
            records.retain(|(key, _)| {
                let order = compare(key, after);
                if descending {
                    order.is_lt()
                } else {
                    order.is_gt()
                }
            });
        }
        let more = records.len() > max;
        records.truncate(max);
        let next = if more {
            records
                .last()
                .map(|((n, name), _)| encode_token(&format!("v1|{sort_by}|{n}|{name}")))
        } else {
            None
        };
        let secret_list = records
            .into_iter()
            .map(|(_, r)| self.list_entry(&ctx.region, r))
            .collect();
        Ok(sm::ListSecretsResponse {
            secret_list: Some(secret_list),
            next_token: next,
        })
    }

    fn list_entry(&self, region: &str, r: SecretRecord) -> sm::SecretListEntry {
        sm::SecretListEntry {
            arn: Some(r.arn.clone()),
            name: Some(r.name.clone()),
            description: r.description.clone(),
            kms_key_id: r.kms_key_id.clone(),
            last_changed_date: Some(r.last_changed),
            last_accessed_date: r.last_accessed,
            deleted_date: r.deleted,
            tags: r.tags(),
            secret_versions_to_stages: Some(r.stages_map()),
            created_date: Some(r.created),
            primary_region: Some(
                r.primary_region
                    .clone()
                    .unwrap_or_else(|| region.to_string()),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, description: Option<&str>, tags: &[(&str, &str)]) -> SecretRecord {
        serde_json::from_value(serde_json::json!({
            "name": name, "arn": format!("arn:aws:secretsmanager:us-east-1:0:secret:{name}-AbCdEf"),
            "description": description, "created": 1.0, "last_changed": 1.0, "versions": {},
            "tags": tags.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn passes(r: &SecretRecord, key: &str, values: &[&str]) -> bool {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        filter_matches(r, "us-east-1", key, &values)
    }

    #[test]
    fn filters_match_as_secrets_manager_documents() {
        let db = secret(
            "prod/DatabasePassword",
            Some("The primary database credentials"),
            &[("team", "payments"), ("env", "prod")],
        );
        assert!(passes(&db, "name", &["prod/"]));
        assert!(!passes(&db, "name", &["Prod/"]));
        assert!(passes(&db, "name", &["dev/", "prod/Data"]));
        assert!(passes(&db, "name", &["!dev/"]));
        assert!(!passes(&db, "name", &["!prod"]));
        assert!(passes(&db, "description", &["the primary"]));
        assert!(passes(&db, "description", &["database cred"]));
        assert!(!passes(&db, "description", &["staging"]));
        assert!(passes(&db, "tag-key", &["te"]));
        assert!(!passes(&db, "tag-key", &["!team"]));
        assert!(passes(&db, "tag-value", &["pay"]));
        assert!(passes(&db, "primary-region", &["us-east"]));
        assert!(!passes(&db, "owning-service", &["rds"]));
        assert!(passes(&db, "owning-service", &["!rds"]));
        assert!(passes(&db, "all", &["password"]));
        assert!(passes(&db, "all", &["PAYMENTS"]));
        assert!(passes(&db, "all", &["database prod"]));
        assert!(!passes(&db, "all", &["staging"]));
        assert_eq!(
            words("MyDbPassword2/x-y"),
            ["My", "Db", "Password2", "x", "y"]
        );
    }

    #[test]
    fn filter_values_are_checked() {
        let f = |key: &str, values: &[&str]| {
            check_filters(&[sm::Filter {
                key: Some(key.into()),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }])
        };
        assert!(f("name", &["ok/name-1"]).is_ok());
        assert!(f("name", &["!negated"]).is_ok());
        assert!(f("colour", &["x"]).is_err());
        assert!(f("name", &[]).is_err());
        assert!(f("name", &["bad*char"]).is_err());
        assert!(f("name", &[&"x".repeat(513)]).is_err());
    }
}
