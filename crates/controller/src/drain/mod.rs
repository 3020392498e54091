//! Draining a cordoned node: pure assessment ([`assess`]) and the step that acts on it
//! ([`step`]): evict through the Eviction API so PodDisruptionBudgets are honoured,
//! name the pod and budget that block, and apply the timeout policy.

mod assess;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use osroll_api::DrainTimeoutPolicy;

pub use assess::{
    Assessment, MIRROR_ANNOTATION, PodAction, assess, classify, matching_pdbs, pod_key,
};

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
            let mut blocked: Vec<(&String, String)> = Vec::new();
            for key in &evict {
                let (ns, name) = split_key(key);
                match cluster.evict(ns, name, policy.grace_period_seconds).await {
                    Ok(()) | Err(ApiError::NotFound(_)) => {}
                    Err(ApiError::TooManyRequests(msg)) => blocked.push((key, msg)),
                    Err(e) => blocked.push((key, format!("eviction failed: {e}"))),
                }
            }
            let blocked_msg = match blocked.first() {
                None => None,
                Some((key, why)) => {
                    Some(describe_block(cluster, &pods, key, why, blocked.len()).await)
                }
            };
            Ok(DrainStatus::Draining {
                remaining: evict.len() + waiting.len(),
                blocked: blocked_msg,
            })
        }
        Assessment::TimedOut { remaining } => {
            let what = format!(
                "drain of node {node} timed out after {}s with {} pod(s) left: {}",
                policy.timeout.as_secs(),
                remaining.len(),
                crate::planner::name_list(remaining.iter().map(String::as_str))
            );
            match policy.on_timeout {
                DrainTimeoutPolicy::Force => {
                    let grace = policy.grace_period_seconds.or(Some(0));
                    for key in &remaining {
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
                p => Ok(DrainStatus::GaveUp {
                    policy: p,
                    message: what,
                }),
            }
        }
    }
}

/// Name the pod and the budget(s) that refused its eviction.
async fn describe_block<C: Cluster>(
    cluster: &C,
    pods: &[Pod],
    key: &str,
    why: &str,
    count: usize,
) -> String {
    let (ns, _) = split_key(key);
    let pod = pods.iter().find(|p| pod_key(p) == key);
    let budgets = match (pod, cluster.pdbs(ns).await) {
        (Some(p), Ok(pdbs)) => matching_pdbs(p, &pdbs),
        _ => Vec::new(),
    };
    let more = if count > 1 {
        format!(" (and {} more pod(s))", count - 1)
    } else {
        String::new()
    };
    match budgets.as_slice() {
        [] => format!("evicting pod {key} was refused{more}: {why}"),
        b => format!(
            "evicting pod {key} is blocked by PodDisruptionBudget {}{more}",
            b.join(", ")
        ),
    }
}
