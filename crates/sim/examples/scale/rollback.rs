//! The scale benchmark's rollback mode (`--fail-at PERCENT`): how long a fleet rollback
//! takes at scale. The OSUpgrade to 2.0 carries a CEL health check over a ConfigMap,
//! `healthTimeoutSeconds: 0` and `onFailure: Rollback`; once PERCENT of the nodes
//! completed their upgrade (seen on a watch of the progress objects), the benchmark turns
//! the check red and measures the time to `status.rollback` and to the last node back on
//! 1.0 and uncordoned (the OSUpgrade RolledBack), the nodes cordoned at once against
//! `maxUnavailable`, the bytes of the 1.0 image served (0 for A/B: each node boots its
//! old slot again) and the controller's cost. It prints every figure, then fails if the
//! rollback broke a promise (not RolledBack, over budget, 1.0 downloaded, a node left
//! on 2.0 or cordoned).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::labels;
use osroll_api::{OSUpgrade, OSUpgradeProgress, OSUpgradeStatus, ProgressPhase, UpgradePhase};
use osroll_controller::marks::ROLLBACK;
use osroll_sim::demo::images::ImageServer;
use osroll_sim::testing::Cluster;
use serde_json::json;

use super::{
    Args, CONTROLLER_USER, Disruption, Fleet, NS, Rollout, cpu_seconds, max_unavailable,
    proc_field, report_controller, spawn_controller, wait_events_settled, watch_disruption,
};

/// Name of the OSUpgrade.
const UPGRADE: &str = "scale";
/// The ConfigMap (in [`NS`]) the health check reads.
const HEALTH_CONFIGMAP: &str = "app-health";
/// `healthTimeoutSeconds`: 0 fails the rollout at the first red verdict.
const HEALTH_TIMEOUT_SECONDS: u32 = 0;
const FROM_VERSION: &str = "1.0";
const TO_VERSION: &str = "2.0";
/// Give up on any one wait after this long.
const PATIENCE: Duration = Duration::from_secs(1800);
/// Give up on the rollback when no node came back for this long, naming the stuck ones.
const STALL: Duration = Duration::from_secs(120);

/// `--fail-at`: `30%` or `30`, from 1 to 99.
pub(super) fn parse_percent(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("{s:?}: {e}"))?;
    if !(1..=99).contains(&n) {
        return Err(format!("{s:?}: a percentage from 1% to 99%"));
    }
    Ok(n)
}

/// Completed nodes that turn the check red: `pct` of `nodes`, rounded up, at least 1.
fn threshold(nodes: usize, pct: u32) -> usize {
    (nodes * pct as usize).div_ceil(100).max(1)
}

/// What the rollback measured, for the report.
struct Measured {
    /// From creating the OSUpgrade to the check turning red.
    red_after: Duration,
    /// Progress phases when the check turned red.
    at_red: BTreeMap<String, usize>,
    /// From red to `status.rollback` first seen.
    to_rollback: Option<Duration>,
    /// From red to the end seen by polling: the rollout ended and no node is cordoned.
    to_end: Duration,
    /// The OSUpgrade's status at the end.
    status: OSUpgradeStatus,
    /// Nodes armed for rollback, and how many of them completed it.
    armed: usize,
    back: usize,
    /// Bytes the rollback attempts downloaded, summed over the nodes.
    rollback_bytes: u64,
    /// Nodes per `osroll.io/os-version` label, and nodes still cordoned, at the end.
    versions: BTreeMap<String, usize>,
    cordoned: usize,
    /// Bytes of each image served during the whole run.
    from_served: u64,
    to_served: u64,
    /// The controller's cost over the whole run.
    controller: Rollout,
    /// Of its requests, those after the check turned red.
    requests_after_red: usize,
}

pub(super) async fn bench(a: Args, pct: u32) -> anyhow::Result<()> {
    let fleet = Fleet::start(&a).await?;
    let images = ImageServer::start(&[FROM_VERSION, TO_VERSION], 64 * 1024).await?;
    let disruption = watch_disruption(Api::all(fleet.cluster.admin()));
    let m = measure(&fleet.cluster, &a, pct, &images, &disruption).await?;
    let verdict = report(&a, pct, &m, &disruption.lock().unwrap());
    fleet.stop();
    verdict
}

/// Write the health ConfigMap the check reads (created on first use).
async fn set_health(admin: &kube::Client, ok: bool) -> anyhow::Result<()> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": HEALTH_CONFIGMAP, "namespace": NS},
        "data": {"ok": ok.to_string()},
    }))?;
    Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .patch(
            HEALTH_CONFIGMAP,
            &PatchParams::apply("osroll-scale").force(),
            &Patch::Apply(&cm),
        )
        .await
        .context("writing the health ConfigMap")?;
    Ok(())
}

/// The OSUpgrade to 2.0 with the health check and `onFailure: Rollback`.
fn upgrade(a: &Args, images: &ImageServer) -> anyhow::Result<OSUpgrade> {
    let mu: serde_json::Value = match a.max_unavailable.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(a.max_unavailable),
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": UPGRADE},
        "spec": {
            "version": TO_VERSION,
            "catalog": {"inline": images.catalog(TO_VERSION)},
            "allowHttpImages": true,
            "strategy": {
                "maxUnavailable": mu,
                "healthChecks": [{"name": "app", "cel": {
                    "apiVersion": "v1", "kind": "ConfigMap", "namespace": NS,
                    "name": HEALTH_CONFIGMAP, "expr": "self.data.ok == 'true'"}}],
                "healthTimeoutSeconds": HEALTH_TIMEOUT_SECONDS,
                "onFailure": "Rollback",
            },
        },
    }))?)
}

/// Run the rollout, turn the check red at `pct`, wait for the rollback to end, and
/// measure the controller on the way.
async fn measure(
    cluster: &Cluster,
    a: &Args,
    pct: u32,
    images: &ImageServer,
    disruption: &Arc<Mutex<Disruption>>,
) -> anyhow::Result<Measured> {
    let admin = cluster.admin();
    set_health(&admin, true).await?;
    if let Some(s) = cluster.server() {
        s.clear_audit();
    }
    let mut child = KillOnDrop(spawn_controller(cluster)?);
    let pid = child.0.id();
    let mut peak_kib = 0;
    let t0 = Instant::now();
    let ups: Api<OSUpgrade> = Api::all(admin.clone());
    ups.create(&PostParams::default(), &upgrade(a, images)?)
        .await?;
    let at_red = wait_completed(&admin, threshold(a.nodes, pct)).await?;
    let red = Instant::now();
    disruption.lock().unwrap().open_window(red);
    let red_seq = audit_seq(cluster);
    set_health(&admin, false).await?;
    let red_after = red - t0;
    let (to_rollback, to_end, status) = wait_ended(cluster, red, pid, &mut peak_kib).await?;
    let events = wait_events_settled(cluster, pid, &mut peak_kib).await?;
    peak_kib = peak_kib.max(proc_field(pid, "status", "VmHWM:").unwrap_or(0));
    let cpu = cpu_seconds(pid).unwrap_or(0.0);
    let audit = cluster.server().map(|s| s.audit()).unwrap_or_default();
    let _ = child.0.kill();
    let _ = child.0.wait();
    let requests: Vec<_> = audit
        .into_iter()
        .filter(|e| e.user == CONTROLLER_USER)
        .collect();
    let requests_after_red = requests.iter().filter(|e| e.seq > red_seq).count();
    let (armed, back, rollback_bytes) = rolled_back(cluster).await;
    let (versions, cordoned) = nodes(&admin).await?;
    Ok(Measured {
        red_after,
        at_red,
        to_rollback,
        to_end,
        status: status.clone(),
        armed,
        back,
        rollback_bytes,
        versions,
        cordoned,
        from_served: images.bytes_served(FROM_VERSION),
        to_served: images.bytes_served(TO_VERSION),
        controller: Rollout {
            phase: status.phase.unwrap_or(UpgradePhase::Pending),
            status,
            wall: t0.elapsed(),
            peak_kib,
            cpu,
            events,
            requests,
        },
        requests_after_red,
    })
}

/// The controller process, killed when the benchmark returns early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last request the test API server logged so far.
fn audit_seq(cluster: &Cluster) -> u64 {
    let audit = cluster.server().map(|s| s.audit()).unwrap_or_default();
    audit.iter().map(|e| e.seq).max().unwrap_or(0)
}

/// Watch the progress objects until `n` of them are Completed: their phase counts then.
async fn wait_completed(admin: &kube::Client, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let api: Api<OSUpgradeProgress> = Api::all(admin.clone());
    let cfg = watcher::Config::default().labels(&format!("{}={UPGRADE}", labels::SOURCE));
    let mut stream = watcher(api, cfg).applied_objects().boxed();
    let mut phases: BTreeMap<String, String> = BTreeMap::new();
    let watch = async {
        while let Some(p) = stream.try_next().await? {
            let phase = p.status.as_ref().and_then(|s| s.phase);
            phases.insert(p.name_any(), phase.map_or("-", |p| p.as_str()).to_string());
            let done = phases
                .values()
                .filter(|p| *p == ProgressPhase::Completed.as_str())
                .count();
            if done >= n {
                return Ok(());
            }
        }
        anyhow::bail!("the progress watch ended")
    };
    tokio::time::timeout(PATIENCE, watch)
        .await
        .with_context(|| format!("{n} nodes did not complete within {PATIENCE:?}"))??;
    let mut counts = BTreeMap::new();
    for p in phases.into_values() {
        *counts.entry(p).or_default() += 1;
    }
    Ok(counts)
}

/// Poll the OSUpgrade until it ended (RolledBack, Failed or Completed) and no node is
/// cordoned: the time from `red` to `status.rollback` first seen, to that end, and the
/// final status. Samples the controller's peak RSS on the way.
async fn wait_ended(
    cluster: &Cluster,
    red: Instant,
    pid: u32,
    peak_kib: &mut u64,
) -> anyhow::Result<(Option<Duration>, Duration, OSUpgradeStatus)> {
    let admin = &cluster.admin();
    let ups: Api<OSUpgrade> = Api::all(admin.clone());
    let mut to_rollback = None;
    let mut moved = (None, Instant::now());
    loop {
        *peak_kib = (*peak_kib).max(proc_field(pid, "status", "VmHWM:").unwrap_or(0));
        let st = ups.get(UPGRADE).await?.status.unwrap_or_default();
        if to_rollback.is_none() && st.rollback.is_some() {
            to_rollback = Some(red.elapsed());
        }
        let ended = matches!(
            st.phase,
            Some(UpgradePhase::RolledBack | UpgradePhase::Failed | UpgradePhase::Completed)
        );
        if ended && nodes(admin).await?.1 == 0 {
            return Ok((to_rollback, red.elapsed(), st));
        }
        anyhow::ensure!(
            red.elapsed() < PATIENCE,
            "the rollback did not end within {PATIENCE:?}"
        );
        if moved.0 != st.message {
            moved = (st.message.clone(), Instant::now());
        } else if moved.1.elapsed() > STALL {
            anyhow::bail!(
                "the rollback stalled: {:?} {:?} for {STALL:?}, {:.1}s after red; {}",
                st.phase,
                st.message.unwrap_or_default(),
                red.elapsed().as_secs_f64(),
                stuck(cluster).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The progress objects armed for rollback and not Completed: node, phase, and the
/// retryNonce of the spec against the one the agent last observed.
async fn stuck(cluster: &Cluster) -> String {
    let rows: Vec<String> = cluster
        .progresses_of(UPGRADE)
        .await
        .into_iter()
        .filter(|p| p.annotations().contains_key(ROLLBACK))
        .filter_map(|p| {
            let st = p.status.clone().unwrap_or_default();
            (st.phase != Some(ProgressPhase::Completed)).then(|| {
                format!(
                    "{} {} (retryNonce {}, observed {})",
                    p.spec.node_name,
                    st.phase.map_or("-", |p| p.as_str()),
                    p.spec.retry_nonce.as_deref().unwrap_or("-"),
                    st.observed_retry_nonce.as_deref().unwrap_or("-")
                )
            })
        })
        .collect();
    format!("armed, not back: {}", rows.join("; "))
}

/// Nodes per `osroll.io/os-version` label, and how many are cordoned.
async fn nodes(admin: &kube::Client) -> anyhow::Result<(BTreeMap<String, usize>, usize)> {
    let list = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut versions = BTreeMap::new();
    let mut cordoned = 0;
    for n in &list {
        let v = n.labels().get(labels::OS_VERSION).cloned();
        *versions.entry(v.unwrap_or_else(|| "-".into())).or_default() += 1;
        cordoned += usize::from(n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true));
    }
    Ok((versions, cordoned))
}

/// Progress objects armed for rollback, how many of them completed, and the bytes they
/// downloaded.
async fn rolled_back(cluster: &Cluster) -> (usize, usize, u64) {
    let armed: Vec<_> = cluster
        .progresses_of(UPGRADE)
        .await
        .into_iter()
        .filter(|p| p.annotations().contains_key(ROLLBACK))
        .collect();
    let status = |p: &OSUpgradeProgress| p.status.clone().unwrap_or_default();
    let back = armed
        .iter()
        .filter(|p| status(p).phase == Some(ProgressPhase::Completed))
        .count();
    let bytes = armed
        .iter()
        .map(|p| status(p).bytes_done.unwrap_or(0))
        .sum();
    (armed.len(), back, bytes)
}

/// Print every figure; an error if the rollback broke a promise.
fn report(a: &Args, pct: u32, m: &Measured, d: &Disruption) -> anyhow::Result<()> {
    let budget = max_unavailable(a)?;
    let window = d.window.as_ref().context("no window")?;
    let red = window.opened;
    let last_back = d.last.filter(|l| *l >= red).map(|l| l - red);
    let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64()));
    let rollback = m.status.rollback.as_ref();
    println!("osroll scale benchmark: rollback");
    println!("  nodes                      {}", a.nodes);
    println!(
        "  maxUnavailable             {} -> {budget} nodes",
        a.max_unavailable
    );
    println!(
        "  simulated reboot downtime  {:.1}s",
        a.downtime.as_secs_f64()
    );
    println!(
        "  health check               CEL over {NS}/{HEALTH_CONFIGMAP} (self.data.ok == 'true'), healthTimeoutSeconds {HEALTH_TIMEOUT_SECONDS}, onFailure Rollback"
    );
    println!(
        "  check turned red           {:.1}s after create, once {} nodes ({pct}%) completed; progress then: {}",
        m.red_after.as_secs_f64(),
        threshold(a.nodes, pct),
        phases(&m.at_red)
    );
    println!(
        "  outcome                    {:?} (reason {}); {} nodes armed for rollback, {} back on {FROM_VERSION}",
        m.status.phase,
        rollback.map_or("-", |r| r.reason.as_str()),
        m.armed,
        m.back
    );
    println!(
        "  nodes at the end           {}; {} cordoned",
        phases(&m.versions),
        m.cordoned
    );
    println!(
        "  red -> rollback started    {} (status.rollback seen, polling every 0.1s)",
        secs(m.to_rollback)
    );
    println!(
        "  red -> last node back      {} (its uncordon, watch); rollout ended with none cordoned {:.1}s (poll)",
        secs(last_back),
        m.to_end.as_secs_f64()
    );
    report_window(window, budget, d.max_concurrent);
    if let Some(t) = m.to_rollback {
        let started = d
            .cordons
            .iter()
            .filter(|c| **c > red && **c - red <= t)
            .count();
        println!(
            "  cordons after red          {started} before status.rollback was seen ({:.1}s)",
            t.as_secs_f64()
        );
    }
    println!(
        "  image bytes served         {FROM_VERSION}: {} (rollback attempts downloaded {}), {TO_VERSION}: {}",
        m.from_served, m.rollback_bytes, m.to_served
    );
    report_controller(a, &m.controller);
    println!(
        "    {:>7}  of them after the check turned red",
        m.requests_after_red
    );
    verdict(a, m, window, budget)
}

/// `n phase, ...`.
fn phases(counts: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    parts.join(", ")
}

/// Disruption after the check turned red.
fn report_window(w: &super::Window, budget: usize, overall: usize) {
    let mut spans = w.spans.clone();
    spans.sort();
    let mean = spans.iter().sum::<Duration>() / spans.len().max(1) as u32;
    let median = spans.get(spans.len() / 2).copied().unwrap_or_default();
    println!(
        "  max nodes cordoned at once {} after red, {overall} over the whole run (budget {budget})",
        w.max_concurrent
    );
    println!(
        "  per-node disruption        mean {:.2}s, median {:.2}s over the {} nodes cordoned after red",
        mean.as_secs_f64(),
        median.as_secs_f64(),
        spans.len()
    );
}

/// The promises a rollback keeps.
fn verdict(a: &Args, m: &Measured, w: &super::Window, budget: usize) -> anyhow::Result<()> {
    let mut broken = Vec::new();
    if m.status.phase != Some(UpgradePhase::RolledBack) {
        broken.push(format!("ended {:?}, not RolledBack", m.status.phase));
    }
    if m.armed == 0 || m.back != m.armed {
        broken.push(format!("{} of {} armed nodes back", m.back, m.armed));
    }
    if w.max_concurrent > budget {
        broken.push(format!("{} nodes cordoned at once", w.max_concurrent));
    }
    if m.from_served != 0 || m.rollback_bytes != 0 {
        broken.push(format!("{FROM_VERSION} downloaded"));
    }
    if m.versions.get(FROM_VERSION) != Some(&a.nodes) || m.cordoned != 0 {
        broken.push("not every node on 1.0 and uncordoned".into());
    }
    anyhow::ensure!(broken.is_empty(), "rollback broke: {}", broken.join("; "));
    Ok(())
}
