//! Fleet rollbacks on OSTree nodes: the node still has the deployment it ran before the
//! upgrade (OSTree keeps it as the bootloader's fallback), so going back should not
//! fetch anything. [`restorable`] decides, purely, whether that deployment is there and
//! is the target; [`restore_commands`] makes it the next boot's with the tool's own
//! rollback:
//!
//! - `rpm-ostree rollback`: the rollback deployment becomes the default. Only while no
//!   other deployment is pending: with one, rpm-ostree's rollback just drops it.
//! - `bootc rollback`: queues the rollback deployment for the next boot (bootc discards
//!   a staged one itself); `bootc status` then says `rollbackQueued`.
//! - `ostree admin`, which has no rollback verb: `ostree admin deploy --stage` of the old
//!   deployment's commit from the local repository, with that deployment's origin file
//!   (`--origin-file`), so it keeps following its refspec. Its kernel arguments are the
//!   booted deployment's with the update's `spec.kernelArguments` undone (the added ones
//!   deleted, the removed ones appended again).
//!
//! When the old deployment is gone (pruned, or another version), the rollback is a
//! normal staging of the version from the catalog.

use super::{Deployment, DeploymentStatus, OstreeConfig, OstreeTarget, OstreeTool};
use crate::backends::runner::CommandSpec;

/// The deployment a rollback to `target` returns to without fetching, when `tool` can.
pub fn restorable<'a>(
    tool: OstreeTool,
    status: &'a DeploymentStatus,
    target: &OstreeTarget,
) -> Option<&'a Deployment> {
    let mut old = status
        .deployments
        .iter()
        .filter(|d| !d.booted && !d.staged && d.is(target));
    match tool {
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => old
            .find(|d| d.rollback)
            .filter(|_| status.staged().is_none()),
        OstreeTool::BootcSwitch => old.find(|d| d.rollback),
        OstreeTool::OstreeAdminDeploy => {
            let redeployable: Vec<_> = old.filter(|d| d.deploy_dir().is_some()).collect();
            redeployable
                .iter()
                .find(|d| d.rollback)
                .or_else(|| redeployable.first())
                .copied()
        }
    }
}

/// For messages: how `tool` returns to the old deployment.
pub fn how(tool: OstreeTool) -> &'static str {
    match tool {
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => "`rpm-ostree rollback`",
        OstreeTool::BootcSwitch => "`bootc rollback`",
        OstreeTool::OstreeAdminDeploy => "`ostree admin deploy` of its commit",
    }
}

/// The commands that make `old` (from [`restorable`]) the next boot's deployment.
pub fn restore_commands(
    config: &OstreeConfig,
    target: &OstreeTarget,
    old: &Deployment,
) -> Vec<CommandSpec> {
    let c = config.command(config.stage_timeout);
    let cmd = match config.tool {
        OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy | OstreeTool::BootcSwitch => {
            c.arg("rollback")
        }
        OstreeTool::OstreeAdminDeploy => redeploy(config, target, old),
    };
    vec![cmd.with_prefix(&config.host_prefix)]
}

/// `ostree admin deploy --stage --origin-file=<old origin> <old commit>`.
fn redeploy(config: &OstreeConfig, target: &OstreeTarget, old: &Deployment) -> CommandSpec {
    let mut deploy = config
        .command(config.stage_timeout)
        .args(["admin", "deploy", "--stage"]);
    if let Some(os) = old.os_name.as_ref().or(config.os_name.as_ref()) {
        deploy = deploy.arg(format!("--os={os}"));
    }
    let root = match &config.sysroot {
        Some(s) => {
            deploy = deploy.arg(format!("--sysroot={}", s.display()));
            s.display().to_string()
        }
        None => String::new(),
    };
    if let Some(dir) = old.deploy_dir() {
        let root = root.trim_end_matches('/');
        deploy = deploy.arg(format!("--origin-file={root}{dir}.origin"));
    }
    let k = &target.kernel_arguments;
    let undo = k
        .add
        .iter()
        .map(|a| format!("--karg-delete={a}"))
        .chain(k.remove.iter().map(|r| format!("--karg-append={r}")));
    let extra = config.stage_args.iter().cloned();
    deploy
        .args(extra)
        .args(undo)
        .arg(old.checksum.clone().unwrap_or_default())
}

#[cfg(test)]
#[path = "rollback_tests.rs"]
mod tests;
