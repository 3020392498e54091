//! `osroll demo --scenario rollback`: a health-gated rollout that goes wrong. The same
//! cluster, images, nodes, workloads and controller as the upgrade demo; the OSUpgrade
//! carries a CEL health check over a ConfigMap (as an alerting hook would write it) and
//! `onFailure: Rollback`. Once the first wave completed, the scenario turns the check red:
//! the rollout must stop and every upgraded node go back to 1.0 from its old slot without
//! downloading anything. The narration follows each node, and the scenario measures the
//! time from the check turning red to the last node back and released.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use osroll_api::manifests::DEFAULT_NAMESPACE;
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase, labels};
use osroll_controller::marks::ROLLBACK;
use serde_json::json;

use super::images::ImageServer;
use super::node::SimNode;
use super::{
    DemoOptions, FROM_VERSION, Running, TO_VERSION, start_cluster, start_controller, start_images,
    start_nodes, start_workloads,
};
use crate::testing::{Cluster, wait_for};

/// Name of the scenario's OSUpgrade.
pub const ROLLOUT: &str = "fleet";
/// The ConfigMap (in the controller's namespace) the health check reads.
pub const HEALTH_CONFIGMAP: &str = "app-health";

/// One node at the end of the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackRow {
    /// Node name.
    pub node: String,
    /// Whether the rollout upgraded it and then took it back.
    pub rolled_back: bool,
    /// The version in the slot it runs now.
    pub version: Option<String>,
    /// The slot it runs now.
    pub slot: String,
    /// Bytes its last attempt downloaded (the rollback's, for a rolled-back node).
    pub bytes: u64,
    /// Whether it is cordoned.
    pub cordoned: bool,
    /// Its progress phase.
    pub phase: String,
}

/// The finished scenario, running until stopped or dropped (fields drop in order).
pub struct RollbackDemo {
    /// One row per node.
    pub rows: Vec<RollbackRow>,
    /// The OSUpgrade's final phase.
    pub phase: Option<UpgradePhase>,
    /// From the check turning red to the rollout saying RollingBack.
    pub to_rollback: Duration,
    /// From the check turning red to the last node back and released.
    pub to_last_back: Duration,
    /// Bytes of the 1.0 image the image server sent during the whole scenario.
    pub from_bytes_served: u64,
    running: Running,
    _images: ImageServer,
    _dir: tempfile::TempDir,
    /// The cluster (test API server).
    pub cluster: Cluster,
}

impl RollbackDemo {
    /// The rollout ended RolledBack; at least one node went back; every node runs 1.0 and
    /// none is cordoned; not one byte of 1.0 was downloaded.
    pub fn succeeded(&self) -> bool {
        self.phase == Some(UpgradePhase::RolledBack)
            && self.rows.iter().any(|r| r.rolled_back)
            && self.rows.iter().all(|r| {
                r.version.as_deref() == Some(FROM_VERSION)
                    && !r.cordoned
                    && (!r.rolled_back || r.bytes == 0)
            })
            && self.from_bytes_served == 0
    }

    /// The per-node table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<10} {:<12} {:<8} {:<5} {:>10} {:<9} {}\n",
            "NODE", "ROLLED-BACK", "VERSION", "SLOT", "DOWNLOADED", "CORDONED", "PROGRESS"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:<10} {:<12} {:<8} {:<5} {:>10} {:<9} {}\n",
                r.node,
                r.rolled_back,
                r.version.as_deref().unwrap_or("-"),
                r.slot,
                r.bytes,
                r.cordoned,
                r.phase
            ));
        }
        s
    }

    /// Stop the controller, the nodes and the workloads (the server stays until drop).
    pub async fn stop(&mut self) {
        self.running.stop().await;
    }
}

/// Run the scenario, narrating to `out`.
pub async fn run(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<RollbackDemo> {
    anyhow::ensure!(
        opts.nodes >= 2,
        "--nodes must be at least 2 for this scenario"
    );
    let cluster = start_cluster(opts, out).await?;
    let admin = cluster.admin();
    let images = start_images(opts, out).await?;
    let dir = tempfile::Builder::new().prefix("osroll-demo-").tempdir()?;
    let nodes = start_nodes(&cluster, dir.path(), opts, out).await?;
    let workloads = start_workloads(&cluster, opts.nodes, out).await?;
    set_health(&admin, true).await?;
    let controller = start_controller(&cluster).await?;
    apply(&admin, &images, opts, out).await?;
    let mut narrator = Narrator::new(admin.clone());
    let wave = first_wave(&opts.max_unavailable, opts.nodes);
    narrator
        .until(opts.timeout, out, async |admin| {
            let st = Api::<OSUpgrade>::all(admin.clone()).get(ROLLOUT).await?;
            let done = st.status.and_then(|s| s.nodes).map_or(0, |n| n.completed);
            Ok(done as usize >= wave)
        })
        .await
        .context("waiting for the first wave")?;
    set_health(&admin, false).await?;
    let red = Instant::now();
    writeln!(
        out,
        "\n--- the health check turns red ({DEFAULT_NAMESPACE}/{HEALTH_CONFIGMAP} ok=false) ---\n"
    )?;
    let to_rollback = wait_rolling_back(&admin, opts.timeout)
        .await?
        .map_or(Duration::ZERO, |at| at.duration_since(red));
    narrator
        .until(opts.timeout, out, async |admin| rolled_back(admin).await)
        .await
        .context("waiting for the rollback")?;
    let to_last_back = red.elapsed();
    let phase = Api::<OSUpgrade>::all(admin.clone())
        .get(ROLLOUT)
        .await?
        .status
        .and_then(|s| s.phase);
    let rows = rows(&admin, &nodes).await?;
    Ok(RollbackDemo {
        rows,
        phase,
        to_rollback,
        to_last_back,
        from_bytes_served: images.bytes_served(FROM_VERSION),
        running: Running {
            nodes,
            controller: Some(controller),
            workloads,
        },
        _images: images,
        _dir: dir,
        cluster,
    })
}

/// Nodes in the first wave: `maxUnavailable` as a count, a percentage rounded down
/// (at least 1), at most every node.
fn first_wave(max_unavailable: &IntOrString, nodes: usize) -> usize {
    let n = match max_unavailable {
        IntOrString::Int(n) => usize::try_from(*n).unwrap_or(1),
        IntOrString::String(p) => {
            let pct: usize = p.trim_end_matches('%').parse().unwrap_or(1);
            nodes * pct / 100
        }
    };
    n.clamp(1, nodes)
}

/// Write the health ConfigMap the check reads (created on first use).
async fn set_health(admin: &kube::Client, ok: bool) -> anyhow::Result<()> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": HEALTH_CONFIGMAP, "namespace": DEFAULT_NAMESPACE},
        "data": {"ok": ok.to_string()},
    }))?;
    Api::<ConfigMap>::namespaced(admin.clone(), DEFAULT_NAMESPACE)
        .patch(
            HEALTH_CONFIGMAP,
            &PatchParams::apply("osroll-demo").force(),
            &Patch::Apply(&cm),
        )
        .await
        .context("writing the health ConfigMap")?;
    Ok(())
}

async fn apply(
    admin: &kube::Client,
    images: &ImageServer,
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let up: OSUpgrade = serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "version": "stable",
            "catalog": {"inline": images.catalog(TO_VERSION)},
            "allowHttpImages": true,
            "strategy": {
                "maxUnavailable": opts.max_unavailable,
                "healthChecks": [{"name": "app", "cel": {
                    "apiVersion": "v1", "kind": "ConfigMap", "namespace": DEFAULT_NAMESPACE,
                    "name": HEALTH_CONFIGMAP, "expr": "self.data.ok == 'true'"}}],
                "healthTimeoutSeconds": 0,
                "onFailure": "Rollback",
            },
            "drain": {"timeoutSeconds": 120},
        },
    }))?;
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await
        .context("creating the OSUpgrade")?;
    writeln!(
        out,
        "applied OSUpgrade {ROLLOUT}: {TO_VERSION}, health check app (CEL over {DEFAULT_NAMESPACE}/{HEALTH_CONFIGMAP}), onFailure Rollback\n"
    )?;
    out.flush()?;
    Ok(())
}

/// When the rollout was first seen RollingBack (or `None` if it ended without it).
async fn wait_rolling_back(
    admin: &kube::Client,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    let ups: Api<OSUpgrade> = Api::all(admin.clone());
    wait_for("the rollback to begin", timeout, || async {
        let phase = ups.get(ROLLOUT).await.ok()?.status?.phase?;
        match phase {
            UpgradePhase::RollingBack => Some(Some(Instant::now())),
            UpgradePhase::RolledBack | UpgradePhase::Failed => Some(None),
            _ => None,
        }
    })
    .await
}

/// The rollout ended, every node it armed for rollback completed, and no node is
/// cordoned.
async fn rolled_back(admin: &kube::Client) -> anyhow::Result<bool> {
    let st = Api::<OSUpgrade>::all(admin.clone()).get(ROLLOUT).await?;
    let ended = matches!(
        st.status.and_then(|s| s.phase),
        Some(UpgradePhase::RolledBack | UpgradePhase::Failed)
    );
    let back = progresses(admin).await?.iter().all(|p| {
        !p.annotations().contains_key(ROLLBACK)
            || p.status.as_ref().and_then(|s| s.phase) == Some(osroll_api::ProgressPhase::Completed)
    });
    let cordoned = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(is_cordoned);
    Ok(ended && back && !cordoned)
}

fn is_cordoned(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

async fn progresses(admin: &kube::Client) -> anyhow::Result<Vec<OSUpgradeProgress>> {
    let lp = ListParams::default().labels(&format!("{}={ROLLOUT}", labels::SOURCE));
    Ok(Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&lp)
        .await?
        .items)
}

/// Prints each node's phase and message when they change, with the time since the
/// OSUpgrade was applied.
struct Narrator {
    admin: kube::Client,
    started: Instant,
    seen: BTreeMap<String, String>,
}

impl Narrator {
    fn new(admin: kube::Client) -> Self {
        Narrator {
            admin,
            started: Instant::now(),
            seen: BTreeMap::new(),
        }
    }

    /// Narrate until `done` says so, or fail after `timeout`.
    async fn until<F>(
        &mut self,
        timeout: Duration,
        out: &mut dyn Write,
        done: F,
    ) -> anyhow::Result<()>
    where
        F: AsyncFn(&kube::Client) -> anyhow::Result<bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.print_changes(out).await?;
            if done(&self.admin).await? {
                // What made it done may have happened after the print above.
                return self.print_changes(out).await;
            }
            anyhow::ensure!(Instant::now() < deadline, "not done within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn print_changes(&mut self, out: &mut dyn Write) -> anyhow::Result<()> {
        let mut ps = progresses(&self.admin).await?;
        ps.sort_by(|a, b| a.spec.node_name.cmp(&b.spec.node_name));
        for p in &ps {
            let st = p.status.clone().unwrap_or_default();
            let target = p.spec.image.as_ref().map_or("-", |i| i.version.as_str());
            let mark = if p.annotations().contains_key(ROLLBACK) {
                "back to"
            } else {
                "up to"
            };
            let line = format!(
                "{mark} {target}: {:<11} {}",
                st.phase.map_or("-", |p| p.as_str()),
                st.message.unwrap_or_default()
            );
            if self.seen.get(&p.spec.node_name) != Some(&line) {
                let t = self.started.elapsed().as_secs_f64();
                writeln!(out, "{t:>6.1}s {:<8} {line}", p.spec.node_name)?;
                self.seen.insert(p.spec.node_name.clone(), line);
            }
        }
        out.flush()?;
        Ok(())
    }
}

async fn rows(admin: &kube::Client, nodes: &[SimNode]) -> anyhow::Result<Vec<RollbackRow>> {
    let ps = progresses(admin).await?;
    let cluster_nodes = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut rows = Vec::new();
    for n in nodes {
        let p = ps.iter().find(|p| p.spec.node_name == n.name);
        let st = p.and_then(|p| p.status.clone()).unwrap_or_default();
        let slot = n.host.booted_slot()?;
        rows.push(RollbackRow {
            node: n.name.clone(),
            rolled_back: p.is_some_and(|p| p.annotations().contains_key(ROLLBACK)),
            version: n.host.slot_version(slot)?,
            slot: slot.to_string(),
            bytes: st.bytes_done.unwrap_or(0),
            cordoned: cluster_nodes
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(&n.name) && is_cordoned(c)),
            phase: st.phase.map_or("-".to_string(), |p| p.to_string()),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_wave_follows_max_unavailable() {
        assert_eq!(first_wave(&IntOrString::Int(2), 5), 2);
        assert_eq!(first_wave(&IntOrString::Int(9), 5), 5);
        assert_eq!(first_wave(&IntOrString::String("40%".into()), 5), 2);
        assert_eq!(first_wave(&IntOrString::String("10%".into()), 5), 1);
    }
}
