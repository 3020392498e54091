//! API semantics through kube-rs: watch resume, bookmarks, 410 Gone, 409 conflicts,
//! PDB-guarded eviction (429), cascade deletion, the status subresource, finalizers,
//! server-side apply and selectors.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use osroll_api::OSUpgrade;
use osroll_sim::testing::{Cluster, wait_for};
use osroll_sim::{ServerConfig, TestServer};
use serde_json::{Value, json};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn next_event<S>(s: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .unwrap()
}

fn name_of(e: &WatchEvent<ConfigMap>) -> (&'static str, String) {
    match e {
        WatchEvent::Added(o) => ("ADDED", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => ("DELETED", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => ("BOOKMARK", String::new()),
        WatchEvent::Error(e) => ("ERROR", e.code.to_string()),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let c = Cluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let a = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let from = a.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let mut w = api
        .watch(&WatchParams::default().disable_bookmarks(), &from)
        .await
        .unwrap()
        .boxed();
    let got: Vec<_> = [
        next_event(&mut w).await,
        next_event(&mut w).await,
        next_event(&mut w).await,
    ]
    .iter()
    .map(name_of)
    .collect();
    assert_eq!(
        got,
        [
            ("ADDED", "b".into()),
            ("MODIFIED", "a".into()),
            ("DELETED", "b".into())
        ]
    );
    // Versions only grow.
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv > from.parse::<u64>().unwrap());
}

#[tokio::test]
async fn watch_sends_bookmarks_and_initial_events_end() {
    let s = TestServer::start_with(ServerConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap();
    let rv = s.resource_version().to_string();
    let mut w = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut w).await {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let mut w = api
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(name_of(&next_event(&mut w).await), ("ADDED", "x".into()));
    match next_event(&mut w).await {
        WatchEvent::Bookmark(b) => assert!(
            b.metadata
                .annotations
                .contains_key("k8s.io/initial-events-end")
        ),
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn too_old_resource_versions_are_gone() {
    let s = TestServer::start_with(ServerConfig {
        history: 3,
        ..Default::default()
    })
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    let first = api
        .create(&PostParams::default(), &cm("c0", &[]))
        .await
        .unwrap();
    for i in 1..6 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let old = first.metadata.resource_version.unwrap();
    let mut w = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    assert_eq!(name_of(&next_event(&mut w).await), ("ERROR", "410".into()));
    // After a compaction, even a recent version is gone; a watcher re-lists and recovers.
    let recent = s.resource_version().to_string();
    api.create(&PostParams::default(), &cm("late", &[]))
        .await
        .unwrap();
    s.compact_history();
    let mut w = api
        .watch(&WatchParams::default(), &recent)
        .await
        .unwrap()
        .boxed();
    assert_eq!(name_of(&next_event(&mut w).await), ("ERROR", "410".into()));
    let cfg = kube::runtime::watcher::Config::default();
    let names: Vec<String> = kube::runtime::watcher(api.clone(), cfg)
        .try_filter_map(|e| async move {
            Ok(match e {
                kube::runtime::watcher::Event::InitApply(o) => o.metadata.name,
                _ => None,
            })
        })
        .take(7)
        .try_collect()
        .await
        .unwrap();
    assert!(
        names.contains(&"late".to_string()) && names.contains(&"c0".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn stale_updates_conflict() {
    let c = Cluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let v1 = api
        .create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    let mut v2 = v1.clone();
    v2.data = Some(BTreeMap::from([("k".into(), "2".into())]));
    let stored = api.replace("c", &PostParams::default(), &v2).await.unwrap();
    assert_ne!(
        stored.metadata.resource_version,
        v1.metadata.resource_version
    );
    let mut stale = v1.clone();
    stale.data = Some(BTreeMap::from([("k".into(), "3".into())]));
    assert_eq!(
        api_code(
            api.replace("c", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );
    // A patch carrying a stale resourceVersion is a precondition that fails too.
    let p =
        json!({"metadata": {"resourceVersion": v1.metadata.resource_version}, "data": {"k": "4"}});
    assert_eq!(
        api_code(
            api.patch("c", &PatchParams::default(), &Patch::Merge(&p))
                .await
                .unwrap_err()
        ),
        409
    );
    assert_eq!(
        api_code(
            api.create(&PostParams::default(), &cm("c", &[]))
                .await
                .unwrap_err()
        ),
        409
    );
    // An update that changes nothing keeps the version.
    let same = api
        .replace("c", &PostParams::default(), &stored)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        stored.metadata.resource_version
    );
}

fn pod(name: &str, node: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

async fn make_ready(api: &Api<Pod>, name: &str) {
    let st = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
}

#[tokio::test]
async fn eviction_honours_disruption_budgets() {
    let c = Cluster::start().await.unwrap();
    // Without this, kube-rs retries the 429 with backoff for minutes.
    let mut cfg = c.admin_config().await.unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &c.namespace());
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, &c.namespace());
    let node = c.name("node-1");
    for n in ["web-1", "web-2"] {
        pods.create(
            &PostParams::default(),
            &pod(n, &node, json!({"app": "web"})),
        )
        .await
        .unwrap();
        make_ready(&pods, n).await;
    }
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let st = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed,
            st.expected_pods
        ),
        (2, 1, 1, 2)
    );
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    // Bound to a node, the pod terminates gracefully: it is marked, not yet gone.
    let evicted = pods.get("web-1").await.unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some());
    let err = pods
        .evict("web-2", &EvictParams::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 429);
            assert!(e.message.contains("disruption budget"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pdbs.get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        0
    );
    // An unrelated pod is not guarded.
    pods.create(
        &PostParams::default(),
        &pod("other", &node, json!({"app": "db"})),
    )
    .await
    .unwrap();
    make_ready(&pods, "other").await;
    pods.evict("other", &EvictParams::default()).await.unwrap();
}

/// How long a test waits for the garbage collector.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Wait until `name` is gone from `api` (404).
async fn gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("{name} to be deleted"), TIMEOUT, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
}

fn owned(kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
}

async fn deployment_with_dependents(c: &Cluster, name: &str) -> String {
    let deps: Api<Deployment> = Api::namespaced(c.admin(), &c.namespace());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }))
    .unwrap();
    let d = deps.create(&PostParams::default(), &d).await.unwrap();
    let uid = d.metadata.uid.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    let mut m = cm(&format!("{name}-cm"), &[]);
    m.metadata.owner_references = serde_json::from_value(owned("Deployment", name, &uid)).unwrap();
    cms.create(&PostParams::default(), &m).await.unwrap();
    let mut p = pod(&format!("{name}-pod"), "", json!({"app": name}));
    p.spec.as_mut().unwrap().node_name = None;
    p.metadata.owner_references = serde_json::from_value(owned("Deployment", name, &uid)).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    uid
}

#[tokio::test]
async fn deleting_an_owner_cascades_per_propagation_policy() {
    let c = Cluster::start().await.unwrap();
    let deps: Api<Deployment> = Api::namespaced(c.admin(), &c.namespace());
    let cms: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());

    // The garbage collector works in the background, as on a real cluster: poll.
    deployment_with_dependents(&c, "bg").await;
    deps.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    gone(&cms, "bg-cm").await;
    gone(&pods, "bg-pod").await;

    deployment_with_dependents(&c, "orphan").await;
    deps.delete("orphan", &DeleteParams::orphan())
        .await
        .unwrap();
    gone(&deps, "orphan").await;
    wait_for("the orphan's owner reference to go", TIMEOUT, || async {
        let left = cms.get("orphan-cm").await.ok()?;
        left.metadata
            .owner_references
            .is_none_or(|r| r.is_empty())
            .then_some(())
    })
    .await
    .unwrap();

    deployment_with_dependents(&c, "fg").await;
    deps.delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    // The owner goes once its dependents are gone.
    gone(&deps, "fg").await;
    gone(&cms, "fg-cm").await;

    // A dependent with a finalizer holds a foreground owner back.
    let uid = deployment_with_dependents(&c, "held").await;
    cms.patch(
        "held-cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold"]}})),
    )
    .await
    .unwrap();
    deps.delete("held", &DeleteParams::foreground())
        .await
        .unwrap();
    // Held: the pod dependent goes, the owner stays, marked for foreground deletion.
    gone(&pods, "held-pod").await;
    let owner = deps.get("held").await.unwrap();
    assert_eq!(owner.metadata.uid.as_deref(), Some(uid.as_str()));
    assert!(
        owner
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    cms.patch(
        "held-cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&deps, "held").await;
}

fn foreign_ref(kind: &str, name: &str, uid: &str, blocking: bool) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": blocking}])
}

fn finalizers(d: &Deployment) -> Vec<String> {
    d.metadata.finalizers.clone().unwrap_or_default()
}

/// Whether this runs on the test API server, whose collector waits `gc_delay` (1 s
/// here) before acting: only there is a dependent guaranteed to outlive the owner's
/// DELETE for a moment. A real collector is usually as slow, but promises nothing.
fn collector_is_slow(c: &Cluster) -> bool {
    c.server().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_is_asynchronous_for_each_policy() {
    let c = Cluster::start_with(ServerConfig {
        gc_delay: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let deps: Api<Deployment> = Api::namespaced(c.admin(), &c.namespace());
    let cms: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());

    // Background: the owner is gone when the DELETE returns, its dependents a moment later.
    deployment_with_dependents(&c, "bg").await;
    deps.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    assert!(deps.get_opt("bg").await.unwrap().is_none());
    if collector_is_slow(&c) {
        assert!(
            cms.get_opt("bg-cm").await.unwrap().is_some(),
            "collected within the request"
        );
    }
    gone(&cms, "bg-cm").await;

    // Orphan: the owner waits, marked, while the collector removes the references to it.
    deployment_with_dependents(&c, "or").await;
    deps.delete("or", &DeleteParams::orphan()).await.unwrap();
    if collector_is_slow(&c) {
        let marked = deps.get("or").await.unwrap();
        assert!(marked.metadata.deletion_timestamp.is_some());
        assert_eq!(finalizers(&marked), ["orphan"]);
    }
    gone(&deps, "or").await;
    let kept = cms.get("or-cm").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty()),
        "{kept:?}"
    );

    // Foreground: the owner waits, marked, until its blocking dependents are gone.
    deployment_with_dependents(&c, "fg").await;
    let mut loose = cm("fg-loose", &[]);
    let uid = deps.get("fg").await.unwrap().metadata.uid.unwrap();
    loose.metadata.owner_references =
        serde_json::from_value(foreign_ref("Deployment", "fg", &uid, false)).unwrap();
    loose.metadata.finalizers = Some(vec!["test/hold".into()]);
    cms.create(&PostParams::default(), &loose).await.unwrap();
    deps.delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    if collector_is_slow(&c) {
        let marked = deps.get("fg").await.unwrap();
        assert_eq!(finalizers(&marked), ["foregroundDeletion"]);
        assert!(
            cms.get_opt("fg-cm").await.unwrap().is_some(),
            "deleted within the request"
        );
    }
    gone(&deps, "fg").await;
    // The blocking dependents went first; the non-blocking one, held by its own
    // finalizer, did not hold the owner back.
    assert!(cms.get_opt("fg-cm").await.unwrap().is_none());
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    assert!(pods.get_opt("fg-pod").await.unwrap().is_none());
    let held = cms.get("fg-loose").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some(), "{held:?}");
    cms.patch(
        "fg-loose",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&cms, "fg-loose").await;

    // A dependent made for an owner that does not exist is collected as well.
    let mut stray = cm("stray", &[]);
    stray.metadata.owner_references = serde_json::from_value(foreign_ref(
        "Deployment",
        "never",
        "00000000-0000-0000-0000-000000000000",
        false,
    ))
    .unwrap();
    cms.create(&PostParams::default(), &stray).await.unwrap();
    gone(&cms, "stray").await;
}

#[tokio::test]
async fn status_is_a_separate_subresource() {
    let c = Cluster::start().await.unwrap();
    let api: Api<OSUpgrade> = Api::all(c.admin());
    let u_name = c.name("u");
    let u: OSUpgrade = serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade", "metadata": {"name": u_name},
        "spec": {"version": "v2", "catalog": {"inline": "stable: v2"}},
        "status": {"phase": "Completed"},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &u).await.unwrap();
    assert!(created.status.is_none(), "status is dropped on create");
    assert_eq!(created.metadata.generation, Some(1));
    let st = api
        .patch_status(
            &u_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Progressing"}, "spec": {"version": "v9"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.spec.version, "v2", "a status write leaves spec alone");
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    let main = api
        .patch(
            &u_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "v3"}, "status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(main.spec.version, "v3");
    assert_eq!(
        main.status.unwrap().phase,
        Some(osroll_api::UpgradePhase::Progressing),
        "a main write leaves status alone"
    );
    assert_eq!(main.metadata.generation, Some(2));
    let labelled = api
        .patch(
            &u_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let c = Cluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let mut m = cm("f", &[]);
    m.metadata.finalizers = Some(vec!["osroll.io/uncordon".into()]);
    api.create(&PostParams::default(), &m).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = api.get("f").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let add = json!({"metadata": {"finalizers": ["osroll.io/uncordon", "other/new"]}});
    assert_eq!(
        api_code(
            api.patch("f", &PatchParams::default(), &Patch::Merge(&add))
                .await
                .unwrap_err()
        ),
        422
    );
    let rv = marked.metadata.resource_version.unwrap();
    let mut w = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(name_of(&next_event(&mut w).await), ("DELETED", "f".into()));
    assert_eq!(api_code(api.get("f").await.unwrap_err()), 404);
}

#[tokio::test]
async fn server_side_apply_tracks_managers() {
    let c = Cluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1", "y": "2"}});
    api.patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a))
        .await
        .unwrap();
    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "9"}});
    let err = api
        .patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 409);
            assert!(
                e.message.contains("conflict with \"alice\""),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    let forced = api
        .patch("s", &PatchParams::apply("bob").force(), &Patch::Apply(&b))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "9");
    // alice no longer applies y: it goes; x is bob's now and stays.
    let a2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {}});
    let after = api
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a2))
        .await
        .unwrap();
    assert_eq!(
        after.data.unwrap(),
        BTreeMap::from([("x".to_string(), "9".to_string())])
    );
    let managers: Vec<String> = after
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"bob".to_string()), "{managers:?}");
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() {
    let c = Cluster::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    let (n1, n2, n3) = (c.name("n1"), c.name("n2"), c.name("n3"));
    pods.create(
        &PostParams::default(),
        &pod("p1", &n1, json!({"osroll.io/node": n1})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("p2", &n2, json!({"osroll.io/node": n2})),
    )
    .await
    .unwrap();
    let all: Api<Pod> = Api::all(c.admin());
    let on_n1 = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={n1}")))
        .await
        .unwrap();
    assert_eq!(on_n1.items.len(), 1);
    let by_label = all
        .list(&ListParams::default().labels(&format!("osroll.io/node in ({n2}, {n3})")))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
    assert_eq!(by_label.items[0].metadata.name.as_deref(), Some("p2"));
    let by_name = pods
        .list(&ListParams::default().fields(&format!(
            "metadata.name=p1,metadata.namespace={}",
            c.namespace()
        )))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    // A pod leaving a label selector's view is DELETED for that watcher.
    let rv = on_n1.metadata.resource_version.unwrap();
    let mut w = pods
        .watch(
            &WatchParams::default()
                .labels(&format!("osroll.io/node={n1}"))
                .disable_bookmarks(),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    pods.patch(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"osroll.io/node": "moved"}}})),
    )
    .await
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, WatchEvent::Deleted(ref p) if p.metadata.name.as_deref() == Some("p1")),
        "{ev:?}"
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let c = Cluster::start().await.unwrap();
    let work = c.name("work");
    c.ensure_namespace(&work).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.admin(), &work);
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let nss: Api<Namespace> = Api::all(c.admin());
    nss.delete(&work, &DeleteParams::default()).await.unwrap();
    wait_for("namespace work to go", Duration::from_secs(60), || {
        let (nss, work) = (nss.clone(), &work);
        async move { nss.get_opt(work).await.unwrap().is_none().then_some(()) }
    })
    .await
    .unwrap();
    let missing: Api<ConfigMap> = Api::namespaced(c.admin(), &c.name("nowhere"));
    assert_eq!(
        api_code(
            missing
                .create(&PostParams::default(), &cm("a", &[]))
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_one_store_in_two_shapes() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::events::{Event as RecEvent, EventType, Recorder, Reporter};
    let c = Cluster::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.admin(), &c.namespace());
    let target = cms
        .create(&PostParams::default(), &cm("target", &[]))
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "osroll-test".into(),
        instance: Some("i-1".into()),
    };
    let recorder = Recorder::new(c.admin(), reporter);
    let oref = kube::Resource::object_ref(&target, &());
    let ev = RecEvent {
        type_: EventType::Normal,
        reason: "Drained".into(),
        note: Some("node-1 drained".into()),
        action: "Drain".into(),
        secondary: None,
    };
    recorder.publish(&ev, &oref).await.unwrap();
    recorder.publish(&ev, &oref).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(c.admin(), &c.namespace());
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=target"))
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the second publish is a series update of the same Event"
    );
    let e = &listed.items[0];
    assert_eq!(e.message.as_deref(), Some("node-1 drained"));
    assert_eq!(e.reporting_component.as_deref(), Some("osroll-test"));
    let v1: Api<Event> = Api::namespaced(c.admin(), &c.namespace());
    let listed = v1
        .list(&ListParams::default().fields("regarding.name=target"))
        .await
        .unwrap();
    assert_eq!(listed.items[0].note.as_deref(), Some("node-1 drained"));
    assert!(
        listed.items[0]
            .series
            .as_ref()
            .is_some_and(|s| s.count >= 2),
        "{:?}",
        listed.items[0].series
    );
    let ns = c.namespace();
    let out = c
        .kubectl_run(&["describe", "configmap", "target", "-n", &ns], None)
        .await
        .unwrap();
    assert!(
        out.stdout.contains("Drained") && out.stdout.contains("node-1 drained"),
        "{out:?}"
    );
    let out = c
        .kubectl_run(&["get", "events", "-n", &ns], None)
        .await
        .unwrap();
    assert!(
        out.stdout.contains("configmap/target") && out.stdout.contains("node-1 drained"),
        "{out:?}"
    );
}
