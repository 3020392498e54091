//! Evaluating the health checks against the cluster and Prometheus: the thin adapter
//! between [`super::judge`]'s pure verdicts and the API calls that feed them.
//!
//! Built-in checks run first (every node this OSUpgrade upgraded is Ready without
//! pressure, and once its pod grace is over its pods run), then the user's checks in
//! spec order; the first that fails is the one the status and the Event name.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use osroll_api::health::{CelCheck, JobCheck, PrometheusCheck};
use serde_json::json;

use super::judge::{self, JobState, Verdict};
use super::{Check, DEFAULT_JOB_TIMEOUT, HealthSpec, Kind};
use crate::catalog::UrlFetcher;
use crate::chain::Chain;
use crate::cluster::{Cluster, ObjectQuery};
use crate::planner::Failing;

/// How long after completing an upgraded node's pods must be Running and Ready.
pub const POD_GRACE: Duration = Duration::from_secs(300);
/// A health Job is run again at most this often.
pub const JOB_INTERVAL: Duration = Duration::from_secs(30);
/// Label on health Jobs: the OSUpgrade they gate.
pub const JOB_UPGRADE_LABEL: &str = "osroll.io/health-upgrade";
/// Label on health Jobs: the check they run.
pub const JOB_CHECK_LABEL: &str = "osroll.io/health-check";

/// A node this OSUpgrade upgraded, and when it completed.
pub struct Upgraded<'a> {
    /// The node.
    pub node: &'a Node,
    /// When its progress completed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// Evaluates one OSUpgrade's checks.
pub struct Probe<'a, C: Cluster> {
    /// The API.
    pub cluster: &'a C,
    /// GETs Prometheus with the catalog URLs' trust options.
    pub fetcher: &'a dyn UrlFetcher,
    /// The OSUpgrade's name (labels its Jobs).
    pub upgrade: &'a str,
    /// Current time.
    pub now: DateTime<Utc>,
}

impl<C: Cluster> Probe<'_, C> {
    /// The first failing check, built-in ones first.
    pub async fn first_failing(
        &self,
        spec: &HealthSpec,
        upgraded: &[Upgraded<'_>],
    ) -> Option<Failing> {
        for u in upgraded {
            let name = u.node.metadata.name.clone().unwrap_or_default();
            let v = judge::node(u.node);
            if !v.healthy {
                return failing("builtin:node", v);
            }
            let graced = u.completed_at.is_some_and(|t| {
                self.now >= t + chrono::Duration::from_std(POD_GRACE).unwrap_or_default()
            });
            if graced {
                match self.cluster.pods_on_node(&name).await {
                    Ok(pods) => {
                        let v = judge::pods(&name, &pods);
                        if !v.healthy {
                            return failing("builtin:pods", v);
                        }
                    }
                    Err(e) => {
                        return failing(
                            "builtin:pods",
                            fail(format!("listing pods: {}", Chain(&e))),
                        );
                    }
                }
            }
        }
        for c in &spec.checks {
            let v = self.evaluate(c).await;
            if !v.healthy {
                return failing(&c.name, v);
            }
        }
        None
    }

    /// One user check's verdict.
    pub async fn evaluate(&self, c: &Check) -> Verdict {
        match &c.kind {
            Kind::Cel(cel) => self.cel(cel).await,
            Kind::Job(job) => self.job(&c.name, job).await,
            Kind::Prometheus(p) => self.prometheus(p).await,
        }
    }

    async fn cel(&self, c: &CelCheck) -> Verdict {
        let q = ObjectQuery {
            api_version: c.api_version.clone(),
            kind: c.kind.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            label_selector: c.label_selector.as_ref().map(selector_string),
        };
        match self.cluster.objects(&q).await {
            Ok(objects) => judge::cel(&c.expr, &objects, |o| {
                format!(
                    "{} {}",
                    c.kind,
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            }),
            Err(e) => fail(format!("reading {} objects: {}", c.kind, Chain(&e))),
        }
    }

    async fn prometheus(&self, p: &PrometheusCheck) -> Verdict {
        let base = format!("{}/api/v1/query", p.url.trim_end_matches('/'));
        let url = match reqwest::Url::parse_with_params(&base, [("query", p.query.as_str())]) {
            Ok(u) => u,
            Err(e) => return fail(format!("{base}: {e}")),
        };
        match self.fetcher.get(url.as_str()).await {
            Ok(Some(body)) => judge::prometheus(&body, p.op, p.threshold),
            Ok(None) => fail(format!("{base}: not found")),
            Err(e) => fail(format!("querying {base}: {}", Chain(&e))),
        }
    }

    /// The newest finished health Job decides; a new one is started once the newest is
    /// older than [`JOB_INTERVAL`]. Until one finished, the check does not pass.
    async fn job(&self, check: &str, j: &JobCheck) -> Verdict {
        let selector = format!(
            "{JOB_UPGRADE_LABEL}={},{JOB_CHECK_LABEL}={}",
            label_value(self.upgrade),
            label_value(check)
        );
        let mut jobs = match self.cluster.jobs(&j.namespace, &selector).await {
            Ok(jobs) => jobs,
            Err(e) => return fail(format!("listing health Jobs: {}", Chain(&e))),
        };
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let newest = jobs.last();
        let age = |j: &Job| {
            j.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                .map_or(Duration::MAX, |t| {
                    (self.now - t).to_std().unwrap_or_default()
                })
        };
        let timeout = j
            .timeout_seconds
            .map_or(DEFAULT_JOB_TIMEOUT, Duration::from_secs);
        let verdict = match newest.map(|n| (judge::job(n), n)) {
            Some((JobState::Running, n)) if age(n) > timeout => fail(format!(
                "Job {} ran past its {}s timeout",
                n.metadata.name.as_deref().unwrap_or_default(),
                timeout.as_secs()
            )),
            Some((JobState::Running, _)) => jobs
                .iter()
                .rev()
                .find_map(|j| match judge::job(j) {
                    JobState::Done(v) => Some(v),
                    JobState::Running => None,
                })
                .unwrap_or_else(|| fail("the first health Job has not finished")),
            Some((JobState::Done(v), _)) => v,
            None => fail("no health Job has run yet"),
        };
        let due =
            newest.is_none_or(|n| judge::job(n) != JobState::Running && age(n) >= JOB_INTERVAL);
        if due
            && let Err(e) = self
                .cluster
                .create_job(&j.namespace, &self.new_job(check, j))
                .await
        {
            return fail(format!("creating a health Job: {}", Chain(&e)));
        }
        verdict
    }

    fn new_job(&self, check: &str, j: &JobCheck) -> Job {
        let mut spec = j.template.clone();
        if spec.get("ttlSecondsAfterFinished").is_none() {
            spec["ttlSecondsAfterFinished"] = json!(600);
        }
        let name = format!(
            "{}-{}-{}",
            label_value(self.upgrade),
            label_value(check),
            self.now.timestamp()
        );
        let name: String = name
            .chars()
            .rev()
            .take(63)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name.trim_start_matches('-'),
                "namespace": j.namespace,
                "labels": {
                    JOB_UPGRADE_LABEL: label_value(self.upgrade),
                    JOB_CHECK_LABEL: label_value(check),
                },
            },
            "spec": spec,
        }))
        .unwrap_or_default()
    }
}

fn fail(observed: impl Into<String>) -> Verdict {
    Verdict {
        healthy: false,
        observed: observed.into(),
    }
}

fn failing(check: &str, v: Verdict) -> Option<Failing> {
    Some(Failing {
        check: check.to_string(),
        observed: v.observed,
    })
}

/// `s` as a label value: lower-case alphanumerics and `-`, at most 63 characters.
fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches('-').to_string()
}

/// A label selector in the API's query syntax.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "DoesNotExist" => format!("!{}", e.key),
            _ => e.key.clone(),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_in_query_syntax() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "x", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!x");
    }

    #[test]
    fn label_values_are_safe() {
        assert_eq!(label_value("Web Check!"), "web-check");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }
}
