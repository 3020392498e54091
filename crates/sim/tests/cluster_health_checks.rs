//! Cluster tests of the Job health check, with the real controller and agents on the test
//! API server (or the real cluster named by `OSROLL_E2E_KUBECONFIG`): the controller
//! creates the check's Job as its service account; until that Job finished the rollout
//! starts nothing and says why; once the Job succeeded (the test writes its status as the
//! Job controller would) the rollout completes.

mod common;

use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase};
use osroll_sim::demo::images::ImageServer;
use osroll_sim::demo::node::MachineOptions;
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

const NODES: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_check_gates_the_rollout_until_its_job_succeeded() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = job_gate(&cluster).await;
    cluster.explain(result).await
}

async fn job_gate(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let images = ImageServer::start(&["1.0", "2.0"], 256 * 1024).await?;
    let dir = tempfile::tempdir()?;
    let machine = MachineOptions {
        slot_size: 512 * 1024,
        downtime: Duration::from_millis(300),
        bad_slot_b: false,
    };
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let name = cluster.name(&format!("node-{i}"));
        nodes.push(
            cluster
                .start_machine(dir.path(), &name, "1.0", &machine)
                .await?,
        );
    }
    cluster
        .wait_managed_within(NODES, Duration::from_secs(30))
        .await?;

    let up = cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": images.catalog("2.0")},
            "allowHttpImages": true,
            "strategy": {
                "maxUnavailable": 1,
                "healthChecks": [{"name": "smoke", "job": {
                    "namespace": ns,
                    "timeoutSeconds": 120,
                    "template": {"backoffLimit": 0, "template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "smoke", "image": "busybox", "command": ["true"]}],
                    }}},
                }}],
            },
        }),
    )?;
    let name = up.name_any();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let selector = format!("osroll.io/health-upgrade={name},osroll.io/health-check=smoke");
    let job = wait_for("the health Job", Duration::from_secs(30), || async {
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await?;
    let job_name = job.name_any();
    let spec = job.spec.clone().expect("a Job spec");
    assert_eq!(
        spec.backoff_limit,
        Some(0),
        "the template is the Job's spec"
    );
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));

    // Unfinished, the Job fails the check: the condition says so and nothing started.
    let message = wait_for("Healthy False", Duration::from_secs(30), || async {
        let st = Api::<OSUpgrade>::all(admin.clone())
            .get(&name)
            .await
            .ok()?
            .status?;
        let c = st.conditions.into_iter().find(|c| c.type_ == "Healthy")?;
        (c.status == "False").then_some(c.message)
    })
    .await?;
    assert!(
        message.contains("smoke") && message.contains("has not finished"),
        "{message}"
    );
    let approved: Vec<String> = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.source_ref.as_ref().is_some_and(|s| s.name == name))
        .filter(|p| p.spec.reboot_approved)
        .map(|p| p.spec.node_name)
        .collect();
    assert!(
        approved.is_empty(),
        "approved under a failing check: {approved:?}"
    );

    // As the Job controller reports a pod that exited 0.
    let done = json!({"status": {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True"}],
    }});
    jobs.patch_status(&job_name, &PatchParams::default(), &Patch::Merge(&done))
        .await?;
    let st = wait_rollout_end(&admin, &name, Duration::from_secs(90)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    for n in &nodes {
        let booted = n.host.booted_slot()?;
        assert_eq!(
            n.host.slot_version(booted)?.as_deref(),
            Some("2.0"),
            "{}",
            n.name
        );
    }
    jobs.delete_collection(
        &Default::default(),
        &ListParams::default().labels(&selector),
    )
    .await?;
    ctrl.stop().await
}
