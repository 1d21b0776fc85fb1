//! The qcow2 on-disk header, named once: where each field lies, the limits QEMU enforces, and
//! the walk over the header extensions (`docs/interop/qcow2.rst`, "Header" and "Header
//! extensions"; QEMU 10 `block/qcow2.c`, `qcow2_do_open` and `qcow2_read_extensions`).
//!
//! [`FixedHeader::decode`] is the one decoder of the fixed header and [`FixedHeader::encode`]
//! the one encoder; [`extension_records`] the one walk over the extension area. Two validation
//! policies run over what they decode:
//!
//! - **strict** ([`Qcow2Header::read`](super::Qcow2Header::read), `vmimage info` and
//!   `convert`): every table must lie inside the file, `refcount_table_clusters` must not be 0,
//!   extensions must not repeat; each refusal is a [`Qcow2Error`](super::Qcow2Error) with its
//!   own safety rule.
//! - **check mode** ([`check::open`](super::check::open::open), `vmimage check`): what QEMU
//!   refuses when `qemu-img check` opens an image (`BDRV_O_CHECK`), in QEMU's order and words;
//!   tables may lie past the end (the check reports the damage), duplicate extensions are
//!   accepted (the last one wins).
//!
//! | Condition | strict | check mode |
//! |---|---|---|
//! | magic, version 2 or 3, cluster_bits 9..=21 | refused | refused |
//! | v3 header_length < 104; > cluster size | refused | refused |
//! | v3 header_length not a multiple of 8 | refused | accepted (QEMU does not test it) |
//! | backing_file_offset past cluster 0 | refused | refused |
//! | backing_file_offset inside the header | refused | accepted |
//! | compression type unknown, or disagreeing with incompatible bit 3 | refused | refused |
//! | unknown incompatible bits | a policy finding (`qcow2.unknown-incompatible-feature`) | refused |
//! | extended L2 with subclusters < 512 B; refcount_order > 6; crypt_method > 2 | refused | refused |
//! | refcount_table_clusters = 0 | refused | accepted |
//! | a table above QEMU's size limit, or not cluster-aligned | refused | refused |
//! | a table at offset 0 or past the end of the file | refused | accepted (damage the check reports) |
//! | the L1 table too small for the size, or the size too big to index | refused | refused |
//! | more than [`MAX_SNAPSHOTS`] snapshots | refused | counted by the check |
//! | an extension past the extension area | refused | refused |
//! | a repeated extension | refused | accepted, the last one wins |
//! | backing format name >= [`BACKING_FORMAT_BUF`] bytes | refused | refused |
//! | backing file name > [`MAX_BACKING_FILE_NAME`] bytes or past cluster 0 | refused | refused |
//! | data file bit without a data file extension | a policy finding (`qcow2.data-file`) | refused |
//! | LUKS without a crypto header extension | a policy finding | refused |
//!
//! This module imports nothing from its siblings.

use crate::format::bytes::{be32, be64};

/// One field of the fixed header: its byte offset and size (big-endian, spec "Header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the file.
    pub offset: usize,
    /// Bytes: 1, 4 or 8.
    pub size: usize,
}

impl Field {
    const fn at(offset: usize, size: usize) -> Self {
        Self { offset, size }
    }

    /// The field's value in `header` (zero where `header` is shorter).
    pub fn get(self, header: &[u8]) -> u64 {
        match self.size {
            8 => be64(header, self.offset),
            4 => u64::from(be32(header, self.offset)),
            _ => header.get(self.offset).map_or(0, |&b| u64::from(b)),
        }
    }

    /// Writes `value` (truncated to the field's size) into `header`, which must hold the
    /// field.
    pub fn put(self, header: &mut [u8], value: u64) {
        let bytes = value.to_be_bytes();
        header[self.offset..self.offset + self.size].copy_from_slice(&bytes[8 - self.size..]);
    }
}

/// The fields, in the spec's words (`docs/interop/qcow2.rst`, "Header").
pub mod field {
    use super::Field;

    /// Bytes 0-3, `magic`: `QFI\xfb`.
    pub const MAGIC: Field = Field::at(0, 4);
    /// Bytes 4-7, `version`: 2 or 3.
    pub const VERSION: Field = Field::at(4, 4);
    /// Bytes 8-15, `backing_file_offset`: offset of the backing file name, which "must not be
    /// longer than 1023 bytes" and lies in cluster 0; 0 for none.
    pub const BACKING_FILE_OFFSET: Field = Field::at(8, 8);
    /// Bytes 16-19, `backing_file_size`: length of the name, not NUL-terminated.
    pub const BACKING_FILE_SIZE: Field = Field::at(16, 4);
    /// Bytes 20-23, `cluster_bits`: "Number of bits that are used for addressing an offset
    /// within a cluster"; QEMU accepts 9..=21.
    pub const CLUSTER_BITS: Field = Field::at(20, 4);
    /// Bytes 24-31, `size`: virtual disk size in bytes.
    pub const SIZE: Field = Field::at(24, 8);
    /// Bytes 32-35, `crypt_method`: 0 none, 1 AES, 2 LUKS.
    pub const CRYPT_METHOD: Field = Field::at(32, 4);
    /// Bytes 36-39, `l1_size`: entries in the active L1 table.
    pub const L1_SIZE: Field = Field::at(36, 4);
    /// Bytes 40-47, `l1_table_offset`: "Must be aligned to a cluster boundary."
    pub const L1_TABLE_OFFSET: Field = Field::at(40, 8);
    /// Bytes 48-55, `refcount_table_offset`: "Must be aligned to a cluster boundary."
    pub const REFCOUNT_TABLE_OFFSET: Field = Field::at(48, 8);
    /// Bytes 56-59, `refcount_table_clusters`: clusters the refcount table occupies.
    pub const REFCOUNT_TABLE_CLUSTERS: Field = Field::at(56, 4);
    /// Bytes 60-63, `nb_snapshots`: snapshots in the image.
    pub const NB_SNAPSHOTS: Field = Field::at(60, 4);
    /// Bytes 64-71, `snapshots_offset`: "Must be aligned to a cluster boundary."
    pub const SNAPSHOTS_OFFSET: Field = Field::at(64, 8);
    /// Bytes 72-79, `incompatible_features` (version 3; 0 for version 2).
    pub const INCOMPATIBLE_FEATURES: Field = Field::at(72, 8);
    /// Bytes 80-87, `compatible_features` (version 3).
    pub const COMPATIBLE_FEATURES: Field = Field::at(80, 8);
    /// Bytes 88-95, `autoclear_features` (version 3).
    pub const AUTOCLEAR_FEATURES: Field = Field::at(88, 8);
    /// Bytes 96-99, `refcount_order`: refcount width is `1 << refcount_order` bits, "must not
    /// exceed 6"; 4 for version 2.
    pub const REFCOUNT_ORDER: Field = Field::at(96, 4);
    /// Bytes 100-103, `header_length`: "Length of the header structure in bytes"; 72 for
    /// version 2, at least 104 and a multiple of 8 for version 3.
    pub const HEADER_LENGTH: Field = Field::at(100, 4);
    /// Byte 104, `compression_type` (present when `header_length` > 104): 0 zlib, 1 zstd.
    pub const COMPRESSION_TYPE: Field = Field::at(104, 1);
}

/// `QFI\xfb`: the magic at offset 0.
pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// Length of a version 2 header (spec: "the header is 72 bytes long" for v2).
pub const V2_HEADER_LENGTH: u32 = 72;
/// Minimum `header_length` of a version 3 header (spec: fields up to byte 103 are mandatory).
pub const V3_MIN_HEADER_LENGTH: u32 = 104;
/// Bytes of the fixed header read and written: up to the compression type and its padding
/// (QEMU's `sizeof(QCowHeader)`).
pub const FIXED_HEADER_LEN: usize = 112;
/// Smallest cluster: 512 bytes (QEMU `MIN_CLUSTER_BITS`).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster QEMU accepts: 2 MiB (QEMU `MAX_CLUSTER_BITS`).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest cluster size in bytes.
pub const MAX_CLUSTER_SIZE: u64 = 1 << MAX_CLUSTER_BITS;
/// Extended L2 entries split a cluster in 32 subclusters that must be at least 512 bytes
/// (spec "Extended L2 Entries"; QEMU "Unsupported subcluster size"), so clusters of 16 KiB.
pub const MIN_CLUSTER_BITS_EXTENDED_L2: u32 = 14;
/// Largest `refcount_order`: 64-bit refcounts (spec; QEMU "Reference count entry width too
/// large").
pub const MAX_REFCOUNT_ORDER: u32 = 6;
/// QEMU's limit on the active and snapshot L1 tables: 32 MiB (`QCOW_MAX_L1_SIZE`).
pub const MAX_L1_SIZE_BYTES: u64 = 32 * 1024 * 1024;
/// QEMU's limit on the refcount table: 8 MiB (`QCOW_MAX_REFTABLE_SIZE`).
pub const MAX_REFTABLE_SIZE_BYTES: u64 = 8 * 1024 * 1024;
/// QEMU's limit on the number of internal snapshots (`QCOW_MAX_SNAPSHOTS`).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// The longest backing file name QEMU opens. `qcow2_do_open` refuses
/// `len > MIN(1023, cluster_size - backing_file_offset) || len >= sizeof(bs->backing_file)`;
/// `bs->backing_file` is `PATH_MAX` (4096) bytes, so 1023, the spec's limit, is the one that
/// binds (its second test never fires).
pub const MAX_BACKING_FILE_NAME: u32 = 1023;
/// QEMU refuses images whose L1 index does not fit an `int` ("Image is too big").
pub const MAX_L1_INDEX: u64 = i32::MAX as u64;

/// Incompatible feature bit 0: the refcounts may be stale (lazy refcounts in use).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: metadata is known to be corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: L2 entries are 128 bits with subcluster bitmaps.
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible bit the spec defines; any other bit must make a reader refuse the image.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;
/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear bit 1: the external data file is a valid raw image on its own.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension type: end of the extension area.
pub const EXT_END: u32 = 0x0000_0000;
/// Header extension type: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension type: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension type: persistent dirty bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension type: full disk encryption (LUKS) header location.
pub const EXT_CRYPTO_HEADER: u32 = 0x0537_be77;
/// Header extension type: external data file name ("DATA").
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// `sizeof(bs->backing_format)`: QEMU refuses a backing format extension of this many bytes
/// or more ("ext_backing_format: len=... too large").
pub const BACKING_FORMAT_BUF: u32 = 16;
/// The longest backing format name QEMU accepts.
pub const MAX_BACKING_FORMAT_LEN: u32 = BACKING_FORMAT_BUF - 1;
/// Bytes per feature name table entry.
pub const FEATURE_ENTRY_LEN: usize = 48;
/// Bytes of the bitmaps extension's data (`Qcow2BitmapHeaderExt`).
pub const BITMAPS_EXT_LEN: u32 = 24;
/// Bytes of the crypto header extension's data (`Qcow2CryptoHeaderExtension`).
pub const CRYPTO_EXT_LEN: u32 = 16;
/// QEMU's limit on persistent bitmaps (`QCOW2_MAX_BITMAPS`).
pub const MAX_BITMAPS: u32 = 65535;
/// QEMU's limit on the bitmap directory (`QCOW2_MAX_BITMAP_DIRECTORY_SIZE`).
pub const MAX_BITMAP_DIRECTORY_SIZE: u64 = 1024 * MAX_BITMAPS as u64;

/// The fixed header's fields as stored, not yet validated. A version 2 header reads as QEMU
/// reads it: no feature bits, `refcount_order` 4, `header_length` 72; `compression_type` is 0
/// (zlib) unless `header_length` covers byte 104.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FixedHeader {
    /// `magic`.
    pub magic: u32,
    /// `version`.
    pub version: u32,
    /// `backing_file_offset`.
    pub backing_file_offset: u64,
    /// `backing_file_size`.
    pub backing_file_size: u32,
    /// `cluster_bits`.
    pub cluster_bits: u32,
    /// `size`.
    pub size: u64,
    /// `crypt_method`.
    pub crypt_method: u32,
    /// `l1_size`.
    pub l1_size: u32,
    /// `l1_table_offset`.
    pub l1_table_offset: u64,
    /// `refcount_table_offset`.
    pub refcount_table_offset: u64,
    /// `refcount_table_clusters`.
    pub refcount_table_clusters: u32,
    /// `nb_snapshots`.
    pub nb_snapshots: u32,
    /// `snapshots_offset`.
    pub snapshots_offset: u64,
    /// `incompatible_features`.
    pub incompatible_features: u64,
    /// `compatible_features`.
    pub compatible_features: u64,
    /// `autoclear_features`.
    pub autoclear_features: u64,
    /// `refcount_order`.
    pub refcount_order: u32,
    /// `header_length`.
    pub header_length: u32,
    /// `compression_type`.
    pub compression_type: u8,
}

impl FixedHeader {
    /// Decodes the first [`FIXED_HEADER_LEN`] bytes of an image (zero-filled past its end).
    pub fn decode(b: &[u8; FIXED_HEADER_LEN]) -> Self {
        // The fields fit their types by construction: each `get` reads `size` bytes.
        let u32_of = |f: Field| f.get(b) as u32;
        let version = u32_of(field::VERSION);
        let v2 = version == 2;
        let header_length = if v2 {
            V2_HEADER_LENGTH
        } else {
            u32_of(field::HEADER_LENGTH)
        };
        let v3 = |f: Field| if v2 { 0 } else { f.get(b) };
        Self {
            magic: u32_of(field::MAGIC),
            version,
            backing_file_offset: field::BACKING_FILE_OFFSET.get(b),
            backing_file_size: u32_of(field::BACKING_FILE_SIZE),
            cluster_bits: u32_of(field::CLUSTER_BITS),
            size: field::SIZE.get(b),
            crypt_method: u32_of(field::CRYPT_METHOD),
            l1_size: u32_of(field::L1_SIZE),
            l1_table_offset: field::L1_TABLE_OFFSET.get(b),
            refcount_table_offset: field::REFCOUNT_TABLE_OFFSET.get(b),
            refcount_table_clusters: u32_of(field::REFCOUNT_TABLE_CLUSTERS),
            nb_snapshots: u32_of(field::NB_SNAPSHOTS),
            snapshots_offset: field::SNAPSHOTS_OFFSET.get(b),
            incompatible_features: v3(field::INCOMPATIBLE_FEATURES),
            compatible_features: v3(field::COMPATIBLE_FEATURES),
            autoclear_features: v3(field::AUTOCLEAR_FEATURES),
            refcount_order: if v2 { 4 } else { u32_of(field::REFCOUNT_ORDER) },
            header_length,
            // Spec: compression_type exists only when header_length > 104.
            compression_type: if header_length > V3_MIN_HEADER_LENGTH {
                field::COMPRESSION_TYPE.get(b) as u8
            } else {
                0
            },
        }
    }

    /// Encodes a version 3 header: every field at its offset, the padding after the
    /// compression type zero.
    pub fn encode(&self) -> [u8; FIXED_HEADER_LEN] {
        let mut b = [0u8; FIXED_HEADER_LEN];
        let fields = [
            (field::MAGIC, u64::from(self.magic)),
            (field::VERSION, u64::from(self.version)),
            (field::BACKING_FILE_OFFSET, self.backing_file_offset),
            (field::BACKING_FILE_SIZE, u64::from(self.backing_file_size)),
            (field::CLUSTER_BITS, u64::from(self.cluster_bits)),
            (field::SIZE, self.size),
            (field::CRYPT_METHOD, u64::from(self.crypt_method)),
            (field::L1_SIZE, u64::from(self.l1_size)),
            (field::L1_TABLE_OFFSET, self.l1_table_offset),
            (field::REFCOUNT_TABLE_OFFSET, self.refcount_table_offset),
            (
                field::REFCOUNT_TABLE_CLUSTERS,
                u64::from(self.refcount_table_clusters),
            ),
            (field::NB_SNAPSHOTS, u64::from(self.nb_snapshots)),
            (field::SNAPSHOTS_OFFSET, self.snapshots_offset),
            (field::INCOMPATIBLE_FEATURES, self.incompatible_features),
            (field::COMPATIBLE_FEATURES, self.compatible_features),
            (field::AUTOCLEAR_FEATURES, self.autoclear_features),
            (field::REFCOUNT_ORDER, u64::from(self.refcount_order)),
            (field::HEADER_LENGTH, u64::from(self.header_length)),
            (field::COMPRESSION_TYPE, u64::from(self.compression_type)),
        ];
        for (f, value) in fields {
            f.put(&mut b, value);
        }
        b
    }

    /// Where the extension area ends (spec "Header extensions"): at the backing file name, or
    /// at the end of cluster 0. Only meaningful once `cluster_bits` is in range.
    pub fn extension_area_end(&self) -> u64 {
        if self.backing_file_offset != 0 {
            self.backing_file_offset
        } else {
            1u64 << self.cluster_bits
        }
    }
}

/// One header extension record: `{u32 type, u32 length, data, padding to 8}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionRecord<'a> {
    /// Offset of the record's 8-byte header in the file.
    pub offset: u64,
    /// Extension type.
    pub magic: u32,
    /// The data, `length` bytes.
    pub data: &'a [u8],
}

/// A record whose header or declared data runs past the end of the extension area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionOverrun {
    /// Offset of the record's header.
    pub offset: u64,
    /// Its type (0 when the 8-byte header itself does not fit).
    pub magic: u32,
    /// Its declared length (0 when the header does not fit).
    pub len: u32,
}

/// Walks the extension records of `area` (cluster 0 up to the end of the extension area,
/// zero-filled past the end of the file) from `start` (`header_length`), as
/// `qcow2_read_extensions` does: a record that runs past the area is an error, found before
/// its type is looked at; the end marker or the end of the area stops the walk.
pub fn extension_records(
    area: &[u8],
    start: u64,
) -> impl Iterator<Item = Result<ExtensionRecord<'_>, ExtensionOverrun>> {
    let end = area.len() as u64;
    let mut offset = start;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || offset >= end {
            return None;
        }
        let data_start = offset + 8;
        if data_start > end {
            done = true;
            return Some(Err(ExtensionOverrun {
                offset,
                magic: 0,
                len: 0,
            }));
        }
        let magic = be32(area, offset as usize);
        let len = be32(area, offset as usize + 4);
        if u64::from(len) > end - data_start {
            done = true;
            return Some(Err(ExtensionOverrun { offset, magic, len }));
        }
        if magic == EXT_END {
            done = true;
            return None;
        }
        let data = &area[data_start as usize..(data_start + u64::from(len)) as usize];
        let record = ExtensionRecord {
            offset,
            magic,
            data,
        };
        offset = data_start + u64::from(len).next_multiple_of(8);
        Some(Ok(record))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_is_the_identity_for_v3() {
        let h = FixedHeader {
            magic: QCOW2_MAGIC,
            version: 3,
            backing_file_offset: 0x1234,
            backing_file_size: 17,
            cluster_bits: 16,
            size: 0x1_0000_0200,
            crypt_method: 2,
            l1_size: 9,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            nb_snapshots: 3,
            snapshots_offset: 0x50000,
            incompatible_features: INCOMPAT_COMPRESSION,
            compatible_features: COMPAT_LAZY_REFCOUNTS,
            autoclear_features: AUTOCLEAR_BITMAPS,
            refcount_order: 4,
            header_length: 112,
            compression_type: 1,
        };
        assert_eq!(FixedHeader::decode(&h.encode()), h);
    }

    #[test]
    fn a_v2_header_decodes_with_qemus_defaults() {
        let mut b = [0xffu8; FIXED_HEADER_LEN];
        field::VERSION.put(&mut b, 2);
        let h = FixedHeader::decode(&b);
        assert_eq!(
            (
                h.incompatible_features,
                h.refcount_order,
                h.header_length,
                h.compression_type
            ),
            (0, 4, V2_HEADER_LENGTH, 0)
        );
    }

    #[test]
    fn the_field_table_tiles_the_fixed_header() {
        let all = [
            field::MAGIC,
            field::VERSION,
            field::BACKING_FILE_OFFSET,
            field::BACKING_FILE_SIZE,
            field::CLUSTER_BITS,
            field::SIZE,
            field::CRYPT_METHOD,
            field::L1_SIZE,
            field::L1_TABLE_OFFSET,
            field::REFCOUNT_TABLE_OFFSET,
            field::REFCOUNT_TABLE_CLUSTERS,
            field::NB_SNAPSHOTS,
            field::SNAPSHOTS_OFFSET,
            field::INCOMPATIBLE_FEATURES,
            field::COMPATIBLE_FEATURES,
            field::AUTOCLEAR_FEATURES,
            field::REFCOUNT_ORDER,
            field::HEADER_LENGTH,
            field::COMPRESSION_TYPE,
        ];
        let mut next = 0;
        for f in all {
            assert_eq!(f.offset, next, "{f:?}");
            next = f.offset + f.size;
        }
        assert_eq!(next, 105);
    }

    #[test]
    fn the_extension_walk_stops_at_the_end_marker_and_reports_overruns() {
        let mut area = vec![0u8; 64];
        area[0..4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        area[4..8].copy_from_slice(&5u32.to_be_bytes());
        area[8..13].copy_from_slice(b"qcow2");
        let records: Vec<_> = extension_records(&area, 0).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].map(|r| r.data), Ok(&b"qcow2"[..]));
        area[20..24].copy_from_slice(&100u32.to_be_bytes());
        area[16..20].copy_from_slice(&7u32.to_be_bytes());
        let last = extension_records(&area, 0).last();
        assert_eq!(
            last,
            Some(Err(ExtensionOverrun {
                offset: 16,
                magic: 7,
                len: 100
            }))
        );
    }
}
