//! The security review's findings against the agent, each replayed through the real agent
//! loop on a simulated node (issue 17): whoever can write a progress object, but not sign
//! a catalog, must not choose what a node installs or boots.
//!
//! * an edited OSTree reference and an edited plugin payload (`osVersionManagement`
//!   outside the signed entry) are refused before the host tool runs;
//! * a version the signed catalog blocks, and a downgrade the spec does not allow;
//! * a catalog with an older serial than one accepted, and an expired one;
//! * a forged `Staged` status naming a slot the agent never wrote;
//! * a corrupt or endless compressed stream, stopped at the download cap;
//! * a mounted slot, never written;
//! * a world-writable hook, not run, and a hook that would see the agent's secrets;
//! * plain http in what a deployment backend fetches from (an OSTree reference, a
//!   plugin's image URL or payload), held to the image source policy like A/B images.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::server::ImageServer;
use common::*;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use osroll_agent::backends::driver::BackendConfig;
use osroll_agent::backends::ostree::{OstreeConfig, OstreeTool};
use osroll_agent::simhost::image_bytes;
use osroll_agent::trust::TrustConfig;
use osroll_agent::{AgentConfig, Slot};
use osroll_api::freshness::{Freshness, comment};
use osroll_api::signing::{keygen, parse_public_keys, sign};
use osroll_api::{OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase, SignedCatalog};
use serde_json::json;

const T: Duration = Duration::from_secs(20);
const SLOT: u64 = 2 << 20;

/// A signing key and the agent setting that requires catalogs signed by it.
struct Signer {
    public: String,
    secret: String,
}

impl Signer {
    fn new() -> Signer {
        let (public, secret) = keygen().unwrap();
        Signer { public, secret }
    }

    /// `spec` stamped with `catalog`, signed with `serial`, expiring `valid` from now.
    fn stamp(
        &self,
        spec: &mut OSUpgradeProgressSpec,
        catalog: &str,
        serial: u64,
        valid: SignedDuration,
    ) {
        let c = comment(&Freshness {
            serial,
            expires: Timestamp::now() + valid,
        });
        let signature = sign(catalog.as_bytes(), &self.secret, None, Some(&c)).unwrap();
        spec.catalog_digest = Some(osroll_api::catalog::digest(catalog.as_bytes()));
        spec.signed_catalog = Some(SignedCatalog {
            content: catalog.to_string(),
            signature,
        });
    }

    fn require(&self, cfg: &mut AgentConfig) {
        cfg.trust = TrustConfig {
            keys: parse_public_keys(&self.public).unwrap(),
            require_signed_catalog: true,
        };
    }
}

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn write_exe(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Run an agent with `cfg` until the progress is in one of `phases`.
async fn run_until(
    node: &Node,
    cfg: AgentConfig,
    phases: &[ProgressPhase],
) -> OSUpgradeProgressStatus {
    let agent = node.spawn_agent_with(cfg);
    let st = node.wait_phase(phases, T).await;
    agent.abort();
    st
}

fn assert_failed(s: &OSUpgradeProgressStatus, reason: &str, words: &[&str]) {
    assert_eq!(s.phase, Some(ProgressPhase::Failed), "{s:#?}");
    assert_eq!(s.failure_reason.as_deref(), Some(reason), "{s:#?}");
    let msg = s.message.clone().unwrap_or_default();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} should mention {w:?}");
    }
}

/// Fake `rpm-ostree`: records its arguments; `rebase` stages a deployment of checksum
/// `b…` version 2.0 whatever it was asked for.
fn fake_rpm_ostree(dir: &Path) -> PathBuf {
    let exe = dir.join("rpm-ostree");
    let d = dir.display();
    let dep = |c: char, v: &str, booted: bool, staged: bool| {
        json!({"osname": "fedora", "checksum": c.to_string().repeat(64), "serial": 0,
               "version": v, "booted": booted, "staged": staged})
    };
    let old = dep('a', "1.0", true, false);
    fs::write(
        dir.join("status.json"),
        json!({"deployments": [old]}).to_string(),
    )
    .unwrap();
    let staged = json!({"deployments": [dep('b', "2.0", false, true), old]});
    fs::write(dir.join("staged.json"), staged.to_string()).unwrap();
    write_exe(
        &exe,
        &format!(
            r#"printf '%s\n' "$*" >> '{d}/rpm-ostree.args'
case "$1" in
  status) cat '{d}/status.json' ;;
  rebase) cp '{d}/staged.json' '{d}/status.json' ;;
  *) exit 2 ;;
esac"#
        ),
    );
    exe
}

fn ostree_catalog(ovm: &str) -> String {
    format!(
        "images:\n  - version: \"2.0\"\n    url: https://os.example/fedora\n    checksum: sha256:{}\n{ovm}",
        "b".repeat(64)
    )
}

fn ostree_config(node: &Node, exe: PathBuf, signer: &Signer) -> AgentConfig {
    let mut cfg = node.config();
    let mut oc = OstreeConfig::new(OstreeTool::RpmOstreeRebase);
    oc.program = Some(exe);
    cfg.backend = BackendConfig::Ostree(oc);
    signer.require(&mut cfg);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_ostree_reference_is_refused_and_the_signed_one_staged() {
    let signer = Signer::new();
    let sum = format!("sha256:{}", "b".repeat(64));
    // The signed entry carries no reference: one added to the progress is an override.
    let node = Node::new(1 << 20, "1.0");
    let exe = fake_rpm_ostree(node.dir.path());
    let mut s = spec("2.0", "https://os.example/fedora", &sum, None);
    s.os_version_management = Some(json!({"ostree": {"reference": "evil:attacker/os"}}));
    signer.stamp(&mut s, &ostree_catalog(""), 1, DAY);
    node.put(s);
    let st = run_until(&node, ostree_config(&node, exe, &signer), &ENDS).await;
    assert_failed(&st, "OverrideNotSigned", &["evil:attacker/os"]);
    let args = fs::read_to_string(node.dir.path().join("rpm-ostree.args")).unwrap_or_default();
    assert!(
        !args.contains("rebase"),
        "the tool was asked to rebase: {args}"
    );

    // The same reference inside the signed entry is what the node installs.
    let node = Node::new(1 << 20, "1.0");
    let exe = fake_rpm_ostree(node.dir.path());
    let ovm = "    osVersionManagement:\n      ostree:\n        reference: \"fedora:fedora/2.0\"\n";
    let mut s = spec("2.0", "https://os.example/fedora", &sum, None);
    s.os_version_management = Some(json!({"ostree": {"reference": "fedora:fedora/2.0"}}));
    signer.stamp(&mut s, &ostree_catalog(ovm), 1, DAY);
    node.put(s);
    let st = run_until(&node, ostree_config(&node, exe, &signer), &ENDS).await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    let args = fs::read_to_string(node.dir.path().join("rpm-ostree.args")).unwrap();
    assert!(
        args.lines().any(|l| l == "rebase -- fedora:fedora/2.0"),
        "{args}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_plugin_payload_is_refused_before_the_plugin_runs() {
    let signer = Signer::new();
    let node = Node::new(1 << 20, "1.0");
    let (exe, calls) = recording_plugin(&node);
    let catalog = format!(
        "images:\n  - version: \"2.0\"\n    url: https://os.example/plugin\n    checksum: sha256:{}\n    osVersionManagement:\n      channel: stable\n",
        "c".repeat(64)
    );
    let mut s = spec(
        "2.0",
        "https://os.example/plugin",
        &format!("sha256:{}", "c".repeat(64)),
        None,
    );
    s.os_version_management = Some(json!({"channel": "attacker", "packages": ["backdoor"]}));
    signer.stamp(&mut s, &catalog, 1, DAY);
    node.put(s);
    let mut cfg = plugin_config(&node, exe);
    signer.require(&mut cfg);
    let st = run_until(&node, cfg, &ENDS).await;
    assert_failed(&st, "OverrideNotSigned", &["attacker", "\"stable\""]);
    let ran = fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        !ran.contains("stage"),
        "the plugin was asked to stage: {ran}"
    );
}

/// A plugin that records each action it is asked for in the returned file and
/// answers that a reboot applies the update.
fn recording_plugin(node: &Node) -> (PathBuf, PathBuf) {
    let exe = node.dir.path().join("os-plugin");
    let calls = node.dir.path().join("plugin-calls");
    write_exe(
        &exe,
        &format!(
            "echo \"$1\" >> '{}'\necho '{{\"apiVersion\":\"osroll.io/plugin/v1\",\"ok\":true,\"rebootRequired\":true,\"currentVersion\":\"1.0\"}}'",
            calls.display()
        ),
    );
    (exe, calls)
}

fn plugin_config(node: &Node, exe: PathBuf) -> AgentConfig {
    let mut cfg = node.config();
    cfg.backend = BackendConfig::Plugin {
        path: exe,
        timeout: Duration::from_secs(20),
    };
    cfg
}

/// An A/B node at `running`, an image server with the image for `version`, and a spec
/// for it stamped with a catalog listing it (plus `extra` catalog text).
async fn ab_case(
    signer: &Signer,
    running: &str,
    version: &str,
    extra: &str,
    serial: u64,
    valid: SignedDuration,
) -> (Node, ImageServer, OSUpgradeProgressSpec) {
    let node = Node::new(SLOT, running);
    let image = zstd(&image_bytes(version, 128 * 1024));
    let srv = ImageServer::start(Vec::new()).await;
    srv.with(|sc| sc.body = Arc::new(image.clone()));
    let catalog = format!(
        "images:\n  - version: \"{version}\"\n    url: {}\n    checksum: {}\n{extra}",
        srv.url(),
        checksum(&image)
    );
    let mut s = spec(version, &srv.url(), &checksum(&image), None);
    signer.stamp(&mut s, &catalog, serial, valid);
    (node, srv, s)
}

fn required(node: &Node, signer: &Signer) -> AgentConfig {
    let mut cfg = node.config();
    signer.require(&mut cfg);
    cfg
}

const ENDS: [ProgressPhase; 2] = [ProgressPhase::Staged, ProgressPhase::Failed];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_version_with_its_signed_catalog_is_refused() {
    let signer = Signer::new();
    let (node, srv, s) = ab_case(&signer, "2.0", "1.0", "blocked: [\"1.0\"]\n", 1, DAY).await;
    node.put(s);
    let st = run_until(&node, required(&node, &signer), &ENDS).await;
    assert_failed(&st, "VersionBlocked", &["1.0", "blocked"]);
    assert!(srv.requests().is_empty(), "nothing is downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_without_allow_downgrade_is_refused() {
    let signer = Signer::new();
    let (node, srv, mut s) = ab_case(&signer, "2.0", "1.0", "", 1, DAY).await;
    node.put(s.clone());
    let st = run_until(&node, required(&node, &signer), &ENDS).await;
    assert_failed(
        &st,
        "Downgrade",
        &["older than the running 2.0", "allowDowngrade"],
    );
    assert!(srv.requests().is_empty(), "nothing is downloaded");
    // Allowed explicitly, the same downgrade is staged.
    let node = Node::new(SLOT, "2.0");
    s.allow_downgrade = true;
    node.put(s);
    let st = run_until(&node, required(&node, &signer), &ENDS).await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_serial_is_refused_once_a_newer_one_was_accepted() {
    let signer = Signer::new();
    let (node, _srv, s) = ab_case(&signer, "1.0", "2.0", "", 9, DAY).await;
    node.put(s);
    let st = run_until(&node, required(&node, &signer), &ENDS).await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    let state = fs::read(node.state_dir().join("agent-state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["catalogSerial"], 9, "{state}");

    // Another progress on the same node, stamped with an older (still valid) catalog.
    let (_, srv, old) = ab_case(&signer, "1.0", "3.0", "", 3, DAY).await;
    fs::remove_file(node.progress_dir().join(format!("{PROGRESS}.json"))).unwrap();
    fs::remove_file(node.progress_dir().join(format!("{PROGRESS}.status.json"))).unwrap();
    node.put(old);
    let agent = node.spawn_agent_with(required(&node, &signer));
    let st = eventually(T, "the old catalog refused", || {
        node.status()
            .filter(|s| s.phase == Some(ProgressPhase::Failed))
    })
    .await;
    agent.abort();
    assert_failed(&st, "CatalogRolledBack", &["serial 3", "serial 9"]);
    assert!(srv.requests().is_empty(), "nothing is downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_catalog_is_refused() {
    let signer = Signer::new();
    let expired = SignedDuration::from_secs(-60);
    let (node, srv, s) = ab_case(&signer, "1.0", "2.0", "", 1, expired).await;
    node.put(s);
    let st = run_until(&node, required(&node, &signer), &ENDS).await;
    assert_failed(&st, "CatalogExpired", &["expired at"]);
    assert!(srv.requests().is_empty(), "nothing is downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_staged_status_does_not_arm_a_slot_the_agent_never_wrote() {
    let node = Node::new(SLOT, "1.0");
    // Slot B holds an old OS the agent never wrote or verified.
    let old = image_bytes("0.9", 64 * 1024);
    let mut b = fs::OpenOptions::new()
        .write(true)
        .open(node.host.slot_file(Slot::B))
        .unwrap();
    std::io::Write::write_all(&mut b, &old).unwrap();
    let raw = image_bytes("2.0", 128 * 1024);
    let image = zstd(&raw);
    let srv = ImageServer::start(image.clone()).await;
    let mut s = spec("2.0", &srv.url(), &checksum(&image), None);
    s.reboot_approved = true;
    node.put(s);
    let forged = json!({"phase": "Staged", "targetVersion": "2.0", "currentVersion": "1.0",
                        "inactivePartition": "B", "rebootRequired": true});
    fs::write(
        node.progress_dir().join(format!("{PROGRESS}.status.json")),
        forged.to_string(),
    )
    .unwrap();
    let agent = node.spawn_agent();
    eventually(T, "a reboot request", || {
        node.host.reboot_requested().then_some(())
    })
    .await;
    agent.abort();
    assert!(
        !srv.requests().is_empty(),
        "the agent downloaded the image itself"
    );
    assert!(
        node.slot_bytes(Slot::B).starts_with(&raw),
        "slot B was armed without the agent writing the target there"
    );
}

/// A server that answers 200 with no length, then sends `head` and `filler` over and
/// over until the client hangs up: the bytes it sent, and whether the client hung up.
struct EndlessServer {
    url: String,
    sent: Arc<std::sync::atomic::AtomicU64>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl EndlessServer {
    async fn start(head: Vec<u8>, filler: Vec<u8>) -> EndlessServer {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/image", listener.local_addr().unwrap());
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, c) = (sent.clone(), closed.clone());
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 4096];
            let _ = sock.read(&mut req).await;
            let header = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            let mut body = sock
                .write_all(header)
                .await
                .and(sock.write_all(&head).await);
            s.fetch_add(head.len() as u64, Relaxed);
            while body.is_ok() {
                body = sock.write_all(&filler).await;
                s.fetch_add(filler.len() as u64, Relaxed);
            }
            c.store(true, Relaxed);
        });
        EndlessServer {
            url,
            sent,
            closed,
            task,
        }
    }
}

impl Drop for EndlessServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A zstd skippable frame carrying `len` bytes: valid zstd that decodes to nothing.
fn skippable(len: usize) -> Vec<u8> {
    let mut f = 0x184D_2A50u32.to_le_bytes().to_vec();
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.resize(8 + len, 0x5A);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_or_corrupt_compressed_stream_stops_at_the_download_cap() {
    use std::sync::atomic::Ordering::Relaxed;
    // The most any encoding of an image filling the slot can take (see install::guard).
    let cap = SLOT + SLOT / 128 + (1 << 20);
    let valid = zstd(&image_bytes("2.0", 64 * 1024));
    let cases = [
        (
            "endless skippable frames",
            skippable(16),
            skippable(64 * 1024),
        ),
        // A frame the decoder gives up on, then garbage it would drain forever.
        (
            "corrupt stream",
            valid[..valid.len() / 2].to_vec(),
            vec![0xC3; 64 * 1024],
        ),
    ];
    for (what, head, filler) in cases {
        let node = Node::new(SLOT, "1.0");
        let srv = EndlessServer::start(head, filler).await;
        node.put(spec(
            "2.0",
            &srv.url,
            &format!("sha256:{}", "d".repeat(64)),
            None,
        ));
        let st = run_until(&node, node.config(), &ENDS).await;
        assert_failed(
            &st,
            "ImageTooLarge",
            &[&cap.to_string(), &SLOT.to_string(), "slot-B"],
        );
        assert!(
            st.bytes_done.is_some_and(|b| b <= cap),
            "{what}: downloaded past the cap: {st:#?}"
        );
        eventually(T, "the agent to hang up", || {
            srv.closed.load(Relaxed).then_some(())
        })
        .await;
        let sent = srv.sent.load(Relaxed);
        // What the server wrote past the cap sits in socket buffers, never unbounded.
        assert!(
            sent < cap + (64 << 20),
            "{what}: the server sent {sent} bytes"
        );
    }
}

/// A block major the kernel has not registered (from the range Linux keeps for local
/// use), so a device node with it opens nothing.
fn unregistered_block_major() -> u32 {
    let devices = fs::read_to_string("/proc/devices").unwrap();
    let block = devices.split("Block devices:").nth(1).unwrap_or("");
    let taken: Vec<u32> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (240..=252)
        .find(|m| !taken.contains(m))
        .expect("every block major in 240..=252 is registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_slot_is_refused_before_anything_is_written() {
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    let node = Node::new(SLOT, "1.0");
    // Slot B is a block device the host still has mounted (an old root, a data disk).
    let major = unregistered_block_major();
    let b = node.host.slot_file(Slot::B);
    fs::remove_file(&b).unwrap();
    mknodat(
        CWD,
        &b,
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        makedev(major, 7),
    )
    .expect("creating a block device node (needs root or CAP_MKNOD)");
    let mountinfo = node.dir.path().join("mountinfo");
    fs::write(
        &mountinfo,
        format!(
            "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n\
             31 22 {major}:7 / /mnt/old-root rw,relatime - ext4 /dev/fake rw\n"
        ),
    )
    .unwrap();
    let image = zstd(&image_bytes("2.0", 128 * 1024));
    let srv = ImageServer::start(image.clone()).await;
    node.put(spec("2.0", &srv.url(), &checksum(&image), None));
    let mut cfg = node.config();
    cfg.mountinfo = mountinfo;
    let st = run_until(&node, cfg, &ENDS).await;
    assert_failed(
        &st,
        "SlotMounted",
        &[b.to_str().unwrap(), "mounted at /mnt/old-root"],
    );
    assert!(srv.requests().is_empty(), "nothing is downloaded");
}

/// An A/B node whose progress is approved already, with a pre-install hook that runs
/// `body`; the image server must outlive the run.
async fn approved_with_hook(body: &str) -> (Node, ImageServer, PathBuf) {
    let node = Node::new(SLOT, "1.0");
    let image = zstd(&image_bytes("2.0", 128 * 1024));
    let srv = ImageServer::start(image.clone()).await;
    let mut s = spec("2.0", &srv.url(), &checksum(&image), None);
    s.reboot_approved = true;
    node.put(s);
    let hook = node.dir.path().join("hooks/default/pre-install");
    fs::create_dir_all(hook.parent().unwrap()).unwrap();
    write_exe(&hook, body);
    (node, srv, hook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_writable_hook_is_not_run() {
    // The hook file itself, or the directory it is in, writable by others.
    for (file, dir, says) in [
        (0o777, 0o755, "world-writable (mode 0777)"),
        (0o755, 0o775, "group-writable (mode 0775)"),
    ] {
        let (node, _srv, hook) = approved_with_hook("touch \"$0.ran\"").await;
        fs::set_permissions(&hook, fs::Permissions::from_mode(file)).unwrap();
        let parent = hook.parent().unwrap();
        fs::set_permissions(parent, fs::Permissions::from_mode(dir)).unwrap();
        let mut cfg = node.config();
        cfg.hooks_dir = Some(node.dir.path().join("hooks"));
        let st = run_until(
            &node,
            cfg,
            &[ProgressPhase::Failed, ProgressPhase::Rebooting],
        )
        .await;
        assert_failed(&st, "HookUnsafe", &[hook.to_str().unwrap(), says]);
        assert!(!hook.with_extension("ran").exists(), "the hook ran");
        assert!(!node.host.reboot_requested(), "the node was rebooted");
    }
}

/// Set in the re-run of [`hooks_get_a_clean_environment`] that runs the agent: where
/// its hook writes its environment.
const HOOK_ENV_CHILD: &str = "OSROLL_TEST_HOOK_ENV_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_get_a_clean_environment() {
    if let Ok(out) = std::env::var(HOOK_ENV_CHILD) {
        // The agent process, holding a secret in its environment.
        assert_eq!(
            std::env::var("AGENT_SECRET_TOKEN").as_deref(),
            Ok("hunter2")
        );
        let (node, _srv, _hook) = approved_with_hook(&format!("env > '{out}'")).await;
        let mut cfg = node.config();
        cfg.hooks_dir = Some(node.dir.path().join("hooks"));
        let agent = node.spawn_agent_with(cfg);
        let st = node
            .wait_phase(&[ProgressPhase::Failed, ProgressPhase::Rebooting], T)
            .await;
        agent.abort();
        assert_eq!(st.phase, Some(ProgressPhase::Rebooting), "{st:#?}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hook-env");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hooks_get_a_clean_environment", "--nocapture"])
        .env(HOOK_ENV_CHILD, &out)
        .env("AGENT_SECRET_TOKEN", "hunter2")
        .status()
        .unwrap();
    assert!(child.success(), "the agent run failed: {child}");
    let env = fs::read_to_string(&out).unwrap();
    assert!(
        !env.contains("hunter2"),
        "the agent's secret reached the hook:\n{env}"
    );
    let allowed = [
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ", // passed on from the agent's environment
        "OSROLL_FROM_VERSION",
        "OSROLL_TO_VERSION",
        "OSROLL_REBOOT",
        "OSROLL_PHASE",
        "OSROLL_NODE", // set by the agent
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD", // set by the hook's shell
    ];
    for line in env.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(allowed.contains(&name), "{name} reached the hook:\n{env}");
    }
    for want in ["PATH=", "OSROLL_TO_VERSION=2.0", "OSROLL_PHASE=pre-install"] {
        assert!(
            env.lines().any(|l| l.starts_with(want)),
            "no {want}:\n{env}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_backends_hold_what_they_fetch_to_the_image_source_policy() {
    let sum = format!("sha256:{}", "b".repeat(64));
    let plain = "ostree-remote-image:fedora:http://os.example/fedora:2.0";
    // An OSTree reference naming a plain http URL, without and with the opt-in.
    for allow_http in [false, true] {
        let node = Node::new(1 << 20, "1.0");
        let exe = fake_rpm_ostree(node.dir.path());
        let mut s = spec("2.0", "https://os.example/fedora", &sum, None);
        s.allow_http_images = allow_http;
        s.os_version_management = Some(json!({"ostree": {"reference": plain}}));
        node.put(s);
        let mut cfg = node.config();
        let mut oc = OstreeConfig::new(OstreeTool::RpmOstreeRebase);
        oc.program = Some(exe);
        cfg.backend = BackendConfig::Ostree(oc);
        let st = run_until(&node, cfg, &ENDS).await;
        let args = fs::read_to_string(node.dir.path().join("rpm-ostree.args")).unwrap_or_default();
        if allow_http {
            assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
            continue;
        }
        assert_failed(
            &st,
            "ImageSourceNotAllowed",
            &[
                "spec.osVersionManagement.ostree.reference",
                plain,
                "allowHttpImages",
            ],
        );
        assert!(
            !args.contains("rebase"),
            "the tool was asked to rebase: {args}"
        );
    }
    // A plugin given a plain http image URL, or one inside its payload.
    let cases = [
        (
            "http://os.example/plugin",
            json!({"channel": "stable"}),
            "spec.image.url",
        ),
        (
            "https://os.example/plugin",
            json!({"channel": "stable", "mirrors": ["https://m.example", "http://evil.example/os"]}),
            "spec.osVersionManagement.mirrors[1]",
        ),
    ];
    for (url, payload, field) in cases {
        let node = Node::new(1 << 20, "1.0");
        let (exe, calls) = recording_plugin(&node);
        let mut s = spec("2.0", url, &sum, None);
        s.allow_http_images = false;
        s.os_version_management = Some(payload);
        node.put(s);
        let st = run_until(&node, plugin_config(&node, exe), &ENDS).await;
        assert_failed(
            &st,
            "ImageSourceNotAllowed",
            &[field, "http://", "allowHttpImages"],
        );
        let ran = fs::read_to_string(&calls).unwrap_or_default();
        assert!(
            !ran.contains("stage"),
            "the plugin was asked to stage: {ran}"
        );
    }
}
