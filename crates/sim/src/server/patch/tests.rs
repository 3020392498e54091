//! The classic patch types (merge, JSON, strategic merge) and content-type parsing.

use super::*;
use serde_json::json;

#[test]
fn merge_patch_sets_and_removes() {
    let t = json!({"spec": {"a": 1, "b": 2}});
    let out = apply_classic(&t, PatchType::Merge, br#"{"spec": {"a": null, "c": 3}}"#).unwrap();
    assert_eq!(out, json!({"spec": {"b": 2, "c": 3}}));
}

#[test]
fn json_patch_ops_and_failed_test() {
    let t = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = apply_classic(
        &t,
        PatchType::Json,
        br#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
    )
    .unwrap();
    assert_eq!(out, json!({"metadata": {"finalizers": ["b"]}}));
    let e = apply_classic(
        &t,
        PatchType::Json,
        br#"[{"op":"test","path":"/metadata/finalizers/0","value":"z"}]"#,
    );
    assert_eq!(e.unwrap_err().code, 422);
}

#[test]
fn strategic_merges_keyed_lists_and_directives() {
    let mut t = json!({
        "metadata": {"finalizers": ["x"]},
        "spec": {"unschedulable": false, "taints": [{"key": "a", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "v1", "env": [{"name": "A", "value": "1"}]}, {"name": "side", "image": "s"}],
            "tolerations": [{"key": "t1"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}
    });
    let p = json!({
        "metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]},
        "spec": {"unschedulable": true, "taints": [{"key": "b", "effect": "NoExecute"}],
            "containers": [{"name": "app", "image": "v2", "env": [{"name": "B", "value": "2"}]}, {"name": "side", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "app"}],
            "tolerations": [{"key": "t2"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}
    });
    strategic_merge(&mut t, &p).unwrap();
    assert_eq!(t["metadata"]["finalizers"], json!(["y"]));
    assert_eq!(t["spec"]["unschedulable"], true);
    assert_eq!(t["spec"]["taints"].as_array().unwrap().len(), 2);
    assert_eq!(
        t["spec"]["containers"],
        json!([{"name": "app", "image": "v2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}])
    );
    assert_eq!(
        t["spec"]["tolerations"],
        json!([{"key": "t2"}]),
        "lists without strategy are replaced"
    );
    assert_eq!(
        t["status"]["conditions"][0],
        json!({"type": "Ready", "status": "False"})
    );
    assert_eq!(t["status"]["conditions"][1]["type"], "DiskPressure");
}

#[test]
fn strategic_replace_and_retain_keys() {
    let mut t = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "sel": {"a": 1}}});
    let p = json!({"spec": {"strategy": {"type": "Recreate", "$retainKeys": ["type"]}, "sel": {"$patch": "replace", "b": 2}}});
    strategic_merge(&mut t, &p).unwrap();
    assert_eq!(t["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(t["spec"]["sel"], json!({"b": 2}));
}

#[test]
fn content_types() {
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8").unwrap(),
        PatchType::Apply
    );
    assert_eq!(
        PatchType::from_content_type("application/json")
            .unwrap_err()
            .code,
        415
    );
}
