//! Metering: what every task used, as Fargate bills it.
//!
//! A task is charged per second with a one-minute minimum for the vCPU,
//! memory and ephemeral storage it asked for, from the moment its image pull
//! started (`pullStartedAt`, else `startedAt`) until it stopped
//! (`stoppedAt`, else `executionStoppedAt`), or until now while it runs. The
//! duration is rounded up to the whole second; a task that never started
//! pulling costs nothing. EC2-launch-type tasks are metered the same way but
//! cost nothing here: their price is the instances'.
//!
//! Stopped tasks are deleted after `--task-retention`, so the transition to
//! STOPPED writes a durable usage line ([`ledger_op`]) in the same store
//! mutation; [`usage`] reports those lines plus the tasks not yet in the
//! ledger, metered up to now.
//!
//! Ledger lines live under `/usage/<account>/<region>/<cluster>/<task id>`,
//! outside `/ecs/`: they are never deleted, and the task garbage collector
//! scans `/ecs/` on every pass.

use std::collections::BTreeMap;
use std::path::Path;

use berth_model::AwsError;
use berth_store::{Op, ReadView};
use serde::{Deserialize, Serialize};

use crate::keys::Scope;
use crate::records::{decode, encode, now};
use crate::tasks::{TaskRecord, STOPPED};

/// The ephemeral storage a Fargate task gets when it asks for none, and
/// the amount its price includes.
pub const DEFAULT_STORAGE_GB: f64 = 20.0;

/// The shortest duration a started task is billed for.
pub const MINIMUM_BILLED_SECONDS: u64 = 60;

pub const FARGATE: &str = "FARGATE";
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";
pub const EC2: &str = "EC2";

/// Prefix of one account and region's usage ledger.
pub fn ledger_prefix(scope: &Scope) -> String {
    format!("/usage/{}/{}/", scope.account, scope.region)
}

/// The usage line of one task.
pub fn ledger_key(scope: &Scope, cluster: &str, task_id: &str) -> String {
    format!("{}{cluster}/{task_id}", ledger_prefix(scope))
}

/// Prices of one capacity provider, in USD per hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prices {
    /// Per vCPU-hour.
    pub vcpu_hour: f64,
    /// Per GB-hour of memory.
    pub gb_hour: f64,
    /// Per GB-hour of ephemeral storage beyond `free_storage_gb`.
    #[serde(default)]
    pub storage_gb_hour: f64,
    /// Ephemeral storage the vCPU and memory price includes.
    #[serde(default = "default_free_storage")]
    pub free_storage_gb: f64,
}

fn default_free_storage() -> f64 {
    DEFAULT_STORAGE_GB
}

/// Prices by capacity provider (`FARGATE`, `FARGATE_SPOT`). A provider the
/// table does not name costs nothing. As JSON:
/// `{"FARGATE": {"vcpuHour": 0.04048, "gbHour": 0.004445,
///   "storageGbHour": 0.000111, "freeStorageGb": 20}, "FARGATE_SPOT": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, Prices>);

impl Default for PriceTable {
    /// AWS Fargate's public on-demand prices for Linux/x86 in us-east-1
    /// (https://aws.amazon.com/fargate/pricing/): $0.04048 per vCPU-hour,
    /// $0.004445 per GB-hour, $0.000111 per GB-hour of ephemeral storage
    /// beyond the 20 GB every task includes; billed "from the time you start
    /// to download your container image until the Amazon ECS Task …
    /// terminates, rounded up to the nearest second", one-minute minimum.
    /// Fargate Spot (us-east-1, Linux/x86): $0.01282 per vCPU-hour and
    /// $0.0014 per GB-hour; Spot prices move with spare capacity, so set
    /// current ones with `--fargate-prices`. Spot's storage is priced as
    /// on-demand's.
    fn default() -> Self {
        let mut table = BTreeMap::new();
        table.insert(
            FARGATE.to_string(),
            Prices {
                vcpu_hour: 0.04048,
                gb_hour: 0.004445,
                storage_gb_hour: 0.000111,
                free_storage_gb: DEFAULT_STORAGE_GB,
            },
        );
        table.insert(
            FARGATE_SPOT.to_string(),
            Prices {
                vcpu_hour: 0.01282,
                gb_hour: 0.0014,
                storage_gb_hour: 0.000111,
                free_storage_gb: DEFAULT_STORAGE_GB,
            },
        );
        PriceTable(table)
    }
}

/// A price table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    #[error("reading the price table {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the price table {path} is not valid JSON of the expected shape: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("the price table {path} has a negative or non-finite price for {provider}")]
    Invalid { path: String, provider: String },
}

impl PriceTable {
    /// Reads a table from a JSON file; it replaces the default entirely.
    pub fn load(path: &Path) -> Result<PriceTable, PriceTableError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| PriceTableError::Read {
            path: shown.clone(),
            source,
        })?;
        let table: PriceTable =
            serde_json::from_slice(&text).map_err(|source| PriceTableError::Parse {
                path: shown.clone(),
                source,
            })?;
        for (provider, p) in &table.0 {
            let ok = [p.vcpu_hour, p.gb_hour, p.storage_gb_hour, p.free_storage_gb]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0);
            if !ok {
                return Err(PriceTableError::Invalid {
                    path: shown,
                    provider: provider.clone(),
                });
            }
        }
        Ok(table)
    }

    pub fn get(&self, provider: &str) -> Option<&Prices> {
        self.0.get(provider)
    }
}

/// One task's metered usage. Also the shape of a ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metered {
    pub task_arn: String,
    /// Cluster name.
    pub cluster: String,
    /// Service name, for tasks a service started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `FARGATE`, `FARGATE_SPOT`, or the launch type (`EC2`, `EXTERNAL`).
    pub provider: String,
    pub launch_type: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When billing started (`pullStartedAt`, else `startedAt`).
    pub started_at: f64,
    /// When it stopped; absent while the task runs (metered up to now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    pub billed_seconds: u64,
    pub vcpu: f64,
    pub gb: f64,
    /// Ephemeral storage the task had (GB).
    pub storage_gb: f64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
    /// Storage GB-seconds beyond the free 20 GB (Fargate only).
    pub storage_gb_seconds: f64,
}

impl Metered {
    /// Storage GB-seconds beyond `free` GB.
    pub fn storage_gb_seconds_beyond(&self, free: f64) -> f64 {
        (self.storage_gb - free).max(0.0) * self.billed_seconds as f64
    }

    fn is_fargate(&self) -> bool {
        self.launch_type == FARGATE
    }
}

/// Whole seconds billed for `seconds` of run time: rounded up, at least a
/// minute. Measured in milliseconds first so `90.000000001` (float noise
/// from subtracting epoch seconds) still bills 90.
pub fn billed_seconds(seconds: f64) -> u64 {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    millis.div_ceil(1000).max(MINIMUM_BILLED_SECONDS)
}

/// CPU units (`"256"`, or `"0.25 vCPU"`) as vCPUs.
fn parse_vcpu(value: &str) -> Option<f64> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    if let Some(n) = lower.strip_suffix("vcpu") {
        return n.trim().parse::<f64>().ok();
    }
    v.parse::<f64>().ok().map(|units| units / 1024.0)
}

/// Memory (`"512"` MiB, or `"0.5 GB"`) as GB (GiB, as Fargate sizes it).
fn parse_gb(value: &str) -> Option<f64> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    if let Some(n) = lower.strip_suffix("gb") {
        return n.trim().parse::<f64>().ok();
    }
    v.parse::<f64>().ok().map(|mib| mib / 1024.0)
}

fn finite_non_negative(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// The capacity provider a task's price comes from.
fn provider_of(record: &TaskRecord) -> (String, String) {
    let task = &record.task;
    let capacity = task.capacity_provider_name.as_deref();
    let launch_type = match (task.launch_type.as_deref(), capacity) {
        (Some(lt), _) => lt.to_string(),
        (None, Some(FARGATE | FARGATE_SPOT)) => FARGATE.to_string(),
        (None, _) => EC2.to_string(),
    };
    let provider = match capacity {
        Some(p @ (FARGATE | FARGATE_SPOT)) if launch_type == FARGATE => p.to_string(),
        _ if launch_type == FARGATE => FARGATE.to_string(),
        _ => launch_type.clone(),
    };
    (provider, launch_type)
}

/// A task's usage up to `now` (seconds since the epoch), or `None` for a
/// task that never started pulling its image (it costs nothing).
///
/// Sizes are the task-level `cpu`/`memory`; a task without them (EC2 launch
/// type) is metered by what it reserves on its instance.
pub fn charge(record: &TaskRecord, now: f64) -> Option<Metered> {
    let task = &record.task;
    let start = task.pull_started_at.or(task.started_at)?;
    let stopped = record.last_status() == STOPPED;
    let end = match (task.stopped_at, task.execution_stopped_at) {
        (Some(at), _) | (None, Some(at)) => Some(at),
        // STOPPED without a stop time: bill what is known, never a
        // duration that keeps growing.
        (None, None) if stopped => Some(
            [task.stopping_at, task.pull_stopped_at, task.started_at]
                .into_iter()
                .flatten()
                .fold(start, f64::max),
        ),
        (None, None) => None,
    };
    let billed = billed_seconds(end.unwrap_or(now) - start);
    let vcpu = finite_non_negative(
        task.cpu
            .as_deref()
            .and_then(parse_vcpu)
            .unwrap_or(record.reservation.cpu as f64 / 1024.0),
    );
    let gb = finite_non_negative(
        task.memory
            .as_deref()
            .and_then(parse_gb)
            .unwrap_or(record.reservation.memory as f64 / 1024.0),
    );
    let (provider, launch_type) = provider_of(record);
    let asked_storage = task
        .ephemeral_storage
        .as_ref()
        .and_then(|s| s.size_in_gi_b)
        .or_else(|| {
            task.fargate_ephemeral_storage
                .as_ref()
                .and_then(|s| s.size_in_gi_b)
        })
        .map(f64::from);
    let storage_gb = finite_non_negative(match asked_storage {
        Some(gb) => gb,
        None if launch_type == FARGATE => DEFAULT_STORAGE_GB,
        None => 0.0,
    });
    let tags = task
        .tags
        .iter()
        .flatten()
        .filter_map(|t| Some((t.key.clone()?, t.value.clone().unwrap_or_default())))
        .collect();
    let service = task
        .group
        .as_deref()
        .and_then(|g| g.strip_prefix("service:"))
        .map(str::to_string);
    let seconds = billed as f64;
    let mut metered = Metered {
        task_arn: record.arn().to_string(),
        cluster: record.cluster.clone(),
        service,
        provider,
        launch_type,
        tags,
        started_at: start,
        stopped_at: end,
        billed_seconds: billed,
        vcpu,
        gb,
        storage_gb,
        vcpu_seconds: vcpu * seconds,
        gb_seconds: gb * seconds,
        storage_gb_seconds: 0.0,
    };
    if metered.is_fargate() {
        metered.storage_gb_seconds = metered.storage_gb_seconds_beyond(DEFAULT_STORAGE_GB);
    }
    Some(metered)
}

/// What a metered task costs, in USD. EC2-launch-type tasks (and providers
/// the table does not price) cost 0.
pub fn cost(metered: &Metered, prices: &PriceTable) -> f64 {
    if !metered.is_fargate() {
        return 0.0;
    }
    let Some(p) = prices.get(&metered.provider) else {
        return 0.0;
    };
    (metered.vcpu_seconds * p.vcpu_hour
        + metered.gb_seconds * p.gb_hour
        + metered.storage_gb_seconds_beyond(p.free_storage_gb) * p.storage_gb_hour)
        / 3600.0
}

/// The ledger line to write in the mutation that makes `record` STOPPED
/// (pass the record as it will be stored: `lastStatus` STOPPED and its stop
/// times set). `None` when the task never started pulling (nothing to bill).
/// Writing it again for the same task overwrites the same key.
pub fn ledger_op(scope: &Scope, record: &TaskRecord) -> Result<Option<Op>, AwsError> {
    let Some(mut metered) = charge(record, now()) else {
        return Ok(None);
    };
    if metered.stopped_at.is_none() {
        // Not stopped yet by its timestamps: close the line now.
        metered.stopped_at = Some(metered.started_at + metered.billed_seconds as f64);
    }
    Ok(Some(Op::put(
        ledger_key(scope, &record.cluster, &record.id),
        encode(&metered)?,
    )))
}

/// Which tasks a report covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageFilter {
    /// Cluster name (or ARN).
    pub cluster: Option<String>,
    /// Service name (or ARN).
    pub service: Option<String>,
    /// Tags the task must all carry (`key`, `value`).
    pub tags: Vec<(String, String)>,
    /// Only tasks billed after this (seconds since the epoch): a task
    /// counts whole when its billed interval overlaps `[since, until)`.
    pub since: Option<f64>,
    pub until: Option<f64>,
}

/// The last segment of a name-or-ARN.
fn name_of(reference: &str) -> &str {
    if reference.starts_with("arn:") {
        reference.rsplit('/').next().unwrap_or(reference)
    } else {
        reference
    }
}

impl UsageFilter {
    fn matches(&self, m: &Metered, now: f64) -> bool {
        if let Some(cluster) = &self.cluster {
            if name_of(cluster) != m.cluster {
                return false;
            }
        }
        if let Some(service) = &self.service {
            if m.service.as_deref() != Some(name_of(service)) {
                return false;
            }
        }
        if !self
            .tags
            .iter()
            .all(|(k, v)| m.tags.get(k).is_some_and(|have| have == v))
        {
            return false;
        }
        let end = m.stopped_at.unwrap_or(now);
        if self.since.is_some_and(|since| end < since) {
            return false;
        }
        if self.until.is_some_and(|until| m.started_at >= until) {
            return false;
        }
        true
    }
}

/// One task in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageLine {
    #[serde(flatten)]
    pub metered: Metered,
    /// Whether the task was still running (metered up to the report's time).
    pub running: bool,
    /// USD.
    pub cost: f64,
}

/// Sums over a group of tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    pub tasks: u64,
    pub billed_seconds: u64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
    pub storage_gb_seconds: f64,
    pub cost: f64,
}

impl UsageTotals {
    fn add(&mut self, line: &UsageLine) {
        self.tasks += 1;
        self.billed_seconds += line.metered.billed_seconds;
        self.vcpu_seconds += line.metered.vcpu_seconds;
        self.gb_seconds += line.metered.gb_seconds;
        self.storage_gb_seconds += line.metered.storage_gb_seconds;
        self.cost += line.cost;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUsage {
    pub cluster: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUsage {
    pub cluster: String,
    pub service: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagUsage {
    pub key: String,
    pub value: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /_berth/usage` and `berth usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// When running tasks were metered up to (seconds since the epoch).
    pub generated_at: f64,
    pub currency: String,
    pub tasks: Vec<UsageLine>,
    pub by_cluster: Vec<ClusterUsage>,
    pub by_service: Vec<ServiceUsage>,
    pub by_tag: Vec<TagUsage>,
    pub total: UsageTotals,
}

const PAGE: usize = 1024;

/// Every key/value under `prefix`, page by page.
fn scan(view: &dyn ReadView, prefix: &str, mut each: impl FnMut(&berth_store::KeyValue)) {
    let mut after: Option<String> = None;
    loop {
        let page = view.range(prefix, after.as_deref(), PAGE);
        let Some(last) = page.last() else {
            return;
        };
        after = Some(last.key.clone());
        for kv in &page {
            each(kv);
        }
        if page.len() < PAGE {
            return;
        }
    }
}

/// The usage of `scope`'s tasks that `filter` selects: every ledger line,
/// plus tasks not in the ledger (running ones metered up to `now`).
pub fn usage(
    view: &dyn ReadView,
    scope: &Scope,
    filter: &UsageFilter,
    prices: &PriceTable,
    now: f64,
) -> Result<UsageReport, AwsError> {
    let mut lines: BTreeMap<String, UsageLine> = BTreeMap::new();
    let cluster = filter.cluster.as_deref().map(name_of);
    let ledger = match cluster {
        Some(c) => format!("{}{c}/", ledger_prefix(scope)),
        None => ledger_prefix(scope),
    };
    let mut failed = None;
    scan(view, &ledger, |kv| match decode::<Metered>(kv) {
        Ok(metered) => {
            let cost = cost(&metered, prices);
            lines.insert(
                metered.task_arn.clone(),
                UsageLine {
                    metered,
                    running: false,
                    cost,
                },
            );
        }
        Err(e) => failed = Some(e),
    });
    if let Some(e) = failed {
        return Err(e);
    }
    // `tasks/<cluster>/` of one cluster, or `tasks/` of every cluster.
    let tasks = match cluster {
        Some(c) => scope.tasks(c),
        None => scope.tasks("").trim_end_matches('/').to_string() + "/",
    };
    scan(view, &tasks, |kv| {
        let Ok(record) = decode::<TaskRecord>(kv) else {
            return;
        };
        if lines.contains_key(record.arn()) {
            return;
        }
        if let Some(metered) = charge(&record, now) {
            let cost = cost(&metered, prices);
            let running = record.last_status() != STOPPED;
            lines.insert(
                metered.task_arn.clone(),
                UsageLine {
                    metered,
                    running,
                    cost,
                },
            );
        }
    });
    let mut tasks: Vec<UsageLine> = lines
        .into_values()
        .filter(|l| filter.matches(&l.metered, now))
        .collect();
    tasks.sort_by(|a, b| {
        a.metered
            .started_at
            .total_cmp(&b.metered.started_at)
            .then_with(|| a.metered.task_arn.cmp(&b.metered.task_arn))
    });
    let mut total = UsageTotals::default();
    let mut by_cluster: BTreeMap<String, UsageTotals> = BTreeMap::new();
    let mut by_service: BTreeMap<(String, String), UsageTotals> = BTreeMap::new();
    let mut by_tag: BTreeMap<(String, String), UsageTotals> = BTreeMap::new();
    for line in &tasks {
        let m = &line.metered;
        total.add(line);
        by_cluster.entry(m.cluster.clone()).or_default().add(line);
        if let Some(service) = &m.service {
            by_service
                .entry((m.cluster.clone(), service.clone()))
                .or_default()
                .add(line);
        }
        for (k, v) in &m.tags {
            by_tag.entry((k.clone(), v.clone())).or_default().add(line);
        }
    }
    Ok(UsageReport {
        generated_at: now,
        currency: "USD".to_string(),
        tasks,
        by_cluster: by_cluster
            .into_iter()
            .map(|(cluster, totals)| ClusterUsage { cluster, totals })
            .collect(),
        by_service: by_service
            .into_iter()
            .map(|((cluster, service), totals)| ServiceUsage {
                cluster,
                service,
                totals,
            })
            .collect(),
        by_tag: by_tag
            .into_iter()
            .map(|((key, value), totals)| TagUsage { key, value, totals })
            .collect(),
        total,
    })
}

/// Reads a time for `since`/`until`: seconds since the epoch (`1700000000`),
/// an RFC 3339 UTC time (`2024-05-01T12:00:00Z`, fractions allowed), a date
/// (`2024-05-01`, midnight UTC), or a duration before `now` (`90s`, `30m`,
/// `24h`, `7d`).
pub fn parse_time(value: &str, now: f64) -> Option<f64> {
    let v = value.trim();
    if let Ok(epoch) = v.parse::<f64>() {
        return epoch.is_finite().then_some(epoch);
    }
    if let Some(unit) = v.chars().last().filter(|c| "smhd".contains(*c)) {
        if let Ok(n) = v[..v.len() - 1].parse::<f64>() {
            let factor = match unit {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                _ => 86400.0,
            };
            return (n.is_finite() && n >= 0.0).then_some(now - n * factor);
        }
    }
    let (date, time) = match v.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (v, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(year, month, day) as f64 * 86400.0;
    if let Some(time) = time {
        let time = time.strip_suffix('Z').or(time.strip_suffix("+00:00"))?;
        let mut hms = time.splitn(3, ':');
        let h: u32 = hms.next()?.parse().ok()?;
        let m: u32 = hms.next()?.parse().ok()?;
        let s: f64 = hms.next().map_or(Some(0.0), |s| s.parse().ok())?;
        if h > 23 || m > 59 || !(0.0..61.0).contains(&s) {
            return None;
        }
        secs += f64::from(h * 3600 + m * 60) + s;
    }
    Some(secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::{EphemeralStorage, Tag, Task};
    use berth_store::{SqliteOptions, SqliteStore, StoreExt};

    const T0: f64 = 1_700_000_000.0;

    fn scope() -> Scope {
        Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        }
    }

    fn fargate(id: &str, cpu: &str, memory: &str) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            cluster: "default".into(),
            task: Task {
                task_arn: Some(format!(
                    "arn:aws:ecs:us-east-1:000000000000:task/default/{id}"
                )),
                cpu: Some(cpu.into()),
                memory: Some(memory.into()),
                launch_type: Some(FARGATE.into()),
                capacity_provider_name: Some(FARGATE.into()),
                last_status: Some("RUNNING".into()),
                ..Task::default()
            },
            ..TaskRecord::default()
        }
    }

    fn ran(mut record: TaskRecord, from: f64, to: f64) -> TaskRecord {
        record.task.pull_started_at = Some(from);
        record.task.started_at = Some(from + 5.0);
        record.task.stopped_at = Some(to);
        record.task.last_status = Some(STOPPED.into());
        record
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_ninety_second_example() {
        let record = ran(fargate("a", "256", "512"), T0, T0 + 90.0);
        let m = charge(&record, T0 + 1000.0).unwrap();
        assert_eq!(m.billed_seconds, 90);
        assert!(close(m.vcpu_seconds, 22.5));
        assert!(close(m.gb_seconds, 45.0));
        assert!(close(m.storage_gb_seconds, 0.0));
        assert_eq!(m.provider, FARGATE);
        let c = cost(&m, &PriceTable::default());
        assert!(close(c, 22.5 / 3600.0 * 0.04048 + 45.0 / 3600.0 * 0.004445));
        // $0.0003085625: "$0.000308" truncated to six places.
        assert!(close(c, 0.000_308_562_5));
    }

    #[test]
    fn a_minute_at_least() {
        let m = charge(&ran(fargate("a", "1024", "2048"), T0, T0 + 3.0), T0).unwrap();
        assert_eq!(m.billed_seconds, 60);
        assert!(close(m.vcpu_seconds, 60.0));
        assert!(close(m.gb_seconds, 120.0));
    }

    #[test]
    fn rounds_up_to_the_second_but_not_float_noise() {
        let m = charge(&ran(fargate("a", "1024", "1024"), T0, T0 + 90.001), T0).unwrap();
        assert_eq!(m.billed_seconds, 91);
        let start = 1_700_000_000.123;
        let m = charge(&ran(fargate("a", "1024", "1024"), start, start + 90.0), T0).unwrap();
        assert_eq!(m.billed_seconds, 90);
        assert_eq!(billed_seconds(120.4), 121);
        assert_eq!(billed_seconds(-5.0), 60);
    }

    #[test]
    fn starts_at_pull_else_start_and_never_pulled_is_free() {
        let mut record = fargate("a", "1024", "1024");
        assert!(charge(&record, T0).is_none());
        record.task.started_at = Some(T0);
        record.task.execution_stopped_at = Some(T0 + 100.0);
        let m = charge(&record, T0 + 500.0).unwrap();
        assert_eq!(m.started_at, T0);
        assert_eq!(m.stopped_at, Some(T0 + 100.0));
        assert_eq!(m.billed_seconds, 100);
    }

    #[test]
    fn running_tasks_are_metered_up_to_now() {
        let mut record = fargate("a", "512", "1024");
        record.task.pull_started_at = Some(T0);
        let m = charge(&record, T0 + 300.0).unwrap();
        assert_eq!(m.billed_seconds, 300);
        assert_eq!(m.stopped_at, None);
        assert!(close(m.vcpu_seconds, 150.0));
        assert!(close(m.gb_seconds, 300.0));
    }

    #[test]
    fn spot_prices() {
        let mut record = ran(fargate("a", "1024", "2048"), T0, T0 + 3600.0);
        record.task.capacity_provider_name = Some(FARGATE_SPOT.into());
        let m = charge(&record, T0).unwrap();
        assert_eq!(m.provider, FARGATE_SPOT);
        assert!(close(
            cost(&m, &PriceTable::default()),
            0.01282 + 2.0 * 0.0014
        ));
    }

    #[test]
    fn storage_beyond_the_free_twenty_gb() {
        let mut record = ran(fargate("a", "1024", "2048"), T0, T0 + 3600.0);
        record.task.ephemeral_storage = Some(EphemeralStorage {
            size_in_gi_b: Some(50),
        });
        let m = charge(&record, T0).unwrap();
        assert!(close(m.storage_gb, 50.0));
        assert!(close(m.storage_gb_seconds, 30.0 * 3600.0));
        let c = cost(&m, &PriceTable::default());
        assert!(close(c, 0.04048 + 2.0 * 0.004445 + 30.0 * 0.000111));
        // The default 20 GB costs nothing extra.
        let m = charge(&ran(fargate("b", "1024", "2048"), T0, T0 + 60.0), T0).unwrap();
        assert!(close(m.storage_gb, 20.0));
        assert!(close(m.storage_gb_seconds, 0.0));
    }

    #[test]
    fn ec2_tasks_are_metered_but_free() {
        let mut record = ran(fargate("a", "", ""), T0, T0 + 120.0);
        record.task.cpu = None;
        record.task.memory = None;
        record.task.launch_type = Some(EC2.into());
        record.task.capacity_provider_name = None;
        record.reservation.cpu = 512;
        record.reservation.memory = 256;
        let m = charge(&record, T0).unwrap();
        assert_eq!(m.provider, EC2);
        assert!(close(m.vcpu_seconds, 60.0));
        assert!(close(m.gb_seconds, 30.0));
        assert!(close(m.storage_gb, 0.0));
        assert_eq!(cost(&m, &PriceTable::default()), 0.0);
    }

    #[test]
    fn price_tables_load_from_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        std::fs::write(
            &path,
            r#"{"FARGATE": {"vcpuHour": 1.0, "gbHour": 0.5, "storageGbHour": 0.1, "freeStorageGb": 10}}"#,
        )
        .unwrap();
        let table = PriceTable::load(&path).unwrap();
        assert_eq!(table.get(FARGATE).unwrap().free_storage_gb, 10.0);
        assert!(table.get(FARGATE_SPOT).is_none());
        let default = serde_json::to_value(PriceTable::default()).unwrap();
        assert_eq!(default["FARGATE"]["vcpuHour"], 0.04048);
        std::fs::write(&path, r#"{"FARGATE": {"vcpuHour": -1, "gbHour": 0}}"#).unwrap();
        assert!(matches!(
            PriceTable::load(&path),
            Err(PriceTableError::Invalid { .. })
        ));
        std::fs::write(&path, r#"{"FARGATE": {"vcpu": 1}}"#).unwrap();
        assert!(matches!(
            PriceTable::load(&path),
            Err(PriceTableError::Parse { .. })
        ));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000", 0.0), Some(T0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0.0), Some(T0));
        assert_eq!(parse_time("1970-01-02", 0.0), Some(86400.0));
        assert_eq!(parse_time("24h", T0), Some(T0 - 86400.0));
        assert_eq!(parse_time("yesterday", T0), None);
        assert_eq!(parse_time("2023-13-01", T0), None);
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("s.db"))).unwrap();
        (dir, store)
    }

    async fn put(store: &SqliteStore, ops: Vec<Op>) {
        store
            .update(move |_| Ok::<_, AwsError>((ops.clone(), ())))
            .await
            .unwrap()
            .unwrap();
    }

    fn task_op(record: &TaskRecord) -> Op {
        Op::put(
            scope().task(&record.cluster, &record.id),
            encode(record).unwrap(),
        )
    }

    #[tokio::test]
    async fn reports_ledger_and_live_tasks_with_filters() {
        let (_dir, store) = store();
        let scope = scope();
        let now = T0 + 1000.0;
        // A stopped service task, already garbage-collected: only its line.
        let mut web = ran(fargate("web1", "256", "512"), T0, T0 + 90.0);
        web.task.group = Some("service:web".into());
        web.task.tags = Some(vec![Tag {
            key: Some("team".into()),
            value: Some("a".into()),
        }]);
        let line = ledger_op(&scope, &web).unwrap().unwrap();
        // A running task in another cluster.
        let mut batch = fargate("job1", "1024", "2048");
        batch.cluster = "batch".into();
        batch.task.pull_started_at = Some(T0 + 400.0);
        batch.task.tags = Some(vec![Tag {
            key: Some("team".into()),
            value: Some("b".into()),
        }]);
        // A task that never pulled: not reported.
        let pending = fargate("p1", "256", "512");
        // A stopped task whose line exists and is still stored: counted once.
        let mut web2 = ran(fargate("web2", "256", "512"), T0 + 100.0, T0 + 400.0);
        web2.task.group = Some("service:web".into());
        let line2 = ledger_op(&scope, &web2).unwrap().unwrap();
        put(
            &store,
            vec![
                line,
                line2,
                task_op(&web2),
                task_op(&batch),
                task_op(&pending),
            ],
        )
        .await;
        let prices = PriceTable::default();
        let all = usage(&store, &scope, &UsageFilter::default(), &prices, now).unwrap();
        assert_eq!(all.tasks.len(), 3);
        assert_eq!(all.total.tasks, 3);
        assert_eq!(all.total.billed_seconds, 90 + 300 + 600);
        let job = all
            .tasks
            .iter()
            .find(|l| l.metered.cluster == "batch")
            .unwrap();
        assert!(job.running);
        assert_eq!(job.metered.billed_seconds, 600);
        assert_eq!(all.by_cluster.len(), 2);
        assert_eq!(all.by_service.len(), 1);
        assert_eq!(all.by_service[0].totals.tasks, 2);
        assert_eq!(all.by_tag.len(), 2);

        let json = serde_json::to_value(&all).unwrap();
        assert!(json["byCluster"][0]["vcpuSeconds"].is_number());
        assert!(json["tasks"][0]["taskArn"].is_string());
        assert!(json["tasks"][0]["billedSeconds"].is_number());

        let by = |filter: UsageFilter| usage(&store, &scope, &filter, &prices, now).unwrap();
        let web_only = by(UsageFilter {
            service: Some("web".into()),
            ..UsageFilter::default()
        });
        assert_eq!(web_only.total.tasks, 2);
        let cluster = by(UsageFilter {
            cluster: Some("arn:aws:ecs:us-east-1:000000000000:cluster/batch".into()),
            ..UsageFilter::default()
        });
        assert_eq!(cluster.total.tasks, 1);
        let team_a = by(UsageFilter {
            tags: vec![("team".into(), "a".into())],
            ..UsageFilter::default()
        });
        assert_eq!(team_a.total.tasks, 1);
        assert!(close(team_a.total.cost, 0.000_308_562_5));
        let late = by(UsageFilter {
            since: Some(T0 + 200.0),
            ..UsageFilter::default()
        });
        assert_eq!(late.total.tasks, 2);
        let early = by(UsageFilter {
            until: Some(T0 + 100.0),
            ..UsageFilter::default()
        });
        assert_eq!(early.total.tasks, 1);
        let other_region = Scope {
            account: "000000000000".into(),
            region: "eu-west-1".into(),
        };
        let none = usage(&store, &other_region, &UsageFilter::default(), &prices, now).unwrap();
        assert_eq!(none.total.tasks, 0);
    }
}
