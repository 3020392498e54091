//! Turn API objects (Nodes, OSUpgradeProgresses) into the planner's [`Observed`]
//! snapshot. Pure: the reconciler hands in what its caches hold.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use osroll_api::{OSUpgradeProgress, ProgressPhase};

use crate::marks;
use crate::planner::{NodeObs, Observed, ProgressObs, RollbackMark, Strategy};
use crate::select::NodeSelection;
use crate::verify;

/// Node labels that mark a control-plane node.
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Controller-wide inputs of every snapshot.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Prefix of our cordon annotation value.
    pub controller_name: String,
    /// The node the controller runs on.
    pub own_node: Option<String>,
    /// Ready time required after a node completes, before uncordon.
    pub node_soak: Duration,
    /// Poll interval while draining.
    pub drain_poll: Duration,
}

/// A jiff timestamp from the Kubernetes types as a chrono time.
pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

/// Parse an RFC 3339 string.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Node condition Ready: (is True, last transition).
pub fn readiness(node: &Node) -> (bool, Option<DateTime<Utc>>) {
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match cond {
        Some(c) => (
            c.status == "True",
            c.last_transition_time.as_ref().and_then(to_chrono),
        ),
        None => (false, None),
    }
}

fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a String> {
    meta.annotations.as_ref().and_then(|a| a.get(key))
}

/// The planner's view of one progress object.
pub fn progress_obs(p: &OSUpgradeProgress) -> ProgressObs {
    let st = p.status.as_ref();
    let nonce = p.spec.retry_nonce.as_deref();
    let meta = &p.metadata;
    // A status written for an earlier attempt (before a retryNonce change) says nothing
    // about the current one.
    let current = st.is_none_or(|s| s.observed_retry_nonce.as_deref() == nonce || nonce.is_none());
    ProgressObs {
        phase: st
            .filter(|_| current)
            .and_then(|s| s.phase)
            .unwrap_or(ProgressPhase::Pending),
        reboot_approved: p.spec.reboot_approved,
        approval_recorded: false,
        reboot_required: st.filter(|_| current).and_then(|s| s.reboot_required),
        canary: annotation(meta, marks::CANARY).is_some_and(|v| v == "true"),
        completed_at: st
            .and_then(|s| s.completed_at.as_deref())
            .and_then(parse_time),
        drain_outcome: marks::drain_outcome(annotation(meta, marks::DRAIN_OUTCOME), nonce),
        reported: marks::reported(annotation(meta, marks::REPORTED), nonce),
        unverified: None,
        rollback: annotation(meta, marks::ROLLBACK).map(|v| RollbackMark {
            upgraded_at: parse_time(v),
        }),
        rollback_unavailable: annotation(meta, marks::ROLLBACK_UNAVAILABLE).is_some(),
        external: p.spec.external.is_some(),
    }
}

fn source_of(p: &OSUpgradeProgress) -> Option<&str> {
    p.spec.source_ref.as_ref().map(|s| s.name.as_str())
}

/// Snapshot for the OSUpgrade `upgrade`: the selected nodes plus any node that carries
/// one of its progress objects.
pub fn snapshot(
    upgrade: &str,
    strategy: Strategy,
    selection: &NodeSelection,
    nodes: &[&Node],
    progresses: &[&OSUpgradeProgress],
    settings: &Settings,
) -> Observed {
    let mut by_node: HashMap<&str, Vec<&OSUpgradeProgress>> = HashMap::new();
    for p in progresses {
        by_node
            .entry(p.spec.node_name.as_str())
            .or_default()
            .push(p);
    }
    let ours_value = marks::cordon_value(&settings.controller_name, upgrade);
    let mut out = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let on_node = by_node.get(name).map(Vec::as_slice).unwrap_or_default();
        let (ours, others): (Vec<&OSUpgradeProgress>, Vec<&OSUpgradeProgress>) =
            on_node.iter().partition(|p| source_of(p) == Some(upgrade));
        let ours = ours.first().copied();
        if ours.is_none() && !selection.selects(node_labels(node)) {
            continue;
        }
        let cordoned_by_us = marks::cordoned_by(node) == Some(&ours_value);
        out.push(node_obs(node, ours, &others, cordoned_by_us));
    }
    Observed {
        strategy,
        nodes: out,
        own_node: settings.own_node.clone(),
        node_soak: settings.node_soak,
        drain_poll: settings.drain_poll,
        live_updates: false,
        health: Default::default(),
    }
}

/// The planner's view of `node`, with our progress object on it (if any) and those of
/// other OSUpgrades.
fn node_obs(
    node: &Node,
    ours: Option<&OSUpgradeProgress>,
    others: &[&OSUpgradeProgress],
    cordoned_by_us: bool,
) -> NodeObs {
    let (ready, ready_since) = readiness(node);
    let phase = |p: &OSUpgradeProgress| p.status.as_ref().and_then(|s| s.phase);
    let failed_elsewhere = others
        .iter()
        .filter(|p| {
            phase(p)
                .is_some_and(|ph| matches!(ph, ProgressPhase::Failed | ProgressPhase::RolledBack))
        })
        .count() as u32;
    let retries = ours
        .and_then(|p| p.status.as_ref())
        .map_or(0, |s| s.retry_count);
    let claimed_by = others
        .iter()
        .filter(|p| !phase(p).is_some_and(ProgressPhase::is_terminal))
        .find_map(|p| source_of(p).map(String::from));
    let labels = node_labels(node);
    NodeObs {
        name: node.metadata.name.clone().unwrap_or_default(),
        ready,
        ready_since,
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        cordoned_by_us,
        control_plane: CONTROL_PLANE_LABELS.iter().any(|k| labels.contains_key(*k)),
        past_failures: failed_elsewhere + retries,
        claimed_by,
        progress: ours.map(|p| ProgressObs {
            unverified: verify::check_completed(p, node),
            approval_recorded: marks::reboot_approval(node, p.spec.retry_nonce.as_deref())
                .is_some(),
            ..progress_obs(p)
        }),
        ab_slot: verify::is_ab_node(node),
    }
}

#[cfg(test)]
mod tests;
