//! Helpers for cluster tests: one [`Cluster`] value gives a test a unique namespace and
//! name prefix ([`Scope`]), the CRDs, the generated RBAC and the agents' admission
//! policy, kube clients for the identities osroll runs as (the controller's and the
//! agents' service accounts, each kubelet as its node) and, by name, for the admin; a kubeconfig for `kubectl`, the
//! audit log and kubelet-lite nodes. It starts the in-process test API server, or, when
//! `OSROLL_E2E_KUBECONFIG` names a kubeconfig, uses that real cluster instead (then there
//! is no audit log, and the identities are impersonated by the kubeconfig's user, which
//! must be cluster-admin). Dropping a `Cluster` on a shared or real cluster deletes what
//! its instance made, also when the test failed.

pub mod cleanup;
pub mod diagnosis;
pub mod fleet;
pub mod identities;
pub mod logbook;
pub mod scope;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use osroll_api::{OSUpgrade, labels};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

pub use fleet::Fleet;
pub use scope::{INSTANCE_LABEL, Scope};

use crate::demo::node::{MachineOptions, SimNode};
use crate::kubelet::{Kubelet, KubeletConfig};
use crate::rbac::node_user;
use crate::server::{AuditEntry, ServerConfig, TestServer, client_from_kubeconfig};

/// Environment variable naming a real cluster's kubeconfig to run cluster tests against.
pub const E2E_KUBECONFIG_ENV: &str = "OSROLL_E2E_KUBECONFIG";

/// The field manager of what the harness applies.
const MANAGER: &str = "osroll-tests";

/// One test's instance on a cluster (see the module docs).
pub struct Cluster {
    admin: Client,
    kubeconfig: PathBuf,
    server: Option<Arc<TestServer>>,
    dir: tempfile::TempDir,
    scope: Scope,
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

fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("osroll-cluster-")
        .tempdir()?)
}

impl Cluster {
    /// A new instance on the test API server with default settings, or on the real
    /// cluster of `OSROLL_E2E_KUBECONFIG`: CRDs and RBAC applied, namespace created.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Like [`Cluster::start`] with server settings (ignored for a real cluster).
    pub async fn start_with(config: ServerConfig) -> anyhow::Result<Self> {
        logbook::install();
        let c = match std::env::var_os(E2E_KUBECONFIG_ENV) {
            Some(path) => {
                let kubeconfig = PathBuf::from(path);
                Cluster {
                    admin: client_from_kubeconfig(&kubeconfig).await?,
                    kubeconfig,
                    server: None,
                    dir: tempdir()?,
                    scope: Scope::random(),
                }
            }
            None => Self::sim(config).await?,
        };
        c.prepare().await?;
        Ok(c)
    }

    /// Always the in-process test API server, whatever `OSROLL_E2E_KUBECONFIG` says,
    /// and nothing applied yet (the demo and the VM tier set it up themselves).
    pub async fn sim(config: ServerConfig) -> anyhow::Result<Self> {
        let server = TestServer::start_with(config)?;
        let kubeconfig = server.kubeconfig().to_path_buf();
        let admin = server.client().await?;
        Ok(Cluster {
            admin,
            kubeconfig,
            server: Some(Arc::new(server)),
            dir: tempdir()?,
            scope: Scope::random(),
        })
    }

    /// Another instance on the same cluster (the same test API server), with its own
    /// scope: two tests sharing one cluster.
    pub async fn another(&self) -> anyhow::Result<Self> {
        let c = Cluster {
            admin: client_from_kubeconfig(&self.kubeconfig).await?,
            kubeconfig: self.kubeconfig.clone(),
            server: self.server.clone(),
            dir: tempdir()?,
            scope: Scope::random(),
        };
        c.prepare().await?;
        Ok(c)
    }

    /// CRDs, the instance's namespace and the generated RBAC for it; idempotent.
    async fn prepare(&self) -> anyhow::Result<()> {
        self.install_crds().await?;
        let ns = self.namespace();
        identities::apply(&self.admin, &identities::rbac_objects(&ns), MANAGER).await?;
        // The agents run under the policy `osroll create agent` ships.
        identities::apply(&self.admin, &identities::admission_objects(&ns), MANAGER).await?;
        let label = json!({"metadata": {"labels": {INSTANCE_LABEL: self.scope.id()}}});
        Api::<Namespace>::all(self.admin.clone())
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .with_context(|| format!("labelling namespace {ns}"))?;
        Ok(())
    }

    /// Whether this is a real cluster (`OSROLL_E2E_KUBECONFIG`).
    pub fn is_real(&self) -> bool {
        self.server.is_none()
    }

    /// This instance's names and labels.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// This instance's namespace (controller, agents' service accounts, workloads).
    pub fn namespace(&self) -> String {
        self.scope.namespace()
    }

    /// `base` made unique to this instance (see [`Scope::name`]).
    pub fn name(&self, base: &str) -> String {
        self.scope.name(base)
    }

    /// The admin kube client; for what no osroll component does (setting up workloads,
    /// checking results). osroll itself runs as [`Cluster::controller_client`] and
    /// [`Cluster::agent_client`].
    pub fn admin(&self) -> Client {
        self.admin.clone()
    }

    /// Admin client settings, to build a client with different options. Note that
    /// kube-rs retries 429 answers (e.g. evictions a budget refuses) with backoff for
    /// minutes unless `default_retry` is turned off.
    pub async fn admin_config(&self) -> anyhow::Result<kube::Config> {
        crate::server::config_from_kubeconfig(&self.kubeconfig).await
    }

    /// The admin kubeconfig, for `kubectl` and the `osroll` binaries (`KUBECONFIG`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The test API server, when not on a real cluster.
    pub fn server(&self) -> Option<&TestServer> {
        self.server.as_deref()
    }

    /// The controller's user (its service account in [`Cluster::namespace`]).
    pub fn controller_user(&self) -> String {
        identities::controller_user(&self.namespace())
    }

    /// The agents' user (their service account in [`Cluster::namespace`]).
    pub fn agent_user(&self) -> String {
        identities::agent_user(&self.namespace())
    }

    /// A client acting as the controller.
    pub async fn controller_client(&self) -> anyhow::Result<Client> {
        self.client_for(&self.controller_user()).await
    }

    /// A client acting as the agent on `node`: its service account with a token bound
    /// to a pod on `node`, as the DaemonSet's pods have.
    pub async fn agent_client(&self, node: &str) -> anyhow::Result<Client> {
        self.client_for_node(&self.agent_user(), node).await
    }

    /// A client acting as the kubelet of `node` (`system:node:<node>`).
    pub async fn kubelet_client(&self, node: &str) -> anyhow::Result<Client> {
        match &self.server {
            Some(s) => s.client_for(&node_user(node)).await,
            None => {
                let groups = ["system:nodes", "system:authenticated"];
                client_from_kubeconfig(&self.impersonating(&node_user(node), &groups, None)?).await
            }
        }
    }

    /// Settings for an in-process controller of this instance: its namespace, and only
    /// the OSUpgrades labelled with this instance.
    pub fn controller_config(&self, identity: &str) -> osroll_controller::ControllerConfig {
        osroll_controller::ControllerConfig {
            namespace: self.namespace(),
            identity: identity.into(),
            upgrade_selector: Some(self.scope.selector()),
            ..osroll_controller::ControllerConfig::default()
        }
    }

    /// An OSUpgrade named `base` (made unique) with `spec`, labelled for this
    /// instance's controller and selecting only this instance's Nodes.
    pub fn upgrade(&self, base: &str, spec: Value) -> anyhow::Result<OSUpgrade> {
        let mut up = json!({
            "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade",
            "metadata": {"name": self.name(base)},
            "spec": spec,
        });
        self.scope.scope_upgrade(&mut up);
        Ok(serde_json::from_value(up)?)
    }

    /// A kubeconfig acting as `user`: its own bearer token on the test API server, or
    /// impersonation (`as:`) of `user` on a real cluster.
    pub fn kubeconfig_for(&self, user: &str) -> anyhow::Result<PathBuf> {
        match &self.server {
            Some(s) => s.kubeconfig_for(user),
            None => self.impersonating(user, &[], None),
        }
    }

    /// A copy of the admin kubeconfig that impersonates `user` (in `groups`, with the
    /// node-name claim of a pod-bound token when `node` is given).
    fn impersonating(
        &self,
        user: &str,
        groups: &[&str],
        node: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
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
        let extra = node.map(|n| json!({ osroll_api::manifests::NODE_NAME_CLAIM: [n] }));
        for u in users.iter_mut() {
            if u.get("name").and_then(|n| n.as_str()) == Some(&user_name)
                && let Some(m) = u.get_mut("user").and_then(|x| x.as_mapping_mut())
            {
                m.insert("as".into(), user.into());
                if !groups.is_empty() {
                    m.insert("as-groups".into(), serde_yaml::to_value(groups)?);
                }
                if let Some(extra) = &extra {
                    m.insert("as-user-extra".into(), serde_yaml::to_value(extra)?);
                }
            }
        }
        let safe: String = format!("{user}-{}", node.unwrap_or_default())
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
    /// DaemonSet pod's service account token is (on a real cluster: impersonation with
    /// the node-name claim as a user extra).
    pub async fn client_for_node(&self, user: &str, node: &str) -> anyhow::Result<Client> {
        match &self.server {
            Some(s) => s.client_for_node(user, node).await,
            None => client_from_kubeconfig(&self.impersonating(user, &[], Some(node))?).await,
        }
    }

    /// Every request the test API server saw (None on a real cluster). Sim-only:
    /// tests keep a real-cluster equivalent (`kubectl auth can-i`, watching objects).
    pub fn audit(&self) -> Option<Vec<AuditEntry>> {
        self.server.as_deref().map(TestServer::audit)
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

    /// A `kubectl` command set up for this cluster as the admin, in this instance's
    /// namespace unless the arguments name another.
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

    /// Run `kubectl args...` as the admin to completion, feeding `stdin` if given.
    pub async fn kubectl_run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<KubectlOutput> {
        run_kubectl(self.kubectl(), args, stdin).await
    }

    /// Apply the osroll CRDs and wait until they are Established (idempotent).
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.admin.clone());
        for crd in osroll_api::crd::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let mut crd = crd;
            crd.metadata.managed_fields = None;
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
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

    /// Create namespace `name` if it does not exist. On a shared cluster use
    /// [`Cluster::namespace`] or a name from [`Cluster::name`], which cleanup removes.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.admin.clone());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
            .await?;
        Ok(())
    }

    /// Start the Deployment/DaemonSet controllers of [`crate::workloads`] on the test
    /// API server (None on a real cluster, which has its own).
    pub fn start_workloads(&self) -> Option<crate::workloads::Workloads> {
        self.server
            .as_ref()
            .map(|_| crate::workloads::Workloads::start(self.admin.clone()))
    }

    /// Start a kubelet-lite node as its kubelet identity, labelled with this instance
    /// (name it with [`Cluster::name`]).
    pub async fn add_node(&self, cfg: KubeletConfig) -> anyhow::Result<Kubelet> {
        let client = self.kubelet_client(&cfg.name).await?;
        Kubelet::start(client, cfg.label(INSTANCE_LABEL, self.scope.id())).await
    }

    /// Start a simulated machine (kubelet-lite and the real agent) named `name` (made
    /// unique by the caller with [`Cluster::name`]) in `dir`, labelled with this
    /// instance; the kubelet acts as its node, the agent as the agent service account
    /// with a token bound to the node.
    pub async fn start_machine(
        &self,
        dir: &Path,
        name: &str,
        version: &str,
        opts: &MachineOptions,
    ) -> anyhow::Result<SimNode> {
        let agent = self.agent_client(name).await?;
        self.start_machine_as(agent, dir, name, version, opts).await
    }

    /// Like [`Cluster::start_machine`] with the agent acting through `agent`.
    pub async fn start_machine_as(
        &self,
        agent: Client,
        dir: &Path,
        name: &str,
        version: &str,
        opts: &MachineOptions,
    ) -> anyhow::Result<SimNode> {
        let kubelet = self.kubelet_client(name).await?;
        let labels = BTreeMap::from([(INSTANCE_LABEL.to_string(), self.scope.id().to_string())]);
        SimNode::start_labelled(kubelet, agent, dir, name, version, opts, labels).await
    }

    /// This instance's Nodes carrying `osroll.io/managed=true`.
    pub async fn managed_nodes(&self) -> anyhow::Result<Vec<Node>> {
        let lp = ListParams::default().labels(&format!(
            "{}=true,{}",
            labels::MANAGED,
            self.scope.selector()
        ));
        Ok(Api::<Node>::all(self.admin.clone()).list(&lp).await?.items)
    }

    /// Wait until `count` of this instance's Nodes carry `osroll.io/managed=true` (each
    /// agent labels its own).
    pub async fn wait_managed(&self, count: usize) -> anyhow::Result<()> {
        self.wait_managed_within(count, Duration::from_secs(30))
            .await
    }

    /// Like [`Cluster::wait_managed`], failing after `timeout`.
    pub async fn wait_managed_within(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_for("every agent to label its node managed", timeout, || async {
            let n = self.managed_nodes().await.ok()?.len();
            (n == count).then_some(())
        })
        .await
    }

    /// The progress objects of the OSUpgrade named `upgrade` (its full name); empty when
    /// the list fails, for polls that try again.
    pub async fn progresses_of(&self, upgrade: &str) -> Vec<osroll_api::OSUpgradeProgress> {
        let api = Api::<osroll_api::OSUpgradeProgress>::all(self.admin.clone());
        let list = api.list(&ListParams::default()).await;
        list.map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                let source = p.spec.source_ref.as_ref();
                source.is_some_and(|s| s.name == upgrade)
            })
            .collect()
    }

    /// The last log lines of this instance's agents and controller and the state of
    /// its OSUpgrades, progress objects and Nodes (see [`diagnosis`]).
    pub async fn diagnosis(&self) -> String {
        diagnosis::diagnosis(&self.admin, &self.scope).await
    }

    /// `result`, with the [`Cluster::diagnosis`] added to an error: how a cluster test
    /// says why it failed.
    pub async fn explain<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let text = self.diagnosis().await;
                Err(e.context(format!("cluster test failed; diagnosis:\n{text}")))
            }
        }
    }

    /// A span whose events the diagnosis shows as the controller `identity`'s log.
    pub fn controller_log_span(&self, identity: &str) -> tracing::Span {
        logbook::span(&format!("controller {}/{identity}", self.namespace()))
    }

    /// Delete what this instance made now (Drop does it on a shared or real cluster).
    pub async fn cleanup(&self) -> anyhow::Result<usize> {
        cleanup::delete_scope(&self.admin, &self.scope).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // An unshared test API server goes away with this value: nothing to delete.
        if self
            .server
            .as_ref()
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            return;
        }
        // Drop may run inside a runtime (and during a panic): clean up on a thread of
        // its own, with its own runtime and client.
        let kubeconfig = self.kubeconfig.clone();
        let scope = self.scope.clone();
        let done = std::thread::spawn(move || -> anyhow::Result<usize> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let admin = client_from_kubeconfig(&kubeconfig).await?;
                tokio::time::timeout(
                    Duration::from_secs(60),
                    cleanup::delete_scope(&admin, &scope),
                )
                .await?
            })
        })
        .join();
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("cleaning up test instance {}: {e:#}", self.scope.id()),
            Err(_) => eprintln!("cleaning up test instance {}: panicked", self.scope.id()),
        }
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
