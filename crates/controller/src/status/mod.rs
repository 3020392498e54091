//! Build the OSUpgrade's status from a decision (a plan, a rejection, or waiting for
//! another OSUpgrade), keeping condition transition times stable and stamping every
//! condition with the generation it was computed from.

use osroll_api::conditions::set_condition;
use osroll_api::upgrade::UpgradeReason;
use osroll_api::{Condition, OSUpgradeStatus, UpgradePhase};

use crate::catalog::Resolved;
use crate::names::name_list;
use crate::planner::Plan;
use crate::select::Blocker;

/// What the reconcile concluded.
pub enum Verdict<'a> {
    /// The spec or catalog cannot be acted on.
    Rejected {
        /// CamelCase reason.
        reason: &'a str,
        /// Names the offending value.
        message: &'a str,
    },
    /// An older OSUpgrade holds some of the same nodes.
    Waiting(&'a Blocker),
    /// Rolling out.
    Planned {
        /// The planner's decision.
        plan: &'a Plan,
        /// The resolution it acts on.
        resolved: &'a Resolved,
        /// Drain notes to add to the message.
        notes: Vec<&'a str>,
    },
}

/// The new status, starting from `old`, for `generation` at time `now` (RFC 3339).
pub fn build(
    old: Option<&OSUpgradeStatus>,
    generation: Option<i64>,
    now: &str,
    v: Verdict<'_>,
) -> OSUpgradeStatus {
    let mut st = old.cloned().unwrap_or_default();
    st.observed_generation = generation;
    let conds = match v {
        Verdict::Rejected { reason, message } => rejected(&mut st, reason, message),
        Verdict::Waiting(b) => waiting(&mut st, b),
        Verdict::Planned {
            plan,
            resolved,
            notes,
        } => planned(&mut st, plan, resolved, &notes),
    };
    for mut c in conds {
        c.observed_generation = generation;
        set_condition(&mut st.conditions, c, now);
    }
    st
}

fn rejected(st: &mut OSUpgradeStatus, reason: &str, message: &str) -> Vec<Condition> {
    st.phase = Some(UpgradePhase::Rejected);
    st.reason = Some(reason.to_string());
    st.message = Some(message.to_string());
    vec![
        Condition::new("Ready", false, reason, message),
        Condition::new("Progressing", false, reason, message),
        Condition::new("Degraded", false, "NoFailures", ""),
    ]
}

fn waiting(st: &mut OSUpgradeStatus, b: &Blocker) -> Vec<Condition> {
    let reason = UpgradeReason::WaitingForOtherUpgrade.as_str();
    let message = format!(
        "waiting for OSUpgrade {}, which also selects node(s) {}",
        b.upgrade,
        name_list(b.nodes.iter().map(String::as_str))
    );
    st.phase = Some(UpgradePhase::Pending);
    st.reason = Some(reason.into());
    st.message = Some(message.clone());
    vec![
        Condition::new("Ready", false, reason, message.clone()),
        Condition::new("Progressing", false, reason, message),
    ]
}

fn planned(
    st: &mut OSUpgradeStatus,
    plan: &Plan,
    resolved: &Resolved,
    notes: &[&str],
) -> Vec<Condition> {
    let mut message = plan.message.clone();
    for n in notes {
        message.push_str("; ");
        message.push_str(n);
    }
    st.phase = Some(plan.phase);
    st.reason = Some(plan.reason.as_str().to_string());
    st.message = Some(message.clone());
    // An external OSUpgrade resolves to no version and no catalog.
    st.resolved_version = Some(resolved.image.version.clone()).filter(|v| !v.is_empty());
    st.catalog_digest = Some(resolved.digest.clone()).filter(|d| !d.is_empty());
    st.nodes = Some(plan.counts.clone());
    let mut conds: Vec<Condition> = plan
        .conditions
        .iter()
        .cloned()
        .map(|mut c| {
            if c.type_ == "Progressing" && c.is_true() {
                c.message = message.clone();
            }
            c
        })
        .collect();
    conds.push(catalog_warnings(resolved));
    conds
}

/// CatalogWarnings: problems in catalog entries other than the target.
fn catalog_warnings(resolved: &Resolved) -> Condition {
    if resolved.warnings.is_empty() {
        return Condition::new("CatalogWarnings", false, "NoProblems", "");
    }
    let list: Vec<String> = resolved.warnings.iter().map(ToString::to_string).collect();
    Condition::new(
        "CatalogWarnings",
        true,
        "CatalogHasProblems",
        format!(
            "{} problem(s) in entries other than the target: {}",
            list.len(),
            list.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests;
