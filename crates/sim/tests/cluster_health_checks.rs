//! Cluster tests of the Job and Prometheus health checks, with the real controller and
//! agents on the test API server (or the real cluster named by `OSROLL_E2E_KUBECONFIG`).
//! Job: the controller creates the check's Job as its service account; until that Job
//! finished the rollout starts nothing and says why; once the Job succeeded (the test
//! writes its status as the Job controller would) the rollout completes; once it failed,
//! the rollout stays held (no node approved or cordoned, a `HealthCheckFailing` Event
//! names the check) until its health timeout fails it. Prometheus: a
//! loopback HTTP server answers `/api/v1/query` with a sample the test sets; above the
//! threshold nothing starts and the condition gives the sample, below it the rollout
//! completes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase};
use osroll_controller::ControllerConfig;
use osroll_sim::demo::node::SimNode;
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;
use tracing::Instrument;

const NODES: usize = 2;

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

/// This instance's nodes that are cordoned.
async fn cordoned(cluster: &Cluster) -> anyhow::Result<Vec<String>> {
    let lp = ListParams::default().labels(&cluster.scope().selector());
    Ok(Api::<Node>::all(cluster.admin())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .map(|n| n.name_any())
        .collect())
}

/// Notes of the Events with `reason` about the OSUpgrade `upgrade`.
async fn event_notes(admin: &kube::Client, upgrade: &str, reason: &str) -> Vec<String> {
    Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(upgrade))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

/// The OSUpgrade `name` with a Job check `smoke` in `ns` and `healthTimeoutSeconds`; the
/// Job's container runs `command` (`true` or `false`), so that on a real cluster the Job
/// controller reports what the test writes here as the test API server's stand-in for it.
fn job_checked(
    cluster: &Cluster,
    fleet: &osroll_sim::testing::Fleet,
    timeout: u64,
    command: &str,
) -> anyhow::Result<OSUpgrade> {
    cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": fleet.images.catalog("2.0")},
            "allowHttpImages": true,
            "strategy": {
                "maxUnavailable": 1,
                "healthTimeoutSeconds": timeout,
                "healthChecks": [{"name": "smoke", "job": {
                    "namespace": cluster.namespace(),
                    "timeoutSeconds": 120,
                    "template": {"backoffLimit": 0, "template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "smoke", "image": "busybox", "command": [command]}],
                    }}},
                }}],
            },
        }),
    )
}

/// The labels of the `smoke` check's Jobs for the OSUpgrade `upgrade`.
fn job_selector(upgrade: &str) -> String {
    format!("osroll.io/health-upgrade={upgrade},osroll.io/health-check=smoke")
}

/// The check's Job, once the controller created it.
async fn health_job(jobs: &Api<Job>, upgrade: &str) -> anyhow::Result<Job> {
    let selector = job_selector(upgrade);
    wait_for("the health Job", Duration::from_secs(30), || async {
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
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
    let fleet = cluster.start_fleet(NODES).await?;

    let up = job_checked(cluster, &fleet, 300, "true")?;
    let name = up.name_any();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let job = health_job(&jobs, &name).await?;
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
    on_version(&fleet.nodes, "2.0")?;
    jobs.delete_collection(
        &Default::default(),
        &ListParams::default().labels(&job_selector(&name)),
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
    let fleet = cluster.start_fleet(NODES).await?;
    let prom = Arc::new(Prometheus::default());
    *prom.sample.lock().unwrap() = "0.25".into();
    let (url, _server) = serve_prometheus(prom.clone()).await?;
    let query = "sum(rate(http_errors_total[5m]))";
    let up = cluster.upgrade(
        "fleet",
        json!({
            "version": "2.0",
            "catalog": {"inline": fleet.images.catalog("2.0")},
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
    on_version(&fleet.nodes, "2.0")?;
    let _ = stop.send(());
    ctrl.await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_holds_the_rollout_until_its_health_timeout_fails_it() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let result = job_failed(&cluster).await;
    cluster.explain(result).await
}

async fn job_failed(cluster: &Cluster) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let fleet = cluster.start_fleet(NODES).await?;
    // A long timeout first: the Job fails and the rollout is held, not yet failed.
    let up = job_checked(cluster, &fleet, 3600, "false")?;
    let name = up.name_any();
    let upgrades = Api::<OSUpgrade>::all(admin.clone());
    upgrades.create(&PostParams::default(), &up).await?;
    let ctrl = Controller::start(cluster, "replica-a", Duration::from_millis(300)).await?;

    let jobs: Api<Job> = Api::namespaced(admin.clone(), &cluster.namespace());
    let job_name = health_job(&jobs, &name).await?.name_any();
    // As the Job controller reports a pod that exited non-zero with backoffLimit 0.
    let failed = json!({"status": {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    }});
    jobs.patch_status(&job_name, &PatchParams::default(), &Patch::Merge(&failed))
        .await?;
    let message = unhealthy(&admin, &name, &format!("Job {job_name} failed")).await?;
    assert!(message.contains("health check smoke"), "{message}");
    wait_for(
        "a HealthCheckFailing Event naming the check",
        Duration::from_secs(10),
        || async {
            let notes = event_notes(&admin, &name, "HealthCheckFailing").await;
            notes
                .iter()
                .any(|n| n.contains("health check smoke fails"))
                .then_some(())
        },
    )
    .await?;
    let phase = upgrades.get(&name).await?.status.and_then(|s| s.phase);
    assert!(
        !matches!(phase, Some(UpgradePhase::Failed | UpgradePhase::Completed)),
        "held, not ended: {phase:?}"
    );
    let held = approved(&admin, &name).await?;
    assert!(held.is_empty(), "approved under a failed Job: {held:?}");
    let cordoned = cordoned(cluster).await?;
    assert!(
        cordoned.is_empty(),
        "cordoned under a failed Job: {cordoned:?}"
    );

    // One second of failing is enough now: the rollout fails, naming the failed Job.
    let patch = json!({"spec": {"strategy": {"healthTimeoutSeconds": 1}}});
    upgrades
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let st = wait_rollout_end(&admin, &name, Duration::from_secs(30)).await?;
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (Some(UpgradePhase::Failed), Some("HealthCheckFailed")),
        "{st:#?}"
    );
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("Job {job_name} failed"))),
        "{st:#?}"
    );
    let after = approved(&admin, &name).await?;
    assert!(after.is_empty(), "approved after the failure: {after:?}");
    on_version(&fleet.nodes, "1.0")?;
    jobs.delete_collection(
        &Default::default(),
        &ListParams::default().labels(&job_selector(&name)),
    )
    .await?;
    ctrl.stop().await
}
