//! The A/B image backend: stream the image into the slot the node did not boot from
//! ([`crate::install`]), arm a one-shot boot of that slot, and commit it as the default
//! once it came up running the target ([`crate::boot`] through the [`Host`]). Before the
//! try is armed the new slot gets the running slot's kernel arguments edited by
//! `spec.kernelArguments` ([`crate::boot::kargs`]). An image whose catalog entry names a
//! chunk index is installed by delta from the running slot ([`delta`]).

mod delta;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use osroll_api::policy::{Rewrite, check_image_url, rewrite};
use osroll_api::progress::FailureReason;
use osroll_api::upgrade::KernelArguments;
use osroll_api::{OSUpgradeProgressStatus, ProgressPhase};

use super::slot_record::{Reuse, SlotRecords};
use super::{
    Applied, Attempt, Backend, Begin, Confirmed, Ready, StageProgress, StageSnapshot, Staged,
    Staging,
};
use crate::boot::{BootControl, BootError, kargs};
use crate::failure::{Failure, StepError};
use crate::host::{Host, HostError, HostFacts, detect};
use crate::install::{Create, ImageSpec, InstallOptions, InstallPhase, Installer, Progress};
use crate::machine::select::Deleted;
use crate::machine::{Input, Step, ab, missing_image};
use crate::slot::Slot;
use crate::state::Tracked;

/// Writes A/B slots of a [`Host`].
pub struct SlotBackend {
    host: Arc<dyn Host>,
    install: InstallOptions,
    mirrors: Vec<Rewrite>,
    /// The host's mount table, read before a slot is written.
    mountinfo: PathBuf,
    /// An install whose download gave up on the network, kept so that a retry resumes
    /// at the same offset.
    paused: Arc<Mutex<Option<Installer>>>,
    /// What each slot held when the node left it (rollbacks reuse an intact old slot).
    records: Option<SlotRecords>,
}

impl SlotBackend {
    /// The slots of `host`, written with `install`, downloading through `mirrors`.
    pub fn new(host: Arc<dyn Host>, install: InstallOptions, mirrors: Vec<Rewrite>) -> Self {
        SlotBackend {
            host,
            install,
            mirrors,
            mountinfo: PathBuf::from("/proc/1/mountinfo"),
            paused: Arc::new(Mutex::new(None)),
            records: None,
        }
    }

    /// Keep slot records in `dir`, so a rollback to the version the other slot still
    /// holds re-arms it without downloading ([`SlotRecords`]).
    pub fn with_slot_records(mut self, dir: &Path) -> Self {
        self.records = Some(SlotRecords::in_dir(dir));
        self
    }

    /// Read the host's mount table from `path` (default `/proc/1/mountinfo`).
    pub fn with_mountinfo(mut self, path: &Path) -> Self {
        self.mountinfo = path.to_path_buf();
        self
    }

    /// The paused install of `spec` into `path` if it can resume, else a new one.
    fn installer(&self, spec: ImageSpec, path: &Path) -> Result<Installer, Failure> {
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner()).take();
        match paused {
            Some(p) if p.image() == &spec && p.target() == path && p.resumable() => {
                tracing::info!(
                    offset = p.progress().snapshot().downloaded,
                    "resuming the interrupted download"
                );
                Ok(p)
            }
            _ => Ok(Installer::new(
                spec,
                path,
                Create::No,
                self.install.clone(),
            )?),
        }
    }
}

/// Run `installer` to the end; a download that gave up on the network is kept in
/// `paused` for the next attempt.
async fn install(
    mut installer: Installer,
    paused: Arc<Mutex<Option<Installer>>>,
    slot: Slot,
) -> Result<Staged, StepError> {
    match installer.run().await {
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
            Ok(Staged::Ready(Ready {
                reboot_required: true,
                current_version: None,
                bytes: Some(report.downloaded),
                condition: "Verified",
                message: format!(
                    "{} bytes written to slot {slot} and verified; waiting for reboot approval",
                    report.image_len
                ),
                delta: None,
            }))
        }
        Err(e) => {
            if e.is_retryable() && installer.resumable() {
                *paused.lock().unwrap_or_else(|e| e.into_inner()) = Some(installer);
            }
            Err(e.into())
        }
    }
}

/// The slots a staging reads and writes, for the slot records.
struct Keep {
    records: SlotRecords,
    into: Slot,
    path: PathBuf,
    version: String,
    booted: Slot,
    booted_path: Option<PathBuf>,
    booted_version: Option<String>,
}

/// Stage the old slot as it is when it still holds the target exactly as recorded (a
/// rollback: nothing is downloaded); otherwise record the running slot and run `install`
/// (in full or by delta; the future does nothing until awaited).
async fn reuse_or(
    keep: Option<Keep>,
    slot: Slot,
    install: impl Future<Output = Result<Staged, StepError>>,
) -> Result<Staged, StepError> {
    let Some(k) = keep else {
        return install.await;
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let reuse = k.records.check(k.into, &k.path, &k.version);
        if matches!(reuse, Ok(Reuse::Intact(_))) {
            return reuse;
        }
        if let (Some(p), Some(v)) = (&k.booted_path, &k.booted_version)
            && let Err(e) = k.records.remember(k.booted, p, v)
        {
            tracing::warn!(slot = %k.booted, "could not record the running slot: {e}");
        }
        k.records
            .forget(k.into)
            .map(|()| reuse.unwrap_or(Reuse::NoRecord))
    })
    .await
    .map_err(|e| HostError::with("checking the slot records", e));
    match outcome {
        Ok(Ok(Reuse::Intact(rec))) => {
            tracing::info!(slot = %slot, version = %rec.version, "old slot intact; reused without download");
            return Ok(Staged::Ready(Ready {
                reboot_required: true,
                current_version: None,
                bytes: Some(0),
                condition: "Verified",
                message: format!(
                    "slot {slot} still holds {} as recorded ({}); armed again without download",
                    rec.version, rec.sha256
                ),
                delta: None,
            }));
        }
        Ok(Ok(Reuse::Changed { recorded, now })) => {
            tracing::warn!(slot = %slot, %recorded, %now, "slot changed since it was recorded; downloading");
        }
        Ok(Ok(Reuse::NoRecord)) => {}
        Ok(Err(e)) => tracing::warn!(slot = %slot, "slot records: {e}"),
        Err(e) => tracing::warn!(slot = %slot, "{e}"),
    }
    install.await
}

/// The installer's counters, as the status shows them.
struct SlotProgress {
    counters: Arc<Progress>,
    slot: Slot,
}

impl StageProgress for SlotProgress {
    fn snapshot(&self) -> StageSnapshot {
        let snap = self.counters.snapshot();
        let slot = self.slot;
        let (phase, message) = match snap.phase {
            InstallPhase::Downloading => (ProgressPhase::Downloading, "downloading".to_string()),
            InstallPhase::Writing => (
                ProgressPhase::Writing,
                format!("download complete; flushing slot {slot}"),
            ),
            InstallPhase::Verifying => (
                ProgressPhase::Verifying,
                format!("reading slot {slot} back"),
            ),
        };
        StageSnapshot {
            done: snap.downloaded,
            total: snap.total,
            phase,
            message,
        }
    }
}

impl Backend for SlotBackend {
    type Place = Slot;
    type Facts = HostFacts;

    fn kind(&self) -> &'static str {
        "A/B"
    }

    async fn observe(&self) -> Result<HostFacts, HostError> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.facts())
            .await
            .map_err(|e| HostError::with("inspecting the host", e))?
    }

    fn booted_slot(&self, facts: &HostFacts) -> Option<Slot> {
        Some(facts.booted_slot)
    }

    fn next_step(&self, input: &Input<'_, HostFacts>) -> Step<Slot> {
        ab::next_step(input)
    }

    fn on_deleted(&self, t: &Tracked, facts: &HostFacts) -> Deleted<Slot> {
        ab::on_deleted(&t.status, t.reboot_boot_id.as_deref(), facts)
    }

    async fn begin(&self, facts: &HostFacts, _prev: &OSUpgradeProgressStatus) -> Begin {
        Begin {
            current_version: facts.os_version.clone(),
            inactive_partition: Some(facts.booted_slot.other()),
            reboot_required: Some(true),
            message: None,
        }
    }

    async fn stage(
        &self,
        attempt: &Attempt,
        into: Slot,
        facts: &HostFacts,
    ) -> Result<Staging, StepError> {
        if into == facts.booted_slot {
            return Err(StepError::Retry(anyhow::anyhow!(
                "refusing to write slot {into}: the node is running from it"
            )));
        }
        let img = attempt.image.as_ref().ok_or_else(missing_image)?;
        // Arguments the slot's boot variable cannot carry fail before the download.
        slot_kargs("", attempt.kernel_arguments.as_ref())?;
        let path = self
            .host
            .slot_path(into)
            .map_err(|e| Failure::new(FailureReason::SlotUnavailable, e.to_string()))?;
        ensure_unmounted(&path, &self.mountinfo)?;
        // The controller checked the catalog's URL already; a progress edited by hand
        // (or written by an older controller) is held to the same rule here.
        check_image_url(&img.url, attempt.allow_http_images).map_err(|v| {
            Failure::new(
                FailureReason::ImageSourceNotAllowed,
                format!("spec.image.url {:?}: {}", v.url, v.why),
            )
        })?;
        let url = rewrite(&img.url, &self.mirrors);
        if url != img.url {
            tracing::info!(catalog_url = %img.url, mirror_url = %url, "fetching from a mirror");
        }
        let spec = ImageSpec::new(&url, &img.checksum, img.size)?;
        let installer = self.installer(spec.clone(), &path)?;
        let keep = self.records.as_ref().map(|records| Keep {
            records: records.clone(),
            into,
            path: path.clone(),
            version: img.version.clone(),
            booted: facts.booted_slot,
            booted_path: self.host.slot_path(facts.booted_slot).ok(),
            booted_version: facts.os_version.clone(),
        });
        if let Some(index) = &img.chunk_index {
            let seed = self
                .host
                .slot_path(facts.booted_slot)
                .map_err(|e| Failure::new(FailureReason::SlotUnavailable, e.to_string()))?;
            let by_delta = delta::installer(
                spec,
                index,
                &seed,
                &path,
                &self.install,
                &self.mirrors,
                attempt.allow_http_images,
            )?;
            let installer = installer.share_progress(by_delta.progress());
            let indexes = self.records.as_ref().map(|records| delta::Indexes {
                records: records.clone(),
                seed: facts.booted_slot,
                seed_version: facts.os_version.clone(),
                into,
                version: img.version.clone(),
            });
            return Ok(Staging {
                message: format!(
                    "installing {} into slot {into} ({}) by delta from slot {}",
                    img.url,
                    path.display(),
                    facts.booted_slot
                ),
                progress: Some(Box::new(SlotProgress {
                    counters: by_delta.progress(),
                    slot: into,
                })),
                run: Box::pin(reuse_or(
                    keep,
                    into,
                    delta::run(by_delta, installer, self.paused.clone(), into, indexes),
                )),
            });
        }
        Ok(Staging {
            message: format!(
                "downloading {} into slot {into} ({})",
                img.url,
                path.display()
            ),
            progress: Some(Box::new(SlotProgress {
                counters: installer.progress(),
                slot: into,
            })),
            run: Box::pin(reuse_or(
                keep,
                into,
                install(installer, self.paused.clone(), into),
            )),
        })
    }

    fn applying(&self, _attempt: &Attempt) -> Option<String> {
        None
    }

    async fn apply(&self, attempt: &Attempt, to: Slot) -> Result<Applied, StepError> {
        let boot = self.host.boot_control();
        let args = set_slot_kargs(boot, attempt.kernel_arguments.as_ref(), to)?;
        tracing::info!(slot = %to, kernel_arguments = %args, "slot kernel arguments set");
        // The switch is the armed boot: a reboot always finishes it.
        Ok(Applied {
            reboot_required: true,
            current_version: None,
            message: String::new(),
            stale: vec![],
        })
    }

    async fn arm(&self, to: Slot) -> Result<String, StepError> {
        self.host
            .boot_control()
            .arm_try(to)
            .map_err(|e| Failure::new(FailureReason::BootControlError, e.to_string()))?;
        Ok(format!("boot of slot {to} armed once; rebooting"))
    }

    async fn disarm(&self) -> Result<String, HostError> {
        self.host.boot_control().disarm()?;
        Ok("reboot approval withdrawn before the reboot; try disarmed".into())
    }

    async fn confirm(
        &self,
        _attempt: &Attempt,
        on: Slot,
        facts: &HostFacts,
    ) -> Result<Confirmed, StepError> {
        self.keep(on).await?;
        let v = facts.os_version.clone().unwrap_or_default();
        Ok(Confirmed::OnTarget {
            version: facts.os_version.clone(),
            message: format!("booted slot {on} running {v}; slot {on} committed as the default"),
        })
    }

    async fn keep(&self, on: Slot) -> Result<(), HostError> {
        Ok(self.host.boot_control().commit(on)?)
    }
}

/// Refuse to write the block device at `slot` while the host has it mounted (a slot
/// that is a regular file, as on a simulated host, cannot be).
fn ensure_unmounted(slot: &Path, mountinfo: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::FileTypeExt;
    let block = std::fs::metadata(slot).is_ok_and(|m| m.file_type().is_block_device());
    if !block {
        return Ok(());
    }
    let table = std::fs::read_to_string(mountinfo).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "reading the mount table {} to check that {} is not mounted",
            mountinfo.display(),
            slot.display()
        ))
    })?;
    detect::ensure_not_mounted(slot, &table)
        .map_err(|m| Failure::new(FailureReason::SlotMounted, m.to_string()))?;
    Ok(())
}

/// The arguments of a slot whose predecessor had `current`, after `change`.
fn slot_kargs(current: &str, change: Option<&KernelArguments>) -> Result<String, Failure> {
    let (add, remove) = change.map_or((&[][..], &[][..]), |k| (&k.add[..], &k.remove[..]));
    kargs::edit(current, add, remove).map_err(|e| {
        Failure::new(
            FailureReason::InvalidSpec,
            format!("spec.kernelArguments: {e}"),
        )
    })
}

/// Give slot `to` the running slot's kernel arguments edited by `change` (written only
/// when they differ); returns them.
fn set_slot_kargs(
    boot: &dyn BootControl,
    change: Option<&KernelArguments>,
    to: Slot,
) -> Result<String, Failure> {
    let boot_err = |e: BootError| Failure::new(FailureReason::BootControlError, e.to_string());
    let next = slot_kargs(&boot.slot_cmdline(to.other()).map_err(boot_err)?, change)?;
    if boot.slot_cmdline(to).map_err(boot_err)? != next {
        boot.set_slot_cmdline(to, &next).map_err(boot_err)?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::grubenv::GrubBoot;

    fn change(add: &[&str], remove: &[&str]) -> KernelArguments {
        KernelArguments {
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn slot_arguments_carry_over_to_later_images_and_stay_per_slot() {
        let dir = tempfile::tempdir().unwrap();
        let boot = GrubBoot::new(dir.path().join("grubenv"));
        boot.set_slot_cmdline(Slot::A, "quiet").unwrap();
        // A -> B with a change.
        let k = change(&["nosmt"], &["quiet"]);
        assert_eq!(set_slot_kargs(&boot, Some(&k), Slot::B).unwrap(), "nosmt");
        assert_eq!(boot.slot_cmdline(Slot::A).unwrap(), "quiet", "A kept");
        // B -> A without kernelArguments: A gets B's, so nosmt stays.
        assert_eq!(set_slot_kargs(&boot, None, Slot::A).unwrap(), "nosmt");
        assert_eq!(boot.slot_cmdline(Slot::A).unwrap(), "nosmt");
        // Removing everything unsets the variable.
        let k = change(&[], &["nosmt"]);
        assert_eq!(set_slot_kargs(&boot, Some(&k), Slot::B).unwrap(), "");
        assert!(boot.load().unwrap().get("osroll_cmdline_B").is_none());
    }
}
