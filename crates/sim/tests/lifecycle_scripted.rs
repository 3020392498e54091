//! Pause and deletion on the test API server with scripted agents: in both cases no
//! node stays cordoned by the controller. Pausing while a drain is blocked releases that
//! node and reports `Paused`; deleting the OSUpgrade mid-rollout runs the finalizer,
//! which uncordons every node it cordoned before the object goes away.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, UpgradePhase, labels};
use osroll_controller::ControllerConfig;
use serde_json::json;

const SUM: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";

fn upgrade(max_unavailable: i32) -> anyhow::Result<OSUpgrade> {
    let catalog = format!(
        "images:\n  - version: \"2.0\"\n    url: https://images.example/2.0\n    checksum: {SUM}\n"
    );
    Ok(serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": "fleet"},
        "spec": {"version": "2.0", "catalog": {"inline": catalog},
                 "strategy": {"maxUnavailable": max_unavailable}},
    }))?)
}

async fn controller(
    c: &SimCluster,
) -> anyhow::Result<(
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let client = c.controller_client().await?;
    let cfg = ControllerConfig {
        namespace: NS.into(),
        identity: "ctrl".into(),
        lease_duration: Duration::from_secs(3),
        drain_poll: Duration::from_millis(300),
        ..ControllerConfig::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(osroll_controller::run_until(cfg, client, async move {
        let _ = rx.await;
    }));
    Ok((task, tx))
}

async fn cordoned(c: &SimCluster) -> anyhow::Result<Vec<String>> {
    Ok(c.nodes()
        .await?
        .into_iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter_map(|n| n.metadata.name)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_releases_a_node_whose_drain_is_blocked() -> anyhow::Result<()> {
    let c = SimCluster::start().await?;
    for i in 0..3 {
        c.add_node(&format!("node-{i}"), "1.0", &[]).await?;
    }
    c.add_pod("default", "web-0", "node-0", "web").await?;
    c.add_pdb("default", "web-pdb", "web", 1).await?;
    let agents = ScriptedAgents {
        fates: HashMap::new(),
        staging: Duration::from_millis(100),
        reboot: Duration::from_millis(200),
    };
    let agent_task = c.run_agents(agents);
    let ups: Api<OSUpgrade> = Api::all(c.admin.clone());
    ups.create(&PostParams::default(), &upgrade(1)?).await?;
    let (task, stop) = controller(&c).await?;

    wait_for(
        "node-0 cordoned with its drain blocked",
        Duration::from_secs(30),
        || async {
            let st = c.upgrade("fleet").await?.status.unwrap_or_default();
            Ok(cordoned(&c).await? == ["node-0"]
                && st.message.unwrap_or_default().contains("web-pdb"))
        },
    )
    .await?;
    ups.patch(
        "fleet",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"strategy": {"paused": true}}})),
    )
    .await?;
    wait_for(
        "the rollout paused with nothing cordoned",
        Duration::from_secs(30),
        || async {
            let st = c.upgrade("fleet").await?.status.unwrap_or_default();
            Ok(st.phase == Some(UpgradePhase::Paused) && cordoned(&c).await?.is_empty())
        },
    )
    .await?;
    let node = c
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("node-0"))
        .unwrap();
    assert!(
        !node
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(labels::CORDONED_BY)
    );
    wait_for("a RolloutPaused event", Duration::from_secs(10), || async {
        Ok(c.events()
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolloutPaused")))
    })
    .await?;

    let _ = stop.send(());
    task.await??;
    agent_task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_upgrade_midway_uncordons_before_it_goes() -> anyhow::Result<()> {
    let c = SimCluster::start().await?;
    for i in 0..4 {
        c.add_node(&format!("node-{i}"), "1.0", &[]).await?;
    }
    // Reboots take long enough for the deletion to land while nodes are cordoned.
    let agents = ScriptedAgents {
        fates: HashMap::new(),
        staging: Duration::from_millis(100),
        reboot: Duration::from_secs(30),
    };
    let agent_task = c.run_agents(agents);
    let ups: Api<OSUpgrade> = Api::all(c.admin.clone());
    ups.create(&PostParams::default(), &upgrade(2)?).await?;
    let (task, stop) = controller(&c).await?;

    wait_for("two nodes cordoned", Duration::from_secs(30), || async {
        Ok(cordoned(&c).await?.len() == 2)
    })
    .await?;
    let up = c.upgrade("fleet").await?;
    assert!(
        up.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == labels::FINALIZER)
    );
    ups.delete("fleet", &DeleteParams::default()).await?;
    wait_for(
        "the OSUpgrade gone and no node cordoned",
        Duration::from_secs(30),
        || async { Ok(ups.get_opt("fleet").await?.is_none() && cordoned(&c).await?.is_empty()) },
    )
    .await?;
    wait_for(
        "its progress objects garbage-collected",
        Duration::from_secs(30),
        || async { Ok(c.progresses().await?.is_empty()) },
    )
    .await?;

    let _ = stop.send(());
    task.await??;
    agent_task.abort();
    Ok(())
}
