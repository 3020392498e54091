//! The image catalog: its YAML model, whole-catalog validation and version resolution.
//!
//! A catalog lists images (`version`, `url`, `checksum`, expanded `size`), an optional
//! `stable` alias and `blocked` versions. [`Catalog::parse`] never guesses: every entry
//! that is malformed becomes a [`CatalogProblem`] naming the entry and field, and the
//! rest of the catalog stays usable. [`Catalog::resolve`] turns a requested version into
//! an image or a [`Rejection`] with a machine-readable reason and a message naming the
//! offending value. Problems in entries other than the target are returned as warnings.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::progress::ImageRef;
use crate::version::Version;

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
}

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

fn scalar_string(v: &serde_yaml::Value) -> Result<String, String> {
    match v {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Err(format!(
            "{n} is a number, not a string; quote versions in YAML (\"{n}\") so digits such as leading zeros are kept"
        )),
        other => Err(format!("expected a string, found {}", yaml_kind(other))),
    }
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

impl Catalog {
    /// Parse catalog YAML. Fails only when the document as a whole is not a catalog;
    /// problems inside entries are collected in [`Catalog::problems`].
    pub fn parse(text: &str) -> Result<Catalog, Rejection> {
        let raw: RawCatalog = serde_yaml::from_str(text).map_err(|e| {
            Rejection::new(
                RejectionReason::CatalogInvalid,
                format!("catalog is not valid: {e}"),
            )
        })?;
        let mut cat = Catalog::default();
        let mut problem = |field: String, index, version: Option<String>, message: String| {
            cat.problems.push(CatalogProblem {
                field,
                index,
                version,
                message,
            })
        };
        if let Some(stable) = &raw.stable {
            match scalar_string(stable) {
                Ok(s) => match s.parse::<Version>() {
                    Ok(_) => cat.stable = Some(s),
                    Err(e) => problem("stable".into(), None, None, e.to_string()),
                },
                Err(e) => problem("stable".into(), None, None, e),
            }
        }
        for (i, b) in raw.blocked.iter().enumerate() {
            match scalar_string(b)
                .and_then(|s| s.parse::<Version>().map(|_| s).map_err(|e| e.to_string()))
            {
                Ok(s) => cat.blocked.push(s),
                Err(e) => problem(format!("blocked[{i}]"), None, None, e),
            }
        }
        for (i, value) in raw.images.iter().enumerate() {
            let entry: RawImage = match serde_yaml::from_value(value.clone()) {
                Ok(e) => e,
                Err(e) => {
                    let version = value
                        .get("version")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                    problem(
                        format!("images[{i}]"),
                        Some(i),
                        version,
                        format!("malformed entry: {e}"),
                    );
                    continue;
                }
            };
            let version = match entry.version.as_ref().map(scalar_string) {
                Some(Ok(v)) => {
                    if let Err(e) = v.parse::<Version>() {
                        problem(
                            format!("images[{i}].version"),
                            Some(i),
                            Some(v.clone()),
                            e.to_string(),
                        );
                    }
                    v
                }
                Some(Err(e)) => {
                    problem(format!("images[{i}].version"), Some(i), None, e);
                    continue;
                }
                None => {
                    problem(
                        format!("images[{i}].version"),
                        Some(i),
                        None,
                        "missing".into(),
                    );
                    continue;
                }
            };
            let v = Some(version.clone());
            let url = entry.url.unwrap_or_default();
            if let Some(msg) = url_problem(&url) {
                problem(format!("images[{i}].url"), Some(i), v.clone(), msg);
            }
            let checksum = entry.checksum.unwrap_or_default();
            if !is_valid_checksum(&checksum) {
                problem(
                    format!("images[{i}].checksum"),
                    Some(i),
                    v.clone(),
                    format!("{checksum:?} is not sha256:<64 lower-case hex digits>"),
                );
            }
            if entry.size == Some(0) {
                problem(
                    format!("images[{i}].size"),
                    Some(i),
                    v.clone(),
                    "size must be greater than 0".into(),
                );
            }
            cat.images.push(CatalogImage {
                index: i,
                version,
                url,
                checksum,
                size: entry.size,
            });
        }
        cat.find_duplicates();
        if let Some(stable) = &cat.stable
            && cat.entries_for(stable).is_empty()
        {
            cat.problems.push(CatalogProblem {
                field: "stable".into(),
                index: None,
                version: None,
                message: format!("stable version {stable:?} has no entry in images"),
            });
        }
        Ok(cat)
    }

    fn find_duplicates(&mut self) {
        let parsed: Vec<Option<Version>> =
            self.images.iter().map(|i| i.version.parse().ok()).collect();
        for (a, img) in self.images.iter().enumerate() {
            let Some(va) = &parsed[a] else { continue };
            let first = parsed
                .iter()
                .position(|p| p.as_ref() == Some(va))
                .unwrap_or(a);
            if first != a {
                self.problems.push(CatalogProblem {
                    field: format!("images[{}].version", img.index),
                    index: Some(img.index),
                    version: Some(img.version.clone()),
                    message: format!(
                        "duplicate version {:?}: images[{}] has it already",
                        img.version, self.images[first].index
                    ),
                });
            }
        }
        self.problems.sort_by_key(|p| p.index.unwrap_or(usize::MAX));
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
        use RejectionReason::*;
        let target_str = if requested == "stable" {
            match &self.stable {
                Some(s) => s.clone(),
                None => {
                    let why = self.problems.iter().find(|p| p.field == "stable");
                    return Err(Rejection::new(
                        StableNotDefined,
                        match why {
                            Some(p) => format!("version \"stable\" requested but the catalog's stable is unusable: {}", p.message),
                            None => "version \"stable\" requested but the catalog defines no stable version".into(),
                        },
                    ));
                }
            }
        } else {
            requested.to_string()
        };
        let target: Version = target_str
            .parse()
            .map_err(|e: crate::version::VersionError| {
                Rejection::new(VersionInvalid, e.to_string())
            })?;
        if let Some(b) = self
            .blocked
            .iter()
            .find(|b| b.parse::<Version>().ok().as_ref() == Some(&target))
        {
            return Err(Rejection::new(
                VersionBlocked,
                format!("version {target_str:?} is blocked by the catalog (blocked entry {b:?})"),
            ));
        }
        let entries = self.entries_for(&target_str);
        let entry = match entries.as_slice() {
            [] => {
                let known: Vec<&str> = self.images.iter().map(|i| i.version.as_str()).collect();
                return Err(Rejection::new(
                    VersionNotInCatalog,
                    format!(
                        "version {target_str:?} is not in the catalog (it lists: {})",
                        known.join(", ")
                    ),
                ));
            }
            [one] => *one,
            many => {
                let at: Vec<String> = many
                    .iter()
                    .map(|e| format!("images[{}]", e.index))
                    .collect();
                return Err(Rejection::new(
                    DuplicateVersion,
                    format!(
                        "version {target_str:?} appears more than once: {}",
                        at.join(", ")
                    ),
                ));
            }
        };
        let own: Vec<String> = self
            .problems
            .iter()
            .filter(|p| p.index == Some(entry.index))
            .map(|p| p.to_string())
            .collect();
        if !own.is_empty() {
            return Err(Rejection::new(InvalidImageEntry, own.join("; ")));
        }
        if !allow_downgrade {
            let newer: Vec<&NodeVersion> = nodes
                .iter()
                .filter(|n| {
                    n.version
                        .as_deref()
                        .and_then(|v| v.parse::<Version>().ok())
                        .is_some_and(|v| v > target)
                })
                .collect();
            if let Some(first) = newer.first() {
                let more = match newer.len() {
                    1 => String::new(),
                    n => format!(" and {} more node(s)", n - 1),
                };
                return Err(Rejection::new(
                    Downgrade,
                    format!(
                        "target {target_str:?} is older than {:?} running on node {}{more}; set allowDowngrade to permit",
                        first.version.as_deref().unwrap_or_default(),
                        first.node
                    ),
                ));
            }
        }
        Ok(Resolution {
            image: ImageRef {
                version: entry.version.clone(),
                url: entry.url.clone(),
                checksum: entry.checksum.clone(),
                size: entry.size,
            },
            warnings: self
                .problems
                .iter()
                .filter(|p| p.index != Some(entry.index))
                .cloned()
                .collect(),
        })
    }
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
