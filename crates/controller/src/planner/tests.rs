//! Example-based tests of the planner's rules; the invariants over random clusters are
//! in `tests/planner_props.rs`.

use super::*;
use chrono::TimeZone;
use osroll_api::UpgradePhase;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 7, 12, 0, 0).unwrap()
}

fn node(name: &str) -> NodeObs {
    NodeObs {
        name: name.into(),
        ready: true,
        ..Default::default()
    }
}

fn with_phase(mut n: NodeObs, phase: ProgressPhase) -> NodeObs {
    n.progress = Some(ProgressObs {
        phase,
        ..Default::default()
    });
    n
}

fn staged(name: &str) -> NodeObs {
    with_phase(node(name), ProgressPhase::Staged)
}

fn obs(nodes: Vec<NodeObs>, strategy: Strategy) -> Observed {
    Observed {
        strategy,
        nodes,
        own_node: None,
        node_soak: Duration::ZERO,
        drain_poll: Duration::from_secs(2),
        live_updates: true,
        health: Default::default(),
    }
}

fn started(p: &Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter(|a| a.starts_disruption())
        .map(Action::node)
        .collect()
}

fn created(p: &Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter(|a| matches!(a, Action::CreateProgress { .. }))
        .map(Action::node)
        .collect()
}

fn strategy(max_unavailable: Budget) -> Strategy {
    Strategy {
        max_unavailable,
        ..Default::default()
    }
}

#[test]
fn creates_progress_for_every_node_without_max_staging() {
    let p = plan(
        &obs(vec![node("a"), node("b"), node("c")], Strategy::default()),
        now(),
    );
    assert_eq!(created(&p), ["a", "b", "c"]);
    assert_eq!(p.phase, UpgradePhase::Accepted);
    assert!(started(&p).is_empty(), "nothing is staged yet");
}

#[test]
fn max_staging_bounds_concurrent_staging() {
    let mut nodes = vec![with_phase(node("a"), ProgressPhase::Downloading)];
    nodes.extend(["b", "c", "d", "e"].map(node));
    let s = Strategy {
        max_staging: Some(Budget::Count(3)),
        ..Default::default()
    };
    let p = plan(&obs(nodes.clone(), s.clone()), now());
    assert_eq!(
        created(&p),
        ["b", "c"],
        "one staging already, two more allowed"
    );
    // A staged node no longer counts as staging.
    nodes[0] = staged("a");
    assert_eq!(created(&plan(&obs(nodes, s), now())), ["b", "c", "d"]);
}

#[test]
fn staged_nodes_are_cordoned_and_drained_up_to_max_unavailable() {
    let nodes = vec![staged("a"), staged("b"), staged("c")];
    let p = plan(&obs(nodes, strategy(Budget::Count(2))), now());
    assert_eq!(started(&p), ["a", "b"]);
    assert!(p.actions.contains(&Action::Drain { node: "a".into() }));
    assert_eq!(p.phase, UpgradePhase::Progressing);
}

#[test]
fn nodes_cordoned_or_not_ready_by_others_use_up_the_budget() {
    let mut other = staged("x");
    other.unschedulable = true; // cordoned by an admin, not by us
    let mut down = node("y");
    down.ready = false;
    let nodes = vec![other, down, staged("a"), staged("b"), staged("c")];
    let p = plan(&obs(nodes.clone(), strategy(Budget::Count(3))), now());
    assert_eq!(started(&p), ["a"], "two of three slots are taken");
    assert_eq!(p.disrupted, 2);
    let p = plan(&obs(nodes, strategy(Budget::Count(2))), now());
    assert!(started(&p).is_empty());
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::Uncordon { node, .. } if node == "x")),
        "never uncordon what we did not cordon"
    );
}

#[test]
fn percent_budget_rounds_down_with_a_minimum_of_one() {
    let nodes: Vec<NodeObs> = (0..19).map(|i| staged(&format!("n{i:02}"))).collect();
    let p = plan(&obs(nodes.clone(), strategy(Budget::Percent(10))), now());
    assert_eq!(started(&p).len(), 1, "10% of 19 is 1.9 -> 1");
    let p = plan(&obs(nodes, strategy(Budget::Percent(20))), now());
    assert_eq!(started(&p).len(), 3);
}

#[test]
fn live_updates_are_approved_without_cordon() {
    let mut n = staged("a");
    n.progress.as_mut().unwrap().reboot_required = Some(false);
    let p = plan(&obs(vec![n], Strategy::default()), now());
    assert_eq!(
        p.actions,
        [Action::ApproveLive {
            node: "a".into(),
            canary: false,
            after: None,
        }]
    );
}

#[test]
fn a_reported_live_update_is_drained_where_live_updates_are_not_allowed() {
    let mut n = staged("a");
    n.progress.as_mut().unwrap().reboot_required = Some(false);
    let cordoned = |p: &Plan| {
        p.actions.contains(&Action::Cordon {
            node: "a".into(),
            canary: false,
            after: None,
        }) && p.actions.contains(&Action::Drain { node: "a".into() })
    };
    // The OSUpgrade did not ask for live updates.
    let mut o = obs(vec![n.clone()], Strategy::default());
    o.live_updates = false;
    assert!(cordoned(&plan(&o, now())));
    // An A/B node never updates live, whatever the OSUpgrade asks.
    n.ab_slot = true;
    assert!(cordoned(&plan(&obs(vec![n], Strategy::default()), now())));
}

#[test]
fn an_unverified_completion_is_flagged_and_not_counted() {
    use crate::verify::Unverified;
    use osroll_api::upgrade::UnverifiedReason;
    let mut n = with_phase(node("a"), ProgressPhase::Completed);
    n.cordoned_by_us = true;
    n.unschedulable = true;
    let why = Unverified {
        reason: UnverifiedReason::NodeLabelMismatch,
        detail: "label 1.0".into(),
    };
    let p = n.progress.as_mut().unwrap();
    p.reboot_approved = true;
    p.unverified = Some(why.clone());
    let plan = plan(&obs(vec![n], Strategy::default()), now());
    assert_eq!(
        plan.actions,
        [Action::FlagUnverified {
            node: "a".into(),
            why
        }]
    );
    assert_eq!((plan.counts.completed, plan.counts.updating), (0, 1));
    let degraded = plan
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, "CompletionUnverified");
    assert!(
        degraded
            .message
            .contains("a (NodeLabelMismatch: label 1.0)"),
        "{}",
        degraded.message
    );
    assert_ne!(plan.phase, osroll_api::UpgradePhase::Completed);
}

#[test]
fn drain_continues_for_cordoned_nodes_and_stops_on_pause() {
    let mut a = staged("a");
    a.cordoned_by_us = true;
    a.unschedulable = true;
    let p = plan(
        &obs(vec![a.clone(), staged("b")], strategy(Budget::Count(2))),
        now(),
    );
    assert!(p.actions.contains(&Action::Drain { node: "a".into() }));
    assert_eq!(started(&p), ["b"]);
    let s = Strategy {
        paused: true,
        max_unavailable: Budget::Count(2),
        ..Default::default()
    };
    let p = plan(&obs(vec![a, staged("b")], s), now());
    assert_eq!(
        p.actions,
        [Action::Uncordon {
            node: "a".into(),
            why: UncordonReason::Aborted
        }]
    );
    assert_eq!(p.phase, UpgradePhase::Paused);
}

#[test]
fn an_approval_the_node_records_is_confirmed_not_undone_nor_repeated() {
    let mut a = staged("a");
    a.cordoned_by_us = true;
    a.unschedulable = true;
    a.progress.as_mut().unwrap().approval_recorded = true;
    let confirm = [Action::ConfirmApproval { node: "a".into() }];
    for paused in [false, true] {
        let s = Strategy {
            paused,
            max_unavailable: Budget::Count(1),
            ..Default::default()
        };
        let p = plan(&obs(vec![a.clone()], s), now());
        assert_eq!(p.actions, confirm, "paused {paused}");
    }
    // A spent approval (an external round that completed) is not brought back.
    let mut spent = a.clone();
    let pr = spent.progress.as_mut().unwrap();
    pr.phase = ProgressPhase::Completed;
    pr.external = true;
    let p = plan(&obs(vec![spent], strategy(Budget::Count(1))), now());
    assert!(!p.actions.contains(&confirm[0]), "{:?}", p.actions);
}

#[test]
fn approved_nodes_finish_even_when_paused() {
    let mut a = with_phase(node("a"), ProgressPhase::Rebooting);
    a.cordoned_by_us = true;
    a.unschedulable = true;
    a.ready = false;
    a.progress.as_mut().unwrap().reboot_approved = true;
    let s = Strategy {
        paused: true,
        ..Default::default()
    };
    let p = plan(&obs(vec![a, node("b")], s), now());
    assert!(
        p.actions.is_empty(),
        "no uncordon of a rebooting node, no new progress: {:?}",
        p.actions
    );
}

#[test]
fn completed_nodes_are_uncordoned_after_ready_and_soak() {
    let mut a = with_phase(node("a"), ProgressPhase::Completed);
    a.cordoned_by_us = true;
    a.unschedulable = true;
    a.progress.as_mut().unwrap().reboot_approved = true;
    a.progress.as_mut().unwrap().reported = Some(Outcome::Completed);
    a.ready_since = Some(now() - chrono::Duration::seconds(10));
    let mut o = obs(vec![a.clone()], Strategy::default());
    o.node_soak = Duration::from_secs(30);
    let p = plan(&o, now());
    assert!(p.actions.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    o.node_soak = Duration::from_secs(5);
    let p = plan(&o, now());
    assert_eq!(
        p.actions,
        [Action::Uncordon {
            node: "a".into(),
            why: UncordonReason::Completed
        }]
    );
    // Not Ready yet: wait, whatever the soak.
    a.ready = false;
    let p = plan(&obs(vec![a], Strategy::default()), now());
    assert!(p.actions.is_empty());
}

#[test]
fn outcomes_are_reported_once_and_failed_approvals_revoked() {
    let mut a = with_phase(node("a"), ProgressPhase::RolledBack);
    a.cordoned_by_us = true;
    a.unschedulable = true;
    a.progress.as_mut().unwrap().reboot_approved = true;
    let s = Strategy {
        max_failures: 2,
        ..Default::default()
    };
    let p = plan(&obs(vec![a.clone()], s.clone()), now());
    assert_eq!(
        p.actions,
        [
            Action::Report {
                node: "a".into(),
                outcome: Outcome::RolledBack
            },
            Action::RevokeApproval { node: "a".into() },
            Action::Uncordon {
                node: "a".into(),
                why: UncordonReason::Finished
            },
        ]
    );
    a.progress.as_mut().unwrap().reported = Some(Outcome::RolledBack);
    a.progress.as_mut().unwrap().reboot_approved = false;
    a.cordoned_by_us = false;
    a.unschedulable = false;
    assert!(plan(&obs(vec![a], s), now()).actions.is_empty());
}

#[test]
fn max_failures_halts_as_failed_and_starts_nothing() {
    let mut f = with_phase(node("f"), ProgressPhase::Failed);
    f.progress.as_mut().unwrap().reported = Some(Outcome::Failed);
    let nodes = vec![f, staged("a"), node("b")];
    let p = plan(&obs(nodes.clone(), Strategy::default()), now());
    assert_eq!(p.phase, UpgradePhase::Failed);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.message.contains('f'), "{}", p.message);
    let s = Strategy {
        max_failures: 2,
        ..Default::default()
    };
    let p = plan(&obs(nodes, s), now());
    assert_eq!(p.phase, UpgradePhase::Progressing);
    assert_eq!(started(&p), ["a"]);
    let degraded = p.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(
        degraded.is_true() && degraded.message.contains("failed: f"),
        "{degraded:?}"
    );
}

#[test]
fn drain_failure_counts_as_failure_and_skip_does_not() {
    let mut a = staged("a");
    a.progress.as_mut().unwrap().drain_outcome = Some(DrainOutcome::Skipped);
    a.progress.as_mut().unwrap().reported = Some(Outcome::Skipped);
    let p = plan(
        &obs(vec![a.clone(), staged("b")], Strategy::default()),
        now(),
    );
    assert_eq!(started(&p), ["b"]);
    assert_eq!(p.counts.skipped, 1);
    a.progress.as_mut().unwrap().drain_outcome = Some(DrainOutcome::Failed);
    a.progress.as_mut().unwrap().reported = Some(Outcome::DrainFailed);
    let p = plan(&obs(vec![a, staged("b")], Strategy::default()), now());
    assert_eq!(p.phase, UpgradePhase::Failed);
    assert_eq!(p.counts.failed, 1);
}

#[test]
fn nothing_new_starts_outside_windows_but_staging_does() {
    let w = Window::from_spec(
        &osroll_api::MaintenanceWindow {
            start: "01:00".into(),
            end: "03:00".into(),
            ..Default::default()
        },
        "w",
    )
    .unwrap();
    let s = Strategy {
        windows: vec![w],
        ..Default::default()
    };
    let mut a = staged("b");
    a.cordoned_by_us = true;
    a.unschedulable = true;
    let p = plan(&obs(vec![staged("a"), a, node("c")], s.clone()), now());
    assert!(started(&p).is_empty());
    assert!(
        p.actions.contains(&Action::Drain { node: "b".into() }),
        "in-flight drain continues"
    );
    assert_eq!(created(&p), ["c"]);
    assert_eq!(p.phase, UpgradePhase::Progressing);
    let p = plan(&obs(vec![staged("a")], s.clone()), now());
    assert_eq!(p.reason.as_str(), "OutsideMaintenanceWindow");
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    let inside = Utc.with_ymd_and_hms(2024, 6, 7, 2, 0, 0).unwrap();
    assert_eq!(started(&plan(&obs(vec![staged("a")], s), inside)), ["a"]);
}

fn canary_strategy(count: u32, soak: u64, approval: bool) -> Strategy {
    Strategy {
        max_unavailable: Budget::Count(3),
        canary: Some(Canary {
            count,
            soak: Duration::from_secs(soak),
            require_approval: approval,
            approved: false,
        }),
        ..Default::default()
    }
}

fn completed_canary(name: &str, at: DateTime<Utc>) -> NodeObs {
    let mut n = with_phase(node(name), ProgressPhase::Completed);
    let p = n.progress.as_mut().unwrap();
    p.canary = true;
    p.reboot_approved = true;
    p.completed_at = Some(at);
    p.reported = Some(Outcome::Completed);
    n
}

#[test]
fn canary_batch_goes_first_then_soaks() {
    let nodes = vec![staged("a"), staged("b"), staged("c"), staged("d")];
    let p = plan(&obs(nodes, canary_strategy(1, 300, false)), now());
    assert_eq!(
        p.actions[..2],
        [
            Action::Cordon {
                node: "a".into(),
                canary: true,
                after: None,
            },
            Action::Drain { node: "a".into() }
        ]
    );
    assert_eq!(
        started(&p),
        ["a"],
        "only one canary although maxUnavailable is 3"
    );
    assert_eq!(p.reason.as_str(), "CanaryInProgress");

    let nodes = vec![
        completed_canary("a", now() - chrono::Duration::seconds(100)),
        staged("b"),
        staged("c"),
    ];
    let p = plan(&obs(nodes.clone(), canary_strategy(1, 300, false)), now());
    assert!(started(&p).is_empty());
    assert_eq!(p.reason.as_str(), "CanarySoaking");
    assert_eq!(p.requeue_after, Some(Duration::from_secs(200)));
    let p = plan(&obs(nodes, canary_strategy(1, 60, false)), now());
    assert_eq!(started(&p), ["b", "c"]);
    assert!(p.actions.contains(&Action::Cordon {
        node: "b".into(),
        canary: false,
        after: None,
    }));
}

#[test]
fn canary_waits_for_approval_when_required() {
    let nodes = vec![completed_canary("a", now()), staged("b")];
    let mut s = canary_strategy(1, 0, true);
    let p = plan(&obs(nodes.clone(), s.clone()), now());
    assert!(started(&p).is_empty());
    assert_eq!(p.reason.as_str(), "AwaitingCanaryApproval");
    s.canary.as_mut().unwrap().approved = true;
    assert_eq!(started(&plan(&obs(nodes, s), now())), ["b"]);
}

#[test]
fn a_canary_still_cordoned_has_not_passed() {
    let mut a = completed_canary("a", now() - chrono::Duration::hours(1));
    a.cordoned_by_us = true;
    a.unschedulable = true;
    a.ready = false;
    let p = plan(
        &obs(vec![a, staged("b")], canary_strategy(1, 0, false)),
        now(),
    );
    assert!(started(&p).is_empty());
    assert_eq!(p.canary, CanaryState::Running { passed: 0, of: 1 });
}

#[test]
fn a_failed_canary_is_replaced_when_failures_are_tolerated() {
    let mut f = with_phase(node("a"), ProgressPhase::RolledBack);
    f.progress.as_mut().unwrap().canary = true;
    f.progress.as_mut().unwrap().reported = Some(Outcome::RolledBack);
    let mut s = canary_strategy(1, 0, false);
    s.max_failures = 2;
    let p = plan(&obs(vec![f, staged("b"), staged("c")], s), now());
    assert_eq!(started(&p), ["b"]);
    assert!(p.actions.contains(&Action::Cordon {
        node: "b".into(),
        canary: true,
        after: None,
    }));
}

#[test]
fn claimed_nodes_are_left_alone() {
    let mut a = node("a");
    a.claimed_by = Some("older".into());
    let p = plan(&obs(vec![a.clone()], Strategy::default()), now());
    assert!(p.actions.is_empty());
    assert_eq!(p.phase, UpgradePhase::Pending);
    assert!(p.message.contains("older"), "{}", p.message);
    let p = plan(&obs(vec![a, node("b")], Strategy::default()), now());
    assert_eq!(created(&p), ["b"]);
}

#[test]
fn completed_when_every_node_is_done_and_released() {
    let mut nodes: Vec<NodeObs> = (0..3)
        .map(|i| completed_canary(&format!("n{i}"), now()))
        .collect();
    let mut rb = with_phase(node("rb"), ProgressPhase::RolledBack);
    rb.progress.as_mut().unwrap().reported = Some(Outcome::RolledBack);
    nodes.push(rb);
    let s = Strategy {
        max_failures: 2,
        ..Default::default()
    };
    let p = plan(&obs(nodes.clone(), s.clone()), now());
    assert_eq!(p.phase, UpgradePhase::Completed);
    assert_eq!(p.reason.as_str(), "CompletedWithFailures");
    assert_eq!(
        (p.counts.completed, p.counts.rolled_back, p.counts.total),
        (3, 1, 4)
    );
    assert!(p.message.contains("1 rolled back (rb)"), "{}", p.message);
    let ready = p.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(!ready.is_true(), "a node rolled back: not Ready");
    assert_eq!(ready.reason, "CompletedWithFailures");
    nodes.pop();
    let clean = plan(&obs(nodes.clone(), s.clone()), now());
    let ready = clean
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.is_true() && ready.reason == "AllNodesUpgraded",
        "{ready:?}"
    );
    nodes[0].cordoned_by_us = true;
    nodes[0].unschedulable = true;
    assert_eq!(
        plan(&obs(nodes, s), now()).phase,
        UpgradePhase::Progressing,
        "still cordoned: not done"
    );
}

#[test]
fn stale_cordons_are_released() {
    let mut a = with_phase(node("a"), ProgressPhase::Downloading);
    a.cordoned_by_us = true;
    a.unschedulable = true;
    let mut b = node("b");
    b.cordoned_by_us = true;
    b.unschedulable = true;
    let p = plan(&obs(vec![a, b], Strategy::default()), now());
    assert!(p.actions.contains(&Action::Uncordon {
        node: "a".into(),
        why: UncordonReason::Stale
    }));
    assert!(p.actions.contains(&Action::Uncordon {
        node: "b".into(),
        why: UncordonReason::Stale
    }));
}

#[test]
fn control_plane_and_own_node_go_last() {
    let mut cp = staged("cp");
    cp.control_plane = true;
    let nodes = vec![staged("own"), cp, staged("w")];
    let mut o = obs(nodes, strategy(Budget::Count(3)));
    o.own_node = Some("own".into());
    assert_eq!(started(&plan(&o, now())), ["w", "cp", "own"]);
}

#[test]
fn a_slot_freed_in_this_plan_is_reused_on_condition() {
    let mut a = completed_canary("a", now());
    a.progress.as_mut().unwrap().canary = false;
    a.cordoned_by_us = true;
    a.unschedulable = true;
    let p = plan(
        &obs(
            vec![a.clone(), staged("b"), staged("c")],
            Strategy::default(),
        ),
        now(),
    );
    assert_eq!(
        p.actions,
        [
            Action::Uncordon {
                node: "a".into(),
                why: UncordonReason::Completed
            },
            Action::Cordon {
                node: "b".into(),
                canary: false,
                after: Some("a".into())
            },
            Action::Drain { node: "b".into() },
        ]
    );
    // A released node that is not Ready stays disrupted and frees nothing.
    let mut f = with_phase(node("f"), ProgressPhase::Failed);
    f.cordoned_by_us = true;
    f.unschedulable = true;
    f.ready = false;
    f.progress.as_mut().unwrap().reported = Some(Outcome::Failed);
    let s = Strategy {
        max_failures: 5,
        ..Default::default()
    };
    let p = plan(&obs(vec![f, staged("b")], s), now());
    assert!(started(&p).is_empty(), "{:?}", p.actions);
}

#[test]
fn a_completed_external_round_spends_its_approval_and_a_new_round_is_planned_afresh() {
    let revoked = |n: &NodeObs| {
        plan(&obs(vec![n.clone()], Strategy::default()), now())
            .actions
            .contains(&Action::RevokeApproval { node: "a".into() })
    };
    let mut a = with_phase(node("a"), ProgressPhase::Completed);
    let p = a.progress.as_mut().unwrap();
    p.reboot_approved = true;
    p.reported = Some(Outcome::Completed);
    assert!(
        !revoked(&a),
        "an image update keeps its approval once Completed"
    );
    a.progress.as_mut().unwrap().external = true;
    assert!(
        revoked(&a),
        "an external round's approval ends with the round"
    );
    a.progress.as_mut().unwrap().unverified = Some(crate::verify::Unverified {
        reason: osroll_api::upgrade::UnverifiedReason::NotRebooted,
        detail: "same boot".into(),
    });
    assert!(
        !revoked(&a),
        "not rebooted: the round is not over, its approval stands"
    );
    a.progress.as_mut().unwrap().unverified = Some(crate::verify::Unverified {
        reason: osroll_api::upgrade::UnverifiedReason::RebootStillNeeded,
        detail: "label true".into(),
    });
    assert!(
        revoked(&a),
        "a new signal already shows: free the node for it"
    );

    // The agent's new round: Staged again, unapproved. Planned like any staged node,
    // within maxUnavailable.
    let mut again = with_phase(node("a"), ProgressPhase::Staged);
    again.progress.as_mut().unwrap().external = true;
    again.progress.as_mut().unwrap().reported = Some(Outcome::Completed);
    let mut busy = with_phase(node("b"), ProgressPhase::Staged);
    busy.progress.as_mut().unwrap().reboot_approved = true;
    busy.unschedulable = true;
    busy.cordoned_by_us = true;
    let cordons = |nodes: Vec<NodeObs>| {
        plan(&obs(nodes, Strategy::default()), now())
            .actions
            .iter()
            .any(|x| matches!(x, Action::Cordon { node, .. } if node == "a"))
    };
    assert!(cordons(vec![again.clone()]));
    assert!(
        !cordons(vec![again, busy]),
        "maxUnavailable 1 is taken by b"
    );
}
