//! What each A/B slot held when the node last left it, so a rollback can boot the old
//! slot again without downloading anything.
//!
//! Before a new image is written to the inactive slot, the agent records the slot it
//! runs from: its version and the sha256 of its contents. When a progress later asks for
//! that version again (a fleet rollback), the slot is hashed again; only if it still
//! holds exactly what was recorded is it staged as is. Any difference, or no record,
//! means a normal download.
//!
//! Beside a slot's record the agent keeps the chunk index of the image it last wrote to
//! that slot ([`SlotRecords::remember_index`]), so that the next delta install, seeded
//! from that slot, knows its chunks without cutting and hashing the whole slot. The index
//! is only handed out ([`SlotRecords::seed_index`]) when it is tied to the slot's record:
//! when the record was made, the slot's first `imageSize` bytes hashed to the index's
//! `imageSha256`, and the record still says the same version and hash.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::delta::ChunkIndex;
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

/// The chunk index of the image written to a slot, and whether it was checked against
/// the slot's record (`slot-<S>.index.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexRecord {
    /// The version written.
    version: String,
    /// The slot record's `sha256` when the slot's first `imageSize` bytes were found to
    /// hash to the index's `imageSha256`; `None` until then.
    slot_sha256: Option<String>,
    /// The image's index.
    index: ChunkIndex,
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

    fn index_file(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("slot-{slot}.index.json"))
    }

    fn index_record(&self, slot: Slot) -> Option<IndexRecord> {
        let bytes = std::fs::read(self.index_file(slot)).ok()?;
        let rec: IndexRecord = serde_json::from_slice(&bytes).ok()?;
        rec.index.check().ok()?;
        Some(rec)
    }

    /// Record that `slot` was just written with the image `index` describes, `version`
    /// (after the install verified it). Not used as a seed until the slot's own record
    /// ties it to the slot's contents ([`SlotRecords::remember`]).
    pub fn remember_index(
        &self,
        slot: Slot,
        version: &str,
        index: &ChunkIndex,
    ) -> std::io::Result<()> {
        let rec = IndexRecord {
            version: version.to_string(),
            slot_sha256: None,
            index: index.clone(),
        };
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(&self.index_file(slot), &serde_json::to_vec(&rec)?)
    }

    /// The index of what `slot` holds, if it runs `version` and the index is tied to its
    /// record (see the module doc); otherwise the seed must be chunked.
    pub fn seed_index(&self, slot: Slot, version: &str) -> Option<ChunkIndex> {
        let rec = self.get(slot).filter(|r| r.version == version)?;
        let ix = self.index_record(slot).filter(|i| i.version == version)?;
        (ix.slot_sha256.as_deref() == Some(rec.sha256.as_str())).then_some(ix.index)
    }

    /// The record of `slot`, if any (an unreadable one counts as none).
    pub fn get(&self, slot: Slot) -> Option<SlotRecord> {
        let bytes = std::fs::read(self.file(slot)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record that `slot` (at `path`) runs `version`, unless that is recorded already.
    /// A recorded index of the same version whose image the slot's first bytes hash to
    /// is tied to this record (in the same pass over the slot).
    pub fn remember(&self, slot: Slot, path: &Path, version: &str) -> std::io::Result<()> {
        if self.get(slot).is_some_and(|r| r.version == version) {
            return Ok(());
        }
        let ix = self.index_record(slot).filter(|i| i.version == version);
        let hashed = hash(path, ix.as_ref().map(|i| i.index.image_size))?;
        let rec = SlotRecord {
            version: version.to_string(),
            sha256: hashed.sha256,
            len: hashed.len,
        };
        std::fs::create_dir_all(&self.dir)?;
        if let Some(mut ix) = ix {
            let holds_it = hashed.prefix == Some(ix.index.image_sha256);
            ix.slot_sha256 = holds_it.then(|| rec.sha256.clone());
            if !holds_it {
                tracing::warn!(%slot, %version, "the slot does not hold the image its recorded index describes; not used as a seed index");
            }
            write_atomic(&self.index_file(slot), &serde_json::to_vec(&ix)?)?;
        }
        write_atomic(&self.file(slot), &serde_json::to_vec_pretty(&rec)?)
    }

    /// Forget `slot`'s record and index: it is about to be overwritten.
    pub fn forget(&self, slot: Slot) -> std::io::Result<()> {
        for file in [self.index_file(slot), self.file(slot)] {
            match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `slot` (at `path`) still holds `version` exactly as recorded.
    pub fn check(&self, slot: Slot, path: &Path, version: &str) -> std::io::Result<Reuse> {
        let Some(rec) = self.get(slot).filter(|r| r.version == version) else {
            return Ok(Reuse::NoRecord);
        };
        let now = hash(path, None)?.sha256;
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

/// A slot hashed.
struct Hashed {
    /// `sha256:<hex>` of all of it.
    sha256: String,
    /// Its length.
    len: u64,
    /// SHA-256 of its first `prefix` bytes, when asked and it has that many.
    prefix: Option<[u8; 32]>,
}

/// Hash the file or device at `path` (and its first `prefix` bytes, in the same pass).
fn hash(path: &Path, prefix: Option<u64>) -> std::io::Result<Hashed> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    let mut at_prefix = None;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        match prefix {
            Some(p) if len <= p && p <= len + n as u64 => {
                let (head, tail) = data.split_at((p - len) as usize);
                h.update(head);
                at_prefix = Some(h.clone().finalize().into());
                h.update(tail);
            }
            _ => h.update(data),
        }
        len += n as u64;
    }
    let prefix = match prefix {
        Some(0) => Some(Sha256::digest([]).into()),
        _ => at_prefix,
    };
    Ok(Hashed {
        sha256: format!("sha256:{}", hex::encode(h.finalize())),
        len,
        prefix,
    })
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

    /// A slot holding `image` followed by `pad` zero bytes, and the index of `image`.
    fn slot_with(dir: &Path, image: &[u8], pad: usize) -> (PathBuf, ChunkIndex) {
        let slot = dir.join("slot.img");
        let mut bytes = image.to_vec();
        bytes.resize(image.len() + pad, 0);
        std::fs::write(&slot, &bytes).unwrap();
        let index = crate::delta::pack(image, &mut std::io::sink(), Default::default()).unwrap();
        (slot, index)
    }

    fn some_image(seed: u8) -> Vec<u8> {
        (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect()
    }

    #[test]
    fn a_recorded_index_is_a_seed_index_once_the_slot_record_ties_it() {
        let dir = tempfile::tempdir().unwrap();
        let (slot, index) = slot_with(dir.path(), &some_image(1), 4096);
        let r = SlotRecords::in_dir(&dir.path().join("records"));
        r.remember_index(Slot::B, "2.0", &index).unwrap();
        assert_eq!(r.seed_index(Slot::B, "2.0"), None, "not yet checked");
        r.remember(Slot::B, &slot, "2.0").unwrap();
        assert_eq!(r.seed_index(Slot::B, "2.0"), Some(index.clone()));
        assert_eq!(r.seed_index(Slot::B, "2.1"), None, "another version");
        assert_eq!(r.seed_index(Slot::A, "2.0"), None, "another slot");
        r.forget(Slot::B).unwrap();
        assert_eq!(r.seed_index(Slot::B, "2.0"), None);
        assert!(!dir.path().join("records/slot-B.index.json").exists());
    }

    #[test]
    fn an_index_of_other_contents_is_never_a_seed_index() {
        let dir = tempfile::tempdir().unwrap();
        let (slot, _) = slot_with(dir.path(), &some_image(1), 4096);
        let elsewhere = dir.path().join("other");
        std::fs::create_dir(&elsewhere).unwrap();
        let (_, other) = slot_with(&elsewhere, &some_image(2), 0);
        let r = SlotRecords::in_dir(&dir.path().join("records"));
        r.remember_index(Slot::B, "2.0", &other).unwrap();
        r.remember(Slot::B, &slot, "2.0").unwrap();
        assert_eq!(r.seed_index(Slot::B, "2.0"), None);
    }

    #[test]
    fn an_index_tied_to_an_older_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (slot, index) = slot_with(dir.path(), &some_image(1), 4096);
        let r = SlotRecords::in_dir(&dir.path().join("records"));
        r.remember_index(Slot::B, "2.0", &index).unwrap();
        r.remember(Slot::B, &slot, "2.0").unwrap();
        // The slot record is made again over other contents (the index file kept).
        let kept = std::fs::read(dir.path().join("records/slot-B.index.json")).unwrap();
        r.forget(Slot::B).unwrap();
        std::fs::write(&slot, some_image(3)).unwrap();
        r.remember(Slot::B, &slot, "2.0").unwrap();
        std::fs::write(dir.path().join("records/slot-B.index.json"), kept).unwrap();
        assert_eq!(r.seed_index(Slot::B, "2.0"), None);
        // A damaged index file counts as none.
        std::fs::write(dir.path().join("records/slot-B.index.json"), b"{").unwrap();
        assert_eq!(r.seed_index(Slot::B, "2.0"), None);
    }

    #[test]
    fn the_prefix_hash_is_taken_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = some_image(4).repeat(9);
        let path = dir.path().join("f");
        std::fs::write(&path, &bytes).unwrap();
        for p in [0, 1, 1 << 20, bytes.len() as u64 - 1, bytes.len() as u64] {
            let h = hash(&path, Some(p)).unwrap();
            let want: [u8; 32] = Sha256::digest(&bytes[..p as usize]).into();
            assert_eq!(h.prefix, Some(want), "prefix {p}");
            assert_eq!(h.len, bytes.len() as u64);
        }
        assert_eq!(
            hash(&path, Some(bytes.len() as u64 + 1)).unwrap().prefix,
            None
        );
    }
}
