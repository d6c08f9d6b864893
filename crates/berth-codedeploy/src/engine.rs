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

use crate::ecs::{EcsDeploymentPlan, EcsDeploymentStatus, EcsDeployments, EcsError, WaitType};
use crate::records::{
    DeploymentRecord, Ending, GroupRecord, CREATED, FAILED, IN_PROGRESS, READY, STOPPED, SUCCEEDED,
};

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
    /// Tell ECS that a wait is over (ContinueDeployment).
    Continue(String, WaitType),
    /// Stop: the wait for ContinueDeployment ran out.
    TimeOut,
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
    Continued(Result<(), EcsError>),
}

/// How long a Ready deployment waits for ContinueDeployment (seconds), when
/// its group's deploymentReadyOption is STOP_DEPLOYMENT.
fn ready_wait(record: &DeploymentRecord, minute: f64) -> Option<f64> {
    let ready = record.blue_green.deployment_ready_option.as_ref()?;
    (ready.action_on_timeout.as_deref() == Some("STOP_DEPLOYMENT"))
        .then(|| f64::from(ready.wait_time_in_minutes.unwrap_or(0).max(0)) * minute)
}

/// The step deployment `record` needs at `now` (`minute`: seconds in a
/// minute of the deployment's waits).
pub fn next_step(record: &DeploymentRecord, now: f64, minute: f64) -> Step {
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
    if let (Some(arn), Some(wait)) = (&record.service_deployment_arn, record.continues.first()) {
        return Step::Continue(arn.clone(), *wait);
    }
    if record.status == READY {
        let since = record.ready_since.unwrap_or(now);
        if ready_wait(record, minute).is_some_and(|wait| now - since >= wait) {
            return Step::TimeOut;
        }
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
        (Step::TimeOut, _) => {
            let mut record = record;
            let minutes = record
                .blue_green
                .deployment_ready_option
                .as_ref()
                .and_then(|r| r.wait_time_in_minutes)
                .unwrap_or(0);
            record.ending = Some(Ending {
                status: STOPPED.into(),
                code: "TIMEOUT".into(),
                message: format!(
                    "The deployment waited {minutes} minutes for traffic rerouting to be \
                     started with ContinueDeployment; production traffic never moved."
                ),
                rollback_message: Some(
                    "The deployment timed out: the replacement task set is removed and the \
                     test listener is back on the original task set."
                        .into(),
                ),
            });
            record.updated_at = now;
            Some(record)
        }
        (Step::Continue(_, wait), Observation::Continued(Ok(()))) => {
            let mut record = record;
            if record.continues.first() == Some(wait) {
                record.continues.remove(0);
            }
            if *wait == WaitType::Ready && record.status == READY {
                record.status = IN_PROGRESS.into();
            }
            record.updated_at = now;
            Some(record)
        }
        (Step::Continue(..), Observation::Continued(Err(EcsError::Unavailable(_)))) => None,
        (Step::Continue(_, wait), Observation::Continued(Err(e))) => {
            let mut record = record;
            if record.continues.first() == Some(wait) {
                record.continues.remove(0);
            }
            record
                .status_messages
                .push(format!("Amazon ECS could not continue the deployment: {e}"));
            record.updated_at = now;
            Some(record)
        }
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
            EcsDeploymentStatus::InProgress {
                stage,
                waiting_to_continue,
            } => {
                let status = if waiting_to_continue {
                    READY
                } else {
                    IN_PROGRESS
                };
                if record.stage.as_deref() == Some(stage.as_str()) && record.status == status {
                    return None;
                }
                let mut record = record;
                if waiting_to_continue && record.status != READY {
                    record.ready_since = Some(now);
                }
                record.status = status.into();
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
    status == CREATED || status == IN_PROGRESS || status == READY
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
    minute: f64,
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
        let step = next_step(&record, now, minute);
        let observation = match &step {
            Step::Nothing => continue,
            Step::Fail(..) | Step::Finish | Step::TimeOut => Observation::None,
            Step::Continue(arn, wait) => {
                Observation::Continued(port.continue_deployment(account, region, arn, *wait).await)
            }
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
