//! Finding the all-zero stretches of an image block, so the writer can have the slot
//! zero them (`fallocate(FALLOC_FL_ZERO_RANGE)`: unwritten extents in a file, a
//! write-zeroes command on a block device) instead of sending the zeros as data.
//!
//! A root filesystem image is largely free space, and free space is zeros. Not writing
//! it saves device bandwidth twice, because every written byte is also read back for
//! verification; a zeroed range still reads back as zeros and is hashed like the rest.
//! This is the same idea as `dd conv=sparse` or bmaptool, without needing a block map.

use std::ops::Range;

/// Granularity at which zeros are detected. A multiple of the `O_DIRECT` alignment, so
/// every part starts on an aligned offset when the block does.
pub const GRANULE: usize = 64 * 1024;

/// Shortest zero run that gets its own zeroing call; shorter runs are written with the
/// data around them, which keeps the number of system calls per block small.
pub const MIN_ZERO_RUN: usize = 1 << 20;

/// One stretch of a block, as byte offsets into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Write these bytes.
    Data(Range<usize>),
    /// These bytes are all zero: zero the range instead of writing it.
    Zero(Range<usize>),
}

/// Whether every byte of `bytes` is zero. Checks 4 KiB at a time with a loop the
/// compiler vectorizes, and stops at the first 4 KiB holding a set bit, so data blocks
/// cost little.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Split `block` into data and zero parts that cover it exactly, in order. Only whole
/// granules can be zero (a partial granule at the end is data), and a zero run shorter
/// than `min_zero` stays data.
pub fn split(block: &[u8], granule: usize, min_zero: usize) -> Vec<Part> {
    assert!(granule > 0, "granule must not be 0");
    let mut parts: Vec<Part> = Vec::new();
    let mut push = |zero: bool, r: Range<usize>| match (parts.last_mut(), zero) {
        (Some(Part::Data(last)), false) | (Some(Part::Zero(last)), true) => last.end = r.end,
        _ => parts.push(if zero { Part::Zero(r) } else { Part::Data(r) }),
    };
    let mut at = 0;
    while at < block.len() {
        let end = (at + granule).min(block.len());
        let zero = end - at == granule && is_zero(&block[at..end]);
        push(zero, at..end);
        at = end;
    }
    // Demote short zero runs, then merge the data parts that became neighbours.
    let mut merged: Vec<Part> = Vec::with_capacity(parts.len());
    for part in parts {
        let part = match part {
            Part::Zero(r) if r.len() < min_zero => Part::Data(r),
            p => p,
        };
        match (merged.last_mut(), &part) {
            (Some(Part::Data(last)), Part::Data(r)) => last.end = r.end,
            _ => merged.push(part),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
