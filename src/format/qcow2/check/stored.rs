//! The reference counts stored in the image: the refcount table and the refcount blocks it
//! points at, looked up as `qcow2_get_refcount` does.
//!
//! The blocks covering the file's own clusters are read once, in refcount-table order, into
//! one buffer of `clusters * refcount_bits / 8` bytes (rounded to whole blocks): memory
//! proportional to the file, never to the table sizes the header claims. The rare lookup of a
//! cluster past the end of the file (an entry pointing there) goes through a one-block cache.

use super::super::tables::{REFT_OFFSET_MASK, refcount_at};
use super::error::CheckError;
use super::open::{CheckLayout, qemu_can_read};
use super::read::{ReadFailure, read_zero_filled};
use crate::format::bytes::be64;
use crate::source::ReadAt;

/// A refcount lookup QEMU fails with `EIO`: the block offset is not cluster-aligned, or lies
/// beyond what the block layer can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unreadable;

#[derive(Debug, Clone, Copy)]
enum BlockSlot {
    /// No block: every refcount is 0.
    Zero,
    /// Loaded at this byte offset of the arena.
    Loaded(usize),
    /// QEMU cannot read it.
    Unreadable,
}

/// The image's stored reference counts.
#[derive(Debug)]
pub(super) struct StoredRefcounts {
    order: u32,
    block_bits: u32,
    cluster_size: u64,
    /// Refcount table entries that lie inside the file (the rest read as zero).
    reftable: Vec<u64>,
    /// Entries the header declares.
    reftable_entries: u64,
    slots: Vec<BlockSlot>,
    arena: Vec<u8>,
    cache: Option<(u64, Vec<u8>)>,
}

impl StoredRefcounts {
    /// Reads the refcount table and the blocks that cover clusters `0..clusters`.
    pub(super) fn load<S: ReadAt + ?Sized>(
        src: &S,
        layout: &CheckLayout,
        clusters: u64,
    ) -> Result<Self, CheckError> {
        let cluster_size = layout.cluster_size();
        let in_file = layout
            .file_len
            .saturating_sub(layout.refcount_table_offset)
            .div_ceil(8)
            .min(layout.refcount_table_entries);
        let mut raw = vec![0u8; (in_file * 8) as usize];
        read(src, &mut raw, layout.refcount_table_offset)?;
        let reftable: Vec<u64> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        drop(raw);

        let block_bits = layout.refcount_block_bits();
        let needed = clusters
            .div_ceil(1u64 << block_bits)
            .min(layout.refcount_table_entries);
        let mut slots = Vec::with_capacity(needed as usize);
        let mut arena = Vec::new();
        for i in 0..needed {
            let offset = reftable.get(i as usize).copied().unwrap_or(0) & REFT_OFFSET_MASK;
            let slot = if offset == 0 {
                BlockSlot::Zero
            } else if !offset.is_multiple_of(cluster_size) || !qemu_can_read(offset, cluster_size) {
                BlockSlot::Unreadable
            } else if offset >= layout.file_len {
                // Past the end of the file QEMU reads zeros.
                BlockSlot::Zero
            } else {
                let start = arena.len();
                arena.resize(start + cluster_size as usize, 0);
                read(src, &mut arena[start..], offset)?;
                BlockSlot::Loaded(start)
            };
            slots.push(slot);
        }
        Ok(Self {
            order: layout.refcount_order,
            block_bits,
            cluster_size,
            reftable,
            reftable_entries: layout.refcount_table_entries,
            slots,
            arena,
            cache: None,
        })
    }

    /// Refcount table entries as stored, for `check_refblocks` (entries past the end of the
    /// file read as zero and are not listed).
    pub(super) fn reftable(&self) -> &[u64] {
        &self.reftable
    }

    /// log2 of the refcounts per block.
    pub(super) fn block_bits(&self) -> u32 {
        self.block_bits
    }

    /// The stored block `index` of the refcount table, if loaded: `Ok(None)` for no block
    /// (all zero), `Err` when QEMU cannot read it. Blocks beyond the loaded range are `None`.
    pub(super) fn loaded_block(&self, index: u64) -> Result<Option<&[u8]>, Unreadable> {
        match self.slots.get(index as usize) {
            None | Some(BlockSlot::Zero) => Ok(None),
            Some(BlockSlot::Unreadable) => Err(Unreadable),
            Some(&BlockSlot::Loaded(start)) => {
                Ok(self.arena.get(start..start + self.cluster_size as usize))
            }
        }
    }

    /// The stored refcount of host cluster `cluster` (`qcow2_get_refcount`).
    pub(super) fn get<S: ReadAt + ?Sized>(
        &mut self,
        src: &S,
        cluster: u64,
    ) -> Result<Result<u64, Unreadable>, CheckError> {
        let table_index = cluster >> self.block_bits;
        let within = cluster & ((1u64 << self.block_bits) - 1);
        if table_index >= self.reftable_entries {
            return Ok(Ok(0));
        }
        if (table_index as usize) < self.slots.len() {
            return Ok(self
                .loaded_block(table_index)
                .map(|b| b.map_or(0, |b| refcount_at(b, within, self.order))));
        }
        let offset = self
            .reftable
            .get(table_index as usize)
            .copied()
            .unwrap_or(0)
            & REFT_OFFSET_MASK;
        if offset == 0 {
            return Ok(Ok(0));
        }
        if !offset.is_multiple_of(self.cluster_size) || !qemu_can_read(offset, self.cluster_size) {
            return Ok(Err(Unreadable));
        }
        if self.cache.as_ref().is_none_or(|(o, _)| *o != offset) {
            let mut block = vec![0u8; self.cluster_size as usize];
            read(src, &mut block, offset)?;
            self.cache = Some((offset, block));
        }
        Ok(Ok(self
            .cache
            .as_ref()
            .map_or(0, |(_, b)| refcount_at(b, within, self.order))))
    }
}

fn read<S: ReadAt + ?Sized>(src: &S, buf: &mut [u8], offset: u64) -> Result<(), CheckError> {
    match read_zero_filled(src, buf, offset) {
        Ok(()) => Ok(()),
        // Callers check the range first; QEMU reported this at open.
        Err(ReadFailure::OutOfRange) => Err(CheckError::Aborted(
            "Could not read a refcount structure: Input/output error".into(),
        )),
        Err(ReadFailure::Io(e)) => Err(CheckError::Io(e)),
    }
}
