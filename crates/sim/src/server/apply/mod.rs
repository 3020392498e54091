//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Each writer ("manager") owns the leaf fields it set. An apply merges the applied
//! configuration into the live object, removes fields the same manager applied before but
//! no longer does (unless someone else owns them too), and fails with 409 when it would
//! change a field another manager owns, unless `force=true` takes that field over.
//! Ordinary writes (create, update, patch) give the writer the fields it changed.
//!
//! Lists follow their list type: for custom resources `x-kubernetes-list-type` (`map`
//! with `x-kubernetes-list-map-keys`, `set`, or the default `atomic`); for built-ins the
//! strategic-merge keys of [`super::patch::list_strategy`]. Ownership is encoded as
//! FieldsV1 (`f:`, `k:`, `v:` and `.`) so clients see the usual shape.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};
use super::patch::{ListMerge, list_strategy};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    /// Object field.
    F(String),
    /// Element of a map list, by its key fields as canonical JSON.
    K(String),
    /// Element of a set list, by value as JSON.
    V(String),
}

/// A path from the object root.
pub type Path = Vec<Pe>;
/// Fields owned by one manager.
pub type FieldSet = BTreeSet<Path>;

#[derive(Clone, Copy)]
enum ListKind<'a> {
    Atomic,
    Set,
    Map(ListKeys<'a>),
}

#[derive(Clone, Copy)]
enum ListKeys<'a> {
    Builtin(&'static str),
    Schema(&'a Value),
}

impl ListKeys<'_> {
    fn names(&self) -> Vec<String> {
        match self {
            ListKeys::Builtin(k) => vec![k.to_string()],
            ListKeys::Schema(v) => v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        }
    }
}

/// Where list types come from: a CRD schema node, or the built-in table.
#[derive(Clone, Copy)]
pub struct Shape<'a> {
    schema: Option<&'a Value>,
    custom: bool,
}

impl<'a> Shape<'a> {
    /// For a custom resource with this `openAPIV3Schema`.
    pub fn custom(schema: Option<&'a Value>) -> Self {
        Shape {
            schema,
            custom: true,
        }
    }
    /// For a built-in resource.
    pub fn builtin() -> Self {
        Shape {
            schema: None,
            custom: false,
        }
    }
    fn field(&self, name: &str) -> Shape<'a> {
        let s = self.schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        Shape {
            schema: s,
            custom: self.custom,
        }
    }
    fn items(&self) -> Shape<'a> {
        Shape {
            schema: self.schema.and_then(|s| s.get("items")),
            custom: self.custom,
        }
    }
    fn list_kind(&self, name: &str, sample: Option<&Value>) -> ListKind<'a> {
        if self.custom {
            match self
                .schema
                .and_then(|s| s.get("x-kubernetes-list-type"))
                .and_then(Value::as_str)
            {
                Some("map") => match self
                    .schema
                    .and_then(|s| s.get("x-kubernetes-list-map-keys"))
                {
                    Some(keys) => ListKind::Map(ListKeys::Schema(keys)),
                    None => ListKind::Atomic,
                },
                Some("set") => ListKind::Set,
                _ => ListKind::Atomic,
            }
        } else {
            match list_strategy(name, sample) {
                Some(ListMerge::Key(k)) => ListKind::Map(ListKeys::Builtin(k)),
                Some(ListMerge::Primitive) => ListKind::Set,
                None => ListKind::Atomic,
            }
        }
    }
}

/// Which part of an object a write may touch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// Everything but `status` (main resource of a type with a status subresource).
    Main,
    /// Only `status`.
    Status,
    /// Everything (types without a status subresource).
    All,
}

fn in_scope(key: &str, scope: Scope) -> bool {
    match scope {
        Scope::Main => !matches!(key, "status" | "apiVersion" | "kind" | "metadata"),
        Scope::Status => key == "status",
        Scope::All => !matches!(key, "apiVersion" | "kind" | "metadata"),
    }
}

const OWNED_META: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn element_key(elem: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    let mut sorted = keys.to_vec();
    sorted.sort();
    for k in sorted {
        m.insert(k.clone(), elem.get(&k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(m).to_string()
}

/// Leaf field paths set in `obj` within `scope` (metadata: labels, annotations,
/// finalizers and ownerReferences only).
pub fn leaves(obj: &Value, shape: Shape<'_>, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(map) = obj else { return out };
    for (k, v) in map {
        if k == "metadata" && scope != Scope::Status {
            for mk in OWNED_META {
                if let Some(mv) = v.get(mk) {
                    collect(
                        mv,
                        Shape::builtin().field(mk),
                        mk,
                        vec![Pe::F("metadata".into()), Pe::F(mk.into())],
                        &mut out,
                    );
                }
            }
        } else if in_scope(k, scope) {
            collect(v, shape.field(k), k, vec![Pe::F(k.clone())], &mut out);
        }
    }
    out
}

fn collect(v: &Value, shape: Shape<'_>, name: &str, path: Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, cv) in m {
                let mut p = path.clone();
                p.push(Pe::F(k.clone()));
                collect(cv, shape.field(k), k, p, out);
            }
        }
        Value::Array(items) => match shape.list_kind(name, items.first()) {
            ListKind::Atomic => {
                out.insert(path);
            }
            ListKind::Set => {
                for i in items {
                    let mut p = path.clone();
                    p.push(Pe::V(i.to_string()));
                    out.insert(p);
                }
            }
            ListKind::Map(keys) => {
                let names = keys.names();
                for i in items {
                    let mut p = path.clone();
                    p.push(Pe::K(element_key(i, &names)));
                    out.insert(p.clone());
                    collect(i, shape.items(), "", p, out);
                }
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The value at `path`, if present.
pub fn get_at<'v>(obj: &'v Value, path: &[Pe]) -> Option<&'v Value> {
    let mut cur = obj;
    for pe in path {
        cur = match pe {
            Pe::F(f) => cur.get(f)?,
            Pe::K(k) => {
                let want: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?.iter().find(|e| {
                    want.iter()
                        .all(|(wk, wv)| e.get(wk).unwrap_or(&Value::Null) == wv)
                })?
            }
            Pe::V(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|e| **e == want)?
            }
        };
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &[Pe]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent_path {
        let next = match pe {
            Pe::F(f) => cur.get_mut(f),
            Pe::K(_) | Pe::V(_) => {
                let Some(idx) = index_of(cur, pe) else { return };
                cur.get_mut(idx)
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Pe::F(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        other => {
            if let Some(idx) = index_of(cur, other)
                && let Some(a) = cur.as_array_mut()
            {
                a.remove(idx);
            }
        }
    }
}

fn index_of(list: &Value, pe: &Pe) -> Option<usize> {
    let items = list.as_array()?;
    match pe {
        Pe::K(k) => {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            items.iter().position(|e| {
                want.iter()
                    .all(|(wk, wv)| e.get(wk).unwrap_or(&Value::Null) == wv)
            })
        }
        Pe::V(v) => {
            let want: Value = serde_json::from_str(v).ok()?;
            items.iter().position(|e| *e == want)
        }
        Pe::F(_) => None,
    }
}

/// Merge an applied configuration into `live` following list types.
fn merge(live: &mut Value, applied: &Value, shape: Shape<'_>, name: &str) {
    match (live.as_object_mut(), applied) {
        (Some(lm), Value::Object(am)) => {
            for (k, av) in am {
                let entry = lm.entry(k.clone()).or_insert(Value::Null);
                if entry.is_null() {
                    *entry = av.clone();
                } else {
                    merge(entry, av, shape.field(k), k);
                }
            }
            return;
        }
        (None, Value::Object(_)) => {
            *live = applied.clone();
            return;
        }
        _ => {}
    }
    if let (Some(ll), Some(al)) = (live.as_array_mut(), applied.as_array()) {
        match shape.list_kind(name, al.first().or(ll.first())) {
            ListKind::Atomic => *ll = al.clone(),
            ListKind::Set => {
                for a in al {
                    if !ll.contains(a) {
                        ll.push(a.clone());
                    }
                }
            }
            ListKind::Map(keys) => {
                let names = keys.names();
                for a in al {
                    let ak = element_key(a, &names);
                    match ll.iter().position(|e| element_key(e, &names) == ak) {
                        Some(i) => merge(&mut ll[i], a, shape.items(), ""),
                        None => ll.push(a.clone()),
                    }
                }
            }
        }
        return;
    }
    *live = applied.clone();
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `status` for writes through the status subresource.
    pub subresource: String,
    /// apiVersion of the write.
    pub api_version: String,
    /// Time of the last write (RFC 3339).
    pub time: String,
    /// Owned fields.
    pub fields: FieldSet,
}

/// Decode `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    let list = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                decode(f, Vec::new(), &mut fields);
            }
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

fn decode(node: &Value, path: Path, out: &mut FieldSet) {
    let Some(m) = node.as_object() else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path);
        return;
    }
    for (k, v) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let pe = if let Some(f) = k.strip_prefix("f:") {
            Pe::F(f.to_string())
        } else if let Some(kk) = k.strip_prefix("k:") {
            Pe::K(kk.to_string())
        } else if let Some(vv) = k.strip_prefix("v:") {
            Pe::V(vv.to_string())
        } else {
            continue;
        };
        let mut p = path.clone();
        p.push(pe);
        decode(v, p, out);
    }
}

fn encode(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for pe in path {
            let key = match pe {
                Pe::F(f) => format!("f:{f}"),
                Pe::K(k) => format!("k:{k}"),
                Pe::V(v) => format!("v:{v}"),
            };
            cur = cur
                .entry(key)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("field nodes are objects");
        }
    }
    // A node that is owned itself and has owned children carries a "." marker.
    fn mark(node: &mut Map<String, Value>, path: &mut Path, fields: &FieldSet) {
        for (k, v) in node.iter_mut() {
            let pe = match k.split_at(2) {
                ("f:", f) => Pe::F(f.to_string()),
                ("k:", kk) => Pe::K(kk.to_string()),
                ("v:", vv) => Pe::V(vv.to_string()),
                _ => continue,
            };
            path.push(pe);
            if let Some(child) = v.as_object_mut()
                && !child.is_empty()
            {
                mark(child, path, fields);
                if fields.contains(path) {
                    child.insert(".".into(), json!({}));
                }
            }
            path.pop();
        }
    }
    mark(&mut root, &mut Vec::new(), fields);
    Value::Object(root)
}

/// Write `entries` back into `obj.metadata.managedFields` (dropping empty ones).
pub fn store_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = Value::String(e.subresource.clone());
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn find_or_add<'e>(
    entries: &'e mut Vec<Entry>,
    manager: &str,
    op: &str,
    sub: &str,
    api_version: &str,
) -> &'e mut Entry {
    let pos = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == op && e.subresource == sub);
    let idx = match pos {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.into(),
                operation: op.into(),
                subresource: sub.into(),
                api_version: api_version.into(),
                time: String::new(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    &mut entries[idx]
}

/// Who wrote, how and when.
pub struct Writer<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Current time (RFC 3339).
    pub now: &'a str,
    /// The part of the object the request may change.
    pub scope: Scope,
}

/// Record an ordinary write (create, update, patch): the writer takes over every leaf it
/// changed; leaves that disappeared are dropped from every manager. `new` receives the
/// updated `managedFields`.
pub fn record_update(old: Option<&Value>, new: &mut Value, shape: Shape<'_>, w: &Writer<'_>) {
    let mut es = old.map(entries).unwrap_or_default();
    let before = old.map(|o| leaves(o, shape, w.scope)).unwrap_or_default();
    let after = leaves(new, shape, w.scope);
    let changed: FieldSet = after
        .iter()
        .filter(|p| !before.contains(*p) || old.and_then(|o| get_at(o, p)) != get_at(new, p))
        .cloned()
        .collect();
    for e in es.iter_mut() {
        e.fields.retain(|p| {
            !(in_scope_path(p, w.scope) && (!after.contains(p) || changed.contains(p)))
        });
    }
    if !changed.is_empty() {
        let sub = if w.scope == Scope::Status {
            "status"
        } else {
            ""
        };
        let e = find_or_add(&mut es, w.manager, "Update", sub, w.api_version);
        e.fields.extend(changed);
        e.time = w.now.into();
        e.api_version = w.api_version.into();
    }
    store_entries(new, &es);
}

fn in_scope_path(p: &Path, scope: Scope) -> bool {
    match p.first() {
        Some(Pe::F(f)) if f == "metadata" => scope != Scope::Status,
        Some(Pe::F(f)) => in_scope(f, scope),
        _ => false,
    }
}

fn show_path(p: &Path) -> String {
    p.iter()
        .map(|pe| match pe {
            Pe::F(f) => format!(".{f}"),
            Pe::K(k) => format!("[{k}]"),
            Pe::V(v) => format!("[={v}]"),
        })
        .collect()
}

/// Server-side apply of `applied` onto `live` (None: the object does not exist yet; the
/// caller passes a skeleton with metadata). Returns the merged object with updated
/// `managedFields`, or 409 listing the conflicting fields and their managers.
pub fn apply(
    live: &Value,
    applied: &Value,
    shape: Shape<'_>,
    w: &Writer<'_>,
    force: bool,
) -> ApiResult<Value> {
    let mut es = entries(live);
    let sub = if w.scope == Scope::Status {
        "status"
    } else {
        ""
    };
    let applied_set = leaves(applied, shape, w.scope);
    let conflicts = conflicts(live, applied, &applied_set, &es, w.manager);
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    let previous = es
        .iter()
        .find(|e| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut result = live.clone();
    for p in previous.difference(&applied_set) {
        let shared = es
            .iter()
            .any(|e| !(e.manager == w.manager && e.operation == "Apply") && e.fields.contains(p));
        if !shared {
            remove_at(&mut result, p);
        }
    }
    merge(&mut result, &in_scope_part(applied, w.scope), shape, "");
    for (p, m) in &conflicts {
        for e in es.iter_mut().filter(|e| &e.manager == m) {
            e.fields.retain(|q| !(q.starts_with(p)));
        }
    }
    let e = find_or_add(&mut es, w.manager, "Apply", sub, w.api_version);
    e.fields = applied_set;
    e.time = w.now.into();
    e.api_version = w.api_version.into();
    store_entries(&mut result, &es);
    Ok(result)
}

/// The applied fields (`applied_set`) that another manager owns with a different value
/// in `live`, with that manager.
fn conflicts(
    live: &Value,
    applied: &Value,
    applied_set: &FieldSet,
    es: &[Entry],
    manager: &str,
) -> Vec<(Path, String)> {
    let mut conflicts = Vec::new();
    for e in es {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in applied_set {
            if get_at(applied, p).is_some_and(Value::is_object) {
                // An empty map claims the field's presence, not its entries.
                continue;
            }
            let owned = e.fields.contains(p)
                || e.fields
                    .iter()
                    .any(|q| q.starts_with(p) && q.len() > p.len());
            if owned && get_at(live, p) != get_at(applied, p) {
                conflicts.push((p.clone(), e.manager.clone()));
            }
        }
    }
    conflicts
}

/// The 409 an unforced apply with `conflicts` answers.
fn conflict_error(conflicts: &[(Path, String)]) -> ApiError {
    let list: Vec<String> = conflicts
        .iter()
        .map(|(p, m)| format!("conflict with {m:?}: {}", show_path(p)))
        .collect();
    let msg = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        list.join("; ")
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(p, m)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?}"), "field": show_path(p)}))
        .collect();
    let mut err = ApiError::conflict("", "", "", "");
    err.message = msg;
    err.details = Some(json!({ "causes": causes }));
    err
}

/// The part of `applied` a write in `scope` may set (of metadata, only what managers
/// own).
fn in_scope_part(applied: &Value, scope: Scope) -> Value {
    let mut scoped = Map::new();
    if let Value::Object(am) = applied {
        for (k, v) in am {
            if in_scope(k, scope) {
                scoped.insert(k.clone(), v.clone());
            } else if k == "metadata" && scope != Scope::Status {
                let mut mm = Map::new();
                for mk in OWNED_META {
                    if let Some(x) = v.get(mk) {
                        mm.insert(mk.into(), x.clone());
                    }
                }
                scoped.insert(k.clone(), Value::Object(mm));
            }
        }
    }
    Value::Object(scoped)
}

#[cfg(test)]
mod tests;
