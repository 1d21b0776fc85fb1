//! Sparse raw output, in one pass: the guest disk byte for byte, with holes where it reads
//! zeros.
//!
//! Chunks that may hold data are read by the worker threads a batch at a time and written in
//! guest order; within a chunk, every all-zero [`HOLE_GRANULARITY`] block becomes a hole
//! (`qemu-img convert`'s default `-S 4k`). Everything between data chunks is a hole too, and
//! the file is finally extended to the virtual size. The digest threads see the holes as the
//! zeros they read as, so the digests are those of the whole file, as `md5sum` reads it.

use super::Failure;
use super::output::HashedOutput;
use super::reader::{GuestReader, ReadFailure, is_zero};
use super::scan::{ChunkBuffers, ChunkScanner, Progress, chunk_size, map_in_order};

/// Smallest hole written: 4 KiB, the file system block and `qemu-img convert -S`'s default.
pub const HOLE_GRANULARITY: usize = 4096;

/// Writes the whole guest disk of `reader` into `out`.
pub fn write_raw(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    out: &mut HashedOutput<'_>,
    progress: &dyn Progress,
) -> Result<(), Failure> {
    let size = reader.virtual_size();
    let chunk = chunk_size(reader, HOLE_GRANULARITY as u64);
    let mut scanner = ChunkScanner::new(reader, chunk);
    let buffers = ChunkBuffers::default();
    progress.phase("converting", size);
    loop {
        let batch = scanner.next_batch().map_err(Failure::Input)?;
        if batch.is_empty() {
            break;
        }
        let read: Vec<Result<Vec<u8>, ReadFailure>> =
            map_in_order(pool, reader.costly_reads(), &batch, |&c| {
                let start = c * chunk;
                let mut buf = buffers.take(chunk.min(size - start) as usize);
                reader.read_at(start, &mut buf)?;
                Ok(buf)
            });
        for (&c, buf) in batch.iter().zip(read) {
            let buf = buf.map_err(Failure::Input)?;
            let start = c * chunk;
            out.skip_zeros(start - out.position())
                .map_err(Failure::Output)?;
            for block in buf.chunks(HOLE_GRANULARITY) {
                if is_zero(block) {
                    out.skip_zeros(block.len() as u64)
                } else {
                    out.write(block)
                }
                .map_err(Failure::Output)?;
            }
            buffers.give(buf);
        }
        progress.advance_to(out.position());
    }
    progress.advance_to(size);
    Ok(())
}
