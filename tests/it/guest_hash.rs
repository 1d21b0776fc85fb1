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

#[test]
fn convert_verify_passes_prints_the_guest_hash_and_catches_a_corrupted_writer() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "disk.qcow2", SIZE]);
    write_guest(&w, "qcow2", "disk.qcow2");
    let want = guest_hash(&w, "disk.qcow2", "sha256");
    // A raw input whose length is not a sector multiple: the output holds it rounded up, and
    // --verify compares the guest disks of that size.
    w.write("odd.raw", &[9u8; 70_001]);
    for (input, fmt, out) in [
        ("disk.qcow2", "qcow2", "out.qcow2"),
        ("disk.qcow2", "raw", "out.raw"),
        ("odd.raw", "qcow2", "odd.qcow2"),
    ] {
        let run = w.vmimage(&["convert", "--verify", input, out, "-O", fmt]);
        run.expect_code(0);
        let line = format!("BLKHASH-SHA256 ({out}) = {}", guest_hash(&w, out, "sha256"));
        assert!(run.stdout.contains(&line), "{}", run.stdout);
    }
    let json = w
        .vmimage(&[
            "convert",
            "--verify",
            "--json",
            "disk.qcow2",
            "j.qcow2",
            "-O",
            "qcow2",
        ])
        .expect_code(0)
        .json();
    assert_eq!(json["guest_hash"]["value"], want.as_str());

    // A writer that flips one bit of the data it emits: exit 1 with both digests, and
    // nothing left behind; an existing OUT is left as it was.
    w.write("keep.qcow2", b"previous");
    for (fmt, out) in [
        ("qcow2", "bad.qcow2"),
        ("raw", "bad.raw"),
        ("qcow2", "keep.qcow2"),
    ] {
        let before = w.listing();
        let run = w.vmimage_with_fault(
            &["convert", "--verify", "disk.qcow2", out, "-O", fmt],
            Some("corrupt-data"),
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{out}: {stderr}");
        assert!(stderr.contains(out) && stderr.contains(&want), "{stderr}");
        assert!(
            stderr.contains("does not hold the input's guest"),
            "{stderr}"
        );
        assert_eq!(w.listing(), before, "{out}");
    }
    assert_eq!(std::fs::read(w.join("keep.qcow2")).unwrap(), b"previous");
    // Without --verify the same fault goes unnoticed: the hook does corrupt the output.
    let run = w.vmimage_with_fault(
        &["convert", "disk.qcow2", "unchecked.qcow2", "-O", "qcow2"],
        Some("corrupt-data"),
    );
    assert_eq!(run.status.code(), Some(0));
    assert_ne!(guest_hash(&w, "unchecked.qcow2", "sha256"), want);
}

/// `convert --verify` hashes the input during the conversion's own reads: under the test fault
/// `open-once`, opening the input a second time (as a separate hashing pass would) is an
/// error. Every output arm gives the reference's guest hash, for a qcow2 input (read whole by
/// the workers) and a raw one (probed by the qcow2 and block scans), and so does the sidecar.
#[test]
fn convert_verify_reads_the_input_once_in_every_output_arm() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "disk.qcow2", SIZE]);
    write_guest(&w, "qcow2", "disk.qcow2");
    let want = check_against_qemu(&w, "disk.qcow2", "qcow2");
    w.qemu_img(&["convert", "-O", "raw", "disk.qcow2", "disk.raw"]);
    let outputs: &[(&str, &[&str])] = &[
        ("o.qcow2", &["-O", "qcow2"]),
        ("c.qcow2", &["-O", "qcow2", "-c", "zlib"]),
        ("small.qcow2", &["-O", "qcow2", "--cluster-size", "4096"]),
        ("o.raw", &["-O", "raw"]),
        ("dyn.vhd", &["-O", "vpc", "-o", "force_size=on"]),
        (
            "fixed.vhd",
            &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
        ),
        ("stream.vmdk", &["-O", "vmdk"]),
        (
            "sparse.vmdk",
            &["-O", "vmdk", "-o", "subformat=monolithicSparse"],
        ),
        ("o.vhdx", &["-O", "vhdx"]),
    ];
    for input in ["disk.qcow2", "disk.raw"] {
        for (out, opts) in outputs {
            let out = format!("{input}.{out}");
            let mut args = vec!["convert", "--verify", "--json", input, &out];
            args.extend_from_slice(opts);
            let run = w.vmimage_with_fault(&args, Some("open-once"));
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(0), "{out}: {stderr}");
            let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
            assert_eq!(json["guest_hash"]["value"], want.as_str(), "{out}");
            assert_eq!(guest_hash(&w, &out, "sha256"), want, "{out}");
        }
    }
    // A VHD rounded up to a CHS geometry (or, for Azure, to a whole MiB) is a larger disk:
    // the input's guest followed by zeros, which is what --verify compares.
    for (out, opts) in [
        ("chs.vhd", &["-O", "vpc"][..]),
        ("azure.vhd", &["-O", "vpc", "--azure"][..]),
    ] {
        let mut args = vec!["convert", "--verify", "--json", "disk.qcow2", out];
        args.extend_from_slice(opts);
        let json = w.vmimage(&args).expect_code(0).json();
        check_against_qemu(&w, out, "vpc");
        assert_eq!(
            json["guest_hash"]["value"],
            guest_hash(&w, out, "sha256").as_str(),
            "{out}"
        );
    }
    // The sidecar's guest hash, without --verify, comes from the same reads.
    let run = w.vmimage_with_fault(
        &[
            "convert",
            "disk.qcow2",
            "side.raw",
            "-O",
            "raw",
            "--metadata",
            "body.json",
            "--target",
            "glance",
            "--sidecar",
            "side.json",
        ],
        Some("open-once"),
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("side.json")).unwrap()).unwrap();
    assert_eq!(side["guest_hash"]["value"], want.as_str(), "{side}");
}

#[test]
fn a_glance_import_conversion_is_verified_through_the_sidecars_guest_hash() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "disk.qcow2", SIZE]);
    write_guest(&w, "qcow2", "disk.qcow2");
    let want = guest_hash(&w, "disk.qcow2", "sha256");
    // The pipeline's record of the qcow2 it uploads, from `metadata` and from `convert`.
    w.vmimage(&[
        "metadata",
        "disk.qcow2",
        "--target",
        "glance",
        "--sidecar",
        "side.json",
    ])
    .expect_code(0);
    w.vmimage(&[
        "convert",
        "disk.qcow2",
        "built.qcow2",
        "-O",
        "qcow2",
        "-c",
        "zlib",
        "--metadata",
        "body.json",
        "--target",
        "glance",
        "--sidecar",
        "built.json",
    ])
    .expect_code(0);
    for sidecar in ["side.json", "built.json"] {
        let text = std::fs::read_to_string(w.join(sidecar)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["guest_hash"]["algorithm"], "blkhash-sha256", "{text}");
        assert_eq!(json["guest_hash"]["block_size"], 65536, "{text}");
        assert_eq!(json["guest_hash"]["value"], want.as_str(), "{text}");
    }

    // Glance's image_conversion import plugin stores the raw conversion.
    w.qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "disk.qcow2",
        "glance.raw",
    ]);
    for sidecar in ["side.json", "built.json"] {
        let run = w.vmimage(&["verify", "glance.raw", "--against", sidecar, "--json"]);
        let report = run.expect_code(0).json();
        let status = |id: &str| {
            report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .unwrap_or_else(|| panic!("no {id} check: {report}"))["status"]
                .clone()
        };
        assert_eq!(status("checksum"), "not_comparable", "{report}");
        assert_eq!(status("os_hash_value"), "not_comparable", "{report}");
        assert_eq!(status("guest_hash"), "pass", "{report}");
        assert_eq!(report["verdict"], "verified", "{report}");
        assert_eq!(report["proved"], "content", "{report}");
    }
    // The same file against the qcow2's record with no guest hash proves nothing, as before.
    let mut plain: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("side.json")).unwrap()).unwrap();
    plain.as_object_mut().unwrap().remove("guest_hash");
    w.write("plain.json", plain.to_string().as_bytes());
    let report = w
        .vmimage(&["verify", "glance.raw", "--against", "plain.json", "--json"])
        .expect_code(1)
        .json();
    assert_eq!(report["verdict"], "unverified", "{report}");
    assert!(report.get("proved").is_none(), "{report}");

    // --guest-hash as a flag: the right one passes, a wrong one fails.
    let flag = format!("sha256:{want}");
    w.vmimage(&["verify", "glance.raw", "--guest-hash", &flag])
        .expect_code(0);
    let mut wrong = want.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = format!("blkhash-sha256:{}", String::from_utf8(wrong).unwrap());
    let run = w.vmimage(&[
        "verify",
        "glance.raw",
        "--against",
        "side.json",
        "--guest-hash",
        &wrong,
    ]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("guest_hash") && run.stdout.contains("fail"),
        "{}",
        run.stdout
    );
    w.vmimage(&["verify", "glance.raw", "--guest-hash", "sha256:abc"])
        .expect_code(2);

    // Another disk's raw file fails the guest hash.
    w.qemu_io(&["-f", "raw", "-c", "write -P 0x77 4M 4k", "glance.raw"]);
    let report = w
        .vmimage(&["verify", "glance.raw", "--against", "side.json", "--json"])
        .expect_code(1)
        .json();
    assert_eq!(report["verdict"], "failed", "{report}");
}
