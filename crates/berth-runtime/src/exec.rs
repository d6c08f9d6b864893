//! A command run in a running container ([`Runtime::exec`](crate::Runtime::exec)):
//! what `berth exec` asks the agent for.

use std::pin::Pin;

use futures::stream::BoxStream;
use tokio::io::AsyncWrite;

use crate::RuntimeError;

/// What to run and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// The command and its arguments (no shell).
    pub command: Vec<String>,
    /// Attach the command's standard input ([`ExecProcess::input`]).
    pub stdin: bool,
    /// Give the command a terminal (its output then comes as stdout only).
    pub tty: bool,
    /// The terminal's size (rows, columns).
    pub size: Option<(u16, u16)>,
}

/// A piece of the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// A started command. The output stream ends when the command exits (then
/// [`Runtime::exec_exit_code`](crate::Runtime::exec_exit_code) answers);
/// shutting `input` down closes the command's standard input.
pub struct ExecProcess {
    /// The runtime's id of the exec instance.
    pub id: String,
    pub output: BoxStream<'static, Result<ExecOutput, RuntimeError>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess").field("id", &self.id).finish()
    }
}
