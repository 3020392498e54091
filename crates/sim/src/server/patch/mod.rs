//! The three classic patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch for built-in types (what `kubectl patch` and client-side
//! `kubectl apply` send). Strategic merge knows the merge keys of the lists kubectl and
//! the drain code touch (containers, env, volumes, conditions, ownerReferences, taints, ...)
//! and the `$patch`, `$retainKeys`, `$setElementOrder/` and `$deleteFromPrimitiveList/`
//! directives; other lists are replaced, as for a field without a patch strategy.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// Which patch format a request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                 (got {other:?})"
            ))),
        }
    }
}

/// Apply a merge, JSON or strategic patch to a copy of `target`.
pub fn apply_classic(target: &Value, kind: PatchType, body: &[u8]) -> ApiResult<Value> {
    let mut out = target.clone();
    match kind {
        PatchType::Merge => {
            let p: Value = parse(body)?;
            json_patch::merge(&mut out, &p);
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &p).map_err(|e| {
                ApiError::unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
        }
        PatchType::Strategic => {
            let p: Value = parse(body)?;
            strategic_merge(&mut out, &p)?;
        }
        PatchType::Apply => {
            return Err(ApiError::internal(
                "apply patches are handled by server-side apply",
            ));
        }
    }
    Ok(out)
}

fn parse(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// How a list field merges under strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListMerge {
    /// Elements are objects merged by this key.
    Key(&'static str),
    /// A list of scalars merged as a set.
    Primitive,
}

/// The strategic-merge strategy of list field `name` given its elements (`ports` is keyed
/// by `containerPort` in containers and by `port` in Services).
pub fn list_strategy(name: &str, sample: Option<&Value>) -> Option<ListMerge> {
    Some(match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => ListMerge::Key("name"),
        "conditions" | "addresses" => ListMerge::Key("type"),
        "ownerReferences" => ListMerge::Key("uid"),
        "taints" => ListMerge::Key("key"),
        "volumeMounts" => ListMerge::Key("mountPath"),
        "volumeDevices" => ListMerge::Key("devicePath"),
        "hostAliases" => ListMerge::Key("ip"),
        "topologySpreadConstraints" => ListMerge::Key("topologyKey"),
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                ListMerge::Key("containerPort")
            } else {
                ListMerge::Key("port")
            }
        }
        "finalizers" => ListMerge::Primitive,
        _ => return None,
    })
}

/// Strategic merge `patch` into `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        match pv {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(po) if po.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            Value::Object(_) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, pv)?;
            }
            Value::Array(items) => {
                let sample = items
                    .iter()
                    .find(|i| i.is_object())
                    .or_else(|| t.get(k).and_then(|v| v.get(0)));
                match list_strategy(k, sample) {
                    Some(strategy) => {
                        let entry = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                        merge_list(entry, items, strategy)?;
                    }
                    None => {
                        t.insert(k.clone(), pv.clone());
                    }
                }
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(remove)) = (t.get_mut(field), pv.as_array())
        {
            list.retain(|v| !remove.contains(v));
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) = (t.get_mut(field), pv.as_array())
        {
            reorder(list, order, field);
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(target: &mut Value, items: &[Value], strategy: ListMerge) -> ApiResult<()> {
    if !target.is_array() {
        *target = Value::Array(vec![]);
    }
    let list = target.as_array_mut().expect("made an array above");
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *list = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    match strategy {
        ListMerge::Primitive => {
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        ListMerge::Key(key) => {
            for item in items {
                let Some(kv) = item.get(key) else {
                    return Err(ApiError::bad_request(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let pos = list.iter().position(|e| e.get(key) == Some(kv));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => strategic_merge(&mut list[i], item)?,
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        strategic_merge(&mut fresh, item)?;
                        list.push(fresh);
                    }
                }
            }
        }
    }
    Ok(())
}

fn reorder(list: &mut Vec<Value>, order: &[Value], field: &str) {
    let key = match list_strategy(field, list.first()) {
        Some(ListMerge::Key(k)) => Some(k),
        _ => None,
    };
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&id).collect();
    let mut ordered: Vec<Value> = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(pos) = list.iter().position(|e| id(e) == *w) {
            ordered.push(list.remove(pos));
        }
    }
    ordered.append(list);
    *list = ordered;
}

#[cfg(test)]
mod tests;
