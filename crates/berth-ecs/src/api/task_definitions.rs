//! Task definitions: RegisterTaskDefinition, DescribeTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies, DeregisterTaskDefinition,
//! DeleteTaskDefinitions.
//!
//! Each revision is its own record; a per-family counter hands out revision
//! numbers inside the same mutation that stores the revision, so numbers are
//! never reused, also after deregistration or deletion.

use berth_model::shapes::ecs::{
    DeleteTaskDefinitionsRequest, DeleteTaskDefinitionsResponse, DeregisterTaskDefinitionRequest,
    DeregisterTaskDefinitionResponse, DescribeTaskDefinitionRequest,
    DescribeTaskDefinitionResponse, Failure, ListTaskDefinitionFamiliesRequest,
    ListTaskDefinitionFamiliesResponse, ListTaskDefinitionsRequest, ListTaskDefinitionsResponse,
    RegisterTaskDefinitionRequest, RegisterTaskDefinitionResponse,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::{decode, encode, load};
use crate::state::task_definitions::{
    find, parse_reference, unable_to_describe, Reference, TaskDefinitionRecord, ACTIVE,
    DELETE_IN_PROGRESS, INACTIVE,
};
use crate::state::{pagination, tags, taskdef};

/// Per family: the last revision number handed out and how many are ACTIVE.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FamilyRecord {
    last_revision: u32,
    active_revisions: u32,
}

pub(crate) async fn register(
    store: &dyn Store,
    scope: &Scope,
    caller_arn: &str,
    now: f64,
    input: RegisterTaskDefinitionRequest,
) -> Result<RegisterTaskDefinitionResponse, AwsError> {
    if input.container_definitions.is_none() {
        return Err(error::client("Container list cannot be empty."));
    }
    let mut definition = taskdef::normalize(&input)?;
    let tags = input.tags.unwrap_or_default();
    tags::check_new(&tags, std::iter::empty())?;

    let family = definition.family.clone().unwrap_or_default();
    definition.status = Some(ACTIVE.into());
    definition.registered_by = Some(caller_arn.to_string());
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            let counter_key = scope_owned.family_counter(&family);
            let mut counter = load::<FamilyRecord>(view, &counter_key)?
                .map(|(c, _)| c)
                .unwrap_or_default();
            counter.last_revision += 1;
            counter.active_revisions += 1;
            let revision = counter.last_revision;
            let mut definition = definition.clone();
            definition.revision = Some(revision as i32);
            definition.task_definition_arn =
                Some(scope_owned.arn(&format!("task-definition/{family}:{revision}")));
            definition.registered_at = Some(now);
            let record = TaskDefinitionRecord {
                task_definition: definition,
                tags: tags.clone(),
            };
            let ops = vec![
                Op::put(counter_key, encode(&counter)?),
                Op::put(
                    scope_owned.task_definition(&family, revision),
                    encode(&record)?,
                ),
            ];
            Ok::<_, AwsError>((ops, record))
        })
        .await
        .map_err(error::store)??;
    Ok(RegisterTaskDefinitionResponse {
        tags: (!record.tags.is_empty()).then_some(record.tags),
        task_definition: Some(record.task_definition),
    })
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    input: DescribeTaskDefinitionRequest,
) -> Result<DescribeTaskDefinitionResponse, AwsError> {
    let text = input
        .task_definition
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let include_tags = error::include_tags(input.include)?;
    let reference = parse_reference(scope, &text)?;
    let (record, _) = find(view, scope, &reference)?.ok_or_else(unable_to_describe)?;
    Ok(DescribeTaskDefinitionResponse {
        task_definition: Some(record.task_definition),
        tags: include_tags.then_some(record.tags),
    })
}

fn check_status_filter(status: Option<&str>) -> Result<&str, AwsError> {
    match status.unwrap_or(ACTIVE) {
        s @ (ACTIVE | INACTIVE | DELETE_IN_PROGRESS) => Ok(s),
        other => Err(error::invalid_parameter(format!(
            "Invalid status '{other}'. Valid values: ACTIVE, INACTIVE, DELETE_IN_PROGRESS."
        ))),
    }
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListTaskDefinitionsRequest,
) -> Result<ListTaskDefinitionsResponse, AwsError> {
    let limit = pagination::page_size(input.max_results, 100)?;
    let status = check_status_filter(input.status.as_deref())?;
    let descending = match input.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid sort '{other}'. Valid values: ASC, DESC."
            )))
        }
    };
    // familyPrefix names one family exactly, as ECS documents.
    let prefix = match input.family_prefix.as_deref().filter(|f| !f.is_empty()) {
        Some(family) => {
            taskdef::check_family(family)?;
            scope.task_definition_family(family)
        }
        None => scope.task_definitions(),
    };
    let root = scope.task_definitions();
    let after = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(format!("{root}{}", pagination::decode(token)?)),
        None => None,
    };
    let mut matching: Vec<(String, String)> = Vec::new();
    for kv in view.range(&prefix, None, usize::MAX) {
        let record: TaskDefinitionRecord = decode(&kv)?;
        if record.task_definition.status.as_deref() == Some(status) {
            matching.push((
                kv.key,
                record
                    .task_definition
                    .task_definition_arn
                    .unwrap_or_default(),
            ));
        }
    }
    if descending {
        matching.reverse();
    }
    let start = match &after {
        None => 0,
        Some(after) => matching
            .iter()
            .position(|(key, _)| if descending { key < after } else { key > after })
            .unwrap_or(matching.len()),
    };
    let page: Vec<&(String, String)> = matching.iter().skip(start).take(limit).collect();
    let next_token = if start + page.len() < matching.len() {
        page.last()
            .map(|(key, _)| pagination::encode(&key[root.len()..]))
    } else {
        None
    };
    Ok(ListTaskDefinitionsResponse {
        task_definition_arns: Some(page.into_iter().map(|(_, arn)| arn.clone()).collect()),
        next_token,
    })
}

pub(crate) fn list_families(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListTaskDefinitionFamiliesRequest,
) -> Result<ListTaskDefinitionFamiliesResponse, AwsError> {
    let limit = pagination::page_size(input.max_results, 100)?;
    let status = match input.status.as_deref() {
        None => ACTIVE,
        Some(s @ (ACTIVE | INACTIVE | "ALL")) => s,
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid status '{other}'. Valid values: ACTIVE, INACTIVE, ALL."
            )))
        }
    };
    let root = scope.family_counters();
    let name_prefix = input.family_prefix.unwrap_or_default();
    let prefix = format!("{root}{name_prefix}");
    let mut after = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(format!("{root}{}", pagination::decode(token)?)),
        None => None,
    };
    let mut families = Vec::new();
    let mut more = false;
    'scan: loop {
        let chunk = view.range(&prefix, after.as_deref(), 256);
        if chunk.is_empty() {
            break;
        }
        after = chunk.last().map(|kv| kv.key.clone());
        for kv in chunk {
            let counter: FamilyRecord = decode(&kv)?;
            let wanted = match status {
                ACTIVE => counter.active_revisions > 0,
                INACTIVE => counter.active_revisions == 0,
                _ => true,
            };
            if !wanted {
                continue;
            }
            if families.len() == limit {
                more = true;
                break 'scan;
            }
            families.push(kv.key[root.len()..].to_string());
        }
    }
    let next_token = if more {
        families.last().map(|f| pagination::encode(f))
    } else {
        None
    };
    Ok(ListTaskDefinitionFamiliesResponse {
        families: Some(families),
        next_token,
    })
}

pub(crate) async fn deregister(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: DeregisterTaskDefinitionRequest,
) -> Result<DeregisterTaskDefinitionResponse, AwsError> {
    let text = input
        .task_definition
        .ok_or_else(|| error::missing("taskDefinition"))?;
    let (family, revision) = match parse_reference(scope, &text)? {
        Reference::Revision(f, r) => (f, r),
        Reference::Family(_) => {
            return Err(error::client(
                "Invalid revision number. Deregistering a task definition needs family:revision or a full ARN.",
            ))
        }
    };
    let scope_owned = scope.clone();
    let (_, definition) = store
        .update(move |view| {
            let key = scope_owned.task_definition(&family, revision);
            let (mut record, _) = load::<TaskDefinitionRecord>(view, &key)?
                .ok_or_else(|| error::client("The specified task definition does not exist."))?;
            match record.task_definition.status.as_deref() {
                Some(ACTIVE) => {}
                // Deregistering twice answers with the revision as it is.
                _ => return Ok((Vec::new(), record.task_definition)),
            }
            record.task_definition.status = Some(INACTIVE.into());
            record.task_definition.deregistered_at = Some(now);
            let counter_key = scope_owned.family_counter(&family);
            let mut counter = load::<FamilyRecord>(view, &counter_key)?
                .map(|(c, _)| c)
                .unwrap_or_default();
            counter.active_revisions = counter.active_revisions.saturating_sub(1);
            let ops = vec![
                Op::put(key, encode(&record)?),
                Op::put(counter_key, encode(&counter)?),
            ];
            Ok::<_, AwsError>((ops, record.task_definition))
        })
        .await
        .map_err(error::store)??;
    Ok(DeregisterTaskDefinitionResponse {
        task_definition: Some(definition),
    })
}

pub(crate) async fn delete(
    store: &dyn Store,
    scope: &Scope,
    now: f64,
    input: DeleteTaskDefinitionsRequest,
) -> Result<DeleteTaskDefinitionsResponse, AwsError> {
    let references = input
        .task_definitions
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("taskDefinitions"))?;
    if references.len() > 10 {
        return Err(error::invalid_parameter(
            "DeleteTaskDefinitions accepts at most 10 task definitions per call.",
        ));
    }
    let scope_owned = scope.clone();
    let (_, (deleted, failures)) = store
        .update(move |view| {
            let mut ops = Vec::new();
            let mut deleted = Vec::new();
            let mut failures = Vec::new();
            for text in &references {
                let failure = |reason: &str| Failure {
                    arn: Some(text.clone()),
                    reason: Some(reason.to_string()),
                    detail: None,
                };
                let (family, revision) = match parse_reference(&scope_owned, text) {
                    Ok(Reference::Revision(f, r)) => (f, r),
                    Ok(Reference::Family(_)) | Err(_) => {
                        failures.push(failure("The specified task definition identifier is invalid. Specify a valid name or ARN and try again."));
                        continue;
                    }
                };
                let key = scope_owned.task_definition(&family, revision);
                let Some((mut record, _)) = load::<TaskDefinitionRecord>(view, &key)? else {
                    failures.push(failure("The specified task definition does not exist. Specify a valid account, family, revision and try again."));
                    continue;
                };
                match record.task_definition.status.as_deref() {
                    Some(ACTIVE) => {
                        failures.push(failure("The specified task definition is still in ACTIVE status. Please deregister the target and try again."));
                        continue;
                    }
                    Some(DELETE_IN_PROGRESS) => {}
                    _ => {
                        record.task_definition.status = Some(DELETE_IN_PROGRESS.into());
                        record.task_definition.delete_requested_at = Some(now);
                        ops.push(Op::put(key, encode(&record)?));
                    }
                }
                deleted.push(record.task_definition);
            }
            Ok::<_, AwsError>((ops, (deleted, failures)))
        })
        .await
        .map_err(error::store)??;
    Ok(DeleteTaskDefinitionsResponse {
        task_definitions: Some(deleted),
        failures: Some(failures),
    })
}
