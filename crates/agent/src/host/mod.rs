//! The node as the agent sees it: which slot is running, which OS version it reports,
//! where the slots are, how to arm the bootloader, how to reboot.
//!
//! The state machine never touches the host; the executor asks a [`Host`] for
//! [`HostFacts`] and carries out steps through it. [`real::RealHost`] drives a real
//! machine, [`crate::simhost::SimHost`] a directory that stands in for one.

pub mod detect;
pub mod discover;
pub mod real;

use std::path::PathBuf;

use crate::boot::BootControl;
use crate::slot::Slot;

/// What the running system reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// The slot the running kernel was booted from.
    pub booted_slot: Slot,
    /// The OS version the running system reports (`None` if it reports none).
    pub os_version: Option<String>,
    /// Changes on every boot (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

/// What [`Host::reboot`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootKind {
    /// A real reboot was requested; the process will be killed by the shutdown.
    Requested,
    /// A simulated host recorded the request; the agent loop must return so the
    /// harness can "power on" the host and start a new agent.
    Simulated,
}

/// A host operation that failed, with what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

impl HostError {
    /// `"<context>: <error>"`.
    pub fn with(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        HostError(format!("{context}: {err}"))
    }
}

impl From<crate::boot::BootError> for HostError {
    fn from(e: crate::boot::BootError) -> Self {
        HostError(e.to_string())
    }
}

/// Side effects on the node, for the executor.
pub trait Host: Send + Sync {
    /// Booted slot, reported version and boot id.
    fn facts(&self) -> Result<HostFacts, HostError>;
    /// The block device or file that holds `slot`.
    fn slot_path(&self, slot: Slot) -> Result<PathBuf, HostError>;
    /// The bootloader environment.
    fn boot_control(&self) -> &dyn BootControl;
    /// Reboot the node (only ever called after `spec.rebootApproved`).
    fn reboot(&self) -> Result<RebootKind, HostError>;
    /// This boot's id alone: deployment backends (OSTree, plugin) need no slot.
    fn boot_id(&self) -> Result<String, HostError> {
        self.facts().map(|f| f.boot_id)
    }
}
