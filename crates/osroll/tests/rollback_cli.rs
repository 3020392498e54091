//! `osroll rollback NAME` as a user runs it: the real binary against the test cluster (or
//! the real one named by `OSROLL_E2E_KUBECONFIG`), after a completed upgrade of three
//! nodes by the real controller and agents on simulated A/B hosts. The CLI's request must
//! take every node back to 1.0 in slot A, without one byte of the 1.0 image served and
//! with no node left cordoned; an unknown name fails with the name in the error.

use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use osroll_api::{OSUpgrade, ProgressPhase, UpgradePhase};
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;
use tracing::Instrument;

const NODES: usize = 3;

/// Run `osroll ARGS` with the cluster's admin kubeconfig.
async fn osroll(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Output> {
    let kc = cluster.admin_kubeconfig().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Ok(tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_osroll"))
            .args(args)
            .env("KUBECONFIG", kc)
            .output()
    })
    .await??)
}

async fn phase(admin: &kube::Client, name: &str) -> Option<UpgradePhase> {
    Api::<OSUpgrade>::all(admin.clone())
        .get(name)
        .await
        .ok()?
        .status?
        .phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_rolls_a_completed_upgrade_back_without_downloading() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = roll_back(&cluster).await;
    cluster.explain(result).await
}

async fn roll_back(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let fleet = cluster.start_fleet(NODES).await?;
    let (images, nodes) = (&fleet.images, &fleet.nodes);

    let up = cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": images.catalog("2.0")},
            "allowHttpImages": true,
            "strategy": {"maxUnavailable": 2},
        }),
    )?;
    let name = up.name_any();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let cfg = osroll_controller::ControllerConfig {
        lease_duration: Duration::from_secs(3),
        drain_poll: Duration::from_millis(300),
        ..cluster.controller_config("replica-a")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = osroll_controller::run_until(cfg, cluster.controller_client().await?, async move {
        let _ = stopped.await;
    });
    let ctrl = tokio::spawn(run.instrument(cluster.controller_log_span("replica-a")));

    wait_for(
        "the upgrade to complete",
        Duration::from_secs(90),
        || async { (phase(&admin, &name).await == Some(UpgradePhase::Completed)).then_some(()) },
    )
    .await?;
    let served_before = images.bytes_served("2.0");
    assert!(served_before > 0);

    let out = osroll(cluster, &["rollback", &name]).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("OSUpgrade {name}: rollback of 2.0 requested")),
        "{stdout}"
    );

    wait_for(
        "the rollback to finish",
        Duration::from_secs(90),
        || async {
            let ended = phase(&admin, &name).await;
            let settled = cluster.progresses_of(&name).await.iter().all(|p| {
                p.annotations().contains_key("osroll.io/rollback")
                    && p.status.as_ref().and_then(|s| s.phase) == Some(ProgressPhase::Completed)
            });
            let back = ended == Some(UpgradePhase::RolledBack) && settled;
            (back || ended == Some(UpgradePhase::Failed)).then_some(())
        },
    )
    .await?;
    assert_eq!(phase(&admin, &name).await, Some(UpgradePhase::RolledBack));
    assert_eq!(
        images.bytes_served("1.0"),
        0,
        "the A/B rollback downloaded 1.0"
    );
    assert_eq!(images.bytes_served("2.0"), served_before);
    let ps = cluster.progresses_of(&name).await;
    for n in nodes {
        let booted = n.host.booted_slot()?;
        assert_eq!(
            (booted, n.host.slot_version(booted)?.as_deref()),
            (osroll_agent::Slot::A, Some("1.0")),
            "{}",
            n.name
        );
        let p = ps
            .iter()
            .find(|p| p.spec.node_name == n.name)
            .expect("a progress per node");
        assert_eq!(
            p.status.as_ref().and_then(|s| s.bytes_done),
            Some(0),
            "{}",
            n.name
        );
    }
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
        .map(|n| n.name_any())
        .collect();
    assert!(cordoned.is_empty(), "left cordoned: {cordoned:?}");

    let nope = cluster.name("nope");
    let out = osroll(cluster, &["rollback", &nope]).await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&nope), "{stderr}");

    let _ = stop.send(());
    ctrl.await??;
    Ok(())
}
