//! Placement constraints and strategies as the API takes them, checked and
//! turned into the scheduler's policy.

use berth_model::shapes::ecs::{PlacementConstraint, PlacementStrategy, TaskDefinition};
use berth_model::AwsError;
use berth_scheduler::{Constraint, Policy, PolicyError, Strategy};

use crate::error;

fn invalid(e: PolicyError) -> AwsError {
    error::invalid_parameter(e.to_string())
}

/// Checks constraints and strategies the way ECS validates them and builds
/// the scheduler's policy (empty strategies: the scheduler's default).
pub(crate) fn policy(
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
) -> Result<Policy, AwsError> {
    let strategies = strategies
        .iter()
        .map(|s| {
            berth_scheduler::parse_strategy(s.r#type.as_deref().unwrap_or(""), s.field.as_deref())
        })
        .collect::<Result<Vec<Strategy>, _>>()
        .map_err(invalid)?;
    let constraints = constraints
        .iter()
        .map(|c| {
            berth_scheduler::parse_constraint(
                c.r#type.as_deref().unwrap_or(""),
                c.expression.as_deref(),
            )
        })
        .collect::<Result<Vec<Constraint>, _>>()
        .map_err(invalid)?;
    Policy::new(strategies, constraints).map_err(invalid)
}

/// Checks constraints and strategies without keeping the policy.
pub(crate) fn check(
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
) -> Result<(), AwsError> {
    policy(constraints, strategies).map(|_| ())
}

/// Adds the task definition's `memberOf` constraints to a request's policy:
/// ECS applies both.
pub(crate) fn with_definition(
    base: &Policy,
    definition: &TaskDefinition,
) -> Result<Policy, AwsError> {
    let mut policy = base.clone();
    for c in definition.placement_constraints.iter().flatten() {
        let constraint = berth_scheduler::parse_constraint(
            c.r#type.as_deref().unwrap_or(""),
            c.expression.as_deref(),
        )
        .map_err(|e| {
            error::invalid_parameter(format!("Task definition placement constraint: {e}"))
        })?;
        policy.constraints.push(constraint);
    }
    Ok(policy)
}
