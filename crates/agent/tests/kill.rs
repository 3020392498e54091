//! The kill test: the agent, as a separate process, is SIGKILLed at 20 random instants
//! spread over staging and switching, restarted each time (and the simulated node
//! "powered on" whenever the agent had asked for a reboot), and must always reach the
//! same final state: Completed on slot B with the new version, exactly one reboot, the
//! old slot untouched.
//!
//! Before the random kills, a deterministic sweep kills the agent right before and
//! right after each side effect of the switching half (status publishes, node labels,
//! boot-control writes, the reboot request; see `common/crash.rs`). Its "before the
//! Completed publish" case is the hang once seen under heavy load: the agent had
//! committed and saved Completed locally, was killed before publishing it, and the next
//! agent never republished a finished progress, so the status stayed Rebooting.
//!
//! Every scenario has a deadline ([`DEADLINE`]) after which the test fails with the
//! status and the agents' log; a watchdog bounds the whole test; agents die with it.
//!
//! A custom harness (`harness = false`): the same binary is the test and, with
//! `OSROLL_KILL_CHILD` set, the agent process under test.

#[path = "common/crash.rs"]
mod crash;
#[path = "common/server.rs"]
mod server;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osroll_agent::install::{InstallOptions, RetryPolicy};
use osroll_agent::simhost::image_bytes;
use osroll_agent::source::file::FileSource;
use osroll_agent::{AgentConfig, AgentExit, SimHost, Slot};
use osroll_api::{
    ImageRef, OSUpgradeProgress, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase,
};
use sha2::{Digest, Sha256};

const NODE: &str = "node-1";
const NAME: &str = "osupgrade-kill";
const SLOT: u64 = 8 << 20;
const KILLS: usize = 20;
/// Longest one scenario may take before the test fails (instead of hanging).
const DEADLINE: Duration = Duration::from_secs(60);
/// Longest the whole test may take: a watchdog ends it with a message after that, in
/// case something outside the scenario loops ever blocks.
const TOTAL_DEADLINE: Duration = Duration::from_secs(600);

fn main() {
    if let Ok(dir) = std::env::var("OSROLL_KILL_CHILD") {
        std::process::exit(child(std::path::Path::new(&dir)));
    }
    // Honour a name filter from `cargo test <filter>`: run only if it could mean us.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        println!("kill_at_random_points_always_converges: test");
        return;
    }
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| "kill_at_random_points_always_converges".contains(f.as_str()))
    {
        return;
    }
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            watchdog.recv_timeout(TOTAL_DEADLINE)
        {
            eprintln!(
                "kill test: still running after {TOTAL_DEADLINE:?}; giving up (agents die with this process)"
            );
            std::process::exit(1);
        }
    });
    parent();
    drop(done);
    println!("test kill_at_random_points_always_converges ... ok");
}

/// The agent process: one node in `dir` (host/, progress/, state/).
fn child(dir: &std::path::Path) -> i32 {
    // An agent never outlives the test: SIGKILL when the test process goes away.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .expect("PR_SET_PDEATHSIG");
    let parent = std::env::var("OSROLL_KILL_PARENT").ok();
    if parent != Some(std::os::unix::process::parent_id().to_string()) {
        return 2; // the test died before the line above took effect
    }
    // Each agent appends its log to <dir>/agent.log, shown if the test fails.
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
    {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("osroll_agent=debug"))
            .with_writer(std::sync::Mutex::new(log))
            .with_ansi(false)
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plan = std::env::var("OSROLL_KILL_EFFECT")
        .ok()
        .and_then(|p| crash::Plan::parse(&p));
    let fx = crash::Effects::new(dir, plan);
    let host = crash::CrashHost::new(
        SimHost::open(&dir.join("host")).expect("simulated node"),
        fx.clone(),
    );
    let mut cfg = AgentConfig::new(NODE, dir.join("state"));
    cfg.install = InstallOptions {
        stall_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_attempts: 20,
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        buffer_size: 256 * 1024,
        ..InstallOptions::default()
    };
    cfg.resync = Duration::from_millis(100);
    cfg.error_backoff = Duration::from_millis(20);
    cfg.progress_interval = Duration::from_millis(5);
    let source = crash::CrashSource::new(
        FileSource::new(&dir.join("progress"), NODE, Duration::from_millis(5)),
        fx,
    );
    match rt.block_on(osroll_agent::run_with_source(cfg, source, Arc::new(host))) {
        Ok(AgentExit::Rebooted) => 0,
        Err(e) => {
            eprintln!("agent failed: {e:#}");
            1
        }
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// What must be identical after every run (timestamps excluded).
#[derive(Debug, PartialEq)]
struct Final {
    phase: Option<ProgressPhase>,
    current: Option<String>,
    target: Option<String>,
    retry_count: u32,
    inactive: Option<String>,
    failure: Option<String>,
    conditions: Vec<(String, String)>,
    booted: Slot,
    default: Option<Slot>,
    armed: Option<Slot>,
    boots: u64,
    slot_a: String,
    slot_b_image: String,
}

/// An agent process, killed if the test ends early (a panic must not leave it running).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    dir: tempfile::TempDir,
    host: SimHost,
}

impl World {
    fn new(url: &str, checksum: &str, size: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let host = SimHost::create(&dir.path().join("host"), SLOT, "v1").unwrap();
        std::fs::create_dir_all(dir.path().join("progress")).unwrap();
        let spec = OSUpgradeProgressSpec {
            node_name: NODE.into(),
            image: Some(ImageRef {
                version: "v2".into(),
                url: url.into(),
                checksum: checksum.into(),
                size: Some(size),
                reboot_required: None,
                chunk_index: None,
            }),
            reboot_approved: true,
            allow_http_images: true,
            ..Default::default()
        };
        FileSource::write_progress(
            &dir.path().join("progress"),
            &OSUpgradeProgress::new(NAME, spec),
        )
        .unwrap();
        World { dir, host }
    }

    fn spawn(&self, plan: Option<crash::Plan>) -> Agent {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        if let Some(p) = plan {
            cmd.env("OSROLL_KILL_EFFECT", p.encode());
        }
        Agent(
            cmd.env("OSROLL_KILL_CHILD", self.dir.path())
                .env("OSROLL_KILL_PARENT", std::process::id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }

    fn status(&self) -> Option<OSUpgradeProgressStatus> {
        FileSource::read_status(&self.dir.path().join("progress"), NAME)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn snapshot(&self, image_len: usize) -> Final {
        let s = self.status().unwrap_or_default();
        let env = osroll_agent::boot::BootControl::read(self.host.boot_env()).unwrap();
        let b = std::fs::read(self.host.slot_file(Slot::B)).unwrap();
        Final {
            phase: s.phase,
            current: s.current_version,
            target: s.target_version,
            retry_count: s.retry_count,
            inactive: s.inactive_partition,
            failure: s.failure_reason,
            conditions: s
                .conditions
                .into_iter()
                .map(|c| (c.type_, c.status))
                .collect(),
            booted: self.host.booted_slot().unwrap(),
            default: env.default,
            armed: env.try_next,
            boots: self.host.boot_count().unwrap(),
            slot_a: sha(&std::fs::read(self.host.slot_file(Slot::A)).unwrap()),
            slot_b_image: sha(&b[..image_len]),
        }
    }

    /// Run agents until the progress is finished, killing the agent once as `kill`
    /// says. Returns the time to converge, when staging completed, and what the kill
    /// interrupted. Fails (never hangs) after `DEADLINE`, showing the agents' log.
    fn run(&self, kill: Kill) -> (Duration, Option<Duration>, Option<String>) {
        let start = Instant::now();
        let deadline = start + DEADLINE;
        let mut staged_at = None;
        let mut killed = None;
        let mut pending_kill = match kill {
            Kill::At(anchor, d) => Some((anchor, d)),
            _ => None,
        };
        let plan = match kill {
            Kill::Effect(p) => Some(p),
            _ => None,
        };
        loop {
            assert!(
                Instant::now() < deadline,
                "no convergence within {DEADLINE:?} (kill {kill:?}, {killed:?}): {:#?}\nagent log:\n{}",
                self.status(),
                self.log()
            );
            let mut agent = self.spawn(plan);
            let child = &mut agent.0;
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break Some(st);
                }
                let phase = self.status().and_then(|s| s.phase);
                if staged_at.is_none()
                    && matches!(
                        phase,
                        Some(
                            ProgressPhase::Staged
                                | ProgressPhase::Rebooting
                                | ProgressPhase::Completed
                        )
                    )
                {
                    staged_at = Some(start.elapsed());
                }
                let crashed = crash::Effects::crashed(self.dir.path());
                // A planned crash right after the final publish is still to come.
                if phase.is_some_and(ProgressPhase::is_terminal)
                    && (plan.is_none() || crashed.is_some())
                {
                    // The agent idles after the end; it has nothing left to do.
                    let missed = pending_kill.map(|_| "after the end".to_string());
                    return (start.elapsed(), staged_at, killed.or(missed).or(crashed));
                }
                let due = match pending_kill {
                    Some((Anchor::Start, d)) => start.elapsed() >= d,
                    Some((Anchor::Staged, d)) => {
                        staged_at.is_some_and(|t| start.elapsed() >= t + d)
                    }
                    None => false,
                };
                if due {
                    pending_kill = None;
                    let reboot = if self.host.reboot_requested() {
                        " (reboot requested)"
                    } else {
                        ""
                    };
                    child.kill().unwrap();
                    child.wait().unwrap();
                    killed = Some(format!(
                        "{phase:?}{reboot} boot {}",
                        self.host.boot_count().unwrap()
                    ));
                    break None;
                }
                assert!(
                    Instant::now() < deadline,
                    "agent did not finish within {DEADLINE:?} (kill {kill:?}, {killed:?}): {:#?}\nagent log:\n{}",
                    self.status(),
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(1));
            };
            if let Some(st) = status {
                // Exit 0 is a simulated reboot; SIGKILL is a planned crash.
                let planned =
                    st.signal() == Some(9) && crash::Effects::crashed(self.dir.path()).is_some();
                assert!(
                    st.success() || planned,
                    "agent exited with {st}\nagent log:\n{}",
                    self.log()
                );
            }
            if self.host.reboot_requested() {
                self.host.boot().unwrap();
            }
        }
    }
}

/// How the agent is killed in one run.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Not at all (the reference run).
    Never,
    /// At a time after an anchor.
    At(Anchor, Duration),
    /// Around one of its side effects.
    Effect(crash::Plan),
}

/// What a kill time is measured from.
#[derive(Clone, Copy, Debug)]
enum Anchor {
    /// The start of the upgrade.
    Start,
    /// The moment the image was staged (the switching half).
    Staged,
}

fn parent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let img = image_bytes("v2", 1 << 20);
    let z = zstd::encode_all(&img[..], 3).unwrap();
    let checksum = format!("sha256:{}", sha(&z));
    let srv = rt.block_on(server::ImageServer::start(z));
    let url = srv.url();

    // A run without kills defines the expected final state and the time span to kill in.
    let reference = World::new(&url, &checksum, img.len() as u64);
    let a_before = sha(&std::fs::read(reference.host.slot_file(Slot::A)).unwrap());
    let (span, staged, _) = reference.run(Kill::Never);
    let staged = staged.expect("reference run staged");
    let expected = reference.snapshot(img.len());
    assert_eq!(
        expected.phase,
        Some(ProgressPhase::Completed),
        "{expected:#?}"
    );
    assert_eq!(
        (expected.booted, expected.default, expected.armed),
        (Slot::B, Some(Slot::B), None)
    );
    assert_eq!(expected.boots, 2);
    assert_eq!(expected.slot_a, a_before);
    assert_eq!(expected.slot_b_image, sha(&img));
    eprintln!("kill test: an uninterrupted upgrade stages in {staged:?} and completes in {span:?}");

    // Every boundary of the switching half, deterministically: the agent is killed
    // right before and right after each of its side effects (status publishes, node
    // labels, boot-control writes, the reboot request), whatever the machine's speed.
    let effects = crash::Effects::recorded(reference.dir.path());
    assert!(
        effects.iter().any(|e| e == "reboot") && effects.iter().any(|e| e.starts_with("commit")),
        "the reference run's switching effects: {effects:?}"
    );
    eprintln!("kill test: switching effects {effects:?}");
    for at in 1..=effects.len() {
        for after in [false, true] {
            let plan = crash::Plan { at, after };
            let world = World::new(&url, &checksum, img.len() as u64);
            let (took, _, hit) = world.run(Kill::Effect(plan));
            eprintln!(
                "kill at effect {}: {hit:?}, converged after {took:?}",
                plan.encode()
            );
            let got = world.snapshot(img.len());
            assert_eq!(
                got,
                expected,
                "kill {} ({hit:?}) ended differently\nagent log:\n{}",
                plan.encode(),
                world.log()
            );
        }
    }

    // Half the kills land in staging, half in switching; each at a random instant of its
    // twentieth of the half (stratified, so they spread over the whole half).
    let half = KILLS / 2;
    let mut hits = Vec::new();
    for i in 0..KILLS {
        let (anchor, len, j) = if i < half {
            (Anchor::Start, staged, i)
        } else {
            (Anchor::Staged, (span - staged).mul_f64(0.9), i - half)
        };
        let at = len.mul_f64((j as f64 + rand::random::<f64>()) / half as f64);
        let world = World::new(&url, &checksum, img.len() as u64);
        let (took, _, hit) = world.run(Kill::At(anchor, at));
        eprintln!("kill #{i} at {anchor:?}+{at:?}: {hit:?}, converged after {took:?}");
        let got = world.snapshot(img.len());
        assert_eq!(
            got, expected,
            "kill #{i} at {anchor:?}+{at:?} ({hit:?}) ended differently"
        );
        hits.push(hit.unwrap_or_else(|| "no kill".into()));
    }
    let staging = ["None", "Pending", "Downloading", "Writing", "Verifying"];
    let in_staging = hits
        .iter()
        .filter(|h| staging.iter().any(|p| h.contains(p)))
        .count();
    let in_switching = hits
        .iter()
        .filter(|h| h.contains("Staged") || h.contains("Rebooting"))
        .count();
    eprintln!(
        "kill test: {in_staging} kills during staging, {in_switching} during switching: {hits:#?}"
    );
    assert!(
        in_staging > 0 && in_switching > 0,
        "kills should hit both staging and switching: {hits:?}"
    );
}
