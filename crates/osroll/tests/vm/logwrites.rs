//! A power cut that also loses the disk's volatile cache. qemu's `blklogwrites` filter
//! (see [`super::qemu`]) logs every write the guest hands to the disk, and every flush,
//! in the dm-log-writes format; its superblock's entry count is rewritten at each
//! completed flush. Replaying that many entries onto the disk as it was when the boot
//! began gives the disk a cut leaves when everything not yet flushed is lost: the
//! strictest outcome a disk with a write cache may produce (a real one may keep some of
//! it). Killing qemu alone keeps all of it, since qemu already passed it to the host.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: u64 = 0x6a736677736872;
const FLUSH: u64 = 1;
const DISCARD: u64 = 4;

/// What a replay kept and dropped (writes only; flushes are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Replay {
    pub(crate) kept: u64,
    pub(crate) dropped: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// Rewrite `disk` as `before` plus the logged writes up to the last completed flush.
pub(crate) fn drop_unflushed(before: &Path, log: &Path, disk: &Path) -> Replay {
    let log = fs::read(log).unwrap();
    fs::copy(before, disk).unwrap();
    // No flush completed yet: the superblock was never written, and nothing is kept.
    let flushed = if u64_at(&log, 0) == MAGIC {
        u64_at(&log, 16)
    } else {
        0
    };
    let ss = match u32::from_le_bytes(log.get(24..28).map_or([0; 4], |s| s.try_into().unwrap())) {
        0 => 512,
        n => n as usize,
    };
    let out = fs::OpenOptions::new().write(true).open(disk).unwrap();
    let mut replay = Replay::default();
    let (mut at, mut index) = (ss, 0u64);
    while at + 32 <= log.len() {
        let (sector, sectors, flags) = (
            u64_at(&log, at),
            u64_at(&log, at + 8),
            u64_at(&log, at + 16),
        );
        if sector == 0 && sectors == 0 && flags == 0 {
            break;
        }
        at += ss;
        let len = sectors as usize * ss;
        let data = flags & DISCARD == 0;
        if flags & FLUSH == 0 {
            if index < flushed {
                let zeros = vec![0; len];
                let bytes = if data {
                    log.get(at..at + len)
                        .expect("logged write cut short before a flush")
                } else {
                    &zeros
                };
                out.write_all_at(bytes, sector * ss as u64).unwrap();
                replay.kept += 1;
            } else {
                replay.dropped += 1;
            }
        }
        if data {
            at += len;
        }
        index += 1;
    }
    assert!(index >= flushed, "the log ends before its last flush");
    replay
}

/// One logged request, as [`LogTail`] reads it while qemu runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// Byte offset on the disk, and length (0 for a flush).
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) flush: bool,
}

/// Follows the log of a running qemu: every request the guest handed to the disk, in
/// order. Entries only accumulate, so a condition on them is never missed.
pub(crate) struct LogTail {
    file: fs::File,
    pos: u64,
    pub(crate) entries: Vec<Entry>,
}

/// The log's sector size (`log-sector-size` in [`super::qemu`]).
const SS: u64 = 512;

impl LogTail {
    pub(crate) fn open(log: &Path) -> LogTail {
        LogTail {
            file: fs::File::open(log).unwrap(),
            pos: SS,
            entries: Vec::new(),
        }
    }

    /// Read the entries qemu appended since the last call.
    pub(crate) fn poll(&mut self) -> &[Entry] {
        let size = self.file.metadata().unwrap().len();
        let mut head = [0u8; 24];
        while self.pos + SS <= size {
            self.file.read_exact_at(&mut head, self.pos).unwrap();
            let (sector, sectors, flags) = (u64_at(&head, 0), u64_at(&head, 8), u64_at(&head, 16));
            if sector == 0 && sectors == 0 && flags == 0 {
                break;
            }
            let data = if flags & DISCARD == 0 {
                sectors * SS
            } else {
                0
            };
            if self.pos + SS + data > size {
                break;
            }
            self.entries.push(Entry {
                offset: sector * SS,
                len: sectors * SS,
                flush: flags & FLUSH != 0,
            });
            self.pos += SS + data;
        }
        &self.entries
    }
}

/// Bytes of `[start, end)` covered by the writes among `entries`.
pub(crate) fn covered(entries: &[Entry], start: u64, end: u64) -> u64 {
    entries
        .iter()
        .filter(|e| !e.flush)
        .map(|e| {
            (e.offset + e.len)
                .min(end)
                .saturating_sub(e.offset.max(start))
        })
        .sum()
}

/// Whether a flush follows the write with which `need` bytes of `[start, end)` were
/// covered.
pub(crate) fn flush_after(entries: &[Entry], start: u64, end: u64, need: u64) -> bool {
    let mut done = 0;
    let mut it = entries.iter();
    for e in it.by_ref() {
        done += covered(std::slice::from_ref(e), start, end);
        if done >= need {
            break;
        }
    }
    done >= need && it.any(|e| e.flush)
}

/// A hand-made log: a write, a flush, a write. The replay keeps the first write only;
/// the tail reads all three requests.
#[test]
fn replay_keeps_only_what_a_flush_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (before, log, disk) = (
        dir.path().join("before"),
        dir.path().join("log"),
        dir.path().join("disk"),
    );
    fs::write(&before, vec![0u8; 4 * 512]).unwrap();
    let le = |v: u64| v.to_le_bytes();
    let mut l = Vec::new();
    let sector = |l: &mut Vec<u8>, words: &[u64]| {
        let start = l.len();
        for w in words {
            l.extend_from_slice(&le(*w));
        }
        l.resize(start + 512, 0);
    };
    // Superblock: magic, version, entries up to the last flush, sector size.
    sector(&mut l, &[MAGIC, 1, 2, 512]);
    sector(&mut l, &[1, 1, 0, 0]);
    l.extend_from_slice(&[b'a'; 512]);
    sector(&mut l, &[0, 0, FLUSH, 0]);
    sector(&mut l, &[2, 1, 0, 0]);
    l.extend_from_slice(&[b'b'; 512]);
    fs::write(&log, &l).unwrap();

    let r = drop_unflushed(&before, &log, &disk);
    assert_eq!(
        r,
        Replay {
            kept: 1,
            dropped: 1
        }
    );
    let got = fs::read(&disk).unwrap();
    assert_eq!(&got[512..1024], &[b'a'; 512]);
    assert_eq!(
        &got[1024..1536],
        &[0u8; 512],
        "the unflushed write was dropped"
    );

    let mut tail = LogTail::open(&log);
    let e = tail.poll();
    assert_eq!(e.len(), 3);
    assert!(e[1].flush && !e[2].flush);
    assert_eq!(covered(e, 512, 2048), 1024);
    assert!(flush_after(e, 512, 1024, 512));
    assert!(!flush_after(e, 1024, 1536, 512));
}
