//! The planner's vocabulary: what it observes ([`Observed`], [`NodeObs`],
//! [`ProgressObs`]) and what it decides ([`Plan`], [`Action`]), with the small facts
//! derived from them that every rule shares (is a node disrupted, staging, startable).

use std::time::Duration;

use chrono::{DateTime, Utc};
use osroll_api::upgrade::{NodeCounts, UnverifiedReason, UpgradeReason};
use osroll_api::{Condition, ProgressPhase, UpgradePhase};

use super::Strategy;
use super::gate::{Failing, HealthObs, RollbackCause};
use crate::verify::Unverified;

/// One OSUpgrade's world as the controller sees it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Validated strategy.
    pub strategy: Strategy,
    /// Selected nodes (and nodes that carry one of our progress objects).
    pub nodes: Vec<NodeObs>,
    /// The node the controller itself runs on; it goes last.
    pub own_node: Option<String>,
    /// How long a completed node must be Ready before it is uncordoned.
    pub node_soak: Duration,
    /// How often to look again while a drain is in progress.
    pub drain_poll: Duration,
    /// The OSUpgrade asks for updates without reboot ([`crate::verify::live_update_requested`]):
    /// only then may a node that reports `rebootRequired: false` skip cordon and drain.
    pub live_updates: bool,
    /// The health gate's inputs and the rollback state ([`super::gate`]).
    pub health: HealthObs,
}

/// One node and its progress object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeObs {
    /// Node name.
    pub name: String,
    /// Node condition Ready is True.
    pub ready: bool,
    /// When Ready last changed.
    pub ready_since: Option<DateTime<Utc>>,
    /// `spec.unschedulable`, whoever set it.
    pub unschedulable: bool,
    /// The node carries our cordon annotation for this OSUpgrade.
    pub cordoned_by_us: bool,
    /// Labelled as a control-plane node.
    pub control_plane: bool,
    /// Earlier failed or rolled-back attempts on this node.
    pub past_failures: u32,
    /// Another OSUpgrade has an unfinished progress object on this node.
    pub claimed_by: Option<String>,
    /// Our progress object for this node, if created.
    pub progress: Option<ProgressObs>,
    /// Labelled with an A/B slot: that backend always reboots, never updates live.
    pub ab_slot: bool,
}

/// What matters about a progress object.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressObs {
    /// `status.phase`, `Pending` while the agent has not written one.
    pub phase: ProgressPhase,
    /// `spec.rebootApproved`.
    pub reboot_approved: bool,
    /// The Node records that this attempt's reboot was approved
    /// ([`crate::marks::REBOOT_APPROVAL`]), whatever `reboot_approved` shows yet.
    pub approval_recorded: bool,
    /// `status.rebootRequired`: `Some(false)` means a live update needs no drain.
    pub reboot_required: Option<bool>,
    /// Chosen as part of the canary batch.
    pub canary: bool,
    /// `status.completedAt`.
    pub completed_at: Option<DateTime<Utc>>,
    /// The controller gave up draining this node for the current attempt.
    pub drain_outcome: Option<DrainOutcome>,
    /// The outcome already reported for the current attempt.
    pub reported: Option<Outcome>,
    /// Says Completed, but the node disagrees: not counted Completed while this holds.
    pub unverified: Option<Unverified>,
    /// This attempt takes the node back to the version it ran before.
    pub rollback: Option<RollbackMark>,
    /// A rollback found no way back for this node (and said so once): it stays.
    pub rollback_unavailable: bool,
    /// `spec.external`: a reboot-coordination progress, which may go round again.
    pub external: bool,
}

/// A progress object armed to take its node back ([`super::rollback`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollbackMark {
    /// When the node completed the upgrade being undone (the order: latest first).
    pub upgraded_at: Option<DateTime<Utc>>,
}

impl Default for ProgressObs {
    fn default() -> Self {
        ProgressObs {
            phase: ProgressPhase::Pending,
            reboot_approved: false,
            approval_recorded: false,
            reboot_required: None,
            canary: false,
            completed_at: None,
            drain_outcome: None,
            reported: None,
            unverified: None,
            rollback: None,
            rollback_unavailable: false,
            external: false,
        }
    }
}

/// Why the controller stopped draining a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DrainOutcome {
    /// Timed out under policy `Fail`: counts as a failed node.
    Failed,
    /// Timed out under policy `Skip`: the node stays on its version, not a failure.
    Skipped,
}

impl DrainOutcome {
    /// CamelCase name, used in the drain-outcome annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainOutcome::Failed => "Failed",
            DrainOutcome::Skipped => "Skipped",
        }
    }

    /// Inverse of [`DrainOutcome::as_str`].
    pub fn parse(s: &str) -> Option<DrainOutcome> {
        [DrainOutcome::Failed, DrainOutcome::Skipped]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// How a node's attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// On the target version.
    Completed,
    /// The agent reported Failed.
    Failed,
    /// The node booted back into its previous slot.
    RolledBack,
    /// The drain timed out under policy `Fail`.
    DrainFailed,
    /// The drain timed out under policy `Skip`.
    Skipped,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 5] = [
        Outcome::Completed,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::DrainFailed,
        Outcome::Skipped,
    ];

    /// CamelCase name, used in annotations, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "Completed",
            Outcome::Failed => "Failed",
            Outcome::RolledBack => "RolledBack",
            Outcome::DrainFailed => "DrainFailed",
            Outcome::Skipped => "Skipped",
        }
    }

    /// Inverse of [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether it counts against `maxFailures`.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::RolledBack | Outcome::DrainFailed
        )
    }
}

impl ProgressObs {
    /// How this attempt ended, if it did.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.drain_outcome {
            Some(DrainOutcome::Failed) => return Some(Outcome::DrainFailed),
            Some(DrainOutcome::Skipped) => return Some(Outcome::Skipped),
            None => {}
        }
        match self.phase {
            ProgressPhase::Completed if self.unverified.is_some() => None,
            ProgressPhase::Completed => Some(Outcome::Completed),
            ProgressPhase::Failed => Some(Outcome::Failed),
            ProgressPhase::RolledBack => Some(Outcome::RolledBack),
            _ => None,
        }
    }

    /// Whether a standing `rebootApproved` has served its attempt and is withdrawn: the
    /// attempt failed, or an external round completed after its reboot. A new external
    /// round (the node's updater installed another update) must earn its own approval
    /// after a new drain, so the old one can never reboot the node twice; a new signal
    /// that already shows on the Node label (not verified for that alone) counts too,
    /// or the node would wait for a revocation that never comes.
    pub fn approval_spent(&self) -> bool {
        match self.outcome() {
            Some(o) => o != Outcome::Completed || self.external,
            None => {
                self.external
                    && self.phase == ProgressPhase::Completed
                    && self
                        .unverified
                        .as_ref()
                        .is_some_and(|u| u.reason == UnverifiedReason::RebootStillNeeded)
            }
        }
    }

    /// Still downloading, writing or verifying (or not begun) and not yet approved.
    pub fn is_staging(&self) -> bool {
        self.outcome().is_none()
            && !self.reboot_approved
            && matches!(
                self.phase,
                ProgressPhase::Pending
                    | ProgressPhase::Downloading
                    | ProgressPhase::Writing
                    | ProgressPhase::Verifying
            )
    }
}

impl NodeObs {
    /// Counted against maxUnavailable: cordoned (by anyone), NotReady, or approved and
    /// not finished.
    pub fn is_disrupted(&self) -> bool {
        self.unschedulable
            || !self.ready
            || self
                .progress
                .as_ref()
                .is_some_and(|p| p.reboot_approved && p.outcome().is_none())
    }

    pub(super) fn outcome(&self) -> Option<Outcome> {
        self.progress.as_ref().and_then(ProgressObs::outcome)
    }

    /// May start disruption now: staged, not approved, schedulable, Ready, unclaimed.
    pub(super) fn startable(&self) -> bool {
        self.claimed_by.is_none()
            && !self.unschedulable
            && self.ready
            && self.progress.as_ref().is_some_and(|p| {
                p.phase == ProgressPhase::Staged && !p.reboot_approved && p.outcome().is_none()
            })
    }
}

/// One thing the controller should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the node's progress object: the agent starts staging.
    CreateProgress {
        /// Node name.
        node: String,
    },
    /// Cordon the node (recording that we did) to begin its disruption. A `canary` node
    /// is marked as such on its progress object first.
    Cordon {
        /// Node name.
        node: String,
        /// Part of the canary batch.
        canary: bool,
        /// Takes the slot this node frees: only if its uncordon, earlier in the same
        /// plan, succeeded.
        after: Option<String>,
    },
    /// Evict the node's pods; once none is left, approve its reboot. On timeout the
    /// drain policy applies.
    Drain {
        /// Node name.
        node: String,
    },
    /// Approve an update that needs no reboot, without cordon or drain.
    ApproveLive {
        /// Node name.
        node: String,
        /// Part of the canary batch.
        canary: bool,
        /// As for [`Action::Cordon`].
        after: Option<String>,
    },
    /// Write onto the progress object the approval of a drained node's reboot that the
    /// Node records but the progress does not show (a crash between the two writes, or
    /// a cache that has not seen the second yet): never release or drain it again.
    ConfirmApproval {
        /// Node name.
        node: String,
    },
    /// Withdraw `rebootApproved` from a failed attempt so a retry waits for its turn.
    RevokeApproval {
        /// Node name.
        node: String,
    },
    /// Uncordon a node we cordoned.
    Uncordon {
        /// Node name.
        node: String,
        /// Why.
        why: UncordonReason,
    },
    /// Announce (one Event per new reason) that a node's Completed is not believed.
    FlagUnverified {
        /// Node name.
        node: String,
        /// Why.
        why: Unverified,
    },
    /// Point the node's progress back at the version it ran before (marked as a
    /// rollback, with a fresh attempt): the agent re-stages it, nothing is disrupted.
    ArmRollback {
        /// Node name.
        node: String,
        /// When it completed the upgrade being undone.
        upgraded_at: Option<DateTime<Utc>>,
    },
    /// Record (Event, metrics, annotation) how a node's attempt ended.
    Report {
        /// Node name.
        node: String,
        /// The outcome.
        outcome: Outcome,
    },
}

impl Action {
    /// The node the action is about.
    pub fn node(&self) -> &str {
        match self {
            Action::CreateProgress { node }
            | Action::Cordon { node, .. }
            | Action::Drain { node }
            | Action::ApproveLive { node, .. }
            | Action::ConfirmApproval { node }
            | Action::RevokeApproval { node }
            | Action::Uncordon { node, .. }
            | Action::FlagUnverified { node, .. }
            | Action::ArmRollback { node, .. }
            | Action::Report { node, .. } => node,
        }
    }

    /// Whether the action begins a node's disruption.
    pub fn starts_disruption(&self) -> bool {
        matches!(self, Action::Cordon { .. } | Action::ApproveLive { .. })
    }

    /// For a start that reuses a slot freed in the same plan: the node that frees it.
    pub fn after(&self) -> Option<&str> {
        match self {
            Action::Cordon { after, .. } | Action::ApproveLive { after, .. } => after.as_deref(),
            _ => None,
        }
    }
}

/// Why a node is uncordoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UncordonReason {
    /// Upgraded, Ready and soaked.
    Completed,
    /// Its attempt failed, rolled back or was skipped.
    Finished,
    /// The rollout was paused or halted before the node was approved.
    Aborted,
    /// Our cordon no longer matches anything in flight.
    Stale,
}

/// Where the canary batch stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanaryState {
    /// No canary configured.
    None,
    /// Canaries are being upgraded: `passed` of `of` done.
    Running {
        /// Completed and released canaries.
        passed: usize,
        /// Batch size.
        of: usize,
    },
    /// All canaries passed; soaking until the given time.
    Soaking(DateTime<Utc>),
    /// Soaked; waiting for `spec.strategy.canary.approved`.
    AwaitingApproval,
    /// The rest of the fleet may proceed.
    Passed,
}

/// The planner's decision for one OSUpgrade.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do now, in order.
    pub actions: Vec<Action>,
    /// The OSUpgrade's phase.
    pub phase: UpgradePhase,
    /// Machine-readable reason for the phase.
    pub reason: UpgradeReason,
    /// Human-readable summary.
    pub message: String,
    /// Nodes per stage.
    pub counts: NodeCounts,
    /// Ready, Progressing and Degraded (without times or generation).
    pub conditions: Vec<Condition>,
    /// Canary progress.
    pub canary: CanaryState,
    /// When to look again even if nothing changes.
    pub requeue_after: Option<Duration>,
    /// Nodes disrupted now (before this plan's actions) and the limit.
    pub disrupted: usize,
    /// The resolved maxUnavailable.
    pub max_unavailable: usize,
    /// The failing health check, for the status and the Event.
    pub failing: Option<Failing>,
    /// Since when it fails, for the status (so its timeout survives a restart).
    pub failing_since: Option<DateTime<Utc>>,
    /// The rollout goes back, and why (a rollback that begins now or goes on).
    pub rollback: Option<RollbackCause>,
}
