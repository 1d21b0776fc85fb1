//! `vmimage metadata` for each target: valid bodies filled from images made with qemu-img,
//! each documented rule broken, the sidecar round trip through `vmimage verify`, and the
//! `openstack image create` command line.

use std::process::Command;

use serde_json::json;

use crate::util::{Run, Workdir};

/// A qcow2 image of 1.5 GiB virtual size: min_disk must default to 2.
fn qcow2(w: &Workdir) {
    w.qemu_img(&["create", "-q", "-f", "qcow2", "disk.qcow2", "1536M"]);
    w.qemu_io(&["-c", "write -P 0x7e 0 128k", "disk.qcow2"]);
}

fn metadata(w: &Workdir, args: &[&str]) -> Run {
    let mut all = vec!["metadata"];
    all.extend_from_slice(args);
    w.vmimage(&all)
}

/// The rules named on stderr, in order (`... [rule]` at the end of each line).
fn broken_rules(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter_map(|l| {
            l.rsplit_once('[')
                .map(|(_, r)| r.trim_end_matches(']').to_string())
        })
        .collect()
}

fn md5sum(path: &std::path::Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_glance_body_is_filled_from_the_file_and_carries_no_read_only_field() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(
        &w,
        &[
            "disk.qcow2",
            "--target",
            "glance",
            "--name",
            "ubuntu-24.04",
            "--os-distro",
            "ubuntu",
            "--os-version",
            "24.04",
            "--architecture",
            "x86_64",
            "--firmware",
            "uefi",
            "--visibility",
            "private",
            "--min-ram",
            "512",
            "--tag",
            "golden",
            "--protected",
        ],
    );
    run.expect_code(0);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let body = run.json();
    assert_eq!(
        body,
        json!({"name": "ubuntu-24.04", "disk_format": "qcow2", "container_format": "bare",
               "min_disk": 2, "min_ram": 512, "visibility": "private", "protected": true,
               "tags": ["golden"], "os_distro": "ubuntu", "os_version": "24.04",
               "architecture": "x86_64", "hw_firmware_type": "uefi"})
    );
}

#[test]
fn the_sidecar_holds_the_digests_and_verify_accepts_it() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(
        &w,
        &[
            "disk.qcow2",
            "--target",
            "glance",
            "--sidecar",
            "disk.sidecar.json",
        ],
    );
    run.expect_code(0);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("disk.sidecar.json")).unwrap()).unwrap();
    assert_eq!(sidecar["checksum"], json!(md5sum(&w.join("disk.qcow2"))));
    assert_eq!(sidecar["os_hash_algo"], "sha512");
    assert_eq!(sidecar["virtual_size"], json!(1536u64 << 20));
    assert_eq!(sidecar["min_disk"], json!(2));
    let verify = w.vmimage(&[
        "verify",
        "--json",
        "disk.qcow2",
        "--against",
        "disk.sidecar.json",
    ]);
    verify.expect_code(0);
    assert_eq!(verify.json()["record"]["source"], "sidecar");
}

#[test]
fn a_min_disk_below_the_virtual_size_is_refused() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(&w, &["disk.qcow2", "--target", "glance", "--min-disk", "1"]);
    run.expect_code(1);
    assert_eq!(broken_rules(&run), ["min-disk-too-small"]);
    assert!(run.stdout.is_empty());
}

#[test]
fn glance_lists_every_broken_rule_and_writes_nothing() {
    let w = Workdir::new();
    qcow2(&w);
    let long = "n".repeat(256);
    let run = metadata(
        &w,
        &[
            "disk.qcow2",
            "--target",
            "glance",
            "--name",
            &long,
            "--min-disk",
            "-1",
            "--min-ram",
            "-1",
            "--visibility",
            "everyone",
            "--firmware",
            "bios2",
            "--url",
            "https://x/y",
            "--sidecar",
            "side.json",
        ],
    );
    run.expect_code(1);
    assert_eq!(
        broken_rules(&run),
        [
            "name-length",
            "min-disk-range",
            "min-ram-range",
            "visibility",
            "firmware",
            "unsupported-flag"
        ]
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        !w.join("side.json").exists(),
        "nothing written on a broken rule"
    );
}

#[test]
fn broken_rules_are_json_on_stdout_with_json() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(&w, &["disk.qcow2", "--target", "scp", "--json"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["target"], "scp");
    let rules: Vec<_> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["rule"].clone())
        .collect();
    assert_eq!(
        rules,
        [
            json!("name-required"),
            json!("os-distro-required"),
            json!("url-required")
        ]
    );
}

/// `FILE --target TARGET`, the `defaults` flags that `extra` does not give, then `extra`.
fn with_defaults<'a>(
    target: &'a str,
    defaults: &[(&'a str, &'a str)],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["disk.qcow2", "--target", target];
    for (flag, value) in defaults {
        if !extra.contains(flag) {
            args.extend([*flag, *value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

fn scp_ok<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    with_defaults(
        "scp",
        &[
            ("--name", "golden image_1"),
            ("--os-distro", "rocky"),
            (
                "--url",
                "https://object-store.kr-west1.s.samsungsdscloud.com/acct/bucket/golden.qcow2",
            ),
        ],
        extra,
    )
}

#[test]
fn a_valid_scp_body_follows_the_image_create_request() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(&w, &scp_ok(&["--tag", "env=prod", "--min-ram", "2048"]));
    run.expect_code(0);
    assert_eq!(
        run.json(),
        json!({"name": "golden image_1", "os_distro": "rocky",
               "url": "https://object-store.kr-west1.s.samsungsdscloud.com/acct/bucket/golden.qcow2",
               "disk_format": "qcow2", "container_format": "bare", "min_disk": 2, "min_ram": 2048,
               "protected": false, "visibility": "private", "tags": [{"key": "env", "value": "prod"}]})
    );
}

#[test]
fn scp_refuses_each_broken_rule() {
    let w = Workdir::new();
    qcow2(&w);
    let many_tags: Vec<String> = (0..51).map(|i| format!("--tag=k{i}=v")).collect();
    let long_key = format!("--tag={}=v", "k".repeat(129));
    let long_name = "a".repeat(256);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--name", "dots.not.allowed"], "name-charset"),
        (vec!["--name", &long_name], "name-length"),
        (vec!["--url", "https://o/bucket/disk.img"], "url-extension"),
        (vec!["--os-distro", "debian"], "os-distro"),
        (vec!["--min-disk", "12289"], "min-disk-range"),
        (vec!["--min-ram", "-1"], "min-ram-range"),
        (vec!["--visibility", "public"], "visibility"),
        (vec![&long_key], "tag-key-length"),
        (vec!["--firmware", "uefi"], "unsupported-flag"),
    ];
    for (extra, rule) in cases {
        let run = metadata(&w, &scp_ok(&extra));
        run.expect_code(1);
        assert_eq!(broken_rules(&run), [rule], "{extra:?}: {}", run.stderr);
    }
    let tag_refs: Vec<&str> = many_tags.iter().map(String::as_str).collect();
    let run = metadata(&w, &scp_ok(&tag_refs));
    run.expect_code(1);
    assert_eq!(broken_rules(&run), ["tag-count"]);
}

#[test]
fn scp_refuses_a_raw_file_and_says_how_to_convert_it() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "disk.qcow2", "16M"]);
    let run = metadata(&w, &scp_ok(&[]));
    run.expect_code(1);
    assert_eq!(broken_rules(&run), ["disk-format"]);
    assert!(
        run.stderr.contains("vmimage convert IN OUT -O qcow2"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_valid_ims_body_has_its_platform_and_os_type() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(
        &w,
        &[
            "disk.qcow2",
            "--target",
            "ims",
            "--name",
            "CentOS 7.3 64bit",
            "--os-distro",
            "centos",
            "--os-version",
            "CentOS 7.3 64bit",
            "--firmware",
            "bios",
            "--architecture",
            "x86_64",
            "--min-ram",
            "2048",
            "--url",
            "my-bucket:images/centos.qcow2",
        ],
    );
    run.expect_code(0);
    assert_eq!(
        run.json(),
        json!({"name": "CentOS 7.3 64bit", "disk_format": "qcow2", "container_format": "bare",
               "min_disk": 2, "min_ram": 2048, "visibility": "private", "protected": false,
               "__os_type": "Linux", "__platform": "CentOS", "__os_version": "CentOS 7.3 64bit",
               "architecture": "x86", "hw_firmware_type": "bios",
               "image_url": "my-bucket:images/centos.qcow2"})
    );
}

#[test]
fn ims_min_disk_is_at_least_one_gb() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "qcow2", "small.qcow2", "64M"]);
    let run = metadata(&w, &["small.qcow2", "--target", "ims", "--name", "small"]);
    run.expect_code(0);
    assert_eq!(run.json()["min_disk"], json!(1));
}

#[test]
fn ims_refuses_each_broken_rule() {
    let w = Workdir::new();
    qcow2(&w);
    let long_name = "a".repeat(129);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--name", " padded"], "name-charset"),
        (vec!["--name", &long_name], "name-length"),
        (vec!["--min-disk", "0"], "min-disk-range"),
        (vec!["--min-disk", "1025"], "min-disk-range"),
        (vec!["--min-ram", "-5"], "min-ram-range"),
        (vec!["--os-distro", "plan9"], "platform"),
        (vec!["--firmware", "efi"], "firmware"),
        (vec!["--architecture", "sparc"], "architecture"),
        (vec!["--visibility", "public"], "visibility"),
        (
            vec!["--url", "https://obs.example/bucket/disk.qcow2"],
            "url-format",
        ),
    ];
    for (extra, rule) in cases {
        let run = metadata(&w, &with_defaults("ims", &[("--name", "ok name")], &extra));
        run.expect_code(1);
        assert_eq!(broken_rules(&run), [rule], "{extra:?}: {}", run.stderr);
    }
}

#[test]
fn ims_refuses_a_format_it_does_not_store() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "vmdk", "disk.vmdk", "64M"]);
    let run = metadata(&w, &["disk.vmdk", "--target", "ims", "--name", "x"]);
    run.expect_code(1);
    assert_eq!(broken_rules(&run), ["disk-format"]);
}

#[test]
fn an_unsafe_image_breaks_a_rule_of_every_target() {
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
    for target in ["glance", "scp", "ims"] {
        let run = metadata(&w, &["top.qcow2", "--target", target]);
        run.expect_code(1);
        assert!(
            broken_rules(&run).contains(&"image-unsafe".to_string()),
            "{target}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("backing-file"), "{}", run.stderr);
    }
}

#[test]
fn the_openstack_command_is_shell_quoted_and_for_glance_only() {
    let w = Workdir::new();
    qcow2(&w);
    let run = metadata(
        &w,
        &[
            "disk.qcow2",
            "--target",
            "glance",
            "--name",
            "Bob's image",
            "--visibility",
            "community",
            "--os-distro",
            "debian",
            "--openstack-command",
        ],
    );
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "openstack image create --disk-format qcow2 --container-format bare --min-disk 2 --min-ram 0 --community --property os_distro=debian --file disk.qcow2 'Bob'\\''s image'\n"
    );
    // The line is valid shell: sh splits it back into the same words.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s\\n' {}",
            run.stdout.trim_end().trim_start_matches("openstack ")
        ))
        .output()
        .unwrap();
    let words = String::from_utf8(out.stdout).unwrap();
    assert_eq!(words.lines().last(), Some("Bob's image"));

    let run = metadata(
        &w,
        &["disk.qcow2", "--target", "glance", "--openstack-command"],
    );
    run.expect_code(1);
    assert_eq!(broken_rules(&run), ["name-required"]);
    let run = metadata(
        &w,
        &["disk.qcow2", "--target", "scp", "--openstack-command"],
    );
    run.expect_code(2);
}

#[test]
fn unreadable_files_and_unknown_targets_exit_2() {
    let w = Workdir::new();
    qcow2(&w);
    metadata(&w, &["missing.qcow2", "--target", "glance"]).expect_code(2);
    metadata(&w, &["disk.qcow2", "--target", "aws"]).expect_code(2);
    metadata(&w, &["disk.qcow2"]).expect_code(2);
    let run = metadata(
        &w,
        &[
            "disk.qcow2",
            "--target",
            "glance",
            "--sidecar",
            "no/such/dir/s.json",
        ],
    );
    run.expect_code(2);
    assert!(run.stdout.is_empty());
}
