//! Progress objects from the Kubernetes API: a watch (list + watch, reconnecting with
//! backoff) on OSUpgradeProgress with the field selector `spec.nodeName=<node>` feeds
//! a local cache; the agent writes only the status subresource (JSON merge patch on
//! `/status`) and the labels of its own Node. A status change that is a step of the
//! upgrade ([`super::events`]) is also recorded as an Event on the progress object.
//!
//! The agent selects by `spec.nodeName` (a `selectableFields` entry of the CRD, served by
//! Kubernetes 1.30 and later), not by the `osroll.io/node` label the controller also sets:
//! a progress written by hand with only `spec.nodeName` is picked up without any
//! controller running, and one whose label disagrees with its `nodeName` is never read
//! by the wrong node. An API server that cannot select that field (before 1.30) answers
//! the first list with 400 `field label not supported`; the agent then watches by the
//! label instead, and only progress objects the controller labelled reach it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus};
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::events::{self, ProgressEvent};
use super::{ProgressSource, SourceError};

/// The Events' reporting component (the instance is the node).
pub const EVENT_REPORTER: &str = "osroll-agent";
/// How long publishing one Event may take before the agent goes on without it.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

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
    recorder: Recorder,
    /// The status last written per progress: what an Event's step is compared with.
    written: Mutex<HashMap<String, OSUpgradeProgressStatus>>,
}

impl KubeSource {
    /// Start watching the progress objects of `node`. Must be called inside a Tokio runtime.
    pub fn new(client: kube::Client, node: &str) -> Self {
        let api: Api<OSUpgradeProgress> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let notify = Arc::new(Notify::new());
        let watch = watch(api.clone(), node.into(), writer, notify.clone());
        let task = tokio::spawn(watch.in_current_span());
        let reporter = Reporter {
            controller: EVENT_REPORTER.to_string(),
            instance: Some(node.to_string()),
        };
        KubeSource {
            api,
            recorder: Recorder::new(client.clone(), reporter),
            nodes: Api::all(client),
            node: node.to_string(),
            store,
            notify,
            task,
            written: Mutex::default(),
        }
    }

    /// The status of `name` before this write: the last one written, else the API's.
    fn before(&self, name: &str) -> Option<OSUpgradeProgressStatus> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(name).cloned().or_else(|| {
            let obj = self
                .store
                .state()
                .into_iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))?;
            obj.status.clone()
        })
    }

    /// The progress object, as an Event regards it.
    fn reference(&self, name: &str) -> ObjectReference {
        let found = self
            .store
            .state()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name));
        match found {
            Some(p) => p.object_ref(&()),
            None => ObjectReference {
                api_version: Some(OSUpgradeProgress::api_version(&()).into_owned()),
                kind: Some(OSUpgradeProgress::kind(&()).into_owned()),
                name: Some(name.to_string()),
                ..Default::default()
            },
        }
    }

    /// Record `e` about progress `name` (now at `status`); a failure is only logged.
    async fn publish_event(&self, name: &str, e: &ProgressEvent, status: &OSUpgradeProgressStatus) {
        let ev = Event {
            type_: if e.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason().to_string(),
            note: Some(e.note(status)),
            action: e.action().to_string(),
            secondary: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                ..Default::default()
            }),
        };
        let sent = tokio::time::timeout(
            EVENT_TIMEOUT,
            self.recorder.publish(&ev, &self.reference(name)),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(reason = e.reason(), "could not publish event: {err}"),
            Err(_) => tracing::warn!(
                reason = e.reason(),
                "could not publish event within {EVENT_TIMEOUT:?}"
            ),
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
        let before = self.before(name);
        self.api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
            .map_err(|source| SourceError::Api {
                what: format!("patching status of OSUpgradeProgress {name}"),
                source,
            })?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), status.clone());
        // Before returning: a reboot may follow at once.
        if let Some(e) = events::for_transition(before.as_ref(), status) {
            self.publish_event(name, &e, status).await;
        }
        Ok(())
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
