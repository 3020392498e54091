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

// The findings about what the agent does on the node itself: limits, mounts, hooks,
// what deployment tools fetch from.
#[path = "attacks/node.rs"]
mod node;
