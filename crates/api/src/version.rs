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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn orders_the_styles_we_meet() {
        assert!(v("v1.35.3") < v("v1.35.4"));
        assert!(v("v1.35.10") > v("v1.35.9"), "numeric, not lexical");
        assert_eq!(v("v1.35.3"), v("1.35.3"));
        assert!(v("24.09.400") > v("24.09.399"));
        assert!(v("24.09.400") < v("24.10.0"));
        assert!(v("v1.36.0-rc.1") < v("v1.36.0"));
        assert!(v("v1.36.0-rc.1") > v("v1.35.9"));
        assert!(v("v1.36.0-rc.2") < v("v1.36.0-rc.10"));
        assert!(v("v1.36.0-alpha") < v("v1.36.0-beta"));
        assert!(
            v("v1.36.0-1") < v("v1.36.0-alpha"),
            "numeric ids sort first"
        );
        assert!(
            v("v1.36.0-rc") < v("v1.36.0-rc.1"),
            "shorter prefix sorts first"
        );
        assert_eq!(v("1.35"), v("1.35.0"));
        assert_eq!(v("1.35.0+build.7"), v("1.35.0"));
        assert!(v("v1.36.0-rc.1").is_prerelease());
    }

    #[test]
    fn rejects_what_is_not_a_version() {
        for bad in [
            "",
            "v",
            "stable",
            "1..2",
            "1.2.",
            "v1.2.x",
            "1.2-",
            "1.2-rc..1",
            "1.2+",
            " 1.2",
        ] {
            let e = bad.parse::<Version>().unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    proptest! {
        #[test]
        fn parse_agrees_with_the_schema_pattern(s in "[v0-9.a-z+-]{0,12}") {
            let re_ok = regex_lite_match(&s);
            prop_assert_eq!(s.parse::<Version>().is_ok(), re_ok, "{:?}", s);
        }

        #[test]
        fn ordering_is_total_and_consistent(a in "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-(rc|alpha|[0-9])(\\.[0-9]{1,2})?)?",
                                            b in "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-(rc|alpha|[0-9])(\\.[0-9]{1,2})?)?") {
            let (x, y) = (v(&a), v(&b));
            prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            prop_assert_eq!(x == y, x.cmp(&y) == Ordering::Equal);
        }

        #[test]
        fn equal_versions_hash_alike(core in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}",
                                     pre in "(-(rc|alpha|[0-9])(\\.[0-9]{1,2})?)?",
                                     zeros in 0usize..3) {
            // The same version spelt another way: `v`, trailing zeros, build metadata.
            let twin = format!("v{core}{}{pre}+build.1", ".0".repeat(zeros));
            let (x, y) = (v(&format!("{core}{pre}")), v(&twin));
            prop_assert_eq!(&x, &y);
            prop_assert_eq!(hash_of(&x), hash_of(&y), "{:?}", twin);
        }
    }

    fn hash_of(v: &Version) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn versions_that_compare_equal_hash_alike() {
        for (a, b) in [
            ("1.35", "v1.35.0"),
            ("1.35.0+build.7", "1.35"),
            ("2", "2.0.0.0"),
            ("v1.36.0-rc.01", "1.36-rc.1"),
        ] {
            assert_eq!(v(a), v(b));
            assert_eq!(hash_of(&v(a)), hash_of(&v(b)), "{a} {b}");
        }
    }

    /// A hand-written matcher for [`VERSION_PATTERN`], so the test compares two
    /// independent definitions rather than the parser with itself.
    fn regex_lite_match(s: &str) -> bool {
        fn ids(s: &str) -> bool {
            s.split('.')
                .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        }
        let s = s.strip_prefix('v').unwrap_or(s);
        let (rest, build) = match s.find('+') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (core, pre) = match rest.find('-') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let core_ok = !core.is_empty()
            && core
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        core_ok && pre.is_none_or(ids) && build.is_none_or(ids)
    }
}
