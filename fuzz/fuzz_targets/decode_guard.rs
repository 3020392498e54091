//! The installer's zstd/size guard: arbitrary bytes (raw, zstd, corrupt or bomb-like)
//! go through the real decode stage with a small declared size and a small slot; it
//! never panics, never hands the writer a byte past the limit, and what it writes is
//! exactly the stream's decoding (raw bytes verbatim, zstd as the reference decoder).
//!
//! Input layout: byte 0 picks the chunk size, bytes 1-2 the declared size (0: none),
//! bytes 3-4 the slot size; the rest is the downloaded stream.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use osroll_agent::install::decode::{Format, sniff};
use osroll_agent::install::guard::{GuardEnd, decode_bounded};

/// Largest zstd window accepted (1 MiB): keeps each run's memory small.
const WINDOW_LOG: u32 = 20;

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<5>() else {
        return;
    };
    let chunk = usize::from(head[0]) * 7 + 1;
    let declared = u64::from(u16::from_le_bytes([head[1], head[2]]));
    let declared = (declared > 0).then_some(declared);
    let slot = u64::from(u16::from_le_bytes([head[3], head[4]])) + 1;
    let report = decode_bounded(stream, chunk, declared, slot, 4096, WINDOW_LOG);
    let limit = declared.unwrap_or(slot).min(slot);
    assert!(
        report.written.len() as u64 <= limit,
        "wrote {} bytes past a limit of {limit}",
        report.written.len()
    );
    match report.end {
        GuardEnd::Refused(_) => {
            assert!(declared.is_some_and(|d| d > slot));
            assert!(report.written.is_empty());
        }
        GuardEnd::Aborted(e) => {
            let msg = e.to_string();
            assert!(msg.contains("exceeds"), "aborted without exceeding: {msg}");
        }
        GuardEnd::Finished { len, hash, error } => {
            if error.is_some() {
                return;
            }
            assert_eq!(len, report.written.len() as u64);
            assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(&report.written));
            match sniff(&stream[..stream.len().min(6)]) {
                Ok(Format::Raw) => assert_eq!(report.written, stream),
                Ok(Format::Zstd) => {
                    // The reference decoder, bounded the same way, must agree.
                    let mut reference = Vec::new();
                    let ok = zstd::stream::read::Decoder::new(stream).and_then(|mut d| {
                        d.window_log_max(WINDOW_LOG)?;
                        d.take(limit + 1).read_to_end(&mut reference)
                    });
                    if ok.is_ok() {
                        assert_eq!(report.written, reference);
                    }
                }
                Err(_) => panic!("an unsupported format finished without error"),
            }
        }
    }
});
