//! What a first boot installs, decided from what was read (pure): the local version
//! file, or the cluster's active OSUpgrade — the image and stamped catalog a progress of
//! it carries (what the controller handed its nodes), else its catalog text, resolved
//! here. Either way the result carries the OSUpgrade's policy (`allowHttpImages`), its
//! `kernelArguments` and, when the catalog is signed, the catalog and signature, so the
//! executor holds the first boot to the same checks as any progress.

use osroll_api::upgrade::KernelArguments;
use osroll_api::{Catalog, ImageRef, OSUpgrade, OSUpgradeProgress, SignedCatalog, UpgradePhase};
use serde::Deserialize;

/// What the node should run, and where that was read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    /// The image (for deployment backends only the version may be meaningful).
    pub image: ImageRef,
    /// Handed to an OS plugin or the OSTree backend.
    pub os_version_management: Option<serde_json::Value>,
    /// For messages: the file, or `OSUpgrade <name>`.
    pub origin: String,
    /// Whether the image may come over plain `http://` (the OSUpgrade's opt-in).
    pub allow_http_images: bool,
    /// Kernel arguments that go with the image.
    pub kernel_arguments: Option<KernelArguments>,
    /// The catalog the image comes from, with its signature, when it is signed.
    pub signed_catalog: Option<SignedCatalog>,
    /// `sha256:<hex>` of that catalog.
    pub catalog_digest: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionFile {
    version: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    checksum: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    os_version_management: Option<serde_json::Value>,
    #[serde(default)]
    allow_http_images: bool,
    #[serde(default)]
    kernel_arguments: Option<KernelArguments>,
}

/// A catalog as read for an OSUpgrade: its text and detached signature, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogText {
    /// The YAML, byte for byte.
    pub text: String,
    /// The minisign signature, when there is one.
    pub signature: Option<String>,
}

/// Why the wanted version cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum WantedError {
    /// The version file is empty.
    #[error("{origin} is empty")]
    Empty {
        /// The file.
        origin: String,
    },
    /// The version file is not a version nor a YAML/JSON object of the known fields.
    #[error("{origin}: {source}")]
    Unreadable {
        /// The file.
        origin: String,
        /// What the parser said.
        source: serde_yaml::Error,
    },
    /// The version is not a version.
    #[error("{origin}: version: {source}")]
    Version {
        /// The file or OSUpgrade.
        origin: String,
        /// Why.
        source: osroll_api::version::VersionError,
    },
    /// No OSUpgrade to follow.
    #[error("the cluster has no active OSUpgrade with a resolved version")]
    NoActiveUpgrade,
    /// The OSUpgrade's catalog does not give the image.
    #[error("{origin}: {}", source.message)]
    Catalog {
        /// The OSUpgrade.
        origin: String,
        /// Why.
        source: osroll_api::Rejection,
    },
}

/// Parse the local version file: one line with a version, or a YAML/JSON object.
pub fn parse_version_file(text: &str, origin: &str) -> Result<Wanted, WantedError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(WantedError::Empty {
            origin: origin.to_string(),
        });
    }
    let f: VersionFile = if !trimmed.contains(':') && !trimmed.contains('\n') {
        VersionFile {
            version: trimmed.to_string(),
            url: String::new(),
            checksum: String::new(),
            size: None,
            os_version_management: None,
            allow_http_images: false,
            kernel_arguments: None,
        }
    } else {
        serde_yaml::from_str(trimmed).map_err(|source| WantedError::Unreadable {
            origin: origin.to_string(),
            source,
        })?
    };
    f.version
        .parse::<osroll_api::Version>()
        .map_err(|source| WantedError::Version {
            origin: origin.to_string(),
            source,
        })?;
    Ok(Wanted {
        image: ImageRef {
            version: f.version,
            url: f.url,
            checksum: f.checksum,
            size: f.size,
            reboot_required: None,
            chunk_index: None,
        },
        os_version_management: f.os_version_management,
        origin: origin.to_string(),
        allow_http_images: f.allow_http_images,
        kernel_arguments: f.kernel_arguments,
        ..Wanted::default()
    })
}

/// The cluster's active OSUpgrade: the newest that is not rejected, failed or being
/// deleted, and has resolved a version.
pub fn active_upgrade(upgrades: &[OSUpgrade]) -> Result<&OSUpgrade, WantedError> {
    let mut active: Vec<&OSUpgrade> = upgrades
        .iter()
        .filter(|u| u.metadata.deletion_timestamp.is_none())
        .filter(|u| {
            u.status.as_ref().is_some_and(|s| {
                s.resolved_version.is_some()
                    && !matches!(s.phase, Some(UpgradePhase::Rejected | UpgradePhase::Failed))
            })
        })
        .collect();
    active.sort_by_key(|u| {
        (
            u.metadata.creation_timestamp.clone().map(|t| t.0),
            u.metadata.name.clone(),
        )
    });
    active.last().copied().ok_or(WantedError::NoActiveUpgrade)
}

fn resolved_version(up: &OSUpgrade) -> String {
    up.status
        .as_ref()
        .and_then(|s| s.resolved_version.clone())
        .unwrap_or_default()
}

fn origin(up: &OSUpgrade) -> String {
    format!(
        "OSUpgrade {}",
        up.metadata.name.as_deref().unwrap_or_default()
    )
}

/// What the controller handed `up`'s nodes: a progress of it carrying the resolved
/// image, with the catalog it stamped.
pub fn from_progress(up: &OSUpgrade, progresses: &[OSUpgradeProgress]) -> Option<Wanted> {
    let name = up.metadata.name.as_deref().unwrap_or_default();
    let version = resolved_version(up);
    let p = progresses.iter().find(|p| {
        p.spec.source_ref.as_ref().is_some_and(|s| s.name == name)
            && p.spec.image.as_ref().is_some_and(|i| i.version == version)
    })?;
    Some(Wanted {
        image: p.spec.image.clone()?,
        os_version_management: up.spec.os_version_management.clone(),
        origin: origin(up),
        allow_http_images: p.spec.allow_http_images,
        kernel_arguments: p.spec.kernel_arguments.clone(),
        signed_catalog: p.spec.signed_catalog.clone(),
        catalog_digest: p.spec.catalog_digest.clone(),
    })
}

/// `up`'s resolved version looked up in its catalog `cat` (read inline, from its URL or
/// its ConfigMap). The signature is not judged here: the executor's trust check does,
/// as for any progress.
pub fn from_catalog(up: &OSUpgrade, cat: &CatalogText) -> Result<Wanted, WantedError> {
    let catalog = |source| WantedError::Catalog {
        origin: origin(up),
        source,
    };
    let image = Catalog::parse(&cat.text)
        .map_err(catalog)?
        .resolve(&resolved_version(up), &[], true)
        .map_err(catalog)?
        .image;
    Ok(Wanted {
        image,
        os_version_management: up.spec.os_version_management.clone(),
        origin: origin(up),
        allow_http_images: up.spec.allow_http_images,
        kernel_arguments: up.spec.kernel_arguments.clone(),
        signed_catalog: cat.signature.as_ref().map(|s| SignedCatalog {
            content: cat.text.clone(),
            signature: s.clone(),
        }),
        catalog_digest: Some(osroll_api::catalog::digest(cat.text.as_bytes())),
    })
}

/// The inline catalog of `up`, if that is where its catalog is.
pub fn inline_catalog(up: &OSUpgrade) -> Option<CatalogText> {
    let src = &up.spec.catalog;
    src.inline.as_ref().map(|text| CatalogText {
        text: text.clone(),
        signature: src.signature.clone(),
    })
}
