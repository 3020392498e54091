//! The decode stage: turns the downloaded byte stream into the image bytes, in aligned
//! blocks for the writer, one pass and bounded memory.
//!
//! The format is sniffed from the first bytes: a zstd frame (or skippable frame) is
//! decoded, gzip/xz/bzip2 are refused by name, anything else is a raw image. The stage
//! enforces the size limit (`spec.image.size` and the slot's size) *before* handing a
//! block to the writer, so a zstd bomb cannot write a byte past the limit, and it hashes
//! the decoded stream (XXH3-128) for the writer's read-back comparison.

use std::sync::mpsc::{Receiver, SyncSender};

use bytes::Bytes;
// XXH3-128 with AVX2 picked at run time (xxhash-rust only uses what the build targets).
use twox_hash::XxHash3_128 as Xxh3;
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use super::aligned::AlignedBuf;
use super::error::InstallError;

/// A message from the download stage.
pub(crate) enum Input {
    /// The next downloaded bytes.
    Data(Bytes),
    /// The download is complete.
    End,
}

/// A message to the writer.
pub(crate) enum ToWriter {
    /// The next `len` image bytes, in `buf`.
    Block(AlignedBuf, usize),
    /// The image is complete (or was found invalid, see `error`).
    Finish {
        len: u64,
        hash: u128,
        error: Option<InstallError>,
    },
    /// Stop now: the image cannot be installed.
    Abort(InstallError),
}

/// The most bytes the image may decode to, and what imposes that limit.
#[derive(Clone, Debug)]
pub(crate) struct Limit {
    pub bytes: u64,
    pub what: String,
}

/// The sniffed stream format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An uncompressed image.
    Raw,
    /// zstd frames.
    Zstd,
}

/// Classify a stream by its first bytes (at least 4, fewer only at the end of a stream).
pub fn sniff(head: &[u8]) -> Result<Format, String> {
    match head {
        [0x28, 0xB5, 0x2F, 0xFD, ..] => Ok(Format::Zstd),
        [m, 0x2A, 0x4D, 0x18, ..] if m & 0xF0 == 0x50 => Ok(Format::Zstd),
        [0x1F, 0x8B, ..] => {
            Err("gzip-compressed images are not supported (use zstd or a raw image)".into())
        }
        [0xFD, b'7', b'z', b'X', b'Z', 0x00, ..] => {
            Err("xz-compressed images are not supported (use zstd or a raw image)".into())
        }
        [b'B', b'Z', b'h', ..] => {
            Err("bzip2-compressed images are not supported (use zstd or a raw image)".into())
        }
        _ => Ok(Format::Raw),
    }
}

enum Codec {
    Undecided(Vec<u8>),
    Raw,
    Zstd(Box<Decoder<'static>>, usize),
    /// Invalid stream: keep draining so the checksum can still be judged.
    Failed(String),
}

struct Stage {
    codec: Codec,
    out: Option<AlignedBuf>,
    fill: usize,
    emitted: u64,
    hasher: Xxh3,
    limit: Option<Limit>,
    window_log_max: u32,
    to_writer: SyncSender<ToWriter>,
    pool: Receiver<AlignedBuf>,
}

/// Why the stage stopped early.
enum Stop {
    /// The writer is gone (it failed and reported its own error).
    WriterGone,
    /// The image cannot be installed.
    Fatal(InstallError),
}

impl Stage {
    fn buffer(&mut self) -> Result<&mut AlignedBuf, Stop> {
        if self.out.is_none() {
            self.out = Some(self.pool.recv().map_err(|_| Stop::WriterGone)?);
            self.fill = 0;
        }
        Ok(self.out.as_mut().expect("just filled"))
    }

    fn check_limit(&self) -> Result<(), Stop> {
        if let Some(l) = &self.limit
            && self.emitted + self.fill as u64 > l.bytes
        {
            return Err(Stop::Fatal(InstallError::TooLarge {
                what: l.what.clone(),
                limit: l.bytes,
            }));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if let Some(buf) = self.out.take() {
            if self.fill == 0 {
                self.out = Some(buf);
                return Ok(());
            }
            self.hasher.write(&buf.as_slice()[..self.fill]);
            self.emitted += self.fill as u64;
            let len = std::mem::take(&mut self.fill);
            self.to_writer
                .send(ToWriter::Block(buf, len))
                .map_err(|_| Stop::WriterGone)?;
        }
        Ok(())
    }

    fn raw(&mut self, mut data: &[u8]) -> Result<(), Stop> {
        while !data.is_empty() {
            let fill = self.fill;
            let buf = self.buffer()?;
            let n = data.len().min(buf.capacity() - fill);
            buf.as_mut_slice()[fill..fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            self.check_limit()?;
            if self.fill == self.out.as_ref().map_or(0, AlignedBuf::capacity) {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Feed `data` to zstd (`data` empty: drain what the decoder still holds).
    fn zstd(&mut self, data: &[u8]) -> Result<(), Stop> {
        let mut input = InBuffer::around(data);
        loop {
            let fill = self.fill;
            self.buffer()?;
            let Codec::Zstd(dec, last_hint) = &mut self.codec else {
                unreachable!("zstd() on a zstd codec")
            };
            let buf = self.out.as_mut().expect("buffer() filled it");
            let cap = buf.capacity();
            let mut output = OutBuffer::around_pos(buf.as_mut_slice(), fill);
            let consumed_before = input.pos();
            match dec.run(&mut input, &mut output) {
                // A call that neither consumed nor produced anything (draining after the
                // last frame) says nothing about frame completeness.
                Ok(hint) if input.pos() > consumed_before || output.pos() > fill => {
                    *last_hint = hint
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = format!(
                        "zstd stream is corrupt at decoded byte {}: {e}",
                        self.emitted + fill as u64
                    );
                    self.codec = Codec::Failed(msg);
                    return Ok(());
                }
            }
            self.fill = output.pos();
            self.check_limit()?;
            let full = self.fill == cap;
            if full {
                self.flush()?;
            }
            if input.pos() == data.len() && !full {
                return Ok(());
            }
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), Stop> {
        match &mut self.codec {
            Codec::Failed(_) => Ok(()),
            Codec::Raw => self.raw(data),
            Codec::Zstd(..) => self.zstd(data),
            Codec::Undecided(head) => {
                head.extend_from_slice(data);
                if head.len() < 6 {
                    return Ok(());
                }
                let head = std::mem::take(head);
                self.decide(&head)?;
                self.feed(&head)
            }
        }
    }

    fn decide(&mut self, head: &[u8]) -> Result<(), Stop> {
        self.codec = match sniff(head) {
            Ok(Format::Raw) => Codec::Raw,
            Ok(Format::Zstd) => {
                let mut dec = Decoder::new()
                    .map_err(|e| Stop::Fatal(InstallError::Format(format!("zstd: {e}"))))?;
                dec.set_parameter(DParameter::WindowLogMax(self.window_log_max))
                    .map_err(|e| {
                        Stop::Fatal(InstallError::Format(format!("zstd window limit: {e}")))
                    })?;
                Codec::Zstd(Box::new(dec), 1)
            }
            Err(msg) => Codec::Failed(msg),
        };
        Ok(())
    }

    fn finish(&mut self) -> Result<Option<InstallError>, Stop> {
        if let Codec::Undecided(head) = &mut self.codec {
            let head = std::mem::take(head);
            self.decide(&head)?;
            self.feed(&head)?;
        }
        if matches!(self.codec, Codec::Zstd(..)) {
            self.zstd(&[])?;
        }
        match &self.codec {
            Codec::Failed(msg) => return Ok(Some(InstallError::Format(msg.clone()))),
            Codec::Zstd(_, hint) if *hint != 0 => {
                return Ok(Some(InstallError::Format(format!(
                    "zstd stream ends inside a frame after {} decoded bytes (truncated image)",
                    self.emitted + self.fill as u64
                ))));
            }
            _ => {}
        }
        self.flush()?;
        Ok(None)
    }
}

/// Run the decode stage until the download ends or the writer goes away.
pub(crate) fn run(
    mut input: tokio::sync::mpsc::Receiver<Input>,
    to_writer: SyncSender<ToWriter>,
    pool: Receiver<AlignedBuf>,
    limit: Option<Limit>,
    window_log_max: u32,
) {
    let mut stage = Stage {
        codec: Codec::Undecided(Vec::new()),
        out: None,
        fill: 0,
        emitted: 0,
        hasher: Xxh3::new(),
        limit,
        window_log_max,
        to_writer: to_writer.clone(),
        pool,
    };
    let result = (|| {
        loop {
            match input.blocking_recv() {
                Some(Input::Data(b)) => stage.feed(&b)?,
                Some(Input::End) => {
                    let error = stage.finish()?;
                    let msg = ToWriter::Finish {
                        len: stage.emitted,
                        hash: stage.hasher.finish_128(),
                        error,
                    };
                    return to_writer.send(msg).map_err(|_| Stop::WriterGone);
                }
                // The installer was dropped: abandon quietly.
                None => return Err(Stop::WriterGone),
            }
        }
    })();
    if let Err(Stop::Fatal(e)) = result {
        let _ = to_writer.send(ToWriter::Abort(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&[0x28, 0xB5, 0x2F, 0xFD, 0, 0]), Ok(Format::Zstd));
        assert_eq!(sniff(&[0x5E, 0x2A, 0x4D, 0x18]), Ok(Format::Zstd));
        assert_eq!(sniff(b"OSROLL"), Ok(Format::Raw));
        assert_eq!(sniff(b""), Ok(Format::Raw));
        assert!(sniff(&[0x1F, 0x8B, 8, 0]).unwrap_err().contains("gzip"));
        assert!(
            sniff(&[0xFD, b'7', b'z', b'X', b'Z', 0])
                .unwrap_err()
                .contains("xz")
        );
    }

    /// Run the stage over `chunks` and collect what reaches the writer.
    fn decode(
        chunks: Vec<Vec<u8>>,
        limit: Option<u64>,
        buf: usize,
    ) -> (Vec<u8>, Option<String>, Option<String>) {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len() + 1);
        for c in chunks {
            tx.try_send(Input::Data(Bytes::from(c))).ok().unwrap();
        }
        tx.try_send(Input::End).ok().unwrap();
        let (wtx, wrx) = std::sync::mpsc::sync_channel(1000);
        let (ptx, prx) = std::sync::mpsc::channel();
        for _ in 0..1000 {
            ptx.send(AlignedBuf::new(buf)).unwrap();
        }
        let limit = limit.map(|bytes| Limit {
            bytes,
            what: "slot size".into(),
        });
        run(rx, wtx, prx, limit, 27);
        let mut out = Vec::new();
        let (mut finish_err, mut abort) = (None, None);
        for m in wrx.try_iter() {
            match m {
                ToWriter::Block(b, n) => out.extend_from_slice(&b.as_slice()[..n]),
                ToWriter::Finish { len, hash, error } => {
                    if error.is_none() {
                        assert_eq!(len, out.len() as u64);
                        assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(&out));
                    }
                    finish_err = error.map(|e| e.to_string());
                }
                ToWriter::Abort(e) => abort = Some(e.to_string()),
            }
        }
        (out, finish_err, abort)
    }

    fn split(data: &[u8], n: usize) -> Vec<Vec<u8>> {
        data.chunks(n).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn raw_and_zstd_decode_across_odd_chunk_boundaries() {
        let image = crate::simhost::image_bytes("v1", 100_000);
        let z = zstd::encode_all(&image[..], 3).unwrap();
        for chunk in [1, 3, 7, 4096, 1 << 20] {
            assert_eq!(
                decode(split(&image, chunk), None, 8192).0,
                image,
                "raw, chunk {chunk}"
            );
            let (out, err, abort) = decode(split(&z, chunk), None, 8192);
            assert_eq!((err, abort), (None, None));
            assert_eq!(out, image, "zstd, chunk {chunk}");
        }
    }

    #[test]
    fn concatenated_frames_and_tiny_streams() {
        let mut z = zstd::encode_all(&b"hello "[..], 1).unwrap();
        z.extend(zstd::encode_all(&b"world"[..], 1).unwrap());
        assert_eq!(decode(vec![z], None, 4096).0, b"hello world");
        assert_eq!(decode(vec![b"ab".to_vec()], None, 4096).0, b"ab");
    }

    #[test]
    fn a_bomb_stops_at_the_limit_without_emitting_past_it() {
        let z = zstd::encode_all(&vec![0u8; 8 << 20][..], 19).unwrap();
        assert!(z.len() < 4096);
        let (out, _, abort) = decode(vec![z], Some(1 << 20), 64 * 1024);
        let abort = abort.expect("aborted");
        assert!(
            abort.contains("exceeds the slot size of 1048576 bytes"),
            "{abort}"
        );
        assert!(out.len() as u64 <= 1 << 20, "emitted {} bytes", out.len());
    }

    #[test]
    fn raw_image_over_the_limit_is_refused_exactly_at_the_limit() {
        let (out, _, abort) = decode(vec![vec![1u8; 10_000]], Some(10_000), 4096);
        assert_eq!((out.len(), abort), (10_000, None));
        let (out, _, abort) = decode(vec![vec![1u8; 10_001]], Some(10_000), 4096);
        assert!(abort.is_some() && out.len() <= 10_000);
    }

    #[test]
    fn truncated_and_corrupt_zstd_are_format_errors() {
        let image = crate::simhost::image_bytes("v1", 200_000);
        let z = zstd::encode_all(&image[..], 3).unwrap();
        let (_, err, _) = decode(vec![z[..z.len() / 2].to_vec()], None, 8192);
        assert!(err.unwrap().contains("truncated image"));
        // With the frame checksum on (as the zstd CLI writes it), any flipped byte fails.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        std::io::Write::write_all(&mut enc, &image).unwrap();
        let mut bad = enc.finish().unwrap();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let (_, err, abort) = decode(split(&bad, 1000), None, 8192);
        let err = err.expect("format error");
        assert!(err.contains("invalid image"), "{err}");
        assert!(abort.is_none());
        let (_, err, _) = decode(vec![vec![0x1F, 0x8B, 8, 0, 0, 0, 0]], None, 4096);
        assert!(err.unwrap().contains("gzip"));
    }
}
