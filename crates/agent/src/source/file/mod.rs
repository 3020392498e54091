//! Progress objects in a directory, for running the agent without Kubernetes (the kill
//! test spawns real agent processes against one).
//!
//! * `<name>.json` — an OSUpgradeProgress (JSON) written by whoever plays the
//!   controller; it is for this node if `metadata.labels["osroll.io/node"]` or
//!   `spec.nodeName` says so. Replace it atomically (write a temp file, rename).
//! * `<name>.status.json` — its status, written only by the agent.
//! * `node-labels.json` — the labels the agent put on its node.
//!
//! Split files mean the two writers never overwrite each other's changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, labels};

use super::{ProgressSource, SourceError};
use crate::fsutil::write_atomic;

const STATUS_SUFFIX: &str = ".status.json";
const LABELS_FILE: &str = "node-labels.json";

/// A directory of progress objects.
pub struct FileSource {
    dir: PathBuf,
    node: String,
    poll: Duration,
    seen: Mutex<Vec<(String, SystemTime, u64)>>,
}

impl FileSource {
    /// Objects for `node` in `dir`, checked for changes every `poll`.
    pub fn new(dir: &Path, node: &str, poll: Duration) -> Self {
        FileSource {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            poll,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Path of the status file for `name`.
    pub fn status_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}{STATUS_SUFFIX}"))
    }

    /// Path of the node labels file.
    pub fn labels_path(dir: &Path) -> PathBuf {
        dir.join(LABELS_FILE)
    }

    /// Read the status the agent wrote for `name` (for harnesses).
    pub fn read_status(dir: &Path, name: &str) -> Option<OSUpgradeProgressStatus> {
        let bytes = std::fs::read(Self::status_path(dir, name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Write a progress object atomically (for harnesses).
    pub fn write_progress(dir: &Path, p: &OSUpgradeProgress) -> std::io::Result<()> {
        let name = p.metadata.name.clone().unwrap_or_default();
        let bytes = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
        write_atomic(&dir.join(format!("{name}.json")), &bytes)
    }

    fn spec_files(&self) -> Result<Vec<(String, SystemTime, u64)>, SourceError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| SourceError::Io {
            what: "reading",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json")
                || name.ends_with(STATUS_SUFFIX)
                || name == LABELS_FILE
                || name.starts_with('.')
            {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                out.push((
                    name,
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_for_node(&self, p: &OSUpgradeProgress) -> bool {
        match p.metadata.labels.as_ref().and_then(|l| l.get(labels::NODE)) {
            Some(n) => *n == self.node,
            None => p.spec.node_name == self.node,
        }
    }
}

/// Write `value` as JSON to `path`, atomically.
fn write_json(path: &Path, value: &impl serde::Serialize, what: &str) -> Result<(), SourceError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| SourceError::Encode {
        what: what.to_string(),
        source,
    })?;
    write_atomic(path, &bytes).map_err(|source| SourceError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    })
}

impl ProgressSource for FileSource {
    async fn list(&self) -> Result<Vec<OSUpgradeProgress>, SourceError> {
        let files = self.spec_files()?;
        let mut out = Vec::new();
        for (file, _, _) in &files {
            let path = self.dir.join(file);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mut p: OSUpgradeProgress = match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable progress: {e}");
                    continue;
                }
            };
            if p.metadata.name.is_none() {
                p.metadata.name = Some(file.trim_end_matches(".json").to_string());
            }
            if !self.is_for_node(&p) {
                continue;
            }
            let name = p.metadata.name.clone().unwrap_or_default();
            p.status = Self::read_status(&self.dir, &name);
            out.push(p);
        }
        *self.seen.lock().expect("not poisoned") = files;
        Ok(out)
    }

    async fn patch_status(
        &self,
        name: &str,
        status: &OSUpgradeProgressStatus,
    ) -> Result<(), SourceError> {
        write_json(&Self::status_path(&self.dir, name), status, "a status")
    }

    async fn label_node(&self, labels: &BTreeMap<String, String>) -> Result<(), SourceError> {
        let path = Self::labels_path(&self.dir);
        let mut all: BTreeMap<String, String> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        all.extend(labels.clone());
        write_json(&path, &all, "node labels")
    }

    async fn changed(&self, timeout: Duration) -> () {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.spec_files().unwrap_or_default();
            if now != *self.seen.lock().expect("not poisoned") {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(self.poll)).await;
        }
    }
}

#[cfg(test)]
mod tests;
