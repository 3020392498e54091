//! Label, annotation and finalizer keys shared by the controller and the agent.

/// On an OSUpgradeProgress: the node it belongs to (the agent's watch selector).
pub const NODE: &str = "osroll.io/node";
/// On an OSUpgradeProgress: the name of the OSUpgrade that created it.
pub const SOURCE: &str = "osroll.io/source";
/// On a Node: set by the agent once it manages the node.
pub const MANAGED: &str = "osroll.io/managed";
/// On a Node: the OS version the agent reports as running.
pub const OS_VERSION: &str = "osroll.io/os-version";
/// On a Node: the A/B slot (or deployment) the node booted from.
pub const SLOT: &str = "osroll.io/slot";
/// On a Node: `true` while the agent sees a reboot-needed signal (sentinel file or
/// command, update_engine, a pending OSTree deployment), `false` otherwise: the label
/// kured and CLUO users select on (docs/migrate-from-kured-cluo.md).
pub const REBOOT_NEEDED: &str = "osroll.io/reboot-needed";
/// On a Node: who cordoned it, so osroll only ever uncordons what it cordoned.
pub const CORDONED_BY: &str = "osroll.io/cordoned-by";
/// On a Node: `pending` asks the controller to reconcile this node in place.
pub const IN_PLACE_UPDATE: &str = "osroll.io/in-place-update";
/// On an OSUpgradeProgress: this attempt takes the node back to its previous version (a
/// fleet rollback); the value is when the node completed the upgrade being undone
/// (RFC 3339, or empty). The controller sets it with the previous image; the agent then
/// returns with the tool's own rollback where it can.
pub const ROLLBACK: &str = "osroll.io/rollback";
/// Finalizer the controller puts on an OSUpgrade so deletion uncordons first.
pub const FINALIZER: &str = "osroll.io/uncordon";

/// A label value Kubernetes accepts: `[A-Za-z0-9._-]`, at most 63, alphanumeric ends.
/// The agent writes [`OS_VERSION`] through it and the controller compares through it.
pub fn label_value(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}
