//! One OSUpgrade reconcile: finalizer, spec validation, overlap with older OSUpgrades,
//! catalog resolution, then snapshot -> [`plan`] -> [`Act`] -> status.
//!
//! It reads only the snapshot it is handed ([`World`], built from watch caches) and
//! writes only through the [`Cluster`] adapter, so tests drive it with plain objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::{Resource, ResourceExt};
use osroll_api::catalog::NodeVersion;
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase, labels};
use serde_json::json;

use crate::act::{Act, DrainMemory, ProgressTemplate, Report};
use crate::catalog::{self, ResolutionCache, Resolved, TrustPolicy, UrlFetcher};
use crate::chain::Chain;
use crate::cluster::{ApiError, Cluster, Note, Severity};
use crate::inplace;
use crate::marks::cordoned_by;
use crate::metrics::{ErrorKind, Metrics};
use crate::observe::{self, Settings};
use crate::planner::{DrainPolicy, Plan, Strategy, plan};
use crate::select::{self, Claim, NodeSelection};
use crate::status::{self, Verdict};

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

/// A reconcile that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn created(u: &OSUpgrade) -> Option<DateTime<Utc>> {
    u.metadata
        .creation_timestamp
        .as_ref()
        .and_then(observe::to_chrono)
}

fn claim(u: &OSUpgrade) -> Claim {
    let phase = u.status.as_ref().and_then(|s| s.phase);
    Claim {
        name: u.name_any(),
        created: created(u),
        active: !matches!(
            phase,
            Some(UpgradePhase::Completed | UpgradePhase::Rejected)
        ),
        selection: NodeSelection::from_spec(u.spec.node_selector.as_ref()).ok(),
    }
}

struct Spec {
    strategy: Strategy,
    drain: DrainPolicy,
    selection: NodeSelection,
}

fn validate(up: &OSUpgrade, in_place: bool) -> Result<Spec, crate::planner::SpecError> {
    Ok(Spec {
        strategy: Strategy::from_spec(up.spec.strategy.as_ref())?,
        drain: DrainPolicy::from_spec(up.spec.drain.as_ref())?,
        selection: NodeSelection::from_spec(up.spec.node_selector.as_ref())?
            .with_in_place(in_place),
    })
}

fn in_place_candidate(u: &OSUpgrade) -> inplace::Candidate {
    inplace::Candidate {
        name: u.name_any(),
        created: created(u),
        deleting: u.metadata.deletion_timestamp.is_some(),
        rejected: u
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p == UpgradePhase::Rejected),
    }
}

impl<C: Cluster> Shared<C> {
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

    fn ours<'w>(&self, up: &str, world: &'w World<'_>) -> Vec<&'w OSUpgradeProgress> {
        world
            .progresses
            .iter()
            .map(Arc::as_ref)
            .filter(|p| p.spec.source_ref.as_ref().is_some_and(|s| s.name == up))
            .collect()
    }

    /// Snapshot, plan, act.
    async fn plan_and_act(
        &self,
        up: &OSUpgrade,
        spec: &Spec,
        template: &ProgressTemplate,
        world: &World<'_>,
        now: DateTime<Utc>,
    ) -> (Plan, Report) {
        let name = up.name_any();
        let nodes: Vec<&Node> = world.nodes.iter().map(Arc::as_ref).collect();
        let progresses: Vec<&OSUpgradeProgress> =
            world.progresses.iter().map(Arc::as_ref).collect();
        let obs = observe::observe(
            &name,
            spec.strategy.clone(),
            &spec.selection,
            &nodes,
            &progresses,
            &self.settings,
        );
        let plan = plan(&obs, now);
        let node_map: HashMap<String, &Node> = nodes.iter().map(|n| (n.name_any(), *n)).collect();
        let progress_map: HashMap<String, &OSUpgradeProgress> = self
            .ours(&name, world)
            .into_iter()
            .map(|p| (p.spec.node_name.clone(), p))
            .collect();
        let cordon_value = crate::marks::cordon_value(&self.settings.controller_name, &name);
        let act = Act {
            cluster: &self.cluster,
            upgrade: up,
            nodes: &node_map,
            progress: &progress_map,
            template,
            drain: &spec.drain,
            cordon_value: &cordon_value,
            now,
            metrics: &self.metrics,
            leading: &self.leading,
            memory: &self.memory,
        };
        let report = act.run(&plan.actions).await;
        (plan, report)
    }

    /// Nothing new may start (rejected, waiting): let work in flight finish and release
    /// every node we cordoned that is not rebooting.
    async fn wind_down(
        &self,
        up: &OSUpgrade,
        spec: Option<Spec>,
        world: &World<'_>,
        now: DateTime<Utc>,
    ) -> Report {
        let mut spec = spec.unwrap_or(Spec {
            strategy: Strategy::default(),
            drain: DrainPolicy::default(),
            selection: NodeSelection::default(),
        });
        spec.strategy.paused = true;
        self.plan_and_act(up, &spec, &ProgressTemplate::default(), world, now)
            .await
            .1
    }

    async fn resolve(
        &self,
        up: &OSUpgrade,
        selection: &NodeSelection,
        world: &World<'_>,
    ) -> Result<Resolved, osroll_api::Rejection> {
        let uid = up.uid().unwrap_or_default();
        let generation = up.metadata.generation.unwrap_or(0);
        let t = Instant::now();
        if let Some(r) = self.catalogs.get(&uid, generation, t) {
            return r;
        }
        let versions: Vec<NodeVersion> = world
            .nodes
            .iter()
            .filter(|n| selection.selects(n.labels()))
            .map(|n| NodeVersion {
                node: n.name_any(),
                version: n.labels().get(labels::OS_VERSION).cloned(),
            })
            .collect();
        let r = match catalog::load(
            &up.spec.catalog,
            &self.namespace,
            &self.cluster,
            self.fetcher.as_ref(),
        )
        .await
        {
            Ok(doc) => catalog::resolve(&doc, &up.spec, &versions, &self.trust),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.metrics.reconcile_error(ErrorKind::Catalog);
        }
        self.catalogs.put(&uid, generation, t, r.clone());
        r
    }

    async fn ensure_finalizer(&self, up: &OSUpgrade) -> Result<(), ApiError> {
        if up.finalizers().iter().any(|f| f == labels::FINALIZER) {
            return Ok(());
        }
        let mut list = up.finalizers().to_vec();
        list.push(labels::FINALIZER.to_string());
        let patch =
            json!({"metadata": {"finalizers": list, "resourceVersion": up.resource_version()}});
        self.cluster.patch_upgrade(&up.name_any(), &patch).await
    }

    /// Deletion: uncordon every node we cordoned for this OSUpgrade, then let it go.
    async fn finalize(
        &self,
        up: &OSUpgrade,
        world: &World<'_>,
    ) -> Result<Duration, ReconcileError> {
        let name = up.name_any();
        let ours = crate::marks::cordon_value(&self.settings.controller_name, &name);
        for n in world.nodes.iter().filter(|n| cordoned_by(n) == Some(&ours)) {
            if !self.leading.load(Ordering::SeqCst) {
                return Ok(Duration::from_secs(1));
            }
            let node = n.name_any();
            let patch = crate::marks::uncordon_patch(n.resource_version().as_deref());
            self.cluster.patch_node(&node, &patch).await?;
            let msg = format!("node {node} uncordoned: OSUpgrade {name} is being deleted");
            self.upgrade_event(up, Severity::Normal, "NodeUncordoned", msg)
                .await;
        }
        if up.finalizers().iter().any(|f| f == labels::FINALIZER) {
            let list: Vec<&String> = up
                .finalizers()
                .iter()
                .filter(|f| *f != labels::FINALIZER)
                .collect();
            let patch =
                json!({"metadata": {"finalizers": list, "resourceVersion": up.resource_version()}});
            self.cluster.patch_upgrade(&name, &patch).await?;
        }
        self.metrics.set_upgrade(&name, None);
        self.catalogs.forget(&up.uid().unwrap_or_default());
        Ok(self.resync)
    }

    /// Answer in-place requests whose progress of `up` has ended: the node's
    /// `osroll.io/in-place-update` label becomes `done` or `failed`.
    async fn answer_in_place(&self, up: &OSUpgrade, world: &World<'_>, report: &mut Report) {
        let name = up.name_any();
        for p in self.ours(&name, world) {
            let node = p.spec.node_name.as_str();
            let Some(n) = world.nodes.iter().find(|n| n.name_any() == node) else {
                continue;
            };
            let label = n.labels().get(labels::IN_PLACE_UPDATE).map(String::as_str);
            let phase = p.status.as_ref().and_then(|s| s.phase);
            let Some(value) = inplace::answer(label, phase) else {
                continue;
            };
            if !self.leading.load(Ordering::SeqCst) {
                return;
            }
            let patch = json!({"metadata": {"labels": {labels::IN_PLACE_UPDATE: value}}});
            match self.cluster.patch_node(node, &patch).await {
                Ok(()) => {
                    let msg = format!("node {node}: in-place update {value}");
                    self.upgrade_event(up, Severity::Normal, "InPlaceUpdateAnswered", msg)
                        .await;
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }

    /// Reconcile `up` against `world` at `now`; returns when to look again.
    pub async fn reconcile(
        &self,
        up: &OSUpgrade,
        world: &World<'_>,
        now: DateTime<Utc>,
    ) -> Result<Duration, ReconcileError> {
        self.metrics.reconciled();
        if !self.leading.load(Ordering::SeqCst) {
            return Ok(self.resync);
        }
        if up.meta().deletion_timestamp.is_some() {
            return self.finalize(up, world).await;
        }
        self.ensure_finalizer(up).await?;
        let generation = up.metadata.generation;
        let old = up.status.as_ref();
        let now_s = rfc3339(now);
        let candidates: Vec<inplace::Candidate> = world
            .upgrades
            .iter()
            .map(|u| in_place_candidate(u))
            .collect();
        let spec = validate(up, inplace::takes_requests(&up.name_any(), &candidates));
        let (new_status, report, requeue, plan_info) = match spec {
            Err(e) => {
                let report = self.wind_down(up, None, world, now).await;
                let msg = e.to_string();
                let st = status::build(
                    old,
                    generation,
                    &now_s,
                    Verdict::Rejected {
                        reason: "InvalidSpec",
                        message: &msg,
                    },
                );
                (st, report, self.resync, None)
            }
            Ok(spec) => {
                let claims: Vec<Claim> = world.upgrades.iter().map(|u| claim(u)).collect();
                let nodes = world
                    .nodes
                    .iter()
                    .map(|n| (n.metadata.name.as_deref().unwrap_or(""), n.labels()));
                if let Some(b) = select::blocker(&claim(up), &claims, nodes) {
                    let report = self.wind_down(up, Some(spec), world, now).await;
                    let st = status::build(old, generation, &now_s, Verdict::Waiting(&b));
                    (st, report, Duration::from_secs(30), None)
                } else {
                    match self.resolve(up, &spec.selection, world).await {
                        Err(rej) => {
                            let report = self.wind_down(up, Some(spec), world, now).await;
                            let st = status::build(
                                old,
                                generation,
                                &now_s,
                                Verdict::Rejected {
                                    reason: rej.reason.as_str(),
                                    message: &rej.message,
                                },
                            );
                            (st, report, self.catalogs.retry_after(), None)
                        }
                        Ok(resolved) => {
                            let template = ProgressTemplate {
                                image: resolved.image.clone(),
                                catalog_digest: Some(resolved.digest.clone()),
                                signed_catalog: resolved.signed.clone(),
                            };
                            let (plan, mut report) =
                                self.plan_and_act(up, &spec, &template, world, now).await;
                            self.answer_in_place(up, world, &mut report).await;
                            let notes: Vec<&str> =
                                report.drain_notes.values().map(String::as_str).collect();
                            let st = status::build(
                                old,
                                generation,
                                &now_s,
                                Verdict::Planned {
                                    plan: &plan,
                                    resolved: &resolved,
                                    notes,
                                },
                            );
                            let busy =
                                !plan.actions.is_empty() || plan.phase == UpgradePhase::Progressing;
                            let requeue = plan.requeue_after.unwrap_or(self.resync).min(if busy {
                                Duration::from_secs(30)
                            } else {
                                self.resync
                            });
                            let info = (plan.phase, plan.counts.clone(), resolved.origin.clone());
                            (st, report, requeue, Some(info))
                        }
                    }
                }
            }
        };
        if !self.leading.load(Ordering::SeqCst) {
            return Ok(self.resync);
        }
        if old != Some(&new_status) {
            self.cluster
                .patch_upgrade_status(&up.name_any(), &json!({"status": new_status}))
                .await?;
            self.phase_changed(
                up,
                old.and_then(|s| s.phase),
                &new_status,
                plan_info.as_ref().map(|i| i.2.as_str()),
                now,
            )
            .await;
        }
        if let Some((phase, counts, _)) = plan_info {
            self.metrics
                .set_upgrade(&up.name_any(), Some((phase, counts)));
        } else if let Some(phase) = new_status.phase {
            self.metrics
                .set_upgrade(&up.name_any(), Some((phase, Default::default())));
        }
        if report.conflicts > 0 {
            self.metrics.reconcile_error(ErrorKind::Conflict);
            return Ok(Duration::from_secs(1));
        }
        if !report.errors.is_empty() {
            self.metrics.reconcile_error(ErrorKind::Api);
            return Ok(Duration::from_secs(5).min(requeue));
        }
        Ok(requeue)
    }

    async fn phase_changed(
        &self,
        up: &OSUpgrade,
        old: Option<UpgradePhase>,
        st: &osroll_api::OSUpgradeStatus,
        origin: Option<&str>,
        now: DateTime<Utc>,
    ) {
        let Some(new) = st.phase else { return };
        if old == Some(new) {
            return;
        }
        let message = st.message.clone().unwrap_or_default();
        let resolved = st.resolved_version.clone().unwrap_or_default();
        let (severity, reason, text) = match new {
            UpgradePhase::Rejected => (
                Severity::Warning,
                "Rejected",
                format!("{}: {message}", st.reason.clone().unwrap_or_default()),
            ),
            UpgradePhase::Pending => (Severity::Normal, "Waiting", message),
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
        };
        self.upgrade_event(up, severity, reason, text).await;
        if matches!(new, UpgradePhase::Completed | UpgradePhase::Failed) {
            let created = up
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(observe::to_chrono)
                .unwrap_or(now);
            self.metrics.rollout_done(
                new == UpgradePhase::Failed,
                (now - created).to_std().unwrap_or_default(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
