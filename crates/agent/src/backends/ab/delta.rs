//! The A/B backend's delta path: when the catalog entry names a chunk index, the new slot
//! is assembled from the running slot's chunks (only read) and the frames it lacks;
//! whatever makes the delta impossible falls back to the full install of the same pack,
//! with the reason in `status.delta`. The index of what was written is recorded for the
//! slot, and the running slot's recorded index, when its record vouches for it, stands
//! in for chunking the running slot ([`SlotRecords::seed_index`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use osroll_api::delta::{DeltaStatus, ImageIndex};
use osroll_api::policy::{Rewrite, check_image_url, rewrite};
use osroll_api::progress::FailureReason;

use super::{Ready, Staged, install};
use crate::backends::slot_record::SlotRecords;
use crate::delta::{ChunkIndex, DeltaError, DeltaInstaller, DeltaOptions, DeltaReport, DeltaSpec};
use crate::failure::{Failure, StepError};
use crate::install::{Create, ImageSpec, InstallOptions, Installer, http};
use crate::slot::Slot;

/// The delta installer of `pack` into `target`, seeded from `seed` (the running slot).
pub(super) fn installer(
    pack: ImageSpec,
    index: &ImageIndex,
    seed: &Path,
    target: &Path,
    opts: &InstallOptions,
    mirrors: &[Rewrite],
    allow_http: bool,
) -> Result<DeltaInstaller, Failure> {
    check_image_url(&index.url, allow_http).map_err(|v| {
        Failure::new(
            FailureReason::ImageSourceNotAllowed,
            format!("spec.image.chunkIndex.url {:?}: {}", v.url, v.why),
        )
    })?;
    let spec = DeltaSpec {
        pack,
        index_url: rewrite(&index.url, mirrors),
        index_sha256: http::parse_checksum(&index.checksum).map_err(|e| {
            Failure::new(
                FailureReason::InvalidSpec,
                format!("spec.image.chunkIndex.checksum: {e}"),
            )
        })?,
        seed: seed.to_path_buf(),
    };
    let opts = DeltaOptions {
        install: opts.clone(),
        ..DeltaOptions::default()
    };
    Ok(DeltaInstaller::new(spec, target, Create::No, opts)?)
}

/// The slots' recorded indexes a delta install reads (the seed's) and writes (the
/// target's).
#[derive(Clone, Debug)]
pub(super) struct Indexes {
    /// Where they are kept.
    pub records: SlotRecords,
    /// The running slot (the seed) and the version it runs.
    pub seed: Slot,
    /// `None`: unknown, so no recorded index is used.
    pub seed_version: Option<String>,
    /// The slot written and the version written to it.
    pub into: Slot,
    /// The version being installed.
    pub version: String,
}

impl Indexes {
    /// The running slot's recorded index, if its record vouches for it.
    async fn seed_index(&self) -> Option<ChunkIndex> {
        let me = self.clone();
        let version = me.seed_version.clone()?;
        tokio::task::spawn_blocking(move || me.records.seed_index(me.seed, &version))
            .await
            .ok()
            .flatten()
    }

    /// Record `index` as what the target slot now holds (a failure only costs the next
    /// delta a scan of the slot).
    async fn record(&self, index: Option<Arc<ChunkIndex>>) {
        let Some(index) = index else { return };
        let me = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            me.records.remember_index(me.into, &me.version, &index)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(slot = %self.into, "could not record the slot's chunk index: {e}")
            }
            Err(e) => {
                tracing::warn!(slot = %self.into, "could not record the slot's chunk index: {e}")
            }
        }
    }
}

/// Install by delta; on a fallback, run `full` (sharing the same counters) instead.
pub(super) async fn run(
    delta: DeltaInstaller,
    full: Installer,
    paused: Arc<Mutex<Option<Installer>>>,
    slot: Slot,
    indexes: Option<Indexes>,
) -> Result<Staged, StepError> {
    let seed_index = match &indexes {
        Some(ix) => ix.seed_index().await,
        None => None,
    };
    let result = match &seed_index {
        Some(seed) => delta.run_with_seed_index(seed).await,
        None => delta.run().await,
    };
    match result {
        Ok(report) => {
            if let Some(ix) = &indexes {
                ix.record(delta.index()).await;
            }
            Ok(Staged::Ready(ready(&report, slot)))
        }
        Err(DeltaError::Fallback { reason, detail }) => {
            tracing::warn!(%reason, "delta install abandoned, installing in full: {detail}");
            let fetched = delta
                .counters()
                .fetched
                .load(std::sync::atomic::Ordering::Relaxed);
            let mut staged = install(full, paused, slot).await?;
            if let Some(ix) = &indexes {
                ix.record(delta.index()).await;
            }
            if let Staged::Ready(r) = &mut staged {
                r.delta = Some(DeltaStatus {
                    bytes_fetched: fetched,
                    bytes_reused: 0,
                    fallback_reason: Some(reason),
                    fallback_message: Some(detail),
                });
            }
            Ok(staged)
        }
        Err(DeltaError::Install(e)) => Err(e.into()),
    }
}

fn ready(report: &DeltaReport, slot: Slot) -> Ready {
    tracing::info!(
        fetched = report.fetched,
        index = report.index_bytes,
        reused = report.reused,
        requests = report.requests,
        refetched = report.refetched,
        seed_indexed = report.seed_indexed,
        image = report.install.image_len,
        "image staged by delta"
    );
    let seed = if report.seed_indexed {
        "the running slot, its chunks known from its recorded index"
    } else {
        "the running slot"
    };
    Ready {
        reboot_required: true,
        current_version: None,
        bytes: Some(report.install.image_len),
        condition: "Verified",
        message: format!(
            "{} bytes written to slot {slot} by delta ({} fetched, {} reused from {seed}) and verified; waiting for reboot approval",
            report.install.image_len,
            report.fetched + report.index_bytes,
            report.reused
        ),
        delta: Some(DeltaStatus {
            bytes_fetched: report.fetched + report.index_bytes,
            bytes_reused: report.reused,
            fallback_reason: None,
            fallback_message: None,
        }),
    }
}
