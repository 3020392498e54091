//! `osroll agent --firstboot --require-signed-catalog` against the test API server with
//! RBAC enforced, as the agent's service account from the generated manifests: no
//! version file, so it follows the active OSUpgrade, whose catalog is a signed
//! ConfigMap in the controller's namespace (or, in the second test, a signed catalog
//! served at a URL, with `<url>.minisig` beside it). The node (a simulated A/B host) downloads
//! the image over plain http only because the OSUpgrade allows it, boots the new slot
//! with the OSUpgrade's kernel arguments, and the unit's stamp is written. A catalog
//! signed by another key, or not signed at all, fails the first boot before anything is
//! downloaded.

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use osroll_agent::{SimHost, Slot};
use osroll_api::OSUpgrade;
use osroll_sim::demo::images::ImageServer;
use osroll_sim::testing::Cluster;
use serde_json::json;

/// What one first boot runs against: the cluster instance and the agent's kubeconfig.
struct Node<'a> {
    cluster: &'a Cluster,
    kubeconfig: std::path::PathBuf,
}

impl<'a> Node<'a> {
    /// The agent's service account of `cluster` (RBAC from the generated manifests).
    fn new(cluster: &'a Cluster) -> Self {
        let kubeconfig = cluster.kubeconfig_for(&cluster.agent_user()).unwrap();
        Node {
            cluster,
            kubeconfig,
        }
    }
}

/// `osroll agent --firstboot` on the simulated host in `dir`, as the agent's account.
fn firstboot(dir: &Path, node: &Node) -> Output {
    let d = |p: &str| dir.join(p).display().to_string();
    let name = node.cluster.name("fresh-1");
    Command::new(env!("CARGO_BIN_EXE_osroll"))
        .args(["agent", "--firstboot", "--node-name", &name])
        .args(["--catalog-namespace", &node.cluster.namespace()])
        .args(["--sim-host", &d("host"), "--state-dir", &d("state")])
        .args(["--firstboot-version-file", &d("no-such-file")])
        .args(["--firstboot-done", &d("firstboot.done")])
        .args(["--trusted-keys", &d("keys"), "--require-signed-catalog"])
        .arg("--kubeconfig")
        .arg(&node.kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A trusted comment with a serial and an expiry a day from now.
fn fresh() -> String {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    osroll_api::freshness::comment(&osroll_api::freshness::Freshness {
        serial: 1,
        expires: Timestamp::now() + SignedDuration::from_hours(24),
    })
}

fn text(o: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh node directory: a host on 1.0 and the trusted public key.
fn node(dir: &Path, public_key: &str) {
    SimHost::create(&dir.join("host"), 1 << 20, "1.0").unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/release.pub"), public_key).unwrap();
}

/// Create the OSUpgrade with `spec` and mark it Progressing towards 2.0, as the
/// controller would: the active OSUpgrade a first boot follows.
async fn activate(cluster: &Cluster, spec: serde_json::Value) {
    let up: OSUpgrade = cluster.upgrade("fleet", spec).unwrap();
    let name = up.metadata.name.clone().unwrap();
    let ups: Api<OSUpgrade> = Api::all(cluster.admin());
    ups.create(&PostParams::default(), &up).await.unwrap();
    ups.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Progressing", "resolvedVersion": "2.0"}})),
    )
    .await
    .unwrap();
}

async fn set_catalog(cluster: &Cluster, catalog: &str, signature: Option<&str>) {
    let mut data = json!({ "catalog.yaml": catalog });
    if let Some(s) = signature {
        data["catalog.yaml.minisig"] = json!(s);
    }
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "fleet-catalog", "namespace": cluster.namespace()},
        "data": data,
    }))
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.admin(), &cluster.namespace());
    let _ = api.delete("fleet-catalog", &Default::default()).await;
    api.create(&PostParams::default(), &cm).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_follows_a_signed_configmap_catalog_under_the_agents_rbac() {
    let cluster = Cluster::start().await.unwrap();
    let agent = Node::new(&cluster);

    let images = ImageServer::start(&["2.0"], 256 << 10).await.unwrap();
    let catalog = images.catalog("2.0");
    let (public, secret) = osroll_api::signing::keygen().unwrap();
    let signature =
        osroll_api::signing::sign(catalog.as_bytes(), &secret, None, Some(&fresh())).unwrap();
    set_catalog(&cluster, &catalog, Some(&signature)).await;
    activate(
        &cluster,
        json!({
            "version": "2.0",
            "catalog": {"configMap": "fleet-catalog"},
            "allowHttpImages": true,
            "kernelArguments": {"add": ["nosmt"]},
        }),
    )
    .await;

    // The signed catalog: staged, rebooted, confirmed, stamped.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    node(d, &public);
    let out = firstboot(d, &agent);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("simulated reboot requested"),
        "{}",
        text(&out)
    );
    let host = SimHost::open(&d.join("host")).unwrap();
    let boot = host.boot().unwrap();
    assert_eq!((boot.slot, boot.version.as_deref()), (Slot::B, Some("2.0")));
    assert_eq!(
        host.cmdline_for(Slot::B).unwrap(),
        "root=PARTLABEL=osroll-b osroll.slot=B nosmt",
        "the OSUpgrade's kernel arguments are on the new slot's command line"
    );
    let out = firstboot(d, &agent);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("first boot: Completed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("firstboot.done"))
            .unwrap()
            .trim(),
        "2.0"
    );
    // The ConfigMap was read by the agent's account, and allowed.
    let audit = cluster.audit().unwrap();
    assert!(
        audit.iter().any(|e| e.user == cluster.agent_user()
            && e.resource == "configmaps"
            && e.name == "fleet-catalog"
            && e.code == 200),
        "the agent read the catalog ConfigMap"
    );

    // Signed by a key this node does not trust, or not signed: refused before staging.
    let (_, other_secret) = osroll_api::signing::keygen().unwrap();
    let forged =
        osroll_api::signing::sign(catalog.as_bytes(), &other_secret, None, Some(&fresh())).unwrap();
    for (signature, reason) in [
        (Some(forged.as_str()), "UnknownSigningKey"),
        (None, "CatalogNotSigned"),
    ] {
        set_catalog(&cluster, &catalog, signature).await;
        let dir = tempfile::tempdir().unwrap();
        node(dir.path(), &public);
        let out = firstboot(dir.path(), &agent);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{reason}: {}",
            text(&out)
        );
        let host = SimHost::open(&dir.path().join("host")).unwrap();
        assert_eq!(host.slot_version(Slot::B).unwrap(), None, "nothing written");
        assert!(!host.reboot_requested());
    }
}

/// Serve `files` (path -> body) over HTTP on loopback (404 for anything else); the base
/// URL.
async fn serve(files: Vec<(&'static str, String)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut app = axum::Router::new();
    for (path, body) in files {
        app = app.route(path, axum::routing::get(move || async move { body }));
    }
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_follows_a_signed_url_catalog() {
    let cluster = Cluster::start().await.unwrap();
    let agent = Node::new(&cluster);

    let images = ImageServer::start(&["2.0"], 256 << 10).await.unwrap();
    let catalog = images.catalog("2.0");
    let (public, secret) = osroll_api::signing::keygen().unwrap();
    let signature =
        osroll_api::signing::sign(catalog.as_bytes(), &secret, None, Some(&fresh())).unwrap();
    let base = serve(vec![
        ("/catalog.yaml", catalog.clone()),
        ("/catalog.yaml.minisig", signature),
    ])
    .await;
    activate(
        &cluster,
        json!({
            "version": "stable",
            "catalog": {"url": format!("{base}/catalog.yaml")},
            "allowHttpImages": true,
        }),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    node(dir.path(), &public);
    let out = firstboot(dir.path(), &agent);
    assert!(out.status.success(), "{}", text(&out));
    let host = SimHost::open(&dir.path().join("host")).unwrap();
    assert_eq!(host.boot().unwrap().version.as_deref(), Some("2.0"));
    let out = firstboot(dir.path(), &agent);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Completed"),
        "{}",
        text(&out)
    );
}
