//! U-Boot environment through the `fw_printenv`/`fw_setenv` tools (u-boot-tools or
//! libubootenv), which already know where the environment lives (`/etc/fw_env.config`)
//! and how to update redundant copies safely.

use std::ffi::OsString;
use std::process::Command;

use super::{
    BootCause, BootControl, BootError, BootState, VAR_DEFAULT, VAR_TRY, parse_slot_var,
    slot_cmdline_var,
};
use crate::slot::Slot;

/// [`BootControl`] that shells out to `fw_printenv` and `fw_setenv`.
#[derive(Clone, Debug)]
pub struct UBoot {
    printenv: OsString,
    setenv: OsString,
    path: Option<OsString>,
    config: Option<OsString>,
}

impl Default for UBoot {
    fn default() -> Self {
        UBoot {
            printenv: "fw_printenv".into(),
            setenv: "fw_setenv".into(),
            path: None,
            config: None,
        }
    }
}

impl UBoot {
    /// Use these programs (names are looked up on `PATH`).
    pub fn new(printenv: impl Into<OsString>, setenv: impl Into<OsString>) -> Self {
        UBoot {
            printenv: printenv.into(),
            setenv: setenv.into(),
            path: None,
            config: None,
        }
    }

    /// Run the tools with this `PATH` (for hosts whose tools live under `/host/usr/bin`).
    pub fn with_path(mut self, path: impl Into<OsString>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Pass `-c <config>` to both tools (the host's `/etc/fw_env.config` as mounted in the pod).
    pub fn with_config(mut self, config: impl Into<OsString>) -> Self {
        self.config = Some(config.into());
        self
    }

    fn err(&self, op: &str, cause: impl Into<BootCause>) -> BootError {
        BootError {
            backend: "u-boot".into(),
            op: op.to_string(),
            cause: cause.into(),
        }
    }

    fn run(&self, op: &str, program: &OsString, args: &[&str]) -> Result<String, BootError> {
        let mut cmd = Command::new(program);
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        cmd.args(args);
        if let Some(p) = &self.path {
            cmd.env("PATH", p);
        }
        let out = crate::fsutil::output_retrying_busy(&mut cmd).map_err(|source| {
            let program = program.to_string_lossy().into_owned();
            self.err(op, BootCause::Spawn { program, source })
        })?;
        if !out.status.success() {
            let cause = BootCause::Tool {
                command: format!("{} {}", program.to_string_lossy(), args.join(" ")),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            };
            return Err(self.err(op, cause));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn set(&self, op: &str, name: &str, value: Option<Slot>) -> Result<(), BootError> {
        match value {
            Some(s) => self.run(op, &self.setenv, &[name, s.as_str()]).map(drop),
            None => self.run(op, &self.setenv, &[name]).map(drop),
        }
    }
}

/// Parse `fw_printenv` output (`name=value` per line).
pub fn parse_printenv(out: &str) -> Vec<(&str, &str)> {
    out.lines().filter_map(|l| l.split_once('=')).collect()
}

impl BootControl for UBoot {
    fn read(&self) -> Result<BootState, BootError> {
        let out = self.run("read the environment", &self.printenv, &[])?;
        let vars = parse_printenv(&out);
        let get = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        Ok(BootState {
            default: parse_slot_var("u-boot", VAR_DEFAULT, get(VAR_DEFAULT))?,
            try_next: parse_slot_var("u-boot", VAR_TRY, get(VAR_TRY))?,
        })
    }

    fn arm_try(&self, slot: Slot) -> Result<(), BootError> {
        self.set(&format!("arm a try of slot {slot}"), VAR_TRY, Some(slot))
    }

    fn disarm(&self) -> Result<(), BootError> {
        if self.read()?.try_next.is_none() {
            return Ok(());
        }
        self.set("disarm the try", VAR_TRY, None)
    }

    /// Sets the default first, then clears the try: a crash in between leaves a try of
    /// the slot that is also the default, which boots the same slot either way.
    fn commit(&self, slot: Slot) -> Result<(), BootError> {
        let state = self.read()?;
        if state.default != Some(slot) {
            self.set(&format!("commit slot {slot}"), VAR_DEFAULT, Some(slot))?;
        }
        if state.try_next.is_some() {
            self.set(&format!("commit slot {slot}"), VAR_TRY, None)?;
        }
        Ok(())
    }

    fn slot_cmdline(&self, slot: Slot) -> Result<String, BootError> {
        let out = self.run("read the environment", &self.printenv, &[])?;
        let var = slot_cmdline_var(slot);
        let vars = parse_printenv(&out);
        Ok(vars
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default())
    }

    /// `fw_setenv NAME VALUE` (one argument, spaces and all); `fw_setenv NAME` unsets.
    fn set_slot_cmdline(&self, slot: Slot, args: &str) -> Result<(), BootError> {
        if self.slot_cmdline(slot)? == args {
            return Ok(());
        }
        let var = slot_cmdline_var(slot);
        let op = format!("set the kernel arguments of slot {slot}");
        let argv: Vec<&str> = if args.is_empty() {
            vec![&var]
        } else {
            vec![&var, args]
        };
        self.run(&op, &self.setenv, &argv).map(drop)
    }
}

#[cfg(test)]
mod tests;
