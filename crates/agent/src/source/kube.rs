//! Progress objects from the Kubernetes API: a watch (list + watch, reconnecting with
//! backoff) on OSUpgradeProgress with the field selector `spec.nodeName=<node>` feeds
//! a local cache; the agent writes only the status subresource (JSON merge patch on
//! `/status`) and the labels of its own Node.
//!
//! The agent selects by `spec.nodeName` (a `selectableFields` entry of the CRD, served by
//! Kubernetes 1.30 and later), not by the `osroll.io/node` label the controller also sets:
//! a progress written by hand with only `spec.nodeName` is picked up without any
//! controller running, and one whose label disagrees with its `nodeName` is never read
//! by the wrong node. An API server that cannot select that field (before 1.30) answers
//! the first list with 400 `field label not supported`; the agent then watches by the
//! label instead, and only progress objects the controller labelled reach it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus};
use tokio::sync::Notify;

use super::{ProgressSource, SourceError};

/// The field selector the agent watches with.
pub fn selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// The label selector the agent falls back to where `spec.nodeName` is not selectable.
pub fn label_selector(node: &str) -> String {
    format!("{}={node}", osroll_api::labels::NODE)
}

/// Whether the API server refused the field selector itself (a CRD field that is not
/// selectable there), as opposed to failing for any other reason.
pub fn field_selector_refused(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s))
        if s.code == 400 && s.message.contains("field label not supported"))
}

/// Keep `writer` filled from a watch of `node`'s progress objects, by field selector,
/// else (see the module doc) by label; wake `notify` on every change.
async fn watch(
    api: Api<OSUpgradeProgress>,
    node: String,
    mut writer: reflector::store::Writer<OSUpgradeProgress>,
    notify: Arc<Notify>,
) {
    let mut by_field = true;
    loop {
        let cfg = if by_field {
            watcher::Config::default().fields(&selector(&node))
        } else {
            watcher::Config::default().labels(&label_selector(&node))
        };
        let mut stream = std::pin::pin!(watcher(api.clone(), cfg).default_backoff());
        let mut listed = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    // `Init` comes before the list; only its end proves the selector works.
                    listed |= matches!(ev, watcher::Event::InitDone);
                    writer.apply_watcher_event(&ev);
                    notify.notify_one();
                }
                Err(e) if by_field && !listed && field_selector_refused(&e) => {
                    tracing::warn!(
                        "{e}: this API server cannot select spec.nodeName (Kubernetes before 1.30); watching by the {} label",
                        osroll_api::labels::NODE
                    );
                    by_field = false;
                    break;
                }
                Err(e) => tracing::warn!("watching OSUpgradeProgress: {e}"),
            }
        }
        if by_field {
            return;
        }
    }
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
        let task = tokio::spawn(watch(api.clone(), node.into(), writer, notify.clone()));
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
        assert_eq!(selector("node-1"), "spec.nodeName=node-1");
        let p = node_label_patch(&BTreeMap::from([(
            osroll_api::labels::SLOT.to_string(),
            "B".to_string(),
        )]));
        assert_eq!(p["metadata"]["labels"]["osroll.io/slot"], "B");
    }
}
