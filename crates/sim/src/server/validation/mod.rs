//! Structural-schema handling for custom resources, as the API server does it for a CRD's
//! `openAPIV3Schema`: prune unknown fields (or report them under strict field validation),
//! drop nulls the schema does not allow, apply `default`s, then validate types, required
//! fields, enums, patterns, bounds, list types and `oneOf`/`anyOf`/`allOf`/`not`.
//! CEL rules (`x-kubernetes-validations`) and string `format`s are not checked.

use std::collections::BTreeSet;

use regex::Regex;
use serde_json::{Map, Value};

use super::error::{FieldError, FieldErrorKind};

const ROOT_META: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Prune, drop disallowed nulls and default `obj` in place. Returns the paths of unknown
/// fields that were (or, under strict validation, would have been) pruned.
pub fn prune_and_default(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(map) = obj {
        walk_object(map, schema, "", true, &mut unknown);
    }
    unknown
}

fn child_path(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn walk_object(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if (root || embedded) && ROOT_META.contains(&key.as_str()) {
            continue;
        }
        let sub = props
            .and_then(|p| p.get(&key))
            .or(additional.filter(|a| a.is_object()));
        match sub {
            Some(sub) => {
                let nullable = sub
                    .get("nullable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if map.get(&key).is_some_and(Value::is_null) && !nullable {
                    map.remove(&key);
                    continue;
                }
                let p = if props.is_some_and(|p| p.contains_key(&key)) {
                    child_path(path, &key)
                } else {
                    format!("{path}[{key}]")
                };
                if let Some(v) = map.get_mut(&key) {
                    walk_value(v, sub, &p, unknown);
                }
            }
            None if preserve || additional.and_then(Value::as_bool) == Some(true) => {}
            None => {
                map.remove(&key);
                unknown.push(child_path(path, &key));
            }
        }
    }
    if let Some(props) = props {
        for (key, sub) in props {
            if !map.contains_key(key)
                && let Some(d) = sub.get("default")
            {
                let mut d = d.clone();
                walk_value(&mut d, sub, &child_path(path, key), &mut Vec::new());
                map.insert(key.clone(), d);
            }
        }
    }
}

fn walk_value(v: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(map)
            if schema.get("properties").is_some()
                || schema.get("additionalProperties").is_some()
                || schema.get("type").and_then(Value::as_str) == Some("object") =>
        {
            walk_object(map, schema, path, false, unknown);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk_value(item, item_schema, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Validate `obj` (already pruned and defaulted) against `schema`; root metadata fields
/// are the server's business and skipped.
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let (Value::Object(map), Some(props)) =
        (obj, schema.get("properties").and_then(Value::as_object))
    {
        for (k, sub) in props {
            if ROOT_META.contains(&k.as_str()) {
                continue;
            }
            if let Some(v) = map.get(k) {
                check(v, sub, k, &mut errs);
            }
        }
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !ROOT_META.contains(&r) && !map.contains_key(r) {
                errs.push(FieldError::required(r, ""));
            }
        }
    }
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let body = |msg: String| format!("{path} in body {msg}");
    if v.is_null() {
        if !s.get("nullable").and_then(Value::as_bool).unwrap_or(false) {
            errs.push(FieldError::invalid(
                path,
                Value::String("null".into()),
                body(type_msg(s)),
            ));
        }
        return;
    }
    let int_or_string = s
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            errs.push(FieldError::invalid(
                path,
                Value::String(type_name(v).into()),
                body("must be of type integer or string".into()),
            ));
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            errs.push(FieldError::invalid(
                path,
                Value::String(actual.into()),
                body(format!("must be of type {t}: {actual:?}")),
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names = allowed
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| a.to_string())
            })
            .collect();
        errs.push(FieldError {
            field: path.into(),
            kind: FieldErrorKind::NotSupported(v.clone(), names),
            detail: String::new(),
        });
    }
    match v {
        Value::String(st) => check_string(st, s, path, errs),
        Value::Number(n) => check_number(v, n.as_f64().unwrap_or(0.0), s, path, errs),
        Value::Array(items) => check_array(items, s, path, errs),
        Value::Object(map) => check_object(map, s, path, errs),
        _ => {}
    }
    check_combinators(v, s, path, errs);
}

fn type_msg(s: &Value) -> String {
    format!(
        "must be of type {}: \"null\"",
        s.get("type").and_then(Value::as_str).unwrap_or("object")
    )
}

fn check_string(st: &str, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let v = || Value::String(st.to_string());
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        match Regex::new(p) {
            Ok(re) if !re.is_match(st) => {
                errs.push(FieldError::invalid(
                    path,
                    v(),
                    format!("{path} in body should match '{p}'"),
                ));
            }
            Ok(_) => {}
            Err(e) => errs.push(FieldError::invalid(
                path,
                v(),
                format!("schema pattern {p:?} does not compile: {e}"),
            )),
        }
    }
    let len = st.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errs.push(FieldError::invalid(
            path,
            v(),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errs.push(FieldError::invalid(
            path,
            v(),
            format!("{path} in body may not be longer than {max}"),
        ));
    }
}

fn check_number(v: &Value, n: f64, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let excl_min = s
        .get("exclusiveMinimum")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let excl_max = s
        .get("exclusiveMaximum")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(min) = s.get("minimum").and_then(Value::as_f64)
        && (n < min || (excl_min && n == min))
    {
        let rel = if excl_min {
            "greater than"
        } else {
            "greater than or equal to"
        };
        errs.push(FieldError::invalid(
            path,
            v.clone(),
            format!("{path} in body should be {rel} {}", num(min)),
        ));
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64)
        && (n > max || (excl_max && n == max))
    {
        let rel = if excl_max {
            "less than"
        } else {
            "less than or equal to"
        };
        errs.push(FieldError::invalid(
            path,
            v.clone(),
            format!("{path} in body should be {rel} {}", num(max)),
        ));
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
        && m > 0.0
        && (n / m).fract() != 0.0
    {
        errs.push(FieldError::invalid(
            path,
            v.clone(),
            format!("{path} in body should be a multiple of {}", num(m)),
        ));
    }
    if s.get("format").and_then(Value::as_str) == Some("int32")
        && (n < i32::MIN as f64 || n > i32::MAX as f64)
    {
        errs.push(FieldError::invalid(
            path,
            v.clone(),
            format!("{path} in body must be of type int32"),
        ));
    }
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

/// The bounds `keys` (minimum, maximum) of `s` on a count `n` of `what` (items,
/// properties).
fn check_count(
    s: &Value,
    keys: [&str; 2],
    n: u64,
    what: &str,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let [min_key, max_key] = keys;
    if let Some(min) = s.get(min_key).and_then(Value::as_u64)
        && n < min
    {
        errs.push(FieldError::invalid(
            path,
            Value::from(n),
            format!("{path} in body should have at least {min} {what}"),
        ));
    }
    if let Some(max) = s.get(max_key).and_then(Value::as_u64)
        && n > max
    {
        errs.push(FieldError::invalid(
            path,
            Value::from(n),
            format!("{path} in body should have at most {max} {what}"),
        ));
    }
}

fn check_array(items: &[Value], s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    check_count(
        s,
        ["minItems", "maxItems"],
        items.len() as u64,
        "items",
        path,
        errs,
    );
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item, item_schema, &format!("{path}[{i}]"), errs);
        }
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errs.push(FieldError {
                        field: format!("{path}[{i}]"),
                        kind: FieldErrorKind::Duplicate(item.clone()),
                        detail: String::new(),
                    });
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                    .collect();
                if !seen.insert(key.clone()) {
                    let shown = Value::String(key.join(","));
                    errs.push(FieldError {
                        field: format!("{path}[{i}]"),
                        kind: FieldErrorKind::Duplicate(shown),
                        detail: String::new(),
                    });
                }
            }
        }
        _ => {}
    }
}

fn check_object(map: &Map<String, Value>, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(props) = props {
        for (k, sub) in props {
            if let Some(v) = map.get(k) {
                check(v, sub, &child_path(path, k), errs);
            }
        }
    }
    if let Some(add) = s.get("additionalProperties").filter(|a| a.is_object()) {
        for (k, v) in map {
            if props.is_none_or(|p| !p.contains_key(k)) {
                check(v, add, &format!("{path}[{k}]"), errs);
            }
        }
    }
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(r) {
            errs.push(FieldError::required(child_path(path, r), ""));
        }
    }
    check_count(
        s,
        ["minProperties", "maxProperties"],
        map.len() as u64,
        "properties",
        path,
        errs,
    );
}

fn passes(v: &Value, s: &Value, path: &str) -> bool {
    let mut e = Vec::new();
    check(v, s, path, &mut e);
    e.is_empty()
}

fn check_combinators(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let shown = || Value::String(type_name(v).into());
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(v, sub, path, errs);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|sub| passes(v, sub, path))
    {
        errs.push(FieldError::invalid(
            path,
            shown(),
            format!("{path} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|sub| passes(v, sub, path)).count();
        if n != 1 {
            errs.push(FieldError::invalid(
                path,
                shown(),
                format!(
                    "{path} in body must validate one and only one schema (oneOf); {n} matched"
                ),
            ));
        }
    }
    if let Some(not) = s.get("not")
        && passes(v, not, path)
    {
        errs.push(FieldError::invalid(
            path,
            shown(),
            format!("{path} in body must not validate the schema (not)"),
        ));
    }
}

#[cfg(test)]
mod tests;
