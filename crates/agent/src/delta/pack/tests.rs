use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;
use crate::delta::assemble::decode_checked;
use crate::delta::plan::{self, Merge, Source};
use crate::delta::seed::SeedMap;

/// Incompressible-ish but repeatable bytes, with some text-like runs and zeros, as an
/// image has.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match rng.random_range(0..3) {
            0 => out.extend((0..rng.random_range(1..40_000)).map(|_| rng.random::<u8>())),
            1 => out.extend(b"usr/lib/libexample.so.1 ".repeat(rng.random_range(1..500))),
            _ => out.extend(std::iter::repeat_n(0u8, rng.random_range(1..100_000))),
        }
    }
    out.truncate(len);
    out
}

fn packed(img: &[u8]) -> (Vec<u8>, ChunkIndex) {
    let mut out = Vec::new();
    let index = pack(img, &mut out, Chunking::default()).unwrap();
    (out, index)
}

/// `zstd -dc` of `input`; the real tool is required (it is in ci/debian-packages.txt).
fn zstd_dc(input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd tool must be installed (ci/debian-packages.txt)");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "zstd -dc failed: {out:?}");
    out.stdout
}

#[test]
fn zstd_decodes_the_pack_to_the_image_byte_for_byte() {
    let img = image(3 << 20, 1);
    let (pack, index) = packed(&img);
    assert!(index.chunks.len() > 10, "{} chunks", index.chunks.len());
    assert_eq!(zstd_dc(&pack), img);
    assert_eq!(index.pack_size, pack.len() as u64);
    assert_eq!(index.pack_sha256[..], Sha256::digest(&pack)[..]);
    assert_eq!(index.image_sha256[..], Sha256::digest(&img)[..]);
}

#[test]
fn every_frame_decodes_alone_to_its_chunk() {
    let img = image(2 << 20, 2);
    let (pack, index) = packed(&img);
    let parsed = ChunkIndex::parse(&index.to_json()).unwrap();
    for c in &parsed.chunks {
        let frame = &pack[c.offset as usize..(c.offset + c.length) as usize];
        let data = decode_checked(frame, c).unwrap();
        let at = c.image_offset as usize;
        assert_eq!(&data[..], &img[at..at + c.image_length as usize]);
    }
}

#[test]
fn the_seek_table_follows_the_frames() {
    let img = image(1 << 20, 3);
    let (pack, index) = packed(&img);
    // A seekable-format reader finds the same frames as the index.
    let table = zeekstd::SeekTable::from_seekable(&mut std::io::Cursor::new(&pack)).unwrap();
    assert!(table.num_frames() as usize >= index.chunks.len());
    for (i, c) in index.chunks.iter().enumerate() {
        let f = i as u32;
        assert_eq!(table.frame_start_comp(f).unwrap(), c.offset);
        assert_eq!(table.frame_size_decomp(f).unwrap(), c.image_length);
    }
}

#[test]
fn an_empty_image_packs_to_an_empty_index() {
    let (pack, index) = packed(&[]);
    assert!(index.chunks.is_empty());
    assert_eq!(zstd_dc(&pack), Vec::<u8>::new());
}

/// Share of the new image's bytes after the insertion that a seed of the old image
/// supplies.
fn reused_after(old: &[u8], new: &[u8], from: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed");
    std::fs::write(&seed_path, old).unwrap();
    let seed = SeedMap::scan(&seed_path, u64::MAX, Chunking::default()).unwrap();
    let (_, index) = packed(new);
    let p = plan::plan(&index, &seed, Merge::default());
    let (mut after, mut reused) = (0, 0);
    for (c, s) in index.chunks.iter().zip(&p.sources) {
        if c.image_offset >= from {
            after += c.image_length;
            if matches!(s, Source::Seed(_)) {
                reused += c.image_length;
            }
        }
    }
    reused as f64 / after as f64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Content-defined boundaries: after an insertion of up to 1 MiB anywhere, the
    /// chunks after it are found again in the old image at their shifted offsets.
    #[test]
    fn chunk_boundaries_survive_an_insertion(
        at in 0usize..(4 << 20),
        len in 1usize..=(1 << 20),
        seed in any::<u64>(),
    ) {
        // The tail after the skipped region is at least 10 MiB, so one chunk (at most
        // 256 KiB) that takes a while to fall back into step cannot decide the share.
        let old = image(16 << 20, seed);
        let mut new = old.clone();
        let inserted = image(len, seed ^ 0xdead);
        new.splice(at..at, inserted);
        // Skip the chunk the insertion lands in and the next one: they change.
        let share = reused_after(&old, &new, (at + len + (512 << 10)) as u64);
        // Measured shares reach down to about 89% for some inputs (not yet explained, see
        // docs/delta.md); 80% still means most of the tail is found in the old image.
        prop_assert!(share >= 0.80, "only {:.1}% reused after the insertion", share * 100.0);
    }
}
