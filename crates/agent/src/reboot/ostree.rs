//! A pending OSTree deployment: something other than osroll (rpm-ostree's automatic
//! updates, Zincati, a person) staged a deployment that the next boot switches to. Read
//! with the same status command and parser as the OSTree backend.

use futures::future::BoxFuture;
use osroll_api::{RebootSignal, RebootSource as SourceKind};

use super::{RebootSource, SourceError};
use crate::backends::ostree::{DeploymentStatus, OstreeConfig, parse_status, status_command};
use crate::backends::runner::{CommandRunner, ProcessRunner};

/// What the deployments say: a staged (or pending) deployment that is not booted.
pub fn pending_signal(st: &DeploymentStatus) -> Option<RebootSignal> {
    let d = st.staged()?;
    let name = d
        .checksum
        .as_deref()
        .map(|c| c.get(..12).unwrap_or(c))
        .unwrap_or("(no checksum)");
    Some(RebootSignal {
        source: SourceKind::OstreePending,
        detail: format!("deployment {name} waits for the next boot"),
        version: d.version.clone(),
    })
}

/// Looks for a pending deployment with the tool `config` names.
#[derive(Clone, Debug)]
pub struct OstreePending {
    config: OstreeConfig,
}

impl OstreePending {
    /// Read deployments as `config` says.
    pub fn new(config: OstreeConfig) -> Self {
        OstreePending { config }
    }

    fn read(config: &OstreeConfig) -> Result<Option<RebootSignal>, SourceError> {
        let spec = status_command(config);
        let err = |e: Box<dyn std::error::Error + Send + Sync>| SourceError::Ostree {
            command: spec.display(),
            source: e,
        };
        let out = ProcessRunner
            .run_checked(&spec)
            .map_err(|e| err(Box::new(e)))?;
        let st = parse_status(config.tool, &out.stdout_text()).map_err(|e| err(Box::new(e)))?;
        Ok(pending_signal(&st))
    }
}

impl RebootSource for OstreePending {
    fn kind(&self) -> SourceKind {
        SourceKind::OstreePending
    }

    fn check(&self) -> BoxFuture<'_, Result<Option<RebootSignal>, SourceError>> {
        Box::pin(async move {
            let config = self.config.clone();
            tokio::task::spawn_blocking(move || Self::read(&config))
                .await
                .map_err(|source| SourceError::Join {
                    kind: SourceKind::OstreePending,
                    source,
                })?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::ostree::OstreeTool;

    const BOOTED_ONLY: &str = "* fedora 1111111111111111111111111111111111111111111111111111111111111111.0\n    Version: 40.1\n    origin refspec: fedora:fedora/40/x86_64/coreos\n";

    #[test]
    fn a_staged_deployment_signals_with_its_version() {
        let staged = format!(
            "  fedora 2222222222222222222222222222222222222222222222222222222222222222.0 (staged)\n    Version: 40.2\n{BOOTED_ONLY}"
        );
        let st = parse_status(OstreeTool::OstreeAdminDeploy, &staged).unwrap();
        let s = pending_signal(&st).expect("a pending deployment");
        assert_eq!(s.source, SourceKind::OstreePending);
        assert_eq!(s.version.as_deref(), Some("40.2"));
        assert!(s.detail.contains("222222222222"), "{}", s.detail);
        let st = parse_status(OstreeTool::OstreeAdminDeploy, BOOTED_ONLY).unwrap();
        assert_eq!(pending_signal(&st), None);
    }
}
