//! Two harness instances on one test API server at the same time, as two tests on one
//! real cluster would be: each with its own namespace, node prefix, controller (acting
//! only on its own OSUpgrades) and agents, both rolling out an OSUpgrade of the same
//! base name at once. Their objects never meet: each rollout counts only its own nodes,
//! each controller and each agent touches only its own instance's objects (checked on
//! the audit log), and dropping one instance deletes its objects and leaves the other's.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase};
use osroll_sim::AuditEntry;
use osroll_sim::demo::images::ImageServer;
use osroll_sim::demo::node::{MachineOptions, SimNode};
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

const NODES: usize = 2;

/// One instance's machines, controller and OSUpgrade (its name).
struct Fleet {
    nodes: Vec<SimNode>,
    controller: Controller,
    upgrade: String,
}

async fn start_fleet(
    cluster: &Cluster,
    images: &ImageServer,
    dir: &std::path::Path,
) -> anyhow::Result<Fleet> {
    let opts = MachineOptions {
        slot_size: 256 * 1024,
        downtime: Duration::from_millis(100),
        bad_slot_b: false,
    };
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let name = cluster.name(&format!("node-{i}"));
        nodes.push(cluster.start_machine(dir, &name, "1.0", &opts).await?);
    }
    cluster.wait_managed(NODES).await?;
    // The same base name in both instances: the prefix keeps them apart.
    let up = cluster.upgrade(
        "fleet",
        json!({"version": "stable", "catalog": {"inline": images.catalog("2.0")},
               "allowHttpImages": true, "strategy": {"maxUnavailable": 1}}),
    )?;
    let upgrade = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(cluster.admin())
        .create(&PostParams::default(), &up)
        .await?;
    let controller = Controller::start(cluster, "replica", Duration::from_millis(200)).await?;
    Ok(Fleet {
        nodes,
        controller,
        upgrade,
    })
}

/// Calls by `cluster`'s controller or agents that named an object of another instance
/// (a progress object belongs to the instance of its node, `node_of` says which).
fn foreign_calls<'a>(
    cluster: &Cluster,
    log: &'a [AuditEntry],
    node_of: &HashMap<String, String>,
) -> Vec<&'a AuditEntry> {
    let users = [cluster.controller_user(), cluster.agent_user()];
    let owned = |e: &AuditEntry| match e.resource.as_str() {
        "nodes" | "osupgrades" => cluster.scope().owns(&e.name),
        "osupgradeprogresses" => node_of
            .get(&e.name)
            .is_some_and(|n| cluster.scope().owns(n)),
        _ => true,
    };
    log.iter()
        .filter(|e| users.contains(&e.user) && !e.name.is_empty() && !owned(e))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_server_never_meet() -> anyhow::Result<()> {
    let a = Cluster::start().await?;
    let b = a.another().await?;
    assert_ne!(a.namespace(), b.namespace());
    assert_ne!(a.name("node-0"), b.name("node-0"));
    let images = ImageServer::start(&["2.0"], 64 * 1024).await?;
    let dir = tempfile::tempdir()?;
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let (fa, fb) = tokio::try_join!(
        start_fleet(&a, &images, &dir_a),
        start_fleet(&b, &images, &dir_b),
    )?;

    let (admin_a, admin_b) = (a.admin(), b.admin());
    let (sa, sb) = tokio::try_join!(
        wait_rollout_end(&admin_a, &fa.upgrade, Duration::from_secs(90)),
        wait_rollout_end(&admin_b, &fb.upgrade, Duration::from_secs(90)),
    )?;
    for st in [&sa, &sb] {
        assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
        let n = st.nodes.as_ref().expect("node counts");
        assert_eq!(
            (n.total, n.completed),
            (NODES as u32, NODES as u32),
            "{n:?}"
        );
    }
    // Each upgrade's progress objects are for its own instance's nodes only.
    let progresses = Api::<OSUpgradeProgress>::all(a.admin())
        .list(&ListParams::default())
        .await?
        .items;
    for (c, f) in [(&a, &fa), (&b, &fb)] {
        let mine: Vec<&OSUpgradeProgress> = progresses
            .iter()
            .filter(|p| p.spec.source_ref.as_ref().map(|s| s.name.as_str()) == Some(&f.upgrade))
            .collect();
        assert_eq!(mine.len(), NODES);
        assert!(mine.iter().all(|p| c.scope().owns(&p.spec.node_name)));
    }
    let log = a.audit().expect("the test API server's audit log");
    let node_of: HashMap<String, String> = progresses
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.spec.node_name.clone(),
            )
        })
        .collect();
    for c in [&a, &b] {
        let foreign = foreign_calls(c, &log, &node_of);
        assert!(foreign.is_empty(), "{foreign:#?}");
    }
    // The check is not vacuous: both controllers and agents named their own objects.
    for c in [&a, &b] {
        assert!(
            log.iter().any(|e| e.user == c.controller_user()
                && e.resource == "nodes"
                && c.scope().owns(&e.name)),
            "no cordon by {}",
            c.controller_user()
        );
    }

    // Dropping b deletes b's objects and leaves a's.
    let Fleet {
        nodes: b_nodes,
        controller: b_ctrl,
        ..
    } = fb;
    b_ctrl.stop().await?;
    drop(b_nodes);
    let (b_ns, b_scope) = (b.namespace(), b.scope().clone());
    drop(b);
    let admin = a.admin();
    wait_for("b's objects to go", Duration::from_secs(30), || async {
        let nodes = Api::<Node>::all(admin.clone())
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let ups = Api::<OSUpgrade>::all(admin.clone())
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let ns = Api::<Namespace>::all(admin.clone())
            .get_opt(&b_ns)
            .await
            .ok()?;
        let left = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .chain(ups.iter().filter_map(|u| u.metadata.name.as_deref()))
            .any(|n| b_scope.owns(n));
        if left || ns.is_some() {
            eprintln!(
                "still there: b's objects {left}, namespace {}",
                ns.is_some()
            );
        }
        (!left && ns.is_none()).then_some(())
    })
    .await?;
    assert_eq!(a.managed_nodes().await?.len(), NODES, "a's nodes stay");
    Api::<OSUpgrade>::all(admin.clone())
        .get(&fa.upgrade)
        .await?;
    fa.controller.stop().await?;
    drop(fa.nodes);
    Ok(())
}
