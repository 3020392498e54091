//! Every phase of the deployment-backend decision.

use super::*;
use crate::machine::RolledBackRecord;
use osroll_api::OSUpgradeProgressStatus;
use osroll_api::progress::FailureReason;

fn image(v: &str) -> ImageRef {
    ImageRef {
        version: v.into(),
        url: "quay.io/os/node:".to_string() + v,
        checksum: "sha256:aa".into(),
        size: None,
        reboot_required: None,
        chunk_index: None,
    }
}

struct Case {
    spec: OSUpgradeProgressSpec,
    status: OSUpgradeProgressStatus,
    attempt: Option<ImageRef>,
    boot: &'static str,
    reboot_boot: Option<&'static str>,
    rolled_back: Vec<RolledBackRecord>,
}

impl Case {
    fn new(phase: Option<ProgressPhase>) -> Self {
        Case {
            spec: OSUpgradeProgressSpec {
                node_name: "n1".into(),
                image: Some(image("2.0")),
                ..Default::default()
            },
            status: OSUpgradeProgressStatus {
                phase,
                target_version: Some("2.0".into()),
                ..Default::default()
            },
            attempt: Some(image("2.0")),
            boot: "boot-1",
            reboot_boot: None,
            rolled_back: vec![],
        }
    }
    fn step(&self) -> Step<()> {
        let facts = BootFacts {
            boot_id: self.boot.into(),
            os_version: None,
        };
        next_step(&Input {
            spec: &self.spec,
            status: &self.status,
            attempt_image: self.attempt.as_ref(),
            facts: &facts,
            reboot_boot_id: self.reboot_boot,
            rolled_back: &self.rolled_back,
        })
    }
}

#[test]
fn a_new_progress_starts_then_stages() {
    assert_eq!(Case::new(None).step(), Step::Start { retry: false });
    assert_eq!(
        Case::new(Some(ProgressPhase::Pending)).step(),
        Step::Stage { into: () }
    );
    assert_eq!(
        Case::new(Some(ProgressPhase::Downloading)).step(),
        Step::Stage { into: () },
        "interrupted staging is staged again"
    );
}

#[test]
fn staged_waits_for_approval_then_applies() {
    let mut c = Case::new(Some(ProgressPhase::Staged));
    assert_eq!(c.step(), Step::AwaitApproval);
    c.spec.reboot_approved = true;
    assert_eq!(
        c.step(),
        Step::Apply {
            to: (),
            pre_hook: true
        }
    );
}

#[test]
fn applying_is_finished_even_if_the_spec_moved_on() {
    let mut c = Case::new(Some(ProgressPhase::Applying));
    c.spec.reboot_approved = false;
    c.spec.image = Some(image("3.0"));
    assert_eq!(
        c.step(),
        Step::Apply {
            to: (),
            pre_hook: false
        }
    );
}

#[test]
fn rebooting_in_the_same_boot_asks_again_or_unapproves() {
    let mut c = Case::new(Some(ProgressPhase::Rebooting));
    c.reboot_boot = Some("boot-1");
    c.spec.reboot_approved = true;
    assert_eq!(c.step(), Step::Reboot { to: () });
    c.spec.reboot_approved = false;
    assert_eq!(c.step(), Step::Withdraw);
}

#[test]
fn rebooting_after_a_new_boot_confirms() {
    let mut c = Case::new(Some(ProgressPhase::Rebooting));
    c.reboot_boot = Some("boot-0");
    assert_eq!(c.step(), Step::Confirm { on: () });
    c.reboot_boot = None;
    assert_eq!(c.step(), Step::Confirm { on: () }, "local record lost");
}

#[test]
fn pending_with_a_bad_version_fails_naming_the_field() {
    let mut c = Case::new(Some(ProgressPhase::Pending));
    c.spec.image = Some(image("not a version!"));
    c.attempt = c.spec.image.clone();
    c.status.target_version = Some("not a version!".into());
    match c.step() {
        Step::Finish(Failure {
            phase,
            reason,
            message,
        }) => {
            assert_eq!(
                (phase, reason),
                (ProgressPhase::Failed, FailureReason::InvalidSpec)
            );
            assert!(message.contains("spec.image.version"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_version_that_fell_back_is_not_tried_again_until_the_nonce_changes() {
    let mut c = Case::new(Some(ProgressPhase::Pending));
    c.rolled_back = vec![RolledBackRecord {
        version: "2.0".into(),
        checksum: "sha256:aa".into(),
        retry_nonce: None,
    }];
    assert!(matches!(
        c.step(),
        Step::Finish(Failure {
            phase: ProgressPhase::RolledBack,
            reason: FailureReason::PreviouslyRolledBack,
            ..
        })
    ));
    c.spec.retry_nonce = Some("again".into());
    assert_eq!(c.step(), Step::Stage { into: () });
}

#[test]
fn terminal_phases_idle_until_retry_or_new_target() {
    for phase in [
        ProgressPhase::Completed,
        ProgressPhase::Failed,
        ProgressPhase::RolledBack,
    ] {
        let mut c = Case::new(Some(phase));
        assert_eq!(c.step(), Step::Idle, "{phase:?}");
        c.spec.retry_nonce = Some("n".into());
        let want = if phase == ProgressPhase::Completed {
            Step::Idle
        } else {
            Step::Start { retry: true }
        };
        assert_eq!(c.step(), want, "{phase:?}");
        c.spec.retry_nonce = None;
        c.spec.image = Some(image("3.0"));
        assert_eq!(c.step(), Step::Start { retry: false }, "{phase:?}");
    }
}

#[test]
fn never_applies_or_reboots_without_approval() {
    use ProgressPhase::*;
    for phase in [
        None,
        Some(Pending),
        Some(Downloading),
        Some(Staged),
        Some(Rebooting),
        Some(Completed),
        Some(Failed),
    ] {
        for same_boot in [true, false] {
            let mut c = Case::new(phase);
            c.reboot_boot = Some(if same_boot { "boot-1" } else { "boot-0" });
            let s = c.step();
            assert!(
                !matches!(s, Step::Apply { .. } | Step::Reboot { .. }),
                "{phase:?} same_boot={same_boot}: {s:?}"
            );
        }
    }
}
