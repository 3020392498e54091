//! Catalog parsing, validation and resolution: every rule, and the seed's own catalog.

use osroll_api::catalog::{Catalog, NodeVersion, RejectionReason as R, digest, is_valid_checksum};

const SEED: &str = include_str!("fixtures/seed-catalog.yaml");
const SUM_A: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const SUM_B: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn nodes(list: &[(&str, Option<&str>)]) -> Vec<NodeVersion> {
    list.iter()
        .map(|(n, v)| NodeVersion {
            node: n.to_string(),
            version: v.map(String::from),
        })
        .collect()
}

fn catalog(images: &[(&str, &str)], extra: &str) -> Catalog {
    let mut y = String::from("images:\n");
    for (v, sum) in images {
        y += &format!(
            "  - version: \"{v}\"\n    url: https://img.example/{v}.zst\n    checksum: {sum}\n    size: 4096\n"
        );
    }
    y += extra;
    Catalog::parse(&y).unwrap()
}

#[test]
fn seed_stable_resolves_with_warnings_for_placeholder_checksums() {
    let cat = Catalog::parse(SEED).unwrap();
    let r = cat.resolve("stable", &[], false).unwrap();
    assert_eq!(r.image.version, "v1.35.1");
    assert_eq!(r.image.url, "http://localhost:8000/rootfs.ext4.zst");
    assert_eq!(r.image.size, Some(1858076672));
    // The four placeholder checksums are problems of their own entries, reported as
    // warnings because they are not the target.
    let bad: Vec<_> = r.warnings.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        bad,
        [
            "images[0].checksum",
            "images[1].checksum",
            "images[2].checksum",
            "images[3].checksum"
        ]
    );
    assert!(
        r.warnings[0].to_string().contains("\"sha256:abc\""),
        "{}",
        r.warnings[0]
    );
    assert_eq!(r.warnings[2].version.as_deref(), Some("v1.35.0"));
}

#[test]
fn seed_blocked_and_absent_versions_are_rejected() {
    let cat = Catalog::parse(SEED).unwrap();
    let e = cat.resolve("v1.34.0", &[], false).unwrap_err();
    assert_eq!(e.reason, R::VersionBlocked);
    assert!(e.message.contains("v1.34.0"), "{e}");
    let e = cat.resolve("v1.35.3", &[], false).unwrap_err();
    assert_eq!(e.reason, R::VersionNotInCatalog);
    assert!(e.message.contains("\"v1.35.3\""), "{e}");
    assert!(
        e.message.contains("v1.35.4"),
        "lists what is available: {e}"
    );
}

#[test]
fn seed_target_with_placeholder_checksum_is_rejected() {
    let cat = Catalog::parse(SEED).unwrap();
    let e = cat.resolve("v1.35.4", &[], false).unwrap_err();
    assert_eq!(e.reason, R::InvalidImageEntry);
    assert!(
        e.message.contains("images[3].checksum") && e.message.contains("sha256:jkl"),
        "{e}"
    );
}

#[test]
fn stable_alias_rules() {
    let cat = catalog(&[("v2.0.0", SUM_A)], "");
    let e = cat.resolve("stable", &[], false).unwrap_err();
    assert_eq!(e.reason, R::StableNotDefined);

    let cat = catalog(&[("v2.0.0", SUM_A)], "stable: v9.9.9\n");
    assert!(
        cat.problems
            .iter()
            .any(|p| p.field == "stable" && p.message.contains("v9.9.9"))
    );
    assert_eq!(
        cat.resolve("stable", &[], false).unwrap_err().reason,
        R::VersionNotInCatalog
    );

    let cat = catalog(&[("v2.0.0", SUM_A)], "stable: v2.0.0\nblocked: [v2.0.0]\n");
    assert_eq!(
        cat.resolve("stable", &[], false).unwrap_err().reason,
        R::VersionBlocked
    );

    let cat = catalog(&[("v2.0.0", SUM_A)], "stable: not-a-version\n");
    let e = cat.resolve("stable", &[], false).unwrap_err();
    assert_eq!(e.reason, R::StableNotDefined);
    assert!(e.message.contains("not-a-version"), "{e}");
}

#[test]
fn version_matching_uses_version_ordering() {
    let cat = catalog(&[("1.35.3", SUM_A)], "blocked: [\"1.36.0\"]\n");
    assert_eq!(
        cat.resolve("v1.35.3", &[], false).unwrap().image.version,
        "1.35.3"
    );
    let cat = catalog(&[("v1.36.0", SUM_A)], "blocked: [\"1.36.0\"]\n");
    assert_eq!(
        cat.resolve("v1.36.0", &[], false).unwrap_err().reason,
        R::VersionBlocked
    );
    let e = catalog(&[("v1", SUM_A)], "")
        .resolve("latest", &[], false)
        .unwrap_err();
    assert_eq!(e.reason, R::VersionInvalid);
    assert!(e.message.contains("\"latest\""), "{e}");
}

#[test]
fn downgrades_are_rejected_unless_allowed() {
    let cat = catalog(&[("v1.33.2", SUM_A), ("v1.35.0", SUM_B)], "");
    let fleet = nodes(&[
        ("n1", Some("v1.33.2")),
        ("n2", Some("v1.34.1")),
        ("n3", Some("v1.35.0")),
        ("n4", None),
    ]);
    let e = cat.resolve("v1.33.2", &fleet, false).unwrap_err();
    assert_eq!(e.reason, R::Downgrade);
    assert!(
        e.message.contains("n2") && e.message.contains("v1.34.1") && e.message.contains("1 more"),
        "{e}"
    );
    assert_eq!(
        cat.resolve("v1.33.2", &fleet, true).unwrap().image.version,
        "v1.33.2"
    );
    // Same version and upgrades are fine; unknown current versions do not block.
    assert!(cat.resolve("v1.35.0", &fleet, false).is_ok());
    let pre = catalog(&[("v1.36.0-rc.1", SUM_A)], "");
    let e = pre
        .resolve("v1.36.0-rc.1", &nodes(&[("n1", Some("v1.36.0"))]), false)
        .unwrap_err();
    assert_eq!(
        e.reason,
        R::Downgrade,
        "a pre-release is older than its release"
    );
}

#[test]
fn duplicates_are_problems_and_reject_their_version() {
    let cat = catalog(
        &[("v1.0.0", SUM_A), ("v2.0.0", SUM_A), ("1.0.0", SUM_B)],
        "",
    );
    let dup: Vec<_> = cat
        .problems
        .iter()
        .filter(|p| p.message.contains("duplicate"))
        .collect();
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].field, "images[2].version");
    assert!(dup[0].message.contains("images[0]"), "{}", dup[0]);
    let e = cat.resolve("v1.0.0", &[], false).unwrap_err();
    assert_eq!(e.reason, R::DuplicateVersion);
    assert!(
        e.message.contains("images[0]") && e.message.contains("images[2]"),
        "{e}"
    );
    let ok = cat.resolve("v2.0.0", &[], false).unwrap();
    assert_eq!(
        ok.warnings.len(),
        1,
        "the duplicate is a warning for other targets"
    );
}

#[test]
fn malformed_entries_are_listed_not_guessed() {
    let y = r#"
images:
  - version: "v1.0.0"
    url: "ftp://mirror/img"
    checksum: SHA256:AAAA
  - version: 24.09
    url: https://x/y
    checksum: sha256:0000000000000000000000000000000000000000000000000000000000000000
  - url: https://x/z
    checksum: sha256:0000000000000000000000000000000000000000000000000000000000000000
  - version: "v3"
    url: "not a url"
    checksum: sha256:0000000000000000000000000000000000000000000000000000000000000000
    size: 0
  - version: "v4"
    url: https://x/4
    checksum: sha256:0000000000000000000000000000000000000000000000000000000000000000
    sizee: 12
  - version: "v5.x"
    url: https://x/5
    checksum: sha256:0000000000000000000000000000000000000000000000000000000000000000
blocked: [v1.0.0, "oops!"]
"#;
    let cat = Catalog::parse(y).unwrap();
    let fields: Vec<_> = cat.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "images[0].url",
            "images[0].checksum",
            "images[1].version",
            "images[2].version",
            "images[3].url",
            "images[3].size",
            "images[4]",
            "images[5].version",
            "blocked[1]",
        ]
    );
    let msg = |f: &str| {
        cat.problems
            .iter()
            .find(|p| p.field == f)
            .unwrap()
            .message
            .clone()
    };
    assert!(msg("images[0].url").contains("ftp"));
    assert!(
        msg("images[1].version").contains("quote"),
        "{}",
        msg("images[1].version")
    );
    assert!(msg("images[4]").contains("sizee"), "{}", msg("images[4]"));
    assert!(msg("blocked[1]").contains("oops!"));
}

#[test]
fn whole_document_errors_are_rejections() {
    for text in ["images: 5", "stable: [", "imagez: []", "- a\n- b"] {
        let e = Catalog::parse(text).unwrap_err();
        assert_eq!(e.reason, R::CatalogInvalid, "{text:?}");
    }
    // An empty catalog parses; every version is then absent.
    let cat = Catalog::parse("{}").unwrap();
    assert_eq!(
        cat.resolve("v1.0.0", &[], false).unwrap_err().reason,
        R::VersionNotInCatalog
    );
}

#[test]
fn checksum_and_digest_helpers() {
    assert!(is_valid_checksum(SUM_A));
    assert!(!is_valid_checksum(&SUM_A.to_uppercase()));
    assert!(!is_valid_checksum(&SUM_A[..70]));
    assert!(!is_valid_checksum("md5:1111"));
    let d = digest(b"stable: v1\n");
    assert!(is_valid_checksum(&d));
    assert_ne!(d, digest(b"stable: v2\n"));
}

#[test]
fn reboot_required_travels_with_the_resolved_image_and_a_non_boolean_is_a_problem() {
    let y = format!(
        r#"
images:
  - version: "v1"
    url: https://x/1
    checksum: {SUM_A}
    rebootRequired: false
  - version: "v2"
    url: https://x/2
    checksum: {SUM_B}
    rebootRequired: true
  - version: "v3"
    url: https://x/3
    checksum: {SUM_A}
  - version: "v4"
    url: https://x/4
    checksum: {SUM_B}
    rebootRequired: "no"
"#
    );
    let cat = Catalog::parse(&y).unwrap();
    let resolved = |v: &str| cat.resolve(v, &[], true).map(|r| r.image.reboot_required);
    assert_eq!(resolved("v1"), Ok(Some(false)));
    assert_eq!(resolved("v2"), Ok(Some(true)));
    assert_eq!(resolved("v3"), Ok(None), "unset stays unset");
    let fields: Vec<_> = cat.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["images[3].rebootRequired"]);
    assert!(
        cat.problems[0].message.contains("true or false") && cat.problems[0].message.contains("no"),
        "{}",
        cat.problems[0].message
    );
    let err = cat.resolve("v4", &[], true).unwrap_err();
    assert_eq!(err.reason, R::InvalidImageEntry);
    assert!(err.message.contains("rebootRequired"), "{}", err.message);
}

#[test]
fn a_chunk_index_travels_with_the_resolved_image_and_a_bad_one_is_a_problem() {
    let y = format!(
        r#"
images:
  - version: "v1"
    url: https://x/1.zst
    checksum: {SUM_A}
    chunkIndex:
      url: https://x/1.zst.index.json
      checksum: {SUM_B}
  - version: "v2"
    url: https://x/2.zst
    checksum: {SUM_A}
  - version: "v3"
    url: https://x/3.zst
    checksum: {SUM_A}
    chunkIndex:
      url: ftp://x/3.idx
      checksum: sha256:abc
"#
    );
    let cat = Catalog::parse(&y).unwrap();
    let index = cat
        .resolve("v1", &[], true)
        .unwrap()
        .image
        .chunk_index
        .unwrap();
    assert_eq!(
        (index.url.as_str(), index.checksum.as_str()),
        ("https://x/1.zst.index.json", SUM_B)
    );
    assert_eq!(
        cat.resolve("v2", &[], true).unwrap().image.chunk_index,
        None
    );
    let fields: Vec<_> = cat.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["images[2].chunkIndex.url", "images[2].chunkIndex.checksum"]
    );
    let err = cat.resolve("v3", &[], true).unwrap_err();
    assert_eq!(err.reason, R::InvalidImageEntry);
    assert!(
        err.message.contains("chunkIndex.checksum"),
        "{}",
        err.message
    );
}
