//! Performing a [`Step`]: each step is a short sequence of backend effects and status
//! transitions. A step that ends the attempt returns a [`Failure`] (with `?`), which
//! [`Executor::perform`] records; nothing here decides what comes next.

use osroll_api::progress::FailureReason;
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase};

use super::executor::{Executor, Tick, now};
use super::hookrun;
use crate::backends::{Applied, Attempt, Backend, Confirmed, Staged, Staging};
use crate::failure::{Failure, StepError};
use crate::hooks::{HookContext, HookKind};
use crate::machine::{Facts, RolledBackRecord, Step, missing_image};
use crate::mounts::restart::LiveRestartJob;
use crate::source::ProgressSource;
use crate::status;

pub(super) type StepResult = Result<Tick, StepError>;

/// Whether `obj` carries the controller's rollback mark.
fn is_rollback(obj: &OSUpgradeProgress) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(osroll_api::labels::ROLLBACK))
}

impl<S: ProgressSource, B: Backend> Executor<S, B> {
    /// Carry out `step` for `obj` (the tracked progress); a failure ends the attempt.
    pub(super) async fn perform(
        &mut self,
        obj: &OSUpgradeProgress,
        step: Step<B::Place>,
        facts: &B::Facts,
    ) -> anyhow::Result<Tick> {
        match self.step(obj, step, facts).await {
            Ok(tick) => Ok(tick),
            Err(StepError::Failed(f)) => {
                self.fail(f).await?;
                Ok(Tick::Busy)
            }
            Err(StepError::Retry(e)) => Err(e),
        }
    }

    async fn step(
        &mut self,
        obj: &OSUpgradeProgress,
        step: Step<B::Place>,
        facts: &B::Facts,
    ) -> StepResult {
        match step {
            Step::Idle | Step::AwaitApproval => Ok(Tick::Idle),
            Step::Start { retry } => self.start(obj, retry, facts).await,
            Step::AlreadyCurrent { message } => {
                let version = facts.os_version().map(String::from);
                self.complete_now(version, message).await
            }
            Step::Stage { into } => self.stage(obj, into, facts).await,
            Step::Apply { to, pre_hook } => self.apply(obj, to, pre_hook, facts).await,
            Step::Reboot { to } => self.reboot(to, facts).await,
            Step::Withdraw => self.withdraw().await,
            Step::Confirm { on } => self.confirm(obj, on, facts).await,
            Step::RollBack { failure, .. } => {
                // The bootloader consumes the try; clear it anyway in case it did not.
                if let Err(e) = self.backend.disarm().await {
                    tracing::warn!("{e}");
                }
                let attempt = self.attempt(obj);
                Err(self.fell_back(&attempt, failure).into())
            }
            Step::Finish(f) => Err(f.into()),
            Step::External(s) => self.external(obj, s, facts).await,
        }
    }

    /// The attempt as the backend is told about it.
    fn attempt(&mut self, obj: &OSUpgradeProgress) -> Attempt {
        let node = self.cfg.node_name.clone();
        let t = self.tracked();
        Attempt {
            node,
            image: t.image.clone().or_else(|| obj.spec.image.clone()),
            current_version: t.status.current_version.clone(),
            os_version_management: obj.spec.os_version_management.clone(),
            allow_http_images: obj.spec.allow_http_images,
            kernel_arguments: obj.spec.kernel_arguments.clone(),
            staged_reboot_required: t.status.reboot_required,
            rollback: is_rollback(obj),
        }
    }

    /// A fresh Pending status for the spec's image.
    async fn start(
        &mut self,
        obj: &OSUpgradeProgress,
        retry: bool,
        facts: &B::Facts,
    ) -> StepResult {
        let prev = self.tracked().status.clone();
        let begin = self.backend.begin(facts, &prev).await;
        let next = status::start(
            &prev,
            obj.spec.image.as_ref(),
            obj.spec.retry_nonce.as_deref(),
            &begin,
            retry,
            &now(),
        );
        let t = self.tracked();
        t.image = obj.spec.image.clone();
        t.reboot_boot_id = None;
        t.live_applied_at = None;
        self.transition(next).await?;
        Ok(Tick::Busy)
    }

    /// Completed without a post-install hook: nothing was installed.
    async fn complete_now(&mut self, version: Option<String>, message: String) -> StepResult {
        let mut next = status::completed(&self.tracked().status, version, message, &now());
        next.kernel_command_line = self.host.kernel_command_line();
        self.transition(next).await?;
        Ok(Tick::Busy)
    }

    /// Check the image may be installed, stage it, record the outcome.
    async fn stage(
        &mut self,
        obj: &OSUpgradeProgress,
        into: B::Place,
        facts: &B::Facts,
    ) -> StepResult {
        let attempt = self.attempt(obj);
        let image = attempt.image.as_ref().ok_or_else(missing_image)?;
        self.trusted(obj, image, facts)?;
        let staging = self.backend.stage(&attempt, into, facts).await?;
        let next = status::phase(
            &self.tracked().status,
            ProgressPhase::Downloading,
            staging.message.clone(),
            &now(),
        );
        self.transition(next).await?;
        match self.follow(staging).await? {
            Staged::AlreadyCurrent { version, message } => {
                self.complete_now(Some(version), message).await
            }
            Staged::Ready(ready) => {
                let next = status::staged(&self.tracked().status, &ready, &now());
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
        }
    }

    /// Only images from a fresh catalog signed by a trusted key, when so configured; the
    /// accepted serial is remembered (saved with the next status).
    fn trusted(
        &mut self,
        obj: &OSUpgradeProgress,
        image: &osroll_api::ImageRef,
        facts: &B::Facts,
    ) -> Result<(), Failure> {
        let ctx = crate::trust::Context {
            running: facts.os_version(),
            now: k8s_openapi::jiff::Timestamp::now(),
            newest_serial: self.state.catalog_serial,
        };
        let accepted = crate::trust::check(&obj.spec, image, &self.cfg.trust, ctx)?;
        if let Some(serial) = accepted.serial {
            self.state.catalog_serial = self.state.catalog_serial.max(Some(serial));
        }
        Ok(())
    }

    /// Run a staging to its end, publishing its counters meanwhile; on failure the
    /// counters reached stay in the status.
    async fn follow(&mut self, staging: Staging) -> Result<Staged, StepError> {
        let Staging { progress, run, .. } = staging;
        let Some(progress) = progress else {
            return run.await;
        };
        let mut run = run;
        let mut ticker = tokio::time::interval(self.cfg.progress_interval);
        ticker.tick().await;
        let mut shown = ProgressPhase::Downloading;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = ticker.tick() => {
                    let snap = progress.snapshot();
                    let mut next = status::bytes(&self.tracked().status, snap.done, snap.total, &now());
                    if snap.phase == shown {
                        self.tracked().status = next;
                        self.publish().await;
                    } else {
                        shown = snap.phase;
                        next = status::phase(&next, snap.phase, snap.message, &now());
                        self.transition(next).await?;
                    }
                }
            }
        };
        if result.is_err() {
            let snap = progress.snapshot();
            let next = status::bytes(&self.tracked().status, snap.done, snap.total, &now());
            self.tracked().status = next;
        }
        result
    }

    /// Approved: the pre-install hook (once), then the switch, then the reboot or the
    /// end of a live update.
    async fn apply(
        &mut self,
        obj: &OSUpgradeProgress,
        to: B::Place,
        pre_hook: bool,
        facts: &B::Facts,
    ) -> StepResult {
        let attempt = self.attempt(obj);
        // The spec may have been edited since staging: what is applied is checked again.
        if let Some(image) = &attempt.image {
            self.trusted(obj, image, facts)?;
        }
        if pre_hook {
            let ctx = self.hook_context(&attempt);
            let tail = hookrun::run(self.hooks.clone(), HookKind::PreInstall, ctx).await?;
            self.note_applying(&attempt, tail).await?;
        }
        let applied = self.backend.apply(&attempt, to).await?;
        if applied.reboot_required {
            return self.reboot(to, facts).await;
        }
        self.finish_live(obj, &attempt, applied).await
    }

    /// Record that the switch begins: Applying for a backend that says so, else the
    /// pre-install hook's output alone.
    async fn note_applying(
        &mut self,
        attempt: &Attempt,
        hook: Option<String>,
    ) -> Result<(), StepError> {
        let prev = self.tracked().status.clone();
        let hook = hook.map(|tail| format!("pre-install hook: {tail}"));
        let next = match (self.backend.applying(attempt), hook) {
            (Some(m), Some(h)) => {
                status::phase(&prev, ProgressPhase::Applying, format!("{m}; {h}"), &now())
            }
            (Some(m), None) => status::phase(&prev, ProgressPhase::Applying, m, &now()),
            (None, Some(h)) => status::phase(&prev, ProgressPhase::Staged, h, &now()),
            (None, None) => return Ok(()),
        };
        Ok(self.transition(next).await?)
    }

    /// Arm `to` for the next boot and ask the host to reboot.
    async fn reboot(&mut self, to: B::Place, facts: &B::Facts) -> StepResult {
        let message = self.backend.arm(to).await?;
        self.tracked().reboot_boot_id = Some(facts.boot_id().to_string());
        let next = status::phase(
            &self.tracked().status,
            ProgressPhase::Rebooting,
            message,
            &now(),
        );
        self.transition(next).await?;
        match self.request_reboot().await? {
            Ok(tick) => Ok(tick),
            Err(e) => {
                if let Err(d) = self.backend.disarm().await {
                    tracing::warn!("{d}");
                }
                self.tracked().reboot_boot_id = None;
                Err(Failure::new(FailureReason::RebootFailed, e.to_string()).into())
            }
        }
    }

    /// Ask the host to reboot: the tick to return when it went (or is going) down, or
    /// why the request failed. A real reboot ends this process; if it has not after
    /// `reboot_timeout`, the loop carries on and looks again.
    pub(super) async fn request_reboot(
        &self,
    ) -> Result<Result<Tick, crate::host::HostError>, StepError> {
        let host = self.host.clone();
        Ok(
            match tokio::task::spawn_blocking(move || host.reboot()).await? {
                Ok(crate::host::RebootKind::Simulated) => Ok(Tick::Rebooted),
                Ok(crate::host::RebootKind::Requested) => {
                    tokio::time::sleep(self.cfg.reboot_timeout).await;
                    tracing::warn!(
                        "reboot requested {:?} ago but this boot is still running",
                        self.cfg.reboot_timeout
                    );
                    Ok(Tick::Busy)
                }
                Err(e) => Err(e),
            },
        )
    }

    /// Approval was withdrawn before the reboot: undo the arming, back to Staged.
    async fn withdraw(&mut self) -> StepResult {
        let message = self.backend.disarm().await?;
        self.tracked().reboot_boot_id = None;
        let next = status::phase(
            &self.tracked().status,
            ProgressPhase::Staged,
            message,
            &now(),
        );
        self.transition(next).await?;
        Ok(Tick::Busy)
    }

    /// After the boot: on the target, finish; elsewhere, the node fell back.
    async fn confirm(
        &mut self,
        obj: &OSUpgradeProgress,
        on: B::Place,
        facts: &B::Facts,
    ) -> StepResult {
        let attempt = self.attempt(obj);
        let confirmed = self.backend.confirm(&attempt, on, facts).await?;
        self.tracked().reboot_boot_id = None;
        match confirmed {
            Confirmed::OnTarget { version, message } => {
                self.complete(&attempt, version, message).await
            }
            Confirmed::Elsewhere { message } => {
                let f = Failure::rolled_back(FailureReason::BootedWrongDeployment, message);
                Err(self.fell_back(&attempt, f).into())
            }
        }
    }

    /// Remember that the attempt's version fell back on this node (it is not tried
    /// again until the nonce changes); `f` is how the attempt ends.
    fn fell_back(&mut self, attempt: &Attempt, f: Failure) -> Failure {
        let t = self.tracked();
        t.reboot_boot_id = None;
        let image = attempt.image.as_ref();
        let version = t
            .status
            .target_version
            .clone()
            .or_else(|| image.map(|i| i.version.clone()))
            .unwrap_or_default();
        let record = RolledBackRecord {
            checksum: image.map(|i| i.checksum.clone()).unwrap_or_default(),
            retry_nonce: t.status.observed_retry_nonce.clone(),
            version: version.clone(),
        };
        self.state.rolled_back.retain(|r| r.version != version);
        self.state.rolled_back.push(record);
        f
    }

    /// A live update ran: check it reached the target, restart the pods it left stale,
    /// finish.
    async fn finish_live(
        &mut self,
        obj: &OSUpgradeProgress,
        attempt: &Attempt,
        applied: Applied,
    ) -> StepResult {
        let target = attempt
            .image
            .as_ref()
            .map(|i| i.version.as_str())
            .unwrap_or_default();
        let running = applied.current_version.clone();
        if running.as_deref() != Some(target) {
            return Err(Failure::new(
                FailureReason::LiveUpdateIncomplete,
                format!(
                    "the live update finished but {} is running, not the target {target}",
                    running.as_deref().unwrap_or("(unknown)"),
                ),
            )
            .into());
        }
        let mut message = applied.message.clone();
        if let Some(summary) = self.restart_pods(obj, target, &applied).await? {
            message += &format!("; {summary}");
        }
        self.complete(attempt, running, message).await
    }

    /// Restart the pods a live update left on the previous version (and those the
    /// spec selects): a summary, or `None` when this agent has no pod API.
    async fn restart_pods(
        &mut self,
        obj: &OSUpgradeProgress,
        version: &str,
        applied: &Applied,
    ) -> Result<Option<String>, StepError> {
        let Some(r) = self.restarter.clone() else {
            if !applied.stale.is_empty() || obj.spec.restart_on_live_update.is_some() {
                tracing::warn!(
                    "live update applied, but this agent has no pod API: no pod restarted"
                );
            }
            return Ok(None);
        };
        let applied_at = self.live_applied_at()?;
        let job = LiveRestartJob {
            node: self.cfg.node_name.clone(),
            proc_root: self.cfg.proc_root.clone(),
            stale: applied.stale.clone(),
            selector: obj.spec.restart_on_live_update.clone(),
            applied_at: applied_at
                .parse()
                .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
            reboot_follows: false,
        };
        let t = self.tracked();
        let nonce = t.status.observed_retry_nonce.as_deref().unwrap_or("");
        let key = format!("{}/{version}/{nonce}", t.name);
        let report = r.restart(&job, &key).await.map_err(Failure::from)?;
        Ok(Some(report.summary()))
    }

    /// When the live update was applied, saved the first time: pods created before it
    /// are old, also for an agent restarted since.
    fn live_applied_at(&mut self) -> Result<String, StepError> {
        if let Some(at) = self.tracked().live_applied_at.clone() {
            return Ok(at);
        }
        // Sub-second: pods created in the same second as the apply are old.
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.tracked().live_applied_at = Some(at.clone());
        self.store.save(&self.state)?;
        Ok(at)
    }

    /// The post-install hook, then Completed (or Failed naming the hook).
    async fn complete(
        &mut self,
        attempt: &Attempt,
        running: Option<String>,
        mut message: String,
    ) -> StepResult {
        let ctx = self.hook_context(attempt);
        if let Some(tail) = hookrun::run(self.hooks.clone(), HookKind::PostInstall, ctx).await? {
            message += &format!("; post-install hook: {tail}");
        }
        self.complete_now(running, message).await
    }

    /// What a hook is told about this attempt.
    fn hook_context(&mut self, attempt: &Attempt) -> HookContext {
        let node = self.cfg.node_name.clone();
        let status: &OSUpgradeProgressStatus = &self.tracked().status;
        HookContext {
            from_version: status.current_version.clone(),
            to_version: status
                .target_version
                .clone()
                .or_else(|| attempt.image.as_ref().map(|i| i.version.clone()))
                .unwrap_or_default(),
            reboot: status.reboot_required != Some(false),
            node: Some(node),
        }
    }
}
