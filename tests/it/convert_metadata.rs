//! `convert --metadata` never destroys a file it did not create (issue 13, defect 6): OUT, the
//! metadata body and the sidecar are written aside and moved into place together, so a rule
//! that breaks, a metadata file that cannot be written, or a failure at any write or rename
//! leaves every existing file byte for byte as it was, and no temporary file behind.

use crate::util::Workdir;

/// The files that exist before each conversion, with their old content.
const OLD: [(&str, &[u8]); 3] = [
    ("out.qcow2", b"the user's previous image\n"),
    ("body.json", b"{\"previous\": \"body\"}\n"),
    ("sidecar.json", b"{\"previous\": \"sidecar\"}\n"),
];

fn setup() -> Workdir {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "in.raw", "4M"]);
    w.qemu_io(&["-f", "raw", "-c", "write -P 0x31 64k 1M", "in.raw"]);
    for (name, content) in OLD {
        w.write(name, content);
    }
    w
}

fn args<'a>(body: &'a str, sidecar: &'a str) -> Vec<&'a str> {
    vec![
        "convert",
        "in.raw",
        "out.qcow2",
        "-O",
        "qcow2",
        "--metadata",
        body,
        "--sidecar",
        sidecar,
        "--target",
        "glance",
        "--name",
        "golden",
    ]
}

/// Every old file is still there, byte for byte, and nothing else is.
fn assert_untouched(w: &Workdir, context: &str) {
    for (name, content) in OLD {
        assert_eq!(
            std::fs::read(w.join(name)).unwrap(),
            content,
            "{context}: {name} was changed"
        );
    }
    assert_eq!(
        w.listing(),
        ["body.json", "in.raw", "out.qcow2", "sidecar.json"],
        "{context}: files left behind"
    );
}

#[test]
fn a_metadata_rule_that_breaks_after_converting_leaves_every_existing_file_untouched() {
    // No rule the output's bytes decide can break on a real image (the virtual size the rules
    // read is known before converting), so the test hook makes the final validation fail.
    let w = setup();
    let out = w.vmimage_with_fault(&args("body.json", "sidecar.json"), Some("metadata-rule"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("virtual size"), "{stderr}");
    assert_untouched(&w, "metadata-rule");
}

#[test]
fn a_rule_broken_before_converting_writes_nothing() {
    let w = setup();
    let mut a = args("body.json", "sidecar.json");
    a.extend(["--min-disk", "-1"]);
    let out = w.vmimage_with_fault(&a, None);
    assert_eq!(out.status.code(), Some(1));
    assert_untouched(&w, "--min-disk -1");
}

#[test]
fn a_metadata_file_that_cannot_be_written_leaves_every_existing_file_untouched() {
    // The body, then the sidecar, in a directory that does not exist: before the fix OUT was
    // already renamed over the user's previous image when the metadata write failed.
    let w = setup();
    for (body, sidecar) in [
        ("missing/body.json", "sidecar.json"),
        ("body.json", "missing/sidecar.json"),
    ] {
        let out = w.vmimage_with_fault(&args(body, sidecar), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("missing/") && stderr.contains("cannot write the metadata"),
            "{stderr}"
        );
        assert_untouched(&w, body);
    }
}

#[test]
fn a_failure_at_every_write_or_rename_leaves_every_existing_file_untouched() {
    let w = setup();
    let a = args("body.json", "sidecar.json");
    let mut points = 0;
    for n in 1.. {
        assert!(n < 1000, "still failing after {n} injected failures");
        let fault = format!("fail-io={n}");
        let out = w.vmimage_with_fault(&a, Some(&fault));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{fault}: {stderr}");
        if out.status.code() == Some(0) {
            points = n - 1;
            break;
        }
        assert_eq!(out.status.code(), Some(2), "{fault}: {stderr}");
        assert!(stderr.contains("Input/output error"), "{fault}: {stderr}");
        assert_untouched(&w, &fault);
    }
    // The output's points plus, per metadata file, creating, writing, syncing and renaming.
    let plain = ["convert", "in.raw", "plain.qcow2", "-O", "qcow2"];
    let plain_points = (1..)
        .find(|n| {
            let f = format!("fail-io={n}");
            w.vmimage_with_fault(&plain, Some(&f)).status.code() == Some(0)
        })
        .unwrap()
        - 1;
    std::fs::remove_file(w.join("plain.qcow2")).unwrap();
    assert_eq!(points, plain_points + 2 * 4, "write points");
    // Then every file is the new one.
    let cmp = w.qemu_img_any(&["compare", "-f", "raw", "-F", "qcow2", "in.raw", "out.qcow2"]);
    assert!(cmp.status.success());
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("body.json")).unwrap()).unwrap();
    assert_eq!(body["name"], "golden");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("sidecar.json")).unwrap()).unwrap();
    assert_eq!(sidecar["virtual_size"], 4 << 20);
    assert_eq!(
        w.listing(),
        ["body.json", "in.raw", "out.qcow2", "sidecar.json"]
    );
}

#[test]
fn the_output_and_its_metadata_must_be_different_files() {
    let w = setup();
    for (body, sidecar) in [("out.qcow2", "sidecar.json"), ("body.json", "body.json")] {
        let out = w.vmimage_with_fault(&args(body, sidecar), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("three different files"), "{stderr}");
        assert_untouched(&w, body);
    }
}
