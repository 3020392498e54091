//! `osroll demo` and `osroll status` as a user runs them: the real binary, its exit code
//! and its output. The demo tests exist in builds with the `demo` feature (the default),
//! as `osroll demo` does.

use std::process::Command;

use kube::api::{Api, Patch, PatchParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress};
use osroll_sim::testing::Cluster;
use serde_json::json;

fn osroll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osroll"))
}

#[cfg(feature = "demo")]
#[test]
fn demo_with_five_nodes_completes_every_node() {
    let out = osroll().args(["demo", "--nodes", "5"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("rollout Completed in"), "{stdout}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .collect();
    assert_eq!(table.len(), 6, "a header and one row per node:\n{stdout}");
    for (i, row) in table[1..].iter().enumerate() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cols[..7],
            [
                format!("node-{}", i + 1).as_str(),
                "1.0",
                "2.0",
                "A",
                "->",
                "B",
                "Completed"
            ],
            "{row}"
        );
        assert!(
            row.contains("Rebooting") && row.ends_with("Completed"),
            "{row}"
        );
    }
}

#[cfg(feature = "demo")]
#[test]
fn reboot_coordination_demo_reboots_exactly_the_signalled_nodes_once() {
    let out = osroll()
        .args(["demo", "--scenario", "reboot-coordination", "--nodes", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("reboots coordinated in"), "{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let want = [
        ["node-1", "true", "1", "cleared", "Completed"],
        ["node-2", "false", "0", "none", "Pending"],
        ["node-3", "true", "1", "cleared", "Completed"],
        ["node-4", "false", "0", "none", "Pending"],
    ];
    assert_eq!(rows, want, "{stdout}");
}

#[cfg(feature = "demo")]
#[test]
fn rollback_demo_takes_every_upgraded_node_back_without_downloading() {
    let out = osroll()
        .args(["demo", "--scenario", "rollback", "--nodes", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("rollout RolledBack: ") && stdout.contains("to the last node back"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bytes of the 1.0 image downloaded: 0\n"),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    let mut back = 0;
    for r in &rows {
        // NODE ROLLED-BACK VERSION SLOT DOWNLOADED CORDONED PROGRESS
        assert_eq!((r[2], r[3], r[5]), ("1.0", "A", "false"), "{stdout}");
        if r[1] == "true" {
            back += 1;
            assert_eq!((r[4], r[6]), ("0", "Completed"), "{stdout}");
            assert!(
                stdout.contains(&format!("{:<8} back to 1.0: Completed", r[0])),
                "no narration of {} going back:\n{stdout}",
                r[0]
            );
        } else {
            assert_ne!(r[6], "Completed", "{stdout}");
        }
    }
    assert!((1..4).contains(&back), "{back} nodes went back:\n{stdout}");
}

#[cfg(feature = "demo")]
#[test]
fn demo_rejects_a_bad_max_unavailable() {
    let out = osroll()
        .args(["demo", "--max-unavailable", "0%"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-unavailable \"0%\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_bars_per_node_and_totals() {
    // Names carry the harness instance's prefix: the test also holds on a shared cluster.
    let c = Cluster::start().await.unwrap();
    let fleet = c.name("fleet");
    let (node1, node2) = (c.name("node-1"), c.name("node-2"));
    let ups: Api<OSUpgrade> = Api::all(c.admin());
    let up: OSUpgrade = serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade", "metadata": {"name": fleet},
        "spec": {"version": "stable", "catalog": {"inline": "stable: \"2.0\""}},
    }))
    .unwrap();
    ups.create(&PostParams::default(), &up).await.unwrap();
    let st = json!({"status": {"phase": "Progressing", "resolvedVersion": "2.0"}});
    ups.patch_status(&fleet, &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    let ps: Api<OSUpgradeProgress> = Api::all(c.admin());
    for (node, phase, done) in [(&node1, "Completed", 2048), (&node2, "Downloading", 512)] {
        let p: OSUpgradeProgress = serde_json::from_value(json!({
            "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgress",
            "metadata": {"name": format!("p-{node}"), "labels": {"osroll.io/source": fleet, "osroll.io/node": node}},
            "spec": {"nodeName": node, "sourceRef": {"name": fleet}},
        }))
        .unwrap();
        ps.create(&PostParams::default(), &p).await.unwrap();
        let st = json!({"status": {"phase": phase, "bytesDone": done, "bytesTotal": 2048, "currentVersion": "1.0", "targetVersion": "2.0"}});
        ps.patch_status(
            &format!("p-{node}"),
            &PatchParams::default(),
            &Patch::Merge(&st),
        )
        .await
        .unwrap();
    }
    let run = |args: Vec<String>| {
        let kc = c.admin_kubeconfig().to_path_buf();
        tokio::task::spawn_blocking(move || {
            osroll().args(args).env("KUBECONFIG", kc).output().unwrap()
        })
    };
    let out = run(vec!["status".into(), fleet.clone()]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!(
            "{fleet}: stable -> 2.0  Progressing  (1/2 completed, 1 staging)"
        )),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{node2} ")))
        .unwrap_or_else(|| panic!("no row for {node2}: {stdout}"));
    assert!(
        row.contains(" Downloading [########----------------------]  25%"),
        "{stdout}"
    );
    let nope = c.name("nope");
    let out = run(vec!["status".into(), nope.clone()]).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("OSUpgrade \"{nope}\" not found"))
    );

    // --watch follows until the rollout ends (stdout is not a terminal: one line per change).
    let watcher = run(vec!["status".into(), "--watch".into(), fleet.clone()]);
    let st = json!({"status": {"phase": "Completed", "bytesDone": 2048}});
    ps.patch_status(
        &format!("p-{node2}"),
        &PatchParams::default(),
        &Patch::Merge(&st),
    )
    .await
    .unwrap();
    let done = json!({"status": {"phase": "Completed"}});
    ups.patch_status(&fleet, &PatchParams::default(), &Patch::Merge(&done))
        .await
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), watcher)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Completed  (2/2 completed)"), "{stdout}");
}
