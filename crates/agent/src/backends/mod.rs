//! The ways of moving a node to a new OS version, behind the one interface the executor
//! drives: [`Backend`]. [`ab::SlotBackend`] writes the image into the inactive A/B slot
//! and arms a one-shot boot of it; [`deployment::DeploymentBackend`] has a deployment
//! tool do the work, OSTree ([`ostree`]) or an external OS plugin ([`plugin`]), through
//! [`driver::DeployBackend`]; [`runner`] runs their commands.
//!
//! A backend observes the running system, names its kind's pure decision (a
//! [`crate::machine`] function) and performs the effects of the steps it returns; the
//! executor records every outcome in the progress status.

pub mod ab;
pub mod deployment;
pub mod driver;
pub mod ostree;
pub mod plugin;
pub mod runner;
pub mod slot_record;

#[cfg(test)]
pub(crate) mod testutil;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use osroll_api::upgrade::KernelArguments;
use osroll_api::{ImageRef, OSUpgradeProgressStatus, ProgressPhase};

pub use self::driver::{Applied, Confirmed};
use crate::failure::StepError;
use crate::host::HostError;
use crate::machine::select::Deleted;
use crate::machine::{Facts, Input, Step};
use crate::slot::Slot;
use crate::state::Tracked;

/// The attempt a step works on, as a backend is told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attempt {
    /// This node.
    pub node: String,
    /// The image the attempt installs (its version is the target), when known.
    pub image: Option<ImageRef>,
    /// What ran when the attempt started, if known.
    pub current_version: Option<String>,
    /// `spec.osVersionManagement`, unchanged.
    pub os_version_management: Option<serde_json::Value>,
    /// Whether the image may come over plain `http://`.
    pub allow_http_images: bool,
    /// `spec.kernelArguments`: changes to the kernel command line that come with the image.
    pub kernel_arguments: Option<KernelArguments>,
    /// What staging reported (`status.rebootRequired`), once it has.
    pub staged_reboot_required: Option<bool>,
    /// The progress carries the rollback mark ([`osroll_api::labels::ROLLBACK`]): the
    /// image is the version the node ran before, and a tool that can return to it
    /// without fetching it (its own rollback) should.
    pub rollback: bool,
}

/// What a backend records about the node when an attempt begins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Begin {
    /// The version running now.
    pub current_version: Option<String>,
    /// The slot the attempt writes (A/B only).
    pub inactive_partition: Option<Slot>,
    /// Whether applying will need a reboot, when known before staging.
    pub reboot_required: Option<bool>,
    /// The Pending message; `None`: the default one.
    pub message: Option<String>,
}

/// A staging under way: what the status says while it runs, and the work itself.
pub struct Staging {
    /// The Downloading status message.
    pub message: String,
    /// Counters to publish while it runs (a deployment tool reports none).
    pub progress: Option<Box<dyn StageProgress>>,
    /// The work.
    pub run: Pin<Box<dyn Future<Output = Result<Staged, StepError>> + Send>>,
}

/// Live counters of a staging, as the status shows them.
pub trait StageProgress: Send + Sync {
    /// Bytes done, bytes in all (when known), and the phase with its message.
    fn snapshot(&self) -> StageSnapshot;
}

/// A reading of [`StageProgress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSnapshot {
    /// Bytes processed so far.
    pub done: u64,
    /// Bytes in all, when known.
    pub total: Option<u64>,
    /// The phase this part of the work is (Downloading, Writing, Verifying).
    pub phase: ProgressPhase,
    /// Its status message.
    pub message: String,
}

/// How a staging ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staged {
    /// The node already runs the target: Completed.
    AlreadyCurrent {
        /// The version it runs.
        version: String,
        /// For the progress message.
        message: String,
    },
    /// The target is ready to apply.
    Ready(Ready),
}

/// A staged update, ready to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Applying needs a reboot (false: live update, no drain).
    pub reboot_required: bool,
    /// What runs now, when the backend said.
    pub current_version: Option<String>,
    /// Image bytes processed, when counted.
    pub bytes: Option<u64>,
    /// The Staged condition's reason (`Verified` after a read-back).
    pub condition: &'static str,
    /// For the progress message.
    pub message: String,
    /// Bytes fetched and reused by a delta install (or why it fell back to a full one).
    pub delta: Option<osroll_api::delta::DeltaStatus>,
}

/// One way of moving a node to a new OS version, as the executor drives it. Every
/// method either decides purely (`next_step`, `on_deleted`) or performs one effect.
pub trait Backend: Send + Sync + 'static {
    /// Where an update is staged: a slot, or nothing to name (`()`).
    type Place: Copy + Debug + PartialEq + Send + Sync + 'static;
    /// What this kind's decision needs to know about the running system.
    type Facts: Facts + Clone + Debug + Send + Sync + 'static;

    /// `A/B`, `ostree` or `plugin`, for messages.
    fn kind(&self) -> &'static str;
    /// Read the running system.
    fn observe(&self) -> impl Future<Output = Result<Self::Facts, HostError>> + Send;
    /// The booted slot, for the Node label (A/B only).
    fn booted_slot(&self, _facts: &Self::Facts) -> Option<Slot> {
        None
    }
    /// The next step for one progress: this kind's pure machine.
    fn next_step(&self, input: &Input<'_, Self::Facts>) -> Step<Self::Place>;
    /// What a deleted tracked progress leaves to settle: pure.
    fn on_deleted(&self, tracked: &Tracked, facts: &Self::Facts) -> Deleted<Self::Place>;
    /// How an attempt begins on this node (`prev`: the status it replaces).
    fn begin(
        &self,
        facts: &Self::Facts,
        prev: &OSUpgradeProgressStatus,
    ) -> impl Future<Output = Begin> + Send;
    /// Prepare staging `attempt` into `into`; refusals come before any status change.
    fn stage(
        &self,
        attempt: &Attempt,
        into: Self::Place,
        facts: &Self::Facts,
    ) -> impl Future<Output = Result<Staging, StepError>> + Send;
    /// The Applying message, for a backend whose apply takes a while (a deployment
    /// tool); `None` for one that only arms a boot.
    fn applying(&self, attempt: &Attempt) -> Option<String>;
    /// Switch to the staged update, or say a reboot will.
    fn apply(
        &self,
        attempt: &Attempt,
        to: Self::Place,
    ) -> impl Future<Output = Result<Applied, StepError>> + Send;
    /// Make the next boot start `to` (once); the Rebooting message.
    fn arm(&self, to: Self::Place) -> impl Future<Output = Result<String, StepError>> + Send;
    /// Withdraw what [`Backend::arm`] did; the Staged message.
    fn disarm(&self) -> impl Future<Output = Result<String, HostError>> + Send;
    /// After a boot into `on`: is the node on the target? Make it permanent if so.
    fn confirm(
        &self,
        attempt: &Attempt,
        on: Self::Place,
        facts: &Self::Facts,
    ) -> impl Future<Output = Result<Confirmed, StepError>> + Send;
    /// Keep booting `on` from now on (its progress was deleted after it booted).
    fn keep(&self, on: Self::Place) -> impl Future<Output = Result<(), HostError>> + Send;
}
