//! Two controller replicas on the test API server: exactly one acts. The audit log shows
//! every write each replica made (each runs as its own user); the follower's writes
//! (other than to the Lease) must all come after the leader's last one. Stopping the
//! leader releases the Lease, so the follower takes over at once and finishes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use osroll_api::{OSUpgrade, UpgradePhase};
use osroll_controller::ControllerConfig;
use serde_json::json;

const SUM: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// The node a replica's pod runs on: both replicas are the controller's service
/// account, told apart in the audit log by the node their pod-bound tokens name.
fn node_of(replica: &str) -> String {
    format!("control-plane-{replica}")
}

struct Replica {
    name: &'static str,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn replica(c: &SimCluster, name: &'static str) -> anyhow::Result<Replica> {
    let client = c
        .server
        .client_for_node(CONTROLLER_USER, &node_of(name))
        .await?;
    let cfg = ControllerConfig {
        namespace: NS.into(),
        identity: name.into(),
        lease_duration: Duration::from_secs(3),
        drain_poll: Duration::from_millis(300),
        ..ControllerConfig::default()
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(osroll_controller::run_until(cfg, client, async move {
        let _ = rx.await;
    }));
    Ok(Replica {
        name,
        task,
        stop: Some(stop),
    })
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_both_act_and_a_stopped_leader_hands_over() -> anyhow::Result<()> {
    let c = SimCluster::start().await?;
    for i in 0..4 {
        c.add_node(&format!("node-{i}"), "1.0", &[]).await?;
    }
    let agents = ScriptedAgents {
        fates: HashMap::new(),
        staging: Duration::from_millis(200),
        reboot: Duration::from_millis(400),
    };
    let agent_task = c.run_agents(agents);
    let catalog = format!(
        "images:\n  - version: \"2.0\"\n    url: https://images.example/2.0\n    checksum: {SUM}\n"
    );
    let up: OSUpgrade = serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": "fleet"},
        "spec": {"version": "2.0", "catalog": {"inline": catalog}, "strategy": {"maxUnavailable": 1}},
    }))?;
    Api::<OSUpgrade>::all(c.admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let mut replicas = vec![
        replica(&c, "replica-a").await?,
        replica(&c, "replica-b").await?,
    ];

    let leases: Api<Lease> = Api::namespaced(c.admin.clone(), NS);
    wait_for("one node completed", Duration::from_secs(30), || async {
        let st = c.upgrade("fleet").await?.status.unwrap_or_default();
        Ok(st.nodes.is_some_and(|n| n.completed >= 1))
    })
    .await?;
    let holder = leases
        .get("osroll-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let li = replicas
        .iter()
        .position(|r| r.name == holder)
        .expect("the lease names a replica");
    let mut leader = replicas.remove(li);
    let follower = replicas.remove(0);
    let _ = leader.stop.take().unwrap().send(());
    leader.task.await??;
    let stopped_at = c.server.audit().last().map(|e| e.seq).unwrap_or(0);

    wait_for(
        "the follower to finish the rollout",
        Duration::from_secs(30),
        || async {
            Ok(c.upgrade("fleet").await?.status.and_then(|s| s.phase)
                == Some(UpgradePhase::Completed))
        },
    )
    .await?;
    let new_holder = leases
        .get("osroll-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(new_holder.as_deref(), Some(follower.name));

    let audit = c.server.audit();
    let writes = |r: &str| -> Vec<u64> {
        audit
            .iter()
            .filter(|e| {
                e.user == CONTROLLER_USER
                    && e.node_name.as_deref() == Some(node_of(r).as_str())
                    && is_write(&e.verb)
                    && e.resource != "leases"
                    && e.resource != "events"
            })
            .map(|e| e.seq)
            .collect()
    };
    let (lw, fw) = (writes(leader.name), writes(follower.name));
    assert!(
        !lw.is_empty() && !fw.is_empty(),
        "both should have led in turn: {lw:?} {fw:?}"
    );
    assert!(
        lw.iter().max() < fw.iter().min(),
        "the follower wrote while the leader led"
    );
    assert!(
        lw.iter().all(|s| *s <= stopped_at),
        "the stopped leader kept writing"
    );

    let _ = follower.stop.unwrap().send(());
    follower.task.await??;
    agent_task.abort();
    Ok(())
}
