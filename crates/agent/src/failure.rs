//! How an attempt ends badly, as one value: the phase it ends in, the machine-readable
//! [`FailureReason`] for `status.failureReason`, and a message naming what went wrong.
//! Every error that can end an attempt converts into it, so the executor's steps use `?`.

use osroll_api::ProgressPhase;
use osroll_api::progress::FailureReason;

/// An attempt that ends in Failed (or RolledBack), ready for the progress status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// Failed or RolledBack.
    pub phase: ProgressPhase,
    /// Machine-readable cause.
    pub reason: FailureReason,
    /// What happened, naming the offending value, command or file.
    pub message: String,
}

impl Failure {
    /// The attempt failed.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Failure {
            phase: ProgressPhase::Failed,
            reason,
            message: message.into(),
        }
    }

    /// The node is back on what it ran before the attempt.
    pub fn rolled_back(reason: FailureReason, message: impl Into<String>) -> Self {
        Failure {
            phase: ProgressPhase::RolledBack,
            reason,
            message: message.into(),
        }
    }

    /// The attempt failed because of `err`, whose message says why.
    fn of(reason: FailureReason, err: &impl std::fmt::Display) -> Self {
        Failure::new(reason, err.to_string())
    }
}

impl From<crate::install::InstallError> for Failure {
    fn from(e: crate::install::InstallError) -> Self {
        Failure::of(e.reason(), &e)
    }
}

impl From<crate::hooks::HookError> for Failure {
    fn from(e: crate::hooks::HookError) -> Self {
        Failure::of(e.reason(), &e)
    }
}

impl From<crate::backends::driver::BackendError> for Failure {
    fn from(e: crate::backends::driver::BackendError) -> Self {
        Failure::of(e.reason(), &e)
    }
}

impl From<crate::mounts::restart::MountsError> for Failure {
    fn from(e: crate::mounts::restart::MountsError) -> Self {
        Failure::of(e.reason(), &e)
    }
}

/// Why a step of the executor stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The attempt ends: the status records this failure.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// Something outside the attempt failed (the local state file, the host, the API):
    /// the executor's loop tries again after a backoff.
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

impl From<crate::install::InstallError> for StepError {
    fn from(e: crate::install::InstallError) -> Self {
        StepError::Failed(e.into())
    }
}

impl From<crate::host::HostError> for StepError {
    fn from(e: crate::host::HostError) -> Self {
        StepError::Retry(e.into())
    }
}

impl From<crate::state::StateError> for StepError {
    fn from(e: crate::state::StateError) -> Self {
        StepError::Retry(e.into())
    }
}

impl From<tokio::task::JoinError> for StepError {
    fn from(e: tokio::task::JoinError) -> Self {
        StepError::Retry(anyhow::Error::new(e).context("a blocking call panicked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_its_reason_then_its_message() {
        let f = Failure::new(FailureReason::InvalidSpec, "spec.image is missing");
        assert_eq!(f.phase, ProgressPhase::Failed);
        assert_eq!(f.to_string(), "InvalidSpec: spec.image is missing");
        let r = Failure::rolled_back(FailureReason::BootFallback, "came back on A");
        assert_eq!(r.phase, ProgressPhase::RolledBack);
    }
}
