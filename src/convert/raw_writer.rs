//! Sparse raw output, in one pass: the guest disk byte for byte, with holes where it reads
//! zeros.
//!
//! Chunks that may hold data are read by the worker threads a batch at a time and handed to
//! the output in guest order, as read; within a chunk, every all-zero [`HOLE_GRANULARITY`]
//! block becomes a hole
//! (`qemu-img convert`'s default `-S 4k`). Everything between data chunks is a hole too, and
//! the file is finally extended to the virtual size. The digest threads see the holes as the
//! zeros they read as, so the digests are those of the whole file, as `md5sum` reads it.

use super::Failure;
use super::buffers::PooledBuffer;
use super::input_hash::{self, InputHash};
use super::output::HashedOutput;
use super::scan::{ChunkScanner, Progress, batch_chunks, chunk_pool, chunk_size, map_in_order};
use crate::digest::guest::GuestPiece;
use crate::format::guest::{GuestReader, ReadFailure, is_zero};

/// Smallest hole written: 4 KiB, the file system block and `qemu-img convert -S`'s default.
pub const HOLE_GRANULARITY: usize = 4096;

/// The runs of all-zero [`HOLE_GRANULARITY`] blocks in `buf`, as (start, len) ranges in order
/// and apart: what a file output leaves as holes rather than writing (`qemu-img convert`'s
/// `-S 4k`). A block of data is told from zeros by its first non-zero byte, so data costs
/// little to test; only the zeros are read whole.
pub fn zero_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut holes: Vec<(usize, usize)> = Vec::new();
    for (k, block) in buf.chunks(HOLE_GRANULARITY).enumerate() {
        if is_zero(block) {
            let at = k * HOLE_GRANULARITY;
            match holes.last_mut() {
                Some((s, l)) if *s + *l == at => *l += block.len(),
                _ => holes.push((at, block.len())),
            }
        }
    }
    holes
}

/// Writes the whole guest disk of `reader` into `out`; with `guest`, digests the blocks of every
/// chunk read into it, on the worker threads.
pub fn write_raw(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    out: &mut HashedOutput,
    progress: &dyn Progress,
    mut guest: Option<&mut InputHash>,
) -> Result<(), Failure> {
    let size = reader.virtual_size();
    let chunk = chunk_size(reader, HOLE_GRANULARITY as u64);
    let mut scanner = ChunkScanner::new(reader, chunk);
    let buffers = chunk_pool(chunk);
    // Block digests are worth both cores, plain reads are not (see `map_in_order`).
    let digester = guest.as_ref().map(|g| g.digester());
    progress.phase("converting", size);
    loop {
        // Decided again for every batch: a reader knows its reads are costly (compressed
        // clusters) only once its extents have been mapped, and nothing has been before the
        // first batch, so a decision made once would inflate a compressed qcow2 on one core.
        let parallel = reader.costly_reads() || digester.is_some();
        let batch = scanner
            .next_batch(batch_chunks(chunk, parallel))
            .map_err(Failure::Input)?;
        if batch.is_empty() {
            break;
        }
        let parallel = reader.costly_reads() || digester.is_some();
        let read: Vec<Result<(PooledBuffer, Option<GuestPiece>), ReadFailure>> =
            map_in_order(pool, parallel, &batch, |&c| {
                let start = c * chunk;
                let mut buf = buffers.take(chunk.min(size - start) as usize);
                reader.read_at(start, &mut buf)?;
                let piece = digester.map(|d| d.piece(start, &buf));
                Ok((buf, piece))
            });
        for (&c, read) in batch.iter().zip(read) {
            let (buf, piece) = read.map_err(Failure::Input)?;
            input_hash::add(&mut guest, piece)?;
            let start = c * chunk;
            out.skip_zeros(start - out.position())
                .map_err(Failure::Output)?;
            let holes = zero_runs(&buf);
            out.write_buffer(buf, holes).map_err(Failure::Output)?;
        }
        progress.advance_to(out.position());
    }
    progress.advance_to(size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::guest::Extent;

    /// Records whether any read ran on the thread that called `write_raw`.
    struct ThreadRecording {
        inner: Box<dyn GuestReader>,
        caller: std::thread::ThreadId,
        on_caller: std::sync::atomic::AtomicUsize,
    }

    impl GuestReader for ThreadRecording {
        fn virtual_size(&self) -> u64 {
            self.inner.virtual_size()
        }
        fn granularity(&self) -> u64 {
            self.inner.granularity()
        }
        fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
            self.inner.extent_at(offset)
        }
        fn costly_reads(&self) -> bool {
            self.inner.costly_reads()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
            if std::thread::current().id() == self.caller {
                self.on_caller
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.inner.read_at(offset, buf)
        }
    }

    /// A compressed qcow2 is inflated by the worker threads from its first chunk on. Before,
    /// the choice was made before any extent was mapped, when the reader did not yet know it
    /// was compressed, and a raw output inflated the whole image on the calling thread.
    #[test]
    fn a_compressed_input_is_inflated_on_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Vec<u8> = (0..4u32 << 20)
            .map(|i| b"abcdefgh "[(i * 7 % 9) as usize])
            .collect();
        let inner = crate::convert::test_inputs::qemu_compressed_qcow2(dir.path(), &disk);
        let reader = ThreadRecording {
            inner,
            caller: std::thread::current().id(),
            on_caller: 0.into(),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let target = dir.path().join("out.raw");
        let sink = Box::new(crate::convert::output::FileSink::new(
            std::fs::File::create(&target).unwrap(),
            false,
        ));
        let mut out = HashedOutput::new(sink, &[]).unwrap();
        write_raw(
            &reader,
            &pool,
            &mut out,
            &crate::convert::scan::NoProgress,
            None,
        )
        .unwrap();
        out.finish(disk.len() as u64).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), disk);
        assert_eq!(
            reader.on_caller.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "chunks inflated on the calling thread"
        );
    }
}
