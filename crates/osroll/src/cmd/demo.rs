//! `osroll demo`: a whole rollout on the embedded test cluster (test API server,
//! kubelet-lite nodes with the real agent on simulated hosts, the real controller). A thin
//! adapter over `osroll_sim::demo`; the cluster is a stand-in for demos only.

use std::io::Write as _;

use clap::Args;

/// Demo options.
#[derive(Args, Debug)]
pub struct DemoCmd {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Most nodes disrupted at once: an integer or a percentage (`40%`).
    #[arg(long, default_value = "1")]
    max_unavailable: String,
    /// Stay up after the rollout and print a kubeconfig for kubectl, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// Run the demo; exits non-zero unless every node completed.
pub fn run(cmd: DemoCmd) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let opts = osroll_sim::demo::DemoOptions {
        nodes: cmd.nodes,
        max_unavailable: osroll_sim::demo::parse_max_unavailable(&cmd.max_unavailable)?,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (demo, ok) = rt.block_on(async move {
        let mut out = std::io::stdout();
        let mut renderer = osroll_sim::view::live::default_renderer();
        let demo = osroll_sim::demo::run(&opts, &mut out, renderer.as_mut()).await?;
        drop(renderer);
        let phase = demo
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "unknown".into());
        writeln!(
            out,
            "\nrollout {phase} in {:.1}s\n",
            demo.elapsed.as_secs_f64()
        )?;
        write!(out, "{}", demo.table())?;
        let ok = demo.succeeded();
        if cmd.keep {
            let kc = demo.kubeconfig().display().to_string();
            writeln!(out, "\nThe cluster stays up until Ctrl-C. Try:")?;
            writeln!(out, "  export KUBECONFIG={kc}")?;
            writeln!(out, "  kubectl get osupgrades,osupgradeprogresses")?;
            writeln!(out, "  kubectl get nodes -o wide")?;
            writeln!(out, "  osroll status {}", osroll_sim::demo::UPGRADE)?;
            out.flush()?;
            tokio::signal::ctrl_c().await?;
        }
        let mut demo = demo;
        demo.stop().await;
        anyhow::Ok((
            demo,
            ok.then_some(()).ok_or_else(|| {
                anyhow::anyhow!("the rollout did not complete on every node (phase {phase})")
            }),
        ))
    })?;
    // Client tasks go with the runtime, before the API server goes with the demo.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(demo);
    ok
}
