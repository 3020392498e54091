//! Harness for controller tests on the test API server (`osroll-sim`): a cluster with
//! managed nodes, a scripted node agent and pod finisher, a recorder of node
//! disruption from watch events, and helpers to wait on conditions with deadlines.
//!
//! The scripted agent follows the progress protocol (stage, wait for `rebootApproved`,
//! reboot = NotReady for a while, then Completed or RolledBack as the node's fate says);
//! the real agent is exercised by the cluster tests that use the sim's kubelet-lite.

// Each test binary includes this module and uses a different part of it; items are `pub`
// so that `fleet` can share them.
#![allow(dead_code, unreachable_pub)]

pub mod fleet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase, labels};
use osroll_sim::TestServer;
use osroll_sim::rbac::node_user;
use osroll_sim::testing::identities;
use serde_json::json;

/// The controller's user in the audit log.
pub const CONTROLLER_USER: &str = "system:serviceaccount:osroll-system:osroll-controller";
/// The namespace of the controller.
pub const NS: &str = "osroll-system";
/// The agents' user.
pub const AGENT_USER: &str = "system:serviceaccount:osroll-system:osroll-agent";

pub struct SimCluster {
    pub server: Arc<TestServer>,
    pub admin: kube::Client,
}

pub fn now_str() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SimCluster {
    pub async fn start() -> anyhow::Result<SimCluster> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = Arc::new(TestServer::start()?);
        let admin = server.client().await?;
        let c = SimCluster { server, admin };
        let crds: Api<CustomResourceDefinition> = Api::all(c.admin.clone());
        for crd in osroll_api::crd::crds() {
            crds.create(&PostParams::default(), &crd)
                .await
                .context("creating CRD")?;
        }
        // The controller's and the agents' identities, as `osroll create` makes them.
        identities::apply(&c.admin, &identities::rbac_objects(NS), "osroll-tests").await?;
        // The CRDs are served once they are registered.
        let ups: Api<OSUpgrade> = Api::all(c.admin.clone());
        wait_for("OSUpgrade resource served", Duration::from_secs(10), || {
            let ups = ups.clone();
            async move { Ok(ups.list(&ListParams::default()).await.is_ok()) }
        })
        .await?;
        Ok(c)
    }

    pub async fn controller_client(&self) -> anyhow::Result<kube::Client> {
        self.server.client_for(CONTROLLER_USER).await
    }

    /// The scripted agents, acting as the agents' service account for progress
    /// objects and node labels and as each node's kubelet for its Ready condition.
    pub fn run_agents(&self, agents: ScriptedAgents) -> tokio::task::JoinHandle<()> {
        tokio::spawn(agents.run(self.server.clone()))
    }

    pub async fn add_node(
        &self,
        name: &str,
        version: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let mut l: BTreeMap<String, String> = [
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::OS_VERSION.to_string(), version.to_string()),
        ]
        .into();
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let n: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": l},
            "spec": {},
        }))?;
        nodes.create(&PostParams::default(), &n).await?;
        set_ready(&self.admin, name, true).await
    }

    pub async fn add_pod(&self, ns: &str, name: &str, node: &str, app: &str) -> anyhow::Result<()> {
        fleet::create_pod(&self.admin, ns, name, node, app).await?;
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), ns);
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    pub async fn add_pdb(
        &self,
        ns: &str,
        name: &str,
        app: &str,
        min_available: i32,
    ) -> anyhow::Result<()> {
        fleet::create_pdb(&self.admin, ns, name, app, min_available).await
    }

    pub async fn upgrade(&self, name: &str) -> anyhow::Result<OSUpgrade> {
        Ok(Api::<OSUpgrade>::all(self.admin.clone()).get(name).await?)
    }

    pub async fn events(&self) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = Api::all(self.admin.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    pub async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        Ok(Api::<Node>::all(self.admin.clone())
            .list(&ListParams::default())
            .await?
            .items)
    }

    pub async fn progresses(&self) -> anyhow::Result<Vec<OSUpgradeProgress>> {
        Ok(Api::<OSUpgradeProgress>::all(self.admin.clone())
            .list(&ListParams::default())
            .await?
            .items)
    }
}

pub async fn set_ready(client: &kube::Client, node: &str, ready: bool) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "KubeletReady" } else { "Rebooting" },
        "lastTransitionTime": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    }]}});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Poll `check` until it is true or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a scripted node ends its upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Complete,
    RollBack,
}

/// The scripted agents of all nodes, plus the kubelet's part in pod deletion.
pub struct ScriptedAgents {
    pub fates: HashMap<String, Fate>,
    pub staging: Duration,
    pub reboot: Duration,
}

/// A kube client per node, acting as that node's kubelet.
struct Kubelets {
    server: Arc<TestServer>,
    clients: HashMap<String, kube::Client>,
}

impl Kubelets {
    async fn client(&mut self, node: &str) -> anyhow::Result<kube::Client> {
        if let Some(c) = self.clients.get(node) {
            return Ok(c.clone());
        }
        let c = self.server.client_for(&node_user(node)).await?;
        self.clients.insert(node.to_string(), c.clone());
        Ok(c)
    }
}

struct NodeState {
    since: tokio::time::Instant,
}

impl ScriptedAgents {
    /// Run until the task is aborted.
    pub async fn run(self, server: Arc<TestServer>) {
        let client = server.client_for(AGENT_USER).await.expect("agent client");
        let mut kubelets = Kubelets {
            server,
            clients: HashMap::new(),
        };
        let api: Api<OSUpgradeProgress> = Api::all(client.clone());
        let pods: Api<Pod> = Api::all(client.clone());
        let mut state: HashMap<String, NodeState> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        loop {
            tick.tick().await;
            if let Err(e) = self.step(&client, &mut kubelets, &api, &mut state).await {
                eprintln!("scripted agent: {e:#}");
            }
            // The kubelet's half of graceful deletion.
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some())
                {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    let node = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    let Ok(kubelet) = kubelets.client(&node).await else {
                        continue;
                    };
                    let _ = Api::<Pod>::namespaced(kubelet, &ns)
                        .delete(&name, &dp)
                        .await;
                }
            }
        }
    }

    async fn write(
        api: &Api<OSUpgradeProgress>,
        name: &str,
        status: serde_json::Value,
    ) -> anyhow::Result<()> {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
        Ok(())
    }

    async fn step(
        &self,
        client: &kube::Client,
        kubelets: &mut Kubelets,
        api: &Api<OSUpgradeProgress>,
        state: &mut HashMap<String, NodeState>,
    ) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        for p in api.list(&ListParams::default()).await?.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let node = p.spec.node_name.clone();
            let target = p
                .spec
                .image
                .as_ref()
                .map(|i| i.version.clone())
                .unwrap_or_default();
            let phase = p.status.as_ref().and_then(|s| s.phase);
            let st = state
                .entry(name.clone())
                .or_insert(NodeState { since: now });
            let elapsed = now - st.since;
            match phase {
                None | Some(ProgressPhase::Pending) => {
                    Self::write(api, &name, json!({"phase": "Downloading", "targetVersion": target, "startedAt": now_str()})).await?;
                    st.since = now;
                }
                Some(ProgressPhase::Downloading) if elapsed >= self.staging => {
                    Self::write(
                        api,
                        &name,
                        json!({"phase": "Staged", "rebootRequired": true}),
                    )
                    .await?;
                    st.since = now;
                }
                Some(ProgressPhase::Staged) if p.spec.reboot_approved => {
                    Self::write(api, &name, json!({"phase": "Rebooting"})).await?;
                    set_ready(&kubelets.client(&node).await?, &node, false).await?;
                    st.since = now;
                }
                Some(ProgressPhase::Rebooting) if elapsed >= self.reboot => {
                    let fate = self.fates.get(&node).copied().unwrap_or(Fate::Complete);
                    set_ready(&kubelets.client(&node).await?, &node, true).await?;
                    let nodes: Api<Node> = Api::all(client.clone());
                    if fate == Fate::Complete {
                        let patch = json!({"metadata": {"labels": {labels::OS_VERSION: target}}});
                        nodes
                            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                        Self::write(api, &name, json!({"phase": "Completed", "currentVersion": target, "completedAt": now_str()}))
                            .await?;
                    } else {
                        Self::write(
                            api,
                            &name,
                            json!({"phase": "RolledBack", "completedAt": now_str(), "failureReason": "BootedPreviousSlot",
                                   "message": "the new slot did not boot; the bootloader fell back"}),
                        )
                        .await?;
                    }
                    st.since = now;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Records, from a watch on Nodes, the largest number of nodes disrupted (cordoned or
/// NotReady) at the same time.
#[derive(Clone, Default)]
pub struct DisruptionRecorder {
    pub max: Arc<Mutex<usize>>,
    pub history: Arc<Mutex<Vec<(String, usize)>>>,
}

impl DisruptionRecorder {
    pub async fn run(self, client: kube::Client) {
        self.run_selected(client, String::new()).await
    }

    /// Like [`DisruptionRecorder::run`], for the Nodes `selector` matches.
    pub async fn run_selected(self, client: kube::Client, selector: String) {
        let api: Api<Node> = Api::all(client);
        let mut disrupted: HashSet<String> = HashSet::new();
        let mut config = watcher::Config::default();
        if !selector.is_empty() {
            config = config.labels(&selector);
        }
        let mut stream = watcher(api, config).applied_objects().boxed();
        while let Some(ev) = stream.next().await {
            let Ok(n) = ev else { continue };
            let name = n.metadata.name.clone().unwrap_or_default();
            let cordoned = n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            if cordoned || !ready {
                disrupted.insert(name.clone());
            } else {
                disrupted.remove(&name);
            }
            let mut max = self.max.lock().unwrap();
            *max = (*max).max(disrupted.len());
            self.history.lock().unwrap().push((name, disrupted.len()));
        }
    }

    pub fn max(&self) -> usize {
        *self.max.lock().unwrap()
    }
}
