//! Image formats: detection from content, and one module per format that describes an image.
//!
//! Detection never looks at the file name. Every detector runs on the same [`Probe`] (the first
//! [`PROBE_HEAD_LEN`] bytes and the last 512), and every match is kept: content that matches two
//! formats is a polyglot, which [`crate::inspect()`] reports as unsafe.
//!
//! A format module exposes `detect(&Probe) -> Option<..>`, a cheap signature test, and
//! `describe(src, &Probe) -> io::Result<FormatReport>`, the full header parse. `describe` never
//! fails on bad content: a field out of range becomes a [`Finding`] in the report. It fails only
//! on an I/O error, which means the file could not be read at all.

pub mod foreign;
pub mod guest;
pub mod iso;
pub mod luks;
pub mod open;
pub mod partition;
pub mod qcow;
pub mod qcow2;
pub mod qed;
pub mod raw;
pub mod vdi;
pub mod vhdx;
pub mod vmdk;
pub mod vpc;

use std::io;

use serde::Serialize;

use crate::safety::{Finding, Rule};
use crate::source::{ReadAt, ReadError, read_exact_at};

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[crate::safety::Rule] = &[];

/// How many leading bytes every detector sees. ISO 9660 puts its first volume descriptor at
/// 32 KiB and UDF its recognition sequence in the 2 KiB sectors after it, so 64 KiB covers
/// every signature the OpenStack inspector looks for.
pub const PROBE_HEAD_LEN: usize = 64 * 1024;

/// How many trailing bytes every detector sees: a VHD footer.
pub const PROBE_TAIL_LEN: usize = 512;

/// A disk image format, named as `qemu-img` names it where QEMU has a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageFormat {
    /// No container: the file is the guest disk.
    Raw,
    /// QEMU copy-on-write v2 (compat 0.10) or v3 (compat 1.1).
    Qcow2,
    /// QEMU's legacy copy-on-write format, version 1 (refused: no cloud takes it).
    Qcow,
    /// Microsoft Virtual PC / VHD, fixed or dynamic (QEMU calls it `vpc`).
    Vpc,
    /// Microsoft VHDX.
    Vhdx,
    /// VMware VMDK: sparse (`KDMV`) or a text descriptor.
    Vmdk,
    /// VirtualBox VDI.
    Vdi,
    /// QEMU enhanced disk (deprecated; refused).
    Qed,
    /// ISO 9660 / UDF optical image (QEMU reads it as raw).
    Iso,
    /// LUKS-encrypted raw container.
    Luks,
}

impl ImageFormat {
    /// Every format, in the order detectors run.
    pub const ALL: [ImageFormat; 10] = [
        ImageFormat::Qcow2,
        ImageFormat::Qcow,
        ImageFormat::Vpc,
        ImageFormat::Vhdx,
        ImageFormat::Vmdk,
        ImageFormat::Vdi,
        ImageFormat::Qed,
        ImageFormat::Iso,
        ImageFormat::Luks,
        ImageFormat::Raw,
    ];

    /// The name used in reports: QEMU's driver name, or `iso` for optical images.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Qcow => "qcow",
            ImageFormat::Vpc => "vpc",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vdi => "vdi",
            ImageFormat::Qed => "qed",
            ImageFormat::Iso => "iso",
            ImageFormat::Luks => "luks",
        }
    }

    /// The name `qemu-img -f` takes for this format.
    pub fn qemu_name(self) -> &'static str {
        match self {
            ImageFormat::Iso => "raw",
            other => other.name(),
        }
    }

    /// The `disk_format` value Glance (and the clouds shaped like it) records for this format,
    /// if it has one.
    pub fn disk_format(self) -> Option<&'static str> {
        match self {
            ImageFormat::Raw => Some("raw"),
            ImageFormat::Qcow2 => Some("qcow2"),
            ImageFormat::Vpc => Some("vhd"),
            ImageFormat::Vhdx => Some("vhdx"),
            ImageFormat::Vmdk => Some("vmdk"),
            ImageFormat::Vdi => Some("vdi"),
            ImageFormat::Iso => Some("iso"),
            ImageFormat::Qcow | ImageFormat::Qed | ImageFormat::Luks => None,
        }
    }

    /// Parses a format name as users and clouds write it (`vhd` and `vpc` are the same format).
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "raw" => ImageFormat::Raw,
            "qcow2" => ImageFormat::Qcow2,
            "qcow" => ImageFormat::Qcow,
            "vpc" | "vhd" => ImageFormat::Vpc,
            "vhdx" => ImageFormat::Vhdx,
            "vmdk" => ImageFormat::Vmdk,
            "vdi" => ImageFormat::Vdi,
            "qed" => ImageFormat::Qed,
            "iso" => ImageFormat::Iso,
            "luks" => ImageFormat::Luks,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ImageFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The bytes every detector looks at, read once.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The first `min(len, PROBE_HEAD_LEN)` bytes.
    pub head: Vec<u8>,
    /// The last `min(len, PROBE_TAIL_LEN)` bytes (may overlap `head` in small files).
    pub tail: Vec<u8>,
    /// The image length in bytes.
    pub len: u64,
}

impl Probe {
    /// Reads the head and tail of `src`: at most two reads, whatever the image size.
    pub fn read<S: ReadAt + ?Sized>(src: &S) -> io::Result<Self> {
        let len = src.len();
        let head_len = len.min(PROBE_HEAD_LEN as u64) as usize;
        let tail_len = len.min(PROBE_TAIL_LEN as u64) as usize;
        let mut head = vec![0u8; head_len];
        read_probe(src, &mut head, 0)?;
        let mut tail = vec![0u8; tail_len];
        read_probe(src, &mut tail, len - tail_len as u64)?;
        Ok(Self { head, tail, len })
    }

    /// Builds a probe over an in-memory image.
    pub fn from_bytes(data: &[u8]) -> Self {
        let head = data[..data.len().min(PROBE_HEAD_LEN)].to_vec();
        let tail = data[data.len() - data.len().min(PROBE_TAIL_LEN)..].to_vec();
        Self {
            head,
            tail,
            len: data.len() as u64,
        }
    }

    /// `len` bytes of the head starting at `offset`, if the head holds them.
    pub fn head_bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.head.get(offset..offset.checked_add(len)?)
    }

    /// The `N`-byte header at offset 0, or, when the file is shorter, the finding of `rule`
    /// (the format's own "header truncated" rule) that says so (`what` names the header in it:
    /// "the QED header").
    pub fn head_header_with<const N: usize>(
        &self,
        rule: Rule,
        what: &str,
    ) -> Result<&[u8; N], Finding> {
        self.head_bytes(0, N)
            .and_then(|b| <&[u8; N]>::try_from(b).ok())
            .ok_or_else(|| rule.finding(self.truncated_header_detail(N, what)))
    }

    fn truncated_header_detail(&self, n: usize, what: &str) -> String {
        format!(
            "{what} ({n} bytes at offset 0x0) runs past the end of the file ({} bytes)",
            self.len
        )
    }
}

fn read_probe<S: ReadAt + ?Sized>(src: &S, buf: &mut [u8], offset: u64) -> io::Result<()> {
    match read_exact_at(src, buf, offset) {
        Ok(()) => Ok(()),
        Err(ReadError::Io(e)) => Err(e),
        Err(e @ ReadError::Truncated { .. }) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file shrank while it was being read: {e}"),
        )),
    }
}

/// What a format module learned from an image's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatReport {
    /// Guest-visible size in bytes, as `qemu-img info -f FORMAT` reports it; `None` when the
    /// header is too damaged to say.
    pub virtual_size: Option<u64>,
    /// Allocation unit (qcow2 cluster, VHDX/VDI block, VMDK grain).
    pub cluster_size: Option<u64>,
    /// The image was not closed cleanly.
    pub dirty: bool,
    /// The guest data is encrypted.
    pub encrypted: bool,
    /// A backing file named in the image (never opened).
    pub backing_filename: Option<String>,
    /// The backing file's format, if the image names one.
    pub backing_format: Option<String>,
    /// Internal snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// The format's own facts, as in `qemu-img info`'s `format-specific`.
    pub format_specific: Option<FormatSpecific>,
    /// Safety rules this format's parser fired.
    pub findings: Vec<Finding>,
}

impl FormatReport {
    /// Fills in the facts that depend on the path the image was named by: `qemu-img info`
    /// names VMDK extents relative to the descriptor's directory. Nothing is opened.
    pub fn resolve_paths(&mut self, image_path: &str) {
        if let Some(FormatSpecific::Vmdk(v)) = &mut self.format_specific {
            v.resolve_paths(image_path);
        }
    }
}

/// An internal snapshot, with `qemu-img info`'s field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    /// Snapshot ID string.
    pub id: String,
    /// Snapshot name.
    pub name: String,
    /// Size of the saved VM state in bytes.
    pub vm_state_size: u64,
    /// Creation time, seconds since the epoch.
    pub date_sec: u64,
    /// Creation time, nanoseconds part.
    pub date_nsec: u64,
    /// Guest clock at the snapshot, whole seconds.
    pub vm_clock_sec: u64,
    /// Guest clock at the snapshot, nanoseconds part.
    pub vm_clock_nsec: u64,
    /// Instruction count, when the snapshot recorded one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icount: Option<u64>,
}

/// Format-specific facts, serialized as `qemu-img info` does: `{"type": .., "data": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum FormatSpecific {
    /// qcow2 header facts.
    Qcow2(qcow2::Qcow2Specific),
    /// VMDK descriptor facts.
    Vmdk(vmdk::VmdkSpecific),
    /// LUKS header facts.
    Luks(luks::LuksSpecific),
}

/// One format signature found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// The format whose signature matched.
    pub format: ImageFormat,
    /// Whether this format's signature may legitimately coexist with a partition table at
    /// offset 0 (a hybrid ISO, or a fixed VHD whose guest disk is partitioned). Any other
    /// overlap is a polyglot.
    pub allows_partition_table: bool,
}

/// Runs every detector on `probe` and returns every container format that matched (never
/// `Raw`: raw is what remains when nothing matched).
pub fn detect_all(probe: &Probe) -> Vec<Detection> {
    let mut found = Vec::new();
    let mut push = |format, allows_partition_table| {
        found.push(Detection {
            format,
            allows_partition_table,
        })
    };
    if qcow::detect(probe) {
        push(ImageFormat::Qcow, false);
    } else if qcow2::detect(probe) {
        push(ImageFormat::Qcow2, false);
    }
    if let Some(kind) = vpc::detect(probe) {
        push(ImageFormat::Vpc, kind == vpc::VpcDetection::FooterOnly);
    }
    if vhdx::detect(probe) {
        push(ImageFormat::Vhdx, false);
    }
    if vmdk::detect(probe).is_some() {
        push(ImageFormat::Vmdk, false);
    }
    if vdi::detect(probe) {
        push(ImageFormat::Vdi, false);
    }
    if qed::detect(probe) {
        push(ImageFormat::Qed, false);
    }
    if iso::detect(probe) {
        push(ImageFormat::Iso, true);
    }
    if luks::detect(probe) {
        push(ImageFormat::Luks, false);
    }
    found
}

/// The guest-visible size of a disk stored as raw bytes of length `len`: QEMU's file driver
/// counts whole 512-byte sectors, rounding up (`raw_co_getlength` through
/// `bdrv_co_refresh_total_sectors`: `DIV_ROUND_UP(length, BDRV_SECTOR_SIZE)`), and reads the
/// part of the last sector past the end of the file as zeros. The one computation of a raw
/// (and ISO, and LUKS container) size: `info` and `convert` both use it.
pub const fn raw_virtual_size(len: u64) -> u64 {
    len.div_ceil(512).saturating_mul(512)
}

/// The structures a format module decoded while describing an image, kept so that its guest
/// reader ([`open::guest_reader`]) starts from them instead of decoding them again. A format
/// whose decoder does not hand its structures back yet has [`Decoded::Nothing`], and its
/// reader decodes its headers itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded {
    /// Nothing kept.
    #[default]
    Nothing,
    /// A VHD's footer and dynamic header.
    Vpc(vpc::VhdLayout),
    /// A qcow2 header, with its extensions, as the strict policy decoded it.
    Qcow2(Box<qcow2::Qcow2Header>),
}

/// [`describe`], also returning what the format module decoded (see [`Decoded`]).
pub fn describe_decoded<S: ReadAt + ?Sized>(
    src: &S,
    probe: &Probe,
    format: ImageFormat,
) -> io::Result<(FormatReport, Decoded)> {
    match format {
        ImageFormat::Vpc => {
            let (report, layout) = vpc::decode(src, probe)?;
            Ok((report, layout.map_or(Decoded::Nothing, Decoded::Vpc)))
        }
        ImageFormat::Qcow2 => {
            let (report, header) = qcow2::decode(src, probe)?;
            let decoded = header.map_or(Decoded::Nothing, |h| Decoded::Qcow2(Box::new(h)));
            Ok((report, decoded))
        }
        other => Ok((describe(src, probe, other)?, Decoded::Nothing)),
    }
}

/// Describes `src` as `format`, whatever its content says: the equivalent of
/// `qemu-img info -f FORMAT`.
pub fn describe<S: ReadAt + ?Sized>(
    src: &S,
    probe: &Probe,
    format: ImageFormat,
) -> io::Result<FormatReport> {
    match format {
        ImageFormat::Raw => Ok(FormatReport {
            virtual_size: Some(raw_virtual_size(probe.len)),
            ..FormatReport::default()
        }),
        ImageFormat::Qcow2 => qcow2::describe(src, probe),
        ImageFormat::Qcow => qcow::describe(src, probe),
        ImageFormat::Vpc => vpc::describe(src, probe),
        ImageFormat::Vhdx => vhdx::describe(src, probe),
        ImageFormat::Vmdk => vmdk::describe(src, probe),
        ImageFormat::Vdi => vdi::describe(src, probe),
        ImageFormat::Qed => qed::describe(src, probe),
        ImageFormat::Iso => iso::describe(src, probe),
        ImageFormat::Luks => luks::describe(src, probe),
    }
}

/// Turns a failed bounded read into a finding of `rule` (the format's rule for the structure
/// `what` running past the end of the file) or an I/O error.
///
/// Format modules use this so that "the header points past the end of the file" is reported as
/// a property of the image, while "the disk returned EIO" stops the inspection.
pub(crate) fn read_failure_with(rule: Rule, err: ReadError, what: &str) -> io::Result<Finding> {
    truncation_detail(err, what).map(|detail| rule.finding(detail))
}

fn truncation_detail(err: ReadError, what: &str) -> io::Result<String> {
    match err {
        ReadError::Io(e) => Err(e),
        ReadError::Truncated {
            offset,
            len,
            file_len,
        } => Ok(format!(
            "the {what} ({len} bytes at offset {offset:#x}) runs past the end of the file ({file_len} bytes)"
        )),
    }
}

/// Fills `buf` from `offset`, with zeros for whatever lies past the end of the file, and
/// returns how many bytes came from the file.
///
/// QEMU's file driver answers reads past the end of the file with zeros, and some of its format
/// drivers rely on that (a VMDK descriptor read as a fixed 10 KiB window, a streamOptimized
/// footer at a sector-rounded offset). Parsers that must see what QEMU sees use this; the
/// length is always one of the caller's fixed constants, never a header field.
pub(crate) fn read_zero_padded<S: ReadAt + ?Sized>(
    src: &S,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<usize> {
    let avail = src.len().saturating_sub(offset);
    let n = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
    // An offset past the end reads nothing from the file (an empty read there would be
    // reported as a truncation).
    if n > 0 {
        read_probe(src, &mut buf[..n], offset)?;
    }
    buf[n..].fill(0);
    Ok(n)
}

/// Decodes UTF-16 code units up to the first NUL, replacing invalid sequences, as the names
/// VHD and VHDX store for parent disks are written.
pub(crate) fn utf16_until_nul(units: impl IntoIterator<Item = u16>) -> String {
    char::decode_utf16(units.into_iter().take_while(|&u| u != 0))
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Bytes up to the first NUL (or all of them), as text with invalid UTF-8 replaced: how C
/// strings stored in image headers read.
pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Big-endian and little-endian field readers over a byte slice whose length the caller has
/// already checked. They return 0 for out-of-range positions rather than panicking, so a
/// parser bug cannot become a crash; parsers still check lengths first.
pub(crate) mod bytes {
    /// Big-endian u16 at `off`.
    pub fn be16(b: &[u8], off: usize) -> u16 {
        b.get(off..off + 2)
            .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
    }
    /// Big-endian u32 at `off`.
    pub fn be32(b: &[u8], off: usize) -> u32 {
        b.get(off..off + 4)
            .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// Big-endian u64 at `off`.
    pub fn be64(b: &[u8], off: usize) -> u64 {
        b.get(off..off + 8).map_or(0, |s| {
            u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        })
    }
    /// Little-endian u16 at `off`.
    pub fn le16(b: &[u8], off: usize) -> u16 {
        b.get(off..off + 2)
            .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
    }
    /// Little-endian u32 at `off`.
    pub fn le32(b: &[u8], off: usize) -> u32 {
        b.get(off..off + 4)
            .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// Little-endian u64 at `off`.
    pub fn le64(b: &[u8], off: usize) -> u64 {
        b.get(off..off + 8).map_or(0, |s| {
            u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_longer_than_the_file_is_a_truncated_report_naming_it() {
        let probe = Probe::from_bytes(&[7u8; 40]);
        let rule =
            crate::safety::Rule::error("test.truncated", crate::safety::Check::Truncated, "test");
        assert_eq!(
            probe.head_header_with::<8>(rule, "the X header"),
            Ok(&[7u8; 8])
        );
        let finding = probe
            .head_header_with::<64>(rule, "the QED header")
            .expect_err("40 bytes hold no 64-byte header");
        assert_eq!(finding.check, crate::safety::Check::Truncated);
        assert_eq!(finding.rule, "test.truncated");
        assert_eq!(
            finding.detail,
            "the QED header (64 bytes at offset 0x0) runs past the end of the file (40 bytes)"
        );
    }
}
