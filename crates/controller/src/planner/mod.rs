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

pub mod gate;
mod model;
mod order;
pub mod rollback;
mod status;
pub mod strategy;
pub mod window;

use std::time::Duration;

use chrono::{DateTime, Utc};
use osroll_api::ProgressPhase;

pub use gate::{Failing, HealthObs, RollbackCause};
pub use model::{
    Action, CanaryState, DrainOutcome, NodeObs, Observed, Outcome, Plan, ProgressObs, RollbackMark,
    UncordonReason,
};
pub use order::order;
pub use status::NodeStage;
pub use strategy::{Budget, Canary, DrainPolicy, SpecError, Strategy};
pub use window::Window;

/// Decide what to do for one OSUpgrade at time `now`.
pub fn plan(obs: &Observed, now: DateTime<Utc>) -> Plan {
    let s = &obs.strategy;
    let nodes = order(&obs.nodes, obs.own_node.as_deref());
    let failures: Vec<&NodeObs> = nodes
        .iter()
        .copied()
        .filter(|n| n.outcome().is_some_and(Outcome::is_failure))
        .collect();
    let budget_spent = failures.len() >= s.failure_limit();
    let g = gate::assess(&obs.health, &nodes, budget_spent, now);
    let halted = budget_spent || g.timed_out;
    let stop = Stops {
        forward: halted || s.paused || g.holds(),
        back: s.paused,
    };
    let in_window = window::any_open(&s.windows, now);
    let mut draft = Draft::default();

    // 1. Work on nodes already in flight: report outcomes, release, continue drains.
    for n in &nodes {
        settle(&mut draft, n, obs, stop.of(n), now);
    }

    // 2. Canary gate.
    let canary = canary_state(s.canary.as_ref(), &nodes, now);
    if let CanaryState::Soaking(soaked_at) = canary {
        draft.look_again_in(until(now, soaked_at));
    }

    // 3. Start disruption on staged nodes, within maxUnavailable: going back once a
    //    rollback runs, else forward while the health gate lets new work start.
    let room = Room {
        disrupted: nodes.iter().filter(|n| n.is_disrupted()).count(),
        max_unavailable: s.max_unavailable.resolve(nodes.len()),
    };
    let soaking = g
        .soaking_until
        .inspect(|t| draft.look_again_in(until(now, *t)));
    if g.rollback.is_some() {
        rollback::arm(&mut draft, &nodes);
        if !stop.back && in_window {
            rollback::start(&mut draft, &nodes, room, obs.drain_poll);
        }
    } else if !stop.forward && in_window && soaking.is_none() {
        start_disruption(
            &mut draft,
            &nodes,
            s,
            &canary,
            room,
            obs.drain_poll,
            obs.live_updates,
        );
    }
    let waiting = if g.rollback.is_some() {
        !stop.back
    } else {
        !stop.forward
    };
    if !in_window && waiting && has_pending_work(&nodes) {
        // Outside every window: windows open on whole minutes.
        draft.look_again_in(until_next_minute(now));
    }
    if !obs.health.poll.is_zero() {
        draft.look_again_in(obs.health.poll);
    }

    // 4. Let more nodes stage, within maxStaging.
    if !stop.forward {
        let_stage(&mut draft, &nodes, s);
    }

    // 5. Phase, counts and conditions from the same snapshot.
    let summary = status::Summary {
        nodes: &nodes,
        strategy: s,
        halted,
        in_window,
        canary: &canary,
        failures: &failures,
        disrupted: room.disrupted,
        max_unavailable: room.max_unavailable,
    };
    conclude(&summary, &g, draft)
}

/// What may not start anything new: forward attempts, and attempts going back.
struct Stops {
    forward: bool,
    back: bool,
}

impl Stops {
    /// The stop that applies to `n`'s attempt.
    fn of(&self, n: &NodeObs) -> bool {
        match n.progress.as_ref().and_then(|p| p.rollback.as_ref()) {
            Some(_) => self.back,
            None => self.forward,
        }
    }
}

/// The plan: the drafted actions with the phase, counts and conditions of `summary`,
/// as the health gate and a rollback amend them.
fn conclude(summary: &status::Summary<'_>, g: &gate::GateView, draft: Draft) -> Plan {
    let (phase, reason, message, conditions) = gate::overlay(g, summary.nodes, summary.describe());
    Plan {
        actions: draft.actions,
        phase,
        reason,
        message,
        counts: summary.counts(),
        conditions,
        canary: summary.canary.clone(),
        requeue_after: draft.requeue,
        disrupted: summary.disrupted,
        max_unavailable: summary.max_unavailable,
        failing: g.failing.clone(),
        failing_since: g.failing_since,
        rollback: g.rollback,
    }
}

/// The actions decided so far and when to look again.
#[derive(Default)]
struct Draft {
    actions: Vec<Action>,
    requeue: Option<Duration>,
}

impl Draft {
    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// Look again after `d` at the latest.
    fn look_again_in(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

/// Disruption now (before this plan's actions) and the limit on it.
#[derive(Clone, Copy)]
struct Room {
    disrupted: usize,
    max_unavailable: usize,
}

/// How long from `now` until `t`; zero once `t` has passed.
fn until(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO)
}

fn until_next_minute(now: DateTime<Utc>) -> Duration {
    Duration::from_secs(60 - now.timestamp().rem_euclid(60) as u64)
}

fn uncordon(n: &NodeObs, why: UncordonReason) -> Action {
    Action::Uncordon {
        node: n.name.clone(),
        why,
    }
}

/// A node already in flight: report how its attempt ended, withdraw a failed attempt's
/// approval, and release (or go on draining) a node we cordoned.
fn settle(d: &mut Draft, n: &NodeObs, obs: &Observed, stop_new: bool, now: DateTime<Utc>) {
    let Some(p) = &n.progress else {
        if n.cordoned_by_us {
            d.push(uncordon(n, UncordonReason::Stale));
        }
        return;
    };
    if let Some(why) = &p.unverified {
        d.push(Action::FlagUnverified {
            node: n.name.clone(),
            why: why.clone(),
        });
    }
    let outcome = p.outcome();
    if let Some(o) = outcome
        && p.reported != Some(o)
    {
        d.push(Action::Report {
            node: n.name.clone(),
            outcome: o,
        });
    }
    if p.reboot_approved && p.approval_spent() {
        d.push(Action::RevokeApproval {
            node: n.name.clone(),
        });
    }
    if n.cordoned_by_us {
        release_or_drain(d, n, p, obs, stop_new, now);
    }
}

/// A node we cordoned: release it once its attempt ended (a completed one after its
/// soak); an approval the Node records is confirmed, never undone; else go on draining
/// it while the rollout may go on, release it if not.
fn release_or_drain(
    d: &mut Draft,
    n: &NodeObs,
    p: &ProgressObs,
    obs: &Observed,
    stop_new: bool,
    now: DateTime<Utc>,
) {
    match p.outcome() {
        Some(Outcome::Completed) => release_after_soak(d, n, p, obs.node_soak, now),
        Some(_) => d.push(uncordon(n, UncordonReason::Finished)),
        None if p.reboot_approved => {}
        None if p.approval_recorded && p.phase == ProgressPhase::Staged => {
            d.push(Action::ConfirmApproval {
                node: n.name.clone(),
            });
        }
        None if p.phase == ProgressPhase::Staged && !stop_new => {
            d.push(Action::Drain {
                node: n.name.clone(),
            });
            d.look_again_in(obs.drain_poll);
        }
        None if p.phase == ProgressPhase::Staged => {
            d.push(uncordon(n, UncordonReason::Aborted));
        }
        None => d.push(uncordon(n, UncordonReason::Stale)),
    }
}

/// A completed node is released once it has been Ready for `soak` since it came back
/// (or completed, whichever is later).
fn release_after_soak(
    d: &mut Draft,
    n: &NodeObs,
    p: &ProgressObs,
    soak: Duration,
    now: DateTime<Utc>,
) {
    if !n.ready {
        return;
    }
    let back = [n.ready_since, p.completed_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    let soaked_at = back + chrono::Duration::from_std(soak).unwrap_or_default();
    if now >= soaked_at {
        d.push(uncordon(n, UncordonReason::Completed));
    } else {
        d.look_again_in(until(now, soaked_at));
    }
}

/// Whether some selected node, not held by another OSUpgrade, has not ended its attempt.
fn has_pending_work(nodes: &[&NodeObs]) -> bool {
    nodes
        .iter()
        .any(|n| n.outcome().is_none() && n.claimed_by.is_none())
}

/// Start staged nodes, in order, while there is room under maxUnavailable (counting
/// slots freed by this plan's releases) and the canary gate lets them through.
fn start_disruption(
    d: &mut Draft,
    nodes: &[&NodeObs],
    s: &Strategy,
    canary: &CanaryState,
    room: Room,
    drain_poll: Duration,
    live_updates: bool,
) {
    let (only_canaries, mut canary_slots) = canary_slots(canary, s.canary.as_ref(), nodes);
    let mut freed = freed_slots(&d.actions, nodes, room).into_iter();
    let mut busy = room.disrupted;
    for n in nodes
        .iter()
        .filter(|n| n.startable() && n.progress.as_ref().is_some_and(|p| p.rollback.is_none()))
    {
        let p = n.progress.as_ref().expect("startable nodes have progress");
        let new_canary = only_canaries && !p.canary;
        if new_canary && canary_slots == 0 {
            continue;
        }
        let after = if busy < room.max_unavailable {
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
        if after.is_none() {
            busy += 1;
        }
        start(
            d,
            n,
            p,
            p.canary || new_canary,
            after,
            drain_poll,
            live_updates,
        );
    }
}

/// Whether only canaries may start now, and how many more of them.
fn canary_slots(canary: &CanaryState, c: Option<&Canary>, nodes: &[&NodeObs]) -> (bool, usize) {
    match (canary, c) {
        (CanaryState::Running { .. }, Some(c)) => {
            let target = (c.count as usize).min(nodes.len());
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
    }
}

/// Nodes released by `actions` stop counting once their uncordon succeeds: a start may
/// take such a slot, on the condition that that release went through. Only when within
/// budget: over it (disruption from elsewhere), one release frees nothing.
fn freed_slots(actions: &[Action], nodes: &[&NodeObs], room: Room) -> Vec<String> {
    if room.disrupted > room.max_unavailable {
        return Vec::new();
    }
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
}

/// Begin one node's disruption: approve a live update, or cordon and drain. The agent's
/// `rebootRequired: false` skips the drain only where the OSUpgrade asked for live
/// updates and the node's backend can do them; otherwise the node is drained anyway.
fn start(
    d: &mut Draft,
    n: &NodeObs,
    p: &ProgressObs,
    canary: bool,
    after: Option<String>,
    drain_poll: Duration,
    live_updates: bool,
) {
    let node = n.name.clone();
    if p.reboot_required == Some(false) && live_updates && !n.ab_slot {
        d.push(Action::ApproveLive {
            node,
            canary,
            after,
        });
    } else {
        d.push(Action::Cordon {
            node: node.clone(),
            canary,
            after,
        });
        d.push(Action::Drain { node });
        d.look_again_in(drain_poll);
    }
}

/// Let nodes without a progress object start staging, up to maxStaging at once.
fn let_stage(d: &mut Draft, nodes: &[&NodeObs], s: &Strategy) {
    let limit = s.max_staging.map_or(usize::MAX, |b| b.resolve(nodes.len()));
    let staging = nodes
        .iter()
        .filter(|n| n.progress.as_ref().is_some_and(ProgressObs::is_staging))
        .count();
    let waiting = nodes
        .iter()
        .filter(|n| n.progress.is_none() && n.claimed_by.is_none());
    for n in waiting.take(limit.saturating_sub(staging)) {
        d.push(Action::CreateProgress {
            node: n.name.clone(),
        });
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
        let soaked_at = done_at + chrono::Duration::from_std(c.soak).unwrap_or_default();
        if now < soaked_at {
            return CanaryState::Soaking(soaked_at);
        }
    }
    if c.require_approval && !c.approved {
        return CanaryState::AwaitingApproval;
    }
    CanaryState::Passed
}

#[cfg(test)]
mod tests;
