//! streamOptimized VMDK output in one pass (the layout is
//! [`crate::format::vmdk::writer`]'s): the chunks that may hold data are read and their
//! non-zero grains compressed by the worker threads a batch at a time, while the calling
//! thread writes the previous batch: grains in guest order, each grain table after its
//! grains, then the directory, the footer and the end-of-stream marker. Nothing goes back in
//! the file, so the output needs no second pass and no spill; the directory (4 bytes per
//! 32 MiB of disk) is the only table kept.
//!
//! Each grain is compressed alone with a fresh zlib stream (RFC 1950, level 5), and results
//! are written in chunk order: the bytes do not depend on the thread count.

use std::cell::RefCell;
use std::io;

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;

use super::Failure;
use super::buffers::BufferPool;
use super::input_hash::{self, InputHash};
use super::output::HashedOutput;
use super::scan::{ChunkScanner, Progress, batch_chunks, chunk_pool, chunk_size};
use crate::digest::guest::{BlockDigester, GuestPiece};
use crate::format::guest::{GuestReader, ReadFailure, is_zero};
use crate::format::vmdk::writer::{
    self as vmdk, GRAIN_SECTORS, GRAIN_SIZE, GTES_PER_GT, MAX_FILE_SECTORS, SECTOR, VmdkKind,
};

/// The zlib level: 5, one below QEMU's (`compress()`, i.e. `Z_DEFAULT_COMPRESSION`, 6). On
/// the 4 GiB ext4 disk of `benches/convert-side-by-side.sh` level 5 costs 30 % less CPU time
/// for 0.8 % more compressed bytes; level 4 was 2.8 % larger (docs/benchmarks.md, "Speed:
/// convert").
pub const ZLIB_LEVEL: u32 = 5;

thread_local! {
    static DEFLATER: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// One chunk's framed grains: (grain number, marker + compressed data + padding), and the
/// digests of its guest blocks when the input is hashed.
type ChunkGrains = (Vec<(u64, Vec<u8>)>, Option<GuestPiece>);

/// Writes the stream; returns (file length, grains stored). With `guest`, the blocks of every
/// chunk read are digested into it by the worker thread that compresses the chunk.
pub fn write_stream(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    extent_file: &str,
    cid: u32,
    out: &mut HashedOutput,
    progress: &dyn Progress,
    mut guest: Option<&mut InputHash>,
) -> Result<(u64, u64), Failure> {
    let size = reader.virtual_size();
    let capacity = size.div_ceil(SECTOR);
    let w = |e: io::Error| Failure::Output(e);
    out.write(&vmdk::stream_start(capacity)).map_err(w)?;
    out.write(&vmdk::descriptor(
        VmdkKind::StreamOptimized,
        capacity,
        extent_file,
        cid,
    ))
    .map_err(w)?;
    out.write_zeros(vmdk::STREAM_GRAIN_OFFSET * SECTOR - out.position())
        .map_err(w)?;

    let gt_count = capacity.div_ceil(GRAIN_SECTORS).div_ceil(GTES_PER_GT);
    let mut tables = Tables {
        gd: vec![0u32; usize::try_from(gt_count).map_err(|_| too_large())?],
        current: None,
        table: vec![0u32; GTES_PER_GT as usize],
        stored: 0,
    };
    let chunk = chunk_size(reader, GRAIN_SIZE);
    let mut scanner = ChunkScanner::new(reader, chunk);
    let buffers = chunk_pool(chunk);
    let digester = guest.as_ref().map(|g| g.digester());
    progress.phase("compressing", size);
    let mut previous: Option<Vec<Result<ChunkGrains, ReadFailure>>> = None;
    loop {
        let batch = scanner
            .next_batch(batch_chunks(chunk, true))
            .map_err(Failure::Input)?;
        let last = previous.take();
        let (results, written) = pool.install(|| {
            rayon::join(
                || -> Vec<Result<ChunkGrains, ReadFailure>> {
                    batch
                        .par_iter()
                        .map(|&c| compress_chunk(reader, &buffers, c * chunk, chunk, digester))
                        .collect()
                },
                || last.map_or(Ok(()), |r| tables.write_batch(r, out, &mut guest)),
            )
        });
        written?;
        if batch.is_empty() {
            break;
        }
        previous = Some(results);
        progress.advance_to(scanner.position().min(size));
    }
    tables.close_table(out)?;
    let gd_at = out.position() / SECTOR + 1;
    if gd_at > MAX_FILE_SECTORS {
        return Err(too_large());
    }
    out.write(&vmdk::stream_tail(capacity, &tables.gd, gd_at))
        .map_err(w)?;
    progress.advance_to(size);
    Ok((out.position(), tables.stored))
}

fn too_large() -> Failure {
    Failure::Output(io::Error::other(
        "the VMDK would be larger than 2 TiB, beyond its 32-bit sector offsets",
    ))
}

/// The grain table being filled and the directory.
struct Tables {
    gd: Vec<u32>,
    /// The table whose grains are being written.
    current: Option<u64>,
    table: Vec<u32>,
    stored: u64,
}

impl Tables {
    fn write_batch(
        &mut self,
        results: Vec<Result<ChunkGrains, ReadFailure>>,
        out: &mut HashedOutput,
        guest: &mut Option<&mut InputHash>,
    ) -> Result<(), Failure> {
        for r in results {
            let (grains, piece) = r.map_err(Failure::Input)?;
            input_hash::add(guest, piece)?;
            for (grain, framed) in grains {
                let gt = grain / GTES_PER_GT;
                if self.current != Some(gt) {
                    self.close_table(out)?;
                    self.current = Some(gt);
                }
                let sector = out.position() / SECTOR;
                if sector + framed.len() as u64 / SECTOR > MAX_FILE_SECTORS {
                    return Err(too_large());
                }
                self.table[(grain % GTES_PER_GT) as usize] = sector as u32;
                self.stored += 1;
                out.write(&framed).map_err(Failure::Output)?;
            }
        }
        Ok(())
    }

    /// Writes the current table (its marker, then the table) and records it in the directory.
    fn close_table(&mut self, out: &mut HashedOutput) -> Result<(), Failure> {
        let Some(gt) = self.current.take() else {
            return Ok(());
        };
        let w = Failure::Output;
        out.write(&vmdk::grain_table_marker()).map_err(w)?;
        let at = out.position() / SECTOR;
        if at > MAX_FILE_SECTORS {
            return Err(too_large());
        }
        self.gd[gt as usize] = at as u32;
        let mut bytes = Vec::with_capacity(self.table.len() * 4);
        for e in &self.table {
            bytes.extend_from_slice(&e.to_le_bytes());
        }
        out.write(&bytes).map_err(w)?;
        self.table.fill(0);
        Ok(())
    }
}

/// Reads the chunk at `start`, digests its guest blocks with `digester` and frames each
/// non-zero grain, compressed.
fn compress_chunk(
    reader: &dyn GuestReader,
    buffers: &BufferPool,
    start: u64,
    chunk: u64,
    digester: Option<BlockDigester>,
) -> Result<ChunkGrains, ReadFailure> {
    let len = chunk.min(reader.virtual_size() - start) as usize;
    let mut buf = buffers.take(len.next_multiple_of(GRAIN_SIZE as usize));
    reader.read_at(start, &mut buf[..len])?;
    buf[len..].fill(0);
    let piece = digester.map(|d| d.piece(start, &buf[..len]));
    let mut out = Vec::new();
    for (k, grain) in buf.chunks(GRAIN_SIZE as usize).enumerate() {
        if is_zero(grain) {
            continue;
        }
        let number = start / GRAIN_SIZE + k as u64;
        let data = compress_grain(grain)?;
        let mut framed = Vec::with_capacity(data.len() + 512);
        vmdk::frame_grain(number * GRAIN_SECTORS, &data, &mut framed);
        out.push((number, framed));
    }
    Ok((out, piece))
}

/// One grain as a zlib stream (QEMU's `compress()`), with a fresh context per grain.
fn compress_grain(grain: &[u8]) -> Result<Vec<u8>, ReadFailure> {
    DEFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let c =
            cell.get_or_insert_with(|| Compress::new(flate2::Compression::new(ZLIB_LEVEL), true));
        c.reset();
        // zlib's compressBound for a 64 KiB grain is below 64 KiB + 1 KiB.
        let mut data = Vec::with_capacity(grain.len() + 1024);
        match c.compress_vec(grain, &mut data, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => Ok(data),
            _ => Err(ReadFailure::Io(io::Error::other(
                "zlib could not compress a grain",
            ))),
        }
    })
}
