//! A simulated node: a directory that stands in for the disks and firmware of a machine,
//! so tests, the test cluster and the demo can run the real agent code without root.
//!
//! Layout of the directory:
//!
//! | file | meaning |
//! |---|---|
//! | `slot-A.img`, `slot-B.img` | the two root partitions, fixed-size files |
//! | `grubenv` | the boot environment, in GRUB's native format ([`crate::boot::grubenv`]) |
//! | `booted` | the slot the running "kernel" came from (`A` or `B`) |
//! | `boot-count` | number of boots so far; the boot id is `sim-boot-<n>` |
//! | `fail-next-boot-A`, `fail-next-boot-B` | knobs: the next boot of that slot fails |
//! | `reboot-requested` | present after the agent asked for a reboot, until [`SimHost::boot`] |
//! | `cmdline` | the booted "kernel"'s command line, built as the shipped GRUB script builds it |
//! | `run/` | the node's `/run`, a tmpfs: emptied by every boot (the sentinel file lives here) |
//! | `reboot-required-persists` | knob: every boot writes the sentinel file again (an updater whose update never takes) |
//!
//! The OS version a slot reports is the one in the header of the image written to it
//! (see [`image_bytes`]): a slot holding garbage, or an image cut short, has no version
//! and does not boot, exactly as a corrupt root filesystem would not.
//!
//! **Rebooting.** When the agent reboots a `SimHost`, [`Host::reboot`] only records the
//! request and the agent loop returns [`crate::AgentExit::Rebooted`] (the `osroll agent`
//! process exits with status 0). A harness that simulates the node then calls
//! [`SimHost::boot`] — what firmware and bootloader do at power-on: consume an armed
//! one-shot try, boot that slot unless it is marked to fail (or holds no bootable image),
//! otherwise fall back to the default slot — and starts the agent again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::boot::BootControl;
use crate::boot::grubenv::GrubBoot;
use crate::fsutil::write_atomic;
use crate::host::{Host, HostError, HostFacts, RebootKind};
use crate::slot::Slot;

/// First line of a simulated OS image.
pub const IMAGE_MAGIC: &[u8] = b"OSROLL-SIM-IMAGE\n";

/// A simulated OS image of exactly `size` bytes (at least the header's length) that
/// reports `version` when booted. The body is deterministic per version and compresses
/// about 2:1 with zstd, so compression, corruption and resume tests see realistic data.
pub fn image_bytes(version: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(IMAGE_MAGIC);
    out.extend_from_slice(format!("version={version}\n").as_bytes());
    let mut seed = version.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let text = b"osroll simulated root filesystem block ";
    let mut block = 0u64;
    while out.len() < size {
        // Alternate 512 bytes of pseudo-random data with 512 bytes of text.
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        let line = format!("{block:016x} {}", String::from_utf8_lossy(text));
        out.extend(line.bytes().cycle().take(512));
        block += 1;
    }
    out.truncate(size);
    out
}

/// The version in a simulated image's header, if the bytes start with one.
pub fn image_version(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(IMAGE_MAGIC)?;
    let rest = rest.strip_prefix(b"version=")?;
    let end = rest.iter().take(256).position(|&b| b == b'\n')?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty()).then(|| v.to_string())
}

/// What [`SimHost::boot`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOutcome {
    /// The slot now running.
    pub slot: Slot,
    /// The one-shot try that was armed (and consumed), if any.
    pub tried: Option<Slot>,
    /// Whether the firmware had to fall back to the default slot.
    pub fell_back: bool,
    /// The version the booted slot reports.
    pub version: Option<String>,
}

/// A simulated node in a directory.
#[derive(Clone, Debug)]
pub struct SimHost {
    dir: PathBuf,
    boot: GrubBoot,
}

fn other_err(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl SimHost {
    /// Create a node in `dir` (created if missing) with two slots of `slot_size` bytes,
    /// slot A holding an image of `version`, slot B empty, booted from A once.
    pub fn create(dir: &Path, slot_size: u64, version: &str) -> io::Result<SimHost> {
        fs::create_dir_all(dir)?;
        let host = SimHost {
            dir: dir.to_path_buf(),
            boot: GrubBoot::new(dir.join("grubenv")),
        };
        let image = image_bytes(version, (64 * 1024).min(slot_size as usize));
        for slot in Slot::ALL {
            let f = fs::File::create(host.slot_file(slot))?;
            f.set_len(slot_size)?;
            if slot == Slot::A {
                use std::os::unix::fs::FileExt;
                f.write_all_at(&image, 0)?;
            }
            f.sync_all()?;
        }
        host.boot
            .commit(Slot::A)
            .map_err(|e| other_err(e.to_string()))?;
        write_atomic(&dir.join("booted"), b"A\n")?;
        write_atomic(&dir.join("boot-count"), b"1\n")?;
        Ok(host)
    }

    /// Open a node created earlier by [`SimHost::create`].
    pub fn open(dir: &Path) -> io::Result<SimHost> {
        let host = SimHost {
            dir: dir.to_path_buf(),
            boot: GrubBoot::new(dir.join("grubenv")),
        };
        host.booted_slot()?;
        Ok(host)
    }

    /// The reboot-needed sentinel file of the simulated node in `dir`: kured's
    /// `/var/run/reboot-required`, under the node's `run/`.
    pub fn sentinel_in(dir: &Path) -> PathBuf {
        dir.join("run").join("reboot-required")
    }

    /// This node's sentinel file ([`SimHost::sentinel_in`]).
    pub fn sentinel(&self) -> PathBuf {
        Self::sentinel_in(&self.dir)
    }

    /// What a package manager does after an update that needs a reboot: write the
    /// sentinel file. With `persists`, every boot writes it again, as an updater whose
    /// update never takes would.
    pub fn need_reboot(&self, persists: bool) -> io::Result<()> {
        fs::create_dir_all(self.dir.join("run"))?;
        write_atomic(&self.sentinel(), b"*** System restart required ***\n")?;
        if persists {
            write_atomic(&self.dir.join("reboot-required-persists"), b"1\n")?;
        }
        Ok(())
    }

    /// Empty `run/` as a reboot empties a tmpfs, then let the persisting updater (if
    /// any) write its sentinel again.
    fn clear_run(&self) -> io::Result<()> {
        match fs::remove_dir_all(self.dir.join("run")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(self.dir.join("run"))?;
        if self.dir.join("reboot-required-persists").exists() {
            write_atomic(&self.sentinel(), b"*** System restart required ***\n")?;
        }
        Ok(())
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file backing `slot`.
    pub fn slot_file(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("slot-{slot}.img"))
    }

    /// The slot the node runs.
    pub fn booted_slot(&self) -> io::Result<Slot> {
        let s = fs::read_to_string(self.dir.join("booted"))?;
        s.parse()
            .map_err(|e| other_err(format!("{}: {e}", self.dir.join("booted").display())))
    }

    /// Number of boots so far.
    pub fn boot_count(&self) -> io::Result<u64> {
        let s = fs::read_to_string(self.dir.join("boot-count"))?;
        s.trim()
            .parse()
            .map_err(|e| other_err(format!("{}: {e}", self.dir.join("boot-count").display())))
    }

    /// The version the image in `slot` would report if booted.
    pub fn slot_version(&self, slot: Slot) -> io::Result<Option<String>> {
        use std::io::Read;
        let mut head = Vec::with_capacity(512);
        fs::File::open(self.slot_file(slot))?
            .take(512)
            .read_to_end(&mut head)?;
        Ok(image_version(&head))
    }

    /// Make the next boot of `slot` fail (as a kernel panic or a hung boot would), so the
    /// firmware falls back to the default slot. The knob is consumed by that boot.
    pub fn fail_next_boot(&self, slot: Slot) -> io::Result<()> {
        write_atomic(&self.knob(slot), b"1\n")
    }

    fn knob(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("fail-next-boot-{slot}"))
    }

    /// Whether the agent asked for a reboot that has not happened yet.
    pub fn reboot_requested(&self) -> bool {
        self.dir.join("reboot-requested").exists()
    }

    /// The bootloader environment of this node.
    pub fn boot_env(&self) -> &GrubBoot {
        &self.boot
    }

    /// Power the node on (see the module doc): consume the one-shot try, boot it unless it
    /// fails, otherwise boot the default slot.
    pub fn boot(&self) -> io::Result<BootOutcome> {
        let state = self.boot.read().map_err(|e| other_err(e.to_string()))?;
        let default = state.default.unwrap_or(Slot::A);
        if state.try_next.is_some() {
            // The boot script clears the one-shot before it starts the kernel.
            self.boot.disarm().map_err(|e| other_err(e.to_string()))?;
        }
        let candidate = state.try_next.unwrap_or(default);
        let (slot, fell_back) = if self.boots(candidate)? {
            (candidate, false)
        } else if candidate != default && self.boots(default)? {
            (default, true)
        } else {
            return Err(other_err(format!(
                "simulated node {}: default slot {default} does not boot",
                self.dir.display()
            )));
        };
        write_atomic(&self.dir.join("booted"), format!("{slot}\n").as_bytes())?;
        write_atomic(
            &self.dir.join("cmdline"),
            self.cmdline_for(slot)?.as_bytes(),
        )?;
        let n = self.boot_count()? + 1;
        write_atomic(&self.dir.join("boot-count"), format!("{n}\n").as_bytes())?;
        self.clear_run()?;
        match fs::remove_file(self.dir.join("reboot-requested")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(BootOutcome {
            slot,
            tried: state.try_next,
            fell_back,
            version: self.slot_version(slot)?,
        })
    }

    /// The kernel command line the shipped GRUB script gives `slot`:
    /// `root=PARTLABEL=osroll-<a|b> osroll.slot=<slot> $osroll_cmdline $osroll_cmdline_<slot>`.
    pub fn cmdline_for(&self, slot: Slot) -> io::Result<String> {
        let env = self.boot.load().map_err(|e| other_err(e.to_string()))?;
        let var = |n: &str| env.get(n).unwrap_or_default().to_string();
        let parts = [
            format!("root=PARTLABEL=osroll-{}", slot.as_str().to_lowercase()),
            format!("osroll.slot={slot}"),
            var("osroll_cmdline"),
            var(&crate::boot::slot_cmdline_var(slot)),
        ];
        Ok(parts
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// Whether `slot` boots now; consumes its fail knob if set.
    fn boots(&self, slot: Slot) -> io::Result<bool> {
        match fs::remove_file(self.knob(slot)) {
            Ok(()) => return Ok(false),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        Ok(self.slot_version(slot)?.is_some())
    }
}

impl Host for SimHost {
    fn kernel_command_line(&self) -> Option<String> {
        match fs::read_to_string(self.dir.join("cmdline")) {
            Ok(c) => Some(c),
            // Created before the first simulated boot: what the firmware would boot.
            Err(_) => self.cmdline_for(self.booted_slot().ok()?).ok(),
        }
    }

    fn facts(&self) -> Result<HostFacts, HostError> {
        let ctx = |what: &str| format!("simulated node {}: reading {what}", self.dir.display());
        let booted_slot = self
            .booted_slot()
            .map_err(|e| HostError::with(ctx("booted"), e))?;
        let os_version = self
            .slot_version(booted_slot)
            .map_err(|e| HostError::with(ctx("booted slot"), e))?;
        let boot_id = format!(
            "sim-boot-{}",
            self.boot_count()
                .map_err(|e| HostError::with(ctx("boot-count"), e))?
        );
        Ok(HostFacts {
            booted_slot,
            os_version,
            boot_id,
        })
    }

    fn slot_path(&self, slot: Slot) -> Result<PathBuf, HostError> {
        Ok(self.slot_file(slot))
    }

    fn boot_control(&self) -> &dyn BootControl {
        &self.boot
    }

    fn reboot(&self) -> Result<RebootKind, HostError> {
        write_atomic(&self.dir.join("reboot-requested"), b"1\n")
            .map_err(|e| HostError::with("simulated reboot", e))?;
        Ok(RebootKind::Simulated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_carry_their_version_and_differ_per_version() {
        let a = image_bytes("v1.0.0", 10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(image_version(&a).as_deref(), Some("v1.0.0"));
        assert_ne!(a[100..], image_bytes("v2.0.0", 10_000)[100..]);
        assert_eq!(a, image_bytes("v1.0.0", 10_000));
        assert_eq!(image_version(&a[1..]), None);
        assert_eq!(image_version(&[0; 100]), None);
    }

    fn write_slot(h: &SimHost, slot: Slot, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        fs::OpenOptions::new()
            .write(true)
            .open(h.slot_file(slot))
            .unwrap()
            .write_all_at(bytes, 0)
            .unwrap();
    }

    #[test]
    fn create_boots_a() {
        let dir = tempfile::tempdir().unwrap();
        let h = SimHost::create(dir.path(), 1 << 20, "v1").unwrap();
        let f = h.facts().unwrap();
        assert_eq!(
            f,
            HostFacts {
                booted_slot: Slot::A,
                os_version: Some("v1".into()),
                boot_id: "sim-boot-1".into()
            }
        );
        assert_eq!(fs::metadata(h.slot_file(Slot::B)).unwrap().len(), 1 << 20);
        assert_eq!(h.slot_version(Slot::B).unwrap(), None);
        let h2 = SimHost::open(dir.path()).unwrap();
        assert_eq!(h2.booted_slot().unwrap(), Slot::A);
    }

    #[test]
    fn a_boot_empties_run_and_a_persisting_updater_writes_its_sentinel_again() {
        let dir = tempfile::tempdir().unwrap();
        let h = SimHost::create(dir.path(), 128 * 1024, "1.0").unwrap();
        h.need_reboot(false).unwrap();
        assert!(h.sentinel().exists());
        h.reboot().unwrap();
        h.boot().unwrap();
        assert!(!h.sentinel().exists(), "/run is a tmpfs");
        h.need_reboot(true).unwrap();
        h.reboot().unwrap();
        h.boot().unwrap();
        assert!(
            h.sentinel().exists(),
            "the updater asks again at every boot"
        );
    }

    #[test]
    fn armed_try_boots_once_then_default_again() {
        let dir = tempfile::tempdir().unwrap();
        let h = SimHost::create(dir.path(), 1 << 20, "v1").unwrap();
        write_slot(&h, Slot::B, &image_bytes("v2", 4096));
        h.boot_control().arm_try(Slot::B).unwrap();
        h.reboot().unwrap();
        assert!(h.reboot_requested());
        let out = h.boot().unwrap();
        assert_eq!(
            out,
            BootOutcome {
                slot: Slot::B,
                tried: Some(Slot::B),
                fell_back: false,
                version: Some("v2".into())
            }
        );
        assert!(!h.reboot_requested());
        assert_eq!(h.facts().unwrap().boot_id, "sim-boot-2");
        // Not committed: the next boot returns to A.
        assert_eq!(h.boot().unwrap().slot, Slot::A);
        h.boot_control().commit(Slot::B).unwrap();
        assert_eq!(h.boot().unwrap().slot, Slot::B);
    }

    #[test]
    fn failing_try_falls_back_and_the_knob_is_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let h = SimHost::create(dir.path(), 1 << 20, "v1").unwrap();
        write_slot(&h, Slot::B, &image_bytes("v2", 4096));
        h.fail_next_boot(Slot::B).unwrap();
        h.boot_control().arm_try(Slot::B).unwrap();
        let out = h.boot().unwrap();
        assert_eq!(
            (out.slot, out.tried, out.fell_back),
            (Slot::A, Some(Slot::B), true)
        );
        assert_eq!(h.boot_control().read().unwrap().try_next, None);
        h.boot_control().arm_try(Slot::B).unwrap();
        assert_eq!(
            h.boot().unwrap().slot,
            Slot::B,
            "knob applies to one boot only"
        );
    }

    #[test]
    fn garbage_slot_does_not_boot_and_a_dead_default_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let h = SimHost::create(dir.path(), 1 << 20, "v1").unwrap();
        h.boot_control().arm_try(Slot::B).unwrap();
        assert!(h.boot().unwrap().fell_back);
        h.fail_next_boot(Slot::A).unwrap();
        let e = h.boot().unwrap_err().to_string();
        assert!(e.contains("default slot A does not boot"), "{e}");
    }
}
