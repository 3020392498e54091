//! The OSUpgrade status built from plans, rejections and waits.

use super::*;
use osroll_api::CatalogProblem;
use osroll_api::ImageRef;
use osroll_api::conditions::find;

use crate::planner::{NodeObs, Observed, plan};

fn resolved(warnings: usize) -> Resolved {
    Resolved {
        image: ImageRef {
            version: "2.0".into(),
            ..Default::default()
        },
        os_version_management: None,
        serial: None,
        earlier: Vec::new(),
        warnings: (0..warnings)
            .map(|i| CatalogProblem {
                field: format!("images[{i}].checksum"),
                index: Some(i),
                version: Some("1.0".into()),
                message: "bad".into(),
            })
            .collect(),
        digest: "sha256:d".into(),
        signed: None,
        origin: "inline".into(),
    }
}

#[test]
fn planned_status_carries_counts_conditions_and_generation() {
    let obs = Observed {
        nodes: vec![NodeObs {
            name: "a".into(),
            ready: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let p = plan(&obs, chrono::Utc::now());
    let r = resolved(1);
    let st = build(
        None,
        Some(3),
        "t1",
        Verdict::Planned {
            plan: &p,
            resolved: &r,
            notes: vec!["draining x: y"],
        },
    );
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(st.resolved_version.as_deref(), Some("2.0"));
    assert_eq!(st.nodes.as_ref().unwrap().total, 1);
    assert!(st.message.as_deref().unwrap().ends_with("; draining x: y"));
    for t in ["Ready", "Progressing", "Degraded", "CatalogWarnings"] {
        let c = find(&st.conditions, t).unwrap_or_else(|| panic!("{t} missing"));
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time.as_deref(), Some("t1"));
    }
    assert!(
        find(&st.conditions, "CatalogWarnings")
            .unwrap()
            .message
            .contains("images[0].checksum")
    );
    // Same decision later: transition times stay, so the status compares equal.
    let again = build(
        Some(&st),
        Some(3),
        "t2",
        Verdict::Planned {
            plan: &p,
            resolved: &r,
            notes: vec!["draining x: y"],
        },
    );
    assert_eq!(again, st);
}

#[test]
fn rejection_and_waiting() {
    let st = build(
        None,
        Some(1),
        "t",
        Verdict::Rejected {
            reason: "VersionBlocked",
            message: "version \"2\" is blocked",
        },
    );
    assert_eq!(st.phase, Some(UpgradePhase::Rejected));
    assert_eq!(st.reason.as_deref(), Some("VersionBlocked"));
    assert!(!find(&st.conditions, "Ready").unwrap().is_true());
    let b = Blocker {
        upgrade: "older".into(),
        nodes: vec!["n1".into()],
    };
    let st = build(Some(&st), Some(2), "t", Verdict::Waiting(&b));
    assert_eq!(st.phase, Some(UpgradePhase::Pending));
    let c = find(&st.conditions, "Progressing").unwrap();
    assert_eq!(c.reason, "WaitingForOtherUpgrade");
    assert!(
        c.message.contains("older") && c.message.contains("n1"),
        "{}",
        c.message
    );
}
