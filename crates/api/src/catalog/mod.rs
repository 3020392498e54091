//! The image catalog: its YAML model, whole-catalog validation and version resolution.
//!
//! A catalog lists images (`version`, `url`, `checksum`, expanded `size`, and optionally
//! `osVersionManagement` and `rebootRequired`), an optional
//! `stable` alias and `blocked` versions. [`Catalog::parse`] never guesses: every entry
//! that is malformed becomes a [`CatalogProblem`] naming the entry and field, and the
//! rest of the catalog stays usable. [`Catalog::resolve`] turns a requested version into
//! an image or a [`Rejection`] with a machine-readable reason and a message naming the
//! offending value. Problems in entries other than the target are returned as warnings.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::delta::ImageIndex;
use crate::progress::ImageRef;
use crate::version::{Version, VersionError};

/// ConfigMap key holding a catalog (`spec.catalog.configMap`).
pub const CONFIG_MAP_KEY: &str = "catalog.yaml";
/// ConfigMap key holding its detached signature.
pub const CONFIG_MAP_SIGNATURE_KEY: &str = "catalog.yaml.minisig";

/// A parsed catalog, with every problem found in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// The `stable` alias, as written.
    pub stable: Option<String>,
    /// Image entries in catalog order; entries that could not be read at all are absent
    /// here and present in `problems`.
    pub images: Vec<CatalogImage>,
    /// Blocked versions, as written.
    pub blocked: Vec<String>,
    /// Everything wrong with the catalog, in document order.
    pub problems: Vec<CatalogProblem>,
}

/// One image entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogImage {
    /// Position in `images[]`.
    pub index: usize,
    /// OS version.
    pub version: String,
    /// Download URL.
    pub url: String,
    /// `sha256:<64 hex>` of the served bytes.
    pub checksum: String,
    /// Expanded size in bytes.
    pub size: Option<u64>,
    /// What a deployment backend installs besides the URL: the OSTree reference, the OS
    /// plugin's payload. Signed with the rest of the entry, so it cannot be overridden.
    pub os_version_management: Option<serde_json::Value>,
    /// `rebootRequired`: whether applying this image needs a reboot (`false`: an OSTree
    /// deployment is switched live). Signed with the entry; it wins over the OSUpgrade's
    /// `osVersionManagement`.
    pub reboot_required: Option<bool>,
    /// `chunkIndex`: the chunk index of the packed image (URL and checksum), which lets a
    /// node install by delta. Signed with the entry, so the index is covered too.
    pub chunk_index: Option<ImageIndex>,
}

/// Something wrong with one part of a catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogProblem {
    /// Where: `images[3].checksum`, `stable`, `blocked[0]`.
    pub field: String,
    /// The image entry's index, when the problem is inside one.
    pub index: Option<usize>,
    /// The entry's version, when known.
    pub version: Option<String>,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl fmt::Display for CatalogProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} ({v}): {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Why a requested version cannot be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionReason {
    /// The catalog text is not a catalog at all (YAML error, unknown top-level key).
    CatalogInvalid,
    /// The catalog could not be fetched (set by the controller, not by resolution).
    CatalogUnavailable,
    /// `stable` was requested and the catalog has no usable `stable`.
    StableNotDefined,
    /// The requested version is not a version string.
    VersionInvalid,
    /// No image in the catalog has the requested version.
    VersionNotInCatalog,
    /// The requested version is listed in `blocked`.
    VersionBlocked,
    /// The target's own entry is malformed.
    InvalidImageEntry,
    /// More than one entry has the target version.
    DuplicateVersion,
    /// The target is older than a selected node's current version.
    Downgrade,
    /// Signed catalogs are required and this one has no signature.
    SignatureMissing,
    /// The signature is malformed or does not match the catalog bytes.
    SignatureInvalid,
    /// The signature was made by a key the controller does not trust.
    UnknownSigningKey,
    /// The target image's URL breaks the image source policy.
    ImageSourceNotAllowed,
    /// The signed catalog's expiry has passed (a frozen catalog).
    CatalogExpired,
    /// The signed catalog's serial is older than the newest one accepted (a rollback).
    CatalogRolledBack,
    /// Signed catalogs are required and the signature carries no serial and expiry.
    CatalogFreshnessMissing,
    /// The catalog is larger than [`MAX_CATALOG_BYTES`] or lists more than
    /// [`MAX_CATALOG_IMAGES`] images.
    CatalogTooLarge,
}

impl RejectionReason {
    /// CamelCase name for `status.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CatalogInvalid => "CatalogInvalid",
            Self::CatalogUnavailable => "CatalogUnavailable",
            Self::StableNotDefined => "StableNotDefined",
            Self::VersionInvalid => "VersionInvalid",
            Self::VersionNotInCatalog => "VersionNotInCatalog",
            Self::VersionBlocked => "VersionBlocked",
            Self::InvalidImageEntry => "InvalidImageEntry",
            Self::DuplicateVersion => "DuplicateVersion",
            Self::Downgrade => "Downgrade",
            Self::SignatureMissing => "SignatureMissing",
            Self::SignatureInvalid => "SignatureInvalid",
            Self::UnknownSigningKey => "UnknownSigningKey",
            Self::ImageSourceNotAllowed => "ImageSourceNotAllowed",
            Self::CatalogExpired => "CatalogExpired",
            Self::CatalogRolledBack => "CatalogRolledBack",
            Self::CatalogFreshnessMissing => "CatalogFreshnessMissing",
            Self::CatalogTooLarge => "CatalogTooLarge",
        }
    }
}

/// A refused request: a reason for machines and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct Rejection {
    /// Machine-readable cause.
    pub reason: RejectionReason,
    /// Names the offending value.
    pub message: String,
}

impl Rejection {
    fn new(reason: RejectionReason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// A successful resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The image to install.
    pub image: ImageRef,
    /// The entry's `osVersionManagement`, when it carries one.
    pub os_version_management: Option<serde_json::Value>,
    /// Problems elsewhere in the catalog that did not block this target.
    pub warnings: Vec<CatalogProblem>,
}

/// One selected node's current version, for the downgrade rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeVersion {
    /// Node name.
    pub node: String,
    /// Version it runs, if known.
    pub version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    stable: Option<serde_yaml::Value>,
    #[serde(default)]
    images: Vec<serde_yaml::Value>,
    #[serde(default)]
    blocked: Vec<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(default)]
    version: Option<serde_yaml::Value>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "osVersionManagement")]
    os_version_management: Option<serde_json::Value>,
    #[serde(default, rename = "rebootRequired")]
    reboot_required: Option<serde_yaml::Value>,
    #[serde(default, rename = "chunkIndex")]
    chunk_index: Option<RawIndex>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
}

/// Largest catalog text accepted anywhere (controller, agent, `osroll catalog`), checked
/// before parsing: parsing costs memory in proportion to the text.
pub const MAX_CATALOG_BYTES: usize = 1 << 20;
/// Most image entries a catalog may list.
pub const MAX_CATALOG_IMAGES: usize = 10_000;

/// `sha256:<hex>` of catalog bytes, recorded in status so a resolution can be traced to
/// the exact catalog it came from.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `s` is `sha256:` followed by 64 lower-case hex digits.
pub fn is_valid_checksum(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Why a catalog value that should be a version string is not one.
#[derive(Debug, thiserror::Error)]
enum VersionFieldError {
    #[error(
        "{0} is a number, not a string; quote versions in YAML (\"{0}\") so digits such as leading zeros are kept"
    )]
    Number(serde_yaml::Number),
    #[error("expected a string, found {0}")]
    NotAString(&'static str),
    #[error(transparent)]
    Version(#[from] VersionError),
}

fn scalar_string(v: &serde_yaml::Value) -> Result<String, VersionFieldError> {
    match v {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Err(VersionFieldError::Number(n.clone())),
        other => Err(VersionFieldError::NotAString(yaml_kind(other))),
    }
}

/// A string that also parses as a [`Version`] (`stable`, `blocked[]`).
fn version_string(v: &serde_yaml::Value) -> Result<String, VersionFieldError> {
    let s = scalar_string(v)?;
    s.parse::<Version>()?;
    Ok(s)
}

fn yaml_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "null",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

impl CatalogProblem {
    /// A problem with a top-level field (`stable`, `blocked[0]`).
    fn top_level(field: impl Into<String>, message: impl ToString) -> Self {
        CatalogProblem {
            field: field.into(),
            index: None,
            version: None,
            message: message.to_string(),
        }
    }

    /// A problem with `images[index]` itself (`part` empty) or one of its fields
    /// (`part` = `.url`).
    fn in_image(index: usize, part: &str, version: Option<&str>, message: impl ToString) -> Self {
        CatalogProblem {
            field: format!("images[{index}]{part}"),
            index: Some(index),
            version: version.map(String::from),
            message: message.to_string(),
        }
    }
}

impl Catalog {
    /// Parse catalog YAML. Fails only when the document as a whole is not a catalog;
    /// problems inside entries are collected in [`Catalog::problems`].
    pub fn parse(text: &str) -> Result<Catalog, Rejection> {
        if text.len() > MAX_CATALOG_BYTES {
            return Err(Rejection::new(
                RejectionReason::CatalogTooLarge,
                format!(
                    "catalog is above the limit of {MAX_CATALOG_BYTES} bytes (1 MiB): {} bytes read",
                    text.len()
                ),
            ));
        }
        let raw: RawCatalog = serde_yaml::from_str(text).map_err(|e| {
            Rejection::new(
                RejectionReason::CatalogInvalid,
                format!("catalog is not valid: {e}"),
            )
        })?;
        if raw.images.len() > MAX_CATALOG_IMAGES {
            return Err(Rejection::new(
                RejectionReason::CatalogTooLarge,
                format!(
                    "catalog lists {} images, above the limit of {MAX_CATALOG_IMAGES}",
                    raw.images.len()
                ),
            ));
        }
        let mut cat = Catalog::default();
        if let Some(stable) = &raw.stable {
            match version_string(stable) {
                Ok(s) => cat.stable = Some(s),
                Err(e) => cat.problems.push(CatalogProblem::top_level("stable", e)),
            }
        }
        for (i, b) in raw.blocked.iter().enumerate() {
            match version_string(b) {
                Ok(s) => cat.blocked.push(s),
                Err(e) => cat
                    .problems
                    .push(CatalogProblem::top_level(format!("blocked[{i}]"), e)),
            }
        }
        for (i, value) in raw.images.iter().enumerate() {
            if let Some(image) = read_image(i, value, &mut cat.problems) {
                cat.images.push(image);
            }
        }
        cat.find_duplicates();
        cat.problems.sort_by_key(|p| p.index.unwrap_or(usize::MAX));
        if let Some(stable) = &cat.stable
            && cat.entries_for(stable).is_empty()
        {
            let message = format!("stable version {stable:?} has no entry in images");
            cat.problems
                .push(CatalogProblem::top_level("stable", message));
        }
        Ok(cat)
    }

    /// Report every entry whose version an earlier entry already has, in entry order
    /// (one pass: the first entry of each version is remembered by its version).
    fn find_duplicates(&mut self) {
        let mut first_with: HashMap<Version, usize> = HashMap::with_capacity(self.images.len());
        for img in &self.images {
            let Ok(version) = img.version.parse::<Version>() else {
                continue;
            };
            let first = *first_with.entry(version).or_insert(img.index);
            if first != img.index {
                let message = format!(
                    "duplicate version {:?}: images[{first}] has it already",
                    img.version
                );
                self.problems.push(CatalogProblem::in_image(
                    img.index,
                    ".version",
                    Some(&img.version),
                    message,
                ));
            }
        }
    }

    /// Image entries whose version equals `version` (by version ordering).
    pub fn entries_for(&self, version: &str) -> Vec<&CatalogImage> {
        let Ok(want) = version.parse::<Version>() else {
            return Vec::new();
        };
        self.images
            .iter()
            .filter(|i| i.version.parse::<Version>().ok().as_ref() == Some(&want))
            .collect()
    }

    /// Resolve `requested` (a version or `stable`) for nodes currently at `nodes`.
    pub fn resolve(
        &self,
        requested: &str,
        nodes: &[NodeVersion],
        allow_downgrade: bool,
    ) -> Result<Resolution, Rejection> {
        let target_str = self.target_of(requested)?;
        let target: Version = target_str.parse().map_err(|e: VersionError| {
            Rejection::new(RejectionReason::VersionInvalid, e.to_string())
        })?;
        self.check_not_blocked(&target, &target_str)?;
        let entry = self.only_entry(&target_str)?;
        self.check_entry_sound(entry)?;
        if !allow_downgrade {
            check_no_downgrade(nodes, &target, &target_str)?;
        }
        Ok(Resolution {
            image: ImageRef {
                version: entry.version.clone(),
                url: entry.url.clone(),
                checksum: entry.checksum.clone(),
                size: entry.size,
                reboot_required: entry.reboot_required,
                chunk_index: entry.chunk_index.clone(),
            },
            os_version_management: entry.os_version_management.clone(),
            warnings: self
                .problems
                .iter()
                .filter(|p| p.index != Some(entry.index))
                .cloned()
                .collect(),
        })
    }

    /// The version `requested` names: itself, or the catalog's `stable`.
    fn target_of(&self, requested: &str) -> Result<String, Rejection> {
        if requested != "stable" {
            return Ok(requested.to_string());
        }
        if let Some(s) = &self.stable {
            return Ok(s.clone());
        }
        let message = match self.problems.iter().find(|p| p.field == "stable") {
            Some(p) => format!(
                "version \"stable\" requested but the catalog's stable is unusable: {}",
                p.message
            ),
            None => "version \"stable\" requested but the catalog defines no stable version".into(),
        };
        Err(Rejection::new(RejectionReason::StableNotDefined, message))
    }

    fn check_not_blocked(&self, target: &Version, target_str: &str) -> Result<(), Rejection> {
        match self
            .blocked
            .iter()
            .find(|b| b.parse::<Version>().ok().as_ref() == Some(target))
        {
            Some(b) => Err(Rejection::new(
                RejectionReason::VersionBlocked,
                format!("version {target_str:?} is blocked by the catalog (blocked entry {b:?})"),
            )),
            None => Ok(()),
        }
    }

    /// The one entry with the target version: none or several are rejections.
    fn only_entry(&self, target_str: &str) -> Result<&CatalogImage, Rejection> {
        match self.entries_for(target_str).as_slice() {
            [] => {
                let known: Vec<&str> = self.images.iter().map(|i| i.version.as_str()).collect();
                Err(Rejection::new(
                    RejectionReason::VersionNotInCatalog,
                    format!(
                        "version {target_str:?} is not in the catalog (it lists: {})",
                        known.join(", ")
                    ),
                ))
            }
            [one] => Ok(one),
            many => {
                let at: Vec<String> = many
                    .iter()
                    .map(|e| format!("images[{}]", e.index))
                    .collect();
                Err(Rejection::new(
                    RejectionReason::DuplicateVersion,
                    format!(
                        "version {target_str:?} appears more than once: {}",
                        at.join(", ")
                    ),
                ))
            }
        }
    }

    /// The target's own entry must have no problems.
    fn check_entry_sound(&self, entry: &CatalogImage) -> Result<(), Rejection> {
        let own: Vec<String> = self
            .problems
            .iter()
            .filter(|p| p.index == Some(entry.index))
            .map(|p| p.to_string())
            .collect();
        if own.is_empty() {
            Ok(())
        } else {
            Err(Rejection::new(
                RejectionReason::InvalidImageEntry,
                own.join("; "),
            ))
        }
    }
}

/// Read `images[i]`; its problems go to `problems`. `None` when the entry has no usable
/// version string at all (then nothing else about it is worth reporting).
fn read_image(
    i: usize,
    value: &serde_yaml::Value,
    problems: &mut Vec<CatalogProblem>,
) -> Option<CatalogImage> {
    let entry: RawImage = match serde_yaml::from_value(value.clone()) {
        Ok(e) => e,
        Err(e) => {
            let version = value.get("version").and_then(|v| v.as_str());
            let message = format!("malformed entry: {e}");
            problems.push(CatalogProblem::in_image(i, "", version, message));
            return None;
        }
    };
    let version = match entry.version.as_ref().map(scalar_string) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            problems.push(CatalogProblem::in_image(i, ".version", None, e));
            return None;
        }
        None => {
            problems.push(CatalogProblem::in_image(i, ".version", None, "missing"));
            return None;
        }
    };
    let v = Some(version.as_str());
    if let Err(e) = version.parse::<Version>() {
        problems.push(CatalogProblem::in_image(i, ".version", v, e));
    }
    let url = entry.url.unwrap_or_default();
    if let Some(msg) = url_problem(&url) {
        problems.push(CatalogProblem::in_image(i, ".url", v, msg));
    }
    let checksum = entry.checksum.unwrap_or_default();
    if !is_valid_checksum(&checksum) {
        let msg = format!("{checksum:?} is not sha256:<64 lower-case hex digits>");
        problems.push(CatalogProblem::in_image(i, ".checksum", v, msg));
    }
    if entry.size == Some(0) {
        let msg = "size must be greater than 0";
        problems.push(CatalogProblem::in_image(i, ".size", v, msg));
    }
    let os_version_management = entry.os_version_management;
    if os_version_management
        .as_ref()
        .is_some_and(|o| !o.is_object())
    {
        let msg = "osVersionManagement must be a mapping";
        problems.push(CatalogProblem::in_image(i, ".osVersionManagement", v, msg));
    }
    let reboot_required = match entry.reboot_required {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::Bool(b)) => Some(b),
        Some(other) => {
            let msg = format!(
                "must be true or false, found {}",
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            );
            problems.push(CatalogProblem::in_image(i, ".rebootRequired", v, msg));
            None
        }
    };
    let chunk_index = entry
        .chunk_index
        .and_then(|raw| chunk_index(raw, i, v, problems));
    Some(CatalogImage {
        index: i,
        version,
        url,
        checksum,
        size: entry.size,
        os_version_management,
        reboot_required,
        chunk_index,
    })
}

/// An entry's `chunkIndex`, when its URL and checksum are sound (else a problem each).
fn chunk_index(
    raw: RawIndex,
    i: usize,
    v: Option<&str>,
    problems: &mut Vec<CatalogProblem>,
) -> Option<ImageIndex> {
    let url = raw.url.unwrap_or_default();
    let checksum = raw.checksum.unwrap_or_default();
    let before = problems.len();
    if let Some(msg) = url_problem(&url) {
        problems.push(CatalogProblem::in_image(i, ".chunkIndex.url", v, msg));
    }
    if !is_valid_checksum(&checksum) {
        let msg = format!("{checksum:?} is not sha256:<64 lower-case hex digits>");
        problems.push(CatalogProblem::in_image(i, ".chunkIndex.checksum", v, msg));
    }
    (problems.len() == before).then_some(ImageIndex { url, checksum })
}

/// No selected node may run a newer version than the target.
fn check_no_downgrade(
    nodes: &[NodeVersion],
    target: &Version,
    target_str: &str,
) -> Result<(), Rejection> {
    let newer: Vec<&NodeVersion> = nodes
        .iter()
        .filter(|n| {
            n.version
                .as_deref()
                .and_then(|v| v.parse::<Version>().ok())
                .is_some_and(|v| v > *target)
        })
        .collect();
    let Some(first) = newer.first() else {
        return Ok(());
    };
    let more = match newer.len() {
        1 => String::new(),
        n => format!(" and {} more node(s)", n - 1),
    };
    Err(Rejection::new(
        RejectionReason::Downgrade,
        format!(
            "target {target_str:?} is older than {:?} running on node {}{more}; set allowDowngrade to permit",
            first.version.as_deref().unwrap_or_default(),
            first.node
        ),
    ))
}

fn url_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("missing".into());
    }
    match url::Url::parse(s) {
        Err(e) => Some(format!("{s:?} is not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "{s:?} uses scheme {:?}; only https and http are supported",
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("{s:?} has no host")),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests;
