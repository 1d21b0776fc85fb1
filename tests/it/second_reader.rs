//! Every format `convert` reads and every format it writes, read by readers that are not QEMU:
//! dissect.hypervisor (Fox-IT's pure-Python qcow2, VHD, VHDX, VMDK and VDI readers, in a
//! virtualenv this module creates under `CARGO_TARGET_TMPDIR` with pip from PyPI, once) and
//! libyal's libvhdi and libvmdk (Debian's `python3-libvhdi` and `python3-libvmdk`, which
//! `.ci/run` installs). `tests/second_reader.py` reads the guest disk with one of them and
//! compares it with a raw reference MiB by MiB: for an input, vmimage's `convert -O raw`; for
//! an output, the source it was converted from. The reader must also report the virtual size
//! QEMU gives the image. Under `CI=true` a missing reader fails the tests; elsewhere they say
//! so and check what they can.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::convert::{qemu_io_write, write_noise};
use crate::util::Workdir;

/// dissect.hypervisor and what it imports, pinned (backports.zstd reads zstd-compressed
/// qcow2 on Python before 3.14).
const DISSECT_REQUIREMENTS: &[&str] = &[
    "dissect.hypervisor==3.21",
    "dissect.cstruct==4.7",
    "dissect.util==3.24",
    "defusedxml==0.7.1",
    "backports.zstd==1.8.0; python_version < '3.14'",
];

/// The Python with libyal's bindings: Debian installs them for the system interpreter.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/second_reader.py");

/// A reader missing: a failure under `CI=true`, a note elsewhere.
fn missing(what: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is required under CI=true: {why}"
    );
    eprintln!("SKIPPED: {what} is not available: {why}");
}

/// The virtualenv's python with dissect.hypervisor, created once per target directory.
fn dissect_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dissect-venv");
        crate::util::python_venv(
            &venv,
            DISSECT_REQUIREMENTS,
            "import dissect.hypervisor.disk.qcow2, dissect.hypervisor.disk.vhd, \
             dissect.hypervisor.disk.vhdx, dissect.hypervisor.disk.vmdk, \
             dissect.hypervisor.disk.vdi; \
             assert dissect.hypervisor.disk.qcow2.HAS_ZSTD",
        )
    });
    match result {
        Ok(python) => Some(python.clone()),
        Err(e) => {
            missing("dissect.hypervisor (a venv from PyPI)", e);
            None
        }
    }
}

/// Whether libyal's bindings import.
fn libyal_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        Command::new(SYSTEM_PYTHON)
            .args(["-c", "import pyvhdi, pyvmdk"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        missing(
            "python3-libvhdi and python3-libvmdk",
            ".ci/run installs them",
        );
    }
    ok
}

/// Reads `image` (QEMU format name `format`) with every second reader that knows the format
/// and checks that each reports `size` bytes holding `reference`'s bytes, then zeros.
pub fn reads_the_same(w: &Workdir, format: &str, image: &str, reference: &str, size: u64) {
    reads_the_same_by(w, format, image, reference, size, true);
}

/// [`reads_the_same`], with libyal left out when `libyal` is false.
fn reads_the_same_by(
    w: &Workdir,
    format: &str,
    image: &str,
    reference: &str,
    size: u64,
    libyal: bool,
) {
    let mut readers: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(python) = dissect_python() {
        readers.push(("dissect", python));
    }
    if libyal && matches!(format, "vpc" | "vhdx" | "vmdk") && libyal_available() {
        readers.push(("libyal", PathBuf::from(SYSTEM_PYTHON)));
    }
    for (backend, python) in &readers {
        let out = Command::new(python)
            .args([SCRIPT, backend, format, image, reference, &size.to_string()])
            .current_dir(w.path())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{backend} disagrees on {image} ({format}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn qemu_size(w: &Workdir, file: &str, format: &str) -> u64 {
    w.qemu_info(file, Some(format))["virtual-size"]
        .as_u64()
        .expect("virtual-size")
}

/// Sizes that are whole sectors but not whole clusters, grains or blocks.
const ODD_SIZE: u64 = 5 * 1024 * 1024 + 3 * 512;

/// Guest writes over a disk of `size` bytes: data at the start, inside a later block, over a
/// 1 MiB boundary, a zero write over written data, and the last 1.5 KiB.
fn writes(size: u64) -> Vec<String> {
    vec![
        "write -P 0x11 0 64k".into(),
        "write -P 0x22 1536k 4k".into(),
        "write -P 0x33 3000k 1m".into(),
        "write -z 3200k 64k".into(),
        format!("write -P 0x44 {} 1536", size - 1536),
    ]
}

/// `qemu-img create -f fmt -o opts name size`, then [`writes`] and 100,000 incompressible
/// bytes at 2 MiB through qemu-io.
fn make(w: &Workdir, fmt: &str, opts: &str, name: &str, size: u64) {
    let size_arg = size.to_string();
    let mut args = vec!["create", "-q", "-f", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([name, &size_arg]);
    w.qemu_img(&args);
    let mut cmds = writes(size);
    let noise = w.join("noise.bin");
    std::fs::File::create(&noise)
        .unwrap()
        .set_len(100_000)
        .unwrap();
    write_noise(&noise, 0, 100_000);
    cmds.push("write -s noise.bin 2m 100000".into());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io_write(w, fmt, name, &cmds);
    std::fs::remove_file(noise).unwrap();
}

/// An input converted by vmimage to raw: the output is `size` bytes and every second reader
/// reads the input as those bytes.
fn input_reads_the_same(w: &Workdir, name: &str, fmt: &str, size: u64) {
    let raw = format!("{name}.raw");
    w.vmimage(&["convert", name, &raw, "-O", "raw"])
        .expect_code(0);
    let len = std::fs::metadata(w.join(&raw)).unwrap().len();
    assert_eq!(len, size, "{name}: vmimage's raw output");
    // libvmdk (Debian's 20200926) reads a zeroed grain (grain table entry 1, VMDK 1.1
    // "zeroed-grain GTEs") as sector 1, the embedded descriptor, where QEMU, dissect and
    // vmimage read zeros: its bug, so only dissect reads the zeroed-grain image.
    let libyal = !name.starts_with("zeroed");
    reads_the_same_by(w, fmt, name, &raw, size, libyal);
}

#[test]
fn every_input_format_reads_the_same_to_a_second_reader() {
    let w = Workdir::new();
    let qemu_made = [
        ("plain.qcow2", "qcow2", ""),
        ("v2.qcow2", "qcow2", "compat=0.10,cluster_size=4096"),
        ("dynamic.vhd", "vpc", "subformat=dynamic"),
        ("fixed.vhd", "vpc", "subformat=fixed"),
        ("sparse.vmdk", "vmdk", "subformat=monolithicSparse"),
        ("zeroed.vmdk", "vmdk", "zeroed_grain=on"),
        ("dynamic.vhdx", "vhdx", "subformat=dynamic,block_size=1M"),
        ("fixed.vhdx", "vhdx", "subformat=fixed"),
        ("dynamic.vdi", "vdi", "static=off"),
        ("static.vdi", "vdi", "static=on"),
    ];
    for (name, fmt, opts) in qemu_made {
        make(&w, fmt, opts, name, ODD_SIZE);
        let size = qemu_size(&w, name, fmt);
        input_reads_the_same(&w, name, fmt, size);
    }
    // Compressed qcow2 (zlib, zstd) and streamOptimized VMDK, converted by qemu-img.
    for (name, fmt, args) in [
        ("zlib.qcow2", "qcow2", &["-c"][..]),
        (
            "zstd.qcow2",
            "qcow2",
            &["-c", "-o", "compression_type=zstd"][..],
        ),
        (
            "stream.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"][..],
        ),
    ] {
        let mut a = vec!["convert", "-f", "qcow2", "-O", fmt];
        a.extend(args);
        a.extend(["plain.qcow2", name]);
        w.qemu_img(&a);
        input_reads_the_same(&w, name, fmt, ODD_SIZE);
    }
    // Raw, of a length that is not a whole number of sectors: QEMU (and vmimage) read it
    // rounded up to 512 with zeros; the second reader is the file itself.
    let odd: Vec<u8> = (0..ODD_SIZE + 100).map(|i| (i % 251) as u8).collect();
    w.write("odd.raw", &odd);
    w.vmimage(&["convert", "odd.raw", "odd.out.raw", "-O", "raw"])
        .expect_code(0);
    let mut want = odd.clone();
    want.resize(qemu_size(&w, "odd.raw", "raw") as usize, 0);
    assert!(std::fs::read(w.join("odd.out.raw")).unwrap() == want);
}

/// An odd-length raw source with data spread over it, and what each output must read as.
fn odd_source(w: &Workdir) -> u64 {
    make(w, "raw", "", "src.raw", ODD_SIZE);
    // 100 bytes past the last whole sector: QEMU and vmimage read them as a partial sector
    // padded with zeros.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(w.join("src.raw"))
        .unwrap();
    std::io::Write::write_all(&mut f, &[0x5a; 100]).unwrap();
    qemu_size(w, "src.raw", "raw")
}

#[test]
fn every_output_format_reads_the_same_to_a_second_reader() {
    let w = Workdir::new();
    let size = odd_source(&w);
    assert_eq!(size, ODD_SIZE + 512);
    let outputs: [(&str, &str, &[&str]); 10] = [
        ("out.qcow2", "qcow2", &["-O", "qcow2"]),
        ("zlib.qcow2", "qcow2", &["-O", "qcow2", "-c", "zlib"]),
        ("zstd.qcow2", "qcow2", &["-O", "qcow2", "-c", "zstd"]),
        ("dynamic.vhd", "vpc", &["-O", "vpc"]),
        ("fixed.vhd", "vpc", &["-O", "vpc", "-o", "subformat=fixed"]),
        (
            "forced.vhd",
            "vpc",
            &["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
        ),
        ("azure.vhd", "vpc", &["-O", "vpc", "--azure"]),
        ("stream.vmdk", "vmdk", &["-O", "vmdk"]),
        (
            "sparse.vmdk",
            "vmdk",
            &["-O", "vmdk", "-o", "subformat=monolithicSparse"],
        ),
        ("out.vhdx", "vhdx", &["-O", "vhdx"]),
    ];
    for (name, fmt, args) in outputs {
        let mut a = vec!["convert", "src.raw", name];
        a.extend(args);
        w.vmimage(&a).expect_code(0);
        let out_size = qemu_size(&w, name, fmt);
        assert!(out_size >= size, "{name}: {out_size} < {size}");
        reads_the_same(&w, fmt, name, "src.raw", out_size);
    }
    // Raw output: the source's bytes, rounded up to whole sectors with zeros.
    w.vmimage(&["convert", "src.raw", "out.raw", "-O", "raw"])
        .expect_code(0);
    let mut want = std::fs::read(w.join("src.raw")).unwrap();
    want.resize(size as usize, 0);
    assert!(std::fs::read(w.join("out.raw")).unwrap() == want);
}
