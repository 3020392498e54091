//! The reboot-needed sources against the real things: a sentinel file, a sentinel
//! command run as a process (exit 0, exit 1, killed by its timeout), and update_engine's
//! `GetStatus` answered by a service on a private `dbus-daemon` bus, reached through the
//! same zbus client the agent uses on the system bus. Without `dbus-daemon` the D-Bus
//! test fails saying so (Debian package `dbus-daemon`, in ci/debian-packages.txt).
//! (The pending OSTree deployment is tested against the real `ostree` in ostree_real.rs.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osroll_agent::reboot::sentinel::{SentinelCommand, SentinelFile};
use osroll_agent::reboot::update_engine::{
    BUS_NAME, INTERFACE, NEED_REBOOT, OBJECT_PATH, UpdateEngine,
};
use osroll_agent::reboot::{RebootConfig, RebootSource, SourceError, Sources, UpdateEngineBus};
use osroll_api::RebootSource as Kind;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn the_sentinel_file_signals_while_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reboot-required");
    let source = SentinelFile::new(path.clone());
    assert_eq!(source.check().await.unwrap(), None);
    std::fs::write(&path, "*** System restart required ***\n").unwrap();
    let s = source.check().await.unwrap().expect("signal");
    assert_eq!(s.source, Kind::SentinelFile);
    assert!(s.detail.contains("reboot-required"), "{}", s.detail);
}

#[tokio::test]
async fn the_sentinel_command_signals_on_exit_zero_and_a_hung_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("needs-reboot");
    let argv = |script: &str| vec!["sh".to_string(), "-c".into(), script.into()];
    let test_flag = argv(&format!("test -e {}", flag.display()));
    let source = SentinelCommand::new(test_flag.clone(), Duration::from_secs(10));
    assert_eq!(
        source.check().await.unwrap(),
        None,
        "exit 1: no reboot needed"
    );
    std::fs::write(&flag, "").unwrap();
    let s = source
        .check()
        .await
        .unwrap()
        .expect("exit 0: reboot needed");
    assert_eq!(s.source, Kind::SentinelCommand);
    assert!(s.detail.contains("exited 0"), "{}", s.detail);

    let hung = SentinelCommand::new(argv("sleep 30"), Duration::from_millis(200));
    match hung.check().await {
        Err(e @ SourceError::Command { .. }) => {
            assert!(e.to_string().contains("sleep 30"), "{e}")
        }
        other => panic!("a timed-out command must be an error: {other:?}"),
    }
    let missing = SentinelCommand::new(
        vec!["/nonexistent/osroll-check".into()],
        Duration::from_secs(5),
    );
    assert!(
        missing.check().await.is_err(),
        "a command that cannot run is no answer"
    );

    // Configured as the agent's flags configure it, next to a file that is absent.
    let sources = Sources::from_config(&RebootConfig {
        sentinel_file: Some(dir.path().join("absent")),
        sentinel_command: Some(test_flag),
        ..RebootConfig::default()
    });
    let s = sources
        .check()
        .await
        .unwrap()
        .expect("the command's signal");
    assert_eq!(s.source, Kind::SentinelCommand);
}

/// A private bus: `dbus-daemon --session --print-address`, killed on drop.
struct PrivateBus {
    _daemon: tokio::process::Child,
    address: String,
}

async fn private_bus() -> PrivateBus {
    let mut daemon = tokio::process::Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("dbus-daemon is required for the update_engine test (Debian package dbus-daemon)");
    let stdout = daemon.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("dbus-daemon printed no address within 10 s")
    .expect("reading dbus-daemon's address");
    PrivateBus {
        _daemon: daemon,
        address: line.trim().to_string(),
    }
}

/// A stand-in update_engine: answers `GetStatus` with whatever operation the test sets.
struct FakeEngine {
    operation: Arc<Mutex<String>>,
}

#[zbus::interface(name = "com.coreos.update1.Manager")]
impl FakeEngine {
    fn get_status(&self) -> (i64, f64, String, String, i64) {
        let op = self.operation.lock().unwrap().clone();
        (1_700_000_000, 0.0, op, "3815.2.0".into(), 0)
    }
}

#[tokio::test]
async fn update_engine_on_a_private_bus_signals_need_reboot_with_the_new_version() {
    let bus = private_bus().await;
    let operation = Arc::new(Mutex::new("UPDATE_STATUS_IDLE".to_string()));
    assert_eq!(INTERFACE, "com.coreos.update1.Manager");
    let _service = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name(BUS_NAME)
        .unwrap()
        .serve_at(
            OBJECT_PATH,
            FakeEngine {
                operation: operation.clone(),
            },
        )
        .unwrap()
        .build()
        .await
        .expect("serving the stand-in update_engine");

    let source = UpdateEngine::new(UpdateEngineBus::Address(bus.address.clone()));
    assert_eq!(source.check().await.unwrap(), None, "idle");
    *operation.lock().unwrap() = "UPDATE_STATUS_DOWNLOADING".into();
    assert_eq!(source.check().await.unwrap(), None, "downloading");
    *operation.lock().unwrap() = NEED_REBOOT.into();
    let s = source.check().await.unwrap().expect("need reboot");
    assert_eq!(s.source, Kind::UpdateEngine);
    assert_eq!(s.version.as_deref(), Some("3815.2.0"));

    // A bus without update_engine is an error, not "no reboot needed".
    drop(_service);
    let empty = private_bus().await;
    let lonely = UpdateEngine::new(UpdateEngineBus::Address(empty.address.clone()));
    match lonely.check().await {
        Err(e @ SourceError::UpdateEngine { .. }) => {
            assert!(e.to_string().contains(&empty.address), "{e}")
        }
        other => panic!("{other:?}"),
    }
}
