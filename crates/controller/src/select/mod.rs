//! Label selectors, node selection and overlap between OSUpgrades.
//!
//! An OSUpgrade selects the nodes labelled `osroll.io/managed=true` (the agent sets it)
//! that also match its `nodeSelector`. When two unfinished OSUpgrades select a common
//! node, the older one (by creation time, then name) goes on and the newer one waits,
//! so no node is ever handed two upgrades at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use osroll_api::labels;

use crate::planner::SpecError;

/// A parsed label selector (`matchLabels` and `matchExpressions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Req>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Parse; `field` names the selector in errors (e.g. `spec.nodeSelector`).
    pub fn from_label_selector(sel: &LabelSelector, field: &str) -> Result<Selector, SpecError> {
        let mut reqs: Vec<Req> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Req::In(k.clone(), vec![v.clone()]))
            .collect();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            let values = e.values.clone().unwrap_or_default();
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SpecError::new(
                        &format!("{f}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                "In" => Req::In(e.key.clone(), values),
                "NotIn" => Req::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SpecError::new(
                        &format!("{f}.values"),
                        format!("operator {} takes no values", e.operator),
                    ));
                }
                "Exists" => Req::Exists(e.key.clone()),
                "DoesNotExist" => Req::DoesNotExist(e.key.clone()),
                other => {
                    return Err(SpecError::new(
                        &format!("{f}.operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Which nodes an OSUpgrade selects: managed ones matching its `nodeSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelection {
    selector: Selector,
    in_place: bool,
}

impl NodeSelection {
    /// From `spec.nodeSelector`.
    pub fn from_spec(sel: Option<&LabelSelector>) -> Result<NodeSelection, SpecError> {
        let selector = match sel {
            Some(s) => Selector::from_label_selector(s, "spec.nodeSelector")?,
            None => Selector::default(),
        };
        Ok(NodeSelection {
            selector,
            in_place: false,
        })
    }

    /// Also select managed nodes labelled `osroll.io/in-place-update=pending` (for the
    /// OSUpgrade that takes in-place requests, see [`crate::inplace`]).
    pub fn with_in_place(mut self, yes: bool) -> Self {
        self.in_place = yes;
        self
    }

    /// Whether a node with `labels` is selected.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        let managed = labels.get(labels::MANAGED).is_some_and(|v| v == "true");
        let requested = self.in_place
            && labels
                .get(labels::IN_PLACE_UPDATE)
                .is_some_and(|v| v == crate::inplace::PENDING);
        managed && (requested || self.selector.matches(labels))
    }
}

/// What overlap detection needs to know about one OSUpgrade.
#[derive(Clone, Debug)]
pub struct Claim {
    /// OSUpgrade name.
    pub name: String,
    /// Creation time; older upgrades win.
    pub created: Option<DateTime<Utc>>,
    /// Still unfinished (not Completed or Rejected), so it holds its nodes.
    pub active: bool,
    /// Its node selection, `None` when its spec is invalid (it then selects nothing).
    pub selection: Option<NodeSelection>,
}

impl Claim {
    fn precedes(&self, other: &Claim) -> bool {
        // A missing creation time sorts last: such an object is not persisted yet.
        let key = |c: &Claim| (c.created.is_none(), c.created, c.name.clone());
        key(self) < key(other)
    }
}

/// An older, unfinished OSUpgrade that selects some of the same nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// Its name.
    pub upgrade: String,
    /// The shared nodes.
    pub nodes: Vec<String>,
}

/// The oldest unfinished OSUpgrade that precedes `me` and shares a node with it.
pub fn blocker<'a>(
    me: &Claim,
    others: &[Claim],
    nodes: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)> + Clone,
) -> Option<Blocker> {
    let Some(mine) = &me.selection else {
        return None;
    };
    let mut older: Vec<&Claim> = others
        .iter()
        .filter(|o| o.name != me.name && o.active && o.precedes(me))
        .collect();
    older.sort_by(|a, b| {
        if a.precedes(b) {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    older.into_iter().find_map(|o| {
        let theirs = o.selection.as_ref()?;
        let shared: Vec<String> = nodes
            .clone()
            .into_iter()
            .filter(|(_, l)| mine.selects(l) && theirs.selects(l))
            .map(|(n, _)| n.to_string())
            .collect();
        (!shared.is_empty()).then(|| Blocker {
            upgrade: o.name.clone(),
            nodes: shared,
        })
    })
}

#[cfg(test)]
mod tests;
