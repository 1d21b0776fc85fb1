//! `vmimage info` on every format but qcow2 and raw, against `qemu-img info --output=json -f
//! FMT`: one image per `qemu-img create` option, the unsafe kinds (descriptor files, QED,
//! polyglots) and damaged headers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::info::assert_info_matches_qemu;
use crate::util::{Workdir, assert_rule};

fn safe(v: &Value) -> bool {
    v["safety"]["safe"].as_bool().expect("safety.safe")
}

fn checks(v: &Value) -> Vec<String> {
    v["safety"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["check"].as_str().expect("check").to_string())
        .collect()
}

fn has(v: &Value, check: &str) -> bool {
    checks(v).iter().any(|c| c == check)
}

/// Runs `vmimage info --json FILE`, asserts the exit status, returns the report.
fn info(w: &Workdir, file: &str, code: i32) -> Value {
    let run = w.vmimage(&["info", "--json", file]);
    run.expect_code(code);
    run.json()
}

/// Patches `bytes` into `file` at `offset`.
fn poke(w: &Workdir, file: &str, offset: usize, bytes: &[u8]) {
    let path = w.join(file);
    let mut d = std::fs::read(&path).expect("read");
    if d.len() < offset + bytes.len() {
        d.resize(offset + bytes.len(), 0);
    }
    d[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(&path, d).expect("write");
}

fn create(w: &Workdir, fmt: &str, opts: &str, file: &str, size: &str) {
    let mut args = vec!["create", "-q", "-f", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([file, size]);
    w.qemu_img(&args);
}

#[test]
fn vhd_fixed_and_dynamic_images_match_qemu_img() {
    let w = Workdir::new();
    for (file, opts) in [
        ("fixed.vhd", "subformat=fixed"),
        ("fixed-force.vhd", "subformat=fixed,force_size=on"),
        ("dynamic.vhd", "subformat=dynamic"),
        ("dynamic-force.vhd", "subformat=dynamic,force_size=on"),
    ] {
        create(&w, "vpc", opts, file, "64M");
        let ours = assert_info_matches_qemu(&w, file, "vpc", "vpc");
        assert!(safe(&ours), "{file}: {ours:#}");
    }
    // QEMU's CHS geometry rounds 64 MiB up; force_size (creator "qem2") keeps it exact.
    assert_eq!(info(&w, "fixed.vhd", 0)["virtual-size"], json!(67_125_248));
    assert_eq!(
        info(&w, "fixed-force.vhd", 0)["virtual-size"],
        json!(67_108_864)
    );
    // The gap this closes: qemu-img's probe takes a fixed VHD for raw.
    assert_eq!(w.qemu_info("fixed.vhd", None)["format"], json!("raw"));

    // Data written by QEMU allocates blocks; the description is unchanged.
    w.qemu_io(&["-f", "vpc", "-c", "write -P 7 1M 3M", "dynamic.vhd"]);
    assert_info_matches_qemu(&w, "dynamic.vhd", "vpc", "vpc");
}

#[test]
fn a_fixed_vhd_of_a_partitioned_disk_is_a_safe_vpc_with_a_partition_table() {
    let w = Workdir::new();
    w.write("disk.raw", &mbr_disk(4 << 20));
    w.qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed",
        "disk.raw",
        "disk.vhd",
    ]);
    let ours = assert_info_matches_qemu(&w, "disk.vhd", "vpc", "vpc");
    assert_eq!(ours["partition-table"], json!("mbr"));
    assert!(safe(&ours), "{ours:#}");
}

#[test]
fn vhdx_images_match_qemu_img() {
    let w = Workdir::new();
    for (file, opts, size) in [
        ("dynamic.vhdx", "", "64M"),
        ("fixed.vhdx", "subformat=fixed", "64M"),
        ("block1m.vhdx", "block_size=1M", "100M"),
        ("odd.vhdx", "", "1000000"),
        ("big.vhdx", "", "2T"),
    ] {
        create(&w, "vhdx", opts, file, size);
        let ours = assert_info_matches_qemu(&w, file, "vhdx", "vhdx");
        assert!(safe(&ours), "{file}: {ours:#}");
    }
    w.qemu_io(&["-f", "vhdx", "-c", "write -P 3 0 9M", "dynamic.vhdx"]);
    assert_info_matches_qemu(&w, "dynamic.vhdx", "vhdx", "vhdx");
}

#[test]
fn vmdk_sparse_and_stream_optimized_images_match_qemu_img() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "src.raw", "64M"]);
    w.qemu_io(&["-f", "raw", "-c", "write -P 0xab 0 1M", "src.raw"]);
    for (file, opts) in [
        ("mono.vmdk", ""),
        ("stream.vmdk", "subformat=streamOptimized"),
        ("compat6.vmdk", "compat6=on"),
        ("zeroed.vmdk", "zeroed_grain=on"),
    ] {
        create(&w, "vmdk", opts, file, "64M");
        let ours = assert_info_matches_qemu(&w, file, "vmdk", "vmdk");
        assert!(safe(&ours), "{file}: {ours:#}");
    }
    w.qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        "src.raw",
        "data-stream.vmdk",
    ]);
    let ours = assert_info_matches_qemu(&w, "data-stream.vmdk", "vmdk", "vmdk");
    assert!(safe(&ours));
    assert_eq!(
        ours["format-specific"]["data"]["create-type"],
        json!("streamOptimized")
    );

    // VMware writes streamOptimized images whose header defers to a footer; QEMU reads the
    // footer, and so does vmimage.
    let d = std::fs::read(w.join("data-stream.vmdk")).expect("read");
    let mut header = d[..512].to_vec();
    let mut vmware = d[..d.len() - 512].to_vec();
    vmware[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut marker = vec![0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    vmware.extend(&marker);
    vmware.extend(&header);
    vmware.extend(vec![0u8; 512]);
    w.write("footer.vmdk", &vmware);
    let ours = assert_info_matches_qemu(&w, "footer.vmdk", "vmdk", "vmdk");
    assert!(safe(&ours), "{ours:#}");
    // A footer that disagrees with the header is refused.
    header[12..20].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let n = vmware.len();
    vmware[n - 1024..n - 512].copy_from_slice(&header);
    w.write("bad-footer.vmdk", &vmware);
    let ours = info(&w, "bad-footer.vmdk", 1);
    assert!(has(&ours, "vmdk-footer"), "{ours:#}");
}

/// oslo.utils' `_test_vmdk_bad_descriptor_mem_limit`: a qemu-img VMDK of 5 MiB of random
/// data (`qemu-img convert -S 0`, so every grain is allocated) whose header then claims a
/// 2 MiB descriptor (4096 sectors at offset 0x24). The descriptor area now runs from the
/// text through its NUL padding into the grain table and grain data: not text, but not
/// descriptor either, since the descriptor ends at its first NUL for QEMU and oslo.utils.
#[test]
fn a_vmdk_whose_descriptor_area_holds_non_text_past_the_nul_is_valid() {
    let w = Workdir::new();
    // Random data (xorshift64), as oslo.utils' `dd if=/dev/urandom`: the streamOptimized image
    // stays 5 MiB, longer than the 2 MiB descriptor area. A compressible one ends inside that
    // area, which QEMU reads as zeros past the end of the file: valid too.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..5 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    w.write("src.raw", &random);
    let compressible: Vec<u8> = (0..5u32 << 20).map(|i| (i / 4096) as u8).collect();
    w.write("compressible.raw", &compressible);
    for (file, subformat, source) in [
        ("sparse.vmdk", "monolithicSparse", "src.raw"),
        ("stream.vmdk", "streamOptimized", "src.raw"),
        ("short-stream.vmdk", "streamOptimized", "compressible.raw"),
    ] {
        let opt = format!("subformat={subformat}");
        w.qemu_img(&[
            "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", &opt, "-S", "0", source, file,
        ]);
        poke(&w, file, 0x24, &4096u64.to_le_bytes());
        let ours = assert_info_matches_qemu(&w, file, "vmdk", "vmdk");
        assert!(safe(&ours), "{file}: {ours:#}");
        assert_eq!(ours["virtual-size"], json!(5 << 20), "{file}");

        // Text after the NUL that would break the grammar (a line that is no comment, field
        // or extent, then non-ASCII bytes) is ignored as well.
        let d = std::fs::read(w.join(file)).expect("read");
        let nul = 512 + d[512..].iter().position(|&b| b == 0).expect("NUL");
        poke(&w, file, nul + 1, b"this is not a field\n\xff\xfe\n");
        let ours = assert_info_matches_qemu(&w, file, "vmdk", "vmdk");
        assert!(safe(&ours), "{file} with text after the NUL: {ours:#}");
    }
}

#[test]
fn a_vmdk_with_a_parent_matches_qemu_img_and_is_unsafe() {
    let w = Workdir::new();
    create(&w, "vmdk", "", "base.vmdk", "64M");
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        "child.vmdk",
    ]);
    let ours = assert_info_matches_qemu(&w, "child.vmdk", "vmdk", "vmdk");
    assert!(has(&ours, "backing-file"));
    assert_rule(&ours, "vmdk.parent");
    assert_eq!(ours["backing-filename"], json!("base.vmdk"));
    info(&w, "child.vmdk", 1);
}

/// The facts of a descriptor-file VMDK that can be known without opening its extents, against
/// qemu-img (which opens them).
fn assert_descriptor_matches_qemu(w: &Workdir, file: &str) -> Value {
    let ours = info(w, file, 1);
    let qemu = w.qemu_info(file, Some("vmdk"));
    assert_eq!(ours["format"], json!("vmdk"));
    assert_eq!(ours["virtual-size"], qemu["virtual-size"], "{file}");
    let (o, q) = (
        &ours["format-specific"]["data"],
        &qemu["format-specific"]["data"],
    );
    for key in ["cid", "parent-cid", "create-type"] {
        assert_eq!(o[key], q[key], "{key} of {file}");
    }
    let (oe, qe) = (
        o["extents"].as_array().expect("extents"),
        q["extents"].as_array().expect("extents"),
    );
    assert_eq!(oe.len(), qe.len(), "{file}");
    for (a, b) in oe.iter().zip(qe) {
        for key in ["filename", "format", "virtual-size"] {
            assert_eq!(a[key], b[key], "extent {key} of {file}");
        }
    }
    assert!(has(&ours, "vmdk-extent-path"), "{ours:#}");
    assert!(has(&ours, "vmdk-create-type"), "{ours:#}");
    ours
}

#[test]
fn vmdk_descriptor_files_are_unsafe_and_their_extents_never_opened() {
    let w = Workdir::new();
    std::fs::create_dir(w.join("sub")).expect("mkdir");
    for (file, opts, size) in [
        ("flat.vmdk", "subformat=monolithicFlat", "64M"),
        ("sub/split.vmdk", "subformat=twoGbMaxExtentSparse", "5G"),
        ("splitflat.vmdk", "subformat=twoGbMaxExtentFlat", "3G"),
    ] {
        create(&w, "vmdk", opts, file, size);
        assert_descriptor_matches_qemu(&w, file);
    }
    let abs = w.join("flat.vmdk").display().to_string();
    assert_descriptor_matches_qemu(&w, &abs);
    // Remove every extent: nothing changes, since vmimage never opened them.
    let before = info(&w, "sub/split.vmdk", 1);
    assert_rule(&before, "vmdk.extent-file");
    assert_rule(&before, "vmdk.create-type");
    for entry in std::fs::read_dir(w.join("sub")).expect("ls") {
        let p = entry.expect("entry").path();
        if p.file_name().is_some_and(|n| n != "split.vmdk") {
            std::fs::remove_file(p).expect("rm");
        }
    }
    assert_eq!(info(&w, "sub/split.vmdk", 1), before);
}

/// Runs `vmimage ARGS` and fails (instead of hanging) if it does not finish within a
/// generous bound: a process that opened a FIFO for reading would block forever.
fn vmimage_without_hanging(w: &Workdir, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
        .args(args)
        .current_dir(w.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmimage");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmimage {args:?} blocked: it opened an extent file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().expect("exit status"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_descriptor_naming_host_files_is_refused_without_opening_them() {
    let w = Workdir::new();
    let status = Command::new("mkfifo")
        .arg(w.join("trap.fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let fifo = w.join("trap.fifo").display().to_string();
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 8 FLAT \"/etc/passwd\" 0\nRW 8 FLAT \"{fifo}\" 0\nRW 8 FLAT \"trap.fifo\" 0\nRW 8 FLAT \"does-not-exist.vmdk\" 0\n"
    );
    w.write("evil.vmdk", desc.as_bytes());
    let (code, stdout, stderr) = vmimage_without_hanging(&w, &["info", "--json", "evil.vmdk"]);
    assert_eq!(code, 1, "{stderr}");
    let ours: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(ours["format"], json!("vmdk"));
    assert!(!safe(&ours));
    let paths = ours["safety"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] == json!("vmdk-extent-path"))
        .count();
    assert_eq!(paths, 4, "{ours:#}");
    assert!(stderr.contains("/etc/passwd"), "{stderr}");
    assert!(!stderr.contains("No such file"), "{stderr}");
    let extents = ours["format-specific"]["data"]["extents"]
        .as_array()
        .expect("extents");
    assert_eq!(extents[0]["filename"], json!("/etc/passwd"));
    assert_eq!(extents[1]["filename"], json!(fifo));
    assert_eq!(ours["virtual-size"], json!(4 * 8 * 512));
}

#[test]
fn vdi_images_match_qemu_img() {
    let w = Workdir::new();
    for (file, opts, size) in [
        ("dynamic.vdi", "", "64M"),
        ("static.vdi", "static=on", "64M"),
        ("odd.vdi", "", "1000000"),
    ] {
        create(&w, "vdi", opts, file, size);
        let ours = assert_info_matches_qemu(&w, file, "vdi", "vdi");
        assert!(safe(&ours), "{file}: {ours:#}");
    }
    w.qemu_io(&["-f", "vdi", "-c", "write -P 9 2M 3M", "dynamic.vdi"]);
    assert_info_matches_qemu(&w, "dynamic.vdi", "vdi", "vdi");
    // A block size QEMU does not read (VDI header offset 0x178) is refused by its own rule.
    poke(&w, "dynamic.vdi", 0x178, &(2u32 << 20).to_le_bytes());
    assert_rule(&info(&w, "dynamic.vdi", 1), "vdi.block-size");
}

/// QEMU's legacy qcow (version 1): `qcow`, as qemu-img names it, with qemu-img's size, cluster
/// size, backing file and encryption, refused by the `qcow` rule; `check` exits 63 as
/// `qemu-img check` does ("This image format does not support checks"), and `convert` refuses
/// it with the finding.
#[test]
fn qcow_version_1_images_match_qemu_img_and_are_refused() {
    let w = Workdir::new();
    create(&w, "qcow", "", "plain.qcow", "10M");
    w.qemu_io(&["-f", "qcow", "-c", "write -P 7 1M 64k", "plain.qcow"]);
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow",
        "-b",
        "plain.qcow",
        "-F",
        "qcow",
        "child.qcow",
    ]);
    w.qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=sec0,data=123456",
        "-f",
        "qcow",
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        "aes.qcow",
        "1M",
    ]);
    // A size that is not a sector multiple (qemu-img create rounds it up; QEMU reads it down).
    create(&w, "qcow", "", "odd.qcow", "10M");
    poke(&w, "odd.qcow", 24, &1000u64.to_be_bytes());
    for (file, rules) in [
        ("plain.qcow", &["qcow"][..]),
        ("child.qcow", &["qcow", "backing-file"][..]),
        ("aes.qcow", &["qcow", "encrypted"][..]),
        ("odd.qcow", &["qcow"][..]),
    ] {
        let qemu = w.qemu_info(file, None);
        assert_eq!(qemu["format"], json!("qcow"), "{file}: {qemu:#}");
        let ours = assert_info_matches_qemu(&w, file, "qcow", "qcow");
        assert_eq!(checks(&ours), rules, "{file}: {ours:#}");
        assert!(!safe(&ours), "{file}");
        w.vmimage(&["info", file]).expect_code(1);

        // qemu-img cannot open the AES image without its key (exit 1, "Parameter
        // 'encrypt.key-secret' is required"); with it, or for vmimage, which needs no key to
        // read the header, the format has no check.
        let qemu_check = w.qemu_img_any(&["check", file]);
        let qemu_code = if file == "aes.qcow" { 1 } else { 63 };
        assert_eq!(
            qemu_check.status.code(),
            Some(qemu_code),
            "qemu-img check {file}"
        );
        let run = w.vmimage(&["check", file]);
        run.expect_code(63);
        assert!(
            run.stderr.contains("does not support checks"),
            "{}",
            run.stderr
        );

        let run = w.vmimage(&["convert", file, "out.qcow2", "-O", "qcow2"]);
        run.expect_code(1);
        assert!(run.stderr.contains("legacy qcow"), "{}", run.stderr);
        assert!(!w.join("out.qcow2").exists());
    }
    assert_eq!(
        info(&w, "odd.qcow", 1)["virtual-size"],
        json!(512),
        "QEMU counts whole sectors"
    );

    // A header QEMU refuses to open: invalid-header, and check exits 1 as qemu-img's does.
    create(&w, "qcow", "", "bad.qcow", "10M");
    poke(&w, "bad.qcow", 32, &[17]);
    assert_eq!(
        w.qemu_img_any(&["check", "bad.qcow"]).status.code(),
        Some(1)
    );
    w.vmimage(&["check", "bad.qcow"]).expect_code(1);
    let ours = info(&w, "bad.qcow", 1);
    assert_eq!(checks(&ours), ["qcow", "invalid-header"], "{ours:#}");
}

#[test]
fn qed_images_are_described_like_qemu_img_and_refused() {
    let w = Workdir::new();
    create(&w, "qed", "", "plain.qed", "64M");
    create(
        &w,
        "qed",
        "cluster_size=4k,table_size=16",
        "small.qed",
        "64M",
    );
    create(&w, "raw", "", "base.raw", "64M");
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qed",
        "-b",
        "base.raw",
        "-F",
        "raw",
        "child.qed",
    ]);
    for file in ["plain.qed", "small.qed", "child.qed"] {
        let ours = assert_info_matches_qemu(&w, file, "qed", "qed");
        assert!(has(&ours, "qed"), "{ours:#}");
        crate::util::assert_rule(&ours, "inspect.qed-refused");
        info(&w, file, 1);
    }
    let ours = info(&w, "child.qed", 1);
    assert_eq!(ours["backing-filename-format"], json!("raw"));
    assert!(has(&ours, "backing-file"));
    assert_rule(&ours, "qed.backing-file");
}

/// `qemu-img create -f luks` with a secret (PBKDF2 is benchmarked, so each image takes
/// about two seconds whatever `iter-time` says).
fn create_luks(w: &Workdir, fmt: &str, opts: &str, file: &str, size: &str) {
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        fmt,
        "--object",
        "secret,id=sec0,data=password",
        "-o",
        opts,
        file,
        size,
    ]);
}

#[test]
fn a_luks_container_matches_qemu_img() {
    let w = Workdir::new();
    create_luks(
        &w,
        "luks",
        "key-secret=sec0,iter-time=10",
        "disk.luks",
        "64M",
    );
    let ours = assert_info_matches_qemu(&w, "disk.luks", "luks", "luks");
    assert_eq!(ours["encrypted"], json!(true));
    assert!(safe(&ours), "{ours:#}");
    assert!(has(&ours, "encrypted"));
    assert_rule(&ours, "luks.encrypted");

    // LUKS2 is refused as an unsupported version, never taken for raw.
    std::fs::copy(w.join("disk.luks"), w.join("v2.luks")).expect("cp");
    poke(&w, "v2.luks", 6, &2u16.to_be_bytes());
    let ours = info(&w, "v2.luks", 1);
    assert_eq!(ours["format"], json!("luks"));
    assert!(has(&ours, "unsupported-version"), "{ours:#}");
    assert_rule(&ours, "luks.version");
}

#[test]
fn a_luks_container_with_essiv_matches_qemu_img() {
    let w = Workdir::new();
    create_luks(
        &w,
        "luks",
        "key-secret=sec0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1",
        "essiv.luks",
        "16M",
    );
    let ours = assert_info_matches_qemu(&w, "essiv.luks", "luks", "luks");
    assert_eq!(
        ours["format-specific"]["data"]["ivgen-hash-alg"],
        json!("sha256")
    );
}

#[test]
fn a_luks_encrypted_qcow2_matches_qemu_img() {
    let w = Workdir::new();
    create_luks(
        &w,
        "qcow2",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        "enc.qcow2",
        "64M",
    );
    let ours = assert_info_matches_qemu(&w, "enc.qcow2", "qcow2", "qcow2");
    let encrypt = &ours["format-specific"]["data"]["encrypt"];
    assert_eq!(encrypt["format"], json!("luks"));
    assert_eq!(encrypt["cipher-alg"], json!("aes-256"));
    assert!(safe(&ours));
    assert!(has(&ours, "encrypted"));

    // A damaged LUKS header inside the qcow2 is reported; `encrypt` keeps only its format.
    let d = std::fs::read(w.join("enc.qcow2")).expect("read");
    let at = d
        .windows(6)
        .position(|x| x == b"LUKS\xba\xbe")
        .expect("LUKS header");
    std::fs::copy(w.join("enc.qcow2"), w.join("bad.qcow2")).expect("cp");
    poke(&w, "bad.qcow2", at + 6, &2u16.to_be_bytes());
    let ours = info(&w, "bad.qcow2", 1);
    assert!(has(&ours, "unsupported-version"), "{ours:#}");
    assert_eq!(
        ours["format-specific"]["data"]["encrypt"],
        json!({"format": "luks"})
    );

    // Legacy AES encryption has no header to report.
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=password",
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        "aes.qcow2",
        "64M",
    ]);
    let ours = assert_info_matches_qemu(&w, "aes.qcow2", "qcow2", "qcow2");
    assert!(has(&ours, "encrypted"));
}

/// A minimal ISO 9660 image: 16 empty sectors, a primary volume descriptor and a set
/// terminator, padded to `blocks` 2 KiB blocks.
fn iso9660(blocks: u32) -> Vec<u8> {
    let mut d = vec![0u8; blocks as usize * 2048];
    let pvd = 16 * 2048;
    d[pvd] = 1;
    d[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    d[pvd + 6] = 1;
    d[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
    d[pvd + 84..pvd + 88].copy_from_slice(&blocks.to_be_bytes());
    d[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
    d[pvd + 130..pvd + 132].copy_from_slice(&2048u16.to_be_bytes());
    d[pvd + 2048] = 255;
    d[pvd + 2049..pvd + 2054].copy_from_slice(b"CD001");
    d
}

#[test]
fn iso_images_are_iso_and_sized_like_raw() {
    let w = Workdir::new();
    w.write("disc.iso", &iso9660(100));
    let ours = assert_info_matches_qemu(&w, "disc.iso", "raw", "iso");
    assert!(safe(&ours), "{ours:#}");
    // A UDF volume recognition sequence alone.
    let mut udf = vec![0u8; 100 * 2048];
    for (i, id) in [b"BEA01", b"NSR03", b"TEA01"].iter().enumerate() {
        let at = (16 + i) * 2048 + 1;
        udf[at..at + 5].copy_from_slice(*id);
    }
    w.write("disc.udf", &udf);
    assert_info_matches_qemu(&w, "disc.udf", "raw", "iso");
    // A hybrid ISO (MBR in the system area) is still a safe ISO.
    let mut hybrid = iso9660(100);
    hybrid[..512].copy_from_slice(&mbr_disk(512));
    w.write("hybrid.iso", &hybrid);
    let ours = assert_info_matches_qemu(&w, "hybrid.iso", "raw", "iso");
    assert_eq!(ours["partition-table"], json!("mbr"));
    assert!(safe(&ours), "{ours:#}");
    // A disc cut short of its volume size.
    w.write("short.iso", &iso9660(100)[..60 * 2048]);
    let ours = info(&w, "short.iso", 1);
    assert!(has(&ours, "truncated"));
}

/// `len` bytes of raw disk with a DOS MBR: one bootable Linux partition from sector 2048.
fn mbr_disk(len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[446] = 0x80;
    d[447..450].copy_from_slice(&[0x20, 0x21, 0x00]);
    d[450] = 0x83;
    d[454..458].copy_from_slice(&2048u32.to_le_bytes());
    d[458..462].copy_from_slice(&8192u32.to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xaa;
    d
}

/// Writes a protective MBR (one 0xEE entry at CHS 0/2/0, LBA 1) into `d`.
fn protective_mbr(d: &mut [u8]) {
    d[446..462].fill(0);
    d[447..450].copy_from_slice(&[0x00, 0x02, 0x00]);
    d[450] = 0xee;
    d[454..458].copy_from_slice(&1u32.to_le_bytes());
    d[458..462].copy_from_slice(&u32::MAX.to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xaa;
}

#[test]
fn raw_disks_with_mbr_and_gpt_are_raw_with_a_partition_table() {
    let w = Workdir::new();
    w.write("mbr.raw", &mbr_disk(8 << 20));
    let ours = assert_info_matches_qemu(&w, "mbr.raw", "raw", "raw");
    assert_eq!(ours["partition-table"], json!("mbr"));
    assert!(safe(&ours), "{ours:#}");

    let mut gpt = vec![0u8; 8 << 20];
    protective_mbr(&mut gpt);
    gpt[512..520].copy_from_slice(b"EFI PART");
    w.write("gpt.raw", &gpt);
    let ours = assert_info_matches_qemu(&w, "gpt.raw", "raw", "raw");
    assert_eq!(ours["partition-table"], json!("gpt"));
    assert!(safe(&ours), "{ours:#}");
}

#[test]
fn polyglots_are_unsafe() {
    let w = Workdir::new();
    // A qcow2 that is also an ISO 9660 image.
    create(&w, "qcow2", "", "iso.qcow2", "64M");
    poke(&w, "iso.qcow2", 0x8001, b"CD001");
    let ours = info(&w, "iso.qcow2", 1);
    assert_eq!(ours["format"], json!("qcow2"));
    assert!(has(&ours, "multiple-formats"), "{ours:#}");
    crate::util::assert_rule(&ours, "inspect.polyglot");
    assert_eq!(ours["detected-formats"], json!(["qcow2", "iso"]));

    // A qcow2 (v2, whose header ends before the partition table) with a protective MBR.
    create(&w, "qcow2", "compat=0.10", "gpt.qcow2", "64M");
    let mut d = std::fs::read(w.join("gpt.qcow2")).expect("read");
    protective_mbr(&mut d);
    w.write("gpt.qcow2", &d);
    let ours = info(&w, "gpt.qcow2", 1);
    assert!(has(&ours, "multiple-formats"), "{ours:#}");
    crate::util::assert_rule(&ours, "inspect.container-and-partition-table");
    // qemu-img still reads it as a valid qcow2: the two readings coexist.
    assert_eq!(w.qemu_info("gpt.qcow2", None)["format"], json!("qcow2"));

    // A qcow2 with a fixed-VHD footer appended.
    create(&w, "vpc", "subformat=fixed", "f.vhd", "1M");
    create(&w, "qcow2", "", "vhd.qcow2", "64M");
    let footer = std::fs::read(w.join("f.vhd")).expect("read");
    let mut d = std::fs::read(w.join("vhd.qcow2")).expect("read");
    d.extend_from_slice(&footer[footer.len() - 512..]);
    w.write("vhd.qcow2", &d);
    let ours = info(&w, "vhd.qcow2", 1);
    assert!(has(&ours, "multiple-formats"), "{ours:#}");

    // A text descriptor that is also an ISO.
    let mut d = iso9660(40);
    let desc = b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n";
    d[..desc.len()].copy_from_slice(desc);
    w.write("desc.iso", &d);
    let ours = info(&w, "desc.iso", 1);
    assert!(
        has(&ours, "multiple-formats") && has(&ours, "vmdk-extent-path"),
        "{ours:#}"
    );
}

#[test]
fn damaged_headers_are_reported_with_exit_1_and_never_panic() {
    let w = Workdir::new();
    // A VHD footer whose checksum no longer matches.
    create(&w, "vpc", "subformat=fixed,force_size=on", "bad.vhd", "1M");
    let len = std::fs::metadata(w.join("bad.vhd")).expect("stat").len() as usize;
    poke(&w, "bad.vhd", len - 512 + 48, &[0xff]);
    let ours = info(&w, "bad.vhd", 1);
    assert!(has(&ours, "invalid-header"));
    assert!(ours.get("virtual-size").is_none());

    // VHDX, VDI, QED, VMDK cut at several points.
    create(&w, "vhdx", "", "cut.vhdx", "64M");
    create(&w, "vdi", "", "cut.vdi", "64M");
    create(&w, "qed", "", "cut.qed", "64M");
    create(&w, "vmdk", "", "cut.vmdk", "64M");
    for (file, cuts) in [
        ("cut.vhdx", &[100usize, 70_000, 200_000, 1 << 20][..]),
        ("cut.vdi", &[0x50, 400, 600][..]),
        ("cut.qed", &[10, 64, 70_000][..]),
        ("cut.vmdk", &[10, 600, 16_000, 30_000][..]),
    ] {
        let full = std::fs::read(w.join(file)).expect("read");
        for &cut in cuts {
            let name = format!("{cut}-{file}");
            w.write(&name, &full[..cut]);
            let run = w.vmimage(&["info", "--json", &name]);
            run.expect_code(1);
            assert!(!run.stderr.is_empty());
            let v = run.json();
            assert!(
                has(&v, "truncated") || has(&v, "invalid-header"),
                "{name}: {v:#}"
            );
        }
    }

    // Random bytes after each signature: no panic, a report, exit 0 or 1.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let signatures: [(usize, &[u8]); 8] = [
        (0, b"conectix"),
        (0, b"vhdxfile"),
        (0, b"KDMV"),
        (0, b"# Disk DescriptorFile\n"),
        (0x40, &0xbeda_107fu32.to_le_bytes()),
        (0, b"QED\0"),
        (0x8001, b"CD001"),
        (0, b"LUKS\xba\xbe\0\x01"),
    ];
    for (i, (at, sig)) in signatures.iter().enumerate() {
        let mut d: Vec<u8> = (0..70_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        d[*at..*at + sig.len()].copy_from_slice(sig);
        let name = format!("random{i}.img");
        w.write(&name, &d);
        let run = w.vmimage(&["info", "--json", &name]);
        assert!(run.code == 0 || run.code == 1, "{name}: {}", run.stderr);
        run.json();
    }
}
