//! The download stage's HTTP client and its pure helpers: the client applies the image
//! source policy to redirects (bounded, never from https to anything else) and trusts
//! extra CA bundles; plus the checksum syntax, `Content-Range` parsing, and which HTTP
//! answers are worth retrying.

use reqwest::StatusCode;

use super::{InstallError, InstallOptions};

/// The installer's HTTP client: connect timeout, redirect policy, trusted roots.
pub fn client(opts: &InstallOptions) -> Result<reqwest::Client, InstallError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .redirect(redirect_policy())
        .tls_built_in_root_certs(opts.builtin_roots);
    if let Some(pem) = &opts.extra_ca_pem {
        for cert in parse_ca_bundle(pem)? {
            b = b.add_root_certificate(cert);
        }
    } else if !opts.builtin_roots {
        return Err(InstallError::InvalidSpec(
            "no trusted roots: built-in roots are off and no CA bundle is given".into(),
        ));
    }
    b.build()
        .map_err(|e| InstallError::InvalidSpec(format!("HTTP client: {}", error_chain(&e))))
}

/// A CA bundle that gives no certificate.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    /// It does not parse as PEM.
    #[error("CA bundle: {}", error_chain(.0))]
    Unreadable(#[source] reqwest::Error),
    /// It parses but holds no certificate.
    #[error("CA bundle holds no PEM certificate")]
    Empty,
}

/// The certificates of a PEM bundle; an empty or unreadable bundle is an error.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, CaBundleError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(CaBundleError::Unreadable)?;
    if certs.is_empty() {
        return Err(CaBundleError::Empty);
    }
    Ok(certs)
}

/// Follow a redirect only where [`osroll_api::policy::check_redirect`] allows it: at most
/// `MAX_REDIRECTS` hops, never from https to another scheme, plain http only when the
/// image URL itself was http (the OSUpgrade opted in).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // `previous` holds every URL requested so far, the image URL first.
        let prev = attempt.previous();
        let (Some(first), Some(from)) = (prev.first(), prev.last()) else {
            return attempt.error("redirect without a previous URL");
        };
        let allow_http = first.scheme() == "http";
        match osroll_api::policy::check_redirect(from, attempt.url(), prev.len(), allow_http) {
            Ok(()) => attempt.follow(),
            Err(v) => attempt.error(v),
        }
    })
}

/// Whether a request failed in TLS (an untrusted certificate, a failed handshake).
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<rustls::Error>() {
            return true;
        }
        // io::Error::source skips the wrapped error itself: look at it directly.
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && (inner.is::<rustls::Error>() || is_tls_error(inner))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A checksum that is not `sha256:<64 hex>`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ChecksumError {
    /// Another algorithm, or none.
    #[error("checksum {0:?} must start with \"sha256:\"")]
    NotSha256(String),
    /// The digest is not 64 hex digits.
    #[error("checksum {checksum:?} must be \"sha256:\" followed by 64 hex digits")]
    NotHex {
        /// The checksum.
        checksum: String,
        /// What is wrong with the digest.
        source: hex::FromHexError,
    },
}

/// Parse `sha256:<64 hex>` (hex in either case) into the digest bytes.
pub fn parse_checksum(s: &str) -> Result<[u8; 32], ChecksumError> {
    let hex_part = s
        .strip_prefix("sha256:")
        .ok_or_else(|| ChecksumError::NotSha256(s.to_string()))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|source| ChecksumError::NotHex {
        checksum: s.to_string(),
        source,
    })?;
    Ok(out)
}

/// A parsed `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte served.
    pub start: u64,
    /// Last byte served (inclusive).
    pub end: u64,
    /// Full length of the resource, if announced.
    pub total: Option<u64>,
}

/// Parse a `Content-Range` header value of a 206 answer.
pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end && total.is_none_or(|t| end < t)).then_some(ContentRange { start, end, total })
}

/// Whether an error status is transient (server trouble, throttling, timeouts).
pub fn status_is_retryable(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS
}

/// An error and its causes on one line (reqwest hides the useful part in `source()`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        let hex64 = "AB".repeat(32);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex64}")).unwrap(),
            [0xAB; 32]
        );
        for bad in [
            "md5:00",
            "sha256:abc",
            &format!("sha256:{}", "zz".repeat(32)),
            &hex64,
        ] {
            let e = parse_checksum(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(1000)
            })
        );
        assert_eq!(parse_content_range("bytes 0-0/*").unwrap().total, None);
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes x-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn retryable_statuses() {
        assert!(status_is_retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(status_is_retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!status_is_retryable(StatusCode::NOT_FOUND));
        assert!(!status_is_retryable(StatusCode::FORBIDDEN));
    }
}
