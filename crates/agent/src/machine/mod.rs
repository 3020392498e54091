//! The agent's decision: given one OSUpgradeProgress (spec and the status the agent last
//! wrote), what the host reports, and what the agent remembers locally, what is the next
//! step? Pure and total, so every phase and fault is a unit test; the executor
//! ([`crate::agent`]) carries the step out and records the resulting status.
//!
//! The life of an attempt:
//!
//! ```text
//! (none) ─Start─> Pending ─Install─> Downloading ─> Writing ─> Verifying ─> Staged
//!   Staged ──(spec.rebootApproved)── Reboot ──> Rebooting ──(new boot)──┬─ Commit ─> Completed
//!                                                                      ├─ RollBack ─> RolledBack
//!                                                                      └─ Fail ─> Failed
//!   Failed | RolledBack ──(spec.retryNonce changed)── Start(retry) ──> Pending
//! ```
//!
//! Safety rules encoded here (and property-tested below): the agent never writes the
//! slot it booted from; it reboots only from Staged/Rebooting and only with
//! `rebootApproved`; it commits a slot only when that slot is running and reports the
//! target version; a version that rolled back is not tried again until the nonce changes.

use osroll_api::progress::FailureReason;
use osroll_api::{ImageRef, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase};

use crate::host::HostFacts;
use crate::slot::Slot;

/// A version this node booted into and fell back from, with the nonce of that attempt.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBackRecord {
    /// The version that failed to boot.
    pub version: String,
    /// Its image checksum.
    pub checksum: String,
    /// `spec.retryNonce` of the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_nonce: Option<String>,
}

/// Everything the decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The progress spec (written by the controller).
    pub spec: &'a OSUpgradeProgressSpec,
    /// The status as the agent last recorded it.
    pub status: &'a OSUpgradeProgressStatus,
    /// The image the current attempt installs (from the local state), if known.
    pub attempt_image: Option<&'a ImageRef>,
    /// The running system.
    pub facts: &'a HostFacts,
    /// Boot id recorded when the agent armed the try and rebooted.
    pub reboot_boot_id: Option<&'a str>,
    /// Versions this node fell back from.
    pub rolled_back: &'a [RolledBackRecord],
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the spec changes.
    Idle,
    /// Staged; wait for `spec.rebootApproved`.
    AwaitApproval,
    /// Begin an attempt (fresh Pending status); `retry` counts it in `retryCount`.
    Start {
        /// Whether a changed `retryNonce` asked for it.
        retry: bool,
    },
    /// The node already runs the target version: Completed, nothing written.
    AlreadyCurrent,
    /// Download, write and verify the image into `slot`.
    Install {
        /// The inactive slot.
        slot: Slot,
    },
    /// Arm a one-shot boot of `slot` and reboot.
    Reboot {
        /// The staged slot.
        slot: Slot,
    },
    /// Approval was withdrawn before the reboot happened: disarm, back to Staged.
    Disarm,
    /// The node runs `slot` with the target version: make it the default.
    Commit {
        /// The new slot.
        slot: Slot,
    },
    /// The node came back on the old slot.
    RollBack {
        /// The slot it booted.
        booted: Slot,
        /// The slot that was tried.
        tried: Slot,
    },
    /// End in `phase` (Failed or RolledBack) without touching the host.
    Finish {
        /// Failed or RolledBack.
        phase: ProgressPhase,
        /// Machine-readable reason.
        reason: FailureReason,
        /// What happened, naming the offending value.
        message: String,
    },
}

fn fail(reason: FailureReason, message: String) -> Step {
    Step::Finish {
        phase: ProgressPhase::Failed,
        reason,
        message,
    }
}

/// Whether `spec.image` asks for something other than what the attempt installs.
fn target_changed(i: &Input) -> bool {
    let Some(want) = &i.spec.image else {
        return false;
    };
    if i.status.target_version.as_deref() != Some(want.version.as_str()) {
        return true;
    }
    i.attempt_image
        .is_some_and(|a| a.checksum != want.checksum || a.url != want.url || a.size != want.size)
}

/// Problems with `spec.image` that no download can fix.
pub fn validate_image(spec: &OSUpgradeProgressSpec) -> Result<&ImageRef, String> {
    let img = spec
        .image
        .as_ref()
        .ok_or("spec.image is missing: nothing to install")?;
    img.version
        .parse::<osroll_api::Version>()
        .map_err(|e| format!("spec.image.version: {e}"))?;
    crate::install::http::parse_checksum(&img.checksum)
        .map_err(|e| format!("spec.image.checksum: {e}"))?;
    match url::Url::parse(&img.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(_) => {
            return Err(format!(
                "spec.image.url {:?}: only http and https are supported",
                img.url
            ));
        }
        Err(e) => return Err(format!("spec.image.url {:?}: {e}", img.url)),
    }
    if img.size == Some(0) {
        return Err("spec.image.size is 0".into());
    }
    Ok(img)
}

/// The next step for one progress. See the module doc.
pub fn next_step(i: &Input) -> Step {
    use ProgressPhase::*;
    let phase = i.status.phase;
    let slot = i
        .status
        .inactive_partition
        .as_deref()
        .and_then(|s| s.parse::<Slot>().ok());
    let booted = i.facts.booted_slot;
    let target = i.status.target_version.as_deref();
    let runs_target = target.is_some() && i.facts.os_version.as_deref() == target;

    if phase == Some(Rebooting) {
        let Some(slot) = slot else {
            return fail(
                FailureReason::InvalidStatus,
                "status.inactivePartition is not A or B while Rebooting".into(),
            );
        };
        if i.reboot_boot_id == Some(i.facts.boot_id.as_str()) {
            if slot == booted {
                return fail(
                    FailureReason::InvalidStatus,
                    format!("status.inactivePartition {slot} is the running slot while Rebooting"),
                );
            }
            // Still the boot in which the try was armed: the reboot has not happened.
            return if i.spec.reboot_approved {
                Step::Reboot { slot }
            } else {
                Step::Disarm
            };
        }
        return if booted != slot {
            Step::RollBack {
                booted,
                tried: slot,
            }
        } else if runs_target {
            Step::Commit { slot }
        } else {
            fail(
                FailureReason::VersionMismatch,
                format!(
                    "slot {slot} booted but reports version {}, expected {}",
                    i.facts.os_version.as_deref().unwrap_or("(none)"),
                    target.unwrap_or("(none)")
                ),
            )
        };
    }

    if matches!(phase, Some(Failed | RolledBack))
        && i.spec.retry_nonce != i.status.observed_retry_nonce
    {
        return Step::Start { retry: true };
    }
    if phase.is_some() && target_changed(i) {
        return Step::Start { retry: false };
    }

    match phase {
        None => Step::Start { retry: false },
        Some(Pending) => {
            let img = match validate_image(i.spec) {
                Ok(img) => img,
                Err(msg) => return fail(FailureReason::InvalidSpec, msg),
            };
            if let Some(r) = i.rolled_back.iter().find(|r| {
                r.version == img.version
                    && r.checksum == img.checksum
                    && r.retry_nonce == i.spec.retry_nonce
            }) {
                return Step::Finish {
                    phase: RolledBack,
                    reason: FailureReason::PreviouslyRolledBack,
                    message: format!(
                        "{} failed to boot on this node before and was rolled back; change spec.retryNonce to try it again",
                        r.version
                    ),
                };
            }
            if i.facts.os_version.as_deref() == Some(img.version.as_str()) {
                return Step::AlreadyCurrent;
            }
            Step::Install {
                slot: booted.other(),
            }
        }
        Some(Downloading | Writing | Verifying) => match slot {
            // The node rebooted into the slot being written (or the status lost it).
            Some(s) if s != booted => Step::Install { slot: s },
            _ => Step::Start { retry: false },
        },
        Some(Staged | Applying) => match slot {
            // Booted into the staged slot before the status said Rebooting (the node
            // went down right after the try was armed): judge it like a reboot.
            Some(s) if s == booted && runs_target => Step::Commit { slot: s },
            Some(s) if s != booted => {
                if i.spec.reboot_approved {
                    Step::Reboot { slot: s }
                } else {
                    Step::AwaitApproval
                }
            }
            _ => Step::Start { retry: false },
        },
        Some(Completed | Failed | RolledBack) => Step::Idle,
        Some(Rebooting) => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests;
