//! The pure decision: which pods on this node to restart after a live update.
//!
//! A pod is restarted when one of its processes has a mount whose root or source points
//! into the previous deployment, or when it matches the OSUpgrade's
//! `restartOnLiveUpdate` selector and was created before the update was applied. Each
//! pod appears once, whatever the number of reasons; pods already restarted for this
//! update, terminating pods and the agent's own pod never do; pods no controller would
//! recreate are reported instead of deleted. When a reboot follows, nothing is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::procfs::ProcessMounts;

/// A pod by namespace, name and UID (the UID tells a recreated pod from the old one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the decision needs to know about a pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Which pod.
    pub pod: PodRef,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// It has a `deletionTimestamp` already.
    pub terminating: bool,
    /// It has an owner with `controller: true` that will recreate it.
    pub controlled: bool,
}

/// What "the previous deployment" looks like in a mount's root or source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaleRef {
    /// A directory (e.g. `/ostree/deploy/fedora/deploy/<checksum>.0`); matches where
    /// it appears as whole path components.
    Path(String),
    /// An OSTree commit checksum; matches a path component `<checksum>` or
    /// `<checksum>.<serial>`.
    DeploymentChecksum(String),
}

impl StaleRef {
    /// Whether `path` points into this deployment.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            StaleRef::Path(p) => contains_path(path, p.trim_end_matches('/')),
            StaleRef::DeploymentChecksum(c) => path.split('/').any(|comp| {
                comp == c
                    || comp
                        .strip_prefix(c.as_str())
                        .and_then(|r| r.strip_prefix('.'))
                        .is_some_and(|serial| {
                            !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit())
                        })
            }),
        }
    }
}

/// `needle` occurs in `hay` starting and ending at path component boundaries.
fn contains_path(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    hay.match_indices(needle).any(|(i, _)| {
        let end = i + needle.len();
        let starts = i == 0 || needle.starts_with('/') || hay.as_bytes()[i - 1] == b'/';
        let ends = end == hay.len() || hay.as_bytes()[end] == b'/';
        starts && ends
    })
}

/// Everything [`plan_restarts`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct RestartInput<'a> {
    /// A reboot follows the update: mounts will be made afresh, restart nothing.
    pub reboot_follows: bool,
    /// When the live update was applied; selector matches created later are new pods.
    pub applied_at: Timestamp,
    /// The pods on this node.
    pub pods: &'a [PodInfo],
    /// Mount tables of the processes running in pods.
    pub processes: &'a [ProcessMounts],
    /// How to recognise the previous deployment.
    pub stale: &'a [StaleRef],
    /// The OSUpgrade's `restartOnLiveUpdate`.
    pub selector: Option<&'a LabelSelector>,
    /// UIDs of pods already deleted for this update.
    pub already_restarted: &'a BTreeSet<String>,
    /// UIDs never to touch (the agent's own pod).
    pub exclude: &'a BTreeSet<String>,
}

/// One pod to delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRestart {
    /// The pod.
    pub pod: PodRef,
    /// Each reason once: a stale mount, the selector, or both.
    pub reasons: Vec<String>,
}

/// A pod that should be restarted but will not be, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPod {
    /// The pod.
    pub pod: PodRef,
    /// Why it was left alone.
    pub why: String,
}

/// The decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartPlan {
    /// Pods to delete, each once, by namespace and name.
    pub restart: Vec<PodRestart>,
    /// Pods left alone although they hold stale mounts or match the selector.
    pub skipped: Vec<SkippedPod>,
}

/// A `restartOnLiveUpdate` selector Kubernetes would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An operator other than In, NotIn, Exists, DoesNotExist.
    #[error("restartOnLiveUpdate: unknown operator {operator:?} for key {key:?}")]
    UnknownOperator {
        /// The operator.
        operator: String,
        /// The key it applies to.
        key: String,
    },
    /// In/NotIn without values, or Exists/DoesNotExist with some.
    #[error(
        "restartOnLiveUpdate: operator {operator} for key {key:?} {} values",
        if *needs_values { "needs" } else { "takes no" }
    )]
    Values {
        /// The operator.
        operator: String,
        /// The key it applies to.
        key: String,
        /// Whether the operator needs values (it has none) or takes none (it has some).
        needs_values: bool,
    },
}

/// Decide which pods to restart. Fails only on an invalid selector.
pub fn plan_restarts(input: &RestartInput<'_>) -> Result<RestartPlan, SelectorError> {
    if input.reboot_follows {
        return Ok(RestartPlan::default());
    }
    if let Some(sel) = input.selector {
        validate_selector(sel)?;
    }
    let mut reasons = stale_mounts(input);
    if let Some(sel) = input.selector {
        for p in input.pods {
            let old = p.created.is_none_or(|c| c < input.applied_at);
            if old && selector_matches(sel, &p.labels) {
                reasons
                    .entry(p.pod.uid.as_str())
                    .or_default()
                    .push("matches restartOnLiveUpdate".to_string());
            }
        }
    }
    let mut plan = RestartPlan::default();
    let mut pods: Vec<&PodInfo> = input.pods.iter().collect();
    pods.sort_by(|a, b| a.pod.cmp(&b.pod));
    for p in pods {
        let Some(why) = reasons.remove(p.pod.uid.as_str()) else {
            continue;
        };
        if input.already_restarted.contains(&p.pod.uid) || p.terminating {
            continue;
        }
        let skip = |why: &str| SkippedPod {
            pod: p.pod.clone(),
            why: why.to_string(),
        };
        if input.exclude.contains(&p.pod.uid) {
            plan.skipped.push(skip("it is the osroll agent itself"));
        } else if !p.controlled {
            plan.skipped
                .push(skip("no controller would recreate it; restart it by hand"));
        } else {
            plan.restart.push(PodRestart {
                pod: p.pod.clone(),
                reasons: why,
            });
        }
    }
    Ok(plan)
}

/// For each known pod with a process holding a mount into the previous version, why
/// (the first such process and mount).
fn stale_mounts<'a>(input: &RestartInput<'a>) -> BTreeMap<&'a str, Vec<String>> {
    let known: BTreeSet<&str> = input.pods.iter().map(|p| p.pod.uid.as_str()).collect();
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for proc_ in input.processes {
        let uid = proc_.pod_uid.as_str();
        if !known.contains(uid) || reasons.contains_key(uid) {
            continue;
        }
        let stale = proc_.mounts.iter().find_map(|m| {
            [&m.root, &m.source]
                .into_iter()
                .find(|path| input.stale.iter().any(|s| s.matches(path)))
                .map(|path| (m, path))
        });
        if let Some((m, path)) = stale {
            reasons.entry(uid).or_default().push(format!(
                "pid {} has {} mounted from {path}, in the previous deployment",
                proc_.pid, m.mount_point
            ));
        }
    }
    reasons
}

fn validate_selector(sel: &LabelSelector) -> Result<(), SelectorError> {
    for e in sel.match_expressions.iter().flatten() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        let ok = match e.operator.as_str() {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            other => {
                return Err(SelectorError::UnknownOperator {
                    operator: other.to_string(),
                    key: e.key.clone(),
                });
            }
        };
        if !ok {
            return Err(SelectorError::Values {
                operator: e.operator.clone(),
                key: e.key.clone(),
                needs_values: n == 0,
            });
        }
    }
    Ok(())
}

/// Kubernetes label selector semantics (an empty selector matches every pod).
/// `sel` must have passed validation.
fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests;
