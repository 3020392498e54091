//! One store for Events, two shapes: core/v1 Events (what `kubectl get events` and
//! `kubectl describe` read) and events.k8s.io/v1 Events (what kube-rs' event recorder,
//! and so the osroll controller, writes) are the same objects, as on a real API server.
//! Objects are stored in the core shape; these functions convert at the edges.

use serde_json::{Map, Value};

/// events.k8s.io/v1 field name and the core/v1 field it is stored as.
const FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: Value, from_v1: bool, api_version: &str) -> Value {
    let Value::Object(m) = obj else { return obj };
    let mut out = Map::new();
    for (k, v) in m {
        let key = FIELDS
            .iter()
            .find(|(v1, core)| if from_v1 { v1 == &k } else { core == &k })
            .map(|(v1, core)| {
                if from_v1 {
                    core.to_string()
                } else {
                    v1.to_string()
                }
            })
            .unwrap_or(k);
        out.insert(key, v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in the core/v1 shape.
pub fn to_core(obj: Value) -> Value {
    rename(obj, true, "v1")
}

/// A core/v1 Event in the events.k8s.io/v1 shape.
pub fn from_core(obj: Value) -> Value {
    rename(obj, false, "events.k8s.io/v1")
}

/// A field-selector path of events.k8s.io/v1 in the stored (core) shape.
pub fn core_path(path: &str) -> String {
    let (first, rest) = path
        .split_once('.')
        .map_or((path, None), |(a, b)| (a, Some(b)));
    let first = FIELDS
        .iter()
        .find(|(v1, _)| *v1 == first)
        .map_or(first, |(_, core)| core);
    match rest {
        Some(r) => format!("{first}.{r}"),
        None => first.to_string(),
    }
}

/// Whether a request for `group`/`plural` is one for events.k8s.io Events.
pub fn is_events_v1(group: &str, plural: &str) -> bool {
    group == "events.k8s.io" && plural == "events"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_round_trip() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "OSUpgrade", "name": "fleet"}, "note": "drained node-1", "reason": "Drained",
            "reportingController": "osroll.io/controller", "reportingInstance": "x", "type": "Normal",
            "eventTime": "2025-01-01T00:00:00.000000Z", "action": "Drain"});
        let core = to_core(v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "fleet");
        assert_eq!(core["message"], "drained node-1");
        assert_eq!(core["reportingComponent"], "osroll.io/controller");
        assert!(core.get("note").is_none());
        assert_eq!(from_core(core), v1);
        assert_eq!(core_path("regarding.name"), "involvedObject.name");
        assert_eq!(core_path("reason"), "reason");
    }
}
