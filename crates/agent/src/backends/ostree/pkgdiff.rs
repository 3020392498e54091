//! What rpm-ostree reports about a staged update's packages, the one way a host tool
//! tells ahead of time whether an update can be switched to live.
//!
//! `rpm-ostree apply-live` without `--allow-replacement` accepts only an update that adds
//! packages (rpm-ostree's own rule, "pure additive"). `rpm-ostree db diff --format=json`
//! without revisions compares the booted deployment with the pending one and lists every
//! package as `[name, type, details]`, type 0 added, 1 removed, 2 upgraded, 3 downgraded
//! (`RpmOstreePackageDiffTypes`). [`parse`] reads that list; [`Verdict::of`] says whether
//! `apply-live` would take it.

use serde::Deserialize;

use super::OstreeConfig;
use crate::backends::runner::CommandSpec;

/// How a package differs between the booted and the pending deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// New in the pending deployment.
    Added,
    /// Gone from it.
    Removed,
    /// A newer version.
    Upgraded,
    /// An older version.
    Downgraded,
}

impl Change {
    fn from_code(code: u64) -> Option<Change> {
        Some(match code {
            0 => Change::Added,
            1 => Change::Removed,
            2 => Change::Upgraded,
            3 => Change::Downgraded,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Upgraded => "upgraded",
            Change::Downgraded => "downgraded",
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    pkgdiff: Vec<(String, u64, serde_json::Value)>,
}

/// Why the output of `rpm-ostree db diff --format=json` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Not the JSON layout rpm-ostree prints.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A package with a change type rpm-ostree does not define.
    #[error("package {name:?} has unknown change type {code}")]
    UnknownType {
        /// The package.
        name: String,
        /// Its type code.
        code: u64,
    },
}

/// Every package that differs, in rpm-ostree's order.
pub fn parse(output: &str) -> Result<Vec<(String, Change)>, DiffError> {
    let raw: Raw = serde_json::from_str(output)?;
    raw.pkgdiff
        .into_iter()
        .map(|(name, code, _)| match Change::from_code(code) {
            Some(c) => Ok((name, c)),
            None => Err(DiffError::UnknownType { name, code }),
        })
        .collect()
}

/// What the package diff allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Only packages added: `apply-live` takes it without `--allow-replacement`.
    Additive,
    /// Packages replaced or removed, named (`kernel-core upgraded`, at most five).
    Replaces(String),
}

impl Verdict {
    /// The verdict on `diff`.
    pub fn of(diff: &[(String, Change)]) -> Verdict {
        let replaced: Vec<String> = diff
            .iter()
            .filter(|(_, c)| *c != Change::Added)
            .map(|(n, c)| format!("{n} {}", c.as_str()))
            .collect();
        match replaced.len() {
            0 => Verdict::Additive,
            n if n > 5 => {
                Verdict::Replaces(format!("{} and {} more", replaced[..5].join(", "), n - 5))
            }
            _ => Verdict::Replaces(replaced.join(", ")),
        }
    }
}

/// `rpm-ostree db diff --format=json`: the booted deployment against the pending one.
pub fn command(config: &OstreeConfig) -> CommandSpec {
    config
        .command(config.status_timeout)
        .args(["db", "diff", "--format=json"])
        .with_prefix(&config.host_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout json-glib prints for rpm-ostree's `a(sua{sv})` diff.
    const REPLACING: &str = r#"{
  "ostree-commit-from" : "aa",
  "ostree-commit-to" : "bb",
  "pkgdiff" : [
    [ "htop", 0, { "NewPackage" : [ "htop", "3.3.0-1.fc40", "x86_64" ] } ],
    [ "kernel-core", 2, { "PreviousPackage" : [ "kernel-core", "6.8.5-301.fc40", "x86_64" ], "NewPackage" : [ "kernel-core", "6.8.9-300.fc40", "x86_64" ] } ],
    [ "nano", 1, { "PreviousPackage" : [ "nano", "7.2-6.fc40", "x86_64" ] } ]
  ],
  "advisories" : [ ]
}"#;

    #[test]
    fn only_additions_are_additive_and_replacements_are_named() {
        let diff = parse(REPLACING).unwrap();
        assert_eq!(
            diff,
            [
                ("htop".to_string(), Change::Added),
                ("kernel-core".to_string(), Change::Upgraded),
                ("nano".to_string(), Change::Removed),
            ]
        );
        assert_eq!(
            Verdict::of(&diff),
            Verdict::Replaces("kernel-core upgraded, nano removed".into())
        );
        assert_eq!(Verdict::of(&diff[..1]), Verdict::Additive);
        assert_eq!(Verdict::of(&[]), Verdict::Additive);
        let many: Vec<_> = (0..8)
            .map(|i| (format!("p{i}"), Change::Downgraded))
            .collect();
        match Verdict::of(&many) {
            Verdict::Replaces(m) => assert!(m.ends_with("p4 downgraded and 3 more"), "{m}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn other_layouts_and_unknown_types_are_errors() {
        assert!(matches!(parse("[]"), Err(DiffError::Json(_))));
        let odd = r#"{"pkgdiff": [["x", 7, {}]]}"#;
        let err = parse(odd).unwrap_err();
        assert!(err.to_string().contains("unknown change type 7"), "{err}");
    }
}
