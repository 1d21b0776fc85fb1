//! The outputs that map the guest disk in fixed-size blocks (dynamic VHD, monolithicSparse
//! VMDK, VHDX) and the fixed VHD, written front to back like qcow2: the scan
//! ([`super::qcow2_writer::scan_pass`], with the format's block as the cluster and no
//! compression) decides which blocks hold data, the format's encoder (in
//! `crate::format::<fmt>::writer`) lays out the metadata from that plan, and
//! [`write_blocks`] replays the plan, reading each allocated block again from the input.
//! All-zero blocks are never stored. The encoders do the format; this module does the I/O.

use std::io;

use super::buffers::PooledBuffer;
use super::input_hash::{self, InputHash};
use super::output::HashedOutput;
use super::plan::Plan;
use super::qcow2_writer::stored_zeros_are_data;
use super::scan::{MIN_CHUNK, Progress, batch_chunks, chunk_pool, map_in_order};
use super::{Failure, raw_writer};
use crate::digest::guest::GuestPiece;
use crate::format::guest::{GuestReader, ReadFailure};
use crate::format::vhdx::writer::{VhdxIds, VhdxLayout};
use crate::format::vmdk::writer::{self as vmdk, SparseLayout, VmdkKind};
use crate::format::vpc::writer::{self as vhd, DynamicLayout, VhdGeometry, VhdKind, VhdStamp};

/// Writes every allocated block of `plan` (`block_size`-byte blocks, in guest order), each
/// preceded by `prefix` and zero-padded past the end of the guest disk. Blocks are read again
/// from the input a batch at a time (by the worker threads when reads are costly), and a
/// block found all zeros now means the input changed since the scan (unless the scan took it
/// for data from the input's metadata: [`stored_zeros_are_data`]). With `guest`, the blocks
/// read are digested into it on the worker threads (this pass is the only one that reads them
/// whole; blocks not stored are zeros).
///
/// A block is read and written in pieces of at most [`MIN_CHUNK`] (a VHDX block is 32 MiB):
/// the buffers in flight are then the same few MiB whatever the block size, reused from the
/// pool, instead of a batch of whole blocks whose fresh pages the kernel must fault in.
#[allow(clippy::too_many_arguments)]
pub fn write_blocks(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    plan: &Plan,
    block_size: u64,
    prefix: &[u8],
    out: &mut HashedOutput,
    progress: &dyn Progress,
    mut guest: Option<&mut InputHash>,
) -> Result<(), Failure> {
    let size = reader.virtual_size();
    // Block sizes are powers of two, so a piece divides its block.
    let piece = block_size.min(MIN_CHUNK);
    let per_block = block_size / piece;
    let buffers = chunk_pool(piece);
    let digester = guest.as_ref().map(|g| g.digester());
    let parallel = reader.costly_reads() || digester.is_some();
    let per_batch = batch_chunks(piece, parallel);
    let mut pieces = plan
        .iter()
        .flat_map(|(block, _)| (0..per_block).map(move |k| (block, k)))
        .peekable();
    // Whether every piece of the current block so far read as zeros.
    let mut block_zero = true;
    while pieces.peek().is_some() {
        let batch: Vec<(u64, u64)> = pieces.by_ref().take(per_batch).collect();
        type Read = (PooledBuffer, Option<GuestPiece>, Vec<(usize, usize)>);
        let read: Vec<Result<Read, ReadFailure>> =
            map_in_order(pool, parallel, &batch, |&(block, k)| {
                let start = block * block_size + k * piece;
                let len = piece.min(size.saturating_sub(start)) as usize;
                let mut buf = buffers.take(piece as usize);
                // The last block's pieces past the end of the disk are padding only.
                if len > 0 {
                    reader.read_at(start, &mut buf[..len])?;
                }
                buf[len..].fill(0);
                let digested = digester
                    .filter(|_| len > 0)
                    .map(|d| d.piece(start, &buf[..len]));
                // The zeros inside a stored block (the free space of a partly used 32 MiB
                // VHDX block, the padding past the end of the disk) stay holes in the file,
                // as in qemu-img's outputs, whose blocks are allocated by extending the file:
                // they read as zeros, and neither the page cache nor the disk holds them.
                let holes = raw_writer::zero_runs(&buf);
                Ok((buf, digested, holes))
            });
        for (&(block, k), read) in batch.iter().zip(read) {
            let (buf, digested, holes) = read.map_err(Failure::Input)?;
            input_hash::add(&mut guest, digested)?;
            if k == 0 {
                block_zero = true;
                out.write(prefix).map_err(Failure::Output)?;
            }
            block_zero &= holes.first() == Some(&(0, buf.len()));
            out.write_buffer(buf, holes).map_err(Failure::Output)?;
            if k + 1 == per_block && block_zero {
                stored_zeros_are_data(reader, block * block_size, block_size)?;
            }
        }
        progress.advance_to(out.position());
    }
    Ok(())
}

/// A fixed VHD: the guest disk as sparse raw, zeros up to the geometry's size, the footer.
/// Returns the file's length.
pub fn write_fixed_vhd(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    geometry: &VhdGeometry,
    stamp: &VhdStamp,
    out: &mut HashedOutput,
    progress: &dyn Progress,
    guest: Option<&mut InputHash>,
) -> Result<u64, Failure> {
    raw_writer::write_raw(reader, pool, out, progress, guest)?;
    let w = Failure::Output;
    out.skip_zeros(geometry.virtual_size - out.position())
        .map_err(w)?;
    out.write(&vhd::footer_bytes(geometry, VhdKind::Fixed, stamp))
        .map_err(w)?;
    Ok(out.position())
}

/// A dynamic VHD from the scan's `plan` of 2 MiB blocks. Returns the file's length.
#[allow(clippy::too_many_arguments)]
pub fn write_dynamic_vhd(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    plan: &Plan,
    geometry: &VhdGeometry,
    stamp: &VhdStamp,
    out: &mut HashedOutput,
    progress: &dyn Progress,
    guest: Option<&mut InputHash>,
) -> Result<u64, Failure> {
    let w = |e: io::Error| Failure::Output(e);
    let layout = DynamicLayout::new(geometry.virtual_size);
    progress.phase("writing", layout.file_len(plan.allocated()));
    let footer = vhd::footer_bytes(geometry, VhdKind::Dynamic, stamp);
    out.write(&footer).map_err(w)?;
    out.write(&vhd::dynamic_header_bytes(&layout)).map_err(w)?;
    vhd::write_bat(&layout, plan.iter().map(|(b, _)| b), |piece| {
        out.write(piece)
    })
    .map_err(w)?;
    // Every sector of a stored block is present: its bitmap is all ones, as QEMU writes it.
    let bitmap = [0xffu8; vhd::BITMAP_LEN as usize];
    write_blocks(
        reader,
        pool,
        plan,
        vhd::BLOCK_SIZE,
        &bitmap,
        out,
        progress,
        guest,
    )?;
    out.write(&footer).map_err(w)?;
    let len = out.position();
    debug_assert_eq!(len, layout.file_len(plan.allocated()));
    Ok(len)
}

/// A monolithicSparse VMDK from the scan's `plan` of 64 KiB grains. Returns the file's length.
#[allow(clippy::too_many_arguments)]
pub fn write_monolithic_sparse(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    plan: &Plan,
    extent_file: &str,
    cid: u32,
    out: &mut HashedOutput,
    progress: &dyn Progress,
    guest: Option<&mut InputHash>,
) -> Result<u64, Failure> {
    let w = |e: io::Error| Failure::Output(e);
    let capacity = reader.virtual_size().div_ceil(vmdk::SECTOR);
    let layout = SparseLayout::new(capacity);
    let len = layout.file_len(plan.allocated());
    if len / vmdk::SECTOR > vmdk::MAX_FILE_SECTORS {
        return Err(Failure::Output(io::Error::other(
            "the VMDK would be larger than 2 TiB, beyond its 32-bit sector offsets",
        )));
    }
    progress.phase("writing", len);
    out.write(&layout.header().encode()).map_err(w)?;
    out.write(&vmdk::descriptor(
        VmdkKind::MonolithicSparse,
        capacity,
        extent_file,
        cid,
    ))
    .map_err(w)?;
    // Both copies of the directory and tables, equal, as QEMU keeps them.
    for gd_at in [layout.rgd_offset, layout.gd_offset] {
        layout
            .write_directory(gd_at, plan.iter().map(|(g, _)| g), |piece| out.write(piece))
            .map_err(w)?;
    }
    out.write_zeros(layout.grain_offset * vmdk::SECTOR - out.position())
        .map_err(w)?;
    write_blocks(
        reader,
        pool,
        plan,
        vmdk::GRAIN_SIZE,
        &[],
        out,
        progress,
        guest,
    )?;
    debug_assert_eq!(out.position(), len);
    Ok(len)
}

/// A dynamic VHDX from the scan's `plan` of `layout.block_size` blocks. Returns the file's
/// length.
#[allow(clippy::too_many_arguments)]
pub fn write_vhdx(
    reader: &dyn GuestReader,
    pool: &rayon::ThreadPool,
    plan: &Plan,
    layout: &VhdxLayout,
    ids: &VhdxIds,
    creator: &str,
    out: &mut HashedOutput,
    progress: &dyn Progress,
    guest: Option<&mut InputHash>,
) -> Result<u64, Failure> {
    let w = |e: io::Error| Failure::Output(e);
    let len = layout.file_len(plan.allocated());
    progress.phase("writing", len);
    out.write(&layout.header_section(ids, creator)).map_err(w)?;
    // The log is empty: a hole.
    out.skip_zeros(crate::format::vhdx::writer::LOG_LENGTH)
        .map_err(w)?;
    layout
        .write_bat(plan.iter().map(|(b, _)| b), |piece| out.write(piece))
        .map_err(w)?;
    out.write(&layout.metadata_region(ids)).map_err(w)?;
    write_blocks(
        reader,
        pool,
        plan,
        layout.block_size,
        &[],
        out,
        progress,
        guest,
    )?;
    debug_assert_eq!(out.position(), len);
    Ok(len)
}
