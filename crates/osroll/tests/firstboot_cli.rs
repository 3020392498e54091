//! `osroll agent --firstboot` as the systemd unit runs it: the version from a local
//! file, a plugin backend on a simulated host, a reboot in the middle (the unit runs
//! again on the next boot), exit 0 and the stamp file once the node runs the version.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn firstboot(dir: &Path, extra: &[&str]) -> Output {
    let d = |p: &str| dir.join(p).display().to_string();
    let mut args = vec![
        "agent".to_string(),
        "--firstboot".into(),
        "--node-name".into(),
        "fresh-1".into(),
        "--sim-host".into(),
        d("host"),
        "--state-dir".into(),
        d("state"),
        "--backend".into(),
        "plugin".into(),
        "--plugin".into(),
        d("plugin"),
        "--hooks-dir".into(),
        d("hooks"),
        "--firstboot-version-file".into(),
        d("firstboot-version"),
        "--firstboot-done".into(),
        d("firstboot.done"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_osroll"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn firstboot_reboots_once_then_exits_zero_on_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    osroll_agent::SimHost::create(&d.join("host"), 4096, "1.0").unwrap();
    fs::write(d.join("firstboot-version"), "2.0\n").unwrap();
    fs::write(d.join("running"), "1.0").unwrap();
    // The OS switches at the next boot: apply writes `next`, which the test's "boot"
    // moves into `running`.
    let p = d.display();
    fs::write(
        d.join("plugin"),
        format!(
            r#"#!/bin/sh
cat > /dev/null
r=$(cat '{p}/running')
ok='"apiVersion":"osroll.io/plugin/v1","ok":true'
case "$1" in
  stage) echo "{{$ok,\"rebootRequired\":true,\"currentVersion\":\"$r\"}}" ;;
  apply) echo 2.0 > '{p}/next'; echo "{{$ok,\"rebootRequired\":true,\"currentVersion\":\"$r\"}}" ;;
  verify) echo "{{$ok,\"currentVersion\":\"$r\"}}" ;;
esac
"#
        ),
    )
    .unwrap();
    fs::set_permissions(d.join("plugin"), fs::Permissions::from_mode(0o755)).unwrap();

    let out = firstboot(d, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("simulated reboot requested"), "{stdout}");
    assert!(!d.join("firstboot.done").exists());

    fs::rename(d.join("next"), d.join("running")).unwrap();
    let out = firstboot(d, &["--sim-boot"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("first boot: Completed"), "{stdout}");
    assert_eq!(
        fs::read_to_string(d.join("firstboot.done")).unwrap().trim(),
        "2.0"
    );
}

#[test]
fn firstboot_with_an_unreadable_version_file_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    osroll_agent::SimHost::create(&d.join("host"), 4096, "1.0").unwrap();
    fs::write(d.join("firstboot-version"), "not a version!\n").unwrap();
    fs::write(d.join("plugin"), "#!/bin/sh\nexit 1\n").unwrap();
    let out = firstboot(d, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("firstboot-version: version"), "{err}");
}
