//! Helpers for cluster tests: one [`Cluster`] value gives a test a kube client, a
//! kubeconfig for `kubectl` and for the `osroll` binaries, per-user kubeconfigs, the audit
//! log and kubelet-lite nodes. It starts the in-process test API server, or, when
//! `OSROLL_E2E_KUBECONFIG` names a kubeconfig, uses that real cluster instead (then there
//! is no audit log, and per-user kubeconfigs impersonate the user).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::kubelet::{Kubelet, KubeletConfig};
use crate::server::{AuditEntry, ServerConfig, TestServer, client_from_kubeconfig};

/// Environment variable naming a real cluster's kubeconfig to run cluster tests against.
pub const E2E_KUBECONFIG_ENV: &str = "OSROLL_E2E_KUBECONFIG";

/// A cluster for one test.
pub struct Cluster {
    client: Client,
    kubeconfig: PathBuf,
    server: Option<TestServer>,
    dir: tempfile::TempDir,
}

/// What a `kubectl` run printed.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlOutput {
    /// Whether kubectl exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl Cluster {
    /// The test API server with default settings, or the real cluster of
    /// `OSROLL_E2E_KUBECONFIG`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Like [`Cluster::start`] with server settings (ignored for a real cluster).
    pub async fn start_with(config: ServerConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("osroll-cluster-")
            .tempdir()?;
        if let Some(path) = std::env::var_os(E2E_KUBECONFIG_ENV) {
            let kubeconfig = PathBuf::from(path);
            let client = client_from_kubeconfig(&kubeconfig).await?;
            return Ok(Cluster {
                client,
                kubeconfig,
                server: None,
                dir,
            });
        }
        let server = TestServer::start_with(config)?;
        let kubeconfig = server.kubeconfig().to_path_buf();
        let client = server.client().await?;
        Ok(Cluster {
            client,
            kubeconfig,
            server: Some(server),
            dir,
        })
    }

    /// Always the in-process test API server, whatever `OSROLL_E2E_KUBECONFIG` says
    /// (the demo).
    pub async fn sim(config: ServerConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("osroll-cluster-")
            .tempdir()?;
        let server = TestServer::start_with(config)?;
        let kubeconfig = server.kubeconfig().to_path_buf();
        let client = server.client().await?;
        Ok(Cluster {
            client,
            kubeconfig,
            server: Some(server),
            dir,
        })
    }

    /// Whether this is a real cluster (`OSROLL_E2E_KUBECONFIG`).
    pub fn is_real(&self) -> bool {
        self.server.is_none()
    }

    /// An admin kube client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Admin client settings, to build a client with different options. Note that
    /// kube-rs retries 429 answers (e.g. evictions a budget refuses) with backoff for
    /// minutes unless `default_retry` is turned off.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        crate::server::config_from_kubeconfig(&self.kubeconfig).await
    }

    /// The admin kubeconfig, for `kubectl` and the `osroll` binaries (`KUBECONFIG`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The test API server, when not on a real cluster.
    pub fn server(&self) -> Option<&TestServer> {
        self.server.as_ref()
    }

    /// A kubeconfig acting as `user`: its own bearer token on the test API server, or
    /// impersonation (`as:`) of `user` on a real cluster.
    pub fn kubeconfig_for(&self, user: &str) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.server {
            return s.kubeconfig_for(user);
        }
        let text = std::fs::read_to_string(&self.kubeconfig)?;
        let mut kc: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let current = kc
            .get("current-context")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let user_name = kc
            .get("contexts")
            .and_then(|c| c.as_sequence())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(&current))
            })
            .and_then(|c| c.get("context")?.get("user")?.as_str())
            .map(String::from)
            .context("current context of the E2E kubeconfig names no user")?;
        let users = kc
            .get_mut("users")
            .and_then(|u| u.as_sequence_mut())
            .context("kubeconfig has no users")?;
        for u in users.iter_mut() {
            if u.get("name").and_then(|n| n.as_str()) == Some(&user_name)
                && let Some(m) = u.get_mut("user").and_then(|x| x.as_mapping_mut())
            {
                m.insert("as".into(), user.into());
            }
        }
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.path().join(format!("kubeconfig-as-{safe}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&kc)?)?;
        Ok(path)
    }

    /// A kube client acting as `user` (see [`Cluster::kubeconfig_for`]).
    pub async fn client_for(&self, user: &str) -> anyhow::Result<Client> {
        client_from_kubeconfig(&self.kubeconfig_for(user)?).await
    }

    /// A kube client acting as `user` with a token bound to a pod on `node`, as a
    /// DaemonSet pod's service account token is; on a real cluster the same as
    /// [`Cluster::client_for`] (impersonation carries no node claim).
    pub async fn client_for_node(&self, user: &str, node: &str) -> anyhow::Result<Client> {
        match &self.server {
            Some(s) => s.client_for_node(user, node).await,
            None => self.client_for(user).await,
        }
    }

    /// Every request the test API server saw (None on a real cluster).
    pub fn audit(&self) -> Option<Vec<AuditEntry>> {
        self.server.as_ref().map(TestServer::audit)
    }

    /// Environment for child processes (`kubectl`, `osroll controller`, `osroll agent`).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KUBECONFIG".into(), self.kubeconfig.display().to_string()),
            (
                "KUBECACHEDIR".into(),
                self.dir.path().join("kubectl-cache").display().to_string(),
            ),
        ]
    }

    /// A `kubectl` command set up for this cluster (admin).
    pub fn kubectl(&self) -> tokio::process::Command {
        self.kubectl_with(&self.kubeconfig)
    }

    /// A `kubectl` command using `kubeconfig`.
    pub fn kubectl_with(&self, kubeconfig: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("kubectl");
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c.env("KUBECONFIG", kubeconfig);
        c.kill_on_drop(true);
        c
    }

    /// Run `kubectl args...` to completion, feeding `stdin` if given.
    pub async fn kubectl_run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<KubectlOutput> {
        run_kubectl(self.kubectl(), args, stdin).await
    }

    /// Apply the osroll CRDs and wait until they are Established.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for crd in osroll_api::crd::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let mut crd = crd;
            crd.metadata.managed_fields = None;
            api.patch(
                &name,
                &PatchParams::apply("osroll-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            wait_for(
                &format!("CRD {name} Established"),
                Duration::from_secs(30),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let c = api.get(&name).await.ok()?;
                        let established = c
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Create namespace `name` if it does not exist.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(
            name,
            &PatchParams::apply("osroll-tests"),
            &Patch::Apply(&ns),
        )
        .await?;
        Ok(())
    }

    /// Start the Deployment/DaemonSet controllers of [`crate::workloads`] on the test
    /// API server (None on a real cluster, which has its own).
    pub fn start_workloads(&self) -> Option<crate::workloads::Workloads> {
        self.server
            .as_ref()
            .map(|_| crate::workloads::Workloads::start(self.client.clone()))
    }

    /// Start a kubelet-lite node.
    pub async fn add_node(&self, cfg: KubeletConfig) -> anyhow::Result<Kubelet> {
        Kubelet::start(self.client.clone(), cfg).await
    }
}

/// Run a prepared `kubectl` command with `args`, feeding `stdin` if given.
pub async fn run_kubectl(
    mut cmd: tokio::process::Command,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<KubectlOutput> {
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().context("starting kubectl (is it on PATH?)")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = child.wait_with_output().await?;
    Ok(KubectlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Poll `check` every 50 ms until it returns `Some`, failing after `timeout` with an
/// error naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
