//! The real `kubectl` binary against the test API server, with a generated kubeconfig and
//! no `--validate=false`: CRDs, custom objects, printer columns, validation errors,
//! patches, `wait`, `get -w`, `api-resources` and client-side dry runs. Every object is
//! named with the harness instance's prefix, so the tests also hold on a shared cluster
//! (`OSROLL_E2E_KUBECONFIG`) that has the CRDs and other tests' objects already.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress};
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// An OSUpgrade named `NAME` (replaced by [`named`]).
const UPGRADE: &str = r#"
apiVersion: osroll.io/v1alpha1
kind: OSUpgrade
metadata:
  name: NAME
spec:
  version: v1.35.3
  catalog:
    inline: |
      stable: v1.35.3
"#;

/// An OSUpgradeProgress named `NAME` for node `NAME`.
const PROGRESS: &str = r#"
apiVersion: osroll.io/v1alpha1
kind: OSUpgradeProgress
metadata:
  name: NAME
spec:
  nodeName: NAME
"#;

/// `manifest` with `NAME` replaced by the instance's `base`.
fn named(c: &Cluster, manifest: &str, base: &str) -> String {
    manifest.replace("NAME", &c.name(base))
}

/// A cluster where `kubectl apply` of the CRDs succeeds; the harness installed them
/// already, so kubectl reports them configured or unchanged, never created.
async fn with_crds() -> Cluster {
    let c = Cluster::start().await.unwrap();
    let out = c
        .kubectl_run(&["apply", "-f", "-"], Some(&osroll_api::crd::crds_yaml()))
        .await
        .unwrap();
    assert!(out.success(), "applying CRDs: {out:?}");
    let crd = "customresourcedefinition.apiextensions.k8s.io/osupgrades.osroll.io";
    assert!(
        [" configured", " unchanged"]
            .iter()
            .any(|w| out.stdout.contains(&format!("{crd}{w}"))),
        "{out:?}"
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_apply_and_objects_print_their_columns() {
    let c = with_crds().await;
    let fleet = c.name("fleet");
    let out = c
        .kubectl_run(&["apply", "-f", "-"], Some(&named(&c, UPGRADE, "fleet")))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("osupgrade.osroll.io/{fleet} created")),
        "{out:?}"
    );
    let api: Api<OSUpgrade> = Api::all(c.admin());
    let status = json!({"status": {"phase": "Progressing", "resolvedVersion": "v1.35.3"}});
    api.patch_status(&fleet, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let out = c
        .kubectl_run(&["get", "osupgrades", &fleet], None)
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "DESIRED", "RESOLVED", "PHASE", "AGE"],
        "{}",
        out.stdout
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        [fleet.as_str(), "v1.35.3", "v1.35.3", "Progressing"],
        "{}",
        out.stdout
    );
    // Short name and the progress resource's columns.
    assert!(
        c.kubectl_run(&["apply", "-f", "-"], Some(&named(&c, PROGRESS, "node-a")))
            .await
            .unwrap()
            .success()
    );
    let out = c
        .kubectl_run(&["get", "osup", &c.name("node-a")], None)
        .await
        .unwrap();
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "NODE", "SOURCE", "CURRENT", "TARGET", "STATUS", "AGE"
        ],
        "{}",
        out.stdout
    );
    // Applying the same manifest again is a no-op.
    let out = c
        .kubectl_run(&["apply", "-f", "-"], Some(&named(&c, UPGRADE, "fleet")))
        .await
        .unwrap();
    assert!(
        out.stdout
            .contains(&format!("osupgrade.osroll.io/{fleet} unchanged")),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_rejected_with_422_naming_the_field() {
    let c = with_crds().await;
    let bad = named(&c, UPGRADE, "fleet").replace("version: v1.35.3", "version: \"not a version\"");
    let out = c
        .kubectl_run(&["apply", "-f", "-"], Some(&bad))
        .await
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains(&format!("The OSUpgrade \"{}\" is invalid", c.name("fleet"))),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("spec.version: Invalid value: \"not a version\""),
        "{out:?}"
    );
    // Sim-only: the status code as the API server logged it (kubectl's message above
    // is the real-cluster equivalent).
    if let Some(audit) = c.audit() {
        let create = audit
            .iter()
            .rev()
            .find(|e| e.verb == "create" && e.resource == "osupgrades")
            .unwrap();
        assert_eq!(create.code, 422);
    }
    // A missing required field: version without catalog is neither mode (the schema's
    // oneOf; a real API server also answers with the CRD's CEL message naming the fields).
    let missing = format!(
        "apiVersion: osroll.io/v1alpha1\nkind: OSUpgrade\nmetadata: {{name: {}}}\nspec: {{version: v1}}\n",
        c.name("m")
    );
    let out = c
        .kubectl_run(&["apply", "-f", "-"], Some(&missing))
        .await
        .unwrap();
    assert!(
        out.stderr
            .contains("spec in body must validate one and only one schema (oneOf)")
            || out
                .stderr
                .contains("spec.version and spec.catalog are both required"),
        "{out:?}"
    );
    // An unknown field fails strict field validation (kubectl's default).
    let unknown = named(&c, UPGRADE, "fleet").replace("spec:\n", "spec:\n  colour: blue\n");
    let out = c
        .kubectl_run(&["apply", "-f", "-"], Some(&unknown))
        .await
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("unknown field \"spec.colour\""),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_of_retry_nonce_bumps_generation() {
    let c = with_crds().await;
    assert!(
        c.kubectl_run(&["apply", "-f", "-"], Some(&named(&c, PROGRESS, "node-a")))
            .await
            .unwrap()
            .success()
    );
    let out = c
        .kubectl_run(
            &[
                "patch",
                "osupgradeprogress",
                &c.name("node-a"),
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"retryNonce":"try-2"}}"#,
            ],
            None,
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("patched"), "{out:?}");
    let api: Api<OSUpgradeProgress> = Api::all(c.admin());
    let p = api.get(&c.name("node-a")).await.unwrap();
    assert_eq!(p.spec.retry_nonce.as_deref(), Some("try-2"));
    assert_eq!(p.metadata.generation, Some(2));
    // Strategic merge patch is refused for custom resources, like a real API server.
    let out = c
        .kubectl_run(
            &[
                "patch",
                "osup",
                &c.name("node-a"),
                "-p",
                r#"{"spec":{"retryNonce":"x"}}"#,
            ],
            None,
        )
        .await
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("strategic merge patch is not supported"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_returns_when_the_condition_is_set() {
    let c = with_crds().await;
    assert!(
        c.kubectl_run(&["apply", "-f", "-"], Some(&named(&c, UPGRADE, "fleet")))
            .await
            .unwrap()
            .success()
    );
    let fleet = c.name("fleet");
    let mut wait = c.kubectl();
    wait.args([
        "wait",
        "--for=condition=Ready",
        &format!("osupgrade/{fleet}"),
        "--timeout=30s",
    ]);
    let waiter = tokio::spawn(osroll_sim::testing::run_kubectl(wait, &[], None));
    // The condition only appears once kubectl is watching (or has listed): either way it must return.
    let api: Api<OSUpgrade> = Api::all(c.admin());
    let status = json!({"status": {"phase": "Completed", "conditions": [
        {"type": "Ready", "status": "True", "reason": "AllNodesCompleted", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
    // Sim-only synchronisation: on a real cluster the status may be set before kubectl
    // lists, which it must handle as well.
    wait_for(
        "kubectl wait to start watching",
        Duration::from_secs(10),
        || {
            let audit = c.audit();
            async move {
                let Some(audit) = audit else { return Some(()) };
                audit
                    .iter()
                    .any(|e| e.resource == "osupgrades" && (e.verb == "watch" || e.verb == "list"))
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    api.patch_status(&fleet, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("condition met"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_streams_changes() {
    let c = with_crds().await;
    assert!(
        c.kubectl_run(&["apply", "-f", "-"], Some(&named(&c, UPGRADE, "fleet")))
            .await
            .unwrap()
            .success()
    );
    let fleet = c.name("fleet");
    let mut cmd = c.kubectl();
    cmd.args(["get", "osupgrades", "-w"])
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("NAME"), "{first}");
    // On a shared cluster other tests' OSUpgrades are listed too: find this one's line.
    let listed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let l = lines.next_line().await.unwrap().unwrap();
            if l.starts_with(&fleet) {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert!(listed.starts_with(&fleet), "{listed}");
    let api: Api<OSUpgrade> = Api::all(c.admin());
    let status = json!({"status": {"phase": "Paused"}});
    api.patch_status(&fleet, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let l = lines.next_line().await.unwrap().unwrap();
            if l.starts_with(&fleet) {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        changed.starts_with(&fleet) && changed.contains("Paused"),
        "{changed}"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_resources_and_client_dry_run() {
    let c = with_crds().await;
    // A new object: created (dry run), and not created.
    let out = c
        .kubectl_run(
            &["apply", "--dry-run=client", "-f", "-"],
            Some(&named(&c, UPGRADE, "dry")),
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("created (dry run)"), "{out:?}");
    let ups: Api<OSUpgrade> = Api::all(c.admin());
    assert!(ups.get_opt(&c.name("dry")).await.unwrap().is_none());
    let out = c
        .kubectl_run(
            &["apply", "--dry-run=client", "-f", "-"],
            Some(&osroll_api::crd::crds_yaml()),
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let out = c.kubectl_run(&["api-resources"], None).await.unwrap();
    assert!(out.success(), "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("osupgrades "))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "osupgrades",
            "osu",
            "osroll.io/v1alpha1",
            "false",
            "OSUpgrade"
        ]
    );
    let out = c
        .kubectl_run(&["explain", "osupgrade.spec.version"], None)
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("version"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kubeconfig_user_is_audited() {
    let c = with_crds().await;
    let kc = c.kubeconfig_for(&c.controller_user()).unwrap();
    let out = osroll_sim::testing::run_kubectl(c.kubectl_with(&kc), &["get", "osupgrades"], None)
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    // Sim-only: the test API server's own audit log (a real cluster's is not readable
    // from a test).
    let Some(audit) = c.audit() else { return };
    let list = audit
        .iter()
        .find(|e| e.resource == "osupgrades" && e.verb == "list" && e.user == c.controller_user())
        .unwrap_or_else(|| panic!("{audit:#?}"));
    assert_eq!(
        (list.group.as_str(), list.version.as_str(), list.code),
        ("osroll.io", "v1alpha1", 200)
    );
    assert!(audit.iter().any(|e| e.user == "admin"
        && e.resource == "customresourcedefinitions"
        && e.verb == "patch"));
}
