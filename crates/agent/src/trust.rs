//! The agent's own check that a progress's image comes from a signed catalog.
//!
//! Whoever can write an OSUpgradeProgress spec could otherwise point a node at any image.
//! With `--require-signed-catalog` the agent does not take the controller's word for it:
//! the controller stamps the signed catalog (bytes and minisign signature) and its digest
//! into the progress, and before downloading anything the agent verifies the signature
//! with its own trusted keys and checks that the image's version, URL, checksum and size
//! are exactly a catalog entry. [`check`] is pure; the executor calls it once, before an
//! install starts, and fails the progress with the [`Refusal`]'s reason and message.

use osroll_api::signing::{TrustedKey, verify_catalog};
use osroll_api::{Catalog, ImageRef, OSUpgradeProgressSpec};

/// What the agent trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustConfig {
    /// Public keys trusted to sign catalogs.
    pub keys: Vec<TrustedKey>,
    /// Refuse images that do not come from a catalog signed by one of `keys`.
    pub require_signed_catalog: bool,
}

/// Why a progress's image is refused: `reason` goes to `status.failureReason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// Machine-readable cause.
    pub reason: &'static str,
    /// What is wrong, naming the field and value.
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { reason, message })
}

/// Check `image` (the one about to be installed) against the signed catalog stamped in
/// `spec`. Without the requirement a stamped catalog is still verified when keys are
/// configured (a signature present is never ignored); with neither, anything passes.
pub fn check(
    spec: &OSUpgradeProgressSpec,
    image: &ImageRef,
    trust: &TrustConfig,
) -> Result<(), Refusal> {
    let Some(signed) = &spec.signed_catalog else {
        if trust.require_signed_catalog {
            return refuse(
                "CatalogNotSigned",
                format!(
                    "spec.signedCatalog is missing: this agent requires image {} to come from a catalog signed by a trusted key (--require-signed-catalog)",
                    image.version
                ),
            );
        }
        return Ok(());
    };
    if !trust.require_signed_catalog && trust.keys.is_empty() {
        return Ok(());
    }
    let verified = verify_catalog(
        signed.content.as_bytes(),
        Some(&signed.signature),
        &trust.keys,
        true,
    )
    .map_err(|r| Refusal {
        reason: r.reason.as_str(),
        message: format!("spec.signedCatalog: {}", r.message),
    })?
    .expect("a present signature either verifies or is refused");
    if let Some(d) = &spec.catalog_digest
        && *d != verified.digest
    {
        return refuse(
            "CatalogDigestMismatch",
            format!(
                "spec.catalogDigest is {d} but the signed catalog hashes to {}",
                verified.digest
            ),
        );
    }
    let catalog = Catalog::parse(&signed.content).map_err(|r| Refusal {
        reason: "CatalogInvalid",
        message: format!("spec.signedCatalog: {}", r.message),
    })?;
    let entries = catalog.entries_for(&image.version);
    let Some(entry) = entries.first() else {
        return refuse(
            "ImageNotInCatalog",
            format!(
                "spec.image.version {:?} is not in the signed catalog",
                image.version
            ),
        );
    };
    let mut diffs = Vec::new();
    if image.url != entry.url {
        diffs.push(format!("url {:?} (catalog: {:?})", image.url, entry.url));
    }
    if !image.checksum.eq_ignore_ascii_case(&entry.checksum) {
        diffs.push(format!(
            "checksum {} (catalog: {})",
            image.checksum, entry.checksum
        ));
    }
    if entry.size.is_some() && image.size != entry.size {
        let show = |s: Option<u64>| s.map_or("none".to_string(), |s| s.to_string());
        diffs.push(format!(
            "size {} (catalog: {})",
            show(image.size),
            show(entry.size)
        ));
    }
    if !diffs.is_empty() {
        return refuse(
            "ImageNotInCatalog",
            format!(
                "spec.image for version {} differs from the signed catalog (key {}): {}",
                image.version,
                verified.key_id,
                diffs.join("; ")
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
