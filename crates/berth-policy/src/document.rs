//! The policy document model and its parser.
//!
//! [`Policy::parse`] checks everything common to all policy kinds (JSON
//! shape, `Version`, `Effect`, action and resource syntax, principals,
//! condition operators). What differs by where a policy is attached is
//! checked by [`Policy::validate_identity`], [`Policy::validate_resource`] and
//! [`Policy::validate_trust`]. IAM's size limits and its check that named
//! users and roles exist belong to the IAM service, which can get the names
//! from [`Policy::referenced_aws_principals`].

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::condition::{validate_value, Condition, ConditionOperator};
use crate::error::PolicyError;
use crate::variables::has_variable;

/// The policy language version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `2008-10-17`, the default when `Version` is absent; no policy variables.
    V2008_10_17,
    /// `2012-10-17`; policy variables are substituted.
    V2012_10_17,
}

impl Version {
    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2008_10_17 => "2008-10-17",
            Version::V2012_10_17 => "2012-10-17",
        }
    }

    /// Whether `${...}` policy variables are substituted.
    pub fn supports_variables(self) -> bool {
        self == Version::V2012_10_17
    }
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants the matched requests.
    Allow,
    /// Refuses the matched requests, overriding any allow.
    Deny,
}

/// The principals named by a `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    /// `"Principal": "*"` or `{"AWS": "*"}`: everyone.
    pub wildcard: bool,
    /// `AWS` entries, normalised: a bare account id becomes
    /// `arn:aws:iam::<id>:root`.
    pub aws: Vec<String>,
    /// `Service` entries, e.g. `ecs-tasks.amazonaws.com`.
    pub service: Vec<String>,
    /// `Federated` entries (identity provider ARNs or names).
    pub federated: Vec<String>,
    /// `CanonicalUser` entries (accepted for S3 compatibility; never match).
    pub canonical_user: Vec<String>,
}

/// `Principal` vs `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalBlock {
    /// Applies to the named principals.
    Principal(Principals),
    /// Applies to everyone except the named principals.
    NotPrincipal(Principals),
}

/// `Action` vs `NotAction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionBlock {
    /// Applies to the listed actions.
    Action(Vec<String>),
    /// Applies to every action except the listed ones.
    NotAction(Vec<String>),
}

/// `Resource` vs `NotResource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceBlock {
    /// Applies to the listed resources.
    Resource(Vec<String>),
    /// Applies to every resource except the listed ones.
    NotResource(Vec<String>),
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `Sid`, if given.
    pub sid: Option<String>,
    /// `Effect`.
    pub effect: Effect,
    /// `Principal`/`NotPrincipal`, if given.
    pub principal: Option<PrincipalBlock>,
    /// `Action`/`NotAction`.
    pub action: ActionBlock,
    /// `Resource`/`NotResource`; absent in trust policies and allowed to be
    /// absent in resource policies, where it means "this resource".
    pub resource: Option<ResourceBlock>,
    /// Flattened `Condition` element: every entry must hold.
    pub conditions: Vec<Condition>,
}

/// A parsed IAM policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `Version`.
    pub version: Version,
    /// `Id`, if given.
    pub id: Option<String>,
    /// `Statement`, in document order.
    pub statements: Vec<Statement>,
}

type Result<T> = std::result::Result<T, PolicyError>;

impl Policy {
    /// Parses and validates the parts of a policy common to every kind.
    pub fn parse(text: &str) -> Result<Policy> {
        let value: Value = serde_json::from_str(text).map_err(|_| PolicyError::Syntax)?;
        let Value::Object(doc) = value else {
            return Err(PolicyError::Syntax);
        };
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(PolicyError::Syntax);
            }
        }
        let version = match doc.get("Version") {
            None => Version::V2008_10_17,
            Some(Value::String(v)) if v == "2012-10-17" => Version::V2012_10_17,
            Some(Value::String(v)) if v == "2008-10-17" => Version::V2008_10_17,
            Some(Value::String(_)) => return Err(PolicyError::InvalidVersion),
            Some(_) => return Err(PolicyError::Syntax),
        };
        let id = match doc.get("Id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(PolicyError::Syntax),
        };
        let raw_statements = match doc.get("Statement") {
            None => return Err(PolicyError::MissingField("Statement")),
            Some(Value::Object(o)) => vec![o],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_object().ok_or(PolicyError::Syntax))
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(PolicyError::Syntax),
        };
        let statements = raw_statements
            .into_iter()
            .map(parse_statement)
            .collect::<Result<Vec<_>>>()?;
        let mut sids = HashSet::new();
        for sid in statements.iter().filter_map(|s| s.sid.as_deref()) {
            if !sid.is_empty() && !sids.insert(sid) {
                return Err(PolicyError::DuplicateSid);
            }
        }
        Ok(Policy {
            version,
            id,
            statements,
        })
    }

    /// Parses a policy meant for a user, group or role (an identity policy).
    pub fn parse_identity(text: &str) -> Result<Policy> {
        let policy = Self::parse(text)?;
        policy.validate_identity()?;
        Ok(policy)
    }

    /// Parses a resource-based policy (e.g. an ECR repository policy or a
    /// Secrets Manager resource policy).
    pub fn parse_resource(text: &str) -> Result<Policy> {
        let policy = Self::parse(text)?;
        policy.validate_resource()?;
        Ok(policy)
    }

    /// Parses a role trust policy (`AssumeRolePolicyDocument`).
    pub fn parse_trust(text: &str) -> Result<Policy> {
        let policy = Self::parse(text)?;
        policy.validate_trust()?;
        Ok(policy)
    }

    /// Rules for identity policies: no principal, a resource in every
    /// statement, alphanumeric `Sid`s.
    pub fn validate_identity(&self) -> Result<()> {
        for s in &self.statements {
            if s.principal.is_some() {
                return Err(PolicyError::PrincipalNotAllowed);
            }
        }
        for s in &self.statements {
            if s.resource.is_none() {
                return Err(PolicyError::MissingResources);
            }
            if let Some(sid) = &s.sid {
                if !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(PolicyError::InvalidSid);
                }
            }
        }
        Ok(())
    }

    /// Rules for resource-based policies: every statement names a principal.
    pub fn validate_resource(&self) -> Result<()> {
        for s in &self.statements {
            if s.principal.is_none() {
                return Err(PolicyError::MissingField("Principal"));
            }
        }
        Ok(())
    }

    /// Rules for trust policies: every statement names a principal, none
    /// names a resource, and actions are STS actions.
    pub fn validate_trust(&self) -> Result<()> {
        self.validate_resource()?;
        for s in &self.statements {
            if s.resource.is_some() {
                return Err(PolicyError::ProhibitedField("Resource"));
            }
            if let ActionBlock::Action(actions) = &s.action {
                let sts = |a: &String| {
                    a == "*"
                        || a.get(..4)
                            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("sts:"))
                };
                if !actions.iter().all(sts) {
                    return Err(PolicyError::TrustPolicyAction);
                }
            }
        }
        Ok(())
    }

    /// The condition keys the policy's statements test, as written, each
    /// once (compared without regard to case), in document order: what
    /// IAM's GetContextKeysFor*Policy answer.
    pub fn condition_keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in self.statements.iter().flat_map(|s| &s.conditions) {
            if !out.iter().any(|k| k.eq_ignore_ascii_case(&c.key)) {
                out.push(&c.key);
            }
        }
        out
    }

    /// Every `AWS` principal named by any statement (normalised ARNs and
    /// `*`), so the IAM service can reject users and roles that do not exist
    /// with [`PolicyError::InvalidPrincipal`], as IAM does.
    pub fn referenced_aws_principals(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for s in &self.statements {
            let p = match &s.principal {
                Some(PrincipalBlock::Principal(p)) | Some(PrincipalBlock::NotPrincipal(p)) => p,
                None => continue,
            };
            out.extend(p.aws.iter().map(String::as_str));
        }
        out
    }
}

fn parse_statement(obj: &Map<String, Value>) -> Result<Statement> {
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(PolicyError::Syntax);
        }
    }
    let sid = match obj.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(PolicyError::Syntax),
    };
    let effect = match obj.get("Effect") {
        None => return Err(PolicyError::MissingField("Effect")),
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(Value::String(e)) => return Err(PolicyError::InvalidEffect(e.clone())),
        Some(_) => return Err(PolicyError::Syntax),
    };
    let action = match (obj.get("Action"), obj.get("NotAction")) {
        (Some(_), Some(_)) => return Err(PolicyError::Syntax),
        (Some(v), None) => ActionBlock::Action(parse_actions(v)?),
        (None, Some(v)) => ActionBlock::NotAction(parse_actions(v)?),
        (None, None) => return Err(PolicyError::MissingActions),
    };
    let resource = match (obj.get("Resource"), obj.get("NotResource")) {
        (Some(_), Some(_)) => return Err(PolicyError::Syntax),
        (Some(v), None) => Some(ResourceBlock::Resource(parse_resources(v)?)),
        (None, Some(v)) => Some(ResourceBlock::NotResource(parse_resources(v)?)),
        (None, None) => None,
    };
    let principal = match (obj.get("Principal"), obj.get("NotPrincipal")) {
        (Some(_), Some(_)) => return Err(PolicyError::Syntax),
        (Some(v), None) => Some(PrincipalBlock::Principal(parse_principals(v)?)),
        (None, Some(v)) => Some(PrincipalBlock::NotPrincipal(parse_principals(v)?)),
        (None, None) => None,
    };
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(v) => parse_conditions(v)?,
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

/// A string or a non-empty array of strings.
fn string_list(value: &Value) -> Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(PolicyError::Syntax))
            .collect(),
        _ => Err(PolicyError::Syntax),
    }
}

fn parse_actions(value: &Value) -> Result<Vec<String>> {
    let actions = string_list(value)?;
    if actions.is_empty() {
        return Err(PolicyError::MissingActions);
    }
    for action in &actions {
        if action == "*" {
            continue;
        }
        match action.split_once(':') {
            None => return Err(PolicyError::ActionWithoutVendor),
            Some((vendor, name)) => {
                if vendor.is_empty()
                    || !vendor
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*' || c == '?')
                {
                    return Err(PolicyError::ActionWithoutVendor);
                }
                if name.contains(':') {
                    return Err(PolicyError::ActionTooManyColons);
                }
            }
        }
    }
    Ok(actions)
}

fn parse_resources(value: &Value) -> Result<Vec<String>> {
    let resources = string_list(value)?;
    if resources.is_empty() {
        return Err(PolicyError::MissingResources);
    }
    for r in &resources {
        let arn_shaped = r.starts_with("arn:") && (r.split(':').count() >= 6 || r.ends_with('*'));
        if r != "*" && !arn_shaped {
            return Err(PolicyError::InvalidResource(r.clone()));
        }
    }
    Ok(resources)
}

fn invalid_principal(kind: &str, value: &str) -> PolicyError {
    PolicyError::InvalidPrincipal(format!("\"{kind}\":\"{value}\""))
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Normalises and checks one `AWS` principal. IAM forbids partial wildcards
/// in principals, so only a whole `*` is accepted.
fn normalise_aws_principal(value: &str) -> Option<String> {
    if value == "*" {
        return Some(value.to_string());
    }
    if is_account_id(value) {
        return Some(format!("arn:aws:iam::{value}:root"));
    }
    let mut parts = value.splitn(6, ':');
    let (arn, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if arn != "arn" || partition.is_empty() || !region.is_empty() || !is_account_id(account) {
        return None;
    }
    if value.contains('*') || value.contains('?') {
        return None;
    }
    let ok = match service {
        "iam" => {
            resource == "root"
                || resource
                    .strip_prefix("user/")
                    .is_some_and(|r| !r.is_empty())
                || resource
                    .strip_prefix("role/")
                    .is_some_and(|r| !r.is_empty())
        }
        "sts" => {
            resource
                .strip_prefix("assumed-role/")
                .is_some_and(|r| r.split('/').count() == 2 && !r.ends_with('/'))
                || resource
                    .strip_prefix("federated-user/")
                    .is_some_and(|r| !r.is_empty())
        }
        _ => false,
    };
    ok.then(|| value.to_string())
}

fn parse_principals(value: &Value) -> Result<Principals> {
    let mut out = Principals::default();
    let map = match value {
        Value::String(s) if s == "*" => {
            out.wildcard = true;
            return Ok(out);
        }
        Value::String(s) => return Err(PolicyError::InvalidPrincipal(format!("\"{s}\""))),
        Value::Object(map) if !map.is_empty() => map,
        _ => return Err(PolicyError::Syntax),
    };
    for (kind, v) in map {
        let values = string_list(v)?;
        if values.is_empty() {
            return Err(invalid_principal(kind, ""));
        }
        for value in values {
            match kind.as_str() {
                "AWS" => {
                    let normalised = normalise_aws_principal(&value)
                        .ok_or_else(|| invalid_principal(kind, &value))?;
                    if normalised == "*" {
                        out.wildcard = true;
                    }
                    out.aws.push(normalised);
                }
                "Service" => {
                    if value.is_empty()
                        || value.contains(char::is_whitespace)
                        || value.contains('*')
                    {
                        return Err(invalid_principal(kind, &value));
                    }
                    out.service.push(value);
                }
                "Federated" => {
                    if value.is_empty() || value.contains('*') {
                        return Err(invalid_principal(kind, &value));
                    }
                    out.federated.push(value);
                }
                "CanonicalUser" => out.canonical_user.push(value),
                _ => return Err(invalid_principal(kind, &value)),
            }
        }
    }
    Ok(out)
}

fn condition_value(value: &Value) -> Result<Vec<String>> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(PolicyError::Syntax),
    };
    match value {
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn parse_conditions(value: &Value) -> Result<Vec<Condition>> {
    let Value::Object(ops) = value else {
        return Err(PolicyError::Syntax);
    };
    let mut out = Vec::new();
    for (op_name, block) in ops {
        let operator: ConditionOperator = op_name.parse()?;
        let Value::Object(keys) = block else {
            return Err(PolicyError::Syntax);
        };
        for (key, values) in keys {
            if key.is_empty() {
                return Err(PolicyError::Syntax);
            }
            // Condition keys are `vendor:name`, e.g. `aws:SourceIp`.
            match key.split_once(':') {
                Some((vendor, name)) if !vendor.is_empty() && !name.is_empty() => {}
                _ => return Err(PolicyError::ActionWithoutVendor),
            }
            let values = condition_value(values)?;
            for v in &values {
                if !has_variable(v) {
                    validate_value(&operator, v)?;
                }
            }
            out.push(Condition {
                operator: operator.clone(),
                key: key.clone(),
                values,
            });
        }
    }
    Ok(out)
}
