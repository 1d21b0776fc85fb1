//! qcow2 header extensions (`docs/interop/qcow2.rst`, "Header extensions").
//!
//! Extensions are `{u32 type, u32 length, data, padding to 8}` records between `header_length`
//! and the end of the extension area (the backing file name, or the end of cluster 0). Known
//! types are validated as QEMU's `qcow2_read_extensions` does; unknown types are skipped, as the
//! spec requires, and recorded.

use std::collections::HashSet;

use super::error::{Part, Qcow2Error};
use super::fields::{AUTOCLEAR_BITMAPS, BITMAPS_EXT_LEN, CRYPTO_EXT_LEN, extension_records};
pub use super::fields::{
    EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE, EXT_END, EXT_FEATURE_TABLE,
    FEATURE_ENTRY_LEN, MAX_BACKING_FORMAT_LEN, MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS,
};
use crate::format::bytes::{be32, be64};

/// Which feature bitmap a feature name table entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureType {
    /// incompatible_features.
    Incompatible,
    /// compatible_features.
    Compatible,
    /// autoclear_features.
    Autoclear,
    /// A type the spec does not define.
    Other(u8),
}

/// One entry of the feature name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// Which bitmap.
    pub kind: FeatureType,
    /// Bit number.
    pub bit: u8,
    /// Human-readable name.
    pub name: String,
}

/// The bitmaps extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExtension {
    /// Number of bitmaps in the directory.
    pub nb_bitmaps: u32,
    /// Size of the bitmap directory in bytes.
    pub directory_size: u64,
    /// Offset of the bitmap directory (cluster-aligned).
    pub directory_offset: u64,
}

/// The full disk encryption header extension: where the LUKS header lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoHeaderExtension {
    /// Offset of the LUKS header (cluster-aligned).
    pub offset: u64,
    /// Length of the LUKS header area.
    pub length: u64,
}

/// An extension type this parser does not know, skipped as the spec requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownExtension {
    /// Extension type.
    pub magic: u32,
    /// Data length.
    pub len: u32,
}

/// Every header extension found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderExtensions {
    /// Backing file format (`qcow2`, `raw`, ...).
    pub backing_format: Option<String>,
    /// Feature names, used to name unknown feature bits in messages.
    pub feature_names: Vec<FeatureName>,
    /// Bitmaps extension, if present and consistent (autoclear bit 0 set).
    pub bitmaps: Option<BitmapsExtension>,
    /// Whether a bitmaps extension was present but marked inconsistent (autoclear bit clear).
    pub inconsistent_bitmaps: bool,
    /// LUKS header location.
    pub crypto_header: Option<CryptoHeaderExtension>,
    /// External data file name (never opened).
    pub data_file: Option<String>,
    /// Unknown extensions.
    pub unknown: Vec<UnknownExtension>,
}

impl HeaderExtensions {
    /// The feature name table's name for `bit` of `kind`, if the image names it.
    pub fn feature_name(&self, kind: FeatureType, bit: u8) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|f| f.kind == kind && f.bit == bit)
            .map(|f| f.name.as_str())
    }
}

/// Parses the extension area `cluster0[header_length..]` of an image whose `crypt_method`
/// is LUKS or not, with the given autoclear bits and cluster size.
///
/// `cluster0` holds the file's first bytes up to the end of the extension area, zero-filled
/// where the file is shorter.
pub(crate) fn parse_extensions(
    cluster0: &[u8],
    header_length: u32,
    luks: bool,
    autoclear_features: u64,
    cluster_size: u64,
) -> Result<HeaderExtensions, Qcow2Error> {
    let mut exts = HeaderExtensions::default();
    let mut seen = HashSet::new();
    let ext_end = cluster0.len() as u64;
    // A v2 header has no extension area in the spec's sense, but QEMU reads extensions after
    // the 72-byte header too (the backing format extension exists for v2 images).
    for record in extension_records(cluster0, u64::from(header_length)) {
        let record = record.map_err(|o| Qcow2Error::ExtensionTooLarge {
            magic: o.magic,
            offset: o.offset,
            len: o.len,
            end: ext_end,
        })?;
        let (magic, data) = (record.magic, record.data);
        let len = data.len() as u32;
        if !seen.insert(magic) {
            return Err(Qcow2Error::DuplicateExtension(magic));
        }
        match magic {
            EXT_BACKING_FORMAT => {
                if len > MAX_BACKING_FORMAT_LEN {
                    return Err(bad(
                        Part::BackingFormat,
                        format!(
                            "the name is {len} bytes, QEMU allows at most {MAX_BACKING_FORMAT_LEN}"
                        ),
                    ));
                }
                exts.backing_format = Some(text(data));
            }
            EXT_FEATURE_TABLE => {
                exts.feature_names = data
                    .chunks_exact(FEATURE_ENTRY_LEN)
                    .map(|e| FeatureName {
                        kind: match e[0] {
                            0 => FeatureType::Incompatible,
                            1 => FeatureType::Compatible,
                            2 => FeatureType::Autoclear,
                            other => FeatureType::Other(other),
                        },
                        bit: e[1],
                        name: text(&e[2..]),
                    })
                    .collect();
            }
            EXT_CRYPTO_HEADER => {
                if !luks {
                    return Err(bad(
                        Part::FullDiskEncryption,
                        "it is only allowed with crypt_method 2 (LUKS)".into(),
                    ));
                }
                if len != CRYPTO_EXT_LEN {
                    return Err(bad(
                        Part::FullDiskEncryption,
                        format!("it is {len} bytes, not {CRYPTO_EXT_LEN}"),
                    ));
                }
                let ext = CryptoHeaderExtension {
                    offset: be64(data, 0),
                    length: be64(data, 8),
                };
                if !ext.offset.is_multiple_of(cluster_size) {
                    return Err(bad(
                        Part::FullDiskEncryption,
                        format!(
                            "the LUKS header offset {:#x} is not cluster-aligned",
                            ext.offset
                        ),
                    ));
                }
                exts.crypto_header = Some(ext);
            }
            EXT_BITMAPS => {
                if len != BITMAPS_EXT_LEN {
                    return Err(bad(
                        Part::Bitmaps,
                        format!("it is {len} bytes, not {BITMAPS_EXT_LEN}"),
                    ));
                }
                if autoclear_features & AUTOCLEAR_BITMAPS == 0 {
                    // Spec: bitmaps written by a program that cleared the autoclear bit are
                    // inconsistent and must be ignored.
                    exts.inconsistent_bitmaps = true;
                } else {
                    let nb_bitmaps = be32(data, 0);
                    let reserved = be32(data, 4);
                    let ext = BitmapsExtension {
                        nb_bitmaps,
                        directory_size: be64(data, 8),
                        directory_offset: be64(data, 16),
                    };
                    if reserved != 0 {
                        return Err(bad(Part::Bitmaps, "the reserved field is not zero".into()));
                    }
                    if nb_bitmaps == 0 || nb_bitmaps > MAX_BITMAPS {
                        return Err(bad(
                            Part::Bitmaps,
                            format!("it declares {nb_bitmaps} bitmaps, outside 1..={MAX_BITMAPS}"),
                        ));
                    }
                    if !ext.directory_offset.is_multiple_of(cluster_size) {
                        return Err(bad(
                            Part::Bitmaps,
                            format!(
                                "the bitmap directory offset {:#x} is not cluster-aligned",
                                ext.directory_offset
                            ),
                        ));
                    }
                    if ext.directory_size > MAX_BITMAP_DIRECTORY_SIZE {
                        return Err(bad(
                            Part::Bitmaps,
                            format!(
                                "the bitmap directory is {} bytes, above QEMU's limit of {MAX_BITMAP_DIRECTORY_SIZE}",
                                ext.directory_size
                            ),
                        ));
                    }
                    exts.bitmaps = Some(ext);
                }
            }
            EXT_DATA_FILE => exts.data_file = Some(text(data)),
            _ => exts.unknown.push(UnknownExtension { magic, len }),
        }
    }
    Ok(exts)
}

fn bad(name: Part, reason: String) -> Qcow2Error {
    Qcow2Error::BadExtension { name, reason }
}

/// A string field: up to the first NUL, invalid UTF-8 replaced.
fn text(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}
