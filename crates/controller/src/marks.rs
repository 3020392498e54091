//! The annotations through which the controller remembers what it did, in the cluster
//! rather than in memory, so a restarted (or newly elected) controller carries on exactly
//! where the previous one stopped.
//!
//! On a Node: [`osroll_api::labels::CORDONED_BY`] names the OSUpgrade that cordoned it
//! (`<controller>/<osupgrade>`) and [`CORDONED_AT`] when, which is when its drain began;
//! [`REBOOT_APPROVAL`] that its reboot was approved, written before the approval itself
//! (`rebootApproved` on the progress object), so that a controller that crashed between
//! the two writes, or whose cache has not seen the second yet, finishes the approval
//! instead of taking the node for abandoned.
//! On a progress object: [`CANARY`], and the outcome already reported ([`REPORTED`]) or a
//! drain given up on ([`DRAIN_OUTCOME`]), a rollback that cannot take the node back
//! ([`ROLLBACK_UNAVAILABLE`]), and the node's boot ID when its reboot was
//! approved ([`APPROVED_BOOT`]), each but the rollback's tagged with the `retryNonce` of the attempt it
//! belongs to, so a retry starts clean without anyone erasing them.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use osroll_api::labels;
use serde_json::{Value, json};

use crate::planner::{DrainOutcome, Outcome};

/// On a Node: RFC 3339 time of our cordon.
pub const CORDONED_AT: &str = "osroll.io/cordoned-at";
/// On a Node we cordoned: `<bootID>@<retryNonce>`, the boot ID (empty if unknown) when
/// its drain ended and its reboot was approved. Written before `rebootApproved`; removed
/// with our cordon.
pub const REBOOT_APPROVAL: &str = "osroll.io/reboot-approval";
/// On a progress object: the node is part of the canary batch.
pub const CANARY: &str = "osroll.io/canary";
/// On a progress object: `<Outcome>@<retryNonce>` already reported by an Event.
pub const REPORTED: &str = "osroll.io/reported";
/// On a progress object: `<Failed|Skipped>@<retryNonce>`: the drain timed out.
pub const DRAIN_OUTCOME: &str = "osroll.io/drain-outcome";
/// On a progress object: what blocked the drain that timed out.
pub const DRAIN_MESSAGE: &str = "osroll.io/drain-message";
/// On a progress object: `<bootID>@<retryNonce>`, the Node's boot ID (as its kubelet
/// reported it) when a reboot into the update was approved.
pub const APPROVED_BOOT: &str = "osroll.io/approved-boot-id";
/// On a progress object: this attempt takes the node back to its previous version; the
/// value is when the node completed the upgrade being undone (RFC 3339, or empty).
/// The agent reads it too, so it is [`labels::ROLLBACK`].
pub const ROLLBACK: &str = labels::ROLLBACK;
/// On a progress object: why its node cannot be rolled back (no recorded previous
/// version, or one the catalog lacks); written once, with the one
/// `RollbackUnavailable` Event. The node stays where it is; the rollback fails.
pub const ROLLBACK_UNAVAILABLE: &str = "osroll.io/rollback-unavailable";
/// On a progress object: the node's `osroll.io/os-version` when the progress was
/// created, the version a rollback returns it to.
pub const PREVIOUS_VERSION: &str = "osroll.io/previous-version";

/// The value of `osroll.io/cordoned-by` for nodes cordoned for `upgrade`.
pub fn cordon_value(controller: &str, upgrade: &str) -> String {
    format!("{controller}/{upgrade}")
}

/// Who cordoned `node`, per our annotation.
pub fn cordoned_by(node: &Node) -> Option<&String> {
    node.metadata.annotations.as_ref()?.get(labels::CORDONED_BY)
}

/// When we cordoned `node`.
pub fn cordoned_at(node: &Node) -> Option<DateTime<Utc>> {
    let at = node.metadata.annotations.as_ref()?.get(CORDONED_AT)?;
    DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The boot ID recorded with the approval of `node`'s reboot for the attempt `nonce`
/// (empty when the node reported none), if that approval was recorded.
pub fn reboot_approval<'a>(node: &'a Node, nonce: Option<&str>) -> Option<&'a str> {
    let tagged = node.metadata.annotations.as_ref()?.get(REBOOT_APPROVAL)?;
    untag(tagged, nonce)
}

/// Merge patch that records on a Node that its reboot is approved for the attempt
/// `nonce`, booted as `boot_id`.
pub fn reboot_approval_patch(boot_id: &str, nonce: Option<&str>) -> Value {
    json!({"metadata": {"annotations": {REBOOT_APPROVAL: tagged(boot_id, nonce)}}})
}

/// Merge patch that cordons a node for us, recording who (`cordon_value`) and when
/// (`now`, RFC 3339), with no approval yet; it applies only to the node version
/// `resource_version`.
pub fn cordon_patch(resource_version: Option<&str>, cordon_value: &str, now: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {
                labels::CORDONED_BY: cordon_value,
                CORDONED_AT: now,
                REBOOT_APPROVAL: null,
            },
        },
        "spec": {"unschedulable": true},
    })
}

/// Merge patch that releases a node we cordoned and removes our marks; it applies only
/// to the node version `resource_version`.
pub fn uncordon_patch(resource_version: Option<&str>) -> Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {labels::CORDONED_BY: null, CORDONED_AT: null, REBOOT_APPROVAL: null},
        },
        "spec": {"unschedulable": null},
    })
}

/// `value@nonce`.
pub fn tagged(value: &str, nonce: Option<&str>) -> String {
    format!("{value}@{}", nonce.unwrap_or(""))
}

/// The value part of `value@nonce`, if the nonce is the current one.
pub fn untag<'a>(tagged: &'a str, nonce: Option<&str>) -> Option<&'a str> {
    let (value, n) = tagged.split_once('@')?;
    (n == nonce.unwrap_or("")).then_some(value)
}

/// Parse a reported outcome for the current attempt.
pub fn reported(tagged_value: Option<&String>, nonce: Option<&str>) -> Option<Outcome> {
    tagged_value
        .and_then(|t| untag(t, nonce))
        .and_then(Outcome::parse)
}

/// Parse a drain outcome for the current attempt.
pub fn drain_outcome(tagged_value: Option<&String>, nonce: Option<&str>) -> Option<DrainOutcome> {
    tagged_value
        .and_then(|t| untag(t, nonce))
        .and_then(DrainOutcome::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_belong_to_one_attempt() {
        let t = tagged("RolledBack", Some("r1"));
        assert_eq!(t, "RolledBack@r1");
        assert_eq!(reported(Some(&t), Some("r1")), Some(Outcome::RolledBack));
        assert_eq!(reported(Some(&t), Some("r2")), None, "a retry starts clean");
        assert_eq!(reported(Some(&t), None), None);
        let t = tagged("Skipped", None);
        assert_eq!(drain_outcome(Some(&t), None), Some(DrainOutcome::Skipped));
        assert_eq!(drain_outcome(Some(&"bogus".to_string()), None), None);
        assert_eq!(untag("a@b@c", Some("b@c")), Some("a"));
    }

    #[test]
    fn an_approval_recorded_on_the_node_belongs_to_one_attempt() {
        let mut node = Node::default();
        let patch = reboot_approval_patch("boot-1", Some("r1"));
        let value = patch["metadata"]["annotations"][REBOOT_APPROVAL]
            .as_str()
            .unwrap();
        assert_eq!(value, "boot-1@r1");
        node.metadata.annotations = Some([(REBOOT_APPROVAL.to_string(), value.into())].into());
        assert_eq!(reboot_approval(&node, Some("r1")), Some("boot-1"));
        assert_eq!(
            reboot_approval(&node, Some("r2")),
            None,
            "another attempt's"
        );
        assert_eq!(reboot_approval(&Node::default(), Some("r1")), None);
        for patch in [cordon_patch(None, "osroll/up", "t"), uncordon_patch(None)] {
            let marks = patch["metadata"]["annotations"].as_object().unwrap();
            assert_eq!(marks.get(REBOOT_APPROVAL), Some(&Value::Null), "{patch}");
        }
    }
}
