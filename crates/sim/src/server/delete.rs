//! Deletion: preconditions, graceful pod deletion (a bound pod gets a deletionTimestamp
//! and its kubelet finishes the job), finalizers (the object stays, marked, until they are
//! gone), propagation policies (Background, Foreground, Orphan: what the request itself
//! does; the garbage collector in `collector` does the rest later) and namespace
//! termination.

use std::sync::Arc;

use chrono::{Duration, SecondsFormat};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::resources::ResourceDef;
use super::store::{GcItem, Store, meta_str};
use super::write::Ctx;

/// `DeleteOptions` from the body and query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `propagationPolicy`: Background (default), Foreground or Orphan.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOpts {
    /// Merge a JSON `DeleteOptions` body (query values win when both are given).
    pub fn merge_body(&mut self, body: &Value) {
        if self.grace.is_none() {
            self.grace = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        }
        if self.propagation.is_none() {
            self.propagation = body
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from);
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && self.propagation.is_none()
        {
            self.propagation = Some("Orphan".into());
        }
        self.uid = self.uid.take().or_else(|| {
            body.pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from)
        });
        self.resource_version = self.resource_version.take().or_else(|| {
            body.pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from)
        });
    }
}

/// Finalizer of an owner deleted in the foreground: it stays until the garbage
/// collector has deleted its blocking dependents.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an owner deleted with the Orphan policy: it stays until the garbage
/// collector has removed the dependents' references to it.
pub const ORPHAN: &str = "orphan";

fn is_pod(rd: &ResourceDef) -> bool {
    rd.group.is_empty() && rd.plural == "pods"
}

/// 409 when the object is not the one the preconditions name.
fn check_preconditions(
    rd: &ResourceDef,
    name: &str,
    old: &Value,
    opts: &DeleteOpts,
) -> ApiResult<()> {
    for (label, field, wanted) in [
        ("UID", "uid", &opts.uid),
        ("ResourceVersion", "resourceVersion", &opts.resource_version),
    ] {
        let actual = meta_str(old, field);
        if let Some(wanted) = wanted
            && *wanted != actual
        {
            return Err(ApiError::conflict(
                &rd.group,
                &rd.plural,
                name,
                &format!(
                    "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// The grace period of a pod that a kubelet must stop first (bound, still running, and
/// a grace period above zero); `None` when it can go at once.
fn graceful_pod_grace(pod: &Value, opts: &DeleteOpts) -> Option<i64> {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let bound = !text("/spec/nodeName").is_empty();
    let terminal = matches!(text("/status/phase"), "Succeeded" | "Failed");
    let grace = opts
        .grace
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0);
    (bound && !terminal && grace > 0).then_some(grace)
}

impl Store {
    /// Objects whose ownerReferences name `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<(super::store::ObjRef, Arc<Value>)> {
        self.all_objects()
            .into_iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .collect()
    }

    fn mark_deleting(
        &mut self,
        rd: &ResourceDef,
        old: &Arc<Value>,
        when: String,
        grace: i64,
        extra_finalizer: Option<&str>,
    ) -> Value {
        let mut obj = (**old).clone();
        let meta = &mut obj["metadata"];
        if meta.get("deletionTimestamp").is_none() {
            let g = meta["generation"].as_i64().unwrap_or(0);
            meta["generation"] = json!(g + 1);
        }
        meta["deletionTimestamp"] = Value::String(when);
        meta["deletionGracePeriodSeconds"] = json!(grace);
        if let Some(f) = extra_finalizer {
            let list = meta["finalizers"].as_array().cloned().unwrap_or_default();
            if !list.iter().any(|x| x == f) {
                let mut l = list;
                l.push(Value::String(f.into()));
                meta["finalizers"] = Value::Array(l);
            }
        }
        if rd.group.is_empty() && rd.plural == "namespaces" {
            obj["status"]["phase"] = Value::String("Terminating".into());
        }
        (*self.put(rd, obj, Some(old.clone()))).clone()
    }

    /// DELETE one object: check preconditions, then, by kind of object, start a
    /// graceful pod deletion, start namespace termination, or apply the propagation
    /// policy and finalizers; otherwise remove it.
    pub fn delete(
        &mut self,
        ctx: &mut Ctx,
        rd: &Arc<ResourceDef>,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<Value> {
        let old = self
            .get(&rd.group, &rd.plural, ns, name)
            .ok_or_else(|| ApiError::not_found(&rd.group, &rd.plural, name))?;
        check_preconditions(rd, name, &old, opts)?;
        let write = super::write::Write {
            rd,
            version: rd.storage_version(),
            subresource: "",
            object: None,
            old_object: Some(&old),
        };
        self.admission(ctx, &write)?;
        if ctx.dry_run {
            return Ok((*old).clone());
        }
        let now = ctx.now;
        let stamp =
            |secs: i64| (now + Duration::seconds(secs)).to_rfc3339_opts(SecondsFormat::Secs, true);
        if is_pod(rd)
            && let Some(grace) = graceful_pod_grace(&old, opts)
        {
            let current = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if current.is_some_and(|c| c <= grace) {
                return Ok((*old).clone());
            }
            return Ok(self.mark_deleting(rd, &old, stamp(grace), grace, None));
        }
        if rd.group.is_empty() && rd.plural == "namespaces" {
            let marked = if old.pointer("/metadata/deletionTimestamp").is_none() {
                self.mark_deleting(rd, &old, stamp(0), 0, None)
            } else {
                (*old).clone()
            };
            // Like the namespace controller, the contents go a moment later.
            self.terminating_namespaces
                .entry(name.to_string())
                .or_insert_with(std::time::Instant::now);
            return Ok(self.current_or(rd, ns, name, marked));
        }
        if let Some(waiting) = self.propagate(rd, &old, opts, stamp(0))? {
            return Ok(waiting);
        }
        self.finalize_or_remove(rd, ns, name, &old, stamp(0))
    }

    /// Apply the propagation policy: Background leaves the dependents to the garbage
    /// collector once the owner is gone; Orphan and Foreground mark the owner with their
    /// finalizer (`orphan`, `foregroundDeletion`) and queue it for the collector, which
    /// orphans or deletes the dependents and then removes the finalizer. Returns the
    /// marked owner.
    fn propagate(
        &mut self,
        rd: &ResourceDef,
        old: &Arc<Value>,
        opts: &DeleteOpts,
        now: String,
    ) -> ApiResult<Option<Value>> {
        let finalizer = match opts.propagation.as_deref().unwrap_or("Background") {
            "Orphan" => ORPHAN,
            "Foreground" => FOREGROUND,
            "Background" => return Ok(None),
            other => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        };
        let marked = self.mark_deleting(rd, old, now, 0, Some(finalizer));
        self.queue_gc(GcItem::Deleting(meta_str(old, "uid")));
        Ok(Some(marked))
    }

    /// The object as stored now, or `fallback` if it went meanwhile.
    fn current_or(&self, rd: &ResourceDef, ns: &str, name: &str, fallback: Value) -> Value {
        self.get(&rd.group, &rd.plural, ns, name)
            .map_or(fallback, |v| (*v).clone())
    }

    /// An object with finalizers is only marked (once); one without is removed.
    fn finalize_or_remove(
        &mut self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        old: &Arc<Value>,
        now: String,
    ) -> ApiResult<Value> {
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((**old).clone());
            }
            return Ok(self.mark_deleting(rd, old, now, 0, None));
        }
        let last = self
            .remove(&rd.group, &rd.plural, ns, name)
            .ok_or_else(|| ApiError::not_found(&rd.group, &rd.plural, name))?;
        Ok((*last).clone())
    }

    /// Delete the object at `r` on the server's own behalf (garbage collection,
    /// namespace cleanup); errors are ignored because the object may already be gone.
    pub fn delete_ref(&mut self, r: &super::store::ObjRef, policy: &str) {
        if let Some(rd) = self.table.by_plural(&r.group, &r.plural) {
            let mut ctx = Ctx::internal("garbage-collector");
            let opts = DeleteOpts {
                propagation: Some(policy.into()),
                ..Default::default()
            };
            if let Err(e) = self.delete(&mut ctx, &rd, &r.namespace, &r.name, &opts) {
                tracing::debug!(error = %e, object = %r.name, "internal delete");
            }
        }
    }

    /// Remove the reference to `owner_uid` from the dependent `dep` at `r`.
    pub fn drop_owner_ref(&mut self, r: &super::store::ObjRef, dep: &Arc<Value>, owner_uid: &str) {
        let Some(rd) = self.table.by_plural(&r.group, &r.plural) else {
            return;
        };
        let mut obj = (**dep).clone();
        if let Some(refs) = obj
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|x| x["uid"] != owner_uid);
            if refs.is_empty() {
                obj["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("ownerReferences"));
            }
        }
        self.put(&rd, obj, Some(dep.clone()));
    }

    /// Delete everything in namespace `ns` (which is terminating) and remove the
    /// namespace once nothing is left.
    pub fn empty_namespace(&mut self, ns: &str) {
        let inside: Vec<_> = self
            .all_objects()
            .into_iter()
            .filter(|(r, _)| r.namespace == ns)
            .collect();
        for (r, obj) in inside {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                self.delete_ref(&r, "Background");
            }
        }
        self.finish_namespace(ns);
    }

    /// When the namespace controller should next look, if a deletion is pending.
    pub fn next_namespace_due(&self, delay: std::time::Duration) -> Option<std::time::Instant> {
        self.terminating_namespaces
            .values()
            .min()
            .map(|t| *t + delay)
    }

    /// Empty the namespaces whose deletion started at least `delay` before `now`;
    /// whether there were any.
    pub fn process_terminating_namespaces(
        &mut self,
        delay: std::time::Duration,
        now: std::time::Instant,
    ) -> bool {
        let pending: Vec<String> = self
            .terminating_namespaces
            .iter()
            .filter(|(_, t)| **t + delay <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in &pending {
            self.terminating_namespaces.remove(ns);
            let terminating = self
                .get("", "namespaces", "", ns)
                .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some());
            if terminating {
                self.empty_namespace(ns);
            }
        }
        !pending.is_empty()
    }

    /// Remove terminating namespace `ns` if it holds no objects any more.
    pub fn finish_namespace(&mut self, ns: &str) {
        let Some(nso) = self.get("", "namespaces", "", ns) else {
            return;
        };
        if nso.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        if self.all_objects().iter().any(|(r, _)| r.namespace == ns) {
            return;
        }
        self.remove("", "namespaces", "", ns);
    }
}
