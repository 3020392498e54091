//! Why an install failed, and whether trying again could help.
//!
//! Network trouble (connection refused or reset, a stall, a 5xx answer, a body cut
//! short) is retryable: the installer resumes with a Range request. Everything that says
//! the image itself is wrong (checksum, size, format) or that the slot cannot take it is
//! permanent: retrying would only write the same wrong bytes again.

use std::path::PathBuf;

#[cfg(feature = "node")]
use osroll_api::progress::FailureReason;

/// A failed install. `Display` names the offending value; [`InstallError::reason`] is the
/// machine-readable `failureReason`.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `spec.image` cannot be used (bad checksum syntax, size larger than the slot).
    #[error("invalid image spec: {0}")]
    InvalidSpec(String),
    /// `spec.image.checksum` is not `sha256:<64 hex>`.
    #[cfg(feature = "node")]
    #[error("invalid image spec: {0}")]
    Checksum(#[from] super::http::ChecksumError),
    /// The CA bundle for the image server gives no certificate.
    #[cfg(feature = "node")]
    #[error("invalid image spec: {0}")]
    CaBundle(#[from] super::http::CaBundleError),
    /// Network failures outlasted the retry budget.
    #[error(
        "network error fetching {url} (gave up after {attempts} consecutive failures at byte {offset}): {detail}"
    )]
    Network {
        /// The image URL.
        url: String,
        /// Consecutive failed requests.
        attempts: u32,
        /// Download offset reached.
        offset: u64,
        /// The last failure.
        detail: String,
    },
    /// The server answered in a way no retry can fix (404, a 416 past its announced
    /// length, an image that changed size between requests).
    #[error("HTTP error fetching {url}: {detail}")]
    Http {
        /// The image URL.
        url: String,
        /// What the server did.
        detail: String,
    },
    /// A redirect broke the image source policy (to plain http from https, another
    /// scheme, or too many hops).
    #[error("redirect refused fetching {url}: {detail}")]
    Redirect {
        /// The image URL.
        url: String,
        /// The refused hop and the rule it breaks.
        detail: String,
    },
    /// The server's certificate is not trusted (or the TLS handshake failed otherwise).
    #[error(
        "TLS error fetching {url}: {detail} (a server with a private CA needs its bundle in the agent's --ca-bundle)"
    )]
    Tls {
        /// The image URL.
        url: String,
        /// What rustls said.
        detail: String,
    },
    /// Reading the image from a stream (stdin, a TCP connection) failed or stalled: a
    /// stream cannot be resumed, so this is permanent for the install.
    #[error("reading the image from {from} failed at byte {offset}: {source}")]
    Stream {
        /// `stdin`, or the peer's address.
        from: String,
        /// Bytes received before the failure.
        offset: u64,
        /// What the read returned (`TimedOut` for a stall).
        source: std::io::Error,
    },
    /// The downloaded bytes do not hash to `spec.image.checksum`.
    #[error(
        "checksum mismatch: the {bytes} downloaded bytes hash to sha256:{actual}, spec.image.checksum is sha256:{expected}"
    )]
    ChecksumMismatch {
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
        /// Bytes downloaded.
        bytes: u64,
    },
    /// The decoded image would not fit: stopped before writing past `limit`.
    #[error(
        "image too large: the decoded image exceeds the {what} of {limit} bytes (stopped before writing past it)"
    )]
    TooLarge {
        /// `slot size of /dev/sda3` or `spec.image.size`.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The server sent (or announced) more bytes than any encoding of an image within
    /// the limit can take: an endless or corrupt stream, stopped before reading on.
    #[error(
        "download too large: the server sent or announced more than {cap} bytes, the most an image within the {what} of {limit} bytes can take compressed (stopped reading)"
    )]
    DownloadTooLarge {
        /// `spec.image.size` or `size of <slot>`: what limits the image.
        what: String,
        /// The image limit in bytes.
        limit: u64,
        /// The download cap derived from it.
        cap: u64,
    },
    /// The decoded image is shorter than `spec.image.size`.
    #[error("size mismatch: the image decoded to {actual} bytes, spec.image.size is {expected}")]
    SizeMismatch {
        /// `spec.image.size`.
        expected: u64,
        /// Decoded bytes.
        actual: u64,
    },
    /// The download is not a valid zstd stream (or uses an unsupported compression).
    #[error("invalid image: {0}")]
    Format(String),
    /// Reading or writing the slot failed.
    #[error("I/O error on {}: {op}: {source}", path.display())]
    Io {
        /// The slot device or file.
        path: PathBuf,
        /// What was attempted.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The slot does not read back what was written.
    #[error("read-back mismatch on {}: wrote {len} bytes hashing {wrote}, read back {read}", path.display())]
    VerifyMismatch {
        /// The slot device or file.
        path: PathBuf,
        /// Bytes compared.
        len: u64,
        /// Hash of the decoded stream.
        wrote: String,
        /// Hash read back from the slot.
        read: String,
    },
}

impl InstallError {
    /// The machine-readable reason written to `status.failureReason`.
    #[cfg(feature = "node")]
    pub fn reason(&self) -> FailureReason {
        match self {
            InstallError::InvalidSpec(_)
            | InstallError::Checksum(_)
            | InstallError::CaBundle(_) => FailureReason::InvalidSpec,
            InstallError::Network { .. } | InstallError::Stream { .. } => {
                FailureReason::NetworkError
            }
            InstallError::Http { .. } => FailureReason::HttpError,
            InstallError::Redirect { .. } => FailureReason::RedirectRefused,
            InstallError::Tls { .. } => FailureReason::TlsError,
            InstallError::ChecksumMismatch { .. } => FailureReason::ChecksumMismatch,
            InstallError::TooLarge { .. } | InstallError::DownloadTooLarge { .. } => {
                FailureReason::ImageTooLarge
            }
            InstallError::SizeMismatch { .. } => FailureReason::SizeMismatch,
            InstallError::Format(_) => FailureReason::InvalidImage,
            InstallError::Io { .. } => FailureReason::WriteError,
            InstallError::VerifyMismatch { .. } => FailureReason::VerifyMismatch,
        }
    }

    /// Whether a later attempt could succeed without a different image.
    pub fn is_retryable(&self) -> bool {
        matches!(self, InstallError::Network { .. })
    }

    #[cfg(feature = "node")]
    pub(crate) fn io(
        path: &std::path::Path,
        op: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        InstallError::Io {
            path: path.to_path_buf(),
            op: op.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
