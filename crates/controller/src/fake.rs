//! An in-memory [`Cluster`] for unit tests: records every call, serves pods and budgets
//! from plain vectors and refuses evictions of chosen pods with 429.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use osroll_api::OSUpgradeProgress;
use serde_json::Value;

use crate::cluster::{ApiError, ApiResult, Cluster, Note, ObjectQuery};

/// One recorded call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    Create(String),
    PatchProgress(String, Value),
    PatchNode(String, Value),
    PatchUpgrade(String, Value),
    PatchStatus(String, Value),
    ListPods(String),
    Evict(String),
    Delete(String, Option<i64>),
    ListPdbs(String),
    GetConfigMap(String),
}

/// The fake.
#[derive(Default)]
pub(crate) struct FakeCluster {
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) events: Mutex<Vec<Note>>,
    pub(crate) pods: Mutex<Vec<Pod>>,
    pub(crate) pdbs: Vec<PodDisruptionBudget>,
    pub(crate) config_maps: HashMap<String, ConfigMap>,
    /// `ns/name` of pods whose eviction answers 429.
    pub(crate) blocked: Mutex<BTreeSet<String>>,
    /// Node patches answer 409 (stale resourceVersion).
    pub(crate) conflict_nodes: bool,
    pub(crate) created: Mutex<Vec<OSUpgradeProgress>>,
    /// Objects CEL checks read (`apiVersion`, `kind` and name are matched).
    pub(crate) objects: Vec<Value>,
    /// Health Jobs, created ones included.
    pub(crate) jobs: Mutex<Vec<Job>>,
}

impl FakeCluster {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub(crate) fn reasons(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.reason.clone())
            .collect()
    }

    fn key(p: &Pod) -> String {
        crate::drain::pod_key(p)
    }
}

impl Cluster for FakeCluster {
    async fn create_progress(&self, p: &OSUpgradeProgress) -> ApiResult<()> {
        let name = p.metadata.name.clone().unwrap_or_default();
        self.record(Call::Create(name.clone()));
        let mut created = self.created.lock().unwrap();
        if created
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(&name))
        {
            return Err(ApiError::AlreadyExists(name));
        }
        created.push(p.clone());
        Ok(())
    }

    async fn patch_progress(&self, name: &str, patch: &Value) -> ApiResult<()> {
        self.record(Call::PatchProgress(name.into(), patch.clone()));
        Ok(())
    }

    async fn patch_node(&self, name: &str, patch: &Value) -> ApiResult<()> {
        self.record(Call::PatchNode(name.into(), patch.clone()));
        if self.conflict_nodes {
            return Err(ApiError::Conflict(format!("node {name} changed")));
        }
        Ok(())
    }

    async fn patch_upgrade(&self, name: &str, patch: &Value) -> ApiResult<()> {
        self.record(Call::PatchUpgrade(name.into(), patch.clone()));
        Ok(())
    }

    async fn patch_upgrade_status(&self, name: &str, patch: &Value) -> ApiResult<()> {
        self.record(Call::PatchStatus(name.into(), patch.clone()));
        Ok(())
    }

    async fn pods_on_node(&self, node: &str) -> ApiResult<Vec<Pod>> {
        self.record(Call::ListPods(node.into()));
        Ok(self
            .pods
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .cloned()
            .collect())
    }

    async fn evict(&self, ns: &str, name: &str, _grace: Option<i64>) -> ApiResult<()> {
        let key = format!("{ns}/{name}");
        self.record(Call::Evict(key.clone()));
        if self.blocked.lock().unwrap().contains(&key) {
            return Err(ApiError::TooManyRequests(
                "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            ));
        }
        self.pods.lock().unwrap().retain(|p| Self::key(p) != key);
        Ok(())
    }

    async fn delete_pod(&self, ns: &str, name: &str, grace: Option<i64>) -> ApiResult<()> {
        let key = format!("{ns}/{name}");
        self.record(Call::Delete(key.clone(), grace));
        self.pods.lock().unwrap().retain(|p| Self::key(p) != key);
        Ok(())
    }

    async fn pdbs(&self, ns: &str) -> ApiResult<Vec<PodDisruptionBudget>> {
        self.record(Call::ListPdbs(ns.into()));
        Ok(self
            .pdbs
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
            .cloned()
            .collect())
    }

    async fn config_map(&self, ns: &str, name: &str) -> ApiResult<Option<ConfigMap>> {
        self.record(Call::GetConfigMap(format!("{ns}/{name}")));
        Ok(self.config_maps.get(&format!("{ns}/{name}")).cloned())
    }

    async fn publish(&self, note: &Note) -> ApiResult<()> {
        self.events.lock().unwrap().push(note.clone());
        Ok(())
    }

    async fn objects(&self, q: &ObjectQuery) -> ApiResult<Vec<Value>> {
        Ok(self
            .objects
            .iter()
            .filter(|o| o["apiVersion"] == q.api_version.as_str() && o["kind"] == q.kind.as_str())
            .filter(|o| q.name.as_deref().is_none_or(|n| o["metadata"]["name"] == n))
            .cloned()
            .collect())
    }

    async fn jobs(&self, _ns: &str, _selector: &str) -> ApiResult<Vec<Job>> {
        Ok(self.jobs.lock().unwrap().clone())
    }

    async fn create_job(&self, _ns: &str, job: &Job) -> ApiResult<()> {
        self.jobs.lock().unwrap().push(job.clone());
        Ok(())
    }
}
