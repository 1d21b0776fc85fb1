//! Walking the guest disk in chunks that may hold data, in guest order, in batches for the
//! worker threads.
//!
//! A chunk is an aligned run of `chunk_size` guest bytes (a power of two: the larger of the
//! output cluster, the input's read granularity and [`MIN_CHUNK`]). Chunks that the input's
//! metadata or file system says hold nothing are never read. The batch of chunk indices handed
//! to the workers is bounded by [`BATCH_BYTES`], which bounds the memory in flight.

use rayon::prelude::*;

use super::buffers::BufferPool;
use super::output::OUTPUT_QUEUE;

use crate::format::guest::{GuestReader, ReadFailure};

/// Smallest chunk: 1 MiB, so that a task is worth scheduling even for 512-byte clusters and a
/// read costs one system call per MiB (qemu-img reads 2 MiB at a time).
pub const MIN_CHUNK: u64 = 1024 * 1024;
/// Guest bytes per batch spread over the worker threads: 32 MiB (plus at most as much
/// compressed output) in flight.
pub const BATCH_BYTES: u64 = 32 * 1024 * 1024;
/// Guest bytes per batch read on the calling thread: what the output's queue holds in chunks,
/// so that the next batch is read while the writer drains the last one.
pub const READ_AHEAD_BYTES: u64 = (OUTPUT_QUEUE as u64) * MIN_CHUNK;

/// Chunks per batch: [`BATCH_BYTES`] worth when they are read on the worker threads,
/// [`READ_AHEAD_BYTES`] when on the calling thread.
pub fn batch_chunks(chunk: u64, parallel: bool) -> usize {
    let bytes = if parallel {
        BATCH_BYTES
    } else {
        READ_AHEAD_BYTES
    };
    (bytes / chunk).max(1) as usize
}

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

    /// The next batch of at most `max` chunks (empty at the end).
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<u64>, ReadFailure> {
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

/// A pool for the chunk buffers of one pass: a batch's worth, and as many again in the output's
/// queues when the buffers are handed to the writer.
pub fn chunk_pool(chunk: u64) -> BufferPool {
    BufferPool::new(batch_chunks(chunk, true) + 2 * OUTPUT_QUEUE)
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
