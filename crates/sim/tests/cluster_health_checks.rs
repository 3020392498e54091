//! Cluster tests of the Job and Prometheus health checks, with the real controller and
//! agents on the test API server (or the real cluster named by `OSROLL_E2E_KUBECONFIG`).
//! Job: the controller creates the check's Job as its service account; until that Job
//! finished the rollout starts nothing and says why; once the Job succeeded (the test
//! writes its status as the Job controller would) the rollout completes. Prometheus: a
//! loopback HTTP server answers `/api/v1/query` with a sample the test sets; above the
//! threshold nothing starts and the condition gives the sample, below it the rollout
//! completes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase};
use osroll_controller::ControllerConfig;
use osroll_sim::demo::images::ImageServer;
use osroll_sim::demo::node::{MachineOptions, SimNode};
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;
use tempfile::TempDir;
use tracing::Instrument;

const NODES: usize = 2;

/// The image server, the machines' directory and `NODES` machines on 1.0, once managed.
async fn fleet(cluster: &Cluster) -> anyhow::Result<(ImageServer, TempDir, Vec<SimNode>)> {
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
    Ok((images, dir, nodes))
}

/// The message of the OSUpgrade's `Healthy` condition, once it is False and says `what`.
async fn unhealthy(admin: &kube::Client, name: &str, what: &str) -> anyhow::Result<String> {
    wait_for("Healthy False", Duration::from_secs(30), || async {
        let st = Api::<OSUpgrade>::all(admin.clone())
            .get(name)
            .await
            .ok()?
            .status?;
        let c = st.conditions.into_iter().find(|c| c.type_ == "Healthy")?;
        (c.status == "False" && c.message.contains(what)).then_some(c.message)
    })
    .await
}

/// Nodes approved for a reboot by the OSUpgrade `name`.
async fn approved(admin: &kube::Client, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.source_ref.as_ref().is_some_and(|s| s.name == name))
        .filter(|p| p.spec.reboot_approved)
        .map(|p| p.spec.node_name)
        .collect())
}

fn on_version(nodes: &[SimNode], version: &str) -> anyhow::Result<()> {
    for n in nodes {
        let booted = n.host.booted_slot()?;
        assert_eq!(
            n.host.slot_version(booted)?.as_deref(),
            Some(version),
            "{}",
            n.name
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_check_gates_the_rollout_until_its_job_succeeded() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = job_gate(&cluster).await;
    cluster.explain(result).await
}

async fn job_gate(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let ns = cluster.namespace();
    let (images, _dir, nodes) = fleet(cluster).await?;

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
    let message = unhealthy(&admin, &name, "has not finished").await?;
    assert!(message.contains("health check smoke"), "{message}");
    let approved = approved(&admin, &name).await?;
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
    on_version(&nodes, "2.0")?;
    jobs.delete_collection(
        &Default::default(),
        &ListParams::default().labels(&selector),
    )
    .await?;
    ctrl.stop().await
}

/// What the fake Prometheus answers, and the queries it was asked.
#[derive(Default)]
struct Prometheus {
    sample: Mutex<String>,
    queries: Mutex<Vec<String>>,
}

/// Serve `/api/v1/query` on loopback: a vector of one sample, `state.sample`.
async fn serve_prometheus(state: Arc<Prometheus>) -> anyhow::Result<(String, AbortOnDrop)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| {
                let state = state.clone();
                async move {
                    let query = q.get("query").cloned().unwrap_or_default();
                    state.queries.lock().unwrap().push(query);
                    let sample = state.sample.lock().unwrap().clone();
                    axum::Json(json!({"status": "success", "data": {"resultType": "vector",
                        "result": [{"metric": {}, "value": [1_700_000_000, sample]}]}}))
                }
            },
        ),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, AbortOnDrop(task)))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prometheus_check_gates_the_rollout_on_its_sample() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = prometheus_gate(&cluster).await;
    cluster.explain(result).await
}

async fn prometheus_gate(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let (images, _dir, nodes) = fleet(cluster).await?;
    let prom = Arc::new(Prometheus::default());
    *prom.sample.lock().unwrap() = "0.25".into();
    let (url, _server) = serve_prometheus(prom.clone()).await?;
    let query = "sum(rate(http_errors_total[5m]))";
    let up = cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": images.catalog("2.0")},
            "allowHttpImages": true,
            "strategy": {
                "maxUnavailable": 1,
                "healthChecks": [{"name": "errors", "prometheus": {
                    "url": url, "query": query, "op": "<", "threshold": 0.05,
                }}],
            },
        }),
    )?;
    let name = up.name_any();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    // Plain http to Prometheus needs the controller's permission, as catalog URLs do.
    let cfg = ControllerConfig {
        allow_http_catalog: true,
        ..cluster.controller_config("replica-a")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = osroll_controller::run_until(cfg, cluster.controller_client().await?, async move {
        let _ = stopped.await;
    });
    let ctrl = tokio::spawn(run.instrument(cluster.controller_log_span("replica-a")));

    let message = unhealthy(&admin, &name, "does not hold").await?;
    assert!(
        message.contains("health check errors")
            && message.contains("sample 0.25 < 0.05 does not hold"),
        "{message}"
    );
    let approved = approved(&admin, &name).await?;
    assert!(
        approved.is_empty(),
        "approved under a failing check: {approved:?}"
    );
    let queries = prom.queries.lock().unwrap().clone();
    assert!(queries.iter().any(|q| q == query), "{queries:?}");

    *prom.sample.lock().unwrap() = "0.01".into();
    let st = wait_rollout_end(&admin, &name, Duration::from_secs(90)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    on_version(&nodes, "2.0")?;
    let _ = stop.send(());
    ctrl.await?
}
