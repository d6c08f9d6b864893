//! Parameter resource policies: PutResourcePolicy, GetResourcePolicies and
//! DeleteResourcePolicy on a parameter's ARN (how AWS shares a parameter).
//!
//! A parameter may carry several policies, each with an id and a hash of
//! its text; an update or delete must name both (optimistic concurrency, as
//! AWS does). Like AWS, only advanced parameters can carry them, and a
//! SecureString only when encrypted with a customer managed key. The
//! policies take part in IAM decisions on the parameter (see
//! [`crate::SecretPolicies`]). Berth serves one account, so a grant to
//! another account is kept but has no one to serve.

use berth_model::shapes::ssm;
use berth_model::{AwsError, RequestContext};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SsmService, DEFAULT_KEY_ID, SECURE_STRING};
use crate::authz::resolve_parameter;
use crate::common::{decode_token, encode_token, validation};

/// One resource policy of a parameter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredPolicy {
    pub id: String,
    pub hash: String,
    pub policy: String,
}

fn invalid_parameter(names: &str, message: impl Into<String>) -> AwsError {
    let message = message.into();
    AwsError::bad_request(
        "ResourcePolicyInvalidParameterException",
        format!("{message} (parameters: {names})"),
    )
}

fn policy_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourcePolicyNotFoundException",
        "No policies with the specified policy ID and hash could be found.",
    )
}

fn conflict() -> AwsError {
    AwsError::bad_request(
        "ResourcePolicyConflictException",
        "The hash provided in the call doesn't match the stored hash. This exception is thrown \
         when trying to update an obsolete policy version or when multiple requests to update a \
         policy are sent.",
    )
}

fn parameter_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "The specified parameter to be shared could not be found.",
    )
}

fn hash(policy: &str) -> String {
    hex::encode(Sha256::digest(policy.as_bytes()))
}

/// The resource a policy call names: it must be a parameter's ARN.
fn check_arn(arn: &Option<String>) -> Result<String, AwsError> {
    let arn = arn.clone().unwrap_or_default();
    if arn.chars().count() < 20 || arn.chars().count() > 2048 {
        return Err(validation(format!(
            "1 validation error detected: Value '{arn}' at 'resourceArn' failed to satisfy \
             constraint: Member must have length {}",
            if arn.chars().count() < 20 {
                "greater than or equal to 20"
            } else {
                "less than or equal to 2048"
            }
        )));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        [_, _, "ssm", _, _, rest] if rest.starts_with("parameter/") => Ok(arn),
        [_, _, "ssm", _, _, rest]
            if rest.starts_with("opsitemgroup/") || rest.starts_with("document/") =>
        {
            Err(invalid_parameter(
                "ResourceArn",
                format!(
                    "Berth keeps resource policies for parameters only; {arn} names an \
                     OpsItemGroup or an SSM document, which Berth does not have."
                ),
            ))
        }
        _ => Err(invalid_parameter(
            "ResourceArn",
            format!("{arn} is not the ARN of a Systems Manager parameter."),
        )),
    }
}

impl SsmService {
    pub(super) async fn put_resource_policy(
        &self,
        ctx: &RequestContext,
        input: ssm::PutResourcePolicyRequest,
    ) -> Result<ssm::PutResourcePolicyResponse, AwsError> {
        let arn = check_arn(&input.resource_arn)?;
        let policy = input.policy.clone().unwrap_or_default();
        if policy.trim().is_empty() {
            return Err(validation(
                "1 validation error detected: Value at 'policy' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: ^(?!\\s*$).+",
            ));
        }
        if input.policy_hash.is_some() && input.policy_id.is_none() {
            return Err(invalid_parameter(
                "PolicyId",
                "A PolicyHash names a version of an existing policy: give its PolicyId too.",
            ));
        }
        if input.policy_id.is_some() && input.policy_hash.is_none() {
            return Err(invalid_parameter(
                "PolicyHash",
                "To update a policy, give its PolicyId and its current PolicyHash.",
            ));
        }
        let target = resolve_parameter(self.store.as_ref(), &ctx.account_id, &ctx.region, &arn)?;
        ctx.authorize(&[target.requirement("PutResourcePolicy")])?;
        berth_policy::Policy::parse_resource(&policy).map_err(|e| {
            AwsError::bad_request(
                "MalformedResourcePolicyDocumentException",
                format!("The specified policy document is malformed or invalid: {e}"),
            )
        })?;
        let name = target.record.ok_or_else(parameter_not_found)?.name;
        let (policy_id, policy_hash) = (input.policy_id.clone(), input.policy_hash.clone());
        let new_hash = hash(&policy);
        let out_hash = new_hash.clone();
        let id = self
            .modify_param(
                ctx,
                name,
                |_| parameter_not_found(),
                move |record| {
                    if record.tier != "Advanced" {
                        return Err(invalid_parameter(
                            "ResourceArn",
                            format!(
                                "To share a parameter, it must be in the advanced parameter tier; \
                             {} is a {} parameter.",
                                record.name, record.tier
                            ),
                        ));
                    }
                    let latest = record.latest()?;
                    if latest.r#type == SECURE_STRING
                        && latest.key_id.as_deref().unwrap_or(DEFAULT_KEY_ID) == DEFAULT_KEY_ID
                    {
                        return Err(invalid_parameter(
                            "ResourceArn",
                            format!(
                                "To share a SecureString parameter, it must be encrypted with a \
                             customer managed key; {} uses the AWS managed key alias/aws/ssm.",
                                record.name
                            ),
                        ));
                    }
                    let id = match &policy_id {
                        Some(id) => {
                            let existing = record
                                .resource_policies
                                .iter_mut()
                                .find(|p| p.id == *id)
                                .ok_or_else(policy_not_found)?;
                            if Some(&existing.hash) != policy_hash.as_ref() {
                                return Err(conflict());
                            }
                            existing.policy = policy.clone();
                            existing.hash = new_hash.clone();
                            id.clone()
                        }
                        None => {
                            let id = uuid::Uuid::new_v4().to_string();
                            record.resource_policies.push(StoredPolicy {
                                id: id.clone(),
                                hash: new_hash.clone(),
                                policy: policy.clone(),
                            });
                            id
                        }
                    };
                    Ok((true, id))
                },
            )
            .await?;
        Ok(ssm::PutResourcePolicyResponse {
            policy_id: Some(id),
            policy_hash: Some(out_hash),
        })
    }

    pub(super) fn get_resource_policies(
        &self,
        ctx: &RequestContext,
        input: ssm::GetResourcePoliciesRequest,
    ) -> Result<ssm::GetResourcePoliciesResponse, AwsError> {
        let arn = check_arn(&input.resource_arn)?;
        let max = crate::common::page_size(input.max_results, 50)?;
        let start = match &input.next_token {
            Some(t) => decode_token(t)
                .and_then(|s| s.strip_prefix("p:").and_then(|n| n.parse::<usize>().ok()))
                .ok_or_else(|| {
                    invalid_parameter("NextToken", "The specified token isn't valid.")
                })?,
            None => 0,
        };
        let target = resolve_parameter(self.store.as_ref(), &ctx.account_id, &ctx.region, &arn)?;
        ctx.authorize(&[target.requirement("GetResourcePolicies")])?;
        let record = target.record.ok_or_else(parameter_not_found)?;
        let all = &record.resource_policies;
        let page: Vec<&StoredPolicy> = all.iter().skip(start).take(max).collect();
        let next = (start + page.len() < all.len())
            .then(|| encode_token(&format!("p:{}", start + page.len())));
        Ok(ssm::GetResourcePoliciesResponse {
            next_token: next,
            policies: Some(
                page.into_iter()
                    .map(|p| ssm::GetResourcePoliciesResponseEntry {
                        policy_id: Some(p.id.clone()),
                        policy_hash: Some(p.hash.clone()),
                        policy: Some(p.policy.clone()),
                    })
                    .collect(),
            ),
        })
    }

    pub(super) async fn delete_resource_policy(
        &self,
        ctx: &RequestContext,
        input: ssm::DeleteResourcePolicyRequest,
    ) -> Result<ssm::DeleteResourcePolicyResponse, AwsError> {
        let arn = check_arn(&input.resource_arn)?;
        let Some(policy_id) = input.policy_id.clone().filter(|s| !s.is_empty()) else {
            return Err(invalid_parameter(
                "PolicyId",
                "DeleteResourcePolicy needs the PolicyId of the policy to delete.",
            ));
        };
        let Some(policy_hash) = input.policy_hash.clone().filter(|s| !s.is_empty()) else {
            return Err(invalid_parameter(
                "PolicyHash",
                "DeleteResourcePolicy needs the current PolicyHash of the policy to delete.",
            ));
        };
        if let Some(mode) = &input.deletion_mode {
            if !["RemoveSharing", "RollbackMigration"].contains(&mode.as_str()) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{mode}' at 'deletionMode' failed to \
                     satisfy constraint: Member must satisfy enum value set: [RemoveSharing, \
                     RollbackMigration]"
                )));
            }
        }
        let target = resolve_parameter(self.store.as_ref(), &ctx.account_id, &ctx.region, &arn)?;
        ctx.authorize(&[target.requirement("DeleteResourcePolicy")])?;
        let name = target.record.ok_or_else(parameter_not_found)?.name;
        self.modify_param(
            ctx,
            name,
            |_| parameter_not_found(),
            move |record| {
                let index = record
                    .resource_policies
                    .iter()
                    .position(|p| p.id == policy_id)
                    .ok_or_else(policy_not_found)?;
                if record.resource_policies[index].hash != policy_hash {
                    return Err(conflict());
                }
                record.resource_policies.remove(index);
                Ok((true, ()))
            },
        )
        .await?;
        Ok(ssm::DeleteResourcePolicyResponse {})
    }
}

/// The parameter's policies as one document for the IAM authorizer: every
/// statement of every policy.
pub fn combined(policies: &[StoredPolicy]) -> Option<String> {
    if policies.is_empty() {
        return None;
    }
    let mut statements = Vec::new();
    for p in policies {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&p.policy) else {
            continue;
        };
        match doc.get("Statement") {
            Some(serde_json::Value::Array(items)) => statements.extend(items.iter().cloned()),
            Some(one) => statements.push(one.clone()),
            None => {}
        }
    }
    Some(serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string())
}
