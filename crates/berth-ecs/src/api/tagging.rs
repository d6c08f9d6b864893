//! TagResource, UntagResource and ListTagsForResource for every taggable ECS
//! resource.

use berth_model::shapes::ecs::{
    Cluster, ListTagsForResourceRequest, ListTagsForResourceResponse, Tag, TagResourceRequest,
    TagResourceResponse, UntagResourceRequest, UntagResourceResponse,
};
use berth_model::tags as rules;
use berth_model::{Arn, AwsError};
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::state::instances::InstanceRecord;
use crate::state::keys::Scope;
use crate::state::records::{encode, load};
use crate::state::services::ServiceRecord;
use crate::state::tags::{check_new, merge};
use crate::state::task_definitions::{self, TaskDefinitionRecord};
use crate::state::tasks::TaskRecord;
use crate::state::{clusters, index};

/// A taggable resource named by an ARN.
enum Target {
    Cluster { key: String, name: String },
    TaskDefinition { key: String },
    Task { key: String },
    ContainerInstance { key: String },
    Service { key: String },
}

/// Splits `<cluster>/<id>` of task and container-instance ARNs.
fn cluster_and_id<'a>(text: &str, rest: &'a str) -> Result<(&'a str, &'a str), AwsError> {
    let (cluster, id) = rest
        .split_once('/')
        .ok_or_else(|| error::invalid_parameter(format!("Invalid resource ARN: {text}")))?;
    clusters::check_name(cluster)?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(error::invalid_parameter(format!(
            "Invalid resource ARN: {text}"
        )));
    }
    Ok((cluster, id))
}

fn target(scope: &Scope, resource_arn: Option<&str>) -> Result<Target, AwsError> {
    let text = resource_arn
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing("resourceArn"))?;
    let arn = Arn::parse(text)
        .filter(|a| a.service == "ecs")
        .ok_or_else(|| error::invalid_parameter(format!("Invalid resource ARN: {text}")))?;
    if arn.account != scope.account || arn.region != scope.region {
        return Err(error::invalid_parameter(format!(
            "The resource ARN {text} is not in this account and region."
        )));
    }
    match arn.resource_type() {
        "cluster" => {
            let name = arn.resource_id().to_string();
            clusters::check_name(&name)?;
            Ok(Target::Cluster {
                key: scope.cluster(&name),
                name,
            })
        }
        "task-definition" => {
            let (family, revision) = task_definitions::parse_family_revision(arn.resource_id())
                .ok_or_else(|| error::invalid_parameter(format!("Invalid resource ARN: {text}")))?;
            Ok(Target::TaskDefinition {
                key: scope.task_definition(family, revision),
            })
        }
        "task" => {
            let (cluster, id) = cluster_and_id(text, arn.resource_id())?;
            Ok(Target::Task {
                key: scope.task(cluster, id),
            })
        }
        "service" => {
            let (cluster, name) = cluster_and_id(text, arn.resource_id())?;
            Ok(Target::Service {
                key: scope.service(cluster, name),
            })
        }
        "container-instance" => {
            let (cluster, id) = cluster_and_id(text, arn.resource_id())?;
            Ok(Target::ContainerInstance {
                key: scope.instance(cluster, id),
            })
        }
        other => Err(error::invalid_parameter(format!(
            "Tagging ECS resources of type '{other}' is not supported by Berth yet."
        ))),
    }
}

fn task_definition_missing() -> AwsError {
    error::client("Unable to describe task definition.")
}

fn resource_missing() -> AwsError {
    error::invalid_parameter("The specified resource could not be found.")
}

/// Reads the tags of a resource.
fn read_tags(view: &dyn ReadView, scope: &Scope, target: &Target) -> Result<Vec<Tag>, AwsError> {
    match target {
        Target::Cluster { name, .. } => {
            let (cluster, _) = clusters::require_active(view, scope, name)?;
            Ok(cluster.tags.unwrap_or_default())
        }
        Target::TaskDefinition { key } => {
            let (record, _) =
                load::<TaskDefinitionRecord>(view, key)?.ok_or_else(task_definition_missing)?;
            Ok(record.tags)
        }
        Target::Task { key } => {
            let (record, _) = load::<TaskRecord>(view, key)?.ok_or_else(resource_missing)?;
            Ok(record.task.tags.unwrap_or_default())
        }
        Target::ContainerInstance { key } => {
            let (record, _) = load::<InstanceRecord>(view, key)?.ok_or_else(resource_missing)?;
            Ok(record.instance.tags.unwrap_or_default())
        }
        Target::Service { key } => {
            let (record, _) = load::<ServiceRecord>(view, key)?.ok_or_else(resource_missing)?;
            Ok(record.service.tags.unwrap_or_default())
        }
    }
}

/// Rewrites a resource's tags inside one mutation.
fn write_tags(
    view: &dyn ReadView,
    scope: &Scope,
    target: &Target,
    change: &dyn Fn(&mut Vec<Tag>) -> Result<(), AwsError>,
) -> Result<Vec<Op>, AwsError> {
    match target {
        Target::Cluster { key, name } => {
            let (mut cluster, _): (Cluster, u64) = clusters::require_active(view, scope, name)?;
            change(cluster.tags.get_or_insert_with(Vec::new))?;
            Ok(vec![Op::put(key.clone(), encode(&cluster)?)])
        }
        Target::TaskDefinition { key } => {
            let (mut record, _) =
                load::<TaskDefinitionRecord>(view, key)?.ok_or_else(task_definition_missing)?;
            change(&mut record.tags)?;
            Ok(vec![Op::put(key.clone(), encode(&record)?)])
        }
        Target::Task { key } => {
            let (mut record, _) = load::<TaskRecord>(view, key)?.ok_or_else(resource_missing)?;
            change(record.task.tags.get_or_insert_with(Vec::new))?;
            // Tasks are written with their index entries, always.
            index::put_task(scope, &record)
        }
        Target::ContainerInstance { key } => {
            let (mut record, _) =
                load::<InstanceRecord>(view, key)?.ok_or_else(resource_missing)?;
            change(record.instance.tags.get_or_insert_with(Vec::new))?;
            Ok(vec![Op::put(key.clone(), encode(&record)?)])
        }
        Target::Service { key } => {
            let (mut record, _) = load::<ServiceRecord>(view, key)?.ok_or_else(resource_missing)?;
            change(record.service.tags.get_or_insert_with(Vec::new))?;
            Ok(vec![Op::put(key.clone(), encode(&record)?)])
        }
    }
}

pub(crate) async fn tag(
    store: &dyn Store,
    scope: &Scope,
    input: TagResourceRequest,
) -> Result<TagResourceResponse, AwsError> {
    let target = target(scope, input.resource_arn.as_deref())?;
    let tags = input.tags.ok_or_else(|| error::missing("tags"))?;
    check_new(&tags, std::iter::empty())?;
    let scope = scope.clone();
    store
        .update(move |view| {
            let ops = write_tags(view, &scope, &target, &|current| {
                check_new(&tags, current.iter().filter_map(|t| t.key.as_deref()))?;
                merge(current, &tags);
                Ok(())
            })?;
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(TagResourceResponse::default())
}

pub(crate) async fn untag(
    store: &dyn Store,
    scope: &Scope,
    input: UntagResourceRequest,
) -> Result<UntagResourceResponse, AwsError> {
    let target = target(scope, input.resource_arn.as_deref())?;
    let keys = input.tag_keys.ok_or_else(|| error::missing("tagKeys"))?;
    for key in &keys {
        rules::check_key(key).map_err(error::invalid_parameter)?;
        if rules::is_reserved(key) {
            return Err(error::invalid_parameter(format!(
                "Tag key '{key}' uses the reserved prefix 'aws:' and cannot be removed."
            )));
        }
    }
    let scope = scope.clone();
    store
        .update(move |view| {
            let ops = write_tags(view, &scope, &target, &|current| {
                current.retain(|t| !keys.iter().any(|k| Some(k.as_str()) == t.key.as_deref()));
                Ok(())
            })?;
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(UntagResourceResponse::default())
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListTagsForResourceRequest,
) -> Result<ListTagsForResourceResponse, AwsError> {
    let target = target(scope, input.resource_arn.as_deref())?;
    Ok(ListTagsForResourceResponse {
        tags: Some(read_tags(view, scope, &target)?),
    })
}
