//! The agent's decisions: given one OSUpgradeProgress (spec and the status the agent last
//! wrote), what the running system reports, and what the agent remembers locally, what
//! is the next [`Step`]? Pure and total, so every phase and fault is a unit test; the
//! executor ([`crate::agent`]) carries the step out and records the resulting status.
//!
//! Every backend kind opens alike ([`open`]): a status being rebooted is judged by
//! whether the boot changed, a changed `retryNonce` retries a Failed or RolledBack
//! attempt, a changed target starts over, a finished attempt idles, and a Pending one
//! first checks its image and the versions that fell back before ([`admit`]). Then each
//! kind decides its own way: [`ab`] for A/B slots, [`deploy`] for deployment tools
//! (OSTree, an OS plugin). [`select`] picks which progress the agent works on, and what
//! a deleted one leaves to settle.
//!
//! Safety rules encoded here (and property-tested in `tests.rs` over every machine): the
//! agent never writes the slot it booted from; it applies or reboots only with
//! `rebootApproved` (a deployment already Applying finishes); it commits a slot only
//! when that slot is running and reports the target version; a version that rolled back
//! is not tried again until the nonce changes.

pub mod ab;
pub mod deploy;
pub mod external;
pub mod select;

use osroll_api::progress::FailureReason;
use osroll_api::{ImageRef, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase};

use crate::failure::Failure;
use crate::host::HostFacts;

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

/// What every decision needs to know about the running system.
pub trait Facts {
    /// Changes on every boot.
    fn boot_id(&self) -> &str;
    /// The OS version the running system reports, when it reports one.
    fn os_version(&self) -> Option<&str>;
}

impl Facts for HostFacts {
    fn boot_id(&self) -> &str {
        &self.boot_id
    }
    fn os_version(&self) -> Option<&str> {
        self.os_version.as_deref()
    }
}

/// The running system of a node a deployment tool updates: its boot, and the version
/// when the tool told it (the tool answers for deployments itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootFacts {
    /// This boot's id.
    pub boot_id: String,
    /// The running version, when known.
    pub os_version: Option<String>,
}

impl Facts for BootFacts {
    fn boot_id(&self) -> &str {
        &self.boot_id
    }
    fn os_version(&self) -> Option<&str> {
        self.os_version.as_deref()
    }
}

/// Everything a decision looks at; `F` is what its backend kind observes.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a, F> {
    /// The progress spec (written by the controller).
    pub spec: &'a OSUpgradeProgressSpec,
    /// The status as the agent last recorded it.
    pub status: &'a OSUpgradeProgressStatus,
    /// The image the current attempt installs (from the local state), if known.
    pub attempt_image: Option<&'a ImageRef>,
    /// The running system.
    pub facts: &'a F,
    /// Boot id recorded when the agent asked for the reboot.
    pub reboot_boot_id: Option<&'a str>,
    /// Versions this node fell back from.
    pub rolled_back: &'a [RolledBackRecord],
}

/// What to do next. `P` is where the backend kind stages an update: a
/// [`crate::slot::Slot`] for A/B, nothing to name (`()`) for a deployment tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<P> {
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
    AlreadyCurrent {
        /// For the progress message.
        message: String,
    },
    /// Stage the target (again, if staging was interrupted).
    Stage {
        /// Where (never the running slot).
        into: P,
    },
    /// Approved: switch to the staged update (live, or by arming it and rebooting).
    Apply {
        /// What the switch starts.
        to: P,
        /// Run the pre-install hook first (not when an interrupted apply resumes).
        pre_hook: bool,
    },
    /// The reboot was asked for in this boot and has not happened: ask again.
    Reboot {
        /// What the reboot starts.
        to: P,
    },
    /// Approval was withdrawn before the reboot happened: back to Staged.
    Withdraw,
    /// The node booted since the reboot was asked for: confirm it runs the target and
    /// make that permanent.
    Confirm {
        /// What it booted.
        on: P,
    },
    /// The node came back on what it ran before: RolledBack.
    RollBack {
        /// What it booted.
        booted: P,
        /// What was tried.
        tried: P,
        /// The status it ends with.
        failure: Failure,
    },
    /// End with `failure` (Failed or RolledBack) without touching the host.
    Finish(Failure),
    /// A step of an external update's machine ([`external`]).
    External(external::ExternalStep),
}

/// How a status opens, the same for every backend kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Rebooting, and this is still the boot in which the reboot was asked for.
    SameBoot,
    /// Rebooting, and the node has booted since (or the local record is lost).
    AfterReboot,
    /// Begin an attempt.
    Start {
        /// Whether a changed `retryNonce` asked for it.
        retry: bool,
    },
    /// Finished; nothing until the spec changes.
    Idle,
    /// Continue from this phase (never Rebooting or a finished one).
    Continue(ProgressPhase),
}

/// Whether `spec.image` asks for something other than what the attempt installs.
fn target_changed<F>(i: &Input<'_, F>) -> bool {
    let Some(want) = &i.spec.image else {
        return false;
    };
    i.status.target_version.as_deref() != Some(want.version.as_str())
        || i.attempt_image.is_some_and(|a| a != want)
}

/// The shared prelude of every machine: see [`Opening`].
pub fn open<F: Facts>(i: &Input<'_, F>) -> Opening {
    use ProgressPhase::*;
    let phase = i.status.phase;
    if phase == Some(Rebooting) {
        return if i.reboot_boot_id == Some(i.facts.boot_id()) {
            Opening::SameBoot
        } else {
            Opening::AfterReboot
        };
    }
    if matches!(phase, Some(Failed | RolledBack))
        && i.spec.retry_nonce != i.status.observed_retry_nonce
    {
        return Opening::Start { retry: true };
    }
    if phase.is_some() && target_changed(i) {
        return Opening::Start { retry: false };
    }
    match phase {
        None => Opening::Start { retry: false },
        Some(Completed | Failed | RolledBack) => Opening::Idle,
        Some(p) => Opening::Continue(p),
    }
}

/// Pending: the image to stage (`validated` by the backend kind's rules), or the step
/// that ends the attempt first: an invalid image, or a version that fell back on this
/// node under the same `retryNonce`.
pub fn admit<'a, F, P>(
    i: &Input<'a, F>,
    validated: Result<&'a ImageRef, Failure>,
) -> Result<&'a ImageRef, Step<P>> {
    let img = validated.map_err(Step::Finish)?;
    if let Some(r) = i.rolled_back.iter().find(|r| {
        r.version == img.version
            && r.checksum == img.checksum
            && r.retry_nonce == i.spec.retry_nonce
    }) {
        return Err(Step::Finish(Failure::rolled_back(
            FailureReason::PreviouslyRolledBack,
            format!(
                "{} fell back on this node before and was rolled back; change spec.retryNonce to try it again",
                r.version
            ),
        )));
    }
    Ok(img)
}

/// `spec.image` is missing: nothing to install.
pub fn missing_image() -> Failure {
    Failure::new(
        FailureReason::InvalidSpec,
        "spec.image is missing: nothing to install",
    )
}

/// `spec.image.version` must be a version.
pub fn check_version(img: &ImageRef) -> Result<(), Failure> {
    img.version
        .parse::<osroll_api::Version>()
        .map(drop)
        .map_err(|e| {
            Failure::new(
                FailureReason::InvalidSpec,
                format!("spec.image.version: {e}"),
            )
        })
}

#[cfg(test)]
mod tests;
