use serde_json::json;

use super::*;

fn node(spec: serde_json::Value, conditions: serde_json::Value) -> Node {
    serde_json::from_value(
        json!({"metadata": {"name": "n"}, "spec": spec, "status": {"conditions": conditions}}),
    )
    .unwrap()
}

fn toleration(v: serde_json::Value) -> Toleration {
    serde_json::from_value(v).unwrap()
}

fn keys(t: &[Taint]) -> Vec<&str> {
    t.iter().map(|t| t.key.as_str()).collect()
}

#[test]
fn lifecycle_taints_follow_ready_and_cordon() {
    let registering = node(json!({}), json!([]));
    assert_eq!(keys(&lifecycle_taints(&registering)), [NOT_READY]);
    let ready = node(json!({}), json!([{"type": "Ready", "status": "True"}]));
    assert!(lifecycle_taints(&ready).is_empty());
    let down = node(
        json!({"unschedulable": true}),
        json!([{"type": "Ready", "status": "False"}]),
    );
    assert_eq!(keys(&lifecycle_taints(&down)), [NOT_READY, UNSCHEDULABLE]);
    let lost = node(json!({}), json!([{"type": "Ready", "status": "Unknown"}]));
    assert_eq!(keys(&lifecycle_taints(&lost)), [UNREACHABLE]);
}

#[test]
fn reconciling_keeps_foreign_taints_and_converges() {
    let n = node(
        json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                          {"key": NOT_READY, "effect": "NoSchedule"},
                          {"key": NOT_READY, "effect": "NoExecute"}]}),
        json!([{"type": "Ready", "status": "True"}]),
    );
    let fixed = reconciled_taints(&n).expect("the not-ready NoSchedule taint goes");
    assert_eq!(keys(&fixed), ["dedicated", NOT_READY]);
    assert_eq!(
        fixed[1].effect, NO_EXECUTE,
        "NoExecute taints are not owned"
    );
    let mut again = n.clone();
    again.spec.as_mut().unwrap().taints = Some(fixed);
    assert_eq!(reconciled_taints(&again), None);
}

#[test]
fn toleration_matching() {
    let t = no_schedule(NOT_READY);
    assert!(tolerates(&toleration(json!({"operator": "Exists"})), &t));
    assert!(tolerates(
        &toleration(json!({"key": NOT_READY, "operator": "Exists"})),
        &t
    ));
    assert!(!tolerates(
        &toleration(json!({"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"})),
        &t
    ));
    let gpu = Taint {
        key: "dedicated".into(),
        value: Some("gpu".into()),
        effect: NO_SCHEDULE.into(),
        ..Taint::default()
    };
    assert!(tolerates(
        &toleration(json!({"key": "dedicated", "value": "gpu"})),
        &gpu
    ));
    assert!(!tolerates(
        &toleration(json!({"key": "dedicated", "value": "cpu"})),
        &gpu
    ));
}

#[test]
fn daemonset_pods_fit_cordoned_but_not_unready_nodes() {
    let ds = with_daemonset_tolerations(vec![], false);
    let cordoned = node(
        json!({"unschedulable": true, "taints": [{"key": UNSCHEDULABLE, "effect": "NoSchedule"}]}),
        json!([{"type": "Ready", "status": "True"}]),
    );
    assert!(fits(&ds, &cordoned));
    assert!(!fits(&[], &cordoned));
    let not_ready = node(
        json!({"taints": [{"key": NOT_READY, "effect": "NoSchedule"}]}),
        json!([]),
    );
    assert!(!fits(&ds, &not_ready), "as on a real cluster");
    assert!(may_stay(&[], &not_ready), "NoSchedule evicts nothing");
    let everything = [toleration(json!({"operator": "Exists"}))];
    assert!(fits(&everything, &not_ready));
    assert_eq!(with_daemonset_tolerations(ds.clone(), false), ds);
}
