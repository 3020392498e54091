//! The agent's own check that a progress's image comes from a signed catalog.
//!
//! Whoever can write an OSUpgradeProgress spec could otherwise point a node at any image.
//! With `--require-signed-catalog` the agent does not take the controller's word for it:
//! the controller stamps the signed catalog (bytes and minisign signature) and its digest
//! into the progress, and before downloading anything the agent verifies the signature
//! with its own trusted keys and checks that the image's version, URL, checksum, size,
//! `rebootRequired` and `chunkIndex` are exactly a catalog entry. Everything else that chooses what is installed (the OSTree
//! reference, the plugin payload: `osVersionManagement`) must be the entry's own too. The
//! catalog must be fresh (serial and expiry in the signature's trusted comment, see
//! [`osroll_api::freshness`]), its `blocked` list holds, and a downgrade needs the spec's
//! explicit `allowDowngrade`. [`check`] is pure; the executor calls it before staging and
//! again before applying, and fails the progress with the [`Refusal`]'s reason and message.

use k8s_openapi::jiff::Timestamp;
use osroll_api::freshness::{self, Stale};
use osroll_api::progress::FailureReason;
use osroll_api::signing::{TrustedKey, Verified, verify_catalog};
use osroll_api::{
    Catalog, CatalogImage, ImageRef, OSUpgradeProgressSpec, RejectionReason, SignedCatalog, Version,
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

/// The reason for a catalog whose signature does not hold. Verification refuses only
/// with the signature reasons; anything else it might say means the same to a node.
fn signature_reason(r: RejectionReason) -> FailureReason {
    match r {
        RejectionReason::SignatureMissing => FailureReason::SignatureMissing,
        RejectionReason::UnknownSigningKey => FailureReason::UnknownSigningKey,
        _ => FailureReason::SignatureInvalid,
    }
}

/// What the check is made against, besides the spec: the node and the clock.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The version the node runs, for the downgrade rule.
    pub running: Option<&'a str>,
    /// The time of the check, for the catalog's expiry.
    pub now: Timestamp,
    /// The newest catalog serial this node accepted (from its state file).
    pub newest_serial: Option<u64>,
}

/// What an accepted check proved: the serial to remember, when the catalog carries one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The signed catalog's serial.
    pub serial: Option<u64>,
}

/// Check `image` (the one about to be installed) against the signed catalog stamped in
/// `spec`. Without the requirement a stamped catalog is still verified when keys are
/// configured (a signature present is never ignored); with neither, anything passes.
/// Once verified, the catalog must be fresh, list `image` exactly, not block it, and
/// (under the requirement) carry the spec's `osVersionManagement`; the image must not be
/// older than the running version unless `spec.allowDowngrade`.
pub fn check(
    spec: &OSUpgradeProgressSpec,
    image: &ImageRef,
    trust: &TrustConfig,
    ctx: Context<'_>,
) -> Result<Accepted, Refusal> {
    let Some(signed) = &spec.signed_catalog else {
        if trust.require_signed_catalog {
            return Err(Failure::new(
                FailureReason::CatalogNotSigned,
                format!(
                    "spec.signedCatalog is missing: this agent requires image {} to come from a catalog signed by a trusted key (--require-signed-catalog)",
                    image.version
                ),
            ));
        }
        return Ok(Accepted::default());
    };
    if !trust.require_signed_catalog && trust.keys.is_empty() {
        return Ok(Accepted::default());
    }
    let verified = verify(signed, spec.catalog_digest.as_deref(), trust)?;
    let serial = fresh(&verified, trust.require_signed_catalog, ctx)?;
    let catalog = Catalog::parse(&signed.content).map_err(|r| {
        Failure::new(
            FailureReason::CatalogInvalid,
            format!("spec.signedCatalog: {}", r.message),
        )
    })?;
    let entry = entry_of(&catalog, image, &verified)?;
    if trust.require_signed_catalog {
        signed_override(spec, entry)?;
    }
    not_blocked(&catalog, image)?;
    not_downgrade(spec, image, ctx.running)?;
    Ok(Accepted { serial })
}

/// The catalog entry that is exactly `image`.
fn entry_of<'c>(
    catalog: &'c Catalog,
    image: &ImageRef,
    verified: &Verified,
) -> Result<&'c CatalogImage, Refusal> {
    let Some(entry) = catalog.entries_for(&image.version).into_iter().next() else {
        return Err(Failure::new(
            FailureReason::ImageNotInCatalog,
            format!(
                "spec.image.version {:?} is not in the signed catalog",
                image.version
            ),
        ));
    };
    let diffs = differences(image, entry);
    if !diffs.is_empty() {
        return Err(Failure::new(
            FailureReason::ImageNotInCatalog,
            format!(
                "spec.image for version {} differs from the signed catalog (key {}): {}",
                image.version,
                verified.key_id,
                diffs.join("; ")
            ),
        ));
    }
    Ok(entry)
}

/// The serial of a fresh catalog. Under the requirement the trusted comment must carry a
/// serial and an expiry; otherwise they are checked when present.
fn fresh(verified: &Verified, required: bool, ctx: Context<'_>) -> Result<Option<u64>, Refusal> {
    let present = freshness::parse(&verified.trusted_comment).is_some();
    if !required && !present {
        return Ok(None);
    }
    match freshness::check(&verified.trusted_comment, ctx.now, ctx.newest_serial) {
        Ok(f) => Ok(Some(f.serial)),
        Err(stale) => {
            let reason = match stale {
                Stale::Missing(_) => FailureReason::CatalogFreshnessMissing,
                Stale::Expired { .. } => FailureReason::CatalogExpired,
                Stale::RolledBack { .. } => FailureReason::CatalogRolledBack,
            };
            Err(Failure::new(reason, format!("spec.signedCatalog: {stale}")))
        }
    }
}

/// What chooses the installed bits besides the image (the OSTree reference, the plugin
/// payload) must be the entry's own: an override outside the signature is refused.
fn signed_override(spec: &OSUpgradeProgressSpec, entry: &CatalogImage) -> Result<(), Refusal> {
    if spec.os_version_management == entry.os_version_management {
        return Ok(());
    }
    let show = |v: Option<&serde_json::Value>| v.map_or("none".to_string(), |v| v.to_string());
    Err(Failure::new(
        FailureReason::OverrideNotSigned,
        format!(
            "spec.osVersionManagement {} is not the signed catalog entry's {} for version {}",
            show(spec.os_version_management.as_ref()),
            show(entry.os_version_management.as_ref()),
            entry.version
        ),
    ))
}

/// The catalog's `blocked` list holds for the node too, not only for the controller.
fn not_blocked(catalog: &Catalog, image: &ImageRef) -> Result<(), Refusal> {
    let Ok(want) = image.version.parse::<Version>() else {
        return Ok(());
    };
    match catalog
        .blocked
        .iter()
        .find(|b| b.parse::<Version>().ok().as_ref() == Some(&want))
    {
        Some(b) => Err(Failure::new(
            FailureReason::VersionBlocked,
            format!(
                "version {} is blocked by the signed catalog (blocked entry {b:?})",
                image.version
            ),
        )),
        None => Ok(()),
    }
}

/// An image older than the running version only with `spec.allowDowngrade`.
fn not_downgrade(
    spec: &OSUpgradeProgressSpec,
    image: &ImageRef,
    running: Option<&str>,
) -> Result<(), Refusal> {
    let parse = |v: &str| v.parse::<Version>().ok();
    let (Some(target), Some(run)) = (parse(&image.version), running.and_then(parse)) else {
        return Ok(());
    };
    if spec.allow_downgrade || target >= run {
        return Ok(());
    }
    Err(Failure::new(
        FailureReason::Downgrade,
        format!(
            "version {} is older than the running {}; spec.allowDowngrade is not set",
            image.version,
            running.unwrap_or_default()
        ),
    ))
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
    if image.reboot_required != entry.reboot_required {
        let show = |r: Option<bool>| r.map_or("unset".to_string(), |r| r.to_string());
        diffs.push(format!(
            "rebootRequired {} (catalog: {})",
            show(image.reboot_required),
            show(entry.reboot_required)
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
    if image.chunk_index != entry.chunk_index {
        let show = |i: Option<&osroll_api::delta::ImageIndex>| {
            i.map_or("none".to_string(), |i| format!("{} {}", i.url, i.checksum))
        };
        diffs.push(format!(
            "chunkIndex {} (catalog: {})",
            show(image.chunk_index.as_ref()),
            show(entry.chunk_index.as_ref())
        ));
    }
    diffs
}

#[cfg(test)]
mod tests;
