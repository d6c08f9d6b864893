//! The calls around agents and tasks' containers: DiscoverPollEndpoint,
//! UpdateContainerAgent, ExecuteCommand, and ListServicesByNamespace.

use berth_model::agent_protocol::{ContainerReport, SubmitTaskStateRequest};
use berth_model::exec_protocol::{
    ExecSessionAssignment, StartExecSessionRequest, StartExecSessionResponse,
};
use berth_model::shapes::ecs::{
    DiscoverPollEndpointRequest, DiscoverPollEndpointResponse, ExecuteCommandRequest,
    ExecuteCommandResponse, ListServicesByNamespaceRequest, ListServicesByNamespaceResponse,
    SubmitAttachmentStateChangesRequest, SubmitAttachmentStateChangesResponse,
    SubmitContainerStateChangeRequest, SubmitContainerStateChangeResponse,
    SubmitTaskStateChangeRequest, SubmitTaskStateChangeResponse, UpdateContainerAgentRequest,
    UpdateContainerAgentResponse,
};
use berth_model::AwsError;
use berth_store::{ReadView, Store, StoreExt};

use crate::error;
use crate::state::clusters::{require_active, resolve_name};
use crate::state::exec::{ExecHub, ExecTarget, NewSession};
use crate::state::instances::{self, InstanceRecord};
use crate::state::keys::Scope;
use crate::state::records::{decode, load};
use crate::state::services::{ServiceRecord, INACTIVE};
use crate::state::tasks::{apply_report, resolve_task_id, TaskRecord, TaskStatus};
use crate::state::{index, ledger};

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
    let (task, container) = exec_target(
        view,
        scope,
        &cluster,
        input.task.as_deref(),
        input.container.as_deref(),
    )?;
    let _ = command;
    let id = task.id.clone();
    Err(AwsError::bad_request(
        "TargetNotConnectedException",
        format!(
            "The execute command failed because Berth has no AWS Systems Manager Session Manager for the session-manager-plugin to connect to. Run the command with: berth exec --cluster {cluster} --task {id} --container {container} -- <command>"
        ),
    ))
}

/// The running task and container a command would run in, refused as
/// ECS's ExecuteCommand refuses (a task not found, not RUNNING, started
/// without `enableExecuteCommand`, a container it does not have).
fn exec_target(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    task: Option<&str>,
    container: Option<&str>,
) -> Result<(TaskRecord, String), AwsError> {
    let reference = task
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("task"))?;
    let id = resolve_task_id(scope, cluster, reference)?;
    require_active(view, scope, cluster)?;
    let (task, _) = load::<TaskRecord>(view, &scope.task(cluster, &id))?
        .ok_or_else(|| error::invalid_parameter("The specified task was not found."))?;
    let names: Vec<String> = task
        .task
        .containers
        .iter()
        .flatten()
        .filter_map(|c| c.name.clone())
        .collect();
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => c.to_string(),
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
    Ok((task, container))
}

/// The request ExecuteCommand would be for `berth exec`'s session: what
/// IAM authorizes it as.
pub(crate) fn as_execute_command(input: &StartExecSessionRequest) -> ExecuteCommandRequest {
    ExecuteCommandRequest {
        cluster: input.cluster.clone(),
        container: input.container.clone(),
        command: Some(input.command.join(" ")),
        interactive: Some(true),
        task: Some(input.task.clone()),
    }
}

/// Longest command line `berth exec` runs (bytes over all arguments).
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// `berth exec`: opens a session that the agent of the task's container
/// instance runs (`docker exec` in the container) and the hub relays.
pub(crate) fn start_exec_session(
    view: &dyn ReadView,
    scope: &Scope,
    hub: &ExecHub,
    owner: &str,
    input: StartExecSessionRequest,
) -> Result<StartExecSessionResponse, AwsError> {
    let cluster = resolve_name(scope, input.cluster.as_deref())?;
    if input.command.is_empty() || input.command[0].is_empty() {
        return Err(error::missing("command"));
    }
    if input.command.iter().map(|a| a.len() + 1).sum::<usize>() > MAX_COMMAND_BYTES {
        return Err(error::invalid_parameter(format!(
            "The command is longer than {MAX_COMMAND_BYTES} bytes."
        )));
    }
    if input.command.iter().any(|a| a.contains('\0')) {
        return Err(error::invalid_parameter(
            "The command's arguments cannot contain NUL characters.",
        ));
    }
    if let Some(size) = input.size {
        if size.rows == 0 || size.cols == 0 {
            return Err(error::invalid_parameter(
                "The terminal size needs at least one row and one column.",
            ));
        }
    }
    let (task, container) = exec_target(
        view,
        scope,
        &cluster,
        Some(&input.task),
        input.container.as_deref(),
    )?;
    let Some(instance_id) = task.instance_id.clone() else {
        return Err(AwsError::bad_request(
            "TargetNotConnectedException",
            "The execute command failed because the task has no container instance.",
        ));
    };
    let session_id = format!("{}-{}", task.id, berth_util::ids::random_hex(8));
    let task_arn = task.arn().to_string();
    hub.open(NewSession {
        owner: owner.to_string(),
        account: scope.account.clone(),
        target: ExecTarget {
            account: scope.account.clone(),
            region: scope.region.clone(),
            cluster: task.host_cluster().to_string(),
            instance_id,
        },
        assignment: ExecSessionAssignment {
            session_id: session_id.clone(),
            task_arn: task_arn.clone(),
            container_name: container.clone(),
            command: input.command,
            interactive: input.interactive,
            tty: input.tty,
            size: input.size,
        },
    })?;
    Ok(StartExecSessionResponse {
        session_id,
        task_arn,
        container_name: container,
    })
}

/// The container instance an agent credential speaks for, read from its
/// principal (`container-instance/<cluster>/<id>`).
#[derive(Debug, Clone)]
pub(crate) struct ReportingInstance {
    cluster: String,
    id: String,
}

pub(crate) fn reporting_instance(principal_arn: &str) -> Result<ReportingInstance, AwsError> {
    berth_model::Arn::parse(principal_arn)
        .filter(|a| a.resource_type() == "container-instance")
        .and_then(|a| {
            let (cluster, id) = a.resource_id().split_once('/')?;
            Some(ReportingInstance {
                cluster: cluster.to_string(),
                id: id.to_string(),
            })
        })
        .ok_or_else(|| AwsError::access_denied("The agent credential names no container instance."))
}

const ACK: &str = "ACK";

/// A container's status as the public agent calls give it.
fn container_status(status: Option<&str>, what: &str) -> Result<Option<String>, AwsError> {
    match status.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if TaskStatus::parse(s).is_some() => Ok(Some(s.to_string())),
        Some(s) => Err(error::invalid_parameter(format!(
            "Invalid {what} status '{s}'."
        ))),
    }
}

/// A report in Berth's agent protocol terms for `record`, from the public
/// calls' members; what they leave out stays as it is.
fn container_report(
    record: &TaskRecord,
    change: &berth_model::shapes::ecs::ContainerStateChange,
) -> Result<ContainerReport, AwsError> {
    let name = change
        .container_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error::missing("containerName"))?;
    let current = record
        .task
        .containers
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(name.as_str()))
        .ok_or_else(|| {
            error::invalid_parameter(format!("The container {name} was not found in the task."))
        })?;
    Ok(ContainerReport {
        last_status: container_status(change.status.as_deref(), "container")?
            .or_else(|| current.last_status.clone())
            .unwrap_or_default(),
        runtime_id: change.runtime_id.clone(),
        exit_code: change.exit_code,
        reason: change.reason.clone(),
        network_bindings: change.network_bindings.clone().unwrap_or_default(),
        health_status: current
            .health_status
            .clone()
            .unwrap_or_else(|| "UNKNOWN".into()),
        image_digest: change.image_digest.clone(),
        name,
    })
}

/// Applies what `build` makes of a task's record to it, with the state
/// machine Berth's own agents report through (statuses only move forward,
/// timestamps are set once); an agent credential reports only on the tasks
/// of its own container instance.
async fn report_on_task(
    store: &dyn Store,
    scope: &Scope,
    reporter: Option<&ReportingInstance>,
    cluster: Option<&str>,
    task: Option<&str>,
    now: f64,
    build: impl Fn(&TaskRecord) -> Result<(SubmitTaskStateRequest, Option<String>), AwsError>
        + Send
        + 'static,
) -> Result<(), AwsError> {
    let cluster = resolve_name(scope, cluster)?;
    let reference = task
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error::missing("task"))?;
    let id = resolve_task_id(scope, &cluster, reference)?;
    let key = scope.task(&cluster, &id);
    let scope_owned = scope.clone();
    let reporter = reporter.cloned();
    store
        .update(move |view| {
            require_active(view, &scope_owned, &cluster)?;
            let (mut record, _) = load::<TaskRecord>(view, &key)?
                .ok_or_else(|| error::invalid_parameter("The referenced task was not found."))?;
            if let Some(instance) = &reporter {
                let on_it = record.instance_id.as_deref() == Some(instance.id.as_str())
                    && record.host_cluster() == instance.cluster;
                if !on_it {
                    return Err(AwsError::access_denied(
                        "The task does not run on the calling container instance.",
                    ));
                }
            }
            let (report, reason) = build(&record)?;
            let mut changed = apply_report(&mut record, &report, now)?;
            if let Some(reason) = reason {
                let stopping = record.task.desired_status.as_deref() == Some("STOPPED")
                    || record.last_status() == TaskStatus::Stopped;
                if stopping && record.task.stopped_reason.is_none() {
                    record.task.stopped_reason = Some(reason);
                    record.bump();
                    changed = true;
                }
            }
            let mut ops = Vec::new();
            if changed {
                ops = index::put_task(&scope_owned, &record)?;
                if record.last_status() == TaskStatus::Stopped {
                    ops.extend(ledger::ledger_op(&scope_owned, &record)?);
                }
            }
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(())
}

/// The ECS agent's SubmitTaskStateChange.
pub(crate) async fn submit_task_state_change(
    store: &dyn Store,
    scope: &Scope,
    reporter: Option<&ReportingInstance>,
    now: f64,
    input: SubmitTaskStateChangeRequest,
) -> Result<SubmitTaskStateChangeResponse, AwsError> {
    let status = container_status(input.status.as_deref(), "task")?;
    for change in input.containers.iter().flatten() {
        container_status(change.status.as_deref(), "container")?;
    }
    for agent in input.managed_agents.iter().flatten() {
        if agent.managed_agent_name.as_deref() != Some("ExecuteCommandAgent") {
            return Err(error::invalid_parameter(
                "managedAgentName must be ExecuteCommandAgent.",
            ));
        }
    }
    let cluster = input.cluster.clone();
    let task = input.task.clone();
    let attachments = input.attachments.clone().unwrap_or_default();
    let build = move |record: &TaskRecord| {
        let containers = input
            .containers
            .iter()
            .flatten()
            .map(|c| container_report(record, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            SubmitTaskStateRequest {
                task_arn: record.arn().to_string(),
                last_status: status
                    .clone()
                    .unwrap_or_else(|| record.last_status().as_str().to_string()),
                containers,
                pull_started_at: input.pull_started_at,
                pull_stopped_at: input.pull_stopped_at,
                started_at: None,
                execution_stopped_at: input.execution_stopped_at,
                ..SubmitTaskStateRequest::default()
            },
            input.reason.clone().filter(|r| !r.is_empty()),
        ))
    };
    report_on_task(
        store,
        scope,
        reporter,
        cluster.as_deref(),
        task.as_deref(),
        now,
        build,
    )
    .await?;
    if !attachments.is_empty() {
        attach(store, scope, reporter, cluster.as_deref(), attachments).await?;
    }
    Ok(SubmitTaskStateChangeResponse {
        acknowledgment: Some(ACK.into()),
    })
}

/// The ECS agent's SubmitContainerStateChange.
pub(crate) async fn submit_container_state_change(
    store: &dyn Store,
    scope: &Scope,
    reporter: Option<&ReportingInstance>,
    now: f64,
    input: SubmitContainerStateChangeRequest,
) -> Result<SubmitContainerStateChangeResponse, AwsError> {
    container_status(input.status.as_deref(), "container")?;
    let change = berth_model::shapes::ecs::ContainerStateChange {
        container_name: input.container_name.clone(),
        runtime_id: input.runtime_id.clone(),
        status: input.status.clone(),
        exit_code: input.exit_code,
        reason: input.reason.clone(),
        network_bindings: input.network_bindings.clone(),
        image_digest: None,
    };
    let build = move |record: &TaskRecord| {
        Ok((
            SubmitTaskStateRequest {
                task_arn: record.arn().to_string(),
                last_status: record.last_status().as_str().to_string(),
                containers: vec![container_report(record, &change)?],
                ..SubmitTaskStateRequest::default()
            },
            None,
        ))
    };
    report_on_task(
        store,
        scope,
        reporter,
        input.cluster.as_deref(),
        input.task.as_deref(),
        now,
        build,
    )
    .await?;
    Ok(SubmitContainerStateChangeResponse {
        acknowledgment: Some(ACK.into()),
    })
}

const ATTACHMENT_STATUSES: &[&str] = &[
    "PRECREATED",
    "CREATED",
    "ATTACHING",
    "ATTACHED",
    "DETACHING",
    "DETACHED",
    "DELETED",
    "FAILED",
];

/// Sets the status of the task attachments `changes` name (by ARN or id),
/// each on a task of the cluster (of the reporting instance).
async fn attach(
    store: &dyn Store,
    scope: &Scope,
    reporter: Option<&ReportingInstance>,
    cluster: Option<&str>,
    changes: Vec<berth_model::shapes::ecs::AttachmentStateChange>,
) -> Result<(), AwsError> {
    let cluster = resolve_name(scope, cluster)?;
    let mut wanted = Vec::new();
    for change in &changes {
        let arn = change
            .attachment_arn
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| error::missing("attachmentArn"))?;
        let status = change
            .status
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| error::missing("status"))?;
        if !ATTACHMENT_STATUSES.contains(&status.as_str()) {
            return Err(error::invalid_parameter(format!(
                "Invalid attachment status '{status}'. Valid values: {}.",
                ATTACHMENT_STATUSES.join(", ")
            )));
        }
        let id = arn.rsplit('/').next().unwrap_or_default().to_string();
        wanted.push((arn, id, status));
    }
    let scope_owned = scope.clone();
    let reporter = reporter.cloned();
    store
        .update(move |view| {
            require_active(view, &scope_owned, &cluster)?;
            let tasks: Vec<TaskRecord> = match &reporter {
                Some(i) => index::instance_tasks(view, &scope_owned, &i.cluster, &i.id)?
                    .into_iter()
                    .filter(|t| t.cluster == cluster)
                    .collect(),
                None => view
                    .range(&scope_owned.tasks(&cluster), None, usize::MAX)
                    .iter()
                    .map(decode::<TaskRecord>)
                    .collect::<Result<_, _>>()?,
            };
            let mut changed: Vec<TaskRecord> = Vec::new();
            for (arn, id, status) in &wanted {
                if changed.iter_mut().any(|t| set_attachment(t, id, status)) {
                    continue;
                }
                let mut hit = None;
                for t in &tasks {
                    let mut t = t.clone();
                    if set_attachment(&mut t, id, status) {
                        hit = Some(t);
                        break;
                    }
                }
                match hit {
                    Some(t) => changed.push(t),
                    None => {
                        return Err(error::invalid_parameter(format!(
                            "The attachment {arn} was not found."
                        )))
                    }
                }
            }
            let mut ops = Vec::new();
            for mut t in changed {
                t.bump();
                ops.extend(index::put_task(&scope_owned, &t)?);
            }
            Ok::<_, AwsError>((ops, ()))
        })
        .await
        .map_err(error::store)??;
    Ok(())
}

fn set_attachment(record: &mut TaskRecord, id: &str, status: &str) -> bool {
    match record
        .task
        .attachments
        .iter_mut()
        .flatten()
        .find(|a| a.id.as_deref() == Some(id))
    {
        Some(a) => {
            a.status = Some(status.to_string());
            true
        }
        None => false,
    }
}

/// The ECS agent's SubmitAttachmentStateChanges.
pub(crate) async fn submit_attachment_state_changes(
    store: &dyn Store,
    scope: &Scope,
    reporter: Option<&ReportingInstance>,
    input: SubmitAttachmentStateChangesRequest,
) -> Result<SubmitAttachmentStateChangesResponse, AwsError> {
    let changes = input.attachments.unwrap_or_default();
    if changes.is_empty() {
        return Err(error::missing("attachments"));
    }
    attach(store, scope, reporter, input.cluster.as_deref(), changes).await?;
    Ok(SubmitAttachmentStateChangesResponse {
        acknowledgment: Some(ACK.into()),
    })
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
    let prefix = scope.all_services();
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

    use crate::state::tasks::TaskStatus;
    use crate::test_support::{user, Harness, Spec};

    #[tokio::test]
    async fn berth_exec_sessions_relay_between_client_and_agent() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let other = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (plain, _) = h.run(json!({"taskDefinition": "web"})).await;
        let (exec, _) = h
            .run(json!({"taskDefinition": "web", "enableExecuteCommand": true}))
            .await;
        let (runs_on, idle) = if h.instance_of(&exec[0]) == a.id {
            (&a, &other)
        } else {
            (&other, &a)
        };
        for t in plain.iter().chain(&exec) {
            let on = if h.instance_of(t) == a.id { &a } else { &other };
            h.report(on, t, "RUNNING").await;
        }
        let allowed = user("dev", &["ecs:ExecuteCommand"]);
        let start = |task: &str| json!({"task": task, "command": ["sh", "-c", "exit 3"]});

        // Refused as ExecuteCommand is: IAM, then the task's state.
        let e = h
            .exec_as(&user("nobody", &[]), "StartExecSession", start(&exec[0]))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        assert!(e.message.contains("ecs:ExecuteCommand"), "{}", e.message);
        let e = h
            .exec_as(&allowed, "StartExecSession", start(&plain[0]))
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        assert!(e.message.contains("execute command was not enabled"));
        for (input, code) in [
            (
                json!({"task": exec[0], "command": []}),
                "InvalidParameterException",
            ),
            (
                json!({"task": exec[0], "command": [""]}),
                "InvalidParameterException",
            ),
            (
                json!({"task": exec[0], "command": ["ls"], "container": "nope"}),
                "InvalidParameterException",
            ),
            (
                json!({"task": exec[0], "command": ["ls"], "size": {"rows": 0, "cols": 80}}),
                "InvalidParameterException",
            ),
            (
                json!({"cluster": "nope", "task": exec[0].rsplit('/').next(), "command": ["ls"]}),
                "ClusterNotFoundException",
            ),
        ] {
            let e = h.exec_as(&allowed, "StartExecSession", input.clone()).await;
            assert_eq!(e.unwrap_err().code, code, "{input}");
        }

        let started = h
            .exec_as(&allowed, "StartExecSession", start(&exec[0]))
            .await
            .unwrap();
        let id = started["sessionId"].as_str().unwrap().to_string();
        assert_eq!(started["taskArn"], exec[0]);
        assert_eq!(started["containerName"], "app");

        // Only the agent of the task's instance gets it, once.
        let none = h
            .agent(idle, "PollExecSessions", json!({"waitSeconds": 0}))
            .await
            .unwrap();
        assert_eq!(none["sessions"], json!([]));
        let got = h
            .agent(runs_on, "PollExecSessions", json!({"waitSeconds": 0}))
            .await
            .unwrap();
        assert_eq!(got["sessions"][0]["sessionId"], id.as_str());
        assert_eq!(got["sessions"][0]["command"], json!(["sh", "-c", "exit 3"]));
        let e = h
            .agent(
                idle,
                "PutExecOutput",
                json!({"sessionId": id, "exitCode": 0}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");

        h.agent(
            runs_on,
            "PutExecOutput",
            json!({"sessionId": id, "chunks": [
                {"stream": "stdout", "data": b64.encode("hi\n")},
                {"stream": "stderr", "data": b64.encode("err\n")}
            ], "exitCode": 3}),
        )
        .await
        .unwrap();
        // Another user, even one allowed ExecuteCommand, cannot read it.
        let e = h
            .exec_as(
                &user("eve", &["ecs:ExecuteCommand"]),
                "ReadExecOutput",
                json!({"sessionId": id}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        let out = h
            .exec_as(
                &allowed,
                "ReadExecOutput",
                json!({"sessionId": id, "waitSeconds": 1}),
            )
            .await
            .unwrap();
        let frames = out["frames"].as_array().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1]["stream"], "stderr");
        assert_eq!(
            b64.decode(frames[0]["data"].as_str().unwrap()).unwrap(),
            b"hi\n"
        );
        let out = h
            .exec_as(
                &allowed,
                "ReadExecOutput",
                json!({"sessionId": id, "ack": 2}),
            )
            .await
            .unwrap();
        assert_eq!(out["done"], true);
        assert_eq!(out["exitCode"], 3);
    }

    #[tokio::test]
    async fn public_agent_state_changes_drive_the_task_state_machine() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        let task = arns[0].clone();
        let (on, other) = if h.instance_of(&task) == a.id {
            (&a, &b)
        } else {
            (&b, &a)
        };

        let out = h
            .ecs_as(
                &on.agent,
                "SubmitTaskStateChange",
                json!({"task": task, "status": "RUNNING", "pullStartedAt": 1000.0,
                    "containers": [{"containerName": "app", "status": "RUNNING",
                        "runtimeId": "c0ffee"}]}),
            )
            .await
            .unwrap();
        assert_eq!(out, json!({"acknowledgment": "ACK"}));
        let t = h.ok("DescribeTasks", json!({"tasks": [task]})).await["tasks"][0].clone();
        assert_eq!(t["lastStatus"], "RUNNING");
        assert_eq!(t["containers"][0]["lastStatus"], "RUNNING");
        assert_eq!(t["containers"][0]["runtimeId"], "c0ffee");
        assert_eq!(t["pullStartedAt"], 1000.0);

        // Refusals: another instance's agent, unknown tasks and statuses,
        // a missing cluster, a user without ecs:Submit*.
        let e = h
            .ecs_as(
                &other.agent,
                "SubmitTaskStateChange",
                json!({"task": task, "status": "STOPPED"}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        let id = task.rsplit('/').next().unwrap();
        for (op, input, code) in [
            (
                "SubmitTaskStateChange",
                json!({"task": "0123456789abcdef0123456789abcdef", "status": "RUNNING"}),
                "InvalidParameterException",
            ),
            (
                "SubmitTaskStateChange",
                json!({"task": task, "status": "DANCING"}),
                "InvalidParameterException",
            ),
            (
                "SubmitTaskStateChange",
                json!({"status": "RUNNING"}),
                "InvalidParameterException",
            ),
            (
                "SubmitTaskStateChange",
                json!({"cluster": "nope", "task": id, "status": "RUNNING"}),
                "ClusterNotFoundException",
            ),
            (
                "SubmitContainerStateChange",
                json!({"task": task, "containerName": "nope", "status": "STOPPED"}),
                "InvalidParameterException",
            ),
            (
                "SubmitContainerStateChange",
                json!({"task": task, "status": "STOPPED"}),
                "InvalidParameterException",
            ),
            (
                "SubmitAttachmentStateChanges",
                json!({"attachments": []}),
                "InvalidParameterException",
            ),
            (
                "SubmitAttachmentStateChanges",
                json!({"attachments": [{"attachmentArn": "arn:aws:ecs:us-east-1:000000000000:attachment/nope", "status": "ATTACHED"}]}),
                "InvalidParameterException",
            ),
        ] {
            let e = h.ecs_as(&on.agent, op, input.clone()).await.unwrap_err();
            assert_eq!(e.code, code, "{op} {input}");
        }
        let e = h
            .ecs_as(
                &user("u", &[]),
                "SubmitTaskStateChange",
                json!({"task": task, "status": "STOPPED"}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        // Nothing changed.
        assert_eq!(h.task(&task).last_status(), TaskStatus::Running);

        // A container stops; the task stops with the reason given.
        h.ecs_as(
            &on.agent,
            "SubmitContainerStateChange",
            json!({"task": task, "containerName": "app", "status": "STOPPED", "exitCode": 2,
                "reason": "done"}),
        )
        .await
        .unwrap();
        let out = h
            .ecs_as(
                &user("ops", &["ecs:SubmitTaskStateChange"]),
                "SubmitTaskStateChange",
                json!({"task": task, "status": "STOPPED", "reason": "Essential container in task exited"}),
            )
            .await
            .unwrap();
        assert_eq!(out["acknowledgment"], "ACK");
        let t = h.ok("DescribeTasks", json!({"tasks": [task]})).await["tasks"][0].clone();
        assert_eq!(t["lastStatus"], "STOPPED");
        assert_eq!(t["desiredStatus"], "STOPPED");
        assert_eq!(t["stoppedReason"], "Essential container in task exited");
        assert_eq!(t["containers"][0]["exitCode"], 2);
        // Statuses only move forward.
        h.ecs_as(
            &on.agent,
            "SubmitTaskStateChange",
            json!({"task": task, "status": "RUNNING"}),
        )
        .await
        .unwrap();
        assert_eq!(h.task(&task).last_status(), TaskStatus::Stopped);
    }

    #[tokio::test]
    async fn attachment_state_changes_reach_the_tasks_attachment() {
        let h = Harness::new();
        let spec = Spec::default().attribute("berth.capacity.fargate", "dedicated");
        let host = h.instance("default", spec).await;
        h.ok(
            "RegisterTaskDefinition",
            json!({"family": "fg", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        let (arns, failures) = h
            .run(json!({"taskDefinition": "fg", "launchType": "FARGATE",
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}}))
            .await;
        assert!(failures.is_empty(), "{failures:?}");
        let record = h.task(&arns[0]);
        let attachment = record.task.attachments.clone().unwrap_or_default()[0]
            .id
            .clone()
            .unwrap();
        let arn = format!("arn:aws:ecs:us-east-1:000000000000:attachment/{attachment}");
        let e = h
            .ecs_as(
                &host.agent,
                "SubmitAttachmentStateChanges",
                json!({"attachments": [{"attachmentArn": arn, "status": "GLUED"}]}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        let out = h
            .ecs_as(
                &host.agent,
                "SubmitAttachmentStateChanges",
                json!({"attachments": [{"attachmentArn": arn, "status": "ATTACHED"}]}),
            )
            .await
            .unwrap();
        assert_eq!(out, json!({"acknowledgment": "ACK"}));
        let t = h.ok("DescribeTasks", json!({"tasks": [arns[0]]})).await["tasks"][0].clone();
        assert_eq!(t["attachments"][0]["status"], "ATTACHED");
    }

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
        let e = h.err("ListDaemons", json!({})).await;
        assert_eq!(e.code, "UnsupportedFeatureException");
        assert!(e.message.contains("Managed Instances"), "{}", e.message);
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
