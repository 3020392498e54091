use super::*;

#[test]
fn sniffing() {
    assert_eq!(sniff(&[0x28, 0xB5, 0x2F, 0xFD, 0, 0]), Ok(Format::Zstd));
    assert_eq!(sniff(&[0x5E, 0x2A, 0x4D, 0x18]), Ok(Format::Zstd));
    assert_eq!(sniff(b"OSROLL"), Ok(Format::Raw));
    assert_eq!(sniff(b""), Ok(Format::Raw));
    assert!(
        sniff(&[0x1F, 0x8B, 8, 0])
            .unwrap_err()
            .to_string()
            .contains("gzip")
    );
    assert!(
        sniff(&[0xFD, b'7', b'z', b'X', b'Z', 0])
            .unwrap_err()
            .to_string()
            .contains("xz")
    );
}

/// Run the stage over `chunks` and collect what reaches the writer.
fn decode(
    chunks: Vec<Vec<u8>>,
    limit: Option<u64>,
    buf: usize,
) -> (Vec<u8>, Option<String>, Option<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.len() + 1);
    for c in chunks {
        tx.try_send(Input::Data(Bytes::from(c))).ok().unwrap();
    }
    tx.try_send(Input::End).ok().unwrap();
    let (wtx, wrx) = std::sync::mpsc::sync_channel(1000);
    let (ptx, prx) = std::sync::mpsc::channel();
    for _ in 0..1000 {
        ptx.send(AlignedBuf::new(buf)).unwrap();
    }
    let limit = limit.map(|bytes| Limit {
        bytes,
        what: "slot size".into(),
    });
    run(rx, wtx, prx, limit, 27, None);
    let mut out = Vec::new();
    let (mut finish_err, mut abort) = (None, None);
    for m in wrx.try_iter() {
        match m {
            ToWriter::Block(b, n) => out.extend_from_slice(&b.as_slice()[..n]),
            ToWriter::Finish { len, hash, error } => {
                if error.is_none() {
                    assert_eq!(len, out.len() as u64);
                    assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(&out));
                }
                finish_err = error.map(|e| e.to_string());
            }
            ToWriter::Abort(e) => abort = Some(e.to_string()),
        }
    }
    (out, finish_err, abort)
}

fn split(data: &[u8], n: usize) -> Vec<Vec<u8>> {
    data.chunks(n).map(<[u8]>::to_vec).collect()
}

#[test]
fn raw_and_zstd_decode_across_odd_chunk_boundaries() {
    let image = crate::simhost::image_bytes("v1", 100_000);
    let z = zstd::encode_all(&image[..], 3).unwrap();
    for chunk in [1, 3, 7, 4096, 1 << 20] {
        assert_eq!(
            decode(split(&image, chunk), None, 8192).0,
            image,
            "raw, chunk {chunk}"
        );
        let (out, err, abort) = decode(split(&z, chunk), None, 8192);
        assert_eq!((err, abort), (None, None));
        assert_eq!(out, image, "zstd, chunk {chunk}");
    }
}

#[test]
fn concatenated_frames_and_tiny_streams() {
    let mut z = zstd::encode_all(&b"hello "[..], 1).unwrap();
    z.extend(zstd::encode_all(&b"world"[..], 1).unwrap());
    assert_eq!(decode(vec![z], None, 4096).0, b"hello world");
    assert_eq!(decode(vec![b"ab".to_vec()], None, 4096).0, b"ab");
}

#[test]
fn a_bomb_stops_at_the_limit_without_emitting_past_it() {
    let z = zstd::encode_all(&vec![0u8; 8 << 20][..], 19).unwrap();
    assert!(z.len() < 4096);
    let (out, _, abort) = decode(vec![z], Some(1 << 20), 64 * 1024);
    let abort = abort.expect("aborted");
    assert!(
        abort.contains("exceeds the slot size of 1048576 bytes"),
        "{abort}"
    );
    assert!(out.len() as u64 <= 1 << 20, "emitted {} bytes", out.len());
}

#[test]
fn raw_image_over_the_limit_is_refused_exactly_at_the_limit() {
    let (out, _, abort) = decode(vec![vec![1u8; 10_000]], Some(10_000), 4096);
    assert_eq!((out.len(), abort), (10_000, None));
    let (out, _, abort) = decode(vec![vec![1u8; 10_001]], Some(10_000), 4096);
    assert!(abort.is_some() && out.len() <= 10_000);
}

#[test]
fn truncated_and_corrupt_zstd_are_format_errors() {
    let image = crate::simhost::image_bytes("v1", 200_000);
    let z = zstd::encode_all(&image[..], 3).unwrap();
    let (_, err, _) = decode(vec![z[..z.len() / 2].to_vec()], None, 8192);
    assert!(err.unwrap().contains("truncated image"));
    // With the frame checksum on (as the zstd CLI writes it), any flipped byte fails.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut enc, &image).unwrap();
    let mut bad = enc.finish().unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let (_, err, abort) = decode(split(&bad, 1000), None, 8192);
    let err = err.expect("format error");
    assert!(err.contains("invalid image"), "{err}");
    assert!(abort.is_none());
    let (_, err, _) = decode(vec![vec![0x1F, 0x8B, 8, 0, 0, 0, 0]], None, 4096);
    assert!(err.unwrap().contains("gzip"));
}
