//! IAM's policy simulator (SimulatePrincipalPolicy, SimulateCustomPolicy)
//! and GetContextKeysFor*Policy, on `berth-policy`'s engine: the same
//! `evaluate` the gateway's authorizer decides with, over the same policies
//! (a user's own, its groups', a role's), so a simulation answers what the
//! gateway would decide given the same request keys.
//!
//! What the simulator puts in the request context itself: the principal's
//! keys (`aws:username`, `aws:userid`, `aws:PrincipalArn`, ...) and its tags
//! (`aws:PrincipalTag/*`); everything else (`aws:CurrentTime`,
//! `aws:SourceIp`, resource tags ...) comes from `ContextEntries`, and a key
//! a policy tests that neither gives is reported in `MissingContextValues`.

use std::sync::Arc;

use base64::Engine as _;
use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_policy::{
    explain, statement_positions, Context, ContextValue, Decision, Policy, PolicySource,
    PrincipalRef, Request, Timestamp,
};
use berth_store::ReadView;

use super::account::{groups_of, managed_document};
use super::IamService;
use crate::last_segment;
use crate::records::{group_key, role_key, user_key, GroupRecord, RoleRecord, UserRecord};
use crate::util::{get_json, invalid_input, no_such_entity, paginate, validation, Params, Xml};

/// A policy with the name and type the simulator reports it under.
struct Labeled {
    id: String,
    kind: &'static str,
    text: String,
    policy: Arc<Policy>,
}

/// The simulated principal.
struct Subject {
    principal: PrincipalRef,
    tags: Vec<(String, String)>,
    policies: Vec<Labeled>,
}

/// `Member.N` values of a list parameter, in order.
fn list(p: &Params<'_>, name: &str) -> Vec<String> {
    let prefix = format!("{name}.member.");
    let mut items: Vec<(u32, String)> =
        p.0.iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, v.clone()))
            })
            .collect();
    items.sort_by_key(|(n, _)| *n);
    items.into_iter().map(|(_, v)| v).collect()
}

/// `ContextEntries.member.N.*` as request keys.
fn context_entries(p: &Params<'_>) -> Result<Vec<(String, ContextValue)>, AwsError> {
    let mut out = Vec::new();
    for n in 1.. {
        let base = format!("ContextEntries.member.{n}.");
        let Some(name) = p.get(&format!("{base}ContextKeyName")) else {
            break;
        };
        let kind = p.get(&format!("{base}ContextKeyType")).unwrap_or("string");
        let values = list(p, &format!("{base}ContextKeyValues"));
        let bad = |v: &str| {
            invalid_input(format!(
                "The value {v} of context key {name} is not a valid {kind}."
            ))
        };
        let one = |v: &str| -> Result<ContextValue, AwsError> {
            Ok(match kind.trim_end_matches("List") {
                "numeric" => ContextValue::Number(v.parse().map_err(|_| bad(v))?),
                "boolean" => ContextValue::Bool(v.eq_ignore_ascii_case("true")),
                "ip" => ContextValue::Ip(v.parse().map_err(|_| bad(v))?),
                "date" => ContextValue::Date(Timestamp::parse(v).ok_or_else(|| bad(v))?),
                "binary" => ContextValue::Binary(
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .map_err(|_| bad(v))?,
                ),
                "string" => ContextValue::String(v.to_string()),
                _ => {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{kind}' at 'contextEntries.{n}.member.contextKeyType' failed to satisfy constraint: Member must satisfy enum value set: [string, stringList, numeric, numericList, boolean, booleanList, ip, ipList, binary, binaryList, date, dateList]"
                    )))
                }
            })
        };
        let value = if kind.ends_with("List") || values.len() != 1 {
            // Multivalued: the set operators read every value.
            for v in &values {
                one(v)?;
            }
            ContextValue::Strings(values.clone())
        } else {
            one(&values[0])?
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

fn decision_name(d: &Decision) -> &'static str {
    match d {
        Decision::Allow(_) => "allowed",
        Decision::ExplicitDeny(_) => "explicitDeny",
        Decision::ImplicitDeny => "implicitDeny",
    }
}

fn restrictiveness(d: &str) -> u8 {
    match d {
        "explicitDeny" => 2,
        "implicitDeny" => 1,
        _ => 0,
    }
}

impl IamService {
    fn parse_input(&self, text: &str) -> Result<Arc<Policy>, AwsError> {
        self.iam
            .cached(format!("inline:{text}"), text, Policy::parse_identity)
            .map_err(|e| invalid_input(e.message))
    }

    fn labeled_inline(
        &self,
        kind: &'static str,
        inline: &std::collections::BTreeMap<String, String>,
        out: &mut Vec<Labeled>,
    ) -> Result<(), AwsError> {
        for (name, text) in inline {
            out.push(Labeled {
                id: name.clone(),
                kind,
                text: text.clone(),
                policy: self.parse_input(text)?,
            });
        }
        Ok(())
    }

    fn labeled_attached(
        &self,
        view: &dyn ReadView,
        account: &str,
        attached: &[String],
        out: &mut Vec<Labeled>,
    ) -> Result<(), AwsError> {
        for arn in attached {
            if let Some((text, aws)) = managed_document(view, account, arn)? {
                out.push(Labeled {
                    id: last_segment(arn).to_string(),
                    kind: if aws { "aws-managed" } else { "user-managed" },
                    policy: self.parse_input(&text)?,
                    text,
                });
            }
        }
        Ok(())
    }

    /// The user, group or role `arn` names, with its policies.
    fn subject(&self, account: &str, arn: &str) -> Result<Subject, AwsError> {
        let view: &dyn ReadView = self.iam.store();
        let not_found = || no_such_entity(format!("Entity {arn} does not exist."));
        let resource = arn
            .strip_prefix(&format!("arn:aws:iam::{account}:"))
            .ok_or_else(|| {
                invalid_input(format!(
                    "Invalid ARN {arn}: it names no user, group or role of this account."
                ))
            })?;
        let name = last_segment(resource);
        let mut policies = Vec::new();
        if resource.starts_with("user/") {
            let user: UserRecord = get_json(view, &user_key(account, name))?
                .filter(|u: &UserRecord| u.arn(account) == arn)
                .ok_or_else(not_found)?;
            self.labeled_inline("user", &user.inline, &mut policies)?;
            self.labeled_attached(view, account, &user.attached, &mut policies)?;
            for group in groups_of(view, account, &user)? {
                self.labeled_inline("group", &group.inline, &mut policies)?;
                self.labeled_attached(view, account, &group.attached, &mut policies)?;
            }
            return Ok(Subject {
                principal: PrincipalRef::user(account, &user.path, &user.name, &user.id),
                tags: user.tags,
                policies,
            });
        }
        if resource.starts_with("role/") {
            let role: RoleRecord = get_json(view, &role_key(account, name))?
                .filter(|r: &RoleRecord| r.arn(account) == arn)
                .ok_or_else(not_found)?;
            self.labeled_inline("role", &role.inline, &mut policies)?;
            self.labeled_attached(view, account, &role.attached, &mut policies)?;
            return Ok(Subject {
                principal: PrincipalRef::assumed_role(
                    account, &role.path, &role.name, &role.name, &role.id,
                ),
                tags: role.tags,
                policies,
            });
        }
        if resource.starts_with("group/") {
            let group: GroupRecord = get_json(view, &group_key(account, name))?
                .filter(|g: &GroupRecord| g.arn(account) == arn)
                .ok_or_else(not_found)?;
            self.labeled_inline("group", &group.inline, &mut policies)?;
            self.labeled_attached(view, account, &group.attached, &mut policies)?;
            // A group is simulated as a member with no policies of its own.
            let mut principal = PrincipalRef::user(account, "/", "", "");
            principal.arn = arn.to_string();
            principal.username = None;
            principal.user_id = None;
            return Ok(Subject {
                principal,
                tags: Vec::new(),
                policies,
            });
        }
        Err(invalid_input(format!(
            "Invalid ARN {arn}: it names no user, group or role of this account."
        )))
    }

    /// The caller a custom simulation runs as: `CallerArn` (a user), or an
    /// anonymous user of the account.
    fn custom_subject(&self, account: &str, caller: Option<&str>) -> Result<Subject, AwsError> {
        if let Some(arn) = caller {
            if arn.contains(":user/") {
                let mut s = self.subject(account, arn)?;
                // A custom simulation evaluates only the given policies.
                s.policies.clear();
                return Ok(s);
            }
            return Err(invalid_input(format!(
                "CallerArn {arn} must be the ARN of an IAM user."
            )));
        }
        let mut principal = PrincipalRef::user(account, "/", "", "");
        principal.arn = format!("arn:aws:iam::{account}:user/");
        principal.username = None;
        principal.user_id = None;
        Ok(Subject {
            principal,
            tags: Vec::new(),
            policies: Vec::new(),
        })
    }

    fn simulate(&self, p: &Params<'_>, mut subject: Subject) -> Result<String, AwsError> {
        let actions = list(p, "ActionNames");
        if actions.is_empty() {
            return Err(validation(
                "1 validation error detected: Value null at 'actionNames' failed to satisfy constraint: Member must not be null",
            ));
        }
        let resources = list(p, "ResourceArns");
        let max = p.max_items()?;
        for (i, text) in list(p, "PolicyInputList").into_iter().enumerate() {
            subject.policies.push(Labeled {
                id: format!("PolicyInputList.{}", i + 1),
                kind: "none",
                policy: self.parse_input(&text)?,
                text,
            });
        }
        let exclusions = list(p, "PolicyExclusionList");
        subject.policies.retain(|l| {
            !exclusions
                .iter()
                .any(|e| e == &l.id || last_segment(e) == l.id)
        });
        let boundaries: Vec<Arc<Policy>> = list(p, "PermissionsBoundaryPolicyInputList")
            .iter()
            .map(|t| self.parse_input(t))
            .collect::<Result<_, _>>()?;
        let resource_policy = match p.get("ResourcePolicy") {
            Some(text) => Some((
                text.to_string(),
                Arc::new(Policy::parse_resource(text).map_err(|e| invalid_input(e.to_string()))?),
            )),
            None => None,
        };
        let entries = context_entries(p)?;
        let mut context = Context::new();
        for (k, v) in &subject.tags {
            context.set_principal_tag(k, v);
        }
        for (k, v) in entries {
            context.set(&k, v);
        }
        let policies: Vec<&Policy> = subject.policies.iter().map(|l| l.policy.as_ref()).collect();
        let boundary_refs: Vec<&Policy> = boundaries.iter().map(Arc::as_ref).collect();
        let statement_xml = |x: &mut Xml, source: PolicySource, index: usize| {
            let (id, kind, text) = match source {
                PolicySource::Identity(i) => {
                    let l = &subject.policies[i];
                    (l.id.as_str(), l.kind, l.text.as_str())
                }
                _ => (
                    "ResourcePolicy",
                    "resource",
                    resource_policy.as_ref().map_or("", |(t, _)| t.as_str()),
                ),
            };
            x.open("member")
                .text("SourcePolicyId", id)
                .text("SourcePolicyType", kind);
            if let Some((start, end)) = statement_positions(text).get(index) {
                x.open("StartPosition")
                    .text("Line", &start.line.to_string())
                    .text("Column", &start.column.to_string())
                    .close("StartPosition")
                    .open("EndPosition")
                    .text("Line", &end.line.to_string())
                    .text("Column", &end.column.to_string())
                    .close("EndPosition");
            }
            x.close("member");
        };
        let items: Vec<(String, String)> = actions
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("{i:05}"), a.clone()))
            .collect();
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("EvaluationResults");
        for action in &page {
            let targets: Vec<String> = if resources.is_empty() {
                vec!["*".to_string()]
            } else {
                resources.clone()
            };
            let mut top = "allowed";
            let mut matched: Vec<(PolicySource, usize)> = Vec::new();
            let mut missing: Vec<String> = Vec::new();
            let mut per_resource = Vec::new();
            for resource in &targets {
                let request = Request::new(&subject.principal, action, resource, &context);
                let e = explain(
                    &policies,
                    resource_policy.as_ref().map(|(_, p)| p.as_ref()),
                    &request,
                );
                let mut decision = decision_name(&e.decision);
                let mut bounded = None;
                if !boundary_refs.is_empty() && decision == "allowed" {
                    let b = berth_policy::evaluate(&boundary_refs, None, &request);
                    bounded = Some(b.is_allowed());
                    decision = match b {
                        Decision::Allow(_) => "allowed",
                        Decision::ExplicitDeny(_) => "explicitDeny",
                        Decision::ImplicitDeny => "implicitDeny",
                    };
                }
                if restrictiveness(decision) > restrictiveness(top) {
                    top = decision;
                }
                let refs: Vec<(PolicySource, usize)> =
                    e.matched.iter().map(|m| (m.source, m.index)).collect();
                for r in &refs {
                    if !matched.contains(r) {
                        matched.push(*r);
                    }
                }
                for k in &e.missing_keys {
                    if !missing.iter().any(|m| m.eq_ignore_ascii_case(k)) {
                        missing.push(k.clone());
                    }
                }
                per_resource.push((resource.clone(), decision, refs, e.missing_keys, bounded));
            }
            x.open("member")
                .text("EvalActionName", action)
                .text(
                    "EvalResourceName",
                    if targets.len() == 1 { &targets[0] } else { "*" },
                )
                .text("EvalDecision", top)
                .open("MatchedStatements");
            for (source, index) in &matched {
                statement_xml(&mut x, *source, *index);
            }
            x.close("MatchedStatements").open("MissingContextValues");
            for k in &missing {
                x.text("member", k);
            }
            x.close("MissingContextValues");
            if !resources.is_empty() {
                x.open("ResourceSpecificResults");
                for (resource, decision, refs, keys, bounded) in &per_resource {
                    x.open("member")
                        .text("EvalResourceName", resource)
                        .text("EvalResourceDecision", decision)
                        .open("MatchedStatements");
                    for (source, index) in refs {
                        statement_xml(&mut x, *source, *index);
                    }
                    x.close("MatchedStatements").open("MissingContextValues");
                    for k in keys {
                        x.text("member", k);
                    }
                    x.close("MissingContextValues");
                    if let Some(b) = bounded {
                        x.open("PermissionsBoundaryDecisionDetail")
                            .text(
                                "AllowedByPermissionsBoundary",
                                if *b { "true" } else { "false" },
                            )
                            .close("PermissionsBoundaryDecisionDetail");
                    }
                    x.close("member");
                }
                x.close("ResourceSpecificResults");
            }
            x.close("member");
        }
        x.close("EvaluationResults").page(next.as_deref());
        Ok(x.finish())
    }

    fn source_arn<'a>(p: &Params<'a>) -> Result<&'a str, AwsError> {
        let arn = p.required("PolicySourceArn", "policySourceArn")?;
        if arn.len() < 20 || arn.len() > 2048 {
            return Err(validation(format!(
                "1 validation error detected: Value '{arn}' at 'policySourceArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
            )));
        }
        Ok(arn)
    }

    pub(super) fn simulate_principal_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::source_arn(p)?;
        ctx.authorize(&[Requirement::new("iam:SimulatePrincipalPolicy", arn)])?;
        let subject = self.subject(&ctx.account_id, arn)?;
        self.simulate(p, subject)
    }

    pub(super) fn simulate_custom_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        if list(p, "PolicyInputList").is_empty() {
            return Err(validation(
                "1 validation error detected: Value null at 'policyInputList' failed to satisfy constraint: Member must not be null",
            ));
        }
        ctx.authorize(&[Requirement::new("iam:SimulateCustomPolicy", "*")])?;
        let subject = self.custom_subject(&ctx.account_id, p.get("CallerArn"))?;
        self.simulate(p, subject)
    }

    fn context_keys_xml(policies: &[&Policy]) -> String {
        let mut keys: Vec<&str> = Vec::new();
        for policy in policies {
            for k in policy.condition_keys() {
                if !keys.iter().any(|e| e.eq_ignore_ascii_case(k)) {
                    keys.push(k);
                }
            }
        }
        let mut x = Xml::new();
        x.open("ContextKeyNames");
        for k in keys {
            x.text("member", k);
        }
        x.close("ContextKeyNames");
        x.finish()
    }

    pub(super) fn context_keys_for_principal(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::source_arn(p)?;
        ctx.authorize(&[Requirement::new(
            "iam:GetContextKeysForPrincipalPolicy",
            arn,
        )])?;
        let mut subject = self.subject(&ctx.account_id, arn)?;
        for text in list(p, "PolicyInputList") {
            subject.policies.push(Labeled {
                id: String::new(),
                kind: "none",
                policy: self.parse_input(&text)?,
                text,
            });
        }
        let policies: Vec<&Policy> = subject.policies.iter().map(|l| l.policy.as_ref()).collect();
        Ok(Self::context_keys_xml(&policies))
    }

    pub(super) fn context_keys_for_custom(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let texts = list(p, "PolicyInputList");
        if texts.is_empty() {
            return Err(validation(
                "1 validation error detected: Value null at 'policyInputList' failed to satisfy constraint: Member must not be null",
            ));
        }
        let parsed: Vec<Arc<Policy>> = texts
            .iter()
            .map(|t| self.parse_input(t))
            .collect::<Result<_, _>>()?;
        ctx.authorize(&[Requirement::new("iam:GetContextKeysForCustomPolicy", "*")])?;
        let policies: Vec<&Policy> = parsed.iter().map(Arc::as_ref).collect();
        Ok(Self::context_keys_xml(&policies))
    }
}
