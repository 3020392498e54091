//! Workload controllers for the test cluster, so drains behave as on a real cluster: an
//! evicted Deployment pod comes back on another schedulable node, and a DaemonSet keeps
//! one pod per node. Deliberately small: Deployment pods are owned by the Deployment
//! itself (no ReplicaSets, no rollouts of template changes), scheduling binds a new pod
//! to the Ready, schedulable node running the fewest of its siblings, and status counts
//! replicas. Not needed (and not started) on a real cluster, which has the real ones.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

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

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Nodes a new pod of a Deployment may go to.
pub fn schedulable(n: &Node) -> bool {
    node_ready(n) && n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true)
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The node for the next pod: the schedulable node running the fewest `siblings`
/// (ties: by name).
pub fn pick_node<'n>(nodes: &'n [Node], siblings: &[&Pod]) -> Option<&'n str> {
    let count = |n: &str| {
        siblings
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n))
            .count()
    };
    nodes
        .iter()
        .filter(|n| schedulable(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .min_by_key(|n| (count(n), n.to_string()))
}

fn pod_from_template(
    template: &Value,
    owner: Value,
    generate_name: &str,
    node: &str,
    tolerate_all: bool,
) -> anyhow::Result<Pod> {
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["nodeName"] = Value::String(node.into());
    if tolerate_all {
        let mut t = spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        t.push(json!({"operator": "Exists"}));
        spec["tolerations"] = Value::Array(t);
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
    let mut created = Vec::new();
    while live.len() + created.len() < desired {
        let mut all: Vec<&Pod> = live.clone();
        all.extend(created.iter());
        let Some(node) = pick_node(nodes, &all) else {
            break;
        };
        let pod = pod_from_template(
            &template,
            owner_ref(d),
            &format!("{}-", d.name_any()),
            node,
            false,
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

fn selects(selector: Option<&BTreeMap<String, String>>, n: &Node) -> bool {
    let labels = n.metadata.labels.clone().unwrap_or_default();
    selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
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
    let live = owned_by(pods, &uid);
    let template = serde_json::to_value(ds.spec.as_ref().map(|s| &s.template))?;
    let selector = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.node_selector.as_ref());
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|n| selects(selector, n))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let on = |node: &str| {
        live.iter()
            .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
    };
    let mut scheduled = 0;
    for node in &eligible {
        if !on(node) {
            let pod = pod_from_template(
                &template,
                owner_ref(ds),
                &format!("{}-", ds.name_any()),
                node,
                true,
            )?;
            api.create(&PostParams::default(), &pod).await?;
        }
        scheduled += 1;
    }
    for p in &live {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        if !eligible.contains(&node) {
            api.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let status = json!({"status": {
        "observedGeneration": ds.metadata.generation, "desiredNumberScheduled": eligible.len(),
        "currentNumberScheduled": scheduled, "updatedNumberScheduled": scheduled, "numberMisscheduled": 0,
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

    fn node(name: &str, ready: bool, cordoned: bool) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"unschedulable": cordoned},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    fn pod_on(node: &str) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": []}}),
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
        let on_a = pod_on("a");
        assert_eq!(pick_node(&nodes, &[]), Some("a"));
        assert_eq!(pick_node(&nodes, &[&on_a]), Some("d"));
        assert_eq!(pick_node(&nodes[1..3], &[]), None);
    }
}
