//! The health gate: whether a new disruption may start now (every check passes and the
//! soak after the last completed node is over), whether a failing check has held the
//! rollout past its timeout, and whether the rollout now goes back (a rollback begun
//! earlier, asked for, or the failure policy's answer to a failed rollout).
//!
//! Its inputs are the checks' verdicts (evaluated by the reconciler before planning) and
//! what the OSUpgrade's status remembers (since when a check fails, whether a rollback
//! began), so a restarted controller reaches the same answer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use osroll_api::health::FailurePolicy;

use osroll_api::upgrade::UpgradeReason;
use osroll_api::{Condition, UpgradePhase};

use super::rollback::{self, Progress};
use super::{NodeObs, Outcome};

/// The health gate's inputs for one OSUpgrade.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthObs {
    /// The first failing check and what it observed; `None` when all pass.
    pub failing: Option<Failing>,
    /// Since when a check fails, as the status recorded it (absent: not failing before).
    pub failing_since: Option<DateTime<Utc>>,
    /// How long the checks are watched after a node completes before the next start.
    pub soak: Duration,
    /// How long a failing check may hold the rollout before it is Failed.
    pub timeout: Duration,
    /// What a failed rollout does.
    pub on_failure: FailurePolicy,
    /// `spec.rollback`: a person asked for the rollback.
    pub rollback_requested: bool,
    /// The status records a rollback of this version that already began.
    pub rolling_back: bool,
    /// The status records that a check failed this rollout past its timeout: it stays
    /// Failed even if the check recovers.
    pub failed: bool,
    /// How often the checks are evaluated again while the rollout runs (zero: no checks).
    pub poll: Duration,
}

/// A failing check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    /// The check's name (`builtin:<what>` for the built-in ones).
    pub check: String,
    /// What it observed, for the condition and the Event.
    pub observed: String,
}

/// Why a rollback runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RollbackCause {
    /// A health check failed past its timeout under `onFailure: Rollback`.
    HealthCheckFailed,
    /// `maxFailures` nodes failed under `onFailure: Rollback`.
    MaxFailuresReached,
    /// `spec.rollback` (e.g. `osroll rollback NAME`).
    Requested,
    /// The status says a rollback began; it goes on whatever health says now.
    Continuing,
}

impl RollbackCause {
    /// CamelCase name, recorded in `status.rollback.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackCause::HealthCheckFailed => "HealthCheckFailed",
            RollbackCause::MaxFailuresReached => "MaxFailuresReached",
            RollbackCause::Requested => "Requested",
            RollbackCause::Continuing => "Continuing",
        }
    }
}

/// The gate's answer at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct GateView {
    /// A check fails now: nothing new starts.
    pub failing: Option<Failing>,
    /// Since when (now, if it just began failing).
    pub failing_since: Option<DateTime<Utc>>,
    /// The failing check held the rollout past its timeout: the rollout failed.
    pub timed_out: bool,
    /// Soaking after the last completed node until then: nothing new starts before.
    pub soaking_until: Option<DateTime<Utc>>,
    /// The rollout goes back, and why.
    pub rollback: Option<RollbackCause>,
}

impl GateView {
    /// Whether forward work must not start anything new.
    pub fn holds(&self) -> bool {
        self.failing.is_some() || self.timed_out || self.rollback.is_some()
    }
}

/// Assess the gate for `nodes` at `now`; `budget_spent` says `maxFailures` was reached.
pub fn assess(
    h: &HealthObs,
    nodes: &[&NodeObs],
    budget_spent: bool,
    now: DateTime<Utc>,
) -> GateView {
    let failing_since = h.failing.as_ref().map(|_| h.failing_since.unwrap_or(now));
    let timed_out =
        h.failed || failing_since.is_some_and(|since| now >= since + to_chrono(h.timeout));
    let rollback = if h.rolling_back {
        Some(RollbackCause::Continuing)
    } else if h.rollback_requested {
        Some(RollbackCause::Requested)
    } else if h.on_failure == FailurePolicy::Rollback && timed_out {
        Some(RollbackCause::HealthCheckFailed)
    } else if h.on_failure == FailurePolicy::Rollback && budget_spent {
        Some(RollbackCause::MaxFailuresReached)
    } else {
        None
    };
    GateView {
        failing: h.failing.clone(),
        failing_since,
        timed_out,
        soaking_until: soaking_until(h.soak, nodes, now),
        rollback,
    }
}

/// The end of the soak after the most recent forward completion, while it lasts.
fn soaking_until(soak: Duration, nodes: &[&NodeObs], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if soak.is_zero() {
        return None;
    }
    let last = nodes
        .iter()
        .filter_map(|n| n.progress.as_ref())
        .filter(|p| p.rollback.is_none() && p.outcome() == Some(Outcome::Completed))
        .filter_map(|p| p.completed_at)
        .max()?;
    let until = last + to_chrono(soak);
    (now < until).then_some(until)
}

/// Phase, reason, message and conditions of the planner's summary, amended by the gate:
/// a rollback's progress wins, then a check that failed, then one failing now. A
/// `Healthy` condition names the failing check and what it observed.
pub(super) fn overlay(
    g: &GateView,
    nodes: &[&NodeObs],
    described: (UpgradePhase, UpgradeReason, String, Vec<Condition>),
) -> (UpgradePhase, UpgradeReason, String, Vec<Condition>) {
    let (phase, reason, message, mut conditions) = described;
    let failing = g
        .failing
        .as_ref()
        .map(|f| format!("health check {} fails: {}", f.check, f.observed));
    let (phase, reason, message) = match (g.rollback, &failing) {
        (Some(cause), _) => back(cause, rollback::progress(nodes)),
        (None, Some(f)) if g.timed_out => (
            UpgradePhase::Failed,
            UpgradeReason::HealthCheckFailed,
            format!("halted: {f}; {message}"),
        ),
        (None, None) if g.timed_out => (
            UpgradePhase::Failed,
            UpgradeReason::HealthCheckFailed,
            format!("halted: a health check failed past its timeout; {message}"),
        ),
        (None, Some(f)) if phase == UpgradePhase::Progressing => (
            phase,
            UpgradeReason::HealthCheckFailing,
            format!("{f}; nothing new starts; {message}"),
        ),
        _ => (phase, reason, message),
    };
    for c in conditions.iter_mut() {
        match c.type_.as_str() {
            "Ready" => *c = Condition::new("Ready", c.is_true(), reason.as_str(), message.clone()),
            "Progressing" => {
                let on = matches!(phase, UpgradePhase::Progressing | UpgradePhase::RollingBack);
                *c = Condition::new("Progressing", on, reason.as_str(), message.clone());
            }
            _ => {}
        }
    }
    conditions.push(match (&g.failing, failing) {
        (Some(_), Some(text)) => Condition::new("Healthy", false, "HealthCheckFailing", text),
        _ => Condition::new("Healthy", true, "ChecksPass", ""),
    });
    (phase, reason, message, conditions)
}

/// Phase, reason and message of a rollback.
fn back(cause: RollbackCause, p: Progress) -> (UpgradePhase, UpgradeReason, String) {
    let why = match cause {
        RollbackCause::Continuing => String::new(),
        c => format!(" ({})", c.as_str()),
    };
    match p {
        Progress::Running { back, of } => (
            UpgradePhase::RollingBack,
            UpgradeReason::RollingBack,
            format!("rolling back{why}: {back} of {of} node(s) back on their previous version"),
        ),
        Progress::Done { back, failed } if failed > 0 => (
            UpgradePhase::Failed,
            UpgradeReason::RollbackFailed,
            format!("rollback halted: {failed} node(s) could not go back; {back} did"),
        ),
        Progress::Done { back, .. } => (
            UpgradePhase::RolledBack,
            UpgradeReason::AllNodesRolledBack,
            format!("{back} node(s) back on their previous version"),
        ),
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::ProgressObs;
    use osroll_api::ProgressPhase;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn red() -> Option<Failing> {
        Some(Failing {
            check: "web".into(),
            observed: "readyReplicas 1 of 3".into(),
        })
    }

    #[test]
    fn a_failing_check_holds_then_fails_after_its_timeout() {
        let h = HealthObs {
            failing: red(),
            failing_since: Some(t(0)),
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let g = assess(&h, &[], false, t(59));
        assert!(g.holds() && !g.timed_out && g.rollback.is_none());
        let g = assess(&h, &[], false, t(60));
        assert!(g.timed_out);
        assert_eq!(g.rollback, None, "Halt is the default");
        let h = HealthObs {
            on_failure: FailurePolicy::Rollback,
            ..h
        };
        assert_eq!(
            assess(&h, &[], false, t(60)).rollback,
            Some(RollbackCause::HealthCheckFailed)
        );
    }

    #[test]
    fn a_check_that_starts_failing_now_is_timed_from_now() {
        let h = HealthObs {
            failing: red(),
            timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let g = assess(&h, &[], false, t(5));
        assert_eq!(g.failing_since, Some(t(5)));
        assert!(!g.timed_out);
        let zero = HealthObs {
            timeout: Duration::ZERO,
            ..h
        };
        assert!(assess(&zero, &[], false, t(5)).timed_out);
    }

    #[test]
    fn a_rollback_once_begun_continues_when_health_recovers() {
        let h = HealthObs {
            rolling_back: true,
            ..Default::default()
        };
        let g = assess(&h, &[], false, t(0));
        assert_eq!(g.rollback, Some(RollbackCause::Continuing));
        assert!(g.holds());
        let spent = HealthObs {
            on_failure: FailurePolicy::Rollback,
            ..Default::default()
        };
        assert_eq!(
            assess(&spent, &[], true, t(0)).rollback,
            Some(RollbackCause::MaxFailuresReached)
        );
        assert_eq!(assess(&spent, &[], false, t(0)).rollback, None);
    }

    #[test]
    fn the_soak_runs_from_the_last_completion() {
        let done = |at: i64| NodeObs {
            name: format!("n{at}"),
            progress: Some(ProgressObs {
                phase: ProgressPhase::Completed,
                completed_at: Some(t(at)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (a, b) = (done(0), done(20));
        let h = HealthObs {
            soak: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(
            assess(&h, &[&a, &b], false, t(25)).soaking_until,
            Some(t(50))
        );
        assert_eq!(assess(&h, &[&a, &b], false, t(50)).soaking_until, None);
    }
}
