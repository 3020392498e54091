//! Property tests of the rollout planner over random clusters and random event orders.
//!
//! A small model plays the cluster: agents stage, reboot and finish (completing, failing
//! or rolling back as each node's fate says), nodes flap NotReady, admins cordon, time
//! jumps, the user pauses and approves canaries, drains finish or not. Whenever the
//! planner is asked, its actions are applied to the model, and the four invariants of the
//! issue are checked against values the test computes itself:
//! 1. disruption never starts beyond maxUnavailable, and what we disrupted never exceeds it;
//! 2. nothing starts outside a maintenance window;
//! 3. no node outside the canary batch starts before the batch completed (and soaked and
//!    was approved when that is required);
//! 4. a rollout that reached maxFailures starts nothing new.
//!
//! 5. a node whose reboot was approved is never released before its attempt ended, nor
//!    drained and approved again, also when the controller crashed between recording
//!    the approval on the Node and on the progress object, or plans from a cache that
//!    does not show the progress write yet.
//!
//! A second property checks liveness: without failures and without external
//! disturbance (crashes and lagging caches aside), every node ends Completed and
//! uncordoned.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use osroll_api::{MaintenanceWindow, ProgressPhase, UpgradePhase};
use osroll_controller::planner::{
    Action, Budget, Canary, NodeObs, Observed, Outcome, ProgressObs, Strategy as Rollout, Window,
    plan,
};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Fate {
    Complete,
    RollBack,
    Fail,
}

/// How a drain step the planner asked for ends.
#[derive(Clone, Copy, Debug)]
enum DrainEnd {
    /// Pods still leaving.
    Draining,
    /// Approved: recorded on the Node, then `rebootApproved` on the progress object.
    Approved,
    /// Approved, but the controller's cache shows the progress object as it was before,
    /// until the agent's next write.
    Unseen,
    /// Recorded on the Node, then the controller crashed: the progress write and the
    /// plan's remaining actions are lost.
    Crashed,
}

#[derive(Clone, Debug)]
enum Event {
    Plan {
        drain: DrainEnd,
        uncordon_fails: bool,
    },
    Agent(usize),
    Flap(usize),
    AdminCordon(usize),
    Tick(u32),
    TogglePause,
    ApproveCanary,
}

#[derive(Clone, Debug)]
struct Model {
    nodes: Vec<NodeObs>,
    fates: Vec<Fate>,
    strategy: Rollout,
    live: Vec<bool>,
    own: Option<String>,
    now: DateTime<Utc>,
    /// Per node, the progress object as the controller's cache still shows it, if it
    /// lags behind.
    seen: Vec<Option<ProgressObs>>,
}

impl Model {
    /// The nodes as the controller sees them: the Node as it is, a lagging progress
    /// object as the cache has it (with the approval the Node records).
    fn seen_nodes(&self) -> Vec<NodeObs> {
        let mut nodes = self.nodes.clone();
        for (n, seen) in nodes.iter_mut().zip(&self.seen) {
            if let (Some(old), Some(now)) = (seen, n.progress.as_mut()) {
                *now = ProgressObs {
                    approval_recorded: now.approval_recorded,
                    ..old.clone()
                };
            }
        }
        nodes
    }

    fn observed(&self) -> Observed {
        Observed {
            strategy: self.strategy.clone(),
            nodes: self.seen_nodes(),
            own_node: self.own.clone(),
            node_soak: Duration::from_secs(30),
            drain_poll: Duration::from_secs(2),
            live_updates: true,
            health: Default::default(),
        }
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("action names a known node")
    }

    fn by_us(n: &NodeObs) -> bool {
        n.cordoned_by_us
            || n.progress
                .as_ref()
                .is_some_and(|p| p.reboot_approved && p.outcome().is_none())
    }

    fn failures(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.progress
                    .as_ref()
                    .and_then(|p| p.outcome())
                    .is_some_and(Outcome::is_failure)
            })
            .count()
    }

    /// The canary gate, computed independently of the planner.
    fn canary_open(&self) -> bool {
        let Some(c) = &self.strategy.canary else {
            return true;
        };
        let target = (c.count as usize).min(self.nodes.len());
        let passed: Vec<&ProgressObs> = self
            .nodes
            .iter()
            .filter(|n| !n.cordoned_by_us)
            .filter_map(|n| n.progress.as_ref())
            .filter(|p| {
                p.canary && p.phase == ProgressPhase::Completed && p.drain_outcome.is_none()
            })
            .collect();
        if passed.len() < target {
            return false;
        }
        let soaked = passed
            .iter()
            .filter_map(|p| p.completed_at)
            .max()
            .is_none_or(|t| self.now >= t + chrono::Duration::from_std(c.soak).unwrap());
        soaked && (!c.require_approval || c.approved)
    }

    fn in_window(&self) -> bool {
        self.strategy.windows.is_empty()
            || self.strategy.windows.iter().any(|w| w.contains(self.now))
    }

    fn check_and_apply(
        &mut self,
        drain: DrainEnd,
        uncordon_fails: bool,
    ) -> Result<(), TestCaseError> {
        let p = plan(&self.observed(), self.now);
        let total = self.nodes.len();
        let max_unavailable = self.strategy.max_unavailable.resolve(total);
        let disrupted = self.nodes.iter().filter(|n| n.is_disrupted()).count();
        let starts: Vec<&Action> = p.actions.iter().filter(|a| a.starts_disruption()).collect();
        if !starts.is_empty() {
            prop_assert!(
                self.in_window(),
                "started {starts:?} outside every window at {}",
                self.now
            );
            prop_assert!(!self.strategy.paused, "started {starts:?} while paused");
        }
        let halted = self.failures() >= self.strategy.failure_limit();
        if halted {
            prop_assert!(
                !p.actions
                    .iter()
                    .any(|a| a.starts_disruption() || matches!(a, Action::CreateProgress { .. })),
                "halted rollout started {:?}",
                p.actions
            );
            prop_assert_eq!(p.phase, UpgradePhase::Failed);
        }
        if !self.canary_open() {
            for a in &starts {
                let canary = matches!(
                    a,
                    Action::Cordon { canary: true, .. } | Action::ApproveLive { canary: true, .. }
                );
                prop_assert!(
                    canary,
                    "non-canary {a:?} started before the canary batch passed"
                );
            }
        }
        // Apply as the executor does: a failed release skips the start that reuses its slot.
        let mut released: Vec<String> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut started = 0;
        for a in &p.actions {
            if skipped.iter().any(|s| s == a.node()) {
                continue;
            }
            if let Some(f) = a.after()
                && !released.iter().any(|r| r == f)
            {
                skipped.push(a.node().to_string());
                continue;
            }
            started += usize::from(a.starts_disruption());
            let i = self.idx(a.node());
            let n = &mut self.nodes[i];
            let approved = n
                .progress
                .as_ref()
                .is_some_and(|p| p.reboot_approved && p.outcome().is_none());
            match a {
                Action::CreateProgress { .. } => {
                    prop_assert!(
                        n.progress.is_none(),
                        "progress created twice for {}",
                        n.name
                    );
                    n.progress = Some(ProgressObs::default());
                }
                Action::Cordon { canary, .. } => {
                    prop_assert!(
                        !n.unschedulable,
                        "cordoned an unschedulable node {}",
                        n.name
                    );
                    n.unschedulable = true;
                    n.cordoned_by_us = true;
                    let pr = n.progress.as_mut().unwrap();
                    pr.canary |= *canary;
                    pr.approval_recorded = false;
                }
                Action::Drain { .. } => {
                    prop_assert!(n.cordoned_by_us, "drain of a node we did not cordon");
                    prop_assert!(!approved, "{} drained and approved twice", n.name);
                    let pr = n.progress.as_mut().unwrap();
                    let before = pr.clone();
                    match drain {
                        DrainEnd::Draining => {}
                        DrainEnd::Approved | DrainEnd::Unseen => {
                            pr.approval_recorded = true;
                            pr.reboot_approved = true;
                        }
                        DrainEnd::Crashed => pr.approval_recorded = true,
                    }
                    if matches!(drain, DrainEnd::Unseen) {
                        self.seen[i] = Some(before);
                    }
                    if matches!(drain, DrainEnd::Crashed) {
                        break;
                    }
                }
                Action::ConfirmApproval { .. } => {
                    let pr = n.progress.as_mut().unwrap();
                    prop_assert!(
                        pr.approval_recorded && pr.outcome().is_none(),
                        "confirmed an approval of {} that is not recorded: {pr:?}",
                        n.name
                    );
                    pr.reboot_approved = true;
                }
                Action::ApproveLive { canary, .. } => {
                    let pr = n.progress.as_mut().unwrap();
                    pr.reboot_approved = true;
                    pr.canary |= *canary;
                }
                // The simulated nodes never contradict their progress.
                Action::FlagUnverified { .. } => {
                    prop_assert!(false, "completion of {} flagged unverified", n.name);
                }
                Action::RevokeApproval { .. } => {
                    n.progress.as_mut().unwrap().reboot_approved = false
                }
                Action::Uncordon { .. } => {
                    prop_assert!(
                        n.cordoned_by_us,
                        "uncordoned {} which we did not cordon",
                        n.name
                    );
                    prop_assert!(!approved, "released {} approved for reboot", n.name);
                    if uncordon_fails {
                        skipped.push(n.name.clone());
                        continue;
                    }
                    n.unschedulable = false;
                    n.cordoned_by_us = false;
                    if let Some(pr) = n.progress.as_mut() {
                        pr.approval_recorded = false;
                    }
                    released.push(n.name.clone());
                }
                Action::Report { outcome, .. } => {
                    n.progress.as_mut().unwrap().reported = Some(*outcome)
                }
                // Without health checks and with onFailure Halt nothing is rolled back.
                Action::ArmRollback { .. } => {
                    prop_assert!(false, "{} armed for rollback under Halt", n.name);
                }
            }
        }
        // Starting never takes the cluster past maxUnavailable, slots freed in the same
        // plan included.
        if started > 0 {
            let now_disrupted = self.nodes.iter().filter(|n| n.is_disrupted()).count();
            prop_assert!(
                now_disrupted <= max_unavailable,
                "{disrupted} disrupted, {started} started: {now_disrupted} > maxUnavailable {max_unavailable}"
            );
        }
        let ours = self.nodes.iter().filter(|n| Self::by_us(n)).count();
        prop_assert!(
            ours <= max_unavailable,
            "{ours} nodes disrupted by us > {max_unavailable}"
        );
        Ok(())
    }

    fn agent_step(&mut self, i: usize) {
        // A watch delivers one object's changes in order: once the cache shows the
        // agent's write, it shows the controller's before it.
        self.seen[i] = None;
        let now = self.now;
        let fate = self.fates[i];
        let live = self.live[i];
        let n = &mut self.nodes[i];
        let Some(p) = n.progress.as_mut() else { return };
        use ProgressPhase::*;
        p.phase = match (p.phase, p.reboot_approved) {
            (Pending, _) => Downloading,
            (Downloading, _) => Writing,
            (Writing, _) => Verifying,
            (Verifying, _) => {
                p.reboot_required = Some(!live);
                Staged
            }
            (Staged, true) if p.reboot_required == Some(false) => Completed,
            (Staged, true) => {
                n.ready = false;
                Rebooting
            }
            (Rebooting, _) => {
                n.ready = true;
                n.ready_since = Some(now);
                p.completed_at = Some(now);
                match fate {
                    Fate::Complete => Completed,
                    Fate::RollBack => RolledBack,
                    Fate::Fail => Failed,
                }
            }
            (other, _) => other,
        };
        if p.phase == Completed && p.completed_at.is_none() {
            p.completed_at = Some(now);
        }
    }
}

fn arb_budget() -> impl Strategy<Value = Budget> {
    prop_oneof![
        (0u32..4).prop_map(Budget::Count),
        (0u32..=100).prop_map(Budget::Percent)
    ]
}

fn arb_strategy() -> impl Strategy<Value = Rollout> {
    (
        arb_budget(),
        proptest::option::of(1u32..4).prop_map(|o| o.map(Budget::Count)),
        proptest::option::of((1u32..4, 0u64..600, any::<bool>())),
        proptest::option::of((0u32..24, 0u32..24)),
        0u32..4,
    )
        .prop_map(
            |(max_unavailable, max_staging, canary, window, max_failures)| Rollout {
                max_unavailable,
                max_staging,
                canary: canary.map(|(count, soak, require_approval)| Canary {
                    count,
                    soak: Duration::from_secs(soak),
                    require_approval,
                    approved: false,
                }),
                windows: window
                    .map(|(s, e)| {
                        let spec = MaintenanceWindow {
                            start: format!("{s:02}:00"),
                            end: format!("{e:02}:30"),
                            time_zone: Some("Europe/Berlin".into()),
                            ..Default::default()
                        };
                        vec![Window::from_spec(&spec, "w").unwrap()]
                    })
                    .unwrap_or_default(),
                max_failures,
                paused: false,
            },
        )
}

fn arb_nodes() -> impl Strategy<Value = (Vec<NodeObs>, Vec<Fate>, Vec<bool>)> {
    let fate =
        prop_oneof![8 => Just(Fate::Complete), 1 => Just(Fate::RollBack), 1 => Just(Fate::Fail)];
    proptest::collection::vec(
        (any::<bool>(), 0u32..3, prop::bool::weighted(0.2), fate),
        1..12,
    )
    .prop_map(|v| {
        let mut nodes = Vec::new();
        let mut fates = Vec::new();
        let mut live = Vec::new();
        for (i, (cp, failures, is_live, fate)) in v.into_iter().enumerate() {
            nodes.push(NodeObs {
                name: format!("n{i:02}"),
                ready: true,
                control_plane: cp,
                past_failures: failures,
                ..Default::default()
            });
            fates.push(fate);
            live.push(is_live);
        }
        (nodes, fates, live)
    })
}

fn arb_drain_end() -> impl Strategy<Value = DrainEnd> {
    prop_oneof![
        4 => Just(DrainEnd::Draining),
        4 => Just(DrainEnd::Approved),
        1 => Just(DrainEnd::Unseen),
        1 => Just(DrainEnd::Crashed),
    ]
}

fn arb_events(n: usize) -> impl Strategy<Value = Vec<Event>> {
    // Approval is rare so that runs spend time waiting for it.
    let ev = prop_oneof![
        60 => (arb_drain_end(), prop::bool::weighted(0.2))
            .prop_map(|(drain, u)| Event::Plan { drain, uncordon_fails: u }),
        80 => (0..n).prop_map(Event::Agent),
        10 => (0..n).prop_map(Event::Flap),
        10 => (0..n).prop_map(Event::AdminCordon),
        20 => (0u32..5400).prop_map(Event::Tick),
        10 => Just(Event::TogglePause),
        1 => Just(Event::ApproveCanary),
    ];
    proptest::collection::vec(ev, 0..400)
}

fn arb_case() -> impl Strategy<Value = (Model, Vec<Event>)> {
    (
        arb_nodes(),
        arb_strategy(),
        any::<bool>(),
        0i64..(7 * 86400),
    )
        .prop_flat_map(|((nodes, fates, live), strategy, own, t)| {
            let n = nodes.len();
            let model = Model {
                own: own.then(|| nodes[0].name.clone()),
                seen: vec![None; n],
                nodes,
                fates,
                live,
                strategy,
                now: Utc.with_ymd_and_hms(2024, 6, 3, 0, 0, 0).unwrap()
                    + chrono::Duration::seconds(t),
            };
            (Just(model), arb_events(n))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_event_orders((mut m, events) in arb_case()) {
        for ev in events {
            match ev {
                Event::Plan { drain, uncordon_fails } => m.check_and_apply(drain, uncordon_fails)?,
                Event::Agent(i) => m.agent_step(i),
                Event::Flap(i) => {
                    let n = &mut m.nodes[i];
                    // A reboot in flight owns readiness; otherwise the node flaps.
                    if !n.progress.as_ref().is_some_and(|p| p.phase == ProgressPhase::Rebooting) {
                        n.ready = !n.ready;
                        n.ready_since = Some(m.now);
                    }
                }
                Event::AdminCordon(i) => {
                    let n = &mut m.nodes[i];
                    if !n.cordoned_by_us {
                        n.unschedulable = !n.unschedulable;
                    }
                }
                Event::Tick(s) => m.now += chrono::Duration::seconds(s.into()),
                Event::TogglePause => m.strategy.paused = !m.strategy.paused,
                Event::ApproveCanary => {
                    if let Some(c) = m.strategy.canary.as_mut() {
                        c.approved = true;
                    }
                }
            }
        }
    }

    #[test]
    fn a_healthy_fleet_always_finishes((mut m, _) in arb_case()) {
        m.strategy.windows.clear();
        if let Some(c) = m.strategy.canary.as_mut() {
            c.approved = true;
        }
        m.fates.iter_mut().for_each(|f| *f = Fate::Complete);
        let n = m.nodes.len();
        for round in 0..(n * 40 + 40) {
            let drain = [DrainEnd::Approved, DrainEnd::Unseen, DrainEnd::Crashed][round % 3];
            m.check_and_apply(drain, false)?;
            (0..n).for_each(|i| m.agent_step(i));
            m.now += chrono::Duration::seconds(if round % 2 == 0 { 31 } else { 700 });
            let done = m.nodes.iter().all(|x| !x.unschedulable && x.progress.as_ref().is_some_and(|p| p.phase == ProgressPhase::Completed));
            if done {
                let p = plan(&m.observed(), m.now);
                prop_assert_eq!(p.phase, UpgradePhase::Completed);
                return Ok(());
            }
        }
        prop_assert!(false, "rollout did not finish: {:#?}", m.nodes);
    }
}
