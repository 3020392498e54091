//! `osroll agent`: the node agent (DaemonSet pod). A thin adapter that turns flags into
//! an `osroll_agent::AgentConfig`, a host (real, or simulated with `--sim-host` in a build
//! with the `demo` feature) and a progress source (the cluster, or a directory with
//! `--progress-dir`).
//!
//! Defaults match the DaemonSet from `osroll create agent` (hostPID, host `/dev`,
//! `/boot` at `/host/boot`, state in `/var/lib/osroll`, hooks ConfigMap at
//! `/etc/osroll/hooks`). `--backend` picks A/B images (default), OSTree or an OS plugin;
//! `--firstboot` runs the first-boot update from `deploy/osroll-firstboot.service`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use osroll_agent::backends::driver::BackendConfig;
use osroll_agent::backends::ostree::{OstreeConfig, OstreeTool};
use osroll_agent::boot::BootControl;
use osroll_agent::boot::grubenv::GrubBoot;
use osroll_agent::boot::uboot::UBoot;
use osroll_agent::firstboot::{self, FirstBootExit};
use osroll_agent::host::real::{RealHost, RealHostConfig};
use osroll_agent::install::{InstallOptions, RetryPolicy};
use osroll_agent::reboot::{RebootConfig, UpdateEngineBus};
use osroll_agent::source::file::FileSource;
use osroll_agent::{AgentConfig, AgentExit, Host};

use super::mounted;

/// Which bootloader environment to drive.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BootKind {
    /// GRUB environment block (`--grubenv`).
    Grub,
    /// U-Boot environment via fw_printenv/fw_setenv.
    Uboot,
}

/// How the node's OS is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// Write the image into the inactive A/B slot.
    Ab,
    /// Stage an OSTree deployment (`--ostree-tool`).
    Ostree,
    /// Ask an OS plugin executable (`--plugin`).
    Plugin,
}

/// Node agent options; each has an environment fallback for the DaemonSet.
#[derive(Args, Debug)]
pub(crate) struct AgentCmd {
    /// This node's name (downward API spec.nodeName; with --firstboot, the host name
    /// when unset).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// How the OS is updated.
    #[arg(long, env = "OSROLL_BACKEND", value_enum, default_value = "ab")]
    backend: BackendKind,
    /// With --backend ostree: rpm-ostree-rebase, rpm-ostree-deploy, bootc-switch or
    /// ostree-admin-deploy.
    #[arg(long, env = "OSROLL_OSTREE_TOOL", default_value = "rpm-ostree-rebase")]
    ostree_tool: String,
    /// With --backend ostree: the tool's executable (default: its usual name on PATH).
    #[arg(long, env = "OSROLL_OSTREE_PROGRAM")]
    ostree_program: Option<PathBuf>,
    /// Words put before every OSTree command to run it in the host's namespaces.
    #[arg(
        long,
        env = "OSROLL_HOST_PREFIX",
        default_value = "nsenter --target 1 --mount --"
    )]
    host_prefix: String,
    /// With --backend plugin: the plugin executable (see docs/plugin-protocol.md).
    #[arg(long, env = "OSROLL_PLUGIN", required_if_eq("backend", "plugin"))]
    plugin: Option<PathBuf>,
    /// Seconds one plugin action may take.
    #[arg(long, env = "OSROLL_PLUGIN_TIMEOUT", default_value_t = 1800.0)]
    plugin_timeout: f64,
    /// Install hooks directory (`<version>/pre-install`, `default/post-install`, ...).
    #[arg(long, env = "OSROLL_HOOKS_DIR", default_value = "/etc/osroll/hooks")]
    hooks_dir: PathBuf,
    /// Seconds one hook may take.
    #[arg(long, env = "OSROLL_HOOK_TIMEOUT", default_value_t = 300.0)]
    hook_timeout: f64,
    /// The host's /proc (pod mount tables, for restarts after a live update).
    #[arg(long, env = "OSROLL_PROC_ROOT", default_value = "/proc")]
    proc_root: PathBuf,
    /// First boot: bring this node to the wanted version before the kubelet starts,
    /// then exit (see deploy/osroll-firstboot.service).
    #[arg(long)]
    firstboot: bool,
    /// With --firstboot: file naming the wanted version (else the cluster's active
    /// OSUpgrade is asked).
    #[arg(
        long,
        env = "OSROLL_FIRSTBOOT_VERSION_FILE",
        default_value = "/etc/osroll/firstboot-version"
    )]
    firstboot_version_file: PathBuf,
    /// With --firstboot: written once the node runs the wanted version.
    #[arg(
        long,
        env = "OSROLL_FIRSTBOOT_DONE",
        default_value = "/var/lib/osroll/firstboot.done"
    )]
    firstboot_done: PathBuf,
    /// With --firstboot: the controller's namespace, where an OSUpgrade's
    /// `catalog.configMap` lives.
    #[arg(
        long,
        env = "OSROLL_CATALOG_NAMESPACE",
        default_value = osroll_api::manifests::DEFAULT_NAMESPACE
    )]
    catalog_namespace: String,
    /// Kubeconfig for reaching the cluster from the host (first boot runs outside a pod).
    #[arg(long, env = "OSROLL_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Directory of the agent's local state file.
    #[arg(long, env = "OSROLL_STATE_DIR", default_value = "/var/lib/osroll")]
    state_dir: PathBuf,
    /// Slot A's partition: a path, PARTLABEL=<label> or PARTUUID=<uuid>.
    #[arg(long, env = "OSROLL_SLOT_A")]
    slot_a: Option<String>,
    /// Slot B's partition: a path, PARTLABEL=<label> or PARTUUID=<uuid>.
    #[arg(long, env = "OSROLL_SLOT_B")]
    slot_b: Option<String>,
    /// Without --slot-a/--slot-b: the GPT partition labels of slot A and slot B, found
    /// in sysfs (else the running root= on the kernel command line and its sibling).
    #[arg(long, env = "OSROLL_SLOT_LABELS", default_value = "osroll-a,osroll-b")]
    slot_labels: osroll_agent::host::discover::SlotLabels,
    /// sysfs block class directory, read to find the slots by label.
    #[arg(long, env = "OSROLL_SYS_BLOCK", default_value = "/sys/class/block")]
    sys_block: PathBuf,
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
    #[cfg(feature = "demo")]
    #[arg(long, env = "OSROLL_SIM_HOST")]
    sim_host: Option<PathBuf>,
    /// With --sim-host: first complete a pending simulated reboot (SimHost::boot).
    #[cfg(feature = "demo")]
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
    /// Mirror rule FROM=TO (repeatable; comma-separated in the environment): images whose
    /// URL starts with FROM are downloaded from TO + the rest. The longest FROM wins.
    #[arg(long = "mirror", env = "OSROLL_MIRRORS", value_delimiter = ',')]
    mirrors: Vec<osroll_api::policy::Rewrite>,
    /// Reboot-needed sentinel file (kured's --reboot-sentinel); empty turns it off.
    #[arg(long, env = "OSROLL_REBOOT_SENTINEL", default_value = osroll_agent::reboot::DEFAULT_SENTINEL)]
    reboot_sentinel: PathBuf,
    /// Reboot-needed command, split on white space; exit status 0 means a reboot is
    /// needed (kured's --reboot-sentinel-command).
    #[arg(long, env = "OSROLL_REBOOT_SENTINEL_COMMAND")]
    reboot_sentinel_command: Option<String>,
    /// Ask update_engine over the system D-Bus (CLUO's signal).
    #[arg(long, env = "OSROLL_UPDATE_ENGINE")]
    update_engine: bool,
    /// Ask update_engine on this D-Bus address instead of the system bus.
    #[arg(long, env = "OSROLL_UPDATE_ENGINE_ADDRESS")]
    update_engine_address: Option<String>,
    /// Treat a staged OSTree deployment as "reboot needed" (read with --ostree-tool).
    #[arg(long, env = "OSROLL_REBOOT_OSTREE")]
    reboot_ostree: bool,
}

fn secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{flag} {v}: expected a non-negative number of seconds"))
}

impl AgentCmd {
    fn node_name(&self) -> anyhow::Result<String> {
        if let Some(n) = &self.node_name {
            return Ok(n.clone());
        }
        anyhow::ensure!(self.firstboot, "--node-name (or NODE_NAME) is required");
        let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("--node-name is unset and the host name cannot be read")?;
        Ok(h.trim().to_string())
    }

    fn ostree(&self) -> anyhow::Result<OstreeConfig> {
        let tool: OstreeTool = self
            .ostree_tool
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--ostree-tool: {e}"))?;
        let mut c = OstreeConfig::new(tool);
        c.program = self.ostree_program.clone();
        c.host_prefix = self
            .host_prefix
            .split_whitespace()
            .map(String::from)
            .collect();
        Ok(c)
    }

    /// The reboot-needed sources the flags configure.
    fn reboot(&self) -> anyhow::Result<RebootConfig> {
        let bus = match (&self.update_engine_address, self.update_engine) {
            (Some(a), _) => Some(UpdateEngineBus::Address(a.clone())),
            (None, true) => Some(UpdateEngineBus::System),
            (None, false) => None,
        };
        Ok(RebootConfig {
            sentinel_file: Some(self.reboot_sentinel.clone()).filter(|p| !p.as_os_str().is_empty()),
            sentinel_command: self
                .reboot_sentinel_command
                .as_ref()
                .map(|c| c.split_whitespace().map(String::from).collect()),
            update_engine: bus,
            ostree: self.reboot_ostree.then(|| self.ostree()).transpose()?,
            ..RebootConfig::default()
        })
    }

    fn backend(&self) -> anyhow::Result<BackendConfig> {
        Ok(match self.backend {
            BackendKind::Ab => BackendConfig::AbImage,
            BackendKind::Ostree => BackendConfig::Ostree(self.ostree()?),
            BackendKind::Plugin => BackendConfig::Plugin {
                path: self
                    .plugin
                    .clone()
                    .context("--plugin is required with --backend plugin")?,
                timeout: secs("plugin-timeout", self.plugin_timeout)?,
            },
        })
    }

    fn config(&self) -> anyhow::Result<AgentConfig> {
        let mut cfg = AgentConfig::new(self.node_name()?, &self.state_dir);
        cfg.backend = self.backend()?;
        cfg.hooks_dir = Some(self.hooks_dir.clone());
        cfg.hook_timeout = secs("hook-timeout", self.hook_timeout)?;
        cfg.proc_root = self.proc_root.clone();
        cfg.mountinfo = self.mountinfo.clone();
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
        cfg.mirrors = self.mirrors.clone();
        cfg.reboot = self.reboot()?;
        cfg.resync = secs("resync", self.resync)?;
        cfg.progress_interval =
            secs("progress-interval", self.progress_interval)?.max(Duration::from_millis(10));
        #[cfg(feature = "demo")]
        if let Some(dir) = &self.sim_host {
            cfg.error_backoff = Duration::from_millis(200);
            // A simulated node's /run is its directory's run/ (cleared by its boot).
            if cfg.reboot.sentinel_file.as_deref()
                == Some(std::path::Path::new(osroll_agent::reboot::DEFAULT_SENTINEL))
            {
                cfg.reboot.sentinel_file = Some(osroll_agent::SimHost::sentinel_in(dir));
            }
        }
        Ok(cfg)
    }

    /// `--sim-host`: the simulated node in that directory, powered on first with
    /// `--sim-boot`.
    #[cfg(feature = "demo")]
    fn sim_host(&self) -> anyhow::Result<Option<Arc<dyn Host>>> {
        let Some(dir) = &self.sim_host else {
            return Ok(None);
        };
        let host = osroll_agent::SimHost::open(dir)
            .with_context(|| format!("--sim-host {}", dir.display()))?;
        if self.sim_boot && host.reboot_requested() {
            let out = host
                .boot()
                .with_context(|| format!("booting simulated node {}", dir.display()))?;
            tracing::info!(slot = %out.slot, fell_back = out.fell_back, "simulated node booted");
        }
        Ok(Some(Arc::new(host)))
    }

    fn host(&self) -> anyhow::Result<Arc<dyn Host>> {
        #[cfg(feature = "demo")]
        if let Some(host) = self.sim_host()? {
            return Ok(host);
        }
        let ab = self.backend == BackendKind::Ab;
        let parse = |flag: &str, v: &Option<String>| -> anyhow::Result<_> {
            match v.as_deref() {
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|e: String| anyhow::anyhow!("--{flag}: {e}")),
                None if ab => anyhow::bail!("--{flag} is required with --backend ab"),
                None => Ok(None),
            }
        };
        let cmdline = if self.cmdline.exists() {
            self.cmdline.clone()
        } else {
            PathBuf::from("/proc/cmdline")
        };
        let (slot_a, slot_b) = match (ab, &self.slot_a, &self.slot_b) {
            (true, None, None) => {
                let paths = osroll_agent::host::discover::DiscoverPaths {
                    class_block: &self.sys_block,
                    dev_dir: &self.dev_dir,
                    cmdline: &cmdline,
                };
                let [a, b] = osroll_agent::host::discover::discover(&paths, &self.slot_labels)
                    .map_err(|e| anyhow::anyhow!("finding the A/B slots: {e}"))?;
                tracing::info!(slot_a = %a, slot_b = %b, "slots found");
                (Some(a), Some(b))
            }
            _ => (
                parse("slot-a", &self.slot_a)?,
                parse("slot-b", &self.slot_b)?,
            ),
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
        Ok(Arc::new(RealHost::new(RealHostConfig {
            slot_a,
            slot_b,
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
pub(crate) fn run(cmd: AgentCmd) -> anyhow::Result<()> {
    let rt = super::logging_and_runtime("info")?;
    let cfg = cmd.config()?;
    let host = cmd.host()?;
    if cmd.firstboot {
        return rt.block_on(run_firstboot(&cmd, cfg, host));
    }
    let exit = rt.block_on(async move {
        match &cmd.progress_dir {
            Some(dir) => {
                let source = FileSource::new(dir, &cfg.node_name, Duration::from_millis(50));
                osroll_agent::run_with_source(cfg, source, host).await
            }
            None => {
                let client = client(&cmd).await?;
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

async fn client(cmd: &AgentCmd) -> anyhow::Result<kube::Client> {
    match &cmd.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            Ok(kube::Client::try_from(conf)?)
        }
        None => kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API"),
    }
}

/// `--firstboot`: the wanted version from the local file, else from the cluster; run
/// the update; exit 0 once the node runs it (a real reboot ends the process first).
async fn run_firstboot(
    cmd: &AgentCmd,
    cfg: AgentConfig,
    host: Arc<dyn Host>,
) -> anyhow::Result<()> {
    let file = &cmd.firstboot_version_file;
    let wanted = match std::fs::read_to_string(file) {
        Ok(text) => firstboot::parse_version_file(&text, &file.display().to_string())
            .map_err(anyhow::Error::msg)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let c = client(cmd).await?;
            firstboot::wanted_from_api(c, &cmd.catalog_namespace, &cfg.install)
                .await
                .context("asking the cluster for the wanted version")?
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    match firstboot::run_firstboot(cfg, &wanted, host, &cmd.firstboot_done).await? {
        FirstBootExit::Rebooted => {
            println!("simulated reboot requested: boot the node and run --firstboot again");
            Ok(())
        }
        FirstBootExit::Finished(st) => {
            let phase = st
                .phase
                .map(osroll_api::progress::ProgressPhase::as_str)
                .unwrap_or_default();
            let msg = st.message.clone().unwrap_or_default();
            if st.phase == Some(osroll_api::ProgressPhase::Completed) {
                println!("first boot: {phase}: {msg}");
                Ok(())
            } else {
                anyhow::bail!(
                    "first boot: {phase} ({}): {msg}",
                    st.failure_reason.as_deref().unwrap_or("")
                )
            }
        }
    }
}
