//! Opening an image the way `qemu-img check` opens it (`qcow2_do_open` with `BDRV_O_CHECK`,
//! read-only), so that we refuse exactly what it refuses and check everything else.
//!
//! Check mode is more lenient than [`Qcow2Header::read`](super::super::Qcow2Header::read),
//! which `vmimage info` uses to judge an image: QEMU does not require the tables to lie inside
//! the file (it reads zeros past the end and the check reports the damage), accepts
//! `refcount_table_clusters = 0`, does not read the snapshot table at open (the check does,
//! counting its problems), and does not reject duplicate extensions. The order of the tests
//! below is QEMU's, so the first problem found is the one `qemu-img` names; the messages are
//! QEMU's own.

use std::io;

use super::super::fields::{
    AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, BACKING_FORMAT_BUF, BITMAPS_EXT_LEN,
    CRYPTO_EXT_LEN, EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE,
    EXT_FEATURE_TABLE, FEATURE_ENTRY_LEN, FIXED_HEADER_LEN, FixedHeader, INCOMPAT_COMPRESSION,
    INCOMPAT_DATA_FILE, INCOMPAT_EXTENDED_L2, INCOMPAT_KNOWN, MAX_BACKING_FILE_NAME,
    MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS, MAX_CLUSTER_BITS, MAX_L1_SIZE_BYTES,
    MAX_REFCOUNT_ORDER, MAX_REFTABLE_SIZE_BYTES, MIN_CLUSTER_BITS, MIN_CLUSTER_BITS_EXTENDED_L2,
    QCOW2_MAGIC, V3_MIN_HEADER_LENGTH, extension_records,
};
use super::read::{BDRV_MAX_LENGTH, ReadFailure, read_zero_filled};
use crate::format::bytes::{be32, be64};
use crate::source::ReadAt;

/// Longest text we keep from the image for messages (file names); QEMU's own buffers are
/// 1024 bytes at most for a backing file name.
const MAX_NAME_KEPT: usize = 1024;

/// Why `qemu-img check` could not open the image: QEMU's own message.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The header or an extension is refused; the text is QEMU's error message.
    #[error("{0}")]
    Refused(String),
    /// The operating system failed a read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn refused(message: impl Into<String>) -> OpenError {
    OpenError::Refused(message.into())
}

/// The bitmaps extension, when the image has consistent bitmaps (autoclear bit 0 set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsLocation {
    /// Bitmaps in the directory.
    pub nb_bitmaps: u32,
    /// Directory size in bytes.
    pub directory_size: u64,
    /// Directory offset.
    pub directory_offset: u64,
}

/// What the check needs from an image QEMU could open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLayout {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Active L1 entries.
    pub l1_size: u32,
    /// Active L1 offset.
    pub l1_table_offset: u64,
    /// Refcount table offset.
    pub refcount_table_offset: u64,
    /// Refcount table entries (`refcount_table_clusters * cluster_size / 8`).
    pub refcount_table_entries: u64,
    /// log2 of the refcount width.
    pub refcount_order: u32,
    /// Snapshots the header declares.
    pub nb_snapshots: u32,
    /// Snapshot table offset.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// The LUKS header area `(offset, length)`, from the crypto header extension.
    pub crypto_header: Option<(u64, u64)>,
    /// The persistent bitmaps, if consistent.
    pub bitmaps: Option<BitmapsLocation>,
    /// Backing file name (never opened).
    pub backing_file: Option<String>,
    /// External data file name (never opened).
    pub data_file: Option<String>,
    /// Length of the image file.
    pub file_len: u64,
}

impl CheckLayout {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// Whether L2 entries carry subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTENDED_L2 != 0
    }
    /// Whether guest data lives in an external data file (QEMU's `has_data_file`).
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }
    /// Bytes per L2 entry.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }
    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }
    /// log2 of the refcounts per refcount block (`refcount_block_bits`).
    pub fn refcount_block_bits(&self) -> u32 {
        self.cluster_bits + 3 - self.refcount_order
    }
    /// The largest refcount (`refcount_max`).
    pub fn refcount_max(&self) -> u64 {
        if self.refcount_order == 6 {
            u64::MAX
        } else {
            (1u64 << self.refcount_bits()) - 1
        }
    }

    /// The guest-visible size QEMU exposes ([`crate::format::qcow2::header::guest_size`]).
    pub fn virtual_size(&self) -> u64 {
        crate::format::qcow2::header::guest_size(self.size)
    }

    /// Guest clusters: `bs->total_sectors` in clusters, as `qemu-img check` counts them.
    pub fn total_clusters(&self) -> u64 {
        self.virtual_size().div_ceil(self.cluster_size())
    }
}

/// Whether `qemu-img` would take the file for a qcow2 image (`qcow2_probe`: the magic and a
/// version of at least 2 in the first 2 KiB, zero-filled).
pub fn probes_as_qcow2(head: &[u8]) -> bool {
    be32(head, 0) == QCOW2_MAGIC && be32(head, 4) >= 2
}

/// Opens the image as `qemu-img check` does and returns what the check needs.
pub fn open<S: ReadAt + ?Sized>(src: &S) -> Result<CheckLayout, OpenError> {
    let file_len = src.len();
    let mut raw = [0u8; FIXED_HEADER_LEN];
    qread(src, &mut raw, 0, "Could not read qcow2 header")?;
    let h = FixedHeader::decode(&raw);
    if h.magic != QCOW2_MAGIC {
        return Err(refused("Image is not in qcow2 format"));
    }
    let version = h.version;
    if !(2..=3).contains(&version) {
        return Err(refused(format!("Unsupported qcow2 version {version}")));
    }
    let cluster_bits = h.cluster_bits;
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(refused(format!(
            "Unsupported cluster size: 2^{cluster_bits}"
        )));
    }
    let cluster_size = 1u64 << cluster_bits;
    let (incompat, autoclear, refcount_order, header_length) = (
        h.incompatible_features,
        h.autoclear_features,
        h.refcount_order,
        h.header_length,
    );
    if version == 3 && header_length < V3_MIN_HEADER_LENGTH {
        return Err(refused("qcow2 header too short"));
    }
    if u64::from(header_length) > cluster_size {
        return Err(refused("qcow2 header exceeds cluster size"));
    }
    let backing_file_offset = h.backing_file_offset;
    let backing_file_size = h.backing_file_size;
    if backing_file_offset > cluster_size {
        return Err(refused("Invalid backing file offset"));
    }
    let ext_end = h.extension_area_end();
    // Cluster 0 up to the end of the extension area, zero-filled past the end of the file;
    // at most one cluster (2 MiB, `MAX_CLUSTER_BITS`).
    let mut area = vec![0u8; ext_end as usize];
    qread(src, &mut area, 0, "qcow2_read_extension: ERROR: pread fail")?;

    match h.compression_type {
        0 if incompat & INCOMPAT_COMPRESSION != 0 => {
            return Err(refused(
                "qcow2: Compression type incompatible feature bit must not be set",
            ));
        }
        0 => {}
        1 if incompat & INCOMPAT_COMPRESSION == 0 => {
            return Err(refused(
                "qcow2: Compression type incompatible feature bit must be set",
            ));
        }
        1 => {}
        other => {
            return Err(refused(format!("qcow2: unknown compression type: {other}")));
        }
    }
    let unknown = incompat & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(refused(unsupported_features(
            &area,
            u64::from(header_length),
            unknown,
        )));
    }
    if incompat & INCOMPAT_EXTENDED_L2 != 0 && cluster_bits < MIN_CLUSTER_BITS_EXTENDED_L2 {
        return Err(refused(format!(
            "Unsupported subcluster size: {}",
            cluster_size / 32
        )));
    }
    if refcount_order > MAX_REFCOUNT_ORDER {
        return Err(refused(
            "Reference count entry width too large; may not exceed 64 bits",
        ));
    }
    let crypt_method = h.crypt_method;
    let size = h.size;
    let l1_size = h.l1_size;
    let l1_table_offset = h.l1_table_offset;
    let refcount_table_offset = h.refcount_table_offset;
    let refcount_table_clusters = h.refcount_table_clusters;
    // Check mode accepts refcount_table_clusters = 0.
    validate_table(
        refcount_table_offset,
        u64::from(refcount_table_clusters),
        cluster_size,
        MAX_REFTABLE_SIZE_BYTES,
        "Reference count table",
        cluster_size,
    )?;
    // Check mode skips the snapshot table here; the check validates it.
    validate_table(
        l1_table_offset,
        u64::from(l1_size),
        8,
        MAX_L1_SIZE_BYTES,
        "Active L1 table",
        cluster_size,
    )?;
    let l2_bits = cluster_bits
        - if incompat & INCOMPAT_EXTENDED_L2 != 0 {
            4
        } else {
            3
        };
    let shift = cluster_bits + l2_bits;
    // size_to_l1(): (size + 2^shift - 1) >> shift, in 64-bit arithmetic.
    let l1_needed = (u128::from(size) + (1u128 << shift) - 1) >> shift;
    if l1_needed > i32::MAX as u128 {
        return Err(refused("Image is too big"));
    }
    if u128::from(l1_size) < l1_needed {
        return Err(refused("L1 table is too small"));
    }
    // QEMU reads the active L1 and the refcount table now; only the request range can fail.
    let l1_bytes = u64::from(l1_size) * 8;
    if l1_bytes > 0 && !qemu_can_read(l1_table_offset, l1_bytes) {
        return Err(refused("Could not read L1 table: Input/output error"));
    }
    if !(1..=2).contains(&crypt_method) && crypt_method != 0 {
        return Err(refused(format!(
            "Unsupported encryption method {crypt_method}"
        )));
    }
    let refcount_table_entries = u64::from(refcount_table_clusters) << (cluster_bits - 3);
    if refcount_table_entries > 0
        && !qemu_can_read(refcount_table_offset, refcount_table_entries * 8)
    {
        return Err(refused(
            "Could not initialize refcount handling: Input/output error",
        ));
    }

    let exts = read_extensions(
        &area,
        u64::from(header_length),
        crypt_method,
        autoclear,
        cluster_size,
    )?;

    let has_data_file = incompat & INCOMPAT_DATA_FILE != 0;
    if has_data_file {
        // qemu-img opens the data file named here; we never do (it is checked, not followed).
        if exts.data_file.is_none() {
            return Err(refused("'data-file' is required for this image"));
        }
    } else if autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 {
        return Err(refused("data-file-raw requires a data file"));
    }
    if crypt_method == 2 && exts.crypto_header.is_none() {
        return Err(refused(format!(
            "Missing CRYPTO header for crypt method {crypt_method}"
        )));
    }

    let backing_file = if backing_file_offset != 0 {
        let max = u64::from(MAX_BACKING_FILE_NAME).min(cluster_size - backing_file_offset);
        // QEMU also refuses `len >= sizeof(bs->backing_file)` (4096), which this implies.
        if u64::from(backing_file_size) > max {
            return Err(refused("Backing file name too long"));
        }
        let mut name = vec![0u8; backing_file_size as usize];
        qread(
            src,
            &mut name,
            backing_file_offset,
            "Could not read backing file name",
        )?;
        Some(c_string(&name))
    } else {
        None
    };

    Ok(CheckLayout {
        version,
        cluster_bits,
        size,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_entries,
        refcount_order,
        nb_snapshots: h.nb_snapshots,
        snapshots_offset: h.snapshots_offset,
        incompatible_features: incompat,
        crypto_header: exts.crypto_header,
        bitmaps: exts.bitmaps,
        backing_file,
        data_file: exts.data_file,
        file_len,
    })
}

/// Whether `bdrv_co_pread` accepts a request of `len` bytes at `offset`.
pub(super) fn qemu_can_read(offset: u64, len: u64) -> bool {
    offset <= BDRV_MAX_LENGTH && len <= BDRV_MAX_LENGTH - offset
}

/// `qcow2_validate_table`: the size limit, then `offset + size <= INT64_MAX` and alignment.
pub(super) fn validate_table(
    offset: u64,
    entries: u64,
    entry_len: u64,
    max_bytes: u64,
    name: &str,
    cluster_size: u64,
) -> Result<(), OpenError> {
    if entries > max_bytes / entry_len {
        return Err(refused(format!("{name} too large")));
    }
    if (i64::MAX as u64) - entries * entry_len < offset || !offset.is_multiple_of(cluster_size) {
        return Err(refused(format!("{name} offset invalid")));
    }
    Ok(())
}

fn qread<S: ReadAt + ?Sized>(
    src: &S,
    buf: &mut [u8],
    offset: u64,
    what: &str,
) -> Result<(), OpenError> {
    match read_zero_filled(src, buf, offset) {
        Ok(()) => Ok(()),
        Err(ReadFailure::OutOfRange) => Err(refused(format!("{what}: Input/output error"))),
        Err(ReadFailure::Io(e)) => Err(OpenError::Io(e)),
    }
}

/// The extensions the check depends on.
#[derive(Debug, Default)]
struct Extensions {
    crypto_header: Option<(u64, u64)>,
    bitmaps: Option<BitmapsLocation>,
    data_file: Option<String>,
}

/// `qcow2_read_extensions`, over `area` (cluster 0 up to the end of the extension area).
/// Duplicates are not refused: as in QEMU, the last one wins.
fn read_extensions(
    area: &[u8],
    start: u64,
    crypt_method: u32,
    autoclear: u64,
    cluster_size: u64,
) -> Result<Extensions, OpenError> {
    let mut exts = Extensions::default();
    for record in extension_records(area, start) {
        let Ok(record) = record else {
            return Err(refused("Header extension too large"));
        };
        let (data, len) = (record.data, record.data.len() as u32);
        match record.magic {
            EXT_BACKING_FORMAT if len >= BACKING_FORMAT_BUF => {
                return Err(refused(format!(
                    "ERROR: ext_backing_format: len={len} too large (>={BACKING_FORMAT_BUF})"
                )));
            }
            EXT_CRYPTO_HEADER => {
                if crypt_method != 2 {
                    return Err(refused(
                        "CRYPTO header extension only expected with LUKS encryption method",
                    ));
                }
                if len != CRYPTO_EXT_LEN {
                    return Err(refused(format!(
                        "CRYPTO header extension size {len}, but expected size {CRYPTO_EXT_LEN}"
                    )));
                }
                let (hdr_offset, hdr_len) = (be64(data, 0), be64(data, 8));
                if hdr_offset % cluster_size != 0 {
                    return Err(refused(format!(
                        "Encryption header offset '{hdr_offset}' is not a multiple of cluster size '{cluster_size}'"
                    )));
                }
                exts.crypto_header = Some((hdr_offset, hdr_len));
            }
            EXT_BITMAPS => {
                if len != BITMAPS_EXT_LEN {
                    return Err(refused("bitmaps_ext: Invalid extension length"));
                }
                // Without the autoclear bit the bitmaps are inconsistent and ignored (QEMU
                // warns); their clusters then show up as leaks.
                if autoclear & AUTOCLEAR_BITMAPS != 0 {
                    if be32(data, 4) != 0 {
                        return Err(refused("bitmaps_ext: Reserved field is not zero"));
                    }
                    let nb_bitmaps = be32(data, 0);
                    let directory_size = be64(data, 8);
                    let directory_offset = be64(data, 16);
                    if nb_bitmaps > MAX_BITMAPS {
                        return Err(refused(format!(
                            "bitmaps_ext: Image has {nb_bitmaps} bitmaps, exceeding the QEMU supported maximum of {MAX_BITMAPS}"
                        )));
                    }
                    if nb_bitmaps == 0 {
                        return Err(refused("found bitmaps extension with zero bitmaps"));
                    }
                    if !directory_offset.is_multiple_of(cluster_size) {
                        return Err(refused("bitmaps_ext: invalid bitmap directory offset"));
                    }
                    if directory_size > MAX_BITMAP_DIRECTORY_SIZE {
                        return Err(refused(format!(
                            "bitmaps_ext: bitmap directory size ({directory_size}) exceeds the maximum supported size ({MAX_BITMAP_DIRECTORY_SIZE})"
                        )));
                    }
                    exts.bitmaps = Some(BitmapsLocation {
                        nb_bitmaps,
                        directory_size,
                        directory_offset,
                    });
                }
            }
            EXT_DATA_FILE => exts.data_file = Some(c_string(data)),
            _ => {}
        }
    }
    Ok(exts)
}

/// QEMU's "Unsupported qcow2 feature(s)" message: names from the image's feature name table,
/// then the bits it does not name (`report_unsupported_feature`).
fn unsupported_features(area: &[u8], start: u64, mut mask: u64) -> String {
    let mut names = Vec::new();
    if let Some(table) = feature_table(area, start) {
        for entry in table.chunks_exact(FEATURE_ENTRY_LEN) {
            let name = &entry[2..];
            if name.first().is_none_or(|&b| b == 0) {
                break;
            }
            let bit = u32::from(entry[1]);
            if entry[0] == 0 && bit < 64 && mask & (1u64 << bit) != 0 {
                names.push(c_string(name));
                mask &= !(1u64 << bit);
            }
        }
    }
    if mask != 0 {
        names.push(format!("Unknown incompatible feature: {mask:x}"));
    }
    format!("Unsupported qcow2 feature(s): {}", names.join(", "))
}

/// The feature name table's bytes, found by walking the extensions and stopping at the first
/// malformed one, as QEMU does when it only wants the table.
fn feature_table(area: &[u8], start: u64) -> Option<&[u8]> {
    extension_records(area, start)
        .map_while(Result::ok)
        .find(|r| r.magic == EXT_FEATURE_TABLE)
        .map(|r| r.data)
}

/// A C string field: up to the first NUL, at most [`MAX_NAME_KEPT`] bytes, lossy UTF-8.
pub(super) fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end.min(MAX_NAME_KEPT)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_header(cluster_bits: u32) -> Vec<u8> {
        let cs = 1usize << cluster_bits;
        let mut img = vec![0u8; cs * 4];
        img[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        img[4..8].copy_from_slice(&3u32.to_be_bytes());
        img[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        img[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        img[36..40].copy_from_slice(&1u32.to_be_bytes());
        img[40..48].copy_from_slice(&(3 * cs as u64).to_be_bytes());
        img[48..56].copy_from_slice(&(cs as u64).to_be_bytes());
        img[56..60].copy_from_slice(&1u32.to_be_bytes());
        img[96..100].copy_from_slice(&4u32.to_be_bytes());
        img[100..104].copy_from_slice(&112u32.to_be_bytes());
        img
    }

    fn message(img: &[u8]) -> String {
        match open(img) {
            Err(OpenError::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_header_opens() {
        let layout = open(v3_header(16).as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(layout.cluster_size(), 65536);
        assert_eq!(layout.refcount_table_entries, 8192);
        assert_eq!(layout.total_clusters(), 16);
    }

    #[test]
    fn check_mode_accepts_a_missing_refcount_table_and_tables_past_the_end() {
        let mut img = v3_header(16);
        img[56..60].copy_from_slice(&0u32.to_be_bytes());
        img[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(open(img.as_slice()).is_ok());
    }

    #[test]
    fn unknown_incompatible_bits_are_refused_with_qemus_message() {
        let mut img = v3_header(16);
        img[72..80].copy_from_slice(&0x20u64.to_be_bytes());
        assert_eq!(
            message(&img),
            "Unsupported qcow2 feature(s): Unknown incompatible feature: 20"
        );
    }

    #[test]
    fn an_l1_table_claiming_terabytes_is_refused() {
        let mut img = v3_header(16);
        img[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(message(&img), "Active L1 table too large");
    }

    #[test]
    fn a_too_small_l1_table_is_refused() {
        let mut img = v3_header(16);
        img[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(message(&img), "L1 table is too small");
    }

    #[test]
    fn header_field_errors_use_qemus_words() {
        let mut img = v3_header(16);
        img[20..24].copy_from_slice(&22u32.to_be_bytes());
        assert_eq!(message(&img), "Unsupported cluster size: 2^22");
        let mut img = v3_header(16);
        img[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(message(&img), "Unsupported qcow2 version 4");
        let mut img = v3_header(16);
        img[96..100].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            message(&img),
            "Reference count entry width too large; may not exceed 64 bits"
        );
        let mut img = v3_header(16);
        img[40..48].copy_from_slice(&(3 * 65536 + 8u64).to_be_bytes());
        assert_eq!(message(&img), "Active L1 table offset invalid");
    }

    #[test]
    fn qemu_probes_only_versions_from_2() {
        let mut head = v3_header(16);
        assert!(probes_as_qcow2(&head));
        head[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert!(!probes_as_qcow2(&head));
    }
}
