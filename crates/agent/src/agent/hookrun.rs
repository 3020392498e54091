//! Running the install hooks from the executor: off the async runtime, with the whole
//! output in the agent log (by [`crate::hooks`]) and a failure turned into a
//! [`Failure`] that names the hook and how it ended.

use std::sync::Arc;

use osroll_api::progress::FailureReason;

use crate::failure::Failure;
use crate::hooks::{HookContext, HookKind, InstallHooks};

/// Run the `kind` hook, if hooks are configured and one exists for the target.
/// `Ok(Some(note))`: it ran, `note` names it with the end of its output; `Err`: the
/// update must fail.
pub(super) async fn run(
    hooks: Option<Arc<dyn InstallHooks>>,
    kind: HookKind,
    ctx: HookContext,
) -> Result<Option<String>, Failure> {
    let Some(hooks) = hooks else {
        return Ok(None);
    };
    let result = tokio::task::spawn_blocking(move || hooks.run(kind, &ctx))
        .await
        .map_err(|e| Failure::new(FailureReason::HookNotRunnable, format!("{kind} hook: {e}")))?;
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
        Err(e) => Err(Failure::new(e.reason(), format!("{kind} hook failed: {e}"))),
    }
}
