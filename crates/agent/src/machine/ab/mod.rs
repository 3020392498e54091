//! The decision for A/B nodes: stage into the slot the node did not boot from, arm a
//! one-shot boot of it, and judge the boot that follows by which slot came up and what
//! version it reports.
//!
//! ```text
//! (none) ─Start─> Pending ─Stage─> Downloading ─> Writing ─> Verifying ─> Staged
//!   Staged ──(spec.rebootApproved)── Apply ──> Rebooting ──(new boot)──┬─ Confirm ─> Completed
//!                                                                     ├─ RollBack ─> RolledBack
//!                                                                     └─ Finish ─> Failed
//!   Failed | RolledBack ──(spec.retryNonce changed)── Start(retry) ──> Pending
//! ```

use osroll_api::progress::FailureReason;
use osroll_api::{ImageRef, OSUpgradeProgressSpec, ProgressPhase};

use super::select::Deleted;
use super::{Input, Opening, Step, admit, check_version, missing_image, open};
use crate::failure::Failure;
use crate::host::HostFacts;
use crate::slot::Slot;

fn fail(reason: FailureReason, message: String) -> Step<Slot> {
    Step::Finish(Failure::new(reason, message))
}

/// Problems with `spec.image` that no download can fix.
pub fn validate_image(spec: &OSUpgradeProgressSpec) -> Result<&ImageRef, Failure> {
    let img = spec.image.as_ref().ok_or_else(missing_image)?;
    let invalid = |m: String| Failure::new(FailureReason::InvalidSpec, m);
    check_version(img)?;
    crate::install::http::parse_checksum(&img.checksum)
        .map_err(|e| invalid(format!("spec.image.checksum: {e}")))?;
    match url::Url::parse(&img.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(_) => {
            return Err(invalid(format!(
                "spec.image.url {:?}: only http and https are supported",
                img.url
            )));
        }
        Err(e) => return Err(invalid(format!("spec.image.url {:?}: {e}", img.url))),
    }
    if img.size == Some(0) {
        return Err(invalid("spec.image.size is 0".into()));
    }
    Ok(img)
}

/// The slot the status says is being written, if it names one.
fn status_slot(i: &Input<'_, HostFacts>) -> Option<Slot> {
    i.status
        .inactive_partition
        .as_deref()
        .and_then(|s| s.parse::<Slot>().ok())
}

/// Whether the running system reports the attempt's target version.
fn runs_target(i: &Input<'_, HostFacts>) -> bool {
    let target = i.status.target_version.as_deref();
    target.is_some() && i.facts.os_version.as_deref() == target
}

/// The next step for one progress on an A/B node. See the module doc.
pub fn next_step(i: &Input<'_, HostFacts>) -> Step<Slot> {
    use ProgressPhase::*;
    match open(i) {
        Opening::SameBoot => same_boot(i),
        Opening::AfterReboot => after_reboot(i),
        Opening::Start { retry } => Step::Start { retry },
        Opening::Idle => Step::Idle,
        Opening::Continue(Pending) => pending(i),
        Opening::Continue(Downloading | Writing | Verifying) => match status_slot(i) {
            // The node rebooted into the slot being written (or the status lost it).
            Some(s) if s != i.facts.booted_slot => Step::Stage { into: s },
            _ => Step::Start { retry: false },
        },
        Opening::Continue(phase) => staged(i, phase),
    }
}

/// Rebooting, in the boot that asked for it: ask again, or withdraw.
fn same_boot(i: &Input<'_, HostFacts>) -> Step<Slot> {
    let Some(slot) = status_slot(i) else {
        return not_a_slot();
    };
    if slot == i.facts.booted_slot {
        return fail(
            FailureReason::InvalidStatus,
            format!("status.inactivePartition {slot} is the running slot while Rebooting"),
        );
    }
    if i.spec.reboot_approved {
        Step::Reboot { to: slot }
    } else {
        Step::Withdraw
    }
}

fn not_a_slot() -> Step<Slot> {
    fail(
        FailureReason::InvalidStatus,
        "status.inactivePartition is not A or B while Rebooting".into(),
    )
}

/// Rebooting, after a new boot: which slot came up, running what?
fn after_reboot(i: &Input<'_, HostFacts>) -> Step<Slot> {
    let Some(slot) = status_slot(i) else {
        return not_a_slot();
    };
    let booted = i.facts.booted_slot;
    if booted != slot {
        let version = i.status.target_version.clone().unwrap_or_default();
        return Step::RollBack {
            booted,
            tried: slot,
            failure: Failure::rolled_back(
                FailureReason::BootFallback,
                format!(
                    "tried slot {slot} once but the node came back on slot {booted}; {version} will not be tried again until spec.retryNonce changes"
                ),
            ),
        };
    }
    if runs_target(i) {
        return Step::Confirm { on: slot };
    }
    fail(
        FailureReason::VersionMismatch,
        format!(
            "slot {slot} booted but reports version {}, expected {}",
            i.facts.os_version.as_deref().unwrap_or("(none)"),
            i.status.target_version.as_deref().unwrap_or("(none)")
        ),
    )
}

/// Pending: install into the other slot, unless the node already runs the target.
fn pending(i: &Input<'_, HostFacts>) -> Step<Slot> {
    let img = match admit(i, validate_image(i.spec)) {
        Ok(img) => img,
        Err(step) => return step,
    };
    if i.facts.os_version.as_deref() == Some(img.version.as_str()) {
        return Step::AlreadyCurrent {
            message: format!(
                "node already runs {} from slot {}; nothing to install",
                img.version, i.facts.booted_slot
            ),
        };
    }
    Step::Stage {
        into: i.facts.booted_slot.other(),
    }
}

/// Staged (or Applying): wait for approval, then arm the staged slot and reboot.
fn staged(i: &Input<'_, HostFacts>, phase: ProgressPhase) -> Step<Slot> {
    let booted = i.facts.booted_slot;
    match status_slot(i) {
        // Booted into the staged slot before the status said Rebooting (the node went
        // down right after the try was armed): judge it like a reboot.
        Some(s) if s == booted && runs_target(i) => Step::Confirm { on: s },
        Some(s) if s != booted => {
            if i.spec.reboot_approved {
                Step::Apply {
                    to: s,
                    pre_hook: phase == ProgressPhase::Staged,
                }
            } else {
                Step::AwaitApproval
            }
        }
        _ => Step::Start { retry: false },
    }
}

/// The tracked progress was deleted: an armed try whose reboot has not happened is
/// withdrawn; a node that already booted the new slot and runs the target version
/// keeps it (committed), rather than silently returning to the old OS at its next
/// reboot.
pub fn on_deleted(
    status: &osroll_api::OSUpgradeProgressStatus,
    reboot_boot_id: Option<&str>,
    facts: &HostFacts,
) -> Deleted<Slot> {
    if status.phase != Some(ProgressPhase::Rebooting) {
        return Deleted::Forget;
    }
    if reboot_boot_id == Some(facts.boot_id.as_str()) {
        return Deleted::Withdraw;
    }
    let slot = status
        .inactive_partition
        .as_deref()
        .and_then(|s| s.parse::<Slot>().ok());
    match slot {
        Some(slot)
            if facts.booted_slot == slot
                && status.target_version.is_some()
                && facts.os_version == status.target_version =>
        {
            Deleted::Keep { on: slot }
        }
        _ => Deleted::Forget,
    }
}

#[cfg(test)]
mod tests;
