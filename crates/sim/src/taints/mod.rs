//! Node taints and pod tolerations as the control plane treats them, so the test cluster
//! places pods where a real one would: the taints the node lifecycle controller keeps in
//! step with a Node's conditions and cordon, the tolerations the DaemonSet controller adds
//! to its pods, and the matching rules the scheduler applies. Pure functions over the
//! k8s-openapi types; the server's node lifecycle controller and the workload controllers
//! of [`crate::workloads`] act on them.

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};

/// Taint of a node whose Ready condition is False (or not yet reported).
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Effect that keeps new pods off a node.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// Effect that also evicts running pods that do not tolerate it.
pub const NO_EXECUTE: &str = "NoExecute";

/// Condition type and status that give a node a NoSchedule taint, as in the node
/// lifecycle controller's condition map.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];

/// A NoSchedule taint with `key` and no value.
pub fn no_schedule(key: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: NO_SCHEDULE.into(),
        ..Taint::default()
    }
}

/// Whether `key` is one of the NoSchedule taints the node lifecycle controller owns.
fn lifecycle_owned(t: &Taint) -> bool {
    t.effect == NO_SCHEDULE
        && (t.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key))
}

/// The NoSchedule taints a node in this state carries: one per adverse condition, the
/// not-ready one also while no Ready condition was reported yet (a registering node),
/// and the unschedulable one while cordoned.
pub fn lifecycle_taints(node: &Node) -> Vec<Taint> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let mut out: Vec<Taint> = CONDITION_TAINTS
        .iter()
        .filter(|(ty, st, _)| conditions.iter().any(|c| c.type_ == *ty && c.status == *st))
        .map(|(_, _, key)| no_schedule(key))
        .collect();
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        out.push(no_schedule(NOT_READY));
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push(no_schedule(UNSCHEDULABLE));
    }
    out
}

/// The node's taints with the lifecycle-owned ones brought in line with its state, or
/// `None` when they already are. Other taints (set by users or other controllers) stay
/// in place and in order.
pub fn reconciled_taints(node: &Node) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = lifecycle_taints(node);
    let same_key = |a: &Taint, b: &Taint| a.key == b.key && a.effect == b.effect;
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !lifecycle_owned(t) || wanted.iter().any(|w| same_key(w, t)))
        .cloned()
        .collect();
    for w in &wanted {
        if !out.iter().any(|t| same_key(t, w)) {
            out.push(w.clone());
        }
    }
    (out != current).then_some(out)
}

/// Whether `toleration` tolerates `taint` (the scheduler's matching rules: an empty
/// effect matches every effect, `Exists` without a key matches every key, `Equal`, the
/// default operator, also needs the values to match).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Whether the scheduler may place a pod with `tolerations` on `node`: every NoSchedule
/// and NoExecute taint is tolerated, and a cordoned node only takes pods that tolerate
/// the unschedulable taint (even before the controller has set it).
pub fn fits(tolerations: &[Toleration], node: &Node) -> bool {
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if cordoned && !tolerated(tolerations, &no_schedule(UNSCHEDULABLE)) {
        return false;
    }
    taints(node)
        .iter()
        .filter(|t| t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE)
        .all(|t| tolerated(tolerations, t))
}

/// Whether a pod with `tolerations` already on `node` may keep running there: only
/// NoExecute taints evict.
pub fn may_stay(tolerations: &[Toleration], node: &Node) -> bool {
    taints(node)
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .all(|t| tolerated(tolerations, t))
}

/// `tolerations` plus those the DaemonSet controller adds to every pod it makes: it
/// survives not-ready and unreachable nodes (NoExecute) and goes on nodes under
/// resource pressure and cordoned ones (NoSchedule); host-network pods also on nodes
/// whose network is unavailable.
pub fn with_daemonset_tolerations(
    mut tolerations: Vec<Toleration>,
    host_network: bool,
) -> Vec<Toleration> {
    let mut wanted = vec![
        (NOT_READY, NO_EXECUTE),
        (UNREACHABLE, NO_EXECUTE),
        ("node.kubernetes.io/disk-pressure", NO_SCHEDULE),
        ("node.kubernetes.io/memory-pressure", NO_SCHEDULE),
        ("node.kubernetes.io/pid-pressure", NO_SCHEDULE),
        (UNSCHEDULABLE, NO_SCHEDULE),
    ];
    if host_network {
        wanted.push(("node.kubernetes.io/network-unavailable", NO_SCHEDULE));
    }
    for (key, effect) in wanted {
        tolerations
            .retain(|t| !(t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)));
        tolerations.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Toleration::default()
        });
    }
    tolerations
}

#[cfg(test)]
mod tests;
