//! Builds the VM's disk from files, as the documented layout asks (docs/boot-integration.md):
//! a GPT with a BIOS boot partition (GRUB's core.img), a boot partition (the shipped
//! `grub.cfg`, `grubenv`), slots `osroll-a`/`osroll-b` (ext4 images carrying a Debian
//! kernel, an initramfs and a busybox root), and `osroll-var` (the agent's state and the
//! "container image": the osroll binary and its libraries). No loop device is needed.
//! Each node gets its own disk (its var fs holds its pod script and token); everything
//! else is built once and shared.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
/// `(label, start MiB, size MiB)`; the slot sizes bound the images.
pub(crate) const PARTS: &[(&str, u64, u64)] = &[
    ("bios", 1, 1),
    ("boot", 2, 4),
    ("osroll-a", 6, 24),
    ("osroll-b", 30, 24),
    ("osroll-var", 54, 100),
];
/// Size of a slot image (the ext4 filesystem written into a slot).
pub(crate) const SLOT_IMAGE_MIB: u64 = 14;

pub(crate) fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A newc cpio archive of `dir` (what the kernel unpacks as an initramfs).
fn cpio_newc(dir: &Path) -> Vec<u8> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut entry = |name: &str, mode: u32, data: &[u8], ino: u32| {
        let hdr = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    let mut paths: Vec<PathBuf> = walk(dir);
    paths.sort();
    for (i, p) in paths.iter().enumerate() {
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(p).unwrap();
        let data = if meta.file_type().is_symlink() {
            fs::read_link(p)
                .unwrap()
                .to_string_lossy()
                .into_owned()
                .into_bytes()
        } else if meta.is_file() {
            fs::read(p).unwrap()
        } else {
            Vec::new()
        };
        entry(&rel, meta.mode(), &data, i as u32 + 1);
    }
    entry("TRAILER!!!", 0, &[], 0);
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        all.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            all.extend(walk(&p));
        }
    }
    all
}

/// The initramfs: load the disk, network and ext4 modules, mount the partition whose
/// GPT label `root=PARTLABEL=` names (found in sysfs, as the agent finds slots),
/// read-only, and switch to it.
fn initramfs(work: &Path, kver: &str) -> PathBuf {
    let dir = work.join("initrd");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("lib/modules")).unwrap();
    for d in ["dev", "proc", "sys", "newroot"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let mut order = String::new();
    for m in [
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "ext4",
        "crc32c_generic",
    ] {
        let out = Command::new("modprobe")
            .args(["-S", kver, "--show-depends", m])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "modprobe --show-depends {m}: install linux-image-amd64"
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue;
            };
            let path = Path::new(path.trim());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains("intel") || order.lines().any(|l| l == name) {
                continue;
            }
            fs::copy(path, dir.join("lib/modules").join(&name)).unwrap();
            order.push_str(&name);
            order.push('\n');
        }
    }
    fs::write(dir.join("lib/modules/order"), order).unwrap();
    write_exec(&dir.join("init"), INITRAMFS_INIT);
    let img = work.join("initrd.img");
    // zstd-compressed (the kernel unpacks it): every byte of a slot image costs time
    // when the agent in the emulated guest stages it.
    fs::write(
        &img,
        zstd::encode_all(cpio_newc(&dir).as_slice(), 19).unwrap(),
    )
    .unwrap();
    img
}

const INITRAMFS_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m; done
want=$(sed -n 's/.*root=PARTLABEL=\([^ ]*\).*/\1/p' /proc/cmdline)
dev=
for i in $(seq 1 100); do
  for u in /sys/class/block/*/uevent; do
    grep -qx "PARTNAME=$want" "$u" && dev=$(sed -n 's/^DEVNAME=//p' "$u")
  done
  [ -n "$dev" ] && break
  sleep 0.05
done
mount -t ext4 -o ro "/dev/$dev" /newroot || { echo "osroll-vm: cannot mount root $want"; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
"#;

/// PID 1 of a good slot: mounts, network, `/boot` and `/var`, reports the boot, then
/// starts the agent pod (`/var/lib/osroll-vm/pod.sh`) and prints how it was started.
const ROOT_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
part() { for u in /sys/class/block/*/uevent; do grep -qx "PARTNAME=$1" "$u" && sed -n 's/^DEVNAME=//p' "$u"; done; }
mount -t ext4 /dev/$(part boot) /boot
mount -t ext4 /dev/$(part osroll-var) /var
. /etc/os-release
slot=$(sed -n 's/.*osroll\.slot=\([AB]\).*/\1/p' /proc/cmdline)
echo "osroll-vm: up slot=$slot version=$VERSION_ID"
echo "osroll-vm: cmdline $(cat /proc/cmdline)"
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
echo "osroll-vm: net $(ip -o -4 addr show eth0 2>&1)"
sh /var/lib/osroll-vm/pod.sh > /dev/console 2>&1 &
for i in $(seq 1 200); do
  pid=$(pidof osroll)
  [ -n "$pid" ] && break
  sleep 0.05
done
for f in cmdline environ; do
  echo "osroll-vm: agent-$f $(tr '\0' '\t' < /proc/$pid/$f)"
done
while true; do sleep 3600; done
"#;

/// PID 1 of the broken image: exits before anything commits (the kernel panics).
const BROKEN_INIT: &str = "#!/bin/sh\nmount -t proc proc /proc\necho \"osroll-vm: cmdline $(cat /proc/cmdline)\"\necho \"osroll-vm: broken image, init exits\"\nexit 1\n";

/// A slot image (ext4) for `version`; `broken`: its init exits at once.
fn slot_image(work: &Path, kernel: &Path, initrd: &Path, version: &str, broken: bool) -> PathBuf {
    let dir = work.join(format!(
        "root-{version}{}",
        if broken { "-broken" } else { "" }
    ));
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "boot", "var", "run", "tmp",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    busybox_links(&dir);
    fs::copy(kernel, dir.join("boot/vmlinuz")).unwrap();
    fs::copy(initrd, dir.join("boot/initrd.img")).unwrap();
    fs::write(
        dir.join("etc/os-release"),
        format!("ID=osroll-vm\nVERSION_ID={version}\n"),
    )
    .unwrap();
    let _ = fs::remove_file(dir.join("sbin/init"));
    write_exec(
        &dir.join("sbin/init"),
        if broken { BROKEN_INIT } else { ROOT_INIT },
    );
    let img = dir.with_extension("ext4");
    mkfs(&img, &dir, SLOT_IMAGE_MIB, version);
    img
}

/// A link to /bin/busybox for every applet, where `busybox --list-full` puts it.
fn busybox_links(root: &Path) {
    let out = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = root.join(applet);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        if !link.exists() {
            std::os::unix::fs::symlink("/bin/busybox", &link).unwrap();
        }
    }
}

fn mkfs(img: &Path, dir: &Path, mib: u64, label: &str) {
    let _ = fs::remove_file(img);
    // No orphan_file/metadata_csum_seed: GRUB 2.06 reads the rest of ext4.
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^orphan_file,^metadata_csum_seed",
            "-L",
            label,
            "-d",
        ])
        .arg(dir)
        .arg(img)
        .arg(format!("{mib}M")));
}

/// What every node's disk shares, built once per test run.
pub(crate) struct Base {
    v1: PathBuf,
    v2: PathBuf,
    v2_broken: PathBuf,
    boot_img: PathBuf,
    core: PathBuf,
    /// The agent "container image" (a directory), linked into each node's var fs.
    image: PathBuf,
    work: PathBuf,
}

/// One node's artefacts.
pub(crate) struct Artefacts {
    /// The node's base disk (v1 in slot A, default A); copy it per scenario.
    pub(crate) disk: PathBuf,
    /// Raw slot images.
    pub(crate) v2: PathBuf,
    pub(crate) v2_broken: PathBuf,
    /// The node's own directory, for its disks and logs.
    pub(crate) work: PathBuf,
}

/// The agent "container image": the osroll binary, its libraries, and nothing else.
fn container_image(dir: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_osroll"));
    let dest = dir.join("usr/local/bin/osroll");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    // Stripped: the guest reads the binary through an emulated disk.
    run(Command::new("strip").arg("-o").arg(&dest).arg(bin));
    let out = Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            let to = dir.join(p.strip_prefix("/").unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&p, &to).unwrap();
        }
    }
}

/// `from`'s tree recreated under `to`, its files hard-linked (mkfs reads them once).
fn link_tree(from: &Path, to: &Path) {
    for p in walk(from) {
        let dest = to.join(p.strip_prefix(from).unwrap());
        if p.is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::hard_link(&p, &dest).unwrap();
        }
    }
}

/// Build what every node shares: the initramfs, the slot images (v1, v2, broken v2),
/// the boot fs with the shipped `grub.cfg` and a `grubenv` defaulting to A, GRUB's
/// core.img, and the container image.
pub(crate) fn base(work: &Path, grub_cfg: &str) -> Base {
    let (kernel, kver) = super::tools::kernel();
    let initrd = initramfs(work, &kver);
    let v1 = slot_image(work, &kernel, &initrd, "v1", false);
    let v2 = slot_image(work, &kernel, &initrd, "v2", false);
    let v2_broken = slot_image(work, &kernel, &initrd, "v2", true);

    let boot = work.join("bootfs");
    fs::create_dir_all(boot.join("grub")).unwrap();
    fs::write(boot.join("grub/grub.cfg"), grub_cfg).unwrap();
    let env = boot.join("grub/grubenv");
    let _ = fs::remove_file(&env);
    run(Command::new("grub-editenv").arg(&env).arg("create"));
    run(Command::new("grub-editenv").arg(&env).args([
        "set",
        "osroll_default=A",
        "osroll_cmdline=console=ttyS0 panic=1 quiet",
        // Slot A's own argument, which the upgrade's kernelArguments remove for B.
        format!("osroll_cmdline_A={}", super::scenarios::KARG_OLD).as_str(),
    ]));
    // ext4 with a journal: GRUB never replays it, which is why the agent overwrites
    // grubenv in place (osroll_agent::boot::grubenv::write_in_place).
    let boot_img = work.join("boot.ext4");
    mkfs(&boot_img, &boot, 4, "boot");
    let image = work.join("image");
    container_image(&image);
    Base {
        v1,
        v2,
        v2_broken,
        boot_img,
        core: core_img(work),
        image,
        work: work.to_path_buf(),
    }
}

impl Base {
    pub(crate) fn v2(&self) -> &Path {
        &self.v2
    }

    pub(crate) fn v2_broken(&self) -> &Path {
        &self.v2_broken
    }

    /// Node `name`'s disk: GPT, GRUB (boot.img + core.img), boot fs, slot A = v1, and
    /// its var fs with the container image, the pod script and its service account.
    pub(crate) fn node(&self, name: &str, pod_sh: &str, sa: &[(&str, String)]) -> Artefacts {
        let work = self.work.join(name);
        let var = work.join("varfs");
        link_tree(&self.image, &var.join("lib/osroll-vm/image"));
        write_exec(&var.join("lib/osroll-vm/pod.sh"), pod_sh);
        for (file, body) in sa {
            fs::create_dir_all(var.join("lib/osroll-vm/sa")).unwrap();
            fs::write(var.join("lib/osroll-vm/sa").join(file), body).unwrap();
        }
        let var_img = work.join("var.ext4");
        mkfs(&var_img, &var, 100, "var");

        let disk = work.join("disk.img");
        partition(&disk);
        grub(&self.core, &disk);
        for (img, label) in [
            (&self.boot_img, "boot"),
            (&self.v1, "osroll-a"),
            (&var_img, "osroll-var"),
        ] {
            write_at(&disk, img, label);
        }
        Artefacts {
            disk,
            v2: self.v2.clone(),
            v2_broken: self.v2_broken.clone(),
            work,
        }
    }
}

fn partition(disk: &Path) {
    let _ = fs::remove_file(disk);
    let f = fs::File::create(disk).unwrap();
    let (_, start, size) = PARTS[PARTS.len() - 1];
    f.set_len((start + size + 1) * MIB).unwrap();
    let mut script = String::from("label: gpt\n");
    for (name, start, size) in PARTS {
        let ty = if *name == "bios" {
            "21686148-6449-6E6F-744E-656564454649"
        } else {
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        };
        script.push_str(&format!(
            "start={}, size={}, type={ty}, name={name}\n",
            start * MIB / 512,
            size * MIB / 512
        ));
    }
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk");
}

/// Start of partition `label`, in bytes.
pub(crate) fn offset(label: &str) -> u64 {
    PARTS.iter().find(|p| p.0 == label).unwrap().1 * MIB
}

pub(crate) fn write_at(disk: &Path, img: &Path, label: &str) {
    let data = fs::read(img).unwrap();
    let size = PARTS.iter().find(|p| p.0 == label).unwrap().2 * MIB;
    assert!(
        data.len() as u64 <= size,
        "{} does not fit {label}",
        img.display()
    );
    let mut f = fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.seek(SeekFrom::Start(offset(label))).unwrap();
    f.write_all(&data).unwrap();
}

/// GRUB's core.img for BIOS, with the modules the shipped `grub.cfg` uses.
fn core_img(work: &Path) -> PathBuf {
    let core = work.join("core.img");
    run(Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-o"])
        .arg(&core)
        .args(["-p", "(hd0,gpt2)/grub"])
        .args([
            "biosdisk",
            "part_gpt",
            "ext2",
            "normal",
            "configfile",
            "loadenv",
            "test",
            "echo",
            "linux",
            "regexp",
            "search",
        ]));
    core
}

/// GRUB for BIOS without grub-install: core.img into the BIOS boot partition, boot.img
/// into the MBR's code area, each told where the next stage sits (what
/// grub-bios-setup patches).
fn grub(core: &Path, disk: &Path) {
    let core_sector = offset("bios") / 512;
    let mut boot = fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    // GRUB_BOOT_MACHINE_KERNEL_SECTOR: where boot.img loads diskboot (core.img's head).
    boot[0x5c..0x64].copy_from_slice(&core_sector.to_le_bytes());
    let mut core_img = fs::read(core).unwrap();
    // diskboot's blocklist (last 12 bytes of its sector): the rest of core.img follows.
    core_img[500..508].copy_from_slice(&(core_sector + 1).to_le_bytes());
    let mut f = fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all(&boot[..440]).unwrap();
    f.seek(SeekFrom::Start(offset("bios"))).unwrap();
    f.write_all(&core_img).unwrap();
}
