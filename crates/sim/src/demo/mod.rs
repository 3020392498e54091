//! `osroll demo`: a whole rollout on the embedded test cluster. It starts the test API
//! server (with the shipped RBAC enforced), a local image server with generated 1.0 and
//! 2.0 images, N kubelet-lite nodes each running the real agent on a simulated A/B host,
//! workloads guarded by PodDisruptionBudgets, and the real controller; applies an
//! OSUpgrade to `stable` (2.0), hands the rollout to the caller's view until it ends
//! (`osroll demo` shows its live view), and reports per node what happened and how long
//! each phase took.

pub mod images;
pub mod node;
pub mod reboots;
pub mod rollback;
pub mod timeline;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use osroll_api::manifests::{AGENT_SA, CONTROLLER_SA, DEFAULT_NAMESPACE};
use osroll_api::{OSUpgrade, UpgradePhase, labels};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::server::ServerConfig;
use crate::testing::{Cluster, wait_for};
use images::ImageServer;
use node::{MachineOptions, SimNode};
use timeline::{SummaryRow, Timeline, render_table, summarize};

/// Version the nodes start on.
pub const FROM_VERSION: &str = "1.0";
/// Version the demo upgrades to (the catalog's `stable`).
pub const TO_VERSION: &str = "2.0";
/// Name of the demo's OSUpgrade.
pub const UPGRADE: &str = "fleet";
/// Namespace of the demo workloads.
pub const WORKLOAD_NS: &str = "shop";

/// Knobs of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// `strategy.maxUnavailable` of the OSUpgrade.
    pub max_unavailable: IntOrString,
    /// Expanded size of each generated image.
    pub image_size: usize,
    /// How long a reboot keeps a node down.
    pub downtime: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Enforce the shipped RBAC on the controller and the agents.
    pub enforce_rbac: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            nodes: 5,
            max_unavailable: IntOrString::Int(1),
            image_size: 4 * 1024 * 1024,
            downtime: Duration::from_millis(800),
            timeout: Duration::from_secs(180),
            enforce_rbac: true,
        }
    }
}

/// Parse `--max-unavailable`: an integer or a percentage.
pub fn parse_max_unavailable(s: &str) -> anyhow::Result<IntOrString> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        let n: u32 = p
            .parse()
            .with_context(|| format!("--max-unavailable {s:?}: not a percentage"))?;
        if n == 0 || n > 100 {
            bail!("--max-unavailable {s:?}: a percentage must be 1% to 100%");
        }
        return Ok(IntOrString::String(format!("{n}%")));
    }
    let n: i32 = s
        .parse()
        .with_context(|| format!("--max-unavailable {s:?}: not an integer or a percentage"))?;
    if n < 1 {
        bail!("--max-unavailable {s:?}: must be at least 1");
    }
    Ok(IntOrString::Int(n))
}

/// A finished (or timed-out) demo, still running until dropped or shut down. Fields
/// drop in order: everything that talks to the API server goes before the server.
pub struct Demo {
    /// Per-node summary.
    pub rows: Vec<SummaryRow>,
    /// Final phase of the OSUpgrade.
    pub phase: Option<UpgradePhase>,
    /// From applying the OSUpgrade to its end.
    pub elapsed: Duration,
    running: Running,
    _images: ImageServer,
    timeline: Option<Timeline>,
    _dir: tempfile::TempDir,
    /// The cluster (test API server).
    pub cluster: Cluster,
}

impl Demo {
    /// Whether every node completed and the rollout says Completed.
    pub fn succeeded(&self) -> bool {
        self.phase == Some(UpgradePhase::Completed)
            && !self.rows.is_empty()
            && self
                .rows
                .iter()
                .all(|r| r.result == Some(osroll_api::ProgressPhase::Completed))
    }

    /// The admin kubeconfig of the demo cluster.
    pub fn kubeconfig(&self) -> &Path {
        self.cluster.admin_kubeconfig()
    }

    /// The summary table.
    pub fn table(&self) -> String {
        render_table(&self.rows)
    }

    /// Stop the controller (releasing its Lease), the nodes and the helpers; the API
    /// server stays until the value is dropped. Drop the value only after the runtime
    /// that ran the demo, so no client task outlives the server it talks to.
    pub async fn stop(&mut self) {
        self.timeline.take();
        self.running.stop().await;
    }
}

fn sa_user(sa: &str) -> String {
    format!("system:serviceaccount:{DEFAULT_NAMESPACE}:{sa}")
}

/// Apply the RBAC part of the shipped manifests (namespace, service accounts, roles,
/// bindings) and the agents' admission policy; the workloads themselves run in-process.
async fn apply_rbac(client: &kube::Client) -> anyhow::Result<()> {
    use crate::testing::identities;
    let mut objects = identities::rbac_objects(DEFAULT_NAMESPACE);
    objects.extend(identities::admission_objects(DEFAULT_NAMESPACE));
    identities::apply(client, &objects, "osroll-demo").await
}

/// The demo's workloads: Deployment web (PDB maxUnavailable 1), Deployment cache (PDB
/// minAvailable 1) and DaemonSet log-shipper, as (plural, object) pairs.
fn workload_manifests(nodes: usize) -> Vec<(&'static str, Value)> {
    let ns = WORKLOAD_NS;
    let app = |name: &str, replicas: usize| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": format!("registry.example/{name}:1")}]}}},
        })
    };
    let budget = |name: &str, rule: Value| {
        let mut spec = json!({"selector": {"matchLabels": {"app": name}}});
        if let Some(m) = rule.as_object() {
            for (k, v) in m {
                spec[k] = v.clone();
            }
        }
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let shipper = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "log-shipper", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "log-shipper"}},
            "template": {"metadata": {"labels": {"app": "log-shipper"}},
                "spec": {"containers": [{"name": "shipper", "image": "registry.example/shipper:1"}]}}},
    });
    let web = nodes.saturating_sub(1).max(2);
    vec![
        ("deployments", app("web", web)),
        (
            "poddisruptionbudgets",
            budget("web", json!({"maxUnavailable": 1})),
        ),
        ("deployments", app("cache", 2)),
        (
            "poddisruptionbudgets",
            budget("cache", json!({"minAvailable": 1})),
        ),
        ("daemonsets", shipper),
    ]
}

/// Create the workloads and wait until every Deployment is ready.
async fn create_workloads(client: &kube::Client, nodes: usize) -> anyhow::Result<()> {
    for (plural, obj) in workload_manifests(nodes) {
        let (group, version) = obj["apiVersion"]
            .as_str()
            .and_then(|v| v.split_once('/'))
            .unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        Api::<DynamicObject>::namespaced_with(client.clone(), WORKLOAD_NS, &ar)
            .patch(
                name,
                &PatchParams::apply("osroll-demo").force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("creating {name}"))?;
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), WORKLOAD_NS);
    wait_for("the workloads to be ready", Duration::from_secs(30), || {
        let deps = deps.clone();
        async move {
            let l = deps.list(&ListParams::default()).await.ok()?;
            l.items
                .iter()
                .all(|d| {
                    d.status.as_ref().and_then(|s| s.ready_replicas)
                        == d.spec.as_ref().and_then(|s| s.replicas)
                })
                .then_some(())
        }
    })
    .await
}

fn upgrade(catalog: &str, max_unavailable: &IntOrString) -> anyhow::Result<OSUpgrade> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": UPGRADE},
        "spec": {
            "version": "stable",
            "catalog": {"inline": catalog},
            "allowHttpImages": true,
            "strategy": {"maxUnavailable": max_unavailable},
            "drain": {"timeoutSeconds": 120},
        },
    }))?)
}

async fn slots(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    Ok(nodes
        .into_iter()
        .filter_map(|n| {
            let slot = n.metadata.labels.as_ref()?.get(labels::SLOT)?.clone();
            Some((n.metadata.name?, slot))
        })
        .collect())
}

/// The controller task and the sender that stops it.
type ControllerTask = (
    JoinHandle<anyhow::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
);

/// What every scenario keeps running after it finished: the nodes, the controller and
/// the workloads, all clients of the API server, so they stop (or, dropped, abort)
/// before it goes away.
struct Running {
    nodes: Vec<SimNode>,
    controller: Option<ControllerTask>,
    workloads: Option<crate::workloads::Workloads>,
}

impl Running {
    /// Stop the controller (releasing its Lease), then drop the nodes and workloads.
    async fn stop(&mut self) {
        if let Some((task, stop)) = self.controller.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.nodes.clear();
        self.workloads.take();
        // Let the aborted tasks unwind before their server goes away.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((task, _)) = self.controller.take() {
            task.abort();
        }
    }
}

/// Run the demo: set everything up, apply the OSUpgrade, let `follow` show the rollout
/// until it ends (it gets an admin client and returns the last phase it saw), and
/// summarize what happened on each node. `out` gets the narration.
pub async fn run<F>(opts: &DemoOptions, out: &mut dyn Write, follow: F) -> anyhow::Result<Demo>
where
    F: AsyncFnOnce(kube::Client) -> anyhow::Result<Option<UpgradePhase>>,
{
    if opts.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let started = Instant::now();
    let cluster = start_cluster(opts, out).await?;
    let admin = cluster.admin();
    let images = start_images(opts, out).await?;
    let dir = tempfile::Builder::new().prefix("osroll-demo-").tempdir()?;
    let nodes = start_nodes(&cluster, dir.path(), opts, out).await?;
    let workloads = start_workloads(&cluster, opts.nodes, out).await?;
    let slots_before = slots(&admin).await?;
    let controller = start_controller(&cluster).await?;
    let timeline = Timeline::start(admin.clone());
    apply_upgrade(&admin, &images, opts, started.elapsed(), out).await?;
    let (phase, elapsed) = follow_rollout(&admin, opts.timeout, follow, out).await?;
    let slots_after = slots(&admin).await?;
    let rows = summarize(&timeline.snapshot(), &slots_before, &slots_after);
    Ok(Demo {
        cluster,
        rows,
        phase,
        elapsed,
        running: Running {
            nodes,
            controller: Some(controller),
            workloads,
        },
        _images: images,
        timeline: Some(timeline),
        _dir: dir,
    })
}

/// The test API server with the CRDs and the shipped RBAC.
async fn start_cluster(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<Cluster> {
    let cluster = Cluster::sim(ServerConfig {
        enforce_rbac: opts.enforce_rbac,
        ..ServerConfig::default()
    })
    .await?;
    writeln!(
        out,
        "test API server: {} (kubeconfig {})",
        cluster.server().map(|s| s.url()).unwrap_or_default(),
        cluster.admin_kubeconfig().display()
    )?;
    cluster.install_crds().await?;
    apply_rbac(&cluster.admin()).await?;
    Ok(cluster)
}

/// The image server with the from- and to-version images.
async fn start_images(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<ImageServer> {
    let images = ImageServer::start(&[FROM_VERSION, TO_VERSION], opts.image_size).await?;
    writeln!(
        out,
        "image server: {} and {} ({} expanded, {} compressed)",
        images.images[0].url,
        images.images[1].url,
        osroll_api::progress::human_bytes(images.images[1].size),
        osroll_api::progress::human_bytes(images.images[1].compressed)
    )?;
    Ok(images)
}

/// `opts.nodes` machines in `dir`, once every agent has labelled its Node.
async fn start_nodes(
    cluster: &Cluster,
    dir: &Path,
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<SimNode>> {
    let machine = MachineOptions {
        slot_size: (opts.image_size as u64).next_multiple_of(1024 * 1024),
        downtime: opts.downtime,
        bad_slot_b: false,
    };
    let mut nodes = Vec::new();
    for i in 1..=opts.nodes {
        let name = format!("node-{i}");
        let kubelet_client = cluster.kubelet_client(&name).await?;
        // A token bound to its node, as a DaemonSet pod's: the admission policy needs it.
        let agent_client = cluster.client_for_node(&sa_user(AGENT_SA), &name).await?;
        let node = SimNode::start(
            kubelet_client,
            agent_client,
            dir,
            &name,
            FROM_VERSION,
            &machine,
        )
        .await?;
        nodes.push(node);
    }
    let node_api: Api<Node> = Api::all(cluster.admin());
    let managed = ListParams::default().labels(&format!("{}=true", labels::MANAGED));
    wait_for(
        "every agent to report its node",
        Duration::from_secs(30),
        || {
            let (node_api, managed) = (node_api.clone(), managed.clone());
            async move {
                let l = node_api.list(&managed).await.ok()?;
                (l.items.len() == opts.nodes).then_some(())
            }
        },
    )
    .await?;
    writeln!(
        out,
        "{} nodes on {FROM_VERSION}, each with kubelet-lite and the osroll agent on a simulated A/B host",
        opts.nodes
    )?;
    Ok(nodes)
}

/// The workloads in [`WORKLOAD_NS`] and the controllers that keep them running.
async fn start_workloads(
    cluster: &Cluster,
    nodes: usize,
    out: &mut dyn Write,
) -> anyhow::Result<Option<crate::workloads::Workloads>> {
    cluster.ensure_namespace(WORKLOAD_NS).await?;
    let workloads = cluster.start_workloads();
    create_workloads(&cluster.admin(), nodes).await?;
    writeln!(
        out,
        "workloads in {WORKLOAD_NS}: Deployment web (PDB maxUnavailable 1), Deployment cache (PDB minAvailable 1), DaemonSet log-shipper"
    )?;
    Ok(workloads)
}

/// The real controller, as its service account, until the sender fires.
async fn start_controller(cluster: &Cluster) -> anyhow::Result<ControllerTask> {
    let client = cluster.client_for(&sa_user(CONTROLLER_SA)).await?;
    let cfg = osroll_controller::ControllerConfig {
        namespace: DEFAULT_NAMESPACE.into(),
        identity: "osroll-controller-demo".into(),
        lease_duration: Duration::from_secs(6),
        drain_poll: Duration::from_millis(200),
        resync: Duration::from_secs(10),
        ..osroll_controller::ControllerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(osroll_controller::run_until(cfg, client, async move {
        let _ = stopped.await;
    }));
    Ok((task, stop))
}

/// Create the OSUpgrade to `stable` from the image server's catalog.
async fn apply_upgrade(
    admin: &kube::Client,
    images: &ImageServer,
    opts: &DemoOptions,
    setup: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let up = upgrade(&images.catalog(TO_VERSION), &opts.max_unavailable)?;
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await
        .context("creating the OSUpgrade")?;
    let max = match &opts.max_unavailable {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    writeln!(
        out,
        "applied OSUpgrade {UPGRADE}: version stable ({TO_VERSION}), maxUnavailable {max} (setup took {:.1}s)\n",
        setup.as_secs_f64()
    )?;
    out.flush()?;
    Ok(())
}

/// Let `follow` show the rollout until it ends or `timeout` passes: the final phase and
/// how long the rollout took.
async fn follow_rollout<F>(
    admin: &kube::Client,
    timeout: Duration,
    follow: F,
    out: &mut dyn Write,
) -> anyhow::Result<(Option<UpgradePhase>, Duration)>
where
    F: AsyncFnOnce(kube::Client) -> anyhow::Result<Option<UpgradePhase>>,
{
    let start = Instant::now();
    let followed = tokio::time::timeout(timeout, follow(admin.clone())).await;
    let elapsed = start.elapsed();
    let phase = match followed {
        Ok(phase) => phase?,
        Err(_) => {
            writeln!(out, "\nthe rollout did not finish within {timeout:?}")?;
            Api::<OSUpgrade>::all(admin.clone())
                .get(UPGRADE)
                .await
                .ok()
                .and_then(|u| u.status)
                .and_then(|s| s.phase)
        }
    };
    Ok((phase, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unavailable_flag() {
        assert_eq!(parse_max_unavailable("2").unwrap(), IntOrString::Int(2));
        assert_eq!(
            parse_max_unavailable("40%").unwrap(),
            IntOrString::String("40%".into())
        );
        assert!(parse_max_unavailable("0").is_err());
        assert!(parse_max_unavailable("150%").is_err());
        assert!(
            parse_max_unavailable("two")
                .unwrap_err()
                .to_string()
                .contains("two")
        );
    }
}
