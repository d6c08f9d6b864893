//! The gateway's IAM check: a caller's identity policies, evaluated by
//! `berth-policy` for every permission a call needs.

use std::sync::Arc;

use berth_api::{Authorizer, Denial, Requirement};
use berth_model::{AwsError, RequestContext};
use berth_policy::{evaluate, Context, Decision, Request, Timestamp};

use crate::util::now_secs;
use crate::Iam;

/// Authorizes calls with the caller's IAM policies (default deny).
pub struct IamAuthorizer {
    iam: Arc<Iam>,
}

impl IamAuthorizer {
    pub fn new(iam: Arc<Iam>) -> Self {
        IamAuthorizer { iam }
    }
}

impl Authorizer for IamAuthorizer {
    fn authorize(&self, ctx: &RequestContext, requirements: &[Requirement]) -> Result<(), Denial> {
        let deny_first = |explicit| {
            let first = requirements.first();
            Denial {
                action: first.map(|r| r.action.clone()).unwrap_or_default(),
                resource: first.map_or_else(|| "*".to_string(), |r| r.resource.clone()),
                explicit,
            }
        };
        // A caller whose identity is gone (a deleted user or role) has no
        // policies: implicitly denied.
        let Ok((principal, policies)) = self.iam.identity_policies(&ctx.principal) else {
            return Err(deny_first(false));
        };
        let policies: Vec<&berth_policy::Policy> = policies.iter().map(Arc::as_ref).collect();
        let mut context = Context::new();
        context
            .set_current_time(Timestamp::from_epoch_seconds(now_secs()))
            .set_secure_transport(false);
        for requirement in requirements {
            let request = Request::new(
                &principal,
                &requirement.action,
                &requirement.resource,
                &context,
            );
            match evaluate(&policies, None, &request) {
                Decision::Allow(_) => {}
                Decision::ExplicitDeny(_) => {
                    return Err(Denial {
                        action: requirement.action.clone(),
                        resource: requirement.resource.clone(),
                        explicit: true,
                    })
                }
                Decision::ImplicitDeny => {
                    return Err(Denial {
                        action: requirement.action.clone(),
                        resource: requirement.resource.clone(),
                        explicit: false,
                    })
                }
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
        let policies: Vec<&berth_policy::Policy> = policies.iter().map(Arc::as_ref).collect();
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
        };
        let caller = format!(
            "arn:aws:sts::{account}:assumed-role/{}/{session_name}",
            role_arn.rsplit('/').next().unwrap_or(role_arn)
        );
        Err(denial.json_error(&caller))
    }
}
