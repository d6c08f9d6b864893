//! CloudWatch Logs (`Logs_20140328`) for Berth.
//!
//! - [`LogsService`]: the JSON 1.1 API (log groups, streams, PutLogEvents,
//!   GetLogEvents, FilterLogEvents, retention, tags) and the agent's ingest
//!   path ([`LogsService::ensure_stream`], [`LogsService::ingest`]).
//! - [`filter`]: the filter pattern language, parsed once and matched many
//!   times.
//! - `store`: the append-optimised event store, a SQLite database of its own
//!   with a group-committing writer thread.
//!
//! Architecture invariant: this crate never touches the control-plane store
//! (`berth-store`); log events live only in `<data-dir>/logs/logs.db`.

pub mod filter;
mod ingest;
pub mod insights;
pub mod limits;
mod livetail;
mod policies;
mod queries;
mod service;
mod store;
pub mod tokens;

pub use filter::{FilterError, FilterPattern};
pub use ingest::{AgentEvent, Position};
pub use service::{max_body, LogsService, NOT_IMPLEMENTED};

use std::path::PathBuf;

/// Failures opening or maintaining the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("could not prepare the log store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("log store write failed: {0}")]
    Write(#[from] berth_model::AwsError),
}

#[cfg(test)]
mod service_tests;
