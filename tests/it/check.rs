//! `vmimage check` against `qemu-img check` (the oracle): every kind of image qemu-img makes,
//! and images damaged at test time by rewriting bytes, must get the same exit status and the
//! same counters. Every run also proves the image was not modified.

use serde_json::Value;

use crate::util::Workdir;

/// The counters `qemu-img check --output=json` prints.
const COUNTER_KEYS: [&str; 10] = [
    "check-errors",
    "corruptions",
    "leaks",
    "corruptions-fixed",
    "leaks-fixed",
    "image-end-offset",
    "total-clusters",
    "allocated-clusters",
    "fragmented-clusters",
    "compressed-clusters",
];

/// What `qemu-img check` said.
struct QemuVerdict {
    code: i32,
    json: Option<Value>,
    /// The finding lines qemu-img printed on stderr.
    lines: Vec<String>,
}

fn qemu_check(w: &Workdir, args: &[&str]) -> QemuVerdict {
    let mut all = vec!["check", "--output=json"];
    all.extend_from_slice(args);
    let out = w.qemu_img_any(&all);
    let json = serde_json::from_slice(&out.stdout).ok();
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| {
            !l.starts_with("qemu-img:")
                && !l.starts_with("Use qemu-img amend")
                && !l.starts_with("qcow2: ")
                && !l.is_empty()
        })
        // qemu-img's bitmap warning ends without a newline.
        .map(|l| {
            l.trim_start_matches(
                "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.",
            )
            .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    QemuVerdict {
        code: out.status.code().unwrap_or(-1),
        json,
        lines,
    }
}

/// Runs both checks on `file` and asserts the same status and counters; returns vmimage's
/// JSON (if it printed any). `qemu_args` replaces the file argument for qemu-img (LUKS images
/// need a key and `--image-opts`).
fn same_verdict_with(w: &Workdir, file: &str, qemu_args: &[&str]) -> Option<Value> {
    compare_with_qemu(w, file, qemu_args, true)
}

/// [`same_verdict_with`], comparing the finding lines in order or as a multiset.
fn compare_with_qemu(w: &Workdir, file: &str, qemu_args: &[&str], ordered: bool) -> Option<Value> {
    let before = std::fs::read(w.join(file)).expect("read image");
    let qemu = qemu_check(w, qemu_args);
    let ours = w.vmimage(&["check", "--json", file]);
    let after = std::fs::read(w.join(file)).expect("read image");
    assert!(before == after, "vmimage check modified {file}");
    assert_eq!(
        ours.code, qemu.code,
        "{file}: exit status differs from qemu-img check's\nqemu-img: {:?}\nvmimage stdout:\n{}\nstderr:\n{}",
        qemu.json, ours.stdout, ours.stderr
    );
    match &qemu.json {
        Some(q) => {
            let v = ours.json();
            for key in COUNTER_KEYS {
                assert_eq!(
                    v.get(key),
                    q.get(key),
                    "{file}: `{key}` differs\nqemu-img: {q:#}\nvmimage: {v:#}"
                );
            }
            assert_eq!(v["format"], "qcow2");
            assert_eq!(v["filename"], file);
            // The same finding lines as qemu-img prints, in the same order.
            let ours: Vec<String> = v["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["message"].as_str().map(str::to_string))
                .collect();
            // The report keeps the first MAX_FINDINGS; the rest are counted.
            let omitted = v
                .get("findings-omitted")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let mut expected = qemu.lines[..qemu.lines.len().min(ours.len())].to_vec();
            let mut ours = ours;
            if !ordered {
                expected.sort();
                ours.sort();
            }
            assert_eq!(
                ours, expected,
                "{file}: findings differ from qemu-img's lines"
            );
            assert_eq!(
                ours.len() as u64 + omitted,
                qemu.lines.len() as u64,
                "{file}: finding count differs"
            );
            Some(v)
        }
        None => {
            assert!(
                ours.stdout.trim().is_empty(),
                "{file}: qemu-img printed no report but vmimage did:\n{}",
                ours.stdout
            );
            assert!(
                ours.stderr.starts_with("vmimage: ") && ours.stderr.trim().lines().count() == 1,
                "{file}: expected one error sentence, got:\n{}",
                ours.stderr
            );
            None
        }
    }
}

fn same_verdict(w: &Workdir, file: &str) -> Option<Value> {
    same_verdict_with(w, file, &[file])
}

/// Asserts the verdict and returns the JSON, which must exist.
fn verdict(w: &Workdir, file: &str, code: i32) -> Value {
    let v = same_verdict(w, file).unwrap_or_else(|| panic!("{file}: no report"));
    let ours = w.vmimage(&["check", "--json", file]);
    ours.expect_code(code);
    v
}

fn create(w: &Workdir, name: &str, opts: &str, size: &str) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([name, size]);
    w.qemu_img(&args);
}

fn write(w: &Workdir, name: &str, cmds: &[&str]) {
    let mut args = Vec::new();
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(name);
    w.qemu_io(&args);
}

/// Standard guest writes: scattered clusters, a partial cluster, a rewrite.
const SCATTERED: [&str; 4] = [
    "write -P 0x11 0 1M",
    "write -P 0x22 5M 4k",
    "write -P 0x33 17M 192k",
    "write -P 0x44 0 64k",
];

// ----------------------------------------------------------------------------------------------
// Images qemu-img makes: the same verdict and counters as qemu-img check.
// ----------------------------------------------------------------------------------------------

#[test]
fn compat_0_10_and_1_1_images_match_qemu() {
    let w = Workdir::new();
    for (name, compat) in [("v2.qcow2", "compat=0.10"), ("v3.qcow2", "compat=1.1")] {
        create(&w, name, compat, "64M");
        write(&w, name, &SCATTERED);
        let v = verdict(&w, name, 0);
        assert!(v["allocated-clusters"].as_u64().unwrap_or(0) > 0);
    }
}

#[test]
fn an_empty_image_matches_qemu() {
    let w = Workdir::new();
    create(&w, "empty.qcow2", "", "1G");
    let v = verdict(&w, "empty.qcow2", 0);
    assert!(
        v.get("allocated-clusters").is_none(),
        "zero counters are omitted"
    );
    let zero = Workdir::new();
    create(&zero, "zero.qcow2", "", "0");
    verdict(&zero, "zero.qcow2", 0);
}

#[test]
fn zlib_and_zstd_compressed_images_match_qemu() {
    let w = Workdir::new();
    // Compressible data and random data (stored uncompressed) side by side.
    let mut raw = vec![0u8; 8 << 20];
    for (i, b) in raw.iter_mut().enumerate().take(3 << 20) {
        *b = (i / 4096) as u8;
    }
    let mut x = 0x1234_5678_u32;
    for b in raw[(4 << 20)..(5 << 20)].iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    w.write("src.raw", &raw);
    for (name, ct) in [("zlib.qcow2", "zlib"), ("zstd.qcow2", "zstd")] {
        let opt = format!("compression_type={ct}");
        w.qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &opt, "src.raw", name]);
        let v = verdict(&w, name, 0);
        assert!(v["compressed-clusters"].as_u64().unwrap_or(0) > 0, "{v:#}");
        // And compressed writes through qemu-io.
        write(&w, name, &["write -c -P 0x55 6M 128k"]);
        verdict(&w, name, 0);
    }
}

#[test]
fn extended_l2_with_partial_subcluster_writes_matches_qemu() {
    let w = Workdir::new();
    create(&w, "el2.qcow2", "extended_l2=on,cluster_size=128k", "64M");
    write(
        &w,
        "el2.qcow2",
        &[
            "write -P 1 0 4k",
            "write -P 2 40k 8k",
            "write -z 64k 4k",
            "write -P 3 1M 128k",
            "write -z 2M 256k",
            "write -c -P 4 4M 128k",
        ],
    );
    verdict(&w, "el2.qcow2", 0);
}

#[test]
fn cluster_sizes_512_and_2m_match_qemu() {
    let w = Workdir::new();
    for (name, cs) in [
        ("c512.qcow2", "cluster_size=512"),
        ("c2m.qcow2", "cluster_size=2M"),
    ] {
        create(&w, name, cs, "64M");
        write(&w, name, &SCATTERED);
        verdict(&w, name, 0);
    }
}

#[test]
fn refcount_widths_1_and_64_match_qemu() {
    let w = Workdir::new();
    for (name, bits) in [
        ("r1.qcow2", "refcount_bits=1"),
        ("r64.qcow2", "refcount_bits=64"),
    ] {
        create(&w, name, bits, "64M");
        write(&w, name, &SCATTERED);
        verdict(&w, name, 0);
    }
}

#[test]
fn lazy_refcounts_and_preallocation_match_qemu() {
    let w = Workdir::new();
    for (name, opts) in [
        ("lazy.qcow2", "lazy_refcounts=on"),
        ("meta.qcow2", "preallocation=metadata"),
        ("full.qcow2", "preallocation=full"),
        ("falloc.qcow2", "preallocation=falloc"),
    ] {
        create(&w, name, opts, "32M");
        write(&w, name, &SCATTERED[..2]);
        verdict(&w, name, 0);
    }
}

#[test]
fn internal_snapshots_match_qemu() {
    let w = Workdir::new();
    create(&w, "snap.qcow2", "", "64M");
    write(&w, "snap.qcow2", &SCATTERED);
    w.qemu_img(&["snapshot", "-c", "one", "snap.qcow2"]);
    write(
        &w,
        "snap.qcow2",
        &["write -P 0x66 0 2M", "write -P 0x77 30M 64k"],
    );
    w.qemu_img(&["snapshot", "-c", "two", "snap.qcow2"]);
    write(&w, "snap.qcow2", &["write -P 0x88 512k 64k"]);
    verdict(&w, "snap.qcow2", 0);
    w.qemu_img(&["snapshot", "-d", "one", "snap.qcow2"]);
    verdict(&w, "snap.qcow2", 0);
}

#[test]
fn persistent_bitmaps_match_qemu() {
    let w = Workdir::new();
    create(&w, "bm.qcow2", "", "64M");
    write(&w, "bm.qcow2", &SCATTERED);
    w.qemu_img(&["bitmap", "--add", "bm.qcow2", "b0"]);
    w.qemu_img(&["bitmap", "--add", "-g", "512k", "bm.qcow2", "b1"]);
    w.qemu_img(&["bitmap", "--disable", "bm.qcow2", "b1"]);
    write(&w, "bm.qcow2", &["write -P 0x99 8M 1M"]);
    verdict(&w, "bm.qcow2", 0);
}

#[test]
fn backing_files_are_checked_not_followed() {
    let w = Workdir::new();
    create(&w, "base.qcow2", "", "64M");
    write(&w, "base.qcow2", &SCATTERED);
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
    write(&w, "top.qcow2", &["write -P 0x5a 3M 128k"]);
    verdict(&w, "top.qcow2", 0);
    // Without the backing file qemu-img cannot open the overlay; vmimage never opens it.
    std::fs::remove_file(w.join("base.qcow2")).expect("remove base");
    w.vmimage(&["check", "top.qcow2"]).expect_code(0);
}

#[test]
fn external_data_files_are_checked_not_followed() {
    let w = Workdir::new();
    create(
        &w,
        "ext.qcow2",
        "data_file=ext.data,data_file_raw=on",
        "32M",
    );
    write(&w, "ext.qcow2", &SCATTERED[..3]);
    verdict(&w, "ext.qcow2", 0);
    create(&w, "ext2.qcow2", "data_file=ext2.data", "32M");
    write(&w, "ext2.qcow2", &SCATTERED[..3]);
    verdict(&w, "ext2.qcow2", 0);
    std::fs::remove_file(w.join("ext2.data")).expect("remove data file");
    w.vmimage(&["check", "ext2.qcow2"]).expect_code(0);
}

#[test]
fn luks_encrypted_images_match_qemu_given_the_key() {
    let w = Workdir::new();
    let secret = "secret,id=sec0,data=vmimage";
    w.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        secret,
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        "luks.qcow2",
        "16M",
    ]);
    let opts = "driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=sec0";
    w.qemu_io(&[
        "--object",
        secret,
        "--image-opts",
        opts,
        "-c",
        "write -P 1 0 1M",
        "-c",
        "write -P 2 9M 64k",
    ]);
    // qemu-img needs the key to open it; vmimage checks metadata only and needs none.
    let v = same_verdict_with(
        &w,
        "luks.qcow2",
        &["--object", secret, "--image-opts", opts],
    )
    .expect("a report");
    assert!(v["allocated-clusters"].as_u64().unwrap_or(0) > 0);
}

// ----------------------------------------------------------------------------------------------
// Damaged images: bytes rewritten at test time, offsets found by parsing the header.
// ----------------------------------------------------------------------------------------------

/// The header fields a damage test needs, and byte-level edits.
struct Qcow2File {
    path: std::path::PathBuf,
    data: Vec<u8>,
}

impl Qcow2File {
    fn open(w: &Workdir, name: &str) -> Self {
        let path = w.join(name);
        let data = std::fs::read(&path).expect("read image");
        Self { path, data }
    }
    fn be32(&self, at: u64) -> u32 {
        let a = at as usize;
        u32::from_be_bytes(self.data[a..a + 4].try_into().expect("4 bytes"))
    }
    fn be64(&self, at: u64) -> u64 {
        let a = at as usize;
        u64::from_be_bytes(self.data[a..a + 8].try_into().expect("8 bytes"))
    }
    fn put64(&mut self, at: u64, v: u64) {
        let a = at as usize;
        self.data[a..a + 8].copy_from_slice(&v.to_be_bytes());
    }
    fn put32(&mut self, at: u64, v: u32) {
        let a = at as usize;
        self.data[a..a + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn cluster_size(&self) -> u64 {
        1 << self.be32(20)
    }
    fn l1_offset(&self) -> u64 {
        self.be64(40)
    }
    fn reftable_offset(&self) -> u64 {
        self.be64(48)
    }
    /// Offset of the L2 table of L1 entry `i`.
    fn l2_table(&self, i: u64) -> u64 {
        self.be64(self.l1_offset() + i * 8) & 0x00ff_ffff_ffff_fe00
    }
    /// Offset of the first refcount block (16-bit refcounts).
    fn refblock0(&self) -> u64 {
        self.be64(self.reftable_offset()) & !0x1ff
    }
    fn set_refcount16(&mut self, cluster: u64, value: u16) {
        let at = (self.refblock0() + cluster * 2) as usize;
        self.data[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }
    fn refcount16(&self, cluster: u64) -> u16 {
        let at = (self.refblock0() + cluster * 2) as usize;
        u16::from_be_bytes([self.data[at], self.data[at + 1]])
    }
    /// The L2 entries of L1 entry 0 that map data, as (entry offset, entry).
    fn mapped_l2_entries(&self) -> Vec<(u64, u64)> {
        let l2 = self.l2_table(0);
        (0..self.cluster_size() / 8)
            .map(|i| (l2 + i * 8, self.be64(l2 + i * 8)))
            .filter(|(_, e)| *e & 0x00ff_ffff_ffff_fe00 != 0)
            .collect()
    }
    fn save(&self) {
        std::fs::write(&self.path, &self.data).expect("write image");
    }
}

/// A v3 image with data in L1 entry 0, 64 KiB clusters, 16-bit refcounts.
fn damaged_base(w: &Workdir, name: &str) -> Qcow2File {
    create(w, name, "", "64M");
    write(w, name, &SCATTERED);
    Qcow2File::open(w, name)
}

#[test]
fn a_zeroed_refcount_of_an_in_use_cluster_is_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "zeroed.qcow2");
    let data = img.mapped_l2_entries()[0].1 & 0x00ff_ffff_ffff_fe00;
    let cluster = data / img.cluster_size();
    assert_eq!(img.refcount16(cluster), 1);
    img.set_refcount16(cluster, 0);
    img.save();
    let v = verdict(&w, "zeroed.qcow2", 2);
    let messages: Vec<&str> = v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["message"].as_str())
        .collect();
    assert!(
        messages.contains(&format!("ERROR cluster {cluster} refcount=0 reference=1").as_str()),
        "{messages:?}"
    );
    let human = w.vmimage(&["check", "zeroed.qcow2"]);
    human.expect_code(2);
    assert!(human.stdout.contains("errors were found on the image."));
}

#[test]
fn an_extra_refcount_on_an_appended_cluster_is_a_leak() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "leak.qcow2");
    let end = img.data.len() as u64;
    let cluster = end.div_ceil(img.cluster_size());
    img.data
        .resize(((cluster + 1) * img.cluster_size()) as usize, 0);
    img.set_refcount16(cluster, 1);
    img.save();
    let v = verdict(&w, "leak.qcow2", 3);
    assert_eq!(v["leaks"], 1);
    let human = w.vmimage(&["check", "leak.qcow2"]);
    assert!(human.stdout.contains(
        "1 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data."
    ));
}

#[test]
fn a_refcount_set_past_the_end_of_the_file_is_not_reported() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "beyond.qcow2");
    let cluster = (img.data.len() as u64).div_ceil(img.cluster_size()) + 3;
    img.set_refcount16(cluster, 1);
    img.save();
    verdict(&w, "beyond.qcow2", 0);
}

#[test]
fn an_l1_entry_pointing_at_the_header_is_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "l1hdr.qcow2");
    // L1 entry 1 (guest 512 MiB..1 GiB of a 64 MiB disk is past the size, so use entry 0).
    let l1 = img.l1_offset();
    img.put64(l1, 1 << 63);
    img.save();
    verdict(&w, "l1hdr.qcow2", 2);
}

#[test]
fn an_l2_table_on_top_of_the_header_is_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "l2hdr.qcow2");
    let l1 = img.l1_offset();
    // A second L1 slot is needed: grow nothing, reuse entry 0 with an offset of 0 and a
    // reserved bit, so the header cluster is read as an L2 table.
    img.put64(l1, (1 << 63) | 1);
    img.save();
    verdict(&w, "l2hdr.qcow2", 2);
}

#[test]
fn an_l2_entry_past_the_end_of_the_file_is_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "l2eof.qcow2");
    let (at, entry) = img.mapped_l2_entries()[1];
    let far =
        (img.data.len() as u64 + 10 * img.cluster_size()).next_multiple_of(img.cluster_size());
    img.put64(at, (entry & !0x00ff_ffff_ffff_fe00) | far);
    img.save();
    verdict(&w, "l2eof.qcow2", 2);
}

#[test]
fn a_misaligned_l2_entry_and_reserved_bits_are_corruptions() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "misaligned.qcow2");
    let entries = img.mapped_l2_entries();
    img.put64(entries[0].0, entries[0].1 + 512);
    img.put64(entries[1].0, entries[1].1 | 0x100);
    img.save();
    verdict(&w, "misaligned.qcow2", 2);
}

#[test]
fn a_truncated_file_matches_qemu() {
    let w = Workdir::new();
    let img = damaged_base(&w, "trunc.qcow2");
    let cs = img.cluster_size() as usize;
    for (name, len) in [
        ("t1.qcow2", img.data.len() - cs - 100),
        ("t2.qcow2", img.data.len() / 2),
        ("t3.qcow2", 3 * cs + 7),
        ("t4.qcow2", cs),
        ("t5.qcow2", 200),
    ] {
        w.write(name, &img.data[..len]);
        same_verdict(&w, name);
    }
}

#[test]
fn a_compressed_descriptor_running_past_the_end_is_a_corruption() {
    let w = Workdir::new();
    create(&w, "cpast.qcow2", "", "64M");
    write(
        &w,
        "cpast.qcow2",
        &["write -c -P 1 0 64k", "write -c -P 2 64k 64k"],
    );
    let mut img = Qcow2File::open(&w, "cpast.qcow2");
    let l2 = img.l2_table(0);
    let entry = img.be64(l2);
    assert_ne!(entry & (1 << 62), 0, "cluster 0 is compressed");
    // 64 KiB clusters: offset in bits 0..54, additional sectors from bit 54.
    let len = img.data.len() as u64;
    let descriptor = |offset: u64, sectors: u64| (1u64 << 62) | ((sectors - 1) << 54) | offset;
    // Far past the end, then just over the end by less than a cluster.
    img.put64(l2, descriptor(len + 3 * img.cluster_size() + 100, 2));
    img.put64(l2 + 8, descriptor(len - 300, 4));
    img.save();
    verdict(&w, "cpast.qcow2", 2);
}

#[test]
fn a_compressed_entry_with_the_copied_flag_is_a_corruption() {
    let w = Workdir::new();
    create(&w, "ccopied.qcow2", "", "64M");
    write(&w, "ccopied.qcow2", &["write -c -P 1 0 64k"]);
    let mut img = Qcow2File::open(&w, "ccopied.qcow2");
    let l2 = img.l2_table(0);
    let e = img.be64(l2);
    img.put64(l2, e | (1 << 63));
    img.save();
    verdict(&w, "ccopied.qcow2", 2);
}

#[test]
fn two_l2_entries_sharing_one_cluster_are_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "shared.qcow2");
    let entries = img.mapped_l2_entries();
    img.put64(entries[1].0, entries[0].1);
    img.save();
    let v = verdict(&w, "shared.qcow2", 2);
    // The shared cluster has refcount 1 but two references; its old cluster leaks.
    assert!(v["leaks"].as_u64().unwrap_or(0) >= 1, "{v:#}");
}

#[test]
fn a_refcount_block_pointing_at_the_refcount_table_is_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "rbself.qcow2");
    let rt = img.reftable_offset();
    img.put64(rt, rt);
    img.save();
    same_verdict(&w, "rbself.qcow2");
}

#[test]
fn refcount_table_entry_damage_matches_qemu() {
    let w = Workdir::new();
    let img = damaged_base(&w, "rt.qcow2");
    let rt = img.reftable_offset();
    let rb = img.refblock0();
    let cases: [(&str, u64); 4] = [
        ("rt-reserved.qcow2", rb | 1),
        ("rt-unaligned.qcow2", rb + 512),
        ("rt-outside.qcow2", 1 << 40),
        ("rt-huge.qcow2", 0xffff_ffff_ffff_0000),
    ];
    for (name, entry) in cases {
        let mut copy = Qcow2File {
            path: w.join(name),
            data: img.data.clone(),
        };
        copy.put64(rt, entry);
        copy.save();
        same_verdict(&w, name);
    }
}

#[test]
fn a_cleared_copied_flag_is_a_corruption() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "copied.qcow2");
    let (at, entry) = img.mapped_l2_entries()[0];
    img.put64(at, entry & !(1 << 63));
    let l1 = img.l1_offset();
    let l1e = img.be64(l1);
    img.put64(l1, l1e & !(1 << 63));
    img.save();
    verdict(&w, "copied.qcow2", 2);
}

/// A byte edit applied to a copy of an image.
type Edit = Box<dyn Fn(&mut Qcow2File)>;

#[test]
fn snapshot_table_damage_matches_qemu() {
    let w = Workdir::new();
    create(&w, "snapbad.qcow2", "", "64M");
    write(&w, "snapbad.qcow2", &SCATTERED);
    w.qemu_img(&["snapshot", "-c", "s1", "snapbad.qcow2"]);
    let img = Qcow2File::open(&w, "snapbad.qcow2");
    let table = img.be64(64);
    let cases: Vec<(&str, Edit)> = vec![
        (
            "sn-l1-unaligned.qcow2",
            Box::new(move |f| {
                let v = f.be64(table);
                f.put64(table, v + 512);
            }),
        ),
        (
            "sn-l1-large.qcow2",
            Box::new(move |f| f.put32(table + 8, 0x0100_0000)),
        ),
        (
            "sn-extra-small.qcow2",
            Box::new(move |f| f.put32(table + 36, 0)),
        ),
        (
            "sn-extra-big.qcow2",
            Box::new(move |f| f.put32(table + 36, 5000)),
        ),
        (
            "sn-offset-unaligned.qcow2",
            Box::new(|f| {
                let v = f.be64(64);
                f.put64(64, v + 8);
            }),
        ),
        ("sn-count-huge.qcow2", Box::new(|f| f.put32(60, 70_000))),
        ("sn-past-eof.qcow2", Box::new(|f| f.put64(64, 1 << 30))),
    ];
    for (name, edit) in cases {
        let mut copy = Qcow2File {
            path: w.join(name),
            data: img.data.clone(),
        };
        edit(&mut copy);
        copy.save();
        same_verdict(&w, name);
    }
}

#[test]
fn an_l1_table_claiming_terabytes_cannot_be_opened() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "l1huge.qcow2");
    img.put32(36, 0x4000_0000);
    img.save();
    assert!(same_verdict(&w, "l1huge.qcow2").is_none());
    let run = w.vmimage(&["check", "l1huge.qcow2"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("Active L1 table too large"),
        "{}",
        run.stderr
    );
}

#[test]
fn headers_qemu_refuses_cannot_be_checked() {
    let w = Workdir::new();
    let img = damaged_base(&w, "hdr.qcow2");
    let cases: [(&str, u64, u64, usize); 6] = [
        ("incompat.qcow2", 72, 0x20, 8),
        ("version.qcow2", 4, 4, 4),
        ("cbits.qcow2", 20, 22, 4),
        ("rorder.qcow2", 96, 7, 4),
        ("l1off.qcow2", 40, 0x30008, 8),
        ("hlen.qcow2", 100, 100, 4),
    ];
    for (name, at, value, width) in cases {
        let mut copy = Qcow2File {
            path: w.join(name),
            data: img.data.clone(),
        };
        if width == 8 {
            copy.put64(at, value);
        } else {
            copy.put32(at, value as u32);
        }
        copy.save();
        assert!(
            same_verdict(&w, name).is_none(),
            "{name}: qemu-img opened it"
        );
    }
    let run = w.vmimage(&["check", "incompat.qcow2"]);
    assert!(
        run.stderr
            .contains("Unsupported qcow2 feature(s): Unknown incompatible feature: 20"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_refcount_table_is_checked_not_refused() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "noreft.qcow2");
    img.put32(56, 0);
    img.save();
    same_verdict(&w, "noreft.qcow2");
}

#[test]
fn dirty_and_corrupt_bits_are_checked_read_only() {
    let w = Workdir::new();
    let mut img = damaged_base(&w, "bits.qcow2");
    let incompat = img.be64(72);
    img.put64(72, incompat | 3);
    img.save();
    same_verdict(&w, "bits.qcow2");
}

// ----------------------------------------------------------------------------------------------
// Other formats and unreadable files.
// ----------------------------------------------------------------------------------------------

#[test]
fn formats_without_a_check_exit_63() {
    let w = Workdir::new();
    w.write("disk.raw", &vec![0u8; 1 << 20]);
    w.qemu_img(&["create", "-q", "-f", "vpc", "disk.vhd", "16M"]);
    for name in ["disk.raw", "disk.vhd"] {
        let qemu = qemu_check(&w, &[name]);
        assert_eq!(qemu.code, 63);
        let run = w.vmimage(&["check", name]);
        run.expect_code(63);
        assert!(
            run.stderr
                .contains("This image format does not support checks")
        );
    }
}

#[test]
fn a_missing_file_cannot_be_checked() {
    let w = Workdir::new();
    let run = w.vmimage(&["check", "nope.qcow2"]);
    run.expect_code(1);
    assert!(run.stderr.starts_with("vmimage: "));
    assert_eq!(run.stderr.trim().lines().count(), 1);
}

#[test]
fn human_output_matches_qemu_img_for_a_clean_image() {
    let w = Workdir::new();
    create(&w, "h.qcow2", "", "64M");
    write(&w, "h.qcow2", &SCATTERED);
    let qemu = w.qemu_img(&["check", "h.qcow2"]);
    let ours = w.vmimage(&["check", "h.qcow2"]);
    ours.expect_code(0);
    assert_eq!(ours.stdout, String::from_utf8_lossy(&qemu.stdout));
}

#[test]
fn extended_l2_bitmap_damage_matches_qemu() {
    let w = Workdir::new();
    create(&w, "el2bad.qcow2", "extended_l2=on,cluster_size=64k", "64M");
    write(
        &w,
        "el2bad.qcow2",
        &[
            "write -P 1 0 4k",
            "write -P 2 1M 64k",
            "write -c -P 3 2M 64k",
        ],
    );
    let mut img = Qcow2File::open(&w, "el2bad.qcow2");
    let l2 = img.l2_table(0);
    let entry = |i: u64| l2 + i * 16;
    // Cluster 0: a subcluster both allocated and zero.
    let b0 = img.be64(entry(0) + 8);
    img.put64(entry(0) + 8, b0 | ((b0 & 0xffff_ffff) << 32));
    // Cluster 5 (unallocated): allocation bits without an offset.
    img.put64(entry(5) + 8, 0xff);
    // Cluster 32 (compressed, 2 MiB): a non-zero bitmap.
    img.put64(entry(32) + 8, 1);
    img.save();
    verdict(&w, "el2bad.qcow2", 2);
}

#[test]
fn references_past_the_refcount_width_overflow_as_in_qemu() {
    let w = Workdir::new();
    create(&w, "ovf.qcow2", "refcount_bits=1", "64M");
    write(&w, "ovf.qcow2", &SCATTERED);
    let mut img = Qcow2File::open(&w, "ovf.qcow2");
    let l2 = img.l2_table(0);
    let entries: Vec<(u64, u64)> = (0..img.cluster_size() / 8)
        .map(|i| (l2 + i * 8, img.be64(l2 + i * 8)))
        .filter(|(_, e)| *e != 0)
        .collect();
    img.put64(entries[1].0, entries[0].1);
    img.put64(entries[2].0, entries[0].1);
    img.save();
    verdict(&w, "ovf.qcow2", 2);
}

#[test]
fn tables_claiming_more_than_the_file_holds_are_read_as_zeros() {
    let w = Workdir::new();
    create(&w, "claims.qcow2", "", "64M");
    write(
        &w,
        "claims.qcow2",
        &["write -P 0 0 64k", "write -P 0 2M 64k"],
    );
    let mut img = Qcow2File::open(&w, "claims.qcow2");
    // QEMU's largest L1 table (32 MiB) and refcount table (8 MiB) in a file of a few MiB.
    img.put32(36, 4 * 1024 * 1024);
    img.put32(56, (8 << 20) / img.cluster_size() as u32);
    img.save();
    same_verdict(&w, "claims.qcow2");
}

#[test]
fn bitmap_damage_matches_qemu() {
    let w = Workdir::new();
    create(&w, "bmbad.qcow2", "", "64M");
    write(&w, "bmbad.qcow2", &SCATTERED);
    w.qemu_img(&["bitmap", "--add", "bmbad.qcow2", "b0"]);
    write(&w, "bmbad.qcow2", &["write -P 0x99 8M 1M"]);
    let img = Qcow2File::open(&w, "bmbad.qcow2");
    // Find the bitmaps extension (0x23852875) after the 112-byte header.
    let mut at = 112u64;
    let dir = loop {
        let magic = img.be32(at);
        let len = u64::from(img.be32(at + 4));
        assert_ne!(magic, 0, "no bitmaps extension");
        if magic == 0x2385_2875 {
            break img.be64(at + 8 + 16);
        }
        at += 8 + len.next_multiple_of(8);
    };
    let table = img.be64(dir);
    let cases: Vec<(&str, Edit)> = vec![
        // Granularity below 512 bytes breaks a directory constraint: qemu-img cannot open.
        (
            "bm-granularity.qcow2",
            Box::new(move |f| f.data[(dir + 17) as usize] = 8),
        ),
        // A reserved bit in a table entry of a clean bitmap: the open fails too.
        (
            "bm-entry.qcow2",
            Box::new(move |f| {
                let e = f.be64(table);
                f.put64(table, e | 2);
            }),
        ),
        // The same bitmap marked in use: opened, then the check stops on the bad entry.
        (
            "bm-in-use.qcow2",
            Box::new(move |f| {
                let e = f.be64(table);
                f.put64(table, e | 2);
                let flags = f.be32(dir + 12);
                f.put32(dir + 12, flags | 1);
            }),
        ),
        // The bitmaps autoclear bit cleared: bitmaps are ignored, their clusters leak.
        (
            "bm-autoclear.qcow2",
            Box::new(|f| {
                let a = f.be64(88);
                f.put64(88, a & !1);
            }),
        ),
    ];
    for (name, edit) in cases {
        let mut copy = Qcow2File {
            path: w.join(name),
            data: img.data.clone(),
        };
        edit(&mut copy);
        copy.save();
        same_verdict(&w, name);
    }
}

#[test]
fn an_l2_table_shared_by_many_l1_entries_is_walked_once_with_the_same_counts() {
    let w = Workdir::new();
    create(&w, "fan.qcow2", "cluster_size=4k", "1G");
    write(&w, "fan.qcow2", &["write -P 1 0 64k"]);
    let mut img = Qcow2File::open(&w, "fan.qcow2");
    let l1 = img.l1_offset();
    let first = img.be64(l1);
    // Every L1 entry points at the first L2 table.
    let l1_entries = u64::from(img.be32(36));
    for i in 1..l1_entries {
        img.put64(l1 + i * 8, first);
    }
    img.save();
    // Counters and finding lines equal qemu-img's; only the order of the repeated lines
    // differs (they are grouped at the table's first entry).
    compare_with_qemu(&w, "fan.qcow2", &["fan.qcow2"], false).expect("a report");
}
