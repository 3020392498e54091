//! Steps shared by the cluster tests that run real agents on `osroll_sim::testing::Cluster`
//! (cluster_rollout, cluster_live, rbac_rollout): start the controller in-process as its
//! service account, acting only on the test's own OSUpgrades, and wait for a rollout to
//! end.

use std::time::Duration;

use kube::api::Api;
use osroll_api::{OSUpgrade, OSUpgradeStatus, UpgradePhase};
use osroll_controller::ControllerConfig;
use osroll_sim::testing::{Cluster, wait_for};
use tracing::Instrument;

/// A controller running in this process until [`Controller::stop`] (or an abort).
pub struct Controller {
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Controller {
    /// Start one replica named `identity`, with a 3 s lease and the given drain poll.
    pub async fn start(
        cluster: &Cluster,
        identity: &str,
        drain_poll: Duration,
    ) -> anyhow::Result<Controller> {
        let client = cluster.controller_client().await?;
        let cfg = ControllerConfig {
            lease_duration: Duration::from_secs(3),
            drain_poll,
            ..cluster.controller_config(identity)
        };
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let run = osroll_controller::run_until(cfg, client, async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(run.instrument(cluster.controller_log_span(identity)));
        Ok(Controller { task, stop })
    }

    /// Ask it to stop and wait for it; its own error, if it failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Wait until the OSUpgrade `name` is Completed or Failed, and return its status.
pub async fn wait_rollout_end(
    admin: &kube::Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<OSUpgradeStatus> {
    let upgrades: Api<OSUpgrade> = Api::all(admin.clone());
    wait_for("the rollout to finish", timeout, || async {
        let st = upgrades.get(name).await.ok()?.status?;
        matches!(
            st.phase,
            Some(UpgradePhase::Completed | UpgradePhase::Failed)
        )
        .then_some(st)
    })
    .await
}

/// Create the `web` Deployment (three replicas, label `app: web`) in `ns`: the workload
/// a live update leaves alone unless its mounts went stale.
pub async fn create_web_deployment(admin: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let dep: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}},
    }))?;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(admin.clone(), ns)
        .create(&kube::api::PostParams::default(), &dep)
        .await?;
    Ok(())
}

/// Create pod `name` (label `app`) bound to `node` in `ns`.
pub async fn create_pod(
    admin: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    app: &str,
) -> anyhow::Result<()> {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }))?;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), ns)
        .create(&kube::api::PostParams::default(), &pod)
        .await?;
    Ok(())
}

/// Create PodDisruptionBudget `name` in `ns`: `min_available` pods labelled `app`.
pub async fn create_pdb(
    admin: &kube::Client,
    ns: &str,
    name: &str,
    app: &str,
    min_available: i32,
) -> anyhow::Result<()> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}},
    }))?;
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), ns)
        .create(&kube::api::PostParams::default(), &pdb)
        .await?;
    Ok(())
}

/// Let PodDisruptionBudget `name` in `ns` allow every eviction (`minAvailable: 0`).
pub async fn relax_pdb(admin: &kube::Client, ns: &str, name: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let relax = serde_json::json!({"spec": {"minAvailable": 0}});
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&relax),
        )
        .await?;
    Ok(())
}
