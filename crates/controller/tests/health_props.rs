//! Property tests of the health gate and the fleet rollback, over random clusters and
//! random event orders.
//!
//! A small model plays the cluster: agents stage and reboot (a node armed for rollback
//! re-arms its old slot, so it stages at once), checks turn red and green, time jumps,
//! drains finish or not. The model keeps only what the cluster and the OSUpgrade's
//! status keep (progress objects, cordons, `status.health.failingSince`,
//! `status.rollback`), so every plan is what a freshly restarted controller would
//! decide. Checked on every plan, against values the test computes itself:
//! 1. never more than maxUnavailable nodes disrupted by us, during rollback too;
//! 2. nothing new starts (no disruption, no new staging) while a check fails;
//! 3. a rollback arms only nodes whose upgrade this OSUpgrade completed, each once;
//! 4. once rolling back, no forward disruption starts.
//!
//! A second property checks that a rollback finishes: a check that turns red after
//! some nodes upgraded, under `onFailure: Rollback`, ends with exactly those nodes back
//! on 1.0, the others never disrupted after the failure, nobody cordoned, and the
//! phase RolledBack; or, when one upgraded node has no way back (asked about once, as
//! invariant 3 checks), with that node alone on 2.0 and the phase Failed
//! (RollbackFailed).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use osroll_api::health::FailurePolicy;
use osroll_api::upgrade::UpgradeReason;
use osroll_api::{ProgressPhase, UpgradePhase};
use osroll_controller::planner::{
    Action, Budget, Failing, HealthObs, NodeObs, Observed, ProgressObs, RollbackMark,
    Strategy as Rollout, plan,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Event {
    Plan { drain_finishes: bool },
    Agent(usize),
    Red(bool),
    Tick(u32),
}

#[derive(Clone, Debug)]
struct Model {
    nodes: Vec<NodeObs>,
    /// The OS each node runs.
    version: Vec<&'static str>,
    /// Booted 2.0 through this OSUpgrade (the set a rollback must cover).
    upgraded: Vec<bool>,
    /// Armed for rollback (each at most once).
    armed: Vec<bool>,
    /// The rollback finds no way back for the node (its previous version is unknown).
    no_way_back: Vec<bool>,
    strategy: Rollout,
    health: HealthObs,
    red: bool,
    now: DateTime<Utc>,
}

fn failing() -> Failing {
    Failing {
        check: "web".into(),
        observed: "readyReplicas 1 of 3".into(),
    }
}

impl Model {
    fn new(n: usize, max_unavailable: Budget, timeout: u64, soak: u64) -> Model {
        Model {
            nodes: (0..n)
                .map(|i| NodeObs {
                    name: format!("n{i:02}"),
                    ready: true,
                    ..Default::default()
                })
                .collect(),
            version: vec!["1.0"; n],
            upgraded: vec![false; n],
            armed: vec![false; n],
            no_way_back: vec![false; n],
            strategy: Rollout {
                max_unavailable,
                max_failures: 1,
                ..Default::default()
            },
            health: HealthObs {
                timeout: Duration::from_secs(timeout),
                soak: Duration::from_secs(soak),
                on_failure: FailurePolicy::Rollback,
                ..Default::default()
            },
            red: false,
            now: Utc.with_ymd_and_hms(2026, 12, 6, 3, 0, 0).unwrap(),
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            strategy: self.strategy.clone(),
            nodes: self.nodes.clone(),
            node_soak: Duration::from_secs(10),
            drain_poll: Duration::from_secs(2),
            health: HealthObs {
                failing: self.red.then(failing),
                ..self.health.clone()
            },
            ..Default::default()
        }
    }

    fn by_us(n: &NodeObs) -> bool {
        n.cordoned_by_us
            || n.progress
                .as_ref()
                .is_some_and(|p| p.reboot_approved && p.outcome().is_none())
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn check_and_apply(&mut self, drain_finishes: bool) -> Result<UpgradePhase, TestCaseError> {
        let p = plan(&self.observed(), self.now);
        let max_unavailable = self.strategy.max_unavailable.resolve(self.nodes.len());
        let rolling_back = self.health.rolling_back;
        // What the status keeps.
        self.health.failing_since = p.failing_since;
        self.health.rolling_back |= p.rollback.is_some();
        if self.red && !rolling_back && p.rollback.is_none() {
            prop_assert!(
                !p.actions
                    .iter()
                    .any(|a| a.starts_disruption() || matches!(a, Action::CreateProgress { .. })),
                "started {:?} while a check fails",
                p.actions
            );
        }
        for a in &p.actions {
            let i = self.idx(a.node());
            let n = &mut self.nodes[i];
            match a {
                Action::CreateProgress { .. } => n.progress = Some(ProgressObs::default()),
                Action::Cordon { .. } => {
                    let armed = n.progress.as_ref().is_some_and(|p| p.rollback.is_some());
                    prop_assert!(
                        !rolling_back || armed,
                        "forward start of {} during rollback",
                        n.name
                    );
                    n.unschedulable = true;
                    n.cordoned_by_us = true;
                }
                Action::Drain { .. } if drain_finishes => {
                    let pr = n.progress.as_mut().unwrap();
                    pr.approval_recorded = true;
                    pr.reboot_approved = true;
                }
                // Every approval here reaches its progress object.
                Action::ConfirmApproval { .. } => prop_assert!(false, "confirmed {}", n.name),
                Action::Drain { .. } => {}
                Action::ApproveLive { .. } => prop_assert!(false, "A/B nodes never update live"),
                Action::RevokeApproval { .. } => {
                    n.progress.as_mut().unwrap().reboot_approved = false
                }
                Action::Uncordon { .. } => {
                    n.unschedulable = false;
                    n.cordoned_by_us = false;
                    if let Some(pr) = n.progress.as_mut() {
                        pr.approval_recorded = false;
                    }
                }
                Action::Report { outcome, .. } => {
                    n.progress.as_mut().unwrap().reported = Some(*outcome)
                }
                Action::ArmRollback { upgraded_at, .. } => {
                    prop_assert!(self.upgraded[i], "armed {} which it never upgraded", n.name);
                    prop_assert!(!self.armed[i], "armed {} twice", n.name);
                    self.armed[i] = true;
                    if self.no_way_back[i] {
                        n.progress.as_mut().unwrap().rollback_unavailable = true;
                        continue;
                    }
                    n.progress = Some(ProgressObs {
                        rollback: Some(RollbackMark {
                            upgraded_at: *upgraded_at,
                        }),
                        ..Default::default()
                    });
                }
                Action::FlagUnverified { .. } => prop_assert!(false, "unverified {}", n.name),
            }
        }
        let ours = self.nodes.iter().filter(|n| Self::by_us(n)).count();
        prop_assert!(
            ours <= max_unavailable,
            "{ours} nodes disrupted by us > maxUnavailable {max_unavailable}"
        );
        Ok(p.phase)
    }

    fn agent_step(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(p) = n.progress.as_mut() else { return };
        let back = p.rollback.is_some();
        use ProgressPhase::*;
        p.phase = match (p.phase, p.reboot_approved) {
            // The old slot still holds 1.0: nothing to download.
            (Pending, _) if back => Staged,
            (Pending, _) => Downloading,
            (Downloading, _) => Verifying,
            (Verifying, _) => Staged,
            (Staged, true) => {
                n.ready = false;
                Rebooting
            }
            (Rebooting, _) => {
                n.ready = true;
                n.ready_since = Some(now);
                p.completed_at = Some(now);
                self.version[i] = if back { "1.0" } else { "2.0" };
                self.upgraded[i] |= !back;
                Completed
            }
            (other, _) => other,
        };
    }
}

fn arb_case() -> impl Strategy<Value = (Model, Vec<Event>)> {
    (2usize..12, 1u32..4, 0u64..120, 0u64..60).prop_flat_map(|(n, mu, timeout, soak)| {
        let ev = prop_oneof![
            50 => any::<bool>().prop_map(|d| Event::Plan { drain_finishes: d }),
            60 => (0..n).prop_map(Event::Agent),
            6 => any::<bool>().prop_map(Event::Red),
            20 => (0u32..90).prop_map(Event::Tick),
        ];
        let no_way_back = proptest::collection::vec(prop::bool::weighted(0.15), n);
        let model = no_way_back.prop_map(move |stuck| Model {
            no_way_back: stuck,
            ..Model::new(n, Budget::Count(mu), timeout, soak)
        });
        (model, proptest::collection::vec(ev, 0..500))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_event_orders((mut m, events) in arb_case()) {
        for ev in events {
            match ev {
                Event::Plan { drain_finishes } => { m.check_and_apply(drain_finishes)?; }
                Event::Agent(i) => m.agent_step(i),
                Event::Red(r) => m.red = r,
                Event::Tick(s) => m.now += chrono::Duration::seconds(s.into()),
            }
        }
    }

    #[test]
    fn a_rollback_puts_back_exactly_the_upgraded_nodes(
        (mut m, _) in arb_case(),
        red_after in 1usize..6,
        strand in proptest::option::of(0usize..12),
    ) {
        let n = m.nodes.len();
        m.no_way_back = vec![false; n];
        if let Some(s) = strand {
            m.no_way_back[s % n] = true;
        }
        let mut untouched_at_failure: Option<Vec<bool>> = None;
        for _ in 0..(n * 60 + 60) {
            if !m.red && m.upgraded.iter().filter(|u| **u).count() >= red_after.min(n) {
                m.red = true;
            }
            let phase = m.check_and_apply(true)?;
            if m.health.rolling_back && untouched_at_failure.is_none() {
                let in_flight = |x: &NodeObs| x.progress.as_ref().is_some_and(|p| p.reboot_approved || p.phase == ProgressPhase::Rebooting);
                untouched_at_failure = Some((0..n).map(|i| !m.upgraded[i] && !in_flight(&m.nodes[i])).collect());
            }
            if let Some(untouched) = &untouched_at_failure {
                for (i, x) in m.nodes.iter().enumerate() {
                    if untouched[i] {
                        prop_assert!(!x.cordoned_by_us && !m.upgraded[i], "{} was disrupted after the failure", x.name);
                    }
                }
            }
            (0..n).for_each(|i| m.agent_step(i));
            m.now += chrono::Duration::seconds(31);
            if matches!(phase, UpgradePhase::RolledBack | UpgradePhase::Failed) && m.health.rolling_back {
                prop_assert!(m.nodes.iter().all(|x| !x.unschedulable), "left cordoned: {:#?}", m.nodes);
                let stranded: Vec<bool> = (0..n).map(|i| m.upgraded[i] && m.no_way_back[i]).collect();
                let expected = if stranded.contains(&true) { UpgradePhase::Failed } else { UpgradePhase::RolledBack };
                prop_assert_eq!(phase, expected);
                if phase == UpgradePhase::Failed {
                    prop_assert_eq!(plan(&m.observed(), m.now).reason, UpgradeReason::RollbackFailed);
                }
                for (i, stuck) in stranded.iter().enumerate() {
                    let version = if *stuck { "2.0" } else { "1.0" };
                    prop_assert_eq!(m.version[i], version, "{}", &m.nodes[i].name);
                    prop_assert_eq!(m.armed[i], m.upgraded[i], "{}: armed iff upgraded", &m.nodes[i].name);
                }
                prop_assert!(m.upgraded.iter().any(|u| *u));
                return Ok(());
            }
        }
        prop_assert!(false, "rollback did not finish: {:#?}", m.nodes);
    }
}
