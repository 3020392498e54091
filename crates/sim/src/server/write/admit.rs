//! Admission: the common tail of every write. It keeps what a request may not change
//! (identity, server-set metadata, the other side of the status split), validates
//! against CRD schemas and built-in rules, bumps the generation, records field
//! ownership and stores the object unless nothing changed.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Ctx, FieldValidation, Managed, is_crd, shape};
use crate::server::admission;
use crate::server::apply::{self, Scope, Writer};
use crate::server::crd;
use crate::server::error::{ApiError, ApiResult, FieldError};
use crate::server::resources::ResourceDef;
use crate::server::store::{Store, meta_str};
use crate::server::validation;

/// `v` without what every write changes (resourceVersion, managedFields).
fn strip_meta(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    c
}

/// What a generation counts: `v` without metadata, type and (when separate) status.
fn spec_part(v: &Value, status_separate: bool) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if status_separate {
            m.remove("status");
        }
    }
    c
}

/// Rules of built-in resources that have no schema here.
fn builtin_checks(rd: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if rd.group.is_empty() && rd.plural == "pods" {
        let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
        if containers.is_none_or(|c| c.is_empty()) {
            errs.push(FieldError::required("spec.containers", ""));
        }
    }
    if rd.group == "coordination.k8s.io"
        && let Some(d) = obj.pointer("/spec/leaseDurationSeconds")
        && d.as_i64().is_none_or(|d| d <= 0)
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d.clone(),
            "must be greater than 0",
        ));
    }
    errs
}

/// Set `key` of `to` to `from`'s `key`, or remove it where `from` has none.
fn copy_field(to: &mut Value, from: &Value, key: &str) {
    match from.get(key) {
        Some(v) => to[key] = v.clone(),
        None => {
            if let Some(m) = to.as_object_mut() {
                m.remove(key);
            }
        }
    }
}

/// Check the kind and stamp the storage apiVersion and kind on `new`.
fn set_type_meta(rd: &ResourceDef, new: &mut Value) -> ApiResult<()> {
    if let Some(k) = new.get("kind").and_then(Value::as_str)
        && k != rd.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind {k:?} does not match the resource {:?} (kind {:?})",
            rd.plural, rd.kind
        )));
    }
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    new["apiVersion"] = Value::String(rd.api_version(rd.storage_version()));
    new["kind"] = Value::String(rd.kind.clone());
    Ok(())
}

/// With a status subresource, a main write keeps the stored status and a status write
/// changes nothing but the status (and its own managedFields).
fn split_status(old: &Value, new: Value, sc: Scope) -> Value {
    match sc {
        Scope::Main => {
            let mut new = new;
            copy_field(&mut new, old, "status");
            new
        }
        Scope::Status => {
            let mut base = old.clone();
            copy_field(&mut base, &new, "status");
            copy_field(&mut base["metadata"], &new["metadata"], "managedFields");
            base
        }
        Scope::All => new,
    }
}

/// Metadata only the server sets keeps its stored value; so do managedFields when the
/// write's ownership is still to be recorded.
fn keep_immutable_meta(old: &Value, new: &mut Value, managed: &Managed) {
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        copy_field(&mut new["metadata"], &old["metadata"], k);
    }
    if matches!(managed, Managed::Record) {
        copy_field(&mut new["metadata"], &old["metadata"], "managedFields");
    }
}

/// An object being deleted may lose finalizers but gain none.
fn check_no_new_finalizers(
    rd: &ResourceDef,
    old: &Value,
    new: &Value,
    name: &str,
) -> ApiResult<()> {
    if old["metadata"].get("deletionTimestamp").is_none() {
        return Ok(());
    }
    let before: Vec<&Value> = old["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let added = new["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| !before.contains(&f)));
    if !added {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rd.group,
        &rd.kind,
        name,
        &[FieldError::forbidden(
            "metadata.finalizers",
            "no new finalizers can be added if the object is being deleted",
        )],
    ))
}

/// A change outside metadata (and outside a separate status) is a new generation.
fn bump_generation(old: &Value, new: &mut Value, status_separate: bool) {
    if spec_part(old, status_separate) != spec_part(new, status_separate) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
}

/// A write as admission policies are asked about it.
pub struct Write<'a> {
    /// The resource written.
    pub rd: &'a ResourceDef,
    /// The version of the request.
    pub version: &'a str,
    /// `status` or "".
    pub subresource: &'a str,
    /// The object after the write (None: a deletion).
    pub object: Option<&'a Value>,
    /// The object before it (None: a creation).
    pub old_object: Option<&'a Value>,
}

impl Store {
    /// Run the stored ValidatingAdmissionPolicies on a request's write (the server's own
    /// writes are not admitted).
    pub fn admission(&self, ctx: &Ctx, w: &Write<'_>) -> ApiResult<()> {
        let Some(who) = &ctx.requester else {
            return Ok(());
        };
        let bindings = self.list(admission::GROUP, "validatingadmissionpolicybindings", None);
        if bindings.is_empty() {
            return Ok(());
        }
        let policies = self.list(admission::GROUP, "validatingadmissionpolicies", None);
        let some = w.object.or(w.old_object).unwrap_or(&Value::Null);
        let attributes = admission::Attributes {
            operation: match (w.old_object, w.object) {
                (None, _) => "CREATE",
                (Some(_), Some(_)) => "UPDATE",
                (Some(_), None) => "DELETE",
            },
            group: &w.rd.group,
            version: w.version,
            resource: &w.rd.plural,
            subresource: w.subresource,
            namespace: some["metadata"]["namespace"].as_str().unwrap_or_default(),
            name: some["metadata"]["name"].as_str().unwrap_or_default(),
            user: &who.user,
            node_name: who.node_name.as_deref(),
            object: w.object,
            old_object: w.old_object,
        };
        admission::admit(&policies, &bindings, &attributes)
    }

    /// Prune, default and validate a custom resource against its CRD schema.
    fn validate_custom(
        &self,
        ctx: &mut Ctx,
        rd: &ResourceDef,
        version: &str,
        obj: &mut Value,
    ) -> ApiResult<()> {
        let Some(schema) = rd.schema(version) else {
            return Ok(());
        };
        let unknown = validation::prune_and_default(obj, schema);
        if !unknown.is_empty() {
            match ctx.validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field {u:?}"))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                        rd.kind,
                        version,
                        rd.kind,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => ctx
                    .warnings
                    .extend(unknown.iter().map(|u| format!("unknown field {u:?}"))),
                FieldValidation::Ignore => {}
            }
        }
        let errs = validation::validate(obj, schema);
        if !errs.is_empty() {
            return Err(ApiError::invalid(
                &rd.group,
                &rd.kind,
                &meta_str(obj, "name"),
                &errs,
            ));
        }
        Ok(())
    }

    /// The common tail of every write to an existing object (`old`) or a new one:
    /// shape the object, keep what the request may not change, validate, bump the
    /// generation, record ownership, then store it unless nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        ctx: &mut Ctx,
        rd: &Arc<ResourceDef>,
        version: &str,
        old: Option<Arc<Value>>,
        mut new: Value,
        sc: Scope,
        managed: Managed,
    ) -> ApiResult<Value> {
        set_type_meta(rd, &mut new)?;
        let name = meta_str(&new, "name");
        if let Some(old) = &old {
            if rd.has_status(version) {
                new = split_status(old, new, sc);
            }
            keep_immutable_meta(old, &mut new, &managed);
            check_no_new_finalizers(rd, old, &new, &name)?;
        }
        if is_crd(rd) {
            let def = crd::to_resource(&new)
                .map_err(|errs| ApiError::invalid(&rd.group, &rd.kind, &name, &errs))?;
            crd::set_status(&mut new, &def, old.as_deref(), &ctx.now_str());
        }
        self.validate_custom(ctx, rd, version, &mut new)?;
        let errs = builtin_checks(rd, &new);
        if !errs.is_empty() {
            return Err(ApiError::invalid(&rd.group, &rd.kind, &name, &errs));
        }
        let write = Write {
            rd,
            version,
            subresource: if sc == Scope::Status { "status" } else { "" },
            object: Some(&new),
            old_object: old.as_deref(),
        };
        self.admission(ctx, &write)?;
        if let Some(old) = &old {
            bump_generation(old, &mut new, rd.has_status(version));
        }
        if matches!(managed, Managed::Record) {
            let now = ctx.now_str();
            let av = rd.api_version(version);
            let w = Writer {
                manager: &ctx.manager,
                api_version: &av,
                now: &now,
                scope: sc,
            };
            apply::record_update(old.as_deref(), &mut new, shape(rd, version), &w);
        }
        if let Some(old) = &old {
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if strip_meta(old) == strip_meta(&new) {
                return Ok((**old).clone());
            }
        }
        if ctx.dry_run {
            return Ok(new);
        }
        Ok(self.store_admitted(rd, old, new))
    }

    /// Store an admitted object; a deleting object whose last finalizer went is removed
    /// instead, and a stored CRD starts serving its resource.
    fn store_admitted(
        &mut self,
        rd: &Arc<ResourceDef>,
        old: Option<Arc<Value>>,
        new: Value,
    ) -> Value {
        let deleting = new["metadata"].get("deletionTimestamp").is_some();
        let no_finalizers = new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        if deleting && no_finalizers {
            let (ns, name) = (meta_str(&new, "namespace"), meta_str(&new, "name"));
            let mut last = new;
            if let Some(r) = self.remove(&rd.group, &rd.plural, &ns, &name) {
                last["metadata"]["resourceVersion"] = r["metadata"]["resourceVersion"].clone();
            }
            return last;
        }
        let stored = self.put(rd, new, old);
        if is_crd(rd)
            && let Ok(def) = crd::to_resource(&stored)
        {
            self.table.register(def);
        }
        (*stored).clone()
    }
}
