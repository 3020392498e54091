//! Install hooks: site scripts run just before and just after a node's OS update, for
//! the chores an image cannot carry (saving state, restarting a host service, telling
//! some other system).
//!
//! Hooks live in one directory, usually a ConfigMap mounted into the agent, in either
//! of two layouts (a ConfigMap key cannot contain `/`, so it needs the flat one):
//!
//! ```text
//! nested                          flat (one directory)
//! <dir>/<version>/pre-install     <dir>/<version>__pre-install
//! <dir>/<version>/post-install    <dir>/<version>__post-install
//! <dir>/default/pre-install       <dir>/default__pre-install
//! <dir>/default/post-install      <dir>/default__post-install
//! ```
//!
//! The hook for the version being installed wins over `default`; having both layouts
//! for the same name is an error, not a guess. A hook without the execute bit (a
//! ConfigMap volume's files are 0644 unless `defaultMode` says otherwise) is run with
//! `/bin/sh`. Each hook gets `OSROLL_FROM_VERSION`, `OSROLL_TO_VERSION`,
//! `OSROLL_REBOOT` (`true`/`false`: whether a reboot follows the update),
//! `OSROLL_PHASE` (`pre-install`/`post-install`) and, when known, `OSROLL_NODE`. It runs
//! with a timeout; its stdout and stderr are captured together, the whole text for the
//! agent's log and the tail for the progress status. A non-zero exit, a signal or the
//! timeout fails the update with the hook's path and how it ended.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backends::runner::{
    CommandError, CommandRunner, CommandSpec, TAIL_BYTES, TAIL_LINES, Termination, tail_text,
};

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// Before the new OS is staged or applied.
    PreInstall,
    /// After it is applied (after the reboot, when one follows).
    PostInstall,
}

impl HookKind {
    /// The hook's file name: `pre-install` or `post-install`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreInstall => "pre-install",
            HookKind::PostInstall => "post-install",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The directory name hooks fall back to.
pub const DEFAULT_DIR: &str = "default";

/// What a hook is told about the update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookContext {
    /// Version running before the update, if known.
    pub from_version: Option<String>,
    /// Version being installed; also selects the per-version hooks.
    pub to_version: String,
    /// Whether a reboot follows (false for a live update).
    pub reboot: bool,
    /// The node's name.
    pub node: Option<String>,
}

/// A hook that ran and exited 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// The hook file.
    pub path: PathBuf,
    /// stdout and stderr as printed, at most [`crate::backends::runner::MAX_CAPTURE`]
    /// bytes (the end).
    pub output: String,
    /// Whether the start of the output was dropped.
    pub truncated: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

impl HookRun {
    /// The last lines of output, for the progress status.
    pub fn tail(&self) -> String {
        tail_text(self.output.as_bytes(), TAIL_LINES, TAIL_BYTES)
    }
}

/// A hook that could not be found unambiguously, could not run, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The version cannot name a hook (it would leave the hooks directory).
    #[error("version {0:?} cannot select a hook: it must not contain '/' or start with '.'")]
    BadVersion(String),
    /// The same hook exists in both layouts.
    #[error("both {} and {} exist; keep one", first.display(), second.display())]
    Ambiguous {
        /// The nested-layout file.
        first: PathBuf,
        /// The flat-layout file.
        second: PathBuf,
    },
    /// The hook could not be started.
    #[error("hook {}: cannot run it: {source}", path.display())]
    NotRunnable {
        /// The hook.
        path: PathBuf,
        /// Why.
        source: CommandError,
    },
    /// It exited with a non-zero code.
    #[error("hook {} exited with code {code}{}", path.display(), colon(tail))]
    Failed {
        /// The hook.
        path: PathBuf,
        /// Its exit code.
        code: i32,
        /// The end of its output.
        tail: String,
        /// Its whole output, for the log.
        output: String,
    },
    /// A signal killed it.
    #[error("hook {} was killed by signal {signal}{}", path.display(), colon(tail))]
    Killed {
        /// The hook.
        path: PathBuf,
        /// The signal.
        signal: i32,
        /// The end of its output.
        tail: String,
        /// Its whole output, for the log.
        output: String,
    },
    /// It ran past the timeout and was killed.
    #[error("hook {} timed out after {}{}", path.display(), crate::backends::runner::human_duration(*timeout), colon(tail))]
    TimedOut {
        /// The hook.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
        /// The end of its output.
        tail: String,
        /// Its whole output, for the log.
        output: String,
    },
}

fn colon(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

impl HookError {
    /// Machine-readable cause for `status.failureReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            HookError::BadVersion(_) | HookError::Ambiguous { .. } => "HookMisconfigured",
            HookError::NotRunnable { .. } => "HookNotRunnable",
            HookError::Failed { .. } | HookError::Killed { .. } => "HookFailed",
            HookError::TimedOut { .. } => "HookTimedOut",
        }
    }

    /// The hook's whole output, when it ran.
    pub fn output(&self) -> Option<&str> {
        match self {
            HookError::Failed { output, .. }
            | HookError::Killed { output, .. }
            | HookError::TimedOut { output, .. } => Some(output),
            _ => None,
        }
    }
}

/// The hook of `kind` for `version` in `dir`: the version's own, else the default one,
/// else `None`.
pub fn resolve_hook(
    dir: &Path,
    version: &str,
    kind: HookKind,
) -> Result<Option<PathBuf>, HookError> {
    if version.is_empty() || version.contains('/') || version.starts_with('.') {
        return Err(HookError::BadVersion(version.to_string()));
    }
    for name in [version, DEFAULT_DIR] {
        let nested = dir.join(name).join(kind.as_str());
        let flat = dir.join(format!("{name}__{}", kind.as_str()));
        match (nested.is_file(), flat.is_file()) {
            (true, true) => {
                return Err(HookError::Ambiguous {
                    first: nested,
                    second: flat,
                });
            }
            (true, false) => return Ok(Some(nested)),
            (false, true) => return Ok(Some(flat)),
            (false, false) => {}
        }
    }
    Ok(None)
}

/// Finds and runs install hooks.
pub struct Hooks<R> {
    dir: PathBuf,
    timeout: Duration,
    runner: R,
}

impl<R: CommandRunner> Hooks<R> {
    /// Hooks from `dir`, each limited to `timeout`.
    pub fn new(dir: impl Into<PathBuf>, timeout: Duration, runner: R) -> Self {
        Hooks {
            dir: dir.into(),
            timeout,
            runner,
        }
    }

    /// Run the `kind` hook for `ctx.to_version`, if there is one. `Ok(None)`: no hook.
    pub fn run(&self, kind: HookKind, ctx: &HookContext) -> Result<Option<HookRun>, HookError> {
        let Some(path) = resolve_hook(&self.dir, &ctx.to_version, kind)? else {
            return Ok(None);
        };
        let executable = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        let mut spec = if executable {
            CommandSpec::new(&path, self.timeout)
        } else {
            CommandSpec::new("/bin/sh", self.timeout).arg(path.to_string_lossy())
        };
        spec = spec
            .merged_output()
            .env(
                "OSROLL_FROM_VERSION",
                ctx.from_version.clone().unwrap_or_default(),
            )
            .env("OSROLL_TO_VERSION", &ctx.to_version)
            .env("OSROLL_REBOOT", ctx.reboot.to_string())
            .env("OSROLL_PHASE", kind.as_str());
        if let Some(node) = &ctx.node {
            spec = spec.env("OSROLL_NODE", node);
        }
        let out = self
            .runner
            .run(&spec)
            .map_err(|source| HookError::NotRunnable {
                path: path.clone(),
                source,
            })?;
        let output = String::from_utf8_lossy(&out.stdout).into_owned();
        tracing::info!(
            hook = %path.display(),
            result = %out.termination,
            "install hook output:\n{}",
            output.trim_end()
        );
        let tail = tail_text(&out.stdout, TAIL_LINES, TAIL_BYTES);
        match out.termination {
            Termination::Exited(0) => Ok(Some(HookRun {
                path,
                output,
                truncated: out.truncated,
                elapsed: out.elapsed,
            })),
            Termination::Exited(code) => Err(HookError::Failed {
                path,
                code,
                tail,
                output,
            }),
            Termination::Signalled(signal) => Err(HookError::Killed {
                path,
                signal,
                tail,
                output,
            }),
            Termination::TimedOut(timeout) => Err(HookError::TimedOut {
                path,
                timeout,
                tail,
                output,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

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

    fn hook(dir: &Path, rel: &str, body: &str) -> PathBuf {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
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
        fs::create_dir(&data).unwrap();
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
}
