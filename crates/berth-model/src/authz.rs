//! IAM authorization as a port: what a call needs, who decides, how a
//! refusal reads.
//!
//! Every service handler parses its input, resolves the resources it names
//! to their canonical ARNs (whatever form the caller used: a name, a partial
//! ARN, an old-format ARN), and asks [`RequestContext::authorize`] for the
//! [`Requirement`]s of the call before it touches state. The gateway puts an
//! [`Access`] in every request context: the account's root passes, Berth's
//! agents pass only where the gateway allows them, users and role sessions
//! are decided by the [`Authorizer`] (IAM's policy engine), and a refusal is
//! rendered in the protocol of the service (`AccessDeniedException`,
//! `AccessDenied`, `UnauthorizedOperation`). The gateway also notices a
//! handler that answered without asking, so a forgotten check fails closed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::{AwsError, PrincipalKind, RequestContext};

/// Condition keys Berth fills in (the global ones the policy engine knows).
pub mod keys {
    pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    pub const TAG_KEYS: &str = "aws:TagKeys";
    /// The service a role is passed to (`iam:PassRole`).
    pub const PASSED_TO_SERVICE: &str = "iam:PassedToService";
}

/// One permission a call needs: an IAM action on a resource ARN, with the
/// condition keys that describe this resource and request (resource tags,
/// request tags, service-specific keys such as `ecs:cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub action: String,
    pub resource: String,
    /// Condition keys and their values (several for multi-valued keys).
    pub conditions: Vec<(String, Vec<String>)>,
}

impl Requirement {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Requirement {
            action: action.into(),
            resource: resource.into(),
            conditions: Vec::new(),
        }
    }

    /// Adds a single-valued condition key.
    pub fn condition(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.conditions.push((key.into(), vec![value.into()]));
        self
    }

    /// Adds a multi-valued condition key (set operators apply to it).
    pub fn condition_values<I, S>(mut self, key: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.conditions
            .push((key.into(), values.into_iter().map(Into::into).collect()));
        self
    }

    /// `aws:ResourceTag/<key>` for each of the resource's tags.
    pub fn resource_tags<'a, I>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        for (key, value) in tags {
            self = self.condition(format!("{}{key}", keys::RESOURCE_TAG_PREFIX), value);
        }
        self
    }

    /// `aws:RequestTag/<key>` for each tag the request sets, and
    /// `aws:TagKeys` with their keys.
    pub fn request_tags<'a, I>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut tag_keys = Vec::new();
        for (key, value) in tags {
            tag_keys.push(key.to_string());
            self = self.condition(format!("{}{key}", keys::REQUEST_TAG_PREFIX), value);
        }
        if !tag_keys.is_empty() {
            self = self.condition_values(keys::TAG_KEYS, tag_keys);
        }
        self
    }

    /// `aws:TagKeys` alone (UntagResource names keys without values).
    pub fn tag_keys<I, S>(self, tag_keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tag_keys: Vec<String> = tag_keys.into_iter().map(Into::into).collect();
        if tag_keys.is_empty() {
            return self;
        }
        self.condition_values(keys::TAG_KEYS, tag_keys)
    }

    /// `iam:PassRole` on `role_arn`, passed to `service` (e.g.
    /// `ecs-tasks.amazonaws.com`).
    pub fn pass_role(role_arn: impl Into<String>, service: &str) -> Self {
        Requirement::new("iam:PassRole", role_arn).condition(keys::PASSED_TO_SERVICE, service)
    }

    /// The values of condition key `key`, if this requirement sets it.
    pub fn condition_of(&self, key: &str) -> Option<&[String]> {
        self.conditions
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// `action` on each of `resources`, or on `*` when there are none (an
/// operation without a resource type, as the Service Authorization Reference
/// lists them).
pub fn on<I>(action: &str, resources: I) -> Vec<Requirement>
where
    I: IntoIterator<Item = String>,
{
    let mut out: Vec<Requirement> = resources
        .into_iter()
        .map(|resource| Requirement::new(action, resource))
        .collect();
    if out.is_empty() {
        out.push(Requirement::new(action, "*"));
    }
    out
}

/// Why a caller was refused: the first requirement not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub action: String,
    pub resource: String,
    /// An explicit `Deny` matched (rather than no `Allow`).
    pub explicit: bool,
    /// The explicit `Deny` was in the resource's own policy.
    pub in_resource_policy: bool,
}

impl Denial {
    /// A denial of `requirement` for want of an `Allow`.
    pub fn implicit(requirement: &Requirement) -> Denial {
        Denial {
            action: requirement.action.clone(),
            resource: requirement.resource.clone(),
            explicit: false,
            in_resource_policy: false,
        }
    }

    /// AWS's wording: `User: <arn> is not authorized to perform: <action> on
    /// resource: <arn> because no identity-based policy allows the <action>
    /// action` (or `with an explicit deny in an identity-based policy`).
    pub fn message(&self, caller_arn: &str) -> String {
        let why = if self.explicit && self.in_resource_policy {
            "with an explicit deny in a resource-based policy".to_string()
        } else if self.explicit {
            "with an explicit deny in an identity-based policy".to_string()
        } else {
            format!(
                "because no identity-based policy allows the {} action",
                self.action
            )
        };
        format!(
            "User: {caller_arn} is not authorized to perform: {} on resource: {} {why}",
            self.action, self.resource
        )
    }

    /// The error a JSON 1.1 service answers (`AccessDeniedException`, 400 as
    /// ECS and the other JSON services answer it).
    pub fn json_error(&self, caller_arn: &str) -> AwsError {
        AwsError::new(400, "AccessDeniedException", self.message(caller_arn))
    }

    /// The error EC2 answers (`UnauthorizedOperation`, 403).
    pub fn ec2_error(&self, caller_arn: &str) -> AwsError {
        AwsError::new(
            403,
            "UnauthorizedOperation",
            format!(
                "You are not authorized to perform this operation. {}",
                self.message(caller_arn)
            ),
        )
    }

    /// The error a Query service answers (`AccessDenied`, 403).
    pub fn query_error(&self, caller_arn: &str) -> AwsError {
        AwsError::new(403, "AccessDenied", self.message(caller_arn))
    }

    /// The error in `style`.
    pub fn error(&self, style: DenialStyle, caller_arn: &str) -> AwsError {
        match style {
            DenialStyle::Json => self.json_error(caller_arn),
            DenialStyle::Query => self.query_error(caller_arn),
            DenialStyle::Ec2 => self.ec2_error(caller_arn),
        }
    }
}

/// Decides whether the request's principal may do everything required.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, ctx: &RequestContext, requirements: &[Requirement]) -> Result<(), Denial>;
}

/// Where the authorizer finds a resource's own policy (ECR repository
/// policies, Secrets Manager resource policies), which can allow or deny
/// beside the caller's identity policies.
pub trait ResourcePolicySource: Send + Sync + 'static {
    /// The policy document attached to `resource_arn`, if any.
    fn resource_policy(&self, resource_arn: &str) -> Option<String>;
}

/// How a refusal is rendered: as the service's protocol answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenialStyle {
    /// `AccessDeniedException`, 400 (JSON 1.1 services).
    #[default]
    Json,
    /// `AccessDenied`, 403 (IAM, STS).
    Query,
    /// `UnauthorizedOperation`, 403 (EC2).
    Ec2,
}

/// The authorization a request carries: who decides, how a refusal reads,
/// and whether the handler asked.
#[derive(Clone, Default)]
pub struct Access {
    authorizer: Option<Arc<dyn Authorizer>>,
    style: DenialStyle,
    agent_allowed: bool,
    checked: Arc<AtomicBool>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("enforced", &self.authorizer.is_some())
            .field("style", &self.style)
            .field("agent_allowed", &self.agent_allowed)
            .field("checked", &self.checked())
            .finish()
    }
}

impl Access {
    /// `authorizer`: None when IAM is not enforced (every authenticated
    /// caller may do anything). `agent_allowed`: whether a Berth agent's
    /// credential may make this call at all (the agent protocol, ECR pull
    /// tokens).
    pub fn new(
        authorizer: Option<Arc<dyn Authorizer>>,
        style: DenialStyle,
        agent_allowed: bool,
    ) -> Access {
        Access {
            authorizer,
            style,
            agent_allowed,
            checked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a handler asked for authorization (or said it needs none).
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    pub fn style(&self) -> DenialStyle {
        self.style
    }

    pub fn enforced(&self) -> bool {
        self.authorizer.is_some()
    }

    fn mark(&self) {
        self.checked.store(true, Ordering::Relaxed);
    }
}

impl RequestContext {
    /// A context for `principal` acting in `region` of the principal's
    /// account, with no IAM enforcement: for tests and in-process callers.
    pub fn for_principal(principal: crate::Principal, region: &str) -> RequestContext {
        RequestContext {
            request_id: "00000000-0000-0000-0000-000000000000".to_string(),
            account_id: principal.account_id.clone(),
            region: region.to_string(),
            principal,
            source_ip: None,
            secure_transport: false,
            access: Access::default(),
        }
    }

    /// The same context with `access` deciding.
    pub fn with_access(mut self, access: Access) -> RequestContext {
        self.access = access;
        self
    }

    /// Whether the caller may do everything `requirements` lists, without
    /// rendering a refusal (for calls that report per-item errors, such as
    /// BatchGetSecretValue). Counts as the handler having asked.
    pub fn decide(&self, requirements: &[Requirement]) -> Result<(), Denial> {
        self.access.mark();
        let first = || {
            requirements
                .first()
                .map(Denial::implicit)
                .unwrap_or_else(|| Denial::implicit(&Requirement::new("", "*")))
        };
        match self.principal.kind {
            PrincipalKind::Root => Ok(()),
            // An agent's credential is bound to its container instance: it
            // may speak the agent protocol and fetch ECR pull tokens,
            // nothing else, whatever the IAM mode (like an ECS instance
            // role, not an account administrator).
            PrincipalKind::Agent if self.access.agent_allowed => Ok(()),
            PrincipalKind::Agent => Err(first()),
            PrincipalKind::User | PrincipalKind::AssumedRole => {
                // An empty list is a handler bug: refuse rather than allow.
                if requirements.is_empty() {
                    return Err(first());
                }
                match &self.access.authorizer {
                    Some(authorizer) => authorizer.authorize(self, requirements),
                    None => Ok(()),
                }
            }
        }
    }

    /// Checks `requirements` and renders a refusal as the service's
    /// protocol does. Handlers call it after parsing their input and before
    /// reading or writing the state the call concerns.
    pub fn authorize(&self, requirements: &[Requirement]) -> Result<(), AwsError> {
        self.decide(requirements)
            .map_err(|denial| denial.error(self.access.style, &self.principal.arn))
    }

    /// Says the call needs no IAM permission (STS GetCallerIdentity,
    /// AssumeRole which STS decides itself, the agent protocol which checks
    /// the agent's own instance).
    pub fn no_authorization_needed(&self) {
        self.access.mark();
    }

    /// The caller's address, for `aws:SourceIp`.
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;

    fn user() -> RequestContext {
        RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::User,
                arn: "arn:aws:iam::1:user/a".into(),
                user_id: "AIDA".into(),
                account_id: "000000000001".into(),
                access_key_id: "AKIA".into(),
            },
            "us-east-1",
        )
    }

    struct DenyAll;
    impl Authorizer for DenyAll {
        fn authorize(&self, _: &RequestContext, r: &[Requirement]) -> Result<(), Denial> {
            Err(Denial::implicit(&r[0]))
        }
    }

    #[test]
    fn denial_messages_read_like_aws() {
        let d = Denial {
            action: "ecs:CreateCluster".into(),
            resource: "arn:aws:ecs:us-east-1:1:cluster/x".into(),
            explicit: false,
            in_resource_policy: false,
        };
        assert_eq!(
            d.message("arn:aws:iam::1:user/a"),
            "User: arn:aws:iam::1:user/a is not authorized to perform: ecs:CreateCluster on \
             resource: arn:aws:ecs:us-east-1:1:cluster/x because no identity-based policy \
             allows the ecs:CreateCluster action"
        );
        let e = Denial {
            explicit: true,
            ..d
        }
        .query_error("arn:aws:iam::1:user/a");
        assert_eq!((e.status, &*e.code), (403, "AccessDenied"));
        assert!(e
            .message
            .ends_with("with an explicit deny in an identity-based policy"));
    }

    #[test]
    fn requirements_carry_tags_and_keys() {
        let r = Requirement::new("ecs:CreateCluster", "arn:c")
            .request_tags([("team", "blue"), ("env", "prod")])
            .resource_tags([("owner", "x")]);
        assert_eq!(
            r.condition_of("aws:RequestTag/team"),
            Some(&["blue".to_string()][..])
        );
        assert_eq!(
            r.condition_of("aws:TagKeys"),
            Some(&["team".to_string(), "env".to_string()][..])
        );
        assert_eq!(
            r.condition_of("aws:ResourceTag/owner"),
            Some(&["x".to_string()][..])
        );
        assert_eq!(on("ecs:ListClusters", Vec::new())[0].resource, "*");
        let p = Requirement::pass_role("arn:aws:iam::1:role/r", "ecs-tasks.amazonaws.com");
        assert_eq!(p.action, "iam:PassRole");
    }

    #[test]
    fn access_decides_by_principal_and_renders_by_style() {
        let ctx = user();
        assert!(!ctx.access.checked());
        // IAM off: allowed, but asked.
        assert!(ctx.authorize(&on("ecs:ListClusters", Vec::new())).is_ok());
        assert!(ctx.access.checked());
        let ctx = user().with_access(Access::new(
            Some(Arc::new(DenyAll)),
            DenialStyle::Ec2,
            false,
        ));
        let e = ctx
            .authorize(&on("ec2:DescribeVpcs", Vec::new()))
            .unwrap_err();
        assert_eq!((e.status, &*e.code), (403, "UnauthorizedOperation"));
        // An empty list never allows a user.
        let ctx = user().with_access(Access::default());
        assert!(ctx.authorize(&[]).is_err());
        // Agents pass only where allowed.
        let mut agent = user();
        agent.principal.kind = PrincipalKind::Agent;
        assert!(agent
            .authorize(&on("ecs:ListClusters", Vec::new()))
            .is_err());
        let agent = agent.with_access(Access::new(None, DenialStyle::Json, true));
        assert!(agent
            .authorize(&on("ecr:GetAuthorizationToken", Vec::new()))
            .is_ok());
    }
}
