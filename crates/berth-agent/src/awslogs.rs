//! The `awslogs` log driver, done by the agent: a container whose
//! `logConfiguration.logDriver` is `awslogs` keeps Docker's json-file log (so
//! its output is buffered on disk and nothing blocks or drops), and a shipper
//! task reads that log with Docker's timestamps and sends it to the server's
//! CloudWatch Logs in batches.
//!
//! Delivery is exactly-once across crashes of the agent and of the server:
//! every line has a [`LogPosition`] (its timestamp and its index among lines
//! with the same timestamp), the server stores a batch and the stream's
//! greatest position in one durable write and drops what is at or before it,
//! and a shipper (re)starts reading at the position the server reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_model::agent_protocol::{LogPosition, TaskLogEvent};
use berth_model::shapes::ecs::ContainerDefinition;
use berth_runtime::{ContainerStatus, LogLine, Runtime, RuntimeError};
use futures::StreamExt;
use regex::Regex;

use crate::Reporter;

/// Options Docker's awslogs driver and ECS accept.
const KNOWN_OPTIONS: &[&str] = &[
    "awslogs-region",
    "awslogs-endpoint",
    "awslogs-group",
    "awslogs-create-group",
    "awslogs-create-stream",
    "awslogs-stream",
    "awslogs-stream-prefix",
    "awslogs-datetime-format",
    "awslogs-multiline-pattern",
    "awslogs-credentials-endpoint",
    "awslogs-force-flush-interval-seconds",
    "awslogs-max-buffered-events",
    "awslogs-format",
    "mode",
    "max-buffer-size",
    "tag",
];

/// CloudWatch Logs' per-batch limits (PutLogEvents).
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
/// The largest event CloudWatch stores; longer messages are split, as
/// Docker's driver does.
const MAX_EVENT_BYTES: usize = 262_144 - EVENT_OVERHEAD;
/// How long a line may wait before its batch is sent. Docker's driver waits
/// 5 s; shorter keeps `aws logs tail` close to live at little cost.
const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// How long a multi-line event stays open without a new line (Docker's
/// default `awslogs-force-flush-interval-seconds`).
const MULTILINE_FLUSH_AFTER: Duration = Duration::from_secs(5);

/// A container's awslogs settings, validated.
#[derive(Debug, Clone)]
pub struct AwslogsConfig {
    pub group: String,
    pub region: String,
    pub create_group: bool,
    /// `prefix/container-name/task-id` when a prefix is set.
    stream: Option<String>,
    /// Lines that start a new event; `None`: every line is an event.
    event_start: Option<Regex>,
    multiline_flush: Duration,
}

impl AwslogsConfig {
    /// The stream name for the container with runtime id `container_id`
    /// (Docker names the stream after the container when nothing else does).
    pub fn stream_name(&self, container_id: &str) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| container_id.to_string())
    }
}

/// The awslogs settings of a container definition: `Ok(None)` when it does
/// not use awslogs, `Err` with Docker's message when the options are wrong.
/// `secret_options` are the resolved `secretOptions`.
pub fn config(
    task_arn: &str,
    definition: &ContainerDefinition,
    secret_options: &[(String, String)],
) -> Result<Option<AwslogsConfig>, String> {
    let Some(log) = definition.log_configuration.as_ref() else {
        return Ok(None);
    };
    if log.log_driver.as_deref() != Some("awslogs") {
        return Ok(None);
    }
    let mut options: BTreeMap<String, String> = log.options.clone().unwrap_or_default();
    options.extend(secret_options.iter().cloned());
    if let Some(unknown) = options
        .keys()
        .find(|k| !KNOWN_OPTIONS.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown log opt '{unknown}' for awslogs log driver"
        ));
    }
    let group = options
        .get("awslogs-group")
        .filter(|g| !g.is_empty())
        .ok_or("must specify a value for log opt 'awslogs-group'")?
        .clone();
    // The task ARN's region is the agent's; ECS users usually name it anyway.
    let region = match options.get("awslogs-region") {
        Some(r) if !r.is_empty() => r.clone(),
        _ => task_arn.split(':').nth(3).unwrap_or_default().to_string(),
    };
    let create_group = match options.get("awslogs-create-group").map(String::as_str) {
        None => false,
        Some(v) => parse_bool(v).ok_or_else(|| {
            format!("must specify valid value for log opt 'awslogs-create-group': strconv.ParseBool: parsing \"{v}\": invalid syntax")
        })?,
    };
    if let Some(mode) = options.get("mode") {
        if mode != "blocking" && mode != "non-blocking" {
            return Err(format!("logger: logging mode not supported: {mode}"));
        }
    }
    if let Some(size) = options.get("max-buffer-size") {
        if options.get("mode").map(String::as_str) != Some("non-blocking") {
            return Err(
                "logger: max-buffer-size option is only supported with 'mode=non-blocking'".into(),
            );
        }
        parse_size(size)
            .ok_or_else(|| format!("logger: could not parse max-buffer-size: {size}"))?;
    }
    let datetime = options.get("awslogs-datetime-format");
    let multiline = options.get("awslogs-multiline-pattern");
    let event_start = match (datetime, multiline) {
        (Some(_), Some(_)) => {
            return Err("you cannot configure log opt 'awslogs-datetime-format' and 'awslogs-multiline-pattern' at the same time".into())
        }
        (Some(format), None) => Some(
            Regex::new(&format!("^{}", strftime_regex(format)))
                .map_err(|e| format!("awslogs could not parse datetime format: {e}"))?,
        ),
        (None, Some(pattern)) => Some(
            Regex::new(&format!("^{pattern}"))
                .map_err(|e| format!("awslogs could not parse multiline pattern key: {e}"))?,
        ),
        (None, None) => None,
    };
    let multiline_flush = match options.get("awslogs-force-flush-interval-seconds") {
        None => MULTILINE_FLUSH_AFTER,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_secs(n),
            _ => {
                return Err(format!(
                    "invalid value for awslogs-force-flush-interval-seconds: {v}"
                ))
            }
        },
    };
    let container_name = definition.name.clone().unwrap_or_default();
    let task_id = task_arn.rsplit('/').next().unwrap_or_default();
    let stream = match (
        options.get("awslogs-stream"),
        options.get("awslogs-stream-prefix"),
    ) {
        (Some(s), _) if !s.is_empty() => Some(s.clone()),
        (_, Some(prefix)) if !prefix.is_empty() => {
            Some(format!("{prefix}/{container_name}/{task_id}"))
        }
        _ => None,
    };
    Ok(Some(AwslogsConfig {
        group,
        region,
        create_group,
        stream,
        event_start,
        multiline_flush,
    }))
}

/// Go's `strconv.ParseBool`, which Docker uses for driver options.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Docker's `units.RAMInBytes` sizes: `25m`, `1g`, `512k`, `100`.
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (digits, unit) = match v
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let n: f64 = digits.parse().ok()?;
    let scale = match unit {
        "" => 1u64,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    Some((n * scale as f64) as u64)
}

/// The regular expression for an `awslogs-datetime-format` (strftime), with
/// the same conversions Docker's driver documents.
fn strftime_regex(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_str(&regex::escape(&c.to_string()));
            continue;
        }
        let Some(directive) = chars.next() else {
            out.push('%');
            break;
        };
        out.push_str(match directive {
            'a' => r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
            'A' => r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
            'b' => r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
            'B' => r"(?:January|February|March|April|May|June|July|August|September|October|November|December)",
            'd' => r"(?:0[1-9]|[12][0-9]|3[01])",
            'f' => r"(?:\d{6})",
            'H' => r"(?:[01][0-9]|2[0-3])",
            'I' => r"(?:0[0-9]|1[0-2])",
            'j' => r"(?:0[0-9][1-9]|[1-2][0-9][0-9]|3[0-5][0-9]|36[0-6])",
            'L' => r"(?:\.\d{3})",
            'm' => r"(?:0[1-9]|1[0-2])",
            'M' => r"(?:[0-5][0-9])",
            'p' => r"(?:[AP]M)",
            'S' => r"(?:[0-5][0-9])",
            'U' | 'W' => r"(?:[0-4][0-9]|5[0-3])",
            'w' => r"[0-6]",
            'y' => r"(?:\d{2})",
            'Y' => r"(?:\d{4})",
            'z' => r"(?:[+-]\d{4})",
            'Z' => r"(?:[A-Z]{1,4}T)",
            '%' => "%",
            other => {
                out.push('%');
                out.push_str(&regex::escape(&other.to_string()));
                continue;
            }
        });
    }
    out
}

/// Turns lines into CloudWatch events: one per line, or one per group of
/// lines when a multi-line pattern says where events start. Pure, so the
/// grouping rules are tested without a runtime.
#[derive(Debug)]
pub struct EventBuilder {
    event_start: Option<Regex>,
    /// The multi-line event being collected.
    pending: Option<TaskLogEvent>,
    /// The last line's timestamp and its index among lines with it.
    last: Option<LogPosition>,
}

impl EventBuilder {
    pub fn new(config: &AwslogsConfig) -> Self {
        EventBuilder {
            event_start: config.event_start.clone(),
            pending: None,
            last: None,
        }
    }

    /// The position of the next line, which has timestamp `nanos`.
    pub fn position(&mut self, nanos: i64) -> LogPosition {
        let position = match self.last {
            Some(last) if last.nanos == nanos => LogPosition {
                nanos,
                seq: last.seq + 1,
            },
            _ => LogPosition { nanos, seq: 0 },
        };
        self.last = Some(position);
        position
    }

    /// Takes one line (at `position`) and returns the events it completes.
    pub fn push(&mut self, line: &LogLine, position: LogPosition) -> Vec<TaskLogEvent> {
        let text = String::from_utf8_lossy(&line.text);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let timestamp = line.nanos.div_euclid(1_000_000);
        let Some(start) = &self.event_start else {
            if text.is_empty() {
                return Vec::new();
            }
            return split_event(text, timestamp, position);
        };
        let mut done = Vec::new();
        if start.is_match(text) {
            done.extend(self.flush());
        }
        match &mut self.pending {
            Some(event) => {
                event.message.push('\n');
                event.message.push_str(text);
                event.position = position;
                if event.message.len() >= MAX_EVENT_BYTES {
                    done.extend(self.flush());
                }
            }
            None => {
                self.pending = Some(TaskLogEvent {
                    timestamp,
                    message: text.to_string(),
                    position,
                })
            }
        }
        done
    }

    /// Ends the multi-line event being collected, if any.
    pub fn flush(&mut self) -> Vec<TaskLogEvent> {
        match self.pending.take() {
            Some(e) if !e.message.is_empty() => split_event(&e.message, e.timestamp, e.position),
            _ => Vec::new(),
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// One event, or several when the message is over CloudWatch's event size.
/// The pieces share a position, so they are stored or dropped together.
fn split_event(text: &str, timestamp: i64, position: LogPosition) -> Vec<TaskLogEvent> {
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_EVENT_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        events.push(TaskLogEvent {
            timestamp,
            message: rest[..cut].to_string(),
            position,
        });
        rest = &rest[cut..];
    }
    events
}

/// Events waiting to be sent, kept within PutLogEvents' batch limits.
#[derive(Default)]
struct Batch {
    events: Vec<TaskLogEvent>,
    bytes: usize,
}

impl Batch {
    fn fits(&self, event: &TaskLogEvent) -> bool {
        self.events.len() < MAX_BATCH_EVENTS
            && self.bytes + event.message.len() + EVENT_OVERHEAD <= MAX_BATCH_BYTES
    }

    fn push(&mut self, event: TaskLogEvent) {
        self.bytes += event.message.len() + EVENT_OVERHEAD;
        self.events.push(event);
    }

    fn take(&mut self) -> Vec<TaskLogEvent> {
        self.bytes = 0;
        std::mem::take(&mut self.events)
    }
}

/// Ships one container's output until the container has exited and all of
/// it is stored, or the container is gone.
pub struct Shipper {
    pub runtime: Arc<dyn Runtime>,
    pub reporter: Arc<dyn Reporter>,
    pub task_arn: String,
    pub container_id: String,
    pub config: AwslogsConfig,
}

impl Shipper {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let stream = self.config.stream_name(&self.container_id);
        let mut delay = Duration::from_millis(200);
        // Where the server's copy ends; asked again after every failure.
        let mut cursor = loop {
            match self
                .reporter
                .open_log_stream(
                    &self.task_arn,
                    &self.config.region,
                    &self.config.group,
                    &stream,
                    self.config.create_group,
                )
                .await
            {
                Ok(cursor) => break cursor,
                Err(e) => {
                    tracing::warn!(container = %self.container_id, error = %e, "opening the log stream failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        // Docker may end a followed log early when the container exits while
        // it is being read (seen with 100,000 lines printed at once), so the
        // end of a followed read is confirmed by reading the stopped
        // container's log once more without following, from the cursor.
        let mut follow = true;
        loop {
            match self.ship_from(&stream, &mut cursor, follow).await {
                Ok(true) if !follow => return,
                Ok(true) => follow = false,
                Ok(false) => {}
                Err(RuntimeError::NotFound(_)) => return,
                Err(e) => {
                    tracing::debug!(container = %self.container_id, error = %e, "reading container logs failed; reading again")
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads the container's log from `cursor` and ships it. Returns true
    /// when the container has exited and everything was shipped.
    async fn ship_from(
        &self,
        stream: &str,
        cursor: &mut Option<LogPosition>,
        follow: bool,
    ) -> Result<bool, RuntimeError> {
        let since = cursor.map_or(0, |c| c.nanos.div_euclid(1_000_000_000));
        let mut lines = self.runtime.log_lines(&self.container_id, since, follow);
        let mut builder = EventBuilder::new(&self.config);
        let mut batch = Batch::default();
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut multiline_at: Option<tokio::time::Instant> = None;
        loop {
            let deadline = match (flush_at, multiline_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = match deadline {
                Some(at) => tokio::select! {
                    line = lines.next() => Some(line),
                    _ = tokio::time::sleep_until(at) => None,
                },
                None => Some(lines.next().await),
            };
            match next {
                // A deadline passed.
                None => {
                    let now = tokio::time::Instant::now();
                    if multiline_at.is_some_and(|at| at <= now) {
                        multiline_at = None;
                        for event in builder.flush() {
                            self.add(stream, &mut batch, event, cursor).await;
                        }
                    }
                    self.send(stream, &mut batch, cursor).await;
                    flush_at = None;
                }
                Some(Some(Ok(line))) => {
                    let position = builder.position(line.nanos);
                    if cursor.is_some_and(|c| position <= c) {
                        continue;
                    }
                    for event in builder.push(&line, position) {
                        self.add(stream, &mut batch, event, cursor).await;
                    }
                    multiline_at = builder
                        .has_pending()
                        .then(|| tokio::time::Instant::now() + self.config.multiline_flush);
                    if !batch.events.is_empty() && flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + FLUSH_AFTER);
                    }
                }
                Some(Some(Err(e))) => {
                    self.send(stream, &mut batch, cursor).await;
                    return Err(e);
                }
                // The log ended: the container stopped, or the connection dropped.
                Some(None) => {
                    let exited = !matches!(
                        self.runtime.inspect(&self.container_id).await?,
                        Some(state) if matches!(
                            state.status,
                            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
                        )
                    );
                    if exited {
                        for event in builder.flush() {
                            self.add(stream, &mut batch, event, cursor).await;
                        }
                    }
                    self.send(stream, &mut batch, cursor).await;
                    return Ok(exited);
                }
            }
        }
    }

    /// Adds an event, sending the batch first when the event would not fit.
    async fn add(
        &self,
        stream: &str,
        batch: &mut Batch,
        event: TaskLogEvent,
        cursor: &mut Option<LogPosition>,
    ) {
        if !batch.fits(&event) {
            self.send(stream, batch, cursor).await;
        }
        batch.push(event);
    }

    /// Sends the batch, retrying until the server has stored it. Blocking
    /// here is safe: the container writes to Docker's log, not to us.
    async fn send(&self, stream: &str, batch: &mut Batch, cursor: &mut Option<LogPosition>) {
        if batch.events.is_empty() {
            return;
        }
        let events = batch.take();
        let mut delay = Duration::from_millis(100);
        loop {
            match self
                .reporter
                .put_task_logs(
                    &self.task_arn,
                    &self.config.region,
                    &self.config.group,
                    stream,
                    events.clone(),
                )
                .await
            {
                Ok(stored) => {
                    *cursor = stored.max(*cursor);
                    return;
                }
                Err(e) => {
                    tracing::warn!(container = %self.container_id, error = %e, "shipping logs failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::LogConfiguration;

    const TASK: &str =
        "arn:aws:ecs:eu-west-1:000000000000:task/default/0123456789abcdef0123456789abcdef";

    fn definition(options: &[(&str, &str)]) -> ContainerDefinition {
        ContainerDefinition {
            name: Some("web".into()),
            log_configuration: Some(LogConfiguration {
                log_driver: Some("awslogs".into()),
                options: Some(
                    options
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..LogConfiguration::default()
            }),
            ..ContainerDefinition::default()
        }
    }

    fn line(nanos: i64, text: &str) -> LogLine {
        LogLine {
            nanos,
            stderr: false,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn stream_names_follow_ecs() {
        let c = config(
            TASK,
            &definition(&[("awslogs-group", "g"), ("awslogs-stream-prefix", "app")]),
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.stream_name("abc"),
            "app/web/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(c.region, "eu-west-1");
        assert!(!c.create_group);
        let c = config(
            TASK,
            &definition(&[("awslogs-group", "g"), ("awslogs-region", "us-east-2")]),
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.stream_name("abc"), "abc");
        assert_eq!(c.region, "us-east-2");
    }

    #[test]
    fn bad_options_get_dockers_messages() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "must specify a value for log opt 'awslogs-group'"),
            (
                &[("awslogs-group", "g"), ("colour", "red")],
                "unknown log opt 'colour'",
            ),
            (
                &[("awslogs-group", "g"), ("awslogs-create-group", "yes")],
                "awslogs-create-group",
            ),
            (
                &[("awslogs-group", "g"), ("mode", "fast")],
                "logging mode not supported",
            ),
            (
                &[("awslogs-group", "g"), ("max-buffer-size", "1m")],
                "only supported with 'mode=non-blocking'",
            ),
            (
                &[
                    ("awslogs-group", "g"),
                    ("awslogs-datetime-format", "%Y"),
                    ("awslogs-multiline-pattern", "x"),
                ],
                "at the same time",
            ),
            (
                &[("awslogs-group", "g"), ("awslogs-multiline-pattern", "(")],
                "multiline pattern",
            ),
        ];
        for (options, expected) in cases {
            let err = config(TASK, &definition(options), &[]).unwrap_err();
            assert!(err.contains(expected), "{options:?}: {err}");
        }
        let ok = config(
            TASK,
            &definition(&[
                ("awslogs-group", "g"),
                ("mode", "non-blocking"),
                ("max-buffer-size", "25m"),
            ]),
            &[],
        );
        assert!(ok.unwrap().is_some());
        assert!(config(TASK, &ContainerDefinition::default(), &[])
            .unwrap()
            .is_none());
    }

    #[test]
    fn each_line_is_an_event_and_positions_count_equal_timestamps() {
        let c = config(TASK, &definition(&[("awslogs-group", "g")]), &[])
            .unwrap()
            .unwrap();
        let mut b = EventBuilder::new(&c);
        let mut events = Vec::new();
        for (nanos, text) in [
            (5_000_000, "a\n"),
            (5_000_000, "b\n"),
            (6_000_000, "\n"),
            (7_000_000, "c\r\n"),
        ] {
            let p = b.position(nanos);
            events.extend(b.push(&line(nanos, text), p));
        }
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.message.as_str(), e.timestamp, e.position.seq))
            .collect();
        assert_eq!(got, [("a", 5, 0), ("b", 5, 1), ("c", 7, 0)]);
    }

    #[test]
    fn multiline_pattern_groups_lines() {
        let c = config(
            TASK,
            &definition(&[
                ("awslogs-group", "g"),
                ("awslogs-multiline-pattern", "INFO|ERROR"),
            ]),
            &[],
        )
        .unwrap()
        .unwrap();
        let mut b = EventBuilder::new(&c);
        let mut events = Vec::new();
        for (i, text) in ["INFO one\n", "  more\n", "ERROR two\n", "  trace\n"]
            .iter()
            .enumerate()
        {
            let p = b.position(i as i64 * 1_000_000);
            events.extend(b.push(&line(i as i64 * 1_000_000, text), p));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].message, "INFO one\n  more");
        events.extend(b.flush());
        assert_eq!(events[1].message, "ERROR two\n  trace");
        assert_eq!(events[1].timestamp, 2);
        assert_eq!(events[1].position.nanos, 3_000_000);
    }

    #[test]
    fn datetime_format_starts_events() {
        let c = config(
            TASK,
            &definition(&[
                ("awslogs-group", "g"),
                ("awslogs-datetime-format", "%Y-%m-%d %H:%M:%S"),
            ]),
            &[],
        )
        .unwrap()
        .unwrap();
        let mut b = EventBuilder::new(&c);
        let mut events = Vec::new();
        for (i, text) in [
            "2026-11-25 10:00:00 start\n",
            "detail\n",
            "2026-11-25 10:00:01 next\n",
        ]
        .iter()
        .enumerate()
        {
            let p = b.position(i as i64);
            events.extend(b.push(&line(i as i64, text), p));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].message, "2026-11-25 10:00:00 start\ndetail");
    }

    #[test]
    fn long_lines_are_split_with_one_position() {
        let text = "x".repeat(MAX_EVENT_BYTES + 10);
        let events = split_event(&text, 1, LogPosition { nanos: 1, seq: 0 });
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].message.len(), MAX_EVENT_BYTES);
        assert_eq!(events[1].message.len(), 10);
    }

    #[test]
    fn batches_respect_putlogevents_limits() {
        let mut batch = Batch::default();
        let event = TaskLogEvent {
            timestamp: 1,
            message: "y".repeat(1000),
            position: LogPosition::default(),
        };
        let mut n = 0;
        while batch.fits(&event) {
            batch.push(event.clone());
            n += 1;
        }
        assert_eq!(n, MAX_BATCH_BYTES / (1000 + EVENT_OVERHEAD));
        assert_eq!(parse_size("25m"), Some(25 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("lots"), None);
    }
}
