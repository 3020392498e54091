//! Health gates and the failure policy of a rollout: the checks that must pass before
//! each new disruption and through the soak after it, and what a rollout that fails
//! does (halt, or put every node it upgraded back on its previous version).
//!
//! These are the wire types only; the controller validates them (CEL compiled, queries
//! parsed) and names the offending field in the OSUpgrade's status when one is wrong.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One health check. Exactly one of `cel`, `job` and `prometheus` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"required": ["cel"]}, {"required": ["job"]}, {"required": ["prometheus"]}
]))]
pub struct HealthCheck {
    /// Name used in conditions and Events.
    pub name: String,
    /// A CEL expression over cluster objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel: Option<CelCheck>,
    /// A Job run to completion; exit 0 means healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobCheck>,
    /// A Prometheus instant query compared with a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
}

/// A CEL expression evaluated with `self` bound to each object it selects; healthy when
/// it is true for every one of them (and at least one exists).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CelCheck {
    /// API version of the objects, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind of the objects, e.g. `Deployment`.
    pub kind: String,
    /// Namespace of namespaced objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One object by name (exactly one of `name` and `labelSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every object matching these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// A CEL expression giving a bool, e.g. `self.status.readyReplicas == self.status.replicas`.
    pub expr: String,
}

/// A Job created from `template` for each evaluation; it is healthy when it succeeds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCheck {
    /// Namespace the Job runs in.
    pub namespace: String,
    /// The Job's `spec` (a `batch/v1` JobSpec).
    #[schemars(schema_with = "crate::schema::opaque_object")]
    pub template: serde_json::Value,
    /// Seconds the Job may run before the check counts as failing. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// A Prometheus instant query over its HTTP API, with the trust options of catalog URLs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusCheck {
    /// Base URL of the Prometheus server, e.g. `https://prometheus.monitoring:9090`.
    pub url: String,
    /// PromQL giving one sample (a scalar or a one-element vector).
    pub query: String,
    /// How the sample is compared with `threshold`: healthy when `sample <op> threshold`.
    pub op: Comparison,
    /// The value compared with.
    pub threshold: f64,
}

/// A comparison operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Comparison {
    /// Less than.
    #[serde(rename = "<")]
    #[default]
    Lt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
}

impl Comparison {
    /// Whether `sample <self> threshold` holds.
    pub fn holds(self, sample: f64, threshold: f64) -> bool {
        match self {
            Comparison::Lt => sample < threshold,
            Comparison::Le => sample <= threshold,
            Comparison::Gt => sample > threshold,
            Comparison::Ge => sample >= threshold,
            Comparison::Eq => sample == threshold,
            Comparison::Ne => sample != threshold,
        }
    }

    /// The operator as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }
}

/// What a rollout does once it failed (failure budget spent, or a health check failing
/// past its timeout).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    /// Stop: start nothing new, leave every node where it is.
    #[default]
    Halt,
    /// Stop, then put every node this OSUpgrade upgraded back on its previous version.
    Rollback,
}

/// A rollback in progress or done, recorded in the OSUpgrade's status so a restarted
/// controller continues it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// When the rollback began (RFC 3339).
    pub started_at: String,
    /// Why: `HealthCheckFailed`, `MaxFailuresReached` or `Requested`.
    pub reason: String,
    /// The version being rolled back; it is not rolled out again by this OSUpgrade.
    pub version: String,
    /// When the last node came back (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// The health gate's state, kept in status so its timeout survives a controller restart.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// The failing check, if one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_check: Option<String>,
    /// What it observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Since when it fails (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_use_their_operator_names() {
        for (c, s, yes) in [
            (Comparison::Lt, "<", (1.0, 2.0)),
            (Comparison::Le, "<=", (2.0, 2.0)),
            (Comparison::Gt, ">", (3.0, 2.0)),
            (Comparison::Ge, ">=", (2.0, 2.0)),
            (Comparison::Eq, "==", (2.0, 2.0)),
            (Comparison::Ne, "!=", (1.0, 2.0)),
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), s);
            assert_eq!(c.as_str(), s);
            assert!(c.holds(yes.0, yes.1), "{s}");
        }
        assert!(!Comparison::Lt.holds(2.0, 2.0));
        assert!(!Comparison::Gt.holds(2.0, 2.0));
        assert!(!Comparison::Eq.holds(1.0, 2.0));
        assert!(!Comparison::Ne.holds(2.0, 2.0));
    }

    #[test]
    fn a_check_parses_from_yaml() {
        let c: HealthCheck = serde_json::from_value(serde_json::json!({
            "name": "web",
            "cel": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "d",
                    "name": "web", "expr": "self.status.readyReplicas == self.status.replicas"}
        }))
        .unwrap();
        assert_eq!(c.cel.unwrap().kind, "Deployment");
        let p: PrometheusCheck = serde_json::from_value(serde_json::json!({
            "url": "http://p", "query": "up", "op": ">=", "threshold": 1
        }))
        .unwrap();
        assert_eq!(p.op, Comparison::Ge);
    }
}
