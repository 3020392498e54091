//! Draining a cordoned node: pure assessment ([`assess`]) and the step that acts on it
//! ([`step`]): evict through the Eviction API so PodDisruptionBudgets are honoured,
//! name the pod and budget that block, and apply the timeout policy.

mod assess;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use osroll_api::DrainTimeoutPolicy;

pub use assess::{
    Assessment, MIRROR_ANNOTATION, PodAction, assess, classify, matching_pdbs, pod_key,
    split_by_budget,
};

use crate::chain::Chain;
use crate::cluster::{ApiError, Cluster};
use crate::planner::DrainPolicy;

/// Where one drain step left the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainStatus {
    /// No pod that must leave is left.
    Drained,
    /// Pods are still leaving; `blocked` explains what holds the drain, if anything.
    Draining {
        /// Pods still present that must leave.
        remaining: usize,
        /// `pod apps/web-1 is blocked by PodDisruptionBudget apps/web`, when evictions
        /// were refused.
        blocked: Option<String>,
    },
    /// The timeout passed under policy Fail or Skip: the caller gives up on the node.
    GaveUp {
        /// The policy that applied.
        policy: DrainTimeoutPolicy,
        /// What was still there.
        message: String,
    },
    /// The timeout passed under policy Force: remaining pods were deleted.
    Forced {
        /// What was deleted.
        message: String,
    },
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("default", key))
}

/// Run one drain step on `node`, whose drain started at `started`.
pub async fn step<C: Cluster>(
    cluster: &C,
    node: &str,
    policy: &DrainPolicy,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DrainStatus, ApiError> {
    let pods = cluster.pods_on_node(node).await?;
    match assess(&pods, policy, started, now) {
        Assessment::Drained => Ok(DrainStatus::Drained),
        Assessment::InProgress { evict, waiting } => {
            let blocked = evict_pods(cluster, policy, &pods, &evict).await?;
            Ok(DrainStatus::Draining {
                remaining: evict.len() + waiting.len(),
                blocked,
            })
        }
        Assessment::TimedOut { remaining } => time_out(cluster, node, policy, &remaining).await,
    }
}

/// Evict `evict` (pod keys) through the Eviction API; returns what blocks the drain, if
/// any eviction was held back by a budget or refused.
async fn evict_pods<C: Cluster>(
    cluster: &C,
    policy: &DrainPolicy,
    pods: &[Pod],
    evict: &[String],
) -> Result<Option<String>, ApiError> {
    let mut namespaces: Vec<&str> = evict.iter().map(|k| split_key(k).0).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut pdbs = Vec::new();
    for ns in namespaces {
        pdbs.extend(cluster.pdbs(ns).await?);
    }
    // Budgets that allow no disruption are not even tried: the Eviction API would
    // refuse, and a retrying client would sit on the 429.
    let (go, mut blocked) = split_by_budget(evict, pods, &pdbs);
    let mut refused: Vec<(String, String)> = Vec::new();
    for key in &go {
        let (ns, name) = split_key(key);
        match cluster.evict(ns, name, policy.grace_period_seconds).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {}
            Err(ApiError::TooManyRequests(msg)) => {
                let budgets = pods
                    .iter()
                    .find(|p| pod_key(p) == *key)
                    .map(|p| matching_pdbs(p, &pdbs));
                match budgets.as_deref() {
                    Some([b, ..]) => blocked.push((key.clone(), b.clone())),
                    _ => refused.push((key.clone(), msg)),
                }
            }
            Err(e) => refused.push((key.clone(), format!("eviction failed: {}", Chain(&e)))),
        }
    }
    Ok(blocked_message(&blocked, &refused))
}

/// `evicting pod a/b is blocked by PodDisruptionBudget a/c (and 2 more pod(s))`: the
/// first pod held by a budget, else the first refused one.
fn blocked_message(blocked: &[(String, String)], refused: &[(String, String)]) -> Option<String> {
    let stuck = blocked.len() + refused.len();
    let more = if stuck > 1 {
        format!(" (and {} more pod(s))", stuck - 1)
    } else {
        String::new()
    };
    match (blocked.first(), refused.first()) {
        (Some((pod, pdb)), _) => Some(format!(
            "evicting pod {pod} is blocked by PodDisruptionBudget {pdb}{more}"
        )),
        (None, Some((pod, why))) => Some(format!("evicting pod {pod} was refused{more}: {why}")),
        (None, None) => None,
    }
}

/// The drain timed out with `remaining` pods: delete them under policy Force, or give up.
async fn time_out<C: Cluster>(
    cluster: &C,
    node: &str,
    policy: &DrainPolicy,
    remaining: &[String],
) -> Result<DrainStatus, ApiError> {
    let what = format!(
        "drain of node {node} timed out after {}s with {} pod(s) left: {}",
        policy.timeout.as_secs(),
        remaining.len(),
        crate::names::name_list(remaining.iter().map(String::as_str))
    );
    if policy.on_timeout != DrainTimeoutPolicy::Force {
        return Ok(DrainStatus::GaveUp {
            policy: policy.on_timeout,
            message: what,
        });
    }
    let grace = policy.grace_period_seconds.or(Some(0));
    for key in remaining {
        let (ns, name) = split_key(key);
        match cluster.delete_pod(ns, name, grace).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(DrainStatus::Forced {
        message: format!("{what}; deleted them without honouring budgets"),
    })
}
