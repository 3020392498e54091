//! The in-place trigger: a Node labelled `osroll.io/in-place-update=pending` asks to be
//! reconciled with the active OSUpgrade even when that OSUpgrade's `nodeSelector`
//! leaves it out (a node added after the rollout, a node kept out on purpose until an
//! operator says so). Once that node's progress ends, the label becomes `done` or
//! `failed`, so the request is answered exactly once and visible with `kubectl get
//! nodes -L osroll.io/in-place-update`.
//!
//! Both decisions are pure: which OSUpgrade takes the requests ([`takes_requests`]) and
//! what a node's label should become ([`answer`]).

use chrono::{DateTime, Utc};
use osroll_api::ProgressPhase;

/// The label value that asks for an in-place update.
pub const PENDING: &str = "pending";
/// The node reached the target.
pub const DONE: &str = "done";
/// The node's update failed or rolled back.
pub const FAILED: &str = "failed";

/// What the decision needs to know about one OSUpgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its name.
    pub name: String,
    /// Creation time (`None`: not persisted yet, sorts first).
    pub created: Option<DateTime<Utc>>,
    /// Being deleted.
    pub deleting: bool,
    /// Rejected (invalid spec or catalog): it installs nothing.
    pub rejected: bool,
}

/// The OSUpgrade that takes in-place requests: the newest that is neither being deleted
/// nor rejected (the latest intent for the fleet's version). Ties go to the later name.
pub fn active(upgrades: &[Candidate]) -> Option<&str> {
    upgrades
        .iter()
        .filter(|c| !c.deleting && !c.rejected)
        .max_by(|a, b| {
            let key = |c: &Candidate| (c.created.is_some(), c.created, c.name.clone());
            key(a).cmp(&key(b))
        })
        .map(|c| c.name.as_str())
}

/// Whether `me` takes in-place requests.
pub fn takes_requests(me: &str, upgrades: &[Candidate]) -> bool {
    active(upgrades) == Some(me)
}

/// The label a node with an in-place request should carry now: `Some(done|failed)` once
/// the progress of the OSUpgrade that took it has ended; `None`: leave it.
pub fn answer(label: Option<&str>, phase: Option<ProgressPhase>) -> Option<&'static str> {
    if label != Some(PENDING) {
        return None;
    }
    match phase? {
        ProgressPhase::Completed => Some(DONE),
        ProgressPhase::Failed | ProgressPhase::RolledBack => Some(FAILED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, created: i64, deleting: bool, rejected: bool) -> Candidate {
        Candidate {
            name: name.into(),
            created: DateTime::from_timestamp(created, 0),
            deleting,
            rejected,
        }
    }

    #[test]
    fn the_newest_live_upgrade_takes_the_requests() {
        let ups = vec![
            c("old", 100, false, false),
            c("new", 200, false, false),
            c("bad", 300, false, true),
            c("gone", 400, true, false),
        ];
        assert_eq!(active(&ups), Some("new"));
        assert!(takes_requests("new", &ups));
        assert!(!takes_requests("old", &ups));
        assert!(
            !takes_requests("bad", &ups),
            "a rejected upgrade installs nothing"
        );
        assert_eq!(active(&ups[2..]), None);
        assert_eq!(active(&[]), None);
    }

    #[test]
    fn the_label_is_answered_once_the_progress_ends() {
        use ProgressPhase::*;
        assert_eq!(answer(Some(PENDING), Some(Completed)), Some(DONE));
        assert_eq!(answer(Some(PENDING), Some(Failed)), Some(FAILED));
        assert_eq!(answer(Some(PENDING), Some(RolledBack)), Some(FAILED));
        for phase in [None, Some(Pending), Some(Staged), Some(Rebooting)] {
            assert_eq!(answer(Some(PENDING), phase), None, "{phase:?}");
        }
        // Only a pending request is answered; done and failed stay until a user asks again.
        assert_eq!(answer(Some(DONE), Some(Failed)), None);
        assert_eq!(answer(None, Some(Completed)), None);
        assert_eq!(answer(Some("yes"), Some(Completed)), None);
    }
}
