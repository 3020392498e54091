//! The controller, in process, against the test API server with scripted node agents:
//! 10 nodes, maxUnavailable 2, a PodDisruptionBudget that blocks one pod until it is
//! relaxed, one node whose new slot does not boot. The rollout must end with 9 nodes
//! Completed and 1 RolledBack, say so in status and Events, leave no node cordoned, and
//! never have more than 2 nodes disrupted at once (from watch events, not from logs).
//! The second test kills the controller midway (no lease release, like a crash) and
//! starts a new replica, which must finish the same way.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, UpgradePhase};
use osroll_controller::ControllerConfig;
use serde_json::json;

const SUM: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn upgrade() -> anyhow::Result<OSUpgrade> {
    let catalog = format!(
        "images:\n  - version: \"2.0\"\n    url: https://images.example/2.0.zst\n    checksum: {SUM}\n    size: 4096\n"
    );
    Ok(serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": "fleet"},
        "spec": {
            "version": "2.0",
            "catalog": {"inline": catalog},
            "strategy": {"maxUnavailable": 2, "maxFailures": 2},
            "drain": {"timeoutSeconds": 120},
        },
    }))?)
}

fn config(identity: &str) -> ControllerConfig {
    ControllerConfig {
        namespace: NS.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(3),
        drain_poll: Duration::from_millis(300),
        ..ControllerConfig::default()
    }
}

async fn start_controller(
    c: &SimCluster,
    identity: &str,
) -> anyhow::Result<(
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let client = c.controller_client().await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = config(identity);
    let task = tokio::spawn(async move {
        osroll_controller::run_until(cfg, client, async move {
            let _ = rx.await;
        })
        .await
    });
    Ok((task, tx))
}

async fn phase(c: &SimCluster) -> anyhow::Result<Option<UpgradePhase>> {
    Ok(c.upgrade("fleet").await?.status.and_then(|s| s.phase))
}

async fn scenario(kill_midway: bool) -> anyhow::Result<()> {
    let c = SimCluster::start().await?;
    for i in 0..10 {
        c.add_node(&format!("node-{i:02}"), "1.0", &[]).await?;
    }
    c.add_pod("default", "web-0", "node-00", "web").await?;
    c.add_pod("default", "db-0", "node-01", "db").await?;
    c.add_pdb("default", "web-pdb", "web", 1).await?;
    let recorder = DisruptionRecorder::default();
    let rec_task = tokio::spawn(recorder.clone().run(c.admin.clone()));
    let agents = ScriptedAgents {
        fates: HashMap::from([("node-07".to_string(), Fate::RollBack)]),
        staging: Duration::from_millis(200),
        reboot: Duration::from_millis(300),
    };
    let agent_task = c.run_agents(agents);
    Api::<OSUpgrade>::all(c.admin.clone())
        .create(&PostParams::default(), &upgrade()?)
        .await?;
    let (mut ctrl, mut stop) = start_controller(&c, "replica-a").await?;

    // The budget holds web-0 on node-00: an Event and the status name pod and budget.
    wait_for("a DrainBlocked event", Duration::from_secs(30), || async {
        Ok(c.events()
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("DrainBlocked")))
    })
    .await?;
    let blocked = c
        .events()
        .await?
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("DrainBlocked"))
        .unwrap();
    let note = blocked.note.unwrap_or_default();
    assert!(
        note.contains("default/web-0") && note.contains("default/web-pdb"),
        "{note}"
    );
    wait_for(
        "the status to name the budget",
        Duration::from_secs(10),
        || async {
            let st = c.upgrade("fleet").await?.status.unwrap_or_default();
            Ok(st.message.unwrap_or_default().contains("default/web-pdb"))
        },
    )
    .await?;

    if kill_midway {
        wait_for("three nodes completed", Duration::from_secs(60), || async {
            let st = c.upgrade("fleet").await?.status.unwrap_or_default();
            Ok(st.nodes.is_some_and(|n| n.completed >= 3))
        })
        .await?;
        // A crash: the task is dropped mid-flight and the Lease is not released.
        ctrl.abort();
        let _ = ctrl.await;
        (ctrl, stop) = start_controller(&c, "replica-b").await?;
    }

    // Relax the budget: the drain proceeds.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.admin.clone(), "default");
    pdbs.patch(
        "web-pdb",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"minAvailable": 0}})),
    )
    .await?;

    wait_for("the rollout to finish", Duration::from_secs(90), || async {
        Ok(matches!(
            phase(&c).await?,
            Some(UpgradePhase::Completed | UpgradePhase::Failed)
        ))
    })
    .await?;
    let up = c.upgrade("fleet").await?;
    let st = up.status.clone().unwrap();
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    let counts = st.nodes.clone().unwrap();
    assert_eq!(
        (counts.total, counts.completed, counts.rolled_back),
        (10, 9, 1),
        "{counts:?}"
    );
    assert_eq!(st.resolved_version.as_deref(), Some("2.0"));
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert!(
        degraded.is_true() && degraded.message.contains("node-07"),
        "{degraded:?}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && !c.is_true() && c.reason == "CompletedWithFailures"),
        "a node rolled back: not Ready"
    );
    assert!(
        st.conditions
            .iter()
            .all(|c| c.observed_generation == up.metadata.generation)
    );

    // Events are published behind the decisions: wait for the last one.
    wait_for("the rollout's Events", Duration::from_secs(10), || async {
        let evs = c.events().await?;
        let seen = |r: &str, node: Option<&str>| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some(r)
                    && node.is_none_or(|n| {
                        e.related.as_ref().and_then(|x| x.name.as_deref()) == Some(n)
                    })
            })
        };
        Ok(seen("RolloutCompleted", None)
            && seen("NodeRolledBack", Some("node-07"))
            && seen("NodeCompleted", Some("node-00")))
    })
    .await?;
    let events = c.events().await?;
    let has = |reason: &str, node: Option<&str>| {
        events.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && node
                    .is_none_or(|n| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(n))
        })
    };
    assert!(
        has("NodeRolledBack", Some("node-07")),
        "no NodeRolledBack event for node-07"
    );
    assert!(has("NodeCompleted", Some("node-00")));
    assert!(has("RolloutCompleted", None));
    for n in c.nodes().await? {
        let unsched = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let name = n.metadata.name.clone().unwrap_or_default();
        assert!(!unsched, "node {name} left cordoned");
        let ann = n.metadata.annotations.unwrap_or_default();
        assert!(
            !ann.contains_key(osroll_api::labels::CORDONED_BY),
            "node {name} keeps our annotation"
        );
    }
    assert!(
        recorder.max() <= 2,
        "{} nodes were disrupted at once",
        recorder.max()
    );
    assert!(recorder.max() >= 1, "the recorder saw no disruption at all");
    if kill_midway {
        let by_b = events
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some("replica-b"));
        assert!(by_b, "the restarted replica did not take over");
    }

    let _ = stop.send(());
    ctrl.await??;
    agent_task.abort();
    rec_task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_with_a_blocking_budget_and_a_rollback() -> anyhow::Result<()> {
    scenario(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_the_controller_killed_and_restarted_midway() -> anyhow::Result<()> {
    scenario(true).await
}
