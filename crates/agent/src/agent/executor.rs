//! The one executor, over any [`Backend`]: a loop of observe (the running system and the
//! progress list), decide (the backend's pure machine and [`select`]), perform
//! ([`super::steps`]). Every transition is saved locally first, then published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase, labels};

use super::{Agent, AgentConfig, AgentExit, label_value};
use crate::backends::Backend;
use crate::failure::Failure;
use crate::firstboot::FirstBootExit;
use crate::hooks::InstallHooks;
use crate::host::Host;
use crate::machine::external::{self, Signal};
use crate::machine::select::{self, Decision, Deleted};
use crate::machine::{Facts, Input};
use crate::mounts::restart::LiveRestarter;
use crate::reboot::Sources;
use crate::source::ProgressSource;
use crate::state::{LocalState, StateError, StateStore, Tracked};
use crate::status;

/// How one pass of the loop ended.
pub(super) enum Tick {
    /// A step was taken: look again at once.
    Busy,
    /// Nothing to do until something changes.
    Idle,
    /// A simulated host was asked to reboot.
    Rebooted,
}

/// The executor's state: what the agent runs with, and what it has published.
pub(super) struct Executor<S: ProgressSource, B: Backend> {
    pub(super) cfg: AgentConfig,
    pub(super) source: S,
    pub(super) host: Arc<dyn Host>,
    pub(super) backend: Arc<B>,
    pub(super) store: StateStore,
    pub(super) state: LocalState,
    pub(super) published: HashMap<String, OSUpgradeProgressStatus>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) hooks: Option<Arc<dyn InstallHooks>>,
    pub(super) restarter: Option<Arc<dyn LiveRestarter>>,
    /// The reboot-needed sources, and what they said on this pass.
    pub(super) sources: Sources,
    pub(super) signal: Signal,
}

/// Now, as written in status timestamps.
pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl<S: ProgressSource, B: Backend> Executor<S, B> {
    pub(super) fn new(agent: Agent<S>, backend: B) -> Self {
        let sources = Sources::from_config(&agent.cfg.reboot);
        Executor {
            cfg: agent.cfg,
            source: agent.source,
            host: agent.host,
            backend: Arc::new(backend),
            store: agent.store,
            state: agent.state,
            published: HashMap::new(),
            labels: None,
            hooks: agent.hooks,
            sources,
            signal: Ok(None),
            restarter: agent.restarter,
        }
    }

    /// Run until a simulated reboot (a real reboot ends the process).
    pub(super) async fn run(self) -> anyhow::Result<AgentExit> {
        self.run_until(|_| None, AgentExit::Rebooted).await
    }

    /// Run until the progress `name` is finished, or a simulated reboot.
    pub(super) async fn run_until_finished(self, name: &str) -> anyhow::Result<FirstBootExit> {
        let finished = |e: &Self| {
            e.state
                .tracked
                .as_ref()
                .filter(|t| {
                    t.name == name && t.status.phase.is_some_and(ProgressPhase::is_terminal)
                })
                .map(|t| FirstBootExit::Finished(Box::new(t.status.clone())))
        };
        self.run_until(finished, FirstBootExit::Rebooted).await
    }

    /// The loop: tick until `done` says so when idle, or the host reboots.
    async fn run_until<R>(
        mut self,
        done: impl Fn(&Self) -> Option<R>,
        rebooted: R,
    ) -> anyhow::Result<R> {
        loop {
            match self.tick().await {
                Ok(Tick::Rebooted) => return Ok(rebooted),
                Ok(Tick::Busy) => {}
                Ok(Tick::Idle) => {
                    if let Some(r) = done(&self) {
                        return Ok(r);
                    }
                    self.source.changed(self.cfg.resync).await
                }
                Err(e) => {
                    tracing::warn!("{e:#}");
                    tokio::time::sleep(self.cfg.error_backoff).await;
                }
            }
        }
    }

    /// Observe, decide, perform: one pass.
    async fn tick(&mut self) -> anyhow::Result<Tick> {
        let facts = self
            .backend
            .observe()
            .await
            .context("inspecting the host")?;
        self.signal = self.read_signal().await;
        self.report_labels(&facts).await;
        let mut list = self.source.list().await?;
        select::oldest_first(&mut list);
        self.forget_if_deleted(&list, &facts).await?;
        self.republish_if_missed(&list).await;
        let mut decisions: Vec<_> = list.iter().map(|p| self.decide(p, &facts)).collect();
        let Some(i) = select::choose(&decisions) else {
            return Ok(Tick::Idle);
        };
        let (obj, d) = (&list[i], decisions.swap_remove(i));
        if !d.tracked {
            self.track(obj, d.status);
        }
        tracing::debug!(progress = %self.tracked().name, step = ?d.step, "next step");
        self.perform(obj, d.step, &facts).await
    }

    /// Label the Node with what it runs, when that changed.
    async fn report_labels(&mut self, facts: &B::Facts) {
        let mut want = BTreeMap::from([(labels::MANAGED.to_string(), "true".to_string())]);
        if let Some(slot) = self.backend.booted_slot(facts) {
            want.insert(labels::SLOT.to_string(), slot.to_string());
        }
        if let Some(v) = facts.os_version() {
            want.insert(labels::OS_VERSION.to_string(), label_value(v));
        }
        if !self.sources.is_empty()
            && let Ok(signal) = &self.signal
        {
            let needed = if signal.is_some() { "true" } else { "false" };
            want.insert(labels::REBOOT_NEEDED.to_string(), needed.to_string());
        }
        if self.labels.as_ref() == Some(&want) {
            return;
        }
        match self.source.label_node(&want).await {
            Ok(()) => self.labels = Some(want),
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// The tracked progress was deleted: settle what it left on the host, then
    /// forget it.
    async fn forget_if_deleted(
        &mut self,
        list: &[OSUpgradeProgress],
        facts: &B::Facts,
    ) -> anyhow::Result<()> {
        let Some(t) = self.state.tracked.as_ref() else {
            return Ok(());
        };
        if !select::tracked_gone(t, list) {
            return Ok(());
        }
        match self.backend.on_deleted(t, facts) {
            Deleted::Forget => {}
            Deleted::Withdraw => {
                self.backend.disarm().await?;
                tracing::info!(progress = %t.name, "progress deleted before the reboot: try disarmed");
            }
            Deleted::Keep { on } => {
                self.backend.keep(on).await?;
                tracing::info!(progress = %t.name, ?on, "progress deleted during the reboot: what runs is kept");
            }
        }
        let name = t.name.clone();
        self.state.tracked = None;
        self.store.save(&self.state)?;
        self.published.remove(&name);
        Ok(())
    }

    /// Publish the tracked status again if the API server may have missed it.
    async fn republish_if_missed(&mut self, list: &[OSUpgradeProgress]) {
        if let Some(t) = &self.state.tracked
            && let Some(obj) = list.iter().find(|p| select::is_tracked(t, p))
            && select::needs_republish(t, obj.status.as_ref(), self.published.get(&t.name))
        {
            self.publish().await;
        }
    }

    /// The backend's decision for one progress.
    fn decide(&self, obj: &OSUpgradeProgress, facts: &B::Facts) -> Decision<B::Place> {
        let tracked = self
            .state
            .tracked
            .as_ref()
            .filter(|t| select::is_tracked(t, obj));
        let status = match tracked {
            Some(t) => t.status.clone(),
            None => select::adoptable(obj.status.as_ref()),
        };
        let input = Input {
            spec: &obj.spec,
            status: &status,
            attempt_image: tracked.and_then(|t| t.image.as_ref()),
            facts,
            reboot_boot_id: tracked.and_then(|t| t.reboot_boot_id.as_deref()),
            rolled_back: &self.state.rolled_back,
        };
        let step = match obj.spec.external {
            Some(_) => external::next_step(&input, &self.signal),
            None => self.backend.next_step(&input),
        };
        Decision {
            tracked: tracked.is_some(),
            status,
            step,
        }
    }

    /// Start tracking `obj`, whose status is `status`.
    fn track(&mut self, obj: &OSUpgradeProgress, status: OSUpgradeProgressStatus) {
        let image = obj
            .spec
            .image
            .clone()
            .filter(|i| status.target_version.as_deref() == Some(i.version.as_str()));
        self.state.tracked = Some(Tracked {
            name: obj.metadata.name.clone().unwrap_or_default(),
            uid: obj.metadata.uid.clone(),
            image,
            status,
            reboot_boot_id: None,
            live_applied_at: None,
        });
    }

    pub(super) fn tracked(&mut self) -> &mut Tracked {
        self.state
            .tracked
            .as_mut()
            .expect("a progress is tracked while executing a step")
    }

    /// Record `next` as the tracked status: local state first, then the API.
    pub(super) async fn transition(
        &mut self,
        next: OSUpgradeProgressStatus,
    ) -> Result<(), StateError> {
        tracing::info!(
            progress = %self.tracked().name,
            phase = next.phase.map_or("", ProgressPhase::as_str),
            reason = next.failure_reason.as_deref().unwrap_or(""),
            "{}",
            next.message.as_deref().unwrap_or("")
        );
        self.tracked().status = next;
        self.store.save(&self.state)?;
        self.publish().await;
        Ok(())
    }

    /// Send the tracked status to the API; failures are retried by a later tick.
    pub(super) async fn publish(&mut self) {
        let Some(t) = self.state.tracked.as_ref() else {
            return;
        };
        match self.source.patch_status(&t.name, &t.status).await {
            Ok(()) => {
                self.published.insert(t.name.clone(), t.status.clone());
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// End the attempt with `f`.
    pub(super) async fn fail(&mut self, f: Failure) -> Result<(), StateError> {
        let next = status::failed(&self.tracked().status, &f, &now());
        self.transition(next).await
    }
}
