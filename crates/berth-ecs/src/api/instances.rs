//! Container instances: RegisterContainerInstance, DeregisterContainerInstance,
//! DescribeContainerInstances, ListContainerInstances,
//! UpdateContainerInstancesState and the attribute operations.
//!
//! The stored record holds what was registered; the live figures ECS shows
//! (remaining resources, task counts, agentConnected) are computed when an
//! instance is presented, from the tasks placed on it and the agents' presence.

use std::collections::BTreeMap;

use berth_model::shapes::ecs::{
    Attribute, ContainerInstance, DeleteAttributesRequest, DeleteAttributesResponse,
    DeregisterContainerInstanceRequest, DeregisterContainerInstanceResponse,
    DescribeContainerInstancesRequest, DescribeContainerInstancesResponse, Failure,
    ListAttributesRequest, ListAttributesResponse, ListContainerInstancesRequest,
    ListContainerInstancesResponse, PutAttributesRequest, PutAttributesResponse,
    RegisterContainerInstanceRequest, RegisterContainerInstanceResponse,
    UpdateContainerInstancesStateRequest, UpdateContainerInstancesStateResponse,
};
use berth_model::AwsError;
use berth_store::{Op, ReadView, Store, StoreExt};

use crate::error;
use crate::launch::snapshot::snapshot;
use crate::launch::usage::{usage_of_instance, Usage};
use crate::state::clusters::{self, resolve_name};
use crate::state::instances::{
    check_attribute, check_registration, merge_attributes, register_in, resolve_id, InstanceRecord,
    Presence, Registration, ACTIVE, DRAINING, INACTIVE,
};
use crate::state::keys::Scope;
use crate::state::pagination;
use crate::state::records::{decode, encode, load};

/// Which optional parts DescribeContainerInstances returns.
#[derive(Clone, Copy, Default)]
pub(crate) struct Include {
    pub tags: bool,
}

impl Include {
    pub fn parse(fields: &[String]) -> Result<Include, AwsError> {
        let mut include = Include::default();
        for f in fields {
            match f.as_str() {
                "TAGS" => include.tags = true,
                "CONTAINER_INSTANCE_HEALTH" => {}
                other => {
                    return Err(error::invalid_parameter(format!(
                        "Invalid include value '{other}'. Valid values: TAGS, CONTAINER_INSTANCE_HEALTH."
                    )))
                }
            }
        }
        Ok(include)
    }
}

/// The instance as the API shows it, with live figures.
pub(crate) fn present(
    record: &InstanceRecord,
    usage: &Usage,
    presence: &Presence,
    include: Include,
) -> ContainerInstance {
    let mut instance = record.instance.clone();
    let registered = instance.registered_resources.clone().unwrap_or_default();
    let remaining = registered
        .iter()
        .map(|r| {
            let mut r = r.clone();
            match r.name.as_deref() {
                Some("CPU") => {
                    let v = r.integer_value.unwrap_or(0) as i64 - usage.cpu;
                    r.integer_value = Some(v.max(0) as i32);
                }
                Some("MEMORY") => {
                    let v = r.integer_value.unwrap_or(0) as i64 - usage.memory;
                    r.integer_value = Some(v.max(0) as i32);
                }
                Some("PORTS") => {
                    let set = r.string_set_value.get_or_insert_with(Vec::new);
                    set.extend(usage.ports_tcp.iter().map(|p| p.to_string()));
                }
                Some("PORTS_UDP") => {
                    let set = r.string_set_value.get_or_insert_with(Vec::new);
                    set.extend(usage.ports_udp.iter().map(|p| p.to_string()));
                }
                Some(custom) => {
                    if let Some(used) = usage.custom.get(custom) {
                        let v = i64::from(r.integer_value.unwrap_or(0)) - used;
                        r.integer_value = Some(v.max(0) as i32);
                    }
                }
                None => {}
            }
            r
        })
        .collect();
    instance.remaining_resources = Some(remaining);
    instance.running_tasks_count = Some(usage.running as i32);
    instance.pending_tasks_count = Some(usage.pending as i32);
    instance.agent_connected =
        Some(record.status() != INACTIVE && presence.connected(record.arn()));
    if !include.tags {
        instance.tags = None;
    }
    instance
}

fn missing_instance(scope: &Scope, cluster: &str, reference: &str) -> Failure {
    error::missing_failure(scope, reference.to_string(), |id| {
        format!("container-instance/{cluster}/{id}")
    })
}

fn references(list: Option<Vec<String>>, member: &str) -> Result<Vec<String>, AwsError> {
    let list = list
        .filter(|l| !l.is_empty())
        .ok_or_else(|| error::missing(member))?;
    if list.len() > 100 {
        return Err(error::invalid_parameter(format!(
            "{member} can name at most 100 container instances."
        )));
    }
    Ok(list)
}

pub(crate) async fn register(
    store: &dyn Store,
    scope: &Scope,
    presence: &Presence,
    now: f64,
    input: RegisterContainerInstanceRequest,
) -> Result<RegisterContainerInstanceResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let name = match input.container_instance_arn.as_deref() {
        // Re-registering an existing instance by ARN keeps its identity.
        Some(arn) if !arn.is_empty() => {
            let id = resolve_id(scope, &cluster, arn)?;
            let (record, _) = load::<InstanceRecord>(store, &scope.instance(&cluster, &id))?
                .ok_or_else(|| {
                    error::invalid_parameter(format!("Container instance {arn} not found."))
                })?;
            record.instance.ec2_instance_id
        }
        _ => None,
    };
    let registration = Registration {
        cluster,
        name,
        total_resources: input.total_resources.unwrap_or_default(),
        attributes: input.attributes.unwrap_or_default(),
        version_info: input.version_info,
        tags: input.tags.unwrap_or_default(),
    };
    check_registration(&registration)?;
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| register_in(view, &scope_owned, &registration, now))
        .await
        .map_err(error::store)??;
    Ok(RegisterContainerInstanceResponse {
        container_instance: Some(present(
            &record,
            &Usage::default(),
            presence,
            Include { tags: true },
        )),
    })
}

pub(crate) async fn deregister(
    store: &dyn Store,
    scope: &Scope,
    presence: &Presence,
    input: DeregisterContainerInstanceRequest,
) -> Result<DeregisterContainerInstanceResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .container_instance
        .filter(|c| !c.is_empty())
        .ok_or_else(|| error::missing("containerInstance"))?;
    let id = resolve_id(scope, &cluster, &reference)?;
    let force = input.force.unwrap_or(false);
    let scope_owned = scope.clone();
    let (_, record) = store
        .update(move |view| {
            clusters::require_active(view, &scope_owned, &cluster)?;
            let key = scope_owned.instance(&cluster, &id);
            let (mut record, _) = load::<InstanceRecord>(view, &key)?
                .filter(|(r, _)| r.status() != INACTIVE)
                .ok_or_else(|| {
                    error::invalid_parameter(format!(
                        "The referenced container instance {reference} is not registered to cluster {cluster}."
                    ))
                })?;
            let usage = usage_of_instance(view, &scope_owned, &cluster, &id)?;
            if usage.running + usage.pending > 0 && !force {
                return Err(error::invalid_parameter(format!(
                    "The container instance has {} tasks that are not stopped. Stop them first or deregister with force.",
                    usage.running + usage.pending
                )));
            }
            record.instance.status = Some(INACTIVE.into());
            record.instance.version = Some(record.instance.version.unwrap_or(0) + 1);
            let mut ops = vec![Op::put(key, encode(&record)?)];
            if let Some(name) = &record.instance.ec2_instance_id {
                ops.push(Op::delete(scope_owned.instance_name(&cluster, name)));
            }
            Ok::<_, AwsError>((ops, record))
        })
        .await
        .map_err(error::store)??;
    presence.forget(record.arn());
    Ok(DeregisterContainerInstanceResponse {
        container_instance: Some(present(
            &record,
            &Usage::default(),
            presence,
            Include { tags: true },
        )),
    })
}

pub(crate) fn describe(
    view: &dyn ReadView,
    scope: &Scope,
    presence: &Presence,
    input: DescribeContainerInstancesRequest,
) -> Result<DescribeContainerInstancesResponse, AwsError> {
    let include = Include::parse(&input.include.unwrap_or_default())?;
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let refs = references(input.container_instances, "containerInstances")?;
    clusters::require_active(view, scope, &cluster)?;
    let mut instances = Vec::new();
    let mut failures = Vec::new();
    for reference in refs {
        let found = match resolve_id(scope, &cluster, &reference) {
            Ok(id) => load::<InstanceRecord>(view, &scope.instance(&cluster, &id))?
                .filter(|(r, _)| r.offers_ec2()),
            Err(_) => None,
        };
        match found {
            Some((record, _)) => {
                // Only the instance's own tasks are read.
                let u = usage_of_instance(view, scope, &cluster, &record.id)?;
                instances.push(present(&record, &u, presence, include));
            }
            None => failures.push(missing_instance(scope, &cluster, &reference)),
        }
    }
    Ok(DescribeContainerInstancesResponse {
        container_instances: Some(instances),
        failures: Some(failures),
    })
}

pub(crate) fn list(
    view: &dyn ReadView,
    scope: &Scope,
    presence: &Presence,
    input: ListContainerInstancesRequest,
) -> Result<ListContainerInstancesResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let limit = pagination::page_size(input.max_results, 100)?;
    let status = match input.status.as_deref() {
        None => None,
        Some(s @ (ACTIVE | DRAINING | INACTIVE | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED")) => {
            Some(s.to_string())
        }
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid status '{other}'. Valid values: ACTIVE, DRAINING, REGISTERING, DEREGISTERING, REGISTRATION_FAILED."
            )))
        }
    };
    // The cluster query language, as placement constraints use it.
    let filter = match input.filter.as_deref() {
        Some(f) if !f.trim().is_empty() => Some(
            berth_scheduler::parse_expression(f)
                .map_err(|e| error::invalid_parameter(format!("Invalid filter expression: {e}")))?,
        ),
        _ => None,
    };
    clusters::require_active(view, scope, &cluster)?;
    let (arns, next_token) = pagination::filtered_page(
        view,
        &scope.instances(&cluster),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: InstanceRecord = decode(kv)?;
            let wanted = record.offers_ec2()
                && match &status {
                    Some(s) => record.status() == s,
                    None => record.status() != INACTIVE,
                };
            let matches = match &filter {
                Some(f) if wanted => {
                    let u = usage_of_instance(view, scope, &cluster, &record.id)?;
                    f.matches(&snapshot(&record, &u, presence))
                }
                _ => true,
            };
            Ok((wanted && matches).then(|| record.arn().to_string()))
        },
    )?;
    Ok(ListContainerInstancesResponse {
        container_instance_arns: Some(arns),
        next_token,
    })
}

pub(crate) async fn update_state(
    store: &dyn Store,
    scope: &Scope,
    presence: &Presence,
    input: UpdateContainerInstancesStateRequest,
) -> Result<UpdateContainerInstancesStateResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let refs = references(input.container_instances, "containerInstances")?;
    let status = match input.status.as_deref() {
        Some(s @ (ACTIVE | DRAINING)) => s.to_string(),
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid status '{other}'. Valid values: ACTIVE, DRAINING."
            )))
        }
        None => return Err(error::missing("status")),
    };
    let scope_owned = scope.clone();
    let (_, (records, failures, usage)) = store
        .update(move |view| {
            clusters::require_active(view, &scope_owned, &cluster)?;
            let mut ops = Vec::new();
            let mut records = Vec::new();
            let mut failures = Vec::new();
            for reference in &refs {
                let found = match resolve_id(&scope_owned, &cluster, reference) {
                    Ok(id) => load::<InstanceRecord>(view, &scope_owned.instance(&cluster, &id))?,
                    Err(_) => None,
                };
                match found {
                    Some((mut record, _)) if record.status() != INACTIVE => {
                        if record.status() != status {
                            record.instance.status = Some(status.clone());
                            record.instance.version =
                                Some(record.instance.version.unwrap_or(0) + 1);
                            ops.push(Op::put(
                                scope_owned.instance(&cluster, &record.id),
                                encode(&record)?,
                            ));
                        }
                        records.push(record);
                    }
                    _ => failures.push(missing_instance(&scope_owned, &cluster, reference)),
                }
            }
            let mut usage = Vec::new();
            for record in &records {
                usage.push(usage_of_instance(view, &scope_owned, &cluster, &record.id)?);
            }
            Ok::<_, AwsError>((ops, (records, failures, usage)))
        })
        .await
        .map_err(error::store)??;
    let instances = records
        .iter()
        .zip(&usage)
        .map(|(r, u)| present(r, u, presence, Include::default()))
        .collect();
    Ok(UpdateContainerInstancesStateResponse {
        container_instances: Some(instances),
        failures: Some(failures),
    })
}

/// An attribute's target, resolved to a stored instance.
fn attribute_target(scope: &Scope, cluster: &str, a: &Attribute) -> Result<String, AwsError> {
    match a.target_type.as_deref() {
        None | Some("container-instance") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid targetType '{other}'. Valid values: container-instance."
            )))
        }
    }
    let target = a
        .target_id
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("attributes.targetId"))?;
    resolve_id(scope, cluster, target)
}

async fn change_attributes(
    store: &dyn Store,
    scope: &Scope,
    cluster_ref: Option<&str>,
    attributes: Option<Vec<Attribute>>,
    put: bool,
) -> Result<Vec<Attribute>, AwsError> {
    let cluster = resolve_name(scope, cluster_ref)?;
    let attributes = attributes
        .filter(|a| !a.is_empty())
        .ok_or_else(|| error::missing("attributes"))?;
    if attributes.len() > 10 {
        return Err(error::invalid_parameter(
            "At most 10 attributes can be changed per call.",
        ));
    }
    let mut targets = Vec::new();
    for a in &attributes {
        check_attribute(a)?;
        targets.push(attribute_target(scope, &cluster, a)?);
    }
    let scope_owned = scope.clone();
    let echo = attributes.clone();
    store
        .update(move |view| {
            clusters::require_active(view, &scope_owned, &cluster)?;
            let mut changed: BTreeMap<String, InstanceRecord> = BTreeMap::new();
            for (a, id) in attributes.iter().zip(&targets) {
                let record = match changed.remove(id) {
                    Some(r) => r,
                    None => load::<InstanceRecord>(view, &scope_owned.instance(&cluster, id))?
                        .filter(|(r, _)| r.status() != INACTIVE)
                        .map(|(r, _)| r)
                        .ok_or_else(|| {
                            AwsError::bad_request(
                                "TargetNotFoundException",
                                format!(
                                    "Could not find {}. Verify the targetId and try again.",
                                    a.target_id.as_deref().unwrap_or("")
                                ),
                            )
                        })?,
                };
                let mut record = record;
                let list = record.instance.attributes.get_or_insert_with(Vec::new);
                if put {
                    merge_attributes(list, std::slice::from_ref(a));
                    if list.len() > 128 {
                        return Err(AwsError::bad_request(
                            "AttributeLimitExceededException",
                            "A container instance can have at most 128 attributes.",
                        ));
                    }
                } else {
                    list.retain(|x| x.name != a.name);
                }
                changed.insert(id.clone(), record);
            }
            let mut ops = Vec::new();
            for (id, record) in changed {
                ops.push(Op::put(
                    scope_owned.instance(&cluster, &id),
                    encode(&record)?,
                ));
            }
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(echo)
}

pub(crate) async fn put_attributes(
    store: &dyn Store,
    scope: &Scope,
    input: PutAttributesRequest,
) -> Result<PutAttributesResponse, AwsError> {
    let attributes = change_attributes(
        store,
        scope,
        input.cluster.as_deref(),
        input.attributes,
        true,
    )
    .await?;
    Ok(PutAttributesResponse {
        attributes: Some(attributes),
    })
}

pub(crate) async fn delete_attributes(
    store: &dyn Store,
    scope: &Scope,
    input: DeleteAttributesRequest,
) -> Result<DeleteAttributesResponse, AwsError> {
    let attributes = change_attributes(
        store,
        scope,
        input.cluster.as_deref(),
        input.attributes,
        false,
    )
    .await?;
    Ok(DeleteAttributesResponse {
        attributes: Some(attributes),
    })
}

pub(crate) fn list_attributes(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListAttributesRequest,
) -> Result<ListAttributesResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    match input.target_type.as_deref() {
        Some("container-instance") => {}
        Some(other) => {
            return Err(error::invalid_parameter(format!(
                "Invalid targetType '{other}'. Valid values: container-instance."
            )))
        }
        None => return Err(error::missing("targetType")),
    }
    if input.attribute_value.is_some() && input.attribute_name.is_none() {
        return Err(error::invalid_parameter(
            "attributeValue can only be given together with attributeName.",
        ));
    }
    let limit = pagination::page_size(input.max_results, 100)?;
    clusters::require_active(view, scope, &cluster)?;
    // Tokens name the last instance whose attributes were listed completely;
    // pages are whole instances, so a page may exceed the limit slightly less
    // often than it stops short of it.
    let (pages, next_token) = pagination::filtered_page(
        view,
        &scope.instances(&cluster),
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: InstanceRecord = decode(kv)?;
            if record.status() == INACTIVE {
                return Ok(None);
            }
            let found: Vec<Attribute> = record
                .attributes()
                .iter()
                .filter(|a| {
                    input
                        .attribute_name
                        .as_ref()
                        .is_none_or(|n| a.name.as_ref() == Some(n))
                })
                .filter(|a| {
                    input
                        .attribute_value
                        .as_ref()
                        .is_none_or(|v| a.value.as_ref() == Some(v))
                })
                .map(|a| Attribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                    target_type: Some("container-instance".into()),
                    target_id: Some(record.arn().to_string()),
                })
                .collect();
            Ok((!found.is_empty()).then_some(found))
        },
    )?;
    Ok(ListAttributesResponse {
        attributes: Some(pages.into_iter().flatten().collect()),
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::state::index::Held;
    use crate::state::records::decoded;
    use crate::state::tasks::TaskRecord;
    use crate::test_support::{Harness, Spec};

    #[tokio::test]
    async fn describe_reads_only_the_named_instances_tasks() {
        let h = Harness::new();
        let a = h
            .instance("default", Spec::default().size(2048, 4096))
            .await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition(
            "web",
            json!({"cpu": 256, "memory": 512, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}),
        )
        .await;
        h.ok(
            "StartTask",
            json!({"taskDefinition": "web", "containerInstances": [a.arn]}),
        )
        .await;
        h.task_definition("small", json!({"cpu": 10, "memory": 16}))
            .await;
        h.ok(
            "StartTask",
            json!({"taskDefinition": "small", "containerInstances": vec![b.arn.clone(); 10]}),
        )
        .await;
        let (tasks, held) = (decoded::of::<TaskRecord>(), decoded::of::<Held>());
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [a.arn]}),
            )
            .await;
        assert_eq!(decoded::of::<TaskRecord>() - tasks, 0);
        assert_eq!(decoded::of::<Held>() - held, 1, "a's one task, not b's ten");
        let instance = &out["containerInstances"][0];
        assert_eq!(instance["pendingTasksCount"], 1);
        let remaining = instance["remainingResources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let get = |name: &str| remaining.iter().find(|r| r["name"] == name).cloned();
        assert_eq!(get("CPU").unwrap()["integerValue"], 2048 - 256);
        assert_eq!(get("MEMORY").unwrap()["integerValue"], 4096 - 512);
        let ports = get("PORTS").unwrap()["stringSetValue"].clone();
        assert!(
            ports.as_array().unwrap().contains(&json!("8080")),
            "{ports}"
        );
        // Deregistering an instance with tasks needs force.
        let e = h
            .ecs(
                "DeregisterContainerInstance",
                json!({"containerInstance": b.arn}),
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("10 tasks"), "{}", e.message);
    }

    #[tokio::test]
    async fn list_filters_see_task_groups() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        h.ok(
            "StartTask",
            json!({"taskDefinition": "web", "group": "db", "containerInstances": [a.arn]}),
        )
        .await;
        let out = h
            .ok(
                "ListContainerInstances",
                json!({"filter": "task:group == db"}),
            )
            .await;
        assert_eq!(out["containerInstanceArns"], json!([a.arn]));
        let out = h
            .ok(
                "ListContainerInstances",
                json!({"filter": "not(task:group == db)"}),
            )
            .await;
        assert_eq!(out["containerInstanceArns"], json!([b.arn]));
    }

    #[tokio::test]
    async fn instance_state_changes_and_their_errors() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let out = h
            .ok(
                "UpdateContainerInstancesState",
                json!({"containerInstances": [a.arn, "0123456789abcdef0123456789abcdef"],
                    "status": "DRAINING"}),
            )
            .await;
        assert_eq!(out["containerInstances"][0]["status"], "DRAINING");
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        let listed = h
            .ok("ListContainerInstances", json!({"status": "DRAINING"}))
            .await;
        assert_eq!(listed["containerInstanceArns"], json!([a.arn]));
        let listed = h
            .ok("ListContainerInstances", json!({"status": "ACTIVE"}))
            .await;
        assert_eq!(listed["containerInstanceArns"], json!([]));
        for bad in [
            json!({"containerInstances": [a.arn], "status": "INACTIVE"}),
            json!({"containerInstances": [a.arn]}),
            json!({"containerInstances": [], "status": "ACTIVE"}),
        ] {
            let e = h.err("UpdateContainerInstancesState", bad.clone()).await;
            assert_eq!(e.code, "InvalidParameterException", "{bad}");
        }
        let e = h
            .err(
                "UpdateContainerInstancesState",
                json!({"containerInstances": [a.id], "status": "ACTIVE", "cluster": "nope"}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");
        // Deregistered: INACTIVE, gone from the list, its name free again.
        h.ok(
            "DeregisterContainerInstance",
            json!({"containerInstance": a.arn}),
        )
        .await;
        let e = h
            .err(
                "DeregisterContainerInstance",
                json!({"containerInstance": a.arn}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let listed = h.ok("ListContainerInstances", json!({})).await;
        assert_eq!(listed["containerInstanceArns"], json!([]));
        let out = h
            .ok(
                "UpdateContainerInstancesState",
                json!({"containerInstances": [a.arn], "status": "ACTIVE"}),
            )
            .await;
        assert_eq!(out["containerInstances"], json!([]));
        assert_eq!(out["failures"][0]["reason"], "MISSING");
    }

    #[tokio::test]
    async fn describe_shows_counts_remaining_resources_and_the_agent() {
        let h = Harness::new();
        let a = h
            .instance(
                "default",
                Spec::default().size(1024, 2048).resource("GPU", 4),
            )
            .await;
        h.task_definition(
            "web",
            json!({"cpu": 128, "memory": 256, "resourceRequirements": [{"type": "GPU", "value": "1"}]}),
        )
        .await;
        let (arns, _) = h.run(json!({"taskDefinition": "web", "count": 3})).await;
        h.report(&a, &arns[0], "RUNNING").await;
        h.report(&a, &arns[1], "STOPPED").await;
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [a.id, "0123456789abcdef0123456789abcdef"]}),
            )
            .await;
        let i = &out["containerInstances"][0];
        assert_eq!(i["runningTasksCount"], 1);
        assert_eq!(i["pendingTasksCount"], 1);
        assert_eq!(i["agentConnected"], true);
        let remaining = |name: &str| {
            i["remainingResources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["name"] == name)
                .map(|r| r["integerValue"].clone())
        };
        assert_eq!(remaining("CPU"), Some(json!(1024 - 256)));
        assert_eq!(remaining("MEMORY"), Some(json!(2048 - 512)));
        assert_eq!(remaining("GPU"), Some(json!(2)));
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        assert_eq!(
            out["failures"][0]["arn"],
            h.scope()
                .arn("container-instance/default/0123456789abcdef0123456789abcdef")
        );
        // The agent goes quiet: shown disconnected after the timeout.
        h.silence(&a);
        h.advance(46.0);
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [a.arn]}),
            )
            .await;
        assert_eq!(out["containerInstances"][0]["agentConnected"], false);
        let e = h
            .err(
                "DescribeContainerInstances",
                json!({"containerInstances": []}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
    }
}
