//! Kubelet-lite: a simulated node that behaves, as seen through the API, like a node with
//! a kubelet. It registers its Node with labels, keeps the Ready condition and its Lease in
//! `kube-node-lease` fresh, runs the pods bound to it (marks them Running and Ready),
//! finishes their graceful deletion, and simulates a reboot: NotReady for the downtime,
//! a new boot ID, and every pod on it restarted. It uses only the Kubernetes API through
//! kube-rs, so it works against the test API server or a real cluster alike.

pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use status::NodeFacts;

/// Field manager of everything kubelet-lite writes.
pub const MANAGER: &str = "osroll-sim-kubelet";

/// How a simulated node behaves.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Node name.
    pub name: String,
    /// Extra labels to register the Node with.
    pub labels: BTreeMap<String, String>,
    /// Lease renewal period.
    pub heartbeat: Duration,
    /// Node status refresh period when nothing changed.
    pub status_refresh: Duration,
    /// `leaseDurationSeconds` of the node Lease.
    pub lease_duration_secs: i32,
    /// How long a pod takes to stop after its deletion started.
    pub termination_delay: Duration,
    /// `nodeInfo.osImage` at start.
    pub os_image: String,
    /// `nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
}

impl KubeletConfig {
    /// Defaults for node `name`: 2 s lease renewals, 20 s status refresh, instant pod stop.
    pub fn new(name: &str) -> Self {
        KubeletConfig {
            name: name.into(),
            labels: BTreeMap::new(),
            heartbeat: Duration::from_secs(2),
            status_refresh: Duration::from_secs(20),
            lease_duration_secs: 40,
            termination_delay: Duration::ZERO,
            os_image: "osroll SimOS".into(),
            kubelet_version: "v1.33.0-osroll-sim".into(),
        }
    }

    /// Add a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
}

struct State {
    facts: NodeFacts,
    conditions: Option<Value>,
    node_uid: Option<String>,
    started: HashMap<String, String>,
    terminating: HashSet<String>,
    pending_os_image: Option<String>,
}

struct Inner {
    client: Client,
    cfg: KubeletConfig,
    state: Mutex<State>,
    wake: Notify,
    sync_lock: tokio::sync::Mutex<()>,
}

/// A running simulated node; dropping it stops its kubelet (the Node object stays and
/// goes stale, as when a real kubelet dies).
pub struct Kubelet {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

fn now_secs() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_micros() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn new_boot_id() -> String {
    crate::server::write::new_uid()
}

fn pod_ip(node: &str, pod_uid: &str) -> String {
    let h = |s: &str| {
        s.bytes()
            .fold(17u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
    };
    format!(
        "10.{}.{}.{}",
        100 + h(node) % 100,
        h(pod_uid) % 250,
        1 + h(&format!("{pod_uid}x")) % 250
    )
}

impl Kubelet {
    /// Register the node and start its heartbeats and pod handling.
    pub async fn start(client: Client, cfg: KubeletConfig) -> anyhow::Result<Kubelet> {
        let facts = NodeFacts {
            name: cfg.name.clone(),
            labels: cfg.labels.clone(),
            boot_id: new_boot_id(),
            os_image: cfg.os_image.clone(),
            kubelet_version: cfg.kubelet_version.clone(),
            ready: true,
            not_ready_message: String::new(),
        };
        let state = State {
            facts,
            conditions: None,
            node_uid: None,
            started: HashMap::new(),
            terminating: HashSet::new(),
            pending_os_image: None,
        };
        let inner = Arc::new(Inner {
            client,
            cfg,
            state: Mutex::new(state),
            wake: Notify::new(),
            sync_lock: tokio::sync::Mutex::new(()),
        });
        inner.register().await?;
        inner.renew_lease().await?;
        let hb = tokio::spawn(heartbeats(inner.clone()));
        let pods = tokio::spawn(pod_loop(inner.clone()));
        Ok(Kubelet {
            inner,
            tasks: vec![hb, pods],
        })
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// The current `nodeInfo.bootID`.
    pub fn boot_id(&self) -> String {
        self.inner
            .state
            .lock()
            .expect("kubelet state")
            .facts
            .boot_id
            .clone()
    }

    /// Whether the node is up.
    pub fn is_ready(&self) -> bool {
        self.inner.state.lock().expect("kubelet state").facts.ready
    }

    /// Report `os_image` in `nodeInfo.osImage` from the next boot on.
    pub fn set_os_image_after_reboot(&self, os_image: &str) {
        self.inner
            .state
            .lock()
            .expect("kubelet state")
            .pending_os_image = Some(os_image.into());
    }

    /// Simulate a reboot: NotReady and pods stopped for `downtime`, then a new boot ID,
    /// Ready again and every pod on the node restarted. Returns once the node is back.
    pub async fn reboot(&self, downtime: Duration) -> anyhow::Result<()> {
        self.go_down("node is rebooting (simulated)").await?;
        // The node is down for this long; this is the simulated outage, not a test wait.
        tokio::time::sleep(downtime).await;
        self.come_up().await
    }

    /// First half of a reboot: NotReady, pods stopped, lease no longer renewed.
    pub async fn go_down(&self, why: &str) -> anyhow::Result<()> {
        {
            let mut st = self.inner.state.lock().expect("kubelet state");
            st.facts.ready = false;
            st.facts.not_ready_message = why.into();
        }
        self.inner.write_status().await?;
        let now = now_secs();
        for pod in self.inner.pods_here().await? {
            let v = serde_json::to_value(&pod)?;
            let phase = v
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if phase == "Running" {
                let body = json!({"status": status::stopped_status(&v, &now)});
                self.inner.patch_pod_status(&v, body).await?;
            }
        }
        Ok(())
    }

    /// Second half of a reboot: new boot ID, Ready, pods restarted.
    pub async fn come_up(&self) -> anyhow::Result<()> {
        {
            let mut st = self.inner.state.lock().expect("kubelet state");
            st.facts.ready = true;
            st.facts.boot_id = new_boot_id();
            if let Some(img) = st.pending_os_image.take() {
                st.facts.os_image = img;
            }
        }
        self.inner.write_status().await?;
        self.inner.renew_lease().await?;
        for pod in self.inner.pods_here().await? {
            self.inner.sync_pod(&pod).await?;
        }
        self.inner.wake.notify_one();
        Ok(())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Inner {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn register(&self) -> anyhow::Result<()> {
        let (obj, name) = {
            let st = self.state.lock().expect("kubelet state");
            (
                status::node_object(&st.facts, &now_secs()),
                st.facts.name.clone(),
            )
        };
        let node: Node = serde_json::from_value(obj.clone())?;
        let created = match self
            .nodes()
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &node,
            )
            .await
        {
            Ok(n) => n,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let labels = json!({"metadata": {"labels": obj["metadata"]["labels"]}});
                self.nodes()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
                    .await?
            }
            Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
        };
        self.state.lock().expect("kubelet state").node_uid = created.metadata.uid.clone();
        self.write_status().await
    }

    async fn write_status(&self) -> anyhow::Result<()> {
        let (body, name) = {
            let st = self.state.lock().expect("kubelet state");
            (
                json!({"status": status::node_status(&st.facts, &now_secs(), st.conditions.as_ref())}),
                st.facts.name.clone(),
            )
        };
        let n = self
            .nodes()
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .with_context(|| format!("writing status of node {name}"))?;
        let conds = serde_json::to_value(n.status.and_then(|s| s.conditions))?;
        self.state.lock().expect("kubelet state").conditions = Some(conds);
        Ok(())
    }

    async fn renew_lease(&self) -> anyhow::Result<()> {
        let (name, uid) = {
            let st = self.state.lock().expect("kubelet state");
            (st.facts.name.clone(), st.node_uid.clone())
        };
        let lease = status::lease(
            &name,
            uid.as_deref(),
            &now_micros(),
            self.cfg.lease_duration_secs,
        );
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .with_context(|| format!("renewing lease of node {name}"))?;
        Ok(())
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn pods_here(&self) -> anyhow::Result<Vec<Pod>> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.cfg.name));
        Ok(Api::<Pod>::all(self.client.clone()).list(&lp).await?.items)
    }

    async fn patch_pod_status(&self, pod: &Value, body: Value) -> anyhow::Result<()> {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self
            .pods(ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("writing status of pod {ns}/{name}")),
        }
    }

    /// Bring one pod to where this node wants it: start it, or finish its deletion.
    async fn sync_pod(self: &Arc<Self>, pod: &Pod) -> anyhow::Result<()> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let v = serde_json::to_value(pod)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            let first = self
                .state
                .lock()
                .expect("kubelet state")
                .terminating
                .insert(uid.clone());
            if first {
                let me = self.clone();
                let pod = pod.clone();
                tokio::spawn(async move {
                    // The simulated time containers take to stop.
                    tokio::time::sleep(me.cfg.termination_delay).await;
                    if let Err(e) = me.finish_deletion(&pod).await {
                        tracing::warn!(error = %e, "finishing pod deletion");
                    }
                });
            }
            return Ok(());
        }
        let (ready, boot, started_on) = {
            let st = self.state.lock().expect("kubelet state");
            (
                st.facts.ready,
                st.facts.boot_id.clone(),
                st.started.get(&uid).cloned(),
            )
        };
        if !ready || !status::needs_start(&v, started_on.as_deref(), &boot) {
            if ready && started_on.is_none() {
                self.state
                    .lock()
                    .expect("kubelet state")
                    .started
                    .insert(uid, boot);
            }
            return Ok(());
        }
        let body = json!({"status": status::running_status(&v, &now_secs(), &pod_ip(&self.cfg.name, &uid))});
        self.patch_pod_status(&v, body).await?;
        self.state
            .lock()
            .expect("kubelet state")
            .started
            .insert(uid, boot);
        Ok(())
    }

    async fn finish_deletion(&self, pod: &Pod) -> anyhow::Result<()> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods(&ns).delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting pod {ns}/{name}")),
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut st = self.state.lock().expect("kubelet state");
        st.terminating.remove(&uid);
        st.started.remove(&uid);
        Ok(())
    }
}

async fn heartbeats(inner: Arc<Inner>) {
    let mut last_status = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.cfg.heartbeat) => {}
            _ = inner.wake.notified() => {}
        }
        let ready = inner.state.lock().expect("kubelet state").facts.ready;
        if !ready {
            continue;
        }
        if let Err(e) = inner.renew_lease().await {
            tracing::warn!(node = %inner.cfg.name, error = %e, "lease renewal");
        }
        if last_status.elapsed() >= inner.cfg.status_refresh {
            last_status = tokio::time::Instant::now();
            if let Err(e) = inner.write_status().await {
                tracing::warn!(node = %inner.cfg.name, error = %e, "node status");
            }
        }
    }
}

async fn pod_loop(inner: Arc<Inner>) {
    let api: Api<Pod> = Api::all(inner.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", inner.cfg.name));
    let mut stream = watcher(api, cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(pod) => {
                if let Err(e) = inner.sync_pod(&pod).await {
                    tracing::warn!(node = %inner.cfg.name, error = %e, "pod sync");
                }
            }
            Err(e) => tracing::debug!(node = %inner.cfg.name, error = %e, "pod watch"),
        }
    }
}
