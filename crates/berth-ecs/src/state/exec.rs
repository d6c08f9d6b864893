//! The relay of `berth exec` sessions (see `berth_model::exec_protocol`):
//! the client and the agent that runs the task each call the server, and
//! the hub passes input one way and output the other, waking whichever side
//! long-polls.
//!
//! Sessions live in the memory of the server that opened them: the client
//! and the agent must reach the same server (with several servers, the one
//! the client started the session on). A session nobody drives expires:
//! not taken by its agent within [`CLAIM_TIMEOUT`], an agent silent for
//! [`IDLE_TIMEOUT`] (the session fails), or a client silent for as long
//! (the command is stopped).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use berth_model::exec_protocol::{
    ExecFrame, ExecSessionAssignment, GetExecInputResponse, OutputChunk, PutExecOutputRequest,
    PutExecOutputResponse, ReadExecOutputResponse, SendExecInputRequest, TerminalSize,
    MAX_WAIT_SECONDS,
};
use berth_model::AwsError;
use tokio::sync::watch;

/// How long an agent has to take a new session.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long either side may stay silent before the session ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Sessions one server relays at once.
pub const MAX_SESSIONS: usize = 256;
/// Output bytes held for a client that does not read; the agent's writes
/// wait past it.
const MAX_BUFFERED: usize = 1024 * 1024;
/// Input bytes held for an agent that does not read.
const MAX_INPUT: usize = 1024 * 1024;

/// The container instance whose agent runs a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub account: String,
    pub region: String,
    /// The instance's cluster (a Fargate task's host cluster).
    pub cluster: String,
    pub instance_id: String,
}

/// A session to open: who may drive it, where it runs, what it runs.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The ARN of the principal that started it.
    pub owner: String,
    pub account: String,
    pub target: ExecTarget,
    pub assignment: ExecSessionAssignment,
}

#[derive(Debug)]
struct State {
    created: Instant,
    claimed: bool,
    input: Vec<u8>,
    input_eof: bool,
    resize: Option<TerminalSize>,
    frames: VecDeque<ExecFrame>,
    buffered: usize,
    next_seq: u64,
    exit_code: Option<i32>,
    failure: Option<String>,
    /// The agent reported the end (an exit code or a failure).
    ended: bool,
    /// The client ended the session or went away.
    cancelled: bool,
    client_seen: Instant,
    agent_seen: Instant,
}

#[derive(Debug)]
struct Session {
    owner: String,
    account: String,
    target: ExecTarget,
    assignment: ExecSessionAssignment,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The sessions this server relays.
#[derive(Debug)]
pub struct ExecHub {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Bumped when a session opens (agents long-poll on it).
    opened: watch::Sender<u64>,
}

impl Default for ExecHub {
    fn default() -> Self {
        ExecHub {
            sessions: Mutex::new(HashMap::new()),
            opened: watch::channel(0).0,
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn not_found(id: &str) -> AwsError {
    AwsError::bad_request(
        "InvalidParameterException",
        format!("The exec session {id} was not found: it ended or expired."),
    )
}

fn decode(what: &str, data: &str) -> Result<Vec<u8>, AwsError> {
    b64().decode(data).map_err(|_| {
        AwsError::bad_request(
            "InvalidParameterException",
            format!("{what} must be base64-encoded."),
        )
    })
}

fn wait_of(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds.min(MAX_WAIT_SECONDS)))
}

impl ExecHub {
    pub fn new() -> Arc<ExecHub> {
        Arc::new(ExecHub::default())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends sessions nobody drives and forgets finished ones.
    fn reap(&self) {
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, session| {
            let mut s = session.state();
            let mut changed = false;
            if !s.ended && !s.claimed && now.duration_since(s.created) > CLAIM_TIMEOUT {
                s.failure = Some(format!(
                    "The agent of the task's container instance did not take the session within {} seconds: it is not connected to this server.",
                    CLAIM_TIMEOUT.as_secs()
                ));
                s.ended = true;
                changed = true;
            }
            if !s.ended && s.claimed && now.duration_since(s.agent_seen) > IDLE_TIMEOUT {
                s.failure = Some("The agent running the command stopped relaying it.".into());
                s.ended = true;
                changed = true;
            }
            if !s.cancelled && now.duration_since(s.client_seen) > IDLE_TIMEOUT {
                s.cancelled = true;
                changed = true;
            }
            let keep = !(s.cancelled && (s.ended || now.duration_since(s.client_seen) > 2 * IDLE_TIMEOUT))
                && !(s.ended && s.frames.is_empty() && now.duration_since(s.client_seen) > IDLE_TIMEOUT);
            drop(s);
            if changed {
                session.bump();
            }
            keep
        });
    }

    fn session(&self, id: &str) -> Result<Arc<Session>, AwsError> {
        self.reap();
        self.map().get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// The session `id`, if `owner` (of `account`) started it.
    fn owned(&self, owner: &str, account: &str, id: &str) -> Result<Arc<Session>, AwsError> {
        let session = self.session(id)?;
        if session.owner != owner || session.account != account {
            // As if it did not exist: ids are not secrets to hide behind.
            return Err(not_found(id));
        }
        session.state().client_seen = Instant::now();
        Ok(session)
    }

    /// The session `id`, if it runs on `target`.
    fn assigned(&self, target: &ExecTarget, id: &str) -> Result<Arc<Session>, AwsError> {
        let session = self.session(id)?;
        if session.target != *target {
            return Err(AwsError::access_denied(
                "The exec session does not run on this agent's container instance.",
            ));
        }
        session.state().agent_seen = Instant::now();
        Ok(session)
    }

    /// Opens a session; its id is `new.assignment.session_id`.
    pub fn open(&self, new: NewSession) -> Result<(), AwsError> {
        self.reap();
        let now = Instant::now();
        let mut map = self.map();
        if map.len() >= MAX_SESSIONS {
            return Err(AwsError::bad_request(
                "ThrottlingException",
                format!("This server relays {MAX_SESSIONS} exec sessions at most; try again when one ends."),
            ));
        }
        let id = new.assignment.session_id.clone();
        map.insert(
            id,
            Arc::new(Session {
                owner: new.owner,
                account: new.account,
                target: new.target,
                assignment: new.assignment,
                state: Mutex::new(State {
                    created: now,
                    claimed: false,
                    input: Vec::new(),
                    input_eof: false,
                    resize: None,
                    frames: VecDeque::new(),
                    buffered: 0,
                    next_seq: 1,
                    exit_code: None,
                    failure: None,
                    ended: false,
                    cancelled: false,
                    client_seen: now,
                    agent_seen: now,
                }),
                changed: watch::channel(0).0,
            }),
        );
        drop(map);
        self.opened.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Sessions for `target`'s agent not given to it yet (each is given
    /// once), waiting up to `wait_seconds` for one.
    pub async fn poll_sessions(
        &self,
        target: &ExecTarget,
        wait_seconds: u32,
    ) -> Vec<ExecSessionAssignment> {
        let deadline = tokio::time::Instant::now() + wait_of(wait_seconds);
        let mut opened = self.opened.subscribe();
        loop {
            opened.borrow_and_update();
            self.reap();
            let mut out = Vec::new();
            for session in self.map().values() {
                if session.target != *target {
                    continue;
                }
                let mut s = session.state();
                if s.claimed || s.ended || s.cancelled {
                    continue;
                }
                s.claimed = true;
                s.agent_seen = Instant::now();
                out.push(session.assignment.clone());
            }
            if !out.is_empty() {
                return out;
            }
            if tokio::time::timeout_at(deadline, opened.changed())
                .await
                .is_err()
            {
                return out;
            }
        }
    }

    /// The client's input, waiting up to `wait_seconds` for some.
    pub async fn agent_input(
        &self,
        target: &ExecTarget,
        id: &str,
        wait_seconds: u32,
    ) -> Result<GetExecInputResponse, AwsError> {
        let session = self.assigned(target, id)?;
        let deadline = tokio::time::Instant::now() + wait_of(wait_seconds);
        let mut changed = session.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let mut s = session.state();
                let ready = !s.input.is_empty() || s.input_eof || s.resize.is_some() || s.cancelled;
                let timed_out = tokio::time::Instant::now() >= deadline;
                if ready || timed_out {
                    let data = std::mem::take(&mut s.input);
                    let answer = GetExecInputResponse {
                        data: b64().encode(data),
                        eof: s.input_eof,
                        resize: s.resize.take(),
                        cancelled: s.cancelled,
                    };
                    s.agent_seen = Instant::now();
                    drop(s);
                    session.bump();
                    return Ok(answer);
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// The command's output (and its end), from the agent. Waits while the
    /// client has much output unread.
    pub async fn agent_output(
        &self,
        target: &ExecTarget,
        input: PutExecOutputRequest,
    ) -> Result<PutExecOutputResponse, AwsError> {
        let mut chunks = Vec::with_capacity(input.chunks.len());
        for OutputChunk { stream, data } in input.chunks {
            if stream != "stdout" && stream != "stderr" {
                return Err(AwsError::bad_request(
                    "InvalidParameterException",
                    format!("stream must be stdout or stderr, not '{stream}'."),
                ));
            }
            chunks.push((stream, decode("data", &data)?));
        }
        let session = self.assigned(target, &input.session_id)?;
        let deadline = tokio::time::Instant::now() + wait_of(MAX_WAIT_SECONDS);
        let mut changed = session.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let mut s = session.state();
                let room = s.buffered < MAX_BUFFERED;
                if room || s.cancelled || tokio::time::Instant::now() >= deadline {
                    if !s.ended {
                        for (stream, data) in chunks {
                            if data.is_empty() {
                                continue;
                            }
                            let seq = s.next_seq;
                            s.next_seq += 1;
                            s.buffered += data.len();
                            s.frames.push_back(ExecFrame {
                                seq,
                                stream,
                                data: b64().encode(data),
                            });
                        }
                        if input.exit_code.is_some() || input.failure.is_some() {
                            s.exit_code = input.exit_code;
                            s.failure = input.failure;
                            s.ended = true;
                        }
                    }
                    let cancelled = s.cancelled;
                    s.agent_seen = Instant::now();
                    drop(s);
                    session.bump();
                    return Ok(PutExecOutputResponse { cancelled });
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// The client's input (and size changes) for the command.
    pub fn client_input(
        &self,
        owner: &str,
        account: &str,
        input: SendExecInputRequest,
    ) -> Result<(), AwsError> {
        let data = decode("data", &input.data)?;
        let session = self.owned(owner, account, &input.session_id)?;
        let mut s = session.state();
        if s.ended || s.cancelled {
            return Ok(());
        }
        if !data.is_empty() {
            if !session.assignment.interactive {
                return Err(AwsError::bad_request(
                    "InvalidParameterException",
                    "The session was started without interactive input.",
                ));
            }
            if s.input_eof {
                return Err(AwsError::bad_request(
                    "InvalidParameterException",
                    "The command's input was already closed.",
                ));
            }
            if s.input.len() + data.len() > MAX_INPUT {
                return Err(AwsError::bad_request(
                    "ThrottlingException",
                    "The command has not read its earlier input yet; send again shortly.",
                ));
            }
            s.input.extend_from_slice(&data);
        }
        if input.eof {
            s.input_eof = true;
        }
        if let Some(size) = input.resize {
            s.resize = Some(size);
        }
        drop(s);
        session.bump();
        Ok(())
    }

    /// Output after frame `ack`, waiting up to `wait_seconds` for some.
    pub async fn client_output(
        &self,
        owner: &str,
        account: &str,
        id: &str,
        ack: u64,
        wait_seconds: u32,
    ) -> Result<ReadExecOutputResponse, AwsError> {
        let session = self.owned(owner, account, id)?;
        let deadline = tokio::time::Instant::now() + wait_of(wait_seconds);
        let mut changed = session.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let mut s = session.state();
                while s.frames.front().is_some_and(|f| f.seq <= ack) {
                    if let Some(f) = s.frames.pop_front() {
                        let len = b64().decode(&f.data).map(|d| d.len()).unwrap_or(0);
                        s.buffered = s.buffered.saturating_sub(len);
                    }
                }
                let done = s.ended && s.frames.is_empty();
                if !s.frames.is_empty() || s.ended || tokio::time::Instant::now() >= deadline {
                    let answer = ReadExecOutputResponse {
                        frames: s.frames.iter().cloned().collect(),
                        done,
                        exit_code: if done { s.exit_code } else { None },
                        failure: if done { s.failure.clone() } else { None },
                    };
                    s.client_seen = Instant::now();
                    drop(s);
                    // The agent may be waiting for room.
                    session.bump();
                    return Ok(answer);
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// The client ends the session: the agent stops the command.
    pub fn client_end(&self, owner: &str, account: &str, id: &str) -> Result<(), AwsError> {
        let session = self.owned(owner, account, id)?;
        session.state().cancelled = true;
        session.bump();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ExecTarget {
        ExecTarget {
            account: "000000000000".into(),
            region: "us-east-1".into(),
            cluster: "default".into(),
            instance_id: "i1".into(),
        }
    }

    fn open(hub: &ExecHub, id: &str, interactive: bool) {
        hub.open(NewSession {
            owner: "arn:aws:iam::000000000000:user/u".into(),
            account: "000000000000".into(),
            target: target(),
            assignment: ExecSessionAssignment {
                session_id: id.into(),
                task_arn: "t".into(),
                container_name: "app".into(),
                command: vec!["sh".into()],
                interactive,
                tty: false,
                size: None,
            },
        })
        .unwrap();
    }

    const OWNER: &str = "arn:aws:iam::000000000000:user/u";
    const ACCOUNT: &str = "000000000000";

    #[tokio::test]
    async fn relays_input_output_and_the_exit_code() {
        let hub = ExecHub::new();
        open(&hub, "s1", true);
        // Another instance's agent sees nothing; this one gets it once.
        let mut other = target();
        other.instance_id = "i2".into();
        assert!(hub.poll_sessions(&other, 0).await.is_empty());
        assert_eq!(hub.poll_sessions(&target(), 0).await.len(), 1);
        assert!(hub.poll_sessions(&target(), 0).await.is_empty());
        assert_eq!(
            hub.agent_input(&other, "s1", 0).await.unwrap_err().code,
            "AccessDeniedException"
        );

        hub.client_input(
            OWNER,
            ACCOUNT,
            SendExecInputRequest {
                session_id: "s1".into(),
                data: b64().encode("hi\n"),
                eof: true,
                resize: None,
            },
        )
        .unwrap();
        let input = hub.agent_input(&target(), "s1", 5).await.unwrap();
        assert_eq!(b64().decode(&input.data).unwrap(), b"hi\n");
        assert!(input.eof && !input.cancelled);

        // A reader waiting is woken by the output.
        let reader = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.client_output(OWNER, ACCOUNT, "s1", 0, 10).await })
        };
        hub.agent_output(
            &target(),
            PutExecOutputRequest {
                session_id: "s1".into(),
                chunks: vec![
                    OutputChunk {
                        stream: "stdout".into(),
                        data: b64().encode("hi\n"),
                    },
                    OutputChunk {
                        stream: "stderr".into(),
                        data: b64().encode("err\n"),
                    },
                ],
                exit_code: Some(3),
                failure: None,
            },
        )
        .await
        .unwrap();
        let first = reader.await.unwrap().unwrap();
        assert_eq!(first.frames.len(), 2);
        assert!(!first.done, "not done until the frames are acknowledged");
        // Unacknowledged frames come again; acknowledged ones do not.
        let again = hub.client_output(OWNER, ACCOUNT, "s1", 0, 0).await.unwrap();
        assert_eq!(again.frames, first.frames);
        let last = hub.client_output(OWNER, ACCOUNT, "s1", 2, 0).await.unwrap();
        assert!(last.frames.is_empty() && last.done);
        assert_eq!(last.exit_code, Some(3));
    }

    #[tokio::test]
    async fn only_the_owner_drives_a_session() {
        let hub = ExecHub::new();
        open(&hub, "s1", false);
        let e = hub
            .client_output("arn:aws:iam::000000000000:user/other", ACCOUNT, "s1", 0, 0)
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        // Input to a session without -i is refused.
        let e = hub
            .client_input(
                OWNER,
                ACCOUNT,
                SendExecInputRequest {
                    session_id: "s1".into(),
                    data: b64().encode("x"),
                    eof: false,
                    resize: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        // Ending it tells the agent.
        hub.poll_sessions(&target(), 0).await;
        hub.client_end(OWNER, ACCOUNT, "s1").unwrap();
        assert!(hub.agent_input(&target(), "s1", 5).await.unwrap().cancelled);
        assert_eq!(
            hub.client_output(OWNER, ACCOUNT, "nope", 0, 0)
                .await
                .unwrap_err()
                .code,
            "InvalidParameterException"
        );
    }
}
