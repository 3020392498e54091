//! Nodes and DaemonSets as a real control plane treats them: a registering Node carries
//! the not-ready taint until it reports Ready and a cordoned one the unschedulable taint
//! (the node lifecycle controller); pods without a toleration wait for the taint to go;
//! DaemonSet pods get the DaemonSet controller's tolerations, stay on cordoned nodes and
//! come back after an eviction once the old pod is gone; `kubectl drain` refuses
//! DaemonSet pods without `--ignore-daemonsets`. Names and namespace are the harness
//! instance's, so the tests also hold on a real cluster.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, PostParams, WatchEvent, WatchParams};
use osroll_sim::KubeletConfig;
use osroll_sim::taints::{NOT_READY, UNSCHEDULABLE};
use osroll_sim::testing::{Cluster, INSTANCE_LABEL, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(20);

fn fast(name: &str) -> KubeletConfig {
    let mut cfg = KubeletConfig::new(name);
    cfg.heartbeat = Duration::from_millis(100);
    cfg
}

/// `key:effect` of each taint of `n`.
fn taints(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Live (not terminating) pods labelled `app=<app>` on `node`.
async fn pods_on(c: &Cluster, app: &str, node: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    let lp = ListParams::default()
        .labels(&format!("app={app}"))
        .fields(&format!("spec.nodeName={node}"));
    pods.list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Wait for `what` about `node`'s taints.
async fn wait_taints(c: &Cluster, node: &str, what: &str, f: impl Fn(&[String]) -> bool) {
    let nodes: Api<Node> = Api::all(c.admin());
    wait_for(what, TIMEOUT, || async {
        let n = nodes.get(node).await.ok()?;
        f(&taints(&n)).then_some(())
    })
    .await
    .unwrap();
}

/// A pod template for `app` pinned to `node`, with `tolerations`.
fn template(app: &str, node: &str, tolerations: Value) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "tolerations": tolerations,
                 "containers": [{"name": "c", "image": "registry.example/app:1"}]}})
}

async fn deployment(c: &Cluster, app: &str, node: &str, tolerations: Value) {
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": app},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}}, "template": template(app, node, tolerations)}}))
    .unwrap();
    Api::<Deployment>::namespaced(c.admin(), &c.namespace())
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn daemonset(c: &Cluster, app: &str, node: &str) {
    let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": app},
        "spec": {"selector": {"matchLabels": {"app": app}}, "template": template(app, node, json!([]))}}))
    .unwrap();
    Api::<DaemonSet>::namespaced(c.admin(), &c.namespace())
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
}

/// The one ready pod of `app` on `node`, once there is one.
async fn ready_pod(c: &Cluster, app: &str, node: &str) -> Pod {
    wait_for(&format!("a ready {app} pod on {node}"), TIMEOUT, || async {
        let live = pods_on(c, app, node).await;
        (live.len() == 1 && pod_ready(&live[0])).then(|| live[0].clone())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_tainted_not_ready_until_it_reports_ready_and_unschedulable_while_cordoned() {
    let c = Cluster::start().await.unwrap();
    let n1 = c.name("node-1");
    let nodes: Api<Node> = Api::all(c.admin());
    let rv = nodes
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={n1}"))
        .disable_bookmarks();
    let mut w = nodes.watch(&wp, &rv).await.unwrap().boxed();
    let k = c.add_node(fast(&n1)).await.unwrap();
    let first = tokio::time::timeout(TIMEOUT, w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Added(registered) = first else {
        panic!("expected the Node's ADDED event, got {first:?}");
    };
    let not_ready = format!("{NOT_READY}:NoSchedule");
    assert_eq!(taints(&registered), [not_ready.as_str()]);
    // Other controllers of a real cluster may add taints of their own: look at ours.
    let without = |taint: &str| {
        let taint = taint.to_string();
        move |t: &[String]| !t.contains(&taint)
    };
    let with = |taint: &str| {
        let taint = taint.to_string();
        move |t: &[String]| t.contains(&taint)
    };
    wait_taints(&c, &n1, "the not-ready taint to go", without(&not_ready)).await;

    let unschedulable = format!("{UNSCHEDULABLE}:NoSchedule");
    let out = c.kubectl_run(&["cordon", &n1], None).await.unwrap();
    assert!(out.success(), "{out:?}");
    wait_taints(&c, &n1, "the unschedulable taint", with(&unschedulable)).await;
    let out = c.kubectl_run(&["uncordon", &n1], None).await.unwrap();
    assert!(out.success(), "{out:?}");
    wait_taints(
        &c,
        &n1,
        "the unschedulable taint to go",
        without(&unschedulable),
    )
    .await;

    // A node going down is tainted again until it is back.
    k.go_down("simulated outage").await.unwrap();
    wait_taints(&c, &n1, "the not-ready taint again", with(&not_ready)).await;
    k.come_up().await.unwrap();
    wait_taints(
        &c,
        &n1,
        "the not-ready taint to go again",
        without(&not_ready),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_without_a_toleration_wait_until_a_new_node_is_ready() {
    let c = Cluster::start().await.unwrap();
    let n = c.name("late");
    // The Node as its kubelet registers it, before the first status report.
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n, INSTANCE_LABEL: c.scope().id()}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
    }))
    .unwrap();
    let kubelet = c.kubelet_client(&n).await.unwrap();
    let created = Api::<Node>::all(kubelet)
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    assert_eq!(taints(&created), [format!("{NOT_READY}:NoSchedule")]);
    let _w = c.start_workloads();
    deployment(&c, "strict", &n, json!([])).await;
    daemonset(&c, "agent", &n).await;
    let tolerate = json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]);
    deployment(&c, "tolerant", &n, tolerate).await;
    // The tolerant pod is placed; the others, which the scheduler (and the DaemonSet
    // controller) considered with it, are not.
    wait_for("the tolerant pod on the new node", TIMEOUT, || async {
        (!pods_on(&c, "tolerant", &n).await.is_empty()).then_some(())
    })
    .await
    .unwrap();
    assert!(pods_on(&c, "strict", &n).await.is_empty());
    assert!(pods_on(&c, "agent", &n).await.is_empty());

    let _k = c.add_node(fast(&n)).await.unwrap();
    let not_ready = format!("{NOT_READY}:NoSchedule");
    wait_taints(&c, &n, "the not-ready taint to go", |t| {
        !t.contains(&not_ready)
    })
    .await;
    ready_pod(&c, "strict", &n).await;
    ready_pod(&c, "agent", &n).await;
}

fn tolerated(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}:{}",
                t.key.clone().unwrap_or_default(),
                t.operator.clone().unwrap_or_default(),
                t.effect.clone().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_daemonset_pod_comes_back_on_its_cordoned_node_once_gone() {
    let c = Cluster::start().await.unwrap();
    let n = c.name("node-1");
    let mut cfg = fast(&n);
    // Old pods take a while to stop: the replacement must wait for that.
    cfg.termination_delay = Duration::from_millis(800);
    let _k = c.add_node(cfg).await.unwrap();
    let _w = c.start_workloads();
    daemonset(&c, "agent", &n).await;
    let old = ready_pod(&c, "agent", &n).await;
    let tolerations = tolerated(&old);
    for wanted in [
        format!("{UNSCHEDULABLE}:Exists:NoSchedule"),
        format!("{NOT_READY}:Exists:NoExecute"),
    ] {
        assert!(tolerations.contains(&wanted), "{tolerations:?}");
    }
    assert!(
        !tolerations.contains(&"::".to_string()) && !tolerations.contains(&":Exists:".into()),
        "no blanket toleration: {tolerations:?}"
    );
    let out = c.kubectl_run(&["cordon", &n], None).await.unwrap();
    assert!(out.success(), "{out:?}");
    let unschedulable = format!("{UNSCHEDULABLE}:NoSchedule");
    wait_taints(&c, &n, "the unschedulable taint", |t| {
        t.contains(&unschedulable)
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    let wp = WatchParams::default()
        .labels("app=agent")
        .disable_bookmarks();
    let rv = old.metadata.resource_version.clone().unwrap();
    let mut w = pods.watch(&wp, &rv).await.unwrap().boxed();
    let old_uid = old.metadata.uid.clone().unwrap();
    pods.evict(&old.metadata.name.clone().unwrap(), &EvictParams::default())
        .await
        .unwrap();
    // Follow the pods until a new one appears: the old one must be gone by then.
    let mut old_gone = false;
    let replacement = loop {
        let ev = tokio::time::timeout(TIMEOUT, w.next())
            .await
            .expect("a pod event in time")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Deleted(p) if p.metadata.uid.as_deref() == Some(&old_uid) => {
                old_gone = true
            }
            WatchEvent::Added(p) if p.metadata.uid.as_deref() != Some(&old_uid) => break p,
            _ => {}
        }
    };
    assert!(
        old_gone,
        "a replacement came while the old pod was terminating"
    );
    assert_eq!(
        replacement.spec.and_then(|s| s.node_name).as_deref(),
        Some(n.as_str()),
        "the replacement goes to the cordoned node"
    );
    ready_pod(&c, "agent", &n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_refuses_daemonset_pods_without_ignore_daemonsets() {
    let c = Cluster::start().await.unwrap();
    let n = c.name("node-1");
    let _k = c.add_node(fast(&n)).await.unwrap();
    let _w = c.start_workloads();
    daemonset(&c, "agent", &n).await;
    let pod = ready_pod(&c, "agent", &n).await;
    let shown = format!("{}/{}", c.namespace(), pod.metadata.name.clone().unwrap());

    let out = c
        .kubectl_run(&["drain", &n, "--timeout=10s"], None)
        .await
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("DaemonSet-managed Pods") && out.stderr.contains(&shown),
        "{out:?}"
    );

    let out = c
        .kubectl_run(&["drain", &n, "--ignore-daemonsets", "--timeout=10s"], None)
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains(&format!("node/{n} drained")), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("ignoring DaemonSet-managed Pods") && all.contains(&shown),
        "{out:?}"
    );
    let still = pods_on(&c, "agent", &n).await;
    assert_eq!(
        still
            .iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<Vec<_>>(),
        [pod.metadata.uid],
        "the DaemonSet pod stays on the drained node"
    );
}
