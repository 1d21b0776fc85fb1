//! VHDX images: Microsoft's "VHDX Format Specification" v1.00, read the way QEMU's
//! `block/vhdx.c` opens them.
//!
//! The first megabyte is the header section: a file identifier (`vhdxfile`) at 0, two headers
//! at 64 KiB and 128 KiB (the valid one with the higher sequence number is current; each has a
//! CRC-32C over its 4 KiB), and the region table at 192 KiB (CRC-32C over 64 KiB) locating the
//! block allocation table (BAT) and the metadata region. The metadata table names the file
//! parameters (block size, fixed/dynamic, has-parent), the virtual disk size, and the sector
//! sizes. A differencing disk adds a parent locator naming its parent: it is reported as a
//! backing file and never opened (QEMU refuses differencing VHDX files).
//!
//! Every table is read with its specification limit: 64 KiB for the region and metadata
//! tables, 1 MiB for a metadata item, and the BAT scan is capped (`MAX_BAT_SCAN_BYTES`).

pub mod reader;

use std::io;

pub mod writer;

use super::bytes::{le16, le32, le64};
use super::{FormatReport, Probe, read_failure_with, utf16_until_nul};
use crate::safety::{Check, Rule};
use crate::source::{ReadAt, read_exact_at, read_vec_at};

const FILE_IDENTIFIER: Rule = Rule::error(
    "vhdx.file-identifier",
    Check::InvalidHeader,
    "the file does not start with the VHDX file identifier `vhdxfile` (spec 2.2.1)",
);
const HEADER_SEQUENCE_CONFLICT: Rule = Rule::error(
    "vhdx.header-sequence-conflict",
    Check::InvalidHeader,
    "the two valid headers have the same sequence number but differ, so neither is current (spec 2.2.2)",
);
const NO_VALID_HEADER: Rule = Rule::error(
    "vhdx.no-valid-header",
    Check::InvalidHeader,
    "neither header at 64 KiB or 128 KiB has the `head` signature, version 1 and a matching CRC-32C",
);
const ACTIVE_LOG: Rule = Rule::warning(
    "vhdx.active-log",
    Check::DirtyBit,
    "the current header names a log (non-zero LogGuid): the image was not closed cleanly and the log may need replaying",
);
const REGION_TABLE_CHECKSUM: Rule = Rule::error(
    "vhdx.region-table-checksum",
    Check::InvalidHeader,
    "the CRC-32C of the 64 KiB region table at 192 KiB does not match its checksum field (spec 2.2.3)",
);
const REGION_TABLE_SIGNATURE: Rule = Rule::error(
    "vhdx.region-table-signature",
    Check::InvalidHeader,
    "the region table does not start with `regi`",
);
const REGION_TABLE_ENTRY_COUNT: Rule = Rule::error(
    "vhdx.region-table-entry-count",
    Check::InvalidHeader,
    "the region table counts more than the 2047 entries the specification allows",
);
const REGION_OVERLAP: Rule = Rule::error(
    "vhdx.region-overlap",
    Check::InvalidHeader,
    "a region overlaps the log or an earlier region (QEMU's `vhdx_region_check()`)",
);
const UNKNOWN_REQUIRED_REGION: Rule = Rule::error(
    "vhdx.unknown-required-region",
    Check::InvalidHeader,
    "a region of an unknown kind is marked required",
);
const DUPLICATE_REGION: Rule = Rule::error(
    "vhdx.duplicate-region",
    Check::InvalidHeader,
    "the region table lists the BAT or the metadata region twice",
);
const MISSING_REGION: Rule = Rule::error(
    "vhdx.missing-region",
    Check::InvalidHeader,
    "the region table lacks the BAT or the metadata region",
);
const REGION_PAST_EOF: Rule = Rule::error(
    "vhdx.region-past-eof",
    Check::Truncated,
    "the BAT or the metadata region runs past the end of the file",
);
const METADATA_REGION_SIZE: Rule = Rule::error(
    "vhdx.metadata-region-size",
    Check::InvalidHeader,
    "the metadata region is smaller than its 64 KiB table",
);
const METADATA_TABLE_SIGNATURE: Rule = Rule::error(
    "vhdx.metadata-table-signature",
    Check::InvalidHeader,
    "the metadata table does not start with `metadata`",
);
const METADATA_ENTRY_COUNT: Rule = Rule::error(
    "vhdx.metadata-entry-count",
    Check::InvalidHeader,
    "the metadata table counts more entries than fit in its 64 KiB",
);
const DUPLICATE_METADATA_ITEM: Rule = Rule::error(
    "vhdx.duplicate-metadata-item",
    Check::InvalidHeader,
    "the metadata table lists a known item twice",
);
const UNKNOWN_REQUIRED_METADATA_ITEM: Rule = Rule::error(
    "vhdx.unknown-required-metadata-item",
    Check::InvalidHeader,
    "a metadata item of an unknown kind is marked required",
);
const MISSING_METADATA_ITEM: Rule = Rule::error(
    "vhdx.missing-metadata-item",
    Check::InvalidHeader,
    "the metadata table lacks the file parameters, virtual disk size, page 83 data, logical or physical sector size",
);
const METADATA_ITEM_SIZE: Rule = Rule::error(
    "vhdx.metadata-item-size",
    Check::InvalidHeader,
    "a metadata item is shorter than its field or longer than 1 MiB (spec 2.6.1.2)",
);
const METADATA_ITEM_OUTSIDE_REGION: Rule = Rule::error(
    "vhdx.metadata-item-outside-region",
    Check::InvalidHeader,
    "a metadata item lies outside the metadata region",
);
const PARENT_WITHOUT_LOCATOR: Rule = Rule::error(
    "vhdx.parent-without-locator",
    Check::InvalidHeader,
    "the file parameters say the disk has a parent but there is no parent locator item",
);
const BLOCK_SIZE: Rule = Rule::error(
    "vhdx.block-size",
    Check::InvalidHeader,
    "the block size is not a power of two from 1 MiB to 256 MiB (spec 2.6.2.1)",
);
const LOGICAL_SECTOR_SIZE: Rule = Rule::error(
    "vhdx.logical-sector-size",
    Check::InvalidHeader,
    "the logical sector size is neither 512 nor 4096",
);
const LOGICAL_SECTOR_4096: Rule = Rule::warning(
    "vhdx.logical-sector-4096",
    Check::UnsupportedVersion,
    "the disk has 4096-byte logical sectors: valid (spec 2.6.2.4), read whole by vmimage and libvhdi, but QEMU since 5.2 refuses to open it, so a cloud that reads images with qemu-img cannot use it",
);
const VIRTUAL_SIZE_LIMIT: Rule = Rule::error(
    "vhdx.virtual-size-limit",
    Check::InvalidHeader,
    "the virtual disk size exceeds the 64 TiB the specification allows (spec 2.6.2.2)",
);
const DIFFERENCING: Rule = Rule::error(
    "vhdx.differencing",
    Check::BackingFile,
    "the VHDX is a differencing disk: unallocated blocks read from the parent its locator names",
);
const BAT_TOO_SMALL: Rule = Rule::error(
    "vhdx.bat-too-small",
    Check::InvalidHeader,
    "the BAT region holds fewer entries than the disk's blocks and sector bitmaps need",
);
const BAT_ENTRY_IN_REGION: Rule = Rule::error(
    "vhdx.bat-entry-in-region",
    Check::InvalidHeader,
    "a fully present BAT entry puts its block inside the log, the metadata or another region",
);
const HEADER_PAST_EOF: Rule = Rule::error(
    "vhdx.header-past-eof",
    Check::Truncated,
    "a VHDX header (at 64 KiB or 128 KiB) runs past the end of the file",
);
const REGION_TABLE_PAST_EOF: Rule = Rule::error(
    "vhdx.region-table-past-eof",
    Check::Truncated,
    "the region table (at 192 KiB) runs past the end of the file",
);
const BAT_ENTRY_PAST_EOF: Rule = Rule::error(
    "vhdx.bat-entry-past-eof",
    Check::Truncated,
    "a fully present BAT entry puts its block past the end of the file",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    HEADER_PAST_EOF,
    REGION_TABLE_PAST_EOF,
    FILE_IDENTIFIER,
    HEADER_SEQUENCE_CONFLICT,
    NO_VALID_HEADER,
    ACTIVE_LOG,
    REGION_TABLE_CHECKSUM,
    REGION_TABLE_SIGNATURE,
    REGION_TABLE_ENTRY_COUNT,
    REGION_OVERLAP,
    UNKNOWN_REQUIRED_REGION,
    DUPLICATE_REGION,
    MISSING_REGION,
    REGION_PAST_EOF,
    METADATA_REGION_SIZE,
    METADATA_TABLE_SIGNATURE,
    METADATA_ENTRY_COUNT,
    DUPLICATE_METADATA_ITEM,
    UNKNOWN_REQUIRED_METADATA_ITEM,
    MISSING_METADATA_ITEM,
    METADATA_ITEM_SIZE,
    METADATA_ITEM_OUTSIDE_REGION,
    PARENT_WITHOUT_LOCATOR,
    BLOCK_SIZE,
    LOGICAL_SECTOR_SIZE,
    LOGICAL_SECTOR_4096,
    VIRTUAL_SIZE_LIMIT,
    DIFFERENCING,
    BAT_TOO_SMALL,
    BAT_ENTRY_IN_REGION,
    BAT_ENTRY_PAST_EOF,
];

/// The file identifier signature.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Header section blocks are 64 KiB (spec 2.2).
pub(crate) const HEADER_BLOCK: u64 = 64 * 1024;
/// Offsets of the two headers and the region table.
pub(crate) const HEADER1_OFFSET: u64 = HEADER_BLOCK;
pub(crate) const HEADER2_OFFSET: u64 = 2 * HEADER_BLOCK;
pub(crate) const REGION_TABLE_OFFSET: u64 = 3 * HEADER_BLOCK;
/// The header checksum covers 4 KiB (spec 2.2.2).
pub(crate) const HEADER_LEN: usize = 4096;
/// The region table (and its checksum) covers 64 KiB (spec 2.2.3).
pub(crate) const REGION_TABLE_LEN: usize = 64 * 1024;
/// Spec 2.2.3: at most 2047 region table entries.
const MAX_REGION_ENTRIES: u32 = 2047;
/// The metadata table is at most 64 KiB: a 32-byte header and 2047 32-byte entries
/// (`VHDX_METADATA_TABLE_MAX_SIZE`).
pub(crate) const METADATA_TABLE_LEN: usize = 64 * 1024;
/// Spec 2.6.1.2: a metadata item is at most 1 MiB.
const MAX_METADATA_ITEM: u32 = 1 << 20;
/// Block size limits (`VHDX_BLOCK_SIZE_MIN`/`MAX`, spec 2.6.2.1).
const MIN_BLOCK_SIZE: u32 = 1 << 20;
const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Spec 2.6.2.2: the virtual disk is at most 64 TiB.
pub(crate) const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// `VHDX_MAX_SECTORS_PER_BLOCK`: sector bitmap blocks cover 2^23 sectors.
pub(crate) const MAX_SECTORS_PER_BLOCK: u64 = 1 << 23;
/// The largest BAT this parser scans for blocks past the end of the file or inside the
/// metadata (as QEMU does on open). 8 MiB holds the BAT of a 64 TiB disk with 32 MiB blocks
/// (the default size QEMU picks for large disks); larger tables are only range-checked.
const MAX_BAT_SCAN_BYTES: u64 = 8 << 20;
/// Chunk size of the BAT scan.
const BAT_SCAN_CHUNK: usize = 64 * 1024;
/// BAT entry: low 3 bits are the state, the top 44 bits the offset in MiB.
const BAT_STATE_MASK: u64 = 7;
const BAT_OFFSET_MASK: u64 = !0xf_ffff;
/// Payload block state "fully present": the block's data is in the file.
pub(crate) const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

/// The header signature `head`, region table `regi`, metadata table `metadata`.
pub(crate) const HEADER_SIGNATURE: &[u8; 4] = b"head";
pub(crate) const REGION_SIGNATURE: &[u8; 4] = b"regi";
pub(crate) const METADATA_SIGNATURE: &[u8; 8] = b"metadata";

/// A GUID as stored on disk (`MSGUID`: three little-endian fields, then 8 bytes).
pub(crate) type Guid = [u8; 16];

/// Builds the on-disk form of a GUID written `data1-data2-data3-data4`.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    uuid::Uuid::from_fields(d1, d2, d3, &d4).to_bytes_le()
}

/// Region and metadata item GUIDs (spec 2.2.3.1 and 2.6.2).
pub(crate) const BAT_GUID: Guid = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
pub(crate) const METADATA_GUID: Guid = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);
pub(crate) const FILE_PARAMETERS_GUID: Guid = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
pub(crate) const VIRTUAL_DISK_SIZE_GUID: Guid = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
pub(crate) const PAGE83_GUID: Guid = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
pub(crate) const LOGICAL_SECTOR_SIZE_GUID: Guid = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
pub(crate) const PHYSICAL_SECTOR_SIZE_GUID: Guid = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
const PARENT_LOCATOR_GUID: Guid = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);

/// Region table entry bit: a reader must understand the region to open the file.
pub(crate) const REGION_REQUIRED: u32 = 1;
/// Metadata entry bit: a reader must understand the item to open the file.
pub(crate) const METADATA_REQUIRED: u32 = 4;
/// File parameter bit: a differencing disk (bit 0, "leave blocks allocated", marks fixed
/// disks and changes nothing here).
const PARAMS_HAS_PARENT: u32 = 2;

/// Metadata entry bit: the item describes the virtual disk (spec 2.6.1.2 `IsVirtualDisk`).
pub(crate) const METADATA_VIRTUAL_DISK: u32 = 2;

/// Field offsets of the header (spec 2.2.2), region table (2.2.3) and metadata table
/// (2.6.1), little-endian.
pub(crate) mod field {
    #![allow(
        missing_docs,
        reason = "each constant is the spec's field of the same name"
    )]
    pub const CHECKSUM: usize = 4;
    pub const HEADER_SEQUENCE_NUMBER: usize = 8;
    pub const HEADER_FILE_WRITE_GUID: usize = 16;
    pub const HEADER_DATA_WRITE_GUID: usize = 32;
    pub const HEADER_LOG_GUID: usize = 48;
    pub const HEADER_LOG_VERSION: usize = 64;
    pub const HEADER_VERSION: usize = 66;
    pub const HEADER_LOG_LENGTH: usize = 68;
    pub const HEADER_LOG_OFFSET: usize = 72;
    pub const REGION_ENTRY_COUNT: usize = 8;
    pub const REGION_ENTRIES: usize = 16;
    pub const REGION_ENTRY_LEN: usize = 32;
    pub const REGION_ENTRY_FILE_OFFSET: usize = 16;
    pub const REGION_ENTRY_LENGTH: usize = 24;
    pub const REGION_ENTRY_REQUIRED: usize = 28;
    pub const METADATA_ENTRY_COUNT: usize = 10;
    pub const METADATA_ENTRIES: usize = 32;
    pub const METADATA_ENTRY_LEN: usize = 32;
    pub const METADATA_ENTRY_OFFSET: usize = 16;
    pub const METADATA_ENTRY_LENGTH: usize = 20;
    pub const METADATA_ENTRY_FLAGS: usize = 24;
}

/// Whether the probe starts with the VHDX file identifier.
pub fn detect(probe: &Probe) -> bool {
    probe.head.starts_with(SIGNATURE)
}

/// CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries: the
/// `crc32c` crate, which uses the SSE 4.2 / ARMv8 CRC instructions where the CPU has them.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Whether the checksum stored at bytes 4..8 matches the CRC-32C of `buf` with those bytes
/// taken as zero (`vhdx_checksum_is_valid()`).
fn checksum_is_valid(buf: &mut [u8]) -> bool {
    let at = field::CHECKSUM..field::CHECKSUM + 4;
    let stored = le32(buf, field::CHECKSUM);
    buf[at.clone()].fill(0);
    let ok = crc32c(buf) == stored;
    buf[at].copy_from_slice(&stored.to_le_bytes());
    ok
}

/// The fields of the current VHDX header that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    sequence_number: u64,
    log_guid: Guid,
    log_length: u32,
    log_offset: u64,
    raw: Vec<u8>,
}

impl Header {
    /// Decodes a header block if its checksum, signature and version (1) are valid.
    fn parse(mut buf: Vec<u8>) -> Option<Self> {
        if !checksum_is_valid(&mut buf)
            || !buf.starts_with(HEADER_SIGNATURE)
            || le16(&buf, field::HEADER_VERSION) != 1
        {
            return None;
        }
        let mut log_guid = [0u8; 16];
        log_guid.copy_from_slice(&buf[field::HEADER_LOG_GUID..field::HEADER_LOG_GUID + 16]);
        Some(Self {
            sequence_number: le64(&buf, field::HEADER_SEQUENCE_NUMBER),
            log_guid,
            log_length: le32(&buf, field::HEADER_LOG_LENGTH),
            log_offset: le64(&buf, field::HEADER_LOG_OFFSET),
            // The defined part of the header, for QEMU's "identical headers" rule.
            raw: buf[..80].to_vec(),
        })
    }
}

/// A region table or metadata table entry: what it is, where, how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    offset: u64,
    length: u64,
}

impl Region {
    fn end(self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// QEMU's `vhdx_region_check()`: whether `[start, start + len)` overlaps a registered region.
fn overlaps(regions: &[(&'static str, Region)], start: u64, len: u64) -> Option<&'static str> {
    let end = start.saturating_add(len);
    regions
        .iter()
        .find(|(_, r)| !(start >= r.end() || end <= r.offset))
        .map(|(name, _)| *name)
}

/// Accumulates findings and stops the parse at the first one that makes the rest meaningless.
struct Parse<'a> {
    report: &'a mut FormatReport,
}

impl Parse<'_> {
    fn invalid(&mut self, rule: Rule, detail: String) {
        self.report.findings.push(rule.finding(detail));
    }
}

/// Describes the image as `qemu-img info -f vhdx` would. A differencing file's parent is
/// reported as a backing file and never opened.
pub fn describe<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let mut report = FormatReport::default();
    describe_into(src, probe, &mut report, &mut None)?;
    Ok(report)
}

/// [`describe`], and what a reader needs to map the guest disk when the headers, regions and
/// metadata could be parsed.
fn describe_layout<S: ReadAt + ?Sized>(
    src: &S,
    probe: &Probe,
) -> io::Result<(FormatReport, Option<reader::Layout>)> {
    let mut report = FormatReport::default();
    let mut layout = None;
    describe_into(src, probe, &mut report, &mut layout)?;
    Ok((report, layout))
}

fn describe_into<S: ReadAt + ?Sized>(
    src: &S,
    probe: &Probe,
    report: &mut FormatReport,
    layout: &mut Option<reader::Layout>,
) -> io::Result<()> {
    if !detect(probe) {
        report
            .findings
            .push(FILE_IDENTIFIER.finding("the VHDX file identifier \"vhdxfile\" is missing"));
        return Ok(());
    }
    let Some(header) = current_header(src, report)? else {
        return Ok(());
    };
    let mut p = Parse { report };
    if header.log_guid != [0; 16] {
        p.report.dirty = true;
        p.report.findings.push(ACTIVE_LOG.finding(format!(
                "the VHDX header names an active log ({} bytes at offset {:#x}): the image was not closed cleanly and its log may need replaying",
                header.log_length, header.log_offset
            ),
        ));
    }
    let mut regions = vec![(
        "log",
        Region {
            offset: header.log_offset,
            length: u64::from(header.log_length),
        },
    )];

    // Region table.
    let mut table = vec![0u8; REGION_TABLE_LEN];
    if let Err(e) = read_exact_at(src, &mut table, REGION_TABLE_OFFSET) {
        p.report.findings.push(read_failure_with(
            REGION_TABLE_PAST_EOF,
            e,
            "VHDX region table",
        )?);
        return Ok(());
    }
    if !checksum_is_valid(&mut table) {
        p.invalid(
            REGION_TABLE_CHECKSUM,
            "the VHDX region table checksum does not match its contents".into(),
        );
        return Ok(());
    }
    if !table.starts_with(REGION_SIGNATURE) {
        p.invalid(
            REGION_TABLE_SIGNATURE,
            "the VHDX region table does not start with \"regi\"".into(),
        );
        return Ok(());
    }
    let count = le32(&table, field::REGION_ENTRY_COUNT);
    if count > MAX_REGION_ENTRIES {
        p.invalid(REGION_TABLE_ENTRY_COUNT, format!(
            "the VHDX region table has {count} entries, more than the 2047 the specification allows"
        ));
        return Ok(());
    }
    let (mut bat, mut metadata) = (None, None);
    for i in 0..count as usize {
        let at = field::REGION_ENTRIES + field::REGION_ENTRY_LEN * i;
        let e = &table[at..at + field::REGION_ENTRY_LEN];
        let region = Region {
            offset: le64(e, field::REGION_ENTRY_FILE_OFFSET),
            length: u64::from(le32(e, field::REGION_ENTRY_LENGTH)),
        };
        if let Some(other) = overlaps(&regions, region.offset, region.length) {
            p.invalid(
                REGION_OVERLAP,
                format!(
                    "VHDX region {i} ({} bytes at offset {:#x}) overlaps the {other} region",
                    region.length, region.offset
                ),
            );
            return Ok(());
        }
        let id = &e[..16];
        let name = if id == BAT_GUID {
            "BAT"
        } else if id == METADATA_GUID {
            "metadata"
        } else {
            "unknown"
        };
        regions.push((name, region));
        let slot = match name {
            "BAT" => &mut bat,
            "metadata" => &mut metadata,
            _ => {
                if le32(e, field::REGION_ENTRY_REQUIRED) & REGION_REQUIRED != 0 {
                    p.invalid(
                        UNKNOWN_REQUIRED_REGION,
                        format!("VHDX region {i} is marked required but is of an unknown kind"),
                    );
                    return Ok(());
                }
                continue;
            }
        };
        if slot.replace(region).is_some() {
            p.invalid(
                DUPLICATE_REGION,
                format!("the VHDX region table has two {name} regions"),
            );
            return Ok(());
        }
    }
    let (Some(bat), Some(metadata)) = (bat, metadata) else {
        p.invalid(
            MISSING_REGION,
            "the VHDX region table lacks the BAT or the metadata region".into(),
        );
        return Ok(());
    };
    for (name, r) in [("BAT", bat), ("metadata", metadata)] {
        if r.end() > src.len() {
            p.report.findings.push(REGION_PAST_EOF.finding(format!(
                    "the VHDX {name} region ({} bytes at offset {:#x}) runs past the end of the file ({} bytes)",
                    r.length,
                    r.offset,
                    src.len()
                ),
            ));
            return Ok(());
        }
    }

    let Some(params) = read_metadata(src, metadata, &mut p)? else {
        return Ok(());
    };
    let report = p.report;
    if params.logical_sector_size == 4096 {
        report.findings.push(LOGICAL_SECTOR_4096.finding(
            "the VHDX has 4096-byte logical sectors: QEMU (since 5.2) refuses to open it, so a cloud that reads images with qemu-img cannot use it; vmimage reads it whole, as the specification and libvhdi do",
        ));
    }
    report.virtual_size = Some(params.virtual_size());
    report.cluster_size = Some(u64::from(params.block_size));
    *layout = Some(reader::Layout {
        header: header.clone(),
        params,
        bat,
        regions: regions.clone(),
    });
    check_bat(src, &params, bat, &regions, report)
}

/// Reads both headers and picks the current one as `vhdx_parse_header()` does.
fn current_header<S: ReadAt + ?Sized>(
    src: &S,
    report: &mut FormatReport,
) -> io::Result<Option<Header>> {
    let mut headers = Vec::with_capacity(2);
    for offset in [HEADER1_OFFSET, HEADER2_OFFSET] {
        match read_vec_at(src, offset, HEADER_LEN) {
            Ok(buf) => headers.push(Header::parse(buf)),
            Err(e) => {
                report
                    .findings
                    .push(read_failure_with(HEADER_PAST_EOF, e, "VHDX header")?);
                return Ok(None);
            }
        }
    }
    let h2 = headers.pop().flatten();
    let h1 = headers.pop().flatten();
    let current = match (h1, h2) {
        (None, None) => None,
        (Some(h), None) | (None, Some(h)) => Some(h),
        (Some(a), Some(b)) if a.sequence_number > b.sequence_number => Some(a),
        (Some(a), Some(b)) if b.sequence_number > a.sequence_number => Some(b),
        // Equal sequence numbers are valid only for identical headers (Disk2VHD writes them).
        (Some(a), Some(b)) if a.raw == b.raw => Some(a),
        _ => {
            report.findings.push(
                HEADER_SEQUENCE_CONFLICT
                    .finding("the two VHDX headers differ but have the same sequence number"),
            );
            return Ok(None);
        }
    };
    if current.is_none() {
        report.findings.push(NO_VALID_HEADER.finding(
            "neither VHDX header has a valid signature, version 1 and a matching checksum",
        ));
    }
    Ok(current)
}

/// The metadata items QEMU needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    block_size: u32,
    flags: u32,
    virtual_disk_size: u64,
    logical_sector_size: u32,
}

impl Params {
    /// The guest disk: `virtual_disk_size` bytes in whole logical sectors (spec 2.6.2.2: the
    /// size "MUST be a multiple of the Logical Sector Size"). With 512-byte sectors this is
    /// what `qemu-img info` prints (`total_sectors = virtual_disk_size >> 9`). QEMU before 5.2
    /// shifted by the logical sector size and counted 512-byte sectors, an eighth of a
    /// 4096-byte-sector disk; since 5.2 (commit 83a6a90009) it refuses such a disk
    /// (`-ENOTSUP`), so the specification, Hyper-V and libvhdi are the answer here.
    fn virtual_size(&self) -> u64 {
        let sector = u64::from(self.logical_sector_size);
        self.virtual_disk_size / sector * sector
    }

    /// `chunk_ratio`: payload blocks per sector bitmap block.
    fn chunk_ratio(&self) -> u64 {
        MAX_SECTORS_PER_BLOCK * u64::from(self.logical_sector_size) / u64::from(self.block_size)
    }
}

/// Parses the metadata table and items (`vhdx_parse_metadata()`).
fn read_metadata<S: ReadAt + ?Sized>(
    src: &S,
    region: Region,
    p: &mut Parse<'_>,
) -> io::Result<Option<Params>> {
    let mut table = vec![0u8; METADATA_TABLE_LEN];
    if region.length < METADATA_TABLE_LEN as u64 {
        p.invalid(
            METADATA_REGION_SIZE,
            format!(
                "the VHDX metadata region is {} bytes, smaller than its 64 KiB table",
                region.length
            ),
        );
        return Ok(None);
    }
    if let Err(e) = read_exact_at(src, &mut table, region.offset) {
        p.report.findings.push(read_failure_with(
            REGION_PAST_EOF,
            e,
            "VHDX metadata table",
        )?);
        return Ok(None);
    }
    if !table.starts_with(METADATA_SIGNATURE) {
        p.invalid(
            METADATA_TABLE_SIGNATURE,
            "the VHDX metadata table does not start with \"metadata\"".into(),
        );
        return Ok(None);
    }
    let count = usize::from(le16(&table, field::METADATA_ENTRY_COUNT));
    if count * field::METADATA_ENTRY_LEN > METADATA_TABLE_LEN - field::METADATA_ENTRIES {
        p.invalid(
            METADATA_ENTRY_COUNT,
            format!("the VHDX metadata table has {count} entries, more than fit in 64 KiB"),
        );
        return Ok(None);
    }
    const ITEMS: [(&str, Guid); 6] = [
        ("file parameters", FILE_PARAMETERS_GUID),
        ("virtual disk size", VIRTUAL_DISK_SIZE_GUID),
        ("page 83 data", PAGE83_GUID),
        ("logical sector size", LOGICAL_SECTOR_SIZE_GUID),
        ("physical sector size", PHYSICAL_SECTOR_SIZE_GUID),
        ("parent locator", PARENT_LOCATOR_GUID),
    ];
    let mut found: [Option<Region>; 6] = [None; 6];
    for i in 0..count {
        let at = field::METADATA_ENTRIES + field::METADATA_ENTRY_LEN * i;
        let e = &table[at..at + field::METADATA_ENTRY_LEN];
        let item = Region {
            offset: u64::from(le32(e, field::METADATA_ENTRY_OFFSET)),
            length: u64::from(le32(e, field::METADATA_ENTRY_LENGTH)),
        };
        match ITEMS.iter().position(|(_, g)| e[..16] == *g) {
            Some(k) if found[k].replace(item).is_some() => {
                p.invalid(
                    DUPLICATE_METADATA_ITEM,
                    format!("the VHDX metadata table has two {} items", ITEMS[k].0),
                );
                return Ok(None);
            }
            Some(_) => {}
            None if le32(e, field::METADATA_ENTRY_FLAGS) & METADATA_REQUIRED != 0 => {
                p.invalid(
                    UNKNOWN_REQUIRED_METADATA_ITEM,
                    format!("VHDX metadata item {i} is marked required but is of an unknown kind"),
                );
                return Ok(None);
            }
            None => {}
        }
    }
    if let Some(k) = found[..5].iter().position(Option::is_none) {
        p.invalid(
            MISSING_METADATA_ITEM,
            format!("the VHDX metadata table has no {} item", ITEMS[k].0),
        );
        return Ok(None);
    }
    let names = ITEMS.map(|(n, _)| n);
    let Some(file_params) = read_item(src, region, &names, &found, 0, 8, p)? else {
        return Ok(None);
    };
    let Some(size) = read_item(src, region, &names, &found, 1, 8, p)? else {
        return Ok(None);
    };
    let Some(logical) = read_item(src, region, &names, &found, 3, 4, p)? else {
        return Ok(None);
    };
    let parent = if le32(&file_params, 4) & PARAMS_HAS_PARENT != 0 {
        if found[5].is_none() {
            p.invalid(
                PARENT_WITHOUT_LOCATOR,
                "the VHDX file parameters say it has a parent but there is no parent locator"
                    .into(),
            );
            return Ok(None);
        }
        read_item(src, region, &names, &found, 5, 20, p)?
    } else {
        None
    };
    let params = Params {
        block_size: le32(&file_params, 0),
        flags: le32(&file_params, 4),
        virtual_disk_size: le64(&size, 0),
        logical_sector_size: le32(&logical, 0),
    };
    if let Some(locator) = parent {
        report_parent(&locator, p.report);
    }
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&params.block_size)
        || !params.block_size.is_power_of_two()
    {
        p.invalid(
            BLOCK_SIZE,
            format!(
                "the VHDX block size is {}, not a power of two from 1 MiB to 256 MiB",
                params.block_size
            ),
        );
        return Ok(None);
    }
    if params.logical_sector_size != 512 && params.logical_sector_size != 4096 {
        p.invalid(
            LOGICAL_SECTOR_SIZE,
            format!(
                "the VHDX logical sector size is {}, not 512 or 4096",
                params.logical_sector_size
            ),
        );
        return Ok(None);
    }
    if params.virtual_disk_size > MAX_VIRTUAL_SIZE {
        p.invalid(
            VIRTUAL_SIZE_LIMIT,
            format!(
                "the VHDX virtual disk size {} exceeds the 64 TiB the specification allows",
                params.virtual_disk_size
            ),
        );
        return Ok(None);
    }
    Ok(Some(params))
}

/// Reads metadata item `k` (at least `need` bytes, at most 1 MiB, inside the metadata
/// region): its first `need` bytes, or all of it for the parent locator (index 5).
fn read_item<S: ReadAt + ?Sized>(
    src: &S,
    region: Region,
    names: &[&str; 6],
    found: &[Option<Region>; 6],
    k: usize,
    need: usize,
    p: &mut Parse<'_>,
) -> io::Result<Option<Vec<u8>>> {
    let Some(item) = found[k] else {
        return Ok(None);
    };
    if item.length < need as u64 || item.length > u64::from(MAX_METADATA_ITEM) {
        p.invalid(
            METADATA_ITEM_SIZE,
            format!(
                "the VHDX {} item is {} bytes, not between {need} and 1 MiB",
                names[k], item.length
            ),
        );
        return Ok(None);
    }
    if item.end() > region.length {
        p.invalid(METADATA_ITEM_OUTSIDE_REGION, format!(
            "the VHDX {} item ({} bytes at offset {:#x}) lies outside the {}-byte metadata region",
            names[k], item.length, item.offset, region.length
        ));
        return Ok(None);
    }
    // The length is capped at MAX_METADATA_ITEM above.
    let len = if k == 5 { item.length as usize } else { need };
    // Both ends were checked against the region and the region against the file, but the
    // region's end saturates: add with a check rather than rely on that.
    let Some(at) = region.offset.checked_add(item.offset) else {
        p.invalid(
            METADATA_ITEM_OUTSIDE_REGION,
            format!(
                "the VHDX {} item offset {:#x} overflows past the metadata region at {:#x}",
                names[k], item.offset, region.offset
            ),
        );
        return Ok(None);
    };
    match read_vec_at(src, at, len) {
        Ok(b) => Ok(Some(b)),
        Err(e) => {
            p.report.findings.push(read_failure_with(
                REGION_PAST_EOF,
                e,
                &format!("VHDX {} item", names[k]),
            )?);
            Ok(None)
        }
    }
}

/// Reports a differencing disk's parent from its locator (spec 2.6.2.6): the
/// `relative_path`, `absolute_win32_path` or `volume_path` entry, UTF-16LE. QEMU refuses
/// differencing VHDX files, and this tool never opens the parent.
fn report_parent(locator: &[u8], report: &mut FormatReport) {
    let count = usize::from(le16(locator, 18));
    // Keys are compared as raw UTF-16LE bytes (a length mismatch costs nothing), so hostile
    // locators whose entries all point at one huge key stay linear; only a matching entry's
    // value is decoded.
    let value = |wanted: &str| -> Option<String> {
        let wanted: Vec<u8> = wanted.encode_utf16().flat_map(u16::to_le_bytes).collect();
        (0..count).find_map(|i| {
            let e = locator.get(20 + 12 * i..32 + 12 * i)?;
            let slice = |off: u32, len: u16| {
                let start = usize::try_from(off).ok()?;
                locator.get(start..start.checked_add(usize::from(len))?)
            };
            if slice(le32(e, 0), le16(e, 8))? != wanted.as_slice() {
                return None;
            }
            let raw = slice(le32(e, 4), le16(e, 10))?;
            Some(utf16_until_nul(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]])),
            ))
        })
    };
    let name = ["relative_path", "absolute_win32_path", "volume_path"]
        .iter()
        .find_map(|k| value(k));
    let detail = match &name {
        Some(n) => format!(
            "the VHDX is a differencing disk that reads unallocated blocks from the parent {n:?}"
        ),
        None => "the VHDX is a differencing disk whose parent locator names no path".to_string(),
    };
    report.findings.push(DIFFERENCING.finding(detail));
    report.backing_filename = name;
}

/// The BAT checks of `vhdx_open()`: the table holds an entry for every block, and every
/// fully present payload block lies inside the file and outside the log and metadata.
fn check_bat<S: ReadAt + ?Sized>(
    src: &S,
    params: &Params,
    bat: Region,
    regions: &[(&'static str, Region)],
    report: &mut FormatReport,
) -> io::Result<()> {
    let chunk_ratio = params.chunk_ratio();
    let block_size = u64::from(params.block_size);
    let data_blocks = params.virtual_disk_size.div_ceil(block_size);
    let entries = if params.flags & PARAMS_HAS_PARENT != 0 {
        data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        data_blocks + data_blocks.saturating_sub(1) / chunk_ratio
    };
    if entries > bat.length / 8 {
        report.findings.push(BAT_TOO_SMALL.finding(format!(
            "the VHDX BAT region ({} bytes) is too small for the {entries} entries the disk needs",
            bat.length
        )));
        return Ok(());
    }
    let bytes = entries * 8;
    if bytes > MAX_BAT_SCAN_BYTES || params.flags & PARAMS_HAS_PARENT != 0 {
        return Ok(());
    }
    let file_len = src.len();
    let mut index = 0u64;
    let mut offset = bat.offset;
    let mut remaining = bytes;
    while remaining > 0 {
        let n = remaining.min(BAT_SCAN_CHUNK as u64) as usize;
        let chunk = match read_vec_at(src, offset, n) {
            Ok(c) => c,
            Err(e) => {
                report
                    .findings
                    .push(read_failure_with(REGION_PAST_EOF, e, "VHDX BAT")?);
                return Ok(());
            }
        };
        for e in chunk.chunks_exact(8) {
            let entry = le64(e, 0);
            // Every (chunk_ratio + 1)th entry is a sector bitmap entry, not payload.
            let is_payload = !(index + 1).is_multiple_of(chunk_ratio + 1);
            if is_payload && entry & BAT_STATE_MASK == PAYLOAD_BLOCK_FULLY_PRESENT {
                let start = entry & BAT_OFFSET_MASK;
                if let Some(name) = overlaps(regions, start, block_size) {
                    report.findings.push(BAT_ENTRY_IN_REGION.finding(format!(
                            "VHDX BAT entry {index} puts a block at offset {start:#x}, inside the {name} region"
                        ),
                    ));
                    return Ok(());
                }
                // `start` comes from the entry: up to 2^64 - 1 MiB, so the end may not fit.
                if start
                    .checked_add(block_size)
                    .is_none_or(|end| end > file_len)
                {
                    report.findings.push(BAT_ENTRY_PAST_EOF.finding(format!(
                            "VHDX BAT entry {index} puts a {block_size}-byte block at offset {start:#x}, past the end of the file ({file_len} bytes)"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    const MIB: usize = 1 << 20;

    fn put(d: &mut [u8], at: usize, v: &[u8]) {
        d[at..at + v.len()].copy_from_slice(v);
    }

    fn seal(d: &mut [u8], at: usize, len: usize) {
        d[at + 4..at + 8].fill(0);
        let crc = crc32c(&d[at..at + len]);
        put(d, at + 4, &crc.to_le_bytes());
    }

    /// A dynamic VHDX laid out as QEMU's `vhdx_co_create()` writes it: headers, region table,
    /// log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB. `blocks` payload blocks are present
    /// after 4 MiB.
    fn image(size: u64, block: u32, present: &[usize]) -> Vec<u8> {
        let len = 4 * MIB + present.len() * block as usize;
        let mut d = vec![0u8; len];
        put(&mut d, 0, SIGNATURE);
        for (i, at) in [HEADER1_OFFSET, HEADER2_OFFSET].iter().enumerate() {
            let at = *at as usize;
            put(&mut d, at, HEADER_SIGNATURE);
            put(&mut d, at + 8, &(10 + i as u64).to_le_bytes());
            put(&mut d, at + 64, &0u16.to_le_bytes());
            put(&mut d, at + 66, &1u16.to_le_bytes());
            put(&mut d, at + 68, &(MIB as u32).to_le_bytes());
            put(&mut d, at + 72, &(MIB as u64).to_le_bytes());
            seal(&mut d, at, HEADER_LEN);
        }
        let rt = REGION_TABLE_OFFSET as usize;
        put(&mut d, rt, REGION_SIGNATURE);
        put(&mut d, rt + 8, &2u32.to_le_bytes());
        for (i, (g, off)) in [(BAT_GUID, 3 * MIB), (METADATA_GUID, 2 * MIB)]
            .iter()
            .enumerate()
        {
            let e = rt + 16 + 32 * i;
            put(&mut d, e, g);
            put(&mut d, e + 16, &(*off as u64).to_le_bytes());
            put(&mut d, e + 24, &(MIB as u32).to_le_bytes());
            put(&mut d, e + 28, &REGION_REQUIRED.to_le_bytes());
        }
        seal(&mut d, rt, REGION_TABLE_LEN);
        let md = 2 * MIB;
        put(&mut d, md, METADATA_SIGNATURE);
        put(&mut d, md + 10, &5u16.to_le_bytes());
        let items: [(Guid, Vec<u8>); 5] = [
            (FILE_PARAMETERS_GUID, {
                let mut v = block.to_le_bytes().to_vec();
                v.extend(0u32.to_le_bytes());
                v
            }),
            (VIRTUAL_DISK_SIZE_GUID, size.to_le_bytes().to_vec()),
            (PAGE83_GUID, vec![7u8; 16]),
            (LOGICAL_SECTOR_SIZE_GUID, 512u32.to_le_bytes().to_vec()),
            (PHYSICAL_SECTOR_SIZE_GUID, 4096u32.to_le_bytes().to_vec()),
        ];
        for (i, (g, v)) in items.iter().enumerate() {
            let e = md + 32 + 32 * i;
            let item_off = 64 * 1024 + 64 * i;
            put(&mut d, e, g);
            put(&mut d, e + 16, &(item_off as u32).to_le_bytes());
            put(&mut d, e + 20, &(v.len() as u32).to_le_bytes());
            put(&mut d, e + 24, &METADATA_REQUIRED.to_le_bytes());
            put(&mut d, md + item_off, v);
        }
        let ratio = (MAX_SECTORS_PER_BLOCK * 512 / u64::from(block)) as usize;
        for (k, &b) in present.iter().enumerate() {
            let idx = b + b / ratio;
            let off = (4 * MIB + k * block as usize) as u64;
            put(
                &mut d,
                3 * MIB + 8 * idx,
                &(off | PAYLOAD_BLOCK_FULLY_PRESENT).to_le_bytes(),
            );
        }
        d
    }

    fn report(d: &[u8]) -> FormatReport {
        describe(d, &Probe::from_bytes(d)).expect("in-memory")
    }

    fn checks(r: &FormatReport) -> Vec<Check> {
        r.findings.iter().map(|f| f.check).collect()
    }

    /// The findings of a report that has exactly one.
    #[track_caller]
    fn only(r: &FormatReport) -> &[crate::safety::Finding] {
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        &r.findings
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn a_dynamic_image_is_described() {
        let r = report(&image(64 << 20, 8 << 20, &[0]));
        assert_eq!(r.virtual_size, Some(64 << 20));
        assert_eq!(r.cluster_size, Some(8 << 20));
        assert!(!r.dirty);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn the_newer_valid_header_wins_and_a_broken_one_is_ignored() {
        let mut d = image(64 << 20, 8 << 20, &[]);
        // Damage header 2 (the newer): header 1 is used.
        d[HEADER2_OFFSET as usize + 100] ^= 1;
        assert!(report(&d).findings.is_empty());
        // Damage both.
        d[HEADER1_OFFSET as usize + 100] ^= 1;
        assert_fires(only(&report(&d)), "vhdx.no-valid-header");
        // Equal sequence numbers with different contents.
        let mut d = image(64 << 20, 8 << 20, &[]);
        let h2 = HEADER2_OFFSET as usize;
        put(&mut d, h2 + 8, &10u64.to_le_bytes());
        put(&mut d, h2 + 68, &(2 * MIB as u32).to_le_bytes());
        seal(&mut d, h2, HEADER_LEN);
        assert_fires(only(&report(&d)), "vhdx.header-sequence-conflict");
    }

    #[test]
    fn a_missing_file_identifier_is_refused() {
        let mut d = image(64 << 20, 8 << 20, &[]);
        d[0] = b'x';
        assert_fires(only(&report(&d)), "vhdx.file-identifier");
    }

    #[test]
    fn an_active_log_is_reported_dirty() {
        let mut d = image(64 << 20, 8 << 20, &[]);
        let h2 = HEADER2_OFFSET as usize;
        put(&mut d, h2 + 48, &[1; 16]);
        seal(&mut d, h2, HEADER_LEN);
        let r = report(&d);
        assert!(r.dirty);
        assert_fires(only(&r), "vhdx.active-log");
    }

    #[test]
    fn region_table_rules_fire() {
        let rt = REGION_TABLE_OFFSET as usize;
        let region = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut d = image(64 << 20, 8 << 20, &[]);
            f(&mut d);
            seal(&mut d, rt, REGION_TABLE_LEN);
            report(&d)
        };
        // Bad checksum (no reseal).
        let mut d = image(64 << 20, 8 << 20, &[]);
        d[rt + 1000] = 1;
        assert_fires(only(&report(&d)), "vhdx.region-table-checksum");
        let fired = region(&|d| d[rt] = b'x');
        assert_fires(only(&fired), "vhdx.region-table-signature");
        let fired = region(&|d| put(d, rt + 8, &3000u32.to_le_bytes()));
        assert_fires(only(&fired), "vhdx.region-table-entry-count");
        // Metadata region overlapping the log.
        let fired = region(&|d| put(d, rt + 16 + 32 + 16, &(MIB as u64).to_le_bytes()));
        assert_fires(only(&fired), "vhdx.region-overlap");
        let fired = region(&|d| put(d, rt + 16 + 32, &BAT_GUID));
        assert_fires(only(&fired), "vhdx.duplicate-region");
        let fired = region(&|d| put(d, rt + 16, &[9; 16]));
        assert_fires(only(&fired), "vhdx.unknown-required-region");
        // An unknown optional region in place of the BAT: no BAT region at all.
        let fired = region(&|d| {
            put(d, rt + 16, &[9; 16]);
            put(d, rt + 16 + 28, &0u32.to_le_bytes());
        });
        assert_fires(only(&fired), "vhdx.missing-region");
        let fired = region(&|d| put(d, rt + 16 + 16, &(1u64 << 40).to_le_bytes()));
        assert_fires(only(&fired), "vhdx.region-past-eof");
        // A metadata region too small for its table.
        let fired = region(&|d| put(d, rt + 16 + 32 + 24, &4096u32.to_le_bytes()));
        assert_fires(only(&fired), "vhdx.metadata-region-size");
    }

    #[test]
    fn metadata_rules_fire() {
        let md = 2 * MIB;
        let meta = |at: usize, v: &[u8]| {
            let mut d = image(64 << 20, 8 << 20, &[]);
            put(&mut d, md + at, v);
            report(&d)
        };
        let item = 64 * 1024;
        assert_fires(only(&meta(0, b"x")), "vhdx.metadata-table-signature");
        let fired = meta(10, &3000u16.to_le_bytes());
        assert_fires(only(&fired), "vhdx.metadata-entry-count");
        let fired = meta(10, &4u16.to_le_bytes());
        assert_fires(only(&fired), "vhdx.missing-metadata-item");
        let fired = meta(64, &FILE_PARAMETERS_GUID);
        assert_fires(only(&fired), "vhdx.duplicate-metadata-item");
        let fired = meta(32 + 4 * 32, &[9; 16]);
        assert_fires(only(&fired), "vhdx.unknown-required-metadata-item");
        // The file parameters item: 4 bytes long (it needs 8), then past the region's end.
        let fired = meta(32 + 20, &4u32.to_le_bytes());
        assert_fires(only(&fired), "vhdx.metadata-item-size");
        let fired = meta(32 + 16, &(2 * MIB as u32).to_le_bytes());
        assert_fires(only(&fired), "vhdx.metadata-item-outside-region");
        let fired = meta(item, &(3u32 << 20).to_le_bytes());
        assert_fires(only(&fired), "vhdx.block-size");
        let fired = meta(item, &(512u32 << 20).to_le_bytes());
        assert_fires(only(&fired), "vhdx.block-size");
        let fired = meta(item + 3 * 64, &4097u32.to_le_bytes());
        assert_fires(only(&fired), "vhdx.logical-sector-size");
        let fired = meta(item + 64, &(65u64 << 40).to_le_bytes());
        assert_fires(only(&fired), "vhdx.virtual-size-limit");
        let fired = meta(item + 4, &PARAMS_HAS_PARENT.to_le_bytes());
        assert_fires(only(&fired), "vhdx.parent-without-locator");
    }

    #[test]
    fn a_differencing_image_names_its_parent() {
        let mut d = image(64 << 20, 8 << 20, &[]);
        let md = 2 * MIB;
        let item = 64 * 1024;
        put(&mut d, md + item + 4, &PARAMS_HAS_PARENT.to_le_bytes());
        put(&mut d, md + 10, &6u16.to_le_bytes());
        let e = md + 32 + 5 * 32;
        let loc_off = item + 64 * 8;
        let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let (k, v) = (utf16("relative_path"), utf16("..\\base.vhdx"));
        let mut loc = vec![0u8; 20 + 12];
        put(&mut loc, 18, &1u16.to_le_bytes());
        put(&mut loc, 20, &32u32.to_le_bytes());
        put(&mut loc, 24, &(32 + k.len() as u32).to_le_bytes());
        put(&mut loc, 28, &(k.len() as u16).to_le_bytes());
        put(&mut loc, 30, &(v.len() as u16).to_le_bytes());
        loc.extend(&k);
        loc.extend(&v);
        put(&mut d, e, &PARENT_LOCATOR_GUID);
        put(&mut d, e + 16, &(loc_off as u32).to_le_bytes());
        put(&mut d, e + 20, &(loc.len() as u32).to_le_bytes());
        put(&mut d, md + loc_off, &loc);
        let r = report(&d);
        assert_eq!(r.backing_filename.as_deref(), Some("..\\base.vhdx"));
        assert_fires(only(&r), "vhdx.differencing");
    }

    #[test]
    fn bat_rules_fire() {
        // A block past the end of the file.
        let mut d = image(64 << 20, 8 << 20, &[0]);
        d.truncate(5 * MIB);
        assert_fires(only(&report(&d)), "vhdx.bat-entry-past-eof");
        // A block inside the metadata region.
        let mut d = image(64 << 20, 8 << 20, &[]);
        put(
            &mut d,
            3 * MIB,
            &((2 * MIB) as u64 | PAYLOAD_BLOCK_FULLY_PRESENT).to_le_bytes(),
        );
        assert_fires(only(&report(&d)), "vhdx.bat-entry-in-region");
        // A BAT region too small for the disk.
        let mut d = image(64 << 20, 8 << 20, &[]);
        let rt = REGION_TABLE_OFFSET as usize;
        put(&mut d, rt + 16 + 24, &16u32.to_le_bytes());
        seal(&mut d, rt, REGION_TABLE_LEN);
        assert_fires(only(&report(&d)), "vhdx.bat-too-small");
    }

    #[test]
    fn truncation_at_several_points() {
        let d = image(64 << 20, 8 << 20, &[0]);
        for cut in [8, 100_000, 200_000, 2 * MIB + 100, 3 * MIB + 10] {
            let r = report(&d[..cut]);
            assert_eq!(checks(&r), [Check::Truncated], "cut {cut}");
        }
        // The metadata table, its items and the BAT lie in regions already checked to end
        // inside the file: cut there, the region rule fires.
        assert_fires(only(&report(&d[..8])), "vhdx.header-past-eof");
        assert_fires(only(&report(&d[..100_000])), "vhdx.header-past-eof");
        assert_fires(only(&report(&d[..200_000])), "vhdx.region-table-past-eof");
        assert_fires(only(&report(&d[..2 * MIB + 100])), "vhdx.region-past-eof");
        assert_fires(only(&report(&d[..3 * MIB + 10])), "vhdx.region-past-eof");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x5555_aaaa_1234_4321u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = image(64 << 20, 8 << 20, &[]);
        for _ in 0..100 {
            let mut d = base.clone();
            for _ in 0..64 {
                let at = (next() as usize) % (3 * MIB + 4096);
                d[at] = next() as u8;
            }
            seal(&mut d, HEADER1_OFFSET as usize, HEADER_LEN);
            seal(&mut d, REGION_TABLE_OFFSET as usize, REGION_TABLE_LEN);
            let _ = report(&d);
        }
    }
}
