//! Compressed clusters between the two passes: appended in guest order during the scan, read
//! back in the same order while the data area is written.
//!
//! The first [`SPILL_MEMORY_LIMIT`] bytes stay in memory; the rest goes to a temporary file
//! beside the output (registered for clean-up like the output, deleted when dropped), so memory
//! stays bounded whatever the image size.

use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::atomic::{TempFile, fault};

/// Compressed bytes kept in memory before spilling to disk: 256 MiB, a fraction of this
/// machine class's 24 GiB that keeps images of a few GiB entirely in memory.
pub const SPILL_MEMORY_LIMIT: usize = 256 * 1024 * 1024;

/// An append-then-read-once byte store.
pub struct Spill<'a> {
    target: &'a Path,
    mem: Vec<u8>,
    limit: usize,
    disk: Option<(TempFile, BufWriter<std::fs::File>)>,
    len: u64,
}

impl<'a> Spill<'a> {
    /// An empty store whose overflow file would live beside `target`, keeping
    /// [`SPILL_MEMORY_LIMIT`] bytes in memory (less under the test hook's `spill-limit`).
    pub fn new(target: &'a Path) -> Self {
        Self::with_limit(target, fault::spill_limit().unwrap_or(SPILL_MEMORY_LIMIT))
    }

    /// Same, with a chosen memory limit (tests use a small one to exercise the file).
    pub fn with_limit(target: &'a Path, limit: usize) -> Self {
        Self {
            target,
            mem: Vec::new(),
            limit,
            disk: None,
            len: 0,
        }
    }

    /// Appends `data`.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        let room = self.limit.saturating_sub(self.mem.len());
        let (now, later) = data.split_at(room.min(data.len()));
        self.mem.extend_from_slice(now);
        if later.is_empty() {
            return Ok(());
        }
        if self.disk.is_none() {
            let tmp = TempFile::create_beside(self.target, "vmimage-spill")?;
            let w = BufWriter::with_capacity(1 << 20, tmp.file()?.try_clone()?);
            self.disk = Some((tmp, w));
        }
        fault::io_point()?;
        match &mut self.disk {
            Some((_, w)) => w.write_all(later),
            None => Err(io::Error::other("spill file missing")),
        }
    }

    /// Bytes stored.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ends appending; returns a reader of everything stored, in order.
    pub fn into_reader(self) -> io::Result<SpillReader> {
        let disk = match self.disk {
            Some((tmp, mut w)) => {
                fault::io_point()?;
                w.flush()?;
                let mut f = w.into_inner().map_err(|e| e.into_error())?;
                f.seek(SeekFrom::Start(0))?;
                Some((tmp, io::BufReader::with_capacity(1 << 20, f)))
            }
            None => None,
        };
        Ok(SpillReader {
            mem: self.mem,
            mem_pos: 0,
            disk,
        })
    }
}

/// Reads a [`Spill`] back in order.
pub struct SpillReader {
    mem: Vec<u8>,
    mem_pos: usize,
    disk: Option<(TempFile, io::BufReader<std::fs::File>)>,
}

impl SpillReader {
    /// Fills `buf` with the next bytes.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let from_mem = (self.mem.len() - self.mem_pos).min(buf.len());
        buf[..from_mem].copy_from_slice(&self.mem[self.mem_pos..self.mem_pos + from_mem]);
        self.mem_pos += from_mem;
        if from_mem == buf.len() {
            return Ok(());
        }
        match &mut self.disk {
            Some((_, r)) => r.read_exact(&mut buf[from_mem..]),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "compressed data store ended early",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_in_order_across_memory_and_file_and_the_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.qcow2");
        let mut s = Spill::with_limit(&target, 10);
        let data: Vec<u8> = (0..100u8).collect();
        s.push(&data[..7]).unwrap();
        s.push(&data[7..50]).unwrap();
        s.push(&data[50..]).unwrap();
        assert_eq!(s.len(), 100);
        let mut r = s.into_reader().unwrap();
        let mut back = vec![0u8; 100];
        r.read_exact(&mut back[..3]).unwrap();
        r.read_exact(&mut back[3..]).unwrap();
        assert_eq!(back, data);
        drop(r);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
