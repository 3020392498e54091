//! Wiring: metrics server, leader election, watch caches and the kube-runtime
//! controller that calls [`Shared::reconcile`] for each OSUpgrade.
//!
//! The watch caches of Nodes and OSUpgradeProgresses are reflectors of our own; any
//! change the planner can see re-queues every OSUpgrade (filtered and rate-limited in
//! [`crate::trigger`]), and each reconcile reads the caches instead of the API server. The controller runs
//! only while this replica holds the Lease; losing it clears the `leading` flag (which
//! every write checks) and stops the controller task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::signing::TrustedKey;
use osroll_api::{OSUpgrade, OSUpgradeProgress};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::act::DrainMemory;
use crate::catalog::{HttpFetcher, ResolutionCache, TrustPolicy, UrlFetcher};
use crate::chain::Chain;
use crate::cluster::{ApiError, KubeCluster};
use crate::leader::{Elector, Timing, still_leading};
use crate::metrics::{ErrorKind, Metrics};
use crate::observe::Settings;
use crate::reconcile::{ReconcileError, Shared, World};
use crate::trigger;

/// Everything the controller is configured with.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The controller's namespace: its Lease and ConfigMap catalogs live here.
    pub namespace: String,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// The node this replica runs on (upgraded last).
    pub node_name: Option<String>,
    /// This replica's identity in the Lease and in Events (the pod name).
    pub identity: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// Lease duration; renewals every third of it.
    pub lease_duration: Duration,
    /// Prefix of the cordon annotation value and the Events' reporting controller.
    pub controller_name: String,
    /// How long an upgraded node must be Ready before it is uncordoned.
    pub node_soak: Duration,
    /// Poll interval while a drain is in progress.
    pub drain_poll: Duration,
    /// Requeue interval when nothing is in flight.
    pub resync: Duration,
    /// Least time between two reconciles while watch events keep coming (the first
    /// change after a quiet period is handled at once).
    pub reconcile_interval: Duration,
    /// Retry interval of rejected catalog resolutions.
    pub catalog_retry: Duration,
    /// Allow `http://` catalog URLs (tests and local mirrors only).
    pub allow_http_catalog: bool,
    /// Extra PEM CA bundle for catalog URLs.
    pub catalog_ca: Option<Vec<u8>>,
    /// Public keys trusted to sign catalogs.
    pub trusted_keys: Vec<TrustedKey>,
    /// Reject unsigned catalogs.
    pub require_signed_catalog: bool,
    /// Act only on the OSUpgrades this label selector matches (`None`: all of them);
    /// lets several controllers share a cluster, e.g. tests running at once.
    pub upgrade_selector: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            namespace: "osroll-system".into(),
            metrics_addr: None,
            node_name: None,
            identity: "osroll-controller".into(),
            lease_name: "osroll-controller".into(),
            lease_duration: Duration::from_secs(15),
            controller_name: "osroll-controller".into(),
            node_soak: Duration::ZERO,
            drain_poll: Duration::from_secs(2),
            resync: Duration::from_secs(300),
            reconcile_interval: Duration::from_millis(100),
            catalog_retry: Duration::from_secs(30),
            allow_http_catalog: false,
            catalog_ca: None,
            trusted_keys: Vec::new(),
            require_signed_catalog: false,
            upgrade_selector: None,
        }
    }
}

struct Ctx {
    shared: Shared<KubeCluster>,
    nodes: Store<Node>,
    progresses: Store<OSUpgradeProgress>,
    upgrades: Store<OSUpgrade>,
}

async fn reconcile(up: Arc<OSUpgrade>, ctx: Arc<Ctx>) -> Result<Requeue, ReconcileError> {
    let nodes = ctx.nodes.state();
    let progresses = ctx.progresses.state();
    let upgrades = ctx.upgrades.state();
    let world = World {
        nodes: &nodes,
        progresses: &progresses,
        upgrades: &upgrades,
    };
    let after = ctx.shared.reconcile(&up, &world, Utc::now()).await?;
    Ok(Requeue::requeue(after))
}

fn error_policy(up: Arc<OSUpgrade>, err: &ReconcileError, ctx: Arc<Ctx>) -> Requeue {
    tracing::warn!(upgrade = %up.name_any(), error = %Chain(err), "reconcile failed");
    let kind = if matches!(err.api_error(), ApiError::Conflict(_)) {
        ErrorKind::Conflict
    } else {
        ErrorKind::Api
    };
    ctx.shared.metrics.reconcile_error(kind);
    Requeue::requeue(Duration::from_secs(2))
}

/// Drop what the controller never reads, to keep the caches small on large fleets.
fn slim_node(n: &mut Node) {
    n.managed_fields_mut().clear();
    if let Some(s) = n.status.as_mut() {
        s.images = None;
        s.volumes_attached = None;
        s.volumes_in_use = None;
    }
}

fn pdb_digest(b: &PodDisruptionBudget) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    serde_json::to_string(&b.spec)
        .unwrap_or_default()
        .hash(&mut h);
    b.status
        .as_ref()
        .map(|s| s.disruptions_allowed)
        .hash(&mut h);
    h.finish()
}

/// The watch events (after they updated the cache) that change what the planner sees.
fn relevant<K, S>(
    events: S,
    what: &'static str,
    digest: fn(&K) -> u64,
) -> impl Stream<Item = ()> + Send + 'static
where
    K: kube::Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen = trigger::Relevant::default();
    events.filter_map(move |ev| {
        let pass = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                seen.changed(&o.name_any(), digest(&o))
            }
            Ok(watcher::Event::Delete(o)) => seen.deleted(&o.name_any()),
            Ok(watcher::Event::InitDone) => true,
            Ok(watcher::Event::Init) => false,
            Err(e) => {
                tracing::warn!(error = %e, "{what} watch");
                false
            }
        };
        futures::future::ready(pass.then_some(()))
    })
}

/// The Nodes, OSUpgradeProgresses and PodDisruptionBudgets seen by the watch caches.
struct Caches {
    nodes: Store<Node>,
    progresses: Store<OSUpgradeProgress>,
    pdbs: Store<PodDisruptionBudget>,
}

/// Start the watches that fill the caches; the stream yields once per change the planner
/// can see (a budget that changes may unblock a drain).
fn watch_caches(client: &kube::Client) -> (Caches, impl Stream<Item = ()> + Send + 'static) {
    let wc = watcher::Config::default().any_semantic();
    let (nodes, node_writer) = reflector::store();
    let (progresses, progress_writer) = reflector::store();
    let (pdbs, pdb_writer) = reflector::store();
    let node_events = relevant(
        watcher(Api::<Node>::all(client.clone()), wc.clone())
            .default_backoff()
            .modify(slim_node)
            .reflect(node_writer),
        "node",
        trigger::node_digest,
    );
    let progress_events = relevant(
        watcher(Api::<OSUpgradeProgress>::all(client.clone()), wc.clone())
            .default_backoff()
            .modify(|p| p.managed_fields_mut().clear())
            .reflect(progress_writer),
        "progress",
        trigger::progress_digest,
    );
    let pdb_events = relevant(
        watcher(Api::<PodDisruptionBudget>::all(client.clone()), wc)
            .default_backoff()
            .modify(|b| b.managed_fields_mut().clear())
            .reflect(pdb_writer),
        "budget",
        pdb_digest,
    );
    let changes = futures::stream::select(
        futures::stream::select(node_events, progress_events),
        pdb_events,
    );
    let caches = Caches {
        nodes,
        progresses,
        pdbs,
    };
    (caches, changes)
}

/// Watch caches and the kube-runtime controller, until `stop` fires.
async fn control(
    mut shared: Shared<KubeCluster>,
    client: kube::Client,
    interval: Duration,
    upgrade_selector: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let (caches, changes) = watch_caches(&client);
    shared.cluster = shared.cluster.with_pdb_cache(caches.pdbs);
    let mut upgrades = watcher::Config::default().any_semantic();
    if let Some(sel) = &upgrade_selector {
        upgrades = upgrades.labels(sel);
    }
    let controller = Controller::new(Api::<OSUpgrade>::all(client), upgrades)
        .with_config(controller::Config::default());
    let ctx = Arc::new(Ctx {
        shared,
        nodes: caches.nodes,
        progresses: caches.progresses,
        upgrades: controller.store(),
    });
    let mut stop2 = stop.clone();
    let run = controller
        .reconcile_all_on(trigger::throttle(changes, interval))
        .graceful_shutdown_on(async move {
            let _ = stop2.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        });
    tokio::select! {
        _ = run => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Run the controller until SIGINT or SIGTERM.
pub async fn run(cfg: ControllerConfig, client: kube::Client) -> anyhow::Result<()> {
    run_until(cfg, client, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run the controller until `shutdown` resolves; then stop acting, release the Lease and
/// return. Dropping the returned future instead (a crash) leaves the Lease to expire.
pub async fn run_until(
    cfg: ControllerConfig,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut stop = stop_on(shutdown);
    let server = serve_metrics(&cfg, &metrics, stop.clone()).await?;
    let fetcher: Arc<dyn UrlFetcher> = Arc::new(
        HttpFetcher::new(cfg.allow_http_catalog, cfg.catalog_ca.as_deref())
            .context("catalog HTTP client")?,
    );
    let timing = Timing::from_duration(cfg.lease_duration);
    let mut elector = Elector::new(
        client.clone(),
        &cfg.namespace,
        &cfg.lease_name,
        &cfg.identity,
        timing,
    );
    let mut replica = Replica {
        cfg: &cfg,
        client: &client,
        fetcher,
        metrics,
        leading: Arc::new(AtomicBool::new(false)),
        timing,
        task: None,
        last_renew: None,
    };
    loop {
        let now = Utc::now();
        let held = elector.try_once(now).await;
        replica.after_election(held, now).await;
        tokio::select! {
            _ = tokio::time::sleep(timing.retry) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    replica.step_down().await;
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %Chain(&e), "could not release the lease");
    }
    if let Some(s) = server {
        let _ = s.await;
    }
    Ok(())
}

/// A flag that turns true once `shutdown` resolves.
fn stop_on(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    rx
}

/// Serve `/metrics`, `/healthz` and `/readyz` until `stop`, if an address is configured.
async fn serve_metrics(
    cfg: &ControllerConfig,
    metrics: &Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = cfg.metrics_addr else {
        return Ok(None);
    };
    let (bound, task) = crate::metrics::serve(addr, metrics.clone(), async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
    .with_context(|| format!("binding the metrics address {addr}"))?;
    tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    Ok(Some(task))
}

/// This replica's side of leadership: the controller task runs while it holds the Lease.
struct Replica<'a> {
    cfg: &'a ControllerConfig,
    client: &'a kube::Client,
    fetcher: Arc<dyn UrlFetcher>,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
    timing: Timing,
    /// The controller task and its stop flag, while leading.
    task: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    last_renew: Option<DateTime<Utc>>,
}

impl Replica<'_> {
    /// Act on one election round: lead, keep leading, or step down.
    async fn after_election(&mut self, held: Result<bool, ApiError>, now: DateTime<Utc>) {
        match held {
            Ok(true) => {
                self.last_renew = Some(now);
                self.metrics.set_ready(true);
                if self.task.is_none() {
                    self.lead();
                }
            }
            Ok(false) => {
                self.metrics.set_ready(true);
                if self.task.is_some() {
                    tracing::warn!("lost the lease to another replica; stopping");
                    self.step_down().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "lease");
                let renewed_in_time = self
                    .last_renew
                    .is_some_and(|t| still_leading(t, Utc::now(), self.timing.renew_deadline));
                if self.task.is_some() && !renewed_in_time {
                    tracing::warn!("could not renew the lease in time; stopping");
                    self.step_down().await;
                }
            }
        }
    }

    /// Start the controller task.
    fn lead(&mut self) {
        tracing::info!(identity = %self.cfg.identity, "became leader");
        self.leading.store(true, Ordering::SeqCst);
        self.metrics.set_leader(true);
        let shared = self.shared();
        let (tx, rx) = watch::channel(false);
        let client = self.client.clone();
        let selector = self.cfg.upgrade_selector.clone();
        let handle = tokio::spawn(
            control(shared, client, self.cfg.reconcile_interval, selector, rx).in_current_span(),
        );
        self.task = Some((handle, tx));
    }

    /// What every reconcile of this term shares.
    fn shared(&self) -> Shared<KubeCluster> {
        let cfg = self.cfg;
        Shared {
            cluster: KubeCluster::new(
                self.client.clone(),
                &cfg.controller_name,
                Some(cfg.identity.clone()),
            ),
            fetcher: self.fetcher.clone(),
            trust: TrustPolicy {
                keys: cfg.trusted_keys.clone(),
                require_signed: cfg.require_signed_catalog,
            },
            namespace: cfg.namespace.clone(),
            settings: Settings {
                controller_name: cfg.controller_name.clone(),
                own_node: cfg.node_name.clone(),
                node_soak: cfg.node_soak,
                drain_poll: cfg.drain_poll,
            },
            metrics: self.metrics.clone(),
            leading: self.leading.clone(),
            catalogs: ResolutionCache::new(cfg.catalog_retry),
            memory: DrainMemory::default(),
            resync: cfg.resync,
        }
    }

    /// Stop acting at once (every write checks the flag), then stop the controller task.
    async fn step_down(&mut self) {
        self.leading.store(false, Ordering::SeqCst);
        self.metrics.set_leader(false);
        if let Some((handle, tx)) = self.task.take() {
            let _ = tx.send(true);
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
