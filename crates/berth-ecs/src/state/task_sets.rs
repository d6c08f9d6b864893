//! Task sets of services with the EXTERNAL deployment controller: stored in
//! their service's record (`service.taskSets`), each running
//! `computedDesiredCount` tasks started by its id (`ecs-svc/…`).

use berth_model::shapes::ecs::Scale;
use berth_model::AwsError;

use crate::error;
use crate::state::keys::Scope;
use crate::state::services::ServiceRecord;

pub(crate) const PRIMARY: &str = "PRIMARY";
pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const DRAINING: &str = "DRAINING";
pub(crate) const STEADY_STATE: &str = "STEADY_STATE";
pub(crate) const STABILIZING: &str = "STABILIZING";
pub(crate) const PERCENT: &str = "PERCENT";

pub(crate) fn not_found() -> AwsError {
    AwsError::bad_request(
        "TaskSetNotFoundException",
        "The specified task set does not exist.",
    )
}

/// A new task set id, as ECS makes them (`ecs-svc/` and 19 digits).
pub(crate) fn new_id() -> String {
    // 19 digits without a leading zero, as ECS's ids are.
    let first = berth_util::ids::random_string(b"123456789", 1);
    let rest = berth_util::ids::random_string(b"0123456789", 18);
    format!("ecs-svc/{first}{rest}")
}

/// The task set's ARN (`task-set/<cluster>/<service>/<id>`).
pub(crate) fn arn(scope: &Scope, cluster: &str, service: &str, id: &str) -> String {
    scope.arn(&format!("task-set/{cluster}/{service}/{id}"))
}

/// The id a reference (an id or an ARN) names.
pub(crate) fn id_of(reference: &str) -> String {
    match reference.find("/ecs-svc/") {
        Some(i) if reference.starts_with("arn:") => reference[i + 1..].to_string(),
        _ => reference.to_string(),
    }
}

/// Checks a scale and fills ECS's default (100 PERCENT).
pub(crate) fn check_scale(scale: Option<Scale>) -> Result<Scale, AwsError> {
    let scale = scale.unwrap_or_default();
    let unit = scale.unit.unwrap_or_else(|| PERCENT.into());
    if unit != PERCENT {
        return Err(error::invalid_parameter(format!(
            "Invalid scale unit '{unit}'. Valid values: PERCENT."
        )));
    }
    let value = scale.value.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&value) || value.is_nan() {
        return Err(error::invalid_parameter(
            "The scale value must be between 0 and 100.",
        ));
    }
    Ok(Scale {
        value: Some(value),
        unit: Some(unit),
    })
}

/// The service's desired count times the task set's scale, rounded up.
pub(crate) fn computed_desired(desired: i32, scale: Option<&Scale>) -> i32 {
    let percent = scale.and_then(|s| s.value).unwrap_or(100.0);
    let exact = f64::from(desired.max(0)) * percent / 100.0;
    // Rounded up, without counting floating-point noise (3 × 33.3 …).
    (exact - 1e-9).ceil().max(0.0) as i32
}

/// The position of the task set `reference` names among the service's.
pub(crate) fn position(record: &ServiceRecord, reference: &str) -> Option<usize> {
    let id = id_of(reference);
    record
        .service
        .task_sets
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .position(|t| t.id.as_deref() == Some(id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_counts_round_up() {
        let pct = |v: f64| Scale {
            value: Some(v),
            unit: Some(PERCENT.into()),
        };
        assert_eq!(computed_desired(10, Some(&pct(50.0))), 5);
        assert_eq!(computed_desired(3, Some(&pct(50.0))), 2);
        assert_eq!(computed_desired(3, Some(&pct(33.3))), 1);
        assert_eq!(computed_desired(1, Some(&pct(1.0))), 1);
        assert_eq!(computed_desired(4, Some(&pct(0.0))), 0);
        assert_eq!(computed_desired(7, None), 7);
    }

    #[test]
    fn ids_and_references() {
        let id = new_id();
        assert!(id.starts_with("ecs-svc/") && id.len() == 27, "{id}");
        assert!(id[8..].bytes().all(|b| b.is_ascii_digit()) && &id[8..9] != "0");
        assert_eq!(
            id_of("arn:aws:ecs:us-east-1:000000000000:task-set/c/s/ecs-svc/123"),
            "ecs-svc/123"
        );
        assert_eq!(id_of("ecs-svc/123"), "ecs-svc/123");
        assert!(check_scale(Some(Scale {
            value: Some(101.0),
            unit: None
        }))
        .is_err());
        assert!(check_scale(Some(Scale {
            value: Some(5.0),
            unit: Some("COUNT".into())
        }))
        .is_err());
    }
}
