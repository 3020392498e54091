//! U-Boot environment through the `fw_printenv`/`fw_setenv` tools (u-boot-tools or
//! libubootenv), which already know where the environment lives (`/etc/fw_env.config`)
//! and how to update redundant copies safely.

use std::ffi::OsString;
use std::process::Command;

use super::{BootControl, BootError, BootState, VAR_DEFAULT, VAR_TRY, parse_slot_var};
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

    fn err(&self, op: &str, detail: impl ToString) -> BootError {
        BootError {
            backend: "u-boot".into(),
            op: op.to_string(),
            detail: detail.to_string(),
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
        let out = crate::fsutil::output_retrying_busy(&mut cmd)
            .map_err(|e| self.err(op, format!("cannot run {}: {e}", program.to_string_lossy())))?;
        if !out.status.success() {
            return Err(self.err(
                op,
                format!(
                    "{} {} exited with {}: {}",
                    program.to_string_lossy(),
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// Fake `fw_printenv`/`fw_setenv` on a private PATH: the environment lives in
    /// `env` (one `name=value` per line) and every invocation is appended to `log`.
    fn fake_tools(dir: &Path) -> UBoot {
        let env = dir.join("env");
        let log = dir.join("log");
        std::fs::write(&env, "bootdelay=3\n").unwrap();
        let printenv = format!(
            "#!/bin/sh\necho \"fw_printenv $*\" >> {log}\ncat {env}\n",
            log = log.display(),
            env = env.display()
        );
        let setenv = format!(
            "#!/bin/sh\necho \"fw_setenv $*\" >> {log}\nif [ \"$1\" = -c ]; then shift 2; fi\ngrep -v \"^$1=\" {env} > {env}.new\nif [ $# -gt 1 ]; then echo \"$1=$2\" >> {env}.new; fi\nmv {env}.new {env}\n",
            log = log.display(),
            env = env.display()
        );
        for (name, body) in [("fw_printenv", printenv), ("fw_setenv", setenv)] {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = format!("{}:/usr/bin:/bin", dir.display());
        UBoot::default().with_path(path)
    }

    fn log(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn arm_commit_disarm_call_the_tools_with_the_right_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let boot = fake_tools(dir.path());
        assert_eq!(boot.read().unwrap(), BootState::default());
        boot.arm_try(Slot::B).unwrap();
        assert_eq!(boot.read().unwrap().try_next, Some(Slot::B));
        boot.commit(Slot::B).unwrap();
        assert_eq!(
            boot.read().unwrap(),
            BootState {
                default: Some(Slot::B),
                try_next: None
            }
        );
        boot.disarm().unwrap(); // nothing armed: no fw_setenv call
        let calls = log(dir.path());
        let sets: Vec<_> = calls
            .iter()
            .filter(|c| c.starts_with("fw_setenv"))
            .collect();
        assert_eq!(
            sets,
            [
                "fw_setenv osroll_try B",
                "fw_setenv osroll_default B",
                "fw_setenv osroll_try"
            ],
            "{calls:?}"
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        assert!(
            env.contains("bootdelay=3\n"),
            "unrelated variables are kept: {env}"
        );
    }

    #[test]
    fn config_file_is_passed_to_both_tools() {
        let dir = tempfile::tempdir().unwrap();
        let boot = fake_tools(dir.path()).with_config("/host/etc/fw_env.config");
        boot.arm_try(Slot::A).unwrap();
        boot.read().unwrap();
        let calls = log(dir.path());
        assert_eq!(
            calls,
            [
                "fw_setenv -c /host/etc/fw_env.config osroll_try A",
                "fw_printenv -c /host/etc/fw_env.config"
            ]
        );
    }

    #[test]
    fn failing_tool_is_reported_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fw_printenv");
        std::fs::write(
            &p,
            "#!/bin/sh\necho 'Cannot read environment' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let boot = UBoot::default().with_path(dir.path().as_os_str().to_owned());
        let e = boot.read().unwrap_err().to_string();
        assert!(
            e.contains("Cannot read environment") && e.contains("fw_printenv"),
            "{e}"
        );
        let missing = UBoot::new("/nonexistent/fw_printenv", "x")
            .read()
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("cannot run /nonexistent/fw_printenv"),
            "{missing}"
        );
    }

    #[test]
    fn printenv_parsing_keeps_values_with_equals() {
        assert_eq!(
            parse_printenv("a=1\nb=x=y\njunk\n"),
            [("a", "1"), ("b", "x=y")]
        );
    }
}
