//! Performing an external update's steps ([`crate::machine::external`]): only status
//! transitions and the reboot itself; the node's own updater installed the update, so no
//! backend stages, arms or commits anything.

use osroll_api::progress::FailureReason;
use osroll_api::{OSUpgradeProgress, ProgressPhase};

use super::executor::{Executor, Tick, now};
use super::steps::StepResult;
use crate::backends::{Backend, Begin};
use crate::failure::Failure;
use crate::machine::Facts;
use crate::machine::external::{ExternalStep, Signal};
use crate::source::ProgressSource;
use crate::status;

impl<S: ProgressSource, B: Backend> Executor<S, B> {
    /// What the reboot-needed sources say now; an unreadable source is logged and
    /// reported as the reason.
    pub(super) async fn read_signal(&self) -> Signal {
        self.sources.check().await.map_err(|e| {
            let chain = crate::install::http::error_chain(&e);
            tracing::warn!("reboot-needed sources: {chain}");
            chain
        })
    }

    /// Carry out one step of an external update.
    pub(super) async fn external(
        &mut self,
        obj: &OSUpgradeProgress,
        step: ExternalStep,
        facts: &B::Facts,
    ) -> StepResult {
        let prev = self.tracked().status.clone();
        let next = match step {
            ExternalStep::Start { retry } => {
                let begin = Begin {
                    current_version: facts.os_version().map(String::from),
                    message: Some(status::NO_REBOOT_NEEDED.into()),
                    ..Default::default()
                };
                let nonce = obj.spec.retry_nonce.as_deref();
                let t = self.tracked();
                t.image = None;
                t.reboot_boot_id = None;
                status::start(&prev, None, nonce, &begin, retry, &now())
            }
            ExternalStep::Signalled(signal) => status::reboot_needed(&prev, &signal, &now()),
            ExternalStep::Cleared => status::reboot_not_needed(&prev, &now()),
            ExternalStep::Complete => {
                let message = "rebooted; the reboot-needed signal cleared".to_string();
                let version = facts.os_version().map(String::from);
                let mut next = status::completed(&prev, version, message, &now());
                next.reboot_needed = None;
                next.kernel_command_line = self.host.kernel_command_line();
                next
            }
            ExternalStep::NewRound(signal) => {
                let begin = Begin {
                    current_version: facts.os_version().map(String::from),
                    message: Some("the reboot-needed signal appeared again: a new round".into()),
                    ..Default::default()
                };
                let nonce = obj.spec.retry_nonce.as_deref();
                self.tracked().reboot_boot_id = None;
                let fresh = status::start(&prev, None, nonce, &begin, false, &now());
                status::reboot_needed(&fresh, &signal, &now())
            }
            ExternalStep::Reboot => return self.reboot_for_external(facts).await,
        };
        self.transition(next).await?;
        Ok(Tick::Busy)
    }

    /// Record the boot the reboot leaves, say Rebooting, and ask the host to reboot.
    async fn reboot_for_external(&mut self, facts: &B::Facts) -> StepResult {
        self.tracked().reboot_boot_id = Some(facts.boot_id().to_string());
        let next = status::phase(
            &self.tracked().status,
            ProgressPhase::Rebooting,
            "rebooting into the update the node's own updater installed",
            &now(),
        );
        self.transition(next).await?;
        match self.request_reboot().await? {
            Ok(tick) => Ok(tick),
            Err(e) => {
                self.tracked().reboot_boot_id = None;
                Err(Failure::new(FailureReason::RebootFailed, e.to_string()).into())
            }
        }
    }
}
