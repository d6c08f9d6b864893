//! The request side of an authorization check: who is asking, for what, and
//! the condition keys that describe the request.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::time::Timestamp;

/// What kind of identity made the request. Drives `aws:PrincipalType` and
/// which principal forms in a resource or trust policy can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// The account's root user (`arn:aws:iam::<acct>:root`).
    Root,
    /// An IAM user.
    User,
    /// A role session (`arn:aws:sts::<acct>:assumed-role/<role>/<session>`).
    AssumedRole,
    /// An AWS service principal such as `ecs-tasks.amazonaws.com`.
    Service,
    /// A web-identity or SAML federated caller; `arn` is the provider.
    Federated,
    /// A federated user session from STS GetFederationToken
    /// (`arn:aws:sts::<acct>:federated-user/<name>`).
    FederatedUser,
}

impl PrincipalKind {
    /// The value AWS puts in `aws:PrincipalType`.
    pub fn principal_type(self) -> &'static str {
        match self {
            PrincipalKind::Root => "Account",
            PrincipalKind::User => "User",
            PrincipalKind::AssumedRole => "AssumedRole",
            PrincipalKind::Service => "Service",
            PrincipalKind::Federated => "WebIdentityUser",
            PrincipalKind::FederatedUser => "FederatedUser",
        }
    }
}

/// The authenticated caller.
///
/// Build it with the constructors, which fill in the ARNs the way IAM and STS
/// format them; the fields stay public so the IAM service can carry whatever
/// it resolved from its own store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRef {
    /// The caller's ARN: user ARN, `...:root`, the assumed-role *session*
    /// ARN, or for services the service principal name.
    pub arn: String,
    /// The 12-digit account; empty for service principals.
    pub account_id: String,
    /// What kind of caller this is.
    pub kind: PrincipalKind,
    /// IAM user name (users only); feeds `aws:username`.
    pub username: Option<String>,
    /// Unique id feeding `aws:userid`: `AIDA...` for users, `AROA...:session`
    /// for role sessions, the account id for root.
    pub user_id: Option<String>,
    /// The role's ARN (`arn:aws:iam::<acct>:role/<path><name>`) for role sessions.
    pub role_arn: Option<String>,
    /// The role's name for role sessions.
    pub role_name: Option<String>,
    /// The session name for role sessions.
    pub session_name: Option<String>,
}

fn normalise_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

impl PrincipalRef {
    /// The root user of `account_id`.
    pub fn root(account_id: &str) -> Self {
        Self {
            arn: format!("arn:aws:iam::{account_id}:root"),
            account_id: account_id.to_string(),
            kind: PrincipalKind::Root,
            username: None,
            user_id: Some(account_id.to_string()),
            role_arn: None,
            role_name: None,
            session_name: None,
        }
    }

    /// An IAM user; `path` is the IAM path (`/` or `/division/`).
    pub fn user(account_id: &str, path: &str, name: &str, user_id: &str) -> Self {
        Self {
            arn: format!(
                "arn:aws:iam::{account_id}:user/{}{name}",
                normalise_path(path)
            ),
            account_id: account_id.to_string(),
            kind: PrincipalKind::User,
            username: Some(name.to_string()),
            user_id: Some(user_id.to_string()),
            role_arn: None,
            role_name: None,
            session_name: None,
        }
    }

    /// A session of a role; `role_id` is the role's `AROA...` id.
    pub fn assumed_role(
        account_id: &str,
        role_path: &str,
        role_name: &str,
        session_name: &str,
        role_id: &str,
    ) -> Self {
        Self {
            arn: format!("arn:aws:sts::{account_id}:assumed-role/{role_name}/{session_name}"),
            account_id: account_id.to_string(),
            kind: PrincipalKind::AssumedRole,
            username: None,
            user_id: Some(format!("{role_id}:{session_name}")),
            role_arn: Some(format!(
                "arn:aws:iam::{account_id}:role/{}{role_name}",
                normalise_path(role_path)
            )),
            role_name: Some(role_name.to_string()),
            session_name: Some(session_name.to_string()),
        }
    }

    /// A service principal such as `ecs-tasks.amazonaws.com`.
    pub fn service(name: &str) -> Self {
        Self {
            arn: name.to_string(),
            account_id: String::new(),
            kind: PrincipalKind::Service,
            username: None,
            user_id: None,
            role_arn: None,
            role_name: None,
            session_name: None,
        }
    }

    /// A web-identity or SAML federated caller; `provider` is the identity
    /// provider as a trust policy's `Federated` principal names it (e.g.
    /// `arn:aws:iam::123456789012:oidc-provider/example.com` or
    /// `cognito-identity.amazonaws.com`).
    pub fn federated(account_id: &str, provider: &str) -> Self {
        Self {
            arn: provider.to_string(),
            account_id: account_id.to_string(),
            kind: PrincipalKind::Federated,
            username: None,
            user_id: None,
            role_arn: None,
            role_name: None,
            session_name: None,
        }
    }

    /// A federated user of `account_id` named `name` (STS
    /// GetFederationToken); `aws:userid` is `<account>:<name>`.
    pub fn federated_user(account_id: &str, name: &str) -> Self {
        Self {
            arn: format!("arn:aws:sts::{account_id}:federated-user/{name}"),
            account_id: account_id.to_string(),
            kind: PrincipalKind::FederatedUser,
            username: None,
            user_id: Some(format!("{account_id}:{name}")),
            role_arn: None,
            role_name: None,
            session_name: None,
        }
    }

    /// `aws:PrincipalArn` as AWS defines it: for a role session this is the
    /// role's ARN, not the session's.
    pub fn principal_arn(&self) -> &str {
        match (&self.kind, &self.role_arn) {
            (PrincipalKind::AssumedRole, Some(role)) => role,
            _ => &self.arn,
        }
    }

    /// The identities a principal-bearing policy can name for this caller,
    /// narrowest first: session ARN, role ARN, then the account root.
    pub(crate) fn identity_chain(&self) -> Vec<String> {
        let mut chain = vec![self.arn.clone()];
        if let Some(role) = &self.role_arn {
            chain.push(role.clone());
        }
        if !self.account_id.is_empty()
            && matches!(
                self.kind,
                PrincipalKind::User | PrincipalKind::AssumedRole | PrincipalKind::FederatedUser
            )
        {
            chain.push(format!("arn:aws:iam::{}:root", self.account_id));
        }
        chain
    }
}

/// A value of a condition key in the request context.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextValue {
    /// A single string.
    String(String),
    /// A multivalued key such as `aws:TagKeys`.
    Strings(Vec<String>),
    /// A boolean such as `aws:SecureTransport`.
    Bool(bool),
    /// A number such as `s3:max-keys`.
    Number(f64),
    /// A date such as `aws:CurrentTime`.
    Date(Timestamp),
    /// An IP address such as `aws:SourceIp`.
    Ip(IpAddr),
    /// Raw bytes, for `BinaryEquals`.
    Binary(Vec<u8>),
}

impl ContextValue {
    /// The value(s) as strings, the form string and ARN operators compare.
    pub fn as_strings(&self) -> Vec<String> {
        match self {
            ContextValue::String(s) => vec![s.clone()],
            ContextValue::Strings(v) => v.clone(),
            ContextValue::Bool(b) => vec![b.to_string()],
            ContextValue::Number(n) => vec![format_number(*n)],
            ContextValue::Date(t) => vec![t.to_iso8601()],
            ContextValue::Ip(ip) => vec![ip.to_string()],
            ContextValue::Binary(bytes) => {
                use base64::Engine as _;
                vec![base64::engine::general_purpose::STANDARD.encode(bytes)]
            }
        }
    }

    /// The single value usable as a policy variable; multivalued keys cannot
    /// be policy variables (AWS), so they yield `None`.
    pub fn as_variable(&self) -> Option<String> {
        match self {
            ContextValue::Strings(_) => None,
            other => other.as_strings().into_iter().next(),
        }
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

impl From<&str> for ContextValue {
    fn from(v: &str) -> Self {
        ContextValue::String(v.to_string())
    }
}
impl From<String> for ContextValue {
    fn from(v: String) -> Self {
        ContextValue::String(v)
    }
}
impl From<Vec<String>> for ContextValue {
    fn from(v: Vec<String>) -> Self {
        ContextValue::Strings(v)
    }
}
impl From<&[&str]> for ContextValue {
    fn from(v: &[&str]) -> Self {
        ContextValue::Strings(v.iter().map(|s| s.to_string()).collect())
    }
}
impl From<bool> for ContextValue {
    fn from(v: bool) -> Self {
        ContextValue::Bool(v)
    }
}
impl From<f64> for ContextValue {
    fn from(v: f64) -> Self {
        ContextValue::Number(v)
    }
}
impl From<i64> for ContextValue {
    fn from(v: i64) -> Self {
        ContextValue::Number(v as f64)
    }
}
impl From<Timestamp> for ContextValue {
    fn from(v: Timestamp) -> Self {
        ContextValue::Date(v)
    }
}
impl From<IpAddr> for ContextValue {
    fn from(v: IpAddr) -> Self {
        ContextValue::Ip(v)
    }
}

/// Condition keys describing one request.
///
/// Key names are case-insensitive, as in IAM, so they are stored lowercased;
/// values keep their case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    values: BTreeMap<String, ContextValue>,
}

/// Global condition key names, spelt as AWS documents them.
pub mod keys {
    /// `aws:username`
    pub const USERNAME: &str = "aws:username";
    /// `aws:userid`
    pub const USERID: &str = "aws:userid";
    /// `aws:PrincipalArn`
    pub const PRINCIPAL_ARN: &str = "aws:PrincipalArn";
    /// `aws:PrincipalAccount`
    pub const PRINCIPAL_ACCOUNT: &str = "aws:PrincipalAccount";
    /// `aws:PrincipalType`
    pub const PRINCIPAL_TYPE: &str = "aws:PrincipalType";
    /// `aws:PrincipalServiceName`
    pub const PRINCIPAL_SERVICE_NAME: &str = "aws:PrincipalServiceName";
    /// `aws:SourceIp`
    pub const SOURCE_IP: &str = "aws:SourceIp";
    /// `aws:CurrentTime`
    pub const CURRENT_TIME: &str = "aws:CurrentTime";
    /// `aws:EpochTime`
    pub const EPOCH_TIME: &str = "aws:EpochTime";
    /// `aws:SecureTransport`
    pub const SECURE_TRANSPORT: &str = "aws:SecureTransport";
    /// `aws:TagKeys`
    pub const TAG_KEYS: &str = "aws:TagKeys";
    /// Prefix of `aws:RequestTag/<key>`.
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    /// Prefix of `aws:ResourceTag/<key>`.
    pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";
    /// Prefix of `aws:PrincipalTag/<key>`.
    pub const PRINCIPAL_TAG_PREFIX: &str = "aws:PrincipalTag/";
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (any case) to `value`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<ContextValue>) -> &mut Self {
        self.values.insert(key.to_lowercase(), value.into());
        self
    }

    /// Builder form of [`Context::set`].
    pub fn with(mut self, key: &str, value: impl Into<ContextValue>) -> Self {
        self.set(key, value);
        self
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<ContextValue> {
        self.values.remove(&key.to_lowercase())
    }

    /// Looks `key` up case-insensitively.
    pub fn get(&self, key: &str) -> Option<&ContextValue> {
        self.values.get(&key.to_lowercase())
    }

    /// Sets the principal keys AWS derives from the caller: `aws:username`
    /// (users only), `aws:userid`, `aws:PrincipalArn`, `aws:PrincipalAccount`,
    /// `aws:PrincipalType`, and `aws:PrincipalServiceName` for services.
    ///
    /// [`crate::evaluate`] falls back to these values on its own when the
    /// context lacks them, so calling this is only needed when a caller wants
    /// to inspect or override them.
    pub fn set_principal(&mut self, principal: &PrincipalRef) -> &mut Self {
        for key in [
            keys::USERNAME,
            keys::USERID,
            keys::PRINCIPAL_ARN,
            keys::PRINCIPAL_ACCOUNT,
            keys::PRINCIPAL_TYPE,
            keys::PRINCIPAL_SERVICE_NAME,
        ] {
            if let Some(v) = principal_key(principal, key) {
                self.set(key, v);
            }
        }
        self
    }

    /// Sets `aws:SourceIp`.
    pub fn set_source_ip(&mut self, ip: IpAddr) -> &mut Self {
        self.set(keys::SOURCE_IP, ip)
    }

    /// Sets `aws:CurrentTime` (a date) and `aws:EpochTime` (whole seconds
    /// since the epoch, as AWS presents it) from the caller's clock.
    pub fn set_current_time(&mut self, now: Timestamp) -> &mut Self {
        self.set(keys::CURRENT_TIME, now);
        self.set(keys::EPOCH_TIME, now.epoch_seconds())
    }

    /// Sets `aws:SecureTransport`.
    pub fn set_secure_transport(&mut self, secure: bool) -> &mut Self {
        self.set(keys::SECURE_TRANSPORT, secure)
    }

    /// Sets `aws:RequestTag/<key>` and adds `key` to `aws:TagKeys`.
    pub fn set_request_tag(&mut self, key: &str, value: &str) -> &mut Self {
        self.set(&format!("{}{key}", keys::REQUEST_TAG_PREFIX), value);
        let mut tag_keys = match self.get(keys::TAG_KEYS) {
            Some(ContextValue::Strings(v)) => v.clone(),
            Some(other) => other.as_strings(),
            None => Vec::new(),
        };
        if !tag_keys.iter().any(|k| k == key) {
            tag_keys.push(key.to_string());
        }
        self.set(keys::TAG_KEYS, tag_keys)
    }

    /// Sets `aws:TagKeys` outright (e.g. for `UntagResource`).
    pub fn set_tag_keys(&mut self, tag_keys: &[&str]) -> &mut Self {
        self.set(keys::TAG_KEYS, tag_keys)
    }

    /// Sets `aws:ResourceTag/<key>`.
    pub fn set_resource_tag(&mut self, key: &str, value: &str) -> &mut Self {
        self.set(&format!("{}{key}", keys::RESOURCE_TAG_PREFIX), value)
    }

    /// Sets `aws:PrincipalTag/<key>`.
    pub fn set_principal_tag(&mut self, key: &str, value: &str) -> &mut Self {
        self.set(&format!("{}{key}", keys::PRINCIPAL_TAG_PREFIX), value)
    }
}

/// The value AWS gives a principal-derived global key, if any.
pub(crate) fn principal_key(principal: &PrincipalRef, key: &str) -> Option<ContextValue> {
    let key = key.to_lowercase();
    let is_service = principal.kind == PrincipalKind::Service;
    match key.as_str() {
        "aws:username" => principal.username.clone().map(ContextValue::String),
        "aws:userid" => principal.user_id.clone().map(ContextValue::String),
        "aws:principalarn" if !is_service => Some(principal.principal_arn().into()),
        "aws:principalaccount" if !principal.account_id.is_empty() => {
            Some(principal.account_id.clone().into())
        }
        "aws:principaltype" if !is_service => Some(principal.kind.principal_type().into()),
        "aws:principalservicename" if is_service => Some(principal.arn.clone().into()),
        _ => None,
    }
}

/// One authorization question: may `principal` perform `action` on
/// `resource`, given `context`?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The authenticated caller.
    pub principal: &'a PrincipalRef,
    /// The IAM action, e.g. `ecs:DescribeClusters` (see [`crate::actions::iam_action`]).
    pub action: &'a str,
    /// The resource ARN, or `*` for actions without resource-level permissions.
    pub resource: &'a str,
    /// Condition keys for this request.
    pub context: &'a Context,
}

impl<'a> Request<'a> {
    /// Bundles the parts of a request.
    pub fn new(
        principal: &'a PrincipalRef,
        action: &'a str,
        resource: &'a str,
        context: &'a Context,
    ) -> Self {
        Self {
            principal,
            action,
            resource,
            context,
        }
    }

    /// Looks a condition key up: the context first, then the keys derived
    /// from the principal (so callers need not copy them into the context).
    pub fn lookup(&self, key: &str) -> Option<ContextValue> {
        self.context
            .get(key)
            .cloned()
            .or_else(|| principal_key(self.principal, key))
    }
}
