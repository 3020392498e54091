use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::delta::index::{Chunk, Chunking, FORMAT};

fn index(frames: &[u64]) -> ChunkIndex {
    let mut at = 0;
    let chunks = frames
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let c = Chunk {
                offset: at,
                length: len,
                image_offset: i as u64 * 1000,
                image_length: 1000,
                sha256: [i as u8; 32],
            };
            at += len;
            c
        })
        .collect();
    ChunkIndex {
        format: FORMAT.into(),
        chunking: Chunking::default(),
        image_size: frames.len() as u64 * 1000,
        image_sha256: [0; 32],
        pack_size: at,
        pack_sha256: [0; 32],
        chunks,
    }
}

fn seed_with(index: &ChunkIndex, held: &[usize]) -> SeedMap {
    SeedMap::from_chunks(
        Path::new("/seed"),
        held.iter().map(|&i| {
            let c = &index.chunks[i];
            (
                c.sha256,
                SeedChunk {
                    offset: 7 * i as u64,
                    length: c.image_length,
                },
            )
        }),
    )
}

#[test]
fn held_chunks_are_copied_and_neighbours_merge_into_one_range() {
    let idx = index(&[10, 10, 10, 10, 10]);
    let p = plan(&idx, &seed_with(&idx, &[0, 4]), Merge::default());
    assert_eq!(
        p.sources[0],
        Source::Seed(SeedChunk {
            offset: 0,
            length: 1000
        })
    );
    assert_eq!(p.sources[1..4], [Source::Fetch; 3]);
    assert_eq!(
        p.ranges,
        vec![FetchRange {
            start: 10,
            end: 40,
            chunks: 1..4
        }]
    );
    assert_eq!(p.reused(&idx), 2000);
    assert_eq!(p.fetched(), 30);
}

#[test]
fn a_large_gap_splits_and_a_small_one_does_not() {
    let idx = index(&[10, 100, 10, 5, 10]);
    let merge = Merge {
        max_gap: 50,
        max_len: 1 << 20,
    };
    let p = plan(&idx, &seed_with(&idx, &[1, 3]), merge);
    assert_eq!(
        p.ranges
            .iter()
            .map(|r| (r.start, r.end))
            .collect::<Vec<_>>(),
        vec![(0, 10), (110, 135)]
    );
}

proptest! {
    /// Every chunk not held is fetched by exactly one range; ranges are ordered,
    /// disjoint and within the length limit (unless one frame alone is longer).
    #[test]
    fn ranges_cover_each_missing_frame_once(
        frames in prop::collection::vec(1u64..5000, 1..80),
        held in prop::collection::vec(any::<bool>(), 80),
        max_gap in 0u64..10_000,
        max_len in 1u64..20_000,
    ) {
        let idx = index(&frames);
        let held: Vec<usize> = (0..frames.len()).filter(|&i| held[i]).collect();
        let p = plan(&idx, &seed_with(&idx, &held), Merge { max_gap, max_len });
        for (i, c) in idx.chunks.iter().enumerate() {
            let holding: Vec<_> = p.ranges.iter()
                .filter(|r| r.start <= c.offset && c.offset + c.length <= r.end)
                .collect();
            if held.contains(&i) {
                prop_assert!(matches!(p.sources[i], Source::Seed(_)));
            } else {
                prop_assert_eq!(holding.len(), 1, "chunk {}", i);
                prop_assert!(holding[0].chunks.contains(&i));
            }
        }
        for w in p.ranges.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        for r in &p.ranges {
            prop_assert!(r.end - r.start <= max_len || r.chunks.len() == 1);
        }
    }
}
