use super::*;
use osroll_api::SignedCatalog;
use osroll_api::freshness::{self, Freshness};
use osroll_api::signing::{keygen, parse_public_keys, sign};

const SUM: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn ctx() -> Context<'static> {
    Context {
        running: Some("1.0"),
        now: "2026-12-05T00:00:00Z".parse().unwrap(),
        newest_serial: Some(5),
    }
}

/// A trusted comment with `serial` that expires a year after [`ctx`]'s now.
fn fresh(serial: u64) -> String {
    freshness::comment(&Freshness {
        serial,
        expires: "2027-12-05T00:00:00Z".parse().unwrap(),
    })
}

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
        reboot_required: None,
        chunk_index: None,
    }
}

/// A stamped spec signed by a fresh key, and a trust config with that key.
fn stamped() -> (OSUpgradeProgressSpec, TrustConfig) {
    stamped_with(&catalog(), &fresh(5))
}

/// `text` stamped and signed with `comment` by a fresh key, and a config trusting it.
fn stamped_with(text: &str, comment: &str) -> (OSUpgradeProgressSpec, TrustConfig) {
    let (pk, sk) = keygen().unwrap();
    let text = text.to_string();
    let signature = sign(text.as_bytes(), &sk, None, Some(comment)).unwrap();
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
    check(&spec, &image(), &trust, ctx()).unwrap();
    let mut upper = image();
    upper.checksum = SUM.to_uppercase().replace("SHA256", "sha256");
    check(&spec, &upper, &trust, ctx()).unwrap();
}

#[test]
fn each_edited_image_field_is_refused_and_named() {
    let (spec, trust) = stamped();
    type Edit = fn(&mut ImageRef);
    let edits: [(&str, Edit); 4] = [
        ("url \"https://evil.example/x.zst\"", |i| {
            i.url = "https://evil.example/x.zst".into()
        }),
        ("checksum sha256:2222", |i| {
            i.checksum = format!("sha256:{}", "2".repeat(64))
        }),
        ("size 1 (catalog: 4096)", |i| i.size = Some(1)),
        ("rebootRequired false (catalog: unset)", |i| {
            i.reboot_required = Some(false)
        }),
    ];
    for (want, edit) in edits {
        let mut img = image();
        edit(&mut img);
        let r = check(&spec, &img, &trust, ctx()).unwrap_err();
        assert_eq!(r.reason, "ImageNotInCatalog");
        assert!(r.message.contains(want), "{want}: {r}");
    }
    let mut other = image();
    other.version = "3.0".into();
    let r = check(&spec, &other, &trust, ctx()).unwrap_err();
    assert!(
        r.message.contains("\"3.0\" is not in the signed catalog"),
        "{r}"
    );
}

#[test]
fn unsigned_under_the_requirement_is_refused_and_passes_without_it() {
    let (mut spec, mut trust) = stamped();
    spec.signed_catalog = None;
    let r = check(&spec, &image(), &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "CatalogNotSigned");
    assert!(r.message.contains("spec.signedCatalog is missing"), "{r}");
    trust.require_signed_catalog = false;
    check(&spec, &image(), &trust, ctx()).unwrap();
}

#[test]
fn unknown_key_tampered_catalog_and_wrong_digest_are_refused() {
    let (spec, trust) = stamped();
    let (other_pk, _) = keygen().unwrap();
    let stranger = TrustConfig {
        keys: parse_public_keys(&other_pk).unwrap(),
        require_signed_catalog: true,
    };
    let r = check(&spec, &image(), &stranger, ctx()).unwrap_err();
    assert_eq!(r.reason, "UnknownSigningKey");
    assert!(r.message.contains("not trusted"), "{r}");

    // The catalog text edited to match an edited image: the signature no longer holds.
    let mut tampered = spec.clone();
    let sc = tampered.signed_catalog.as_mut().unwrap();
    sc.content = sc.content.replace("img.example", "evil.example");
    let mut evil = image();
    evil.url = "https://evil.example/2.0.zst".into();
    let r = check(&tampered, &evil, &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "SignatureInvalid", "{r}");

    let mut wrong = spec.clone();
    wrong.catalog_digest = Some(format!("sha256:{}", "0".repeat(64)));
    let r = check(&wrong, &image(), &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "CatalogDigestMismatch");
}

#[test]
fn a_present_signature_is_checked_when_keys_are_configured() {
    let (spec, mut trust) = stamped();
    trust.require_signed_catalog = false;
    let mut img = image();
    img.url = "https://evil.example/x".into();
    assert!(check(&spec, &img, &trust, ctx()).is_err());
    trust.keys.clear();
    check(&spec, &img, &trust, ctx()).unwrap();
}

#[test]
fn stale_catalogs_are_refused_and_the_serial_is_returned() {
    let (spec, trust) = stamped_with(&catalog(), &fresh(9));
    assert_eq!(
        check(&spec, &image(), &trust, ctx()).unwrap(),
        Accepted { serial: Some(9) }
    );
    let (spec, trust) = stamped_with(&catalog(), &fresh(4));
    let r = check(&spec, &image(), &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "CatalogRolledBack", "{r}");
    let mut later = ctx();
    later.now = "2028-01-01T00:00:00Z".parse().unwrap();
    let r = check(&spec, &image(), &trust, later).unwrap_err();
    assert_eq!(r.reason, "CatalogExpired", "{r}");
    let (spec, trust) = stamped_with(&catalog(), "timestamp:1700000000");
    let r = check(&spec, &image(), &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "CatalogFreshnessMissing", "{r}");
}

#[test]
fn blocked_downgrade_and_unsigned_overrides_are_refused() {
    let blocked = format!("{}blocked: [\"2.0\"]\n", catalog());
    let (spec, trust) = stamped_with(&blocked, &fresh(5));
    let r = check(&spec, &image(), &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "VersionBlocked", "{r}");

    let (mut spec, trust) = stamped();
    let mut newer = ctx();
    newer.running = Some("3.0");
    let r = check(&spec, &image(), &trust, newer).unwrap_err();
    assert_eq!(r.reason, "Downgrade", "{r}");
    spec.allow_downgrade = true;
    check(&spec, &image(), &trust, newer).unwrap();

    spec.os_version_management = Some(serde_json::json!({"ostree": {"reference": "evil:os"}}));
    let r = check(&spec, &image(), &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "OverrideNotSigned", "{r}");
    assert!(r.message.contains("evil:os"), "{r}");
}

/// The signed entry's `rebootRequired` is the only no-reboot word that passes under the
/// requirement: the image must carry it as signed, and an unsigned
/// `osVersionManagement` saying no reboot is an override the entry does not have.
#[test]
fn the_signed_entrys_reboot_required_passes_and_an_unsigned_no_reboot_does_not() {
    let live = catalog() + "    rebootRequired: false\n";
    let (spec, trust) = stamped_with(&live, &fresh(5));
    let mut img = image();
    img.reboot_required = Some(false);
    check(&spec, &img, &trust, ctx()).unwrap();
    let r = check(&spec, &image(), &trust, ctx()).unwrap_err();
    assert!(
        r.message.contains("rebootRequired unset (catalog: false)"),
        "{r}"
    );

    let reboot = catalog() + "    rebootRequired: true\n";
    let (mut spec, trust) = stamped_with(&reboot, &fresh(5));
    let mut img = image();
    img.reboot_required = Some(true);
    spec.os_version_management = Some(serde_json::json!({"ostree": {"rebootRequired": false}}));
    let r = check(&spec, &img, &trust, ctx()).unwrap_err();
    assert_eq!(r.reason, "OverrideNotSigned", "{r}");
    assert!(r.message.contains("rebootRequired"), "{r}");
}

#[test]
fn the_signed_chunk_index_passes_and_an_edited_or_added_one_is_refused() {
    let isum = format!("sha256:{}", "3".repeat(64));
    let text = format!(
        "{}    chunkIndex:\n      url: https://img.example/2.0.zst.index.json\n      checksum: {isum}\n",
        catalog()
    );
    let (spec, trust) = stamped_with(&text, &fresh(5));
    let signed = osroll_api::delta::ImageIndex {
        url: "https://img.example/2.0.zst.index.json".into(),
        checksum: isum,
    };
    let mut img = image();
    img.chunk_index = Some(signed.clone());
    check(&spec, &img, &trust, ctx()).unwrap();

    // An index the signature does not cover: another checksum, another URL, or none.
    let mut edited = img.clone();
    edited.chunk_index.as_mut().unwrap().checksum = format!("sha256:{}", "4".repeat(64));
    let mut moved = img.clone();
    moved.chunk_index.as_mut().unwrap().url = "https://evil.example/i.json".into();
    for bad in [edited, moved] {
        let r = check(&spec, &bad, &trust, ctx()).unwrap_err();
        assert_eq!(r.reason, "ImageNotInCatalog");
        assert!(r.message.contains("chunkIndex"), "{r}");
    }
    // An index added to an entry that has none.
    let (spec, trust) = stamped();
    let r = check(&spec, &img, &trust, ctx()).unwrap_err();
    assert!(
        r.message.contains("chunkIndex") && r.message.contains("catalog: none"),
        "{r}"
    );
}
