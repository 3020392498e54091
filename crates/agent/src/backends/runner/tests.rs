use std::fs;

use super::*;
use crate::backends::testutil::{recorded_args, script};

const T: Duration = Duration::from_secs(20);

#[test]
fn passes_arguments_stdin_and_environment_and_captures_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(dir.path(), "tool", "echo \"out:$FOO\"; cat >&2; exit 0");
    let spec = CommandSpec::new(&exe, T)
        .args(["a b", "c"])
        .stdin("from stdin")
        .env("FOO", "bar");
    let out = ProcessRunner.run_checked(&spec).unwrap();
    assert_eq!(out.stdout_text(), "out:bar\n");
    assert_eq!(out.stderr, b"from stdin");
    assert_eq!(recorded_args(dir.path(), "tool"), vec![vec!["a b", "c"]]);
}

#[test]
fn failure_names_the_command_exit_code_and_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(
        dir.path(),
        "tool",
        "i=0; while [ $i -lt 50 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n\
         echo 'error: no space left' >&2; exit 3",
    );
    let spec = CommandSpec::new(&exe, T).arg("deploy");
    let err = ProcessRunner.run_checked(&spec).unwrap_err().to_string();
    assert!(err.contains("tool deploy` exited with code 3"), "{err}");
    assert!(err.ends_with("error: no space left"), "{err}");
    assert!(
        err.contains("noise 49") && !err.contains("noise 10\n"),
        "{err}"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    // The shell waits on a child `sleep` that holds stdout open: killing only the
    // shell would leave the reader blocked until the sleep ended.
    let exe = script(dir.path(), "slow", "echo started; sleep 600; echo never");
    let spec = CommandSpec::new(&exe, Duration::from_millis(300));
    let out = ProcessRunner.run(&spec).unwrap();
    assert_eq!(out.termination, Termination::TimedOut(spec.timeout));
    assert_eq!(out.stdout_text(), "started\n");
    assert!(out.elapsed < Duration::from_secs(60), "{:?}", out.elapsed);
    let err = out.check(&spec).unwrap_err().to_string();
    assert!(err.contains("timed out after 300ms"), "{err}");
}

#[test]
fn background_leftovers_holding_the_output_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let exe = script(
        dir.path(),
        "forks",
        &format!(
            "sleep 600 & echo $! > '{}'; echo parent done",
            pidfile.display()
        ),
    );
    let out = ProcessRunner
        .run_checked(&CommandSpec::new(&exe, T))
        .unwrap();
    assert_eq!(out.stdout_text(), "parent done\n");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    // The leftover was killed: gone, or a zombie nobody has reaped yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()));
        if matches!(state, None | Some(Some('Z'))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} still running: {state:?}"
        );
        thread::yield_now();
    }
}

#[test]
fn a_signal_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(dir.path(), "crash", "echo dying >&2; kill -9 $$");
    let spec = CommandSpec::new(&exe, T);
    let out = ProcessRunner.run(&spec).unwrap();
    assert_eq!(out.termination, Termination::Signalled(9));
    let err = out.check(&spec).unwrap_err().to_string();
    assert!(err.contains("was killed by signal 9: dying"), "{err}");
}

#[test]
fn a_missing_program_is_a_spawn_error_naming_it() {
    let spec = CommandSpec::new("/nonexistent/osroll-test-tool", T);
    let err = ProcessRunner.run(&spec).unwrap_err();
    assert!(matches!(err, CommandError::Spawn { .. }));
    assert!(
        err.to_string().contains("/nonexistent/osroll-test-tool"),
        "{err}"
    );
}

#[test]
fn merged_output_keeps_the_order_of_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(dir.path(), "mix", "echo one; echo two >&2; echo three");
    let out = ProcessRunner
        .run(&CommandSpec::new(&exe, T).merged_output())
        .unwrap();
    assert_eq!(out.stdout_text(), "one\ntwo\nthree\n");
    assert!(out.stderr.is_empty());
}

#[test]
fn output_beyond_the_cap_keeps_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(
        dir.path(),
        "loud",
        "head -c 3000000 /dev/zero | tr '\\0' x; echo END",
    );
    let out = ProcessRunner
        .run_checked(&CommandSpec::new(&exe, T))
        .unwrap();
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), MAX_CAPTURE);
    assert!(out.stdout.ends_with(b"xxxEND\n"));
}

#[test]
fn a_prefix_becomes_the_program() {
    let spec = CommandSpec::new("rpm-ostree", T)
        .arg("status")
        .with_prefix(&["nsenter".into(), "-t".into(), "1".into(), "-m".into()]);
    assert_eq!(spec.display(), "nsenter -t 1 -m rpm-ostree status");
}

#[test]
fn tails_cut_by_lines_and_bytes() {
    assert_eq!(tail_text(b"a\nb\nc\n", 2, 100), "…b\nc");
    assert_eq!(tail_text(b"a\nb\n", 5, 100), "a\nb");
    assert_eq!(tail_text(b"abcdef", 5, 3), "…def");
    assert_eq!(tail_text("ééé".as_bytes(), 5, 3), "…é");
}
