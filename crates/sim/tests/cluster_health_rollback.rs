//! Cluster test of health-gated waves and the fleet rollback, with the real controller and
//! the real node agents: 10 kubelet-lite nodes on the test API server (or the real
//! cluster named by `OSROLL_E2E_KUBECONFIG`), each agent driving a simulated A/B host on
//! 1.0; images for 1.0 and 2.0 served over HTTP on loopback, each counting the bytes it
//! sends; maxUnavailable 2; a CEL health check over a ConfigMap the test turns red once
//! the second batch completed; `onFailure: Rollback` with no grace.
//!
//! The rollout must stop, roll back every node it upgraded (the controller is killed once
//! in the middle of the rollback, without releasing its Lease, and a new replica
//! finishes it), and end RolledBack with: every upgraded node on 1.0 in its previous
//! slot A, the nodes it never upgraded never rebooted, no node cordoned, never more than
//! 2 nodes disrupted at once, and not one byte of the 1.0 image served.

mod common;

use std::time::Duration;

use common::DisruptionRecorder;
use common::fleet::Controller;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeStatus, ProgressPhase, UpgradePhase};
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

const NODES: usize = 10;

async fn status(admin: &kube::Client, name: &str) -> Option<OSUpgradeStatus> {
    Api::<OSUpgrade>::all(admin.clone())
        .get(name)
        .await
        .ok()?
        .status
}

/// Reasons and notes of the Events about the OSUpgrade `upgrade`.
async fn events(admin: &kube::Client, upgrade: &str) -> Vec<(String, String)> {
    Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(upgrade))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn set_health(admin: &kube::Client, ns: &str, ok: bool) -> anyhow::Result<()> {
    let patch = json!({"data": {"ok": ok.to_string()}});
    Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .patch("app-health", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_red_check_after_the_second_batch_rolls_back_every_upgraded_node() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = roll_back(&cluster).await;
    cluster.explain(result).await
}

async fn roll_back(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let fleet = cluster.start_fleet(NODES).await?;
    let (images, nodes) = (&fleet.images, &fleet.nodes);

    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-health", "namespace": ns},
        "data": {"ok": "true"},
    }))?;
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await?;

    let recorder = DisruptionRecorder::default();
    let rec_task = tokio::spawn(
        recorder
            .clone()
            .run_selected(admin.clone(), cluster.scope().selector()),
    );
    let up = cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": images.catalog("2.0")},
            "allowHttpImages": true,
            "strategy": {
                "maxUnavailable": 2,
                "healthChecks": [{"name": "app", "cel": {
                    "apiVersion": "v1", "kind": "ConfigMap", "namespace": ns,
                    "name": "app-health", "expr": "self.data.ok == 'true'"}}],
                "healthTimeoutSeconds": 0,
                "onFailure": "Rollback",
            },
        }),
    )?;
    let name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let mut ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    wait_for("two batches completed", Duration::from_secs(90), || async {
        (status(&admin, &name).await?.nodes?.completed >= 4).then_some(())
    })
    .await?;
    set_health(&admin, &ns, false).await?;
    let st = wait_for("the rollback to begin", Duration::from_secs(30), || async {
        let st = status(&admin, &name).await?;
        (st.phase == Some(UpgradePhase::RollingBack)).then_some(st)
    })
    .await?;
    let rollback = st.rollback.clone().expect("status.rollback");
    assert_eq!(
        (rollback.version.as_str(), rollback.reason.as_str()),
        ("2.0", "HealthCheckFailed")
    );
    // The check recovers: a rollback once begun goes on.
    set_health(&admin, &ns, true).await?;

    wait_for(
        "a node armed for rollback",
        Duration::from_secs(30),
        || async {
            let back = cluster.progresses_of(&name).await.into_iter().any(|p| {
                p.annotations().contains_key("osroll.io/rollback")
                    && p.status.as_ref().and_then(|s| s.phase) != Some(ProgressPhase::Completed)
            });
            back.then_some(())
        },
    )
    .await?;
    // A crash mid-rollback: dropped without releasing its Lease.
    ctrl.task.abort();
    let _ = (&mut ctrl.task).await;
    let ctrl = Controller::start(cluster, "replica-b", Duration::from_millis(300)).await?;

    let st = wait_for(
        "the rollback to finish",
        Duration::from_secs(120),
        || async {
            // Read from the API, not the controller's cache: no reboot of the upgrade
            // is still approved when the rollback says it finished.
            let st = status(&admin, &name).await?;
            let settled = cluster.progresses_of(&name).await.iter().all(|p| {
                p.annotations().contains_key("osroll.io/rollback") || !p.spec.reboot_approved
            });
            let end = matches!(
                st.phase,
                Some(UpgradePhase::RolledBack | UpgradePhase::Failed)
            );
            (end && settled).then_some(st)
        },
    )
    .await?;
    assert_eq!(st.phase, Some(UpgradePhase::RolledBack), "{st:#?}");
    assert!(
        st.rollback
            .as_ref()
            .is_some_and(|r| r.finished_at.is_some()),
        "{st:#?}"
    );

    assert_eq!(
        images.bytes_served("1.0"),
        0,
        "the A/B rollback downloaded 1.0"
    );
    assert!(images.bytes_served("2.0") > 0);

    let progresses = cluster.progresses_of(&name).await;
    let mut back = 0;
    for n in nodes {
        let p = progresses
            .iter()
            .find(|p| p.spec.node_name == n.name)
            .expect("a progress per node");
        let booted = n.host.booted_slot()?;
        let version = n.host.slot_version(booted)?;
        assert_eq!(
            (booted, version.as_deref()),
            (osroll_agent::Slot::A, Some("1.0")),
            "{}",
            n.name
        );
        let phase = p.status.as_ref().and_then(|s| s.phase);
        if p.annotations().contains_key("osroll.io/rollback") {
            back += 1;
            assert_eq!(phase, Some(ProgressPhase::Completed), "{}", n.name);
            assert_eq!(
                p.spec.image.as_ref().map(|i| i.version.as_str()),
                Some("1.0")
            );
            let message = p.status.as_ref().and_then(|s| s.message.clone());
            assert!(
                p.status.as_ref().and_then(|s| s.bytes_done) == Some(0),
                "{}: {message:?}",
                n.name
            );
        } else {
            // Never upgraded: never approved for a reboot, still staged (or earlier).
            assert!(
                !matches!(
                    phase,
                    Some(ProgressPhase::Rebooting | ProgressPhase::Completed)
                ),
                "{}: {phase:?}",
                n.name
            );
        }
    }
    assert!(back >= 4, "only {back} nodes went back");

    let cordoned: Vec<String> = Api::<Node>::all(admin.clone())
        .list(&ListParams::default().labels(&cluster.scope().selector()))
        .await?
        .items
        .into_iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(cordoned.is_empty(), "left cordoned: {cordoned:?}");
    assert!(
        recorder.max() <= 2,
        "{} nodes disrupted at once",
        recorder.max()
    );
    rec_task.abort();

    wait_for(
        "the health and rollback Events",
        Duration::from_secs(10),
        || async {
            let evs = events(&admin, &name).await;
            let failing = evs.iter().any(|(r, note)| {
                r == "HealthCheckFailing"
                    && note.contains("health check app fails")
                    && note.contains("is false for ConfigMap app-health")
            });
            let started = evs.iter().any(|(r, _)| r == "RollbackStarted");
            let done = evs.iter().any(|(r, _)| r == "RolledBack");
            (failing && started && done).then_some(())
        },
    )
    .await?;
    ctrl.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_no_way_back_stays_and_the_rollback_fails_once_the_others_are_back()
-> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = strand_one(&cluster).await;
    cluster.explain(result).await
}

/// Three nodes upgraded to 2.0; one progress object loses the version its node ran
/// before (as one created before it was recorded); `spec.rollback` asked.
async fn strand_one(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let fleet = cluster.start_fleet(3).await?;
    let up = cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": fleet.images.catalog("2.0")},
            "allowHttpImages": true,
            "strategy": {"maxUnavailable": 2},
        }),
    )?;
    let name = up.name_any();
    let upgrades = Api::<OSUpgrade>::all(admin.clone());
    upgrades.create(&PostParams::default(), &up).await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;
    wait_for(
        "the upgrade to complete",
        Duration::from_secs(90),
        || async {
            let st = status(&admin, &name).await?;
            (st.phase == Some(UpgradePhase::Completed)).then_some(())
        },
    )
    .await?;

    let stuck = fleet.nodes[0].name.clone();
    let progress = cluster
        .progresses_of(&name)
        .await
        .into_iter()
        .find(|p| p.spec.node_name == stuck)
        .expect("a progress for the node");
    let forget = json!({"metadata": {"annotations": {"osroll.io/previous-version": null}}});
    Api::<osroll_api::OSUpgradeProgress>::all(admin.clone())
        .patch(
            &progress.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&forget),
        )
        .await?;
    let ask = json!({"spec": {"rollback": true}});
    upgrades
        .patch(&name, &PatchParams::default(), &Patch::Merge(&ask))
        .await?;

    let st = wait_for("the rollback to end", Duration::from_secs(90), || async {
        let st = status(&admin, &name).await?;
        let ended = st
            .rollback
            .as_ref()
            .is_some_and(|r| r.finished_at.is_some());
        ended.then_some(st)
    })
    .await?;
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (Some(UpgradePhase::Failed), Some("RollbackFailed")),
        "{st:#?}"
    );
    for n in &fleet.nodes {
        let booted = n.host.booted_slot()?;
        let want = if n.name == stuck {
            (osroll_agent::Slot::B, "2.0")
        } else {
            (osroll_agent::Slot::A, "1.0")
        };
        assert_eq!(
            (booted, n.host.slot_version(booted)?.as_deref()),
            (want.0, Some(want.1)),
            "{}",
            n.name
        );
    }
    let p = cluster
        .progresses_of(&name)
        .await
        .into_iter()
        .find(|p| p.spec.node_name == stuck)
        .expect("a progress for the node");
    assert_eq!(
        p.annotations()
            .get("osroll.io/rollback-unavailable")
            .map(String::as_str),
        Some("its previous version was not recorded")
    );
    let cordoned: Vec<String> = Api::<Node>::all(admin.clone())
        .list(&ListParams::default().labels(&cluster.scope().selector()))
        .await?
        .items
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .map(|n| n.name_any())
        .collect();
    assert!(cordoned.is_empty(), "left cordoned: {cordoned:?}");
    // The controller goes on reconciling the failed rollout; the Event stays one (one
    // object, not a series of repeats).
    let notes = wait_for(
        "the RollbackUnavailable Event",
        Duration::from_secs(10),
        || async {
            let notes = unavailable(&admin, &name).await;
            (!notes.is_empty()).then_some(notes)
        },
    )
    .await?;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].0.contains(&stuck), "{notes:?}");
    ctrl.stop().await?;
    let notes = unavailable(&admin, &name).await;
    assert_eq!(notes.len(), 1, "after the controller stopped: {notes:?}");
    assert_eq!(notes[0].1, 1, "repeated: {notes:?}");
    Ok(())
}

/// Note and number of occurrences of each `RollbackUnavailable` Event about `upgrade`.
async fn unavailable(admin: &kube::Client, upgrade: &str) -> Vec<(String, i32)> {
    Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(upgrade))
        .filter(|e| e.reason.as_deref() == Some("RollbackUnavailable"))
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (e.note.unwrap_or_default(), count)
        })
        .collect()
}
