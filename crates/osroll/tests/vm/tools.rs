//! The host tools the VM tier needs, each named with the Debian package that ships it
//! (the list CI installs is ci/debian-packages.txt). A missing one fails the test
//! loudly; the tier never skips.

use std::path::{Path, PathBuf};

/// `(path or command, Debian package)`.
const NEEDED: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
    ("grub-mkimage", "grub-common"),
    ("grub-editenv", "grub-common"),
    ("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin"),
    ("mkfs.ext4", "e2fsprogs"),
    ("sfdisk", "fdisk"),
    ("modprobe", "kmod"),
    ("strip", "binutils"),
    ("ldd", "libc-bin"),
    ("kubectl", "kubectl (see README)"),
];

fn on_path(cmd: &str) -> Option<PathBuf> {
    if cmd.starts_with('/') {
        return Path::new(cmd).exists().then(|| PathBuf::from(cmd));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(cmd))
        .find(|p| p.exists())
}

/// The Debian kernel to boot: the newest `/boot/vmlinuz-*` with its modules.
pub(crate) fn kernel() -> (PathBuf, String) {
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let v = n.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules").join(&v).exists().then_some(v)
        })
        .collect();
    found.sort();
    let v = found.pop().expect(
        "no /boot/vmlinuz-* with /lib/modules: install the Debian package linux-image-amd64",
    );
    (PathBuf::from(format!("/boot/vmlinuz-{v}")), v)
}

/// Panic naming every missing tool and its package.
pub(crate) fn check() {
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(t, _)| on_path(t).is_none())
        .map(|(t, p)| format!("{t} (Debian package {p})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the VM tier needs: {}; see ci/debian-packages.txt",
        missing.join(", ")
    );
    kernel();
}
