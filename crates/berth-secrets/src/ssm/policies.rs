//! Parameter policies (PutParameter's `Policies`): `Expiration`,
//! `ExpirationNotification` and `NoChangeNotification`, validated as
//! Parameter Store validates them and kept with the parameter.
//!
//! `Expiration` is enforced: [`spawn_parameter_expiry`] is a leader-only
//! controller that deletes a parameter when its expiration time comes. It
//! works from an index, `/ssm-expiry/<epoch seconds>/<account>/<region>/<name>`,
//! written in the same transaction as the parameter, so it reads only what
//! is due; every pass re-reads the parameter and deletes it only when its
//! current policy still names that time (level-triggered, safe to run twice
//! or after a crash).
//!
//! The two notification policies are stored and shown (`PolicyStatus`
//! `Pending`) but never fire: they publish to Amazon EventBridge, which
//! Berth does not have.

use std::sync::Arc;
use std::time::Duration;

use berth_model::shapes::ssm;
use berth_model::AwsError;
use berth_store::{Op, Store, StoreExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::validation;

pub const EXPIRATION: &str = "Expiration";
pub const EXPIRATION_NOTIFICATION: &str = "ExpirationNotification";
pub const NO_CHANGE_NOTIFICATION: &str = "NoChangeNotification";
/// A parameter carries at most this many policies.
const MAX_POLICIES: usize = 10;
/// Where the expiry index lives (outside every account's prefix, so one
/// range read finds what is due everywhere, in time order).
pub const EXPIRY_PREFIX: &str = "/ssm-expiry/";
/// The longest the controller sleeps between passes.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One policy of a parameter, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamPolicy {
    /// The policy object as the caller wrote it (compact JSON).
    pub text: String,
    pub r#type: String,
    /// For `Expiration`: when the parameter goes, in epoch seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl ParamPolicy {
    /// As DescribeParameters and GetParameterHistory show it.
    pub fn shape(&self) -> ssm::ParameterInlinePolicy {
        ssm::ParameterInlinePolicy {
            policy_text: Some(self.text.clone()),
            policy_type: Some(self.r#type.clone()),
            // Nothing is applied before its time; an applied Expiration
            // leaves no parameter to show.
            policy_status: Some("Pending".to_string()),
        }
    }
}

fn attribute_error(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidPolicyAttributeException", message)
}

/// Parses `Policies`. An empty array, or `[{}]` as the Parameter Store
/// documentation writes it, removes every policy. `now` is epoch seconds.
pub fn parse(text: &str, now: i64) -> Result<Vec<ParamPolicy>, AwsError> {
    if text.is_empty() || text.chars().count() > 4096 {
        return Err(validation(format!(
            "1 validation error detected: Value at 'policies' failed to satisfy constraint: \
             Member must have length {}",
            if text.is_empty() {
                "greater than or equal to 1"
            } else {
                "less than or equal to 4096"
            }
        )));
    }
    let items = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        _ => {
            return Err(attribute_error(
                "Policies must be a JSON array of policy objects, such as \
                 [{\"Type\":\"Expiration\",\"Version\":\"1.0\",\"Attributes\":\
                 {\"Timestamp\":\"2030-01-01T00:00:00.000Z\"}}].",
            ))
        }
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(object) = &item else {
            return Err(attribute_error("Each policy must be a JSON object."));
        };
        if object.is_empty() {
            continue;
        }
        out.push(parse_one(&item, now)?);
    }
    if out.len() > MAX_POLICIES {
        return Err(AwsError::bad_request(
            "PoliciesLimitExceededException",
            "You specified more than the maximum number of allowed policies for the parameter. \
             The maximum is 10.",
        ));
    }
    if out.iter().filter(|p| p.r#type == EXPIRATION).count() > 1 {
        return Err(AwsError::bad_request(
            "IncompatiblePolicyException",
            "There is a conflict in the policies specified for this parameter. You can't, for \
             example, specify two Expiration policies for a parameter. Review your policies, and \
             try again.",
        ));
    }
    Ok(out)
}

fn parse_one(item: &Value, now: i64) -> Result<ParamPolicy, AwsError> {
    let kind = item.get("Type").and_then(Value::as_str).unwrap_or_default();
    if ![EXPIRATION, EXPIRATION_NOTIFICATION, NO_CHANGE_NOTIFICATION].contains(&kind) {
        return Err(AwsError::bad_request(
            "InvalidPolicyTypeException",
            format!(
                "The policy type {kind} isn't supported. Parameter Store supports the following \
                 policy types: Expiration, ExpirationNotification, and NoChangeNotification."
            ),
        ));
    }
    if item.get("Version").and_then(Value::as_str) != Some("1.0") {
        return Err(attribute_error(format!(
            "The {kind} policy must have \"Version\": \"1.0\"."
        )));
    }
    let Some(Value::Object(attributes)) = item.get("Attributes") else {
        return Err(attribute_error(format!(
            "The {kind} policy must have an Attributes object."
        )));
    };
    if let Some(extra) = item.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["Type", "Version", "Attributes"].contains(&k.as_str()))
    }) {
        return Err(attribute_error(format!(
            "The {kind} policy has an unknown member {extra}."
        )));
    }
    let allowed: &[&str] = match kind {
        EXPIRATION => &["Timestamp"],
        EXPIRATION_NOTIFICATION => &["Before", "Unit"],
        _ => &["After", "Unit"],
    };
    if let Some(extra) = attributes.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(attribute_error(format!(
            "The {kind} policy has an unknown attribute {extra}. Its attributes are {}.",
            allowed.join(" and ")
        )));
    }
    let mut expires_at = None;
    if kind == EXPIRATION {
        let stamp = attributes
            .get("Timestamp")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let at = berth_util::time::parse_iso8601_secs(stamp).ok_or_else(|| {
            attribute_error(format!(
                "The Expiration policy's Timestamp '{stamp}' is not a date and time in the \
                 ISO_INSTANT (2030-01-01T00:00:00.000Z) or ISO_OFFSET_DATE_TIME \
                 (2030-01-01T10:30:00+10:30) format."
            ))
        })?;
        if at <= now {
            return Err(attribute_error(format!(
                "The Expiration policy's Timestamp {stamp} is in the past. Specify a future date \
                 and time."
            )));
        }
        expires_at = Some(at);
    } else {
        let amount_key = if kind == EXPIRATION_NOTIFICATION {
            "Before"
        } else {
            "After"
        };
        let amount = match attributes.get(amount_key) {
            Some(Value::String(s)) => s.parse::<u32>().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        if amount.is_none_or(|n| n < 1) {
            return Err(attribute_error(format!(
                "The {kind} policy's {amount_key} attribute must be a positive whole number."
            )));
        }
        let unit = attributes.get("Unit").and_then(Value::as_str);
        if !matches!(unit, Some("Days") | Some("Hours")) {
            return Err(attribute_error(format!(
                "The {kind} policy's Unit attribute must be Days or Hours."
            )));
        }
    }
    Ok(ParamPolicy {
        text: item.to_string(),
        r#type: kind.to_string(),
        expires_at,
    })
}

/// When a parameter with `policies` expires.
pub fn expiry(policies: &[ParamPolicy]) -> Option<i64> {
    policies.iter().find_map(|p| p.expires_at)
}

/// The index entry of a parameter (by its storage name) that expires at `at`.
pub fn expiry_key(account: &str, region: &str, storage_name: &str, at: i64) -> String {
    format!(
        "{EXPIRY_PREFIX}{:012}/{account}/{region}/{storage_name}",
        at.max(0)
    )
}

/// `(at, account, region, storage name)` of an index key.
fn parse_expiry_key(key: &str) -> Option<(i64, &str, &str, &str)> {
    let rest = key.strip_prefix(EXPIRY_PREFIX)?;
    let mut parts = rest.splitn(4, '/');
    let at = parts.next()?.parse().ok()?;
    Some((at, parts.next()?, parts.next()?, parts.next()?))
}

/// The index writes that move a parameter's expiry from `before` to `after`.
pub fn index_ops(
    account: &str,
    region: &str,
    storage_name: &str,
    before: Option<i64>,
    after: Option<i64>,
) -> Vec<Op> {
    if before == after {
        return Vec::new();
    }
    let mut ops = Vec::new();
    if let Some(at) = before {
        ops.push(Op::delete(expiry_key(account, region, storage_name, at)));
    }
    if let Some(at) = after {
        ops.push(Op::put(
            expiry_key(account, region, storage_name, at),
            Vec::new(),
        ));
    }
    ops
}

/// One pass: deletes every parameter whose expiration is at or before
/// `now`. Returns how many went and when the next one is due.
pub async fn expire_due(
    store: &dyn Store,
    now: i64,
) -> Result<(usize, Option<i64>), berth_store::StoreError> {
    let mut deleted = 0;
    let mut after: Option<String> = None;
    loop {
        let batch = store.range(EXPIRY_PREFIX, after.as_deref(), 256);
        if batch.is_empty() {
            return Ok((deleted, None));
        }
        for kv in batch {
            after = Some(kv.key.clone());
            let Some((at, account, region, name)) = parse_expiry_key(&kv.key) else {
                // Not ours to interpret: drop it so it is not read forever.
                let key = kv.key.clone();
                store
                    .mutate(Box::new(move |_| Ok(vec![Op::delete(key.clone())])))
                    .await?;
                continue;
            };
            if at > now {
                return Ok((deleted, Some(at)));
            }
            let index_key = kv.key.clone();
            let param_key = format!("{}{name}", super::prefix(account, region));
            let outcome = store
                .update(move |view| {
                    let mut ops = vec![Op::delete(index_key.clone())];
                    let current = view.get(&param_key).and_then(|kv| {
                        serde_json::from_slice::<super::ParamRecord>(&kv.value).ok()
                    });
                    let due = current.is_some_and(|r| r.expires_at() == Some(at));
                    if due {
                        ops.push(Op::delete(param_key.clone()));
                    }
                    Ok::<_, ()>((ops, due))
                })
                .await?;
            if let Ok((_, true)) = outcome {
                tracing::info!(parameter = name, account, region, "parameter expired");
                deleted += 1;
            }
        }
    }
}

/// The Expiration controller: deletes parameters when their Expiration
/// policy's time comes. Only the leader runs it (see
/// `Node::start_leader_work`); it restarts from the store, so aborting it
/// and starting it elsewhere loses nothing.
pub fn spawn_parameter_expiry(store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let revision = store.revision();
            let now = berth_util::time::now_secs();
            let next = match expire_due(store.as_ref(), now).await {
                Ok((_, next)) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "parameter expiry pass failed");
                    None
                }
            };
            let wait = next
                .map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            // A new policy may expire sooner than the next one known: wake
            // when the index changes.
            let mut watch = store.watch(EXPIRY_PREFIX, revision).await.ok();
            let changed = async {
                match watch.as_mut() {
                    Some(w) => {
                        w.next().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_900_000_000;

    fn code(text: &str) -> String {
        parse(text, NOW).unwrap_err().code.to_string()
    }

    #[test]
    fn policies_parse_as_parameter_store_writes_them() {
        let text = r#"[{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2030-05-13T00:00:00.000Z"}},
            {"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"5","Unit":"Days"}},
            {"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"15","Unit":"Days"}},
            {"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"60","Unit":"Hours"}}]"#;
        let policies = parse(text, NOW).unwrap();
        assert_eq!(policies.len(), 4);
        assert_eq!(expiry(&policies), Some(1_904_860_800));
        assert_eq!(policies[1].r#type, EXPIRATION_NOTIFICATION);
        // ISO_OFFSET_DATE_TIME as the documentation shows it.
        let offset = r#"[{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2030-11-01T22:13:48.87+10:30"}}]"#;
        assert!(expiry(&parse(offset, NOW).unwrap()).is_some());
        // `[{}]` and `[]` remove every policy.
        assert!(parse("[{}]", NOW).unwrap().is_empty());
        assert!(parse("[]", NOW).unwrap().is_empty());
    }

    #[test]
    fn bad_policies_are_refused_with_parameter_stores_errors() {
        let exp = |ts: &str| {
            format!(
                r#"{{"Type":"Expiration","Version":"1.0","Attributes":{{"Timestamp":"{ts}"}}}}"#
            )
        };
        assert_eq!(code("{}"), "InvalidPolicyAttributeException");
        assert_eq!(code("not json"), "InvalidPolicyAttributeException");
        assert_eq!(
            code(r#"[{"Type":"Rotate","Version":"1.0","Attributes":{}}]"#),
            "InvalidPolicyTypeException"
        );
        assert_eq!(
            code(
                r#"[{"Type":"Expiration","Version":"2.0","Attributes":{"Timestamp":"2030-01-01T00:00:00Z"}}]"#
            ),
            "InvalidPolicyAttributeException"
        );
        assert_eq!(
            code(&format!("[{}]", exp("2001-01-01T00:00:00Z"))),
            "InvalidPolicyAttributeException"
        );
        assert_eq!(
            code(&format!("[{}]", exp("tomorrow"))),
            "InvalidPolicyAttributeException"
        );
        assert_eq!(
            code(&format!(
                "[{},{}]",
                exp("2031-01-01T00:00:00Z"),
                exp("2032-01-01T00:00:00Z")
            )),
            "IncompatiblePolicyException"
        );
        assert_eq!(
            code(
                r#"[{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"0","Unit":"Days"}}]"#
            ),
            "InvalidPolicyAttributeException"
        );
        assert_eq!(
            code(
                r#"[{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"3","Unit":"Weeks"}}]"#
            ),
            "InvalidPolicyAttributeException"
        );
        assert_eq!(
            code(
                r#"[{"Type":"ExpirationNotification","Version":"1.0","Attributes":{"After":"3","Unit":"Days"}}]"#
            ),
            "InvalidPolicyAttributeException"
        );
        let eleven = [r#"{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"3","Unit":"Days"}}"#;
            11];
        assert_eq!(
            code(&format!("[{}]", eleven.join(","))),
            "PoliciesLimitExceededException"
        );
        assert_eq!(code(""), "ValidationException");
    }

    #[test]
    fn index_keys_round_trip_and_sort_by_time() {
        let a = expiry_key("000000000000", "us-east-1", "/a/b", 99);
        let b = expiry_key("000000000000", "us-east-1", "x", 1_000);
        assert!(a < b);
        assert_eq!(
            parse_expiry_key(&a),
            Some((99, "000000000000", "us-east-1", "/a/b"))
        );
        assert!(index_ops("a", "r", "n", Some(1), Some(1)).is_empty());
        assert_eq!(index_ops("a", "r", "n", Some(1), Some(2)).len(), 2);
    }
}
