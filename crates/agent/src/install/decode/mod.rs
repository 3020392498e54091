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

/// A compression the installer does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}-compressed images are not supported (use zstd or a raw image)")]
pub struct Unsupported(pub &'static str);

/// Classify a stream by its first bytes (at least 4, fewer only at the end of a stream).
pub fn sniff(head: &[u8]) -> Result<Format, Unsupported> {
    match head {
        [0x28, 0xB5, 0x2F, 0xFD, ..] => Ok(Format::Zstd),
        [m, 0x2A, 0x4D, 0x18, ..] if m & 0xF0 == 0x50 => Ok(Format::Zstd),
        [0x1F, 0x8B, ..] => Err(Unsupported("gzip")),
        [0xFD, b'7', b'z', b'X', b'Z', 0x00, ..] => Err(Unsupported("xz")),
        [b'B', b'Z', b'h', ..] => Err(Unsupported("bzip2")),
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
            Err(e) => Codec::Failed(e.to_string()),
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
    format: Option<Format>,
) {
    let mut stage = Stage {
        codec: match format {
            Some(Format::Raw) => Codec::Raw,
            _ => Codec::Undecided(Vec::new()),
        },
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
mod tests;
