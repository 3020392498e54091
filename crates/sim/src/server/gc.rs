//! What happens after an object is finally removed, done before the request returns: a
//! terminating namespace disappears when empty, a deleted CRD takes its objects and
//! resource with it, PodDisruptionBudget status follows the pods, and the removal is
//! queued for the garbage collector, which (in `collector`) deletes dependents whose
//! owners are all gone a moment later, as the real one does.

use std::sync::Arc;

use serde_json::Value;

use super::delete::{FOREGROUND, ORPHAN};
use super::store::{GcItem, Hook, ObjRef, Store};
use super::write::{Ctx, Managed};

impl Store {
    /// Run queued follow-up work until none is left.
    pub fn run_hooks(&mut self) {
        let mut guard = 0usize;
        while let Some(h) = self.hooks.pop_front() {
            guard += 1;
            if guard > 100_000 {
                tracing::error!("follow-up work does not converge; dropping the rest");
                self.hooks.clear();
                return;
            }
            match h {
                Hook::Removed(r, obj) => self.after_removal(&r, &obj),
                Hook::Budgets(ns) => {
                    // Coalesce: one refresh per namespace for a burst of pod writes.
                    self.hooks
                        .retain(|h| !matches!(h, Hook::Budgets(n) if *n == ns));
                    self.refresh_budgets(&ns);
                }
            }
        }
    }

    fn after_removal(&mut self, r: &ObjRef, obj: &Arc<Value>) {
        if r.group == "apiextensions.k8s.io" && r.plural == "customresourcedefinitions" {
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let plural = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for o in self.list(&group, &plural, None) {
                let ns = super::store::meta_str(&o, "namespace");
                let name = super::store::meta_str(&o, "name");
                self.remove(&group, &plural, &ns, &name);
            }
            self.table.unregister(&r.name);
        }
        // The garbage collector learns of the removal and acts a moment later.
        let uid = super::store::meta_str(obj, "uid");
        self.queue_gc(GcItem::OwnerGone(uid));
        for owner in owner_uids(obj) {
            if self.waits_for_collector(&owner) {
                self.queue_gc(GcItem::Deleting(owner));
            }
        }
        if !r.namespace.is_empty() {
            self.finish_namespace(&r.namespace);
        }
    }

    /// Whether the object with `uid` is being deleted with a finalizer the garbage
    /// collector removes (`orphan`, `foregroundDeletion`).
    pub fn waits_for_collector(&self, uid: &str) -> bool {
        let Some(r) = self.by_uid(uid) else {
            return false;
        };
        self.get(&r.group, &r.plural, &r.namespace, &r.name)
            .is_some_and(|o| {
                o.pointer("/metadata/deletionTimestamp").is_some()
                    && finalizers(&o).any(|f| f == FOREGROUND || f == ORPHAN)
            })
    }

    /// Remove `finalizer` from the object at `r` (its current version `obj`).
    pub fn remove_finalizer(&mut self, r: &ObjRef, obj: &Arc<Value>, finalizer: &str) {
        let Some(rd) = self.table.by_plural(&r.group, &r.plural) else {
            return;
        };
        let mut new = (**obj).clone();
        if let Some(list) = new
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            list.retain(|f| f != finalizer);
        }
        let version = rd.storage_version().to_string();
        let sc = super::write::scope(&rd, &version, false);
        let mut ctx = Ctx::internal("garbage-collector");
        if let Err(e) = self.admit(
            &mut ctx,
            &rd,
            &version,
            Some(obj.clone()),
            new,
            sc,
            Managed::Record,
        ) {
            tracing::warn!(error = %e, object = %r.name, "removing finalizer");
        }
    }
}

/// The uids an object's ownerReferences name.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(String::from))
        .collect()
}

/// An object's finalizers.
pub fn finalizers(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}
