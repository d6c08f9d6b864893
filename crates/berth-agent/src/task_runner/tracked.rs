//! What the runner knows about one container of its task, and how it is
//! reported.

use berth_model::agent_protocol::ContainerReport;
use berth_model::shapes::ecs::{ContainerDefinition, NetworkBinding};
use berth_runtime::{ContainerState, ContainerStatus, HealthState};

use super::{OOM_REASON, PENDING, RUNNING, STOPPED};

/// One container of the task.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    pub name: String,
    pub definition: ContainerDefinition,
    pub essential: bool,
    /// Set once created (or adopted).
    pub id: Option<String>,
    pub state: Option<ContainerState>,
    /// Why the container could not be pulled, created or started.
    pub failure: Option<String>,
    /// Killed by the OOM killer for the task's (cgroup's) memory, which
    /// Docker does not see as its own OOM.
    pub task_oom: bool,
}

impl Tracked {
    pub fn new(definition: &ContainerDefinition, adopted: Option<&ContainerState>) -> Self {
        Tracked {
            name: definition.name.clone().unwrap_or_default(),
            essential: definition.essential.unwrap_or(true),
            definition: definition.clone(),
            id: adopted.map(|c| c.id.clone()),
            state: adopted.cloned(),
            failure: None,
            task_oom: false,
        }
    }

    pub fn exited(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| s.status),
            Some(ContainerStatus::Exited | ContainerStatus::Dead)
        ) || (self.id.is_some() && self.state.is_none())
    }

    pub fn running(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| s.status),
            Some(ContainerStatus::Running | ContainerStatus::Restarting | ContainerStatus::Paused)
        )
    }

    pub fn started(&self) -> bool {
        self.running()
            || (self.exited() && self.state.as_ref().is_some_and(|s| s.started_at.is_some()))
    }

    pub fn healthy(&self) -> bool {
        self.state.as_ref().and_then(|s| s.health) == Some(HealthState::Healthy)
    }

    pub fn exit_code(&self) -> Option<i64> {
        self.state.as_ref().and_then(|s| s.exit_code)
    }

    pub fn last_status(&self) -> &'static str {
        if self.exited() || (self.failure.is_some() && !self.running()) {
            STOPPED
        } else if self.running() {
            RUNNING
        } else {
            PENDING
        }
    }

    pub fn report(&self) -> ContainerReport {
        let state = self.state.as_ref();
        let exit_code = state
            .filter(|_| self.exited())
            .and_then(|s| s.exit_code)
            .map(|c| c as i32);
        let reason = self.failure.clone().or_else(|| {
            state
                .filter(|s| s.oom_killed || (self.task_oom && self.exited()))
                .map(|_| OOM_REASON.to_string())
        });
        let health = match state.and_then(|s| s.health) {
            Some(HealthState::Healthy) => "HEALTHY",
            Some(HealthState::Unhealthy) => "UNHEALTHY",
            _ => "UNKNOWN",
        };
        let network_bindings = state
            .filter(|_| self.running())
            .map(|s| {
                s.port_bindings
                    .iter()
                    .map(|b| NetworkBinding {
                        bind_ip: Some(b.host_ip.clone()),
                        container_port: Some(i32::from(b.container_port)),
                        host_port: Some(i32::from(b.host_port)),
                        protocol: Some(b.protocol.as_str().to_string()),
                        ..NetworkBinding::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ContainerReport {
            name: self.name.clone(),
            last_status: self.last_status().to_string(),
            runtime_id: self.id.clone(),
            exit_code,
            reason,
            network_bindings,
            health_status: health.to_string(),
            image_digest: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_reasons() {
        let mut tracked = Tracked {
            name: "app".into(),
            definition: ContainerDefinition::default(),
            essential: true,
            id: Some("c1".into()),
            state: Some(ContainerState {
                status: ContainerStatus::Exited,
                exit_code: Some(137),
                ..ContainerState::default()
            }),
            failure: None,
            task_oom: false,
        };
        assert_eq!(tracked.report().reason, None);
        tracked.task_oom = true;
        assert_eq!(tracked.report().reason.as_deref(), Some(OOM_REASON));
        tracked.task_oom = false;
        if let Some(state) = tracked.state.as_mut() {
            state.oom_killed = true;
        }
        assert_eq!(
            tracked.report().reason.as_deref(),
            Some("OutOfMemoryError: Container killed due to memory usage")
        );
    }

    #[test]
    fn statuses() {
        let mut tracked = Tracked::new(&ContainerDefinition::default(), None);
        assert_eq!(tracked.last_status(), PENDING);
        assert!(tracked.essential);
        tracked.failure = Some("CannotStartContainerError: no".into());
        assert_eq!(tracked.last_status(), STOPPED);
        tracked.failure = None;
        tracked.id = Some("c1".into());
        tracked.state = Some(ContainerState {
            status: ContainerStatus::Running,
            ..ContainerState::default()
        });
        assert_eq!(tracked.last_status(), RUNNING);
        assert!(tracked.started() && !tracked.exited());
        // Gone from the runtime: exited.
        tracked.state = None;
        assert_eq!(tracked.last_status(), STOPPED);
    }
}
