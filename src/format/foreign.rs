//! Formats QEMU reads that vmimage does not inspect: Bochs, Parallels, cloop and Apple DMG.
//!
//! Their content is not a raw disk, so reporting them as raw would be format confusion:
//! `qemu-img` without `-f` would read a different guest disk than a cloud told "raw" boots.
//! Each signature is QEMU's probe (block/bochs.c `bochs_probe`, block/parallels.c
//! `parallels_probe`, block/cloop.c `cloop_probe`); QEMU probes DMG by the file name
//! (block/dmg.c `dmg_probe`), which vmimage never reads, so a DMG is recognised by its UDIF
//! trailer, the `koly` block in its last 512 bytes.

use crate::format::Probe;
use crate::safety::{Check, Finding, Rule};

const BOCHS: Rule = Rule::error(
    "foreign.bochs",
    Check::UnsupportedFormat,
    "the content is a Bochs growing redolog image (QEMU's `bochs` driver), not a raw disk",
);
const PARALLELS: Rule = Rule::error(
    "foreign.parallels",
    Check::UnsupportedFormat,
    "the content is a Parallels image (QEMU's `parallels` driver), not a raw disk",
);
const CLOOP: Rule = Rule::error(
    "foreign.cloop",
    Check::UnsupportedFormat,
    "the content is a cloop 2.0 compressed loop image (QEMU's `cloop` driver), not a raw disk",
);
const DMG: Rule = Rule::error(
    "foreign.dmg",
    Check::UnsupportedFormat,
    "the file ends in an Apple UDIF (`koly`) trailer: an Apple DMG (QEMU's `dmg` driver), not a raw disk",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[BOCHS, PARALLELS, CLOOP, DMG];

/// A format vmimage recognises but does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignFormat {
    /// Bochs growing redolog image.
    Bochs,
    /// Parallels disk image.
    Parallels,
    /// Linux compressed loop image, version 2.0.
    Cloop,
    /// Apple Disk Image (UDIF).
    Dmg,
}

impl ForeignFormat {
    /// QEMU's driver name.
    pub fn qemu_name(self) -> &'static str {
        match self {
            ForeignFormat::Bochs => "bochs",
            ForeignFormat::Parallels => "parallels",
            ForeignFormat::Cloop => "cloop",
            ForeignFormat::Dmg => "dmg",
        }
    }

    /// The error finding that refuses the image.
    pub fn finding(self) -> Finding {
        let rule = match self {
            ForeignFormat::Bochs => BOCHS,
            ForeignFormat::Parallels => PARALLELS,
            ForeignFormat::Cloop => CLOOP,
            ForeignFormat::Dmg => DMG,
        };
        rule.finding(format!(
                "the content is a {} image, not a raw disk: qemu-img reads it as `{}`, and vmimage does not read that format",
                match self {
                    ForeignFormat::Bochs => "Bochs",
                    ForeignFormat::Parallels => "Parallels",
                    ForeignFormat::Cloop => "cloop",
                    ForeignFormat::Dmg => "Apple DMG",
                },
            self.qemu_name()
        ))
    }
}

/// `bochs_probe`: a 512-byte header whose NUL-terminated magic, type and subtype fields say a
/// growing redolog, version 1 or 2.
fn is_bochs(head: &[u8]) -> bool {
    fn c_str_is(field: &[u8], want: &[u8]) -> bool {
        field.len() > want.len() && field.starts_with(want) && field[want.len()] == 0
    }
    let Some(header) = head.get(..512) else {
        return false;
    };
    let version = u32::from_le_bytes([header[64], header[65], header[66], header[67]]);
    c_str_is(&header[..32], b"Bochs Virtual HD Image")
        && c_str_is(&header[32..48], b"Redolog")
        && c_str_is(&header[48..64], b"Growing")
        && (version == 0x0002_0000 || version == 0x0001_0000)
}

/// `parallels_probe`: one of the two magics in a 64-byte header, version 2.
fn is_parallels(head: &[u8]) -> bool {
    let Some(header) = head.get(..64) else {
        return false;
    };
    let version = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    (&header[..16] == b"WithoutFreeSpace" || &header[..16] == b"WithouFreSpacExt") && version == 2
}

/// `cloop_probe`: the version 2.0 shell-script preamble.
fn is_cloop(head: &[u8]) -> bool {
    head.starts_with(
        b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
    )
}

/// A UDIF trailer: `koly`, version 4, header size 512, in the file's last 512 bytes (Apple's
/// UDIF resource file format).
fn is_dmg(probe: &Probe) -> bool {
    probe.len >= 512
        && probe.tail.len() == 512
        && probe.tail.starts_with(b"koly")
        && probe.tail[4..8] == [0, 0, 0, 4]
        && probe.tail[8..12] == [0, 0, 2, 0]
}

/// The foreign format whose signature `probe` carries, if any.
pub fn detect(probe: &Probe) -> Option<ForeignFormat> {
    if is_bochs(&probe.head) {
        Some(ForeignFormat::Bochs)
    } else if is_parallels(&probe.head) {
        Some(ForeignFormat::Parallels)
    } else if is_cloop(&probe.head) {
        Some(ForeignFormat::Cloop)
    } else if is_dmg(probe) {
        Some(ForeignFormat::Dmg)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// The finding for `data`, which must carry a foreign signature.
    fn refused(data: &[u8]) -> Vec<Finding> {
        vec![detect(&Probe::from_bytes(data)).expect("foreign").finding()]
    }

    #[test]
    fn each_foreign_format_has_its_rule() {
        let mut bochs = vec![0u8; 512];
        bochs[..22].copy_from_slice(b"Bochs Virtual HD Image");
        bochs[32..39].copy_from_slice(b"Redolog");
        bochs[48..55].copy_from_slice(b"Growing");
        bochs[64..68].copy_from_slice(&0x0002_0000u32.to_le_bytes());
        assert_fires(&refused(&bochs), "foreign.bochs");

        let mut parallels = vec![0u8; 512];
        parallels[..16].copy_from_slice(b"WithoutFreeSpace");
        parallels[16..20].copy_from_slice(&2u32.to_le_bytes());
        assert_fires(&refused(&parallels), "foreign.parallels");

        let mut cloop = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n".to_vec();
        cloop.resize(1024, 0);
        assert_fires(&refused(&cloop), "foreign.cloop");

        let mut dmg = vec![0u8; 4096];
        let trailer = dmg.len() - 512;
        dmg[trailer..trailer + 4].copy_from_slice(b"koly");
        dmg[trailer + 4..trailer + 8].copy_from_slice(&4u32.to_be_bytes());
        dmg[trailer + 8..trailer + 12].copy_from_slice(&512u32.to_be_bytes());
        assert_fires(&refused(&dmg), "foreign.dmg");

        assert_eq!(detect(&Probe::from_bytes(&[0u8; 4096])), None);
    }
}
