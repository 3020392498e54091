//! Catalog signatures: a good one verifies; tampering, unknown keys, garbage and a
//! missing signature under `requireSignedCatalog` are each rejected with their reason.

use osroll_api::catalog::RejectionReason as R;
use osroll_api::signing::{keygen, parse_public_keys, sign, verify_catalog};

const CATALOG: &str = "stable: v1.0.0\nimages:\n  - version: v1.0.0\n    url: https://img.example/v1.zst\n    checksum: sha256:1111111111111111111111111111111111111111111111111111111111111111\n";

#[test]
fn good_signature_verifies_and_records_key_and_digest() {
    let (pk, sk) = keygen().unwrap();
    let keys = parse_public_keys(&pk).unwrap();
    let sig = sign(CATALOG.as_bytes(), &sk, None, Some("release 1")).unwrap();
    let v = verify_catalog(CATALOG.as_bytes(), Some(&sig), &keys, true)
        .unwrap()
        .unwrap();
    assert_eq!(v.key_id, keys[0].id);
    assert_eq!(v.digest, osroll_api::catalog::digest(CATALOG.as_bytes()));
    assert_eq!(v.trusted_comment, "release 1");
}

#[test]
fn tampered_catalog_is_rejected() {
    let (pk, sk) = keygen().unwrap();
    let keys = parse_public_keys(&pk).unwrap();
    let sig = sign(CATALOG.as_bytes(), &sk, None, None).unwrap();
    let tampered = CATALOG.replace("https://img.example/v1.zst", "https://evil.example/v1.zst");
    let e = verify_catalog(tampered.as_bytes(), Some(&sig), &keys, false).unwrap_err();
    assert_eq!(e.reason, R::SignatureInvalid);
    assert!(e.message.contains(&keys[0].id), "{e}");
}

#[test]
fn signature_by_an_unknown_key_is_rejected() {
    let (trusted, _) = keygen().unwrap();
    let (_, other_sk) = keygen().unwrap();
    let keys = parse_public_keys(&trusted).unwrap();
    let sig = sign(CATALOG.as_bytes(), &other_sk, None, None).unwrap();
    let e = verify_catalog(CATALOG.as_bytes(), Some(&sig), &keys, false).unwrap_err();
    assert_eq!(e.reason, R::UnknownSigningKey);
    assert!(
        e.message.contains(&keys[0].id),
        "names the trusted keys: {e}"
    );
}

#[test]
fn unsigned_catalogs_depend_on_the_requirement() {
    let (pk, _) = keygen().unwrap();
    let keys = parse_public_keys(&pk).unwrap();
    let e = verify_catalog(CATALOG.as_bytes(), None, &keys, true).unwrap_err();
    assert_eq!(e.reason, R::SignatureMissing);
    assert!(e.message.contains("requires signed catalogs"), "{e}");
    assert_eq!(
        verify_catalog(CATALOG.as_bytes(), None, &keys, false).unwrap(),
        None
    );
    let e = verify_catalog(CATALOG.as_bytes(), Some("not a signature"), &keys, false).unwrap_err();
    assert_eq!(
        e.reason,
        R::SignatureInvalid,
        "a present but bad signature is never ignored"
    );
}

#[test]
fn several_keys_and_comments_parse() {
    let (a, _) = keygen().unwrap();
    let (b, _) = keygen().unwrap();
    let keys = parse_public_keys(&format!("# team keys\n{a}\n\n{b}")).unwrap();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0].id, keys[1].id);
    let e = parse_public_keys("RWQnot-base64!!")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1"), "{e}");
}

/// Interoperability with the stock `minisign` tool, both directions.
#[test]
fn minisign_cli_interoperates() {
    use std::process::Command;
    Command::new("minisign")
        .arg("-v")
        .output()
        .expect("the minisign tool must be installed: run the tests with ci/test");
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    std::fs::write(p("catalog.yaml"), CATALOG).unwrap();
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(p("k.pub"))
        .arg("-s")
        .arg(p("k.key")));
    ok(Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(p("k.key"))
        .arg("-m")
        .arg(p("catalog.yaml")));
    let keys = parse_public_keys(&std::fs::read_to_string(p("k.pub")).unwrap()).unwrap();
    let sig = std::fs::read_to_string(p("catalog.yaml.minisig")).unwrap();
    assert!(
        verify_catalog(CATALOG.as_bytes(), Some(&sig), &keys, true)
            .unwrap()
            .is_some()
    );

    // And the other way: our key pair and signature, checked by the tool.
    let (pk, sk) = keygen().unwrap();
    std::fs::write(p("ours.pub"), pk).unwrap();
    std::fs::write(
        p("catalog.yaml.minisig"),
        sign(CATALOG.as_bytes(), &sk, None, None).unwrap(),
    )
    .unwrap();
    ok(Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(p("ours.pub"))
        .arg("-m")
        .arg(p("catalog.yaml")));
    std::fs::write(p("catalog.yaml"), CATALOG.replace("v1.zst", "v2.zst")).unwrap();
    let out = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(p("ours.pub"))
        .arg("-m")
        .arg(p("catalog.yaml"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the tool rejects a tampered catalog too"
    );
}
