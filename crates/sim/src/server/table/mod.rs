//! Server-side printing: `meta.k8s.io/v1 Table` responses for `kubectl get`, with a CRD's
//! `additionalPrinterColumns` or a handful of built-in column sets (pods, nodes,
//! namespaces, deployments, PDBs, leases, events, CRDs; `NAME AGE` otherwise), and
//! `PartialObjectMetadata` for metadata-only clients.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::jsonpath;
use super::resources::{PrinterColumn, ResourceDef};

/// How a response body should present objects (from the `Accept` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// The objects themselves.
    Full,
    /// A Table; the row object is included per `includeObject`.
    Table(IncludeObject),
    /// `PartialObjectMetadata(List)`.
    Metadata,
}

/// `includeObject` query parameter of Table requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object per row.
    None,
    /// `PartialObjectMetadata` per row (the default).
    Metadata,
    /// The whole object per row.
    Object,
}

impl Presentation {
    /// Read the `Accept` header and `includeObject` query parameter.
    pub fn from_accept(accept: &str, include: Option<&str>) -> Self {
        let first = accept.split(',').next().unwrap_or_default();
        if first.contains("as=Table") {
            let inc = match include {
                Some("None") => IncludeObject::None,
                Some("Object") => IncludeObject::Object,
                _ => IncludeObject::Metadata,
            };
            Presentation::Table(inc)
        } else if first.contains("as=PartialObjectMetadata") {
            Presentation::Metadata
        } else {
            Presentation::Full
        }
    }
}

/// `metadata` of `obj` as a `PartialObjectMetadata`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list of `PartialObjectMetadata`.
pub fn partial_metadata_list(items: &[Value], list_meta: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
    })
}

/// Human-readable age the way kubectl prints it (`45s`, `3m2s`, `5h`, `12d`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age_of(ts: Option<&Value>, now: DateTime<Utc>) -> Value {
    match ts
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => Value::String(human_duration((now - t.with_timezone(&Utc)).num_seconds())),
        None => Value::String("<unknown>".into()),
    }
}

fn col(&(name, type_, priority, path): &Column) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority,
        json_path: path.into(),
    }
}

/// Built-in computed cells; `json_path` starting with `@` names one of these.
fn computed(name: &str, obj: &Value, now: DateTime<Utc>) -> Value {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let n = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match name {
        "@age" => age_of(obj.pointer("/metadata/creationTimestamp"), now),
        "@node-status" => Value::String(node_status(obj)),
        "@node-roles" => Value::String(node_roles(obj)),
        "@pod-ready" => Value::String(pod_ready(obj)),
        "@pod-status" => {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                Value::String("Terminating".into())
            } else {
                let phase = s("/status/phase");
                Value::String(if phase.is_empty() {
                    "Pending".into()
                } else {
                    phase
                })
            }
        }
        "@pod-restarts" => {
            let r: i64 = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |cs| {
                    cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
                });
            Value::from(r)
        }
        "@deploy-ready" => Value::String(format!(
            "{}/{}",
            n("/status/readyReplicas"),
            n("/spec/replicas")
        )),
        "@pdb-min" => cell_or_na(obj.pointer("/spec/minAvailable")),
        "@pdb-max" => cell_or_na(obj.pointer("/spec/maxUnavailable")),
        "@event-object" => Value::String(format!(
            "{}/{}",
            s("/involvedObject/kind").to_ascii_lowercase(),
            s("/involvedObject/name")
        )),
        "@event-last-seen" => {
            let ts = obj
                .pointer("/lastTimestamp")
                .filter(|v| !v.is_null())
                .or(obj.pointer("/eventTime"));
            age_of(ts, now)
        }
        _ => Value::Null,
    }
}

/// `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` when cordoned.
fn node_status(node: &Value) -> String {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut st = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

/// The `node-role.kubernetes.io/` label suffixes, or `<none>`.
fn node_roles(node: &Value) -> String {
    let roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

/// Ready containers out of all, `1/2`.
fn pod_ready(pod: &Value) -> String {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
    format!("{ready}/{total}")
}

fn cell_or_na(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Null) | None => Value::String("N/A".into()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    }
}

/// A built-in column: header, type, priority and a JSONPath (or `@`-computed cell).
type Column = (&'static str, &'static str, i64, &'static str);

const AGE: Column = ("Age", "string", 0, "@age");

/// The built-in column sets (after `Name`) by group and plural; others show `AGE` only.
#[rustfmt::skip]
const BUILTIN_COLUMNS: &[(&str, &str, &[Column])] = &[
    ("", "pods", &[
        ("Ready", "string", 0, "@pod-ready"),
        ("Status", "string", 0, "@pod-status"),
        ("Restarts", "integer", 0, "@pod-restarts"),
        AGE,
        ("IP", "string", 1, ".status.podIP"),
        ("Node", "string", 1, ".spec.nodeName"),
    ]),
    ("", "nodes", &[
        ("Status", "string", 0, "@node-status"),
        ("Roles", "string", 0, "@node-roles"),
        AGE,
        ("Version", "string", 0, ".status.nodeInfo.kubeletVersion"),
        ("OS-Image", "string", 1, ".status.nodeInfo.osImage"),
    ]),
    ("", "namespaces", &[("Status", "string", 0, ".status.phase"), AGE]),
    ("", "events", &[
        ("Last Seen", "string", 0, "@event-last-seen"),
        ("Type", "string", 0, ".type"),
        ("Reason", "string", 0, ".reason"),
        ("Object", "string", 0, "@event-object"),
        ("Message", "string", 0, ".message"),
    ]),
    ("apps", "deployments", &[
        ("Ready", "string", 0, "@deploy-ready"),
        ("Up-to-date", "integer", 0, ".status.updatedReplicas"),
        ("Available", "integer", 0, ".status.availableReplicas"),
        AGE,
    ]),
    ("apps", "daemonsets", &[
        ("Desired", "integer", 0, ".status.desiredNumberScheduled"),
        ("Current", "integer", 0, ".status.currentNumberScheduled"),
        ("Ready", "integer", 0, ".status.numberReady"),
        AGE,
    ]),
    ("policy", "poddisruptionbudgets", &[
        ("Min Available", "string", 0, "@pdb-min"),
        ("Max Unavailable", "string", 0, "@pdb-max"),
        ("Allowed Disruptions", "integer", 0, ".status.disruptionsAllowed"),
        AGE,
    ]),
    ("coordination.k8s.io", "leases", &[("Holder", "string", 0, ".spec.holderIdentity"), AGE]),
    ("apiextensions.k8s.io", "customresourcedefinitions", &[
        ("Created At", "string", 0, ".metadata.creationTimestamp"),
    ]),
];

/// The columns (after `Name`) for `rd` at `version`.
pub fn columns(rd: &ResourceDef, version: &str) -> Vec<PrinterColumn> {
    if let Some(c) = &rd.custom {
        let cols = c
            .versions
            .get(version)
            .map(|v| v.columns.clone())
            .unwrap_or_default();
        if cols.is_empty() {
            return vec![col(&("Age", "date", 0, ".metadata.creationTimestamp"))];
        }
        return cols;
    }
    let set = BUILTIN_COLUMNS
        .iter()
        .find(|(g, p, _)| *g == rd.group && *p == rd.plural)
        .map_or(&[AGE][..], |(_, _, set)| set);
    set.iter().map(col).collect()
}

fn cell(c: &PrinterColumn, obj: &Value, now: DateTime<Utc>) -> Value {
    if c.json_path.starts_with('@') {
        return computed(&c.json_path, obj, now);
    }
    match jsonpath::first(obj, &c.json_path) {
        None => Value::Null,
        Some(v) if c.type_ == "date" => age_of(Some(&v), now),
        Some(Value::Array(a)) => Value::String(
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Some(Value::Object(o)) => Value::String(Value::Object(o).to_string()),
        Some(v) => v,
    }
}

/// The column definitions of a Table for `rd`.
pub fn column_definitions(rd: &ResourceDef, version: &str) -> Vec<Value> {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in columns(rd, version) {
        let type_ = if c.json_path.starts_with('@') || c.type_ == "date" {
            "string"
        } else {
            c.type_.as_str()
        };
        defs.push(json!({
            "name": c.name, "type": type_, "format": c.format, "description": c.description, "priority": c.priority,
        }));
    }
    defs
}

/// One Table row for `obj`.
pub fn row(
    rd: &ResourceDef,
    version: &str,
    obj: &Value,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let mut cells = vec![
        obj.pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    cells.extend(columns(rd, version).iter().map(|c| cell(c, obj, now)));
    let mut r = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj),
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A Table of `items`; column definitions are left out when `with_columns` is false
/// (watch events after the first).
pub fn table(
    rd: &ResourceDef,
    version: &str,
    items: &[Value],
    list_meta: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = Utc::now();
    let cols = if with_columns {
        column_definitions(rd, version)
    } else {
        vec![]
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": cols,
        "rows": items.iter().map(|o| row(rd, version, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;
