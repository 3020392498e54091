//! Health checks that gate a rollout: `spec.strategy.healthChecks` validated once (CEL
//! compiled, selectors and URLs parsed, every error naming its field), the pure
//! judgements of what a check observed ([`judge`]), and their evaluation against the
//! cluster and a Prometheus server ([`probe`]).
//!
//! The planner sees only the outcome: the first failing check and what it observed
//! ([`crate::planner::Failing`]).

pub mod judge;
pub mod probe;

use std::time::Duration;

use osroll_api::RolloutStrategy;
use osroll_api::health::{CelCheck, FailurePolicy, HealthCheck, JobCheck, PrometheusCheck};

use crate::planner::SpecError;
use crate::select::Selector;

/// Default seconds a failing check may hold the rollout before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default seconds a health Job may run.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// `spec.strategy`'s health settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSpec {
    /// The user's checks, in spec order.
    pub checks: Vec<Check>,
    /// Watch time after each completed node before the next start.
    pub soak: Duration,
    /// How long a failing check may hold the rollout.
    pub timeout: Duration,
    /// What a failed rollout does.
    pub on_failure: FailurePolicy,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            checks: Vec::new(),
            soak: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            on_failure: FailurePolicy::Halt,
        }
    }
}

/// One validated check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// What it evaluates.
    pub kind: Kind,
}

/// The kinds of check.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// CEL over cluster objects (the expression compiles).
    Cel(CelCheck),
    /// A Job run to completion.
    Job(JobCheck),
    /// A Prometheus instant query.
    Prometheus(PrometheusCheck),
}

impl HealthSpec {
    /// Validate the health part of `spec.strategy` (absent means no checks, `Halt`).
    pub fn from_spec(s: Option<&RolloutStrategy>) -> Result<HealthSpec, SpecError> {
        let Some(s) = s else {
            return Ok(HealthSpec::default());
        };
        let mut checks: Vec<Check> = Vec::new();
        for (i, c) in s.health_checks.iter().enumerate() {
            let field = format!("spec.strategy.healthChecks[{i}]");
            let check = check(c, &field)?;
            if checks.iter().any(|o| o.name == check.name) {
                return Err(SpecError::new(
                    &format!("{field}.name"),
                    format!("{:?} is used by an earlier check", check.name),
                ));
            }
            checks.push(check);
        }
        Ok(HealthSpec {
            checks,
            soak: Duration::from_secs(s.soak_seconds.unwrap_or(0)),
            timeout: s
                .health_timeout_seconds
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            on_failure: s.on_failure.unwrap_or_default(),
        })
    }
}

fn check(c: &HealthCheck, field: &str) -> Result<Check, SpecError> {
    if c.name.trim().is_empty() {
        return Err(SpecError::new(
            &format!("{field}.name"),
            "must not be empty",
        ));
    }
    let kind = match (&c.cel, &c.job, &c.prometheus) {
        (Some(cel), None, None) => Kind::Cel(cel_check(cel, &format!("{field}.cel"))?),
        (None, Some(job), None) => Kind::Job(job_check(job, &format!("{field}.job"))?),
        (None, None, Some(p)) => {
            Kind::Prometheus(prometheus_check(p, &format!("{field}.prometheus"))?)
        }
        _ => {
            return Err(SpecError::new(
                field,
                format!(
                    "check {:?} must set exactly one of cel, job and prometheus",
                    c.name
                ),
            ));
        }
    };
    Ok(Check {
        name: c.name.clone(),
        kind,
    })
}

fn cel_check(c: &CelCheck, field: &str) -> Result<CelCheck, SpecError> {
    for (name, v) in [("apiVersion", &c.api_version), ("kind", &c.kind)] {
        if v.trim().is_empty() {
            return Err(SpecError::new(
                &format!("{field}.{name}"),
                "must not be empty",
            ));
        }
    }
    match (&c.name, &c.label_selector) {
        (Some(_), None) => {}
        (None, Some(sel)) => {
            Selector::from_label_selector(sel, &format!("{field}.labelSelector"))?;
        }
        _ => {
            return Err(SpecError::new(
                field,
                "set exactly one of name and labelSelector",
            ));
        }
    }
    judge::compile(&c.expr).map_err(|e| SpecError::new(&format!("{field}.expr"), e))?;
    Ok(c.clone())
}

fn job_check(j: &JobCheck, field: &str) -> Result<JobCheck, SpecError> {
    if j.namespace.trim().is_empty() {
        return Err(SpecError::new(
            &format!("{field}.namespace"),
            "must not be empty",
        ));
    }
    serde_json::from_value::<k8s_openapi::api::batch::v1::JobSpec>(j.template.clone())
        .map_err(|e| SpecError::new(&format!("{field}.template"), format!("not a JobSpec: {e}")))?;
    Ok(j.clone())
}

fn prometheus_check(p: &PrometheusCheck, field: &str) -> Result<PrometheusCheck, SpecError> {
    match reqwest::Url::parse(&p.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(_) => {
            return Err(SpecError::new(
                &format!("{field}.url"),
                format!("{:?}: only http and https are supported", p.url),
            ));
        }
        Err(e) => {
            return Err(SpecError::new(
                &format!("{field}.url"),
                format!("{:?}: {e}", p.url),
            ));
        }
    }
    if p.query.trim().is_empty() {
        return Err(SpecError::new(
            &format!("{field}.query"),
            "must not be empty",
        ));
    }
    if !p.threshold.is_finite() {
        return Err(SpecError::new(
            &format!("{field}.threshold"),
            format!("{} is not a finite number", p.threshold),
        ));
    }
    Ok(p.clone())
}

#[cfg(test)]
mod tests;
