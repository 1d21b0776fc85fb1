//! `convert IN -`: the output streamed to standard output (a pipe, where `qemu-img convert …
//! /dev/stdout` fails), and `convert --expect ALGO:HEX`: the output's digest checked before
//! it is put in place.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::util::{Workdir, listing};

/// A 64 MiB qcow2 with data in a few places and holes elsewhere.
fn make_input(w: &Workdir) {
    w.qemu_img(&["create", "-q", "-f", "qcow2", "in.qcow2", "64M"]);
    w.qemu_io(&[
        "-c",
        "write -P 0x5a 1M 3M",
        "-c",
        "write -P 0x11 40M 64k",
        "-c",
        "write -P 0x77 63M 1M",
        "in.qcow2",
    ]);
}

/// Runs `vmimage ARGS` with standard output a pipe, as a pipeline's next command reads it;
/// returns (status, the piped bytes, stderr).
fn piped(w: &Workdir, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmimage"))
        .args(args)
        .current_dir(w.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run vmimage");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().expect("exit status"), out.stdout, stderr)
}

/// `md5sum`'s or `sha512sum`'s answer for `file`.
fn coreutils_digest(w: &Workdir, tool: &str, file: &str) -> String {
    let out = Command::new(tool)
        .arg(file)
        .current_dir(w.path())
        .output()
        .expect("coreutils");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

#[test]
fn every_streamable_format_goes_to_a_pipe_with_its_digests_on_stderr() {
    let w = Workdir::new();
    make_input(&w);
    // (name, convert's options, qemu-img's format name: it probes a fixed VHD as raw).
    let cases: &[(&str, &[&str], &str)] = &[
        ("raw", &["-O", "raw"], "raw"),
        ("qcow2", &["-O", "qcow2"], "qcow2"),
        ("qcow2-zlib", &["-O", "qcow2", "-c", "zlib"], "qcow2"),
        ("vhd-fixed", &["-O", "vpc", "-o", "subformat=fixed"], "vpc"),
        ("vhd-dynamic", &["-O", "vpc"], "vpc"),
        ("vhdx", &["-O", "vhdx"], "vhdx"),
    ];
    for (name, options, qemu_format) in cases {
        let mut args = vec!["convert", "in.qcow2", "-"];
        args.extend_from_slice(options);
        let (code, bytes, stderr) = piped(&w, &args);
        assert_eq!(code, 0, "{name}: {stderr}");
        let saved = format!("piped.{name}");
        std::fs::write(w.join(&saved), &bytes).unwrap();
        // The guest is the input's, and the image is valid for qemu-img.
        let cmp = w.qemu_img_any(&[
            "compare",
            "-q",
            "-f",
            "qcow2",
            "-F",
            qemu_format,
            "in.qcow2",
            &saved,
        ]);
        assert!(cmp.status.success(), "{name}: qemu-img compare differs");
        if name.starts_with("qcow2") {
            w.qemu_img(&["check", "-q", &saved]);
        }
        // The digests printed (on stderr: stdout is the image) are those of the bytes piped.
        let md5 = coreutils_digest(&w, "md5sum", &saved);
        let sha512 = coreutils_digest(&w, "sha512sum", &saved);
        assert!(
            stderr.contains(&format!("MD5 (-) = {md5}")),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("SHA512 (-) = {sha512}")),
            "{name}: {stderr}"
        );
        // Formats without random ids stream exactly the bytes of the file output.
        if matches!(*name, "raw" | "qcow2" | "qcow2-zlib") {
            let mut args = vec!["convert", "in.qcow2", "file.out"];
            args.extend_from_slice(options);
            w.vmimage(&args).expect_code(0);
            assert_eq!(std::fs::read(w.join("file.out")).unwrap(), bytes, "{name}");
        }
    }
}

#[test]
fn a_piped_output_gets_its_metadata_and_sidecar_after_the_stream_ended() {
    let w = Workdir::new();
    make_input(&w);
    let (code, bytes, stderr) = piped(
        &w,
        &[
            "convert",
            "in.qcow2",
            "-",
            "-O",
            "qcow2",
            "--json",
            "--metadata",
            "body.json",
            "--target",
            "glance",
            "--sidecar",
            "side.json",
            "--name",
            "piped",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(w.join("piped.qcow2"), &bytes).unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("side.json")).unwrap()).unwrap();
    let text = sidecar.to_string();
    assert!(
        text.contains(&coreutils_digest(&w, "md5sum", "piped.qcow2")),
        "{text}"
    );
    assert!(
        text.contains(&coreutils_digest(&w, "sha512sum", "piped.qcow2")),
        "{text}"
    );
    // The JSON report went to stderr.
    let report: serde_json::Value = serde_json::from_str(&stderr).expect("JSON on stderr");
    assert_eq!(report["output"], "-");
    assert_eq!(report["size"], bytes.len() as u64);
}

#[test]
fn what_cannot_be_streamed_is_refused_before_anything_is_written() {
    let w = Workdir::new();
    make_input(&w);
    for (args, says) in [
        (
            &["convert", "in.qcow2", "-", "-O", "vmdk"][..],
            "names its own file",
        ),
        (
            &["convert", "in.qcow2", "-", "-O", "raw", "--verify"][..],
            "--verify",
        ),
        (
            &["convert", "in.qcow2", "-", "-O", "raw", "--sync"][..],
            "--sync",
        ),
    ] {
        let (code, bytes, stderr) = piped(&w, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(bytes.is_empty(), "{args:?}");
        assert!(
            stderr.contains("standard output") && stderr.contains(says),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert_eq!(w.listing(), ["in.qcow2"]);
}

#[test]
fn a_reader_that_goes_away_stops_the_conversion_with_an_error() {
    let w = Workdir::new();
    make_input(&w);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
        .args(["convert", "in.qcow2", "-", "-O", "raw"])
        .current_dir(w.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; 4096];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("standard output: cannot write"), "{stderr}");
}

#[test]
fn expect_checks_the_output_digest_before_it_is_put_in_place() {
    let w = Workdir::new();
    make_input(&w);
    w.vmimage(&["convert", "in.qcow2", "ref.qcow2", "-O", "qcow2"])
        .expect_code(0);
    let md5 = coreutils_digest(&w, "md5sum", "ref.qcow2");
    let sha512 = coreutils_digest(&w, "sha512sum", "ref.qcow2");

    // Both right, and an algorithm --algo leaves out is computed for the check.
    w.vmimage(&[
        "convert",
        "in.qcow2",
        "good.qcow2",
        "-O",
        "qcow2",
        "--algo",
        "sha256",
        "--expect",
        &format!("md5:{md5}"),
        "--expect",
        &format!("SHA512:{}", sha512.to_uppercase()),
    ])
    .expect_code(0);
    assert_eq!(
        std::fs::read(w.join("good.qcow2")).unwrap(),
        std::fs::read(w.join("ref.qcow2")).unwrap()
    );

    // One wrong: exit 1, both digests named, an existing output and the metadata untouched,
    // no temporary file left.
    w.write("keep.qcow2", b"previous");
    let before = w.listing();
    let wrong = format!("sha512:{}", "0".repeat(128));
    let run = w.vmimage(&[
        "convert",
        "in.qcow2",
        "keep.qcow2",
        "-O",
        "qcow2",
        "--expect",
        &format!("md5:{md5}"),
        "--expect",
        &wrong,
        "--metadata",
        "body.json",
        "--target",
        "glance",
        "--sidecar",
        "side.json",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&sha512) && run.stderr.contains(&"0".repeat(128)),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("keep.qcow2"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(w.listing(), before);
    assert_eq!(std::fs::read(w.join("keep.qcow2")).unwrap(), b"previous");
    assert_eq!(listing(w.path()).len(), before.len());

    // Streamed: the bytes are gone, the exit status says they are wrong.
    let (code, _, stderr) = piped(
        &w,
        &[
            "convert",
            "in.qcow2",
            "-",
            "-O",
            "qcow2",
            "--expect",
            &format!("md5:{}", "f".repeat(32)),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&md5), "{stderr}");
}

#[test]
fn a_malformed_expectation_is_a_usage_error() {
    let w = Workdir::new();
    make_input(&w);
    for bad in [
        "md5",
        "md5:abc",
        "crc32:00000000",
        &format!("sha512:{}", "0".repeat(32)),
    ] {
        let run = w.vmimage(&[
            "convert", "in.qcow2", "out.raw", "-O", "raw", "--expect", bad,
        ]);
        run.expect_code(2);
    }
    assert_eq!(w.listing(), ["in.qcow2"]);
}
