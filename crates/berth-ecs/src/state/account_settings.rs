//! Account setting records: one per setting and principal (the account
//! default under the empty principal), and the value that applies to a
//! principal.

use berth_model::{Arn, AwsError};
use berth_store::ReadView;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::load;

/// What a fresh account reports for each setting, and the values it accepts.
pub(crate) fn definition(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    const ON_OFF: &[&str] = &["enabled", "disabled"];
    Some(match name {
        "serviceLongArnFormat" | "taskLongArnFormat" | "containerInstanceLongArnFormat" => {
            ("enabled", ON_OFF)
        }
        "awsvpcTrunking" => ("disabled", ON_OFF),
        "containerInsights" => ("disabled", &["enabled", "disabled", "enhanced"]),
        "fargateFIPSMode" => ("disabled", ON_OFF),
        "tagResourceAuthorization" => ("on", &["on", "off"]),
        "fargateTaskRetirementWaitPeriod" => ("7", &["0", "7", "14"]),
        "guardDutyActivate" => ("off", &["on", "off"]),
        "defaultLogDriverMode" => ("non-blocking", &["blocking", "non-blocking"]),
        "fargateEventWindows" => ("disabled", ON_OFF),
        "dualStackIPv6" => ("disabled", ON_OFF),
        _ => return None,
    })
}

/// The stored form of one setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSetting {
    pub name: String,
    pub value: String,
    /// Empty for the account default.
    pub principal: String,
}

pub(crate) fn root_arn(scope: &Scope) -> String {
    format!("arn:aws:iam::{}:root", scope.account)
}

/// Checks a principal ARN and returns the key part it is stored under ("" for root).
pub(crate) fn principal_key(scope: &Scope, principal_arn: &str) -> Result<String, AwsError> {
    let arn = Arn::parse(principal_arn).ok_or_else(|| {
        error::invalid_parameter(format!("Invalid principalArn '{principal_arn}'."))
    })?;
    if arn.service != "iam" && arn.service != "sts" {
        return Err(error::invalid_parameter(format!(
            "Invalid principalArn '{principal_arn}': it must name an IAM user, role or the root user."
        )));
    }
    if arn.account != scope.account {
        return Err(error::invalid_parameter(format!(
            "principalArn '{principal_arn}' belongs to another account."
        )));
    }
    Ok(if arn.resource == "root" {
        String::new()
    } else {
        principal_arn.to_string()
    })
}

/// The value that applies to `principal_arn`: its own, else the account
/// default, else `None` (the caller falls back to AWS's default).
pub(crate) fn effective_value(
    view: &dyn ReadView,
    scope: &Scope,
    name: &str,
    principal_arn: &str,
) -> Option<String> {
    let own = principal_key(scope, principal_arn).ok()?;
    for key in [own.as_str(), ""] {
        if let Ok(Some((s, _))) = load::<StoredSetting>(view, &scope.account_setting(name, key)) {
            return Some(s.value);
        }
    }
    None
}
