//! The garbage collector: a task beside the request handlers, as the real one is a
//! controller beside the API server. Removals and deletions with the Orphan or
//! Foreground policy queue work (`Store::gc_queue`); the task takes each item
//! `ServerConfig::gc_delay` after it was queued (the time a real collector needs to
//! hear of the change), so a request never sees its own cascade:
//! - an owner gone: dependents left without a live owner are deleted (Background), the
//!   others lose their reference to it;
//! - an owner with the `orphan` finalizer: its dependents lose their reference to it,
//!   then the finalizer goes (and with it the owner);
//! - an owner with `foregroundDeletion`: its dependents are deleted (in the foreground
//!   where they block the owner), and the finalizer goes once no dependent with
//!   `blockOwnerDeletion` is left;
//! - an object written with ownerReferences: deleted if none of its owners exists,
//!   otherwise it loses the references to the missing ones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::App;
use super::delete::{FOREGROUND, ORPHAN};
use super::gc::{finalizers, owner_uids};
use super::store::{GcItem, ObjRef, Store};

/// Whether `dep`'s reference to `owner` has `blockOwnerDeletion`.
fn blocks(dep: &Value, owner: &str) -> bool {
    dep.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| r["uid"] == owner && r["blockOwnerDeletion"] == true)
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

impl Store {
    /// When the oldest queued work is due, if any is queued.
    pub fn next_gc_due(&self, delay: Duration) -> Option<Instant> {
        self.gc_queue.front().map(|w| w.queued + delay)
    }

    /// Do the queued work that is due at `now`; whether there was any.
    pub fn collect_due(&mut self, delay: Duration, now: Instant) -> bool {
        let mut gone = BTreeSet::new();
        let mut owners = Vec::new();
        let mut dependents = Vec::new();
        while let Some(w) = self.gc_queue.front() {
            if w.queued + delay > now {
                break;
            }
            match self.gc_queue.pop_front().map(|w| w.item) {
                Some(GcItem::OwnerGone(uid)) => {
                    gone.insert(uid);
                }
                Some(GcItem::Deleting(uid)) => owners.push(uid),
                Some(GcItem::Dependent(uid)) => dependents.push(uid),
                None => {}
            }
        }
        if gone.is_empty() && owners.is_empty() && dependents.is_empty() {
            return false;
        }
        self.collect_orphaned(&gone);
        for uid in dependents {
            self.collect_dangling(&uid);
        }
        for uid in owners {
            self.collect_for_deleting_owner(&uid);
        }
        self.run_hooks();
        true
    }

    /// Dependents of the owners in `gone`: deleted when no owner of theirs is left,
    /// otherwise only the references to the gone ones are dropped.
    fn collect_orphaned(&mut self, gone: &BTreeSet<String>) {
        for (r, dep) in self.all_objects() {
            let owners = owner_uids(&dep);
            let dangling: Vec<&String> = owners.iter().filter(|u| gone.contains(*u)).collect();
            if dangling.is_empty() || deleting(&dep) {
                continue;
            }
            let alive = owners
                .iter()
                .any(|u| !gone.contains(u) && self.by_uid(u).is_some());
            if alive {
                for uid in dangling {
                    self.drop_current_owner_ref(&r, uid);
                }
            } else {
                self.delete_ref(&r, "Background");
            }
        }
    }

    /// The object `uid` written with references to owners: deleted when none of them
    /// exists (it was made for an owner already gone, or one that never was), otherwise
    /// the references to missing ones are dropped.
    fn collect_dangling(&mut self, uid: &str) {
        let Some(r) = self.by_uid(uid).cloned() else {
            return;
        };
        let Some(obj) = self.get(&r.group, &r.plural, &r.namespace, &r.name) else {
            return;
        };
        if deleting(&obj) {
            return;
        }
        let owners = owner_uids(&obj);
        let missing: Vec<&String> = owners.iter().filter(|u| self.by_uid(u).is_none()).collect();
        if missing.len() == owners.len() && !owners.is_empty() {
            self.delete_ref(&r, "Background");
        } else {
            for m in missing {
                self.drop_current_owner_ref(&r, m);
            }
        }
    }

    fn drop_current_owner_ref(&mut self, r: &ObjRef, owner: &str) {
        if let Some(cur) = self.get(&r.group, &r.plural, &r.namespace, &r.name) {
            self.drop_owner_ref(r, &cur, owner);
        }
    }

    /// Orphan or delete the dependents of the deleting owner `uid`, then remove the
    /// finalizer that waited for that.
    fn collect_for_deleting_owner(&mut self, uid: &str) {
        let Some(r) = self.by_uid(uid).cloned() else {
            return;
        };
        let Some(owner) = self.get(&r.group, &r.plural, &r.namespace, &r.name) else {
            return;
        };
        if !deleting(&owner) {
            return;
        }
        let pending: Vec<String> = finalizers(&owner).map(String::from).collect();
        if pending.iter().any(|f| f == ORPHAN) {
            for (dr, _) in self.dependents_of(uid) {
                self.drop_current_owner_ref(&dr, uid);
            }
            self.remove_current_finalizer(&r, ORPHAN);
        }
        if pending.iter().any(|f| f == FOREGROUND) {
            for (dr, dep) in self.dependents_of(uid) {
                if !deleting(&dep) {
                    let policy = if blocks(&dep, uid) {
                        "Foreground"
                    } else {
                        "Background"
                    };
                    self.delete_ref(&dr, policy);
                }
            }
            self.run_hooks();
            let blocked = self.dependents_of(uid).iter().any(|(_, d)| blocks(d, uid));
            if !blocked {
                self.remove_current_finalizer(&r, FOREGROUND);
            }
        }
    }

    fn remove_current_finalizer(&mut self, r: &ObjRef, finalizer: &str) {
        if let Some(cur) = self.get(&r.group, &r.plural, &r.namespace, &r.name) {
            self.remove_finalizer(r, &cur, finalizer);
        }
    }
}

/// The garbage collector task (see the module docs).
pub async fn garbage_collector(app: Arc<App>) {
    let delay = app.config.gc_delay;
    super::control_loop::run(
        app,
        move |store| store.next_gc_due(delay),
        move |store, now| store.collect_due(delay, now),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::server::delete::DeleteOpts;
    use crate::server::write::Ctx;

    fn cm(store: &mut Store, name: &str, owner: Option<&str>) -> String {
        let rd = store.table.lookup("", "v1", "configmaps").unwrap();
        let refs = owner.map(|uid| {
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": uid,
                    "blockOwnerDeletion": true}])
        });
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": refs}});
        let made = store
            .create(&mut Ctx::internal("t"), &rd, "v1", "default", obj)
            .unwrap();
        made["metadata"]["uid"].as_str().unwrap().to_string()
    }

    fn delete(store: &mut Store, name: &str, policy: &str) {
        let rd = store.table.lookup("", "v1", "configmaps").unwrap();
        let opts = DeleteOpts {
            propagation: Some(policy.into()),
            ..Default::default()
        };
        store
            .delete(&mut Ctx::internal("t"), &rd, "default", name, &opts)
            .unwrap();
        store.run_hooks();
    }

    fn exists(store: &Store, name: &str) -> bool {
        store.get("", "configmaps", "default", name).is_some()
    }

    #[test]
    fn work_waits_for_its_delay_then_cascades() {
        let delay = Duration::from_secs(60);
        let mut store = Store::new(100);
        crate::server::seed(&mut store);
        let owner = cm(&mut store, "o", None);
        cm(&mut store, "d", Some(&owner));
        delete(&mut store, "o", "Background");
        assert!(!exists(&store, "o") && exists(&store, "d"));
        let now = Instant::now();
        assert!(!store.collect_due(delay, now));
        assert!(exists(&store, "d"));
        assert!(store.next_gc_due(delay).is_some_and(|at| at > now));
        assert!(store.collect_due(delay, now + delay));
        assert!(!exists(&store, "d"));
    }

    #[test]
    fn foreground_owner_goes_after_its_dependent_orphan_owner_leaves_it() {
        let later = || Instant::now() + Duration::from_secs(1);
        let mut store = Store::new(100);
        crate::server::seed(&mut store);
        let owner = cm(&mut store, "o", None);
        cm(&mut store, "d", Some(&owner));
        delete(&mut store, "o", "Foreground");
        assert!(exists(&store, "o") && exists(&store, "d"));
        while store.collect_due(Duration::ZERO, later()) {}
        assert!(!exists(&store, "o") && !exists(&store, "d"));

        let owner = cm(&mut store, "o", None);
        cm(&mut store, "d", Some(&owner));
        delete(&mut store, "o", "Orphan");
        assert!(exists(&store, "o"));
        while store.collect_due(Duration::ZERO, later()) {}
        assert!(!exists(&store, "o"));
        let left = store.get("", "configmaps", "default", "d").unwrap();
        assert!(owner_uids(&left).is_empty());
    }

    #[test]
    fn references_to_missing_owners_are_collected() {
        let later = || Instant::now() + Duration::from_secs(1);
        let mut store = Store::new(100);
        crate::server::seed(&mut store);
        cm(&mut store, "never", Some("no-such-uid"));
        let real = cm(&mut store, "o", None);
        let rd = store.table.lookup("", "v1", "configmaps").unwrap();
        let both = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "both",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": real},
                                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "gone"}]}});
        store
            .create(&mut Ctx::internal("t"), &rd, "v1", "default", both)
            .unwrap();
        assert!(exists(&store, "never"));
        while store.collect_due(Duration::ZERO, later()) {}
        assert!(!exists(&store, "never"));
        let kept = store.get("", "configmaps", "default", "both").unwrap();
        assert_eq!(owner_uids(&kept), [real]);
    }
}
