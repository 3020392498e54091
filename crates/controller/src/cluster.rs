//! The Kubernetes side effects the controller performs, behind one small trait, with the
//! real implementation on a `kube::Client`.
//!
//! Writes are JSON merge patches built by the callers, so the trait stays small and a
//! test double only has to record what was sent.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use osroll_api::{OSUpgrade, OSUpgradeProgress};
use serde_json::Value;

/// A failed API call, classified by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409 on create.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// 409 on update: our view was stale; try again with fresh data.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 429: an eviction would violate a PodDisruptionBudget (or the server is busy).
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The API server refused the request with another status.
    #[error("the API server answered {}", .0.code)]
    Refused(#[source] Box<kube::core::Status>),
    /// The request got no answer from the API server (connection, TLS, decoding).
    #[error("the API request failed")]
    Request(#[source] Box<kube::Error>),
    /// An Event could not be queued for publishing.
    #[error("the event queue refused an event")]
    EventQueue(#[source] tokio::sync::mpsc::error::TrySendError<()>),
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => match s.code {
                404 => ApiError::NotFound(s.message),
                409 if s.reason == "AlreadyExists" => ApiError::AlreadyExists(s.message),
                409 => ApiError::Conflict(s.message),
                429 => ApiError::TooManyRequests(s.message),
                _ => ApiError::Refused(s),
            },
            other => ApiError::Request(Box::new(other)),
        }
    }
}

/// Severity of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Expected progress.
    Normal,
    /// Something needs attention.
    Warning,
}

/// An Event about an OSUpgrade, optionally naming a related object (a Node).
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// Severity.
    pub severity: Severity,
    /// CamelCase reason, e.g. `NodeCordoned`.
    pub reason: String,
    /// CamelCase action, e.g. `Cordon`.
    pub action: String,
    /// Human-readable text.
    pub message: String,
    /// The object the event regards.
    pub regarding: ObjectReference,
    /// A second object involved (usually the Node).
    pub related: Option<ObjectReference>,
}

/// How long one eviction call may take, retries of the client included.
pub const EVICTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Result type of [`Cluster`] calls.
pub type ApiResult<T> = Result<T, ApiError>;

/// Everything the controller writes or reads outside its watch caches.
pub trait Cluster: Send + Sync + 'static {
    /// Create a progress object.
    fn create_progress(&self, p: &OSUpgradeProgress) -> impl Future<Output = ApiResult<()>> + Send;
    /// Merge-patch a progress object (metadata or spec).
    fn patch_progress(
        &self,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// Merge-patch a Node (metadata or spec).
    fn patch_node(&self, name: &str, patch: &Value) -> impl Future<Output = ApiResult<()>> + Send;
    /// Merge-patch an OSUpgrade's metadata.
    fn patch_upgrade(
        &self,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// Merge-patch an OSUpgrade's status subresource.
    fn patch_upgrade_status(
        &self,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// Pods bound to `node`.
    fn pods_on_node(&self, node: &str) -> impl Future<Output = ApiResult<Vec<Pod>>> + Send;
    /// Evict a pod through the policy/v1 Eviction subresource.
    fn evict(
        &self,
        ns: &str,
        name: &str,
        grace: Option<i64>,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// Delete a pod without consulting budgets.
    fn delete_pod(
        &self,
        ns: &str,
        name: &str,
        grace: Option<i64>,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// The PodDisruptionBudgets of a namespace.
    fn pdbs(&self, ns: &str) -> impl Future<Output = ApiResult<Vec<PodDisruptionBudget>>> + Send;
    /// A ConfigMap, `None` when it does not exist.
    fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = ApiResult<Option<ConfigMap>>> + Send;
    /// Publish an Event.
    fn publish(&self, note: &Note) -> impl Future<Output = ApiResult<()>> + Send;
    /// The objects a CEL health check reads.
    fn objects(&self, q: &ObjectQuery) -> impl Future<Output = ApiResult<Vec<Value>>> + Send;
    /// Jobs in `ns` matching the label selector `selector`.
    fn jobs(&self, ns: &str, selector: &str) -> impl Future<Output = ApiResult<Vec<Job>>> + Send;
    /// Create a health Job.
    fn create_job(&self, ns: &str, job: &Job) -> impl Future<Output = ApiResult<()>> + Send;
}

/// Which objects a CEL health check reads: one by name, or all matching a selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectQuery {
    /// `group/version` or `v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// One object's name.
    pub name: Option<String>,
    /// A label selector in query syntax.
    pub label_selector: Option<String>,
}

/// Events waiting to be published before new ones are dropped (with a warning).
pub const EVENT_QUEUE: usize = 4096;
/// Events published at the same time.
pub const EVENT_PUBLISHERS: usize = 4;

/// [`Cluster`] on a real (or test) API server.
///
/// Events are handed to background tasks that publish them (in order per node), so a
/// reconcile never waits for them: they are a record for people, not part of any decision.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
    events: Arc<Vec<tokio::sync::mpsc::Sender<Note>>>,
    pdb_cache: Option<Store<PodDisruptionBudget>>,
}

impl KubeCluster {
    /// Events are reported as `controller`, instance `instance` (the pod name). Call
    /// within a tokio runtime; the event task ends when the last clone is dropped.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let mut shards = Vec::new();
        for _ in 0..EVENT_PUBLISHERS {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Note>(EVENT_QUEUE / EVENT_PUBLISHERS);
            let recorder = recorder.clone();
            tokio::spawn(async move {
                while let Some(note) = rx.recv().await {
                    if let Err(e) = recorder.publish(&to_event(&note), &note.regarding).await {
                        tracing::warn!(reason = %note.reason, error = %e, "could not publish event");
                    }
                }
            });
            shards.push(tx);
        }
        let events = Arc::new(shards);
        KubeCluster {
            events,
            client,
            pdb_cache: None,
        }
    }

    /// Serve [`Cluster::pdbs`] from a watch cache instead of listing each time.
    pub fn with_pdb_cache(mut self, store: Store<PodDisruptionBudget>) -> Self {
        self.pdb_cache = Some(store);
        self
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

fn grace(g: Option<i64>) -> Option<u32> {
    g.map(|g| g.clamp(0, u32::MAX as i64) as u32)
}

impl Cluster for KubeCluster {
    async fn create_progress(&self, p: &OSUpgradeProgress) -> ApiResult<()> {
        let api: Api<OSUpgradeProgress> = Api::all(self.client.clone());
        api.create(&PostParams::default(), p).await?;
        Ok(())
    }

    async fn patch_progress(&self, name: &str, patch: &Value) -> ApiResult<()> {
        let api: Api<OSUpgradeProgress> = Api::all(self.client.clone());
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn patch_node(&self, name: &str, patch: &Value) -> ApiResult<()> {
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn patch_upgrade(&self, name: &str, patch: &Value) -> ApiResult<()> {
        let api: Api<OSUpgrade> = Api::all(self.client.clone());
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn patch_upgrade_status(&self, name: &str, patch: &Value) -> ApiResult<()> {
        let api: Api<OSUpgrade> = Api::all(self.client.clone());
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn pods_on_node(&self, node: &str) -> ApiResult<Vec<Pod>> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        Ok(api.list(&lp).await?.items)
    }

    async fn evict(&self, ns: &str, name: &str, grace_s: Option<i64>) -> ApiResult<()> {
        let ep = EvictParams {
            delete_options: grace_s.map(|g| DeleteParams {
                grace_period_seconds: grace(Some(g)),
                ..Default::default()
            }),
            post_options: PostParams::default(),
        };
        // kube's default client retries 429 with a long backoff; a refused eviction is
        // better reported now and tried again on the next drain step.
        match tokio::time::timeout(EVICTION_TIMEOUT, self.pods(ns).evict(name, &ep)).await {
            Ok(r) => r.map(|_| ()).map_err(ApiError::from),
            Err(_) => Err(ApiError::TooManyRequests(format!(
                "eviction of {ns}/{name} still refused after {}s of retries",
                EVICTION_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn delete_pod(&self, ns: &str, name: &str, grace_s: Option<i64>) -> ApiResult<()> {
        let dp = DeleteParams {
            grace_period_seconds: grace(grace_s),
            ..Default::default()
        };
        self.pods(ns).delete(name, &dp).await?;
        Ok(())
    }

    async fn pdbs(&self, ns: &str) -> ApiResult<Vec<PodDisruptionBudget>> {
        if let Some(cache) = &self.pdb_cache {
            return Ok(cache
                .state()
                .iter()
                .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
                .map(|b| (**b).clone())
                .collect());
        }
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), ns);
        Ok(api.list(&ListParams::default()).await?.items)
    }

    async fn config_map(&self, ns: &str, name: &str) -> ApiResult<Option<ConfigMap>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        Ok(api.get_opt(name).await?)
    }

    async fn objects(&self, q: &ObjectQuery) -> ApiResult<Vec<Value>> {
        let (group, version) = match q.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", q.api_version.as_str()),
        };
        let gvk = kube::core::GroupVersionKind::gvk(group, version, &q.kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let api: Api<kube::core::DynamicObject> = match (&q.namespace, caps.scope) {
            (Some(ns), kube::discovery::Scope::Namespaced) => {
                Api::namespaced_with(self.client.clone(), ns, &ar)
            }
            _ => Api::all_with(self.client.clone(), &ar),
        };
        let objects = match &q.name {
            Some(name) => api.get_opt(name).await?.into_iter().collect(),
            None => {
                let lp = ListParams::default().labels(q.label_selector.as_deref().unwrap_or(""));
                api.list(&lp).await?.items
            }
        };
        Ok(objects
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect())
    }

    async fn jobs(&self, ns: &str, selector: &str) -> ApiResult<Vec<Job>> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }

    async fn create_job(&self, ns: &str, job: &Job) -> ApiResult<()> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), job).await {
            Ok(_) => Ok(()),
            Err(e) => match ApiError::from(e) {
                ApiError::AlreadyExists(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn publish(&self, note: &Note) -> ApiResult<()> {
        // Events about one node stay in order: they share a publisher.
        let key = note
            .related
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .unwrap_or("");
        let shard = key
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % self.events.len();
        self.events[shard].try_send(note.clone()).map_err(|e| {
            use tokio::sync::mpsc::error::TrySendError;
            ApiError::EventQueue(match e {
                TrySendError::Full(_) => TrySendError::Full(()),
                TrySendError::Closed(_) => TrySendError::Closed(()),
            })
        })
    }
}

fn to_event(note: &Note) -> Event {
    Event {
        type_: match note.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: note.reason.clone(),
        note: Some(truncate(&note.message, 1000)),
        action: note.action.clone(),
        secondary: note.related.clone(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_classified() {
        let status = |code, reason: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: "m".into(),
                ..Default::default()
            }))
        };
        assert!(matches!(
            ApiError::from(status(429, "TooManyRequests")),
            ApiError::TooManyRequests(m) if m == "m"
        ));
        assert!(matches!(
            ApiError::from(status(409, "AlreadyExists")),
            ApiError::AlreadyExists(m) if m == "m"
        ));
        assert!(matches!(
            ApiError::from(status(409, "Conflict")),
            ApiError::Conflict(m) if m == "m"
        ));
        assert!(matches!(
            ApiError::from(status(404, "NotFound")),
            ApiError::NotFound(m) if m == "m"
        ));
        let other = ApiError::from(status(500, "InternalError"));
        assert!(other.to_string().contains("500"), "{other}");
        assert!(
            matches!(&other, ApiError::Refused(s) if s.reason == "InternalError"),
            "the status is kept as the source: {other:?}"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
