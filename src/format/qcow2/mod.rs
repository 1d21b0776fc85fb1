//! qcow2 images: header, extensions, snapshot table, table entries, and the description
//! `vmimage info` reports.

pub mod bitmaps;
pub mod check;
pub mod compressed;
pub mod error;
pub mod extensions;
pub mod fields;
pub mod header;
pub mod reader;
#[cfg(test)]
mod rule_tests;
pub mod rules;
pub mod snapshot;
pub mod tables;

use std::io;

use serde::Serialize;

pub use header::{CompressionType, CryptMethod, Qcow2Error, Qcow2Header};

use self::bitmaps::{BitmapInfo, read_bitmap_directory};
use self::extensions::{CryptoHeaderExtension, FeatureType};
use self::snapshot::read_snapshots;
use super::bytes::be32;
use super::luks::{self, LuksHeader, LuksSpecific};
use super::{FormatReport, FormatSpecific, Probe, SnapshotInfo};
use crate::safety::Finding;
use crate::source::{ReadAt, ReadError, read_vec_at};

pub use rules::RULES;

/// `qemu-img info`'s qcow2 `format-specific.data`. Fields QEMU prints only for version 3 are
/// `None` for version 2, so the JSON has the same keys as QEMU's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Qcow2Specific {
    /// `0.10` (version 2) or `1.1` (version 3).
    pub compat: &'static str,
    /// `zlib` or `zstd`.
    pub compression_type: &'static str,
    /// Lazy refcounts (v3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_refcounts: Option<bool>,
    /// Refcount width in bits.
    pub refcount_bits: u32,
    /// The corrupt bit (v3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<bool>,
    /// Extended L2 entries (v3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_l2: Option<bool>,
    /// External data file name, never opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    /// Whether the external data file is raw (present when the image has a data file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file_raw: Option<bool>,
    /// Encryption format, when the image is encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Qcow2Encryption>,
    /// Persistent dirty bitmaps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<Vec<BitmapInfo>>,
}

/// How a qcow2 image is encrypted, as `qemu-img info` reports it: the format, and for LUKS
/// every field of the LUKS header beside it (QAPI `ImageInfoSpecificQCow2Encryption`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Qcow2Encryption {
    /// `aes` or `luks`.
    pub format: &'static str,
    /// The LUKS header's facts, when the header could be read and validated.
    #[serde(flatten)]
    pub luks: Option<LuksSpecific>,
}

/// Whether the probe starts with the qcow2 magic.
///
/// Any version but 1 counts: a file that carries the magic but an unsupported version is
/// reported as an invalid qcow2, never silently as raw (format confusion is how CVE-2024-40767
/// worked). Version 1 is QEMU's legacy `qcow` ([`super::qcow`]); [`super::detect_all`] asks
/// that detector first.
pub fn detect(probe: &Probe) -> bool {
    probe.head.len() >= 4 && be32(&probe.head, 0) == header::QCOW2_MAGIC
}

/// Describes a qcow2 image as `qemu-img info -f qcow2` would, plus safety findings.
pub fn describe<S: ReadAt + ?Sized>(src: &S, probe: &Probe) -> io::Result<FormatReport> {
    decode(src, probe).map(|(report, _)| report)
}

/// [`describe`], also handing back the header it decoded (strict policy), so that the guest
/// reader starts from it instead of decoding it again; `None` when the header is refused.
pub fn decode<S: ReadAt + ?Sized>(
    src: &S,
    _probe: &Probe,
) -> io::Result<(FormatReport, Option<Qcow2Header>)> {
    let header = match Qcow2Header::read(src) {
        Ok(h) => h,
        Err(e) => return invalid_report(e).map(|report| (report, None)),
    };
    let mut report = FormatReport {
        virtual_size: Some(header.virtual_size()),
        cluster_size: Some(header.cluster_size()),
        dirty: header.is_dirty(),
        encrypted: header.crypt_method != CryptMethod::None,
        backing_filename: header.backing_file.clone(),
        backing_format: header.extensions.backing_format.clone(),
        ..FormatReport::default()
    };
    report.findings = policy_findings(&header);

    match read_snapshots(src, &header) {
        Ok(snapshots) => report.snapshots = snapshots.iter().map(snapshot_info).collect(),
        Err(e) => report.findings.push(content_finding(e)?),
    }
    let bitmaps = match &header.extensions.bitmaps {
        Some(ext) => match read_bitmap_directory(src, ext) {
            Ok(b) => Some(b),
            Err(e) => {
                report.findings.push(content_finding(e)?);
                None
            }
        },
        None => None,
    };
    let luks = match (header.crypt_method, header.extensions.crypto_header) {
        (CryptMethod::Luks, Some(crypto)) => read_luks_header(src, crypto, &mut report.findings)?,
        (CryptMethod::Luks, None) => {
            report.findings.push(rules::LUKS_EXTENSION_MISSING.finding(
                "crypt_method is 2 (LUKS) but no full disk encryption header extension locates the LUKS header",
            ));
            None
        }
        _ => None,
    };

    let v3 = header.version >= 3;
    let has_data_file = header.has_data_file();
    report.format_specific = Some(FormatSpecific::Qcow2(Qcow2Specific {
        compat: if v3 { "1.1" } else { "0.10" },
        compression_type: header.compression_type.name(),
        lazy_refcounts: v3.then(|| header.lazy_refcounts()),
        refcount_bits: header.refcount_bits(),
        corrupt: v3.then(|| header.is_corrupt()),
        extended_l2: v3.then(|| header.extended_l2()),
        data_file: header
            .extensions
            .data_file
            .clone()
            .filter(|_| has_data_file),
        data_file_raw: has_data_file.then(|| header.data_file_raw()),
        encrypt: match header.crypt_method {
            CryptMethod::None => None,
            CryptMethod::Aes => Some(Qcow2Encryption {
                format: "aes",
                luks: None,
            }),
            CryptMethod::Luks => Some(Qcow2Encryption {
                format: "luks",
                luks,
            }),
        },
        bitmaps,
    }));
    Ok((report, Some(header)))
}

/// Reads and validates the LUKS header the crypto header extension locates, as QEMU's
/// `qcow2_crypto_hdr_read_func()` does: the whole area must be in the file, and the 592-byte
/// header must fit inside it. Problems become findings; the result is what `qemu-img info`
/// prints under `encrypt`.
fn read_luks_header<S: ReadAt + ?Sized>(
    src: &S,
    crypto: CryptoHeaderExtension,
    findings: &mut Vec<Finding>,
) -> io::Result<Option<LuksSpecific>> {
    let end = crypto.offset.checked_add(crypto.length);
    if end.is_none_or(|end| end > src.len()) {
        findings.push(rules::LUKS_HEADER_PAST_EOF.finding(format!(
            "the LUKS header ({} bytes at offset {:#x}) runs past the end of the file ({} bytes)",
            crypto.length,
            crypto.offset,
            src.len()
        )));
        return Ok(None);
    }
    if crypto.length < luks::HEADER_LEN as u64 {
        findings.push(rules::LUKS_HEADER_AREA_TOO_SMALL.finding(format!(
            "the LUKS header area is {} bytes, too small for the {}-byte LUKS header",
            crypto.length,
            luks::HEADER_LEN
        )));
        return Ok(None);
    }
    let bytes = match read_vec_at(src, crypto.offset, luks::HEADER_LEN) {
        Ok(b) => b,
        // The area was checked to lie inside the file: only the OS can fail this read.
        Err(ReadError::Io(e)) => return Err(e),
        Err(ReadError::Truncated { .. }) => {
            findings.push(rules::LUKS_HEADER_PAST_EOF.finding(format!(
                "the LUKS header ({} bytes at offset {:#x}) runs past the end of the file ({} bytes)",
                luks::HEADER_LEN,
                crypto.offset,
                src.len()
            )));
            return Ok(None);
        }
    };
    match LuksHeader::parse(&bytes) {
        Ok(h) => Ok(Some(h.info().clone())),
        Err(e) => {
            findings.push(luks::finding(&e));
            Ok(None)
        }
    }
}

/// The safety rules a valid header can still break.
fn policy_findings(header: &Qcow2Header) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(name) = &header.backing_file {
        findings.push(rules::BACKING_FILE.finding(format!(
            "the image reads unallocated clusters from the backing file {name:?}"
        )));
    } else if let Some(fmt) = &header.extensions.backing_format {
        findings.push(rules::BACKING_FORMAT_WITHOUT_FILE.finding(format!(
            "the image carries a backing format extension ({fmt:?}) without a backing file"
        )));
    }
    if header.has_data_file() || header.extensions.data_file.is_some() {
        let name = header
            .extensions
            .data_file
            .as_deref()
            .map_or_else(|| "an unnamed file".to_string(), |n| format!("{n:?}"));
        findings.push(rules::DATA_FILE.finding(format!(
            "the guest data lives in the external data file {name}"
        )));
    }
    if header.virtual_size() != header.size {
        findings.push(rules::UNALIGNED_SIZE.finding(
            format!(
                "the header's size, {} bytes, is not a multiple of 512: QEMU reads the disk as {} bytes and its last {} bytes are not part of the guest disk",
                header.size,
                header.virtual_size(),
                header.size - header.virtual_size()
            ),
        ));
    }
    let unknown = header.unknown_incompatible_features();
    if unknown != 0 {
        let names: Vec<String> = (0..64u8)
            .filter(|bit| unknown & (1u64 << bit) != 0)
            .map(|bit| {
                match header
                    .extensions
                    .feature_name(FeatureType::Incompatible, bit)
                {
                    Some(name) => format!("bit {bit} ({name})"),
                    None => format!("bit {bit}"),
                }
            })
            .collect();
        findings.push(rules::UNKNOWN_INCOMPATIBLE_FEATURE.finding(
            format!(
                "unknown incompatible feature {} is set (mask {unknown:#x}); no reader may open the image",
                names.join(", ")
            ),
        ));
    }
    if header.is_corrupt() {
        findings.push(
            rules::CORRUPT_BIT
                .finding("the corrupt bit is set: QEMU found the metadata inconsistent"),
        );
    }
    if header.is_dirty() {
        findings.push(rules::DIRTY_BIT.finding(
            "the dirty bit is set: refcounts may be stale until `vmimage check` or `qemu-img check -r` runs",
        ));
    }
    match header.crypt_method {
        CryptMethod::None => {}
        CryptMethod::Aes => findings.push(rules::ENCRYPTED_AES.finding(
            "the guest data is encrypted with legacy AES-CBC, which QEMU's system emulators refuse",
        )),
        CryptMethod::Luks => findings.push(
            rules::ENCRYPTED_LUKS
                .finding("the guest data is LUKS-encrypted: the cloud needs the key to boot it"),
        ),
    }
    findings
}

fn snapshot_info(s: &snapshot::Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.clone(),
        name: s.name.clone(),
        vm_state_size: s.vm_state_size,
        date_sec: u64::from(s.date_sec),
        date_nsec: u64::from(s.date_nsec),
        vm_clock_sec: s.vm_clock_nsec / 1_000_000_000,
        vm_clock_nsec: s.vm_clock_nsec % 1_000_000_000,
        icount: s.icount,
    }
}

/// Maps a header error to the report of an invalid image, or to an I/O error.
fn invalid_report(e: Qcow2Error) -> io::Result<FormatReport> {
    Ok(FormatReport {
        findings: vec![content_finding(e)?],
        ..FormatReport::default()
    })
}

/// The finding of the rule a header or table error breaks; I/O errors stay errors.
fn content_finding(e: Qcow2Error) -> io::Result<Finding> {
    match e.rule() {
        Some(rule) => Ok(rule.finding(e.to_string())),
        None => match e {
            Qcow2Error::Io(e) => Err(e),
            other => Err(io::Error::other(other.to_string())),
        },
    }
}
