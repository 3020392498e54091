//! Tests of the plugin protocol with small shell-script plugins.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::backends::runner::ProcessRunner;
use crate::backends::testutil::{recorded_args, script};

/// A plugin that saves its request to `<dir>/request.json` and runs `body`.
fn plugin(dir: &Path, body: &str) -> (PathBuf, Plugin<ProcessRunner>) {
    let exe = script(
        dir,
        "os-plugin",
        &format!("cat > '{}/request.json'\n{body}", dir.display()),
    );
    let p = Plugin::new(&exe, Duration::from_secs(20), ProcessRunner);
    (exe, p)
}

fn request() -> PluginRequest {
    PluginRequest::new(PluginAction::Stage, "node-1", "24.09.400")
        .with_current_version(Some("24.09.300"))
        .with_os_version_management(Some(&json!({
            "osVersion": {"imageUri": "oci://registry.local/os:24.09.400", "debug": false}
        })))
}

fn saved_request(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("request.json")).unwrap()).unwrap()
}

#[test]
fn stage_reply_announcing_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = plugin(
        dir.path(),
        r#"echo 'pulling image' >&2
echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true,"currentVersion":"24.09.300","message":"image pulled"}'"#,
    );
    let reply = p.stage(&request()).unwrap();
    assert_eq!(
        reply,
        StageReply {
            reboot_required: true,
            current_version: Some("24.09.300".into()),
            message: Some("image pulled".into()),
        }
    );
    assert_eq!(recorded_args(dir.path(), "os-plugin"), vec![vec!["stage"]]);
    assert_eq!(
        saved_request(dir.path()),
        json!({
            "apiVersion": "osroll.io/plugin/v1",
            "action": "stage",
            "node": "node-1",
            "targetVersion": "24.09.400",
            "currentVersion": "24.09.300",
            "osVersionManagement": {
                "osVersion": {"imageUri": "oci://registry.local/os:24.09.400", "debug": false}
            }
        })
    );
}

#[test]
fn live_update_apply_then_verify_without_reboot() {
    let dir = tempfile::tempdir().unwrap();
    // One plugin for every action, answering by the action in argv[1].
    let (_, p) = plugin(
        dir.path(),
        r#"case "$1" in
  apply) echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":false,"currentVersion":"24.09.400"}' ;;
  verify) printf '\n  {"apiVersion":"osroll.io/plugin/v1","ok":true,"currentVersion":"24.09.400"}\n\n' ;;
  *) exit 9 ;;
esac"#,
    );
    let req = request();
    let applied = p.apply(&req).unwrap();
    assert!(!applied.reboot_required);
    assert_eq!(applied.current_version, "24.09.400");
    assert_eq!(saved_request(dir.path())["action"], "apply");
    let verified = p.verify(&req).unwrap();
    assert_eq!(verified.current_version, "24.09.400");
    assert_eq!(saved_request(dir.path())["action"], "verify");
    assert_eq!(
        recorded_args(dir.path(), "os-plugin"),
        vec![vec!["apply"], vec!["verify"]]
    );
}

#[test]
fn a_crashing_plugin_fails_naming_itself_and_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (exe, p) = plugin(
        dir.path(),
        "echo 'panic: cannot open /var/lib/patches' >&2; exit 3",
    );
    let err = p.stage(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginCrashed");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} stage: exited with code 3: panic: cannot open /var/lib/patches",
            exe.display()
        )
    );
}

#[test]
fn a_plugin_killed_by_a_signal_is_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (exe, p) = plugin(dir.path(), "kill -SEGV $$");
    let err = p.apply(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginCrashed");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("plugin {} apply:", exe.display())),
        "{msg}"
    );
    assert!(msg.contains("killed by signal 11"), "{msg}");
}

#[test]
fn garbage_on_stdout_is_a_protocol_error_naming_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (exe, p) = plugin(dir.path(), "echo 'Updating... done!'");
    let err = p.stage(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginProtocolError");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("plugin {} stage: invalid reply:", exe.display())),
        "{msg}"
    );
    assert!(msg.contains("not one JSON value"), "{msg}");
    assert!(msg.contains("Updating... done!"), "{msg}");
}

#[test]
fn replies_are_checked_strictly() {
    let cases = [
        ("", "printed nothing"),
        ("[1,2]", "expected a JSON object"),
        (
            r#"{"ok":true,"rebootRequired":true}"#,
            "missing field `apiVersion`",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v0","ok":true,"rebootRequired":true}"#,
            r#"apiVersion "osroll.io/plugin/v0" is not "osroll.io/plugin/v1""#,
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":true}"#,
            "`rebootRequired` is required in a successful stage reply",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":"yes"}"#,
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true,"reboot":false}"#,
            "unknown field `reboot`",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true} {"ok":true}"#,
            "trailing characters",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true,"currentVersion":" "}"#,
            "`currentVersion` is empty",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":false}"#,
            "`ok` is false but `error` says nothing",
        ),
    ];
    for (stdout, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = plugin(dir.path(), &format!("printf '%s' '{stdout}'"));
        let err = p.stage(&request()).unwrap_err();
        assert_eq!(err.reason(), "PluginProtocolError", "{stdout}: {err}");
        assert!(err.to_string().contains(want), "{stdout}: {err}");
    }
}

#[test]
fn an_error_reply_is_a_refusal_with_the_plugins_words() {
    let dir = tempfile::tempdir().unwrap();
    let (exe, p) = plugin(
        dir.path(),
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":false,"error":"patch 24.09.400 is not in the repository"}'"#,
    );
    let err = p.verify(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginRefused");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin {} verify failed: patch 24.09.400 is not in the repository",
            exe.display()
        )
    );
}

#[test]
fn an_error_reply_with_a_non_zero_exit_keeps_both() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = plugin(
        dir.path(),
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":false,"error":"disk full"}'; echo 'write failed' >&2; exit 1"#,
    );
    let msg = p.stage(&request()).unwrap_err().to_string();
    assert!(
        msg.contains("exited with code 1: write failed (its reply said: disk full)"),
        "{msg}"
    );
}

#[test]
fn a_missing_plugin_is_not_runnable() {
    let p = Plugin::new(
        "/nonexistent/os-plugin",
        Duration::from_secs(5),
        ProcessRunner,
    );
    let err = p.stage(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginNotRunnable");
    assert!(err.to_string().contains("/nonexistent/os-plugin"), "{err}");
}

#[test]
fn a_hanging_plugin_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(dir.path(), "slow-plugin", "sleep 600");
    let p = Plugin::new(&exe, Duration::from_millis(300), ProcessRunner);
    let err = p.apply(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginCrashed");
    assert!(err.to_string().contains("timed out after 300ms"), "{err}");
}

#[test]
fn apply_reply_names_the_previous_version_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = plugin(
        dir.path(),
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":false,"currentVersion":"24.09.400","stalePaths":["/usr/lib/os/24.09.300"]}'"#,
    );
    let applied = p.apply(&request()).unwrap();
    assert_eq!(applied.stale_paths, vec!["/usr/lib/os/24.09.300"]);
    let (_, p) = plugin(
        dir.path(),
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":false,"currentVersion":"24.09.400","stalePaths":["relative/dir"]}'"#,
    );
    let err = p.apply(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginProtocolError");
    assert!(err.to_string().contains("\"relative/dir\""), "{err}");
}

#[test]
fn kernel_arguments_ride_in_the_request_only_when_they_change_something() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = plugin(
        dir.path(),
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true}'"#,
    );
    let k = KernelArguments {
        add: vec!["console=ttyS0".into(), "nosmt".into()],
        remove: vec!["quiet".into()],
    };
    p.stage(&request().with_kernel_arguments(&k)).unwrap();
    assert_eq!(
        saved_request(dir.path())["kernelArguments"],
        json!({"add": ["console=ttyS0", "nosmt"], "remove": ["quiet"]})
    );
    p.stage(&request().with_kernel_arguments(&KernelArguments::default()))
        .unwrap();
    assert!(saved_request(dir.path()).get("kernelArguments").is_none());
}

/// A rollback request back to 24.09.300.
fn rollback_request() -> PluginRequest {
    PluginRequest::new(PluginAction::Rollback, "node-1", "24.09.300")
        .with_current_version(Some("24.09.400"))
        .with_rollback(true)
}

#[test]
fn a_plugin_that_can_roll_back_prepares_the_return() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = plugin(
        dir.path(),
        r#"[ "$1" = rollback ] || exit 9
echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true,"message":"previous image re-armed"}'"#,
    );
    let reply = p.rollback(&rollback_request()).unwrap();
    assert_eq!(
        reply,
        RollbackReply::Staged(StageReply {
            reboot_required: true,
            current_version: None,
            message: Some("previous image re-armed".into()),
        })
    );
    assert_eq!(
        recorded_args(dir.path(), "os-plugin"),
        vec![vec!["rollback"]]
    );
    let req = saved_request(dir.path());
    assert_eq!(req["action"], "rollback");
    assert_eq!(req["targetVersion"], "24.09.300");
    assert_eq!(req["currentVersion"], "24.09.400");
    assert_eq!(req["rollback"], true);
    // Outside a rollback the field is left out.
    p.rollback(&rollback_request().with_rollback(false))
        .unwrap();
    assert!(saved_request(dir.path()).get("rollback").is_none());
}

#[test]
fn a_plugin_says_it_cannot_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = plugin(
        dir.path(),
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":false,"unsupported":true,"error":"the previous image was not kept"}'"#,
    );
    assert_eq!(
        p.rollback(&rollback_request()).unwrap(),
        RollbackReply::Unsupported {
            why: "the previous image was not kept".into()
        }
    );
    // `unsupported` answers `rollback` only; to `stage` it is a protocol error.
    let err = p.stage(&request()).unwrap_err();
    assert_eq!(err.reason(), "PluginProtocolError");
    assert!(
        err.to_string()
            .contains("every plugin must support `stage`"),
        "{err}"
    );
}

#[test]
fn an_unsupported_reply_is_checked_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":true,"unsupported":true,"rebootRequired":true}"#,
            "`unsupported` is true although `ok` is true",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":false,"unsupported":true}"#,
            "`ok` is false but `error` says nothing",
        ),
        (
            r#"{"apiVersion":"osroll.io/plugin/v1","ok":false,"unsupported":"yes","error":"x"}"#,
            "invalid type",
        ),
    ] {
        let (_, p) = plugin(dir.path(), &format!("echo '{body}'"));
        let err = p.rollback(&rollback_request()).unwrap_err();
        assert_eq!(err.reason(), "PluginProtocolError", "{body}");
        assert!(err.to_string().contains(want), "{body}: {err}");
    }
}

#[test]
fn an_old_plugin_exiting_2_on_the_unknown_action_cannot_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    // The protocol document's example plugin, written before `rollback`.
    let (_, p) = plugin(
        dir.path(),
        r#"case "$1" in stage|apply|verify) exit 9 ;; *) echo "unknown action $1" >&2; exit 2 ;; esac"#,
    );
    match p.rollback(&rollback_request()).unwrap() {
        RollbackReply::Unsupported { why } => {
            assert!(why.contains("exited with code 2 and no reply"), "{why}");
            assert!(why.contains("unknown action rollback"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Any other failure of `rollback` is still a crash, as is exit 2 after a reply.
    for body in [
        "echo 'disk full' >&2; exit 1",
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":false,"error":"busy"}'; exit 2"#,
    ] {
        let (_, p) = plugin(dir.path(), body);
        let err = p.rollback(&rollback_request()).unwrap_err();
        assert_eq!(err.reason(), "PluginCrashed", "{body}");
    }
    // And exit 2 on `stage` is a crash: every plugin must know `stage`.
    let (_, p) = plugin(dir.path(), "exit 2");
    assert_eq!(p.stage(&request()).unwrap_err().reason(), "PluginCrashed");
}

mod driver {
    //! The plugin as the agent's deployment backend: a rollback target asks for
    //! `rollback`, and falls back to `stage` when the plugin cannot.

    use std::error::Error as _;

    use osroll_api::ImageRef;

    use super::*;
    use crate::backends::driver::{BackendError, DeployBackend, Staging, Target};

    fn back_to_300() -> Target {
        Target {
            node: "node-1".into(),
            image: ImageRef {
                version: "24.09.300".into(),
                url: "https://images.example/os-24.09.300.img".into(),
                checksum: format!("sha256:{}", "ab".repeat(32)),
                size: None,
                reboot_required: None,
                chunk_index: None,
            },
            current_version: Some("24.09.400".into()),
            os_version_management: None,
            kernel_arguments: KernelArguments::default(),
            staged_reboot_required: None,
            rollback: true,
        }
    }

    const STAGED: &str =
        r#"echo '{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true}'"#;

    #[test]
    fn a_rollback_target_asks_for_rollback_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = plugin(
            dir.path(),
            &format!("[ \"$1\" = rollback ] || exit 9\n{STAGED}"),
        );
        match DeployBackend::stage(&p, &back_to_300()).unwrap() {
            Staging::Staged {
                reboot_required: true,
                message,
                ..
            } => assert!(
                message.starts_with("plugin rolled back to 24.09.300;"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            recorded_args(dir.path(), "os-plugin"),
            vec![vec!["rollback"]]
        );
        // Not a rollback: `stage`, as before.
        let mut t = back_to_300();
        t.rollback = false;
        let (_, p) = plugin(
            dir.path(),
            &format!("[ \"$1\" = stage ] || exit 9\n{STAGED}"),
        );
        DeployBackend::stage(&p, &t).unwrap();
    }

    #[test]
    fn a_plugin_that_cannot_roll_back_stages_the_version_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = plugin(
            dir.path(),
            &format!(
                r#"case "$1" in
  rollback) echo '{{"apiVersion":"osroll.io/plugin/v1","ok":false,"unsupported":true,"error":"nothing kept"}}' ;;
  stage) {STAGED} ;;
  *) exit 9 ;;
esac"#
            ),
        );
        match DeployBackend::stage(&p, &back_to_300()).unwrap() {
            Staging::Staged { message, .. } => assert!(
                message.starts_with(
                    "plugin cannot roll back (nothing kept), so it staged 24.09.300 instead;"
                ),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            recorded_args(dir.path(), "os-plugin"),
            vec![vec!["rollback"], vec!["stage"]]
        );
        let req = saved_request(dir.path());
        assert_eq!(req["action"], "stage");
        assert_eq!(req["targetVersion"], "24.09.300");
        assert_eq!(req["rollback"], true);
    }

    #[test]
    fn a_failing_fallback_is_its_own_error_keeping_the_stage_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = plugin(
            dir.path(),
            r#"case "$1" in
  stage) echo '{"apiVersion":"osroll.io/plugin/v1","ok":false,"error":"24.09.300 is not in the repository"}' ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac"#,
        );
        let err = DeployBackend::stage(&p, &back_to_300()).unwrap_err();
        assert_eq!(err.reason(), "PluginRefused", "the stage's reason");
        let BackendError::Plugin(PluginError::RollbackFallbackFailed { why, source, .. }) = &err
        else {
            panic!("{err:?}");
        };
        assert!(why.contains("exited with code 2"), "{why}");
        assert!(
            matches!(**source, PluginError::Refused { .. }),
            "{source:?}"
        );
        let chained = err.source().expect("the stage failure is the source");
        assert!(
            chained
                .to_string()
                .contains("24.09.300 is not in the repository"),
            "{chained}"
        );
    }
}
