//! The agent's own check that a progress's image comes from a signed catalog.
//!
//! Whoever can write an OSUpgradeProgress spec could otherwise point a node at any image.
//! With `--require-signed-catalog` the agent does not take the controller's word for it:
//! the controller stamps the signed catalog (bytes and minisign signature) and its digest
//! into the progress, and before downloading anything the agent verifies the signature
//! with its own trusted keys and checks that the image's version, URL, checksum and size
//! are exactly a catalog entry. [`check`] is pure; the executor calls it once, before an
//! install starts, and fails the progress with the [`Refusal`]'s reason and message.

use osroll_api::progress::FailureReason;
use osroll_api::signing::{TrustedKey, Verified, verify_catalog};
use osroll_api::{
    Catalog, CatalogImage, ImageRef, OSUpgradeProgressSpec, RejectionReason, SignedCatalog,
};

use crate::failure::Failure;

/// What the agent trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustConfig {
    /// Public keys trusted to sign catalogs.
    pub keys: Vec<TrustedKey>,
    /// Refuse images that do not come from a catalog signed by one of `keys`.
    pub require_signed_catalog: bool,
}

/// Why a progress's image is refused: the attempt fails with it, `reason` goes to
/// `status.failureReason` and the message names the field and value.
pub type Refusal = Failure;

fn refuse(reason: FailureReason, message: String) -> Result<(), Refusal> {
    Err(Failure::new(reason, message))
}

/// The reason for a catalog whose signature does not hold. Verification refuses only
/// with the signature reasons; anything else it might say means the same to a node.
fn signature_reason(r: RejectionReason) -> FailureReason {
    match r {
        RejectionReason::SignatureMissing => FailureReason::SignatureMissing,
        RejectionReason::UnknownSigningKey => FailureReason::UnknownSigningKey,
        _ => FailureReason::SignatureInvalid,
    }
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
                FailureReason::CatalogNotSigned,
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
    let verified = verify(signed, spec.catalog_digest.as_deref(), trust)?;
    let catalog = Catalog::parse(&signed.content).map_err(|r| {
        Failure::new(
            FailureReason::CatalogInvalid,
            format!("spec.signedCatalog: {}", r.message),
        )
    })?;
    let entries = catalog.entries_for(&image.version);
    let Some(entry) = entries.first() else {
        return refuse(
            FailureReason::ImageNotInCatalog,
            format!(
                "spec.image.version {:?} is not in the signed catalog",
                image.version
            ),
        );
    };
    let diffs = differences(image, entry);
    if !diffs.is_empty() {
        return refuse(
            FailureReason::ImageNotInCatalog,
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

/// The signature over the stamped catalog, by a trusted key, and the stamped digest.
fn verify(
    signed: &SignedCatalog,
    digest: Option<&str>,
    trust: &TrustConfig,
) -> Result<Verified, Refusal> {
    let verified = verify_catalog(
        signed.content.as_bytes(),
        Some(&signed.signature),
        &trust.keys,
        true,
    )
    .map_err(|r| {
        Failure::new(
            signature_reason(r.reason),
            format!("spec.signedCatalog: {}", r.message),
        )
    })?
    .expect("a present signature either verifies or is refused");
    if let Some(d) = digest
        && d != verified.digest
    {
        return Err(Failure::new(
            FailureReason::CatalogDigestMismatch,
            format!(
                "spec.catalogDigest is {d} but the signed catalog hashes to {}",
                verified.digest
            ),
        ));
    }
    Ok(verified)
}

/// How `image` differs from the catalog's `entry`, one phrase per field.
fn differences(image: &ImageRef, entry: &CatalogImage) -> Vec<String> {
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
    diffs
}

#[cfg(test)]
mod tests;
