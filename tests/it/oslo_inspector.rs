//! OpenStack's format inspector tests, replayed against `vmimage info`.
//!
//! oslo.utils' `oslo_utils/tests/imageutils/test_format_inspector.py` (openstack/oslo.utils at
//! 2efc66aeedf27c1a51345d377ddd4407d7db489c) builds images with qemu-img, mkisofs and byte
//! patches, and asserts what its inspector says of each. Every image it builds is built here the
//! same way, and vmimage's verdict is compared with two oracles:
//!
//! - oslo's, as its test asserts it (`Oslo`), checked live against oslo.utils' own inspector
//!   (`detect_file_format(path)` then `.safety_check()`) installed in a virtualenv that the
//!   first test creates under the target directory and later runs reuse;
//! - QEMU's, where oslo is wrong: a comment at the case says why, and vmimage must say what
//!   qemu-img says.
//!
//! Cases that test oslo's internals rather than an image (its capture regions, its wrapper's
//! error handling, a hypothetical inspector subclass, the VHDX metadata table clamp, LUKS
//! key-slot parsing with mocks) have no image to replay and are left out.

use crate::util::Workdir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The oslo.utils release (and the `cryptography` it imports for LUKS) the live oracle runs.
const OSLO_REQUIREMENTS: &[&str] = &["oslo.utils==10.2.0", "cryptography==50.0.2"];

/// What oslo's test asserts of an image.
#[derive(Clone, Copy, Debug)]
enum Oslo {
    /// Detected as this format (oslo's `NAME`), and the safety check passes.
    Safe(&'static str),
    /// Refused: detection or the safety check fails with a message containing this text.
    Fails(&'static str),
}

/// What vmimage must say of an image.
#[derive(Clone, Copy, Debug)]
enum Vm {
    /// This format, and safe (exit 0).
    Safe(&'static str),
    /// Unsafe (exit 1) with an error finding of this check.
    Unsafe(&'static str),
}

struct Case {
    file: String,
    oslo: Oslo,
    vm: Vm,
    /// Where set, vmimage's `virtual-size` must be qemu-img's.
    qemu_size: bool,
}

impl Case {
    fn new(file: impl Into<String>, oslo: Oslo, vm: Vm) -> Self {
        Self {
            file: file.into(),
            oslo,
            vm,
            qemu_size: false,
        }
    }

    fn with_qemu_size(mut self) -> Self {
        self.qemu_size = true;
        self
    }
}

/// The virtualenv's python, created once per target directory. Under `CI=true` a failure to
/// create it fails the test; elsewhere the live oracle is skipped with a note.
pub(crate) fn oslo_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oslo-venv");
        crate::util::python_venv(&venv, OSLO_REQUIREMENTS, "import oslo_utils.imageutils")
    });
    match result {
        Ok(python) => Some(python.clone()),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the oslo.utils oracle could not be installed: {e}"
            );
            eprintln!("skipping the live oslo.utils oracle: {e}");
            None
        }
    }
}

/// The format and `virtual_size` Glance records for `file` (in `w`): oslo's inspector with
/// the whole file streamed through `InspectWrapper`, as Glance's `set_data` does. `None` when
/// the oracle is not installed (outside `CI=true`).
pub(crate) fn glance_format_and_virtual_size(w: &Workdir, file: &str) -> Option<(String, u64)> {
    let python = oslo_python()?;
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; from oslo_utils.imageutils import format_inspector as fi\n\
             w = fi.InspectWrapper(open(sys.argv[1], 'rb'))\n\
             while w.read(65536): pass\n\
             w.close(); print(w.format.NAME, w.format.virtual_size)",
            file,
        ])
        .current_dir(w.path())
        .output()
        .expect("run the oslo venv's python");
    assert!(
        out.status.success(),
        "oslo's inspector on {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (name, size) = text.trim().split_once(' ').expect("NAME SIZE");
    Some((name.to_string(), size.parse().expect("a size")))
}

/// Runs oslo's inspector on each file: `detect_file_format` and `safety_check`, as Glance does.
const OSLO_PROBE: &str = r#"
import json, sys
from oslo_utils.imageutils import format_inspector as fi
out = {}
for path in sys.argv[1:]:
    r = {"text": ""}
    try:
        inspector = fi.detect_file_format(path)
        r["format"] = inspector.NAME
        try:
            inspector.safety_check()
            r["safe"] = True
        except fi.SafetyCheckFailed as e:
            r["safe"] = False
            r["text"] = "; ".join(f"{k}: {v}" for k, v in e.failures.items())
    except Exception as e:
        r["safe"] = False
        r["text"] = f"{type(e).__name__}: {e}"
    out[path] = r
print(json.dumps(out))
"#;

fn run_oslo(w: &Workdir, files: &[&str]) -> Option<Value> {
    let python = oslo_python()?;
    let out = Command::new(python)
        .arg("-c")
        .arg(OSLO_PROBE)
        .args(files)
        .current_dir(w.path())
        .output()
        .expect("run the oslo probe");
    assert!(
        out.status.success(),
        "oslo probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("oslo probe json"))
}

/// Checks every case against vmimage, qemu-img and (when installed) oslo, and fails once with
/// every disagreement listed.
fn verify(w: &Workdir, cases: &[Case]) {
    let mut wrong = Vec::new();
    for case in cases {
        let run = w.vmimage(&["info", "--json", &case.file]);
        let info = run.json();
        let safe = info["safety"]["safe"] == true;
        let errors: Vec<&str> = info["safety"]["findings"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter(|f| f["severity"] == "error")
                    .filter_map(|f| f["check"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        match case.vm {
            Vm::Safe(format) if !(safe && run.code == 0 && info["format"] == format) => {
                wrong.push(format!(
                    "{}: want safe {format}, vmimage: {info}",
                    case.file
                ));
            }
            Vm::Unsafe(check) if !(run.code == 1 && !safe && errors.contains(&check)) => {
                wrong.push(format!(
                    "{}: want unsafe ({check}), vmimage: {info}",
                    case.file
                ));
            }
            _ => {}
        }
        if case.qemu_size {
            let q = w.qemu_info(&case.file, None);
            if info["virtual-size"] != q["virtual-size"] {
                wrong.push(format!(
                    "{}: virtual-size {} but qemu-img says {}",
                    case.file, info["virtual-size"], q["virtual-size"]
                ));
            }
        }
    }
    let files: Vec<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    if let Some(live) = run_oslo(w, &files) {
        for case in cases {
            let r = &live[&case.file];
            let text = r["text"].as_str().unwrap_or_default();
            let agrees = match case.oslo {
                Oslo::Safe(format) => r["safe"] == true && r["format"] == format,
                Oslo::Fails(needle) => r["safe"] == false && text.contains(needle),
            };
            if !agrees {
                wrong.push(format!(
                    "{}: oslo's test says {:?}, oslo.utils says {r}",
                    case.file, case.oslo
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const MIB: u64 = 1024 * 1024;

fn patch(w: &Workdir, file: &str, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(w.join(file))
        .expect("open for patching");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("patch");
}

fn read(w: &Workdir, file: &str) -> Vec<u8> {
    std::fs::read(w.join(file)).expect("read image")
}

/// `_create_img`: `qemu-img create -f FMT [-o OPTIONS] FILE SIZE`.
fn create(w: &Workdir, file: &str, format: &str, size: u64, options: &str) -> String {
    let size = size.to_string();
    let mut args = vec!["create", "-q", "-f", format];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([file, size.as_str()]);
    w.qemu_img(&args);
    file.to_string()
}

/// `_create_allocated_vmdk`: incompressible data converted with `-S 0`, so every grain is
/// allocated (oslo uses /dev/urandom; a fixed pseudo-random stream keeps runs repeatable).
fn allocated_vmdk(w: &Workdir, file: &str, subformat: &str, mib: u64) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..mib * MIB / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let raw = format!("{file}.raw");
    w.write(&raw, &data);
    let options = format!("subformat={subformat}");
    w.qemu_img(&[
        "convert", "-f", "raw", "-O", "vmdk", "-o", &options, "-S", "0", &raw, file,
    ]);
    file.to_string()
}

/// `_create_iso`: a zero-filled file of SIZE, made into an ISO with mkisofs. None (a skip)
/// when mkisofs is missing, except under `CI=true` where it fails.
fn iso(w: &Workdir, file: &str, size: u64, udf: bool) -> Option<String> {
    if Command::new("mkisofs").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mkisofs (Debian package genisoimage) is required"
        );
        eprintln!("skipping ISO cases: mkisofs is not installed");
        return None;
    }
    let input = format!("{file}.in");
    std::fs::File::create(w.join(&input))
        .and_then(|f| f.set_len(size))
        .expect("zero-filled input");
    let mut args = vec![];
    if udf {
        args.push("-udf");
    }
    args.extend(["-quiet", "-V", "TEST", "-o", file, &input]);
    let out = Command::new("mkisofs")
        .args(&args)
        .current_dir(w.path())
        .output()
        .expect("mkisofs");
    assert!(
        out.status.success(),
        "mkisofs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(w.join(&input)).expect("remove input");
    Some(file.to_string())
}

/// `test_format`, `test_vdi` and `test_subformat` for the qemu-img formats: each at 128 MiB,
/// 129 MiB and 7 MiB, detected with qemu-img's virtual size and safe.
#[test]
fn oslo_format_matrix() {
    let w = Workdir::new();
    let mut cases = Vec::new();
    for size in [128, 129, 7] {
        for (qemu_format, options, oslo_name, vm_name) in [
            ("qcow2", "", "qcow2", "qcow2"),
            ("vpc", "", "vhd", "vpc"),
            ("vhdx", "", "vhdx", "vhdx"),
            ("vmdk", "", "vmdk", "vmdk"),
            ("vmdk", "subformat=streamOptimized", "vmdk", "vmdk"),
            ("vdi", "", "vdi", "vdi"),
        ] {
            let file = format!("{size}M-{qemu_format}-{}.img", options.len());
            create(&w, &file, qemu_format, size * MIB, options);
            cases.push(Case::new(file, Oslo::Safe(oslo_name), Vm::Safe(vm_name)).with_qemu_size());
        }
        // `_create_luks`: qemu-img's LUKS, no passphrase given: oslo cannot look inside and
        // passes it; vmimage says `luks` with an `encrypted` warning, which is not unsafe.
        // `iter-time=10` (ms of PBKDF2, default 2000) changes only the iteration counts and
        // keeps each image from costing seconds of CPU.
        let file = format!("{size}M.luks");
        w.qemu_img(&[
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            "secret,id=sec0,data=secret-passphrase",
            "-o",
            "key-secret=sec0,iter-time=10",
            &file,
            &(size * MIB).to_string(),
        ]);
        cases.push(Case::new(file, Oslo::Safe("luks"), Vm::Safe("luks")).with_qemu_size());
    }
    // `_create_gpt`: ten sectors holding only a protective MBR (one 0xEE entry, start LBA 1).
    // oslo calls it `gpt`; vmimage calls it a raw disk with `partition-table: mbr`, and
    // qemu-img a raw disk.
    w.write("gpt.img", &mbr_with(&[(0, 0x00, 2, 0xEE, 1)], 10));
    cases.push(Case::new("gpt.img", Oslo::Safe("gpt"), Vm::Safe("raw")).with_qemu_size());
    verify(&w, &cases);
}

/// `test_subformat` for ISO 9660 and UDF, and `test_bad_iso_qcow2`: a qcow2 header in an
/// ISO's system area is two formats at once, which both refuse.
#[test]
fn oslo_iso() {
    let w = Workdir::new();
    let mut cases = Vec::new();
    for size in [128, 129, 7] {
        for udf in [false, true] {
            let file = format!("{size}M-{}.iso", if udf { "udf" } else { "9660" });
            let Some(file) = iso(&w, &file, size * MIB, udf) else {
                return;
            };
            cases.push(Case::new(file, Oslo::Safe("iso"), Vm::Safe("iso")));
        }
    }
    // `_generate_bad_iso`: the first 32 KiB of a 5 MiB qcow2, then a 64 MiB ISO from 32 KiB on.
    let qcow = create(&w, "orig.qcow2", "qcow2", 5 * MIB, "");
    let Some(orig_iso) = iso(&w, "orig.iso", 64 * MIB, false) else {
        return;
    };
    let mut bad = read(&w, &qcow);
    bad.truncate(32 * 1024);
    bad.extend_from_slice(&read(&w, &orig_iso)[32 * 1024..]);
    w.write("bad.iso", &bad);
    cases.push(Case::new(
        "bad.iso",
        Oslo::Fails("Multiple formats detected"),
        Vm::Unsafe("multiple-formats"),
    ));
    verify(&w, &cases);
    // `test_bad_iso_qcow2_multiple_matches`: both formats are named.
    let info = w.vmimage(&["info", "--json", "bad.iso"]).json();
    let mut detected: Vec<&str> = info["detected-formats"]
        .as_array()
        .expect("detected-formats")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    detected.sort_unstable();
    assert_eq!(detected, ["iso", "qcow2"]);
}

/// `test_qcow2_safety_checks`, `test_qcow2_feature_flag_checks` (its header patches applied
/// to a real qcow2), and two images the test does not build where oslo is wrong.
#[test]
fn oslo_qcow2() {
    let w = Workdir::new();
    w.write("backing", b"foobar");
    let mut cases = vec![
        Case::new(
            create(&w, "plain.qcow2", "qcow2", 5 * MIB, ""),
            Oslo::Safe("qcow2"),
            Vm::Safe("qcow2"),
        ),
        // A file that is not a qcow2 is not one.
        Case::new("backing", Oslo::Safe("raw"), Vm::Safe("raw")),
    ];
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "backing",
        "-F",
        "raw",
        "backed.qcow2",
        "5M",
    ]);
    cases.push(Case::new(
        "backed.qcow2",
        Oslo::Fails("backing_file"),
        Vm::Unsafe("backing-file"),
    ));
    cases.push(Case::new(
        create(
            &w,
            "datafile.qcow2",
            "qcow2",
            5 * MIB,
            "data_file=data,data_file_raw=on",
        ),
        Oslo::Fails("data_file"),
        Vm::Unsafe("data-file"),
    ));

    // The feature-flag patches: byte 0x48 is the most significant byte of the incompatible
    // features, 0x4F the least (bit 0 dirty, bit 7 unassigned); byte 7 is the version's low
    // byte.
    let patched = |name: &str, edits: &[(u64, u8)]| {
        create(&w, name, "qcow2", 5 * MIB, "");
        for &(offset, value) in edits {
            patch(&w, name, offset, &[value]);
        }
        name.to_string()
    };
    cases.push(Case::new(
        patched("bit56.qcow2", &[(0x48, 0x01)]),
        Oslo::Fails("Unknown QCOW2 features found"),
        Vm::Unsafe("unknown-incompatible-feature"),
    ));
    // The dirty bit: both pass it (vmimage with a `dirty-bit` warning), and QEMU opens it.
    cases.push(
        Case::new(
            patched("dirty.qcow2", &[(0x4F, 0x01)]),
            Oslo::Safe("qcow2"),
            Vm::Safe("qcow2"),
        )
        .with_qemu_size(),
    );
    cases.push(Case::new(
        patched("bit7.qcow2", &[(0x4F, 0x80)]),
        Oslo::Fails("Unknown QCOW2 features found"),
        Vm::Unsafe("unknown-incompatible-feature"),
    ));
    cases.push(Case::new(
        patched("v1.qcow2", &[(7, 1)]),
        Oslo::Fails("Unsupported qcow2 version"),
        Vm::Unsafe("invalid-header"),
    ));
    cases.push(Case::new(
        patched("v4.qcow2", &[(7, 4)]),
        Oslo::Fails("Unsupported qcow2 version"),
        Vm::Unsafe("invalid-header"),
    ));
    // Version 2 has no feature fields: the byte is past its 72-byte header, QEMU opens it.
    cases.push(
        Case::new(
            patched("v2.qcow2", &[(0x4F, 0x80), (7, 2)]),
            Oslo::Safe("qcow2"),
            Vm::Safe("qcow2"),
        )
        .with_qemu_size(),
    );

    // Not in oslo's test. Extended L2 (incompatible bit 4) is a valid QEMU feature since 5.2:
    // oslo refuses it (it allows bits 0-3 only), vmimage and QEMU accept it.
    cases.push(
        Case::new(
            create(&w, "el2.qcow2", "qcow2", 5 * MIB, "extended_l2=on"),
            Oslo::Fails("Unknown QCOW2 features found"),
            Vm::Safe("qcow2"),
        )
        .with_qemu_size(),
    );
    // Not in oslo's test. The corrupt bit (incompatible bit 1): QEMU opens such an image
    // read-only only, because its metadata was found inconsistent; oslo passes it, vmimage
    // refuses it.
    cases.push(Case::new(
        patched("corrupt.qcow2", &[(0x4F, 0x02)]),
        Oslo::Safe("qcow2"),
        Vm::Unsafe("corrupt-bit"),
    ));
    verify(&w, &cases);
}

/// oslo's VMDK tests that vmimage passes today.
#[test]
fn oslo_vmdk() {
    let w = Workdir::new();
    let mut cases = vec![
        // `test_vmdk_non_sparse_unsafe`: a monolithicFlat descriptor.
        Case::new(
            create(&w, "flat.vmdk", "vmdk", 5 * MIB, "subformat=monolithicFlat"),
            Oslo::Fails("Unsupported subformat"),
            Vm::Unsafe("vmdk-create-type"),
        ),
    ];
    // `test_vmdk_bad_descriptor_offset`: descriptorOffset (0x1C) moved to sector 2. QEMU opens
    // it; oslo and vmimage (OpenStack's grammar: the embedded descriptor at sector 1) refuse
    // it. oslo's test reads through `InspectWrapper`, which says "Wrong descriptor location";
    // `detect_file_format` stops reading earlier and its safety check says "No descriptor
    // found".
    for subformat in ["monolithicSparse", "streamOptimized"] {
        let file = format!("bad-desc-offset-{subformat}.vmdk");
        create(
            &w,
            &file,
            "vmdk",
            5 * MIB,
            &format!("subformat={subformat}"),
        );
        patch(&w, &file, 0x1C, &2u64.to_le_bytes());
        cases.push(Case::new(
            file,
            Oslo::Fails("descriptor"),
            Vm::Unsafe("invalid-header"),
        ));
    }

    // `test_vmdk_with_footer`: gdOffset (56) set to GD_AT_END and three zero sectors appended:
    // not a footer. Both refuse it, and QEMU ("Invalid footer").
    let footer_header = |file: &str| {
        create(&w, file, "vmdk", 5 * MIB, "subformat=streamOptimized");
        patch(&w, file, 56, &u64::MAX.to_le_bytes());
        let mut data = read(&w, file);
        data.extend_from_slice(&[0; 3 * 512]);
        w.write(file, &data);
        data
    };
    footer_header("zero-footer.vmdk");
    cases.push(Case::new(
        "zero-footer.vmdk",
        Oslo::Fails("footer"),
        Vm::Unsafe("vmdk-footer"),
    ));
    // Then the footer marker (type 3) and a footer that copies the header with the first byte
    // of gdOffset cleared, so gdOffset reads 0xffffffffffffff00. oslo passes it; QEMU looks
    // for the grain directory there and fails ("Could not read l1 table"), so vmimage must
    // refuse it.
    let mut data = footer_header("footer.vmdk");
    let header: Vec<u8> = data[..512].to_vec();
    let len = data.len();
    data[len - 3 * 512 + 12..len - 3 * 512 + 16].copy_from_slice(&3u32.to_le_bytes());
    data[len - 2 * 512..len - 512].copy_from_slice(&header);
    data[len - 2 * 512 + 56] = 0;
    w.write("footer.vmdk", &data);
    assert!(!w.qemu_img_any(&["info", "footer.vmdk"]).status.success());
    cases.push(Case::new(
        "footer.vmdk",
        Oslo::Safe("vmdk"),
        Vm::Unsafe("truncated"),
    ));

    // `test_vmdk_footer_checks`, on a real streamOptimized image: its header's gdOffset says
    // GD_AT_END, and the footer is the original header (with its real gdOffset) with one
    // field or marker changed. oslo's own test sets gdOffset 123, which QEMU would follow
    // into grain data; the real one keeps the image readable where the footer is right.
    for (name, edit, oslo, vm) in footer_variants() {
        let file = format!("footer-{name}.vmdk");
        create(&w, &file, "vmdk", 5 * MIB, "subformat=streamOptimized");
        let mut data = read(&w, &file);
        let mut footer = vec![0u8; 3 * 512];
        footer[512..1024].copy_from_slice(&data[..512]);
        footer[12] = 3;
        edit(&mut footer);
        data[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
        data.extend_from_slice(&footer);
        w.write(&file, &data);
        cases.push(Case::new(file, oslo, vm));
    }

    // `test_vmdk_safety_checks`: its descriptor lines written over a monolithicSparse image's
    // embedded descriptor. None has a CID line: QEMU refuses every one ("Invalid argument",
    // from vmdk_read_cid), so vmimage must refuse them all, including the one oslo passes.
    let mut lines = vec![
        "# a comment",
        "createType monolithicFlat",
        "",
        " ",
        "someUnknownThing=foo",
        "ddb whatever",
        "rw 0 somefile.vmdk",
    ];
    let mut descriptor_case = |name: &str, lines: &[&str], oslo: Oslo, vm: Vm| {
        let file = format!("desc-{name}.vmdk");
        create(&w, &file, "vmdk", 5 * MIB, "");
        let mut text = lines.join("\n").into_bytes();
        text.resize(512, 0);
        patch(&w, &file, 512, &text);
        assert!(!w.qemu_img_any(&["info", &file]).status.success());
        cases.push(Case::new(file, oslo, vm));
    };
    descriptor_case(
        "bad-create-type-line",
        &lines,
        Oslo::Fails("Unsupported subformat"),
        Vm::Unsafe("invalid-header"),
    );
    lines[1] = "createType=\"monolithicFlat\"";
    descriptor_case(
        "flat",
        &lines,
        Oslo::Fails("Unsupported subformat"),
        Vm::Unsafe("vmdk-create-type"),
    );
    lines[1] = "createType=\"monolithicSparse\"";
    // oslo passes this one: it has no CID.
    descriptor_case(
        "no-cid",
        &lines,
        Oslo::Safe("vmdk"),
        Vm::Unsafe("invalid-header"),
    );
    lines.push("wronly 2048 somefile2.vmdk");
    descriptor_case(
        "bad-access",
        &lines,
        Oslo::Fails("descriptor data"),
        Vm::Unsafe("invalid-header"),
    );
    *lines.last_mut().expect("line") = "rw 2048 /etc/hosts";
    descriptor_case(
        "path",
        &lines,
        Oslo::Fails("extent filenames"),
        Vm::Unsafe("vmdk-extent-path"),
    );
    lines.pop();
    lines.pop();
    descriptor_case(
        "no-extent",
        &lines,
        Oslo::Fails("No extents found"),
        Vm::Unsafe("invalid-header"),
    );
    verify(&w, &cases);
}

type FooterEdit = fn(&mut [u8]);

/// `test_vmdk_footer_checks`' variants: (name, edit of the 3-sector footer area, oslo, vmimage).
/// The area is the footer marker (sector 0), the footer (sector 1), the end-of-stream marker
/// (sector 2); a marker's size is at byte 8 and its type at byte 12.
fn footer_variants() -> Vec<(&'static str, FooterEdit, Oslo, Vm)> {
    vec![
        (
            "signature",
            |f| f[512..516].copy_from_slice(b"leak"),
            Oslo::Fails("signature"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "version",
            |f| f[516] = 2,
            Oslo::Fails("version"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "descriptor-offset",
            |f| f[512 + 28] += 1,
            Oslo::Fails("descriptor"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "descriptor-size",
            |f| f[512 + 36] += 1,
            Oslo::Fails("descriptor"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "another-footer",
            |f| f[512 + 56..512 + 64].copy_from_slice(&u64::MAX.to_le_bytes()),
            Oslo::Fails("another footer"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "marker-type",
            |f| f[12] = 7,
            Oslo::Fails("marker"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "marker-size",
            |f| f[8] = 1,
            Oslo::Fails("marker"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "marker-padding",
            |f| f[16..512].fill(1),
            Oslo::Fails("marker"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "eos-type",
            |f| f[1024 + 12] = 7,
            Oslo::Fails("marker"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "eos-size",
            |f| f[1024 + 8] = 1,
            Oslo::Fails("marker"),
            Vm::Unsafe("vmdk-footer"),
        ),
        (
            "eos-padding",
            |f| f[1024 + 16..].fill(1),
            Oslo::Fails("marker"),
            Vm::Unsafe("vmdk-footer"),
        ),
        ("good", |_| {}, Oslo::Safe("vmdk"), Vm::Safe("vmdk")),
    ]
}

/// `test_vmdk_bad_descriptor_mem_limit`: a fully allocated VMDK whose descriptorSize (0x24)
/// is patched to 2 MiB, so the descriptor area runs over grain data after the descriptor's
/// NUL. QEMU and oslo read the descriptor up to its first NUL and accept it (issue 13,
/// defect 4).
#[test]
fn oslo_vmdk_descriptor_area_past_its_nul() {
    let w = Workdir::new();
    let mut cases = Vec::new();
    for subformat in ["monolithicSparse", "streamOptimized"] {
        let file = allocated_vmdk(&w, &format!("mem-limit-{subformat}.vmdk"), subformat, 5);
        patch(&w, &file, 0x24, &((2 * MIB) / 512).to_le_bytes());
        cases.push(Case::new(file, Oslo::Safe("vmdk"), Vm::Safe("vmdk")).with_qemu_size());
    }
    verify(&w, &cases);
}

/// `test_qed_always_unsafe`, `test_invalid_data`, `test_params_passed_to_inspector`,
/// `test_gpt_mbr_check` (its MBRs as two-sector disks) and the LUKS version check.
#[test]
fn oslo_other_formats() {
    let w = Workdir::new();
    let mut cases = vec![
        Case::new(
            create(&w, "img.qed", "qed", 5 * MIB, ""),
            Oslo::Fails("not allowed"),
            Vm::Unsafe("qed"),
        ),
        Case::new(
            create(&w, "small.raw", "raw", 1024, ""),
            Oslo::Safe("raw"),
            Vm::Safe("raw"),
        ),
    ];
    // oslo feeds its own source file; this test feeds its own.
    w.write("source.rs", include_bytes!("oslo_inspector.rs"));
    cases.push(Case::new("source.rs", Oslo::Safe("raw"), Vm::Safe("raw")));

    // `test_gpt_mbr_check` mutates one two-sector buffer step by step; each step is a disk.
    let steps: [(&str, &[MbrEntry], Oslo, Vm); 8] = [
        (
            "efi",
            &[(0, 0, 2, 0xEE, 1)],
            Oslo::Safe("gpt"),
            Vm::Safe("raw"),
        ),
        (
            "boot-flag",
            &[(0, 0x0A, 2, 0xEE, 1)],
            Oslo::Fails("invalid boot flag"),
            Vm::Unsafe("partition-table"),
        ),
        (
            "no-partitions",
            &[(0, 0, 2, 0, 1)],
            Oslo::Fails("no partitions defined"),
            Vm::Unsafe("partition-table"),
        ),
        (
            "extra-partition",
            &[(0, 0, 2, 0xEE, 1), (1, 0, 2, 0xEE, 1)],
            Oslo::Fails("invalid extra partitions"),
            Vm::Unsafe("partition-table"),
        ),
        (
            "non-efi-any-chs",
            &[(1, 0, 2, 2, 1), (0, 0, 1, 0x8E, 1)],
            Oslo::Safe("gpt"),
            Vm::Safe("raw"),
        ),
        (
            "efi-start-chs",
            &[(1, 0, 2, 2, 1), (0, 0, 1, 0xEE, 1)],
            Oslo::Fails("invalid start CHS"),
            Vm::Unsafe("partition-table"),
        ),
        (
            "non-efi-any-lba",
            &[(1, 0, 2, 2, 1), (0, 0, 2, 0x8E, 2)],
            Oslo::Safe("gpt"),
            Vm::Safe("raw"),
        ),
        (
            "efi-start-lba",
            &[(1, 0, 2, 2, 1), (0, 0, 2, 0xEE, 2)],
            Oslo::Fails("invalid start LBA"),
            Vm::Unsafe("partition-table"),
        ),
    ];
    for (name, entries, oslo, vm) in steps {
        let file = format!("mbr-{name}.img");
        w.write(&file, &mbr_with(entries, 2));
        cases.push(Case::new(file, oslo, vm));
    }

    // `test_luks_no_passphrase_passes_safety`: a 10 MiB LUKS volume.
    let luks = |file: &str| {
        w.qemu_img(&[
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            "secret,id=sec0,data=secret-passphrase",
            "-o",
            "key-secret=sec0,iter-time=10",
            file,
            "10M",
        ]);
        file.to_string()
    };
    cases.push(Case::new(luks("v1.luks"), Oslo::Safe("luks"), Vm::Safe("luks")).with_qemu_size());
    // `test_check_version_v2_raises`: the version field (offset 6, big-endian) says 2.
    luks("v2.luks");
    patch(&w, "v2.luks", 6, &2u16.to_be_bytes());
    cases.push(Case::new(
        "v2.luks",
        Oslo::Fails("not supported"),
        Vm::Unsafe("unsupported-version"),
    ));
    verify(&w, &cases);
}

/// An MBR partition entry as oslo's `mkpte` writes it: (slot, boot flag, start head, type,
/// start LBA), size zero.
type MbrEntry = (usize, u8, u8, u8, u32);

/// `sectors` sectors ending the first with 0x55AA, with MBR partition entries
/// `(slot, boot flag, start head, type, start LBA)` and a zero size, as oslo's `mkpte` packs
/// them.
fn mbr_with(entries: &[MbrEntry], sectors: usize) -> Vec<u8> {
    let mut data = vec![0u8; 512 * sectors];
    data[510] = 0x55;
    data[511] = 0xAA;
    for &(slot, boot, start_head, os_type, start_lba) in entries {
        let e = 446 + slot * 16;
        data[e] = boot;
        data[e + 2] = start_head;
        data[e + 4] = os_type;
        data[e + 8..e + 12].copy_from_slice(&start_lba.to_le_bytes());
    }
    data
}
