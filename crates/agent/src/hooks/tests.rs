use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};

use super::*;
use crate::backends::runner::ProcessRunner;
use crate::backends::testutil::script;

const T: Duration = Duration::from_secs(20);

fn ctx(to: &str) -> HookContext {
    HookContext {
        from_version: Some("24.09.300".into()),
        to_version: to.into(),
        reboot: false,
        node: Some("node-1".into()),
    }
}

/// A directory only its owner can write, whatever the umask (hooks in others are refused).
fn owner_dir(path: &Path) {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn hook(dir: &Path, rel: &str, body: &str) -> PathBuf {
    let path = dir.join(rel);
    owner_dir(path.parent().unwrap());
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    script(path.parent().unwrap(), &name, body)
}

fn hooks(dir: &Path) -> Hooks<ProcessRunner> {
    Hooks::new(dir, T, ProcessRunner)
}

#[test]
fn the_versions_own_hook_wins_over_the_default() {
    let d = tempfile::tempdir().unwrap();
    hook(d.path(), "24.09.400/pre-install", "echo versioned");
    hook(d.path(), "default/pre-install", "echo default");
    let h = hooks(d.path());
    let run = h
        .run(HookKind::PreInstall, &ctx("24.09.400"))
        .unwrap()
        .unwrap();
    assert_eq!(run.output, "versioned\n");
    assert_eq!(run.path, d.path().join("24.09.400/pre-install"));
    let run = h
        .run(HookKind::PreInstall, &ctx("24.09.500"))
        .unwrap()
        .unwrap();
    assert_eq!(run.output, "default\n");
    assert!(
        h.run(HookKind::PostInstall, &ctx("24.09.400"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_flat_layout_works_the_same_way() {
    let d = tempfile::tempdir().unwrap();
    hook(d.path(), "24.09.400__post-install", "echo versioned");
    hook(d.path(), "default__post-install", "echo default");
    let h = hooks(d.path());
    let run = h
        .run(HookKind::PostInstall, &ctx("24.09.400"))
        .unwrap()
        .unwrap();
    assert_eq!(run.output, "versioned\n");
    let run = h
        .run(HookKind::PostInstall, &ctx("1.0.0"))
        .unwrap()
        .unwrap();
    assert_eq!(run.output, "default\n");
}

#[test]
fn a_configmap_volume_with_non_executable_symlinked_files_runs_with_sh() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("..2026_01_01_00_00_00.1234");
    owner_dir(&data);
    fs::write(
        data.join("default__pre-install"),
        "echo \"from configmap $OSROLL_PHASE\"\n",
    )
    .unwrap();
    fs::set_permissions(
        data.join("default__pre-install"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    symlink(&data, d.path().join("..data")).unwrap();
    symlink(
        "..data/default__pre-install",
        d.path().join("default__pre-install"),
    )
    .unwrap();
    let run = hooks(d.path())
        .run(HookKind::PreInstall, &ctx("2.0.0"))
        .unwrap()
        .unwrap();
    assert_eq!(run.output, "from configmap pre-install\n");
}

#[test]
fn hooks_get_the_update_in_their_environment_and_output_is_captured() {
    let d = tempfile::tempdir().unwrap();
    hook(
        d.path(),
        "default/post-install",
        "echo \"from=$OSROLL_FROM_VERSION to=$OSROLL_TO_VERSION\"\n\
         echo \"reboot=$OSROLL_REBOOT phase=$OSROLL_PHASE node=$OSROLL_NODE\" >&2\n\
         echo done",
    );
    let mut c = ctx("24.09.400");
    c.reboot = true;
    let run = hooks(d.path())
        .run(HookKind::PostInstall, &c)
        .unwrap()
        .unwrap();
    assert_eq!(
        run.output,
        "from=24.09.300 to=24.09.400\nreboot=true phase=post-install node=node-1\ndone\n"
    );
    assert_eq!(
        run.tail(),
        "from=24.09.300 to=24.09.400\nreboot=true phase=post-install node=node-1\ndone"
    );
}

#[test]
fn a_non_zero_exit_fails_with_the_hook_path_code_and_output() {
    let d = tempfile::tempdir().unwrap();
    let path = hook(
        d.path(),
        "default/pre-install",
        "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); done; echo 'cannot stop service' >&2; exit 7",
    );
    let err = hooks(d.path())
        .run(HookKind::PreInstall, &ctx("3.0.0"))
        .unwrap_err();
    assert_eq!(err.reason(), "HookFailed");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("hook {} exited with code 7: …", path.display())),
        "{msg}"
    );
    assert!(msg.ends_with("line 39\ncannot stop service"), "{msg}");
    assert!(!msg.contains("line 5\n"), "{msg}");
    let full = err.output().unwrap();
    assert!(
        full.starts_with("line 0\n") && full.ends_with("cannot stop service\n"),
        "{full}"
    );
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_named() {
    let d = tempfile::tempdir().unwrap();
    let path = hook(d.path(), "default/post-install", "echo waiting; sleep 600");
    let h = Hooks::new(d.path(), Duration::from_millis(300), ProcessRunner);
    let err = h.run(HookKind::PostInstall, &ctx("3.0.0")).unwrap_err();
    assert_eq!(err.reason(), "HookTimedOut");
    assert_eq!(
        err.to_string(),
        format!("hook {} timed out after 300ms: waiting", path.display())
    );
}

#[test]
fn the_same_hook_in_both_layouts_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    hook(d.path(), "default/pre-install", "true");
    hook(d.path(), "default__pre-install", "true");
    let err = hooks(d.path())
        .run(HookKind::PreInstall, &ctx("3.0.0"))
        .unwrap_err();
    assert_eq!(err.reason(), "HookMisconfigured");
    let msg = err.to_string();
    assert!(
        msg.contains("default/pre-install") && msg.contains("default__pre-install"),
        "{msg}"
    );
}

#[test]
fn versions_cannot_escape_the_hooks_directory() {
    let d = tempfile::tempdir().unwrap();
    for v in ["../etc", "a/b", ".hidden", ""] {
        assert!(matches!(
            resolve_hook(d.path(), v, HookKind::PreInstall),
            Err(HookError::BadVersion(_))
        ));
    }
}

#[test]
fn a_missing_directory_means_no_hooks() {
    let h = hooks(Path::new("/nonexistent/osroll-hooks"));
    assert!(
        h.run(HookKind::PreInstall, &ctx("1.0.0"))
            .unwrap()
            .is_none()
    );
}
