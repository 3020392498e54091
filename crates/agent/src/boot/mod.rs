//! Boot control: how the agent asks the firmware/bootloader to try the freshly written
//! slot exactly once, and how it makes that slot the default after a good boot.
//!
//! Two variables in the bootloader environment carry the whole protocol:
//!
//! * `osroll_default` — the slot booted when nothing else is asked (`A` or `B`);
//! * `osroll_try` — a one-shot request: the boot script boots this slot and clears the
//!   variable *before* starting the kernel, so if that boot hangs or panics, the watchdog
//!   reset lands on `osroll_default` again (the rollback).
//!
//! A third, per slot, carries the slot's kernel arguments: `osroll_cmdline_<A|B>`
//! ([`slot_cmdline_var`], edited by [`kargs`] for `spec.kernelArguments` before a try
//! is armed).
//!
//! The agent arms a try with [`BootControl::arm_try`], reboots, and after the boot checks
//! which slot is running: the new one with the target version means
//! [`BootControl::commit`] (default := new slot); the old one means the try failed.
//!
//! The bootloader's side is shipped, not described: [`scripts`] generates the GRUB
//! `grub.cfg` and the U-Boot boot script (`osroll create boot grub|uboot`, committed under
//! `deploy/boot/`), and `docs/boot-integration.md` states the contract.

pub mod grubenv;
pub mod kargs;
pub mod scripts;
pub mod uboot;

use crate::slot::Slot;

/// Environment variable holding the default slot.
pub const VAR_DEFAULT: &str = "osroll_default";
/// Environment variable holding the one-shot try slot.
pub const VAR_TRY: &str = "osroll_try";

/// The variable holding `slot`'s own kernel arguments (`osroll_cmdline_A`), which the
/// shipped scripts append to that slot's kernel command line.
pub fn slot_cmdline_var(slot: Slot) -> String {
    format!("osroll_cmdline_{slot}")
}

/// What the bootloader environment currently asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootState {
    /// The slot booted when no try is armed (`None`: never set, the bootloader's own default).
    pub default: Option<Slot>,
    /// The slot the next boot will try once.
    pub try_next: Option<Slot>,
}

/// A boot environment that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("boot control ({backend}) failed to {op}: {cause}")]
pub struct BootError {
    /// `grubenv /boot/grubenv`, `u-boot`, ...
    pub backend: String,
    /// What was attempted.
    pub op: String,
    /// Why it failed.
    #[source]
    pub cause: BootCause,
}

/// Why a boot environment operation failed, with the underlying error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum BootCause {
    /// The environment file or device could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The GRUB environment block is malformed or full.
    #[error(transparent)]
    GrubEnv(#[from] grubenv::GrubEnvError),
    /// A slot variable holds something other than `A` or `B`.
    #[error(transparent)]
    BadSlot(#[from] crate::slot::SlotParseError),
    /// A bootloader tool (`fw_printenv`, `fw_setenv`) could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The tool.
        program: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// A bootloader tool ran and failed.
    #[error("{command} exited with {status}: {stderr}")]
    Tool {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// This boot control has no per-slot kernel argument variable.
    #[error("this boot control cannot carry kernel arguments")]
    NoKernelArguments,
}

/// Arms, clears and commits the one-shot boot of a slot.
pub trait BootControl: Send + Sync {
    /// Read both variables.
    fn read(&self) -> Result<BootState, BootError>;
    /// Ask the next boot (only the next one) to try `slot`. Idempotent.
    fn arm_try(&self, slot: Slot) -> Result<(), BootError>;
    /// Withdraw an armed try. Idempotent.
    fn disarm(&self) -> Result<(), BootError>;
    /// Make `slot` the default and clear any armed try. Idempotent.
    fn commit(&self, slot: Slot) -> Result<(), BootError>;
    /// `slot`'s own kernel arguments ([`slot_cmdline_var`]), empty when unset. A boot
    /// control without that variable has none.
    fn slot_cmdline(&self, slot: Slot) -> Result<String, BootError> {
        let _ = slot;
        Ok(String::new())
    }
    /// Set `slot`'s own kernel arguments (empty: unset). Idempotent. A boot control
    /// without that variable refuses any.
    fn set_slot_cmdline(&self, slot: Slot, args: &str) -> Result<(), BootError> {
        if args.is_empty() {
            return Ok(());
        }
        Err(BootError {
            backend: "boot control".into(),
            op: format!("set the kernel arguments of slot {slot}"),
            cause: BootCause::NoKernelArguments,
        })
    }
}

/// Parse a slot variable; empty or missing means unset, anything else must be `A`/`B`.
pub(crate) fn parse_slot_var(
    backend: &str,
    name: &str,
    value: Option<&str>,
) -> Result<Option<Slot>, BootError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e: crate::slot::SlotParseError| BootError {
                backend: backend.to_string(),
                op: format!("read {name}"),
                cause: e.into(),
            }),
    }
}
