//! Prometheus metrics, served on `/metrics` next to `/healthz` and `/readyz`.
//!
//! Every label has a small fixed set of values (phases, outcomes, error kinds), never a
//! node or OSUpgrade name, so the series count stays bounded however large the fleet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use osroll_api::UpgradePhase;
use osroll_api::upgrade::NodeCounts;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use prometheus_client::encoding::LabelValueEncoder;

use crate::planner::{NodeStage, Outcome};

/// How a drain ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DrainEnd {
    /// No pod that must leave is left: the reboot was approved.
    Drained,
    /// Timed out under policy `Fail`.
    TimedOutFailed,
    /// Timed out under policy `Skip`.
    TimedOutSkipped,
    /// Timed out under policy `Force`: the remaining pods were deleted.
    TimedOutForced,
}

/// What kind of step a reconcile failed in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ErrorKind {
    /// Loading or resolving the catalog.
    Catalog,
    /// An API call.
    Api,
    /// An API call refused with 409: the watch cache was stale.
    Conflict,
}

impl EncodeLabelValue for NodeStage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: NodeStage,
}

/// `UpgradePhase` lives in the API crate, which knows nothing of Prometheus: its label
/// is the phase's [`UpgradePhase::as_str`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrainLabel {
    outcome: DrainEnd,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    kind: ErrorKind,
}

fn duration_histogram() -> Histogram {
    // 1 s .. ~9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// All controller metrics and the health flags served beside them.
pub struct Metrics {
    registry: Registry,
    nodes: Family<StageLabel, Gauge>,
    upgrades: Family<PhaseLabel, Gauge>,
    outcomes: Family<OutcomeLabel, Counter>,
    rollout_seconds: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    drain_seconds: Family<DrainLabel, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabel, Counter>,
    reconciles: Counter,
    leader: Gauge,
    per_upgrade: Mutex<HashMap<String, (UpgradePhase, NodeCounts)>>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("osroll");
        let nodes = Family::<StageLabel, Gauge>::default();
        registry.register(
            "nodes",
            "Selected nodes per upgrade stage, over all OSUpgrades",
            nodes.clone(),
        );
        let upgrades = Family::<PhaseLabel, Gauge>::default();
        registry.register("upgrades", "OSUpgrades per phase", upgrades.clone());
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "node_outcomes",
            "Node upgrade attempts that ended, by outcome",
            outcomes.clone(),
        );
        let rollout_seconds: Family<OutcomeLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "rollout_duration_seconds",
            "Time from OSUpgrade creation to Completed or Failed",
            rollout_seconds.clone(),
        );
        let drain_seconds: Family<DrainLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "drain_duration_seconds",
            "Time from cordon to drained or timed out",
            drain_seconds.clone(),
        );
        let errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind",
            errors.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "OSUpgrade reconciles run", reconciles.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            nodes,
            upgrades,
            outcomes,
            rollout_seconds,
            drain_seconds,
            errors,
            reconciles,
            leader,
            per_upgrade: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }

    /// Record one OSUpgrade's phase and node counts (`None` when it is gone).
    pub fn set_upgrade(&self, name: &str, state: Option<(UpgradePhase, NodeCounts)>) {
        let mut map = self.per_upgrade.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(s) => map.insert(name.to_string(), s),
            None => map.remove(name),
        };
        for stage in NodeStage::ALL {
            let n: u32 = map.values().map(|(_, c)| stage.count(c)).sum();
            self.nodes
                .get_or_create(&StageLabel { stage })
                .set(n.into());
        }
        for phase in UpgradePhase::ALL {
            let n = map.values().filter(|(p, _)| *p == phase).count();
            self.upgrades
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str(),
                })
                .set(n as i64);
        }
    }

    /// A node's attempt ended.
    pub fn node_outcome(&self, o: Outcome) {
        self.outcomes
            .get_or_create(&OutcomeLabel { outcome: o })
            .inc();
    }

    /// A rollout ended (Completed or Failed) after `d`.
    pub fn rollout_done(&self, failed: bool, d: Duration) {
        let outcome = if failed {
            Outcome::Failed
        } else {
            Outcome::Completed
        };
        self.rollout_seconds
            .get_or_create(&OutcomeLabel { outcome })
            .observe(d.as_secs_f64());
    }

    /// A drain ended after `d`.
    pub fn drain_done(&self, end: DrainEnd, d: Duration) {
        self.drain_seconds
            .get_or_create(&DrainLabel { outcome: end })
            .observe(d.as_secs_f64());
    }

    /// A reconcile failed.
    pub fn reconcile_error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabel { kind }).inc();
    }

    /// A reconcile ran.
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// Leadership changed.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(leading as i64);
    }

    /// Readiness: the controller reached the API server and knows its role.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The HTTP routes: `/metrics`, `/healthz`, `/readyz`.
pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m)
}

/// Bind `addr` and serve [`router`] until `shutdown` resolves. Returns the bound address
/// (useful with port 0) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router(m))
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_gauges_sum_over_upgrades_and_forget_deleted_ones() {
        let m = Metrics::new();
        let c = |completed, failed| NodeCounts {
            total: 5,
            completed,
            failed,
            ..Default::default()
        };
        m.set_upgrade("a", Some((UpgradePhase::Progressing, c(2, 1))));
        m.set_upgrade("b", Some((UpgradePhase::Completed, c(3, 0))));
        let text = m.encode();
        assert!(
            text.contains("osroll_nodes{stage=\"Completed\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("osroll_upgrades{phase=\"Completed\"} 1"),
            "{text}"
        );
        m.set_upgrade("a", None);
        let text = m.encode();
        assert!(
            text.contains("osroll_nodes{stage=\"Completed\"} 3"),
            "{text}"
        );
        assert!(text.contains("osroll_nodes{stage=\"Failed\"} 0"), "{text}");
    }

    #[test]
    fn durations_and_errors_are_exposed() {
        let m = Metrics::new();
        m.drain_done(DrainEnd::Drained, Duration::from_secs(3));
        m.rollout_done(false, Duration::from_secs(100));
        m.reconcile_error(ErrorKind::Api);
        m.node_outcome(Outcome::RolledBack);
        let text = m.encode();
        assert!(
            text.contains("osroll_drain_duration_seconds_count{outcome=\"Drained\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("osroll_rollout_duration_seconds_sum{outcome=\"Completed\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("osroll_reconcile_errors_total{kind=\"Api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("osroll_node_outcomes_total{outcome=\"RolledBack\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let m = Arc::new(Metrics::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), m.clone(), async {
            rx.await.ok();
        })
        .await
        .unwrap();
        let get = |path: &str| {
            let url = format!("http://{addr}{path}");
            async move {
                let r = reqwest::get(url).await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await, (200, "ok".to_string()));
        assert_eq!(get("/readyz").await.0, 503);
        m.set_ready(true);
        assert_eq!(get("/readyz").await.0, 200);
        let (code, body) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("osroll_reconciles_total"), "{body}");
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
