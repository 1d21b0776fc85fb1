//! `vmimage verify` against images made with qemu-img, with records in every accepted shape
//! (the fixtures in `testdata/records/`, their digests and sizes replaced by the image's, as
//! `md5sum` and `sha512sum` print them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::util::{Run, Workdir};

const GIB: u64 = 1 << 30;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/records")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("read fixture")).expect("fixture JSON")
}

/// `md5sum`/`sha512sum` of a file: the oracle for digests.
fn coreutils_digest(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().expect("coreutils");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// What the oracle says about an image file.
struct Facts {
    md5: String,
    sha512: String,
    size: u64,
    virtual_size: u64,
}

fn facts(w: &Workdir, file: &str, qemu_format: &str) -> Facts {
    let p = w.join(file);
    let info = w.qemu_info(file, Some(qemu_format));
    Facts {
        md5: coreutils_digest("md5sum", &p),
        sha512: coreutils_digest("sha512sum", &p),
        size: std::fs::metadata(&p).unwrap().len(),
        virtual_size: info["virtual-size"].as_u64().unwrap(),
    }
}

/// A qcow2 image of 1.5 GiB virtual size with some data, so that min_disk must be 2.
fn qcow2_image(w: &Workdir) -> Facts {
    w.qemu_img(&["create", "-q", "-f", "qcow2", "disk.qcow2", "1536M"]);
    w.qemu_io(&[
        "-c",
        "write -P 0x5a 0 256k",
        "-c",
        "write -P 0x11 1G 64k",
        "disk.qcow2",
    ]);
    facts(w, "disk.qcow2", "qcow2")
}

/// Replaces the fixture's facts with `f` (top level, or under `properties` for the
/// openstack CLI's os_hash fields). For IMS, `__image_size` carries the size.
fn fill(mut record: Value, f: &Facts, disk_format: &str) -> Value {
    let obj = record.as_object_mut().unwrap();
    obj.insert("checksum".into(), json!(f.md5));
    obj.insert("size".into(), json!(f.size));
    obj.insert("virtual_size".into(), json!(f.virtual_size));
    obj.insert("min_disk".into(), json!(f.virtual_size.div_ceil(GIB)));
    obj.insert("disk_format".into(), json!(disk_format));
    match obj.get_mut("properties") {
        Some(Value::Object(p)) => {
            p.insert("os_hash_value".into(), json!(f.sha512));
        }
        Some(Value::String(s)) => {
            *s = format!(
                "os_distro='alma', os_hash_algo='sha512', os_hash_value='{}', os_hidden='False'",
                f.sha512
            );
        }
        _ => {
            obj.insert("os_hash_value".into(), json!(f.sha512));
        }
    }
    record
}

fn write_json(w: &Workdir, name: &str, v: &Value) -> PathBuf {
    w.write(name, serde_json::to_string_pretty(v).unwrap().as_bytes())
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn verify_json(w: &Workdir, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let run = w.vmimage(&all);
    let report = run.json();
    (run, report)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_matching_record_verifies_in_every_accepted_shape() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    for name in [
        "glance-image.json",
        "scp-image-show-seed001.json",
        "scp-cli-long-seed000.json",
        "openstack-image-show.json",
        "openstack-image-show-old-client.json",
        "sidecar.json",
    ] {
        write_json(&w, "record.json", &fill(fixture(name), &f, "qcow2"));
        let (run, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
        run.expect_code(0);
        assert_eq!(report["verdict"], "verified", "{name}: {report:#}");
        for id in [
            "checksum",
            "os_hash_value",
            "size",
            "virtual_size",
            "disk_format",
            "min_disk",
            "safety",
        ] {
            assert_eq!(
                check(&report, id)["status"],
                "pass",
                "{name} {id}: {report:#}"
            );
        }
        assert_eq!(report["image"]["digests"]["md5"], json!(f.md5), "{name}");
        assert_eq!(
            report["image"]["digests"]["sha512"],
            json!(f.sha512),
            "{name}"
        );
    }
}

#[test]
fn an_ims_listing_entry_verifies_by_id_with_image_size_in_bytes_as_a_string() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let mut listing = fixture("ims-cloudimages-seed003.json");
    let second = &mut listing["images"][1];
    second["checksum"] = json!(f.md5);
    second["__image_size"] = json!(f.size.to_string());
    second["disk_format"] = json!("qcow2");
    second["min_disk"] = json!(2);
    write_json(&w, "ims.json", &listing);
    let (run, report) = verify_json(
        &w,
        &[
            "disk.qcow2",
            "--against",
            "ims.json",
            "--id",
            "0328c25e-c840-4496-81ac-c4e01b214b1f",
        ],
    );
    run.expect_code(0);
    assert_eq!(report["record"]["source"], "ims");
    assert_eq!(check(&report, "checksum")["status"], "pass");
    assert_eq!(check(&report, "size")["status"], "pass");
    // IMS documents virtual_size as unavailable and sends null: skipped with that reason.
    let vs = check(&report, "virtual_size");
    assert_eq!(vs["status"], "skip");
    assert!(
        vs["message"].as_str().unwrap().contains("unavailable"),
        "{vs}"
    );
}

#[test]
fn the_ims_seed_example_is_unverified_because_its_checksum_is_a_placeholder() {
    let w = Workdir::new();
    qcow2_image(&w);
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/records/ims-cloudimages-seed003.json");
    let (run, report) = verify_json(
        &w,
        &[
            "disk.qcow2",
            "--against",
            path.to_str().unwrap(),
            "--name",
            "CentOS 7.3 64bit vivado",
        ],
    );
    run.expect_code(1);
    assert_eq!(report["verdict"], "unverified");
    let c = check(&report, "checksum");
    assert_eq!(c["status"], "skip");
    assert!(
        c["message"].as_str().unwrap().contains("placeholder"),
        "{c}"
    );
    for id in ["size", "virtual_size", "os_hash_value"] {
        assert_eq!(check(&report, id)["status"], "skip", "{id}");
    }
    assert!(run.stderr.contains("unverified"), "{}", run.stderr);
}

#[test]
fn each_mismatched_field_fails_its_check_and_the_verify() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let good = fill(fixture("glance-image.json"), &f, "qcow2");
    let cases: Vec<(&str, Value)> = vec![
        ("checksum", json!("0123456789abcdef0123456789abcdef")),
        ("os_hash_value", json!("ab".repeat(64))),
        ("size", json!(f.size + 1)),
        ("virtual_size", json!(f.virtual_size + 512)),
        ("min_disk", json!(1)),
        ("container_format", json!("ova")),
        ("status", json!("deactivated")),
    ];
    for (field, value) in cases {
        let mut record = good.clone();
        record[field] = value;
        write_json(&w, "record.json", &record);
        let (run, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
        run.expect_code(1);
        assert_eq!(report["verdict"], "failed", "{field}");
        let failed: Vec<_> = statuses(&report)
            .into_iter()
            .filter(|(_, s)| s == "fail")
            .map(|(id, _)| id)
            .collect();
        assert_eq!(failed, [field], "{field}: {report:#}");
        assert!(run.stderr.contains(field), "{}", run.stderr);
    }
}

#[test]
fn a_digest_that_is_not_hex_fails_rather_than_skips() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let mut record = fill(fixture("glance-image.json"), &f, "qcow2");
    record["checksum"] = json!("not-a-digest");
    write_json(&w, "record.json", &record);
    let (run, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
    run.expect_code(1);
    assert_eq!(check(&report, "checksum")["status"], "fail");
}

#[test]
fn placeholders_and_absent_values_skip_with_the_reason_and_never_pass() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let mut record = fill(fixture("glance-image.json"), &f, "qcow2");
    record["checksum"] = json!("d41d8cd98f00b204e9800998ecf8427e");
    record["os_hash_value"] = json!(
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
    );
    record["size"] = Value::Null;
    record["virtual_size"] = json!("");
    record.as_object_mut().unwrap().remove("status");
    write_json(&w, "record.json", &record);
    let (run, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
    run.expect_code(1);
    assert_eq!(report["verdict"], "unverified");
    for (id, reason) in [
        ("checksum", "placeholder"),
        ("os_hash_value", "placeholder"),
        ("size", "null"),
        ("virtual_size", "empty"),
        ("status", "has no status"),
    ] {
        let c = check(&report, id);
        assert_eq!(c["status"], "skip", "{id}");
        assert!(c["message"].as_str().unwrap().contains(reason), "{id}: {c}");
    }
}

#[test]
fn a_queued_glance_image_is_unverified_and_its_status_fails() {
    let w = Workdir::new();
    qcow2_image(&w);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/records/glance-queued.json");
    let (run, report) = verify_json(&w, &["disk.qcow2", "--against", path.to_str().unwrap()]);
    run.expect_code(1);
    assert_eq!(check(&report, "status")["status"], "fail");
    assert_eq!(check(&report, "checksum")["status"], "skip");
}

#[test]
fn a_record_of_a_converted_image_is_not_comparable_and_unverified() {
    let w = Workdir::new();
    qcow2_image(&w);
    // The cloud converted the upload to raw (Glance image_conversion): its record describes
    // the raw bytes.
    w.qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "disk.qcow2",
        "disk.raw",
    ]);
    let raw = facts(&w, "disk.raw", "raw");
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &raw, "raw"),
    );

    let (run, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
    run.expect_code(1);
    assert_eq!(report["verdict"], "unverified");
    for id in ["checksum", "os_hash_value", "size", "disk_format"] {
        assert_eq!(
            check(&report, id)["status"],
            "not_comparable",
            "{id}: {report:#}"
        );
    }
    // The guest-visible size survives the conversion.
    assert_eq!(check(&report, "virtual_size")["status"], "pass");

    // The converted bytes themselves verify.
    let (run, report) = verify_json(&w, &["disk.raw", "--against", "record.json"]);
    run.expect_code(0);
    assert_eq!(report["image"]["virtual_size"], json!(raw.size));
}

#[test]
fn matching_bytes_recorded_under_the_wrong_format_fail_the_format_check() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &f, "raw"),
    );
    let (run, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
    run.expect_code(1);
    assert_eq!(check(&report, "checksum")["status"], "pass");
    assert_eq!(check(&report, "disk_format")["status"], "fail");
}

#[test]
fn a_vhd_record_matches_qemus_vpc_format() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "vpc", "disk.vhd", "64M"]);
    let f = facts(&w, "disk.vhd", "vpc");
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &f, "vhd"),
    );
    let (run, report) = verify_json(&w, &["disk.vhd", "--against", "record.json"]);
    run.expect_code(0);
    assert_eq!(check(&report, "disk_format")["status"], "pass");
}

#[test]
fn an_unsafe_image_fails_even_when_its_digests_match() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "qcow2", "base.qcow2", "64M"]);
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    let f = facts(&w, "top.qcow2", "qcow2");
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &f, "qcow2"),
    );
    let (run, report) = verify_json(&w, &["top.qcow2", "--against", "record.json"]);
    run.expect_code(1);
    assert_eq!(check(&report, "checksum")["status"], "pass");
    let safety = check(&report, "safety");
    assert_eq!(safety["status"], "fail");
    assert!(
        safety["message"].as_str().unwrap().contains("backing-file"),
        "{safety}"
    );
}

#[test]
fn flags_alone_verify_and_override_a_record() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let size = f.size.to_string();
    let (run, report) = verify_json(
        &w,
        &[
            "disk.qcow2",
            "--checksum",
            &f.md5.to_uppercase(),
            "--size",
            &size,
            "--disk-format",
            "qcow2",
        ],
    );
    run.expect_code(0);
    assert_eq!(report["record"]["source"], "flags");
    assert_eq!(check(&report, "os_hash_value")["status"], "skip");

    let (run, _) = verify_json(
        &w,
        &[
            "disk.qcow2",
            "--os-hash-algo",
            "sha512",
            "--os-hash-value",
            &"0".repeat(128),
        ],
    );
    run.expect_code(1);

    // A flag overrides the record's value, and the report says so.
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &f, "qcow2"),
    );
    let (run, report) = verify_json(
        &w,
        &["disk.qcow2", "--against", "record.json", "--size", "1"],
    );
    run.expect_code(1);
    let c = check(&report, "size");
    assert_eq!(c["status"], "fail");
    assert!(c["message"].as_str().unwrap().contains("--size"), "{c}");
}

#[test]
fn the_record_can_come_from_standard_input() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let record =
        serde_json::to_vec(&fill(fixture("scp-image-show-seed001.json"), &f, "qcow2")).unwrap();
    let run = w.vmimage_stdin(
        &["verify", "--json", "disk.qcow2", "--against", "-"],
        Some(&record),
    );
    run.expect_code(0);
    assert_eq!(run.json()["record"]["source"], "scp");
}

#[test]
fn the_human_report_is_a_table_with_one_row_per_check_and_the_verdict() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &f, "qcow2"),
    );
    let run = w.vmimage(&["verify", "disk.qcow2", "--against", "record.json"]);
    run.expect_code(0);
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| ["pass", "fail", "warn", "skip", "not_comparable"].contains(&s))
        })
        .collect();
    // Nine checks and `signature` (skipped: the record has no img_signature properties).
    assert_eq!(rows.len(), 10, "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l == "verdict: verified"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_json_report_has_the_documented_shape() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    write_json(
        &w,
        "record.json",
        &fill(fixture("glance-image.json"), &f, "qcow2"),
    );
    let (_, report) = verify_json(&w, &["disk.qcow2", "--against", "record.json"]);
    for key in ["path", "format", "size", "virtual_size", "digests"] {
        assert!(report["image"].get(key).is_some(), "image.{key}");
    }
    for key in ["source", "id", "name"] {
        assert!(report["record"].get(key).is_some(), "record.{key}");
    }
    for c in report["checks"].as_array().unwrap() {
        for key in ["id", "status", "expected", "actual", "message"] {
            assert!(c.get(key).is_some(), "check {key}: {c}");
        }
    }
    assert_eq!(
        report["record"]["id"],
        "70a599e0-31e7-49b7-b260-868f441e862b"
    );
    assert_eq!(report["image"]["virtual_size"], json!(f.virtual_size));
}

/// Parses a JUnit file and returns (testcase name, child element name or "") pairs.
fn junit_cases(xml: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(xml).expect("JUnit XML is well-formed");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    root.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            let child = n
                .children()
                .find(|c| c.is_element())
                .map(|c| c.tag_name().name().to_string())
                .unwrap_or_default();
            (n.attribute("name").unwrap().to_string(), child)
        })
        .collect()
}

#[test]
fn junit_reports_are_well_formed_with_one_testcase_per_check() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    let mut record = fill(fixture("glance-image.json"), &f, "qcow2");
    record["size"] = json!(1);
    record["os_hash_value"] = Value::Null;
    record["name"] = json!("<evil> & \"quoted\" \u{1}");
    write_json(&w, "record.json", &record);
    let run = w.vmimage(&[
        "verify",
        "disk.qcow2",
        "--against",
        "record.json",
        "--junit",
        "report.xml",
    ]);
    run.expect_code(1);
    let xml = std::fs::read_to_string(w.join("report.xml")).unwrap();
    let cases = junit_cases(&xml);
    assert_eq!(cases.len(), 11, "ten checks and the verdict: {xml}");
    let kind = |name: &str| cases.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(kind("size"), "failure");
    assert_eq!(kind("os_hash_value"), "skipped");
    assert_eq!(kind("checksum"), "");
    assert_eq!(kind("verdict"), "failure");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("2"));
    // Only the report is left: the temporary file was renamed over it.
    let leftovers: Vec<_> = std::fs::read_dir(w.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("vmimage-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn an_unverified_junit_report_fails_its_verdict_testcase() {
    let w = Workdir::new();
    qcow2_image(&w);
    let run = w.vmimage(&["verify", "disk.qcow2", "--size", "12", "--junit", "r.xml"]);
    run.expect_code(1);
    let cases = junit_cases(&std::fs::read_to_string(w.join("r.xml")).unwrap());
    assert!(
        cases.contains(&("verdict".into(), "failure".into())),
        "{cases:?}"
    );
}

#[test]
fn unreadable_inputs_exit_2_with_one_sentence() {
    let w = Workdir::new();
    let f = qcow2_image(&w);
    write_json(
        &w,
        "good.json",
        &fill(fixture("glance-image.json"), &f, "qcow2"),
    );
    w.write("notjson.json", b"{\"id\": ");
    w.write("shape.json", b"{\"hello\": \"world\"}");
    let listing = fixture("ims-cloudimages-seed003.json");
    write_json(&w, "listing.json", &listing);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["missing.qcow2", "--against", "good.json"],
            "missing.qcow2",
        ),
        (
            vec!["disk.qcow2", "--against", "missing.json"],
            "missing.json",
        ),
        (vec!["disk.qcow2", "--against", "notjson.json"], "not JSON"),
        (
            vec!["disk.qcow2", "--against", "shape.json"],
            "not an image record",
        ),
        (
            vec!["disk.qcow2", "--against", "listing.json"],
            "choose one with --id or --name",
        ),
        (
            vec!["disk.qcow2", "--against", "listing.json", "--id", "nope"],
            "has no image with id",
        ),
        (vec!["disk.qcow2"], "nothing to verify against"),
        (vec!["disk.qcow2", "--checksum", "xyz"], "--checksum"),
        (
            vec![
                "disk.qcow2",
                "--os-hash-algo",
                "crc32",
                "--os-hash-value",
                "00",
            ],
            "--os-hash-algo",
        ),
        (vec!["disk.qcow2", "--id", "x"], "--against"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["verify"];
        all.extend(args.iter().copied());
        let run = w.vmimage(&all);
        run.expect_code(2);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    // The ambiguous listing names its candidates.
    let run = w.vmimage(&["verify", "disk.qcow2", "--against", "listing.json"]);
    assert!(
        run.stderr
            .contains("bc6bed6e-ba3a-4447-afcc-449174a3eb52 \"CentOS 7.3 64bit vivado\""),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn a_raw_image_verifies_with_its_file_length_as_virtual_size() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "disk.raw", "3M"]);
    w.qemu_io(&["-f", "raw", "-c", "write -P 0x33 0 4k", "disk.raw"]);
    let f = facts(&w, "disk.raw", "raw");
    assert_eq!(f.virtual_size, f.size);
    write_json(
        &w,
        "record.json",
        &fill(fixture("openstack-image-show.json"), &f, "raw"),
    );
    let (run, report) = verify_json(&w, &["disk.raw", "--against", "record.json"]);
    run.expect_code(0);
    assert_eq!(check(&report, "virtual_size")["status"], "pass");
}

#[test]
fn an_odd_length_raw_image_verifies_against_the_virtual_size_glance_records() {
    // Glance's virtual_size for a raw upload is what OpenStack's format inspector counts: the
    // stream's exact length. QEMU (and `vmimage info`) round a raw file up to whole sectors.
    let w = Workdir::new();
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 1000u32).map(|i| i as u8).collect();
    w.write("odd.raw", &data);
    let f = facts(&w, "odd.raw", "raw");
    assert_eq!(f.virtual_size, f.size.next_multiple_of(512));
    let glance = match crate::oslo_inspector::glance_format_and_virtual_size(&w, "odd.raw") {
        Some((name, size)) => {
            assert_eq!(name, "raw");
            size
        }
        None => f.size,
    };
    assert_eq!(glance, f.size, "oslo's inspector counts the bytes");
    for (recorded, status) in [
        (glance, "pass"),
        (f.virtual_size, "pass"),
        (f.size + 1, "fail"),
    ] {
        let mut record = fill(fixture("openstack-image-show.json"), &f, "raw");
        record["virtual_size"] = json!(recorded);
        write_json(&w, "record.json", &record);
        let (run, report) = verify_json(&w, &["odd.raw", "--against", "record.json"]);
        let vs = check(&report, "virtual_size");
        assert_eq!(vs["status"], status, "{recorded}: {vs:#}");
        run.expect_code(if status == "pass" { 0 } else { 1 });
    }
}
