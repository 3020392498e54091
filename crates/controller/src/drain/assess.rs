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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference, Time,
    };

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("apps".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn daemonset_mirror_finished_and_unselected_pods_are_skipped() {
        let mut ds = pod("ds", &[]);
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        let mut mirror = pod("static", &[]);
        mirror.metadata.annotations =
            Some([(MIRROR_ANNOTATION.to_string(), "x".to_string())].into());
        let mut done = pod("job", &[]);
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let mut going = pod("going", &[]);
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let web = pod("web", &[("app", "web")]);
        assert_eq!(classify(&ds, None), PodAction::SkipDaemonSet);
        assert_eq!(classify(&mirror, None), PodAction::SkipMirror);
        assert_eq!(classify(&done, None), PodAction::SkipFinished);
        assert_eq!(classify(&going, None), PodAction::Wait);
        assert_eq!(classify(&web, None), PodAction::Evict);
        let only_db = Selector::from_label_selector(
            &LabelSelector {
                match_labels: Some([("app".to_string(), "db".to_string())].into()),
                ..Default::default()
            },
            "s",
        )
        .unwrap();
        assert_eq!(classify(&web, Some(&only_db)), PodAction::SkipUnselected);

        let policy = DrainPolicy {
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let pods = [ds, mirror, done, going, web];
        assert_eq!(
            assess(&pods, &policy, t(0), t(10)),
            Assessment::InProgress {
                evict: vec!["apps/web".into()],
                waiting: vec!["apps/going".into()]
            }
        );
        assert_eq!(
            assess(&pods, &policy, t(0), t(60)),
            Assessment::TimedOut {
                remaining: vec!["apps/web".into(), "apps/going".into()]
            }
        );
        assert_eq!(
            assess(&pods[..3], &policy, t(0), t(1000)),
            Assessment::Drained,
            "skipped pods never block"
        );
    }

    #[test]
    fn pdbs_are_matched_by_namespace_and_selector() {
        let pdb = |ns: &str, name: &str, sel: Option<(&str, &str)>| PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: sel.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        };
        let pdbs = [
            pdb("apps", "web-pdb", Some(("app", "web"))),
            pdb("apps", "db-pdb", Some(("app", "db"))),
            pdb("other", "web-pdb", Some(("app", "web"))),
            pdb("apps", "all", None),
        ];
        assert_eq!(
            matching_pdbs(&pod("web-1", &[("app", "web")]), &pdbs),
            ["apps/web-pdb", "apps/all"]
        );
    }

    #[test]
    fn budgets_are_used_up_as_pods_are_let_through() {
        use k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus;
        let pdb = |name: &str, app: &str, allowed: Option<i32>| PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("apps".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), app.to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: allowed.map(|n| PodDisruptionBudgetStatus {
                disruptions_allowed: n,
                ..Default::default()
            }),
        };
        let pods = [
            pod("web-1", &[("app", "web")]),
            pod("web-2", &[("app", "web")]),
            pod("db-1", &[("app", "db")]),
            pod("x", &[]),
        ];
        let keys: Vec<String> = pods.iter().map(pod_key).collect();
        let pdbs = [pdb("web", "web", Some(1)), pdb("db", "db", Some(0))];
        let (go, blocked) = split_by_budget(&keys, &pods, &pdbs);
        assert_eq!(go, ["apps/web-1", "apps/x"]);
        assert_eq!(
            blocked,
            [
                ("apps/web-2".to_string(), "apps/web".to_string()),
                ("apps/db-1".to_string(), "apps/db".to_string())
            ]
        );
        let (go, blocked) = split_by_budget(&keys, &pods, &[pdb("web", "web", None)]);
        assert_eq!(
            go.len(),
            4,
            "a budget without status is left to the Eviction API"
        );
        assert!(blocked.is_empty());
    }
}
