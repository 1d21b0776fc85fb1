//! VHD (`vpc`) input, fixed and dynamic, read the way QEMU's `block/vpc.c` reads it.
//!
//! Layout (Microsoft "Virtual Hard Disk Image Format Specification"): every VHD ends with a
//! 512-byte footer (`conectix`, big-endian fields, one's-complement byte-sum checksum). A
//! *fixed* VHD is the raw guest disk followed by the footer. A *dynamic* VHD starts with a copy
//! of the footer, whose `data_offset` points at the 1024-byte dynamic header (`cxsparse`),
//! which points at the block allocation table (BAT): one big-endian u32 per block, the sector
//! of the block's bitmap or `0xFFFFFFFF` when unallocated. An allocated block is a sector
//! bitmap (`block_size / 4096` bytes rounded up to a sector) followed by `block_size` bytes of
//! data (2 MiB by default).
//!
//! Rules taken from QEMU (`vpc_open`, `vpc_co_preadv`), so that `qemu-img compare` agrees:
//! - a bad footer checksum is refused ("Incorrect header checksum");
//! - the virtual size is CHS geometry (`cyls * heads * secs_per_cyl` sectors) for the creator
//!   applications `vpc ` and `qemu`, else `current_size`; and `current_size` also when the
//!   geometry is the maximum 65535/16/255 (`vpc_ignore_current_size`);
//! - unallocated blocks read as zeros; allocated blocks are read as stored. QEMU does not
//!   consult the sector bitmaps on reads (it only sets them on writes), so neither does this
//!   reader: a sector whose bit is clear in a block QEMU would read is read the same way here.
//! - differencing VHDs (type 4) have a parent image and are refused like backing files.
//!
//! The footer, the dynamic header and the BAT are decoded by [`crate::format::vpc`] (the one
//! decoder of each, shared with `info`); this module adds the guest reads. Every field is
//! validated here before use: block size a power of two between 512 B and
//! [`MAX_BLOCK_SIZE`], the BAT inside the file and at most [`MAX_BAT_BYTES`], every allocated
//! block inside the file.

use crate::format::guest::{Extent, GuestReader, ReadFailure, for_each_block_piece, read_stored};
use crate::format::raw::RawReader;
use crate::format::vpc::{
    DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, DYNAMIC_HEADER_LEN, DynamicHeader,
    FOOTER_LEN, SECTOR, VHD_MAX_SECTORS, VhdFooter, VhdLayout, VpcDetection, bat,
};
use crate::source::{ImageFile, ReadAt, read_exact_at, read_vec_at};

/// Size of the footer and of its copy at offset 0.
const FOOTER_SIZE: u64 = FOOTER_LEN as u64;
/// Largest block size accepted: 256 MiB. The spec's default is 2 MiB; QEMU only asks for a
/// power of two, but a bitmap or a block beyond this size is not something any tool writes.
pub const MAX_BLOCK_SIZE: u64 = 256 * 1024 * 1024;
/// Largest BAT read into memory: 64 MiB, 16 Mi entries, which at 2 MiB blocks covers 32 TiB,
/// well above QEMU's 2040 GiB limit.
pub const MAX_BAT_BYTES: u64 = 64 * 1024 * 1024;

/// The footer in `bytes`, checked: `None` without the cookie, an error with a bad checksum.
/// Footer parsing and the size rule are `crate::format::vpc`'s, shared with `info`.
fn checked_footer(bytes: &[u8]) -> Option<Result<VhdFooter, ReadFailure>> {
    let footer = VhdFooter::from_slice(bytes)?;
    if !footer.checksum_ok() {
        return Some(Err(ReadFailure::Invalid(format!(
            "the VHD footer checksum is {:#010x}, but its bytes sum to {:#010x}",
            footer.checksum, footer.computed_checksum
        ))));
    }
    Some(Ok(footer))
}

/// The guest size QEMU uses (`vpc_open`), or an error above QEMU's limit.
pub fn virtual_size(footer: &VhdFooter) -> Result<u64, ReadFailure> {
    footer.virtual_size().ok_or_else(|| {
        ReadFailure::Invalid(format!(
            "the VHD declares {} sectors, above QEMU's limit of {VHD_MAX_SECTORS}",
            footer.virtual_sectors()
        ))
    })
}

/// Looks for a VHD: a footer copy at offset 0 (dynamic) or a footer in the last 512 bytes
/// (fixed). `Ok(None)`: not a VHD (a fixed VHD's footer must have a valid checksum to count,
/// since a raw disk may end with anything).
pub fn probe<S: ReadAt + ?Sized>(file: &S) -> Result<Option<(VhdFooter, bool)>, ReadFailure> {
    let len = file.len();
    if len < FOOTER_SIZE {
        return Ok(None);
    }
    let mut head = [0u8; FOOTER_SIZE as usize];
    read_exact_at(file, &mut head, 0)?;
    if let Some(parsed) = checked_footer(&head) {
        return parsed.map(|f| Some((f, true)));
    }
    let mut tail = [0u8; FOOTER_SIZE as usize];
    read_exact_at(file, &mut tail, len - FOOTER_SIZE)?;
    match checked_footer(&tail) {
        Some(Ok(f)) => Ok(Some((f, false))),
        _ => Ok(None),
    }
}

/// Opens a VHD whose footer [`probe`] found (`at_start`: the copy at offset 0).
pub fn open(
    file: ImageFile,
    footer: VhdFooter,
    at_start: bool,
) -> Result<Box<dyn GuestReader>, ReadFailure> {
    let size = virtual_size(&footer)?;
    match footer.disk_type {
        DISK_TYPE_DIFFERENCING => Err(ReadFailure::Invalid(
            "a differencing VHD reads unallocated blocks from a parent image".into(),
        )),
        DISK_TYPE_FIXED if !at_start => {
            let data_len = file.len() - FOOTER_SIZE;
            if size > data_len {
                return Err(ReadFailure::Invalid(format!(
                    "the fixed VHD declares {size} bytes but holds only {data_len} before its footer"
                )));
            }
            Ok(Box::new(RawReader::new(file, size)))
        }
        DISK_TYPE_DYNAMIC if at_start => Ok(Box::new(DynamicVhd::open(file, &footer)?)),
        other => Err(ReadFailure::Invalid(format!(
            "the VHD disk type is {other}{}, which is not fixed (2) with a footer at the end nor dynamic (3) with a footer copy at the start",
            if at_start {
                " at the start"
            } else {
                " at the end"
            }
        ))),
    }
}

/// Opens the VHD whose headers [`crate::format::vpc::decode`] decoded (and found safe): the
/// footer and the dynamic header are not read again.
pub fn open_decoded(
    file: ImageFile,
    layout: &VhdLayout,
) -> Result<Box<dyn GuestReader>, ReadFailure> {
    let at_start = layout.detection == VpcDetection::HeaderCopy;
    match &layout.dynamic {
        Some(header) if at_start && layout.footer.disk_type == DISK_TYPE_DYNAMIC => Ok(Box::new(
            DynamicVhd::from_header(file, &layout.footer, header)?,
        )),
        _ => open(file, layout.footer.clone(), at_start),
    }
}

/// A dynamic VHD, read from a file or (in the fuzz targets) any other [`ReadAt`] source.
#[derive(Debug)]
pub struct DynamicVhd<S = ImageFile> {
    file: S,
    size: u64,
    block_size: u64,
    bitmap_size: u64,
    bat: Vec<u32>,
}

impl<S: ReadAt> DynamicVhd<S> {
    /// Opens the dynamic VHD in `file`, whose footer copy at offset 0 is `footer`.
    pub fn open(file: S, footer: &VhdFooter) -> Result<Self, ReadFailure> {
        let size = virtual_size(footer)?;
        let bytes = read_vec_at(&file, footer.data_offset, DYNAMIC_HEADER_LEN)?;
        let header = <&[u8; DYNAMIC_HEADER_LEN]>::try_from(bytes.as_slice())
            .ok()
            .and_then(DynamicHeader::parse);
        let Some(header) = header else {
            return Err(ReadFailure::Invalid(format!(
                "no dynamic disk header (cxsparse) at offset {:#x}",
                footer.data_offset
            )));
        };
        Self::with_header(file, size, &header)
    }

    /// Opens the dynamic VHD in `file` from its decoded footer and dynamic header (as
    /// [`crate::format::vpc::decode`] found them): only the BAT is read.
    pub fn from_header(
        file: S,
        footer: &VhdFooter,
        header: &DynamicHeader,
    ) -> Result<Self, ReadFailure> {
        Self::with_header(file, virtual_size(footer)?, header)
    }

    fn with_header(file: S, size: u64, header: &DynamicHeader) -> Result<Self, ReadFailure> {
        let bat_offset = header.table_offset;
        let entries = u64::from(header.max_table_entries);
        let block_size = u64::from(header.block_size);
        if !block_size.is_power_of_two() || !(SECTOR..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(ReadFailure::Invalid(format!(
                "the VHD block size is {block_size}, not a power of two from 512 to {MAX_BLOCK_SIZE}"
            )));
        }
        if entries.saturating_mul(block_size) < size {
            return Err(ReadFailure::Invalid(format!(
                "the BAT has {entries} entries of {block_size} bytes, too few for a {size}-byte disk"
            )));
        }
        // Only the entries that map the virtual size are read.
        let used = size.div_ceil(block_size);
        let bat_bytes = used * bat::ENTRY_LEN as u64;
        if bat_bytes > MAX_BAT_BYTES {
            return Err(ReadFailure::Invalid(format!(
                "the BAT needs {bat_bytes} bytes, above the {MAX_BAT_BYTES}-byte limit"
            )));
        }
        let raw = read_vec_at(&file, bat_offset, bat_bytes as usize)?;
        let bitmap_size = bat::bitmap_size(block_size);
        let bat: Vec<u32> = bat::entries(&raw).collect();
        for (i, &e) in bat.iter().enumerate() {
            let Some(start) = bat::block_start(e) else {
                continue;
            };
            let end = start + bitmap_size + block_size;
            if end > file.len() {
                return Err(ReadFailure::Invalid(format!(
                    "VHD block {i} (sector {e}) runs past the end of the file ({} bytes)",
                    file.len()
                )));
            }
        }
        Ok(Self {
            file,
            size,
            block_size,
            bitmap_size,
            bat,
        })
    }

    fn block_data(&self, block: u64) -> Option<u64> {
        let e = *self.bat.get(usize::try_from(block).ok()?)?;
        bat::block_start(e).map(|start| start + self.bitmap_size)
    }
}

impl<S: ReadAt + Send + Sync> GuestReader for DynamicVhd<S> {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn granularity(&self) -> u64 {
        512
    }

    fn small_reads_are_cheap(&self) -> bool {
        // Blocks are stored uncompressed, found through the BAT in memory.
        self.file.small_reads_are_cheap()
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        let first = offset / self.block_size;
        let data = self.block_data(first).is_some();
        let blocks = self.size.div_ceil(self.block_size);
        let mut b = first + 1;
        while b < blocks && self.block_data(b).is_some() == data {
            b += 1;
        }
        let end = (b * self.block_size).min(self.size);
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
                match self.block_data(block) {
                    None => dst.fill(0),
                    // Every allocated block was checked to lie inside the file at open.
                    Some(data) => read_stored(&self.file, dst, data + within)?,
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vpc::{checksum, footer};

    fn footer_bytes(app: &[u8; 4], size: u64, chs: (u16, u8, u8), disk_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; FOOTER_LEN];
        b[footer::COOKIE.range()].copy_from_slice(b"conectix");
        b[footer::CREATOR_APPLICATION.range()].copy_from_slice(app);
        b[footer::CURRENT_SIZE.range()].copy_from_slice(&size.to_be_bytes());
        b[footer::CYLINDERS.range()].copy_from_slice(&chs.0.to_be_bytes());
        b[footer::HEADS.offset] = chs.1;
        b[footer::SECTORS_PER_TRACK.offset] = chs.2;
        b[footer::DISK_TYPE.range()].copy_from_slice(&disk_type.to_be_bytes());
        let sum = checksum(&b, footer::CHECKSUM);
        b[footer::CHECKSUM.range()].copy_from_slice(&sum.to_be_bytes());
        b
    }

    #[test]
    fn qemu_created_vhds_are_sized_by_geometry_and_others_by_current_size() {
        let f = footer_bytes(b"qemu", 64 << 20, (1040, 8, 16), DISK_TYPE_FIXED);
        let f = checked_footer(&f).unwrap().unwrap();
        assert_eq!(virtual_size(&f).unwrap(), 1040 * 8 * 16 * 512);
        let f = footer_bytes(b"win ", 64 << 20, (1040, 8, 16), DISK_TYPE_FIXED);
        let f = checked_footer(&f).unwrap().unwrap();
        assert_eq!(virtual_size(&f).unwrap(), 64 << 20);
        let f = footer_bytes(b"qemu", 3 << 40, (65535, 16, 255), DISK_TYPE_FIXED);
        let f = checked_footer(&f).unwrap().unwrap();
        assert!(virtual_size(&f).is_err(), "above QEMU's 2040 GiB limit");
    }

    #[test]
    fn a_footer_with_a_bad_checksum_is_refused() {
        let mut f = footer_bytes(b"qem2", 1 << 20, (0, 0, 0), DISK_TYPE_FIXED);
        f[footer::CURRENT_SIZE.offset] ^= 1;
        assert!(matches!(checked_footer(&f), Some(Err(_))));
        assert!(checked_footer(&[0u8; 512]).is_none());
    }
}
