//! Carrying out the restart decision: list the node's pods, scan `/proc`, delete each
//! chosen pod once through the Kubernetes API (its controller recreates it with fresh
//! mounts), and record every deletion in a ledger so an agent that restarts midway
//! neither deletes a pod twice nor misses one.
//!
//! Deletion carries a UID precondition, so a pod that was already recreated under the
//! same name (a StatefulSet's) is never deleted by mistake.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use osroll_api::progress::FailureReason;
use serde::{Deserialize, Serialize};

use super::decide::{
    PodInfo, PodRef, PodRestart, RestartInput, SelectorError, SkippedPod, StaleRef, plan_restarts,
};
use super::procfs::{own_pod_uid, scan_proc};

/// A failure while restarting pods after a live update.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// The call.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// The proc root could not be read.
    #[error("cannot scan {}: {source}", path.display())]
    Proc {
        /// The proc root.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The ledger could not be read or written.
    #[error("restart ledger {}: {problem}", path.display())]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// `restartOnLiveUpdate` is not a valid selector.
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

impl MountsError {
    /// Machine-readable cause for `status.failureReason`.
    pub fn reason(&self) -> FailureReason {
        match self {
            MountsError::Selector(_) => FailureReason::InvalidRestartSelector,
            _ => FailureReason::LiveRestartFailed,
        }
    }
}

/// The pods of a node, as far as restarting them goes.
pub trait PodApi: Send + Sync {
    /// Every pod scheduled to `node`.
    fn list_node_pods(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<PodInfo>, MountsError>> + Send;
    /// Delete `pod` if it still has `pod.uid`; a pod that is gone already is success.
    fn delete_pod(&self, pod: &PodRef) -> impl Future<Output = Result<(), MountsError>> + Send;
}

/// [`PodApi`] on a real (or test) API server.
#[derive(Clone)]
pub struct KubePods {
    client: kube::Client,
}

impl KubePods {
    /// Pods through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubePods { client }
    }
}

/// The decision's view of a pod; `None` for a pod without name, namespace or UID.
pub fn pod_info(p: &Pod) -> Option<PodInfo> {
    let m = &p.metadata;
    Some(PodInfo {
        pod: PodRef {
            namespace: m.namespace.clone()?,
            name: m.name.clone()?,
            uid: m.uid.clone()?,
        },
        labels: m.labels.clone().unwrap_or_default(),
        created: m.creation_timestamp.as_ref().map(|t| t.0),
        terminating: m.deletion_timestamp.is_some(),
        controlled: m
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true)),
    })
}

impl PodApi for KubePods {
    async fn list_node_pods(&self, node: &str) -> Result<Vec<PodInfo>, MountsError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let list = api.list(&lp).await.map_err(|source| MountsError::Kube {
            what: format!("listing pods on node {node}"),
            source,
        })?;
        Ok(list.items.iter().filter_map(pod_info).collect())
    }

    async fn delete_pod(&self, pod: &PodRef) -> Result<(), MountsError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone, or replaced by a pod with another UID: nothing of ours is left.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(source) => Err(MountsError::Kube {
                what: format!("deleting pod {pod}"),
                source,
            }),
        }
    }
}

/// Remembers which pods were deleted for one update.
pub trait RestartLedger: Send + Sync {
    /// UIDs deleted so far.
    fn restarted(&self) -> Result<BTreeSet<String>, MountsError>;
    /// Note that `pod` was deleted.
    fn record(&self, pod: &PodRef) -> Result<(), MountsError>;
}

#[derive(Serialize, Deserialize, Default)]
struct LedgerFile {
    key: String,
    pods: Vec<PodRef>,
}

/// A ledger in a JSON file on the node (e.g. under `/var/lib/osroll`), for one update
/// identified by `key` (progress name, target version and retry nonce, say). A file
/// written for another key counts as empty and is replaced on the first record.
pub struct FileLedger {
    path: PathBuf,
    key: String,
}

impl FileLedger {
    /// The ledger at `path` for the update `key`.
    pub fn new(path: impl Into<PathBuf>, key: impl Into<String>) -> Self {
        FileLedger {
            path: path.into(),
            key: key.into(),
        }
    }

    fn err(&self, problem: impl ToString) -> MountsError {
        MountsError::Ledger {
            path: self.path.clone(),
            problem: problem.to_string(),
        }
    }

    fn load(&self) -> Result<LedgerFile, MountsError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let f: LedgerFile = serde_json::from_slice(&bytes).map_err(|e| self.err(e))?;
                Ok(if f.key == self.key {
                    f
                } else {
                    LedgerFile::default()
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LedgerFile::default()),
            Err(e) => Err(self.err(e)),
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl RestartLedger for FileLedger {
    fn restarted(&self) -> Result<BTreeSet<String>, MountsError> {
        Ok(self.load()?.pods.into_iter().map(|p| p.uid).collect())
    }

    fn record(&self, pod: &PodRef) -> Result<(), MountsError> {
        let mut f = self.load()?;
        f.key = self.key.clone();
        if !f.pods.contains(pod) {
            f.pods.push(pod.clone());
        }
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| self.err(e))?;
        write_atomically(&self.path, &bytes).map_err(|e| self.err(e))
    }
}

/// A ledger in memory (tests, the simulated cluster).
#[derive(Default)]
pub struct MemoryLedger(Mutex<Vec<PodRef>>);

impl MemoryLedger {
    /// Pods recorded so far, in order.
    pub fn pods(&self) -> Vec<PodRef> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl RestartLedger for MemoryLedger {
    fn restarted(&self) -> Result<BTreeSet<String>, MountsError> {
        Ok(self.pods().into_iter().map(|p| p.uid).collect())
    }

    fn record(&self, pod: &PodRef) -> Result<(), MountsError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pod.clone());
        Ok(())
    }
}

/// One node's restart job after a live update.
#[derive(Clone, Debug)]
pub struct LiveRestartJob {
    /// This node.
    pub node: String,
    /// Where the host's `/proc` is (`/proc` with `hostPID: true`).
    pub proc_root: PathBuf,
    /// How to recognise the previous deployment in mount tables.
    pub stale: Vec<StaleRef>,
    /// The OSUpgrade's `restartOnLiveUpdate`.
    pub selector: Option<LabelSelector>,
    /// When the update was applied.
    pub applied_at: Timestamp,
    /// A reboot follows: restart nothing.
    pub reboot_follows: bool,
}

/// What [`restart_after_live_update`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveRestartReport {
    /// Pods deleted by this call, with their reasons.
    pub restarted: Vec<PodRestart>,
    /// Pods left alone, and why.
    pub skipped: Vec<SkippedPod>,
}

impl LiveRestartReport {
    /// One line for the progress message, e.g. `restarted 2 pods: kube-system/calico-node-x, ...`.
    pub fn summary(&self) -> String {
        let names = |v: Vec<String>| v.join(", ");
        let mut s = format!(
            "restarted {} pod(s) after the live update",
            self.restarted.len()
        );
        if !self.restarted.is_empty() {
            s += &format!(
                ": {}",
                names(self.restarted.iter().map(|r| r.pod.to_string()).collect())
            );
        }
        if !self.skipped.is_empty() {
            let skipped: BTreeMap<String, &str> = self
                .skipped
                .iter()
                .map(|s| (s.pod.to_string(), s.why.as_str()))
                .collect();
            s += &format!(
                "; left alone: {}",
                names(skipped.iter().map(|(p, w)| format!("{p} ({w})")).collect())
            );
        }
        s
    }
}

/// Restart, once each, the pods that still see the previous deployment. Safe to call
/// again after a crash or on every reconcile: the ledger and the UIDs make later calls
/// delete nothing new. With `reboot_follows`, does nothing at all.
pub async fn restart_after_live_update<P: PodApi, L: RestartLedger>(
    job: &LiveRestartJob,
    api: &P,
    ledger: &L,
) -> Result<LiveRestartReport, MountsError> {
    if job.reboot_follows {
        return Ok(LiveRestartReport::default());
    }
    let pods = api.list_node_pods(&job.node).await?;
    let root = job.proc_root.clone();
    let (processes, own) =
        tokio::task::spawn_blocking(move || (scan_proc(&root), own_pod_uid(&root)))
            .await
            .map_err(|e| MountsError::Proc {
                path: job.proc_root.clone(),
                source: io::Error::other(e.to_string()),
            })?;
    let processes = processes.map_err(|source| MountsError::Proc {
        path: job.proc_root.clone(),
        source,
    })?;
    let done = ledger.restarted()?;
    let exclude: BTreeSet<String> = own.into_iter().collect();
    let plan = plan_restarts(&RestartInput {
        reboot_follows: false,
        applied_at: job.applied_at,
        pods: &pods,
        processes: &processes,
        stale: &job.stale,
        selector: job.selector.as_ref(),
        already_restarted: &done,
        exclude: &exclude,
    })
    .map_err(MountsError::Selector)?;
    for r in &plan.restart {
        api.delete_pod(&r.pod).await?;
        ledger.record(&r.pod)?;
        tracing::info!(pod = %r.pod, reasons = ?r.reasons, "restarted pod after live update");
    }
    for s in &plan.skipped {
        tracing::warn!(pod = %s.pod, "not restarting pod after live update: {}", s.why);
    }
    Ok(LiveRestartReport {
        restarted: plan.restart,
        skipped: plan.skipped,
    })
}

#[cfg(test)]
mod tests;

/// [`restart_after_live_update`] behind an object the executor can hold: a pod API and a
/// ledger file per update.
pub trait LiveRestarter: Send + Sync {
    /// Restart what `job` calls for, recording deletions under `key` (one per update).
    fn restart<'a>(
        &'a self,
        job: &'a LiveRestartJob,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<LiveRestartReport, MountsError>> + Send + 'a>>;
}

/// A [`LiveRestarter`] over any [`PodApi`], with its ledger in one file.
pub struct Restarter<P> {
    api: P,
    ledger: PathBuf,
}

impl<P: PodApi> Restarter<P> {
    /// Delete pods through `api`; remember deletions in the file `ledger`.
    pub fn new(api: P, ledger: impl Into<PathBuf>) -> Self {
        Restarter {
            api,
            ledger: ledger.into(),
        }
    }
}

impl<P: PodApi> LiveRestarter for Restarter<P> {
    fn restart<'a>(
        &'a self,
        job: &'a LiveRestartJob,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<LiveRestartReport, MountsError>> + Send + 'a>> {
        Box::pin(async move {
            let ledger = FileLedger::new(&self.ledger, key);
            restart_after_live_update(job, &self.api, &ledger).await
        })
    }
}
