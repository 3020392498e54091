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

#[test]
fn a_reboot_that_was_approved_must_have_happened() {
    let booted = |id: &str| -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {labels::OS_VERSION: "2.0_b1"}},
            "status": {"nodeInfo": {"bootID": id, "machineID": "", "systemUUID": "", "kernelVersion": "",
                "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64"}},
        }))
        .unwrap()
    };
    let mut p = progress("Completed", Some("2.0+b1"));
    // No reboot recorded (a live update, or a node without a boot ID): nothing to check.
    assert_eq!(check_completed(&p, &booted("boot-1")), None);
    p.metadata.annotations = Some(
        [(
            marks::APPROVED_BOOT.to_string(),
            marks::tagged("boot-1", None),
        )]
        .into(),
    );
    let same = check_completed(&p, &booted("boot-1")).unwrap();
    assert_eq!(same.reason, UnverifiedReason::NotRebooted);
    assert!(same.detail.contains("boot-1"), "{}", same.detail);
    assert_eq!(check_completed(&p, &booted("boot-2")), None);
    // A record of an earlier attempt says nothing about a retry.
    p.spec.retry_nonce = Some("r2".into());
    assert_eq!(check_completed(&p, &booted("boot-1")), None);
}

#[test]
fn an_external_reboot_needs_a_new_boot_and_a_cleared_signal_but_no_version() {
    let node = |boot: &str, needed: &str| -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {labels::OS_VERSION: "1.0", labels::REBOOT_NEEDED: needed}},
            "status": {"nodeInfo": {"bootID": boot, "machineID": "", "systemUUID": "", "kernelVersion": "",
                "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64"}},
        }))
        .unwrap()
    };
    let mut p = progress("Completed", Some("1.0"));
    p.spec.image = None;
    p.spec.external = Some(osroll_api::ExternalReboots {});
    p.metadata.annotations = Some(
        [(
            marks::APPROVED_BOOT.to_string(),
            marks::tagged("boot-1", None),
        )]
        .into(),
    );
    assert_eq!(check_completed(&p, &node("boot-2", "false")), None);
    let same = check_completed(&p, &node("boot-1", "false")).unwrap();
    assert_eq!(same.reason, UnverifiedReason::NotRebooted);
    let still = check_completed(&p, &node("boot-2", "true")).unwrap();
    assert_eq!(still.reason, UnverifiedReason::RebootStillNeeded);
}

#[test]
fn a_reboot_is_expected_unless_a_non_ab_node_reported_a_live_update() {
    let mut p = progress("Staged", None);
    let ab = node(json!({labels::SLOT: "A"}));
    let other = node(json!({}));
    assert!(
        expects_reboot(&p, &other),
        "no word from the agent: a reboot"
    );
    p.status.as_mut().unwrap().reboot_required = Some(false);
    assert!(!expects_reboot(&p, &other));
    assert!(expects_reboot(&p, &ab), "an A/B node always reboots");
}
