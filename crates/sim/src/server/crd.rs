//! CustomResourceDefinitions: check the parts of a CRD the server relies on, turn it into
//! a served resource, and write the status a real API server reports once the names are
//! accepted (`NamesAccepted`, `Established`), so `kubectl wait --for=condition=Established`
//! works. Schemas are used as given: structural-schema rules are not enforced here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::error::FieldError;
use super::resources::{CustomDef, CustomVersion, PrinterColumn, ResourceDef};

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// The strings of a JSON array (other items skipped); none when it is not an array.
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Check `crd` and build the resource it defines.
pub fn to_resource(crd: &Value) -> Result<ResourceDef, Vec<FieldError>> {
    let mut errs = identity_errors(crd);
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    errs.extend(storage_errors(&versions));
    let mut served = BTreeMap::new();
    let mut served_names = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        if let Some((vname, def)) = served_version(i, v, &mut errs) {
            served_names.push(vname.clone());
            served.insert(vname, def);
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let storage_name = versions
        .iter()
        .find(|v| v["storage"] == true)
        .map(|v| s(v, "/name").to_string())
        .expect("checked: exactly one storage version");
    served_names.sort_by_key(|v| *v != storage_name);
    if served_names.is_empty() {
        return Err(vec![FieldError::invalid(
            "spec.versions",
            Value::Array(versions),
            "must have at least one served version",
        )]);
    }
    let kind = s(crd, "/spec/names/kind");
    let singular = match s(crd, "/spec/names/singular") {
        "" => kind.to_ascii_lowercase(),
        x => x.to_string(),
    };
    Ok(ResourceDef {
        group: s(crd, "/spec/group").into(),
        versions: served_names,
        plural: s(crd, "/spec/names/plural").into(),
        singular,
        kind: kind.into(),
        namespaced: s(crd, "/spec/scope") == "Namespaced",
        short_names: strings(crd.pointer("/spec/names/shortNames")),
        categories: strings(crd.pointer("/spec/names/categories")),
        status: false,
        extra_subresources: vec![],
        custom: Some(Arc::new(CustomDef {
            crd_name: s(crd, "/metadata/name").into(),
            versions: served,
            storage: storage_name,
        })),
    })
}

/// What is wrong with the group, names and scope of `crd`.
fn identity_errors(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    let name = s(crd, "/metadata/name");
    for (value, field) in [
        (group, "spec.group"),
        (plural, "spec.names.plural"),
        (s(crd, "/spec/names/kind"), "spec.names.kind"),
    ] {
        if value.is_empty() {
            errs.push(FieldError::required(field, ""));
        }
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            Value::String(name.into()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = s(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push(FieldError {
            field: "spec.scope".into(),
            kind: super::error::FieldErrorKind::NotSupported(
                Value::String(scope.into()),
                vec!["Cluster".into(), "Namespaced".into()],
            ),
            detail: String::new(),
        });
    }
    errs
}

/// There must be versions, and exactly one of them the storage version.
fn storage_errors(versions: &[Value]) -> Vec<FieldError> {
    const ONE_STORAGE: &str = "must have exactly one version marked as storage version";
    if versions.is_empty() {
        return vec![FieldError::required("spec.versions", ONE_STORAGE)];
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        return vec![FieldError::invalid(
            "spec.versions",
            Value::Array(versions.to_vec()),
            ONE_STORAGE,
        )];
    }
    vec![]
}

/// Check `spec.versions[i]`; its name and definition when it is served.
fn served_version(
    i: usize,
    v: &Value,
    errs: &mut Vec<FieldError>,
) -> Option<(String, CustomVersion)> {
    let vname = s(v, "/name");
    if vname.is_empty() {
        errs.push(FieldError::required(format!("spec.versions[{i}].name"), ""));
        return None;
    }
    let schema = v.pointer("/schema/openAPIV3Schema");
    if let Some(schema) = schema
        && !schema.is_object()
    {
        errs.push(FieldError::invalid(
            format!("spec.versions[{i}].schema.openAPIV3Schema"),
            schema.clone(),
            "must be an object",
        ));
    }
    if v["served"] != true {
        return None;
    }
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| cols.iter().map(printer_column).collect())
        .unwrap_or_default();
    let def = CustomVersion {
        schema: schema.cloned(),
        columns,
        status: v.pointer("/subresources/status").is_some(),
        selectable: v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .map(|f| s(f, "/jsonPath").trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default(),
    };
    Some((vname.to_string(), def))
}

fn printer_column(c: &Value) -> PrinterColumn {
    PrinterColumn {
        name: s(c, "/name").into(),
        type_: s(c, "/type").into(),
        format: s(c, "/format").into(),
        description: s(c, "/description").into(),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        json_path: s(c, "/jsonPath").into(),
    }
}

/// Write the accepted status into `crd` (kept transition times from `old` when unchanged).
pub fn set_status(crd: &mut Value, def: &ResourceDef, old: Option<&Value>, now: &str) {
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    names["singular"] = Value::String(def.singular.clone());
    if names.get("listKind").is_none() {
        names["listKind"] = Value::String(format!("{}List", def.kind));
    }
    let mut stored = strings(old.and_then(|o| o.pointer("/status/storedVersions")));
    let storage = def
        .custom
        .as_ref()
        .map(|c| c.storage.clone())
        .unwrap_or_default();
    if !stored.contains(&storage) {
        stored.push(storage);
    }
    let since = |t: &str| {
        old.and_then(|o| o.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now.into()))
    };
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
        ],
    });
    names_defaults(crd);
}

fn names_defaults(crd: &mut Value) {
    if let Some(names) = crd.pointer_mut("/spec/names") {
        if names.get("singular").is_none()
            && let Some(k) = names.get("kind").and_then(Value::as_str)
        {
            names["singular"] = Value::String(k.to_ascii_lowercase());
        }
        if names.get("listKind").is_none()
            && let Some(k) = names.get("kind").and_then(Value::as_str)
        {
            names["listKind"] = Value::String(format!("{k}List"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osroll_crds_register_with_columns_and_status() {
        for crd in osroll_api::crd::crds() {
            let v = serde_json::to_value(&crd).unwrap();
            let def = to_resource(&v).unwrap();
            assert_eq!(def.group, "osroll.io");
            assert!(!def.namespaced);
            let ver = &def.custom.as_ref().unwrap().versions["v1alpha1"];
            assert!(ver.status && ver.schema.is_some());
            assert!(
                ver.columns
                    .iter()
                    .any(|c| c.name == "Phase" || c.name == "Status")
            );
            let mut v2 = v.clone();
            set_status(&mut v2, &def, None, "2024-01-01T00:00:00Z");
            assert_eq!(v2["status"]["conditions"][1]["type"], "Established");
            assert_eq!(v2["status"]["storedVersions"][0], "v1alpha1");
        }
    }

    #[test]
    fn bad_crds_name_fields() {
        let bad = json!({"metadata": {"name": "wrong"}, "spec": {"group": "g.io", "scope": "Global",
            "names": {"plural": "things", "kind": "Thing"}, "versions": [{"name": "v1", "served": true, "storage": false}]}});
        let errs: Vec<String> = to_resource(&bad)
            .unwrap_err()
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(errs, vec!["metadata.name", "spec.scope", "spec.versions"]);
    }
}
