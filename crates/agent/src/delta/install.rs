//! The delta installer: fetch and check the index, chunk the seed, plan, then assemble
//! the new image (seed chunks and fetched frames, each checked against its SHA-256) and
//! stream it, raw, into the ordinary [`Installer`], which writes the slot and reads it
//! back. The stream is not hashed whole again: it is the index's chunks in order, each
//! checked ([`Installer::input_verified`]). The seed is only read.
//! Whatever makes a delta impossible or untrustworthy ends in [`DeltaError::Fallback`]
//! with a [`DeltaFallbackReason`]; the caller then installs in full.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use osroll_api::delta::DeltaFallbackReason;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::assemble::{Assembler, Frames};
use super::fetch::{FetchError, RangeFetcher};
use super::index::ChunkIndex;
use super::plan::{self, Merge, Plan};
use super::seed::SeedMap;
use crate::install::{
    Create, ImageSpec, InstallError, InstallOptions, InstallReport, Installer, Progress,
    StreamSpec, http,
};

/// The largest index accepted (about 20 million chunks' worth of JSON is far beyond any
/// image; this only bounds memory against a hostile server).
pub const MAX_INDEX_BYTES: u64 = 256 << 20;

/// What to install by delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaSpec {
    /// The packed image (its URL, checksum and size, as for a full install).
    pub pack: ImageSpec,
    /// Where the chunk index is.
    pub index_url: String,
    /// SHA-256 the index must have (from the signed catalog).
    pub index_sha256: [u8; 32],
    /// What to copy unchanged chunks from: the active slot. Only read.
    pub seed: PathBuf,
}

/// Tunables of the delta path (the installer's own come in `install`).
#[derive(Clone, Debug)]
pub struct DeltaOptions {
    /// The ordinary installer's options (network retry, slot I/O).
    pub install: InstallOptions,
    /// How frames are merged into ranges.
    pub merge: Merge,
    /// Ranges in flight at once.
    pub in_flight: usize,
    /// Chunks that may fail their hash (and be refetched) before giving up.
    pub max_mismatches: u32,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions {
            install: InstallOptions::default(),
            merge: Merge::default(),
            in_flight: 4,
            max_mismatches: 16,
        }
    }
}

/// A delta install that cannot be (or stopped being) worth finishing.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Install in full instead, for this reason.
    #[error("delta install abandoned ({reason}): {detail}")]
    Fallback {
        /// Why.
        reason: DeltaFallbackReason,
        /// What happened, naming the value.
        detail: String,
    },
    /// The install itself failed (the slot, the size limit, ...): a full install would
    /// fail the same way.
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl DeltaError {
    pub(super) fn fallback(reason: DeltaFallbackReason, detail: impl Into<String>) -> Self {
        DeltaError::Fallback {
            reason,
            detail: detail.into(),
        }
    }
}

/// Live counters of a delta install.
#[derive(Debug, Default)]
pub struct DeltaCounters {
    /// Image bytes copied from the seed.
    pub reused: AtomicU64,
    /// Pack bytes fetched (set from the fetcher as frames arrive).
    pub fetched: AtomicU64,
}

/// A finished delta install.
#[derive(Clone, Debug)]
pub struct DeltaReport {
    /// The ordinary installer's report on the assembled image.
    pub install: InstallReport,
    /// Pack bytes downloaded (index not included).
    pub fetched: u64,
    /// The index's size.
    pub index_bytes: u64,
    /// Image bytes copied from the seed.
    pub reused: u64,
    /// HTTP requests for frames.
    pub requests: u64,
    /// Chunks refetched after failing their hash.
    pub refetched: u32,
    /// Bytes the plan meant to fetch (before refetches).
    pub planned: u64,
    /// Whether the seed's chunks came from the index it was installed from (no scan).
    pub seed_indexed: bool,
}

/// One delta install of one image into one slot.
pub struct DeltaInstaller {
    spec: DeltaSpec,
    target: PathBuf,
    create: Create,
    opts: DeltaOptions,
    client: reqwest::Client,
    progress: Arc<Progress>,
    counters: Arc<DeltaCounters>,
    /// The index once fetched and checked against the catalog and the pack.
    index: OnceLock<Arc<ChunkIndex>>,
}

impl DeltaInstaller {
    /// Prepare (nothing is fetched or written until [`DeltaInstaller::run`]).
    pub fn new(
        spec: DeltaSpec,
        target: &Path,
        create: Create,
        opts: DeltaOptions,
    ) -> Result<Self, InstallError> {
        if same_file(&spec.seed, target) {
            return Err(InstallError::InvalidSpec(format!(
                "the seed {} is the slot being written",
                spec.seed.display()
            )));
        }
        Ok(DeltaInstaller {
            client: http::client(&opts.install)?,
            spec,
            target: target.to_path_buf(),
            create,
            opts,
            progress: Arc::default(),
            counters: Arc::default(),
            index: OnceLock::new(),
        })
    }

    /// The installer's counters (written, verified), shared with the delta stream.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Bytes fetched and reused so far.
    pub fn counters(&self) -> Arc<DeltaCounters> {
        self.counters.clone()
    }

    /// The pack's index, once fetched and checked (also after a fallback that came later:
    /// a full install of the same pack writes the image it describes).
    pub fn index(&self) -> Option<Arc<ChunkIndex>> {
        self.index.get().cloned()
    }

    /// Install by delta, or say why the caller must install in full.
    pub async fn run(&self) -> Result<DeltaReport, DeltaError> {
        self.run_inner(None).await
    }

    /// Like [`DeltaInstaller::run`], but know the seed's chunks from the index it was
    /// installed from instead of chunking it (when both indexes chunk alike). Every
    /// copied chunk is still hashed as it is read, so a seed that changed since is
    /// caught chunk by chunk.
    pub async fn run_with_seed_index(&self, seed: &ChunkIndex) -> Result<DeltaReport, DeltaError> {
        self.run_inner(Some(seed)).await
    }

    async fn run_inner(&self, recorded: Option<&ChunkIndex>) -> Result<DeltaReport, DeltaError> {
        let (index, index_bytes) = self.fetch_index().await?;
        let _ = self.index.set(index.clone());
        let seed_indexed = recorded.is_some_and(|r| r.chunking == index.chunking);
        let seed = match recorded {
            Some(r) if seed_indexed => SeedMap::from_index(&self.spec.seed, r),
            _ => self.scan_seed(&index).await?,
        };
        let plan = plan::plan(&index, &seed, self.opts.merge);
        tracing::info!(
            chunks = index.chunks.len(),
            reused = plan.reused(&index),
            to_fetch = plan.fetched(),
            ranges = plan.ranges.len(),
            "delta plan"
        );
        let planned = plan.fetched();
        let mut report = self.assemble(index, seed.path(), plan).await?;
        report.index_bytes = index_bytes;
        report.planned = planned;
        report.seed_indexed = seed_indexed;
        Ok(report)
    }

    /// The index, checked against the signed checksum before anything else is fetched,
    /// and against the pack it claims to describe.
    async fn fetch_index(&self) -> Result<(Arc<ChunkIndex>, u64), DeltaError> {
        use DeltaFallbackReason as R;
        let fetcher = RangeFetcher::new(
            self.client.clone(),
            &self.spec.index_url,
            self.opts.install.retry.clone(),
            self.opts.install.stall_timeout,
        );
        let bytes = fetcher
            .whole(MAX_INDEX_BYTES)
            .await
            .map_err(|e| DeltaError::fallback(R::IndexUnavailable, e.to_string()))?;
        let actual: [u8; 32] = Sha256::digest(&bytes).into();
        if actual != self.spec.index_sha256 {
            return Err(DeltaError::fallback(
                R::IndexChecksumMismatch,
                format!(
                    "index {} hashes to sha256:{}, the catalog says sha256:{}",
                    self.spec.index_url,
                    hex::encode(actual),
                    hex::encode(self.spec.index_sha256)
                ),
            ));
        }
        let index = ChunkIndex::parse(&bytes)
            .map_err(|e| DeltaError::fallback(R::IndexInvalid, e.to_string()))?;
        if index.pack_sha256 != self.spec.pack.sha256 {
            return Err(DeltaError::fallback(
                R::IndexNotForImage,
                format!(
                    "index packSha256 sha256:{} is not the image checksum sha256:{}",
                    hex::encode(index.pack_sha256),
                    hex::encode(self.spec.pack.sha256)
                ),
            ));
        }
        if let Some(size) = self.spec.pack.size.filter(|&s| s != index.image_size) {
            return Err(DeltaError::fallback(
                R::IndexNotForImage,
                format!(
                    "index imageSize {} is not the image size {size}",
                    index.image_size
                ),
            ));
        }
        Ok((Arc::new(index), bytes.len() as u64))
    }

    /// Chunk the seed (a little past the new image's size: an insertion shifts old
    /// content towards the end).
    async fn scan_seed(&self, index: &ChunkIndex) -> Result<SeedMap, DeltaError> {
        let path = self.spec.seed.clone();
        let limit = index.image_size + (64 << 20);
        let chunking = index.chunking;
        tokio::task::spawn_blocking(move || SeedMap::scan(&path, limit, chunking))
            .await
            .map_err(|e| DeltaError::fallback(DeltaFallbackReason::SeedUnreadable, e.to_string()))?
            .map_err(|e| DeltaError::fallback(DeltaFallbackReason::SeedUnreadable, e.to_string()))
    }

    /// Run the fetch task, the assembler thread and the installer together.
    async fn assemble(
        &self,
        index: Arc<ChunkIndex>,
        seed: &Path,
        plan: Plan,
    ) -> Result<DeltaReport, DeltaError> {
        let fetcher = RangeFetcher::new(
            self.client.clone(),
            &self.spec.pack.url,
            self.opts.install.retry.clone(),
            self.opts.install.stall_timeout,
        );
        let (out_tx, out_rx) = mpsc::channel::<std::io::Result<Bytes>>(32);
        let installer = self.stream_installer(&index, out_rx)?;
        let frames = self.spawn_fetches(&fetcher, &plan);
        let assembler = Assembler::new(
            index,
            seed,
            plan.sources,
            Frames::new(frames, fetcher.clone(), tokio::runtime::Handle::current()),
            out_tx,
            self.counters.clone(),
            self.opts.max_mismatches,
        )?;
        let assembling = tokio::task::spawn_blocking(move || assembler.run());
        let fetched = self.counters.clone();
        let mirror = fetcher.clone();
        let mut installer = installer;
        let installed = {
            let run = installer.run();
            tokio::pin!(run);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tick.tick() => fetched.fetched.store(mirror.fetched(), Ordering::Relaxed),
                }
            }
        };
        self.counters
            .fetched
            .store(fetcher.fetched(), Ordering::Relaxed);
        let assembled = assembling.await.map_err(|e| {
            DeltaError::fallback(DeltaFallbackReason::SeedUnreadable, e.to_string())
        })?;
        let (stats, install) = match (assembled, installed) {
            (Err(e), _) => return Err(e),
            (
                Ok(_),
                Err(InstallError::ChecksumMismatch {
                    expected, actual, ..
                }),
            ) => {
                return Err(DeltaError::fallback(
                    DeltaFallbackReason::ImageMismatch,
                    format!(
                        "the assembled image hashes to sha256:{actual}, the index says sha256:{expected}"
                    ),
                ));
            }
            (Ok(_), Err(e)) => return Err(e.into()),
            (Ok(stats), Ok(report)) => (stats, report),
        };
        Ok(DeltaReport {
            install,
            fetched: fetcher.fetched(),
            index_bytes: 0,
            reused: self.counters.reused.load(Ordering::Relaxed),
            requests: fetcher.requests(),
            refetched: stats.refetched,
            planned: 0,
            seed_indexed: false,
        })
    }

    /// The ordinary installer, reading the assembled image from `rx`.
    fn stream_installer(
        &self,
        index: &ChunkIndex,
        rx: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<Installer, InstallError> {
        let mut rx = rx;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let reader = tokio_util::io::StreamReader::new(stream);
        let spec = StreamSpec {
            name: format!("delta of {}", self.spec.pack.url),
            sha256: Some(index.image_sha256),
            size: Some(index.image_size),
        };
        Ok(Installer::from_stream(
            spec,
            reader,
            &self.target,
            self.create,
            self.opts.install.clone(),
        )?
        .raw_input()
        .input_verified()
        .share_progress(self.progress.clone()))
    }

    /// Fetch the plan's ranges in order, `in_flight` at a time, into a bounded channel.
    fn spawn_fetches(
        &self,
        fetcher: &RangeFetcher,
        plan: &Plan,
    ) -> mpsc::Receiver<Result<(plan::FetchRange, Bytes), FetchError>> {
        let (tx, rx) = mpsc::channel(self.opts.in_flight.max(1));
        let ranges = plan.ranges.clone();
        let fetcher = fetcher.clone();
        let in_flight = self.opts.in_flight.max(1);
        tokio::spawn(async move {
            let mut results = futures::stream::iter(ranges)
                .map(|r| {
                    let f = fetcher.clone();
                    async move { f.range(r.start, r.end).await.map(|b| (r, b)) }
                })
                .buffered(in_flight);
            while let Some(r) = results.next().await {
                let stop = r.is_err();
                if tx.send(r).await.is_err() || stop {
                    return;
                }
            }
        });
        rx
    }
}

/// Whether two paths name the same file (both exist and share device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            x.dev() == y.dev() && x.ino() == y.ino() || (x.rdev() != 0 && x.rdev() == y.rdev())
        }
        _ => false,
    }
}
