//! Simulated nodes running the real node agent: kubelet-lite (`osroll_sim::Kubelet`)
//! for the Node and its pods, a `SimHost` directory for disks and firmware, and the agent
//! from `osroll-agent`, restarted after each simulated reboot the way a node's init
//! system would start it again after power-on. Plus a small image server.

use std::sync::Arc;
use std::time::Duration;

use osroll_agent::{AgentConfig, AgentExit, SimHost, Slot};
use osroll_sim::{Kubelet, KubeletConfig};

/// Slot size of the simulated nodes.
pub const SLOT_SIZE: u64 = 512 * 1024;

/// One simulated node; dropping it stops its kubelet and agent.
pub struct SimNode {
    pub name: String,
    pub host: SimHost,
    pub kubelet: Arc<Kubelet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the simulated nodes behave.
#[derive(Clone, Copy, Debug)]
pub struct NodeTiming {
    /// How long a reboot keeps the node NotReady.
    pub downtime: Duration,
}

impl SimNode {
    /// Start node `name` running `version`; with `bad_new_slot`, the first boot of its
    /// inactive slot fails and the firmware falls back.
    pub async fn start(
        cluster: &osroll_sim::testing::Cluster,
        dir: &std::path::Path,
        name: &str,
        version: &str,
        bad_new_slot: bool,
        timing: NodeTiming,
    ) -> anyhow::Result<SimNode> {
        let client = cluster.client_for(&format!("system:node:{name}")).await?;
        Self::start_with_client(cluster, dir, name, version, bad_new_slot, timing, client).await
    }

    /// Like [`SimNode::start`], with the agent calling the API through `client` (e.g. as
    /// the agent's service account with a token bound to this node).
    pub async fn start_with_client(
        cluster: &osroll_sim::testing::Cluster,
        dir: &std::path::Path,
        name: &str,
        version: &str,
        bad_new_slot: bool,
        timing: NodeTiming,
        client: kube::Client,
    ) -> anyhow::Result<SimNode> {
        let host = SimHost::create(&dir.join(name), SLOT_SIZE, version)?;
        if bad_new_slot {
            host.fail_next_boot(Slot::B)?;
        }
        let kubelet = Arc::new(cluster.add_node(KubeletConfig::new(name)).await?);
        let mut cfg = AgentConfig::new(name, dir.join(name).join("state"));
        cfg.resync = Duration::from_secs(2);
        cfg.error_backoff = Duration::from_millis(300);
        cfg.progress_interval = Duration::from_millis(200);
        cfg.install.direct_io = false;
        cfg.install.buffer_size = 64 * 1024;
        cfg.install.buffers = 2;
        let task = tokio::spawn(agent_loop(
            cfg,
            client,
            host.clone(),
            kubelet.clone(),
            timing,
        ));
        Ok(SimNode {
            name: name.into(),
            host,
            kubelet,
            task,
        })
    }
}

/// Run the agent; on a simulated reboot take the node down, power it on, start again.
async fn agent_loop(
    cfg: AgentConfig,
    client: kube::Client,
    host: SimHost,
    kubelet: Arc<Kubelet>,
    t: NodeTiming,
) {
    loop {
        match osroll_agent::run(cfg.clone(), client.clone(), Arc::new(host.clone())).await {
            Ok(AgentExit::Rebooted) => {
                if let Err(e) = kubelet.go_down("rebooting into the new OS").await {
                    eprintln!("{}: {e:#}", cfg.node_name);
                }
                // The simulated outage, not a test wait.
                tokio::time::sleep(t.downtime).await;
                if let Err(e) = host.boot() {
                    eprintln!("{}: boot failed: {e:#}", cfg.node_name);
                }
                if let Err(e) = kubelet.come_up().await {
                    eprintln!("{}: {e:#}", cfg.node_name);
                }
            }
            Err(e) => {
                eprintln!("{}: agent stopped: {e:#}; restarting", cfg.node_name);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Serves simulated OS images over HTTP on loopback.
pub struct ImageServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImageServer {
    /// Serve `/<version>.img` for each of `images`.
    pub async fn start(images: Vec<(String, Vec<u8>)>) -> anyhow::Result<ImageServer> {
        let mut app = axum::Router::new();
        for (version, bytes) in images {
            let bytes = bytes::Bytes::from(bytes);
            app = app.route(
                &format!("/{version}.img"),
                axum::routing::get(move || async move { bytes.clone() }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ImageServer { base, task })
    }
}
