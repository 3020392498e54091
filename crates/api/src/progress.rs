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
    selectable = ".spec.nodeName",
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
    /// Allow an image older than the node's running version (copied from the OSUpgrade);
    /// without it an agent checking a signed catalog refuses a downgrade.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_downgrade: bool,
    /// Kernel arguments to apply with the image (copied from the OSUpgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_arguments: Option<crate::upgrade::KernelArguments>,
    /// Set (instead of `image`) by an external OSUpgrade: the node's own updater installs
    /// the update; the agent reports its reboot-needed signal, reboots once approved and
    /// confirms after boot that the signal cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<crate::upgrade::ExternalReboots>,
}

/// Where an agent saw that its node needs a reboot.
///
/// * `SentinelFile`: a file such as `/var/run/reboot-required` exists (kured);
/// * `SentinelCommand`: a configured command exited 0 (kured's sentinel command);
/// * `UpdateEngine`: update_engine reports `UPDATE_STATUS_UPDATED_NEED_REBOOT` (CLUO);
/// * `OstreePending`: a staged or pending OSTree deployment waits for the next boot.
///
/// No doc comments on the variants, for the same reason as [`ProgressPhase`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[allow(missing_docs)]
pub enum RebootSource {
    SentinelFile,
    SentinelCommand,
    UpdateEngine,
    OstreePending,
}

impl RebootSource {
    /// The name written to status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SentinelFile => "SentinelFile",
            Self::SentinelCommand => "SentinelCommand",
            Self::UpdateEngine => "UpdateEngine",
            Self::OstreePending => "OstreePending",
        }
    }
}

impl std::fmt::Display for RebootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's "reboot needed" signal, as the agent reports it in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebootSignal {
    /// Which source said so.
    pub source: RebootSource,
    /// What it saw (the file, the command, update_engine's operation, the deployment).
    pub detail: String,
    /// The version the node boots into next, when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
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
    /// The catalog entry's `rebootRequired`: `false` says this image applies without a
    /// reboot (an OSTree deployment switched live), `true` that it needs one. It wins
    /// over `osVersionManagement`, and a node checking a signed catalog refuses a value
    /// that is not the entry's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<bool>,
    /// The chunk index of the packed image, when the catalog entry names one: a node
    /// then installs by delta from its active slot (see `docs/delta.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_index: Option<crate::delta::ImageIndex>,
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
    /// The node's kernel command line (`/proc/cmdline`) when it completed: the
    /// effective `spec.kernelArguments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_command_line: Option<String>,
    /// External OSUpgrades: the reboot-needed signal the agent sees now (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_needed: Option<RebootSignal>,
    /// Staged, Booted, and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Bytes fetched and reused by a delta install, and why it fell back to a full one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<crate::delta::DeltaStatus>,
}

/// Steps of one node's upgrade:
///
/// * `Pending`: an attempt started; nothing written yet;
/// * `Downloading`: fetching the image (or having the deployment tool stage it);
/// * `Writing`: the download is complete; the last writes are being flushed;
/// * `Verifying`: reading the written slot back to check it;
/// * `Staged`: ready to apply; waiting for `spec.rebootApproved`;
/// * `Applying`: a deployment backend is switching to the staged update;
/// * `Rebooting`: the node is rebooting into the update;
/// * `Completed`: the node runs the target version;
/// * `Failed`: the attempt failed; `failureReason` says why;
/// * `RolledBack`: the node came back on the previous version.
///
/// The variants carry no doc comments of their own: the CRD schema would turn them into
/// a `oneOf` of described values, which a structural schema does not allow.
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
    /// Every phase, in the order an attempt passes through them.
    pub const ALL: [ProgressPhase; 10] = [
        Self::Pending,
        Self::Downloading,
        Self::Writing,
        Self::Verifying,
        Self::Staged,
        Self::Applying,
        Self::Rebooting,
        Self::Completed,
        Self::Failed,
        Self::RolledBack,
    ];

    /// Whether no further step follows without a user's retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::RolledBack)
    }

    /// The name written to `status.phase` (and used as a condition reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Downloading => "Downloading",
            Self::Writing => "Writing",
            Self::Verifying => "Verifying",
            Self::Staged => "Staged",
            Self::Applying => "Applying",
            Self::Rebooting => "Rebooting",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// A byte count as progress views show it: `512 B`, `5.5 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl std::fmt::Display for ProgressPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the agent ended an attempt in Failed or RolledBack: the value of
/// `status.failureReason`. Serialized as the variant's name ([`FailureReason::as_str`]).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum FailureReason {
    // The progress itself.
    /// `spec.image` is missing or malformed (version, checksum, URL, size), or
    /// `spec.kernelArguments` holds an argument that cannot be passed.
    InvalidSpec,
    /// The status the agent recorded cannot be continued (e.g. no slot while Rebooting).
    InvalidStatus,
    /// The image URL breaks the image source policy (plain http not allowed, ...).
    ImageSourceNotAllowed,
    // Trust in the image.
    /// The agent requires a signed catalog and the progress carries none.
    CatalogNotSigned,
    /// `spec.catalogDigest` is not the digest of the signed catalog.
    CatalogDigestMismatch,
    /// The signed catalog does not parse.
    CatalogInvalid,
    /// The image is not (or not exactly) an entry of the signed catalog.
    ImageNotInCatalog,
    /// The catalog's signature is missing where one is required.
    SignatureMissing,
    /// The catalog's signature is malformed or does not match its bytes.
    SignatureInvalid,
    /// The catalog was signed by a key the agent does not trust.
    UnknownSigningKey,
    /// `spec.osVersionManagement` (the OSTree reference, the plugin payload) is not the one the signed catalog entry carries.
    OverrideNotSigned,
    /// The signed catalog's expiry has passed (a frozen catalog).
    CatalogExpired,
    /// The signed catalog's serial is older than the newest this node accepted.
    CatalogRolledBack,
    /// The signed catalog's trusted comment carries no serial and expiry.
    CatalogFreshnessMissing,
    /// The signed catalog lists the target version in `blocked`.
    VersionBlocked,
    /// The target is older than the running version and the spec does not allow a downgrade.
    Downgrade,
    /// The progress's status was not written by this agent: it is not acted on.
    ForeignStatus,
    // Downloading and writing an A/B slot.
    /// Network failures outlasted the retry budget.
    NetworkError,
    /// The server answered in a way no retry can fix.
    HttpError,
    /// A redirect broke the image source policy.
    RedirectRefused,
    /// The server's certificate is not trusted, or the handshake failed.
    TlsError,
    /// The downloaded bytes do not hash to `spec.image.checksum`.
    ChecksumMismatch,
    /// The decoded image does not fit the slot or `spec.image.size`.
    ImageTooLarge,
    /// The decoded image is shorter than `spec.image.size`.
    SizeMismatch,
    /// The download is not a valid image (compression, format).
    InvalidImage,
    /// Writing the slot failed.
    WriteError,
    /// The slot does not read back what was written.
    VerifyMismatch,
    /// The slot's device cannot be found or opened.
    SlotUnavailable,
    /// The slot about to be written is mounted.
    SlotMounted,
    // Switching and booting.
    /// The bootloader environment could not be written.
    BootControlError,
    /// The host refused to reboot.
    RebootFailed,
    /// The new slot booted but reports another version than the target.
    VersionMismatch,
    /// The node tried the new slot and came back on the old one.
    BootFallback,
    /// A deployment backend reports the node booted something other than the target.
    BootedWrongDeployment,
    /// This version fell back on this node before; a new `retryNonce` allows it again.
    PreviouslyRolledBack,
    /// A live update finished but the node does not run the target.
    LiveUpdateIncomplete,
    // Install hooks.
    /// The hooks directory does not select one hook unambiguously.
    HookMisconfigured,
    /// The hook could not be started.
    HookNotRunnable,
    /// The hook exited non-zero or was killed.
    HookFailed,
    /// The hook ran past its timeout.
    HookTimedOut,
    /// A hook file is group- or world-writable, or not owned by the agent's user.
    HookUnsafe,
    // Pods after a live update.
    /// `restartOnLiveUpdate` is not a valid label selector.
    InvalidRestartSelector,
    /// Pods could not be restarted after a live update.
    LiveRestartFailed,
    // OSTree.
    /// An OSTree command failed.
    OstreeCommandFailed,
    /// The OSTree tool's status could not be read.
    OstreeStatusUnreadable,
    /// Staging left another deployment next in line than the target.
    OstreeStagedWrongDeployment,
    /// The progress does not name a usable OSTree target.
    OstreeInvalidTarget,
    // OS plugin.
    /// The plugin could not be started.
    PluginNotRunnable,
    /// The plugin exited non-zero, was killed or timed out.
    PluginCrashed,
    /// The plugin's reply is not valid.
    PluginProtocolError,
    /// The plugin answered with `ok: false`.
    PluginRefused,
    // Reboots coordinated for updates installed outside osroll.
    /// The node rebooted and still signals that it needs a reboot; it is not rebooted again.
    RebootStillNeeded,
}

impl FailureReason {
    /// Every reason.
    pub const ALL: [FailureReason; 52] = [
        Self::InvalidSpec,
        Self::InvalidStatus,
        Self::ImageSourceNotAllowed,
        Self::CatalogNotSigned,
        Self::CatalogDigestMismatch,
        Self::CatalogInvalid,
        Self::ImageNotInCatalog,
        Self::SignatureMissing,
        Self::SignatureInvalid,
        Self::UnknownSigningKey,
        Self::OverrideNotSigned,
        Self::CatalogExpired,
        Self::CatalogRolledBack,
        Self::CatalogFreshnessMissing,
        Self::VersionBlocked,
        Self::Downgrade,
        Self::ForeignStatus,
        Self::NetworkError,
        Self::HttpError,
        Self::RedirectRefused,
        Self::TlsError,
        Self::ChecksumMismatch,
        Self::ImageTooLarge,
        Self::SizeMismatch,
        Self::InvalidImage,
        Self::WriteError,
        Self::VerifyMismatch,
        Self::SlotUnavailable,
        Self::SlotMounted,
        Self::BootControlError,
        Self::RebootFailed,
        Self::VersionMismatch,
        Self::BootFallback,
        Self::BootedWrongDeployment,
        Self::PreviouslyRolledBack,
        Self::LiveUpdateIncomplete,
        Self::HookMisconfigured,
        Self::HookNotRunnable,
        Self::HookFailed,
        Self::HookTimedOut,
        Self::HookUnsafe,
        Self::InvalidRestartSelector,
        Self::LiveRestartFailed,
        Self::OstreeCommandFailed,
        Self::OstreeStatusUnreadable,
        Self::OstreeStagedWrongDeployment,
        Self::OstreeInvalidTarget,
        Self::PluginNotRunnable,
        Self::PluginCrashed,
        Self::PluginProtocolError,
        Self::PluginRefused,
        Self::RebootStillNeeded,
    ];

    /// CamelCase name for `status.failureReason` (and the Failed condition's reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::InvalidStatus => "InvalidStatus",
            Self::ImageSourceNotAllowed => "ImageSourceNotAllowed",
            Self::CatalogNotSigned => "CatalogNotSigned",
            Self::CatalogDigestMismatch => "CatalogDigestMismatch",
            Self::CatalogInvalid => "CatalogInvalid",
            Self::ImageNotInCatalog => "ImageNotInCatalog",
            Self::SignatureMissing => "SignatureMissing",
            Self::SignatureInvalid => "SignatureInvalid",
            Self::UnknownSigningKey => "UnknownSigningKey",
            Self::OverrideNotSigned => "OverrideNotSigned",
            Self::CatalogExpired => "CatalogExpired",
            Self::CatalogRolledBack => "CatalogRolledBack",
            Self::CatalogFreshnessMissing => "CatalogFreshnessMissing",
            Self::VersionBlocked => "VersionBlocked",
            Self::Downgrade => "Downgrade",
            Self::ForeignStatus => "ForeignStatus",
            Self::NetworkError => "NetworkError",
            Self::HttpError => "HttpError",
            Self::RedirectRefused => "RedirectRefused",
            Self::TlsError => "TlsError",
            Self::ChecksumMismatch => "ChecksumMismatch",
            Self::ImageTooLarge => "ImageTooLarge",
            Self::SizeMismatch => "SizeMismatch",
            Self::InvalidImage => "InvalidImage",
            Self::WriteError => "WriteError",
            Self::VerifyMismatch => "VerifyMismatch",
            Self::SlotUnavailable => "SlotUnavailable",
            Self::SlotMounted => "SlotMounted",
            Self::BootControlError => "BootControlError",
            Self::RebootFailed => "RebootFailed",
            Self::VersionMismatch => "VersionMismatch",
            Self::BootFallback => "BootFallback",
            Self::BootedWrongDeployment => "BootedWrongDeployment",
            Self::PreviouslyRolledBack => "PreviouslyRolledBack",
            Self::LiveUpdateIncomplete => "LiveUpdateIncomplete",
            Self::HookMisconfigured => "HookMisconfigured",
            Self::HookNotRunnable => "HookNotRunnable",
            Self::HookFailed => "HookFailed",
            Self::HookTimedOut => "HookTimedOut",
            Self::HookUnsafe => "HookUnsafe",
            Self::InvalidRestartSelector => "InvalidRestartSelector",
            Self::LiveRestartFailed => "LiveRestartFailed",
            Self::OstreeCommandFailed => "OstreeCommandFailed",
            Self::OstreeStatusUnreadable => "OstreeStatusUnreadable",
            Self::OstreeStagedWrongDeployment => "OstreeStagedWrongDeployment",
            Self::OstreeInvalidTarget => "OstreeInvalidTarget",
            Self::PluginNotRunnable => "PluginNotRunnable",
            Self::PluginCrashed => "PluginCrashed",
            Self::PluginProtocolError => "PluginProtocolError",
            Self::PluginRefused => "PluginRefused",
            Self::RebootStillNeeded => "RebootStillNeeded",
        }
    }

    /// The reason named `s` (as written by [`FailureReason::as_str`]).
    pub fn parse(s: &str) -> Option<FailureReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compare with a `status.failureReason` string.
impl PartialEq<str> for FailureReason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Compare with a `status.failureReason` string.
impl PartialEq<&str> for FailureReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
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
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
    }

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

    #[test]
    fn phases_are_written_by_name() {
        for p in ProgressPhase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(p.as_str(), format!("{p:?}"));
        }
    }

    /// The strings the agent has always written: users' alerts and scripts match them.
    #[test]
    fn failure_reasons_keep_their_wire_names() {
        let wire = [
            "InvalidSpec",
            "InvalidStatus",
            "ImageSourceNotAllowed",
            "CatalogNotSigned",
            "CatalogDigestMismatch",
            "CatalogInvalid",
            "ImageNotInCatalog",
            "SignatureMissing",
            "SignatureInvalid",
            "UnknownSigningKey",
            "OverrideNotSigned",
            "CatalogExpired",
            "CatalogRolledBack",
            "CatalogFreshnessMissing",
            "VersionBlocked",
            "Downgrade",
            "ForeignStatus",
            "NetworkError",
            "HttpError",
            "RedirectRefused",
            "TlsError",
            "ChecksumMismatch",
            "ImageTooLarge",
            "SizeMismatch",
            "InvalidImage",
            "WriteError",
            "VerifyMismatch",
            "SlotUnavailable",
            "SlotMounted",
            "BootControlError",
            "RebootFailed",
            "VersionMismatch",
            "BootFallback",
            "BootedWrongDeployment",
            "PreviouslyRolledBack",
            "LiveUpdateIncomplete",
            "HookMisconfigured",
            "HookNotRunnable",
            "HookFailed",
            "HookTimedOut",
            "HookUnsafe",
            "InvalidRestartSelector",
            "LiveRestartFailed",
            "OstreeCommandFailed",
            "OstreeStatusUnreadable",
            "OstreeStagedWrongDeployment",
            "OstreeInvalidTarget",
            "PluginNotRunnable",
            "PluginCrashed",
            "PluginProtocolError",
            "PluginRefused",
            "RebootStillNeeded",
        ];
        assert_eq!(wire.len(), FailureReason::ALL.len());
        for (r, name) in FailureReason::ALL.into_iter().zip(wire) {
            assert_eq!(r.as_str(), name);
            assert_eq!(serde_json::to_value(r).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<FailureReason>(name.into()).unwrap(),
                r
            );
            assert_eq!(FailureReason::parse(name), Some(r));
            assert_eq!(r.to_string(), name);
            assert!(r == name);
        }
        assert_eq!(FailureReason::parse("NoSuchReason"), None);
    }
}
