//! The STS API (`sts`, Query protocol, version 2011-06-15): who am I, and
//! role sessions.

use std::sync::Arc;

use berth_model::authz::Requirement;
use berth_model::{AwsError, PrincipalKind, QueryService, RequestContext};
use berth_policy::{evaluate_trust, Decision, PrincipalScope, Request};
use berth_util::time::{format_iso8601, now_secs};

use crate::util::{check_name, validation, Params, Xml};
use crate::{Iam, SessionCredentials, MAX_SESSION_SECS, MIN_SESSION_SECS, STS_NAMESPACE};

const DEFAULT_DURATION: i64 = 3600;
/// Sessions assumed with role-session credentials last at most an hour.
const ROLE_CHAINING_LIMIT: i64 = 3600;

/// The STS service. Register with `GatewayBuilder::query_service`.
pub struct StsService {
    iam: Arc<Iam>,
}

impl StsService {
    pub fn new(iam: Arc<Iam>) -> Self {
        StsService { iam }
    }
}

#[async_trait::async_trait]
impl QueryService for StsService {
    fn signing_name(&self) -> &'static str {
        "sts"
    }

    fn xml_namespace(&self) -> &'static str {
        STS_NAMESPACE
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let p = Params(params);
        match action {
            "GetCallerIdentity" => {
                // Needs no permission: AWS answers it even under an
                // explicit deny of sts:GetCallerIdentity.
                ctx.no_authorization_needed();
                Ok(get_caller_identity(ctx))
            }
            "AssumeRole" => self.assume_role(ctx, &p).await,
            _ => Err(AwsError::bad_request("InvalidAction", "")),
        }
    }
}

fn get_caller_identity(ctx: &RequestContext) -> String {
    let mut x = Xml::new();
    x.text("UserId", &ctx.principal.user_id)
        .text("Account", &ctx.principal.account_id)
        .text("Arn", &ctx.principal.arn);
    x.finish()
}

fn access_denied(caller: &str, role_arn: &str) -> AwsError {
    AwsError::new(
        403,
        "AccessDenied",
        format!(
            "User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        ),
    )
}

/// The account of a role ARN (`arn:aws:iam::<account>:role/…`).
fn role_account(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    (resource.starts_with("role/") && resource.len() > 5).then_some(account)
}

impl StsService {
    async fn assume_role(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let role_arn = p.required("RoleArn", "roleArn")?;
        if role_arn.len() < 20 || role_arn.len() > 2048 {
            return Err(validation(format!(
                "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
            )));
        }
        let session_name = p.required("RoleSessionName", "roleSessionName")?;
        check_name(session_name, "roleSessionName", 2, 64)?;
        let duration = p
            .int(
                "DurationSeconds",
                "durationSeconds",
                i64::from(MIN_SESSION_SECS),
                i64::from(MAX_SESSION_SECS),
            )?
            .unwrap_or(DEFAULT_DURATION);
        if p.0
            .iter()
            .any(|(k, _)| k == "Policy" || k.starts_with("PolicyArns."))
        {
            return Err(validation(
                "Berth does not support session policies (Policy, PolicyArns) yet.",
            ));
        }
        let Some(account) = role_account(role_arn) else {
            return Err(validation(format!("{role_arn} is invalid")));
        };
        let caller_arn = ctx.principal.arn.as_str();
        if ctx.principal.kind == PrincipalKind::Agent {
            ctx.no_authorization_needed();
            return Err(access_denied(caller_arn, role_arn));
        }
        let Some(role) = self.iam.role_by_arn(account, role_arn)? else {
            ctx.no_authorization_needed();
            return Err(access_denied(caller_arn, role_arn));
        };
        // STS decides: the role's trust policy must allow the caller, and —
        // unless the trust names the caller itself in its own account — the
        // caller's identity policies must allow sts:AssumeRole on the role's
        // canonical ARN, with the role's tags as aws:ResourceTag/*. The
        // identity check goes through the request's authorizer, so it sees
        // the same request keys (source IP, time, principal tags) as any call.
        let canonical = role.arn(account);
        let identity_decision =
            ctx.decide(&[Requirement::new("sts:AssumeRole", canonical.clone())
                .resource_tags(role.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))]);
        let identity = self.iam.identity(&ctx.principal)?;
        let trust = self.iam.trust_policy(&role)?;
        let context = crate::authorizer::request_context(ctx, &identity.tags, now_secs());
        let request = Request::new(&identity.principal, "sts:AssumeRole", &canonical, &context);
        let is_root = ctx.principal.kind == PrincipalKind::Root;
        let same_account = account == ctx.principal.account_id;
        let allowed = match evaluate_trust(&trust, &request) {
            Decision::Allow(m) => {
                let direct = m.principal_scope == PrincipalScope::Direct;
                match &identity_decision {
                    _ if is_root => same_account || direct,
                    Err(denial) if denial.explicit => false,
                    Err(_) => direct && same_account,
                    Ok(()) => true,
                }
            }
            _ => false,
        };
        if !allowed {
            return Err(access_denied(caller_arn, role_arn));
        }
        if duration > i64::from(role.max_session) {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        if ctx.principal.kind == PrincipalKind::AssumedRole && duration > ROLE_CHAINING_LIMIT {
            return Err(validation(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
            ));
        }
        let session = self
            .iam
            .write_session(account, role, session_name, duration as u32)
            .await?;
        Ok(assume_role_xml(&session))
    }
}

fn assume_role_xml(session: &SessionCredentials) -> String {
    let mut x = Xml::new();
    x.open("Credentials")
        .text("AccessKeyId", &session.access_key_id)
        .text("SecretAccessKey", &session.secret_access_key)
        .text("SessionToken", &session.session_token)
        .text("Expiration", &format_iso8601(session.expiration))
        .close("Credentials")
        .open("AssumedRoleUser")
        .text("AssumedRoleId", &session.assumed_role_id)
        .text("Arn", &session.arn)
        .close("AssumedRoleUser");
    x.finish()
}
