//! The deployment engine: moves deployments along, one step per pass.
//!
//! The decisions are pure: [`next_step`] says what a deployment needs from
//! ECS, [`apply`] turns what ECS answered into the deployment's next record.
//! [`run`] reads the records, asks the port, and writes each change only if
//! the record is still the one it read (a concurrent StopDeployment wins;
//! the next pass repeats the step, which the port makes harmless).

use std::sync::Arc;

use berth_model::shapes::codedeploy as sh;
use berth_store::{Op, Store, StoreError, StoreExt};

use crate::ecs::{EcsDeploymentPlan, EcsDeploymentStatus, EcsDeployments, EcsError};
use crate::records::{DeploymentRecord, GroupRecord, CREATED, FAILED, IN_PROGRESS, SUCCEEDED};

/// What a deployment needs now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing (finished).
    Nothing,
    /// Fail at once (code, message): the revision cannot be deployed.
    Fail(String, String),
    /// Start ECS's side.
    Start(Box<EcsDeploymentPlan>),
    /// Ask ECS where its deployment stands.
    Poll(String),
    /// Tell ECS to stop (and roll back) its deployment.
    Stop(String),
    /// End without asking ECS (nothing was started).
    Finish,
}

/// What ECS answered to a [`Step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    None,
    Started(Result<String, EcsError>),
    Status(Result<EcsDeploymentStatus, EcsError>),
    Stopped(Result<(), EcsError>),
}

/// The step deployment `record` needs.
pub fn next_step(record: &DeploymentRecord) -> Step {
    if record.is_done() {
        return Step::Nothing;
    }
    if record.ending.is_some() {
        return match &record.service_deployment_arn {
            Some(arn) => Step::Stop(arn.clone()),
            None => Step::Finish,
        };
    }
    if let Some((code, message)) = &record.invalid {
        return Step::Fail(code.clone(), message.clone());
    }
    match (&record.service_deployment_arn, &record.plan) {
        (Some(arn), _) => Step::Poll(arn.clone()),
        (None, Some(plan)) => Step::Start(Box::new(plan.clone())),
        (None, None) => Step::Fail(
            "INVALID_REVISION".into(),
            "The deployment has no revision to deploy.".into(),
        ),
    }
}

fn error(code: &str, message: &str) -> Option<sh::ErrorInformation> {
    Some(sh::ErrorInformation {
        code: Some(code.into()),
        message: Some(message.into()),
    })
}

fn finish(mut record: DeploymentRecord, status: &str, now: f64) -> DeploymentRecord {
    record.status = status.to_string();
    record.start_time.get_or_insert(now);
    record.complete_time = Some(now);
    record.updated_at = now;
    record
}

/// The error code of an ECS refusal.
fn ecs_code(e: &EcsError) -> &'static str {
    match e {
        EcsError::ServiceNotFound(_) | EcsError::NotCodeDeploy(_) => "INVALID_ECS_SERVICE",
        EcsError::Invalid(_) | EcsError::Unavailable(_) => "ECS_UPDATE_ERROR",
    }
}

fn fail(record: DeploymentRecord, code: &str, message: &str, now: f64) -> DeploymentRecord {
    let mut record = finish(record, FAILED, now);
    record.error = error(code, message);
    record
}

fn end(record: DeploymentRecord, now: f64, stop_error: Option<&EcsError>) -> DeploymentRecord {
    let Some(ending) = record.ending.clone() else {
        return record;
    };
    let mut record = finish(record, &ending.status, now);
    record.error = error(&ending.code, &ending.message);
    record.ending = None;
    match stop_error {
        None => record.rollback_message = ending.rollback_message,
        Some(e) => record
            .status_messages
            .push(format!("Amazon ECS could not stop the deployment: {e}")),
    }
    record
}

/// The record after `step` and what ECS answered; `None` when nothing
/// changes (ECS unavailable: the next pass tries again).
pub fn apply(
    record: &DeploymentRecord,
    step: &Step,
    observation: Observation,
    now: f64,
) -> Option<DeploymentRecord> {
    let record = record.clone();
    match (step, observation) {
        (Step::Nothing, _) => None,
        (Step::Fail(code, message), _) => Some(fail(record, code, message, now)),
        (Step::Finish, _) => Some(end(record, now, None)),
        (Step::Start(_), Observation::Started(Ok(arn))) => {
            let mut record = record;
            record.service_deployment_arn = Some(arn);
            record.status = IN_PROGRESS.into();
            record.start_time = Some(now);
            record.updated_at = now;
            Some(record)
        }
        (Step::Start(_), Observation::Started(Err(EcsError::Unavailable(_)))) => None,
        (Step::Start(_), Observation::Started(Err(e))) => {
            Some(fail(record, ecs_code(&e), &e.to_string(), now))
        }
        (Step::Poll(_), Observation::Status(Ok(status))) => match status {
            EcsDeploymentStatus::InProgress { stage } => {
                if record.stage.as_deref() == Some(stage.as_str()) {
                    return None;
                }
                let mut record = record;
                record.stage = Some(stage);
                record.updated_at = now;
                Some(record)
            }
            EcsDeploymentStatus::Succeeded => Some(finish(record, SUCCEEDED, now)),
            EcsDeploymentStatus::RolledBack { reason } => {
                let mut record = fail(record, "ECS_UPDATE_ERROR", &reason, now);
                record.rollback_message = Some(format!(
                    "Amazon ECS rolled the deployment back: production traffic is on the \
                     original task set. {reason}"
                ));
                Some(record)
            }
            EcsDeploymentStatus::Failed { reason } => {
                if GroupRecord::rolls_back_on_failure(record.auto_rollback.as_ref()) {
                    let mut record = record;
                    record.ending = Some(crate::records::Ending {
                        status: FAILED.into(),
                        code: "ECS_UPDATE_ERROR".into(),
                        message: reason,
                        rollback_message: Some(
                            "Automatic rollback after a deployment failure: production \
                             traffic is back on the original task set."
                                .into(),
                        ),
                    });
                    record.updated_at = now;
                    Some(record)
                } else {
                    Some(fail(record, "ECS_UPDATE_ERROR", &reason, now))
                }
            }
        },
        (Step::Poll(_), Observation::Status(Err(EcsError::Unavailable(_)))) => None,
        (Step::Poll(_), Observation::Status(Err(e))) => {
            Some(fail(record, ecs_code(&e), &e.to_string(), now))
        }
        (Step::Stop(_), Observation::Stopped(Ok(()))) => Some(end(record, now, None)),
        (Step::Stop(_), Observation::Stopped(Err(EcsError::Unavailable(_)))) => None,
        (Step::Stop(_), Observation::Stopped(Err(e))) => Some(end(record, now, Some(&e))),
        // An observation that does not answer the step: nothing learnt.
        _ => None,
    }
}

/// Whether `status` is one a deployment can still move from.
pub fn is_active(status: &str) -> bool {
    status == CREATED || status == IN_PROGRESS
}

/// `(account, region)` of a deployment key `codedeploy/<a>/<r>/deployments/<id>`.
fn scope(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.split('/');
    let _ = parts.next()?;
    let account = parts.next()?;
    let region = parts.next()?;
    (parts.next()? == "deployments").then_some((account, region))
}

/// One pass over every unfinished deployment. Answers how many records it
/// changed.
pub async fn run(
    store: &Arc<dyn Store>,
    port: &dyn EcsDeployments,
    now: f64,
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for kv in store.range("codedeploy/", None, usize::MAX) {
        let Some((account, region)) = scope(&kv.key) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<DeploymentRecord>(&kv.value) else {
            tracing::error!(key = %kv.key, "undecodable CodeDeploy deployment record");
            continue;
        };
        let step = next_step(&record);
        let observation = match &step {
            Step::Nothing => continue,
            Step::Fail(..) | Step::Finish => Observation::None,
            Step::Start(plan) => Observation::Started(port.start(account, region, plan).await),
            Step::Poll(arn) => Observation::Status(port.status(account, region, arn)),
            Step::Stop(arn) => Observation::Stopped(port.stop(account, region, arn).await),
        };
        let Some(next) = apply(&record, &step, observation, now) else {
            continue;
        };
        let Ok(value) = serde_json::to_vec(&next) else {
            continue;
        };
        let (key, read_revision) = (kv.key.clone(), kv.mod_revision);
        let outcome = store
            .update(move |view| {
                // Only over the record this pass read.
                if view.get(&key).map(|kv| kv.mod_revision) != Some(read_revision) {
                    return Err(());
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await?;
        if outcome.is_ok() {
            changed += 1;
            tracing::info!(deployment = %next.id, status = %next.status, "CodeDeploy deployment moved");
        }
    }
    Ok(changed)
}
