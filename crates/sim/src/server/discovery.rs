//! Discovery documents (`/api`, `/apis`, `/apis/{group}`, group-version resource lists,
//! `/version`) in the legacy, unaggregated form every client falls back to.

use serde_json::{Value, json};

use super::resources::{ResourceDef, ResourceTable};

/// Kubernetes version the server claims to be.
pub const KUBE_MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": KUBE_MINOR, "gitVersion": format!("v1.{KUBE_MINOR}.0-osroll-sim"),
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_entry(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({ "name": name, "versions": vs, "preferredVersion": vs[0] })
}

/// `/apis`.
pub fn groups(table: &ResourceTable) -> Value {
    let groups: Vec<Value> = table
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`, if the group is served.
pub fn group(table: &ResourceTable, name: &str) -> Option<Value> {
    let (g, vs) = table
        .groups()
        .into_iter()
        .find(|(g, _)| g == name && !g.is_empty())?;
    let mut e = group_entry(&g, &vs);
    e["kind"] = json!("APIGroup");
    e["apiVersion"] = json!("v1");
    Some(e)
}

fn verbs(rd: &ResourceDef) -> Vec<&'static str> {
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
    .into_iter()
    .filter(|v| !(rd.group.is_empty() && rd.plural == "namespaces" && *v == "deletecollection"))
    .collect()
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(table: &ResourceTable, group: &str, version: &str) -> Option<Value> {
    let defs = table.in_group_version(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in &defs {
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced, "kind": d.kind,
            "verbs": verbs(d),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        if d.has_status(version) {
            resources.push(json!({
                "name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced,
                "kind": d.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        for sub in &d.extra_subresources {
            if *sub == "eviction" {
                resources.push(json!({
                    "name": format!("{}/eviction", d.plural), "singularName": "", "namespaced": d.namespaced,
                    "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"],
                }));
            }
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_subresources_with_eviction_in_policy() {
        let t = ResourceTable::default();
        let l = resource_list(&t, "", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"nodes/status")
        );
        let ev = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(ev["group"], "policy");
        assert!(
            groups(&t)["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "coordination.k8s.io")
        );
        assert!(resource_list(&t, "nope.io", "v1").is_none());
        assert_eq!(
            group(&t, "apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }
}
