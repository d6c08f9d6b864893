//! The gateway's IAM check: a caller's identity policies, evaluated by
//! `berth-policy` for every permission a call needs.

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use berth_model::authz::{Authorizer, Denial, Requirement, ResourcePolicySource};
use berth_model::{AwsError, RequestContext};
use berth_policy::{evaluate, Context, Decision, Policy, PolicySource, Request, Timestamp};
use berth_util::time::now_secs;

use crate::Iam;

/// Parsed resource policies kept at most; past that the cache starts over.
const MAX_CACHED_RESOURCE_POLICIES: usize = 4096;

/// Authorizes calls with the caller's IAM policies (default deny) and, where
/// the resource has one, the resource's own policy.
pub struct IamAuthorizer {
    iam: Arc<Iam>,
    resource_policies: Vec<Arc<dyn ResourcePolicySource>>,
    /// Resource policy documents parsed, by text (None: it does not parse,
    /// and counts as no policy).
    parsed: Mutex<HashMap<String, Option<Arc<Policy>>>>,
}

impl IamAuthorizer {
    pub fn new(iam: Arc<Iam>) -> Self {
        IamAuthorizer {
            iam,
            resource_policies: Vec::new(),
            parsed: Mutex::new(HashMap::new()),
        }
    }

    /// Also consults `source` for resource policies.
    pub fn with_resource_policies(mut self, source: Arc<dyn ResourcePolicySource>) -> Self {
        self.resource_policies.push(source);
        self
    }

    fn resource_policy(&self, resource: &str) -> Option<Arc<Policy>> {
        let text = self
            .resource_policies
            .iter()
            .find_map(|s| s.resource_policy(resource))?;
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(policy) = parsed.get(&text) {
            return policy.clone();
        }
        let policy = Policy::parse_resource(&text).ok().map(Arc::new);
        if parsed.len() >= MAX_CACHED_RESOURCE_POLICIES {
            parsed.clear();
        }
        parsed.insert(text, policy.clone());
        policy
    }
}

/// The condition keys that describe the request as a whole: who calls
/// (`aws:PrincipalTag/*` besides the principal keys the engine derives),
/// from where (`aws:SourceIp`, `aws:SecureTransport`), when
/// (`aws:CurrentTime`, `aws:EpochTime`) and in which region
/// (`aws:RequestedRegion`).
pub fn request_context(ctx: &RequestContext, tags: &[(String, String)], now: i64) -> Context {
    let mut context = Context::new();
    context
        .set_current_time(Timestamp::from_epoch_seconds(now))
        .set_secure_transport(ctx.secure_transport)
        .set("aws:RequestedRegion", ctx.region.as_str());
    if let Some(ip) = ctx.source_ip() {
        context.set_source_ip(ip);
    }
    for (key, value) in tags {
        context.set_principal_tag(key, value);
    }
    context
}

/// `base` with the requirement's own keys (resource tags, request tags,
/// service keys) added.
fn requirement_context(base: &Context, requirement: &Requirement) -> Context {
    let mut context = base.clone();
    for (key, values) in &requirement.conditions {
        match values.as_slice() {
            [one] => context.set(key, one.as_str()),
            many => context.set(key, many.to_vec()),
        };
    }
    context
}

impl Authorizer for IamAuthorizer {
    fn authorize(&self, ctx: &RequestContext, requirements: &[Requirement]) -> Result<(), Denial> {
        let deny_first = |explicit| {
            let first = requirements.first();
            Denial {
                action: first.map(|r| r.action.clone()).unwrap_or_default(),
                resource: first.map_or_else(|| "*".to_string(), |r| r.resource.clone()),
                explicit,
                in_resource_policy: false,
            }
        };
        // A caller whose identity is gone (a deleted user or role) has no
        // policies: implicitly denied.
        let Ok(identity) = self.iam.identity(&ctx.principal) else {
            return Err(deny_first(false));
        };
        let policies: Vec<&Policy> = identity.policies.iter().map(Arc::as_ref).collect();
        let session_policies: Option<Vec<&Policy>> = identity
            .session_policies
            .as_ref()
            .map(|p| p.iter().map(Arc::as_ref).collect());
        let base = request_context(ctx, &identity.tags, now_secs());
        if let Some(first) = requirements.first() {
            if !ctx.principal.access_key_id.starts_with("ASIA") {
                let service = first.action.split(':').next().unwrap_or("N/A");
                self.iam
                    .usage
                    .touch(&ctx.principal.access_key_id, Some((service, &ctx.region)));
            }
        }
        for requirement in requirements {
            let resource_policy = self.resource_policy(&requirement.resource);
            let context = requirement_context(&base, requirement);
            let request = Request::new(
                &identity.principal,
                &requirement.action,
                &requirement.resource,
                &context,
            );
            let denial = |explicit, in_resource_policy| Denial {
                action: requirement.action.clone(),
                resource: requirement.resource.clone(),
                explicit,
                in_resource_policy,
            };
            match evaluate(&policies, resource_policy.as_deref(), &request) {
                Decision::Allow(m) => {
                    // A session's permissions are the intersection of its
                    // identity's and its session policies' (unless a
                    // resource policy names the session itself).
                    if let (Some(session), PolicySource::Identity(_)) =
                        (&session_policies, m.source)
                    {
                        match evaluate(session, None, &request) {
                            Decision::Allow(_) => {}
                            Decision::ExplicitDeny(_) => return Err(denial(true, false)),
                            Decision::ImplicitDeny => return Err(denial(false, false)),
                        }
                    }
                }
                Decision::ExplicitDeny(m) => {
                    return Err(denial(true, m.source == PolicySource::Resource))
                }
                Decision::ImplicitDeny => return Err(denial(false, false)),
            }
        }
        Ok(())
    }
}

impl Iam {
    /// Whether a session `session_name` of `role_arn` may perform `action`
    /// on `resource` under the role's policies; the error is the
    /// AccessDeniedException that session's call would get.
    pub fn check_role_permission(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        action: &str,
        resource: &str,
    ) -> Result<(), AwsError> {
        let (principal, policies) = self.role_session_policies(account, role_arn, session_name)?;
        let policies: Vec<&Policy> = policies.iter().map(Arc::as_ref).collect();
        let mut context = Context::new();
        context
            .set_current_time(Timestamp::from_epoch_seconds(now_secs()))
            .set_secure_transport(true);
        let request = Request::new(&principal, action, resource, &context);
        let explicit = match evaluate(&policies, None, &request) {
            Decision::Allow(_) => return Ok(()),
            Decision::ExplicitDeny(_) => true,
            Decision::ImplicitDeny => false,
        };
        let denial = Denial {
            action: action.to_string(),
            resource: resource.to_string(),
            explicit,
            in_resource_policy: false,
        };
        let caller = format!(
            "arn:aws:sts::{account}:assumed-role/{}/{session_name}",
            role_arn.rsplit('/').next().unwrap_or(role_arn)
        );
        Err(denial.json_error(&caller))
    }
}
