//! Component tests of staging against a misbehaving image server: the real agent loop
//! (in-process) on a simulated node with a file-backed progress source. Every fault
//! must end in the right phase with a reason naming the problem, must leave the active
//! slot's bytes unchanged, and retryable faults must resume with Range instead of
//! starting again from byte zero.

mod common;

use std::time::Duration;

use common::server::{Fault, ImageServer};
use common::*;
use osroll_agent::Slot;
use osroll_agent::simhost::image_bytes;
use osroll_api::{OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase};

const SLOT: u64 = 2 << 20;
const T: Duration = Duration::from_secs(20);

struct Run {
    node: Node,
    status: OSUpgradeProgressStatus,
}

/// Stage `spec` on a fresh node running v1, until Staged or Failed; check slot A.
async fn stage(spec: OSUpgradeProgressSpec) -> Run {
    let node = Node::new(SLOT, "v1");
    let a = node.slot_hash(Slot::A);
    node.put(spec);
    let agent = node.spawn_agent();
    let status = node
        .wait_phase(&[ProgressPhase::Staged, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    assert_eq!(
        node.slot_hash(Slot::A),
        a,
        "the active slot must not change"
    );
    assert!(!node.host.reboot_requested(), "no reboot without approval");
    Run { node, status }
}

fn image() -> Vec<u8> {
    image_bytes("v2", 1 << 20)
}

fn assert_staged(r: &Run, image: &[u8]) {
    assert_eq!(
        r.status.phase,
        Some(ProgressPhase::Staged),
        "{:#?}",
        r.status
    );
    assert_eq!(&r.node.slot_bytes(Slot::B)[..image.len()], image);
    assert_eq!(r.status.inactive_partition.as_deref(), Some("B"));
}

fn assert_failed(r: &Run, reason: &str, words: &[&str]) {
    assert_eq!(
        r.status.phase,
        Some(ProgressPhase::Failed),
        "{:#?}",
        r.status
    );
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some(reason),
        "{:#?}",
        r.status
    );
    let msg = r.status.message.clone().unwrap_or_default();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} should mention {w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_zstd_image_is_staged_and_status_is_complete() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let r = stage(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ))
    .await;
    assert_staged(&r, &img);
    assert_eq!(srv.requests(), [None]);
    let s = &r.status;
    assert_eq!(
        (s.bytes_done, s.bytes_total),
        (Some(z.len() as u64), Some(z.len() as u64))
    );
    assert_eq!(
        (s.current_version.as_deref(), s.target_version.as_deref()),
        (Some("v1"), Some("v2"))
    );
    assert!(s.started_at.is_some() && s.last_updated_at.is_some() && s.completed_at.is_none());
    assert!(
        osroll_api::conditions::find(&s.conditions, "Staged")
            .unwrap()
            .is_true()
    );
    // Local state and labels were written too.
    let labels = std::fs::read_to_string(r.node.progress_dir().join("node-labels.json")).unwrap();
    for l in [
        "\"osroll.io/managed\": \"true\"",
        "\"osroll.io/os-version\": \"v1\"",
        "\"osroll.io/slot\": \"A\"",
    ] {
        assert!(labels.contains(l), "{labels}");
    }
    assert!(r.node.state_dir().join("agent-state.json").exists());
}

/// Without O_DIRECT the slot is written through the page cache, fsynced, dropped from
/// the cache and read back in one pass after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_writes_are_read_back_after_fsync() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let node = Node::new(SLOT, "v1");
    node.put(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ));
    let mut cfg = node.config();
    cfg.install.direct_io = false;
    let agent = node.spawn_agent_with(cfg);
    let st = node
        .wait_phase(&[ProgressPhase::Staged, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    assert_eq!(&node.slot_bytes(Slot::B)[..img.len()], &img[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_image_is_staged() {
    let img = image();
    let srv = ImageServer::start(img.clone()).await;
    let r = stage(spec("v2", &srv.url(), &checksum(&img), None)).await;
    assert_staged(&r, &img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_response_resumes_with_range() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.faults.push_back(Fault::Truncate(100_000)));
    let r = stage(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ))
    .await;
    assert_staged(&r, &img);
    assert_eq!(srv.requests(), [None, Some("bytes=100000-".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connection_resumes_with_range() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.faults.push_back(Fault::Reset(150_000)));
    let r = stage(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ))
    .await;
    assert_staged(&r, &img);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let resumed: u64 = reqs[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap();
    assert!(resumed > 0 && resumed <= 150_000, "resumed at {resumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_times_out_and_resumes_with_range() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.faults.push_back(Fault::Stall(50_000)));
    let r = stage(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ))
    .await;
    assert_staged(&r, &img);
    assert_eq!(srv.requests(), [None, Some("bytes=50000-".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_is_retried_from_the_start() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.faults.extend([Fault::Status(503), Fault::Status(503)]));
    let r = stage(spec("v2", &srv.url(), &checksum(&z), None)).await;
    assert_staged(&r, &img);
    assert_eq!(srv.requests(), [None, None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_range_is_handled_by_skipping() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| {
        s.ignore_range = true;
        s.faults.push_back(Fault::Truncate(70_000));
    });
    let r = stage(spec("v2", &srv.url(), &checksum(&z), None)).await;
    assert_staged(&r, &img);
    assert_eq!(srv.requests(), [None, Some("bytes=70000-".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_stall_fails_as_a_network_error() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.always = Some(Fault::Stall(0)));
    let r = stage(spec("v2", &srv.url(), &checksum(&z), None)).await;
    assert_failed(
        &r,
        "NetworkError",
        &["stalled", "4 consecutive failures", &srv.url()],
    );
    assert_eq!(srv.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_byte_fails_the_checksum() {
    let img = image();
    let z = zstd(&img);
    let mut bad = z.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    let srv = ImageServer::start(bad.clone()).await;
    let r = stage(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ))
    .await;
    let expected = checksum(&z);
    let actual = checksum(&bad);
    assert_failed(&r, "ChecksumMismatch", &[&expected, &actual]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_image_file_fails_the_checksum() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z[..z.len() - 1000].to_vec()).await;
    let r = stage(spec("v2", &srv.url(), &checksum(&z), None)).await;
    assert_failed(&r, "ChecksumMismatch", &["spec.image.checksum"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_announcing_a_wrong_length_fails() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.extra_length = 1000);
    let r = stage(spec("v2", &srv.url(), &checksum(&z), None)).await;
    let total = (z.len() + 1000).to_string();
    assert_failed(
        &r,
        "NetworkError",
        &[&format!("at byte {}", z.len()), &total],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_larger_than_spec_size_is_refused() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let r = stage(spec("v2", &srv.url(), &checksum(&z), Some(500_000))).await;
    assert_failed(&r, "ImageTooLarge", &["spec.image.size", "500000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_smaller_than_spec_size_is_refused() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let r = stage(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64 + 1),
    ))
    .await;
    assert_failed(
        &r,
        "SizeMismatch",
        &[&img.len().to_string(), &(img.len() + 1).to_string()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_size_larger_than_the_slot_is_refused_before_downloading() {
    let srv = ImageServer::start(vec![0; 10]).await;
    let r = stage(spec("v2", &srv.url(), &checksum(&[0; 10]), Some(SLOT + 1))).await;
    assert_failed(&r, "ImageTooLarge", &["slot-B.img", &SLOT.to_string()]);
    assert!(srv.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_bomb_larger_than_the_slot_stops_at_the_slot_size() {
    let bomb = zstd(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let srv = ImageServer::start(bomb.clone()).await;
    let r = stage(spec("v2", &srv.url(), &checksum(&bomb), None)).await;
    assert_failed(&r, "ImageTooLarge", &["slot-B.img", &SLOT.to_string()]);
    assert_eq!(
        std::fs::metadata(r.node.host.slot_file(Slot::B))
            .unwrap()
            .len(),
        SLOT,
        "nothing written past the slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_unsupported_formats_fail_permanently() {
    let srv = ImageServer::start(vec![1; 100]).await;
    srv.with(|s| s.always = Some(Fault::Status(404)));
    let r = stage(spec("v2", &srv.url(), &checksum(&[1; 100]), None)).await;
    assert_failed(&r, "HttpError", &["404"]);
    assert_eq!(srv.requests().len(), 1, "4xx is not retried");

    let gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let srv = ImageServer::start(gz.clone()).await;
    let r = stage(spec("v2", &srv.url(), &checksum(&gz), None)).await;
    assert_failed(&r, "InvalidImage", &["gzip"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_fails_without_downloading() {
    let r = stage(spec("v2", "http://127.0.0.1:1/x", "sha256:nothex", None)).await;
    assert_failed(&r, "InvalidSpec", &["spec.image.checksum"]);
}

/// Network retries run out mid-download: Failed. A new retryNonce resumes the same
/// download with a Range request, and counts the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_nonce_resumes_an_exhausted_download_with_range() {
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| {
        s.faults.extend([
            Fault::Truncate(200_000),
            Fault::Status(503),
            Fault::Status(503),
            Fault::Status(503),
        ])
    });
    let node = Node::new(SLOT, "v1");
    let a = node.slot_hash(Slot::A);
    node.put(spec(
        "v2",
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ));
    let agent = node.spawn_agent();
    let st = node
        .wait_phase(&[ProgressPhase::Staged, ProgressPhase::Failed], T)
        .await;
    assert_eq!(
        st.failure_reason.as_deref(),
        Some("NetworkError"),
        "{st:#?}"
    );
    assert!(st.message.unwrap().contains("at byte 200000"));
    assert_eq!(st.bytes_done, Some(200_000));
    let before = srv.requests().len();

    node.edit(|s| s.retry_nonce = Some("retry-1".into()));
    let st = node.wait_phase(&[ProgressPhase::Staged], T).await;
    agent.abort();
    assert_eq!(st.retry_count, 1);
    assert_eq!(st.observed_retry_nonce.as_deref(), Some("retry-1"));
    assert_eq!(st.failure_reason, None);
    let reqs = srv.requests();
    assert_eq!(
        reqs[before..],
        [Some("bytes=200000-".to_string())],
        "{reqs:?}"
    );
    assert_eq!(&node.slot_bytes(Slot::B)[..img.len()], &img[..]);
    assert_eq!(node.slot_hash(Slot::A), a);
}

/// The installer on its own (as `osroll flash` uses it): the report accounts for what
/// happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installer_report_accounts_for_requests_and_resumes() {
    use osroll_agent::install::{Create, ImageSpec, Installer};
    let img = image();
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    srv.with(|s| s.faults.push_back(Fault::Reset(100_000)));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new.img");
    let spec = ImageSpec::new(&srv.url(), &checksum(&z), None).unwrap();
    let node = Node::new(SLOT, "v1");
    let mut inst = Installer::new(spec, &target, Create::Yes, node.config().install).unwrap();
    let r = inst.run().await.unwrap();
    assert_eq!(
        (r.downloaded, r.image_len),
        (z.len() as u64, img.len() as u64)
    );
    assert_eq!(r.sha256, checksum(&z));
    assert_eq!(r.requests, 2);
    assert_eq!(r.resumed_at.len(), 1);
    assert!(r.elapsed > Duration::ZERO);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        img,
        "a new file is created with exactly the image"
    );
    assert!(!inst.resumable(), "a finished install cannot run again");
    assert_eq!(inst.run().await.unwrap_err().reason(), "InvalidSpec");
}

/// Long runs of zeros are zeroed by the filesystem rather than written, over whatever the
/// slot held before, and a new file still ends exactly at the image's last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_runs_replace_old_slot_contents_and_end_a_new_file_at_the_image_size() {
    use osroll_agent::install::{Create, ImageSpec, InstallOptions, Installer};
    const MIB: usize = 1 << 20;
    let mut img = image_bytes("v2", 8 * MIB);
    img[MIB..4 * MIB].fill(0); // three whole 1 MiB blocks of zeros
    img[6 * MIB..].fill(0); // and the image ends in zeros
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = InstallOptions {
        buffer_size: MIB,
        ..InstallOptions::default()
    };
    // An inactive slot still holding an older image (here: 0xEE everywhere).
    let old = dir.path().join("slot-b");
    std::fs::write(&old, vec![0xEE; 10 * MIB]).unwrap();
    let new = dir.path().join("new.img");
    for (target, create) in [(&old, Create::No), (&new, Create::Yes)] {
        let spec = ImageSpec::new(&srv.url(), &checksum(&z), Some(img.len() as u64)).unwrap();
        let mut inst = Installer::new(spec, target, create, opts.clone()).unwrap();
        let r = inst.run().await.unwrap();
        let on_disk = std::fs::read(target).unwrap();
        assert_eq!(&on_disk[..img.len()], &img[..], "{}", target.display());
        // ZERO_RANGE is refused by some filesystems (the writer then writes the zeros);
        // wherever it is accepted, all five zero blocks went that way.
        assert!(
            r.zeroed == 5 * MIB as u64 || (r.zeroed == 0 && !zero_range_works(dir.path())),
            "zeroed {} bytes",
            r.zeroed
        );
        if create == Create::Yes {
            assert_eq!(on_disk.len(), img.len(), "a new file ends with the image");
        } else {
            assert_eq!(
                &on_disk[img.len()..],
                &[0xEE; 2 * MIB][..],
                "bytes past the image are untouched"
            );
        }
    }
    assert_eq!(srv.requests().len(), 2);
}

/// Whether this directory's filesystem accepts `FALLOC_FL_ZERO_RANGE`.
fn zero_range_works(dir: &std::path::Path) -> bool {
    let f = std::fs::File::create(dir.join("probe")).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::ZERO_RANGE, 0, 1 << 20).is_ok()
}
