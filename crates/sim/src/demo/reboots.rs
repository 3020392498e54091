//! `osroll demo --scenario reboot-coordination`: reboot coordination for updates installed
//! outside osroll, as kured and CLUO users run it. The same cluster, nodes, workloads and
//! controller as the upgrade demo; then half of the nodes get kured's sentinel file (as a
//! package manager leaves it), an external OSUpgrade coordinates their reboots under
//! maxUnavailable, and the narration follows each node until every signalled node
//! rebooted once, its sentinel cleared and it was released.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, labels};
use serde_json::json;

use super::node::SimNode;
use super::{DemoOptions, Running, start_cluster, start_controller, start_nodes, start_workloads};
use crate::testing::Cluster;

/// Name of the scenario's OSUpgrade.
pub const REBOOTS: &str = "reboots";

/// One node at the end of the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebootRow {
    /// Node name.
    pub node: String,
    /// Whether its sentinel file was written.
    pub signalled: bool,
    /// Reboots it went through.
    pub reboots: u64,
    /// Whether its sentinel file is still there.
    pub sentinel_left: bool,
    /// Its progress phase.
    pub phase: String,
}

/// The finished scenario, running until stopped or dropped (fields drop in order).
pub struct RebootDemo {
    /// One row per node.
    pub rows: Vec<RebootRow>,
    /// From applying the OSUpgrade to the last release.
    pub elapsed: Duration,
    running: Running,
    _dir: tempfile::TempDir,
    /// The cluster (test API server).
    pub cluster: Cluster,
}

impl RebootDemo {
    /// Every signalled node rebooted exactly once, cleared and completed; no other node
    /// rebooted.
    pub fn succeeded(&self) -> bool {
        !self.rows.is_empty()
            && self.rows.iter().all(|r| match r.signalled {
                true => r.reboots == 1 && !r.sentinel_left && r.phase == "Completed",
                false => r.reboots == 0,
            })
    }

    /// The per-node table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<10} {:<10} {:>7} {:<9} {}\n",
            "NODE", "SIGNALLED", "REBOOTS", "SENTINEL", "PROGRESS"
        );
        for r in &self.rows {
            let sentinel = match (r.sentinel_left, r.signalled) {
                (true, _) => "present",
                (false, true) => "cleared",
                (false, false) => "none",
            };
            s.push_str(&format!(
                "{:<10} {:<10} {:>7} {:<9} {}\n",
                r.node, r.signalled, r.reboots, sentinel, r.phase
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
pub async fn run(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<RebootDemo> {
    anyhow::ensure!(
        opts.nodes >= 2,
        "--nodes must be at least 2 for this scenario"
    );
    let cluster = start_cluster(opts, out).await?;
    let admin = cluster.admin();
    let dir = tempfile::Builder::new().prefix("osroll-demo-").tempdir()?;
    let nodes = start_nodes(&cluster, dir.path(), opts, out).await?;
    let workloads = start_workloads(&cluster, opts.nodes, out).await?;
    let signalled: Vec<String> = nodes.iter().step_by(2).map(|n| n.name.clone()).collect();
    for n in nodes.iter().filter(|n| signalled.contains(&n.name)) {
        n.host.need_reboot(false)?;
        writeln!(
            out,
            "{}: the package manager left {}",
            n.name,
            sentinel_shown(&n.host.sentinel())
        )?;
    }
    let controller = start_controller(&cluster).await?;
    apply(&admin, opts, out).await?;
    let started = Instant::now();
    narrate(&admin, &signalled, opts.timeout, out).await?;
    let elapsed = started.elapsed();
    let rows = rows(&admin, &nodes, &signalled).await?;
    Ok(RebootDemo {
        rows,
        elapsed,
        running: Running {
            nodes,
            controller: Some(controller),
            workloads,
        },
        _dir: dir,
        cluster,
    })
}

fn sentinel_shown(p: &Path) -> String {
    format!(
        ".../{}",
        p.iter()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|s| s.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    )
}

async fn apply(
    admin: &kube::Client,
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let up: OSUpgrade = serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": REBOOTS},
        "spec": {
            "external": {},
            "strategy": {"maxUnavailable": opts.max_unavailable},
            "drain": {"timeoutSeconds": 120},
        },
    }))?;
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await
        .context("creating the OSUpgrade")?;
    writeln!(
        out,
        "applied OSUpgrade {REBOOTS}: external (reboot coordination only)\n"
    )?;
    out.flush()?;
    Ok(())
}

/// Print each progress's phase and message when they change, until every signalled
/// node completed and no node is cordoned (or `timeout`).
async fn narrate(
    admin: &kube::Client,
    signalled: &[String],
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let progresses: Api<OSUpgradeProgress> = Api::all(admin.clone());
    let nodes: Api<Node> = Api::all(admin.clone());
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    let lp = ListParams::default().labels(&format!("{}={REBOOTS}", labels::SOURCE));
    loop {
        let ps = progresses.list(&lp).await?.items;
        for p in &ps {
            let st = p.status.clone().unwrap_or_default();
            let line = format!(
                "{:<9} {}",
                st.phase.map_or("-", |p| p.as_str()),
                st.message.unwrap_or_default()
            );
            if seen.get(&p.spec.node_name) != Some(&line) {
                writeln!(out, "{:<8} {line}", p.spec.node_name)?;
                out.flush()?;
                seen.insert(p.spec.node_name.clone(), line);
            }
        }
        let done = signalled
            .iter()
            .all(|n| seen.get(n).is_some_and(|l| l.starts_with("Completed")));
        let cordoned = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false)
            });
        if done && !cordoned {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the reboots did not finish within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn rows(
    admin: &kube::Client,
    nodes: &[SimNode],
    signalled: &[String],
) -> anyhow::Result<Vec<RebootRow>> {
    let ps = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut rows = Vec::new();
    for n in nodes {
        let phase = ps
            .iter()
            .find(|p| p.spec.node_name == n.name)
            .and_then(|p| p.status.as_ref()?.phase)
            .map_or("-".to_string(), |p| p.to_string());
        rows.push(RebootRow {
            node: n.name.clone(),
            signalled: signalled.contains(&n.name),
            reboots: n.host.boot_count()?.saturating_sub(1),
            sentinel_left: n.host.sentinel().exists(),
            phase,
        });
    }
    Ok(rows)
}
