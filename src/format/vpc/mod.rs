//! VHD images (QEMU's `vpc` driver): Microsoft's "Virtual Hard Disk Image Format
//! Specification" v1.0, read the way QEMU's `block/vpc.c` reads it.
//!
//! Every VHD ends with a 512-byte footer. A dynamic or differencing disk also keeps a copy of
//! the footer at offset 0, followed (at the footer's `data_offset`) by a 1 KiB dynamic disk
//! header and the block allocation table (BAT). A fixed disk is the raw guest disk with the
//! footer appended, so its only signature is in the last 512 bytes: QEMU's probe (which looks
//! at offset 0 only) calls it raw, which is why detection here also looks at the tail.
//!
//! The virtual size follows `vpc_open()`: the CHS geometry for images written by Virtual PC
//! (`vpc `) and old QEMU (`qemu`), `current_size` for every other creator application (QEMU
//! 10 inverted the list so that unknown creators such as Azure's `wa\0\0` use `current_size`)
//! and whenever the geometry is the maximum one.

pub mod reader;
pub mod writer;

use std::io;

use super::bytes::{be16, be32, be64};
use super::{FormatReport, Probe, read_failure, utf16_until_nul};
use crate::safety::{Check, Finding};
use crate::source::{ReadAt, read_exact_at, read_vec_at};

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[crate::safety::Rule] = &[];

/// Size of the footer, and of its copy at offset 0.
pub const FOOTER_LEN: usize = 512;
/// Size of the dynamic disk header (`VHDDynDiskHeader`).
pub const DYNAMIC_HEADER_LEN: usize = 1024;
/// The footer's cookie.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// The dynamic disk header's cookie.
pub const DYNAMIC_COOKIE: &[u8; 8] = b"cxsparse";
/// Footer disk type of a fixed disk (spec §"Disk Type").
pub const DISK_TYPE_FIXED: u32 = 2;
/// Footer disk type of a dynamic disk.
pub const DISK_TYPE_DYNAMIC: u32 = 3;
/// Footer disk type of a differencing disk (it has a parent).
pub const DISK_TYPE_DIFFERENCING: u32 = 4;
/// QEMU's `VHD_MAX_SECTORS`: it refuses disks over 2040 GiB (`-EFBIG`).
pub const VHD_MAX_SECTORS: u64 = 0xff00_0000;
/// QEMU's `VHD_MAX_GEOMETRY` (65535 cylinders × 16 heads × 255 sectors): a disk with this
/// geometry is sized by `current_size`, whatever its creator, to avoid truncating it.
pub const VHD_MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// QEMU refuses more BAT entries than `INT_MAX / 4` ("Max Table Entries too large").
const MAX_TABLE_ENTRIES: u64 = (i32::MAX / 4) as u64;
/// The largest BAT this parser reads to find blocks past the end of the file: 4 MiB is the BAT
/// of a 2040 GiB disk (QEMU's maximum) with the default 2 MiB blocks. Larger tables are only
/// range-checked, so `info` stays bounded.
const MAX_BAT_SCAN_BYTES: u64 = 4 << 20;
/// Chunk size of the BAT scan.
const BAT_SCAN_CHUNK: usize = 64 * 1024;
/// A BAT entry for a block that is not allocated.
pub const BAT_UNALLOCATED: u32 = 0xffff_ffff;
/// VHD sector size.
const SECTOR: u64 = 512;

/// Field offsets in the footer (spec "Hard Disk Footer Format").
pub mod footer {
    #![allow(
        missing_docs,
        reason = "each constant is the spec's field of the same name"
    )]
    pub const COOKIE: usize = 0;
    pub const FEATURES: usize = 8;
    pub const FILE_FORMAT_VERSION: usize = 12;
    pub const DATA_OFFSET: usize = 16;
    pub const TIMESTAMP: usize = 24;
    pub const CREATOR_APP: usize = 28;
    pub const CREATOR_VERSION: usize = 32;
    pub const CREATOR_HOST_OS: usize = 36;
    pub const ORIGINAL_SIZE: usize = 40;
    pub const CURRENT_SIZE: usize = 48;
    pub const CYLINDERS: usize = 56;
    pub const HEADS: usize = 58;
    pub const SECTORS_PER_TRACK: usize = 59;
    pub const DISK_TYPE: usize = 60;
    pub const CHECKSUM: usize = 64;
    pub const UNIQUE_ID: usize = 68;
}

/// Field offsets in the dynamic disk header (spec "Dynamic Disk Header Format").
pub mod dynamic {
    #![allow(
        missing_docs,
        reason = "each constant is the spec's field of the same name"
    )]
    pub const COOKIE: usize = 0;
    pub const DATA_OFFSET: usize = 8;
    pub const TABLE_OFFSET: usize = 16;
    pub const HEADER_VERSION: usize = 24;
    pub const MAX_TABLE_ENTRIES: usize = 28;
    pub const BLOCK_SIZE: usize = 32;
    pub const CHECKSUM: usize = 36;
    pub const PARENT_UUID: usize = 40;
    pub const PARENT_NAME: usize = 64;
    pub const PARENT_NAME_LEN: usize = 512;
}

/// Where the VHD signature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpcDetection {
    /// A copy of the footer at offset 0: a dynamic or differencing VHD.
    HeaderCopy,
    /// Only the footer in the last 512 bytes: a fixed VHD, whose data is a raw guest disk.
    FooterOnly,
}

/// Whether the probe carries a VHD footer, and where.
pub fn detect(probe: &Probe) -> Option<VpcDetection> {
    if probe.head.starts_with(FOOTER_COOKIE) {
        Some(VpcDetection::HeaderCopy)
    } else if probe.tail.len() == FOOTER_LEN && probe.tail.starts_with(FOOTER_COOKIE) {
        Some(VpcDetection::FooterOnly)
    } else {
        None
    }
}

/// The fields of a VHD footer that decide how QEMU reads the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    /// Offset of the dynamic disk header (all ones for a fixed disk).
    pub data_offset: u64,
    /// The application that wrote the image (`vpc `, `qemu`, `qem2`, `win `, ...).
    pub creator_app: [u8; 4],
    /// The disk size in bytes, as of the last resize.
    pub current_size: u64,
    /// CHS geometry: cylinders.
    pub cylinders: u16,
    /// CHS geometry: heads.
    pub heads: u8,
    /// CHS geometry: sectors per track.
    pub sectors_per_track: u8,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// The stored checksum.
    pub checksum: u32,
    /// The checksum of the footer as read (one's complement of the byte sum, checksum field
    /// taken as zero).
    pub computed_checksum: u32,
}

impl VhdFooter {
    /// Decodes a 512-byte footer.
    pub fn parse(bytes: &[u8; FOOTER_LEN]) -> Self {
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&bytes[footer::CREATOR_APP..footer::CREATOR_APP + 4]);
        let sum = bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| !(footer::CHECKSUM..footer::CHECKSUM + 4).contains(i))
            .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
        Self {
            data_offset: be64(bytes, footer::DATA_OFFSET),
            creator_app,
            current_size: be64(bytes, footer::CURRENT_SIZE),
            cylinders: be16(bytes, footer::CYLINDERS),
            heads: bytes[footer::HEADS],
            sectors_per_track: bytes[footer::SECTORS_PER_TRACK],
            disk_type: be32(bytes, footer::DISK_TYPE),
            checksum: be32(bytes, footer::CHECKSUM),
            computed_checksum: !sum,
        }
    }

    /// QEMU's `vpc_ignore_current_size()`: Virtual PC and QEMU before 2.6 (`qemu`) size the
    /// disk by its geometry; everyone else (including QEMU's `force_size` images, `qem2`)
    /// by `current_size`.
    pub fn uses_chs_geometry(&self) -> bool {
        &self.creator_app == b"vpc " || &self.creator_app == b"qemu"
    }

    /// The guest-visible size in 512-byte sectors, as `vpc_open()` computes it.
    pub fn virtual_sectors(&self) -> u64 {
        let chs =
            u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track);
        if !self.uses_chs_geometry() || chs == VHD_MAX_GEOMETRY {
            self.current_size / SECTOR
        } else {
            chs
        }
    }

    /// Decodes the footer in `bytes` if they start with the cookie.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let footer = <&[u8; FOOTER_LEN]>::try_from(bytes.get(..FOOTER_LEN)?).ok()?;
        footer
            .starts_with(FOOTER_COOKIE)
            .then(|| Self::parse(footer))
    }

    /// Whether the stored checksum matches the footer's bytes.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    /// The guest-visible size in bytes, or `None` above QEMU's 2040 GiB limit.
    pub fn virtual_size(&self) -> Option<u64> {
        let sectors = self.virtual_sectors();
        (sectors <= VHD_MAX_SECTORS).then_some(sectors * SECTOR)
    }

    fn creator(&self) -> String {
        self.creator_app.escape_ascii().to_string()
    }
}

/// Describes the image as `qemu-img info -f vpc` would. A fixed VHD (footer only) is
/// described too, although QEMU's probe would call it raw.
pub fn describe<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let Some(kind) = detect(probe) else {
        return Ok(FormatReport::invalid(
            Check::InvalidHeader,
            "there is no VHD footer (cookie \"conectix\") at the start or in the last 512 bytes",
        ));
    };
    let bytes = match kind {
        VpcDetection::HeaderCopy => probe.head_bytes(0, FOOTER_LEN),
        VpcDetection::FooterOnly => Some(probe.tail.as_slice()),
    };
    let Some(bytes) = bytes.and_then(|b| <&[u8; FOOTER_LEN]>::try_from(b).ok()) else {
        return Ok(FormatReport::invalid(
            Check::Truncated,
            format!(
                "the VHD footer copy (512 bytes at offset 0) runs past the end of the file ({} bytes)",
                probe.len
            ),
        ));
    };
    let footer = VhdFooter::parse(bytes);
    let mut report = FormatReport::default();

    if kind == VpcDetection::FooterOnly && footer.disk_type != DISK_TYPE_FIXED {
        report.findings.push(Finding::error(
            Check::InvalidHeader,
            format!(
                "the VHD footer is only at the end of the file but its disk type is {}, not 2 (fixed)",
                footer.disk_type
            ),
        ));
        return Ok(report);
    }
    if footer.checksum != footer.computed_checksum {
        report.findings.push(Finding::error(
            Check::InvalidHeader,
            format!(
                "the VHD footer checksum is {:#010x} but the footer sums to {:#010x}",
                footer.checksum, footer.computed_checksum
            ),
        ));
        return Ok(report);
    }
    if !matches!(
        footer.disk_type,
        DISK_TYPE_FIXED | DISK_TYPE_DYNAMIC | DISK_TYPE_DIFFERENCING
    ) {
        report.findings.push(Finding::error(
            Check::InvalidHeader,
            format!(
                "the VHD disk type is {}, not 2 (fixed), 3 (dynamic) or 4 (differencing)",
                footer.disk_type
            ),
        ));
    }
    let sectors = footer.virtual_sectors();
    // The one computation of a VHD's virtual size, shared with the converter's reader.
    let Some(virtual_size) = footer.virtual_size() else {
        report.findings.push(Finding::error(
            Check::InvalidHeader,
            format!(
                "the VHD disk size ({} bytes, by {}) exceeds the 2040 GiB limit",
                sectors * SECTOR,
                if footer.uses_chs_geometry() && sectors != VHD_MAX_GEOMETRY {
                    format!("the CHS geometry of creator {:?}", footer.creator())
                } else {
                    "current_size".to_string()
                }
            ),
        ));
        return Ok(report);
    };

    match kind {
        VpcDetection::FooterOnly => {
            report.virtual_size = Some(virtual_size);
            let data_len = probe.len - FOOTER_LEN as u64;
            if data_len < virtual_size {
                report.findings.push(Finding::error(
                    Check::Truncated,
                    format!(
                        "the fixed VHD holds {data_len} bytes of disk data before its footer, less than its {virtual_size}-byte virtual size"
                    ),
                ));
            }
        }
        VpcDetection::HeaderCopy => {
            describe_dynamic(src, &footer, sectors, &mut report)?;
        }
    }
    Ok(report)
}

/// The dynamic disk header and BAT checks of `vpc_open()`, plus the parent of a differencing
/// disk (reported, never opened; QEMU's driver ignores it and reads unallocated blocks as
/// zeros).
fn describe_dynamic<S: ReadAt + ?Sized>(
    src: &S,
    footer: &VhdFooter,
    sectors: u64,
    report: &mut FormatReport,
) -> io::Result<()> {
    let mut header = [0u8; DYNAMIC_HEADER_LEN];
    if let Err(e) = read_exact_at(src, &mut header, footer.data_offset) {
        report
            .findings
            .push(read_failure(e, "VHD dynamic disk header")?);
        return Ok(());
    }
    let invalid = |detail: String| Finding::error(Check::InvalidHeader, detail);
    if !header.starts_with(DYNAMIC_COOKIE) {
        report.findings.push(invalid(format!(
            "the VHD dynamic disk header at offset {:#x} does not start with \"cxsparse\"",
            footer.data_offset
        )));
        return Ok(());
    }
    let block_size = be32(&header, dynamic::BLOCK_SIZE);
    if !block_size.is_power_of_two() || u64::from(block_size) < SECTOR {
        report.findings.push(invalid(format!(
            "the VHD block size is {block_size}, not a power of two of at least 512"
        )));
        return Ok(());
    }
    let block_size = u64::from(block_size);
    let max_table_entries = u64::from(be32(&header, dynamic::MAX_TABLE_ENTRIES));
    let virtual_size = sectors * SECTOR;
    if virtual_size / block_size > u64::from(u32::MAX) {
        report.findings.push(invalid(format!(
            "the VHD needs {} blocks of {block_size} bytes, more than a BAT can address",
            virtual_size / block_size
        )));
        return Ok(());
    }
    if max_table_entries * block_size < virtual_size {
        report.findings.push(invalid(format!(
            "the VHD BAT has {max_table_entries} entries of {block_size} bytes, too few for the {virtual_size}-byte disk"
        )));
        return Ok(());
    }
    if max_table_entries > MAX_TABLE_ENTRIES {
        report.findings.push(invalid(format!(
            "the VHD BAT has {max_table_entries} entries, more than QEMU's limit of {MAX_TABLE_ENTRIES}"
        )));
        return Ok(());
    }

    report.virtual_size = Some(virtual_size);
    // `vpc_co_get_info()` reports the block size unless the footer says fixed.
    if footer.disk_type != DISK_TYPE_FIXED {
        report.cluster_size = Some(block_size);
    }
    if footer.disk_type == DISK_TYPE_DIFFERENCING {
        let parent = parent_name(&header);
        let uuid = &header[dynamic::PARENT_UUID..dynamic::PARENT_UUID + 16];
        let detail = if parent.is_empty() {
            format!(
                "the VHD is a differencing disk whose parent (UUID {}) supplies unallocated blocks",
                hex(uuid)
            )
        } else {
            format!(
                "the VHD is a differencing disk that reads unallocated blocks from the parent {parent:?}"
            )
        };
        report
            .findings
            .push(Finding::error(Check::BackingFile, detail));
        if !parent.is_empty() {
            report.backing_filename = Some(parent);
        }
    }
    check_bat(
        src,
        be64(&header, dynamic::TABLE_OFFSET),
        max_table_entries,
        block_size,
        report,
    )
}

/// QEMU's truncation check: every allocated block (its sector bitmap and data) and the BAT
/// itself must lie inside the file.
fn check_bat<S: ReadAt + ?Sized>(
    src: &S,
    bat_offset: u64,
    entries: u64,
    block_size: u64,
    report: &mut FormatReport,
) -> io::Result<()> {
    let file_len = src.len();
    let bat_len = entries * 4;
    let bat_end = bat_offset.checked_add(bat_len);
    if bat_end.is_none_or(|end| end > file_len) {
        report.findings.push(Finding::error(
            Check::Truncated,
            format!(
                "the VHD BAT ({bat_len} bytes at offset {bat_offset:#x}) runs past the end of the file ({file_len} bytes)"
            ),
        ));
        return Ok(());
    }
    if bat_len > MAX_BAT_SCAN_BYTES {
        return Ok(());
    }
    // `bitmap_size` in vpc_open(): one bit per sector, rounded up to whole sectors.
    let bitmap_size = (block_size / (8 * SECTOR)).next_multiple_of(SECTOR);
    let mut index = 0u64;
    let mut offset = bat_offset;
    let mut remaining = bat_len;
    while remaining > 0 {
        let n = remaining.min(BAT_SCAN_CHUNK as u64) as usize;
        let chunk = match read_vec_at(src, offset, n) {
            Ok(c) => c,
            Err(e) => {
                report.findings.push(read_failure(e, "VHD BAT")?);
                return Ok(());
            }
        };
        for entry in chunk.chunks_exact(4) {
            let sector = be32(entry, 0);
            if sector != BAT_UNALLOCATED {
                let start = u64::from(sector) * SECTOR;
                let end = start + bitmap_size + block_size;
                if end > file_len {
                    report.findings.push(Finding::error(
                        Check::Truncated,
                        format!(
                            "VHD block {index} (bitmap and data at offset {start:#x}, {} bytes) runs past the end of the file ({file_len} bytes)",
                            bitmap_size + block_size
                        ),
                    ));
                    return Ok(());
                }
            }
            index += 1;
        }
        offset += n as u64;
        remaining -= n as u64;
    }
    Ok(())
}

/// The parent's file name, UTF-16 big-endian, NUL-padded.
fn parent_name(header: &[u8]) -> String {
    let raw = &header[dynamic::PARENT_NAME..dynamic::PARENT_NAME + dynamic::PARENT_NAME_LEN];
    utf16_until_nul(
        raw.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]])),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a footer as QEMU's `vpc_create()` does, with a valid checksum.
    fn footer_bytes(creator: &[u8; 4], disk_type: u32, size: u64, chs: (u16, u8, u8)) -> Vec<u8> {
        let mut f = vec![0u8; FOOTER_LEN];
        f[..8].copy_from_slice(FOOTER_COOKIE);
        let data_offset = if disk_type == DISK_TYPE_FIXED {
            u64::MAX
        } else {
            FOOTER_LEN as u64
        };
        f[footer::DATA_OFFSET..footer::DATA_OFFSET + 8].copy_from_slice(&data_offset.to_be_bytes());
        f[footer::CREATOR_APP..footer::CREATOR_APP + 4].copy_from_slice(creator);
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[footer::CURRENT_SIZE..footer::CURRENT_SIZE + 8].copy_from_slice(&size.to_be_bytes());
        f[footer::CYLINDERS..footer::CYLINDERS + 2].copy_from_slice(&chs.0.to_be_bytes());
        f[footer::HEADS] = chs.1;
        f[footer::SECTORS_PER_TRACK] = chs.2;
        f[footer::DISK_TYPE..footer::DISK_TYPE + 4].copy_from_slice(&disk_type.to_be_bytes());
        fix_checksum(&mut f);
        f
    }

    fn fix_checksum(f: &mut [u8]) {
        f[footer::CHECKSUM..footer::CHECKSUM + 4].fill(0);
        let sum = f[..FOOTER_LEN]
            .iter()
            .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        f[footer::CHECKSUM..footer::CHECKSUM + 4].copy_from_slice(&(!sum).to_be_bytes());
    }

    /// A fixed VHD of `size` data bytes (all zero) plus its footer.
    fn fixed(creator: &[u8; 4], size: u64, chs: (u16, u8, u8)) -> Vec<u8> {
        let mut d = vec![0u8; size as usize];
        d.extend(footer_bytes(creator, DISK_TYPE_FIXED, size, chs));
        d
    }

    /// A dynamic VHD laid out as `vpc_create()` writes it: footer copy, dynamic header, BAT,
    /// footer.
    fn dynamic(disk_type: u32, size: u64, parent: &str) -> Vec<u8> {
        let block = 2u32 << 20;
        let entries = size.div_ceil(u64::from(block)) as u32;
        let f = footer_bytes(b"qem2", disk_type, size, (0, 0, 0));
        let mut d = f.clone();
        let mut h = vec![0u8; DYNAMIC_HEADER_LEN];
        h[..8].copy_from_slice(DYNAMIC_COOKIE);
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        h[dynamic::TABLE_OFFSET..dynamic::TABLE_OFFSET + 8].copy_from_slice(&1536u64.to_be_bytes());
        h[dynamic::MAX_TABLE_ENTRIES..dynamic::MAX_TABLE_ENTRIES + 4]
            .copy_from_slice(&entries.to_be_bytes());
        h[dynamic::BLOCK_SIZE..dynamic::BLOCK_SIZE + 4].copy_from_slice(&block.to_be_bytes());
        for (i, u) in parent.encode_utf16().enumerate() {
            h[dynamic::PARENT_NAME + 2 * i..dynamic::PARENT_NAME + 2 * i + 2]
                .copy_from_slice(&u.to_be_bytes());
        }
        d.extend(h);
        let bat_len = (entries as usize * 4).next_multiple_of(512);
        d.extend(vec![0xffu8; bat_len]);
        d.extend(f);
        d
    }

    fn describe_bytes(d: &[u8]) -> FormatReport {
        describe(d, &Probe::from_bytes(d)).expect("in-memory reads cannot fail")
    }

    fn checks(r: &FormatReport) -> Vec<Check> {
        r.findings.iter().map(|f| f.check).collect()
    }

    #[test]
    fn detection_distinguishes_header_copy_and_footer_only() {
        let d = fixed(b"qem2", 4096, (0, 0, 0));
        assert_eq!(
            detect(&Probe::from_bytes(&d)),
            Some(VpcDetection::FooterOnly)
        );
        let d = dynamic(DISK_TYPE_DYNAMIC, 4 << 20, "");
        assert_eq!(
            detect(&Probe::from_bytes(&d)),
            Some(VpcDetection::HeaderCopy)
        );
        assert_eq!(detect(&Probe::from_bytes(&[0u8; 4096])), None);
        assert_eq!(
            detect(&Probe::from_bytes(b"conectix")),
            Some(VpcDetection::HeaderCopy)
        );
    }

    #[test]
    fn virtual_size_follows_the_creator_application() {
        // 64 MiB requested: QEMU's CHS geometry rounds it to 67125248 bytes.
        let chs = (1024u16, 16u8, 8u8);
        for (creator, expect) in [
            (b"qemu", 1024u64 * 16 * 8 * 512),
            (b"vpc ", 1024 * 16 * 8 * 512),
            (b"qem2", 4096),
            (b"win ", 4096),
            (b"wa\0\0", 4096),
            (b"abcd", 4096),
        ] {
            let f = VhdFooter::parse(
                footer_bytes(creator, DISK_TYPE_FIXED, 4096, chs)
                    .as_slice()
                    .try_into()
                    .expect("512"),
            );
            assert_eq!(f.virtual_sectors() * 512, expect, "creator {creator:?}");
        }
        // The maximum geometry always means current_size.
        let f = VhdFooter::parse(
            footer_bytes(b"vpc ", DISK_TYPE_FIXED, 4096, (65535, 16, 255))
                .as_slice()
                .try_into()
                .expect("512"),
        );
        assert_eq!(f.virtual_sectors() * 512, 4096);
    }

    #[test]
    fn a_fixed_vhd_is_described_from_its_footer() {
        let d = fixed(b"qem2", 8192, (0, 0, 0));
        let r = describe_bytes(&d);
        assert_eq!(r.virtual_size, Some(8192));
        assert_eq!(r.cluster_size, None);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn a_fixed_vhd_shorter_than_its_size_is_truncated() {
        let mut d = fixed(b"qem2", 8192, (0, 0, 0));
        d.drain(..4096);
        assert_eq!(checks(&describe_bytes(&d)), [Check::Truncated]);
    }

    #[test]
    fn a_footer_only_vhd_must_say_fixed() {
        let mut d = vec![0u8; 4096];
        d.extend(footer_bytes(b"qem2", DISK_TYPE_DYNAMIC, 4096, (0, 0, 0)));
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_eq!(r.virtual_size, None);
    }

    #[test]
    fn a_bad_footer_checksum_is_invalid() {
        let mut d = fixed(b"qem2", 4096, (0, 0, 0));
        let n = d.len();
        d[n - FOOTER_LEN + footer::CURRENT_SIZE] ^= 1;
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert!(r.findings[0].detail.contains("checksum"));
    }

    #[test]
    fn an_oversized_disk_is_invalid() {
        let f = footer_bytes(
            b"qem2",
            DISK_TYPE_FIXED,
            (VHD_MAX_SECTORS + 1) * 512,
            (0, 0, 0),
        );
        let mut d = vec![0u8; 512];
        d.extend(f);
        assert_eq!(checks(&describe_bytes(&d)), [Check::InvalidHeader]);
    }

    #[test]
    fn a_dynamic_vhd_reports_its_block_size() {
        let d = dynamic(DISK_TYPE_DYNAMIC, 64 << 20, "");
        let r = describe_bytes(&d);
        assert_eq!(r.virtual_size, Some(64 << 20));
        assert_eq!(r.cluster_size, Some(2 << 20));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn a_differencing_vhd_names_its_parent_and_is_unsafe() {
        let d = dynamic(DISK_TYPE_DIFFERENCING, 64 << 20, "base.vhd");
        let r = describe_bytes(&d);
        assert_eq!(r.backing_filename.as_deref(), Some("base.vhd"));
        assert_eq!(checks(&r), [Check::BackingFile]);
        let d = dynamic(DISK_TYPE_DIFFERENCING, 64 << 20, "");
        let r = describe_bytes(&d);
        assert_eq!(r.backing_filename, None);
        assert_eq!(checks(&r), [Check::BackingFile]);
    }

    #[test]
    fn dynamic_header_fields_out_of_range_are_invalid() {
        let base = dynamic(DISK_TYPE_DYNAMIC, 64 << 20, "");
        let patch = |off: usize, val: &[u8]| {
            let mut d = base.clone();
            d[512 + off..512 + off + val.len()].copy_from_slice(val);
            describe_bytes(&d)
        };
        // Bad cookie, block size not a power of two, too small, BAT too small for the disk.
        assert_eq!(checks(&patch(0, b"xxsparse")), [Check::InvalidHeader]);
        assert_eq!(
            checks(&patch(dynamic::BLOCK_SIZE, &3000u32.to_be_bytes())),
            [Check::InvalidHeader]
        );
        assert_eq!(
            checks(&patch(dynamic::BLOCK_SIZE, &256u32.to_be_bytes())),
            [Check::InvalidHeader]
        );
        assert_eq!(
            checks(&patch(dynamic::MAX_TABLE_ENTRIES, &1u32.to_be_bytes())),
            [Check::InvalidHeader]
        );
        // A BAT past the end of the file, and a block past the end of the file.
        assert_eq!(
            checks(&patch(dynamic::TABLE_OFFSET, &(1u64 << 40).to_be_bytes())),
            [Check::Truncated]
        );
        let mut d = base.clone();
        d[1536..1540].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(checks(&describe_bytes(&d)), [Check::Truncated]);
    }

    #[test]
    fn a_dynamic_header_past_the_end_is_truncated() {
        let d = dynamic(DISK_TYPE_DYNAMIC, 64 << 20, "");
        for cut in [100, 511, 512, 700, 1535] {
            let r = describe_bytes(&d[..cut]);
            assert_eq!(checks(&r), [Check::Truncated], "cut at {cut}");
            assert_eq!(r.virtual_size, None);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in [0usize, 1, 8, 511, 512, 513, 1024, 2048, 4096] {
            for _ in 0..50 {
                let mut d: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                if len >= 8 {
                    d[..8].copy_from_slice(FOOTER_COOKIE);
                }
                let _ = describe_bytes(&d);
            }
        }
    }
}
