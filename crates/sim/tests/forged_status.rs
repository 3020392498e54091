//! The controller does not take a progress status's word alone (issue 17, finding 3):
//!
//! * "forged rebootRequired:false": a status claiming a live update on an A/B node of an
//!   OSUpgrade that asked for none still gets the node cordoned and drained before its
//!   reboot is approved;
//! * "forged Completed": a status claiming Completed for a version the node's
//!   `osroll.io/os-version` label contradicts is not counted Completed; an Event and the
//!   Degraded condition say why, and the node stays cordoned. Relabelling the node (what
//!   another agent could do without the policy) is not enough either: the kubelet, which
//!   no agent can speak for, still reports the boot ID from before the approved reboot.
//!   Once the node has rebooted and runs the target, the rollout completes.
//!
//! The real controller runs in-process on the harness cluster (RBAC and the agents'
//! admission policy enforced); the forger writes as the node's own agent (the one
//! identity the policy still lets write that status), with kubelet-lite as the node.

mod common;

use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase, labels};
use osroll_sim::kubelet::KubeletConfig;
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

const SUM: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// An A/B node on 1.0 (as its agent would have labelled it), the OSUpgrade to 2.0 that
/// asks for no live update, and the controller.
struct Setup {
    cluster: Cluster,
    node: String,
    upgrade: String,
    kubelet: osroll_sim::kubelet::Kubelet,
    controller: Controller,
}

async fn setup() -> anyhow::Result<Setup> {
    let cluster = Cluster::start().await?;
    let node = cluster.name("node-a");
    let cfg = KubeletConfig::new(&node)
        .label(labels::MANAGED, "true")
        .label(labels::OS_VERSION, "1.0")
        .label(labels::SLOT, "A");
    let kubelet = cluster.add_node(cfg).await?;
    cluster.wait_managed(1).await?;
    let catalog = format!(
        "images:\n  - version: \"2.0\"\n    url: https://os.example/2.0\n    checksum: {SUM}\n"
    );
    let up = cluster.upgrade(
        "forged",
        json!({"version": "2.0", "catalog": {"inline": catalog}, "strategy": {"maxUnavailable": 1}}),
    )?;
    let upgrade = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(cluster.admin())
        .create(&PostParams::default(), &up)
        .await?;
    let controller = Controller::start(&cluster, "replica-a", Duration::from_millis(200)).await?;
    Ok(Setup {
        cluster,
        node,
        upgrade,
        kubelet,
        controller,
    })
}

impl Setup {
    /// The node is not counted Completed: an Event and the Degraded condition name it
    /// and `reason`, and it stays cordoned.
    async fn refused_because(&self, reason: &str) -> anyhow::Result<()> {
        let events: Api<Event> = Api::all(self.cluster.admin());
        let what = format!("a {reason} event");
        wait_for(&what, Duration::from_secs(20), || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .find_map(|e| {
                    e.note
                        .filter(|n| n.contains(&self.node) && n.contains("not counted"))
                })
        })
        .await?;
        let upgrades: Api<OSUpgrade> = Api::all(self.cluster.admin());
        let what = format!("Degraded: CompletionUnverified naming {reason}");
        let st = wait_for(&what, Duration::from_secs(20), || async {
            let st = upgrades.get(&self.upgrade).await.ok()?.status?;
            st.conditions
                .iter()
                .any(|c| {
                    c.type_ == "Degraded"
                        && c.reason == "CompletionUnverified"
                        && c.message.contains(&self.node)
                        && c.message.contains(reason)
                })
                .then_some(st)
        })
        .await?;
        let counts = st.nodes.clone().unwrap_or_default();
        assert_eq!(counts.completed, 0, "{st:#?}");
        assert_ne!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
        let node = self.node().await?;
        assert_eq!(node.spec.and_then(|x| x.unschedulable), Some(true));
        Ok(())
    }

    /// The progress the controller made for the node.
    async fn progress(&self) -> anyhow::Result<OSUpgradeProgress> {
        let api: Api<OSUpgradeProgress> = Api::all(self.cluster.admin());
        wait_for("the progress object", Duration::from_secs(20), || async {
            api.list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| p.spec.node_name == self.node)
        })
        .await
    }

    /// Write `status` as the node's own agent.
    async fn forge(&self, name: &str, status: serde_json::Value) -> anyhow::Result<()> {
        let agent = self.cluster.agent_client(&self.node).await?;
        Api::<OSUpgradeProgress>::all(agent)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await?;
        Ok(())
    }

    async fn node(&self) -> anyhow::Result<Node> {
        Ok(Api::<Node>::all(self.cluster.admin())
            .get(&self.node)
            .await?)
    }

    /// Forge a Staged with `rebootRequired: false`; once the reboot is approved, whether
    /// the node was cordoned by then. Returns the progress name.
    async fn forged_live_update_was_cordoned(&self) -> anyhow::Result<(String, bool)> {
        let p = self.progress().await?;
        let name = p.metadata.name.clone().unwrap_or_default();
        let staged = json!({"phase": "Staged", "targetVersion": "2.0", "currentVersion": "1.0", "rebootRequired": false});
        self.forge(&name, staged).await?;
        let api: Api<OSUpgradeProgress> = Api::all(self.cluster.admin());
        wait_for("the reboot approval", Duration::from_secs(30), || async {
            api.get(&name).await.ok().filter(|p| p.spec.reboot_approved)
        })
        .await?;
        let node = self.node().await?;
        let cordoned = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        Ok((name, cordoned))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_reboot_required_false_still_gets_cordon_and_drain() -> anyhow::Result<()> {
    let s = setup().await?;
    let result = s.forged_live_update_was_cordoned().await;
    let (_, cordoned) = s.cluster.explain(result).await?;
    assert!(
        cordoned,
        "the reboot was approved without cordon on a node that may not update live"
    );
    s.controller.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_completed_is_not_counted() -> anyhow::Result<()> {
    let s = setup().await?;
    let result = forged_completed(&s).await;
    s.cluster.explain(result).await?;
    s.controller.stop().await
}

async fn forged_completed(s: &Setup) -> anyhow::Result<()> {
    let (name, _) = s.forged_live_update_was_cordoned().await?;
    let completed = json!({"phase": "Completed", "currentVersion": "2.0",
        "completedAt": chrono::Utc::now().to_rfc3339()});
    s.forge(&name, completed).await?;
    s.refused_because("NodeLabelMismatch").await?;

    // The label follows (as the node's agent, or without the policy any agent, could
    // set it), but the node never rebooted.
    let agent = s.cluster.agent_client(&s.node).await?;
    let relabel = json!({"metadata": {"labels": {labels::OS_VERSION: "2.0"}}});
    Api::<Node>::all(agent)
        .patch(&s.node, &PatchParams::default(), &Patch::Merge(&relabel))
        .await?;
    s.refused_because("NotRebooted").await?;

    // The node reboots (its kubelet reports a new boot ID) and runs the target.
    s.kubelet.go_down("rebooting").await?;
    s.kubelet.come_up().await?;
    let st = wait_rollout_end(&s.cluster.admin(), &s.upgrade, Duration::from_secs(30)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    assert_eq!(st.nodes.unwrap_or_default().completed, 1);
    Ok(())
}
