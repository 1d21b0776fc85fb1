//! Raw input: the file is the guest disk (also the data part of a fixed VHD).
//!
//! Holes come from the file system (`lseek` with `SEEK_DATA`/`SEEK_HOLE`, through
//! [`ReadAt::allocation_at`]), so a 1 TB sparse file costs a few system calls, not a terabyte
//! of reads; the converter still checks the data ranges for all-zero clusters. A remote object
//! has no holes to tell: it is all data.

use crate::format::guest::{Extent, GuestReader, ReadFailure};
use crate::format::raw_virtual_size;
use crate::source::{ImageFile, ReadAt};

/// Reads of a raw guest disk stored in `file[0..len)`, which QEMU exposes as
/// [`raw_virtual_size`]`(len)` bytes: the part of the last sector past `len` reads as zeros.
#[derive(Debug)]
pub struct RawReader {
    file: ImageFile,
    len: u64,
    size: u64,
}

/// Granularity of raw reads: any sector can be read on its own.
const RAW_GRANULARITY: u64 = 512;

impl RawReader {
    /// A reader of the first `len` bytes of `file` (the caller checked `len` against the
    /// file's length).
    pub fn new(file: ImageFile, len: u64) -> Self {
        Self {
            file,
            len,
            size: raw_virtual_size(len),
        }
    }

    /// The extent of `len` bytes from `start`, stretched to the end of the disk when it stops
    /// at the end of the file: the zeros of the last partial sector belong to the same run.
    fn extent(&self, start: u64, end: u64, data: bool) -> Extent {
        let end = if end >= self.len { self.size } else { end };
        Extent {
            start,
            len: end - start,
            data,
        }
    }
}

impl GuestReader for RawReader {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn granularity(&self) -> u64 {
        RAW_GRANULARITY
    }

    fn small_reads_are_cheap(&self) -> bool {
        // A remote object's small reads are ranged GETs.
        self.file.file().is_some()
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        let end = self.len;
        if offset >= end {
            // Inside the last sector, past the end of the file: zeros.
            return Ok(self.extent(offset, end, false));
        }
        match self.file.allocation_at(offset) {
            Some((false, data)) => Ok(self.extent(offset, data.clamp(offset + 1, end), false)),
            Some((true, hole)) => Ok(self.extent(offset, hole.clamp(offset + 1, end), true)),
            // The file system (or the object store) cannot tell: data.
            None => Ok(self.extent(offset, end, true)),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(ReadFailure::Invalid(format!(
                "read of {} bytes at {offset:#x} past the {}-byte disk",
                buf.len(),
                self.size
            )));
        }
        // The bytes past the end of the file, in the last sector, read as zeros.
        let in_file = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let (buf, past_end) = buf.split_at_mut(in_file.min(buf.len()));
        past_end.fill(0);
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                // The file shrank under us: that is a change while reading, not zeros.
                Ok(0) => {
                    return Err(ReadFailure::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    )));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFailure::Io(e)),
            }
        }
        Ok(())
    }
}
