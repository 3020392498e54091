//! Executor tests against the in-memory cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use osroll_api::{OSUpgradeProgressStatus, OSUpgradeSpec, ProgressPhase};

use super::*;
use crate::fake::{Call, FakeCluster};
use serde_json::Value;

fn upgrade() -> OSUpgrade {
    let mut up = OSUpgrade::new(
        "fleet",
        OSUpgradeSpec {
            version: "2.0".into(),
            ..Default::default()
        },
    );
    up.metadata.uid = Some("uid-1".into());
    up.spec.os_version_management = Some(json!({"plugin": "x"}));
    up.spec.restart_on_live_update =
        Some(serde_json::from_value(json!({"matchLabels": {"app": "cni"}})).unwrap());
    up
}

fn template() -> ProgressTemplate {
    ProgressTemplate {
        image: ImageRef {
            version: "2.0".into(),
            url: "https://img/2.0".into(),
            checksum: "sha256:00".into(),
            size: Some(9),
            reboot_required: None,
            chunk_index: None,
        },
        catalog_digest: Some("sha256:cat".into()),
        signed_catalog: None,
        os_version_management: None,
        earlier: vec![ImageRef {
            version: "1.0".into(),
            url: "https://img/1.0".into(),
            checksum: "sha256:01".into(),
            size: Some(9),
            reboot_required: None,
            chunk_index: None,
        }],
    }
}

fn node(name: &str, cordoned_at: Option<&str>) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.resource_version = Some("41".into());
    if let Some(t) = cordoned_at {
        n.metadata.annotations = Some([(marks::CORDONED_AT.to_string(), t.to_string())].into());
    }
    n
}

fn pod(name: &str, node: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("apps".into()),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

fn pdb(name: &str, app: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("apps".into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct World {
    up: OSUpgrade,
    nodes: HashMap<String, Node>,
    progress: HashMap<String, OSUpgradeProgress>,
    metrics: Metrics,
    leading: AtomicBool,
    memory: DrainMemory,
    drain: DrainPolicy,
    template: ProgressTemplate,
}

impl World {
    fn new(nodes: Vec<Node>) -> World {
        let up = upgrade();
        let template = template();
        let progress = nodes
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap();
                (name.clone(), new_progress(&up, &name, &template))
            })
            .collect();
        World {
            up,
            nodes: nodes
                .into_iter()
                .map(|n| (n.metadata.name.clone().unwrap(), n))
                .collect(),
            progress,
            metrics: Metrics::new(),
            leading: AtomicBool::new(true),
            memory: DrainMemory::default(),
            drain: DrainPolicy {
                timeout: Duration::from_secs(60),
                ..Default::default()
            },
            template,
        }
    }

    async fn run(&self, c: &FakeCluster, now: DateTime<Utc>, actions: &[Action]) -> Report {
        let nodes: HashMap<String, &Node> =
            self.nodes.iter().map(|(k, v)| (k.clone(), v)).collect();
        let progress: HashMap<String, &OSUpgradeProgress> =
            self.progress.iter().map(|(k, v)| (k.clone(), v)).collect();
        let act = Act {
            cluster: c,
            upgrade: &self.up,
            nodes: &nodes,
            progress: &progress,
            template: &self.template,
            drain: &self.drain,
            cordon_value: "osroll/fleet",
            now,
            metrics: &self.metrics,
            leading: &self.leading,
            memory: &self.memory,
        };
        act.run(actions).await
    }
}

#[test]
fn new_progress_carries_name_labels_owner_and_image() {
    let up = upgrade();
    let p = new_progress(&up, "node-1", &template());
    assert_eq!(
        p.metadata.name.as_deref(),
        Some(osroll_api::progress_name("fleet", "node-1").as_str())
    );
    let l = p.metadata.labels.as_ref().unwrap();
    assert_eq!(l[labels::NODE], "node-1");
    assert_eq!(l[labels::SOURCE], "fleet");
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("OSUpgrade", "fleet", "uid-1")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(p.spec.image.as_ref().unwrap().url, "https://img/2.0");
    assert_eq!(p.spec.catalog_digest.as_deref(), Some("sha256:cat"));
    assert_eq!(p.spec.os_version_management, Some(json!({"plugin": "x"})));
    assert_eq!(
        p.spec.restart_on_live_update, up.spec.restart_on_live_update,
        "restartOnLiveUpdate is copied for the agent"
    );
    assert!(!p.spec.reboot_approved);
}

#[tokio::test]
async fn create_is_idempotent_and_announced() {
    let w = World::new(vec![node("n1", None)]);
    let c = FakeCluster::default();
    let a = [Action::CreateProgress { node: "n1".into() }];
    let r = w.run(&c, t("2024-01-01T00:00:00Z"), &a).await;
    assert!(r.errors.is_empty());
    let r = w.run(&c, t("2024-01-01T00:00:00Z"), &a).await;
    assert!(
        r.errors.is_empty(),
        "AlreadyExists is success: {:?}",
        r.errors
    );
    assert_eq!(c.created.lock().unwrap().len(), 1);
    assert_eq!(c.reasons(), ["NodeStaging", "NodeStaging"]);
}

#[tokio::test]
async fn cordon_marks_canary_then_records_who_and_when() {
    let w = World::new(vec![node("n1", None)]);
    let c = FakeCluster::default();
    w.run(
        &c,
        t("2024-01-01T10:00:00Z"),
        &[Action::Cordon {
            node: "n1".into(),
            canary: true,
            after: None,
        }],
    )
    .await;
    let calls = c.calls();
    let pname = osroll_api::progress_name("fleet", "n1");
    assert_eq!(
        calls[0],
        Call::PatchProgress(
            pname,
            json!({"metadata": {"annotations": {marks::CANARY: "true"}}})
        )
    );
    let Call::PatchNode(n, patch) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert_eq!(n, "n1");
    assert_eq!(patch["spec"]["unschedulable"], json!(true));
    assert_eq!(
        patch["metadata"]["resourceVersion"],
        json!("41"),
        "cordon is conditional on what we saw"
    );
    assert_eq!(
        patch["metadata"]["annotations"][labels::CORDONED_BY],
        json!("osroll/fleet")
    );
    assert_eq!(
        patch["metadata"]["annotations"][marks::CORDONED_AT],
        json!("2024-01-01T10:00:00Z")
    );
    let ev = &c.events.lock().unwrap()[0];
    assert_eq!(ev.reason, "NodeCordoned");
    assert_eq!(ev.related.as_ref().unwrap().name.as_deref(), Some("n1"));
    assert!(ev.message.contains("canary"), "{}", ev.message);
}

#[tokio::test]
async fn drain_names_the_blocking_pod_and_budget_then_approves() {
    let w = World::new(vec![node("n1", Some("2024-01-01T10:00:00Z"))]);
    let mut ds = pod("agent", "n1", "agent");
    ds.metadata.owner_references = Some(vec![OwnerReference {
        kind: "DaemonSet".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    let c = FakeCluster {
        pods: vec![
            pod("web-1", "n1", "web"),
            pod("db-1", "n1", "db"),
            ds,
            pod("other", "n2", "web"),
        ]
        .into(),
        pdbs: vec![pdb("web-pdb", "web")],
        blocked: [String::from("apps/web-1")]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into(),
        ..Default::default()
    };
    let drain = [Action::Drain { node: "n1".into() }];
    let r = w.run(&c, t("2024-01-01T10:00:05Z"), &drain).await;
    let note = &r.drain_notes["n1"];
    assert!(
        note.contains("apps/web-1") && note.contains("PodDisruptionBudget apps/web-pdb"),
        "{note}"
    );
    assert!(c.calls().contains(&Call::Evict("apps/db-1".into())));
    assert!(
        !c.calls().contains(&Call::Evict("apps/agent".into())),
        "DaemonSet pods stay"
    );
    assert!(
        !c.calls()
            .iter()
            .any(|c| matches!(c, Call::Evict(k) if k == "apps/other")),
        "other nodes' pods stay"
    );
    assert_eq!(c.reasons(), ["DrainBlocked"]);
    // Still blocked: no second Event.
    w.run(&c, t("2024-01-01T10:00:07Z"), &drain).await;
    assert_eq!(c.reasons(), ["DrainBlocked"]);
    // The budget allows it now: evicted, then drained and approved on the next step.
    c.blocked.lock().unwrap().clear();
    let r = w.run(&c, t("2024-01-01T10:00:09Z"), &drain).await;
    assert!(r.drain_notes["n1"].contains("leaving"));
    let r = w.run(&c, t("2024-01-01T10:00:11Z"), &drain).await;
    assert!(r.drain_notes.is_empty());
    let pname = osroll_api::progress_name("fleet", "n1");
    assert_eq!(
        c.calls().last(),
        Some(&Call::PatchProgress(
            pname,
            json!({"spec": {"rebootApproved": true}})
        ))
    );
    assert_eq!(c.reasons(), ["DrainBlocked", "NodeDrained"]);
    assert!(
        w.metrics
            .encode()
            .contains("osroll_drain_duration_seconds_sum{outcome=\"Drained\"} 11")
    );
}

async fn timed_out(policy: DrainTimeoutPolicy) -> (FakeCluster, Report) {
    let mut w = World::new(vec![node("n1", Some("2024-01-01T10:00:00Z"))]);
    w.drain.on_timeout = policy;
    w.progress.get_mut("n1").unwrap().spec.retry_nonce = Some("7".into());
    let c = FakeCluster {
        pods: vec![pod("web-1", "n1", "web")].into(),
        pdbs: vec![pdb("web-pdb", "web")],
        blocked: [String::from("apps/web-1")]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into(),
        ..Default::default()
    };
    let r = w
        .run(
            &c,
            t("2024-01-01T10:01:00Z"),
            &[Action::Drain { node: "n1".into() }],
        )
        .await;
    (c, r)
}

#[tokio::test]
async fn drain_timeout_fail_and_skip_mark_the_attempt() {
    for (policy, value) in [
        (DrainTimeoutPolicy::Fail, "Failed@7"),
        (DrainTimeoutPolicy::Skip, "Skipped@7"),
    ] {
        let (c, r) = timed_out(policy).await;
        let Some(Call::PatchProgress(_, patch)) = c
            .calls()
            .into_iter()
            .find(|c| matches!(c, Call::PatchProgress(..)))
        else {
            panic!("no progress patch")
        };
        assert_eq!(
            patch["metadata"]["annotations"][marks::DRAIN_OUTCOME],
            json!(value)
        );
        let msg = patch["metadata"]["annotations"][marks::DRAIN_MESSAGE]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("timed out after 60s") && msg.contains("apps/web-1"),
            "{msg}"
        );
        assert_eq!(c.reasons(), ["DrainTimedOut"]);
        assert!(r.drain_notes["n1"].contains("timed out"));
        assert!(!c.calls().iter().any(|c| matches!(c, Call::Delete(..))));
    }
}

#[tokio::test]
async fn drain_timeout_force_deletes_without_budgets() {
    let (c, _) = timed_out(DrainTimeoutPolicy::Force).await;
    assert!(
        c.calls()
            .contains(&Call::Delete("apps/web-1".into(), Some(0)))
    );
    assert!(
        !c.calls().iter().any(|c| matches!(c, Call::Evict(..))),
        "no eviction after the timeout"
    );
    assert_eq!(c.reasons(), ["DrainForced"]);
}

#[tokio::test]
async fn a_conflict_stops_that_node_only() {
    let w = World::new(vec![node("n1", None), node("n2", None)]);
    let c = FakeCluster {
        conflict_nodes: true,
        ..Default::default()
    };
    let actions = [
        Action::Cordon {
            node: "n1".into(),
            canary: false,
            after: None,
        },
        Action::Drain { node: "n1".into() },
        Action::CreateProgress { node: "n2".into() },
    ];
    let r = w.run(&c, t("2024-01-01T00:00:00Z"), &actions).await;
    assert_eq!(r.conflicts, 1);
    assert!(
        !c.calls().contains(&Call::ListPods("n1".into())),
        "no drain after a failed cordon"
    );
    assert!(
        c.calls()
            .contains(&Call::Create(osroll_api::progress_name("fleet", "n2")))
    );
}

#[tokio::test]
async fn nothing_is_written_without_leadership() {
    let w = World::new(vec![node("n1", None)]);
    w.leading.store(false, Ordering::SeqCst);
    let c = FakeCluster::default();
    let r = w
        .run(
            &c,
            t("2024-01-01T00:00:00Z"),
            &[Action::CreateProgress { node: "n1".into() }],
        )
        .await;
    assert!(c.calls().is_empty());
    assert_eq!(r.errors.len(), 1);
}

#[tokio::test]
async fn outcomes_are_reported_with_the_agents_reason_and_tagged_with_the_attempt() {
    let mut w = World::new(vec![node("n1", None)]);
    let p = w.progress.get_mut("n1").unwrap();
    p.spec.retry_nonce = Some("r2".into());
    p.status = Some(OSUpgradeProgressStatus {
        phase: Some(ProgressPhase::RolledBack),
        failure_reason: Some("BootedPreviousSlot".into()),
        ..Default::default()
    });
    let c = FakeCluster::default();
    w.run(
        &c,
        t("2024-01-01T00:00:00Z"),
        &[Action::Report {
            node: "n1".into(),
            outcome: Outcome::RolledBack,
        }],
    )
    .await;
    let Call::PatchProgress(_, patch) = &c.calls()[0] else {
        panic!()
    };
    assert_eq!(
        patch["metadata"]["annotations"][marks::REPORTED],
        json!("RolledBack@r2")
    );
    let ev = &c.events.lock().unwrap()[0];
    assert_eq!(
        (ev.reason.as_str(), ev.severity),
        ("NodeRolledBack", Severity::Warning)
    );
    assert!(ev.message.contains("BootedPreviousSlot"), "{}", ev.message);
    assert!(
        w.metrics
            .encode()
            .contains("osroll_node_outcomes_total{outcome=\"RolledBack\"} 1")
    );
}

#[tokio::test]
async fn uncordon_removes_our_marks_conditionally() {
    let w = World::new(vec![node("n1", Some("2024-01-01T10:00:00Z"))]);
    let c = FakeCluster::default();
    w.run(
        &c,
        t("2024-01-01T11:00:00Z"),
        &[Action::Uncordon {
            node: "n1".into(),
            why: UncordonReason::Completed,
        }],
    )
    .await;
    let Call::PatchNode(_, patch) = &c.calls()[0] else {
        panic!()
    };
    assert_eq!(patch["spec"]["unschedulable"], Value::Null);
    assert_eq!(
        patch["metadata"]["annotations"][labels::CORDONED_BY],
        Value::Null
    );
    assert_eq!(patch["metadata"]["resourceVersion"], json!("41"));
    assert_eq!(c.reasons(), ["NodeUncordoned"]);
}

#[tokio::test]
async fn a_start_on_a_freed_slot_waits_if_the_release_failed() {
    let w = World::new(vec![node("a", None), node("b", None)]);
    let actions = [
        Action::Uncordon {
            node: "a".into(),
            why: UncordonReason::Completed,
        },
        Action::Cordon {
            node: "b".into(),
            canary: false,
            after: Some("a".into()),
        },
        Action::Drain { node: "b".into() },
    ];
    let c = FakeCluster {
        conflict_nodes: true,
        ..Default::default()
    };
    let r = w.run(&c, t("2024-01-01T00:00:00Z"), &actions).await;
    assert_eq!(r.conflicts, 1);
    assert_eq!(
        c.calls().len(),
        1,
        "only the failed uncordon: {:?}",
        c.calls()
    );
    let c = FakeCluster::default();
    w.run(&c, t("2024-01-01T00:00:00Z"), &actions).await;
    let nodes: Vec<String> = c
        .calls()
        .into_iter()
        .filter_map(|c| {
            if let Call::PatchNode(n, _) = c {
                Some(n)
            } else {
                None
            }
        })
        .collect();
    // Release a, cordon b, record b's approval (it has no pod to drain).
    assert_eq!(nodes, ["a", "b", "b"]);
    assert!(c.calls().contains(&Call::ListPods("b".into())));
}

/// RFC 7386 merge of `patch` into `target`, as the API server applies our patches.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// `n1` cordoned by us, drained of every pod, booted as `boot-1`; its progress Staged.
fn drained_world() -> World {
    let mut n = node("n1", Some("2024-01-01T00:00:00Z"));
    n.metadata
        .annotations
        .get_or_insert_default()
        .insert(labels::CORDONED_BY.into(), "osroll/fleet".into());
    n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(true),
        ..Default::default()
    });
    n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        node_info: Some(k8s_openapi::api::core::v1::NodeSystemInfo {
            boot_id: "boot-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut w = World::new(vec![n]);
    w.progress.get_mut("n1").unwrap().status = Some(OSUpgradeProgressStatus {
        phase: Some(ProgressPhase::Staged),
        ..Default::default()
    });
    w
}

/// The plan for `w` as the reconciler makes it: from its Nodes and progress objects.
fn replan(w: &World, paused: bool) -> crate::planner::Plan {
    let nodes: Vec<&Node> = w.nodes.values().collect();
    let progress: Vec<&OSUpgradeProgress> = w.progress.values().collect();
    let settings = crate::observe::Settings {
        controller_name: "osroll".into(),
        own_node: None,
        node_soak: Duration::ZERO,
        drain_poll: Duration::from_secs(1),
    };
    let strategy = crate::planner::Strategy {
        paused,
        ..Default::default()
    };
    let selection = crate::select::NodeSelection::default();
    let obs = crate::observe::snapshot("fleet", strategy, &selection, &nodes, &progress, &settings);
    crate::planner::plan(&obs, t("2024-01-01T00:01:00Z"))
}

/// The approval of a drained node is written; the next reconcile sees the Node as the
/// API has it after that pass, but its progress as it was before (the controller
/// crashed before the progress write, or its cache has not seen it yet). The planner
/// must neither release the node (the agent may be rebooting it) nor drain and approve
/// it again (with the boot ID of a reboot already under way).
#[tokio::test]
async fn an_approval_not_yet_seen_on_the_progress_is_neither_undone_nor_repeated() {
    let mut w = drained_world();
    assert_eq!(
        replan(&w, false).actions,
        [Action::Drain { node: "n1".into() }],
        "the world before: drain n1"
    );
    let c = FakeCluster::default();
    let r = w
        .run(
            &c,
            t("2024-01-01T00:00:30Z"),
            &[Action::Drain { node: "n1".into() }],
        )
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(c.reasons().contains(&"NodeDrained".to_string()));
    let mut node = serde_json::to_value(&w.nodes["n1"]).unwrap();
    for call in c.calls() {
        if let Call::PatchNode(_, patch) = call {
            merge(&mut node, &patch);
        }
    }
    w.nodes
        .insert("n1".into(), serde_json::from_value(node).unwrap());
    // Meanwhile the agent rebooted the node.
    let info = w.nodes.get_mut("n1").unwrap().status.as_mut().unwrap();
    info.node_info.as_mut().unwrap().boot_id = "boot-2".into();
    let confirm = Action::ConfirmApproval { node: "n1".into() };
    for paused in [false, true] {
        let actions = replan(&w, paused).actions;
        assert!(
            !actions.iter().any(|a| matches!(
                a,
                Action::Uncordon { .. } | Action::Drain { .. } | Action::Cordon { .. }
            )),
            "paused {paused}: {actions:?}"
        );
        assert_eq!(actions, std::slice::from_ref(&confirm), "paused {paused}");
    }
    let c = FakeCluster::default();
    let r = w
        .run(
            &c,
            t("2024-01-01T00:01:00Z"),
            std::slice::from_ref(&confirm),
        )
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let pname = osroll_api::progress_name("fleet", "n1");
    let approval = json!({
        "spec": {"rebootApproved": true},
        "metadata": {"annotations": {marks::APPROVED_BOOT: "boot-1@"}},
    });
    assert_eq!(
        c.calls(),
        [Call::PatchProgress(pname, approval)],
        "the boot ID of the approval, not of the reboot under way"
    );
    assert_eq!(c.reasons(), ["RebootApprovalConfirmed"]);
}

/// The Node records the approval before the progress object shows it.
#[tokio::test]
async fn a_drained_node_is_approved_on_the_node_first() {
    let w = drained_world();
    let c = FakeCluster::default();
    w.run(
        &c,
        t("2024-01-01T00:00:30Z"),
        &[Action::Drain { node: "n1".into() }],
    )
    .await;
    let writes: Vec<Call> = c
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::PatchNode(..) | Call::PatchProgress(..)))
        .collect();
    let pname = osroll_api::progress_name("fleet", "n1");
    assert_eq!(
        writes,
        [
            Call::PatchNode(
                "n1".into(),
                json!({"metadata": {"annotations": {marks::REBOOT_APPROVAL: "boot-1@"}}})
            ),
            Call::PatchProgress(
                pname,
                json!({
                    "spec": {"rebootApproved": true},
                    "metadata": {"annotations": {marks::APPROVED_BOOT: "boot-1@"}},
                })
            ),
        ]
    );
    let c = FakeCluster {
        conflict_nodes: true,
        ..Default::default()
    };
    w.run(
        &c,
        t("2024-01-01T00:00:30Z"),
        &[Action::Drain { node: "n1".into() }],
    )
    .await;
    assert!(
        !c.calls()
            .iter()
            .any(|c| matches!(c, Call::PatchProgress(..))),
        "no approval on the progress unless the Node records it: {:?}",
        c.calls()
    );
}

/// A rollback that finds no way back for a node says so once: the reason recorded on
/// the progress object, one Event; the plan that follows does not ask again.
#[tokio::test]
async fn a_node_with_no_way_back_is_announced_once() {
    let mut w = drained_world();
    let p = w.progress.get_mut("n1").unwrap();
    p.status = Some(OSUpgradeProgressStatus {
        phase: Some(ProgressPhase::Completed),
        ..Default::default()
    });
    p.annotations_mut()
        .insert(marks::REPORTED.into(), "Completed@".into());
    p.metadata.resource_version = Some("7".into());
    let n = w.nodes.get_mut("n1").unwrap();
    n.metadata.annotations = None;
    n.spec = None;
    let arm = Action::ArmRollback {
        node: "n1".into(),
        upgraded_at: None,
    };
    let rolling_back = |w: &World| {
        let nodes: Vec<&Node> = w.nodes.values().collect();
        let progress: Vec<&OSUpgradeProgress> = w.progress.values().collect();
        let settings = crate::observe::Settings {
            controller_name: "osroll".into(),
            own_node: None,
            node_soak: Duration::ZERO,
            drain_poll: Duration::from_secs(1),
        };
        let selection = crate::select::NodeSelection::default();
        let mut obs = crate::observe::snapshot(
            "fleet",
            Default::default(),
            &selection,
            &nodes,
            &progress,
            &settings,
        );
        obs.health.rolling_back = true;
        crate::planner::plan(&obs, t("2024-01-01T00:01:00Z"))
    };
    assert_eq!(rolling_back(&w).actions, std::slice::from_ref(&arm));
    // Its previous version was never recorded.
    let c = FakeCluster::default();
    let r = w.run(&c, t("2024-01-01T00:00:30Z"), &[arm]).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(c.reasons(), ["RollbackUnavailable"]);
    let Call::PatchProgress(_, patch) = &c.calls()[0] else {
        panic!("{:?}", c.calls())
    };
    assert_eq!(
        patch,
        &json!({"metadata": {
            "resourceVersion": "7",
            "annotations": {marks::ROLLBACK_UNAVAILABLE: "its previous version was not recorded"},
        }}),
        "only the record, on the version seen: the progress still points at 2.0"
    );
    let mut progress = serde_json::to_value(&w.progress["n1"]).unwrap();
    merge(&mut progress, patch);
    w.progress
        .insert("n1".into(), serde_json::from_value(progress).unwrap());
    let p = rolling_back(&w);
    assert!(p.actions.is_empty(), "asked again: {:?}", p.actions);
    assert_eq!(
        (p.phase, p.reason),
        (
            osroll_api::UpgradePhase::Failed,
            UpgradeReason::RollbackFailed
        )
    );
}

/// Arming a rollback writes only onto the version of the progress the plan saw: a plan
/// from a cache that does not show the arming yet gets a conflict (the API server's 409)
/// rather than arming the node again under a second `retryNonce`, which an agent already
/// Staged under the first one never answers.
#[tokio::test]
async fn arming_a_rollback_applies_only_to_the_version_seen() {
    let mut w = drained_world();
    let p = w.progress.get_mut("n1").unwrap();
    p.metadata.resource_version = Some("7".into());
    p.annotations_mut()
        .insert(marks::PREVIOUS_VERSION.into(), "1.0".into());
    let arm = Action::ArmRollback {
        node: "n1".into(),
        upgraded_at: None,
    };
    let c = FakeCluster::default();
    let r = w.run(&c, t("2024-01-01T00:00:30Z"), &[arm]).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(c.reasons(), ["RollbackArmed"]);
    let Call::PatchProgress(_, patch) = &c.calls()[0] else {
        panic!("{:?}", c.calls())
    };
    assert_eq!(patch["metadata"]["resourceVersion"], "7", "{patch}");
    assert_eq!(patch["spec"]["image"]["version"], "1.0", "{patch}");
    assert!(
        patch["spec"]["retryNonce"]
            .as_str()
            .is_some_and(|n| n.starts_with("rollback-")),
        "{patch}"
    );
}
