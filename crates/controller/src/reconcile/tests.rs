//! Reconcile decisions against the in-memory cluster, from plain API objects.

use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use osroll_api::conditions::find;
use osroll_api::{CatalogSource, OSUpgradeSpec, OSUpgradeStatus, ProgressPhase, RolloutStrategy};

use super::*;
use crate::catalog::FetchError;
use crate::fake::{Call, FakeCluster};

const SUM: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn catalog() -> String {
    format!(
        "stable: \"2.0\"\nblocked: [\"1.5\"]\nimages:\n  - version: \"2.0\"\n    url: https://img/2.0\n    checksum: {SUM}\n  - version: \"1.5\"\n    url: https://img/1.5\n    checksum: {SUM}\n"
    )
}

fn upgrade(name: &str, minute: i64, version: &str) -> OSUpgrade {
    let mut u = OSUpgrade::new(
        name,
        OSUpgradeSpec {
            version: version.into(),
            catalog: CatalogSource {
                inline: Some(catalog()),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    u.metadata.uid = Some(format!("uid-{name}"));
    u.metadata.generation = Some(1);
    u.metadata.resource_version = Some("10".into());
    u.metadata.finalizers = Some(vec![labels::FINALIZER.into()]);
    let ts = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + minute * 60).unwrap();
    u.metadata.creation_timestamp = Some(Time(ts));
    u
}

fn node(name: &str, managed: bool) -> Arc<Node> {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.resource_version = Some("5".into());
    if managed {
        n.metadata.labels = Some([(labels::MANAGED.to_string(), "true".to_string())].into());
    }
    n.spec = Some(NodeSpec::default());
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    Arc::new(n)
}

struct NoFetch;

impl UrlFetcher for NoFetch {
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<String>, FetchError>> {
        Box::pin(async move {
            Err(FetchError::Request {
                url: url.into(),
                source: "no network in tests".into(),
            })
        })
    }
}

fn shared() -> Shared<FakeCluster> {
    Shared {
        cluster: FakeCluster::default(),
        fetcher: Arc::new(NoFetch),
        trust: TrustPolicy::default(),
        namespace: "osroll-system".into(),
        settings: Settings {
            controller_name: "osroll".into(),
            own_node: None,
            node_soak: Duration::ZERO,
            drain_poll: Duration::from_secs(2),
        },
        metrics: Arc::new(Metrics::new()),
        leading: Arc::new(AtomicBool::new(true)),
        catalogs: ResolutionCache::new(Duration::from_secs(30)),
        memory: DrainMemory::default(),
        resync: Duration::from_secs(300),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_100_000, 0).unwrap()
}

fn status_patches(c: &FakeCluster) -> Vec<OSUpgradeStatus> {
    c.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::PatchStatus(_, v) => Some(serde_json::from_value(v["status"].clone()).unwrap()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn accepts_selects_managed_nodes_and_creates_progress() {
    let sh = shared();
    let mut up = upgrade("fleet", 0, "stable");
    up.metadata.finalizers = None;
    let nodes = [node("a", true), node("b", true), node("x", false)];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &[Arc::new(up.clone())],
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    let calls = sh.cluster.calls();
    assert_eq!(
        calls[0],
        Call::PatchUpgrade(
            "fleet".into(),
            json!({"metadata": {"finalizers": [labels::FINALIZER], "resourceVersion": "10"}})
        )
    );
    let created: Vec<String> = sh
        .cluster
        .created
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.spec.node_name.clone())
        .collect();
    assert_eq!(created, ["a", "b"]);
    let p = &sh.cluster.created.lock().unwrap()[0];
    assert_eq!(p.spec.image.as_ref().unwrap().version, "2.0");
    assert_eq!(
        p.spec.catalog_digest.as_deref(),
        Some(osroll_api::catalog::digest(catalog().as_bytes()).as_str())
    );
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(st.phase, Some(UpgradePhase::Accepted));
    assert_eq!(st.resolved_version.as_deref(), Some("2.0"));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.nodes.unwrap().total, 2);
    let reasons = sh.cluster.reasons();
    assert!(reasons.contains(&"Accepted".to_string()), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "NodeStaging").count(), 2);
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    let sh = shared();
    let mut up = upgrade("fleet", 0, "2.0");
    let nodes = [node("a", true)];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &[],
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    up.status = status_patches(&sh.cluster).pop();
    sh.cluster.calls.lock().unwrap().clear();
    sh.reconcile(&up, &world, now() + chrono::Duration::seconds(5))
        .await
        .unwrap();
    assert!(
        status_patches(&sh.cluster).is_empty(),
        "{:?}",
        sh.cluster.calls()
    );
}

#[tokio::test]
async fn invalid_spec_and_bad_versions_are_rejected_with_reasons() {
    let sh = shared();
    let mut up = upgrade("fleet", 0, "2.0");
    up.spec.strategy = Some(RolloutStrategy {
        max_unavailable: Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("lots".into()),
        ),
        ..Default::default()
    });
    let nodes = [node("a", true)];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &[],
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (Some(UpgradePhase::Rejected), Some("InvalidSpec"))
    );
    assert!(st.message.unwrap().contains("spec.strategy.maxUnavailable"));
    assert!(sh.cluster.created.lock().unwrap().is_empty());
    assert!(sh.cluster.reasons().contains(&"Rejected".to_string()));

    let sh = shared();
    let up = upgrade("fleet", 0, "1.5");
    sh.reconcile(&up, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(st.reason.as_deref(), Some("VersionBlocked"));
    let ready = find(&st.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "VersionBlocked");
    assert!(sh.cluster.created.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_external_upgrade_creates_imageless_progress_and_mixed_modes_are_rejected() {
    let sh = shared();
    let mut up = upgrade("reboots", 0, "");
    up.spec.catalog = CatalogSource::default();
    up.spec.external = Some(osroll_api::ExternalReboots {});
    let nodes = [node("a", true)];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &[],
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(st.phase, Some(UpgradePhase::Accepted), "{st:?}");
    assert_eq!((st.resolved_version, st.catalog_digest), (None, None));
    let p = sh.cluster.created.lock().unwrap()[0].clone();
    assert_eq!((p.spec.image, p.spec.catalog_digest), (None, None));
    assert!(p.spec.external.is_some());

    let sh = shared();
    up.spec.version = "2.0".into();
    sh.reconcile(&up, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(st.reason.as_deref(), Some("InvalidSpec"));
    let message = st.message.unwrap_or_default();
    assert!(
        message.starts_with("spec.version: must not be set with spec.external"),
        "{message}"
    );
    assert!(sh.cluster.created.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_newer_of_two_overlapping_upgrades_waits_naming_the_other() {
    let sh = shared();
    let old = upgrade("first", 0, "2.0");
    let mut new = upgrade("second", 5, "2.0");
    new.spec.node_selector = Some(LabelSelector::default());
    let nodes = [node("a", true)];
    let ups = [Arc::new(old.clone()), Arc::new(new.clone())];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &ups,
    };
    sh.reconcile(&new, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(st.phase, Some(UpgradePhase::Pending));
    let c = find(&st.conditions, "Progressing").unwrap();
    assert!(
        c.message.contains("first") && c.message.contains('a'),
        "{}",
        c.message
    );
    assert!(
        sh.cluster.created.lock().unwrap().is_empty(),
        "nothing applied twice"
    );
    sh.reconcile(&old, &world, now()).await.unwrap();
    assert_eq!(
        sh.cluster.created.lock().unwrap().len(),
        1,
        "the older one proceeds"
    );
}

#[tokio::test]
async fn deletion_uncordons_our_nodes_only_then_drops_the_finalizer() {
    let sh = shared();
    let mut up = upgrade("fleet", 0, "2.0");
    up.metadata.deletion_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_100).unwrap(),
    ));
    let mine = {
        let mut n = (*node("a", true)).clone();
        n.metadata.annotations =
            Some([(labels::CORDONED_BY.to_string(), "osroll/fleet".to_string())].into());
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        Arc::new(n)
    };
    let theirs = {
        let mut n = (*node("b", true)).clone();
        n.metadata.annotations =
            Some([(labels::CORDONED_BY.to_string(), "osroll/other".to_string())].into());
        Arc::new(n)
    };
    let nodes = [mine, theirs, node("c", true)];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &[],
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    let calls = sh.cluster.calls();
    let patched: Vec<&str> = calls
        .iter()
        .filter_map(|c| match c {
            Call::PatchNode(n, _) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(patched, ["a"]);
    assert_eq!(
        calls.last(),
        Some(&Call::PatchUpgrade(
            "fleet".into(),
            json!({"metadata": {"finalizers": [], "resourceVersion": "10"}})
        ))
    );
}

#[tokio::test]
async fn a_follower_writes_nothing() {
    let sh = shared();
    sh.leading.store(false, Ordering::SeqCst);
    let up = upgrade("fleet", 0, "2.0");
    let nodes = [node("a", true)];
    sh.reconcile(
        &up,
        &World {
            nodes: &nodes,
            progresses: &[],
            upgrades: &[],
        },
        now(),
    )
    .await
    .unwrap();
    assert!(sh.cluster.calls().is_empty());
    assert!(sh.cluster.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_rejected_upgrade_releases_nodes_it_was_draining() {
    let sh = shared();
    let up = upgrade("fleet", 0, "1.5");
    let cordoned = {
        let mut n = (*node("a", true)).clone();
        n.metadata.annotations =
            Some([(labels::CORDONED_BY.to_string(), "osroll/fleet".to_string())].into());
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        Arc::new(n)
    };
    let mut p = crate::act::new_progress(&up, "a", &ProgressTemplate::default());
    p.status = Some(osroll_api::OSUpgradeProgressStatus {
        phase: Some(osroll_api::ProgressPhase::Staged),
        ..Default::default()
    });
    let nodes = [cordoned];
    let progresses = [Arc::new(p)];
    sh.reconcile(
        &up,
        &World {
            nodes: &nodes,
            progresses: &progresses,
            upgrades: &[],
        },
        now(),
    )
    .await
    .unwrap();
    assert!(
        sh.cluster.calls().iter().any(|c| matches!(c, Call::PatchNode(n, v) if n == "a" && v["spec"]["unschedulable"].is_null())),
        "{:?}",
        sh.cluster.calls()
    );
}

fn with_label(n: &Arc<Node>, k: &str, v: &str) -> Arc<Node> {
    let mut n = (**n).clone();
    n.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(k.into(), v.into());
    Arc::new(n)
}

#[tokio::test]
async fn an_in_place_request_pulls_an_excluded_node_in_and_is_answered() {
    let mut up = upgrade("fleet", 0, "stable");
    up.spec.node_selector = Some(LabelSelector {
        match_labels: Some([("pool".to_string(), "web".to_string())].into()),
        ..Default::default()
    });
    let mut older = upgrade("older", -10, "stable");
    older.spec.node_selector = Some(LabelSelector {
        match_labels: Some([("pool".to_string(), "none".to_string())].into()),
        ..Default::default()
    });
    let web = with_label(&node("web-1", true), "pool", "web");
    let db = with_label(&node("db-1", true), "pool", "db");
    let asked = with_label(&db, labels::IN_PLACE_UPDATE, inplace::PENDING);
    let created = |sh: &Shared<FakeCluster>| -> Vec<String> {
        sh.cluster
            .created
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.spec.node_name.clone())
            .collect()
    };

    // Without the label the selector keeps db-1 out.
    let sh = shared();
    let ups = [Arc::new(up.clone())];
    let nodes = [web.clone(), db.clone()];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &ups,
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    assert_eq!(created(&sh), ["web-1"]);

    // With it, the newest OSUpgrade takes db-1 too; an older one does not.
    let sh = shared();
    let ups = [Arc::new(up.clone()), Arc::new(older.clone())];
    let nodes = [web.clone(), asked.clone()];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &ups,
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    let mut got = created(&sh);
    got.sort();
    assert_eq!(got, ["db-1", "web-1"]);
    let sh2 = shared();
    let mut older_sel = older.clone();
    older_sel.spec.node_selector = up.spec.node_selector.clone();
    let ups2 = [Arc::new(up.clone()), Arc::new(older_sel.clone())];
    sh2.reconcile(
        &older_sel,
        &World {
            nodes: &nodes,
            progresses: &[],
            upgrades: &ups2,
        },
        now(),
    )
    .await
    .unwrap();
    assert!(
        !created(&sh2).contains(&"db-1".to_string()),
        "{:?}",
        created(&sh2)
    );

    // Once db-1's progress ends, the label says how.
    for (phase, want) in [
        (ProgressPhase::Staged, None),
        (ProgressPhase::Completed, Some(inplace::DONE)),
        (ProgressPhase::RolledBack, Some(inplace::FAILED)),
    ] {
        let sh = shared();
        let mut p = crate::act::new_progress(&up, "db-1", &Default::default());
        p.status = Some(osroll_api::OSUpgradeProgressStatus {
            phase: Some(phase),
            ..Default::default()
        });
        let progresses = [Arc::new(p)];
        let world = World {
            nodes: &nodes,
            progresses: &progresses,
            upgrades: &ups,
        };
        sh.reconcile(&up, &world, now()).await.unwrap();
        let label_patches: Vec<String> = sh
            .cluster
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::PatchNode(n, v) if n == "db-1" => v["metadata"]["labels"]
                    [labels::IN_PLACE_UPDATE]
                    .as_str()
                    .map(String::from),
                _ => None,
            })
            .collect();
        assert_eq!(
            label_patches,
            want.map(|w| vec![w.to_string()]).unwrap_or_default(),
            "{phase:?}"
        );
    }
}

/// Issue 17: a version added to `blocked` mid-rollout stops it at the next check of the
/// (unchanged) OSUpgrade, though an accepted resolution is otherwise kept.
#[tokio::test]
async fn a_version_blocked_mid_rollout_stops_it_at_the_next_check() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let config_map = |text: String| ConfigMap {
        data: Some([(catalog::CONFIG_MAP_KEY.to_string(), text)].into()),
        ..Default::default()
    };
    let mut sh = shared();
    // Every reconcile is due for a fresh look (the default waits 30 s).
    sh.catalogs = ResolutionCache::new(Duration::ZERO);
    let key = "osroll-system/catalog".to_string();
    let open = catalog().replace("blocked: [\"1.5\"]", "blocked: []");
    sh.cluster.config_maps.insert(key.clone(), config_map(open));
    let mut up = upgrade("fleet", 0, "2.0");
    up.spec.catalog = CatalogSource {
        config_map: Some("catalog".into()),
        ..Default::default()
    };
    let nodes = [node("a", true)];
    let world = World {
        nodes: &nodes,
        progresses: &[],
        upgrades: &[Arc::new(up.clone())],
    };
    sh.reconcile(&up, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_ne!(st.phase, Some(UpgradePhase::Rejected), "{st:?}");

    let blocked = catalog().replace("blocked: [\"1.5\"]", "blocked: [\"2.0\"]");
    sh.cluster.config_maps.insert(key, config_map(blocked));
    sh.reconcile(&up, &world, now()).await.unwrap();
    let st = status_patches(&sh.cluster).pop().unwrap();
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (Some(UpgradePhase::Rejected), Some("VersionBlocked")),
        "{st:?}"
    );
}

/// A rollback that ended with a node it could not take back is finished too.
#[test]
fn a_rollback_that_failed_records_its_end() {
    use crate::planner::{HealthObs, NodeObs, Observed, Outcome, ProgressObs};
    let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let stranded = NodeObs {
        name: "a".into(),
        ready: true,
        progress: Some(ProgressObs {
            phase: ProgressPhase::Completed,
            reported: Some(Outcome::Completed),
            rollback_unavailable: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let obs = Observed {
        nodes: vec![stranded],
        health: HealthObs {
            rolling_back: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let plan = crate::planner::plan(&obs, at(100));
    assert_eq!(plan.phase, osroll_api::UpgradePhase::Failed);
    let mut st = OSUpgradeStatus {
        rollback: Some(osroll_api::health::RollbackStatus {
            started_at: "2027-01-15T08:00:00Z".into(),
            reason: "Requested".into(),
            version: "2.0".into(),
            finished_at: None,
        }),
        ..Default::default()
    };
    super::health::record(&mut st, &plan, "2.0", at(100));
    let r = st.rollback.expect("the rollback stays recorded");
    assert_eq!(r.finished_at.as_deref(), Some("2027-01-15T08:01:40Z"));
}
