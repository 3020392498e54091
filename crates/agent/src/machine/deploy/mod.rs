//! The decision for nodes updated by a deployment backend (OSTree or an OS plugin)
//! rather than by writing an A/B slot: the same phases as [`super::ab`], without slots,
//! so its steps name no place (`Step<()>`). The tool answers after the reboot whether
//! the node runs the target, so a boot is always confirmed with it.
//!
//! ```text
//! (none) ─Start─> Pending ─Stage─> Downloading ─> Staged (status.rebootRequired said)
//!   Staged ──(spec.rebootApproved)── Apply ─┬─ live: Applying ─> Completed
//!                                           └─ reboot: Rebooting ──(new boot)── Confirm
//!                                                  Confirm ─┬─> Completed
//!                                                           └─> RolledBack (wrong deployment)
//!   Failed | RolledBack ──(spec.retryNonce changed)── Start(retry) ──> Pending
//! ```
//!
//! The controller approves a Staged node whose `status.rebootRequired` is false without
//! cordoning or draining it; the agent never applies without `rebootApproved`, except
//! to finish an apply that was under way.

use osroll_api::{ImageRef, OSUpgradeProgressSpec, ProgressPhase};

use super::select::Deleted;
use super::{BootFacts, Input, Opening, Step, admit, check_version, missing_image, open};
use crate::failure::Failure;

/// Problems with `spec.image` no backend can work around: a deployment backend needs
/// a parseable version (url and checksum are the backend's business).
pub fn validate_target(spec: &OSUpgradeProgressSpec) -> Result<&ImageRef, Failure> {
    let img = spec.image.as_ref().ok_or_else(missing_image)?;
    check_version(img)?;
    Ok(img)
}

/// The next step for one progress. See the module doc.
pub fn next_step(i: &Input<'_, BootFacts>) -> Step<()> {
    use ProgressPhase::*;
    if i.status.phase == Some(Applying) {
        // Applying started with approval and may be half done: finish it whatever
        // the spec says now (the backend's apply is idempotent).
        return Step::Apply {
            to: (),
            pre_hook: false,
        };
    }
    match open(i) {
        Opening::SameBoot if i.spec.reboot_approved => Step::Reboot { to: () },
        Opening::SameBoot => Step::Withdraw,
        Opening::AfterReboot => Step::Confirm { on: () },
        Opening::Start { retry } => Step::Start { retry },
        Opening::Idle => Step::Idle,
        Opening::Continue(Pending) => match admit(i, validate_target(i.spec)) {
            Ok(_) => Step::Stage { into: () },
            Err(step) => step,
        },
        Opening::Continue(Staged) if i.spec.reboot_approved => Step::Apply {
            to: (),
            pre_hook: true,
        },
        Opening::Continue(Staged) => Step::AwaitApproval,
        Opening::Continue(_) => Step::Stage { into: () },
    }
}

/// A deleted progress leaves nothing to settle: a staged deployment is the tool's to
/// keep or clean up.
pub fn on_deleted() -> Deleted<()> {
    Deleted::Forget
}

#[cfg(test)]
mod tests;
