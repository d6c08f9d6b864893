//! The agent's ingest path: container output read from `docker logs` (with
//! nanosecond timestamps) is shipped here in batches. Each stream keeps a
//! durable cursor, the greatest [`Position`] stored, written in the same
//! transaction as the events, so an agent may re-send any batch after any
//! crash (its own or the server's) without duplicating events.

use berth_model::AwsError;
use berth_util::time::now_millis;
use serde::{Deserialize, Serialize};

use crate::limits::{self, AWSLOGS_DRIVER_MAX_MESSAGE_BYTES};
use crate::service::LogsService;
use crate::store::{
    group_key, group_not_found, stream_not_found, NewEvent, NewGroup, Outcome, WriteOp,
};

/// Where a line sits in a container's output: its `docker logs` timestamp in
/// nanoseconds and a tie-breaker for lines sharing that timestamp.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Position {
    pub nanos: i64,
    pub seq: u32,
}

/// One line of container output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEvent {
    pub timestamp_ms: i64,
    pub message: String,
    pub position: Position,
}

impl LogsService {
    /// Creates the stream (and, with `create_group`, the group) unless it
    /// exists. Idempotent. Without `create_group` a missing group is
    /// `ResourceNotFoundException`, as the awslogs driver sees it.
    pub async fn ensure_stream(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<(), AwsError> {
        limits::check_group_name(group, "logGroupName")?;
        limits::check_stream_name(stream, "logStreamName")?;
        let exists = self
            .store
            .catalog()
            .group(account, region, group)
            .is_some_and(|g| g.streams.contains_key(stream));
        if exists {
            return Ok(());
        }
        let now = now_millis();
        self.store
            .write(WriteOp::CreateStream {
                key: group_key(account, region, group),
                stream: stream.to_string(),
                created_ms: now,
                create_group: create_group.then(|| NewGroup {
                    created_ms: now,
                    kms_key_id: None,
                    class: "STANDARD".to_string(),
                    tags: Default::default(),
                }),
                exists_ok: true,
            })
            .await?;
        Ok(())
    }

    /// Appends the events whose position is past the stream's cursor and
    /// advances the cursor in the same transaction; returns the cursor after
    /// the call. Events are stored whatever their age (the 14-day and 2-hour
    /// rules are for PutLogEvents callers); a line longer than the awslogs
    /// driver's event size is split as that driver splits it; empty lines
    /// are skipped (CloudWatch stores no empty events) but still advance the
    /// cursor.
    pub async fn ingest(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        mut events: Vec<AgentEvent>,
    ) -> Result<Option<Position>, AwsError> {
        limits::check_group_name(group, "logGroupName")?;
        limits::check_stream_name(stream, "logStreamName")?;
        {
            let catalog = self.store.catalog();
            let entry = catalog
                .group(account, region, group)
                .ok_or_else(group_not_found)?;
            let info = entry.streams.get(stream).ok_or_else(stream_not_found)?;
            if events.is_empty() {
                return Ok(info.cursor);
            }
        }
        // Position order is the container's output order; a repeated
        // position within one batch is the same line sent twice.
        events.sort_by_key(|e| e.position);
        events.dedup_by_key(|e| e.position);
        let highest = events.last().map(|e| e.position);
        let mut pieces = Vec::with_capacity(events.len());
        for event in events {
            if event.message.is_empty() {
                continue;
            }
            let timestamp = event.timestamp_ms.max(0);
            for message in limits::split_message(&event.message, AWSLOGS_DRIVER_MAX_MESSAGE_BYTES) {
                pieces.push(NewEvent {
                    timestamp,
                    message,
                    position: Some(event.position),
                });
            }
        }
        let outcome = self
            .store
            .write(WriteOp::Append {
                key: group_key(account, region, group),
                stream: stream.to_string(),
                events: pieces,
                ingest_ms: now_millis(),
                deduplicate: true,
                advance_cursor_to: highest,
            })
            .await?;
        match outcome {
            Outcome::Appended { cursor, .. } => Ok(cursor),
            _ => Ok(self.cursor(account, region, group, stream)),
        }
    }

    /// The stream's durable ingest cursor, if anything has been ingested.
    pub fn cursor(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
    ) -> Option<Position> {
        self.store
            .catalog()
            .group(account, region, group)
            .and_then(|g| g.streams.get(stream))
            .and_then(|s| s.cursor)
    }
}
