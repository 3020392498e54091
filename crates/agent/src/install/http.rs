//! Pure helpers for the download stage: the checksum syntax, `Content-Range` parsing,
//! and which HTTP answers are worth retrying.

use reqwest::StatusCode;

/// Parse `sha256:<64 hex>` (hex in either case) into the digest bytes.
pub fn parse_checksum(s: &str) -> Result<[u8; 32], String> {
    let hex_part = s
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("checksum {s:?} must start with \"sha256:\""))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|_| format!("checksum {s:?} must be \"sha256:\" followed by 64 hex digits"))?;
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
            assert!(e.contains(bad), "{e}");
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
