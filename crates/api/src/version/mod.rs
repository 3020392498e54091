//! OS version strings and their ordering.
//!
//! Image-based OS releases are numbered in several styles: `v1.35.3`, `1.35.3`,
//! `24.09.400`, `v1.36.0-rc.1`. A [`Version`] is an optional `v`, one or more dot-separated
//! numbers, an optional `-pre.release` and an optional `+build`. Ordering compares the
//! numbers (missing trailing parts count as zero), then puts a pre-release before its
//! release, comparing pre-release identifiers as semver does. Build metadata is ignored
//! for ordering, so `v1.35.3` and `1.35.3` are the same version.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Regex (for CRD schemas) that accepts exactly what [`Version::from_str`] accepts.
pub const VERSION_PATTERN: &str =
    r"^v?[0-9]+(\.[0-9]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$";

/// A parsed OS version. Equality and ordering ignore the `v` prefix and build metadata.
#[derive(Clone, Debug)]
pub struct Version {
    original: String,
    numbers: Vec<u64>,
    pre: Vec<PreId>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PreId {
    // Declared first: numeric identifiers sort before alphanumeric ones.
    Num(u64),
    Alpha(String),
}

/// Why a string is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {value:?}: {why}")]
pub struct VersionError {
    /// The rejected string.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| VersionError {
            value: s.to_string(),
            why,
        };
        let body = s.strip_prefix('v').unwrap_or(s);
        let (body, build) = match body.split_once('+') {
            Some((b, m)) => (b, Some(m)),
            None => (body, None),
        };
        let (core, pre) = match body.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (body, None),
        };
        if core.is_empty() {
            return Err(err("expected a number such as 1.35.3"));
        }
        let mut numbers = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("release parts must be dot-separated numbers"));
            }
            numbers.push(part.parse().map_err(|_| err("number too large"))?);
        }
        let ident_ok =
            |i: &str| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let mut pre_ids = Vec::new();
        if let Some(pre) = pre {
            for id in pre.split('.') {
                if !ident_ok(id) {
                    return Err(err("pre-release identifiers must be [0-9A-Za-z-]+"));
                }
                pre_ids.push(match id.parse() {
                    Ok(n) if id.bytes().all(|b| b.is_ascii_digit()) => PreId::Num(n),
                    _ => PreId::Alpha(id.to_string()),
                });
            }
        }
        if let Some(build) = build
            && !build.split('.').all(ident_ok)
        {
            return Err(err("build identifiers must be [0-9A-Za-z-]+"));
        }
        Ok(Version {
            original: s.to_string(),
            numbers,
            pre: pre_ids,
        })
    }
}

impl Version {
    /// The string this version was parsed from.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// Whether this is a pre-release (`-rc.1` and the like).
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.numbers.len().max(other.numbers.len());
        for i in 0..len {
            let a = self.numbers.get(i).copied().unwrap_or(0);
            let b = other.numbers.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre.cmp(&other.pre),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Consistent with equality: trailing zero parts, the `v` prefix and build metadata do
/// not count, so versions that compare equal hash alike.
impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let significant = self
            .numbers
            .iter()
            .rposition(|n| *n != 0)
            .map_or(0, |last| last + 1);
        self.numbers[..significant].hash(state);
        self.pre.hash(state);
    }
}

#[cfg(test)]
mod tests;
