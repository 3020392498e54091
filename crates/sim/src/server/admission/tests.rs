//! The agents' policy exactly as `osroll create agent` prints it, evaluated here.

use osroll_api::labels::{MANAGED, OS_VERSION, SLOT};
use osroll_api::manifests::{AGENT_SA, agent_admission_policy};
use serde_json::{Value, json};

use super::*;

const NS: &str = "osroll-system";

fn shipped() -> (Vec<Arc<Value>>, Vec<Arc<Value>>) {
    let objs = agent_admission_policy(NS);
    let of = |kind: &str| {
        objs.iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .map(Arc::new)
            .collect::<Vec<_>>()
    };
    (
        of("ValidatingAdmissionPolicy"),
        of("ValidatingAdmissionPolicyBinding"),
    )
}

fn agent() -> String {
    format!("system:serviceaccount:{NS}:{AGENT_SA}")
}

fn node(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "spec": {"podCIDR": "10.0.0.0/24"}})
}

/// The agent of `me` updates Node `old` to `new`: the code of the denial, or 0.
fn node_update(me: Option<&str>, user: &str, old: &Value, new: &Value) -> u16 {
    let (p, b) = shipped();
    let a = Attributes {
        operation: "UPDATE",
        group: "",
        version: "v1",
        resource: "nodes",
        subresource: "",
        namespace: "",
        name: new["metadata"]["name"].as_str().unwrap(),
        user,
        node_name: me,
        object: Some(new),
        old_object: Some(old),
    };
    admit(&p, &b, &a).err().map_or(0, |e| e.code)
}

#[test]
fn an_agent_sets_only_its_three_labels_on_its_own_node() {
    let old = node(
        "n1",
        json!({"kubernetes.io/hostname": "n1", OS_VERSION: "1.0"}),
    );
    let ok = node(
        "n1",
        json!({"kubernetes.io/hostname": "n1", OS_VERSION: "2.0", MANAGED: "true", SLOT: "B"}),
    );
    let me = &agent();
    assert_eq!(node_update(Some("n1"), me, &old, &ok), 0);
    // Another node's version label.
    assert_eq!(node_update(Some("n2"), me, &old, &ok), 403);
    // Any other label on its own node, added, changed or removed.
    let mut pinned = old.clone();
    pinned["metadata"]["labels"]["node-restriction.kubernetes.io/x"] = json!("y");
    assert_eq!(node_update(Some("n1"), me, &old, &pinned), 403);
    let mut renamed = old.clone();
    renamed["metadata"]["labels"]["kubernetes.io/hostname"] = json!("other");
    assert_eq!(node_update(Some("n1"), me, &old, &renamed), 403);
    let mut removed = old.clone();
    removed["metadata"]["labels"] = json!({OS_VERSION: "1.0"});
    assert_eq!(node_update(Some("n1"), me, &old, &removed), 403);
    // Its spec (taints, unschedulable) or annotations.
    let mut tainted = old.clone();
    tainted["spec"]["unschedulable"] = json!(true);
    assert_eq!(node_update(Some("n1"), me, &old, &tainted), 403);
    let mut annotated = old.clone();
    annotated["metadata"]["annotations"] = json!({"a": "b"});
    assert_eq!(node_update(Some("n1"), me, &old, &annotated), 403);
    // A token not bound to a node is refused; other users are not the policy's business.
    assert_eq!(node_update(None, me, &old, &ok), 403);
    assert_eq!(node_update(None, "admin", &old, &pinned), 0);
}

#[test]
fn an_agent_writes_only_its_own_progress_status_and_deletes_only_its_own_pods() {
    let (p, b) = shipped();
    let me = agent();
    let progress = |node: &str, phase: &str| json!({"metadata": {"name": "u-x"}, "spec": {"nodeName": node}, "status": {"phase": phase}});
    let write = |me_node: &str, sub: &'static str, old: &Value, new: &Value| {
        let a = Attributes {
            operation: "UPDATE",
            group: "osroll.io",
            version: "v1alpha1",
            resource: "osupgradeprogresses",
            subresource: sub,
            namespace: "",
            name: "u-x",
            user: &me,
            node_name: Some(me_node),
            object: Some(new),
            old_object: Some(old),
        };
        admit(&p, &b, &a).err().map_or(0, |e| e.code)
    };
    let old = progress("n1", "Staged");
    let new = progress("n1", "Completed");
    assert_eq!(write("n1", "status", &old, &new), 0);
    assert_eq!(write("n2", "status", &old, &new), 403);
    assert_eq!(write("n1", "", &old, &new), 403);
    let pod =
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"}});
    let delete = |me_node: &str| {
        let a = Attributes {
            operation: "DELETE",
            group: "",
            version: "v1",
            resource: "pods",
            subresource: "",
            namespace: "default",
            name: "p",
            user: &me,
            node_name: Some(me_node),
            object: None,
            old_object: Some(&pod),
        };
        admit(&p, &b, &a).err().map_or(0, |e| e.code)
    };
    assert_eq!(delete("n1"), 0);
    assert_eq!(delete("n2"), 403);
}

#[test]
fn rules_match_resources_and_subresources_like_the_api_server() {
    assert!(resource_matches("nodes", "nodes", ""));
    assert!(!resource_matches("nodes", "nodes", "status"));
    assert!(resource_matches("nodes/status", "nodes", "status"));
    assert!(resource_matches("*/*", "pods", "eviction"));
    assert!(resource_matches("*", "pods", ""));
    assert!(!resource_matches("*", "pods", "status"));
}

#[test]
fn broken_expressions_fail_closed_unless_the_policy_says_ignore() {
    let policy = |failure: &str| {
        Arc::new(json!({"metadata": {"name": "p"}, "spec": {
            "failurePolicy": failure,
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "object.nosuch.field == 1"}],
        }}))
    };
    let binding = Arc::new(
        json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}}),
    );
    let cm = json!({"metadata": {"name": "c", "namespace": "d"}});
    let a = Attributes {
        operation: "CREATE",
        group: "",
        version: "v1",
        resource: "configmaps",
        subresource: "",
        namespace: "d",
        name: "c",
        user: "u",
        node_name: None,
        object: Some(&cm),
        old_object: None,
    };
    let e = admit(&[policy("Fail")], std::slice::from_ref(&binding), &a).unwrap_err();
    assert_eq!(e.code, 422);
    assert!(admit(&[policy("Ignore")], &[binding], &a).is_ok());
}
