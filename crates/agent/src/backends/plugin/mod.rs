//! The OS plugin backend: for hosts whose OS version is whatever an external program
//! understands (a package set, an image, a vendor's patch tool).
//!
//! The agent runs the configured executable once per step with the action as its only
//! argument and one JSON request on stdin, and reads one JSON reply from stdout. The
//! protocol is versioned (`apiVersion: osroll.io/plugin/v1`) and replies are checked
//! strictly: a plugin that crashes, times out, prints something that is not exactly one
//! reply object, or leaves out a field its action requires fails the step with a message
//! naming the plugin and the problem. See `docs/plugin-protocol.md`.
//!
//! A fleet rollback asks for `rollback` in place of `stage`: the plugin returns to the
//! version it ran before from what it kept, or answers `unsupported` (as does a plugin
//! older than the action that exits 2 without a reply); the caller then stages that
//! version as any other ([`RollbackReply`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use osroll_api::ImageRef;
use osroll_api::progress::FailureReason;
use osroll_api::upgrade::KernelArguments;
use serde::{Deserialize, Serialize};

use super::runner::{
    CommandError, CommandOutput, CommandRunner, CommandSpec, TAIL_BYTES, TAIL_LINES, Termination,
    tail_text,
};

/// The protocol version this agent speaks, in requests and required in replies.
pub const API_VERSION: &str = "osroll.io/plugin/v1";

/// What the agent asks the plugin to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginAction {
    /// Prepare the target without disturbing the running system; say whether applying
    /// it will need a reboot.
    Stage,
    /// Switch to the staged target (the node is drained if a reboot was announced).
    Apply,
    /// Report what version is running now.
    Verify,
    /// A fleet rollback, in place of `stage`: prepare the return to the version the node
    /// ran before (the target) from what the plugin kept, or say it cannot.
    Rollback,
}

impl PluginAction {
    /// `stage`, `apply`, `verify` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginAction::Stage => "stage",
            PluginAction::Apply => "apply",
            PluginAction::Verify => "verify",
            PluginAction::Rollback => "rollback",
        }
    }
}

/// The JSON object written to the plugin's stdin.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRequest {
    /// Always [`API_VERSION`].
    pub api_version: &'static str,
    /// The step.
    pub action: PluginAction,
    /// Name of the node the agent runs on.
    pub node: String,
    /// The version to reach.
    pub target_version: String,
    /// The version the agent last saw running, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// `spec.osVersionManagement` of the progress, unchanged (`{}` when unset).
    pub os_version_management: serde_json::Value,
    /// The catalog image for the target, when the progress has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// `spec.kernelArguments` (`add`, `remove`), when it asks for a change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_arguments: Option<KernelArguments>,
    /// `true` in every request of a fleet rollback (`rollback`, or the `stage` in its
    /// place, then `apply` and `verify`): the target is the version the node ran before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

impl PluginRequest {
    /// A request for `action` on `node` towards `target_version`.
    pub fn new(action: PluginAction, node: &str, target_version: &str) -> Self {
        PluginRequest {
            api_version: API_VERSION,
            action,
            node: node.to_string(),
            target_version: target_version.to_string(),
            current_version: None,
            os_version_management: serde_json::Value::Object(Default::default()),
            image: None,
            kernel_arguments: None,
            rollback: false,
        }
    }

    /// Mark the request as part of a fleet rollback.
    pub fn with_rollback(mut self, rollback: bool) -> Self {
        self.rollback = rollback;
        self
    }

    /// Hand over `spec.kernelArguments` (left out when it changes nothing).
    pub fn with_kernel_arguments(mut self, k: &KernelArguments) -> Self {
        self.kernel_arguments =
            Some(k.clone()).filter(|k| !(k.add.is_empty() && k.remove.is_empty()));
        self
    }

    /// Hand over `spec.osVersionManagement`.
    pub fn with_os_version_management(mut self, v: Option<&serde_json::Value>) -> Self {
        self.os_version_management = v
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        self
    }

    /// Tell the plugin what runs now.
    pub fn with_current_version(mut self, v: Option<&str>) -> Self {
        self.current_version = v.map(str::to_string);
        self
    }

    /// Hand over the catalog image.
    pub fn with_image(mut self, image: Option<&ImageRef>) -> Self {
        self.image = image.cloned();
        self
    }
}

/// A reply exactly as the protocol allows it; anything else is a protocol error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawReply {
    api_version: String,
    ok: bool,
    #[serde(default)]
    reboot_required: Option<bool>,
    #[serde(default)]
    current_version: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    stale_paths: Vec<String>,
    #[serde(default)]
    unsupported: bool,
}

/// The plugin's answer to `stage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageReply {
    /// Applying the staged target needs a reboot (false: it can be applied live,
    /// without draining).
    pub reboot_required: bool,
    /// What runs now, if the plugin said.
    pub current_version: Option<String>,
    /// Free text for the progress message.
    pub message: Option<String>,
}

/// The plugin's answer to `rollback`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackReply {
    /// The return to the target is prepared, as `stage` would have it.
    Staged(StageReply),
    /// The plugin cannot roll back (`"unsupported": true`, or a plugin that exits 2
    /// without a reply, as one that does not know the action does).
    Unsupported {
        /// Its `error`, or how the agent read the exit.
        why: String,
    },
}

/// What a plugin call answered, before its action's fields are checked.
enum Answer {
    /// `ok: true`.
    Done(RawReply),
    /// A valid reply saying the action is unsupported, or the legacy exit 2.
    Unsupported(String),
}

/// The plugin's answer to `apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReply {
    /// A reboot is needed to finish (the agent reboots, then verifies).
    pub reboot_required: bool,
    /// What runs now (the target, for a live update).
    pub current_version: String,
    /// Free text for the progress message.
    pub message: Option<String>,
    /// Directories of the previous OS version: after a live update, pods with a mount
    /// into one of them are restarted.
    pub stale_paths: Vec<String>,
}

/// The plugin's answer to `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReply {
    /// What runs now.
    pub current_version: String,
    /// Free text for the progress message.
    pub message: Option<String>,
}

/// A plugin call that did not produce a valid successful reply.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin could not be started.
    #[error("plugin {path}: cannot run it: {source}")]
    NotRunnable {
        /// The plugin.
        path: PathBuf,
        /// Why.
        source: CommandError,
    },
    /// Non-zero exit, killed by a signal, or timed out.
    #[error("plugin {path} {action}: {detail}")]
    Crashed {
        /// The plugin.
        path: PathBuf,
        /// The action.
        action: &'static str,
        /// How it ended, with the tail of its stderr.
        detail: String,
    },
    /// It exited 0 but its stdout is not a valid reply.
    #[error("plugin {path} {action}: invalid reply: {source}")]
    Protocol {
        /// The plugin.
        path: PathBuf,
        /// The action.
        action: &'static str,
        /// What is wrong with the reply.
        source: ReplyError,
    },
    /// A valid reply with `ok: false`.
    #[error("plugin {path} {action} failed: {error}")]
    Refused {
        /// The plugin.
        path: PathBuf,
        /// The action.
        action: &'static str,
        /// The plugin's `error`.
        error: String,
    },
    /// The plugin could not roll back, and staging the previous version instead failed.
    #[error(
        "plugin {path} cannot roll back ({why}), and staging the version instead failed: {source}"
    )]
    RollbackFallbackFailed {
        /// The plugin.
        path: PathBuf,
        /// Why it could not roll back.
        why: String,
        /// How the `stage` of the previous version failed.
        source: Box<PluginError>,
    },
}

impl PluginError {
    /// Machine-readable cause for `status.failureReason`.
    pub fn reason(&self) -> FailureReason {
        match self {
            PluginError::NotRunnable { .. } => FailureReason::PluginNotRunnable,
            PluginError::Crashed { .. } => FailureReason::PluginCrashed,
            PluginError::Protocol { .. } => FailureReason::PluginProtocolError,
            PluginError::Refused { .. } => FailureReason::PluginRefused,
            PluginError::RollbackFallbackFailed { source, .. } => source.reason(),
        }
    }
}

/// Default time a plugin may take for one action.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A configured plugin executable.
pub struct Plugin<R> {
    path: PathBuf,
    timeout: Duration,
    runner: R,
}

impl<R: CommandRunner> Plugin<R> {
    /// The plugin at `path`, each action limited to `timeout`.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration, runner: R) -> Self {
        Plugin {
            path: path.into(),
            timeout,
            runner,
        }
    }

    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `stage`: prepare the target.
    pub fn stage(&self, req: &PluginRequest) -> Result<StageReply, PluginError> {
        let r = self.call(PluginAction::Stage, req)?;
        Ok(StageReply {
            reboot_required: self.need(PluginAction::Stage, "rebootRequired", r.reboot_required)?,
            current_version: r.current_version,
            message: r.message,
        })
    }

    /// `apply`: switch to the target.
    pub fn apply(&self, req: &PluginRequest) -> Result<ApplyReply, PluginError> {
        let r = self.call(PluginAction::Apply, req)?;
        Ok(ApplyReply {
            reboot_required: self.need(PluginAction::Apply, "rebootRequired", r.reboot_required)?,
            current_version: self.need(PluginAction::Apply, "currentVersion", r.current_version)?,
            message: r.message,
            stale_paths: r.stale_paths,
        })
    }

    /// `verify`: what runs now.
    pub fn verify(&self, req: &PluginRequest) -> Result<VerifyReply, PluginError> {
        let r = self.call(PluginAction::Verify, req)?;
        Ok(VerifyReply {
            current_version: self.need(
                PluginAction::Verify,
                "currentVersion",
                r.current_version,
            )?,
            message: r.message,
        })
    }

    /// `rollback`: prepare the return to the previous version (the request's target).
    pub fn rollback(&self, req: &PluginRequest) -> Result<RollbackReply, PluginError> {
        let action = PluginAction::Rollback;
        let r = match self.answer(action, req)? {
            Answer::Done(r) => r,
            Answer::Unsupported(why) => return Ok(RollbackReply::Unsupported { why }),
        };
        Ok(RollbackReply::Staged(StageReply {
            reboot_required: self.need(action, "rebootRequired", r.reboot_required)?,
            current_version: r.current_version,
            message: r.message,
        }))
    }

    fn need<T>(&self, action: PluginAction, field: &str, v: Option<T>) -> Result<T, PluginError> {
        v.ok_or_else(|| PluginError::Protocol {
            path: self.path.clone(),
            action: action.as_str(),
            source: ReplyError::Missing {
                field: field.to_string(),
                action: action.as_str(),
            },
        })
    }

    /// Run the plugin for `action`, an action every plugin must support.
    fn call(&self, action: PluginAction, req: &PluginRequest) -> Result<RawReply, PluginError> {
        match self.answer(action, req)? {
            Answer::Done(r) => Ok(r),
            Answer::Unsupported(_) => Err(PluginError::Protocol {
                path: self.path.clone(),
                action: action.as_str(),
                source: ReplyError::UnsupportedAction(action.as_str()),
            }),
        }
    }

    /// Run the plugin for `action` (which overrides `req.action`) and check the reply's
    /// envelope.
    fn answer(&self, action: PluginAction, req: &PluginRequest) -> Result<Answer, PluginError> {
        let req = PluginRequest {
            action,
            ..req.clone()
        };
        let body = serde_json::to_vec(&req).expect("a request always serializes");
        let spec = CommandSpec::new(&self.path, self.timeout)
            .arg(action.as_str())
            .env("OSROLL_PLUGIN_API", API_VERSION)
            .stdin(body);
        let out = self
            .runner
            .run(&spec)
            .map_err(|source| PluginError::NotRunnable {
                path: self.path.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            tracing::info!(plugin = %self.path.display(), action = action.as_str(), "plugin log:\n{}", stderr.trim_end());
        }
        if !out.success() {
            if let Some(why) = legacy_unsupported(action, &out) {
                return Ok(Answer::Unsupported(why));
            }
            let tail = tail_text(&out.stderr, TAIL_LINES, TAIL_BYTES);
            let mut detail = if tail.is_empty() {
                out.termination.to_string()
            } else {
                format!("{}: {tail}", out.termination)
            };
            if let Some(e) = parse_reply(&out.stdout).ok().and_then(|r| r.error) {
                detail.push_str(&format!(" (its reply said: {e})"));
            }
            return Err(PluginError::Crashed {
                path: self.path.clone(),
                action: action.as_str(),
                detail,
            });
        }
        let protocol = |source: ReplyError| PluginError::Protocol {
            path: self.path.clone(),
            action: action.as_str(),
            source,
        };
        let reply = parse_reply(&out.stdout).map_err(protocol)?;
        if reply.unsupported {
            return Ok(Answer::Unsupported(reply.error.unwrap_or_default()));
        }
        if !reply.ok {
            return Err(PluginError::Refused {
                path: self.path.clone(),
                action: action.as_str(),
                error: reply.error.unwrap_or_default(),
            });
        }
        Ok(Answer::Done(reply))
    }
}

/// A `rollback` that exited 2 without printing a reply: a plugin written before the
/// action, rejecting an unknown one as the protocol's example plugin does; the reason
/// to record. Any other failed exit stays a crash.
fn legacy_unsupported(action: PluginAction, out: &CommandOutput) -> Option<String> {
    let unknown = action == PluginAction::Rollback
        && out.termination == Termination::Exited(2)
        && out.stdout.iter().all(u8::is_ascii_whitespace);
    unknown.then(|| {
        let mut why =
            "exited with code 2 and no reply, as a plugin that does not know `rollback` does"
                .to_string();
        let tail = tail_text(&out.stderr, TAIL_LINES, TAIL_BYTES);
        if !tail.is_empty() {
            why.push_str(&format!(" ({tail})"));
        }
        why
    })
}

/// Why a plugin's stdout is not a valid reply.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Not text.
    #[error("stdout is not UTF-8 ({0})")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// Nothing at all.
    #[error("the plugin printed nothing on stdout")]
    Empty,
    /// Not JSON, or more than one value.
    #[error("stdout is not one JSON value ({source}): {excerpt:?}")]
    NotJson {
        /// The parser's complaint.
        source: serde_json::Error,
        /// The start of what it printed.
        excerpt: String,
    },
    /// JSON, but not an object.
    #[error("expected a JSON object, got {0:?}")]
    NotObject(String),
    /// An object without the reply's fields and types.
    #[error(transparent)]
    Shape(serde_json::Error),
    /// Another protocol version.
    #[error("apiVersion {0:?} is not {API_VERSION:?}")]
    ApiVersion(String),
    /// A string field that is empty.
    #[error("`{0}` is empty")]
    EmptyField(&'static str),
    /// A stale path that is not absolute.
    #[error("`stalePaths` entry {0:?} is not an absolute path")]
    RelativeStalePath(String),
    /// `unsupported: true` with `ok: true`.
    #[error("`unsupported` is true although `ok` is true")]
    UnsupportedWithOk,
    /// `unsupported: true` in the reply to an action every plugin must support.
    #[error("`unsupported` is only a reply to `rollback`; every plugin must support `{0}`")]
    UnsupportedAction(&'static str),
    /// `ok: true` with an `error`.
    #[error("`error` is set although `ok` is true")]
    ErrorWithOk,
    /// `ok: false` without an `error`.
    #[error("`ok` is false but `error` says nothing")]
    SilentError,
    /// A field the action's successful reply needs.
    #[error("`{field}` is required in a successful {action} reply")]
    Missing {
        /// The field.
        field: String,
        /// The action.
        action: &'static str,
    },
}

/// The first 120 characters of `text`, trimmed.
fn excerpt(text: &str) -> String {
    let t = text.trim();
    let cut: String = t.chars().take(120).collect();
    if cut.len() < t.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// Check stdout is exactly one reply object of this protocol version, with a consistent
/// `ok`/`error` pair and no empty strings.
fn parse_reply(stdout: &[u8]) -> Result<RawReply, ReplyError> {
    let text = std::str::from_utf8(stdout).map_err(ReplyError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(ReplyError::Empty);
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|source| ReplyError::NotJson {
            source,
            excerpt: excerpt(text),
        })?;
    if !value.is_object() {
        return Err(ReplyError::NotObject(excerpt(text)));
    }
    let reply: RawReply = serde_json::from_value(value).map_err(ReplyError::Shape)?;
    if reply.api_version != API_VERSION {
        return Err(ReplyError::ApiVersion(reply.api_version));
    }
    for (field, v) in [
        ("currentVersion", &reply.current_version),
        ("error", &reply.error),
    ] {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(ReplyError::EmptyField(field));
        }
    }
    if let Some(p) = reply.stale_paths.iter().find(|p| !p.starts_with('/')) {
        return Err(ReplyError::RelativeStalePath(p.clone()));
    }
    match (reply.ok, &reply.error) {
        (true, _) if reply.unsupported => Err(ReplyError::UnsupportedWithOk),
        (true, Some(_)) => Err(ReplyError::ErrorWithOk),
        (false, None) => Err(ReplyError::SilentError),
        _ => Ok(reply),
    }
}

#[cfg(test)]
mod tests;
