//! The rollback half of the planner: which nodes go back, in what order, and where the
//! rollback stands.
//!
//! A node goes back only if this OSUpgrade moved it: its forward attempt Completed. It
//! is armed (its progress object is pointed at the version it ran before, marked as a
//! rollback) once released, so arming never disrupts; the agent re-stages the previous
//! version (an A/B node re-arms its old slot without downloading). Armed nodes then go
//! down exactly like an upgrade (cordon, drain, approve, release after the soak) under
//! the same maxUnavailable and windows, most recently upgraded first. A node with no way
//! back (see [`crate::marks::ROLLBACK_UNAVAILABLE`]) stays on the new version and counts
//! as a failed rollback once every other node is back.

use osroll_api::ProgressPhase;

use super::{Action, Draft, NodeObs, Outcome, ProgressObs, Room};

/// A forward attempt this OSUpgrade completed, not yet armed for going back.
pub fn awaits_arming(n: &NodeObs) -> bool {
    completed_forward(n).is_some_and(|p| !p.rollback_unavailable)
}

/// A node this OSUpgrade upgraded that the rollback found no way back for.
pub fn stranded(n: &NodeObs) -> bool {
    completed_forward(n).is_some_and(|p| p.rollback_unavailable)
}

fn completed_forward(n: &NodeObs) -> Option<&ProgressObs> {
    n.progress
        .as_ref()
        .filter(|p| p.rollback.is_none() && p.outcome() == Some(Outcome::Completed))
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
            stranded(n)
                || armed(n)
                    .and_then(ProgressObs::outcome)
                    .is_some_and(Outcome::is_failure)
        })
        .count();
    let in_flight = nodes.iter().any(|n| {
        n.cordoned_by_us
            || n.progress.as_ref().is_some_and(|p| {
                p.outcome().is_none()
                    && (p.reboot_approved
                        || matches!(p.phase, ProgressPhase::Applying | ProgressPhase::Rebooting))
            })
            || armed(n).is_some_and(|p| p.outcome().is_none())
            || awaits_arming(n)
    });
    if in_flight {
        Progress::Running { back, of }
    } else {
        Progress::Done { back, failed }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use osroll_api::health::FailurePolicy;
    use osroll_api::upgrade::UpgradeReason;
    use osroll_api::{ProgressPhase, UpgradePhase};

    use crate::planner::{
        Action, Budget, Failing, HealthObs, NodeObs, Observed, ProgressObs, RollbackMark, Strategy,
        plan,
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn node(name: &str, p: ProgressObs) -> NodeObs {
        NodeObs {
            name: name.into(),
            ready: true,
            progress: Some(p),
            ..Default::default()
        }
    }

    fn completed(at: i64) -> ProgressObs {
        ProgressObs {
            phase: ProgressPhase::Completed,
            completed_at: Some(t(at)),
            ..Default::default()
        }
    }

    fn armed(upgraded_at: i64, phase: ProgressPhase) -> ProgressObs {
        ProgressObs {
            phase,
            rollback: Some(RollbackMark {
                upgraded_at: Some(t(upgraded_at)),
            }),
            ..Default::default()
        }
    }

    fn obs(nodes: Vec<NodeObs>, health: HealthObs) -> Observed {
        Observed {
            strategy: Strategy {
                max_unavailable: Budget::Count(2),
                ..Default::default()
            },
            nodes,
            drain_poll: Duration::from_secs(2),
            health,
            ..Default::default()
        }
    }

    fn red() -> Option<Failing> {
        Some(Failing {
            check: "web".into(),
            observed:
                "self.status.readyReplicas == self.status.replicas is false for Deployment web"
                    .into(),
        })
    }

    #[test]
    fn a_failing_check_holds_and_is_named_in_the_status() {
        let nodes = vec![
            node("a", completed(0)),
            node(
                "b",
                ProgressObs {
                    phase: ProgressPhase::Staged,
                    ..Default::default()
                },
            ),
        ];
        let h = HealthObs {
            failing: red(),
            timeout: Duration::from_secs(300),
            ..Default::default()
        };
        let p = plan(&obs(nodes, h), t(100));
        assert!(
            !p.actions.iter().any(Action::starts_disruption),
            "{:?}",
            p.actions
        );
        assert_eq!(p.phase, UpgradePhase::Progressing);
        assert_eq!(p.reason, UpgradeReason::HealthCheckFailing);
        let healthy = p.conditions.iter().find(|c| c.type_ == "Healthy").unwrap();
        assert!(!healthy.is_true());
        assert!(
            healthy.message.contains("health check web fails"),
            "{}",
            healthy.message
        );
        assert!(
            healthy.message.contains("is false for Deployment web"),
            "{}",
            healthy.message
        );
        assert_eq!(p.failing_since, Some(t(100)));
    }

    #[test]
    fn past_its_timeout_the_rollout_fails_and_rolls_back_the_completed_nodes() {
        let nodes = vec![
            node("a", completed(0)),
            node("b", completed(10)),
            node(
                "c",
                ProgressObs {
                    phase: ProgressPhase::Staged,
                    ..Default::default()
                },
            ),
        ];
        let h = HealthObs {
            failing: red(),
            failing_since: Some(t(20)),
            timeout: Duration::from_secs(60),
            on_failure: FailurePolicy::Rollback,
            ..Default::default()
        };
        let p = plan(&obs(nodes.clone(), h.clone()), t(80));
        let armed: Vec<&str> = p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::ArmRollback { .. }))
            .map(Action::node)
            .collect();
        assert_eq!(armed, ["a", "b"], "c never upgraded");
        assert_eq!(p.phase, UpgradePhase::RollingBack);
        let halt = HealthObs {
            on_failure: FailurePolicy::Halt,
            ..h
        };
        let p = plan(&obs(nodes, halt), t(80));
        assert_eq!(p.phase, UpgradePhase::Failed);
        assert_eq!(p.reason, UpgradeReason::HealthCheckFailed);
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::ArmRollback { .. }))
        );
    }

    #[test]
    fn armed_nodes_go_down_latest_upgraded_first_within_max_unavailable() {
        let nodes = vec![
            node("old", armed(0, ProgressPhase::Staged)),
            node("newest", armed(30, ProgressPhase::Staged)),
            node("mid", armed(20, ProgressPhase::Staged)),
        ];
        let h = HealthObs {
            rolling_back: true,
            ..Default::default()
        };
        let p = plan(&obs(nodes, h), t(100));
        let cordoned: Vec<&str> = p
            .actions
            .iter()
            .filter(|a| a.starts_disruption())
            .map(Action::node)
            .collect();
        assert_eq!(cordoned, ["newest", "mid"]);
    }

    #[test]
    fn the_rollback_ends_when_every_armed_node_is_back_and_released() {
        let mut back = armed(0, ProgressPhase::Completed);
        back.completed_at = Some(t(50));
        let nodes = vec![
            node("a", back.clone()),
            node("b", back),
            node(
                "untouched",
                ProgressObs {
                    phase: ProgressPhase::Staged,
                    ..Default::default()
                },
            ),
        ];
        let h = HealthObs {
            rolling_back: true,
            ..Default::default()
        };
        let p = plan(&obs(nodes, h), t(100));
        assert_eq!(p.phase, UpgradePhase::RolledBack, "{}", p.message);
        assert_eq!(p.reason, UpgradeReason::AllNodesRolledBack);
        assert!(p.actions.iter().all(|a| !a.starts_disruption()));
    }

    #[test]
    fn a_node_with_no_way_back_stays_and_fails_the_rollback_once_the_others_are_back() {
        let mut stranded = completed(0);
        stranded.rollback_unavailable = true;
        stranded.reported = Some(crate::planner::Outcome::Completed);
        let h = HealthObs {
            rolling_back: true,
            ..Default::default()
        };
        let going = node("b", armed(10, ProgressPhase::Staged));
        let p = plan(
            &obs(vec![node("a", stranded.clone()), going], h.clone()),
            t(100),
        );
        assert!(
            !p.actions.iter().any(|a| a.node() == "a"),
            "nothing more for a: {:?}",
            p.actions
        );
        assert_eq!(p.phase, UpgradePhase::RollingBack, "b is still going back");
        let mut back = armed(10, ProgressPhase::Completed);
        back.completed_at = Some(t(50));
        back.reported = Some(crate::planner::Outcome::Completed);
        let p = plan(&obs(vec![node("a", stranded), node("b", back)], h), t(100));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.phase, UpgradePhase::Failed, "{}", p.message);
        assert_eq!(p.reason, UpgradeReason::RollbackFailed);
        assert!(
            p.message.contains("1 node(s) could not go back; 1 did"),
            "{}",
            p.message
        );
    }
}
