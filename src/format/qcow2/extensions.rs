//! qcow2 header extensions (`docs/interop/qcow2.rst`, "Header extensions").
//!
//! Extensions are `{u32 type, u32 length, data, padding to 8}` records between `header_length`
//! and the end of the extension area (the backing file name, or the end of cluster 0). Known
//! types are validated as QEMU's `qcow2_read_extensions` does; unknown types are skipped, as the
//! spec requires, and recorded.

use std::collections::HashSet;

use super::header::{AUTOCLEAR_BITMAPS, CryptMethod, Part, Qcow2Error, Qcow2Header};
use crate::format::bytes::{be32, be64};

/// End of the extension area.
pub const EXT_END: u32 = 0x0000_0000;
/// Backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Persistent dirty bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Full disk encryption (LUKS) header location.
pub const EXT_CRYPTO_HEADER: u32 = 0x0537_be77;
/// External data file name ("DATA").
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// QEMU keeps the backing format in a 16-byte buffer: names of 16 bytes or more are refused.
pub const MAX_BACKING_FORMAT_LEN: u32 = 15;
/// Bytes per feature name table entry.
pub const FEATURE_ENTRY_LEN: usize = 48;
/// QEMU's limit on persistent bitmaps (`QCOW2_MAX_BITMAPS`).
pub const MAX_BITMAPS: u32 = 65535;
/// QEMU's limit on the bitmap directory (`QCOW2_MAX_BITMAP_DIRECTORY_SIZE`).
pub const MAX_BITMAP_DIRECTORY_SIZE: u64 = 1024 * MAX_BITMAPS as u64;

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

/// Parses the extension area `cluster0[header_length..ext_end]`.
///
/// `cluster0` holds the file's first bytes, zero-filled where the file is shorter.
pub(crate) fn parse_extensions(
    header: &Qcow2Header,
    cluster0: &[u8],
    ext_end: u64,
) -> Result<HeaderExtensions, Qcow2Error> {
    let mut exts = HeaderExtensions::default();
    let mut seen = HashSet::new();
    let mut offset = u64::from(header.header_length);
    // A v2 header has no extension area in the spec's sense, but QEMU reads extensions after
    // the 72-byte header too (the backing format extension exists for v2 images).
    while offset < ext_end {
        let data_start = offset + 8;
        if data_start > ext_end {
            return Err(Qcow2Error::ExtensionTooLarge {
                magic: 0,
                offset,
                len: 0,
                end: ext_end,
            });
        }
        let magic = be32(cluster0, offset as usize);
        let len = be32(cluster0, offset as usize + 4);
        if u64::from(len) > ext_end - data_start {
            return Err(Qcow2Error::ExtensionTooLarge {
                magic,
                offset,
                len,
                end: ext_end,
            });
        }
        if magic == EXT_END {
            break;
        }
        if !seen.insert(magic) {
            return Err(Qcow2Error::DuplicateExtension(magic));
        }
        let data = &cluster0[data_start as usize..(data_start + u64::from(len)) as usize];
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
                if header.crypt_method != CryptMethod::Luks {
                    return Err(bad(
                        Part::FullDiskEncryption,
                        "it is only allowed with crypt_method 2 (LUKS)".into(),
                    ));
                }
                if len != 16 {
                    return Err(bad(
                        Part::FullDiskEncryption,
                        format!("it is {len} bytes, not 16"),
                    ));
                }
                let ext = CryptoHeaderExtension {
                    offset: be64(data, 0),
                    length: be64(data, 8),
                };
                if !ext.offset.is_multiple_of(header.cluster_size()) {
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
                if len != 24 {
                    return Err(bad(Part::Bitmaps, format!("it is {len} bytes, not 24")));
                }
                if header.autoclear_features & AUTOCLEAR_BITMAPS == 0 {
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
                    if !ext.directory_offset.is_multiple_of(header.cluster_size()) {
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
        offset = data_start + u64::from(len).div_ceil(8) * 8;
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
