//! When to reconcile: only on changes the planner can see, and at a bounded rate.
//!
//! Every Node and OSUpgradeProgress change could matter, but most do not: a kubelet
//! refreshes its Node's heartbeat times every few seconds and an agent reports bytes
//! downloaded. [`Relevant`] remembers, per object, a digest of the fields the planner
//! reads and lets an event through only when it changed. [`throttle`] then turns the
//! remaining events into reconcile requests with a leading edge (the first change is
//! handled at once) and at most one more per interval, so a burst of a thousand node
//! updates costs a few reconciles, and a steady trickle is never delayed indefinitely
//! (kube-runtime's trailing debounce would keep postponing it).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use osroll_api::OSUpgradeProgress;

/// Digest of what the planner reads from a Node.
pub fn node_digest(n: &Node) -> u64 {
    let mut h = DefaultHasher::new();
    n.metadata.labels.hash(&mut h);
    n.metadata.annotations.hash(&mut h);
    n.metadata.deletion_timestamp.is_some().hash(&mut h);
    n.spec.as_ref().and_then(|s| s.unschedulable).hash(&mut h);
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status.clone(),
                c.last_transition_time.as_ref().map(|t| t.0.as_second()),
            )
        });
    ready.hash(&mut h);
    // A reboot (the Completed check compares boot IDs).
    crate::verify::boot_id(n).hash(&mut h);
    h.finish()
}

/// Digest of what the planner reads from a progress object (not the byte counters).
pub fn progress_digest(p: &OSUpgradeProgress) -> u64 {
    let mut h = DefaultHasher::new();
    p.metadata.annotations.hash(&mut h);
    p.metadata.deletion_timestamp.is_some().hash(&mut h);
    serde_json::to_string(&p.spec)
        .unwrap_or_default()
        .hash(&mut h);
    if let Some(s) = &p.status {
        (
            s.phase,
            &s.completed_at,
            s.reboot_required,
            &s.observed_retry_nonce,
            s.retry_count,
        )
            .hash(&mut h);
        (&s.failure_reason, &s.current_version).hash(&mut h);
    }
    h.finish()
}

/// Per-object digests seen so far.
#[derive(Default)]
pub struct Relevant {
    seen: HashMap<String, u64>,
}

impl Relevant {
    /// Whether object `key` with `digest` differs from what was seen last.
    pub fn changed(&mut self, key: &str, digest: u64) -> bool {
        self.seen.insert(key.to_string(), digest) != Some(digest)
    }

    /// Forget a deleted object (its deletion is itself a change).
    pub fn deleted(&mut self, key: &str) -> bool {
        self.seen.remove(key);
        true
    }
}

/// Reconcile requests from `events`: the first at once, then at most one per `every`
/// while events keep coming. Ends when `events` ends.
pub fn throttle(
    events: impl Stream<Item = ()> + Send + 'static,
    every: Duration,
) -> impl Stream<Item = ()> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        'idle: while events.next().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
            loop {
                let window = tokio::time::sleep(every);
                tokio::pin!(window);
                let mut pending = false;
                loop {
                    tokio::select! {
                        ev = events.next() => match ev {
                            Some(()) => pending = true,
                            None => break 'idle,
                        },
                        _ = &mut window => break,
                    }
                }
                if !pending {
                    continue 'idle;
                }
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn node(ready: &str, heartbeat: i64) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n".into());
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                last_heartbeat_time: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(heartbeat).unwrap(),
                )),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    #[test]
    fn heartbeats_are_not_changes_but_readiness_and_cordons_are() {
        let mut r = Relevant::default();
        assert!(r.changed("n", node_digest(&node("True", 1))));
        assert!(
            !r.changed("n", node_digest(&node("True", 2))),
            "a heartbeat alone"
        );
        assert!(r.changed("n", node_digest(&node("False", 3))));
        let mut cordoned = node("False", 4);
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert!(r.changed("n", node_digest(&cordoned)));
        assert!(r.deleted("n"));
        assert!(
            r.changed("n", node_digest(&cordoned)),
            "seen anew after deletion"
        );
    }

    #[test]
    fn byte_counters_are_not_changes_but_phases_are() {
        let mut p = OSUpgradeProgress::new("p", Default::default());
        p.status = Some(osroll_api::OSUpgradeProgressStatus {
            phase: Some(osroll_api::ProgressPhase::Downloading),
            bytes_done: Some(1),
            ..Default::default()
        });
        let mut r = Relevant::default();
        assert!(r.changed("p", progress_digest(&p)));
        p.status.as_mut().unwrap().bytes_done = Some(2);
        assert!(!r.changed("p", progress_digest(&p)));
        p.status.as_mut().unwrap().phase = Some(osroll_api::ProgressPhase::Staged);
        assert!(r.changed("p", progress_digest(&p)));
        p.spec.reboot_approved = true;
        assert!(r.changed("p", progress_digest(&p)));
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_has_a_leading_edge_and_a_bounded_rate() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<()>(100);
        let mut out = Box::pin(throttle(rx, Duration::from_millis(100)));
        tx.send(()).await.unwrap();
        let t0 = tokio::time::Instant::now();
        out.next().await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "the first event passes at once"
        );
        for _ in 0..50 {
            tx.send(()).await.unwrap();
        }
        out.next().await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(100),
            "a burst becomes one more, one interval later"
        );
        // Quiet for a while: the next event passes at once again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(()).await.unwrap();
        let t1 = tokio::time::Instant::now();
        out.next().await.unwrap();
        assert_eq!(t1.elapsed(), Duration::ZERO);
        drop(tx);
        assert!(out.next().await.is_none(), "ends with its input");
    }
}
