//! `vmimage hash --guest`: the guest-content hash equals the blkhash construction computed by
//! `tests/blkhash_reference.py` (Python's hashlib, an independent implementation) over
//! `qemu-img convert -O raw` of every test image, and is the same for every format of one
//! disk.

use std::path::Path;
use std::process::Command;

use crate::util::Workdir;

/// The Python reference's digest of the raw file `file`.
fn reference(dir: &Path, file: &str, algo: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/blkhash_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .args([file, algo])
        .current_dir(dir)
        .output()
        .expect("python3 is required: it runs the blkhash reference");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

/// `vmimage hash --guest --algo ALGO FILE`'s digest.
fn guest_hash(w: &Workdir, file: &str, algo: &str) -> String {
    let run = w.vmimage(&["hash", "--guest", "--algo", algo, file]);
    run.expect_code(0);
    let (hex, name) = run.stdout.trim_end().split_once("  ").unwrap();
    assert_eq!(name, file);
    hex.to_string()
}

/// The guest hash of `file` (format `fmt`) equals the reference over qemu-img's raw
/// conversion of it; returns it.
fn check_against_qemu(w: &Workdir, file: &str, fmt: &str) -> String {
    let raw = format!("{file}.oracle.raw");
    w.qemu_img(&["convert", "-f", fmt, "-O", "raw", file, &raw]);
    let want = reference(w.path(), &raw, "sha256");
    assert_eq!(guest_hash(w, file, "sha256"), want, "{file} ({fmt})");
    want
}

#[test]
fn raw_files_are_hashed_as_their_exact_bytes() {
    let w = Workdir::new();
    // Empty, one byte, not a sector multiple, one block and one byte, a zero tail: QEMU would
    // round these up to 512 bytes; blksum reads the file's bytes.
    let mut tail = vec![0u8; 3 * 65536 + 100];
    tail[10] = 7;
    let cases: [(&str, Vec<u8>); 6] = [
        ("empty.raw", Vec::new()),
        ("one.raw", vec![0x42]),
        (
            "odd.raw",
            (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("block-and-one.raw", vec![1; 65537]),
        ("zero-tail.raw", tail),
        ("zeros.raw", vec![0; 65536 * 2 + 512]),
    ];
    for (name, data) in cases {
        w.write(name, &data);
        for algo in ["sha256", "md5", "sha512"] {
            assert_eq!(
                guest_hash(&w, name, algo),
                reference(w.path(), name, algo),
                "{name} {algo}"
            );
        }
    }
    // The empty message is le64(0) alone.
    assert_eq!(
        guest_hash(&w, "empty.raw", "sha256"),
        "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
    );
}

#[test]
fn sparse_raw_holes_hash_as_zeros() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "raw", "sparse.raw", "300M"]);
    w.qemu_io(&[
        "-f",
        "raw",
        "-c",
        "write -P 0x5c 70M 130k",
        "-c",
        "write -P 3 299M 1k",
        "sparse.raw",
    ]);
    assert_eq!(
        guest_hash(&w, "sparse.raw", "sha256"),
        reference(w.path(), "sparse.raw", "sha256")
    );
}

/// Writes the same guest data into `file` (format `fmt`, virtual size 5 MiB + 7 sectors, not
/// a multiple of 64 KiB): data in the first and the partial last block, a zeroed range, a
/// zero tail before the end.
fn write_guest(w: &Workdir, fmt: &str, file: &str) {
    w.qemu_io(&[
        "-f",
        fmt,
        "-c",
        "write -P 0x11 0 70k",
        "-c",
        "write -P 0x22 1M 1M",
        "-c",
        "write -z 1536k 128k",
        "-c",
        "write -P 0x33 5M 1k",
        file,
    ]);
}

const SIZE: &str = "5246464"; // 5 MiB + 7 * 512

#[test]
fn every_qcow2_kind_matches_the_reference() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "empty.qcow2", "0"]);
    check_against_qemu(&w, "empty.qcow2", "qcow2");
    w.qemu_img(&["create", "-f", "qcow2", "blank.qcow2", "1G"]);
    check_against_qemu(&w, "blank.qcow2", "qcow2");

    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", SIZE]);
    write_guest(&w, "qcow2", "base.qcow2");
    let want = check_against_qemu(&w, "base.qcow2", "qcow2");
    for (name, opts) in [
        ("c64k.qcow2", vec!["-c"]),
        ("c4k.qcow2", vec!["-c", "-o", "cluster_size=4096"]),
        ("c2m.qcow2", vec!["-c", "-o", "cluster_size=2M"]),
        ("zstd.qcow2", vec!["-c", "-o", "compression_type=zstd"]),
        ("v2.qcow2", vec!["-o", "compat=0.10"]),
        (
            "l2ext.qcow2",
            vec!["-o", "extended_l2=on,cluster_size=128k"],
        ),
        ("c512.qcow2", vec!["-o", "cluster_size=512"]),
    ] {
        let mut args = vec!["convert", "-O", "qcow2"];
        args.extend(opts);
        args.extend(["base.qcow2", name]);
        w.qemu_img(&args);
        assert_eq!(check_against_qemu(&w, name, "qcow2"), want, "{name}");
    }

    // Extended L2 with subclusters written and zeroed by qemu-io, not by a conversion.
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=64k",
        "sub.qcow2",
        SIZE,
    ]);
    write_guest(&w, "qcow2", "sub.qcow2");
    w.qemu_io(&[
        "-f",
        "qcow2",
        "-c",
        "write -P 0x44 2052k 2k",
        "-c",
        "write -z 1k 1k",
        "sub.qcow2",
    ]);
    check_against_qemu(&w, "sub.qcow2", "qcow2");
}

#[test]
fn vhd_and_raw_of_one_disk_hash_alike() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "disk.qcow2", SIZE]);
    write_guest(&w, "qcow2", "disk.qcow2");
    let want = check_against_qemu(&w, "disk.qcow2", "qcow2");
    // force_size keeps the virtual size exact instead of rounding it to a CHS geometry.
    for (name, sub) in [("dyn.vhd", "dynamic"), ("fixed.vhd", "fixed")] {
        let opt = format!("subformat={sub},force_size=on");
        w.qemu_img(&["convert", "-O", "vpc", "-o", &opt, "disk.qcow2", name]);
        assert_eq!(check_against_qemu(&w, name, "vpc"), want, "{name}");
    }
    // A CHS-rounded VHD is a larger disk: its own value, still the reference's.
    w.qemu_img(&["convert", "-O", "vpc", "disk.qcow2", "chs.vhd"]);
    check_against_qemu(&w, "chs.vhd", "vpc");
    w.qemu_img(&["convert", "-O", "raw", "disk.qcow2", "disk.raw"]);
    assert_eq!(guest_hash(&w, "disk.raw", "sha256"), want);

    // --json, one object per file in argument order, as `hash --json`.
    let run = w.vmimage(&["hash", "--guest", "--json", "disk.qcow2", "dyn.vhd"]);
    let json = run.expect_code(0).json();
    for (i, file) in ["disk.qcow2", "dyn.vhd"].iter().enumerate() {
        assert_eq!(json[i]["file"], *file);
        assert_eq!(json[i]["guest_hash"]["algorithm"], "blkhash-sha256");
        assert_eq!(json[i]["guest_hash"]["block_size"], 65536);
        assert_eq!(json[i]["guest_hash"]["value"], want.as_str());
    }
}

#[test]
fn every_algorithm_matches_the_reference() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "disk.qcow2", SIZE]);
    write_guest(&w, "qcow2", "disk.qcow2");
    w.qemu_img(&["convert", "-O", "raw", "disk.qcow2", "disk.raw"]);
    for algo in ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"] {
        assert_eq!(
            guest_hash(&w, "disk.qcow2", algo),
            reference(w.path(), "disk.raw", algo),
            "{algo}"
        );
    }
}

#[test]
fn unsafe_and_unreadable_inputs_are_refused() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "1M"]);
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "base.qcow2",
        "top.qcow2",
    ]);
    let run = w.vmimage(&["hash", "--guest", "top.qcow2", "base.qcow2"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("top.qcow2") && run.stderr.contains("backing"),
        "{}",
        run.stderr
    );
    // The safe file is still hashed.
    assert!(run.stdout.ends_with("  base.qcow2\n"), "{}", run.stdout);

    let run = w.vmimage(&["hash", "--guest", "missing.qcow2"]);
    run.expect_code(2);
    assert!(run.stderr.contains("missing.qcow2"), "{}", run.stderr);
    w.vmimage(&["hash", "--guest", "--algo", "md5,sha1", "base.qcow2"])
        .expect_code(2);
    w.vmimage_stdin(&["hash", "--guest"], Some(b"x"))
        .expect_code(2);
}
