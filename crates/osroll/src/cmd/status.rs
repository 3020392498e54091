//! `osroll status [NAME] [--watch]`: the rollout as progress bars per node (bytes staged,
//! phase) with rollout totals, against the cluster in the kubeconfig. A thin adapter over
//! [`crate::view`].

use anyhow::Context as _;
use clap::Args;

use crate::view::live;

/// Status options.
#[derive(Args, Debug)]
pub(crate) struct StatusCmd {
    /// The OSUpgrade to show (default: all).
    name: Option<String>,
    /// Keep the view live until the rollout is Completed, Failed or Rejected.
    #[arg(long, short = 'w')]
    watch: bool,
}

/// Print the status once, or follow it.
pub(crate) fn run(cmd: StatusCmd) -> anyhow::Result<()> {
    let rt = super::logging_and_runtime("warn")?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        if cmd.watch {
            let mut renderer = live::default_renderer();
            live::watch(client, cmd.name.as_deref(), true, renderer.as_mut()).await?;
        } else {
            print!("{}", live::snapshot(client, cmd.name.as_deref()).await?);
        }
        Ok(())
    })
}
