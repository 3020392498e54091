//! The rollback half of the planner: which nodes go back, in what order, and where the
//! rollback stands.
//!
//! A node goes back only if this OSUpgrade moved it: its forward attempt Completed. It
//! is armed (its progress object is pointed at the version it ran before, marked as a
//! rollback) once released, so arming never disrupts; the agent re-stages the previous
//! version (an A/B node re-arms its old slot without downloading). Armed nodes then go
//! down exactly like an upgrade (cordon, drain, approve, release after the soak) under
//! the same maxUnavailable and windows, most recently upgraded first.

use super::{Action, Draft, NodeObs, Outcome, ProgressObs, Room};

/// A forward attempt this OSUpgrade completed, not yet armed for going back.
pub fn awaits_arming(n: &NodeObs) -> bool {
    n.progress
        .as_ref()
        .is_some_and(|p| p.rollback.is_none() && p.outcome() == Some(Outcome::Completed))
}

/// A progress pointed back at the previous version.
fn armed(n: &NodeObs) -> Option<&ProgressObs> {
    n.progress.as_ref().filter(|p| p.rollback.is_some())
}

/// Arm every completed node once we no longer hold it cordoned.
pub(super) fn arm(d: &mut Draft, nodes: &[&NodeObs]) {
    for n in nodes
        .iter()
        .filter(|n| awaits_arming(n) && !n.cordoned_by_us)
    {
        let upgraded_at = n.progress.as_ref().and_then(|p| p.completed_at);
        d.push(Action::ArmRollback {
            node: n.name.clone(),
            upgraded_at,
        });
    }
}

/// Start armed, staged nodes while there is room, most recently upgraded first.
pub(super) fn start(
    d: &mut Draft,
    nodes: &[&NodeObs],
    room: Room,
    drain_poll: std::time::Duration,
) {
    let mut ready: Vec<&&NodeObs> = nodes
        .iter()
        .filter(|n| n.startable() && armed(n).is_some())
        .collect();
    ready.sort_by_key(|n| {
        std::cmp::Reverse(
            armed(n)
                .and_then(|p| p.rollback.as_ref())
                .and_then(|r| r.upgraded_at),
        )
    });
    let room_left = room.max_unavailable.saturating_sub(room.disrupted);
    for n in ready.into_iter().take(room_left) {
        d.push(Action::Cordon {
            node: n.name.clone(),
            canary: false,
            after: None,
        });
        d.push(Action::Drain {
            node: n.name.clone(),
        });
        d.look_again_in(drain_poll);
    }
}

/// Where the rollback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nodes are still going back (or in flight from the upgrade).
    Running {
        /// Armed nodes back on their previous version and released.
        back: usize,
        /// Nodes that go back in all (armed, or completed and waiting to be armed).
        of: usize,
    },
    /// Every node that went back finished; `failed` of them did not make it.
    Done {
        /// Nodes back on their previous version.
        back: usize,
        /// Rollback attempts that failed.
        failed: usize,
    },
}

/// Count the rollback's nodes.
pub fn progress(nodes: &[&NodeObs]) -> Progress {
    let of = nodes
        .iter()
        .filter(|n| armed(n).is_some() || awaits_arming(n))
        .count();
    let back = nodes
        .iter()
        .filter(|n| !n.cordoned_by_us)
        .filter(|n| armed(n).is_some_and(|p| p.outcome() == Some(Outcome::Completed)))
        .count();
    let failed = nodes
        .iter()
        .filter(|n| {
            armed(n)
                .and_then(ProgressObs::outcome)
                .is_some_and(Outcome::is_failure)
        })
        .count();
    let in_flight = nodes.iter().any(|n| {
        n.cordoned_by_us
            || n.progress
                .as_ref()
                .is_some_and(|p| p.reboot_approved && p.outcome().is_none())
            || armed(n).is_some_and(|p| p.outcome().is_none())
            || awaits_arming(n)
    });
    if in_flight {
        Progress::Running { back, of }
    } else {
        Progress::Done { back, failed }
    }
}
