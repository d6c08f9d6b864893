//! The usage ledger: what a task used, as Fargate bills it, written in the
//! mutation that makes the task STOPPED.
//!
//! A task is charged per second with a one-minute minimum for the vCPU,
//! memory and ephemeral storage it asked for, from the moment its image pull
//! started (`pullStartedAt`, else `startedAt`) until it stopped
//! (`stoppedAt`, else `executionStoppedAt`), or until now while it runs. The
//! duration is rounded up to the whole second; a task that never started
//! pulling costs nothing.
//!
//! Ledger lines live under `/usage/<account>/<region>/<cluster>/<task id>`,
//! outside `/ecs/`: they are never deleted, and the task garbage collector
//! scans `/ecs/` on every pass.

use std::collections::BTreeMap;

use berth_model::AwsError;
use berth_store::Op;
use serde::{Deserialize, Serialize};

use crate::state::keys::Scope;
use crate::state::records::encode;
use crate::state::tasks::{TaskRecord, TaskStatus};

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

    pub(crate) fn is_fargate(&self) -> bool {
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
    let stopped = record.last_status() == TaskStatus::Stopped;
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

/// The ledger line to write in the mutation that makes `record` STOPPED
/// (pass the record as it will be stored: `lastStatus` STOPPED and its stop
/// times set). `None` when the task never started pulling (nothing to bill).
/// Writing it again for the same task overwrites the same key.
pub fn ledger_op(scope: &Scope, record: &TaskRecord) -> Result<Option<Op>, AwsError> {
    let Some(mut metered) = charge(record, berth_util::time::now_epoch()) else {
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
