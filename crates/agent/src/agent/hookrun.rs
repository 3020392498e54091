//! Running the install hooks from the executor: off the async runtime, with the whole
//! output in the agent log (by [`crate::hooks`]) and a failure turned into a progress
//! reason and message that name the hook and how it ended.

use osroll_api::progress::FailureReason;

use crate::hooks::{HookContext, HookKind};
use crate::source::ProgressSource;

use super::Agent;

impl<S: ProgressSource> Agent<S> {
    /// Run the `kind` hook, if hooks are configured and one exists for the target.
    /// `Ok(Some(tail))`: it ran, with the end of its output; `Err((reason, message))`:
    /// the update must fail.
    pub(super) async fn run_hook(
        &self,
        kind: HookKind,
        ctx: &HookContext,
    ) -> Result<Option<String>, (FailureReason, String)> {
        let Some(hooks) = self.hooks.clone() else {
            return Ok(None);
        };
        let ctx = ctx.clone();
        let result = tokio::task::spawn_blocking(move || hooks.run(kind, &ctx))
            .await
            .map_err(|e| (FailureReason::HookNotRunnable, format!("{kind} hook: {e}")))?;
        match result {
            Ok(None) => Ok(None),
            Ok(Some(run)) => {
                tracing::info!(hook = %run.path.display(), elapsed = ?run.elapsed, "{kind} hook succeeded");
                let tail = run.tail();
                Ok(Some(if tail.is_empty() {
                    format!("{} ran", run.path.display())
                } else {
                    format!("{} ran: {tail}", run.path.display())
                }))
            }
            Err(e) => Err((e.reason(), format!("{kind} hook failed: {e}"))),
        }
    }
}
