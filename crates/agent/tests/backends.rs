//! The executor driving deployment backends on a simulated node: a small shell OS
//! plugin (reboot and live replies, crash, garbage), a scripted `rpm-ostree` (stage,
//! reboot, confirm, a boot into the wrong deployment; rpm-ostree is not packaged here, the
//! real `ostree` is driven by `ostree_real.rs`), install hooks around the update, and
//! the pods restarted after a live update.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::jiff::Timestamp;
use osroll_agent::backends::driver::BackendConfig;
use osroll_agent::backends::ostree::{OstreeConfig, OstreeTool};
use osroll_agent::mounts::decide::{PodInfo, PodRef};
use osroll_agent::mounts::restart::{MountsError, PodApi, Restarter};
use osroll_agent::source::file::FileSource;
use osroll_agent::{AgentConfig, AgentExit};
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressSpec, ProgressPhase};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn write_exe(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A plugin whose "OS" lives in `<os>/running`; `<os>/reboot` says whether applying
/// needs a reboot; after a reboot the test moves `<os>/after-boot` into `running`.
fn plugin(dir: &Path) -> (PathBuf, PathBuf) {
    let os = dir.join("os");
    fs::create_dir_all(&os).unwrap();
    fs::write(os.join("running"), "1.0").unwrap();
    fs::write(os.join("reboot"), "true").unwrap();
    let exe = dir.join("os-plugin");
    let o = os.display();
    write_exe(
        &exe,
        &format!(
            r#"S='{o}'
req=$(cat)
printf '%s' "$req" > "$S/request-$1.json"
target=$(printf '%s' "$req" | sed -n 's/.*"targetVersion":"\([^"]*\)".*/\1/p')
running=$(cat "$S/running")
reply() {{ printf '{{"apiVersion":"osroll.io/plugin/v1","ok":true%s}}\n' "$1"; }}
case "$1" in
  stage) reply ",\"rebootRequired\":$(cat "$S/reboot"),\"currentVersion\":\"$running\"" ;;
  apply)
    if [ "$(cat "$S/reboot")" = true ]; then
      printf '%s' "$target" > "$S/after-boot"
      reply ",\"rebootRequired\":true,\"currentVersion\":\"$running\""
    else
      printf '%s' "$target" > "$S/running"
      reply ",\"rebootRequired\":false,\"currentVersion\":\"$target\",\"stalePaths\":[\"/usr/lib/os/$running\"]"
    fi ;;
  verify) reply ",\"currentVersion\":\"$running\"" ;;
  rollback)
    if [ -e "$S/can-roll-back" ]; then reply ",\"rebootRequired\":true"
    else printf '{{"apiVersion":"osroll.io/plugin/v1","ok":false,"unsupported":true,"error":"%s was not kept"}}\n' "$target"; fi ;;
  *) exit 64 ;;
esac"#
        ),
    );
    (exe, os)
}

/// Put a progress for `spec` carrying the controller's rollback mark.
fn put_rollback(node: &Node, spec: OSUpgradeProgressSpec) {
    let mut p = OSUpgradeProgress::new(PROGRESS, spec);
    p.metadata.annotations = Some(BTreeMap::from([(
        osroll_api::labels::ROLLBACK.to_string(),
        String::new(),
    )]));
    FileSource::write_progress(&node.progress_dir(), &p).unwrap();
}

/// Hooks that record their environment into `<hooks>/ran-<phase>`.
fn hooks(dir: &Path, pre_exit: i32) -> PathBuf {
    let h = dir.join("hooks");
    // Only the owner may write a hook's directory, whatever the umask.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(h.join("default"))
        .unwrap();
    for (name, code) in [("pre-install", pre_exit), ("post-install", 0)] {
        write_exe(
            &h.join("default").join(name),
            &format!(
                "env | grep '^OSROLL_' | sort > '{}/ran-{name}'\necho \"{name} says hello\"\nexit {code}",
                h.display()
            ),
        );
    }
    h
}

fn plugin_spec(reboot_approved: bool) -> OSUpgradeProgressSpec {
    let mut s = spec("2.0", "https://os.example/2.0", "sha256:00", None);
    s.reboot_approved = reboot_approved;
    s.os_version_management = Some(json!({"channel": "stable", "packages": ["kernel"]}));
    s
}

fn plugin_config(node: &Node, exe: &Path) -> AgentConfig {
    let mut cfg = node.config();
    cfg.backend = BackendConfig::Plugin {
        path: exe.to_path_buf(),
        timeout: Duration::from_secs(20),
    };
    cfg
}

/// Pods of the node in memory; deletions are recorded.
#[derive(Clone, Default)]
struct FakePods {
    pods: Vec<PodInfo>,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl PodApi for FakePods {
    async fn list_node_pods(&self, _node: &str) -> Result<Vec<PodInfo>, MountsError> {
        let gone = self.deleted.lock().unwrap().clone();
        Ok(self
            .pods
            .iter()
            .filter(|p| !gone.contains(&p.pod.name))
            .cloned()
            .collect())
    }
    async fn delete_pod(&self, pod: &PodRef) -> Result<(), MountsError> {
        self.deleted.lock().unwrap().push(pod.name.clone());
        Ok(())
    }
}

fn uid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// Five pods; pods 1 and 2 have a mount into `/usr/lib/os/1.0`, pod 5 is labelled for
/// `restartOnLiveUpdate`. Returns the pods and the fake proc root.
fn five_pods(dir: &Path) -> (FakePods, PathBuf) {
    let proc_root = dir.join("proc");
    let mut pods = Vec::new();
    for n in 1..=5u32 {
        let pid = 100 + n;
        let d = proc_root.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-1.scope\n",
                uid(n).replace('-', "_")
            ),
        )
        .unwrap();
        let root = if n <= 2 {
            "/usr/lib/os/1.0/etc/cni"
        } else {
            "/var/lib/data"
        };
        fs::write(
            d.join("mountinfo"),
            format!("2000 1999 0:120 / / rw - overlay overlay rw\n2001 2000 252:4 {root} /host/cni rw - xfs /dev/vda4 rw\n"),
        )
        .unwrap();
        let mut labels = BTreeMap::new();
        if n == 5 {
            labels.insert("restart".to_string(), "on-live-update".to_string());
        }
        pods.push(PodInfo {
            pod: PodRef {
                namespace: "default".into(),
                name: format!("pod-{n}"),
                uid: uid(n),
            },
            labels,
            created: Some(Timestamp::from_second(1_700_000_000).unwrap()),
            terminating: false,
            controlled: true,
        });
    }
    (
        FakePods {
            pods,
            ..Default::default()
        },
        proc_root,
    )
}

fn spawn(
    node: &Node,
    cfg: AgentConfig,
    pods: Option<FakePods>,
) -> tokio::task::JoinHandle<anyhow::Result<AgentExit>> {
    let source = FileSource::new(&node.progress_dir(), NODE, Duration::from_millis(10));
    let host: Arc<dyn osroll_agent::Host> = Arc::new(node.host.clone());
    let ledger = node.state_dir().join("live-restarts.json");
    tokio::spawn(async move {
        let mut agent = osroll_agent::Agent::new(cfg, source, host)?;
        if let Some(p) = pods {
            agent = agent.with_live_restarter(Arc::new(Restarter::new(p, ledger)));
        }
        agent.run().await
    })
}

async fn rebooted(agent: tokio::task::JoinHandle<anyhow::Result<AgentExit>>) {
    let exit = tokio::time::timeout(T, agent).await.expect("agent exits");
    assert_eq!(exit.unwrap().unwrap(), AgentExit::Rebooted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_update_with_reboot_runs_hooks_and_restarts_no_pod() {
    let node = Node::new(1 << 20, "1.0");
    let (exe, os) = plugin(node.dir.path());
    let hooks_dir = hooks(node.dir.path(), 0);
    let (pods, proc_root) = five_pods(node.dir.path());
    let mut cfg = plugin_config(&node, &exe);
    cfg.hooks_dir = Some(hooks_dir.clone());
    cfg.proc_root = proc_root;
    node.put(plugin_spec(false));
    let agent = spawn(&node, cfg.clone(), Some(pods.clone()));
    let st = node.wait_phase(&[ProgressPhase::Staged], T).await;
    assert_eq!(st.reboot_required, Some(true), "{st:?}");
    assert!(
        !hooks_dir.join("ran-pre-install").exists(),
        "no hook before approval"
    );
    // The plugin got the OSUpgrade's osVersionManagement unchanged.
    let req: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(os.join("request-stage.json")).unwrap()).unwrap();
    assert_eq!(
        req["osVersionManagement"],
        json!({"channel": "stable", "packages": ["kernel"]})
    );
    assert_eq!(
        (req["node"].as_str(), req["targetVersion"].as_str()),
        (Some(NODE), Some("2.0"))
    );

    node.edit(|s| s.reboot_approved = true);
    rebooted(agent).await;
    assert_eq!(node.phase(), Some(ProgressPhase::Rebooting));
    let env = fs::read_to_string(hooks_dir.join("ran-pre-install")).unwrap();
    assert!(
        env.contains("OSROLL_FROM_VERSION=1.0")
            && env.contains("OSROLL_TO_VERSION=2.0")
            && env.contains("OSROLL_REBOOT=true")
            && env.contains("OSROLL_PHASE=pre-install"),
        "{env}"
    );
    assert!(!hooks_dir.join("ran-post-install").exists());

    // The "OS" switches at the reboot.
    node.host.boot().unwrap();
    fs::rename(os.join("after-boot"), os.join("running")).unwrap();
    let agent = spawn(&node, cfg, Some(pods.clone()));
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
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(st.current_version.as_deref(), Some("2.0"));
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("post-install hook") && msg.contains("post-install says hello"),
        "{msg}"
    );
    assert!(hooks_dir.join("ran-post-install").exists());
    assert!(
        pods.deleted.lock().unwrap().is_empty(),
        "a reboot followed: no pod restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_plugin_update_restarts_stale_and_selected_pods_once_without_reboot() {
    let node = Node::new(1 << 20, "1.0");
    let (exe, os) = plugin(node.dir.path());
    fs::write(os.join("reboot"), "false").unwrap();
    let (pods, proc_root) = five_pods(node.dir.path());
    let mut cfg = plugin_config(&node, &exe);
    cfg.proc_root = proc_root;
    let mut s = plugin_spec(false);
    s.restart_on_live_update = Some(
        serde_json::from_value(json!({"matchLabels": {"restart": "on-live-update"}})).unwrap(),
    );
    node.put(s);
    let agent = spawn(&node, cfg, Some(pods.clone()));
    let st = node.wait_phase(&[ProgressPhase::Staged], T).await;
    assert_eq!(
        st.reboot_required,
        Some(false),
        "the controller reads this to skip the drain"
    );
    node.edit(|s| s.reboot_approved = true);
    let st = node
        .wait_phase(&[ProgressPhase::Completed, ProgressPhase::Failed], T)
        .await;
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert!(!node.host.reboot_requested(), "no reboot for a live update");
    assert_eq!(fs::read_to_string(os.join("running")).unwrap(), "2.0");
    let mut deleted = pods.deleted.lock().unwrap().clone();
    deleted.sort();
    assert_eq!(deleted, ["pod-1", "pod-2", "pod-5"], "each once");
    let msg = st.message.unwrap_or_default();
    assert!(msg.contains("restarted 3 pod(s)"), "{msg}");
    // Nothing more happens on later passes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.abort();
    assert_eq!(pods.deleted.lock().unwrap().len(), 3);
}

/// A progress with the rollback mark, from 2.0 back to 1.0: the agent asks the plugin for
/// `rollback`; one that cannot gets a `stage` of 1.0, and the Staged message says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_rollback_asks_the_plugin_to_roll_back_or_stages_instead() {
    for can in [true, false] {
        let node = Node::new(1 << 20, "2.0");
        let (exe, os) = plugin(node.dir.path());
        fs::write(os.join("running"), "2.0").unwrap();
        if can {
            fs::write(os.join("can-roll-back"), "").unwrap();
        }
        let mut s = spec("1.0", "https://os.example/1.0", "sha256:00", None);
        s.allow_downgrade = true;
        put_rollback(&node, s);
        let agent = spawn(&node, plugin_config(&node, &exe), None);
        let st = node
            .wait_phase(&[ProgressPhase::Staged, ProgressPhase::Failed], T)
            .await;
        agent.abort();
        assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:?}");
        let msg = st.message.unwrap_or_default();
        let req: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(os.join("request-rollback.json")).unwrap())
                .unwrap();
        assert_eq!(req["targetVersion"], "1.0");
        assert_eq!(req["rollback"], true);
        if can {
            assert!(msg.starts_with("plugin rolled back to 1.0;"), "{msg}");
            assert!(!os.join("request-stage.json").exists());
        } else {
            assert!(
                msg.starts_with(
                    "plugin cannot roll back (1.0 was not kept), so it staged 1.0 instead"
                ),
                "{msg}"
            );
            assert!(os.join("request-stage.json").exists());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_booting_the_wrong_version_rolls_back() {
    let node = Node::new(1 << 20, "1.0");
    let (exe, _os) = plugin(node.dir.path());
    let cfg = plugin_config(&node, &exe);
    node.put(plugin_spec(true));
    rebooted(spawn(&node, cfg.clone(), None)).await;
    node.host.boot().unwrap(); // the OS stays on 1.0
    let agent = spawn(&node, cfg, None);
    let st = node
        .wait_phase(
            &[
                ProgressPhase::Completed,
                ProgressPhase::RolledBack,
                ProgressPhase::Failed,
            ],
            T,
        )
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::RolledBack), "{st:?}");
    assert_eq!(st.failure_reason.as_deref(), Some("BootedWrongDeployment"));
    assert!(
        st.message
            .unwrap_or_default()
            .contains("reports 1.0 running, not the target 2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_or_garbled_plugin_fails_naming_it() {
    for (body, reason, needle) in [
        (
            "echo 'segfault in libfoo' >&2; exit 139",
            "PluginCrashed",
            "segfault in libfoo",
        ),
        (
            "echo 'hello, not json'",
            "PluginProtocolError",
            "not one JSON value",
        ),
    ] {
        let node = Node::new(1 << 20, "1.0");
        let exe = node.dir.path().join("bad-plugin");
        write_exe(&exe, &format!("cat >/dev/null\n{body}"));
        node.put(plugin_spec(false));
        let agent = spawn(&node, plugin_config(&node, &exe), None);
        let st = node.wait_phase(&[ProgressPhase::Failed], T).await;
        agent.abort();
        assert_eq!(st.failure_reason.as_deref(), Some(reason), "{st:?}");
        let msg = st.message.unwrap_or_default();
        assert!(
            msg.contains(&exe.display().to_string()) && msg.contains(needle),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_install_hook_fails_the_update_before_it_is_applied() {
    let node = Node::new(1 << 20, "1.0");
    let (exe, os) = plugin(node.dir.path());
    let hooks_dir = hooks(node.dir.path(), 3);
    let mut cfg = plugin_config(&node, &exe);
    cfg.hooks_dir = Some(hooks_dir.clone());
    node.put(plugin_spec(true));
    let agent = spawn(&node, cfg, None);
    let st = node
        .wait_phase(&[ProgressPhase::Failed, ProgressPhase::Rebooting], T)
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Failed), "{st:?}");
    assert_eq!(st.failure_reason.as_deref(), Some("HookFailed"));
    let msg = st.message.unwrap_or_default();
    let hook = hooks_dir.join("default/pre-install");
    assert!(
        msg.contains(&hook.display().to_string())
            && msg.contains("exited with code 3")
            && msg.contains("pre-install says hello"),
        "{msg}"
    );
    assert!(!os.join("request-apply.json").exists(), "not applied");
    assert!(!node.host.reboot_requested());
}

/// Fake `rpm-ostree`: `status --json` prints `<dir>/status.json`, `rebase` records
/// its argument and writes a status with that deployment staged.
fn fake_rpm_ostree(dir: &Path) -> PathBuf {
    let exe = dir.join("rpm-ostree");
    let d = dir.display();
    write_exe(
        &exe,
        &format!(
            r#"printf '%s\n' "$*" >> '{d}/rpm-ostree.args'
case "$1" in
  status) cat '{d}/status.json' ;;
  rebase) cp '{d}/staged.json' '{d}/status.json'; echo "Staging deployment... done" ;;
  *) echo "unexpected $1" >&2; exit 2 ;;
esac"#
        ),
    );
    exe
}

fn deployment(checksum: char, version: &str, booted: bool, staged: bool) -> serde_json::Value {
    json!({
        "osname": "fedora", "checksum": checksum.to_string().repeat(64), "serial": 0,
        "version": version, "origin": format!("fedora:fedora/{version}"),
        "booted": booted, "staged": staged,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_rpm_ostree_stage_reboot_confirm_and_a_boot_into_the_wrong_deployment() {
    for wrong_boot in [false, true] {
        let node = Node::new(1 << 20, "1.0");
        let d = node.dir.path();
        let exe = fake_rpm_ostree(d);
        let old = deployment('a', "1.0", true, false);
        fs::write(
            d.join("status.json"),
            json!({"deployments": [old]}).to_string(),
        )
        .unwrap();
        let staged = json!({"deployments": [deployment('b', "2.0", false, true), old]});
        fs::write(d.join("staged.json"), staged.to_string()).unwrap();
        let mut cfg = node.config();
        let mut oc = OstreeConfig::new(OstreeTool::RpmOstreeRebase);
        oc.program = Some(exe);
        cfg.backend = BackendConfig::Ostree(oc);
        // The staged deployment is recognised by its commit checksum.
        let mut s = spec(
            "2.0",
            "fedora:fedora/2.0",
            &format!("sha256:{}", "b".repeat(64)),
            None,
        );
        s.reboot_approved = true;
        node.put(s);
        rebooted(spawn(&node, cfg.clone(), None)).await;
        let args = fs::read_to_string(d.join("rpm-ostree.args")).unwrap();
        assert!(
            args.lines().any(|l| l == "rebase -- fedora:fedora/2.0"),
            "{args}"
        );
        assert_eq!(node.status().unwrap().reboot_required, Some(true));

        node.host.boot().unwrap();
        let after = if wrong_boot {
            // The bootloader fell back to the old deployment.
            json!({"deployments": [old, deployment('b', "2.0", false, false)]})
        } else {
            json!({"deployments": [deployment('b', "2.0", true, false), deployment('a', "1.0", false, false)]})
        };
        fs::write(d.join("status.json"), after.to_string()).unwrap();
        let agent = spawn(&node, cfg, None);
        let st = node
            .wait_phase(
                &[
                    ProgressPhase::Completed,
                    ProgressPhase::RolledBack,
                    ProgressPhase::Failed,
                ],
                T,
            )
            .await;
        agent.abort();
        if wrong_boot {
            assert_eq!(st.phase, Some(ProgressPhase::RolledBack), "{st:?}");
            assert!(
                st.message
                    .unwrap_or_default()
                    .contains("booted fedora aaaaaaaaaaaa.0")
            );
        } else {
            assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
            assert_eq!(st.current_version.as_deref(), Some("2.0"));
        }
    }
}
