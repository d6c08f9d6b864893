//! The calls around agents and tasks' containers: DiscoverPollEndpoint,
//! UpdateContainerAgent, ExecuteCommand, and ListServicesByNamespace.

use berth_model::shapes::ecs::{
    DiscoverPollEndpointRequest, DiscoverPollEndpointResponse, ExecuteCommandRequest,
    ExecuteCommandResponse, ListServicesByNamespaceRequest, ListServicesByNamespaceResponse,
    UpdateContainerAgentRequest, UpdateContainerAgentResponse,
};
use berth_model::AwsError;
use berth_store::ReadView;

use crate::error;
use crate::state::clusters::{require_active, resolve_name};
use crate::state::instances::{self, InstanceRecord};
use crate::state::keys::Scope;
use crate::state::records::{decode, load};
use crate::state::services::{ServiceRecord, INACTIVE};
use crate::state::tasks::{resolve_task_id, TaskRecord, TaskStatus};

/// The endpoint agents poll: this Berth server (its agent protocol lives
/// under `/_berth/agent/`), for the ECS endpoints and telemetry alike.
pub(crate) fn discover_poll_endpoint(
    endpoint: &str,
    input: DiscoverPollEndpointRequest,
) -> Result<DiscoverPollEndpointResponse, AwsError> {
    // Both members are optional and only pick among ECS's fleets; Berth
    // has one endpoint.
    let _ = (input.cluster, input.container_instance);
    Ok(DiscoverPollEndpointResponse {
        endpoint: Some(endpoint.to_string()),
        telemetry_endpoint: Some(endpoint.to_string()),
        service_connect_endpoint: Some(endpoint.to_string()),
    })
}

pub(crate) fn update_container_agent(
    view: &dyn ReadView,
    scope: &Scope,
    input: UpdateContainerAgentRequest,
) -> Result<UpdateContainerAgentResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let reference = input
        .container_instance
        .filter(|c| !c.is_empty())
        .ok_or_else(|| error::missing("containerInstance"))?;
    let id = instances::resolve_id(scope, &cluster, &reference)?;
    require_active(view, scope, &cluster)?;
    let (record, _) =
        load::<InstanceRecord>(view, &scope.instance(&cluster, &id))?.ok_or_else(|| {
            error::invalid_parameter(format!(
                "The container instance {reference} was not found in cluster {cluster}."
            ))
        })?;
    let version = record
        .instance
        .version_info
        .as_ref()
        .and_then(|v| v.agent_version.clone())
        .filter(|v| !v.is_empty());
    match version {
        None => Err(AwsError::bad_request(
            "MissingVersionException",
            "Amazon ECS can't determine the current version of the container agent on the container instance and doesn't have enough information to proceed with an update. The instance's agent did not report a version.",
        )),
        Some(v) => Err(AwsError::bad_request(
            "NoUpdateAvailableException",
            format!(
                "There is no update available for the agent on this container instance. It runs the Berth agent {v}, which is not an Amazon ECS-optimized AMI agent: it is updated by upgrading the berth binary on its host."
            ),
        )),
    }
}

const EXEC_NOT_ENABLED: &str = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn't running. Wait and try again or run a new task with execute command enabled and try again.";

pub(crate) fn execute_command(
    view: &dyn ReadView,
    scope: &Scope,
    input: ExecuteCommandRequest,
) -> Result<ExecuteCommandResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    let command = input
        .command
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| error::missing("command"))?;
    match input.interactive {
        None => return Err(error::missing("interactive")),
        Some(false) => {
            return Err(error::invalid_parameter(
                "Interactive is the only mode supported currently.",
            ))
        }
        Some(true) => {}
    }
    let reference = input
        .task
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("task"))?;
    let id = resolve_task_id(scope, &cluster, &reference)?;
    require_active(view, scope, &cluster)?;
    let (task, _) = load::<TaskRecord>(view, &scope.task(&cluster, &id))?
        .ok_or_else(|| error::invalid_parameter("The specified task was not found."))?;
    let names: Vec<String> = task
        .task
        .containers
        .iter()
        .flatten()
        .filter_map(|c| c.name.clone())
        .collect();
    let container = match input.container.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => c,
        Some(c) => {
            return Err(error::invalid_parameter(format!(
                "The container {c} was not found in the task."
            )))
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(error::invalid_parameter(
                "The task has more than one container; specify the container name.",
            ))
        }
    };
    if task.last_status() != TaskStatus::Running {
        return Err(error::invalid_parameter(format!(
            "The execute command failed because the task is not RUNNING (it is {}).",
            task.last_status().as_str()
        )));
    }
    if task.task.enable_execute_command != Some(true) {
        return Err(error::invalid_parameter(EXEC_NOT_ENABLED));
    }
    let _ = command;
    Err(AwsError::bad_request(
        "TargetNotConnectedException",
        format!(
            "The execute command failed because Berth has no AWS Systems Manager Session Manager for the session-manager-plugin to connect to. Run the command with: berth exec --cluster {cluster} --task {id} --container {container} -- <command>"
        ),
    ))
}

pub(crate) fn list_services_by_namespace(
    view: &dyn ReadView,
    scope: &Scope,
    input: ListServicesByNamespaceRequest,
) -> Result<ListServicesByNamespaceResponse, AwsError> {
    let namespace = input
        .namespace
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("namespace"))?;
    let limit = crate::state::pagination::page_size(input.max_results, 10)?;
    // The namespace's name, whether given as a name or a Cloud Map ARN.
    let wanted = |ns: &str| ns == namespace || namespace.ends_with(&format!("/{ns}"));
    let prefix = format!("/ecs/{}/{}/services/", scope.account, scope.region);
    let (arns, next_token) = crate::state::pagination::filtered_page(
        view,
        &prefix,
        input.next_token.as_deref(),
        limit,
        |kv| {
            let record: ServiceRecord = decode(kv)?;
            if record.status() == INACTIVE {
                return Ok(None);
            }
            let uses = record
                .service
                .deployments
                .iter()
                .flatten()
                .filter_map(|d| d.service_connect_configuration.as_ref())
                .filter(|c| c.enabled == Some(true))
                .filter_map(|c| c.namespace.as_deref())
                .any(wanted);
            Ok(uses.then(|| record.arn().to_string()))
        },
    )?;
    Ok(ListServicesByNamespaceResponse {
        service_arns: Some(arns),
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::test_support::{user, Harness, Spec};

    #[tokio::test]
    async fn agent_and_exec_calls_answer_as_ecs() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let out = h.ok("DiscoverPollEndpoint", json!({})).await;
        assert!(out["endpoint"].as_str().unwrap().starts_with("http"));
        let e = h
            .err("UpdateContainerAgent", json!({"containerInstance": a.arn}))
            .await;
        assert!(
            e.code == "NoUpdateAvailableException" || e.code == "MissingVersionException",
            "{e:?}"
        );
        let e = h
            .err(
                "UpdateContainerAgent",
                json!({"cluster": "nope", "containerInstance": a.id}),
            )
            .await;
        assert_eq!(e.code, "ClusterNotFoundException");

        h.task_definition("web", json!({})).await;
        let (plain, _) = h.run(json!({"taskDefinition": "web"})).await;
        let (exec, _) = h
            .run(json!({"taskDefinition": "web", "enableExecuteCommand": true}))
            .await;
        h.report(&a, &plain[0], "RUNNING").await;
        h.report(&a, &exec[0], "RUNNING").await;
        let e = h
            .err(
                "ExecuteCommand",
                json!({"task": plain[0], "command": "ls", "interactive": true}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        assert!(e
            .message
            .starts_with("The execute command failed because execute command was not enabled"));
        let e = h
            .err(
                "ExecuteCommand",
                json!({"task": exec[0], "container": "app", "command": "ls", "interactive": true}),
            )
            .await;
        assert_eq!(e.code, "TargetNotConnectedException");
        assert!(
            e.message.contains("berth exec --cluster default"),
            "{}",
            e.message
        );
        let e = h
            .err(
                "ExecuteCommand",
                json!({"task": exec[0], "command": "ls", "interactive": false}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let e = h
            .err(
                "ExecuteCommand",
                json!({"cluster": "nope", "task": exec[0], "command": "ls", "interactive": true}),
            )
            .await;
        assert!(e.code == "ClusterNotFoundException" || e.code == "InvalidParameterException");

        let out = h
            .ok("ListServicesByNamespace", json!({"namespace": "ns"}))
            .await;
        assert_eq!(out["serviceArns"], json!([]));

        // Unimplemented families: authorized first, then refused precisely.
        let e = h.err("CreateTaskSet", json!({})).await;
        assert_eq!(e.code, "UnsupportedFeatureException");
        assert!(e.message.contains("EXTERNAL"), "{}", e.message);
        let e = h
            .ecs_as(&user("u", &[]), "ListDaemons", json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        for (op, _) in crate::api::not_implemented::NOT_IMPLEMENTED {
            assert!(berth_model::shapes::ecs::OPERATIONS.contains(op), "{op}");
        }
    }
}
