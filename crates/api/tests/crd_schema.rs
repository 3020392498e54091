//! The generated CRDs are structural and carry the columns and validations we promise.

use osroll_api::crd::{crds, structural_problems};
use serde_json::{Value, json};

fn schema(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

#[test]
fn both_schemas_are_structural() {
    for kind in ["OSUpgrade", "OSUpgradeProgress"] {
        let problems = structural_problems(&schema(kind));
        assert!(problems.is_empty(), "{kind}: {problems:#?}");
    }
}

#[test]
fn the_structural_check_catches_what_the_api_server_refuses() {
    let bad = json!({
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "c": {"type": "array"},
            "d": {"type": "string", "x-kubernetes-int-or-string": true},
            "e": {"type": "object", "oneOf": [{"type": "object"}]},
            "f": {"x-kubernetes-int-or-string": true},
        }
    });
    let p = structural_problems(&bad);
    assert_eq!(p.len(), 5, "{p:#?}");
    for field in [".a", ".b", ".c", ".d", ".e.oneOf[0]"] {
        assert!(
            p.iter().any(|m| m.starts_with(&format!("{field}:"))),
            "{field} missing in {p:#?}"
        );
    }
}

#[test]
fn int_or_string_enums_and_patterns() {
    let up = schema("OSUpgrade");
    let strategy = &up["properties"]["spec"]["properties"]["strategy"]["properties"];
    for f in ["maxUnavailable", "maxStaging"] {
        assert_eq!(
            strategy[f]["x-kubernetes-int-or-string"],
            json!(true),
            "{f}"
        );
    }
    let phases = up["properties"]["status"]["properties"]["phase"]["enum"]
        .as_array()
        .unwrap();
    assert_eq!(phases.len(), 9, "{phases:?}");
    for p in ["RollingBack", "RolledBack"] {
        assert!(phases.contains(&json!(p)), "{p} missing in {phases:?}");
    }
    assert!(
        phases.iter().all(Value::is_string),
        "no null in enums: {phases:?}"
    );
    assert!(
        up["properties"]["spec"]["properties"]["version"]["pattern"]
            .as_str()
            .unwrap()
            .contains("stable")
    );

    let pr = schema("OSUpgradeProgress");
    let image = &pr["properties"]["spec"]["properties"]["image"]["properties"];
    assert_eq!(image["checksum"]["pattern"], json!("^sha256:[0-9a-f]{64}$"));
    assert!(image["version"]["pattern"].is_string());
    let phases = pr["properties"]["status"]["properties"]["phase"]["enum"]
        .as_array()
        .unwrap();
    assert!(phases.contains(&json!("RolledBack")));
    let text = serde_json::to_string(&pr).unwrap();
    assert!(!text.contains("uint"), "only formats the API server knows");
}

#[test]
fn printer_columns_and_names() {
    let cols = |kind: &str| -> Vec<String> {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        assert_eq!(crd.spec.scope, "Cluster");
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| c.name.to_uppercase())
            .collect()
    };
    assert_eq!(cols("OSUpgrade"), ["DESIRED", "RESOLVED", "PHASE", "AGE"]);
    assert_eq!(
        cols("OSUpgradeProgress"),
        ["NODE", "SOURCE", "CURRENT", "TARGET", "STATUS", "AGE"]
    );
    let names: Vec<_> = crds()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["osupgrades.osroll.io", "osupgradeprogresses.osroll.io"]
    );
}
