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
    [OSUpgrade::crd(), OSUpgradeProgress::crd()].into_iter().map(tidy).collect()
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
    if let Some(versions) = v.pointer_mut("/spec/versions").and_then(Value::as_array_mut) {
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
                && matches!(f.as_str(), "uint8" | "uint16" | "uint32" | "uint64" | "uint" | "int8" | "int16")
            {
                map.insert("format".into(), Value::String("int64".into()));
            }
            map.values_mut().for_each(walk);
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}
