//! `osroll`: one binary for the controller, the node agent and the user's CLI.
//!
//! Each subcommand lives in its own module under `cmd/`, the rollout view shared by
//! `status` and `demo` under `view/`; this file only parses the command line and
//! dispatches. `osroll demo` (and the agent's `--sim-host`) exist only with the default
//! cargo feature `demo`; the release image is built without it, so no node runs a binary
//! that contains the test cluster.

mod cmd;
mod view;

use clap::{Parser, Subcommand};

/// OS upgrades for image-based Kubernetes nodes.
#[derive(Parser)]
#[command(name = "osroll", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print both CustomResourceDefinitions as YAML.
    Crds,
    /// Print deployment manifests (`controller` or `agent`) as YAML.
    #[command(subcommand)]
    Create(cmd::create::CreateCmd),
    /// Catalog tools: keygen, sign, verify, lint.
    #[command(subcommand)]
    Catalog(cmd::catalog::CatalogCmd),
    /// Run the controller (rollout planner, drain, leader election).
    Controller(cmd::controller::ControllerCmd),
    /// Run the node agent (stage, switch and commit A/B image upgrades).
    Agent(Box<cmd::agent::AgentCmd>),
    /// Flash an image to a device or file: checked, resumable, read back.
    Flash(cmd::flash::FlashCmd),
    /// Show a rollout: progress bars per node and totals (`--watch` to follow it).
    Status(cmd::status::StatusCmd),
    /// Run a whole rollout on an embedded test cluster (a demo, not a deployment).
    #[cfg(feature = "demo")]
    Demo(cmd::demo::DemoCmd),
    /// Image tools: pack an image for delta updates.
    #[command(subcommand)]
    Image(cmd::image::ImageCmd),
    /// Put every node an OSUpgrade upgraded back on its previous version.
    Rollback(cmd::rollback::RollbackCmd),
    // Subcommands from other modules are added above this line, one variant each.
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => cmd::crds::run(),
        Command::Create(c) => cmd::create::run(c),
        Command::Catalog(c) => cmd::catalog::run(c),
        Command::Controller(c) => cmd::controller::run(c),
        Command::Agent(c) => cmd::agent::run(*c),
        Command::Flash(c) => cmd::flash::run(c),
        Command::Status(c) => cmd::status::run(c),
        #[cfg(feature = "demo")]
        Command::Demo(c) => cmd::demo::run(c),
        Command::Image(c) => cmd::image::run(c),
        Command::Rollback(c) => cmd::rollback::run(c),
        // Dispatch arms for other modules are added above this line.
    }
}
