//! Reboot-needed detection for updates installed outside osroll: the node's own updater
//! (update_engine, a package manager, an OSTree tool run by someone else) has done its
//! work and only the reboot is left, which an external OSUpgrade coordinates.
//!
//! Each way of telling is a [`RebootSource`] (sentinel file, sentinel command,
//! update_engine over D-Bus, a pending OSTree deployment); the agent asks all that are
//! configured on every pass and [`combine`]s their answers. What each source's raw
//! observation means is a pure function beside it, tested on its own; the sources only
//! read the file, run the command or make the call.

pub mod ostree;
pub mod sentinel;
pub mod update_engine;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use osroll_api::{RebootSignal, RebootSource as SourceKind};

use crate::backends::ostree::OstreeConfig;
use crate::backends::runner::CommandError;

/// kured's default sentinel file.
pub const DEFAULT_SENTINEL: &str = "/var/run/reboot-required";

/// A source that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The sentinel file's presence could not be told.
    #[error("checking the sentinel file {}", path.display())]
    Sentinel {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sentinel command could not run, was killed or timed out.
    #[error("running the sentinel command {command}")]
    Command {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// update_engine did not answer over D-Bus.
    #[error("asking update_engine over D-Bus ({bus})")]
    UpdateEngine {
        /// Which bus.
        bus: String,
        /// Why.
        #[source]
        source: Box<zbus::Error>,
    },
    /// The OSTree tool's status could not be read.
    #[error("reading the OSTree deployments ({command})")]
    Ostree {
        /// The status command.
        command: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blocking check could not be joined.
    #[error("the {kind} check panicked or was cancelled")]
    Join {
        /// Which source.
        kind: SourceKind,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// One way of telling that the node needs a reboot.
pub trait RebootSource: Send + Sync {
    /// Which kind of source this is.
    fn kind(&self) -> SourceKind;
    /// The signal, if the node needs a reboot now.
    fn check(&self) -> BoxFuture<'_, Result<Option<RebootSignal>, SourceError>>;
}

/// Where an update_engine is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateEngineBus {
    /// The system bus (a real Flatcar / Container Linux node).
    System,
    /// A bus at this D-Bus address (`unix:path=...`), e.g. a private test bus.
    Address(String),
}

/// Which sources the agent asks (agent settings, never the cluster's: a command chosen
/// through the API would run as root on every node).
#[derive(Clone, Debug)]
pub struct RebootConfig {
    /// A file whose presence means "reboot needed" (kured's `--reboot-sentinel`).
    pub sentinel_file: Option<PathBuf>,
    /// A command whose exit status 0 means "reboot needed" (kured's
    /// `--reboot-sentinel-command`): program then arguments.
    pub sentinel_command: Option<Vec<String>>,
    /// Ask update_engine (CLUO's signal).
    pub update_engine: Option<UpdateEngineBus>,
    /// Look for a staged OSTree deployment with this tool configuration.
    pub ostree: Option<OstreeConfig>,
    /// Limit for the sentinel command and the OSTree status command.
    pub command_timeout: Duration,
}

impl Default for RebootConfig {
    fn default() -> Self {
        RebootConfig {
            sentinel_file: Some(PathBuf::from(DEFAULT_SENTINEL)),
            sentinel_command: None,
            update_engine: None,
            ostree: None,
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// The configured sources, asked together.
#[derive(Clone, Default)]
pub struct Sources(Vec<Arc<dyn RebootSource>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.kind()))
            .finish()
    }
}

impl Sources {
    /// The sources `c` configures, in a fixed order.
    pub fn from_config(c: &RebootConfig) -> Sources {
        let mut v: Vec<Arc<dyn RebootSource>> = Vec::new();
        if let Some(p) = &c.sentinel_file {
            v.push(Arc::new(sentinel::SentinelFile::new(p.clone())));
        }
        if let Some(cmd) = c.sentinel_command.as_ref().filter(|c| !c.is_empty()) {
            v.push(Arc::new(sentinel::SentinelCommand::new(
                cmd.clone(),
                c.command_timeout,
            )));
        }
        if let Some(bus) = &c.update_engine {
            v.push(Arc::new(update_engine::UpdateEngine::new(bus.clone())));
        }
        if let Some(o) = &c.ostree {
            let mut o = o.clone();
            o.status_timeout = c.command_timeout;
            v.push(Arc::new(ostree::OstreePending::new(o)));
        }
        Sources(v)
    }

    /// These sources.
    pub fn new(list: Vec<Arc<dyn RebootSource>>) -> Sources {
        Sources(list)
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ask every source; see [`combine`].
    pub async fn check(&self) -> Result<Option<RebootSignal>, SourceError> {
        let answers = futures::future::join_all(self.0.iter().map(|s| s.check())).await;
        combine(answers)
    }
}

/// One answer from all sources: the first signal wins (a source that says "reboot
/// needed" is believed even if another could not be read); without one, the first
/// error (the node may need a reboot nobody could see); otherwise none.
pub fn combine(
    answers: impl IntoIterator<Item = Result<Option<RebootSignal>, SourceError>>,
) -> Result<Option<RebootSignal>, SourceError> {
    let mut first_error = None;
    for a in answers {
        match a {
            Ok(Some(signal)) => return Ok(Some(signal)),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(source: SourceKind) -> RebootSignal {
        RebootSignal {
            source,
            detail: "x".into(),
            version: None,
        }
    }

    fn unreadable() -> SourceError {
        SourceError::Sentinel {
            path: "/run/x".into(),
            source: std::io::Error::other("denied"),
        }
    }

    #[test]
    fn a_signal_wins_over_errors_and_an_error_over_silence() {
        let s = signal(SourceKind::UpdateEngine);
        let got = combine([Err(unreadable()), Ok(None), Ok(Some(s.clone()))]).unwrap();
        assert_eq!(got, Some(s));
        assert!(combine([Ok(None), Err(unreadable())]).is_err());
        assert_eq!(combine([Ok(None), Ok(None)]).unwrap(), None);
        assert_eq!(combine([]).unwrap(), None);
    }

    #[test]
    fn the_default_is_kureds_sentinel_file_only() {
        let s = Sources::from_config(&RebootConfig::default());
        assert_eq!(format!("{s:?}"), "[SentinelFile]");
        let none = Sources::from_config(&RebootConfig {
            sentinel_file: None,
            ..Default::default()
        });
        assert!(none.is_empty());
    }
}
