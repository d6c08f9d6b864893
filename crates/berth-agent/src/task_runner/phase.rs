//! The runner's phases and the one function that moves a task between
//! them ([`transition`]).
//!
//! A task goes through the phases in their declaration order. Each pass
//! of the runner looks at the current phase's work, which comes to an
//! [`Event`]: done (go on to the next phase), not yet (look again on the
//! next pass), failed, or the task must stop. Failing or being asked to
//! stop in any phase before [`Phase::Stopping`] leads there, and from
//! there every task goes through [`Phase::Deprovisioning`] (where what it
//! acquired is released) to [`Phase::Stopped`]: there is no other way to
//! the end.

/// Where a task stands in the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// The task role's credentials are fetched and served at the task
    /// endpoint (tasks with a task role).
    Credentials,
    /// The images are pulled (the task is reported PENDING).
    Pulling,
    /// The task's Docker volumes are created.
    Volumes,
    /// The values of the containers' secrets are fetched.
    Secrets,
    /// The task's cgroup is made (tasks with a task-level cpu or memory).
    Cgroup,
    /// awsvpc tasks: the pause container holding the task's namespace,
    /// the interface plumbed into it from its VPC's router, and the
    /// security groups applied in it.
    Network,
    /// The containers are created and started in `dependsOn` order.
    Starting,
    /// Every container was created; the runner watches them.
    Running,
    /// The containers are stopped (the task is reported DEPROVISIONING
    /// while any runs).
    Stopping,
    /// The containers have stopped: what the task acquired is released.
    Deprovisioning,
    /// STOPPED is (being) reported; the runner ends once it got through.
    Stopped,
}

impl Phase {
    /// The first phase of every task (adopted ones too: each phase finds
    /// what is already there).
    pub const FIRST: Phase = Phase::Credentials;

    /// Whether the task is on its way down: nothing is acquired any more.
    pub fn stopping(self) -> bool {
        self >= Phase::Stopping
    }

    /// The phase that follows this one once its work is done.
    fn next(self) -> Phase {
        match self {
            Phase::Credentials => Phase::Pulling,
            Phase::Pulling => Phase::Volumes,
            Phase::Volumes => Phase::Secrets,
            Phase::Secrets => Phase::Cgroup,
            Phase::Cgroup => Phase::Network,
            Phase::Network => Phase::Starting,
            Phase::Starting | Phase::Running => Phase::Running,
            Phase::Stopping => Phase::Deprovisioning,
            Phase::Deprovisioning | Phase::Stopped => Phase::Stopped,
        }
    }
}

/// What one look at a phase came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The phase's work is done.
    Done,
    /// Not yet (an interface not attached, a dependency not met, a
    /// container that refused to stop): look again on the next pass.
    Wait,
    /// The phase's work cannot be done; the runner recorded why.
    Failed,
    /// The task must stop: the server wants it stopped, or the runner
    /// decided it (an essential container exited, a container failed).
    Stop,
}

/// The phase a task in `phase` moves to on `event`.
pub fn transition(phase: Phase, event: Event) -> Phase {
    match event {
        Event::Wait => phase,
        Event::Done => phase.next(),
        // Once stopping, the way down is only ever forward.
        Event::Failed | Event::Stop if phase.stopping() => phase,
        Event::Failed | Event::Stop => Phase::Stopping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Phase; 11] = [
        Phase::Credentials,
        Phase::Pulling,
        Phase::Volumes,
        Phase::Secrets,
        Phase::Cgroup,
        Phase::Network,
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Deprovisioning,
        Phase::Stopped,
    ];

    #[test]
    fn done_walks_the_phases_in_order() {
        let mut phase = Phase::FIRST;
        let mut seen = vec![phase];
        while phase != Phase::Running {
            phase = transition(phase, Event::Done);
            seen.push(phase);
        }
        assert_eq!(seen, ALL[..8]);
        // Running lasts until the task must stop.
        assert_eq!(transition(Phase::Running, Event::Done), Phase::Running);
        assert_eq!(
            transition(Phase::Stopping, Event::Done),
            Phase::Deprovisioning
        );
        assert_eq!(
            transition(Phase::Deprovisioning, Event::Done),
            Phase::Stopped
        );
        assert_eq!(transition(Phase::Stopped, Event::Done), Phase::Stopped);
    }

    #[test]
    fn waiting_stays() {
        for phase in ALL {
            assert_eq!(transition(phase, Event::Wait), phase);
        }
    }

    #[test]
    fn every_phase_before_stopping_fails_or_stops_into_stopping() {
        for phase in ALL.into_iter().filter(|p| !p.stopping()) {
            assert_eq!(
                transition(phase, Event::Failed),
                Phase::Stopping,
                "{phase:?}"
            );
            assert_eq!(transition(phase, Event::Stop), Phase::Stopping, "{phase:?}");
        }
    }

    #[test]
    fn the_way_down_never_turns_back() {
        for phase in [Phase::Stopping, Phase::Deprovisioning, Phase::Stopped] {
            for event in [Event::Failed, Event::Stop, Event::Wait] {
                assert_eq!(transition(phase, event), phase);
            }
            assert!(transition(phase, Event::Done) > phase || phase == Phase::Stopped);
        }
    }

    #[test]
    fn every_path_ends_in_stopped_through_deprovisioning() {
        // From any phase, any event sequence that ends with a stop and
        // then only progress reaches Stopped, passing Deprovisioning.
        for start in ALL {
            for first in [Event::Done, Event::Wait, Event::Failed, Event::Stop] {
                let mut phase = transition(start, first);
                phase = transition(phase, Event::Stop);
                let mut path = vec![phase];
                for _ in 0..4 {
                    phase = transition(phase, Event::Done);
                    path.push(phase);
                }
                assert_eq!(phase, Phase::Stopped, "{start:?} {first:?}");
                if start < Phase::Deprovisioning {
                    assert!(path.contains(&Phase::Deprovisioning), "{path:?}");
                }
            }
        }
    }
}
