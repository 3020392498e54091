//! The reconcile's health and rollback steps: evaluate the checks before planning, hand
//! the planner what the status remembers (since when a check fails, whether a rollback
//! of this version began), and record the plan's answer in the status with an Event
//! when a check starts failing or a rollback begins.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use osroll_api::health::{HealthStatus, RollbackStatus};
use osroll_api::upgrade::UpgradeReason;
use osroll_api::{OSUpgrade, OSUpgradeStatus, ProgressPhase, UpgradePhase};

use super::{Gate, Shared, World, progresses_of};
use crate::cluster::{Cluster, Severity};
use crate::health::HealthSpec;
use crate::health::probe::{Probe, Upgraded};
use crate::marks;
use crate::observe::{parse_time, progress_obs};
use crate::planner::{Failing, HealthObs, Plan, RollbackCause};

/// How often checks are evaluated again while a rollout with checks runs.
pub(super) const HEALTH_POLL: Duration = Duration::from_secs(5);

impl<C: Cluster> Shared<C> {
    /// The first failing check for `up`, when its rollout goes forward (a rollback runs
    /// whatever health says, and a finished rollout is not watched).
    pub(super) async fn evaluate_health(
        &self,
        up: &OSUpgrade,
        gate: &Gate,
        world: &World<'_>,
        now: DateTime<Utc>,
    ) -> Option<Failing> {
        let resolved = gate.open.as_ref().ok()?;
        let st = up.status.as_ref();
        if rolling_back(st, &resolved.image.version) || up.spec.rollback {
            return None;
        }
        if st
            .and_then(|s| s.phase)
            .is_some_and(|p| matches!(p, UpgradePhase::Completed | UpgradePhase::RolledBack))
        {
            return None;
        }
        let upgraded = upgraded(&up.name_any(), world);
        let probe = Probe {
            cluster: &self.cluster,
            fetcher: self.fetcher.as_ref(),
            upgrade: &up.name_any(),
            now,
        };
        probe.first_failing(&gate.spec.health, &upgraded).await
    }

    /// Events for what changed in the health gate and the rollback.
    pub(super) async fn announce_health(&self, up: &OSUpgrade, new: &OSUpgradeStatus) {
        let old = up.status.as_ref();
        let old_check = old
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.failing_check.clone());
        if let Some(h) = &new.health
            && h.failing_check != old_check
        {
            let msg = format!(
                "health check {} fails: {}; nothing new starts",
                h.failing_check.as_deref().unwrap_or_default(),
                h.observed.as_deref().unwrap_or_default()
            );
            self.upgrade_event(up, Severity::Warning, "HealthCheckFailing", msg)
                .await;
        }
        if let Some(r) = &new.rollback
            && old.and_then(|s| s.rollback.as_ref()) != Some(r)
            && r.finished_at.is_none()
        {
            let msg = format!("rolling back {} ({})", r.version, r.reason);
            self.upgrade_event(up, Severity::Warning, "RollbackStarted", msg)
                .await;
        }
    }
}

/// Nodes whose forward attempt of `up` completed: the built-in checks watch them.
fn upgraded<'w>(up: &str, world: &'w World<'_>) -> Vec<Upgraded<'w>> {
    progresses_of(up, world)
        .filter(|p| !p.annotations().contains_key(marks::ROLLBACK))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase) == Some(ProgressPhase::Completed))
        .filter_map(|p| {
            let node: &Node = world
                .nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(p.spec.node_name.as_str()))?;
            Some(Upgraded {
                node,
                completed_at: progress_obs(p).completed_at,
            })
        })
        .collect()
}

/// A rollback of `version` recorded in the status.
fn rolling_back(st: Option<&OSUpgradeStatus>, version: &str) -> bool {
    st.and_then(|s| s.rollback.as_ref())
        .is_some_and(|r| r.version == version)
}

/// The planner's health inputs: the spec's settings, the evaluation, and the status's memory.
pub(super) fn observed(
    up: &OSUpgrade,
    spec: &HealthSpec,
    failing: Option<Failing>,
    version: Option<&str>,
) -> HealthObs {
    let st = up.status.as_ref();
    let same_generation = st.and_then(|s| s.observed_generation) == up.metadata.generation;
    let failed = same_generation
        && st.is_some_and(|s| {
            s.phase == Some(UpgradePhase::Failed)
                && s.reason.as_deref() == Some(UpgradeReason::HealthCheckFailed.as_str())
        });
    HealthObs {
        failing,
        failing_since: st
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.failing_since.as_deref())
            .and_then(parse_time),
        soak: spec.soak,
        timeout: spec.timeout,
        on_failure: spec.on_failure,
        rollback_requested: up.spec.rollback,
        rolling_back: version.is_some_and(|v| rolling_back(st, v)),
        failed,
        poll: if spec.checks.is_empty() {
            Duration::ZERO
        } else {
            HEALTH_POLL
        },
    }
}

/// Record the plan's health and rollback in `st`.
pub(super) fn record(st: &mut OSUpgradeStatus, plan: &Plan, version: &str, now: DateTime<Utc>) {
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    st.health = plan.failing.as_ref().map(|f| HealthStatus {
        failing_check: Some(f.check.clone()),
        observed: Some(f.observed.clone()),
        failing_since: plan.failing_since.map(stamp),
    });
    st.rollback = match (st.rollback.take(), plan.rollback) {
        (Some(mut r), Some(_)) => {
            // Failed while going back: it ended with a node that could not go back.
            let ended = matches!(plan.phase, UpgradePhase::RolledBack | UpgradePhase::Failed);
            if ended && r.finished_at.is_none() {
                r.finished_at = Some(stamp(now));
            }
            Some(r)
        }
        (_, Some(cause)) => Some(RollbackStatus {
            started_at: stamp(now),
            reason: match cause {
                RollbackCause::Continuing => RollbackCause::Requested.as_str(),
                c => c.as_str(),
            }
            .into(),
            version: version.to_string(),
            finished_at: None,
        }),
        (_, None) => None,
    };
}
