//! The rollout planner: one pure function, [`plan`], that alone decides which node may be
//! staged, disrupted, approved for reboot or released.
//!
//! Its input, [`Observed`], is a snapshot of one OSUpgrade's world built from API objects
//! (nodes, their progress objects, the strategy); its output, [`Plan`], is a list of
//! [`Action`]s plus the OSUpgrade's phase, node counts and conditions. Nothing here does
//! I/O or reads a clock, so every rule (maxUnavailable, canary, windows, pause, failure
//! budget, ordering) is tested directly, including by property tests over random
//! clusters and event orders (`tests/planner_props.rs`).
//!
//! Everything the planner needs to remember lives in the cluster: who cordoned a node
//! (node annotation), which nodes are canaries and what outcome was already reported
//! (progress annotations). A restarted controller therefore makes the same decisions.

mod order;
mod status;
pub mod strategy;
pub mod window;

use std::time::Duration;

use chrono::{DateTime, Utc};
use osroll_api::upgrade::NodeCounts;
use osroll_api::{Condition, ProgressPhase, UpgradePhase};

pub use order::order;
pub(crate) use status::name_list;
pub use strategy::{Budget, Canary, DrainPolicy, SpecError, Strategy};
pub use window::Window;

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
}

/// What matters about a progress object.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressObs {
    /// `status.phase`, `Pending` while the agent has not written one.
    pub phase: ProgressPhase,
    /// `spec.rebootApproved`.
    pub reboot_approved: bool,
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
}

impl Default for ProgressObs {
    fn default() -> Self {
        ProgressObs {
            phase: ProgressPhase::Pending,
            reboot_approved: false,
            reboot_required: None,
            canary: false,
            completed_at: None,
            drain_outcome: None,
            reported: None,
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
    /// CamelCase name, used in annotations and Events.
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
        [
            Outcome::Completed,
            Outcome::Failed,
            Outcome::RolledBack,
            Outcome::DrainFailed,
            Outcome::Skipped,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
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
            ProgressPhase::Completed => Some(Outcome::Completed),
            ProgressPhase::Failed => Some(Outcome::Failed),
            ProgressPhase::RolledBack => Some(Outcome::RolledBack),
            _ => None,
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

    fn outcome(&self) -> Option<Outcome> {
        self.progress.as_ref().and_then(ProgressObs::outcome)
    }

    /// May start disruption now: staged, not approved, schedulable, Ready, unclaimed.
    fn startable(&self) -> bool {
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
            | Action::RevokeApproval { node }
            | Action::Uncordon { node, .. }
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
    pub reason: String,
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
}

fn since(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO)
}

fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Decide what to do for one OSUpgrade at time `now`.
pub fn plan(obs: &Observed, now: DateTime<Utc>) -> Plan {
    let s = &obs.strategy;
    let nodes = order(&obs.nodes, obs.own_node.as_deref());
    let total = nodes.len();
    let failures: Vec<&NodeObs> = nodes
        .iter()
        .copied()
        .filter(|n| n.outcome().is_some_and(Outcome::is_failure))
        .collect();
    let halted = failures.len() >= s.failure_limit();
    let stop_new = halted || s.paused;
    let in_window = window::any_open(&s.windows, now);
    let mut actions = Vec::new();
    let mut requeue: Option<Duration> = None;

    // 1. Work on nodes already in flight: report outcomes, release, continue drains.
    for n in &nodes {
        let Some(p) = &n.progress else {
            if n.cordoned_by_us {
                actions.push(Action::Uncordon {
                    node: n.name.clone(),
                    why: UncordonReason::Stale,
                });
            }
            continue;
        };
        let outcome = p.outcome();
        if let Some(o) = outcome
            && p.reported != Some(o)
        {
            actions.push(Action::Report {
                node: n.name.clone(),
                outcome: o,
            });
        }
        if p.reboot_approved && outcome.is_some_and(|o| o != Outcome::Completed) {
            actions.push(Action::RevokeApproval {
                node: n.name.clone(),
            });
        }
        if !n.cordoned_by_us {
            continue;
        }
        match outcome {
            Some(Outcome::Completed) => {
                if n.ready {
                    let base = [n.ready_since, p.completed_at]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(now);
                    let until =
                        base + chrono::Duration::from_std(obs.node_soak).unwrap_or_default();
                    if now >= until {
                        actions.push(Action::Uncordon {
                            node: n.name.clone(),
                            why: UncordonReason::Completed,
                        });
                    } else {
                        requeue = earliest(requeue, since(now, until));
                    }
                }
            }
            Some(_) => actions.push(Action::Uncordon {
                node: n.name.clone(),
                why: UncordonReason::Finished,
            }),
            None if p.reboot_approved => {}
            None if p.phase == ProgressPhase::Staged && !stop_new => {
                actions.push(Action::Drain {
                    node: n.name.clone(),
                });
                requeue = earliest(requeue, obs.drain_poll);
            }
            None if p.phase == ProgressPhase::Staged => {
                actions.push(Action::Uncordon {
                    node: n.name.clone(),
                    why: UncordonReason::Aborted,
                });
            }
            None => actions.push(Action::Uncordon {
                node: n.name.clone(),
                why: UncordonReason::Stale,
            }),
        }
    }

    // 2. Canary gate.
    let canary = canary_state(s.canary.as_ref(), &nodes, now);
    if let CanaryState::Soaking(until) = canary {
        requeue = earliest(requeue, since(now, until));
    }

    // 3. Start disruption on staged nodes, within maxUnavailable.
    let max_unavailable = s.max_unavailable.resolve(total);
    let disrupted = nodes.iter().filter(|n| n.is_disrupted()).count();
    let mut busy = disrupted;
    let pending_work = nodes
        .iter()
        .any(|n| n.outcome().is_none() && n.claimed_by.is_none());
    if !stop_new && in_window {
        let (only_canaries, mut canary_slots) = match (&canary, s.canary.as_ref()) {
            (CanaryState::Running { .. }, Some(c)) => {
                let target = (c.count as usize).min(total);
                let active = nodes
                    .iter()
                    .filter(|n| {
                        n.progress.as_ref().is_some_and(|p| p.canary)
                            && !n.outcome().is_some_and(|o| o != Outcome::Completed)
                    })
                    .count();
                (true, target.saturating_sub(active))
            }
            (CanaryState::Soaking(_) | CanaryState::AwaitingApproval, _) => (true, 0),
            _ => (false, 0),
        };
        // Nodes released above stop counting once their uncordon succeeds: a start may
        // take such a slot, on the condition that that release went through. Only when
        // within budget: over it (disruption from elsewhere), one release frees nothing.
        let freed: Vec<String> = if disrupted <= max_unavailable {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Uncordon { node, .. } => nodes.iter().find(|n| n.name == *node),
                    _ => None,
                })
                .filter(|n| {
                    n.ready
                        && !n
                            .progress
                            .as_ref()
                            .is_some_and(|p| p.reboot_approved && p.outcome().is_none())
                })
                .map(|n| n.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let mut freed = freed.into_iter();
        for n in &nodes {
            if !n.startable() {
                continue;
            }
            let p = n.progress.as_ref().expect("startable nodes have progress");
            let new_canary = only_canaries && !p.canary;
            if new_canary && canary_slots == 0 {
                continue;
            }
            let after = if busy < max_unavailable {
                None
            } else {
                match freed.next() {
                    Some(f) => Some(f),
                    None => break,
                }
            };
            if new_canary {
                canary_slots -= 1;
            }
            let canary_node = p.canary || new_canary;
            let node = n.name.clone();
            if p.reboot_required == Some(false) {
                actions.push(Action::ApproveLive {
                    node,
                    canary: canary_node,
                    after: after.clone(),
                });
            } else {
                actions.push(Action::Cordon {
                    node: node.clone(),
                    canary: canary_node,
                    after: after.clone(),
                });
                actions.push(Action::Drain { node });
                requeue = earliest(requeue, obs.drain_poll);
            }
            if after.is_none() {
                busy += 1;
            }
        }
    } else if !in_window && !stop_new && pending_work {
        requeue = earliest(
            requeue,
            Duration::from_secs(60 - now.timestamp().rem_euclid(60) as u64),
        );
    }

    // 4. Let more nodes stage, within maxStaging.
    if !stop_new {
        let limit = s.max_staging.map_or(usize::MAX, |b| b.resolve(total));
        let mut staging = nodes
            .iter()
            .filter(|n| n.progress.as_ref().is_some_and(ProgressObs::is_staging))
            .count();
        for n in &nodes {
            if staging >= limit {
                break;
            }
            if n.progress.is_none() && n.claimed_by.is_none() {
                actions.push(Action::CreateProgress {
                    node: n.name.clone(),
                });
                staging += 1;
            }
        }
    }

    let summary = status::Summary {
        nodes: &nodes,
        strategy: s,
        halted,
        in_window,
        canary: &canary,
        failures: &failures,
        disrupted,
        max_unavailable,
    };
    let (phase, reason, message, conditions) = summary.describe();
    Plan {
        actions,
        phase,
        reason,
        message,
        counts: summary.counts(),
        conditions,
        canary,
        requeue_after: requeue,
        disrupted,
        max_unavailable,
    }
}

fn canary_state(c: Option<&Canary>, nodes: &[&NodeObs], now: DateTime<Utc>) -> CanaryState {
    let Some(c) = c else { return CanaryState::None };
    let target = (c.count as usize).min(nodes.len());
    let passed: Vec<&ProgressObs> = nodes
        .iter()
        .filter(|n| !n.cordoned_by_us)
        .filter_map(|n| n.progress.as_ref())
        .filter(|p| p.canary && p.outcome() == Some(Outcome::Completed))
        .collect();
    if passed.len() < target {
        return CanaryState::Running {
            passed: passed.len(),
            of: target,
        };
    }
    let done_at = passed.iter().filter_map(|p| p.completed_at).max();
    if let Some(done_at) = done_at {
        let until = done_at + chrono::Duration::from_std(c.soak).unwrap_or_default();
        if now < until {
            return CanaryState::Soaking(until);
        }
    }
    if c.require_approval && !c.approved {
        return CanaryState::AwaitingApproval;
    }
    CanaryState::Passed
}

#[cfg(test)]
mod tests;
