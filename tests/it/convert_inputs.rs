//! `vmimage convert` from VDI, VMDK and VHDX inputs, with qemu-img as the oracle: each image is
//! made by `qemu-img create` with every option it offers for the format, filled by `qemu-io`
//! at scattered offsets (data, zero writes over data, never-written runs, the last partial
//! block), then converted to qcow2 and raw and compared with `qemu-img compare`
//! ([`check_conversions`]: also `qemu-img check` on the qcow2 output, the printed digests and
//! `--threads 1` against `--threads 2`). Damaged tables must give exit 1 with one sentence
//! naming the file, never a panic, and leave nothing behind.

use crate::convert::{check_conversions, qemu_io_write, write_noise};
use crate::util::Workdir;

/// Outputs every input is converted to (the compressed qcow2 outputs are `convert.rs`'s
/// business: they read the input the same way).
const OUTPUTS: [(&[&str], &str); 2] = [(&["-O", "qcow2"], "qcow2"), (&["-O", "raw"], "raw")];

/// Guest writes for a disk of `size` bytes: data at the start, inside a later block, a
/// zero write over written data, a run never written, and the last 1.5 KiB (a partial block,
/// grain or cluster whenever the size is not a multiple of it).
fn scattered_writes(size: u64) -> Vec<String> {
    vec![
        "write -P 0x11 0 64k".to_string(),
        "write -P 0x22 1536k 4k".to_string(),
        "write -P 0x33 3m 1m".to_string(),
        "write -z 3200k 64k".to_string(),
        format!("write -P 0x44 {} 1536", size - 1536),
    ]
}

/// Makes `name` with `qemu-img create -f fmt -o opts` and writes [`scattered_writes`].
fn make(w: &Workdir, fmt: &str, opts: &str, name: &str, size: u64) {
    let size_arg = size.to_string();
    let mut args = vec!["create", "-q", "-f", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([name, &size_arg]);
    w.qemu_img(&args);
    let writes = scattered_writes(size);
    let cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io_write(w, fmt, name, &cmds);
}

/// Converts `name`, checks every output, and checks the reported virtual size against
/// `qemu-img info`.
fn converts_exactly(w: &Workdir, name: &str, fmt: &str) {
    check_conversions(w, name, fmt, &OUTPUTS);
    let run = w.vmimage(&["convert", name, "o.raw", "-O", "raw", "--json"]);
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["input-format"], fmt, "{name}");
    let qemu = w.qemu_info(name, Some(fmt));
    assert_eq!(report["virtual-size"], qemu["virtual-size"], "{name}");
    std::fs::remove_file(w.join("o.raw")).unwrap();
}

/// A damaged input: exit 1, one line naming the file and containing `why`, nothing left.
fn refused(w: &Workdir, name: &str, why: &str) {
    for (out, fmt) in [("bad.qcow2", "qcow2"), ("bad.raw", "raw")] {
        let before = w.listing();
        let run = w.vmimage(&["convert", name, out, "-O", fmt]);
        run.expect_code(1);
        assert!(
            run.stderr.starts_with("vmimage: ") && run.stderr.contains(name),
            "{name}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(why),
            "{name}: wanted {why:?} in {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert_eq!(w.listing(), before, "{name}: something was left behind");
    }
}

/// Odd sizes: a whole number of sectors, not of 1 MiB VDI blocks or of 64 KiB grains.
const ODD_SIZE: u64 = 5 * 1024 * 1024 + 3 * 512;

#[test]
fn vdi_static_and_dynamic_convert_exactly() {
    for opts in ["static=off", "static=on"] {
        let w = Workdir::new();
        make(&w, "vdi", opts, "in.vdi", ODD_SIZE);
        converts_exactly(&w, "in.vdi", "vdi");
    }
    // A dynamic image never written: nothing but zeros, from the block map alone.
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "vdi", "empty.vdi", "64M"]);
    converts_exactly(&w, "empty.vdi", "vdi");
}

/// The VDI block map starts at 0x200 in QEMU's images: 4-byte entries, one per 1 MiB block.
const VDI_BMAP: usize = 0x200;

#[test]
fn a_vdi_with_a_damaged_block_map_is_refused() {
    let w = Workdir::new();
    make(&w, "vdi", "", "in.vdi", ODD_SIZE);
    let good = std::fs::read(w.join("in.vdi")).unwrap();
    // Block 1 names allocated block 0 again; block 2 names a block past those allocated.
    let mut shared = good.clone();
    shared[VDI_BMAP + 4..VDI_BMAP + 8].copy_from_slice(&0u32.to_le_bytes());
    w.write("shared.vdi", &shared);
    refused(&w, "shared.vdi", "both name block 0");
    let mut past = good.clone();
    past[VDI_BMAP + 8..VDI_BMAP + 12].copy_from_slice(&1000u32.to_le_bytes());
    w.write("past.vdi", &past);
    refused(&w, "past.vdi", "names block 1000");
    // Truncated inside the data blocks: the inspector's finding.
    w.write("cut.vdi", &good[..good.len() - 4096]);
    refused(&w, "cut.vdi", "truncated");
}

/// A little-endian u64 of a file's bytes.
fn le64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn vmdk_monolithic_sparse_converts_exactly_with_and_without_zeroed_grains() {
    for opts in [
        "subformat=monolithicSparse",
        "subformat=monolithicSparse,zeroed_grain=on",
        "subformat=monolithicSparse,compat6=on,adapter_type=lsilogic",
    ] {
        let w = Workdir::new();
        make(&w, "vmdk", opts, "in.vmdk", ODD_SIZE);
        write_noise_into(&w, "vmdk", "in.vmdk");
        converts_exactly(&w, "in.vmdk", "vmdk");
    }
}

/// Writes 100,000 incompressible bytes at 2 MiB with `qemu-io write -s` (a pattern file).
fn write_noise_into(w: &Workdir, fmt: &str, name: &str) {
    let noise = w.join("noise.bin");
    std::fs::File::create(&noise)
        .unwrap()
        .set_len(100_000)
        .unwrap();
    write_noise(&noise, 0, 100_000);
    qemu_io_write(w, fmt, name, &["write -s noise.bin 2m 100000"]);
    std::fs::remove_file(&noise).unwrap();
}

/// `stream` (a streamOptimized VMDK made by qemu-img) laid out as VMware's writers do: the
/// header's grain directory offset -1, then a footer marker, the footer and the end-of-stream
/// marker at the end of the file.
fn with_footer(stream: &[u8]) -> Vec<u8> {
    assert_eq!(stream.len() % 512, 0);
    let mut b = stream.to_vec();
    let mut marker = vec![0u8; 512];
    marker[0] = 1;
    marker[12] = 3; // MARKER_FOOTER
    b.extend(&marker);
    b.extend(&stream[..512]);
    b.extend(vec![0u8; 512]); // end of stream
    b[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    b
}

/// A raw disk of [`ODD_SIZE`] with the scattered writes and incompressible bytes, converted by
/// qemu-img to a streamOptimized VMDK.
fn make_stream(w: &Workdir, name: &str) {
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "raw",
        "src.raw",
        &ODD_SIZE.to_string(),
    ]);
    let writes = scattered_writes(ODD_SIZE);
    let cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io_write(w, "raw", "src.raw", &cmds);
    write_noise(&w.join("src.raw"), 2 << 20, 100_000);
    w.qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        "src.raw",
        name,
    ]);
    std::fs::remove_file(w.join("src.raw")).unwrap();
}

#[test]
fn vmdk_stream_optimized_converts_exactly() {
    let w = Workdir::new();
    make_stream(&w, "in.vmdk");
    converts_exactly(&w, "in.vmdk", "vmdk");
    // As VMware writes streams (QEMU writes no footer): the header's grain directory offset
    // is -1, and a footer (a copy of the header with the real offset) ends the file between
    // a footer marker and the end-of-stream marker.
    w.write(
        "footer.vmdk",
        &with_footer(&std::fs::read(w.join("in.vmdk")).unwrap()),
    );
    converts_exactly(&w, "footer.vmdk", "vmdk");
    // An empty stream: a footer, no grains.
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        "empty.vmdk",
        "3M",
    ]);
    converts_exactly(&w, "empty.vmdk", "vmdk");
}

/// Replaces the compressed stream of guest grain `grain` of the qemu-made streamOptimized VMDK
/// `b` (grain directory at the header's offset, 512-entry grain tables, 64 KiB grains) with
/// `stream`, which must fit where the old one was; its marker gets the new length.
fn replace_grain_stream(b: &mut [u8], grain: usize, stream: &[u8]) {
    let gd = le64_at(b, 56) as usize * 512;
    let gt_at = gd + grain / 512 * 4;
    let gt = u32::from_le_bytes(b[gt_at..gt_at + 4].try_into().unwrap()) as usize * 512;
    let entry = gt + grain % 512 * 4;
    let at = u32::from_le_bytes(b[entry..entry + 4].try_into().unwrap()) as usize * 512;
    assert_eq!(le64_at(b, at), grain as u64 * 128, "the marker's LBA");
    let old = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
    assert!(stream.len() <= old, "{} > {old}", stream.len());
    b[at + 8..at + 12].copy_from_slice(&(stream.len() as u32).to_le_bytes());
    b[at + 12..at + 12 + stream.len()].copy_from_slice(stream);
}

/// zlib (RFC 1950) of `data` at `level` (0: stored blocks).
fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The guest offsets (64 KiB apart) that `qemu-img map` says hold data in `file`.
fn data_offsets(w: &Workdir, file: &str) -> Vec<u64> {
    let map = w.qemu_img(&["map", "--output=json", file]);
    let map: serde_json::Value = serde_json::from_slice(&map.stdout).unwrap();
    let mut at = Vec::new();
    for e in map.as_array().unwrap() {
        if e["data"] == true {
            let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            at.extend((start..start + len).step_by(65536));
        }
    }
    at
}

/// The qcow2 writer decides which clusters of a streamOptimized VMDK to store from the grain
/// markers' lengths and inflates only the grains with short streams (those that may be
/// zeros), so that every other grain is inflated once, by the write pass. A grain of zeros
/// in a short stream is then not stored, as qemu-img does not store it; one in a long stream
/// (stored blocks, zlib level 0) is stored as zeros: the same guest content, deterministic.
#[test]
fn stream_vmdk_grains_of_zeros_convert_exactly_short_streams_unstored() {
    let w = Workdir::new();
    make_stream(&w, "in.vmdk");
    let mut b = std::fs::read(w.join("in.vmdk")).unwrap();
    let zeros = vec![0u8; 65536];
    // Grain 0 (0x11 bytes) becomes zeros in a short stream; grain 32 (incompressible noise
    // at 2 MiB) zeros in stored blocks, as long as the noise's.
    replace_grain_stream(&mut b, 0, &zlib(&zeros, 6));
    replace_grain_stream(&mut b, 32, &zlib(&zeros, 0));
    w.write("zeros.vmdk", &b);
    converts_exactly(&w, "zeros.vmdk", "vmdk");

    let run = w.vmimage(&["convert", "zeros.vmdk", "out.qcow2", "-O", "qcow2"]);
    run.expect_code(0);
    let stored = data_offsets(&w, "out.qcow2");
    assert!(
        !stored.contains(&0),
        "the short zero grain was stored: {stored:?}"
    );
    assert!(
        stored.contains(&(2 << 20)),
        "the long zero grain was not stored: {stored:?}"
    );
    assert!(stored.contains(&(33 << 16)), "{stored:?}");
    // qemu-img stores neither; the guests are the same.
    w.qemu_img(&["convert", "-O", "qcow2", "zeros.vmdk", "qemu.qcow2"]);
    let theirs = data_offsets(&w, "qemu.qcow2");
    assert!(
        !theirs.contains(&0) && !theirs.contains(&(2 << 20)),
        "{theirs:?}"
    );
    let cmp = w.qemu_img_any(&["compare", "out.qcow2", "qemu.qcow2"]);
    assert!(cmp.status.success());
    // Every other block output stores the long zero grain's block too, and reads the same.
    for (fmt, name) in [("vpc", "out.vhd"), ("vhdx", "out.vhdx")] {
        w.vmimage(&["convert", "zeros.vmdk", name, "-O", fmt])
            .expect_code(0);
        let cmp = w.qemu_img_any(&["compare", "-F", fmt, "zeros.vmdk", name]);
        assert!(cmp.status.success(), "{fmt}");
    }
}

#[test]
fn vmdk_descriptor_files_are_refused_with_the_inspectors_finding() {
    let w = Workdir::new();
    for sub in ["monolithicFlat", "twoGbMaxExtentSparse"] {
        let name = format!("{sub}.vmdk");
        w.qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            &name,
            "1M",
        ]);
        refused(&w, &name, "vmdk-extent-path");
    }
}

#[test]
fn a_vmdk_with_damaged_tables_or_grains_is_refused() {
    let w = Workdir::new();
    make(&w, "vmdk", "", "sparse.vmdk", ODD_SIZE);
    let good = std::fs::read(w.join("sparse.vmdk")).unwrap();
    // Grain directory entry 1 names entry 0's grain table (a grain table maps 32 MiB).
    w.qemu_img(&["create", "-q", "-f", "vmdk", "big.vmdk", "100M"]);
    qemu_io_write(&w, "vmdk", "big.vmdk", &["write -P 1 0 64k"]);
    let mut shared = std::fs::read(w.join("big.vmdk")).unwrap();
    std::fs::remove_file(w.join("big.vmdk")).unwrap();
    let gd = le64_at(&shared, 56) as usize * 512;
    let first: [u8; 4] = shared[gd..gd + 4].try_into().unwrap();
    shared[gd + 4..gd + 8].copy_from_slice(&first);
    w.write("shared-gt.vmdk", &shared);
    refused(&w, "shared-gt.vmdk", "both name the grain table");
    let gd = le64_at(&good, 56) as usize * 512;
    let first: [u8; 4] = good[gd..gd + 4].try_into().unwrap();
    // Grain table entry 1 names grain 0's sector.
    let gt = u32::from_le_bytes(first) as usize * 512;
    let mut shared = good.clone();
    let grain0: [u8; 4] = good[gt..gt + 4].try_into().unwrap();
    shared[gt + 4..gt + 8].copy_from_slice(&grain0);
    w.write("shared-grain.vmdk", &shared);
    refused(&w, "shared-grain.vmdk", "another grain already reads");
    // A grain past the end of the file; a grain table past the end of the file.
    let mut past = good.clone();
    past[gt..gt + 4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
    w.write("grain-past.vmdk", &past);
    refused(&w, "grain-past.vmdk", "past the end of the file");
    let mut past = good.clone();
    past[gd..gd + 4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
    w.write("gt-past.vmdk", &past);
    refused(&w, "gt-past.vmdk", "past the end of the file");

    make_stream(&w, "stream.vmdk");
    let good = std::fs::read(w.join("stream.vmdk")).unwrap();
    // The first grain (guest grain 0) starts at the header's grain offset: garble its
    // zlib stream after the 12-byte marker.
    let grain = le64_at(&good, 64) as usize * 512;
    let mut bad = good.clone();
    for b in &mut bad[grain + 12..grain + 40] {
        *b ^= 0x5a;
    }
    w.write("garbled.vmdk", &bad);
    refused(&w, "garbled.vmdk", "compressed VMDK grain 0");
    // A marker whose length is absurd.
    let mut bad = good.clone();
    bad[grain + 8..grain + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    w.write("marker.vmdk", &bad);
    refused(&w, "marker.vmdk", "compressed length");
    // Cut inside the stream: its grain tables are gone.
    w.write("cut.vmdk", &good[..good.len() / 2]);
    refused(&w, "cut.vmdk", "past the end of the file");
    // The same with the grain directory located by the footer: the footer is gone.
    let footer = with_footer(&good);
    w.write("cut-footer.vmdk", &footer[..footer.len() - 1024]);
    refused(&w, "cut-footer.vmdk", "vmdk-footer");
}

/// CRC-32C (Castagnoli), the checksum of VHDX headers and log entries.
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

/// Stores the CRC-32C of `b[at..at + len]` (checksum field at +4 taken as zero) at +4.
fn seal(b: &mut [u8], at: usize, len: usize) {
    b[at + 4..at + 8].fill(0);
    let crc = crc32c(&b[at..at + len]);
    b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// On-disk GUIDs of the VHDX BAT and metadata regions and the logical sector size item.
const VHDX_BAT: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
const VHDX_METADATA: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
const VHDX_LOGICAL_SECTOR: [u8; 16] = [
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
];

/// The file offset of the region `guid` from the region table at 192 KiB.
fn vhdx_region(b: &[u8], guid: &[u8; 16]) -> usize {
    let rt = 192 * 1024;
    let count = u32::from_le_bytes(b[rt + 8..rt + 12].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| rt + 16 + 32 * i)
        .find(|&e| &b[e..e + 16] == guid)
        .map(|e| le64_at(b, e + 16) as usize)
        .expect("region")
}

/// The offset of the current (higher sequence number) VHDX header.
fn vhdx_current_header(b: &[u8]) -> usize {
    let (h1, h2) = (64 * 1024, 128 * 1024);
    if le64_at(b, h1 + 8) > le64_at(b, h2 + 8) {
        h1
    } else {
        h2
    }
}

#[test]
fn vhdx_dynamic_and_fixed_convert_exactly_with_every_block_and_log_size() {
    for opts in [
        "subformat=dynamic",
        "subformat=dynamic,block_size=1M,log_size=4M",
        "subformat=dynamic,block_size=32M,block_state_zero=off",
        "subformat=fixed",
        "subformat=fixed,block_size=1M,log_size=2M",
    ] {
        let w = Workdir::new();
        make(&w, "vhdx", opts, "in.vhdx", ODD_SIZE);
        write_noise_into(&w, "vhdx", "in.vhdx");
        converts_exactly(&w, "in.vhdx", "vhdx");
    }
}

#[test]
fn a_vhdx_past_its_first_sector_bitmap_chunk_converts_exactly() {
    // 1 MiB blocks: 4096 payload entries, then a sector bitmap entry, then block 4096.
    let w = Workdir::new();
    let size = (4u64 << 30) + (3 << 20) + 512;
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M",
        "big.vhdx",
        &size.to_string(),
    ]);
    qemu_io_write(
        &w,
        "vhdx",
        "big.vhdx",
        &[
            "write -P 7 0 4k",
            "write -P 8 4095m 2m",
            "write -P 9 4098m 512",
        ],
    );
    check_conversions(&w, "big.vhdx", "vhdx", &[(&["-O", "qcow2"], "qcow2")]);
}

#[test]
fn a_vhdx_with_4096_byte_logical_sectors_is_its_whole_size_everywhere() {
    // qemu-img cannot make one (it always writes 512-byte sectors), and QEMU refuses to open
    // one since 5.2, so the oracles are the specification (the virtual disk size is in bytes),
    // the same file with 512-byte sectors (guest bytes map to block bytes whatever the sector
    // size) and libvhdi and dissect.hypervisor, which read it whole. QEMU before 5.2, and
    // vmimage's `info` before this test, said an eighth of the size.
    let w = Workdir::new();
    let size = 5 * 1024 * 1024 + 3 * 4096;
    make(&w, "vhdx", "block_size=1M", "s512.vhdx", size);
    let mut b = std::fs::read(w.join("s512.vhdx")).unwrap();
    let md = vhdx_region(&b, &VHDX_METADATA);
    let count = u16::from_le_bytes(b[md + 10..md + 12].try_into().unwrap()) as usize;
    let entry = (0..count)
        .map(|i| md + 32 + 32 * i)
        .find(|&e| b[e..e + 16] == VHDX_LOGICAL_SECTOR)
        .unwrap();
    let item = md + u32::from_le_bytes(b[entry + 16..entry + 20].try_into().unwrap()) as usize;
    assert_eq!(b[item..item + 4], 512u32.to_le_bytes());
    b[item..item + 4].copy_from_slice(&4096u32.to_le_bytes());
    w.write("s4k.vhdx", &b);

    let qemu = w.qemu_img_any(&["info", "s4k.vhdx"]);
    assert!(
        !qemu.status.success()
            && String::from_utf8_lossy(&qemu.stderr).contains("Operation not supported"),
        "QEMU opened a 4096-byte-sector VHDX: {}",
        String::from_utf8_lossy(&qemu.stdout)
    );
    let run = w.vmimage(&["info", "s4k.vhdx", "--json"]);
    run.expect_code(0);
    let info = run.json();
    assert_eq!(info["virtual-size"], size, "info");
    crate::util::assert_rule(&info, "vhdx.logical-sector-4096");
    assert_eq!(info["safety"]["safe"], true, "a warning, not a refusal");

    w.vmimage(&["convert", "s512.vhdx", "a.raw", "-O", "raw"])
        .expect_code(0);
    let run = w.vmimage(&["convert", "s4k.vhdx", "b.raw", "-O", "raw", "--json"]);
    run.expect_code(0);
    assert_eq!(run.json()["virtual-size"], size, "convert");
    let (a, b) = (
        std::fs::read(w.join("a.raw")).unwrap(),
        std::fs::read(w.join("b.raw")).unwrap(),
    );
    assert_eq!(a.len() as u64, size);
    assert!(a == b, "the 4096-byte-sector disk reads differently");
    w.vmimage(&["convert", "s4k.vhdx", "b.qcow2", "-O", "qcow2"])
        .expect_code(0);
    let cmp = w.qemu_img_any(&["compare", "-f", "raw", "-F", "qcow2", "a.raw", "b.qcow2"]);
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    // `hash --guest` hashes the same disk as the 512-byte-sector file and the raw one.
    let guest = |f: &str| {
        let run = w.vmimage(&["hash", "--guest", f, "--json"]);
        run.expect_code(0);
        run.json()[0]["guest_hash"].clone()
    };
    let g4k = guest("s4k.vhdx");
    assert_eq!(g4k, guest("s512.vhdx"), "hash --guest");
    assert_eq!(g4k, guest("a.raw"), "hash --guest");
    crate::second_reader::reads_the_same(&w, "vhdx", "s4k.vhdx", "a.raw", size);
    // Glance records the whole size too (oslo's inspector reads the metadata item as is).
    if let Some(glance) = crate::oslo_inspector::glance_format_and_virtual_size(&w, "s4k.vhdx") {
        assert_eq!(glance, ("vhdx".to_string(), size));
    }
}

#[test]
fn a_vhdx_log_is_read_only_when_it_holds_nothing_to_replay() {
    let w = Workdir::new();
    make(&w, "vhdx", "", "in.vhdx", ODD_SIZE);
    let mut b = std::fs::read(w.join("in.vhdx")).unwrap();
    let h = vhdx_current_header(&b);
    let guid = [0x42u8; 16];
    b[h + 48..h + 64].copy_from_slice(&guid);
    seal(&mut b, h, 4096);
    // An active log GUID over an empty log: QEMU opens it, and so does vmimage.
    w.write("empty-log.vhdx", &b);
    converts_exactly(&w, "empty-log.vhdx", "vhdx");

    // One valid entry (no descriptors): QEMU refuses to open it read-only.
    let log = le64_at(&b, h + 72) as usize;
    let len = b.len() as u64;
    let e = &mut b[log..log + 4096];
    e.fill(0);
    e[..4].copy_from_slice(b"loge");
    e[8..12].copy_from_slice(&4096u32.to_le_bytes());
    e[16..24].copy_from_slice(&1u64.to_le_bytes());
    e[32..48].copy_from_slice(&guid);
    e[48..56].copy_from_slice(&len.to_le_bytes());
    e[56..64].copy_from_slice(&len.to_le_bytes());
    seal(&mut b, log, 4096);
    w.write("replay.vhdx", &b);
    let qemu = w.qemu_img_any(&["info", "replay.vhdx"]);
    assert!(
        !qemu.status.success()
            && String::from_utf8_lossy(&qemu.stderr).contains("needs to be replayed"),
        "{}",
        String::from_utf8_lossy(&qemu.stderr)
    );
    refused(&w, "replay.vhdx", "log needs replaying");
}

#[test]
fn a_vhdx_with_a_damaged_bat_is_refused() {
    let w = Workdir::new();
    make(&w, "vhdx", "block_size=1M", "in.vhdx", ODD_SIZE);
    let good = std::fs::read(w.join("in.vhdx")).unwrap();
    let bat = vhdx_region(&good, &VHDX_BAT);
    // Blocks 0 and 1 are present: make block 1 name block 0's space.
    let mut shared = good.clone();
    let first: [u8; 8] = good[bat..bat + 8].try_into().unwrap();
    assert_eq!(first[0] & 7, 6, "block 0 fully present");
    shared[bat + 8..bat + 16].copy_from_slice(&first);
    w.write("shared.vhdx", &shared);
    refused(&w, "shared.vhdx", "shares file space");
    // Partially present: a differencing disk's state.
    let mut partial = good.clone();
    partial[bat] = (partial[bat] & !7) | 7;
    w.write("partial.vhdx", &partial);
    refused(&w, "partial.vhdx", "partially present");
    // Cut: the last block runs past the end (the inspector's finding).
    w.write("cut.vhdx", &good[..good.len() - 4096]);
    refused(&w, "cut.vhdx", "truncated");
}
