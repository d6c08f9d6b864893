//! Account settings: PutAccountSetting, PutAccountSettingDefault,
//! ListAccountSettings, DeleteAccountSetting.
//!
//! A setting is stored per principal ARN; the account default is stored under
//! the empty principal. Setting the root user's value sets the default, as ECS
//! documents ("If you change the root user account setting, the default
//! settings are reset for users and roles that do not have specified individual
//! account settings").

use berth_model::shapes::ecs::{
    DeleteAccountSettingRequest, DeleteAccountSettingResponse, ListAccountSettingsRequest,
    ListAccountSettingsResponse, PutAccountSettingDefaultRequest, PutAccountSettingDefaultResponse,
    PutAccountSettingRequest, PutAccountSettingResponse, Setting, SETTING_NAME_VALUES,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::account_settings::{definition, principal_key, root_arn, StoredSetting};
use crate::state::keys::Scope;
use crate::state::pagination;
use crate::state::records::{encode, load};

fn check_name(name: Option<&str>) -> Result<&str, AwsError> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("name"))?;
    if definition(name).is_none() {
        return Err(error::invalid_parameter(format!(
            "Invalid account setting name '{name}'. Valid names: {}.",
            SETTING_NAME_VALUES.join(", ")
        )));
    }
    Ok(name)
}

fn check_value(name: &str, value: Option<&str>) -> Result<String, AwsError> {
    let value = value.ok_or_else(|| error::missing("value"))?;
    let (_, allowed) = definition(name).unwrap_or(("", &[]));
    if !allowed.contains(&value) {
        return Err(error::invalid_parameter(format!(
            "Invalid value '{value}' for account setting '{name}'. Valid values: {}.",
            allowed.join(", ")
        )));
    }
    // ECS removed the opt-out from the long ARN and resource id formats:
    // every account now has them, and ECS refuses to turn them off.
    if name.ends_with("LongArnFormat") && value == "disabled" {
        return Err(error::invalid_parameter(
            "You can no longer disable Long Arn settings.",
        ));
    }
    if name == "guardDutyActivate" {
        return Err(error::invalid_parameter(
            "guardDutyActivate is managed by Amazon GuardDuty and cannot be changed with the ECS API.",
        ));
    }
    if name == "fargateFIPSMode" && value == "enabled" {
        return Err(error::invalid_parameter(
            "fargateFIPSMode can only be changed in the AWS GovCloud (US) Regions.",
        ));
    }
    Ok(value.to_string())
}

fn shown(scope: &Scope, stored: &StoredSetting) -> Setting {
    Setting {
        name: Some(stored.name.clone()),
        value: Some(stored.value.clone()),
        principal_arn: Some(if stored.principal.is_empty() {
            root_arn(scope)
        } else {
            stored.principal.clone()
        }),
        r#type: Some("user".into()),
    }
}

async fn put_setting(
    store: &dyn Store,
    scope: &Scope,
    name: &str,
    value: String,
    principal: String,
) -> Result<Setting, AwsError> {
    let stored = StoredSetting {
        name: name.to_string(),
        value,
        principal,
    };
    let key = scope.account_setting(name, &stored.principal);
    let bytes = encode(&stored)?;
    store
        .mutate(Box::new(move |_| {
            Ok(vec![Op::put(key.clone(), bytes.clone())])
        }))
        .await
        .map_err(error::store)?;
    Ok(shown(scope, &stored))
}

pub(crate) async fn put(
    store: &dyn Store,
    scope: &Scope,
    caller_arn: &str,
    input: PutAccountSettingRequest,
) -> Result<PutAccountSettingResponse, AwsError> {
    let name = check_name(input.name.as_deref())?;
    let value = check_value(name, input.value.as_deref())?;
    let principal = principal_key(
        scope,
        input
            .principal_arn
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(caller_arn),
    )?;
    let setting = put_setting(store, scope, name, value, principal).await?;
    Ok(PutAccountSettingResponse {
        setting: Some(setting),
    })
}

pub(crate) async fn put_default(
    store: &dyn Store,
    scope: &Scope,
    input: PutAccountSettingDefaultRequest,
) -> Result<PutAccountSettingDefaultResponse, AwsError> {
    let name = check_name(input.name.as_deref())?;
    let value = check_value(name, input.value.as_deref())?;
    let setting = put_setting(store, scope, name, value, String::new()).await?;
    Ok(PutAccountSettingDefaultResponse {
        setting: Some(setting),
    })
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    caller_arn: &str,
    input: DeleteAccountSettingRequest,
) -> Result<DeleteAccountSettingResponse, AwsError> {
    let name = check_name(input.name.as_deref())?.to_string();
    let principal = principal_key(
        scope,
        input
            .principal_arn
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(caller_arn),
    )?;
    let key = scope.account_setting(&name, &principal);
    let (_, deleted) = store
        .update(move |view| match load::<StoredSetting>(view, &key)? {
            Some((s, _)) => Ok((vec![Op::delete(key.clone())], s)),
            None => Err(error::invalid_parameter(format!(
                "The account setting '{name}' is not set for this principal."
            ))),
        })
        .await
        .map_err(error::store)??;
    Ok(DeleteAccountSettingResponse {
        setting: Some(shown(scope, &deleted)),
    })
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    caller_arn: &str,
    input: ListAccountSettingsRequest,
) -> Result<ListAccountSettingsResponse, AwsError> {
    let limit = match input.max_results {
        None => 10,
        Some(n) if (1..=10).contains(&n) => n as usize,
        Some(n) => {
            return Err(error::invalid_parameter(format!(
                "maxResults must be between 1 and 10; got {n}."
            )))
        }
    };
    let names: Vec<&str> = match input.name.as_deref() {
        Some(n) => vec![check_name(Some(n))?],
        None => {
            let mut all: Vec<&str> = SETTING_NAME_VALUES
                .iter()
                .copied()
                .filter(|n| definition(n).is_some())
                .collect();
            all.sort_unstable();
            all
        }
    };
    if input.value.is_some() && input.name.is_none() {
        return Err(error::invalid_parameter(
            "value can only be used together with name.",
        ));
    }
    let principal_arn = input
        .principal_arn
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(caller_arn);
    let principal = principal_key(scope, principal_arn)?;
    let effective = input.effective_settings.unwrap_or(false);

    let mut settings = Vec::new();
    for name in names {
        let own = load::<StoredSetting>(view, &scope.account_setting(name, &principal))?;
        let setting = match own {
            Some((s, _)) => Some(shown(scope, &s)),
            None if effective => {
                let default = load::<StoredSetting>(view, &scope.account_setting(name, ""))?;
                Some(match default {
                    Some((s, _)) => {
                        let mut shown = shown(scope, &s);
                        shown.principal_arn = Some(principal_arn.to_string());
                        shown
                    }
                    None => Setting {
                        name: Some(name.to_string()),
                        value: definition(name).map(|(d, _)| d.to_string()),
                        principal_arn: Some(principal_arn.to_string()),
                        r#type: Some("aws_managed".into()),
                    },
                })
            }
            None => None,
        };
        if let Some(setting) = setting {
            if input.value.is_none() || setting.value == input.value {
                settings.push(setting);
            }
        }
    }
    let start = match input.next_token.as_deref() {
        Some(t) if !t.is_empty() => {
            let after = pagination::decode(t)?;
            settings
                .iter()
                .position(|s| s.name.as_deref() == Some(after.as_str()))
                .map_or(settings.len(), |i| i + 1)
        }
        _ => 0,
    };
    let page: Vec<Setting> = settings.iter().skip(start).take(limit).cloned().collect();
    let next_token = if start + page.len() < settings.len() {
        page.last()
            .and_then(|s| s.name.as_deref())
            .map(pagination::encode)
    } else {
        None
    };
    Ok(ListAccountSettingsResponse {
        settings: Some(page),
        next_token,
    })
}
