//! First boot: `osroll agent --firstboot` runs from a systemd unit ordered before the
//! kubelet (`deploy/osroll-firstboot.service`) and brings a freshly provisioned node to
//! the wanted OS version before it joins the cluster, so it never receives workloads
//! on an old OS only to be drained and rebooted by the rollout.
//!
//! The wanted version comes from a local file (a bare version, or a YAML/JSON object
//! with `version`, `url`, `checksum`, `size`, `osVersionManagement`, `allowHttpImages`,
//! `kernelArguments`) or else from the cluster's active OSUpgrade ([`wanted`]: the image
//! and signed catalog a progress object of it carries, or its catalog, inline, by URL or
//! in a ConfigMap, read by [`cluster`]). The update itself is the normal executor on an
//! in-memory progress with `rebootApproved: true` (nothing runs on the node yet, so
//! nothing needs draining): the same backends, hooks, local state and checks — the image
//! source policy (`http://` only with the OSUpgrade's `allowHttpImages`), the signed
//! catalog under `--require-signed-catalog`, the kernel arguments — so a reboot in the
//! middle continues on the next boot. [`run_firstboot`] returns once that progress is
//! finished.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osroll_api::{
    OSUpgradeProgress, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase,
};

use crate::agent::{Agent, AgentConfig};
use crate::host::Host;
use crate::source::{ProgressSource, SourceError};

pub mod cluster;
pub mod wanted;

pub use cluster::{ClusterError, wanted_from_api};
pub use wanted::{Wanted, WantedError, parse_version_file};

/// Name of the in-memory progress (and of the tracked entry in the local state).
pub const PROGRESS_NAME: &str = "firstboot";

/// The in-memory progress that drives the executor: approved from the start.
pub fn firstboot_progress(node: &str, w: &Wanted) -> OSUpgradeProgress {
    OSUpgradeProgress::new(
        PROGRESS_NAME,
        OSUpgradeProgressSpec {
            node_name: node.to_string(),
            image: Some(w.image.clone()),
            reboot_approved: true,
            os_version_management: w.os_version_management.clone(),
            allow_http_images: w.allow_http_images,
            kernel_arguments: w.kernel_arguments.clone(),
            signed_catalog: w.signed_catalog.clone(),
            catalog_digest: w.catalog_digest.clone(),
            ..Default::default()
        },
    )
}

/// A [`ProgressSource`] holding the one first-boot progress in memory. The Node may not
/// exist yet, so labels are only logged (the regular agent sets them later).
pub struct MemorySource {
    progress: Mutex<OSUpgradeProgress>,
}

impl MemorySource {
    /// A source with `p`.
    pub fn new(p: OSUpgradeProgress) -> Self {
        MemorySource {
            progress: Mutex::new(p),
        }
    }

    /// The status written so far.
    pub fn status(&self) -> Option<OSUpgradeProgressStatus> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .clone()
    }
}

impl ProgressSource for Arc<MemorySource> {
    async fn list(&self) -> Result<Vec<OSUpgradeProgress>, SourceError> {
        Ok(vec![
            self.progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        ])
    }

    async fn patch_status(
        &self,
        name: &str,
        status: &OSUpgradeProgressStatus,
    ) -> Result<(), SourceError> {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if p.metadata.name.as_deref() != Some(name) {
            return Err(SourceError::NoSuchProgress(name.to_string()));
        }
        p.status = Some(status.clone());
        Ok(())
    }

    async fn label_node(&self, labels: &BTreeMap<String, String>) -> Result<(), SourceError> {
        tracing::debug!(
            ?labels,
            "first boot: node labels are left to the regular agent"
        );
        Ok(())
    }

    async fn changed(&self, timeout: Duration) -> () {
        // Nothing outside changes this progress; wake up only to re-check the host.
        tokio::time::sleep(timeout).await
    }
}

/// How the first-boot update ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FirstBootExit {
    /// The progress finished (Completed, Failed or RolledBack) with this status.
    Finished(Box<OSUpgradeProgressStatus>),
    /// A simulated host was asked to reboot (a real reboot ends the process).
    Rebooted,
}

/// Bring the node to `wanted`; on Completed, write `done_file` so the unit never runs
/// again.
pub async fn run_firstboot(
    cfg: AgentConfig,
    wanted: &Wanted,
    host: Arc<dyn Host>,
    done_file: &Path,
) -> anyhow::Result<FirstBootExit> {
    let source = Arc::new(MemorySource::new(firstboot_progress(
        &cfg.node_name,
        wanted,
    )));
    tracing::info!(version = %wanted.image.version, from = %wanted.origin, "first boot: bringing the node to the wanted version");
    let agent = Agent::new(cfg, source, host)?;
    let exit = agent.run_until_finished(PROGRESS_NAME).await?;
    if let FirstBootExit::Finished(st) = &exit
        && st.phase == Some(ProgressPhase::Completed)
    {
        if let Some(dir) = done_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let stamp = format!(
            "{}\n",
            st.current_version
                .as_deref()
                .unwrap_or(&wanted.image.version)
        );
        crate::fsutil::write_atomic(done_file, stamp.as_bytes())?;
    }
    Ok(exit)
}

#[cfg(test)]
mod tests;
