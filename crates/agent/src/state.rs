//! The agent's local memory, a small JSON file on the node written atomically before
//! every status write. If the agent is killed at any instant, the next agent reads it
//! and knows what the last one did even if the API server never heard about it: the
//! status it was about to publish, the image the attempt installs, the boot id at the
//! moment it rebooted, and the versions that rolled back on this node.

use std::path::{Path, PathBuf};

use osroll_api::{ImageRef, OSUpgradeProgressStatus};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::machine::RolledBackRecord;

/// The progress the agent is working on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracked {
    /// Object name.
    pub name: String,
    /// Object uid (absent for file-backed progress without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The image this attempt installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// The status the agent last decided on (published or about to be).
    pub status: OSUpgradeProgressStatus,
    /// Boot id when the agent armed the try and rebooted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_boot_id: Option<String>,
    /// When a live update was applied (RFC 3339): pods created before it are the ones
    /// a `restartOnLiveUpdate` selector restarts, also after an agent restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_applied_at: Option<String>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalState {
    /// The progress being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked: Option<Tracked>,
    /// Versions that failed to boot here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<RolledBackRecord>,
    /// The newest signed catalog serial accepted on this node: an older catalog is a
    /// rollback and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_serial: Option<u64>,
}

/// Loads and saves [`LocalState`] at one path.
#[derive(Clone, Debug)]
pub struct StateStore {
    path: PathBuf,
}

/// A state file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("local state {}: {detail}", path.display())]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub detail: String,
}

impl StateStore {
    /// The file `agent-state.json` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        StateStore {
            path: dir.join("agent-state.json"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, detail: impl ToString) -> StateError {
        StateError {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Read the state; a missing file is the empty state. A file that does not parse
    /// (which atomic writes should make impossible) is moved aside to `<file>.corrupt`
    /// and treated as empty, so the agent falls back to the statuses on the API server
    /// instead of refusing to run.
    pub fn load(&self) -> Result<LocalState, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => Ok(s),
                Err(e) => {
                    let aside = self.path.with_extension("json.corrupt");
                    tracing::error!(path = %self.path.display(), "unreadable local state ({e}); moved to {}", aside.display());
                    std::fs::rename(&self.path, &aside)
                        .map_err(|e| self.err(format!("moving aside: {e}")))?;
                    Ok(LocalState::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Write the state durably (temp file, fsync, rename, fsync directory).
    pub fn save(&self, state: &LocalState) -> Result<(), StateError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| self.err(format!("creating directory: {e}")))?;
        }
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| self.err(e))?;
        write_atomic(&self.path, &bytes).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osroll_api::ProgressPhase;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(&dir.path().join("sub"));
        assert_eq!(store.load().unwrap(), LocalState::default());
        let state = LocalState {
            tracked: Some(Tracked {
                name: "p".into(),
                uid: Some("u".into()),
                image: None,
                status: OSUpgradeProgressStatus {
                    phase: Some(ProgressPhase::Staged),
                    ..Default::default()
                },
                reboot_boot_id: Some("b".into()),
                live_applied_at: None,
            }),
            rolled_back: vec![RolledBackRecord {
                version: "v2".into(),
                checksum: "c".into(),
                retry_nonce: None,
            }],
            catalog_serial: Some(7),
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        std::fs::write(store.path(), b"{not json").unwrap();
        assert_eq!(store.load().unwrap(), LocalState::default());
        assert!(dir.path().join("agent-state.json.corrupt").exists());
    }
}
