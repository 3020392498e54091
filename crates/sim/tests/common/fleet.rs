//! Steps shared by the cluster tests that run real agents on `osroll_sim::testing::Cluster`
//! (cluster_rollout, cluster_live, rbac_rollout): start the controller in-process as its
//! service account, wait for every agent to label its node, wait for a rollout to end.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use osroll_api::{OSUpgrade, OSUpgradeStatus, UpgradePhase, labels};
use osroll_controller::ControllerConfig;
use osroll_sim::testing::{Cluster, wait_for};

use super::{CONTROLLER_USER, NS};

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
        let client = cluster.client_for(CONTROLLER_USER).await?;
        let cfg = ControllerConfig {
            namespace: NS.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(3),
            drain_poll,
            ..ControllerConfig::default()
        };
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(osroll_controller::run_until(cfg, client, async move {
            let _ = rx.await;
        }));
        Ok(Controller { task, stop })
    }

    /// Ask it to stop and wait for it; its own error, if it failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Wait until `count` nodes carry `osroll.io/managed=true` (each agent labels its own).
pub async fn wait_managed(admin: &kube::Client, count: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(admin.clone());
    let managed = ListParams::default().labels(&format!("{}=true", labels::MANAGED));
    wait_for(
        "every agent to label its node managed",
        Duration::from_secs(30),
        || async {
            let list = nodes.list(&managed).await.ok()?;
            (list.items.len() == count).then_some(())
        },
    )
    .await
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
