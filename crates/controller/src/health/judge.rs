//! What a check's observation means, as pure functions: a CEL expression over objects,
//! a Prometheus query answer, a health Job's status, and the built-in node checks. Each
//! returns a [`Verdict`] whose `observed` text says what was seen, for the condition and
//! the Event that name the failing check.

use cel::{Context, Program, Value as Cel};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use osroll_api::health::Comparison;
use serde_json::Value;

/// A check's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the check passes.
    pub healthy: bool,
    /// What it observed.
    pub observed: String,
}

impl Verdict {
    fn pass(observed: impl Into<String>) -> Verdict {
        Verdict {
            healthy: true,
            observed: observed.into(),
        }
    }

    fn fail(observed: impl Into<String>) -> Verdict {
        Verdict {
            healthy: false,
            observed: observed.into(),
        }
    }
}

/// Compile `expr`, or say why it does not compile.
pub fn compile(expr: &str) -> Result<Program, String> {
    Program::compile(expr).map_err(|e| format!("{expr:?} does not compile: {e}"))
}

/// `expr` with `self` bound to each of `objects` (named for the text by `describe`):
/// healthy when it gives `true` for every one and there is at least one.
pub fn cel(expr: &str, objects: &[Value], describe: impl Fn(&Value) -> String) -> Verdict {
    let program = match compile(expr) {
        Ok(p) => p,
        Err(e) => return Verdict::fail(e),
    };
    if objects.is_empty() {
        return Verdict::fail("no object matches");
    }
    for o in objects {
        let mut ctx = Context::default();
        match cel::to_value(o.clone()) {
            Ok(v) => ctx.add_variable_from_value("self", v),
            Err(e) => return Verdict::fail(format!("{}: {e}", describe(o))),
        }
        match program.execute(&ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => {
                return Verdict::fail(format!("{expr} is false for {}", describe(o)));
            }
            Ok(other) => {
                return Verdict::fail(format!(
                    "{expr} gave {other:?}, not a bool, for {}",
                    describe(o)
                ));
            }
            Err(e) => return Verdict::fail(format!("{expr} failed for {}: {e}", describe(o))),
        }
    }
    Verdict::pass(format!("{expr} holds for {} object(s)", objects.len()))
}

/// A Prometheus `/api/v1/query` answer compared with `threshold`: healthy when it holds
/// one sample and `sample op threshold`.
pub fn prometheus(body: &str, op: Comparison, threshold: f64) -> Verdict {
    let sample = match sample(body) {
        Ok(s) => s,
        Err(e) => return Verdict::fail(e),
    };
    let text = format!("sample {sample} {} {threshold}", op.as_str());
    if op.holds(sample, threshold) {
        Verdict::pass(text)
    } else {
        Verdict::fail(format!("{text} does not hold"))
    }
}

/// The one sample of a query answer (a scalar, or a vector of exactly one element).
fn sample(body: &str) -> Result<f64, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("status is not success")
        ));
    }
    let data = &v["data"];
    let pair = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some(many) => return Err(format!("query gave {} samples, expected one", many.len())),
            None => return Err("vector result is not a list".into()),
        },
        other => {
            return Err(format!(
                "result type {other:?} is neither scalar nor vector"
            ));
        }
    };
    let text = pair[1].as_str().ok_or("sample value is not a string")?;
    text.parse::<f64>()
        .map_err(|e| format!("sample value {text:?}: {e}"))
}

/// Where a health Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Still running.
    Running,
    /// Finished with this verdict.
    Done(Verdict),
}

/// A health Job's state from its status.
pub fn job(j: &Job) -> JobState {
    let name = j.metadata.name.as_deref().unwrap_or_default();
    let st = j.status.as_ref();
    if st.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Done(Verdict::pass(format!("Job {name} succeeded")));
    }
    let failed = st
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Failed" && c.status == "True");
    if failed || st.and_then(|s| s.failed).unwrap_or(0) > 0 {
        return JobState::Done(Verdict::fail(format!("Job {name} failed")));
    }
    JobState::Running
}

/// Node conditions that make an upgraded node unhealthy when True.
const PRESSURE: [&str; 3] = ["MemoryPressure", "DiskPressure", "PIDPressure"];

/// The built-in node check on an upgraded node: Ready, and no pressure condition.
pub fn node(n: &Node) -> Verdict {
    let name = n.metadata.name.as_deref().unwrap_or_default();
    let conds = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is = |t: &str| conds.iter().any(|c| c.type_ == t && c.status == "True");
    if !is("Ready") {
        return Verdict::fail(format!("node {name} is not Ready"));
    }
    if let Some(p) = PRESSURE.iter().find(|p| is(p)) {
        return Verdict::fail(format!("node {name} has {p}"));
    }
    Verdict::pass(format!("node {name} is Ready"))
}

/// The built-in pod check on an upgraded node, once its grace is over: every pod
/// Running and Ready (or Succeeded).
pub fn pods(node: &str, pods: &[Pod]) -> Verdict {
    let bad: Vec<String> = pods
        .iter()
        .filter(|p| !pod_fine(p))
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if bad.is_empty() {
        Verdict::pass(format!("{} pod(s) on {node} running", pods.len()))
    } else {
        Verdict::fail(format!(
            "pods on node {node} not Running/Ready: {}",
            bad.join(", ")
        ))
    }
}

fn pod_fine(p: &Pod) -> bool {
    let st = p.status.as_ref();
    match st.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => true,
        Some("Running") => st
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn named(v: &Value) -> String {
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn cel_holds_for_every_object_or_names_the_one_it_does_not() {
        let expr = "self.status.readyReplicas == self.status.replicas";
        let ok = json!({"metadata": {"name": "a"}, "status": {"replicas": 3, "readyReplicas": 3}});
        let bad = json!({"metadata": {"name": "b"}, "status": {"replicas": 3, "readyReplicas": 1}});
        assert!(cel(expr, std::slice::from_ref(&ok), named).healthy);
        let v = cel(expr, &[ok, bad], named);
        assert!(!v.healthy);
        assert!(v.observed.contains("false for b"), "{}", v.observed);
        let none = cel(expr, &[], named);
        assert_eq!(none, Verdict::fail("no object matches"));
        let not_bool = cel(
            "self.status.replicas",
            &[json!({"status": {"replicas": 3}})],
            named,
        );
        assert!(!not_bool.healthy && not_bool.observed.contains("not a bool"));
    }

    #[test]
    fn a_cel_syntax_error_is_reported() {
        let e = compile("self.status.( == ").unwrap_err();
        assert!(e.contains("does not compile"), "{e}");
    }

    #[test]
    fn prometheus_answers_are_compared_with_the_threshold() {
        let vector = |v: &str| {
            json!({"status": "success", "data": {"resultType": "vector",
                "result": [{"metric": {}, "value": [1700000000.0, v]}]}})
            .to_string()
        };
        assert!(prometheus(&vector("0.5"), Comparison::Lt, 1.0).healthy);
        let v = prometheus(&vector("7"), Comparison::Lt, 1.0);
        assert!(!v.healthy);
        assert_eq!(v.observed, "sample 7 < 1 does not hold");
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}});
        assert!(prometheus(&scalar.to_string(), Comparison::Ge, 2.0).healthy);
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        let v = prometheus(&empty.to_string(), Comparison::Ge, 2.0);
        assert!(
            !v.healthy && v.observed.contains("0 samples"),
            "{}",
            v.observed
        );
        let err = json!({"status": "error", "error": "parse error at char 3"});
        let v = prometheus(&err.to_string(), Comparison::Ge, 2.0);
        assert!(v.observed.contains("parse error"), "{}", v.observed);
        assert!(!prometheus("<html>", Comparison::Ge, 2.0).healthy);
    }

    #[test]
    fn jobs_pass_on_success_and_fail_on_failure() {
        let j = |status: Value| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "h"}, "status": status})).unwrap()
        };
        assert_eq!(job(&j(json!({"active": 1}))), JobState::Running);
        assert!(matches!(job(&j(json!({"succeeded": 1}))), JobState::Done(v) if v.healthy));
        assert!(matches!(job(&j(json!({"failed": 1}))), JobState::Done(v) if !v.healthy));
    }

    #[test]
    fn nodes_must_be_ready_without_pressure() {
        let n = |conds: Value| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n1"}, "status": {"conditions": conds}}),
            )
            .unwrap()
        };
        assert!(node(&n(json!([{"type": "Ready", "status": "True"}]))).healthy);
        let v = node(&n(json!([{"type": "Ready", "status": "False"}])));
        assert_eq!(v.observed, "node n1 is not Ready");
        let v = node(&n(
            json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "True"}]),
        ));
        assert_eq!(v.observed, "node n1 has DiskPressure");
    }

    #[test]
    fn pods_must_run_and_be_ready() {
        let p = |name: &str, phase: &str, ready: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}}))
            .unwrap()
        };
        assert!(
            pods(
                "n1",
                &[p("a", "Running", "True"), p("b", "Succeeded", "False")]
            )
            .healthy
        );
        let v = pods(
            "n1",
            &[p("a", "Running", "False"), p("c", "Pending", "False")],
        );
        assert_eq!(v.observed, "pods on node n1 not Running/Ready: d/a, d/c");
    }
}
