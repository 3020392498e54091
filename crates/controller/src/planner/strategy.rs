//! The rollout strategy in validated form.
//!
//! `spec.strategy` and `spec.drain` arrive as loosely typed API fields (int-or-string
//! budgets, `HH:MM` strings, time-zone names). They are checked once here, and every
//! error names the offending field and value, so the planner itself only ever sees
//! values that make sense.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use osroll_api::{DrainSpec, DrainTimeoutPolicy, RolloutStrategy};

use super::window::Window;

/// A limit given as a node count or as a percentage of the selected nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// An absolute number of nodes.
    Count(u32),
    /// A percentage (0..=100) of the selected nodes, rounded down.
    Percent(u32),
}

impl Budget {
    /// Parse an int-or-string field (`3`, `"3"`, `"25%"`); `field` names it in errors.
    pub fn parse(v: &IntOrString, field: &str) -> Result<Budget, SpecError> {
        match v {
            IntOrString::Int(n) if *n >= 0 => Ok(Budget::Count(*n as u32)),
            IntOrString::Int(n) => Err(SpecError::new(field, format!("{n} is negative"))),
            IntOrString::String(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.parse::<u32>() {
                        Ok(p) if p <= 100 => Ok(Budget::Percent(p)),
                        _ => Err(SpecError::new(
                            field,
                            format!("{s:?} is not a percentage between 0% and 100%"),
                        )),
                    }
                } else {
                    t.parse::<u32>().map(Budget::Count).map_err(|_| {
                        SpecError::new(
                            field,
                            format!(
                                "{s:?} is neither a whole number nor a percentage like \"10%\""
                            ),
                        )
                    })
                }
            }
        }
    }

    /// The number of nodes this budget allows out of `total` selected nodes: percentages
    /// round down, and the result is never below 1 so a rollout can always advance.
    pub fn resolve(self, total: usize) -> usize {
        let n = match self {
            Budget::Count(n) => n as usize,
            Budget::Percent(p) => total * p as usize / 100,
        };
        n.max(1)
    }
}

/// The canary batch, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// Nodes in the batch (at least 1).
    pub count: u32,
    /// Time to watch the completed canaries before the rest starts.
    pub soak: Duration,
    /// Whether a person must set `approved` after the soak.
    pub require_approval: bool,
    /// Whether they did.
    pub approved: bool,
}

/// Everything the planner needs from `spec.strategy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Strategy {
    /// Most nodes disrupted at once.
    pub max_unavailable: Budget,
    /// Most nodes staging at once; `None` means no limit.
    pub max_staging: Option<Budget>,
    /// Canary batch, if any.
    pub canary: Option<Canary>,
    /// Maintenance windows; empty means always open.
    pub windows: Vec<Window>,
    /// Failures after which the rollout halts (0 behaves like 1: no failure is tolerated).
    pub max_failures: u32,
    /// Start nothing new.
    pub paused: bool,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            max_unavailable: Budget::Count(1),
            max_staging: None,
            canary: None,
            windows: Vec::new(),
            max_failures: 1,
            paused: false,
        }
    }
}

impl Strategy {
    /// Validate `spec.strategy` (absent means the defaults).
    pub fn from_spec(s: Option<&RolloutStrategy>) -> Result<Strategy, SpecError> {
        let Some(s) = s else {
            return Ok(Strategy::default());
        };
        let max_unavailable = match &s.max_unavailable {
            Some(v) => Budget::parse(v, "spec.strategy.maxUnavailable")?,
            None => Budget::Count(1),
        };
        let max_staging = s
            .max_staging
            .as_ref()
            .map(|v| Budget::parse(v, "spec.strategy.maxStaging"))
            .transpose()?;
        let canary = match &s.canary {
            Some(c) if c.count == 0 => {
                return Err(SpecError::new(
                    "spec.strategy.canary.count",
                    "0 is not allowed; omit canary instead",
                ));
            }
            Some(c) => Some(Canary {
                count: c.count,
                soak: Duration::from_secs(c.soak_seconds.unwrap_or(0)),
                require_approval: c.require_approval,
                approved: c.approved,
            }),
            None => None,
        };
        let windows = s
            .maintenance_windows
            .iter()
            .enumerate()
            .map(|(i, w)| Window::from_spec(w, &format!("spec.strategy.maintenanceWindows[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Strategy {
            max_unavailable,
            max_staging,
            canary,
            windows,
            max_failures: s.max_failures.unwrap_or(1),
            paused: s.paused,
        })
    }

    /// Failures at which the rollout halts.
    pub fn failure_limit(&self) -> usize {
        self.max_failures.max(1) as usize
    }
}

/// Drain settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainPolicy {
    /// How long evictions may take before `on_timeout` applies.
    pub timeout: Duration,
    /// What happens then.
    pub on_timeout: DrainTimeoutPolicy,
    /// Grace period handed to evictions and forced deletions.
    pub grace_period_seconds: Option<i64>,
    /// Only pods matching this selector are evicted.
    pub pod_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        DrainPolicy {
            timeout: Duration::from_secs(600),
            on_timeout: DrainTimeoutPolicy::Fail,
            grace_period_seconds: None,
            pod_selector: None,
        }
    }
}

impl DrainPolicy {
    /// Validate `spec.drain` (absent means the defaults).
    pub fn from_spec(d: Option<&DrainSpec>) -> Result<DrainPolicy, SpecError> {
        let Some(d) = d else {
            return Ok(DrainPolicy::default());
        };
        if let Some(g) = d.grace_period_seconds
            && g < 0
        {
            return Err(SpecError::new(
                "spec.drain.gracePeriodSeconds",
                format!("{g} is negative"),
            ));
        }
        if let Some(sel) = &d.pod_selector {
            crate::select::Selector::from_label_selector(sel, "spec.drain.podSelector")?;
        }
        Ok(DrainPolicy {
            timeout: Duration::from_secs(d.timeout_seconds.unwrap_or(600)),
            on_timeout: d.on_timeout.unwrap_or_default(),
            grace_period_seconds: d.grace_period_seconds,
            pod_selector: d.pod_selector.clone(),
        })
    }
}

/// A spec field the controller cannot act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// JSON path of the field, e.g. `spec.strategy.maxUnavailable`.
    pub field: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl SpecError {
    /// An error about `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        SpecError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_round_down_with_minimum_one() {
        let f = "spec.strategy.maxUnavailable";
        assert_eq!(
            Budget::parse(&IntOrString::Int(3), f).unwrap(),
            Budget::Count(3)
        );
        assert_eq!(
            Budget::parse(&IntOrString::String("3".into()), f).unwrap(),
            Budget::Count(3)
        );
        assert_eq!(
            Budget::parse(&IntOrString::String("10%".into()), f).unwrap(),
            Budget::Percent(10)
        );
        assert_eq!(Budget::Percent(10).resolve(1000), 100);
        assert_eq!(Budget::Percent(10).resolve(19), 1);
        assert_eq!(Budget::Percent(25).resolve(10), 2);
        assert_eq!(
            Budget::Percent(10).resolve(5),
            1,
            "rounds down to 0, then the minimum of 1 applies"
        );
        assert_eq!(Budget::Count(0).resolve(10), 1);
        assert_eq!(Budget::Percent(100).resolve(7), 7);
    }

    #[test]
    fn budget_errors_name_field_and_value() {
        let e = Budget::parse(
            &IntOrString::String("ten".into()),
            "spec.strategy.maxStaging",
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.strategy.maxStaging");
        assert!(e.message.contains("\"ten\""), "{e}");
        let e = Budget::parse(&IntOrString::String("150%".into()), "x").unwrap_err();
        assert!(e.message.contains("150%"), "{e}");
        assert!(Budget::parse(&IntOrString::Int(-1), "x").is_err());
    }

    #[test]
    fn strategy_defaults_and_validation() {
        let s = Strategy::from_spec(None).unwrap();
        assert_eq!(s.max_unavailable, Budget::Count(1));
        assert_eq!(s.failure_limit(), 1);
        let spec = RolloutStrategy {
            max_failures: Some(0),
            canary: Some(osroll_api::upgrade::CanarySpec {
                count: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = Strategy::from_spec(Some(&spec)).unwrap_err();
        assert_eq!(e.field, "spec.strategy.canary.count");
        let spec = RolloutStrategy {
            max_failures: Some(0),
            ..Default::default()
        };
        assert_eq!(Strategy::from_spec(Some(&spec)).unwrap().failure_limit(), 1);
    }

    #[test]
    fn drain_policy_rejects_negative_grace() {
        let d = DrainSpec {
            grace_period_seconds: Some(-5),
            ..Default::default()
        };
        let e = DrainPolicy::from_spec(Some(&d)).unwrap_err();
        assert_eq!(e.field, "spec.drain.gracePeriodSeconds");
        assert_eq!(
            DrainPolicy::from_spec(None).unwrap().timeout,
            Duration::from_secs(600)
        );
    }
}
