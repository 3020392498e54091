//! OpenAPI v3 documents, enough for kubectl: each PATCH operation names its
//! group/version/kind and declares the `fieldValidation` parameter, so kubectl leaves
//! field validation to the server (`fieldValidation=Strict`) instead of validating
//! client-side, and custom resources carry their CRD schema so `kubectl explain` works.
//! Built-in kinds carry no schema and declare no strategic-merge body, so client-side
//! `kubectl apply` uses its compiled-in types for them. `/openapi/v2` is not served.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::resources::{ResourceDef, ResourceTable};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_name(rd: &ResourceDef, version: &str) -> String {
    let rev: Vec<&str> = rd.group.split('.').rev().collect();
    format!("{}.{version}.{}", rev.join("."), rd.kind)
}

fn param(name: &str, location: &str) -> Value {
    json!({ "name": name, "in": location, "required": location == "path", "schema": { "type": "string" } })
}

/// The document for one group/version.
pub fn group_version_doc(table: &ResourceTable, group: &str, version: &str) -> Option<Value> {
    let defs = table.in_group_version(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rd in &defs {
        let base = if rd.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                rd.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), rd.plural)
        };
        let (item, collection) = path_items(rd, version);
        paths.insert(format!("{base}/{{name}}"), item);
        paths.insert(base, collection);
        if let Some(mut s) = rd.schema(version).cloned() {
            s["x-kubernetes-group-version-kind"] = json!([gvk(rd, version)]);
            schemas.insert(schema_name(rd, version), s);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": format!("v1.{}.0", super::discovery::KUBE_MINOR) },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

fn gvk(rd: &ResourceDef, version: &str) -> Value {
    json!({ "group": rd.group, "version": version, "kind": rd.kind })
}

/// The path items of one resource: (one object, the collection).
fn path_items(rd: &ResourceDef, version: &str) -> (Value, Value) {
    let gvk = gvk(rd, version);
    let body_schema = match rd.schema(version) {
        Some(_) => {
            json!({ "$ref": format!("#/components/schemas/{}", schema_name(rd, version)) })
        }
        None => json!({ "type": "object" }),
    };
    let content = json!({
        "application/json-patch+json": {"schema": body_schema},
        "application/merge-patch+json": {"schema": body_schema},
        "application/apply-patch+yaml": {"schema": body_schema},
    });
    let ok = json!({ "200": { "description": "OK", "content": { "application/json": { "schema": body_schema } } } });
    let op = |action: &str| {
        json!({
            "operationId": format!("{action}{}", rd.kind),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": ok,
        })
    };
    let write_params = [
        param("dryRun", "query"),
        param("fieldManager", "query"),
        param("fieldValidation", "query"),
    ];
    let mut patch = op("patch");
    let mut patch_params = write_params.to_vec();
    patch_params.push(param("force", "query"));
    patch["parameters"] = json!(patch_params);
    patch["requestBody"] = json!({ "content": content, "required": true });
    let mut create = op("post");
    create["parameters"] = json!(write_params);
    let mut put = op("put");
    put["parameters"] = json!(write_params);
    let namespace: Vec<Value> = if rd.namespaced {
        vec![param("namespace", "path")]
    } else {
        vec![]
    };
    let mut item_params = vec![param("name", "path")];
    item_params.extend(namespace.iter().cloned());
    let item = json!({
        "parameters": item_params,
        "get": op("get"), "put": put, "patch": patch, "delete": op("delete"),
    });
    let collection = json!({ "parameters": namespace, "get": op("list"), "post": create });
    (item, collection)
}

fn hash_of(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: one entry per group/version, with a content hash in the URL so clients
/// refetch after a CRD changes.
pub fn root(table: &ResourceTable) -> Value {
    let mut paths = Map::new();
    for (g, vs) in table.groups() {
        for v in vs {
            if let Some(doc) = group_version_doc(table, &g, &v) {
                let p = gv_path(&g, &v);
                paths.insert(p.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash_of(&doc)) }));
            }
        }
    }
    json!({ "paths": paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_declare_field_validation() {
        let t = ResourceTable::default();
        let doc = group_version_doc(&t, "policy", "v1").unwrap();
        let item =
            &doc["paths"]["/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"];
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "PodDisruptionBudget"
        );
        assert!(
            item["patch"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            item["patch"]["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        assert!(
            root(&t)["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
    }
}
