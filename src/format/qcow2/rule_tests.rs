//! One test per qcow2 rule: a minimal valid image with one field changed, and the exact rule
//! id `describe` reports for it.

use std::io;

use super::extensions::{EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE};
use super::header::{
    AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, INCOMPAT_COMPRESSION, INCOMPAT_CORRUPT,
    INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_EXTENDED_L2, QCOW2_MAGIC,
};
use super::{Qcow2Header, content_finding, describe};
use crate::format::Probe;
use crate::safety::{Finding, assert_fires};
use crate::source::ReadAt;

const CS: usize = 65536;
/// Cluster 2 is free in [`image`]: snapshot tables, bitmap directories and LUKS areas go there.
const FREE: u64 = 2 * CS as u64;

/// A minimal valid v3 image of 1 MiB with 64 KiB clusters: header, refcount table (cluster 1),
/// a free cluster, the L1 table (cluster 3).
fn image_with(cluster_bits: u32) -> Vec<u8> {
    let cs = 1usize << cluster_bits;
    let size = 1u64 << 20;
    let mut d = vec![0u8; cs * 4];
    set32(&mut d, 0, QCOW2_MAGIC);
    set32(&mut d, 4, 3);
    set32(&mut d, 20, cluster_bits);
    set64(&mut d, 24, size);
    set32(
        &mut d,
        36,
        size.div_ceil(cs as u64 * (cs as u64 / 8)) as u32,
    );
    set64(&mut d, 40, 3 * cs as u64);
    set64(&mut d, 48, cs as u64);
    set32(&mut d, 56, 1);
    set32(&mut d, 96, 4);
    set32(&mut d, 100, 112);
    d
}

fn image() -> Vec<u8> {
    image_with(16)
}

fn set32(d: &mut [u8], off: usize, v: u32) {
    d[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn set64(d: &mut [u8], off: usize, v: u64) {
    d[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

fn or64(d: &mut [u8], off: usize, bits: u64) {
    let v = u64::from_be_bytes(d[off..off + 8].try_into().unwrap());
    set64(d, off, v | bits);
}

/// Writes header extensions from offset 112 (the header length of [`image`]).
fn extensions(d: &mut [u8], exts: &[(u32, &[u8])]) {
    let mut at = 112;
    for (magic, data) in exts {
        set32(d, at, *magic);
        set32(d, at + 4, data.len() as u32);
        d[at + 8..at + 8 + data.len()].copy_from_slice(data);
        at += 8 + data.len().next_multiple_of(8);
    }
}

fn findings<S: ReadAt + ?Sized>(d: &S) -> Vec<Finding> {
    let probe = Probe::read(d).expect("in memory");
    describe(d, &probe).expect("in memory").findings
}

fn patched(f: impl FnOnce(&mut Vec<u8>)) -> Vec<Finding> {
    let mut d = image();
    f(&mut d);
    findings(&d)
}

/// A snapshot table of one v3 entry in the free cluster whose L1 table has `l1_size` entries
/// at `l1_offset`.
fn snapshot(d: &mut [u8], l1_offset: u64, l1_size: u32) {
    set32(d, 60, 1);
    set64(d, 64, FREE);
    let e = FREE as usize;
    set64(d, e, l1_offset);
    set32(d, e + 8, l1_size);
    set32(d, e + 36, 16);
}

/// A crypto header extension with LUKS encryption.
fn luks(d: &mut [u8], offset: u64, length: u64) {
    set32(d, 32, 2);
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&offset.to_be_bytes());
    data[8..].copy_from_slice(&length.to_be_bytes());
    extensions(d, &[(EXT_CRYPTO_HEADER, &data)]);
}

/// A consistent bitmaps extension naming one bitmap in a directory at `offset`.
fn bitmaps(d: &mut [u8], offset: u64, size: u64) {
    or64(d, 88, AUTOCLEAR_BITMAPS);
    let mut data = [0u8; 24];
    data[..4].copy_from_slice(&1u32.to_be_bytes());
    data[8..16].copy_from_slice(&size.to_be_bytes());
    data[16..].copy_from_slice(&offset.to_be_bytes());
    extensions(d, &[(EXT_BITMAPS, &data)]);
}

#[test]
fn the_minimal_image_is_clean() {
    assert_eq!(findings(&image()), []);
}

#[test]
fn a_backing_file_fires_backing_file() {
    let f = patched(|d| {
        set64(d, 8, 0x200);
        set32(d, 16, 4);
        d[0x200..0x204].copy_from_slice(b"base");
    });
    assert_fires(&f, "qcow2.backing-file");
}

#[test]
fn a_backing_format_alone_fires_backing_format_without_backing_file() {
    let f = patched(|d| extensions(d, &[(EXT_BACKING_FORMAT, b"qcow2")]));
    assert_fires(&f, "qcow2.backing-format-without-backing-file");
}

#[test]
fn an_external_data_file_fires_data_file() {
    let f = patched(|d| {
        or64(d, 72, INCOMPAT_DATA_FILE);
        extensions(d, &[(EXT_DATA_FILE, b"data.raw")]);
    });
    assert_fires(&f, "qcow2.data-file");
}

#[test]
fn a_size_off_the_sector_grid_fires_unaligned_size() {
    let f = patched(|d| set64(d, 24, (1 << 20) - 100));
    assert_fires(&f, "qcow2.unaligned-size");
}

#[test]
fn an_unknown_incompatible_bit_fires_unknown_incompatible_feature() {
    let f = patched(|d| or64(d, 72, 1 << 5));
    assert_fires(&f, "qcow2.unknown-incompatible-feature");
}

#[test]
fn the_corrupt_and_dirty_bits_fire_their_rules() {
    let found = patched(|d| or64(d, 72, INCOMPAT_CORRUPT));
    assert_fires(&found, "qcow2.corrupt-bit");
    assert_fires(&patched(|d| or64(d, 72, INCOMPAT_DIRTY)), "qcow2.dirty-bit");
}

#[test]
fn aes_encryption_fires_encrypted_aes() {
    assert_fires(&patched(|d| set32(d, 32, 1)), "qcow2.encrypted-aes");
}

#[test]
fn luks_without_its_extension_fires_luks_extension_missing_and_encrypted_luks() {
    let f = patched(|d| set32(d, 32, 2));
    assert_fires(&f, "qcow2.encrypted-luks");
    assert_fires(&f, "qcow2.luks-extension-missing");
}

#[test]
fn a_luks_area_past_the_end_fires_luks_header_past_eof() {
    let f = patched(|d| luks(d, 1 << 40, 4096));
    assert_fires(&f, "qcow2.luks-header-past-eof");
}

#[test]
fn a_luks_area_smaller_than_a_luks_header_fires_luks_header_area_too_small() {
    let f = patched(|d| luks(d, FREE, 100));
    assert_fires(&f, "qcow2.luks-header-area-too-small");
}

#[test]
fn a_wrong_magic_maps_to_the_magic_rule() {
    let mut d = image();
    set32(&mut d, 0, 0x5146_49fa);
    let err = Qcow2Header::read(&d).expect_err("bad magic");
    assert_fires(&[content_finding(err).expect("content")], "qcow2.magic");
}

#[test]
fn an_unknown_version_fires_version() {
    assert_fires(&patched(|d| set32(d, 4, 4)), "qcow2.version");
}

#[test]
fn a_file_ending_inside_the_header_fires_header_past_eof() {
    assert_fires(&findings(&image()[..90]), "qcow2.header-past-eof");
}

#[test]
fn a_cluster_size_outside_512_to_2m_fires_cluster_bits() {
    assert_fires(&patched(|d| set32(d, 20, 22)), "qcow2.cluster-bits");
}

#[test]
fn bad_header_lengths_fire_their_rules() {
    let found = patched(|d| set32(d, 100, 100));
    assert_fires(&found, "qcow2.header-length-too-short");
    let found = patched(|d| set32(d, 100, 109));
    assert_fires(&found, "qcow2.header-length-unaligned");
    let found = patched(|d| set32(d, 100, 0x1000_0000));
    assert_fires(&found, "qcow2.header-length-past-cluster");
}

#[test]
fn backing_file_fields_qemu_refuses_fire_their_rules() {
    let found = patched(|d| set64(d, 8, CS as u64 + 8));
    assert_fires(&found, "qcow2.backing-file-offset-past-cluster");
    let found = patched(|d| set64(d, 8, 64));
    assert_fires(&found, "qcow2.backing-file-offset-inside-header");
    let found = patched(|d| {
        set64(d, 8, 0x200);
        set32(d, 16, 2000);
    });
    assert_fires(&found, "qcow2.backing-file-name-too-long");
}

#[test]
fn compression_fields_that_disagree_fire_their_rules() {
    assert_fires(&patched(|d| d[104] = 2), "qcow2.compression-type");
    assert_fires(&patched(|d| d[104] = 1), "qcow2.compression-bit-missing");
    let found = patched(|d| or64(d, 72, INCOMPAT_COMPRESSION));
    assert_fires(&found, "qcow2.compression-bit-with-zlib");
}

#[test]
fn extended_l2_with_4k_clusters_fires_subcluster_too_small() {
    let mut d = image_with(12);
    or64(&mut d, 72, INCOMPAT_EXTENDED_L2);
    assert_fires(&findings(&d), "qcow2.subcluster-too-small");
}

#[test]
fn out_of_range_fields_fire_their_rules() {
    assert_fires(&patched(|d| set32(d, 96, 7)), "qcow2.refcount-order");
    assert_fires(&patched(|d| set32(d, 32, 3)), "qcow2.crypt-method");
    assert_fires(&patched(|d| set32(d, 56, 0)), "qcow2.no-refcount-table");
    let found = patched(|d| set32(d, 60, 65537));
    assert_fires(&found, "qcow2.too-many-snapshots");
}

#[test]
fn l1_sizes_that_cannot_map_the_disk_fire_their_rules() {
    let found = patched(|d| set64(d, 24, 1 << 40));
    assert_fires(&found, "qcow2.l1-table-too-small");
    assert_fires(&patched(|d| set64(d, 24, u64::MAX)), "qcow2.size-too-big");
}

#[test]
fn malformed_extension_records_fire_their_rules() {
    let found = patched(|d| {
        set32(d, 112, 0x1234_5678);
        set32(d, 116, 0xffff_0000);
    });
    assert_fires(&found, "qcow2.extension-past-area");
    let found = patched(|d| extensions(d, &[(0x1234_5678, b""), (0x1234_5678, b"")]));
    assert_fires(&found, "qcow2.extension-duplicate");
    let found = patched(|d| extensions(d, &[(EXT_BACKING_FORMAT, b"0123456789abcdef")]));
    assert_fires(&found, "qcow2.backing-format-name-too-long");
    let found = patched(|d| extensions(d, &[(EXT_CRYPTO_HEADER, &[0; 16])]));
    assert_fires(&found, "qcow2.crypto-extension-invalid");
    let found = patched(|d| {
        or64(d, 88, AUTOCLEAR_BITMAPS);
        extensions(d, &[(EXT_BITMAPS, &[0; 8])]);
    });
    assert_fires(&found, "qcow2.bitmaps-extension-invalid");
}

#[test]
fn the_raw_data_file_bit_alone_fires_data_file_raw_without_data_file() {
    let found = patched(|d| or64(d, 88, AUTOCLEAR_DATA_FILE_RAW));
    assert_fires(&found, "qcow2.data-file-raw-without-data-file");
}

#[test]
fn a_v3_snapshot_without_extra_data_fires_snapshot_entry_invalid() {
    let f = patched(|d| {
        snapshot(d, 3 * CS as u64, 1);
        set32(d, FREE as usize + 36, 0);
    });
    assert_fires(&f, "qcow2.snapshot-entry-invalid");
}

#[test]
fn bitmap_directories_that_lie_fire_their_rules() {
    // An all-zero entry has granularity_bits 0, outside 9..=31.
    let found = patched(|d| bitmaps(d, FREE, 24));
    assert_fires(&found, "qcow2.bitmap-directory-invalid");
    let found = patched(|d| bitmaps(d, 1 << 40, 24));
    assert_fires(&found, "qcow2.bitmap-directory-past-eof");
}

#[test]
fn the_active_l1_table_fires_its_four_table_rules() {
    let found = patched(|d| set32(d, 36, u32::MAX));
    assert_fires(&found, "qcow2.l1-table-too-large");
    let found = patched(|d| set64(d, 40, 3 * CS as u64 + 8));
    assert_fires(&found, "qcow2.l1-table-unaligned");
    assert_fires(&patched(|d| set64(d, 40, 0)), "qcow2.l1-table-at-header");
    let found = patched(|d| set64(d, 40, 1 << 40));
    assert_fires(&found, "qcow2.l1-table-past-eof");
}

#[test]
fn the_refcount_table_fires_its_four_table_rules() {
    let found = patched(|d| set32(d, 56, 129));
    assert_fires(&found, "qcow2.refcount-table-too-large");
    let found = patched(|d| set64(d, 48, CS as u64 + 8));
    assert_fires(&found, "qcow2.refcount-table-unaligned");
    let found = patched(|d| set64(d, 48, 0));
    assert_fires(&found, "qcow2.refcount-table-at-header");
    let found = patched(|d| set64(d, 48, 1 << 40));
    assert_fires(&found, "qcow2.refcount-table-past-eof");
}

#[test]
fn the_snapshot_table_fires_its_placement_rules() {
    let at = |offset: u64| {
        patched(move |d| {
            snapshot(d, 3 * CS as u64, 1);
            set64(d, 64, offset);
        })
    };
    assert_fires(&at(FREE + 8), "qcow2.snapshot-table-unaligned");
    assert_fires(&at(0), "qcow2.snapshot-table-at-header");
    assert_fires(&at(1 << 40), "qcow2.snapshot-table-past-eof");
}

/// A file of `len` bytes that reads as `head` followed by zeros, except for a 40-byte
/// snapshot entry repeated every `stride` bytes from `table`: a snapshot table of many
/// megabytes without the memory.
struct SparseSnapshots {
    head: Vec<u8>,
    len: u64,
    table: u64,
    stride: u64,
    entry: [u8; 40],
}

impl ReadAt for SparseSnapshots {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if let Some(&h) = self.head.get(at as usize) {
                h
            } else if at >= self.table && (at - self.table) % self.stride < 40 {
                self.entry[((at - self.table) % self.stride) as usize]
            } else {
                0
            };
        }
        Ok(n)
    }
}

#[test]
fn a_snapshot_table_above_64_mib_fires_snapshot_table_too_large() {
    let mut head = image();
    head.truncate(FREE as usize);
    set32(&mut head, 60, 1000);
    set64(&mut head, 64, FREE);
    let mut entry = [0u8; 40];
    // Longest id and name: 128 KiB per entry, so 513 entries pass 64 MiB.
    entry[12..14].copy_from_slice(&u16::MAX.to_be_bytes());
    entry[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    entry[36..40].copy_from_slice(&16u32.to_be_bytes());
    let stride = (40u64 + 16 + 2 * u64::from(u16::MAX)).next_multiple_of(8);
    let src = SparseSnapshots {
        head,
        len: FREE + 1000 * stride,
        table: FREE,
        stride,
        entry,
    };
    // The refcount table and the L1 table must still lie inside the file: cluster 1 and 3 of
    // the head are zeros here, which reads as an empty refcount table and L1 table.
    assert_fires(&findings(&src), "qcow2.snapshot-table-too-large");
}

#[test]
fn a_snapshot_l1_table_fires_its_four_table_rules() {
    let with = |offset: u64, size: u32| patched(move |d| snapshot(d, offset, size));
    let found = with(3 * CS as u64, 0x40_0001);
    assert_fires(&found, "qcow2.snapshot-l1-table-too-large");
    let found = with(3 * CS as u64 + 8, 1);
    assert_fires(&found, "qcow2.snapshot-l1-table-unaligned");
    assert_fires(&with(0, 1), "qcow2.snapshot-l1-table-at-header");
    assert_fires(&with(1 << 40, 1), "qcow2.snapshot-l1-table-past-eof");
}
