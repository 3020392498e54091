//! Every phase of an external update's decision, and the rule that a signal surviving
//! the reboot ends the attempt instead of rebooting again.

use super::*;
use crate::machine::BootFacts;
use osroll_api::upgrade::ExternalReboots;
use osroll_api::{OSUpgradeProgressSpec, OSUpgradeProgressStatus, RebootSource};

fn signal(detail: &str) -> RebootSignal {
    RebootSignal {
        source: RebootSource::SentinelFile,
        detail: detail.into(),
        version: None,
    }
}

struct Case {
    spec: OSUpgradeProgressSpec,
    status: OSUpgradeProgressStatus,
    boot: &'static str,
    reboot_boot: Option<&'static str>,
}

impl Case {
    fn new(phase: Option<ProgressPhase>) -> Self {
        Case {
            spec: OSUpgradeProgressSpec {
                node_name: "n1".into(),
                external: Some(ExternalReboots {}),
                ..Default::default()
            },
            status: OSUpgradeProgressStatus {
                phase,
                ..Default::default()
            },
            boot: "boot-1",
            reboot_boot: None,
        }
    }

    fn step(&self, signal: Signal) -> Step<()> {
        let facts = BootFacts {
            boot_id: self.boot.into(),
            os_version: Some("1.0".into()),
        };
        next_step(
            &Input {
                spec: &self.spec,
                status: &self.status,
                attempt_image: None,
                facts: &facts,
                reboot_boot_id: self.reboot_boot,
                rolled_back: &[],
            },
            &signal,
        )
    }
}

fn ext(s: ExternalStep) -> Step<()> {
    Step::External(s)
}

#[test]
fn a_node_without_a_signal_waits_in_pending_and_is_never_rebooted() {
    let c = Case::new(None);
    assert_eq!(c.step(Ok(None)), ext(ExternalStep::Start { retry: false }));
    let mut c = Case::new(Some(ProgressPhase::Pending));
    assert_eq!(c.step(Ok(None)), Step::Idle);
    assert_eq!(c.step(Err("dbus down".into())), Step::Idle);
    c.spec.reboot_approved = true;
    assert_eq!(
        c.step(Ok(None)),
        Step::Idle,
        "approval alone reboots nothing"
    );
}

#[test]
fn a_signal_stages_and_its_approval_reboots() {
    let s = signal("/run/reboot-required exists");
    let mut c = Case::new(Some(ProgressPhase::Pending));
    assert_eq!(
        c.step(Ok(Some(s.clone()))),
        ext(ExternalStep::Signalled(s.clone()))
    );
    c.status.phase = Some(ProgressPhase::Staged);
    c.status.reboot_needed = Some(s.clone());
    assert_eq!(c.step(Ok(Some(s.clone()))), Step::AwaitApproval);
    let other = signal("another");
    assert_eq!(
        c.step(Ok(Some(other.clone()))),
        ext(ExternalStep::Signalled(other))
    );
    assert_eq!(c.step(Ok(None)), ext(ExternalStep::Cleared));
    c.spec.reboot_approved = true;
    assert_eq!(c.step(Ok(Some(s))), ext(ExternalStep::Reboot));
}

#[test]
fn after_the_boot_a_cleared_signal_completes_and_a_present_one_fails() {
    let mut c = Case::new(Some(ProgressPhase::Rebooting));
    c.spec.reboot_approved = true;
    c.reboot_boot = Some("boot-1");
    assert_eq!(
        c.step(Ok(None)),
        ext(ExternalStep::Reboot),
        "still the boot the reboot was asked in"
    );
    c.boot = "boot-2";
    assert_eq!(c.step(Ok(None)), ext(ExternalStep::Complete));
    assert_eq!(c.step(Err("dbus not up yet".into())), Step::Idle);
    match c.step(Ok(Some(signal("/run/reboot-required exists")))) {
        Step::Finish(f) => {
            assert_eq!(f.reason, FailureReason::RebootStillNeeded);
            assert_eq!(f.phase, ProgressPhase::Failed);
            assert!(f.message.contains("/run/reboot-required"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_attempt_is_not_rebooted_again_until_the_nonce_changes() {
    let mut c = Case::new(Some(ProgressPhase::Failed));
    c.spec.reboot_approved = true;
    let s = Ok(Some(signal("still there")));
    assert_eq!(c.step(s.clone()), Step::Idle);
    c.spec.retry_nonce = Some("2".into());
    assert_eq!(c.step(s), ext(ExternalStep::Start { retry: true }));
}

#[test]
fn phases_an_external_update_never_has_end_it() {
    for p in [
        ProgressPhase::Downloading,
        ProgressPhase::Writing,
        ProgressPhase::Verifying,
        ProgressPhase::Applying,
    ] {
        let c = Case::new(Some(p));
        assert!(
            matches!(c.step(Ok(None)), Step::Finish(f) if f.reason == FailureReason::InvalidStatus),
            "{p}"
        );
    }
}

#[test]
fn a_signal_after_completion_starts_a_new_round_once_the_approval_is_withdrawn() {
    let s = signal("/run/reboot-required exists again");
    let mut c = Case::new(Some(ProgressPhase::Completed));
    assert_eq!(c.step(Ok(None)), Step::Idle, "no signal: stays Completed");
    c.spec.reboot_approved = true;
    assert_eq!(
        c.step(Ok(Some(s.clone()))),
        Step::Idle,
        "the last round's approval still stands: wait, never reboot on it"
    );
    c.spec.reboot_approved = false;
    assert_eq!(c.step(Err("dbus down".into())), Step::Idle);
    assert_eq!(c.step(Ok(Some(s.clone()))), ext(ExternalStep::NewRound(s)));
}

proptest::proptest! {
    /// From a finished attempt the only way out without a nonce change is a new round,
    /// and only from Completed with no approval standing and a signal present; a
    /// finished attempt never reboots directly.
    #[test]
    fn a_finished_attempt_only_leaves_by_a_new_round_from_completed(
        failed in proptest::bool::ANY,
        approved in proptest::bool::ANY,
        signalled in proptest::bool::ANY,
        rebooted in proptest::bool::ANY,
    ) {
        let phase = if failed { ProgressPhase::Failed } else { ProgressPhase::Completed };
        let mut c = Case::new(Some(phase));
        c.spec.reboot_approved = approved;
        c.reboot_boot = rebooted.then_some("boot-0");
        let sig = signalled.then(|| signal("present"));
        let step = c.step(Ok(sig.clone()));
        let expected = match sig {
            Some(s) if !failed && !approved => ext(ExternalStep::NewRound(s)),
            _ => Step::Idle,
        };
        proptest::prop_assert_eq!(step, expected);
    }
}
