//! The streaming installer: download an image, check it, decode it and write it to a
//! slot in one pass with bounded memory, then prove the slot holds it.
//!
//! Three stages run concurrently, connected by bounded channels:
//!
//! 1. **download** (async, this module): HTTP(S) GET through reqwest/rustls; every
//!    received byte is fed to SHA-256 (checked against `spec.image.checksum` at the end)
//!    and forwarded in ~1 MiB batches. A dropped connection, a stall longer than
//!    `stall_timeout`, a 5xx or a body cut short is retried with backoff and jitter as a
//!    `Range: bytes=<offset>-` request, so the stream continues where it stopped (a server
//!    that ignores Range is handled by skipping what we already have).
//! 2. **decode** ([`decode`], a thread): zstd or raw, size limits, XXH3 of the image.
//! 3. **write** (a thread): large aligned `O_DIRECT` writes ([`slot_io`]) from a small pool
//!    of 4 MiB buffers, with runs of zeros of 1 MiB or more zeroed by the slot instead
//!    of written ([`zeros`]), `fsync`, then a read-back of the slot whose XXH3 must equal
//!    the decoded stream's. (SHA-256 authenticates the download; the read-back only has to
//!    catch a device that lost or mangled writes, for which a 128-bit non-cryptographic
//!    hash at memory speed is the right tool.)
//!
//! Memory is bounded by the buffer pool, the batch channel and zstd's window (capped by
//! `window_log_max`): about 30 MiB with the defaults. When network retries are
//! exhausted the [`Installer`] keeps its pipeline, so a later [`Installer::run`] resumes
//! the download at the same offset (the agent does this when `retryNonce` changes).

pub mod aligned;
pub mod decode;
pub mod error;
pub mod guard;
#[cfg(feature = "node")]
pub mod http;
#[cfg(feature = "node")]
mod installer;
#[cfg(feature = "node")]
pub mod retry;
#[cfg(feature = "node")]
pub mod slot_io;
pub mod zeros;

pub use error::InstallError;
#[cfg(feature = "node")]
pub use installer::*;
#[cfg(feature = "node")]
pub use retry::RetryPolicy;
#[cfg(feature = "node")]
pub use slot_io::Create;
