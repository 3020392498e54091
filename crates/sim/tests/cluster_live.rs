//! Cluster test of the no-reboot path, with the real controller and the real agents on
//! three kubelet-lite nodes (or the real cluster named by `OSROLL_E2E_KUBECONFIG`):
//! each agent drives a small shell OS plugin that stages 2.0, says no reboot is needed
//! and applies it live. The controller must approve every node without cordoning or
//! draining it (checked on every Node watch event: no node is ever unschedulable or
//! NotReady), and each agent must restart, once, the pods that `restartOnLiveUpdate`
//! selects plus the one pod whose (simulated) mount table still points into the
//! previous version, and nothing else.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::DisruptionRecorder;
use common::fleet::{Controller, create_web_deployment, wait_rollout_end};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use osroll_agent::backends::driver::BackendConfig;
use osroll_agent::{AgentConfig, SimHost};
use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase, UpgradePhase, labels};
use osroll_sim::KubeletConfig;
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

const NODES: usize = 3;

/// A plugin whose OS version lives in `<dir>/running`; every update is live.
fn plugin(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("running"), "1.0")?;
    let exe = dir.join("os-plugin");
    let d = dir.display();
    fs::write(
        &exe,
        format!(
            r#"#!/bin/sh
req=$(cat)
printf '%s' "$req" > '{d}/request-'"$1"'.json'
target=$(printf '%s' "$req" | sed -n 's/.*"targetVersion":"\([^"]*\)".*/\1/p')
r=$(cat '{d}/running')
ok='"apiVersion":"osroll.io/plugin/v1","ok":true'
case "$1" in
  stage) echo "{{$ok,\"rebootRequired\":false,\"currentVersion\":\"$r\"}}" ;;
  apply) printf '%s' "$target" > '{d}/running'
         echo "{{$ok,\"rebootRequired\":false,\"currentVersion\":\"$target\",\"stalePaths\":[\"/usr/lib/os/$r\"]}}" ;;
  verify) echo "{{$ok,\"currentVersion\":\"$r\"}}" ;;
esac
"#
        ),
    )?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    Ok(exe)
}

/// A process of pod `uid` whose mount table has `root` mounted (the agent reads it
/// from its proc root as it would read `/proc` with hostPID).
fn fake_process(proc_root: &Path, pid: u32, uid: &str, root: &str) -> anyhow::Result<()> {
    let d = proc_root.join(pid.to_string());
    fs::create_dir_all(&d)?;
    fs::write(
        d.join("cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-ab.scope\n",
            uid.replace('-', "_")
        ),
    )?;
    fs::write(
        d.join("mountinfo"),
        format!(
            "2000 1999 0:120 / / rw - overlay overlay rw\n2001 2000 252:4 {root} /etc/cni/net.d rw - xfs /dev/vda4 rw\n"
        ),
    )?;
    Ok(())
}

fn upgrade(cluster: &Cluster) -> anyhow::Result<OSUpgrade> {
    let catalog = format!(
        "stable: \"2.0\"\nimages:\n  - version: \"2.0\"\n    url: https://os.example/2.0\n    checksum: sha256:{}\n",
        "ab".repeat(32)
    );
    cluster.upgrade(
        "live",
        json!({
            "version": "stable",
            "catalog": {"inline": catalog},
            "strategy": {"maxUnavailable": 1},
            "restartOnLiveUpdate": {"matchLabels": {"app": "cni"}},
            // The plugin's live apply is what this OSUpgrade asks for: without it the
            // controller drains every node, whatever the agents report.
            "osVersionManagement": {"channel": "stable", "rebootRequired": false},
        }),
    )
}

async fn pods(admin: &kube::Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_live_update_on_three_nodes_without_any_cordon() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let _workloads = cluster.start_workloads();
    let dir = tempfile::tempdir()?;

    let mut agents = Vec::new();
    let mut kubelets = Vec::new();
    let mut proc_roots = BTreeMap::new();
    for i in 0..NODES {
        let name = cluster.name(&format!("node-{i:02}"));
        let nd = dir.path().join(&name);
        let host = SimHost::create(&nd.join("host"), 4096, "1.0")?;
        let exe = plugin(&nd.join("os"))?;
        let proc_root = nd.join("proc");
        fs::create_dir_all(&proc_root)?;
        proc_roots.insert(name.clone(), proc_root.clone());
        kubelets.push(cluster.add_node(KubeletConfig::new(&name)).await?);
        let client = cluster.agent_client(&name).await?;
        let mut cfg = AgentConfig::new(&name, nd.join("state"));
        cfg.resync = Duration::from_secs(2);
        cfg.error_backoff = Duration::from_millis(300);
        cfg.backend = BackendConfig::Plugin {
            path: exe,
            timeout: Duration::from_secs(20),
        };
        cfg.proc_root = proc_root;
        agents.push(tokio::spawn(osroll_agent::run(cfg, client, Arc::new(host))));
    }
    cluster.wait_managed(NODES).await?;

    // A CNI DaemonSet (restarted by the selector) and a Deployment (left alone, except
    // the one pod whose mount table points into the previous version).
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cni", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "cni"}},
                 "template": {"metadata": {"labels": {"app": "cni"}},
                              "spec": {"containers": [{"name": "cni", "image": "registry.example/cni:1"}]}}},
    }))?;
    Api::<DaemonSet>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &ds)
        .await?;
    create_web_deployment(&admin, &ns).await?;
    let before = wait_for("3 cni and 3 web pods", Duration::from_secs(30), || async {
        let ps = pods(&admin, &ns).await;
        let n = |app: &str| {
            ps.iter()
                .filter(|p| {
                    p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app"))
                        .map(String::as_str)
                        == Some(app)
                })
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count()
        };
        (n("cni") == NODES && n("web") == 3).then_some(ps)
    })
    .await?;
    let app = |p: &Pod| {
        p.metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("app")
            .cloned()
    };
    let cni: BTreeSet<String> = before
        .iter()
        .filter(|p| app(p).as_deref() == Some("cni"))
        .map(uid)
        .collect();
    let web: Vec<&Pod> = before
        .iter()
        .filter(|p| app(p).as_deref() == Some("web"))
        .collect();
    let stale = web[0];
    let stale_node = stale
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    fake_process(
        &proc_roots[&stale_node],
        4242,
        &uid(stale),
        "/usr/lib/os/1.0/etc/cni/net.d",
    )?;
    // Another web pod with an unrelated mount stays.
    fake_process(&proc_roots[&stale_node], 4243, &uid(web[1]), "/var/lib/web")?;

    // Record every pod deletion and every Node state from watch events.
    let deleted = Arc::new(Mutex::new(Vec::<String>::new()));
    let d2 = deleted.clone();
    let pod_api: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let pod_watch = tokio::spawn(async move {
        let mut s = watcher(pod_api, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            if let Ok(watcher::Event::Delete(p)) = ev {
                d2.lock().unwrap().push(uid(&p));
            }
        }
    });
    let recorder = DisruptionRecorder::default();
    let rec_task = tokio::spawn(
        recorder
            .clone()
            .run_selected(admin.clone(), cluster.scope().selector()),
    );

    let up = upgrade(&cluster)?;
    let up_name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(&cluster, "replica-a", Duration::from_millis(300)).await?;

    let st = wait_rollout_end(&admin, &up_name, Duration::from_secs(90)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    assert_eq!(st.nodes.as_ref().map(|n| n.completed), Some(NODES as u32));

    let progresses: Vec<OSUpgradeProgress> = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| cluster.scope().owns(&p.spec.node_name))
        .collect();
    assert_eq!(progresses.len(), NODES);
    for p in &progresses {
        let s = p.status.clone().unwrap_or_default();
        assert_eq!(s.phase, Some(ProgressPhase::Completed), "{s:?}");
        assert_eq!(
            (s.current_version.as_deref(), s.reboot_required),
            (Some("2.0"), Some(false))
        );
        let node = &p.spec.node_name;
        let running = fs::read_to_string(dir.path().join(node).join("os/running"))?;
        assert_eq!(running, "2.0", "{node}");
        // The plugin got osVersionManagement copied from the OSUpgrade.
        let req: serde_json::Value = serde_json::from_str(&fs::read_to_string(
            dir.path().join(node).join("os/request-apply.json"),
        )?)?;
        assert_eq!(
            req["osVersionManagement"],
            json!({"channel": "stable", "rebootRequired": false})
        );
    }

    // No node was ever cordoned or NotReady, as seen by a watch on Nodes.
    assert!(
        !recorder.history.lock().unwrap().is_empty(),
        "the Node watch saw events"
    );
    assert_eq!(
        recorder.max(),
        0,
        "nodes disrupted: {:?}",
        recorder.history.lock().unwrap()
    );
    for n in Api::<Node>::all(admin.clone())
        .list(&ListParams::default().labels(&cluster.scope().selector()))
        .await?
        .items
    {
        assert!(!n.spec.and_then(|s| s.unschedulable).unwrap_or(false));
        assert!(
            !n.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(labels::CORDONED_BY)
        );
    }
    // Approved live, announced as such.
    wait_for(
        "LiveUpdateApproved events",
        Duration::from_secs(10),
        || async {
            let evs = Api::<Event>::all(admin.clone())
                .list(&ListParams::default())
                .await
                .ok()?
                .items;
            let n = evs
                .iter()
                .filter(|e| e.reason.as_deref() == Some("LiveUpdateApproved"))
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(up_name.as_str())
                })
                .count();
            (n == NODES).then_some(())
        },
    )
    .await?;

    // Exactly the selected and the stale pods were restarted, each once.
    let mut want: BTreeSet<String> = cni.clone();
    want.insert(uid(stale));
    wait_for(
        "the restarted pods to be gone",
        Duration::from_secs(10),
        || async {
            let now: BTreeSet<String> = pods(&admin, &ns).await.iter().map(uid).collect();
            want.iter().all(|u| !now.contains(u)).then_some(())
        },
    )
    .await?;
    let gone: BTreeSet<String> = deleted.lock().unwrap().iter().cloned().collect();
    let originals: BTreeSet<String> = before.iter().map(uid).collect();
    let gone_originals: BTreeSet<String> = gone.intersection(&originals).cloned().collect();
    assert_eq!(gone_originals, want, "restarted pods");
    if let Some(audit) = cluster.audit() {
        let mut deletes: BTreeMap<String, usize> = BTreeMap::new();
        for e in audit.iter().filter(|e| {
            e.verb == "delete" && e.resource == "pods" && e.user == cluster.agent_user()
        }) {
            *deletes.entry(e.name.clone()).or_default() += 1;
        }
        assert_eq!(deletes.len(), want.len(), "{deletes:?}");
        assert!(
            deletes.values().all(|n| *n == 1),
            "each pod deleted once: {deletes:?}"
        );
    }

    ctrl.stop().await?;
    rec_task.abort();
    pod_watch.abort();
    for a in agents {
        a.abort();
    }
    drop(kubelets);
    Ok(())
}
