//! `berth exec` on the agent: long-polls the server for the exec sessions
//! of tasks on this instance (`PollExecSessions`), runs each command in its
//! task's container through the [`Runtime`], and relays its input
//! (`GetExecInput`) and output (`PutExecOutput`) through the server. The
//! agent only ever calls the server, so it may run on any host that
//! reaches it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use berth_model::agent_protocol::TARGET_PREFIX;
use berth_model::exec_protocol::{
    ExecSessionAssignment, GetExecInputRequest, GetExecInputResponse, OutputChunk,
    PollExecSessionsRequest, PollExecSessionsResponse, PutExecOutputRequest, PutExecOutputResponse,
};
use berth_runtime::{ExecOutput, ExecSpec, Runtime};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::client::{ClientError, Credentials, ServerClient};
use crate::spec;

const POLL_WAIT_SECONDS: u32 = 20;
/// Output sent in one `PutExecOutput` at most.
const MAX_BATCH: usize = 256 * 1024;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Calls the server for exec sessions.
#[derive(Clone)]
struct Relay {
    client: ServerClient,
    credentials: watch::Receiver<Credentials>,
}

impl Relay {
    async fn call<I: serde::Serialize, O: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        let credentials = self.credentials.borrow().clone();
        self.client
            .call(&credentials, TARGET_PREFIX, operation, input, timeout)
            .await
    }

    async fn put(&self, request: &PutExecOutputRequest) -> Result<bool, ClientError> {
        let answer: PutExecOutputResponse = self
            .call("PutExecOutput", request, Duration::from_secs(40))
            .await?;
        Ok(answer.cancelled)
    }

    async fn fail(&self, session_id: &str, failure: String) {
        tracing::warn!(session = %session_id, %failure, "exec session failed");
        let request = PutExecOutputRequest {
            session_id: session_id.to_string(),
            failure: Some(failure),
            ..PutExecOutputRequest::default()
        };
        if let Err(e) = self.put(&request).await {
            tracing::warn!(session = %session_id, error = %e, "reporting the exec failure failed");
        }
    }
}

/// Runs the sessions of this instance's tasks until the task is aborted.
/// `credentials` follows the agent's credential (it changes when the agent
/// registers again).
pub async fn run(
    client: ServerClient,
    credentials: watch::Receiver<Credentials>,
    runtime: Arc<dyn Runtime>,
) {
    let relay = Relay {
        client,
        credentials,
    };
    let mut delay = Duration::from_millis(200);
    loop {
        let answer: Result<PollExecSessionsResponse, ClientError> = relay
            .call(
                "PollExecSessions",
                &PollExecSessionsRequest {
                    wait_seconds: POLL_WAIT_SECONDS,
                },
                Duration::from_secs(u64::from(POLL_WAIT_SECONDS) + 15),
            )
            .await;
        match answer {
            Ok(answer) => {
                delay = Duration::from_millis(200);
                for session in answer.sessions {
                    tracing::info!(session = %session.session_id, task = %session.task_arn, container = %session.container_name, "exec session");
                    tokio::spawn(run_session(relay.clone(), runtime.clone(), session));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "polling for exec sessions failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The runtime id of the task's container `name` on this host.
async fn container_id(
    runtime: &dyn Runtime,
    task_arn: &str,
    name: &str,
) -> Result<Option<String>, berth_runtime::RuntimeError> {
    let owned = runtime
        .list_owned(spec::LABEL_TASK_ARN, Some(task_arn))
        .await?;
    Ok(owned
        .into_iter()
        .find(|c| c.labels.get(spec::LABEL_CONTAINER_NAME).map(String::as_str) == Some(name))
        .map(|c| c.id))
}

async fn run_session(relay: Relay, runtime: Arc<dyn Runtime>, session: ExecSessionAssignment) {
    let id = session.session_id.clone();
    let container =
        match container_id(runtime.as_ref(), &session.task_arn, &session.container_name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return relay
                    .fail(
                        &id,
                        format!(
                        "The container {} of the task is not running on its container instance.",
                        session.container_name
                    ),
                    )
                    .await
            }
            Err(e) => {
                return relay
                    .fail(&id, format!("The container runtime failed: {e}"))
                    .await
            }
        };
    let exec_spec = ExecSpec {
        command: session.command.clone(),
        stdin: session.interactive,
        tty: session.tty,
        size: session.size.map(|s| (s.rows, s.cols)),
    };
    let process = match runtime.exec(&container, &exec_spec).await {
        Ok(p) => p,
        Err(e) => {
            return relay
                .fail(&id, format!("The command could not be started: {e}"))
                .await
        }
    };
    let exec_id = process.id.clone();
    let (cancel_tx, mut cancelled) = watch::channel(false);
    // Input (and terminal sizes) from the client.
    let input_pump = {
        let relay = relay.clone();
        let runtime = runtime.clone();
        let id = id.clone();
        let exec_id = exec_id.clone();
        let mut input = Some(process.input);
        let interactive = session.interactive;
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let answer: Result<GetExecInputResponse, ClientError> = relay
                    .call(
                        "GetExecInput",
                        &GetExecInputRequest {
                            session_id: id.clone(),
                            wait_seconds: POLL_WAIT_SECONDS,
                        },
                        Duration::from_secs(u64::from(POLL_WAIT_SECONDS) + 15),
                    )
                    .await;
                let answer = match answer {
                    Ok(a) => a,
                    Err(ClientError::Api { code, .. }) if code == "InvalidParameterException" => {
                        // The session is gone on the server.
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(session = %id, error = %e, "reading exec input failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                delay = Duration::from_millis(200);
                if answer.cancelled {
                    let _ = cancel_tx.send(true);
                    return;
                }
                if let Some(size) = answer.resize {
                    let _ = runtime.exec_resize(&exec_id, size.rows, size.cols).await;
                }
                let data = b64().decode(answer.data.as_bytes()).unwrap_or_default();
                if interactive {
                    if let Some(writer) = input.as_mut() {
                        if !data.is_empty() && writer.write_all(&data).await.is_err() {
                            input = None;
                        }
                        if let Some(writer) = input.as_mut() {
                            let _ = writer.flush().await;
                        }
                    }
                    if answer.eof {
                        if let Some(mut writer) = input.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                }
            }
        })
    };
    // Output to the client, batched while more is ready.
    let mut output = process.output;
    let mut failure = None;
    loop {
        let first = tokio::select! {
            item = output.next() => item,
            _ = cancelled.wait_for(|c| *c) => {
                tracing::info!(session = %id, "exec session ended by the client");
                input_pump.abort();
                return;
            }
        };
        let Some(first) = first else { break };
        let mut chunks = Vec::new();
        let mut size = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Ok(ExecOutput::Stdout(data)) | Ok(ExecOutput::Stderr(data)) if data.is_empty() => {}
                Ok(out) => {
                    let (stream, data) = match out {
                        ExecOutput::Stdout(d) => ("stdout", d),
                        ExecOutput::Stderr(d) => ("stderr", d),
                    };
                    size += data.len();
                    chunks.push(OutputChunk {
                        stream: stream.to_string(),
                        data: b64().encode(data),
                    });
                }
                Err(e) => {
                    failure = Some(format!("The command's output broke off: {e}"));
                    break;
                }
            }
            if size < MAX_BATCH {
                if let Some(Some(more)) = futures::FutureExt::now_or_never(output.next()) {
                    next = Some(more);
                }
            }
        }
        if !chunks.is_empty() {
            let request = PutExecOutputRequest {
                session_id: id.clone(),
                chunks,
                ..PutExecOutputRequest::default()
            };
            match put_with_retries(&relay, &request).await {
                Ok(false) => {}
                Ok(true) | Err(_) => {
                    input_pump.abort();
                    return;
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    input_pump.abort();
    // The stream ends as the command exits; its code follows shortly.
    let mut exit_code = None;
    for _ in 0..50 {
        match runtime.exec_exit_code(&exec_id).await {
            Ok(Some(code)) => {
                exit_code = Some(code);
                break;
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                failure.get_or_insert(format!("The command's exit code is unknown: {e}"));
                break;
            }
        }
    }
    let request = PutExecOutputRequest {
        session_id: id.clone(),
        chunks: Vec::new(),
        exit_code: exit_code.map(|c| i32::try_from(c).unwrap_or(-1)),
        failure: match (exit_code, failure) {
            (_, Some(f)) => Some(f),
            (None, None) => Some("The command's exit code is unknown.".into()),
            (Some(_), None) => None,
        },
    };
    if let Err(e) = put_with_retries(&relay, &request).await {
        tracing::warn!(session = %id, error = %e, "reporting the end of the exec session failed");
    }
}

async fn put_with_retries(
    relay: &Relay,
    request: &PutExecOutputRequest,
) -> Result<bool, ClientError> {
    let mut delay = Duration::from_millis(200);
    for _ in 0..5 {
        match relay.put(request).await {
            Err(e @ ClientError::Unreachable(_)) => {
                tracing::debug!(error = %e, "sending exec output failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    relay.put(request).await
}
