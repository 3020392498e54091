use super::*;

#[test]
fn writes_aligned_and_unaligned_data_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    std::fs::write(&path, vec![7u8; 3 * ALIGN]).unwrap();
    for direct in [true, false] {
        let mut slot = SlotFile::open(&path, direct, Create::No).unwrap();
        assert_eq!(slot.capacity(), Some(3 * ALIGN as u64));
        let mut buf = AlignedBuf::new(2 * ALIGN);
        let data: Vec<u8> = (0..ALIGN + 100).map(|i| (i % 251) as u8).collect();
        buf.as_mut_slice()[..data.len()].copy_from_slice(&data);
        slot.write_at(&buf.as_slice()[..data.len()], 0).unwrap();
        slot.sync().unwrap();
        let rb = AlignedBuf::new(ALIGN);
        let mut seen = Vec::new();
        let h = slot
            .read_back(data.len() as u64, rb, |n| seen.push(n))
            .unwrap();
        assert_eq!(h, xxhash_rust::xxh3::xxh3_128(&data));
        assert_eq!(seen, [ALIGN as u64, data.len() as u64]);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..data.len()], &data[..]);
        assert_eq!(on_disk[data.len()], 7, "bytes past the image are untouched");
    }
}

#[test]
fn zero_runs_are_zeroed_or_written_and_read_back_as_zeros() {
    const MIB: usize = 1 << 20;
    let mut block = AlignedBuf::new(2 * MIB + 2 * zeros::GRANULE);
    let data = block.as_mut_slice();
    data[..zeros::GRANULE].fill(1);
    data[zeros::GRANULE + 2 * MIB..].fill(2);
    // The temp dir's filesystem (ext4 and XFS zero ranges), and tmpfs, which refuses
    // ZERO_RANGE so the zeros are written as data.
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        dirs.push(shm);
    }
    for dir in dirs {
        let path = dir.path().join("slot");
        std::fs::write(&path, vec![0xEE; 3 * MIB]).unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        let supported =
            rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::ZERO_RANGE, 0, 4096).is_ok();
        let mut slot = SlotFile::open(&path, true, Create::No).unwrap();
        let zeroed = slot.write_block_at(block.as_slice(), 0).unwrap();
        slot.sync().unwrap();
        assert_eq!(
            zeroed,
            if supported { 2 * MIB as u64 } else { 0 },
            "{dir:?}"
        );
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..block.capacity()], block.as_slice(), "{dir:?}");
        assert!(on_disk[block.capacity()..].iter().all(|&b| b == 0xEE));
        // A block at an offset off the zero granule is written whole.
        assert_eq!(slot.write_block_at(block.as_slice(), 4096).unwrap(), 0);
    }
}

#[test]
fn missing_slot_is_an_error_unless_creating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.img");
    let e = SlotFile::open(&path, true, Create::No).err().unwrap();
    assert!(e.to_string().contains("new.img"), "{e}");
    let slot = SlotFile::open(&path, true, Create::Yes).unwrap();
    assert_eq!(slot.capacity(), None);
}

#[test]
fn read_back_past_the_end_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    std::fs::write(&path, vec![1u8; 100]).unwrap();
    let slot = SlotFile::open(&path, false, Create::No).unwrap();
    let e = slot
        .read_back(200, AlignedBuf::new(ALIGN), |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("slot ends before byte 200"), "{e}");
}
