//! Metering reports: what tasks used (see the ledger, `state::ledger`,
//! for how a task is charged), priced per capacity provider.
//! EC2-launch-type tasks are metered the same way but cost nothing here:
//! their price is the instances'.
//!
//! Stopped tasks are deleted after `--task-retention`, so the transition to
//! STOPPED writes a durable usage line ([`ledger_op`]) in the same store
//! mutation; [`usage`] reports those lines plus the tasks not yet in the
//! ledger, metered up to now.

use std::collections::BTreeMap;
use std::path::Path;

use berth_model::AwsError;
use berth_store::ReadView;
use serde::{Deserialize, Serialize};

use crate::state::keys::Scope;
pub use crate::state::ledger::{
    billed_seconds, charge, ledger_key, ledger_op, ledger_prefix, Metered, DEFAULT_STORAGE_GB, EC2,
    FARGATE, FARGATE_SPOT, MINIMUM_BILLED_SECONDS,
};
use crate::state::records::decode;
use crate::state::tasks::{TaskRecord, TaskStatus};

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
    /// (<https://aws.amazon.com/fargate/pricing/>): $0.04048 per vCPU-hour,
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
            let running = record.last_status() != TaskStatus::Stopped;
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
/// an RFC 3339 time (`2024-05-01T12:00:00Z`, fractions and offsets allowed), a date
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
    // RFC 3339 / ISO 8601, or a date alone (midnight UTC).
    let t = berth_util::time::parse_iso8601(&v.replacen(' ', "T", 1))?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::records::encode;
    use berth_model::shapes::ecs::{EphemeralStorage, Tag, Task};
    use berth_store::Op;
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
        record.task.last_status = Some(TaskStatus::Stopped.into());
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
