use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Fake `fw_printenv`/`fw_setenv` on a private PATH: the environment lives in
/// `env` (one `name=value` per line) and every invocation is appended to `log`.
fn fake_tools(dir: &Path) -> UBoot {
    let env = dir.join("env");
    let log = dir.join("log");
    std::fs::write(&env, "bootdelay=3\n").unwrap();
    let printenv = format!(
        "#!/bin/sh\necho \"fw_printenv $*\" >> {log}\ncat {env}\n",
        log = log.display(),
        env = env.display()
    );
    let setenv = format!(
        "#!/bin/sh\necho \"fw_setenv $*\" >> {log}\nif [ \"$1\" = -c ]; then shift 2; fi\ngrep -v \"^$1=\" {env} > {env}.new\nif [ $# -gt 1 ]; then echo \"$1=$2\" >> {env}.new; fi\nmv {env}.new {env}\n",
        log = log.display(),
        env = env.display()
    );
    for (name, body) in [("fw_printenv", printenv), ("fw_setenv", setenv)] {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", dir.display());
    UBoot::default().with_path(path)
}

fn log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn arm_commit_disarm_call_the_tools_with_the_right_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let boot = fake_tools(dir.path());
    assert_eq!(boot.read().unwrap(), BootState::default());
    boot.arm_try(Slot::B).unwrap();
    assert_eq!(boot.read().unwrap().try_next, Some(Slot::B));
    boot.commit(Slot::B).unwrap();
    assert_eq!(
        boot.read().unwrap(),
        BootState {
            default: Some(Slot::B),
            try_next: None
        }
    );
    boot.disarm().unwrap(); // nothing armed: no fw_setenv call
    let calls = log(dir.path());
    let sets: Vec<_> = calls
        .iter()
        .filter(|c| c.starts_with("fw_setenv"))
        .collect();
    assert_eq!(
        sets,
        [
            "fw_setenv osroll_try B",
            "fw_setenv osroll_default B",
            "fw_setenv osroll_try"
        ],
        "{calls:?}"
    );
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(
        env.contains("bootdelay=3\n"),
        "unrelated variables are kept: {env}"
    );
}

#[test]
fn config_file_is_passed_to_both_tools() {
    let dir = tempfile::tempdir().unwrap();
    let boot = fake_tools(dir.path()).with_config("/host/etc/fw_env.config");
    boot.arm_try(Slot::A).unwrap();
    boot.read().unwrap();
    let calls = log(dir.path());
    assert_eq!(
        calls,
        [
            "fw_setenv -c /host/etc/fw_env.config osroll_try A",
            "fw_printenv -c /host/etc/fw_env.config"
        ]
    );
}

#[test]
fn failing_tool_is_reported_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fw_printenv");
    std::fs::write(
        &p,
        "#!/bin/sh\necho 'Cannot read environment' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let boot = UBoot::default().with_path(dir.path().as_os_str().to_owned());
    let err = boot.read().unwrap_err();
    assert!(
        matches!(&err.cause, BootCause::Tool { stderr, .. } if stderr == "Cannot read environment"),
        "{err:?}"
    );
    let e = err.to_string();
    assert!(
        e.contains("Cannot read environment") && e.contains("fw_printenv"),
        "{e}"
    );
    let missing = UBoot::new("/nonexistent/fw_printenv", "x")
        .read()
        .unwrap_err();
    let BootCause::Spawn { source, .. } = &missing.cause else {
        panic!("{missing:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(
        missing
            .to_string()
            .contains("cannot run /nonexistent/fw_printenv"),
        "{missing}"
    );
}

#[test]
fn printenv_parsing_keeps_values_with_equals() {
    assert_eq!(
        parse_printenv("a=1\nb=x=y\njunk\n"),
        [("a", "1"), ("b", "x=y")]
    );
}

#[test]
fn slot_kernel_arguments_are_one_fw_setenv_value() {
    let dir = tempfile::tempdir().unwrap();
    let boot = fake_tools(dir.path());
    assert_eq!(boot.slot_cmdline(Slot::B).unwrap(), "");
    boot.set_slot_cmdline(Slot::B, "console=ttyS0 nosmt")
        .unwrap();
    assert_eq!(boot.slot_cmdline(Slot::B).unwrap(), "console=ttyS0 nosmt");
    assert_eq!(boot.slot_cmdline(Slot::A).unwrap(), "");
    boot.set_slot_cmdline(Slot::B, "console=ttyS0 nosmt")
        .unwrap(); // unchanged: no call
    boot.set_slot_cmdline(Slot::B, "").unwrap();
    assert_eq!(boot.slot_cmdline(Slot::B).unwrap(), "");
    let sets: Vec<String> = log(dir.path())
        .into_iter()
        .filter(|c| c.starts_with("fw_setenv"))
        .collect();
    assert_eq!(
        sets,
        [
            "fw_setenv osroll_cmdline_B console=ttyS0 nosmt",
            "fw_setenv osroll_cmdline_B"
        ]
    );
}
