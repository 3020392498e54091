//! Create, update and patch: one admission path for every write. It enforces identity
//! and immutable metadata, the status subresource split, CRD schemas (pruning, defaults,
//! validation, strict field validation), finalizers on objects being deleted, generation
//! bumps, field ownership, optimistic concurrency (409 on a stale resourceVersion) and
//! no-op detection (an unchanged object keeps its resourceVersion and emits no event).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::apply::{Scope, Shape};
use super::error::{ApiError, ApiResult, FieldError};
use super::patch::{self, PatchType};
use super::resources::ResourceDef;
use super::store::{Store, meta_str};

/// `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and warn.
    Warn,
    /// Reject the request.
    Strict,
}

/// Per-request facts every write needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Field manager for ownership.
    pub manager: String,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// Unknown-field handling.
    pub validation: FieldValidation,
    /// Warnings for the `Warning` response header.
    pub warnings: Vec<String>,
    /// Request time.
    pub now: DateTime<Utc>,
    /// Who asked, for admission policies; None for the server's own writes.
    pub requester: Option<Requester>,
}

/// The caller of a write, as admission policies see it.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    /// User name.
    pub user: String,
    /// The node a pod-bound token names.
    pub node_name: Option<String>,
}

impl Ctx {
    /// A context for an internal write by the server itself.
    pub fn internal(manager: &str) -> Self {
        Ctx {
            manager: manager.into(),
            dry_run: false,
            validation: FieldValidation::Ignore,
            warnings: vec![],
            now: Utc::now(),
            requester: None,
        }
    }
    /// `now` as RFC 3339 with seconds.
    pub fn now_str(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// Which part of the object a request addresses.
pub fn scope(rd: &ResourceDef, version: &str, status: bool) -> Scope {
    match (status, rd.has_status(version)) {
        (true, _) => Scope::Status,
        (false, true) => Scope::Main,
        (false, false) => Scope::All,
    }
}

fn shape<'a>(rd: &'a ResourceDef, version: &str) -> Shape<'a> {
    if rd.custom.is_some() {
        Shape::custom(rd.schema(version))
    } else {
        Shape::builtin()
    }
}

fn is_crd(rd: &ResourceDef) -> bool {
    rd.group == "apiextensions.k8s.io" && rd.plural == "customresourcedefinitions"
}

/// A fresh uid in the UUID v4 text form.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::rng();
    (0..5)
        .map(|_| ALPHABET[r.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Check a DNS-1123 subdomain (most names) or label (namespaces).
pub fn check_name(name: &str, label: bool) -> Option<FieldError> {
    let max = if label { 63 } else { 253 };
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_chars && ends_ok && name.len() <= max {
        return None;
    }
    let what = if label {
        "RFC 1123 label"
    } else {
        "RFC 1123 subdomain"
    };
    Some(FieldError::invalid(
        "metadata.name",
        Value::String(name.into()),
        format!(
            "a lowercase {what} must consist of lower case alphanumeric characters, '-'{} and must start and end \
             with an alphanumeric character (at most {max} characters)",
            if label { "" } else { " or '.'," }
        ),
    ))
}

/// Defaults and status resets a real API server applies on create.
/// A new Node gets the not-ready NoSchedule taint, as the `TaintNodesByCondition`
/// admission plugin gives it; the node lifecycle controller removes it once the node
/// reports Ready.
fn not_ready_on_registration(obj: &mut Value) {
    let taint = json!({"key": crate::taints::NOT_READY, "effect": crate::taints::NO_SCHEDULE});
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let list = obj["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let present = list
        .iter()
        .any(|t| t["key"] == taint["key"] && t["effect"] == taint["effect"]);
    if !present {
        let mut list = list;
        list.push(taint);
        obj["spec"]["taints"] = Value::Array(list);
    }
}

fn on_create(rd: &ResourceDef, obj: &mut Value) {
    let resets_status = rd.custom.is_some()
        || matches!(
            (rd.group.as_str(), rd.plural.as_str()),
            ("", "pods" | "namespaces" | "services") | ("apps", _) | ("policy", _)
        );
    if resets_status
        && rd.has_status(rd.storage_version())
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match (rd.group.as_str(), rd.plural.as_str()) {
        ("", "pods") => {
            let spec = &mut obj["spec"];
            if spec.get("terminationGracePeriodSeconds").is_none() {
                spec["terminationGracePeriodSeconds"] = json!(30);
            }
            if spec.get("restartPolicy").is_none() {
                spec["restartPolicy"] = json!("Always");
            }
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "nodes") => not_ready_on_registration(obj),
        ("", "namespaces") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("apps", "deployments" | "replicasets" | "statefulsets")
            if obj.pointer("/spec/replicas").is_none() =>
        {
            obj["spec"]["replicas"] = json!(1);
        }
        _ => {}
    }
}

/// The object a request addresses.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Its resource.
    pub rd: &'a Arc<ResourceDef>,
    /// The version the client speaks.
    pub version: &'a str,
    /// Its namespace ("" for cluster-scoped resources).
    pub ns: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Whether the status subresource is addressed.
    pub status: bool,
}

/// Conversions between a stored shape and the shape a client patches: (stored ->
/// client, client -> stored).
pub type ShapeView = (fn(Value) -> Value, fn(Value) -> Value);

/// How field ownership of a write is recorded.
pub enum Managed {
    /// Give the writer what it changed.
    Record,
    /// Already computed (server-side apply).
    Done,
}

/// The new object's name: as given, or `generateName` plus a random suffix.
fn assign_name(rd: &ResourceDef, obj: &mut Value) -> ApiResult<String> {
    let name = meta_str(obj, "name");
    if !name.is_empty() {
        return Ok(name);
    }
    let gen_name = meta_str(obj, "generateName");
    if gen_name.is_empty() {
        return Err(ApiError::invalid(
            &rd.group,
            &rd.kind,
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    let name = format!("{gen_name}{}", random_suffix());
    obj["metadata"]["name"] = Value::String(name.clone());
    Ok(name)
}

/// Metadata the server sets on create (what the client sent for it is dropped).
fn set_create_meta(ctx: &Ctx, obj: &mut Value, managed: &Managed) {
    let m = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(k);
    }
    if matches!(managed, Managed::Record) {
        m.remove("managedFields");
    }
    m.insert("uid".into(), Value::String(new_uid()));
    m.insert("creationTimestamp".into(), Value::String(ctx.now_str()));
    m.insert("generation".into(), json!(1));
}

/// 409 unless `sent` (a request's resourceVersion; empty for none) is the stored one.
fn check_fresh(rd: &ResourceDef, name: &str, sent: &str, old: &Value) -> ApiResult<()> {
    if sent.is_empty() || sent == meta_str(old, "resourceVersion") {
        return Ok(());
    }
    Err(ApiError::conflict(
        &rd.group,
        &rd.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    ))
}

impl Store {
    /// POST: create a new object in `ns` ("" for cluster-scoped resources).
    pub fn create(
        &mut self,
        ctx: &mut Ctx,
        rd: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        obj: Value,
    ) -> ApiResult<Value> {
        self.create_with(ctx, rd, version, ns, obj, Managed::Record)
    }

    fn create_with(
        &mut self,
        ctx: &mut Ctx,
        rd: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        mut obj: Value,
        managed: Managed,
    ) -> ApiResult<Value> {
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && av != rd.api_version(version)
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rd.api_version(version)
            )));
        }
        let name = assign_name(rd, &mut obj)?;
        let is_ns = rd.group.is_empty() && rd.plural == "namespaces";
        if let Some(e) = check_name(&name, is_ns) {
            return Err(ApiError::invalid(&rd.group, &rd.kind, &name, &[e]));
        }
        if rd.namespaced {
            self.check_namespace_open(rd, ns, &name, &obj)?;
            obj["metadata"]["namespace"] = Value::String(ns.into());
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if self.get(&rd.group, &rd.plural, ns, &name).is_some() {
            return Err(ApiError::already_exists(&rd.group, &rd.plural, &name));
        }
        set_create_meta(ctx, &mut obj, &managed);
        on_create(rd, &mut obj);
        let sc = scope(rd, version, false);
        self.admit(ctx, rd, version, None, obj, sc, managed)
    }

    /// A namespaced create must match the request's namespace, which must exist and
    /// not be terminating.
    fn check_namespace_open(
        &self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        obj: &Value,
    ) -> ApiResult<()> {
        let body_ns = meta_str(obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let Some(nso) = self.get("", "namespaces", "", ns) else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        if nso["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rd.group_resource()
            )));
        }
        Ok(())
    }

    fn existing(&self, rd: &ResourceDef, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.get(&rd.group, &rd.plural, ns, name)
            .ok_or_else(|| ApiError::not_found(&rd.group, &rd.plural, name))
    }

    /// PUT: replace an object (or its status).
    pub fn replace(&mut self, ctx: &mut Ctx, t: Target<'_>, obj: Value) -> ApiResult<Value> {
        let (rd, version, ns, name) = (t.rd, t.version, t.ns, t.name);
        let old = self.existing(rd, ns, name)?;
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let rv = meta_str(&obj, "resourceVersion");
        if rv.is_empty() && rd.custom.is_some() {
            return Err(ApiError::invalid(
                &rd.group,
                &rd.kind,
                name,
                &[FieldError::invalid(
                    "metadata.resourceVersion",
                    json!(0),
                    "must be specified for an update",
                )],
            ));
        }
        check_fresh(rd, name, &rv, &old)?;
        self.admit(
            ctx,
            rd,
            version,
            Some(old),
            obj,
            scope(rd, version, t.status),
            Managed::Record,
        )
    }

    /// PATCH: merge, JSON, strategic merge or server-side apply. Apply creates a missing
    /// object; the others answer 404. With a `view` the object is stored in one shape
    /// and patched in another (stored -> patched shape, patched -> stored shape; Events).
    pub fn patch(
        &mut self,
        ctx: &mut Ctx,
        t: Target<'_>,
        kind: PatchType,
        body: &[u8],
        force: bool,
        view: Option<ShapeView>,
    ) -> ApiResult<Value> {
        let (rd, version, ns, name) = (t.rd, t.version, t.ns, t.name);
        let sc = scope(rd, version, t.status);
        if kind == PatchType::Apply && view.is_some() {
            return Err(ApiError::unsupported_media_type(format!(
                "server-side apply is not supported for {} in this test server",
                rd.group_resource()
            )));
        }
        if kind == PatchType::Apply {
            return self.server_side_apply(ctx, t, body, force);
        }
        if kind == PatchType::Strategic && rd.custom.is_some() {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                 (strategic merge patch is not supported for custom resource {})",
                rd.group_resource()
            )));
        }
        let old = self.existing(rd, ns, name)?;
        let mut current = (*old).clone();
        let out_version = rd.api_version(version);
        current["apiVersion"] = Value::String(out_version);
        if let Some((to_view, _)) = view {
            current = to_view(current);
        }
        let mut patched = patch::apply_classic(&current, kind, body)?;
        if let Some((_, from_view)) = view {
            patched = from_view(patched);
        }
        check_fresh(rd, name, &meta_str(&patched, "resourceVersion"), &old)?;
        if meta_str(&patched, "name") != name {
            return Err(ApiError::bad_request(
                "metadata.name may not be changed by a patch",
            ));
        }
        self.admit(ctx, rd, version, Some(old), patched, sc, Managed::Record)
    }
}

mod admit;
pub use admit::Write;
mod server_side;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("osupgrade-1.a", false).is_none());
        assert!(check_name("Bad_Name", false).is_some());
        assert!(check_name("a.b", true).is_some());
        assert!(check_name("-a", false).is_some());
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_ne!(uid, new_uid());
    }
}
