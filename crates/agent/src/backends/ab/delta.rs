//! The A/B backend's delta path: when the catalog entry names a chunk index, the new slot
//! is assembled from the running slot's chunks (only read) and the frames it lacks;
//! whatever makes the delta impossible falls back to the full install of the same pack,
//! with the reason in `status.delta`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use osroll_api::delta::{DeltaStatus, ImageIndex};
use osroll_api::policy::{Rewrite, check_image_url, rewrite};
use osroll_api::progress::FailureReason;

use super::{Ready, Staged, install};
use crate::delta::{DeltaError, DeltaInstaller, DeltaOptions, DeltaReport, DeltaSpec};
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

/// Install by delta; on a fallback, run `full` (sharing the same counters) instead.
pub(super) async fn run(
    delta: DeltaInstaller,
    full: Installer,
    paused: Arc<Mutex<Option<Installer>>>,
    slot: Slot,
) -> Result<Staged, StepError> {
    match delta.run().await {
        Ok(report) => Ok(Staged::Ready(ready(&report, slot))),
        Err(DeltaError::Fallback { reason, detail }) => {
            tracing::warn!(%reason, "delta install abandoned, installing in full: {detail}");
            let fetched = delta
                .counters()
                .fetched
                .load(std::sync::atomic::Ordering::Relaxed);
            let mut staged = install(full, paused, slot).await?;
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
        image = report.install.image_len,
        "image staged by delta"
    );
    Ready {
        reboot_required: true,
        current_version: None,
        bytes: Some(report.install.image_len),
        condition: "Verified",
        message: format!(
            "{} bytes written to slot {slot} by delta ({} fetched, {} reused from the running slot) and verified; waiting for reboot approval",
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
