//! RotateSecret and CancelRotateSecret.
//!
//! Secrets Manager rotates a secret by invoking a Lambda rotation function
//! (or, for managed rotation, the owning service or an external partner).
//! Berth has no Lambda, no owning services and no partners, so no secret
//! can be configured for rotation. Both calls check their input, ask IAM,
//! find the secret, and then answer precisely that, storing nothing: a
//! secret is rotated in Berth by PutSecretValue, which moves AWSCURRENT and
//! AWSPREVIOUS as a rotation does.

use berth_model::shapes::secretsmanager as sm;
use berth_model::{AwsError, RequestContext};

use super::{
    check_token, invalid_parameter, invalid_request, marked_for_deletion, not_found,
    replica_refused, required, SecretsManagerService,
};
use crate::common::validation;

/// AWS's answer for a secret with no rotation function, which every Berth
/// secret is.
const NO_FUNCTION: &str = "You tried to enable rotation on a secret that doesn't already have a \
     Lambda function ARN configured and you didn't include such an ARN as a parameter in this \
     call.";
const NO_LAMBDA: &str = "Berth has no Lambda, so it can't run rotation functions; rotate a \
     secret by calling PutSecretValue with the new value (AWSCURRENT moves to it and AWSPREVIOUS \
     to the old one, as a rotation does).";

fn check_rules(rules: &sm::RotationRulesType) -> Result<(), AwsError> {
    if let Some(days) = rules.automatically_after_days {
        if !(1..=1000).contains(&days) {
            return Err(validation(format!(
                "1 validation error detected: Value '{days}' at \
                 'rotationRules.automaticallyAfterDays' failed to satisfy constraint: Member must \
                 have value {}",
                if days < 1 {
                    "greater than or equal to 1"
                } else {
                    "less than or equal to 1000"
                }
            )));
        }
    }
    if let Some(duration) = &rules.duration {
        let hours = duration
            .strip_suffix('h')
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|h| h.parse::<u32>().ok());
        if duration.len() < 2 || duration.len() > 3 || hours.is_none() {
            return Err(validation(format!(
                "1 validation error detected: Value '{duration}' at 'rotationRules.duration' \
                 failed to satisfy constraint: Member must satisfy regular expression pattern: \
                 [0-9]+h"
            )));
        }
        if !hours.is_some_and(|h| (1..=24).contains(&h)) {
            return Err(invalid_parameter(
                "The rotation window Duration must be between 1h and 24h.",
            ));
        }
    }
    if let Some(expression) = &rules.schedule_expression {
        let chars_ok = expression
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "()#?*-/, ".contains(c));
        if expression.is_empty() || expression.chars().count() > 256 || !chars_ok {
            return Err(validation(format!(
                "1 validation error detected: Value '{expression}' at \
                 'rotationRules.scheduleExpression' failed to satisfy constraint: Member must \
                 satisfy regular expression pattern: [0-9A-Za-z\\(\\)#\\?\\*\\-\\/, ]+"
            )));
        }
        if !(expression.starts_with("rate(") || expression.starts_with("cron("))
            || !expression.ends_with(')')
        {
            return Err(invalid_parameter(format!(
                "The schedule expression {expression} is not a rate() or cron() expression."
            )));
        }
        if rules.automatically_after_days.is_some() {
            return Err(invalid_parameter(
                "You cannot specify both rotation frequency and schedule expression together.",
            ));
        }
    }
    Ok(())
}

impl SecretsManagerService {
    pub(super) fn rotate(
        &self,
        ctx: &RequestContext,
        input: sm::RotateSecretRequest,
    ) -> Result<sm::RotateSecretResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        check_token(&input.client_request_token)?;
        if let Some(arn) = &input.rotation_lambda_arn {
            if arn.chars().count() > 2048 {
                return Err(validation(
                    "1 validation error detected: Value at 'rotationLambdaARN' failed to \
                     satisfy constraint: Member must have length less than or equal to 2048",
                ));
            }
        }
        if let Some(rules) = &input.rotation_rules {
            check_rules(rules)?;
        }
        if let Some(role) = &input.external_secret_rotation_role_arn {
            let n = role.chars().count();
            if !(20..=2048).contains(&n) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{role}' at \
                     'externalSecretRotationRoleArn' failed to satisfy constraint: Member must \
                     have length {}",
                    if n < 20 {
                        "greater than or equal to 20"
                    } else {
                        "less than or equal to 2048"
                    }
                )));
            }
        }
        let target = self.target(ctx, secret_id)?;
        let mut requirement = target.requirement("RotateSecret");
        if let Some(arn) = input
            .rotation_lambda_arn
            .as_deref()
            .filter(|a| !a.is_empty())
        {
            requirement = requirement.condition("secretsmanager:RotationLambdaARN", arn);
        }
        ctx.authorize(&[requirement])?;
        let record = target.record.ok_or_else(not_found)?;
        if record.primary_region.is_some() {
            return Err(replica_refused());
        }
        if record.deleted.is_some() {
            return Err(marked_for_deletion());
        }
        if input.external_secret_rotation_role_arn.is_some()
            || input.external_secret_rotation_metadata.is_some()
        {
            return Err(invalid_request(format!(
                "Berth has no managed external secret partners, so it can't rotate {} through \
                 one. {NO_LAMBDA}",
                record.name
            )));
        }
        match input
            .rotation_lambda_arn
            .as_deref()
            .filter(|a| !a.is_empty())
        {
            Some(function) => Err(invalid_request(format!(
                "Secrets Manager cannot invoke the specified Lambda function {function}. \
                 {NO_LAMBDA}"
            ))),
            None => Err(invalid_request(format!("{NO_FUNCTION} {NO_LAMBDA}"))),
        }
    }

    pub(super) fn cancel_rotate(
        &self,
        ctx: &RequestContext,
        input: sm::CancelRotateSecretRequest,
    ) -> Result<sm::CancelRotateSecretResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?;
        let target = self.target(ctx, secret_id)?;
        ctx.authorize(&[target.requirement("CancelRotateSecret")])?;
        let record = target.record.ok_or_else(not_found)?;
        if record.primary_region.is_some() {
            return Err(replica_refused());
        }
        if record.deleted.is_some() {
            return Err(marked_for_deletion());
        }
        // No Berth secret has rotation configured: what Secrets Manager
        // answers for such a secret.
        Err(invalid_request(format!("{NO_FUNCTION} {NO_LAMBDA}")))
    }
}
