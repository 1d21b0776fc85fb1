//! Encoding dynamic VHDX images as QEMU's `vhdx_co_create()` (`block/vhdx.c`) lays them out
//! (VHDX Format Specification v1.00):
//!
//! - the header section (1 MiB): the file identifier, two headers (sequence numbers 0 and 1,
//!   no log GUID: the log is empty and nothing needs replaying), two copies of the region
//!   table (BAT and metadata, both required);
//! - the log: 1 MiB, all zeros (a hole);
//! - the BAT at 2 MiB, its length rounded up to a MiB;
//! - the metadata region (1 MiB): the table, then the file parameters, virtual disk size,
//!   page 83 data, logical (512) and physical (4096) sector sizes from 64 KiB on;
//! - the allocated payload blocks, in guest order, each at a whole MiB.
//!
//! The block size is QEMU's default for the disk's size: 8 MiB up to 1 GiB, 16 MiB up to
//! 100 GiB, 32 MiB up to 32 TiB, 64 MiB above. A payload block that holds data is "fully
//! present" (state 6); every other entry is 0 ("not present"), which reads as zeros in a disk
//! without a parent. The virtual size is the guest's, unrounded (a whole number of sectors).

use super::{
    BAT_GUID, FILE_PARAMETERS_GUID, Guid, HEADER_BLOCK, HEADER_LEN, HEADER_SIGNATURE,
    HEADER1_OFFSET, HEADER2_OFFSET, LOGICAL_SECTOR_SIZE_GUID, MAX_SECTORS_PER_BLOCK,
    MAX_VIRTUAL_SIZE, METADATA_GUID, METADATA_REQUIRED, METADATA_SIGNATURE, METADATA_VIRTUAL_DISK,
    PAGE83_GUID, PAYLOAD_BLOCK_FULLY_PRESENT, PHYSICAL_SECTOR_SIZE_GUID, REGION_REQUIRED,
    REGION_SIGNATURE, REGION_TABLE_LEN, REGION_TABLE_OFFSET, SIGNATURE, VIRTUAL_DISK_SIZE_GUID,
    crc32c, field,
};

const MIB: u64 = 1024 * 1024;
/// The header section and the log: 1 MiB each (QEMU's default log size).
pub const LOG_OFFSET: u64 = MIB;
/// See [`LOG_OFFSET`].
pub const LOG_LENGTH: u64 = MIB;
/// The BAT starts after the log.
pub const BAT_OFFSET: u64 = LOG_OFFSET + LOG_LENGTH;
/// The metadata region's length (QEMU: "min size, and more than enough").
pub const METADATA_LENGTH: u64 = MIB;
/// Where the metadata items start in their region, after the 64 KiB table.
pub const METADATA_ITEMS_OFFSET: u32 = 64 * 1024;
/// The logical sector size written.
pub const LOGICAL_SECTOR_SIZE: u32 = 512;
/// The physical sector size written (QEMU's default).
pub const PHYSICAL_SECTOR_SIZE: u32 = 4096;

/// The ids one image gets when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdxIds {
    /// The headers' `FileWriteGuid`.
    pub file_write: Guid,
    /// The headers' `DataWriteGuid`.
    pub data_write: Guid,
    /// The page 83 data (the disk's SCSI identity).
    pub page83: Guid,
}

/// QEMU's default block size for a disk of `size` bytes.
pub fn default_block_size(size: u64) -> u64 {
    if size > 32 << 40 {
        64 * MIB
    } else if size > 100 << 30 {
        32 * MIB
    } else if size > 1 << 30 {
        16 * MIB
    } else {
        8 * MIB
    }
}

/// Where a dynamic VHDX puts its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdxLayout {
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Payload block size.
    pub block_size: u64,
    /// Payload blocks per sector bitmap block (spec 2.4: the chunk ratio).
    pub chunk_ratio: u64,
    /// BAT entries (payload blocks, with a sector bitmap entry after every chunk).
    pub bat_entries: u64,
    /// The BAT region's length.
    pub bat_length: u64,
    /// The metadata region's offset.
    pub metadata_offset: u64,
    /// The first payload block.
    pub data_offset: u64,
}

impl VhdxLayout {
    /// The layout for `virtual_size` bytes, or why VHDX cannot hold it.
    pub fn new(virtual_size: u64) -> Result<Self, String> {
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(format!(
                "a {virtual_size}-byte disk is larger than VHDX's 64 TiB limit"
            ));
        }
        let block_size = default_block_size(virtual_size);
        let chunk_ratio = MAX_SECTORS_PER_BLOCK * u64::from(LOGICAL_SECTOR_SIZE) / block_size;
        let data_blocks = virtual_size.div_ceil(block_size);
        let bat_entries = data_blocks + data_blocks.saturating_sub(1) / chunk_ratio;
        let bat_length = (bat_entries * 8).next_multiple_of(MIB).max(MIB);
        let metadata_offset = BAT_OFFSET + bat_length;
        Ok(Self {
            virtual_size,
            block_size,
            chunk_ratio,
            bat_entries,
            bat_length,
            metadata_offset,
            data_offset: metadata_offset + METADATA_LENGTH,
        })
    }

    /// The file's length with `allocated` payload blocks.
    pub fn file_len(&self, allocated: u64) -> u64 {
        self.data_offset + allocated * self.block_size
    }

    /// The header section, the whole first MiB: file identifier, both headers, both region
    /// tables.
    pub fn header_section(&self, ids: &VhdxIds, creator: &str) -> Vec<u8> {
        let mut s = vec![0u8; MIB as usize];
        s[..SIGNATURE.len()].copy_from_slice(SIGNATURE);
        for (i, unit) in creator.encode_utf16().take(255).enumerate() {
            s[8 + 2 * i..10 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        for (sequence, at) in [(0u64, HEADER1_OFFSET), (1, HEADER2_OFFSET)] {
            let at = at as usize;
            self.header(&mut s[at..at + HEADER_LEN], sequence, ids);
        }
        for at in [REGION_TABLE_OFFSET, REGION_TABLE_OFFSET + HEADER_BLOCK] {
            let at = at as usize;
            self.region_table(&mut s[at..at + REGION_TABLE_LEN]);
        }
        s
    }

    fn header(&self, h: &mut [u8], sequence: u64, ids: &VhdxIds) {
        put(h, 0, HEADER_SIGNATURE);
        put(h, field::HEADER_SEQUENCE_NUMBER, &sequence.to_le_bytes());
        put(h, field::HEADER_FILE_WRITE_GUID, &ids.file_write);
        put(h, field::HEADER_DATA_WRITE_GUID, &ids.data_write);
        // The log GUID stays zero: there is no log to replay.
        put(h, field::HEADER_LOG_GUID, &[0; 16]);
        put(h, field::HEADER_LOG_VERSION, &0u16.to_le_bytes());
        put(h, field::HEADER_VERSION, &1u16.to_le_bytes());
        put(
            h,
            field::HEADER_LOG_LENGTH,
            &(LOG_LENGTH as u32).to_le_bytes(),
        );
        put(h, field::HEADER_LOG_OFFSET, &LOG_OFFSET.to_le_bytes());
        seal(h);
    }

    fn region_table(&self, t: &mut [u8]) {
        put(t, 0, REGION_SIGNATURE);
        put(t, field::REGION_ENTRY_COUNT, &2u32.to_le_bytes());
        let regions = [
            (BAT_GUID, BAT_OFFSET, self.bat_length),
            (METADATA_GUID, self.metadata_offset, METADATA_LENGTH),
        ];
        for (i, (guid, offset, length)) in regions.into_iter().enumerate() {
            let e = field::REGION_ENTRIES + i * field::REGION_ENTRY_LEN;
            put(t, e, &guid);
            put(
                t,
                e + field::REGION_ENTRY_FILE_OFFSET,
                &offset.to_le_bytes(),
            );
            put(
                t,
                e + field::REGION_ENTRY_LENGTH,
                &(length as u32).to_le_bytes(),
            );
            put(
                t,
                e + field::REGION_ENTRY_REQUIRED,
                &REGION_REQUIRED.to_le_bytes(),
            );
        }
        seal(t);
    }

    /// The metadata region (1 MiB).
    pub fn metadata_region(&self, ids: &VhdxIds) -> Vec<u8> {
        let mut m = vec![0u8; METADATA_LENGTH as usize];
        put(&mut m, 0, METADATA_SIGNATURE);
        let items: [(Guid, Vec<u8>, u32); 5] = [
            // File parameters: block size, and flags 0 (dynamic, no parent).
            (
                FILE_PARAMETERS_GUID,
                [(self.block_size as u32).to_le_bytes(), [0; 4]].concat(),
                METADATA_REQUIRED,
            ),
            (
                VIRTUAL_DISK_SIZE_GUID,
                self.virtual_size.to_le_bytes().to_vec(),
                METADATA_REQUIRED | METADATA_VIRTUAL_DISK,
            ),
            (
                PAGE83_GUID,
                ids.page83.to_vec(),
                METADATA_REQUIRED | METADATA_VIRTUAL_DISK,
            ),
            (
                LOGICAL_SECTOR_SIZE_GUID,
                LOGICAL_SECTOR_SIZE.to_le_bytes().to_vec(),
                METADATA_REQUIRED | METADATA_VIRTUAL_DISK,
            ),
            (
                PHYSICAL_SECTOR_SIZE_GUID,
                PHYSICAL_SECTOR_SIZE.to_le_bytes().to_vec(),
                METADATA_REQUIRED | METADATA_VIRTUAL_DISK,
            ),
        ];
        put(
            &mut m,
            field::METADATA_ENTRY_COUNT,
            &(items.len() as u16).to_le_bytes(),
        );
        let mut offset = METADATA_ITEMS_OFFSET;
        for (i, (guid, data, flags)) in items.iter().enumerate() {
            let e = field::METADATA_ENTRIES + i * field::METADATA_ENTRY_LEN;
            put(&mut m, e, guid);
            put(
                &mut m,
                e + field::METADATA_ENTRY_OFFSET,
                &offset.to_le_bytes(),
            );
            put(
                &mut m,
                e + field::METADATA_ENTRY_LENGTH,
                &(data.len() as u32).to_le_bytes(),
            );
            put(
                &mut m,
                e + field::METADATA_ENTRY_FLAGS,
                &flags.to_le_bytes(),
            );
            put(&mut m, offset as usize, data);
            offset += data.len() as u32;
        }
        m
    }

    /// Streams the BAT region: `allocated` yields the allocated payload blocks in increasing
    /// order, the k-th of them stored at block k of the data area. Sector bitmap entries stay
    /// 0. Pieces of at most 64 KiB go to `emit`.
    pub fn write_bat<E>(
        &self,
        allocated: impl Iterator<Item = u64>,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        const PIECE_ENTRIES: u64 = 8 * 1024;
        let mut allocated = allocated.peekable();
        let mut stored = 0u64;
        let total = self.bat_length / 8;
        let mut piece = Vec::with_capacity((PIECE_ENTRIES * 8) as usize);
        let mut index = 0u64;
        while index < total {
            piece.clear();
            let end = (index + PIECE_ENTRIES).min(total);
            for i in index..end {
                // Entry i is a sector bitmap entry when it follows a whole chunk of payload
                // entries; otherwise payload block i - i / (chunk_ratio + 1).
                let bitmap = (i + 1) % (self.chunk_ratio + 1) == 0;
                let block = i - i / (self.chunk_ratio + 1);
                let value = if !bitmap && i < self.bat_entries && allocated.peek() == Some(&block) {
                    allocated.next();
                    let offset = self.data_offset + stored * self.block_size;
                    stored += 1;
                    offset | PAYLOAD_BLOCK_FULLY_PRESENT
                } else {
                    0
                };
                piece.extend_from_slice(&value.to_le_bytes());
            }
            emit(&piece)?;
            index = end;
        }
        Ok(())
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Stores the CRC-32C of `block` (checksum field taken as zero) in its checksum field.
fn seal(block: &mut [u8]) {
    block[field::CHECKSUM..field::CHECKSUM + 4].fill(0);
    let crc = crc32c(block);
    put(block, field::CHECKSUM, &crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Probe;

    fn ids() -> VhdxIds {
        VhdxIds {
            file_write: [1; 16],
            data_write: [2; 16],
            page83: [3; 16],
        }
    }

    #[test]
    fn block_sizes_follow_qemus_defaults() {
        assert_eq!(default_block_size(3_000_000), 8 * MIB);
        assert_eq!(default_block_size(2 << 30), 16 * MIB);
        assert_eq!(default_block_size(200 << 30), 32 * MIB);
    }

    #[test]
    fn the_bat_skips_the_sector_bitmap_entries() {
        // 16 MiB blocks: a chunk is 256 payload blocks, then one bitmap entry.
        let l = VhdxLayout::new(300 * 16 * MIB).unwrap();
        assert_eq!((l.block_size, l.chunk_ratio), (16 * MIB, 256));
        assert_eq!(l.bat_entries, 301);
        let mut bat = Vec::new();
        l.write_bat([0u64, 256].into_iter(), |p| {
            bat.extend_from_slice(p);
            Ok::<(), ()>(())
        })
        .unwrap();
        let entry = |i: usize| u64::from_le_bytes(bat[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(entry(0), l.data_offset | 6);
        assert_eq!(entry(256), 0, "the sector bitmap entry");
        assert_eq!(entry(257), (l.data_offset + l.block_size) | 6);
    }

    #[test]
    fn the_decoder_reads_back_what_is_written() {
        let l = VhdxLayout::new(3_000_320).unwrap();
        let mut file = l.header_section(&ids(), "vmimage");
        file.resize(BAT_OFFSET as usize, 0);
        l.write_bat(std::iter::empty(), |p| {
            file.extend_from_slice(p);
            Ok::<(), ()>(())
        })
        .unwrap();
        file.extend_from_slice(&l.metadata_region(&ids()));
        assert_eq!(file.len() as u64, l.file_len(0));
        let report = super::super::describe(&file[..], &Probe::from_bytes(&file)).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.virtual_size, Some(3_000_320));
        assert_eq!(report.cluster_size, Some(8 * MIB));
    }
}
