//! Positional, bounds-checked reads from an image.
//!
//! Every parser in this crate reads through [`ReadAt`], never through a cursor: a header field is
//! an untrusted offset, and a positional read that first checks `offset + len <= file length`
//! turns a lying offset into a [`ReadError::Truncated`] instead of a short read, a seek past the
//! end or an allocation sized by the attacker. The same trait is implemented for byte slices so
//! that the fuzz targets and unit tests drive the parsers without touching the file system.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Random-access reads from an image of known, fixed length.
pub trait ReadAt {
    /// Length of the image in bytes, as it was when the source was opened.
    fn len(&self) -> u64;

    /// Whether the image has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Whether the bytes at `offset` are stored (`true`) or a hole that reads as zeros
    /// (`false`), and where that run ends; `None` when the source cannot tell, which callers
    /// must treat as data. Lets a reader skip preallocated but never written clusters without
    /// reading them, as QEMU does with the host file's block status.
    fn allocation_at(&self, _offset: u64) -> Option<(bool, u64)> {
        None
    }

    /// Whether a small read costs little more than a system call (a local file, or memory),
    /// unlike a remote object's, where every read is a ranged request. Lets a format reader
    /// say [`GuestReader::small_reads_are_cheap`](crate::format::guest::GuestReader::small_reads_are_cheap).
    fn small_reads_are_cheap(&self) -> bool {
        false
    }
}

/// Why a bounds-checked read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The requested range lies (partly) beyond the end of the image.
    #[error("{len} bytes at offset {offset:#x} run past the end of the file ({file_len} bytes)")]
    Truncated {
        /// First byte requested.
        offset: u64,
        /// Number of bytes requested.
        len: u64,
        /// Length of the image.
        file_len: u64,
    },
    /// The operating system reported an error.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Fills `buf` from `offset`, or fails with [`ReadError::Truncated`] if the image is too short.
///
/// The range is checked against [`ReadAt::len`] before any I/O happens, so a hostile offset never
/// reaches the operating system. A file that shrinks after it was opened also ends up here as
/// `Truncated`, since the short read is detected.
pub fn read_exact_at<S: ReadAt + ?Sized>(
    src: &S,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), ReadError> {
    let file_len = src.len();
    let len = buf.len() as u64;
    let truncated = ReadError::Truncated {
        offset,
        len,
        file_len,
    };
    match offset.checked_add(len) {
        Some(end) if end <= file_len => {}
        _ => return Err(truncated),
    }
    let mut done = 0usize;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(truncated),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// Reads `len` bytes at `offset` into a new vector, refusing ranges past the end of the image
/// before allocating, so `len` may come from an untrusted field once it has been capped by the
/// caller's own limit.
pub fn read_vec_at<S: ReadAt + ?Sized>(
    src: &S,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, ReadError> {
    let file_len = src.len();
    match offset.checked_add(len as u64) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(ReadError::Truncated {
                offset,
                len: len as u64,
                file_len,
            });
        }
    }
    let mut buf = vec![0u8; len];
    read_exact_at(src, &mut buf, offset)?;
    Ok(buf)
}

/// What identifies a file's content without reading it: device, inode, length, and
/// modification and status-change times. Two equal identities taken before and after a read
/// mean nothing replaced, truncated, extended or wrote to the file in between (a write changes
/// the change time, which no user can set back), so what was read is what the file holds.
///
/// A remote object's identity is its length, ETag and Last-Modified, from a HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    remote: Option<(Option<String>, String)>,
}

impl FileIdentity {
    /// The identity in `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            remote: None,
        }
    }

    /// The identity of a remote object's `version`.
    pub fn of_remote(version: &crate::remote::ObjectVersion) -> Self {
        Self {
            dev: 0,
            ino: 0,
            len: version.len(),
            mtime: (0, 0),
            ctime: (0, 0),
            remote: Some((version.etag().map(str::to_string), version.last_modified())),
        }
    }

    /// The identity of the file at `path` now (of the object, by a HEAD, when `path` is an
    /// `s3://` or `https://` URL).
    pub fn of_path(path: &std::path::Path) -> io::Result<Self> {
        if crate::remote::is_remote(path.as_os_str()) {
            let file = ImageFile::open(path)?;
            return Ok(file.identity());
        }
        Ok(Self::of(&std::fs::metadata(path)?))
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The file's device and inode: which file it is, whatever its contents.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// Where an [`ImageFile`]'s bytes are.
#[derive(Debug)]
enum Backing {
    Local(File),
    Remote(Box<crate::remote::RemoteFile>),
}

/// An open image whose length was fixed when it was opened: a local file, or a remote object
/// (`s3://bucket/key`, `https://...`) read in place by ranged GETs (see [`crate::remote`]).
#[derive(Debug)]
pub struct ImageFile {
    backing: Backing,
    len: u64,
    /// Whether [`ReadAt::allocation_at`] asks the file system where the holes are.
    maps_holes: bool,
}

impl ImageFile {
    /// Opens `path` read-only; an `s3://`, `https://` or (when allowed) `http://` URL opens
    /// the remote object with the options of [`crate::remote::options`]. A remote failure is
    /// an `io::Error` that [`crate::Error::io`] turns back into the remote error.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        if crate::remote::is_remote(path.as_os_str())
            && let Some(url) = path.to_str()
        {
            return crate::remote::RemoteFile::open_url(url)
                .map(Self::remote)
                .map_err(crate::remote::failure);
        }
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        Ok(Self {
            len: meta.len(),
            backing: Backing::Local(file),
            maps_holes: true,
        })
    }

    /// The same file, its holes not looked up ([`ReadAt::allocation_at`] knows nothing): a
    /// hole is read as the zeros it holds. For a file that is still being written, whose holes
    /// may be parts not written yet (`convert --verify` reading a qcow2 OUT while it is
    /// written): a hole seen once must not hide the data written there later.
    pub fn without_hole_map(mut self) -> Self {
        self.maps_holes = false;
        self
    }

    /// A remote object, already opened.
    pub fn remote(file: crate::remote::RemoteFile) -> Self {
        Self {
            len: file.len(),
            backing: Backing::Remote(Box::new(file)),
            maps_holes: true,
        }
    }

    /// The underlying file; `None` for a remote object.
    pub fn file(&self) -> Option<&File> {
        match &self.backing {
            Backing::Local(file) => Some(file),
            Backing::Remote(_) => None,
        }
    }

    /// The remote object; `None` for a local file.
    pub fn remote_file(&self) -> Option<&crate::remote::RemoteFile> {
        match &self.backing {
            Backing::Local(_) => None,
            Backing::Remote(remote) => Some(remote),
        }
    }

    /// The identity the file had when it was opened (a local file's as it is now).
    pub fn identity(&self) -> FileIdentity {
        match &self.backing {
            Backing::Local(file) => file.metadata().map_or_else(
                |_| FileIdentity {
                    dev: 0,
                    ino: 0,
                    len: self.len,
                    mtime: (0, 0),
                    ctime: (0, 0),
                    remote: None,
                },
                |m| FileIdentity::of(&m),
            ),
            Backing::Remote(remote) => FileIdentity::of_remote(remote.version()),
        }
    }
}

impl ReadAt for ImageFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn small_reads_are_cheap(&self) -> bool {
        self.file().is_some()
    }

    fn allocation_at(&self, offset: u64) -> Option<(bool, u64)> {
        use std::os::fd::AsRawFd;
        if offset >= self.len || !self.maps_holes {
            return None;
        }
        // An object store cannot tell holes from data.
        let Backing::Local(file) = &self.backing else {
            return None;
        };
        let seek = |whence| {
            let off = libc::off_t::try_from(offset).ok()?;
            // SAFETY: lseek on a descriptor this struct owns touches no memory; every read
            // here is positional, so moving the descriptor's offset affects nothing else.
            let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
            u64::try_from(r).ok()
        };
        match seek(libc::SEEK_DATA) {
            // No data after `offset`: a hole to the end of the file.
            None => (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO))
                .then_some((false, self.len)),
            Some(data) if data > offset => Some((false, data.min(self.len))),
            Some(_) => seek(libc::SEEK_HOLE).map(|hole| (true, hole.min(self.len))),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        // Never read past the length we validated against: a file that grows while we read
        // must not change what the parsers see.
        let avail = self.len.saturating_sub(offset);
        let n = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        match &self.backing {
            Backing::Local(file) => file.read_at(&mut buf[..n], offset),
            Backing::Remote(remote) => remote.read_at(&mut buf[..n], offset),
        }
    }
}

impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn small_reads_are_cheap(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= <[u8]>::len(self) {
            return Ok(0);
        }
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn small_reads_are_cheap(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_exact_at_rejects_ranges_past_the_end_without_reading() {
        let data = vec![1u8, 2, 3, 4];
        let mut buf = [0u8; 2];
        assert!(read_exact_at(&data, &mut buf, 2).is_ok());
        assert_eq!(buf, [3, 4]);
        assert!(matches!(
            read_exact_at(&data, &mut buf, 3),
            Err(ReadError::Truncated { offset: 3, .. })
        ));
        assert!(matches!(
            read_exact_at(&data, &mut buf, u64::MAX),
            Err(ReadError::Truncated { .. })
        ));
    }

    #[test]
    fn read_vec_at_refuses_huge_lengths_before_allocating() {
        let data = vec![0u8; 16];
        assert!(matches!(
            read_vec_at(&data, 0, usize::MAX),
            Err(ReadError::Truncated { .. })
        ));
    }
}
