//! VMware VMDK images: hosted sparse extents (`KDMV`, monolithicSparse and streamOptimized)
//! and text descriptor files, described as QEMU's `block/vmdk.c` opens them, without ever
//! opening an extent file.
//!
//! A VMDK is a text descriptor plus extents. In a monolithicSparse or streamOptimized image
//! the descriptor is embedded at sector 1 of the only extent, and QEMU takes every fact but
//! the CIDs and the parent from the binary header. Every other create type keeps its data in
//! files the descriptor names, which QEMU opens (host paths included: CVE-2022-47951). Here
//! such extents are reported, resolved the way QEMU would name them, and refused
//! (`vmdk-extent-path`); their contents are never read, so facts QEMU takes from a sparse
//! extent's own header (its grain size, its exact capacity) come from the descriptor or are
//! absent.
//!
//! The embedded descriptor is also held to OpenStack's grammar (`check_descriptor()`), and a
//! streamOptimized footer to OpenStack's consistency rules (`check_footer()`).

pub mod descriptor;
pub mod reader;
pub mod sparse;
pub mod writer;

use std::io;

use serde::Serialize;

use self::descriptor::{CID_WINDOW, ExtentOutcome, ParentHint};
use self::sparse::{FOOTER_AREA_LEN, FooterFault, GD_AT_END, SparseHeader};
use super::{FormatReport, FormatSpecific, Probe, read_zero_padded};
use crate::safety::{Check, Rule};
use crate::source::ReadAt;

const SIGNATURE: Rule = Rule::error(
    "vmdk.signature",
    Check::InvalidHeader,
    "the image has neither a `KDMV` sparse header nor a text descriptor",
);
const LEGACY_SPARSE: Rule = Rule::error(
    "vmdk.legacy-sparse",
    Check::UnsupportedVersion,
    "the image is a VMDK3 / ESX `COWD` sparse extent; only VMDK4 (`KDMV`) is accepted",
);
const VERSION: Rule = Rule::error(
    "vmdk.version",
    Check::UnsupportedVersion,
    "the sparse header's version is not 1, 2 or 3",
);
const DESCRIPTOR_OFFSET_OVERFLOW: Rule = Rule::error(
    "vmdk.descriptor-offset-overflow",
    Check::InvalidHeader,
    "a zero-capacity sparse header's descriptor offset in sectors overflows 64 bits of bytes",
);
const FOOTER_MISSING: Rule = Rule::error(
    "vmdk.footer-missing",
    Check::VmdkFooter,
    "the header defers the grain directory to a footer (`gdOffset` -1), but the file is too short to have one",
);
const FOOTER_MARKERS: Rule = Rule::error(
    "vmdk.footer-markers",
    Check::VmdkFooter,
    "the streamOptimized footer is not between a footer marker and an end-of-stream marker (QEMU)",
);
const FOOTER_MAGIC: Rule = Rule::error(
    "vmdk.footer-magic",
    Check::VmdkFooter,
    "the streamOptimized footer does not start with `KDMV` (QEMU)",
);
const FOOTER_PADDING: Rule = Rule::error(
    "vmdk.footer-padding",
    Check::VmdkFooter,
    "the footer and end-of-stream markers are not zero-padded (OpenStack)",
);
const FOOTER_CHAINED: Rule = Rule::error(
    "vmdk.footer-chained",
    Check::VmdkFooter,
    "the footer's grain directory offset is -1 too: it points to another footer",
);
const FOOTER_MISMATCH: Rule = Rule::error(
    "vmdk.footer-mismatch",
    Check::VmdkFooter,
    "a footer field other than the grain directory offset differs from the header's (OpenStack)",
);
const GRAIN_TABLE_SIZE: Rule = Rule::error(
    "vmdk.grain-table-size",
    Check::InvalidHeader,
    "a grain table has more than 512 entries",
);
const GRAIN_TABLE_COVERAGE: Rule = Rule::error(
    "vmdk.grain-table-coverage",
    Check::InvalidHeader,
    "entries per grain table times the grain size is zero in QEMU's 32-bit arithmetic",
);
const GRAINS_PAST_EOF: Rule = Rule::error(
    "vmdk.grains-past-eof",
    Check::Truncated,
    "the header's grain offset (the metadata size) lies past the end of the file",
);
const GRAIN_SIZE: Rule = Rule::error(
    "vmdk.grain-size",
    Check::InvalidHeader,
    "the grain size is larger than QEMU's limit of 0x200000 sectors (1 GiB)",
);
const GRAIN_DIRECTORY_SIZE: Rule = Rule::error(
    "vmdk.grain-directory-size",
    Check::InvalidHeader,
    "the grain directory has more than QEMU's limit of 32 Mi entries",
);
const CAPACITY_OVERFLOW: Rule = Rule::error(
    "vmdk.capacity-overflow",
    Check::InvalidHeader,
    "the capacity in sectors is more than 2^63 bytes",
);
const GRAIN_DIRECTORY_PAST_EOF: Rule = Rule::error(
    "vmdk.grain-directory-past-eof",
    Check::Truncated,
    "the grain directory or the redundant grain directory runs past the end of the file",
);
const EMBEDDED_DESCRIPTOR_AT: Rule = Rule::error(
    "vmdk.embedded-descriptor-offset",
    Check::InvalidHeader,
    "the embedded descriptor is not at sector 1, where QEMU reads it (OpenStack)",
);
const CREATE_TYPE: Rule = Rule::error(
    "vmdk.create-type",
    Check::VmdkCreateType,
    "the createType is neither monolithicSparse nor streamOptimized",
);
const MISSING_CREATE_TYPE: Rule = Rule::error(
    "vmdk.missing-create-type",
    Check::InvalidHeader,
    "the descriptor has no createType",
);
const SPARSE_CREATE_TYPE_IN_FILE: Rule = Rule::error(
    "vmdk.sparse-create-type-in-file",
    Check::InvalidHeader,
    "a descriptor file says monolithicSparse or streamOptimized, which only a sparse extent's embedded descriptor may say",
);
const DESCRIPTOR_NOT_ASCII: Rule = Rule::error(
    "vmdk.descriptor-not-ascii",
    Check::InvalidHeader,
    "the descriptor is not ASCII text (OpenStack)",
);
const DESCRIPTOR_LINE: Rule = Rule::error(
    "vmdk.descriptor-line",
    Check::InvalidHeader,
    "a descriptor line is not a comment, `ddb` line, `key=value` field or extent line (OpenStack)",
);
const NO_EXTENTS: Rule = Rule::error(
    "vmdk.no-extents",
    Check::InvalidHeader,
    "the descriptor lists no extent line",
);
const EXTENT_FILE: Rule = Rule::error(
    "vmdk.extent-file",
    Check::VmdkExtentPath,
    "a descriptor file's extent keeps guest data in another file, which is never opened",
);
const EMBEDDED_EXTENT_PATH: Rule = Rule::error(
    "vmdk.embedded-extent-path",
    Check::VmdkExtentPath,
    "an embedded descriptor's extent names a path (contains `/`)",
);
const DESCRIPTOR_FILE_SIZE: Rule = Rule::error(
    "vmdk.descriptor-file-size",
    Check::InvalidHeader,
    "a descriptor file is larger than 1 MiB; QEMU would ignore the rest",
);
const EXTENT_LINE: Rule = Rule::error(
    "vmdk.extent-line",
    Check::InvalidHeader,
    "QEMU cannot parse an extent line (`vmdk_parse_extents()`: Invalid extent line)",
);
const EXTENT_SIZE_OVERFLOW: Rule = Rule::error(
    "vmdk.extent-size-overflow",
    Check::InvalidHeader,
    "the extents QEMU opens add up to more than 2^63 bytes",
);
const PARENT: Rule = Rule::error(
    "vmdk.parent",
    Check::BackingFile,
    "the descriptor names a parent (`parentFileNameHint`) that supplies unallocated grains",
);
const PARENT_HINT: Rule = Rule::error(
    "vmdk.parent-hint",
    Check::InvalidHeader,
    "the `parentFileNameHint` is unterminated or longer than 4095 bytes",
);
const CID: Rule = Rule::error(
    "vmdk.cid",
    Check::InvalidHeader,
    "the descriptor has no readable `CID` or `parentCID` in QEMU's 10 KiB window",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    SIGNATURE,
    LEGACY_SPARSE,
    VERSION,
    DESCRIPTOR_OFFSET_OVERFLOW,
    FOOTER_MISSING,
    FOOTER_MARKERS,
    FOOTER_MAGIC,
    FOOTER_PADDING,
    FOOTER_CHAINED,
    FOOTER_MISMATCH,
    GRAIN_TABLE_SIZE,
    GRAIN_TABLE_COVERAGE,
    GRAINS_PAST_EOF,
    GRAIN_SIZE,
    GRAIN_DIRECTORY_SIZE,
    CAPACITY_OVERFLOW,
    GRAIN_DIRECTORY_PAST_EOF,
    EMBEDDED_DESCRIPTOR_AT,
    CREATE_TYPE,
    MISSING_CREATE_TYPE,
    SPARSE_CREATE_TYPE_IN_FILE,
    DESCRIPTOR_NOT_ASCII,
    DESCRIPTOR_LINE,
    NO_EXTENTS,
    EXTENT_FILE,
    EMBEDDED_EXTENT_PATH,
    DESCRIPTOR_FILE_SIZE,
    EXTENT_LINE,
    EXTENT_SIZE_OVERFLOW,
    PARENT,
    PARENT_HINT,
    CID,
];

/// A report of an image that cannot be read at all: `rule` fired.
fn refused(rule: Rule, detail: impl Into<String>) -> FormatReport {
    FormatReport {
        findings: vec![rule.finding(detail)],
        ..FormatReport::default()
    }
}

/// Sector size of every VMDK offset and size.
const SECTOR: u64 = 512;
/// The largest descriptor QEMU (`vmdk_read_desc()`) and OpenStack read: 1 MiB − 1.
pub const MAX_DESCRIPTOR_LEN: u64 = (1 << 20) - 1;
/// Where QEMU reads the CIDs and parent of a sparse extent (`s->desc_offset = 0x200`), and
/// the only descriptor location OpenStack accepts.
const EMBEDDED_DESCRIPTOR_OFFSET: u64 = 0x200;
/// `vmdk_open_vmdk4()`: at most 512 grain table entries per grain table.
const MAX_GTES_PER_GT: u32 = 512;
/// `vmdk_add_extent()`: grains over 0x200000 sectors (1 GiB) are refused.
const MAX_GRANULARITY: u64 = 0x20_0000;
/// `vmdk_add_extent()`: grain directories over 32 Mi entries are refused.
const MAX_L1_ENTRIES: u32 = 32 * 1024 * 1024;
/// `VMDK4_FLAG_RGD`: a redundant grain directory is present.
const FLAG_RGD: u32 = 1 << 1;
/// The create types a cloud accepts (OpenStack `vmdk_allowed_types`' default).
const ALLOWED_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];
/// The create types QEMU opens from a descriptor file (`vmdk_open_desc_file()`).
const QEMU_DESCRIPTOR_TYPES: [&str; 6] = [
    "monolithicFlat",
    "vmfs",
    "vmfsSparse",
    "seSparse",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
];
/// At most this many `vmdk-extent-path` findings are listed one by one.
const MAX_EXTENT_FINDINGS: usize = 8;
/// The prefix of every VMware-written descriptor file.
const DESCRIPTOR_BANNER: &[u8] = b"# Disk DescriptorFile";
/// QEMU probes text descriptors in the first 512 bytes (`BLOCK_PROBE_BUF_SIZE`).
const TEXT_PROBE_LEN: usize = 512;

/// Which kind of VMDK file the probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmdkDetection {
    /// A hosted sparse extent starting with `KDMV`, descriptor embedded.
    Sparse,
    /// A VMDK3 / ESX sparse extent starting with `COWD` (QEMU's `vmfsSparse`).
    LegacySparse,
    /// A bare text descriptor file.
    Descriptor,
}

/// `qemu-img info`'s VMDK `format-specific.data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmdkSpecific {
    /// Content ID.
    pub cid: u32,
    /// Parent content ID (0xffffffff when there is no parent).
    pub parent_cid: u32,
    /// The create type: from the header for sparse extents, from the descriptor otherwise.
    pub create_type: String,
    /// The extents, as QEMU lists them.
    pub extents: Vec<VmdkExtentInfo>,
}

/// One extent in `format-specific.data.extents` (QAPI `VmdkExtentInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmdkExtentInfo {
    /// The extent's file name as QEMU would open it: the image itself for a sparse image,
    /// otherwise the descriptor's name, relative to the descriptor's directory.
    pub filename: String,
    /// The extent type from the descriptor (`FLAT`, `SPARSE`, ...); empty for the extent of a
    /// sparse image, which has no descriptor line of its own to QEMU.
    pub format: String,
    /// Size in bytes.
    pub virtual_size: u64,
    /// Grain size in bytes, for a sparse extent whose header was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Present (and true) for a compressed (streamOptimized) extent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed: Option<bool>,
    /// Where the extent lives; `filename` is derived from it once the image path is known.
    #[serde(skip)]
    pub location: ExtentLocation,
}

/// Where an extent's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentLocation {
    /// In the image file itself.
    ThisFile,
    /// In the file the descriptor names (never opened).
    Named(String),
}

impl VmdkSpecific {
    /// Names each extent as QEMU does for an image opened as `image_path`: the image path for
    /// its own extent; an absolute extent name as is; a relative one after the image's
    /// directory (`bdrv_dirname()`, which keeps the trailing `/`).
    pub fn resolve_paths(&mut self, image_path: &str) {
        let dir = image_path
            .rfind('/')
            .map_or("", |i| &image_path[..=i])
            .to_string();
        for e in &mut self.extents {
            e.filename = match &e.location {
                ExtentLocation::ThisFile => image_path.to_string(),
                ExtentLocation::Named(n) if n.starts_with('/') => n.clone(),
                ExtentLocation::Named(n) => format!("{dir}{n}"),
            };
        }
    }
}

/// QEMU's `vmdk_probe()` for text: comment lines and lines of spaces, then `version=1`, `2`
/// or `3` at the start of a line.
fn qemu_probes_text(buf: &[u8]) -> bool {
    let mut p = 0usize;
    while p < buf.len() {
        match buf[p] {
            b'#' => {
                while p < buf.len() && buf[p] != b'\n' {
                    p += 1;
                }
                p += 1;
            }
            b' ' => {
                while p < buf.len() && buf[p] == b' ' {
                    p += 1;
                }
                if p < buf.len() && buf[p] == b'\r' {
                    p += 1;
                }
                if p == buf.len() || buf[p] != b'\n' {
                    return false;
                }
                p += 1;
            }
            _ => {
                let rest = &buf[p..];
                return [b"1", b"2", b"3"].iter().any(|v| {
                    let mut lf = b"version=".to_vec();
                    lf.extend_from_slice(*v);
                    let mut crlf = lf.clone();
                    lf.push(b'\n');
                    crlf.extend_from_slice(b"\r\n");
                    rest.starts_with(&lf) || rest.starts_with(&crlf)
                });
            }
        }
    }
    false
}

/// Whether the probe carries a VMDK signature: a sparse extent magic, or a text descriptor
/// (the VMware banner, or what QEMU's probe accepts).
pub fn detect(probe: &Probe) -> Option<VmdkDetection> {
    let head = &probe.head;
    if head.starts_with(sparse::MAGIC) {
        Some(VmdkDetection::Sparse)
    } else if head.starts_with(sparse::LEGACY_MAGIC) {
        Some(VmdkDetection::LegacySparse)
    } else if head.starts_with(DESCRIPTOR_BANNER)
        || qemu_probes_text(&head[..head.len().min(TEXT_PROBE_LEN)])
    {
        Some(VmdkDetection::Descriptor)
    } else {
        None
    }
}

/// Describes the image as `qemu-img info -f vmdk` would, without opening any extent file.
/// Extent file names are relative until [`VmdkSpecific::resolve_paths`] runs.
pub fn describe<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    match detect(probe) {
        Some(VmdkDetection::Sparse) => describe_sparse(src, probe),
        Some(VmdkDetection::Descriptor) => describe_descriptor_file(src, probe, 0, 0),
        Some(VmdkDetection::LegacySparse) => Ok(refused(
            LEGACY_SPARSE,
            "the image is a VMDK3 (COWD) sparse extent; only VMDK4 (KDMV) sparse images are accepted",
        )),
        None => Ok(refused(
            SIGNATURE,
            "the image has neither a VMDK sparse header nor a text descriptor",
        )),
    }
}

/// A hosted sparse extent (`vmdk_open_vmdk4()`).
fn describe_sparse<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let mut sector = [0u8; SECTOR as usize];
    let n = probe.head.len().min(sector.len());
    sector[..n].copy_from_slice(&probe.head[..n]);
    let header = SparseHeader::parse(&sector);
    if header.capacity == 0 && header.desc_offset != 0 {
        // QEMU then reads the embedded descriptor as a descriptor file and opens its extents.
        let Some(offset) = header.desc_offset.checked_mul(SECTOR) else {
            return Ok(refused(
                DESCRIPTOR_OFFSET_OVERFLOW,
                format!(
                    "the VMDK descriptor offset (sector {}) overflows",
                    header.desc_offset
                ),
            ));
        };
        return describe_descriptor_file(src, probe, offset, EMBEDDED_DESCRIPTOR_OFFSET);
    }
    let mut report = FormatReport::default();
    let invalid = |rule: Rule, d: String| rule.finding(d);

    let mut h = header;
    if header.gd_offset == GD_AT_END {
        let Some(area_offset) = probe
            .len
            .next_multiple_of(SECTOR)
            .checked_sub(FOOTER_AREA_LEN as u64)
            .filter(|&o| o >= SECTOR)
        else {
            report.findings.push(FOOTER_MISSING.finding("the header says the grain directory is in a footer, but the file is too short to have one",
            ));
            return Ok(report);
        };
        let mut area = [0u8; FOOTER_AREA_LEN];
        read_zero_padded(src, &mut area, area_offset)?;
        match sparse::check_footer(&header, &area) {
            Ok(footer) => h = footer,
            Err(e) => {
                let rule = match e.fault {
                    FooterFault::Markers => FOOTER_MARKERS,
                    FooterFault::Magic => FOOTER_MAGIC,
                    FooterFault::Padding => FOOTER_PADDING,
                    FooterFault::Chained => FOOTER_CHAINED,
                    FooterFault::Mismatch => FOOTER_MISMATCH,
                };
                report.findings.push(rule.finding(format!(
                    "the streamOptimized footer is invalid: {}",
                    e.detail
                )));
                return Ok(report);
            }
        }
    }
    if h.version > 3 {
        report
            .findings
            .push(VERSION.finding(format!("the VMDK version is {}, not 1, 2 or 3", h.version)));
        return Ok(report);
    }
    if h.num_gtes_per_gt > MAX_GTES_PER_GT {
        report.findings.push(invalid(
            GRAIN_TABLE_SIZE,
            format!(
                "the VMDK grain tables have {} entries, more than 512",
                h.num_gtes_per_gt
            ),
        ));
        return Ok(report);
    }
    // QEMU computes this in 32 bits; a product that truncates to zero is refused.
    let l1_entry_sectors = u64::from(h.num_gtes_per_gt).wrapping_mul(h.granularity) as u32;
    if l1_entry_sectors == 0 {
        report.findings.push(invalid(
            GRAIN_TABLE_COVERAGE,
            format!(
                "the VMDK grain tables cover no sectors ({} entries of {} sectors)",
                h.num_gtes_per_gt, h.granularity
            ),
        ));
        return Ok(report);
    }
    let l1_size = (h.capacity.wrapping_add(u64::from(l1_entry_sectors) - 1)
        / u64::from(l1_entry_sectors)) as u32;
    let file_sectors = probe.len.div_ceil(SECTOR);
    if file_sectors < h.grain_offset {
        report.findings.push(GRAINS_PAST_EOF.finding(format!(
            "the VMDK grains start at sector {} but the file has only {file_sectors} sectors",
            h.grain_offset
        )));
        return Ok(report);
    }
    if h.granularity > MAX_GRANULARITY {
        report.findings.push(invalid(
            GRAIN_SIZE,
            format!(
                "the VMDK grain size is {} sectors, more than QEMU's 1 GiB limit",
                h.granularity
            ),
        ));
        return Ok(report);
    }
    if l1_size > MAX_L1_ENTRIES {
        report.findings.push(invalid(GRAIN_DIRECTORY_SIZE, format!(
            "the VMDK grain directory has {l1_size} entries, more than QEMU's limit of {MAX_L1_ENTRIES}"
        )));
        return Ok(report);
    }
    let Some(virtual_size) = h
        .capacity
        .checked_mul(SECTOR)
        .filter(|&s| s <= i64::MAX as u64)
    else {
        report.findings.push(invalid(
            CAPACITY_OVERFLOW,
            format!("the VMDK capacity of {} sectors overflows", h.capacity),
        ));
        return Ok(report);
    };
    // The grain directories must be in the file (QEMU would read zeros past the end).
    let mut directories = vec![("grain directory", h.gd_offset)];
    if h.flags & FLAG_RGD != 0 && h.rgd_offset != 0 {
        directories.push(("redundant grain directory", h.rgd_offset));
    }
    for (what, sector) in directories {
        let len = u64::from(l1_size) * 4;
        let end = sector.checked_mul(SECTOR).and_then(|o| o.checked_add(len));
        if end.is_none_or(|e| e > probe.len) {
            report.findings.push(GRAIN_DIRECTORY_PAST_EOF.finding(format!(
                    "the VMDK {what} ({len} bytes at sector {sector}) runs past the end of the file ({} bytes)",
                    probe.len
                ),
            ));
        }
    }

    report.virtual_size = Some(virtual_size);
    report.cluster_size = Some(h.granularity * SECTOR);
    let compressed = h.compressed();
    check_embedded_descriptor(src, &header, &mut report)?;
    let create_type = if compressed {
        "streamOptimized"
    } else {
        "monolithicSparse"
    };
    let extents = vec![VmdkExtentInfo {
        filename: String::new(),
        format: String::new(),
        virtual_size,
        cluster_size: Some(h.granularity * SECTOR),
        compressed: compressed.then_some(true),
        location: ExtentLocation::ThisFile,
    }];
    finish(
        src,
        EMBEDDED_DESCRIPTOR_OFFSET,
        create_type,
        extents,
        &mut report,
    )?;
    Ok(report)
}

/// OpenStack's checks of a sparse extent's embedded descriptor: at sector 1 (where QEMU
/// reads it), at most 1 MiB, the strict grammar, an allowed create type, and extents that
/// name no path.
fn check_embedded_descriptor<S: ReadAt + ?Sized>(
    src: &S,
    header: &SparseHeader,
    report: &mut FormatReport,
) -> io::Result<()> {
    if header.desc_offset != EMBEDDED_DESCRIPTOR_OFFSET / SECTOR {
        report.findings.push(EMBEDDED_DESCRIPTOR_AT.finding(format!(
            "the VMDK embedded descriptor is at sector {}, not sector 1 where QEMU reads it",
            header.desc_offset
        )));
        return Ok(());
    }
    // At most 1 MiB - 1 (MAX_DESCRIPTOR_LEN), whatever the header claims. Past the end of the
    // file the area reads as zeros, as QEMU's `vmdk_read_desc()` reads it: the text ends at
    // its first NUL, so a header that overstates the descriptor's size in a short file (a
    // streamOptimized image of compressible data) is no truncation.
    let len = header
        .desc_size
        .saturating_mul(SECTOR)
        .min(MAX_DESCRIPTOR_LEN) as usize;
    let mut region = vec![0u8; len];
    read_zero_padded(src, &mut region, EMBEDDED_DESCRIPTOR_OFFSET)?;
    check_grammar(&region, false, report);
    match descriptor::create_type(descriptor::c_text(&region)) {
        Some(ct) if ALLOWED_CREATE_TYPES.contains(&ct.as_str()) => {}
        Some(ct) => report.findings.push(CREATE_TYPE.finding(format!(
                "the embedded descriptor's createType is {ct:?}; only monolithicSparse and streamOptimized are accepted"
            ),
        )),
        None => report.findings.push(MISSING_CREATE_TYPE.finding("the VMDK embedded descriptor has no createType",
        )),
    }
    Ok(())
}

/// Applies OpenStack's grammar. In a descriptor file (`names_files`) every extent line names
/// another file; in a sparse image's embedded descriptor only a path separator is refused,
/// since QEMU never opens those names.
fn check_grammar(region: &[u8], names_files: bool, report: &mut FormatReport) {
    let g = descriptor::grammar(region);
    if g.not_ascii {
        report
            .findings
            .push(DESCRIPTOR_NOT_ASCII.finding("the VMDK descriptor is not ASCII text"));
    } else if let Some((n, line)) = &g.bad_line {
        report.findings.push(DESCRIPTOR_LINE.finding(format!(
            "line {n} of the VMDK descriptor is not a comment, field or extent: {line:?}"
        )));
    }
    if g.extents.is_empty() {
        report
            .findings
            .push(NO_EXTENTS.finding("the VMDK descriptor lists no extents"));
    }
    let offending: Vec<&String> = g
        .extents
        .iter()
        .filter(|l| names_files || l.contains('/'))
        .collect();
    let extent_rule = if names_files {
        EXTENT_FILE
    } else {
        EMBEDDED_EXTENT_PATH
    };
    for line in offending.iter().take(MAX_EXTENT_FINDINGS) {
        let shown: String = line.chars().take(200).collect();
        let detail = if names_files {
            format!(
                "the descriptor keeps guest data in another file (extent {shown:?}); extent files are never opened"
            )
        } else {
            format!("the embedded descriptor's extent {shown:?} names a path")
        };
        report.findings.push(extent_rule.finding(detail));
    }
    if offending.len() > MAX_EXTENT_FINDINGS {
        report.findings.push(extent_rule.finding(format!(
            "the descriptor names {} more extent files",
            offending.len() - MAX_EXTENT_FINDINGS
        )));
    }
}

/// A descriptor file (or a sparse header whose embedded descriptor QEMU treats as one):
/// `vmdk_open_desc_file()` and `vmdk_parse_extents()`, with every extent refused and none
/// opened. `offset` is where the descriptor starts; `cid_offset` where QEMU looks for the
/// CIDs.
fn describe_descriptor_file<S: ReadAt + ?Sized>(
    src: &S,
    probe: &Probe,
    offset: u64,
    cid_offset: u64,
) -> io::Result<FormatReport> {
    let mut report = FormatReport::default();
    if offset == 0 && probe.len > MAX_DESCRIPTOR_LEN {
        report.findings.push(DESCRIPTOR_FILE_SIZE.finding(format!(
                "the VMDK descriptor file is {} bytes; a descriptor is at most 1 MiB, and QEMU would ignore the rest",
                probe.len
            ),
        ));
    }
    // QEMU reads min(file length, 1 MiB - 1) bytes from the descriptor offset.
    let mut buf = vec![0u8; probe.len.min(MAX_DESCRIPTOR_LEN) as usize];
    read_zero_padded(src, &mut buf, offset)?;
    let text = descriptor::c_text(&buf);
    check_grammar(&buf, true, &mut report);

    let Some(create_type) = descriptor::create_type(text) else {
        report
            .findings
            .push(MISSING_CREATE_TYPE.finding("the VMDK descriptor has no createType"));
        return Ok(report);
    };
    if ALLOWED_CREATE_TYPES.contains(&create_type.as_str()) {
        report.findings.push(SPARSE_CREATE_TYPE_IN_FILE.finding(format!(
                "a descriptor file says createType {create_type:?}, which only a sparse extent's embedded descriptor may say"
            ),
        ));
    } else {
        report.findings.push(CREATE_TYPE.finding(format!(
                "the createType is {create_type:?}; only monolithicSparse and streamOptimized are accepted"
            ),
        ));
    }
    let qemu_opens = QEMU_DESCRIPTOR_TYPES.contains(&create_type.as_str());

    let mut extents = Vec::new();
    let mut total: Option<u64> = Some(0);
    let mut unparsable = false;
    for outcome in descriptor::scan_extents(text) {
        match outcome {
            ExtentOutcome::Opened(l) => {
                let size = u64::try_from(l.sectors)
                    .ok()
                    .and_then(|s| s.checked_mul(SECTOR));
                total = total.zip(size).and_then(|(t, s)| t.checked_add(s));
                extents.push(VmdkExtentInfo {
                    filename: String::new(),
                    format: l.kind,
                    virtual_size: size.unwrap_or(u64::MAX),
                    cluster_size: None,
                    compressed: None,
                    location: ExtentLocation::Named(l.file),
                });
            }
            ExtentOutcome::Invalid(line) => {
                report.findings.push(
                    EXTENT_LINE.finding(format!("QEMU cannot parse the VMDK extent line {line:?}")),
                );
                unparsable = true;
            }
            ExtentOutcome::Skipped => {}
        }
    }
    if qemu_opens && !unparsable && !extents.is_empty() {
        match total.filter(|&t| t <= i64::MAX as u64) {
            Some(t) => report.virtual_size = Some(t),
            None => report.findings.push(
                EXTENT_SIZE_OVERFLOW.finding("the VMDK extents add up to more than 2^63 bytes"),
            ),
        }
    }
    finish(src, cid_offset, &create_type, extents, &mut report)?;
    Ok(report)
}

/// Reads the CIDs and the parent from QEMU's 10 KiB window at `cid_offset`, and fills in the
/// format-specific facts (only when QEMU could have printed them: both CIDs readable).
fn finish<S: ReadAt + ?Sized>(
    src: &S,
    cid_offset: u64,
    create_type: &str,
    extents: Vec<VmdkExtentInfo>,
    report: &mut FormatReport,
) -> io::Result<()> {
    let mut window = vec![0u8; CID_WINDOW];
    read_zero_padded(src, &mut window, cid_offset)?;
    match descriptor::parent_hint(&window) {
        ParentHint::None => {}
        ParentHint::Name(name) => {
            report.findings.push(PARENT.finding(format!(
                "the image reads unallocated grains from the parent {name:?} (parentFileNameHint)"
            )));
            report.backing_filename = Some(name);
            report.backing_format = Some("vmdk".to_string());
        }
        ParentHint::Invalid => report.findings.push(
            PARENT_HINT
                .finding("the VMDK parentFileNameHint is unterminated or longer than 4095 bytes"),
        ),
    }
    let cid = descriptor::read_cid(&window, false);
    let parent_cid = descriptor::read_cid(&window, true);
    let (Some(cid), Some(parent_cid)) = (cid, parent_cid) else {
        report.findings.push(CID.finding(format!(
            "the VMDK descriptor has no readable {} in its first 10 KiB",
            if cid.is_none() { "CID" } else { "parentCID" }
        )));
        // QEMU fails the open here, so it reports no size at all.
        report.virtual_size = None;
        report.cluster_size = None;
        return Ok(());
    };
    report.format_specific = Some(FormatSpecific::Vmdk(VmdkSpecific {
        cid,
        parent_cid,
        create_type: create_type.to_string(),
        extents,
    }));
    Ok(())
}

#[cfg(test)]
mod tests;
