//! Scale benchmark (prints figures, asserts nothing): N simulated nodes (kubelet-lite +
//! the real agent on a simulated A/B host) on the test API server, one OSUpgrade with
//! `maxUnavailable` M, and the controller in a child process so its memory is its own.
//!
//! ```text
//! cargo run --release -p osroll-sim --example scale -- --nodes 1000 --max-unavailable 10%
//! ```
//!
//! Reports the rollout's wall time against the ideal schedule (batches x the mean time a
//! node is disrupted, from watch events), the controller's peak RSS (VmHWM) and CPU time,
//! and its API requests per node (from the test API server's audit log). RBAC is not
//! enforced here (one shared client plays every kubelet and agent, and the per-request
//! RBAC check would be part of the measured server time); the cluster tests enforce it.
//!
//! With `--fail-at PERCENT` it measures a fleet rollback instead (see `scale/rollback.rs`):
//! a CEL health check turned red once PERCENT of the nodes completed, `onFailure: Rollback`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_agent::{AgentConfig, SimHost};
use osroll_api::{OSUpgrade, OSUpgradeStatus, UpgradePhase, labels};
use osroll_sim::demo::node::run_machine;
use osroll_sim::testing::Cluster;
use osroll_sim::{AuditEntry, Kubelet, KubeletConfig};
use serde_json::json;

#[path = "scale/rollback.rs"]
mod rollback;

const CONTROLLER_USER: &str = "system:serviceaccount:osroll-system:osroll-controller";
const NS: &str = "osroll-system";

/// The command line (the controller child is started with `--controller-child KUBECONFIG`
/// instead, before this is parsed).
#[derive(clap::Parser)]
#[command(about = "Scale benchmark: one OSUpgrade over N simulated nodes")]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// `strategy.maxUnavailable`: a count or a percentage.
    #[arg(long, default_value = "10%")]
    max_unavailable: String,
    /// How long a simulated reboot keeps a node down, in milliseconds.
    #[arg(long = "downtime-ms", default_value = "2000", value_parser = parse_millis)]
    downtime: Duration,
    /// Turn a CEL health check red once this percentage of the nodes completed
    /// (`onFailure: Rollback`), and measure the rollback instead of a forward rollout.
    #[arg(long, value_parser = rollback::parse_percent)]
    fail_at: Option<u32>,
}

fn parse_millis(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse().map(Duration::from_millis)
}

/// Child mode: the controller alone, until killed.
async fn controller_child(kubeconfig: PathBuf) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let cfg = osroll_controller::ControllerConfig {
        namespace: NS.into(),
        identity: "bench".into(),
        drain_poll: Duration::from_millis(500),
        ..Default::default()
    };
    osroll_controller::run(cfg, client).await
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[derive(Default)]
struct Disruption {
    cordoned: HashMap<String, Instant>,
    spans: Vec<Duration>,
    first: Option<Instant>,
    last: Option<Instant>,
    concurrent: usize,
    max_concurrent: usize,
    /// Times of cordons, in order.
    cordons: Vec<Instant>,
    /// Uncordons not yet followed by a cordon that took their slot.
    free: std::collections::VecDeque<Instant>,
    /// From a slot freeing to the next cordon, once the budget was full.
    gaps: Vec<Duration>,
    /// Since [`Disruption::open_window`], if called.
    window: Option<Window>,
}

/// Disruption after a point in time (the rollback mode's health check turning red).
struct Window {
    opened: Instant,
    /// Most nodes cordoned at once, counting those already cordoned when it opened.
    max_concurrent: usize,
    /// Cordon -> uncordon of the nodes cordoned after it opened.
    spans: Vec<Duration>,
}

impl Disruption {
    /// Start a [`Window`] at `now`.
    fn open_window(&mut self, now: Instant) {
        self.window = Some(Window {
            opened: now,
            max_concurrent: self.concurrent,
            spans: Vec::new(),
        });
    }

    /// Node `name` was seen `cordoned` (or not) at `now`.
    fn record(&mut self, name: String, cordoned: bool, now: Instant) {
        match (cordoned, self.cordoned.contains_key(&name)) {
            (true, false) => {
                self.cordoned.insert(name, now);
                self.first.get_or_insert(now);
                self.concurrent += 1;
                self.max_concurrent = self.max_concurrent.max(self.concurrent);
                if let Some(w) = &mut self.window {
                    w.max_concurrent = w.max_concurrent.max(self.concurrent);
                }
                self.cordons.push(now);
                if let Some(freed) = self.free.pop_front() {
                    self.gaps.push(now - freed);
                }
            }
            (false, true) => {
                let t0 = self.cordoned.remove(&name).unwrap();
                self.spans.push(now - t0);
                if let Some(w) = self.window.as_mut().filter(|w| t0 >= w.opened) {
                    w.spans.push(now - t0);
                }
                self.last = Some(now);
                self.concurrent -= 1;
                self.free.push_back(now);
            }
            _ => {}
        }
    }
}

/// What the rollout measured, for the report.
struct Rollout {
    phase: UpgradePhase,
    status: OSUpgradeStatus,
    /// From creating the OSUpgrade to its end.
    wall: Duration,
    /// The controller's peak RSS (VmHWM), KiB.
    peak_kib: u64,
    /// The controller's CPU time, seconds.
    cpu: f64,
    /// Events published by the end.
    events: usize,
    /// The controller's API requests.
    requests: Vec<AuditEntry>,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if argv.get(1).map(String::as_str) == Some("--controller-child") {
        return rt.block_on(controller_child(PathBuf::from(&argv[2])));
    }
    // The machines' agent errors and failed boots (logged by `run_machine`), on stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("osroll_sim=warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = <Args as clap::Parser>::parse();
    match args.fail_at {
        Some(pct) => rt.block_on(rollback::bench(args, pct)),
        None => rt.block_on(bench(args)),
    }
}

async fn bench(a: Args) -> anyhow::Result<()> {
    let fleet = Fleet::start(&a).await?;
    let (image, image_url) = serve_image().await?;
    let disruption = watch_disruption(Api::all(fleet.cluster.admin()));
    let rollout = roll_out(&fleet.cluster, &a, &image, &image_url).await?;
    report(&a, &rollout, &disruption.lock().unwrap())?;
    fleet.stop();
    Ok(())
}

/// The test API server with `a.nodes` machines on 1.0, each agent having labelled its Node.
struct Fleet {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    kubelets: Vec<Arc<Kubelet>>,
    _dir: tempfile::TempDir,
    cluster: Cluster,
}

impl Fleet {
    async fn start(a: &Args) -> anyhow::Result<Fleet> {
        let t_setup = Instant::now();
        let cluster = Cluster::start_with(osroll_sim::ServerConfig {
            enforce_rbac: false,
            ..Default::default()
        })
        .await?;
        anyhow::ensure!(
            !cluster.is_real(),
            "the benchmark needs the test API server (unset OSROLL_E2E_KUBECONFIG)"
        );
        cluster.install_crds().await?;
        cluster.ensure_namespace(NS).await?;
        let dir = tempfile::tempdir()?;
        let (tasks, kubelets) = start_machines(&cluster, dir.path(), a).await?;
        eprintln!(
            "{} nodes up in {:.1}s",
            a.nodes,
            t_setup.elapsed().as_secs_f64()
        );
        Ok(Fleet {
            tasks,
            kubelets,
            _dir: dir,
            cluster,
        })
    }

    /// Stop the machines (the server goes when the value drops).
    fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        drop(self.kubelets);
    }
}

/// Serve the 2.0 image on loopback: its bytes and URL.
async fn serve_image() -> anyhow::Result<(Vec<u8>, String)> {
    let image = osroll_agent::simhost::image_bytes("2.0", 64 * 1024);
    let img = image.clone();
    let app = axum::Router::new().route(
        "/2.0.img",
        axum::routing::get(move || async move { img.clone() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let image_url = format!("http://{}/2.0.img", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((image, image_url))
}

/// `a.nodes` machines on 1.0 in `dir`, once every agent has labelled its Node: their
/// tasks and kubelets.
async fn start_machines(
    cluster: &Cluster,
    dir: &std::path::Path,
    a: &Args,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Vec<Arc<Kubelet>>)> {
    let nodes_client = cluster.client_for("system:nodes").await?;
    let mut tasks = Vec::new();
    let mut kubelets = Vec::new();
    for i in 0..a.nodes {
        let name = format!("node-{i:04}");
        let host = SimHost::create(&dir.join(&name), 128 * 1024, "1.0")?;
        let mut kc = KubeletConfig::new(&name);
        kc.heartbeat = Duration::from_secs(10);
        kc.status_refresh = Duration::from_secs(60);
        let kubelet = Arc::new(Kubelet::start(nodes_client.clone(), kc).await?);
        let mut cfg = AgentConfig::new(&name, dir.join(&name).join("state"));
        cfg.install.direct_io = false;
        cfg.install.buffer_size = 64 * 1024;
        cfg.install.buffers = 2;
        cfg.progress_interval = Duration::from_secs(5);
        tasks.push(tokio::spawn(run_machine(
            cfg,
            nodes_client.clone(),
            host,
            kubelet.clone(),
            a.downtime,
        )));
        kubelets.push(kubelet);
    }
    let node_api: Api<Node> = Api::all(cluster.admin());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let lp = ListParams::default().labels(&format!("{}=true", labels::MANAGED));
        if node_api.list(&lp).await?.items.len() == a.nodes {
            return Ok((tasks, kubelets));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "agents did not label their nodes in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Disruption from watch events (cordon -> uncordon per node), recorded in the background.
fn watch_disruption(api: Api<Node>) -> Arc<Mutex<Disruption>> {
    let disruption = Arc::new(Mutex::new(Disruption::default()));
    let d = disruption.clone();
    tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(n)) = s.next().await {
            let name = n.metadata.name.clone().unwrap_or_default();
            let cordoned = n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            d.lock().unwrap().record(name, cordoned, Instant::now());
        }
    });
    disruption
}

/// The OSUpgrade `scale` to 2.0 with `maxUnavailable` from the command line.
fn scale_upgrade(a: &Args, image: &[u8], image_url: &str) -> anyhow::Result<OSUpgrade> {
    let catalog = format!(
        "images:\n  - version: \"2.0\"\n    url: {image_url}\n    checksum: {}\n    size: {}\n",
        osroll_api::catalog::digest(image),
        image.len()
    );
    let mu: serde_json::Value = match a.max_unavailable.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(a.max_unavailable),
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
        "metadata": {"name": "scale"},
        "spec": {"version": "2.0", "catalog": {"inline": catalog}, "allowHttpImages": true,
                 "strategy": {"maxUnavailable": mu}},
    }))?)
}

/// Start the controller in its own process, create the OSUpgrade, wait for its end and
/// for the Events behind it, and measure the controller on the way.
async fn roll_out(
    cluster: &Cluster,
    a: &Args,
    image: &[u8],
    image_url: &str,
) -> anyhow::Result<Rollout> {
    let up = scale_upgrade(a, image, image_url)?;
    if let Some(s) = cluster.server() {
        s.clear_audit();
    }
    let mut child = spawn_controller(cluster)?;
    let pid = child.id();
    let t0 = Instant::now();
    let ups: Api<OSUpgrade> = Api::all(cluster.admin());
    ups.create(&PostParams::default(), &up).await?;
    let mut peak_kib = 0;
    let (phase, status) = wait_done(&ups, pid, &mut peak_kib).await?;
    let wall = t0.elapsed();
    let events = wait_events_settled(cluster, pid, &mut peak_kib).await?;
    peak_kib = peak_kib.max(proc_field(pid, "status", "VmHWM:").unwrap_or(0));
    let cpu = cpu_seconds(pid).unwrap_or(0.0);
    let audit = cluster.server().map(|s| s.audit()).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let requests = audit
        .into_iter()
        .filter(|e| e.user == CONTROLLER_USER)
        .collect();
    Ok(Rollout {
        phase,
        status,
        wall,
        peak_kib,
        cpu,
        events,
        requests,
    })
}

/// The controller in a child process (this executable with `--controller-child`), as the
/// controller's service account.
fn spawn_controller(cluster: &Cluster) -> anyhow::Result<std::process::Child> {
    let kubeconfig = cluster.kubeconfig_for(CONTROLLER_USER)?;
    std::process::Command::new(std::env::current_exe()?)
        .arg("--controller-child")
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the controller process")
}

/// Poll the OSUpgrade until Completed or Failed, sampling the controller's peak RSS.
async fn wait_done(
    ups: &Api<OSUpgrade>,
    pid: u32,
    peak_kib: &mut u64,
) -> anyhow::Result<(UpgradePhase, OSUpgradeStatus)> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        *peak_kib = (*peak_kib).max(proc_field(pid, "status", "VmHWM:").unwrap_or(0));
        let st = ups.get("scale").await?.status.unwrap_or_default();
        if let Some(p @ (UpgradePhase::Completed | UpgradePhase::Failed)) = st.phase {
            return Ok((p, st));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "rollout did not finish within an hour"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Events are published from a queue behind the decisions: wait until their count holds
/// still for 3 s, so the request count includes them. The number of Events.
async fn wait_events_settled(
    cluster: &Cluster,
    pid: u32,
    peak_kib: &mut u64,
) -> anyhow::Result<usize> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(cluster.admin());
    let (mut last, mut stable) = (0, 0);
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    while stable < 3 && Instant::now() < drain_deadline {
        *peak_kib = (*peak_kib).max(proc_field(pid, "status", "VmHWM:").unwrap_or(0));
        let n = events.list(&ListParams::default()).await?.items.len();
        stable = if n == last { stable + 1 } else { 0 };
        last = n;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(last)
}

/// `maxUnavailable` from the command line, resolved against the node count.
fn max_unavailable(a: &Args) -> anyhow::Result<usize> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let v = match a.max_unavailable.parse::<i32>() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(a.max_unavailable.clone()),
    };
    Ok(osroll_controller::planner::Budget::parse(&v, "--max-unavailable")?.resolve(a.nodes))
}

/// Print every figure.
fn report(a: &Args, r: &Rollout, d: &Disruption) -> anyhow::Result<()> {
    let max_unavailable = max_unavailable(a)?;
    let batches = a.nodes.div_ceil(max_unavailable);
    let n = d.spans.len().max(1);
    let mean = d.spans.iter().sum::<Duration>() / n as u32;
    let mut sorted = d.spans.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let ideal = mean * batches as u32;
    let disrupting = match (d.first, d.last) {
        (Some(f), Some(l)) => l - f,
        _ => Duration::ZERO,
    };
    let counts = r.status.nodes.clone().unwrap_or_default();
    println!("osroll scale benchmark");
    println!("  nodes                      {}", a.nodes);
    println!(
        "  maxUnavailable             {} -> {max_unavailable} nodes, {batches} batches",
        a.max_unavailable
    );
    println!(
        "  simulated reboot downtime  {:.1}s",
        a.downtime.as_secs_f64()
    );
    println!(
        "  outcome                    {:?}: {} completed, {} failed, {} rolled back",
        r.phase, counts.completed, counts.failed, counts.rolled_back
    );
    println!(
        "  wall time (create->done)   {:.1}s (includes staging every node)",
        r.wall.as_secs_f64()
    );
    println!(
        "  disruption phase           {:.1}s (first cordon -> last uncordon)",
        disrupting.as_secs_f64()
    );
    println!(
        "  per-node disruption        mean {:.2}s, median {:.2}s (cordon -> uncordon)",
        mean.as_secs_f64(),
        median.as_secs_f64()
    );
    println!(
        "  ideal schedule             {:.1}s ({batches} x {:.2}s)",
        ideal.as_secs_f64(),
        mean.as_secs_f64()
    );
    println!(
        "  disruption phase / ideal   {:.3}",
        disrupting.as_secs_f64() / ideal.as_secs_f64().max(1e-9)
    );
    report_slots(d, max_unavailable, disrupting);
    report_controller(a, r);
    Ok(())
}

/// How fully the disruption budget was used.
fn report_slots(d: &Disruption, max_unavailable: usize, disrupting: Duration) {
    let busy: Duration = d.spans.iter().sum();
    println!(
        "  slot utilization           {:.3} (node-seconds disrupted / (maxUnavailable x disruption phase))",
        busy.as_secs_f64() / (max_unavailable as f64 * disrupting.as_secs_f64()).max(1e-9)
    );
    println!("  max nodes cordoned at once {}", d.max_concurrent);
    let full = d
        .cordons
        .get(max_unavailable.saturating_sub(1))
        .zip(d.first)
        .map(|(t, f)| *t - f);
    let tail = d.cordons.last().zip(d.last).map(|(c, l)| l - *c);
    let mut gaps = d.gaps.clone();
    gaps.sort();
    let pct = |p: usize| {
        gaps.get(gaps.len() * p / 100)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
    };
    println!(
        "  ramp / tail                {:.1}s to fill every slot (nodes still staging), {:.1}s after the last cordon",
        full.unwrap_or_default().as_secs_f64(),
        tail.unwrap_or_default().as_secs_f64()
    );
    println!(
        "  slot reuse delay           median {:.3}s, p90 {:.3}s (uncordon -> next cordon, {} reuses)",
        pct(50),
        pct(90),
        gaps.len()
    );
}

/// The controller's cost: Events, memory, CPU and API requests by kind.
fn report_controller(a: &Args, r: &Rollout) {
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for e in &r.requests {
        let sub = if e.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", e.subresource)
        };
        *by_kind
            .entry(format!("{} {}{sub}", e.verb, e.resource))
            .or_default() += 1;
    }
    let mut by_kind: Vec<(String, usize)> = by_kind.into_iter().collect();
    by_kind.sort_by_key(|k| std::cmp::Reverse(k.1));
    println!("  events published           {}", r.events);
    println!(
        "  controller peak RSS        {:.1} MiB",
        r.peak_kib as f64 / 1024.0
    );
    println!("  controller CPU time        {:.1}s", r.cpu);
    println!(
        "  controller API requests    {} ({:.1} per node)",
        r.requests.len(),
        r.requests.len() as f64 / a.nodes as f64
    );
    for (k, v) in by_kind.iter().take(12) {
        println!("    {v:>7}  {k}");
    }
}
