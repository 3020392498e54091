//! CRD schema handling: pruning, defaulting and the field paths of validation errors.

use super::*;
use serde_json::json;

fn schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["version", "catalog"], "properties": {
            "version": {"type": "string", "pattern": "^v[0-9]+$"},
            "count": {"type": "integer", "minimum": 0, "default": 1},
            "mode": {"type": "string", "enum": ["Fail", "Skip"]},
            "opt": {"type": "string", "nullable": true},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "mu": {"x-kubernetes-int-or-string": true},
            "catalog": {"type": "object", "oneOf": [{"required": ["inline"]}, {"required": ["url"]}],
                "properties": {"inline": {"type": "string"}, "url": {"type": "string"}}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}},
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["n"]}
        }},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
    }})
}

#[test]
fn prunes_unknown_drops_nulls_and_defaults() {
    let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
        "spec": {"version": "v1", "bogus": 1, "mode": null, "opt": null, "extra": {"any": {"thing": 1}},
            "catalog": {"inline": "x"}}, "junk": true});
    let unknown = prune_and_default(&mut o, &schema());
    assert_eq!(unknown, vec!["junk".to_string(), "spec.bogus".to_string()]);
    assert_eq!(o["spec"]["count"], 1);
    assert!(o["spec"].get("mode").is_none());
    assert!(o["spec"]["opt"].is_null() && o["spec"].get("opt").is_some());
    assert_eq!(o["spec"]["extra"]["any"]["thing"], 1);
    assert_eq!(o["metadata"]["name"], "a");
    assert!(
        validate(&o, &schema()).is_empty(),
        "{:?}",
        validate(&o, &schema())
    );
}

#[test]
fn reports_field_paths() {
    let o = json!({"spec": {"version": "x1", "count": -2, "mode": "Force", "mu": true,
        "catalog": {"inline": "a", "url": "b"}, "items": [{"n": "a"}, {"n": "a"}]}});
    let errs: Vec<String> = validate(&o, &schema())
        .iter()
        .map(|e| e.to_string())
        .collect();
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(
        has("spec.version: Invalid value: \"x1\": spec.version in body should match '^v[0-9]+$'"),
        "{errs:?}"
    );
    assert!(
        has(
            "spec.count: Invalid value: -2: spec.count in body should be greater than or equal to 0"
        ),
        "{errs:?}"
    );
    assert!(
        has("spec.mode: Unsupported value: \"Force\": supported values: \"Fail\", \"Skip\""),
        "{errs:?}"
    );
    assert!(has("spec.mu: Invalid value: \"boolean\""), "{errs:?}");
    assert!(
        has(
            "spec.catalog: Invalid value: \"object\": spec.catalog in body must validate one and only one schema (oneOf)"
        ),
        "{errs:?}"
    );
    assert!(has("spec.items[1]: Duplicate value"), "{errs:?}");
    let missing: Vec<String> = validate(&json!({"spec": {}}), &schema())
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        missing.contains(&"spec.version: Required value".to_string()),
        "{missing:?}"
    );
    assert!(
        missing.contains(&"spec.catalog: Required value".to_string()),
        "{missing:?}"
    );
    let wrong_type: Vec<String> = validate(&json!({"spec": {"version": 3}}), &schema())
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        wrong_type.iter().any(|e| e.starts_with(
            "spec.version: Invalid value: \"integer\": spec.version in body must be of type string"
        )),
        "{wrong_type:?}"
    );
}
