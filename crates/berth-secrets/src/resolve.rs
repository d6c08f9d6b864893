//! Resolving an ECS container definition's `secrets[].valueFrom`, for the agent
//! side: a Secrets Manager ARN (optionally with `:json-key:version-stage:version-id`)
//! or an SSM parameter name or ARN.

use berth_model::AwsError;
use berth_store::ReadView;
use berth_util::time::now_secs;

use crate::crypto::MasterKey;
use crate::secretsmanager::{self, find_secret, select_version};
use crate::ssm;

/// The plaintext `value_from` names. Errors name the reference, never a value.
pub fn resolve_secret_value(
    view: &dyn ReadView,
    keys: &MasterKey,
    account: &str,
    region: &str,
    value_from: &str,
) -> Result<String, AwsError> {
    if value_from.starts_with("arn:") && value_from.split(':').nth(2) == Some("secretsmanager") {
        return resolve_secrets_manager(view, keys, account, region, value_from);
    }
    let (record, version, _) = ssm::lookup(view, account, region, value_from)?;
    let v = record
        .versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| AwsError::internal("An internal error occurred."))?;
    ssm::plaintext(keys, &record, v)
}

/// `arn:aws:secretsmanager:<region>:<account>:secret:<name>[:json-key[:version-stage[:version-id]]]`.
fn resolve_secrets_manager(
    view: &dyn ReadView,
    keys: &MasterKey,
    account: &str,
    region: &str,
    value_from: &str,
) -> Result<String, AwsError> {
    let parts: Vec<&str> = value_from.split(':').collect();
    if parts.len() < 7 || parts.len() > 10 || parts[5] != "secret" {
        return Err(AwsError::bad_request(
            "InvalidParameterException",
            format!("{value_from} is not a valid Secrets Manager secret reference."),
        ));
    }
    let arn = parts[..7].join(":");
    let field = |i: usize| parts.get(i).copied().filter(|s| !s.is_empty());
    let (json_key, stage, version_id) = (field(7), field(8), field(9));
    let (_, record) =
        find_secret(view, account, region, &arn, now_secs() as f64)?.ok_or_else(|| {
            AwsError::bad_request(
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
            )
        })?;
    let (_, version) = select_version(&record, version_id, stage)?;
    let plain = secretsmanager::open(keys, &version.sealed)?;
    let text = if version.binary {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&plain)
    } else {
        String::from_utf8(plain).map_err(|_| AwsError::internal("An internal error occurred."))?
    };
    let Some(json_key) = json_key else {
        return Ok(text);
    };
    let not_json = || {
        AwsError::bad_request(
            "InvalidParameterException",
            format!(
                "The secret {} is not a JSON object with the key {json_key}.",
                record.name
            ),
        )
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|_| not_json())?;
    match object.get(json_key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(not_json()),
    }
}
