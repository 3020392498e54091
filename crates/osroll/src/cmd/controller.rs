//! `osroll controller`: run the controller against the cluster in the kubeconfig (or the
//! in-cluster service account). A thin adapter over `osroll_controller::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use osroll_controller::ControllerConfig;

/// Controller options; each flag has an environment fallback for the Deployment.
#[derive(Args, Debug)]
pub(crate) struct ControllerCmd {
    /// Namespace of the controller's Lease and of ConfigMap catalogs.
    #[arg(long, env = "POD_NAMESPACE", default_value = "osroll-system")]
    namespace: String,
    /// Address for /metrics, /healthz and /readyz (`none` to disable).
    #[arg(long, env = "OSROLL_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// The node this replica runs on; it is upgraded last of all.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// This replica's identity in the Lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "OSROLL_LEASE_NAME", default_value = "osroll-controller")]
    lease_name: String,
    /// Lease duration in seconds (renewed every third of it).
    #[arg(long, env = "OSROLL_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds an upgraded node must be Ready before it is uncordoned.
    #[arg(long, env = "OSROLL_NODE_SOAK_SECONDS", default_value_t = 0)]
    node_soak_seconds: u64,
    /// Seconds between drain steps while pods are leaving.
    #[arg(long, env = "OSROLL_DRAIN_POLL_SECONDS", default_value_t = 2)]
    drain_poll_seconds: u64,
    /// Minisign public keys trusted to sign catalogs: a file, or a directory such as a
    /// mounted Secret or ConfigMap (every file in it).
    #[arg(long, env = "OSROLL_TRUSTED_KEYS_FILE")]
    trusted_keys_file: Option<PathBuf>,
    /// Reject catalogs without a valid signature by a trusted key.
    #[arg(long, env = "OSROLL_REQUIRE_SIGNED_CATALOG")]
    require_signed_catalog: bool,
    /// Extra PEM CA certificates for catalog URLs: a file, or a directory of PEM files.
    #[arg(long, env = "OSROLL_CATALOG_CA_FILE")]
    catalog_ca_file: Option<PathBuf>,
    /// Allow plain http:// catalog URLs (test clusters and local mirrors only).
    #[arg(long, env = "OSROLL_ALLOW_HTTP_CATALOG")]
    allow_http_catalog: bool,
    /// Act only on OSUpgrades matching this label selector (default: all), e.g. to
    /// share a cluster with other controllers.
    #[arg(long, env = "OSROLL_UPGRADE_SELECTOR")]
    upgrade_selector: Option<String>,
}

impl ControllerCmd {
    fn config(&self) -> anyhow::Result<ControllerConfig> {
        let metrics_addr = match self.metrics_addr.as_str() {
            "none" | "" => None,
            a => Some(
                a.parse::<SocketAddr>()
                    .with_context(|| format!("--metrics-addr {a:?} is not host:port"))?,
            ),
        };
        let identity = match &self.identity {
            Some(i) => i.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| format!("osroll-controller-{}", std::process::id())),
        };
        let trusted_keys = match &self.trusted_keys_file {
            Some(p) => super::mounted::trusted_keys("trusted-keys-file", p)?,
            None => Vec::new(),
        };
        let catalog_ca = match &self.catalog_ca_file {
            Some(p) => Some(super::mounted::read_file_or_dir("catalog-ca-file", p)?),
            None => None,
        };
        Ok(ControllerConfig {
            namespace: self.namespace.clone(),
            metrics_addr,
            node_name: self.node_name.clone(),
            identity,
            lease_name: self.lease_name.clone(),
            lease_duration: Duration::from_secs(self.lease_duration_seconds.max(3)),
            node_soak: Duration::from_secs(self.node_soak_seconds),
            drain_poll: Duration::from_secs(self.drain_poll_seconds.max(1)),
            trusted_keys,
            require_signed_catalog: self.require_signed_catalog,
            catalog_ca,
            allow_http_catalog: self.allow_http_catalog,
            upgrade_selector: self.upgrade_selector.clone().filter(|s| !s.is_empty()),
            ..ControllerConfig::default()
        })
    }
}

/// Run until SIGINT/SIGTERM.
pub(crate) fn run(cmd: ControllerCmd) -> anyhow::Result<()> {
    let rt = super::logging_and_runtime("info")?;
    let cfg = cmd.config()?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        osroll_controller::run(cfg, client).await
    })
}
