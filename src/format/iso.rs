//! Optical disc images: ISO 9660 (ECMA-119) and UDF (ECMA-167 / OSTA UDF).
//!
//! Both start with 32 KiB of system area, then a sequence of 2 KiB volume descriptors from
//! sector 16: ISO 9660 descriptors carry the standard identifier `CD001` at byte 1, and a UDF
//! volume recognition sequence uses `BEA01`, `NSR02`/`NSR03` and `TEA01`. QEMU has no ISO
//! driver: it reads these images as raw, so the virtual size is the file length rounded up to
//! whole sectors, as `qemu-img info -f raw` reports it. When an ISO 9660 primary volume
//! descriptor is present its volume size is checked against the file, since a truncated disc
//! is unusable.

use std::io;

use super::bytes::{be16, be32, le16, le32};
use super::{FormatReport, Probe};
use crate::safety::{Check, Finding, Rule};
use crate::source::ReadAt;

const VOLUME_SIZE_ENDIANNESS: Rule = Rule::error(
    "iso.volume-size-endianness",
    Check::InvalidHeader,
    "the primary volume descriptor's little- and big-endian volume space sizes differ (ECMA-119 8.4.8)",
);
const BLOCK_SIZE_ENDIANNESS: Rule = Rule::error(
    "iso.block-size-endianness",
    Check::InvalidHeader,
    "the primary volume descriptor's little- and big-endian logical block sizes differ",
);
const BLOCK_SIZE: Rule = Rule::error(
    "iso.block-size",
    Check::InvalidHeader,
    "the logical block size is not 512, 1024 or 2048 (ECMA-119 6.1.2)",
);
const VOLUME_PAST_EOF: Rule = Rule::error(
    "iso.volume-past-eof",
    Check::Truncated,
    "the ISO 9660 volume the primary volume descriptor declares is larger than the file",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    VOLUME_SIZE_ENDIANNESS,
    BLOCK_SIZE_ENDIANNESS,
    BLOCK_SIZE,
    VOLUME_PAST_EOF,
];

/// Size of a volume descriptor (and of an ISO 9660 / UDF sector on optical media).
const DESCRIPTOR_LEN: usize = 2048;
/// The first volume descriptor sits after the 32 KiB system area.
const FIRST_DESCRIPTOR: usize = 16;
/// How many descriptor sectors detection looks at: all those inside the probe head.
const LAST_DESCRIPTOR: usize = super::PROBE_HEAD_LEN / DESCRIPTOR_LEN;
/// ISO 9660 standard identifier.
const ISO9660_ID: &[u8; 5] = b"CD001";
/// UDF volume recognition sequence identifiers (ECMA-167 2/9.1).
const UDF_IDS: [&[u8; 5]; 3] = [b"BEA01", b"NSR02", b"NSR03"];
/// Descriptor type of the primary volume descriptor, and of the set terminator.
const TYPE_PRIMARY: u8 = 1;
const TYPE_TERMINATOR: u8 = 255;
/// Primary volume descriptor fields (ECMA-119 8.4): both-endian volume space size (in
/// logical blocks) and logical block size.
const PVD_VOLUME_SPACE_SIZE: usize = 80;
const PVD_LOGICAL_BLOCK_SIZE: usize = 128;

/// The standard identifier at byte 1 of descriptor sector `n`, if the probe holds it.
fn identifier(probe: &Probe, n: usize) -> Option<&[u8]> {
    probe.head_bytes(n * DESCRIPTOR_LEN + 1, 5)
}

/// Whether the probe carries an ISO 9660 descriptor at sector 16, or a UDF volume recognition
/// descriptor in any 2 KiB sector from 32 KiB on.
pub fn detect(probe: &Probe) -> bool {
    if identifier(probe, FIRST_DESCRIPTOR) == Some(ISO9660_ID.as_slice()) {
        return true;
    }
    (FIRST_DESCRIPTOR..LAST_DESCRIPTOR)
        .filter_map(|n| identifier(probe, n))
        .any(|id| UDF_IDS.iter().any(|u| id == u.as_slice()))
}

/// The volume size an ISO 9660 primary volume descriptor declares, in bytes, or the finding
/// that says why it cannot be trusted.
fn primary_volume_size(pvd: &[u8]) -> Result<u64, Finding> {
    let blocks_le = le32(pvd, PVD_VOLUME_SPACE_SIZE);
    let blocks_be = be32(pvd, PVD_VOLUME_SPACE_SIZE + 4);
    let block_le = le16(pvd, PVD_LOGICAL_BLOCK_SIZE);
    let block_be = be16(pvd, PVD_LOGICAL_BLOCK_SIZE + 2);
    let invalid = |rule: Rule, d: String| Err(rule.finding(d));
    if blocks_le != blocks_be {
        return invalid(
            VOLUME_SIZE_ENDIANNESS,
            format!(
                "the ISO 9660 volume space size is {blocks_le} little-endian but {blocks_be} big-endian"
            ),
        );
    }
    if block_le != block_be {
        return invalid(
            BLOCK_SIZE_ENDIANNESS,
            format!(
                "the ISO 9660 logical block size is {block_le} little-endian but {block_be} big-endian"
            ),
        );
    }
    // ECMA-119 6.1.2: a power of two, at least 512, at most the 2 KiB sector.
    if !block_le.is_power_of_two() || !(512..=2048).contains(&block_le) {
        return invalid(
            BLOCK_SIZE,
            format!("the ISO 9660 logical block size is {block_le}, not 512, 1024 or 2048"),
        );
    }
    Ok(u64::from(blocks_le) * u64::from(block_le))
}

/// Describes the image as `qemu-img info -f raw` would, plus the ISO 9660 volume size check.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let mut report = FormatReport {
        virtual_size: Some(super::raw_virtual_size(probe.len)),
        ..FormatReport::default()
    };
    let pvd = (FIRST_DESCRIPTOR..LAST_DESCRIPTOR)
        .map_while(|n| probe.head_bytes(n * DESCRIPTOR_LEN, DESCRIPTOR_LEN))
        .take_while(|d| d[1..6] == *ISO9660_ID && d[0] != TYPE_TERMINATOR)
        .find(|d| d[0] == TYPE_PRIMARY);
    if let Some(pvd) = pvd {
        match primary_volume_size(pvd) {
            Ok(size) if size > probe.len => report.findings.push(VOLUME_PAST_EOF.finding(format!(
                "the ISO 9660 volume is {size} bytes but the file ends at {} bytes",
                probe.len
            ))),
            Ok(_) => {}
            Err(f) => report.findings.push(f),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// A minimal ISO 9660 image: system area, primary volume descriptor, terminator, and
    /// enough blocks for the declared volume.
    pub(crate) fn iso(blocks: u32) -> Vec<u8> {
        let mut d = vec![0u8; blocks as usize * DESCRIPTOR_LEN];
        let pvd = FIRST_DESCRIPTOR * DESCRIPTOR_LEN;
        d[pvd] = TYPE_PRIMARY;
        d[pvd + 1..pvd + 6].copy_from_slice(ISO9660_ID);
        d[pvd + 6] = 1;
        d[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
        d[pvd + 84..pvd + 88].copy_from_slice(&blocks.to_be_bytes());
        d[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
        d[pvd + 130..pvd + 132].copy_from_slice(&2048u16.to_be_bytes());
        let term = pvd + DESCRIPTOR_LEN;
        d[term] = TYPE_TERMINATOR;
        d[term + 1..term + 6].copy_from_slice(ISO9660_ID);
        d[term + 6] = 1;
        d
    }

    fn report(d: &[u8]) -> FormatReport {
        describe(d, &Probe::from_bytes(d)).expect("in-memory")
    }

    #[test]
    fn iso9660_and_udf_are_detected() {
        assert!(detect(&Probe::from_bytes(&iso(40))));
        let mut udf = vec![0u8; 40 * DESCRIPTOR_LEN];
        for (i, id) in [b"BEA01", b"NSR03", b"TEA01"].iter().enumerate() {
            let at = (FIRST_DESCRIPTOR + i) * DESCRIPTOR_LEN + 1;
            udf[at..at + 5].copy_from_slice(*id);
        }
        assert!(detect(&Probe::from_bytes(&udf)));
        assert!(!detect(&Probe::from_bytes(&vec![0u8; 40 * DESCRIPTOR_LEN])));
        assert!(!detect(&Probe::from_bytes(&[0u8; 100])));
    }

    #[test]
    fn the_virtual_size_is_the_raw_file_length() {
        let r = report(&iso(40));
        assert_eq!(r.virtual_size, Some(40 * 2048));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        let mut d = iso(40);
        d.push(0);
        assert_eq!(report(&d).virtual_size, Some(40 * 2048 + 512));
    }

    #[test]
    fn a_volume_larger_than_the_file_is_truncated() {
        let d = iso(40);
        let r = report(&d[..30 * DESCRIPTOR_LEN]);
        assert_eq!(r.findings.len(), 1);
        assert_fires(&r.findings, "iso.volume-past-eof");
    }

    #[test]
    fn inconsistent_volume_descriptor_fields_are_invalid() {
        let pvd = FIRST_DESCRIPTOR * DESCRIPTOR_LEN;
        let patched = |patches: &[(usize, &[u8])]| {
            let mut d = iso(40);
            for (at, val) in patches {
                d[*at..*at + val.len()].copy_from_slice(val);
            }
            let r = report(&d);
            assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
            r.findings
        };
        let fired = patched(&[(pvd + 84, &[0, 0, 0, 1])]);
        assert_fires(&fired, "iso.volume-size-endianness");
        let fired = patched(&[(pvd + 130, &[4, 0])]);
        assert_fires(&fired, "iso.block-size-endianness");
        let fired = patched(&[(pvd + 128, &[0, 3]), (pvd + 130, &[3, 0])]);
        assert_fires(&fired, "iso.block-size");
    }
}
