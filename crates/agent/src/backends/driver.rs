//! The agent's choice of backend, and one interface over the deployment backends so the
//! executor drives OSTree and an OS plugin the same way: stage, apply (live or by
//! reboot), confirm after the boot.
//!
//! The executor sees a deployment tool through [`super::deployment::DeploymentBackend`];
//! the A/B image backend ([`super::ab`]) needs no tool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use osroll_api::ImageRef;
use osroll_api::upgrade::KernelArguments;

use osroll_api::progress::FailureReason;

use super::ostree::live::{self, LivePlan};
use super::ostree::{
    BootCheck, OstreeBackend, OstreeConfig, OstreeError, OstreeTarget, StageOutcome,
};
use super::plugin::{Plugin, PluginError, PluginRequest, RollbackReply, StageReply};
use super::runner::{CommandRunner, ProcessRunner};
use crate::mounts::decide::StaleRef;

/// How this node is updated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendConfig {
    /// Write the image into the inactive A/B slot and switch with a one-shot boot.
    #[default]
    AbImage,
    /// Stage an OSTree deployment with the host's tool.
    Ostree(OstreeConfig),
    /// Ask an OS plugin executable.
    Plugin {
        /// The executable.
        path: PathBuf,
        /// Limit for one action.
        timeout: Duration,
    },
}

impl BackendConfig {
    /// The deployment backend for this configuration; `None` for A/B images.
    pub fn build(&self) -> Option<Arc<dyn DeployBackend>> {
        match self {
            BackendConfig::AbImage => None,
            BackendConfig::Ostree(c) => {
                Some(Arc::new(OstreeBackend::new(c.clone(), ProcessRunner)))
            }
            BackendConfig::Plugin { path, timeout } => {
                Some(Arc::new(Plugin::new(path, *timeout, ProcessRunner)))
            }
        }
    }
}

/// What the node should reach, as the backend is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// This node.
    pub node: String,
    /// The catalog image (its version is the target).
    pub image: ImageRef,
    /// What ran when the attempt started, if known.
    pub current_version: Option<String>,
    /// `spec.osVersionManagement`, unchanged.
    pub os_version_management: Option<serde_json::Value>,
    /// Kernel arguments to add and remove with the update.
    pub kernel_arguments: KernelArguments,
    /// What staging reported (`status.rebootRequired`), once it has: the controller
    /// approved a live update without drain only when this is `Some(false)`.
    pub staged_reboot_required: Option<bool>,
    /// A fleet rollback: `image` is the version the node ran before; return to it with
    /// the tool's own rollback where the tool still has it.
    pub rollback: bool,
}

/// A backend call that failed; its message names the command or plugin.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The OSTree backend.
    #[error(transparent)]
    Ostree(#[from] OstreeError),
    /// The OS plugin.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl BackendError {
    /// Machine-readable cause for `status.failureReason`.
    pub fn reason(&self) -> FailureReason {
        match self {
            BackendError::Ostree(e) => e.reason(),
            BackendError::Plugin(e) => e.reason(),
        }
    }
}

/// The outcome of staging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staging {
    /// The node already runs the target.
    AlreadyCurrent {
        /// For the progress message.
        message: String,
    },
    /// The target is ready to apply.
    Staged {
        /// Applying needs a reboot (false: live update, no drain).
        reboot_required: bool,
        /// What runs now, when the backend said.
        current_version: Option<String>,
        /// For the progress message.
        message: String,
    },
}

/// The outcome of applying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// A reboot finishes the update (the agent reboots, then confirms).
    pub reboot_required: bool,
    /// What runs now, when the backend says.
    pub current_version: Option<String>,
    /// For the progress message.
    pub message: String,
    /// How mounts into the previous version look (for restarting pods after a live update).
    pub stale: Vec<StaleRef>,
}

/// What the node runs after the reboot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The target: Completed.
    OnTarget {
        /// The version it reports.
        version: Option<String>,
        /// For the progress message.
        message: String,
    },
    /// Something else: RolledBack.
    Elsewhere {
        /// What it runs instead, and why that is not the target.
        message: String,
    },
}

/// A way of moving a node to a new OS version other than an A/B slot. Calls block
/// (they run host commands); the executor runs them off the async runtime.
pub trait DeployBackend: Send + Sync {
    /// `ostree` or `plugin`, for messages.
    fn kind(&self) -> &'static str;
    /// The running version when it can be read without a target (for the Node label).
    fn running_version(&self) -> Result<Option<String>, BackendError>;
    /// Prepare `target` without disturbing the running system.
    fn stage(&self, target: &Target) -> Result<Staging, BackendError>;
    /// Switch to the staged target, or say a reboot will.
    fn apply(&self, target: &Target) -> Result<Applied, BackendError>;
    /// After the reboot: is the node on `target`?
    fn confirm(&self, target: &Target) -> Result<Confirmed, BackendError>;
    /// What staging or applying `target` fetches from, for the image source policy
    /// (from the target alone: no host call).
    fn sources(&self, target: &Target) -> Result<Vec<Source>, BackendError>;
}

/// Something a deployment tool fetches from, and the progress field it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `spec.image.url`, `spec.osVersionManagement.ostree.reference`, ...
    pub field: String,
    /// Its value.
    pub value: String,
    /// An image URL proper (held to the image URL rule), not a tool's reference (held
    /// to it only where it names a URL).
    pub url: bool,
}

impl Source {
    fn new(field: impl Into<String>, value: &str, url: bool) -> Self {
        Source {
            field: field.into(),
            value: value.to_string(),
            url,
        }
    }
}

/// Every string in a plugin payload, named by its path under `at`.
fn payload_strings(v: &serde_json::Value, at: String, out: &mut Vec<Source>) {
    match v {
        serde_json::Value::String(s) => out.push(Source::new(at, s, false)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                payload_strings(item, format!("{at}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                payload_strings(item, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// What the OSTree tool is asked to deploy for `t`.
fn ostree_target(t: &Target) -> Result<OstreeTarget, OstreeError> {
    Ok(
        OstreeTarget::from_progress(&t.image, t.os_version_management.as_ref())?
            .with_kernel_arguments(&t.kernel_arguments)
            .with_live(live::requested(&t.image, t.os_version_management.as_ref())?)
            .with_rollback(t.rollback),
    )
}

impl<R: CommandRunner> DeployBackend for OstreeBackend<R> {
    fn kind(&self) -> &'static str {
        "ostree"
    }

    fn sources(&self, target: &Target) -> Result<Vec<Source>, BackendError> {
        let t = ostree_target(target)?;
        let field = if t.reference == target.image.url {
            "spec.image.url"
        } else {
            "spec.osVersionManagement.ostree.reference"
        };
        Ok(vec![Source::new(field, &t.reference, false)])
    }

    fn running_version(&self) -> Result<Option<String>, BackendError> {
        let st = self.status()?;
        Ok(st.running().and_then(|b| b.version.clone()))
    }

    fn stage(&self, target: &Target) -> Result<Staging, BackendError> {
        let t = ostree_target(target)?;
        let tool = self.config().tool;
        let (d, verb) = match OstreeBackend::stage(self, &t)? {
            StageOutcome::AlreadyBooted(d) => {
                return Ok(Staging::AlreadyCurrent {
                    message: format!("node already runs deployment {}", d.describe()),
                });
            }
            StageOutcome::AlreadyStaged(d) => (d, "was already staged".to_string()),
            StageOutcome::Staged(d) if t.rollback => (
                d,
                format!(
                    "staged with {tool} like an update: no deployment kept on the node \
                     that the tool's rollback can return to is the target"
                ),
            ),
            StageOutcome::Staged(d) => (d, format!("staged with {tool}")),
            StageOutcome::Restored(d) => (
                d,
                format!(
                    "restored by {} from the deployment kept on the node, nothing fetched",
                    super::ostree::rollback::how(tool)
                ),
            ),
        };
        let plan = live::plan(tool, &t);
        let verdict = match plan {
            LivePlan::AskTool => Some(self.package_verdict()?),
            _ => None,
        };
        let (reboot_required, then) = live::after_staging(tool, &t, &plan, verdict.as_ref());
        Ok(Staging::Staged {
            reboot_required,
            current_version: None,
            message: format!("deployment {} {verb}; {then}", d.describe()),
        })
    }

    fn apply(&self, target: &Target) -> Result<Applied, BackendError> {
        let t = ostree_target(target)?;
        let allow_replacement = match live::plan(self.config().tool, &t) {
            LivePlan::Live { allow_replacement } => allow_replacement,
            // Live only when staging said so: the controller then approved it without
            // drain, and rpm-ostree itself refuses anything but added packages.
            LivePlan::AskTool if target.staged_reboot_required == Some(false) => false,
            LivePlan::AskTool | LivePlan::Reboot(_) => {
                // A staged OSTree deployment is switched to by the next boot.
                return Ok(Applied {
                    reboot_required: true,
                    current_version: None,
                    message: "the staged deployment is booted by the reboot".into(),
                    stale: vec![],
                });
            }
        };
        let a = self.apply_live(&t, allow_replacement)?;
        Ok(Applied {
            reboot_required: false,
            current_version: a
                .running
                .version
                .clone()
                .or_else(|| Some(target.image.version.clone())),
            message: format!(
                "switched live from deployment {} to {}",
                a.previous.describe(),
                a.running.describe()
            ),
            stale: live::stale_refs(&a.previous),
        })
    }

    fn confirm(&self, target: &Target) -> Result<Confirmed, BackendError> {
        let t = ostree_target(target)?;
        Ok(match OstreeBackend::confirm(self, &t)? {
            BootCheck::OnTarget(d) => Confirmed::OnTarget {
                version: d
                    .version
                    .clone()
                    .or_else(|| Some(target.image.version.clone())),
                message: format!("booted deployment {}", d.describe()),
            },
            BootCheck::RolledBack { message, .. } => Confirmed::Elsewhere { message },
        })
    }
}

fn request(action: super::plugin::PluginAction, t: &Target) -> PluginRequest {
    PluginRequest::new(action, &t.node, &t.image.version)
        .with_current_version(t.current_version.as_deref())
        .with_os_version_management(t.os_version_management.as_ref())
        .with_image(Some(&t.image))
        .with_kernel_arguments(&t.kernel_arguments)
        .with_rollback(t.rollback)
}

fn with_message(base: String, plugin_message: Option<String>) -> String {
    match plugin_message {
        Some(m) => format!("{base} ({m})"),
        None => base,
    }
}

/// What a `stage` (or `rollback`) reply means for `t`; `did` opens the message.
fn plugin_staged(t: &Target, r: StageReply, did: String) -> Staging {
    if r.current_version.as_deref() == Some(t.image.version.as_str()) {
        return Staging::AlreadyCurrent {
            message: with_message(
                format!("plugin reports {} already running", t.image.version),
                r.message,
            ),
        };
    }
    let how = if r.reboot_required {
        "applying needs a reboot; waiting for reboot approval"
    } else {
        "it can be applied live; waiting for approval"
    };
    Staging::Staged {
        reboot_required: r.reboot_required,
        current_version: r.current_version,
        message: with_message(format!("{did}; {how}"), r.message),
    }
}

/// A fleet rollback: the plugin's `rollback`, or, when it cannot, a `stage` of the
/// version, said in the message (and so in the Staged Event).
fn plugin_rollback<R: CommandRunner>(p: &Plugin<R>, t: &Target) -> Result<Staging, BackendError> {
    use super::plugin::PluginAction;
    let v = &t.image.version;
    let why = match Plugin::rollback(p, &request(PluginAction::Rollback, t))? {
        RollbackReply::Staged(r) => {
            return Ok(plugin_staged(t, r, format!("plugin rolled back to {v}")));
        }
        RollbackReply::Unsupported { why } => why,
    };
    tracing::warn!(plugin = %p.path().display(), "the plugin cannot roll back ({why}); staging {v} instead");
    let r = Plugin::stage(p, &request(PluginAction::Stage, t)).map_err(|source| {
        PluginError::RollbackFallbackFailed {
            path: p.path().to_path_buf(),
            why: why.clone(),
            source: Box::new(source),
        }
    })?;
    let did = format!("plugin cannot roll back ({why}), so it staged {v} instead");
    Ok(plugin_staged(t, r, did))
}

impl<R: CommandRunner> DeployBackend for Plugin<R> {
    fn kind(&self) -> &'static str {
        "plugin"
    }

    fn sources(&self, t: &Target) -> Result<Vec<Source>, BackendError> {
        let mut out = Vec::new();
        if !t.image.url.is_empty() {
            out.push(Source::new("spec.image.url", &t.image.url, true));
        }
        if let Some(payload) = &t.os_version_management {
            payload_strings(payload, "spec.osVersionManagement".into(), &mut out);
        }
        Ok(out)
    }

    fn running_version(&self) -> Result<Option<String>, BackendError> {
        // The protocol asks about a target; without one there is nothing to ask.
        Ok(None)
    }

    fn stage(&self, t: &Target) -> Result<Staging, BackendError> {
        use super::plugin::PluginAction;
        if t.rollback {
            return plugin_rollback(self, t);
        }
        let r = Plugin::stage(self, &request(PluginAction::Stage, t))?;
        Ok(plugin_staged(
            t,
            r,
            format!("plugin staged {}", t.image.version),
        ))
    }

    fn apply(&self, t: &Target) -> Result<Applied, BackendError> {
        use super::plugin::PluginAction;
        let r = Plugin::apply(self, &request(PluginAction::Apply, t))?;
        Ok(Applied {
            reboot_required: r.reboot_required,
            message: with_message(
                format!("plugin applied {}", t.image.version),
                r.message.clone(),
            ),
            current_version: Some(r.current_version),
            stale: r.stale_paths.into_iter().map(StaleRef::Path).collect(),
        })
    }

    fn confirm(&self, t: &Target) -> Result<Confirmed, BackendError> {
        use super::plugin::PluginAction;
        let r = Plugin::verify(self, &request(PluginAction::Verify, t))?;
        Ok(if r.current_version == t.image.version {
            Confirmed::OnTarget {
                version: Some(r.current_version.clone()),
                message: with_message(
                    format!("plugin reports {} running", r.current_version),
                    r.message,
                ),
            }
        } else {
            Confirmed::Elsewhere {
                message: with_message(
                    format!(
                        "after the reboot the plugin reports {} running, not the target {}",
                        r.current_version, t.image.version
                    ),
                    r.message,
                ),
            }
        })
    }
}
