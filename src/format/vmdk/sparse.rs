//! The hosted sparse extent header (`KDMV`, VMware "Virtual Disk Format 5.0" §"Hosted Sparse
//! Extent Header") and the streamOptimized footer, as QEMU's `vmdk_open_vmdk4()` reads them.

use crate::format::bytes::{le16, le32, le64};

/// `KDMV` read as a big-endian u32 (QEMU's `VMDK4_MAGIC`).
pub const MAGIC: &[u8; 4] = b"KDMV";
/// `COWD`: the VMDK3 / ESX `vmfsSparse` header, which this tool does not read.
pub const LEGACY_MAGIC: &[u8; 4] = b"COWD";
/// `gdOffset` value meaning "the grain directory is located by the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// `compressAlgorithm` DEFLATE: a streamOptimized extent.
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Marker types of a stream (`MARKER_EOS`, `MARKER_GT`, `MARKER_GD`, `MARKER_FOOTER`).
pub const MARKER_END_OF_STREAM: u32 = 0;
/// A grain table follows the marker.
pub const MARKER_GRAIN_TABLE: u32 = 1;
/// A grain directory follows the marker.
pub const MARKER_GRAIN_DIRECTORY: u32 = 2;
/// The footer (a copy of the header locating the grain directory) follows the marker.
pub const MARKER_FOOTER: u32 = 3;
/// Header flags (spec §"Hosted Sparse Extent Header": `flags`).
pub const FLAG_VALID_NEWLINE_DETECTION: u32 = 1;
/// The redundant grain directory (`rgdOffset`) is in use.
pub const FLAG_REDUNDANT_GRAIN_TABLE: u32 = 1 << 1;
/// Grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// The stream carries markers.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// The four bytes after `uncleanShutdown` that detect newline translation.
pub const NEWLINE_CHECK: [u8; 4] = *b"\n \r\n";

/// Field offsets in the header sector (`SparseExtentHeader`, packed, little-endian).
pub mod field {
    #![allow(
        missing_docs,
        reason = "each constant is the spec's field of the same name"
    )]
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const FLAGS: usize = 8;
    pub const CAPACITY: usize = 12;
    pub const GRAIN_SIZE: usize = 20;
    pub const DESCRIPTOR_OFFSET: usize = 28;
    pub const DESCRIPTOR_SIZE: usize = 36;
    pub const NUM_GTES_PER_GT: usize = 44;
    pub const RGD_OFFSET: usize = 48;
    pub const GD_OFFSET: usize = 56;
    pub const OVERHEAD: usize = 64;
    pub const UNCLEAN_SHUTDOWN: usize = 72;
    pub const NEWLINE_CHECK: usize = 73;
    pub const COMPRESS_ALGORITHM: usize = 77;
}
/// The footer is three sectors before the end: footer marker, footer, end-of-stream marker.
pub const FOOTER_AREA_LEN: usize = 3 * 512;

/// The fields of a `VMDK4Header` (after the magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// Flags (valid newline detection, redundant grain table, zeroed grains, compressed
    /// grains, markers).
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub granularity: u64,
    /// Embedded descriptor offset, in sectors.
    pub desc_offset: u64,
    /// Embedded descriptor size, in sectors.
    pub desc_size: u64,
    /// Grain table entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Redundant grain directory offset, in sectors.
    pub rgd_offset: u64,
    /// Grain directory offset, in sectors (`GD_AT_END` for a footer).
    pub gd_offset: u64,
    /// Where grain data starts (the metadata size), in sectors.
    pub grain_offset: u64,
    /// 0 none, 1 DEFLATE.
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Decodes the header from a sector starting with the magic (bytes past its end read as
    /// zero, as QEMU's padded reads do).
    pub fn parse(sector: &[u8]) -> Self {
        Self {
            version: le32(sector, field::VERSION),
            flags: le32(sector, field::FLAGS),
            capacity: le64(sector, field::CAPACITY),
            granularity: le64(sector, field::GRAIN_SIZE),
            desc_offset: le64(sector, field::DESCRIPTOR_OFFSET),
            desc_size: le64(sector, field::DESCRIPTOR_SIZE),
            num_gtes_per_gt: le32(sector, field::NUM_GTES_PER_GT),
            rgd_offset: le64(sector, field::RGD_OFFSET),
            gd_offset: le64(sector, field::GD_OFFSET),
            grain_offset: le64(sector, field::OVERHEAD),
            compress_algorithm: le16(sector, field::COMPRESS_ALGORITHM),
        }
    }

    /// The header sector: the magic, these fields, a clean shutdown and the newline check
    /// bytes, as QEMU's `vmdk_init_extent()` writes them.
    pub fn encode(&self) -> [u8; 512] {
        let mut s = [0u8; 512];
        let mut put = |at: usize, bytes: &[u8]| s[at..at + bytes.len()].copy_from_slice(bytes);
        put(field::MAGIC, MAGIC);
        put(field::VERSION, &self.version.to_le_bytes());
        put(field::FLAGS, &self.flags.to_le_bytes());
        put(field::CAPACITY, &self.capacity.to_le_bytes());
        put(field::GRAIN_SIZE, &self.granularity.to_le_bytes());
        put(field::DESCRIPTOR_OFFSET, &self.desc_offset.to_le_bytes());
        put(field::DESCRIPTOR_SIZE, &self.desc_size.to_le_bytes());
        put(field::NUM_GTES_PER_GT, &self.num_gtes_per_gt.to_le_bytes());
        put(field::RGD_OFFSET, &self.rgd_offset.to_le_bytes());
        put(field::GD_OFFSET, &self.gd_offset.to_le_bytes());
        put(field::OVERHEAD, &self.grain_offset.to_le_bytes());
        put(field::NEWLINE_CHECK, &NEWLINE_CHECK);
        put(
            field::COMPRESS_ALGORITHM,
            &self.compress_algorithm.to_le_bytes(),
        );
        s
    }

    /// Whether grains are DEFLATE-compressed (streamOptimized).
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }
}

/// Which of the footer checks failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterFault {
    /// The footer marker before it, or the end-of-stream marker after it, is missing (QEMU).
    Markers,
    /// The footer does not start with `KDMV` (QEMU).
    Magic,
    /// The markers are not zero-padded (OpenStack).
    Padding,
    /// The footer's grain directory offset is -1 too: it points to another footer.
    Chained,
    /// A field of the footer differs from the header's (OpenStack).
    Mismatch,
}

/// Why a streamOptimized footer is refused: which check, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FooterError {
    /// The check that failed.
    pub fault: FooterFault,
    /// One sentence naming the offending value.
    pub detail: String,
}

impl FooterError {
    fn new(fault: FooterFault, detail: impl Into<String>) -> Self {
        Self {
            fault,
            detail: detail.into(),
        }
    }
}

/// Checks the streamOptimized footer area (the last three sectors of the sector-rounded
/// file): QEMU's sanity checks (`vmdk_open_vmdk4()`: the footer marker, the magic, the
/// end-of-stream marker) and OpenStack's (the footer repeats the header but for the grain
/// directory, markers are zero-padded). Returns the footer header, or why it is refused.
pub fn check_footer(header: &SparseHeader, area: &[u8]) -> Result<SparseHeader, FooterError> {
    let missing =
        |what: &str| FooterError::new(FooterFault::Markers, format!("the {what} is missing"));
    let marker = area.get(..512).ok_or_else(|| missing("footer area"))?;
    let footer = area.get(512..1024).ok_or_else(|| missing("footer"))?;
    let eos = area
        .get(1024..1536)
        .ok_or_else(|| missing("end-of-stream marker"))?;
    if le32(marker, 8) != 0 || le32(marker, 12) != MARKER_FOOTER {
        return Err(FooterError::new(
            FooterFault::Markers,
            format!(
                "the sector before the footer is not a footer marker (size {}, type {})",
                le32(marker, 8),
                le32(marker, 12)
            ),
        ));
    }
    if !footer.starts_with(MAGIC) {
        return Err(FooterError::new(
            FooterFault::Magic,
            "the footer does not start with \"KDMV\"",
        ));
    }
    if le64(eos, 0) != 0 || le32(eos, 8) != 0 || le32(eos, 12) != MARKER_END_OF_STREAM {
        return Err(FooterError::new(
            FooterFault::Markers,
            "the last sector is not an end-of-stream marker",
        ));
    }
    if marker[16..].iter().any(|&b| b != 0) || eos[16..].iter().any(|&b| b != 0) {
        return Err(FooterError::new(
            FooterFault::Padding,
            "the footer and end-of-stream markers are not zero-padded",
        ));
    }
    let f = SparseHeader::parse(footer);
    if f.gd_offset == GD_AT_END {
        return Err(FooterError::new(
            FooterFault::Chained,
            "the footer points to another footer (its grain directory offset is also -1)",
        ));
    }
    let same = |what: &str, a: u64, b: u64| {
        if a == b {
            Ok(())
        } else {
            Err(FooterError::new(
                FooterFault::Mismatch,
                format!("the footer's {what} is {b} but the header's is {a}"),
            ))
        }
    };
    same("version", header.version.into(), f.version.into())?;
    same("capacity", header.capacity, f.capacity)?;
    same("grain size", header.granularity, f.granularity)?;
    same("descriptor offset", header.desc_offset, f.desc_offset)?;
    same("descriptor size", header.desc_size, f.desc_size)?;
    same(
        "grain table size",
        header.num_gtes_per_gt.into(),
        f.num_gtes_per_gt.into(),
    )?;
    same("grain offset", header.grain_offset, f.grain_offset)?;
    same(
        "compression algorithm",
        header.compress_algorithm.into(),
        f.compress_algorithm.into(),
    )?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn header_sector(capacity: u64, gd_offset: u64, compressed: bool) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..4].copy_from_slice(MAGIC);
        s[4..8].copy_from_slice(&(if compressed { 3u32 } else { 1 }).to_le_bytes());
        s[8..12].copy_from_slice(&3u32.to_le_bytes());
        s[12..20].copy_from_slice(&capacity.to_le_bytes());
        s[20..28].copy_from_slice(&128u64.to_le_bytes());
        s[28..36].copy_from_slice(&1u64.to_le_bytes());
        s[36..44].copy_from_slice(&20u64.to_le_bytes());
        s[44..48].copy_from_slice(&512u32.to_le_bytes());
        s[48..56].copy_from_slice(&21u64.to_le_bytes());
        s[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        s[64..72].copy_from_slice(&128u64.to_le_bytes());
        s[73..77].copy_from_slice(b"\n \r\n");
        s[77..79].copy_from_slice(&u16::from(compressed).to_le_bytes());
        s
    }

    fn footer_area(footer: &[u8]) -> Vec<u8> {
        let mut a = vec![0u8; FOOTER_AREA_LEN];
        a[0..8].copy_from_slice(&1u64.to_le_bytes());
        a[12..16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        a[512..1024].copy_from_slice(footer);
        a
    }

    #[test]
    fn the_header_fields_decode() {
        let h = SparseHeader::parse(&header_sector(131_072, 30, true));
        assert_eq!(h.capacity, 131_072);
        assert_eq!(h.granularity, 128);
        assert!(h.compressed());
        assert_eq!(h.gd_offset, 30);
    }

    #[test]
    fn a_matching_footer_is_accepted_and_mismatches_are_named() {
        let header = SparseHeader::parse(&header_sector(131_072, GD_AT_END, true));
        let good = footer_area(&header_sector(131_072, 30, true));
        assert_eq!(check_footer(&header, &good).map(|f| f.gd_offset), Ok(30));
        let bad = footer_area(&header_sector(262_144, 30, true));
        assert!(
            check_footer(&header, &bad)
                .unwrap_err()
                .detail
                .contains("capacity")
        );
        let bad = footer_area(&header_sector(131_072, GD_AT_END, true));
        assert!(
            check_footer(&header, &bad)
                .unwrap_err()
                .detail
                .contains("another footer")
        );
        let mut bad = good.clone();
        bad[12] = 2;
        assert!(
            check_footer(&header, &bad)
                .unwrap_err()
                .detail
                .contains("marker")
        );
        let mut bad = good.clone();
        bad[1024 + 12] = 1;
        assert!(
            check_footer(&header, &bad)
                .unwrap_err()
                .detail
                .contains("end-of-stream")
        );
        let mut bad = good.clone();
        bad[100] = 1;
        assert!(
            check_footer(&header, &bad)
                .unwrap_err()
                .detail
                .contains("zero-padded")
        );
        let mut bad = good.clone();
        bad[512] = b'X';
        assert_eq!(
            check_footer(&header, &bad).unwrap_err().fault,
            FooterFault::Magic
        );
        assert!(check_footer(&header, &good[..600]).is_err());
    }
}
