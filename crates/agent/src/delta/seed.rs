//! The seed: what the active slot already holds, found by cutting it into chunks with the
//! index's own FastCDC parameters, so an unchanged stretch of the image yields the same
//! chunks at whatever offset it now sits. Each chunk is known by its SHA-256; the copy
//! later hashes it again as it reads it ([`SeedMap::read_checked`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use fastcdc::v2020::StreamCDC;
use sha2::{Digest, Sha256};

use super::index::{ChunkIndex, Chunking};

/// Where in the seed a chunk with a given hash sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedChunk {
    /// Offset in the seed.
    pub offset: u64,
    /// Length.
    pub length: u64,
}

/// The chunks of a seed, by SHA-256.
#[derive(Debug, Default)]
pub struct SeedMap {
    path: PathBuf,
    chunks: HashMap<[u8; 32], SeedChunk>,
    scanned: u64,
}

/// Why the seed cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the seed {path}: {source}")]
pub struct SeedError {
    /// The seed's path.
    pub path: PathBuf,
    /// The read error.
    #[source]
    pub source: std::io::Error,
}

/// A seed chunk read back whose bytes no longer hash to what the scan found.
#[derive(Debug, thiserror::Error)]
#[error("seed chunk at byte {offset} ({length} bytes) does not hash to its index entry")]
pub struct SeedMismatch {
    /// Offset in the seed.
    pub offset: u64,
    /// Length.
    pub length: u64,
}

impl SeedMap {
    /// Cut the first `limit` bytes of `path` (fewer if it is shorter) with `chunking`.
    pub fn scan(path: &Path, limit: u64, chunking: Chunking) -> Result<SeedMap, SeedError> {
        let err = |source| SeedError {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let mut map = SeedMap {
            path: path.to_path_buf(),
            ..SeedMap::default()
        };
        let cdc = StreamCDC::new(
            file.take(limit),
            chunking.min as usize,
            chunking.avg as usize,
            chunking.max as usize,
        );
        for chunk in cdc {
            let chunk = chunk.map_err(|e| err(e.into()))?;
            let length = chunk.length as u64;
            map.chunks
                .entry(Sha256::digest(&chunk.data).into())
                .or_insert(SeedChunk {
                    offset: chunk.offset,
                    length,
                });
            map.scanned = chunk.offset + length;
        }
        Ok(map)
    }

    /// A seed made of known chunks (tests, and a seed whose index was recorded).
    pub fn from_chunks(
        path: &Path,
        chunks: impl IntoIterator<Item = ([u8; 32], SeedChunk)>,
    ) -> Self {
        SeedMap {
            path: path.to_path_buf(),
            chunks: chunks.into_iter().collect(),
            scanned: 0,
        }
    }

    /// The chunks of a seed that holds the image `index` describes.
    pub fn from_index(path: &Path, index: &ChunkIndex) -> Self {
        let chunks = index.chunks.iter().rev().map(|c| {
            let at = SeedChunk {
                offset: c.image_offset,
                length: c.image_length,
            };
            (c.sha256, at)
        });
        SeedMap {
            scanned: index.image_size,
            ..SeedMap::from_chunks(path, chunks)
        }
    }

    /// Where the seed holds a chunk hashing to `sha256`.
    pub fn find(&self, sha256: &[u8; 32]) -> Option<SeedChunk> {
        self.chunks.get(sha256).copied()
    }

    /// Bytes scanned.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Distinct chunks found.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The seed's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads chunks out of the seed, checking each against the hash it must have. Each
/// reader has its own file position: one per thread.
pub struct SeedReader {
    file: File,
    path: PathBuf,
}

impl SeedReader {
    /// Open the seed for reading.
    pub fn open(path: &Path) -> Result<SeedReader, SeedError> {
        let file = File::open(path).map_err(|source| SeedError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(SeedReader {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The bytes of `at`, if they hash to `sha256`. (Read into fresh capacity rather
    /// than a zeroed buffer: zeroing cost as much as a tenth of a delta install's time.)
    pub fn read_checked(
        &self,
        at: SeedChunk,
        sha256: &[u8; 32],
    ) -> Result<Result<Vec<u8>, SeedMismatch>, SeedError> {
        let err = |source| SeedError {
            path: self.path.clone(),
            source,
        };
        let mut file = &self.file;
        file.seek(SeekFrom::Start(at.offset)).map_err(err)?;
        let mut buf = Vec::with_capacity(at.length as usize);
        file.take(at.length).read_to_end(&mut buf).map_err(err)?;
        if buf.len() as u64 != at.length {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} bytes at {}, the seed ends first", at.length, at.offset),
            )));
        }
        if Sha256::digest(&buf)[..] == sha256[..] {
            Ok(Ok(buf))
        } else {
            Ok(Err(SeedMismatch {
                offset: at.offset,
                length: at.length,
            }))
        }
    }
}
