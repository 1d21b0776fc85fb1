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
//!
//! # One decoder per structure
//!
//! This module is the only place that knows VHD byte offsets: [`footer`] and [`dynamic`] name
//! every field of the two headers (offset and size as the spec's tables give them), and
//! [`VhdFooter::parse`], [`DynamicHeader::parse`] and [`bat`] decode them. Two policies
//! validate what they decode, side by side:
//! - [`describe`] (for `info`, and through it `check`'s open refusal and `convert`'s safety
//!   gate) applies `vpc_open()`'s checks and reports each broken one as a [`crate::safety::Finding`] with its
//!   rule id ([`RULES`]);
//! - [`reader`] (for `convert`) relies on those and adds only the bounds a guest read needs
//!   (a cap on the block size and on the BAT held in memory), then maps guest offsets through
//!   the BAT.
//!
//! A VHD encoder writes through the same [`Field`]s and [`checksum`].

pub mod reader;
pub mod writer;

use std::io;

use super::bytes::{be16, be32, be64};
use super::{FormatReport, Probe, read_failure_with, utf16_until_nul};
use crate::safety::{Check, Rule};
use crate::source::{ReadAt, read_exact_at, read_vec_at};

/// No footer cookie at the start or in the last 512 bytes (only when the format is forced).
pub const NO_FOOTER: Rule = Rule::error(
    "vpc.no-footer",
    Check::InvalidHeader,
    "There is no VHD footer (cookie `conectix`) at offset 0 or in the last 512 bytes.",
);
/// The footer copy at offset 0 is cut short by the end of the file.
pub const FOOTER_TRUNCATED: Rule = Rule::error(
    "vpc.footer-truncated",
    Check::Truncated,
    "The footer copy at offset 0 (512 bytes) runs past the end of the file.",
);
/// A footer found only at the end says something other than "fixed".
pub const FOOTER_ONLY_NOT_FIXED: Rule = Rule::error(
    "vpc.footer-only-not-fixed",
    Check::InvalidHeader,
    "The footer is only at the end of the file but its disk type is not 2 (fixed).",
);
/// QEMU's "Incorrect header checksum".
pub const FOOTER_CHECKSUM: Rule = Rule::error(
    "vpc.footer-checksum",
    Check::InvalidHeader,
    "The footer checksum does not match the footer's bytes (QEMU: \"Incorrect header checksum\").",
);
/// A disk type other than fixed, dynamic or differencing.
pub const DISK_TYPE: Rule = Rule::error(
    "vpc.disk-type",
    Check::InvalidHeader,
    "The footer's disk type is not 2 (fixed), 3 (dynamic) or 4 (differencing).",
);
/// QEMU's `VHD_MAX_SECTORS` (`-EFBIG`).
pub const DISK_TOO_LARGE: Rule = Rule::error(
    "vpc.disk-too-large",
    Check::InvalidHeader,
    "The disk size (CHS geometry or `current_size`, by creator) exceeds QEMU's 2040 GiB limit.",
);
/// A fixed disk whose data before the footer is shorter than its size.
pub const FIXED_DATA_TRUNCATED: Rule = Rule::error(
    "vpc.fixed-data-truncated",
    Check::Truncated,
    "A fixed VHD holds fewer bytes before its footer than its virtual size.",
);
/// The dynamic disk header is cut short by the end of the file.
pub const DYNAMIC_HEADER_PAST_EOF: Rule = Rule::error(
    "vpc.dynamic-header-past-eof",
    Check::Truncated,
    "The dynamic disk header (1024 bytes at the footer's `data_offset`) runs past the end of the file.",
);
/// The dynamic disk header's cookie is wrong.
pub const DYNAMIC_COOKIE_MISMATCH: Rule = Rule::error(
    "vpc.dynamic-cookie",
    Check::InvalidHeader,
    "The dynamic disk header does not start with `cxsparse`.",
);
/// QEMU's "Invalid block size".
pub const BLOCK_SIZE: Rule = Rule::error(
    "vpc.block-size",
    Check::InvalidHeader,
    "The block size is not a power of two of at least 512 bytes.",
);
/// The BAT has fewer entries than the disk has blocks.
pub const BAT_TOO_SMALL: Rule = Rule::error(
    "vpc.bat-too-small",
    Check::InvalidHeader,
    "The BAT's `max_table_entries` blocks do not cover the virtual size.",
);
/// QEMU's "Max Table Entries too large".
pub const BAT_ENTRIES_LIMIT: Rule = Rule::error(
    "vpc.bat-entries-limit",
    Check::InvalidHeader,
    "`max_table_entries` exceeds QEMU's limit of `INT_MAX / 4`.",
);
/// A differencing disk reads unallocated blocks from a parent file.
pub const DIFFERENCING: Rule = Rule::error(
    "vpc.differencing",
    Check::BackingFile,
    "The VHD is a differencing disk (type 4): its unallocated blocks come from a parent image.",
);
/// QEMU's truncation check on the BAT itself.
pub const BAT_PAST_EOF: Rule = Rule::error(
    "vpc.bat-past-eof",
    Check::Truncated,
    "The BAT runs past the end of the file.",
);
/// QEMU's truncation check on every allocated block.
pub const BAT_ENTRY_PAST_EOF: Rule = Rule::error(
    "vpc.bat-entry-past-eof",
    Check::Truncated,
    "A BAT entry points at a block (sector bitmap and data) that runs past the end of the file.",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    NO_FOOTER,
    FOOTER_TRUNCATED,
    FOOTER_ONLY_NOT_FIXED,
    FOOTER_CHECKSUM,
    DISK_TYPE,
    DISK_TOO_LARGE,
    FIXED_DATA_TRUNCATED,
    DYNAMIC_HEADER_PAST_EOF,
    DYNAMIC_COOKIE_MISMATCH,
    BLOCK_SIZE,
    BAT_TOO_SMALL,
    BAT_ENTRIES_LIMIT,
    DIFFERENCING,
    BAT_PAST_EOF,
    BAT_ENTRY_PAST_EOF,
];

/// A field of an on-disk structure: where it is and how long it is (big-endian, as every
/// VHD field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the structure.
    pub offset: usize,
    /// Size in bytes.
    pub len: usize,
}

impl Field {
    const fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// The bytes of the field within its structure.
    pub const fn range(self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The "Hard Disk Footer Format" table of the spec: 512 bytes, big-endian, at the end of
/// every VHD and (for dynamic and differencing disks) copied at offset 0.
pub mod footer {
    use super::Field;

    /// Size of the footer (the spec's "512 bytes"; `vpc_create()` writes 512).
    pub const LEN: usize = 512;
    /// Cookie: `conectix`. QEMU probes for it at offset 0 only; `vpc_open()` falls back to
    /// the last 512 bytes when offset 0 lacks it.
    pub const COOKIE: Field = Field::new(0, 8);
    /// Features: 0x2 (the reserved bit, always set). Not checked by QEMU.
    pub const FEATURES: Field = Field::new(8, 4);
    /// File Format Version: 0x00010000. Not checked by QEMU.
    pub const FILE_FORMAT_VERSION: Field = Field::new(12, 4);
    /// Data Offset: absolute offset of the dynamic disk header; all ones for a fixed disk.
    /// QEMU follows it for non-fixed disks without range checks beyond the read itself.
    pub const DATA_OFFSET: Field = Field::new(16, 8);
    /// Time Stamp: seconds since 2000-01-01 00:00:00 UTC.
    pub const TIME_STAMP: Field = Field::new(24, 4);
    /// Creator Application (`vpc `, `qemu`, `qem2`, `win `, ...): decides between the CHS
    /// geometry and `current_size` for the virtual size (`vpc_ignore_current_size()`).
    pub const CREATOR_APPLICATION: Field = Field::new(28, 4);
    /// Creator Version.
    pub const CREATOR_VERSION: Field = Field::new(32, 4);
    /// Creator Host OS (`Wi2k`, `Mac `).
    pub const CREATOR_HOST_OS: Field = Field::new(36, 4);
    /// Original Size: the disk size in bytes at creation.
    pub const ORIGINAL_SIZE: Field = Field::new(40, 8);
    /// Current Size: the disk size in bytes, as of the last resize. QEMU refuses more than
    /// [`super::VHD_MAX_SECTORS`] sectors.
    pub const CURRENT_SIZE: Field = Field::new(48, 8);
    /// Disk Geometry, cylinders (the first 2 bytes of the 4-byte geometry field).
    pub const CYLINDERS: Field = Field::new(56, 2);
    /// Disk Geometry, heads.
    pub const HEADS: Field = Field::new(58, 1);
    /// Disk Geometry, sectors per track (cylinder).
    pub const SECTORS_PER_TRACK: Field = Field::new(59, 1);
    /// Disk Type: 2 fixed, 3 dynamic, 4 differencing (0, 1, 5, 6 are deprecated or
    /// reserved). QEMU opens 2, 3 and 4.
    pub const DISK_TYPE: Field = Field::new(60, 4);
    /// Checksum: one's complement of the byte sum of the footer without this field
    /// ([`super::checksum`]). QEMU refuses a mismatch ("Incorrect header checksum").
    pub const CHECKSUM: Field = Field::new(64, 4);
    /// Unique Id: a UUID identifying the disk (a differencing child records its parent's).
    pub const UNIQUE_ID: Field = Field::new(68, 16);
    /// Saved State: 1 when the disk is in a saved state.
    pub const SAVED_STATE: Field = Field::new(84, 1);
}

/// The "Dynamic Disk Header Format" table of the spec: 1024 bytes, big-endian, at the
/// footer's `data_offset`.
pub mod dynamic {
    use super::Field;

    /// Size of the header.
    pub const LEN: usize = 1024;
    /// Cookie: `cxsparse`. QEMU refuses anything else (`-EINVAL`).
    pub const COOKIE: Field = Field::new(0, 8);
    /// Data Offset: unused, all ones.
    pub const DATA_OFFSET: Field = Field::new(8, 8);
    /// Table Offset: absolute offset of the BAT. QEMU checks that the BAT lies inside the
    /// file.
    pub const TABLE_OFFSET: Field = Field::new(16, 8);
    /// Header Version: 0x00010000. Not checked by QEMU.
    pub const HEADER_VERSION: Field = Field::new(24, 4);
    /// Max Table Entries: the BAT's entry count. QEMU refuses more than `INT_MAX / 4` and
    /// fewer than the disk's blocks.
    pub const MAX_TABLE_ENTRIES: Field = Field::new(28, 4);
    /// Block Size: bytes of guest data per block (2 MiB by default). QEMU needs a power of
    /// two of at least 512.
    pub const BLOCK_SIZE: Field = Field::new(32, 4);
    /// Checksum of the header, computed as the footer's. Not checked by QEMU.
    pub const CHECKSUM: Field = Field::new(36, 4);
    /// Parent Unique ID: the parent's footer `unique_id` (differencing disks).
    pub const PARENT_UNIQUE_ID: Field = Field::new(40, 16);
    /// Parent Time Stamp.
    pub const PARENT_TIME_STAMP: Field = Field::new(56, 4);
    /// Parent Unicode Name: UTF-16 big-endian, NUL-padded.
    pub const PARENT_UNICODE_NAME: Field = Field::new(64, 512);
    /// Parent Locator Entries: 8 entries of 24 bytes.
    pub const PARENT_LOCATOR_ENTRIES: Field = Field::new(576, 192);
}

/// The "Block Allocation Table" section of the spec: one big-endian u32 per block, at the
/// dynamic header's `table_offset`, the sector of the block's bitmap or [`bat::UNALLOCATED`].
/// An allocated block is its sector bitmap ([`bat::bitmap_size`] bytes) followed by `block_size`
/// bytes of data.
pub mod bat {
    use super::{SECTOR, be32};

    /// Size of one entry.
    pub const ENTRY_LEN: usize = 4;
    /// The entry of a block that is not allocated (reads as zeros, or from the parent).
    pub const UNALLOCATED: u32 = 0xffff_ffff;

    /// The entries in `raw` (whole entries only).
    pub fn entries(raw: &[u8]) -> impl Iterator<Item = u32> + '_ {
        raw.chunks_exact(ENTRY_LEN).map(|e| be32(e, 0))
    }

    /// `bitmap_size` in `vpc_open()`: one bit per sector of the block, rounded up to whole
    /// sectors.
    pub fn bitmap_size(block_size: u64) -> u64 {
        (block_size / (8 * SECTOR)).next_multiple_of(SECTOR)
    }

    /// Where an allocated block (its bitmap) starts in the file; `None` when unallocated.
    pub fn block_start(entry: u32) -> Option<u64> {
        (entry != UNALLOCATED).then(|| u64::from(entry) * SECTOR)
    }
}

/// Size of the footer, and of its copy at offset 0.
pub const FOOTER_LEN: usize = footer::LEN;
/// Size of the dynamic disk header (`VHDDynDiskHeader`).
pub const DYNAMIC_HEADER_LEN: usize = dynamic::LEN;
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
pub const MAX_TABLE_ENTRIES: u64 = (i32::MAX / 4) as u64;
/// The largest BAT this parser reads to find blocks past the end of the file: 4 MiB is the BAT
/// of a 2040 GiB disk (QEMU's maximum) with the default 2 MiB blocks. Larger tables are only
/// range-checked, so `info` stays bounded.
const MAX_BAT_SCAN_BYTES: u64 = 4 << 20;
/// Chunk size of the BAT scan.
const BAT_SCAN_CHUNK: usize = 64 * 1024;
/// A BAT entry for a block that is not allocated.
pub const BAT_UNALLOCATED: u32 = bat::UNALLOCATED;
/// VHD sector size.
pub const SECTOR: u64 = 512;

/// One's complement of the byte sum of `bytes` with the checksum field taken as zero: the
/// spec's checksum of the footer and of the dynamic header.
pub fn checksum(bytes: &[u8], field: Field) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !field.range().contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
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
        creator_app.copy_from_slice(&bytes[footer::CREATOR_APPLICATION.range()]);
        Self {
            data_offset: be64(bytes, footer::DATA_OFFSET.offset),
            creator_app,
            current_size: be64(bytes, footer::CURRENT_SIZE.offset),
            cylinders: be16(bytes, footer::CYLINDERS.offset),
            heads: bytes[footer::HEADS.offset],
            sectors_per_track: bytes[footer::SECTORS_PER_TRACK.offset],
            disk_type: be32(bytes, footer::DISK_TYPE.offset),
            checksum: be32(bytes, footer::CHECKSUM.offset),
            computed_checksum: checksum(bytes, footer::CHECKSUM),
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

/// The fields of a dynamic disk header that QEMU reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Bytes of guest data per block.
    pub block_size: u32,
    /// The parent's unique id (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// The parent's file name, decoded from UTF-16 big-endian up to the first NUL.
    pub parent_name: String,
}

impl DynamicHeader {
    /// Decodes a 1024-byte dynamic disk header; `None` when it does not start with the
    /// `cxsparse` cookie.
    pub fn parse(bytes: &[u8; DYNAMIC_HEADER_LEN]) -> Option<Self> {
        if !bytes.starts_with(DYNAMIC_COOKIE) {
            return None;
        }
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(&bytes[dynamic::PARENT_UNIQUE_ID.range()]);
        let name = &bytes[dynamic::PARENT_UNICODE_NAME.range()];
        Some(Self {
            table_offset: be64(bytes, dynamic::TABLE_OFFSET.offset),
            max_table_entries: be32(bytes, dynamic::MAX_TABLE_ENTRIES.offset),
            block_size: be32(bytes, dynamic::BLOCK_SIZE.offset),
            parent_unique_id,
            parent_name: utf16_until_nul(
                name.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]])),
            ),
        })
    }
}

/// What [`decode`] found, kept so that a guest reader can start from it instead of decoding
/// the headers again ([`reader::open_decoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdLayout {
    /// Where the footer was found.
    pub detection: VpcDetection,
    /// The footer (the copy at offset 0 when there is one).
    pub footer: VhdFooter,
    /// The dynamic disk header, when the footer points at one and it was decoded.
    pub dynamic: Option<DynamicHeader>,
}

/// Describes the image as `qemu-img info -f vpc` would. A fixed VHD (footer only) is
/// described too, although QEMU's probe would call it raw.
pub fn describe<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    decode(src, probe).map(|(report, _)| report)
}

/// [`describe`], also returning the decoded headers (`None` when the footer could not be
/// read).
pub fn decode<S: ReadAt + ?Sized>(
    src: &S,
    probe: &Probe,
) -> io::Result<(FormatReport, Option<VhdLayout>)> {
    let Some(kind) = detect(probe) else {
        let report = FormatReport {
            findings: vec![NO_FOOTER.finding(
                "there is no VHD footer (cookie \"conectix\") at the start or in the last 512 bytes",
            )],
            ..FormatReport::default()
        };
        return Ok((report, None));
    };
    let bytes = match kind {
        VpcDetection::HeaderCopy => probe.head_bytes(0, FOOTER_LEN),
        VpcDetection::FooterOnly => Some(probe.tail.as_slice()),
    };
    let Some(bytes) = bytes.and_then(|b| <&[u8; FOOTER_LEN]>::try_from(b).ok()) else {
        let report = FormatReport {
            findings: vec![FOOTER_TRUNCATED.finding(format!(
                "the VHD footer copy (512 bytes at offset 0) runs past the end of the file ({} bytes)",
                probe.len
            ))],
            ..FormatReport::default()
        };
        return Ok((report, None));
    };
    let footer = VhdFooter::parse(bytes);
    let mut report = FormatReport::default();
    let mut layout = VhdLayout {
        detection: kind,
        footer: footer.clone(),
        dynamic: None,
    };

    if kind == VpcDetection::FooterOnly && footer.disk_type != DISK_TYPE_FIXED {
        report.findings.push(FOOTER_ONLY_NOT_FIXED.finding(format!(
            "the VHD footer is only at the end of the file but its disk type is {}, not 2 (fixed)",
            footer.disk_type
        )));
        return Ok((report, Some(layout)));
    }
    if !footer.checksum_ok() {
        report.findings.push(FOOTER_CHECKSUM.finding(format!(
            "the VHD footer checksum is {:#010x} but the footer sums to {:#010x}",
            footer.checksum, footer.computed_checksum
        )));
        return Ok((report, Some(layout)));
    }
    if !matches!(
        footer.disk_type,
        DISK_TYPE_FIXED | DISK_TYPE_DYNAMIC | DISK_TYPE_DIFFERENCING
    ) {
        report.findings.push(DISK_TYPE.finding(format!(
            "the VHD disk type is {}, not 2 (fixed), 3 (dynamic) or 4 (differencing)",
            footer.disk_type
        )));
    }
    let sectors = footer.virtual_sectors();
    // The one computation of a VHD's virtual size, shared with the converter's reader.
    let Some(virtual_size) = footer.virtual_size() else {
        report.findings.push(DISK_TOO_LARGE.finding(format!(
            "the VHD disk size ({} bytes, by {}) exceeds the 2040 GiB limit",
            sectors * SECTOR,
            if footer.uses_chs_geometry() && sectors != VHD_MAX_GEOMETRY {
                format!("the CHS geometry of creator {:?}", footer.creator())
            } else {
                "current_size".to_string()
            }
        )));
        return Ok((report, Some(layout)));
    };

    match kind {
        VpcDetection::FooterOnly => {
            report.virtual_size = Some(virtual_size);
            let data_len = probe.len - FOOTER_LEN as u64;
            if data_len < virtual_size {
                report.findings.push(FIXED_DATA_TRUNCATED.finding(format!(
                    "the fixed VHD holds {data_len} bytes of disk data before its footer, less than its {virtual_size}-byte virtual size"
                )));
            }
        }
        VpcDetection::HeaderCopy => {
            layout.dynamic = describe_dynamic(src, &footer, sectors, &mut report)?;
        }
    }
    Ok((report, Some(layout)))
}

/// The dynamic disk header and BAT checks of `vpc_open()`, plus the parent of a differencing
/// disk (reported, never opened; QEMU's driver ignores it and reads unallocated blocks as
/// zeros). Returns the header when its cookie is right.
fn describe_dynamic<S: ReadAt + ?Sized>(
    src: &S,
    footer: &VhdFooter,
    sectors: u64,
    report: &mut FormatReport,
) -> io::Result<Option<DynamicHeader>> {
    let mut bytes = [0u8; DYNAMIC_HEADER_LEN];
    if let Err(e) = read_exact_at(src, &mut bytes, footer.data_offset) {
        report.findings.push(read_failure_with(
            DYNAMIC_HEADER_PAST_EOF,
            e,
            "VHD dynamic disk header",
        )?);
        return Ok(None);
    }
    let Some(header) = DynamicHeader::parse(&bytes) else {
        report
            .findings
            .push(DYNAMIC_COOKIE_MISMATCH.finding(format!(
                "the VHD dynamic disk header at offset {:#x} does not start with \"cxsparse\"",
                footer.data_offset
            )));
        return Ok(None);
    };
    let block_size = header.block_size;
    if !block_size.is_power_of_two() || u64::from(block_size) < SECTOR {
        report.findings.push(BLOCK_SIZE.finding(format!(
            "the VHD block size is {block_size}, not a power of two of at least 512"
        )));
        return Ok(Some(header));
    }
    let block_size = u64::from(block_size);
    let max_table_entries = u64::from(header.max_table_entries);
    let virtual_size = sectors * SECTOR;
    // QEMU's "Image too large" (more blocks than a u32 BAT index) cannot happen here:
    // `VHD_MAX_SECTORS` sectors of 512 bytes make fewer than 2^32 blocks of 512 bytes or more.
    if max_table_entries * block_size < virtual_size {
        report.findings.push(BAT_TOO_SMALL.finding(format!(
            "the VHD BAT has {max_table_entries} entries of {block_size} bytes, too few for the {virtual_size}-byte disk"
        )));
        return Ok(Some(header));
    }
    if max_table_entries > MAX_TABLE_ENTRIES {
        report.findings.push(BAT_ENTRIES_LIMIT.finding(format!(
            "the VHD BAT has {max_table_entries} entries, more than QEMU's limit of {MAX_TABLE_ENTRIES}"
        )));
        return Ok(Some(header));
    }

    report.virtual_size = Some(virtual_size);
    // `vpc_co_get_info()` reports the block size unless the footer says fixed.
    if footer.disk_type != DISK_TYPE_FIXED {
        report.cluster_size = Some(block_size);
    }
    if footer.disk_type == DISK_TYPE_DIFFERENCING {
        let parent = header.parent_name.clone();
        let detail = if parent.is_empty() {
            format!(
                "the VHD is a differencing disk whose parent (UUID {}) supplies unallocated blocks",
                hex(&header.parent_unique_id)
            )
        } else {
            format!(
                "the VHD is a differencing disk that reads unallocated blocks from the parent {parent:?}"
            )
        };
        report.findings.push(DIFFERENCING.finding(detail));
        if !parent.is_empty() {
            report.backing_filename = Some(parent);
        }
    }
    check_bat(
        src,
        header.table_offset,
        max_table_entries,
        block_size,
        report,
    )?;
    Ok(Some(header))
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
    let bat_len = entries * bat::ENTRY_LEN as u64;
    let bat_end = bat_offset.checked_add(bat_len);
    if bat_end.is_none_or(|end| end > file_len) {
        report.findings.push(BAT_PAST_EOF.finding(format!(
            "the VHD BAT ({bat_len} bytes at offset {bat_offset:#x}) runs past the end of the file ({file_len} bytes)"
        )));
        return Ok(());
    }
    if bat_len > MAX_BAT_SCAN_BYTES {
        return Ok(());
    }
    let bitmap_size = bat::bitmap_size(block_size);
    let mut index = 0u64;
    let mut offset = bat_offset;
    let mut remaining = bat_len;
    while remaining > 0 {
        let n = remaining.min(BAT_SCAN_CHUNK as u64) as usize;
        let chunk = match read_vec_at(src, offset, n) {
            Ok(c) => c,
            Err(e) => {
                report
                    .findings
                    .push(read_failure_with(BAT_PAST_EOF, e, "VHD BAT")?);
                return Ok(());
            }
        };
        for entry in bat::entries(&chunk) {
            if let Some(start) = bat::block_start(entry) {
                let end = start + bitmap_size + block_size;
                if end > file_len {
                    report.findings.push(BAT_ENTRY_PAST_EOF.finding(format!(
                        "VHD block {index} (bitmap and data at offset {start:#x}, {} bytes) runs past the end of the file ({file_len} bytes)",
                        bitmap_size + block_size
                    )));
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

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// Writes a footer as QEMU's `vpc_create()` does, with a valid checksum.
    fn footer_bytes(creator: &[u8; 4], disk_type: u32, size: u64, chs: (u16, u8, u8)) -> Vec<u8> {
        let mut f = vec![0u8; FOOTER_LEN];
        f[footer::COOKIE.range()].copy_from_slice(FOOTER_COOKIE);
        let data_offset = if disk_type == DISK_TYPE_FIXED {
            u64::MAX
        } else {
            FOOTER_LEN as u64
        };
        f[footer::DATA_OFFSET.range()].copy_from_slice(&data_offset.to_be_bytes());
        f[footer::CREATOR_APPLICATION.range()].copy_from_slice(creator);
        f[footer::ORIGINAL_SIZE.range()].copy_from_slice(&size.to_be_bytes());
        f[footer::CURRENT_SIZE.range()].copy_from_slice(&size.to_be_bytes());
        f[footer::CYLINDERS.range()].copy_from_slice(&chs.0.to_be_bytes());
        f[footer::HEADS.offset] = chs.1;
        f[footer::SECTORS_PER_TRACK.offset] = chs.2;
        f[footer::DISK_TYPE.range()].copy_from_slice(&disk_type.to_be_bytes());
        fix_checksum(&mut f);
        f
    }

    fn fix_checksum(f: &mut [u8]) {
        let sum = checksum(&f[..FOOTER_LEN], footer::CHECKSUM);
        f[footer::CHECKSUM.range()].copy_from_slice(&sum.to_be_bytes());
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
        h[dynamic::COOKIE.range()].copy_from_slice(DYNAMIC_COOKIE);
        h[dynamic::DATA_OFFSET.range()].copy_from_slice(&u64::MAX.to_be_bytes());
        h[dynamic::TABLE_OFFSET.range()].copy_from_slice(&1536u64.to_be_bytes());
        h[dynamic::MAX_TABLE_ENTRIES.range()].copy_from_slice(&entries.to_be_bytes());
        h[dynamic::BLOCK_SIZE.range()].copy_from_slice(&block.to_be_bytes());
        let name = dynamic::PARENT_UNICODE_NAME.offset;
        for (i, u) in parent.encode_utf16().enumerate() {
            h[name + 2 * i..name + 2 * i + 2].copy_from_slice(&u.to_be_bytes());
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
    fn the_field_tables_follow_the_spec() {
        // The last field of each table ends where the spec's reserved bytes begin.
        assert_eq!(footer::SAVED_STATE.range().end, 85);
        assert_eq!(dynamic::PARENT_LOCATOR_ENTRIES.range().end, 768);
        assert!(footer::CHECKSUM.range().end <= footer::LEN);
        assert_eq!(footer::COOKIE.len, FOOTER_COOKIE.len());
        assert_eq!(dynamic::COOKIE.len, DYNAMIC_COOKIE.len());
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
    fn content_without_a_footer_described_as_vhd_has_no_footer() {
        let r = describe_bytes(&[0u8; 4096]);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.no-footer");
    }

    #[test]
    fn a_footer_copy_cut_by_the_end_of_the_file_is_truncated() {
        let r = describe_bytes(b"conectix and less than 512 bytes");
        assert_eq!(checks(&r), [Check::Truncated]);
        assert_fires(&r.findings, "vpc.footer-truncated");
    }

    #[test]
    fn a_fixed_vhd_shorter_than_its_size_is_truncated() {
        let mut d = fixed(b"qem2", 8192, (0, 0, 0));
        d.drain(..4096);
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::Truncated]);
        assert_fires(&r.findings, "vpc.fixed-data-truncated");
    }

    #[test]
    fn a_footer_only_vhd_must_say_fixed() {
        let mut d = vec![0u8; 4096];
        d.extend(footer_bytes(b"qem2", DISK_TYPE_DYNAMIC, 4096, (0, 0, 0)));
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.footer-only-not-fixed");
        assert_eq!(r.virtual_size, None);
    }

    #[test]
    fn a_bad_footer_checksum_is_invalid() {
        let mut d = fixed(b"qem2", 4096, (0, 0, 0));
        let n = d.len();
        d[n - FOOTER_LEN + footer::CURRENT_SIZE.offset] ^= 1;
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.footer-checksum");
        assert!(r.findings[0].detail.contains("checksum"));
    }

    #[test]
    fn an_unknown_disk_type_is_invalid() {
        let d = dynamic(5, 4 << 20, "");
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.disk-type");
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
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.disk-too-large");
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
    fn decoding_keeps_the_headers_a_reader_needs() {
        let d = dynamic(DISK_TYPE_DYNAMIC, 64 << 20, "");
        let (_, layout) = decode(d.as_slice(), &Probe::from_bytes(&d)).unwrap();
        let layout = layout.expect("a footer");
        assert_eq!(layout.detection, VpcDetection::HeaderCopy);
        let header = layout.dynamic.expect("a dynamic header");
        assert_eq!(header.table_offset, 1536);
        assert_eq!(header.max_table_entries, 32);
        assert_eq!(header.block_size, 2 << 20);
    }

    #[test]
    fn a_differencing_vhd_names_its_parent_and_is_unsafe() {
        let d = dynamic(DISK_TYPE_DIFFERENCING, 64 << 20, "base.vhd");
        let r = describe_bytes(&d);
        assert_eq!(r.backing_filename.as_deref(), Some("base.vhd"));
        assert_eq!(checks(&r), [Check::BackingFile]);
        assert_fires(&r.findings, "vpc.differencing");
        let d = dynamic(DISK_TYPE_DIFFERENCING, 64 << 20, "");
        let r = describe_bytes(&d);
        assert_eq!(r.backing_filename, None);
        assert_eq!(checks(&r), [Check::BackingFile]);
    }

    #[test]
    fn dynamic_header_fields_out_of_range_are_invalid() {
        let base = dynamic(DISK_TYPE_DYNAMIC, 64 << 20, "");
        let patch = |field: Field, val: &[u8]| {
            let mut d = base.clone();
            d[512 + field.offset..512 + field.offset + val.len()].copy_from_slice(val);
            describe_bytes(&d)
        };
        let r = patch(dynamic::COOKIE, b"xxsparse");
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.dynamic-cookie");
        for size in [3000u32, 256] {
            let r = patch(dynamic::BLOCK_SIZE, &size.to_be_bytes());
            assert_eq!(checks(&r), [Check::InvalidHeader]);
            assert_fires(&r.findings, "vpc.block-size");
        }
        let r = patch(dynamic::MAX_TABLE_ENTRIES, &1u32.to_be_bytes());
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.bat-too-small");
        let r = patch(dynamic::MAX_TABLE_ENTRIES, &0x2000_0000u32.to_be_bytes());
        assert_eq!(checks(&r), [Check::InvalidHeader]);
        assert_fires(&r.findings, "vpc.bat-entries-limit");
        // A BAT past the end of the file, and a block past the end of the file.
        let r = patch(dynamic::TABLE_OFFSET, &(1u64 << 40).to_be_bytes());
        assert_eq!(checks(&r), [Check::Truncated]);
        assert_fires(&r.findings, "vpc.bat-past-eof");
        let mut d = base.clone();
        d[1536..1540].copy_from_slice(&100u32.to_be_bytes());
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::Truncated]);
        assert_fires(&r.findings, "vpc.bat-entry-past-eof");
    }

    #[test]
    fn a_dynamic_header_past_the_end_is_truncated() {
        let d = dynamic(DISK_TYPE_DYNAMIC, 64 << 20, "");
        for cut in [100, 511, 512, 700, 1535] {
            let r = describe_bytes(&d[..cut]);
            assert_eq!(checks(&r), [Check::Truncated], "cut at {cut}");
            assert_eq!(r.virtual_size, None);
            if cut >= 512 {
                assert_fires(&r.findings, "vpc.dynamic-header-past-eof");
            }
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
