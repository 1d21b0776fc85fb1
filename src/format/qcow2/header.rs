//! The qcow2 header (`docs/interop/qcow2.rst`, "Header"), validated in the order QEMU's
//! `qcow2_do_open` validates it, with every limit named.
//!
//! [`Qcow2Header::read`] reads cluster 0 once (at most [`MAX_CLUSTER_SIZE`] bytes), parses the
//! fixed fields, the header extensions and the backing file name, and checks every field that a
//! reader depends on. It does not decide policy: a backing file or an unknown incompatible
//! feature is a valid header that the safety rules in [`super::describe`] refuse.

use std::fmt;

use super::extensions::{HeaderExtensions, parse_extensions};
use super::rules;
use crate::format::bytes::{be32, be64};
use crate::safety::Rule;
use crate::source::{ReadAt, ReadError, read_exact_at};

/// `QFI\xfb`: the magic at offset 0.
pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// Length of a version 2 header (spec: "the header is 72 bytes long" for v2).
pub const V2_HEADER_LENGTH: u32 = 72;
/// Minimum `header_length` of a version 3 header (spec: fields up to byte 103 are mandatory).
pub const V3_MIN_HEADER_LENGTH: u32 = 104;
/// Bytes of the fixed header this parser reads: up to and including `compression_type` (byte
/// 104) and its padding.
pub const FIXED_HEADER_READ: usize = 112;
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
/// QEMU's limit on a backing file name (`bs->backing_file` is 1024 bytes with the NUL).
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

/// How guest data is encrypted (header offset 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptMethod {
    /// No encryption.
    None,
    /// Legacy AES-CBC; QEMU's system emulators refuse it.
    Aes,
    /// LUKS, with its header in a cluster named by the crypto header extension.
    Luks,
}

/// How compressed clusters are compressed (header offset 104, v3 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (QEMU calls it `zlib`).
    Zlib,
    /// Zstandard.
    Zstd,
}

impl CompressionType {
    /// The name `qemu-img info` prints.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// The guest-visible size of a qcow2 image whose header says `header_size`: QEMU counts a
/// block device in 512-byte sectors (`qcow2_do_open`: `bs->total_sectors = header.size /
/// BDRV_SECTOR_SIZE`), so a size that is not a sector multiple loses its last partial sector.
/// The one computation of a qcow2 virtual size: `info`, `check` and `convert` all use it.
pub const fn guest_size(header_size: u64) -> u64 {
    header_size / 512 * 512
}

/// A parsed and validated qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name in cluster 0, 0 for none.
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Encryption method.
    pub crypt_method: CryptMethod,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table (cluster-aligned).
    pub l1_table_offset: u64,
    /// Offset of the refcount table (cluster-aligned).
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table (cluster-aligned).
    pub snapshots_offset: u64,
    /// Incompatible feature bits (0 for v2).
    pub incompatible_features: u64,
    /// Compatible feature bits (0 for v2).
    pub compatible_features: u64,
    /// Autoclear feature bits (0 for v2).
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits (4 for v2).
    pub refcount_order: u32,
    /// Length of the header proper, where extensions start.
    pub header_length: u32,
    /// Compression type of compressed clusters.
    pub compression_type: CompressionType,
    /// Header extensions found between `header_length` and the end of the extension area.
    pub extensions: HeaderExtensions,
    /// The backing file name, as stored (never opened).
    pub backing_file: Option<String>,
}

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

impl Qcow2Header {
    /// Reads and validates the header of the image in `src`.
    ///
    /// At most one cluster is read (2 MiB for the largest clusters). Table offsets are checked
    /// against the file length, but the tables themselves are not read.
    pub fn read<S: ReadAt + ?Sized>(src: &S) -> Result<Self, Qcow2Error> {
        let file_len = src.len();
        // A v2 header is 72 bytes; read what the file has up to the v3 fixed part and pad with
        // zeros, as QEMU does (its reads past EOF return zeros), then insist on the length the
        // version needs.
        let mut fixed = [0u8; FIXED_HEADER_READ];
        let avail = file_len.min(FIXED_HEADER_READ as u64) as usize;
        read_exact_at(src, &mut fixed[..avail], 0)
            .map_err(|e| Qcow2Error::from_read(Part::Header, e))?;

        let magic = be32(&fixed, 0);
        if magic != QCOW2_MAGIC {
            return Err(Qcow2Error::BadMagic(magic));
        }
        let version = be32(&fixed, 4);
        if !(2..=3).contains(&version) {
            return Err(Qcow2Error::UnsupportedVersion(version));
        }
        let needed = if version == 2 {
            V2_HEADER_LENGTH
        } else {
            V3_MIN_HEADER_LENGTH
        };
        if (avail as u64) < u64::from(needed) {
            return Err(Qcow2Error::Truncated {
                what: Part::Header,
                source: ReadError::Truncated {
                    offset: 0,
                    len: u64::from(needed),
                    file_len,
                },
            });
        }

        let cluster_bits = be32(&fixed, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Qcow2Error::ClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;

        let (incompatible_features, compatible_features, autoclear_features) = if version == 2 {
            (0, 0, 0)
        } else {
            (be64(&fixed, 72), be64(&fixed, 80), be64(&fixed, 88))
        };
        let (refcount_order, header_length) = if version == 2 {
            (4, V2_HEADER_LENGTH)
        } else {
            (be32(&fixed, 96), be32(&fixed, 100))
        };
        if version == 3 {
            if header_length < V3_MIN_HEADER_LENGTH {
                return Err(Qcow2Error::HeaderTooShort(header_length));
            }
            // Spec: "header_length ... must be a multiple of 8".
            if !header_length.is_multiple_of(8) {
                return Err(Qcow2Error::HeaderLengthUnaligned(header_length));
            }
        }
        if u64::from(header_length) > cluster_size {
            return Err(Qcow2Error::HeaderExceedsCluster {
                header_length,
                cluster_size,
            });
        }
        if u64::from(header_length) > file_len {
            return Err(Qcow2Error::Truncated {
                what: Part::Header,
                source: ReadError::Truncated {
                    offset: 0,
                    len: u64::from(header_length),
                    file_len,
                },
            });
        }

        let backing_file_offset = be64(&fixed, 8);
        let backing_file_size = be32(&fixed, 16);
        if backing_file_offset > cluster_size {
            return Err(Qcow2Error::BackingFileOffset {
                offset: backing_file_offset,
                cluster_size,
            });
        }
        if backing_file_offset != 0 && backing_file_offset < u64::from(header_length) {
            return Err(Qcow2Error::BackingFileInsideHeader {
                offset: backing_file_offset,
                header_length,
            });
        }

        // Spec: compression_type exists only when header_length > 104.
        let raw_compression = if header_length > V3_MIN_HEADER_LENGTH {
            fixed[104]
        } else {
            0
        };
        let compression_type = match raw_compression {
            0 => CompressionType::Zlib,
            1 => CompressionType::Zstd,
            other => return Err(Qcow2Error::UnknownCompressionType(other)),
        };
        match compression_type {
            CompressionType::Zlib if incompatible_features & INCOMPAT_COMPRESSION != 0 => {
                return Err(Qcow2Error::CompressionBitWithZlib);
            }
            CompressionType::Zstd if incompatible_features & INCOMPAT_COMPRESSION == 0 => {
                return Err(Qcow2Error::CompressionBitMissing("zstd"));
            }
            _ => {}
        }

        if incompatible_features & INCOMPAT_EXTENDED_L2 != 0
            && cluster_bits < MIN_CLUSTER_BITS_EXTENDED_L2
        {
            return Err(Qcow2Error::SubclusterTooSmall(cluster_bits));
        }
        if refcount_order > MAX_REFCOUNT_ORDER {
            return Err(Qcow2Error::RefcountOrder(refcount_order));
        }
        let crypt_method = match be32(&fixed, 32) {
            0 => CryptMethod::None,
            1 => CryptMethod::Aes,
            2 => CryptMethod::Luks,
            other => return Err(Qcow2Error::CryptMethod(other)),
        };

        let size = be64(&fixed, 24);
        let l1_size = be32(&fixed, 36);
        let l1_table_offset = be64(&fixed, 40);
        let refcount_table_offset = be64(&fixed, 48);
        let refcount_table_clusters = be32(&fixed, 56);
        let nb_snapshots = be32(&fixed, 60);
        let snapshots_offset = be64(&fixed, 64);

        let mut header = Qcow2Header {
            version,
            backing_file_offset,
            backing_file_size,
            cluster_bits,
            size,
            crypt_method,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            incompatible_features,
            compatible_features,
            autoclear_features,
            refcount_order,
            header_length,
            compression_type,
            extensions: HeaderExtensions::default(),
            backing_file: None,
        };
        header.validate_tables(file_len)?;

        // The extension area runs from header_length to the backing file name, or to the end of
        // cluster 0 (spec "Header extensions"). Read it once; bytes past EOF read as zeros, which
        // is an end-of-extensions marker, as in QEMU.
        let ext_end = if backing_file_offset != 0 {
            backing_file_offset
        } else {
            cluster_size
        };
        let area_end = if backing_file_offset != 0 {
            let name_end = backing_file_offset + u64::from(backing_file_size);
            name_end.max(ext_end).min(cluster_size)
        } else {
            ext_end
        };
        let mut cluster0 = vec![0u8; area_end as usize];
        let have = file_len.min(area_end) as usize;
        read_exact_at(src, &mut cluster0[..have], 0)
            .map_err(|e| Qcow2Error::from_read(Part::HeaderCluster, e))?;

        header.extensions = parse_extensions(&header, &cluster0, ext_end)?;

        if header.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0
            && header.incompatible_features & INCOMPAT_DATA_FILE == 0
        {
            return Err(Qcow2Error::DataFileRawWithoutDataFile);
        }

        if backing_file_offset != 0 {
            let max = u64::from(MAX_BACKING_FILE_NAME).min(cluster_size - backing_file_offset);
            if u64::from(backing_file_size) > max {
                return Err(Qcow2Error::BackingFileNameTooLong {
                    size: backing_file_size,
                    max,
                });
            }
            let start = backing_file_offset as usize;
            let end = start + backing_file_size as usize;
            if end as u64 > file_len {
                return Err(Qcow2Error::Truncated {
                    what: Part::BackingFileName,
                    source: ReadError::Truncated {
                        offset: backing_file_offset,
                        len: u64::from(backing_file_size),
                        file_len,
                    },
                });
            }
            header.backing_file = Some(String::from_utf8_lossy(&cluster0[start..end]).into_owned());
        }
        Ok(header)
    }

    /// Checks the L1, refcount and snapshot table locations: QEMU's size limits, cluster
    /// alignment (spec: "must be aligned to a cluster boundary"), and that each table lies
    /// inside the file, after the header.
    fn validate_tables(&self, file_len: u64) -> Result<(), Qcow2Error> {
        if self.refcount_table_clusters == 0 {
            return Err(Qcow2Error::NoRefcountTable);
        }
        let reftable_bytes = u64::from(self.refcount_table_clusters) << self.cluster_bits;
        self.validate_table(
            TableKind::RefcountTable,
            self.refcount_table_offset,
            reftable_bytes,
            MAX_REFTABLE_SIZE_BYTES,
            file_len,
        )?;

        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(Qcow2Error::TooManySnapshots(self.nb_snapshots));
        }
        if self.nb_snapshots > 0 {
            // Each entry is at least the 40-byte fixed part; the full size is checked while the
            // table is read.
            self.validate_table(
                TableKind::SnapshotTable,
                self.snapshots_offset,
                u64::from(self.nb_snapshots) * 40,
                u64::MAX,
                file_len,
            )?;
        }

        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > 0 {
            self.validate_table(
                TableKind::ActiveL1,
                self.l1_table_offset,
                l1_bytes,
                MAX_L1_SIZE_BYTES,
                file_len,
            )?;
        } else if l1_bytes > MAX_L1_SIZE_BYTES {
            return Err(Qcow2Error::TableTooLarge {
                table: TableKind::ActiveL1,
                bytes: l1_bytes,
                limit: MAX_L1_SIZE_BYTES,
            });
        }
        let needed = self.l1_entries_needed();
        if needed > MAX_L1_INDEX {
            return Err(Qcow2Error::ImageTooBig(self.size));
        }
        if u64::from(self.l1_size) < needed {
            return Err(Qcow2Error::L1TooSmall {
                l1_size: self.l1_size,
                size: self.size,
                needed,
            });
        }
        Ok(())
    }

    /// Checks one table's size limit, alignment and bounds.
    pub fn validate_table(
        &self,
        table: TableKind,
        offset: u64,
        bytes: u64,
        limit: u64,
        file_len: u64,
    ) -> Result<(), Qcow2Error> {
        if bytes > limit {
            return Err(Qcow2Error::TableTooLarge {
                table,
                bytes,
                limit,
            });
        }
        if !offset.is_multiple_of(self.cluster_size()) {
            return Err(Qcow2Error::TableUnaligned {
                table,
                offset,
                cluster_size: self.cluster_size(),
            });
        }
        if offset == 0 {
            return Err(Qcow2Error::TableOverlapsHeader { table });
        }
        match offset.checked_add(bytes) {
            Some(end) if end <= file_len && end <= i64::MAX as u64 => Ok(()),
            _ => Err(Qcow2Error::TableOutsideFile {
                table,
                offset,
                bytes,
                file_len,
            }),
        }
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether L2 entries are 128-bit extended entries with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTENDED_L2 != 0
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }

    /// Entries per L2 table (one cluster).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Guest bytes mapped by one L1 entry.
    pub fn bytes_per_l1_entry(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// The guest-visible size: the header's `size` rounded down to whole 512-byte sectors,
    /// what QEMU exposes ([`guest_size`]). `size` itself still sizes the L1 table.
    pub fn virtual_size(&self) -> u64 {
        guest_size(self.size)
    }

    /// L1 entries needed to map `size` guest bytes (QEMU `size_to_l1`).
    pub fn l1_entries_needed(&self) -> u64 {
        self.size.div_ceil(self.bytes_per_l1_entry())
    }

    /// Refcount width in bits, 1..=64.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Refcount entries per refcount block (one cluster).
    pub fn refcounts_per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.refcount_order
    }

    /// Whether the dirty bit is set.
    pub fn is_dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// Whether the corrupt bit is set.
    pub fn is_corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }

    /// Whether guest data lives in an external data file.
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }

    /// Whether the external data file is itself a raw image.
    pub fn data_file_raw(&self) -> bool {
        self.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0
    }

    /// Whether lazy refcounts are enabled.
    pub fn lazy_refcounts(&self) -> bool {
        self.compatible_features & COMPAT_LAZY_REFCOUNTS != 0
    }

    /// Incompatible bits the spec does not define.
    pub fn unknown_incompatible_features(&self) -> u64 {
        self.incompatible_features & !INCOMPAT_KNOWN
    }

    /// Bit position of the compressed-cluster size field in an L2 entry
    /// (spec "Compressed Clusters Descriptor": `x = 62 - (cluster_bits - 8)`).
    pub fn compressed_size_shift(&self) -> u32 {
        62 - (self.cluster_bits - 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 image: header cluster, refcount table, refcount block, L1 table.
    pub(crate) fn minimal_v3(cluster_bits: u32, size: u64) -> Vec<u8> {
        let cs = 1usize << cluster_bits;
        let mut d = vec![0u8; cs * 4];
        d[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        d[4..8].copy_from_slice(&3u32.to_be_bytes());
        d[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        d[24..32].copy_from_slice(&size.to_be_bytes());
        let l2_entries = (cs / 8) as u64;
        let l1 = size.div_ceil(cs as u64 * l2_entries) as u32;
        d[36..40].copy_from_slice(&l1.to_be_bytes());
        d[40..48].copy_from_slice(&(3 * cs as u64).to_be_bytes());
        d[48..56].copy_from_slice(&(cs as u64).to_be_bytes());
        d[56..60].copy_from_slice(&1u32.to_be_bytes());
        d[96..100].copy_from_slice(&4u32.to_be_bytes());
        d[100..104].copy_from_slice(&112u32.to_be_bytes());
        d
    }

    fn set32(d: &mut [u8], off: usize, v: u32) {
        d[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn set64(d: &mut [u8], off: usize, v: u64) {
        d[off..off + 8].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn a_minimal_v3_header_parses() {
        let d = minimal_v3(16, 1 << 30);
        let h = Qcow2Header::read(&d).expect("valid");
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.refcount_bits(), 16);
        assert_eq!(h.compression_type, CompressionType::Zlib);
    }

    #[test]
    fn header_rejects_a_cluster_size_outside_the_format_limits() {
        for bits in [0u32, 8, 22, 63, u32::MAX] {
            let mut d = minimal_v3(16, 1 << 20);
            set32(&mut d, 20, bits);
            assert!(matches!(Qcow2Header::read(&d), Err(Qcow2Error::ClusterBits(b)) if b == bits));
        }
    }

    #[test]
    fn header_rejects_versions_other_than_2_and_3() {
        for v in [0u32, 1, 4, u32::MAX] {
            let mut d = minimal_v3(16, 1 << 20);
            set32(&mut d, 4, v);
            assert!(matches!(
                Qcow2Header::read(&d),
                Err(Qcow2Error::UnsupportedVersion(_))
            ));
        }
    }

    #[test]
    fn header_rejects_bad_header_lengths() {
        let mut d = minimal_v3(16, 1 << 20);
        set32(&mut d, 100, 100);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::HeaderTooShort(100))
        ));
        set32(&mut d, 100, 108 + 1);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::HeaderLengthUnaligned(_))
        ));
        set32(&mut d, 100, 0x1000_0000);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::HeaderExceedsCluster { .. })
        ));
    }

    #[test]
    fn header_rejects_refcount_order_crypt_method_and_compression_mismatches() {
        let mut d = minimal_v3(16, 1 << 20);
        set32(&mut d, 96, 7);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::RefcountOrder(7))
        ));
        let mut d = minimal_v3(16, 1 << 20);
        set32(&mut d, 32, 3);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::CryptMethod(3))
        ));
        let mut d = minimal_v3(16, 1 << 20);
        d[104] = 1;
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::CompressionBitMissing(_))
        ));
        let mut d = minimal_v3(16, 1 << 20);
        set64(&mut d, 72, INCOMPAT_COMPRESSION);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::CompressionBitWithZlib)
        ));
        let mut d = minimal_v3(16, 1 << 20);
        d[104] = 2;
        set64(&mut d, 72, INCOMPAT_COMPRESSION);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::UnknownCompressionType(2))
        ));
    }

    #[test]
    fn header_rejects_tables_that_lie() {
        let mut d = minimal_v3(16, 1 << 20);
        set32(&mut d, 56, 0);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::NoRefcountTable)
        ));
        let mut d = minimal_v3(16, 1 << 20);
        set64(&mut d, 40, 3 * 65536 + 8);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::TableUnaligned { .. })
        ));
        let mut d = minimal_v3(16, 1 << 20);
        set32(&mut d, 36, u32::MAX);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::TableTooLarge { .. })
        ));
        let mut d = minimal_v3(16, 1 << 20);
        set64(&mut d, 40, 1 << 40);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::TableOutsideFile { .. })
        ));
        let mut d = minimal_v3(16, 1 << 40);
        set32(&mut d, 36, 1);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::L1TooSmall { .. })
        ));
        let mut d = minimal_v3(16, 1 << 20);
        set32(&mut d, 60, MAX_SNAPSHOTS + 1);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::TooManySnapshots(_))
        ));
        let mut d = minimal_v3(16, u64::MAX);
        set32(&mut d, 36, 1);
        assert!(matches!(
            Qcow2Header::read(&d),
            Err(Qcow2Error::ImageTooBig(_))
        ));
    }

    #[test]
    fn header_reports_truncation_at_every_point() {
        let d = minimal_v3(16, 1 << 20);
        for cut in [0usize, 3, 4, 71, 103, 111] {
            let r = Qcow2Header::read(&d[..cut].to_vec());
            assert!(r.is_err(), "cut at {cut}");
        }
        let r = Qcow2Header::read(&d[..65536 * 3].to_vec());
        assert!(matches!(r, Err(Qcow2Error::TableOutsideFile { .. })));
    }
}
