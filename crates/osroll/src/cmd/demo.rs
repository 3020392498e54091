//! `osroll demo`: a whole rollout on the embedded test cluster (test API server,
//! kubelet-lite nodes with the real agent on simulated hosts, the real controller). A thin
//! adapter over `osroll_sim::demo` that follows the rollout with [`crate::view`]; the
//! cluster is a stand-in for demos only, and only a build with the `demo` feature has it.

use std::io::Write as _;

use clap::{Args, ValueEnum};
use osroll_sim::demo::{Demo, DemoOptions, UPGRADE, reboots, rollback};

use crate::view::live;

/// Demo options.
#[derive(Args, Debug)]
pub(crate) struct DemoCmd {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Most nodes disrupted at once: an integer or a percentage (`40%`).
    #[arg(long, default_value = "1")]
    max_unavailable: String,
    /// Stay up after the rollout and print a kubeconfig for kubectl, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// What to show.
    #[arg(long, value_enum, default_value = "upgrade")]
    scenario: Scenario,
}

/// The demo's scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// osroll installs 2.0 on every node (A/B images from a catalog).
    Upgrade,
    /// Reboots coordinated for updates a package manager installed (kured's sentinel).
    RebootCoordination,
    /// A health check turns red after the first wave; every upgraded node goes back.
    Rollback,
}

/// Run the demo; exits non-zero unless every node completed.
pub(crate) fn run(cmd: DemoCmd) -> anyhow::Result<()> {
    match cmd.scenario {
        Scenario::RebootCoordination => return run_reboots(cmd),
        Scenario::Rollback => return run_rollback(cmd),
        Scenario::Upgrade => {}
    }
    let opts = DemoOptions {
        nodes: cmd.nodes,
        max_unavailable: osroll_sim::demo::parse_max_unavailable(&cmd.max_unavailable)?,
        ..Default::default()
    };
    let rt = super::logging_and_runtime("error")?;
    let (demo, ok) = rt.block_on(async move {
        let mut demo = roll_out(&opts).await?;
        let ok = report(&demo, cmd.keep).await;
        demo.stop().await;
        anyhow::Ok((demo, ok))
    })?;
    // Client tasks go with the runtime, before the API server goes with the demo.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(demo);
    ok
}

/// `--scenario reboot-coordination`; exits non-zero unless exactly the signalled nodes
/// rebooted, once each, and their signal cleared.
fn run_reboots(cmd: DemoCmd) -> anyhow::Result<()> {
    let opts = DemoOptions {
        nodes: cmd.nodes,
        max_unavailable: osroll_sim::demo::parse_max_unavailable(&cmd.max_unavailable)?,
        ..Default::default()
    };
    let rt = super::logging_and_runtime("error")?;
    let (demo, ok) = rt.block_on(async move {
        let mut out = std::io::stdout();
        let mut demo = reboots::run(&opts, &mut out).await?;
        writeln!(
            out,
            "\nreboots coordinated in {:.1}s\n",
            demo.elapsed.as_secs_f64()
        )?;
        write!(out, "{}", demo.table())?;
        if cmd.keep {
            let kc = demo.cluster.admin_kubeconfig().display().to_string();
            writeln!(out, "\nThe cluster stays up until Ctrl-C. Try:")?;
            writeln!(out, "  export KUBECONFIG={kc}")?;
            writeln!(
                out,
                "  kubectl get osupgradeprogresses -l osroll.io/source={}",
                reboots::REBOOTS
            )?;
            writeln!(out, "  kubectl get nodes -L osroll.io/reboot-needed")?;
            out.flush()?;
            tokio::signal::ctrl_c().await?;
        }
        let ok = demo.succeeded();
        demo.stop().await;
        anyhow::Ok((demo, ok))
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(demo);
    anyhow::ensure!(
        ok,
        "a signalled node was not rebooted exactly once, or another node was"
    );
    Ok(())
}

/// `--scenario rollback`; exits non-zero unless the rollout rolled back every node it
/// upgraded, with nothing downloaded and no node left cordoned.
fn run_rollback(cmd: DemoCmd) -> anyhow::Result<()> {
    let opts = DemoOptions {
        nodes: cmd.nodes,
        max_unavailable: osroll_sim::demo::parse_max_unavailable(&cmd.max_unavailable)?,
        ..Default::default()
    };
    let rt = super::logging_and_runtime("error")?;
    let (demo, ok) = rt.block_on(async move {
        let mut out = std::io::stdout();
        let mut demo = rollback::run(&opts, &mut out).await?;
        let phase = demo.phase.map_or("unknown", |p| p.as_str());
        writeln!(
            out,
            "\nrollout {phase}: {:.1}s from the check failing to the rollback starting, {:.1}s to the last node back\n",
            demo.to_rollback.as_secs_f64(),
            demo.to_last_back.as_secs_f64()
        )?;
        writeln!(
            out,
            "bytes of the {} image downloaded: {}\n",
            osroll_sim::demo::FROM_VERSION,
            demo.from_bytes_served
        )?;
        write!(out, "{}", demo.table())?;
        if cmd.keep {
            let kc = demo.cluster.admin_kubeconfig().display().to_string();
            writeln!(out, "\nThe cluster stays up until Ctrl-C. Try:")?;
            writeln!(out, "  export KUBECONFIG={kc}")?;
            writeln!(out, "  kubectl get osupgrades,osupgradeprogresses")?;
            writeln!(out, "  osroll status {}", rollback::ROLLOUT)?;
            out.flush()?;
            tokio::signal::ctrl_c().await?;
        }
        let ok = demo.succeeded();
        demo.stop().await;
        anyhow::Ok((demo, ok))
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(demo);
    anyhow::ensure!(
        ok,
        "the rollback did not bring every upgraded node back without downloading, uncordoned"
    );
    Ok(())
}

/// Set the demo up and follow its rollout in the live view until it ends.
async fn roll_out(opts: &DemoOptions) -> anyhow::Result<Demo> {
    let mut out = std::io::stdout();
    let mut renderer = live::default_renderer();
    osroll_sim::demo::run(opts, &mut out, async |client| {
        let views = live::watch(client, Some(UPGRADE), true, renderer.as_mut()).await?;
        Ok(views.first().map(|v| v.phase))
    })
    .await
}

/// Print the outcome and the per-node table, with `keep` wait for Ctrl-C; an error
/// unless every node completed.
async fn report(demo: &Demo, keep: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let phase = demo
        .phase
        .map(osroll_api::upgrade::UpgradePhase::as_str)
        .unwrap_or("unknown");
    writeln!(
        out,
        "\nrollout {phase} in {:.1}s\n",
        demo.elapsed.as_secs_f64()
    )?;
    write!(out, "{}", demo.table())?;
    if keep {
        let kc = demo.kubeconfig().display().to_string();
        writeln!(out, "\nThe cluster stays up until Ctrl-C. Try:")?;
        writeln!(out, "  export KUBECONFIG={kc}")?;
        writeln!(out, "  kubectl get osupgrades,osupgradeprogresses")?;
        writeln!(out, "  kubectl get nodes -o wide")?;
        writeln!(out, "  osroll status {UPGRADE}")?;
        out.flush()?;
        tokio::signal::ctrl_c().await?;
    }
    anyhow::ensure!(
        demo.succeeded(),
        "the rollout did not complete on every node (phase {phase})"
    );
    Ok(())
}
