//! `spec.kernelArguments` on an A/B node: the agent writes the new slot's arguments into
//! the boot environment (read back with the real `grub-editenv`) before it arms the
//! try, the (simulated) boot into the slot builds its kernel command line from them as
//! the shipped GRUB script does, and the completed status reports that command line.
//! Arguments the boot variable cannot carry fail the attempt before any download. An OS
//! plugin receives them in its request.

mod common;

use std::process::Command;
use std::time::Duration;

use common::server::ImageServer;
use common::*;
use osroll_agent::boot::BootControl;
use osroll_agent::simhost::image_bytes;
use osroll_agent::{AgentExit, Slot};
use osroll_api::ProgressPhase;
use osroll_api::upgrade::KernelArguments;

const T: Duration = Duration::from_secs(20);

fn kargs(add: &[&str], remove: &[&str]) -> KernelArguments {
    KernelArguments {
        add: add.iter().map(|s| s.to_string()).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

/// `grub-editenv FILE list`, as `name=value` lines.
fn grub_editenv_list(node: &Node) -> Vec<String> {
    let path = node.host.boot_env().path();
    let out = Command::new("grub-editenv")
        .arg(path)
        .arg("list")
        .output()
        .expect("grub-editenv (package grub-common) must be installed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_slot_boots_with_the_edited_arguments_and_status_shows_them() {
    let img = image_bytes("v2", 1 << 20);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let node = Node::new(2 << 20, "v1");
    // What the installer gave slot A.
    node.host
        .boot_env()
        .set_slot_cmdline(Slot::A, "quiet splash mitigations=auto")
        .unwrap();
    let mut s = spec("v2", &srv.url(), &checksum(&z), Some(img.len() as u64));
    s.kernel_arguments = Some(kargs(
        &["console=ttyS0", "mitigations=off"],
        &["quiet", "mitigations"],
    ));
    s.reboot_approved = true;
    node.put(s);

    let agent = node.spawn_agent();
    let exit = tokio::time::timeout(T, agent).await.unwrap().unwrap();
    assert_eq!(exit.unwrap(), AgentExit::Rebooted);
    let env = grub_editenv_list(&node);
    for want in [
        "osroll_cmdline_B=splash console=ttyS0 mitigations=off",
        "osroll_cmdline_A=quiet splash mitigations=auto",
        "osroll_try=B",
    ] {
        assert!(env.iter().any(|l| l == want), "{want} not in {env:?}");
    }

    let boot = node.host.boot().unwrap();
    assert_eq!(boot.slot, Slot::B);
    let agent = node.spawn_agent();
    let st = node
        .wait_phase(&[ProgressPhase::Completed, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(
        st.kernel_command_line.as_deref(),
        Some("root=PARTLABEL=osroll-b osroll.slot=B splash console=ttyS0 mitigations=off")
    );
    // Falling back to A would boot A's own arguments, untouched.
    assert_eq!(
        node.host.cmdline_for(Slot::A).unwrap(),
        "root=PARTLABEL=osroll-a osroll.slot=A quiet splash mitigations=auto"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_the_boot_variable_cannot_carry_fail_before_the_download() {
    let img = image_bytes("v2", 1 << 20);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let node = Node::new(2 << 20, "v1");
    let b = node.slot_hash(Slot::B);
    let mut s = spec("v2", &srv.url(), &checksum(&z), Some(img.len() as u64));
    s.kernel_arguments = Some(kargs(&["init=/bin/sh; reboot"], &[]));
    node.put(s);
    let agent = node.spawn_agent();
    let st = node
        .wait_phase(&[ProgressPhase::Failed, ProgressPhase::Staged], T)
        .await;
    agent.abort();
    assert_eq!(st.failure_reason.as_deref(), Some("InvalidSpec"), "{st:?}");
    assert!(
        st.message
            .unwrap_or_default()
            .contains("spec.kernelArguments"),
        "the message names the field"
    );
    assert_eq!(node.slot_hash(Slot::B), b, "slot B untouched");
    assert!(srv.requests().is_empty(), "nothing downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_them_in_its_request() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::new(1 << 20, "1.0");
    let exe = node.dir.path().join("os-plugin");
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\ncat > '{}'/request-\"$1\".json\necho '{{\"apiVersion\":\"osroll.io/plugin/v1\",\"ok\":true,\"rebootRequired\":true,\"currentVersion\":\"1.0\"}}'\n",
            node.dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = node.config();
    cfg.backend = osroll_agent::backends::driver::BackendConfig::Plugin {
        path: exe,
        timeout: T,
    };
    let mut s = spec("2.0", "https://os.example/2.0", "sha256:00", None);
    s.kernel_arguments = Some(kargs(&["hugepages=16"], &["quiet"]));
    node.put(s);
    let agent = node.spawn_agent_with(cfg);
    let st = node
        .wait_phase(&[ProgressPhase::Staged, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:?}");
    let req: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(node.dir.path().join("request-stage.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        req["kernelArguments"],
        serde_json::json!({"add": ["hugepages=16"], "remove": ["quiet"]})
    );
}
