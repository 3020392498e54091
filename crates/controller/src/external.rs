//! Reboot coordination for updates installed outside osroll (`spec.external`): what the
//! rest of the controller needs to treat such an OSUpgrade like any other. There is no
//! catalog to resolve, so the gate opens on a resolution without an image; nodes get a
//! progress object with `spec.external` instead of an image; a node whose agent reports
//! "reboot needed" is Staged, and the planner, drain and verification take it from there.

use osroll_api::ImageRef;

use crate::catalog::Resolved;

/// Where an external OSUpgrade's "resolution" comes from, for Events.
pub const ORIGIN: &str = "the nodes' own updaters";

/// How Events name the target of an external OSUpgrade's node.
pub const TARGET: &str = "the update its own updater installed";

/// The resolution an external OSUpgrade rolls out: no image, no catalog.
pub fn resolved() -> Resolved {
    Resolved {
        image: ImageRef::default(),
        os_version_management: None,
        warnings: Vec::new(),
        digest: String::new(),
        signed: None,
        origin: ORIGIN.to_string(),
        serial: None,
        earlier: Vec::new(),
    }
}
