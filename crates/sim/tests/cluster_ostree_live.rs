//! The first seed's test plan as a cluster test: an OSTree node gets a patch, once
//! without a reboot and once with one. The real controller and the real agent run on a
//! kubelet-lite node with five pods; two of them (standing in for Calico and Multus)
//! hold a mount of `/etc/cni/net.d` from inside the running OSTree deployment, as the
//! agent sees it through the node's (simulated) `/proc`. The host tool is a scripted
//! `rpm-ostree` (not packaged here) that stages, switches live (`apply-live`) and
//! "reboots" into the staged deployment.
//!
//! After the live patch exactly those two pods are deleted (to be recreated with fresh
//! mounts), once each, as counted from the API server's audit log; after the patch that
//! reboots, no pod is deleted by the agent at all. The word that the patch needs no
//! reboot comes either from the OSUpgrade's `osVersionManagement` or from the catalog
//! entry's `rebootRequired`, and the entry's `rebootRequired: true` wins over an
//! `osVersionManagement` saying `false`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::fleet::{Controller, create_web_deployment, wait_rollout_end};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use osroll_agent::backends::driver::BackendConfig;
use osroll_agent::backends::ostree::{OstreeConfig, OstreeTool};
use osroll_agent::{AgentConfig, AgentExit, SimHost};
use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase, UpgradePhase};
use osroll_sim::KubeletConfig;
use osroll_sim::kubelet::Kubelet;
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

/// The node, before the instance's prefix.
const NODE: &str = "node-00";
const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A scripted `rpm-ostree` whose deployments live in `dir` (`booted`, `next`, `live`:
/// a checksum each). `rebase` stages the new commit, `apply-live` switches to it.
fn rpm_ostree(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("booted"), OLD)?;
    let exe = dir.join("rpm-ostree");
    let d = dir.display();
    fs::write(
        &exe,
        format!(
            r#"#!/bin/sh
S='{d}'
printf '%s\n' "$*" >> "$S/calls"
role() {{ cat "$S/$1" 2>/dev/null; }}
ver() {{ [ "$1" = {OLD} ] && echo 1.0 || echo 2.0; }}
entry() {{
  lr=; [ "$2" = true ] && [ -n "$(role live)" ] && lr=",\"live-replaced\":\"$(role live)\""
  printf '{{"osname":"fedora","serial":0,"checksum":"%s","version":"%s","booted":%s,"staged":%s%s}}' "$1" "$(ver "$1")" "$2" "$3" "$lr"
}}
case "$1" in
  status)
    printf '{{"deployments":['
    n=$(role next); [ -n "$n" ] && {{ entry "$n" false true; printf ,; }}
    entry "$(role booted)" true false
    printf ']}}\n' ;;
  rebase) [ "$2 $3" = "-- fedora:fedora/2.0" ] || exit 2; echo {NEW} > "$S/next" ;;
  apply-live) role next > "$S/live" ;;
  *) echo "unexpected $*" >&2; exit 64 ;;
esac
"#
        ),
    )?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    Ok(exe)
}

/// The node boots its staged deployment.
fn reboot_tool(dir: &Path) -> anyhow::Result<()> {
    let next = fs::read_to_string(dir.join("next"))?;
    fs::write(dir.join("booted"), next)?;
    fs::write(dir.join("next"), "")?;
    fs::write(dir.join("live"), "")?;
    Ok(())
}

/// A process of pod `uid` with `root` mounted at `at`, in the node's proc root.
fn process(proc_root: &Path, pid: u32, uid: &str, root: &str, at: &str) -> anyhow::Result<()> {
    let d = proc_root.join(pid.to_string());
    fs::create_dir_all(&d)?;
    let slice = uid.replace('-', "_");
    fs::write(
        d.join("cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{slice}.slice/cri-containerd-{pid}.scope\n"
        ),
    )?;
    fs::write(
        d.join("mountinfo"),
        format!(
            "3000 2999 0:120 / / rw - overlay overlay rw\n3001 3000 252:4 {root} {at} rw - xfs /dev/vda4 rw\n"
        ),
    )?;
    Ok(())
}

/// Who says whether the patch needs a reboot.
#[derive(Clone, Copy, Debug)]
enum Word {
    /// `osVersionManagement.ostree.rebootRequired: false`.
    UpgradeSaysLive,
    /// The catalog entry's `rebootRequired: false`; `osVersionManagement` says nothing.
    CatalogSaysLive,
    /// The catalog entry's `rebootRequired: true`, over `osVersionManagement`'s `false`.
    CatalogSaysRebootOverUpgrade,
}

impl Word {
    fn live(self) -> bool {
        !matches!(self, Word::CatalogSaysRebootOverUpgrade)
    }
}

fn upgrade(cluster: &Cluster, word: Word) -> anyhow::Result<OSUpgrade> {
    // The catalog names the image; the OSTree reference comes with the update.
    let (entry, ovm): (&str, Option<bool>) = match word {
        Word::UpgradeSaysLive => ("", Some(false)),
        Word::CatalogSaysLive => ("    rebootRequired: false\n", None),
        Word::CatalogSaysRebootOverUpgrade => ("    rebootRequired: true\n", Some(false)),
    };
    let catalog = format!(
        "stable: \"2.0\"\nimages:\n  - version: \"2.0\"\n    url: https://os.example/fedora-2.0\n    checksum: sha256:{NEW}\n{entry}"
    );
    let mut ostree = json!({"reference": "fedora:fedora/2.0"});
    if let Some(r) = ovm {
        ostree["rebootRequired"] = json!(r);
    }
    cluster.upgrade(
        "patch",
        json!({
            "version": "stable",
            "catalog": {"inline": catalog},
            "strategy": {"maxUnavailable": 1},
            "osVersionManagement": {"ostree": ostree},
        }),
    )
}

/// Calico and Multus (DaemonSets) and three web pods (a Deployment) in namespace `ns`
/// on `node`.
async fn five_pods(
    admin: &kube::Client,
    ns: &str,
    node: &str,
) -> anyhow::Result<BTreeMap<String, Pod>> {
    let ds = |name: &str| -> anyhow::Result<DaemonSet> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": name, "image": format!("registry.example/{name}:1")}]}}},
        }))?)
    };
    let daemonsets = Api::<DaemonSet>::namespaced(admin.clone(), ns);
    for name in ["calico-node", "kube-multus"] {
        daemonsets
            .create(&PostParams::default(), &ds(name)?)
            .await?;
    }
    create_web_deployment(admin, ns).await?;
    wait_for("five pods on the node", Duration::from_secs(30), || async {
        let pods = Api::<Pod>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let placed: BTreeMap<String, Pod> = pods
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter_map(|p| Some((p.metadata.name.clone()?, p)))
            .collect();
        (placed.len() == 5).then_some(placed)
    })
    .await
}

fn app(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app").cloned())
        .unwrap_or_default()
}

/// Give Calico and Multus their mounts into the running deployment, one web pod a mount
/// of the stateroot's `/var` (shared by every deployment), the others none.
fn mount_tables(proc_root: &Path, pods: &BTreeMap<String, Pod>) -> anyhow::Result<()> {
    let deploy = format!("/ostree/deploy/fedora/deploy/{OLD}.0");
    let mut var_given = false;
    for (pid, p) in (4000..).zip(pods.values()) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let (root, at) = match app(p).as_str() {
            "calico-node" => (format!("{deploy}/etc/cni/net.d"), "/host/etc/cni/net.d"),
            "kube-multus" => (
                format!("{deploy}/etc/cni/net.d/multus.d"),
                "/host/etc/cni/net.d/multus.d",
            ),
            _ if !var_given => {
                var_given = true;
                ("/ostree/deploy/fedora/var/lib/web".into(), "/data")
            }
            _ => ("/".into(), "/etc/hostname"),
        };
        process(proc_root, pid, &uid, &root, at)?;
    }
    Ok(())
}

/// The agent on its machine: after a (simulated) reboot the tool boots the staged
/// deployment, the host and the kubelet get a new boot id, and the agent starts again.
async fn machine(
    cfg: AgentConfig,
    client: kube::Client,
    host: SimHost,
    tool: PathBuf,
    kubelet: Arc<Kubelet>,
) {
    loop {
        match osroll_agent::run(cfg.clone(), client.clone(), Arc::new(host.clone())).await {
            Ok(AgentExit::Rebooted) => {
                kubelet.go_down("rebooting").await.expect("node down");
                reboot_tool(&tool).expect("reboot the OSTree node");
                host.boot().expect("boot the host");
                kubelet.come_up().await.expect("node up");
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent stopped; restarting");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// Pod deletions by the agents, by pod name, from the audit log. A real cluster's
/// audit log is not readable here: there, the original pods that are gone stand in
/// (each counted once), leaving out the web pods a drain may evict.
async fn agent_deletes(
    cluster: &Cluster,
    before: &BTreeMap<String, Pod>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut deletes = BTreeMap::new();
    let Some(audit) = cluster.audit() else {
        let now = Api::<Pod>::namespaced(cluster.admin(), &cluster.namespace())
            .list(&ListParams::default())
            .await?
            .items;
        let uids: Vec<_> = now.iter().map(|p| p.metadata.uid.clone()).collect();
        for (name, p) in before {
            if app(p) != "web" && !uids.contains(&p.metadata.uid) {
                deletes.insert(name.clone(), 1);
            }
        }
        return Ok(deletes);
    };
    for e in audit
        .iter()
        .filter(|e| e.verb == "delete" && e.resource == "pods" && e.user == cluster.agent_user())
    {
        *deletes.entry(e.name.clone()).or_default() += 1;
    }
    Ok(deletes)
}

/// What one patch left: the audit's pod deletions by the agent, the pods from before,
/// and the node's progress status.
type Outcome = (
    BTreeMap<String, usize>,
    BTreeMap<String, Pod>,
    OSUpgradeProgress,
);

/// Run one patch on a fresh one-node harness instance; a failure carries the diagnosis.
async fn patch(word: Word) -> anyhow::Result<Outcome> {
    let cluster = Cluster::start().await?;
    let result = run_patch(&cluster, word).await;
    cluster.explain(result).await
}

async fn run_patch(cluster: &Cluster, word: Word) -> anyhow::Result<Outcome> {
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let node = cluster.name(NODE);
    let _workloads = cluster.start_workloads();
    let dir = tempfile::tempdir()?;
    let tool_dir = dir.path().join("os");
    let proc_root = dir.path().join("proc");
    fs::create_dir_all(&proc_root)?;
    let mut oc = OstreeConfig::new(OstreeTool::RpmOstreeRebase);
    oc.program = Some(rpm_ostree(&tool_dir)?);
    let mut cfg = AgentConfig::new(&node, dir.path().join("state"));
    cfg.resync = Duration::from_secs(2);
    cfg.error_backoff = Duration::from_millis(300);
    cfg.backend = BackendConfig::Ostree(oc);
    cfg.proc_root = proc_root.clone();
    let kubelet = Arc::new(cluster.add_node(KubeletConfig::new(&node)).await?);
    let host = SimHost::create(&dir.path().join("host"), 4096, "1.0")?;
    let client = cluster.agent_client(&node).await?;
    let agent = tokio::spawn(machine(cfg, client, host, tool_dir.clone(), kubelet));
    cluster.wait_managed(1).await?;

    let before = five_pods(&admin, &ns, &node).await?;
    mount_tables(&proc_root, &before)?;
    let up = upgrade(cluster, word)?;
    let up_name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;
    let end = wait_rollout_end(&admin, &up_name, Duration::from_secs(60)).await;
    let progress = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|p| p.spec.node_name == node);
    let upgrade = Api::<OSUpgrade>::all(admin.clone()).get(&up_name).await?;
    let st = end.map_err(|e| e.context(format!("{:#?}\n{progress:#?}", upgrade.status)))?;
    let progress = progress.expect("the node's progress");
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    let calls = fs::read_to_string(tool_dir.join("calls"))?;
    assert_eq!(
        calls.lines().any(|l| l.starts_with("apply-live")),
        word.live(),
        "{word:?}: {calls}"
    );
    let deletes = agent_deletes(cluster, &before).await?;
    ctrl.stop().await?;
    agent.abort();
    Ok((deletes, before, progress))
}

/// A live patch: exactly Calico and Multus deleted, once each, and the reason given.
fn assert_stale_pods_restarted((deletes, before, progress): Outcome) {
    let st = progress.status.unwrap_or_default();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(
        (st.current_version.as_deref(), st.reboot_required),
        (Some("2.0"), Some(false))
    );
    let want: BTreeMap<String, usize> = before
        .iter()
        .filter(|(_, p)| matches!(app(p).as_str(), "calico-node" | "kube-multus"))
        .map(|(name, _)| (name.clone(), 1))
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(deletes, want, "pods the agent deleted, from the audit log");
    let message = st.message.unwrap_or_default();
    assert!(message.contains("restarted 2 pod(s)"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_ostree_patch_restarts_calico_and_multus_once_each() -> anyhow::Result<()> {
    assert_stale_pods_restarted(patch(Word::UpgradeSaysLive).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_entry_without_reboot_restarts_calico_and_multus_once_each() -> anyhow::Result<()>
{
    let outcome = patch(Word::CatalogSaysLive).await?;
    let image = outcome.2.spec.image.clone().unwrap_or_default();
    assert_eq!(image.reboot_required, Some(false), "{image:?}");
    assert_stale_pods_restarted(outcome);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ostree_patch_that_reboots_restarts_no_pod() -> anyhow::Result<()> {
    let (deletes, _before, progress) = patch(Word::CatalogSaysRebootOverUpgrade).await?;
    let st = progress.status.unwrap_or_default();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(
        (st.current_version.as_deref(), st.reboot_required),
        (Some("2.0"), Some(true))
    );
    assert!(deletes.is_empty(), "the agent deleted pods: {deletes:?}");
    Ok(())
}
