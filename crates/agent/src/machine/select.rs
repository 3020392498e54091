//! Which progress the agent works on, and what a deleted one leaves to settle: the
//! decisions the executor makes over the whole list rather than one progress.

use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase};

use super::Step;
use crate::state::Tracked;

/// What the host keeps when the tracked progress is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted<P> {
    /// Nothing to settle: forget the progress.
    Forget,
    /// The switch is armed and the reboot has not happened: withdraw it.
    Withdraw,
    /// The node already runs the target from `on`: keep it that way.
    Keep {
        /// What it booted.
        on: P,
    },
}

/// One progress with its decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<P> {
    /// Whether it is the progress the local state tracks.
    pub tracked: bool,
    /// Its status (the local one when tracked).
    pub status: OSUpgradeProgressStatus,
    /// What to do next.
    pub step: Step<P>,
}

/// Sort oldest first (creation time, then name): the order the agent takes work in.
pub fn oldest_first(list: &mut [OSUpgradeProgress]) {
    list.sort_by(|a, b| {
        let key = |p: &OSUpgradeProgress| {
            (
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// The status to start from for a progress the local state does not track. The agent
/// acts only on status it wrote itself: a status in the middle of an attempt (Staged with
/// an `inactivePartition`, Rebooting, ...) that its local state does not record was
/// written by someone else, and taking it would arm a slot the agent never wrote or
/// verified. Such a progress starts fresh; a finished one (or none) is kept as it is.
pub fn adoptable(on_server: Option<&OSUpgradeProgressStatus>) -> OSUpgradeProgressStatus {
    match on_server {
        Some(s)
            if s.phase
                .is_none_or(|p| p.is_terminal() || p == ProgressPhase::Pending) =>
        {
            s.clone()
        }
        Some(s) => {
            tracing::warn!(
                phase = ?s.phase,
                "status not written by this agent (no local record of it): starting the progress fresh"
            );
            OSUpgradeProgressStatus::default()
        }
        None => OSUpgradeProgressStatus::default(),
    }
}

/// Whether `p` is the object `t` tracks: the same name, and the same uid when both
/// know one (a progress deleted and created again under its name is another one).
pub fn is_tracked(t: &Tracked, p: &OSUpgradeProgress) -> bool {
    p.metadata.name.as_deref() == Some(t.name.as_str())
        && (t.uid.is_none() || p.metadata.uid.is_none() || p.metadata.uid == t.uid)
}

/// Whether the tracked progress is gone from `list`.
pub fn tracked_gone(t: &Tracked, list: &[OSUpgradeProgress]) -> bool {
    !list
        .iter()
        .any(|p| p.metadata.name.as_deref() == Some(t.name.as_str()))
}

/// Whether the tracked status must be sent again: the API server shows another one
/// and the last publish did not send this one (the agent died between saving its
/// state and publishing, or the API was down). It is repeated whether or not that
/// progress has anything left to do.
pub fn needs_republish(
    t: &Tracked,
    on_server: Option<&OSUpgradeProgressStatus>,
    published: Option<&OSUpgradeProgressStatus>,
) -> bool {
    on_server != Some(&t.status) && published != Some(&t.status)
}

/// The tracked progress while its attempt owns the node (not finished, past Pending)
/// or has a step to take; otherwise the oldest with something to do.
pub fn choose<P>(decisions: &[Decision<P>]) -> Option<usize> {
    let owns_node = |d: &Decision<P>| {
        d.status
            .phase
            .is_some_and(|p| !p.is_terminal() && p != ProgressPhase::Pending)
    };
    if let Some(i) = decisions.iter().position(|d| d.tracked)
        && (owns_node(&decisions[i]) || !matches!(decisions[i].step, Step::Idle))
    {
        return Some(i);
    }
    decisions.iter().position(|d| !matches!(d.step, Step::Idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(tracked: bool, phase: Option<ProgressPhase>, step: Step<()>) -> Decision<()> {
        Decision {
            tracked,
            status: OSUpgradeProgressStatus {
                phase,
                ..Default::default()
            },
            step,
        }
    }

    #[test]
    fn the_tracked_attempt_goes_first_while_it_owns_the_node() {
        let busy = decision(true, Some(ProgressPhase::Staged), Step::AwaitApproval);
        let other = decision(false, None, Step::Start { retry: false });
        assert_eq!(choose(&[other.clone(), busy.clone()]), Some(1));
        let done = decision(true, Some(ProgressPhase::Completed), Step::Idle);
        assert_eq!(choose(&[done.clone(), other.clone()]), Some(1));
        assert_eq!(choose(&[done]), None);
        let idle = decision(false, Some(ProgressPhase::Completed), Step::Idle);
        assert_eq!(choose(&[idle, other]), Some(1), "the oldest with work");
    }

    #[test]
    fn republish_only_what_the_server_lacks_and_was_not_sent() {
        let t = Tracked {
            name: "p".into(),
            status: OSUpgradeProgressStatus {
                phase: Some(ProgressPhase::Staged),
                ..Default::default()
            },
            ..Default::default()
        };
        let old = OSUpgradeProgressStatus::default();
        assert!(needs_republish(&t, Some(&old), None));
        assert!(needs_republish(&t, None, Some(&old)));
        assert!(!needs_republish(&t, Some(&t.status), None));
        assert!(!needs_republish(&t, Some(&old), Some(&t.status)));
    }

    #[test]
    fn a_recreated_progress_is_not_the_tracked_one() {
        let t = Tracked {
            name: "p".into(),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let mut p = OSUpgradeProgress::new("p", Default::default());
        assert!(is_tracked(&t, &p), "no uid known");
        p.metadata.uid = Some("u2".into());
        assert!(!is_tracked(&t, &p));
        assert!(!tracked_gone(&t, &[p]), "gone is judged by name");
        assert!(tracked_gone(&t, &[]));
    }
}
