//! The test API server: a stand-in for kube-apiserver in tests and demos, never a
//! deployment target. It speaks HTTPS on 127.0.0.1 with a throwaway CA, runs on its own
//! thread (so a test may block on a `kubectl` child process without starving it), and
//! serves the subset of the Kubernetes API described in `crates/sim/README.md`.

pub mod admission;
pub mod apply;
pub mod audit;
pub mod collector;
pub mod control_loop;
pub mod crd;
pub mod delete;
pub mod discovery;
pub mod error;
pub mod events;
pub mod eviction;
pub mod gc;
pub mod jsonpath;
pub mod node_lifecycle;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod router;
pub mod selectors;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;
pub mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::sync::watch as tokio_watch;

pub use audit::AuditEntry;
use store::Store;

/// Tunables of a [`TestServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How many change events are kept for watches to resume from; older
    /// resourceVersions get 410 Gone.
    pub history: usize,
    /// Answer 403 to requests the stored RBAC objects do not allow (the admin user of
    /// [`TestServer::kubeconfig`] is exempt; kubelets get what the Node authorizer
    /// gives them), as a real cluster does. On by default; off only for benchmarks that
    /// measure the server without it.
    pub enforce_rbac: bool,
    /// How long after a removal (or an Orphan or Foreground deletion) the garbage
    /// collector acts on it: the moment a real collector takes to hear of the change.
    pub gc_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bookmark_interval: Duration::from_secs(5),
            history: 20_000,
            enforce_rbac: true,
            gc_delay: Duration::from_millis(100),
        }
    }
}

/// State shared by all request handlers.
pub struct App {
    /// All objects.
    pub store: Mutex<Store>,
    /// The latest resourceVersion, for waking watchers.
    pub head: tokio_watch::Sender<u64>,
    /// Set to true on shutdown.
    pub shutdown: tokio_watch::Sender<bool>,
    /// Tunables.
    pub config: ServerConfig,
    /// Identities and the audit log.
    pub auth: audit::Auth,
    /// Where the server listens.
    pub addr: SocketAddr,
}

impl App {
    /// Tell watchers the store is now at resourceVersion `rv` (if it moved).
    pub fn publish(&self, rv: u64) {
        self.head.send_if_modified(|cur| {
            let changed = *cur != rv;
            *cur = rv;
            changed
        });
    }
}

/// A running test API server. Dropping it stops the server.
pub struct TestServer {
    app: Arc<App>,
    url: String,
    ca_pem: String,
    dir: tempfile::TempDir,
    admin: PathBuf,
    thread: Option<JoinHandle<()>>,
}

/// The user of [`TestServer::kubeconfig`].
pub const ADMIN: &str = "admin";

impl TestServer {
    /// Start with default settings.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(ServerConfig::default())
    }

    /// Start on a free loopback port; returns once the server accepts connections.
    pub fn start_with(config: ServerConfig) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut store = Store::new(config.history);
        seed(&mut store);
        let (head, _) = tokio_watch::channel(store.current_rv());
        let (shutdown, _) = tokio_watch::channel(false);
        let app = Arc::new(App {
            store: Mutex::new(store),
            head,
            shutdown,
            config,
            auth: audit::Auth::default(),
            addr,
        });
        let served = app.clone();
        let tls = tls::generate()?;
        let ca_pem = tls.ca_pem.clone();
        let acceptor = tls.acceptor;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::Builder::new().name(format!("osroll-sim-api-{}", addr.port())).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let mut stop = served.shutdown.subscribe();
                let router = axum::Router::new().fallback(router::handle).with_state(served.clone());
                let _ = ready_tx.send(Ok(()));
                tokio::spawn(namespace_controller(served.clone()));
                tokio::spawn(collector::garbage_collector(served.clone()));
                tokio::spawn(node_lifecycle::node_lifecycle_controller(served.clone()));
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => {
                                tokio::spawn(serve_connection(tcp, acceptor.clone(), router.clone()));
                            }
                            Err(e) => tracing::warn!(error = %e, "accepting a connection"),
                        },
                        _ = stop.changed() => break,
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(200));
        })?;
        ready_rx.recv().context("test API server thread died")??;
        let dir = tempfile::Builder::new().prefix("osroll-sim-").tempdir()?;
        let mut s = TestServer {
            app,
            url: format!("https://{addr}"),
            ca_pem,
            dir,
            admin: PathBuf::new(),
            thread: Some(thread),
        };
        s.admin = s.kubeconfig_for(ADMIN)?;
        Ok(s)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A directory removed with the server (kubeconfigs, kubectl cache).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig (user [`ADMIN`]).
    pub fn kubeconfig(&self) -> &Path {
        &self.admin
    }

    /// A fresh bearer token identifying `user`.
    pub fn token_for(&self, user: &str) -> String {
        self.app.auth.issue(user)
    }

    /// Write a kubeconfig whose token identifies `user`; each call issues a new token.
    pub fn kubeconfig_for(&self, user: &str) -> anyhow::Result<PathBuf> {
        self.write_kubeconfig(user, self.token_for(user))
    }

    /// Like [`TestServer::kubeconfig_for`] with a token bound to a pod on `node` (as a
    /// DaemonSet pod's projected service account token): the audit log records the node.
    pub fn kubeconfig_for_node(&self, user: &str, node: &str) -> anyhow::Result<PathBuf> {
        self.write_kubeconfig(user, self.app.auth.issue_bound(user, Some(node)))
    }

    fn write_kubeconfig(&self, user: &str, token: String) -> anyhow::Result<PathBuf> {
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.path().join(format!(
            "kubeconfig-{safe}-{}.yaml",
            &token[token.len() - 6..]
        ));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.url, &self.ca_pem, user, &token),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A kube-rs client as the admin user (call inside a tokio runtime).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_from_kubeconfig(&self.admin).await
    }

    /// A kube-rs client as `user`.
    pub async fn client_for(&self, user: &str) -> anyhow::Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig_for(user)?).await
    }

    /// A kube-rs client as `user` with a token bound to `node`.
    pub async fn client_for_node(&self, user: &str, node: &str) -> anyhow::Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig_for_node(user, node)?).await
    }

    /// Every request so far, in order.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.app.auth.entries()
    }

    /// Forget the audit log.
    pub fn clear_audit(&self) {
        self.app.auth.clear()
    }

    /// Drop all change history: watches from any older resourceVersion get 410 Gone.
    pub fn compact_history(&self) {
        self.app.store.lock().expect("store lock").compact();
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.app.store.lock().expect("store lock").current_rv()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.app.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Kubeconfig text for `user` with `token` against `url`, trusting `ca_pem`.
pub fn kubeconfig_yaml(url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "osroll-sim", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "osroll-sim", "context": {"cluster": "osroll-sim", "user": user, "namespace": "default"}}],
        "current-context": "osroll-sim",
    });
    serde_yaml::to_string(&v).expect("kubeconfig serializes")
}

/// kube-rs client settings from a kubeconfig file (to adjust, e.g. `default_retry`).
pub async fn config_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?,
    )
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config_from_kubeconfig(path).await?)?)
}

/// How long after a namespace's deletion started the namespace controller empties it.
const NAMESPACE_DELAY: Duration = Duration::from_millis(50);

/// Deletes the contents of terminating namespaces shortly after their deletion started,
/// as the namespace controller of a real cluster does.
async fn namespace_controller(app: Arc<App>) {
    control_loop::run(
        app,
        |store| store.next_namespace_due(NAMESPACE_DELAY),
        |store, now| store.process_terminating_namespaces(NAMESPACE_DELAY, now),
    )
    .await;
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
) {
    let stream = match acceptor.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake");
            return;
        }
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(error = %e, "connection");
    }
}

fn seed(store: &mut Store) {
    let ns = store
        .table
        .lookup("", "v1", "namespaces")
        .expect("namespaces are built in");
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut ctx = write::Ctx::internal("osroll-sim");
        store
            .create(
                &mut ctx,
                &ns,
                "v1",
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .expect("seed namespaces");
    }
}
