//! The qcow2 header (`docs/interop/qcow2.rst`, "Header"), validated in the order QEMU's
//! `qcow2_do_open` validates it, with every limit named.
//!
//! [`Qcow2Header::read`] reads cluster 0 once (at most [`MAX_CLUSTER_SIZE`] bytes), parses the
//! fixed fields, the header extensions and the backing file name, and checks every field that a
//! reader depends on. It does not decide policy: a backing file or an unknown incompatible
//! feature is a valid header that the safety rules in [`super::describe`] refuse.

pub use super::error::{Part, Qcow2Error, TableKind};
use super::extensions::{HeaderExtensions, parse_extensions};
use crate::source::{ReadAt, ReadError, read_exact_at};

use super::fields::FixedHeader;
pub use super::fields::{
    AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, FIXED_HEADER_LEN,
    INCOMPAT_COMPRESSION, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY,
    INCOMPAT_EXTENDED_L2, INCOMPAT_KNOWN, MAX_BACKING_FILE_NAME, MAX_CLUSTER_BITS,
    MAX_CLUSTER_SIZE, MAX_L1_INDEX, MAX_L1_SIZE_BYTES, MAX_REFCOUNT_ORDER, MAX_REFTABLE_SIZE_BYTES,
    MAX_SNAPSHOTS, MIN_CLUSTER_BITS, MIN_CLUSTER_BITS_EXTENDED_L2, QCOW2_MAGIC, V2_HEADER_LENGTH,
    V3_MIN_HEADER_LENGTH,
};

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
        let mut fixed = [0u8; FIXED_HEADER_LEN];
        let avail = file_len.min(FIXED_HEADER_LEN as u64) as usize;
        read_exact_at(src, &mut fixed[..avail], 0)
            .map_err(|e| Qcow2Error::from_read(Part::Header, e))?;
        let h = FixedHeader::decode(&fixed);

        if h.magic != QCOW2_MAGIC {
            return Err(Qcow2Error::BadMagic(h.magic));
        }
        let version = h.version;
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

        let cluster_bits = h.cluster_bits;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Qcow2Error::ClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;

        let incompatible_features = h.incompatible_features;
        let header_length = h.header_length;
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

        let backing_file_offset = h.backing_file_offset;
        let backing_file_size = h.backing_file_size;
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

        let compression_type = match h.compression_type {
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
        let refcount_order = h.refcount_order;
        if refcount_order > MAX_REFCOUNT_ORDER {
            return Err(Qcow2Error::RefcountOrder(refcount_order));
        }
        let crypt_method = match h.crypt_method {
            0 => CryptMethod::None,
            1 => CryptMethod::Aes,
            2 => CryptMethod::Luks,
            other => return Err(Qcow2Error::CryptMethod(other)),
        };

        let mut header = Qcow2Header {
            version,
            backing_file_offset,
            backing_file_size,
            cluster_bits,
            size: h.size,
            crypt_method,
            l1_size: h.l1_size,
            l1_table_offset: h.l1_table_offset,
            refcount_table_offset: h.refcount_table_offset,
            refcount_table_clusters: h.refcount_table_clusters,
            nb_snapshots: h.nb_snapshots,
            snapshots_offset: h.snapshots_offset,
            incompatible_features,
            compatible_features: h.compatible_features,
            autoclear_features: h.autoclear_features,
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
        let ext_end = h.extension_area_end();
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

        header.extensions = parse_extensions(
            &cluster0[..ext_end as usize],
            header_length,
            crypt_method == CryptMethod::Luks,
            header.autoclear_features,
            cluster_size,
        )?;

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
