//! Where this server's CloudWatch Logs calls go. With one server the log
//! store is its own. With several, the log store (SQLite, in the shared
//! directory) is opened by the leader alone — SQLite must have one writer —
//! and the other servers forward Logs API calls and agents' log shipping to
//! the leader (`cluster::Forwarder`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use berth_logs::LogsService;
use berth_model::agent_protocol::{LogPosition, TaskLogEvent};
use berth_model::shapes::logs;
use berth_model::{AwsError, JsonService, RequestContext};

use crate::cluster::{Forwarded, Forwarder};

pub struct LogsPlace {
    local: RwLock<Option<Arc<LogsService>>>,
    /// Where the log store lives (the leader opens it there).
    dir: PathBuf,
    forwarder: Option<Arc<Forwarder>>,
}

impl LogsPlace {
    /// The only server: its own log store, always open.
    pub fn single(service: Arc<LogsService>, dir: PathBuf) -> Arc<LogsPlace> {
        Arc::new(LogsPlace {
            local: RwLock::new(Some(service)),
            dir,
            forwarder: None,
        })
    }

    /// One of several servers: the log store opens when this server leads.
    pub fn clustered(dir: PathBuf, forwarder: Arc<Forwarder>) -> Arc<LogsPlace> {
        Arc::new(LogsPlace {
            local: RwLock::new(None),
            dir,
            forwarder: Some(forwarder),
        })
    }

    pub fn local(&self) -> Option<Arc<LogsService>> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens the log store here (this server became the leader).
    pub fn open_local(&self) -> anyhow::Result<Arc<LogsService>> {
        if let Some(service) = self.local() {
            return Ok(service);
        }
        let service = LogsService::open(&self.dir)?;
        *self.local.write().unwrap_or_else(|p| p.into_inner()) = Some(service.clone());
        Ok(service)
    }

    /// Stops serving the log store here (leadership lost); calls in flight
    /// finish on the handle they hold.
    pub fn close_local(&self) {
        self.local.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn forwarder(&self) -> Result<&Arc<Forwarder>, AwsError> {
        self.forwarder.as_ref().ok_or_else(|| {
            AwsError::new(
                503,
                "ServiceUnavailableException",
                "The log store is not open on this server.",
            )
        })
    }
}

/// CloudWatch Logs' API, served here or by the leader.
pub struct LogsApi(pub Arc<LogsPlace>);

#[async_trait::async_trait]
impl JsonService for LogsApi {
    fn target_prefix(&self) -> &'static str {
        logs::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        logs::SIGNING_NAME
    }

    fn max_body(&self, operation: &str) -> usize {
        berth_logs::max_body(operation)
    }

    fn streams(&self, operation: &str) -> bool {
        operation == "StartLiveTail"
    }

    /// StartLiveTail's event stream comes from the log store's own writer,
    /// so only the server holding the store serves it.
    async fn handle_streaming(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<berth_model::StreamingBody, AwsError> {
        match self.0.local() {
            Some(local) => local.handle_streaming(ctx, operation, body).await,
            None => Err(AwsError::new(
                503,
                "ServiceUnavailableException",
                "Live Tail sessions are served by the Berth server that holds the log store \
                 (the leader); call StartLiveTail on that server's endpoint.",
            )),
        }
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let place = &self.0;
        let ready = || place.local().is_some();
        loop {
            if let Some(local) = place.local() {
                return local.handle(ctx, operation, body).await;
            }
            // The leader's handler authorizes the call with the same
            // policies.
            ctx.no_authorization_needed();
            match place
                .forwarder()?
                .logs_api(ctx, operation, body, &ready)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(Forwarded::Local) => continue,
                Err(Forwarded::Failed(e)) => return Err(e),
            }
        }
    }
}

/// The agents' awslogs output goes to CloudWatch Logs, here or on the
/// leader.
pub struct LogsSink(pub Arc<LogsPlace>);

pub fn to_wire(position: berth_logs::Position) -> LogPosition {
    LogPosition {
        nanos: position.nanos,
        seq: position.seq,
    }
}

pub fn from_wire(events: Vec<TaskLogEvent>) -> Vec<berth_logs::AgentEvent> {
    events
        .into_iter()
        .map(|e| berth_logs::AgentEvent {
            timestamp_ms: e.timestamp,
            message: e.message,
            position: berth_logs::Position {
                nanos: e.position.nanos,
                seq: e.position.seq,
            },
        })
        .collect()
}

#[async_trait::async_trait]
impl berth_ecs::agent_api::LogSink for LogsSink {
    async fn open_stream(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<Option<LogPosition>, AwsError> {
        let place = &self.0;
        let ready = || place.local().is_some();
        loop {
            if let Some(local) = place.local() {
                local
                    .ensure_stream(account, region, group, stream, create_group)
                    .await?;
                return Ok(local.cursor(account, region, group, stream).map(to_wire));
            }
            match place
                .forwarder()?
                .open_stream(account, region, group, stream, create_group, &ready)
                .await
            {
                Ok(cursor) => return Ok(cursor),
                Err(Forwarded::Local) => continue,
                Err(Forwarded::Failed(e)) => return Err(e),
            }
        }
    }

    async fn ingest(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        events: Vec<TaskLogEvent>,
    ) -> Result<Option<LogPosition>, AwsError> {
        let place = &self.0;
        let ready = || place.local().is_some();
        loop {
            if let Some(local) = place.local() {
                let cursor = local
                    .ingest(account, region, group, stream, from_wire(events))
                    .await?;
                return Ok(cursor.map(to_wire));
            }
            match place
                .forwarder()?
                .ingest(account, region, group, stream, &events, &ready)
                .await
            {
                Ok(cursor) => return Ok(cursor),
                Err(Forwarded::Local) => continue,
                Err(Forwarded::Failed(e)) => return Err(e),
            }
        }
    }
}
