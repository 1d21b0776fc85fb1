//! `vmimage convert` with qemu-img as the oracle: every input kind (made with qemu-img and
//! qemu-io here) to every output, then `qemu-img compare`, `qemu-img check`, the printed digests
//! against `md5sum`/`sha512sum`, and the bytes of `--threads 1` against `--threads 2`. Plus the
//! refusals and the failures, which must leave neither OUT nor a temporary file.

use std::path::Path;
use std::process::Command;

use crate::util::{Run, Workdir};

/// The output variants every input is converted to: vmimage args, qemu-img format of OUT.
pub(crate) const ALL_OUTPUTS: [(&[&str], &str); 4] = [
    (&["-O", "qcow2"], "qcow2"),
    (&["-O", "qcow2", "-c", "zlib"], "qcow2"),
    (&["-O", "qcow2", "-c", "zstd"], "qcow2"),
    (&["-O", "raw"], "raw"),
];

/// Only the qcow2 outputs: for inputs so large (sparse) that a raw output would make the
/// digest threads and `md5sum` read gigabytes of zeros.
const QCOW2_OUTPUTS: [(&[&str], &str); 3] = [
    (&["-O", "qcow2"], "qcow2"),
    (&["-O", "qcow2", "-c", "zlib"], "qcow2"),
    (&["-O", "qcow2", "-c", "zstd"], "qcow2"),
];

fn tool_hex(w: &Workdir, tool: &str, file: &str) -> String {
    let out = Command::new(tool)
        .arg(file)
        .current_dir(w.path())
        .output()
        .expect("coreutils");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The hex digest printed on the `TAG (file) = hex` line.
fn printed(run: &Run, tag: &str, file: &str) -> String {
    let prefix = format!("{tag} ({file}) = ");
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {tag} line for {file} in:\n{}", run.stdout))
        .to_string()
}

/// The directory holds exactly `names` (no temporary file left behind).
fn assert_dir_holds(w: &Workdir, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "directory contents");
}

/// Converts `input` (qemu-img format `in_fmt`) to each output, checking everything.
pub(crate) fn check_conversions(
    w: &Workdir,
    input: &str,
    in_fmt: &str,
    outputs: &[(&[&str], &str)],
) {
    for (i, (opts, out_fmt)) in outputs.iter().enumerate() {
        let out = format!("out{i}.{out_fmt}");
        let mut args = vec!["convert", input, &out];
        args.extend_from_slice(opts);
        args.extend(["--threads", "1"]);
        let run = w.vmimage(&args);
        run.expect_code(0);

        let cmp = w.qemu_img_any(&["compare", "-f", in_fmt, "-F", out_fmt, input, &out]);
        assert!(
            cmp.status.success(),
            "{input} -> {out} {opts:?}: qemu-img compare: {}{}",
            String::from_utf8_lossy(&cmp.stdout),
            String::from_utf8_lossy(&cmp.stderr)
        );
        if *out_fmt == "qcow2" {
            let check = w.qemu_img_any(&["check", "--output=json", &out]);
            let report: serde_json::Value =
                serde_json::from_slice(&check.stdout).expect("check json");
            assert_eq!(
                check.status.code(),
                Some(0),
                "{input} -> {out} {opts:?}: qemu-img check: {report:#}"
            );
            assert_eq!(report["check-errors"], 0);
            assert!(report.get("leaks").is_none() && report.get("corruptions").is_none());
            let info = w.qemu_info(&out, Some("qcow2"));
            assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
            assert_eq!(info["format-specific"]["data"]["refcount-bits"], 16);
            let want = if opts.contains(&"zstd") {
                "zstd"
            } else {
                "zlib"
            };
            assert_eq!(info["format-specific"]["data"]["compression-type"], want);
        }
        assert_eq!(
            printed(&run, "MD5", &out),
            tool_hex(w, "md5sum", &out),
            "{out} md5"
        );
        assert_eq!(
            printed(&run, "SHA512", &out),
            tool_hex(w, "sha512sum", &out),
            "{out} sha512"
        );

        // Same bytes with two worker threads.
        let again = format!("again{i}.{out_fmt}");
        let mut args = vec!["convert", input, &again];
        args.extend_from_slice(opts);
        args.extend(["--threads", "2"]);
        w.vmimage(&args).expect_code(0);
        let a = std::fs::read(w.join(&out)).unwrap();
        let b = std::fs::read(w.join(&again)).unwrap();
        assert!(a == b, "{input} {opts:?}: --threads 1 and 2 differ");
        std::fs::remove_file(w.join(&again)).unwrap();
        std::fs::remove_file(w.join(&out)).unwrap();
    }
}

/// Writes a recognisable, partly compressible pattern into the image with qemu-io.
pub(crate) fn qemu_io_write(w: &Workdir, fmt: &str, file: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(file);
    w.qemu_io(&args);
}

/// A raw file with some incompressible bytes at `offset`.
pub(crate) fn write_noise(path: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ offset;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&data, offset).unwrap();
}

#[test]
fn raw_with_holes_and_data_past_4_gib_converts_exactly() {
    let w = Workdir::new();
    let p = w.join("in.raw");
    // 5 GiB + 3 sectors: sparse, not a multiple of any cluster size.
    let size = (5u64 << 30) + 3 * 512;
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    qemu_io_write(
        &w,
        "raw",
        "in.raw",
        &[
            "write -P 0x5a 0 1M",
            "write -P 0x00 2M 64k",
            "write -P 0x33 4294901760 128k",
            &format!("write -P 0x77 {} 1536", size - 1536),
        ],
    );
    write_noise(&p, 3 << 20, 200_000);
    check_conversions(&w, "in.raw", "raw", &QCOW2_OUTPUTS);
}

#[test]
fn small_raw_converts_to_every_output_including_sparse_raw() {
    let w = Workdir::new();
    let p = w.join("in.raw");
    std::fs::File::create(&p)
        .unwrap()
        .set_len((16 << 20) + 512)
        .unwrap();
    qemu_io_write(&w, "raw", "in.raw", &["write -P 0x41 4096 70000"]);
    write_noise(&p, 8 << 20, 300_000);
    check_conversions(&w, "in.raw", "raw", &ALL_OUTPUTS);
    // The raw output is sparse: far fewer blocks than its length.
    let run = w.vmimage(&["convert", "in.raw", "sparse.raw", "-O", "raw"]);
    run.expect_code(0);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(w.join("sparse.raw")).unwrap();
    assert_eq!(meta.len(), (16 << 20) + 512);
    assert!(meta.blocks() * 512 < 2 << 20, "{} blocks", meta.blocks());
}

#[test]
fn qcow2_v2_converts_exactly() {
    let w = Workdir::new();
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "in.qcow2",
        "20971520",
    ]);
    qemu_io_write(
        &w,
        "qcow2",
        "in.qcow2",
        &["write -P 0x11 0 100k", "write -P 0x22 5M 1M"],
    );
    write_noise_qcow2(&w, "in.qcow2", 10 << 20);
    check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
}

/// Writes incompressible data through qemu (a raw noise file converted in).
fn write_noise_qcow2(w: &Workdir, file: &str, offset: u64) {
    let noise = w.join("noise.bin");
    std::fs::File::create(&noise)
        .unwrap()
        .set_len(256 * 1024)
        .unwrap();
    write_noise(&noise, 0, 256 * 1024);
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            &format!("write -s {} {offset} 256k", noise.display()),
            file,
        ])
        .current_dir(w.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(noise).unwrap();
}

#[test]
fn qcow2_v3_with_zero_clusters_and_an_odd_size_converts_exactly() {
    let w = Workdir::new();
    // 10 MiB + 3 sectors: the last cluster is partial.
    w.qemu_img(&["create", "-f", "qcow2", "in.qcow2", "10487296"]);
    qemu_io_write(
        &w,
        "qcow2",
        "in.qcow2",
        &[
            "write -P 0x11 0 1M",
            "write -z 256k 128k",
            "write -P 0x22 3M 64k",
            "discard 3M 64k",
            "write -P 0x33 10485248 2048",
        ],
    );
    write_noise_qcow2(&w, "in.qcow2", 6 << 20);
    check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
}

#[test]
fn compressed_qcow2_inputs_zlib_and_zstd_convert_exactly() {
    for ctype in ["zlib", "zstd"] {
        let w = Workdir::new();
        let p = w.join("src.raw");
        std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
        qemu_io_write(&w, "raw", "src.raw", &["write -P 0x61 0 2M"]);
        write_noise(&p, 4 << 20, 200_000);
        w.qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={ctype}"),
            "src.raw",
            "in.qcow2",
        ]);
        std::fs::remove_file(&p).unwrap();
        check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
    }
}

/// Bytes of text: compressible, with no zero byte.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefgh "[(x % 9) as usize]
        })
        .collect()
}

/// A 1 MiB qcow2 `in.qcow2` of compression type `ctype` whose clusters at `writes`' guest
/// offsets are written compressed by `qemu-io write -c`, each with the 64 KiB of bytes given.
fn qemu_io_compressed(w: &Workdir, ctype: &str, writes: &[(&str, Vec<u8>)]) {
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("compression_type={ctype}"),
        "in.qcow2",
        "1M",
    ]);
    let cmds: Vec<String> = writes
        .iter()
        .enumerate()
        .map(|(i, (offset, bytes))| {
            let source = w.join(&format!("cluster{i}.bin"));
            std::fs::write(&source, bytes).unwrap();
            format!("write -c -s {} {offset} {}", source.display(), bytes.len())
        })
        .collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io_write(w, "qcow2", "in.qcow2", &cmds);
    for i in 0..writes.len() {
        std::fs::remove_file(w.join(&format!("cluster{i}.bin"))).unwrap();
    }
}

/// Compressed clusters written one by one with `qemu-io write -c`: one of zeros (qemu-io
/// stores it compressed), one whose first 4 KiB are zeros, one of data from its first byte.
/// The convert scan tells them apart by inflating the first sector, and the whole cluster
/// only when that is zero: every output holds the same guest bytes, and a qcow2 output the
/// same clusters as qemu-img's (the zero cluster not stored).
#[test]
fn compressed_clusters_of_zeros_or_with_a_zero_first_sector_convert_exactly() {
    for ctype in ["zlib", "zstd"] {
        let w = Workdir::new();
        let mut late = vec![0u8; 4096];
        late.extend(text(65536 - 4096, 1));
        qemu_io_compressed(
            &w,
            ctype,
            &[
                ("0", vec![0; 65536]),
                ("64k", late),
                ("192k", text(65536, 2)),
            ],
        );
        let map = w.qemu_img(&["map", "--output=json", "in.qcow2"]);
        let map: serde_json::Value = serde_json::from_slice(&map.stdout).unwrap();
        let compressed: u64 = map
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["compressed"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum();
        assert_eq!(compressed, 3 * 65536, "{ctype}: {map}");
        check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
        for fmt in ["vpc", "vhdx", "vmdk"] {
            let out = format!("out.{fmt}");
            w.vmimage(&["convert", "in.qcow2", &out, "-O", fmt])
                .expect_code(0);
            let cmp = w.qemu_img_any(&["compare", "-F", fmt, "in.qcow2", &out]);
            assert!(cmp.status.success(), "{ctype} -> {fmt}");
        }
        w.vmimage(&["convert", "in.qcow2", "ours.qcow2", "-O", "qcow2"])
            .expect_code(0);
        w.qemu_img(&["convert", "-O", "qcow2", "in.qcow2", "theirs.qcow2"]);
        let data = |f: &str| -> Vec<(u64, u64)> {
            let map = w.qemu_img(&["map", "--output=json", f]);
            let map: serde_json::Value = serde_json::from_slice(&map.stdout).unwrap();
            map.as_array()
                .unwrap()
                .iter()
                .filter(|e| e["data"] == true)
                .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
                .collect()
        };
        assert_eq!(data("ours.qcow2"), data("theirs.qcow2"), "{ctype}");
        assert_eq!(
            data("ours.qcow2"),
            [(65536, 65536), (196608, 65536)],
            "{ctype}"
        );
    }
}

/// A compressed stream whose start is valid and whose rest is garbage: the scan's probe of
/// the first sector succeeds, and the write pass, which inflates the whole cluster, refuses
/// it. The conversion fails with one sentence and leaves nothing, whatever the output.
#[test]
fn a_compressed_cluster_valid_only_at_its_start_is_an_error_and_leaves_nothing() {
    for ctype in ["zlib", "zstd"] {
        let w = Workdir::new();
        qemu_io_compressed(&w, ctype, &[("0", text(65536, 3))]);
        // The compressed data is the last thing in the file: keep its first 2 KiB (far more
        // than the first sector needs), garble the rest.
        let mut bytes = std::fs::read(w.join("in.qcow2")).unwrap();
        let data_start = (bytes.len() - 1) / 65536 * 65536;
        assert!(
            bytes.len() - data_start > 8192,
            "{ctype}: the stream is too short"
        );
        for b in &mut bytes[data_start + 2048..] {
            *b = 0xa5;
        }
        std::fs::write(w.join("in.qcow2"), bytes).unwrap();
        for fmt in ["qcow2", "vpc", "vhdx", "raw"] {
            let run = w.vmimage(&["convert", "in.qcow2", "out", "-O", fmt]);
            run.expect_code(1);
            assert!(
                run.stderr.contains("compressed") && run.stderr.lines().count() == 1,
                "{ctype} {fmt}: {}",
                run.stderr
            );
            assert_dir_holds(&w, &["in.qcow2"]);
        }
    }
}

#[test]
fn extended_l2_with_partly_written_subclusters_converts_exactly() {
    let w = Workdir::new();
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=64k",
        "in.qcow2",
        "8M",
    ]);
    // Subclusters are 2 KiB: write some, zero some, leave others unallocated.
    qemu_io_write(
        &w,
        "qcow2",
        "in.qcow2",
        &[
            "write -P 0x44 2048 2048",
            "write -P 0x45 10240 4096",
            "write -z 65536 65536",
            "write -P 0x46 71680 2048",
            "write -P 0x47 1M 64k",
            "write -z 1081344 2048",
        ],
    );
    let info = w.qemu_info("in.qcow2", Some("qcow2"));
    assert_eq!(info["format-specific"]["data"]["extended-l2"], true);
    check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
}

#[test]
fn tiny_and_huge_clusters_convert_exactly_both_ways() {
    for cs in ["512", "2M"] {
        let w = Workdir::new();
        w.qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cs}"),
            "in.qcow2",
            "6291968",
        ]);
        qemu_io_write(
            &w,
            "qcow2",
            "in.qcow2",
            &["write -P 0x51 1000 3000", "write -P 0x52 4M 100k"],
        );
        check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
        // And as the output cluster size, compressed and not.
        for opts in [&["-O", "qcow2"][..], &["-O", "qcow2", "-c", "zstd"][..]] {
            let mut args = vec!["convert", "in.qcow2", "o.qcow2", "--cluster-size", cs];
            args.extend_from_slice(opts);
            w.vmimage(&args).expect_code(0);
            let cmp = w.qemu_img_any(&["compare", "in.qcow2", "o.qcow2"]);
            assert!(cmp.status.success(), "cluster size {cs} {opts:?}");
            let check = w.qemu_img_any(&["check", "o.qcow2"]);
            assert_eq!(check.status.code(), Some(0), "check, cluster size {cs}");
            let info = w.qemu_info("o.qcow2", Some("qcow2"));
            let want = if cs == "512" { 512 } else { 2 << 20 };
            assert_eq!(info["cluster-size"], want);
        }
    }
}

#[test]
fn the_active_layer_of_an_image_with_snapshots_is_converted() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "in.qcow2", "8M"]);
    qemu_io_write(&w, "qcow2", "in.qcow2", &["write -P 0x71 0 1M"]);
    w.qemu_img(&["snapshot", "-c", "snap1", "in.qcow2"]);
    qemu_io_write(
        &w,
        "qcow2",
        "in.qcow2",
        &["write -P 0x72 512k 1M", "discard 0 64k"],
    );
    check_conversions(&w, "in.qcow2", "qcow2", &ALL_OUTPUTS);
    let run = w.vmimage(&["convert", "in.qcow2", "o.qcow2", "-O", "qcow2", "--json"]);
    run.expect_code(0);
    assert!(
        w.qemu_info("o.qcow2", Some("qcow2"))
            .get("snapshots")
            .is_none()
    );
}

#[test]
fn vhd_fixed_and_dynamic_convert_exactly() {
    for sub in ["fixed", "dynamic"] {
        let w = Workdir::new();
        let p = w.join("src.raw");
        std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
        qemu_io_write(
            &w,
            "raw",
            "src.raw",
            &["write -P 0x61 0 100k", "write -P 0x62 5M 1M"],
        );
        write_noise(&p, 3 << 20, 100_000);
        w.qemu_img(&[
            "convert",
            "-O",
            "vpc",
            "-o",
            &format!("subformat={sub}"),
            "src.raw",
            "in.vhd",
        ]);
        std::fs::remove_file(&p).unwrap();
        check_conversions(&w, "in.vhd", "vpc", &ALL_OUTPUTS);
        let run = w.vmimage(&["convert", "in.vhd", "o.raw", "-O", "raw", "--json"]);
        run.expect_code(0);
        let report = run.json();
        assert_eq!(report["input-format"], "vpc");
        let qemu = w.qemu_info("in.vhd", Some("vpc"));
        assert_eq!(report["virtual-size"], qemu["virtual-size"]);
    }
}

#[test]
fn json_report_names_the_output_and_its_digests() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "in.qcow2", "4M"]);
    qemu_io_write(&w, "qcow2", "in.qcow2", &["write -P 0x11 0 64k"]);
    let run = w.vmimage(&["convert", "in.qcow2", "o.qcow2", "-O", "qcow2", "--json"]);
    run.expect_code(0);
    let j = run.json();
    assert_eq!(j["output"], "o.qcow2");
    assert_eq!(j["format"], "qcow2");
    assert_eq!(j["virtual-size"], 4 << 20);
    let len = std::fs::metadata(w.join("o.qcow2")).unwrap().len();
    assert_eq!(j["size"], len);
    assert_eq!(j["digests"]["md5"], tool_hex(&w, "md5sum", "o.qcow2"));
    assert_eq!(j["digests"]["sha512"], tool_hex(&w, "sha512sum", "o.qcow2"));
}

#[test]
fn unsafe_inputs_are_refused_with_the_inspectors_finding() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "1M"]);
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
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "data_file=ext.data",
        "extdata.qcow2",
        "1M",
    ]);
    w.qemu_img(&[
        "create",
        "--object",
        "secret,id=sec0,data=password",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        "luks.qcow2",
        "1M",
    ]);
    w.qemu_img(&["create", "-f", "qcow2", "unknown.qcow2", "1M"]);
    let mut bytes = std::fs::read(w.join("unknown.qcow2")).unwrap();
    bytes[79] |= 0x20; // incompatible feature bit 5
    std::fs::write(w.join("unknown.qcow2"), bytes).unwrap();

    for (file, check) in [
        ("overlay.qcow2", "backing-file"),
        ("extdata.qcow2", "data-file"),
        ("luks.qcow2", "encrypted"),
        ("unknown.qcow2", "unknown-incompatible-feature"),
    ] {
        let run = w.vmimage(&["convert", file, "out.qcow2", "-O", "qcow2"]);
        run.expect_code(1);
        assert!(
            run.stderr.contains(check) && run.stderr.starts_with("vmimage: "),
            "{file}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
    assert_dir_holds(
        &w,
        &[
            "base.qcow2",
            "overlay.qcow2",
            "extdata.qcow2",
            "ext.data",
            "luks.qcow2",
            "unknown.qcow2",
        ],
    );
}

#[test]
fn a_data_cluster_past_the_end_of_the_file_is_an_invalid_image_and_leaves_nothing() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "in.qcow2", "1M"]);
    qemu_io_write(&w, "qcow2", "in.qcow2", &["write -P 0x11 0 64k"]);
    let p = w.join("in.qcow2");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 65536)
        .unwrap();
    for fmt in ["qcow2", "raw"] {
        let run = w.vmimage(&["convert", "in.qcow2", "out", "-O", fmt]);
        run.expect_code(1);
        assert!(
            run.stderr.contains("past the end of the file"),
            "{}",
            run.stderr
        );
    }
    assert_dir_holds(&w, &["in.qcow2"]);
}

#[test]
fn a_corrupt_compressed_cluster_is_an_error_not_a_panic_and_leaves_nothing() {
    for ctype in ["zlib", "zstd"] {
        let w = Workdir::new();
        let p = w.join("src.raw");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        qemu_io_write(&w, "raw", "src.raw", &["write -P 0x61 0 64k"]);
        w.qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={ctype}"),
            "src.raw",
            "in.qcow2",
        ]);
        std::fs::remove_file(&p).unwrap();
        // The compressed data is the last thing in the file, in its last (partial) cluster:
        // overwrite it with garbage.
        let map = w.qemu_img(&["map", "--output=json", "in.qcow2"]);
        assert!(String::from_utf8_lossy(&map.stdout).contains("\"compressed\": true"));
        let mut bytes = std::fs::read(w.join("in.qcow2")).unwrap();
        let data_start = (bytes.len() - 1) / 65536 * 65536;
        for b in &mut bytes[data_start..] {
            *b = 0xa5;
        }
        std::fs::write(w.join("in.qcow2"), bytes).unwrap();
        for fmt in ["qcow2", "raw"] {
            let run = w.vmimage(&["convert", "in.qcow2", "out", "-O", fmt]);
            run.expect_code(1);
            assert!(run.stderr.contains("compressed"), "{}", run.stderr);
        }
        assert_dir_holds(&w, &["in.qcow2"]);
    }
}

#[test]
fn a_missing_input_or_a_bad_option_is_exit_2() {
    let w = Workdir::new();
    w.vmimage(&["convert", "nope.qcow2", "out", "-O", "qcow2"])
        .expect_code(2);
    w.qemu_img(&["create", "-f", "qcow2", "in.qcow2", "1M"]);
    w.vmimage(&["convert", "in.qcow2", "out", "-O", "raw", "-c", "zlib"])
        .expect_code(2);
    w.vmimage(&[
        "convert",
        "in.qcow2",
        "out",
        "-O",
        "qcow2",
        "--cluster-size",
        "3000",
    ])
    .expect_code(2);
    w.vmimage(&["convert", "in.qcow2", "out", "-O", "vdi"])
        .expect_code(2);
    assert_dir_holds(&w, &["in.qcow2"]);
}

#[test]
fn a_write_error_midway_leaves_neither_output_nor_temporary_files() {
    let w = Workdir::new();
    let p = w.join("in.raw");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    write_noise(&p, 0, 12 << 20);
    for fmt in ["qcow2", "raw"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmimage"))
            .args(["convert", "in.raw", "out", "-O", fmt])
            .env("VMIMAGE_TEST_FAULT", "enospc-after=5000000")
            .current_dir(w.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("No space left on device"), "{stderr}");
        assert_dir_holds(&w, &["in.raw"]);
    }
}

#[test]
fn a_full_file_system_leaves_neither_output_nor_temporary_files() {
    // A 2 MiB tmpfs in a private mount namespace, so nothing outlives the test.
    let w = Workdir::new();
    let p = w.join("in.raw");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    write_noise(&p, 0, 8 << 20);
    std::fs::create_dir(w.join("small")).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=2m tmpfs small && {bin} convert in.raw small/out.qcow2 -O qcow2; echo rc=$?; ls -A small",
        bin = env!("CARGO_BIN_EXE_vmimage")
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .current_dir(w.path())
        .output()
        .expect("unshare (util-linux) is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with("rc=2\n"),
        "stdout {stdout} stderr {stderr}"
    );
    assert_eq!(stdout.trim_end(), "rc=2", "files left: {stdout}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
}

#[test]
fn an_interrupt_removes_the_temporary_file_and_exits_130() {
    let w = Workdir::new();
    let p = w.join("in.raw");
    std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
    write_noise(&p, 0, 8 << 20);
    for (fmt, signal) in [("qcow2", libc::SIGINT), ("raw", libc::SIGTERM)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
            .args(["convert", "in.raw", "out", "-O", fmt])
            .env("VMIMAGE_TEST_FAULT", "stall-after=4194304")
            .current_dir(w.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary file exists and holds its first 2 MiB (the writes stop
        // short of 4 MiB).
        let started = std::time::Instant::now();
        loop {
            let tmp = std::fs::read_dir(w.path()).unwrap().find_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name.contains("vmimage-tmp") && e.metadata().unwrap().len() >= 2 << 20)
                    .then_some(name)
            });
            if tmp.is_some() {
                break;
            }
            if started.elapsed().as_secs() >= 60 {
                let _ = child.kill();
                panic!("{fmt}: no temporary file appeared");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{fmt}");
        assert_dir_holds(&w, &["in.raw"]);
    }
}

#[test]
fn metadata_is_written_from_the_digests_computed_while_converting() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "in.raw", "100M"]);
    qemu_io_write(&w, "raw", "in.raw", &["write -P 0x11 0 3M"]);
    let run = w.vmimage(&[
        "convert",
        "in.raw",
        "out.qcow2",
        "-O",
        "qcow2",
        "--metadata",
        "body.json",
        "--target",
        "scp",
        "--sidecar",
        "sidecar.json",
        "--name",
        "golden image",
        "--os-distro",
        "ubuntu",
        "--url",
        "https://object-store.example/bucket/out.qcow2",
    ]);
    run.expect_code(0);
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("body.json")).unwrap()).unwrap();
    assert_eq!(body["name"], "golden image");
    assert_eq!(body["disk_format"], "qcow2");
    // 100 MiB of virtual size needs a 1 GiB disk.
    assert_eq!(body["min_disk"], 1);
    // The sidecar carries the digests printed on stdout, and verify accepts it as a record.
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("sidecar.json")).unwrap()).unwrap();
    assert_eq!(
        sidecar["checksum"].as_str().unwrap(),
        printed(&run, "MD5", "out.qcow2")
    );
    assert_eq!(
        sidecar["checksum"].as_str().unwrap(),
        tool_hex(&w, "md5sum", "out.qcow2")
    );
    w.vmimage(&["verify", "out.qcow2", "--against", "sidecar.json"])
        .expect_code(0);
    assert_dir_holds(&w, &["body.json", "in.raw", "out.qcow2", "sidecar.json"]);
}

#[test]
fn a_broken_metadata_rule_stops_the_conversion_before_it_writes_anything() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "in.raw", "10M"]);
    // SCP names allow [A-Za-z0-9 _-] only, and SCP takes qcow2 only.
    let run = w.vmimage(&[
        "convert",
        "in.raw",
        "out.raw",
        "-O",
        "raw",
        "--metadata",
        "body.json",
        "--target",
        "scp",
        "--name",
        "bad/name",
        "--os-distro",
        "ubuntu",
        "--url",
        "https://x.example/b/o.raw",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.lines().count() >= 2,
        "every broken rule is listed: {}",
        run.stderr
    );
    assert_dir_holds(&w, &["in.raw"]);
    // --target without --metadata is a usage error.
    w.vmimage(&[
        "convert", "in.raw", "o.qcow2", "-O", "qcow2", "--target", "scp",
    ])
    .expect_code(2);
}

#[test]
fn algo_chooses_the_digests_computed_while_writing_or_none() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "raw", "in.raw", "8M"]);
    qemu_io_write(&w, "raw", "in.raw", &["write -P 0x42 1M 1M"]);
    let run = w.vmimage(&[
        "convert",
        "in.raw",
        "a.qcow2",
        "-O",
        "qcow2",
        "--algo",
        "sha256,sha1",
    ]);
    run.expect_code(0);
    assert_eq!(
        printed(&run, "SHA256", "a.qcow2"),
        tool_hex(&w, "sha256sum", "a.qcow2")
    );
    assert_eq!(
        printed(&run, "SHA1", "a.qcow2"),
        tool_hex(&w, "sha1sum", "a.qcow2")
    );
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let run = w.vmimage(&[
        "convert", "in.raw", "b.qcow2", "-O", "qcow2", "--algo", "none",
    ]);
    run.expect_code(0);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    w.qemu_img(&["compare", "in.raw", "b.qcow2"]);
    w.vmimage(&[
        "convert", "in.raw", "c.qcow2", "-O", "qcow2", "--algo", "crc32",
    ])
    .expect_code(2);
}

#[test]
fn preallocated_but_unwritten_clusters_are_skipped_not_read() {
    // preallocation=metadata maps every guest cluster to a host cluster that is a hole in the
    // file. Reading them all would take minutes for 256 GiB; the host file's block status
    // says they are holes, as qemu-img asks it. A bound, not a speed claim: without the
    // block-status check this conversion reads 256 GiB of zeros.
    let w = Workdir::new();
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        "pre.qcow2",
        "256G",
    ]);
    w.qemu_io(&["-c", "write -P 0x33 100G 1M", "pre.qcow2"]);
    let started = std::time::Instant::now();
    let run = w.vmimage(&["convert", "pre.qcow2", "out.qcow2", "-O", "qcow2"]);
    run.expect_code(0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "converting a preallocated 256 GiB image took {:?}",
        started.elapsed()
    );
    w.qemu_img(&["compare", "pre.qcow2", "out.qcow2"]);
    let check = w.qemu_img(&["check", "--output=json", "out.qcow2"]);
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(
        v["allocated-clusters"], 16,
        "only the written MiB is stored: {v}"
    );
}

/// The header `convert` writes is encoded through the same field table the decoder reads:
/// decoding it and encoding it again gives the same bytes, the strict decoder accepts it with
/// the values qemu-img reports, it has no extension but the end marker, and qemu-img check
/// finds nothing.
#[test]
fn the_written_header_round_trips_through_the_decoder_and_qemu_agrees() {
    use vmimage::format::qcow2::Qcow2Header;
    use vmimage::format::qcow2::fields::{FIXED_HEADER_LEN, FixedHeader, extension_records};

    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "raw", "in.raw", "5000000"]);
    qemu_io_write(&w, "raw", "in.raw", &["write -P 0x61 0 70k"]);
    for (cs, compression) in [("65536", None), ("4k", Some("zstd")), ("2M", Some("zlib"))] {
        let mut args = vec![
            "convert",
            "in.raw",
            "o.qcow2",
            "-O",
            "qcow2",
            "--cluster-size",
            cs,
        ];
        if let Some(c) = compression {
            args.extend(["-c", c]);
        }
        w.vmimage(&args).expect_code(0);
        let bytes = std::fs::read(w.join("o.qcow2")).unwrap();
        let fixed: [u8; FIXED_HEADER_LEN] = bytes[..FIXED_HEADER_LEN].try_into().unwrap();
        let decoded = FixedHeader::decode(&fixed);
        assert_eq!(
            decoded.encode(),
            fixed,
            "{cs} {compression:?}: encode(decode) differs"
        );

        let header = Qcow2Header::read(&bytes).expect("the strict decoder accepts the output");
        let info = w.qemu_info("o.qcow2", Some("qcow2"));
        assert_eq!(info["virtual-size"], header.virtual_size());
        assert_eq!(info["cluster-size"], header.cluster_size());
        let data = &info["format-specific"]["data"];
        assert_eq!(data["refcount-bits"], header.refcount_bits());
        assert_eq!(data["compression-type"], header.compression_type.name());
        assert_eq!(data["compat"], "1.1");
        assert_eq!(header.header_length, 112);
        let cluster0 = &bytes[..header.cluster_size() as usize];
        assert_eq!(extension_records(cluster0, 112).count(), 0, "no extensions");

        let check = w.qemu_img_any(&["check", "o.qcow2"]);
        assert_eq!(check.status.code(), Some(0), "qemu-img check, {cs}");
    }
}
