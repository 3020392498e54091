//! The chunk index: the JSON file beside a packed image that says where each frame is in
//! the pack, which image bytes it decodes to and what they hash to. [`ChunkIndex::parse`]
//! checks that the frames tile both the pack and the image without gaps, so the rest of
//! the delta code can trust the offsets (see `docs/delta.md` for the format).

use serde::{Deserialize, Serialize};

/// The `format` value of this version of the index.
pub const FORMAT: &str = "osroll-chunk-index/1";

/// The content-defined chunking parameters, in bytes (FastCDC 2020, normalisation 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunking {
    /// Smallest chunk.
    pub min: u32,
    /// Target average chunk.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

/// One frame of the pack and the image bytes it decodes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    /// Offset of the zstd frame in the pack.
    pub offset: u64,
    /// Length of the frame in the pack.
    pub length: u64,
    /// Offset of the decoded bytes in the image.
    pub image_offset: u64,
    /// Number of decoded bytes.
    pub image_length: u64,
    /// SHA-256 of the decoded bytes, lower-case hex.
    #[serde(with = "hex_digest")]
    pub sha256: [u8; 32],
}

/// The index of a packed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkIndex {
    /// Always [`FORMAT`].
    pub format: String,
    /// How the image was cut; a seed must be cut the same way.
    pub chunking: Chunking,
    /// Decoded image size.
    pub image_size: u64,
    /// SHA-256 of the whole decoded image.
    #[serde(with = "hex_digest")]
    pub image_sha256: [u8; 32],
    /// Size of the pack file (frames plus the seek table).
    pub pack_size: u64,
    /// SHA-256 of the pack file: the catalog entry's `checksum`.
    #[serde(with = "hex_digest")]
    pub pack_sha256: [u8; 32],
    /// The frames in image order.
    pub chunks: Vec<Chunk>,
}

/// Why an index cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Not JSON of the expected shape.
    #[error("chunk index is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A format this build does not read.
    #[error("chunk index format {0:?} is not {FORMAT:?}")]
    Format(String),
    /// The chunking parameters are out of order or out of range.
    #[error("chunk index chunking {0:?} is invalid (need 64 <= min <= avg <= max <= 16 MiB)")]
    Chunking(Chunking),
    /// A frame is not where the previous one ended, or is empty or oversized.
    #[error("chunk index chunks[{index}]: {what}")]
    Chunk {
        /// Position in `chunks`.
        index: usize,
        /// What is wrong.
        what: String,
    },
    /// The frames do not add up to the image or pack size.
    #[error("chunk index: the chunks cover {covered} bytes of the {field}, which is {size}")]
    Coverage {
        /// `imageSize` or `packSize`.
        field: &'static str,
        /// What the chunks add up to.
        covered: u64,
        /// The stated size.
        size: u64,
    },
}

impl ChunkIndex {
    /// Parse and check an index: frames contiguous from 0 in the image and in the pack.
    pub fn parse(bytes: &[u8]) -> Result<ChunkIndex, IndexError> {
        let index: ChunkIndex = serde_json::from_slice(bytes)?;
        index.check()?;
        Ok(index)
    }

    /// The index as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serialises")
    }

    /// Check an index read from elsewhere (a recorded one): as [`ChunkIndex::parse`] does.
    pub(crate) fn check(&self) -> Result<(), IndexError> {
        if self.format != FORMAT {
            return Err(IndexError::Format(self.format.clone()));
        }
        let c = self.chunking;
        if !(64 <= c.min && c.min <= c.avg && c.avg <= c.max && c.max <= 16 << 20) {
            return Err(IndexError::Chunking(c));
        }
        let (mut image, mut pack) = (0u64, 0u64);
        for (i, chunk) in self.chunks.iter().enumerate() {
            let bad = |what: String| IndexError::Chunk { index: i, what };
            if chunk.image_offset != image || chunk.offset != pack {
                return Err(bad(format!(
                    "starts at image byte {} and pack byte {}, the previous chunk ended at {image} and {pack}",
                    chunk.image_offset, chunk.offset
                )));
            }
            if chunk.image_length == 0 || chunk.image_length > u64::from(c.max) {
                return Err(bad(format!(
                    "imageLength {} is not within 1..={}",
                    chunk.image_length, c.max
                )));
            }
            // A frame of n bytes never needs more than zstd's bound for n bytes.
            if chunk.length == 0 || chunk.length > zstd_bound(chunk.image_length) {
                return Err(bad(format!("length {} is out of range", chunk.length)));
            }
            image += chunk.image_length;
            pack += chunk.length;
        }
        coverage("imageSize", image, self.image_size)?;
        if pack > self.pack_size {
            return Err(IndexError::Coverage {
                field: "packSize",
                covered: pack,
                size: self.pack_size,
            });
        }
        Ok(())
    }
}

fn coverage(field: &'static str, covered: u64, size: u64) -> Result<(), IndexError> {
    if covered == size {
        Ok(())
    } else {
        Err(IndexError::Coverage {
            field,
            covered,
            size,
        })
    }
}

/// An upper bound of a zstd frame holding `n` bytes (ZSTD_COMPRESSBOUND plus frame and
/// block headers, generously).
fn zstd_bound(n: u64) -> u64 {
    n + (n >> 8) + 512
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("sha256:{}", hex::encode(d)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| D::Error::custom(format!("{s:?} is not sha256:<64 hex digits>")))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out)
            .map_err(|e| D::Error::custom(format!("{s:?} is not sha256:<64 hex digits>: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
