//! `osroll agent`: the node agent (DaemonSet pod). A thin adapter that turns flags into
//! an `osroll_agent::AgentConfig`, a host (real, or simulated with `--sim-host`) and a
//! progress source (the cluster, or a directory with `--progress-dir`).
//!
//! Defaults match the DaemonSet from `osroll create agent` (hostPID, host `/dev`,
//! `/boot` at `/host/boot`, state in `/var/lib/osroll`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use osroll_agent::boot::BootControl;
use osroll_agent::boot::grubenv::GrubBoot;
use osroll_agent::boot::uboot::UBoot;
use osroll_agent::host::real::{RealHost, RealHostConfig};
use osroll_agent::install::{InstallOptions, RetryPolicy};
use osroll_agent::source::file::FileSource;
use osroll_agent::{AgentConfig, AgentExit, Host, SimHost};

use super::mounted;

/// Which bootloader environment to drive.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BootKind {
    /// GRUB environment block (`--grubenv`).
    Grub,
    /// U-Boot environment via fw_printenv/fw_setenv.
    Uboot,
}

/// Node agent options; each has an environment fallback for the DaemonSet.
#[derive(Args, Debug)]
pub struct AgentCmd {
    /// This node's name (downward API spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Directory of the agent's local state file.
    #[arg(long, env = "OSROLL_STATE_DIR", default_value = "/var/lib/osroll")]
    state_dir: PathBuf,
    /// Slot A's partition: a path, PARTLABEL=<label> or PARTUUID=<uuid>.
    #[arg(long, env = "OSROLL_SLOT_A", required_unless_present = "sim_host")]
    slot_a: Option<String>,
    /// Slot B's partition: a path, PARTLABEL=<label> or PARTUUID=<uuid>.
    #[arg(long, env = "OSROLL_SLOT_B", required_unless_present = "sim_host")]
    slot_b: Option<String>,
    /// Bootloader.
    #[arg(long, env = "OSROLL_BOOT_CONTROL", value_enum, default_value = "grub")]
    boot_control: BootKind,
    /// GRUB environment block.
    #[arg(
        long,
        env = "OSROLL_GRUBENV",
        default_value = "/host/boot/grub/grubenv"
    )]
    grubenv: PathBuf,
    /// fw_env.config for fw_printenv/fw_setenv (default: the tools' own).
    #[arg(long, env = "OSROLL_FW_ENV_CONFIG")]
    fw_env_config: Option<PathBuf>,
    /// Directory with disk/by-partlabel and disk/by-partuuid.
    #[arg(long, env = "OSROLL_DEV_DIR", default_value = "/dev")]
    dev_dir: PathBuf,
    /// Kernel command line (falls back to /proc/cmdline if missing).
    #[arg(long, env = "OSROLL_CMDLINE", default_value = "/host/proc/cmdline")]
    cmdline: PathBuf,
    /// Mount table of the host (needs hostPID).
    #[arg(long, env = "OSROLL_MOUNTINFO", default_value = "/proc/1/mountinfo")]
    mountinfo: PathBuf,
    /// The host's os-release (needs hostPID).
    #[arg(
        long,
        env = "OSROLL_OS_RELEASE",
        default_value = "/proc/1/root/etc/os-release"
    )]
    os_release: PathBuf,
    /// os-release key holding the OS version.
    #[arg(long, env = "OSROLL_VERSION_KEY", default_value = "VERSION_ID")]
    version_key: String,
    /// How to reboot: a command line, or `syscall` for reboot(2).
    #[arg(
        long,
        env = "OSROLL_REBOOT_COMMAND",
        default_value = "nsenter --target 1 --mount -- systemctl reboot"
    )]
    reboot_command: String,
    /// Drive a simulated node in this directory instead of the real host.
    #[arg(long, env = "OSROLL_SIM_HOST")]
    sim_host: Option<PathBuf>,
    /// With --sim-host: first complete a pending simulated reboot (SimHost::boot).
    #[arg(long, requires = "sim_host")]
    sim_boot: bool,
    /// Read progress objects from this directory instead of the Kubernetes API.
    #[arg(long, env = "OSROLL_PROGRESS_DIR")]
    progress_dir: Option<PathBuf>,
    /// Seconds without a downloaded byte before a request counts as stalled.
    #[arg(long, env = "OSROLL_STALL_TIMEOUT", default_value_t = 30.0)]
    stall_timeout: f64,
    /// Consecutive network failures (without progress) before an attempt fails.
    #[arg(long, env = "OSROLL_MAX_RETRIES", default_value_t = 6)]
    max_retries: u32,
    /// Base of the exponential retry backoff, in seconds.
    #[arg(long, env = "OSROLL_RETRY_BACKOFF", default_value_t = 0.5)]
    retry_backoff: f64,
    /// Seconds between re-evaluations without events.
    #[arg(long, env = "OSROLL_RESYNC", default_value_t = 30.0)]
    resync: f64,
    /// Seconds between download progress updates in status.
    #[arg(long, env = "OSROLL_PROGRESS_INTERVAL", default_value_t = 2.0)]
    progress_interval: f64,
    /// Write slots through the page cache instead of O_DIRECT.
    #[arg(long, env = "OSROLL_NO_DIRECT_IO")]
    no_direct_io: bool,
    /// Minisign public keys trusted to sign catalogs: a file, or a directory such as a
    /// mounted Secret or ConfigMap (every file in it).
    #[arg(long, env = "OSROLL_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
    /// Refuse (phase Failed) any image that does not come from a catalog signed by a
    /// trusted key, as stamped by the controller in spec.signedCatalog.
    #[arg(long, env = "OSROLL_REQUIRE_SIGNED_CATALOG", requires = "trusted_keys")]
    require_signed_catalog: bool,
    /// Extra CA certificates (PEM) for HTTPS image servers: a file, or a directory of
    /// PEM files; trusted in addition to the built-in roots.
    #[arg(long, env = "OSROLL_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Trust only --ca-bundle, not the built-in (webpki) roots.
    #[arg(long, env = "OSROLL_NO_BUILTIN_ROOTS", requires = "ca_bundle")]
    no_builtin_roots: bool,
}

fn secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{flag} {v}: expected a non-negative number of seconds"))
}

impl AgentCmd {
    fn config(&self) -> anyhow::Result<AgentConfig> {
        let mut cfg = AgentConfig::new(&self.node_name, &self.state_dir);
        cfg.install = InstallOptions {
            stall_timeout: secs("stall-timeout", self.stall_timeout)?,
            retry: RetryPolicy {
                max_attempts: self.max_retries.max(1),
                base: secs("retry-backoff", self.retry_backoff)?,
                ..RetryPolicy::default()
            },
            direct_io: !self.no_direct_io,
            extra_ca_pem: match &self.ca_bundle {
                Some(p) => {
                    let pem = mounted::read_file_or_dir("ca-bundle", p)?;
                    osroll_agent::install::http::parse_ca_bundle(&pem)
                        .map_err(|e| anyhow::anyhow!("--ca-bundle {}: {e}", p.display()))?;
                    Some(Arc::new(pem))
                }
                None => None,
            },
            builtin_roots: !self.no_builtin_roots,
            ..InstallOptions::default()
        };
        if let Some(p) = &self.trusted_keys {
            cfg.trust.keys = mounted::trusted_keys("trusted-keys", p)?;
        }
        cfg.trust.require_signed_catalog = self.require_signed_catalog;
        cfg.resync = secs("resync", self.resync)?;
        cfg.progress_interval =
            secs("progress-interval", self.progress_interval)?.max(Duration::from_millis(10));
        if self.sim_host.is_some() {
            cfg.error_backoff = Duration::from_millis(200);
        }
        Ok(cfg)
    }

    fn host(&self) -> anyhow::Result<Arc<dyn Host>> {
        if let Some(dir) = &self.sim_host {
            let host =
                SimHost::open(dir).with_context(|| format!("--sim-host {}", dir.display()))?;
            if self.sim_boot && host.reboot_requested() {
                let out = host
                    .boot()
                    .with_context(|| format!("booting simulated node {}", dir.display()))?;
                tracing::info!(slot = %out.slot, fell_back = out.fell_back, "simulated node booted");
            }
            return Ok(Arc::new(host));
        }
        let parse = |flag: &str, v: &Option<String>| -> anyhow::Result<_> {
            let v = v
                .as_deref()
                .with_context(|| format!("--{flag} is required"))?;
            v.parse()
                .map_err(|e: String| anyhow::anyhow!("--{flag}: {e}"))
        };
        let boot: Box<dyn BootControl> = match self.boot_control {
            BootKind::Grub => Box::new(GrubBoot::new(&self.grubenv)),
            BootKind::Uboot => {
                let u = UBoot::default();
                Box::new(match &self.fw_env_config {
                    Some(c) => u.with_config(c),
                    None => u,
                })
            }
        };
        let cmdline = if self.cmdline.exists() {
            self.cmdline.clone()
        } else {
            PathBuf::from("/proc/cmdline")
        };
        Ok(Arc::new(RealHost::new(RealHostConfig {
            slot_a: parse("slot-a", &self.slot_a)?,
            slot_b: parse("slot-b", &self.slot_b)?,
            dev_dir: self.dev_dir.clone(),
            cmdline,
            mountinfo: self.mountinfo.clone(),
            os_release: self.os_release.clone(),
            version_key: self.version_key.clone(),
            boot_id: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            reboot: self
                .reboot_command
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--reboot-command: {e}"))?,
            boot,
        })))
    }
}

/// Run until a simulated reboot (exit 0) or a fatal error; a real reboot ends the process.
pub fn run(cmd: AgentCmd) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let cfg = cmd.config()?;
    let host = cmd.host()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let exit = rt.block_on(async move {
        match &cmd.progress_dir {
            Some(dir) => {
                let source = FileSource::new(dir, &cfg.node_name, Duration::from_millis(50));
                osroll_agent::run_with_source(cfg, source, host).await
            }
            None => {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API")?;
                osroll_agent::run(cfg, client, host).await
            }
        }
    })?;
    match exit {
        AgentExit::Rebooted => {
            println!(
                "simulated reboot requested: power the node on (SimHost::boot, or --sim-boot) and start the agent again"
            );
            Ok(())
        }
    }
}
