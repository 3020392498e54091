use serde_json::json;

use super::*;

fn node(labels: Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}})).unwrap()
}

fn progress(phase: &str, current: Option<&str>) -> OSUpgradeProgress {
    let mut status = json!({"phase": phase});
    if let Some(c) = current {
        status["currentVersion"] = json!(c);
    }
    serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgress",
        "metadata": {"name": "u-n1"},
        "spec": {"nodeName": "n1", "image": {"version": "2.0+b1", "url": "https://x/2", "checksum": format!("sha256:{}", "a".repeat(64))}},
        "status": status,
    }))
    .unwrap()
}

#[test]
fn live_updates_only_where_the_upgrade_asks_for_them() {
    assert!(!live_update_requested(None));
    assert!(!live_update_requested(Some(&json!({"channel": "stable"}))));
    assert!(!live_update_requested(Some(
        &json!({"ostree": {"rebootRequired": true}})
    )));
    assert!(!live_update_requested(Some(
        &json!({"ostree": {"rebootRequired": "false"}})
    )));
    assert!(live_update_requested(Some(
        &json!({"ostree": {"rebootRequired": false}})
    )));
    assert!(live_update_requested(Some(
        &json!({"rebootRequired": false})
    )));
}

#[test]
fn ab_nodes_are_known_by_their_slot_label() {
    assert!(is_ab_node(&node(json!({labels::SLOT: "B"}))));
    assert!(!is_ab_node(&node(json!({labels::SLOT: "ostree-0"}))));
    assert!(!is_ab_node(&node(json!({}))));
}

#[test]
fn a_completed_claim_must_agree_with_the_node() {
    let on_target = node(json!({labels::OS_VERSION: "2.0_b1"}));
    let on_old = node(json!({labels::OS_VERSION: "1.0"}));
    let unlabelled = node(json!({}));
    assert_eq!(
        check_completed(&progress("Completed", Some("2.0+b1")), &on_target),
        None
    );
    assert_eq!(
        check_completed(&progress("Completed", None), &unlabelled),
        None
    );
    // Not Completed: nothing to check.
    assert_eq!(
        check_completed(&progress("Staged", Some("1.0")), &on_old),
        None
    );
    let label = check_completed(&progress("Completed", Some("2.0+b1")), &on_old).unwrap();
    assert_eq!(label.reason, UnverifiedReason::NodeLabelMismatch);
    assert!(label.detail.contains("\"1.0\""), "{}", label.detail);
    let reported = check_completed(&progress("Completed", Some("1.0")), &on_target).unwrap();
    assert_eq!(reported.reason, UnverifiedReason::ReportedVersionMismatch);
}
