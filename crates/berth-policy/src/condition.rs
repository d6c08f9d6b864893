//! Condition operators and their evaluation.
//!
//! Semantics follow the IAM User Guide ("Condition operators", "Conditions
//! with multiple context keys or values", "Single-valued vs. multivalued
//! context keys"):
//!
//! * keys inside one operator block, and operator blocks, are ANDed; the
//!   values listed for one key are ORed;
//! * a negated operator (`StringNotEquals`, `NotIpAddress`, ...) is true when
//!   the request value matches *none* of the policy values (NOR), and true
//!   when the key is absent;
//! * a positive operator is false when the key is absent, unless `...IfExists`
//!   is used, which makes any operator true on an absent key;
//! * `ForAllValues:` is true when every request value satisfies the operator,
//!   and also when the key is absent or empty; `ForAnyValue:` needs at least
//!   one value to satisfy it, so it is false on an absent key (unless
//!   `IfExists`);
//! * `Null` tests presence only: `"true"` means the key must be absent.
//!
//! Condition key names are case-insensitive; values are compared
//! case-sensitively unless the operator says otherwise.

use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;

use crate::context::{ContextValue, Request};
use crate::error::PolicyError;
use crate::matching::{arn_matches_tokens, matches_tokens, to_plain};
use crate::time::Timestamp;
use crate::variables;

/// Comparison used by the numeric and date operator families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `...Equals` (and, negated, `...NotEquals`).
    Equals,
    /// `...LessThan`.
    LessThan,
    /// `...LessThanEquals`.
    LessThanEquals,
    /// `...GreaterThan`.
    GreaterThan,
    /// `...GreaterThanEquals`.
    GreaterThanEquals,
}

impl Comparison {
    fn holds<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Comparison::Equals => request == policy,
            Comparison::LessThan => request < policy,
            Comparison::LessThanEquals => request <= policy,
            Comparison::GreaterThan => request > policy,
            Comparison::GreaterThanEquals => request >= policy,
        }
    }
}

/// The operator family, with negation factored out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseOperator {
    /// `StringEquals` / `StringNotEquals`.
    StringEquals,
    /// `StringEqualsIgnoreCase` / `StringNotEqualsIgnoreCase`.
    StringEqualsIgnoreCase,
    /// `StringLike` / `StringNotLike` (wildcards).
    StringLike,
    /// `Numeric*`.
    Numeric(Comparison),
    /// `Date*`.
    Date(Comparison),
    /// `Bool`.
    Bool,
    /// `BinaryEquals`.
    BinaryEquals,
    /// `IpAddress` / `NotIpAddress`.
    IpAddress,
    /// `ArnEquals` / `ArnLike` / `ArnNotEquals` / `ArnNotLike`; AWS gives
    /// `ArnEquals` and `ArnLike` the same wildcard semantics.
    Arn,
    /// `Null`.
    Null,
}

/// How a condition compares a multivalued request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    /// `ForAllValues:`
    ForAllValues,
    /// `ForAnyValue:`
    ForAnyValue,
}

/// A parsed condition operator such as `ForAnyValue:StringNotLikeIfExists`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionOperator {
    /// The operator as written in the policy.
    pub name: String,
    /// The operator family.
    pub base: BaseOperator,
    /// True for the `Not` forms.
    pub negated: bool,
    /// True for the `...IfExists` forms.
    pub if_exists: bool,
    /// The `ForAllValues:`/`ForAnyValue:` qualifier, if any.
    pub set: Option<SetQualifier>,
}

const OPERATORS: &[(&str, BaseOperator, bool)] = &[
    ("StringEquals", BaseOperator::StringEquals, false),
    ("StringNotEquals", BaseOperator::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        BaseOperator::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        BaseOperator::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", BaseOperator::StringLike, false),
    ("StringNotLike", BaseOperator::StringLike, true),
    (
        "NumericEquals",
        BaseOperator::Numeric(Comparison::Equals),
        false,
    ),
    (
        "NumericNotEquals",
        BaseOperator::Numeric(Comparison::Equals),
        true,
    ),
    (
        "NumericLessThan",
        BaseOperator::Numeric(Comparison::LessThan),
        false,
    ),
    (
        "NumericLessThanEquals",
        BaseOperator::Numeric(Comparison::LessThanEquals),
        false,
    ),
    (
        "NumericGreaterThan",
        BaseOperator::Numeric(Comparison::GreaterThan),
        false,
    ),
    (
        "NumericGreaterThanEquals",
        BaseOperator::Numeric(Comparison::GreaterThanEquals),
        false,
    ),
    ("DateEquals", BaseOperator::Date(Comparison::Equals), false),
    (
        "DateNotEquals",
        BaseOperator::Date(Comparison::Equals),
        true,
    ),
    (
        "DateLessThan",
        BaseOperator::Date(Comparison::LessThan),
        false,
    ),
    (
        "DateLessThanEquals",
        BaseOperator::Date(Comparison::LessThanEquals),
        false,
    ),
    (
        "DateGreaterThan",
        BaseOperator::Date(Comparison::GreaterThan),
        false,
    ),
    (
        "DateGreaterThanEquals",
        BaseOperator::Date(Comparison::GreaterThanEquals),
        false,
    ),
    ("Bool", BaseOperator::Bool, false),
    ("BinaryEquals", BaseOperator::BinaryEquals, false),
    ("IpAddress", BaseOperator::IpAddress, false),
    ("NotIpAddress", BaseOperator::IpAddress, true),
    ("ArnEquals", BaseOperator::Arn, false),
    ("ArnLike", BaseOperator::Arn, false),
    ("ArnNotEquals", BaseOperator::Arn, true),
    ("ArnNotLike", BaseOperator::Arn, true),
    ("Null", BaseOperator::Null, false),
];

impl FromStr for ConditionOperator {
    type Err = PolicyError;

    /// Parses an operator name. Matching is case-insensitive, which is
    /// lenient but harmless: no two operators differ only by case.
    fn from_str(name: &str) -> Result<Self, PolicyError> {
        let invalid = || PolicyError::InvalidConditionOperator(name.to_string());
        let lower = name.to_ascii_lowercase();
        let (set, rest) = if let Some(r) = lower.strip_prefix("forallvalues:") {
            (Some(SetQualifier::ForAllValues), r)
        } else if let Some(r) = lower.strip_prefix("foranyvalue:") {
            (Some(SetQualifier::ForAnyValue), r)
        } else {
            (None, lower.as_str())
        };
        let (if_exists, rest) = match rest.strip_suffix("ifexists") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (_, base, negated) = OPERATORS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(rest))
            .ok_or_else(invalid)?;
        if *base == BaseOperator::Null && (if_exists || set.is_some()) {
            return Err(invalid());
        }
        Ok(Self {
            name: name.to_string(),
            base: *base,
            negated: *negated,
            if_exists,
            set,
        })
    }
}

/// One key test inside a `Condition` element:
/// `"<operator>": { "<key>": [<values>] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The operator.
    pub operator: ConditionOperator,
    /// The condition key as written (compared case-insensitively).
    pub key: String,
    /// The policy values, ORed.
    pub values: Vec<String>,
}

/// An IPv4 or IPv6 network in CIDR notation; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| ())?
            }
            Some(_) => return Err(()),
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// True when `ip` is inside this network. IPv4-mapped IPv6 addresses are
    /// treated as their IPv4 form, since that is how a dual-stack listener
    /// reports IPv4 clients.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                (u32::from(net) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                (u128::from(net) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

/// Checks, at parse time, that a policy value is readable by its operator.
/// Values with policy variables are checked after substitution instead.
pub(crate) fn validate_value(op: &ConditionOperator, value: &str) -> Result<(), PolicyError> {
    let ok = match op.base {
        BaseOperator::Numeric(_) => parse_number(value).is_some(),
        BaseOperator::Date(_) => Timestamp::parse(value).is_some(),
        BaseOperator::IpAddress => value.parse::<Cidr>().is_ok(),
        BaseOperator::BinaryEquals => base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .is_ok(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(PolicyError::InvalidConditionValue {
            operator: op.name.clone(),
            value: value.to_string(),
        })
    }
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Splits a context value into the single values a set operator iterates.
fn elements(value: &ContextValue) -> Vec<ContextValue> {
    match value {
        ContextValue::Strings(list) => list.iter().cloned().map(ContextValue::String).collect(),
        other => vec![other.clone()],
    }
}

fn as_number(value: &ContextValue) -> Option<f64> {
    match value {
        ContextValue::Number(n) => Some(*n),
        ContextValue::String(s) => parse_number(s),
        ContextValue::Date(t) => Some(t.epoch_seconds() as f64),
        _ => None,
    }
}

fn as_date(value: &ContextValue) -> Option<Timestamp> {
    match value {
        ContextValue::Date(t) => Some(*t),
        ContextValue::Number(n) => Some(Timestamp::from_epoch_millis((n * 1000.0).round() as i64)),
        ContextValue::String(s) => Timestamp::parse(s),
        _ => None,
    }
}

fn as_ip(value: &ContextValue) -> Option<IpAddr> {
    match value {
        ContextValue::Ip(ip) => Some(*ip),
        ContextValue::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bytes(value: &ContextValue) -> Option<Vec<u8>> {
    match value {
        ContextValue::Binary(b) => Some(b.clone()),
        ContextValue::String(s) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .unwrap_or_else(|_| s.as_bytes().to_vec()),
        ),
        _ => None,
    }
}

fn as_string(value: &ContextValue) -> Option<String> {
    value.as_strings().into_iter().next()
}

/// A policy value made ready for comparison (variables substituted).
enum Prepared {
    Tokens(Vec<crate::matching::Token>),
    Number(f64),
    Date(Timestamp),
    Ip(Cidr),
    Bytes(Vec<u8>),
}

fn prepare(
    op: &ConditionOperator,
    value: &str,
    req: &Request<'_>,
    variables_enabled: bool,
) -> Option<Prepared> {
    match op.base {
        BaseOperator::StringEquals
        | BaseOperator::StringEqualsIgnoreCase
        | BaseOperator::StringLike
        | BaseOperator::Arn
        | BaseOperator::Bool => {
            let lookup = |key: &str| req.lookup(key).and_then(|v| v.as_variable());
            variables::compile(value, variables_enabled, &lookup).map(Prepared::Tokens)
        }
        BaseOperator::Numeric(_) => parse_number(value).map(Prepared::Number),
        BaseOperator::Date(_) => Timestamp::parse(value).map(Prepared::Date),
        BaseOperator::IpAddress => value.parse().ok().map(Prepared::Ip),
        BaseOperator::BinaryEquals => base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .map(Prepared::Bytes),
        BaseOperator::Null => None,
    }
}

/// Does one request value satisfy the positive form of the operator against
/// one prepared policy value?
fn matches_one(base: BaseOperator, policy: &Prepared, request: &ContextValue) -> bool {
    match (base, policy) {
        (BaseOperator::StringEquals, Prepared::Tokens(t)) => {
            as_string(request).is_some_and(|r| r == to_plain(t))
        }
        (BaseOperator::StringEqualsIgnoreCase, Prepared::Tokens(t)) => {
            as_string(request).is_some_and(|r| r.to_lowercase() == to_plain(t).to_lowercase())
        }
        (BaseOperator::StringLike, Prepared::Tokens(t)) => {
            as_string(request).is_some_and(|r| matches_tokens(t, &r, false))
        }
        (BaseOperator::Arn, Prepared::Tokens(t)) => {
            as_string(request).is_some_and(|r| arn_matches_tokens(t, &r))
        }
        (BaseOperator::Bool, Prepared::Tokens(t)) => {
            as_string(request).is_some_and(|r| r.eq_ignore_ascii_case(&to_plain(t)))
        }
        (BaseOperator::Numeric(cmp), Prepared::Number(p)) => {
            as_number(request).is_some_and(|r| cmp.holds(r, *p))
        }
        (BaseOperator::Date(cmp), Prepared::Date(p)) => {
            as_date(request).is_some_and(|r| cmp.holds(r, *p))
        }
        (BaseOperator::IpAddress, Prepared::Ip(cidr)) => {
            as_ip(request).is_some_and(|ip| cidr.contains(ip))
        }
        (BaseOperator::BinaryEquals, Prepared::Bytes(p)) => {
            as_bytes(request).is_some_and(|r| &r == p)
        }
        _ => false,
    }
}

impl Condition {
    /// Evaluates this key test against a request.
    ///
    /// `variables_enabled` is true for `2012-10-17` documents. A policy value
    /// whose variable cannot be resolved makes the whole test false, which is
    /// how AWS treats an unresolvable variable in a condition.
    pub fn evaluate(&self, req: &Request<'_>, variables_enabled: bool) -> bool {
        let op = &self.operator;
        let context_value = req.lookup(&self.key);
        let request_values: Vec<ContextValue> =
            context_value.as_ref().map(elements).unwrap_or_default();
        let absent = request_values.is_empty();

        if op.base == BaseOperator::Null {
            return self
                .values
                .iter()
                .any(|v| v.trim().eq_ignore_ascii_case("true") == absent);
        }

        let mut prepared = Vec::with_capacity(self.values.len());
        for value in &self.values {
            match prepare(op, value, req, variables_enabled) {
                Some(p) => prepared.push(p),
                None => return false,
            }
        }
        // Per request value: positive forms need a match with any policy
        // value (OR); negated forms need a match with none (NOR).
        let satisfied = |rv: &ContextValue| {
            let any = prepared.iter().any(|p| matches_one(op.base, p, rv));
            any != op.negated
        };

        match op.set {
            None => {
                if absent {
                    return op.if_exists || op.negated;
                }
                // A single-valued operator applied to several request values
                // matches if any of them does (positive) / none does (negated).
                let any = request_values
                    .iter()
                    .any(|rv| prepared.iter().any(|p| matches_one(op.base, p, rv)));
                any != op.negated
            }
            Some(SetQualifier::ForAllValues) => absent || request_values.iter().all(satisfied),
            Some(SetQualifier::ForAnyValue) => {
                if absent {
                    op.if_exists
                } else {
                    request_values.iter().any(satisfied)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_parse() {
        let op: ConditionOperator = "ForAnyValue:StringNotLikeIfExists".parse().expect("valid");
        assert_eq!(op.base, BaseOperator::StringLike);
        assert!(op.negated && op.if_exists);
        assert_eq!(op.set, Some(SetQualifier::ForAnyValue));
        for bad in [
            "StringEqualz",
            "NullIfExists",
            "ForAllValues:Null",
            "ForSomeValues:StringEquals",
        ] {
            assert!(bad.parse::<ConditionOperator>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("203.0.113.0/24", "203.0.113.7", true),
            ("203.0.113.0/24", "203.0.114.7", false),
            ("203.0.113.7", "203.0.113.7", true),
            ("0.0.0.0/0", "198.51.100.1", true),
            ("2001:DB8:1234:5678::/64", "2001:db8:1234:5678::9", true),
            ("2001:DB8:1234:5678::/64", "2001:db8:1234:5679::9", false),
            ("203.0.113.0/24", "2001:db8::1", false),
            ("203.0.113.0/24", "::ffff:203.0.113.9", true),
            ("::/0", "::1", true),
        ];
        for (net, ip, want) in cases {
            let cidr: Cidr = net.parse().expect("cidr");
            assert_eq!(cidr.contains(ip.parse().expect("ip")), *want, "{net} {ip}");
        }
        for bad in ["203.0.113.0/33", "nonsense", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
