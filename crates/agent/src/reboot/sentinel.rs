//! kured's two signals: a sentinel file that exists (e.g. `/var/run/reboot-required`,
//! written by Debian's and Ubuntu's package hooks), and a sentinel command whose exit
//! status 0 means "reboot needed".

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use osroll_api::{RebootSignal, RebootSource as SourceKind};

use super::{RebootSource, SourceError};
use crate::backends::runner::{
    CommandError, CommandOutput, CommandRunner, CommandSpec, ProcessRunner, Termination,
};

/// A file whose presence means "reboot needed".
#[derive(Clone, Debug)]
pub struct SentinelFile {
    path: PathBuf,
}

impl SentinelFile {
    /// Watch `path`.
    pub fn new(path: PathBuf) -> Self {
        SentinelFile { path }
    }
}

/// The signal for a sentinel file that `exists`; its first line (Debian writes
/// `*** System restart required ***`) adds nothing, so only the path is reported.
pub fn file_signal(path: &std::path::Path, exists: bool) -> Option<RebootSignal> {
    exists.then(|| RebootSignal {
        source: SourceKind::SentinelFile,
        detail: format!("{} exists", path.display()),
        version: None,
    })
}

impl RebootSource for SentinelFile {
    fn kind(&self) -> SourceKind {
        SourceKind::SentinelFile
    }

    fn check(&self) -> BoxFuture<'_, Result<Option<RebootSignal>, SourceError>> {
        Box::pin(async move {
            let exists = tokio::fs::try_exists(&self.path).await.map_err(|source| {
                SourceError::Sentinel {
                    path: self.path.clone(),
                    source,
                }
            })?;
            Ok(file_signal(&self.path, exists))
        })
    }
}

/// A command whose exit status says whether a reboot is needed.
#[derive(Clone, Debug)]
pub struct SentinelCommand {
    spec: CommandSpec,
}

impl SentinelCommand {
    /// `argv[0]` with the rest as arguments, killed after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        let mut it = argv.into_iter();
        let program = it.next().unwrap_or_default();
        SentinelCommand {
            spec: CommandSpec::new(program, timeout).args(it),
        }
    }
}

/// What a finished sentinel command says: exit 0 is "reboot needed", any other exit
/// code is "not needed" (kured's convention); killed or timed out is no answer.
pub fn command_signal(
    spec: &CommandSpec,
    out: CommandOutput,
) -> Result<Option<RebootSignal>, CommandError> {
    match out.termination {
        Termination::Exited(0) => Ok(Some(RebootSignal {
            source: SourceKind::SentinelCommand,
            detail: format!("{} exited 0", spec.display()),
            version: None,
        })),
        Termination::Exited(_) => Ok(None),
        _ => out.check(spec).map(|_| None),
    }
}

impl RebootSource for SentinelCommand {
    fn kind(&self) -> SourceKind {
        SourceKind::SentinelCommand
    }

    fn check(&self) -> BoxFuture<'_, Result<Option<RebootSignal>, SourceError>> {
        Box::pin(async move {
            let spec = self.spec.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let out = ProcessRunner.run(&spec)?;
                command_signal(&spec, out)
            })
            .await
            .map_err(|source| SourceError::Join {
                kind: SourceKind::SentinelCommand,
                source,
            })?;
            answer.map_err(|source| SourceError::Command {
                command: self.spec.display(),
                source,
            })
        })
    }
}
