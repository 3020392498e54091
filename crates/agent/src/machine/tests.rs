//! The safety invariants, property-tested over every backend kind's machine with the
//! same arbitrary combinations of spec, status, running system and memory.

use std::fmt::Debug;

use osroll_api::ProgressPhase::{self, *};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::slot::Slot;

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

fn arb_phase() -> impl Strategy<Value = Option<ProgressPhase>> {
    prop::sample::select(
        std::iter::once(None)
            .chain(ProgressPhase::ALL.into_iter().map(Some))
            .collect::<Vec<_>>(),
    )
}

fn arb_slot() -> impl Strategy<Value = Slot> {
    prop::sample::select(vec![Slot::A, Slot::B])
}

fn arb_version() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(vec![
        None,
        Some("v1".to_string()),
        Some("v2".to_string()),
        Some("v3".to_string()),
    ])
}

fn arb_nonce() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["a".to_string(), "b".to_string()]))
}

/// One arbitrary situation, seen by either kind of machine.
#[derive(Debug)]
struct World {
    spec: OSUpgradeProgressSpec,
    status: OSUpgradeProgressStatus,
    attempt: Option<ImageRef>,
    booted: Slot,
    running: Option<String>,
    same_boot: bool,
    rolled_back: Vec<RolledBackRecord>,
}

impl World {
    fn input<'a, F>(&'a self, facts: &'a F) -> Input<'a, F> {
        Input {
            spec: &self.spec,
            status: &self.status,
            attempt_image: self.attempt.as_ref(),
            facts,
            reboot_boot_id: Some(if self.same_boot { "now" } else { "before" }),
            rolled_back: &self.rolled_back,
        }
    }

    fn phase(&self) -> Option<ProgressPhase> {
        self.status.phase
    }

    /// Whether the spec's image fell back on this node under the spec's nonce.
    fn fell_back_before(&self) -> bool {
        self.spec.image.as_ref().is_some_and(|img| {
            self.rolled_back.iter().any(|r| {
                r.version == img.version
                    && r.checksum == img.checksum
                    && r.retry_nonce == self.spec.retry_nonce
            })
        })
    }
}

prop_compose! {
    fn arb_world()(
        phase in arb_phase(),
        inactive in prop::option::of(arb_slot()),
        target in arb_version(),
        spec_version in arb_version(),
        running in arb_version(),
        booted in arb_slot(),
        approved in any::<bool>(),
        same_boot in any::<bool>(),
        nonce in arb_nonce(),
        observed in arb_nonce(),
        fell_back in prop::option::of(arb_nonce()),
    ) -> World {
        World {
            spec: OSUpgradeProgressSpec {
                node_name: "n".into(),
                image: spec_version.as_deref().map(image),
                retry_nonce: nonce,
                reboot_approved: approved,
                ..Default::default()
            },
            status: OSUpgradeProgressStatus {
                phase,
                target_version: target.clone(),
                inactive_partition: inactive.map(|s| s.to_string()),
                observed_retry_nonce: observed,
                ..Default::default()
            },
            attempt: target.as_deref().map(image),
            booted,
            running,
            same_boot,
            // v2 fell back once, under this nonce.
            rolled_back: fell_back
                .map(|retry_nonce| RolledBackRecord {
                    version: "v2".into(),
                    checksum: SUM.into(),
                    retry_nonce,
                })
                .into_iter()
                .collect(),
        }
    }
}

/// What every machine respects, whatever its backend kind.
fn common_invariants<P: Debug>(w: &World, step: &Step<P>) -> Result<(), TestCaseError> {
    let phase = w.phase();
    let approved = w.spec.reboot_approved;
    match step {
        Step::Apply { pre_hook, .. } => {
            prop_assert!(
                approved || phase == Some(Applying),
                "apply only when approved, or to finish an apply under way"
            );
            prop_assert!(matches!(phase, Some(Staged | Applying)));
            prop_assert_eq!(*pre_hook, phase == Some(Staged), "the hook runs once");
        }
        Step::Reboot { .. } => {
            prop_assert!(approved, "reboot only when approved");
            prop_assert!(phase == Some(Rebooting) && w.same_boot);
        }
        Step::Withdraw => {
            prop_assert!(!approved && phase == Some(Rebooting) && w.same_boot);
        }
        Step::Confirm { .. } => {
            prop_assert!(
                matches!(phase, Some(Staged | Applying))
                    || phase == Some(Rebooting) && !w.same_boot,
                "confirm only what may have booted"
            );
        }
        Step::RollBack { failure, .. } => {
            prop_assert_eq!(phase, Some(Rebooting));
            prop_assert!(!w.same_boot);
            prop_assert_eq!(failure.phase, RolledBack);
        }
        Step::Start { retry: true } => {
            prop_assert!(matches!(phase, Some(Failed | RolledBack)));
            prop_assert_ne!(&w.spec.retry_nonce, &w.status.observed_retry_nonce);
        }
        Step::Stage { .. } => {
            prop_assert!(matches!(
                phase,
                Some(Pending | Downloading | Writing | Verifying)
            ));
            prop_assert!(
                phase != Some(Pending) || !w.fell_back_before(),
                "a version that rolled back is not tried again until the nonce changes"
            );
        }
        Step::Finish(f) => prop_assert!(matches!(f.phase, Failed | RolledBack)),
        Step::External(external::ExternalStep::Reboot) => {
            prop_assert!(approved, "reboot only when approved");
            prop_assert!(
                phase == Some(Staged) || phase == Some(Rebooting) && w.same_boot,
                "reboot from Staged, or again in the boot it was asked in"
            );
        }
        Step::External(external::ExternalStep::Complete) => {
            prop_assert!(
                phase == Some(Rebooting) && !w.same_boot,
                "complete only after a boot"
            );
        }
        Step::External(external::ExternalStep::NewRound(_)) => {
            prop_assert!(
                phase == Some(Completed) && !approved,
                "a new round only from Completed, never on a standing approval"
            );
        }
        Step::External(_)
        | Step::Idle
        | Step::AwaitApproval
        | Step::Start { .. }
        | Step::AlreadyCurrent { .. } => {}
    }
    Ok(())
}

/// What the A/B machine respects about slots.
fn slot_invariants(w: &World, step: &Step<Slot>) -> Result<(), TestCaseError> {
    let booted = w.booted;
    let target = &w.status.target_version;
    match step {
        Step::Stage { into } => prop_assert_ne!(*into, booted, "never write the running slot"),
        Step::Apply { to, .. } | Step::Reboot { to } => {
            prop_assert!(w.spec.reboot_approved, "reboot only when approved");
            prop_assert!(matches!(w.phase(), Some(Staged | Applying | Rebooting)));
            prop_assert_ne!(*to, booted);
        }
        Step::Confirm { on } => {
            prop_assert_eq!(*on, booted, "commit only the running slot");
            prop_assert!(
                w.running.is_some() && w.running == *target,
                "commit only the target version"
            );
            prop_assert!(matches!(w.phase(), Some(Staged | Applying | Rebooting)));
        }
        Step::RollBack {
            booted: b, tried, ..
        } => {
            prop_assert_eq!(*b, booted);
            prop_assert_ne!(*tried, booted);
            prop_assert_eq!(w.phase(), Some(Rebooting));
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    /// Invariants over arbitrary combinations of spec, status, facts and memory.
    #[test]
    fn safety_invariants(w in arb_world()) {
        let host = HostFacts {
            booted_slot: w.booted,
            os_version: w.running.clone(),
            boot_id: "now".into(),
        };
        let step = ab::next_step(&w.input(&host));
        common_invariants(&w, &step)?;
        slot_invariants(&w, &step)?;

        let boot = BootFacts {
            boot_id: "now".into(),
            os_version: w.running.clone(),
        };
        let step = deploy::next_step(&w.input(&boot));
        common_invariants(&w, &step)?;
    }

    /// The external machine under the same invariants, whatever its sources say; a
    /// signal still present after the boot never reboots again.
    #[test]
    fn external_safety_invariants(w in arb_world(), signalled in any::<bool>(), unreadable in any::<bool>()) {
        let boot = BootFacts {
            boot_id: "now".into(),
            os_version: w.running.clone(),
        };
        let signal = match (unreadable, signalled) {
            (true, _) => Err("unreadable".to_string()),
            (false, true) => Ok(Some(osroll_api::RebootSignal {
                source: osroll_api::RebootSource::SentinelFile,
                detail: "present".into(),
                version: None,
            })),
            (false, false) => Ok(None),
        };
        let step: Step<()> = external::next_step(&w.input(&boot), &signal);
        common_invariants(&w, &step)?;
        if w.phase() == Some(Rebooting) && !w.same_boot {
            prop_assert!(!matches!(step, Step::External(external::ExternalStep::Reboot)));
        }
    }
}

#[test]
fn the_opening_is_shared() {
    let spec = OSUpgradeProgressSpec {
        image: Some(image("v2")),
        retry_nonce: Some("n".into()),
        ..Default::default()
    };
    let facts = BootFacts {
        boot_id: "now".into(),
        os_version: None,
    };
    let at = |phase, reboot_boot_id| {
        let status = OSUpgradeProgressStatus {
            phase,
            target_version: Some("v2".into()),
            observed_retry_nonce: Some("n".into()),
            ..Default::default()
        };
        open(&Input {
            spec: &spec,
            status: &status,
            attempt_image: spec.image.as_ref(),
            facts: &facts,
            reboot_boot_id,
            rolled_back: &[],
        })
    };
    assert_eq!(at(None, None), Opening::Start { retry: false });
    assert_eq!(at(Some(Rebooting), Some("now")), Opening::SameBoot);
    assert_eq!(at(Some(Rebooting), Some("then")), Opening::AfterReboot);
    assert_eq!(at(Some(Rebooting), None), Opening::AfterReboot);
    assert_eq!(at(Some(Failed), None), Opening::Idle);
    assert_eq!(at(Some(Staged), None), Opening::Continue(Staged));
}
