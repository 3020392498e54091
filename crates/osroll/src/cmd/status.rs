//! `osroll status [NAME] [--watch]`: the rollout as progress bars per node (bytes staged,
//! phase) with rollout totals, against the cluster in the kubeconfig. A thin adapter over
//! `osroll_sim::view`.

use anyhow::Context as _;
use clap::Args;

/// Status options.
#[derive(Args, Debug)]
pub struct StatusCmd {
    /// The OSUpgrade to show (default: all).
    name: Option<String>,
    /// Keep the view live until the rollout is Completed, Failed or Rejected.
    #[arg(long, short = 'w')]
    watch: bool,
}

/// Print the status once, or follow it.
pub fn run(cmd: StatusCmd) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        if cmd.watch {
            let mut renderer = osroll_sim::view::live::default_renderer();
            osroll_sim::view::live::watch(client, cmd.name.as_deref(), true, renderer.as_mut())
                .await?;
        } else {
            print!(
                "{}",
                osroll_sim::view::live::snapshot(client, cmd.name.as_deref()).await?
            );
        }
        Ok(())
    })
}
