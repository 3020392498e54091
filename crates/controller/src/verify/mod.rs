//! What the controller believes about a node without taking its agent's word alone:
//! whether the node's backend may update without a reboot (so that skipping cordon and
//! drain is the OSUpgrade's decision, not the progress status's), and whether a node
//! whose progress says Completed really runs the target version: its status, its Node's
//! version label, and (for an update that needed a reboot) the kubelet's boot ID, which
//! no agent can write, must agree. An external update has no version: its node must have
//! rebooted (boot ID) and no longer be labelled as needing a reboot.
//!
//! Pure: the observer hands in the API objects it holds.

use k8s_openapi::api::core::v1::Node;
use osroll_api::upgrade::UnverifiedReason;
use osroll_api::{OSUpgradeProgress, ProgressPhase, labels};
use serde_json::Value;

use crate::marks;

/// Why a Completed claim is not believed, for the Event and the Degraded condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unverified {
    /// The machine-readable reason.
    pub reason: UnverifiedReason,
    /// What disagreed with what.
    pub detail: String,
}

/// Whether the OSUpgrade (through the `osVersionManagement` its nodes get) asks for
/// updates without a reboot: `ostree.rebootRequired: false` for the OSTree backend (the
/// key the agent reads), or a top-level `rebootRequired: false` for an OS plugin.
/// Anything else means every node is cordoned and drained, whatever its agent reports.
pub fn live_update_requested(os_version_management: Option<&Value>) -> bool {
    let Some(v) = os_version_management else {
        return false;
    };
    let no_reboot =
        |o: Option<&Value>| o.and_then(|o| o.get("rebootRequired")) == Some(&Value::Bool(false));
    no_reboot(v.get("ostree")) || no_reboot(Some(v))
}

/// Whether the node's `osroll.io/slot` label names an A/B slot: that backend always
/// boots into the new slot, so it never updates live.
pub fn is_ab_node(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::SLOT))
        .is_some_and(|s| s == "A" || s == "B")
}

/// Whether approving `p` on `node` means a reboot: always on an A/B node (that backend
/// boots into the new slot), otherwise unless the agent reported `rebootRequired: false`
/// (a plugin may apply live on its own; the OSTree backend goes live only where the
/// OSUpgrade asked for it).
pub fn expects_reboot(p: &OSUpgradeProgress, node: &Node) -> bool {
    let live = p.status.as_ref().and_then(|s| s.reboot_required) == Some(false);
    is_ab_node(node) || !live
}

/// The kubelet-reported boot ID of `node`.
pub fn boot_id(node: &Node) -> Option<&str> {
    let id = node.status.as_ref()?.node_info.as_ref()?.boot_id.as_str();
    (!id.is_empty()).then_some(id)
}

/// For a progress whose current attempt says Completed: why that is not believed, if
/// a source disagrees with its target (`spec.image.version`, which only the controller
/// writes). A missing source is no disagreement.
pub fn check_completed(p: &OSUpgradeProgress, node: &Node) -> Option<Unverified> {
    let st = p.status.as_ref()?;
    if st.phase != Some(ProgressPhase::Completed) {
        return None;
    }
    if p.spec.external.is_some() {
        return still_signalled(node).or_else(|| not_rebooted(p, node));
    }
    let target = p.spec.image.as_ref()?.version.as_str();
    versions_agree(target, st.current_version.as_deref(), node).or_else(|| not_rebooted(p, node))
}

/// Why the update's reboot did not happen: the kubelet still reports the boot ID the
/// controller recorded when it approved the reboot (only where one was expected).
fn not_rebooted(p: &OSUpgradeProgress, node: &Node) -> Option<Unverified> {
    let tagged = p.metadata.annotations.as_ref()?.get(marks::APPROVED_BOOT)?;
    let before = marks::untag(tagged, p.spec.retry_nonce.as_deref())?;
    let now = boot_id(node)?;
    (now == before).then(|| Unverified {
        reason: UnverifiedReason::NotRebooted,
        detail: format!("the kubelet still reports boot ID {now}, as when its reboot was approved"),
    })
}

/// For an external update (no version to compare): why the reboot is not over, if the
/// node's agent still labels it as needing one.
fn still_signalled(node: &Node) -> Option<Unverified> {
    let label = node.metadata.labels.as_ref()?.get(labels::REBOOT_NEEDED)?;
    (label == "true").then(|| Unverified {
        reason: UnverifiedReason::RebootStillNeeded,
        detail: format!(
            "the node's {} label is still \"true\"",
            labels::REBOOT_NEEDED
        ),
    })
}

/// Why the reported version or the Node's version label disagree with `target`, if
/// they do.
fn versions_agree(target: &str, reported: Option<&str>, node: &Node) -> Option<Unverified> {
    if let Some(reported) = reported
        && reported != target
    {
        return Some(Unverified {
            reason: UnverifiedReason::ReportedVersionMismatch,
            detail: format!("status.currentVersion is {reported:?}, the target is {target:?}"),
        });
    }
    let label = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::OS_VERSION));
    if let Some(label) = label
        && *label != labels::label_value(target)
    {
        return Some(Unverified {
            reason: UnverifiedReason::NodeLabelMismatch,
            detail: format!(
                "the node's {} label is {label:?}, the target is {target:?}",
                labels::OS_VERSION
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests;
