//! Label selection of nodes and the overlap rule between OSUpgrades.

use super::*;
use chrono::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: if values.is_empty() {
            None
        } else {
            Some(values.iter().map(|v| v.to_string()).collect())
        },
    }
}

#[test]
fn match_labels_and_expressions() {
    let sel = LabelSelector {
        match_labels: Some(labels(&[("pool", "edge")])),
        match_expressions: Some(vec![
            expr("zone", "In", &["a", "b"]),
            expr("canary", "DoesNotExist", &[]),
            expr("tier", "NotIn", &["db"]),
            expr("rack", "Exists", &[]),
        ]),
    };
    let s = Selector::from_label_selector(&sel, "spec.nodeSelector").unwrap();
    assert!(s.matches(&labels(&[("pool", "edge"), ("zone", "a"), ("rack", "1")])));
    assert!(!s.matches(&labels(&[("pool", "edge"), ("zone", "c"), ("rack", "1")])));
    assert!(!s.matches(&labels(&[
        ("pool", "edge"),
        ("zone", "a"),
        ("rack", "1"),
        ("canary", "")
    ])));
    assert!(!s.matches(&labels(&[
        ("pool", "edge"),
        ("zone", "a"),
        ("rack", "1"),
        ("tier", "db")
    ])));
    assert!(!s.matches(&labels(&[("pool", "edge"), ("zone", "a")])));
}

#[test]
fn bad_expressions_name_the_field() {
    let sel = LabelSelector {
        match_expressions: Some(vec![expr("a", "Like", &["x"])]),
        ..Default::default()
    };
    let e = Selector::from_label_selector(&sel, "spec.nodeSelector").unwrap_err();
    assert_eq!(e.field, "spec.nodeSelector.matchExpressions[0].operator");
    assert!(e.message.contains("Like"));
    let sel = LabelSelector {
        match_expressions: Some(vec![expr("a", "In", &[])]),
        ..Default::default()
    };
    assert!(
        Selector::from_label_selector(&sel, "s")
            .unwrap_err()
            .field
            .ends_with("values")
    );
}

#[test]
fn only_managed_nodes_are_selected() {
    let all = NodeSelection::from_spec(None).unwrap();
    assert!(all.selects(&labels(&[(labels::MANAGED, "true")])));
    assert!(!all.selects(&labels(&[("x", "y")])));
    let edge = NodeSelection::from_spec(Some(&LabelSelector {
        match_labels: Some(labels(&[("pool", "edge")])),
        ..Default::default()
    }))
    .unwrap();
    assert!(edge.selects(&labels(&[(labels::MANAGED, "true"), ("pool", "edge")])));
    assert!(
        !edge.selects(&labels(&[("pool", "edge")])),
        "unmanaged nodes have no agent"
    );
}

fn claim(name: &str, minute: u32, active: bool, pool: Option<&str>) -> Claim {
    let sel = pool.map(|p| LabelSelector {
        match_labels: Some(labels(&[("pool", p)])),
        ..Default::default()
    });
    Claim {
        name: name.into(),
        created: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, minute, 0).unwrap()),
        active,
        selection: Some(NodeSelection::from_spec(sel.as_ref()).unwrap()),
    }
}

#[test]
fn the_newer_of_two_overlapping_upgrades_waits() {
    let n1 = labels(&[(labels::MANAGED, "true"), ("pool", "a")]);
    let n2 = labels(&[(labels::MANAGED, "true"), ("pool", "b")]);
    let nodes = [("n1", &n1), ("n2", &n2)];
    let old = claim("old", 1, true, None);
    let new = claim("new", 2, true, Some("b"));
    let others = [old.clone(), new.clone()];
    assert_eq!(
        blocker(&new, &others, nodes),
        Some(Blocker {
            upgrade: "old".into(),
            nodes: vec!["n2".into()]
        })
    );
    assert_eq!(
        blocker(&old, &others, nodes),
        None,
        "the older one proceeds"
    );
    let done = claim("old", 1, false, None);
    assert_eq!(
        blocker(&new, &[done, new.clone()], nodes),
        None,
        "a finished upgrade holds nothing"
    );
    let disjoint = claim("other", 0, true, Some("a"));
    assert_eq!(blocker(&new, &[disjoint, new.clone()], nodes), None);
}
