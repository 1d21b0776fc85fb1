//! The guest's view of an input image: what every input format gives the converter.
//!
//! A [`GuestReader`] answers two questions about the guest disk, whatever the container:
//! which byte ranges may hold data ([`GuestReader::extent_at`], from format metadata or the
//! file system's holes, never by reading the data), and what the bytes are
//! ([`GuestReader::read_at`], zeros where nothing is stored). Reads take `&self` and are
//! positional, so worker threads read different chunks of the same image at once.

use std::io;

/// A run of guest bytes that either may hold data or is known to read as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First guest byte.
    pub start: u64,
    /// Length in bytes, at least 1.
    pub len: u64,
    /// Whether the run may hold non-zero bytes (`false`: reads as zeros, nothing stored).
    pub data: bool,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// Why guest bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    /// The operating system failed a read.
    #[error("{}", crate::error::describe_io(.0))]
    Io(#[from] io::Error),
    /// The image's metadata or data is invalid (a hostile or corrupt image).
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::source::ReadError> for ReadFailure {
    fn from(e: crate::source::ReadError) -> Self {
        match e {
            crate::source::ReadError::Io(e) => ReadFailure::Io(e),
            other => ReadFailure::Invalid(other.to_string()),
        }
    }
}

/// Guest content of an input image.
pub trait GuestReader: Send + Sync {
    /// Guest-visible size in bytes.
    fn virtual_size(&self) -> u64;

    /// The smallest aligned unit worth reading on its own (a power of two, at most 2 MiB):
    /// the cluster size of a qcow2 image, whose compressed clusters are decompressed whole.
    fn granularity(&self) -> u64;

    /// The run of bytes starting at `offset` (< virtual size) that share one allocation
    /// status. The run may stop early (callers ask again from its end), but never past the
    /// virtual size.
    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure>;

    /// Whether reading costs more than copying: the image has compressed clusters (seen so far
    /// by [`GuestReader::extent_at`]), so reads are worth spreading over the worker threads.
    fn costly_reads(&self) -> bool {
        false
    }

    /// Whether a small read costs little more than its system call (the bytes are stored as
    /// they are, uncompressed, in a local file, found through a table in memory or one small
    /// read of it; or deflated, so that their first sector inflates without the rest): the
    /// scan then tells a cluster's data from zeros by its first sector, without copying (or
    /// inflating) the rest, and the write pass reads the cluster once.
    fn small_reads_are_cheap(&self) -> bool {
        false
    }

    /// Whether the format's metadata alone says that the `len` guest bytes at `offset`
    /// (inside a data extent) hold data, so that a scan deciding which clusters to store
    /// need not read them: for a compressed input, reading means decompressing, and the
    /// writer decompresses everything it stores anyway. `false` means "read them to know".
    /// A `true` can be wrong only for bytes that read as zeros (an unusually wasteful
    /// compressed stream of zeros): the writer then stores those zeros, which is still the
    /// guest's content.
    fn data_by_metadata(&self, _offset: u64, _len: u64) -> Result<bool, ReadFailure> {
        Ok(false)
    }

    /// Fills `buf` with the guest bytes at `offset`; the range must lie within the virtual
    /// size.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure>;
}

/// Refuses an extent request at or past the end of a `disk_size`-byte disk: the check every
/// reader's [`GuestReader::extent_at`] starts with.
pub fn check_extent_offset(offset: u64, disk_size: u64) -> Result<(), ReadFailure> {
    if offset >= disk_size {
        return Err(ReadFailure::Invalid(format!(
            "extent requested at {offset:#x}, past the {disk_size}-byte disk"
        )));
    }
    Ok(())
}

/// Splits a guest read of `buf.len()` bytes at `offset` into pieces that each lie in one
/// block of `block_size` bytes, and calls `piece(block, offset_within_block, dst)` for each in
/// order: the loop every block-mapped reader (VHD, VHDX, VDI) runs. A read past the
/// `disk_size`-byte disk is an invalid request, never a panic.
pub fn for_each_block_piece(
    offset: u64,
    buf: &mut [u8],
    disk_size: u64,
    block_size: u64,
    mut piece: impl FnMut(u64, u64, &mut [u8]) -> Result<(), ReadFailure>,
) -> Result<(), ReadFailure> {
    let end = offset
        .checked_add(buf.len() as u64)
        .filter(|e| *e <= disk_size)
        .ok_or_else(|| {
            ReadFailure::Invalid(format!(
                "read of {} bytes at {offset:#x} past the {disk_size}-byte disk",
                buf.len()
            ))
        })?;
    let mut pos = offset;
    while pos < end {
        let block = pos / block_size;
        let within = pos % block_size;
        let n = (block_size - within).min(end - pos);
        let dst = &mut buf[(pos - offset) as usize..(pos - offset + n) as usize];
        piece(block, within, dst)?;
        pos += n;
    }
    Ok(())
}

/// Reads stored guest bytes that the checks at open placed inside the file: a short read then
/// means the file shrank while it was read, an I/O error rather than an invalid image.
pub fn read_stored<S: crate::source::ReadAt + ?Sized>(
    file: &S,
    dst: &mut [u8],
    at: u64,
) -> Result<(), ReadFailure> {
    match crate::source::read_exact_at(file, dst, at) {
        Ok(()) => Ok(()),
        Err(crate::source::ReadError::Io(e)) => Err(ReadFailure::Io(e)),
        Err(crate::source::ReadError::Truncated { .. }) => Err(ReadFailure::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was read",
        ))),
    }
}

/// Whether every byte of `buf` is zero (fast enough to run on every cluster: the inner fold
/// over 64-byte blocks vectorises).
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    let blocks_zero = blocks
        .by_ref()
        .all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0);
    blocks_zero && blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_every_byte() {
        let mut b = vec![0u8; 1000];
        assert!(is_zero(&b));
        for i in [0, 63, 64, 999] {
            b[i] = 1;
            assert!(!is_zero(&b), "byte {i}");
            b[i] = 0;
        }
        assert!(is_zero(&[]));
    }
}
