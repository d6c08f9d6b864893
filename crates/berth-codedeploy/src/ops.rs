//! The CodeDeploy operations.

use base64::Engine;
use berth_model::authz::Requirement;
use berth_model::shapes::codedeploy as sh;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView, StoreExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::configs;
use crate::ecs::{EcsDeploymentPlan, EcsError, WaitType};
use crate::engine::is_active;
use crate::records::{
    AppRecord, ConfigRecord, DeploymentRecord, Ending, GroupRecord, CREATED, IN_PROGRESS, READY,
    STOPPED,
};
use crate::{CodeDeployService, SERVER_OR_LAMBDA};

const URL: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;
const PAGE: usize = 100;
const BATCH_MAX: usize = 100;
const NAME_PATTERN: &str = "[A-Za-z0-9+=,.@_-]*";
const MAX_WAIT_MINUTES: i32 = 2880;

// ---------- helpers ----------

fn err(code: &'static str, message: impl Into<String>) -> AwsError {
    AwsError::bad_request(code, message)
}

fn store_error(e: berth_store::StoreError) -> AwsError {
    tracing::error!(error = %e, "store failure");
    AwsError::internal("The request could not be stored; retry it.")
}

fn corrupt(key: &str) -> AwsError {
    tracing::error!(key, "undecodable CodeDeploy record in the store");
    AwsError::internal("An internal error occurred.")
}

fn now() -> f64 {
    berth_util::time::now_millis() as f64 / 1000.0
}

fn base(account: &str, region: &str) -> String {
    format!("codedeploy/{account}/{region}/")
}

fn app_key(account: &str, region: &str, name: &str) -> String {
    format!("{}applications/{name}", base(account, region))
}

fn config_key(account: &str, region: &str, name: &str) -> String {
    format!("{}configs/{name}", base(account, region))
}

fn groups_prefix(account: &str, region: &str, app: &str) -> String {
    format!("{}groups/{app}/", base(account, region))
}

fn group_key(account: &str, region: &str, app: &str, group: &str) -> String {
    format!("{}{group}", groups_prefix(account, region, app))
}

fn deployments_prefix(account: &str, region: &str) -> String {
    format!("{}deployments/", base(account, region))
}

fn deployment_key(account: &str, region: &str, id: &str) -> String {
    format!("{}{id}", deployments_prefix(account, region))
}

fn read<T: DeserializeOwned>(view: &dyn ReadView, key: &str) -> Result<Option<T>, AwsError> {
    match view.get(key) {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|_| corrupt(key)),
    }
}

fn read_all<T: DeserializeOwned>(view: &dyn ReadView, prefix: &str) -> Vec<T> {
    view.range(prefix, None, usize::MAX)
        .into_iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect()
}

fn put<T: Serialize>(key: String, value: &T) -> Result<Op, AwsError> {
    let bytes = serde_json::to_vec(value).map_err(|_| corrupt(&key))?;
    Ok(Op::put(key, bytes))
}

/// Writes `op` (a record at `key`) unless a record is there already, in
/// one mutation; `taken` is the answer when one is.
async fn insert_new(
    svc: &CodeDeployService,
    op: Op,
    key: String,
    taken: AwsError,
) -> Result<(), AwsError> {
    svc.store
        .update(move |view| {
            if view.get(&key).is_some() {
                return Err(taken.clone());
            }
            Ok((vec![op.clone()], ()))
        })
        .await
        .map_err(store_error)??;
    Ok(())
}

fn app_arn(ctx: &RequestContext, name: &str) -> String {
    ctx.arn("codedeploy", &format!("application:{name}"))
}

fn group_arn(ctx: &RequestContext, app: &str, group: &str) -> String {
    ctx.arn("codedeploy", &format!("deploymentgroup:{app}/{group}"))
}

fn config_arn(ctx: &RequestContext, name: &str) -> String {
    ctx.arn("codedeploy", &format!("deploymentconfig:{name}"))
}

fn tag_pairs(tags: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

fn application_name(name: Option<&str>) -> Result<String, AwsError> {
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
        err(
            "ApplicationNameRequiredException",
            "Application name is required",
        )
    })?;
    if !valid_name(name) {
        return Err(err(
            "InvalidApplicationNameException",
            format!(
                "Application name {name} is invalid: it must be 1 to 100 characters matching \
                 {NAME_PATTERN}"
            ),
        ));
    }
    Ok(name.to_string())
}

fn group_name(name: Option<&str>) -> Result<String, AwsError> {
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
        err(
            "DeploymentGroupNameRequiredException",
            "Deployment Group name is required",
        )
    })?;
    if !valid_name(name) {
        return Err(err(
            "InvalidDeploymentGroupNameException",
            format!(
                "Deployment group name {name} is invalid: it must be 1 to 100 characters \
                 matching {NAME_PATTERN}"
            ),
        ));
    }
    Ok(name.to_string())
}

fn config_name(name: Option<&str>) -> Result<String, AwsError> {
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
        err(
            "DeploymentConfigNameRequiredException",
            "Deployment configuration name is required",
        )
    })?;
    if !valid_name(name) {
        return Err(err(
            "InvalidDeploymentConfigNameException",
            format!(
                "Deployment configuration name {name} is invalid: it must be 1 to 100 \
                 characters matching {NAME_PATTERN}"
            ),
        ));
    }
    Ok(name.to_string())
}

fn deployment_id(id: Option<&str>) -> Result<String, AwsError> {
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| err("DeploymentIdRequiredException", "Deployment Id is required"))?;
    let valid = id.len() == 11
        && id.starts_with("d-")
        && id[2..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !valid {
        return Err(err(
            "InvalidDeploymentIdException",
            format!("Specified DeploymentId is not in the valid format: {id}"),
        ));
    }
    Ok(id.to_string())
}

fn no_application(name: &str) -> AwsError {
    err(
        "ApplicationDoesNotExistException",
        format!("No application found for name: {name}"),
    )
}

fn no_group(name: &str) -> AwsError {
    err(
        "DeploymentGroupDoesNotExistException",
        format!("No Deployment Group found for name: {name}"),
    )
}

fn no_config(name: &str) -> AwsError {
    err(
        "DeploymentConfigDoesNotExistException",
        format!("No deployment configuration found for name: {name}"),
    )
}

fn no_deployment(id: &str) -> AwsError {
    err(
        "DeploymentDoesNotExistException",
        format!("The deployment {id} could not be found."),
    )
}

fn new_deployment_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..9)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect();
    format!("d-{tail}")
}

fn check_tags(tags: &[sh::Tag]) -> Result<Vec<(String, String)>, AwsError> {
    let invalid = |m: String| err("InvalidTagsToAddException", m);
    if tags.len() > berth_model::tags::MAX_TAGS {
        return Err(invalid(format!(
            "A resource can have at most {} tags.",
            berth_model::tags::MAX_TAGS
        )));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for tag in tags {
        let key = tag
            .key
            .as_deref()
            .ok_or_else(|| invalid("A tag must have a Key.".into()))?;
        let value = tag.value.clone().unwrap_or_default();
        berth_model::tags::check_key(key).map_err(invalid)?;
        berth_model::tags::check_value(key, &value).map_err(invalid)?;
        if berth_model::tags::is_reserved(key) {
            return Err(invalid(format!(
                "Tag key {key} uses the reserved prefix 'aws:'."
            )));
        }
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => out.push((key.to_string(), value)),
        }
    }
    Ok(out)
}

fn merge_tags(
    existing: &mut Vec<(String, String)>,
    new: &[(String, String)],
) -> Result<(), AwsError> {
    for (k, v) in new {
        match existing.iter_mut().find(|(ek, _)| ek == k) {
            Some(entry) => entry.1 = v.clone(),
            None => existing.push((k.clone(), v.clone())),
        }
    }
    if existing.len() > berth_model::tags::MAX_TAGS {
        return Err(err(
            "InvalidTagsToAddException",
            format!(
                "A resource can have at most {} tags.",
                berth_model::tags::MAX_TAGS
            ),
        ));
    }
    Ok(())
}

fn encode_token(last: &str) -> String {
    URL.encode(last.as_bytes())
}

fn decode_token(token: Option<&str>) -> Result<Option<String>, AwsError> {
    let Some(token) = token else { return Ok(None) };
    URL.decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| {
            err(
                "InvalidNextTokenException",
                "The next token was specified in an invalid format.",
            )
        })
}

/// One page of sorted `items` after the token's item.
fn page(
    items: Vec<String>,
    token: Option<&str>,
) -> Result<(Vec<String>, Option<String>), AwsError> {
    let after = decode_token(token)?;
    let rest: Vec<String> = items
        .into_iter()
        .filter(|n| after.as_ref().is_none_or(|a| n > a))
        .collect();
    let more = rest.len() > PAGE;
    let items: Vec<String> = rest.into_iter().take(PAGE).collect();
    let next = if more {
        items.last().map(|l| encode_token(l))
    } else {
        None
    };
    Ok((items, next))
}

fn application_info(app: &AppRecord) -> sh::ApplicationInfo {
    sh::ApplicationInfo {
        application_id: Some(app.id.clone()),
        application_name: Some(app.name.clone()),
        create_time: Some(app.create_time),
        linked_to_git_hub: Some(false),
        compute_platform: Some(app.compute_platform.clone()),
        ..Default::default()
    }
}

fn read_app(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    name: &str,
) -> Result<Option<AppRecord>, AwsError> {
    read(
        svc.store.as_ref(),
        &app_key(&ctx.account_id, &ctx.region, name),
    )
}

fn read_group(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    app: &str,
    group: &str,
) -> Result<Option<GroupRecord>, AwsError> {
    read(
        svc.store.as_ref(),
        &group_key(&ctx.account_id, &ctx.region, app, group),
    )
}

fn read_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    id: &str,
) -> Result<Option<DeploymentRecord>, AwsError> {
    read(
        svc.store.as_ref(),
        &deployment_key(&ctx.account_id, &ctx.region, id),
    )
}

/// A deployment configuration by name: predefined or custom.
fn find_config(
    view: &dyn ReadView,
    account: &str,
    region: &str,
    name: &str,
) -> Result<Option<sh::TrafficRoutingConfig>, AwsError> {
    if let Some(routing) = configs::predefined(name) {
        return Ok(Some(routing));
    }
    Ok(
        read::<ConfigRecord>(view, &config_key(account, region, name))?
            .map(|c| c.traffic_routing_config),
    )
}

// ---------- applications ----------

pub async fn create_application(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::CreateApplicationInput,
) -> Result<sh::CreateApplicationOutput, AwsError> {
    let name = application_name(input.application_name.as_deref())?;
    let platform = input
        .compute_platform
        .clone()
        .unwrap_or_else(|| "Server".to_string());
    if !sh::COMPUTE_PLATFORM_VALUES.contains(&platform.as_str()) {
        return Err(err(
            "InvalidComputePlatformException",
            format!("Invalid compute platform {platform}: use Server, Lambda or ECS."),
        ));
    }
    let tags = check_tags(input.tags.as_deref().unwrap_or_default())?;
    ctx.authorize(&[
        Requirement::new("codedeploy:CreateApplication", app_arn(ctx, &name))
            .request_tags(tag_pairs(&tags)),
    ])?;
    if platform != "ECS" {
        return Err(err(
            "InvalidComputePlatformException",
            format!(
                "The {platform} compute platform is not available in Berth: {SERVER_OR_LAMBDA} \
                 Create the application with computePlatform ECS."
            ),
        ));
    }
    let app = AppRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.clone(),
        compute_platform: platform,
        create_time: now(),
        tags,
    };
    let key = app_key(&ctx.account_id, &ctx.region, &name);
    let taken = err(
        "ApplicationAlreadyExistsException",
        format!("Application already exists with name {name}"),
    );
    insert_new(svc, put(key.clone(), &app)?, key, taken).await?;
    Ok(sh::CreateApplicationOutput {
        application_id: Some(app.id),
    })
}

pub fn get_application(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::GetApplicationInput,
) -> Result<sh::GetApplicationOutput, AwsError> {
    let name = application_name(input.application_name.as_deref())?;
    let app = read_app(svc, ctx, &name)?;
    ctx.authorize(&[app_requirement(
        ctx,
        "codedeploy:GetApplication",
        &name,
        app.as_ref(),
    )])?;
    let app = app.ok_or_else(|| no_application(&name))?;
    Ok(sh::GetApplicationOutput {
        application: Some(application_info(&app)),
    })
}

fn app_requirement(
    ctx: &RequestContext,
    action: &str,
    name: &str,
    app: Option<&AppRecord>,
) -> Requirement {
    let r = Requirement::new(action, app_arn(ctx, name));
    match app {
        Some(app) => r.resource_tags(tag_pairs(&app.tags)),
        None => r,
    }
}

fn group_requirement(
    ctx: &RequestContext,
    action: &str,
    app: &str,
    name: &str,
    group: Option<&GroupRecord>,
) -> Requirement {
    let r = Requirement::new(action, group_arn(ctx, app, name));
    match group {
        Some(g) => r.resource_tags(tag_pairs(&g.tags)),
        None => r,
    }
}

pub fn batch_get_applications(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::BatchGetApplicationsInput,
) -> Result<sh::BatchGetApplicationsOutput, AwsError> {
    let names = input.application_names.clone().ok_or_else(|| {
        err(
            "ApplicationNameRequiredException",
            "Application names are required",
        )
    })?;
    if names.len() > BATCH_MAX {
        return Err(err(
            "BatchLimitExceededException",
            "The maximum number of names or IDs allowed for this request (100) was exceeded.",
        ));
    }
    let names = names
        .iter()
        .map(|n| application_name(Some(n)))
        .collect::<Result<Vec<_>, _>>()?;
    let apps = names
        .iter()
        .map(|n| read_app(svc, ctx, n))
        .collect::<Result<Vec<_>, _>>()?;
    let reqs: Vec<Requirement> = names
        .iter()
        .zip(&apps)
        .map(|(n, a)| app_requirement(ctx, "codedeploy:BatchGetApplications", n, a.as_ref()))
        .collect();
    ctx.authorize(&or_star(reqs, "codedeploy:BatchGetApplications"))?;
    let mut out = Vec::new();
    for (name, app) in names.iter().zip(apps) {
        out.push(application_info(&app.ok_or_else(|| no_application(name))?));
    }
    Ok(sh::BatchGetApplicationsOutput {
        applications_info: Some(out),
    })
}

pub fn list_applications(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ListApplicationsInput,
) -> Result<sh::ListApplicationsOutput, AwsError> {
    ctx.authorize(&[Requirement::new("codedeploy:ListApplications", "*")])?;
    let prefix = format!("{}applications/", base(&ctx.account_id, &ctx.region));
    let names: Vec<String> = svc
        .store
        .range(&prefix, None, usize::MAX)
        .into_iter()
        .map(|kv| kv.key[prefix.len()..].to_string())
        .collect();
    let (applications, next_token) = page(names, input.next_token.as_deref())?;
    Ok(sh::ListApplicationsOutput {
        applications: Some(applications),
        next_token,
    })
}

pub async fn update_application(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::UpdateApplicationInput,
) -> Result<Value, AwsError> {
    let name = application_name(input.application_name.as_deref())?;
    let new_name = match input.new_application_name.as_deref() {
        Some(n) => Some(application_name(Some(n))?),
        None => None,
    };
    let app = read_app(svc, ctx, &name)?;
    let mut reqs = vec![app_requirement(
        ctx,
        "codedeploy:UpdateApplication",
        &name,
        app.as_ref(),
    )];
    if let Some(new_name) = &new_name {
        reqs.push(Requirement::new(
            "codedeploy:UpdateApplication",
            app_arn(ctx, new_name),
        ));
    }
    ctx.authorize(&reqs)?;
    let Some(new_name) = new_name.filter(|n| *n != name) else {
        app.ok_or_else(|| no_application(&name))?;
        return Ok(json!({}));
    };
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    svc.store
        .update(move |view| {
            let old_key = app_key(&account, &region, &name);
            let mut app: AppRecord = read(view, &old_key)?.ok_or_else(|| no_application(&name))?;
            let new_key = app_key(&account, &region, &new_name);
            if view.get(&new_key).is_some() {
                return Err(err(
                    "ApplicationAlreadyExistsException",
                    format!("Application already exists with name {new_name}"),
                ));
            }
            app.name = new_name.clone();
            let mut ops = vec![Op::delete(old_key), put(new_key, &app)?];
            for kv in view.range(&groups_prefix(&account, &region, &name), None, usize::MAX) {
                let mut group: GroupRecord =
                    serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?;
                group.application = new_name.clone();
                ops.push(Op::delete(kv.key.clone()));
                ops.push(put(
                    group_key(&account, &region, &new_name, &group.name),
                    &group,
                )?);
            }
            for mut d in read_all::<DeploymentRecord>(view, &deployments_prefix(&account, &region))
            {
                if d.application == name {
                    d.application = new_name.clone();
                    ops.push(put(deployment_key(&account, &region, &d.id), &d)?);
                }
            }
            Ok((ops, ()))
        })
        .await
        .map_err(store_error)??;
    Ok(json!({}))
}

pub async fn delete_application(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::DeleteApplicationInput,
) -> Result<Value, AwsError> {
    let name = application_name(input.application_name.as_deref())?;
    let app = read_app(svc, ctx, &name)?;
    ctx.authorize(&[app_requirement(
        ctx,
        "codedeploy:DeleteApplication",
        &name,
        app.as_ref(),
    )])?;
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    // Deleting an application that does not exist succeeds, as AWS's does.
    svc.store
        .update(move |view| {
            let key = app_key(&account, &region, &name);
            if view.get(&key).is_none() {
                return Err(());
            }
            let mut ops = vec![Op::delete(key)];
            for kv in view.range(&groups_prefix(&account, &region, &name), None, usize::MAX) {
                ops.push(Op::delete(kv.key.clone()));
            }
            Ok((ops, ()))
        })
        .await
        .map_err(store_error)?
        .ok();
    Ok(json!({}))
}

// ---------- deployment configurations ----------

fn check_percentage(value: Option<i32>, what: &str) -> Result<i32, AwsError> {
    value.filter(|p| (1..=99).contains(p)).ok_or_else(|| {
        err(
            "InvalidTrafficRoutingConfigurationException",
            format!("{what} must be a percentage between 1 and 99."),
        )
    })
}

fn check_interval(value: Option<i32>, what: &str) -> Result<i32, AwsError> {
    value
        .filter(|m| (1..=MAX_WAIT_MINUTES).contains(m))
        .ok_or_else(|| {
            err(
                "InvalidTrafficRoutingConfigurationException",
                format!("{what} must be a number of minutes between 1 and {MAX_WAIT_MINUTES}."),
            )
        })
}

fn check_routing(
    config: Option<&sh::TrafficRoutingConfig>,
) -> Result<sh::TrafficRoutingConfig, AwsError> {
    let Some(config) = config else {
        return Ok(configs::routing("AllAtOnce", 0, 0));
    };
    let kind = config.r#type.clone().unwrap_or_else(|| "AllAtOnce".into());
    let invalid = |m: &str| err("InvalidTrafficRoutingConfigurationException", m.to_string());
    match kind.as_str() {
        "AllAtOnce" => {
            if config.time_based_canary.is_some() || config.time_based_linear.is_some() {
                return Err(invalid(
                    "An AllAtOnce traffic routing configuration takes neither timeBasedCanary \
                     nor timeBasedLinear.",
                ));
            }
            Ok(configs::routing("AllAtOnce", 0, 0))
        }
        "TimeBasedCanary" => {
            if config.time_based_linear.is_some() {
                return Err(invalid(
                    "A TimeBasedCanary traffic routing configuration takes timeBasedCanary, not \
                     timeBasedLinear.",
                ));
            }
            let c = config.time_based_canary.clone().ok_or_else(|| {
                invalid("A TimeBasedCanary traffic routing configuration needs timeBasedCanary.")
            })?;
            let p = check_percentage(c.canary_percentage, "canaryPercentage")?;
            let i = check_interval(c.canary_interval, "canaryInterval")?;
            Ok(configs::routing("TimeBasedCanary", p, i))
        }
        "TimeBasedLinear" => {
            if config.time_based_canary.is_some() {
                return Err(invalid(
                    "A TimeBasedLinear traffic routing configuration takes timeBasedLinear, not \
                     timeBasedCanary.",
                ));
            }
            let c = config.time_based_linear.clone().ok_or_else(|| {
                invalid("A TimeBasedLinear traffic routing configuration needs timeBasedLinear.")
            })?;
            let p = check_percentage(c.linear_percentage, "linearPercentage")?;
            let i = check_interval(c.linear_interval, "linearInterval")?;
            Ok(configs::routing("TimeBasedLinear", p, i))
        }
        other => Err(invalid(&format!(
            "Invalid traffic routing type {other}: use TimeBasedCanary, TimeBasedLinear or \
             AllAtOnce."
        ))),
    }
}

pub async fn create_deployment_config(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::CreateDeploymentConfigInput,
) -> Result<sh::CreateDeploymentConfigOutput, AwsError> {
    let name = config_name(input.deployment_config_name.as_deref())?;
    ctx.authorize(&[Requirement::new(
        "codedeploy:CreateDeploymentConfig",
        config_arn(ctx, &name),
    )])?;
    if name.starts_with(configs::RESERVED_PREFIX) {
        return Err(err(
            "InvalidDeploymentConfigNameException",
            format!(
                "Deployment configuration names starting with {} are reserved for predefined \
                 configurations.",
                configs::RESERVED_PREFIX
            ),
        ));
    }
    let platform = input
        .compute_platform
        .clone()
        .unwrap_or_else(|| "Server".into());
    if !sh::COMPUTE_PLATFORM_VALUES.contains(&platform.as_str()) {
        return Err(err(
            "InvalidComputePlatformException",
            format!("Invalid compute platform {platform}: use Server, Lambda or ECS."),
        ));
    }
    if platform != "ECS" {
        return Err(err(
            "InvalidComputePlatformException",
            format!(
                "The {platform} compute platform is not available in Berth: {SERVER_OR_LAMBDA}"
            ),
        ));
    }
    if input.minimum_healthy_hosts.is_some() {
        return Err(err(
            "InvalidMinimumHealthyHostValueException",
            "minimumHealthyHosts applies to the Server compute platform only, not to ECS.",
        ));
    }
    if input.zonal_config.is_some() {
        return Err(err(
            "InvalidZonalDeploymentConfigurationException",
            "zonalConfig applies to the Server compute platform only, not to ECS.",
        ));
    }
    let routing = check_routing(input.traffic_routing_config.as_ref())?;
    let record = ConfigRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.clone(),
        compute_platform: platform,
        create_time: now(),
        traffic_routing_config: routing,
    };
    let key = config_key(&ctx.account_id, &ctx.region, &name);
    let taken = err(
        "DeploymentConfigAlreadyExistsException",
        format!("Deployment Configuration already exists with name {name}"),
    );
    insert_new(svc, put(key.clone(), &record)?, key, taken).await?;
    Ok(sh::CreateDeploymentConfigOutput {
        deployment_config_id: Some(record.id),
    })
}

pub fn get_deployment_config(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::GetDeploymentConfigInput,
) -> Result<sh::GetDeploymentConfigOutput, AwsError> {
    let name = config_name(input.deployment_config_name.as_deref())?;
    ctx.authorize(&[Requirement::new(
        "codedeploy:GetDeploymentConfig",
        config_arn(ctx, &name),
    )])?;
    let info = if let Some(routing) = configs::predefined(&name) {
        sh::DeploymentConfigInfo {
            deployment_config_id: Some(configs::predefined_id(&name)),
            deployment_config_name: Some(name.clone()),
            create_time: Some(0.0),
            compute_platform: Some("ECS".into()),
            traffic_routing_config: Some(routing),
            ..Default::default()
        }
    } else {
        let record: ConfigRecord = read(
            svc.store.as_ref(),
            &config_key(&ctx.account_id, &ctx.region, &name),
        )?
        .ok_or_else(|| no_config(&name))?;
        sh::DeploymentConfigInfo {
            deployment_config_id: Some(record.id),
            deployment_config_name: Some(record.name),
            create_time: Some(record.create_time),
            compute_platform: Some(record.compute_platform),
            traffic_routing_config: Some(record.traffic_routing_config),
            ..Default::default()
        }
    };
    Ok(sh::GetDeploymentConfigOutput {
        deployment_config_info: Some(info),
    })
}

pub fn list_deployment_configs(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ListDeploymentConfigsInput,
) -> Result<sh::ListDeploymentConfigsOutput, AwsError> {
    ctx.authorize(&[Requirement::new("codedeploy:ListDeploymentConfigs", "*")])?;
    let prefix = format!("{}configs/", base(&ctx.account_id, &ctx.region));
    let mut names: Vec<String> = configs::names().map(str::to_string).collect();
    names.extend(
        svc.store
            .range(&prefix, None, usize::MAX)
            .into_iter()
            .map(|kv| kv.key[prefix.len()..].to_string()),
    );
    names.sort();
    let (list, next_token) = page(names, input.next_token.as_deref())?;
    Ok(sh::ListDeploymentConfigsOutput {
        deployment_configs_list: Some(list),
        next_token,
    })
}

pub async fn delete_deployment_config(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::DeleteDeploymentConfigInput,
) -> Result<Value, AwsError> {
    let name = config_name(input.deployment_config_name.as_deref())?;
    ctx.authorize(&[Requirement::new(
        "codedeploy:DeleteDeploymentConfig",
        config_arn(ctx, &name),
    )])?;
    if name.starts_with(configs::RESERVED_PREFIX) {
        return Err(err(
            "InvalidOperationException",
            format!("{name} is a predefined deployment configuration and cannot be deleted."),
        ));
    }
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    svc.store
        .update(move |view| {
            let key = config_key(&account, &region, &name);
            if view.get(&key).is_none() {
                return Ok((vec![], ()));
            }
            let groups: Vec<GroupRecord> =
                read_all(view, &format!("{}groups/", base(&account, &region)));
            if groups.iter().any(|g| g.config_name == name) {
                return Err(err(
                    "DeploymentConfigInUseException",
                    format!("The deployment configuration {name} is still in use."),
                ));
            }
            let deployments: Vec<DeploymentRecord> =
                read_all(view, &deployments_prefix(&account, &region));
            if deployments
                .iter()
                .any(|d| d.config_name == name && is_active(&d.status))
            {
                return Err(err(
                    "DeploymentConfigInUseException",
                    format!(
                        "The deployment configuration {name} is in use by an active deployment."
                    ),
                ));
            }
            Ok((vec![Op::delete(key)], ()))
        })
        .await
        .map_err(store_error)??;
    Ok(json!({}))
}

// ---------- deployment groups ----------

/// A deployment group's settings as CreateDeploymentGroup or
/// UpdateDeploymentGroup give them.
#[derive(Default)]
struct GroupSettings {
    config_name: Option<String>,
    service_role_arn: Option<String>,
    ecs_services: Option<Vec<sh::ECSService>>,
    load_balancer_info: Option<sh::LoadBalancerInfo>,
    deployment_style: Option<sh::DeploymentStyle>,
    blue_green: Option<sh::BlueGreenDeploymentConfiguration>,
    auto_rollback: Option<sh::AutoRollbackConfiguration>,
    alarm_configuration: Option<sh::AlarmConfiguration>,
    server_only: Option<&'static str>,
}

fn role_arn_valid(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > 5
}

/// Checks what does not need the store; answers the group's ECS fields.
fn check_settings(
    settings: &GroupSettings,
    existing: Option<&GroupRecord>,
) -> Result<GroupRecord, AwsError> {
    if let Some(member) = settings.server_only {
        let code = match member {
            "ec2TagFilters" | "ec2TagSet" => "InvalidEC2TagException",
            "onPremisesInstanceTagFilters" | "onPremisesTagSet" => "InvalidTagException",
            "autoScalingGroups" | "ec2DeploymentOptions" => "InvalidAutoScalingGroupException",
            "triggerConfigurations" => "InvalidTriggerConfigException",
            _ => "InvalidInputException",
        };
        return Err(err(
            code,
            format!(
                "{member} does not apply to a deployment group of the ECS compute platform \
                 ({SERVER_OR_LAMBDA})"
            ),
        ));
    }
    let mut group = existing.cloned().unwrap_or(GroupRecord {
        id: String::new(),
        application: String::new(),
        name: String::new(),
        config_name: configs::DEFAULT_ECS.into(),
        service_role_arn: String::new(),
        cluster: String::new(),
        service: String::new(),
        target_groups: Vec::new(),
        prod_listeners: Vec::new(),
        test_listeners: Vec::new(),
        termination_wait_minutes: 0,
        ready_wait_minutes: None,
        auto_rollback: None,
        alarm_configuration: None,
        tags: Vec::new(),
        create_time: 0.0,
    });
    if let Some(role) = &settings.service_role_arn {
        if !role_arn_valid(role) {
            return Err(err(
                "InvalidRoleException",
                format!("The service role ARN {role} is not valid: use arn:aws:iam::<account>:role/<name>."),
            ));
        }
        group.service_role_arn = role.clone();
    } else if existing.is_none() {
        return Err(err("RoleRequiredException", "Service role is required"));
    }
    if let Some(name) = &settings.config_name {
        group.config_name = config_name(Some(name))?;
    }
    // deploymentStyle: BLUE_GREEN with traffic control, which ECS requires.
    match &settings.deployment_style {
        Some(style) => {
            let kind = style.deployment_type.as_deref();
            let option = style.deployment_option.as_deref();
            if kind.is_some_and(|k| !sh::DEPLOYMENT_TYPE_VALUES.contains(&k))
                || option.is_some_and(|o| !sh::DEPLOYMENT_OPTION_VALUES.contains(&o))
            {
                return Err(err(
                    "InvalidDeploymentStyleException",
                    "Valid deployment types are IN_PLACE and BLUE_GREEN; valid deployment \
                     options are WITH_TRAFFIC_CONTROL and WITHOUT_TRAFFIC_CONTROL.",
                ));
            }
            if kind != Some("BLUE_GREEN") || option != Some("WITH_TRAFFIC_CONTROL") {
                return Err(err(
                    "InvalidDeploymentStyleException",
                    "A deployment group of the ECS compute platform must have deploymentType \
                     BLUE_GREEN and deploymentOption WITH_TRAFFIC_CONTROL.",
                ));
            }
        }
        None if existing.is_none() => {
            return Err(err(
                "InvalidDeploymentStyleException",
                "A deployment group of the ECS compute platform must have a deploymentStyle \
                 with deploymentType BLUE_GREEN and deploymentOption WITH_TRAFFIC_CONTROL.",
            ))
        }
        None => {}
    }
    match &settings.blue_green {
        Some(bg) => {
            let invalid = |m: String| err("InvalidBlueGreenDeploymentConfigurationException", m);
            if bg.green_fleet_provisioning_option.is_some() {
                return Err(invalid(
                    "greenFleetProvisioningOption applies to EC2 blue/green deployments, not \
                     to ECS."
                        .into(),
                ));
            }
            let wait = match &bg.terminate_blue_instances_on_deployment_success {
                None => 0,
                Some(t) => {
                    if t.action.as_deref().is_some_and(|a| a != "TERMINATE") {
                        return Err(invalid(format!(
                            "An ECS deployment group's terminateBlueInstancesOnDeploymentSuccess \
                             action must be TERMINATE, not {}.",
                            t.action.as_deref().unwrap_or_default()
                        )));
                    }
                    let wait = t.termination_wait_time_in_minutes.unwrap_or(0);
                    if !(0..=MAX_WAIT_MINUTES).contains(&wait) {
                        return Err(invalid(format!(
                            "terminationWaitTimeInMinutes must be between 0 and \
                             {MAX_WAIT_MINUTES}, not {wait}."
                        )));
                    }
                    wait
                }
            };
            let ready_wait = match &bg.deployment_ready_option {
                None => None,
                Some(ready) => match ready.action_on_timeout.as_deref() {
                    None | Some("CONTINUE_DEPLOYMENT") => None,
                    Some("STOP_DEPLOYMENT") => {
                        let minutes = ready.wait_time_in_minutes.unwrap_or(0);
                        if !(0..=MAX_WAIT_MINUTES).contains(&minutes) {
                            return Err(invalid(format!(
                                "deploymentReadyOption waitTimeInMinutes must be between 0 and \
                                 {MAX_WAIT_MINUTES}, not {minutes}."
                            )));
                        }
                        Some(minutes)
                    }
                    Some(other) => {
                        return Err(invalid(format!(
                            "Invalid actionOnTimeout {other}: use CONTINUE_DEPLOYMENT or \
                             STOP_DEPLOYMENT."
                        )))
                    }
                },
            };
            group.termination_wait_minutes = wait;
            group.ready_wait_minutes = ready_wait;
        }
        None if existing.is_none() => {
            return Err(err(
                "InvalidBlueGreenDeploymentConfigurationException",
                "A deployment group of the ECS compute platform must have a \
                 blueGreenDeploymentConfiguration with terminateBlueInstancesOnDeploymentSuccess \
                 and deploymentReadyOption.",
            ))
        }
        None => {}
    }
    match &settings.ecs_services {
        Some(services) => {
            if services.len() != 1 {
                return Err(err(
                    "InvalidECSServiceException",
                    format!(
                        "A deployment group of the ECS compute platform must name exactly one \
                         ECS service; {} given.",
                        services.len()
                    ),
                ));
            }
            let s = &services[0];
            let (Some(cluster), Some(service)) = (
                s.cluster_name.as_deref().filter(|c| !c.is_empty()),
                s.service_name.as_deref().filter(|c| !c.is_empty()),
            ) else {
                return Err(err(
                    "InvalidECSServiceException",
                    "The ECS service must have a serviceName and a clusterName.",
                ));
            };
            group.cluster = cluster.to_string();
            group.service = service.to_string();
        }
        None if existing.is_none() => {
            return Err(err(
                "InvalidECSServiceException",
                "A deployment group of the ECS compute platform must name one ECS service \
                 (ecsServices).",
            ))
        }
        None => {}
    }
    match &settings.load_balancer_info {
        Some(info) => {
            if info.elb_info_list.is_some() || info.target_group_info_list.is_some() {
                return Err(err(
                    "InvalidLoadBalancerInfoException",
                    "A deployment group of the ECS compute platform takes a \
                     targetGroupPairInfoList, not elbInfoList or targetGroupInfoList.",
                ));
            }
            let pairs = info.target_group_pair_info_list.clone().unwrap_or_default();
            if pairs.len() != 1 {
                return Err(err(
                    "InvalidTargetGroupPairException",
                    format!(
                        "A deployment group of the ECS compute platform must have exactly one \
                         target group pair; {} given.",
                        pairs.len()
                    ),
                ));
            }
            let pair = &pairs[0];
            let names: Vec<String> = pair
                .target_groups
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.name.filter(|n| !n.is_empty()))
                .collect();
            if names.len() != 2
                || pair.target_groups.as_ref().map(Vec::len) != Some(2)
                || names[0] == names[1]
            {
                return Err(err(
                    "InvalidTargetGroupPairException",
                    "A target group pair must name two different target groups.",
                ));
            }
            let prod = pair
                .prod_traffic_route
                .as_ref()
                .and_then(|r| r.listener_arns.clone())
                .unwrap_or_default();
            if prod.len() != 1 {
                return Err(err(
                    "InvalidTargetGroupPairException",
                    "A target group pair's prodTrafficRoute must name exactly one listener.",
                ));
            }
            let test = pair
                .test_traffic_route
                .as_ref()
                .and_then(|r| r.listener_arns.clone())
                .unwrap_or_default();
            if test.len() > 1 {
                return Err(err(
                    "InvalidTargetGroupPairException",
                    "A target group pair's testTrafficRoute can name at most one listener.",
                ));
            }
            if test.first() == prod.first() && !test.is_empty() {
                return Err(err(
                    "InvalidTargetGroupPairException",
                    "The test listener must differ from the production listener.",
                ));
            }
            group.target_groups = names;
            group.prod_listeners = prod;
            group.test_listeners = test;
        }
        None if existing.is_none() => {
            return Err(err(
                "InvalidLoadBalancerInfoException",
                "A deployment group of the ECS compute platform must have a loadBalancerInfo \
                 with one targetGroupPairInfoList entry.",
            ))
        }
        None => {}
    }
    if let Some(auto) = &settings.auto_rollback {
        let events = auto.events.clone().unwrap_or_default();
        if let Some(bad) = events
            .iter()
            .find(|e| !sh::AUTO_ROLLBACK_EVENT_VALUES.contains(&e.as_str()))
        {
            return Err(err(
                "InvalidAutoRollbackConfigException",
                format!("Invalid automatic rollback event {bad}."),
            ));
        }
        if auto.enabled == Some(true) && events.is_empty() {
            return Err(err(
                "InvalidAutoRollbackConfigException",
                "Automatic rollback is enabled but no event is given.",
            ));
        }
        if events.iter().any(|e| e == "DEPLOYMENT_STOP_ON_ALARM") && auto.enabled == Some(true) {
            return Err(err(
                "InvalidAutoRollbackConfigException",
                "DEPLOYMENT_STOP_ON_ALARM needs CloudWatch alarms, which Berth does not have.",
            ));
        }
        group.auto_rollback = Some(auto.clone());
    }
    if let Some(alarms) = &settings.alarm_configuration {
        if alarms.enabled == Some(true) {
            return Err(err(
                "InvalidAlarmConfigException",
                "Berth has no Amazon CloudWatch alarms, so a deployment group cannot be stopped \
                 by one: leave alarmConfiguration disabled.",
            ));
        }
        group.alarm_configuration = Some(alarms.clone());
    }
    Ok(group)
}

/// The ECS service a group names, as ECS's port sees it.
fn check_ecs_service(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    group: &GroupRecord,
) -> Result<(), AwsError> {
    let facts = svc
        .ecs
        .service(&ctx.account_id, &ctx.region, &group.cluster, &group.service)
        .map_err(|e| match e {
            EcsError::ServiceNotFound(m) | EcsError::NotCodeDeploy(m) | EcsError::Invalid(m) => {
                err("InvalidECSServiceException", m)
            }
            EcsError::Unavailable(m) => AwsError::new(
                503,
                "ThrottlingException",
                format!("Amazon ECS could not be asked about the service; retry. ({m})"),
            ),
        })?;
    if facts.deployment_controller != "CODE_DEPLOY" {
        return Err(err(
            "InvalidECSServiceException",
            format!(
                "Deployment group's ECS service must be configured for a CODE_DEPLOY \
                 deployment controller: {}:{} uses {}.",
                group.cluster, group.service, facts.deployment_controller
            ),
        ));
    }
    Ok(())
}

/// Cross-record checks inside the mutation: the application exists and
/// is ECS, the configuration exists, the service belongs to no other group.
fn check_in_store(
    view: &dyn ReadView,
    account: &str,
    region: &str,
    group: &GroupRecord,
    replacing: Option<&str>,
) -> Result<(), AwsError> {
    let app: AppRecord = read(view, &app_key(account, region, &group.application))?
        .ok_or_else(|| no_application(&group.application))?;
    if app.compute_platform != "ECS" {
        return Err(err(
            "InvalidComputePlatformException",
            format!(
                "Application {} is not of the ECS compute platform.",
                app.name
            ),
        ));
    }
    if find_config(view, account, region, &group.config_name)?.is_none() {
        return Err(no_config(&group.config_name));
    }
    let all: Vec<GroupRecord> = read_all(view, &format!("{}groups/", base(account, region)));
    if let Some(other) = all.iter().find(|g| {
        g.cluster == group.cluster
            && g.service == group.service
            && !(g.application == group.application && Some(g.name.as_str()) == replacing)
    }) {
        return Err(err(
            "ECSServiceMappingLimitExceededException",
            format!(
                "The ECS service {}:{} is already associated with deployment group {} of \
                 application {}: an ECS service can belong to one deployment group only.",
                group.cluster, group.service, other.name, other.application
            ),
        ));
    }
    Ok(())
}

/// The first EC2/on-premises-only member a group request gives.
fn server_only_members(given: [(bool, &'static str); 8]) -> Option<&'static str> {
    given
        .into_iter()
        .find(|(given, _)| *given)
        .map(|(_, name)| name)
}

fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// The settings CreateDeploymentGroup and UpdateDeploymentGroup share
/// (their inputs are two types with the same members).
macro_rules! group_settings {
    ($input:expr) => {{
        let input = &$input;
        GroupSettings {
            config_name: input.deployment_config_name.clone(),
            service_role_arn: input.service_role_arn.clone(),
            ecs_services: input.ecs_services.clone(),
            load_balancer_info: input.load_balancer_info.clone(),
            deployment_style: input.deployment_style.clone(),
            blue_green: input.blue_green_deployment_configuration.clone(),
            auto_rollback: input.auto_rollback_configuration.clone(),
            alarm_configuration: input.alarm_configuration.clone(),
            server_only: server_only_members([
                (non_empty(&input.ec2_tag_filters), "ec2TagFilters"),
                (input.ec2_tag_set.is_some(), "ec2TagSet"),
                (
                    non_empty(&input.on_premises_instance_tag_filters),
                    "onPremisesInstanceTagFilters",
                ),
                (input.on_premises_tag_set.is_some(), "onPremisesTagSet"),
                (non_empty(&input.auto_scaling_groups), "autoScalingGroups"),
                (
                    input.ec2_deployment_options.is_some(),
                    "ec2DeploymentOptions",
                ),
                (
                    non_empty(&input.trigger_configurations),
                    "triggerConfigurations",
                ),
                (
                    input.outdated_instances_strategy.is_some(),
                    "outdatedInstancesStrategy",
                ),
            ]),
        }
    }};
}

pub async fn create_deployment_group(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::CreateDeploymentGroupInput,
) -> Result<sh::CreateDeploymentGroupOutput, AwsError> {
    let app = application_name(input.application_name.as_deref())?;
    let name = group_name(input.deployment_group_name.as_deref())?;
    let tags = check_tags(input.tags.as_deref().unwrap_or_default())?;
    let settings = group_settings!(input);
    let mut reqs = vec![Requirement::new(
        "codedeploy:CreateDeploymentGroup",
        group_arn(ctx, &app, &name),
    )
    .request_tags(tag_pairs(&tags))];
    if let Some(role) = &input.service_role_arn {
        reqs.push(Requirement::pass_role(
            role.clone(),
            "codedeploy.amazonaws.com",
        ));
    }
    ctx.authorize(&reqs)?;
    let mut group = check_settings(&settings, None)?;
    group.id = uuid::Uuid::new_v4().to_string();
    group.application = app.clone();
    group.name = name.clone();
    group.tags = tags;
    group.create_time = now();
    check_ecs_service(svc, ctx, &group)?;
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    let record = group.clone();
    svc.store
        .update(move |view| {
            check_in_store(view, &account, &region, &record, None)?;
            let key = group_key(&account, &region, &record.application, &record.name);
            if view.get(&key).is_some() {
                return Err(err(
                    "DeploymentGroupAlreadyExistsException",
                    format!(
                        "Deployment Group already exists with name {} for application {}",
                        record.name, record.application
                    ),
                ));
            }
            Ok((vec![put(key, &record)?], ()))
        })
        .await
        .map_err(store_error)??;
    Ok(sh::CreateDeploymentGroupOutput {
        deployment_group_id: Some(group.id),
    })
}

fn last_deployment(d: &DeploymentRecord) -> sh::LastDeploymentInfo {
    sh::LastDeploymentInfo {
        deployment_id: Some(d.id.clone()),
        status: Some(d.status.clone()),
        end_time: d.complete_time,
        create_time: Some(d.create_time),
    }
}

fn group_info(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    g: &GroupRecord,
) -> sh::DeploymentGroupInfo {
    let mut deployments: Vec<DeploymentRecord> = read_all::<DeploymentRecord>(
        svc.store.as_ref(),
        &deployments_prefix(&ctx.account_id, &ctx.region),
    )
    .into_iter()
    .filter(|d| d.application == g.application && d.group == g.name)
    .collect();
    deployments.sort_by(|a, b| a.create_time.total_cmp(&b.create_time));
    let last_attempted = deployments.last().map(last_deployment);
    let last_successful = deployments
        .iter()
        .rev()
        .find(|d| d.status == "Succeeded")
        .map(last_deployment);
    let target_revision = deployments
        .iter()
        .rev()
        .find(|d| d.status == "Succeeded")
        .map(|d| d.revision.clone());
    sh::DeploymentGroupInfo {
        application_name: Some(g.application.clone()),
        deployment_group_id: Some(g.id.clone()),
        deployment_group_name: Some(g.name.clone()),
        deployment_config_name: Some(g.config_name.clone()),
        ec2_tag_filters: Some(vec![]),
        on_premises_instance_tag_filters: Some(vec![]),
        auto_scaling_groups: Some(vec![]),
        service_role_arn: Some(g.service_role_arn.clone()),
        target_revision,
        trigger_configurations: Some(vec![]),
        alarm_configuration: Some(g.alarm_configuration.clone().unwrap_or(
            sh::AlarmConfiguration {
                enabled: Some(false),
                ignore_poll_alarm_failure: Some(false),
                alarms: Some(vec![]),
            },
        )),
        auto_rollback_configuration: g.auto_rollback.clone(),
        deployment_style: Some(ecs_style()),
        outdated_instances_strategy: Some("UPDATE".into()),
        blue_green_deployment_configuration: Some(g.blue_green()),
        load_balancer_info: Some(g.load_balancer_info()),
        last_successful_deployment: last_successful,
        last_attempted_deployment: last_attempted,
        compute_platform: Some("ECS".into()),
        ecs_services: Some(vec![sh::ECSService {
            service_name: Some(g.service.clone()),
            cluster_name: Some(g.cluster.clone()),
        }]),
        termination_hook_enabled: Some(false),
        ..Default::default()
    }
}

fn ecs_style() -> sh::DeploymentStyle {
    sh::DeploymentStyle {
        deployment_type: Some("BLUE_GREEN".into()),
        deployment_option: Some("WITH_TRAFFIC_CONTROL".into()),
    }
}

pub fn get_deployment_group(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::GetDeploymentGroupInput,
) -> Result<sh::GetDeploymentGroupOutput, AwsError> {
    let app = application_name(input.application_name.as_deref())?;
    let name = group_name(input.deployment_group_name.as_deref())?;
    let group = read_group(svc, ctx, &app, &name)?;
    ctx.authorize(&[group_requirement(
        ctx,
        "codedeploy:GetDeploymentGroup",
        &app,
        &name,
        group.as_ref(),
    )])?;
    if read_app(svc, ctx, &app)?.is_none() {
        return Err(no_application(&app));
    }
    let group = group.ok_or_else(|| no_group(&name))?;
    Ok(sh::GetDeploymentGroupOutput {
        deployment_group_info: Some(group_info(svc, ctx, &group)),
    })
}

pub fn batch_get_deployment_groups(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::BatchGetDeploymentGroupsInput,
) -> Result<sh::BatchGetDeploymentGroupsOutput, AwsError> {
    let app = application_name(input.application_name.as_deref())?;
    let names = input.deployment_group_names.clone().ok_or_else(|| {
        err(
            "DeploymentGroupNameRequiredException",
            "Deployment Group names are required",
        )
    })?;
    if names.len() > BATCH_MAX {
        return Err(err(
            "BatchLimitExceededException",
            "The maximum number of names or IDs allowed for this request (100) was exceeded.",
        ));
    }
    let names = names
        .iter()
        .map(|n| group_name(Some(n)))
        .collect::<Result<Vec<_>, _>>()?;
    let groups = names
        .iter()
        .map(|n| read_group(svc, ctx, &app, n))
        .collect::<Result<Vec<_>, _>>()?;
    let reqs: Vec<Requirement> = names
        .iter()
        .zip(&groups)
        .map(|(n, g)| {
            group_requirement(
                ctx,
                "codedeploy:BatchGetDeploymentGroups",
                &app,
                n,
                g.as_ref(),
            )
        })
        .collect();
    ctx.authorize(&or_star(reqs, "codedeploy:BatchGetDeploymentGroups"))?;
    if read_app(svc, ctx, &app)?.is_none() {
        return Err(no_application(&app));
    }
    let mut info = Vec::new();
    let mut missing = Vec::new();
    for (name, group) in names.iter().zip(groups) {
        match group {
            Some(g) => info.push(group_info(svc, ctx, &g)),
            None => missing.push(name.clone()),
        }
    }
    Ok(sh::BatchGetDeploymentGroupsOutput {
        deployment_groups_info: Some(info),
        error_message: (!missing.is_empty()).then(|| {
            format!(
                "Deployment groups not found for application {app}: {}",
                missing.join(", ")
            )
        }),
    })
}

pub fn list_deployment_groups(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ListDeploymentGroupsInput,
) -> Result<sh::ListDeploymentGroupsOutput, AwsError> {
    let app_name = application_name(input.application_name.as_deref())?;
    let app = read_app(svc, ctx, &app_name)?;
    ctx.authorize(&[app_requirement(
        ctx,
        "codedeploy:ListDeploymentGroups",
        &app_name,
        app.as_ref(),
    )])?;
    app.ok_or_else(|| no_application(&app_name))?;
    let prefix = groups_prefix(&ctx.account_id, &ctx.region, &app_name);
    let names: Vec<String> = svc
        .store
        .range(&prefix, None, usize::MAX)
        .into_iter()
        .map(|kv| kv.key[prefix.len()..].to_string())
        .collect();
    let (groups, next_token) = page(names, input.next_token.as_deref())?;
    Ok(sh::ListDeploymentGroupsOutput {
        application_name: Some(app_name),
        deployment_groups: Some(groups),
        next_token,
    })
}

pub async fn update_deployment_group(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::UpdateDeploymentGroupInput,
) -> Result<sh::UpdateDeploymentGroupOutput, AwsError> {
    let app = application_name(input.application_name.as_deref())?;
    let name = group_name(input.current_deployment_group_name.as_deref())?;
    let new_name = match input.new_deployment_group_name.as_deref() {
        Some(n) => Some(group_name(Some(n))?),
        None => None,
    };
    let existing = read_group(svc, ctx, &app, &name)?;
    let mut reqs = vec![group_requirement(
        ctx,
        "codedeploy:UpdateDeploymentGroup",
        &app,
        &name,
        existing.as_ref(),
    )];
    if let Some(role) = &input.service_role_arn {
        reqs.push(Requirement::pass_role(
            role.clone(),
            "codedeploy.amazonaws.com",
        ));
    }
    ctx.authorize(&reqs)?;
    if read_app(svc, ctx, &app)?.is_none() {
        return Err(no_application(&app));
    }
    let existing = existing.ok_or_else(|| no_group(&name))?;
    let settings = group_settings!(input);
    let mut group = check_settings(&settings, Some(&existing))?;
    if let Some(new_name) = &new_name {
        group.name = new_name.clone();
    }
    if group.cluster != existing.cluster || group.service != existing.service {
        check_ecs_service(svc, ctx, &group)?;
    }
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    svc.store
        .update(move |view| {
            let old_key = group_key(&account, &region, &app, &name);
            let current: GroupRecord = read(view, &old_key)?.ok_or_else(|| no_group(&name))?;
            let mut group = group.clone();
            // Tags are not UpdateDeploymentGroup's: keep the current ones.
            group.tags = current.tags;
            check_in_store(view, &account, &region, &group, Some(&name))?;
            let new_key = group_key(&account, &region, &app, &group.name);
            let mut ops = Vec::new();
            if new_key != old_key {
                if view.get(&new_key).is_some() {
                    return Err(err(
                        "DeploymentGroupAlreadyExistsException",
                        format!(
                            "Deployment Group already exists with name {} for application {app}",
                            group.name
                        ),
                    ));
                }
                ops.push(Op::delete(old_key));
                for mut d in
                    read_all::<DeploymentRecord>(view, &deployments_prefix(&account, &region))
                {
                    if d.application == app && d.group == name {
                        d.group = group.name.clone();
                        ops.push(put(deployment_key(&account, &region, &d.id), &d)?);
                    }
                }
            }
            ops.push(put(new_key, &group)?);
            Ok((ops, ()))
        })
        .await
        .map_err(store_error)??;
    Ok(sh::UpdateDeploymentGroupOutput {
        hooks_not_cleaned_up: Some(vec![]),
    })
}

pub async fn delete_deployment_group(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::DeleteDeploymentGroupInput,
) -> Result<sh::DeleteDeploymentGroupOutput, AwsError> {
    let app = application_name(input.application_name.as_deref())?;
    let name = group_name(input.deployment_group_name.as_deref())?;
    let group = read_group(svc, ctx, &app, &name)?;
    ctx.authorize(&[group_requirement(
        ctx,
        "codedeploy:DeleteDeploymentGroup",
        &app,
        &name,
        group.as_ref(),
    )])?;
    let key = group_key(&ctx.account_id, &ctx.region, &app, &name);
    svc.store
        .update(move |view| {
            if view.get(&key).is_none() {
                return Err(());
            }
            Ok((vec![Op::delete(key.clone())], ()))
        })
        .await
        .map_err(store_error)?
        .ok();
    Ok(sh::DeleteDeploymentGroupOutput {
        hooks_not_cleaned_up: Some(vec![]),
    })
}

// ---------- deployments ----------

/// The AppSpec content of a revision, checked as CreateDeployment checks
/// it (the content itself is read when the deployment runs).
fn appspec_content(revision: Option<&sh::RevisionLocation>) -> Result<String, AwsError> {
    let revision = revision.ok_or_else(|| {
        err(
            "RevisionRequiredException",
            "RevisionLocation must be specified",
        )
    })?;
    let kind = revision.revision_type.as_deref().unwrap_or_default();
    let content = match kind {
        "AppSpecContent" => revision.app_spec_content.clone(),
        "String" => revision.string.clone().map(|s| sh::AppSpecContent {
            content: s.content,
            sha256: s.sha256,
        }),
        "S3" | "GitHub" => {
            return Err(err(
                "InvalidRevisionException",
                format!(
                    "Berth cannot fetch {kind} revisions: give the ECS AppSpec inline with \
                     revisionType AppSpecContent."
                ),
            ))
        }
        "" => {
            return Err(err(
                "InvalidRevisionException",
                "The revision must have a revisionType: AppSpecContent for an ECS deployment.",
            ))
        }
        other => {
            return Err(err(
                "InvalidRevisionException",
                format!("Invalid revisionType {other}."),
            ))
        }
    };
    let content = content.unwrap_or_default();
    let text = content
        .content
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            err(
                "InvalidRevisionException",
                "The revision's AppSpec content must not be empty.",
            )
        })?;
    if let Some(expected) = content.sha256.as_deref().filter(|s| !s.is_empty()) {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if !expected.eq_ignore_ascii_case(&hex) {
            return Err(err(
                "InvalidRevisionException",
                "The sha256 of the AppSpec content does not match the content.",
            ));
        }
    }
    Ok(text)
}

pub async fn create_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::CreateDeploymentInput,
) -> Result<sh::CreateDeploymentOutput, AwsError> {
    let app = application_name(input.application_name.as_deref())?;
    let name = group_name(input.deployment_group_name.as_deref())?;
    let config_override = match input.deployment_config_name.as_deref() {
        Some(c) => Some(config_name(Some(c))?),
        None => None,
    };
    let group = read_group(svc, ctx, &app, &name)?;
    ctx.authorize(&[group_requirement(
        ctx,
        "codedeploy:CreateDeployment",
        &app,
        &name,
        group.as_ref(),
    )])?;
    let content = appspec_content(input.revision.as_ref())?;
    if input.description.as_ref().is_some_and(|d| d.len() > 8192) {
        return Err(err(
            "DescriptionTooLongException",
            "The description is too long: at most 8192 characters.",
        ));
    }
    if input.target_instances.is_some() {
        return Err(err(
            "InvalidTargetInstancesException",
            "targetInstances applies to EC2/on-premises deployments, not to ECS.",
        ));
    }
    if input.update_outdated_instances_only == Some(true) {
        return Err(err(
            "InvalidUpdateOutdatedInstancesOnlyValueException",
            "For ECS deployments, updateOutdatedInstancesOnly must be false.",
        ));
    }
    if input.ignore_application_stop_failures == Some(true) {
        return Err(err(
            "InvalidIgnoreApplicationStopFailuresValueException",
            "For ECS deployments, ignoreApplicationStopFailures must be false.",
        ));
    }
    if input
        .override_alarm_configuration
        .as_ref()
        .is_some_and(|a| a.enabled == Some(true))
    {
        return Err(err(
            "InvalidAlarmConfigException",
            "Berth has no Amazon CloudWatch alarms: overrideAlarmConfiguration cannot enable \
             alarms.",
        ));
    }
    if let Some(auto) = &input.auto_rollback_configuration {
        if let Some(bad) = auto
            .events
            .iter()
            .flatten()
            .find(|e| !sh::AUTO_ROLLBACK_EVENT_VALUES.contains(&e.as_str()))
        {
            return Err(err(
                "InvalidAutoRollbackConfigException",
                format!("Invalid automatic rollback event {bad}."),
            ));
        }
    }
    if read_app(svc, ctx, &app)?.is_none() {
        return Err(no_application(&app));
    }
    let group = group.ok_or_else(|| no_group(&name))?;
    let now = now();
    let id = new_deployment_id();
    let config = config_override.unwrap_or_else(|| group.config_name.clone());
    let spec = crate::appspec::parse(&content);
    let mut invalid = None;
    let plan = match &spec {
        Err(message) => {
            invalid = Some(("INVALID_REVISION".to_string(), message.clone()));
            None
        }
        Ok(spec) => {
            if !spec.hooks.is_empty() {
                let hooks: Vec<String> = spec
                    .hooks
                    .iter()
                    .map(|(e, f)| format!("{e}: {f}"))
                    .collect();
                invalid = Some((
                    "INVALID_LAMBDA_FUNCTION".to_string(),
                    format!(
                        "The AppSpec file names lifecycle hook functions ({}), but Berth has \
                         no AWS Lambda to run them: remove the Hooks section.",
                        hooks.join(", ")
                    ),
                ));
            }
            Some(EcsDeploymentPlan {
                deployment_id: id.clone(),
                cluster: group.cluster.clone(),
                service: group.service.clone(),
                task_definition: spec.task_definition.clone(),
                container_name: spec.container_name.clone(),
                container_port: spec.container_port,
                platform_version: spec.platform_version.clone(),
                network_configuration: spec.network_configuration.clone(),
                capacity_provider_strategy: spec.capacity_provider_strategy.clone(),
                target_group_names: group.target_groups.clone(),
                production_listener_arns: group.prod_listeners.clone(),
                test_listener_arns: group.test_listeners.clone(),
                // Filled from the configuration inside the mutation.
                traffic: crate::TrafficRouting::AllAtOnce,
                termination_wait_minutes: group.termination_wait_minutes,
                wait_to_continue: group.ready_wait_minutes.is_some(),
            })
        }
    };
    let record = DeploymentRecord {
        id: id.clone(),
        application: app.clone(),
        group: name.clone(),
        config_name: config.clone(),
        status: CREATED.into(),
        create_time: now,
        start_time: None,
        complete_time: None,
        revision: input.revision.clone().unwrap_or_default(),
        description: input.description.clone(),
        creator: "user".into(),
        plan,
        invalid,
        auto_rollback: input
            .auto_rollback_configuration
            .clone()
            .or_else(|| group.auto_rollback.clone()),
        blue_green: group.blue_green(),
        load_balancer_info: group.load_balancer_info(),
        target_id: format!("{}:{}", group.cluster, group.service),
        service_deployment_arn: None,
        stage: None,
        error: None,
        rollback_message: None,
        ending: None,
        ready_since: None,
        continues: Vec::new(),
        status_messages: Vec::new(),
        updated_at: now,
    };
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    let group_id = group.id.clone();
    svc.store
        .update(move |view| {
            let current: GroupRecord =
                read::<GroupRecord>(view, &group_key(&account, &region, &app, &name))?
                    .filter(|g| g.id == group_id)
                    .ok_or_else(|| no_group(&name))?;
            let routing =
                find_config(view, &account, &region, &config)?.ok_or_else(|| no_config(&config))?;
            let deployments: Vec<DeploymentRecord> =
                read_all(view, &deployments_prefix(&account, &region));
            if let Some(active) = deployments
                .iter()
                .find(|d| d.application == app && d.group == current.name && is_active(&d.status))
            {
                return Err(err(
                    "DeploymentLimitExceededException",
                    format!(
                        "The Deployment Group '{}' already has an active Deployment '{}'",
                        current.name, active.id
                    ),
                ));
            }
            let mut record = record.clone();
            if let Some(plan) = record.plan.as_mut() {
                plan.traffic = configs::traffic(&routing);
            }
            Ok((
                vec![put(deployment_key(&account, &region, &record.id), &record)?],
                (),
            ))
        })
        .await
        .map_err(store_error)??;
    Ok(sh::CreateDeploymentOutput {
        deployment_id: Some(id),
    })
}

fn deployment_info(d: &DeploymentRecord) -> sh::DeploymentInfo {
    let mut messages = d.status_messages.clone();
    if let Some(stage) = &d.stage {
        if !d.is_done() {
            messages.push(format!("Amazon ECS deployment stage: {stage}"));
        }
    }
    sh::DeploymentInfo {
        application_name: Some(d.application.clone()),
        deployment_group_name: Some(d.group.clone()),
        deployment_config_name: Some(d.config_name.clone()),
        deployment_id: Some(d.id.clone()),
        revision: Some(d.revision.clone()),
        status: Some(d.status.clone()),
        error_information: d.error.clone(),
        create_time: Some(d.create_time),
        start_time: d.start_time,
        complete_time: d.complete_time,
        description: d.description.clone(),
        creator: Some(d.creator.clone()),
        ignore_application_stop_failures: Some(false),
        auto_rollback_configuration: d.auto_rollback.clone(),
        update_outdated_instances_only: Some(false),
        rollback_info: d.rollback_message.as_ref().map(|m| sh::RollbackInfo {
            rollback_message: Some(m.clone()),
            ..Default::default()
        }),
        deployment_style: Some(ecs_style()),
        instance_termination_wait_time_started: Some(false),
        blue_green_deployment_configuration: Some(d.blue_green.clone()),
        load_balancer_info: Some(d.load_balancer_info.clone()),
        deployment_status_messages: Some(messages),
        compute_platform: Some("ECS".into()),
        ..Default::default()
    }
}

fn deployment_requirement(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    action: &str,
    d: Option<&DeploymentRecord>,
) -> Result<Requirement, AwsError> {
    Ok(match d {
        Some(d) => {
            let group = read_group(svc, ctx, &d.application, &d.group)?;
            group_requirement(ctx, action, &d.application, &d.group, group.as_ref())
        }
        // An unknown deployment: its group is unknown too.
        None => Requirement::new(action, ctx.arn("codedeploy", "deploymentgroup:*")),
    })
}

pub fn get_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::GetDeploymentInput,
) -> Result<sh::GetDeploymentOutput, AwsError> {
    let id = deployment_id(input.deployment_id.as_deref())?;
    let d = read_deployment(svc, ctx, &id)?;
    ctx.authorize(&[deployment_requirement(
        svc,
        ctx,
        "codedeploy:GetDeployment",
        d.as_ref(),
    )?])?;
    let d = d.ok_or_else(|| no_deployment(&id))?;
    Ok(sh::GetDeploymentOutput {
        deployment_info: Some(deployment_info(&d)),
    })
}

pub fn batch_get_deployments(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::BatchGetDeploymentsInput,
) -> Result<sh::BatchGetDeploymentsOutput, AwsError> {
    let ids = input.deployment_ids.clone().ok_or_else(|| {
        err(
            "DeploymentIdRequiredException",
            "Deployment Ids are required",
        )
    })?;
    if ids.len() > BATCH_MAX {
        return Err(err(
            "BatchLimitExceededException",
            "The maximum number of names or IDs allowed for this request (100) was exceeded.",
        ));
    }
    let ids = ids
        .iter()
        .map(|i| deployment_id(Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let found: Vec<DeploymentRecord> = ids
        .iter()
        .map(|i| read_deployment(svc, ctx, i))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let reqs = found
        .iter()
        .map(|d| deployment_requirement(svc, ctx, "codedeploy:BatchGetDeployments", Some(d)))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.authorize(&or_star(reqs, "codedeploy:BatchGetDeployments"))?;
    Ok(sh::BatchGetDeploymentsOutput {
        deployments_info: Some(found.iter().map(deployment_info).collect()),
    })
}

pub fn list_deployments(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ListDeploymentsInput,
) -> Result<sh::ListDeploymentsOutput, AwsError> {
    let scope = match (
        input.application_name.as_deref(),
        input.deployment_group_name.as_deref(),
    ) {
        (None, None) => None,
        (Some(a), Some(g)) => Some((application_name(Some(a))?, group_name(Some(g))?)),
        (Some(_), None) => {
            return Err(err(
                "DeploymentGroupNameRequiredException",
                "Deployment Group name is required when an application name is given",
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "ApplicationNameRequiredException",
                "Application name is required when a deployment group name is given",
            ))
        }
    };
    if input.external_id.is_some() {
        return Err(err(
            "InvalidExternalIdException",
            "External ids link deployments to AWS CloudFormation stacks, which Berth does not \
             have.",
        ));
    }
    let statuses = input.include_only_statuses.clone().unwrap_or_default();
    if let Some(bad) = statuses
        .iter()
        .find(|s| !sh::DEPLOYMENT_STATUS_VALUES.contains(&s.as_str()))
    {
        return Err(err(
            "InvalidDeploymentStatusException",
            format!("Invalid deployment status {bad}."),
        ));
    }
    let range = input.create_time_range.clone();
    if let Some(r) = &range {
        if let (Some(s), Some(e)) = (r.start, r.end) {
            if s > e {
                return Err(err(
                    "InvalidTimeRangeException",
                    "The createTimeRange's start must not be after its end.",
                ));
            }
        }
    }
    match &scope {
        Some((app, group)) => {
            let g = read_group(svc, ctx, app, group)?;
            ctx.authorize(&[group_requirement(
                ctx,
                "codedeploy:ListDeployments",
                app,
                group,
                g.as_ref(),
            )])?;
            if read_app(svc, ctx, app)?.is_none() {
                return Err(no_application(app));
            }
            g.ok_or_else(|| no_group(group))?;
        }
        None => ctx.authorize(&[Requirement::new(
            "codedeploy:ListDeployments",
            ctx.arn("codedeploy", "deploymentgroup:*"),
        )])?,
    }
    let mut deployments: Vec<DeploymentRecord> = read_all::<DeploymentRecord>(
        svc.store.as_ref(),
        &deployments_prefix(&ctx.account_id, &ctx.region),
    )
    .into_iter()
    .filter(|d| {
        scope
            .as_ref()
            .is_none_or(|(a, g)| d.application == *a && d.group == *g)
            && (statuses.is_empty() || statuses.contains(&d.status))
            && range.as_ref().is_none_or(|r| {
                r.start.is_none_or(|s| d.create_time >= s)
                    && r.end.is_none_or(|e| d.create_time <= e)
            })
    })
    .collect();
    // Newest first; the token is the sort key of the last one returned.
    deployments.sort_by(|a, b| {
        b.create_time
            .total_cmp(&a.create_time)
            .then(b.id.cmp(&a.id))
    });
    let keys: Vec<String> = deployments
        .iter()
        .map(|d| format!("{:020.6}|{}", f64::MAX - d.create_time, d.id))
        .collect();
    let after = decode_token(input.next_token.as_deref())?;
    let mut out = Vec::new();
    let mut next_token = None;
    for (key, d) in keys.iter().zip(&deployments) {
        if after.as_ref().is_some_and(|a| key <= a) {
            continue;
        }
        if out.len() == PAGE {
            next_token = keys
                .iter()
                .zip(&deployments)
                .find(|(_, x)| Some(&x.id) == out.last())
                .map(|(k, _)| encode_token(k));
            break;
        }
        out.push(d.id.clone());
    }
    Ok(sh::ListDeploymentsOutput {
        deployments: Some(out),
        next_token,
    })
}

/// Changes unfinished deployment `id` in one store mutation, after IAM
/// allows `action` on its group: `change` edits the record and answers
/// whether to write it (false: nothing to do) or refuses.
async fn change_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    id: &str,
    action: &str,
    change: impl Fn(&mut DeploymentRecord) -> Result<bool, AwsError> + Send + Sync + 'static,
) -> Result<(), AwsError> {
    let d = read_deployment(svc, ctx, id)?;
    ctx.authorize(&[deployment_requirement(svc, ctx, action, d.as_ref())?])?;
    d.ok_or_else(|| no_deployment(id))?;
    let key = deployment_key(&ctx.account_id, &ctx.region, id);
    let id = id.to_string();
    let now = now();
    svc.store
        .update(move |view| {
            let mut d: DeploymentRecord = read(view, &key)?.ok_or_else(|| no_deployment(&id))?;
            if d.is_done() {
                return Err(err(
                    "DeploymentAlreadyCompletedException",
                    format!("Deployment {id} has already completed."),
                ));
            }
            if !change(&mut d)? {
                return Ok((vec![], ()));
            }
            d.updated_at = now;
            Ok((vec![put(key.clone(), &d)?], ()))
        })
        .await
        .map_err(store_error)?
        .map(|_| ())
}

pub async fn stop_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::StopDeploymentInput,
) -> Result<sh::StopDeploymentOutput, AwsError> {
    let id = deployment_id(input.deployment_id.as_deref())?;
    let rollback = input.auto_rollback_enabled != Some(false);
    change_deployment(svc, ctx, &id, "codedeploy:StopDeployment", move |d| {
        if d.ending.as_ref().is_some_and(|e| e.status == STOPPED) {
            return Ok(false);
        }
        d.ending = Some(Ending {
            status: STOPPED.into(),
            code: "MANUAL_STOP".into(),
            message: "The deployment was stopped by a StopDeployment request.".into(),
            // ECS always moves production back to the original task
            // set when a blue/green deployment stops.
            rollback_message: (rollback || d.service_deployment_arn.is_some()).then(|| {
                "The deployment was stopped: production traffic is back on the original \
                 task set."
                    .to_string()
            }),
        });
        Ok(true)
    })
    .await?;
    Ok(sh::StopDeploymentOutput {
        status: Some("Pending".into()),
        status_message: Some("Stopping Active Deployment".into()),
    })
}

pub async fn continue_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ContinueDeploymentInput,
) -> Result<Value, AwsError> {
    let id = deployment_id(input.deployment_id.as_deref())?;
    let wait = WaitType::parse(input.deployment_wait_type.as_deref()).ok_or_else(|| {
        err(
            "InvalidDeploymentWaitTypeException",
            format!(
                "Invalid deploymentWaitType {}: use READY_WAIT or TERMINATION_WAIT.",
                input.deployment_wait_type.as_deref().unwrap_or_default()
            ),
        )
    })?;
    change_deployment(svc, ctx, &id, "codedeploy:ContinueDeployment", move |d| {
        if d.ending.is_some() {
            return Err(err(
                "InvalidDeploymentStatusException",
                format!("Deployment {} is stopping.", d.id),
            ));
        }
        if d.continues.contains(&wait) {
            return Ok(false);
        }
        let ready = match wait {
            WaitType::Ready => d.status == READY,
            // The original task set waits once production is on the new one.
            WaitType::Termination => {
                d.status == IN_PROGRESS
                    && matches!(d.stage.as_deref(), Some("BAKE_TIME" | "CLEAN_UP"))
            }
        };
        if !ready {
            return Err(err(
                "DeploymentIsNotInReadyStateException",
                match wait {
                    WaitType::Ready => format!(
                        "Deployment {} is not waiting to reroute traffic (its status is {}).",
                        d.id, d.status
                    ),
                    WaitType::Termination => format!(
                        "Deployment {} is not waiting to terminate the original task set.",
                        d.id
                    ),
                },
            ));
        }
        d.continues.push(wait);
        Ok(true)
    })
    .await?;
    Ok(json!({}))
}

// ---------- deployment targets ----------

const LIFECYCLE: [&str; 9] = [
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "AllowTestTraffic",
    "AfterAllowTestTraffic",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
    "Cleanup",
];

/// How far along ECS's stage puts the lifecycle (index of the event in
/// progress).
fn lifecycle_position(stage: Option<&str>) -> usize {
    match stage.unwrap_or_default() {
        "" | "PRE_SCALE_UP" => 0,
        "SCALE_UP" | "POST_SCALE_UP" => 1,
        "TEST_TRAFFIC_SHIFT" | "POST_TEST_TRAFFIC_SHIFT" => 3,
        "PRODUCTION_TRAFFIC_SHIFT" | "POST_PRODUCTION_TRAFFIC_SHIFT" => 6,
        "BAKE_TIME" | "CLEAN_UP" => 8,
        _ => 1,
    }
}

fn ecs_target(ctx: &RequestContext, d: &DeploymentRecord) -> sh::DeploymentTarget {
    let position = if d.status == "Succeeded" {
        LIFECYCLE.len()
    } else if d.status == READY {
        // Test traffic reaches the new revision; rerouting waits.
        5
    } else {
        lifecycle_position(d.stage.as_deref())
    };
    let events = LIFECYCLE
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let status = if i < position {
                "Succeeded"
            } else if i == position && d.status == "InProgress" {
                "InProgress"
            } else if i == position && d.status == "Failed" {
                "Failed"
            } else if d.is_done() {
                "Skipped"
            } else {
                "Pending"
            };
            sh::LifecycleEvent {
                lifecycle_event_name: Some(name.to_string()),
                status: Some(status.into()),
                ..Default::default()
            }
        })
        .collect();
    let (cluster, service) = d.target_id.split_once(':').unwrap_or((&d.target_id, ""));
    let status = match d.status.as_str() {
        "Created" => "Pending",
        "Stopped" => "Failed",
        other => other,
    };
    sh::DeploymentTarget {
        deployment_target_type: Some("ECSTarget".into()),
        ecs_target: Some(sh::ECSTarget {
            deployment_id: Some(d.id.clone()),
            target_id: Some(d.target_id.clone()),
            target_arn: Some(ctx.arn("ecs", &format!("service/{cluster}/{service}"))),
            last_updated_at: Some(d.updated_at),
            lifecycle_events: Some(events),
            status: Some(status.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn started_deployment(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    id: Option<&str>,
    action: &str,
) -> Result<DeploymentRecord, AwsError> {
    let id = deployment_id(id)?;
    let d = read_deployment(svc, ctx, &id)?;
    ctx.authorize(&[deployment_requirement(svc, ctx, action, d.as_ref())?])?;
    let d = d.ok_or_else(|| no_deployment(&id))?;
    if d.status == CREATED {
        return Err(err(
            "DeploymentNotStartedException",
            format!("The deployment {id} has not started."),
        ));
    }
    Ok(d)
}

pub fn get_deployment_target(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::GetDeploymentTargetInput,
) -> Result<sh::GetDeploymentTargetOutput, AwsError> {
    let target = input.target_id.clone();
    let d = started_deployment(
        svc,
        ctx,
        input.deployment_id.as_deref(),
        "codedeploy:GetDeploymentTarget",
    )?;
    let target = target.ok_or_else(|| {
        err(
            "DeploymentTargetIdRequiredException",
            "A deployment target ID is required.",
        )
    })?;
    if target != d.target_id {
        return Err(err(
            "DeploymentTargetDoesNotExistException",
            format!(
                "The target {target} does not belong to deployment {}.",
                d.id
            ),
        ));
    }
    Ok(sh::GetDeploymentTargetOutput {
        deployment_target: Some(ecs_target(ctx, &d)),
    })
}

pub fn batch_get_deployment_targets(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::BatchGetDeploymentTargetsInput,
) -> Result<sh::BatchGetDeploymentTargetsOutput, AwsError> {
    let targets = input.target_ids.clone();
    let d = started_deployment(
        svc,
        ctx,
        input.deployment_id.as_deref(),
        "codedeploy:BatchGetDeploymentTargets",
    )?;
    let targets = targets.filter(|t| !t.is_empty()).ok_or_else(|| {
        err(
            "DeploymentTargetIdRequiredException",
            "A deployment target ID is required.",
        )
    })?;
    if targets.len() > 1 {
        return Err(err(
            "DeploymentTargetListSizeExceededException",
            "An Amazon ECS deployment has exactly one target.",
        ));
    }
    if targets[0] != d.target_id {
        return Err(err(
            "DeploymentTargetDoesNotExistException",
            format!(
                "The target {} does not belong to deployment {}.",
                targets[0], d.id
            ),
        ));
    }
    Ok(sh::BatchGetDeploymentTargetsOutput {
        deployment_targets: Some(vec![ecs_target(ctx, &d)]),
    })
}

pub fn list_deployment_targets(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ListDeploymentTargetsInput,
) -> Result<sh::ListDeploymentTargetsOutput, AwsError> {
    let d = started_deployment(
        svc,
        ctx,
        input.deployment_id.as_deref(),
        "codedeploy:ListDeploymentTargets",
    )?;
    decode_token(input.next_token.as_deref())?;
    if input.next_token.is_some() {
        return Ok(sh::ListDeploymentTargetsOutput {
            target_ids: Some(vec![]),
            next_token: None,
        });
    }
    if let Some(filters) = &input.target_filters {
        if let Some(bad) = filters
            .keys()
            .find(|k| !sh::TARGET_FILTER_NAME_VALUES.contains(&k.as_str()))
        {
            return Err(err(
                "InvalidTargetFilterNameException",
                format!("Invalid target filter name {bad}."),
            ));
        }
    }
    Ok(sh::ListDeploymentTargetsOutput {
        target_ids: Some(vec![d.target_id]),
        next_token: None,
    })
}

// ---------- tags ----------

enum Tagged {
    App(String),
    Group(String, String),
}

fn tagged_resource(ctx: &RequestContext, arn: Option<&str>) -> Result<(String, Tagged), AwsError> {
    let arn = arn.filter(|a| !a.is_empty()).ok_or_else(|| {
        err(
            "ResourceArnRequiredException",
            "A resource ARN is required.",
        )
    })?;
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "codedeploy" {
        return Err(err(
            "InvalidArnException",
            format!("The ARN {arn} is not in a valid format."),
        ));
    }
    let resource = parts[5];
    let tagged = if let Some(name) = resource.strip_prefix("application:") {
        Tagged::App(application_name(Some(name))?)
    } else if let Some(rest) = resource.strip_prefix("deploymentgroup:") {
        let (app, group) = rest.split_once('/').ok_or_else(|| {
            err(
                "InvalidArnException",
                format!("The ARN {arn} is not in a valid format."),
            )
        })?;
        Tagged::Group(application_name(Some(app))?, group_name(Some(group))?)
    } else {
        return Err(err(
            "ArnNotSupportedException",
            format!("The ARN {arn} is not supported: only applications and deployment groups have tags."),
        ));
    };
    if parts[1] != "aws" || parts[3] != ctx.region || parts[4] != ctx.account_id {
        return Err(err(
            "ArnNotSupportedException",
            format!("The ARN {arn} is not of this account and Region."),
        ));
    }
    let canonical = match &tagged {
        Tagged::App(name) => app_arn(ctx, name),
        Tagged::Group(a, g) => group_arn(ctx, a, g),
    };
    Ok((canonical, tagged))
}

fn current_tags(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    tagged: &Tagged,
) -> Result<Option<Vec<(String, String)>>, AwsError> {
    Ok(match tagged {
        Tagged::App(name) => read_app(svc, ctx, name)?.map(|a| a.tags),
        Tagged::Group(a, g) => read_group(svc, ctx, a, g)?.map(|g| g.tags),
    })
}

fn missing(tagged: &Tagged) -> AwsError {
    match tagged {
        Tagged::App(name) => no_application(name),
        Tagged::Group(_, g) => no_group(g),
    }
}

async fn retag(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    tagged: Tagged,
    change: impl Fn(&mut Vec<(String, String)>) -> Result<(), AwsError> + Send + 'static,
) -> Result<(), AwsError> {
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    svc.store
        .update(move |view| {
            let op = match &tagged {
                Tagged::App(name) => {
                    let key = app_key(&account, &region, name);
                    let mut app: AppRecord = read(view, &key)?.ok_or_else(|| missing(&tagged))?;
                    change(&mut app.tags)?;
                    put(key, &app)?
                }
                Tagged::Group(a, g) => {
                    let key = group_key(&account, &region, a, g);
                    let mut group: GroupRecord =
                        read(view, &key)?.ok_or_else(|| missing(&tagged))?;
                    change(&mut group.tags)?;
                    put(key, &group)?
                }
            };
            Ok((vec![op], ()))
        })
        .await
        .map_err(store_error)?
        .map(|_| ())
}

pub async fn tag_resource(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::TagResourceInput,
) -> Result<Value, AwsError> {
    let (arn, tagged) = tagged_resource(ctx, input.resource_arn.as_deref())?;
    let tags = input
        .tags
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err("TagRequiredException", "A tag was not specified."))?;
    let tags = check_tags(&tags)?;
    let current = current_tags(svc, ctx, &tagged)?;
    ctx.authorize(&[Requirement::new("codedeploy:TagResource", arn)
        .resource_tags(tag_pairs(current.as_deref().unwrap_or_default()))
        .request_tags(tag_pairs(&tags))])?;
    retag(svc, ctx, tagged, move |existing| {
        merge_tags(existing, &tags)
    })
    .await?;
    Ok(json!({}))
}

pub async fn untag_resource(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::UntagResourceInput,
) -> Result<Value, AwsError> {
    let (arn, tagged) = tagged_resource(ctx, input.resource_arn.as_deref())?;
    let keys = input
        .tag_keys
        .clone()
        .ok_or_else(|| err("TagRequiredException", "Tag keys were not specified."))?;
    let current = current_tags(svc, ctx, &tagged)?;
    ctx.authorize(&[Requirement::new("codedeploy:UntagResource", arn)
        .resource_tags(tag_pairs(current.as_deref().unwrap_or_default()))
        .tag_keys(keys.clone())])?;
    retag(svc, ctx, tagged, move |existing| {
        existing.retain(|(k, _)| !keys.contains(k));
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

pub fn list_tags_for_resource(
    svc: &CodeDeployService,
    ctx: &RequestContext,
    input: sh::ListTagsForResourceInput,
) -> Result<sh::ListTagsForResourceOutput, AwsError> {
    let (arn, tagged) = tagged_resource(ctx, input.resource_arn.as_deref())?;
    let current = current_tags(svc, ctx, &tagged)?;
    ctx.authorize(&[Requirement::new("codedeploy:ListTagsForResource", arn)
        .resource_tags(tag_pairs(current.as_deref().unwrap_or_default()))])?;
    let tags = current.ok_or_else(|| missing(&tagged))?;
    Ok(sh::ListTagsForResourceOutput {
        tags: Some(
            tags.into_iter()
                .map(|(k, v)| sh::Tag {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
        ),
        next_token: None,
    })
}

/// `reqs`, or `action` on `*` when a batch named nothing.
fn or_star(mut reqs: Vec<Requirement>, action: &str) -> Vec<Requirement> {
    if reqs.is_empty() {
        reqs.push(Requirement::new(action, "*"));
    }
    reqs
}
