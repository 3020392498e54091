//! OSTree updates applied without a reboot, and which host tool can do that.
//!
//! | tool | live switch | kernel arguments | rollback |
//! |---|---|---|---|
//! | `rpm-ostree` | `rpm-ostree apply-live` makes the staged deployment's commit the running one; the staged deployment stays the next boot's | `rpm-ostree kargs` | the previous deployment stays the bootloader's fallback |
//! | `ostree admin` | none (`admin unlock --hotfix` only makes `/usr` writable): the update takes a reboot | `--karg-append` / `--karg-delete` | same |
//! | `bootc` | none (`bootc usr-overlay` only makes `/usr` writable): the update takes a reboot | from the image (`kargs.d`) | same |
//!
//! Whether an update may skip the reboot is [`requested`]: the catalog entry's
//! `rebootRequired` (carried as `spec.image.rebootRequired`, checked against a signed
//! catalog) wins; without it `osVersionManagement.ostree.rebootRequired` decides: `false`
//! (switch live, replacing packages) or `auto` (switch live only if rpm-ostree reports
//! that the update just adds packages, see [`super::pkgdiff`]). [`plan`] turns that into
//! what happens with a given tool: kernel arguments take effect only at a boot, so an
//! update carrying them reboots. After a live switch, pods keep the mounts they were
//! given, inside the previous deployment's directory
//! (`/ostree/deploy/<os>/deploy/<checksum>.<serial>`): [`stale_refs`] describes that
//! directory so [`crate::mounts`] can restart exactly those pods.

use osroll_api::ImageRef;
use serde_json::Value;

use super::pkgdiff::Verdict;
use super::{
    CommandRunner, Deployment, DeploymentStatus, OstreeBackend, OstreeConfig, OstreeError,
    OstreeTarget, OstreeTool, kargs,
};
use crate::backends::runner::CommandSpec;
use crate::mounts::decide::StaleRef;

/// Who said that an update needs no reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LiveSource {
    /// The catalog entry's `rebootRequired: false`.
    CatalogEntry,
    /// `osVersionManagement.ostree.rebootRequired: false`.
    OsVersionManagement,
}

/// How an update asks to be applied, before the tool is considered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LiveRequest {
    /// By the reboot: nothing says otherwise, or the catalog entry says a reboot is needed.
    #[default]
    Reboot,
    /// Without a reboot, as the source says: switched live, packages replaced as needed.
    Live(LiveSource),
    /// `osVersionManagement.ostree.rebootRequired: auto`: live if the host tool reports
    /// that the update only adds packages, else by the reboot.
    IfToolAllows,
}

impl LiveRequest {
    /// For messages: who asked for what.
    pub fn describe(self) -> &'static str {
        match self {
            LiveRequest::Reboot => "the update reboots",
            LiveRequest::Live(LiveSource::CatalogEntry) => {
                "the catalog entry says no reboot is needed (rebootRequired: false)"
            }
            LiveRequest::Live(LiveSource::OsVersionManagement) => {
                "osVersionManagement.ostree.rebootRequired is false"
            }
            LiveRequest::IfToolAllows => "osVersionManagement.ostree.rebootRequired is auto",
        }
    }
}

/// How an update is applied with `tool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LivePlan {
    /// By the reboot; the reason when live was asked for and cannot be.
    Reboot(Option<String>),
    /// Switched live; `allow_replacement` for `apply-live --allow-replacement`.
    Live {
        /// Packages may be replaced and removed, not only added.
        allow_replacement: bool,
    },
    /// Ask the tool after staging whether the update only adds packages.
    AskTool,
}

/// The request of a progress: the catalog entry's `rebootRequired` (in `image`) when set,
/// else `osVersionManagement.ostree.rebootRequired` (`true`, `false` or `auto`).
/// A malformed `osVersionManagement` value is an error even when the entry decides.
pub fn requested(
    image: &ImageRef,
    os_version_management: Option<&Value>,
) -> Result<LiveRequest, OstreeError> {
    let field = os_version_management
        .and_then(|v| v.get("ostree"))
        .and_then(|v| v.get("rebootRequired"));
    let from_ovm = match field {
        None | Some(Value::Null) | Some(Value::Bool(true)) => LiveRequest::Reboot,
        Some(Value::Bool(false)) => LiveRequest::Live(LiveSource::OsVersionManagement),
        Some(Value::String(s)) if s == "auto" => LiveRequest::IfToolAllows,
        Some(other) => {
            return Err(OstreeError::BadTarget(format!(
                "osVersionManagement.ostree.rebootRequired must be true, false or \"auto\", got {other}"
            )));
        }
    };
    Ok(match image.reboot_required {
        Some(true) => LiveRequest::Reboot,
        Some(false) => LiveRequest::Live(LiveSource::CatalogEntry),
        None => from_ovm,
    })
}

/// What happens to `target` with `tool`: live only where the tool can switch live and
/// no kernel arguments change (they take effect only at a boot).
pub fn plan(tool: OstreeTool, target: &OstreeTarget) -> LivePlan {
    let why = |s: String| LivePlan::Reboot(Some(format!("{}, but {s}", target.live.describe())));
    match target.live {
        LiveRequest::Reboot => LivePlan::Reboot(None),
        _ if !can_apply_live(tool) => why(format!(
            "{tool} cannot switch deployments live, so it takes a reboot"
        )),
        _ if !kargs::is_empty(&target.kernel_arguments) => why(
            "the kernel arguments change, which takes effect only at a boot, so it takes a reboot"
                .into(),
        ),
        LiveRequest::Live(_) => LivePlan::Live {
            allow_replacement: true,
        },
        LiveRequest::IfToolAllows => LivePlan::AskTool,
    }
}

/// What staging reports: whether applying needs a reboot, and the rest of its message.
/// `verdict` is the tool's package diff, asked for [`LivePlan::AskTool`] only.
pub fn after_staging(
    tool: OstreeTool,
    target: &OstreeTarget,
    plan: &LivePlan,
    verdict: Option<&Verdict>,
) -> (bool, String) {
    let asked = target.live.describe();
    match (plan, verdict) {
        (LivePlan::Reboot(None), _) => (true, "waiting for reboot approval".into()),
        (LivePlan::Reboot(Some(why)), _) => (true, format!("{why}; waiting for reboot approval")),
        (LivePlan::Live { .. }, _) | (LivePlan::AskTool, Some(Verdict::Additive)) => {
            let tool_says = match plan {
                LivePlan::AskTool => format!(" and {tool} reports that it only adds packages"),
                _ => String::new(),
            };
            (
                false,
                format!("{asked}{tool_says}; it is switched to live once approved"),
            )
        }
        (LivePlan::AskTool, Some(Verdict::Replaces(pkgs))) => (
            true,
            format!(
                "{asked}, but {tool} reports packages replaced or removed ({pkgs}), which `apply-live` takes only with --allow-replacement, so it takes a reboot; waiting for reboot approval"
            ),
        ),
        (LivePlan::AskTool, None) => (
            true,
            format!(
                "{asked}, but {tool} was not asked, so it takes a reboot; waiting for reboot approval"
            ),
        ),
    }
}

/// Whether `tool` can switch the running system to a staged deployment.
pub fn can_apply_live(tool: OstreeTool) -> bool {
    matches!(
        tool,
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy
    )
}

/// The command that switches the running system to the staged deployment; without
/// `allow_replacement` rpm-ostree refuses an update that replaces or removes packages.
pub fn apply_live_command(config: &OstreeConfig, allow_replacement: bool) -> CommandSpec {
    let c = config.command(config.stage_timeout).arg("apply-live");
    let c = if allow_replacement {
        c.arg("--allow-replacement")
    } else {
        c
    };
    c.with_prefix(&config.host_prefix)
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
    pub fn apply_live(
        &self,
        target: &OstreeTarget,
        allow_replacement: bool,
    ) -> Result<LiveApplied, OstreeError> {
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
        let cmd = apply_live_command(&self.config, allow_replacement);
        self.runner.run_checked(&cmd)?;
        check_live(&previous, &self.status()?, target, &cmd)
    }
}

impl<R: CommandRunner> OstreeBackend<R> {
    /// After staging: does rpm-ostree report an update that only adds packages?
    pub fn package_verdict(&self) -> Result<Verdict, OstreeError> {
        let cmd = super::pkgdiff::command(&self.config);
        let out = self.runner.run_checked(&cmd)?;
        let diff = super::pkgdiff::parse(&out.stdout_text()).map_err(|source| {
            OstreeError::PackageDiff {
                command: cmd.display(),
                source,
            }
        })?;
        Ok(Verdict::of(&diff))
    }
}
