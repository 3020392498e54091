//! Workload controllers for the test cluster, so drains behave as on a real cluster: an
//! evicted Deployment pod comes back on another schedulable node, and a DaemonSet keeps
//! one pod per node, putting a new one on a node once the old one is gone. Deliberately
//! small: Deployment pods are owned by the Deployment itself (no ReplicaSets, no
//! rollouts of template changes); scheduling follows the real scheduler's filters for
//! node selectors, taints and tolerations and cordons (a registering node keeps its
//! not-ready taint until Ready), and binds a new pod to the fitting node running the
//! fewest of its siblings; DaemonSet pods get the tolerations the real DaemonSet
//! controller adds (so they stay on, and go to, cordoned nodes). Status counts replicas.
//! Not needed (and not started) on a real cluster, which has the real ones.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::taints;

/// Running workload controllers; dropping the value stops them.
pub struct Workloads {
    task: JoinHandle<()>,
}

impl Drop for Workloads {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Workloads {
    /// Start reconciling Deployments and DaemonSets in all namespaces.
    pub fn start(client: Client) -> Workloads {
        Workloads {
            task: tokio::spawn(run(client)),
        }
    }
}

/// Whether a pod with `tolerations` and node selector `selector` may be placed on `n`,
/// by the scheduler's rules: labels match, taints tolerated, cordon respected.
pub fn placeable(n: &Node, tolerations: &[Toleration], selector: Option<&Selector>) -> bool {
    selects(selector, n) && taints::fits(tolerations, n)
}

type Selector = BTreeMap<String, String>;

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods `uid` controls, with those whose deletion started.
fn controlled_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect()
}

fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    controlled_by(pods, uid)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// The node for the next pod: among the nodes `fits` accepts, the one running the
/// fewest `siblings` (ties: by name).
pub fn pick_node<'n>(
    nodes: &'n [Node],
    siblings: &[&Pod],
    fits: impl Fn(&Node) -> bool,
) -> Option<&'n str> {
    let count = |n: &str| siblings.iter().filter(|p| node_of(p) == n).count();
    nodes
        .iter()
        .filter(|n| fits(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .min_by_key(|n| (count(n), n.to_string()))
}

fn pod_from_template(
    template: &Value,
    owner: Value,
    generate_name: &str,
    node: &str,
    tolerations: &[Toleration],
) -> anyhow::Result<Pod> {
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["nodeName"] = Value::String(node.into());
    if !tolerations.is_empty() {
        spec["tolerations"] = serde_json::to_value(tolerations)?;
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
            "ownerReferences": [owner],
        },
        "spec": spec,
    }))?)
}

fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Value {
    json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "name": obj.name_any(), "uid": obj.uid().unwrap_or_default(),
        "controller": true, "blockOwnerDeletion": true,
    })
}

async fn run(client: Client) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    spawn_trigger::<Deployment>(client.clone(), tx.clone());
    spawn_trigger::<DaemonSet>(client.clone(), tx.clone());
    spawn_trigger::<Pod>(client.clone(), tx.clone());
    spawn_trigger::<Node>(client.clone(), tx);
    while rx.recv().await.is_some() {
        // Let a burst of events settle into one pass.
        tokio::time::sleep(Duration::from_millis(30)).await;
        while rx.try_recv().is_ok() {}
        if let Err(e) = reconcile(&client).await {
            tracing::debug!(error = %e, "workload reconcile");
        }
    }
}

fn spawn_trigger<K>(client: Client, tx: tokio::sync::mpsc::Sender<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let api: Api<K> = Api::all(client);
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            if ev.is_ok() {
                let _ = tx.try_send(());
            }
        }
    });
}

/// One pass over every Deployment and DaemonSet.
pub async fn reconcile(client: &Client) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for d in Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        deployment(client, &d, &nodes, &pods).await?;
    }
    for ds in Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        daemonset(client, &ds, &nodes, &pods).await?;
    }
    Ok(())
}

async fn deployment(
    client: &Client,
    d: &Deployment,
    nodes: &[Node],
    pods: &[Pod],
) -> anyhow::Result<()> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = d.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let uid = d.uid().unwrap_or_default();
    let mut live = owned_by(pods, &uid);
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let template = serde_json::to_value(d.spec.as_ref().map(|s| &s.template))?;
    let pod_spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let tolerations = pod_spec
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let selector = pod_spec.and_then(|s| s.node_selector.as_ref());
    let fits = |n: &Node| placeable(n, &tolerations, selector);
    let mut created = Vec::new();
    while live.len() + created.len() < desired {
        let mut all: Vec<&Pod> = live.clone();
        all.extend(created.iter());
        let Some(node) = pick_node(nodes, &all, fits) else {
            break;
        };
        let pod = pod_from_template(
            &template,
            owner_ref(d),
            &format!("{}-", d.name_any()),
            node,
            &tolerations,
        )?;
        created.push(api.create(&PostParams::default(), &pod).await?);
    }
    while live.len() > desired {
        let extra = live.pop().expect("more than desired");
        api.delete(&extra.name_any(), &DeleteParams::default())
            .await?;
    }
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let total = live.len() + created.len();
    let status = json!({"status": {
        "observedGeneration": d.metadata.generation, "replicas": total, "updatedReplicas": total,
        "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": total.saturating_sub(ready),
    }});
    let current = serde_json::to_value(&d.status)?;
    if status["status"]
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| current.get(k) != Some(v)))
    {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
    }
    Ok(())
}

fn selects(selector: Option<&Selector>, n: &Node) -> bool {
    let labels = n.metadata.labels.clone().unwrap_or_default();
    selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Where a DaemonSet's pods belong, as its controller decides per node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DaemonPlan {
    /// Nodes that should run a pod and have none (not even one still terminating).
    pub create_on: Vec<String>,
    /// Pods (names) on nodes they may not stay on: selector no longer matches, or a
    /// NoExecute taint they do not tolerate.
    pub delete: Vec<String>,
    /// Nodes that should run a pod.
    pub desired: usize,
    /// Nodes running a live pod that may stay.
    pub scheduled: usize,
}

/// The DaemonSet controller's decision for pods with `tolerations` (the template's plus
/// the DaemonSet ones) and `selector`, given its pods (`mine`, terminating included).
pub fn plan_daemon_pods(
    nodes: &[Node],
    mine: &[&Pod],
    tolerations: &[Toleration],
    selector: Option<&Selector>,
) -> DaemonPlan {
    let mut plan = DaemonPlan::default();
    for n in nodes {
        let name = n.metadata.name.as_deref().unwrap_or_default();
        let here: Vec<&&Pod> = mine.iter().filter(|p| node_of(p) == name).collect();
        let live: Vec<&&Pod> = here
            .iter()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let should_run = placeable(n, tolerations, selector);
        let may_continue = selects(selector, n) && taints::may_stay(tolerations, n);
        plan.desired += usize::from(should_run);
        if should_run && here.is_empty() {
            plan.create_on.push(name.to_string());
        }
        if may_continue {
            plan.scheduled += usize::from(!live.is_empty());
        } else {
            plan.delete.extend(live.iter().map(|p| p.name_any()));
        }
    }
    plan
}

async fn daemonset(
    client: &Client,
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
) -> anyhow::Result<()> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = ds.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let uid = ds.uid().unwrap_or_default();
    let template = serde_json::to_value(ds.spec.as_ref().map(|s| &s.template))?;
    let pod_spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let tolerations = taints::with_daemonset_tolerations(
        pod_spec
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default(),
        pod_spec.and_then(|s| s.host_network) == Some(true),
    );
    let selector = pod_spec.and_then(|s| s.node_selector.as_ref());
    let plan = plan_daemon_pods(nodes, &controlled_by(pods, &uid), &tolerations, selector);
    for node in &plan.create_on {
        let pod = pod_from_template(
            &template,
            owner_ref(ds),
            &format!("{}-", ds.name_any()),
            node,
            &tolerations,
        )?;
        api.create(&PostParams::default(), &pod).await?;
    }
    for name in &plan.delete {
        api.delete(name, &DeleteParams::default()).await?;
    }
    let live = owned_by(pods, &uid);
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let status = json!({"status": {
        "observedGeneration": ds.metadata.generation, "desiredNumberScheduled": plan.desired,
        "currentNumberScheduled": plan.scheduled, "updatedNumberScheduled": plan.scheduled, "numberMisscheduled": 0,
        "numberReady": ready, "numberAvailable": ready,
    }});
    let current = serde_json::to_value(&ds.status)?;
    if status["status"]
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| current.get(k) != Some(v)))
    {
        Api::<DaemonSet>::namespaced(client.clone(), &ns)
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node in this state, tainted as the node lifecycle controller would.
    fn node(name: &str, ready: bool, cordoned: bool) -> Node {
        let mut n: Node = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"unschedulable": cordoned},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap();
        n.spec.as_mut().unwrap().taints = taints::reconciled_taints(&n);
        n
    }

    fn pod_on(node: &str, terminating: bool) -> Pod {
        let deleted = terminating.then_some("2026-01-01T00:00:00Z");
        serde_json::from_value(
            json!({"metadata": {"name": format!("p-{node}"), "deletionTimestamp": deleted},
            "spec": {"nodeName": node, "containers": []}}),
        )
        .unwrap()
    }

    #[test]
    fn scheduling_spreads_and_skips_cordoned_and_not_ready_nodes() {
        let nodes = [
            node("a", true, false),
            node("b", true, true),
            node("c", false, false),
            node("d", true, false),
        ];
        let on_a = pod_on("a", false);
        let fits = |n: &Node| placeable(n, &[], None);
        assert_eq!(pick_node(&nodes, &[], fits), Some("a"));
        assert_eq!(pick_node(&nodes, &[&on_a], fits), Some("d"));
        assert_eq!(pick_node(&nodes[1..3], &[], fits), None);
        let anything: Vec<Toleration> =
            serde_json::from_value(json!([{"operator": "Exists"}])).unwrap();
        let tolerant = |n: &Node| placeable(n, &anything, None);
        assert_eq!(pick_node(&nodes[1..3], &[&on_a], tolerant), Some("b"));
    }

    #[test]
    fn daemon_pods_cover_cordoned_nodes_not_unready_ones_and_wait_for_terminating_ones() {
        let nodes = [
            node("a", true, false),
            node("b", true, true),
            node("c", false, false),
            node("d", true, false),
        ];
        let tolerations = taints::with_daemonset_tolerations(vec![], false);
        let (on_c, leaving_d) = (pod_on("c", false), pod_on("d", true));
        let plan = plan_daemon_pods(&nodes, &[&on_c, &leaving_d], &tolerations, None);
        assert_eq!(
            plan,
            DaemonPlan {
                create_on: vec!["a".into(), "b".into()],
                delete: vec![],
                desired: 3,
                scheduled: 1,
            },
            "c keeps its pod (NoSchedule evicts nothing) but gets none; d waits for its old pod"
        );
        let only_ready = BTreeMap::from([("role".to_string(), "x".to_string())]);
        let plan = plan_daemon_pods(&nodes, &[&on_c], &tolerations, Some(&only_ready));
        assert_eq!(plan.delete, ["p-c"], "the selector no longer matches c");
    }
}
