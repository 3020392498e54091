//! Reading the wanted image from the cluster for a first boot: the active OSUpgrade,
//! then what a progress of it carries, else its catalog — inline, from its HTTPS URL
//! (and `<url>.minisig`), or from its ConfigMap in the controller's namespace (keys
//! `catalog.yaml` and `catalog.yaml.minisig`; the agent's Role allows reading
//! ConfigMaps there). The decisions are in [`super::wanted`].

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use osroll_api::catalog::{CONFIG_MAP_KEY, CONFIG_MAP_SIGNATURE_KEY};
use osroll_api::policy::check_image_url;
use osroll_api::{OSUpgrade, OSUpgradeProgress};

use super::wanted::{
    CatalogText, Wanted, active_upgrade, from_catalog, from_progress, inline_catalog,
};
use crate::install::InstallOptions;

/// Why the cluster could not say what to install.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An API call failed.
    #[error("{what}")]
    Api {
        /// The call.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The catalog could not be fetched from its URL.
    #[error("fetching the catalog {url}: {detail}")]
    Fetch {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The catalog's ConfigMap (or its key) is missing.
    #[error("ConfigMap {namespace}/{name} {what}")]
    ConfigMap {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// `does not exist`, `has no key catalog.yaml`.
        what: String,
    },
    /// The catalog gives no image, or no OSUpgrade is active.
    #[error(transparent)]
    Wanted(#[from] super::wanted::WantedError),
}

fn api(what: &str) -> impl FnOnce(kube::Error) -> ClusterError + '_ {
    move |source| ClusterError::Api {
        what: what.to_string(),
        source,
    }
}

/// What the cluster's active OSUpgrade wants on this node. ConfigMap catalogs are read
/// in `namespace`; catalog URLs are fetched with the installer's TLS settings `tls`.
pub async fn wanted_from_api(
    client: kube::Client,
    namespace: &str,
    tls: &InstallOptions,
) -> Result<Wanted, ClusterError> {
    let ups = Api::<OSUpgrade>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api("listing OSUpgrades"))?
        .items;
    let up = active_upgrade(&ups)?;
    let progresses = Api::<OSUpgradeProgress>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api("listing OSUpgradeProgresses"))?
        .items;
    if let Some(w) = from_progress(up, &progresses) {
        return Ok(w);
    }
    let src = &up.spec.catalog;
    let cat = match (inline_catalog(up), &src.url, &src.config_map) {
        (Some(c), _, _) => c,
        (None, Some(url), _) => {
            let mut c = fetch_url(url, up.spec.allow_http_images, tls).await?;
            c.signature = src.signature.clone().or(c.signature);
            c
        }
        (None, None, Some(name)) => {
            let mut c = read_config_map(client, namespace, name).await?;
            c.signature = src.signature.clone().or(c.signature);
            c
        }
        (None, None, None) => CatalogText::default(),
    };
    Ok(from_catalog(up, &cat)?)
}

async fn read_config_map(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<CatalogText, ClusterError> {
    let what = format!("reading ConfigMap {namespace}/{name}");
    let missing = |what: &str| ClusterError::ConfigMap {
        namespace: namespace.to_string(),
        name: name.to_string(),
        what: what.to_string(),
    };
    let cm = Api::<ConfigMap>::namespaced(client, namespace)
        .get_opt(name)
        .await
        .map_err(api(&what))?
        .ok_or_else(|| missing("does not exist"))?;
    let mut data = cm.data.unwrap_or_default();
    let text = data
        .remove(CONFIG_MAP_KEY)
        .ok_or_else(|| missing(&format!("has no key {CONFIG_MAP_KEY}")))?;
    Ok(CatalogText {
        text,
        signature: data.remove(CONFIG_MAP_SIGNATURE_KEY),
    })
}

/// The catalog at `url` and, if served, `<url>.minisig`; the URL follows the image
/// source policy (https, or http with the OSUpgrade's `allowHttpImages`).
async fn fetch_url(
    url: &str,
    allow_http: bool,
    tls: &InstallOptions,
) -> Result<CatalogText, ClusterError> {
    let fail = |detail: String| ClusterError::Fetch {
        url: url.to_string(),
        detail,
    };
    check_image_url(url, allow_http).map_err(|v| fail(v.why.to_string()))?;
    let client = crate::install::http::client(tls).map_err(|e| fail(e.to_string()))?;
    let text = get(&client, url)
        .await?
        .ok_or_else(|| fail("404 Not Found".into()))?;
    let signature = get(&client, &format!("{url}.minisig")).await?;
    Ok(CatalogText { text, signature })
}

/// Largest catalog (or signature) read from a URL: the limit every reader applies.
const MAX_CATALOG_BYTES: usize = osroll_api::catalog::MAX_CATALOG_BYTES;

/// The body at `url` as text, `None` on 404; read up to [`MAX_CATALOG_BYTES`].
async fn get(client: &reqwest::Client, url: &str) -> Result<Option<String>, ClusterError> {
    let fail = |detail: String| ClusterError::Fetch {
        url: url.to_string(),
        detail,
    };
    let chain = |e: reqwest::Error| fail(crate::install::http::error_chain(&e));
    let resp = client.get(url).send().await.map_err(chain)?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let mut resp = resp.error_for_status().map_err(chain)?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(chain)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CATALOG_BYTES {
            return Err(fail(format!("larger than {MAX_CATALOG_BYTES} bytes")));
        }
    }
    String::from_utf8(body)
        .map(Some)
        .map_err(|e| fail(format!("not UTF-8: {e}")))
}
