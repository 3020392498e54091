//! `OSUpgrade`: the user's request to move a set of nodes to one OS version.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// Desired state of an OS upgrade across the nodes it selects.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "osroll.io",
    version = "v1alpha1",
    kind = "OSUpgrade",
    plural = "osupgrades",
    shortname = "osu",
    status = "OSUpgradeStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Resolved","type":"string","jsonPath":".status.resolvedVersion"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"required": ["version", "catalog"]}, {"required": ["external"]}
]))]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.external) != (has(self.version) || has(self.catalog))",
     "message": "set either spec.version and spec.catalog (osroll installs the update) or spec.external (reboots coordinated for an update installed by the node's own updater), not both"},
    {"rule": "has(self.external) || (has(self.version) && has(self.catalog))",
     "message": "spec.version and spec.catalog are both required unless spec.external is set"}
]))]
pub struct OSUpgradeSpec {
    /// Target OS version, or `stable` for the catalog's stable alias. Empty (absent) only
    /// with `external`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(schema_with = "crate::schema::version_or_stable")]
    pub version: String,
    /// Nodes to upgrade. Empty selects every node labelled `osroll.io/managed=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Where the image catalog comes from. Absent only with `external`.
    #[serde(default, skip_serializing_if = "CatalogSource::is_empty")]
    pub catalog: CatalogSource,
    /// Coordinate reboots for updates the nodes' own updaters installed (update_engine,
    /// a package manager, an OSTree tool): no version, no catalog. A node whose agent
    /// detects "reboot needed" is cordoned, drained and rebooted under `strategy` and
    /// `drain`; nodes without the signal are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalReboots>,
    /// Allow a target older than a selected node's current version.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_downgrade: bool,
    /// Allow `http://` image URLs (a local mirror); otherwise only `https://`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_http_images: bool,
    /// How many nodes may be disrupted at once, canary, windows, failure budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RolloutStrategy>,
    /// How nodes are drained before their reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSpec>,
    /// Pods to restart after an update applied without reboot, in addition to those
    /// whose mounts point into the previous deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_on_live_update: Option<LabelSelector>,
    /// Opaque object handed unchanged to the node's OS plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::opaque_object")]
    pub os_version_management: Option<serde_json::Value>,
    /// Kernel command-line arguments to add and remove with this update; they reach each
    /// node with the image and take effect on the boot into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_arguments: Option<KernelArguments>,
    /// Put every node this OSUpgrade upgraded back on its previous version
    /// (`osroll rollback NAME` sets it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rollback: bool,
}

/// The external mode of an OSUpgrade. The agent's reboot-needed sources (sentinel file,
/// sentinel command, update_engine, a pending OSTree deployment) are agent settings,
/// never part of this object: a command the cluster could choose would run as root on
/// every node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalReboots {}

/// Which of its two modes an OSUpgrade is in, once [`OSUpgradeSpec::mode`] checked it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpgradeMode<'a> {
    /// osroll installs `version` from `catalog`.
    Install {
        /// `spec.version`.
        version: &'a str,
        /// `spec.catalog`.
        catalog: &'a CatalogSource,
    },
    /// osroll only coordinates reboots for updates installed by something else.
    External(&'a ExternalReboots),
}

/// An OSUpgrade spec that is in neither mode, or in both.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ModeError {
    /// The field to fix.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: &'static str,
}

impl OSUpgradeSpec {
    /// The mode this spec asks for: exactly one of `version` with `catalog`, or
    /// `external`. The error names the field to fix.
    pub fn mode(&self) -> Result<UpgradeMode<'_>, ModeError> {
        let install = !self.version.is_empty() || !self.catalog.is_empty();
        match (&self.external, install) {
            (Some(_), true) => Err(ModeError {
                field: if self.version.is_empty() {
                    "spec.catalog"
                } else {
                    "spec.version"
                },
                message: "must not be set with spec.external: an external OSUpgrade only coordinates reboots for updates the nodes installed themselves",
            }),
            (Some(e), false) => Ok(UpgradeMode::External(e)),
            (None, _) if self.version.is_empty() => Err(ModeError {
                field: "spec.version",
                message: "is required (or set spec.external to coordinate reboots for updates installed outside osroll)",
            }),
            (None, _) if self.catalog.is_empty() => Err(ModeError {
                field: "spec.catalog",
                message: "is required with spec.version",
            }),
            (None, _) => Ok(UpgradeMode::Install {
                version: &self.version,
                catalog: &self.catalog,
            }),
        }
    }

    /// Whether this is an external (reboot coordination only) OSUpgrade.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }
}

/// Kernel command-line changes that travel with an image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelArguments {
    /// Arguments to add (`key=value` or a bare flag), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Arguments to remove: an exact `key=value`, or a bare `key` for every value of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// Exactly one source of catalog YAML.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"required": ["inline"]}, {"required": ["url"]}, {"required": ["configMap"]}
]))]
pub struct CatalogSource {
    /// The catalog YAML itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// An `https://` URL serving the catalog YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Name of a ConfigMap in the controller's namespace whose `catalog.yaml` key holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Detached minisign signature of the catalog bytes. Default: fetched from
    /// `<url>.minisig` for a URL catalog, the `catalog.yaml.minisig` key for a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl CatalogSource {
    /// Whether no field is set (the catalog of an external OSUpgrade).
    pub fn is_empty(&self) -> bool {
        self == &CatalogSource::default()
    }
}

/// Rollout pacing and safety limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Most nodes disrupted (cordoned, draining, rebooting or NotReady) at once: an
    /// integer or a percentage of the selected nodes. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Most nodes downloading and writing their image at once (integer or percent).
    /// Default: all selected nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staging: Option<IntOrString>,
    /// A first batch that must finish before the rest starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// When disruption may start. Empty means any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// Failed or rolled-back nodes after which the rollout halts as Failed. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failures: Option<u32>,
    /// Start nothing new; work in flight finishes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Checks that must pass before each new disruption and through each soak.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<crate::health::HealthCheck>,
    /// Seconds the checks are watched after a node completes before the next disruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
    /// Seconds a check may fail (holding the rollout) before the rollout is Failed.
    /// Default 300; 0 fails at the first failing evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_seconds: Option<u64>,
    /// What a failed rollout does: `Halt` (default) or `Rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<crate::health::FailurePolicy>,
}

/// The canary batch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Nodes in the canary batch.
    #[schemars(range(min = 1))]
    pub count: u32,
    /// Seconds to watch the canaries after they complete before continuing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
    /// Wait for `approved: true` after the canaries complete.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_approval: bool,
    /// Set by a person to let the rollout continue past the canaries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub approved: bool,
}

/// A recurring window in which nodes may be disrupted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Days the window opens on. Empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM`.
    #[schemars(schema_with = "crate::schema::clock_time")]
    pub start: String,
    /// Closing time, `HH:MM`; earlier than `start` means the window crosses midnight.
    #[schemars(schema_with = "crate::schema::clock_time")]
    pub end: String,
    /// IANA time zone, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// Day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// Drain behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Seconds to wait for evictions before `onTimeout` applies. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// What to do when the drain times out. Default `Fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<DrainTimeoutPolicy>,
    /// Grace period handed to evictions; default is each pod's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
    /// Only pods matching this selector are evicted; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// What a drain that timed out does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DrainTimeoutPolicy {
    /// Mark the node's progress failed and uncordon it.
    #[default]
    Fail,
    /// Delete the remaining pods without honouring budgets.
    Force,
    /// Leave the node on its current version, uncordon it and move on.
    Skip,
}

/// Observed state of an OSUpgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OSUpgradeStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The concrete version `spec.version` resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<String>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<UpgradePhase>,
    /// Machine-readable reason for the phase (e.g. `VersionBlocked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// sha256 of the catalog bytes the resolution came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_digest: Option<String>,
    /// Ready, Progressing, Degraded, CatalogWarnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Selected nodes per progress phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// The health gate: which check fails, what it saw, since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthStatus>,
    /// The rollback, once one began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::health::RollbackStatus>,
}

/// Count of selected nodes in each stage of their upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Nodes selected.
    pub total: u32,
    /// Not started yet.
    pub pending: u32,
    /// Downloading, writing or verifying.
    pub staging: u32,
    /// Staged, waiting for their turn.
    pub staged: u32,
    /// Being drained, rebooted or applied.
    pub updating: u32,
    /// Done on the target version.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Fell back to the previous slot.
    pub rolled_back: u32,
    /// Left on their version because their drain timed out under `onTimeout: Skip`.
    #[serde(default)]
    pub skipped: u32,
}

/// Lifecycle phase of an OSUpgrade.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum UpgradePhase {
    /// Waiting for an older OSUpgrade that selects some of the same nodes.
    Pending,
    /// Valid and resolved; no node has started yet.
    Accepted,
    /// The spec or the catalog cannot be acted on; `reason` says why.
    Rejected,
    /// Nodes are being staged, drained, rebooted or released.
    Progressing,
    /// `spec.strategy.paused`: nothing new starts, work in flight finishes.
    Paused,
    /// Every selected node's attempt ended and its node was released.
    Completed,
    /// Halted after `maxFailures` failed nodes or a health check failing past its timeout.
    Failed,
    /// Putting the nodes it upgraded back on their previous version.
    RollingBack,
    /// Every node it upgraded is back on its previous version.
    RolledBack,
}

impl UpgradePhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [UpgradePhase; 9] = [
        UpgradePhase::Pending,
        UpgradePhase::Accepted,
        UpgradePhase::Rejected,
        UpgradePhase::Progressing,
        UpgradePhase::Paused,
        UpgradePhase::Completed,
        UpgradePhase::Failed,
        UpgradePhase::RollingBack,
        UpgradePhase::RolledBack,
    ];

    /// The name written to `status.phase` (and used in metrics and Events).
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradePhase::Pending => "Pending",
            UpgradePhase::Accepted => "Accepted",
            UpgradePhase::Rejected => "Rejected",
            UpgradePhase::Progressing => "Progressing",
            UpgradePhase::Paused => "Paused",
            UpgradePhase::Completed => "Completed",
            UpgradePhase::Failed => "Failed",
            UpgradePhase::RollingBack => "RollingBack",
            UpgradePhase::RolledBack => "RolledBack",
        }
    }
}

impl std::fmt::Display for UpgradePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an OSUpgrade is in its phase (`status.reason` and the Ready and Progressing
/// conditions' reason), for every phase the controller decides itself; a rejected
/// catalog's reason is a [`crate::RejectionReason`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpgradeReason {
    /// Rejected: a spec field cannot be acted on; the message names it.
    InvalidSpec,
    /// Pending: an older OSUpgrade holds some of the same nodes.
    WaitingForOtherUpgrade,
    /// Accepted: no managed node matches the node selector.
    NoNodesSelected,
    /// Accepted: resolved, no node started yet.
    Accepted,
    /// Paused: `spec.strategy.paused`.
    Paused,
    /// Progressing: canaries are being upgraded.
    CanaryInProgress,
    /// Progressing: canaries are done and soaking.
    CanarySoaking,
    /// Progressing: canaries are done; waiting for `spec.strategy.canary.approved`.
    AwaitingCanaryApproval,
    /// Progressing: no maintenance window is open, so nothing new starts.
    OutsideMaintenanceWindow,
    /// Progressing: nodes are being upgraded batch by batch.
    RollingOut,
    /// Completed: every node is on the target version.
    AllNodesUpgraded,
    /// Completed: every attempt ended, some failed, rolled back or were skipped.
    CompletedWithFailures,
    /// Failed: `maxFailures` nodes failed; the rollout halted.
    MaxFailuresReached,
    /// Degraded: a node's progress says Completed, but what the cluster knows about
    /// the node disagrees (see [`UnverifiedReason`]); it is not counted Completed.
    CompletionUnverified,
    /// Progressing: a health check fails; nothing new starts until it passes.
    HealthCheckFailing,
    /// Failed: a health check failed past its timeout.
    HealthCheckFailed,
    /// RollingBack: nodes are going back to their previous version.
    RollingBack,
    /// RolledBack: every upgraded node is back on its previous version.
    AllNodesRolledBack,
    /// Failed: a node could not be rolled back; the rollback halted.
    RollbackFailed,
}

impl UpgradeReason {
    /// The CamelCase name written to `status.reason` and to conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeReason::InvalidSpec => "InvalidSpec",
            UpgradeReason::WaitingForOtherUpgrade => "WaitingForOtherUpgrade",
            UpgradeReason::NoNodesSelected => "NoNodesSelected",
            UpgradeReason::Accepted => "Accepted",
            UpgradeReason::Paused => "Paused",
            UpgradeReason::CanaryInProgress => "CanaryInProgress",
            UpgradeReason::CanarySoaking => "CanarySoaking",
            UpgradeReason::AwaitingCanaryApproval => "AwaitingCanaryApproval",
            UpgradeReason::OutsideMaintenanceWindow => "OutsideMaintenanceWindow",
            UpgradeReason::RollingOut => "RollingOut",
            UpgradeReason::AllNodesUpgraded => "AllNodesUpgraded",
            UpgradeReason::CompletedWithFailures => "CompletedWithFailures",
            UpgradeReason::MaxFailuresReached => "MaxFailuresReached",
            UpgradeReason::CompletionUnverified => "CompletionUnverified",
            UpgradeReason::HealthCheckFailing => "HealthCheckFailing",
            UpgradeReason::HealthCheckFailed => "HealthCheckFailed",
            UpgradeReason::RollingBack => "RollingBack",
            UpgradeReason::AllNodesRolledBack => "AllNodesRolledBack",
            UpgradeReason::RollbackFailed => "RollbackFailed",
        }
    }
}

impl std::fmt::Display for UpgradeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the controller does not believe a progress that says Completed: a source the
/// agent does not write alone contradicts the version it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnverifiedReason {
    /// The progress status's `currentVersion` is not the version its spec targets.
    ReportedVersionMismatch,
    /// The Node's `osroll.io/os-version` label (writable under the admission policy
    /// only by that node's own agent) names another version than the target.
    NodeLabelMismatch,
    /// The update needed a reboot, but the kubelet still reports the boot ID the node
    /// had when that reboot was approved.
    NotRebooted,
    /// An external update's node says Completed, but its Node's
    /// `osroll.io/reboot-needed` label still says `true`.
    RebootStillNeeded,
}

impl UnverifiedReason {
    /// The CamelCase name used in Events and condition messages.
    pub fn as_str(self) -> &'static str {
        match self {
            UnverifiedReason::ReportedVersionMismatch => "ReportedVersionMismatch",
            UnverifiedReason::NodeLabelMismatch => "NodeLabelMismatch",
            UnverifiedReason::NotRebooted => "NotRebooted",
            UnverifiedReason::RebootStillNeeded => "RebootStillNeeded",
        }
    }
}

impl std::fmt::Display for UnverifiedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> OSUpgradeSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn mode_is_install_or_external_never_both_nor_neither() {
        let install = spec(serde_json::json!({"version": "v2", "catalog": {"url": "https://c"}}));
        assert!(matches!(
            install.mode(),
            Ok(UpgradeMode::Install { version: "v2", .. })
        ));
        let external = spec(serde_json::json!({"external": {}}));
        assert_eq!(
            external.mode(),
            Ok(UpgradeMode::External(&ExternalReboots {}))
        );
        assert!(external.is_external());
        assert_eq!(
            serde_json::to_value(&external).unwrap(),
            serde_json::json!({"external": {}}),
            "no empty version or catalog is written"
        );
        let both = spec(serde_json::json!({"version": "v2", "external": {}}));
        assert_eq!(both.mode().unwrap_err().field, "spec.version");
        let both = spec(serde_json::json!({"catalog": {"inline": "x"}, "external": {}}));
        assert_eq!(both.mode().unwrap_err().field, "spec.catalog");
        let neither = spec(serde_json::json!({}));
        assert_eq!(neither.mode().unwrap_err().field, "spec.version");
        let no_catalog = spec(serde_json::json!({"version": "v2"}));
        assert_eq!(no_catalog.mode().unwrap_err().field, "spec.catalog");
    }

    #[test]
    fn phase_names_are_the_wire_names() {
        for p in UpgradePhase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.to_string(), p.as_str());
        }
    }
}
