//! Ways of moving a node to a new OS version other than writing an A/B slot: OSTree
//! deployments (`rpm-ostree`, `bootc`, `ostree admin`) and an external OS plugin, plus
//! the command runner they share.
//!
//! Each backend only stages, applies and verifies; the agent's state machine decides
//! when, and the executor reports the outcome in the progress status.

pub mod deploy;
pub mod driver;
pub mod ostree;
pub mod plugin;
pub mod runner;

#[cfg(test)]
pub(crate) mod testutil;
