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
//!   `blockOwnerDeletion` is left.

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
        while let Some(w) = self.gc_queue.front() {
            if w.queued + delay > now {
                break;
            }
            match self.gc_queue.pop_front().map(|w| w.item) {
                Some(GcItem::OwnerGone(uid)) => {
                    gone.insert(uid);
                }
                Some(GcItem::Deleting(uid)) => owners.push(uid),
                None => {}
            }
        }
        if gone.is_empty() && owners.is_empty() {
            return false;
        }
        self.collect_orphaned(&gone);
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

/// The garbage collector task: sleeps until the oldest queued work is due or a write
/// wakes it, does the due work and tells watchers.
pub async fn garbage_collector(app: Arc<App>) {
    let delay = app.config.gc_delay;
    let mut head = app.head.subscribe();
    loop {
        let due = app.store.lock().expect("store lock").next_gc_due(delay);
        let woken = match due {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => true,
                    changed = head.changed() => changed.is_ok(),
                }
            }
            None => head.changed().await.is_ok(),
        };
        if !woken {
            return;
        }
        let rv = {
            let mut store = app.store.lock().expect("store lock");
            if !store.collect_due(delay, Instant::now()) {
                continue;
            }
            store.current_rv()
        };
        app.publish(rv);
    }
}
