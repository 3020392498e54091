//! Where an OSUpgrade's catalog comes from, and its resolution to one image.
//!
//! [`load`] reads the catalog text (and its detached signature, if any) from the inline
//! field, an HTTPS URL or a ConfigMap in the controller's namespace; [`resolve`] checks
//! the signature against the trusted keys, resolves the requested version through
//! `osroll_api::Catalog` and applies the image source policy. [`ResolutionCache`] keeps
//! an accepted resolution for the OSUpgrade's generation, so the fleet is not re-targeted
//! behind the user's back when a catalog changes mid-rollout, while a rejection is
//! retried after a while (the user may fix the catalog without touching the OSUpgrade).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use osroll_api::catalog::NodeVersion;
use osroll_api::freshness::{self, Stale};
use osroll_api::signing::TrustedKey;
use osroll_api::{
    Catalog, CatalogProblem, CatalogSource, ImageRef, OSUpgradeSpec, Rejection, RejectionReason,
    SignedCatalog,
};

use crate::chain::Chain;
use crate::cluster::Cluster;

pub use osroll_api::catalog::{CONFIG_MAP_KEY, CONFIG_MAP_SIGNATURE_KEY};
/// Largest catalog accepted (the limit every reader of catalogs applies).
pub const MAX_CATALOG_BYTES: usize = osroll_api::catalog::MAX_CATALOG_BYTES;

/// Why a catalog (or its signature) could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer: connection, TLS, timeout, a broken body.
    #[error("GET {url}")]
    Request {
        /// What was fetched.
        url: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An answer other than success or 404.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body exceeds [`MAX_CATALOG_BYTES`].
    #[error("GET {url}: catalog larger than {MAX_CATALOG_BYTES} bytes")]
    TooLarge {
        /// What was fetched.
        url: String,
    },
    /// The body is not UTF-8 text.
    #[error("GET {url}: catalog is not UTF-8")]
    NotUtf8 {
        /// What was fetched.
        url: String,
        /// Where decoding failed.
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// Why the catalog HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA bundle is not PEM certificates.
    #[error("reading the catalog CA bundle")]
    CaBundle(#[source] reqwest::Error),
    /// The TLS stack refused the configuration.
    #[error("building the catalog HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Fetches a URL's body; `Ok(None)` on 404.
pub trait UrlFetcher: Send + Sync {
    /// GET `url`.
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<String>, FetchError>>;
}

/// [`UrlFetcher`] over HTTPS with rustls.
pub struct HttpFetcher {
    client: reqwest::Client,
}

impl HttpFetcher {
    /// `allow_http` permits plain `http://` (tests and local mirrors only); `extra_ca`
    /// is a PEM bundle trusted in addition to the built-in roots.
    pub fn new(allow_http: bool, extra_ca: Option<&[u8]>) -> Result<HttpFetcher, ClientError> {
        let mut b = reqwest::Client::builder()
            .https_only(!allow_http)
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(pem) = extra_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::CaBundle)? {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(HttpFetcher {
            client: b.build().map_err(ClientError::Build)?,
        })
    }
}

impl UrlFetcher for HttpFetcher {
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<String>, FetchError>> {
        let failed = |e: reqwest::Error| FetchError::Request {
            url: url.to_string(),
            source: Box::new(e),
        };
        Box::pin(async move {
            let mut resp = self.client.get(url).send().await.map_err(failed)?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status: resp.status().as_u16(),
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(failed)? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_CATALOG_BYTES {
                    return Err(FetchError::TooLarge {
                        url: url.to_string(),
                    });
                }
            }
            String::from_utf8(body)
                .map(Some)
                .map_err(|source| FetchError::NotUtf8 {
                    url: url.to_string(),
                    source,
                })
        })
    }
}

/// Catalog text and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDoc {
    /// The YAML, byte for byte.
    pub text: String,
    /// Detached minisign signature, if any.
    pub signature: Option<String>,
    /// `inline`, the URL, or `configmap ns/name`.
    pub origin: String,
}

fn unavailable(message: String) -> Rejection {
    Rejection {
        reason: RejectionReason::CatalogUnavailable,
        message,
    }
}

/// Read the catalog named by `src`; ConfigMaps are looked up in `namespace`.
pub async fn load<C: Cluster>(
    src: &CatalogSource,
    namespace: &str,
    cluster: &C,
    fetcher: &dyn UrlFetcher,
) -> Result<CatalogDoc, Rejection> {
    exactly_one_source(src)?;
    if let Some(text) = &src.inline {
        return Ok(CatalogDoc {
            text: text.clone(),
            signature: src.signature.clone(),
            origin: "inline".into(),
        });
    }
    if let Some(url) = &src.url {
        return load_url(url, src.signature.as_ref(), fetcher).await;
    }
    let name = src.config_map.as_deref().unwrap_or_default();
    load_config_map(namespace, name, src.signature.as_ref(), cluster).await
}

fn exactly_one_source(src: &CatalogSource) -> Result<(), Rejection> {
    let set: Vec<&str> = [
        ("inline", src.inline.is_some()),
        ("url", src.url.is_some()),
        ("configMap", src.config_map.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.then_some(n))
    .collect();
    if set.len() == 1 {
        return Ok(());
    }
    let sets = if set.is_empty() {
        "none".to_string()
    } else {
        set.join(", ")
    };
    Err(Rejection {
        reason: RejectionReason::CatalogInvalid,
        message: format!(
            "spec.catalog must set exactly one of inline, url, configMap (it sets {sets})"
        ),
    })
}

/// The catalog at `url`; its signature, unless given, from `<url>.minisig` if there.
async fn load_url(
    url: &str,
    signature: Option<&String>,
    fetcher: &dyn UrlFetcher,
) -> Result<CatalogDoc, Rejection> {
    let text = fetcher
        .get(url)
        .await
        .map_err(|e| unavailable(format!("spec.catalog.url: {}", Chain(&e))))?
        .ok_or_else(|| unavailable(format!("spec.catalog.url: {url} answered 404 Not Found")))?;
    let signature = match signature {
        Some(s) => Some(s.clone()),
        None => fetcher
            .get(&format!("{url}.minisig"))
            .await
            .map_err(|e| unavailable(format!("catalog signature: {}", Chain(&e))))?,
    };
    Ok(CatalogDoc {
        text,
        signature,
        origin: url.to_string(),
    })
}

/// The catalog in ConfigMap `namespace/name`; its signature, unless given, from the
/// ConfigMap's signature key if there.
async fn load_config_map<C: Cluster>(
    namespace: &str,
    name: &str,
    signature: Option<&String>,
    cluster: &C,
) -> Result<CatalogDoc, Rejection> {
    let field = "spec.catalog.configMap";
    let cm = cluster
        .config_map(namespace, name)
        .await
        .map_err(|e| {
            unavailable(format!(
                "{field}: reading ConfigMap {namespace}/{name}: {}",
                Chain(&e)
            ))
        })?
        .ok_or_else(|| {
            unavailable(format!(
                "{field}: ConfigMap {namespace}/{name} does not exist"
            ))
        })?;
    let data = cm.data.unwrap_or_default();
    let text = data.get(CONFIG_MAP_KEY).cloned().ok_or_else(|| {
        unavailable(format!(
            "{field}: ConfigMap {namespace}/{name} has no key {CONFIG_MAP_KEY}"
        ))
    })?;
    let signature = signature
        .cloned()
        .or_else(|| data.get(CONFIG_MAP_SIGNATURE_KEY).cloned());
    Ok(CatalogDoc {
        text,
        signature,
        origin: format!("configmap {namespace}/{name}"),
    })
}

/// Which catalog signatures the controller trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// Trusted public keys.
    pub keys: Vec<TrustedKey>,
    /// Reject unsigned catalogs.
    pub require_signed: bool,
}

/// An accepted resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The image to install.
    pub image: ImageRef,
    /// The entry's `osVersionManagement`, when it carries one.
    pub os_version_management: Option<serde_json::Value>,
    /// Problems elsewhere in the catalog.
    pub warnings: Vec<CatalogProblem>,
    /// sha256 of the catalog bytes.
    pub digest: String,
    /// The catalog and signature, when verified.
    pub signed: Option<SignedCatalog>,
    /// Where the catalog came from.
    pub origin: String,
    /// The signed catalog's serial, when its signature carries one.
    pub serial: Option<u64>,
    /// The catalog's other images: what a rollback takes a node back to.
    pub earlier: Vec<ImageRef>,
}

/// The serial of a fresh signed catalog: under the requirement its trusted comment must
/// carry a serial and an expiry; otherwise they are checked when present.
pub fn fresh(
    trusted_comment: &str,
    required: bool,
    now: Timestamp,
    newest: Option<u64>,
) -> Result<Option<u64>, Rejection> {
    if !required && freshness::parse(trusted_comment).is_none() {
        return Ok(None);
    }
    freshness::check(trusted_comment, now, newest)
        .map(|f| Some(f.serial))
        .map_err(|stale| Rejection {
            reason: match stale {
                Stale::Missing(_) => RejectionReason::CatalogFreshnessMissing,
                Stale::Expired { .. } => RejectionReason::CatalogExpired,
                Stale::RolledBack { .. } => RejectionReason::CatalogRolledBack,
            },
            message: stale.to_string(),
        })
}

/// Verify, parse and resolve `doc` for `spec` and the selected nodes' versions, at
/// `now`, refusing a catalog older than the `newest` serial accepted.
pub fn resolve(
    doc: &CatalogDoc,
    spec: &OSUpgradeSpec,
    nodes: &[NodeVersion],
    trust: &TrustPolicy,
    (now, newest): (Timestamp, Option<u64>),
) -> Result<Resolved, Rejection> {
    let verified = osroll_api::signing::verify_catalog(
        doc.text.as_bytes(),
        doc.signature.as_deref(),
        &trust.keys,
        trust.require_signed,
    )?;
    let serial = match &verified {
        Some(v) => fresh(&v.trusted_comment, trust.require_signed, now, newest)?,
        None => None,
    };
    let catalog = Catalog::parse(&doc.text)?;
    let r = catalog.resolve(&spec.version, nodes, spec.allow_downgrade)?;
    let index_url = r.image.chunk_index.as_ref().map(|i| i.url.as_str());
    for url in std::iter::once(r.image.url.as_str()).chain(index_url) {
        osroll_api::policy::check_image_url(url, spec.allow_http_images).map_err(|v| {
            Rejection {
                reason: RejectionReason::ImageSourceNotAllowed,
                message: v.to_string(),
            }
        })?;
    }
    let signed = match (verified, &doc.signature) {
        (Some(_), Some(sig)) => Some(SignedCatalog {
            content: doc.text.clone(),
            signature: sig.clone(),
        }),
        _ => None,
    };
    let earlier = catalog
        .images
        .iter()
        .filter(|i| i.version != r.image.version)
        .map(|i| ImageRef {
            version: i.version.clone(),
            url: i.url.clone(),
            checksum: i.checksum.clone(),
            size: i.size,
            reboot_required: i.reboot_required,
            chunk_index: i.chunk_index.clone(),
        })
        .collect();
    Ok(Resolved {
        image: r.image,
        os_version_management: r.os_version_management,
        warnings: r.warnings,
        digest: osroll_api::catalog::digest(doc.text.as_bytes()),
        signed,
        origin: doc.origin.clone(),
        serial,
        earlier,
    })
}

struct Entry {
    generation: i64,
    at: Instant,
    result: Result<Resolved, Rejection>,
}

/// Resolutions per OSUpgrade uid and generation.
pub struct ResolutionCache {
    entries: Mutex<HashMap<String, Entry>>,
    retry_rejected: Duration,
    newest_serial: Mutex<Option<u64>>,
}

impl ResolutionCache {
    /// Rejections are looked at again after `retry_rejected`.
    pub fn new(retry_rejected: Duration) -> Self {
        ResolutionCache {
            entries: Mutex::new(HashMap::new()),
            retry_rejected,
            newest_serial: Mutex::new(None),
        }
    }

    /// The cached result for `uid` at `generation`, if still valid at `now`.
    pub fn get(
        &self,
        uid: &str,
        generation: i64,
        now: Instant,
    ) -> Option<Result<Resolved, Rejection>> {
        let m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.get(uid)?;
        let fresh = e.generation == generation
            && (e.result.is_ok() || now.duration_since(e.at) < self.retry_rejected);
        fresh.then(|| e.result.clone())
    }

    /// Whether the accepted resolution cached for `uid` is due to be checked again
    /// against the catalog (a version blocked meanwhile, an expired catalog).
    pub fn due(&self, uid: &str, now: Instant) -> bool {
        let m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.get(uid)
            .is_some_and(|e| now.duration_since(e.at) >= self.retry_rejected)
    }

    /// The newest catalog serial accepted by this controller.
    pub fn newest_serial(&self) -> Option<u64> {
        *self.newest_serial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember an accepted catalog's serial.
    pub fn accept_serial(&self, serial: Option<u64>) {
        let mut n = self.newest_serial.lock().unwrap_or_else(|e| e.into_inner());
        *n = (*n).max(serial);
    }

    /// Store a result.
    pub fn put(
        &self,
        uid: &str,
        generation: i64,
        now: Instant,
        result: Result<Resolved, Rejection>,
    ) {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(
            uid.to_string(),
            Entry {
                generation,
                at: now,
                result,
            },
        );
    }

    /// Forget a deleted OSUpgrade.
    pub fn forget(&self, uid: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// How long until a rejection is retried.
    pub fn retry_after(&self) -> Duration {
        self.retry_rejected
    }
}

#[cfg(test)]
mod tests;
