//! The qcow2 safety rules: one stable id per condition `vmimage info` reports.
//!
//! Two kinds: policy rules, which a valid header can break (a backing file, an unknown
//! incompatible feature, ...), and the header's structural rules, one per way
//! [`Qcow2Header::read`](super::Qcow2Header::read) refuses an image (each
//! [`Qcow2Error`](super::Qcow2Error) variant, split by the table or extension it names, so that
//! "the L1 table runs past the end of the file" and "the refcount table runs past the end of
//! the file" are told apart). [`Qcow2Error::rule`](super::Qcow2Error::rule) maps an error to its
//! rule. This module imports nothing from its siblings, so any of them can use it.

use crate::safety::{Check, Rule};

// Policy: a valid header that a cloud must refuse or should know about.

/// The image names a backing file.
pub const BACKING_FILE: Rule = Rule::error(
    "qcow2.backing-file",
    Check::BackingFile,
    "The image names a backing file: unallocated clusters would be read from a host path.",
);
/// A backing format extension without a backing file.
pub const BACKING_FORMAT_WITHOUT_FILE: Rule = Rule::error(
    "qcow2.backing-format-without-backing-file",
    Check::BackingFile,
    "The image carries a backing format extension but no backing file name.",
);
/// Guest data in an external data file.
pub const DATA_FILE: Rule = Rule::error(
    "qcow2.data-file",
    Check::DataFile,
    "The guest data lives in an external data file (incompatible bit 2 or a data file extension).",
);
/// The size is not a whole number of sectors.
pub const UNALIGNED_SIZE: Rule = Rule::warning(
    "qcow2.unaligned-size",
    Check::UnalignedSize,
    "The header's size is not a multiple of 512: QEMU drops the last partial sector.",
);
/// An incompatible feature bit the spec does not define.
pub const UNKNOWN_INCOMPATIBLE_FEATURE: Rule = Rule::error(
    "qcow2.unknown-incompatible-feature",
    Check::UnknownIncompatibleFeature,
    "An incompatible feature bit outside bits 0-4 is set: no reader may open the image.",
);
/// Incompatible bit 1.
pub const CORRUPT_BIT: Rule = Rule::error(
    "qcow2.corrupt-bit",
    Check::CorruptBit,
    "The corrupt bit (incompatible bit 1) is set: QEMU found the metadata inconsistent.",
);
/// Incompatible bit 0.
pub const DIRTY_BIT: Rule = Rule::warning(
    "qcow2.dirty-bit",
    Check::DirtyBit,
    "The dirty bit (incompatible bit 0) is set: refcounts may be stale.",
);
/// crypt_method 1.
pub const ENCRYPTED_AES: Rule = Rule::warning(
    "qcow2.encrypted-aes",
    Check::Encrypted,
    "The guest data is encrypted with legacy AES-CBC (crypt_method 1).",
);
/// crypt_method 2.
pub const ENCRYPTED_LUKS: Rule = Rule::warning(
    "qcow2.encrypted-luks",
    Check::Encrypted,
    "The guest data is LUKS-encrypted (crypt_method 2).",
);
/// crypt_method 2 without the extension that locates the LUKS header.
pub const LUKS_EXTENSION_MISSING: Rule = Rule::error(
    "qcow2.luks-extension-missing",
    Check::InvalidHeader,
    "crypt_method is LUKS but no full disk encryption header extension locates the LUKS header.",
);
/// The LUKS header area ends past the end of the file.
pub const LUKS_HEADER_PAST_EOF: Rule = Rule::error(
    "qcow2.luks-header-past-eof",
    Check::Truncated,
    "The LUKS header area the crypto extension names runs past the end of the file.",
);
/// The LUKS header area is smaller than a LUKS header.
pub const LUKS_HEADER_AREA_TOO_SMALL: Rule = Rule::error(
    "qcow2.luks-header-area-too-small",
    Check::InvalidHeader,
    "The LUKS header area is smaller than the 592-byte LUKS header.",
);

// Structure: the header, its extensions and the tables it points at.

/// The magic is not `QFI\xfb`.
pub const MAGIC: Rule = Rule::error(
    "qcow2.magic",
    Check::InvalidHeader,
    "The magic is not QFI\\xfb.",
);
/// A version other than 2 or 3.
pub const VERSION: Rule = Rule::error(
    "qcow2.version",
    Check::InvalidHeader,
    "The version is neither 2 nor 3.",
);
/// The file ends inside the fixed header.
pub const HEADER_PAST_EOF: Rule = Rule::error(
    "qcow2.header-past-eof",
    Check::Truncated,
    "The file ends before the fixed header its version and header_length declare.",
);
/// cluster_bits outside 9..=21.
pub const CLUSTER_BITS: Rule = Rule::error(
    "qcow2.cluster-bits",
    Check::InvalidHeader,
    "cluster_bits is outside 9..=21 (clusters of 512 B to 2 MiB).",
);
/// A version 3 header_length below 104.
pub const HEADER_LENGTH_TOO_SHORT: Rule = Rule::error(
    "qcow2.header-length-too-short",
    Check::InvalidHeader,
    "A version 3 header_length is shorter than 104 bytes.",
);
/// header_length not a multiple of 8.
pub const HEADER_LENGTH_UNALIGNED: Rule = Rule::error(
    "qcow2.header-length-unaligned",
    Check::InvalidHeader,
    "header_length is not a multiple of 8.",
);
/// header_length past cluster 0.
pub const HEADER_LENGTH_PAST_CLUSTER: Rule = Rule::error(
    "qcow2.header-length-past-cluster",
    Check::InvalidHeader,
    "header_length is larger than the cluster size.",
);
/// backing_file_offset past cluster 0.
pub const BACKING_FILE_OFFSET_PAST_CLUSTER: Rule = Rule::error(
    "qcow2.backing-file-offset-past-cluster",
    Check::InvalidHeader,
    "backing_file_offset lies past the end of cluster 0.",
);
/// backing_file_offset inside the header.
pub const BACKING_FILE_OFFSET_INSIDE_HEADER: Rule = Rule::error(
    "qcow2.backing-file-offset-inside-header",
    Check::InvalidHeader,
    "backing_file_offset lies inside the fixed header.",
);
/// backing_file_size above QEMU's limit or past cluster 0.
pub const BACKING_FILE_NAME_TOO_LONG: Rule = Rule::error(
    "qcow2.backing-file-name-too-long",
    Check::InvalidHeader,
    "backing_file_size is above QEMU's 1023-byte limit or runs past cluster 0.",
);
/// compression_type neither 0 nor 1.
pub const COMPRESSION_TYPE: Rule = Rule::error(
    "qcow2.compression-type",
    Check::InvalidHeader,
    "compression_type is neither 0 (zlib) nor 1 (zstd).",
);
/// zstd without incompatible bit 3.
pub const COMPRESSION_BIT_MISSING: Rule = Rule::error(
    "qcow2.compression-bit-missing",
    Check::InvalidHeader,
    "compression_type is zstd but incompatible bit 3 is clear.",
);
/// Incompatible bit 3 with zlib.
pub const COMPRESSION_BIT_WITH_ZLIB: Rule = Rule::error(
    "qcow2.compression-bit-with-zlib",
    Check::InvalidHeader,
    "Incompatible bit 3 is set but compression_type is zlib.",
);
/// Extended L2 with clusters below 16 KiB.
pub const SUBCLUSTER_TOO_SMALL: Rule = Rule::error(
    "qcow2.subcluster-too-small",
    Check::InvalidHeader,
    "Extended L2 entries with clusters under 16 KiB (subclusters under 512 bytes).",
);
/// refcount_order above 6.
pub const REFCOUNT_ORDER: Rule = Rule::error(
    "qcow2.refcount-order",
    Check::InvalidHeader,
    "refcount_order is above 6 (refcounts wider than 64 bits).",
);
/// crypt_method not 0, 1 or 2.
pub const CRYPT_METHOD: Rule = Rule::error(
    "qcow2.crypt-method",
    Check::InvalidHeader,
    "crypt_method is not 0 (none), 1 (AES) or 2 (LUKS).",
);
/// refcount_table_clusters is 0.
pub const NO_REFCOUNT_TABLE: Rule = Rule::error(
    "qcow2.no-refcount-table",
    Check::InvalidHeader,
    "refcount_table_clusters is 0: the image has no reference count table.",
);
/// nb_snapshots above QEMU's limit.
pub const TOO_MANY_SNAPSHOTS: Rule = Rule::error(
    "qcow2.too-many-snapshots",
    Check::InvalidHeader,
    "nb_snapshots is above QEMU's limit of 65536.",
);
/// The active L1 table cannot map the disk.
pub const L1_TABLE_TOO_SMALL: Rule = Rule::error(
    "qcow2.l1-table-too-small",
    Check::InvalidHeader,
    "l1_size has fewer entries than the virtual size needs.",
);
/// The virtual size needs an L1 index above `INT_MAX`.
pub const SIZE_TOO_BIG: Rule = Rule::error(
    "qcow2.size-too-big",
    Check::InvalidHeader,
    "The virtual size needs more L1 entries than QEMU can index.",
);
/// An extension runs past the extension area.
pub const EXTENSION_PAST_AREA: Rule = Rule::error(
    "qcow2.extension-past-area",
    Check::InvalidHeader,
    "A header extension's length runs past the end of the extension area.",
);
/// An extension type twice.
pub const EXTENSION_DUPLICATE: Rule = Rule::error(
    "qcow2.extension-duplicate",
    Check::InvalidHeader,
    "A header extension type appears more than once.",
);
/// A backing format name of 16 bytes or more.
pub const BACKING_FORMAT_NAME_TOO_LONG: Rule = Rule::error(
    "qcow2.backing-format-name-too-long",
    Check::InvalidHeader,
    "The backing format extension's name is longer than QEMU's 15 bytes.",
);
/// A malformed full disk encryption extension.
pub const CRYPTO_EXTENSION_INVALID: Rule = Rule::error(
    "qcow2.crypto-extension-invalid",
    Check::InvalidHeader,
    "The full disk encryption extension is not 16 bytes, not with LUKS, or not cluster-aligned.",
);
/// A malformed bitmaps extension.
pub const BITMAPS_EXTENSION_INVALID: Rule = Rule::error(
    "qcow2.bitmaps-extension-invalid",
    Check::InvalidHeader,
    "The bitmaps extension has a bad length, reserved field, count, offset or directory size.",
);
/// Autoclear bit 1 without a data file.
pub const DATA_FILE_RAW_WITHOUT_DATA_FILE: Rule = Rule::error(
    "qcow2.data-file-raw-without-data-file",
    Check::InvalidHeader,
    "The raw external data autoclear bit is set but the image has no external data file.",
);
/// A snapshot table entry with a bad extra data size.
pub const SNAPSHOT_ENTRY_INVALID: Rule = Rule::error(
    "qcow2.snapshot-entry-invalid",
    Check::InvalidHeader,
    "A snapshot table entry's extra data is above QEMU's limit, or too short for version 3.",
);
/// A malformed bitmap directory entry.
pub const BITMAP_DIRECTORY_INVALID: Rule = Rule::error(
    "qcow2.bitmap-directory-invalid",
    Check::InvalidHeader,
    "A bitmap directory entry runs past the directory or has granularity_bits outside 9..=31.",
);
/// The bitmap directory ends past the end of the file.
pub const BITMAP_DIRECTORY_PAST_EOF: Rule = Rule::error(
    "qcow2.bitmap-directory-past-eof",
    Check::Truncated,
    "The bitmap directory runs past the end of the file.",
);

// The tables: for each of the four, too large, unaligned, at offset 0, past the end of the file.

/// The active L1 table above 32 MiB.
pub const L1_TABLE_TOO_LARGE: Rule = Rule::error(
    "qcow2.l1-table-too-large",
    Check::InvalidHeader,
    "The active L1 table is larger than QEMU's 32 MiB limit.",
);
/// The active L1 table not cluster-aligned.
pub const L1_TABLE_UNALIGNED: Rule = Rule::error(
    "qcow2.l1-table-unaligned",
    Check::InvalidHeader,
    "The active L1 table offset is not cluster-aligned.",
);
/// The active L1 table at offset 0.
pub const L1_TABLE_AT_HEADER: Rule = Rule::error(
    "qcow2.l1-table-at-header",
    Check::InvalidHeader,
    "The active L1 table is at offset 0, on top of the header.",
);
/// The active L1 table past the end of the file.
pub const L1_TABLE_PAST_EOF: Rule = Rule::error(
    "qcow2.l1-table-past-eof",
    Check::Truncated,
    "The active L1 table runs past the end of the file.",
);
/// The refcount table above 8 MiB.
pub const REFCOUNT_TABLE_TOO_LARGE: Rule = Rule::error(
    "qcow2.refcount-table-too-large",
    Check::InvalidHeader,
    "The refcount table is larger than QEMU's 8 MiB limit.",
);
/// The refcount table not cluster-aligned.
pub const REFCOUNT_TABLE_UNALIGNED: Rule = Rule::error(
    "qcow2.refcount-table-unaligned",
    Check::InvalidHeader,
    "The refcount table offset is not cluster-aligned.",
);
/// The refcount table at offset 0.
pub const REFCOUNT_TABLE_AT_HEADER: Rule = Rule::error(
    "qcow2.refcount-table-at-header",
    Check::InvalidHeader,
    "The refcount table is at offset 0, on top of the header.",
);
/// The refcount table past the end of the file.
pub const REFCOUNT_TABLE_PAST_EOF: Rule = Rule::error(
    "qcow2.refcount-table-past-eof",
    Check::Truncated,
    "The refcount table runs past the end of the file.",
);
/// The snapshot table above 64 MiB.
pub const SNAPSHOT_TABLE_TOO_LARGE: Rule = Rule::error(
    "qcow2.snapshot-table-too-large",
    Check::InvalidHeader,
    "The snapshot table is larger than QEMU's 64 MiB limit.",
);
/// The snapshot table not cluster-aligned.
pub const SNAPSHOT_TABLE_UNALIGNED: Rule = Rule::error(
    "qcow2.snapshot-table-unaligned",
    Check::InvalidHeader,
    "The snapshot table offset is not cluster-aligned.",
);
/// The snapshot table at offset 0.
pub const SNAPSHOT_TABLE_AT_HEADER: Rule = Rule::error(
    "qcow2.snapshot-table-at-header",
    Check::InvalidHeader,
    "The snapshot table is at offset 0, on top of the header.",
);
/// The snapshot table past the end of the file.
pub const SNAPSHOT_TABLE_PAST_EOF: Rule = Rule::error(
    "qcow2.snapshot-table-past-eof",
    Check::Truncated,
    "The snapshot table runs past the end of the file.",
);
/// A snapshot's L1 table above 32 MiB.
pub const SNAPSHOT_L1_TABLE_TOO_LARGE: Rule = Rule::error(
    "qcow2.snapshot-l1-table-too-large",
    Check::InvalidHeader,
    "A snapshot's L1 table is larger than QEMU's 32 MiB limit.",
);
/// A snapshot's L1 table not cluster-aligned.
pub const SNAPSHOT_L1_TABLE_UNALIGNED: Rule = Rule::error(
    "qcow2.snapshot-l1-table-unaligned",
    Check::InvalidHeader,
    "A snapshot's L1 table offset is not cluster-aligned.",
);
/// A snapshot's L1 table at offset 0.
pub const SNAPSHOT_L1_TABLE_AT_HEADER: Rule = Rule::error(
    "qcow2.snapshot-l1-table-at-header",
    Check::InvalidHeader,
    "A snapshot's L1 table is at offset 0, on top of the header.",
);
/// A snapshot's L1 table past the end of the file.
pub const SNAPSHOT_L1_TABLE_PAST_EOF: Rule = Rule::error(
    "qcow2.snapshot-l1-table-past-eof",
    Check::Truncated,
    "A snapshot's L1 table runs past the end of the file.",
);

/// Every qcow2 rule, policy first, in the order the docs table lists them.
pub const RULES: &[Rule] = &[
    BACKING_FILE,
    BACKING_FORMAT_WITHOUT_FILE,
    DATA_FILE,
    UNALIGNED_SIZE,
    UNKNOWN_INCOMPATIBLE_FEATURE,
    CORRUPT_BIT,
    DIRTY_BIT,
    ENCRYPTED_AES,
    ENCRYPTED_LUKS,
    LUKS_EXTENSION_MISSING,
    LUKS_HEADER_PAST_EOF,
    LUKS_HEADER_AREA_TOO_SMALL,
    MAGIC,
    VERSION,
    HEADER_PAST_EOF,
    CLUSTER_BITS,
    HEADER_LENGTH_TOO_SHORT,
    HEADER_LENGTH_UNALIGNED,
    HEADER_LENGTH_PAST_CLUSTER,
    BACKING_FILE_OFFSET_PAST_CLUSTER,
    BACKING_FILE_OFFSET_INSIDE_HEADER,
    BACKING_FILE_NAME_TOO_LONG,
    COMPRESSION_TYPE,
    COMPRESSION_BIT_MISSING,
    COMPRESSION_BIT_WITH_ZLIB,
    SUBCLUSTER_TOO_SMALL,
    REFCOUNT_ORDER,
    CRYPT_METHOD,
    NO_REFCOUNT_TABLE,
    TOO_MANY_SNAPSHOTS,
    L1_TABLE_TOO_SMALL,
    SIZE_TOO_BIG,
    EXTENSION_PAST_AREA,
    EXTENSION_DUPLICATE,
    BACKING_FORMAT_NAME_TOO_LONG,
    CRYPTO_EXTENSION_INVALID,
    BITMAPS_EXTENSION_INVALID,
    DATA_FILE_RAW_WITHOUT_DATA_FILE,
    SNAPSHOT_ENTRY_INVALID,
    BITMAP_DIRECTORY_INVALID,
    BITMAP_DIRECTORY_PAST_EOF,
    L1_TABLE_TOO_LARGE,
    L1_TABLE_UNALIGNED,
    L1_TABLE_AT_HEADER,
    L1_TABLE_PAST_EOF,
    REFCOUNT_TABLE_TOO_LARGE,
    REFCOUNT_TABLE_UNALIGNED,
    REFCOUNT_TABLE_AT_HEADER,
    REFCOUNT_TABLE_PAST_EOF,
    SNAPSHOT_TABLE_TOO_LARGE,
    SNAPSHOT_TABLE_UNALIGNED,
    SNAPSHOT_TABLE_AT_HEADER,
    SNAPSHOT_TABLE_PAST_EOF,
    SNAPSHOT_L1_TABLE_TOO_LARGE,
    SNAPSHOT_L1_TABLE_UNALIGNED,
    SNAPSHOT_L1_TABLE_AT_HEADER,
    SNAPSHOT_L1_TABLE_PAST_EOF,
];
