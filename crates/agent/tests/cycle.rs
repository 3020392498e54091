//! Whole upgrades on a simulated node: stage, wait for approval, arm the one-shot boot,
//! "reboot" (the agent returns, the test powers the node on with `SimHost::boot` and
//! starts a new agent), then commit — or roll back when the new slot fails to boot.

mod common;

use std::time::{Duration, Instant};

use common::server::ImageServer;
use common::*;
use osroll_agent::boot::{BootControl, BootState};
use osroll_agent::simhost::image_bytes;
use osroll_agent::source::file::FileSource;
use osroll_agent::{AgentExit, Slot};
use osroll_api::conditions::find;
use osroll_api::{OSUpgradeProgress, ProgressPhase};

const SLOT: u64 = 2 << 20;
const T: Duration = Duration::from_secs(20);

async fn exits_rebooted(agent: tokio::task::JoinHandle<anyhow::Result<AgentExit>>) {
    let exit = tokio::time::timeout(T, agent)
        .await
        .expect("agent returns after a simulated reboot");
    assert_eq!(exit.unwrap().unwrap(), AgentExit::Rebooted);
}

fn labels(node: &Node) -> String {
    std::fs::read_to_string(node.progress_dir().join("node-labels.json")).unwrap()
}

async fn staged_node(version: &str) -> (Node, ImageServer, Vec<u8>) {
    let img = image_bytes(version, 1 << 20);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let node = Node::new(SLOT, "v1");
    node.put(spec(
        version,
        &srv.url(),
        &checksum(&z),
        Some(img.len() as u64),
    ));
    (node, srv, img)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_waits_for_approval_reboots_once_and_commits() {
    let (node, srv, img) = staged_node("v2").await;
    let a = node.slot_hash(Slot::A);
    let agent = node.spawn_agent();
    node.wait_phase(&[ProgressPhase::Staged], T).await;

    // Without approval nothing is armed and no reboot is asked for, however long we look.
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        assert!(!node.host.reboot_requested());
        assert_eq!(node.phase(), Some(ProgressPhase::Staged));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.host.boot_env().read().unwrap().try_next, None);

    node.edit(|s| s.reboot_approved = true);
    exits_rebooted(agent).await;
    let st = node.status().unwrap();
    assert_eq!(st.phase, Some(ProgressPhase::Rebooting));
    assert_eq!(
        node.host.boot_env().read().unwrap(),
        BootState {
            default: Some(Slot::A),
            try_next: Some(Slot::B)
        }
    );

    let boot = node.host.boot().unwrap();
    assert_eq!((boot.slot, boot.version.as_deref()), (Slot::B, Some("v2")));
    let agent = node.spawn_agent();
    let st = node
        .wait_phase(&[ProgressPhase::Completed, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:#?}");
    assert_eq!(st.current_version.as_deref(), Some("v2"));
    assert!(st.completed_at.is_some());
    assert!(find(&st.conditions, "Booted").unwrap().is_true());
    assert_eq!(
        node.host.boot_env().read().unwrap(),
        BootState {
            default: Some(Slot::B),
            try_next: None
        }
    );
    assert_eq!(node.host.boot_count().unwrap(), 2, "exactly one reboot");
    let l = labels(&node);
    assert!(
        l.contains("\"osroll.io/os-version\": \"v2\"") && l.contains("\"osroll.io/slot\": \"B\""),
        "{l}"
    );
    assert_eq!(&node.slot_bytes(Slot::B)[..img.len()], &img[..]);
    assert_eq!(
        node.slot_hash(Slot::A),
        a,
        "the old slot stays as it was, for the next upgrade"
    );
    assert_eq!(srv.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_boot_rolls_back_and_is_not_retried_until_the_nonce_changes() {
    let (node, srv, _) = staged_node("v2").await;
    node.edit(|s| s.reboot_approved = true);
    let agent = node.spawn_agent();
    exits_rebooted(agent).await;
    node.host.fail_next_boot(Slot::B).unwrap();
    let boot = node.host.boot().unwrap();
    assert!(boot.fell_back);

    let agent = node.spawn_agent();
    let st = node
        .wait_phase(
            &[
                ProgressPhase::RolledBack,
                ProgressPhase::Completed,
                ProgressPhase::Failed,
            ],
            T,
        )
        .await;
    assert_eq!(st.phase, Some(ProgressPhase::RolledBack), "{st:#?}");
    assert_eq!(st.failure_reason.as_deref(), Some("BootFallback"));
    let msg = st.message.clone().unwrap();
    assert!(
        msg.contains("slot B") && msg.contains("retryNonce"),
        "{msg}"
    );
    assert!(find(&st.conditions, "Failed").unwrap().is_true());
    assert_eq!(
        node.host.boot_env().read().unwrap(),
        BootState {
            default: Some(Slot::A),
            try_next: None
        }
    );
    assert_eq!(node.host.boot_count().unwrap(), 2);

    // A second progress for the same version (same nonce) is refused, not attempted.
    let mut other = OSUpgradeProgress::new(
        "osupgrade-second",
        spec(
            "v2",
            &srv.url(),
            &checksum(&zstd(&image_bytes("v2", 1 << 20))),
            Some(1 << 20),
        ),
    );
    other.spec.reboot_approved = true;
    FileSource::write_progress(&node.progress_dir(), &other).unwrap();
    let second = eventually(T, "second progress refused", || {
        FileSource::read_status(&node.progress_dir(), "osupgrade-second")
            .filter(|s| s.phase == Some(ProgressPhase::RolledBack))
    })
    .await;
    assert_eq!(
        second.failure_reason.as_deref(),
        Some("PreviouslyRolledBack")
    );
    assert_eq!(srv.requests().len(), 1, "nothing downloaded again");
    std::fs::remove_file(node.progress_dir().join("osupgrade-second.json")).unwrap();

    // A new nonce: a new attempt, counted, which this time boots.
    node.edit(|s| s.retry_nonce = Some("retry-1".into()));
    exits_rebooted(agent).await;
    assert_eq!(node.host.boot().unwrap().slot, Slot::B);
    let agent = node.spawn_agent();
    let st = node
        .wait_phase(
            &[
                ProgressPhase::Completed,
                ProgressPhase::Failed,
                ProgressPhase::RolledBack,
            ],
            T,
        )
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:#?}");
    assert_eq!(
        (st.retry_count, st.observed_retry_nonce.as_deref()),
        (1, Some("retry-1"))
    );
    assert_eq!(node.host.boot_env().read().unwrap().default, Some(Slot::B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_already_running_the_target_completes_without_writing() {
    let node = Node::new(SLOT, "v2");
    let b = node.slot_hash(Slot::B);
    node.put(spec(
        "v2",
        "http://127.0.0.1:1/unused",
        &checksum(b"x"),
        None,
    ));
    let agent = node.spawn_agent();
    let st = node
        .wait_phase(&[ProgressPhase::Completed, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:#?}");
    assert!(st.message.unwrap().contains("already runs v2"));
    assert_eq!(node.slot_hash(Slot::B), b);
    assert_eq!(node.host.boot_count().unwrap(), 1);
}

/// The agent writes its local state before the status: if the API missed a write (the
/// agent died in between, or the server was down), the next agent publishes it again
/// instead of redoing the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lost_by_the_api_is_republished_from_local_state() {
    let (node, srv, _) = staged_node("v2").await;
    let agent = node.spawn_agent();
    let staged = node.wait_phase(&[ProgressPhase::Staged], T).await;
    agent.abort();
    let _ = agent.await;
    let mut old = staged.clone();
    old.phase = Some(ProgressPhase::Downloading);
    let status_file = FileSource::status_path(&node.progress_dir(), PROGRESS);
    std::fs::write(&status_file, serde_json::to_vec(&old).unwrap()).unwrap();

    let agent = node.spawn_agent();
    let st = node.wait_phase(&[ProgressPhase::Staged], T).await;
    agent.abort();
    assert_eq!(st, staged);
    assert_eq!(srv.requests().len(), 1, "not downloaded again");
}

/// A changed image in the spec while staged starts over with the new target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_target_while_staged_restages() {
    let (node, _srv, _) = staged_node("v2").await;
    let agent = node.spawn_agent();
    node.wait_phase(&[ProgressPhase::Staged], T).await;
    let img3 = image_bytes("v3", 1 << 20);
    let srv3 = ImageServer::start(img3.clone()).await;
    node.edit(|s| s.image = spec("v3", &srv3.url(), &checksum(&img3), None).image);
    let st = eventually(T, "v3 staged", || {
        node.status().filter(|s| {
            s.target_version.as_deref() == Some("v3") && s.phase == Some(ProgressPhase::Staged)
        })
    })
    .await;
    agent.abort();
    assert_eq!(st.retry_count, 0);
    assert_eq!(&node.slot_bytes(Slot::B)[..img3.len()], &img3[..]);
}

/// The progress is deleted while the node reboots into the new slot: the agent does not
/// leave the node on an uncommitted slot that the next reboot would silently undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deleted_during_the_reboot_still_commits_the_running_slot() {
    let (node, _srv, _) = staged_node("v2").await;
    node.edit(|s| s.reboot_approved = true);
    exits_rebooted(node.spawn_agent()).await;
    std::fs::remove_file(node.progress_dir().join(format!("{PROGRESS}.json"))).unwrap();
    assert_eq!(node.host.boot().unwrap().slot, Slot::B);
    let agent = node.spawn_agent();
    eventually(T, "slot B committed", || {
        (node.host.boot_env().read().unwrap()
            == BootState {
                default: Some(Slot::B),
                try_next: None,
            })
        .then_some(())
    })
    .await;
    agent.abort();
}

/// Deleted after the try was armed but before the reboot happened: the try is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deleted_before_the_reboot_disarms_the_try() {
    let (node, _srv, _) = staged_node("v2").await;
    node.edit(|s| s.reboot_approved = true);
    exits_rebooted(node.spawn_agent()).await;
    assert_eq!(node.host.boot_env().read().unwrap().try_next, Some(Slot::B));
    // The reboot has not happened (no SimHost::boot): same boot id.
    std::fs::remove_file(node.progress_dir().join(format!("{PROGRESS}.json"))).unwrap();
    let agent = node.spawn_agent();
    eventually(T, "try disarmed", || {
        (node.host.boot_env().read().unwrap().try_next.is_none()).then_some(())
    })
    .await;
    agent.abort();
    assert_eq!(node.host.boot_env().read().unwrap().default, Some(Slot::A));
}

/// Same after the last transition: a Completed the API never heard of is published even
/// though nothing is left to do (found by the kill test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_status_lost_by_the_api_is_republished() {
    let node = Node::new(SLOT, "v2");
    node.put(spec(
        "v2",
        "http://127.0.0.1:1/unused",
        &checksum(b"x"),
        None,
    ));
    let agent = node.spawn_agent();
    let done = node.wait_phase(&[ProgressPhase::Completed], T).await;
    agent.abort();
    let _ = agent.await;
    let mut stale = done.clone();
    stale.phase = Some(ProgressPhase::Rebooting);
    std::fs::write(
        FileSource::status_path(&node.progress_dir(), PROGRESS),
        serde_json::to_vec(&stale).unwrap(),
    )
    .unwrap();
    let agent = node.spawn_agent();
    let st = node.wait_phase(&[ProgressPhase::Completed], T).await;
    agent.abort();
    assert_eq!(st, done);
}
