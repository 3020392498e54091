//! Cluster tests of the issue, with the real controller and the real node agents:
//! 10 kubelet-lite nodes on the test API server (or the real cluster named by
//! `OSROLL_E2E_KUBECONFIG`), each with the agent driving a simulated A/B host; images
//! served over HTTP on loopback; maxUnavailable 2; a PodDisruptionBudget that blocks one
//! pod until it is relaxed; one node whose new slot fails to boot. The rollout must end
//! with 9 nodes Completed and 1 RolledBack, say so in status and Events, leave no node
//! cordoned, and never have more than 2 nodes disrupted at once as recorded from watch
//! events. The second test kills the controller midway (dropped without releasing its
//! Lease, as a crash) and lets a new replica finish. A failed rollout test prints the
//! harness's diagnosis (each agent's and the controller's last log lines, the state of
//! the objects); the third test breaks one agent (its identity has no RBAC) and checks
//! that the test fails and that its diagnosis names the 403 and the agent.

mod common;

use std::time::Duration;

use common::DisruptionRecorder;
use common::fleet::{Controller, create_pdb, create_pod, relax_pdb, wait_rollout_end};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase, UpgradePhase, labels};
use osroll_sim::demo::images::ImageServer;
use osroll_sim::demo::node::MachineOptions;
use osroll_sim::testing::{Cluster, identities, wait_for};
use serde_json::json;

const NODES: usize = 10;
/// The node (before the instance's prefix) whose new slot fails to boot.
const BAD_NODE: &str = "node-07";

fn upgrade(cluster: &Cluster, catalog: &str) -> anyhow::Result<OSUpgrade> {
    cluster.upgrade(
        "fleet",
        json!({
            "version": "stable",
            "catalog": {"inline": catalog},
            "allowHttpImages": true,
            "strategy": {"maxUnavailable": 2, "maxFailures": 2},
            "drain": {"timeoutSeconds": 300},
        }),
    )
}

async fn status(admin: &kube::Client, name: &str) -> Option<osroll_api::OSUpgradeStatus> {
    Api::<OSUpgrade>::all(admin.clone())
        .get(name)
        .await
        .ok()?
        .status
}

/// The Events about the OSUpgrade `upgrade`.
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

/// What a rollout test varies.
#[derive(Default)]
struct Scenario {
    /// Kill the controller midway and start another replica.
    kill_midway: bool,
    /// The node (before the instance's prefix) whose agent runs as an identity without
    /// any RBAC.
    broken_agent: Option<&'static str>,
}

/// The rollout test on a new harness instance; its error carries the diagnosis.
async fn rollout(scenario: Scenario) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = roll_out(&cluster, &scenario).await;
    cluster.explain(result).await
}

async fn roll_out(cluster: &Cluster, scenario: &Scenario) -> anyhow::Result<()> {
    let kill_midway = scenario.kill_midway;
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let bad_node = cluster.name(BAD_NODE);
    let node = |i: usize| cluster.name(&format!("node-{i:02}"));
    let images = ImageServer::start(&["2.0"], 256 * 1024).await?;
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let name = node(i);
        let opts = MachineOptions {
            slot_size: 512 * 1024,
            downtime: Duration::from_millis(300),
            bad_slot_b: name == bad_node,
        };
        let machine = match scenario.broken_agent {
            Some(broken) if name == cluster.name(broken) => {
                let nobody = identities::service_account_user(&ns, "osroll-agent-unbound");
                let agent = cluster.client_for_node(&nobody, &name).await?;
                cluster
                    .start_machine_as(agent, dir.path(), &name, "1.0", &opts)
                    .await?
            }
            _ => {
                cluster
                    .start_machine(dir.path(), &name, "1.0", &opts)
                    .await?
            }
        };
        nodes.push(machine);
    }
    let managed_within = match scenario.broken_agent {
        Some(_) => Duration::from_secs(5),
        None => Duration::from_secs(30),
    };
    cluster.wait_managed_within(NODES, managed_within).await?;

    create_pod(&admin, &ns, "web-0", &node(0), "web").await?;
    create_pod(&admin, &ns, "db-0", &node(1), "db").await?;
    create_pdb(&admin, &ns, "web-pdb", "web", 1).await?;

    let recorder = DisruptionRecorder::default();
    let rec_task = tokio::spawn(
        recorder
            .clone()
            .run_selected(admin.clone(), cluster.scope().selector()),
    );
    let up = upgrade(cluster, &images.catalog("2.0"))?;
    let up_name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let mut ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    // The budget holds web-0 on node-00: an Event and the status name pod and budget.
    let note = wait_for("a DrainBlocked event", Duration::from_secs(60), || async {
        events(&admin, &up_name)
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
    wait_for(
        "the status to name the budget",
        Duration::from_secs(10),
        || async {
            status(&admin, &up_name)
                .await?
                .message?
                .contains(&format!("{ns}/web-pdb"))
                .then_some(())
        },
    )
    .await?;

    if kill_midway {
        wait_for("three nodes completed", Duration::from_secs(60), || async {
            (status(&admin, &up_name).await?.nodes?.completed >= 3).then_some(())
        })
        .await?;
        // A crash: the controller is dropped mid-flight and its Lease is not released.
        ctrl.task.abort();
        let _ = (&mut ctrl.task).await;
        ctrl = Controller::start(cluster, "replica-b", Duration::from_millis(300)).await?;
    }

    relax_pdb(&admin, &ns, "web-pdb").await?;

    let st = wait_rollout_end(&admin, &up_name, Duration::from_secs(120)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    let counts = st.nodes.clone().expect("node counts");
    assert_eq!(
        (counts.total, counts.completed, counts.rolled_back),
        (10, 9, 1),
        "{counts:?}"
    );
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert!(
        degraded.is_true() && degraded.message.contains(&bad_node),
        "{degraded:?}"
    );
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("1 rolled back ({bad_node})")),
        "{:?}",
        st.message
    );

    // Each node where the agent says: the bad one back on slot A at 1.0, the rest on 2.0.
    let progresses = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for n in &nodes {
        let p = progresses
            .iter()
            .find(|p| p.spec.node_name == n.name)
            .expect("a progress per node");
        let phase = p.status.as_ref().and_then(|s| s.phase);
        let booted = n.host.booted_slot()?;
        let version = n.host.slot_version(booted)?;
        if n.name == bad_node {
            assert_eq!(phase, Some(ProgressPhase::RolledBack));
            assert_eq!(
                (booted, version.as_deref()),
                (osroll_agent::Slot::A, Some("1.0"))
            );
        } else {
            assert_eq!(phase, Some(ProgressPhase::Completed), "{}", n.name);
            assert_eq!(version.as_deref(), Some("2.0"), "{}", n.name);
        }
    }

    // Events are published behind the decisions: wait for the last one.
    wait_for("the rollout's Events", Duration::from_secs(10), || async {
        let evs = events(&admin, &up_name).await;
        let seen = |r: &str, node: Option<&str>| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some(r)
                    && node.is_none_or(|n| {
                        e.related.as_ref().and_then(|x| x.name.as_deref()) == Some(n)
                    })
            })
        };
        (seen("RolloutCompleted", None)
            && seen("NodeRolledBack", Some(&bad_node))
            && seen("NodeCompleted", Some(&node(0))))
        .then_some(())
    })
    .await?;
    let evs = events(&admin, &up_name).await;
    let has = |reason: &str, node: Option<&str>| {
        evs.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && node
                    .is_none_or(|n| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(n))
        })
    };
    assert!(
        has("NodeRolledBack", Some(&bad_node)),
        "no NodeRolledBack event for {bad_node}"
    );
    assert!(has("NodeCompleted", Some(&node(0))));
    assert!(has("RolloutCompleted", None));
    for n in Api::<Node>::all(admin.clone())
        .list(&ListParams::default().labels(&cluster.scope().selector()))
        .await?
        .items
    {
        let name = n.metadata.name.clone().unwrap_or_default();
        assert!(
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            "node {name} left cordoned"
        );
        assert!(
            !n.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(labels::CORDONED_BY),
            "{name}"
        );
    }
    assert!(
        recorder.max() <= 2,
        "{} nodes were disrupted at once",
        recorder.max()
    );
    assert!(
        recorder.max() == 2,
        "with 10 nodes and maxUnavailable 2 the budget is used: saw {}",
        recorder.max()
    );
    if kill_midway {
        assert!(
            evs.iter()
                .any(|e| e.reporting_instance.as_deref() == Some("replica-b")),
            "replica-b never acted"
        );
    }

    ctrl.stop().await?;
    rec_task.abort();
    drop(nodes);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_a_blocking_budget_and_a_failed_boot() -> anyhow::Result<()> {
    rollout(Scenario::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_the_controller_killed_and_restarted_midway() -> anyhow::Result<()> {
    rollout(Scenario {
        kill_midway: true,
        ..Scenario::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_its_rbac_fails_the_test_and_the_diagnosis_names_the_403()
-> anyhow::Result<()> {
    let broken = "node-03";
    let err = match rollout(Scenario {
        broken_agent: Some(broken),
        ..Scenario::default()
    })
    .await
    {
        Ok(()) => anyhow::bail!("the rollout test passed with a broken agent"),
        Err(e) => format!("{e:?}"),
    };
    // The broken agent's own log section, with the refusal in it.
    let section = err
        .split("--- ")
        .find(|s| s.starts_with("last") && s.contains(&format!("-{broken}:")))
        .unwrap_or_else(|| panic!("no log of the agent of {broken} in:\n{err}"));
    assert!(section.contains("agent t"), "{section}");
    assert!(
        section.contains("403") && section.contains("forbidden"),
        "{section}"
    );
    // The objects it waited on: the broken node is not managed, the others are.
    assert!(
        err.contains("waiting for every agent to label its node managed"),
        "{err}"
    );
    let node_line = err
        .lines()
        .find(|l| l.trim_start().starts_with("Node ") && l.contains(&format!("-{broken}:")))
        .unwrap_or_else(|| panic!("no state of {broken} in:\n{err}"));
    assert!(node_line.contains("managed None"), "{node_line}");
    Ok(())
}
