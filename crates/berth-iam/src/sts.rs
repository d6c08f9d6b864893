//! The STS API (`sts`, Query protocol, version 2011-06-15): who am I, role
//! sessions (AssumeRole, AssumeRoleWithWebIdentity), a user's own sessions
//! (GetSessionToken, GetFederationToken), GetAccessKeyInfo and
//! DecodeAuthorizationMessage.

use std::sync::Arc;

use base64::Engine as _;
use berth_model::authz::Requirement;
use berth_model::{AwsError, PrincipalKind, QueryService, RequestContext};
use berth_policy::{evaluate_trust, Decision, Policy, PrincipalScope, Request};
use berth_util::time::{format_iso8601, now_secs};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::records::{
    access_key_key, session_key, user_key, SessionKind, SessionRecord, UserRecord,
};
use crate::util::{check_name, get_json, validation, Params, Xml};
use crate::{
    last_segment, Guard, Iam, SessionCredentials, MAX_SESSION_SECS, MIN_SESSION_SECS, STS_NAMESPACE,
};

const DEFAULT_DURATION: i64 = 3600;
/// Sessions assumed with role-session credentials last at most an hour.
const ROLE_CHAINING_LIMIT: i64 = 3600;
/// GetSessionToken and GetFederationToken: at most 36 hours, 12 by
/// default; the root user's at most one hour.
const USER_SESSION_MAX: i64 = 129_600;
const USER_SESSION_DEFAULT: i64 = 43_200;
const ROOT_SESSION_MAX: i64 = 3600;
/// The packed size budget of session policies (AWS reports their size as a
/// percentage of it).
const PACKED_POLICY_BUDGET: usize = 2048;
const MAX_POLICY_ARNS: usize = 10;

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

    /// AWS accepts these without a signature: the token in the request
    /// proves who calls.
    fn unsigned_actions(&self) -> &'static [&'static str] {
        &["AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"]
    }

    async fn handle_unsigned(
        &self,
        _request_id: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let p = Params(params);
        match action {
            "AssumeRoleWithWebIdentity" => self.assume_role_with_web_identity(&p).await,
            other => Err(crate::not_implemented::reason("sts", other)
                .unwrap_or_else(|| AwsError::bad_request("InvalidAction", ""))),
        }
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let p = Params(params);
        // A call that needs no permission (GetCallerIdentity,
        // GetSessionToken) still uses the key: note it for
        // GetAccessKeyLastUsed as the authorizer notes the others.
        if !ctx.principal.access_key_id.starts_with("ASIA") {
            self.iam
                .usage
                .touch(&ctx.principal.access_key_id, Some(("sts", &ctx.region)));
        }
        match action {
            "GetCallerIdentity" => {
                // Needs no permission: AWS answers it even under an
                // explicit deny of sts:GetCallerIdentity.
                ctx.no_authorization_needed();
                Ok(get_caller_identity(ctx))
            }
            "AssumeRole" => self.assume_role(ctx, &p).await,
            "GetSessionToken" => self.get_session_token(ctx, &p).await,
            "GetFederationToken" => self.get_federation_token(ctx, &p).await,
            "GetAccessKeyInfo" => self.get_access_key_info(ctx, &p),
            "DecodeAuthorizationMessage" => self.decode_authorization_message(ctx, &p),
            // Signed calls of the unsigned actions are served the same way.
            "AssumeRoleWithWebIdentity" => {
                ctx.no_authorization_needed();
                self.assume_role_with_web_identity(&p).await
            }
            other => Err(crate::not_implemented::reason("sts", other)
                .unwrap_or_else(|| AwsError::bad_request("InvalidAction", ""))),
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

fn check_role_arn(role_arn: &str) -> Result<(), AwsError> {
    if role_arn.len() < 20 || role_arn.len() > 2048 {
        return Err(validation(format!(
            "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
        )));
    }
    Ok(())
}

fn malformed(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("MalformedPolicyDocument", message)
}

/// A session's policies as the request gives them (`Policy` and
/// `PolicyArns.member.N.arn`), as document texts, and their packed size in
/// percent; `None` when the request gives none.
fn session_policies(
    iam: &Iam,
    account: &str,
    p: &Params<'_>,
) -> Result<(Option<Vec<String>>, usize), AwsError> {
    let mut texts = Vec::new();
    let mut size = 0;
    if let Some(policy) = p.get("Policy") {
        if policy.is_empty() || policy.len() > PACKED_POLICY_BUDGET {
            return Err(validation(format!(
                "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to {PACKED_POLICY_BUDGET}"
            )));
        }
        Policy::parse_identity(policy).map_err(|e| malformed(e.to_string()))?;
        size += policy.split_whitespace().map(str::len).sum::<usize>();
        texts.push(policy.to_string());
    }
    let arns: Vec<&str> =
        p.0.iter()
            .filter(|(k, _)| k.starts_with("PolicyArns.member.") && k.ends_with(".arn"))
            .map(|(_, v)| v.as_str())
            .collect();
    if arns.len() > MAX_POLICY_ARNS {
        return Err(validation(format!(
            "1 validation error detected: Value at 'policyArns' failed to satisfy constraint: Member must have length less than or equal to {MAX_POLICY_ARNS}"
        )));
    }
    for arn in arns {
        let text = crate::iam::managed_policy_document(iam, account, arn)?.ok_or_else(|| {
            AwsError::bad_request(
                "InvalidParameterValue",
                format!("Policy {arn} does not exist or is not attachable."),
            )
        })?;
        size += arn.len();
        texts.push(text);
    }
    if texts.is_empty() {
        return Ok((None, 0));
    }
    let packed = size * 100 / PACKED_POLICY_BUDGET;
    if packed > 100 {
        return Err(AwsError::bad_request(
            "PackedPolicyTooLarge",
            format!("Packed size of consumed session policies and tags exceeds the limit ({packed}% of the allowed size)."),
        ));
    }
    Ok((Some(texts), packed))
}

fn credentials_xml(x: &mut Xml, session: &SessionCredentials) {
    x.open("Credentials")
        .text("AccessKeyId", &session.access_key_id)
        .text("SecretAccessKey", &session.secret_access_key)
        .text("SessionToken", &session.session_token)
        .text("Expiration", &format_iso8601(session.expiration))
        .close("Credentials");
}

fn assume_role_xml(session: &SessionCredentials, packed: Option<usize>) -> Xml {
    let mut x = Xml::new();
    credentials_xml(&mut x, session);
    x.open("AssumedRoleUser")
        .text("AssumedRoleId", &session.assumed_role_id)
        .text("Arn", &session.arn)
        .close("AssumedRoleUser");
    if let Some(packed) = packed {
        x.text("PackedPolicySize", &packed.to_string());
    }
    x
}

/// An empty session record of `kind` in `account`, lasting `duration`.
fn session_of(kind: SessionKind, account: &str, duration: i64) -> SessionRecord {
    SessionRecord {
        account: account.to_string(),
        kind,
        role_name: String::new(),
        role_path: String::new(),
        role_id: String::new(),
        user_name: String::new(),
        user_path: String::new(),
        user_id: String::new(),
        session_name: String::new(),
        session_policies: None,
        tags: Vec::new(),
        secret: String::new(),
        token: String::new(),
        created: 0,
        expires: duration,
    }
}

impl StsService {
    async fn assume_role(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let role_arn = p.required("RoleArn", "roleArn")?;
        check_role_arn(role_arn)?;
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
        let Some(account) = role_account(role_arn) else {
            return Err(validation(format!("{role_arn} is invalid")));
        };
        let (policies, packed) = session_policies(&self.iam, account, p)?;
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
        let has_policies = policies.is_some();
        let session = self
            .iam
            .write_role_session(account, role, session_name, duration as u32, policies)
            .await?;
        Ok(assume_role_xml(&session, has_policies.then_some(packed)).finish())
    }

    async fn assume_role_with_web_identity(&self, p: &Params<'_>) -> Result<String, AwsError> {
        let role_arn = p.required("RoleArn", "roleArn")?;
        check_role_arn(role_arn)?;
        let session_name = p.required("RoleSessionName", "roleSessionName")?;
        check_name(session_name, "roleSessionName", 2, 64)?;
        let token = p.required("WebIdentityToken", "webIdentityToken")?;
        if token.len() < 4 || token.len() > 20_000 {
            return Err(validation(
                "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length less than or equal to 20000",
            ));
        }
        if p.get("ProviderId").is_some() {
            return Err(crate::federation::invalid_token(
                "Berth accepts OpenID Connect ID tokens only; OAuth 2.0 access tokens (ProviderId www.amazon.com or graph.facebook.com) are not supported.",
            ));
        }
        let duration = p
            .int(
                "DurationSeconds",
                "durationSeconds",
                i64::from(MIN_SESSION_SECS),
                i64::from(MAX_SESSION_SECS),
            )?
            .unwrap_or(DEFAULT_DURATION);
        let Some(account) = role_account(role_arn) else {
            return Err(validation(format!("{role_arn} is invalid")));
        };
        let (policies, packed) = session_policies(&self.iam, account, p)?;
        let denied = || {
            AwsError::new(
                403,
                "AccessDenied",
                "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            )
        };
        let verified = self.iam.verify_web_identity(account, token).await?;
        let role = self
            .iam
            .role_by_arn(account, role_arn)?
            .ok_or_else(denied)?;
        let trust = self.iam.trust_policy(&role)?;
        if !crate::federation::trust_allows(&trust, account, &role.arn(account), &verified) {
            return Err(denied());
        }
        if duration > i64::from(role.max_session) {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        let has_policies = policies.is_some();
        let session = self
            .iam
            .write_role_session(account, role, session_name, duration as u32, policies)
            .await?;
        let mut x = assume_role_xml(&session, has_policies.then_some(packed));
        x.text("SubjectFromWebIdentityToken", &verified.subject)
            .text("Provider", &verified.issuer)
            .text("Audience", &verified.audience);
        Ok(x.finish())
    }

    /// The duration a user's (or root's) own session asks for.
    fn user_session_duration(ctx: &RequestContext, p: &Params<'_>) -> Result<i64, AwsError> {
        let is_root = ctx.principal.kind == PrincipalKind::Root;
        let duration = p
            .int(
                "DurationSeconds",
                "durationSeconds",
                i64::from(MIN_SESSION_SECS),
                USER_SESSION_MAX,
            )?
            .unwrap_or(if is_root {
                ROOT_SESSION_MAX
            } else {
                USER_SESSION_DEFAULT
            });
        Ok(if is_root {
            duration.min(ROOT_SESSION_MAX)
        } else {
            duration
        })
    }

    /// The calling user's record and a guard on it; `None` for root.
    fn calling_user(
        &self,
        ctx: &RequestContext,
        action: &str,
    ) -> Result<Option<(UserRecord, Guard)>, AwsError> {
        let from_session = ctx.principal.access_key_id.starts_with("ASIA");
        match ctx.principal.kind {
            PrincipalKind::Root if !from_session => Ok(None),
            PrincipalKind::User if !from_session => {
                let name = last_segment(&ctx.principal.arn);
                let key = user_key(&ctx.account_id, name);
                let user: UserRecord = get_json(self.iam.store(), &key)?
                    .filter(|u: &UserRecord| u.id == ctx.principal.user_id)
                    .ok_or_else(|| crate::user_not_found(name))?;
                let guard = Guard {
                    key,
                    id: user.id.clone(),
                    gone: crate::user_not_found(name),
                };
                Ok(Some((user, guard)))
            }
            _ => Err(AwsError::new(
                403,
                "AccessDenied",
                format!("Cannot call {action} with session credentials"),
            )),
        }
    }

    async fn get_session_token(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let duration = Self::user_session_duration(ctx, p)?;
        let serial = p.get("SerialNumber");
        let code = p.get("TokenCode");
        if let Some(code) = code {
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{code}' at 'tokenCode' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\d]*"
                )));
            }
        }
        // Any user may have its own session: no permission is needed.
        ctx.no_authorization_needed();
        let caller = self.calling_user(ctx, "GetSessionToken")?;
        if serial.is_some() || code.is_some() {
            return Err(AwsError::new(
                403,
                "AccessDenied",
                "MultiFactorAuthentication failed, unable to validate MFA code: Berth has no MFA devices.",
            ));
        }
        let (session, guard) = match caller {
            None => (
                session_of(SessionKind::Root, &ctx.account_id, duration),
                None,
            ),
            Some((user, guard)) => {
                let mut s = session_of(SessionKind::User, &ctx.account_id, duration);
                s.user_name = user.name;
                s.user_path = user.path;
                s.user_id = user.id;
                (s, Some(guard))
            }
        };
        let credentials = self.iam.insert_session(session, guard).await?;
        let mut x = Xml::new();
        credentials_xml(&mut x, &credentials);
        Ok(x.finish())
    }

    async fn get_federation_token(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = p.required("Name", "name")?;
        check_name(name, "name", 2, 32)?;
        let duration = Self::user_session_duration(ctx, p)?;
        let tags = crate::iam::parse_session_tags(p)?;
        let (policies, packed) = session_policies(&self.iam, &ctx.account_id, p)?;
        let arn = format!("arn:aws:sts::{}:federated-user/{name}", ctx.account_id);
        ctx.authorize(&[Requirement::new("sts:GetFederationToken", arn.clone())
            .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        let caller = self.calling_user(ctx, "GetFederationToken")?;
        let mut session = session_of(SessionKind::Federated, &ctx.account_id, duration);
        session.session_name = name.to_string();
        // Without session policies the federated user may do nothing.
        session.session_policies = Some(policies.unwrap_or_default());
        session.tags = tags;
        let guard = match caller {
            Some((user, guard)) => {
                session.user_name = user.name;
                session.user_path = user.path;
                session.user_id = user.id;
                Some(guard)
            }
            None => None,
        };
        let credentials = self.iam.insert_session(session, guard).await?;
        let mut x = Xml::new();
        credentials_xml(&mut x, &credentials);
        x.open("FederatedUser")
            .text("FederatedUserId", &format!("{}:{name}", ctx.account_id))
            .text("Arn", &arn)
            .close("FederatedUser")
            .text("PackedPolicySize", &packed.to_string());
        Ok(x.finish())
    }

    fn get_access_key_info(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let id = p.required("AccessKeyId", "accessKeyId")?;
        if id.len() < 16
            || id.len() > 128
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(validation(format!(
                "1 validation error detected: Value '{id}' at 'accessKeyId' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w]*"
            )));
        }
        ctx.authorize(&[Requirement::new("sts:GetAccessKeyInfo", "*")])?;
        let view = self.iam.store();
        #[derive(serde::Deserialize)]
        struct Account {
            account: String,
        }
        let account = if id == ctx.principal.access_key_id {
            Some(ctx.principal.account_id.clone())
        } else {
            get_json::<Account>(view, &access_key_key(id))?
                .or(get_json::<Account>(view, &session_key(id))?)
                .map(|a| a.account)
        };
        let account = account.ok_or_else(|| {
            AwsError::bad_request(
                "InvalidParameterValue",
                format!("The access key ID {id} was not issued by Berth."),
            )
        })?;
        let mut x = Xml::new();
        x.text("Account", &account);
        Ok(x.finish())
    }

    fn decode_authorization_message(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let encoded = p.required("EncodedMessage", "encodedMessage")?;
        if encoded.is_empty() || encoded.len() > 10_240 {
            return Err(validation(
                "1 validation error detected: Value at 'encodedMessage' failed to satisfy constraint: Member must have length less than or equal to 10240",
            ));
        }
        ctx.authorize(&[Requirement::new("sts:DecodeAuthorizationMessage", "*")])?;
        let decoded = self
            .iam
            .decode_authorization_message(encoded)
            .ok_or_else(|| {
                AwsError::bad_request(
                    "InvalidAuthorizationMessageException",
                    "The message is not an authorization message Berth issued.",
                )
            })?;
        let mut x = Xml::new();
        x.text("DecodedMessage", &decoded.to_string());
        Ok(x.finish())
    }
}

type HmacSha256 = Hmac<sha2::Sha256>;

/// The decoded form of a refusal, as DecodeAuthorizationMessage answers.
fn decoded(caller: &str, action: &str, resource: &str, explicit: bool) -> Value {
    json!({
        "allowed": false,
        "explicitDeny": explicit,
        "matchedStatements": {"items": []},
        "failures": {"items": []},
        "context": {
            "principal": {"arn": caller},
            "action": action,
            "resource": resource,
            "conditions": {"items": []}
        }
    })
}

/// Reads a refusal message as Berth words it (`User: <arn> is not
/// authorized to perform: <action> on resource: <arn> because …`).
fn parse_refusal(text: &str) -> Option<Value> {
    let rest = text.trim().strip_prefix("User: ")?;
    let (caller, rest) = rest.split_once(" is not authorized to perform: ")?;
    let (action, rest) = rest.split_once(" on resource: ")?;
    let (resource, why) = rest.split_once(' ').unwrap_or((rest, ""));
    let explicit = why.starts_with("with an explicit deny");
    if !explicit && !why.starts_with("because") && !why.is_empty() {
        return None;
    }
    Some(decoded(caller, action, resource, explicit))
}

impl Iam {
    /// An encoded authorization message for a refusal of `caller` (what a
    /// service may attach to its error so the caller can ask STS
    /// DecodeAuthorizationMessage): `berth1.<payload>.<mac>`, the payload
    /// the decoded message, authenticated with a key of this server.
    pub fn encode_authorization_message(
        &self,
        caller: &str,
        action: &str,
        resource: &str,
        explicit: bool,
    ) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = engine.encode(decoded(caller, action, resource, explicit).to_string());
        let mac = self.message_mac(&payload);
        format!("berth1.{payload}.{}", engine.encode(mac))
    }

    fn message_mac(&self, payload: &str) -> Vec<u8> {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.message_key) else {
            return Vec::new();
        };
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The decoded form of a message Berth issued: an encoded message of
    /// [`encode_authorization_message`](Self::encode_authorization_message),
    /// or the text of one of its refusals (plain or base64).
    pub(crate) fn decode_authorization_message(&self, encoded: &str) -> Option<Value> {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if let Some(rest) = encoded.strip_prefix("berth1.") {
            let (payload, mac) = rest.split_once('.')?;
            let mac = engine.decode(mac).ok()?;
            let Ok(mut check) = HmacSha256::new_from_slice(&self.message_key) else {
                return None;
            };
            check.update(payload.as_bytes());
            check.verify_slice(&mac).ok()?;
            return serde_json::from_slice(&engine.decode(payload).ok()?).ok();
        }
        if let Some(v) = parse_refusal(encoded) {
            return Some(v);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        parse_refusal(std::str::from_utf8(&bytes).ok()?)
    }
}
