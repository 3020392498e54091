//! Carry out the planner's actions through the [`Cluster`] adapter, with an Event for
//! every node transition. The executor decides nothing the planner did not: it only
//! turns an action into API calls, and a drain step into approval or the timeout policy.
//!
//! A failed call stops further actions for that node in this pass (the next reconcile
//! retries from fresh state), and nothing is written once leadership is lost. Different
//! nodes' actions run concurrently; one node's run in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::{Resource, ResourceExt};
use osroll_api::{
    DrainTimeoutPolicy, ImageRef, OSUpgrade, OSUpgradeProgress, OSUpgradeProgressSpec,
    SignedCatalog, SourceRef, labels, upgrade::UpgradeReason,
};
use serde_json::json;

use crate::chain::Chain;
use crate::cluster::{ApiError, Cluster, Note, Severity};
use crate::drain::{self, DrainStatus};
use crate::marks;
use crate::metrics::{DrainEnd, Metrics};
use crate::planner::{Action, DrainOutcome, DrainPolicy, Outcome, UncordonReason};
use crate::verify::{self, Unverified};

mod approval;
mod rollback;

/// Nodes whose actions run at the same time.
pub const PARALLEL_NODES: usize = 16;

/// What every progress object of one OSUpgrade carries, from its resolved catalog.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgressTemplate {
    /// The resolved image.
    pub image: ImageRef,
    /// sha256 of the catalog bytes.
    pub catalog_digest: Option<String>,
    /// The catalog and its signature, when it was signed.
    pub signed_catalog: Option<SignedCatalog>,
    /// The catalog entry's `osVersionManagement`: it wins over the OSUpgrade's, since
    /// only the entry's is covered by the signature.
    pub os_version_management: Option<serde_json::Value>,
    /// The catalog's other images, which rollbacks return nodes to.
    pub earlier: Vec<ImageRef>,
}

/// The progress object for `node`: stable name, owner reference, node and source labels.
pub fn new_progress(up: &OSUpgrade, node: &str, t: &ProgressTemplate) -> OSUpgradeProgress {
    let name = up.name_any();
    let external = up.spec.external.clone();
    let mut p = OSUpgradeProgress::new(
        &osroll_api::progress_name(&name, node),
        OSUpgradeProgressSpec {
            source_ref: Some(SourceRef { name: name.clone() }),
            node_name: node.to_string(),
            image: external.is_none().then(|| t.image.clone()),
            retry_nonce: None,
            reboot_approved: false,
            os_version_management: t
                .os_version_management
                .clone()
                .or_else(|| up.spec.os_version_management.clone()),
            restart_on_live_update: up.spec.restart_on_live_update.clone(),
            catalog_digest: t.catalog_digest.clone().filter(|_| external.is_none()),
            signed_catalog: t.signed_catalog.clone(),
            allow_http_images: up.spec.allow_http_images,
            allow_downgrade: up.spec.allow_downgrade,
            kernel_arguments: up.spec.kernel_arguments.clone(),
            external,
        },
    );
    p.metadata.labels = Some(
        [
            (labels::NODE.to_string(), node.to_string()),
            (labels::SOURCE.to_string(), name),
        ]
        .into(),
    );
    p.metadata.owner_references = up.controller_owner_ref(&()).map(|o| vec![o]);
    p
}

/// Drain messages already published, so a drain blocked for minutes yields one Event,
/// not one per poll. Keyed by (OSUpgrade, node).
#[derive(Default)]
pub struct DrainMemory(Mutex<HashMap<(String, String), String>>);

impl DrainMemory {
    /// Remember `msg`; true when it differs from the last one for this node.
    fn changed(&self, up: &str, node: &str, msg: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (up.to_string(), node.to_string());
        if m.get(&key).is_some_and(|old| old == msg) {
            return false;
        }
        m.insert(key, msg.to_string());
        true
    }

    fn forget(&self, up: &str, node: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(up.to_string(), node.to_string()));
    }
}

/// Inputs of one execution pass.
pub struct Act<'a, C: Cluster> {
    /// The API.
    pub cluster: &'a C,
    /// The OSUpgrade acted for.
    pub upgrade: &'a OSUpgrade,
    /// Nodes by name.
    pub nodes: &'a HashMap<String, &'a Node>,
    /// Our progress objects by node name.
    pub progress: &'a HashMap<String, &'a OSUpgradeProgress>,
    /// Content of new progress objects.
    pub template: &'a ProgressTemplate,
    /// Drain settings.
    pub drain: &'a DrainPolicy,
    /// Value of our cordon annotation.
    pub cordon_value: &'a str,
    /// Current time.
    pub now: DateTime<Utc>,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Cleared the moment leadership is lost.
    pub leading: &'a AtomicBool,
    /// Published drain messages.
    pub memory: &'a DrainMemory,
}

/// What a pass produced besides API calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Per draining node, what holds its drain (for the status message).
    pub drain_notes: BTreeMap<String, String>,
    /// Calls that failed.
    pub errors: Vec<String>,
    /// Calls that failed with 409: our cache was stale.
    pub conflicts: usize,
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.to_string()),
        ..Default::default()
    }
}

impl<C: Cluster> Act<'_, C> {
    fn now_str(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn target_version(&self) -> &str {
        match self.template.image.version.as_str() {
            "" => crate::external::TARGET,
            v => v,
        }
    }

    async fn event(
        &self,
        node: &str,
        severity: Severity,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let note = Note {
            severity,
            reason: reason.into(),
            action: action.into(),
            message,
            regarding: self.upgrade.object_ref(&()),
            related: Some(node_ref(node)),
        };
        if let Err(e) = self.cluster.publish(&note).await {
            tracing::warn!(node, reason, error = %Chain(&e), "could not publish event");
        }
    }

    fn progress_name(&self, node: &str) -> String {
        self.progress
            .get(node)
            .map(|p| p.name_any())
            .unwrap_or_else(|| osroll_api::progress_name(&self.upgrade.name_any(), node))
    }

    fn nonce(&self, node: &str) -> Option<&str> {
        self.progress
            .get(node)
            .and_then(|p| p.spec.retry_nonce.as_deref())
    }

    fn node_rv(&self, node: &str) -> Option<String> {
        self.nodes
            .get(node)
            .and_then(|n| n.metadata.resource_version.clone())
    }

    /// Run `actions`: each node's actions in order, different nodes concurrently. Every
    /// release (uncordon) runs first; starts that take a slot freed in this pass run
    /// after them, and only if theirs went through.
    pub async fn run(&self, actions: &[Action]) -> Report {
        let mut chains: Vec<(&str, Vec<&Action>)> = Vec::new();
        for a in actions {
            match chains.iter_mut().find(|(n, _)| *n == a.node()) {
                Some((_, c)) => c.push(a),
                None => chains.push((a.node(), vec![a])),
            }
        }
        // Releases go first, alone: the starts that take their slots wait for them, and
        // a node's other actions (Report, RevokeApproval) do not depend on its release.
        let mut releases = Vec::new();
        let mut rest = Vec::new();
        for (node, chain) in chains {
            let (release, others): (Vec<&Action>, Vec<&Action>) = chain
                .into_iter()
                .partition(|a| matches!(a, Action::Uncordon { .. }));
            if !release.is_empty() {
                releases.push((node, release));
            }
            if !others.is_empty() {
                rest.push((node, others));
            }
        }
        // Starts on freed slots first in the queue, then everything else.
        rest.sort_by_key(|(_, c)| c.iter().all(|a| a.after().is_none()));
        let released = Mutex::new(Vec::<String>::new());
        let mut report = Report::default();
        for phase in [releases, rest] {
            let futs: Vec<_> = phase
                .into_iter()
                .map(|(node, chain)| self.run_node(node, chain, &released))
                .collect();
            let reports: Vec<Report> = futures::stream::iter(futs)
                .buffer_unordered(PARALLEL_NODES)
                .collect()
                .await;
            for r in reports {
                report.drain_notes.extend(r.drain_notes);
                report.errors.extend(r.errors);
                report.conflicts += r.conflicts;
            }
        }
        report
    }

    /// One node's actions, in order, until one fails or leadership is lost.
    async fn run_node(
        &self,
        node: &str,
        chain: Vec<&Action>,
        released: &Mutex<Vec<String>>,
    ) -> Report {
        let mut report = Report::default();
        for a in chain {
            if !self.leading.load(Ordering::SeqCst) {
                report
                    .errors
                    .push("leadership lost; remaining actions dropped".into());
                break;
            }
            if let Some(f) = a.after()
                && !released
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|r| r == f)
            {
                break;
            }
            match self.perform(a, &mut report).await {
                Ok(()) => {
                    if matches!(a, Action::Uncordon { .. }) {
                        released
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(node.to_string());
                    }
                }
                Err(e) => {
                    tracing::warn!(node, action = ?a, error = %Chain(&e), "action failed");
                    if matches!(e, ApiError::Conflict(_)) {
                        report.conflicts += 1;
                    } else {
                        report.errors.push(format!("{node}: {}", Chain(&e)));
                    }
                    break;
                }
            }
        }
        report
    }

    /// Turn one action into its API calls and Event.
    async fn perform(&self, a: &Action, report: &mut Report) -> Result<(), ApiError> {
        match a {
            Action::CreateProgress { node } => self.create_progress(node).await,
            Action::Cordon { node, canary, .. } => self.cordon(node, *canary).await,
            Action::Drain { node } => self.drain(node, report).await,
            Action::ApproveLive { node, canary, .. } => self.approve_live(node, *canary).await,
            Action::ConfirmApproval { node } => self.confirm_approval(node).await,
            Action::RevokeApproval { node } => {
                let patch = json!({"spec": {"rebootApproved": false}});
                self.cluster
                    .patch_progress(&self.progress_name(node), &patch)
                    .await
            }
            Action::Uncordon { node, why } => self.uncordon(node, *why).await,
            Action::Report { node, outcome } => self.report_outcome(node, *outcome).await,
            Action::FlagUnverified { node, why } => {
                self.flag_unverified(node, why).await;
                Ok(())
            }
            Action::ArmRollback { node, upgraded_at } => {
                self.arm_rollback(node, *upgraded_at).await
            }
        }
    }

    async fn create_progress(&self, node: &str) -> Result<(), ApiError> {
        let mut p = new_progress(self.upgrade, node, self.template);
        if let Some(v) = self
            .nodes
            .get(node)
            .and_then(|n| n.labels().get(labels::OS_VERSION))
        {
            p.annotations_mut()
                .insert(marks::PREVIOUS_VERSION.into(), v.clone());
        }
        match self.cluster.create_progress(&p).await {
            Ok(()) | Err(ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let msg = format!(
            "node {node}: created {} to stage {}",
            p.name_any(),
            self.target_version()
        );
        self.event(node, Severity::Normal, "NodeStaging", "CreateProgress", msg)
            .await;
        Ok(())
    }

    /// Mark a canary first (on its progress object), then cordon the node.
    async fn cordon(&self, node: &str, canary: bool) -> Result<(), ApiError> {
        if canary {
            let patch = json!({"metadata": {"annotations": {marks::CANARY: "true"}}});
            self.cluster
                .patch_progress(&self.progress_name(node), &patch)
                .await?;
        }
        let rv = self.node_rv(node);
        let patch = marks::cordon_patch(rv.as_deref(), self.cordon_value, &self.now_str());
        self.cluster.patch_node(node, &patch).await?;
        let what = if canary { " (canary)" } else { "" };
        let msg = format!(
            "node {node} cordoned for its upgrade to {}{what}; draining",
            self.target_version()
        );
        self.event(node, Severity::Normal, "NodeCordoned", "Cordon", msg)
            .await;
        Ok(())
    }

    async fn approve_live(&self, node: &str, canary: bool) -> Result<(), ApiError> {
        let mut patch = json!({"spec": {"rebootApproved": true}});
        if canary {
            patch["metadata"] = json!({"annotations": {marks::CANARY: "true"}});
        }
        self.cluster
            .patch_progress(&self.progress_name(node), &patch)
            .await?;
        let msg = format!(
            "node {node}: update to {} needs no reboot; approved without drain",
            self.target_version()
        );
        self.event(node, Severity::Normal, "LiveUpdateApproved", "Approve", msg)
            .await;
        Ok(())
    }

    async fn uncordon(&self, node: &str, why: UncordonReason) -> Result<(), ApiError> {
        let patch = marks::uncordon_patch(self.node_rv(node).as_deref());
        self.cluster.patch_node(node, &patch).await?;
        self.memory.forget(&self.upgrade.name_any(), node);
        let why = match why {
            UncordonReason::Completed => "upgraded, Ready",
            UncordonReason::Finished => "its upgrade ended without success",
            UncordonReason::Aborted => "the rollout was paused or halted before its reboot",
            UncordonReason::Stale => "nothing of this upgrade is in flight on it",
        };
        let msg = format!("node {node} uncordoned: {why}");
        self.event(node, Severity::Normal, "NodeUncordoned", "Uncordon", msg)
            .await;
        Ok(())
    }

    /// Record the outcome on the progress object (tagged with the attempt), count it and
    /// announce it with the agent's reason.
    async fn report_outcome(&self, node: &str, outcome: Outcome) -> Result<(), ApiError> {
        let tag = marks::tagged(outcome.as_str(), self.nonce(node));
        let patch = json!({"metadata": {"annotations": {marks::REPORTED: tag}}});
        self.cluster
            .patch_progress(&self.progress_name(node), &patch)
            .await?;
        self.metrics.node_outcome(outcome);
        let detail = self
            .progress
            .get(node)
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.failure_reason.clone().or_else(|| s.message.clone()))
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let (severity, reason, msg) = outcome_event(node, outcome, self.target_version(), &detail);
        self.event(node, severity, reason, "Report", msg).await;
        Ok(())
    }

    /// Announce, once per reason and detail, that `node`'s Completed is not believed.
    async fn flag_unverified(&self, node: &str, why: &Unverified) {
        let msg = format!(
            "node {node} says it completed its upgrade to {}, but {}; not counted Completed ({})",
            self.target_version(),
            why.detail,
            UpgradeReason::CompletionUnverified
        );
        // Keyed apart from the node's drain messages.
        let key = format!("{node}/completion");
        if !self.memory.changed(&self.upgrade.name_any(), &key, &msg) {
            return;
        }
        // The reason itself is the Event's: Events differing only in their note are
        // folded into one series.
        let reason = why.reason.as_str();
        self.event(node, Severity::Warning, reason, "VerifyCompletion", msg)
            .await;
    }

    /// One drain step; a drained node gets its reboot approved, a timed-out one the policy.
    async fn drain(&self, node: &str, report: &mut Report) -> Result<(), ApiError> {
        let started = self
            .nodes
            .get(node)
            .and_then(|n| marks::cordoned_at(n))
            .unwrap_or(self.now);
        let elapsed = (self.now - started).to_std().unwrap_or_default();
        match drain::step(self.cluster, node, self.drain, started, self.now).await? {
            DrainStatus::Drained => self.drained(node, elapsed).await?,
            DrainStatus::Draining { remaining, blocked } => {
                let note = self.draining(node, remaining, blocked).await;
                report.drain_notes.insert(node.to_string(), note);
            }
            DrainStatus::Forced { message } => {
                if self
                    .memory
                    .changed(&self.upgrade.name_any(), node, &message)
                {
                    self.metrics.drain_done(DrainEnd::TimedOutForced, elapsed);
                    self.event(
                        node,
                        Severity::Warning,
                        "DrainForced",
                        "Drain",
                        message.clone(),
                    )
                    .await;
                }
                report.drain_notes.insert(node.to_string(), message);
            }
            DrainStatus::GaveUp { policy, message } => {
                self.gave_up(node, policy, &message, elapsed).await?;
                report.drain_notes.insert(node.to_string(), message);
            }
        }
        Ok(())
    }

    async fn drained(&self, node: &str, elapsed: Duration) -> Result<(), ApiError> {
        self.approve_reboot(node).await?;
        self.metrics.drain_done(DrainEnd::Drained, elapsed);
        self.memory.forget(&self.upgrade.name_any(), node);
        let msg = format!(
            "node {node} drained in {}s; reboot into {} approved",
            elapsed.as_secs(),
            self.target_version()
        );
        self.event(node, Severity::Normal, "NodeDrained", "ApproveReboot", msg)
            .await;
        Ok(())
    }

    /// The node's boot ID now, when the update about to be approved needs a reboot:
    /// Completed will need a boot ID other than this one.
    fn boot_before_reboot(&self, node: &str) -> Option<String> {
        let n = self.nodes.get(node)?;
        let p = self.progress.get(node)?;
        let id = verify::boot_id(n)?;
        verify::expects_reboot(p, n).then(|| id.to_string())
    }

    /// Still draining: a new blocker is announced once; returns the status note.
    async fn draining(&self, node: &str, remaining: usize, blocked: Option<String>) -> String {
        let note = match &blocked {
            Some(b) => format!("draining node {node}: {b}"),
            None => format!("draining node {node}: {remaining} pod(s) leaving"),
        };
        if let Some(b) = blocked
            && self.memory.changed(&self.upgrade.name_any(), node, &b)
        {
            let msg = format!("node {node}: {b}; retrying");
            self.event(node, Severity::Warning, "DrainBlocked", "Drain", msg)
                .await;
        }
        note
    }

    /// The drain timed out under `Fail` or `Skip`: mark the attempt so the planner ends it.
    async fn gave_up(
        &self,
        node: &str,
        policy: DrainTimeoutPolicy,
        message: &str,
        elapsed: Duration,
    ) -> Result<(), ApiError> {
        let (outcome, end) = match policy {
            DrainTimeoutPolicy::Skip => (DrainOutcome::Skipped, DrainEnd::TimedOutSkipped),
            _ => (DrainOutcome::Failed, DrainEnd::TimedOutFailed),
        };
        let patch = json!({"metadata": {"annotations": {
            marks::DRAIN_OUTCOME: marks::tagged(outcome.as_str(), self.nonce(node)),
            marks::DRAIN_MESSAGE: message,
        }}});
        self.cluster
            .patch_progress(&self.progress_name(node), &patch)
            .await?;
        self.metrics.drain_done(end, elapsed);
        let msg = message.to_string();
        self.event(node, Severity::Warning, "DrainTimedOut", "Drain", msg)
            .await;
        Ok(())
    }
}

/// Severity, reason and text of the Event reporting how `node`'s attempt ended; `detail`
/// is the agent's reason (`: ...`) or empty.
fn outcome_event(
    node: &str,
    outcome: Outcome,
    target: &str,
    detail: &str,
) -> (Severity, &'static str, String) {
    match outcome {
        Outcome::Completed => (
            Severity::Normal,
            "NodeCompleted",
            format!("node {node} completed its upgrade to {target}"),
        ),
        Outcome::RolledBack => (
            Severity::Warning,
            "NodeRolledBack",
            format!("node {node} rolled back to its previous version{detail}"),
        ),
        Outcome::Failed => (
            Severity::Warning,
            "NodeFailed",
            format!("node {node} failed its upgrade{detail}"),
        ),
        Outcome::DrainFailed => (
            Severity::Warning,
            "NodeDrainFailed",
            format!("node {node} could not be drained in time"),
        ),
        Outcome::Skipped => (
            Severity::Warning,
            "NodeSkipped",
            format!("node {node} skipped: its drain timed out; it stays on its current version"),
        ),
    }
}

#[cfg(test)]
mod tests;
