//! The scenarios of the VM tier, and the environment they share (test API server, image
//! servers, the disk built once). Every boot must reach a slot's init; each scenario
//! returns report lines for the summary.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgradeProgress, ProgressPhase};
use osroll_sim::server::ServerConfig;
use osroll_sim::testing::Cluster;
use serde_json::{Value, json};

use crate::common::{docs, osroll};

use super::guest::{self, Artefacts};
use super::image_server::ImageServer;
use super::pod;
use super::qemu::{Boot, BootTimes};

const NS: &str = "osroll-system";
/// Flags the fleet would give `osroll create agent` for this node type: the guest has no
/// systemd, so the agent reboots with reboot(2).
pub(crate) const CREATE_AGENT: &[&str] = &[
    "create",
    "agent",
    "--reboot-command",
    "syscall",
    "--no-admission-policy",
];
/// Slot A's own kernel argument on the base disk; every progress removes it (by key).
pub(crate) const KARG_OLD: &str = "osroll.legacy=1";
/// The harmless kernel argument every progress adds.
pub(crate) const KARG_NEW: &str = "osroll.test=1";
const BOOT: Duration = Duration::from_secs(90);
const STAGE: Duration = Duration::from_secs(60);

/// What every scenario shares: the test API server (with the agent's RBAC as
/// generated), the rendered agent objects, and the artefacts every node's disk is built
/// from. Scenarios on different nodes may run at once.
pub(crate) struct Shared {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) cluster: Cluster,
    objects: Vec<Value>,
    port: u16,
    base: guest::Base,
    /// The compressed images the image servers serve.
    packed: (Vec<u8>, Vec<u8>),
    /// Every boot's timings, in the order the boots ended.
    pub(crate) timings: Arc<Mutex<Vec<BootTimes>>>,
    _work: tempfile::TempDir,
}

/// One node: its agent's pod spec and token, its disk, its own image servers (a
/// scenario's scripted faults reach no other node), and the boots it made.
pub(crate) struct Env<'s> {
    pub(crate) shared: &'s Shared,
    pub(crate) node: String,
    pub(crate) good: ImageServer,
    pub(crate) broken: ImageServer,
    pub(crate) art: Artefacts,
    pub(crate) spec: pod::PodSpec,
    pub(crate) boots: usize,
}

impl Shared {
    pub(crate) fn start() -> Shared {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = rt
            .block_on(Cluster::sim(ServerConfig {
                enforce_rbac: true,
                ..Default::default()
            }))
            .unwrap();
        let server = cluster.server().unwrap();
        let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
        rt.block_on(cluster.install_crds()).unwrap();
        // The agent's RBAC exactly as generated; its token is bound to the node's pod.
        let objects = docs(&osroll(CREATE_AGENT));
        let rbac: Vec<Value> = objects
            .iter()
            .filter(|o| o["kind"] != "DaemonSet")
            .cloned()
            .collect();
        let yaml = rbac
            .iter()
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        let out = rt
            .block_on(cluster.kubectl_run(&["apply", "-f", "-"], Some(&yaml)))
            .unwrap();
        assert!(out.success(), "kubectl apply: {}", out.stderr);
        let work = tempfile::Builder::new()
            .prefix("osroll-vm-")
            .tempdir()
            .unwrap();
        let grub_cfg = osroll(&["create", "boot", "grub"]);
        let base = guest::base(work.path(), &grub_cfg);
        let pack = |p: &Path| zstd::encode_all(std::fs::read(p).unwrap().as_slice(), 3).unwrap();
        let packed = (pack(base.v2()), pack(base.v2_broken()));
        Shared {
            rt,
            cluster,
            objects,
            port,
            base,
            packed,
            timings: Arc::default(),
            _work: work,
        }
    }

    /// Node `node`: registered with the API server, its agent's token bound to it, its
    /// disk built.
    pub(crate) fn node(&self, node: &str) -> Env<'_> {
        let rt = &self.rt;
        let server = self.cluster.server().unwrap();
        let obj: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
        rt.block_on(Api::all(self.cluster.admin()).create(&PostParams::default(), &obj))
            .unwrap();
        let user = format!("system:serviceaccount:{NS}:osroll-agent");
        let kubeconfig =
            std::fs::read_to_string(server.kubeconfig_for_node(&user, node).unwrap()).unwrap();
        let token = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let sa = [
            ("token", token),
            ("ca.crt", server.ca_pem().to_string()),
            ("namespace", NS.to_string()),
        ];
        let spec = pod::from_daemonset(&self.objects, node, ("10.0.2.2", self.port));
        let art = self.base.node(node, &pod::script(&spec), &sa);
        let good = rt.block_on(ImageServer::start(self.packed.0.clone()));
        let broken = rt.block_on(ImageServer::start(self.packed.1.clone()));
        Env {
            shared: self,
            node: node.to_string(),
            good,
            broken,
            art,
            spec,
            boots: 0,
        }
    }
}

impl Env<'_> {
    /// A fresh copy of the base disk (v1 in slot A).
    pub(crate) fn fresh_disk(&self, name: &str) -> PathBuf {
        let p = self.art.work.join(format!("disk-{name}.img"));
        std::fs::copy(&self.art.disk, &p).unwrap();
        p
    }

    pub(crate) fn boot(&mut self, disk: &Path) -> Boot {
        self.boots += 1;
        Boot::start(disk, &disk.with_extension("log"), &self.shared.timings)
    }

    /// The reasons of the Events the agent recorded on progress `name`, oldest first,
    /// once `want` are all among them.
    pub(crate) fn agent_events(&self, name: &str, want: &[&str]) -> Vec<String> {
        let api: Api<Event> = Api::all(self.shared.cluster.admin());
        let deadline = Instant::now() + BOOT;
        loop {
            let mut evs: Vec<Event> = self
                .shared
                .rt
                .block_on(api.list(&Default::default()))
                .unwrap()
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.reporting_controller.as_deref()
                            == Some(osroll_agent::source::kube::EVENT_REPORTER)
                })
                .collect();
            evs.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
            let reasons: Vec<String> = evs.into_iter().filter_map(|e| e.reason).collect();
            if want.iter().all(|w| reasons.iter().any(|r| r == w)) {
                return reasons;
            }
            assert!(
                Instant::now() < deadline,
                "the agent's Events on {name}: {reasons:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait for the guest's init: the slot and version it booted.
    pub(crate) fn up(&self, b: &Boot) -> (String, String) {
        let (_, l) = b.wait_for("osroll-vm: up ", BOOT);
        let field = |k: &str| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or("")
                .to_string()
        };
        (field("slot="), field("version="))
    }

    fn api(&self) -> Api<OSUpgradeProgress> {
        Api::all(self.shared.cluster.admin())
    }

    /// The kernel command line the guest booted with (its init prints /proc/cmdline).
    pub(crate) fn cmdline(&self, b: &Boot) -> Vec<String> {
        let (_, l) = b.wait_for("osroll-vm: cmdline ", BOOT);
        let line = l.split_once("osroll-vm: cmdline ").unwrap().1;
        line.split_whitespace().map(String::from).collect()
    }

    /// Replace every progress of this node with one for v2 from `server`, adding
    /// [`KARG_NEW`] and removing [`KARG_OLD`]'s key.
    pub(crate) fn progress(&self, name: &str, server_is_good: bool, approved: bool) {
        let server = if server_is_good {
            &self.good
        } else {
            &self.broken
        };
        let body = server.with(|s| s.body.clone());
        let raw = if server_is_good {
            &self.art.v2
        } else {
            &self.art.v2_broken
        };
        let size = std::fs::metadata(raw).unwrap().len();
        let url = server.url().replace("127.0.0.1", "10.0.2.2");
        let p: OSUpgradeProgress = serde_json::from_value(json!({
            "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgress",
            "metadata": { "name": name, "labels": { osroll_api::labels::NODE: &self.node } },
            "spec": {
                "nodeName": &self.node,
                "image": { "version": "v2", "url": url, "checksum": osroll_api::catalog::digest(&body), "size": size },
                "rebootApproved": approved,
                "allowHttpImages": true,
                "kernelArguments": { "add": [KARG_NEW], "remove": [KARG_OLD.split('=').next().unwrap()] },
            }
        }))
        .unwrap();
        let mine =
            ListParams::default().labels(&format!("{}={}", osroll_api::labels::NODE, self.node));
        self.shared.rt.block_on(async {
            let api = self.api();
            for old in api.list(&mine).await.unwrap() {
                api.delete(&old.metadata.name.unwrap(), &Default::default())
                    .await
                    .unwrap();
            }
            api.create(&PostParams::default(), &p).await.unwrap();
        });
    }

    pub(crate) fn patch_spec(&self, name: &str, spec: Value) {
        self.shared
            .rt
            .block_on(self.api().patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            ))
            .unwrap();
    }

    /// The progress's status once `done` holds for it (deadline `timeout`).
    pub(crate) fn wait_status(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&osroll_api::OSUpgradeProgressStatus) -> bool,
    ) -> osroll_api::OSUpgradeProgressStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self
                .shared
                .rt
                .block_on(self.api().get(name))
                .unwrap()
                .status
                .unwrap_or_default();
            if done(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "progress {name} never got there: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn wait_phase(
        &self,
        name: &str,
        phase: ProgressPhase,
        timeout: Duration,
    ) -> osroll_api::OSUpgradeProgressStatus {
        self.wait_status(name, timeout, |s| s.phase == Some(phase))
    }
}

/// The agent in the guest was started from exactly the container spec: its argv and
/// environment as the guest's PID 1 read them from /proc.
fn check_started_from_spec(env: &Env, b: &Boot) {
    let (_, cmd) = b.wait_for("osroll-vm: agent-cmdline ", BOOT);
    let (_, environ) = b.wait_for("osroll-vm: agent-environ ", BOOT);
    let split = |l: &str, p: &str| -> Vec<String> {
        l.split_once(p)
            .unwrap()
            .1
            .split('\t')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        split(&cmd, "agent-cmdline "),
        env.spec.argv,
        "argv differs from the DaemonSet's"
    );
    let mut got = split(&environ, "agent-environ ");
    let mut want: Vec<String> = env
        .spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "environment differs from the DaemonSet's");
}

/// `args` (a booted /proc/cmdline) name `slot`, and carry slot A's own argument
/// (`old`: A as it was) or the upgrade's (the new slot): never both.
fn assert_slot_args(args: &[String], slot: &str, old: bool) {
    let has = |a: &str| args.iter().any(|x| x == a);
    assert!(
        has(&format!("osroll.slot={slot}")),
        "not slot {slot}: {args:?}"
    );
    assert_eq!(has(KARG_OLD), old, "{KARG_OLD} on slot {slot}: {args:?}");
    assert_eq!(has(KARG_NEW), !old, "{KARG_NEW} on slot {slot}: {args:?}");
}

pub(crate) fn phase_line(p: &str) -> String {
    // The executor logs `phase="Rebooting"` (with colour codes around `phase=`).
    format!("\"{p}\"")
}

/// a. v1 on A; the agent stages v2 into B and reboots; GRUB tries B once; the agent
/// checks version and slot and commits; a cold boot still boots B.
pub(crate) fn upgrade(env: &mut Env) -> Vec<String> {
    let t = Instant::now();
    let disk = env.fresh_disk("upgrade");
    env.progress("upgrade", true, true);
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    assert_slot_args(&env.cmdline(&b), "A", true);
    check_started_from_spec(env, &b);
    b.wait_for(&phase_line("Rebooting"), STAGE);
    b.wait_exit(BOOT);
    let mut b = env.boot(&disk);
    b.wait_for("osroll: booting slot B", BOOT);
    assert_eq!(env.up(&b), ("B".into(), "v2".into()));
    let on_b = env.cmdline(&b);
    assert_slot_args(&on_b, "B", false);
    b.wait_for(&phase_line("Completed"), BOOT);
    let st = env.wait_phase("upgrade", ProgressPhase::Completed, BOOT);
    assert_eq!(st.current_version.as_deref(), Some("v2"));
    let reported: Vec<String> = (st.kernel_command_line.as_deref().unwrap_or_default())
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        reported, on_b,
        "status.kernelCommandLine is the booted guest's /proc/cmdline"
    );
    let events = env.agent_events("upgrade", &["Staged", "RebootRequested", "Committed"]);
    b.cut();
    let mut b = env.boot(&disk);
    assert_eq!(
        env.up(&b),
        ("B".into(), "v2".into()),
        "the commit made B the default"
    );
    assert_slot_args(&env.cmdline(&b), "B", false);
    b.cut();
    vec![
        "agent in the VM started from exactly the `osroll create agent` container spec (argv and environment compared)".into(),
        format!("a. upgrade: A/v1 -> v2 staged into B -> GRUB tried B once -> committed -> cold boot: B/v2, Completed ({:.0?})", t.elapsed()),
        format!("a. kernelArguments through GRUB: /proc/cmdline on B has {KARG_NEW} and lacks {KARG_OLD} (A's own): {}", on_b.join(" ")),
        format!("a. the agent's Events on its progress: {}", events.join(", ")),
    ]
}

/// b. v2 does not come up (its init exits, the kernel panics); GRUB falls back to A,
/// the progress ends RolledBack, and v2 is tried again only after retryNonce changes.
pub(crate) fn broken(env: &mut Env) -> Vec<String> {
    let t = Instant::now();
    let disk = env.fresh_disk("broken");
    env.progress("broken", false, true);
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()));
    b.wait_for(&phase_line("Rebooting"), STAGE);
    b.wait_exit(BOOT);
    let mut b = env.boot(&disk);
    b.wait_for("osroll: booting slot B", BOOT);
    assert_slot_args(&env.cmdline(&b), "B", false);
    b.wait_for("osroll-vm: broken image, init exits", BOOT);
    b.wait_exit(BOOT);
    let mut b = env.boot(&disk);
    assert_eq!(env.up(&b), ("A".into(), "v1".into()), "GRUB fell back to A");
    assert_slot_args(&env.cmdline(&b), "A", true);
    let st = env.wait_phase("broken", ProgressPhase::RolledBack, BOOT);
    let events = env.agent_events("broken", &["Staged", "RebootRequested", "RolledBack"]);
    // Not retried on its own: a spec change that is not a new nonce starts nothing.
    let (from, _) = b.wait_for(&phase_line("RolledBack"), BOOT);
    env.patch_spec(
        "broken",
        json!({ "rebootApproved": true, "osVersionManagement": { "touch": 1 } }),
    );
    let quiet = !b.seen_within(&phase_line("Downloading"), from, Duration::from_secs(8));
    assert!(quiet, "v2 was tried again without a new retryNonce");
    env.patch_spec("broken", json!({ "retryNonce": "retry-1" }));
    b.wait_any(&[&phase_line("Downloading")], STAGE, from);
    let st2 = env.wait_status("broken", BOOT, |s| {
        s.observed_retry_nonce.as_deref() == Some("retry-1")
    });
    b.cut();
    vec![
        format!(
            "b. broken v2: B booted with the new kernel arguments, its init exited -> kernel panic -> GRUB fell back to A, whose command line kept its own ({KARG_OLD}, no {KARG_NEW}) -> RolledBack ({}); untouched until retryNonce changed, then retried (retryCount {}) ({:.0?})",
            st.failure_reason.unwrap_or_default(),
            st2.retry_count,
            t.elapsed()
        ),
        format!(
            "b. the agent's Events on its progress: {}",
            events.join(", ")
        ),
    ]
}

/// c. Power cuts, cut 1 on a disk of its own; see [`super::cuts`].
pub(crate) fn power_cut_first(env: &mut Env) -> Vec<String> {
    super::cuts::first(env)
}

/// c. Power cuts 2 to 10 on a disk of their own; see [`super::cuts`].
pub(crate) fn power_cuts_rest(env: &mut Env) -> Vec<String> {
    super::cuts::rest(env)
}
