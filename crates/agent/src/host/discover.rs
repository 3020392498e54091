//! Finds the two root slots without per-node flags, so one DaemonSet fits every node
//! that follows the documented layout (docs/boot-integration.md).
//!
//! Order: the GPT partition labels of the convention (default `osroll-a`/`osroll-b`),
//! read as `PARTNAME` from sysfs (`/sys/class/block/*/uevent`), which minimal hosts
//! without udev's `/dev/disk/by-*` links still have; otherwise the running slot named by
//! the kernel command line (`root=/dev/..`, `root=PARTLABEL=..`, `root=PARTUUID=..`) and
//! its sibling, the partition of the same disk whose label differs only in a trailing
//! `a`/`b`. Parsing and choosing are pure; [`read_sysfs`] is the only I/O.

use std::path::{Path, PathBuf};

use super::detect::{SlotDevice, cmdline_arg};
use crate::slot::Slot;

/// The GPT partition labels (PARTNAME) of slot A and slot B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotLabels {
    /// Label of slot A's partition.
    pub a: String,
    /// Label of slot B's partition.
    pub b: String,
}

impl Default for SlotLabels {
    fn default() -> Self {
        SlotLabels {
            a: "osroll-a".into(),
            b: "osroll-b".into(),
        }
    }
}

impl std::str::FromStr for SlotLabels {
    type Err = String;

    /// `LABEL_A,LABEL_B`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split(',').map(str::trim).collect::<Vec<_>>()[..] {
            [a, b] if !a.is_empty() && !b.is_empty() && a != b => Ok(SlotLabels {
                a: a.into(),
                b: b.into(),
            }),
            _ => Err(format!(
                "invalid slot labels {s:?}: expected two different labels LABEL_A,LABEL_B"
            )),
        }
    }
}

/// One partition as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Kernel name, the node under `/dev` (`sda3`, `nvme0n1p3`, `vda4`).
    pub devname: String,
    /// The whole disk it belongs to (`sda`).
    pub disk: String,
    /// GPT partition label, when the table has one.
    pub partname: Option<String>,
}

/// Why the slots could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// Two partitions carry the same label (two disks with the layout).
    #[error(
        "partition label {label:?} is on both /dev/{first} and /dev/{second}; pass --slot-a/--slot-b"
    )]
    DuplicateLabel {
        /// The label.
        label: String,
        /// One partition with it.
        first: String,
        /// Another one.
        second: String,
    },
    /// Neither the labels nor the kernel command line name the slots.
    #[error(
        "no partitions labelled {a:?} and {b:?} and no usable root= on the kernel command line ({cmdline:?}): {detail}; pass --slot-a/--slot-b or --slot-labels"
    )]
    NotFound {
        /// Label looked for, slot A.
        a: String,
        /// Label looked for, slot B.
        b: String,
        /// The command line read.
        cmdline: String,
        /// What the command line led to.
        detail: String,
    },
}

/// The fields of a sysfs block `uevent` file that matter: `(DEVNAME, DEVTYPE, PARTNAME)`.
pub fn parse_uevent(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().to_string())
    };
    (get("DEVNAME"), get("DEVTYPE"), get("PARTNAME"))
}

/// Every partition under a sysfs `class/block` directory (each entry links to
/// `.../<disk>/<partition>`); entries that cannot be read are skipped.
pub fn read_sysfs(class_block: &Path) -> std::io::Result<Vec<Partition>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(class_block)? {
        let path = entry?.path();
        let Ok(text) = std::fs::read_to_string(path.join("uevent")) else {
            continue;
        };
        let (Some(devname), Some(devtype), partname) = parse_uevent(&text) else {
            continue;
        };
        if devtype != "partition" {
            continue;
        }
        let disk = std::fs::canonicalize(&path)
            .ok()
            .and_then(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_default();
        parts.push(Partition {
            devname,
            disk,
            partname,
        });
    }
    parts.sort_by(|x, y| x.devname.cmp(&y.devname));
    Ok(parts)
}

fn by_label<'a>(
    parts: &'a [Partition],
    label: &str,
) -> Result<Option<&'a Partition>, DiscoverError> {
    let mut found = parts
        .iter()
        .filter(|p| p.partname.as_deref() == Some(label));
    let first = found.next();
    match (first, found.next()) {
        (Some(f), Some(s)) => Err(DiscoverError::DuplicateLabel {
            label: label.into(),
            first: f.devname.clone(),
            second: s.devname.clone(),
        }),
        (f, None) => Ok(f),
        (None, Some(_)) => unreachable!("a second match without a first"),
    }
}

/// The label of the other slot: the same label with its trailing `a`/`b` swapped, and
/// which slot `label` itself is.
pub fn sibling_label(label: &str) -> Option<(Slot, String)> {
    let (stem, last) = label.split_at(label.len().checked_sub(1)?);
    let (slot, other) = match last {
        "a" => (Slot::A, "b"),
        "b" => (Slot::B, "a"),
        "A" => (Slot::A, "B"),
        "B" => (Slot::B, "A"),
        _ => return None,
    };
    Some((slot, format!("{stem}{other}")))
}

/// The running root partition as `root=` names it, or why it cannot be told.
fn root_partition<'a>(
    parts: &'a [Partition],
    root: &str,
    partuuid_devname: &dyn Fn(&str) -> Option<String>,
) -> Result<&'a Partition, String> {
    let by_name = |name: String| {
        parts
            .iter()
            .find(|x| x.devname == name)
            .ok_or_else(|| format!("no partition /dev/{name}"))
    };
    match root.parse::<SlotDevice>() {
        Ok(SlotDevice::PartLabel(l)) => by_label(parts, &l)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no partition labelled {l:?}")),
        Ok(SlotDevice::Path(p)) => by_name(
            p.strip_prefix("/dev")
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned(),
        ),
        Ok(SlotDevice::PartUuid(u)) => by_name(
            partuuid_devname(&u)
                .ok_or_else(|| format!("root=PARTUUID={u} has no disk/by-partuuid link"))?,
        ),
        Err(e) => Err(e),
    }
}

/// Decide the slots: the labels first, then `root=` and its sibling. `partuuid_devname`
/// resolves a `PARTUUID=` root to a kernel name (from the by-partuuid link, when present).
pub fn choose(
    parts: &[Partition],
    labels: &SlotLabels,
    cmdline: &str,
    partuuid_devname: &dyn Fn(&str) -> Option<String>,
) -> Result<[Partition; 2], DiscoverError> {
    if let (Some(a), Some(b)) = (by_label(parts, &labels.a)?, by_label(parts, &labels.b)?) {
        return Ok([a.clone(), b.clone()]);
    }
    let not_found = |detail: String| DiscoverError::NotFound {
        a: labels.a.clone(),
        b: labels.b.clone(),
        cmdline: cmdline.trim().to_string(),
        detail,
    };
    let root = cmdline_arg(cmdline, "root").ok_or_else(|| not_found("no root=".into()))?;
    let running = root_partition(parts, root, partuuid_devname).map_err(not_found)?;
    let label = running
        .partname
        .as_deref()
        .ok_or_else(|| not_found(format!("/dev/{} has no partition label", running.devname)))?;
    let (slot, other) = sibling_label(label).ok_or_else(|| {
        not_found(format!(
            "label {label:?} of the running root does not end in a or b"
        ))
    })?;
    let sibling = parts
        .iter()
        .find(|p| p.disk == running.disk && p.partname.as_deref() == Some(other.as_str()))
        .ok_or_else(|| not_found(format!("no partition labelled {other:?} beside {label:?}")))?;
    Ok(match slot {
        Slot::A => [running.clone(), sibling.clone()],
        Slot::B => [sibling.clone(), running.clone()],
    })
}

/// Where to find what [`discover`] reads.
pub struct DiscoverPaths<'a> {
    /// sysfs `class/block` (normally `/sys/class/block`).
    pub class_block: &'a Path,
    /// The device directory slots are opened under (normally `/dev`).
    pub dev_dir: &'a Path,
    /// The kernel command line file.
    pub cmdline: &'a Path,
}

/// Slot A's and slot B's device nodes on this host.
pub fn discover(paths: &DiscoverPaths, labels: &SlotLabels) -> Result<[SlotDevice; 2], String> {
    let parts = read_sysfs(paths.class_block)
        .map_err(|e| format!("reading {}: {e}", paths.class_block.display()))?;
    let cmdline = std::fs::read_to_string(paths.cmdline).unwrap_or_default();
    let by_uuid = |u: &str| {
        let link = paths
            .dev_dir
            .join("disk/by-partuuid")
            .join(u.to_ascii_lowercase());
        let target = std::fs::read_link(link).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    };
    let [a, b] = choose(&parts, labels, &cmdline, &by_uuid).map_err(|e| e.to_string())?;
    let node = |p: &Partition| SlotDevice::Path(PathBuf::from(paths.dev_dir).join(&p.devname));
    Ok([node(&a), node(&b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(devname: &str, disk: &str, label: Option<&str>) -> Partition {
        Partition {
            devname: devname.into(),
            disk: disk.into(),
            partname: label.map(String::from),
        }
    }

    fn layout() -> Vec<Partition> {
        vec![
            part("vda1", "vda", None),
            part("vda2", "vda", Some("boot")),
            part("vda3", "vda", Some("osroll-a")),
            part("vda4", "vda", Some("osroll-b")),
            part("sdb1", "sdb", Some("root_a")),
            part("sdb2", "sdb", Some("root_b")),
        ]
    }

    fn names(r: Result<[Partition; 2], DiscoverError>) -> Result<[String; 2], String> {
        r.map(|[a, b]| [a.devname, b.devname])
            .map_err(|e| e.to_string())
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn uevent_fields() {
        let t = "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=3\nPARTNAME=osroll-a\n";
        assert_eq!(
            parse_uevent(t),
            (
                Some("vda3".into()),
                Some("partition".into()),
                Some("osroll-a".into())
            )
        );
        assert_eq!(
            parse_uevent("MAJOR=7\nDEVNAME=loop0\nDEVTYPE=disk\n"),
            (Some("loop0".into()), Some("disk".into()), None)
        );
    }

    #[test]
    fn labels_of_the_convention_win_over_the_command_line() {
        let got = choose(&layout(), &SlotLabels::default(), "root=/dev/sdb1", &none);
        assert_eq!(names(got), Ok(["vda3".into(), "vda4".into()]));
        let custom: SlotLabels = "root_a,root_b".parse().unwrap();
        assert_eq!(
            names(choose(&layout(), &custom, "", &none)),
            Ok(["sdb1".into(), "sdb2".into()])
        );
        for bad in ["one", "a,a", ",b", "a,b,c"] {
            assert!(bad.parse::<SlotLabels>().is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_labels_are_refused() {
        let mut parts = layout();
        parts.push(part("sdc3", "sdc", Some("osroll-a")));
        let e = names(choose(&parts, &SlotLabels::default(), "", &none)).unwrap_err();
        assert!(e.contains("vda3") && e.contains("sdc3"), "{e}");
    }

    #[test]
    fn running_root_and_its_sibling_from_the_command_line() {
        let labels: SlotLabels = "x-a,x-b".parse().unwrap();
        let parts = layout();
        for (cmdline, want) in [
            ("ro root=/dev/sdb2 quiet", ["sdb1", "sdb2"]),
            ("root=PARTLABEL=root_a", ["sdb1", "sdb2"]),
            ("root=PARTUUID=ABC-1", ["sdb1", "sdb2"]),
        ] {
            let uuid = |u: &str| (u == "abc-1").then(|| "sdb1".to_string());
            assert_eq!(
                names(choose(&parts, &labels, cmdline, &uuid)),
                Ok(want.map(String::from)),
                "{cmdline}"
            );
        }
    }

    #[test]
    fn unusable_command_lines_say_why() {
        let labels: SlotLabels = "x-a,x-b".parse().unwrap();
        for (cmdline, why) in [
            ("quiet", "no root="),
            ("root=/dev/vda2", "does not end in a or b"),
            ("root=/dev/vda1", "has no partition label"),
            ("root=/dev/sdz1", "no partition /dev/sdz1"),
            ("root=PARTUUID=dead", "no disk/by-partuuid link"),
            ("root=PARTLABEL=nope", "no partition labelled \"nope\""),
        ] {
            let e = names(choose(&layout(), &labels, cmdline, &none)).unwrap_err();
            assert!(e.contains(why) && e.contains("x-a"), "{cmdline}: {e}");
        }
        // A sibling must be on the same disk.
        let parts = vec![
            part("sda3", "sda", Some("r-a")),
            part("sdb3", "sdb", Some("r-b")),
        ];
        let e = names(choose(&parts, &labels, "root=/dev/sda3", &none)).unwrap_err();
        assert!(e.contains("beside"), "{e}");
    }

    #[test]
    fn sibling_labels() {
        assert_eq!(
            sibling_label("rootfs-a"),
            Some((Slot::A, "rootfs-b".into()))
        );
        assert_eq!(sibling_label("ROOT_B"), Some((Slot::B, "ROOT_A".into())));
        assert_eq!(sibling_label("root"), None);
        assert_eq!(sibling_label(""), None);
    }

    /// A fixture tree shaped like sysfs: class/block entries link into the device tree.
    #[test]
    fn reads_a_sysfs_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let dev = root.join("devices/pci0/virtio1/block/vda");
        let class = root.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        let entry = |name: &str, body: &str, under: &Path| {
            std::fs::create_dir_all(under.join(name)).unwrap();
            std::fs::write(under.join(name).join("uevent"), body).unwrap();
            std::os::unix::fs::symlink(under.join(name), class.join(name)).unwrap();
        };
        entry("vda", "DEVNAME=vda\nDEVTYPE=disk\n", dev.parent().unwrap());
        entry(
            "vda3",
            "DEVNAME=vda3\nDEVTYPE=partition\nPARTNAME=osroll-a\n",
            &dev,
        );
        entry(
            "vda4",
            "DEVNAME=vda4\nDEVTYPE=partition\nPARTNAME=osroll-b\n",
            &dev,
        );
        entry("vda1", "DEVNAME=vda1\nDEVTYPE=partition\n", &dev);
        let parts = read_sysfs(&class).unwrap();
        assert_eq!(
            parts,
            [
                part("vda1", "vda", None),
                part("vda3", "vda", Some("osroll-a")),
                part("vda4", "vda", Some("osroll-b"))
            ]
        );
        std::fs::write(root.join("cmdline"), "console=ttyS0\n").unwrap();
        let paths = DiscoverPaths {
            class_block: &class,
            dev_dir: Path::new("/dev"),
            cmdline: &root.join("cmdline"),
        };
        let got = discover(&paths, &SlotLabels::default()).unwrap();
        assert_eq!(
            got.map(|d| d.to_string()),
            ["/dev/vda3".to_string(), "/dev/vda4".to_string()]
        );
    }
}
