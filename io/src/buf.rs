//! [`IoBuf`]: a growable byte buffer whose start is aligned to 4096 bytes, so that it can be
//! handed to the kernel for direct I/O (`O_DIRECT` wants the memory aligned as the file says,
//! at most a page on every filesystem replog meets), and whose heap memory never moves while a
//! write pipe owns it.
//!
//! The buffer is a vector of 4096-byte, 4096-aligned pages viewed as bytes through `bytemuck`,
//! so no `unsafe` is needed here. Fresh pages come from a zeroed allocation, which the kernel
//! backs lazily: a buffer's resident memory is the part that was written.

use bytemuck::{Pod, Zeroable};

/// The alignment of every [`IoBuf`]'s start, in bytes.
pub const IO_BUF_ALIGN_BYTES: usize = 4096;

/// One aligned page of a buffer.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; IO_BUF_ALIGN_BYTES]);

/// A byte buffer that starts on a 4096-byte boundary. `len` bytes are in use; the capacity is
/// a whole number of pages.
pub struct IoBuf {
    pages: Vec<Page>,
    len: usize,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Default for IoBuf {
    fn default() -> Self {
        IoBuf::with_capacity(0)
    }
}

impl IoBuf {
    /// An empty buffer with room for at least `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> IoBuf {
        IoBuf {
            pages: bytemuck::zeroed_vec(capacity.div_ceil(IO_BUF_ALIGN_BYTES)),
            len: 0,
        }
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the buffer holds without growing.
    pub fn capacity(&self) -> usize {
        self.pages.len() * IO_BUF_ALIGN_BYTES
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<Page, u8>(&self.pages)[..self.len]
    }

    /// Marks every byte unused; the capacity stays.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` bytes (no effect if it holds fewer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Grows the capacity to at least `capacity` bytes. Growing moves the bytes, so never do it
    /// to a buffer a pipe owns (it cannot: the pipe holds it by value).
    pub fn reserve_total(&mut self, capacity: usize) {
        let pages = capacity.div_ceil(IO_BUF_ALIGN_BYTES);
        if pages > self.pages.len() {
            self.pages.resize(pages, Page::zeroed());
        }
    }

    /// Appends `len` bytes and returns them to be filled in. Their content is whatever the
    /// buffer held there before: the caller overwrites all of them.
    pub fn extend_uninit(&mut self, len: usize) -> &mut [u8] {
        let start = self.len;
        self.reserve_total(start + len);
        self.len = start + len;
        &mut bytemuck::cast_slice_mut::<Page, u8>(&mut self.pages)[start..start + len]
    }

    /// Appends `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.extend_uninit(data.len()).copy_from_slice(data);
    }

    /// Appends zero bytes up to a length that is a multiple of `align` (at least 1).
    pub fn pad_to(&mut self, align: usize) {
        let padded = self.len.next_multiple_of(align.max(1));
        self.extend_uninit(padded - self.len).fill(0);
    }

    /// The address of the first byte, for alignment checks.
    pub fn addr(&self) -> usize {
        self.pages.as_ptr() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_starts_aligned_and_stays_aligned_when_it_grows() {
        let mut b = IoBuf::with_capacity(10);
        assert_eq!(b.capacity(), 4096);
        assert_eq!(b.addr() % IO_BUF_ALIGN_BYTES, 0);
        b.extend_from_slice(&[7; 5000]);
        assert_eq!(b.len(), 5000);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.addr() % IO_BUF_ALIGN_BYTES, 0);
        assert!(b.as_slice().iter().all(|&x| x == 7));
    }

    #[test]
    fn padding_appends_zeros_to_the_next_multiple() {
        let mut b = IoBuf::with_capacity(8192);
        b.extend_from_slice(&[1; 4000]);
        b.clear();
        b.extend_from_slice(&[2; 100]);
        b.pad_to(512);
        assert_eq!(b.len(), 512);
        assert!(b.as_slice()[100..].iter().all(|&x| x == 0));
        b.pad_to(512);
        assert_eq!(b.len(), 512);
        b.pad_to(1);
        assert_eq!(b.len(), 512);
    }
}
