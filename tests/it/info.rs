//! `vmimage info` against `qemu-img info --output=json`, one image per qemu-img option, plus
//! damaged headers.

use serde_json::{Value, json};

use crate::util::Workdir;

/// Top-level keys whose values must equal qemu-img's whenever qemu-img prints them.
const SAME_FACTS: [&str; 6] = [
    "virtual-size",
    "cluster-size",
    "dirty-flag",
    "backing-filename",
    "backing-filename-format",
    "actual-size",
];

/// Compares `vmimage info --json FILE` with `qemu-img info --output=json -f QEMU_FMT FILE`:
/// every fact both report must be equal, and every fact qemu-img reports must be present.
pub fn assert_info_matches_qemu(
    w: &Workdir,
    file: &str,
    qemu_format: &str,
    expect_format: &str,
) -> Value {
    let run = w.vmimage(&["info", "--json", file]);
    let ours = run.json();
    let qemu = w.qemu_info(file, Some(qemu_format));
    assert_eq!(
        ours["format"],
        json!(expect_format),
        "format of {file}: {ours:#}"
    );
    for key in SAME_FACTS {
        assert_eq!(
            ours.get(key),
            qemu.get(key),
            "{key} of {file} differs\nours: {ours:#}\nqemu: {qemu:#}"
        );
    }
    assert_eq!(
        ours["encrypted"],
        qemu.get("encrypted").cloned().unwrap_or(json!(false)),
        "encrypted of {file}"
    );
    assert_eq!(
        ours["snapshots"],
        qemu.get("snapshots").cloned().unwrap_or(json!([])),
        "snapshots of {file}"
    );
    assert_eq!(
        ours.get("format-specific"),
        qemu.get("format-specific"),
        "format-specific of {file} differs\nours: {ours:#}\nqemu: {qemu:#}"
    );
    let len = std::fs::metadata(w.join(file)).expect("stat").len();
    assert_eq!(ours["file-length"], json!(len), "file-length of {file}");
    ours
}

fn safe(v: &Value) -> bool {
    v["safety"]["safe"]
        .as_bool()
        .expect("safety.safe is a bool")
}

fn checks(v: &Value) -> Vec<String> {
    v["safety"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["check"].as_str().expect("check").to_string())
        .collect()
}

/// A raw source with data in a few places, for conversions.
fn raw_with_data(w: &Workdir, name: &str, size: &str) {
    w.qemu_img(&["create", "-f", "raw", name, size]);
    w.qemu_io(&[
        "-f",
        "raw",
        "-c",
        "write -P 0xab 0 1M",
        "-c",
        "write -P 0xcd 3M 64k",
        name,
    ]);
}

#[test]
fn qcow2_images_for_every_create_option_match_qemu_img() {
    let w = Workdir::new();
    raw_with_data(&w, "src.raw", "64M");
    let cases: &[(&str, &[&str])] = &[
        (
            "v2.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "compat=0.10",
                "v2.qcow2",
                "64M",
            ],
        ),
        (
            "v3.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "compat=1.1",
                "v3.qcow2",
                "1G",
            ],
        ),
        (
            "zlib.qcow2",
            &["convert", "-c", "-O", "qcow2", "src.raw", "zlib.qcow2"],
        ),
        (
            "zstd.qcow2",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                "compression_type=zstd",
                "src.raw",
                "zstd.qcow2",
            ],
        ),
        (
            "el2.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "extended_l2=on",
                "el2.qcow2",
                "64M",
            ],
        ),
        (
            "el2-128k.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "extended_l2=on,cluster_size=128k",
                "el2-128k.qcow2",
                "64M",
            ],
        ),
        (
            "c512.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=512",
                "c512.qcow2",
                "64M",
            ],
        ),
        (
            "c2m.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=2M",
                "c2m.qcow2",
                "64M",
            ],
        ),
        (
            "rc1.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "refcount_bits=1",
                "rc1.qcow2",
                "64M",
            ],
        ),
        (
            "rc64.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "refcount_bits=64",
                "rc64.qcow2",
                "64M",
            ],
        ),
        (
            "lazy.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "lazy_refcounts=on",
                "lazy.qcow2",
                "64M",
            ],
        ),
        (
            "prealloc.qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "preallocation=metadata",
                "prealloc.qcow2",
                "64M",
            ],
        ),
        (
            "odd.qcow2",
            &["create", "-f", "qcow2", "odd.qcow2", "1000000"],
        ),
        (
            "empty.qcow2",
            &["create", "-f", "qcow2", "empty.qcow2", "0"],
        ),
        (
            "huge.qcow2",
            &["create", "-f", "qcow2", "huge.qcow2", "64T"],
        ),
    ];
    for (file, args) in cases {
        w.qemu_img(args);
        let ours = assert_info_matches_qemu(&w, file, "qcow2", "qcow2");
        assert!(safe(&ours), "{file} should be safe: {ours:#}");
        w.vmimage(&["info", file]).expect_code(0);
    }
}

#[test]
fn qcow2_with_snapshots_and_bitmaps_match_qemu_img() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "snap.qcow2", "64M"]);
    w.qemu_io(&["-c", "write -P 1 0 128k", "snap.qcow2"]);
    w.qemu_img(&["snapshot", "-c", "first", "snap.qcow2"]);
    w.qemu_io(&["-c", "write -P 2 0 64k", "snap.qcow2"]);
    w.qemu_img(&["snapshot", "-c", "second snapshot", "snap.qcow2"]);
    let ours = assert_info_matches_qemu(&w, "snap.qcow2", "qcow2", "qcow2");
    assert_eq!(ours["snapshots"].as_array().map(Vec::len), Some(2));
    assert!(safe(&ours));

    w.qemu_img(&["create", "-f", "qcow2", "bm.qcow2", "64M"]);
    w.qemu_img(&["bitmap", "--add", "bm.qcow2", "b0"]);
    w.qemu_img(&[
        "bitmap",
        "--add",
        "-g",
        "128k",
        "--disable",
        "bm.qcow2",
        "b1",
    ]);
    let ours = assert_info_matches_qemu(&w, "bm.qcow2", "qcow2", "qcow2");
    assert!(safe(&ours));
}

#[test]
fn a_backing_file_is_reported_never_opened_and_unsafe() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "64M"]);
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "overlay.qcow2",
    ]);
    let ours = assert_info_matches_qemu(&w, "overlay.qcow2", "qcow2", "qcow2");
    assert!(!safe(&ours));
    assert!(checks(&ours).contains(&"backing-file".to_string()));
    // Remove the backing file: vmimage never opens it, so nothing changes.
    std::fs::remove_file(w.join("base.qcow2")).expect("rm");
    let run = w.vmimage(&["info", "--json", "overlay.qcow2"]);
    run.expect_code(1);
    assert_eq!(run.json()["backing-filename"], json!("base.qcow2"));
    assert!(run.stderr.contains("overlay.qcow2") && run.stderr.contains("backing-file"));
}

#[test]
fn an_external_data_file_is_reported_and_unsafe() {
    let w = Workdir::new();
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "data_file=ext.data,data_file_raw=on",
        "ext.qcow2",
        "64M",
    ]);
    let ours = assert_info_matches_qemu(&w, "ext.qcow2", "qcow2", "qcow2");
    assert!(!safe(&ours));
    assert!(checks(&ours).contains(&"data-file".to_string()));
    w.vmimage(&["info", "ext.qcow2"]).expect_code(1);
}

#[test]
fn raw_images_match_qemu_img_including_data_past_4_gib_and_empty_files() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "raw", "big.raw", "6G"]);
    w.qemu_io(&["-f", "raw", "-c", "write -P 0x5a 5G 1M", "big.raw"]);
    let ours = assert_info_matches_qemu(&w, "big.raw", "raw", "raw");
    assert!(safe(&ours));
    w.write("empty.raw", b"");
    let ours = assert_info_matches_qemu(&w, "empty.raw", "raw", "raw");
    assert_eq!(ours["virtual-size"], json!(0));
    assert!(safe(&ours));
    w.write("tiny.raw", b"x");
    assert_info_matches_qemu(&w, "tiny.raw", "raw", "raw");
}

#[test]
fn a_missing_file_is_exit_2_with_one_sentence_naming_it() {
    let w = Workdir::new();
    let run = w.vmimage(&["info", "nope.qcow2"]);
    run.expect_code(2);
    assert!(run.stderr.contains("nope.qcow2"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let run = w.vmimage(&["info", "."]);
    run.expect_code(2);
}
