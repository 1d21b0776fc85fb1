//! VDI input, static and dynamic: the guest content as QEMU's `block/vdi.c` reads it.
//!
//! The header is [`crate::format::vdi`]'s: [`describe`](super::describe) applies
//! `vdi_open()`'s checks (version 1.1, 512-byte sectors, 1 MiB blocks, no parent or link UUID,
//! block map and allocated blocks inside the file) and this reader refuses whatever it finds.
//! Then the block map (one little-endian `u32` per 1 MiB block) decides every read
//! (`vdi_co_preadv`): an entry at or above `VDI_DISCARDED` (`0xfffffffe`, or `0xffffffff`
//! unallocated) reads as zeros, any other entry `n` is read from
//! `offset_data + n * block_size`. Static and dynamic images read the same way; a static one
//! simply has every block allocated.
//!
//! Hostile maps: an entry at or above `blocks_allocated` points past the blocks the header
//! counts, and two entries naming the same block make a small file describe more guest data
//! than it holds. `qemu-img check` calls both errors ("block index too large", "also used
//! by"), and this reader refuses both when it opens the image. Only the entries that map the
//! virtual size are read, at most [`MAX_BLOCK_MAP_BYTES`].

use std::sync::Mutex;

use super::{HEADER_LEN, VdiHeader};
use crate::format::Probe;
use crate::format::bytes::le32;
use crate::format::guest::{
    Extent, GuestReader, ReadFailure, check_extent_offset, for_each_block_piece, read_stored,
};
use crate::safety::Severity;
use crate::source::{ImageFile, ReadAt, read_vec_at};

/// Largest block map read into memory: 64 MiB, 16 Mi blocks of 1 MiB, a 16 TiB disk.
pub const MAX_BLOCK_MAP_BYTES: u64 = 64 << 20;
/// Entries at or above this read as zeros (`VDI_IS_ALLOCATED`: below `VDI_DISCARDED`).
const FIRST_UNALLOCATED: u32 = 0xffff_fffe;

/// A VDI image opened for reading its guest content, from a file or (in the fuzz targets) any
/// other [`ReadAt`] source.
#[derive(Debug)]
pub struct VdiReader<S = ImageFile> {
    file: S,
    size: u64,
    block_size: u64,
    offset_data: u64,
    /// One entry per block of the virtual size.
    map: Vec<u32>,
    /// The last host run the file system described: (start, end, holds data).
    host_run: Mutex<Option<(u64, u64, bool)>>,
}

impl<S: ReadAt> VdiReader<S> {
    /// Opens the VDI image in `file`, refusing it with the inspector's sentence when
    /// [`describe`](super::describe) finds it invalid or differencing.
    pub fn open(file: S) -> Result<Self, ReadFailure> {
        let probe = Probe::read(&file)?;
        let report = super::describe(&file, &probe)?;
        if let Some(f) = report
            .findings
            .iter()
            .find(|f| f.severity == Severity::Error)
        {
            return Err(ReadFailure::Invalid(f.detail.clone()));
        }
        let bytes = probe
            .head_bytes(0, HEADER_LEN)
            .and_then(|b| <&[u8; HEADER_LEN]>::try_from(b).ok())
            .ok_or_else(|| ReadFailure::Invalid("the VDI header is truncated".into()))?;
        let header = VdiHeader::parse(bytes);
        let size = report
            .virtual_size
            .ok_or_else(|| ReadFailure::Invalid("the VDI header gives no disk size".into()))?;
        let block_size = u64::from(header.block_size);
        if block_size == 0 {
            return Err(ReadFailure::Invalid("the VDI block size is 0".into()));
        }
        let blocks = size.div_ceil(block_size);
        let map_bytes = blocks.saturating_mul(4);
        if map_bytes > MAX_BLOCK_MAP_BYTES {
            return Err(ReadFailure::Invalid(format!(
                "the VDI block map needs {map_bytes} bytes, above the {MAX_BLOCK_MAP_BYTES}-byte limit"
            )));
        }
        let raw = read_vec_at(&file, u64::from(header.offset_bmap), map_bytes as usize)?;
        let map: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        drop(raw);
        refuse_bad_entries(&map, header.blocks_allocated)?;
        Ok(Self {
            file,
            size,
            block_size,
            offset_data: u64::from(header.offset_data),
            map,
            host_run: Mutex::new(None),
        })
    }

    /// The host offset of block `block`, or `None` when it reads as zeros.
    fn block_host(&self, block: u64) -> Option<u64> {
        let e = *self.map.get(usize::try_from(block).ok()?)?;
        // Entries were checked against `blocks_allocated` at open, and `describe` checked
        // that those blocks lie inside the file, so this cannot overflow.
        (e < FIRST_UNALLOCATED).then(|| self.offset_data + u64::from(e) * self.block_size)
    }

    /// Whether block `block` may hold data: allocated, and not a hole of the image file (a
    /// static VDI is created with its blocks unwritten).
    fn block_has_data(&self, block: u64) -> bool {
        let Some(host) = self.block_host(block) else {
            return false;
        };
        let mut run = self.host_run.lock().unwrap_or_else(|p| p.into_inner());
        let known = run.filter(|&(start, end, _)| start <= host && host < end);
        let (end, data) = match known {
            Some((_, end, data)) => (end, data),
            None => match self.file.allocation_at(host) {
                Some((data, end)) => {
                    *run = Some((host, end, data));
                    (end, data)
                }
                None => return true,
            },
        };
        data || host.saturating_add(self.block_size) > end
    }
}

/// Refuses entries past the allocated blocks and blocks named twice (`vdi_check`'s errors).
fn refuse_bad_entries(map: &[u32], blocks_allocated: u32) -> Result<(), ReadFailure> {
    // `describe` checked `offset_data + blocks_allocated * 1 MiB <= file length`, so this
    // bitmap is at most one bit per MiB of the file.
    let mut seen = vec![0u64; (blocks_allocated as usize).div_ceil(64)];
    for (i, &e) in map.iter().enumerate() {
        if e >= FIRST_UNALLOCATED {
            continue;
        }
        if e >= blocks_allocated {
            return Err(ReadFailure::Invalid(format!(
                "VDI block map entry {i} names block {e}, but the header counts only {blocks_allocated} allocated blocks"
            )));
        }
        let (word, bit) = ((e / 64) as usize, e % 64);
        let Some(w) = seen.get_mut(word) else {
            continue;
        };
        if *w & (1 << bit) != 0 {
            let first = map.iter().position(|&x| x == e).unwrap_or(0);
            return Err(ReadFailure::Invalid(format!(
                "VDI block map entries {first} and {i} both name block {e} (a block is never shared)"
            )));
        }
        *w |= 1 << bit;
    }
    Ok(())
}

impl<S: ReadAt + Send + Sync> GuestReader for VdiReader<S> {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn granularity(&self) -> u64 {
        512
    }

    fn small_reads_are_cheap(&self) -> bool {
        // Blocks are stored uncompressed, found through the block map in memory.
        self.file.small_reads_are_cheap()
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        check_extent_offset(offset, self.size)?;
        let first = offset / self.block_size;
        let data = self.block_has_data(first);
        let blocks = self.size.div_ceil(self.block_size);
        let mut b = first + 1;
        while b < blocks && self.block_has_data(b) == data {
            b += 1;
        }
        let end = b.saturating_mul(self.block_size).min(self.size);
        Ok(Extent {
            start: offset,
            len: end - offset,
            data,
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        for_each_block_piece(
            offset,
            buf,
            self.size,
            self.block_size,
            |block, within, dst| {
                match self.block_host(block) {
                    None => dst.fill(0),
                    Some(host) => read_stored(&self.file, dst, host + within)?,
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_past_the_allocated_blocks_or_shared_are_refused() {
        assert!(refuse_bad_entries(&[0, 1, u32::MAX, 0xffff_fffe], 2).is_ok());
        let e = refuse_bad_entries(&[0, 2], 2).unwrap_err().to_string();
        assert!(e.contains("entry 1 names block 2"), "{e}");
        let e = refuse_bad_entries(&[1, 0, 1], 2).unwrap_err().to_string();
        assert!(e.contains("entries 0 and 2 both name block 1"), "{e}");
    }
}
