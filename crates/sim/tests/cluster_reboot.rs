//! Cluster tests of reboot coordination for updates installed outside osroll (issue 18),
//! with the real controller and real agents on simulated hosts whose `run/` is emptied
//! by every boot, as a tmpfs is: 6 nodes, 3 of them with kured's sentinel file, an
//! external OSUpgrade with maxUnavailable 1 and a maintenance window, and a
//! PodDisruptionBudget that blocks one pod until it is relaxed. Exactly the 3 signalled
//! nodes are drained and rebooted, one at a time, each once, only once the window is
//! open; their sentinel is gone afterwards and no node is left cordoned. The second test
//! gives a node a sentinel that every boot writes again: it ends Failed with
//! `RebootStillNeeded` after one reboot. The third lets a completed node's updater
//! install another update: its sentinel comes back and the node is drained and rebooted
//! exactly once more, while a node failed on a stuck sentinel next to it is left alone.
//! All also run against a real cluster under `OSROLL_E2E_KUBECONFIG`.

mod common;

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use common::DisruptionRecorder;
use common::fleet::{Controller, create_pdb, create_pod, relax_pdb};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::{
    OSUpgrade, OSUpgradeProgress, OSUpgradeStatus, ProgressPhase, RebootSource, UpgradePhase,
    labels,
};
use osroll_sim::demo::node::{MachineOptions, SimNode};
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::{Value, json};

const NODES: usize = 6;
/// The nodes whose updater left the sentinel file.
const SIGNALLED: [usize; 3] = [0, 2, 4];

fn opts() -> MachineOptions {
    MachineOptions {
        slot_size: 128 * 1024,
        downtime: Duration::from_millis(300),
        bad_slot_b: false,
    }
}

/// A window (UTC, every day) that opens `from` minutes from now and lasts `hours`.
fn window(from: i64, hours: i64) -> Value {
    let start = Utc::now() + Span::minutes(from);
    let end = start + Span::hours(hours);
    json!({"start": start.format("%H:%M").to_string(), "end": end.format("%H:%M").to_string()})
}

async fn machines(cluster: &Cluster, dir: &std::path::Path) -> anyhow::Result<Vec<SimNode>> {
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let name = cluster.name(&format!("node-{i:02}"));
        nodes.push(cluster.start_machine(dir, &name, "1.0", &opts()).await?);
    }
    cluster.wait_managed(NODES).await?;
    Ok(nodes)
}

async fn status(admin: &kube::Client, name: &str) -> Option<OSUpgradeStatus> {
    Api::<OSUpgrade>::all(admin.clone())
        .get(name)
        .await
        .ok()?
        .status
}

async fn progresses(admin: &kube::Client, up: &str) -> Vec<OSUpgradeProgress> {
    Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default().labels(&format!("{}={up}", labels::SOURCE)))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn phase(p: &OSUpgradeProgress) -> Option<ProgressPhase> {
    p.status.as_ref().and_then(|s| s.phase)
}

async fn our_nodes(cluster: &Cluster) -> anyhow::Result<Vec<Node>> {
    let lp = ListParams::default().labels(&cluster.scope().selector());
    Ok(Api::<Node>::all(cluster.admin()).list(&lp).await?.items)
}

fn cordoned(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn label<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

async fn events(admin: &kube::Client, upgrade: &str) -> Vec<Event> {
    Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(upgrade))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_three_signal_each_rebooted_once_one_at_a_time_in_the_window()
-> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = coordinate(&cluster).await;
    cluster.explain(result).await
}

async fn coordinate(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let dir = tempfile::tempdir()?;
    let nodes = machines(cluster, dir.path()).await?;
    for i in SIGNALLED {
        nodes[i].host.need_reboot(false)?;
    }
    let signalled = |name: &str| SIGNALLED.iter().any(|&i| nodes[i].name == name);

    // A budget that holds web-0 on the first signalled node.
    create_pod(&admin, &ns, "web-0", &nodes[0].name, "web").await?;
    create_pdb(&admin, &ns, "web-pdb", "web", 1).await?;

    let recorder = DisruptionRecorder::default();
    let rec_task = tokio::spawn(
        recorder
            .clone()
            .run_selected(admin.clone(), cluster.scope().selector()),
    );
    // The window opens in three hours: the signals are seen, nothing is disrupted.
    let up = cluster.upgrade(
        "reboots",
        json!({
            "external": {},
            "strategy": {"maxUnavailable": 1, "maintenanceWindows": [window(180, 1)]},
            "drain": {"timeoutSeconds": 300},
        }),
    )?;
    let name = up.metadata.name.clone().unwrap_or_default();
    let upgrades: Api<OSUpgrade> = Api::all(admin.clone());
    upgrades.create(&PostParams::default(), &up).await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    wait_for(
        "3 staged nodes outside the window",
        Duration::from_secs(60),
        || async {
            let ps = progresses(&admin, &name).await;
            let staged = ps
                .iter()
                .filter(|p| phase(p) == Some(ProgressPhase::Staged))
                .count();
            let st = status(&admin, &name).await?;
            (ps.len() == NODES
                && staged == 3
                && st.reason.as_deref() == Some("OutsideMaintenanceWindow"))
            .then_some(())
        },
    )
    .await?;
    for p in progresses(&admin, &name).await {
        let st = p.status.clone().unwrap_or_default();
        if signalled(&p.spec.node_name) {
            let s = st.reboot_needed.expect("the signal in status");
            assert_eq!(s.source, RebootSource::SentinelFile);
            assert_eq!(st.phase, Some(ProgressPhase::Staged));
        } else {
            assert_eq!(
                st.phase,
                Some(ProgressPhase::Pending),
                "{}",
                p.spec.node_name
            );
            assert_eq!(st.reboot_needed, None);
        }
    }
    wait_for(
        "the reboot-needed labels",
        Duration::from_secs(30),
        || async {
            let ns = our_nodes(cluster).await.ok()?;
            ns.iter()
                .all(|n| {
                    let name = n.metadata.name.as_deref().unwrap_or_default();
                    let want = if signalled(name) { "true" } else { "false" };
                    label(n, labels::REBOOT_NEEDED) == Some(want)
                })
                .then_some(())
        },
    )
    .await?;
    assert!(
        our_nodes(cluster).await?.iter().all(|n| !cordoned(n)),
        "outside the window"
    );
    assert_eq!(recorder.max(), 0, "nothing disrupted outside the window");

    // Open the window.
    upgrades
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"strategy": {"maintenanceWindows": [window(-5, 2)]}}})),
        )
        .await?;
    let note = wait_for("a DrainBlocked event", Duration::from_secs(60), || async {
        events(&admin, &name)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DrainBlocked"))
            .and_then(|e| e.note)
    })
    .await?;
    assert!(
        note.contains(&format!("{ns}/web-0")) && note.contains(&format!("{ns}/web-pdb")),
        "{note}"
    );
    relax_pdb(&admin, &ns, "web-pdb").await?;

    wait_for(
        "3 nodes rebooted and released",
        Duration::from_secs(120),
        || async {
            let counts = status(&admin, &name).await?.nodes?;
            let nodes = our_nodes(cluster).await.ok()?;
            (counts.completed == 3 && nodes.iter().all(|n| !cordoned(n))).then_some(())
        },
    )
    .await?;

    let st = status(&admin, &name).await.expect("status");
    let counts = st.nodes.clone().expect("counts");
    assert_eq!(
        (counts.total, counts.completed, counts.failed),
        (6, 3, 0),
        "{counts:?}"
    );
    assert_eq!(st.resolved_version, None, "nothing to resolve: {st:?}");
    for n in &nodes {
        let boots = n.host.boot_count()?;
        if signalled(&n.name) {
            assert_eq!(boots, 2, "{} rebooted exactly once", n.name);
            assert!(
                !n.host.sentinel().exists(),
                "{}: the reboot cleared the sentinel",
                n.name
            );
        } else {
            assert_eq!(boots, 1, "{} was not rebooted", n.name);
        }
    }
    for p in progresses(&admin, &name).await {
        let want = if signalled(&p.spec.node_name) {
            ProgressPhase::Completed
        } else {
            ProgressPhase::Pending
        };
        assert_eq!(phase(&p), Some(want), "{}", p.spec.node_name);
    }
    for n in our_nodes(cluster).await? {
        let name = n.metadata.name.clone().unwrap_or_default();
        assert!(!cordoned(&n), "{name} left cordoned");
        assert!(
            !n.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(labels::CORDONED_BY),
            "{name}"
        );
    }
    assert_eq!(recorder.max(), 1, "one node at a time, and one was");
    let cordon_events = events(&admin, &name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("NodeCordoned"))
        .filter_map(|e| e.related.and_then(|r| r.name))
        .collect::<Vec<_>>();
    assert_eq!(cordon_events.len(), 3, "{cordon_events:?}");
    assert!(
        cordon_events.iter().all(|n| signalled(n)),
        "{cordon_events:?}"
    );

    ctrl.stop().await?;
    rec_task.abort();
    drop(nodes);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_survives_the_reboot_ends_failed_after_one_reboot() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = stuck(&cluster).await;
    cluster.explain(result).await
}

async fn stuck(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for i in 0..2 {
        let name = cluster.name(&format!("node-{i:02}"));
        nodes.push(
            cluster
                .start_machine(dir.path(), &name, "1.0", &opts())
                .await?,
        );
    }
    cluster.wait_managed(2).await?;
    nodes[0].host.need_reboot(true)?;
    let up = cluster.upgrade("stuck", json!({"external": {}}))?;
    let name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    let st = wait_for("the rollout to fail", Duration::from_secs(90), || async {
        let st = status(&admin, &name).await?;
        let released = our_nodes(cluster).await.ok()?.iter().all(|n| !cordoned(n));
        (st.phase == Some(UpgradePhase::Failed) && released).then_some(st)
    })
    .await?;
    assert_eq!(st.reason.as_deref(), Some("MaxFailuresReached"), "{st:?}");
    let ps = progresses(&admin, &name).await;
    let p = ps
        .iter()
        .find(|p| p.spec.node_name == nodes[0].name)
        .expect("progress");
    let pst = p.status.clone().unwrap_or_default();
    assert_eq!(pst.phase, Some(ProgressPhase::Failed));
    assert_eq!(
        pst.failure_reason.as_deref(),
        Some("RebootStillNeeded"),
        "{pst:?}"
    );
    assert!(
        pst.message
            .as_deref()
            .unwrap_or_default()
            .contains("reboot-required"),
        "{pst:?}"
    );
    // The agent has seen the Failed status through (its node is released): one reboot.
    assert_eq!(nodes[0].host.boot_count()?, 2, "rebooted exactly once");
    assert!(nodes[0].host.sentinel().exists());
    assert_eq!(
        nodes[1].host.boot_count()?,
        1,
        "the node without a signal was left alone"
    );

    ctrl.stop().await?;
    drop(nodes);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_comes_back_after_completion_reboots_the_node_once_more()
-> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = second_round(&cluster).await;
    cluster.explain(result).await
}

/// Node 0 signals, completes, then signals again; node 1's sentinel survives every boot.
async fn second_round(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for i in 0..2 {
        let name = cluster.name(&format!("node-{i:02}"));
        nodes.push(
            cluster
                .start_machine(dir.path(), &name, "1.0", &opts())
                .await?,
        );
    }
    cluster.wait_managed(2).await?;
    nodes[0].host.need_reboot(false)?;
    nodes[1].host.need_reboot(true)?;
    let up = cluster.upgrade(
        "rounds",
        json!({"external": {}, "strategy": {"maxUnavailable": 1, "maxFailures": 2}}),
    )?;
    let name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;
    let recorder = DisruptionRecorder::default();
    let rec_task = tokio::spawn(
        recorder
            .clone()
            .run_selected(admin.clone(), cluster.scope().selector()),
    );
    let progress_of = |node: &str| {
        let (admin, name, node) = (admin.clone(), name.clone(), node.to_string());
        async move {
            progresses(&admin, &name)
                .await
                .into_iter()
                .find(|p| p.spec.node_name == node)
        }
    };

    // Round one: node 0 completes with one reboot, node 1 fails after one.
    wait_for(
        "the first round to end",
        Duration::from_secs(90),
        || async {
            let done = phase(&progress_of(&nodes[0].name).await?) == Some(ProgressPhase::Completed);
            let failed = phase(&progress_of(&nodes[1].name).await?) == Some(ProgressPhase::Failed);
            let released = our_nodes(cluster).await.ok()?.iter().all(|n| !cordoned(n));
            let approval_spent = !progress_of(&nodes[0].name).await?.spec.reboot_approved;
            (done && failed && released && approval_spent).then_some(())
        },
    )
    .await?;
    assert_eq!(nodes[0].host.boot_count()?, 2);
    assert_eq!(nodes[1].host.boot_count()?, 2);

    // The updater installs another update on node 0.
    nodes[0].host.need_reboot(false)?;
    wait_for(
        "the second round to start",
        Duration::from_secs(60),
        || async {
            let p = progress_of(&nodes[0].name).await?;
            (phase(&p) != Some(ProgressPhase::Completed)).then_some(())
        },
    )
    .await?;
    wait_for(
        "node 0 rebooted again and released",
        Duration::from_secs(90),
        || async {
            let p = progress_of(&nodes[0].name).await?;
            let released = our_nodes(cluster).await.ok()?.iter().all(|n| !cordoned(n));
            let counts = status(&admin, &name).await?.nodes?;
            (phase(&p) == Some(ProgressPhase::Completed)
                && released
                && counts.completed == 1
                && counts.failed == 1)
                .then_some(())
        },
    )
    .await?;
    assert_eq!(nodes[0].host.boot_count()?, 3, "rebooted exactly once more");
    assert!(!nodes[0].host.sentinel().exists());
    assert_eq!(
        nodes[1].host.boot_count()?,
        2,
        "the failed node is not rebooted again"
    );
    assert_eq!(
        phase(&progress_of(&nodes[1].name).await.expect("progress")),
        Some(ProgressPhase::Failed)
    );
    assert_eq!(recorder.max(), 1, "one node at a time");

    ctrl.stop().await?;
    rec_task.abort();
    drop(nodes);
    Ok(())
}
