//! Delta updates: install a point release by fetching only the parts of the image the
//! active slot does not already hold.
//!
//! One artifact serves full and delta clients ([`pack`]): the image is cut into
//! content-defined chunks (FastCDC), each compressed as its own zstd frame in the
//! seekable format, so `zstd -dc` and the full installer decode it whole, while a delta
//! client fetches single frames with HTTP Range requests. Beside it, a chunk [`index`]
//! lists every frame's place in the file, its place in the image and its SHA-256, and
//! the whole image's SHA-256; the signed catalog names the index by URL and checksum.
//!
//! A delta install ([`install`]) chunks the seed (the active slot) with the same
//! parameters ([`seed`]), decides per chunk whether to copy it from the seed or fetch
//! its frame ([`plan`], pure), fetches the missing frames in merged ranges ([`fetch`]),
//! and feeds the assembled image (every chunk checked against its SHA-256) to the
//! ordinary installer as a raw stream, which writes it and reads the slot back. The
//! seed's chunks may instead come from the index the seed was installed from, recorded
//! by the agent (`backends::slot_record`).
//! The format is described in `docs/delta.md`.

mod assemble;
pub mod fetch;
pub mod index;
mod install;
pub mod pack;
pub mod plan;
pub mod seed;

pub use assemble::decode_checked;
pub use index::{Chunk, ChunkIndex, Chunking, IndexError};
pub use install::{
    DeltaCounters, DeltaError, DeltaInstaller, DeltaOptions, DeltaReport, DeltaSpec,
    MAX_INDEX_BYTES,
};
pub use pack::{PackError, pack};
