//! What a hook may be and what it is given: the agent runs hooks as its own user
//! (root on a node), so a hook file someone else can write is a way for them to run
//! code as root, and the agent's environment (service-account paths, proxy settings,
//! whatever the DaemonSet sets) is none of a hook's business.
//!
//! [`risk`] and [`hook_env`] decide; [`check`] only reads the file's metadata.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{HookContext, HookError, HookKind};

/// Variables a hook inherits from the agent, when the agent has them. Everything else
/// it gets is set by the agent: the `OSROLL_*` variables of [`super`].
pub const PASSED_ENV: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` for a hook when the agent has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a hook file (or its directory) is not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Risk {
    /// Others than its owner can write it (the mode, e.g. `0o666`).
    Writable(u32),
    /// Owned by neither root nor the agent's user (the owner's uid).
    Owner(u32),
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Risk::Writable(mode) => write!(
                f,
                "it is {}-writable (mode {:04o})",
                if mode & 0o002 != 0 { "world" } else { "group" },
                mode & 0o7777
            ),
            Risk::Owner(uid) => write!(
                f,
                "it is owned by uid {uid}, neither root nor the agent's user"
            ),
        }
    }
}

/// Whether a file of `mode` owned by `owner` may hold a hook the agent (running as
/// `agent_uid`) runs.
pub fn risk(mode: u32, owner: u32, agent_uid: u32) -> Option<Risk> {
    if mode & 0o022 != 0 {
        return Some(Risk::Writable(mode));
    }
    if owner != 0 && owner != agent_uid {
        return Some(Risk::Owner(owner));
    }
    None
}

/// Refuse the hook at `path` when it, or the directory it resolves into, is writable
/// by others or owned by someone else (symlinks, as in a ConfigMap volume, are followed).
pub fn check(path: &Path) -> Result<(), HookError> {
    let agent_uid = rustix::process::geteuid().as_raw();
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for target in [Some(real.as_path()), real.parent()].into_iter().flatten() {
        let Ok(meta) = std::fs::metadata(target) else {
            continue;
        };
        if let Some(why) = risk(meta.mode(), meta.uid(), agent_uid) {
            return Err(HookError::Unsafe {
                path: path.to_path_buf(),
                checked: target.to_path_buf(),
                why,
            });
        }
    }
    Ok(())
}

/// The whole environment of a hook: [`PASSED_ENV`] from the agent's `inherited`
/// variables (with a default `PATH`), then what the hook is told about the update.
pub fn hook_env(
    inherited: impl IntoIterator<Item = (String, String)>,
    kind: HookKind,
    ctx: &HookContext,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = inherited
        .into_iter()
        .filter(|(k, _)| PASSED_ENV.contains(&k.as_str()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let mut set = |k: &str, v: String| env.push((k.into(), v));
    set(
        "OSROLL_FROM_VERSION",
        ctx.from_version.clone().unwrap_or_default(),
    );
    set("OSROLL_TO_VERSION", ctx.to_version.clone());
    set("OSROLL_REBOOT", ctx.reboot.to_string());
    set("OSROLL_PHASE", kind.as_str().into());
    if let Some(node) = &ctx.node {
        set("OSROLL_NODE", node.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_no_one_else_can_write_owned_by_root_or_the_agent_pass() {
        assert_eq!(risk(0o100755, 0, 1000), None);
        assert_eq!(risk(0o100644, 1000, 1000), None);
        assert_eq!(risk(0o100555, 0, 0), None);
        assert_eq!(risk(0o100775, 0, 0), Some(Risk::Writable(0o100775)));
        assert_eq!(risk(0o100646, 0, 0), Some(Risk::Writable(0o100646)));
        assert_eq!(risk(0o100755, 1001, 1000), Some(Risk::Owner(1001)));
        let w = Risk::Writable(0o100666).to_string();
        assert!(w.contains("world-writable") && w.contains("0666"), "{w}");
        assert!(
            Risk::Writable(0o40775)
                .to_string()
                .contains("group-writable")
        );
    }

    #[test]
    fn a_hook_gets_the_allowed_variables_and_its_own_nothing_else() {
        let ctx = HookContext {
            from_version: Some("1.0".into()),
            to_version: "2.0".into(),
            reboot: true,
            node: Some("n1".into()),
        };
        let agent = [
            ("PATH", "/bin"),
            ("AWS_SECRET_ACCESS_KEY", "s3cret"),
            ("OSROLL_MOUNTINFO", "/proc/1/mountinfo"),
            ("TZ", "UTC"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = hook_env(agent, HookKind::PreInstall, &ctx);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "PATH",
                "TZ",
                "OSROLL_FROM_VERSION",
                "OSROLL_TO_VERSION",
                "OSROLL_REBOOT",
                "OSROLL_PHASE",
                "OSROLL_NODE"
            ]
        );
        let env = hook_env([], HookKind::PostInstall, &ctx);
        assert_eq!(env[0], ("PATH".into(), DEFAULT_PATH.into()));
    }
}
