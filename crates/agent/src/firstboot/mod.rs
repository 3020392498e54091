//! First boot: `osroll agent --firstboot` runs from a systemd unit ordered before the
//! kubelet (`deploy/osroll-firstboot.service`) and brings a freshly provisioned node to
//! the wanted OS version before it joins the cluster, so it never receives workloads
//! on an old OS only to be drained and rebooted by the rollout.
//!
//! The wanted version comes from a local file (a bare version, or a YAML/JSON object
//! with `version`, `url`, `checksum`, `size`, `osVersionManagement`) or else from the
//! cluster's active OSUpgrade (the image a progress object of it carries, or its inline
//! catalog). The update itself is the normal executor on an in-memory progress with
//! `rebootApproved: true` (nothing runs on the node yet, so nothing needs draining):
//! the same backends, hooks and local state, so a reboot in the middle continues on the
//! next boot. [`run_firstboot`] returns once that progress is finished.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osroll_api::{
    Catalog, ImageRef, OSUpgrade, OSUpgradeProgress, OSUpgradeProgressSpec,
    OSUpgradeProgressStatus, ProgressPhase, UpgradePhase, labels,
};
use serde::Deserialize;

use crate::agent::{Agent, AgentConfig};
use crate::host::Host;
use crate::source::{ProgressSource, SourceError};

/// Name of the in-memory progress (and of the tracked entry in the local state).
pub const PROGRESS_NAME: &str = "firstboot";

/// What the node should run, and where that was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// The image (for deployment backends only the version may be meaningful).
    pub image: ImageRef,
    /// Handed to an OS plugin or the OSTree backend.
    pub os_version_management: Option<serde_json::Value>,
    /// For messages: the file, or `OSUpgrade <name>`.
    pub origin: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionFile {
    version: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    checksum: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    os_version_management: Option<serde_json::Value>,
}

/// Why the wanted version cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum WantedError {
    /// The version file is empty.
    #[error("{origin} is empty")]
    Empty {
        /// The file.
        origin: String,
    },
    /// The version file is not a version nor a YAML/JSON object of the known fields.
    #[error("{origin}: {source}")]
    Unreadable {
        /// The file.
        origin: String,
        /// What the parser said.
        source: serde_yaml::Error,
    },
    /// The version is not a version.
    #[error("{origin}: version: {source}")]
    Version {
        /// The file or OSUpgrade.
        origin: String,
        /// Why.
        source: osroll_api::version::VersionError,
    },
    /// No OSUpgrade to follow.
    #[error("the cluster has no active OSUpgrade with a resolved version")]
    NoActiveUpgrade,
    /// The OSUpgrade's image is nowhere to be read.
    #[error("{origin}: no progress object carries {version} and the catalog is not inline")]
    NoImage {
        /// The OSUpgrade.
        origin: String,
        /// Its resolved version.
        version: String,
    },
    /// The OSUpgrade's inline catalog does not give the image.
    #[error("{origin}: {}", source.message)]
    Catalog {
        /// The OSUpgrade.
        origin: String,
        /// Why.
        source: osroll_api::Rejection,
    },
}

/// Parse the local version file: one line with a version, or a YAML/JSON object.
pub fn parse_version_file(text: &str, origin: &str) -> Result<Wanted, WantedError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(WantedError::Empty {
            origin: origin.to_string(),
        });
    }
    let f: VersionFile = if !trimmed.contains(':') && !trimmed.contains('\n') {
        VersionFile {
            version: trimmed.to_string(),
            url: String::new(),
            checksum: String::new(),
            size: None,
            os_version_management: None,
        }
    } else {
        serde_yaml::from_str(trimmed).map_err(|source| WantedError::Unreadable {
            origin: origin.to_string(),
            source,
        })?
    };
    f.version
        .parse::<osroll_api::Version>()
        .map_err(|source| WantedError::Version {
            origin: origin.to_string(),
            source,
        })?;
    Ok(Wanted {
        image: ImageRef {
            version: f.version,
            url: f.url,
            checksum: f.checksum,
            size: f.size,
        },
        os_version_management: f.os_version_management,
        origin: origin.to_string(),
    })
}

/// The cluster's active OSUpgrade (the newest that is not rejected, failed or being
/// deleted, and has resolved a version) and the image it resolved: from one of its
/// progress objects, else from its inline catalog.
pub fn wanted_from_cluster(
    upgrades: &[OSUpgrade],
    progresses: &[OSUpgradeProgress],
) -> Result<Wanted, WantedError> {
    let mut active: Vec<&OSUpgrade> = upgrades
        .iter()
        .filter(|u| u.metadata.deletion_timestamp.is_none())
        .filter(|u| {
            u.status.as_ref().is_some_and(|s| {
                s.resolved_version.is_some()
                    && !matches!(s.phase, Some(UpgradePhase::Rejected | UpgradePhase::Failed))
            })
        })
        .collect();
    active.sort_by_key(|u| {
        (
            u.metadata.creation_timestamp.clone().map(|t| t.0),
            u.metadata.name.clone(),
        )
    });
    let up = active.last().ok_or(WantedError::NoActiveUpgrade)?;
    let name = up.metadata.name.clone().unwrap_or_default();
    let version = up
        .status
        .as_ref()
        .and_then(|s| s.resolved_version.clone())
        .unwrap_or_default();
    let origin = format!("OSUpgrade {name}");
    let from_progress = progresses
        .iter()
        .filter(|p| p.spec.source_ref.as_ref().is_some_and(|s| s.name == name))
        .filter_map(|p| p.spec.image.clone())
        .find(|i| i.version == version);
    let image = match from_progress {
        Some(i) => i,
        None => {
            let inline = up
                .spec
                .catalog
                .inline
                .as_deref()
                .ok_or_else(|| WantedError::NoImage {
                    origin: origin.clone(),
                    version: version.clone(),
                })?;
            let catalog = |source| WantedError::Catalog {
                origin: origin.clone(),
                source,
            };
            let cat = Catalog::parse(inline).map_err(catalog)?;
            cat.resolve(&version, &[], true).map_err(catalog)?.image
        }
    };
    Ok(Wanted {
        image,
        os_version_management: up.spec.os_version_management.clone(),
        origin,
    })
}

/// The in-memory progress that drives the executor: approved from the start.
pub fn firstboot_progress(node: &str, w: &Wanted) -> OSUpgradeProgress {
    let mut p = OSUpgradeProgress::new(
        PROGRESS_NAME,
        OSUpgradeProgressSpec {
            node_name: node.to_string(),
            image: Some(w.image.clone()),
            reboot_approved: true,
            os_version_management: w.os_version_management.clone(),
            allow_http_images: true,
            ..Default::default()
        },
    );
    p.metadata.labels = Some(BTreeMap::from([(labels::NODE.to_string(), node.into())]));
    p
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
