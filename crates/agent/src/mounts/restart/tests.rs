//! A simulated node: a fake `/proc` tree in a temp dir and an in-memory pod API.

use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;

const OLD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NEW: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn uid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

fn applied_at() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// A process of pod `n` (systemd cgroup driver) with the given mount roots.
fn process(proc_root: &Path, pid: u32, pod: Option<u32>, roots: &[String]) {
    let dir = proc_root.join(pid.to_string());
    fs::create_dir_all(&dir).unwrap();
    let cgroup = match pod {
        Some(n) => format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{pid:x}.scope\n",
            uid(n).replace('-', "_")
        ),
        None => "0::/system.slice/sshd.service\n".to_string(),
    };
    fs::write(dir.join("cgroup"), cgroup).unwrap();
    let mut mountinfo = String::from(
        "2000 1999 0:120 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/l1\n",
    );
    for (i, root) in roots.iter().enumerate() {
        mountinfo += &format!(
            "{} 2000 252:4 {root} /host/mnt{i} rw,relatime master:1 - xfs /dev/vda4 rw\n",
            2001 + i
        );
    }
    fs::write(dir.join("mountinfo"), mountinfo).unwrap();
}

fn deploy(checksum: &str, sub: &str) -> String {
    format!("/ostree/deploy/fedora/deploy/{checksum}.0/{sub}")
}

/// Five pods: calico (1) and multus (2) hold mounts into the old deployment, the others
/// (3, 4, 5) do not; pid 1 (the host) does too but belongs to no pod.
fn five_pod_node() -> (tempfile::TempDir, Vec<PodInfo>) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    process(p, 1, None, &[deploy(OLD, "")]);
    process(p, 101, Some(1), &[deploy(OLD, "etc/cni/net.d")]);
    process(
        p,
        102,
        Some(1),
        &[deploy(OLD, "etc/cni/net.d"), deploy(OLD, "var/lib/calico")],
    );
    process(p, 201, Some(2), &["/var/lib/kubelet/pods/x/volumes".into()]);
    process(p, 202, Some(2), &[deploy(OLD, "etc/cni/net.d/multus.d")]);
    process(p, 301, Some(3), &["/var/lib/kubelet/pods/y/volumes".into()]);
    process(p, 401, Some(4), &[deploy(NEW, "etc/cni/net.d")]);
    process(p, 501, Some(5), &[]);
    fs::create_dir(p.join("self")).unwrap();
    fs::write(p.join("sys"), "not a process").unwrap();
    let pods = [
        (1, "kube-system", "calico-node-7x2k"),
        (2, "kube-system", "kube-multus-ds-q8v4"),
        (3, "default", "web-5d8f-abcde"),
        (4, "default", "db-0"),
        (5, "monitoring", "node-exporter-zz9"),
    ]
    .into_iter()
    .map(|(n, ns, name)| PodInfo {
        pod: PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid(n),
        },
        labels: Default::default(),
        created: Some(Timestamp::from_second(1_700_000_000).unwrap()),
        terminating: false,
        controlled: true,
    })
    .collect();
    (d, pods)
}

/// Pods in memory. Deleted pods stay listed (their termination takes a while), so only
/// the ledger keeps a second pass from deleting them again.
#[derive(Default)]
struct FakePods {
    pods: Vec<PodInfo>,
    deleted: Mutex<Vec<PodRef>>,
    lists: AtomicUsize,
}

impl PodApi for FakePods {
    async fn list_node_pods(&self, node: &str) -> Result<Vec<PodInfo>, MountsError> {
        assert_eq!(node, "node-1");
        self.lists.fetch_add(1, Ordering::SeqCst);
        Ok(self.pods.clone())
    }

    async fn delete_pod(&self, pod: &PodRef) -> Result<(), MountsError> {
        self.deleted.lock().unwrap().push(pod.clone());
        Ok(())
    }
}

impl FakePods {
    fn deleted_names(&self) -> Vec<String> {
        self.deleted
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }
}

fn job(proc_root: &Path, reboot_follows: bool) -> LiveRestartJob {
    LiveRestartJob {
        node: "node-1".into(),
        proc_root: proc_root.to_path_buf(),
        stale: vec![StaleRef::Path(format!(
            "/ostree/deploy/fedora/deploy/{OLD}.0"
        ))],
        selector: None,
        applied_at: applied_at(),
        reboot_follows,
    }
}

#[tokio::test]
async fn exactly_the_two_pods_with_stale_mounts_are_restarted_once() {
    let (d, pods) = five_pod_node();
    let api = FakePods {
        pods,
        ..Default::default()
    };
    let ledger_path = d.path().join("state/live-restarts.json");
    let ledger = FileLedger::new(&ledger_path, "osupgrade-abc/24.09.400/");
    let j = job(d.path(), false);

    let first = restart_after_live_update(&j, &api, &ledger).await.unwrap();
    let want = [
        "kube-system/calico-node-7x2k",
        "kube-system/kube-multus-ds-q8v4",
    ];
    assert_eq!(api.deleted_names(), want);
    let reasons: Vec<_> = first.restarted.iter().map(|r| r.reasons.clone()).collect();
    assert_eq!(
        reasons,
        [
            vec![format!(
                "pid 101 has /host/mnt0 mounted from {}, in the previous deployment",
                deploy(OLD, "etc/cni/net.d")
            )],
            vec![format!(
                "pid 202 has /host/mnt0 mounted from {}, in the previous deployment",
                deploy(OLD, "etc/cni/net.d/multus.d")
            )],
        ]
    );
    assert!(
        first
            .summary()
            .starts_with("restarted 2 pod(s) after the live update: kube-system/calico-node-7x2k")
    );

    // A second pass (a restarted agent: fresh ledger object over the same file) while
    // the deleted pods are still listed deletes nothing more.
    let again = FileLedger::new(&ledger_path, "osupgrade-abc/24.09.400/");
    let second = restart_after_live_update(&j, &api, &again).await.unwrap();
    assert!(second.restarted.is_empty(), "{second:?}");
    assert_eq!(api.deleted_names(), want);

    // The ledger of another update does not suppress anything.
    assert!(
        FileLedger::new(&ledger_path, "osupgrade-abc/24.09.500/")
            .restarted()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn nothing_is_restarted_when_a_reboot_follows() {
    let (d, pods) = five_pod_node();
    let api = FakePods {
        pods,
        ..Default::default()
    };
    let ledger = MemoryLedger::default();
    let report = restart_after_live_update(&job(d.path(), true), &api, &ledger)
        .await
        .unwrap();
    assert_eq!(report, LiveRestartReport::default());
    assert!(api.deleted_names().is_empty());
    assert_eq!(api.lists.load(Ordering::SeqCst), 0);
    assert!(ledger.pods().is_empty());
}

#[tokio::test]
async fn the_selector_adds_pods_and_the_agent_never_restarts_itself() {
    let (d, mut pods) = five_pod_node();
    // The agent runs as pod 5 and holds the old root too (it mounts the host's /).
    process(d.path(), 502, Some(5), &[deploy(OLD, "")]);
    fs::write(
        d.path().join("self/cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-1.scope\n",
            uid(5).replace('-', "_")
        ),
    )
    .unwrap();
    pods[2].labels.insert("restart-me".into(), "yes".into());
    let api = FakePods {
        pods,
        ..Default::default()
    };
    let mut j = job(d.path(), false);
    j.selector = Some(LabelSelector {
        match_labels: Some([("restart-me".to_string(), "yes".to_string())].into()),
        ..Default::default()
    });
    let ledger = MemoryLedger::default();
    let report = restart_after_live_update(&j, &api, &ledger).await.unwrap();
    assert_eq!(
        api.deleted_names(),
        [
            "default/web-5d8f-abcde",
            "kube-system/calico-node-7x2k",
            "kube-system/kube-multus-ds-q8v4"
        ]
    );
    assert_eq!(ledger.pods().len(), 3);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].pod.name, "node-exporter-zz9");
    assert!(
        report
            .summary()
            .ends_with("left alone: monitoring/node-exporter-zz9 (it is the osroll agent itself)")
    );
}

#[tokio::test]
async fn an_unreadable_proc_root_is_an_error_naming_it() {
    let api = FakePods::default();
    let err = restart_after_live_update(
        &job(Path::new("/nonexistent/proc"), false),
        &api,
        &MemoryLedger::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot scan /nonexistent/proc:"),
        "{err}"
    );
    assert!(api.deleted_names().is_empty());
}

#[test]
fn pod_info_reads_owner_deletion_and_creation() {
    use k8s_openapi::api::core::v1::Pod;
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "calico-node-7x2k", "namespace": "kube-system", "uid": uid(1),
            "creationTimestamp": "2027-01-15T08:00:00Z",
            "labels": {"k8s-app": "calico-node"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "calico-node", "uid": uid(9), "controller": true}]
        }
    }))
    .unwrap();
    let info = pod_info(&p).unwrap();
    assert!(info.controlled && !info.terminating);
    assert_eq!(info.created, Some("2027-01-15T08:00:00Z".parse().unwrap()));
    assert_eq!(info.labels["k8s-app"], "calico-node");
    let bare: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "x", "namespace": "d", "uid": uid(2), "deletionTimestamp": "2027-01-15T08:00:00Z"}
    }))
    .unwrap();
    let info = pod_info(&bare).unwrap();
    assert!(!info.controlled && info.terminating);
}
