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
