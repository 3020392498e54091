//! OSTree updates applied without a reboot, and which host tool can do that.
//!
//! | tool | live switch | kernel arguments |
//! |---|---|---|
//! | `rpm-ostree` | `rpm-ostree apply-live --allow-replacement` makes the staged deployment's commit the running one; the staged deployment stays the next boot's | `rpm-ostree kargs` |
//! | `ostree admin` | none (`admin unlock --hotfix` only makes `/usr` writable): the update takes a reboot | `--karg-append` / `--karg-delete` |
//! | `bootc` | none (`bootc usr-overlay` only makes `/usr` writable): the update takes a reboot | from the image (`kargs.d`) |
//!
//! An update goes live when `osVersionManagement.ostree.rebootRequired` is `false` and
//! the tool can; otherwise it reboots. After a live switch, pods keep the mounts they
//! were given, inside the previous deployment's directory
//! (`/ostree/deploy/<os>/deploy/<checksum>.<serial>`): [`stale_refs`] describes that
//! directory so [`crate::mounts`] can restart exactly those pods.

use serde_json::Value;

use super::{
    CommandRunner, Deployment, DeploymentStatus, OstreeBackend, OstreeConfig, OstreeError,
    OstreeTarget, OstreeTool,
};
use crate::backends::runner::CommandSpec;
use crate::mounts::decide::StaleRef;

/// `osVersionManagement.ostree.rebootRequired: false`: the update needs no reboot.
pub fn requested(os_version_management: Option<&Value>) -> Result<bool, OstreeError> {
    let field = os_version_management
        .and_then(|v| v.get("ostree"))
        .and_then(|v| v.get("rebootRequired"));
    match field {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(!b),
        Some(other) => Err(OstreeError::BadTarget(format!(
            "osVersionManagement.ostree.rebootRequired must be true or false, got {other}"
        ))),
    }
}

/// Whether `tool` can switch the running system to a staged deployment.
pub fn can_apply_live(tool: OstreeTool) -> bool {
    matches!(
        tool,
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy
    )
}

/// How a staged `target` is applied: live (`true`) or by the reboot.
pub fn applies_live(tool: OstreeTool, target: &OstreeTarget) -> bool {
    target.live && can_apply_live(tool)
}

/// The command that switches the running system to the staged deployment.
pub fn apply_live_command(config: &OstreeConfig) -> CommandSpec {
    config
        .command(config.stage_timeout)
        .args(["apply-live", "--allow-replacement"])
        .with_prefix(&config.host_prefix)
}

/// Mounts into `previous` (the deployment that ran before the live switch) are stale.
pub fn stale_refs(previous: &Deployment) -> Vec<StaleRef> {
    let mut refs = Vec::new();
    refs.extend(previous.deploy_dir().map(StaleRef::Path));
    refs.extend(previous.checksum.clone().map(StaleRef::DeploymentChecksum));
    refs
}

/// A live switch that reached its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveApplied {
    /// What ran before.
    pub previous: Deployment,
    /// What runs now.
    pub running: Deployment,
}

/// Check the status after a live apply: the running tree must be the target.
pub fn check_live(
    previous: &Deployment,
    after: &DeploymentStatus,
    target: &OstreeTarget,
    command: &CommandSpec,
) -> Result<LiveApplied, OstreeError> {
    match after.running() {
        Some(r) if r.is(target) => Ok(LiveApplied {
            previous: previous.clone(),
            running: r.clone(),
        }),
        other => Err(OstreeError::LiveNotApplied {
            command: command.display(),
            got: other.map_or_else(|| "unknown".to_string(), Deployment::describe),
            target: target.describe(),
        }),
    }
}

impl<R: CommandRunner> OstreeBackend<R> {
    /// Switch the running system to the staged `target` without a reboot. Running it
    /// again once the target runs does nothing.
    pub fn apply_live(&self, target: &OstreeTarget) -> Result<LiveApplied, OstreeError> {
        let before = self.status()?;
        let previous = before
            .booted()
            .ok_or(OstreeError::NoBootedDeployment)?
            .clone();
        if let Some(r) = before.running().filter(|r| r.is(target)) {
            return Ok(LiveApplied {
                previous,
                running: r.clone(),
            });
        }
        let cmd = apply_live_command(&self.config);
        self.runner.run_checked(&cmd)?;
        check_live(&previous, &self.status()?, target, &cmd)
    }
}
