//! Pure parsers for the files a real host is inspected through: the kernel command
//! line, `/proc/<pid>/mountinfo`, `os-release`, and the slot device specs given on the
//! agent's command line (`/dev/sda3`, `PARTLABEL=rootfs-b`, `PARTUUID=...`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::slot::Slot;

/// How a slot's partition is named in the agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotDevice {
    /// A device node or file path.
    Path(PathBuf),
    /// A GPT partition label.
    PartLabel(String),
    /// A partition UUID (compared case-insensitively).
    PartUuid(String),
}

impl FromStr for SlotDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(l) = s.strip_prefix("PARTLABEL=") {
            if l.is_empty() || l.contains('/') {
                return Err(format!(
                    "invalid slot device {s:?}: PARTLABEL must be a non-empty name without '/'"
                ));
            }
            return Ok(SlotDevice::PartLabel(l.to_string()));
        }
        if let Some(u) = s.strip_prefix("PARTUUID=") {
            if u.is_empty() || !u.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(format!(
                    "invalid slot device {s:?}: PARTUUID must be hex digits and '-'"
                ));
            }
            return Ok(SlotDevice::PartUuid(u.to_ascii_lowercase()));
        }
        if s.starts_with('/') {
            return Ok(SlotDevice::Path(PathBuf::from(s)));
        }
        Err(format!(
            "invalid slot device {s:?}: expected an absolute path, PARTLABEL=<label> or PARTUUID=<uuid>"
        ))
    }
}

impl fmt::Display for SlotDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotDevice::Path(p) => write!(f, "{}", p.display()),
            SlotDevice::PartLabel(l) => write!(f, "PARTLABEL={l}"),
            SlotDevice::PartUuid(u) => write!(f, "PARTUUID={u}"),
        }
    }
}

impl SlotDevice {
    /// The path to open, with `/dev` replaced by `dev_dir` for the symlink forms.
    pub fn path_under(&self, dev_dir: &Path) -> PathBuf {
        match self {
            SlotDevice::Path(p) => p.clone(),
            SlotDevice::PartLabel(l) => dev_dir.join("disk/by-partlabel").join(l),
            SlotDevice::PartUuid(u) => dev_dir.join("disk/by-partuuid").join(u),
        }
    }

    /// Whether a kernel `root=` value names this device literally.
    pub fn matches_root_arg(&self, root: &str) -> bool {
        match (self, root.parse::<SlotDevice>()) {
            (SlotDevice::PartUuid(a), Ok(SlotDevice::PartUuid(b))) => a.eq_ignore_ascii_case(&b),
            (a, Ok(b)) => *a == b,
            _ => false,
        }
    }
}

/// The value of `key=` on a kernel command line (the last one wins, as in the kernel).
pub fn cmdline_arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_matches('"'))
        .next_back()
}

/// The booted slot as the kernel command line tells it: `osroll.slot=A|B` if the boot
/// script passes it, else a `root=` that names one of the slot devices literally.
pub fn slot_from_cmdline(cmdline: &str, devices: &[(Slot, SlotDevice)]) -> Option<Slot> {
    if let Some(s) = cmdline_arg(cmdline, "osroll.slot").and_then(|v| v.parse().ok()) {
        return Some(s);
    }
    let root = cmdline_arg(cmdline, "root")?;
    devices
        .iter()
        .find(|(_, d)| d.matches_root_arg(root))
        .map(|(s, _)| *s)
}

/// `major:minor` of the device mounted on `/` in a mountinfo table (the last such line
/// wins: it is the mount on top).
pub fn root_device_from_mountinfo(mountinfo: &str) -> Option<(u32, u32)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let _id = f.next()?;
            let _parent = f.next()?;
            let dev = f.next()?;
            let _root = f.next()?;
            let mount_point = f.next()?;
            (mount_point == "/").then_some(dev)
        })
        .next_back()
        .and_then(|dev| {
            let (maj, min) = dev.split_once(':')?;
            Some((maj.parse().ok()?, min.parse().ok()?))
        })
}

/// Every `(major:minor, mount point)` in a mountinfo table.
pub fn mounted_devices(mountinfo: &str) -> Vec<((u32, u32), String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().take(5).collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            Some((
                (maj.parse().ok()?, min.parse().ok()?),
                f.get(4)?.to_string(),
            ))
        })
        .collect()
}

/// A block device that is mounted: a running system's disk, never a free slot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refusing to write {}: it is mounted at {mount_point}", device.display())]
pub struct Mounted {
    /// The device.
    pub device: std::path::PathBuf,
    /// Where it is mounted.
    pub mount_point: String,
}

/// Refuse to write a block device that is mounted (per `mountinfo`): it is a running
/// system's disk, never a free slot. Regular files are always allowed.
pub fn ensure_not_mounted(target: &Path, mountinfo: &str) -> Result<(), Mounted> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(target) else {
        return Ok(());
    };
    if !meta.file_type().is_block_device() {
        return Ok(());
    }
    let dev = (
        rustix::fs::major(meta.rdev()),
        rustix::fs::minor(meta.rdev()),
    );
    match mounted_devices(mountinfo)
        .into_iter()
        .find(|(d, _)| *d == dev)
    {
        Some((_, at)) => Err(Mounted {
            device: target.to_path_buf(),
            mount_point: at,
        }),
        None => Ok(()),
    }
}

/// The value of `key` in an os-release file (quotes removed).
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Vec<(Slot, SlotDevice)> {
        vec![
            (Slot::A, "PARTUUID=AAAA-1".parse().unwrap()),
            (Slot::B, "/dev/sda3".parse().unwrap()),
        ]
    }

    #[test]
    fn slot_device_specs_parse_and_resolve() {
        let d: SlotDevice = "PARTLABEL=rootfs-b".parse().unwrap();
        assert_eq!(
            d.path_under(Path::new("/host/dev")),
            Path::new("/host/dev/disk/by-partlabel/rootfs-b")
        );
        let u: SlotDevice = "PARTUUID=ABCD-01".parse().unwrap();
        assert_eq!(
            u.path_under(Path::new("/dev")),
            Path::new("/dev/disk/by-partuuid/abcd-01")
        );
        assert_eq!(u.to_string(), "PARTUUID=abcd-01");
        for bad in ["sda3", "PARTLABEL=", "PARTUUID=xyz", "LABEL=root"] {
            let e = bad.parse::<SlotDevice>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn booted_slot_from_cmdline() {
        assert_eq!(
            slot_from_cmdline("quiet osroll.slot=B root=/dev/sda2", &devices()),
            Some(Slot::B)
        );
        assert_eq!(
            slot_from_cmdline("root=PARTUUID=aaaa-1 ro", &devices()),
            Some(Slot::A)
        );
        assert_eq!(
            slot_from_cmdline("ro root=/dev/sda3", &devices()),
            Some(Slot::B)
        );
        assert_eq!(slot_from_cmdline("root=/dev/sda9", &devices()), None);
        assert_eq!(slot_from_cmdline("osroll.slot=Z", &devices()), None);
    }

    #[test]
    fn root_device_from_mountinfo_takes_the_top_mount() {
        let mi = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
                  30 22 0:25 / /proc rw - proc proc rw\n\
                  40 22 8:3 / / ro - ext4 /dev/sda3 ro\n";
        assert_eq!(root_device_from_mountinfo(mi), Some((8, 3)));
        assert_eq!(
            root_device_from_mountinfo("30 22 0:25 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[test]
    fn mounted_devices_and_the_mount_guard() {
        let mi =
            "22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n30 22 0:25 / /proc rw - proc proc rw\n";
        assert_eq!(
            mounted_devices(mi),
            [((259, 2), "/".to_string()), ((0, 25), "/proc".to_string())]
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("img");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(ensure_not_mounted(&f, mi), Ok(()), "regular files are fine");
        // /dev/null is a character device, not a block device: allowed too.
        assert_eq!(ensure_not_mounted(Path::new("/dev/null"), mi), Ok(()));
        // A mounted block device: find its node under /dev, if this system has one.
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted = mounted_devices(&own);
        let node = std::fs::read_dir("/dev")
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| {
                let m = e.metadata().ok()?;
                let dev = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
                (m.file_type().is_block_device() && mounted.iter().any(|(d, _)| *d == dev))
                    .then(|| e.path())
            });
        match node {
            Some(node) => {
                let e = ensure_not_mounted(&node, &own).unwrap_err().to_string();
                assert!(
                    e.contains("refusing") && e.contains(&node.display().to_string()),
                    "{e}"
                );
            }
            None => eprintln!(
                "no mounted block device node under /dev: mounted-device refusal not exercised"
            ),
        }
    }

    #[test]
    fn os_release_values() {
        let t = "NAME=\"Mono\"\nVERSION_ID=v1.35.3\nIMAGE_VERSION='1.2'\n";
        assert_eq!(
            os_release_value(t, "VERSION_ID").as_deref(),
            Some("v1.35.3")
        );
        assert_eq!(os_release_value(t, "NAME").as_deref(), Some("Mono"));
        assert_eq!(os_release_value(t, "IMAGE_VERSION").as_deref(), Some("1.2"));
        assert_eq!(os_release_value(t, "ID"), None);
    }
}
