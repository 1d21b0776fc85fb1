//! QEMU's legacy `qcow` format (version 1), read the way QEMU 10's `block/qcow.c` opens it.
//!
//! It shares the magic `QFI\xfb` with qcow2 and differs by its version field (1). Its 48-byte
//! big-endian header holds the backing file name's offset and length, the size in bytes, the
//! cluster and L2 table sizes as powers of two, the encryption method (0 none, 1 AES-CBC) and
//! the L1 table's offset. No cloud image service takes qcow images (Glance's `disk_format`
//! list has no qcow, nor have SCP's or IMS's), so every one is refused with the `qcow` rule;
//! the rest of the description is what `qemu-img info` prints for it.
//!
//! Reads past the end of the file read as zeros, as QEMU's file driver answers them: a short
//! header, an L1 table or a backing file name past the end do not stop `qcow_open()`.

use std::io;

use super::bytes::{be32, be64};
use super::{FormatReport, Probe, c_string, read_zero_padded};
use crate::safety::{Check, Finding, Rule};
use crate::source::ReadAt;

/// Every qcow image is refused: no cloud takes the format.
pub const FORMAT: Rule = Rule::error(
    "qcow.format",
    Check::Qcow,
    "QEMU's legacy qcow (version 1) format: no cloud image service accepts it.",
);
/// `size <= 1`.
pub const SIZE_TOO_SMALL: Rule = Rule::error(
    "qcow.size-too-small",
    Check::InvalidHeader,
    "The qcow size is under 2 bytes; QEMU refuses it.",
);
/// cluster_bits outside 9..=16.
pub const CLUSTER_BITS: Rule = Rule::error(
    "qcow.cluster-bits",
    Check::InvalidHeader,
    "The qcow cluster_bits is outside 9..=16 (512 B to 64 KiB); QEMU refuses it.",
);
/// l2_bits outside 6..=13.
pub const L2_BITS: Rule = Rule::error(
    "qcow.l2-bits",
    Check::InvalidHeader,
    "The qcow l2_bits is outside 6..=13 (L2 tables of 512 B to 64 KiB); QEMU refuses it.",
);
/// crypt_method above 1.
pub const CRYPT_METHOD: Rule = Rule::error(
    "qcow.crypt-method",
    Check::InvalidHeader,
    "The qcow encryption method is neither 0 (none) nor 1 (AES); QEMU refuses it.",
);
/// The size needs an L1 table above `INT_MAX / 8` entries.
pub const SIZE_TOO_BIG: Rule = Rule::error(
    "qcow.size-too-big",
    Check::InvalidHeader,
    "The qcow size needs an L1 table above QEMU's limit; QEMU refuses it.",
);
/// The L1 table ends past `BDRV_MAX_LENGTH`.
pub const L1_TABLE_PAST_MAX: Rule = Rule::error(
    "qcow.l1-table-past-max-length",
    Check::InvalidHeader,
    "The qcow L1 table ends past the largest offset QEMU can read.",
);
/// backing_file_size above 1023.
pub const BACKING_FILE_NAME_TOO_LONG: Rule = Rule::error(
    "qcow.backing-file-name-too-long",
    Check::InvalidHeader,
    "The qcow backing file name is longer than QEMU's 1023 bytes.",
);
/// The backing file name ends past `BDRV_MAX_LENGTH`.
pub const BACKING_FILE_NAME_PAST_MAX: Rule = Rule::error(
    "qcow.backing-file-name-past-max-length",
    Check::InvalidHeader,
    "The qcow backing file name ends past the largest offset QEMU can read.",
);
/// crypt_method 1.
pub const ENCRYPTED: Rule = Rule::warning(
    "qcow.encrypted",
    Check::Encrypted,
    "The qcow guest data is encrypted with legacy AES-CBC.",
);
/// A backing file name.
pub const BACKING_FILE: Rule = Rule::error(
    "qcow.backing-file",
    Check::BackingFile,
    "The qcow image names a backing file.",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    FORMAT,
    SIZE_TOO_SMALL,
    CLUSTER_BITS,
    L2_BITS,
    CRYPT_METHOD,
    SIZE_TOO_BIG,
    L1_TABLE_PAST_MAX,
    BACKING_FILE_NAME_TOO_LONG,
    BACKING_FILE_NAME_PAST_MAX,
    ENCRYPTED,
    BACKING_FILE,
];

/// `QCOW_MAGIC`, shared with qcow2.
pub const MAGIC: u32 = 0x5146_49fb;
/// `QCOW_VERSION`.
pub const VERSION: u32 = 1;
/// `sizeof(QCowHeader)`.
const HEADER_LEN: usize = 48;
/// `QCOW_CRYPT_AES`: the highest encryption method QEMU knows.
const CRYPT_AES: u32 = 1;
/// QEMU's limit on a backing file name (`len > 1023` is refused).
const MAX_BACKING_NAME: u32 = 1023;
/// `BDRV_MAX_LENGTH`: `INT64_MAX` aligned down to `BDRV_MAX_ALIGNMENT` (1 GiB). QEMU's block
/// layer fails any read that ends past it with EIO, so `qcow_open()` fails.
const BDRV_MAX_LENGTH: u64 = (i64::MAX as u64) & !((1 << 30) - 1);
/// `INT_MAX / sizeof(uint64_t)`: the largest L1 table `qcow_open()` accepts, in entries.
const MAX_L1_ENTRIES: u64 = (i32::MAX as u64) / 8;

/// Header field offsets (`QCowHeader`).
mod off {
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const BACKING_FILE_SIZE: usize = 16;
    pub const SIZE: usize = 24;
    pub const CLUSTER_BITS: usize = 32;
    pub const L2_BITS: usize = 33;
    pub const CRYPT_METHOD: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
}

/// Whether the probe starts with the qcow magic and version 1 (`qcow_probe()`, which QEMU
/// runs on a zero-padded buffer, so a file shorter than the header matches too).
pub fn detect(probe: &Probe) -> bool {
    probe.head.len() >= 8
        && be32(&probe.head, 0) == MAGIC
        && be32(&probe.head, off::VERSION) == VERSION
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    backing_file_offset: u64,
    backing_file_size: u32,
    size: u64,
    cluster_bits: u8,
    l2_bits: u8,
    crypt_method: u32,
    l1_table_offset: u64,
}

impl Header {
    fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            backing_file_offset: be64(b, off::BACKING_FILE_OFFSET),
            backing_file_size: be32(b, off::BACKING_FILE_SIZE),
            size: be64(b, off::SIZE),
            cluster_bits: b[off::CLUSTER_BITS],
            l2_bits: b[off::L2_BITS],
            crypt_method: be32(b, off::CRYPT_METHOD),
            l1_table_offset: be64(b, off::L1_TABLE_OFFSET),
        }
    }

    /// `qcow_open()`'s refusals, in its order, with its messages; `None` when QEMU opens the
    /// header.
    fn refusal(&self) -> Option<Finding> {
        if self.size <= 1 {
            return Some(SIZE_TOO_SMALL.finding(format!(
                "the qcow image size is {} bytes: QEMU refuses it (\"Image size is too small (must be at least 2 bytes)\")",
                self.size
            )));
        }
        if !(9..=16).contains(&self.cluster_bits) {
            return Some(CLUSTER_BITS.finding(format!(
                "the qcow cluster_bits is {}: QEMU refuses it (\"Cluster size must be between 512 and 64k\")",
                self.cluster_bits
            )));
        }
        // l2_bits counts 8-byte entries: 2^6 to 2^13 entries are 512 bytes to 64 KiB.
        if !(6..=13).contains(&self.l2_bits) {
            return Some(L2_BITS.finding(format!(
                "the qcow l2_bits is {}: QEMU refuses it (\"L2 table size must be between 512 and 64k\")",
                self.l2_bits
            )));
        }
        if self.crypt_method > CRYPT_AES {
            return Some(CRYPT_METHOD.finding(format!(
                "the qcow encryption method is {}: QEMU refuses it (\"invalid encryption method in qcow header\")",
                self.crypt_method
            )));
        }
        // shift is at most 16 + 13 = 29.
        let shift = u32::from(self.cluster_bits) + u32::from(self.l2_bits);
        let l1_entries = self
            .size
            .checked_add((1u64 << shift) - 1)
            .map(|end| end >> shift);
        let Some(l1_entries) = l1_entries.filter(|&n| n <= MAX_L1_ENTRIES) else {
            return Some(SIZE_TOO_BIG.finding(format!(
                "the qcow image size {} needs an L1 table above QEMU's limit of {MAX_L1_ENTRIES} entries: QEMU refuses it (\"Image too large\")",
                self.size
            )));
        };
        if !read_is_possible(self.l1_table_offset, l1_entries * 8) {
            return Some(L1_TABLE_PAST_MAX.finding(format!(
                "the qcow L1 table ({} bytes at offset {:#x}) ends past the largest offset QEMU can read",
                l1_entries * 8,
                self.l1_table_offset
            )));
        }
        if self.backing_file_offset != 0 {
            if self.backing_file_size > MAX_BACKING_NAME {
                return Some(BACKING_FILE_NAME_TOO_LONG.finding(format!(
                    "the qcow backing file name is {} bytes: QEMU refuses it (\"Backing file name too long\")",
                    self.backing_file_size
                )));
            }
            if !read_is_possible(self.backing_file_offset, u64::from(self.backing_file_size)) {
                return Some(BACKING_FILE_NAME_PAST_MAX.finding(format!(
                    "the qcow backing file name ({} bytes at offset {:#x}) ends past the largest offset QEMU can read",
                    self.backing_file_size, self.backing_file_offset
                )));
            }
        }
        None
    }
}

/// Whether QEMU's block layer accepts a read of `len` bytes at `offset`
/// (`bdrv_check_request()`).
fn read_is_possible(offset: u64, len: u64) -> bool {
    offset <= BDRV_MAX_LENGTH && len <= BDRV_MAX_LENGTH - offset
}

/// Describes the image as `qemu-img info -f qcow` would, with the `qcow` refusal. The backing
/// file is reported, never opened.
pub fn describe<S: ReadAt + ?Sized>(src: &S, _probe: &Probe) -> io::Result<FormatReport> {
    let mut report = FormatReport::default();
    report.findings.push(FORMAT.finding(
        "QEMU's legacy qcow (version 1) format is refused: no cloud image service (Glance, SCP, IMS) accepts it; convert it with `qemu-img convert -O qcow2`",
    ));
    let mut bytes = [0u8; HEADER_LEN];
    read_zero_padded(src, &mut bytes, 0)?;
    let header = Header::parse(&bytes);
    if let Some(why) = header.refusal() {
        report.findings.push(why);
        return Ok(report);
    }
    // QEMU counts whole sectors: `total_sectors = size / 512`.
    report.virtual_size = Some(header.size / 512 * 512);
    report.cluster_size = Some(1 << header.cluster_bits);
    if header.crypt_method == CRYPT_AES {
        report.encrypted = true;
        report.findings.push(ENCRYPTED.finding(
            "the guest data is encrypted with legacy AES-CBC, which QEMU's system emulators refuse",
        ));
    }
    if header.backing_file_offset != 0 {
        // At most 1023 bytes (checked by refusal()).
        let mut raw = vec![0u8; header.backing_file_size as usize];
        read_zero_padded(src, &mut raw, header.backing_file_offset)?;
        let name = c_string(&raw);
        if !name.is_empty() {
            report.findings.push(BACKING_FILE.finding(format!(
                "the image reads unallocated clusters from the backing file {name:?}"
            )));
            report.backing_filename = Some(name);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// The header `qemu-img create -f qcow IMG 10M` writes (4 KiB clusters, 512-entry L2
    /// tables, L1 table at 48).
    fn image() -> Vec<u8> {
        let mut d = vec![0u8; 560];
        d[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        d[4..8].copy_from_slice(&VERSION.to_be_bytes());
        d[24..32].copy_from_slice(&(10u64 << 20).to_be_bytes());
        d[32] = 12;
        d[33] = 9;
        d[40..48].copy_from_slice(&48u64.to_be_bytes());
        d
    }

    fn describe_bytes(d: &[u8]) -> FormatReport {
        describe(d, &Probe::from_bytes(d)).expect("in memory")
    }

    fn checks(r: &FormatReport) -> Vec<Check> {
        r.findings.iter().map(|f| f.check).collect()
    }

    #[test]
    fn a_qemu_img_header_is_described_and_refused() {
        let d = image();
        assert!(detect(&Probe::from_bytes(&d)));
        let r = describe_bytes(&d);
        assert_eq!(r.virtual_size, Some(10 << 20));
        assert_eq!(r.cluster_size, Some(4096));
        assert_eq!(checks(&r), [Check::Qcow]);
    }

    #[test]
    fn the_size_is_rounded_down_to_sectors_as_qemu_counts_them() {
        let mut d = image();
        d[24..32].copy_from_slice(&1000u64.to_be_bytes());
        assert_eq!(describe_bytes(&d).virtual_size, Some(512));
    }

    fn patched(at: usize, v: &[u8]) -> Vec<Finding> {
        let mut d = image();
        d[at..at + v.len()].copy_from_slice(v);
        describe_bytes(&d).findings
    }

    #[test]
    fn qemu_open_refusals_are_invalid_headers() {
        let patch = |at: usize, v: &[u8]| {
            checks(&describe_bytes(&{
                let mut d = image();
                d[at..at + v.len()].copy_from_slice(v);
                d
            }))
        };
        let bad = [Check::Qcow, Check::InvalidHeader];
        assert_eq!(patch(24, &1u64.to_be_bytes()), bad);
        assert_eq!(patch(32, &[8]), bad);
        assert_eq!(patch(32, &[17]), bad);
        assert_eq!(patch(33, &[5]), bad);
        assert_eq!(patch(33, &[14]), bad);
        assert_eq!(patch(36, &2u32.to_be_bytes()), bad);
        assert_eq!(patch(24, &u64::MAX.to_be_bytes()), bad);
        assert_eq!(patch(24, &(1u64 << 49).to_be_bytes()), bad);
        assert_eq!(patch(40, &(1u64 << 63).to_be_bytes()), bad);
    }

    #[test]
    fn every_image_is_refused_by_the_format_rule() {
        assert_fires(&describe_bytes(&image()).findings, "qcow.format");
    }

    #[test]
    fn a_size_under_two_bytes_fires_size_too_small() {
        assert_fires(&patched(24, &1u64.to_be_bytes()), "qcow.size-too-small");
    }

    #[test]
    fn a_cluster_size_outside_512_to_64k_fires_cluster_bits() {
        assert_fires(&patched(32, &[8]), "qcow.cluster-bits");
        assert_fires(&patched(32, &[17]), "qcow.cluster-bits");
    }

    #[test]
    fn an_l2_size_outside_512_to_64k_fires_l2_bits() {
        assert_fires(&patched(33, &[5]), "qcow.l2-bits");
        assert_fires(&patched(33, &[14]), "qcow.l2-bits");
    }

    #[test]
    fn an_unknown_encryption_method_fires_crypt_method() {
        assert_fires(&patched(36, &2u32.to_be_bytes()), "qcow.crypt-method");
    }

    #[test]
    fn a_size_needing_a_huge_l1_table_fires_size_too_big() {
        assert_fires(&patched(24, &u64::MAX.to_be_bytes()), "qcow.size-too-big");
        let found = patched(24, &(1u64 << 49).to_be_bytes());
        assert_fires(&found, "qcow.size-too-big");
    }

    #[test]
    fn an_l1_table_past_qemus_largest_offset_fires_l1_table_past_max_length() {
        let found = patched(40, &(1u64 << 63).to_be_bytes());
        assert_fires(&found, "qcow.l1-table-past-max-length");
    }

    #[test]
    fn backing_file_names_qemu_cannot_read_fire_their_rules() {
        let mut d = image();
        d[8..16].copy_from_slice(&(u64::MAX - 15).to_be_bytes());
        d[16..20].copy_from_slice(&10u32.to_be_bytes());
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::Qcow, Check::InvalidHeader]);
        assert_fires(&r.findings, "qcow.backing-file-name-past-max-length");
        d[8..16].copy_from_slice(&48u64.to_be_bytes());
        d[16..20].copy_from_slice(&1024u32.to_be_bytes());
        let r = describe_bytes(&d);
        assert_eq!(checks(&r), [Check::Qcow, Check::InvalidHeader]);
        assert_fires(&r.findings, "qcow.backing-file-name-too-long");
    }

    #[test]
    fn aes_encryption_fires_encrypted() {
        assert_fires(&patched(36, &1u32.to_be_bytes()), "qcow.encrypted");
    }

    #[test]
    fn a_backing_file_is_reported_and_an_empty_name_is_none() {
        let mut d = image();
        d[8..16].copy_from_slice(&56u64.to_be_bytes());
        d[16..20].copy_from_slice(&7u32.to_be_bytes());
        d[56..63].copy_from_slice(b"base.qc");
        let r = describe_bytes(&d);
        assert_eq!(r.backing_filename.as_deref(), Some("base.qc"));
        assert_eq!(checks(&r), [Check::Qcow, Check::BackingFile]);
        assert_fires(&r.findings, "qcow.backing-file");
        // A name past the end of the file reads as zeros: no name, as in QEMU.
        d[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes());
        let r = describe_bytes(&d);
        assert_eq!(r.backing_filename, None);
        assert_eq!(checks(&r), [Check::Qcow]);
    }

    #[test]
    fn a_header_shorter_than_48_bytes_reads_as_zero_padded() {
        let d = image();
        let r = describe_bytes(&d[..40]);
        // The L1 offset (bytes 40..48) reads as 0; the rest of the header is intact.
        assert_eq!(r.virtual_size, Some(10 << 20));
        let r = describe_bytes(&d[..8]);
        assert_eq!(checks(&r), [Check::Qcow, Check::InvalidHeader]);
    }
}
