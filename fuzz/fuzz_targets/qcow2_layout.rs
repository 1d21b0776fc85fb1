//! Structure-aware qcow2 fuzzing: the input is not an image but a recipe for one. Byte-level
//! mutation of a real image rarely keeps its tables pointing at each other; here every table
//! entry is drawn from a small vocabulary of meaningful values (another cluster of the file,
//! the header, the L1 table itself, past the end, a compressed descriptor into real deflate or
//! zstd data, the zero flag, raw noise), so the fuzzer explores shared, overlapping and
//! self-referencing tables, lying sizes and valid-looking compressed clusters. Each image then
//! goes through `info`, `check` and the converter's reader.
#![no_main]

mod guest;

use libfuzzer_sys::fuzz_target;
use vmimage::format::qcow2::reader::Qcow2Reader;
use vmimage::format::qcow2::{Qcow2Header, check};

/// The recipe: reads bytes, and zeros once exhausted.
struct Recipe<'a> {
    data: &'a [u8],
}

impl Recipe<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;

struct Image {
    bytes: Vec<u8>,
    cluster_bits: u32,
    clusters: u64,
}

impl Image {
    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }
    fn put64(&mut self, at: u64, v: u64) {
        let at = at as usize;
        if let Some(dst) = self.bytes.get_mut(at..at + 8) {
            dst.copy_from_slice(&v.to_be_bytes());
        }
    }
    fn put32(&mut self, at: u64, v: u32) {
        let at = at as usize;
        if let Some(dst) = self.bytes.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_be_bytes());
        }
    }
    /// A host offset drawn from the vocabulary.
    fn offset(&self, r: &mut Recipe, l1_offset: u64) -> u64 {
        let cs = self.cs();
        match r.u8() % 8 {
            0 => 0,
            1 => l1_offset,
            2 => self.clusters * cs,
            3 => (self.clusters + u64::from(r.u8())) * cs,
            4 => u64::from(r.u8()) * 512,
            5 => r.u64() & 0x00ff_ffff_ffff_fe00,
            _ => (u64::from(r.u8()) % self.clusters) * cs,
        }
    }
}

/// A cluster of data: zeros, a pattern, or a compressed stream of a pattern cluster.
fn fill_data(img: &mut Image, r: &mut Recipe, cluster: u64, zstd: bool) {
    let cs = img.cs() as usize;
    let start = (cluster as usize) * cs;
    let Some(dst) = img.bytes.get_mut(start..start + cs) else {
        return;
    };
    match r.u8() % 4 {
        0 => {}
        1 => {
            let b = r.u8();
            dst.iter_mut().enumerate().for_each(|(i, x)| *x = b ^ (i as u8));
        }
        _ => {
            let b = r.u8();
            let plain: Vec<u8> = (0..cs).map(|i| if i % 7 == 0 { b } else { 0 }).collect();
            let packed = if zstd {
                zstd::bulk::compress(&plain, 1).unwrap_or_default()
            } else {
                let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
                let mut out = Vec::with_capacity(cs);
                let _ = c.compress_vec(&plain, &mut out, flate2::FlushCompress::Finish);
                out
            };
            let n = packed.len().min(cs);
            dst[..n].copy_from_slice(&packed[..n]);
        }
    }
}

fn build(r: &mut Recipe) -> Vec<u8> {
    let cluster_bits = [9, 10, 12, 14][usize::from(r.u8() % 4)];
    let extended = cluster_bits >= 14 && r.u8() % 2 == 1;
    let clusters = 4 + u64::from(r.u8() % 28).min(if cluster_bits >= 14 { 4 } else { 28 });
    let mut img = Image {
        bytes: vec![0; (clusters << cluster_bits) as usize],
        cluster_bits,
        clusters,
    };
    let cs = img.cs();
    let version = if r.u8() % 4 == 0 { 2 } else { 3 };
    let zstd = version == 3 && r.u8() % 2 == 1;
    let refcount_order = match r.u8() % 8 {
        0 => u32::from(r.u8() % 8),
        _ => 4,
    };
    let entry = if extended { 16 } else { 8 };
    let l2_entries = cs / entry;
    let size = match r.u8() % 8 {
        0 => r.u64(),
        1 => 1 << 63,
        2 => (1 << 61) + 512,
        _ => u64::from(r.u8() % 16 + 1) * l2_entries * cs / 4 + u64::from(r.u8()) * 512,
    };
    let span = l2_entries * cs;
    let needed = size.div_ceil(span).min(u64::from(u32::MAX));
    let l1_size = match r.u8() % 8 {
        0 => r.u32(),
        1 => needed.saturating_add(u64::from(r.u8())) as u32,
        _ => needed as u32,
    };
    let l1_offset = match r.u8() % 8 {
        0 => img.offset(r, cs),
        _ => cs,
    };
    let reftable_offset = match r.u8() % 8 {
        0 => img.offset(r, l1_offset),
        _ => 2 * cs,
    };
    let reftable_clusters = match r.u8() % 8 {
        0 => r.u32(),
        _ => 1,
    };

    // Header.
    img.bytes[..4].copy_from_slice(b"QFI\xfb");
    img.put32(4, version);
    img.put32(20, cluster_bits);
    img.put64(24, size);
    img.put32(36, l1_size);
    img.put64(40, l1_offset);
    img.put64(48, reftable_offset);
    img.put32(56, reftable_clusters);
    if version == 3 {
        let mut incompat = 0u64;
        if zstd {
            incompat |= 1 << 3;
        }
        if extended {
            incompat |= 1 << 4;
        }
        if r.u8() % 16 == 0 {
            incompat |= 1; // dirty
        }
        img.put64(72, incompat);
        img.put32(96, refcount_order);
        img.put32(100, 112);
        if zstd {
            img.bytes[104] = 1;
        }
        // Optionally a header extension, possibly lying about its length.
        if r.u8() % 4 == 0 {
            // Feature table, bitmaps, crypto header, data file, backing format, or noise.
            let kind = [0x6803_f857, 0x2385_2875, 0x0537_be77, 0x4441_5441, 0xe279_2aca];
            let magic = kind
                .get(usize::from(r.u8() % 6))
                .copied()
                .unwrap_or_else(|| r.u32());
            img.put32(112, magic);
            img.put32(116, [8, 16, 24, r.u32()][usize::from(r.u8() % 4)]);
            let body = r.u64();
            img.put64(120, body);
        }
    }

    // L1 entries (within the file).
    let mut l2_tables = Vec::new();
    for i in 0..u64::from(l1_size).min(256) {
        let v = match r.u8() % 4 {
            0 => 0,
            1 => r.u64(),
            _ => {
                let off = img.offset(r, l1_offset);
                l2_tables.push(off);
                off | if r.u8() % 2 == 0 { COPIED } else { 0 }
            }
        };
        img.put64(l1_offset + 8 * i, v);
    }
    // L2 entries of every table the L1 points at.
    for table in l2_tables {
        if table >= img.clusters * cs || table % cs != 0 {
            continue;
        }
        let n = u64::from(r.u8()) % l2_entries + 1;
        for k in 0..n {
            let kind = r.u8() % 8;
            let v = match kind {
                0 => 0,
                1 => 1, // zero flag, no host cluster
                2 => r.u64(),
                3 => {
                    // Compressed: host offset anywhere (sector-ish), sectors from the recipe.
                    let shift = 62 - (cluster_bits - 8);
                    let host = img.offset(r, l1_offset) + u64::from(r.u8() % 4) * 64;
                    let sectors = u64::from(r.u8()) & ((1 << (cluster_bits - 8)) - 1);
                    COMPRESSED | (sectors << shift) | (host & ((1 << shift) - 1))
                }
                _ => {
                    let host = img.offset(r, l1_offset);
                    if host != 0 && host < img.clusters * cs && r.u8() % 2 == 0 {
                        fill_data(&mut img, r, host / cs, zstd);
                    }
                    host | if kind == 4 { 1 } else { 0 } | if r.u8() % 2 == 0 { COPIED } else { 0 }
                }
            };
            img.put64(table + entry * k, v);
            if extended {
                let bitmap = match r.u8() % 4 {
                    0 => 0,
                    1 => 0xffff_ffff,
                    2 => 0xffff_ffff << 32,
                    _ => r.u64(),
                };
                img.put64(table + entry * k + 8, bitmap);
            }
        }
    }
    // Refcount table: entries point at refcount blocks, whose entries are small counts.
    for i in 0..(r.u8() % 4) as u64 {
        let block = match r.u8() % 4 {
            0 => img.offset(r, l1_offset),
            _ => 3 * cs,
        };
        img.put64(reftable_offset + 8 * i, block);
        if block < img.clusters * cs && block % cs == 0 && refcount_order <= 6 {
            let bits = 1u64 << refcount_order;
            let per_block = cs * 8 / bits;
            for c in 0..per_block.min(img.clusters) {
                let count = match r.u8() % 4 {
                    0 => 0,
                    3 => u64::from(r.u8()),
                    _ => 1,
                };
                let bit = c * bits;
                let byte = (block + bit / 8) as usize;
                match bits {
                    1 | 2 | 4 => {
                        let shift = bit % 8;
                        if let Some(x) = img.bytes.get_mut(byte) {
                            *x |= ((count & ((1 << bits) - 1)) << shift) as u8;
                        }
                    }
                    8 => {
                        if let Some(x) = img.bytes.get_mut(byte) {
                            *x = count as u8;
                        }
                    }
                    16 => {
                        let b = (count as u16).to_be_bytes();
                        if let Some(d) = img.bytes.get_mut(byte..byte + 2) {
                            d.copy_from_slice(&b);
                        }
                    }
                    32 => img.put32(byte as u64, count as u32),
                    _ => img.put64(byte as u64, count),
                }
            }
        }
    }
    // Optionally cut the file short, so tables run past the end.
    if r.u8() % 8 == 0 {
        let cut = (u64::from(r.u32()) % (img.clusters * cs)).max(112) as usize;
        img.bytes.truncate(cut);
    }
    img.bytes
}

fuzz_target!(|data: &[u8]| {
    let image = build(&mut Recipe { data });
    let _ = vmimage::inspect(image.as_slice(), "fuzz");
    if let Ok(report) = check::check(image.as_slice()) {
        let _ = report.exit_status();
    }
    if let Ok(header) = Qcow2Header::read(image.as_slice()) {
        if let Ok(reader) = Qcow2Reader::open(image, header) {
            guest::read_guest(&reader);
        }
    }
});
