//! The OSUpgrade's phase, counts, conditions and message, derived from the same
//! snapshot the planner decided on, so status never disagrees with the decisions.

use osroll_api::upgrade::{NodeCounts, UpgradeReason};
use osroll_api::{Condition, ProgressPhase, UpgradePhase};

use super::{CanaryState, NodeObs, Outcome, Strategy};
use crate::names::name_list;

/// Inputs of the status computation.
pub(super) struct Summary<'a> {
    pub(super) nodes: &'a [&'a NodeObs],
    pub(super) strategy: &'a Strategy,
    pub(super) halted: bool,
    pub(super) in_window: bool,
    pub(super) canary: &'a CanaryState,
    pub(super) failures: &'a [&'a NodeObs],
    pub(super) disrupted: usize,
    pub(super) max_unavailable: usize,
}

/// Where a selected node stands, as counted in `status.nodes` and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeStage {
    /// Not started yet.
    Pending,
    /// Downloading, writing or verifying.
    Staging,
    /// Staged, waiting for its turn.
    Staged,
    /// Cordoned, draining, approved, rebooting or applying.
    Updating,
    /// On the target version.
    Completed,
    /// Failed, or its drain timed out under policy `Fail`.
    Failed,
    /// Booted back into its previous slot.
    RolledBack,
    /// Left on its version: its drain timed out under policy `Skip`.
    Skipped,
}

impl NodeStage {
    /// Every stage, in upgrade order.
    pub const ALL: [NodeStage; 8] = [
        NodeStage::Pending,
        NodeStage::Staging,
        NodeStage::Staged,
        NodeStage::Updating,
        NodeStage::Completed,
        NodeStage::Failed,
        NodeStage::RolledBack,
        NodeStage::Skipped,
    ];

    /// CamelCase name (the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStage::Pending => "Pending",
            NodeStage::Staging => "Staging",
            NodeStage::Staged => "Staged",
            NodeStage::Updating => "Updating",
            NodeStage::Completed => "Completed",
            NodeStage::Failed => "Failed",
            NodeStage::RolledBack => "RolledBack",
            NodeStage::Skipped => "Skipped",
        }
    }

    /// This stage's count in `c`.
    pub fn count(self, c: &NodeCounts) -> u32 {
        match self {
            NodeStage::Pending => c.pending,
            NodeStage::Staging => c.staging,
            NodeStage::Staged => c.staged,
            NodeStage::Updating => c.updating,
            NodeStage::Completed => c.completed,
            NodeStage::Failed => c.failed,
            NodeStage::RolledBack => c.rolled_back,
            NodeStage::Skipped => c.skipped,
        }
    }

    /// The stage of node `n`.
    pub fn of(n: &NodeObs) -> NodeStage {
        let Some(p) = &n.progress else {
            return NodeStage::Pending;
        };
        match p.outcome() {
            Some(Outcome::Completed) => NodeStage::Completed,
            Some(Outcome::Failed | Outcome::DrainFailed) => NodeStage::Failed,
            Some(Outcome::RolledBack) => NodeStage::RolledBack,
            Some(Outcome::Skipped) => NodeStage::Skipped,
            None if p.reboot_approved || n.cordoned_by_us => NodeStage::Updating,
            None => match p.phase {
                ProgressPhase::Pending => NodeStage::Pending,
                ProgressPhase::Downloading | ProgressPhase::Writing | ProgressPhase::Verifying => {
                    NodeStage::Staging
                }
                ProgressPhase::Staged => NodeStage::Staged,
                _ => NodeStage::Updating,
            },
        }
    }
}

impl Summary<'_> {
    /// Per-stage node counts.
    pub(super) fn counts(&self) -> NodeCounts {
        let of = |stage| self.in_stage(stage).count() as u32;
        NodeCounts {
            total: self.nodes.len() as u32,
            pending: of(NodeStage::Pending),
            staging: of(NodeStage::Staging),
            staged: of(NodeStage::Staged),
            updating: of(NodeStage::Updating),
            completed: of(NodeStage::Completed),
            failed: of(NodeStage::Failed),
            rolled_back: of(NodeStage::RolledBack),
            skipped: of(NodeStage::Skipped),
        }
    }

    /// Phase, reason, message, and the Ready/Progressing/Degraded conditions. Ready is
    /// True only when every selected node runs the target: a rollout that completed with
    /// failed, rolled-back or skipped nodes stays Ready=False (reason
    /// `CompletedWithFailures`), so `kubectl wait --for=condition=Ready` does not return.
    pub(super) fn describe(&self) -> (UpgradePhase, UpgradeReason, String, Vec<Condition>) {
        let (phase, reason, message) = self.phase();
        let conditions = vec![
            Condition::new(
                "Ready",
                reason == UpgradeReason::AllNodesUpgraded,
                reason.as_str(),
                message.clone(),
            ),
            Condition::new(
                "Progressing",
                phase == UpgradePhase::Progressing,
                reason.as_str(),
                message.clone(),
            ),
            self.degraded(),
        ];
        (phase, reason, message, conditions)
    }

    fn in_stage(&self, stage: NodeStage) -> impl Iterator<Item = &NodeObs> {
        self.nodes
            .iter()
            .copied()
            .filter(move |n| NodeStage::of(n) == stage)
    }

    fn names(&self, stage: NodeStage) -> String {
        name_list(self.in_stage(stage).map(|n| n.name.as_str()))
    }

    /// One line: `7/10 completed; 2 updating (a, b); 1 rolled back (c)`.
    fn tally(&self) -> String {
        let c = self.counts();
        let mut parts = vec![format!("{}/{} completed", c.completed, c.total)];
        for (label, stage) in [
            ("updating", NodeStage::Updating),
            ("failed", NodeStage::Failed),
            ("rolled back", NodeStage::RolledBack),
            ("skipped", NodeStage::Skipped),
        ] {
            let n = stage.count(&c);
            if n > 0 {
                parts.push(format!("{n} {label} ({})", self.names(stage)));
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

    /// The first that applies: halted, nothing selected, all done, paused, waiting for
    /// another OSUpgrade, not started, rolling out.
    fn phase(&self) -> (UpgradePhase, UpgradeReason, String) {
        let tally = self.tally();
        let started = self.nodes.iter().any(|n| n.progress.is_some());
        if self.halted {
            let failed = name_list(self.failures.iter().map(|n| n.name.as_str()));
            let message = format!(
                "halted: {} node(s) failed ({failed}), maxFailures is {}; {tally}",
                self.failures.len(),
                self.strategy.max_failures
            );
            (
                UpgradePhase::Failed,
                UpgradeReason::MaxFailuresReached,
                message,
            )
        } else if self.nodes.is_empty() {
            let message = "no managed node matches the node selector".to_string();
            (
                UpgradePhase::Accepted,
                UpgradeReason::NoNodesSelected,
                message,
            )
        } else if self.all_done() {
            let clean = self.failures.is_empty() && self.in_stage(NodeStage::Skipped).count() == 0;
            let reason = if clean {
                UpgradeReason::AllNodesUpgraded
            } else {
                UpgradeReason::CompletedWithFailures
            };
            (UpgradePhase::Completed, reason, tally)
        } else if self.strategy.paused {
            let message = format!("paused: nothing new starts; {tally}");
            (UpgradePhase::Paused, UpgradeReason::Paused, message)
        } else if let Some(message) = self.waiting_for_other().filter(|_| !started) {
            (
                UpgradePhase::Pending,
                UpgradeReason::WaitingForOtherUpgrade,
                message,
            )
        } else if !started {
            (UpgradePhase::Accepted, UpgradeReason::Accepted, tally)
        } else {
            let (reason, why) = self.progress_reason();
            let budget = format!(
                "{} of at most {} node(s) unavailable; ",
                self.disrupted, self.max_unavailable
            );
            let message = format!("{why}{budget}{tally}");
            (UpgradePhase::Progressing, reason, message)
        }
    }

    /// Every node's attempt ended and none is still cordoned by us.
    fn all_done(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.progress.as_ref().and_then(|p| p.outcome()).is_some() && !n.cordoned_by_us)
    }

    /// When every selected node is held by another OSUpgrade: which and where.
    fn waiting_for_other(&self) -> Option<String> {
        let claimed: Vec<&NodeObs> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| n.claimed_by.is_some() && n.progress.is_none())
            .collect();
        if claimed.len() != self.nodes.len() {
            return None;
        }
        let other = claimed.first()?.claimed_by.clone().unwrap_or_default();
        Some(format!(
            "waiting for OSUpgrade {other}, which is upgrading node(s) {}",
            name_list(claimed.iter().map(|n| n.name.as_str()))
        ))
    }

    /// What paces a rollout in progress, as a reason and the start of its message.
    fn progress_reason(&self) -> (UpgradeReason, String) {
        match self.canary {
            CanaryState::Running { passed, of } => (
                UpgradeReason::CanaryInProgress,
                format!("canary {passed}/{of} done; "),
            ),
            CanaryState::Soaking(soaked_at) => (
                UpgradeReason::CanarySoaking,
                format!("canaries soaking until {}; ", soaked_at.to_rfc3339()),
            ),
            CanaryState::AwaitingApproval => (
                UpgradeReason::AwaitingCanaryApproval,
                "canaries done; set spec.strategy.canary.approved to continue; ".to_string(),
            ),
            _ if !self.in_window => (
                UpgradeReason::OutsideMaintenanceWindow,
                "outside every maintenance window, nothing new starts; ".to_string(),
            ),
            _ => (UpgradeReason::RollingOut, String::new()),
        }
    }

    /// Nodes whose Completed is not believed, each with its reason and detail.
    fn unverified(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let why = n.progress.as_ref()?.unverified.as_ref()?;
                Some(format!("{} ({}: {})", n.name, why.reason, why.detail))
            })
            .collect()
    }

    /// Degraded: which nodes failed, rolled back or were skipped, and whose completion
    /// could not be verified.
    fn degraded(&self) -> Condition {
        let skipped = self.in_stage(NodeStage::Skipped).count();
        let unverified = self.unverified();
        if self.failures.is_empty() && skipped == 0 && unverified.is_empty() {
            return Condition::new("Degraded", false, "NoFailures", "");
        }
        let mut parts: Vec<String> = [
            (NodeStage::Failed, "failed"),
            (NodeStage::RolledBack, "rolled back"),
            (NodeStage::Skipped, "skipped"),
        ]
        .into_iter()
        .map(|(stage, label)| (self.names(stage), label))
        .filter(|(names, _)| !names.is_empty())
        .map(|(names, label)| format!("{label}: {names}"))
        .collect();
        if !unverified.is_empty() {
            parts.push(format!("completion unverified: {}", unverified.join(", ")));
            let reason = UpgradeReason::CompletionUnverified.as_str();
            return Condition::new("Degraded", true, reason, parts.join("; "));
        }
        let reason = if self.failures.is_empty() {
            "NodesSkipped"
        } else {
            "NodesFailed"
        };
        Condition::new("Degraded", true, reason, parts.join("; "))
    }
}
