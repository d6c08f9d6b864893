//! `berth exec --cluster C --task T --container N [-i] [-t] -- CMD…`: runs
//! a command in a task's container, as `aws ecs execute-command` does on
//! AWS (which needs Session Manager's plugin). The call is signed with the
//! user's AWS credentials (environment, then the shared credentials and
//! config files, as the aws CLI finds them), authorized as
//! `ecs:ExecuteCommand` on the task and refused as ECS refuses it; the
//! server relays the session to the agent running the task
//! (`berth_model::exec_protocol`). Exits with the command's exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use berth_client::{ClientError, Credentials, ServerClient};
use berth_model::exec_protocol::{
    EndExecSessionRequest, EndExecSessionResponse, ReadExecOutputRequest, ReadExecOutputResponse,
    SendExecInputRequest, SendExecInputResponse, StartExecSessionRequest, StartExecSessionResponse,
    TerminalSize, MAX_WAIT_SECONDS, TARGET_PREFIX,
};

#[derive(clap::Args, Clone, Debug)]
pub struct ExecArgs {
    /// The task's cluster (name or ARN).
    #[arg(long, default_value = "default", value_name = "CLUSTER")]
    pub cluster: String,

    /// The task (id or ARN).
    #[arg(long, value_name = "TASK")]
    pub task: String,

    /// The container (may be omitted when the task has one).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,

    /// Keep the command's standard input open and send it this one's.
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Give the command a terminal (this terminal goes into raw mode).
    #[arg(short = 't', long)]
    pub tty: bool,

    /// The Berth server [default: AWS_ENDPOINT_URL_ECS, AWS_ENDPOINT_URL,
    /// else http://127.0.0.1:4566].
    #[arg(long = "endpoint-url", alias = "endpoint", value_name = "URL")]
    pub endpoint: Option<String>,

    /// The region [default: AWS_REGION, AWS_DEFAULT_REGION, the profile's
    /// region, else us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// The profile of ~/.aws/credentials and ~/.aws/config to sign with
    /// [default: AWS_PROFILE, else the environment's keys, else `default`].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Keys and session token to sign with.
struct Signer {
    credentials: Credentials,
    session_token: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_file(var: &str, default: &str) -> Option<PathBuf> {
    env(var)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join(default)))
}

/// The `key = value` pairs of section `[name]` of an INI file.
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == name;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

/// What the profile says in the credentials file, then the config file
/// (`[profile NAME]`, or `[default]`).
fn profile_values(profile: &str) -> Vec<(String, String)> {
    let mut values = Vec::new();
    if let Some(text) = home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        values.extend(ini_section(&text, profile));
    }
    if let Some(text) =
        home_file("AWS_CONFIG_FILE", "config").and_then(|p| std::fs::read_to_string(p).ok())
    {
        let section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        values.extend(ini_section(&text, &section));
    }
    values
}

fn value(values: &[(String, String)], key: &str) -> Option<String> {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// The credentials and region, found as the aws CLI finds them: an
/// explicit `--profile` first, then the environment's keys, then
/// AWS_PROFILE's (or the `default`) profile.
fn signer_and_region(args: &ExecArgs) -> anyhow::Result<(Signer, String)> {
    let explicit = args.profile.clone();
    let profile = explicit
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let values = profile_values(&profile);
    let from_env = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) if explicit.is_none() => Some(Signer {
            credentials: Credentials {
                access_key_id: id,
                secret_access_key: secret,
            },
            session_token: env("AWS_SESSION_TOKEN"),
        }),
        _ => None,
    };
    let signer = match from_env {
        Some(s) => s,
        None => match (
            value(&values, "aws_access_key_id"),
            value(&values, "aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Signer {
                credentials: Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                },
                session_token: value(&values, "aws_session_token"),
            },
            _ => bail!(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give \
                 keys to profile '{profile}' in ~/.aws/credentials"
            ),
        },
    };
    let region = args
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| value(&values, "region"))
        .unwrap_or_else(|| "us-east-1".into());
    Ok((signer, region))
}

fn endpoint(args: &ExecArgs) -> String {
    args.endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_ECS"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| "http://127.0.0.1:4566".into())
}

/// The terminal of file descriptor `fd`, set to raw mode until dropped.
struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    fn enable(fd: i32) -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it for a terminal
        // fd and fails (returning -1) for anything else.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read from the same fd.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// The size of the terminal on fd, if it is one.
fn terminal_size(fd: i32) -> Option<TerminalSize> {
    // SAFETY: winsize is plain data that TIOCGWINSZ fills.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) != 0 || size.ws_row == 0 {
            return None;
        }
        Some(TerminalSize {
            rows: size.ws_row,
            cols: size.ws_col,
        })
    }
}

/// Exit status when the command could not run (as `docker exec`'s 126).
const CANNOT_RUN: i32 = 126;
/// Exit status when the session could not start (as the aws CLI's 255).
const REFUSED: i32 = 255;

struct Session {
    client: ServerClient,
    signer: Signer,
    id: String,
}

impl Session {
    async fn call<I: serde::Serialize, O: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        call(&self.client, &self.signer, operation, input, timeout).await
    }

    async fn send(&self, request: SendExecInputRequest) -> Result<(), ClientError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self
                .call::<_, SendExecInputResponse>(
                    "SendExecInput",
                    &request,
                    Duration::from_secs(15),
                )
                .await
            {
                Err(ClientError::Api { code, .. }) if code == "ThrottlingException" => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other.map(|_| ()),
            }
        }
    }

    async fn end(&self) {
        let _ = self
            .call::<_, EndExecSessionResponse>(
                "EndExecSession",
                &EndExecSessionRequest {
                    session_id: self.id.clone(),
                },
                Duration::from_secs(5),
            )
            .await;
    }
}

async fn call<I: serde::Serialize, O: serde::de::DeserializeOwned>(
    client: &ServerClient,
    signer: &Signer,
    operation: &str,
    input: &I,
    timeout: Duration,
) -> Result<O, ClientError> {
    client
        .call_signed(
            &signer.credentials,
            signer.session_token.as_deref(),
            "ecs",
            TARGET_PREFIX,
            operation,
            input,
            timeout,
        )
        .await
}

/// Sends this process's standard input to the command, then closes it.
/// A thread reads it (blocking), so the session never waits on it.
async fn pump_input(session: std::sync::Arc<Session>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let n = stdin.read(&mut buffer).unwrap_or(0);
            if tx.blocking_send(buffer[..n].to_vec()).is_err() || n == 0 {
                return;
            }
        }
    });
    let b64 = base64::engine::general_purpose::STANDARD;
    while let Some(data) = rx.recv().await {
        let request = SendExecInputRequest {
            session_id: session.id.clone(),
            data: b64.encode(&data),
            eof: data.is_empty(),
            resize: None,
        };
        if session.send(request).await.is_err() || data.is_empty() {
            return;
        }
    }
}

/// Tells the command about this terminal's new sizes.
async fn pump_resizes(session: std::sync::Arc<Session>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        if let Some(size) = terminal_size(1).or_else(|| terminal_size(0)) {
            let request = SendExecInputRequest {
                session_id: session.id.clone(),
                resize: Some(size),
                ..SendExecInputRequest::default()
            };
            let _ = session.send(request).await;
        }
    }
}

pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    let code = exec(args).await?;
    std::process::exit(code);
}

/// Runs the session; answers the exit status `berth exec` ends with.
async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let (signer, region) = signer_and_region(&args)?;
    let url = endpoint(&args);
    let client = ServerClient::new(&url, &region).with_context(|| format!("server {url}"))?;
    let size = if args.tty {
        terminal_size(1).or_else(|| terminal_size(0))
    } else {
        None
    };
    let request = StartExecSessionRequest {
        cluster: Some(args.cluster.clone()),
        task: args.task.clone(),
        container: args.container.clone(),
        command: args.command.clone(),
        interactive: args.interactive,
        tty: args.tty,
        size,
    };
    let started: StartExecSessionResponse = match call(
        &client,
        &signer,
        "StartExecSession",
        &request,
        Duration::from_secs(30),
    )
    .await
    {
        Ok(s) => s,
        Err(ClientError::Api { code, message, .. }) => {
            eprintln!(
                "An error occurred ({code}) when calling the ExecuteCommand operation: {message}"
            );
            return Ok(REFUSED);
        }
        Err(e) => bail!("{e}"),
    };
    let session = std::sync::Arc::new(Session {
        client,
        signer,
        id: started.session_id,
    });
    // The terminal goes raw only once the session exists, and comes back
    // before anything is printed after it.
    let raw = if args.tty && args.interactive {
        RawMode::enable(0)
    } else {
        None
    };
    let mut tasks = Vec::new();
    if args.interactive {
        tasks.push(tokio::spawn(pump_input(session.clone())));
    }
    if args.tty {
        tasks.push(tokio::spawn(pump_resizes(session.clone())));
    }
    let outcome = tokio::select! {
        outcome = relay_output(&session) => outcome,
        _ = tokio::signal::ctrl_c() => {
            // Without a terminal in raw mode, ^C ends the session.
            session.end().await;
            Ok(Outcome { exit_code: Some(130), failure: None })
        }
    };
    for t in tasks {
        t.abort();
    }
    drop(raw);
    let outcome = outcome?;
    let _ = std::io::stdout().flush();
    if let Some(failure) = outcome.failure {
        eprintln!("berth exec: {failure}");
        return Ok(outcome.exit_code.unwrap_or(CANNOT_RUN));
    }
    Ok(outcome.exit_code.unwrap_or(CANNOT_RUN))
}

struct Outcome {
    exit_code: Option<i32>,
    failure: Option<String>,
}

/// Writes the command's output here until it ends.
async fn relay_output(session: &Session) -> anyhow::Result<Outcome> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ack = 0u64;
    let mut failures = 0;
    loop {
        let request = ReadExecOutputRequest {
            session_id: session.id.clone(),
            ack,
            wait_seconds: MAX_WAIT_SECONDS,
        };
        let answer: ReadExecOutputResponse = match session
            .call(
                "ReadExecOutput",
                &request,
                Duration::from_secs(u64::from(MAX_WAIT_SECONDS) + 15),
            )
            .await
        {
            Ok(a) => a,
            Err(e @ ClientError::Unreachable(_)) if failures < 5 => {
                failures += 1;
                tracing::debug!(error = %e, "reading output failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * failures)).await;
                continue;
            }
            Err(e) => bail!("{e}"),
        };
        failures = 0;
        for frame in &answer.frames {
            ack = ack.max(frame.seq);
            let data = b64.decode(&frame.data).unwrap_or_default();
            if frame.stream == "stderr" {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&data);
                let _ = err.flush();
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&data);
                let _ = out.flush();
            }
        }
        if answer.done {
            return Ok(Outcome {
                exit_code: answer.exit_code,
                failure: answer.failure,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ini_section;

    #[test]
    fn reads_ini_sections() {
        let text = "[default]\naws_access_key_id = A\n# c\n[profile dev]\nregion=eu-west-1\n[x]\n";
        assert_eq!(
            ini_section(text, "default"),
            vec![("aws_access_key_id".to_string(), "A".to_string())]
        );
        assert_eq!(
            ini_section(text, "profile dev"),
            vec![("region".to_string(), "eu-west-1".to_string())]
        );
        assert!(ini_section(text, "nope").is_empty());
    }
}
