//! The OSUpgrade's phase, counts, conditions and message, derived from the same
//! snapshot the planner decided on, so status never disagrees with the decisions.

use osroll_api::upgrade::NodeCounts;
use osroll_api::{Condition, ProgressPhase, UpgradePhase};

use super::{CanaryState, NodeObs, Outcome, Strategy};

/// Inputs of the status computation.
pub(super) struct Summary<'a> {
    pub nodes: &'a [&'a NodeObs],
    pub strategy: &'a Strategy,
    pub halted: bool,
    pub in_window: bool,
    pub canary: &'a CanaryState,
    pub failures: &'a [&'a NodeObs],
    pub disrupted: usize,
    pub max_unavailable: usize,
}

/// At most this many node names are listed in one message.
const MAX_NAMES: usize = 5;

/// `a, b, c and 4 more`.
pub(crate) fn name_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.into_iter().collect();
    let mut s = all
        .iter()
        .take(MAX_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > MAX_NAMES {
        s.push_str(&format!(" and {} more", all.len() - MAX_NAMES));
    }
    s
}

fn bucket(n: &NodeObs) -> Bucket {
    let Some(p) = &n.progress else {
        return Bucket::Pending;
    };
    match p.outcome() {
        Some(Outcome::Completed) => Bucket::Completed,
        Some(Outcome::Failed | Outcome::DrainFailed) => Bucket::Failed,
        Some(Outcome::RolledBack) => Bucket::RolledBack,
        Some(Outcome::Skipped) => Bucket::Skipped,
        None if p.reboot_approved || n.cordoned_by_us => Bucket::Updating,
        None => match p.phase {
            ProgressPhase::Pending => Bucket::Pending,
            ProgressPhase::Downloading | ProgressPhase::Writing | ProgressPhase::Verifying => {
                Bucket::Staging
            }
            ProgressPhase::Staged => Bucket::Staged,
            _ => Bucket::Updating,
        },
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Pending,
    Staging,
    Staged,
    Updating,
    Completed,
    Failed,
    RolledBack,
    Skipped,
}

impl Summary<'_> {
    /// Per-stage node counts.
    pub fn counts(&self) -> NodeCounts {
        let mut c = NodeCounts {
            total: self.nodes.len() as u32,
            ..Default::default()
        };
        for n in self.nodes {
            let slot = match bucket(n) {
                Bucket::Pending => &mut c.pending,
                Bucket::Staging => &mut c.staging,
                Bucket::Staged => &mut c.staged,
                Bucket::Updating => &mut c.updating,
                Bucket::Completed => &mut c.completed,
                Bucket::Failed => &mut c.failed,
                Bucket::RolledBack => &mut c.rolled_back,
                Bucket::Skipped => &mut c.skipped,
            };
            *slot += 1;
        }
        c
    }

    fn names(&self, b: Bucket) -> String {
        name_list(
            self.nodes
                .iter()
                .filter(|n| bucket(n) == b)
                .map(|n| n.name.as_str()),
        )
    }

    /// One line: `7/10 completed; 2 updating (a, b); 1 rolled back (c)`.
    fn tally(&self) -> String {
        let c = self.counts();
        let mut parts = vec![format!("{}/{} completed", c.completed, c.total)];
        for (n, label, b) in [
            (c.updating, "updating", Bucket::Updating),
            (c.failed, "failed", Bucket::Failed),
            (c.rolled_back, "rolled back", Bucket::RolledBack),
            (c.skipped, "skipped", Bucket::Skipped),
        ] {
            if n > 0 {
                parts.push(format!("{n} {label} ({})", self.names(b)));
            }
        }
        let waiting = c.pending + c.staging + c.staged;
        if waiting > 0 {
            parts.push(format!(
                "{waiting} waiting ({} staging, {} staged)",
                c.staging, c.staged
            ));
        }
        parts.join("; ")
    }

    /// Phase, reason, message, and the Ready/Progressing/Degraded conditions.
    pub fn describe(&self) -> (UpgradePhase, String, String, Vec<Condition>) {
        let tally = self.tally();
        let all_done = self
            .nodes
            .iter()
            .all(|n| n.progress.as_ref().and_then(|p| p.outcome()).is_some() && !n.cordoned_by_us);
        let started = self.nodes.iter().any(|n| n.progress.is_some());
        let claimed: Vec<&NodeObs> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| n.claimed_by.is_some() && n.progress.is_none())
            .collect();
        let (phase, reason, message) = if self.halted {
            let failed = name_list(self.failures.iter().map(|n| n.name.as_str()));
            (
                UpgradePhase::Failed,
                "MaxFailuresReached",
                format!(
                    "halted: {} node(s) failed ({failed}), maxFailures is {}; {tally}",
                    self.failures.len(),
                    self.strategy.max_failures
                ),
            )
        } else if self.nodes.is_empty() {
            (
                UpgradePhase::Accepted,
                "NoNodesSelected",
                "no managed node matches the node selector".to_string(),
            )
        } else if all_done {
            let reason = if self.failures.is_empty()
                && !self.nodes.iter().any(|n| bucket(n) == Bucket::Skipped)
            {
                "AllNodesUpgraded"
            } else {
                "CompletedWithFailures"
            };
            (UpgradePhase::Completed, reason, tally)
        } else if self.strategy.paused {
            (
                UpgradePhase::Paused,
                "Paused",
                format!("paused: nothing new starts; {tally}"),
            )
        } else if !started && claimed.len() == self.nodes.len() {
            let other = claimed[0].claimed_by.clone().unwrap_or_default();
            (
                UpgradePhase::Pending,
                "WaitingForOtherUpgrade",
                format!(
                    "waiting for OSUpgrade {other}, which is upgrading node(s) {}",
                    name_list(claimed.iter().map(|n| n.name.as_str()))
                ),
            )
        } else if !started {
            (UpgradePhase::Accepted, "Accepted", tally)
        } else {
            let (reason, why) = match self.canary {
                CanaryState::Running { passed, of } => {
                    ("CanaryInProgress", format!("canary {passed}/{of} done; "))
                }
                CanaryState::Soaking(until) => (
                    "CanarySoaking",
                    format!("canaries soaking until {}; ", until.to_rfc3339()),
                ),
                CanaryState::AwaitingApproval => (
                    "AwaitingCanaryApproval",
                    "canaries done; set spec.strategy.canary.approved to continue; ".to_string(),
                ),
                _ if !self.in_window => (
                    "OutsideMaintenanceWindow",
                    "outside every maintenance window, nothing new starts; ".to_string(),
                ),
                _ => ("RollingOut", String::new()),
            };
            let budget = format!(
                "{} of at most {} node(s) unavailable; ",
                self.disrupted, self.max_unavailable
            );
            (
                UpgradePhase::Progressing,
                reason,
                format!("{why}{budget}{tally}"),
            )
        };
        let skipped = self
            .nodes
            .iter()
            .filter(|n| bucket(n) == Bucket::Skipped)
            .count();
        let degraded = if !self.failures.is_empty() || skipped > 0 {
            let mut parts = Vec::new();
            for (b, label) in [
                (Bucket::Failed, "failed"),
                (Bucket::RolledBack, "rolled back"),
                (Bucket::Skipped, "skipped"),
            ] {
                let names = self.names(b);
                if !names.is_empty() {
                    parts.push(format!("{label}: {names}"));
                }
            }
            let reason = if self.failures.is_empty() {
                "NodesSkipped"
            } else {
                "NodesFailed"
            };
            Condition::new("Degraded", true, reason, parts.join("; "))
        } else {
            Condition::new("Degraded", false, "NoFailures", "")
        };
        let conditions = vec![
            Condition::new(
                "Ready",
                phase == UpgradePhase::Completed,
                reason,
                message.clone(),
            ),
            Condition::new(
                "Progressing",
                phase == UpgradePhase::Progressing,
                reason,
                message.clone(),
            ),
            degraded,
        ];
        (phase, reason.to_string(), message, conditions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_are_bounded() {
        let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        assert_eq!(
            name_list(names.iter().map(String::as_str)),
            "n0, n1, n2, n3, n4 and 3 more"
        );
        assert_eq!(name_list(["a"]), "a");
    }
}
