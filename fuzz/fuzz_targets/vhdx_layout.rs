//! Structure-aware VHDX fuzzing: the input is a recipe for an image, not the image. A VHDX's
//! first header sits at 64 KiB (past the byte-level targets' 64 KiB inputs) and its headers
//! and region table carry CRC-32C checksums that a random mutation breaks, so byte-level
//! fuzzing stops at the file identifier. Here the recipe fills the headers, the region table,
//! the metadata table and items, a parent locator and the BAT with values drawn from a small
//! vocabulary (the right offset, another region, the header section, past the end, near 2^64,
//! noise), then re-seals the checksums (VHDX specification 2.2.2 and 2.2.3: CRC-32C with the
//! checksum field taken as zero), so every input reaches the parser's later stages. Each image
//! goes through `info` (format detection, `vhdx::describe`, the safety rules), `check`'s
//! classification, and the VHDX reader `vmimage convert` uses (log check, every BAT state,
//! the whole guest through `GuestReader`, bounded by `guest::read_guest`).
#![no_main]

mod guest;

use libfuzzer_sys::fuzz_target;
use vmimage::format::vhdx::reader::VhdxReader;
use vmimage::format::qcow2::check;
use vmimage::format::{Probe, detect_all};

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
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const HEADER1: u64 = 64 * KIB;
const HEADER2: u64 = 128 * KIB;
const REGION_TABLE: u64 = 192 * KIB;
/// Where the recipe's metadata region and BAT go when it picks "the right place": compact,
/// so that an image is a few hundred KiB unless the recipe asks for payload blocks.
const METADATA: u64 = 256 * KIB;
const METADATA_LEN: u64 = 128 * KIB;
const BAT: u64 = METADATA + METADATA_LEN;
const BAT_LEN: u64 = 64 * KIB;
const DATA: u64 = BAT + BAT_LEN;

/// Builds the on-disk form of a GUID written `data1-data2-data3-data4`.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

const BAT_GUID: [u8; 16] = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
const METADATA_GUID: [u8; 16] = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);
/// The metadata items (spec 2.6.2): file parameters, virtual disk size, page 83 data, logical
/// and physical sector size, parent locator.
const ITEMS: [[u8; 16]; 6] = [
    guid(
        0xcaa1_6737,
        0xfa36,
        0x4d43,
        [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
    ),
    guid(
        0x2fa5_4224,
        0xcd1b,
        0x4876,
        [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
    ),
    guid(
        0xbeca_12ab,
        0xb2e6,
        0x4523,
        [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
    ),
    guid(
        0x8141_bf1d,
        0xa96f,
        0x4709,
        [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
    ),
    guid(
        0xcda3_48c7,
        0x445d,
        0x4471,
        [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
    ),
    guid(
        0xa8d3_5f2d,
        0xb30b,
        0x454d,
        [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
    ),
];

/// CRC-32C (Castagnoli), bitwise: the recipe seals at most a few 64 KiB tables per input.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0x82f6_3b78 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

struct Image {
    bytes: Vec<u8>,
}

impl Image {
    fn put(&mut self, at: u64, v: &[u8]) {
        let Ok(at) = usize::try_from(at) else { return };
        let Some(end) = at.checked_add(v.len()) else {
            return;
        };
        if let Some(dst) = self.bytes.get_mut(at..end) {
            dst.copy_from_slice(v);
        }
    }
    /// Writes the CRC-32C of `len` bytes at `at` into bytes 4..8 of that range.
    fn seal(&mut self, at: u64, len: u64) {
        let (at, len) = (at as usize, len as usize);
        if let Some(area) = self.bytes.get_mut(at..at + len) {
            area[4..8].fill(0);
            let crc = crc32c(area);
            area[4..8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// A file offset from the vocabulary; `right` is where the structure belongs.
fn offset(r: &mut Recipe, right: u64) -> u64 {
    // A zero byte (the recipe's default once exhausted) picks the right value everywhere, so
    // an all-zero recipe is a valid image.
    match r.u8() % 10 {
        9 => 0,
        1 => HEADER1,
        2 => METADATA,
        3 => BAT,
        4 => 4 * MIB + u64::from(r.u8()) * MIB,
        5 => u64::MAX - u64::from(r.u8()),
        6 => r.u64(),
        7 => right + u64::from(r.u16()),
        _ => right,
    }
}

/// A length from the vocabulary; `right` is the structure's real length.
fn length(r: &mut Recipe, right: u64) -> u64 {
    match r.u8() % 8 {
        7 => 0,
        1 => u64::from(u32::MAX),
        2 => u64::from(r.u32()),
        3 => MIB,
        4 => right + 1,
        _ => right,
    }
}

fn build(r: &mut Recipe) -> Vec<u8> {
    // The file's length: the compact layout, room for payload blocks at 4 MiB and after, or
    // cut anywhere.
    let len = match r.u8() % 8 {
        7 => 6 * MIB,
        1 | 6 => 5 * MIB,
        2 => u64::from(r.u32()) % DATA,
        _ => DATA + 64 * KIB,
    };
    let mut img = Image {
        bytes: vec![0; len as usize],
    };
    img.put(0, b"vhdxfile");

    // Two headers (spec 2.2.2): signature, checksum, sequence number, log GUID, version 1,
    // log length and offset.
    for at in [HEADER1, HEADER2] {
        let kind = r.u8();
        img.put(at, if kind % 8 == 1 { b"hexd" } else { b"head" });
        img.put(at + 8, &u64::from(r.u8() % 4).to_le_bytes());
        if r.u8() % 4 == 3 {
            let mut g = [0u8; 16];
            g.iter_mut().for_each(|b| *b = r.u8());
            img.put(at + 48, &g);
        }
        let version: u16 = if r.u8() % 8 == 7 { r.u16() } else { 1 };
        img.put(at + 66, &version.to_le_bytes());
        img.put(at + 68, &(length(r, MIB) as u32).to_le_bytes());
        img.put(at + 72, &offset(r, MIB).to_le_bytes());
        if kind % 8 != 2 {
            img.seal(at, 4 * KIB);
        }
    }

    // The region table (spec 2.2.3): BAT and metadata, maybe more.
    let rt = REGION_TABLE;
    img.put(rt, if r.u8() % 16 == 15 { b"rege" } else { b"regi" });
    let count: u32 = match r.u8() % 8 {
        7 => u32::from(r.u8() % 6),
        1 => 2048 + u32::from(r.u8()),
        _ => 2,
    };
    img.put(rt + 8, &count.to_le_bytes());
    for i in 0..u64::from(count.min(5)) {
        let e = rt + 16 + 32 * i;
        let (right_guid, right_at, right_len) = if i % 2 == 0 {
            (BAT_GUID, BAT, BAT_LEN)
        } else {
            (METADATA_GUID, METADATA, METADATA_LEN)
        };
        let g = match r.u8() % 8 {
            5 => BAT_GUID,
            6 => METADATA_GUID,
            7 => [r.u8(); 16],
            _ => right_guid,
        };
        img.put(e, &g);
        img.put(e + 16, &offset(r, right_at).to_le_bytes());
        img.put(e + 24, &(length(r, right_len) as u32).to_le_bytes());
        img.put(e + 28, &u32::from(r.u8() % 2 != 0).to_le_bytes());
    }
    if r.u8() % 16 != 15 {
        img.seal(rt, 64 * KIB);
    }

    // The metadata table (spec 2.6.1): a 32-byte header, then 32-byte entries naming items
    // by GUID, offset (from the region's start), length and flags.
    let md = METADATA;
    img.put(
        md,
        if r.u8() % 16 == 15 {
            b"metadatx"
        } else {
            b"metadata"
        },
    );
    let count: u16 = match r.u8() % 8 {
        7 => u16::from(r.u8() % 8),
        6 => 2047 + u16::from(r.u8()),
        5 => 6,
        _ => 5,
    };
    img.put(md + 10, &count.to_le_bytes());
    for i in 0..u64::from(count.min(8)) {
        let e = md + 32 + 32 * i;
        let k = match r.u8() % 8 {
            7 => usize::from(r.u8()) % 6,
            6 => 6,
            _ => (i as usize).min(6),
        };
        let g = ITEMS.get(k).copied().unwrap_or([r.u8(); 16]);
        img.put(e, &g);
        let right_at = 64 * KIB + 256 * i;
        let value: Vec<u8> = match k {
            0 => {
                let block_size = match r.u8() % 8 {
                    7 => 256 * MIB,
                    1 => 32 * MIB,
                    2 => 512 * KIB,
                    3 => u64::from(r.u32()),
                    4 => 2 * MIB,
                    _ => MIB,
                };
                let flags = match r.u8() % 8 {
                    7 => 2,
                    1 => 1,
                    2 => r.u32(),
                    _ => 0,
                };
                let mut v = (block_size as u32).to_le_bytes().to_vec();
                v.extend(flags.to_le_bytes());
                v
            }
            1 => match r.u8() % 8 {
                7 => 64 << 40,
                1 => (64 << 40) + 1,
                2 => r.u64(),
                3 => MIB + 1,
                6 => 0,
                _ => 8 * MIB,
            }
            .to_le_bytes()
            .to_vec(),
            2 => vec![r.u8(); 16],
            3 | 4 => match r.u8() % 4 {
                3 => 4096u32,
                1 => r.u32(),
                _ => 512,
            }
            .to_le_bytes()
            .to_vec(),
            5 => locator(r),
            _ => vec![r.u8(); 8],
        };
        let item_len = length(r, value.len() as u64);
        let item_at = match r.u8() % 8 {
            7 => u64::from(r.u32()),
            6 => METADATA_LEN - 4,
            _ => right_at,
        };
        img.put(e + 16, &(item_at as u32).to_le_bytes());
        img.put(e + 20, &(item_len as u32).to_le_bytes());
        // Bit 2 is "is required"; bit 1 "is virtual disk" (spec 2.6.1.2).
        img.put(e + 24, &(u32::from(r.u8() % 4) << 1).to_le_bytes());
        img.put(md + right_at, &value);
    }

    // The BAT (spec 2.5): payload entries, with a sector bitmap entry after every chunk.
    let entries = u64::from(r.u8()) + 1;
    for i in 0..entries {
        // 0 is "not present"; 6 is "fully present", the state whose block must lie inside
        // the file.
        let state = u64::from(r.u8() % 8);
        let mib = match r.u8() % 8 {
            7 => 4 + u64::from(r.u8() % 4),
            1 => (METADATA / MIB) + u64::from(r.u8() % 2),
            2 => (1 << 44) - 1 - u64::from(r.u8() % 2),
            3 => u64::from(r.u32()) & ((1 << 44) - 1),
            4 => len / MIB + u64::from(r.u8() % 2),
            6 => 0,
            _ => 4,
        };
        let entry = (mib << 20) | state;
        img.put(BAT + 8 * i, &entry.to_le_bytes());
    }
    img.bytes
}

/// A parent locator (spec 2.6.2.6): a 20-byte header with the entry count at 18, then 12-byte
/// entries (key offset, value offset, key length, value length) into UTF-16LE strings.
fn locator(r: &mut Recipe) -> Vec<u8> {
    let mut v = vec![0u8; 512];
    let count = u16::from(r.u8() % 6);
    v[18..20].copy_from_slice(&count.to_le_bytes());
    let mut text = 20 + 12 * usize::from(count);
    for i in 0..usize::from(count) {
        let key = match r.u8() % 5 {
            0 => "absolute_win32_path",
            1 => "volume_path",
            2 => "parent_linkage",
            _ => "relative_path",
        };
        let value = match r.u8() % 3 {
            0 => "",
            1 => "..\\base.vhdx",
            _ => "C:\\images\\base.vhdx",
        };
        let k: Vec<u8> = key.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let val: Vec<u8> = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let e = 20 + 12 * i;
        let (mut ko, mut vo) = (text as u32, (text + k.len()) as u32);
        let (mut kl, mut vl) = (k.len() as u16, val.len() as u16);
        match r.u8() % 8 {
            7 => ko = r.u32(),
            1 => vo = u32::MAX - 1,
            2 => kl = u16::MAX,
            3 => vl = r.u16(),
            _ => {}
        }
        v[e..e + 4].copy_from_slice(&ko.to_le_bytes());
        v[e + 4..e + 8].copy_from_slice(&vo.to_le_bytes());
        v[e + 8..e + 10].copy_from_slice(&kl.to_le_bytes());
        v[e + 10..e + 12].copy_from_slice(&vl.to_le_bytes());
        if text + k.len() + val.len() <= v.len() {
            v[text..text + k.len()].copy_from_slice(&k);
            v[text + k.len()..text + k.len() + val.len()].copy_from_slice(&val);
        }
        text += k.len() + val.len();
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let image = build(&mut Recipe { data });
    let _ = vmimage::inspect(image.as_slice(), "fuzz");
    let probe = Probe::from_bytes(&image);
    let detected: Vec<_> = detect_all(&probe).into_iter().map(|d| d.format).collect();
    let _ = check::classify(&detected, &probe.head);
    if let Ok(reader) = VhdxReader::open(image) {
        guest::read_guest(&reader);
    }
});
