//! Placement constraints and strategies as the API takes them, checked and
//! turned into the scheduler's policy.

use berth_model::shapes::ecs::{PlacementConstraint, PlacementStrategy};
use berth_model::AwsError;

use crate::error;

/// Checks constraints and strategies the way ECS validates them.
pub fn check(
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
) -> Result<(), AwsError> {
    for c in constraints {
        match c.r#type.as_deref() {
            Some("distinctInstance") => {
                if c.expression.as_deref().is_some_and(|e| !e.is_empty()) {
                    return Err(error::invalid_parameter(
                        "Expressions are not supported with the distinctInstance constraint.",
                    ));
                }
            }
            Some("memberOf") => {
                if c.expression.as_deref().is_none_or(str::is_empty) {
                    return Err(error::invalid_parameter(
                        "The memberOf constraint requires an expression.",
                    ));
                }
            }
            other => {
                return Err(error::invalid_parameter(format!(
                "Invalid placement constraint type '{}'. Valid values: distinctInstance, memberOf.",
                other.unwrap_or("")
            )))
            }
        }
    }
    for s in strategies {
        match (s.r#type.as_deref(), s.field.as_deref()) {
            (Some("random"), None) => {}
            (Some("random"), Some(_)) => {
                return Err(error::invalid_parameter(
                    "The random placement strategy does not take a field.",
                ))
            }
            (Some("binpack"), Some(f))
                if f.eq_ignore_ascii_case("cpu") || f.eq_ignore_ascii_case("memory") => {}
            (Some("binpack"), _) => {
                return Err(error::invalid_parameter(
                    "The binpack placement strategy needs the field cpu or memory.",
                ))
            }
            (Some("spread"), Some(f)) if !f.is_empty() => {}
            (Some("spread"), _) => {
                return Err(error::invalid_parameter(
                    "The spread placement strategy needs a field.",
                ))
            }
            (other, _) => {
                return Err(error::invalid_parameter(format!(
                    "Invalid placement strategy type '{}'. Valid values: random, spread, binpack.",
                    other.unwrap_or("")
                )))
            }
        }
    }
    Ok(())
}
