//! [`Host`] for a real machine. In the DaemonSet the host's `/dev`, `/etc/os-release`,
//! `/proc/1/mountinfo` and bootloader environment are mounted into the pod; every path
//! is therefore configurable.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use super::detect::{SlotDevice, os_release_value, root_device_from_mountinfo, slot_from_cmdline};
use super::{Host, HostError, HostFacts, RebootKind};
use crate::boot::BootControl;
use crate::slot::Slot;

/// How to reboot the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebootMethod {
    /// Run this command (e.g. `systemctl reboot`, or `nsenter -t 1 -m -- systemctl reboot`).
    Command(Vec<String>),
    /// Flush filesystems and call `reboot(2)` directly (no orderly shutdown).
    Syscall,
}

impl std::str::FromStr for RebootMethod {
    type Err = String;

    /// `syscall`, or a command line split on whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Err("empty reboot command".into()),
            "syscall" => Ok(RebootMethod::Syscall),
            cmd => Ok(RebootMethod::Command(
                cmd.split_whitespace().map(String::from).collect(),
            )),
        }
    }
}

/// Where a real host keeps what the agent needs.
pub struct RealHostConfig {
    /// Slot A's partition.
    pub slot_a: Option<SlotDevice>,
    /// Slot B's partition.
    pub slot_b: Option<SlotDevice>,
    /// Directory holding `disk/by-partlabel` and `disk/by-partuuid` (normally `/dev`).
    pub dev_dir: PathBuf,
    /// Kernel command line (normally `/proc/cmdline`).
    pub cmdline: PathBuf,
    /// A mount table of the host's mount namespace (normally `/proc/1/mountinfo`).
    pub mountinfo: PathBuf,
    /// The running OS's os-release file.
    pub os_release: PathBuf,
    /// os-release key holding the OS version (e.g. `VERSION_ID`).
    pub version_key: String,
    /// Boot id file (normally `/proc/sys/kernel/random/boot_id`).
    pub boot_id: PathBuf,
    /// How to reboot.
    pub reboot: RebootMethod,
    /// The bootloader environment.
    pub boot: Box<dyn BootControl>,
}

/// A real machine.
pub struct RealHost {
    cfg: RealHostConfig,
}

impl RealHost {
    /// Wrap a configuration.
    pub fn new(cfg: RealHostConfig) -> Self {
        RealHost { cfg }
    }

    /// Slot `slot`'s partition; a node updated by a deployment backend has none.
    fn device(&self, slot: Slot) -> Result<&SlotDevice, HostError> {
        match slot {
            Slot::A => self.cfg.slot_a.as_ref(),
            Slot::B => self.cfg.slot_b.as_ref(),
        }
        .ok_or(HostError::NoSlotDevice { slot })
    }

    fn read(&self, path: &std::path::Path) -> Result<String, HostError> {
        std::fs::read_to_string(path)
            .map_err(|e| HostError::with(format!("reading {}", path.display()), e))
    }

    /// The booted slot: kernel command line first, then the device mounted on `/`.
    pub fn booted_slot(&self) -> Result<Slot, HostError> {
        let cmdline = self.read(&self.cfg.cmdline)?;
        let devices = [
            (Slot::A, self.device(Slot::A)?.clone()),
            (Slot::B, self.device(Slot::B)?.clone()),
        ];
        if let Some(s) = slot_from_cmdline(&cmdline, &devices) {
            return Ok(s);
        }
        let mountinfo = self.read(&self.cfg.mountinfo)?;
        let root =
            root_device_from_mountinfo(&mountinfo).ok_or_else(|| HostError::NoRootMount {
                mountinfo: self.cfg.mountinfo.clone(),
            })?;
        for slot in Slot::ALL {
            if let Ok(meta) = self
                .slot_path(slot)
                .and_then(|p| std::fs::metadata(&p).map_err(|e| HostError::with("stat", e)))
            {
                let rdev = meta.rdev();
                if (rustix::fs::major(rdev), rustix::fs::minor(rdev)) == root {
                    return Ok(slot);
                }
            }
        }
        Err(HostError::BootedSlotUnknown {
            cmdline: cmdline.trim().to_string(),
            slot_a: devices[0].1.to_string(),
            slot_b: devices[1].1.to_string(),
            root,
        })
    }
}

impl Host for RealHost {
    fn kernel_command_line(&self) -> Option<String> {
        let cmdline = self.read(&self.cfg.cmdline).ok()?;
        Some(cmdline.trim().to_string())
    }

    fn boot_id(&self) -> Result<String, HostError> {
        Ok(self.read(&self.cfg.boot_id)?.trim().to_string())
    }

    fn facts(&self) -> Result<HostFacts, HostError> {
        let booted_slot = self.booted_slot()?;
        let os_version = os_release_value(&self.read(&self.cfg.os_release)?, &self.cfg.version_key);
        let boot_id = self.read(&self.cfg.boot_id)?.trim().to_string();
        Ok(HostFacts {
            booted_slot,
            os_version,
            boot_id,
        })
    }

    fn slot_path(&self, slot: Slot) -> Result<PathBuf, HostError> {
        let path = self.device(slot)?.path_under(&self.cfg.dev_dir);
        std::fs::canonicalize(&path).map_err(|e| {
            HostError::with(
                format!("resolving slot {slot} device {}", path.display()),
                e,
            )
        })
    }

    fn boot_control(&self) -> &dyn BootControl {
        self.cfg.boot.as_ref()
    }

    fn reboot(&self) -> Result<RebootKind, HostError> {
        match &self.cfg.reboot {
            RebootMethod::Command(argv) => {
                let (prog, args) = argv.split_first().ok_or(HostError::EmptyRebootCommand)?;
                let out = Command::new(prog)
                    .args(args)
                    .output()
                    .map_err(|e| HostError::with(format!("running {}", argv.join(" ")), e))?;
                if !out.status.success() {
                    return Err(HostError::RebootRefused {
                        command: argv.join(" "),
                        status: out.status,
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
                Ok(RebootKind::Requested)
            }
            RebootMethod::Syscall => {
                rustix::fs::sync();
                rustix::system::reboot(rustix::system::RebootCommand::Restart)
                    .map_err(|e| HostError::with("reboot(2)", e))?;
                Ok(RebootKind::Requested)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::grubenv::GrubBoot;

    fn host(dir: &std::path::Path, cmdline: &str, reboot: &str) -> RealHost {
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        std::fs::write(dir.join("mountinfo"), "1 0 0:1 / / rw - ext4 /dev/x rw\n").unwrap();
        std::fs::write(dir.join("os-release"), "VERSION_ID=v1.2.3\n").unwrap();
        std::fs::write(dir.join("boot_id"), "abc\n").unwrap();
        std::fs::create_dir_all(dir.join("dev/disk/by-partlabel")).unwrap();
        std::fs::write(dir.join("slot-b.img"), "").unwrap();
        std::os::unix::fs::symlink(
            dir.join("slot-b.img"),
            dir.join("dev/disk/by-partlabel/rootfs-b"),
        )
        .unwrap();
        RealHost::new(RealHostConfig {
            slot_a: Some("PARTLABEL=rootfs-a".parse().unwrap()),
            slot_b: Some("PARTLABEL=rootfs-b".parse().unwrap()),
            dev_dir: dir.join("dev"),
            cmdline: dir.join("cmdline"),
            mountinfo: dir.join("mountinfo"),
            os_release: dir.join("os-release"),
            version_key: "VERSION_ID".into(),
            boot_id: dir.join("boot_id"),
            reboot: reboot.parse().unwrap(),
            boot: Box::new(GrubBoot::new(dir.join("grubenv"))),
        })
    }

    #[test]
    fn facts_from_files_and_slot_paths_through_partlabel_links() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), "root=PARTLABEL=rootfs-b ro", "true");
        let f = h.facts().unwrap();
        assert_eq!(
            f,
            HostFacts {
                booted_slot: Slot::B,
                os_version: Some("v1.2.3".into()),
                boot_id: "abc".into()
            }
        );
        assert_eq!(
            h.slot_path(Slot::B).unwrap(),
            dir.path().join("slot-b.img").canonicalize().unwrap()
        );
        let e = h.slot_path(Slot::A).unwrap_err().to_string();
        assert!(e.contains("slot A") && e.contains("rootfs-a"), "{e}");
        assert_eq!(h.reboot().unwrap(), RebootKind::Requested);
    }

    #[test]
    fn unknown_booted_slot_and_failing_reboot_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), "root=/dev/sdz1", "false");
        let e = h.facts().unwrap_err().to_string();
        assert!(
            e.contains("root=/dev/sdz1") && e.contains("PARTLABEL=rootfs-a"),
            "{e}"
        );
        let e = h.reboot().unwrap_err().to_string();
        assert!(e.contains("false exited"), "{e}");
    }
}
