use super::*;
use osroll_api::conditions::find;
use osroll_api::progress::FailureReason;

use crate::slot::Slot;

/// How an A/B backend begins on a node running v1 from slot A.
fn facts() -> Begin {
    Begin {
        current_version: Some("v1".into()),
        inactive_partition: Some(Slot::B),
        reboot_required: Some(true),
        message: None,
    }
}

fn img() -> ImageRef {
    ImageRef {
        version: "v2".into(),
        url: "http://x/i".into(),
        checksum: "sha256:00".into(),
        size: None,
        reboot_required: None,
        chunk_index: None,
    }
}

#[test]
fn start_fills_the_attempt_and_counts_retries() {
    let prev = failed(
        &OSUpgradeProgressStatus {
            retry_count: 2,
            ..Default::default()
        },
        &Failure::new(FailureReason::NetworkError, "x"),
        "t0",
    );
    let s = start(&prev, Some(&img()), Some("n"), &facts(), true, "t1");
    assert_eq!(s.phase, Some(ProgressPhase::Pending));
    assert_eq!(s.retry_count, 3);
    assert_eq!(s.inactive_partition.as_deref(), Some("B"));
    assert_eq!(s.current_version.as_deref(), Some("v1"));
    assert_eq!(s.target_version.as_deref(), Some("v2"));
    assert_eq!(s.observed_retry_nonce.as_deref(), Some("n"));
    assert_eq!(
        (s.failure_reason.as_ref(), s.completed_at.as_ref()),
        (None, None)
    );
    assert!(!find(&s.conditions, FAILED).unwrap().is_true());
    assert_eq!(
        start(&prev, Some(&img()), None, &facts(), false, "t1").retry_count,
        2
    );
}

#[test]
fn staged_completed_and_rolled_back_set_conditions() {
    let s0 = start(
        &OSUpgradeProgressStatus::default(),
        Some(&img()),
        None,
        &facts(),
        false,
        "t0",
    );
    let ready = Ready {
        reboot_required: true,
        current_version: None,
        bytes: Some(10),
        condition: "Verified",
        message: "100 bytes written to slot B and verified".into(),
        delta: None,
    };
    let s1 = staged(&bytes(&s0, 5, Some(10), "t1"), &ready, "t2");
    assert_eq!(s1.phase, Some(ProgressPhase::Staged));
    assert_eq!(s1.bytes_done, Some(10));
    assert!(find(&s1.conditions, STAGED).unwrap().is_true());
    assert_eq!(find(&s1.conditions, STAGED).unwrap().reason, "Verified");
    let s2 = phase(&s1, ProgressPhase::Rebooting, "rebooting", "t3");
    assert!(
        find(&s2.conditions, STAGED).unwrap().is_true(),
        "still staged while rebooting"
    );
    let s3 = completed(&s2, Some("v2".into()), "done".into(), "t4");
    assert_eq!(
        (s3.phase, s3.current_version.as_deref()),
        (Some(ProgressPhase::Completed), Some("v2"))
    );
    assert!(find(&s3.conditions, BOOTED).unwrap().is_true());
    let r = failed(
        &s2,
        &Failure::rolled_back(FailureReason::BootFallback, "fell back"),
        "t4",
    );
    assert_eq!(r.failure_reason.as_deref(), Some("BootFallback"));
    assert!(find(&r.conditions, FAILED).unwrap().is_true());
    assert_eq!(find(&r.conditions, BOOTED).unwrap().reason, "BootFallback");
}

#[test]
fn merge_patch_nulls_cleared_fields() {
    let s = OSUpgradeProgressStatus {
        phase: Some(ProgressPhase::Pending),
        ..Default::default()
    };
    let p = merge_patch(&s);
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(p["status"]["failureReason"].is_null() && p["status"].get("failureReason").is_some());
    assert_eq!(p["status"]["conditions"], serde_json::json!([]));
    assert_eq!(p["status"]["retryCount"], 0);
}

#[test]
fn ready_is_true_only_on_the_target() {
    let ready = |s: &OSUpgradeProgressStatus| {
        let c = find(&s.conditions, READY).expect("every status carries Ready");
        (c.is_true(), c.reason.clone())
    };
    let s0 = start(
        &OSUpgradeProgressStatus::default(),
        Some(&img()),
        None,
        &facts(),
        false,
        "t0",
    );
    assert_eq!(ready(&s0), (false, "Pending".into()));
    let s1 = phase(&s0, ProgressPhase::Downloading, "downloading", "t1");
    assert_eq!(ready(&s1), (false, "Downloading".into()));
    let done = completed(&s1, Some("v2".into()), "done".into(), "t2");
    assert_eq!(ready(&done), (true, "Completed".into()));
    let f = failed(
        &s1,
        &Failure::new(FailureReason::ChecksumMismatch, "bad"),
        "t2",
    );
    assert_eq!(ready(&f), (false, "Failed".into()));
    let rb = failed(
        &s1,
        &Failure::rolled_back(FailureReason::BootFallback, "fell back"),
        "t2",
    );
    assert_eq!(ready(&rb), (false, "RolledBack".into()));
    // A retry after completion is not Ready until it completes again.
    let again = start(&done, Some(&img()), Some("n"), &facts(), true, "t3");
    assert_eq!(ready(&again), (false, "Pending".into()));
}
