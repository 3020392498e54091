//! Field ownership: managedFields leaves, server-side apply merges and conflicts, and
//! the ownership updates of ordinary writes.

use super::*;

fn w<'a>(m: &'a str) -> Writer<'a> {
    Writer {
        manager: m,
        api_version: "v1",
        now: "2024-01-01T00:00:00Z",
        scope: Scope::All,
    }
}

#[test]
fn leaves_follow_list_types_and_round_trip_fieldsv1() {
    let o = json!({"metadata": {"name": "x", "labels": {"a": "1"}, "finalizers": ["f"]},
        "spec": {"containers": [{"name": "c", "image": "i"}], "args": ["x"]}});
    let l = leaves(&o, Shape::builtin(), Scope::All);
    let has = |s: &str| l.iter().any(|p| show_path(p) == s);
    assert!(has(".metadata.labels.a"));
    assert!(has(".metadata.finalizers[=\"f\"]"));
    assert!(has(".spec.containers[{\"name\":\"c\"}]"));
    assert!(has(".spec.containers[{\"name\":\"c\"}].image"));
    assert!(has(".spec.args"), "unknown lists are atomic");
    assert!(!has(".metadata.name"));
    let mut obj = o.clone();
    let e = Entry {
        manager: "m".into(),
        operation: "Apply".into(),
        subresource: String::new(),
        api_version: "v1".into(),
        time: "t".into(),
        fields: l.clone(),
    };
    store_entries(&mut obj, &[e]);
    let fv1 = &obj["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(
        fv1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]
            .get(".")
            .is_some(),
        "{fv1}"
    );
    assert_eq!(entries(&obj)[0].fields, l);
}

#[test]
fn apply_merges_removes_and_detects_conflicts() {
    let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let first = apply(
        &base,
        &json!({"data": {"a": "1", "b": "2"}}),
        Shape::builtin(),
        &w("alice"),
        false,
    )
    .unwrap();
    assert_eq!(first["data"], json!({"a": "1", "b": "2"}));
    // alice stops applying b: it is removed.
    let second = apply(
        &first,
        &json!({"data": {"a": "1"}}),
        Shape::builtin(),
        &w("alice"),
        false,
    )
    .unwrap();
    assert_eq!(second["data"], json!({"a": "1"}));
    // bob changes a: conflict unless forced.
    let err = apply(
        &second,
        &json!({"data": {"a": "9"}}),
        Shape::builtin(),
        &w("bob"),
        false,
    )
    .unwrap_err();
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains("conflict with \"alice\": .data.a"),
        "{}",
        err.message
    );
    // bob setting the same value shares ownership without conflict.
    let shared = apply(
        &second,
        &json!({"data": {"a": "1", "c": "3"}}),
        Shape::builtin(),
        &w("bob"),
        false,
    )
    .unwrap();
    assert_eq!(shared["data"], json!({"a": "1", "c": "3"}));
    // alice drops a, but bob still owns it: it stays.
    let kept = apply(
        &shared,
        &json!({"data": {}}),
        Shape::builtin(),
        &w("alice"),
        false,
    )
    .unwrap();
    assert_eq!(kept["data"]["a"], "1");
    // forced: bob takes a over.
    let forced = apply(
        &second,
        &json!({"data": {"a": "9"}}),
        Shape::builtin(),
        &w("bob"),
        true,
    )
    .unwrap();
    assert_eq!(forced["data"]["a"], "9");
    let es = entries(&forced);
    assert!(
        es.iter().all(|e| e.manager != "alice"),
        "alice lost her only field: {es:?}"
    );
}

#[test]
fn updates_take_ownership_of_changed_fields() {
    let base = json!({"metadata": {"name": "c"}});
    let owned = apply(
        &base,
        &json!({"data": {"a": "1"}}),
        Shape::builtin(),
        &w("alice"),
        false,
    )
    .unwrap();
    let mut updated = owned.clone();
    updated["data"]["a"] = json!("2");
    record_update(
        Some(&owned),
        &mut updated,
        Shape::builtin(),
        &w("kubectl-edit"),
    );
    let es = entries(&updated);
    assert!(
        es.iter()
            .any(|e| e.manager == "kubectl-edit" && e.operation == "Update")
    );
    assert!(!es.iter().any(|e| e.manager == "alice"));
    let err = apply(
        &updated,
        &json!({"data": {"a": "1"}}),
        Shape::builtin(),
        &w("alice"),
        false,
    )
    .unwrap_err();
    assert!(err.message.contains("kubectl-edit"));
}

#[test]
fn custom_map_lists_merge_by_key_and_status_scope() {
    let schema = json!({"properties": {"status": {"properties": {"conditions": {"type": "array",
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object"}}}}}});
    let shape = Shape::custom(Some(&schema));
    let live = json!({"metadata": {"name": "x"}, "spec": {"a": 1}, "status": {"conditions": [{"type": "A", "status": "True"}]}});
    let ws = Writer {
        manager: "ctl",
        api_version: "v1",
        now: "t",
        scope: Scope::Status,
    };
    let out = apply(
        &live,
        &json!({"spec": {"a": 2}, "status": {"conditions": [{"type": "B", "status": "False"}]}}),
        shape,
        &ws,
        true,
    )
    .unwrap();
    assert_eq!(out["spec"]["a"], 1, "status scope ignores spec");
    assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
    assert_eq!(entries(&out)[0].subresource, "status");
}
