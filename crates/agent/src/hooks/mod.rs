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
//! `/bin/sh`. A hook file (or the directory it resolves into) that others than its
//! owner can write, or that neither root nor the agent's user owns, is refused
//! ([`safety`]). A hook runs with a clean environment: `PATH`, `LANG`, `LC_ALL` and `TZ`
//! from the agent's, and `OSROLL_FROM_VERSION`, `OSROLL_TO_VERSION`,
//! `OSROLL_REBOOT` (`true`/`false`: whether a reboot follows the update),
//! `OSROLL_PHASE` (`pre-install`/`post-install`) and, when known, `OSROLL_NODE`. It runs
//! with a timeout; its stdout and stderr are captured together, the whole text for the
//! agent's log and the tail for the progress status. A non-zero exit, a signal or the
//! timeout fails the update with the hook's path and how it ended.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use osroll_api::progress::FailureReason;

pub mod safety;

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
    /// The hook, or its directory, could be changed by someone the agent does not trust.
    #[error("hook {} is not run: {} {why}", path.display(), checked.display())]
    Unsafe {
        /// The hook.
        path: PathBuf,
        /// The file or directory found unsafe (the hook's target when it is a symlink).
        checked: PathBuf,
        /// What is wrong with it.
        why: safety::Risk,
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
    pub fn reason(&self) -> FailureReason {
        match self {
            HookError::BadVersion(_) | HookError::Ambiguous { .. } => {
                FailureReason::HookMisconfigured
            }
            HookError::Unsafe { .. } => FailureReason::HookUnsafe,
            HookError::NotRunnable { .. } => FailureReason::HookNotRunnable,
            HookError::Failed { .. } | HookError::Killed { .. } => FailureReason::HookFailed,
            HookError::TimedOut { .. } => FailureReason::HookTimedOut,
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

/// What the executor needs of install hooks (tests give it their own).
pub trait InstallHooks: Send + Sync {
    /// Run the `kind` hook for `ctx.to_version`, if there is one. `Ok(None)`: no hook.
    fn run(&self, kind: HookKind, ctx: &HookContext) -> Result<Option<HookRun>, HookError>;
}

impl<R: CommandRunner> InstallHooks for Hooks<R> {
    fn run(&self, kind: HookKind, ctx: &HookContext) -> Result<Option<HookRun>, HookError> {
        Hooks::run(self, kind, ctx)
    }
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
        safety::check(&path)?;
        let out = self
            .runner
            .run(&self.command(&path, kind, ctx))
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

    /// The command running the hook at `path` (through `/bin/sh` when it is not
    /// executable), with a clean environment telling it about the attempt.
    fn command(&self, path: &Path, kind: HookKind, ctx: &HookContext) -> CommandSpec {
        let executable = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        let spec = if executable {
            CommandSpec::new(path, self.timeout)
        } else {
            CommandSpec::new("/bin/sh", self.timeout).arg(path.to_string_lossy())
        };
        let env = safety::hook_env(std::env::vars(), kind, ctx);
        env.into_iter()
            .fold(spec.merged_output().clean_env(), |s, (k, v)| s.env(k, v))
    }
}

#[cfg(test)]
mod tests;
