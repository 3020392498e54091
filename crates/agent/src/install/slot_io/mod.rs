//! Writing an image to a slot and reading it back.
//!
//! Writes go through `O_DIRECT` when the device or filesystem allows it: large aligned
//! writes straight to the device, no page cache to balloon, and the read-back after
//! `fsync` then really reads the device rather than the cache. Where `O_DIRECT` is
//! refused (tmpfs, some overlay filesystems) the same code falls back to buffered I/O,
//! drops the written range from the page cache after `fsync`, and reads it back.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

// XXH3-128 with AVX2 picked at run time (xxhash-rust only uses what the build targets).
use twox_hash::XxHash3_128 as Xxh3;

use super::aligned::{ALIGN, AlignedBuf};
use super::error::InstallError;
use super::zeros::{self, Part};

/// An open slot.
pub struct SlotFile {
    path: PathBuf,
    buffered: File,
    direct: Option<File>,
    capacity: Option<u64>,
    /// `fallocate(FALLOC_FL_ZERO_RANGE)` has not been refused (yet).
    can_zero: bool,
}

/// What [`SlotFile::open`] may do when the target does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// The slot must exist (agent: partitions and simulated slot files).
    No,
    /// Create a regular file (the `flash` command writing to a new image file).
    Yes,
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

impl SlotFile {
    /// Open `path` for writing without truncating it. The capacity is the size of a block
    /// device or of an existing non-empty regular file; a new or empty file has none.
    pub fn open(path: &Path, direct_io: bool, create: Create) -> Result<SlotFile, InstallError> {
        let exists = path.exists();
        if !exists && create == Create::No {
            return Err(InstallError::io(
                path,
                "open slot",
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let mut buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create == Create::Yes)
            .truncate(false)
            .open(path)
            .map_err(|e| InstallError::io(path, "open slot", e))?;
        let meta = buffered
            .metadata()
            .map_err(|e| InstallError::io(path, "stat slot", e))?;
        let capacity = if meta.file_type().is_block_device() {
            let end = buffered
                .seek(SeekFrom::End(0))
                .map_err(|e| InstallError::io(path, "size block device", e))?;
            Some(end)
        } else if meta.len() > 0 {
            Some(meta.len())
        } else {
            None
        };
        let direct = if direct_io {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(path)
            {
                Ok(f) => Some(f),
                Err(e) if is_einval(&e) => None,
                Err(e) => return Err(InstallError::io(path, "open slot with O_DIRECT", e)),
            }
        } else {
            None
        };
        Ok(SlotFile {
            path: path.to_path_buf(),
            buffered,
            direct,
            capacity,
            can_zero: true,
        })
    }

    /// The slot's size, if it has a fixed one.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Whether writes currently bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The slot's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `data` (which starts at an [`ALIGN`]ed address) at `offset`: the aligned
    /// bulk directly, any unaligned tail through the page cache.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), InstallError> {
        let mut done = 0usize;
        if let Some(direct) = &self.direct
            && offset.is_multiple_of(ALIGN as u64)
        {
            let bulk = data.len() / ALIGN * ALIGN;
            if bulk > 0 {
                match direct.write_all_at(&data[..bulk], offset) {
                    Ok(()) => done = bulk,
                    // Accepted at open, refused at write: continue buffered.
                    Err(e) if is_einval(&e) => self.direct = None,
                    Err(e) => {
                        return Err(InstallError::io(
                            &self.path,
                            format!("write at byte {offset}"),
                            e,
                        ));
                    }
                }
            }
        }
        if done < data.len() {
            let at = offset + done as u64;
            self.buffered
                .write_all_at(&data[done..], at)
                .map_err(|e| InstallError::io(&self.path, format!("write at byte {at}"), e))?;
        }
        Ok(())
    }

    /// Make `len` bytes at `offset` read as zeros without sending them:
    /// `fallocate(FALLOC_FL_ZERO_RANGE)`, which a filesystem does by marking the extents
    /// unwritten (the space stays allocated) and a block device by a write-zeroes command
    /// (or, where it has none, by the kernel writing zeros itself). Returns `false`, and
    /// stops trying, where the slot refuses it (btrfs, tmpfs, ...); the caller then
    /// writes the zeros as data.
    pub fn zero_range(&mut self, offset: u64, len: u64) -> Result<bool, InstallError> {
        if !self.can_zero || len == 0 {
            return Ok(self.can_zero);
        }
        match rustix::fs::fallocate(
            &self.buffered,
            rustix::fs::FallocateFlags::ZERO_RANGE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(e)
                if [
                    rustix::io::Errno::OPNOTSUPP,
                    rustix::io::Errno::INVAL,
                    rustix::io::Errno::NODEV,
                    rustix::io::Errno::NOSYS,
                ]
                .contains(&e) =>
            {
                tracing::debug!(path = %self.path.display(), "FALLOC_FL_ZERO_RANGE refused ({e}); writing zeros");
                self.can_zero = false;
                Ok(false)
            }
            Err(e) => Err(InstallError::io(
                &self.path,
                format!("zero {len} bytes at byte {offset}"),
                e.into(),
            )),
        }
    }

    /// Write an image block at `offset` like [`SlotFile::write_at`], but have the slot
    /// zero runs of at least [`zeros::MIN_ZERO_RUN`] zero bytes instead of writing them
    /// (see [`zeros`]). Returns the number of bytes zeroed rather than written.
    pub fn write_block_at(&mut self, block: &[u8], offset: u64) -> Result<u64, InstallError> {
        if !self.can_zero || !offset.is_multiple_of(zeros::GRANULE as u64) {
            self.write_at(block, offset)?;
            return Ok(0);
        }
        let mut zeroed = 0;
        for part in zeros::split(block, zeros::GRANULE, zeros::MIN_ZERO_RUN) {
            match part {
                Part::Zero(r) if self.zero_range(offset + r.start as u64, r.len() as u64)? => {
                    zeroed += r.len() as u64
                }
                Part::Zero(r) | Part::Data(r) => {
                    self.write_at(&block[r.clone()], offset + r.start as u64)?
                }
            }
        }
        Ok(zeroed)
    }

    /// `fsync` everything written (data, device cache, and a grown file's size).
    pub fn sync(&self) -> Result<(), InstallError> {
        self.buffered
            .sync_all()
            .map_err(|e| InstallError::io(&self.path, "fsync", e))
    }

    /// `fdatasync`: the data written so far is on stable storage.
    pub fn sync_data(&self) -> Result<(), InstallError> {
        self.buffered
            .sync_data()
            .map_err(|e| InstallError::io(&self.path, "fdatasync", e))
    }

    /// A reader that hashes the slot from byte 0 as it advances, through its own file
    /// descriptor (`O_DIRECT` when the slot was opened so), so it can run in another
    /// thread while writing continues.
    pub fn reader(&self, buf: AlignedBuf) -> Result<ReadBack, InstallError> {
        let file = self.direct.as_ref().unwrap_or(&self.buffered);
        let file = file
            .try_clone()
            .map_err(|e| InstallError::io(&self.path, "open for read-back", e))?;
        Ok(ReadBack {
            path: self.path.clone(),
            file,
            hasher: Xxh3::new(),
            done: 0,
            buf,
        })
    }

    /// XXH3-128 of the first `len` bytes as stored, read after [`SlotFile::sync`] (after
    /// dropping them from the page cache when writes went through it).
    pub fn read_back(
        &self,
        len: u64,
        buf: AlignedBuf,
        mut on_progress: impl FnMut(u64),
    ) -> Result<u128, InstallError> {
        if self.direct.is_none() && len > 0 {
            // Best effort: make the reads below come from the device, not the cache.
            let _ = rustix::fs::fadvise(
                &self.buffered,
                0,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::DontNeed,
            );
        }
        let mut r = self.reader(buf)?;
        r.advance(len, &mut on_progress)?;
        Ok(r.digest())
    }
}

/// Incremental read-back of a slot (see [`SlotFile::reader`]).
pub struct ReadBack {
    path: PathBuf,
    file: File,
    hasher: Xxh3,
    done: u64,
    buf: AlignedBuf,
}

impl ReadBack {
    /// Read and hash bytes up to `to`, in buffer-sized aligned reads.
    pub fn advance(
        &mut self,
        to: u64,
        on_progress: &mut impl FnMut(u64),
    ) -> Result<(), InstallError> {
        let cap = self.buf.capacity() as u64;
        while self.done < to {
            let off = self.done;
            let want = (to - off).min(cap);
            let rounded = (want as usize).div_ceil(ALIGN) * ALIGN;
            let window = &mut self.buf.as_mut_slice()[..rounded];
            let mut got = 0usize;
            while (got as u64) < want {
                let at = off + got as u64;
                let n = self.file.read_at(&mut window[got..], at).map_err(|e| {
                    InstallError::io(&self.path, format!("read back at byte {at}"), e)
                })?;
                if n == 0 {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("slot ends before byte {to}"),
                    );
                    return Err(InstallError::io(
                        &self.path,
                        format!("read back at byte {at}"),
                        eof,
                    ));
                }
                got += n;
            }
            self.hasher.write(&window[..want as usize]);
            self.done += want;
            on_progress(self.done);
        }
        Ok(())
    }

    /// XXH3-128 of everything read.
    pub fn digest(&self) -> u128 {
        self.hasher.finish_128()
    }
}

#[cfg(test)]
mod tests;
