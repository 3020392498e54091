//! Crash injection for the kill test's agent process: wrappers around the simulated host
//! and the file progress source that SIGKILL the process right before or right after
//! its n-th side effect (a status publish, a node label, a boot-control write, a reboot
//! request), so every boundary between the agent's writes is hit deterministically,
//! not only the ones a random timer happens to land on.
//!
//! Effects are counted across agent processes in `<dir>/effects.log` (one line per
//! effect), starting with the publish of the Staged status: the count covers the whole
//! switching half, including the boot in between.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use osroll_agent::boot::{BootControl, BootError, BootState};
use osroll_agent::host::{HostError, RebootKind};
use osroll_agent::source::file::FileSource;
use osroll_agent::source::{ProgressSource, SourceError};
use osroll_agent::{Host, HostFacts, SimHost, Slot};
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase};

/// Where to crash: before or after effect number `at` (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub at: usize,
    pub after: bool,
}

impl Plan {
    /// `"<n>:before"` or `"<n>:after"` (the form passed to the agent process).
    pub(crate) fn parse(s: &str) -> Option<Plan> {
        let (n, when) = s.split_once(':')?;
        Some(Plan {
            at: n.parse().ok()?,
            after: match when {
                "before" => false,
                "after" => true,
                _ => return None,
            },
        })
    }

    pub(crate) fn encode(&self) -> String {
        format!(
            "{}:{}",
            self.at,
            if self.after { "after" } else { "before" }
        )
    }
}

/// The effect counter shared by the wrappers of one agent process.
pub(crate) struct Effects {
    dir: PathBuf,
    plan: Option<Plan>,
}

impl Effects {
    pub(crate) fn new(dir: &Path, plan: Option<Plan>) -> Arc<Effects> {
        Arc::new(Effects {
            dir: dir.to_path_buf(),
            plan,
        })
    }

    fn log(&self) -> PathBuf {
        self.dir.join("effects.log")
    }

    /// The effects recorded so far in `dir`.
    pub(crate) fn recorded(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("effects.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Whether the planned crash happened in `dir`.
    pub(crate) fn crashed(dir: &Path) -> Option<String> {
        std::fs::read_to_string(dir.join("crashed")).ok()
    }

    fn counting(&self) -> bool {
        self.dir.join("counting").exists()
    }

    fn die(&self, what: &str, n: usize, when: &str) -> ! {
        std::fs::write(self.dir.join("crashed"), format!("#{n} {what} ({when})")).unwrap();
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
        unreachable!("SIGKILLed")
    }

    /// Run effect `what`, crashing around it if planned.
    pub(crate) fn run<R>(&self, what: &str, f: impl FnOnce() -> R) -> R {
        if !self.counting() {
            return f();
        }
        let n = Effects::recorded(&self.dir).len() + 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        writeln!(log, "{what}").unwrap();
        log.sync_all().unwrap();
        let armed = self
            .plan
            .filter(|p| p.at == n && Effects::crashed(&self.dir).is_none());
        if armed.is_some_and(|p| !p.after) {
            self.die(what, n, "before");
        }
        let r = f();
        if armed.is_some_and(|p| p.after) {
            self.die(what, n, "after");
        }
        r
    }

    fn start_counting(&self) {
        if !self.counting() {
            std::fs::write(self.dir.join("counting"), b"").unwrap();
        }
    }
}

/// The simulated host, with its boot control and reboot counted.
pub(crate) struct CrashHost {
    host: SimHost,
    boot: CrashBoot,
    fx: Arc<Effects>,
}

impl CrashHost {
    pub(crate) fn new(host: SimHost, fx: Arc<Effects>) -> CrashHost {
        let boot = CrashBoot {
            host: host.clone(),
            fx: fx.clone(),
        };
        CrashHost { host, boot, fx }
    }
}

impl Host for CrashHost {
    fn facts(&self) -> Result<HostFacts, HostError> {
        self.host.facts()
    }
    fn slot_path(&self, slot: Slot) -> Result<PathBuf, HostError> {
        self.host.slot_path(slot)
    }
    fn boot_control(&self) -> &dyn BootControl {
        &self.boot
    }
    fn reboot(&self) -> Result<RebootKind, HostError> {
        self.fx.run("reboot", || self.host.reboot())
    }
}

pub(crate) struct CrashBoot {
    host: SimHost,
    fx: Arc<Effects>,
}

impl BootControl for CrashBoot {
    fn read(&self) -> Result<BootState, BootError> {
        self.host.boot_env().read()
    }
    fn arm_try(&self, slot: Slot) -> Result<(), BootError> {
        self.fx.run(&format!("arm_try {slot}"), || {
            self.host.boot_env().arm_try(slot)
        })
    }
    fn disarm(&self) -> Result<(), BootError> {
        self.fx.run("disarm", || self.host.boot_env().disarm())
    }
    fn commit(&self, slot: Slot) -> Result<(), BootError> {
        self.fx.run(&format!("commit {slot}"), || {
            self.host.boot_env().commit(slot)
        })
    }
}

/// The file progress source, with status publishes and node labels counted.
pub(crate) struct CrashSource {
    inner: FileSource,
    fx: Arc<Effects>,
}

impl CrashSource {
    pub(crate) fn new(inner: FileSource, fx: Arc<Effects>) -> CrashSource {
        CrashSource { inner, fx }
    }
}

impl ProgressSource for CrashSource {
    async fn list(&self) -> Result<Vec<OSUpgradeProgress>, SourceError> {
        self.inner.list().await
    }

    async fn patch_status(
        &self,
        name: &str,
        status: &OSUpgradeProgressStatus,
    ) -> Result<(), SourceError> {
        if status.phase == Some(ProgressPhase::Staged) {
            self.fx.start_counting();
        }
        let what = format!("publish {:?}", status.phase);
        // FileSource's writes are synchronous; run them inside the counted effect.
        let fut = self.inner.patch_status(name, status);
        self.fx.run(&what, || futures::executor::block_on(fut))
    }

    async fn label_node(&self, labels: &BTreeMap<String, String>) -> Result<(), SourceError> {
        let fut = self.inner.label_node(labels);
        self.fx
            .run("label_node", || futures::executor::block_on(fut))
    }

    async fn changed(&self, timeout: std::time::Duration) {
        self.inner.changed(timeout).await
    }
}
