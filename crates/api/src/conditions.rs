//! Status conditions in the shape of `metav1.Condition`, and a helper that keeps
//! `lastTransitionTime` stable while the status does not change.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One status condition (`kubectl wait --for=condition=<type>` reads these).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, e.g. `Ready`, `Progressing`, `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable CamelCase reason for the last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time at which `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition with `status` `True` or `False`.
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }

    /// Whether the status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Insert or replace `new` in `conditions` by type. `lastTransitionTime` is kept from the
/// old condition when the status did not change and set to `now` when it did.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: &str) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time
                    .clone()
                    .or_else(|| Some(now.to_string()))
            } else {
                Some(now.to_string())
            };
            *old = new;
        }
        None => {
            new.last_transition_time = Some(now.to_string());
            conditions.push(new);
        }
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut c = Vec::new();
        set_condition(&mut c, Condition::new("Ready", false, "Waiting", "a"), "t1");
        set_condition(&mut c, Condition::new("Ready", false, "Waiting", "b"), "t2");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time.as_deref(), Some("t1"));
        assert_eq!(c[0].message, "b");
        set_condition(&mut c, Condition::new("Ready", true, "Done", ""), "t3");
        assert_eq!(c[0].last_transition_time.as_deref(), Some("t3"));
        assert!(find(&c, "Ready").unwrap().is_true());
    }
}
