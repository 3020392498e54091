//! The seed's example objects (group renamed) survive a trip through the Rust types.

use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase};
use serde_json::Value;

/// Drop `null` members: Kubernetes omits unset fields, and `startedAt: null` means the
/// same as an absent `startedAt`.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(yaml: &str) -> (T, Value, Value) {
    let original: Value = serde_yaml::from_str(yaml).unwrap();
    let typed: T = serde_yaml::from_str(yaml).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    (typed, without_nulls(original), back)
}

#[test]
fn seed_osupgrade_roundtrips() {
    let (u, original, back): (OSUpgrade, _, _) =
        roundtrip(include_str!("fixtures/seed-osupgrade.yaml"));
    assert_eq!(original, back);
    assert_eq!(u.spec.version, "v1.35.3");
    assert!(
        u.spec.node_selector.is_some(),
        "an empty selector is kept, not dropped"
    );
    assert!(
        u.spec
            .catalog
            .inline
            .as_deref()
            .unwrap()
            .contains("stable: v1.35.1")
    );
}

#[test]
fn seed_progress_roundtrips() {
    let (p, original, back): (OSUpgradeProgress, _, _) =
        roundtrip(include_str!("fixtures/seed-progress.yaml"));
    assert_eq!(original, back);
    let s = p.status.unwrap();
    assert_eq!(s.phase, Some(ProgressPhase::Downloading));
    assert_eq!(s.inactive_partition.as_deref(), Some("B"));
    assert_eq!(s.failure_reason.as_deref(), Some(""));
    assert_eq!(p.spec.source_ref.unwrap().name, "my-upgrade-2");
}

#[test]
fn full_objects_roundtrip() {
    // Every field set. Booleans are set to true: like Go's `omitempty`, a false boolean
    // is written as absent, which reads back as false.
    let yaml = r#"
apiVersion: osroll.io/v1alpha1
kind: OSUpgrade
metadata: {name: full}
spec:
  version: stable
  nodeSelector: {matchLabels: {pool: edge}}
  catalog: {configMap: images-cm}
  allowDowngrade: true
  strategy:
    maxUnavailable: 20%
    maxStaging: 5
    canary: {count: 1, soakSeconds: 300, requireApproval: true, approved: true}
    maintenanceWindows: [{days: [Sat, Sun], start: "22:00", end: "04:00", timeZone: Europe/Berlin}]
    maxFailures: 2
    paused: true
  drain: {timeoutSeconds: 120, onTimeout: Skip, gracePeriodSeconds: 30, podSelector: {matchLabels: {a: b}}}
  restartOnLiveUpdate: {matchLabels: {k8s-app: calico-node}}
  osVersionManagement: {osVersion: {imageUri: "oci://reg/img:v1.2.3", debug: false}}
status:
  observedGeneration: 3
  resolvedVersion: v1.35.1
  phase: Progressing
  reason: Rolling
  message: 2 of 5 nodes done
  catalogDigest: sha256:0000000000000000000000000000000000000000000000000000000000000000
  conditions: [{type: Ready, status: "False", reason: Rolling, message: m, lastTransitionTime: "2026-01-01T00:00:00Z", observedGeneration: 3}]
  nodes: {total: 5, pending: 1, staging: 1, staged: 0, updating: 1, completed: 2, failed: 0, rolledBack: 0, skipped: 0}
"#;
    let (_u, original, back): (OSUpgrade, _, _) = roundtrip(yaml);
    assert_eq!(original, back);
}
