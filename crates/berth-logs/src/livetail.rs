//! StartLiveTail: an AWS event stream of the events appended to some log
//! groups, as the aws CLI v2's `aws logs start-live-tail` reads it.
//!
//! The response is `application/vnd.amazon.eventstream`: binary messages
//! (prelude with lengths and CRC32, headers, JSON payload, CRC32) framed
//! by `aws-smithy-eventstream`. As botocore expects of an AWS JSON 1.1
//! event stream, the first message is the `initial-response` event (the
//! output's other members, none here), then one `sessionStart`, then a
//! `sessionUpdate` at least every second (sooner, 100 ms after the first
//! new event, so a line shows within a fraction of a second) carrying at
//! most 500 events; a session that has more is marked `sampled`. After
//! three hours the session ends with a `SessionTimeoutException` event.
//!
//! Events come from the store's writer, which publishes what each commit
//! appended while anyone is tailing; a session that falls behind is told
//! so by the channel and reports itself as sampled.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use berth_model::shapes::logs;
use berth_model::{AwsError, ChunkSource, StreamingBody};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::filter::FilterPattern;
use crate::store::{Appended, GroupKey};

/// A session ends after three hours, as on AWS.
pub const SESSION_LIMIT: Duration = Duration::from_secs(3 * 60 * 60);
/// An update is sent at least this often, as on AWS.
const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// …and this soon after its first event.
const FIRST_EVENT_DELAY: Duration = Duration::from_millis(100);
/// The most events one update carries.
pub const MAX_EVENTS_PER_UPDATE: usize = 500;
/// Concurrent sessions per account, as AWS's quota.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 15;

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Vec<u8> {
    let message = Message::new_from_parts(headers, payload);
    let mut out = Vec::new();
    // Writing into a Vec fails only for a message over 16 MB, which an
    // update of 500 events of at most 1 MB… can approach; such an update
    // is replaced by an exception event.
    match aws_smithy_eventstream::frame::write_message_to(&message, &mut out) {
        Ok(()) => out,
        Err(e) => {
            tracing::warn!(error = %e, "a live tail message could not be framed");
            exception(
                "SessionStreamingException",
                "Berth could not frame a live tail update.",
            )
        }
    }
}

fn string_header(name: &'static str, value: &'static str) -> Header {
    Header::new(name, HeaderValue::String(value.into()))
}

/// One `:message-type: event` message.
pub fn event(event_type: &'static str, payload: Vec<u8>) -> Vec<u8> {
    frame(
        vec![
            string_header(":message-type", "event"),
            string_header(":event-type", event_type),
            string_header(":content-type", "application/json"),
        ],
        payload,
    )
}

/// One `:message-type: exception` message (a modeled error of the stream).
pub fn exception(kind: &'static str, message: &str) -> Vec<u8> {
    let payload = serde_json::json!({ "message": message }).to_string();
    let message = Message::new_from_parts(
        vec![
            string_header(":message-type", "exception"),
            string_header(":exception-type", kind),
            string_header(":content-type", "application/json"),
        ],
        payload.into_bytes(),
    );
    let mut out = Vec::new();
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}

/// Live tail sessions open, per account, against the quota.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, usize>>,
}

/// One open session's place in [`Sessions`]; released on drop.
#[derive(Debug)]
pub struct SessionSlot {
    sessions: Arc<Sessions>,
    account: String,
}

impl Sessions {
    pub fn take(self: &Arc<Self>, account: &str) -> Result<SessionSlot, AwsError> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(account.to_string()).or_insert(0);
        if *count >= MAX_SESSIONS_PER_ACCOUNT {
            return Err(AwsError::bad_request(
                "LimitExceededException",
                format!(
                    "You have reached the maximum number of concurrent Live Tail sessions \
                     ({MAX_SESSIONS_PER_ACCOUNT}) for this account."
                ),
            ));
        }
        *count += 1;
        Ok(SessionSlot {
            sessions: Arc::clone(self),
            account: account.to_string(),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self
            .sessions
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.account);
            }
        }
    }
}

/// Which streams of which groups a session shows.
pub struct TailScope {
    /// Each group with the identifier events report for it.
    pub groups: HashMap<GroupKey, String>,
    pub stream_names: Option<HashSet<String>>,
    pub stream_prefixes: Option<Vec<String>>,
    pub pattern: FilterPattern,
}

impl TailScope {
    fn wants_stream(&self, stream: &str) -> bool {
        self.stream_names
            .as_ref()
            .is_none_or(|names| names.contains(stream))
            && self
                .stream_prefixes
                .as_ref()
                .is_none_or(|prefixes| prefixes.iter().any(|p| stream.starts_with(p.as_str())))
    }
}

/// One session: a [`ChunkSource`] the gateway drains into the response.
pub struct LiveTail {
    queued: std::collections::VecDeque<Vec<u8>>,
    receiver: broadcast::Receiver<Arc<Appended>>,
    scope: TailScope,
    ends_at: Instant,
    last_update: Instant,
    first_pending: Option<Instant>,
    pending: Vec<logs::LiveTailSessionLogEvent>,
    sampled: bool,
    ended: bool,
    _slot: SessionSlot,
}

impl LiveTail {
    /// A session that starts by sending `start`.
    pub fn start(
        receiver: broadcast::Receiver<Arc<Appended>>,
        scope: TailScope,
        start: &logs::LiveTailSessionStart,
        slot: SessionSlot,
        limit: Duration,
    ) -> StreamingBody {
        let now = Instant::now();
        let mut queued = std::collections::VecDeque::new();
        queued.push_back(event("initial-response", b"{}".to_vec()));
        queued.push_back(event(
            "sessionStart",
            serde_json::to_vec(start).unwrap_or_else(|_| b"{}".to_vec()),
        ));
        StreamingBody {
            content_type: CONTENT_TYPE,
            chunks: Box::new(LiveTail {
                queued,
                receiver,
                scope,
                ends_at: now + limit,
                last_update: now,
                first_pending: None,
                pending: Vec::new(),
                sampled: false,
                ended: false,
                _slot: slot,
            }),
        }
    }

    fn take(&mut self, batch: &Appended) {
        let Some(identifier) = self.scope.groups.get(&batch.group) else {
            return;
        };
        if !self.scope.wants_stream(&batch.stream) {
            return;
        }
        for (timestamp, message) in &batch.events {
            if !self.scope.pattern.matches(message) {
                continue;
            }
            if self.pending.len() >= MAX_EVENTS_PER_UPDATE {
                self.sampled = true;
                continue;
            }
            self.first_pending.get_or_insert_with(Instant::now);
            self.pending.push(logs::LiveTailSessionLogEvent {
                log_stream_name: Some(batch.stream.clone()),
                log_group_identifier: Some(identifier.clone()),
                message: Some(message.clone()),
                timestamp: Some(*timestamp),
                ingestion_time: Some(batch.ingest_ms),
            });
        }
    }

    fn update(&mut self) -> Vec<u8> {
        let update = logs::LiveTailSessionUpdate {
            session_metadata: Some(logs::LiveTailSessionMetadata {
                sampled: Some(self.sampled),
            }),
            session_results: Some(std::mem::take(&mut self.pending)),
        };
        self.sampled = false;
        self.first_pending = None;
        self.last_update = Instant::now();
        event(
            "sessionUpdate",
            serde_json::to_vec(&update).unwrap_or_else(|_| b"{}".to_vec()),
        )
    }

    fn next_flush(&self) -> Instant {
        let regular = self.last_update + UPDATE_EVERY;
        match self.first_pending {
            Some(first) => regular.min(first + FIRST_EVENT_DELAY),
            None => regular,
        }
    }
}

#[async_trait::async_trait]
impl ChunkSource for LiveTail {
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if let Some(chunk) = self.queued.pop_front() {
            return Some(chunk);
        }
        if self.ended {
            return None;
        }
        loop {
            let flush_at = self.next_flush();
            if flush_at >= self.ends_at {
                tokio::time::sleep_until(self.ends_at).await;
                self.ended = true;
                return Some(exception(
                    "SessionTimeoutException",
                    "The Live Tail session has reached its maximum duration of 3 hours.",
                ));
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(batch) => {
                        self.take(&batch);
                        if self.pending.len() >= MAX_EVENTS_PER_UPDATE {
                            return Some(self.update());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.sampled = true,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.ended = true;
                        return Some(exception(
                            "SessionStreamingException",
                            "The log store closed while the Live Tail session was open.",
                        ));
                    }
                },
                _ = tokio::time::sleep_until(flush_at) => return Some(self.update()),
            }
        }
    }
}

impl crate::LogsService {
    pub(crate) fn start_live_tail(
        &self,
        ctx: &berth_model::RequestContext,
        input: logs::StartLiveTailRequest,
    ) -> Result<StreamingBody, AwsError> {
        use crate::limits::{self, invalid};
        let identifiers = input
            .log_group_identifiers
            .as_ref()
            .ok_or_else(|| limits::missing("logGroupIdentifiers"))?;
        if identifiers.is_empty() || identifiers.len() > 10 {
            return Err(limits::constraint(
                &format!("{identifiers:?}"),
                "logGroupIdentifiers",
                "Member must have length between 1 and 10",
            ));
        }
        let mut groups = Vec::new();
        for identifier in identifiers {
            if identifier.ends_with('*') {
                return Err(invalid(format!(
                    "Log group identifier {identifier} must not end with '*'."
                )));
            }
            let group = crate::service::resolve_group(ctx, &None, &Some(identifier.clone()))?;
            groups.push((identifier.clone(), group));
        }
        if input.log_stream_names.is_some() && input.log_stream_name_prefixes.is_some() {
            return Err(invalid(
                "logStreamNames and logStreamNamePrefixes are mutually exclusive parameters.",
            ));
        }
        for (list, member) in [
            (&input.log_stream_names, "logStreamNames"),
            (&input.log_stream_name_prefixes, "logStreamNamePrefixes"),
        ] {
            let Some(list) = list else { continue };
            if list.is_empty() || list.len() > 100 {
                return Err(limits::constraint(
                    &format!("{list:?}"),
                    member,
                    "Member must have length between 1 and 100",
                ));
            }
            if identifiers.len() != 1 {
                return Err(invalid(format!(
                    "{member} can be specified only with exactly one log group."
                )));
            }
            for name in list {
                limits::check_stream_name(name, member)?;
            }
        }
        let pattern_text = input.log_event_filter_pattern.clone().unwrap_or_default();
        if pattern_text.chars().count() > 1024 {
            return Err(limits::constraint(
                &pattern_text,
                "logEventFilterPattern",
                "Member must have length less than or equal to 1024",
            ));
        }
        let pattern = FilterPattern::parse(&pattern_text)
            .map_err(|e| invalid(format!("Invalid filter pattern: {e}")))?;
        let requirements: Vec<berth_model::Requirement> = groups
            .iter()
            .map(|(_, g)| self.group_requirement("StartLiveTail", g.classic(), g))
            .collect();
        ctx.authorize(&requirements)?;
        let mut scoped = HashMap::new();
        {
            let catalog = self.store.catalog();
            for (identifier, group) in &groups {
                let missing = || {
                    AwsError::bad_request(
                        "ResourceNotFoundException",
                        format!("The specified log group {identifier} does not exist."),
                    )
                };
                let name = group.name_in(ctx).map_err(|_| missing())?;
                catalog
                    .group(&ctx.account_id, &ctx.region, name)
                    .ok_or_else(missing)?;
                scoped.insert(
                    crate::store::group_key(&ctx.account_id, &ctx.region, name),
                    identifier.clone(),
                );
            }
        }
        let slot = self.tails.take(&ctx.account_id)?;
        // Subscribe before answering, so nothing appended after the call is
        // missed.
        let receiver = self.store.subscribe();
        let start = logs::LiveTailSessionStart {
            request_id: Some(ctx.request_id.clone()),
            session_id: Some(uuid::Uuid::new_v4().to_string()),
            log_group_identifiers: Some(identifiers.clone()),
            log_stream_names: input.log_stream_names.clone(),
            log_stream_name_prefixes: input.log_stream_name_prefixes.clone(),
            log_event_filter_pattern: Some(pattern_text),
        };
        let scope = TailScope {
            groups: scoped,
            stream_names: input
                .log_stream_names
                .map(|names| names.into_iter().collect()),
            stream_prefixes: input.log_stream_name_prefixes,
            pattern,
        };
        Ok(LiveTail::start(
            receiver,
            scope,
            &start,
            slot,
            SESSION_LIMIT,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    fn decode(mut bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while bytes.has_remaining() {
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            out.push(aws_smithy_eventstream::frame::read_message_from(&bytes[..len]).unwrap());
            bytes = &bytes[len..];
        }
        out
    }

    fn header<'a>(m: &'a Message, name: &str) -> &'a str {
        m.headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str())
            .unwrap()
    }

    #[test]
    fn messages_round_trip_through_the_event_stream_codec() {
        let mut wire = event("initial-response", b"{}".to_vec());
        wire.extend(exception("SessionTimeoutException", "done"));
        let messages = decode(&wire);
        assert_eq!(header(&messages[0], ":message-type"), "event");
        assert_eq!(header(&messages[0], ":event-type"), "initial-response");
        assert_eq!(&messages[0].payload()[..], b"{}");
        assert_eq!(header(&messages[1], ":message-type"), "exception");
        assert_eq!(
            header(&messages[1], ":exception-type"),
            "SessionTimeoutException"
        );
    }

    fn scope(group: &GroupKey) -> TailScope {
        TailScope {
            groups: [(group.clone(), "arn:g".to_string())].into_iter().collect(),
            stream_names: None,
            stream_prefixes: Some(vec!["web".into()]),
            pattern: FilterPattern::parse("ERROR").unwrap(),
        }
    }

    #[tokio::test]
    async fn a_session_sends_start_then_matching_events_quickly_then_times_out() {
        let (tx, rx) = broadcast::channel(16);
        let group: GroupKey = ("a".into(), "r".into(), "/g".into());
        let sessions = Arc::new(Sessions::default());
        let slot = sessions.take("a").unwrap();
        let start = logs::LiveTailSessionStart {
            session_id: Some("s".into()),
            ..Default::default()
        };
        let mut body = LiveTail::start(rx, scope(&group), &start, slot, Duration::from_secs(2));
        let first = body.chunks.next_chunk().await.unwrap();
        assert_eq!(
            header(&decode(&first)[0], ":event-type"),
            "initial-response"
        );
        let second = body.chunks.next_chunk().await.unwrap();
        assert_eq!(header(&decode(&second)[0], ":event-type"), "sessionStart");
        let began = std::time::Instant::now();
        tx.send(Arc::new(Appended {
            group: group.clone(),
            stream: "web-1".into(),
            ingest_ms: 5,
            events: vec![(1, "ERROR one".into()), (2, "fine".into())],
        }))
        .unwrap();
        tx.send(Arc::new(Appended {
            group: group.clone(),
            stream: "db-1".into(),
            ingest_ms: 5,
            events: vec![(3, "ERROR other stream".into())],
        }))
        .unwrap();
        let update = body.chunks.next_chunk().await.unwrap();
        assert!(began.elapsed() < Duration::from_millis(500));
        let m = &decode(&update)[0];
        assert_eq!(header(m, ":event-type"), "sessionUpdate");
        let parsed: logs::LiveTailSessionUpdate = serde_json::from_slice(m.payload()).unwrap();
        let results = parsed.session_results.unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].message.as_deref(), Some("ERROR one"));
        assert_eq!(results[0].log_group_identifier.as_deref(), Some("arn:g"));
        // Quiet: an empty update about a second later.
        let empty = body.chunks.next_chunk().await.unwrap();
        let parsed: logs::LiveTailSessionUpdate =
            serde_json::from_slice(decode(&empty)[0].payload()).unwrap();
        assert!(parsed.session_results.unwrap().is_empty());
        // The session's limit: a timeout exception, then the end.
        let last = body.chunks.next_chunk().await.unwrap();
        assert_eq!(
            header(&decode(&last)[0], ":exception-type"),
            "SessionTimeoutException"
        );
        assert!(body.chunks.next_chunk().await.is_none());
        drop(body);
        // The slot was given back.
        for _ in 0..MAX_SESSIONS_PER_ACCOUNT {
            std::mem::forget(sessions.take("a").unwrap());
        }
        assert_eq!(
            sessions.take("a").unwrap_err().code,
            "LimitExceededException"
        );
    }
}
