//! Task definition records: revisions, the references that name them
//! (family, `family:revision`, ARN) and how a reference resolves.

use berth_model::shapes::ecs::{Tag, TaskDefinition};
use berth_model::{Arn, AwsError};
use berth_store::ReadView;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::{decode, load};
use crate::state::taskdef;

pub(crate) const ACTIVE: &str = "ACTIVE";

pub(crate) const INACTIVE: &str = "INACTIVE";

pub(crate) const DELETE_IN_PROGRESS: &str = "DELETE_IN_PROGRESS";

/// A stored revision with the tags that belong to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskDefinitionRecord {
    pub task_definition: TaskDefinition,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Splits `family:revision`.
pub(crate) fn parse_family_revision(text: &str) -> Option<(&str, u32)> {
    let (family, revision) = text.rsplit_once(':')?;
    let revision: u32 = revision.parse().ok()?;
    (revision > 0 && !family.is_empty()).then_some((family, revision))
}

/// What a `taskDefinition` parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    /// The latest ACTIVE revision of a family.
    Family(String),
    Revision(String, u32),
}

pub(crate) fn unable_to_describe() -> AwsError {
    error::client("Unable to describe task definition.")
}

/// Parses a family, `family:revision` or a task definition ARN.
pub(crate) fn parse_reference(scope: &Scope, text: &str) -> Result<Reference, AwsError> {
    if text.is_empty() {
        return Err(error::missing("taskDefinition"));
    }
    let body = if text.starts_with("arn:") {
        let arn = Arn::parse(text)
            .filter(|a| a.service == "ecs" && a.resource_type() == "task-definition")
            .ok_or_else(|| error::client(format!("Invalid revision number. Number: {text}")))?;
        if arn.account != scope.account || arn.region != scope.region {
            return Err(unable_to_describe());
        }
        let id = arn.resource_id().to_string();
        let (family, revision) = parse_family_revision(&id)
            .ok_or_else(|| error::client("Invalid revision number. Number: ".to_string() + &id))?;
        return Ok(Reference::Revision(family.to_string(), revision));
    } else {
        text
    };
    match body.rsplit_once(':') {
        Some((family, revision)) => {
            let revision: u32 = revision.parse().ok().filter(|r| *r > 0).ok_or_else(|| {
                error::client(format!("Invalid revision number. Number: {revision}"))
            })?;
            taskdef::check_family(family)?;
            Ok(Reference::Revision(family.to_string(), revision))
        }
        None => {
            taskdef::check_family(body)?;
            Ok(Reference::Family(body.to_string()))
        }
    }
}

/// Finds the revision a reference names; family-only references resolve to the
/// latest ACTIVE revision.
pub(crate) fn find(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    reference: &Reference,
) -> Result<Option<(TaskDefinitionRecord, u64)>, AwsError> {
    match reference {
        Reference::Revision(family, revision) => {
            load(view, &scope.task_definition(family, *revision))
        }
        Reference::Family(family) => {
            let revisions = view.range(&scope.task_definition_family(family), None, usize::MAX);
            for kv in revisions.iter().rev() {
                let record: TaskDefinitionRecord = decode(kv)?;
                if record.task_definition.status.as_deref() == Some(ACTIVE) {
                    return Ok(Some((record, kv.mod_revision)));
                }
            }
            Ok(None)
        }
    }
}
