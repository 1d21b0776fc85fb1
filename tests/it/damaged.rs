//! Damaged and hostile qcow2 headers: each field pushed out of range, truncation at several
//! points, random bytes. `vmimage info` must give exit 1, a finding naming the rule, one
//! sentence per problem on stderr naming the file, and never panic. Where QEMU refuses the same
//! header, `qemu-img info` is checked to fail too, so the rule is not stricter than QEMU's
//! without a reason.

use serde_json::Value;

use crate::util::Workdir;

/// Offsets of qcow2 header fields (`docs/interop/qcow2.rst`, "Header").
mod off {
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const CLUSTER_BITS: usize = 20;
    pub const CRYPT_METHOD: usize = 32;
    pub const L1_SIZE: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
    pub const REFCOUNT_TABLE_OFFSET: usize = 48;
    pub const REFCOUNT_TABLE_CLUSTERS: usize = 56;
    pub const NB_SNAPSHOTS: usize = 60;
    pub const SNAPSHOTS_OFFSET: usize = 64;
    pub const INCOMPATIBLE: usize = 72;
    pub const REFCOUNT_ORDER: usize = 96;
    pub const HEADER_LENGTH: usize = 100;
    pub const COMPRESSION_TYPE: usize = 104;
}

fn be32(d: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(d[o..o + 4].try_into().unwrap())
}
fn be64(d: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(d[o..o + 8].try_into().unwrap())
}

enum Patch {
    U8(usize, u8),
    U32(usize, u32),
    U64(usize, u64),
}

fn apply(base: &[u8], patches: &[Patch]) -> Vec<u8> {
    let mut d = base.to_vec();
    for p in patches {
        match *p {
            Patch::U8(o, v) => d[o] = v,
            Patch::U32(o, v) => d[o..o + 4].copy_from_slice(&v.to_be_bytes()),
            Patch::U64(o, v) => d[o..o + 8].copy_from_slice(&v.to_be_bytes()),
        }
    }
    d
}

fn findings(v: &Value) -> Vec<(String, String)> {
    v["safety"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `info` on `data` and asserts exit 1 with an error finding `check`; returns the report.
fn assert_refused(w: &Workdir, name: &str, data: &[u8], check: &str) -> Value {
    w.write(name, data);
    let run = w.vmimage(&["info", "--json", name]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["safety"]["safe"], Value::Bool(false), "{name}: {v:#}");
    assert!(
        findings(&v).contains(&(check.to_string(), "error".to_string())),
        "{name}: expected an error finding {check}, got {v:#}"
    );
    assert!(
        run.stderr
            .lines()
            .all(|l| l.starts_with("vmimage: ") && l.contains(name)),
        "{name}: every stderr line names the file: {}",
        run.stderr
    );
    // The human form gives the same status.
    w.vmimage(&["info", name]).expect_code(1);
    v
}

fn qemu_refuses(w: &Workdir, name: &str) -> bool {
    !w.qemu_img_any(&["info", "--output=json", "-f", "qcow2", name])
        .status
        .success()
}

#[test]
fn each_header_field_out_of_range_is_refused_like_qemu_refuses_it() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "1G"]);
    w.qemu_io(&["-c", "write -P 7 0 256k", "base.qcow2"]);
    let base = std::fs::read(w.join("base.qcow2")).unwrap();
    let l1_offset = be64(&base, off::L1_TABLE_OFFSET);
    let file_len = base.len() as u64;
    use Patch::*;
    let cases: Vec<(&str, Vec<Patch>, &str)> = vec![
        ("version4", vec![U32(off::VERSION, 4)], "invalid-header"),
        ("version1", vec![U32(off::VERSION, 1)], "invalid-header"),
        (
            "cluster-bits-8",
            vec![U32(off::CLUSTER_BITS, 8)],
            "invalid-header",
        ),
        (
            "cluster-bits-22",
            vec![U32(off::CLUSTER_BITS, 22)],
            "invalid-header",
        ),
        (
            "cluster-bits-huge",
            vec![U32(off::CLUSTER_BITS, u32::MAX)],
            "invalid-header",
        ),
        (
            "header-length-100",
            vec![U32(off::HEADER_LENGTH, 100)],
            "invalid-header",
        ),
        (
            "header-length-huge",
            vec![U32(off::HEADER_LENGTH, 0x1000_0000)],
            "invalid-header",
        ),
        (
            "compression-bit-missing",
            vec![U8(off::COMPRESSION_TYPE, 1)],
            "invalid-header",
        ),
        (
            "compression-type-unknown",
            vec![U8(off::COMPRESSION_TYPE, 9), U64(off::INCOMPATIBLE, 8)],
            "invalid-header",
        ),
        (
            "crypt-method-3",
            vec![U32(off::CRYPT_METHOD, 3)],
            "invalid-header",
        ),
        ("l1-too-small", vec![U32(off::L1_SIZE, 1)], "invalid-header"),
        (
            "l1-terabytes",
            vec![U32(off::L1_SIZE, u32::MAX)],
            "invalid-header",
        ),
        (
            "l1-unaligned",
            vec![U64(off::L1_TABLE_OFFSET, l1_offset + 8)],
            "invalid-header",
        ),
        (
            "l1-past-eof",
            vec![U64(off::L1_TABLE_OFFSET, 1 << 40)],
            "truncated",
        ),
        (
            "reftable-zero",
            vec![U32(off::REFCOUNT_TABLE_CLUSTERS, 0)],
            "invalid-header",
        ),
        (
            "reftable-huge",
            vec![U32(off::REFCOUNT_TABLE_CLUSTERS, u32::MAX)],
            "invalid-header",
        ),
        (
            "reftable-past-eof",
            vec![U64(off::REFCOUNT_TABLE_OFFSET, 1 << 50)],
            "truncated",
        ),
        (
            "refcount-order-7",
            vec![U32(off::REFCOUNT_ORDER, 7)],
            "invalid-header",
        ),
        (
            "backing-offset-past-cluster",
            vec![U64(off::BACKING_FILE_OFFSET, 128 * 1024)],
            "invalid-header",
        ),
        (
            "too-many-snapshots",
            vec![U32(off::NB_SNAPSHOTS, 65537)],
            "invalid-header",
        ),
        (
            "snapshot-table-past-eof",
            vec![
                U32(off::NB_SNAPSHOTS, 1),
                U64(
                    off::SNAPSHOTS_OFFSET,
                    file_len.next_multiple_of(65536) + 65536,
                ),
            ],
            "truncated",
        ),
        (
            "snapshot-table-on-header",
            vec![U32(off::NB_SNAPSHOTS, 1), U64(off::SNAPSHOTS_OFFSET, 0)],
            "invalid-header",
        ),
    ];
    // QEMU reads past the end of a file as zeros, so it opens images whose tables lie beyond
    // EOF; for a cloud gate a table outside the file is a truncated image. Those rules are
    // deliberately stricter than QEMU's, as is a table placed on top of the header (QEMU
    // parses the header bytes as a snapshot entry). Every other rule must agree with QEMU.
    let stricter_than_qemu = [
        "l1-past-eof",
        "reftable-past-eof",
        "snapshot-table-past-eof",
        "snapshot-table-on-header",
    ];
    for (name, patches, check) in &cases {
        let file = format!("{name}.qcow2");
        let data = apply(&base, patches);
        assert_refused(&w, &file, &data, check);
        assert_eq!(
            qemu_refuses(&w, &file),
            !stricter_than_qemu.contains(name),
            "qemu-img and vmimage disagree on {file} beyond the documented differences"
        );
    }
}

#[test]
fn feature_bits_give_the_documented_findings() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "64M"]);
    let base = std::fs::read(w.join("base.qcow2")).unwrap();
    let incompat = be64(&base, off::INCOMPATIBLE);

    // Unknown incompatible bit 5: unsafe, and QEMU refuses it too.
    let v = assert_refused(
        &w,
        "unknown-bit.qcow2",
        &apply(&base, &[Patch::U64(off::INCOMPATIBLE, incompat | 1 << 5)]),
        "unknown-incompatible-feature",
    );
    assert!(
        v["virtual-size"].is_u64(),
        "a valid header still reports its size"
    );
    assert!(qemu_refuses(&w, "unknown-bit.qcow2"));

    // Corrupt bit: unsafe; QEMU opens it read-only and says corrupt: true.
    let v = assert_refused(
        &w,
        "corrupt.qcow2",
        &apply(&base, &[Patch::U64(off::INCOMPATIBLE, incompat | 2)]),
        "corrupt-bit",
    );
    assert_eq!(v["format-specific"]["data"]["corrupt"], Value::Bool(true));

    // Dirty bit: a warning, exit 0, dirty-flag true as in qemu-img.
    w.write(
        "dirty.qcow2",
        &apply(&base, &[Patch::U64(off::INCOMPATIBLE, incompat | 1)]),
    );
    let run = w.vmimage(&["info", "--json", "dirty.qcow2"]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["dirty-flag"], Value::Bool(true));
    assert!(findings(&v).contains(&("dirty-bit".to_string(), "warning".to_string())));
    let q = w.qemu_info("dirty.qcow2", Some("qcow2"));
    assert_eq!(q["dirty-flag"], Value::Bool(true));

    // Extended L2 and zstd are valid features, not findings.
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,compression_type=zstd",
        "el2.qcow2",
        "64M",
    ]);
    let run = w.vmimage(&["info", "--json", "el2.qcow2"]);
    run.expect_code(0);
    assert!(findings(&run.json()).is_empty());
}

#[test]
fn header_extensions_that_lie_are_refused() {
    let w = Workdir::new();
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "64M"]);
    let base = std::fs::read(w.join("base.qcow2")).unwrap();
    let header_length = be32(&base, off::HEADER_LENGTH) as usize;
    // The first extension (the feature name table) claims more bytes than cluster 0 holds.
    let too_long = apply(&base, &[Patch::U32(header_length + 4, 0x00ff_ffff)]);
    assert_refused(&w, "ext-too-long.qcow2", &too_long, "invalid-header");
    assert!(qemu_refuses(&w, "ext-too-long.qcow2"));
    // A backing format extension longer than QEMU's 15-byte limit.
    let mut long_fmt = base.clone();
    let ext = header_length;
    long_fmt[ext..ext + 4].copy_from_slice(&0xe279_2acau32.to_be_bytes());
    long_fmt[ext + 4..ext + 8].copy_from_slice(&40u32.to_be_bytes());
    long_fmt[ext + 8..ext + 48].fill(b'q');
    long_fmt[ext + 48..ext + 56].fill(0);
    assert_refused(&w, "ext-backing-format.qcow2", &long_fmt, "invalid-header");
}

#[test]
fn truncation_at_every_structure_is_refused_without_panicking() {
    let w = Workdir::new();
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "compat=1.1",
        "base.qcow2",
        "1G",
    ]);
    w.qemu_img(&["snapshot", "-c", "s1", "base.qcow2"]);
    let base = std::fs::read(w.join("base.qcow2")).unwrap();
    for cut in [
        4usize,
        20,
        71,
        103,
        111,
        4096,
        65536,
        65536 * 2,
        base.len() - 1,
    ] {
        if cut >= base.len() {
            continue;
        }
        let name = format!("cut-{cut}.qcow2");
        w.write(&name, &base[..cut]);
        let run = w.vmimage(&["info", "--json", &name]);
        run.expect_code(1);
        let v = run.json();
        assert_eq!(v["format"], Value::String("qcow2".into()), "{name}");
        assert_eq!(v["safety"]["safe"], Value::Bool(false), "{name}: {v:#}");
    }
}

#[test]
fn random_bytes_after_the_qcow2_magic_never_panic() {
    let w = Workdir::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..24 {
        let len = 512 + (next() % 200_000) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        data[..4].copy_from_slice(b"QFI\xfb");
        // Half of the cases keep a plausible version and cluster size so parsing goes deeper.
        if i % 2 == 0 {
            data[4..8].copy_from_slice(&3u32.to_be_bytes());
            data[20..24].copy_from_slice(&16u32.to_be_bytes());
        }
        let name = format!("random-{i}.qcow2");
        w.write(&name, &data);
        let run = w.vmimage(&["info", "--json", &name]);
        assert!(
            run.code == 0 || run.code == 1,
            "random input {i}: exit {}",
            run.code
        );
        let _ = run.json();
    }
}
