//! The planner's snapshot built from plain Node and OSUpgradeProgress objects.

use super::*;
use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use osroll_api::{OSUpgradeProgressSpec, OSUpgradeProgressStatus, SourceRef, labels};

fn node(name: &str, extra: &[(&str, &str)], ready: bool, annotations: &[(&str, &str)]) -> Node {
    let mut l: BTreeMap<String, String> =
        [(labels::MANAGED.to_string(), "true".to_string())].into();
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            unschedulable: Some(!annotations.is_empty()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn progress(
    source: &str,
    node: &str,
    phase: Option<ProgressPhase>,
    retries: u32,
) -> OSUpgradeProgress {
    let mut p = OSUpgradeProgress::new(
        &osroll_api::progress_name(source, node),
        OSUpgradeProgressSpec {
            source_ref: Some(SourceRef {
                name: source.into(),
            }),
            node_name: node.into(),
            ..Default::default()
        },
    );
    p.status = Some(OSUpgradeProgressStatus {
        phase,
        retry_count: retries,
        ..Default::default()
    });
    p
}

fn settings() -> Settings {
    Settings {
        controller_name: "osroll".into(),
        own_node: Some("b".into()),
        node_soak: Duration::ZERO,
        drain_poll: Duration::from_secs(1),
    }
}

#[test]
fn builds_node_facts() {
    let a = node(
        "a",
        &[(CONTROL_PLANE_LABELS[0], "")],
        true,
        &[(labels::CORDONED_BY, "osroll/up")],
    );
    let b = node("b", &[], false, &[(labels::CORDONED_BY, "osroll/other")]);
    let c = node("c", &[], true, &[]);
    let mut unmanaged = node("d", &[], true, &[]);
    unmanaged.metadata.labels = None;
    let pa = progress("up", "a", Some(ProgressPhase::Staged), 1);
    let old = progress("older", "a", Some(ProgressPhase::RolledBack), 0);
    let busy = progress("older", "c", Some(ProgressPhase::Downloading), 0);
    let o = snapshot(
        "up",
        Strategy::default(),
        &NodeSelection::from_spec(None).unwrap(),
        &[&a, &b, &c, &unmanaged],
        &[&pa, &old, &busy],
        &settings(),
    );
    assert_eq!(o.nodes.len(), 3, "the unmanaged node is not selected");
    let (na, nb, nc) = (&o.nodes[0], &o.nodes[1], &o.nodes[2]);
    assert!(na.cordoned_by_us && na.control_plane && na.ready);
    assert_eq!(
        na.past_failures, 2,
        "one retry plus one rolled-back earlier upgrade"
    );
    assert_eq!(na.progress.as_ref().unwrap().phase, ProgressPhase::Staged);
    assert!(
        nb.unschedulable && !nb.cordoned_by_us && !nb.ready,
        "cordoned by another upgrade is not ours"
    );
    assert_eq!(nc.claimed_by.as_deref(), Some("older"));
    assert_eq!(
        na.claimed_by, None,
        "a finished progress of another upgrade claims nothing"
    );
    assert_eq!(o.own_node.as_deref(), Some("b"));
}

#[test]
fn progress_status_of_an_earlier_attempt_is_ignored() {
    let mut p = progress("up", "a", Some(ProgressPhase::RolledBack), 0);
    p.spec.retry_nonce = Some("2".into());
    p.status.as_mut().unwrap().observed_retry_nonce = Some("1".into());
    p.metadata.annotations =
        Some([(marks::REPORTED.to_string(), "RolledBack@1".to_string())].into());
    let o = progress_obs(&p);
    assert_eq!(o.phase, ProgressPhase::Pending);
    assert_eq!(o.reported, None);
    p.status.as_mut().unwrap().observed_retry_nonce = Some("2".into());
    assert_eq!(progress_obs(&p).phase, ProgressPhase::RolledBack);
}

#[test]
fn nodes_with_our_progress_stay_in_the_rollout_after_deselection() {
    let mut a = node("a", &[], true, &[]);
    a.metadata.labels = None;
    let pa = progress("up", "a", None, 0);
    let o = snapshot(
        "up",
        Strategy::default(),
        &NodeSelection::default(),
        &[&a],
        &[&pa],
        &settings(),
    );
    assert_eq!(o.nodes.len(), 1);
    assert_eq!(
        o.nodes[0].progress.as_ref().unwrap().phase,
        ProgressPhase::Pending
    );
}
