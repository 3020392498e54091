//! Pure drain decisions: which pods on a node must go, which are left alone, whether the
//! drain is done or timed out, and which PodDisruptionBudget blocks a pod.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::planner::DrainPolicy;
use crate::select::Selector;

/// Annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What to do with one pod on a draining node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodAction {
    /// Evict it.
    Evict,
    /// Already terminating: wait for it to go.
    Wait,
    /// Leave it: a DaemonSet pod (it would come back and tolerates cordons).
    SkipDaemonSet,
    /// Leave it: a mirror pod of a static pod (the API cannot delete it).
    SkipMirror,
    /// Leave it: finished (Succeeded or Failed), it uses nothing.
    SkipFinished,
    /// Leave it: it does not match `spec.drain.podSelector`.
    SkipUnselected,
}

impl PodAction {
    /// Whether the pod keeps the drain from completing.
    pub fn blocks(self) -> bool {
        matches!(self, PodAction::Evict | PodAction::Wait)
    }
}

/// `namespace/name` of a pod.
pub fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Decide what to do with `pod`.
pub fn classify(pod: &Pod, selector: Option<&Selector>) -> PodAction {
    let m = &pod.metadata;
    if m.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return PodAction::SkipMirror;
    }
    if m.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    {
        return PodAction::SkipDaemonSet;
    }
    if pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        return PodAction::SkipFinished;
    }
    if let Some(sel) = selector
        && !sel.matches(m.labels.as_ref().unwrap_or(&Default::default()))
    {
        return PodAction::SkipUnselected;
    }
    if m.deletion_timestamp.is_some() {
        return PodAction::Wait;
    }
    PodAction::Evict
}

/// Where a drain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assessment {
    /// Nothing that must leave is left: the reboot may be approved.
    Drained,
    /// Still draining: evict these pods (keys), wait for the rest.
    InProgress {
        /// Pods to evict now.
        evict: Vec<String>,
        /// Pods already terminating.
        waiting: Vec<String>,
    },
    /// The timeout passed with these pods still present.
    TimedOut {
        /// Pods still blocking.
        remaining: Vec<String>,
    },
}

/// Assess the pods on a node whose drain started at `started`.
pub fn assess(
    pods: &[Pod],
    policy: &DrainPolicy,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Assessment {
    let selector = policy
        .pod_selector
        .as_ref()
        .and_then(|s| Selector::from_label_selector(s, "spec.drain.podSelector").ok());
    let mut evict = Vec::new();
    let mut waiting = Vec::new();
    for p in pods {
        match classify(p, selector.as_ref()) {
            PodAction::Evict => evict.push(pod_key(p)),
            PodAction::Wait => waiting.push(pod_key(p)),
            _ => {}
        }
    }
    if evict.is_empty() && waiting.is_empty() {
        return Assessment::Drained;
    }
    let elapsed = (now - started).to_std().unwrap_or(Duration::ZERO);
    if elapsed >= policy.timeout {
        let mut remaining = evict;
        remaining.extend(waiting);
        return Assessment::TimedOut { remaining };
    }
    Assessment::InProgress { evict, waiting }
}

/// The budgets (`namespace/name`) whose selector matches `pod`, from `pdbs` in any
/// namespace. In policy/v1 an empty selector matches every pod of its namespace.
pub fn matching_pdbs(pod: &Pod, pdbs: &[PodDisruptionBudget]) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    pdbs.iter()
        .filter(|b| b.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .filter(|b| {
            let sel = b
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            Selector::from_label_selector(&sel, "selector").is_ok_and(|s| s.matches(labels))
        })
        .map(|b| format!("{ns}/{}", b.metadata.name.as_deref().unwrap_or("")))
        .collect()
}

/// Split the pods to evict (keys) into those whose budgets allow an eviction now and
/// those a budget blocks, naming the budget (`namespace/name`). A budget's
/// `status.disruptionsAllowed` is used up as pods are let through, so two pods under a
/// budget that allows one disruption are not both tried. A budget without status yet
/// is left for the Eviction API to judge.
pub fn split_by_budget(
    keys: &[String],
    pods: &[Pod],
    pdbs: &[PodDisruptionBudget],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut allowed: std::collections::HashMap<String, i32> = pdbs
        .iter()
        .filter_map(|b| {
            let key = format!(
                "{}/{}",
                b.metadata.namespace.as_deref().unwrap_or("default"),
                b.metadata.name.as_deref()?
            );
            Some((key, b.status.as_ref()?.disruptions_allowed))
        })
        .collect();
    let mut go = Vec::new();
    let mut blocked = Vec::new();
    for key in keys {
        let Some(pod) = pods.iter().find(|p| pod_key(p) == *key) else {
            continue;
        };
        let budgets = matching_pdbs(pod, pdbs);
        match budgets
            .iter()
            .find(|b| allowed.get(*b).is_some_and(|n| *n <= 0))
        {
            Some(b) => blocked.push((key.clone(), b.clone())),
            None => {
                for b in &budgets {
                    if let Some(n) = allowed.get_mut(b) {
                        *n -= 1;
                    }
                }
                go.push(key.clone());
            }
        }
    }
    (go, blocked)
}

#[cfg(test)]
mod tests;
