//! The CloudWatch Logs event store alone, without Docker or HTTP: how many
//! events per second it makes durable when N writers ingest batches at once,
//! and how fast a stream reads back. This is the figure the store choice (one
//! SQLite table keyed by stream, timestamp, sequence) was measured with.
//!
//!   cargo run --release -p berth-bench --bin logs-store -- [--streams N] [--events N] [--batch N]

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use berth_logs::{AgentEvent, LogsService, Position};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Concurrent writers, one stream each.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Events per stream.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per ingest call (the agent sends up to 10,000).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
}

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
const GROUP: &str = "/bench/store";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let logs = LogsService::open(dir.path()).context("opening the log store")?;
    let now_ns = berth_util::time::now_millis() * 1_000_000;
    let pad = "x".repeat(92);

    let started = Instant::now();
    let mut writers = Vec::new();
    for s in 0..args.streams {
        let logs = Arc::clone(&logs);
        let pad = pad.clone();
        let (events, batch) = (args.events, args.batch.max(1));
        writers.push(tokio::spawn(async move {
            let stream = format!("s{s}");
            logs.ensure_stream(ACCOUNT, REGION, GROUP, &stream, true)
                .await?;
            let mut n = 0;
            while n < events {
                let chunk: Vec<AgentEvent> = (n..(n + batch).min(events))
                    .map(|i| {
                        let nanos = now_ns + i as i64 * 1_000;
                        AgentEvent {
                            timestamp_ms: nanos / 1_000_000,
                            message: format!("{i} {pad}"),
                            position: Position { nanos, seq: 0 },
                        }
                    })
                    .collect();
                n += chunk.len();
                logs.ingest(ACCOUNT, REGION, GROUP, &stream, chunk).await?;
            }
            Ok::<_, berth_model::AwsError>(())
        }));
    }
    for writer in writers {
        writer
            .await?
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = args.streams * args.events;
    let bytes: usize = (0..args.events)
        .map(|i| format!("{i} {pad}").len())
        .sum::<usize>()
        * args.streams;
    let db = std::fs::metadata(dir.path().join("logs/logs.db"))?.len()
        + std::fs::metadata(dir.path().join("logs/logs.db-wal")).map_or(0, |m| m.len());
    println!("streams                 {}", args.streams);
    println!("events                  {total}");
    println!("batch                   {}", args.batch);
    println!("durable events/s        {:.0}", total as f64 / elapsed);
    println!(
        "durable MiB/s           {:.1}",
        bytes as f64 / elapsed / 1048576.0
    );
    println!(
        "bytes on disk / event   {:.0}",
        db as f64 / total.max(1) as f64
    );
    Ok(())
}
