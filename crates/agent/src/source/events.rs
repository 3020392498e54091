//! The agent's own Events on its progress object: which status change is worth one, and
//! what it says. Pure, so the Kubernetes source ([`super::kube`]) only publishes what
//! [`for_transition`] returns; the controller's Events speak for the rollout, these for
//! the node's steps (`kubectl describe osup NAME` shows them).

use osroll_api::progress::FailureReason;
use osroll_api::{OSUpgradeProgressStatus, ProgressPhase};

/// A step of the node's upgrade that gets an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The image is staged (written and verified, or prepared by the deployment tool).
    Staged,
    /// The next boot is armed and the agent asked the host to reboot.
    RebootRequested,
    /// The node runs the target after its boot (or live update); the agent committed it.
    Committed,
    /// The node already ran the target: nothing was installed.
    AlreadyCurrent,
    /// The node came back on the previous version, for this reason.
    RolledBack(Option<FailureReason>),
    /// The attempt failed, for this reason.
    Failed(Option<FailureReason>),
}

impl ProgressEvent {
    /// The Event's reason: the failure's [`FailureReason`] for a failure, else the step.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Staged => "Staged",
            Self::RebootRequested => "RebootRequested",
            Self::Committed => "Committed",
            Self::AlreadyCurrent => "AlreadyCurrent",
            Self::RolledBack(_) => "RolledBack",
            Self::Failed(Some(r)) => r.as_str(),
            Self::Failed(None) => "Failed",
        }
    }

    /// The Event's action (what the agent did).
    pub fn action(&self) -> &'static str {
        match self {
            Self::Staged => "Stage",
            Self::RebootRequested => "Reboot",
            Self::Committed | Self::AlreadyCurrent => "Commit",
            Self::RolledBack(_) => "RollBack",
            Self::Failed(_) => "Fail",
        }
    }

    /// Whether it is a Warning (a failure or rollback) rather than Normal.
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::RolledBack(_) | Self::Failed(_))
    }

    /// The Event's note: the version, the failure reason where there is one, and the
    /// status message.
    pub fn note(&self, s: &OSUpgradeProgressStatus) -> String {
        let target = s.target_version.as_deref().unwrap_or("(unknown)");
        let head = match self {
            Self::Staged => format!("{target} staged"),
            Self::RebootRequested => format!("rebooting into {target}"),
            Self::Committed | Self::AlreadyCurrent => format!("running {target}"),
            Self::RolledBack(r) => format!("{target} rolled back ({})", reason_name(*r)),
            Self::Failed(r) => format!("{target} failed ({})", reason_name(*r)),
        };
        match s.message.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => format!("{head}: {m}"),
            None => head,
        }
    }
}

fn reason_name(r: Option<FailureReason>) -> &'static str {
    r.map_or("no reason recorded", FailureReason::as_str)
}

/// What identifies one step of one attempt: a status that differs from the previous one
/// only in counters or timestamps is the same step, and gets no second Event.
fn step_key(
    s: &OSUpgradeProgressStatus,
) -> (
    Option<ProgressPhase>,
    Option<&str>,
    Option<&str>,
    Option<&str>,
) {
    (
        s.phase,
        s.failure_reason.as_deref(),
        s.observed_retry_nonce.as_deref(),
        s.target_version.as_deref(),
    )
}

/// The Event for the change from `prev` (what the API server last held, if known) to
/// `next`, or none: only the steps of [`ProgressEvent`] get one, once each.
pub fn for_transition(
    prev: Option<&OSUpgradeProgressStatus>,
    next: &OSUpgradeProgressStatus,
) -> Option<ProgressEvent> {
    if prev.is_some_and(|p| step_key(p) == step_key(next)) {
        return None;
    }
    let reason = next
        .failure_reason
        .as_deref()
        .and_then(FailureReason::parse);
    let was = prev.and_then(|p| p.phase);
    Some(match next.phase? {
        ProgressPhase::Staged if was != Some(ProgressPhase::Rebooting) => ProgressEvent::Staged,
        ProgressPhase::Rebooting => ProgressEvent::RebootRequested,
        ProgressPhase::Completed => match was {
            Some(ProgressPhase::Pending) | None => ProgressEvent::AlreadyCurrent,
            _ => ProgressEvent::Committed,
        },
        ProgressPhase::RolledBack => ProgressEvent::RolledBack(reason),
        ProgressPhase::Failed => ProgressEvent::Failed(reason),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(phase: ProgressPhase, reason: Option<FailureReason>) -> OSUpgradeProgressStatus {
        OSUpgradeProgressStatus {
            phase: Some(phase),
            target_version: Some("v2".into()),
            failure_reason: reason.map(|r| r.as_str().to_string()),
            message: Some("detail".into()),
            ..Default::default()
        }
    }

    #[test]
    fn one_event_per_step_of_an_upgrade() {
        use ProgressPhase::*;
        let path = [
            Pending,
            Downloading,
            Writing,
            Verifying,
            Staged,
            Rebooting,
            Completed,
        ];
        let mut prev: Option<OSUpgradeProgressStatus> = None;
        let mut got = Vec::new();
        for p in path {
            let next = st(p, None);
            got.extend(for_transition(prev.as_ref(), &next));
            // Counters alone are no new step.
            let mut again = next.clone();
            again.bytes_done = Some(7);
            assert_eq!(for_transition(Some(&next), &again), None);
            prev = Some(next);
        }
        assert_eq!(
            got,
            [
                ProgressEvent::Staged,
                ProgressEvent::RebootRequested,
                ProgressEvent::Committed
            ]
        );
        assert_eq!(
            got.iter().map(|e| e.reason()).collect::<Vec<_>>(),
            ["Staged", "RebootRequested", "Committed"]
        );
    }

    #[test]
    fn failures_carry_their_typed_reason() {
        let f = st(ProgressPhase::Failed, Some(FailureReason::ChecksumMismatch));
        let e = for_transition(Some(&st(ProgressPhase::Downloading, None)), &f).unwrap();
        assert_eq!(
            e,
            ProgressEvent::Failed(Some(FailureReason::ChecksumMismatch))
        );
        assert_eq!(e.reason(), "ChecksumMismatch");
        assert!(e.is_warning());
        assert_eq!(e.note(&f), "v2 failed (ChecksumMismatch): detail");

        let rb = st(ProgressPhase::RolledBack, Some(FailureReason::BootFallback));
        let e = for_transition(Some(&st(ProgressPhase::Rebooting, None)), &rb).unwrap();
        assert_eq!(e.reason(), "RolledBack");
        assert_eq!(e.action(), "RollBack");
        assert_eq!(e.note(&rb), "v2 rolled back (BootFallback): detail");
        // Published again (after a crash, say): no second Event.
        assert_eq!(for_transition(Some(&rb), &rb), None);
    }

    #[test]
    fn a_new_attempt_is_a_new_step() {
        let mut a = st(ProgressPhase::Failed, Some(FailureReason::NetworkError));
        a.observed_retry_nonce = Some("1".into());
        let mut b = a.clone();
        b.observed_retry_nonce = Some("2".into());
        assert!(for_transition(Some(&a), &b).is_some());
    }

    #[test]
    fn withdrawn_approval_and_nothing_to_install() {
        let back = st(ProgressPhase::Staged, None);
        assert_eq!(
            for_transition(Some(&st(ProgressPhase::Rebooting, None)), &back),
            None
        );
        let done = st(ProgressPhase::Completed, None);
        assert_eq!(
            for_transition(Some(&st(ProgressPhase::Pending, None)), &done),
            Some(ProgressEvent::AlreadyCurrent)
        );
    }
}
