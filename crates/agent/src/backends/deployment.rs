//! A deployment tool (OSTree, an OS plugin) as a [`Backend`]: its blocking calls run off
//! the async runtime, its answers become the executor's outcomes, and the running
//! version it reports is remembered for the Node label. What a tool fetches from is held
//! to the image source policy before it is staged or applied, as the A/B image URL is.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use osroll_api::OSUpgradeProgressStatus;
use osroll_api::policy::{check_image_url, check_reference};
use osroll_api::progress::FailureReason;

use super::driver::{DeployBackend, Source, Staging as ToolStaging, Target};
use super::{Applied, Attempt, Backend, Begin, Confirmed, Ready, Staged, Staging};
use crate::failure::{Failure, StepError};
use crate::host::{Host, HostError};
use crate::machine::select::Deleted;
use crate::machine::{BootFacts, Input, Step, deploy};
use crate::state::Tracked;

/// A [`DeployBackend`] driven by the executor.
pub struct DeploymentBackend {
    tool: Arc<dyn DeployBackend>,
    host: Arc<dyn Host>,
    /// The running version as the tool last reported it: `None` until first asked.
    running: Mutex<Option<Option<String>>>,
}

impl DeploymentBackend {
    /// `tool` on `host` (which only tells the boot id).
    pub fn new(tool: Arc<dyn DeployBackend>, host: Arc<dyn Host>) -> Self {
        DeploymentBackend {
            tool,
            host,
            running: Mutex::new(None),
        }
    }

    /// Run a blocking call of the tool off the runtime.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn DeployBackend) -> T + Send + 'static,
    ) -> Result<T, StepError> {
        let tool = self.tool.clone();
        Ok(tokio::task::spawn_blocking(move || f(tool.as_ref()))
            .await
            .context("backend call panicked")?)
    }

    /// Remember what the tool says runs now.
    fn ran(&self, version: Option<String>) {
        if version.is_some() {
            *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
        }
    }

    /// The running version, asking the tool once.
    async fn running(&self) -> Option<String> {
        if let Some(v) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return v;
        }
        let v = match self.call(|b| b.running_version()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!("reading the running version: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("reading the running version: {e}");
                None
            }
        };
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.clone());
        v
    }
}

/// What the tool is told about `attempt`; `missing` when it names no image.
fn target(attempt: &Attempt, missing: impl FnOnce() -> Failure) -> Result<Target, Failure> {
    Ok(Target {
        node: attempt.node.clone(),
        image: attempt.image.clone().ok_or_else(missing)?,
        current_version: attempt.current_version.clone(),
        os_version_management: attempt.os_version_management.clone(),
        kernel_arguments: attempt.kernel_arguments.clone().unwrap_or_default(),
        staged_reboot_required: attempt.staged_reboot_required,
        rollback: attempt.rollback,
    })
}

/// Refuse the first of `sources` the image source policy does not allow (`allow_http`:
/// the spec's `allowHttpImages`), the same rule the A/B backend holds its image URL to.
fn check_sources(sources: &[Source], allow_http: bool) -> Result<(), Failure> {
    for s in sources {
        let checked = if s.url {
            check_image_url(&s.value, allow_http).map(|_| ())
        } else {
            check_reference(&s.value, allow_http)
        };
        checked.map_err(|v| {
            Failure::new(
                FailureReason::ImageSourceNotAllowed,
                format!("{} {:?}: {}", s.field, s.value, v.why),
            )
        })?;
    }
    Ok(())
}

/// What the tool is told about `attempt`, once what it fetches from passed the policy.
fn allowed_target(tool: &dyn DeployBackend, attempt: &Attempt) -> Result<Target, Failure> {
    let t = target(attempt, no_version)?;
    let sources = tool.sources(&t).map_err(Failure::from)?;
    check_sources(&sources, attempt.allow_http_images)?;
    Ok(t)
}

fn no_version() -> Failure {
    Failure::new(
        FailureReason::InvalidSpec,
        "spec.image is missing: no version to reach",
    )
}

impl Backend for DeploymentBackend {
    type Place = ();
    type Facts = BootFacts;

    fn kind(&self) -> &'static str {
        self.tool.kind()
    }

    async fn observe(&self) -> Result<BootFacts, HostError> {
        let host = self.host.clone();
        let boot_id = tokio::task::spawn_blocking(move || host.boot_id())
            .await
            .map_err(|e| HostError::with("reading the boot id", e))??;
        Ok(BootFacts {
            boot_id,
            os_version: self.running().await,
        })
    }

    fn next_step(&self, input: &Input<'_, BootFacts>) -> Step<()> {
        deploy::next_step(input)
    }

    fn on_deleted(&self, _tracked: &Tracked, _facts: &BootFacts) -> Deleted<()> {
        deploy::on_deleted()
    }

    async fn begin(&self, _facts: &BootFacts, prev: &OSUpgradeProgressStatus) -> Begin {
        let now = self.call(|b| b.running_version()).await;
        let current = now.ok().and_then(Result::ok).flatten();
        Begin {
            current_version: current.or_else(|| prev.current_version.clone()),
            inactive_partition: None,
            reboot_required: None,
            message: Some(format!("waiting to stage with the {} backend", self.kind())),
        }
    }

    async fn stage(
        &self,
        attempt: &Attempt,
        _into: (),
        _facts: &BootFacts,
    ) -> Result<Staging, StepError> {
        let t = allowed_target(self.tool.as_ref(), attempt)?;
        let message = format!(
            "staging {} with the {} backend",
            t.image.version,
            self.kind()
        );
        let tool = self.tool.clone();
        let run = async move {
            let version = t.image.version.clone();
            let staged = tokio::task::spawn_blocking(move || tool.stage(&t))
                .await
                .context("backend call panicked")?;
            Ok::<_, StepError>(match staged.map_err(Failure::from)? {
                ToolStaging::AlreadyCurrent { message } => {
                    Staged::AlreadyCurrent { version, message }
                }
                ToolStaging::Staged {
                    reboot_required,
                    current_version,
                    message,
                } => Staged::Ready(Ready {
                    reboot_required,
                    current_version,
                    bytes: None,
                    condition: "Staged",
                    message,
                    delta: None,
                }),
            })
        };
        Ok(Staging {
            message,
            progress: None,
            run: Box::pin(run),
        })
    }

    fn applying(&self, attempt: &Attempt) -> Option<String> {
        let version = &attempt.image.as_ref()?.version;
        Some(format!(
            "applying {version} with the {} backend",
            self.kind()
        ))
    }

    async fn apply(&self, attempt: &Attempt, _to: ()) -> Result<Applied, StepError> {
        let t = allowed_target(self.tool.as_ref(), attempt)?;
        let applied = self
            .call(move |b| b.apply(&t))
            .await?
            .map_err(Failure::from)?;
        self.ran(applied.current_version.clone());
        Ok(applied)
    }

    async fn arm(&self, _to: ()) -> Result<String, StepError> {
        // The tool's stage or apply already made the update the next boot's.
        Ok("the update is staged for the next boot; rebooting".into())
    }

    async fn disarm(&self) -> Result<String, HostError> {
        Ok("reboot approval withdrawn before the reboot; the update stays staged".into())
    }

    async fn confirm(
        &self,
        attempt: &Attempt,
        _on: (),
        _facts: &BootFacts,
    ) -> Result<Confirmed, StepError> {
        let t = target(attempt, || {
            Failure::new(
                FailureReason::InvalidStatus,
                "no target recorded for the attempt",
            )
        })?;
        let confirmed = self
            .call(move |b| b.confirm(&t))
            .await?
            .map_err(Failure::from)?;
        if let Confirmed::OnTarget { version, .. } = &confirmed {
            self.ran(version.clone());
        }
        Ok(confirmed)
    }

    async fn keep(&self, _on: ()) -> Result<(), HostError> {
        Ok(())
    }
}
