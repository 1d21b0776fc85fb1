//! Persistent bitmaps as `qemu-img check` sees them (`block/qcow2-bitmap.c`).
//!
//! QEMU loads the bitmaps when it opens the image, even in check mode: a directory that breaks
//! a constraint, a bitmap table with a bad entry, or a table of the wrong size makes the open
//! fail (exit 1). The check itself counts the directory, each bitmap table and each data
//! cluster as references. Bitmap data is never read.

use std::collections::HashSet;

use super::open::{BitmapsLocation, CheckLayout, c_string, qemu_can_read};
use super::read::{ReadFailure, read_zero_filled};
use crate::format::bytes::{be16, be32, be64};
use crate::source::ReadAt;

/// Bytes of a directory entry's fixed part (`Qcow2BitmapDirEntry`).
const DIR_ENTRY_LEN: u64 = 24;
/// QEMU's limit on bitmap table entries (`BME_MAX_TABLE_SIZE`).
const MAX_TABLE_SIZE: u64 = 0x800_0000;
/// QEMU's limit on a bitmap's table size in bytes of clusters (`BME_MAX_PHYS_SIZE`).
const MAX_PHYS_SIZE: u64 = 0x2000_0000;
/// Granularity limits (`BME_MIN_GRANULARITY_BITS`, `BME_MAX_GRANULARITY_BITS`).
const GRANULARITY_BITS: std::ops::RangeInclusive<u8> = 9..=31;
/// QEMU's limit on a bitmap name (`BME_MAX_NAME_SIZE`).
const MAX_NAME_SIZE: u16 = 1023;
/// Flags QEMU knows: bit 0 in use, bit 1 auto (`BME_RESERVED_FLAGS` is the rest).
const RESERVED_FLAGS: u32 = 0xffff_fffc;
/// Flag bit 0: the bitmap was not saved cleanly.
const FLAG_IN_USE: u32 = 1;
/// The only bitmap type (`BT_DIRTY_TRACKING_BITMAP`).
const TYPE_DIRTY_TRACKING: u8 = 1;
/// Bitmap table entry: reserved bits 1..=8 and 56..=63 (`BME_TABLE_ENTRY_RESERVED_MASK`).
const TABLE_ENTRY_RESERVED: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry: the data cluster offset (`BME_TABLE_ENTRY_OFFSET_MASK`).
pub(super) const TABLE_ENTRY_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
/// Bitmap table entry bit 0: the whole cluster's bits are ones (only without an offset).
const TABLE_ENTRY_ALL_ONES: u64 = 1;
/// Bitmap table entries read at a time.
const TABLE_CHUNK_ENTRIES: u64 = 8192;

/// One bitmap of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BitmapEntry {
    /// Bitmap table offset.
    pub table_offset: u64,
    /// Bitmap table entries.
    pub table_size: u32,
    /// Flags.
    pub flags: u32,
    /// log2 of the bytes of guest data per bit.
    pub granularity_bits: u8,
    /// Name.
    pub name: String,
}

/// Why loading the bitmaps failed: QEMU's message.
#[derive(Debug)]
pub(super) enum BitmapError {
    /// A constraint is broken; QEMU's words.
    Invalid(String),
    /// The operating system failed a read.
    Io(std::io::Error),
}

fn invalid(m: impl Into<String>) -> BitmapError {
    BitmapError::Invalid(m.into())
}

/// `bitmap_list_load`: reads and validates the directory.
pub(super) fn load_directory<S: ReadAt + ?Sized>(
    src: &S,
    layout: &CheckLayout,
    loc: &BitmapsLocation,
) -> Result<Vec<BitmapEntry>, BitmapError> {
    let size = loc.directory_size;
    if size == 0 {
        return Err(invalid("Requested bitmap directory size is zero"));
    }
    if !qemu_can_read(loc.directory_offset, size) {
        return Err(invalid(
            "Failed to read bitmap directory: Input/output error",
        ));
    }
    // Only the part inside the file is read; the rest reads as zeros.
    let in_file = layout
        .file_len
        .saturating_sub(loc.directory_offset)
        .min(size);
    let mut dir = vec![0u8; in_file as usize];
    read(src, &mut dir, loc.directory_offset)?;
    let at = |pos: u64, n: usize| -> Vec<u8> {
        let mut out = vec![0u8; n];
        for (i, b) in out.iter_mut().enumerate() {
            *b = dir.get(pos as usize + i).copied().unwrap_or(0);
        }
        out
    };
    let virtual_len = layout.virtual_size();
    let mut entries = Vec::new();
    let mut pos = 0u64;
    let broken = || invalid("Broken bitmap directory");
    while pos < size {
        if pos + DIR_ENTRY_LEN > size {
            return Err(broken());
        }
        if entries.len() as u64 + 1 > u64::from(loc.nb_bitmaps) {
            return Err(invalid(
                "More bitmaps found than specified in header extension",
            ));
        }
        let e = at(pos, DIR_ENTRY_LEN as usize);
        let table_offset = be64(&e, 0);
        let table_size = be32(&e, 8);
        let flags = be32(&e, 12);
        let kind = e[16];
        let granularity_bits = e[17];
        let name_size = be16(&e, 18);
        let extra = be32(&e, 20);
        let entry_len =
            (DIR_ENTRY_LEN + u64::from(name_size) + u64::from(extra)).next_multiple_of(8);
        if pos + entry_len > size {
            return Err(broken());
        }
        if extra != 0 {
            return Err(invalid("Bitmap extra data is not supported"));
        }
        let name = c_string(&at(pos + DIR_ENTRY_LEN, usize::from(name_size)));
        let phys = u64::from(table_size) * layout.cluster_size();
        let fails = table_size == 0
            || table_offset == 0
            || !table_offset.is_multiple_of(layout.cluster_size())
            || u64::from(table_size) > MAX_TABLE_SIZE
            || !GRANULARITY_BITS.contains(&granularity_bits)
            || flags & RESERVED_FLAGS != 0
            || name_size > MAX_NAME_SIZE
            || kind != TYPE_DIRTY_TRACKING
            || phys > MAX_PHYS_SIZE
            || (flags & FLAG_IN_USE == 0 && virtual_len > (phys * 8) << granularity_bits);
        if fails {
            return Err(invalid(format!(
                "Bitmap '{name}' doesn't satisfy the constraints"
            )));
        }
        entries.push(BitmapEntry {
            table_offset,
            table_size,
            flags,
            granularity_bits,
            name,
        });
        pos += entry_len;
    }
    if entries.len() as u64 != u64::from(loc.nb_bitmaps) {
        return Err(invalid(
            "Less bitmaps found than specified in header extension",
        ));
    }
    if pos != size {
        return Err(broken());
    }
    Ok(entries)
}

/// What `qcow2_load_dirty_bitmaps` checks at open beyond the directory: unique names, and for
/// each bitmap saved cleanly a valid table of the size the virtual disk needs.
pub(super) fn validate_at_open<S: ReadAt + ?Sized>(
    src: &S,
    layout: &CheckLayout,
    entries: &[BitmapEntry],
) -> Result<(), BitmapError> {
    let mut names = HashSet::new();
    for bm in entries {
        let in_use = bm.flags & FLAG_IN_USE != 0;
        if in_use && names.contains(&bm.name) {
            continue;
        }
        if !names.insert(bm.name.clone()) {
            return Err(invalid(format!("Bitmap already exists: {}", bm.name)));
        }
        if in_use {
            continue;
        }
        if for_each_table_entry(src, layout, bm, |_| {}).is_err() {
            return Err(invalid(format!(
                "Could not read bitmap_table table from image for bitmap '{}': Invalid argument",
                bm.name
            )));
        }
        // load_bitmap_data(): the table must have exactly the clusters the serialized bitmap
        // needs (64-bit words of `size / granularity` bits).
        let len = layout.virtual_size();
        let bytes = if len == 0 {
            0
        } else {
            (((len - 1) >> bm.granularity_bits) >> 6) + 1
        } * 8;
        let tab_size = bytes.div_ceil(layout.cluster_size());
        if tab_size != u64::from(bm.table_size) || tab_size > MAX_TABLE_SIZE {
            return Err(invalid(format!(
                "Could not read bitmap '{}' from image: Invalid argument",
                bm.name
            )));
        }
    }
    Ok(())
}

/// `bitmap_table_load`: reads the table in chunks and passes each valid entry to `f`; fails on
/// the first entry `check_table_entry` rejects, as QEMU does.
pub(super) fn for_each_table_entry<S: ReadAt + ?Sized>(
    src: &S,
    layout: &CheckLayout,
    bm: &BitmapEntry,
    mut f: impl FnMut(u64),
) -> Result<(), BitmapError> {
    let total = u64::from(bm.table_size);
    if !qemu_can_read(bm.table_offset, total * 8) {
        return Err(invalid("Input/output error"));
    }
    let mut buf = vec![0u8; (total.min(TABLE_CHUNK_ENTRIES) * 8) as usize];
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(TABLE_CHUNK_ENTRIES);
        let chunk = &mut buf[..(n * 8) as usize];
        read(src, chunk, bm.table_offset + done * 8)?;
        for raw in chunk.chunks_exact(8) {
            let entry = be64(raw, 0);
            if !table_entry_is_valid(entry, layout.cluster_size()) {
                return Err(invalid("Invalid argument"));
            }
            f(entry);
        }
        done += n;
    }
    Ok(())
}

/// `check_table_entry`.
fn table_entry_is_valid(entry: u64, cluster_size: u64) -> bool {
    if entry & TABLE_ENTRY_RESERVED != 0 {
        return false;
    }
    let offset = entry & TABLE_ENTRY_OFFSET;
    offset == 0 || (entry & TABLE_ENTRY_ALL_ONES == 0 && offset.is_multiple_of(cluster_size))
}

fn read<S: ReadAt + ?Sized>(src: &S, buf: &mut [u8], offset: u64) -> Result<(), BitmapError> {
    match read_zero_filled(src, buf, offset) {
        Ok(()) => Ok(()),
        Err(ReadFailure::OutOfRange) => Err(invalid("Input/output error")),
        Err(ReadFailure::Io(e)) => Err(BitmapError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_follow_check_table_entry() {
        assert!(table_entry_is_valid(0, 65536));
        assert!(table_entry_is_valid(1, 65536));
        assert!(table_entry_is_valid(0x10000, 65536));
        assert!(!table_entry_is_valid(0x10001, 65536));
        assert!(!table_entry_is_valid(0x10200, 65536));
        assert!(!table_entry_is_valid(2, 65536));
    }
}
