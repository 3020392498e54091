use osroll_api::RolloutStrategy;
use osroll_api::health::{FailurePolicy, HealthCheck};
use serde_json::json;

use super::*;

fn strategy(checks: serde_json::Value) -> RolloutStrategy {
    RolloutStrategy {
        health_checks: serde_json::from_value::<Vec<HealthCheck>>(checks).unwrap(),
        ..Default::default()
    }
}

fn error(checks: serde_json::Value) -> SpecError {
    HealthSpec::from_spec(Some(&strategy(checks))).unwrap_err()
}

#[test]
fn defaults_halt_without_checks() {
    let h = HealthSpec::from_spec(None).unwrap();
    assert!(h.checks.is_empty());
    assert_eq!(h.on_failure, FailurePolicy::Halt);
    assert_eq!(h.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn every_kind_validates() {
    let s = RolloutStrategy {
        soak_seconds: Some(30),
        health_timeout_seconds: Some(0),
        on_failure: Some(FailurePolicy::Rollback),
        ..strategy(json!([
            {"name": "web", "cel": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "d",
                "name": "web", "expr": "self.status.readyReplicas == self.status.replicas"}},
            {"name": "smoke", "job": {"namespace": "d", "template": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}},
            {"name": "errors", "prometheus": {"url": "https://prom:9090", "query": "rate(x[5m])",
                "op": "<", "threshold": 0.01}}
        ]))
    };
    let h = HealthSpec::from_spec(Some(&s)).unwrap();
    assert_eq!(h.checks.len(), 3);
    assert!(matches!(h.checks[1].kind, Kind::Job(_)));
    assert_eq!(h.soak, Duration::from_secs(30));
    assert_eq!(h.timeout, Duration::ZERO);
    assert_eq!(h.on_failure, FailurePolicy::Rollback);
}

#[test]
fn a_cel_compile_error_names_the_field() {
    let e = error(
        json!([{"name": "web", "cel": {"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "web", "expr": "self.status.( =="}}]),
    );
    assert_eq!(e.field, "spec.strategy.healthChecks[0].cel.expr");
    assert!(e.message.contains("does not compile"), "{e}");
}

#[test]
fn errors_name_their_field() {
    let cel = |extra: serde_json::Value| {
        let mut c = json!({"apiVersion": "apps/v1", "kind": "Deployment", "expr": "true"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let e = error(json!([{"name": "a", "cel": cel(json!({}))}]));
    assert_eq!(e.field, "spec.strategy.healthChecks[0].cel");
    let e = error(json!([
        {"name": "a", "cel": cel(json!({"name": "x"}))},
        {"name": "a", "cel": cel(json!({"name": "y"}))}
    ]));
    assert_eq!(e.field, "spec.strategy.healthChecks[1].name");
    let e = error(json!([{"name": "a"}]));
    assert_eq!(e.field, "spec.strategy.healthChecks[0]");
    assert!(e.message.contains("exactly one of cel, job and prometheus"));
    let e = error(
        json!([{"name": "p", "prometheus": {"url": "ftp://x", "query": "up", "op": ">", "threshold": 1}}]),
    );
    assert_eq!(e.field, "spec.strategy.healthChecks[0].prometheus.url");
    let e = error(
        json!([{"name": "j", "job": {"namespace": "d", "template": {"parallelism": "many"}}}]),
    );
    assert_eq!(e.field, "spec.strategy.healthChecks[0].job.template");
    let e = error(json!([{"name": "", "cel": cel(json!({"name": "x"}))}]));
    assert_eq!(e.field, "spec.strategy.healthChecks[0].name");
}
