//! The osroll controller: resolves each OSUpgrade's catalog, selects its nodes, creates
//! one OSUpgradeProgress per node and rolls the upgrade out safely (maxUnavailable,
//! canary, maintenance windows, drain honouring PodDisruptionBudgets, failure budget).
//!
//! Decisions are pure functions ([`planner::plan`], [`drain::assess`],
//! [`leader::decide`], ...) tested directly; the Kubernetes side effects sit in thin
//! adapters behind the [`cluster::Cluster`] trait.

pub mod act;
pub mod catalog;
mod chain;
pub mod cluster;
pub mod drain;
pub mod external;
#[cfg(test)]
mod fake;
pub mod health;
pub mod inplace;
pub mod leader;
pub mod marks;
pub mod metrics;
mod names;
pub mod observe;
pub mod planner;
pub mod reconcile;
mod run;
pub mod select;
pub mod status;
pub mod trigger;
pub mod verify;

pub use run::{ControllerConfig, run, run_until};
