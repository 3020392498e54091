//! `osroll catalog keygen|sign|verify|lint` end to end, as a user runs them.

use std::process::{Command, Output};

fn osroll(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osroll"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SEED: &str = include_str!("../../api/tests/fixtures/seed-catalog.yaml");

#[test]
fn keygen_sign_verify_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("catalog.yaml"), SEED).unwrap();
    let o = osroll(d, &["catalog", "keygen"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = osroll(d, &["catalog", "keygen"]);
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "refuses to overwrite a key: {}",
        text(&o)
    );
    let o = osroll(
        d,
        &[
            "catalog",
            "sign",
            "catalog.yaml",
            "-s",
            "osroll.key",
            "--serial",
            "7",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = osroll(
        d,
        &["catalog", "verify", "catalog.yaml", "-p", "osroll.pub"],
    );
    assert!(
        o.status.success() && text(&o).contains("osroll-catalog serial=7 expires="),
        "{}",
        text(&o)
    );

    // Signed again without a serial: a higher one than the last.
    let o = osroll(d, &["catalog", "sign", "catalog.yaml", "-s", "osroll.key"]);
    assert!(o.status.success(), "{}", text(&o));
    let sig = std::fs::read_to_string(d.join("catalog.yaml.minisig")).unwrap();
    let comment = osroll_api::signing::trusted_comment(&sig).unwrap();
    let again = osroll_api::freshness::parse(&comment).unwrap();
    assert!(again.serial > 7, "{comment}");

    std::fs::write(d.join("catalog.yaml"), SEED.replace("v1.34.0", "v1.35.1")).unwrap();
    let o = osroll(
        d,
        &["catalog", "verify", "catalog.yaml", "-p", "osroll.pub"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("SignatureInvalid"), "{}", text(&o));
}

#[test]
fn lint_lists_every_problem_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("seed.yaml"), SEED).unwrap();
    let o = osroll(d, &["catalog", "lint", "seed.yaml", "--version", "stable"]);
    let out = text(&o);
    assert!(
        !o.status.success(),
        "placeholder checksums are problems: {out}"
    );
    assert_eq!(out.matches("problem: images[").count(), 4, "{out}");
    assert!(out.contains("resolves to v1.35.1"), "{out}");
    let o = osroll(d, &["catalog", "lint", "seed.yaml", "--version", "v1.34.0"]);
    assert!(text(&o).contains("VersionBlocked"), "{}", text(&o));
}

/// Finding: catalog parsing was quadratic (`osroll catalog lint` took 10.7 s on 100k
/// entries). A 200k-entry catalog is now refused by the size cap, quickly.
#[test]
fn a_200k_entry_catalog_is_refused_by_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut body = String::from("images:\n");
    for n in 0..200_000 {
        body += &format!(
            "  - version: \"1.{n}\"\n    url: https://img.example/{n}.zst\n    checksum: sha256:{}\n",
            "a".repeat(64)
        );
    }
    std::fs::write(d.join("huge.yaml"), body).unwrap();
    let o = osroll(d, &["catalog", "lint", "huge.yaml"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("CatalogTooLarge") && text(&o).contains("limit of 1048576 bytes"),
        "{}",
        text(&o)
    );
}

#[test]
fn lint_reports_a_reboot_required_that_is_not_a_boolean_and_shows_a_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let entry = |reboot: &str| {
        format!(
            "images:\n  - version: \"2.0\"\n    url: https://img.example/2.0\n    checksum: sha256:{}\n    rebootRequired: {reboot}\n",
            "1".repeat(64)
        )
    };
    std::fs::write(d.join("live.yaml"), entry("false")).unwrap();
    let o = osroll(d, &["catalog", "lint", "live.yaml", "--version", "2.0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("resolves to 2.0 (https://img.example/2.0, needs no reboot)"),
        "{}",
        text(&o)
    );
    std::fs::write(d.join("odd.yaml"), entry("\"no\"")).unwrap();
    let o = osroll(d, &["catalog", "lint", "odd.yaml"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("problem: images[0].rebootRequired (2.0): must be true or false"),
        "{}",
        text(&o)
    );
}
