//! "A foreign Node label under the policy" (issue 17, finding 4): with the admission
//! policy `osroll create agent` emits applied, the test API server (which evaluates the
//! policy's CEL) refuses an agent that sets `osroll.io/os-version` on another node, any
//! label but `osroll.io/{managed,slot,os-version}` on its own node, or the status of
//! another node's progress, and lets it label its own node.

use kube::api::{Api, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgradeProgress, labels};
use osroll_sim::kubelet::KubeletConfig;
use osroll_sim::testing::Cluster;
use serde_json::{Value, json};

/// The HTTP code of a refused call, or 0 when it went through.
fn code<T>(r: Result<T, kube::Error>) -> anyhow::Result<u16> {
    match r {
        Ok(_) => Ok(0),
        Err(kube::Error::Api(s)) => Ok(s.code),
        Err(e) => Err(e.into()),
    }
}

fn labels_patch(key: &str, value: &str) -> Patch<Value> {
    Patch::Merge(json!({"metadata": {"labels": {key: value}}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_node_label_under_the_policy_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let (a, b) = (cluster.name("node-a"), cluster.name("node-b"));
    let _ka = cluster.add_node(KubeletConfig::new(&a)).await?;
    let _kb = cluster.add_node(KubeletConfig::new(&b)).await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.agent_client(&a).await?);
    let pp = PatchParams::default();

    // Its own node, its own labels: allowed.
    let own = nodes
        .patch(&a, &pp, &labels_patch(labels::OS_VERSION, "2.0"))
        .await;
    assert_eq!(code(own)?, 0);
    let own = nodes
        .patch(&a, &pp, &labels_patch(labels::MANAGED, "true"))
        .await;
    assert_eq!(code(own)?, 0);

    // The version label of another node: it would steer the controller's downgrade
    // check for the whole OSUpgrade.
    let other = nodes
        .patch(&b, &pp, &labels_patch(labels::OS_VERSION, "999"))
        .await;
    assert_eq!(code(other)?, 403);

    // A label that pulls in workloads pinned to it, on its own node.
    let restricted = nodes
        .patch(
            &a,
            &pp,
            &labels_patch("node-restriction.kubernetes.io/x", "y"),
        )
        .await;
    let err = restricted.expect_err("a node-restriction label was accepted");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(s.message.contains("osroll.io/os-version"), "{}", s.message);
        }
        e => return Err(e.into()),
    }

    // Another node's progress status.
    let progress: OSUpgradeProgress = serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgress",
        "metadata": {"name": cluster.name("up-b")},
        "spec": {"nodeName": b},
    }))?;
    Api::<OSUpgradeProgress>::all(cluster.admin())
        .create(&PostParams::default(), &progress)
        .await?;
    let agent_progress: Api<OSUpgradeProgress> = Api::all(cluster.agent_client(&a).await?);
    let forged = json!({"status": {"phase": "Staged", "inactivePartition": "B"}});
    let r = agent_progress
        .patch_status(&cluster.name("up-b"), &pp, &Patch::Merge(&forged))
        .await;
    assert_eq!(code(r)?, 403);
    // ... which b's own agent may write.
    let own_agent: Api<OSUpgradeProgress> = Api::all(cluster.agent_client(&b).await?);
    let r = own_agent
        .patch_status(&cluster.name("up-b"), &pp, &Patch::Merge(&forged))
        .await;
    assert_eq!(code(r)?, 0);
    Ok(())
}
