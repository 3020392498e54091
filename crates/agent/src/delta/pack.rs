//! `osroll image pack`: cut an image into content-defined chunks and compress each as an
//! independent zstd frame of a seekable-format file (zeekstd), writing the chunk index
//! beside it. The frames are concatenated zstd frames followed by the seek table in a
//! skippable frame, so any zstd decoder (and the full installer) decodes the file whole.

use std::io::{Read, Write};

use fastcdc::v2020::StreamCDC;
use sha2::{Digest, Sha256};
use zeekstd::{EncodeOptions, Encoder, FrameSizePolicy};

use super::index::{Chunk, ChunkIndex, Chunking, FORMAT};

/// The zstd level of each frame (the level `bench/flash.sh` compresses with).
pub const LEVEL: i32 = 3;

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading the image failed.
    #[error("reading the image: {0}")]
    Read(#[source] std::io::Error),
    /// Compressing or writing the pack failed.
    #[error("writing the pack: {0}")]
    Write(#[source] std::io::Error),
    /// The seekable-format encoder refused.
    #[error("zstd seekable encoder: {0}")]
    Encoder(#[from] zeekstd::Error),
}

/// Hashes and counts what passes through to the pack file.
struct Tee<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Pack `image` into `out` with `chunking`; returns the index of what was written.
pub fn pack(
    image: impl Read,
    out: impl Write,
    chunking: Chunking,
) -> Result<ChunkIndex, PackError> {
    let opts = EncodeOptions::new()
        .compression_level(LEVEL)
        .checksum_flag(false)
        .frame_size_policy(FrameSizePolicy::Uncompressed(u32::MAX));
    let mut tee = Tee {
        inner: out,
        sha: Sha256::new(),
        len: 0,
    };
    let mut enc = Encoder::with_opts(&mut tee, opts)?;
    let mut image_sha = Sha256::new();
    let mut lengths = Vec::new();
    let cdc = StreamCDC::new(
        image,
        chunking.min as usize,
        chunking.avg as usize,
        chunking.max as usize,
    );
    for chunk in cdc {
        let chunk = chunk.map_err(|e| PackError::Read(e.into()))?;
        image_sha.update(&chunk.data);
        let n = enc.compress(&chunk.data)?;
        debug_assert_eq!(n, chunk.data.len());
        enc.end_frame()?;
        lengths.push((chunk.length as u64, Sha256::digest(&chunk.data).into()));
    }
    let table = enc.seek_table().clone();
    enc.finish()?;
    let mut chunks = Vec::with_capacity(lengths.len());
    let mut image_offset = 0;
    for (i, (image_length, sha256)) in lengths.into_iter().enumerate() {
        let frame = u32::try_from(i).expect("fewer than 2^32 frames");
        chunks.push(Chunk {
            offset: table.frame_start_comp(frame)?,
            length: table.frame_size_comp(frame)?,
            image_offset,
            image_length,
            sha256,
        });
        image_offset += image_length;
    }
    Ok(ChunkIndex {
        format: FORMAT.into(),
        chunking,
        image_size: image_offset,
        image_sha256: image_sha.finalize().into(),
        pack_size: tee.len,
        pack_sha256: tee.sha.finalize().into(),
        chunks,
    })
}

#[cfg(test)]
mod tests;
