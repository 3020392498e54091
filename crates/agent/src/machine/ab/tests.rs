use super::*;
use crate::machine::{Input, RolledBackRecord};
use osroll_api::OSUpgradeProgressStatus;

const SUM: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn image(v: &str) -> ImageRef {
    ImageRef {
        version: v.into(),
        url: "http://127.0.0.1:1/img.zst".into(),
        checksum: SUM.into(),
        size: Some(1000),
        reboot_required: None,
        chunk_index: None,
    }
}

fn spec() -> OSUpgradeProgressSpec {
    OSUpgradeProgressSpec {
        node_name: "n1".into(),
        image: Some(image("v2")),
        ..Default::default()
    }
}

fn status(phase: ProgressPhase, slot: &str) -> OSUpgradeProgressStatus {
    OSUpgradeProgressStatus {
        phase: Some(phase),
        target_version: Some("v2".into()),
        current_version: Some("v1".into()),
        inactive_partition: Some(slot.into()),
        ..Default::default()
    }
}

fn facts(slot: Slot, version: &str, boot: &str) -> HostFacts {
    HostFacts {
        booted_slot: slot,
        os_version: Some(version.into()),
        boot_id: boot.into(),
    }
}

struct Case {
    spec: OSUpgradeProgressSpec,
    status: OSUpgradeProgressStatus,
    attempt: Option<ImageRef>,
    facts: HostFacts,
    reboot_boot_id: Option<String>,
    rolled_back: Vec<RolledBackRecord>,
}

impl Case {
    fn new(status: OSUpgradeProgressStatus) -> Self {
        Case {
            spec: spec(),
            status,
            attempt: Some(image("v2")),
            facts: facts(Slot::A, "v1", "boot-1"),
            reboot_boot_id: None,
            rolled_back: vec![],
        }
    }
    fn step(&self) -> Step<Slot> {
        next_step(&Input {
            spec: &self.spec,
            status: &self.status,
            attempt_image: self.attempt.as_ref(),
            facts: &self.facts,
            reboot_boot_id: self.reboot_boot_id.as_deref(),
            rolled_back: &self.rolled_back,
        })
    }
}

fn reason(step: Step<Slot>) -> (ProgressPhase, FailureReason, String) {
    match step {
        Step::Finish(Failure {
            phase,
            reason,
            message,
        }) => (phase, reason, message),
        other => panic!("expected Finish, got {other:?}"),
    }
}

#[test]
fn no_status_starts_an_attempt() {
    assert_eq!(
        Case::new(OSUpgradeProgressStatus::default()).step(),
        Step::Start { retry: false }
    );
}

#[test]
fn pending_installs_into_the_other_slot() {
    let mut c = Case::new(status(ProgressPhase::Pending, "B"));
    assert_eq!(c.step(), Step::Stage { into: Slot::B });
    c.facts.booted_slot = Slot::B;
    assert_eq!(c.step(), Step::Stage { into: Slot::A });
}

#[test]
fn pending_on_a_node_already_running_the_target_completes() {
    let mut c = Case::new(status(ProgressPhase::Pending, "B"));
    c.facts.os_version = Some("v2".into());
    assert_eq!(
        c.step(),
        Step::AlreadyCurrent {
            message: "node already runs v2 from slot A; nothing to install".into()
        }
    );
}

#[test]
fn pending_with_an_invalid_spec_fails_naming_the_field() {
    type Mutation = Box<dyn Fn(&mut ImageRef)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|i| i.checksum = "sha256:abc".into()),
            "spec.image.checksum",
        ),
        (
            Box::new(|i| i.version = "latest!".into()),
            "spec.image.version",
        ),
        (Box::new(|i| i.url = "ftp://x/y".into()), "spec.image.url"),
        (Box::new(|i| i.url = "not a url".into()), "spec.image.url"),
        (Box::new(|i| i.size = Some(0)), "spec.image.size"),
    ];
    for (mutate, field) in cases {
        let mut c = Case::new(status(ProgressPhase::Pending, "B"));
        let mut img = image("v2");
        mutate(&mut img);
        c.status.target_version = Some(img.version.clone());
        c.spec.image = Some(img.clone());
        c.attempt = Some(img);
        let (phase, reason, msg) = reason(c.step());
        assert_eq!(
            (phase, reason),
            (ProgressPhase::Failed, FailureReason::InvalidSpec)
        );
        assert!(msg.contains(field), "{msg}");
    }
    let mut c = Case::new(status(ProgressPhase::Pending, "B"));
    c.spec.image = None;
    assert!(reason(c.step()).2.contains("spec.image is missing"));
}

#[test]
fn pending_refuses_a_version_that_rolled_back_until_the_nonce_changes() {
    let mut c = Case::new(status(ProgressPhase::Pending, "B"));
    c.rolled_back = vec![RolledBackRecord {
        version: "v2".into(),
        checksum: SUM.into(),
        retry_nonce: None,
    }];
    let (phase, reason, msg) = reason(c.step());
    assert_eq!(
        (phase, reason),
        (
            ProgressPhase::RolledBack,
            FailureReason::PreviouslyRolledBack
        )
    );
    assert!(msg.contains("v2") && msg.contains("retryNonce"), "{msg}");
    c.spec.retry_nonce = Some("again".into());
    assert_eq!(c.step(), Step::Stage { into: Slot::B });
}

#[test]
fn interrupted_staging_resumes_installing_the_same_slot() {
    for phase in [
        ProgressPhase::Downloading,
        ProgressPhase::Writing,
        ProgressPhase::Verifying,
    ] {
        let c = Case::new(status(phase, "B"));
        assert_eq!(c.step(), Step::Stage { into: Slot::B }, "{phase:?}");
    }
}

#[test]
fn staging_restarts_if_the_node_now_runs_the_slot_being_written() {
    let mut c = Case::new(status(ProgressPhase::Downloading, "B"));
    c.facts.booted_slot = Slot::B;
    assert_eq!(c.step(), Step::Start { retry: false });
    c.status.inactive_partition = None;
    c.facts.booted_slot = Slot::A;
    assert_eq!(c.step(), Step::Start { retry: false });
}

#[test]
fn staged_waits_for_approval_then_reboots() {
    let mut c = Case::new(status(ProgressPhase::Staged, "B"));
    assert_eq!(c.step(), Step::AwaitApproval);
    c.spec.reboot_approved = true;
    assert_eq!(
        c.step(),
        Step::Apply {
            to: Slot::B,
            pre_hook: true
        }
    );
    c.status.phase = Some(ProgressPhase::Applying);
    assert_eq!(
        c.step(),
        Step::Apply {
            to: Slot::B,
            pre_hook: false
        }
    );
    c.spec.reboot_approved = false;
    assert_eq!(
        c.step(),
        Step::AwaitApproval,
        "A/B never applies unapproved"
    );
}

#[test]
fn staged_but_already_booted_into_the_new_slot_commits() {
    let mut c = Case::new(status(ProgressPhase::Staged, "B"));
    c.facts = facts(Slot::B, "v2", "boot-2");
    assert_eq!(c.step(), Step::Confirm { on: Slot::B });
    c.facts.os_version = Some("v0".into());
    assert_eq!(
        c.step(),
        Step::Start { retry: false },
        "staged slot is now running another version"
    );
}

#[test]
fn rebooting_in_the_same_boot_reboots_again_or_disarms() {
    let mut c = Case::new(status(ProgressPhase::Rebooting, "B"));
    c.reboot_boot_id = Some("boot-1".into());
    c.spec.reboot_approved = true;
    assert_eq!(c.step(), Step::Reboot { to: Slot::B });
    c.spec.reboot_approved = false;
    assert_eq!(c.step(), Step::Withdraw);
}

#[test]
fn rebooting_after_a_boot_into_the_target_commits() {
    let mut c = Case::new(status(ProgressPhase::Rebooting, "B"));
    c.reboot_boot_id = Some("boot-1".into());
    c.facts = facts(Slot::B, "v2", "boot-2");
    assert_eq!(c.step(), Step::Confirm { on: Slot::B });
    // Approval withdrawn after the reboot happened changes nothing.
    c.spec.reboot_approved = false;
    assert_eq!(c.step(), Step::Confirm { on: Slot::B });
    // Local record lost: judged by the facts alone.
    c.reboot_boot_id = None;
    assert_eq!(c.step(), Step::Confirm { on: Slot::B });
}

#[test]
fn rebooting_back_on_the_old_slot_rolls_back() {
    let mut c = Case::new(status(ProgressPhase::Rebooting, "B"));
    c.reboot_boot_id = Some("boot-1".into());
    c.facts = facts(Slot::A, "v1", "boot-2");
    assert_eq!(
        c.step(),
        Step::RollBack {
            booted: Slot::A,
            tried: Slot::B,
            failure: Failure::rolled_back(
                FailureReason::BootFallback,
                "tried slot B once but the node came back on slot A; v2 will not be tried again until spec.retryNonce changes"
            ),
        }
    );
}

#[test]
fn rebooting_into_the_new_slot_with_the_wrong_version_fails() {
    let mut c = Case::new(status(ProgressPhase::Rebooting, "B"));
    c.facts = facts(Slot::B, "v9", "boot-2");
    let (phase, why, msg) = reason(c.step());
    assert_eq!(
        (phase, why),
        (ProgressPhase::Failed, FailureReason::VersionMismatch)
    );
    assert!(msg.contains("v9") && msg.contains("v2"), "{msg}");
    c.facts.os_version = None;
    assert!(reason_of(&c).contains("(none)"));
    c.status.inactive_partition = Some("Q".into());
    assert_eq!(reason(c.step()).1, "InvalidStatus");
}

fn reason_of(c: &Case) -> String {
    reason(c.step()).2
}

#[test]
fn rebooting_ignores_spec_changes_until_resolved() {
    let mut c = Case::new(status(ProgressPhase::Rebooting, "B"));
    c.spec.image = Some(image("v3"));
    c.facts = facts(Slot::B, "v2", "boot-2");
    assert_eq!(c.step(), Step::Confirm { on: Slot::B });
}

#[test]
fn terminal_phases_are_idle_until_the_nonce_changes() {
    for phase in [
        ProgressPhase::Completed,
        ProgressPhase::Failed,
        ProgressPhase::RolledBack,
    ] {
        let mut c = Case::new(status(phase, "B"));
        assert_eq!(c.step(), Step::Idle, "{phase:?}");
        c.spec.retry_nonce = Some("n1".into());
        let expected = if phase == ProgressPhase::Completed {
            Step::Idle
        } else {
            Step::Start { retry: true }
        };
        assert_eq!(c.step(), expected, "{phase:?}");
        c.status.observed_retry_nonce = Some("n1".into());
        assert_eq!(
            c.step(),
            Step::Idle,
            "{phase:?} after the nonce was observed"
        );
    }
}

#[test]
fn a_changed_target_restarts_any_phase_but_rebooting() {
    for phase in [
        ProgressPhase::Pending,
        ProgressPhase::Downloading,
        ProgressPhase::Staged,
        ProgressPhase::Completed,
        ProgressPhase::Failed,
    ] {
        let mut c = Case::new(status(phase, "B"));
        c.spec.image = Some(image("v3"));
        assert_eq!(c.step(), Step::Start { retry: false }, "{phase:?}");
        // Same version, different checksum: also a different target.
        let mut c = Case::new(status(phase, "B"));
        let mut img = image("v2");
        img.checksum = SUM.replace('1', "2");
        c.spec.image = Some(img);
        assert_eq!(c.step(), Step::Start { retry: false }, "{phase:?}");
    }
}

#[test]
fn a_spec_without_image_does_not_loop() {
    let mut c = Case::new(status(ProgressPhase::Failed, "B"));
    c.spec.image = None;
    c.status.target_version = None;
    assert_eq!(c.step(), Step::Idle);
}

#[test]
fn a_deleted_progress_withdraws_an_armed_try_or_keeps_a_booted_target() {
    let mut st = status(ProgressPhase::Rebooting, "B");
    let before = facts(Slot::A, "v1", "boot-1");
    assert_eq!(on_deleted(&st, Some("boot-1"), &before), Deleted::Withdraw);
    let after = facts(Slot::B, "v2", "boot-2");
    assert_eq!(
        on_deleted(&st, Some("boot-1"), &after),
        Deleted::Keep { on: Slot::B }
    );
    let fell_back = facts(Slot::A, "v1", "boot-2");
    assert_eq!(on_deleted(&st, Some("boot-1"), &fell_back), Deleted::Forget);
    let wrong = facts(Slot::B, "v9", "boot-2");
    assert_eq!(on_deleted(&st, None, &wrong), Deleted::Forget);
    st.phase = Some(ProgressPhase::Staged);
    assert_eq!(on_deleted(&st, Some("boot-1"), &before), Deleted::Forget);
}
