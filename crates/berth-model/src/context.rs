//! Who is calling, in which account and region: resolved by the gateway from the
//! request's signature and handed to every service handler.

/// What kind of identity signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The account's root credentials.
    Root,
    /// An IAM user.
    User,
    /// A role session obtained from STS (or a task role).
    AssumedRole,
    /// A Berth agent, authenticated with the credential minted at registration.
    Agent,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The caller's ARN, e.g. `arn:aws:iam::000000000000:root`.
    pub arn: String,
    /// The unique id AWS reports from GetCallerIdentity (`UserId`).
    pub user_id: String,
    pub account_id: String,
    pub access_key_id: String,
}

/// Everything a handler needs to know about the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// The account whose resources the request acts on.
    pub account_id: String,
    /// The region from the signature's credential scope.
    pub region: String,
    pub principal: Principal,
    /// The address the request came from (`aws:SourceIp`), when known.
    pub source_ip: Option<std::net::IpAddr>,
    /// Whether the request arrived over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
    /// Who decides whether the caller may make the call (see
    /// [`RequestContext::authorize`](crate::authz)).
    pub access: crate::authz::Access,
}

impl RequestContext {
    /// Builds the ARN of a resource of this account and region.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:aws:{service}:{}:{}:{resource}",
            self.region, self.account_id
        )
    }
}
