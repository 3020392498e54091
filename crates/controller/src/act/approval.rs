//! Approving a drained node's reboot in two writes, the Node first: its
//! [`marks::REBOOT_APPROVAL`] annotation, then `rebootApproved` on its progress object.
//! The Node's record is what a controller that crashed between the two writes, or whose
//! cache does not show the second yet, reads as "approved": it confirms the approval
//! ([`Action::ConfirmApproval`](crate::planner::Action::ConfirmApproval)) with the same
//! boot ID, where it would otherwise release the node while its agent reboots it, or
//! drain and approve it a second time.

use serde_json::json;

use super::Act;
use crate::cluster::{ApiError, Cluster, Severity};
use crate::marks;

impl<C: Cluster> Act<'_, C> {
    /// Approve `node`'s reboot: record it on the Node, then on its progress object with
    /// the boot ID it runs now (when the update needs a reboot).
    pub(super) async fn approve_reboot(&self, node: &str) -> Result<(), ApiError> {
        let boot = self.boot_before_reboot(node);
        let record = marks::reboot_approval_patch(boot.as_deref().unwrap_or(""), self.nonce(node));
        self.cluster.patch_node(node, &record).await?;
        self.write_approval(node, boot.as_deref()).await
    }

    /// `rebootApproved` on `node`'s progress object, with the boot ID it was approved at
    /// when known.
    async fn write_approval(&self, node: &str, boot: Option<&str>) -> Result<(), ApiError> {
        let mut patch = json!({"spec": {"rebootApproved": true}});
        if let Some(boot) = boot.filter(|b| !b.is_empty()) {
            let tag = marks::tagged(boot, self.nonce(node));
            patch["metadata"] = json!({"annotations": {marks::APPROVED_BOOT: tag}});
        }
        self.cluster
            .patch_progress(&self.progress_name(node), &patch)
            .await
    }

    /// Write the approval the Node records onto `node`'s progress object, with the boot
    /// ID recorded then (not the one it reports now: it may be rebooting already).
    pub(super) async fn confirm_approval(&self, node: &str) -> Result<(), ApiError> {
        let recorded = self
            .nodes
            .get(node)
            .and_then(|n| marks::reboot_approval(n, self.nonce(node)));
        let Some(boot) = recorded else {
            // The planner saw the record; this pass's snapshot is the same one.
            return Ok(());
        };
        self.write_approval(node, Some(boot)).await?;
        let msg = format!(
            "node {node}: reboot into {} approved (as recorded on the Node at its drain)",
            self.target_version()
        );
        self.event(
            node,
            Severity::Normal,
            "RebootApprovalConfirmed",
            "ApproveReboot",
            msg,
        )
        .await;
        Ok(())
    }
}
