//! The executor for deployment backends (OSTree, OS plugin): the same loop, local state
//! and status writes as the A/B path, with [`crate::backends::deploy::next_deploy_step`]
//! deciding and a [`DeployBackend`] acting. Kept apart from the A/B executor so each
//! stays small; both share [`Agent::transition`], the state file and the hooks.

use std::sync::Arc;

use anyhow::Context;
use osroll_api::progress::FailureReason;
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase, labels};

use super::{Agent, Tick, now};
use crate::backends::deploy::{DeployInput, DeployStep, next_deploy_step};
use crate::backends::driver::{Applied, Confirmed, DeployBackend, Staging, Target};
use crate::hooks::{HookContext, HookKind};
use crate::host::HostFacts;
use crate::machine::RolledBackRecord;
use crate::mounts::restart::LiveRestartJob;
use crate::slot::Slot;
use crate::source::ProgressSource;
use crate::state::Tracked;
use crate::status;

/// Facts for the shared status helpers, which were written for slots: a deployment
/// backend has none, so the slot fields are cleared afterwards.
fn facts(version: Option<String>, boot_id: &str) -> HostFacts {
    HostFacts {
        booted_slot: Slot::A,
        os_version: version,
        boot_id: boot_id.to_string(),
    }
}

impl<S: ProgressSource> Agent<S> {
    /// Run a blocking backend call off the runtime.
    async fn backend_call<T: Send + 'static>(
        b: &Arc<dyn DeployBackend>,
        f: impl FnOnce(&dyn DeployBackend) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let b = b.clone();
        tokio::task::spawn_blocking(move || f(b.as_ref()))
            .await
            .context("backend call panicked")
    }

    pub(super) async fn tick_deploy(&mut self, b: Arc<dyn DeployBackend>) -> anyhow::Result<Tick> {
        let host = self.host.clone();
        let boot_id = tokio::task::spawn_blocking(move || host.boot_id())
            .await?
            .context("reading the boot id")?;
        if self.labels.is_none() {
            let mut want = std::collections::BTreeMap::from([(
                labels::MANAGED.to_string(),
                "true".to_string(),
            )]);
            match Self::backend_call(&b, |b| b.running_version()).await? {
                Ok(Some(v)) => {
                    want.insert(labels::OS_VERSION.to_string(), super::label_value(&v));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("reading the running version: {e}"),
            }
            match self.source.label_node(&want).await {
                Ok(()) => self.labels = Some(want),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let mut list = self.source.list().await?;
        list.sort_by(|a, b| {
            let key = |p: &OSUpgradeProgress| {
                (
                    p.metadata.creation_timestamp.clone().map(|t| t.0),
                    p.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let tracked_name = self.state.tracked.as_ref().map(|t| t.name.clone());
        if let Some(name) = &tracked_name
            && !list
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        {
            // A deployment backend has nothing to withdraw: a staged deployment is the
            // host tool's to keep or clean up.
            let t = self.state.tracked.take().expect("tracked");
            self.store.save(&self.state)?;
            self.published.remove(&t.name);
        }
        if let Some(t) = &self.state.tracked
            && let Some(obj) = list
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(t.name.as_str()))
            && obj.status.as_ref() != Some(&t.status)
            && self.published.get(&t.name) != Some(&t.status)
        {
            self.publish().await;
        }
        let mut decisions = Vec::new();
        for obj in &list {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let tracked = self.state.tracked.as_ref().filter(|t| {
                t.name == name
                    && (t.uid.is_none() || obj.metadata.uid.is_none() || t.uid == obj.metadata.uid)
            });
            let status = tracked
                .map(|t| t.status.clone())
                .or_else(|| obj.status.clone())
                .unwrap_or_default();
            let step = next_deploy_step(&DeployInput {
                spec: &obj.spec,
                status: &status,
                attempt_image: tracked.and_then(|t| t.image.as_ref()),
                boot_id: &boot_id,
                reboot_boot_id: tracked.and_then(|t| t.reboot_boot_id.as_deref()),
                rolled_back: &self.state.rolled_back,
            });
            decisions.push((obj, status, step, tracked.is_some()));
        }
        // The tracked progress first while it owns the node, then the oldest with work.
        let tracked_at = decisions.iter().position(|d| {
            d.3 && (d.2 != DeployStep::Idle
                || d.1
                    .phase
                    .is_some_and(|p| !p.is_terminal() && p != ProgressPhase::Pending))
        });
        let chosen = match tracked_at {
            Some(i) => Some(decisions.swap_remove(i)),
            None => decisions.into_iter().find(|d| d.2 != DeployStep::Idle),
        };
        let Some((obj, status, step, is_tracked)) = chosen else {
            return Ok(Tick::Idle);
        };
        if !is_tracked {
            self.state.tracked = Some(Tracked {
                name: obj.metadata.name.clone().unwrap_or_default(),
                uid: obj.metadata.uid.clone(),
                image: obj
                    .spec
                    .image
                    .clone()
                    .filter(|i| status.target_version.as_deref() == Some(i.version.as_str())),
                status,
                reboot_boot_id: None,
                live_applied_at: None,
            });
        }
        tracing::debug!(step = ?step, "next deployment step");
        self.execute_deploy(obj, step, &b, &boot_id).await
    }

    fn target(&mut self, obj: &OSUpgradeProgress) -> Option<Target> {
        let node = self.cfg.node_name.clone();
        let t = self.tracked();
        let image = t.image.clone().or_else(|| obj.spec.image.clone())?;
        Some(Target {
            node,
            image,
            current_version: t.status.current_version.clone(),
            os_version_management: obj.spec.os_version_management.clone(),
        })
    }

    async fn execute_deploy(
        &mut self,
        obj: &OSUpgradeProgress,
        step: DeployStep,
        b: &Arc<dyn DeployBackend>,
        boot_id: &str,
    ) -> anyhow::Result<Tick> {
        let prev = self.tracked().status.clone();
        match step {
            DeployStep::Idle | DeployStep::AwaitApproval => Ok(Tick::Idle),
            DeployStep::Start { retry } => {
                let current = Self::backend_call(b, |b| b.running_version())
                    .await?
                    .unwrap_or(None)
                    .or_else(|| prev.current_version.clone());
                let mut next = status::start(
                    &prev,
                    obj.spec.image.as_ref(),
                    obj.spec.retry_nonce.as_deref(),
                    &facts(current, boot_id),
                    retry,
                    &now(),
                );
                next.inactive_partition = None;
                next.reboot_required = None;
                next.message = Some(format!("waiting to stage with the {} backend", b.kind()));
                let t = self.tracked();
                t.image = obj.spec.image.clone();
                t.reboot_boot_id = None;
                t.live_applied_at = None;
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
            DeployStep::Stage => self.stage_deploy(obj, b, boot_id).await,
            DeployStep::Apply => self.apply_deploy(obj, b, boot_id).await,
            DeployStep::Reboot => self.reboot_deploy(boot_id).await,
            DeployStep::Unapprove => {
                self.tracked().reboot_boot_id = None;
                let next = status::phase(
                    &prev,
                    ProgressPhase::Staged,
                    "reboot approval withdrawn before the reboot; the update stays staged",
                    &now(),
                );
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
            DeployStep::Confirm => self.confirm_deploy(obj, b, boot_id).await,
            DeployStep::Finish {
                phase,
                reason,
                message,
            } => self.fail(phase, reason, message).await,
        }
    }

    async fn stage_deploy(
        &mut self,
        obj: &OSUpgradeProgress,
        b: &Arc<dyn DeployBackend>,
        boot_id: &str,
    ) -> anyhow::Result<Tick> {
        let Some(target) = self.target(obj) else {
            let msg = "spec.image is missing: no version to reach".to_string();
            return self
                .fail(ProgressPhase::Failed, FailureReason::InvalidSpec, msg)
                .await;
        };
        // The same catalog trust as the A/B installer: the target must come from a
        // catalog signed by a trusted key when the agent is configured so.
        if let Err(r) = crate::trust::check(&obj.spec, &target.image, &self.cfg.trust) {
            return self.fail(ProgressPhase::Failed, r.reason, r.message).await;
        }
        let prev = self.tracked().status.clone();
        let msg = format!(
            "staging {} with the {} backend",
            target.image.version,
            b.kind()
        );
        self.transition(status::phase(
            &prev,
            ProgressPhase::Downloading,
            msg,
            &now(),
        ))
        .await?;
        let t = target.clone();
        match Self::backend_call(b, move |b| b.stage(&t)).await? {
            Err(e) => {
                self.fail(ProgressPhase::Failed, e.reason(), e.to_string())
                    .await
            }
            Ok(Staging::AlreadyCurrent { message }) => {
                let prev = self.tracked().status.clone();
                let f = facts(Some(target.image.version.clone()), boot_id);
                let next = status::completed(&prev, &f, message, &now());
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
            Ok(Staging::Staged {
                reboot_required,
                current_version,
                message,
            }) => {
                let mut next = status::phase(
                    &self.tracked().status,
                    ProgressPhase::Staged,
                    message.clone(),
                    &now(),
                );
                next.reboot_required = Some(reboot_required);
                if current_version.is_some() {
                    next.current_version = current_version;
                }
                osroll_api::conditions::set_condition(
                    &mut next.conditions,
                    osroll_api::Condition::new(status::STAGED, true, "Staged", &message),
                    &now(),
                );
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
        }
    }

    async fn apply_deploy(
        &mut self,
        obj: &OSUpgradeProgress,
        b: &Arc<dyn DeployBackend>,
        boot_id: &str,
    ) -> anyhow::Result<Tick> {
        let Some(target) = self.target(obj) else {
            let msg = "spec.image is missing: no version to reach".to_string();
            return self
                .fail(ProgressPhase::Failed, FailureReason::InvalidSpec, msg)
                .await;
        };
        let prev = self.tracked().status.clone();
        let reboot = prev.reboot_required != Some(false);
        if prev.phase == Some(ProgressPhase::Staged) {
            let pre = match self
                .run_hook(HookKind::PreInstall, &hook_context(&prev, &target, reboot))
                .await
            {
                Ok(tail) => tail,
                Err((reason, msg)) => return self.fail(ProgressPhase::Failed, reason, msg).await,
            };
            let mut msg = format!(
                "applying {} with the {} backend",
                target.image.version,
                b.kind()
            );
            if let Some(tail) = pre {
                msg += &format!("; pre-install hook: {tail}");
            }
            self.transition(status::phase(&prev, ProgressPhase::Applying, msg, &now()))
                .await?;
        }
        let t = target.clone();
        let applied = match Self::backend_call(b, move |b| b.apply(&t)).await? {
            Ok(a) => a,
            Err(e) => {
                return self
                    .fail(ProgressPhase::Failed, e.reason(), e.to_string())
                    .await;
            }
        };
        if applied.reboot_required {
            return self.reboot_deploy(boot_id).await;
        }
        self.finish_live(obj, &target, applied, boot_id).await
    }

    async fn finish_live(
        &mut self,
        obj: &OSUpgradeProgress,
        target: &Target,
        applied: Applied,
        boot_id: &str,
    ) -> anyhow::Result<Tick> {
        let running = applied.current_version.clone();
        if running.as_deref() != Some(target.image.version.as_str()) {
            let msg = format!(
                "the live update finished but {} is running, not the target {}",
                running.as_deref().unwrap_or("(unknown)"),
                target.image.version
            );
            return self
                .fail(
                    ProgressPhase::Failed,
                    FailureReason::LiveUpdateIncomplete,
                    msg,
                )
                .await;
        }
        let applied_at = match self.tracked().live_applied_at.clone() {
            Some(at) => at,
            None => {
                // Sub-second: pods created in the same second as the apply are old.
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                self.tracked().live_applied_at = Some(at.clone());
                self.store.save(&self.state)?;
                at
            }
        };
        let mut message = applied.message.clone();
        if let Some(r) = self.restarter.clone() {
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
            let key = format!(
                "{}/{}/{}",
                t.name,
                target.image.version,
                t.status.observed_retry_nonce.as_deref().unwrap_or("")
            );
            match r.restart(&job, &key).await {
                Ok(report) => message += &format!("; {}", report.summary()),
                Err(e) => {
                    return self
                        .fail(ProgressPhase::Failed, e.reason(), e.to_string())
                        .await;
                }
            }
        } else if !applied.stale.is_empty() || obj.spec.restart_on_live_update.is_some() {
            tracing::warn!("live update applied, but this agent has no pod API: no pod restarted");
        }
        self.complete_deploy(target, running, message, boot_id)
            .await
    }

    async fn reboot_deploy(&mut self, boot_id: &str) -> anyhow::Result<Tick> {
        self.tracked().reboot_boot_id = Some(boot_id.to_string());
        let prev = self.tracked().status.clone();
        let next = status::phase(
            &prev,
            ProgressPhase::Rebooting,
            "the update is staged for the next boot; rebooting",
            &now(),
        );
        self.transition(next).await?;
        match self.request_reboot().await? {
            Ok(tick) => Ok(tick),
            Err(e) => {
                self.tracked().reboot_boot_id = None;
                self.fail(ProgressPhase::Failed, FailureReason::RebootFailed, e)
                    .await
            }
        }
    }

    async fn confirm_deploy(
        &mut self,
        obj: &OSUpgradeProgress,
        b: &Arc<dyn DeployBackend>,
        boot_id: &str,
    ) -> anyhow::Result<Tick> {
        let Some(target) = self.target(obj) else {
            let msg = "no target recorded for the attempt".to_string();
            return self
                .fail(ProgressPhase::Failed, FailureReason::InvalidStatus, msg)
                .await;
        };
        let t = target.clone();
        match Self::backend_call(b, move |b| b.confirm(&t)).await? {
            Err(e) => {
                self.fail(ProgressPhase::Failed, e.reason(), e.to_string())
                    .await
            }
            Ok(Confirmed::OnTarget { version, message }) => {
                self.tracked().reboot_boot_id = None;
                self.complete_deploy(&target, version, message, boot_id)
                    .await
            }
            Ok(Confirmed::Elsewhere { message }) => {
                self.tracked().reboot_boot_id = None;
                let nonce = self.tracked().status.observed_retry_nonce.clone();
                self.state
                    .rolled_back
                    .retain(|r| r.version != target.image.version);
                self.state.rolled_back.push(RolledBackRecord {
                    version: target.image.version.clone(),
                    checksum: target.image.checksum.clone(),
                    retry_nonce: nonce,
                });
                self.fail(
                    ProgressPhase::RolledBack,
                    FailureReason::BootedWrongDeployment,
                    message,
                )
                .await
            }
        }
    }

    /// Post-install hook, then Completed (or Failed naming the hook).
    async fn complete_deploy(
        &mut self,
        target: &Target,
        running: Option<String>,
        mut message: String,
        boot_id: &str,
    ) -> anyhow::Result<Tick> {
        let prev = self.tracked().status.clone();
        let reboot = prev.reboot_required != Some(false);
        match self
            .run_hook(HookKind::PostInstall, &hook_context(&prev, target, reboot))
            .await
        {
            Ok(Some(tail)) => message += &format!("; post-install hook: {tail}"),
            Ok(None) => {}
            Err((reason, msg)) => return self.fail(ProgressPhase::Failed, reason, msg).await,
        }
        let next = status::completed(&prev, &facts(running.clone(), boot_id), message, &now());
        self.transition(next).await?;
        if let Some(v) = running {
            let mut want = self.labels.clone().unwrap_or_default();
            want.insert(labels::MANAGED.to_string(), "true".to_string());
            want.insert(labels::OS_VERSION.to_string(), super::label_value(&v));
            match self.source.label_node(&want).await {
                Ok(()) => self.labels = Some(want),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(Tick::Busy)
    }
}

/// What a hook is told about this attempt.
pub(super) fn hook_context(
    status: &OSUpgradeProgressStatus,
    target: &Target,
    reboot: bool,
) -> HookContext {
    HookContext {
        from_version: status.current_version.clone(),
        to_version: target.image.version.clone(),
        reboot,
        node: Some(target.node.clone()),
    }
}
