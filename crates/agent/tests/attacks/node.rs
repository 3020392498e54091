//! The findings about the node itself (issue 17): a download past what the image can
//! take, a mounted slot, hooks someone else can write or that see the agent's
//! secrets, and plain http in what a deployment tool fetches from.

use super::*;

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
    // Only the owner may write a hook's directory, whatever the umask.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o755)
        .create(hook.parent().unwrap())
        .unwrap();
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
        .args([
            "--exact",
            "node::hooks_get_a_clean_environment",
            "--nocapture",
        ])
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
