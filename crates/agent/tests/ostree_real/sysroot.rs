//! A directory sysroot managed by Debian's real `ostree`, standing in for an OSTree node.
//!
//! `ostree admin` only reports a booted deployment (and only stages) when `/` is that
//! deployment and `/run/ostree-booted` exists. [`Sysroot::enter`] is a host-prefix
//! script that builds exactly that view for every command the backend runs: a private
//! mount and PID namespace whose root is the "booted" deployment, with the physical
//! sysroot at `/sysroot`, its `/boot` at `/boot`, the host's `/usr` for the tool itself,
//! and a `/run` that lasts until the next [`Sysroot::reboot`]. A reboot finalizes the
//! staged deployment as shutdown would, then boots what the default BLS entry's
//! `ostree=` argument names, as the initramfs would.
//!
//! Needs root (namespaces, mounts, `chattr`) and the `ostree` tool; without either the
//! fixture panics saying so.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stateroot every test deploys into.
pub(crate) const OS: &str = "testos";

/// A sysroot in a temporary directory, with `enter` (the host prefix) beside it.
pub(crate) struct Sysroot {
    dir: tempfile::TempDir,
}

/// Run `cmd`, panicking with its stderr when it fails; its stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fail loudly when this machine cannot run the real-ostree tests.
fn require_tools() {
    let ostree = Command::new("ostree").arg("--version").output();
    assert!(
        ostree.is_ok_and(|o| o.status.success()),
        "the `ostree` tool is missing: install Debian's ostree (ci/debian-packages.txt, `bash ci/packages`)"
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "the real-ostree tests need root (mount namespaces, chattr on deployment roots)"
    );
}

impl Sysroot {
    /// `init-fs` and `os-init` a fresh sysroot.
    pub(crate) fn new() -> Sysroot {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        let s = Sysroot { dir };
        fs::create_dir_all(s.path()).unwrap();
        fs::create_dir_all(s.run_dir()).unwrap();
        run(Command::new("ostree")
            .args(["admin", "init-fs"])
            .arg(s.path()));
        run(Command::new("ostree")
            .args(["admin", "os-init", OS])
            .arg(s.sysroot_arg()));
        s.write_enter();
        s
    }

    /// The physical sysroot.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("sysroot")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn booted_file(&self) -> PathBuf {
        self.dir.path().join("booted")
    }

    /// The host prefix that runs a command on the "booted" node.
    pub(crate) fn enter(&self) -> PathBuf {
        self.dir.path().join("enter")
    }

    fn sysroot_arg(&self) -> String {
        format!("--sysroot={}", self.path().display())
    }

    fn write_enter(&self) {
        let script = format!(
            r#"#!/bin/sh
# Run "$@" on the simulated booted node (see tests/ostree_real/sysroot.rs).
exec unshare --mount --pid --fork --propagation private sh -euc '
s=$1; d=$2; r=$3; shift 3
mount --bind "$s" "$d/sysroot"
mount --bind /usr "$d/usr"
mount --bind "$s/boot" "$d/boot"
mount --bind "$r" "$d/run"
touch "$d/run/ostree-booted"
mount -t proc proc "$d/proc"
mount --rbind /dev "$d/dev"
exec chroot "$d" "$@"' enter '{sysroot}' "$(cat '{booted}')" '{run}' "$@"
"#,
            sysroot = self.path().display(),
            booted = self.booted_file().display(),
            run = self.run_dir().display(),
        );
        fs::write(self.enter(), script).unwrap();
        fs::set_permissions(self.enter(), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Commit a small OS tree of `version` to `branch`; its checksum. The tree has what
    /// `ostree admin deploy` needs (a kernel, `usr/etc`, os-release) and the mount points
    /// [`Sysroot::enter`] uses.
    pub(crate) fn commit(&self, branch: &str, version: &str) -> String {
        let tree = self.dir.path().join(format!("tree-{version}"));
        for d in [
            "usr/lib/modules/6.1.0",
            "usr/etc/cni/net.d",
            "usr/bin",
            "usr/lib64",
            "sysroot",
            "run",
            "proc",
            "dev",
            "boot",
            "var",
            "tmp",
        ] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }
        for (link, to) in [
            ("ostree", "sysroot/ostree"),
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(to, tree.join(link)).unwrap();
        }
        let modules = tree.join("usr/lib/modules/6.1.0");
        fs::write(modules.join("vmlinuz"), format!("kernel {version}\n")).unwrap();
        fs::write(modules.join("initramfs.img"), "initramfs\n").unwrap();
        let release = format!("ID={OS}\nVERSION_ID={version}\n");
        fs::write(tree.join("usr/lib/os-release"), &release).unwrap();
        fs::write(tree.join("usr/etc/os-release"), &release).unwrap();
        fs::write(
            tree.join("usr/etc/cni/net.d/10-calico.conflist"),
            format!("token for {version}\n"),
        )
        .unwrap();
        run(Command::new("ostree")
            .arg(format!("--repo={}/ostree/repo", self.path().display()))
            .args(["commit", &format!("--branch={branch}")])
            .arg(format!("--add-metadata-string=version={version}"))
            .arg(format!("--tree=dir={}", tree.display())))
    }

    /// Install `reference` as the node's first deployment (from outside, as an installer
    /// would) with `kargs`, and boot it.
    pub(crate) fn install(&self, reference: &str, kargs: &[&str]) {
        let mut cmd = Command::new("ostree");
        cmd.args(["admin", "deploy"])
            .arg(self.sysroot_arg())
            .arg(format!("--os={OS}"));
        for k in kargs {
            cmd.arg(format!("--karg={k}"));
        }
        run(cmd.arg(reference));
        self.boot_entry(0);
    }

    /// Run `args` on the booted node; stdout.
    pub(crate) fn on_node(&self, args: &[&str]) -> String {
        run(Command::new(self.enter()).args(args))
    }

    /// Shut down (finalizing a staged deployment) and boot the default entry, or with
    /// `fallback` the one after it (the bootloader fell back).
    pub(crate) fn reboot(&self, fallback: bool) {
        if fs::exists(self.run_dir().join("ostree/staged-deployment")).unwrap() {
            self.on_node(&["ostree", "admin", "finalize-staged"]);
        }
        fs::remove_dir_all(self.run_dir()).unwrap();
        fs::create_dir_all(self.run_dir()).unwrap();
        self.boot_entry(usize::from(fallback));
    }

    /// The BLS entries, default first (ostree gives the default the highest `version`).
    pub(crate) fn entries(&self) -> Vec<BlsEntry> {
        let dir = self.path().join("boot/loader/entries");
        let mut entries: Vec<BlsEntry> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| BlsEntry::parse(&fs::read_to_string(e.unwrap().path()).unwrap()))
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.version));
        entries
    }

    /// Make entry `n` (0: the default) the booted deployment: resolve its `ostree=`.
    fn boot_entry(&self, n: usize) {
        let entry = &self.entries()[n];
        let ostree = entry
            .options
            .iter()
            .find_map(|o| o.strip_prefix("ostree="))
            .expect("BLS entry without ostree=");
        let link = self.path().join(ostree.trim_start_matches('/'));
        let deployment = fs::canonicalize(&link).unwrap();
        fs::write(self.booted_file(), deployment.display().to_string()).unwrap();
    }

    /// The directory of the booted deployment.
    pub(crate) fn booted_dir(&self) -> PathBuf {
        PathBuf::from(fs::read_to_string(self.booted_file()).unwrap())
    }
}

impl Drop for Sysroot {
    /// Deployment roots are immutable (`chattr +i`): clear that so the directory can go.
    fn drop(&mut self) {
        let deploy = self.path().join("ostree/deploy").join(OS).join("deploy");
        let Ok(entries) = fs::read_dir(&deploy) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = Command::new("chattr").arg("-i").arg(e.path()).status();
            }
        }
    }
}

/// One boot loader entry.
#[derive(Debug)]
pub(crate) struct BlsEntry {
    /// `version`.
    pub(crate) version: u32,
    /// `options`, split.
    pub(crate) options: Vec<String>,
}

impl BlsEntry {
    fn parse(text: &str) -> BlsEntry {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
                .unwrap_or_default()
                .to_string()
        };
        BlsEntry {
            version: field("version").parse().expect("BLS version"),
            options: field("options")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }
}

/// The path `p` as a string.
pub(crate) fn display(p: &Path) -> String {
    p.display().to_string()
}
