//! Page-aligned buffers for `O_DIRECT` I/O, without `unsafe`: over-allocate a `Vec` and
//! use the aligned window inside it.

/// Alignment that satisfies `O_DIRECT` on 512-byte and 4 KiB logical-block devices.
pub const ALIGN: usize = 4096;

/// A fixed-capacity buffer whose start is aligned to [`ALIGN`].
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    cap: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes (rounded up to a multiple of [`ALIGN`]).
    pub fn new(cap: usize) -> Self {
        let cap = cap.div_ceil(ALIGN).max(1) * ALIGN;
        let storage = vec![0u8; cap + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            storage,
            start,
            cap,
        }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The whole aligned window.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.cap]
    }

    /// The whole aligned window, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.cap]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_aligned_and_sized() {
        for cap in [1, 4096, 5000, 1 << 20] {
            let mut b = AlignedBuf::new(cap);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            assert!(b.capacity() >= cap && b.capacity().is_multiple_of(ALIGN));
            assert_eq!(b.as_mut_slice().len(), b.capacity());
        }
    }
}
