//! [`super::super::plan_stage`] for rollback targets and the commands of a restore.

use std::path::PathBuf;

use osroll_api::upgrade::KernelArguments;

use super::super::{StagePlan, live, plan_stage};
use super::*;

fn csum(n: u32) -> String {
    format!("{n:064x}")
}

/// Deployment `n` (commit `csum(n)`, version `40.n`, serial 0 in `fedora`).
fn dep(n: u32) -> Deployment {
    Deployment {
        os_name: Some("fedora".into()),
        checksum: Some(csum(n)),
        serial: Some(0),
        version: Some(format!("40.{n}")),
        ..Deployment::default()
    }
}

fn booted(n: u32) -> Deployment {
    Deployment {
        booted: true,
        ..dep(n)
    }
}

fn staged(n: u32) -> Deployment {
    Deployment {
        staged: true,
        ..dep(n)
    }
}

fn fallback(n: u32) -> Deployment {
    Deployment {
        rollback: true,
        ..dep(n)
    }
}

fn status(deployments: Vec<Deployment>) -> DeploymentStatus {
    DeploymentStatus { deployments }
}

/// A rollback target for commit `n`.
fn back_to(n: u32) -> OstreeTarget {
    OstreeTarget {
        reference: "fedora:fedora/stable".into(),
        version: Some(format!("40.{n}")),
        checksum: Some(format!("sha256:{}", csum(n))),
        kernel_arguments: KernelArguments::default(),
        live: live::LiveRequest::Reboot,
        rollback: true,
    }
}

const ALL: [OstreeTool; 4] = OstreeTool::ALL;

#[test]
fn every_tool_restores_the_rollback_deployment_that_is_the_target() {
    let st = status(vec![booted(2), fallback(1)]);
    for tool in ALL {
        assert_eq!(
            plan_stage(tool, &st, &back_to(1)),
            StagePlan::Restore(fallback(1)),
            "{tool}"
        );
    }
}

#[test]
fn without_the_rollback_mark_the_old_version_is_staged_as_any_other() {
    let st = status(vec![booted(2), fallback(1)]);
    let t = back_to(1).with_rollback(false);
    for tool in ALL {
        assert_eq!(plan_stage(tool, &st, &t), StagePlan::Stage, "{tool}");
    }
}

#[test]
fn a_pruned_or_different_old_deployment_falls_back_to_staging() {
    for st in [
        status(vec![booted(2)]),
        status(vec![booted(2), fallback(3)]),
    ] {
        for tool in ALL {
            assert_eq!(
                plan_stage(tool, &st, &back_to(1)),
                StagePlan::Stage,
                "{tool} {st:?}"
            );
        }
    }
}

#[test]
fn a_target_already_running_or_staged_needs_nothing() {
    let st = status(vec![booted(1), fallback(2)]);
    for tool in ALL {
        assert_eq!(
            plan_stage(tool, &st, &back_to(1)),
            StagePlan::AlreadyBooted(booted(1))
        );
    }
    let st = status(vec![staged(1), booted(2)]);
    for tool in ALL {
        assert_eq!(
            plan_stage(tool, &st, &back_to(1)),
            StagePlan::AlreadyStaged(staged(1))
        );
    }
}

#[test]
fn a_pending_update_stops_rpm_ostree_rollback_but_not_bootc_or_ostree() {
    // rpm-ostree's rollback with a pending deployment only drops the pending one.
    let st = status(vec![staged(3), booted(2), fallback(1)]);
    for tool in [OstreeTool::RpmOstreeRebase, OstreeTool::RpmOstreeDeploy] {
        assert_eq!(
            plan_stage(tool, &st, &back_to(1)),
            StagePlan::Stage,
            "{tool}"
        );
    }
    for tool in [OstreeTool::BootcSwitch, OstreeTool::OstreeAdminDeploy] {
        assert_eq!(
            plan_stage(tool, &st, &back_to(1)),
            StagePlan::Restore(fallback(1)),
            "{tool}"
        );
    }
}

#[test]
fn ostree_admin_redeploys_an_older_deployment_too_but_only_one_it_can_locate() {
    // Not flagged as the rollback (a third deployment), still in the repository.
    let st = status(vec![booted(3), fallback(2), dep(1)]);
    assert_eq!(
        plan_stage(OstreeTool::OstreeAdminDeploy, &st, &back_to(1)),
        StagePlan::Restore(dep(1))
    );
    assert_eq!(
        plan_stage(OstreeTool::BootcSwitch, &st, &back_to(1)),
        StagePlan::Stage
    );
    // Without its serial the origin file cannot be named.
    let no_serial = Deployment {
        serial: None,
        ..fallback(1)
    };
    let st = status(vec![booted(2), no_serial]);
    assert_eq!(
        plan_stage(OstreeTool::OstreeAdminDeploy, &st, &back_to(1)),
        StagePlan::Stage
    );
}

fn words(c: &CommandSpec) -> Vec<String> {
    c.display().split_whitespace().map(str::to_string).collect()
}

#[test]
fn restore_commands_are_the_tools_rollback_or_a_redeploy_of_the_commit() {
    for (tool, program) in [
        (OstreeTool::RpmOstreeDeploy, "rpm-ostree"),
        (OstreeTool::BootcSwitch, "bootc"),
    ] {
        let cmds = restore_commands(&OstreeConfig::new(tool), &back_to(1), &fallback(1));
        assert_eq!(cmds.len(), 1);
        assert_eq!(words(&cmds[0]), [program, "rollback"]);
    }
    let mut config = OstreeConfig::new(OstreeTool::OstreeAdminDeploy);
    config.sysroot = Some(PathBuf::from("/sysroot/"));
    let mut t = back_to(1);
    t.kernel_arguments = KernelArguments {
        add: vec!["quiet".into()],
        remove: vec!["rhgb".into()],
    };
    let cmds = restore_commands(&config, &t, &fallback(1));
    assert_eq!(cmds.len(), 1, "no pull");
    let c1 = csum(1);
    assert_eq!(
        words(&cmds[0]),
        [
            "ostree".to_string(),
            "admin".into(),
            "deploy".into(),
            "--stage".into(),
            "--os=fedora".into(),
            "--sysroot=/sysroot/".into(),
            format!("--origin-file=/sysroot/ostree/deploy/fedora/deploy/{c1}.0.origin"),
            "--karg-delete=quiet".into(),
            "--karg-append=rhgb".into(),
            c1,
        ]
    );
}

#[test]
fn a_rollback_is_applied_by_the_reboot_even_when_the_update_went_live() {
    let live = live::LiveRequest::Live(live::LiveSource::CatalogEntry);
    let t = back_to(1).with_rollback(false).with_live(live);
    assert_eq!(t.live, live);
    assert_eq!(t.with_rollback(true).live, live::LiveRequest::Reboot);
}
