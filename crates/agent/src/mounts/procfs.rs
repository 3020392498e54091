//! Reading `/proc`: each process's mount table (`/proc/<pid>/mountinfo`) and the pod it
//! belongs to (the pod UID in `/proc/<pid>/cgroup`).
//!
//! The proc root is a parameter so tests (and an agent whose host `/proc` is mounted
//! elsewhere) can point it at any directory shaped like `/proc`. The agent needs
//! `hostPID: true` to see the node's processes.

use std::fs;
use std::io;
use std::path::Path;

/// One line of a mountinfo file (the fields osroll uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Path inside the source filesystem that is mounted (field 4).
    pub root: String,
    /// Where it is mounted, in the process's mount namespace (field 5).
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (device, or e.g. `overlay`).
    pub source: String,
}

/// The mounts of one process that runs in a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMounts {
    /// Process id (in the proc root's namespace).
    pub pid: u32,
    /// UID of the pod whose cgroup holds the process.
    pub pod_uid: String,
    /// Its mount table.
    pub mounts: Vec<MountEntry>,
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mountinfo line without the fields every line has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mountinfo line {line}: malformed: {text:?}")]
pub struct MalformedMountinfo {
    /// Its number, from 1.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// Parse a mountinfo file:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, MalformedMountinfo> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .filter(|&p| p >= 6 && fields.len() >= p + 3)
            .ok_or_else(|| MalformedMountinfo {
                line: n + 1,
                text: line.to_string(),
            })?;
        out.push(MountEntry {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            fs_type: unescape(fields[sep + 1]),
            source: unescape(fields[sep + 2]),
        });
    }
    Ok(out)
}

/// `8-4-4-4-12` lowercase hex.
fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pod UID in a `/proc/<pid>/cgroup` file, for either cgroup driver:
/// `.../kubepods-burstable-pod<uid with _>.slice/...` (systemd) or
/// `.../kubepods/burstable/pod<uid>/...` (cgroupfs). `None` for processes outside pods.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        // `hierarchy-id:controllers:path`; the path may itself contain ':'.
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        if !path.contains("kubepods") {
            continue;
        }
        for seg in path.split('/') {
            let seg = seg.strip_suffix(".slice").unwrap_or(seg);
            let cand = match seg.rfind("-pod") {
                Some(i) if seg.starts_with("kubepods") => &seg[i + 4..],
                _ => match seg.strip_prefix("pod") {
                    Some(rest) => rest,
                    None => continue,
                },
            };
            let uid = cand.replace('_', "-").to_ascii_lowercase();
            if is_uid(&uid) {
                return Some(uid);
            }
        }
    }
    None
}

/// The pod the calling process runs in (`<proc_root>/self/cgroup`), to keep the agent
/// from restarting itself.
pub fn own_pod_uid(proc_root: &Path) -> Option<String> {
    fs::read_to_string(proc_root.join("self/cgroup"))
        .ok()
        .and_then(|t| pod_uid_from_cgroup(&t))
}

/// Every process under `proc_root` that runs in a pod, with its mounts. Processes that
/// vanish or cannot be read while scanning are left out: they hold nothing any more, or
/// are not the agent's to judge.
pub fn scan_proc(proc_root: &Path) -> io::Result<Vec<ProcessMounts>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(proc_root)? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Some(pod_uid) = fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|t| pod_uid_from_cgroup(&t))
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(dir.join("mountinfo")) else {
            continue;
        };
        match parse_mountinfo(&text) {
            Ok(mounts) => out.push(ProcessMounts {
                pid,
                pod_uid,
                mounts,
            }),
            Err(e) => tracing::warn!(pid, "skipping unreadable mount table: {e}"),
        }
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text = "\
22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
1234 1200 252:3 /ostree/deploy/fedora/deploy/abc.0/etc/cni/net.d /host/etc/cni/net.d rw,relatime master:1 shared:7 - xfs /dev/vda4 rw,attr2
99 98 0:50 /my\\040dir /mnt/with\\040space rw - tmpfs tmp\\134fs rw
";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1].root,
            "/ostree/deploy/fedora/deploy/abc.0/etc/cni/net.d"
        );
        assert_eq!(m[1].mount_point, "/host/etc/cni/net.d");
        assert_eq!(
            (m[1].fs_type.as_str(), m[1].source.as_str()),
            ("xfs", "/dev/vda4")
        );
        assert_eq!(m[2].root, "/my dir");
        assert_eq!(m[2].mount_point, "/mnt/with space");
        assert_eq!(m[2].source, "tmp\\fs");
        assert!(
            parse_mountinfo("1 2 3 / /x rw\n")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }

    #[test]
    fn finds_pod_uids_for_both_cgroup_drivers() {
        let uid = "7f3c9b2e-1a2b-4c5d-8e9f-0123456789ab";
        let systemd = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f3c9b2e_1a2b_4c5d_8e9f_0123456789ab.slice/cri-containerd-5e1f.scope\n";
        let guaranteed = "0::/kubepods.slice/kubepods-pod7f3c9b2e_1a2b_4c5d_8e9f_0123456789ab.slice/cri-containerd-5e1f.scope\n";
        let cgroupfs_v1 = "12:memory:/kubepods/besteffort/pod7f3c9b2e-1a2b-4c5d-8e9f-0123456789ab/5e1f\n11:cpu:/\n";
        for text in [systemd, guaranteed, cgroupfs_v1] {
            assert_eq!(pod_uid_from_cgroup(text).as_deref(), Some(uid), "{text}");
        }
        assert_eq!(
            pod_uid_from_cgroup("0::/system.slice/kubelet.service\n"),
            None
        );
        assert_eq!(pod_uid_from_cgroup("0::/user.slice/pod-notauid\n"), None);
    }
}
