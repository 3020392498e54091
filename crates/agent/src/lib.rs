//! The osroll node agent: stages an OS image into the inactive A/B slot, switches to it
//! with a one-shot boot once the controller approves the reboot, commits it after a good
//! boot, and rolls back when the firmware falls back — surviving a kill at any instant.
//!
//! * [`machine`]: the pure decision `next_step(progress, host facts) -> step`;
//! * [`agent`]: the executor loop; [`run`] is the entry point for a cluster,
//!   [`run_with_source`] for any [`source::ProgressSource`] (e.g. a directory);
//! * [`install`]: the streaming installer (also behind `osroll flash`);
//! * [`boot`]: GRUB grubenv and U-Boot boot control;
//! * [`host`]: the real host; [`simhost`]: the simulated one used by tests and the demo;
//! * [`state`]: the crash-safe local state file; [`status`]: status transitions;
//! * [`trust`]: the check that an image comes from a catalog signed by a trusted key;
//! * [`backends`], [`hooks`], [`mounts`]: OSTree and plugin backends, install hooks and
//!   stale-mount restarts, tested on their own and not yet driven by the executor.

pub mod agent;
pub mod backends;
pub mod boot;
pub mod fsutil;
pub mod hooks;
pub mod host;
pub mod install;
pub mod machine;
pub mod mounts;
pub mod simhost;
pub mod slot;
pub mod source;
pub mod state;
pub mod status;
pub mod trust;

use std::sync::Arc;

pub use agent::{Agent, AgentConfig, AgentExit};
pub use host::{Host, HostFacts};
pub use simhost::SimHost;
pub use slot::Slot;

/// Run the agent against a Kubernetes cluster until a simulated reboot (a real reboot
/// ends the process). Watches the OSUpgradeProgress objects labelled
/// `osroll.io/node=<cfg.node_name>`, writes only their status subresource, and labels
/// the Node.
pub async fn run(
    cfg: AgentConfig,
    client: kube::Client,
    host: Arc<dyn Host>,
) -> anyhow::Result<AgentExit> {
    let source = source::kube::KubeSource::new(client, &cfg.node_name);
    run_with_source(cfg, source, host).await
}

/// Run the agent with any progress source (see [`source::file::FileSource`]).
pub async fn run_with_source<S: source::ProgressSource>(
    cfg: AgentConfig,
    source: S,
    host: Arc<dyn Host>,
) -> anyhow::Result<AgentExit> {
    Agent::new(cfg, source, host)?.run().await
}
