//! Task-level sizes (`cpu`, `memory` of a task definition) enforced with
//! one cgroup per task that all its containers (and the pause container)
//! are created under, as Fargate does: the task as a whole may use that
//! much, however its containers share it.
//!
//! The values are computed by pure functions ([`task_size`],
//! [`TaskSize::limits`]); [`TaskCgroup`] writes them for the host's cgroup
//! setup as Docker reports it: cgroup v1 or v2 with the `cgroupfs` driver
//! (directories under `/sys/fs/cgroup`), or the `systemd` driver (a
//! `berth-<task>.slice` whose limits systemd sets).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_model::agent_protocol::AssignedTask;
use berth_runtime::{Runtime, RuntimeError, RuntimeInfo};

/// The CFS period the quota is expressed in (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts.
const MIN_CPU_QUOTA_US: u64 = 1_000;
const MIB: u64 = 1024 * 1024;
/// Where cgroupfs is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory (below each hierarchy's root) that holds the task cgroups.
const PARENT_DIR: &str = "berth";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The runtime's cgroup setup (version, driver) could not be read.
    #[error("cannot read the runtime's cgroup setup: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Systemd(String),
}

fn io_error(path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A task's task-level size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskSize {
    /// CPU units (1024 = one vCPU).
    pub cpu_units: Option<u64>,
    pub memory_mib: Option<u64>,
}

/// What the task cgroup is limited to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU time per [`CPU_PERIOD_US`].
    pub cpu_quota_us: Option<u64>,
}

/// CPU units from `256`, `1024`, or the `1 vCPU` / `0.5 vcpu` form ECS
/// also accepts.
fn parse_cpu(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    if let Some(vcpu) = text.strip_suffix("vcpu") {
        let vcpu: f64 = vcpu.trim().parse().ok()?;
        return (vcpu > 0.0).then(|| (vcpu * 1024.0).round() as u64);
    }
    text.parse::<u64>().ok().filter(|c| *c > 0)
}

/// MiB from `512`, or the `1 GB` / `0.5gb` / `512 MB` forms ECS accepts.
fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    for (suffix, factor) in [("gib", 1024.0), ("gb", 1024.0), ("mib", 1.0), ("mb", 1.0)] {
        if let Some(amount) = text.strip_suffix(suffix) {
            let amount: f64 = amount.trim().parse().ok()?;
            return (amount > 0.0).then(|| (amount * factor).round() as u64);
        }
    }
    text.parse::<u64>().ok().filter(|m| *m > 0)
}

/// The task's size: its overrides first, then its definition.
pub fn task_size(task: &AssignedTask) -> TaskSize {
    let def = &task.task_definition;
    TaskSize {
        cpu_units: task
            .overrides
            .cpu
            .as_deref()
            .and_then(parse_cpu)
            .or_else(|| def.cpu.as_deref().and_then(parse_cpu)),
        memory_mib: task
            .overrides
            .memory
            .as_deref()
            .and_then(parse_memory)
            .or_else(|| def.memory.as_deref().and_then(parse_memory)),
    }
}

impl TaskSize {
    pub fn is_empty(&self) -> bool {
        self.cpu_units.is_none() && self.memory_mib.is_none()
    }

    /// `cpu/1024` CPUs' worth of each period, and the memory in bytes.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mib.map(|m| m.saturating_mul(MIB)),
            cpu_quota_us: self
                .cpu_units
                .map(|cpu| (cpu.saturating_mul(CPU_PERIOD_US) / 1024).max(MIN_CPU_QUOTA_US)),
        }
    }
}

/// How the host's cgroups are organised (from `docker info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1, `cgroupfs` driver: one hierarchy per controller.
    V1 { root: PathBuf },
    /// cgroup v2 (unified), `cgroupfs` driver.
    V2 { root: PathBuf },
    /// the `systemd` driver (either version): parents are slices.
    Systemd { unified: bool, root: PathBuf },
}

impl Layout {
    pub fn from_info(info: &RuntimeInfo) -> Layout {
        let root = PathBuf::from(CGROUP_ROOT);
        let unified = info.cgroup_version == "2";
        if info.cgroup_driver == "systemd" {
            Layout::Systemd { unified, root }
        } else if unified {
            Layout::V2 { root }
        } else {
            Layout::V1 { root }
        }
    }
}

/// A name usable as a cgroup directory and a systemd slice component
/// (`-` nests slices, so it is dropped).
fn cgroup_name(task_id: &str) -> String {
    task_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// One task's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    layout: Layout,
    name: String,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io_error(path, e))
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|e| io_error(path, e))
}

/// Removes a cgroup directory and the (empty) cgroups below it; cgroupfs
/// refuses to remove one with children, and its files go with it.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn systemctl(args: &[String]) -> Result<(), CgroupError> {
    let run = tokio::process::Command::new("systemctl")
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .map_err(|_| CgroupError::Systemd(format!("systemctl {} timed out", args.join(" "))))?
        .map_err(|e| CgroupError::Systemd(format!("cannot run systemctl: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(CgroupError::Systemd(format!(
            "systemctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl TaskCgroup {
    pub fn new(layout: Layout, task_id: &str) -> Self {
        TaskCgroup {
            layout,
            name: cgroup_name(task_id),
        }
    }

    fn slice(&self) -> String {
        format!("{PARENT_DIR}-{}.slice", self.name)
    }

    /// What containers get as `CgroupParent`.
    pub fn parent(&self) -> String {
        match &self.layout {
            Layout::V1 { .. } | Layout::V2 { .. } => format!("/{PARENT_DIR}/{}", self.name),
            Layout::Systemd { .. } => self.slice(),
        }
    }

    /// The directory holding the task's memory accounting.
    fn memory_dir(&self) -> PathBuf {
        match &self.layout {
            Layout::V1 { root } => root.join("memory").join(PARENT_DIR).join(&self.name),
            Layout::V2 { root } => root.join(PARENT_DIR).join(&self.name),
            Layout::Systemd { unified, root } => {
                let base = if *unified {
                    root.clone()
                } else {
                    root.join("memory")
                };
                base.join(format!("{PARENT_DIR}.slice")).join(self.slice())
            }
        }
    }

    /// Creates the cgroup (or updates it: creating is idempotent, so an
    /// agent that restarted re-applies the same limits) and sets `limits`.
    pub async fn create(&self, limits: Limits) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { root } => {
                // Docker creates the other controllers' directories itself.
                let memory = root.join("memory").join(PARENT_DIR).join(&self.name);
                let cpu = root.join("cpu").join(PARENT_DIR).join(&self.name);
                mkdir(&memory)?;
                mkdir(&cpu)?;
                if let Some(bytes) = limits.memory_bytes {
                    write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    // Memory plus swap equal to memory: no swap. Absent
                    // when the kernel does not account swap.
                    let memsw = memory.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes.to_string())?;
                    }
                }
                if let Some(quota) = limits.cpu_quota_us {
                    write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                Ok(())
            }
            Layout::V2 { root } => {
                let parent = root.join(PARENT_DIR);
                let dir = parent.join(&self.name);
                mkdir(&dir)?;
                // Controllers must be enabled on the way down for the
                // limit files to exist, and for Docker's children.
                for level in [root.as_path(), parent.as_path(), dir.as_path()] {
                    write(&level.join("cgroup.subtree_control"), "+cpu +memory")?;
                }
                if let Some(bytes) = limits.memory_bytes {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                if let Some(quota) = limits.cpu_quota_us {
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                Ok(())
            }
            Layout::Systemd { .. } => {
                let mut args = vec![
                    "set-property".to_string(),
                    "--runtime".to_string(),
                    self.slice(),
                ];
                if let Some(bytes) = limits.memory_bytes {
                    args.push(format!("MemoryMax={bytes}"));
                    args.push("MemorySwapMax=0".to_string());
                }
                if let Some(quota) = limits.cpu_quota_us {
                    // CPUQuota is a percentage of one CPU.
                    let percent = (quota * 100).div_ceil(CPU_PERIOD_US).max(1);
                    args.push(format!("CPUQuota={percent}%"));
                }
                // The drop-in first, so the slice starts limited.
                systemctl(&args).await?;
                systemctl(&["start".to_string(), self.slice()]).await
            }
        }
    }

    /// How many processes the OOM killer killed in the task's cgroup, when
    /// the kernel says (v2 `memory.events`, v1 `memory.oom_control`).
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory_dir();
        let text = std::fs::read_to_string(dir.join("memory.events"))
            .or_else(|_| std::fs::read_to_string(dir.join("memory.oom_control")))
            .ok()?;
        parse_oom_kills(&text)
    }

    /// Removes the cgroup; called once the task's containers are gone.
    /// Missing is fine.
    pub async fn remove(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { root } => {
                // Docker created the task's directory in every hierarchy.
                let entries = std::fs::read_dir(root).map_err(|e| io_error(root, e))?;
                let mut first_error = None;
                for entry in entries.flatten() {
                    let dir = entry.path().join(PARENT_DIR).join(&self.name);
                    if let Err(e) = remove_tree(&dir) {
                        first_error.get_or_insert(io_error(&dir, e));
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            Layout::V2 { root } => {
                let dir = root.join(PARENT_DIR).join(&self.name);
                remove_tree(&dir).map_err(|e| io_error(&dir, e))
            }
            Layout::Systemd { .. } => systemctl(&["stop".to_string(), self.slice()]).await,
        }
    }
}

/// The task cgroups of a host as the task runner uses them (a trait so
/// the runner can be tested without touching the host's cgroups).
#[async_trait::async_trait]
pub trait TaskCgroups: Send + Sync + 'static {
    /// What the containers of task `task_id` get as their cgroup parent.
    /// Fails with [`CgroupError::Runtime`] while the runtime's cgroup
    /// setup cannot be read (worth trying again).
    async fn parent(&self, task_id: &str) -> Result<String, CgroupError>;

    /// Creates the task's cgroup with `limits`, or updates them (creating
    /// is idempotent).
    async fn create(&self, task_id: &str, limits: Limits) -> Result<(), CgroupError>;

    /// How many processes the OOM killer killed in the task's cgroup, when
    /// the kernel says.
    async fn oom_kills(&self, task_id: &str) -> Option<u64>;

    /// Removes the task's cgroup (once its containers are gone); a missing
    /// one is fine.
    async fn remove(&self, task_id: &str) -> Result<(), CgroupError>;
}

/// [`TaskCgroups`] on this host, laid out as the runtime reports its
/// cgroup setup (read once).
pub struct HostCgroups {
    runtime: Arc<dyn Runtime>,
    layout: tokio::sync::OnceCell<Layout>,
}

impl HostCgroups {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        HostCgroups {
            runtime,
            layout: tokio::sync::OnceCell::new(),
        }
    }

    async fn cgroup(&self, task_id: &str) -> Result<TaskCgroup, CgroupError> {
        let layout = self
            .layout
            .get_or_try_init(|| async {
                let info = self.runtime.info().await?;
                Ok::<_, CgroupError>(Layout::from_info(&info))
            })
            .await?;
        Ok(TaskCgroup::new(layout.clone(), task_id))
    }
}

#[async_trait::async_trait]
impl TaskCgroups for HostCgroups {
    async fn parent(&self, task_id: &str) -> Result<String, CgroupError> {
        Ok(self.cgroup(task_id).await?.parent())
    }

    async fn create(&self, task_id: &str, limits: Limits) -> Result<(), CgroupError> {
        self.cgroup(task_id).await?.create(limits).await
    }

    async fn oom_kills(&self, task_id: &str) -> Option<u64> {
        self.cgroup(task_id).await.ok()?.oom_kills()
    }

    async fn remove(&self, task_id: &str) -> Result<(), CgroupError> {
        self.cgroup(task_id).await?.remove().await
    }
}

/// The `oom_kill` counter of a `memory.events` or `memory.oom_control` file.
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::{TaskDefinition, TaskOverride};

    fn task(
        cpu: Option<&str>,
        memory: Option<&str>,
        o_cpu: Option<&str>,
        o_mem: Option<&str>,
    ) -> AssignedTask {
        AssignedTask {
            task_definition: TaskDefinition {
                cpu: cpu.map(str::to_string),
                memory: memory.map(str::to_string),
                ..TaskDefinition::default()
            },
            overrides: TaskOverride {
                cpu: o_cpu.map(str::to_string),
                memory: o_mem.map(str::to_string),
                ..TaskOverride::default()
            },
            ..AssignedTask::default()
        }
    }

    #[test]
    fn sizes_come_from_overrides_then_the_definition() {
        assert_eq!(
            task_size(&task(Some("256"), Some("512"), None, None)),
            TaskSize {
                cpu_units: Some(256),
                memory_mib: Some(512)
            }
        );
        assert_eq!(
            task_size(&task(Some("256"), Some("512"), Some("1024"), Some("2048"))),
            TaskSize {
                cpu_units: Some(1024),
                memory_mib: Some(2048)
            }
        );
        assert_eq!(
            task_size(&task(Some("1 vCPU"), Some("2 GB"), None, None)),
            TaskSize {
                cpu_units: Some(1024),
                memory_mib: Some(2048)
            }
        );
        assert_eq!(
            task_size(&task(Some(".25 vcpu"), Some("0.5GB"), None, None)),
            TaskSize {
                cpu_units: Some(256),
                memory_mib: Some(512)
            }
        );
        assert!(task_size(&task(None, None, None, None)).is_empty());
        assert!(task_size(&task(Some("0"), Some("lots"), None, None)).is_empty());
    }

    #[test]
    fn limits() {
        let size = TaskSize {
            cpu_units: Some(256),
            memory_mib: Some(512),
        };
        assert_eq!(
            size.limits(),
            Limits {
                memory_bytes: Some(512 * 1024 * 1024),
                cpu_quota_us: Some(25_000)
            }
        );
        let big = TaskSize {
            cpu_units: Some(4096),
            memory_mib: None,
        };
        assert_eq!(big.limits().cpu_quota_us, Some(400_000));
        assert_eq!(big.limits().memory_bytes, None);
        let tiny = TaskSize {
            cpu_units: Some(2),
            memory_mib: None,
        };
        assert_eq!(tiny.limits().cpu_quota_us, Some(1_000));
    }

    #[test]
    fn parents_and_paths_per_layout() {
        let root = PathBuf::from("/sys/fs/cgroup");
        let v1 = TaskCgroup::new(Layout::V1 { root: root.clone() }, "abc-123");
        assert_eq!(v1.parent(), "/berth/abc123");
        assert_eq!(v1.memory_dir(), root.join("memory/berth/abc123"));
        let v2 = TaskCgroup::new(Layout::V2 { root: root.clone() }, "abc");
        assert_eq!(v2.parent(), "/berth/abc");
        assert_eq!(v2.memory_dir(), root.join("berth/abc"));
        let sd = TaskCgroup::new(
            Layout::Systemd {
                unified: true,
                root: root.clone(),
            },
            "abc",
        );
        assert_eq!(sd.parent(), "berth-abc.slice");
        assert_eq!(sd.memory_dir(), root.join("berth.slice/berth-abc.slice"));
        let info = RuntimeInfo {
            cgroup_version: "1".into(),
            cgroup_driver: "cgroupfs".into(),
            ..RuntimeInfo::default()
        };
        assert_eq!(Layout::from_info(&info), Layout::V1 { root });
    }

    #[test]
    fn oom_counters() {
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    /// With a fake cgroupfs in a temporary directory.
    #[tokio::test]
    async fn v1_and_v2_write_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let limits = TaskSize {
            cpu_units: Some(512),
            memory_mib: Some(256),
        }
        .limits();
        let v1 = TaskCgroup::new(
            Layout::V1 {
                root: dir.path().join("v1"),
            },
            "t1",
        );
        v1.create(limits).await.unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(
            read("v1/memory/berth/t1/memory.limit_in_bytes"),
            "268435456"
        );
        assert_eq!(read("v1/cpu/berth/t1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("v1/cpu/berth/t1/cpu.cfs_period_us"), "100000");
        // A real cgroupfs removes the files with the directory; here they
        // stay, so removal reports the non-empty directory.
        assert!(v1.remove().await.is_err());

        let v2 = TaskCgroup::new(
            Layout::V2 {
                root: dir.path().join("v2"),
            },
            "t2",
        );
        v2.create(limits).await.unwrap();
        assert_eq!(read("v2/berth/t2/memory.max"), "268435456");
        assert_eq!(read("v2/berth/t2/cpu.max"), "50000 100000");
        assert_eq!(read("v2/cgroup.subtree_control"), "+cpu +memory");
        std::fs::write(
            dir.path().join("v2/berth/t2/memory.events"),
            "oom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(v2.oom_kills(), Some(1));
    }
}
