//! What each A/B slot held when the node last left it, so a rollback can boot the old
//! slot again without downloading anything.
//!
//! Before a new image is written to the inactive slot, the agent records the slot it
//! runs from: its version and the sha256 of its contents. When a progress later asks for
//! that version again (a fleet rollback), the slot is hashed again; only if it still
//! holds exactly what was recorded is it staged as is. Any difference, or no record,
//! means a normal download.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil::write_atomic;
use crate::slot::Slot;

/// One slot's recorded contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRecord {
    /// The OS version the slot ran.
    pub version: String,
    /// `sha256:<hex>` of the slot's contents.
    pub sha256: String,
    /// Bytes hashed.
    pub len: u64,
}

/// The records, one small JSON file per slot in a directory.
#[derive(Clone, Debug)]
pub struct SlotRecords {
    dir: PathBuf,
}

/// Why the old slot cannot be reused.
#[derive(Debug, PartialEq, Eq)]
pub enum Reuse {
    /// The slot holds the recorded version, unchanged.
    Intact(SlotRecord),
    /// Nothing was recorded for this version in the slot.
    NoRecord,
    /// The slot changed since it was recorded.
    Changed {
        /// The recorded hash.
        recorded: String,
        /// The hash now.
        now: String,
    },
}

impl SlotRecords {
    /// Records kept in `dir`.
    pub fn in_dir(dir: &Path) -> SlotRecords {
        SlotRecords {
            dir: dir.to_path_buf(),
        }
    }

    fn file(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("slot-{slot}.json"))
    }

    /// The record of `slot`, if any (an unreadable one counts as none).
    pub fn get(&self, slot: Slot) -> Option<SlotRecord> {
        let bytes = std::fs::read(self.file(slot)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record that `slot` (at `path`) runs `version`, unless that is recorded already.
    pub fn remember(&self, slot: Slot, path: &Path, version: &str) -> std::io::Result<()> {
        if self.get(slot).is_some_and(|r| r.version == version) {
            return Ok(());
        }
        let (sha256, len) = hash(path)?;
        let rec = SlotRecord {
            version: version.to_string(),
            sha256,
            len,
        };
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(&self.file(slot), &serde_json::to_vec_pretty(&rec)?)
    }

    /// Forget `slot`'s record: it is about to be overwritten.
    pub fn forget(&self, slot: Slot) -> std::io::Result<()> {
        match std::fs::remove_file(self.file(slot)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether `slot` (at `path`) still holds `version` exactly as recorded.
    pub fn check(&self, slot: Slot, path: &Path, version: &str) -> std::io::Result<Reuse> {
        let Some(rec) = self.get(slot).filter(|r| r.version == version) else {
            return Ok(Reuse::NoRecord);
        };
        let (now, _) = hash(path)?;
        if now == rec.sha256 {
            Ok(Reuse::Intact(rec))
        } else {
            Ok(Reuse::Changed {
                recorded: rec.sha256,
                now,
            })
        }
    }
}

/// `sha256:<hex>` of the file or device at `path`, and its length.
fn hash(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_slot_is_reusable_and_a_changed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("a.img");
        std::fs::write(&slot, b"version one").unwrap();
        let r = SlotRecords::in_dir(&dir.path().join("records"));
        assert_eq!(r.check(Slot::A, &slot, "1.0").unwrap(), Reuse::NoRecord);
        r.remember(Slot::A, &slot, "1.0").unwrap();
        assert!(
            matches!(r.check(Slot::A, &slot, "1.0").unwrap(), Reuse::Intact(rec) if rec.len == 11)
        );
        assert_eq!(r.check(Slot::A, &slot, "2.0").unwrap(), Reuse::NoRecord);
        assert_eq!(r.check(Slot::B, &slot, "1.0").unwrap(), Reuse::NoRecord);
        std::fs::write(&slot, b"version One").unwrap();
        assert!(matches!(
            r.check(Slot::A, &slot, "1.0").unwrap(),
            Reuse::Changed { .. }
        ));
        r.forget(Slot::A).unwrap();
        assert_eq!(r.get(Slot::A), None);
        r.forget(Slot::A).unwrap();
    }
}
