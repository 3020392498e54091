//! Pure status transitions: each function takes the previous status and returns the next
//! one, keeping the fields that carry over (retry count, nonce, start time) and setting
//! the conditions, so the executor only decides *when* to call them.
//!
//! Conditions: `Staged` (the new image is verified in the inactive slot), `Booted` (the
//! node runs the target version from the new slot), `Failed` (the attempt needs a
//! user: Failed or RolledBack) and `Ready` (True exactly when the node runs the target:
//! `kubectl wait --for=condition=Ready osupgradeprogress/X` returns once it completed
//! and keeps waiting on a failed or rolled-back attempt; the reason is the phase).

use osroll_api::conditions::set_condition;
use osroll_api::{Condition, ImageRef, OSUpgradeProgressStatus, ProgressPhase};

use crate::backends::{Begin, Ready};
use crate::failure::Failure;

/// Condition types.
pub const STAGED: &str = "Staged";
/// Condition types.
pub const BOOTED: &str = "Booted";
/// Condition types.
pub const FAILED: &str = "Failed";
/// Condition types.
pub const READY: &str = "Ready";

fn set(
    s: &mut OSUpgradeProgressStatus,
    type_: &str,
    status: bool,
    reason: &str,
    msg: &str,
    now: &str,
) {
    set_condition(
        &mut s.conditions,
        Condition::new(type_, status, reason, msg),
        now,
    );
}

/// A fresh attempt at `image`, begun as the backend says (`begin`).
pub fn start(
    prev: &OSUpgradeProgressStatus,
    image: Option<&ImageRef>,
    retry_nonce: Option<&str>,
    begin: &Begin,
    retry: bool,
    now: &str,
) -> OSUpgradeProgressStatus {
    let message = begin.message.clone().unwrap_or_else(|| {
        if retry {
            "retry requested".into()
        } else {
            "waiting to download".into()
        }
    });
    let mut s = OSUpgradeProgressStatus {
        current_version: begin.current_version.clone(),
        target_version: image.map(|i| i.version.clone()),
        phase: Some(ProgressPhase::Pending),
        started_at: Some(now.to_string()),
        completed_at: None,
        last_updated_at: Some(now.to_string()),
        retry_count: prev.retry_count + u32::from(retry),
        inactive_partition: begin.inactive_partition.map(|s| s.to_string()),
        failure_reason: None,
        message: Some(message),
        bytes_done: None,
        bytes_total: None,
        observed_retry_nonce: retry_nonce.map(String::from),
        reboot_required: begin.reboot_required,
        kernel_command_line: prev.kernel_command_line.clone(),
        reboot_needed: None,
        conditions: prev.conditions.clone(),
        delta: None,
    };
    set(&mut s, STAGED, false, "Pending", "", now);
    set(&mut s, BOOTED, false, "Pending", "", now);
    set(&mut s, FAILED, false, "Pending", "", now);
    set(&mut s, READY, false, "Pending", "", now);
    s
}

/// Move to a non-terminal `phase` with a message.
pub fn phase(
    prev: &OSUpgradeProgressStatus,
    phase: ProgressPhase,
    message: impl Into<String>,
    now: &str,
) -> OSUpgradeProgressStatus {
    let mut s = prev.clone();
    s.phase = Some(phase);
    s.message = Some(message.into());
    s.last_updated_at = Some(now.to_string());
    if !matches!(phase, ProgressPhase::Staged | ProgressPhase::Rebooting) {
        set(&mut s, STAGED, false, phase.as_str(), "", now);
    }
    let message = s.message.clone().unwrap_or_default();
    set(&mut s, READY, false, phase.as_str(), &message, now);
    s
}

/// Download counters (no phase change).
pub fn bytes(
    prev: &OSUpgradeProgressStatus,
    done: u64,
    total: Option<u64>,
    now: &str,
) -> OSUpgradeProgressStatus {
    let mut s = prev.clone();
    s.bytes_done = Some(done);
    s.bytes_total = total.or(s.bytes_total);
    s.last_updated_at = Some(now.to_string());
    s
}

/// The update is staged and ready to apply.
pub fn staged(prev: &OSUpgradeProgressStatus, ready: &Ready, now: &str) -> OSUpgradeProgressStatus {
    let mut s = phase(prev, ProgressPhase::Staged, ready.message.clone(), now);
    if let Some(b) = ready.bytes {
        s.bytes_done = Some(b);
        s.bytes_total = Some(b);
    }
    s.reboot_required = Some(ready.reboot_required);
    s.delta = ready.delta.clone();
    if ready.current_version.is_some() {
        s.current_version = ready.current_version.clone();
    }
    set(&mut s, STAGED, true, ready.condition, &ready.message, now);
    s
}

/// The node runs the target, reporting `version` (or already did).
pub fn completed(
    prev: &OSUpgradeProgressStatus,
    version: Option<String>,
    message: String,
    now: &str,
) -> OSUpgradeProgressStatus {
    let mut s = prev.clone();
    s.phase = Some(ProgressPhase::Completed);
    s.current_version = version;
    s.completed_at = Some(now.to_string());
    s.last_updated_at = Some(now.to_string());
    s.failure_reason = None;
    s.message = Some(message.clone());
    set(&mut s, BOOTED, true, "Committed", &message, now);
    set(&mut s, FAILED, false, "Completed", "", now);
    set(&mut s, READY, true, "Completed", &message, now);
    s
}

/// External update: the node signals that it needs a reboot (Staged, waiting for
/// approval); the signal's version, when known, is the target.
pub fn reboot_needed(
    prev: &OSUpgradeProgressStatus,
    signal: &osroll_api::RebootSignal,
    now: &str,
) -> OSUpgradeProgressStatus {
    let message = format!("reboot needed ({}): {}", signal.source, signal.detail);
    let mut s = phase(prev, ProgressPhase::Staged, message.clone(), now);
    s.reboot_required = Some(true);
    s.target_version = signal.version.clone();
    s.reboot_needed = Some(signal.clone());
    set(&mut s, STAGED, true, "RebootNeeded", &message, now);
    s
}

/// External update: the signal went away before the reboot was approved (back to
/// Pending: nothing to coordinate).
pub fn reboot_not_needed(prev: &OSUpgradeProgressStatus, now: &str) -> OSUpgradeProgressStatus {
    let mut s = phase(prev, ProgressPhase::Pending, NO_REBOOT_NEEDED, now);
    s.reboot_required = None;
    s.target_version = None;
    s.reboot_needed = None;
    s
}

/// The Pending message of an external update without a signal.
pub const NO_REBOOT_NEEDED: &str = "no reboot needed; watching for a reboot-needed signal";

/// End in Failed or RolledBack, as `f` says.
pub fn failed(prev: &OSUpgradeProgressStatus, f: &Failure, now: &str) -> OSUpgradeProgressStatus {
    debug_assert!(matches!(
        f.phase,
        ProgressPhase::Failed | ProgressPhase::RolledBack
    ));
    let reason = f.reason.as_str();
    let mut s = prev.clone();
    s.phase = Some(f.phase);
    s.completed_at = Some(now.to_string());
    s.last_updated_at = Some(now.to_string());
    s.failure_reason = Some(reason.to_string());
    s.message = Some(f.message.clone());
    if f.phase == ProgressPhase::RolledBack {
        set(&mut s, BOOTED, false, reason, &f.message, now);
    } else {
        set(&mut s, STAGED, false, reason, &f.message, now);
    }
    set(&mut s, FAILED, true, reason, &f.message, now);
    set(&mut s, READY, false, f.phase.as_str(), &f.message, now);
    s
}

/// The body of a JSON merge patch that makes the server's status equal `status`:
/// fields the agent cleared are sent as `null`, otherwise a merge patch would keep them.
pub fn merge_patch(status: &OSUpgradeProgressStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).expect("status serializes");
    let all = serde_json::to_value(OSUpgradeProgressStatus {
        current_version: Some(String::new()),
        target_version: Some(String::new()),
        phase: Some(ProgressPhase::Pending),
        started_at: Some(String::new()),
        completed_at: Some(String::new()),
        last_updated_at: Some(String::new()),
        retry_count: 0,
        inactive_partition: Some(String::new()),
        failure_reason: Some(String::new()),
        message: Some(String::new()),
        bytes_done: Some(0),
        bytes_total: Some(0),
        observed_retry_nonce: Some(String::new()),
        reboot_required: Some(false),
        kernel_command_line: Some(String::new()),
        reboot_needed: Some(osroll_api::RebootSignal {
            source: osroll_api::RebootSource::SentinelFile,
            detail: String::new(),
            version: None,
        }),
        conditions: vec![Condition::default()],
        delta: Some(osroll_api::delta::DeltaStatus::default()),
    })
    .expect("status serializes");
    if let (Some(obj), Some(keys)) = (v.as_object_mut(), all.as_object()) {
        for k in keys.keys() {
            if !obj.contains_key(k) {
                let empty = if k == "conditions" {
                    serde_json::json!([])
                } else {
                    serde_json::Value::Null
                };
                obj.insert(k.clone(), empty);
            }
        }
    }
    serde_json::json!({ "status": v })
}

#[cfg(test)]
mod tests;
