//! `berth exec`: a command run in a task's container, its input and output
//! relayed by the server between the client and the agent that runs the
//! task, both of which only ever call the server (so the agent may be on
//! any host that reaches the server).
//!
//! Two halves, both AWS JSON 1.1 over the gateway:
//!
//! - the client's (`BerthExecV1.<Operation>`, signed for `ecs` with the
//!   user's credentials): `StartExecSession` is authorized as
//!   `ecs:ExecuteCommand` on the task (with `ecs:cluster`, `ecs:task` and
//!   `ecs:container-name`) and refused as ECS's ExecuteCommand is; then
//!   `SendExecInput` / `ReadExecOutput` (a long poll) / `EndExecSession`,
//!   which only the principal that started the session may call;
//! - the agent's, in the agent protocol (`BerthAgentV1`, signed with the
//!   instance's agent credential): `PollExecSessions` (a long poll for the
//!   sessions of tasks on its instance), `GetExecInput` (a long poll) and
//!   `PutExecOutput`.
//!
//! Bytes travel base64-encoded. Output frames are numbered: the client
//! acknowledges the last frame it received with its next read, and the
//! server keeps frames until they are acknowledged (a lost answer loses
//! nothing).

use serde::{Deserialize, Serialize};

/// The client half's target prefix.
pub const TARGET_PREFIX: &str = "BerthExecV1";
/// The IAM action a session needs, as ECS's ExecuteCommand.
pub const EXECUTE_COMMAND_ACTION: &str = "ecs:ExecuteCommand";
/// Longest long poll, in seconds, on either half.
pub const MAX_WAIT_SECONDS: u32 = 20;

/// A terminal's size.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StartExecSessionRequest {
    /// The cluster's name or ARN (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The task's id or ARN.
    pub task: String,
    /// The container's name (may be omitted when the task has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments (not run through a shell).
    pub command: Vec<String>,
    /// Keep the command's standard input open (`-i`).
    #[serde(default)]
    pub interactive: bool,
    /// Give the command a terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<TerminalSize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StartExecSessionResponse {
    pub session_id: String,
    pub task_arn: String,
    pub container_name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SendExecInputRequest {
    pub session_id: String,
    /// Base64 of the bytes to write to the command's standard input.
    #[serde(default)]
    pub data: String,
    /// Close the command's standard input after `data`.
    #[serde(default)]
    pub eof: bool,
    /// The client's terminal changed size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<TerminalSize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SendExecInputResponse {}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadExecOutputRequest {
    pub session_id: String,
    /// The last frame received (0: none).
    #[serde(default)]
    pub ack: u64,
    /// How long to wait for output (at most [`MAX_WAIT_SECONDS`]).
    #[serde(default)]
    pub wait_seconds: u32,
}

/// One piece of output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecFrame {
    pub seq: u64,
    /// `stdout` or `stderr` (a terminal's output is `stdout`).
    pub stream: String,
    /// Base64 of the bytes.
    pub data: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadExecOutputResponse {
    pub frames: Vec<ExecFrame>,
    /// Set once every frame was delivered and the command ended.
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the command could not run or was cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndExecSessionRequest {
    pub session_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndExecSessionResponse {}

// The agent's half (`BerthAgentV1`).

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollExecSessionsRequest {
    #[serde(default)]
    pub wait_seconds: u32,
}

/// A session for the agent to run: `docker exec` of `command` in the
/// task's container `container_name`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecSessionAssignment {
    pub session_id: String,
    pub task_arn: String,
    pub container_name: String,
    pub command: Vec<String>,
    pub interactive: bool,
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<TerminalSize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollExecSessionsResponse {
    /// Sessions not given to the agent before (each is given once).
    pub sessions: Vec<ExecSessionAssignment>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetExecInputRequest {
    pub session_id: String,
    #[serde(default)]
    pub wait_seconds: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetExecInputResponse {
    /// Base64 of the input received since the last call.
    pub data: String,
    /// The client closed the command's input (after `data`).
    pub eof: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<TerminalSize>,
    /// The client went away or ended the session: stop the command.
    pub cancelled: bool,
}

/// Output of the agent's command (no `seq`: the server numbers frames).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputChunk {
    pub stream: String,
    pub data: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PutExecOutputRequest {
    pub session_id: String,
    #[serde(default)]
    pub chunks: Vec<OutputChunk>,
    /// The command ended with this code (after `chunks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command could not run or was cut off (ends the session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PutExecOutputResponse {
    /// The client went away or ended the session: stop the command.
    pub cancelled: bool,
}
