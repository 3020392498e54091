//! A fleet of simulated machines on 1.0 for cluster tests of whole rollouts, with the
//! image server that serves 1.0 and 2.0: the start that the health-check, rollback and
//! rollback-CLI tests share, so they differ only in what they test.

use std::time::Duration;

use tempfile::TempDir;

use super::Cluster;
use crate::demo::images::ImageServer;
use crate::demo::node::{MachineOptions, SimNode};

/// Size of each image the fleet's server serves.
pub const IMAGE_SIZE: usize = 256 * 1024;

/// Machines started by [`Cluster::start_fleet`]; they stop when it is dropped.
pub struct Fleet {
    /// Serves images 1.0 and 2.0 over HTTP on loopback, counting the bytes it sends.
    pub images: ImageServer,
    /// The machines, in order: `node-00`, `node-01`, ... (made unique to the instance).
    pub nodes: Vec<SimNode>,
    /// Where the machines keep their disks and state; removed on drop.
    _dir: TempDir,
}

/// The machines' settings: slots twice an image, 300 ms of downtime per reboot.
pub fn machine_options() -> MachineOptions {
    MachineOptions {
        slot_size: 2 * IMAGE_SIZE as u64,
        downtime: Duration::from_millis(300),
        bad_slot_b: false,
    }
}

impl Cluster {
    /// Start `n` machines on 1.0 named `node-00`, `node-01`, ... (made unique with
    /// [`Cluster::name`]) and an image server for 1.0 and 2.0; return once every agent
    /// labelled its node managed (within 30 s).
    pub async fn start_fleet(&self, n: usize) -> anyhow::Result<Fleet> {
        let images = ImageServer::start(&["1.0", "2.0"], IMAGE_SIZE).await?;
        let dir = tempfile::tempdir()?;
        let opts = machine_options();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = self.name(&format!("node-{i:02}"));
            nodes.push(self.start_machine(dir.path(), &name, "1.0", &opts).await?);
        }
        self.wait_managed_within(n, Duration::from_secs(30)).await?;
        Ok(Fleet {
            images,
            nodes,
            _dir: dir,
        })
    }
}
