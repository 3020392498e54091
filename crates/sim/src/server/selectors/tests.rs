//! Label and field selectors: the forms kubectl and kube-rs send, and matching.

use super::*;
use serde_json::json;

#[test]
fn label_selector_forms() {
    let l = json!({"app": "web", "tier": "front", "osroll.io/node": "n1"});
    let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
    assert!(m(""));
    assert!(m("app=web"));
    assert!(m("app==web,tier"));
    assert!(!m("app!=web"));
    assert!(m("app in (db, web),tier notin (back)"));
    assert!(!m("app notin (web)"));
    assert!(m("!missing"));
    assert!(!m("!app"));
    assert!(m("osroll.io/node=n1"));
    assert!(!m("osroll.io/node=n2"));
    assert!(!LabelSelector::parse("app=x").unwrap().matches(None));
    assert!(LabelSelector::parse("a in b").is_err());
}

#[test]
fn field_selector_paths() {
    let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
    let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
    assert!(m("metadata.name=p,metadata.namespace=ns"));
    assert!(m(
        "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed"
    ));
    assert!(!m("spec.nodeName=n2"));
    assert!(m("spec.missing="));
    assert_eq!(
        FieldSelector::parse("metadata.name==x")
            .unwrap()
            .pinned("metadata.name"),
        Some("x")
    );
}

#[test]
fn label_selector_objects() {
    let l = json!({"app": "web"});
    assert!(!label_selector_object_matches(None, Some(&l)));
    assert!(label_selector_object_matches(Some(&json!({})), Some(&l)));
    assert!(label_selector_object_matches(
        Some(&json!({"matchLabels": {"app": "web"}})),
        Some(&l)
    ));
    assert!(!label_selector_object_matches(
        Some(&json!({"matchLabels": {"app": "db"}})),
        Some(&l)
    ));
    let expr =
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]});
    assert!(label_selector_object_matches(Some(&expr), Some(&l)));
    let expr = json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]});
    assert!(!label_selector_object_matches(Some(&expr), Some(&l)));
}
