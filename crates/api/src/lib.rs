//! The osroll.io API: the two custom resources, the image catalog and its resolution,
//! version ordering and condition helpers.
//!
//! Everything here is pure data and pure functions, with no I/O, so the controller, the
//! agent, the test cluster and the CLI all agree on one definition of the contract.

pub mod catalog;
pub mod conditions;
pub mod crd;
pub mod delta;
pub mod freshness;
pub mod health;
pub mod labels;
pub mod manifests;
pub mod policy;
pub mod progress;
pub mod schema;
pub mod signing;
pub mod upgrade;
pub mod version;

pub use catalog::{Catalog, CatalogImage, CatalogProblem, Rejection, RejectionReason, Resolution};
pub use conditions::Condition;
pub use progress::{
    ImageRef, OSUpgradeProgress, OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase,
    RebootSignal, RebootSource, SignedCatalog, SourceRef, progress_name,
};
pub use upgrade::{
    CatalogSource, DrainSpec, DrainTimeoutPolicy, ExternalReboots, MaintenanceWindow, OSUpgrade,
    OSUpgradeSpec, OSUpgradeStatus, RolloutStrategy, UpgradePhase,
};
pub use version::Version;

/// API group of both resources.
pub const GROUP: &str = "osroll.io";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";
