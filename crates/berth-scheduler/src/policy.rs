//! Placement strategies and constraints, checked the way ECS checks them.

use crate::expr::{parse_expression, Expression, ParseError};

/// ECS accepts at most this many strategies per task or service.
pub const MAX_STRATEGIES: usize = 5;
/// ECS accepts at most this many constraints per task or service.
pub const MAX_CONSTRAINTS: usize = 10;
/// The longest `memberOf` expression ECS accepts.
pub const MAX_EXPRESSION_CHARS: usize = 2000;

/// The resource `binpack` packs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinpackField {
    Cpu,
    Memory,
}

/// One placement strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The instance with the least remaining CPU or memory that still fits.
    Binpack(BinpackField),
    /// The instance whose value of the field has the fewest tasks of the
    /// task's group: `instanceId`, `host` (the EC2 instance) or
    /// `attribute:<name>` (instances without the attribute count as one more
    /// value). [`parse_strategy`] normalizes the field to one of these forms.
    Spread(String),
    /// Uniformly among the candidates the strategies before it left tied.
    Random,
}

/// One placement constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// No instance runs two tasks of the task's group (tasks already running
    /// there count).
    DistinctInstance,
    /// Only instances the expression selects.
    MemberOf(Expression),
}

/// Strategies and constraints for one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Applied in order, each breaking the ties of the ones before; empty
    /// means [`default_strategies`].
    pub strategies: Vec<Strategy>,
    /// All must hold.
    pub constraints: Vec<Constraint>,
}

impl Policy {
    /// A policy within ECS's limits on the number of strategies and
    /// constraints.
    pub fn new(
        strategies: Vec<Strategy>,
        constraints: Vec<Constraint>,
    ) -> Result<Policy, PolicyError> {
        if strategies.len() > MAX_STRATEGIES {
            return Err(PolicyError::Invalid(format!(
                "At most {MAX_STRATEGIES} placement strategies are allowed."
            )));
        }
        if constraints.len() > MAX_CONSTRAINTS {
            return Err(PolicyError::Invalid(format!(
                "At most {MAX_CONSTRAINTS} placement constraints are allowed."
            )));
        }
        Ok(Policy {
            strategies,
            constraints,
        })
    }
}

/// A strategy or constraint ECS would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The message to return as `InvalidParameterException`.
    #[error("{0}")]
    Invalid(String),
    /// A `memberOf` expression that does not parse.
    #[error("Invalid memberOf expression: {0}")]
    Expression(ParseError),
}

/// The strategies used when a request gives none: spread across
/// Availability Zones (`attribute:ecs.availability-zone`), then across
/// instances (`instanceId`). ECS documents the zone spread as the default
/// for services, and this pair as its example of an even spread over zones
/// and the instances within each; it describes RunTask's own default as
/// distributing tasks randomly across the cluster, of which this is the
/// deterministic, evenly spread counterpart (pass `random` for ECS's).
pub fn default_strategies() -> Vec<Strategy> {
    vec![
        Strategy::Spread("attribute:ecs.availability-zone".to_string()),
        Strategy::Spread("instanceId".to_string()),
    ]
}

/// A strategy from the API's `type` and `field`: `binpack` takes `cpu` or
/// `memory`, `spread` any field (`instanceId`, `host`, `attribute:<name>`,
/// or a bare attribute name), `random` none.
pub fn parse_strategy(kind: &str, field: Option<&str>) -> Result<Strategy, PolicyError> {
    let field = field.filter(|f| !f.is_empty());
    match kind {
        "random" => match field {
            None => Ok(Strategy::Random),
            Some(_) => Err(PolicyError::Invalid(
                "The random placement strategy does not take a field.".to_string(),
            )),
        },
        "binpack" => match field {
            Some(f) if f.eq_ignore_ascii_case("cpu") => Ok(Strategy::Binpack(BinpackField::Cpu)),
            Some(f) if f.eq_ignore_ascii_case("memory") => {
                Ok(Strategy::Binpack(BinpackField::Memory))
            }
            _ => Err(PolicyError::Invalid(
                "The binpack placement strategy needs the field cpu or memory.".to_string(),
            )),
        },
        "spread" => {
            let Some(f) = field else {
                return Err(PolicyError::Invalid(
                    "The spread placement strategy needs a field.".to_string(),
                ));
            };
            let normalized = if f.eq_ignore_ascii_case("instanceId") {
                "instanceId".to_string()
            } else if f.eq_ignore_ascii_case("host") {
                "host".to_string()
            } else {
                let name = match f.get(..10) {
                    Some(prefix) if prefix.eq_ignore_ascii_case("attribute:") => &f[10..],
                    _ => f,
                };
                if name.is_empty() {
                    return Err(PolicyError::Invalid(
                        "The spread placement strategy needs an attribute name after 'attribute:'."
                            .to_string(),
                    ));
                }
                format!("attribute:{name}")
            };
            Ok(Strategy::Spread(normalized))
        }
        other => Err(PolicyError::Invalid(format!(
            "Invalid placement strategy type '{other}'. Valid values: random, spread, binpack."
        ))),
    }
}

/// A constraint from the API's `type` and `expression`.
pub fn parse_constraint(kind: &str, expression: Option<&str>) -> Result<Constraint, PolicyError> {
    let expression = expression.filter(|e| !e.is_empty());
    match kind {
        "distinctInstance" => match expression {
            None => Ok(Constraint::DistinctInstance),
            Some(_) => Err(PolicyError::Invalid(
                "Expressions are not supported with the distinctInstance constraint.".to_string(),
            )),
        },
        "memberOf" => {
            let Some(e) = expression else {
                return Err(PolicyError::Invalid(
                    "The memberOf constraint requires an expression.".to_string(),
                ));
            };
            if e.chars().count() > MAX_EXPRESSION_CHARS {
                return Err(PolicyError::Invalid(format!(
                    "A memberOf expression can be at most {MAX_EXPRESSION_CHARS} characters."
                )));
            }
            parse_expression(e)
                .map(Constraint::MemberOf)
                .map_err(PolicyError::Expression)
        }
        other => Err(PolicyError::Invalid(format!(
            "Invalid placement constraint type '{other}'. Valid values: distinctInstance, memberOf."
        ))),
    }
}
