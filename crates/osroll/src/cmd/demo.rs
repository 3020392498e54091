//! `osroll demo`: a whole rollout on the embedded test cluster (test API server,
//! kubelet-lite nodes with the real agent on simulated hosts, the real controller). A thin
//! adapter over `osroll_sim::demo` that follows the rollout with [`crate::view`]; the
//! cluster is a stand-in for demos only, and only a build with the `demo` feature has it.

use std::io::Write;
use std::path::Path;

use clap::{Args, ValueEnum};
use osroll_api::upgrade::UpgradePhase;
use osroll_sim::demo::reboots::RebootDemo;
use osroll_sim::demo::rollback::RollbackDemo;
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

/// Run the demo; exits non-zero unless the scenario ended as it should.
pub(crate) fn run(cmd: DemoCmd) -> anyhow::Result<()> {
    match cmd.scenario {
        Scenario::Upgrade => drive(&cmd, upgrade),
        Scenario::RebootCoordination => drive(&cmd, reboot_coordination),
        Scenario::Rollback => drive(&cmd, roll_back),
    }
}

/// A scenario once it ended, still running until stopped.
trait Finished {
    /// The admin kubeconfig of its cluster.
    fn kubeconfig(&self) -> &Path;
    /// Commands worth trying on the kept cluster.
    fn hints(&self) -> Vec<String>;
    /// Why it did not end as it should, if it did not.
    fn failure(&self) -> Option<String>;
    /// Stop the controller, the nodes and the workloads.
    async fn stop(&mut self);
}

/// Set a scenario up and run it with `scenario` (which narrates and summarizes), with
/// `--keep` wait for Ctrl-C, then stop it: an error unless it ended as it should.
fn drive<D: Finished>(
    cmd: &DemoCmd,
    scenario: impl AsyncFnOnce(&DemoOptions, &mut dyn Write) -> anyhow::Result<D>,
) -> anyhow::Result<()> {
    let opts = DemoOptions {
        nodes: cmd.nodes,
        max_unavailable: osroll_sim::demo::parse_max_unavailable(&cmd.max_unavailable)?,
        ..Default::default()
    };
    let rt = super::logging_and_runtime("error")?;
    let (demo, failure) = rt.block_on(async move {
        let mut out = std::io::stdout();
        let mut demo = scenario(&opts, &mut out).await?;
        if cmd.keep {
            keep(&mut out, &demo).await?;
        }
        let failure = demo.failure();
        demo.stop().await;
        anyhow::Ok((demo, failure))
    })?;
    // Client tasks go with the runtime, before the API server goes with the demo.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(demo);
    failure.map_or(Ok(()), |why| Err(anyhow::anyhow!(why)))
}

/// Print how to reach the cluster, then wait for Ctrl-C.
async fn keep(out: &mut dyn Write, demo: &impl Finished) -> anyhow::Result<()> {
    let kc = demo.kubeconfig().display().to_string();
    writeln!(out, "\nThe cluster stays up until Ctrl-C. Try:")?;
    writeln!(out, "  export KUBECONFIG={kc}")?;
    for hint in demo.hints() {
        writeln!(out, "  {hint}")?;
    }
    out.flush()?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `--scenario upgrade`: follow the rollout in the live view, then the per-node table.
async fn upgrade(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<Demo> {
    let demo = roll_out(opts, out).await?;
    writeln!(
        out,
        "\nrollout {} in {:.1}s\n",
        phase_of(demo.phase),
        demo.elapsed.as_secs_f64()
    )?;
    write!(out, "{}", demo.table())?;
    Ok(demo)
}

/// `--scenario reboot-coordination`.
async fn reboot_coordination(
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> anyhow::Result<RebootDemo> {
    let demo = reboots::run(opts, out).await?;
    writeln!(
        out,
        "\nreboots coordinated in {:.1}s\n",
        demo.elapsed.as_secs_f64()
    )?;
    write!(out, "{}", demo.table())?;
    Ok(demo)
}

/// `--scenario rollback`.
async fn roll_back(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<RollbackDemo> {
    let demo = rollback::run(opts, out).await?;
    writeln!(
        out,
        "\nrollout {}: {:.1}s from the check failing to the rollback starting, {:.1}s to the last node back\n",
        phase_of(demo.phase),
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
    Ok(demo)
}

fn phase_of(phase: Option<UpgradePhase>) -> &'static str {
    phase.map_or("unknown", UpgradePhase::as_str)
}

impl Finished for Demo {
    fn kubeconfig(&self) -> &Path {
        Demo::kubeconfig(self)
    }
    fn hints(&self) -> Vec<String> {
        vec![
            "kubectl get osupgrades,osupgradeprogresses".into(),
            "kubectl get nodes -o wide".into(),
            format!("osroll status {UPGRADE}"),
        ]
    }
    fn failure(&self) -> Option<String> {
        (!self.succeeded()).then(|| {
            format!(
                "the rollout did not complete on every node (phase {})",
                phase_of(self.phase)
            )
        })
    }
    async fn stop(&mut self) {
        Demo::stop(self).await
    }
}

impl Finished for RebootDemo {
    fn kubeconfig(&self) -> &Path {
        self.cluster.admin_kubeconfig()
    }
    fn hints(&self) -> Vec<String> {
        vec![
            format!(
                "kubectl get osupgradeprogresses -l osroll.io/source={}",
                reboots::REBOOTS
            ),
            "kubectl get nodes -L osroll.io/reboot-needed".into(),
        ]
    }
    fn failure(&self) -> Option<String> {
        (!self.succeeded())
            .then(|| "a signalled node was not rebooted exactly once, or another node was".into())
    }
    async fn stop(&mut self) {
        RebootDemo::stop(self).await
    }
}

impl Finished for RollbackDemo {
    fn kubeconfig(&self) -> &Path {
        self.cluster.admin_kubeconfig()
    }
    fn hints(&self) -> Vec<String> {
        vec![
            "kubectl get osupgrades,osupgradeprogresses".into(),
            format!("osroll status {}", rollback::ROLLOUT),
        ]
    }
    fn failure(&self) -> Option<String> {
        (!self.succeeded()).then(|| {
            "the rollback did not bring every upgraded node back without downloading, uncordoned"
                .into()
        })
    }
    async fn stop(&mut self) {
        RollbackDemo::stop(self).await
    }
}

/// Set the demo up and follow its rollout in the live view until it ends.
async fn roll_out(opts: &DemoOptions, out: &mut dyn Write) -> anyhow::Result<Demo> {
    let mut renderer = live::default_renderer();
    osroll_sim::demo::run(opts, out, async |client| {
        let views = live::watch(client, Some(UPGRADE), true, renderer.as_mut()).await?;
        Ok(views.first().map(|v| v.phase))
    })
    .await
}
