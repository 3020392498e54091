use super::*;
use osroll_api::SignedCatalog;
use osroll_api::signing::{keygen, parse_public_keys, sign};

const SUM: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn catalog() -> String {
    format!(
        "stable: \"2.0\"\nimages:\n  - version: \"2.0\"\n    url: https://img.example/2.0.zst\n    checksum: {SUM}\n    size: 4096\n"
    )
}

fn image() -> ImageRef {
    ImageRef {
        version: "2.0".into(),
        url: "https://img.example/2.0.zst".into(),
        checksum: SUM.into(),
        size: Some(4096),
    }
}

/// A stamped spec signed by a fresh key, and a trust config with that key.
fn stamped() -> (OSUpgradeProgressSpec, TrustConfig) {
    let (pk, sk) = keygen().unwrap();
    let text = catalog();
    let signature = sign(text.as_bytes(), &sk, None, None).unwrap();
    let spec = OSUpgradeProgressSpec {
        node_name: "n".into(),
        image: Some(image()),
        catalog_digest: Some(osroll_api::catalog::digest(text.as_bytes())),
        signed_catalog: Some(SignedCatalog {
            content: text,
            signature,
        }),
        ..Default::default()
    };
    let trust = TrustConfig {
        keys: parse_public_keys(&pk).unwrap(),
        require_signed_catalog: true,
    };
    (spec, trust)
}

#[test]
fn a_correctly_stamped_image_passes() {
    let (spec, trust) = stamped();
    check(&spec, &image(), &trust).unwrap();
    let mut upper = image();
    upper.checksum = SUM.to_uppercase().replace("SHA256", "sha256");
    check(&spec, &upper, &trust).unwrap();
}

#[test]
fn each_edited_image_field_is_refused_and_named() {
    let (spec, trust) = stamped();
    type Edit = fn(&mut ImageRef);
    let edits: [(&str, Edit); 3] = [
        ("url \"https://evil.example/x.zst\"", |i| {
            i.url = "https://evil.example/x.zst".into()
        }),
        ("checksum sha256:2222", |i| {
            i.checksum = format!("sha256:{}", "2".repeat(64))
        }),
        ("size 1 (catalog: 4096)", |i| i.size = Some(1)),
    ];
    for (want, edit) in edits {
        let mut img = image();
        edit(&mut img);
        let r = check(&spec, &img, &trust).unwrap_err();
        assert_eq!(r.reason, "ImageNotInCatalog");
        assert!(r.message.contains(want), "{want}: {r}");
    }
    let mut other = image();
    other.version = "3.0".into();
    let r = check(&spec, &other, &trust).unwrap_err();
    assert!(
        r.message.contains("\"3.0\" is not in the signed catalog"),
        "{r}"
    );
}

#[test]
fn unsigned_under_the_requirement_is_refused_and_passes_without_it() {
    let (mut spec, mut trust) = stamped();
    spec.signed_catalog = None;
    let r = check(&spec, &image(), &trust).unwrap_err();
    assert_eq!(r.reason, "CatalogNotSigned");
    assert!(r.message.contains("spec.signedCatalog is missing"), "{r}");
    trust.require_signed_catalog = false;
    check(&spec, &image(), &trust).unwrap();
}

#[test]
fn unknown_key_tampered_catalog_and_wrong_digest_are_refused() {
    let (spec, trust) = stamped();
    let (other_pk, _) = keygen().unwrap();
    let stranger = TrustConfig {
        keys: parse_public_keys(&other_pk).unwrap(),
        require_signed_catalog: true,
    };
    let r = check(&spec, &image(), &stranger).unwrap_err();
    assert_eq!(r.reason, "UnknownSigningKey");
    assert!(r.message.contains("not trusted"), "{r}");

    // The catalog text edited to match an edited image: the signature no longer holds.
    let mut tampered = spec.clone();
    let sc = tampered.signed_catalog.as_mut().unwrap();
    sc.content = sc.content.replace("img.example", "evil.example");
    let mut evil = image();
    evil.url = "https://evil.example/2.0.zst".into();
    let r = check(&tampered, &evil, &trust).unwrap_err();
    assert_eq!(r.reason, "SignatureInvalid", "{r}");

    let mut wrong = spec.clone();
    wrong.catalog_digest = Some(format!("sha256:{}", "0".repeat(64)));
    let r = check(&wrong, &image(), &trust).unwrap_err();
    assert_eq!(r.reason, "CatalogDigestMismatch");
}

#[test]
fn a_present_signature_is_checked_when_keys_are_configured() {
    let (spec, mut trust) = stamped();
    trust.require_signed_catalog = false;
    let mut img = image();
    img.url = "https://evil.example/x".into();
    assert!(check(&spec, &img, &trust).is_err());
    trust.keys.clear();
    check(&spec, &img, &trust).unwrap();
}
