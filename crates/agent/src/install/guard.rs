//! The installer's size guard on its own: which limit applies to the decoded image
//! (`limit_for`, used by the installer), and [`decode_bounded`], which runs the real
//! decode stage synchronously over a byte string with that limit and reports exactly
//! what would have reached the slot writer.
//!
//! [`decode_bounded`] is the entry point of the `decode_guard` fuzz target (`fuzz/`):
//! whatever the bytes (raw, zstd, a bomb, a corrupt frame), the stage must not panic and
//! must never hand the writer a byte past the limit. It exercises the same code as an
//! installation; only the network and the slot are replaced by in-memory channels.

use bytes::Bytes;

use super::aligned::AlignedBuf;
use super::decode::{self, Input, Limit, ToWriter};
use super::error::InstallError;

/// The limit on the decoded size: the smaller of `spec.image.size` (`declared`) and the
/// slot's capacity (`capacity`, `None` when unknown), naming what imposes it. A declared
/// size larger than the slot is refused before a byte is downloaded.
pub(crate) fn limit_for(
    declared: Option<u64>,
    capacity: Option<u64>,
    slot: &str,
) -> Result<Option<Limit>, InstallError> {
    Ok(match (declared, capacity) {
        (Some(size), Some(cap)) if size > cap => {
            return Err(InstallError::TooLarge {
                what: format!("size of {slot} (spec.image.size is {size})"),
                limit: cap,
            });
        }
        (Some(s), Some(c)) if c <= s => Some(Limit {
            bytes: c,
            what: format!("size of {slot}"),
        }),
        (Some(s), _) => Some(Limit {
            bytes: s,
            what: "spec.image.size".into(),
        }),
        (None, Some(c)) => Some(Limit {
            bytes: c,
            what: format!("size of {slot}"),
        }),
        (None, None) => None,
    })
}

/// The most bytes the download of an image of at most `limit` bytes may take, so that an endless
/// or corrupt stream (skippable frames, garbage after a frame the decoder gave up on)
/// stops there instead of downloading forever. A raw image is at most `limit` bytes, and
/// zstd never grows data past its compress bound (`n + n/256` plus a few bytes per
/// frame); the bound here doubles that slack and adds 1 MiB for frame headers and small
/// skippable frames.
#[cfg_attr(
    not(feature = "node"),
    expect(dead_code, reason = "only the node's downloader caps downloads")
)]
pub(crate) fn download_cap(limit: u64) -> u64 {
    limit.saturating_add(limit / 128).saturating_add(1 << 20)
}

/// How a [`decode_bounded`] run ended.
#[derive(Debug)]
pub enum GuardEnd {
    /// Refused before decoding (a declared size larger than the slot).
    Refused(InstallError),
    /// The stream ended; `error` says if it was not a valid image.
    Finished {
        /// Decoded length the stage reported.
        len: u64,
        /// XXH3-128 the stage reported for the decoded bytes.
        hash: u128,
        /// A format error (corrupt or truncated zstd, unsupported compression).
        error: Option<InstallError>,
    },
    /// The stage stopped early (the limit was exceeded).
    Aborted(InstallError),
}

/// What the writer would have received.
#[derive(Debug)]
pub struct GuardReport {
    /// The decoded bytes handed to the writer, in order.
    pub written: Vec<u8>,
    /// The limit that applied, if any.
    pub limit: Option<u64>,
    /// How the stage ended.
    pub end: GuardEnd,
}

/// Run the decode stage over `data`, delivered in pieces of `chunk` bytes, for an image
/// declared as `declared` bytes going to a slot of `capacity` bytes, with `block`-byte
/// writer buffers and zstd windows up to 2^`window_log_max` bytes. Everything happens on
/// the calling thread (the stage gets enough buffers that it never waits for a writer).
pub fn decode_bounded(
    data: &[u8],
    chunk: usize,
    declared: Option<u64>,
    capacity: u64,
    block: usize,
    window_log_max: u32,
) -> GuardReport {
    let limit = match limit_for(declared, Some(capacity), "the fuzzed slot") {
        Ok(l) => l,
        Err(e) => {
            return GuardReport {
                written: Vec::new(),
                limit: Some(capacity),
                end: GuardEnd::Refused(e),
            };
        }
    };
    let limit_bytes = limit.as_ref().map(|l| l.bytes);
    let rx = delivered(data, chunk);
    let (prx, buffers) = buffer_pool(limit_bytes, block);
    let (wtx, wrx) = std::sync::mpsc::sync_channel(buffers + 1);
    decode::run(rx, wtx, prx, limit, window_log_max, None);
    collect(wrx, limit_bytes)
}

/// `data` in pieces of `chunk` bytes, then the end, all queued already.
fn delivered(data: &[u8], chunk: usize) -> tokio::sync::mpsc::Receiver<Input> {
    let chunks: Vec<&[u8]> = data.chunks(chunk.max(1)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.len() + 1);
    for c in chunks {
        tx.try_send(Input::Data(Bytes::copy_from_slice(c)))
            .unwrap_or_else(|_| unreachable!("the channel holds every chunk"));
    }
    tx.try_send(Input::End)
        .unwrap_or_else(|_| unreachable!("the channel holds every chunk"));
    rx
}

/// Enough `block`-byte buffers that the stage never waits for a writer: within the
/// limit it fills at most limit/block buffers, plus the one it overflows. The pool and
/// how many it holds (the writer queue must be as deep).
fn buffer_pool(limit: Option<u64>, block: usize) -> (std::sync::mpsc::Receiver<AlignedBuf>, usize) {
    let buf = AlignedBuf::new(block);
    let buffers = limit.map_or(1, |l| l.div_ceil(buf.capacity() as u64) as usize + 2);
    let (ptx, prx) = std::sync::mpsc::channel();
    ptx.send(buf).expect("receiver alive");
    for _ in 1..buffers {
        ptx.send(AlignedBuf::new(block)).expect("receiver alive");
    }
    (prx, buffers)
}

/// What reached the writer, and how the stage ended.
fn collect(wrx: std::sync::mpsc::Receiver<ToWriter>, limit_bytes: Option<u64>) -> GuardReport {
    let mut written = Vec::new();
    let mut end = None;
    for m in wrx.try_iter() {
        match m {
            ToWriter::Block(b, n) => written.extend_from_slice(&b.as_slice()[..n]),
            ToWriter::Finish { len, hash, error } => {
                end = Some(GuardEnd::Finished { len, hash, error })
            }
            ToWriter::Abort(e) => end = Some(GuardEnd::Aborted(e)),
        }
    }
    GuardReport {
        written,
        limit: limit_bytes,
        end: end.unwrap_or_else(|| {
            // Only possible if the stage ran out of buffers, i.e. wrote past the limit.
            GuardEnd::Aborted(InstallError::Format(
                "decode stage stopped without finishing (ran out of writer buffers)".into(),
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_the_smaller_bound_and_names_it() {
        let l = limit_for(Some(100), Some(200), "/dev/x").unwrap().unwrap();
        assert_eq!((l.bytes, l.what.as_str()), (100, "spec.image.size"));
        let l = limit_for(Some(200), Some(200), "/dev/x").unwrap().unwrap();
        assert_eq!((l.bytes, l.what.as_str()), (200, "size of /dev/x"));
        let l = limit_for(None, Some(50), "/dev/x").unwrap().unwrap();
        assert_eq!(l.bytes, 50);
        assert!(limit_for(None, None, "/dev/x").unwrap().is_none());
        let e = limit_for(Some(300), Some(200), "/dev/x").unwrap_err();
        assert!(e.to_string().contains("spec.image.size is 300"), "{e}");
    }

    #[test]
    fn the_download_cap_covers_any_zstd_stream_of_an_image_within_the_limit() {
        let limit = 3 << 20;
        let cap = download_cap(limit);
        // Incompressible data, in one frame and in many small frames, at the limit.
        let noise: Vec<u8> = (0..limit as usize)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let one = zstd::encode_all(&noise[..], 1).unwrap();
        let many: Vec<u8> = noise
            .chunks(16 << 10)
            .flat_map(|c| zstd::encode_all(c, 1).unwrap())
            .collect();
        for z in [one, many] {
            assert!((z.len() as u64) <= cap, "{} > {cap}", z.len());
        }
        assert_eq!(download_cap(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_bomb_is_stopped_at_the_declared_size() {
        let z = zstd::encode_all(&vec![7u8; 1 << 20][..], 19).unwrap();
        let r = decode_bounded(&z, 5, Some(10_000), 50_000, 4096, 27);
        assert!(r.written.len() <= 10_000, "{}", r.written.len());
        let GuardEnd::Aborted(e) = r.end else {
            panic!("not aborted: {:?}", r.end)
        };
        assert!(e.to_string().contains("spec.image.size"), "{e}");
    }

    #[test]
    fn a_valid_image_within_the_limit_is_written_whole() {
        let img = crate::simhost::image_bytes("v1", 9_000);
        let z = zstd::encode_all(&img[..], 3).unwrap();
        let r = decode_bounded(&z, 100, Some(9_000), 9_000, 4096, 27);
        assert_eq!(r.written, img);
        assert!(matches!(
            r.end,
            GuardEnd::Finished {
                len: 9_000,
                error: None,
                ..
            }
        ));
        let r = decode_bounded(&img, 7, None, 9_000, 4096, 27);
        assert_eq!(r.written, img);
        let r = decode_bounded(&img, 7, Some(9_001), 9_000, 4096, 27);
        assert!(matches!(r.end, GuardEnd::Refused(_)) && r.written.is_empty());
    }
}
