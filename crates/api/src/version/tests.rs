//! Version parsing and ordering, checked against examples, an independent matcher of
//! the schema pattern, and properties of the ordering and hashing.

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
