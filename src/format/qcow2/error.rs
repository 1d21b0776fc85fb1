//! Why qcow2 structures are refused: [`Qcow2Error`], with the safety rule each refusal breaks.

use std::fmt;

use super::fields::{
    MAX_CLUSTER_BITS, MAX_REFCOUNT_ORDER, MAX_SNAPSHOTS, MIN_CLUSTER_BITS, V3_MIN_HEADER_LENGTH,
};
use super::rules;
use crate::safety::Rule;
use crate::source::ReadError;

/// Why a qcow2 header was refused. Messages name the field, its value and the allowed range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Qcow2Error {
    /// The magic is not `QFI\xfb`.
    #[error("the magic is {0:#010x}, not QFI\\xfb")]
    BadMagic(u32),
    /// The version is not 2 or 3.
    #[error("qcow2 version {0} is not supported (only 2 and 3 exist)")]
    UnsupportedVersion(u32),
    /// cluster_bits outside 9..=21.
    #[error(
        "cluster_bits is {0}, outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS} (cluster sizes 512 B to 2 MiB)"
    )]
    ClusterBits(u32),
    /// A v3 header shorter than 104 bytes.
    #[error(
        "header_length is {0}, shorter than the {V3_MIN_HEADER_LENGTH} bytes of a version 3 header"
    )]
    HeaderTooShort(u32),
    /// header_length not a multiple of 8.
    #[error("header_length is {0}, not a multiple of 8")]
    HeaderLengthUnaligned(u32),
    /// header_length beyond cluster 0.
    #[error("header_length is {header_length}, past the end of cluster 0 ({cluster_size} bytes)")]
    HeaderExceedsCluster {
        /// Declared header length.
        header_length: u32,
        /// Cluster size.
        cluster_size: u64,
    },
    /// backing_file_offset beyond cluster 0.
    #[error("backing_file_offset is {offset:#x}, outside cluster 0 ({cluster_size} bytes)")]
    BackingFileOffset {
        /// Declared offset.
        offset: u64,
        /// Cluster size.
        cluster_size: u64,
    },
    /// backing_file_size too large for where it starts.
    #[error("backing_file_size is {size}, more than the {max} bytes available for the name")]
    BackingFileNameTooLong {
        /// Declared size.
        size: u32,
        /// Largest size allowed at that offset.
        max: u64,
    },
    /// A backing file offset inside the fixed header.
    #[error("backing_file_offset {offset:#x} lies inside the {header_length}-byte header")]
    BackingFileInsideHeader {
        /// Declared offset.
        offset: u64,
        /// Header length.
        header_length: u32,
    },
    /// compression_type is neither zlib nor zstd.
    #[error("compression_type is {0}, not 0 (zlib) or 1 (zstd)")]
    UnknownCompressionType(u8),
    /// A non-zlib compression type without incompatible bit 3.
    #[error(
        "compression_type is {0} but the compression type incompatible feature bit (3) is not set"
    )]
    CompressionBitMissing(&'static str),
    /// Incompatible bit 3 with compression type zlib.
    #[error(
        "the compression type incompatible feature bit (3) is set but compression_type is zlib"
    )]
    CompressionBitWithZlib,
    /// Extended L2 with clusters smaller than 16 KiB.
    #[error(
        "extended L2 entries need clusters of at least 16 KiB (subclusters of 512 B), but cluster_bits is {0}"
    )]
    SubclusterTooSmall(u32),
    /// refcount_order above 6.
    #[error("refcount_order is {0}, above {MAX_REFCOUNT_ORDER} (refcounts wider than 64 bits)")]
    RefcountOrder(u32),
    /// crypt_method not 0, 1 or 2.
    #[error("crypt_method is {0}, not 0 (none), 1 (AES) or 2 (LUKS)")]
    CryptMethod(u32),
    /// refcount_table_clusters is 0.
    #[error("refcount_table_clusters is 0: the image has no reference count table")]
    NoRefcountTable,
    /// A table whose size exceeds QEMU's limit.
    #[error("the {table} holds {bytes} bytes, above QEMU's limit of {limit} bytes")]
    TableTooLarge {
        /// Which table.
        table: TableKind,
        /// Its declared size in bytes.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A table offset that is not cluster-aligned or overflows.
    #[error(
        "the {table} offset {offset:#x} is not aligned to the {cluster_size}-byte cluster size"
    )]
    TableUnaligned {
        /// Which table.
        table: TableKind,
        /// Declared offset.
        offset: u64,
        /// Cluster size.
        cluster_size: u64,
    },
    /// A table that ends past the end of the file (or past 2^63).
    #[error(
        "the {table} ({bytes} bytes at offset {offset:#x}) runs past the end of the file ({file_len} bytes)"
    )]
    TableOutsideFile {
        /// Which table.
        table: TableKind,
        /// Declared offset.
        offset: u64,
        /// Declared size.
        bytes: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A table at offset 0, on top of the header.
    #[error("the {table} is at offset 0, on top of the header")]
    TableOverlapsHeader {
        /// Which table.
        table: TableKind,
    },
    /// Too many snapshots.
    #[error("nb_snapshots is {0}, above QEMU's limit of {MAX_SNAPSHOTS}")]
    TooManySnapshots(u32),
    /// The L1 table cannot map the whole virtual disk.
    #[error("the L1 table has {l1_size} entries but a {size}-byte disk needs {needed}")]
    L1TooSmall {
        /// Declared entries.
        l1_size: u32,
        /// Virtual size.
        size: u64,
        /// Entries needed.
        needed: u64,
    },
    /// The virtual size needs more L1 entries than QEMU can index.
    #[error("the virtual size {0} bytes is too big for QEMU to address")]
    ImageTooBig(u64),
    /// A header extension runs past the extension area.
    #[error(
        "the header extension {magic:#010x} at {offset:#x} declares {len} bytes, past the extension area ending at {end:#x}"
    )]
    ExtensionTooLarge {
        /// Extension type.
        magic: u32,
        /// Offset of its 8-byte header.
        offset: u64,
        /// Declared data length.
        len: u32,
        /// End of the extension area.
        end: u64,
    },
    /// A header extension type that appears twice.
    #[error("the header extension {0:#010x} appears more than once")]
    DuplicateExtension(u32),
    /// A malformed known header extension.
    #[error("the {name} header extension is invalid: {reason}")]
    BadExtension {
        /// Which extension (or table read like one).
        name: Part,
        /// What is wrong.
        reason: String,
    },
    /// Autoclear bit 1 without an external data file.
    #[error("the raw external data autoclear bit is set but the image has no external data file")]
    DataFileRawWithoutDataFile,
    /// A structure the header declares lies past the end of the file.
    #[error("the {what} runs past the end of the file: {source}")]
    Truncated {
        /// What was being read.
        what: Part,
        /// The bounded read that failed.
        source: ReadError,
    },
    /// The operating system failed a read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Qcow2Error {
    /// Wraps a failed read of `what`, keeping I/O errors apart from truncation.
    pub fn from_read(what: Part, err: ReadError) -> Self {
        match err {
            ReadError::Io(e) => Qcow2Error::Io(e),
            source @ ReadError::Truncated { .. } => Qcow2Error::Truncated { what, source },
        }
    }

    /// Whether the error is about the image's bytes (as opposed to the OS failing a read).
    pub fn is_content_error(&self) -> bool {
        !matches!(self, Qcow2Error::Io(_))
    }

    /// The safety rule the image breaks, `None` when the OS failed a read.
    pub fn rule(&self) -> Option<Rule> {
        use TableKind::{ActiveL1, RefcountTable, SnapshotL1, SnapshotTable};
        Some(match self {
            Qcow2Error::BadMagic(_) => rules::MAGIC,
            Qcow2Error::UnsupportedVersion(_) => rules::VERSION,
            Qcow2Error::ClusterBits(_) => rules::CLUSTER_BITS,
            Qcow2Error::HeaderTooShort(_) => rules::HEADER_LENGTH_TOO_SHORT,
            Qcow2Error::HeaderLengthUnaligned(_) => rules::HEADER_LENGTH_UNALIGNED,
            Qcow2Error::HeaderExceedsCluster { .. } => rules::HEADER_LENGTH_PAST_CLUSTER,
            Qcow2Error::BackingFileOffset { .. } => rules::BACKING_FILE_OFFSET_PAST_CLUSTER,
            Qcow2Error::BackingFileNameTooLong { .. } => rules::BACKING_FILE_NAME_TOO_LONG,
            Qcow2Error::BackingFileInsideHeader { .. } => rules::BACKING_FILE_OFFSET_INSIDE_HEADER,
            Qcow2Error::UnknownCompressionType(_) => rules::COMPRESSION_TYPE,
            Qcow2Error::CompressionBitMissing(_) => rules::COMPRESSION_BIT_MISSING,
            Qcow2Error::CompressionBitWithZlib => rules::COMPRESSION_BIT_WITH_ZLIB,
            Qcow2Error::SubclusterTooSmall(_) => rules::SUBCLUSTER_TOO_SMALL,
            Qcow2Error::RefcountOrder(_) => rules::REFCOUNT_ORDER,
            Qcow2Error::CryptMethod(_) => rules::CRYPT_METHOD,
            Qcow2Error::NoRefcountTable => rules::NO_REFCOUNT_TABLE,
            Qcow2Error::TableTooLarge { table, .. } => match table {
                ActiveL1 => rules::L1_TABLE_TOO_LARGE,
                RefcountTable => rules::REFCOUNT_TABLE_TOO_LARGE,
                SnapshotTable => rules::SNAPSHOT_TABLE_TOO_LARGE,
                SnapshotL1 => rules::SNAPSHOT_L1_TABLE_TOO_LARGE,
            },
            Qcow2Error::TableUnaligned { table, .. } => match table {
                ActiveL1 => rules::L1_TABLE_UNALIGNED,
                RefcountTable => rules::REFCOUNT_TABLE_UNALIGNED,
                SnapshotTable => rules::SNAPSHOT_TABLE_UNALIGNED,
                SnapshotL1 => rules::SNAPSHOT_L1_TABLE_UNALIGNED,
            },
            Qcow2Error::TableOverlapsHeader { table } => match table {
                ActiveL1 => rules::L1_TABLE_AT_HEADER,
                RefcountTable => rules::REFCOUNT_TABLE_AT_HEADER,
                SnapshotTable => rules::SNAPSHOT_TABLE_AT_HEADER,
                SnapshotL1 => rules::SNAPSHOT_L1_TABLE_AT_HEADER,
            },
            Qcow2Error::TableOutsideFile { table, .. } => match table {
                ActiveL1 => rules::L1_TABLE_PAST_EOF,
                RefcountTable => rules::REFCOUNT_TABLE_PAST_EOF,
                SnapshotTable => rules::SNAPSHOT_TABLE_PAST_EOF,
                SnapshotL1 => rules::SNAPSHOT_L1_TABLE_PAST_EOF,
            },
            Qcow2Error::TooManySnapshots(_) => rules::TOO_MANY_SNAPSHOTS,
            Qcow2Error::L1TooSmall { .. } => rules::L1_TABLE_TOO_SMALL,
            Qcow2Error::ImageTooBig(_) => rules::SIZE_TOO_BIG,
            Qcow2Error::ExtensionTooLarge { .. } => rules::EXTENSION_PAST_AREA,
            Qcow2Error::DuplicateExtension(_) => rules::EXTENSION_DUPLICATE,
            Qcow2Error::BadExtension { name, .. } => match name {
                Part::BackingFormat => rules::BACKING_FORMAT_NAME_TOO_LONG,
                Part::FullDiskEncryption => rules::CRYPTO_EXTENSION_INVALID,
                Part::Bitmaps => rules::BITMAPS_EXTENSION_INVALID,
                Part::SnapshotTable => rules::SNAPSHOT_ENTRY_INVALID,
                Part::BitmapDirectory => rules::BITMAP_DIRECTORY_INVALID,
                Part::Header | Part::HeaderCluster | Part::BackingFileName => {
                    rules::EXTENSION_PAST_AREA
                }
            },
            Qcow2Error::DataFileRawWithoutDataFile => rules::DATA_FILE_RAW_WITHOUT_DATA_FILE,
            Qcow2Error::Truncated { what, .. } => match what {
                Part::SnapshotTable => rules::SNAPSHOT_TABLE_PAST_EOF,
                Part::BitmapDirectory => rules::BITMAP_DIRECTORY_PAST_EOF,
                // The backing file name lies in cluster 0, and the refcount table, which must
                // lie inside the file, starts at cluster 1 or later: a name cannot end past
                // the end of a file that passed the table checks.
                Part::Header
                | Part::HeaderCluster
                | Part::BackingFileName
                | Part::BackingFormat
                | Part::FullDiskEncryption
                | Part::Bitmaps => rules::HEADER_PAST_EOF,
            },
            Qcow2Error::Io(_) => return None,
        })
    }
}

/// The part of an image a [`Qcow2Error`] is about, named in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The fixed header.
    Header,
    /// Cluster 0 past the fixed header (extensions, backing file name).
    HeaderCluster,
    /// The backing file name.
    BackingFileName,
    /// The backing format extension.
    BackingFormat,
    /// The full disk encryption (LUKS) header extension.
    FullDiskEncryption,
    /// The bitmaps header extension.
    Bitmaps,
    /// The snapshot table.
    SnapshotTable,
    /// The bitmap directory.
    BitmapDirectory,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "qcow2 header",
            Part::HeaderCluster => "qcow2 header cluster",
            Part::BackingFileName => "backing file name",
            Part::BackingFormat => "backing format",
            Part::FullDiskEncryption => "full disk encryption",
            Part::Bitmaps => "bitmaps",
            Part::SnapshotTable => "snapshot table",
            Part::BitmapDirectory => "bitmap directory",
        })
    }
}

/// The tables a header points at, named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// The active L1 table.
    ActiveL1,
    /// The refcount table.
    RefcountTable,
    /// The snapshot table.
    SnapshotTable,
    /// A snapshot's L1 table.
    SnapshotL1,
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::ActiveL1 => "active L1 table",
            TableKind::RefcountTable => "refcount table",
            TableKind::SnapshotTable => "snapshot table",
            TableKind::SnapshotL1 => "snapshot L1 table",
        })
    }
}
