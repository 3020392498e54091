//! The seeds' small details on the test API server, with the real agents and the real
//! `kubectl`:
//!
//! * a hand-made OSUpgradeProgress carrying only `spec.nodeName` and an image (no label,
//!   no source, no controller running) is picked up by that node's agent, and
//!   `kubectl wait --for=condition=Ready` returns once it completed;
//! * on an API server whose CRD cannot select `spec.nodeName` (Kubernetes before 1.30),
//!   the agent falls back to the `osroll.io/node` label;
//! * with the controller, a node whose OS plugin refuses the update ends Failed: the
//!   same wait times out on its progress, and on the OSUpgrade, which finished with a
//!   failure and so is not Ready, while the healthy node's progress is Ready.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::NS;
use common::fleet::{Controller, wait_managed, wait_rollout_end};
use kube::api::{Api, ListParams, PostParams};
use osroll_agent::backends::driver::BackendConfig;
use osroll_agent::{AgentConfig, SimHost};
use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase, UpgradePhase};
use osroll_sim::KubeletConfig;
use osroll_sim::testing::{Cluster, KubectlOutput, wait_for};
use serde_json::json;

const SUM: &str = "sha256:abababababababababababababababababababababababababababababababab";

/// A plugin whose version lives in `<dir>/running`; updates are live. With a file
/// `<dir>/refuse` it refuses to stage.
fn plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("running"), "1.0")?;
    let exe = dir.join("os-plugin");
    let d = dir.display();
    fs::write(
        &exe,
        format!(
            r#"#!/bin/sh
req=$(cat)
target=$(printf '%s' "$req" | sed -n 's/.*"targetVersion":"\([^"]*\)".*/\1/p')
r=$(cat '{d}/running')
ok='"apiVersion":"osroll.io/plugin/v1","ok":true'
if [ -e '{d}/refuse' ]; then
  echo '{{"apiVersion":"osroll.io/plugin/v1","ok":false,"error":"no such patch here"}}'
  exit 0
fi
case "$1" in
  stage) echo "{{$ok,\"rebootRequired\":false,\"currentVersion\":\"$r\"}}" ;;
  apply) printf '%s' "$target" > '{d}/running'
         echo "{{$ok,\"rebootRequired\":false,\"currentVersion\":\"$target\"}}" ;;
  verify) echo "{{$ok,\"currentVersion\":\"$r\"}}" ;;
esac
"#
        ),
    )?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    Ok(exe)
}

/// Nodes with kubelet-lite and a real agent driving [`plugin`] each.
struct Fleet {
    cluster: Cluster,
    _dir: tempfile::TempDir,
    agents: Vec<tokio::task::JoinHandle<anyhow::Result<osroll_agent::AgentExit>>>,
    _kubelets: Vec<osroll_sim::Kubelet>,
}

impl Fleet {
    /// `nodes` named as given; those in `refusing` get a plugin that refuses.
    async fn start(nodes: &[&str], refusing: &[&str]) -> anyhow::Result<Fleet> {
        let cluster = Cluster::start().await?;
        cluster.install_crds().await?;
        Fleet::start_on(cluster, nodes, refusing).await
    }

    async fn start_on(
        cluster: Cluster,
        nodes: &[&str],
        refusing: &[&str],
    ) -> anyhow::Result<Fleet> {
        cluster.ensure_namespace(NS).await?;
        let dir = tempfile::tempdir()?;
        let mut agents = Vec::new();
        let mut kubelets = Vec::new();
        for &name in nodes {
            let nd = dir.path().join(name);
            let host = SimHost::create(&nd.join("host"), 4096, "1.0")?;
            let exe = plugin(&nd.join("os"))?;
            if refusing.contains(&name) {
                fs::write(nd.join("os/refuse"), "")?;
            }
            kubelets.push(cluster.add_node(KubeletConfig::new(name)).await?);
            let client = cluster.client_for(&format!("system:node:{name}")).await?;
            let mut cfg = AgentConfig::new(name, nd.join("state"));
            cfg.resync = Duration::from_secs(2);
            cfg.error_backoff = Duration::from_millis(300);
            cfg.backend = BackendConfig::Plugin {
                path: exe,
                timeout: Duration::from_secs(20),
            };
            agents.push(tokio::spawn(osroll_agent::run(cfg, client, Arc::new(host))));
        }
        wait_managed(&cluster.client(), nodes.len()).await?;
        Ok(Fleet {
            cluster,
            _dir: dir,
            agents,
            _kubelets: kubelets,
        })
    }

    /// `kubectl wait --for=condition=Ready <what> --timeout=<secs>s`.
    async fn wait_ready(&self, what: &str, secs: u32) -> anyhow::Result<KubectlOutput> {
        let timeout = format!("--timeout={secs}s");
        self.cluster
            .kubectl_run(&["wait", "--for=condition=Ready", what, &timeout], None)
            .await
    }

    async fn progress(&self, name: &str) -> anyhow::Result<OSUpgradeProgress> {
        Ok(Api::<OSUpgradeProgress>::all(self.cluster.client())
            .get(name)
            .await?)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &self.agents {
            a.abort();
        }
    }
}

fn assert_timed_out(out: &KubectlOutput) {
    assert!(
        !out.success() && out.stderr.contains("timed out waiting for the condition"),
        "expected kubectl wait to time out: {out:?}"
    );
}

const HAND_MADE: &str = r#"
apiVersion: osroll.io/v1alpha1
kind: OSUpgradeProgress
metadata:
  name: by-hand
spec:
  nodeName: solo
  image:
    version: "2.0"
    url: https://os.example/2.0
    checksum: sha256:abababababababababababababababababababababababababababababababab
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_progress_is_picked_up_and_waits_end_on_ready() -> anyhow::Result<()> {
    let fleet = Fleet::start(&["solo", "other"], &[]).await?;
    let out = fleet
        .cluster
        .kubectl_run(&["apply", "-f", "-"], Some(HAND_MADE))
        .await?;
    assert!(out.success(), "{out:?}");
    // No label, no controller: the agent finds it by spec.nodeName and stages it.
    let staged = wait_for("the agent to stage it", Duration::from_secs(30), || async {
        let p = fleet.progress("by-hand").await.ok()?;
        let st = p
            .status
            .filter(|s| s.phase == Some(ProgressPhase::Staged))?;
        Some((p.metadata.labels, st))
    })
    .await?;
    assert_eq!(staged.0, None, "nobody labelled it");
    assert_eq!(staged.1.target_version.as_deref(), Some("2.0"));
    assert_timed_out(&fleet.wait_ready("osupgradeprogress/by-hand", 2).await?);
    // The CRD makes spec.nodeName selectable, and only that (as a real API server would).
    let cluster = &fleet.cluster;
    let get = |sel: &'static str| {
        let args = ["get", "osup", "--field-selector", sel, "-o", "name"];
        async move { cluster.kubectl_run(&args, None).await }
    };
    let by_node = get("spec.nodeName=solo").await?;
    assert_eq!(
        by_node.stdout.trim(),
        "osupgradeprogress.osroll.io/by-hand",
        "{by_node:?}"
    );
    assert!(get("spec.nodeName=other").await?.stdout.trim().is_empty());
    let other = get("spec.image.version=2.0").await?;
    assert!(
        !other.success() && other.stderr.contains("field label not supported"),
        "{other:?}"
    );

    let mut wait = fleet.cluster.kubectl();
    wait.args([
        "wait",
        "--for=condition=Ready",
        "osupgradeprogress/by-hand",
        "--timeout=30s",
    ]);
    let waiter = tokio::spawn(osroll_sim::testing::run_kubectl(wait, &[], None));
    let approve = fleet
        .cluster
        .kubectl_run(
            &[
                "patch",
                "osupgradeprogress",
                "by-hand",
                "--type=merge",
                "-p",
                r#"{"spec":{"rebootApproved":true}}"#,
            ],
            None,
        )
        .await?;
    assert!(approve.success(), "{approve:?}");
    let out = waiter.await??;
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("osupgradeprogress.osroll.io/by-hand condition met"),
        "{out:?}"
    );
    let st = fleet.progress("by-hand").await?.status.unwrap_or_default();
    assert_eq!(
        (st.phase, st.current_version.as_deref()),
        (Some(ProgressPhase::Completed), Some("2.0"))
    );
    // Its status was written by solo's agent alone.
    if let Some(audit) = fleet.cluster.audit() {
        let writers: Vec<String> = audit
            .into_iter()
            .filter(|e| e.resource == "osupgradeprogresses" && e.subresource == "status")
            .filter(|e| e.verb == "patch")
            .map(|e| e.user)
            .collect();
        assert!(
            !writers.is_empty() && writers.iter().all(|u| u == "system:node:solo"),
            "{writers:?}"
        );
    }
    Ok(())
}

fn upgrade() -> anyhow::Result<OSUpgrade> {
    let catalog = format!(
        "stable: \"2.0\"\nimages:\n  - version: \"2.0\"\n    url: https://os.example/2.0\n    checksum: {SUM}\n"
    );
    Ok(serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": "fleet"},
        "spec": {
            "version": "stable",
            "catalog": {"inline": catalog},
            "strategy": {"maxUnavailable": 1, "maxFailures": 2},
        },
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_and_an_upgrade_with_failures_are_not_ready() -> anyhow::Result<()> {
    let fleet = Fleet::start(&["good", "bad"], &["bad"]).await?;
    let admin = fleet.cluster.client();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &upgrade()?)
        .await?;
    let ctrl = Controller::start(&fleet.cluster, "replica-a", Duration::from_millis(300)).await?;
    let st = wait_rollout_end(&admin, "fleet", Duration::from_secs(60)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    let counts = st.nodes.unwrap_or_default();
    assert_eq!((counts.completed, counts.failed), (1, 1));

    let progresses = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let name_of = |node: &str| {
        progresses
            .iter()
            .find(|p| p.spec.node_name == node)
            .and_then(|p| p.metadata.name.clone())
            .unwrap_or_default()
    };
    let bad = fleet.progress(&name_of("bad")).await?;
    assert_eq!(
        bad.status.and_then(|s| s.failure_reason).as_deref(),
        Some("PluginRefused")
    );

    let good = fleet
        .wait_ready(&format!("osupgradeprogress/{}", name_of("good")), 20)
        .await?;
    assert!(good.success(), "{good:?}");
    assert_timed_out(
        &fleet
            .wait_ready(&format!("osupgradeprogress/{}", name_of("bad")), 3)
            .await?,
    );
    assert_timed_out(&fleet.wait_ready("osupgrade/fleet", 3).await?);
    // The condition is there, False, and says why.
    let not_ready = fleet
        .cluster
        .kubectl_run(
            &[
                "get",
                "osupgrade/fleet",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}"#,
            ],
            None,
        )
        .await?;
    assert_eq!(
        not_ready.stdout, "False/CompletedWithFailures",
        "{not_ready:?}"
    );
    ctrl.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_selectable_fields_the_agent_falls_back_to_the_node_label() -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let cluster = Cluster::start().await?;
    cluster.install_crds().await?;
    // The CRD as an API server before 1.30 keeps it: no selectableFields.
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let name = "osupgradeprogresses.osroll.io";
    let mut crd = crds.get(name).await?;
    for v in &mut crd.spec.versions {
        v.selectable_fields = None;
    }
    crds.replace(name, &PostParams::default(), &crd).await?;
    let fleet = Fleet::start_on(cluster, &["old"], &[]).await?;
    let labelled = HAND_MADE
        .replace("nodeName: solo", "nodeName: old")
        .replace(
            "name: by-hand",
            "name: labelled\n  labels:\n    osroll.io/node: old",
        );
    let out = fleet
        .cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&labelled))
        .await?;
    assert!(out.success(), "{out:?}");
    wait_for("the agent to stage it", Duration::from_secs(30), || async {
        let st = fleet.progress("labelled").await.ok()?.status?;
        (st.phase == Some(ProgressPhase::Staged)).then_some(())
    })
    .await?;
    if let Some(audit) = fleet.cluster.audit() {
        let lists: Vec<(String, String, u16)> = audit
            .iter()
            .filter(|e| e.user == "system:node:old" && e.resource == "osupgradeprogresses")
            .filter(|e| e.verb == "list")
            .map(|e| (e.field_selector.clone(), e.label_selector.clone(), e.code))
            .collect();
        assert_eq!(
            lists.first(),
            Some(&("spec.nodeName=old".to_string(), String::new(), 400)),
            "{lists:?}"
        );
        assert!(
            lists.contains(&(String::new(), "osroll.io/node=old".to_string(), 200)),
            "{lists:?}"
        );
    }
    Ok(())
}
