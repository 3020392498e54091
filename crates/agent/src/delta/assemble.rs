//! The assembler: walks the new image chunk by chunk, taking each from the seed or from
//! its fetched frame, checks every chunk's SHA-256 against the index, and sends the bytes
//! on in image order. A chunk that fails its hash is fetched again on its own; past the
//! mismatch budget the delta is abandoned. Runs on a blocking thread; the seed's chunks
//! are read and hashed ahead by [`SEED_HASHERS`] threads of their own (taking turns, so
//! their results come back in image order), since hashing the reused chunks is most of
//! a delta install's work.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use osroll_api::delta::DeltaFallbackReason as R;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::fetch::{FetchError, RangeFetcher};
use super::index::{Chunk, ChunkIndex};
use super::install::{DeltaCounters, DeltaError};
use super::plan::{FetchRange, Source};
use super::seed::{SeedChunk, SeedError, SeedMismatch, SeedReader};

/// Threads reading and hashing seed chunks ahead of the assembler.
pub(super) const SEED_HASHERS: usize = 2;

/// Seed chunks each hasher may hold ready (at most 256 KiB each).
const SEED_AHEAD: usize = 16;

/// A seed chunk read and checked by a hasher.
type SeedRead = Result<Result<Vec<u8>, SeedMismatch>, SeedError>;

/// Fetched ranges as they arrive, in plan order, and the way to fetch one frame again.
pub(super) struct Frames {
    rx: mpsc::Receiver<Result<(FetchRange, Bytes), FetchError>>,
    current: Option<(FetchRange, Bytes)>,
    fetcher: RangeFetcher,
    rt: tokio::runtime::Handle,
}

impl Frames {
    pub(super) fn new(
        rx: mpsc::Receiver<Result<(FetchRange, Bytes), FetchError>>,
        fetcher: RangeFetcher,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Frames {
            rx,
            current: None,
            fetcher,
            rt,
        }
    }

    /// The frame of chunk `i` from the planned ranges.
    fn planned(&mut self, i: usize, chunk: &Chunk) -> Result<&[u8], DeltaError> {
        while !self
            .current
            .as_ref()
            .is_some_and(|(r, _)| r.chunks.contains(&i))
        {
            match self.rx.blocking_recv() {
                Some(Ok(next)) => self.current = Some(next),
                Some(Err(e)) => return Err(fetch_fallback(e)),
                None => {
                    return Err(DeltaError::fallback(
                        R::FetchFailed,
                        format!("the fetch of chunk {i}'s frame ended without it"),
                    ));
                }
            }
        }
        let (r, bytes) = self.current.as_ref().expect("found above");
        let at = (chunk.offset - r.start) as usize;
        Ok(&bytes[at..at + chunk.length as usize])
    }

    /// Chunk `chunk`'s frame, fetched again on its own.
    fn refetch(&self, chunk: &Chunk) -> Result<Bytes, DeltaError> {
        self.rt
            .block_on(
                self.fetcher
                    .range(chunk.offset, chunk.offset + chunk.length),
            )
            .map_err(fetch_fallback)
    }
}

fn fetch_fallback(e: FetchError) -> DeltaError {
    let reason = match e {
        FetchError::RangeIgnored { .. } => R::RangeIgnored,
        FetchError::Failed { .. } => R::FetchFailed,
    };
    DeltaError::fallback(reason, e.to_string())
}

/// What the assembler did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Assembled {
    /// Chunks fetched again after failing their hash.
    pub refetched: u32,
}

/// See the module doc.
pub(super) struct Assembler {
    index: Arc<ChunkIndex>,
    sources: Arc<Vec<Source>>,
    seed: PathBuf,
    frames: Frames,
    out: mpsc::Sender<std::io::Result<Bytes>>,
    counters: Arc<DeltaCounters>,
    mismatches: u32,
    max_mismatches: u32,
}

impl Assembler {
    pub(super) fn new(
        index: Arc<ChunkIndex>,
        seed: &Path,
        sources: Vec<Source>,
        frames: Frames,
        out: mpsc::Sender<std::io::Result<Bytes>>,
        counters: Arc<DeltaCounters>,
        max_mismatches: u32,
    ) -> Result<Self, DeltaError> {
        // Fail here, before anything is written, if the seed cannot be opened.
        SeedReader::open(seed)
            .map_err(|e| DeltaError::fallback(R::SeedUnreadable, e.to_string()))?;
        Ok(Assembler {
            index,
            sources: Arc::new(sources),
            seed: seed.to_path_buf(),
            frames,
            out,
            counters,
            mismatches: 0,
            max_mismatches,
        })
    }

    /// Assemble the whole image; on failure the stream ends with an error so the
    /// installer stops before its end.
    pub(super) fn run(mut self) -> Result<Assembled, DeltaError> {
        let result = self.each_chunk();
        if let Err(e) = &result {
            let _ = self
                .out
                .blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        result.map(|()| Assembled {
            refetched: self.mismatches,
        })
    }

    fn each_chunk(&mut self) -> Result<(), DeltaError> {
        let index = self.index.clone();
        let sources = self.sources.clone();
        let path = self.seed.clone();
        std::thread::scope(|scope| {
            let hashed: Vec<_> = (0..SEED_HASHERS)
                .map(|k| {
                    let (tx, rx) = std_mpsc::sync_channel(SEED_AHEAD);
                    let (index, sources, path) = (&index, &sources, &path);
                    scope.spawn(move || hash_seed_chunks(path, index, sources, k, tx));
                    rx
                })
                .collect();
            let mut turn = 0usize;
            for (i, chunk) in index.chunks.iter().enumerate() {
                let data = match sources[i] {
                    Source::Seed(at) => {
                        let read = hashed[turn % SEED_HASHERS].recv();
                        turn += 1;
                        self.copied(i, at, chunk, read.ok())?
                    }
                    Source::Fetch => self.decoded(i, chunk)?,
                };
                if self.out.blocking_send(Ok(data)).is_err() {
                    // The installer stopped; its own error says why.
                    return Ok(());
                }
            }
            Ok(())
        })
    }

    fn copied(
        &mut self,
        i: usize,
        at: SeedChunk,
        chunk: &Chunk,
        read: Option<SeedRead>,
    ) -> Result<Bytes, DeltaError> {
        let read = read
            .ok_or_else(|| {
                DeltaError::fallback(
                    R::SeedUnreadable,
                    format!(
                        "the seed reader stopped before chunk {i} (at seed byte {})",
                        at.offset
                    ),
                )
            })?
            .map_err(|e| DeltaError::fallback(R::SeedUnreadable, e.to_string()))?;
        match read {
            Ok(data) => {
                self.counters
                    .reused
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(Bytes::from(data))
            }
            Err(m) => {
                self.mismatch(i, &m.to_string())?;
                self.refetched(i, chunk)
            }
        }
    }

    fn decoded(&mut self, i: usize, chunk: &Chunk) -> Result<Bytes, DeltaError> {
        let decoded = decode_checked(self.frames.planned(i, chunk)?, chunk);
        match decoded {
            Ok(data) => Ok(data),
            Err(why) => {
                self.mismatch(i, &why)?;
                self.refetched(i, chunk)
            }
        }
    }

    /// Fetch chunk `i`'s frame alone until it decodes to its hash (within the budget).
    fn refetched(&mut self, i: usize, chunk: &Chunk) -> Result<Bytes, DeltaError> {
        loop {
            let frame = self.frames.refetch(chunk)?;
            match decode_checked(&frame, chunk) {
                Ok(data) => return Ok(data),
                Err(why) => self.mismatch(i, &why)?,
            }
        }
    }

    fn mismatch(&mut self, i: usize, why: &str) -> Result<(), DeltaError> {
        self.mismatches += 1;
        tracing::warn!(
            chunk = i,
            mismatches = self.mismatches,
            "chunk refetched: {why}"
        );
        if self.mismatches > self.max_mismatches {
            return Err(DeltaError::fallback(
                R::TooManyMismatches,
                format!(
                    "{} chunks failed their hash (limit {}); the last, chunks[{i}]: {why}",
                    self.mismatches, self.max_mismatches
                ),
            ));
        }
        Ok(())
    }
}

/// Hasher `k` of [`SEED_HASHERS`]: read and check every seed chunk of the plan whose turn
/// is `k`'s, in order, until done or the assembler stops listening.
fn hash_seed_chunks(
    path: &Path,
    index: &ChunkIndex,
    sources: &[Source],
    k: usize,
    tx: std_mpsc::SyncSender<SeedRead>,
) {
    let seed = match SeedReader::open(path) {
        Ok(seed) => seed,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let mine = sources
        .iter()
        .zip(&index.chunks)
        .filter_map(|(s, c)| match s {
            Source::Seed(at) => Some((*at, c)),
            Source::Fetch => None,
        })
        .skip(k)
        .step_by(SEED_HASHERS);
    for (at, chunk) in mine {
        let read = seed.read_checked(at, &chunk.sha256);
        let stop = read.is_err();
        if tx.send(read).is_err() || stop {
            return;
        }
    }
}

/// The frame decoded, if it decodes to exactly the chunk's length and hash.
pub fn decode_checked(frame: &[u8], chunk: &Chunk) -> Result<Bytes, String> {
    let data = zstd::bulk::decompress(frame, chunk.image_length as usize)
        .map_err(|e| format!("frame at pack byte {} does not decode: {e}", chunk.offset))?;
    if data.len() as u64 != chunk.image_length {
        return Err(format!(
            "frame at pack byte {} decodes to {} bytes, the index says {}",
            chunk.offset,
            data.len(),
            chunk.image_length
        ));
    }
    if Sha256::digest(&data)[..] != chunk.sha256[..] {
        return Err(format!(
            "frame at pack byte {} does not decode to its SHA-256",
            chunk.offset
        ));
    }
    Ok(Bytes::from(data))
}
