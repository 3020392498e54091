//! The installer itself: the download stage and the [`Installer`] that connects it to
//! the decode and write stages (see the module above for the whole pipeline). Only
//! built with the `node` feature: it needs reqwest and tokio, the pure stages do not.
//! The bytes come from HTTP(S) here, or from any byte stream ([`stream`]).

mod stream;

pub use stream::StreamSpec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_RANGE, RANGE};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::aligned::AlignedBuf;
use super::decode::{self, Input, Limit, ToWriter};
use super::error::InstallError;
use super::guard;
use super::http::{self, error_chain, parse_content_range, status_is_retryable};
use super::retry::RetryPolicy;
use super::slot_io::{Create, SlotFile};

/// What to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Where to download it.
    pub url: String,
    /// SHA-256 of the bytes served at `url`.
    pub sha256: [u8; 32],
    /// Expected decoded size, if known.
    pub size: Option<u64>,
}

impl ImageSpec {
    /// Validate a URL, a `sha256:<hex>` checksum and an optional size.
    pub fn new(url: &str, checksum: &str, size: Option<u64>) -> Result<ImageSpec, InstallError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| InstallError::InvalidSpec(format!("url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(InstallError::InvalidSpec(format!(
                "url {url:?}: only http and https are supported"
            )));
        }
        let sha256 = http::parse_checksum(checksum)?;
        Ok(ImageSpec {
            url: url.to_string(),
            sha256,
            size,
        })
    }
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Give up on a response that delivers no byte for this long.
    pub stall_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Network retry budget and backoff.
    pub retry: RetryPolicy,
    /// Try `O_DIRECT` (falls back to buffered I/O where refused).
    pub direct_io: bool,
    /// Zero long runs of zero bytes with `FALLOC_FL_ZERO_RANGE` instead of writing them
    /// (see [`super::zeros`]); falls back to writing where the slot refuses it.
    pub zero_ranges: bool,
    /// Size of each write buffer.
    pub buffer_size: usize,
    /// Number of write buffers.
    pub buffers: usize,
    /// Largest zstd window accepted, as log2 bytes (27 = 128 MiB, zstd's own default).
    pub window_log_max: u32,
    /// With `O_DIRECT`: `fdatasync` and read back every this many bytes while writing
    /// continues (0: read everything back only after the final fsync).
    pub verify_interval: u64,
    /// Extra CA certificates (PEM, several allowed) trusted for HTTPS image servers.
    pub extra_ca_pem: Option<Arc<Vec<u8>>>,
    /// Trust the built-in (webpki) roots too; false: only `extra_ca_pem`.
    pub builtin_roots: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            direct_io: true,
            zero_ranges: true,
            buffer_size: 4 << 20,
            buffers: 4,
            window_log_max: 27,
            verify_interval: 64 << 20,
            extra_ca_pem: None,
            builtin_roots: true,
        }
    }
}

/// Which part of the install is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallPhase {
    /// Downloading (decoding and writing alongside).
    Downloading,
    /// Download complete: writing the rest and flushing.
    Writing,
    /// Reading the slot back.
    Verifying,
}

/// Live counters, readable from another task while the install runs.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    downloaded: AtomicU64,
    total: AtomicU64,
    written: AtomicU64,
    verified: AtomicU64,
}

/// A copy of [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Current phase.
    pub phase: InstallPhase,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes the server announced, if it did.
    pub total: Option<u64>,
    /// Image bytes written to the slot.
    pub written: u64,
    /// Image bytes read back.
    pub verified: u64,
}

impl Progress {
    /// Read all counters.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            phase: match self.phase.load(Ordering::Relaxed) {
                0 => InstallPhase::Downloading,
                1 => InstallPhase::Writing,
                _ => InstallPhase::Verifying,
            },
            downloaded: self.downloaded.load(Ordering::Relaxed),
            total: Some(self.total.load(Ordering::Relaxed)).filter(|&t| t > 0),
            written: self.written.load(Ordering::Relaxed),
            verified: self.verified.load(Ordering::Relaxed),
        }
    }

    fn set_phase(&self, p: InstallPhase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }
}

/// A successful install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallReport {
    /// Bytes downloaded (the compressed size).
    pub downloaded: u64,
    /// Bytes written to the slot (the image size).
    pub image_len: u64,
    /// `sha256:<hex>` of the download (equal to the spec's).
    pub sha256: String,
    /// XXH3-128 of the image as read back from the slot.
    pub readback_xxh3: u128,
    /// HTTP requests made.
    pub requests: u32,
    /// Offsets at which Range requests resumed the download.
    pub resumed_at: Vec<u64>,
    /// Whether the slot was written with `O_DIRECT`.
    pub direct_io: bool,
    /// Image bytes the slot zeroed itself (all-zero runs) instead of being sent.
    pub zeroed: u64,
    /// Wall time of all runs.
    pub elapsed: Duration,
}

struct WriteOutcome {
    len: u64,
    hash: u128,
    direct: bool,
    zeroed: u64,
}

struct Pipe {
    tx: mpsc::Sender<Input>,
    result: oneshot::Receiver<Result<WriteOutcome, InstallError>>,
    pending: BytesMut,
}

/// Batches forwarded to the decode stage.
const BATCH: usize = 1 << 20;

enum Fetch {
    /// Retrying might help.
    Retryable(String),
    /// It will not.
    Fatal(InstallError),
    /// The decode/write stages stopped; their result says why.
    PipelineGone,
}

/// One image being installed into one slot. See the module doc.
pub struct Installer {
    image: ImageSpec,
    target: PathBuf,
    create: Create,
    opts: InstallOptions,
    client: reqwest::Client,
    progress: Arc<Progress>,
    pipe: Option<Pipe>,
    offset: u64,
    total: Option<u64>,
    sha: Sha256,
    requests: u32,
    resumed_at: Vec<u64>,
    finished: bool,
    elapsed: Duration,
    /// Set: the bytes come from this stream instead of `image.url`.
    stream: Option<stream::Reader>,
    /// Whether the SHA-256 of the input must equal `image.sha256`.
    check_sha: bool,
    /// Whether the input is hashed here at all (not when the caller checked every piece
    /// of it against hashes `image.sha256` stands for: [`Installer::input_verified`]).
    hash_input: bool,
    /// The most bytes the download may take, with the image limit it comes from.
    cap: Option<(Limit, u64)>,
    /// Set: the input is this format, not sniffed (a delta install feeds raw bytes).
    format: Option<decode::Format>,
}

impl Installer {
    /// Prepare to install `image` into `target` (nothing happens until [`Installer::run`]).
    pub fn new(
        image: ImageSpec,
        target: &Path,
        create: Create,
        opts: InstallOptions,
    ) -> Result<Installer, InstallError> {
        let client = http::client(&opts)?;
        Ok(Installer {
            image,
            target: target.to_path_buf(),
            create,
            opts,
            client,
            progress: Arc::default(),
            pipe: None,
            offset: 0,
            total: None,
            sha: Sha256::new(),
            requests: 0,
            resumed_at: Vec::new(),
            finished: false,
            elapsed: Duration::ZERO,
            stream: None,
            check_sha: true,
            hash_input: true,
            cap: None,
            format: None,
        })
    }

    /// Do not compare the input's SHA-256 with `image.sha256` (it is still computed and
    /// reported). Only for a user who explicitly waived the checksum (`osroll flash
    /// --no-checksum`); the size guard and the read-back still apply.
    pub fn waive_checksum(mut self) -> Self {
        self.check_sha = false;
        self
    }

    /// The caller checks every piece of the input against a hash before handing it over
    /// (a delta install: each chunk against the signed index, which lists the chunks of
    /// the image `image.sha256` names), so the installer does not hash the whole input
    /// again and reports `image.sha256`. The size guard, the size check and the read-back
    /// of the slot against what was written still apply.
    pub fn input_verified(mut self) -> Self {
        self.hash_input = false;
        self
    }

    /// Take the input as a raw image without sniffing its first bytes (a delta install
    /// feeds the assembled image, whose first bytes could be anything).
    pub fn raw_input(mut self) -> Self {
        self.format = Some(decode::Format::Raw);
        self
    }

    /// Count into `progress` instead of the installer's own counters (a delta install
    /// shows them before this installer exists).
    pub fn share_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Live counters.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The image being installed.
    pub fn image(&self) -> &ImageSpec {
        &self.image
    }

    /// The slot being written.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Whether [`Installer::run`] can be called (again): not yet finished, and any
    /// earlier failure was a retryable network failure.
    pub fn resumable(&self) -> bool {
        !self.finished
    }

    /// Install, or continue a download interrupted by exhausted network retries.
    pub async fn run(&mut self) -> Result<InstallReport, InstallError> {
        if self.finished {
            return Err(InstallError::InvalidSpec(
                "this install already finished; start a new one".into(),
            ));
        }
        let started = Instant::now();
        let mut result = self.run_inner().await;
        self.elapsed += started.elapsed();
        if let Ok(report) = &mut result {
            report.elapsed = self.elapsed;
        }
        match &result {
            Err(e) if e.is_retryable() => {}
            _ => {
                self.finished = true;
                self.pipe = None;
            }
        }
        result
    }

    async fn run_inner(&mut self) -> Result<InstallReport, InstallError> {
        if self.pipe.is_none() {
            self.pipe = Some(self.start_pipeline()?);
        }
        self.progress.set_phase(InstallPhase::Downloading);
        let fetched = match self.stream.take() {
            Some(mut reader) => self.receive(&mut reader).await,
            None => self.fetch().await,
        };
        match fetched {
            Ok(()) => {}
            Err(Fetch::Retryable(e)) => return Err(self.network_error(e)),
            Err(Fetch::Fatal(e)) => return Err(e),
            Err(Fetch::PipelineGone) => return Err(self.pipeline_error().await),
        }
        let mut pipe = self.pipe.take().expect("pipeline started");
        let batch = pipe.pending.split().freeze();
        if (!batch.is_empty() && pipe.tx.send(Input::Data(batch)).await.is_err())
            || pipe.tx.send(Input::End).await.is_err()
        {
            self.pipe = Some(pipe);
            return Err(self.pipeline_error().await);
        }
        self.progress.set_phase(InstallPhase::Writing);
        let outcome = (&mut pipe.result).await;
        let actual: [u8; 32] = if self.hash_input {
            self.sha.clone().finalize().into()
        } else {
            self.image.sha256
        };
        if self.check_sha && actual[..] != self.image.sha256[..] {
            return Err(InstallError::ChecksumMismatch {
                expected: hex::encode(self.image.sha256),
                actual: hex::encode(actual),
                bytes: self.offset,
            });
        }
        let outcome = outcome.map_err(|_| self.thread_died())??;
        if let Some(size) = self.image.size
            && outcome.len != size
        {
            return Err(InstallError::SizeMismatch {
                expected: size,
                actual: outcome.len,
            });
        }
        Ok(InstallReport {
            downloaded: self.offset,
            image_len: outcome.len,
            sha256: format!("sha256:{}", hex::encode(actual)),
            readback_xxh3: outcome.hash,
            requests: self.requests,
            resumed_at: self.resumed_at.clone(),
            direct_io: outcome.direct,
            zeroed: outcome.zeroed,
            elapsed: self.elapsed,
        })
    }

    fn network_error(&self, detail: String) -> InstallError {
        InstallError::Network {
            url: self.image.url.clone(),
            attempts: self.opts.retry.max_attempts,
            offset: self.offset,
            detail,
        }
    }

    fn thread_died(&self) -> InstallError {
        InstallError::io(
            &self.target,
            "install",
            std::io::Error::other("decode or write stage stopped unexpectedly"),
        )
    }

    async fn pipeline_error(&mut self) -> InstallError {
        match self.pipe.take() {
            Some(pipe) => match pipe.result.await {
                Ok(Err(e)) => e,
                _ => self.thread_died(),
            },
            None => self.thread_died(),
        }
    }

    fn start_pipeline(&mut self) -> Result<Pipe, InstallError> {
        let slot = SlotFile::open(&self.target, self.opts.direct_io, self.create)?;
        let path = self.target.display().to_string();
        let limit = guard::limit_for(self.image.size, slot.capacity(), &path)?;
        self.cap = limit
            .as_ref()
            .map(|l| (l.clone(), guard::download_cap(l.bytes)));
        let (tx, rx) = mpsc::channel(4);
        let (wtx, wrx) = std::sync::mpsc::sync_channel(self.opts.buffers);
        let (ptx, prx) = std::sync::mpsc::channel();
        for _ in 0..self.opts.buffers.max(1) {
            ptx.send(AlignedBuf::new(self.opts.buffer_size))
                .expect("receiver alive");
        }
        let (rtx, rrx) = oneshot::channel();
        let window = self.opts.window_log_max;
        let format = self.format;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| InstallError::io(&self.target, format!("start {name} thread"), e))
        };
        spawn(
            "osroll-decode",
            Box::new(move || decode::run(rx, wtx, prx, limit, window, format)),
        )?;
        let progress = self.progress.clone();
        let cfg = WriteConfig {
            buffer_size: self.opts.buffer_size,
            verify_interval: self.opts.verify_interval,
            zero_ranges: self.opts.zero_ranges,
        };
        spawn(
            "osroll-write",
            Box::new(move || write_stage(slot, wrx, ptx, progress, rtx, cfg)),
        )?;
        Ok(Pipe {
            tx,
            result: rrx,
            pending: BytesMut::with_capacity(BATCH),
        })
    }

    /// Download until the end of the resource, retrying network failures.
    async fn fetch(&mut self) -> Result<(), Fetch> {
        let mut failures = 0u32;
        loop {
            let before = self.offset;
            let detail = match self.request().await {
                Ok(()) => return Ok(()),
                Err(Fetch::Retryable(d)) => d,
                Err(other) => return Err(other),
            };
            if self.offset > before {
                failures = 0;
            }
            failures += 1;
            tracing::warn!(url = %self.image.url, offset = self.offset, failures, "download interrupted: {detail}");
            if failures >= self.opts.retry.max_attempts {
                return Err(Fetch::Retryable(detail));
            }
            tokio::time::sleep(self.opts.retry.delay(failures, rand::random::<f64>())).await;
        }
    }

    /// One GET (a Range GET after the first bytes), streamed until it ends.
    async fn request(&mut self) -> Result<(), Fetch> {
        let resp = self.send().await?;
        let Some(mut skip) = self.accept(&resp)? else {
            return Ok(());
        };
        let mut resp = resp;
        while let Some(chunk) = self.next_chunk(&mut resp).await? {
            let mut data = &chunk[..];
            if skip > 0 {
                let n = skip.min(data.len() as u64) as usize;
                data = &data[n..];
                skip -= n as u64;
            }
            if !data.is_empty() {
                self.forward(data).await?;
            }
        }
        Ok(())
    }

    /// Send the GET for what is still missing; a failure no retry can fix is fatal.
    async fn send(&mut self) -> Result<reqwest::Response, Fetch> {
        let url = self.image.url.clone();
        let stall = self.opts.stall_timeout;
        let mut req = self.client.get(&url).header(ACCEPT_ENCODING, "identity");
        if self.offset > 0 {
            req = req.header(RANGE, format!("bytes={}-", self.offset));
            self.resumed_at.push(self.offset);
        }
        self.requests += 1;
        let fatal = |e: reqwest::Error, what: fn(String, String) -> InstallError| {
            Err(Fetch::Fatal(what(url.clone(), error_chain(&e))))
        };
        match tokio::time::timeout(stall, req.send()).await {
            Err(_) => Err(Fetch::Retryable(format!("no response within {stall:?}"))),
            Ok(Err(e)) if e.is_builder() => {
                fatal(e, |url, detail| InstallError::Http { url, detail })
            }
            Ok(Err(e)) if e.is_redirect() => {
                fatal(e, |url, detail| InstallError::Redirect { url, detail })
            }
            Ok(Err(e)) if http::is_tls_error(&e) => {
                fatal(e, |url, detail| InstallError::Tls { url, detail })
            }
            Ok(Err(e)) => Err(Fetch::Retryable(error_chain(&e))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    fn http_error(&self, detail: String) -> Fetch {
        Fetch::Fatal(InstallError::Http {
            url: self.image.url.clone(),
            detail,
        })
    }

    /// Check the answer continues the download: how many leading bytes of its body to
    /// skip (a server ignoring Range resends from the start), or `None` when there is
    /// nothing left to fetch. Records the announced size.
    fn accept(&mut self, resp: &reqwest::Response) -> Result<Option<u64>, Fetch> {
        let status = resp.status();
        let (skip, total) = match status {
            StatusCode::OK => (self.offset, resp.content_length()),
            StatusCode::PARTIAL_CONTENT => (0, self.content_range(resp)?),
            StatusCode::RANGE_NOT_SATISFIABLE if self.total == Some(self.offset) => {
                return Ok(None);
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(self.http_error(format!(
                    "416 Range Not Satisfiable for bytes={}- although the server announced {} bytes",
                    self.offset,
                    self.total
                        .map_or("an unknown number of".into(), |t| t.to_string())
                )));
            }
            s if status_is_retryable(s) => {
                return Err(Fetch::Retryable(format!("server answered {s}")));
            }
            s => return Err(self.http_error(format!("server answered {s}"))),
        };
        if let (Some(old), Some(new)) = (self.total, total)
            && old != new
        {
            return Err(self.http_error(format!(
                "the image changed size between requests ({old} then {new} bytes)"
            )));
        }
        if let Some(t) = total {
            self.within_cap(t)?;
            self.total = Some(t);
            self.progress.total.store(t, Ordering::Relaxed);
        }
        Ok(Some(skip))
    }

    /// The total size a 206 answer announces, once its range starts where we are.
    fn content_range(&self, resp: &reqwest::Response) -> Result<Option<u64>, Fetch> {
        let cr = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let range = parse_content_range(cr).ok_or_else(|| {
            self.http_error(format!("206 answer with invalid Content-Range {cr:?}"))
        })?;
        if range.start != self.offset {
            return Err(self.http_error(format!(
                "asked for bytes={}-, got Content-Range {cr:?}",
                self.offset
            )));
        }
        Ok(range.total)
    }

    /// The next piece of the body; `None` at its end (retryable if it ended short).
    async fn next_chunk(
        &self,
        resp: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, Fetch> {
        let stall = self.opts.stall_timeout;
        match tokio::time::timeout(stall, resp.chunk()).await {
            Err(_) => Err(Fetch::Retryable(format!(
                "stalled: no data for {stall:?} at byte {}",
                self.offset
            ))),
            Ok(Err(e)) => {
                let at = match self.total {
                    Some(t) => format!("byte {} of {t} announced", self.offset),
                    None => format!("byte {}", self.offset),
                };
                Err(Fetch::Retryable(format!(
                    "connection lost at {at}: {}",
                    error_chain(&e)
                )))
            }
            Ok(Ok(None)) => match self.total {
                Some(t) if self.offset < t => Err(Fetch::Retryable(format!(
                    "connection closed at byte {} of {t}",
                    self.offset
                ))),
                _ => Ok(None),
            },
            Ok(Ok(Some(c))) => Ok(Some(c)),
        }
    }

    /// Refuse a download that reaches past `bytes` when that is more than any image
    /// within the limit can take.
    fn within_cap(&self, bytes: u64) -> Result<(), Fetch> {
        match &self.cap {
            Some((limit, cap)) if bytes > *cap => {
                Err(Fetch::Fatal(InstallError::DownloadTooLarge {
                    what: limit.what.clone(),
                    limit: limit.bytes,
                    cap: *cap,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Hash `data`, count it, and pass it on to the decoder in batches.
    async fn forward(&mut self, data: &[u8]) -> Result<(), Fetch> {
        self.within_cap(self.offset + data.len() as u64)?;
        if self.hash_input {
            self.sha.update(data);
        }
        self.offset += data.len() as u64;
        self.progress
            .downloaded
            .store(self.offset, Ordering::Relaxed);
        let pipe = self.pipe.as_mut().expect("pipeline started");
        pipe.pending.extend_from_slice(data);
        if pipe.pending.len() >= BATCH {
            let batch = pipe.pending.split().freeze();
            if pipe.tx.send(Input::Data(batch)).await.is_err() {
                return Err(Fetch::PipelineGone);
            }
        }
        Ok(())
    }
}

/// The read-back thread that follows the writer when writes bypass the page cache:
/// each region is `fdatasync`ed, then read back and hashed while later regions are
/// being written, so verification costs almost no extra time.
struct Follower {
    tx: std::sync::mpsc::Sender<u64>,
    handle: std::thread::JoinHandle<Result<u128, InstallError>>,
}

fn spawn_follower(
    slot: &SlotFile,
    buffer_size: usize,
    progress: Arc<Progress>,
) -> Result<Follower, InstallError> {
    let mut reader = slot.reader(AlignedBuf::new(buffer_size))?;
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let handle = std::thread::Builder::new()
        .name("osroll-verify".into())
        .spawn(move || {
            let mut on_progress = |n| progress.verified.store(n, Ordering::Relaxed);
            for to in rx {
                reader.advance(to, &mut on_progress)?;
            }
            Ok(reader.digest())
        })
        .map_err(|e| InstallError::io(slot.path(), "start read-back thread", e))?;
    Ok(Follower { tx, handle })
}

/// The write stage's settings (from [`InstallOptions`]).
struct WriteConfig {
    buffer_size: usize,
    verify_interval: u64,
    zero_ranges: bool,
}

/// The write stage: write blocks in order, return buffers to the pool, fsync, and read
/// everything back (overlapped with writing when `O_DIRECT` is in use).
fn write_stage(
    slot: SlotFile,
    rx: std::sync::mpsc::Receiver<ToWriter>,
    pool: std::sync::mpsc::Sender<AlignedBuf>,
    progress: Arc<Progress>,
    result: oneshot::Sender<Result<WriteOutcome, InstallError>>,
    cfg: WriteConfig,
) {
    let mut follower = None;
    if cfg.verify_interval > 0 && slot.is_direct() {
        match spawn_follower(&slot, cfg.buffer_size, progress.clone()) {
            Ok(f) => follower = Some(f),
            Err(e) => {
                let _ = result.send(Err(e));
                return;
            }
        }
    }
    let mut w = Writer {
        slot,
        progress,
        follower,
        cfg,
        offset: 0,
        zeroed: 0,
        synced: 0,
    };
    let outcome = loop {
        match rx.recv() {
            Ok(ToWriter::Block(buf, len)) => {
                if let Err(e) = w.block(&buf.as_slice()[..len]) {
                    break Err(e);
                }
                // The decoder may have finished already; then nobody needs the buffer.
                let _ = pool.send(buf);
            }
            Ok(ToWriter::Abort(e)) => break Err(e),
            Ok(ToWriter::Finish { error: Some(e), .. }) => break Err(e),
            Ok(ToWriter::Finish {
                len,
                hash,
                error: None,
            }) => {
                drop(pool);
                break w.finish(len, hash);
            }
            // The installer was dropped mid-way.
            Err(_) => return,
        }
    };
    let _ = result.send(outcome);
}

/// Where the write stage is.
struct Writer {
    slot: SlotFile,
    progress: Arc<Progress>,
    follower: Option<Follower>,
    cfg: WriteConfig,
    /// Bytes written.
    offset: u64,
    /// Bytes zeroed by the slot instead of written.
    zeroed: u64,
    /// Bytes flushed and handed to the read-back.
    synced: u64,
}

impl Writer {
    /// Write the next block; flush and hand a region to the read-back when one is full.
    fn block(&mut self, block: &[u8]) -> Result<(), InstallError> {
        self.zeroed += if self.cfg.zero_ranges {
            self.slot.write_block_at(block, self.offset)?
        } else {
            self.slot.write_at(block, self.offset)?;
            0
        };
        self.offset += block.len() as u64;
        self.progress.written.store(self.offset, Ordering::Relaxed);
        if let Some(f) = &self.follower
            && self.offset - self.synced >= self.cfg.verify_interval
        {
            self.slot.sync_data()?;
            self.synced = self.offset;
            let _ = f.tx.send(self.offset);
        }
        Ok(())
    }

    /// All `len` bytes (hashing to `hash`) are written: flush and read back.
    fn finish(mut self, len: u64, hash: u128) -> Result<WriteOutcome, InstallError> {
        let outcome = finish(
            &self.slot,
            len,
            hash,
            &self.progress,
            self.cfg.buffer_size,
            self.follower.take(),
        )?;
        Ok(WriteOutcome {
            zeroed: self.zeroed,
            ..outcome
        })
    }
}

fn finish(
    slot: &SlotFile,
    len: u64,
    hash: u128,
    progress: &Progress,
    buffer_size: usize,
    follower: Option<Follower>,
) -> Result<WriteOutcome, InstallError> {
    slot.sync()?;
    progress.set_phase(InstallPhase::Verifying);
    let read = match follower {
        Some(Follower { tx, handle }) => {
            let _ = tx.send(len);
            drop(tx);
            handle.join().map_err(|_| {
                InstallError::io(
                    slot.path(),
                    "read back",
                    std::io::Error::other("read-back thread panicked"),
                )
            })??
        }
        None => slot.read_back(len, AlignedBuf::new(buffer_size), |n| {
            progress.verified.store(n, Ordering::Relaxed)
        })?,
    };
    if read != hash {
        return Err(InstallError::VerifyMismatch {
            path: slot.path().to_path_buf(),
            len,
            wrote: format!("xxh3:{hash:032x}"),
            read: format!("xxh3:{read:032x}"),
        });
    }
    Ok(WriteOutcome {
        len,
        hash,
        direct: slot.is_direct(),
        zeroed: 0,
    })
}
