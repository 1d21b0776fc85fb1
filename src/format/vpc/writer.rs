//! Encoding VHD images the way QEMU's `vpc_co_create()` (`block/vpc.c`) lays them out, so that
//! every reader that takes a `qemu-img convert -O vpc` output takes these too.
//!
//! - **Size.** Without `force_size`, the disk is sized by a CHS geometry (spec appendix
//!   "CHS Calculation", QEMU's `calculate_geometry()`): the smallest geometry whose product is
//!   at least the requested sectors, so the virtual size rounds *up* to it and the extra
//!   sectors read as zeros; the creator is `qemu`, which readers size by the geometry. With
//!   `force_size`, the size is the requested one, the geometry is the maximum
//!   (65535/16/255) and the creator `qem2`, which readers size by `current_size`. Above the
//!   largest geometry (about 127 GiB) both behave like `force_size`; above 2040 GiB VHD is
//!   refused.
//! - **Fixed:** the guest disk, then the footer.
//! - **Dynamic:** the footer's copy at 0, the dynamic disk header at 512, the BAT at 1536
//!   (rounded to whole sectors, unallocated entries all ones), then each allocated 2 MiB
//!   block as its sector bitmap (one sector, all ones: every sector present) and its data, in
//!   guest order, then the footer.

use super::{
    DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, DYNAMIC_COOKIE, DYNAMIC_HEADER_LEN, FOOTER_COOKIE,
    FOOTER_LEN, Field, VHD_MAX_GEOMETRY, VHD_MAX_SECTORS, checksum, dynamic, footer,
};

/// VHD sector size.
pub const SECTOR: u64 = 512;
/// The block size QEMU gives dynamic VHDs: 2 MiB.
pub const BLOCK_SIZE: u64 = 2 * 1024 * 1024;
/// The sector bitmap before each block: 4096 sectors need 512 bytes.
pub const BITMAP_LEN: u64 = SECTOR;
/// Where the BAT of a dynamic disk starts.
pub const BAT_OFFSET: u64 = 3 * SECTOR;
/// The footer's timestamp counts seconds from 2000-01-01 00:00:00 UTC.
pub const TIMESTAMP_BASE: u64 = 946_684_800;

/// Fixed or dynamic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhdKind {
    /// The guest disk followed by the footer.
    Fixed,
    /// Allocated 2 MiB blocks only.
    Dynamic,
}

/// What identifies one image: its creation time and unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdStamp {
    /// Seconds since the Unix epoch.
    pub unix_time: u64,
    /// The footer's unique id.
    pub uuid: [u8; 16],
}

/// The geometry and size of a VHD to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdGeometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
    /// The virtual size readers will see, in bytes (a whole number of sectors).
    pub virtual_size: u64,
    /// The creator application: `qemu` (sized by geometry) or `qem2` (by `current_size`).
    pub creator_app: [u8; 4],
}

/// QEMU's `calculate_geometry()` (the spec's CHS algorithm), for `total_sectors` capped at the
/// largest geometry.
pub fn chs_for(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(VHD_MAX_GEOMETRY);
    let (sectors, heads, cylinders_times_heads);
    if total >= 65535 * 16 * 63 {
        sectors = 255u64;
        heads = 16u64;
        cylinders_times_heads = total / sectors;
    } else {
        let mut s = 17u64;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        sectors = s;
        heads = h;
        cylinders_times_heads = cth;
    }
    // Every value fits: cylinders ≤ 65535 by the cap above, heads ≤ 16, sectors ≤ 255.
    (
        (cylinders_times_heads / heads) as u16,
        heads as u8,
        sectors as u8,
    )
}

impl VhdGeometry {
    /// The geometry `vpc_co_create()` picks for a disk of `size` bytes (rounded up to whole
    /// sectors first, as the block layer does), or why VHD cannot hold it.
    pub fn for_size(size: u64, force_size: bool) -> Result<Self, String> {
        let requested = size.div_ceil(SECTOR);
        let (cylinders, heads, sectors_per_track) = if force_size {
            (65535, 16, 255)
        } else {
            // The first geometry whose product covers the request: CHS products are not
            // monotonic in the sector count, so QEMU tries the counts above it in turn.
            let mut g = (0u16, 0u8, 0u8);
            let mut i = 0;
            while requested > product(g) && product(g) != VHD_MAX_GEOMETRY {
                g = chs_for(requested + i);
                i += 1;
            }
            g
        };
        let chs = product((cylinders, heads, sectors_per_track));
        let total = if chs == VHD_MAX_GEOMETRY {
            requested
        } else {
            chs
        };
        if total > VHD_MAX_SECTORS {
            return Err(format!(
                "a {size}-byte disk is larger than VHD's 2040 GiB limit"
            ));
        }
        Ok(Self {
            cylinders,
            heads,
            sectors_per_track,
            virtual_size: total * SECTOR,
            creator_app: if force_size { *b"qem2" } else { *b"qemu" },
        })
    }
}

fn product((c, h, s): (u16, u8, u8)) -> u64 {
    u64::from(c) * u64::from(h) * u64::from(s)
}

/// Where a dynamic VHD puts its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicLayout {
    /// BAT entries: one per 2 MiB of the virtual size.
    pub bat_entries: u64,
    /// Where the first block starts: after the BAT, rounded to whole sectors.
    pub data_offset: u64,
}

impl DynamicLayout {
    /// The layout for a disk of `virtual_size` bytes.
    pub fn new(virtual_size: u64) -> Self {
        let bat_entries = virtual_size.div_ceil(BLOCK_SIZE);
        Self {
            bat_entries,
            data_offset: BAT_OFFSET + (bat_entries * 4).next_multiple_of(SECTOR),
        }
    }

    /// Bytes each allocated block takes: its bitmap and its data.
    pub fn block_stride(&self) -> u64 {
        BITMAP_LEN + BLOCK_SIZE
    }

    /// The file's length with `allocated` blocks.
    pub fn file_len(&self, allocated: u64) -> u64 {
        self.data_offset + allocated * self.block_stride() + FOOTER_LEN as u64
    }
}

/// Writes `bytes` into `field` of the structure `buf`; the encoder always passes a value of
/// the field's size.
fn put(buf: &mut [u8], field: Field, bytes: &[u8]) {
    debug_assert_eq!(bytes.len(), field.len, "VHD field at {}", field.offset);
    buf[field.range()].copy_from_slice(bytes);
}

/// The footer `vpc_co_create()` writes.
pub fn footer_bytes(geometry: &VhdGeometry, kind: VhdKind, stamp: &VhdStamp) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    put(&mut f, footer::COOKIE, FOOTER_COOKIE);
    // Features: "reserved", which must always be set.
    put(&mut f, footer::FEATURES, &2u32.to_be_bytes());
    put(
        &mut f,
        footer::FILE_FORMAT_VERSION,
        &0x0001_0000u32.to_be_bytes(),
    );
    let data_offset = match kind {
        VhdKind::Fixed => u64::MAX,
        VhdKind::Dynamic => FOOTER_LEN as u64,
    };
    put(&mut f, footer::DATA_OFFSET, &data_offset.to_be_bytes());
    let timestamp = stamp.unix_time.saturating_sub(TIMESTAMP_BASE) as u32;
    put(&mut f, footer::TIME_STAMP, &timestamp.to_be_bytes());
    put(&mut f, footer::CREATOR_APPLICATION, &geometry.creator_app);
    // Creator version 5.3 (Virtual PC 2007), host OS "Wi2k", as QEMU writes them.
    put(
        &mut f,
        footer::CREATOR_VERSION,
        &0x0005_0003u32.to_be_bytes(),
    );
    put(&mut f, footer::CREATOR_HOST_OS, b"Wi2k");
    put(
        &mut f,
        footer::ORIGINAL_SIZE,
        &geometry.virtual_size.to_be_bytes(),
    );
    put(
        &mut f,
        footer::CURRENT_SIZE,
        &geometry.virtual_size.to_be_bytes(),
    );
    put(&mut f, footer::CYLINDERS, &geometry.cylinders.to_be_bytes());
    put(&mut f, footer::HEADS, &[geometry.heads]);
    put(
        &mut f,
        footer::SECTORS_PER_TRACK,
        &[geometry.sectors_per_track],
    );
    let disk_type = match kind {
        VhdKind::Fixed => DISK_TYPE_FIXED,
        VhdKind::Dynamic => DISK_TYPE_DYNAMIC,
    };
    put(&mut f, footer::DISK_TYPE, &disk_type.to_be_bytes());
    put(&mut f, footer::UNIQUE_ID, &stamp.uuid);
    let sum = checksum(&f, footer::CHECKSUM);
    put(&mut f, footer::CHECKSUM, &sum.to_be_bytes());
    f
}

/// The dynamic disk header `create_dynamic_disk()` writes.
pub fn dynamic_header_bytes(layout: &DynamicLayout) -> [u8; DYNAMIC_HEADER_LEN] {
    let mut h = [0u8; DYNAMIC_HEADER_LEN];
    put(&mut h, dynamic::COOKIE, DYNAMIC_COOKIE);
    // All 64 bits set: the spec says 0xFFFFFFFF, Microsoft's tools want all ones (QEMU).
    put(&mut h, dynamic::DATA_OFFSET, &u64::MAX.to_be_bytes());
    put(&mut h, dynamic::TABLE_OFFSET, &BAT_OFFSET.to_be_bytes());
    put(
        &mut h,
        dynamic::HEADER_VERSION,
        &0x0001_0000u32.to_be_bytes(),
    );
    put(
        &mut h,
        dynamic::MAX_TABLE_ENTRIES,
        &(layout.bat_entries as u32).to_be_bytes(),
    );
    put(
        &mut h,
        dynamic::BLOCK_SIZE,
        &(BLOCK_SIZE as u32).to_be_bytes(),
    );
    let sum = checksum(&h, dynamic::CHECKSUM);
    put(&mut h, dynamic::CHECKSUM, &sum.to_be_bytes());
    h
}

/// Streams the BAT, sector-padded: `allocated` yields the allocated block numbers in
/// increasing order; block k of them is the k-th stored. Calls `emit` with pieces of at most
/// 64 KiB so that memory stays flat whatever the disk size.
pub fn write_bat<E>(
    layout: &DynamicLayout,
    allocated: impl Iterator<Item = u64>,
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    const PIECE_ENTRIES: u64 = 16 * 1024;
    let mut allocated = allocated.peekable();
    let mut stored = 0u64;
    let total = (layout.data_offset - BAT_OFFSET) / 4;
    let mut piece = Vec::with_capacity((PIECE_ENTRIES * 4) as usize);
    let mut entry = 0u64;
    while entry < total {
        piece.clear();
        let end = (entry + PIECE_ENTRIES).min(total);
        for e in entry..end {
            let value = if allocated.peek() == Some(&e) {
                allocated.next();
                let sector = (layout.data_offset + stored * layout.block_stride()) / SECTOR;
                stored += 1;
                sector as u32
            } else {
                super::BAT_UNALLOCATED
            };
            piece.extend_from_slice(&value.to_be_bytes());
        }
        emit(&piece)?;
        entry = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vpc::VhdFooter;

    #[test]
    fn geometry_rounds_up_as_qemu_does() {
        // Sizes and the virtual sizes qemu-img 10 gives them (`qemu-img create -f vpc`).
        for (size, want) in [
            (1u64 << 20, 1_079_296),
            (3_000_000, 3_028_992),
            (10 << 20, 10_514_432),
            (5120, 34_816),
            (65536, 69_632),
            (200 << 30, 200 << 30),
        ] {
            let g = VhdGeometry::for_size(size, false).unwrap();
            assert!(g.virtual_size >= size);
            assert_eq!(g.virtual_size, want, "{size}");
        }
        let g = VhdGeometry::for_size(3_000_000, true).unwrap();
        assert_eq!(g.virtual_size, 3_000_320);
        assert!(VhdGeometry::for_size(2041 << 30, true).is_err());
    }

    #[test]
    fn the_footer_reads_back_with_its_size_and_checksum() {
        let stamp = VhdStamp {
            unix_time: TIMESTAMP_BASE + 5,
            uuid: [7; 16],
        };
        for force in [false, true] {
            let g = VhdGeometry::for_size(10 << 20, force).unwrap();
            let f = VhdFooter::parse(&footer_bytes(&g, VhdKind::Dynamic, &stamp));
            assert!(f.checksum_ok());
            assert_eq!(f.virtual_size(), Some(g.virtual_size));
            assert_eq!(f.data_offset, 512);
        }
    }

    #[test]
    fn the_bat_points_at_each_stored_block_in_turn() {
        let layout = DynamicLayout::new(7 << 20);
        assert_eq!(layout.bat_entries, 4);
        let mut bat = Vec::new();
        write_bat(&layout, [1u64, 3].into_iter(), |p| {
            bat.extend_from_slice(p);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(bat.len(), 512);
        let entry = |i: usize| u32::from_be_bytes(bat[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(entry(0), u32::MAX);
        assert_eq!(u64::from(entry(1)), layout.data_offset / 512);
        assert_eq!(
            u64::from(entry(3)),
            (layout.data_offset + layout.block_stride()) / 512
        );
        assert!(bat[16..].iter().all(|&b| b == 0xff));
    }
}
