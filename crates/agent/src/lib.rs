//! The osroll node agent: stages an OS image into the inactive A/B slot, switches to it
//! with a one-shot boot once the controller approves the reboot, commits it after a good
//! boot, and rolls back when the firmware falls back — surviving a kill at any instant.
//!
//! * [`machine`]: the pure decisions `next_step(progress, facts) -> step`, one per
//!   backend kind after a shared opening, and which progress to work on;
//! * [`agent`]: the one executor loop over any backend; [`run`] is the entry point for a
//!   cluster, [`run_with_source`] for any [`source::ProgressSource`] (e.g. a directory);
//! * [`failure`]: how an attempt ends badly, with its `status.failureReason`;
//! * [`install`]: the streaming installer (also behind `osroll flash`);
//! * [`delta`]: packed images with a chunk index, and the delta install that reuses
//!   the active slot's chunks;
//! * [`boot`]: GRUB grubenv and U-Boot boot control;
//! * [`host`]: the real host; `simhost` (feature `sim-host`): the simulated one used by
//!   tests and the demo;
//! * [`state`]: the crash-safe local state file; [`status`]: status transitions;
//! * [`trust`]: the check that an image comes from a catalog signed by a trusted key;
//! * [`backends`]: A/B slots, OSTree and OS-plugin backends behind one trait
//!   ([`backends::driver::BackendConfig`] picks one; A/B images are the default);
//! * [`hooks`]: pre- and post-install hooks run by the executor;
//! * [`mounts`]: after an update applied without a reboot, restart the pods whose mounts
//!   still point into the previous version (and those `restartOnLiveUpdate` selects);
//! * [`firstboot`]: `osroll agent --firstboot`, bringing a fresh node to the wanted
//!   version before the kubelet starts.

#[cfg(feature = "node")]
pub mod agent;
#[cfg(feature = "node")]
pub mod backends;
pub mod boot;
#[cfg(feature = "node")]
pub mod delta;
#[cfg(feature = "node")]
pub mod failure;
#[cfg(feature = "node")]
pub mod firstboot;
pub mod fsutil;
#[cfg(feature = "node")]
pub mod hooks;
#[cfg(feature = "node")]
pub mod host;
pub mod install;
#[cfg(feature = "node")]
pub mod machine;
#[cfg(feature = "node")]
pub mod mounts;
#[cfg(feature = "node")]
pub mod reboot;
#[cfg(feature = "sim-host")]
pub mod simhost;
pub mod slot;
#[cfg(feature = "node")]
pub mod source;
#[cfg(feature = "node")]
pub mod state;
#[cfg(feature = "node")]
pub mod status;
#[cfg(feature = "node")]
pub mod trust;

#[cfg(feature = "node")]
use std::sync::Arc;

#[cfg(feature = "node")]
pub use agent::{Agent, AgentConfig, AgentExit};
#[cfg(feature = "node")]
pub use host::{Host, HostFacts};
#[cfg(feature = "sim-host")]
pub use simhost::SimHost;
pub use slot::Slot;

/// Run the agent against a Kubernetes cluster until a simulated reboot (a real reboot
/// ends the process). Watches the OSUpgradeProgress objects whose `spec.nodeName` is
/// `cfg.node_name`, writes only their status subresource, and labels the Node.
#[cfg(feature = "node")]
pub async fn run(
    cfg: AgentConfig,
    client: kube::Client,
    host: Arc<dyn Host>,
) -> anyhow::Result<AgentExit> {
    let ledger = cfg.state_dir.join("live-restarts.json");
    let restarter =
        mounts::restart::Restarter::new(mounts::restart::KubePods::new(client.clone()), ledger);
    let source = source::kube::KubeSource::new(client, &cfg.node_name);
    Agent::new(cfg, source, host)?
        .with_live_restarter(Arc::new(restarter))
        .run()
        .await
}

/// Run the agent with any progress source (see [`source::file::FileSource`]).
#[cfg(feature = "node")]
pub async fn run_with_source<S: source::ProgressSource>(
    cfg: AgentConfig,
    source: S,
    host: Arc<dyn Host>,
) -> anyhow::Result<AgentExit> {
    Agent::new(cfg, source, host)?.run().await
}
