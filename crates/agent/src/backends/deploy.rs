//! The decision for nodes updated by a deployment backend (OSTree or an OS plugin)
//! rather than by writing an A/B slot: the same phases as [`crate::machine`], without
//! slots. Pure, so every phase is a unit test; [`crate::agent`] carries steps out.
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
//! cordoning or draining it; the agent never applies without `rebootApproved`.

use osroll_api::progress::FailureReason;
use osroll_api::{ImageRef, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase};

use crate::machine::RolledBackRecord;

/// Everything the decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct DeployInput<'a> {
    /// The progress spec.
    pub spec: &'a OSUpgradeProgressSpec,
    /// The status as the agent last recorded it.
    pub status: &'a OSUpgradeProgressStatus,
    /// The image the current attempt works towards (local state), if known.
    pub attempt_image: Option<&'a ImageRef>,
    /// This boot's id.
    pub boot_id: &'a str,
    /// The boot id recorded when the agent asked for the reboot.
    pub reboot_boot_id: Option<&'a str>,
    /// Versions this node fell back from.
    pub rolled_back: &'a [RolledBackRecord],
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployStep {
    /// Nothing until the spec changes.
    Idle,
    /// Staged; wait for `spec.rebootApproved`.
    AwaitApproval,
    /// Begin an attempt (Pending).
    Start {
        /// Whether a changed `retryNonce` asked for it.
        retry: bool,
    },
    /// Have the backend stage the target (again, if staging was interrupted).
    Stage,
    /// Approved: run the pre-install hook, then apply live or ask for the reboot.
    Apply,
    /// The reboot was asked for in this boot and has not happened: ask again.
    Reboot,
    /// Approval was withdrawn before the reboot happened: back to Staged.
    Unapprove,
    /// The node booted since the reboot was asked for: check what it runs.
    Confirm,
    /// End in `phase` without touching the host.
    Finish {
        /// Failed or RolledBack.
        phase: ProgressPhase,
        /// Machine-readable reason.
        reason: FailureReason,
        /// What happened, naming the offending value.
        message: String,
    },
}

/// Problems with `spec.image` no backend can work around: a deployment backend needs
/// a parseable version (url and checksum are the backend's business).
pub fn validate_target(spec: &OSUpgradeProgressSpec) -> Result<&ImageRef, String> {
    let img = spec
        .image
        .as_ref()
        .ok_or("spec.image is missing: no version to reach")?;
    img.version
        .parse::<osroll_api::Version>()
        .map_err(|e| format!("spec.image.version: {e}"))?;
    Ok(img)
}

fn target_changed(i: &DeployInput) -> bool {
    let Some(want) = &i.spec.image else {
        return false;
    };
    i.status.target_version.as_deref() != Some(want.version.as_str())
        || i.attempt_image.is_some_and(|a| a != want)
}

/// The next step for one progress. See the module doc.
pub fn next_deploy_step(i: &DeployInput) -> DeployStep {
    use ProgressPhase::*;
    let phase = i.status.phase;
    if phase == Some(Rebooting) {
        if i.reboot_boot_id == Some(i.boot_id) {
            return if i.spec.reboot_approved {
                DeployStep::Reboot
            } else {
                DeployStep::Unapprove
            };
        }
        return DeployStep::Confirm;
    }
    if phase == Some(Applying) {
        // Applying started with approval and may be half done: finish it whatever
        // the spec says now (the backend's apply is idempotent).
        return DeployStep::Apply;
    }
    if matches!(phase, Some(Failed | RolledBack))
        && i.spec.retry_nonce != i.status.observed_retry_nonce
    {
        return DeployStep::Start { retry: true };
    }
    if phase.is_some() && target_changed(i) {
        return DeployStep::Start { retry: false };
    }
    match phase {
        None => DeployStep::Start { retry: false },
        Some(Pending) => {
            let img = match validate_target(i.spec) {
                Ok(img) => img,
                Err(message) => {
                    return DeployStep::Finish {
                        phase: Failed,
                        reason: FailureReason::InvalidSpec,
                        message,
                    };
                }
            };
            if let Some(r) = i.rolled_back.iter().find(|r| {
                r.version == img.version
                    && r.checksum == img.checksum
                    && r.retry_nonce == i.spec.retry_nonce
            }) {
                return DeployStep::Finish {
                    phase: RolledBack,
                    reason: FailureReason::PreviouslyRolledBack,
                    message: format!(
                        "{} was booted on this node before and the node fell back; change spec.retryNonce to try it again",
                        r.version
                    ),
                };
            }
            DeployStep::Stage
        }
        Some(Downloading | Writing | Verifying) => DeployStep::Stage,
        Some(Staged) if i.spec.reboot_approved => DeployStep::Apply,
        Some(Staged) => DeployStep::AwaitApproval,
        Some(Completed | Failed | RolledBack) => DeployStep::Idle,
        Some(Rebooting | Applying) => unreachable!("handled above"),
    }
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
