//! Arming a node's rollback: its progress object is pointed at the version the node ran
//! before (from the catalog), with a fresh attempt and the rollback mark, so the agent
//! re-stages it (an A/B node re-arms its old slot) and the planner takes the node down
//! again like any upgrade.

use chrono::{DateTime, SecondsFormat, Utc};
use kube::ResourceExt;
use osroll_api::ImageRef;
use serde_json::json;

use super::Act;
use crate::cluster::{ApiError, Cluster, Severity};
use crate::marks;

impl<C: Cluster> Act<'_, C> {
    /// The catalog image of the version `node` ran before this OSUpgrade, if known.
    fn previous_image(&self, node: &str) -> Result<&ImageRef, String> {
        let p = self.progress.get(node).ok_or("it has no progress object")?;
        let version = p
            .annotations()
            .get(marks::PREVIOUS_VERSION)
            .ok_or("its previous version was not recorded")?;
        self.template
            .earlier
            .iter()
            .find(|i| &i.version == version)
            .ok_or_else(|| format!("its previous version {version} is not in the catalog"))
    }

    /// Point `node`'s progress back at its previous version; an Event either way. With
    /// no way back, the progress records why ([`marks::ROLLBACK_UNAVAILABLE`]), which
    /// keeps the planner from asking again: one Event per progress object.
    ///
    /// Both writes apply only to the version of the progress the plan saw: a plan made
    /// from a cache that does not show this arming yet gets a conflict instead of arming
    /// the node a second time under a new `retryNonce` (which an agent already Staged
    /// under the first would never answer, stalling the rollback).
    pub(super) async fn arm_rollback(
        &self,
        node: &str,
        upgraded_at: Option<DateTime<Utc>>,
    ) -> Result<(), ApiError> {
        let rv = self
            .progress
            .get(node)
            .and_then(|p| p.metadata.resource_version.clone());
        let image = match self.previous_image(node) {
            Ok(i) => i,
            Err(why) => {
                let patch = json!({"metadata": {
                    "resourceVersion": rv,
                    "annotations": {marks::ROLLBACK_UNAVAILABLE: why.as_str()},
                }});
                let name = self.progress_name(node);
                self.cluster.patch_progress(&name, &patch).await?;
                let msg = format!(
                    "node {node} cannot roll back: {why}; it stays on {}",
                    self.target_version()
                );
                self.event(
                    node,
                    Severity::Warning,
                    "RollbackUnavailable",
                    "RollBack",
                    msg,
                )
                .await;
                return Ok(());
            }
        };
        let mark = upgraded_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_default();
        let nonce = format!("rollback-{}", self.now.timestamp());
        let patch = json!({
            "metadata": {"resourceVersion": rv, "annotations": {marks::ROLLBACK: mark}},
            "spec": {
                "image": image,
                "retryNonce": nonce,
                "rebootApproved": false,
                "allowDowngrade": true,
            },
        });
        let name = self.progress_name(node);
        self.cluster.patch_progress(&name, &patch).await?;
        let msg = format!(
            "node {node}: rolling back from {} to {} ({name})",
            self.target_version(),
            image.version
        );
        self.event(node, Severity::Normal, "RollbackArmed", "RollBack", msg)
            .await;
        Ok(())
    }
}
