//! Delta installs against a real (loopback) HTTP server with faults: the result is always
//! the exact new image in the target, or a fallback with its reason, never a wrong slot.
//! The seed (the old image) is only read. See `docs/delta.md`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::checksum;
use common::server::{Fault, ImageServer};
use osroll_agent::delta::{
    ChunkIndex, Chunking, DeltaError, DeltaInstaller, DeltaOptions, DeltaReport, DeltaSpec, pack,
};
use osroll_agent::install::{Create, ImageSpec, InstallOptions, RetryPolicy};
use osroll_api::delta::DeltaFallbackReason;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// An image-like body: random runs, repeated text, zeros.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match rng.random_range(0..3) {
            0 => out.extend((0..rng.random_range(1..40_000)).map(|_| rng.random::<u8>())),
            1 => out.extend(b"etc/os-release VERSION_ID ".repeat(rng.random_range(1..400))),
            _ => out.extend(std::iter::repeat_n(0u8, rng.random_range(1..60_000))),
        }
    }
    out.truncate(len);
    out
}

/// v2 of `v1`: a few bytes changed in 5 places and 64 KiB inserted early.
fn next_version(v1: &[u8]) -> Vec<u8> {
    let mut v2 = v1.to_vec();
    for k in 1..=5 {
        let at = k * v1.len() / 6;
        for b in &mut v2[at..at + 100] {
            *b ^= 0x5a;
        }
    }
    v2.splice(100_000..100_000, image(64 << 10, 99));
    v2
}

struct Setup {
    _dir: tempfile::TempDir,
    seed: PathBuf,
    target: PathBuf,
    v2: Vec<u8>,
    pack: Vec<u8>,
    index: ChunkIndex,
    index_json: Vec<u8>,
    pack_srv: ImageServer,
    index_srv: ImageServer,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let v1 = image(4 << 20, 7);
    let v2 = next_version(&v1);
    let seed = dir.path().join("slot-a");
    std::fs::write(&seed, &v1).unwrap();
    let mut packed = Vec::new();
    let index = pack(&v2[..], &mut packed, Chunking::default()).unwrap();
    let index_json = index.to_json();
    Setup {
        seed,
        target: dir.path().join("slot-b"),
        _dir: dir,
        v2,
        pack_srv: ImageServer::start(packed.clone()).await,
        index_srv: ImageServer::start(index_json.clone()).await,
        pack: packed,
        index,
        index_json,
    }
}

fn options() -> DeltaOptions {
    DeltaOptions {
        install: InstallOptions {
            stall_timeout: Duration::from_millis(500),
            retry: RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
            },
            buffer_size: 256 << 10,
            ..InstallOptions::default()
        },
        max_mismatches: 3,
        ..DeltaOptions::default()
    }
}

impl Setup {
    fn installer(&self, index_checksum: &str) -> DeltaInstaller {
        let spec = DeltaSpec {
            pack: ImageSpec::new(
                &self.pack_srv.url(),
                &checksum(&self.pack),
                Some(self.v2.len() as u64),
            )
            .unwrap(),
            index_url: self.index_srv.url(),
            index_sha256: osroll_agent::install::http::parse_checksum(index_checksum).unwrap(),
            seed: self.seed.clone(),
        };
        DeltaInstaller::new(spec, &self.target, Create::Yes, options()).unwrap()
    }

    async fn run(&self) -> Result<DeltaReport, DeltaError> {
        let seed_before = std::fs::read(&self.seed).unwrap();
        let r = self.installer(&checksum(&self.index_json)).run().await;
        assert_eq!(
            std::fs::read(&self.seed).unwrap(),
            seed_before,
            "the seed is only read"
        );
        r
    }

    fn assert_target_is_v2(&self) {
        let got = std::fs::read(&self.target).unwrap();
        assert_eq!(got.len(), self.v2.len());
        assert!(got == self.v2, "the target must hold v2 exactly");
    }
}

fn fallback(r: Result<DeltaReport, DeltaError>) -> (DeltaFallbackReason, String) {
    match r {
        Err(DeltaError::Fallback { reason, detail }) => (reason, detail),
        other => panic!("expected a fallback, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_release_fetches_a_small_part_and_writes_the_exact_image() {
    let s = setup().await;
    let report = s.run().await.unwrap();
    s.assert_target_is_v2();
    assert_eq!(report.install.image_len, s.v2.len() as u64);
    assert_eq!(
        report.install.sha256,
        format!("sha256:{}", hex::encode(Sha256::digest(&s.v2)))
    );
    // Range requests only, and what the server sent is what was counted.
    assert!(
        s.pack_srv
            .requests()
            .iter()
            .all(|r| r.as_deref().is_some_and(|r| r.contains('-')))
    );
    let sent = s.pack_srv.with(|sc| sc.sent);
    assert_eq!(report.fetched, sent);
    assert!(
        report.fetched * 4 < s.pack.len() as u64,
        "fetched {} of a {}-byte pack",
        report.fetched,
        s.pack.len()
    );
    assert!(
        report.reused * 10 > s.v2.len() as u64 * 8,
        "reused only {}",
        report.reused
    );
    assert_eq!(report.refetched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_index_is_refused_before_any_frame_is_fetched() {
    let s = setup().await;
    let mut edited = s.index.clone();
    edited.chunks[3].sha256[0] ^= 1;
    s.index_srv
        .with(|sc| sc.body = std::sync::Arc::new(edited.to_json()));
    let (reason, detail) = fallback(s.run().await);
    assert_eq!(reason, DeltaFallbackReason::IndexChecksumMismatch);
    assert!(detail.contains(&s.index_srv.url()), "{detail}");
    assert!(s.pack_srv.requests().is_empty(), "no frame may be fetched");
    assert!(!s.target.exists(), "nothing is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_for_another_pack_is_refused() {
    let s = setup().await;
    let mut other = s.index.clone();
    other.pack_sha256 = [1; 32];
    let json = other.to_json();
    s.index_srv
        .with(|sc| sc.body = std::sync::Arc::new(json.clone()));
    let r = s.installer(&checksum(&json)).run().await;
    assert_eq!(fallback(r).0, DeltaFallbackReason::IndexNotForImage);
    assert!(s.pack_srv.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_range_is_detected() {
    let s = setup().await;
    s.pack_srv.with(|sc| sc.ignore_range = true);
    let (reason, detail) = fallback(s.run().await);
    assert_eq!(reason, DeltaFallbackReason::RangeIgnored);
    assert!(detail.contains("200"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_frame_is_refetched_and_the_image_is_exact() {
    let s = setup().await;
    // The chunk holding inserted bytes: it is fetched, not in the seed.
    let inserted = 100_000 + 32_768;
    let first = s
        .index
        .chunks
        .iter()
        .find(|c| c.image_offset <= inserted && inserted < c.image_offset + c.image_length)
        .unwrap();
    s.pack_srv
        .with(|sc| sc.flip_once = Some((first.offset + first.length / 2) as usize));
    let report = s.run().await.unwrap();
    s.assert_target_is_v2();
    assert_eq!(report.refetched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_stay_corrupt_end_in_a_fallback() {
    let s = setup().await;
    let mut bad = s.pack.clone();
    for c in &s.index.chunks {
        bad[(c.offset + c.length / 2) as usize] ^= 0xff;
    }
    s.pack_srv.with(|sc| sc.body = std::sync::Arc::new(bad));
    let (reason, detail) = fallback(s.run().await);
    assert_eq!(reason, DeltaFallbackReason::TooManyMismatches);
    assert!(detail.contains("limit 3"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_seed_chunk_is_refetched_and_the_image_is_exact() {
    let s = setup().await;
    // The index the seed was installed from, recorded then; the disk has changed since.
    let v1 = std::fs::read(&s.seed).unwrap();
    let seed_index = pack(&v1[..], &mut std::io::sink(), Chunking::default()).unwrap();
    let victim = &seed_index.chunks[seed_index.chunks.len() / 2];
    corrupt(&s.seed, victim.image_offset + 10);
    let report = s
        .installer(&checksum(&s.index_json))
        .run_with_seed_index(&seed_index)
        .await
        .unwrap();
    s.assert_target_is_v2();
    assert!(report.refetched >= 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_the_range() {
    let s = setup().await;
    s.pack_srv
        .with(|sc| sc.faults.push_back(Fault::Reset(5000)));
    let report = s.run().await.unwrap();
    s.assert_target_is_v2();
    let requests = s.pack_srv.requests();
    let first = requests[0].clone().unwrap();
    let start: u64 = first
        .trim_start_matches("bytes=")
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let resumed = format!("bytes={}-", start + 5000);
    assert!(
        requests
            .iter()
            .any(|r| r.as_deref().is_some_and(|r| r.starts_with(&resumed))),
        "expected a request resuming at {resumed}: {requests:?}"
    );
    assert_eq!(report.refetched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_slot_is_never_the_target() {
    let s = setup().await;
    let spec = DeltaSpec {
        pack: ImageSpec::new(&s.pack_srv.url(), &checksum(&s.pack), None).unwrap(),
        index_url: s.index_srv.url(),
        index_sha256: [0; 32],
        seed: s.seed.clone(),
    };
    let err = DeltaInstaller::new(spec, &s.seed, Create::No, options())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("is the slot being written"),
        "{err}"
    );
}

fn corrupt(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

/// `node`'s progress asks for v2 (`len` bytes) by delta: its pack and its index, each
/// as served and as sent.
fn put_delta(
    node: &common::Node,
    len: usize,
    (pack_srv, packed): (&ImageServer, &[u8]),
    (index_srv, json): (&ImageServer, &[u8]),
) {
    let mut sp = common::spec("v2", &pack_srv.url(), &checksum(packed), Some(len as u64));
    sp.image.as_mut().unwrap().chunk_index = Some(osroll_api::delta::ImageIndex {
        url: index_srv.url(),
        checksum: checksum(json),
    });
    node.put(sp);
}

/// Run `node`'s agent until its progress is Staged or Failed: the status then.
async fn stage(node: &common::Node) -> osroll_api::OSUpgradeProgressStatus {
    use osroll_api::ProgressPhase;
    let agent = node.spawn_agent();
    let status = node
        .wait_phase(
            &[ProgressPhase::Staged, ProgressPhase::Failed],
            Duration::from_secs(30),
        )
        .await;
    agent.abort();
    status
}

/// Through the real agent loop on a simulated node: the catalog entry names the index,
/// the agent installs by delta from slot A into slot B, the first frame request is cut
/// off and resumed, and status shows what was fetched and reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_installs_by_delta_and_resumes_a_dropped_connection() {
    use common::Node;
    use osroll_agent::Slot;
    use osroll_agent::simhost::image_bytes;
    use osroll_api::ProgressPhase;

    const SLOT: u64 = 8 << 20;
    let node = Node::new(SLOT, "v1");
    let v1 = image_bytes("v1", 4 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(node.host.slot_file(Slot::A))
            .unwrap();
        f.write_all_at(&v1, 0).unwrap();
    }
    let a = node.slot_hash(Slot::A);
    let mut v2 = next_version(&v1);
    v2[..b"OSROLL-SIM-IMAGE\nversion=v2".len()].copy_from_slice(b"OSROLL-SIM-IMAGE\nversion=v2");
    let mut packed = Vec::new();
    let index = pack(&v2[..], &mut packed, Chunking::default()).unwrap();
    let json = index.to_json();
    let pack_srv = ImageServer::start(packed.clone()).await;
    let index_srv = ImageServer::start(json.clone()).await;
    pack_srv.with(|sc| sc.faults.push_back(Fault::Reset(3000)));

    put_delta(&node, v2.len(), (&pack_srv, &packed), (&index_srv, &json));
    let status = stage(&node).await;
    assert_eq!(status.phase, Some(ProgressPhase::Staged), "{status:#?}");
    assert_eq!(node.slot_hash(Slot::A), a, "the running slot is only read");
    assert!(
        node.slot_bytes(Slot::B)[..v2.len()] == v2[..],
        "slot B must hold v2"
    );
    let delta = status.delta.clone().expect("status.delta");
    assert_eq!(delta.fallback_reason, None, "{delta:?}");
    // Six edits in 4 MiB with chunks of up to 256 KiB: well over a third is reused.
    assert!(delta.bytes_reused * 5 > v2.len() as u64 * 2, "{delta:?}");
    assert!(
        delta.bytes_fetched * 5 < packed.len() as u64 * 3,
        "{delta:?}"
    );
    // The index of what slot B now holds is recorded beside its slot record.
    let recorded: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.state_dir().join("slots/slot-B.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(recorded["version"], "v2");
    assert_eq!(
        ChunkIndex::parse(&serde_json::to_vec(&recorded["index"]).unwrap()).unwrap(),
        index
    );
    let requests = pack_srv.requests();
    let first: u64 = requests[0].as_deref().unwrap()["bytes=".len()..]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let resumed = format!("bytes={}-", first + 3000);
    assert!(
        requests
            .iter()
            .any(|r| r.as_deref().is_some_and(|r| r.starts_with(&resumed))),
        "{requests:?}"
    );
}

/// Without a chunk index the same node installs in full, and status has no delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_an_index_installs_in_full() {
    use common::{Node, spec};
    use osroll_agent::Slot;
    use osroll_api::ProgressPhase;

    let node = Node::new(4 << 20, "v1");
    let v2 = image(1 << 20, 5);
    let mut packed = Vec::new();
    pack(&v2[..], &mut packed, Chunking::default()).unwrap();
    let srv = ImageServer::start(packed.clone()).await;
    node.put(spec(
        "v2",
        &srv.url(),
        &checksum(&packed),
        Some(v2.len() as u64),
    ));
    let status = stage(&node).await;
    assert_eq!(status.phase, Some(ProgressPhase::Staged), "{status:#?}");
    assert_eq!(status.delta, None);
    assert_eq!(srv.requests(), [None], "one plain GET of the whole pack");
    assert!(node.slot_bytes(Slot::B)[..v2.len()] == v2[..]);
}

/// Through the agent loop: a server that ignores Range makes the delta fall back; the
/// same pack is installed in full and status names the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_falls_back_to_a_full_install_and_says_why() {
    use common::Node;
    use osroll_agent::Slot;
    use osroll_api::ProgressPhase;

    let node = Node::new(4 << 20, "v1");
    let v2 = image(1 << 20, 6);
    let mut packed = Vec::new();
    let index = pack(&v2[..], &mut packed, Chunking::default()).unwrap();
    let json = index.to_json();
    let pack_srv = ImageServer::start(packed.clone()).await;
    let index_srv = ImageServer::start(json.clone()).await;
    pack_srv.with(|sc| sc.ignore_range = true);
    put_delta(&node, v2.len(), (&pack_srv, &packed), (&index_srv, &json));
    let status = stage(&node).await;
    assert_eq!(status.phase, Some(ProgressPhase::Staged), "{status:#?}");
    assert!(
        node.slot_bytes(Slot::B)[..v2.len()] == v2[..],
        "slot B must hold v2"
    );
    let delta = status.delta.expect("status.delta");
    assert_eq!(
        delta.fallback_reason,
        Some(DeltaFallbackReason::RangeIgnored)
    );
    assert!(
        delta
            .fallback_message
            .as_deref()
            .is_some_and(|m| m.contains("ignored Range")),
        "{delta:?}"
    );
}

/// A node whose slot A holds v1, v2's pack and index served, and a progress asking for
/// v2 by delta; `recorded` is put in the state directory as slot A's recorded index.
async fn delta_with_recorded_index(recorded: &ChunkIndex) -> (String, bool) {
    use common::Node;
    use osroll_agent::Slot;
    use osroll_agent::backends::slot_record::SlotRecords;
    use osroll_agent::simhost::image_bytes;
    use osroll_api::ProgressPhase;

    let node = Node::new(8 << 20, "v1");
    let v1 = image_bytes("v1", 4 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(node.host.slot_file(Slot::A))
            .unwrap();
        f.write_all_at(&v1, 0).unwrap();
    }
    SlotRecords::in_dir(&node.state_dir().join("slots"))
        .remember_index(Slot::A, "v1", recorded)
        .unwrap();
    let v2 = next_version(&v1);
    let mut packed = Vec::new();
    let json = pack(&v2[..], &mut packed, Chunking::default())
        .unwrap()
        .to_json();
    let pack_srv = ImageServer::start(packed.clone()).await;
    let index_srv = ImageServer::start(json.clone()).await;
    put_delta(&node, v2.len(), (&pack_srv, &packed), (&index_srv, &json));
    let status = stage(&node).await;
    assert_eq!(status.phase, Some(ProgressPhase::Staged), "{status:#?}");
    assert!(node.slot_bytes(Slot::B)[..v2.len()] == v2[..]);
    let delta = status.delta.clone().expect("status.delta");
    assert_eq!(delta.fallback_reason, None, "{delta:?}");
    let message = status.message.clone().unwrap_or_default();
    let used = message.contains("known from its recorded index");
    (message, used)
}

/// The running slot's recorded index, tied to its record when the agent records the
/// slot before writing the other one, stands in for chunking the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_slots_recorded_index_is_used_instead_of_chunking_it() {
    let v1 = osroll_agent::simhost::image_bytes("v1", 4 << 20);
    let index = pack(&v1[..], &mut std::io::sink(), Chunking::default()).unwrap();
    let (message, used) = delta_with_recorded_index(&index).await;
    assert!(used, "{message}");
}

/// A recorded index that does not describe what the running slot holds is not used
/// (the slot is chunked), and the install is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_index_of_other_contents_is_ignored() {
    let other = image(4 << 20, 11);
    let index = pack(&other[..], &mut std::io::sink(), Chunking::default()).unwrap();
    let (message, used) = delta_with_recorded_index(&index).await;
    assert!(!used, "{message}");
    assert!(message.contains("by delta"), "{message}");
}
