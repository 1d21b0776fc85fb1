//! MBR and GPT partition tables at the start of a raw disk.
//!
//! A raw image that starts with a partition table is still `raw`; the table is reported beside
//! the format. The same signature at the start of a container format (a qcow2 header with
//! `55 AA` at byte 510) makes the file a polyglot. The rules follow OpenStack's format inspector
//! (`GPTInspector` / `mbr` safety check): every boot flag is 0x00 or 0x80, a protective (0xEE)
//! entry starts at CHS 0/2/0 and LBA 1 and is the only entry, and at least one entry is used.

use serde::Serialize;

use super::Probe;
use super::bytes::le32;
use crate::safety::{Check, Finding, Rule};

const BOOT_FLAG: Rule = Rule::error(
    "partition.boot-flag",
    Check::PartitionTable,
    "an MBR partition entry's boot flag is neither 0x00 nor 0x80",
);
const PROTECTIVE_ENTRY_START: Rule = Rule::error(
    "partition.protective-entry-start",
    Check::PartitionTable,
    "a GPT protective (0xEE) MBR entry does not start at CHS 0/2/0 and LBA 1",
);
const EMPTY_TABLE: Rule = Rule::error(
    "partition.empty-table",
    Check::PartitionTable,
    "the MBR has a boot signature but no used partition entry",
);
const PROTECTIVE_WITH_OTHERS: Rule = Rule::error(
    "partition.protective-with-others",
    Check::PartitionTable,
    "the MBR has a GPT protective entry beside other entries",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    BOOT_FLAG,
    PROTECTIVE_ENTRY_START,
    EMPTY_TABLE,
    PROTECTIVE_WITH_OTHERS,
];

/// Offset of the MBR boot signature `55 AA`.
const MBR_SIGNATURE_OFFSET: usize = 510;
/// Offset of the first of the four 16-byte MBR partition entries.
const MBR_ENTRIES_OFFSET: usize = 446;
/// GPT header signature, at LBA 1.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Partition type of a GPT protective MBR entry.
const PROTECTIVE_TYPE: u8 = 0xee;

/// Which kind of partition table a disk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTableKind {
    /// A classic DOS MBR.
    Mbr,
    /// A GUID partition table behind a protective MBR.
    Gpt,
}

impl PartitionTableKind {
    /// `mbr` or `gpt`.
    pub fn name(self) -> &'static str {
        match self {
            PartitionTableKind::Mbr => "mbr",
            PartitionTableKind::Gpt => "gpt",
        }
    }
}

/// A partition table found at the start of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// MBR or GPT.
    pub kind: PartitionTableKind,
    /// Rules the table breaks.
    pub findings: Vec<Finding>,
}

/// Looks for an MBR boot signature (and a GPT header behind it) at the start of the image.
///
/// A FAT volume boot record also ends in `55 AA`; like the OpenStack inspector, a sector whose
/// BIOS parameter block says two FATs and media byte 0xF8 is not taken for an MBR.
pub fn detect(probe: &Probe) -> Option<PartitionTable> {
    let sector = probe.head_bytes(0, 512)?;
    if sector[MBR_SIGNATURE_OFFSET..] != [0x55, 0xaa] {
        return None;
    }
    let num_fats = sector[0x10];
    let media = sector[0x15];
    if num_fats == 2 && media == 0xf8 {
        return None;
    }
    let gpt = [512usize, 4096]
        .iter()
        .any(|&lba1| probe.head_bytes(lba1, 8) == Some(GPT_SIGNATURE.as_slice()));
    let kind = if gpt {
        PartitionTableKind::Gpt
    } else {
        PartitionTableKind::Mbr
    };
    Some(PartitionTable {
        kind,
        findings: check_mbr(sector),
    })
}

fn check_mbr(sector: &[u8]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut used = 0usize;
    let mut protective = false;
    for i in 0..4 {
        let entry = &sector[MBR_ENTRIES_OFFSET + 16 * i..MBR_ENTRIES_OFFSET + 16 * (i + 1)];
        let boot = entry[0];
        if boot != 0x00 && boot != 0x80 {
            findings.push(BOOT_FLAG.finding(format!(
                "MBR partition entry {i} has boot flag {boot:#04x}, not 0x00 or 0x80"
            )));
        }
        let ptype = entry[4];
        if ptype == 0 {
            continue;
        }
        used += 1;
        if ptype == PROTECTIVE_TYPE {
            protective = true;
            let chs = &entry[1..4];
            let lba = le32(entry, 8);
            if chs != [0x00, 0x02, 0x00] || lba != 1 {
                findings.push(PROTECTIVE_ENTRY_START.finding(format!(
                        "the GPT protective MBR entry {i} starts at CHS {} LBA {lba}, not CHS 0/2/0 LBA 1",
                        hex::encode(chs)
                    ),
                ));
            }
        }
    }
    if used == 0 {
        findings.push(EMPTY_TABLE.finding("the MBR has a boot signature but no partition entries"));
    } else if protective && used > 1 {
        findings.push(PROTECTIVE_WITH_OTHERS.finding(format!(
            "the MBR has a GPT protective entry and {} other entries",
            used - 1
        )));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    fn mbr_with(entries: &[(u8, u8, [u8; 3], u32)]) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        for (i, (boot, ptype, chs, lba)) in entries.iter().enumerate() {
            let e = MBR_ENTRIES_OFFSET + 16 * i;
            d[e] = *boot;
            d[e + 1..e + 4].copy_from_slice(chs);
            d[e + 4] = *ptype;
            d[e + 8..e + 12].copy_from_slice(&lba.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xaa;
        d
    }

    #[test]
    fn a_plain_mbr_is_detected_and_clean() {
        let d = mbr_with(&[(0x80, 0x83, [0, 0x21, 0], 2048)]);
        let t = detect(&Probe::from_bytes(&d)).expect("mbr");
        assert_eq!(t.kind, PartitionTableKind::Mbr);
        assert!(t.findings.is_empty());
    }

    #[test]
    fn a_protective_mbr_with_gpt_header_is_gpt() {
        let mut d = mbr_with(&[(0, PROTECTIVE_TYPE, [0, 2, 0], 1)]);
        d[512..520].copy_from_slice(GPT_SIGNATURE);
        let t = detect(&Probe::from_bytes(&d)).expect("gpt");
        assert_eq!(t.kind, PartitionTableKind::Gpt);
        assert!(t.findings.is_empty());
    }

    #[test]
    fn mbr_rules_fire_on_bad_boot_flags_bad_protective_entries_and_empty_tables() {
        let findings = |entries: &[(u8, u8, [u8; 3], u32)]| {
            let d = mbr_with(entries);
            let findings = detect(&Probe::from_bytes(&d)).expect("mbr").findings;
            assert_eq!(findings.len(), 1, "{findings:?}");
            findings
        };
        let fired = findings(&[(0x12, 0x83, [0, 0x21, 0], 2048)]);
        assert_fires(&fired, "partition.boot-flag");
        let fired = findings(&[(0, PROTECTIVE_TYPE, [0, 2, 0], 7)]);
        assert_fires(&fired, "partition.protective-entry-start");
        let fired = findings(&[
            (0, PROTECTIVE_TYPE, [0, 2, 0], 1),
            (0, 0x83, [0, 0x21, 0], 2048),
        ]);
        assert_fires(&fired, "partition.protective-with-others");
        assert_fires(&findings(&[]), "partition.empty-table");
    }

    #[test]
    fn a_fat_boot_sector_is_not_an_mbr() {
        let mut d = mbr_with(&[(0x80, 0x83, [0, 0x21, 0], 2048)]);
        d[0x10] = 2;
        d[0x15] = 0xf8;
        assert!(detect(&Probe::from_bytes(&d)).is_none());
    }
}
