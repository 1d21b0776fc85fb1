//! `vmimage convert` from VDI, VMDK and VHDX inputs, with qemu-img as the oracle: each image is
//! made by `qemu-img create` with every option it offers for the format, filled by `qemu-io`
//! at scattered offsets (data, zero writes over data, never-written runs, the last partial
//! block), then converted to qcow2 and raw and compared with `qemu-img compare`
//! ([`check_conversions`]: also `qemu-img check` on the qcow2 output, the printed digests and
//! `--threads 1` against `--threads 2`). Damaged tables must give exit 1 with one sentence
//! naming the file, never a panic, and leave nothing behind.

use crate::convert::{check_conversions, qemu_io_write};
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
