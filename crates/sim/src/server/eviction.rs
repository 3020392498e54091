//! The `pods/eviction` subresource and PodDisruptionBudget status (the part of the
//! disruption controller the eviction decision needs). An eviction that would leave a
//! budget with fewer healthy pods than it requires is refused with 429, as `kubectl drain`
//! and every drain implementation expect.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::delete::DeleteOpts;
use super::error::{ApiError, ApiResult};
use super::selectors::label_selector_object_matches;
use super::store::{Store, meta_str};
use super::write::{Ctx, Managed};

/// A budget's arithmetic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetState {
    /// Pods the budget expects (controller replicas, else matching pods).
    pub expected: i64,
    /// Matching pods that are Ready and not being deleted.
    pub current_healthy: i64,
    /// Healthy pods the budget requires.
    pub desired_healthy: i64,
    /// How many healthy pods may be disrupted now.
    pub disruptions_allowed: i64,
}

fn is_healthy(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            Some((pct * total + 99) / 100)
        }
        _ => None,
    }
}

/// Compute a budget over the pods it selects. `replicas_of` gives the scale of a
/// controlling owner (by uid), when known.
pub fn budget_state(
    pdb: &Value,
    pods: &[&Value],
    replicas_of: &dyn Fn(&str) -> Option<i64>,
) -> BudgetState {
    let mut controllers = BTreeSet::new();
    let mut expected = 0i64;
    for p in pods {
        let controller = p
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
            .and_then(|r| r["uid"].as_str());
        match controller.and_then(|uid| replicas_of(uid).map(|n| (uid, n))) {
            Some((uid, n)) => {
                if controllers.insert(uid.to_string()) {
                    expected += n;
                }
            }
            None => expected += 1,
        }
    }
    let current_healthy = pods.iter().filter(|p| is_healthy(p)).count() as i64;
    let spec = &pdb["spec"];
    let desired_healthy = if let Some(min) = spec.get("minAvailable").filter(|v| !v.is_null()) {
        scaled(min, expected).unwrap_or(expected)
    } else if let Some(max) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        1
    };
    BudgetState {
        expected,
        current_healthy,
        desired_healthy,
        disruptions_allowed: (current_healthy - desired_healthy).max(0),
    }
}

impl Store {
    fn replicas_of(&self, uid: &str) -> Option<i64> {
        let r = self.by_uid(uid)?;
        let owner = self.get(&r.group, &r.plural, &r.namespace, &r.name)?;
        owner.pointer("/spec/replicas").and_then(Value::as_i64)
    }

    fn budgets_for(&self, ns: &str, pod: &Value) -> Vec<std::sync::Arc<Value>> {
        self.list("policy", "poddisruptionbudgets", Some(ns))
            .into_iter()
            .filter(|b| {
                label_selector_object_matches(
                    b.pointer("/spec/selector"),
                    pod.pointer("/metadata/labels"),
                )
            })
            .collect()
    }

    fn state_of(&self, ns: &str, pdb: &Value) -> BudgetState {
        let pods = self.list("", "pods", Some(ns));
        let selected: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| {
                let phase = p
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                phase != "Succeeded"
                    && phase != "Failed"
                    && label_selector_object_matches(
                        pdb.pointer("/spec/selector"),
                        p.pointer("/metadata/labels"),
                    )
            })
            .collect();
        budget_state(pdb, &selected, &|uid| self.replicas_of(uid))
    }

    /// Recompute the status of every budget in `ns`, writing only what changed.
    pub fn refresh_budgets(&mut self, ns: &str) {
        let Some(rd) = self.table.lookup("policy", "v1", "poddisruptionbudgets") else {
            return;
        };
        for pdb in self.list("policy", "poddisruptionbudgets", Some(ns)) {
            let st = self.state_of(ns, &pdb);
            let allowed = st.disruptions_allowed > 0;
            let old_cond = pdb
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
                .cloned();
            let status_str = if allowed { "True" } else { "False" };
            let since = old_cond
                .as_ref()
                .filter(|c| c["status"] == status_str)
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| Value::String(Ctx::internal("").now_str()));
            let status = json!({
                "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
                "disruptionsAllowed": st.disruptions_allowed,
                "currentHealthy": st.current_healthy,
                "desiredHealthy": st.desired_healthy,
                "expectedPods": st.expected,
                "conditions": [{
                    "type": "DisruptionAllowed",
                    "status": status_str,
                    "reason": if allowed { "SufficientPods" } else { "InsufficientPods" },
                    "message": "",
                    "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
                    "lastTransitionTime": since,
                }],
            });
            if pdb.get("status") == Some(&status) {
                continue;
            }
            let mut new = (*pdb).clone();
            new["status"] = status;
            let mut ctx = Ctx::internal("controller-manager");
            if let Err(e) = self.admit(
                &mut ctx,
                &rd,
                "v1",
                Some(pdb.clone()),
                new,
                super::apply::Scope::Status,
                Managed::Record,
            ) {
                tracing::warn!(error = %e, "refreshing PodDisruptionBudget status");
            }
        }
    }

    /// POST pods/{name}/eviction.
    pub fn evict(&mut self, ctx: &mut Ctx, ns: &str, name: &str, body: &Value) -> ApiResult<Value> {
        let pods = self
            .table
            .lookup("", "v1", "pods")
            .ok_or_else(|| ApiError::internal("pods are not served"))?;
        let pod = self
            .get("", "pods", ns, name)
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(name);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object ({body_name})"
            )));
        }
        let mut opts = DeleteOpts::default();
        if let Some(d) = body.get("deleteOptions") {
            opts.merge_body(d);
        }
        let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(success);
        }
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let unscheduled = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty();
        let ignores_budget =
            phase == "Succeeded" || phase == "Failed" || (phase == "Pending" && unscheduled);
        if !ignores_budget {
            let budgets = self.budgets_for(ns, &pod);
            if budgets.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(pdb) = budgets.first() {
                let st = self.state_of(ns, pdb);
                let healthy = is_healthy(&pod);
                let policy = pdb
                    .pointer("/spec/unhealthyPodEvictionPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("IfHealthyBudget");
                let allowed = if healthy {
                    st.disruptions_allowed > 0
                } else {
                    policy == "AlwaysAllow" || st.current_healthy >= st.desired_healthy
                };
                if !allowed {
                    let pdb_name = meta_str(pdb, "name");
                    return Err(ApiError::too_many_requests(
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        vec![json!({
                            "reason": "DisruptionBudget",
                            "message": format!(
                                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                                st.desired_healthy, st.current_healthy
                            ),
                        })],
                    ));
                }
            }
        }
        if ctx.dry_run {
            return Ok(success);
        }
        self.delete(ctx, &pods, ns, name, &opts)?;
        Ok(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool, owner: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] = json!([{"uid": o, "controller": true}]);
        }
        p
    }

    #[test]
    fn budget_arithmetic() {
        let three_expected_none_to_spare = BudgetState {
            expected: 3,
            current_healthy: 2,
            desired_healthy: 2,
            disruptions_allowed: 0,
        };
        let pdb = json!({"spec": {"minAvailable": 2}});
        let (a, b, c) = (pod(true, None), pod(true, None), pod(false, None));
        let st = budget_state(&pdb, &[&a, &b, &c], &|_| None);
        assert_eq!(st, three_expected_none_to_spare);
        let pdb = json!({"spec": {"maxUnavailable": "50%"}});
        let st = budget_state(&pdb, &[&a, &b, &c], &|_| None);
        assert_eq!(st.desired_healthy, 1);
        assert_eq!(st.disruptions_allowed, 1);
        // Controller scale counts, not the pods left: an evicted, not yet replaced pod
        // still counts as expected.
        let (x, y) = (pod(true, Some("d1")), pod(true, Some("d1")));
        let pdb = json!({"spec": {"maxUnavailable": 1}});
        let st = budget_state(&pdb, &[&x, &y], &|uid| (uid == "d1").then_some(3));
        assert_eq!(st, three_expected_none_to_spare);
    }
}
