//! One OSUpgrade reconcile, read top to bottom as its steps: observe (the spec, overlap
//! with older OSUpgrades, the catalog) → gate (pure) → plan (pure) → act → status.
//! Deletion takes its own short path first: release our nodes, drop the finalizer.
//!
//! It reads only the snapshot it is handed ([`World`], built from watch caches) and
//! writes only through the [`Cluster`] adapter, so tests drive it with plain objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use osroll_api::catalog::NodeVersion;
use osroll_api::{
    OSUpgrade, OSUpgradeProgress, OSUpgradeStatus, Rejection, RejectionReason, UpgradePhase, labels,
};
use serde_json::json;

use osroll_api::upgrade::UpgradeReason;

use crate::act::{Act, DrainMemory, ProgressTemplate, Report};
use crate::catalog::{self, ResolutionCache, Resolved, TrustPolicy, UrlFetcher};
use crate::chain::Chain;
use crate::cluster::{ApiError, Cluster, Note, Severity};
use crate::health::HealthSpec;
use crate::inplace;
use crate::marks;
use crate::metrics::{ErrorKind, Metrics};
use crate::observe::{self, Settings};
use crate::planner::{self, DrainPolicy, Failing, Plan, SpecError, Strategy};
use crate::select::{self, Blocker, Claim, NodeSelection};
use crate::status::{self, Verdict};
use crate::verify;

mod health;

/// How often an OSUpgrade waiting for an older one looks again.
const WAITING_RECHECK: Duration = Duration::from_secs(30);
/// How often a rollout in progress looks again at the latest.
const BUSY_RECHECK: Duration = Duration::from_secs(30);

/// Long-lived state shared by all reconciles.
pub struct Shared<C: Cluster> {
    /// The API.
    pub cluster: C,
    /// Fetches URL catalogs.
    pub fetcher: Arc<dyn UrlFetcher>,
    /// Trusted catalog keys.
    pub trust: TrustPolicy,
    /// The controller's namespace (ConfigMap catalogs).
    pub namespace: String,
    /// Snapshot settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set while this replica leads.
    pub leading: Arc<AtomicBool>,
    /// Resolutions per OSUpgrade generation.
    pub catalogs: ResolutionCache,
    /// Drain messages already published.
    pub memory: DrainMemory,
    /// Requeue interval when nothing is in flight.
    pub resync: Duration,
}

/// What the watch caches hold.
pub struct World<'a> {
    /// All nodes.
    pub nodes: &'a [Arc<Node>],
    /// All progress objects.
    pub progresses: &'a [Arc<OSUpgradeProgress>],
    /// All OSUpgrades.
    pub upgrades: &'a [Arc<OSUpgrade>],
}

/// A reconcile that could not finish: which write failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Adding our finalizer failed.
    #[error("adding the finalizer to OSUpgrade {upgrade}")]
    AddFinalizer {
        /// The OSUpgrade.
        upgrade: String,
        /// The failed call.
        #[source]
        source: ApiError,
    },
    /// Releasing a node of a deleted OSUpgrade failed.
    #[error("uncordoning node {node} for the deleted OSUpgrade {upgrade}")]
    Release {
        /// The OSUpgrade.
        upgrade: String,
        /// The node.
        node: String,
        /// The failed call.
        #[source]
        source: ApiError,
    },
    /// Removing our finalizer failed.
    #[error("removing the finalizer from OSUpgrade {upgrade}")]
    RemoveFinalizer {
        /// The OSUpgrade.
        upgrade: String,
        /// The failed call.
        #[source]
        source: ApiError,
    },
    /// Writing the status failed.
    #[error("writing the status of OSUpgrade {upgrade}")]
    WriteStatus {
        /// The OSUpgrade.
        upgrade: String,
        /// The failed call.
        #[source]
        source: ApiError,
    },
}

impl ReconcileError {
    /// The API call that failed.
    pub fn api_error(&self) -> &ApiError {
        match self {
            ReconcileError::AddFinalizer { source, .. }
            | ReconcileError::Release { source, .. }
            | ReconcileError::RemoveFinalizer { source, .. }
            | ReconcileError::WriteStatus { source, .. } => source,
        }
    }
}

impl<C: Cluster> Shared<C> {
    /// Reconcile `up` against `world` at `now`; returns when to look again.
    pub async fn reconcile(
        &self,
        up: &OSUpgrade,
        world: &World<'_>,
        now: DateTime<Utc>,
    ) -> Result<Duration, ReconcileError> {
        self.metrics.reconciled();
        if !self.is_leading() {
            return Ok(self.resync);
        }
        if up.meta().deletion_timestamp.is_some() {
            return self.finalize(up, world).await;
        }
        self.ensure_finalizer(up).await?;
        let seen = self.observe(up, world).await;
        let gate = gate(seen);
        let failing = self.evaluate_health(up, &gate, world, now).await;
        let plan = plan(up, &gate, world, &self.settings, failing, now);
        let report = self.act(up, &gate, &plan, world, now).await;
        if !self.is_leading() {
            return Ok(self.resync);
        }
        self.status(up, &gate, &plan, &report, now).await?;
        Ok(self.requeue(&gate, &plan, &report))
    }

    fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    // Deletion.

    /// Deletion: uncordon every node we cordoned for this OSUpgrade, then let it go.
    async fn finalize(
        &self,
        up: &OSUpgrade,
        world: &World<'_>,
    ) -> Result<Duration, ReconcileError> {
        let name = up.name_any();
        let ours = marks::cordon_value(&self.settings.controller_name, &name);
        for n in world
            .nodes
            .iter()
            .filter(|n| marks::cordoned_by(n) == Some(&ours))
        {
            if !self.is_leading() {
                return Ok(Duration::from_secs(1));
            }
            let node = n.name_any();
            let patch = marks::uncordon_patch(n.resource_version().as_deref());
            self.cluster
                .patch_node(&node, &patch)
                .await
                .map_err(|source| ReconcileError::Release {
                    upgrade: name.clone(),
                    node: node.clone(),
                    source,
                })?;
            let msg = format!("node {node} uncordoned: OSUpgrade {name} is being deleted");
            self.upgrade_event(up, Severity::Normal, "NodeUncordoned", msg)
                .await;
        }
        self.remove_finalizer(up).await?;
        self.metrics.set_upgrade(&name, None);
        self.catalogs.forget(&up.uid().unwrap_or_default());
        Ok(self.resync)
    }

    async fn remove_finalizer(&self, up: &OSUpgrade) -> Result<(), ReconcileError> {
        if !up.finalizers().iter().any(|f| f == labels::FINALIZER) {
            return Ok(());
        }
        let list: Vec<&String> = up
            .finalizers()
            .iter()
            .filter(|f| *f != labels::FINALIZER)
            .collect();
        let patch =
            json!({"metadata": {"finalizers": list, "resourceVersion": up.resource_version()}});
        self.cluster
            .patch_upgrade(&up.name_any(), &patch)
            .await
            .map_err(|source| ReconcileError::RemoveFinalizer {
                upgrade: up.name_any(),
                source,
            })
    }

    async fn ensure_finalizer(&self, up: &OSUpgrade) -> Result<(), ReconcileError> {
        if up.finalizers().iter().any(|f| f == labels::FINALIZER) {
            return Ok(());
        }
        let mut list = up.finalizers().to_vec();
        list.push(labels::FINALIZER.to_string());
        let patch =
            json!({"metadata": {"finalizers": list, "resourceVersion": up.resource_version()}});
        self.cluster
            .patch_upgrade(&up.name_any(), &patch)
            .await
            .map_err(|source| ReconcileError::AddFinalizer {
                upgrade: up.name_any(),
                source,
            })
    }

    // Step 1: observe.

    /// The spec; for a valid spec, whether an older OSUpgrade holds some of its nodes;
    /// if none does, the catalog's resolution. Looking stops at the first thing that holds
    /// the OSUpgrade back: one that waits must not resolve its catalog against node
    /// versions the older one is still changing.
    async fn observe(&self, up: &OSUpgrade, world: &World<'_>) -> Seen {
        let spec = match validate(up, takes_in_place_requests(up, world)) {
            Ok(spec) => spec,
            Err(e) => return Seen::Invalid(e),
        };
        if let Some(blocker) = blocker(up, world) {
            return Seen::Overlapping(spec, blocker);
        }
        let catalog = if up.spec.is_external() {
            Ok(crate::external::resolved())
        } else {
            self.resolve(up, &spec.selection, world).await
        };
        Seen::Resolved(spec, Box::new(catalog))
    }

    /// The catalog's resolution for this generation of `up`, cached. An accepted one is
    /// checked again now and then: the fleet is not re-targeted when the catalog changes,
    /// but a version blocked meanwhile, or a catalog that expired, stops the rollout.
    async fn resolve(
        &self,
        up: &OSUpgrade,
        selection: &NodeSelection,
        world: &World<'_>,
    ) -> Result<Resolved, Rejection> {
        let uid = up.uid().unwrap_or_default();
        let generation = up.metadata.generation.unwrap_or(0);
        let t = Instant::now();
        let cached = self.catalogs.get(&uid, generation, t);
        if let Some(r) = &cached
            && (r.is_err() || !self.catalogs.due(&uid, t))
        {
            return r.clone();
        }
        let versions = node_versions(selection, world);
        let now = (Timestamp::now(), self.catalogs.newest_serial());
        let r = match catalog::load(
            &up.spec.catalog,
            &self.namespace,
            &self.cluster,
            self.fetcher.as_ref(),
        )
        .await
        {
            Ok(doc) => catalog::resolve(&doc, &up.spec, &versions, &self.trust, now),
            Err(e) => Err(e),
        };
        let r = match (cached, r) {
            (Some(Ok(_)), Err(e)) if revokes(e.reason) => Err(e),
            (Some(Ok(kept)), _) => Ok(kept),
            (_, r) => r,
        };
        match &r {
            Ok(ok) => self.catalogs.accept_serial(ok.serial),
            Err(_) => self.metrics.reconcile_error(ErrorKind::Catalog),
        }
        self.catalogs.put(&uid, generation, t, r.clone());
        r
    }
}

/// Whether a rejection found on checking an accepted resolution again withdraws it.
fn revokes(reason: RejectionReason) -> bool {
    matches!(
        reason,
        RejectionReason::VersionBlocked | RejectionReason::CatalogExpired
    )
}

/// What the observe step found, as far as it looked.
enum Seen {
    /// The spec does not validate.
    Invalid(SpecError),
    /// An older OSUpgrade selects some of the same nodes.
    Overlapping(Spec, Blocker),
    /// The catalog's resolution (or its rejection).
    Resolved(Spec, Box<Result<Resolved, Rejection>>),
}

/// The validated spec.
#[derive(Default)]
struct Spec {
    strategy: Strategy,
    drain: DrainPolicy,
    selection: NodeSelection,
    health: HealthSpec,
}

fn validate(up: &OSUpgrade, in_place: bool) -> Result<Spec, SpecError> {
    up.spec
        .mode()
        .map_err(|e| SpecError::new(e.field, e.message))?;
    Ok(Spec {
        strategy: Strategy::from_spec(up.spec.strategy.as_ref())?,
        drain: DrainPolicy::from_spec(up.spec.drain.as_ref())?,
        selection: NodeSelection::from_spec(up.spec.node_selector.as_ref())?
            .with_in_place(in_place),
        health: HealthSpec::from_spec(up.spec.strategy.as_ref())?,
    })
}

fn created_at(u: &OSUpgrade) -> Option<DateTime<Utc>> {
    u.metadata
        .creation_timestamp
        .as_ref()
        .and_then(observe::to_chrono)
}

/// Whether `up` is the OSUpgrade that takes nodes' in-place update requests.
fn takes_in_place_requests(up: &OSUpgrade, world: &World<'_>) -> bool {
    let candidates: Vec<inplace::Candidate> = world
        .upgrades
        .iter()
        .map(|u| inplace::Candidate {
            name: u.name_any(),
            created: created_at(u),
            deleting: u.metadata.deletion_timestamp.is_some(),
            // An external OSUpgrade installs nothing: it cannot answer an in-place request.
            rejected: u.spec.is_external()
                || u.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p == UpgradePhase::Rejected),
        })
        .collect();
    inplace::takes_requests(&up.name_any(), &candidates)
}

fn claim(u: &OSUpgrade) -> Claim {
    let phase = u.status.as_ref().and_then(|s| s.phase);
    Claim {
        name: u.name_any(),
        created: created_at(u),
        active: !matches!(
            phase,
            Some(UpgradePhase::Completed | UpgradePhase::Rejected)
        ),
        selection: NodeSelection::from_spec(u.spec.node_selector.as_ref()).ok(),
    }
}

/// The older OSUpgrade that holds some of `up`'s nodes, if any.
fn blocker(up: &OSUpgrade, world: &World<'_>) -> Option<Blocker> {
    let claims: Vec<Claim> = world.upgrades.iter().map(|u| claim(u)).collect();
    let nodes = world
        .nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or(""), n.labels()));
    select::blocker(&claim(up), &claims, nodes)
}

/// The current version of each selected node, for the downgrade check.
fn node_versions(selection: &NodeSelection, world: &World<'_>) -> Vec<NodeVersion> {
    world
        .nodes
        .iter()
        .filter(|n| selection.selects(n.labels()))
        .map(|n| NodeVersion {
            node: n.name_any(),
            version: n.labels().get(labels::OS_VERSION).cloned(),
        })
        .collect()
}

// Step 2: gate (pure).

/// Whether the OSUpgrade may roll out, and the spec it plans with.
struct Gate {
    /// Paused when held: nothing new starts, work in flight finishes, and our nodes
    /// that are not rebooting are released.
    spec: Spec,
    /// The resolution it rolls out, or what holds it.
    open: Result<Resolved, Hold>,
}

/// What holds an OSUpgrade back.
enum Hold {
    /// Its spec is invalid.
    Invalid(SpecError),
    /// An older OSUpgrade holds some of its nodes.
    Waiting(Blocker),
    /// Its catalog cannot be used.
    Rejected(Rejection),
}

fn gate(seen: Seen) -> Gate {
    let (mut spec, hold) = match seen {
        Seen::Resolved(spec, catalog) => match *catalog {
            Ok(resolved) => {
                return Gate {
                    spec,
                    open: Ok(resolved),
                };
            }
            Err(rejection) => (spec, Hold::Rejected(rejection)),
        },
        Seen::Invalid(e) => (Spec::default(), Hold::Invalid(e)),
        Seen::Overlapping(spec, blocker) => (spec, Hold::Waiting(blocker)),
    };
    spec.strategy.paused = true;
    Gate {
        spec,
        open: Err(hold),
    }
}

impl Gate {
    /// What new progress objects carry: the resolved image (nothing is created when held).
    fn template(&self) -> ProgressTemplate {
        match &self.open {
            Ok(r) => ProgressTemplate {
                image: r.image.clone(),
                catalog_digest: Some(r.digest.clone()),
                signed_catalog: r.signed.clone(),
                os_version_management: r.os_version_management.clone(),
                earlier: r.earlier.clone(),
            },
            Err(_) => ProgressTemplate::default(),
        }
    }
}

// Step 3: plan (pure).

/// The planner's decision on the snapshot of `up`'s nodes and progress objects.
fn plan(
    up: &OSUpgrade,
    gate: &Gate,
    world: &World<'_>,
    settings: &Settings,
    failing: Option<Failing>,
    now: DateTime<Utc>,
) -> Plan {
    let nodes: Vec<&Node> = world.nodes.iter().map(Arc::as_ref).collect();
    let progresses: Vec<&OSUpgradeProgress> = world.progresses.iter().map(Arc::as_ref).collect();
    let mut snapshot = observe::snapshot(
        &up.name_any(),
        gate.spec.strategy.clone(),
        &gate.spec.selection,
        &nodes,
        &progresses,
        settings,
    );
    // What the nodes are given: the catalog entry's osVersionManagement wins.
    let template = gate.template();
    let given = template
        .os_version_management
        .as_ref()
        .or(up.spec.os_version_management.as_ref());
    snapshot.live_updates = verify::live_update_requested(given);
    let version = gate.open.as_ref().ok().map(|r| r.image.version.as_str());
    snapshot.health = health::observed(up, &gate.spec.health, failing, version);
    planner::plan(&snapshot, now)
}

// Step 4: act.

impl<C: Cluster> Shared<C> {
    /// Carry out the plan; when the gate is open, also answer in-place requests.
    async fn act(
        &self,
        up: &OSUpgrade,
        gate: &Gate,
        plan: &Plan,
        world: &World<'_>,
        now: DateTime<Utc>,
    ) -> Report {
        let name = up.name_any();
        let nodes: HashMap<String, &Node> =
            world.nodes.iter().map(|n| (n.name_any(), &**n)).collect();
        let progress: HashMap<String, &OSUpgradeProgress> = progresses_of(&name, world)
            .map(|p| (p.spec.node_name.clone(), p))
            .collect();
        let template = gate.template();
        let cordon_value = marks::cordon_value(&self.settings.controller_name, &name);
        let act = Act {
            cluster: &self.cluster,
            upgrade: up,
            nodes: &nodes,
            progress: &progress,
            template: &template,
            drain: &gate.spec.drain,
            cordon_value: &cordon_value,
            now,
            metrics: &self.metrics,
            leading: &self.leading,
            memory: &self.memory,
        };
        let mut report = act.run(&plan.actions).await;
        if gate.open.is_ok() {
            self.answer_in_place(up, world, &mut report).await;
        }
        report
    }

    /// Answer in-place requests whose progress of `up` has ended: the node's
    /// `osroll.io/in-place-update` label becomes `done` or `failed`.
    async fn answer_in_place(&self, up: &OSUpgrade, world: &World<'_>, report: &mut Report) {
        for p in progresses_of(&up.name_any(), world) {
            let node = p.spec.node_name.as_str();
            let Some(n) = world.nodes.iter().find(|n| n.name_any() == node) else {
                continue;
            };
            let label = n.labels().get(labels::IN_PLACE_UPDATE).map(String::as_str);
            let phase = p.status.as_ref().and_then(|s| s.phase);
            let Some(value) = inplace::answer(label, phase) else {
                continue;
            };
            if !self.is_leading() {
                return;
            }
            let patch = json!({"metadata": {"labels": {labels::IN_PLACE_UPDATE: value}}});
            match self.cluster.patch_node(node, &patch).await {
                Ok(()) => {
                    let msg = format!("node {node}: in-place update {value}");
                    self.upgrade_event(up, Severity::Normal, "InPlaceUpdateAnswered", msg)
                        .await;
                }
                Err(e) => report.errors.push(format!("{node}: {}", Chain(&e))),
            }
        }
    }
}

/// The progress objects of the OSUpgrade named `up`.
fn progresses_of<'w>(
    up: &'w str,
    world: &'w World<'_>,
) -> impl Iterator<Item = &'w OSUpgradeProgress> {
    world
        .progresses
        .iter()
        .map(Arc::as_ref)
        .filter(move |p| p.spec.source_ref.as_ref().is_some_and(|s| s.name == up))
}

// Step 5: status.

/// The status write. One that starts, changes or ends the rollback record applies only to
/// the version of the OSUpgrade this reconcile saw: a pass working from a cache that does
/// not show a rollback just started gets a conflict, instead of starting it again with a
/// new start time and a second `RollbackStarted` Event.
fn status_patch(up: &OSUpgrade, new: &OSUpgradeStatus) -> serde_json::Value {
    let old = up.status.as_ref().and_then(|s| s.rollback.as_ref());
    if old == new.rollback.as_ref() {
        json!({"status": new})
    } else {
        json!({"metadata": {"resourceVersion": up.resource_version()}, "status": new})
    }
}

impl<C: Cluster> Shared<C> {
    /// Write the status if it changed, announce a new phase, update the metrics.
    async fn status(
        &self,
        up: &OSUpgrade,
        gate: &Gate,
        plan: &Plan,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(), ReconcileError> {
        let name = up.name_any();
        let old = up.status.as_ref();
        let new = new_status(up, gate, plan, report, now);
        if old != Some(&new) {
            self.cluster
                .patch_upgrade_status(&name, &status_patch(up, &new))
                .await
                .map_err(|source| ReconcileError::WriteStatus {
                    upgrade: name.clone(),
                    source,
                })?;
            let origin = gate.open.as_ref().ok().map(|r| r.origin.as_str());
            self.announce_phase(up, old.and_then(|s| s.phase), &new, origin, now)
                .await;
            self.announce_health(up, &new).await;
        }
        if let Some(phase) = new.phase {
            let counts = match gate.open {
                Ok(_) => plan.counts.clone(),
                Err(_) => Default::default(),
            };
            self.metrics.set_upgrade(&name, Some((phase, counts)));
        }
        if report.conflicts > 0 {
            self.metrics.reconcile_error(ErrorKind::Conflict);
        } else if !report.errors.is_empty() {
            self.metrics.reconcile_error(ErrorKind::Api);
        }
        Ok(())
    }

    /// An Event for a phase change; a rollout that ended is also timed.
    async fn announce_phase(
        &self,
        up: &OSUpgrade,
        old: Option<UpgradePhase>,
        st: &OSUpgradeStatus,
        origin: Option<&str>,
        now: DateTime<Utc>,
    ) {
        let Some(new) = st.phase.filter(|p| old != Some(*p)) else {
            return;
        };
        let (severity, reason, text) = phase_event(up, new, st, origin);
        self.upgrade_event(up, severity, reason, text).await;
        if matches!(new, UpgradePhase::Completed | UpgradePhase::Failed) {
            let took = now - created_at(up).unwrap_or(now);
            self.metrics.rollout_done(
                new == UpgradePhase::Failed,
                took.to_std().unwrap_or_default(),
            );
        }
    }

    /// When to look again: soon after a conflict or a failed call, otherwise as the gate
    /// and the plan ask.
    fn requeue(&self, gate: &Gate, plan: &Plan, report: &Report) -> Duration {
        let planned = match &gate.open {
            Ok(_) => {
                let busy = !plan.actions.is_empty() || plan.phase == UpgradePhase::Progressing;
                let ceiling = if busy { BUSY_RECHECK } else { self.resync };
                plan.requeue_after.unwrap_or(self.resync).min(ceiling)
            }
            Err(Hold::Invalid(_)) => self.resync,
            Err(Hold::Waiting(_)) => WAITING_RECHECK,
            Err(Hold::Rejected(_)) => self.catalogs.retry_after(),
        };
        if report.conflicts > 0 {
            Duration::from_secs(1)
        } else if !report.errors.is_empty() {
            Duration::from_secs(5).min(planned)
        } else {
            planned
        }
    }

    async fn upgrade_event(
        &self,
        up: &OSUpgrade,
        severity: Severity,
        reason: &str,
        message: String,
    ) {
        let note = Note {
            severity,
            reason: reason.into(),
            action: "Reconcile".into(),
            message,
            regarding: up.object_ref(&()),
            related: None,
        };
        if let Err(e) = self.cluster.publish(&note).await {
            tracing::warn!(reason, error = %Chain(&e), "could not publish event");
        }
    }
}

/// The status the gate and the plan call for, starting from `up`'s current one.
fn new_status(
    up: &OSUpgrade,
    gate: &Gate,
    plan: &Plan,
    report: &Report,
    now: DateTime<Utc>,
) -> OSUpgradeStatus {
    let invalid;
    let verdict = match &gate.open {
        Ok(resolved) => Verdict::Planned {
            plan,
            resolved,
            notes: report.drain_notes.values().map(String::as_str).collect(),
        },
        Err(Hold::Invalid(e)) => {
            invalid = e.to_string();
            Verdict::Rejected {
                reason: UpgradeReason::InvalidSpec.as_str(),
                message: &invalid,
            }
        }
        Err(Hold::Waiting(b)) => Verdict::Waiting(b),
        Err(Hold::Rejected(r)) => Verdict::Rejected {
            reason: r.reason.as_str(),
            message: &r.message,
        },
    };
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut st = status::build(up.status.as_ref(), up.metadata.generation, &stamp, verdict);
    if let Ok(resolved) = &gate.open {
        health::record(&mut st, plan, &resolved.image.version, now);
    }
    st
}

/// Severity, reason and text of the Event for entering phase `new`.
fn phase_event(
    up: &OSUpgrade,
    new: UpgradePhase,
    st: &OSUpgradeStatus,
    origin: Option<&str>,
) -> (Severity, &'static str, String) {
    let message = st.message.clone().unwrap_or_default();
    let resolved = st.resolved_version.clone().unwrap_or_default();
    match new {
        UpgradePhase::Rejected => (
            Severity::Warning,
            "Rejected",
            format!("{}: {message}", st.reason.clone().unwrap_or_default()),
        ),
        UpgradePhase::Pending => (Severity::Normal, "Waiting", message),
        UpgradePhase::Accepted if up.spec.is_external() => (
            Severity::Normal,
            "Accepted",
            format!(
                "coordinating reboots for updates installed by {}",
                crate::external::ORIGIN
            ),
        ),
        UpgradePhase::Accepted => (
            Severity::Normal,
            "Accepted",
            format!(
                "version {:?} resolved to {resolved} from {}",
                up.spec.version,
                origin.unwrap_or("the catalog")
            ),
        ),
        UpgradePhase::Progressing => (
            Severity::Normal,
            "RolloutProgressing",
            format!("rolling out {resolved}: {message}"),
        ),
        UpgradePhase::Paused => (Severity::Normal, "RolloutPaused", message),
        UpgradePhase::Completed => (
            Severity::Normal,
            "RolloutCompleted",
            format!("rollout of {resolved} finished: {message}"),
        ),
        UpgradePhase::Failed => (Severity::Warning, "RolloutFailed", message),
        UpgradePhase::RollingBack => (Severity::Warning, "RollingBack", message),
        UpgradePhase::RolledBack => (Severity::Normal, "RolledBack", message),
    }
}

#[cfg(test)]
mod tests;
