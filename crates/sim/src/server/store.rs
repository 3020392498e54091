//! The object store: every object as JSON, keyed by group/resource, namespace and name,
//! with one monotonic resourceVersion counter, a uid index, and a bounded log of change
//! events that watches replay from. Objects are stored at their resource's storage
//! version; requests at another served version only see `apiVersion` rewritten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::resources::{ResourceDef, ResourceTable};

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created (or came into a selector's view).
    Added,
    /// Changed.
    Modified,
    /// Removed (or left a selector's view).
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept for watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// resourceVersion the change produced.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Group of the object.
    pub group: String,
    /// Resource (plural) of the object.
    pub plural: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// The object after the change (the last state for deletions).
    pub object: Arc<Value>,
    /// The object before a modification, for selector transitions.
    pub prev: Option<Arc<Value>>,
}

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjRef {
    /// Group.
    pub group: String,
    /// Resource (plural).
    pub plural: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What the garbage collector is asked to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcItem {
    /// The object with this uid is gone: delete the dependents it leaves without a live
    /// owner, drop the dangling reference from the others.
    OwnerGone(String),
    /// The object with this uid is being deleted with the `orphan` or
    /// `foregroundDeletion` finalizer: orphan or delete its dependents, then remove the
    /// finalizer when nothing blocks it any more.
    Deleting(String),
    /// The object with this uid was written with ownerReferences: delete it if none of
    /// its owners exists, drop the references to the missing ones otherwise.
    Dependent(String),
}

/// One queued piece of garbage-collector work and when it was queued.
#[derive(Debug, Clone)]
pub struct GcWork {
    /// When the work was queued (the collector acts a moment later).
    pub queued: std::time::Instant,
    /// What to look at.
    pub item: GcItem,
}

/// Follow-up work after a write, done before the request returns.
#[derive(Debug, Clone)]
pub enum Hook {
    /// An object was finally removed.
    Removed(ObjRef, Arc<Value>),
    /// Pods or budgets of this namespace changed: refresh PDB status.
    Budgets(String),
}

type Bucket = BTreeMap<(String, String), Arc<Value>>;

/// All objects and their history.
pub struct Store {
    rv: u64,
    /// Resources served.
    pub table: ResourceTable,
    objects: HashMap<(String, String), Bucket>,
    uids: HashMap<String, ObjRef>,
    events: VecDeque<Event>,
    capacity: usize,
    compacted: u64,
    /// Work queued by writes.
    pub hooks: VecDeque<Hook>,
    /// Namespaces whose deletion started (and when) and whose contents are still to be
    /// deleted.
    pub terminating_namespaces: BTreeMap<String, std::time::Instant>,
    /// Work for the garbage collector task, oldest first.
    pub gc_queue: VecDeque<GcWork>,
    /// Nodes written since the node lifecycle controller last looked at them.
    pub dirty_nodes: std::collections::BTreeSet<String>,
}

/// A resourceVersion older than the retained history.
#[derive(Debug, Clone, Copy)]
pub struct Gone {
    /// The oldest resourceVersion a watch may still start from.
    pub oldest: u64,
}

impl Store {
    /// An empty store keeping the last `capacity` events for watches.
    pub fn new(capacity: usize) -> Self {
        Store {
            rv: 1,
            table: ResourceTable::default(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            events: VecDeque::new(),
            capacity: capacity.max(1),
            compacted: 1,
            hooks: VecDeque::new(),
            terminating_namespaces: Default::default(),
            gc_queue: VecDeque::new(),
            dirty_nodes: Default::default(),
        }
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Drop all history up to now, so watches from any earlier version get 410 Gone.
    pub fn compact(&mut self) {
        self.events.clear();
        self.compacted = self.rv;
    }

    /// One object.
    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&(group.to_string(), plural.to_string()))?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a resource, in one namespace or all, ordered by namespace and name.
    pub fn list(&self, group: &str, plural: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(bucket) = self.objects.get(&(group.to_string(), plural.to_string())) else {
            return vec![];
        };
        match ns {
            Some(ns) => bucket
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => bucket.values().cloned().collect(),
        }
    }

    /// Every stored object with its location (for garbage collection scans).
    pub fn all_objects(&self) -> Vec<(ObjRef, Arc<Value>)> {
        let mut out = Vec::new();
        for ((group, plural), bucket) in &self.objects {
            for ((ns, name), v) in bucket {
                out.push((
                    ObjRef {
                        group: group.clone(),
                        plural: plural.clone(),
                        namespace: ns.clone(),
                        name: name.clone(),
                    },
                    v.clone(),
                ));
            }
        }
        out
    }

    /// Where the object with `uid` lives.
    pub fn by_uid(&self, uid: &str) -> Option<&ObjRef> {
        self.uids.get(uid)
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn log(&mut self, ev: Event) {
        self.events.push_back(ev);
        while self.events.len() > self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// Store `obj` (new or replacing `prev`) under a fresh resourceVersion and log it.
    pub fn put(
        &mut self,
        rd: &ResourceDef,
        mut obj: Value,
        prev: Option<Arc<Value>>,
    ) -> Arc<Value> {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let ns = meta_str(&obj, "namespace");
        let name = meta_str(&obj, "name");
        let uid = meta_str(&obj, "uid");
        let obj = Arc::new(obj);
        self.objects
            .entry(rd.key())
            .or_default()
            .insert((ns.clone(), name.clone()), obj.clone());
        let r = ObjRef {
            group: rd.group.clone(),
            plural: rd.plural.clone(),
            namespace: ns.clone(),
            name,
        };
        self.uids.insert(uid, r);
        let refs = |o: &Value| o.pointer("/metadata/ownerReferences").cloned();
        let owners_changed = refs(&obj).is_some_and(|now| {
            prev.as_deref()
                .is_none_or(|p| refs(p).as_ref() != Some(&now))
        });
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.log(Event {
            rv,
            kind,
            group: rd.group.clone(),
            plural: rd.plural.clone(),
            namespace: ns.clone(),
            object: obj.clone(),
            prev,
        });
        if rd.group.is_empty() && rd.plural == "pods"
            || rd.group == "policy" && rd.plural == "poddisruptionbudgets"
        {
            self.hooks.push_back(Hook::Budgets(ns));
        }
        if rd.group.is_empty() && rd.plural == "nodes" {
            self.dirty_nodes.insert(meta_str(&obj, "name"));
        }
        if owners_changed {
            self.queue_gc(GcItem::Dependent(meta_str(&obj, "uid")));
        }
        obj
    }

    /// Remove an object for good, logging a DELETED event carrying its last state.
    pub fn remove(
        &mut self,
        group: &str,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        let bucket = self
            .objects
            .get_mut(&(group.to_string(), plural.to_string()))?;
        let old = bucket.remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.uids.remove(&meta_str(&old, "uid"));
        self.log(Event {
            rv,
            kind: EventType::Deleted,
            group: group.into(),
            plural: plural.into(),
            namespace: ns.into(),
            object: last.clone(),
            prev: None,
        });
        let r = ObjRef {
            group: group.into(),
            plural: plural.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        self.hooks.push_back(Hook::Removed(r, last.clone()));
        if group.is_empty() && plural == "pods" {
            self.hooks.push_back(Hook::Budgets(ns.to_string()));
        }
        Some(last)
    }

    /// Queue `item` for the garbage collector task.
    pub fn queue_gc(&mut self, item: GcItem) {
        self.gc_queue.push_back(GcWork {
            queued: std::time::Instant::now(),
            item,
        });
    }

    /// Events after `rv`, or [`Gone`] when some of them were already dropped.
    pub fn events_after(&self, rv: u64) -> Result<Vec<Event>, Gone> {
        if rv < self.compacted {
            return Err(Gone {
                oldest: self.compacted,
            });
        }
        let start = self.events.partition_point(|e| e.rv <= rv);
        Ok(self.events.range(start..).cloned().collect())
    }
}

/// A string field of `metadata`, or "".
pub fn meta_str(obj: &Value, field: &str) -> String {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_are_monotonic_and_history_is_bounded() {
        let mut s = Store::new(2);
        let cm = s.table.lookup("", "v1", "configmaps").unwrap();
        let a = s.put(
            &cm,
            json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1"}}),
            None,
        );
        let b = s.put(
            &cm,
            json!({"metadata": {"name": "b", "namespace": "d", "uid": "u2"}}),
            None,
        );
        let ra: u64 = meta_str(&a, "resourceVersion").parse().unwrap();
        let rb: u64 = meta_str(&b, "resourceVersion").parse().unwrap();
        assert!(rb > ra);
        assert_eq!(s.events_after(ra).unwrap().len(), 1);
        assert_eq!(s.list("", "configmaps", Some("d")).len(), 2);
        assert_eq!(s.by_uid("u2").unwrap().name, "b");
        let gone = s.remove("", "configmaps", "d", "a").unwrap();
        assert_eq!(
            meta_str(&gone, "resourceVersion"),
            s.current_rv().to_string()
        );
        // history holds only the last two events now; the first one fell out
        assert!(s.events_after(ra - 1).is_err());
        assert!(s.events_after(ra).is_ok());
        s.compact();
        assert!(s.events_after(rb).is_err());
        assert!(s.events_after(s.current_rv()).unwrap().is_empty());
    }
}
