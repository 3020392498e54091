//! c. Power cuts, on two disks of their own so that each of the tier's two VMs gets
//! about half of the boots: [`first`] takes cut 1 (while downloading) and the cold boot
//! after it; [`rest`] takes cuts 2 to 10 in order on one disk, so each of those starts
//! from the state the previous one left (cut 2 comes during the first staging of its
//! fresh disk, which needs nothing cut 1 leaves). After each cut the machine is
//! cold-booted and must reach a slot holding a complete image (its init reports slot and
//! version).
//!
//! Every trigger is something that must happen and cannot be passed unseen: a log line
//! the agent always prints (a transition is logged before it is saved), GRUB's or init's
//! line, bytes the agent publishes while the image server holds the download, a count
//! of the disk's logged writes and flushes (they only grow), or bytes read while reads
//! are throttled. Sampled progress phases (Writing, Verifying) are never waited for.
//!
//! What a cut loses. Killing qemu loses the guest's page cache and any request still
//! inside qemu (a throttled one); every write already handed to the host file survives
//! in the host's page cache, flushed or not ("kept"). A disk with a volatile cache may
//! lose what was not flushed: for the points marked "dropped" the disk is rebuilt from
//! the write log with only what the last completed flush covered ([`super::logwrites`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use osroll_api::ProgressPhase;
use serde_json::json;

use super::guest;
use super::image_server::Fault;
use super::logwrites::{self, LogTail};
use super::qemu::Boot;
use super::scenarios::{Env, phase_line};

const T: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

/// What the disk keeps of a cut.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Everything handed to qemu.
    Kept,
    /// Only what a completed flush covered.
    Dropped,
}

/// The disk under test, its write log, the copy taken at power-on, and the progress
/// (for v2, from the node's good image server) its agent follows.
struct Disk {
    path: PathBuf,
    log: PathBuf,
    at_power_on: PathBuf,
    progress: &'static str,
    lines: Vec<String>,
    /// When the chain started, and the node's boots before it.
    start: (Instant, usize),
}

impl Disk {
    /// A fresh copy of the base disk (v1 in slot A) and a new progress `name` for it.
    fn fresh(env: &mut Env, name: &'static str) -> Disk {
        let start = (Instant::now(), env.boots);
        let path = env.fresh_disk(name);
        env.progress(name, true, true);
        Disk {
            log: path.with_extension("log"),
            at_power_on: path.with_extension("power-on"),
            path,
            progress: name,
            lines: Vec::new(),
            start,
        }
    }

    /// The chain's report: its cut lines, then what it took.
    fn finish(mut self, env: &Env, which: &str) -> Vec<String> {
        let (t, boots) = self.start;
        let cuts = match self.lines.len() {
            1 => "1 cut point".to_string(),
            n => format!("{n} cut points"),
        };
        self.lines.push(format!(
            "c. {which} on node {}, a disk of its own: {cuts}, {} boots, {:.0?}",
            env.node,
            env.boots - boots,
            t.elapsed()
        ));
        self.lines
    }

    fn boot(&self, env: &mut Env) -> (Boot, LogTail) {
        std::fs::copy(&self.path, &self.at_power_on).unwrap();
        let b = env.boot(&self.path);
        let tail = LogTail::open(&self.log);
        (b, tail)
    }

    /// Pull the plug; for [`Loss::Dropped`] the disk keeps only what was flushed.
    fn cut(&mut self, b: &mut Boot, point: &str, loss: Loss) -> usize {
        b.cut();
        let what = match loss {
            Loss::Kept => "kept: all writes handed to qemu".to_string(),
            Loss::Dropped => {
                let r = logwrites::drop_unflushed(&self.at_power_on, &self.log, &self.path);
                format!(
                    "dropped: {} writes after the last flush lost, {} kept",
                    r.dropped, r.kept
                )
            }
        };
        self.lines.push(format!("c. cut {point} [{what}]"));
        self.lines.len() - 1
    }

    /// Append what the cut at line `i` led to.
    fn led_to(&mut self, i: usize, outcome: &str) {
        self.lines[i] += &format!(" -> {outcome}");
    }
}

/// Poll the write log until `done` holds for its entries.
fn wait_log(b: &Boot, tail: &mut LogTail, what: &str, done: impl Fn(&[logwrites::Entry]) -> bool) {
    let deadline = Instant::now() + T;
    while !done(tail.poll()) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {T:?}\n{}",
            b.tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn on_a() -> (String, String) {
    ("A".to_string(), "v1".to_string())
}

fn on_b() -> (String, String) {
    ("B".to_string(), "v2".to_string())
}

/// Cut 1, while downloading (the server holds the download after 1 MiB), then the cold
/// boot after it: the download starts again and the staging goes on to the armed
/// one-shot and the agent's reboot.
pub(crate) fn first(env: &mut Env) -> Vec<String> {
    let mut d = Disk::fresh(env, "cuts-1");
    env.good
        .with(|s| s.faults.push_back(Fault::Stall(MIB as usize)));
    let (mut b, _) = d.boot(env);
    assert_eq!(env.up(&b), on_a());
    env.wait_status(d.progress, T, |s| {
        s.bytes_done.unwrap_or(0) > 0 && s.phase == Some(ProgressPhase::Downloading)
    });
    let p = d.cut(
        &mut b,
        "while downloading (1 MiB in, server holding)",
        Loss::Kept,
    );
    env.good.with(|s| s.faults.clear());

    let (mut b, mut log) = d.boot(env);
    assert_eq!(env.up(&b), on_a());
    let (b_start, b_end, image) = slot_b(env);
    wait_log(&b, &mut log, "all of slot B written", |e| {
        logwrites::covered(e, b_start, b_end) >= image
    });
    b.wait_for(&phase_line("Rebooting"), T);
    b.wait_exit(T);
    d.led_to(
        p,
        "A/v1, download started again, slot B written, staged and armed B",
    );
    d.finish(env, "cut 1")
}

/// Where slot B's image goes on the disk: its first and end offsets, and its size.
fn slot_b(env: &Env) -> (u64, u64, u64) {
    let image = std::fs::metadata(&env.art.v2).unwrap().len();
    let b_start = guest::offset("osroll-b");
    (b_start, b_start + image, image)
}

/// Cuts 2 to 10 in order on one disk.
pub(crate) fn rest(env: &mut Env) -> Vec<String> {
    let mut d = Disk::fresh(env, "cuts-2");
    let (b_start, b_end, image) = slot_b(env);
    let on_a = on_a();
    let on_b = on_b();

    // 2. While writing slot B, in the fresh disk's first staging: half of the image's
    // range written.
    let (mut b, mut log) = d.boot(env);
    assert_eq!(env.up(&b), on_a);
    wait_log(&b, &mut log, "half of slot B written", |e| {
        logwrites::covered(e, b_start, b_end) >= image / 2
    });
    let p = d.cut(&mut b, "while writing slot B (half written)", Loss::Dropped);
    // 3. Around fsync: all of slot B written, cut before or as its flush arrives.
    let (mut b, mut log) = d.boot(env);
    assert_eq!(env.up(&b), on_a);
    d.led_to(p, "A/v1, slot B written again");
    wait_log(&b, &mut log, "all of slot B written", |e| {
        logwrites::covered(e, b_start, b_end) >= image
    });
    let p = d.cut(&mut b, "slot B written, at its fsync", Loss::Dropped);

    // 4. Reading slot B back: after the flush that follows the writes, reads are
    // throttled so the read-back is under way when the cut comes.
    let (mut b, mut log) = d.boot(env);
    assert_eq!(env.up(&b), on_a);
    d.led_to(p, "A/v1, slot B written again and flushed");
    wait_log(&b, &mut log, "slot B written and flushed", |e| {
        logwrites::flush_after(e, b_start, b_end, image)
    });
    b.throttle(MIB, 0);
    let from = b.stats().rd_bytes;
    b.wait_stats("slot B being read back", T, |s| {
        s.rd_bytes >= from + 2 * MIB
    });
    let p = d.cut(
        &mut b,
        "reading slot B back (2 MiB read, reads throttled)",
        Loss::Kept,
    );

    arm_and_try(env, &mut d, p, &on_a);
    commit(env, &mut d, &on_b);
    d.finish(env, "cuts 2 to 10")
}

/// 5.-6.: the one-shot armed, B's first boot, the fallback.
fn arm_and_try(env: &mut Env, d: &mut Disk, p: usize, on_a: &(String, String)) {
    // 5. Right after arming the one-shot (the GRUB env written and synced, then logged).
    let (mut b, _) = d.boot(env);
    assert_eq!(&env.up(&b), on_a);
    d.led_to(p, "A/v1, staged and armed B");
    b.wait_for(&phase_line("Rebooting"), T);
    let p = d.cut(&mut b, "right after arming the one-shot", Loss::Dropped);

    // 6. B's first boot, once GRUB chose B, before anything committed.
    let (mut b, _) = d.boot(env);
    b.wait_for("osroll: booting slot B", T);
    d.led_to(p, "GRUB tried B once, as after a reboot");
    let p = d.cut(&mut b, "during B's first boot, before commit", Loss::Kept);

    // Back on A: the try is spent. Where the agent's Rebooting was saved it reports
    // RolledBack and a new retryNonce stages again; else it arms again.
    let (mut b, _) = d.boot(env);
    assert_eq!(&env.up(&b), on_a, "GRUB fell back to A");
    let (agent, _) = b.wait_for("agent started", T);
    let rb = phase_line("RolledBack");
    let (_, line) = b.wait_any(&[&phase_line("Rebooting"), &rb], T, agent);
    if line.contains(&rb) {
        let st = env.wait_phase(d.progress, ProgressPhase::RolledBack, T);
        d.led_to(
            p,
            &format!(
                "GRUB fell back to A/v1, RolledBack ({}); a new retryNonce staged again",
                st.failure_reason.unwrap_or_default()
            ),
        );
        env.patch_spec(d.progress, json!({ "retryNonce": "after-cut" }));
        b.wait_any(&[&phase_line("Rebooting")], T, agent);
    } else {
        d.led_to(
            p,
            "GRUB fell back to A/v1; the agent's state predated the arm, so it armed B again",
        );
    }
    b.wait_exit(T);
}

/// 7.-10.: the commit's GRUB env write, right after commit, later boots.
fn commit(env: &mut Env, d: &mut Disk, on_b: &(String, String)) {
    // 7. B's first boot: the commit's GRUB env write, handed to the disk.
    let (mut b, mut log) = d.boot(env);
    b.wait_for("osroll: booting slot B", T);
    assert_eq!(&env.up(&b), on_b);
    let (boot_start, boot_len) = (guest::offset("boot"), guest::PARTS[1].2 * MIB);
    b.wait_for("agent started", T);
    let seen = log.poll().len();
    wait_log(
        &b,
        &mut log,
        "the commit's write to the boot partition",
        |e| logwrites::covered(&e[seen..], boot_start, boot_start + boot_len) > 0,
    );
    let p = d.cut(&mut b, "writing the commit to the GRUB env", Loss::Kept);

    // 8. Right after commit.
    let (mut b, _) = d.boot(env);
    assert_eq!(&env.up(&b), on_b, "the commit's write was kept");
    d.led_to(p, "B/v2 (the write was kept), committed again");
    b.wait_for(&phase_line("Completed"), T);
    let p = d.cut(
        &mut b,
        "right after commit (Completed logged)",
        Loss::Dropped,
    );

    // 9. The next boot, as the agent starts.
    let (mut b, _) = d.boot(env);
    assert_eq!(&env.up(&b), on_b, "the commit survived the cut");
    d.led_to(p, "B/v2");
    b.wait_for("agent started", T);
    let p = d.cut(
        &mut b,
        "second boot after commit, as the agent starts",
        Loss::Dropped,
    );

    // 10. A later boot, in GRUB, before the kernel runs.
    let (mut b, _) = d.boot(env);
    b.wait_for("osroll: booting slot B", T);
    d.led_to(p, "B/v2");
    let p = d.cut(
        &mut b,
        "a later boot, in GRUB before the kernel",
        Loss::Kept,
    );

    let (mut b, _) = d.boot(env);
    assert_eq!(&env.up(&b), on_b);
    let st = env.wait_phase(d.progress, ProgressPhase::Completed, T);
    assert_eq!(st.current_version.as_deref(), Some("v2"));
    b.cut();
    d.led_to(p, "B/v2, Completed");
}
