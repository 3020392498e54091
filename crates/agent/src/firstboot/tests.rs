//! First boot: where the wanted version comes from, and a whole first-boot update with a
//! reboot on a simulated host driven by a script plugin.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use osroll_api::{ImageRef, OSUpgrade, OSUpgradeSpec, OSUpgradeStatus, SourceRef, UpgradePhase};
use serde_json::json;

use super::*;
use crate::backends::driver::BackendConfig;
use crate::simhost::SimHost;

#[test]
fn the_version_file_is_a_bare_version_or_an_object() {
    let w = parse_version_file("2.1.0\n", "/etc/osroll/firstboot-version").unwrap();
    assert_eq!(w.image.version, "2.1.0");
    assert!(w.image.url.is_empty() && w.os_version_management.is_none());
    let w = parse_version_file(
        "version: \"2.1\"\nurl: https://img/2.1.zst\nchecksum: sha256:ab\nosVersionManagement:\n  channel: beta\n",
        "f",
    )
    .unwrap();
    assert_eq!(
        (w.image.url.as_str(), w.os_version_management),
        ("https://img/2.1.zst", Some(json!({"channel": "beta"})))
    );
    assert!(
        parse_version_file("  \n", "f")
            .unwrap_err()
            .to_string()
            .contains("f is empty")
    );
    let e = parse_version_file("not a version!", "f")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f: version"), "{e}");
    let e = parse_version_file("version: \"2\"\nbogus: 1\n", "f")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
}

fn upgrade(name: &str, created: i64, resolved: Option<&str>, phase: UpgradePhase) -> OSUpgrade {
    let mut u = OSUpgrade::new(
        name,
        OSUpgradeSpec {
            version: "stable".into(),
            os_version_management: Some(json!({"from": name})),
            ..Default::default()
        },
    );
    u.spec.catalog.inline = Some(format!(
        "stable: \"3.0\"\nimages:\n  - version: \"3.0\"\n    url: https://img/3.0\n    checksum: sha256:{}\n",
        "c".repeat(64)
    ));
    u.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
    ));
    u.status = Some(OSUpgradeStatus {
        resolved_version: resolved.map(String::from),
        phase: Some(phase),
        ..Default::default()
    });
    u
}

/// `wanted` from the cluster's objects when the catalog is inline.
fn from_cluster(ups: &[OSUpgrade], ps: &[OSUpgradeProgress]) -> Result<Wanted, WantedError> {
    let up = wanted::active_upgrade(ups)?;
    match wanted::from_progress(up, ps) {
        Some(w) => Ok(w),
        None => wanted::from_catalog(up, &wanted::inline_catalog(up).unwrap()),
    }
}

#[test]
fn the_cluster_answer_is_the_newest_active_upgrade() {
    let ups = vec![
        upgrade("old", 100, Some("2.0"), UpgradePhase::Completed),
        upgrade("new", 200, Some("3.0"), UpgradePhase::Progressing),
        upgrade("bad", 300, Some("9.0"), UpgradePhase::Rejected),
        upgrade("unresolved", 400, None, UpgradePhase::Pending),
    ];
    // No progress of "new" yet: resolved from its inline catalog.
    let w = from_cluster(&ups, &[]).unwrap();
    assert_eq!(
        (
            w.image.version.as_str(),
            w.image.url.as_str(),
            w.origin.as_str()
        ),
        ("3.0", "https://img/3.0", "OSUpgrade new")
    );
    assert_eq!(w.os_version_management, Some(json!({"from": "new"})));
    // A progress of "new" carries the image the controller resolved: it wins.
    let p = OSUpgradeProgress::new(
        "p",
        OSUpgradeProgressSpec {
            source_ref: Some(SourceRef { name: "new".into() }),
            image: Some(ImageRef {
                version: "3.0".into(),
                url: "https://mirror/3.0".into(),
                checksum: "sha256:dd".into(),
                size: Some(5),
                reboot_required: None,
                chunk_index: None,
            }),
            ..Default::default()
        },
    );
    assert_eq!(
        from_cluster(&ups, &[p]).unwrap().image.url,
        "https://mirror/3.0"
    );
    let e = from_cluster(&ups[2..], &[]).unwrap_err().to_string();
    assert!(e.contains("no active OSUpgrade"), "{e}");
}

#[test]
fn the_first_boot_progress_carries_the_upgrades_policy_not_its_own() {
    let mut up = upgrade("new", 200, Some("3.0"), UpgradePhase::Progressing);
    let cat = wanted::inline_catalog(&up).unwrap();
    // Nothing opted in: no http, no signature, but the digest of what was read.
    let w = wanted::from_catalog(&up, &cat).unwrap();
    let p = firstboot_progress("n", &w);
    assert!(!p.spec.allow_http_images);
    assert_eq!(p.spec.signed_catalog, None);
    assert_eq!(
        p.spec.catalog_digest,
        Some(osroll_api::catalog::digest(cat.text.as_bytes()))
    );
    assert!(p.spec.reboot_approved);
    up.spec.allow_http_images = true;
    up.spec.kernel_arguments = Some(osroll_api::upgrade::KernelArguments {
        add: vec!["nosmt".into()],
        remove: vec![],
    });
    let signed = wanted::CatalogText {
        signature: Some("untrusted comment: x".into()),
        ..cat.clone()
    };
    let p = firstboot_progress("n", &wanted::from_catalog(&up, &signed).unwrap());
    assert!(p.spec.allow_http_images);
    assert_eq!(p.spec.kernel_arguments.unwrap().add, ["nosmt"]);
    assert_eq!(
        p.spec.signed_catalog,
        Some(osroll_api::SignedCatalog {
            content: cat.text.clone(),
            signature: "untrusted comment: x".into()
        })
    );
    // A progress's stamped catalog and policy travel as the controller set them.
    let stamped = OSUpgradeProgress::new(
        "p",
        OSUpgradeProgressSpec {
            source_ref: Some(SourceRef { name: "new".into() }),
            image: Some(w.image.clone()),
            allow_http_images: true,
            signed_catalog: Some(osroll_api::SignedCatalog {
                content: "c".into(),
                signature: "s".into(),
            }),
            catalog_digest: Some("sha256:x".into()),
            ..Default::default()
        },
    );
    let w = wanted::from_progress(&up, &[stamped]).unwrap();
    assert!(w.allow_http_images);
    assert_eq!(w.catalog_digest.as_deref(), Some("sha256:x"));
    assert_eq!(w.signed_catalog.unwrap().signature, "s");
}

/// A plugin whose OS is `<dir>/running`; applying needs a reboot, which the test
/// performs by moving `<dir>/next` into `running`.
fn plugin(dir: &Path) -> std::path::PathBuf {
    fs::write(dir.join("running"), "1.0").unwrap();
    let exe = dir.join("plugin");
    let d = dir.display();
    fs::write(
        &exe,
        format!(
            r#"#!/bin/sh
cat > /dev/null
r=$(cat '{d}/running')
case "$1" in
  stage) echo '{{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true,"currentVersion":"'$r'"}}' ;;
  apply) echo 2.0 > '{d}/next'; echo '{{"apiVersion":"osroll.io/plugin/v1","ok":true,"rebootRequired":true,"currentVersion":"'$r'"}}' ;;
  verify) echo '{{"apiVersion":"osroll.io/plugin/v1","ok":true,"currentVersion":"'$r'"}}' ;;
esac
"#
        ),
    )
    .unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_updates_reboots_then_confirms_and_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::create(&dir.path().join("host"), 4096, "1.0").unwrap();
    let exe = plugin(dir.path());
    let mut cfg = AgentConfig::new("fresh-node", dir.path().join("state"));
    cfg.backend = BackendConfig::Plugin {
        path: exe,
        timeout: Duration::from_secs(20),
    };
    cfg.error_backoff = Duration::from_millis(50);
    let done = dir.path().join("firstboot.done");
    let wanted = parse_version_file("2.0", "version file").unwrap();

    let exit = run_firstboot(cfg.clone(), &wanted, Arc::new(host.clone()), &done)
        .await
        .unwrap();
    assert_eq!(exit, FirstBootExit::Rebooted);
    assert!(host.reboot_requested());
    assert!(!done.exists(), "not done before the node runs the version");

    // Power on: the OS now runs 2.0; the unit starts the agent again.
    host.boot().unwrap();
    fs::rename(dir.path().join("next"), dir.path().join("running")).unwrap();
    let exit = run_firstboot(cfg.clone(), &wanted, Arc::new(host.clone()), &done)
        .await
        .unwrap();
    let FirstBootExit::Finished(st) = exit else {
        panic!("{exit:?}")
    };
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(fs::read_to_string(&done).unwrap().trim(), "2.0");

    // Run once more (as if the stamp were ignored): nothing to do, finished at once.
    let exit = run_firstboot(cfg, &wanted, Arc::new(host.clone()), &done)
        .await
        .unwrap();
    assert!(
        matches!(exit, FirstBootExit::Finished(s) if s.phase == Some(ProgressPhase::Completed))
    );
    assert!(!host.reboot_requested());
}
