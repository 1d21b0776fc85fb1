//! Unit tests of the VMDK description: one per rule, truncation, random bytes.

use super::*;
use crate::safety::{Finding, assert_fires};

const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=9e3b9643\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 131072 SPARSE \"m.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"130\"\nddb.adapterType = \"ide\"\n";

/// A monolithicSparse (or streamOptimized) image laid out as QEMU's `vmdk_init_extent()`
/// writes it: header, descriptor at sector 1 (20 sectors), redundant grain directory at 21,
/// grain directory at 30, grains from sector 128.
fn sparse_image(capacity: u64, compressed: bool, descriptor: &str) -> Vec<u8> {
    let mut d = vec![0u8; 65536];
    let mut put = |at: usize, v: &[u8]| d[at..at + v.len()].copy_from_slice(v);
    put(0, sparse::MAGIC);
    put(4, &(if compressed { 3u32 } else { 1 }).to_le_bytes());
    let flags = if compressed { 0x3_0001u32 } else { 3 };
    put(8, &flags.to_le_bytes());
    put(12, &capacity.to_le_bytes());
    put(20, &128u64.to_le_bytes());
    put(28, &1u64.to_le_bytes());
    put(36, &20u64.to_le_bytes());
    put(44, &512u32.to_le_bytes());
    put(48, &21u64.to_le_bytes());
    put(56, &30u64.to_le_bytes());
    put(64, &128u64.to_le_bytes());
    put(73, b"\n \r\n");
    put(77, &u16::from(compressed).to_le_bytes());
    put(512, descriptor.as_bytes());
    d
}

fn report(d: &[u8]) -> FormatReport {
    describe(d, &Probe::from_bytes(d)).expect("in-memory")
}

/// The distinct checks that fired, in name order.
fn checks(r: &FormatReport) -> Vec<Check> {
    let mut c: Vec<Check> = r.findings.iter().map(|f| f.check).collect();
    c.sort_by_key(|c| c.name());
    c.dedup();
    c
}

/// The findings of a report that has exactly one.
#[track_caller]
fn only(r: &FormatReport) -> &[Finding] {
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    &r.findings
}

/// The rule ids that fired, sorted, without repeats.
fn ids(r: &FormatReport) -> Vec<&'static str> {
    let mut ids: Vec<&str> = r.findings.iter().map(|f| f.rule).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn specific(r: &FormatReport) -> &VmdkSpecific {
    match &r.format_specific {
        Some(FormatSpecific::Vmdk(v)) => v,
        other => panic!("no vmdk facts: {other:?}"),
    }
}

fn patch(mut d: Vec<u8>, at: usize, v: &[u8]) -> Vec<u8> {
    d[at..at + v.len()].copy_from_slice(v);
    d
}

#[test]
fn detection_covers_sparse_legacy_and_text_descriptors() {
    let det = |b: &[u8]| detect(&Probe::from_bytes(b));
    assert_eq!(
        det(&sparse_image(128, false, DESCRIPTOR)),
        Some(VmdkDetection::Sparse)
    );
    assert_eq!(det(b"COWD\x01\0\0\0"), Some(VmdkDetection::LegacySparse));
    assert_eq!(det(DESCRIPTOR.as_bytes()), Some(VmdkDetection::Descriptor));
    // QEMU's probe: comments and lines of spaces, then version=N.
    assert_eq!(
        det(b"# x\n   \nversion=2\n"),
        Some(VmdkDetection::Descriptor)
    );
    assert_eq!(
        det(b"  \r\nversion=3\r\nx"),
        Some(VmdkDetection::Descriptor)
    );
    assert_eq!(det(b"\nversion=1\n"), None);
    assert_eq!(det(b"version=4\n"), None);
    assert_eq!(det(b"hello"), None);
    assert_fires(only(&report(b"hello")), "vmdk.signature");
}

#[test]
fn a_monolithic_sparse_image_reads_as_qemu_reports_it() {
    let mut r = report(&sparse_image(131_072, false, DESCRIPTOR));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.virtual_size, Some(64 << 20));
    assert_eq!(r.cluster_size, Some(65536));
    r.resolve_paths("dir/m.vmdk");
    let v = specific(&r);
    assert_eq!(v.cid, 0x9e3b_9643);
    assert_eq!(v.parent_cid, 0xffff_ffff);
    assert_eq!(v.create_type, "monolithicSparse");
    assert_eq!(v.extents.len(), 1);
    assert_eq!(v.extents[0].filename, "dir/m.vmdk");
    assert_eq!(v.extents[0].format, "");
    assert_eq!(v.extents[0].cluster_size, Some(65536));
    assert_eq!(v.extents[0].compressed, None);
}

#[test]
fn a_compressed_image_is_stream_optimized() {
    let desc = DESCRIPTOR.replace("monolithicSparse", "streamOptimized");
    let r = report(&sparse_image(131_072, true, &desc));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let v = specific(&r);
    assert_eq!(v.create_type, "streamOptimized");
    assert_eq!(v.extents[0].compressed, Some(true));
}

/// A streamOptimized image whose header defers to a footer, as VMware writes them.
fn footer_image(footer_capacity: u64) -> Vec<u8> {
    let desc = DESCRIPTOR.replace("monolithicSparse", "streamOptimized");
    let mut d = sparse_image(131_072, true, &desc);
    let footer = sparse_image(footer_capacity, true, "")[..512].to_vec();
    d[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
    let mut marker = vec![0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    d.extend(marker);
    d.extend(footer);
    d.extend(vec![0u8; 512]);
    d
}

#[test]
fn a_stream_footer_takes_over_the_header_and_must_match_it() {
    let r = report(&footer_image(131_072));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.virtual_size, Some(64 << 20));
    let r = report(&footer_image(262_144));
    assert_fires(only(&r), "vmdk.footer-mismatch");
    assert_eq!(r.virtual_size, None);
    // The footer area is the last three sectors: marker, footer, end-of-stream marker.
    let n = footer_image(131_072).len();
    let (marker, footer) = (n - 1536, n - 1024);
    let d = patch(footer_image(131_072), footer, b"X");
    assert_fires(only(&report(&d)), "vmdk.footer-magic");
    let d = patch(footer_image(131_072), marker + 12, &2u32.to_le_bytes());
    assert_fires(only(&report(&d)), "vmdk.footer-markers");
    let d = patch(footer_image(131_072), marker + 100, &[1]);
    assert_fires(only(&report(&d)), "vmdk.footer-padding");
    let d = patch(footer_image(131_072), footer + 56, &GD_AT_END.to_le_bytes());
    assert_fires(only(&report(&d)), "vmdk.footer-chained");
    // Too short for a footer at all.
    let d = patch(
        sparse_image(131_072, true, DESCRIPTOR)[..1024].to_vec(),
        56,
        &GD_AT_END.to_le_bytes(),
    );
    assert_fires(only(&report(&d)), "vmdk.footer-missing");
}

#[test]
fn sparse_header_rules_fire() {
    let base = sparse_image(131_072, false, DESCRIPTOR);
    let case = |at: usize, v: &[u8]| report(&patch(base.clone(), at, v));
    assert_fires(only(&case(4, &4u32.to_le_bytes())), "vmdk.version");
    let fired = case(44, &513u32.to_le_bytes());
    assert_fires(only(&fired), "vmdk.grain-table-size");
    let fired = case(20, &0u64.to_le_bytes());
    assert_fires(only(&fired), "vmdk.grain-table-coverage");
    let fired = case(64, &1000u64.to_le_bytes());
    assert_fires(only(&fired), "vmdk.grains-past-eof");
    let fired = case(20, &0x20_0001u64.to_le_bytes());
    assert_fires(only(&fired), "vmdk.grain-size");
    // The grain directory, then the redundant one.
    let fired = case(56, &(1u64 << 40).to_le_bytes());
    assert_fires(only(&fired), "vmdk.grain-directory-past-eof");
    let fired = case(48, &(1u64 << 40).to_le_bytes());
    assert_fires(only(&fired), "vmdk.grain-directory-past-eof");
    let fired = case(28, &2u64.to_le_bytes());
    assert_fires(only(&fired), "vmdk.embedded-descriptor-offset");
    // 2^55 sectors: the grain directory size truncates to 0 in 32 bits, the bytes overflow.
    let fired = case(12, &(1u64 << 55).to_le_bytes());
    assert_fires(only(&fired), "vmdk.capacity-overflow");
    // A zero capacity makes QEMU read the embedded descriptor as a descriptor file.
    let d = patch(base.clone(), 12, &0u64.to_le_bytes());
    let fired = report(&patch(d, 28, &u64::MAX.to_le_bytes()));
    assert_fires(only(&fired), "vmdk.descriptor-offset-overflow");
    // A descriptor size past the end of the file is no truncation: QEMU reads the area
    // zero-padded and the text ends at its first NUL.
    let r = report(&patch(base.clone(), 36, &1000u64.to_le_bytes()));
    assert_eq!(checks(&r), [], "{:?}", r.findings);
    // A grain directory of more than 32 Mi entries: 1-sector grains, 512 per table.
    let d = patch(base.clone(), 20, &1u64.to_le_bytes());
    let d = patch(d, 12, &(512u64 * (32 << 20) + 512).to_le_bytes());
    assert_fires(only(&report(&d)), "vmdk.grain-directory-size");
}

#[test]
fn embedded_descriptor_rules_fire() {
    let with = |desc: &str| report(&sparse_image(131_072, false, desc));
    let r = with(&DESCRIPTOR.replace("monolithicSparse", "monolithicFlat"));
    assert_fires(only(&r), "vmdk.create-type");
    // QEMU still reports its own create type from the header.
    assert_eq!(specific(&r).create_type, "monolithicSparse");
    let r = with(&DESCRIPTOR.replace("\"m.vmdk\"", "\"/etc/passwd\""));
    assert_fires(only(&r), "vmdk.embedded-extent-path");
    let r = with(&DESCRIPTOR.replace("#DDB", "something odd"));
    assert_fires(only(&r), "vmdk.descriptor-line");
    let r = with(&DESCRIPTOR.replace("RW 131072 SPARSE \"m.vmdk\"", ""));
    assert_fires(only(&r), "vmdk.no-extents");
    let r = with(&DESCRIPTOR.replace("createType=\"monolithicSparse\"\n", ""));
    assert_fires(only(&r), "vmdk.missing-create-type");
    let r = with(&DESCRIPTOR.replace("CID=9e3b9643\nparentCID=ffffffff\n", ""));
    assert_fires(only(&r), "vmdk.cid");
    assert_eq!(r.format_specific, None);
    assert_eq!(r.virtual_size, None);
    let r = with(&DESCRIPTOR.replace("ide", "idé"));
    assert_fires(only(&r), "vmdk.descriptor-not-ascii");
}

#[test]
fn a_parent_hint_is_a_backing_file() {
    let desc = DESCRIPTOR.replace(
        "parentCID=ffffffff\n",
        "parentCID=9e3b9643\nparentFileNameHint=\"base.vmdk\"\n",
    );
    let r = report(&sparse_image(131_072, false, &desc));
    assert_fires(only(&r), "vmdk.parent");
    assert_eq!(r.backing_filename.as_deref(), Some("base.vmdk"));
    assert_eq!(r.backing_format.as_deref(), Some("vmdk"));
    assert_eq!(specific(&r).parent_cid, 0x9e3b_9643);
    // A hint longer than QEMU's 4095 bytes fails its open.
    let long = format!("parentFileNameHint=\"{}\"\n", "a".repeat(4096));
    let desc = DESCRIPTOR.replace(
        "parentCID=ffffffff\n",
        &format!("parentCID=ffffffff\n{long}"),
    );
    let r = report(&sparse_image(131_072, false, &desc));
    assert_fires(only(&r), "vmdk.parent-hint");
    assert_eq!(r.backing_filename, None);
}

const FLAT: &str = "# Disk DescriptorFile\nversion=1\nCID=40df3b38\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 131072 FLAT \"flat-flat.vmdk\" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n";

#[test]
fn a_flat_descriptor_is_described_and_refused_without_opening_extents() {
    let mut r = report(FLAT.as_bytes());
    assert_eq!(ids(&r), ["vmdk.create-type", "vmdk.extent-file"]);
    assert_fires(&r.findings, "vmdk.extent-file");
    assert_eq!(r.virtual_size, Some(64 << 20));
    assert_eq!(r.cluster_size, None);
    r.resolve_paths("/images/flat.vmdk");
    let v = specific(&r);
    assert_eq!(v.create_type, "monolithicFlat");
    assert_eq!(v.extents[0].filename, "/images/flat-flat.vmdk");
    assert_eq!(v.extents[0].format, "FLAT");
    assert_eq!(v.extents[0].cluster_size, None);
    r.resolve_paths("flat.vmdk");
    assert_eq!(specific(&r).extents[0].filename, "flat-flat.vmdk");
}

#[test]
fn a_descriptor_naming_host_files_is_refused() {
    let desc = FLAT.replace(
        "RW 131072 FLAT \"flat-flat.vmdk\" 0",
        "RW 8 FLAT \"/etc/passwd\" 0\nRW 8 FLAT \"/etc/shadow\" 0",
    );
    let mut r = report(desc.as_bytes());
    let paths: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.check == Check::VmdkExtentPath)
        .collect();
    assert_eq!(paths.len(), 2);
    assert!(paths[0].detail.contains("/etc/passwd"));
    r.resolve_paths("x/d.vmdk");
    assert_eq!(specific(&r).extents[1].filename, "/etc/shadow");
    // Many extents: the findings are capped with a summary.
    let many: String = (0..20).map(|i| format!("RW 8 FLAT \"f{i}\" 0\n")).collect();
    let desc = FLAT.replace("RW 131072 FLAT \"flat-flat.vmdk\" 0\n", &many);
    let r = report(desc.as_bytes());
    let n = r
        .findings
        .iter()
        .filter(|f| f.check == Check::VmdkExtentPath)
        .count();
    assert_eq!(n, MAX_EXTENT_FINDINGS + 1);
    assert_eq!(r.virtual_size, Some(20 * 8 * 512));
}

#[test]
fn descriptor_file_rules_fire() {
    // QEMU refuses unknown create types: no size.
    let r = report(FLAT.replace("monolithicFlat", "custom").as_bytes());
    assert_eq!(r.virtual_size, None);
    assert!(checks(&r).contains(&Check::VmdkCreateType));
    // An allowed type in a descriptor file is invalid there.
    let r = report(
        FLAT.replace("monolithicFlat", "monolithicSparse")
            .as_bytes(),
    );
    assert_eq!(
        ids(&r),
        ["vmdk.extent-file", "vmdk.sparse-create-type-in-file"]
    );
    assert_fires(&r.findings, "vmdk.sparse-create-type-in-file");
    // An extent line QEMU cannot parse.
    let r = report(FLAT.replace("\" 0\n", "\"\n").as_bytes());
    assert_fires(&r.findings, "vmdk.extent-line");
    assert_eq!(r.virtual_size, None);
    // Extents whose sizes overflow.
    let r = report(
        FLAT.replace("RW 131072 FLAT", "RW 9000000000000000000 FLAT")
            .as_bytes(),
    );
    assert_fires(&r.findings, "vmdk.extent-size-overflow");
    assert_eq!(r.virtual_size, None);
    // Too large to be a descriptor.
    let mut big = FLAT.as_bytes().to_vec();
    big.resize(2 << 20, b'\n');
    let r = report(&big);
    assert!(r.findings[0].detail.contains("at most 1 MiB"));
    assert_fires(&r.findings[..1], "vmdk.descriptor-file-size");
    // No createType.
    let r = report(FLAT.replace("createType", "kind").as_bytes());
    assert_fires(&r.findings, "vmdk.missing-create-type");
}

#[test]
fn a_zero_capacity_sparse_header_is_a_descriptor_file() {
    let mut d = sparse_image(0, false, "");
    d[28..36].copy_from_slice(&2u64.to_le_bytes());
    let desc = FLAT.replace("flat-flat.vmdk", "/etc/passwd");
    d[1024..1024 + desc.len()].copy_from_slice(desc.as_bytes());
    // QEMU reads the CIDs at 0x200: put them there too.
    d[512..512 + 40].copy_from_slice(b"CID=1234\nparentCID=ffffffff\n\0\0\0\0\0\0\0\0\0\0\0\0");
    let r = report(&d);
    assert!(
        checks(&r).contains(&Check::VmdkExtentPath),
        "{:?}",
        r.findings
    );
    assert_eq!(specific(&r).cid, 0x1234);
    assert_eq!(specific(&r).extents.len(), 1);
}

#[test]
fn legacy_sparse_extents_are_unsupported() {
    let r = report(b"COWD\x01\0\0\0\0\0\0\0");
    assert_fires(only(&r), "vmdk.legacy-sparse");
}

#[test]
fn truncation_at_several_points_never_panics_and_is_reported() {
    let d = sparse_image(131_072, false, DESCRIPTOR);
    for cut in [4usize, 79, 512, 600, 15_000, 16_000, 40_000] {
        let r = report(&d[..cut]);
        assert!(!r.findings.is_empty(), "cut {cut}");
        assert!(
            r.findings
                .iter()
                .any(|f| matches!(f.check, Check::Truncated | Check::InvalidHeader)),
            "cut {cut}: {:?}",
            r.findings
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut state = 0x0bad_cafe_dead_beefu64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = sparse_image(131_072, false, DESCRIPTOR);
    for _ in 0..300 {
        let mut d = base.clone();
        for _ in 0..16 {
            let at = (next() as usize) % 1200;
            d[at] = next() as u8;
        }
        let _ = report(&d);
        let mut t = FLAT.as_bytes().to_vec();
        for _ in 0..8 {
            let at = (next() as usize) % t.len();
            t[at] = next() as u8;
        }
        let _ = report(&t);
    }
}
