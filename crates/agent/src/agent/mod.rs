//! The node agent's entry: [`Agent`] gathers what the agent runs with (configuration,
//! progress source, host, local state, hooks, pod restarter) and hands it to the one
//! executor over the backend its configuration picks.
//!
//! The executor is a loop of observe, decide (the backend's pure machine), perform, and
//! it records every transition first in the local state file, then in the object's
//! status. Because the local state is written first, it is the agent's authority for
//! the progress it tracks: after a crash the next agent re-publishes what the API
//! server may have missed, then continues from there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::ab::SlotBackend;
use crate::backends::deployment::DeploymentBackend;
use crate::backends::driver::{BackendConfig, DeployBackend};
use crate::backends::runner::ProcessRunner;
use crate::firstboot::FirstBootExit;
use crate::hooks::{Hooks, InstallHooks};
use crate::host::Host;
use crate::install::InstallOptions;
use crate::mounts::restart::LiveRestarter;
use crate::source::ProgressSource;
use crate::state::{LocalState, StateStore};

mod executor;
mod external;
mod hookrun;
mod steps;
#[cfg(test)]
mod tests;

use executor::Executor;

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
    /// The host's mount table (`/proc/1/mountinfo`): a slot mounted there is never
    /// written.
    pub mountinfo: PathBuf,
    /// Catalog signature keys and whether a signed catalog is required.
    pub trust: crate::trust::TrustConfig,
    /// Mirror rules: an image whose URL starts with a rule's prefix is fetched from the
    /// mirror instead. The progress keeps the catalog's URL, so the signed-catalog check
    /// still compares against what was signed; only the download goes elsewhere.
    pub mirrors: Vec<osroll_api::policy::Rewrite>,
    /// Where the agent looks for a reboot-needed signal (external OSUpgrades and the
    /// `osroll.io/reboot-needed` Node label).
    pub reboot: crate::reboot::RebootConfig,
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
            mountinfo: PathBuf::from("/proc/1/mountinfo"),
            trust: Default::default(),
            mirrors: Vec::new(),
            reboot: Default::default(),
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

/// The node agent, ready to run.
pub struct Agent<S: ProgressSource> {
    cfg: AgentConfig,
    source: S,
    host: Arc<dyn Host>,
    store: StateStore,
    state: LocalState,
    deployment: Option<Arc<dyn DeployBackend>>,
    hooks: Option<Arc<dyn InstallHooks>>,
    restarter: Option<Arc<dyn LiveRestarter>>,
}

pub use osroll_api::labels::label_value;

impl<S: ProgressSource> Agent<S> {
    /// An agent for `host`, reading progress from `source`.
    pub fn new(cfg: AgentConfig, source: S, host: Arc<dyn Host>) -> anyhow::Result<Self> {
        let store = StateStore::in_dir(&cfg.state_dir);
        let state = store.load()?;
        let deployment = cfg.backend.build();
        let hooks = cfg.hooks_dir.as_ref().map(|d| {
            Arc::new(Hooks::new(d, cfg.hook_timeout, ProcessRunner)) as Arc<dyn InstallHooks>
        });
        Ok(Agent {
            cfg,
            source,
            host,
            store,
            state,
            deployment,
            hooks,
            restarter: None,
        })
    }

    /// Restart pods through `r` after a live update (without one, none are restarted).
    pub fn with_live_restarter(mut self, r: Arc<dyn LiveRestarter>) -> Self {
        self.restarter = Some(r);
        self
    }

    /// Run install hooks through `h` instead of the configured hooks directory.
    pub fn with_hooks(mut self, h: Arc<dyn InstallHooks>) -> Self {
        self.hooks = Some(h);
        self
    }

    /// Update the node through `b` instead of the configured backend.
    pub fn with_deploy_backend(mut self, b: Arc<dyn DeployBackend>) -> Self {
        self.deployment = Some(b);
        self
    }

    /// Run until a simulated reboot (a real reboot ends the process).
    pub async fn run(self) -> anyhow::Result<AgentExit> {
        tracing::info!(node = %self.cfg.node_name, state = %self.store.path().display(), "agent started");
        match self.deployment.clone() {
            None => {
                let b = self.slots();
                Executor::new(self, b).run().await
            }
            Some(tool) => {
                let b = DeploymentBackend::new(tool, self.host.clone());
                Executor::new(self, b).run().await
            }
        }
    }

    /// Run until the progress `name` is finished, or a simulated reboot (first boot).
    pub(crate) async fn run_until_finished(self, name: &str) -> anyhow::Result<FirstBootExit> {
        match self.deployment.clone() {
            None => {
                let b = self.slots();
                Executor::new(self, b).run_until_finished(name).await
            }
            Some(tool) => {
                let b = DeploymentBackend::new(tool, self.host.clone());
                Executor::new(self, b).run_until_finished(name).await
            }
        }
    }

    fn slots(&self) -> SlotBackend {
        SlotBackend::new(
            self.host.clone(),
            self.cfg.install.clone(),
            self.cfg.mirrors.clone(),
        )
        .with_mountinfo(&self.cfg.mountinfo)
        .with_slot_records(&self.cfg.state_dir.join("slots"))
    }
}
