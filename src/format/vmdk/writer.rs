//! Encoding VMDK images: one hosted sparse extent with its descriptor embedded (VMware
//! "Virtual Disk Format 5.0"; QEMU's `vmdk_init_extent()` and `vmdk_co_do_create()`).
//!
//! - **monolithicSparse**, as QEMU lays it out: header, descriptor (sectors 1..21), the
//!   redundant grain directory and its grain tables, the grain directory and its grain tables
//!   (every table present, both copies equal), padding to a whole grain, then the allocated
//!   64 KiB grains in guest order.
//! - **streamOptimized**, as VMware streams it (and as a file written front to back must be):
//!   header with the grain directory "at end" (`gdOffset` = -1), descriptor, then for each
//!   grain table that maps data: its grains, each a grain marker (guest sector, compressed
//!   length) and the zlib-compressed grain padded to a sector, then a grain table marker and
//!   the table; after the last, a grain directory marker and the directory, a footer marker and
//!   the footer (the header with the real `gdOffset`), and the end-of-stream marker. Grain
//!   tables with no data are not written (their directory entry is 0).
//!
//! The capacity is the guest size in whole sectors; the last grain is padded with zeros.

use super::sparse::{
    COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_REDUNDANT_GRAIN_TABLE,
    FLAG_VALID_NEWLINE_DETECTION, GD_AT_END, MARKER_END_OF_STREAM, MARKER_FOOTER,
    MARKER_GRAIN_DIRECTORY, MARKER_GRAIN_TABLE, SparseHeader,
};

/// VMDK sector size.
pub const SECTOR: u64 = 512;
/// Grain size QEMU and VMware use: 128 sectors (64 KiB).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain size in bytes.
pub const GRAIN_SIZE: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per table (512: a 2 KiB table maps 32 MiB).
pub const GTES_PER_GT: u64 = 512;
/// Sectors of one grain table.
pub const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
/// Where the embedded descriptor starts, and its room in sectors (QEMU: 1 and 20).
pub const DESCRIPTOR_OFFSET: u64 = 1;
/// See [`DESCRIPTOR_OFFSET`].
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Bytes of a grain marker before the compressed data: the guest sector (u64) and the
/// compressed length (u32).
pub const GRAIN_MARKER_LEN: usize = 12;
/// A grain table offset is a 32-bit sector number: the file cannot grow past 2 TiB.
pub const MAX_FILE_SECTORS: u64 = u32::MAX as u64;

/// The subformats this writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmdkKind {
    /// Tables at the front, grains uncompressed.
    MonolithicSparse,
    /// Compressed grains with markers, tables after the grains, a footer.
    StreamOptimized,
}

impl VmdkKind {
    /// The descriptor's `createType`.
    pub fn create_type(self) -> &'static str {
        match self {
            VmdkKind::MonolithicSparse => "monolithicSparse",
            VmdkKind::StreamOptimized => "streamOptimized",
        }
    }
}

/// The embedded descriptor QEMU writes (`vmdk_co_do_create()`'s template with an IDE adapter,
/// hardware version 4, no parent), zero-padded to [`DESCRIPTOR_SECTORS`].
pub fn descriptor(kind: VmdkKind, capacity: u64, extent_file: &str, cid: u32) -> Vec<u8> {
    // An IDE disk's geometry: 16 heads, 63 sectors; the cylinders cover the size, rounded down.
    let cylinders = capacity * SECTOR / (63 * 16 * SECTOR);
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"{}\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{extent_file}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n\
         ddb.toolsVersion = \"2147483647\"\n",
        kind.create_type()
    );
    let mut bytes = text.into_bytes();
    bytes.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    bytes
}

/// Whether an extent file name fits the descriptor's quoted field (QEMU reads at most 511
/// bytes, up to the closing quote, and a newline would end the line).
pub fn extent_name_ok(name: &str) -> bool {
    name.len() <= 511 && !name.contains(['"', '\n', '\r', '\0'])
}

/// Where a monolithicSparse extent puts its parts (offsets in sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseLayout {
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain tables (each maps 512 grains).
    pub gt_count: u64,
    /// Sectors of one grain directory.
    pub gd_sectors: u64,
    /// The redundant grain directory.
    pub rgd_offset: u64,
    /// The grain directory.
    pub gd_offset: u64,
    /// The first grain.
    pub grain_offset: u64,
}

impl SparseLayout {
    /// `vmdk_init_extent()`'s layout for `capacity` sectors.
    pub fn new(capacity: u64) -> Self {
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        let rgd_offset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
        let gd_offset = rgd_offset + gd_sectors + GT_SECTORS * gt_count;
        let grain_offset =
            (gd_offset + gd_sectors + GT_SECTORS * gt_count).next_multiple_of(GRAIN_SECTORS);
        Self {
            capacity,
            gt_count,
            gd_sectors,
            rgd_offset,
            gd_offset,
            grain_offset,
        }
    }

    /// The header.
    pub fn header(&self) -> SparseHeader {
        SparseHeader {
            version: 1,
            flags: FLAG_VALID_NEWLINE_DETECTION | FLAG_REDUNDANT_GRAIN_TABLE,
            capacity: self.capacity,
            granularity: GRAIN_SECTORS,
            desc_offset: DESCRIPTOR_OFFSET,
            desc_size: DESCRIPTOR_SECTORS,
            num_gtes_per_gt: GTES_PER_GT as u32,
            rgd_offset: self.rgd_offset,
            gd_offset: self.gd_offset,
            grain_offset: self.grain_offset,
            compress_algorithm: 0,
        }
    }

    /// The file's length in bytes with `allocated` grains.
    pub fn file_len(&self, allocated: u64) -> u64 {
        (self.grain_offset + allocated * GRAIN_SECTORS) * SECTOR
    }

    /// Streams one copy of the grain directory and its tables, starting at sector `gd_at`
    /// (the tables follow the directory): `allocated` yields the allocated grain numbers in
    /// increasing order, the k-th of them stored at grain k of the data area. Memory: one
    /// table at a time.
    pub fn write_directory<E>(
        &self,
        gd_at: u64,
        allocated: impl Iterator<Item = u64>,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut gd = Vec::with_capacity((self.gd_sectors * SECTOR) as usize);
        for i in 0..self.gt_count {
            let sector = gd_at + self.gd_sectors + i * GT_SECTORS;
            gd.extend_from_slice(&(sector as u32).to_le_bytes());
        }
        gd.resize((self.gd_sectors * SECTOR) as usize, 0);
        emit(&gd)?;
        let mut allocated = allocated.peekable();
        let mut stored = 0u64;
        let mut table = vec![0u8; (GT_SECTORS * SECTOR) as usize];
        for t in 0..self.gt_count {
            table.fill(0);
            let first = t * GTES_PER_GT;
            while let Some(&g) = allocated.peek() {
                if g >= first + GTES_PER_GT {
                    break;
                }
                allocated.next();
                let sector = self.grain_offset + stored * GRAIN_SECTORS;
                stored += 1;
                let at = ((g - first) * 4) as usize;
                table[at..at + 4].copy_from_slice(&(sector as u32).to_le_bytes());
            }
            emit(&table)?;
        }
        Ok(())
    }
}

/// The streamOptimized header (or, with `gd_offset`, its footer copy).
pub fn stream_header(capacity: u64, gd_offset: u64) -> SparseHeader {
    SparseHeader {
        version: 3,
        flags: FLAG_VALID_NEWLINE_DETECTION | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity,
        granularity: GRAIN_SECTORS,
        desc_offset: DESCRIPTOR_OFFSET,
        desc_size: DESCRIPTOR_SECTORS,
        num_gtes_per_gt: GTES_PER_GT as u32,
        rgd_offset: 0,
        gd_offset,
        grain_offset: STREAM_GRAIN_OFFSET,
        compress_algorithm: COMPRESSION_DEFLATE,
    }
}

/// Where a stream's first grain goes: after the header and descriptor, at a whole grain (as
/// VMware's exports have it).
pub const STREAM_GRAIN_OFFSET: u64 = GRAIN_SECTORS;

/// The header sector of a stream (`gdOffset` = -1: the footer locates the directory).
pub fn stream_start(capacity: u64) -> [u8; 512] {
    stream_header(capacity, GD_AT_END).encode()
}

/// A metadata marker sector: `sectors` of metadata of `kind` follow.
pub fn marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    // Bytes 8..12 (size) stay 0: a metadata marker, not a grain.
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// A grain table marker.
pub fn grain_table_marker() -> [u8; 512] {
    marker(GT_SECTORS, MARKER_GRAIN_TABLE)
}

/// The tail of a stream: the grain directory marker and the directory (`gd`, one u32 sector
/// per grain table, 0 where none was written), the footer marker and footer, and the
/// end-of-stream marker. `gd_at` is the sector where the directory itself goes.
pub fn stream_tail(capacity: u64, gd: &[u32], gd_at: u64) -> Vec<u8> {
    let gd_sectors = (gd.len() as u64 * 4).div_ceil(SECTOR).max(1);
    let mut tail = Vec::with_capacity(((gd_sectors + 4) * SECTOR) as usize);
    tail.extend_from_slice(&marker(gd_sectors, MARKER_GRAIN_DIRECTORY));
    for e in gd {
        tail.extend_from_slice(&e.to_le_bytes());
    }
    tail.resize(((1 + gd_sectors) * SECTOR) as usize, 0);
    tail.extend_from_slice(&marker(1, MARKER_FOOTER));
    tail.extend_from_slice(&stream_header(capacity, gd_at).encode());
    tail.extend_from_slice(&marker(0, MARKER_END_OF_STREAM));
    tail
}

/// Frames one compressed grain: its marker (guest sector `lba`, `data.len()`), the data, and
/// zeros to a whole sector, appended to `out`.
pub fn frame_grain(lba: u64, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&lba.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    let len = out.len().next_multiple_of(SECTOR as usize);
    out.resize(len, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vmdk::sparse::check_footer;

    #[test]
    fn the_sparse_layout_is_qemus() {
        // qemu-img create -f vmdk x 3000320: rgd 21, gd 26, grains from 128.
        let l = SparseLayout::new(5860);
        assert_eq!((l.gt_count, l.gd_sectors), (1, 1));
        assert_eq!((l.rgd_offset, l.gd_offset, l.grain_offset), (21, 26, 128));
        let h = SparseHeader::parse(&l.header().encode());
        assert_eq!(h, l.header());
    }

    #[test]
    fn the_stream_tail_passes_the_footer_checks() {
        let tail = stream_tail(5860, &[200], 300);
        let header = SparseHeader::parse(&stream_start(5860));
        let f = check_footer(&header, &tail[tail.len() - 1536..]).unwrap();
        assert_eq!(f.gd_offset, 300);
    }

    #[test]
    fn a_directory_maps_each_stored_grain_in_turn() {
        let l = SparseLayout::new(2000 * GRAIN_SECTORS);
        assert_eq!(l.gt_count, 4);
        let mut bytes = Vec::new();
        l.write_directory(l.gd_offset, [3u64, 600].into_iter(), |p| {
            bytes.extend_from_slice(p);
            Ok::<(), ()>(())
        })
        .unwrap();
        let le = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let gt0 = (l.gd_sectors * SECTOR) as usize;
        let gt1 = gt0 + (GT_SECTORS * SECTOR) as usize;
        assert_eq!(u64::from(le(0)), l.gd_offset + l.gd_sectors);
        assert_eq!(u64::from(le(gt0 + 12)), l.grain_offset);
        assert_eq!(u64::from(le(gt1 + 88 * 4)), l.grain_offset + GRAIN_SECTORS);
    }
}
