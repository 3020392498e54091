//! Kubelet-lite nodes: registration, heartbeats, running pods, graceful deletion, reboots,
//! and `kubectl drain` against them with a PodDisruptionBudget in the way. Nodes and pods
//! carry the harness instance's names and namespace, so the tests also hold on a shared
//! cluster.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, PostParams};
use osroll_sim::KubeletConfig;
use osroll_sim::testing::{Cluster, wait_for};
use serde_json::json;

fn fast(name: &str) -> KubeletConfig {
    let mut cfg = KubeletConfig::new(name).label("osroll.io/managed", "true");
    cfg.heartbeat = Duration::from_millis(100);
    cfg
}

fn ready(n: &Node) -> Option<bool> {
    let c = n
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some(c.status == "True")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

async fn bound_pod(c: &Cluster, name: &str, node: &str, labels: serde_json::Value) {
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
}

async fn wait_pod<F: Fn(&Pod) -> bool>(c: &Cluster, name: &str, what: &str, f: F) -> Pod {
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    wait_for(what, Duration::from_secs(10), || {
        let pods = pods.clone();
        let f = &f;
        async move { pods.get_opt(name).await.ok().flatten().filter(|p| f(p)) }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_keeps_its_lease_and_runs_pods() {
    let c = Cluster::start().await.unwrap();
    let n1 = c.name("node-1");
    let node = c.add_node(fast(&n1)).await.unwrap();
    let nodes: Api<Node> = Api::all(c.admin());
    let n = nodes.get(&n1).await.unwrap();
    assert_eq!(ready(&n), Some(true));
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels["osroll.io/managed"], "true");
    assert_eq!(labels["kubernetes.io/hostname"], n1);
    assert_eq!(n.status.unwrap().node_info.unwrap().boot_id, node.boot_id());

    let leases: Api<Lease> = Api::namespaced(c.admin(), "kube-node-lease");
    let first = leases.get(&n1).await.unwrap().spec.unwrap();
    assert_eq!(first.holder_identity.as_deref(), Some(n1.as_str()));
    wait_for("the lease to be renewed", Duration::from_secs(5), || {
        let leases = leases.clone();
        let before = first.renew_time.clone();
        let n1 = &n1;
        async move { (leases.get(n1).await.ok()?.spec?.renew_time != before).then_some(()) }
    })
    .await
    .unwrap();

    bound_pod(&c, "web", &n1, json!({"app": "web"})).await;
    let p = wait_pod(&c, "web", "pod running", pod_ready).await;
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));

    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for(
        "graceful deletion to finish",
        Duration::from_secs(10),
        || {
            let pods = pods.clone();
            async move { pods.get_opt("web").await.ok()?.is_none().then_some(()) }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_makes_the_node_not_ready_then_restarts_its_pods() {
    let c = Cluster::start().await.unwrap();
    let n1 = c.name("node-1");
    let node = std::sync::Arc::new(c.add_node(fast(&n1)).await.unwrap());
    bound_pod(&c, "app", &n1, json!({"app": "a"})).await;
    wait_pod(&c, "app", "pod running", pod_ready).await;
    let before = node.boot_id();
    node.set_os_image_after_reboot("osroll SimOS v2");
    let n2 = node.clone();
    let reboot = tokio::spawn(async move { n2.reboot(Duration::from_millis(500)).await });
    let nodes: Api<Node> = Api::all(c.admin());
    wait_for("node NotReady", Duration::from_secs(5), || {
        let (nodes, n1) = (nodes.clone(), &n1);
        async move { (ready(&nodes.get(n1).await.ok()?) == Some(false)).then_some(()) }
    })
    .await
    .unwrap();
    let down = wait_pod(&c, "app", "pod not ready while the node is down", |p| {
        !pod_ready(p)
    })
    .await;
    assert_eq!(restarts(&down), 0);
    reboot.await.unwrap().unwrap();
    let n = nodes.get(&n1).await.unwrap();
    assert_eq!(ready(&n), Some(true));
    let info = n.status.unwrap().node_info.unwrap();
    assert_ne!(info.boot_id, before);
    assert_eq!(info.os_image, "osroll SimOS v2");
    let up = wait_pod(&c, "app", "pod restarted", |p| {
        pod_ready(p) && restarts(p) == 1
    })
    .await;
    let running = up.status.unwrap().container_statuses.unwrap()[0].clone();
    assert!(running.last_state.unwrap().terminated.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_respects_budgets_and_completes_evictions() {
    let c = Cluster::start().await.unwrap();
    let n1 = c.name("node-1");
    let _n1 = c.add_node(fast(&n1)).await.unwrap();
    for p in ["web-1", "web-2"] {
        bound_pod(&c, p, &n1, json!({"app": "web"})).await;
        wait_pod(&c, p, "pod running", pod_ready).await;
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.admin(), &c.namespace());
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    // Bare pods need --force; one eviction is allowed, the second is refused until timeout.
    // DaemonSet pods are left alone (a real cluster's DaemonSets may cover the node).
    let drain = ["drain", &n1, "--force", "--ignore-daemonsets"];
    let out = c
        .kubectl_run(&[&drain[..], &["--timeout=3s"]].concat(), None)
        .await
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("disruption budget"), "{out:?}");
    let nodes: Api<Node> = Api::all(c.admin());
    assert_eq!(
        nodes.get(&n1).await.unwrap().spec.unwrap().unschedulable,
        Some(true)
    );
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    let left: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // With the budget relaxed the drain finishes: the kubelet completes the deletion.
    let relax = json!({"spec": {"minAvailable": 0}});
    pdbs.patch("web", &Default::default(), &kube::api::Patch::Merge(&relax))
        .await
        .unwrap();
    let out = c
        .kubectl_run(&[&drain[..], &["--timeout=10s"]].concat(), None)
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains(&format!("node/{n1} drained")),
        "{out:?}"
    );
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let out = c.kubectl_run(&["uncordon", &n1], None).await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_ne!(
        nodes.get(&n1).await.unwrap().spec.unwrap().unschedulable,
        Some(true)
    );
    let out = c.kubectl_run(&["get", "node", &n1], None).await.unwrap();
    assert!(
        out.stdout.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("Ready"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_reschedule_evicted_pods_and_daemonsets_cover_nodes() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use kube::api::{EvictParams, ListParams, Patch, PatchParams};
    let c = Cluster::start().await.unwrap();
    let (na, nb) = (c.name("node-a"), c.name("node-b"));
    let _a = c.add_node(fast(&na)).await.unwrap();
    let _b = c.add_node(fast(&nb)).await.unwrap();
    let _w = c.start_workloads();
    let deps: Api<Deployment> = Api::namespaced(c.admin(), &c.namespace());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let dss: Api<DaemonSet> = Api::namespaced(c.admin(), &c.namespace());
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.admin(), &c.namespace());
    // Where the app's ready pods run, among this instance's nodes (on a shared cluster
    // the Deployment may also use others).
    let placed = |app: &'static str| {
        let pods = pods.clone();
        let scope = c.scope().clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            let mut nodes: Vec<String> = l
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .filter(|n| scope.owns(n))
                .collect();
            nodes.sort();
            Some(nodes)
        }
    };
    wait_for(
        "web spread over both nodes",
        Duration::from_secs(10),
        || async { (placed("web").await? == [na.as_str(), nb.as_str()]).then_some(()) },
    )
    .await
    .unwrap();
    wait_for(
        "one agent pod per node",
        Duration::from_secs(10),
        || async { (placed("agent").await? == [na.as_str(), nb.as_str()]).then_some(()) },
    )
    .await
    .unwrap();
    wait_for("deployment status", Duration::from_secs(10), || async {
        (deps.get("web").await.ok()?.status?.ready_replicas == Some(2)).then_some(())
    })
    .await
    .unwrap();
    // Cordon node-a and evict its web pod: the replacement lands on node-b.
    let nodes: Api<Node> = Api::all(c.admin());
    nodes
        .patch(
            &na,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let on_a = pods
        .list(
            &ListParams::default()
                .labels("app=web")
                .fields(&format!("spec.nodeName={na}")),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    pods.evict(&on_a.metadata.name.unwrap(), &EvictParams::default())
        .await
        .unwrap();
    wait_for(
        "web rescheduled onto node-b",
        Duration::from_secs(10),
        || async { (placed("web").await? == [nb.as_str(), nb.as_str()]).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(
        placed("agent").await.unwrap(),
        [na.clone(), nb.clone()],
        "DaemonSet pods stay on cordoned nodes"
    );
}
