//! Range requests for a delta install: one merged range of the pack at a time, resumed
//! where a dropped connection cut it (as the full download resumes), retried with the
//! installer's backoff, and refused when the server answers a Range with the whole file
//! (a delta install would then download everything, so it falls back to the full path).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_RANGE, RANGE};

use crate::install::RetryPolicy;
use crate::install::http::{error_chain, parse_content_range, status_is_retryable};

/// Why a range could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server sent `200 OK` with the whole file instead of `206`.
    #[error("{url}: the server ignored Range: bytes={start}-{end} and answered {status}")]
    RangeIgnored {
        /// Pack URL.
        url: String,
        /// First byte asked for.
        start: u64,
        /// Last byte asked for.
        end: u64,
        /// What it answered.
        status: StatusCode,
    },
    /// Retries exhausted, or an answer no retry can fix.
    #[error("{url}: bytes {start}-{end}: {detail}")]
    Failed {
        /// Pack URL.
        url: String,
        /// First byte asked for.
        start: u64,
        /// Last byte asked for.
        end: u64,
        /// What went wrong last.
        detail: String,
    },
}

/// Fetches byte ranges of one URL, counting what arrives.
#[derive(Clone)]
pub struct RangeFetcher {
    client: reqwest::Client,
    url: String,
    retry: RetryPolicy,
    stall: std::time::Duration,
    fetched: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

/// Whether one attempt can be retried.
enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

impl RangeFetcher {
    /// A fetcher of `url` through `client`.
    pub fn new(
        client: reqwest::Client,
        url: &str,
        retry: RetryPolicy,
        stall: std::time::Duration,
    ) -> Self {
        RangeFetcher {
            client,
            url: url.to_string(),
            retry,
            stall,
            fetched: Arc::default(),
            requests: Arc::default(),
        }
    }

    /// Bytes received so far (all ranges, retries included).
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// HTTP requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes `start..end` of the resource; a cut transfer continues where it stopped.
    pub async fn range(&self, start: u64, end: u64) -> Result<Bytes, FetchError> {
        let mut got = BytesMut::with_capacity((end - start) as usize);
        let mut failures = 0u32;
        loop {
            let before = got.len();
            let detail = match self.attempt(start, end, &mut got).await {
                Ok(()) => return Ok(got.freeze()),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(d)) => d,
            };
            if got.len() > before {
                failures = 0;
            }
            failures += 1;
            tracing::warn!(url = %self.url, start, end, have = got.len(), failures, "range interrupted: {detail}");
            if failures >= self.retry.max_attempts {
                return Err(self.failed(start, end, detail));
            }
            tokio::time::sleep(self.retry.delay(failures, rand::random::<f64>())).await;
        }
    }

    fn failed(&self, start: u64, end: u64, detail: String) -> FetchError {
        FetchError::Failed {
            url: self.url.clone(),
            start,
            end,
            detail,
        }
    }

    /// One request for what of `start..end` is still missing, appended to `got`.
    async fn attempt(&self, start: u64, end: u64, got: &mut BytesMut) -> Result<(), Attempt> {
        let from = start + got.len() as u64;
        let last = end - 1;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let req = self
            .client
            .get(&self.url)
            .header(ACCEPT_ENCODING, "identity")
            .header(RANGE, format!("bytes={from}-{last}"));
        let mut resp = match tokio::time::timeout(self.stall, req.send()).await {
            Err(_) => {
                return Err(Attempt::Retry(format!(
                    "no response within {:?}",
                    self.stall
                )));
            }
            Ok(Err(e)) => return Err(Attempt::Retry(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        self.check_answer(&resp, from, last)?;
        while got.len() < (end - start) as usize {
            let chunk = match tokio::time::timeout(self.stall, resp.chunk()).await {
                Err(_) => return Err(Attempt::Retry(format!("stalled for {:?}", self.stall))),
                Ok(Err(e)) => return Err(Attempt::Retry(error_chain(&e))),
                Ok(Ok(None)) => {
                    return Err(Attempt::Retry(format!(
                        "connection closed {} bytes short",
                        (end - start) as usize - got.len()
                    )));
                }
                Ok(Ok(Some(c))) => c,
            };
            let room = (end - start) as usize - got.len();
            let take = chunk.len().min(room);
            self.fetched
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            got.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }

    /// A 206 for exactly `from..=last`; a 200 means Range is not honoured.
    fn check_answer(&self, resp: &reqwest::Response, from: u64, last: u64) -> Result<(), Attempt> {
        let status = resp.status();
        let fatal = |detail: String| Attempt::Fatal(self.failed(from, last + 1, detail));
        match status {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err(Attempt::Fatal(FetchError::RangeIgnored {
                    url: self.url.clone(),
                    start: from,
                    end: last,
                    status,
                }));
            }
            s if status_is_retryable(s) => {
                return Err(Attempt::Retry(format!("server answered {s}")));
            }
            s => return Err(fatal(format!("server answered {s}"))),
        }
        let cr = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match parse_content_range(cr) {
            Some(r) if r.start == from => Ok(()),
            _ => Err(fatal(format!(
                "asked for bytes={from}-{last}, got Content-Range {cr:?}"
            ))),
        }
    }

    /// The whole resource with one plain GET (the index), retried like a range.
    pub async fn whole(&self, limit: u64) -> Result<Bytes, FetchError> {
        let mut failures = 0u32;
        loop {
            let detail = match self.get_whole(limit).await {
                Ok(b) => return Ok(b),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(d)) => d,
            };
            failures += 1;
            if failures >= self.retry.max_attempts {
                return Err(self.failed(0, 0, detail));
            }
            tokio::time::sleep(self.retry.delay(failures, rand::random::<f64>())).await;
        }
    }

    async fn get_whole(&self, limit: u64) -> Result<Bytes, Attempt> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let req = self
            .client
            .get(&self.url)
            .header(ACCEPT_ENCODING, "identity");
        let mut resp = match tokio::time::timeout(self.stall, req.send()).await {
            Err(_) => {
                return Err(Attempt::Retry(format!(
                    "no response within {:?}",
                    self.stall
                )));
            }
            Ok(Err(e)) => return Err(Attempt::Retry(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        match resp.status() {
            StatusCode::OK => {}
            s if status_is_retryable(s) => {
                return Err(Attempt::Retry(format!("server answered {s}")));
            }
            s => {
                return Err(Attempt::Fatal(self.failed(
                    0,
                    0,
                    format!("server answered {s}"),
                )));
            }
        }
        let mut got = BytesMut::new();
        loop {
            match tokio::time::timeout(self.stall, resp.chunk()).await {
                Err(_) => return Err(Attempt::Retry(format!("stalled for {:?}", self.stall))),
                Ok(Err(e)) => return Err(Attempt::Retry(error_chain(&e))),
                Ok(Ok(None)) => return Ok(got.freeze()),
                Ok(Ok(Some(c))) => {
                    got.extend_from_slice(&c);
                    if got.len() as u64 > limit {
                        return Err(Attempt::Fatal(self.failed(
                            0,
                            0,
                            format!("larger than the {limit} bytes an index may have"),
                        )));
                    }
                }
            }
        }
    }
}
