//! Server-side apply: decode and check an apply configuration, then merge it into the
//! stored object under field ownership, or create the object from it.

use serde_json::{Value, json};

use super::{Ctx, Managed, Target, check_fresh, scope, shape};
use crate::server::apply::{self, Scope, Writer};
use crate::server::error::{ApiError, ApiResult};
use crate::server::resources::ResourceDef;
use crate::server::store::{Store, meta_str};

impl Store {
    /// Server-side apply: merge the applied configuration into the stored object under
    /// field ownership, or create the object from it.
    pub(super) fn server_side_apply(
        &mut self,
        ctx: &mut Ctx,
        t: Target<'_>,
        body: &[u8],
        force: bool,
    ) -> ApiResult<Value> {
        let (rd, version, ns, name) = (t.rd, t.version, t.ns, t.name);
        let sc = scope(rd, version, t.status);
        let applied = apply_configuration(rd, version, name, body)?;
        if ctx.manager.is_empty() {
            return Err(ApiError::unprocessable(
                "PATCH requests of type application/apply-patch+yaml require fieldManager",
            ));
        }
        let (manager, now, out_av) = (ctx.manager.clone(), ctx.now_str(), rd.api_version(version));
        let w = Writer {
            manager: &manager,
            api_version: &out_av,
            now: &now,
            scope: sc,
        };
        let Some(old) = self.get(&rd.group, &rd.plural, ns, name) else {
            if sc == Scope::Status {
                return Err(ApiError::not_found(&rd.group, &rd.plural, name));
            }
            let skeleton = create_skeleton(rd, &out_av, name, &applied);
            let scope = if sc == Scope::Main {
                Scope::Main
            } else {
                Scope::All
            };
            let w = Writer { scope, ..w };
            let merged = apply::apply(&skeleton, &applied, shape(rd, version), &w, force)?;
            return self.create_with(ctx, rd, version, ns, merged, Managed::Done);
        };
        check_fresh(rd, name, &meta_str(&applied, "resourceVersion"), &old)?;
        let merged =
            apply::apply(&old, &applied, shape(rd, version), &w, force).map_err(|mut e| {
                e.details.get_or_insert_with(|| json!({}))["name"] = Value::String(name.into());
                e
            })?;
        self.admit(ctx, rd, version, Some(old), merged, sc, Managed::Done)
    }
}

/// Decode an apply configuration and check it addresses `rd` at `version`, named `name`.
fn apply_configuration(
    rd: &ResourceDef,
    version: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<Value> {
    let applied: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "apply configuration must be an object",
        ));
    }
    let field = |k: &str| applied.get(k).and_then(Value::as_str).unwrap_or_default();
    let (av, kd) = (field("apiVersion"), field("kind"));
    if av.is_empty() || kd.is_empty() {
        return Err(ApiError::bad_request(
            "apply configuration must set apiVersion and kind",
        ));
    }
    if av != rd.api_version(version) || kd != rd.kind {
        return Err(ApiError::bad_request(format!(
            "apply configuration {av}/{kd} does not match {}/{}",
            rd.api_version(version),
            rd.kind
        )));
    }
    let body_name = meta_str(&applied, "name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(applied)
}

/// The object an apply creates from: type, name and the metadata the configuration
/// sets that a create keeps.
fn create_skeleton(rd: &ResourceDef, api_version: &str, name: &str, applied: &Value) -> Value {
    let mut skeleton =
        json!({"apiVersion": api_version, "kind": rd.kind, "metadata": {"name": name}});
    if let Some(meta) = applied.get("metadata") {
        for k in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "generateName",
        ] {
            if let Some(v) = meta.get(k) {
                skeleton["metadata"][k] = v.clone();
            }
        }
    }
    skeleton
}
