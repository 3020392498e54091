//! The machine for an external update (`spec.external`): the node's own updater installed
//! it, so there is nothing to stage. It shares [`super::open`] with the other machines
//! and then only follows the reboot-needed signal: Pending while there is none, Staged
//! while there is one (the planner treats the node as any staged node), Rebooting once
//! approved, and after the boot Completed if the signal cleared, or Failed with
//! `RebootStillNeeded` if not. A Failed attempt idles until `retryNonce` changes, so a
//! signal that survives reboots never reboots the node in a loop.
//!
//! A Completed node whose signal comes back (its updater installed another update after
//! the round ended) starts a new round, as kured reboots each time the sentinel appears.
//! It waits for the controller to withdraw the last round's approval first (the
//! controller does so once it released the node), so that approval can never reboot the
//! node a second time: the new round is approved only after a new cordon and drain.

use osroll_api::progress::FailureReason;
use osroll_api::{ProgressPhase, RebootSignal};

use super::{Facts, Input, Opening, Step, open};
use crate::failure::Failure;

/// What the reboot-needed sources said on this pass: the signal or none, or why they
/// could not be read.
pub type Signal = Result<Option<RebootSignal>, String>;

/// The steps only an external update takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternalStep {
    /// Begin an attempt: Pending, watching for a signal.
    Start {
        /// Whether a changed `retryNonce` asked for it.
        retry: bool,
    },
    /// The node signals (or its signal changed): Staged with it.
    Signalled(RebootSignal),
    /// The signal went away before the reboot was approved: back to Pending.
    Cleared,
    /// Approved (or asked for in this boot and not yet happened): reboot.
    Reboot,
    /// The node booted since the reboot and the signal is gone: Completed.
    Complete,
    /// Completed, the last round's approval withdrawn, and the node signals again: a
    /// new round, Staged with the signal.
    NewRound(RebootSignal),
}

/// The next step for an external progress, given this pass's `signal`.
pub fn next_step<F: Facts, P>(i: &Input<'_, F>, signal: &Signal) -> Step<P> {
    match open(i) {
        Opening::SameBoot if i.spec.reboot_approved => Step::External(ExternalStep::Reboot),
        // Approval withdrawn before the reboot happened: follow the signal again.
        Opening::SameBoot => pending(signal),
        Opening::AfterReboot => after_reboot(signal),
        Opening::Start { retry } => Step::External(ExternalStep::Start { retry }),
        Opening::Idle if i.status.phase == Some(ProgressPhase::Completed) => completed(i, signal),
        Opening::Idle => Step::Idle,
        Opening::Continue(ProgressPhase::Pending) => pending(signal),
        Opening::Continue(ProgressPhase::Staged) => staged(i, signal),
        Opening::Continue(p) => Step::Finish(Failure::new(
            FailureReason::InvalidStatus,
            format!("an external update is never {p}: only Pending, Staged or Rebooting"),
        )),
    }
}

/// Not approved: Staged with the signal while there is one, Pending without.
fn pending<P>(signal: &Signal) -> Step<P> {
    match signal {
        Ok(Some(s)) => Step::External(ExternalStep::Signalled(s.clone())),
        Ok(None) | Err(_) => Step::Idle,
    }
}

/// Staged: reboot once approved; follow the signal until then.
fn staged<F, P>(i: &Input<'_, F>, signal: &Signal) -> Step<P> {
    if i.spec.reboot_approved {
        return Step::External(ExternalStep::Reboot);
    }
    match signal {
        Ok(None) => Step::External(ExternalStep::Cleared),
        Ok(Some(s)) if i.status.reboot_needed.as_ref() != Some(s) => {
            Step::External(ExternalStep::Signalled(s.clone()))
        }
        Ok(Some(_)) | Err(_) => Step::AwaitApproval,
    }
}

/// Completed: a signal seen once the last round's approval is withdrawn starts a new
/// round; while that approval stands (the node is still cordoned, soaking) it waits.
fn completed<F, P>(i: &Input<'_, F>, signal: &Signal) -> Step<P> {
    match signal {
        Ok(Some(s)) if !i.spec.reboot_approved => Step::External(ExternalStep::NewRound(s.clone())),
        _ => Step::Idle,
    }
}

/// After the boot: the signal must be gone. Sources that cannot be read yet (a D-Bus
/// service still starting) are asked again on the next pass.
fn after_reboot<P>(signal: &Signal) -> Step<P> {
    match signal {
        Ok(None) => Step::External(ExternalStep::Complete),
        Ok(Some(s)) => Step::Finish(Failure::new(
            FailureReason::RebootStillNeeded,
            format!(
                "the node rebooted but still needs a reboot ({}: {}); it is not rebooted again until spec.retryNonce changes",
                s.source, s.detail
            ),
        )),
        Err(_) => Step::Idle,
    }
}

#[cfg(test)]
mod tests;
