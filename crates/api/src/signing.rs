//! Detached catalog signatures in minisign format (Ed25519), so catalogs can be signed
//! and checked with the stock `minisign` tool as well as with `osroll catalog`.
//!
//! The controller verifies a catalog against the trusted public keys it was configured
//! with before resolving it; with signing required, an unsigned catalog, a signature by
//! a key it does not trust, or one that does not match the bytes is a [`Rejection`].

use std::io::Cursor;

use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox, SignatureBox};

use crate::catalog::{Rejection, RejectionReason, digest};

/// A public key together with the 16-hex-digit key id minisign prints.
#[derive(Clone)]
pub struct TrustedKey {
    key: PublicKey,
    /// Key id, as `minisign -V` shows it.
    pub id: String,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({})", self.id)
    }
}

fn key_id(keynum: &[u8]) -> String {
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// Why a key could not be read or made, or data could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A line of a public key file is not a minisign public key.
    #[error("line {line}: not a minisign public key")]
    PublicKey {
        /// 1-based line number.
        line: usize,
        /// What minisign found wrong.
        #[source]
        source: minisign::PError,
    },
    /// The text is not a minisign secret key file.
    #[error("not a minisign secret key")]
    SecretKey(#[source] minisign::PError),
    /// The secret key could not be decrypted or decoded.
    #[error("cannot open secret key")]
    OpenSecretKey(#[source] minisign::PError),
    /// Generating or encoding a key pair failed.
    #[error("cannot generate a key pair")]
    Keygen(#[source] minisign::PError),
    /// Signing failed.
    #[error("cannot sign")]
    Sign(#[source] minisign::PError),
}

/// Parse public keys: minisign `.pub` files (comment line + base64) or bare base64
/// lines, several allowed, blank lines and `untrusted comment:` lines ignored.
pub fn parse_public_keys(text: &str) -> Result<Vec<TrustedKey>, SigningError> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("untrusted comment:") || line.starts_with('#') {
            continue;
        }
        let key = PublicKey::from_base64(line).map_err(|source| SigningError::PublicKey {
            line: n + 1,
            source,
        })?;
        let id = key_id(key.keynum());
        keys.push(TrustedKey { key, id });
    }
    Ok(keys)
}

/// What a verification proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Id of the key that signed.
    pub key_id: String,
    /// `sha256:` digest of the catalog bytes.
    pub digest: String,
    /// The signature's trusted comment.
    pub trusted_comment: String,
}

/// Check `catalog` against `signature` (minisign text) and the trusted `keys`.
///
/// Without a signature: `Ok(None)` unless `require` is set. With one, it must verify
/// whatever `require` says: a bad signature is never ignored.
pub fn verify_catalog(
    catalog: &[u8],
    signature: Option<&str>,
    keys: &[TrustedKey],
    require: bool,
) -> Result<Option<Verified>, Rejection> {
    let reject = |reason, message: String| Rejection { reason, message };
    let Some(sig_text) = signature.filter(|s| !s.trim().is_empty()) else {
        return if require {
            Err(reject(
                RejectionReason::SignatureMissing,
                "the catalog is unsigned and the controller requires signed catalogs".into(),
            ))
        } else {
            Ok(None)
        };
    };
    let sig = SignatureBox::from_string(sig_text).map_err(|e| {
        reject(
            RejectionReason::SignatureInvalid,
            format!("catalog signature is not minisign: {e}"),
        )
    })?;
    let sig_id = key_id(sig.keynum());
    let Some(key) = keys.iter().find(|k| k.key.keynum() == sig.keynum()) else {
        let known: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        return Err(reject(
            RejectionReason::UnknownSigningKey,
            format!(
                "catalog is signed by key {sig_id}, which is not trusted (trusted: {})",
                known.join(", ")
            ),
        ));
    };
    minisign::verify(&key.key, &sig, Cursor::new(catalog), true, false, false).map_err(|e| {
        reject(
            RejectionReason::SignatureInvalid,
            format!("catalog signature by key {sig_id} does not match the catalog bytes: {e}"),
        )
    })?;
    Ok(Some(Verified {
        key_id: sig_id,
        digest: digest(catalog),
        trusted_comment: sig.trusted_comment().unwrap_or_default(),
    }))
}

/// The trusted comment of a minisign signature text, unverified (to read back what was
/// signed last, not to trust it).
pub fn trusted_comment(signature: &str) -> Option<String> {
    SignatureBox::from_string(signature)
        .ok()?
        .trusted_comment()
        .ok()
}

/// A new unencrypted key pair as (public key file text, secret key file text).
pub fn keygen() -> Result<(String, String), SigningError> {
    let kp = KeyPair::generate_unencrypted_keypair().map_err(SigningError::Keygen)?;
    let pk = kp.pk.to_box().map_err(SigningError::Keygen)?.into_string();
    let sk = kp
        .sk
        .to_box(None)
        .map_err(SigningError::Keygen)?
        .into_string();
    Ok((pk, sk))
}

/// Sign `data` with a minisign secret key file (unencrypted, or decrypted with
/// `password`); returns the `.minisig` text.
pub fn sign(
    data: &[u8],
    secret_key: &str,
    password: Option<String>,
    comment: Option<&str>,
) -> Result<String, SigningError> {
    let sk_box = SecretKeyBox::from_string(secret_key).map_err(SigningError::SecretKey)?;
    let sk = match password {
        None => SecretKey::from_unencrypted_box(sk_box),
        Some(p) => SecretKey::from_box(sk_box, Some(p)),
    }
    .map_err(SigningError::OpenSecretKey)?;
    let sig =
        minisign::sign(None, &sk, Cursor::new(data), comment, None).map_err(SigningError::Sign)?;
    Ok(sig.into_string())
}
