//! Images written by other producers than this project's qemu-img (Hyper-V, Disk2vhd, Virtual
//! PC, VMware's open-vmdk, ESXi, old QEMU versions, other projects' generators, fuzzers),
//! taken from public test suites: `info`, `check`, `hash` and `convert` of each, against
//! qemu-img, md5sum and sha512sum.
//!
//! The images are not in this repository: they live gzip-compressed in the steering
//! repository's `shared/producers/` (CI has a copy of `shared/` beside its clone), or in the
//! directory `VMIMAGE_PRODUCER_IMAGES` names. `testdata/README.md` gives each one's origin
//! (repository, path, commit), producer and licence; the SHA-256 of each `.gz` is pinned here.

use crate::util::{Workdir, run_with_stdin};
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where qemu-img's answer and vmimage's are known to differ on purpose (docs/commands.md, "Differences
/// from qemu-img").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Known {
    /// Nothing: vmimage must say what qemu-img says.
    None,
    /// A VHDX whose header names an active log: QEMU refuses to open it read-only; vmimage
    /// describes it with `dirty-flag: true` and a `dirty-bit` warning.
    VhdxActiveLog,
    /// A qcow2 whose snapshot table lies on top of the header: QEMU checks only a table's
    /// alignment and size when it opens an image (`qcow2_validate_table`), so `qemu-img info`
    /// describes it and `qemu-img check` calls it corrupt; vmimage calls the header invalid.
    Qcow2TableOnHeader,
    /// A format QEMU reads and vmimage does not (the name is qemu-img's): vmimage reports a
    /// raw file with an `unsupported-format` error, and checks only what `qemu-img check`
    /// cannot (Parallels has its own check).
    UnsupportedFormat(&'static str),
}

struct Fixture {
    /// File name under the fixture directory, `.gz` included.
    file: &'static str,
    /// SHA-256 of the `.gz`, so a changed or truncated copy fails loudly.
    sha256: &'static str,
    /// For a VHD: the footer's creator application, which decides how QEMU computes its
    /// virtual size (`vpc_ignore_current_size()` in QEMU's block/vpc.c).
    vhd_creator: Option<&'static [u8; 4]>,
    known: Known,
}

const fn fixture(file: &'static str, sha256: &'static str) -> Fixture {
    Fixture {
        file,
        sha256,
        vhd_creator: None,
        known: Known::None,
    }
}

const fn vhd(file: &'static str, sha256: &'static str, creator: &'static [u8; 4]) -> Fixture {
    Fixture {
        file,
        sha256,
        vhd_creator: Some(creator),
        known: Known::None,
    }
}

/// The directory holding the producer images, if there is one.
///
/// Their absence is a skip, loudly, even under `CI=true`: files taken from other projects may
/// only be placed in `shared/` by the steering repository, never committed here, so a
/// developer's change cannot make them appear (testdata/README.md says where each comes from).
fn fixture_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("VMIMAGE_PRODUCER_IMAGES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/producers"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED: no producer images at {} (set VMIMAGE_PRODUCER_IMAGES; testdata/README.md \
         lists them)",
        dir.display()
    );
    None
}

/// Decompresses `gz` into `out`, leaving holes where the image is zero so that a 256 MiB
/// zero-filled Disk2vhd image costs no disk.
fn gunzip_sparse(gz: &[u8], out: &Path) {
    let mut decoder = flate2::read::GzDecoder::new(gz);
    let mut file = std::fs::File::create(out).expect("create image");
    let mut chunk = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let mut filled = 0;
        while filled < chunk.len() {
            let n = decoder.read(&mut chunk[filled..]).expect("gunzip");
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if chunk[..filled].iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(filled as i64)).expect("seek");
        } else {
            file.write_all(&chunk[..filled]).expect("write image");
        }
        len += filled as u64;
    }
    file.set_len(len).expect("set length");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first word of a coreutils digest line (`HEX  NAME`).
fn coreutils_digest(w: &Workdir, tool: &str, name: &str) -> String {
    let out = run_with_stdin(tool, w.path(), &[name], None);
    assert!(out.status.success(), "{tool} {name} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

fn run_fixture(fx: &Fixture) {
    let Some(dir) = fixture_dir() else { return };
    let gz = std::fs::read(dir.join(fx.file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(fx.file).display()));
    assert_eq!(
        sha256_hex(&gz),
        fx.sha256,
        "{}: not the pinned copy",
        fx.file
    );
    let w = Workdir::new();
    let name = fx.file.strip_suffix(".gz").expect("a .gz fixture");
    let image = w.join(name);
    gunzip_sparse(&gz, &image);
    compare_with_peers(fx, &w, name);
}

/// `info`, `check`, `hash` and `convert` of the image `name` in `w`, against qemu-img,
/// md5sum and sha512sum.
fn compare_with_peers(fx: &Fixture, w: &Workdir, name: &str) {
    let image = w.join(name);
    if let Some(creator) = fx.vhd_creator {
        // A dynamic VHD keeps a copy of its footer at offset 0; a fixed one only at the end.
        let bytes = std::fs::read(&image).expect("read image");
        let footer = if bytes.starts_with(b"conectix") {
            &bytes[..512]
        } else {
            &bytes[bytes.len() - 512..]
        };
        assert_eq!(&footer[28..32], creator, "{name}: creator application");
    }

    let qemu = w.qemu_img_any(&["info", "--output=json", name]);
    let run = w.vmimage(&["info", "--json", name]);
    let info = run.json();
    compare_info(fx, name, &qemu, &run.code, &info);
    compare_check(fx, name, w, &info);

    // hash: the file's bytes, as md5sum and sha512sum read them.
    let hashed = w.vmimage(&["hash", "--json", name]);
    hashed.expect_code(0);
    let digests = hashed.json();
    let digests = digests.as_array().map_or(&digests, |a| &a[0]);
    assert_eq!(
        digests["digests"]["md5"].as_str(),
        Some(coreutils_digest(w, "md5sum", name).as_str()),
        "{name}: md5"
    );
    assert_eq!(
        digests["digests"]["sha512"].as_str(),
        Some(coreutils_digest(w, "sha512sum", name).as_str()),
        "{name}: sha512"
    );

    compare_convert(fx, name, w, &info);
}

fn compare_info(fx: &Fixture, name: &str, qemu: &std::process::Output, code: &i32, info: &Value) {
    let safe = info["safety"]["safe"].as_bool().expect("safety.safe");
    assert_eq!(*code, if safe { 0 } else { 1 }, "{name}: info exit status");
    let qemu_err = String::from_utf8_lossy(&qemu.stderr);
    match fx.known {
        Known::VhdxActiveLog => {
            assert!(!qemu.status.success(), "{name}: qemu-img opened it");
            assert!(
                qemu_err.contains("log that needs to be replayed"),
                "{qemu_err}"
            );
            assert_eq!(info["format"], "vhdx", "{name}");
            assert_eq!(info["dirty-flag"], true, "{name}");
            assert!(info["virtual-size"].is_u64(), "{name}: {info}");
            return;
        }
        Known::UnsupportedFormat(qemu_format) => {
            let q: Value = serde_json::from_slice(&qemu.stdout).expect("qemu-img info json");
            assert_eq!(q["format"], qemu_format, "{name}: qemu-img");
            assert!(!safe, "{name}: {info}");
            let finding = info["safety"]["findings"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["check"] == "unsupported-format"))
                .unwrap_or_else(|| panic!("{name}: no unsupported-format finding: {info}"));
            assert!(
                finding["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("`{qemu_format}`"))),
                "{name}: {finding}"
            );
            return;
        }
        Known::Qcow2TableOnHeader => {
            assert!(qemu.status.success(), "{name}: {qemu_err}");
            assert!(!safe, "{name}: {info}");
            assert!(info["virtual-size"].is_null(), "{name}: {info}");
            return;
        }
        Known::None => {}
    }
    if !qemu.status.success() {
        // qemu-img refuses the image: vmimage must call it invalid or unsafe, never describe
        // it as a good image.
        assert!(
            !safe,
            "{name}: qemu-img refuses it ({qemu_err}) but vmimage: {info}"
        );
        return;
    }
    let q: Value = serde_json::from_slice(&qemu.stdout).expect("qemu-img info json");
    for key in [
        "format",
        "virtual-size",
        "cluster-size",
        "dirty-flag",
        "backing-filename",
        "encrypted",
    ] {
        if !q[key].is_null() {
            assert_eq!(
                info[key], q[key],
                "{name}: {key}\nvmimage: {info}\nqemu-img: {q}"
            );
        }
    }
    if q["format"] == "vmdk" {
        for key in ["cid", "parent-cid", "create-type"] {
            assert_eq!(
                info["format-specific"]["data"][key], q["format-specific"]["data"][key],
                "{name}: {key}"
            );
        }
    }
}

fn compare_check(fx: &Fixture, name: &str, w: &Workdir, info: &Value) {
    let qemu = w.qemu_img_any(&["check", "--output=json", name]);
    let qemu_code = qemu.status.code().expect("qemu-img exit status");
    let run = w.vmimage(&["check", "--json", name]);
    let qemu_err = String::from_utf8_lossy(&qemu.stderr);
    if fx.known == Known::UnsupportedFormat("parallels") {
        // qemu-img has its own Parallels check, which vmimage does not reproduce.
        run.expect_code(1);
        return;
    }
    match info["format"].as_str() {
        // qemu-img has its own checks for these, which vmimage does not reproduce (README).
        Some("vmdk" | "vhdx" | "vdi" | "qed") => {
            run.expect_code(1);
            return;
        }
        // vmimage checks the metadata without the backing file; qemu-img must open it first.
        Some("qcow2") if qemu_err.contains("Could not open backing file") => {
            assert_eq!(qemu_code, 1, "{name}");
            assert!(
                matches!(run.code, 0 | 2 | 3),
                "{name}: {} {}",
                run.stdout,
                run.stderr
            );
            return;
        }
        _ => {}
    }
    assert_eq!(
        run.code, qemu_code,
        "{name}: check exit status\nvmimage: {}{}\nqemu-img: {qemu_err}",
        run.stdout, run.stderr
    );
    if qemu_code == 0 || qemu_code == 2 || qemu_code == 3 {
        let q: Value = serde_json::from_slice(&qemu.stdout).expect("qemu-img check json");
        let v = run.json();
        for (key, value) in q.as_object().expect("object") {
            if key != "filename" {
                assert_eq!(&v[key], value, "{name}: check {key}");
            }
        }
    }
}

/// Converts every image `vmimage convert` accepts to both output formats and has qemu-img
/// compare guest content; an image it refuses must be one `info` calls unsafe or invalid, or
/// a VHDX whose log needs replaying (which QEMU refuses to open too).
fn compare_convert(fx: &Fixture, name: &str, w: &Workdir, info: &Value) {
    let format = info["format"].as_str().expect("format");
    let convertible = matches!(format, "raw" | "qcow2" | "vpc" | "vhdx" | "vmdk" | "vdi")
        && info["safety"]["safe"] == true
        && fx.known != Known::VhdxActiveLog;
    for out_format in ["qcow2", "raw"] {
        let out = format!("{name}.out.{out_format}");
        let run = w.vmimage(&["convert", name, &out, "-O", out_format, "--algo", "none"]);
        if !convertible {
            assert_ne!(run.code, 0, "{name}: converted an image info refuses");
            assert!(!w.join(&out).exists(), "{name}: left {out} behind");
            continue;
        }
        run.expect_code(0);
        let compare = w.qemu_img_any(&["compare", "-f", format, "-F", out_format, name, &out]);
        assert!(
            compare.status.success(),
            "{name} -> {out_format}: {}{}",
            String::from_utf8_lossy(&compare.stdout),
            String::from_utf8_lossy(&compare.stderr)
        );
        if out_format == "qcow2" {
            w.qemu_img(&["check", &out]);
        }
        std::fs::remove_file(w.join(&out)).expect("remove output");
    }
}

macro_rules! producer_tests {
    ($($test:ident: $fixture:expr;)*) => {
        $(
            #[test]
            fn $test() {
                run_fixture(&$fixture);
            }
        )*
    };
}

producer_tests! {
    // QEMU's tests/qemu-iotests/sample_images: each made by the native tool.
    hyperv_2012r2_dynamic_vhd: vhd(
        "qemu-hyperv2012r2-dynamic.vhd.gz",
        "8a63adf9108cb796cc01957b135480a3bec25b207a9f5dc9a859709eef0fffef",
        b"win ",
    );
    virtualpc_dynamic_vhd: vhd(
        "qemu-virtualpc-dynamic.vhd.gz",
        "65e056b5c46c639b3f8c57c3fa5485c803edc1df3260ff4031d1d68b7af2f19f",
        b"vpc ",
    );
    disk2vhd_zero_filled_vhd: vhd(
        "qemu-d2v-zerofilled.vhd.gz",
        "3d6d5bb43d923b2978ca66ec9dc531673c5c24ec7e6e99fa0ed378243b47d098",
        b"d2v\0",
    );
    hyperv_dynamic_vhdx: fixture(
        "qemu-iotest-dynamic-1G.vhdx.gz",
        "ab82c5ba1404b29273186ff56a50c2c3bc5004c2a953f08184ff57f7455e1e2f",
    );
    hyperv_vhdx_with_active_log: Fixture {
        known: Known::VhdxActiveLog,
        ..fixture(
            "qemu-iotest-dirtylog-10G-4M.vhdx.gz",
            "4c3a2d09ee8d459781cd7b81beafac352fa97927f82db4c9c4cc8afadf30b6c9",
        )
    };
    disk2vhd_vhdx: fixture(
        "qemu-test-disk2vhd.vhdx.gz",
        "b6a2b882ae4652607e6a2414b1660590e3a4380fe7f4c745d8f983d355ba56a7",
    );
    esxi_version3_vmdk: fixture(
        "qemu-iotest-version3.vmdk.gz",
        "412234d20c20832b54864a4c11797d838bc19e31cf763b30b0ababe8fe00f75a",
    );
    grub_mbr_raw: fixture(
        "qemu-grub_mbr.raw.gz",
        "f4b233489c550c08799b70a4402d5433bfa748088cbc7b1e60a7cd9757790ada",
    );
    // Formats QEMU reads and vmimage does not: never reported as a raw disk.
    bochs_image: Fixture {
        known: Known::UnsupportedFormat("bochs"),
        ..fixture(
            "qemu-empty.bochs.gz",
            "f43aa5498b5cc7b30335263c2a8ad31984dd6eb7793bb2fd81d43476fb9b4628",
        )
    };
    parallels_v1_image: Fixture {
        known: Known::UnsupportedFormat("parallels"),
        ..fixture(
            "qemu-parallels-v1.gz",
            "a0bfa5eba4ccb72152b8145378d7eb273c3d5ba478a259026d6d8adee1d32ca5",
        )
    };
    parallels_v2_image: Fixture {
        known: Known::UnsupportedFormat("parallels"),
        ..fixture(
            "qemu-parallels-v2.gz",
            "c267ed5e2f4bb9f7e9e13d85b5a8183fecb7f32c1bf637b4bce225259a186650",
        )
    };
    cloop_image: Fixture {
        known: Known::UnsupportedFormat("cloop"),
        ..fixture(
            "qemu-simple-pattern.cloop.gz",
            "6dcc1f8939263094559ffe5513bdf47235756440e24deb6923530318cd56a27e",
        )
    };
    // qemu-img probes DMG by its `.dmg` name; vmimage by its UDIF trailer.
    apple_dmg_image: Fixture {
        known: Known::UnsupportedFormat("dmg"),
        ..fixture(
            "qemu-simple-dmg.dmg.gz",
            "4991fd351306f3933a3d4867256488c14a56a1ef63058fed7d064e04fd4ffa46",
        )
    };
    // American fuzzy lop finds, which QEMU refuses.
    afl_crasher_vhd: vhd(
        "qemu-afl5.img.gz",
        "4291ffb9a7c4960fbe247160cd50624eb971e240d2836bb71bbb1e72ed2ac517",
        b"qemu",
    );
    afl_crasher_vmdk: fixture(
        "qemu-afl9.vmdk.gz",
        "1038e10e4594cfe42d2114e87c6e9aa6f771bd82fdd33cc6ba2c01020d6ff8b0",
    );
    // VMware's open-vmdk (`vmdk-convert`): a streamOptimized VMDK.
    open_vmdk_stream_optimized: fixture(
        "openvmdk-64KiB.vmdk.gz",
        "d53cb79b62740da303ce2ea8dc0875a86d85dedd187a9b4592031a53aeb5877f",
    );
    // VirtualBox: a dynamic VDI, 8 GiB, from pyVBox's test appliances.
    virtualbox_dynamic_vdi: fixture(
        "pyvbox-TestHD.vdi.gz",
        "75323ed2cc754697f574d09ddd8584e7c9c458c14e722fd7f20d480ac1afc968",
    );
    // dfvfs test data, written by an older QEMU (VHD creator version 5.3) and by Windows.
    dfvfs_old_qemu_vhd: vhd(
        "dfvfs-ext2.vhd.gz",
        "2469a07e34d0c6b7a50deed6a25b4e52bd5a2c954e892b2f529ae090df22b742",
        b"qemu",
    );
    dfvfs_windows_differencing_vhd: vhd(
        "dfvfs-fat-differential.vhd.gz",
        "83eab22be2619e690c326eadec9feaf276c1f1caf3d88f7016f073de0848b38f",
        b"win ",
    );
    dfvfs_bad_footer_checksum_vhd: vhd(
        "dfvfs-image.vhd.gz",
        "038a35604345a627db15a2d744239cb900930cf93090cf1efd2b6d622b6ae173",
        b"qemu",
    );
    dfvfs_qcow2: fixture(
        "dfvfs-ext2.qcow2.gz",
        "18aaef3c810b5265c3b5ecaf4fa16e1b3a78213e9c6217fc1a68b34fd91f468f",
    );
    dfvfs_vmdk: fixture(
        "dfvfs-ext2.vmdk.gz",
        "22d8ef4c71204c781670283e9518ea668d41531791dffbedf0c057b0d0a02d7d",
    );
    // qcow2-rs's test image.
    qcow2rs_qcow2: fixture(
        "qcow2rs-test.qcow2.gz",
        "b307a17df16fcc27030692e522088c00a4dbf241cdbcd25c33711eeb50cd4b1d",
    );
    // KubeVirt CDI's test images, its hostile ones included.
    cdi_fs_overhead_qcow2: fixture(
        "cdi-fs-overhead.qcow2.gz",
        "27342498ee59439d5f8a6028085a2a9297e3093264b6830772b03a0f12c7add9",
    );
    cdi_backing_chain_qcow2_1: fixture(
        "cdi-cirros-snapshot1.qcow2.gz",
        "eb586bf7c92e4a107102fa8c137be2abd37fd052e19fbc69e5bec4df2937bf66",
    );
    cdi_backing_chain_qcow2_2: fixture(
        "cdi-cirros-snapshot2.qcow2.gz",
        "d80002364ed5e430b71540d1b86ad56423ef40e5d2cf9c782bfd7a92750b8af9",
    );
    cdi_invalid_backing_file: fixture(
        "cdi-invalid-qcow-backing-file.img.gz",
        "caff4c2807878f0cf70d23e32f20848db559f8773fbf9c01fc7ace26e00e12c2",
    );
    cdi_invalid_large_memory: fixture(
        "cdi-invalid-qcow-large-memory.img.gz",
        "e4f941dcb6d22bbac26064d9353a3c30210534cceab63c8359554a4558e91d7e",
    );
    cdi_invalid_large_json: Fixture {
        known: Known::Qcow2TableOnHeader,
        ..fixture(
            "cdi-invalid-qcow-large-json.img.gz",
            "086b1fe645530d129e2ed9e9d2c0b671081543931f4fd07cfe906558cf0842b5",
        )
    };
    // A legacy qcow (version 1) header with a huge size: qemu-img calls it `qcow` (issue 13,
    // defect 3).
    cdi_invalid_large_size_qcow1: fixture(
        "cdi-invalid-qcow-large-size.img.gz",
        "663e52ffd3fd13dfa29c78730e46364dc83adcdcfddfd1ca75a7e3291d50df6b",
    );
}

/// Rewrites a VHD footer's creator application, sets its current size when given, and
/// recomputes its checksum (VHD spec, "Hard Disk Footer Format": the ones' complement of the
/// byte sum with the checksum field zeroed).
fn set_vhd_footer(footer: &mut [u8], creator: &[u8; 4], current_size: Option<u64>) {
    footer[28..32].copy_from_slice(creator);
    if let Some(size) = current_size {
        footer[48..56].copy_from_slice(&size.to_be_bytes());
    }
    footer[64..68].fill(0);
    let sum = footer[..512]
        .iter()
        .fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
}

/// QEMU sizes a VHD by its creator application (block/vpc.c, `vpc_ignore_current_size()` and
/// the CHS maximum): the CHS geometry for `vpc ` and `qemu`, unless the geometry is the
/// maximum; the footer's current size for everything else (`win `, `d2v `, `qem2`, unknown).
/// Every creator, on dynamic and fixed disks whose CHS size differs from the current size
/// (64 MiB, 1000 MiB: qemu-img rounds the geometry up, and the current size is then set to the
/// exact size, as Hyper-V writes it) or whose geometry is the maximum (200 GiB): `info` and
/// `convert` must both expose what QEMU exposes.
#[test]
fn vhd_virtual_size_follows_the_creator_application() {
    let w = Workdir::new();
    let creators: [&[u8; 4]; 7] = [
        b"vpc ",
        b"qemu",
        b"win ",
        b"d2v ",
        b"qem2",
        b"vs  ",
        b"\0\0\0\0",
    ];
    let mut sizes_seen = std::collections::BTreeSet::new();
    for (size, subformat) in [
        ("64M", "dynamic"),
        ("1000M", "dynamic"),
        ("200G", "dynamic"),
        ("64M", "fixed"),
    ] {
        for creator in creators {
            let name = format!(
                "{size}-{subformat}-{}.vhd",
                String::from_utf8_lossy(creator).trim_matches(['\0', ' '])
            );
            w.qemu_img(&[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                &format!("subformat={subformat}"),
                &name,
                size,
            ]);
            let mut bytes = std::fs::read(w.join(&name)).expect("read");
            let len = bytes.len();
            let exact = match size {
                "64M" => Some(64 << 20),
                "1000M" => Some(1000 << 20),
                _ => None,
            };
            set_vhd_footer(&mut bytes[len - 512..], creator, exact);
            if subformat == "dynamic" {
                set_vhd_footer(&mut bytes[..512], creator, exact);
            }
            w.write(&name, &bytes);
            let qemu = w.qemu_info(&name, Some("vpc"));
            let info = w.vmimage(&["info", "--json", &name]);
            info.expect_code(0);
            let info = info.json();
            assert_eq!(info["format"], "vpc", "{name}");
            assert_eq!(
                info["virtual-size"], qemu["virtual-size"],
                "{name}: virtual-size"
            );
            if size == "64M" {
                sizes_seen.insert(info["virtual-size"].as_u64());
            }
            if size != "200G" {
                let out = format!("{name}.qcow2");
                w.vmimage(&["convert", &name, &out, "-O", "qcow2", "--algo", "none"])
                    .expect_code(0);
                let compare = w.qemu_img_any(&["compare", "-f", "vpc", "-F", "qcow2", &name, &out]);
                assert!(
                    compare.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&compare.stdout)
                );
            }
        }
    }
    // Both rules were exercised: the CHS size and the exact current size.
    assert_eq!(
        sizes_seen,
        [Some(64 << 20), Some(67_125_248)].into(),
        "64 MiB sizes"
    );
}

/// A Parallels image (qemu-img writes one) is not a raw disk: `info` refuses it as a format
/// vmimage does not read, `convert` refuses it, and `check` says qemu-img has its own check.
/// Before, all three took it for a safe raw disk of the file's length.
#[test]
fn a_parallels_image_is_refused_not_taken_for_raw() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-q", "-f", "parallels", "disk.img", "64M"]);
    assert_eq!(w.qemu_info("disk.img", None)["format"], "parallels");
    let run = w.vmimage(&["info", "--json", "disk.img"]);
    run.expect_code(1);
    let info = run.json();
    assert_eq!(info["safety"]["findings"][0]["check"], "unsupported-format");
    crate::util::assert_rule(&info, "foreign.parallels");
    w.vmimage(&["convert", "disk.img", "out.qcow2", "-O", "qcow2"])
        .expect_code(1);
    assert!(!w.join("out.qcow2").exists());
    w.vmimage(&["check", "disk.img"]).expect_code(1);
}

/// streamOptimized VMDKs written at test time by another producer than QEMU: Debian's
/// python3-vmdkstream (`VMDKstream.convert_to_stream`, the converter Ubuntu's cloud-image
/// builds used for OVA disks), which lays out markers, grain tables and the footer its own
/// way. Sizes that are and are not grain multiples, data at both ends, and an empty disk.
#[test]
fn vmdkstream_written_stream_optimized_images() {
    let w = Workdir::new();
    let python = "/usr/bin/python3";
    let probe = std::process::Command::new(python)
        .args(["-c", "import VMDKstream"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "Debian's python3-vmdkstream is required (.ci/run installs it): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    for (name, size, writes) in [
        ("empty", 1 << 20, &[][..]),
        (
            "ends",
            10 << 20,
            &[(0, 70_000), ((10 << 20) - 4096, 4096)][..],
        ),
        (
            "odd",
            (3 << 20) + 512,
            &[(1 << 20, 200_000), (3 << 20, 512)][..],
        ),
    ] {
        let raw = w.join(&format!("{name}.raw"));
        let mut file = std::fs::File::create(&raw).expect("create raw");
        file.set_len(size).expect("size raw");
        for &(offset, len) in writes {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + offset as usize) as u8).collect();
            file.seek(SeekFrom::Start(offset as u64)).expect("seek");
            file.write_all(&data).expect("write");
        }
        drop(file);
        let vmdk = format!("{name}.vmdk");
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import sys, VMDKstream; VMDKstream.convert_to_stream(sys.argv[1], sys.argv[2])",
            ])
            .arg(&raw)
            .arg(w.join(&vmdk))
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let same = w.qemu_img_any(&["compare", &format!("{name}.raw"), &vmdk]);
        assert_eq!(
            same.status.code(),
            Some(0),
            "qemu-img reads {vmdk} as its raw source"
        );
        compare_with_peers(&fixture("vmdkstream.gz", ""), &w, &vmdk);
    }
}
