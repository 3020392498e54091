//! Kernel arguments that travel with an OSTree update (`spec.kernelArguments`), as each
//! host tool takes them. The new deployment's BLS entry carries them, so they take
//! effect on the boot into it and never touch the running system.
//!
//! - `ostree admin deploy`: `--karg-append=ARG` and `--karg-delete=ARG` on the deploy
//!   itself, starting from the booted deployment's arguments; deleting one that is not
//!   there is no error.
//! - `rpm-ostree rebase|deploy`: a following `rpm-ostree kargs --append=ARG
//!   --delete-if-present=ARG`, which edits the deployment just staged.
//! - `bootc switch`: none; bootc reads kernel arguments from the image
//!   (`/usr/lib/bootc/kargs.d`), so a request for them fails before anything is staged.

use osroll_api::upgrade::KernelArguments;

use super::{OstreeConfig, OstreeError, OstreeTool};
use crate::backends::runner::CommandSpec;

/// No change requested.
pub fn is_empty(k: &KernelArguments) -> bool {
    k.add.is_empty() && k.remove.is_empty()
}

/// Options for the staging command itself (`ostree admin deploy`); an error for a
/// tool that cannot take any.
pub fn stage_args(tool: OstreeTool, k: &KernelArguments) -> Result<Vec<String>, OstreeError> {
    if is_empty(k) {
        return Ok(Vec::new());
    }
    match tool {
        OstreeTool::OstreeAdminDeploy => Ok(k
            .add
            .iter()
            .map(|a| format!("--karg-append={a}"))
            .chain(k.remove.iter().map(|r| format!("--karg-delete={r}")))
            .collect()),
        OstreeTool::BootcSwitch => Err(OstreeError::KernelArgumentsUnsupported {
            tool,
            hint: "bootc takes them from the image's /usr/lib/bootc/kargs.d",
        }),
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => Ok(Vec::new()),
    }
}

/// A command to run after staging (rpm-ostree's `kargs`), when one is needed.
pub fn after_stage(config: &OstreeConfig, k: &KernelArguments) -> Option<CommandSpec> {
    let rpm_ostree = matches!(
        config.tool,
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy
    );
    if !rpm_ostree || is_empty(k) {
        return None;
    }
    let args = k
        .add
        .iter()
        .map(|a| format!("--append={a}"))
        .chain(k.remove.iter().map(|r| format!("--delete-if-present={r}")));
    Some(config.command(config.stage_timeout).arg("kargs").args(args))
}
