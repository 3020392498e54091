//! The CustomResourceDefinitions as served to the API server.
//!
//! The derive output is tidied so any kube-apiserver from 1.24 on accepts it as a
//! structural schema: `null` is dropped from enums (`nullable` already says it),
//! and integer formats the API server does not define (`uint32`, `uint64`) are replaced
//! by `int64` with the `minimum: 0` the derive already set.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{OSUpgrade, OSUpgradeProgress};

/// Both CRDs, OSUpgrade first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [OSUpgrade::crd(), OSUpgradeProgress::crd()]
        .into_iter()
        .map(tidy)
        .collect()
}

/// Both CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|c| serde_yaml::to_string(c).expect("CRDs serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn tidy(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut v = serde_json::to_value(&crd).expect("CRD serializes");
    if let Some(versions) = v
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for ver in versions {
            if let Some(schema) = ver.pointer_mut("/schema/openAPIV3Schema") {
                let kind = crd.spec.names.kind.clone();
                schema["description"] = Value::String(match kind.as_str() {
                    "OSUpgrade" => "A request to move the selected nodes to one OS version.".into(),
                    _ => "One node's OS upgrade: spec written by the controller, status by the node agent.".into(),
                });
                walk(schema);
            }
        }
    }
    serde_json::from_value(v).expect("tidied CRD deserializes")
}

fn walk(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|e| !e.is_null());
            }
            if let Some(Value::String(f)) = map.get("format")
                && matches!(
                    f.as_str(),
                    "uint8" | "uint16" | "uint32" | "uint64" | "uint" | "int8" | "int16"
                )
            {
                map.insert("format".into(), Value::String("int64".into()));
            }
            map.values_mut().for_each(walk);
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

/// Every way `schema` breaks the rules of a structural schema, as the API server
/// enforces them for `apiextensions.k8s.io/v1`: each node has a `type` (unless it is
/// int-or-string or preserves unknown fields), never `properties` beside
/// `additionalProperties`, arrays have `items`, int-or-string nodes carry no `type`, and
/// `allOf`/`anyOf`/`oneOf`/`not` branches hold only value validations.
pub fn structural_problems(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_node(schema, "", &mut out);
    out
}

fn check_node(v: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = v.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    let flag = |k: &str| map.get(k).and_then(Value::as_bool) == Some(true);
    let int_or_string = flag("x-kubernetes-int-or-string");
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    match map.get("type").and_then(Value::as_str) {
        Some(_) if int_or_string => out.push(format!("{path}: int-or-string must not set type")),
        Some("array") if !map.contains_key("items") => {
            out.push(format!("{path}: array without items"))
        }
        Some("") => out.push(format!("{path}: empty type")),
        None if !int_or_string && !preserve => out.push(format!("{path}: no type")),
        _ => {}
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        out.push(format!("{path}: properties beside additionalProperties"));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, branch) in map
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_junctor(branch, &format!("{path}.{key}[{i}]"), out);
        }
    }
    if let Some(not) = map.get("not") {
        check_junctor(not, &format!("{path}.not"), out);
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            check_node(child, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = map.get("items") {
        check_node(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = map.get("additionalProperties").filter(|a| a.is_object()) {
        check_node(ap, &format!("{path}.*"), out);
    }
}

fn check_junctor(v: &Value, path: &str, out: &mut Vec<String>) {
    const FORBIDDEN: [&str; 5] = [
        "type",
        "description",
        "default",
        "additionalProperties",
        "nullable",
    ];
    if let Some(map) = v.as_object() {
        for key in FORBIDDEN.iter().filter(|k| map.contains_key(**k)) {
            out.push(format!("{path}: {key} is not allowed inside a junctor"));
        }
        for child in map
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
        {
            check_junctor(child, path, out);
        }
    }
}
