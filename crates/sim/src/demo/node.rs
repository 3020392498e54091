//! A simulated machine for the demo and the cluster tests: kubelet-lite for the Node and
//! its pods, a `SimHost` directory for disks and firmware, and the real osroll agent,
//! started again after each simulated reboot the way a node's init system would after
//! power-on ([`run_machine`], also used by the scale benchmark).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use osroll_agent::{AgentConfig, AgentExit, SimHost, Slot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::kubelet::{Kubelet, KubeletConfig};

/// How a simulated machine behaves.
#[derive(Debug, Clone)]
pub struct MachineOptions {
    /// Size of each A/B slot file.
    pub slot_size: u64,
    /// How long a reboot keeps the node down.
    pub downtime: Duration,
    /// Whether the first boot of slot B fails (the firmware falls back).
    pub bad_slot_b: bool,
}

/// One simulated machine; dropping it stops its kubelet and agent.
pub struct SimNode {
    /// Node name.
    pub name: String,
    /// The machine's disks and firmware.
    pub host: SimHost,
    /// Its kubelet.
    pub kubelet: Arc<Kubelet>,
    task: JoinHandle<()>,
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn os_image(version: &str) -> String {
    format!("osroll SimOS {version}")
}

impl SimNode {
    /// Start machine `name` in `dir` running `version`; its kubelet registers through
    /// `kubelet_client`, its agent talks to the API through `agent_client`.
    pub async fn start(
        kubelet_client: kube::Client,
        agent_client: kube::Client,
        dir: &Path,
        name: &str,
        version: &str,
        opts: &MachineOptions,
    ) -> anyhow::Result<SimNode> {
        let labels = BTreeMap::new();
        Self::start_labelled(
            kubelet_client,
            agent_client,
            dir,
            name,
            version,
            opts,
            labels,
        )
        .await
    }

    /// Like [`SimNode::start`], the Node registered with extra `labels`.
    pub async fn start_labelled(
        kubelet_client: kube::Client,
        agent_client: kube::Client,
        dir: &Path,
        name: &str,
        version: &str,
        opts: &MachineOptions,
        labels: BTreeMap<String, String>,
    ) -> anyhow::Result<SimNode> {
        let host = SimHost::create(&dir.join(name), opts.slot_size, version)?;
        if opts.bad_slot_b {
            host.fail_next_boot(Slot::B)?;
        }
        let mut kcfg = KubeletConfig::new(name);
        kcfg.labels.extend(labels);
        kcfg.os_image = os_image(version);
        let kubelet = Arc::new(Kubelet::start(kubelet_client, kcfg).await?);
        let mut cfg = AgentConfig::new(name, dir.join(name).join("state"));
        cfg.resync = Duration::from_secs(2);
        cfg.error_backoff = Duration::from_millis(300);
        cfg.progress_interval = Duration::from_millis(100);
        cfg.install.direct_io = false;
        cfg.install.buffer_size = 256 * 1024;
        cfg.install.buffers = 2;
        cfg.reboot.sentinel_file = Some(host.sentinel());
        let machine = run_machine(
            cfg,
            agent_client,
            host.clone(),
            kubelet.clone(),
            opts.downtime,
        );
        // Its log is kept as the agent's (a failed cluster test prints it).
        let source = crate::testing::logbook::span(&format!("agent {name}"));
        let task = tokio::spawn(machine.instrument(source));
        Ok(SimNode {
            name: name.into(),
            host,
            kubelet,
            task,
        })
    }
}

/// Run the agent of one simulated machine for ever: on a simulated reboot take the Node
/// down for `downtime`, power the host on (the firmware picks the slot), bring the Node
/// back with the OS it booted and start the agent again; after an agent error, start it
/// again after a pause, as an init system would.
pub async fn run_machine(
    cfg: AgentConfig,
    client: kube::Client,
    host: SimHost,
    kubelet: Arc<Kubelet>,
    downtime: Duration,
) {
    loop {
        match osroll_agent::run(cfg.clone(), client.clone(), Arc::new(host.clone())).await {
            Ok(AgentExit::Rebooted) => {
                if let Err(e) = kubelet.go_down("rebooting into the new OS").await {
                    tracing::warn!(node = %cfg.node_name, error = %e, "node down");
                }
                // The simulated outage of the reboot.
                tokio::time::sleep(downtime).await;
                match host.boot() {
                    Ok(outcome) => {
                        if let Some(v) = outcome.version {
                            kubelet.set_os_image_after_reboot(&os_image(&v));
                        }
                    }
                    Err(e) => tracing::warn!(node = %cfg.node_name, error = %e, "boot"),
                }
                if let Err(e) = kubelet.come_up().await {
                    tracing::warn!(node = %cfg.node_name, error = %e, "node up");
                }
            }
            Err(e) => {
                tracing::warn!(node = %cfg.node_name, error = format!("{e:#}"), "agent stopped; restarting");
                // Back-off before the init system starts the agent again.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
