//! Logs Insights queries: StartQuery runs a query in the background over the
//! event store and GetQueryResults answers its status, statistics and rows;
//! StopQuery, DescribeQueries, ListLogGroupsForQuery, GetLogRecord (a
//! result's `@ptr`), GetLogGroupFields and the saved query definitions.
//!
//! Queries live in memory on the server that holds the log store (the
//! leader, with several servers): at most [`MAX_KEPT`] are remembered, the
//! oldest finished ones forgotten first, and at most [`MAX_RUNNING`] per
//! account may be scheduled or running at once, as AWS's quota. Runs take
//! turns on [`MAX_PARALLEL`] blocking threads, so queries cannot starve the
//! API of CPU; each stops at [`QUERY_TIMEOUT`] with status `Timeout`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::authz::{self, Requirement};
use berth_model::shapes::logs;
use berth_model::{AwsError, RequestContext};
use berth_util::time::now_millis;
use serde::{Deserialize, Serialize};

use crate::insights::{self, Event, Execution, Origin, Query, Record};
use crate::limits::{self, invalid, required};
use crate::service::{resolve_group, GroupRef};
use crate::store::{group_not_found, kinds, scan_stream, MergedScan, ObjectKey, PutRules, WriteOp};
use crate::tokens::{self, EventKey};
use crate::LogsService;

/// Queries remembered (finished ones are forgotten oldest first).
pub const MAX_KEPT: usize = 1000;
/// Scheduled or running queries per account, as AWS's quota.
pub const MAX_RUNNING: usize = 30;
/// Queries evaluated at the same time; the others wait as `Scheduled`.
pub const MAX_PARALLEL: usize = 2;
/// A query running longer stops with status `Timeout`, as on AWS.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Log groups one query may name, as on AWS.
const MAX_QUERY_GROUPS: usize = 50;
/// Saved query definitions per account and region.
const MAX_QUERY_DEFINITIONS: usize = 1000;
/// Events GetLogGroupFields samples.
const FIELD_SAMPLE: usize = 10_000;
/// Rows one GetQueryResults page holds at most.
const MAX_PAGE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Scheduled,
    Running,
    Complete,
    Failed,
    Cancelled,
    Timeout,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "Scheduled",
            Status::Running => "Running",
            Status::Complete => "Complete",
            Status::Failed => "Failed",
            Status::Cancelled => "Cancelled",
            Status::Timeout => "Timeout",
        }
    }

    fn active(self) -> bool {
        matches!(self, Status::Scheduled | Status::Running)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    scanned: u64,
    matched: u64,
    bytes: u64,
}

struct RunState {
    status: Status,
    counts: Counts,
    rows: Arc<Vec<Vec<logs::ResultField>>>,
    duration_ms: Option<i64>,
}

/// One query, from StartQuery until it is forgotten.
pub struct QueryRun {
    id: String,
    account: String,
    region: String,
    text: String,
    /// The groups as the caller named them (names or ARNs).
    identifiers: Vec<String>,
    /// Their names.
    groups: Vec<String>,
    created_ms: i64,
    user: String,
    cancel: AtomicBool,
    state: Mutex<RunState>,
}

impl QueryRun {
    fn state(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn info(&self) -> logs::QueryInfo {
        let state = self.state();
        logs::QueryInfo {
            query_language: Some("CWLI".into()),
            query_id: Some(self.id.clone()),
            query_string: Some(self.text.clone()),
            status: Some(state.status.as_str().into()),
            create_time: Some(self.created_ms),
            log_group_name: self.groups.first().cloned(),
            query_duration: state.duration_ms,
            bytes_scanned: Some(state.counts.bytes as f64),
            user_identity: Some(self.user.clone()),
        }
    }
}

/// Runs by id, and their ids oldest first (for eviction).
type RunTable = (HashMap<String, Arc<QueryRun>>, VecDeque<String>);

/// The queries of this server.
pub struct Queries {
    runs: Mutex<RunTable>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl Default for Queries {
    fn default() -> Self {
        Queries {
            runs: Mutex::new((HashMap::new(), VecDeque::new())),
            turns: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL)),
        }
    }
}

fn query_not_found(id: &str) -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        format!("Query {id} does not exist."),
    )
}

impl Queries {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunTable> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers a new run, refusing it past the account's quota.
    fn admit(&self, run: Arc<QueryRun>) -> Result<(), AwsError> {
        let mut guard = self.lock();
        let (runs, order) = &mut *guard;
        let active = runs
            .values()
            .filter(|r| r.account == run.account && r.state().status.active())
            .count();
        if active >= MAX_RUNNING {
            return Err(AwsError::bad_request(
                "LimitExceededException",
                format!("Account maximum query concurrency limit of [{MAX_RUNNING}] reached."),
            ));
        }
        while runs.len() >= MAX_KEPT {
            // Forget the oldest finished query (running ones are kept).
            let Some(at) = order
                .iter()
                .position(|id| runs.get(id).is_none_or(|r| !r.state().status.active()))
            else {
                break;
            };
            if let Some(id) = order.remove(at) {
                runs.remove(&id);
            }
        }
        order.push_back(run.id.clone());
        runs.insert(run.id.clone(), run);
        Ok(())
    }

    /// A query of the caller's account and region.
    fn get(&self, ctx: &RequestContext, id: &str) -> Result<Arc<QueryRun>, AwsError> {
        self.lock()
            .0
            .get(id)
            .filter(|r| r.account == ctx.account_id && r.region == ctx.region)
            .cloned()
            .ok_or_else(|| query_not_found(id))
    }

    fn of_account(&self, ctx: &RequestContext) -> Vec<Arc<QueryRun>> {
        let guard = self.lock();
        let (runs, order) = &*guard;
        order
            .iter()
            .rev()
            .filter_map(|id| runs.get(id))
            .filter(|r| r.account == ctx.account_id && r.region == ctx.region)
            .cloned()
            .collect()
    }
}

fn check_query_id(id: &str) -> Result<(), AwsError> {
    if id.is_empty() || id.chars().count() > 256 {
        return Err(limits::constraint(
            id,
            "queryId",
            "Member must have length between 1 and 256",
        ));
    }
    Ok(())
}

fn check_query_language(language: &Option<String>) -> Result<(), AwsError> {
    match language.as_deref() {
        None | Some("CWLI") => Ok(()),
        Some(other @ ("SQL" | "PPL")) => Err(invalid(format!(
            "Berth runs Logs Insights QL (CWLI) queries only; the {other} query language \
             (OpenSearch) is not available."
        ))),
        Some(other) => Err(limits::constraint(
            other,
            "queryLanguage",
            "Member must satisfy enum value set: [CWLI, SQL, PPL]",
        )),
    }
}

/// A malformed query as AWS reports it.
fn malformed(e: &insights::CompileError) -> AwsError {
    AwsError::bad_request("MalformedQueryException", e.message.clone())
}

/// `@ptr`'s decoded parts.
struct Pointer {
    account: String,
    region: String,
    group: String,
    stream_id: i64,
    key: EventKey,
}

fn pointer_prefix(account: &str, region: &str, group: &str, stream_id: i64) -> String {
    format!("{account}\n{region}\n{group}\n{stream_id}\n")
}

fn decode_pointer(pointer: &str) -> Result<Pointer, AwsError> {
    let bad = || invalid("The specified logRecordPointer is invalid.");
    let text = tokens::decode_opaque(pointer).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split('\n').collect();
    let [account, region, group, stream_id, key] = parts.as_slice() else {
        return Err(bad());
    };
    let (ts, seq) = key.split_once(':').ok_or_else(bad)?;
    Ok(Pointer {
        account: account.to_string(),
        region: region.to_string(),
        group: group.to_string(),
        stream_id: stream_id.parse().map_err(|_| bad())?,
        key: EventKey {
            timestamp: ts.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        },
    })
}

/// A saved query definition as stored.
#[derive(Serialize, Deserialize)]
struct SavedDefinition {
    name: String,
    query_string: String,
    log_group_names: Vec<String>,
    last_modified: i64,
    #[serde(default)]
    parameters: Vec<(String, Option<String>, Option<String>)>,
}

fn definition_key(ctx: &RequestContext, id: &str) -> ObjectKey {
    ObjectKey {
        account: ctx.account_id.clone(),
        region: ctx.region.clone(),
        kind: kinds::QUERY_DEFINITION,
        scope: String::new(),
        name: id.to_string(),
    }
}

fn definition_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "The specified query definition does not exist.",
    )
}

impl LogsService {
    /// The groups a StartQuery names, exactly one of the three ways.
    fn query_groups(
        &self,
        ctx: &RequestContext,
        input: &logs::StartQueryRequest,
    ) -> Result<Vec<(String, GroupRef)>, AwsError> {
        let given = [
            input.log_group_name.is_some(),
            input.log_group_names.is_some(),
            input.log_group_identifiers.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(invalid(
                "Exactly one of logGroupName, logGroupNames or logGroupIdentifiers must be \
                 specified.",
            ));
        }
        let mut out = Vec::new();
        if let Some(name) = &input.log_group_name {
            out.push((
                name.clone(),
                resolve_group(ctx, &Some(name.clone()), &None)?,
            ));
        }
        for (list, member) in [
            (&input.log_group_names, "logGroupNames"),
            (&input.log_group_identifiers, "logGroupIdentifiers"),
        ] {
            let Some(list) = list else { continue };
            if list.is_empty() || list.len() > MAX_QUERY_GROUPS {
                return Err(limits::constraint(
                    &format!("{list:?}"),
                    member,
                    &format!("Member must have length between 1 and {MAX_QUERY_GROUPS}"),
                ));
            }
            for id in list {
                if member == "logGroupIdentifiers" && id.ends_with('*') {
                    return Err(invalid(format!(
                        "Log group identifier {id} must not end with '*'."
                    )));
                }
                let group = if member == "logGroupNames" {
                    resolve_group(ctx, &Some(id.clone()), &None)?
                } else {
                    resolve_group(ctx, &None, &Some(id.clone()))?
                };
                out.push((id.clone(), group));
            }
        }
        Ok(out)
    }

    pub(crate) async fn start_query(
        &self,
        ctx: &RequestContext,
        input: logs::StartQueryRequest,
    ) -> Result<logs::StartQueryResponse, AwsError> {
        check_query_language(&input.query_language)?;
        let text = input
            .query_string
            .as_deref()
            .ok_or_else(|| limits::missing("queryString"))?;
        if text.chars().count() > 10_000 {
            return Err(limits::constraint(
                "<query>",
                "queryString",
                "Member must have length less than or equal to 10000",
            ));
        }
        let start = input
            .start_time
            .ok_or_else(|| limits::missing("startTime"))?;
        let end = input.end_time.ok_or_else(|| limits::missing("endTime"))?;
        for (value, member) in [(start, "startTime"), (end, "endTime")] {
            if value < 0 {
                return Err(limits::constraint(
                    &value.to_string(),
                    member,
                    "Member must have value greater than or equal to 0",
                ));
            }
        }
        if end < start {
            return Err(invalid("End time should not be before the start time"));
        }
        let limit = match input.limit {
            None => 10_000,
            Some(n) if (1..=100_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(limits::constraint(
                    &n.to_string(),
                    "limit",
                    "Member must have value between 1 and 100000",
                ))
            }
        };
        let groups = self.query_groups(ctx, &input)?;
        let query = Query::parse(text).map_err(|e| malformed(&e))?;
        let requirements: Vec<Requirement> = groups
            .iter()
            .map(|(_, g)| self.group_requirement("StartQuery", g.classic(), g))
            .collect();
        ctx.authorize(&requirements)?;
        // Every group must exist (from the caller's point of view).
        let mut streams = Vec::new();
        let mut names = Vec::new();
        {
            let catalog = self.store.catalog();
            for (identifier, group) in &groups {
                let missing = || {
                    AwsError::bad_request(
                        "ResourceNotFoundException",
                        format!(
                            "Log group '{identifier}' does not exist for account ID '{}'",
                            ctx.account_id
                        ),
                    )
                };
                let name = group.name_in(ctx).map_err(|_| missing())?;
                let entry = catalog
                    .group(&ctx.account_id, &ctx.region, name)
                    .ok_or_else(missing)?;
                if !names.contains(&entry.info.name) {
                    names.push(entry.info.name.clone());
                    for stream in entry.streams.values() {
                        streams.push((
                            stream.id,
                            Arc::new(Origin {
                                log: format!("{}:{}", ctx.account_id, entry.info.name),
                                stream: stream.name.clone(),
                                pointer_prefix: pointer_prefix(
                                    &ctx.account_id,
                                    &ctx.region,
                                    &entry.info.name,
                                    stream.id,
                                ),
                            }),
                        ));
                    }
                }
            }
        }
        let run = Arc::new(QueryRun {
            id: uuid::Uuid::new_v4().to_string(),
            account: ctx.account_id.clone(),
            region: ctx.region.clone(),
            text: text.to_string(),
            identifiers: groups.into_iter().map(|(id, _)| id).collect(),
            groups: names,
            created_ms: now_millis(),
            user: ctx.principal.arn.clone(),
            cancel: AtomicBool::new(false),
            state: Mutex::new(RunState {
                status: Status::Scheduled,
                counts: Counts::default(),
                rows: Arc::new(Vec::new()),
                duration_ms: None,
            }),
        });
        self.queries.admit(Arc::clone(&run))?;
        // Both ends are inclusive seconds.
        let lower = EventKey {
            timestamp: start.saturating_mul(1000),
            seq: i64::MIN,
        };
        let upper = EventKey {
            timestamp: end.saturating_mul(1000).saturating_add(999),
            seq: i64::MAX,
        };
        let store = Arc::clone(&self.store);
        let turns = Arc::clone(&self.queries.turns);
        let id = run.id.clone();
        tokio::spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else {
                return;
            };
            {
                // Under the state's lock, as StopQuery decides: a query stopped while it waited
                // for its turn stays Cancelled.
                let mut state = run.state();
                if run.cancel.load(Ordering::Relaxed) || state.status == Status::Cancelled {
                    return;
                }
                state.status = Status::Running;
            }
            let began = Instant::now();
            let worker = Arc::clone(&run);
            let outcome = tokio::task::spawn_blocking(move || {
                execute(&store, &worker, &query, streams, lower, upper, limit)
            })
            .await;
            let mut state = run.state();
            state.duration_ms =
                Some(i64::try_from(began.elapsed().as_millis()).unwrap_or(i64::MAX));
            // StopQuery answered success while the query ran (it may have just finished): the
            // query is Cancelled, as that answer said.
            let stopped = state.status == Status::Cancelled;
            state.status = match outcome {
                _ if stopped => Status::Cancelled,
                Ok(Ok((rows, status))) => {
                    state.rows = Arc::new(rows);
                    status
                }
                Ok(Err(message)) => {
                    tracing::info!(query = %run.id, %message, "Logs Insights query failed");
                    Status::Failed
                }
                Err(e) => {
                    tracing::warn!(query = %run.id, error = %e, "Logs Insights query panicked");
                    Status::Failed
                }
            };
        });
        Ok(logs::StartQueryResponse { query_id: Some(id) })
    }

    pub(crate) fn get_query_results(
        &self,
        ctx: &RequestContext,
        input: logs::GetQueryResultsRequest,
    ) -> Result<logs::GetQueryResultsResponse, AwsError> {
        let id = required(&input.query_id, "queryId")?;
        check_query_id(id)?;
        let page = match input.max_items {
            None => MAX_PAGE,
            Some(n) if (0..=MAX_PAGE as i32).contains(&n) => n as usize,
            Some(n) => {
                return Err(limits::constraint(
                    &n.to_string(),
                    "maxItems",
                    "Member must have value between 0 and 10000",
                ))
            }
        };
        let offset = match input.next_token.as_deref() {
            None => 0,
            Some(token) => tokens::decode_opaque(token)?
                .strip_prefix(&format!("{id}:"))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| invalid("The specified nextToken is invalid."))?,
        };
        ctx.authorize(&authz::on("logs:GetQueryResults", []))?;
        let run = self.queries.get(ctx, id)?;
        let state = run.state();
        let rows = if state.status == Status::Complete {
            Arc::clone(&state.rows)
        } else {
            Arc::new(Vec::new())
        };
        let end = offset.saturating_add(page).min(rows.len());
        let results = rows.get(offset..end).map(<[_]>::to_vec).unwrap_or_default();
        let next_token = (end < rows.len()).then(|| tokens::encode_opaque(&format!("{id}:{end}")));
        Ok(logs::GetQueryResultsResponse {
            query_language: Some("CWLI".into()),
            results: Some(results),
            statistics: Some(logs::QueryStatistics {
                records_matched: Some(state.counts.matched as f64),
                records_scanned: Some(state.counts.scanned as f64),
                estimated_records_skipped: Some(0.0),
                bytes_scanned: Some(state.counts.bytes as f64),
                estimated_bytes_skipped: Some(0.0),
                log_groups_scanned: Some(run.groups.len() as f64),
                ..Default::default()
            }),
            status: Some(state.status.as_str().into()),
            encryption_key: None,
            next_token,
        })
    }

    pub(crate) fn stop_query(
        &self,
        ctx: &RequestContext,
        input: logs::StopQueryRequest,
    ) -> Result<logs::StopQueryResponse, AwsError> {
        let id = required(&input.query_id, "queryId")?;
        check_query_id(id)?;
        ctx.authorize(&authz::on("logs:StopQuery", []))?;
        let run = self.queries.get(ctx, id)?;
        let mut state = run.state();
        if !state.status.active() {
            return Err(invalid(format!(
                "Query {id} is not running; its status is {}.",
                state.status.as_str()
            )));
        }
        run.cancel.store(true, Ordering::Relaxed);
        state.status = Status::Cancelled;
        Ok(logs::StopQueryResponse {
            success: Some(true),
        })
    }

    pub(crate) fn describe_queries(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeQueriesRequest,
    ) -> Result<logs::DescribeQueriesResponse, AwsError> {
        if let Some(group) = &input.log_group_name {
            limits::check_group_name(group, "logGroupName")?;
        }
        let status =
            match input.status.as_deref() {
                None => None,
                Some(
                    s @ ("Scheduled" | "Running" | "Complete" | "Failed" | "Cancelled" | "Timeout"
                    | "Unknown"),
                ) => Some(s.to_string()),
                Some(other) => return Err(limits::constraint(
                    other,
                    "status",
                    "Member must satisfy enum value set: [Scheduled, Running, Complete, Failed, \
                     Cancelled, Timeout, Unknown]",
                )),
            };
        check_query_language(&input.query_language)?;
        let limit = match input.max_results {
            None => 1000,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            Some(n) => {
                return Err(limits::constraint(
                    &n.to_string(),
                    "maxResults",
                    "Member must have value between 1 and 1000",
                ))
            }
        };
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_opaque)
            .transpose()?;
        ctx.authorize(&authz::on("logs:DescribeQueries", []))?;
        let mut infos: Vec<logs::QueryInfo> = self
            .queries
            .of_account(ctx)
            .iter()
            .filter(|r| {
                input
                    .log_group_name
                    .as_ref()
                    .is_none_or(|g| r.groups.contains(g))
            })
            .map(|r| r.info())
            .filter(|i| status.is_none() || i.status == status)
            .collect();
        if let Some(after) = after {
            match infos
                .iter()
                .position(|i| i.query_id.as_deref() == Some(after.as_str()))
            {
                Some(at) => {
                    infos.drain(..=at);
                }
                None => return Err(invalid("The specified nextToken is invalid.")),
            }
        }
        let next_token = (infos.len() > limit)
            .then(|| {
                infos[limit - 1]
                    .query_id
                    .as_deref()
                    .map(tokens::encode_opaque)
            })
            .flatten();
        infos.truncate(limit);
        Ok(logs::DescribeQueriesResponse {
            queries: Some(infos),
            next_token,
        })
    }

    pub(crate) fn list_log_groups_for_query(
        &self,
        ctx: &RequestContext,
        input: logs::ListLogGroupsForQueryRequest,
    ) -> Result<logs::ListLogGroupsForQueryResponse, AwsError> {
        let id = required(&input.query_id, "queryId")?;
        check_query_id(id)?;
        let limit = match input.max_results {
            None => 500,
            Some(n) if (50..=500).contains(&n) => n as usize,
            Some(n) => {
                return Err(limits::constraint(
                    &n.to_string(),
                    "maxResults",
                    "Member must have value between 50 and 500",
                ))
            }
        };
        let offset = match input.next_token.as_deref() {
            None => 0,
            Some(token) => tokens::decode_opaque(token)?
                .parse::<usize>()
                .map_err(|_| invalid("The specified nextToken is invalid."))?,
        };
        ctx.authorize(&authz::on("logs:ListLogGroupsForQuery", []))?;
        let run = self.queries.get(ctx, id)?;
        let end = offset.saturating_add(limit).min(run.identifiers.len());
        Ok(logs::ListLogGroupsForQueryResponse {
            log_group_identifiers: Some(
                run.identifiers
                    .get(offset..end)
                    .map(<[_]>::to_vec)
                    .unwrap_or_default(),
            ),
            next_token: (end < run.identifiers.len())
                .then(|| tokens::encode_opaque(&end.to_string())),
        })
    }

    pub(crate) async fn get_log_record(
        &self,
        ctx: &RequestContext,
        input: logs::GetLogRecordRequest,
    ) -> Result<logs::GetLogRecordResponse, AwsError> {
        let pointer = required(&input.log_record_pointer, "logRecordPointer")?;
        let pointer = decode_pointer(pointer)?;
        let group = GroupRef {
            region: pointer.region.clone(),
            account: pointer.account.clone(),
            name: pointer.group.clone(),
        };
        let mut requirement = self.group_requirement("GetLogRecord", group.classic(), &group);
        if input.unmask == Some(true) {
            requirement = requirement.condition("logs:Unmask", "true");
        }
        ctx.authorize(&[requirement])?;
        let not_found = || {
            AwsError::bad_request(
                "ResourceNotFoundException",
                "The specified log record does not exist.",
            )
        };
        let name = group.name_in(ctx).map_err(|_| not_found())?;
        let stream = {
            let catalog = self.store.catalog();
            let entry = catalog
                .group(&ctx.account_id, &ctx.region, name)
                .ok_or_else(not_found)?;
            entry
                .streams
                .values()
                .find(|s| s.id == pointer.stream_id)
                .map(|s| s.name.clone())
                .ok_or_else(not_found)?
        };
        let store = Arc::clone(&self.store);
        let key = pointer.key;
        let stream_id = pointer.stream_id;
        let found = tokio::task::spawn_blocking(move || {
            store.read(|conn| {
                scan_stream(
                    conn,
                    stream_id,
                    EventKey {
                        timestamp: key.timestamp,
                        seq: key.seq.saturating_sub(1),
                    },
                    EventKey {
                        timestamp: key.timestamp,
                        seq: key.seq.saturating_add(1),
                    },
                    true,
                    1,
                )
            })
        })
        .await
        .map_err(|e| AwsError::internal(format!("log read task failed: {e}")))??;
        let event = found.into_iter().next().ok_or_else(not_found)?;
        let record = Record::from_event(Event {
            timestamp: event.key.timestamp,
            ingestion_time: event.ingest_ms,
            message: event.message.clone(),
            origin: Arc::new(Origin {
                log: format!("{}:{}", ctx.account_id, name),
                stream: stream.clone(),
                pointer_prefix: String::new(),
            }),
            seq: event.key.seq,
        });
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        if let Some(json) = record.json_fields() {
            for (k, v) in json {
                fields.insert(k.clone(), v.render().into_owned());
            }
        }
        fields.insert("@timestamp".into(), event.key.timestamp.to_string());
        fields.insert("@ingestionTime".into(), event.ingest_ms.to_string());
        fields.insert("@message".into(), event.message);
        fields.insert("@logStream".into(), stream);
        fields.insert("@log".into(), format!("{}:{}", ctx.account_id, name));
        Ok(logs::GetLogRecordResponse {
            log_record: Some(fields.into_iter().collect()),
        })
    }

    pub(crate) async fn get_log_group_fields(
        &self,
        ctx: &RequestContext,
        input: logs::GetLogGroupFieldsRequest,
    ) -> Result<logs::GetLogGroupFieldsResponse, AwsError> {
        let group = resolve_group(ctx, &input.log_group_name, &input.log_group_identifier)?;
        if let Some(time) = input.time {
            if time < 0 {
                return Err(limits::constraint(
                    &time.to_string(),
                    "time",
                    "Member must have value greater than or equal to 0",
                ));
            }
        }
        self.authorize_group(ctx, "GetLogGroupFields", &group, |r| r)?;
        let name = group.name_in(ctx)?.to_string();
        let (lower_ms, upper_ms) = match input.time {
            Some(t) => (
                t.saturating_mul(1000).saturating_sub(8 * 60_000),
                t.saturating_mul(1000).saturating_add(8 * 60_000),
            ),
            None => {
                let now = now_millis();
                (now - 15 * 60_000, now)
            }
        };
        let ids: Vec<i64> = {
            let catalog = self.store.catalog();
            let entry = catalog
                .group(&ctx.account_id, &ctx.region, &name)
                .ok_or_else(group_not_found)?;
            entry.streams.values().map(|s| s.id).collect()
        };
        let store = Arc::clone(&self.store);
        let (total, counts) = tokio::task::spawn_blocking(move || {
            store.read(|conn| {
                let mut scan = MergedScan::new(
                    conn,
                    &ids,
                    EventKey {
                        timestamp: lower_ms,
                        seq: i64::MIN,
                    },
                    EventKey {
                        timestamp: upper_ms,
                        seq: i64::MAX,
                    },
                    256,
                );
                let mut total = 0usize;
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                while let Some(event) = scan.next_event()? {
                    if total == FIELD_SAMPLE {
                        break;
                    }
                    total += 1;
                    let record = Record::from_event(Event {
                        timestamp: event.key.timestamp,
                        ingestion_time: event.ingest_ms,
                        message: event.message,
                        origin: Arc::new(Origin {
                            log: String::new(),
                            stream: String::new(),
                            pointer_prefix: String::new(),
                        }),
                        seq: event.key.seq,
                    });
                    if let Some(json) = record.json_fields() {
                        for k in json.keys() {
                            *counts.entry(k.clone()).or_default() += 1;
                        }
                    }
                }
                Ok((total, counts))
            })
        })
        .await
        .map_err(|e| AwsError::internal(format!("log read task failed: {e}")))??;
        let mut fields = Vec::new();
        if total > 0 {
            for system in [
                "@timestamp",
                "@message",
                "@logStream",
                "@log",
                "@ingestionTime",
            ] {
                fields.push(logs::LogGroupField {
                    name: Some(system.into()),
                    percent: Some(100),
                });
            }
            for (name, count) in counts {
                fields.push(logs::LogGroupField {
                    name: Some(name),
                    percent: (count * 100).checked_div(total).map(|p| p as i32),
                });
            }
        }
        Ok(logs::GetLogGroupFieldsResponse {
            log_group_fields: Some(fields),
        })
    }

    // ------------------------------------------------ query definitions ---

    pub(crate) async fn put_query_definition(
        &self,
        ctx: &RequestContext,
        input: logs::PutQueryDefinitionRequest,
    ) -> Result<logs::PutQueryDefinitionResponse, AwsError> {
        check_query_language(&input.query_language)?;
        let name = required(&input.name, "name")?;
        if name.is_empty() || name.chars().count() > 255 {
            return Err(limits::constraint(
                name,
                "name",
                "Member must have length between 1 and 255",
            ));
        }
        let text = required(&input.query_string, "queryString")?;
        if text.is_empty() || text.chars().count() > 10_000 {
            return Err(limits::constraint(
                "<query>",
                "queryString",
                "Member must have length between 1 and 10000",
            ));
        }
        let groups = input.log_group_names.clone().unwrap_or_default();
        for group in &groups {
            limits::check_group_name(group, "logGroupNames")?;
        }
        let parameters = input.parameters.clone().unwrap_or_default();
        if parameters.len() > 20 {
            return Err(limits::constraint(
                "<parameters>",
                "parameters",
                "Member must have length less than or equal to 20",
            ));
        }
        let parameters = parameters
            .into_iter()
            .map(|p| {
                let name = p
                    .name
                    .ok_or_else(|| limits::missing("parameters.member.name"))?;
                Ok((name, p.default_value, p.description))
            })
            .collect::<Result<Vec<_>, AwsError>>()?;
        if let Some(token) = &input.client_token {
            let len = token.chars().count();
            if !(36..=128).contains(&len) || token.chars().any(char::is_whitespace) {
                return Err(limits::constraint(
                    token,
                    "clientToken",
                    "Member must satisfy regular expression pattern: \\S{36,128}",
                ));
            }
        }
        if let Some(id) = &input.query_definition_id {
            check_query_id(id)?;
        }
        ctx.authorize(&authz::on("logs:PutQueryDefinition", []))?;
        let (id, updating) = match &input.query_definition_id {
            Some(id) => (id.clone(), true),
            None => (uuid::Uuid::new_v4().to_string(), false),
        };
        let saved = SavedDefinition {
            name: name.to_string(),
            query_string: text.to_string(),
            log_group_names: groups,
            last_modified: now_millis(),
            parameters,
        };
        let value = serde_json::to_string(&saved)
            .map_err(|e| AwsError::internal(format!("could not encode a query definition: {e}")))?;
        self.store
            .write(WriteOp::PutObject {
                key: definition_key(ctx, &id),
                value,
                rules: PutRules {
                    must_exist: updating.then(definition_not_found),
                    max_in_scope: Some((
                        MAX_QUERY_DEFINITIONS,
                        AwsError::bad_request(
                            "LimitExceededException",
                            format!(
                                "An account may save at most {MAX_QUERY_DEFINITIONS} query \
                                 definitions per Region."
                            ),
                        ),
                    )),
                    ..Default::default()
                },
            })
            .await?;
        Ok(logs::PutQueryDefinitionResponse {
            query_definition_id: Some(id),
        })
    }

    pub(crate) fn describe_query_definitions(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeQueryDefinitionsRequest,
    ) -> Result<logs::DescribeQueryDefinitionsResponse, AwsError> {
        check_query_language(&input.query_language)?;
        if let Some(prefix) = &input.query_definition_name_prefix {
            if prefix.is_empty() || prefix.chars().count() > 255 {
                return Err(limits::constraint(
                    prefix,
                    "queryDefinitionNamePrefix",
                    "Member must have length between 1 and 255",
                ));
            }
        }
        let limit = match input.max_results {
            None => 1000,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            Some(n) => {
                return Err(limits::constraint(
                    &n.to_string(),
                    "maxResults",
                    "Member must have value between 1 and 1000",
                ))
            }
        };
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_opaque)
            .transpose()?;
        ctx.authorize(&authz::on("logs:DescribeQueryDefinitions", []))?;
        let catalog = self.store.catalog();
        let mut all: Vec<(String, String, SavedDefinition)> = catalog
            .objects_in(&ctx.account_id, &ctx.region, kinds::QUERY_DEFINITION, "")
            .filter_map(|(k, v)| {
                serde_json::from_str::<SavedDefinition>(v)
                    .ok()
                    .map(|d| (d.name.clone(), k.name.clone(), d))
            })
            .filter(|(name, _, _)| {
                input
                    .query_definition_name_prefix
                    .as_ref()
                    .is_none_or(|p| name.starts_with(p.as_str()))
            })
            .collect();
        drop(catalog);
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        if let Some(after) = after {
            let (name, id) = after
                .split_once('\n')
                .ok_or_else(|| invalid("The specified nextToken is invalid."))?;
            all.retain(|(n, i, _)| (n.as_str(), i.as_str()) > (name, id));
        }
        let next_token = (all.len() > limit)
            .then(|| tokens::encode_opaque(&format!("{}\n{}", all[limit - 1].0, all[limit - 1].1)));
        all.truncate(limit);
        Ok(logs::DescribeQueryDefinitionsResponse {
            query_definitions: Some(
                all.into_iter()
                    .map(|(name, id, d)| logs::QueryDefinition {
                        query_language: Some("CWLI".into()),
                        query_definition_id: Some(id),
                        name: Some(name),
                        query_string: Some(d.query_string),
                        last_modified: Some(d.last_modified),
                        log_group_names: Some(d.log_group_names),
                        parameters: (!d.parameters.is_empty()).then(|| {
                            d.parameters
                                .into_iter()
                                .map(|(name, default_value, description)| logs::QueryParameter {
                                    name: Some(name),
                                    default_value,
                                    description,
                                })
                                .collect()
                        }),
                    })
                    .collect(),
            ),
            next_token,
        })
    }

    pub(crate) async fn delete_query_definition(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteQueryDefinitionRequest,
    ) -> Result<logs::DeleteQueryDefinitionResponse, AwsError> {
        let id = required(&input.query_definition_id, "queryDefinitionId")?;
        check_query_id(id)?;
        ctx.authorize(&authz::on("logs:DeleteQueryDefinition", []))?;
        self.store
            .write(WriteOp::DeleteObject {
                key: definition_key(ctx, id),
                missing: definition_not_found(),
            })
            .await?;
        Ok(logs::DeleteQueryDefinitionResponse {
            success: Some(true),
        })
    }
}

/// Runs a query over the given streams' events in `[lower, upper]`.
/// Returns the rows and the final status (`Complete`, `Cancelled` or
/// `Timeout`).
fn execute(
    store: &crate::store::Store,
    run: &QueryRun,
    query: &Query,
    streams: Vec<(i64, Arc<Origin>)>,
    lower: EventKey,
    upper: EventKey,
    limit: usize,
) -> Result<(Vec<Vec<logs::ResultField>>, Status), String> {
    let began = Instant::now();
    let ids: Vec<i64> = streams.iter().map(|(id, _)| *id).collect();
    let origins: HashMap<i64, Arc<Origin>> = streams.into_iter().collect();
    let outcome = store
        .read(|conn| {
            let mut exec = Execution::new(query, limit);
            let mut scan = MergedScan::new(conn, &ids, lower, upper, 512);
            let mut counts = Counts::default();
            let mut status = Status::Complete;
            while exec.wants_more() {
                let Some(event) = scan.next_event()? else {
                    break;
                };
                counts.scanned += 1;
                counts.bytes += event.message.len() as u64 + limits::EVENT_OVERHEAD_BYTES as u64;
                let Some(origin) = origins.get(&event.stream_id) else {
                    continue;
                };
                let record = Record::from_event(Event {
                    timestamp: event.key.timestamp,
                    ingestion_time: event.ingest_ms,
                    message: event.message,
                    origin: Arc::clone(origin),
                    seq: event.key.seq,
                });
                if let Err(e) = exec.push(record) {
                    return Ok(Err(e.0));
                }
                if counts.scanned % 4096 == 0 {
                    counts.matched = exec.matched;
                    run.state().counts = counts;
                    if run.cancel.load(Ordering::Relaxed) {
                        status = Status::Cancelled;
                        break;
                    }
                    if began.elapsed() > QUERY_TIMEOUT {
                        status = Status::Timeout;
                        break;
                    }
                }
            }
            counts.matched = exec.matched;
            run.state().counts = counts;
            if run.cancel.load(Ordering::Relaxed) {
                status = Status::Cancelled;
            }
            Ok(exec.finish().map(|rows| (rows, status)).map_err(|e| e.0))
        })
        .map_err(|e| e.message)?;
    let (rows, status) = outcome?;
    let rows = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(field, value)| {
                    let value = if field == "@ptr" {
                        tokens::encode_opaque(&value)
                    } else {
                        value
                    };
                    logs::ResultField {
                        field: Some(field),
                        value: Some(value),
                    }
                })
                .collect()
        })
        .collect();
    Ok((rows, status))
}
