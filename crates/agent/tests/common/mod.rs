//! Shared helpers for the agent's component tests: the fault-injecting image server,
//! images, a simulated node with a file-backed progress source, and polling with a
//! deadline.

#![allow(dead_code)]

pub(crate) mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osroll_agent::install::{InstallOptions, RetryPolicy};
use osroll_agent::source::file::FileSource;
use osroll_agent::{AgentConfig, AgentExit, SimHost, Slot};
use osroll_api::{
    ImageRef, OSUpgradeProgress, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase,
};
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `bytes`.
pub(crate) fn checksum(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// zstd of `bytes` (level 3, with the frame checksum as the CLI writes it).
pub(crate) fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut enc, bytes).unwrap();
    enc.finish().unwrap()
}

/// Poll `f` until it returns Some, or panic with `what` after `timeout`.
pub(crate) async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A simulated node, its progress directory and its state directory.
pub(crate) struct Node {
    pub dir: tempfile::TempDir,
    pub host: SimHost,
}

pub(crate) const NODE: &str = "node-1";
pub(crate) const PROGRESS: &str = "osupgrade-test";

impl Node {
    pub(crate) fn new(slot_size: u64, version: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let host = SimHost::create(&dir.path().join("host"), slot_size, version).unwrap();
        std::fs::create_dir_all(dir.path().join("progress")).unwrap();
        Node { dir, host }
    }

    pub(crate) fn progress_dir(&self) -> PathBuf {
        self.dir.path().join("progress")
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Agent settings sized for tests: short timeouts and backoffs.
    pub(crate) fn config(&self) -> AgentConfig {
        let mut cfg = AgentConfig::new(NODE, self.state_dir());
        cfg.install = InstallOptions {
            stall_timeout: Duration::from_millis(300),
            retry: RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            buffer_size: 256 * 1024,
            // Read back in 256 KiB regions while writing continues.
            verify_interval: 256 * 1024,
            ..InstallOptions::default()
        };
        cfg.resync = Duration::from_millis(200);
        // The simulated node's /run, not the test machine's.
        cfg.reboot.sentinel_file = Some(self.host.sentinel());
        cfg.error_backoff = Duration::from_millis(50);
        cfg.progress_interval = Duration::from_millis(50);
        cfg
    }

    /// Write (or replace) the progress object.
    pub(crate) fn put(&self, spec: OSUpgradeProgressSpec) {
        let p = OSUpgradeProgress::new(PROGRESS, spec);
        FileSource::write_progress(&self.progress_dir(), &p).unwrap();
    }

    /// Edit the progress spec.
    pub(crate) fn edit(&self, f: impl FnOnce(&mut OSUpgradeProgressSpec)) {
        let bytes = std::fs::read(self.progress_dir().join(format!("{PROGRESS}.json"))).unwrap();
        let mut p: OSUpgradeProgress = serde_json::from_slice(&bytes).unwrap();
        f(&mut p.spec);
        FileSource::write_progress(&self.progress_dir(), &p).unwrap();
    }

    pub(crate) fn status(&self) -> Option<OSUpgradeProgressStatus> {
        FileSource::read_status(&self.progress_dir(), PROGRESS)
    }

    pub(crate) fn phase(&self) -> Option<ProgressPhase> {
        self.status().and_then(|s| s.phase)
    }

    /// Start an in-process agent.
    pub(crate) fn spawn_agent(&self) -> tokio::task::JoinHandle<anyhow::Result<AgentExit>> {
        self.spawn_agent_with(self.config())
    }

    /// Start an in-process agent with `cfg`.
    pub(crate) fn spawn_agent_with(
        &self,
        cfg: AgentConfig,
    ) -> tokio::task::JoinHandle<anyhow::Result<AgentExit>> {
        let source = FileSource::new(&self.progress_dir(), NODE, Duration::from_millis(10));
        let host: Arc<dyn osroll_agent::Host> = Arc::new(self.host.clone());
        tokio::spawn(osroll_agent::run_with_source(cfg, source, host))
    }

    /// Wait until the status reaches one of `phases`.
    pub(crate) async fn wait_phase(
        &self,
        phases: &[ProgressPhase],
        timeout: Duration,
    ) -> OSUpgradeProgressStatus {
        eventually(timeout, &format!("phase in {phases:?}"), || {
            self.status()
                .filter(|s| s.phase.is_some_and(|p| phases.contains(&p)))
        })
        .await
    }

    pub(crate) fn slot_bytes(&self, slot: Slot) -> Vec<u8> {
        std::fs::read(self.host.slot_file(slot)).unwrap()
    }

    pub(crate) fn slot_hash(&self, slot: Slot) -> String {
        checksum(&self.slot_bytes(slot))
    }
}

/// A progress spec for `url`.
pub(crate) fn spec(
    version: &str,
    url: &str,
    checksum: &str,
    size: Option<u64>,
) -> OSUpgradeProgressSpec {
    OSUpgradeProgressSpec {
        node_name: NODE.into(),
        image: Some(ImageRef {
            version: version.into(),
            url: url.into(),
            checksum: checksum.into(),
            size,
            reboot_required: None,
            chunk_index: None,
        }),
        // The test servers are plain http on loopback.
        allow_http_images: true,
        ..Default::default()
    }
}

/// First `n` bytes of a file.
pub(crate) fn head(path: &Path, n: usize) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    b.truncate(n);
    b
}
