//! The node as the agent sees it: which slot is running, which OS version it reports,
//! where the slots are, how to arm the bootloader, how to reboot.
//!
//! The state machine never touches the host; the executor asks a [`Host`] for
//! [`HostFacts`] and carries out steps through it. [`real::RealHost`] drives a real
//! machine, `simhost::SimHost` (feature `sim-host`) a directory that stands in for one.

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
pub enum HostError {
    /// An operation failed; `context` says which (the file, device or command).
    #[error("{context}: {source}")]
    Failed {
        /// What was attempted.
        context: String,
        /// Why it failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bootloader environment could not be read or written.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    /// No device is configured for a slot.
    #[error("no partition configured for slot {slot} (--slot-{})", slot.as_str().to_lowercase())]
    NoSlotDevice {
        /// The slot.
        slot: Slot,
    },
    /// The mount table has no root filesystem.
    #[error("no mount on / in {}", mountinfo.display())]
    NoRootMount {
        /// The mount table read.
        mountinfo: PathBuf,
    },
    /// Neither the kernel command line nor the root device names a slot.
    #[error(
        "cannot tell the booted slot: the kernel command line ({cmdline}) has no osroll.slot= and its root= names neither {slot_a} nor {slot_b}, and / is on device {}:{} which is neither",
        root.0,
        root.1
    )]
    BootedSlotUnknown {
        /// The kernel command line.
        cmdline: String,
        /// Slot A's device.
        slot_a: String,
        /// Slot B's device.
        slot_b: String,
        /// Major and minor number of the device mounted on `/`.
        root: (u32, u32),
    },
    /// The reboot command is empty.
    #[error("empty reboot command")]
    EmptyRebootCommand,
    /// The reboot command ran and failed.
    #[error("{command} exited with {status}: {stderr}")]
    RebootRefused {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// The end of what it printed on stderr.
        stderr: String,
    },
}

impl HostError {
    /// `context` failed because of `err`.
    pub fn with(
        context: impl std::fmt::Display,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        HostError::Failed {
            context: context.to_string(),
            source: err.into(),
        }
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
    /// The running kernel's command line (`/proc/cmdline`), for the status; `None`
    /// where the host cannot tell.
    fn kernel_command_line(&self) -> Option<String> {
        None
    }
    /// This boot's id alone: deployment backends (OSTree, plugin) need no slot.
    fn boot_id(&self) -> Result<String, HostError> {
        self.facts().map(|f| f.boot_id)
    }
}
