//! The executor: the loop that observes, asks [`crate::machine::next_step`], carries the
//! step out through the [`Host`] and the [`ProgressSource`], and records every
//! transition — first in the local state file, then in the object's status.
//!
//! Because the local state is written first, it is the agent's authority for the
//! progress it tracks: after a crash the next agent re-publishes what the API server
//! may have missed, then continues from there.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use osroll_api::progress::FailureReason;
use osroll_api::{ImageRef, OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase, labels};

use crate::backends::driver::{BackendConfig, DeployBackend};
use crate::backends::runner::ProcessRunner;
use crate::hooks::{HookContext, HookKind, Hooks};
use crate::host::{Host, HostFacts, RebootKind};
use crate::install::{Create, ImageSpec, InstallOptions, InstallPhase, Installer};
use crate::machine::{Input, RolledBackRecord, Step, next_step};
use crate::mounts::restart::LiveRestarter;
use crate::slot::Slot;
use crate::source::ProgressSource;
use crate::state::{LocalState, StateStore, Tracked};
use crate::status;

mod deploy;
mod hookrun;

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node's name (downward API `spec.nodeName`).
    pub node_name: String,
    /// Directory of the local state file.
    pub state_dir: PathBuf,
    /// Installer tunables.
    pub install: InstallOptions,
    /// Re-evaluate at least this often, even without a watch event.
    pub resync: Duration,
    /// Wait this long after an error before trying again.
    pub error_backoff: Duration,
    /// Publish download progress this often.
    pub progress_interval: Duration,
    /// After requesting a real reboot, wait this long before concluding it did not happen.
    pub reboot_timeout: Duration,
    /// How this node is updated: A/B image (default), OSTree or an OS plugin.
    pub backend: BackendConfig,
    /// Install hooks directory (`<dir>/<version>/pre-install`, ...); none when unset.
    pub hooks_dir: Option<PathBuf>,
    /// Limit for one hook.
    pub hook_timeout: Duration,
    /// The host's `/proc` (mount tables of pods, for restarts after a live update).
    pub proc_root: PathBuf,
    /// Catalog signature keys and whether a signed catalog is required.
    pub trust: crate::trust::TrustConfig,
    /// Mirror rules: an image whose URL starts with a rule's prefix is fetched from the
    /// mirror instead. The progress keeps the catalog's URL, so the signed-catalog check
    /// still compares against what was signed; only the download goes elsewhere.
    pub mirrors: Vec<osroll_api::policy::Rewrite>,
}

impl AgentConfig {
    /// Defaults for a real node.
    pub fn new(node_name: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            state_dir: state_dir.into(),
            install: InstallOptions::default(),
            resync: Duration::from_secs(30),
            error_backoff: Duration::from_secs(5),
            progress_interval: Duration::from_secs(2),
            reboot_timeout: Duration::from_secs(600),
            backend: BackendConfig::AbImage,
            hooks_dir: None,
            hook_timeout: Duration::from_secs(300),
            proc_root: PathBuf::from("/proc"),
            trust: Default::default(),
            mirrors: Vec::new(),
        }
    }
}

/// Why [`Agent::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentExit {
    /// A simulated host was asked to reboot: power it on ([`crate::simhost::SimHost::boot`])
    /// and start a new agent. (On a real host the reboot ends the process instead.)
    Rebooted,
}

enum Tick {
    Busy,
    Idle,
    Rebooted,
}

/// One decision for one progress object.
struct Decision {
    name: String,
    uid: Option<String>,
    tracked: bool,
    status: OSUpgradeProgressStatus,
    step: Step,
}

/// The node agent.
pub struct Agent<S: ProgressSource> {
    cfg: AgentConfig,
    source: S,
    host: Arc<dyn Host>,
    store: StateStore,
    state: LocalState,
    published: HashMap<String, OSUpgradeProgressStatus>,
    paused: Option<Installer>,
    labels: Option<BTreeMap<String, String>>,
    deploy: Option<Arc<dyn DeployBackend>>,
    hooks: Option<Arc<Hooks<ProcessRunner>>>,
    restarter: Option<Arc<dyn LiveRestarter>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A label value Kubernetes accepts: `[A-Za-z0-9._-]`, at most 63, alphanumeric ends.
pub fn label_value(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

impl<S: ProgressSource> Agent<S> {
    /// An agent for `host`, reading progress from `source`.
    pub fn new(cfg: AgentConfig, source: S, host: Arc<dyn Host>) -> anyhow::Result<Self> {
        let store = StateStore::in_dir(&cfg.state_dir);
        let state = store.load()?;
        let deploy = cfg.backend.build();
        let hooks = cfg
            .hooks_dir
            .as_ref()
            .map(|d| Arc::new(Hooks::new(d, cfg.hook_timeout, ProcessRunner)));
        Ok(Agent {
            cfg,
            source,
            host,
            store,
            state,
            published: HashMap::new(),
            paused: None,
            labels: None,
            deploy,
            hooks,
            restarter: None,
        })
    }

    /// Restart pods through `r` after a live update (without one, none are restarted).
    pub fn with_live_restarter(mut self, r: Arc<dyn LiveRestarter>) -> Self {
        self.restarter = Some(r);
        self
    }

    /// Run until a simulated reboot (a real reboot ends the process).
    pub async fn run(mut self) -> anyhow::Result<AgentExit> {
        tracing::info!(node = %self.cfg.node_name, state = %self.store.path().display(), "agent started");
        loop {
            match self.tick().await {
                Ok(Tick::Rebooted) => return Ok(AgentExit::Rebooted),
                Ok(Tick::Busy) => {}
                Ok(Tick::Idle) => self.source.changed(self.cfg.resync).await,
                Err(e) => {
                    tracing::warn!("{e:#}");
                    tokio::time::sleep(self.cfg.error_backoff).await;
                }
            }
        }
    }

    /// Run until the progress `name` is finished, or a simulated reboot (first boot).
    pub(crate) async fn run_until_finished(
        mut self,
        name: &str,
    ) -> anyhow::Result<crate::firstboot::FirstBootExit> {
        use crate::firstboot::FirstBootExit;
        loop {
            match self.tick().await {
                Ok(Tick::Rebooted) => return Ok(FirstBootExit::Rebooted),
                Ok(Tick::Busy) => {}
                Ok(Tick::Idle) => {
                    if let Some(t) = &self.state.tracked
                        && t.name == name
                        && t.status.phase.is_some_and(ProgressPhase::is_terminal)
                    {
                        return Ok(FirstBootExit::Finished(Box::new(t.status.clone())));
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

    async fn tick(&mut self) -> anyhow::Result<Tick> {
        if let Some(b) = self.deploy.clone() {
            return self.tick_deploy(b).await;
        }
        let host = self.host.clone();
        let facts = tokio::task::spawn_blocking(move || host.facts())
            .await?
            .context("inspecting the host")?;
        self.report_labels(&facts).await;
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
        let tracked_gone = self.state.tracked.as_ref().is_some_and(|t| {
            !list
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(t.name.as_str()))
        });
        if tracked_gone {
            self.forget_deleted(&facts)?;
        }
        // The API server may have missed our last write (the agent died between saving
        // the local state and publishing, or the API was down): repeat it, whether or
        // not that progress has anything left to do.
        if let Some(t) = &self.state.tracked
            && let Some(obj) = list.iter().find(|p| {
                p.metadata.name.as_deref() == Some(t.name.as_str())
                    && (t.uid.is_none() || p.metadata.uid.is_none() || p.metadata.uid == t.uid)
            })
            && obj.status.as_ref() != Some(&t.status)
            && self.published.get(&t.name) != Some(&t.status)
        {
            self.publish().await;
        }
        let Some((obj, d)) = self.choose(&list, &facts) else {
            return Ok(Tick::Idle);
        };
        if !d.tracked {
            let image = obj
                .spec
                .image
                .clone()
                .filter(|i| d.status.target_version.as_deref() == Some(i.version.as_str()));
            self.state.tracked = Some(Tracked {
                name: d.name.clone(),
                uid: d.uid.clone(),
                image,
                status: d.status.clone(),
                reboot_boot_id: None,
                live_applied_at: None,
            });
        }
        tracing::debug!(progress = %d.name, step = ?d.step, "next step");
        self.execute(obj, d.step, &facts).await
    }

    /// The tracked progress was deleted. Settle what it left on the host, then forget
    /// it: an armed try whose reboot has not happened is withdrawn; a node that already
    /// booted the new slot and runs the target version keeps it (committed), rather
    /// than silently returning to the old OS at its next reboot.
    fn forget_deleted(&mut self, facts: &HostFacts) -> anyhow::Result<()> {
        let Some(t) = self.state.tracked.take() else {
            return Ok(());
        };
        if t.status.phase == Some(ProgressPhase::Rebooting) {
            let slot = t
                .status
                .inactive_partition
                .as_deref()
                .and_then(|s| s.parse::<Slot>().ok());
            if t.reboot_boot_id.as_deref() == Some(facts.boot_id.as_str()) {
                self.host.boot_control().disarm()?;
                tracing::info!(progress = %t.name, "progress deleted before the reboot: try disarmed");
            } else if let Some(slot) = slot
                && facts.booted_slot == slot
                && t.status.target_version.is_some()
                && facts.os_version == t.status.target_version
            {
                self.host.boot_control().commit(slot)?;
                tracing::info!(progress = %t.name, %slot, "progress deleted during the reboot: the running slot is committed");
            }
        }
        self.store.save(&self.state)?;
        self.published.remove(&t.name);
        Ok(())
    }

    fn decide(&self, obj: &OSUpgradeProgress, facts: &HostFacts) -> Decision {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let uid = obj.metadata.uid.clone();
        let tracked = self
            .state
            .tracked
            .as_ref()
            .filter(|t| t.name == name && (t.uid.is_none() || uid.is_none() || t.uid == uid));
        let status = tracked
            .map(|t| t.status.clone())
            .or_else(|| obj.status.clone())
            .unwrap_or_default();
        let step = next_step(&Input {
            spec: &obj.spec,
            status: &status,
            attempt_image: tracked.and_then(|t| t.image.as_ref()),
            facts,
            reboot_boot_id: tracked.and_then(|t| t.reboot_boot_id.as_deref()),
            rolled_back: &self.state.rolled_back,
        });
        Decision {
            name,
            uid,
            tracked: tracked.is_some(),
            status,
            step,
        }
    }

    /// The tracked progress first (while it is not finished it owns the inactive slot),
    /// then the oldest progress with something to do.
    fn choose<'a>(
        &self,
        list: &'a [OSUpgradeProgress],
        facts: &HostFacts,
    ) -> Option<(&'a OSUpgradeProgress, Decision)> {
        let mut decisions: Vec<_> = list.iter().map(|p| (p, self.decide(p, facts))).collect();
        if let Some(i) = decisions.iter().position(|(_, d)| d.tracked) {
            let owns_slot = decisions[i]
                .1
                .status
                .phase
                .is_some_and(|p| !p.is_terminal() && p != ProgressPhase::Pending);
            if owns_slot || decisions[i].1.step != Step::Idle {
                return Some(decisions.swap_remove(i));
            }
        }
        decisions.into_iter().find(|(_, d)| d.step != Step::Idle)
    }

    async fn report_labels(&mut self, facts: &HostFacts) {
        let mut want = BTreeMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::SLOT.to_string(), facts.booted_slot.to_string()),
        ]);
        if let Some(v) = &facts.os_version {
            want.insert(labels::OS_VERSION.to_string(), label_value(v));
        }
        if self.labels.as_ref() == Some(&want) {
            return;
        }
        match self.source.label_node(&want).await {
            Ok(()) => self.labels = Some(want),
            Err(e) => tracing::warn!("{e}"),
        }
    }

    fn tracked(&mut self) -> &mut Tracked {
        self.state
            .tracked
            .as_mut()
            .expect("a progress is tracked while executing a step")
    }

    /// Record `next` as the tracked status: local state first, then the API.
    async fn transition(&mut self, next: OSUpgradeProgressStatus) -> anyhow::Result<()> {
        tracing::info!(
            progress = %self.tracked().name,
            phase = ?next.phase,
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
    async fn publish(&mut self) {
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

    async fn fail(
        &mut self,
        phase: ProgressPhase,
        reason: FailureReason,
        message: String,
    ) -> anyhow::Result<Tick> {
        let next = status::failed(&self.tracked().status, phase, reason, message, &now());
        self.transition(next).await?;
        Ok(Tick::Busy)
    }

    async fn execute(
        &mut self,
        obj: &OSUpgradeProgress,
        step: Step,
        facts: &HostFacts,
    ) -> anyhow::Result<Tick> {
        let prev = self.tracked().status.clone();
        match step {
            Step::Idle | Step::AwaitApproval => Ok(Tick::Idle),
            Step::Start { retry } => {
                let next = status::start(
                    &prev,
                    obj.spec.image.as_ref(),
                    obj.spec.retry_nonce.as_deref(),
                    facts,
                    retry,
                    &now(),
                );
                let t = self.tracked();
                t.image = obj.spec.image.clone();
                t.reboot_boot_id = None;
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
            Step::AlreadyCurrent => {
                let v = facts.os_version.clone().unwrap_or_default();
                let msg = format!(
                    "node already runs {v} from slot {}; nothing to install",
                    facts.booted_slot
                );
                self.transition(status::completed(&prev, facts, msg, &now()))
                    .await?;
                Ok(Tick::Busy)
            }
            Step::Install { slot } => self.install(obj, slot, facts).await,
            Step::Reboot { slot } => {
                if prev.phase == Some(ProgressPhase::Staged) {
                    let ctx = self.ab_hook_context(&prev, facts);
                    match self.run_hook(HookKind::PreInstall, &ctx).await {
                        Ok(Some(tail)) => {
                            let next = status::phase(
                                &prev,
                                ProgressPhase::Staged,
                                format!("pre-install hook: {tail}"),
                                &now(),
                            );
                            self.transition(next).await?;
                        }
                        Ok(None) => {}
                        Err((reason, msg)) => {
                            return self.fail(ProgressPhase::Failed, reason, msg).await;
                        }
                    }
                }
                self.reboot(slot, facts).await
            }
            Step::Disarm => {
                self.host.boot_control().disarm()?;
                self.tracked().reboot_boot_id = None;
                let next = status::phase(
                    &prev,
                    ProgressPhase::Staged,
                    "reboot approval withdrawn before the reboot; try disarmed",
                    &now(),
                );
                self.transition(next).await?;
                Ok(Tick::Busy)
            }
            Step::Commit { slot } => {
                self.host.boot_control().commit(slot)?;
                self.tracked().reboot_boot_id = None;
                let v = facts.os_version.clone().unwrap_or_default();
                let mut msg =
                    format!("booted slot {slot} running {v}; slot {slot} committed as the default");
                let ctx = self.ab_hook_context(&prev, facts);
                match self.run_hook(HookKind::PostInstall, &ctx).await {
                    Ok(Some(tail)) => msg += &format!("; post-install hook: {tail}"),
                    Ok(None) => {}
                    Err((reason, m)) => return self.fail(ProgressPhase::Failed, reason, m).await,
                }
                self.transition(status::completed(&prev, facts, msg, &now()))
                    .await?;
                Ok(Tick::Busy)
            }
            Step::RollBack { booted, tried } => {
                // The bootloader consumes the try; clear it anyway in case it did not.
                if let Err(e) = self.host.boot_control().disarm() {
                    tracing::warn!("{e}");
                }
                let version = prev.target_version.clone().unwrap_or_default();
                let t = self.tracked();
                let checksum = t
                    .image
                    .as_ref()
                    .map(|i| i.checksum.clone())
                    .unwrap_or_default();
                self.tracked().reboot_boot_id = None;
                self.state.rolled_back.retain(|r| r.version != version);
                self.state.rolled_back.push(RolledBackRecord {
                    version: version.clone(),
                    checksum,
                    retry_nonce: prev.observed_retry_nonce.clone(),
                });
                let msg = format!(
                    "tried slot {tried} once but the node came back on slot {booted}; {version} will not be tried again until spec.retryNonce changes"
                );
                self.fail(ProgressPhase::RolledBack, FailureReason::BootFallback, msg)
                    .await
            }
            Step::Finish {
                phase,
                reason,
                message,
            } => self.fail(phase, reason, message).await,
        }
    }

    fn ab_hook_context(&self, prev: &OSUpgradeProgressStatus, facts: &HostFacts) -> HookContext {
        HookContext {
            from_version: prev.current_version.clone(),
            to_version: prev
                .target_version
                .clone()
                .or_else(|| facts.os_version.clone())
                .unwrap_or_default(),
            reboot: true,
            node: Some(self.cfg.node_name.clone()),
        }
    }

    async fn reboot(&mut self, slot: Slot, facts: &HostFacts) -> anyhow::Result<Tick> {
        if let Err(e) = self.host.boot_control().arm_try(slot) {
            return self
                .fail(
                    ProgressPhase::Failed,
                    FailureReason::BootControlError,
                    e.to_string(),
                )
                .await;
        }
        self.tracked().reboot_boot_id = Some(facts.boot_id.clone());
        let next = status::rebooting(&self.tracked().status, slot, &now());
        self.transition(next).await?;
        match self.request_reboot().await? {
            Ok(tick) => Ok(tick),
            Err(e) => {
                if let Err(d) = self.host.boot_control().disarm() {
                    tracing::warn!("{d}");
                }
                self.tracked().reboot_boot_id = None;
                self.fail(ProgressPhase::Failed, FailureReason::RebootFailed, e)
                    .await
            }
        }
    }

    /// Ask the host to reboot: the tick to return when it went (or is going) down, or
    /// why the request failed. A real reboot ends this process; if it has not after
    /// `reboot_timeout`, the loop carries on and looks again.
    async fn request_reboot(&self) -> anyhow::Result<Result<Tick, String>> {
        let host = self.host.clone();
        Ok(
            match tokio::task::spawn_blocking(move || host.reboot()).await? {
                Ok(RebootKind::Simulated) => Ok(Tick::Rebooted),
                Ok(RebootKind::Requested) => {
                    tokio::time::sleep(self.cfg.reboot_timeout).await;
                    tracing::warn!(
                        "reboot requested {:?} ago but this boot is still running",
                        self.cfg.reboot_timeout
                    );
                    Ok(Tick::Busy)
                }
                Err(e) => Err(e.to_string()),
            },
        )
    }

    async fn install(
        &mut self,
        obj: &OSUpgradeProgress,
        slot: Slot,
        facts: &HostFacts,
    ) -> anyhow::Result<Tick> {
        anyhow::ensure!(
            slot != facts.booted_slot,
            "refusing to write slot {slot}: the node is running from it"
        );
        let Some(img): Option<ImageRef> = self
            .tracked()
            .image
            .clone()
            .or_else(|| obj.spec.image.clone())
        else {
            return self
                .fail(
                    ProgressPhase::Failed,
                    FailureReason::InvalidSpec,
                    "spec.image is missing: nothing to install".into(),
                )
                .await;
        };
        if let Err(r) = crate::trust::check(&obj.spec, &img, &self.cfg.trust) {
            return self.fail(ProgressPhase::Failed, r.reason, r.message).await;
        }
        let path = match self.host.slot_path(slot) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .fail(
                        ProgressPhase::Failed,
                        FailureReason::SlotUnavailable,
                        e.to_string(),
                    )
                    .await;
            }
        };
        // The controller checked the catalog's URL already; a progress edited by hand
        // (or written by an older controller) is held to the same rule here.
        if let Err(v) = osroll_api::policy::check_image_url(&img.url, obj.spec.allow_http_images) {
            return self
                .fail(
                    ProgressPhase::Failed,
                    FailureReason::ImageSourceNotAllowed,
                    format!("spec.image.url {:?}: {}", v.url, v.why),
                )
                .await;
        }
        let url = osroll_api::policy::rewrite(&img.url, &self.cfg.mirrors);
        if url != img.url {
            tracing::info!(catalog_url = %img.url, mirror_url = %url, "fetching from a mirror");
        }
        let spec = match ImageSpec::new(&url, &img.checksum, img.size) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .fail(ProgressPhase::Failed, e.reason(), e.to_string())
                    .await;
            }
        };
        let mut installer = match self.paused.take() {
            Some(p) if p.image() == &spec && p.target() == path && p.resumable() => {
                tracing::info!(
                    offset = p.progress().snapshot().downloaded,
                    "resuming the interrupted download"
                );
                p
            }
            _ => match Installer::new(spec, &path, Create::No, self.cfg.install.clone()) {
                Ok(i) => i,
                Err(e) => {
                    return self
                        .fail(ProgressPhase::Failed, e.reason(), e.to_string())
                        .await;
                }
            },
        };
        let next = status::phase(
            &self.tracked().status,
            ProgressPhase::Downloading,
            format!(
                "downloading {} into slot {slot} ({})",
                img.url,
                path.display()
            ),
            &now(),
        );
        self.transition(next).await?;

        let progress = installer.progress();
        let result = {
            let run = installer.run();
            let mut run = std::pin::pin!(run);
            let mut ticker = tokio::time::interval(self.cfg.progress_interval);
            ticker.tick().await;
            let mut shown = InstallPhase::Downloading;
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = ticker.tick() => {
                        let snap = progress.snapshot();
                        let mut next = status::bytes(&self.tracked().status, snap.downloaded, snap.total, &now());
                        if snap.phase != shown {
                            shown = snap.phase;
                            let (phase, msg) = match snap.phase {
                                InstallPhase::Downloading => (ProgressPhase::Downloading, "downloading".to_string()),
                                InstallPhase::Writing => (ProgressPhase::Writing, format!("download complete; flushing slot {slot}")),
                                InstallPhase::Verifying => (ProgressPhase::Verifying, format!("reading slot {slot} back")),
                            };
                            next = status::phase(&next, phase, msg, &now());
                            self.transition(next).await?;
                        } else {
                            self.tracked().status = next;
                            self.publish().await;
                        }
                    }
                }
            }
        };
        match result {
            Ok(report) => {
                tracing::info!(
                    bytes = report.downloaded,
                    image = report.image_len,
                    requests = report.requests,
                    resumed = ?report.resumed_at,
                    direct_io = report.direct_io,
                    zeroed = report.zeroed,
                    elapsed = ?report.elapsed,
                    "image staged"
                );
                let with_bytes = status::bytes(
                    &self.tracked().status,
                    report.downloaded,
                    Some(report.downloaded),
                    &now(),
                );
                self.transition(status::staged(&with_bytes, slot, report.image_len, &now()))
                    .await?;
            }
            Err(e) => {
                let snap = progress.snapshot();
                let with_bytes =
                    status::bytes(&self.tracked().status, snap.downloaded, snap.total, &now());
                self.tracked().status = with_bytes;
                if e.is_retryable() && installer.resumable() {
                    self.paused = Some(installer);
                }
                return self
                    .fail(ProgressPhase::Failed, e.reason(), e.to_string())
                    .await;
            }
        }
        Ok(Tick::Busy)
    }
}
