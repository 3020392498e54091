//! The OSTree backend: nodes whose OS is an OSTree deployment rather than an A/B slot.
//!
//! Staging asks the host's own tool for a new deployment (`rpm-ostree rebase|deploy`,
//! `bootc switch`, or `ostree pull` + `ostree admin deploy --stage`), which the next boot
//! picks up; nothing is switched until the node reboots. After the reboot the booted
//! deployment, read back from the same tool, must be the target (by checksum or
//! version); otherwise the bootloader or a health check fell back and the attempt is
//! RolledBack. A fleet rollback to the deployment the node ran before uses the tool's own
//! rollback, fetching nothing, while that deployment is still there ([`rollback`]).
//!
//! Reading status and deciding are pure ([`parse_status`], [`plan_stage`],
//! [`confirm_boot`]); [`OstreeBackend`] only runs the commands through a
//! [`CommandRunner`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use osroll_api::ImageRef;
use osroll_api::progress::FailureReason;
use osroll_api::upgrade::KernelArguments;
use serde::{Deserialize, Serialize};

use super::runner::{CommandError, CommandRunner, CommandSpec};

pub mod kargs;
pub mod live;
pub mod pkgdiff;
pub mod rollback;

/// Which host tool stages deployments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OstreeTool {
    /// `rpm-ostree rebase <reference>`.
    RpmOstreeRebase,
    /// `rpm-ostree deploy <version>` (or `revision=<checksum>` without a version).
    RpmOstreeDeploy,
    /// `bootc switch <image>`.
    BootcSwitch,
    /// `ostree pull <remote> <ref>` then `ostree admin deploy --stage <reference>`.
    OstreeAdminDeploy,
}

impl OstreeTool {
    /// Every tool, for help texts.
    pub const ALL: [OstreeTool; 4] = [
        OstreeTool::RpmOstreeRebase,
        OstreeTool::RpmOstreeDeploy,
        OstreeTool::BootcSwitch,
        OstreeTool::OstreeAdminDeploy,
    ];

    /// The configuration name (`rpm-ostree-rebase`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OstreeTool::RpmOstreeRebase => "rpm-ostree-rebase",
            OstreeTool::RpmOstreeDeploy => "rpm-ostree-deploy",
            OstreeTool::BootcSwitch => "bootc-switch",
            OstreeTool::OstreeAdminDeploy => "ostree-admin-deploy",
        }
    }

    /// The executable the tool is, by default.
    pub fn default_program(self) -> &'static str {
        match self {
            OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => "rpm-ostree",
            OstreeTool::BootcSwitch => "bootc",
            OstreeTool::OstreeAdminDeploy => "ostree",
        }
    }
}

impl fmt::Display for OstreeTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// `Err = String`: the `osroll agent` command line parses it with that error type.
impl FromStr for OstreeTool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OstreeTool::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = OstreeTool::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown OSTree tool {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Agent configuration of the OSTree backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OstreeConfig {
    /// How deployments are staged and read.
    pub tool: OstreeTool,
    /// The tool's executable; default [`OstreeTool::default_program`].
    pub program: Option<PathBuf>,
    /// Words put before every command so it runs in the host's namespaces from inside
    /// the agent's container, e.g. `nsenter --target 1 --mount --`.
    pub host_prefix: Vec<String>,
    /// Extra arguments for the staging command (e.g. `--bypass-driver`,
    /// `--transport=oci`), placed before the reference.
    pub stage_args: Vec<String>,
    /// `ostree admin deploy --os`: the stateroot to deploy into.
    pub os_name: Option<String>,
    /// `ostree admin --sysroot`.
    pub sysroot: Option<PathBuf>,
    /// Pull the ref before `ostree admin deploy` when the reference is `remote:ref`.
    pub pull: bool,
    /// Limit for staging (pulls can be large).
    pub stage_timeout: Duration,
    /// Limit for reading status.
    pub status_timeout: Duration,
}

impl OstreeConfig {
    /// Defaults for `tool`: its own program, no prefix, 30 minutes to stage, one minute
    /// to read status.
    pub fn new(tool: OstreeTool) -> Self {
        OstreeConfig {
            tool,
            program: None,
            host_prefix: Vec::new(),
            stage_args: Vec::new(),
            os_name: None,
            sysroot: None,
            pull: true,
            stage_timeout: Duration::from_secs(30 * 60),
            status_timeout: Duration::from_secs(60),
        }
    }

    fn program(&self) -> PathBuf {
        self.program
            .clone()
            .unwrap_or_else(|| PathBuf::from(self.tool.default_program()))
    }

    fn command(&self, timeout: Duration) -> CommandSpec {
        CommandSpec::new(self.program(), timeout)
    }
}

/// What the node should boot into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OstreeTarget {
    /// Refspec (`remote:ref`) or container image reference handed to the tool.
    pub reference: String,
    /// The OS version the deployment reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// OSTree commit checksum or container image digest, with or without `sha256:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Kernel arguments the new deployment adds and removes (see [`kargs`]).
    #[serde(default, skip_serializing_if = "kargs::is_empty")]
    pub kernel_arguments: KernelArguments,
    /// Whether the update asks to skip the reboot, and on whose word (see [`live`]).
    #[serde(default)]
    pub live: live::LiveRequest,
    /// A fleet rollback: the version the node ran before, to be returned to with the
    /// tool's rollback while the old deployment is still there (see [`rollback`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

impl OstreeTarget {
    /// The target of a progress: version and checksum from `image`; the reference from
    /// `osVersionManagement.ostree.reference` when that is set, else `image.url`.
    pub fn from_progress(
        image: &ImageRef,
        os_version_management: Option<&serde_json::Value>,
    ) -> Result<Self, OstreeError> {
        let from_ovm = os_version_management
            .and_then(|v| v.get("ostree"))
            .and_then(|v| v.get("reference"));
        let reference = match from_ovm {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(other) => {
                return Err(OstreeError::BadTarget(format!(
                    "osVersionManagement.ostree.reference must be a non-empty string, got {other}"
                )));
            }
            None if !image.url.trim().is_empty() => image.url.clone(),
            None => {
                return Err(OstreeError::BadTarget(
                    "no reference: image.url is empty and osVersionManagement.ostree.reference is unset"
                        .into(),
                ));
            }
        };
        if reference.starts_with('-') {
            return Err(OstreeError::BadTarget(format!(
                "reference {reference:?} starts with `-` and would be read as an option"
            )));
        }
        Ok(OstreeTarget {
            reference,
            version: Some(image.version.clone()).filter(|v| !v.is_empty()),
            checksum: Some(image.checksum.clone()).filter(|c| !c.is_empty()),
            kernel_arguments: KernelArguments::default(),
            live: live::LiveRequest::Reboot,
            rollback: false,
        })
    }

    /// The same target, as a fleet rollback (`true`) or not. A rollback is applied by
    /// the reboot: it ignores a request to switch live.
    pub fn with_rollback(mut self, rollback: bool) -> Self {
        self.rollback = rollback;
        if rollback {
            self.live = live::LiveRequest::Reboot;
        }
        self
    }

    /// The same target, asking to be applied as `live` says.
    pub fn with_live(mut self, live: live::LiveRequest) -> Self {
        self.live = live;
        self
    }

    /// The same target, with `kargs` applied by the deployment.
    pub fn with_kernel_arguments(mut self, kargs: &KernelArguments) -> Self {
        self.kernel_arguments = kargs.clone();
        self
    }

    /// For messages: the reference, version and short checksum.
    pub fn describe(&self) -> String {
        let mut s = self.reference.clone();
        if let Some(v) = &self.version {
            s.push_str(&format!(" version {v}"));
        }
        if let Some(c) = &self.checksum {
            s.push_str(&format!(" checksum {}", short(&normalize_digest(c))));
        }
        s
    }
}

/// One deployment as the host tool reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Stateroot (`osname`).
    pub os_name: Option<String>,
    /// OSTree commit checksum (64 hex).
    pub checksum: Option<String>,
    /// The base commit when packages are layered on top (rpm-ostree).
    pub base_checksum: Option<String>,
    /// Deploy serial (the `.0` in `<checksum>.0`).
    pub serial: Option<u32>,
    /// Version the commit carries.
    pub version: Option<String>,
    /// Origin refspec or container image reference.
    pub origin: Option<String>,
    /// Container image digest (`sha256:...`) for container-based deployments.
    pub image_digest: Option<String>,
    /// The running system.
    pub booted: bool,
    /// Staged or pending: what the next boot uses if it is not the booted one.
    pub staged: bool,
    /// The fallback entry.
    pub rollback: bool,
    /// The commit applied live over this (booted) deployment (rpm-ostree's
    /// `live-replaced`): what actually runs until the next boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_checksum: Option<String>,
}

impl Deployment {
    /// `/ostree/deploy/<os>/deploy/<checksum>.<serial>`, where this deployment's tree
    /// lives in the physical sysroot; mounts of a live-updated node that still point
    /// here are stale (see [`crate::mounts`]).
    pub fn deploy_dir(&self) -> Option<String> {
        Some(format!(
            "/ostree/deploy/{}/deploy/{}.{}",
            self.os_name.as_ref()?,
            self.checksum.as_ref()?,
            self.serial?
        ))
    }

    /// For messages: `fedora 3a4b5c6d7e8f.0 version 40.1`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(os) = &self.os_name {
            parts.push(os.clone());
        }
        match (&self.checksum, self.serial) {
            (Some(c), Some(s)) => parts.push(format!("{}.{s}", short(c))),
            (Some(c), None) => parts.push(short(c)),
            _ => {}
        }
        if let Some(v) = &self.version {
            parts.push(format!("version {v}"));
        }
        if parts.is_empty()
            && let Some(o) = &self.origin
        {
            parts.push(o.clone());
        }
        parts.join(" ")
    }

    /// Whether this deployment is `target`: the target checksum equals the commit, the
    /// base commit or the image digest. Only a target without a checksum is recognised by
    /// its version string, which anyone can put in a commit.
    pub fn is(&self, target: &OstreeTarget) -> bool {
        if let Some(want) = target.checksum.as_deref().map(normalize_digest) {
            let have = [&self.checksum, &self.base_checksum, &self.image_digest];
            return have
                .into_iter()
                .flatten()
                .any(|h| normalize_digest(h) == want);
        }
        matches!((&target.version, &self.version), (Some(t), Some(v)) if t == v)
    }
}

/// `sha256:ABC` and `abc` compare equal.
fn normalize_digest(s: &str) -> String {
    s.trim()
        .strip_prefix("sha256:")
        .unwrap_or(s.trim())
        .to_ascii_lowercase()
}

fn short(c: &str) -> String {
    c.chars().take(12).collect()
}

/// Every deployment, in the tool's order (the next boot's first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// The deployments.
    pub deployments: Vec<Deployment>,
}

impl DeploymentStatus {
    /// The running deployment.
    pub fn booted(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.booted)
    }

    /// The deployment the next boot switches to, when it is not the booted one.
    pub fn staged(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.staged && !d.booted)
    }

    /// The deployment whose tree runs now: the booted one, or the one whose commit was
    /// applied live over it.
    pub fn running(&self) -> Option<&Deployment> {
        let booted = self.booted()?;
        let Some(live) = &booted.live_checksum else {
            return Some(booted);
        };
        let applied = self
            .deployments
            .iter()
            .find(|d| d.checksum.as_deref() == Some(live.as_str()));
        Some(applied.unwrap_or(booted))
    }
}

/// What staging has to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StagePlan {
    /// The node already runs the target.
    AlreadyBooted(Deployment),
    /// The target is already staged for the next boot (e.g. a restarted agent).
    AlreadyStaged(Deployment),
    /// A rollback to this deployment, which the node still has: the tool's rollback
    /// makes it the next boot's again, fetching nothing ([`rollback::restore_commands`]).
    Restore(Deployment),
    /// Run the staging command (for a rollback: the old deployment is gone).
    Stage,
}

/// Decide whether anything needs staging with `tool`, and how.
pub fn plan_stage(tool: OstreeTool, status: &DeploymentStatus, target: &OstreeTarget) -> StagePlan {
    if let Some(b) = status.running().filter(|b| b.is(target)) {
        return StagePlan::AlreadyBooted(b.clone());
    }
    if let Some(s) = status.staged().filter(|s| s.is(target)) {
        return StagePlan::AlreadyStaged(s.clone());
    }
    if target.rollback
        && let Some(old) = rollback::restorable(tool, status, target)
    {
        return StagePlan::Restore(old.clone());
    }
    StagePlan::Stage
}

/// What the node booted into, after the reboot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootCheck {
    /// It runs the target: the attempt is Completed.
    OnTarget(Deployment),
    /// It runs something else: the attempt is RolledBack.
    RolledBack {
        /// What it runs instead.
        booted: Deployment,
        /// Human-readable explanation for the progress message.
        message: String,
    },
}

/// Compare the booted deployment with the target.
pub fn confirm_boot(
    status: &DeploymentStatus,
    target: &OstreeTarget,
) -> Result<BootCheck, OstreeError> {
    let booted = status.booted().ok_or(OstreeError::NoBootedDeployment)?;
    if booted.is(target) {
        return Ok(BootCheck::OnTarget(booted.clone()));
    }
    let where_target = match status
        .deployments
        .iter()
        .find(|d| !d.booted && d.is(target))
    {
        Some(d) if d.staged => format!("the target {} is still staged", d.describe()),
        Some(d) => format!(
            "the target {} is still deployed but was not booted",
            d.describe()
        ),
        None => "the target deployment is gone".to_string(),
    };
    Ok(BootCheck::RolledBack {
        booted: booted.clone(),
        message: format!(
            "booted {} instead of {}; {where_target}",
            booted.describe(),
            target.describe()
        ),
    })
}

/// What [`OstreeBackend::stage`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageOutcome {
    /// Nothing to do: the node already runs the target.
    AlreadyBooted(Deployment),
    /// Nothing to do: the target was already staged.
    AlreadyStaged(Deployment),
    /// The target is now staged for the next boot.
    Staged(Deployment),
    /// A rollback: the old deployment is the next boot's again, by the tool's rollback
    /// (nothing fetched).
    Restored(Deployment),
}

/// An OSTree operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum OstreeError {
    /// A host command failed; its message has the command line and stderr tail.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The tool's status output could not be understood.
    #[error("cannot read `{command}` output: {source}")]
    Status {
        /// The status command.
        command: String,
        /// What is wrong with it.
        source: StatusError,
    },
    /// Staging succeeded but the next boot would not be the target.
    #[error("after `{command}` the next boot is {got}, not the target {target}")]
    StagedWrong {
        /// The staging command.
        command: String,
        /// What is staged instead (or `nothing`).
        got: String,
        /// The target.
        target: String,
    },
    /// The status lists no booted deployment.
    #[error("the host reports no booted deployment")]
    NoBootedDeployment,
    /// The target cannot be built from the progress.
    #[error("invalid OSTree target: {0}")]
    BadTarget(String),
    /// A live apply ran but the running system is not the target.
    #[error("after `{command}` the running system is {got}, not the target {target}")]
    LiveNotApplied {
        /// The live-apply command.
        command: String,
        /// What runs instead.
        got: String,
        /// The target.
        target: String,
    },
    /// The tool has no way to change kernel arguments with a deployment.
    #[error("{tool} cannot change kernel arguments with the update ({hint})")]
    KernelArgumentsUnsupported {
        /// The tool.
        tool: OstreeTool,
        /// Where such arguments belong instead.
        hint: &'static str,
    },
    /// rpm-ostree's package diff could not be understood.
    #[error("cannot read `{command}` output: {source}")]
    PackageDiff {
        /// The diff command.
        command: String,
        /// What is wrong with it.
        source: pkgdiff::DiffError,
    },
}

impl OstreeError {
    /// Machine-readable cause for `status.failureReason`.
    pub fn reason(&self) -> FailureReason {
        match self {
            OstreeError::Command(_) => FailureReason::OstreeCommandFailed,
            OstreeError::Status { .. }
            | OstreeError::PackageDiff { .. }
            | OstreeError::NoBootedDeployment => FailureReason::OstreeStatusUnreadable,
            OstreeError::StagedWrong { .. } => FailureReason::OstreeStagedWrongDeployment,
            OstreeError::LiveNotApplied { .. } => FailureReason::LiveUpdateIncomplete,
            OstreeError::BadTarget(_) | OstreeError::KernelArgumentsUnsupported { .. } => {
                FailureReason::OstreeInvalidTarget
            }
        }
    }
}

/// The command that prints the deployments.
pub fn status_command(config: &OstreeConfig) -> CommandSpec {
    let c = config.command(config.status_timeout);
    let c = match config.tool {
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => c.args(["status", "--json"]),
        OstreeTool::BootcSwitch => c.args(["status", "--json"]),
        OstreeTool::OstreeAdminDeploy => {
            let c = c.args(["admin", "status"]);
            match &config.sysroot {
                Some(s) => c.arg(format!("--sysroot={}", s.display())),
                None => c,
            }
        }
    };
    c.with_prefix(&config.host_prefix)
}

/// The commands that stage `target`, in order; an error when the tool cannot apply the
/// target's kernel arguments. References follow `--` where the tool accepts it.
pub fn stage_commands(
    config: &OstreeConfig,
    target: &OstreeTarget,
) -> Result<Vec<CommandSpec>, OstreeError> {
    let c = config.command(config.stage_timeout);
    let extra = config.stage_args.iter().cloned();
    let kargs = kargs::stage_args(config.tool, &target.kernel_arguments)?;
    let mut cmds = match config.tool {
        OstreeTool::RpmOstreeRebase => {
            vec![c.arg("rebase").args(extra).arg("--").arg(&target.reference)]
        }
        OstreeTool::RpmOstreeDeploy => {
            let rev = match (&target.version, &target.checksum) {
                (Some(v), _) => v.clone(),
                (None, Some(c)) => format!("revision={}", normalize_digest(c)),
                (None, None) => target.reference.clone(),
            };
            vec![c.arg("deploy").args(extra).arg("--").arg(rev)]
        }
        OstreeTool::BootcSwitch => {
            vec![c.arg("switch").args(extra).arg("--").arg(&target.reference)]
        }
        OstreeTool::OstreeAdminDeploy => ostree_admin_deploy(config, target, kargs),
    };
    cmds.extend(kargs::after_stage(config, &target.kernel_arguments));
    Ok(cmds
        .into_iter()
        .map(|c| c.with_prefix(&config.host_prefix))
        .collect())
}

/// `ostree pull` (for a `remote:ref` reference) then `ostree admin deploy --stage`.
fn ostree_admin_deploy(
    config: &OstreeConfig,
    target: &OstreeTarget,
    kargs: Vec<String>,
) -> Vec<CommandSpec> {
    let mut cmds = Vec::new();
    if config.pull
        && let Some((remote, rf)) = target.reference.split_once(':')
    {
        let mut pull = config.command(config.stage_timeout).arg("pull");
        if let Some(s) = &config.sysroot {
            pull = pull.arg(format!("--repo={}/ostree/repo", s.display()));
        }
        cmds.push(pull.args(["--", remote, rf]));
    }
    let mut deploy = config
        .command(config.stage_timeout)
        .args(["admin", "deploy", "--stage"]);
    if let Some(os) = &config.os_name {
        deploy = deploy.arg(format!("--os={os}"));
    }
    if let Some(s) = &config.sysroot {
        deploy = deploy.arg(format!("--sysroot={}", s.display()));
    }
    let extra = config.stage_args.iter().cloned();
    // No `--` here: `ostree admin deploy` (2022.7) then finds no reference at all. A
    // reference that starts with `-` is refused when the target is built instead.
    cmds.push(deploy.args(extra).args(kargs).arg(&target.reference));
    cmds
}

/// Status output that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// JSON status (rpm-ostree, bootc) that does not parse.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A line of `ostree admin status` that does not fit its layout.
    #[error("line {line}: {problem}")]
    Line {
        /// Its number, from 1.
        line: usize,
        /// What does not fit, quoting it.
        problem: String,
    },
}

/// Parse the output of [`status_command`] for `tool`.
pub fn parse_status(tool: OstreeTool, output: &str) -> Result<DeploymentStatus, StatusError> {
    match tool {
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => parse_rpm_ostree(output),
        OstreeTool::BootcSwitch => parse_bootc(output),
        OstreeTool::OstreeAdminDeploy => parse_ostree_admin(output),
    }
}

#[derive(Deserialize)]
struct RpmOstreeStatus {
    deployments: Vec<RpmOstreeDeployment>,
}

#[derive(Deserialize)]
struct RpmOstreeDeployment {
    #[serde(default)]
    osname: Option<String>,
    checksum: String,
    #[serde(default, rename = "base-checksum")]
    base_checksum: Option<String>,
    #[serde(default)]
    serial: Option<u32>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default, rename = "container-image-reference")]
    container_image_reference: Option<String>,
    #[serde(default, rename = "container-image-reference-digest")]
    container_image_reference_digest: Option<String>,
    #[serde(default)]
    booted: bool,
    #[serde(default)]
    staged: bool,
    #[serde(default, rename = "live-replaced")]
    live_replaced: Option<String>,
}

fn parse_rpm_ostree(output: &str) -> Result<DeploymentStatus, StatusError> {
    let s: RpmOstreeStatus = serde_json::from_str(output)?;
    let n = s.deployments.len();
    let booted_at = s.deployments.iter().position(|d| d.booted);
    let deployments = s
        .deployments
        .into_iter()
        .enumerate()
        .map(|(i, d)| Deployment {
            os_name: d.osname,
            checksum: Some(d.checksum),
            base_checksum: d.base_checksum,
            serial: d.serial,
            version: d.version,
            origin: d.container_image_reference.or(d.origin),
            image_digest: d.container_image_reference_digest,
            booted: d.booted,
            // The first deployment is the default for the next boot; one listed ahead of
            // the booted one is pending even when not marked staged.
            staged: d.staged || (i == 0 && !d.booted && booted_at.is_some()),
            rollback: !d.booted && booted_at.is_some_and(|b| i > b) && i + 1 == n,
            live_checksum: d.live_replaced.filter(|c| !c.is_empty()),
        })
        .collect();
    Ok(DeploymentStatus { deployments })
}

#[derive(Deserialize)]
struct BootcHost {
    status: BootcStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootcStatus {
    #[serde(default)]
    staged: Option<BootcEntry>,
    #[serde(default)]
    booted: Option<BootcEntry>,
    #[serde(default)]
    rollback: Option<BootcEntry>,
    /// `bootc rollback` ran: the rollback entry is the next boot's.
    #[serde(default)]
    rollback_queued: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootcEntry {
    #[serde(default)]
    image: Option<BootcImageStatus>,
    #[serde(default)]
    ostree: Option<BootcOstree>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootcImageStatus {
    image: BootcImageRef,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    image_digest: Option<String>,
}

#[derive(Deserialize)]
struct BootcImageRef {
    image: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootcOstree {
    checksum: String,
    #[serde(default)]
    deploy_serial: Option<u32>,
    #[serde(default)]
    stateroot: Option<String>,
}

fn parse_bootc(output: &str) -> Result<DeploymentStatus, StatusError> {
    let h: BootcHost = serde_json::from_str(output)?;
    let entry = |e: BootcEntry, booted, staged, rollback| {
        let (origin, version, image_digest) = match e.image {
            Some(i) => (Some(i.image.image), i.version, i.image_digest),
            None => (None, None, None),
        };
        let (checksum, serial, os_name) = match e.ostree {
            Some(o) => (Some(o.checksum), o.deploy_serial, o.stateroot),
            None => (None, None, None),
        };
        Deployment {
            os_name,
            checksum,
            base_checksum: None,
            serial,
            version,
            origin,
            image_digest,
            booted,
            staged,
            rollback,
            live_checksum: None,
        }
    };
    let s = h.status;
    let mut deployments = Vec::new();
    deployments.extend(s.staged.map(|e| entry(e, false, true, false)));
    deployments.extend(s.booted.map(|e| entry(e, true, false, false)));
    let queued = s.rollback_queued;
    deployments.extend(s.rollback.map(|e| entry(e, false, queued, true)));
    Ok(DeploymentStatus { deployments })
}

/// `ostree admin status` prints, per deployment, a header line (`* ` marks the booted
/// one) `<os> <checksum>.<serial> [(staged)|(pending)|(rollback)|...]` and indented
/// `Key: value` lines under it.
fn parse_ostree_admin(output: &str) -> Result<DeploymentStatus, StatusError> {
    let mut deployments: Vec<Deployment> = Vec::new();
    for (n, line) in output.lines().enumerate() {
        let n = n + 1;
        let bad = |problem: String| StatusError::Line { line: n, problem };
        if line.trim().is_empty() || line.trim() == "No deployments." {
            continue;
        }
        let header = if let Some(rest) = line.strip_prefix("* ") {
            Some((true, rest))
        } else if line.starts_with("  ") && !line.starts_with("   ") {
            Some((false, &line[2..]))
        } else {
            None
        };
        if let Some((booted, rest)) = header {
            deployments.push(parse_admin_header(n, line, rest, booted)?);
        } else if line.starts_with("    ") {
            let d = deployments
                .last_mut()
                .ok_or_else(|| bad(format!("detail before any deployment: {line:?}")))?;
            if let Some((k, v)) = line.trim().split_once(':') {
                let v = v.trim().to_string();
                match k.trim() {
                    "Version" => d.version = Some(v),
                    "origin refspec" | "container image reference" => d.origin = Some(v),
                    _ => {}
                }
            }
        } else {
            return Err(bad(format!("unexpected {line:?}")));
        }
    }
    // Without flags, a deployment listed before the booted one is the next boot's.
    if let Some(b) = deployments.iter().position(|d| d.booted)
        && b > 0
        && !deployments.iter().any(|d| d.staged)
    {
        deployments[0].staged = true;
    }
    Ok(DeploymentStatus { deployments })
}

/// Line `n` of `ostree admin status`, a deployment's header (`rest`: after its `* `
/// or `  `).
fn parse_admin_header(
    n: usize,
    line: &str,
    rest: &str,
    booted: bool,
) -> Result<Deployment, StatusError> {
    let bad = |problem: String| StatusError::Line { line: n, problem };
    let mut words = rest.split_whitespace();
    let (Some(os), Some(id)) = (words.next(), words.next()) else {
        return Err(bad(format!(
            "expected `<os> <checksum>.<serial>`: {line:?}"
        )));
    };
    let (checksum, serial) = id
        .rsplit_once('.')
        .and_then(|(c, s)| Some((c, s.parse::<u32>().ok()?)))
        .filter(|(c, _)| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(format!("{id:?} is not `<64 hex>.<serial>`")))?;
    let flags = words.collect::<Vec<_>>().join(" ");
    Ok(Deployment {
        os_name: Some(os.to_string()),
        checksum: Some(checksum.to_string()),
        serial: Some(serial),
        booted,
        staged: flags.contains("(staged)") || flags.contains("(pending)"),
        rollback: flags.contains("(rollback)"),
        ..Deployment::default()
    })
}

/// Drives the host's OSTree tool.
pub struct OstreeBackend<R> {
    config: OstreeConfig,
    runner: R,
}

impl<R: CommandRunner> OstreeBackend<R> {
    /// A backend configured by `config`, running commands through `runner`.
    pub fn new(config: OstreeConfig, runner: R) -> Self {
        OstreeBackend { config, runner }
    }

    /// The configuration.
    pub fn config(&self) -> &OstreeConfig {
        &self.config
    }

    /// Read the deployments from the host.
    pub fn status(&self) -> Result<DeploymentStatus, OstreeError> {
        let cmd = status_command(&self.config);
        let out = self.runner.run_checked(&cmd)?;
        parse_status(self.config.tool, &out.stdout_text()).map_err(|source| OstreeError::Status {
            command: cmd.display(),
            source,
        })
    }

    /// Make `target` the next boot's deployment, unless it already is or already runs.
    /// Checks afterwards that the tool staged what was asked for.
    pub fn stage(&self, target: &OstreeTarget) -> Result<StageOutcome, OstreeError> {
        let (cmds, done): (_, fn(Deployment) -> StageOutcome) =
            match plan_stage(self.config.tool, &self.status()?, target) {
                StagePlan::AlreadyBooted(d) => return Ok(StageOutcome::AlreadyBooted(d)),
                StagePlan::AlreadyStaged(d) => return Ok(StageOutcome::AlreadyStaged(d)),
                StagePlan::Restore(old) => (
                    rollback::restore_commands(&self.config, target, &old),
                    StageOutcome::Restored,
                ),
                StagePlan::Stage => (stage_commands(&self.config, target)?, StageOutcome::Staged),
            };
        for cmd in &cmds {
            self.runner.run_checked(cmd)?;
        }
        let status = self.status()?;
        match status.staged() {
            Some(s) if s.is(target) => Ok(done(s.clone())),
            other => Err(OstreeError::StagedWrong {
                command: cmds.last().map(CommandSpec::display).unwrap_or_default(),
                got: other.map_or_else(|| "nothing".to_string(), Deployment::describe),
                target: target.describe(),
            }),
        }
    }

    /// After the reboot: is the node on `target`?
    pub fn confirm(&self, target: &OstreeTarget) -> Result<BootCheck, OstreeError> {
        confirm_boot(&self.status()?, target)
    }
}

#[cfg(test)]
mod tests;
