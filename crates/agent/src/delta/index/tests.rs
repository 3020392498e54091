use proptest::prelude::*;

use super::*;

/// An index of chunks with these (image length, frame length) pairs.
fn index_of(sizes: &[(u64, u64)]) -> ChunkIndex {
    let (mut image, mut pack) = (0, 0);
    let chunks = sizes
        .iter()
        .enumerate()
        .map(|(i, &(ulen, clen))| {
            let c = Chunk {
                offset: pack,
                length: clen,
                image_offset: image,
                image_length: ulen,
                sha256: [i as u8; 32],
            };
            image += ulen;
            pack += clen;
            c
        })
        .collect();
    ChunkIndex {
        format: FORMAT.into(),
        chunking: Chunking::default(),
        image_size: image,
        image_sha256: [7; 32],
        pack_size: pack + 100,
        pack_sha256: [9; 32],
        chunks,
    }
}

proptest! {
    #[test]
    fn an_index_round_trips_through_json(
        sizes in prop::collection::vec((1u64..=256 << 10, 1u64..=500), 0..50),
    ) {
        let index = index_of(&sizes);
        let back = ChunkIndex::parse(&index.to_json()).unwrap();
        prop_assert_eq!(back, index);
    }
}

fn refused(index: &ChunkIndex) -> String {
    ChunkIndex::parse(&index.to_json()).unwrap_err().to_string()
}

#[test]
fn a_gap_between_frames_is_refused_naming_the_chunk() {
    let mut index = index_of(&[(100, 50), (100, 50), (100, 50)]);
    index.chunks[2].offset += 1;
    let msg = refused(&index);
    assert!(msg.contains("chunks[2]"), "{msg}");
}

#[test]
fn chunks_that_do_not_cover_the_image_are_refused() {
    let mut index = index_of(&[(100, 50), (100, 50)]);
    index.image_size = 300;
    let msg = refused(&index);
    assert!(msg.contains("imageSize"), "{msg}");
}

#[test]
fn another_format_and_bad_chunking_are_refused() {
    let mut index = index_of(&[(100, 50)]);
    index.format = "something/2".into();
    assert!(refused(&index).contains("something/2"));
    let mut index = index_of(&[(100, 50)]);
    index.chunking.min = index.chunking.avg + 1;
    assert!(refused(&index).contains("chunking"));
}

#[test]
fn a_chunk_longer_than_the_maximum_is_refused() {
    let index = index_of(&[(300 << 10, 50)]);
    assert!(refused(&index).contains("imageLength"));
}

#[test]
fn a_digest_without_its_prefix_is_refused() {
    let json = String::from_utf8(index_of(&[(100, 50)]).to_json()).unwrap();
    let json = json.replacen("sha256:", "", 1);
    let msg = ChunkIndex::parse(json.as_bytes()).unwrap_err().to_string();
    assert!(msg.contains("sha256:<64 hex digits>"), "{msg}");
}
