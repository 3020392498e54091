//! Pure status transitions: each function takes the previous status and returns the next
//! one, keeping the fields that carry over (retry count, nonce, start time) and setting
//! the conditions, so the executor only decides *when* to call them.
//!
//! Conditions: `Staged` (the new image is verified in the inactive slot), `Booted` (the
//! node runs the target version from the new slot) and `Failed` (the attempt needs a
//! user: Failed or RolledBack).

use osroll_api::conditions::set_condition;
use osroll_api::progress::FailureReason;
use osroll_api::{Condition, ImageRef, OSUpgradeProgressStatus, ProgressPhase};

use crate::host::HostFacts;
use crate::slot::Slot;

/// Condition types.
pub const STAGED: &str = "Staged";
/// Condition types.
pub const BOOTED: &str = "Booted";
/// Condition types.
pub const FAILED: &str = "Failed";

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

/// A fresh attempt at `image` into the slot other than the running one.
pub fn start(
    prev: &OSUpgradeProgressStatus,
    image: Option<&ImageRef>,
    retry_nonce: Option<&str>,
    facts: &HostFacts,
    retry: bool,
    now: &str,
) -> OSUpgradeProgressStatus {
    let mut s = OSUpgradeProgressStatus {
        current_version: facts.os_version.clone(),
        target_version: image.map(|i| i.version.clone()),
        phase: Some(ProgressPhase::Pending),
        started_at: Some(now.to_string()),
        completed_at: None,
        last_updated_at: Some(now.to_string()),
        retry_count: prev.retry_count + u32::from(retry),
        inactive_partition: Some(facts.booted_slot.other().to_string()),
        failure_reason: None,
        message: Some(if retry {
            "retry requested".into()
        } else {
            "waiting to download".into()
        }),
        bytes_done: None,
        bytes_total: None,
        observed_retry_nonce: retry_nonce.map(String::from),
        reboot_required: Some(true),
        conditions: prev.conditions.clone(),
    };
    set(&mut s, STAGED, false, "Pending", "", now);
    set(&mut s, BOOTED, false, "Pending", "", now);
    set(&mut s, FAILED, false, "Pending", "", now);
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

/// The image is verified in `slot`.
pub fn staged(
    prev: &OSUpgradeProgressStatus,
    slot: Slot,
    image_len: u64,
    now: &str,
) -> OSUpgradeProgressStatus {
    let msg = format!(
        "{image_len} bytes written to slot {slot} and verified; waiting for reboot approval"
    );
    let mut s = phase(prev, ProgressPhase::Staged, msg.clone(), now);
    set(&mut s, STAGED, true, "Verified", &msg, now);
    s
}

/// The try of `slot` is armed and the node is rebooting.
pub fn rebooting(prev: &OSUpgradeProgressStatus, slot: Slot, now: &str) -> OSUpgradeProgressStatus {
    phase(
        prev,
        ProgressPhase::Rebooting,
        format!("boot of slot {slot} armed once; rebooting"),
        now,
    )
}

/// The node runs the target from `slot` (or already did).
pub fn completed(
    prev: &OSUpgradeProgressStatus,
    facts: &HostFacts,
    message: String,
    now: &str,
) -> OSUpgradeProgressStatus {
    let mut s = prev.clone();
    s.phase = Some(ProgressPhase::Completed);
    s.current_version = facts.os_version.clone();
    s.completed_at = Some(now.to_string());
    s.last_updated_at = Some(now.to_string());
    s.failure_reason = None;
    s.message = Some(message.clone());
    set(&mut s, BOOTED, true, "Committed", &message, now);
    set(&mut s, FAILED, false, "Completed", "", now);
    s
}

/// End in Failed or RolledBack.
pub fn failed(
    prev: &OSUpgradeProgressStatus,
    phase: ProgressPhase,
    reason: FailureReason,
    message: String,
    now: &str,
) -> OSUpgradeProgressStatus {
    debug_assert!(matches!(
        phase,
        ProgressPhase::Failed | ProgressPhase::RolledBack
    ));
    let mut s = prev.clone();
    s.phase = Some(phase);
    s.completed_at = Some(now.to_string());
    s.last_updated_at = Some(now.to_string());
    s.failure_reason = Some(reason.to_string());
    let reason = reason.as_str();
    s.message = Some(message.clone());
    if phase == ProgressPhase::RolledBack {
        set(&mut s, BOOTED, false, reason, &message, now);
    } else {
        set(&mut s, STAGED, false, reason, &message, now);
    }
    set(&mut s, FAILED, true, reason, &message, now);
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
        conditions: vec![Condition::default()],
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
