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
//!
//! Each test runs on its own harness instance (`Cluster`): its own namespace, Node,
//! OSUpgrade and progress names made unique with `cluster.name`, the agents acting as
//! the agent service account bound to their node, and a failure's diagnosis attached.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
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
    dir: tempfile::TempDir,
    agents: Vec<tokio::task::JoinHandle<anyhow::Result<osroll_agent::AgentExit>>>,
    kubelets: Vec<osroll_sim::Kubelet>,
}

impl Fleet {
    /// On a new harness instance, `nodes` (named as given, made unique with
    /// [`Fleet::node`]); those in `refusing` get a plugin that refuses.
    async fn start(nodes: &[&str], refusing: &[&str]) -> anyhow::Result<Fleet> {
        let cluster = Cluster::start().await?;
        Fleet::start_on(cluster, nodes, refusing).await
    }

    /// Like [`Fleet::start`] on `cluster`; a failure to start carries the diagnosis.
    async fn start_on(
        cluster: Cluster,
        nodes: &[&str],
        refusing: &[&str],
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            cluster,
            dir: tempfile::tempdir()?,
            agents: Vec::new(),
            kubelets: Vec::new(),
        };
        let added = fleet.add_nodes(nodes, refusing).await;
        fleet.cluster.explain(added).await?;
        Ok(fleet)
    }

    async fn add_nodes(&mut self, nodes: &[&str], refusing: &[&str]) -> anyhow::Result<()> {
        let cluster = &self.cluster;
        for &base in nodes {
            let name = cluster.name(base);
            let nd = self.dir.path().join(&name);
            let host = SimHost::create(&nd.join("host"), 4096, "1.0")?;
            let exe = plugin(&nd.join("os"))?;
            if refusing.contains(&base) {
                fs::write(nd.join("os/refuse"), "")?;
            }
            self.kubelets
                .push(cluster.add_node(KubeletConfig::new(&name)).await?);
            let client = cluster.agent_client(&name).await?;
            let mut cfg = AgentConfig::new(&name, nd.join("state"));
            cfg.resync = Duration::from_secs(2);
            cfg.error_backoff = Duration::from_millis(300);
            cfg.backend = BackendConfig::Plugin {
                path: exe,
                timeout: Duration::from_secs(20),
            };
            self.agents
                .push(tokio::spawn(osroll_agent::run(cfg, client, Arc::new(host))));
        }
        cluster.wait_managed(nodes.len()).await
    }

    /// The unique name of the node `base`.
    fn node(&self, base: &str) -> String {
        self.cluster.name(base)
    }

    /// `kubectl wait --for=condition=Ready <what> --timeout=<secs>s`.
    async fn wait_ready(&self, what: &str, secs: u32) -> anyhow::Result<KubectlOutput> {
        let timeout = format!("--timeout={secs}s");
        self.cluster
            .kubectl_run(&["wait", "--for=condition=Ready", what, &timeout], None)
            .await
    }

    async fn progress(&self, name: &str) -> anyhow::Result<OSUpgradeProgress> {
        Ok(Api::<OSUpgradeProgress>::all(self.cluster.admin())
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

/// A progress object made by hand as the admin would, with `kubectl apply`: only
/// `spec.nodeName` and an image, no source; with `label`, also the `osroll.io/node`
/// label naming the node.
fn hand_made(name: &str, node: &str, label: bool) -> String {
    let labels = if label {
        format!("\n  labels:\n    osroll.io/node: {node}")
    } else {
        String::new()
    };
    format!(
        r#"
apiVersion: osroll.io/v1alpha1
kind: OSUpgradeProgress
metadata:
  name: {name}{labels}
spec:
  nodeName: {node}
  image:
    version: "2.0"
    url: https://os.example/2.0
    checksum: {SUM}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_progress_is_picked_up_and_waits_end_on_ready() -> anyhow::Result<()> {
    let fleet = Fleet::start(&["solo", "other"], &[]).await?;
    let result = hand_made_progress(&fleet).await;
    fleet.cluster.explain(result).await
}

async fn hand_made_progress(fleet: &Fleet) -> anyhow::Result<()> {
    let cluster = &fleet.cluster;
    let (solo, other) = (fleet.node("solo"), fleet.node("other"));
    let name = cluster.name("by-hand");
    let out = cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&hand_made(&name, &solo, false)))
        .await?;
    assert!(out.success(), "{out:?}");
    // No label, no controller: the agent finds it by spec.nodeName and stages it.
    let staged = wait_for("the agent to stage it", Duration::from_secs(30), || async {
        let p = fleet.progress(&name).await.ok()?;
        let st = p
            .status
            .filter(|s| s.phase == Some(ProgressPhase::Staged))?;
        Some((p.metadata.labels, st))
    })
    .await?;
    assert_eq!(staged.0, None, "nobody labelled it");
    assert_eq!(staged.1.target_version.as_deref(), Some("2.0"));
    let target = format!("osupgradeprogress/{name}");
    assert_timed_out(&fleet.wait_ready(&target, 2).await?);
    // The CRD makes spec.nodeName selectable, and only that (as a real API server would).
    let get = |sel: String| async move {
        let args = ["get", "osup", "--field-selector", &sel, "-o", "name"];
        cluster.kubectl_run(&args, None).await
    };
    let by_node = get(format!("spec.nodeName={solo}")).await?;
    assert_eq!(
        by_node.stdout.trim(),
        format!("osupgradeprogress.osroll.io/{name}"),
        "{by_node:?}"
    );
    assert!(
        get(format!("spec.nodeName={other}"))
            .await?
            .stdout
            .trim()
            .is_empty()
    );
    let other = get("spec.image.version=2.0".into()).await?;
    assert!(
        !other.success() && other.stderr.contains("field label not supported"),
        "{other:?}"
    );

    let mut wait = cluster.kubectl();
    wait.args(["wait", "--for=condition=Ready", &target, "--timeout=30s"]);
    let waiter = tokio::spawn(osroll_sim::testing::run_kubectl(wait, &[], None));
    let approve = cluster
        .kubectl_run(
            &[
                "patch",
                "osupgradeprogress",
                &name,
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
            .contains(&format!("osupgradeprogress.osroll.io/{name} condition met")),
        "{out:?}"
    );
    let st = fleet.progress(&name).await?.status.unwrap_or_default();
    assert_eq!(
        (st.phase, st.current_version.as_deref()),
        (Some(ProgressPhase::Completed), Some("2.0"))
    );
    // Its status was written by solo's agent alone: the agents' service account, with a
    // token bound to solo.
    if let Some(audit) = cluster.audit() {
        let writers: Vec<(String, Option<String>)> = audit
            .into_iter()
            .filter(|e| e.resource == "osupgradeprogresses" && e.subresource == "status")
            .filter(|e| e.verb == "patch" && e.name == name)
            .map(|e| (e.user, e.node_name))
            .collect();
        let agent = cluster.agent_user();
        assert!(
            !writers.is_empty()
                && writers
                    .iter()
                    .all(|(u, n)| *u == agent && n.as_deref() == Some(solo.as_str())),
            "{writers:?}"
        );
    }
    Ok(())
}

fn upgrade(cluster: &Cluster) -> anyhow::Result<OSUpgrade> {
    let catalog = format!(
        "stable: \"2.0\"\nimages:\n  - version: \"2.0\"\n    url: https://os.example/2.0\n    checksum: {SUM}\n"
    );
    cluster.upgrade(
        "fleet",
        json!({
            "version": "stable",
            "catalog": {"inline": catalog},
            "strategy": {"maxUnavailable": 1, "maxFailures": 2},
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_and_an_upgrade_with_failures_are_not_ready() -> anyhow::Result<()> {
    let fleet = Fleet::start(&["good", "bad"], &["bad"]).await?;
    let result = failed_node(&fleet).await;
    fleet.cluster.explain(result).await
}

async fn failed_node(fleet: &Fleet) -> anyhow::Result<()> {
    let cluster = &fleet.cluster;
    let admin = cluster.admin();
    let up = upgrade(cluster)?;
    let up_name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;
    let st = wait_rollout_end(&admin, &up_name, Duration::from_secs(60)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    let counts = st.nodes.unwrap_or_default();
    assert_eq!((counts.completed, counts.failed), (1, 1));

    let progresses: Vec<OSUpgradeProgress> = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| cluster.scope().owns(&p.spec.node_name))
        .collect();
    let name_of = |node: &str| {
        let node = fleet.node(node);
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
    let target = format!("osupgrade/{up_name}");
    assert_timed_out(&fleet.wait_ready(&target, 3).await?);
    // The condition is there, False, and says why.
    let not_ready = cluster
        .kubectl_run(
            &[
                "get",
                &target,
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
    // The CRD as an API server before 1.30 keeps it: no selectableFields.
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.admin());
    let name = "osupgradeprogresses.osroll.io";
    let mut crd = crds.get(name).await?;
    for v in &mut crd.spec.versions {
        v.selectable_fields = None;
    }
    crds.replace(name, &PostParams::default(), &crd).await?;
    let fleet = Fleet::start_on(cluster, &["old"], &[]).await?;
    let result = label_fallback(&fleet).await;
    // Give the CRD its selectable fields back (it is shared on a real cluster).
    let restored = fleet.cluster.install_crds().await;
    fleet.cluster.explain(result.and(restored)).await
}

async fn label_fallback(fleet: &Fleet) -> anyhow::Result<()> {
    let cluster = &fleet.cluster;
    let old = fleet.node("old");
    let name = cluster.name("labelled");
    let out = cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&hand_made(&name, &old, true)))
        .await?;
    assert!(out.success(), "{out:?}");
    wait_for("the agent to stage it", Duration::from_secs(30), || async {
        let st = fleet.progress(&name).await.ok()?.status?;
        (st.phase == Some(ProgressPhase::Staged)).then_some(())
    })
    .await?;
    if let Some(audit) = cluster.audit() {
        let agent = cluster.agent_user();
        let lists: Vec<(String, String, u16)> = audit
            .iter()
            .filter(|e| e.user == agent && e.node_name.as_deref() == Some(old.as_str()))
            .filter(|e| e.resource == "osupgradeprogresses" && e.verb == "list")
            .map(|e| (e.field_selector.clone(), e.label_selector.clone(), e.code))
            .collect();
        assert_eq!(
            lists.first(),
            Some(&(format!("spec.nodeName={old}"), String::new(), 400)),
            "{lists:?}"
        );
        assert!(
            lists.contains(&(String::new(), format!("osroll.io/node={old}"), 200)),
            "{lists:?}"
        );
    }
    Ok(())
}
