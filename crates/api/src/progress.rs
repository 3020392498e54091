//! `OSUpgradeProgress`: one node's upgrade. The controller writes its spec (what to
//! install, whether the reboot is approved); the node agent writes its status.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::upgrade::is_false;

/// What one node should install, and whether it may reboot into it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "osroll.io",
    version = "v1alpha1",
    kind = "OSUpgradeProgress",
    plural = "osupgradeprogresses",
    shortname = "osup",
    status = "OSUpgradeProgressStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourceRef.name"}"#,
    printcolumn = r#"{"name":"Current","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.targetVersion"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OSUpgradeProgressSpec {
    /// The OSUpgrade this progress was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
    /// The node to upgrade.
    pub node_name: String,
    /// The resolved image, copied from the catalog by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Change to any new value to retry a Failed or RolledBack upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_nonce: Option<String>,
    /// Set by the controller once the node is drained: the agent may now reboot (or
    /// apply a live update).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reboot_approved: bool,
    /// Opaque object for the node's OS plugin, copied from the OSUpgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::opaque_object")]
    pub os_version_management: Option<serde_json::Value>,
    /// Pods to restart after a live (no-reboot) update, copied from the OSUpgrade's
    /// `restartOnLiveUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_on_live_update:
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// sha256 of the verified catalog the image came from (stamped by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_digest: Option<String>,
    /// The signed catalog itself, so an agent that requires signatures can check the
    /// image fields against it instead of trusting whoever wrote this spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_catalog: Option<SignedCatalog>,
    /// Allow an `http://` image URL (copied from the OSUpgrade).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_http_images: bool,
}

/// Catalog text and its detached minisign signature.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SignedCatalog {
    /// The catalog YAML, byte for byte as signed.
    pub content: String,
    /// The `.minisig` text.
    pub signature: String,
}

/// Reference to the owning OSUpgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SourceRef {
    /// OSUpgrade name.
    pub name: String,
}

/// One image from the catalog.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// OS version the image contains.
    #[schemars(schema_with = "crate::schema::version")]
    pub version: String,
    /// Where to download it (zstd-compressed or raw).
    pub url: String,
    /// `sha256:<64 hex>` of the bytes served at `url`.
    #[schemars(schema_with = "crate::schema::checksum")]
    pub checksum: String,
    /// Expanded (written) size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// What the agent has done on its node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OSUpgradeProgressStatus {
    /// Version the node runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Version being installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ProgressPhase>,
    /// When this attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it reached Completed, Failed or RolledBack (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Last status write (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<String>,
    /// Attempts after the first, counted on each changed `retryNonce`.
    #[serde(default)]
    pub retry_count: u32,
    /// The slot (A/B) the new image is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_partition: Option<String>,
    /// Machine-readable failure cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Image bytes processed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Image bytes in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// The `spec.retryNonce` the current attempt answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry_nonce: Option<String>,
    /// Whether applying the staged update needs a reboot (false: live update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<bool>,
    /// Staged, Booted, and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Steps of one node's upgrade.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[allow(missing_docs)]
pub enum ProgressPhase {
    Pending,
    Downloading,
    Writing,
    Verifying,
    Staged,
    Applying,
    Rebooting,
    Completed,
    Failed,
    RolledBack,
}

impl ProgressPhase {
    /// Whether no further step follows without a user's retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::RolledBack)
    }
}

/// The stable name of the progress object for `upgrade` on `node`: `osupgrade-<10 hex>`.
/// Deterministic, so a restarted controller finds what it created instead of duplicating.
pub fn progress_name(upgrade: &str, node: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{upgrade}/{node}").as_bytes());
    format!("osupgrade-{}", &hex::encode(h)[..10])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_are_stable_and_distinct() {
        let a = progress_name("up-1", "node-1");
        assert_eq!(a, progress_name("up-1", "node-1"));
        assert_ne!(a, progress_name("up-1", "node-2"));
        assert_ne!(a, progress_name("up-2", "node-1"));
        assert!(a.starts_with("osupgrade-") && a.len() == 20, "{a}");
    }

    #[test]
    fn terminal_phases() {
        assert!(ProgressPhase::RolledBack.is_terminal());
        assert!(!ProgressPhase::Staged.is_terminal());
    }
}
