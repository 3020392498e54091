//! Progress objects from the Kubernetes API: a watch (list + watch, reconnecting with
//! backoff) on OSUpgradeProgress with the label selector `osroll.io/node=<node>` feeds
//! a local cache; the agent writes only the status subresource (JSON merge patch on
//! `/status`) and the labels of its own Node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, labels};
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::{ProgressSource, SourceError};

/// The label selector the agent watches with.
pub fn selector(node: &str) -> String {
    format!("{}={node}", labels::NODE)
}

/// The JSON merge patch the agent applies to its Node.
pub fn node_label_patch(labels: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!({ "metadata": { "labels": labels } })
}

/// Kubernetes-backed [`ProgressSource`].
pub struct KubeSource {
    api: Api<OSUpgradeProgress>,
    nodes: Api<Node>,
    node: String,
    store: Store<OSUpgradeProgress>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeSource {
    /// Start watching the progress objects of `node`. Must be called inside a Tokio runtime.
    pub fn new(client: kube::Client, node: &str) -> Self {
        let api: Api<OSUpgradeProgress> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        let cfg = watcher::Config::default().labels(&selector(node));
        let stream = watcher(api.clone(), cfg).default_backoff().reflect(writer);
        let watch = async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(_) => n.notify_one(),
                    Err(e) => tracing::warn!("watching OSUpgradeProgress: {e}"),
                }
            }
        };
        let task = tokio::spawn(watch.in_current_span());
        KubeSource {
            api,
            nodes: Api::all(client),
            node: node.to_string(),
            store,
            notify,
            task,
        }
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProgressSource for KubeSource {
    async fn list(&self) -> Result<Vec<OSUpgradeProgress>, SourceError> {
        let ready = Duration::from_secs(30);
        tokio::time::timeout(ready, self.store.wait_until_ready())
            .await
            .map_err(|_| SourceError::NotReady(ready))??;
        Ok(self.store.state().iter().map(|p| (**p).clone()).collect())
    }

    async fn patch_status(
        &self,
        name: &str,
        status: &OSUpgradeProgressStatus,
    ) -> Result<(), SourceError> {
        let patch = Patch::Merge(crate::status::merge_patch(status));
        self.api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
            .map(drop)
            .map_err(|source| SourceError::Api {
                what: format!("patching status of OSUpgradeProgress {name}"),
                source,
            })
    }

    async fn label_node(&self, labels: &BTreeMap<String, String>) -> Result<(), SourceError> {
        self.nodes
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(node_label_patch(labels)),
            )
            .await
            .map(drop)
            .map_err(|source| SourceError::Api {
                what: format!("labelling Node {}", self.node),
                source,
            })
    }

    async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_and_label_patch() {
        assert_eq!(selector("node-1"), "osroll.io/node=node-1");
        let p = node_label_patch(&BTreeMap::from([(
            labels::SLOT.to_string(),
            "B".to_string(),
        )]));
        assert_eq!(p["metadata"]["labels"]["osroll.io/slot"], "B");
    }
}
