//! Policy evaluation following the IAM User Guide's "Policy evaluation
//! logic":
//!
//! 1. Every request starts implicitly denied.
//! 2. An applicable `Deny` statement in any policy (identity or resource)
//!    is final: explicit deny.
//! 3. Same account: an applicable `Allow` in an identity policy, or in the
//!    resource policy *naming this principal*, allows the request.
//! 4. Cross account (the resource ARN's account differs from the caller's):
//!    an identity policy *and* the resource policy (naming the caller or the
//!    caller's account) must both allow.
//! 5. Otherwise the request stays implicitly denied.
//!
//! Not modelled here (callers combine them if Berth grows them): SCPs,
//! permission boundaries and session policies.
//!
//! **Root.** AWS lets an account's root user do anything in its account that
//! no explicit deny forbids, whatever the identity policies say. That is the
//! caller's business: the IAM layer should short-circuit root for resources
//! of root's own account before calling [`evaluate`] (or treat
//! [`Decision::ImplicitDeny`] as allowed for root there). [`evaluate`] itself
//! treats root like any other principal.

use crate::context::{PrincipalKind, PrincipalRef, Request};
use crate::document::{
    ActionBlock, Effect, Policy, PrincipalBlock, Principals, ResourceBlock, Statement,
};
use crate::matching::{action_matches, arn_matches, arn_matches_tokens};
use crate::variables;

/// Which policy a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The identity policy at this index of the `identity` slice.
    Identity(usize),
    /// The resource-based policy.
    Resource,
    /// The role trust policy.
    Trust,
}

/// How a resource or trust policy statement matched the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrincipalScope {
    /// Identity policies have no principal.
    NotApplicable,
    /// The statement named the caller's account (account id or
    /// `arn:aws:iam::<id>:root`) and the caller is not the root user. AWS
    /// treats this as delegation to the account: it only grants when the
    /// caller's identity policy also allows the action.
    Account,
    /// The statement named the caller itself (`*`, its user/role/session
    /// ARN, its service or provider, or root when the caller is root).
    Direct,
}

/// The statement that decided a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedStatement {
    /// The statement's `Sid`, if it had one (for error messages).
    pub sid: Option<String>,
    /// Where the statement came from.
    pub source: PolicySource,
    /// How its principal matched.
    pub principal_scope: PrincipalScope,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the given statement.
    Allow(MatchedStatement),
    /// Refused by an explicit `Deny` statement.
    ExplicitDeny(MatchedStatement),
    /// Nothing allowed the request.
    ImplicitDeny,
}

impl Decision {
    /// True only for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The deciding statement's `Sid`, if any.
    pub fn sid(&self) -> Option<&str> {
        match self {
            Decision::Allow(m) | Decision::ExplicitDeny(m) => m.sid.as_deref(),
            Decision::ImplicitDeny => None,
        }
    }
}

/// Evaluates a request against the caller's identity policies and,
/// optionally, the target resource's resource-based policy.
///
/// Same account (the usual case in Berth): allowed when an identity policy
/// allows, or the resource policy allows naming the caller directly. A
/// resource policy statement that names only the caller's account
/// ([`PrincipalScope::Account`]) does not allow by itself, as in AWS; its
/// `Deny` statements do apply to every principal of that account.
///
/// Cross account (the account field of `req.resource` is a concrete account
/// other than the caller's): both an identity policy and the resource
/// policy must allow; the returned statement is the identity policy's.
/// Resources without an account field (`*`, S3 ARNs) count as same-account.
pub fn evaluate(identity: &[&Policy], resource: Option<&Policy>, req: &Request<'_>) -> Decision {
    let cross_account = resource_account(req.resource)
        .is_some_and(|a| !req.principal.account_id.is_empty() && a != req.principal.account_id);
    let mut allow: Option<MatchedStatement> = None;
    for (index, policy) in identity.iter().enumerate() {
        for stmt in &policy.statements {
            if !statement_applies(policy, stmt, req, false) {
                continue;
            }
            let matched = MatchedStatement {
                sid: stmt.sid.clone(),
                source: PolicySource::Identity(index),
                principal_scope: PrincipalScope::NotApplicable,
            };
            match stmt.effect {
                Effect::Deny => return Decision::ExplicitDeny(matched),
                Effect::Allow => {
                    allow.get_or_insert(matched);
                }
            }
        }
    }
    let resource_decision = match resource {
        Some(policy) => evaluate_principal_policy(policy, req, PolicySource::Resource),
        None => Decision::ImplicitDeny,
    };
    match resource_decision {
        Decision::ExplicitDeny(m) => Decision::ExplicitDeny(m),
        Decision::Allow(_) if cross_account => {
            allow.map_or(Decision::ImplicitDeny, Decision::Allow)
        }
        Decision::Allow(m) if m.principal_scope == PrincipalScope::Direct => {
            Decision::Allow(allow.unwrap_or(m))
        }
        _ if cross_account => Decision::ImplicitDeny,
        _ => allow.map_or(Decision::ImplicitDeny, Decision::Allow),
    }
}

/// The account field of a resource ARN, when it names one concrete account.
fn resource_account(resource: &str) -> Option<&str> {
    let mut parts = resource.splitn(6, ':');
    if parts.next() != Some("arn") {
        return None;
    }
    let account = parts.nth(3)?;
    parts.next()?;
    let concrete = !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit());
    concrete.then_some(account)
}

/// Evaluates a role trust policy for `sts:AssumeRole` (or
/// `sts:AssumeRoleWithWebIdentity`, `sts:TagSession`, ...): `req.action` is
/// the STS action, `req.resource` the role ARN.
///
/// An [`Decision::Allow`] with [`PrincipalScope::Account`] means the trust
/// policy delegates to the caller's account; AWS then also requires the
/// caller's identity policies to allow `sts:AssumeRole` on the role, so the
/// caller must combine this result with [`evaluate`]. A `Direct` allow of a
/// principal in the role's own account needs no identity permission.
/// Cross-account callers always need both.
pub fn evaluate_trust(trust: &Policy, req: &Request<'_>) -> Decision {
    evaluate_principal_policy(trust, req, PolicySource::Trust)
}

/// Shared walk for policies with principals: first explicit deny wins,
/// otherwise the broadest-scoped allow (Direct beats Account).
fn evaluate_principal_policy(policy: &Policy, req: &Request<'_>, source: PolicySource) -> Decision {
    let mut allow: Option<MatchedStatement> = None;
    for stmt in &policy.statements {
        let Some(scope) = principal_scope(stmt, req.principal) else {
            continue;
        };
        if !statement_applies(policy, stmt, req, true) {
            continue;
        }
        let matched = MatchedStatement {
            sid: stmt.sid.clone(),
            source,
            principal_scope: scope,
        };
        match stmt.effect {
            Effect::Deny => return Decision::ExplicitDeny(matched),
            Effect::Allow => {
                if allow.as_ref().is_none_or(|a| a.principal_scope < scope) {
                    allow = Some(matched);
                }
            }
        }
    }
    allow.map_or(Decision::ImplicitDeny, Decision::Allow)
}

/// Action, resource and condition checks (principal handled separately).
/// `resource_optional` lets resource and trust policies omit `Resource`.
fn statement_applies(
    policy: &Policy,
    stmt: &Statement,
    req: &Request<'_>,
    resource_optional: bool,
) -> bool {
    let vars = policy.version.supports_variables();
    target_applies(policy, stmt, req, resource_optional)
        && stmt.conditions.iter().all(|c| c.evaluate(req, vars))
}

/// Action and resource checks only.
fn target_applies(
    policy: &Policy,
    stmt: &Statement,
    req: &Request<'_>,
    resource_optional: bool,
) -> bool {
    let action_ok = match &stmt.action {
        ActionBlock::Action(list) => list.iter().any(|p| action_matches(p, req.action)),
        ActionBlock::NotAction(list) => !list.iter().any(|p| action_matches(p, req.action)),
    };
    if !action_ok {
        return false;
    }
    let vars = policy.version.supports_variables();
    let lookup = |key: &str| req.lookup(key).and_then(|v| v.as_variable());
    let resource_ok = match &stmt.resource {
        None => resource_optional,
        Some(ResourceBlock::Resource(list)) => list.iter().any(|p| {
            if !(vars && p.contains("${")) {
                // No variable to substitute: match the pattern as written.
                return arn_matches(p, req.resource);
            }
            variables::compile(p, vars, &lookup)
                .is_some_and(|t| arn_matches_tokens(&t, req.resource))
        }),
        Some(ResourceBlock::NotResource(list)) => {
            let mut any = false;
            for p in list {
                // An unresolvable variable makes the statement inapplicable
                // rather than widening a NotResource to everything.
                let Some(tokens) = variables::compile(p, vars, &lookup) else {
                    return false;
                };
                any |= arn_matches_tokens(&tokens, req.resource);
            }
            !any
        }
    };
    resource_ok
}

/// Whether a principal-bearing statement covers `principal`, and how.
fn principal_scope(stmt: &Statement, principal: &PrincipalRef) -> Option<PrincipalScope> {
    match stmt.principal.as_ref()? {
        PrincipalBlock::Principal(p) => principal_match(p, principal),
        // AWS checks every identity in the caller's chain (session, role,
        // account) against NotPrincipal: the statement applies unless all of
        // them are named, which is why its docs tell you to list the account
        // and role alongside a session.
        PrincipalBlock::NotPrincipal(p) => {
            let all_named = principal
                .identity_chain()
                .iter()
                .all(|id| p.wildcard || names(p, principal, id));
            (!all_named).then_some(PrincipalScope::Direct)
        }
    }
}

fn names(p: &Principals, principal: &PrincipalRef, id: &str) -> bool {
    match principal.kind {
        PrincipalKind::Service => p.service.iter().any(|s| s.eq_ignore_ascii_case(id)),
        PrincipalKind::Federated => p.federated.iter().any(|f| f == id),
        _ => p.aws.iter().any(|a| a == id),
    }
}

fn root_account(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_partition, rest) = rest.split_once(':')?;
    let account = rest.strip_prefix("iam::")?.strip_suffix(":root")?;
    Some(account)
}

fn principal_match(p: &Principals, principal: &PrincipalRef) -> Option<PrincipalScope> {
    if p.wildcard {
        return Some(PrincipalScope::Direct);
    }
    let mut best: Option<PrincipalScope> = None;
    match principal.kind {
        PrincipalKind::Service => {
            if p.service
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&principal.arn))
            {
                best = Some(PrincipalScope::Direct);
            }
        }
        PrincipalKind::Federated => {
            if p.federated.contains(&principal.arn) {
                best = Some(PrincipalScope::Direct);
            }
        }
        _ => {
            for named in &p.aws {
                let scope = if let Some(account) = root_account(named) {
                    if account != principal.account_id {
                        continue;
                    }
                    if principal.kind == PrincipalKind::Root {
                        PrincipalScope::Direct
                    } else {
                        PrincipalScope::Account
                    }
                } else if *named == principal.arn || Some(named) == principal.role_arn.as_ref() {
                    PrincipalScope::Direct
                } else {
                    continue;
                };
                best = best.max(Some(scope));
            }
        }
    }
    best
}

/// A statement that took part in a decision: the policy it is in and its
/// position in that policy's `Statement` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementRef {
    /// Which policy.
    pub source: PolicySource,
    /// The statement's index in document order.
    pub index: usize,
    /// The statement's effect.
    pub effect: Effect,
}

/// A decision with the reasons a policy simulator reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision, exactly as [`evaluate`] gives it.
    pub decision: Decision,
    /// The statements that determine the decision: every applicable `Deny`
    /// when explicitly denied (a deny is then the only kind listed), every
    /// applicable `Allow` when allowed, none when implicitly denied.
    pub matched: Vec<StatementRef>,
    /// Condition keys tested by statements whose action and resource apply
    /// and that the request does not carry (`Null` and `...IfExists`
    /// conditions, which are meant for absent keys, excepted), in first-seen
    /// order.
    pub missing_keys: Vec<String>,
}

/// [`evaluate`], with the statements that decided and the condition keys
/// the request lacked: what IAM's policy simulator answers.
pub fn explain(identity: &[&Policy], resource: Option<&Policy>, req: &Request<'_>) -> Explanation {
    let decision = evaluate(identity, resource, req);
    let mut denies = Vec::new();
    let mut allows = Vec::new();
    let mut missing_keys: Vec<String> = Vec::new();
    let mut visit = |policy: &Policy, source: PolicySource, principal_bearing: bool| {
        for (index, stmt) in policy.statements.iter().enumerate() {
            if principal_bearing && principal_scope(stmt, req.principal).is_none() {
                continue;
            }
            if !target_applies(policy, stmt, req, principal_bearing) {
                continue;
            }
            for c in &stmt.conditions {
                let tests_absence =
                    c.operator.if_exists || c.operator.base == crate::condition::BaseOperator::Null;
                if !tests_absence
                    && req.lookup(&c.key).is_none()
                    && !missing_keys.iter().any(|k| k.eq_ignore_ascii_case(&c.key))
                {
                    missing_keys.push(c.key.clone());
                }
            }
            if !statement_applies(policy, stmt, req, principal_bearing) {
                continue;
            }
            let r = StatementRef {
                source,
                index,
                effect: stmt.effect,
            };
            match stmt.effect {
                Effect::Deny => denies.push(r),
                Effect::Allow => allows.push(r),
            }
        }
    };
    for (index, policy) in identity.iter().enumerate() {
        visit(policy, PolicySource::Identity(index), false);
    }
    if let Some(policy) = resource {
        visit(policy, PolicySource::Resource, true);
    }
    let matched = match &decision {
        Decision::ExplicitDeny(_) => denies,
        Decision::Allow(_) => allows,
        Decision::ImplicitDeny => Vec::new(),
    };
    Explanation {
        decision,
        matched,
        missing_keys,
    }
}
