//! QED (QEMU Enhanced Disk) images, read the way QEMU's `block/qed.c` opens them.
//!
//! QED is deprecated and every QED image is refused (the `qed` rule lives in
//! [`crate::inspect()`]); this module still reports what `qemu-img info -f qed` prints, so the
//! refusal can say what the image was. The 64-byte little-endian header (`docs/interop/qed_spec.txt`,
//! `block/qed.h`) holds the cluster and table sizes, the L1 table offset, the virtual size
//! and an optional backing file name stored in the header clusters.

use std::io;

use super::bytes::{le32, le64};
use super::{FormatReport, Probe, c_string, read_failure_with};
use crate::safety::{Check, Finding, Rule};
use crate::source::{ReadAt, read_vec_at};

const UNKNOWN_FEATURES: Rule = Rule::error(
    "qed.unknown-features",
    Check::InvalidHeader,
    "the header sets feature bits QEMU does not know (`QED_FEATURE_MASK`)",
);
const CLUSTER_SIZE: Rule = Rule::error(
    "qed.cluster-size",
    Check::InvalidHeader,
    "the cluster size is not a power of two from 4 KiB to 64 MiB",
);
const TABLE_SIZE: Rule = Rule::error(
    "qed.table-size",
    Check::InvalidHeader,
    "the table size is not a power of two from 1 to 16 clusters",
);
const IMAGE_SIZE: Rule = Rule::error(
    "qed.image-size",
    Check::InvalidHeader,
    "the image size is not a multiple of 512, or larger than the L1 and L2 tables address",
);
const L1_TABLE_ROOM: Rule = Rule::error(
    "qed.l1-table-room",
    Check::InvalidHeader,
    "the L1 table's end does not lie after its offset (QEMU's overflow test, which a one-cluster table fails too)",
);
const L1_TABLE_ALIGNMENT: Rule = Rule::error(
    "qed.l1-table-alignment",
    Check::InvalidHeader,
    "the L1 table offset is not cluster-aligned",
);
const L1_TABLE_OVERLAPS_HEADER: Rule = Rule::error(
    "qed.l1-table-overlaps-header",
    Check::InvalidHeader,
    "the L1 table lies inside the header clusters",
);
const L1_TABLE_PAST_EOF: Rule = Rule::error(
    "qed.l1-table-past-eof",
    Check::Truncated,
    "the L1 table runs past the end of the file (rounded down to a cluster)",
);
const HEADER_SIZE: Rule = Rule::error(
    "qed.header-size",
    Check::InvalidHeader,
    "the header size in clusters overflows 32 bits of bytes",
);
const BACKING_NAME_OUTSIDE_HEADER: Rule = Rule::error(
    "qed.backing-name-outside-header",
    Check::InvalidHeader,
    "the backing file name lies outside the header clusters",
);
const BACKING_NAME_LENGTH: Rule = Rule::error(
    "qed.backing-name-length",
    Check::InvalidHeader,
    "the backing file name is longer than QEMU's limit of 4095 bytes",
);
const NEED_CHECK: Rule = Rule::warning(
    "qed.need-check",
    Check::DirtyBit,
    "the need-check feature is set: the image was not closed cleanly",
);
const BACKING_FILE: Rule = Rule::error(
    "qed.backing-file",
    Check::BackingFile,
    "the image names a backing file that supplies unallocated clusters",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
const HEADER_TRUNCATED: Rule = Rule::error(
    "qed.header-truncated",
    Check::Truncated,
    "the file ends inside the QED header (its 64 bytes, or the header clusters holding the backing file name)",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    HEADER_TRUNCATED,
    UNKNOWN_FEATURES,
    CLUSTER_SIZE,
    TABLE_SIZE,
    IMAGE_SIZE,
    L1_TABLE_ROOM,
    L1_TABLE_ALIGNMENT,
    L1_TABLE_OVERLAPS_HEADER,
    L1_TABLE_PAST_EOF,
    HEADER_SIZE,
    BACKING_NAME_OUTSIDE_HEADER,
    BACKING_NAME_LENGTH,
    NEED_CHECK,
    BACKING_FILE,
];

/// `QED\0`, little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"QED\0");
/// The header length (`QEDHeader`).
const HEADER_LEN: usize = 64;
/// Feature bits (`QED_F_*`).
const F_BACKING_FILE: u64 = 1;
const F_NEED_CHECK: u64 = 2;
const F_BACKING_FORMAT_NO_PROBE: u64 = 4;
/// Every feature bit QEMU knows (`QED_FEATURE_MASK`); others make it refuse the image.
const FEATURE_MASK: u64 = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE;
/// Cluster size limits (`QED_MIN_CLUSTER_SIZE`, `QED_MAX_CLUSTER_SIZE`).
const MIN_CLUSTER_SIZE: u32 = 4 * 1024;
const MAX_CLUSTER_SIZE: u32 = 64 * 1024 * 1024;
/// Table size limits in clusters (`QED_MIN_TABLE_SIZE`, `QED_MAX_TABLE_SIZE`).
const MIN_TABLE_SIZE: u32 = 1;
const MAX_TABLE_SIZE: u32 = 16;
/// `sizeof(bs->backing_file)` (`PATH_MAX`): longer names make `qed_read_string` fail.
const MAX_BACKING_NAME: u32 = 4096;

/// Header field offsets (`QEDHeader`).
mod off {
    pub const CLUSTER_SIZE: usize = 4;
    pub const TABLE_SIZE: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const FEATURES: usize = 16;
    pub const L1_TABLE_OFFSET: usize = 40;
    pub const IMAGE_SIZE: usize = 48;
    pub const BACKING_NAME_OFFSET: usize = 56;
    pub const BACKING_NAME_SIZE: usize = 60;
}

/// Whether the probe starts with the QED magic.
pub fn detect(probe: &Probe) -> bool {
    probe.head_bytes(0, 4).is_some_and(|b| le32(b, 0) == MAGIC)
}

/// The QED header fields QEMU checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QedHeader {
    /// Cluster size in bytes.
    pub cluster_size: u32,
    /// L1/L2 table size in clusters.
    pub table_size: u32,
    /// Header size in clusters.
    pub header_size: u32,
    /// Incompatible feature bits.
    pub features: u64,
    /// L1 table offset.
    pub l1_table_offset: u64,
    /// Virtual size in bytes.
    pub image_size: u64,
    /// Backing file name offset.
    pub backing_name_offset: u32,
    /// Backing file name length.
    pub backing_name_size: u32,
}

impl QedHeader {
    /// Decodes the 64-byte header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            cluster_size: le32(b, off::CLUSTER_SIZE),
            table_size: le32(b, off::TABLE_SIZE),
            header_size: le32(b, off::HEADER_SIZE),
            features: le64(b, off::FEATURES),
            l1_table_offset: le64(b, off::L1_TABLE_OFFSET),
            image_size: le64(b, off::IMAGE_SIZE),
            backing_name_offset: le32(b, off::BACKING_NAME_OFFSET),
            backing_name_size: le32(b, off::BACKING_NAME_SIZE),
        }
    }

    /// `qed_max_image_size()`: what two levels of tables can address.
    fn max_image_size(&self) -> u128 {
        let entries = u128::from(self.table_size) * u128::from(self.cluster_size) / 8;
        entries * u128::from(self.cluster_size) * entries
    }

    /// `bdrv_qed_do_open()`'s checks, in its order: the first rule broken, as a finding.
    /// `file_len` is the image length.
    fn validate(&self, file_len: u64) -> Option<Finding> {
        let invalid = |rule: Rule, d: String| Some(rule.finding(d));
        let unknown = self.features & !FEATURE_MASK;
        if unknown != 0 {
            return invalid(
                UNKNOWN_FEATURES,
                format!("the QED header sets unknown feature bits {unknown:#x}"),
            );
        }
        let cs = self.cluster_size;
        if !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cs) || !cs.is_power_of_two() {
            return invalid(
                CLUSTER_SIZE,
                format!("the QED cluster size is {cs}, not a power of two from 4 KiB to 64 MiB"),
            );
        }
        let ts = self.table_size;
        if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&ts) || !ts.is_power_of_two() {
            return invalid(
                TABLE_SIZE,
                format!("the QED table size is {ts} clusters, not a power of two from 1 to 16"),
            );
        }
        if !self.image_size.is_multiple_of(512)
            || u128::from(self.image_size) > self.max_image_size()
        {
            return invalid(
                IMAGE_SIZE,
                format!(
                    "the QED image size {} is not a multiple of 512 within the {} bytes the tables address",
                    self.image_size,
                    self.max_image_size()
                ),
            );
        }
        if let Some(f) = self.check_l1_offset(file_len) {
            return Some(f);
        }
        if u64::from(self.header_size) > u64::from(u32::MAX / cs) {
            return invalid(
                HEADER_SIZE,
                format!(
                    "the QED header size of {} clusters overflows",
                    self.header_size
                ),
            );
        }
        if self.features & F_BACKING_FILE != 0 {
            let end = u64::from(self.backing_name_offset) + u64::from(self.backing_name_size);
            let header_bytes = u64::from(self.header_size) * u64::from(cs);
            if end > header_bytes {
                return invalid(
                    BACKING_NAME_OUTSIDE_HEADER,
                    format!(
                        "the QED backing file name ({} bytes at offset {:#x}) lies outside the {header_bytes}-byte header",
                        self.backing_name_size, self.backing_name_offset
                    ),
                );
            }
            if self.backing_name_size >= MAX_BACKING_NAME {
                return invalid(
                    BACKING_NAME_LENGTH,
                    format!(
                        "the QED backing file name is {} bytes, longer than QEMU's limit of {}",
                        self.backing_name_size,
                        MAX_BACKING_NAME - 1
                    ),
                );
            }
        }
        None
    }

    /// `qed_check_table_offset()`: the L1 table lies in whole clusters after the header and
    /// before the end of the file (rounded down to a cluster). Like QEMU, a one-cluster table
    /// fails the overflow test (`end <= offset`), so QEMU cannot open `table_size=1` images.
    fn check_l1_offset(&self, file_len: u64) -> Option<Finding> {
        let cs = u64::from(self.cluster_size);
        let offset = self.l1_table_offset;
        let end = offset.wrapping_add((u64::from(self.table_size) - 1) * cs);
        let header_bytes = u64::from(self.header_size) * cs;
        let file_size = file_len - file_len % cs;
        let invalid = |rule: Rule, why: &str| {
            Some(rule.finding(format!("the QED L1 table offset {offset:#x} {why}")))
        };
        if end <= offset {
            return invalid(
                L1_TABLE_ROOM,
                "leaves no room for a table of more than one cluster",
            );
        }
        if !offset.is_multiple_of(cs) {
            return invalid(L1_TABLE_ALIGNMENT, "is not cluster-aligned");
        }
        if offset < header_bytes || end < header_bytes {
            return invalid(L1_TABLE_OVERLAPS_HEADER, "overlaps the header");
        }
        if offset >= file_size || end >= file_size {
            return Some(L1_TABLE_PAST_EOF.finding(format!(
                    "the QED L1 table ({} clusters at offset {offset:#x}) runs past the end of the file ({file_len} bytes)",
                    self.table_size
                ),
            ));
        }
        None
    }
}

/// Describes the image as `qemu-img info -f qed` would. The backing file is reported, never
/// opened.
pub fn describe<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let bytes = match probe.head_header_with::<HEADER_LEN>(HEADER_TRUNCATED, "the QED header") {
        Ok(bytes) => bytes,
        Err(finding) => {
            return Ok(FormatReport {
                findings: vec![finding],
                ..FormatReport::default()
            });
        }
    };
    let header = QedHeader::parse(bytes);
    if let Some(finding) = header.validate(probe.len) {
        return Ok(FormatReport {
            findings: vec![finding],
            ..FormatReport::default()
        });
    }
    let mut report = FormatReport {
        virtual_size: Some(header.image_size),
        cluster_size: Some(u64::from(header.cluster_size)),
        dirty: header.features & F_NEED_CHECK != 0,
        ..FormatReport::default()
    };
    if report.dirty {
        report.findings.push(
            NEED_CHECK
                .finding("the QED need-check feature is set: the image was not closed cleanly"),
        );
    }
    if header.features & F_BACKING_FILE != 0 {
        // The size was capped at MAX_BACKING_NAME by validate().
        let name = match read_vec_at(
            src,
            u64::from(header.backing_name_offset),
            header.backing_name_size as usize,
        ) {
            Ok(raw) => c_string(&raw),
            Err(e) => {
                report.findings.push(read_failure_with(
                    HEADER_TRUNCATED,
                    e,
                    "QED backing file name",
                )?);
                return Ok(report);
            }
        };
        report.findings.push(BACKING_FILE.finding(format!(
            "the image reads unallocated clusters from the backing file {name:?}"
        )));
        report.backing_filename = Some(name);
        if header.features & F_BACKING_FORMAT_NO_PROBE != 0 {
            report.backing_format = Some("raw".to_string());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// An image as `bdrv_qed_co_create()` writes it (64 KiB clusters, 4-cluster tables).
    fn image(size: u64, backing: Option<&str>) -> Vec<u8> {
        let cs = 64 * 1024u32;
        let mut d = vec![0u8; cs as usize * 5];
        let mut put = |o: usize, v: &[u8]| d[o..o + v.len()].copy_from_slice(v);
        put(0, &MAGIC.to_le_bytes());
        put(off::CLUSTER_SIZE, &cs.to_le_bytes());
        put(off::TABLE_SIZE, &4u32.to_le_bytes());
        put(off::HEADER_SIZE, &1u32.to_le_bytes());
        put(off::L1_TABLE_OFFSET, &u64::from(cs).to_le_bytes());
        put(off::IMAGE_SIZE, &size.to_le_bytes());
        if let Some(name) = backing {
            put(off::FEATURES, &F_BACKING_FILE.to_le_bytes());
            put(off::BACKING_NAME_OFFSET, &64u32.to_le_bytes());
            put(off::BACKING_NAME_SIZE, &(name.len() as u32).to_le_bytes());
            put(64, name.as_bytes());
        }
        d
    }

    fn describe_bytes(d: &[u8]) -> FormatReport {
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
    fn truncated_header() {
        let d = image(1 << 20, None);
        assert_fires(only(&describe_bytes(&d[..40])), "qed.header-truncated");
        // The backing file name lies in the header clusters, before the L1 table, which must
        // end inside the file (`qed.l1-table-past-eof`): only a file that shrinks while it is
        // read ends inside the name, and that is the same rule as a short header.
    }

    #[test]
    fn a_fresh_image_is_described() {
        let r = describe_bytes(&image(64 << 20, None));
        assert_eq!(r.virtual_size, Some(64 << 20));
        assert_eq!(r.cluster_size, Some(64 << 10));
        assert!(!r.dirty);
        assert!(r.findings.is_empty());
    }

    #[test]
    fn a_backing_file_is_reported_with_its_format() {
        let r = describe_bytes(&image(64 << 20, Some("base.raw")));
        assert_eq!(r.backing_filename.as_deref(), Some("base.raw"));
        assert_eq!(r.backing_format, None);
        assert_fires(only(&r), "qed.backing-file");
        let mut d = image(64 << 20, Some("base.raw"));
        d[off::FEATURES] |= F_BACKING_FORMAT_NO_PROBE as u8;
        assert_eq!(describe_bytes(&d).backing_format.as_deref(), Some("raw"));
    }

    #[test]
    fn the_need_check_bit_is_the_dirty_flag() {
        let mut d = image(64 << 20, None);
        d[off::FEATURES] |= F_NEED_CHECK as u8;
        let r = describe_bytes(&d);
        assert!(r.dirty);
        assert_fires(only(&r), "qed.need-check");
    }

    #[test]
    fn every_header_rule_fires() {
        let base = image(64 << 20, None);
        let case = |o: usize, v: &[u8]| {
            let mut d = base.clone();
            d[o..o + v.len()].copy_from_slice(v);
            describe_bytes(&d)
        };
        let fired = case(off::FEATURES, &8u64.to_le_bytes());
        assert_fires(only(&fired), "qed.unknown-features");
        for bad in [2048u32, 100_000] {
            let fired = case(off::CLUSTER_SIZE, &bad.to_le_bytes());
            assert_fires(only(&fired), "qed.cluster-size");
        }
        for bad in [3u32, 32] {
            let fired = case(off::TABLE_SIZE, &bad.to_le_bytes());
            assert_fires(only(&fired), "qed.table-size");
        }
        for bad in [1000u64, 1 << 62] {
            let fired = case(off::IMAGE_SIZE, &bad.to_le_bytes());
            assert_fires(only(&fired), "qed.image-size");
        }
        // A one-cluster table, and an offset whose table end wraps.
        let fired = case(off::TABLE_SIZE, &1u32.to_le_bytes());
        assert_fires(only(&fired), "qed.l1-table-room");
        let fired = case(off::L1_TABLE_OFFSET, &u64::MAX.to_le_bytes());
        assert_fires(only(&fired), "qed.l1-table-room");
        let fired = case(off::L1_TABLE_OFFSET, &0x1000u64.to_le_bytes());
        assert_fires(only(&fired), "qed.l1-table-alignment");
        let fired = case(off::L1_TABLE_OFFSET, &0u64.to_le_bytes());
        assert_fires(only(&fired), "qed.l1-table-overlaps-header");
        let fired = case(off::L1_TABLE_OFFSET, &(1u64 << 40).to_le_bytes());
        assert_fires(only(&fired), "qed.l1-table-past-eof");
        // A backing name outside the header, or too long.
        let mut d = image(64 << 20, Some("b"));
        d[off::BACKING_NAME_OFFSET..off::BACKING_NAME_OFFSET + 4]
            .copy_from_slice(&70_000u32.to_le_bytes());
        assert_fires(only(&describe_bytes(&d)), "qed.backing-name-outside-header");
        let mut d = image(64 << 20, Some("b"));
        d[off::BACKING_NAME_SIZE..off::BACKING_NAME_SIZE + 4]
            .copy_from_slice(&5000u32.to_le_bytes());
        assert_fires(only(&describe_bytes(&d)), "qed.backing-name-length");
        // A header of 64 Ki clusters of 64 KiB is 4 GiB, more than 32 bits: QEMU refuses it
        // once the L1 table lies past it, in a file of 8 GiB.
        let mut d = base.clone();
        d[off::HEADER_SIZE..off::HEADER_SIZE + 4].copy_from_slice(&65_536u32.to_le_bytes());
        d[off::L1_TABLE_OFFSET..off::L1_TABLE_OFFSET + 8]
            .copy_from_slice(&(4u64 << 30).to_le_bytes());
        let header = QedHeader::parse(d[..HEADER_LEN].try_into().expect("64 bytes"));
        let finding = header.validate(8 << 30).expect("refused");
        assert_fires(&[finding], "qed.header-size");
        // A larger header size overlaps the L1 table first.
        let fired = case(off::HEADER_SIZE, &u32::MAX.to_le_bytes());
        assert_fires(only(&fired), "qed.l1-table-overlaps-header");
    }

    #[test]
    fn truncation_at_several_points() {
        let d = image(64 << 20, None);
        for cut in [4, 63] {
            assert_eq!(checks(&describe_bytes(&d[..cut])), [Check::Truncated]);
        }
        for cut in [64, 65536, 4 * 65536] {
            assert_eq!(
                checks(&describe_bytes(&d[..cut])),
                [Check::Truncated],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0xdead_beef_cafe_f00du64;
        for len in [64usize, 100, 4096, 70_000] {
            for _ in 0..50 {
                let mut d: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                d[..4].copy_from_slice(&MAGIC.to_le_bytes());
                let _ = describe_bytes(&d);
            }
        }
    }
}
