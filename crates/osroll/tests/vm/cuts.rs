//! c. Power cuts: qemu is SIGKILLed at points found by what the guest prints (agent log
//! lines, GRUB's line, init's line) or the agent publishes (bytes downloaded), then the
//! machine is cold-booted. One disk goes through all points in order, so each cut starts
//! from the state the previous one left. Killing qemu loses the guest's page cache and
//! anything not yet handed to the virtual disk; writes qemu already passed to the host
//! file survive in the host's page cache (cache=writeback), so a missing disk flush
//! would go unnoticed here: every point below is of that kind.

use std::time::Duration;

use osroll_api::ProgressPhase;
use serde_json::json;

use super::image_server::Fault;
use super::scenarios::{Env, phase_line};

const T: Duration = Duration::from_secs(120);

pub(crate) fn run(env: &mut Env) -> Vec<String> {
    let t = std::time::Instant::now();
    let disk = env.fresh_disk("cuts");
    env.progress("cuts", true, true);
    let mut out = Vec::new();
    let mut note = |point: &str, led: &str| out.push(format!("c. cut {point} -> {led}"));

    // 1. While downloading: the server stalls after 3 MiB; cut once bytes are published.
    env.good.with(|s| s.faults.push_back(Fault::Stall(3 << 20)));
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    b.wait_for(&phase_line("Downloading"), T);
    env.wait_status("cuts", T, |s| {
        s.bytes_done.unwrap_or(0) > 0 && s.phase == Some(ProgressPhase::Downloading)
    });
    b.cut();
    env.good.with(|s| s.faults.clear());

    // 2. Download complete, slot being flushed (around fsync).
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    note(
        "while downloading (3 MiB in, server stalled)",
        "cold boot on A/v1, download restarted",
    );
    b.wait_for(&phase_line("Writing"), T);
    b.cut();

    // 3. Reading the slot back.
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    note(
        "download complete, flushing slot B (around fsync)",
        "cold boot on A/v1, staged again",
    );
    b.wait_for(&phase_line("Verifying"), T);
    b.cut();

    // 4. Right after arming the one-shot, before the agent's reboot(2).
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    note(
        "reading slot B back (Verifying)",
        "cold boot on A/v1, staged again",
    );
    b.wait_for(&phase_line("Rebooting"), T);
    b.cut();

    // 5. B's first boot, after GRUB consumed the try, before anything committed.
    let mut b = env.boot(&disk);
    b.wait_for("osroll: booting slot B", T);
    note(
        "right after arming the one-shot",
        "the cold boot tried B once, as a reboot would",
    );
    b.cut();

    // Back on A: the try is spent. Where the agent had recorded the reboot it reports
    // RolledBack (a new nonce retries); where the cut came between arming and saving
    // its state (the log line precedes the save), it arms again.
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    let rb = phase_line("RolledBack");
    let (_, line) = b.wait_any(&[&phase_line("Rebooting"), &rb], T, 0);
    if line.contains(&rb) {
        let st = env.wait_phase("cuts", ProgressPhase::RolledBack, T);
        note(
            "during B's first boot before commit (GRUB had booted B)",
            &format!(
                "GRUB fell back to A/v1, RolledBack ({}); retried with a new retryNonce",
                st.failure_reason.unwrap_or_default()
            ),
        );
        env.patch_spec("cuts", json!({ "retryNonce": "after-cut" }));
        b.wait_for(&phase_line("Rebooting"), T);
    } else {
        note(
            "during B's first boot before commit (GRUB had booted B)",
            "GRUB fell back to A/v1; the agent's state predated the arm, so it armed B again",
        );
    }
    b.wait_exit(T);

    // 6. Right after commit.
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("B".into(), "v2".into()));
    b.wait_for(&phase_line("Completed"), T);
    b.cut();
    let mut b = env.boot(&disk);
    assert_eq!(
        env.up(&b),
        ("B".into(), "v2".into()),
        "the commit survived the cut"
    );
    env.wait_phase("cuts", ProgressPhase::Completed, T);
    b.cut();
    note("right after commit", "cold boot on B/v2, Completed");
    out.push(format!("c. 6 cut points in {:.0?}", t.elapsed()));
    out
}
