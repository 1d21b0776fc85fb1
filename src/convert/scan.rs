//! Walking the guest disk in chunks that may hold data, in guest order, in batches for the
//! worker threads.
//!
//! A chunk is an aligned run of `chunk_size` guest bytes (a power of two: the larger of the
//! output cluster, the input's read granularity and [`MIN_CHUNK`]). Chunks that the input's
//! metadata or file system says hold nothing are never read. The batch of chunk indices handed
//! to the workers is bounded by [`BATCH_BYTES`], which bounds the memory in flight.

use std::sync::Mutex;

use rayon::prelude::*;

use super::reader::{GuestReader, ReadFailure};

/// Smallest chunk: 1 MiB, so that a task is worth scheduling even for 512-byte clusters and a
/// read costs one system call per MiB (qemu-img reads 2 MiB at a time).
pub const MIN_CHUNK: u64 = 1024 * 1024;
/// Guest bytes per batch: 32 MiB (plus at most as much compressed output) in flight.
pub const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// What the worker threads report, to draw a progress bar.
pub trait Progress: Sync {
    /// A new phase begins; `total` is the amount `advance_to` will reach.
    fn phase(&self, name: &'static str, total: u64);
    /// Progress within the phase.
    fn advance_to(&self, done: u64);
}

/// No progress reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _name: &'static str, _total: u64) {}
    fn advance_to(&self, _done: u64) {}
}

/// The chunk size for a reader and an output cluster size.
pub fn chunk_size(reader: &dyn GuestReader, cluster_size: u64) -> u64 {
    reader
        .granularity()
        .max(cluster_size)
        .max(MIN_CHUNK)
        .next_power_of_two()
}

/// Yields, in order and once each, the indices of the chunks that may hold data.
pub struct ChunkScanner<'r> {
    reader: &'r dyn GuestReader,
    chunk: u64,
    /// Guest offset of the next extent query.
    offset: u64,
    /// Chunks of the current data extent still to hand out: `next..=last`.
    current: Option<(u64, u64)>,
    /// The last chunk handed out (extents sharing a chunk must not repeat it).
    last_emitted: Option<u64>,
}

impl<'r> ChunkScanner<'r> {
    /// A scanner over `reader` with chunks of `chunk` bytes.
    pub fn new(reader: &'r dyn GuestReader, chunk: u64) -> Self {
        Self {
            reader,
            chunk,
            offset: 0,
            current: None,
            last_emitted: None,
        }
    }

    /// The next batch (empty at the end).
    pub fn next_batch(&mut self) -> Result<Vec<u64>, ReadFailure> {
        let max = (BATCH_BYTES / self.chunk).max(1) as usize;
        let size = self.reader.virtual_size();
        let mut batch = Vec::with_capacity(max.min(1024));
        while batch.len() < max {
            if let Some((next, last)) = self.current {
                batch.push(next);
                self.last_emitted = Some(next);
                self.current = (next < last).then_some((next + 1, last));
                continue;
            }
            if self.offset >= size {
                break;
            }
            let e = self.reader.extent_at(self.offset)?;
            if e.len == 0 || e.start != self.offset || e.end() > size {
                return Err(ReadFailure::Invalid(format!(
                    "the image map returned an invalid extent at {:#x}",
                    self.offset
                )));
            }
            self.offset = e.end();
            if !e.data {
                continue;
            }
            let mut first = e.start / self.chunk;
            let last = (e.end() - 1) / self.chunk;
            if let Some(prev) = self.last_emitted {
                first = first.max(prev + 1);
            }
            if first <= last {
                self.current = Some((first, last));
            }
        }
        Ok(batch)
    }

    /// Guest bytes already covered (for progress).
    pub fn position(&self) -> u64 {
        match self.current {
            Some((next, _)) => next * self.chunk,
            None => self.offset,
        }
    }
}

/// Chunk buffers recycled from batch to batch: a fresh zeroed buffer per chunk costs a
/// `memset` as large as the read that then overwrites it. Holds at most one batch's worth.
#[derive(Debug, Default)]
pub struct ChunkBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkBuffers {
    /// A buffer of `len` bytes whose contents are unspecified (left from an earlier chunk):
    /// callers overwrite all of it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if (free.len() as u64) < BATCH_BYTES / MIN_CHUNK {
            free.push(buf);
        }
    }
}

/// Maps `f` over `items`, results in order: on the worker pool when the work is costly
/// (compressing, or decompressing a compressed input), on the calling thread otherwise. Plain
/// reads and zero tests cost less than waking the workers, whose idle spinning would take CPU
/// from the digest threads.
pub fn map_in_order<T: Sync, R: Send>(
    pool: &rayon::ThreadPool,
    parallel: bool,
    items: &[T],
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    if parallel {
        pool.install(|| items.par_iter().map(&f).collect())
    } else {
        items.iter().map(f).collect()
    }
}
