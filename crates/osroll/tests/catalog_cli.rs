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
            "-t",
            "release 7",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = osroll(
        d,
        &["catalog", "verify", "catalog.yaml", "-p", "osroll.pub"],
    );
    assert!(
        o.status.success() && text(&o).contains("release 7"),
        "{}",
        text(&o)
    );

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
