//! Get/Update/ResetServiceSetting for Parameter Store's two settings:
//! `/ssm/parameter-store/default-parameter-tier` (the tier PutParameter
//! uses when a request names none) and
//! `/ssm/parameter-store/high-throughput-enabled` (kept and reported; Berth
//! does not throttle Parameter Store, so both values give the same
//! throughput).
//!
//! A setting is stored only once customized:
//! `/ssm/<account>/<region>/settings/ssm/parameter-store/<name>`. The other
//! settings AWS defines configure capabilities Berth does not have, and are
//! answered as ServiceSettingNotFound naming that capability.

use berth_model::authz::Requirement;
use berth_model::shapes::ssm;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView, StoreExt};
use serde::{Deserialize, Serialize};

use super::SsmService;
use crate::common::{corrupt, store_error, validation};

pub const HIGH_THROUGHPUT: &str = "/ssm/parameter-store/high-throughput-enabled";
pub const DEFAULT_TIER: &str = "/ssm/parameter-store/default-parameter-tier";

/// AWS's other settings, and what each configures.
const OTHER_SETTINGS: [(&str, &str); 8] = [
    ("/ssm/appmanager/appmanager-enabled", "Application Manager"),
    (
        "/ssm/automation/customer-script-log-destination",
        "Automation",
    ),
    (
        "/ssm/automation/customer-script-log-group-name",
        "Automation",
    ),
    ("/ssm/automation/enable-adaptive-concurrency", "Automation"),
    (
        "/ssm/documents/console/public-sharing-permission",
        "SSM documents",
    ),
    ("/ssm/managed-instance/activation-tier", "managed nodes"),
    (
        "/ssm/managed-instance/default-ec2-instance-management-role",
        "managed nodes",
    ),
    ("/ssm/opsinsights/opscenter", "OpsCenter"),
];

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSetting {
    value: String,
    modified: f64,
    user: String,
}

fn default_value(id: &str) -> &'static str {
    if id == DEFAULT_TIER {
        "Standard"
    } else {
        "false"
    }
}

fn key(account: &str, region: &str, id: &str) -> String {
    format!("/ssm/{account}/{region}/settings{id}")
}

fn setting_arn(account: &str, region: &str, id: &str) -> String {
    format!("arn:aws:ssm:{region}:{account}:servicesetting{id}")
}

/// The default tier PutParameter uses for a request that names none.
pub fn default_tier<V: ReadView + ?Sized>(view: &V, account: &str, region: &str) -> String {
    view.get(&key(account, region, DEFAULT_TIER))
        .and_then(|kv| serde_json::from_slice::<StoredSetting>(&kv.value).ok())
        .map(|s| s.value)
        .unwrap_or_else(|| default_value(DEFAULT_TIER).to_string())
}

fn not_found(id: &str) -> AwsError {
    let why = match OTHER_SETTINGS.iter().find(|(s, _)| *s == id) {
        Some((_, what)) => format!(
            " Berth keeps Parameter Store's settings only; {id} configures {what}, which Berth \
             does not have."
        ),
        None => String::new(),
    };
    AwsError::bad_request(
        "ServiceSettingNotFound",
        format!("The service setting {id} wasn't found.{why}"),
    )
}

/// A setting as the call names it: the id or its ARN. Answers the id and
/// the ARN IAM is asked about; `Ok(None)` ids are known to name nothing
/// here but are still authorized as written.
fn parse_id(ctx: &RequestContext, raw: &str) -> Result<(String, String, bool), AwsError> {
    if raw.is_empty() || raw.chars().count() > 1000 {
        return Err(validation(format!(
            "1 validation error detected: Value '{raw}' at 'settingId' failed to satisfy \
             constraint: Member must have length {}",
            if raw.is_empty() {
                "greater than or equal to 1"
            } else {
                "less than or equal to 1000"
            }
        )));
    }
    if raw.starts_with("arn:") {
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        if let [_, _, "ssm", region, account, rest] = parts.as_slice() {
            if let Some(id) = rest.strip_prefix("servicesetting") {
                let ours = *account == ctx.account_id && *region == ctx.region;
                return Ok((id.to_string(), raw.to_string(), ours));
            }
        }
        return Ok((raw.to_string(), raw.to_string(), false));
    }
    Ok((
        raw.to_string(),
        setting_arn(&ctx.account_id, &ctx.region, raw),
        true,
    ))
}

fn is_parameter_store(id: &str) -> bool {
    id == HIGH_THROUGHPUT || id == DEFAULT_TIER
}

impl SsmService {
    fn setting_shape(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<ssm::ServiceSetting, AwsError> {
        let key = key(&ctx.account_id, &ctx.region, id);
        let stored = match self.store.get(&key) {
            Some(kv) => Some(
                serde_json::from_slice::<StoredSetting>(&kv.value).map_err(|_| corrupt(&key))?,
            ),
            None => None,
        };
        let arn = setting_arn(&ctx.account_id, &ctx.region, id);
        Ok(match stored {
            Some(s) => ssm::ServiceSetting {
                setting_id: Some(id.to_string()),
                setting_value: Some(s.value),
                last_modified_date: Some(s.modified),
                last_modified_user: Some(s.user),
                arn: Some(arn),
                status: Some("Customized".to_string()),
            },
            None => ssm::ServiceSetting {
                setting_id: Some(id.to_string()),
                setting_value: Some(default_value(id).to_string()),
                last_modified_date: None,
                last_modified_user: Some("System".to_string()),
                arn: Some(arn),
                status: Some("Default".to_string()),
            },
        })
    }

    /// Parses and authorizes the setting a call names; answers its id once
    /// it names one of Parameter Store's settings.
    fn setting_target(
        &self,
        ctx: &RequestContext,
        operation: &str,
        raw: Option<&str>,
    ) -> Result<String, AwsError> {
        let (id, arn, ours) = parse_id(ctx, raw.unwrap_or_default())?;
        ctx.authorize(&[Requirement::new(format!("ssm:{operation}"), arn)])?;
        if !ours || !is_parameter_store(&id) {
            return Err(not_found(&id));
        }
        Ok(id)
    }

    pub(super) fn get_setting(
        &self,
        ctx: &RequestContext,
        input: ssm::GetServiceSettingRequest,
    ) -> Result<ssm::GetServiceSettingResult, AwsError> {
        let id = self.setting_target(ctx, "GetServiceSetting", input.setting_id.as_deref())?;
        Ok(ssm::GetServiceSettingResult {
            service_setting: Some(self.setting_shape(ctx, &id)?),
        })
    }

    pub(super) async fn update_setting(
        &self,
        ctx: &RequestContext,
        input: ssm::UpdateServiceSettingRequest,
    ) -> Result<ssm::UpdateServiceSettingResult, AwsError> {
        let value = input.setting_value.clone().unwrap_or_default();
        if value.is_empty() || value.chars().count() > 4096 {
            return Err(validation(format!(
                "1 validation error detected: Value '{value}' at 'settingValue' failed to \
                 satisfy constraint: Member must have length {}",
                if value.is_empty() {
                    "greater than or equal to 1"
                } else {
                    "less than or equal to 4096"
                }
            )));
        }
        let id = self.setting_target(ctx, "UpdateServiceSetting", input.setting_id.as_deref())?;
        let value = if id == HIGH_THROUGHPUT {
            match value.to_ascii_lowercase().as_str() {
                v @ ("true" | "false") => v.to_string(),
                _ => {
                    return Err(validation(format!(
                        "The value {value} isn't valid for the setting {id}. Valid values are \
                         true and false."
                    )))
                }
            }
        } else if super::filters::TIERS.contains(&value.as_str()) {
            value
        } else {
            return Err(validation(format!(
                "The value {value} isn't valid for the setting {id}. Valid values are Standard, \
                 Advanced and Intelligent-Tiering."
            )));
        };
        let stored = StoredSetting {
            value,
            modified: berth_util::time::now_epoch(),
            user: ctx.principal.arn.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|_| corrupt(&id))?;
        let key = key(&ctx.account_id, &ctx.region, &id);
        self.store
            .mutate(Box::new(move |_| {
                Ok(vec![Op::put(key.clone(), bytes.clone())])
            }))
            .await
            .map_err(store_error)?;
        Ok(ssm::UpdateServiceSettingResult {})
    }

    pub(super) async fn reset_setting(
        &self,
        ctx: &RequestContext,
        input: ssm::ResetServiceSettingRequest,
    ) -> Result<ssm::ResetServiceSettingResult, AwsError> {
        let id = self.setting_target(ctx, "ResetServiceSetting", input.setting_id.as_deref())?;
        self.store
            .delete(&key(&ctx.account_id, &ctx.region, &id))
            .await
            .map_err(store_error)?;
        Ok(ssm::ResetServiceSettingResult {
            service_setting: Some(self.setting_shape(ctx, &id)?),
        })
    }
}
