//! What happens after an object is finally removed, done synchronously before the request
//! returns (the real API server does this in controllers, a moment later): the garbage
//! collector deletes dependents whose owners are all gone, foreground owners lose their
//! `foregroundDeletion` finalizer once their dependents are gone, terminating namespaces
//! disappear when empty, a deleted CRD takes its objects and resource with it, and
//! PodDisruptionBudget status follows the pods.

use std::sync::Arc;

use serde_json::Value;

use super::delete::FOREGROUND;
use super::store::{Hook, ObjRef, Store};
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
        let uid = super::store::meta_str(obj, "uid");
        for (dr, dep) in self.dependents_of(&uid) {
            let refs = dep
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let alive = refs.iter().any(|x| {
                x["uid"] != uid.as_str()
                    && x["uid"].as_str().is_some_and(|u| self.by_uid(u).is_some())
            });
            if !alive && dep.pointer("/metadata/deletionTimestamp").is_none() {
                self.delete_ref(&dr, "Background");
            }
        }
        let owners = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for o in owners {
            let Some(ouid) = o["uid"].as_str() else {
                continue;
            };
            let Some(or) = self.by_uid(ouid).cloned() else {
                continue;
            };
            let Some(owner) = self.get(&or.group, &or.plural, &or.namespace, &or.name) else {
                continue;
            };
            let waiting = owner
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x == FOREGROUND));
            if waiting && self.dependents_of(ouid).is_empty() {
                self.remove_finalizer(&or, &owner, FOREGROUND);
            }
        }
        if !r.namespace.is_empty() {
            self.finish_namespace(&r.namespace);
        }
    }

    fn remove_finalizer(&mut self, r: &ObjRef, obj: &Arc<Value>, finalizer: &str) {
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
