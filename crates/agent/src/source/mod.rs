//! Where the agent gets its OSUpgradeProgress objects and where it writes their status:
//! the Kubernetes API ([`kube::KubeSource`]) in a cluster, or a directory
//! ([`file::FileSource`]) for the kill test and for running the agent without a cluster.
//! The executor is the same code for both.

pub mod events;
pub mod file;
pub mod kube;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus};

/// A source failure (API unreachable, unreadable file, ...), retried by the agent.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or directory of a [`file::FileSource`].
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was attempted (`reading`, `writing`).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A value that does not serialize.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was encoded.
        what: String,
        /// Why it failed.
        source: serde_json::Error,
    },
    /// A Kubernetes API call.
    #[error("{what}: {source}")]
    Api {
        /// The call (`patching status of OSUpgradeProgress x`, `labelling Node y`).
        what: String,
        /// Why it failed.
        source: ::kube::Error,
    },
    /// The watch has not delivered its first list yet.
    #[error("no initial list of OSUpgradeProgress within {}s", .0.as_secs())]
    NotReady(Duration),
    /// The watch ended.
    #[error("watch stopped: {0}")]
    WatchStopped(#[from] ::kube::runtime::reflector::store::WriterDropped),
    /// The progress to write does not exist.
    #[error("no progress {0:?}")]
    NoSuchProgress(String),
}

/// Progress objects for one node, and the agent's only two kinds of writes.
pub trait ProgressSource: Send + Sync {
    /// The progress objects labelled for this node, as last observed.
    fn list(&self) -> impl Future<Output = Result<Vec<OSUpgradeProgress>, SourceError>> + Send;
    /// Replace the status of progress `name` (status subresource only).
    fn patch_status(
        &self,
        name: &str,
        status: &OSUpgradeProgressStatus,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Merge these labels into this node's labels.
    fn label_node(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Return when something may have changed since the last [`ProgressSource::list`],
    /// or after `timeout`.
    fn changed(&self, timeout: Duration) -> impl Future<Output = ()> + Send;
}
