//! The delta plan, a pure function of the index and the seed: for every chunk of the new
//! image, copy it from the seed or fetch its frame; and the frames to fetch, merged into
//! few HTTP ranges (neighbours, and across small gaps of reusable frames, which cost less
//! to download than a request).

use std::ops::Range;

use super::index::ChunkIndex;
use super::seed::{SeedChunk, SeedMap};

/// Where one chunk of the new image comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Copied from the seed.
    Seed(SeedChunk),
    /// Decoded from its fetched frame.
    Fetch,
}

/// One HTTP range: the frames of chunks `chunks`, bytes `start..end` of the pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRange {
    /// First byte in the pack.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The chunks whose frames it holds (some may be sourced from the seed).
    pub chunks: Range<usize>,
}

/// How ranges are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merge {
    /// Fetch over a run of reusable frames this long or shorter rather than split.
    pub max_gap: u64,
    /// No range longer than this (one in-flight range is held in memory).
    pub max_len: u64,
}

impl Default for Merge {
    fn default() -> Self {
        Merge {
            max_gap: 32 << 10,
            max_len: 4 << 20,
        }
    }
}

/// The plan of a delta install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Per chunk of the index, in image order.
    pub sources: Vec<Source>,
    /// The ranges to fetch, in pack order.
    pub ranges: Vec<FetchRange>,
}

impl Plan {
    /// Image bytes copied from the seed.
    pub fn reused(&self, index: &ChunkIndex) -> u64 {
        self.sources
            .iter()
            .zip(&index.chunks)
            .filter(|(s, _)| matches!(s, Source::Seed(_)))
            .map(|(_, c)| c.image_length)
            .sum()
    }

    /// Pack bytes the ranges fetch.
    pub fn fetched(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }
}

/// Decide every chunk's source and the ranges to fetch.
pub fn plan(index: &ChunkIndex, seed: &SeedMap, merge: Merge) -> Plan {
    let sources: Vec<Source> = index
        .chunks
        .iter()
        .map(|c| match seed.find(&c.sha256) {
            Some(s) if s.length == c.image_length => Source::Seed(s),
            _ => Source::Fetch,
        })
        .collect();
    let wanted: Vec<usize> = (0..sources.len())
        .filter(|&i| sources[i] == Source::Fetch)
        .collect();
    Plan {
        ranges: ranges(index, &wanted, merge),
        sources,
    }
}

/// Merge the frames of `wanted` (ascending chunk numbers) into ranges.
pub fn ranges(index: &ChunkIndex, wanted: &[usize], merge: Merge) -> Vec<FetchRange> {
    let mut out: Vec<FetchRange> = Vec::new();
    for &i in wanted {
        let c = &index.chunks[i];
        let (start, end) = (c.offset, c.offset + c.length);
        match out.last_mut() {
            Some(r) if start - r.end <= merge.max_gap && end - r.start <= merge.max_len => {
                r.end = end;
                r.chunks.end = i + 1;
            }
            _ => out.push(FetchRange {
                start,
                end,
                chunks: i..i + 1,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests;
