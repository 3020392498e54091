//! The OSTree backend against Debian's real `ostree` on a directory sysroot: a real
//! repository with two commits, `admin init-fs` / `os-init` / `deploy`, and every
//! backend command run through a host prefix that makes the sysroot look booted (see
//! `ostree_real/sysroot.rs`). Staging, the BLS entry's kernel arguments, the booted and
//! pending deployment, a bootloader fallback, a rollback to the previous version staged
//! as any version, and a fleet rollback that redeploys the kept commit without a pull.
//!
//! rpm-ostree and bootc are not packaged here; their paths are tested against scripted
//! tools (`scripted_*` in `src/backends/ostree/tests.rs`). Without `ostree`, or without
//! root, these tests fail saying so.

mod common;
#[path = "ostree_real/sysroot.rs"]
mod sysroot;

use std::time::Duration;

use common::*;
use osroll_agent::AgentExit;
use osroll_agent::backends::driver::{BackendConfig, Confirmed, DeployBackend, Staging, Target};
use osroll_agent::backends::ostree::{OstreeBackend, OstreeConfig, OstreeTool};
use osroll_agent::backends::runner::ProcessRunner;
use osroll_api::upgrade::KernelArguments;
use osroll_api::{ImageRef, ProgressPhase};
use sysroot::{OS, Sysroot};

/// The node booted into commit 1.0 of `testos/v1`; 2.0 is committed to `testos/v2`.
struct Fixture {
    sysroot: Sysroot,
    c1: String,
    c2: String,
}

fn fixture() -> Fixture {
    let sysroot = Sysroot::new();
    let c1 = sysroot.commit("testos/v1", "1.0");
    let c2 = sysroot.commit("testos/v2", "2.0");
    sysroot.install("testos/v1", &["root=/dev/vda2", "rhgb"]);
    Fixture { sysroot, c1, c2 }
}

fn config(s: &Sysroot) -> OstreeConfig {
    let mut c = OstreeConfig::new(OstreeTool::OstreeAdminDeploy);
    c.host_prefix = vec![sysroot::display(&s.enter())];
    c.os_name = Some(OS.into());
    c.pull = false;
    c
}

fn backend(s: &Sysroot) -> OstreeBackend<ProcessRunner> {
    OstreeBackend::new(config(s), ProcessRunner)
}

fn kargs(add: &[&str], remove: &[&str]) -> KernelArguments {
    KernelArguments {
        add: add.iter().map(|s| s.to_string()).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

fn image(version: &str, checksum: &str) -> ImageRef {
    let branch = if version == "1.0" { "v1" } else { "v2" };
    ImageRef {
        version: version.into(),
        url: format!("{OS}/{branch}"),
        checksum: format!("sha256:{checksum}"),
        size: None,
        reboot_required: None,
        chunk_index: None,
    }
}

fn target(image: ImageRef, kernel_arguments: KernelArguments) -> Target {
    Target {
        node: NODE.into(),
        image,
        current_version: None,
        os_version_management: None,
        kernel_arguments,
        staged_reboot_required: None,
        rollback: false,
    }
}

fn deploy_dir(checksum: &str, serial: u32) -> String {
    format!("/ostree/deploy/{OS}/deploy/{checksum}.{serial}")
}

#[test]
fn ostree_admin_stages_reports_pending_and_boots_with_the_kernel_arguments() {
    let f = fixture();
    let b = backend(&f.sysroot);
    let st = b.status().unwrap();
    let booted = st.booted().expect("a booted deployment");
    assert_eq!(booted.checksum.as_deref(), Some(f.c1.as_str()));
    assert_eq!(booted.deploy_dir(), Some(deploy_dir(&f.c1, 0)));
    assert_eq!(b.running_version().unwrap().as_deref(), Some("1.0"));
    assert_eq!(st.staged(), None);

    let t = target(
        image("2.0", &f.c2),
        kargs(&["console=ttyS0", "quiet"], &["rhgb"]),
    );
    let staged = DeployBackend::stage(&b, &t).unwrap();
    assert!(
        matches!(&staged, Staging::Staged { reboot_required: true, message, .. } if message.contains("staged")),
        "{staged:?}"
    );
    let st = b.status().unwrap();
    let pending = st.staged().expect("a staged deployment");
    assert_eq!(pending.checksum.as_deref(), Some(f.c2.as_str()));
    assert_eq!(pending.version.as_deref(), Some("2.0"));
    assert_eq!(
        st.booted().unwrap().checksum.as_deref(),
        Some(f.c1.as_str())
    );
    // Staging again (a restarted agent) finds it staged.
    let again = DeployBackend::stage(&b, &t).unwrap();
    assert!(
        matches!(&again, Staging::Staged { message, .. } if message.contains("already staged")),
        "{again:?}"
    );
    assert!(DeployBackend::apply(&b, &t).unwrap().reboot_required);
    assert!(matches!(
        DeployBackend::confirm(&b, &t).unwrap(),
        Confirmed::Elsewhere { .. }
    ));

    f.sysroot.reboot(false);
    let confirmed = DeployBackend::confirm(&b, &t).unwrap();
    assert!(
        matches!(&confirmed, Confirmed::OnTarget { version: Some(v), .. } if v == "2.0"),
        "{confirmed:?}"
    );
    assert_eq!(b.running_version().unwrap().as_deref(), Some("2.0"));
    let entries = f.sysroot.entries();
    let opts = &entries[0].options;
    for want in ["root=/dev/vda2", "console=ttyS0", "quiet"] {
        assert!(opts.iter().any(|o| o == want), "{want} missing: {opts:?}");
    }
    assert!(!opts.iter().any(|o| o == "rhgb"), "{opts:?}");
    // The previous deployment's entry keeps its own arguments (the fallback is intact).
    assert!(
        entries[1].options.iter().any(|o| o == "rhgb"),
        "{entries:?}"
    );
}

#[test]
fn a_boot_that_falls_back_to_the_old_deployment_is_not_the_target() {
    let f = fixture();
    let b = backend(&f.sysroot);
    let t = target(image("2.0", &f.c2), KernelArguments::default());
    DeployBackend::stage(&b, &t).unwrap();
    f.sysroot.reboot(true);
    let booted = b.status().unwrap();
    assert_eq!(
        booted.booted().unwrap().checksum.as_deref(),
        Some(f.c1.as_str())
    );
    match DeployBackend::confirm(&b, &t).unwrap() {
        Confirmed::Elsewhere { message } => {
            assert!(message.contains("version 1.0 instead of"), "{message}");
            // ostree still lists the target first: the next boot would try it again.
            assert!(message.contains("version 2.0 is still staged"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rolling_back_after_an_update_deploys_the_previous_commit_again() {
    let f = fixture();
    let b = backend(&f.sysroot);
    let up = target(image("2.0", &f.c2), KernelArguments::default());
    DeployBackend::stage(&b, &up).unwrap();
    f.sysroot.reboot(false);
    assert!(matches!(
        DeployBackend::confirm(&b, &up).unwrap(),
        Confirmed::OnTarget { .. }
    ));

    let back = target(image("1.0", &f.c1), KernelArguments::default());
    let staged = DeployBackend::stage(&b, &back).unwrap();
    assert!(matches!(staged, Staging::Staged { .. }), "{staged:?}");
    f.sysroot.reboot(false);
    assert!(matches!(
        DeployBackend::confirm(&b, &back).unwrap(),
        Confirmed::OnTarget { version: Some(ref v), .. } if v == "1.0"
    ));
    let booted = b.status().unwrap().booted().cloned().unwrap();
    // A new deployment of the old commit, next to the original one's.
    assert_eq!(booted.checksum.as_deref(), Some(f.c1.as_str()));
    assert_eq!(
        f.sysroot.booted_dir().display().to_string(),
        format!(
            "{}{}",
            f.sysroot.path().display(),
            booted.deploy_dir().unwrap()
        )
    );
}

/// The repository's refs other than ostree's own per-deployment ones.
fn branches(s: &Sysroot) -> Vec<String> {
    s.on_node(&["ostree", "refs"])
        .lines()
        .filter(|r| !r.starts_with("ostree/"))
        .map(str::to_string)
        .collect()
}

/// How many objects the repository holds.
fn objects(s: &Sysroot) -> usize {
    let dir = s.path().join("ostree/repo/objects");
    sysroot::run(
        std::process::Command::new("find")
            .arg(dir)
            .args(["-type", "f"]),
    )
    .lines()
    .count()
}

/// A fleet rollback after 1.0 → 2.0 (with kernel arguments): the target names a
/// `remote:ref` that cannot be pulled (no remote, and the local ref is gone), so only a
/// redeploy of the kept 1.0 deployment's commit can stage it. It does, with 1.0's origin
/// and the update's kernel arguments undone.
#[test]
fn a_rollback_redeploys_the_kept_commit_without_pulling() {
    let f = fixture();
    let change = kargs(&["quiet"], &["rhgb"]);
    let up = target(image("2.0", &f.c2), change.clone());
    DeployBackend::stage(&backend(&f.sysroot), &up).unwrap();
    f.sysroot.reboot(false);
    // From here on the backend pulls a `remote:ref` reference before deploying it.
    let mut config = config(&f.sysroot);
    config.pull = true;
    let b = OstreeBackend::new(config, ProcessRunner);
    assert!(matches!(
        DeployBackend::confirm(&b, &up).unwrap(),
        Confirmed::OnTarget { .. }
    ));
    f.sysroot
        .on_node(&["ostree", "refs", "--delete", "testos/v1"]);
    assert_eq!(f.sysroot.on_node(&["ostree", "remote", "list"]), "");
    let status = b.status().unwrap();
    let kept = status
        .deployments
        .iter()
        .find(|d| !d.booted)
        .expect("1.0 is kept");
    assert_eq!(kept.checksum.as_deref(), Some(f.c1.as_str()));
    assert!(
        kept.rollback,
        "ostree lists 1.0 as the rollback: {status:?}"
    );

    let mut back = target(image("1.0", &f.c1), change);
    back.image.url = format!("origin:{OS}/v1");
    back.rollback = true;
    let objects_before = objects(&f.sysroot);
    let staged = DeployBackend::stage(&b, &back).unwrap();
    assert!(
        matches!(&staged, Staging::Staged { reboot_required: true, message, .. }
            if message.contains("nothing fetched")),
        "{staged:?}"
    );
    let st = b.status().unwrap();
    let next = st.staged().expect("1.0 staged");
    assert_eq!(next.checksum.as_deref(), Some(f.c1.as_str()));
    assert_eq!(
        next.origin.as_deref(),
        Some("testos/v1"),
        "1.0's own origin"
    );
    assert_eq!(branches(&f.sysroot), ["testos/v2"], "no ref fetched");
    assert_eq!(objects(&f.sysroot), objects_before, "no object fetched");

    f.sysroot.reboot(false);
    assert!(matches!(
        DeployBackend::confirm(&b, &back).unwrap(),
        Confirmed::OnTarget { version: Some(ref v), .. } if v == "1.0"
    ));
    let opts = &f.sysroot.entries()[0].options;
    assert!(opts.iter().any(|o| o == "rhgb"), "{opts:?}");
    assert!(opts.iter().any(|o| o == "root=/dev/vda2"), "{opts:?}");
    assert!(!opts.iter().any(|o| o == "quiet"), "{opts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_updates_an_ostree_node_through_a_reboot() {
    const T: Duration = Duration::from_secs(60);
    let f = fixture();
    let node = Node::new(1 << 20, "1.0");
    let mut cfg = node.config();
    cfg.backend = BackendConfig::Ostree(config(&f.sysroot));
    let img = image("2.0", &f.c2);
    let mut s = spec(&img.version, &img.url, &img.checksum, None);
    s.kernel_arguments = Some(kargs(&["quiet"], &[]));
    s.reboot_approved = true;
    node.put(s);
    let exit = tokio::time::timeout(T, node.spawn_agent_with(cfg.clone()))
        .await
        .expect("the agent reboots the node");
    assert_eq!(exit.unwrap().unwrap(), AgentExit::Rebooted);
    assert_eq!(node.status().unwrap().reboot_required, Some(true));

    f.sysroot.reboot(false);
    node.host.boot().unwrap();
    let agent = node.spawn_agent_with(cfg);
    let st = node
        .wait_phase(
            &[
                ProgressPhase::Completed,
                ProgressPhase::RolledBack,
                ProgressPhase::Failed,
            ],
            T,
        )
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(st.current_version.as_deref(), Some("2.0"));
    let opts = &f.sysroot.entries()[0].options;
    assert!(opts.iter().any(|o| o == "quiet"), "{opts:?}");
}

#[test]
fn ostree_admin_cannot_switch_live_so_an_update_without_reboot_still_reboots() {
    let f = fixture();
    let b = backend(&f.sysroot);
    let mut t = target(image("2.0", &f.c2), KernelArguments::default());
    t.os_version_management = Some(serde_json::json!({"ostree": {"rebootRequired": false}}));
    match DeployBackend::stage(&b, &t).unwrap() {
        Staging::Staged {
            reboot_required,
            message,
            ..
        } => {
            assert!(reboot_required);
            assert!(
                message.contains("cannot switch deployments live"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let applied = DeployBackend::apply(&b, &t).unwrap();
    assert!(applied.reboot_required && applied.stale.is_empty());
    assert_eq!(b.running_version().unwrap().as_deref(), Some("1.0"));
}

/// Reboot coordination for an update staged by someone else: the pending-deployment
/// source reads the real tool's status and signals only while a deployment waits, with
/// the version it will boot; the boot into it clears the signal.
#[tokio::test]
async fn a_deployment_staged_outside_osroll_signals_reboot_needed_until_booted() {
    use osroll_agent::reboot::RebootSource as _;
    use osroll_agent::reboot::ostree::OstreePending;
    let f = fixture();
    let source = OstreePending::new(config(&f.sysroot));
    assert_eq!(source.check().await.unwrap(), None, "nothing staged yet");
    // Another tool stages 2.0 (here: the backend's own commands, as rpm-ostree would).
    DeployBackend::stage(
        &backend(&f.sysroot),
        &target(image("2.0", &f.c2), kargs(&[], &[])),
    )
    .unwrap();
    let signal = source.check().await.unwrap().expect("a pending deployment");
    assert_eq!(signal.source, osroll_api::RebootSource::OstreePending);
    assert_eq!(signal.version.as_deref(), Some("2.0"));
    assert!(signal.detail.contains(&f.c2[..12]), "{}", signal.detail);
    f.sysroot.reboot(false);
    assert_eq!(source.check().await.unwrap(), None, "booted into it");
}
