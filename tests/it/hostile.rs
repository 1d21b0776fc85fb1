//! The hostile corpus: images built at test time whose headers and tables lie, each run
//! through every command that reads images. For every file and command: the documented exit
//! status (the table below says which and why; for `check`, `qemu-img check` is the oracle), a
//! message on stderr naming the file, no panic, an end within [`WATCHDOG`], and no output or
//! temporary file left behind by a conversion that failed.
//!
//! `verify` gets `--checksum` and `--os-hash-value` computed by `md5sum` and `sha512sum`, so the
//! digest checks pass and only the image's safety (or the tool's robustness) can fail it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::Workdir;

/// A command still running after this long is a hang: it is killed and the test fails. Every
/// case below needs milliseconds; the margin is for a loaded machine.
const WATCHDOG: Duration = Duration::from_secs(20);

/// What one run gave.
struct Outcome {
    /// The exit status, or -1 when the watchdog killed it.
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `vmimage ARGS` in `w`, killing it after [`WATCHDOG`].
fn run_bounded(w: &Workdir, args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
        .args(args)
        .current_dir(w.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmimage");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome {
                code: -1,
                stdout: String::new(),
                stderr: format!("vmimage {args:?} still running after {WATCHDOG:?}: killed"),
            };
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("vmimage {args:?} died from a signal: {status:?}\n{stderr}"));
    Outcome {
        code,
        stdout,
        stderr,
    }
}

/// The hex digest `tool` (md5sum, sha512sum) prints for `file`.
fn tool_hex(w: &Workdir, tool: &str, file: &str) -> String {
    let out = Command::new(tool)
        .arg(file)
        .current_dir(w.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} {file}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `qemu-img check -f qcow2`'s exit status (the oracle for `vmimage check`), or, for a file
/// qemu-img does not probe as qcow2, `qemu-img check`'s status with its own probe.
fn qemu_check_code(w: &Workdir, file: &str) -> i32 {
    let out = Command::new("qemu-img")
        .args(["check", file])
        .current_dir(w.path())
        .stdin(Stdio::null())
        .output()
        .expect("qemu-img is required: it is the test oracle");
    out.status.code().unwrap_or(-1)
}

// ---- building hostile files -----------------------------------------------------------------

/// A file being patched in memory.
struct Bytes(Vec<u8>);

impl Bytes {
    fn read(w: &Workdir, name: &str) -> Self {
        Self(std::fs::read(w.join(name)).unwrap())
    }
    fn be64(&self, at: u64) -> u64 {
        let at = at as usize;
        u64::from_be_bytes(self.0[at..at + 8].try_into().unwrap())
    }
    fn put32(&mut self, at: u64, v: u32) -> &mut Self {
        let at = at as usize;
        self.0[at..at + 4].copy_from_slice(&v.to_be_bytes());
        self
    }
    fn put64(&mut self, at: u64, v: u64) -> &mut Self {
        let at = at as usize;
        self.0[at..at + 8].copy_from_slice(&v.to_be_bytes());
        self
    }
    fn put(&mut self, at: u64, data: &[u8]) -> &mut Self {
        let at = at as usize;
        if self.0.len() < at + data.len() {
            self.0.resize(at + data.len(), 0);
        }
        self.0[at..at + data.len()].copy_from_slice(data);
        self
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn save(&self, w: &Workdir, name: &str) {
        std::fs::write(w.join(name), &self.0).unwrap();
    }
}

/// qcow2 header offsets (`docs/interop/qcow2.rst`, "Header").
mod q {
    pub const SIZE: u64 = 24;
    pub const L1_SIZE: u64 = 36;
    pub const L1_TABLE_OFFSET: u64 = 40;
    pub const REFCOUNT_TABLE_OFFSET: u64 = 48;
    pub const REFCOUNT_TABLE_CLUSTERS: u64 = 56;
    pub const NB_SNAPSHOTS: u64 = 60;
    pub const SNAPSHOTS_OFFSET: u64 = 64;
    pub const HEADER_LENGTH: u64 = 100;
    /// The first header extension of a qemu-img v3 image (the feature name table).
    pub const FIRST_EXTENSION: u64 = 112;
    pub const COPIED: u64 = 1 << 63;
    pub const COMPRESSED: u64 = 1 << 62;
}

/// A 64 MiB qcow2 (64 KiB clusters) with guest data at 0 (128 KiB) and at 1 MiB, as qemu-img
/// lays it out: header, refcount table, refcount block, L1, one L2 table, data. Returns it for
/// patching, with the offsets of its L1 table, L2 table, refcount table and refcount block.
struct Qcow2 {
    b: Bytes,
    l1: u64,
    l2: u64,
    reftable: u64,
}

fn base_qcow2(w: &Workdir, name: &str, extra: &[&str]) -> Qcow2 {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra);
    args.extend([name, "64M"]);
    w.qemu_img(&args);
    w.qemu_io(&[
        "-f",
        "qcow2",
        "-c",
        "write -P 0x5a 0 128k",
        "-c",
        "write -P 0x11 1M 64k",
        name,
    ]);
    let b = Bytes::read(w, name);
    let l1 = b.be64(q::L1_TABLE_OFFSET);
    let reftable = b.be64(q::REFCOUNT_TABLE_OFFSET);
    let l2 = b.be64(l1) & 0x00ff_ffff_ffff_fe00;
    Qcow2 {
        b,
        l1,
        l2,
        reftable,
    }
}

/// Builds the base image as `name`, applies `patch`, and saves it.
fn patched(w: &Workdir, name: &str, patch: impl FnOnce(&mut Qcow2)) -> String {
    let mut img = base_qcow2(w, name, &[]);
    patch(&mut img);
    img.b.save(w, name);
    name.to_string()
}

fn l1_size_claims_terabytes(w: &Workdir) -> String {
    // 2^32 - 1 entries (32 GiB of L1) for a 2 EiB disk: every entry maps 512 MiB.
    patched(w, "l1-size-tb.qcow2", |i| {
        i.b.put32(q::L1_SIZE, u32::MAX).put64(q::SIZE, 1 << 61);
    })
}

fn l1_size_2_pow_31(w: &Workdir) -> String {
    // 2^31 entries: QEMU's own limit is 2^25 (32 MiB).
    patched(w, "l1-2g-entries.qcow2", |i| {
        i.b.put32(q::L1_SIZE, 1 << 31).put64(q::SIZE, 1 << 60);
    })
}

fn refcount_table_claims_terabytes(w: &Workdir) -> String {
    // 2^32 - 1 clusters of refcount table: 256 TiB.
    patched(w, "reftable-tb.qcow2", |i| {
        i.b.put32(q::REFCOUNT_TABLE_CLUSTERS, u32::MAX);
    })
}

fn l1_offset_past_the_end(w: &Workdir) -> String {
    patched(w, "l1-past-end.qcow2", |i| {
        i.b.put64(q::L1_TABLE_OFFSET, 1 << 40);
    })
}

fn refcount_table_past_the_end(w: &Workdir) -> String {
    patched(w, "reftable-past-end.qcow2", |i| {
        i.b.put64(q::REFCOUNT_TABLE_OFFSET, 1 << 40);
    })
}

fn l2_table_past_the_end(w: &Workdir) -> String {
    patched(w, "l2-past-end.qcow2", |i| {
        let l1 = i.l1;
        i.b.put64(l1, q::COPIED | (1 << 40));
    })
}

fn data_cluster_past_the_end(w: &Workdir) -> String {
    patched(w, "data-past-end.qcow2", |i| {
        let l2 = i.l2;
        i.b.put64(l2, q::COPIED | (1 << 40));
    })
}

fn l1_table_on_the_header(w: &Workdir) -> String {
    patched(w, "l1-on-header.qcow2", |i| {
        i.b.put64(q::L1_TABLE_OFFSET, 0);
    })
}

fn l1_table_on_the_refcount_table(w: &Workdir) -> String {
    patched(w, "l1-on-reftable.qcow2", |i| {
        let rt = i.reftable;
        i.b.put64(q::L1_TABLE_OFFSET, rt);
    })
}

fn l2_table_on_the_l1_table(w: &Workdir) -> String {
    // The L1 table is its own L2 table.
    patched(w, "l2-is-l1.qcow2", |i| {
        let l1 = i.l1;
        i.b.put64(l1, q::COPIED | l1);
    })
}

fn l2_entry_points_at_the_l1_table(w: &Workdir) -> String {
    patched(w, "l2-entry-on-l1.qcow2", |i| {
        let (l1, l2) = (i.l1, i.l2);
        i.b.put64(l2, q::COPIED | l1);
    })
}

fn refcount_block_points_at_itself(w: &Workdir) -> String {
    // The refcount table's first entry names the refcount table as its refcount block.
    patched(w, "refblock-self.qcow2", |i| {
        let rt = i.reftable;
        i.b.put64(rt, rt);
    })
}

fn refcount_block_on_the_l1_table(w: &Workdir) -> String {
    patched(w, "refblock-on-l1.qcow2", |i| {
        let (rt, l1) = (i.reftable, i.l1);
        i.b.put64(rt, l1);
    })
}

fn l1_entries_share_one_l2_table(w: &Workdir) -> String {
    // 2 TiB disk whose 4096 L1 entries all name the same L2 table: 64 KiB of file describing
    // 4096 copies of the guest data (a "qcow2 bomb"; qemu-img convert would write them all).
    patched(w, "shared-l2.qcow2", |i| {
        let (l1, l2) = (i.l1, i.l2);
        i.b.put64(q::SIZE, 2 << 40).put32(q::L1_SIZE, 4096);
        for k in 0..4096 {
            i.b.put64(l1 + 8 * k, q::COPIED | l2);
        }
    })
}

fn l2_entries_share_one_data_cluster(w: &Workdir) -> String {
    // Every entry of the L2 table (8192 of them, 512 MiB of guest) names the same data cluster.
    patched(w, "shared-data.qcow2", |i| {
        let l2 = i.l2;
        let first = i.b.be64(l2);
        for k in 0..8192 {
            i.b.put64(l2 + 8 * k, first);
        }
    })
}

fn compressed_descriptor_longer_than_the_file(w: &Workdir) -> String {
    // A compressed cluster starting 100 bytes before the end and claiming the maximum of 256
    // sectors (128 KiB) of compressed data.
    patched(w, "compressed-past-end.qcow2", |i| {
        let l2 = i.l2;
        let at = i.b.len() - 100;
        // 64 KiB clusters: the sector count sits at bit 62 - (16 - 8) = 54.
        i.b.put64(l2, q::COMPRESSED | (255u64 << 54) | at);
    })
}

fn header_length_past_the_end(w: &Workdir) -> String {
    patched(w, "header-length.qcow2", |i| {
        i.b.put32(q::HEADER_LENGTH, 0xffff_fff0);
    })
}

fn header_extension_runs_past_the_cluster(w: &Workdir) -> String {
    // The feature table's length runs 4 GiB past the header cluster.
    patched(w, "extension-past-cluster.qcow2", |i| {
        i.b.put32(q::FIRST_EXTENSION + 4, 0xffff_fff0);
    })
}

fn snapshot_table_claims_too_much(w: &Workdir) -> String {
    // 65536 snapshots (QEMU's maximum) at an offset inside the file, which holds none.
    patched(w, "snapshots.qcow2", |i| {
        let l2 = i.l2;
        i.b.put32(q::NB_SNAPSHOTS, 65536)
            .put64(q::SNAPSHOTS_OFFSET, l2);
    })
}

fn virtual_size_2_pow_63(w: &Workdir) -> String {
    patched(w, "size-2-63.qcow2", |i| {
        i.b.put64(q::SIZE, 1 << 63);
    })
}

fn virtual_size_8_eib_consistent_l1(w: &Workdir) -> String {
    // 8 EiB - 512 with 2 MiB clusters: QEMU's L1 limit (32 MiB) allows at most 2 EiB.
    let img = base_qcow2(w, "size-8e.qcow2", &["-o", "cluster_size=2M"]);
    let mut b = img.b;
    b.put64(q::SIZE, (1 << 63) - 512).put32(q::L1_SIZE, 1 << 24);
    b.save(w, "size-8e.qcow2");
    "size-8e.qcow2".into()
}

/// A 64 MiB qcow2 with one compressed cluster (guest cluster 0) of `compression_type`;
/// returns it with its L2 table offset.
fn compressed_base(w: &Workdir, name: &str, compression_type: &str) -> (Bytes, u64) {
    compressed_base_sized(w, name, compression_type, "64M")
}

/// [`compressed_base`] with a virtual size of `size`.
fn compressed_base_sized(
    w: &Workdir,
    name: &str,
    compression_type: &str,
    size: &str,
) -> (Bytes, u64) {
    let opt = format!("compression_type={compression_type}");
    w.qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opt, name, size]);
    let first = if size == "64M" { "64k" } else { size };
    let write = format!("write -c -P 0x42 0 {first}");
    w.qemu_io(&["-f", "qcow2", "-c", &write, name]);
    let b = Bytes::read(w, name);
    let l1 = b.be64(q::L1_TABLE_OFFSET);
    let l2 = b.be64(l1) & 0x00ff_ffff_ffff_fe00;
    (b, l2)
}

/// Appends `stream` at the end of `b` (sector-aligned, padded to a cluster) and points guest
/// cluster 0's compressed descriptor at it.
fn point_cluster_0_at(b: &mut Bytes, l2: u64, stream: &[u8]) {
    assert!(
        stream.len() <= 128 * 1024,
        "a descriptor names at most 128 KiB"
    );
    let at = b.len().next_multiple_of(512);
    let sectors = (stream.len() as u64).div_ceil(512);
    b.put(at, stream);
    let end = b.len().next_multiple_of(65536);
    b.0.resize(end as usize, 0);
    // 64 KiB clusters: the sector count (minus one) sits at bit 62 - (16 - 8) = 54.
    b.put64(l2, q::COMPRESSED | ((sectors - 1) << 54) | at);
}

fn compressed_zstd_bomb(w: &Workdir) -> String {
    // A zstd frame of 256 MiB of zeros (a few KiB, window within what the decoder accepts) as
    // one 64 KiB cluster.
    use std::io::Write;
    let name = "zstd-bomb.qcow2";
    let (mut b, l2) = compressed_base(w, name, "zstd");
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.window_log(17).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    point_cluster_0_at(&mut b, l2, &bomb);
    b.save(w, name);
    name.into()
}

fn compressed_zstd_bomb_in_a_short_last_cluster(w: &Workdir) -> String {
    // A zstd frame of 1 MiB of zeros as the only cluster of a 40 KiB disk: reads of that
    // cluster end at the disk's end, inside it, and must check the frame as a whole read does.
    let name = "zstd-bomb-short.qcow2";
    let (mut b, l2) = compressed_base_sized(w, name, "zstd", "40960");
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
    point_cluster_0_at(&mut b, l2, &bomb);
    b.save(w, name);
    name.into()
}

fn compressed_zlib_bomb(w: &Workdir) -> String {
    // A raw deflate stream of 100 MiB of zeros (about 100 KiB) as one 64 KiB cluster.
    use std::io::Write;
    let name = "zlib-bomb.qcow2";
    let (mut b, l2) = compressed_base(w, name, "zlib");
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    point_cluster_0_at(&mut b, l2, &bomb);
    b.save(w, name);
    name.into()
}

fn l2_entries_share_one_compressed_cluster(w: &Workdir) -> String {
    // 1024 guest clusters read the same compressed cluster.
    let name = "shared-compressed.qcow2";
    let (mut b, l2) = compressed_base(w, name, "zlib");
    let first = b.be64(l2);
    for k in 1..1024 {
        b.put64(l2 + 8 * k, first);
    }
    b.save(w, name);
    name.into()
}

fn qcow2_and_iso_polyglot(w: &Workdir) -> String {
    // A valid qcow2 that also carries an ISO 9660 primary volume descriptor at 32 KiB (inside
    // the header cluster, which qcow2 leaves unused there).
    patched(w, "polyglot.qcow2", |i| {
        i.b.put(0x8000, b"\x01CD001\x01");
    })
}

fn truncated_inside_the_l2_table(w: &Workdir) -> String {
    patched(w, "truncated.qcow2", |i| {
        let cut = i.l2 + 4096;
        i.b.0.truncate(cut as usize);
    })
}

fn backing_file_name_past_the_end(w: &Workdir) -> String {
    patched(w, "backing-past-end.qcow2", |i| {
        i.b.put64(8, 1 << 40).put32(16, 1000);
    })
}

fn vmdk_descriptor_names_etc_passwd(w: &Workdir) -> String {
    let text = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                createType=\"monolithicFlat\"\n\n# Extent description\n\
                RW 2048 FLAT \"/etc/passwd\" 0\n\n# The Disk Data Base\n#DDB\n\n\
                ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"2\"\n\
                ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n\
                ddb.adapterType = \"ide\"\n";
    w.write("passwd.vmdk", text.as_bytes());
    "passwd.vmdk".into()
}

/// A dynamic VHD with guest data in its first block; returns it with its BAT offset.
fn base_vhd(w: &Workdir, name: &str) -> (Bytes, u64) {
    w.qemu_img(&["create", "-q", "-f", "vpc", name, "64M"]);
    w.qemu_io(&["-f", "vpc", "-c", "write -P 0x33 0 64k", name]);
    let b = Bytes::read(w, name);
    // Footer copy at 0: data_offset at 16 names the dynamic header, whose table offset is at
    // 16 within it.
    let dyn_header = b.be64(16);
    let bat = b.be64(dyn_header + 16);
    (b, bat)
}

fn vhd_bat_entry_past_the_end(w: &Workdir) -> String {
    let name = "bat-entry-past-end.vhd";
    let (mut b, bat) = base_vhd(w, name);
    b.put32(bat, 0x7fff_fff0);
    b.save(w, name);
    name.into()
}

fn vhd_bat_past_the_end(w: &Workdir) -> String {
    let name = "bat-past-end.vhd";
    let (mut b, _) = base_vhd(w, name);
    let dyn_header = b.be64(16);
    b.put64(dyn_header + 16, 1 << 40);
    b.save(w, name);
    name.into()
}

fn vhd_block_size_2_gib(w: &Workdir) -> String {
    let name = "block-2g.vhd";
    let (mut b, _) = base_vhd(w, name);
    let dyn_header = b.be64(16);
    b.put32(dyn_header + 32, 1 << 31);
    b.save(w, name);
    name.into()
}

fn vdi_claims_4_billion_blocks(w: &Workdir) -> String {
    // A VDI header (little-endian) claiming 2^32 - 1 blocks of 1 MiB and an 8 EiB disk.
    let name = "blocks.vdi";
    w.qemu_img(&["create", "-q", "-f", "vdi", name, "64M"]);
    let mut b = Bytes::read(w, name);
    b.put(0x170, &((1u64 << 63) - 512).to_le_bytes())
        .put(0x180, &u32::MAX.to_le_bytes());
    b.save(w, name);
    name.into()
}

fn qed_table_claims_terabytes(w: &Workdir) -> String {
    // QED (refused outright) whose table size (in clusters, at offset 8) is 2^32 - 1.
    let name = "table.qed";
    w.qemu_img(&["create", "-q", "-f", "qed", name, "64M"]);
    let mut b = Bytes::read(w, name);
    b.put(8, &u32::MAX.to_le_bytes());
    b.save(w, name);
    name.into()
}

/// The on-disk bytes of the VHDX BAT region GUID 2DC27766-F623-4200-9D64-115E9BFD4A08
/// (VHDX specification 2.2.3.1: three little-endian fields, then 8 bytes).
const VHDX_BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];

/// A qemu-img VHDX with guest data in its first block; returns it with its BAT offset (from
/// the region table at 192 KiB: a 16-byte header, then 32-byte entries of GUID, offset (le64),
/// length, flags).
fn base_vhdx(w: &Workdir, name: &str) -> (Bytes, u64) {
    w.qemu_img(&["create", "-q", "-f", "vhdx", name, "64M"]);
    w.qemu_io(&["-f", "vhdx", "-c", "write -P 0x44 0 64k", name]);
    let b = Bytes::read(w, name);
    let table = 192 * 1024;
    let count = u32::from_le_bytes(b.0[table + 8..table + 12].try_into().unwrap()) as usize;
    let bat = (0..count)
        .map(|i| table + 16 + 32 * i)
        .find(|&e| b.0[e..e + 16] == VHDX_BAT_GUID)
        .map(|e| u64::from_le_bytes(b.0[e + 16..e + 24].try_into().unwrap()))
        .expect("qemu-img's VHDX has a BAT region");
    (b, bat)
}

fn vhdx_bat_entry_offset_overflows(w: &Workdir) -> String {
    // BAT entry 0, "fully present" (state 6) at offset 2^64 - 1 MiB: the block's end does not
    // fit in 64 bits. The BAT has no checksum, so this one edit leaves a valid file around it.
    let name = "bat-entry-overflow.vhdx";
    let (mut b, bat) = base_vhdx(w, name);
    b.put(bat, &0xffff_ffff_fff0_0006u64.to_le_bytes());
    b.save(w, name);
    name.into()
}

/// Little-endian u64 / u32 of `b` at `at`.
fn le64(b: &Bytes, at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b.0[at..at + 8].try_into().unwrap())
}
fn le32(b: &Bytes, at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(b.0[at..at + 4].try_into().unwrap())
}

/// A qemu-img monolithicSparse VMDK of 100 MiB with data in its first grain; returns it
/// with the file offset of its first grain table (header, little-endian: grain directory
/// sector at 56; a directory entry is a grain table's sector).
fn base_vmdk(w: &Workdir, name: &str) -> (Bytes, u64) {
    w.qemu_img(&["create", "-q", "-f", "vmdk", name, "100M"]);
    w.qemu_io(&["-f", "vmdk", "-c", "write -P 0x55 0 64k", name]);
    let b = Bytes::read(w, name);
    let gd = le64(&b, 56) * 512;
    let gt = u64::from(le32(&b, gd)) * 512;
    (b, gt)
}

fn vmdk_grain_table_entries_share_one_grain(w: &Workdir) -> String {
    // All 512 entries of grain table 0 name grain 0: 64 KiB of data read as 32 MiB (a grain
    // bomb; qemu-img convert would copy it 512 times).
    let name = "shared-grain.vmdk";
    let (mut b, gt) = base_vmdk(w, name);
    let grain0 = le32(&b, gt);
    for k in 1..512 {
        b.put(gt + 4 * k, &grain0.to_le_bytes());
    }
    b.save(w, name);
    name.into()
}

fn vmdk_capacity_2_pow_62_bytes(w: &Workdir) -> String {
    // Capacity (sectors, at 12) of 2^53: a 4 EiB disk whose grain directory would need 2^37
    // entries (QEMU computes the count in 32 bits: 0), from a 100 MiB image's 4-entry one.
    let name = "capacity.vmdk";
    let (mut b, _) = base_vmdk(w, name);
    b.put(12, &(1u64 << 53).to_le_bytes());
    b.save(w, name);
    name.into()
}

fn vmdk_stream_marker_claims_4_gib(w: &Workdir) -> String {
    // A streamOptimized grain whose marker (sector, then a 4-byte compressed length) claims
    // 2^32 - 1 bytes: the reader must not allocate it.
    let name = "marker.vmdk";
    w.qemu_img(&["create", "-q", "-f", "raw", "src.raw", "4M"]);
    w.qemu_io(&["-f", "raw", "-c", "write -P 0x66 0 64k", "src.raw"]);
    w.qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        "src.raw",
        name,
    ]);
    std::fs::remove_file(w.join("src.raw")).unwrap();
    let mut b = Bytes::read(w, name);
    // The first grain follows the header's overhead (sectors, at 64).
    let grain = le64(&b, 64) * 512;
    b.put(grain + 8, &u32::MAX.to_le_bytes());
    b.save(w, name);
    name.into()
}

fn vdi_block_map_entries_share_one_block(w: &Workdir) -> String {
    // Every block map entry (u32 at the map offset, header 0x154) names allocated block 0:
    // 1 MiB of data read as the whole 64 MiB disk.
    let name = "shared-block.vdi";
    w.qemu_img(&["create", "-q", "-f", "vdi", name, "64M"]);
    w.qemu_io(&["-f", "vdi", "-c", "write -P 0x77 0 64k", name]);
    let mut b = Bytes::read(w, name);
    let map = u64::from(le32(&b, 0x154));
    for k in 0..64 {
        b.put(map + 4 * k, &0u32.to_le_bytes());
    }
    b.save(w, name);
    name.into()
}

fn vhdx_bat_entries_share_one_block(w: &Workdir) -> String {
    // BAT entry 1 repeats entry 0 (fully present): one 32 MiB block read as both of the
    // 64 MiB disk's blocks.
    let name = "shared-block.vhdx";
    let (mut b, bat) = base_vhdx(w, name);
    let first = le64(&b, bat);
    assert_eq!(first & 7, 6, "block 0 is fully present");
    b.put(bat + 8, &first.to_le_bytes());
    b.save(w, name);
    name.into()
}

/// A qemu-img qcow (version 1) image of 64 MiB with guest data, patched by `patch` (header:
/// big-endian, backing file offset at 8 and length at 16, size at 24, cluster_bits at 32,
/// l2_bits at 33, crypt_method at 36, L1 table offset at 40).
fn patched_qcow(w: &Workdir, name: &str, patch: impl FnOnce(&mut Bytes)) -> String {
    w.qemu_img(&["create", "-q", "-f", "qcow", name, "64M"]);
    w.qemu_io(&["-f", "qcow", "-c", "write -P 0x66 0 64k", name]);
    let mut b = Bytes::read(w, name);
    patch(&mut b);
    b.save(w, name);
    name.into()
}

fn qcow_v1_size_2_pow_63(w: &Workdir) -> String {
    // An L1 table of 2^34 entries (QEMU's limit: INT_MAX / 8).
    patched_qcow(w, "size-2-63.qcow", |b| {
        b.put64(24, 1 << 63);
    })
}

fn qcow_v1_size_wraps(w: &Workdir) -> String {
    // size + (1 << shift) - 1 overflows 64 bits: QEMU's "Image too large".
    patched_qcow(w, "size-max.qcow", |b| {
        b.put64(24, u64::MAX);
    })
}

fn qcow_v1_cluster_bits_63(w: &Workdir) -> String {
    patched_qcow(w, "cluster-bits.qcow", |b| {
        b.put(32, &[63, 63]);
    })
}

fn qcow_v1_l1_table_at_2_pow_64(w: &Workdir) -> String {
    // The L1 table's end does not fit in 64 bits.
    patched_qcow(w, "l1-at-end.qcow", |b| {
        b.put64(40, u64::MAX - 7);
    })
}

fn qcow_v1_backing_name_past_the_end(w: &Workdir) -> String {
    // 1023 bytes (QEMU's maximum) at 1 TiB: read as zeros, so no name, as in QEMU.
    patched_qcow(w, "backing-past-end.qcow", |b| {
        b.put64(8, 1 << 40).put32(16, 1023);
    })
}

fn empty_file(w: &Workdir) -> String {
    w.write("empty.img", b"");
    "empty.img".into()
}

fn qcow2_magic_only(w: &Workdir) -> String {
    w.write("magic-only.qcow2", b"QFI\xfb\x00\x00\x00\x03");
    "magic-only.qcow2".into()
}

// ---- the table ------------------------------------------------------------------------------

/// Expected exit status of `check`: a fixed one, or whatever `qemu-img check` exits.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Same as `qemu-img check FILE`.
    AsQemu,
    /// This status (the case says why it differs from qemu-img's, or qemu-img cannot say).
    Is(i32),
}

/// Expected exit statuses, one field per command (adding a command is one field here, one
/// entry in [`commands`], and one value per case).
#[derive(Debug, Clone, Copy)]
struct Expect {
    info: i32,
    check: Check,
    verify: i32,
    qcow2: i32,
    raw: i32,
}

struct Case {
    build: fn(&Workdir) -> String,
    expect: Expect,
    /// Why these statuses.
    why: &'static str,
}

use Check::{AsQemu, Is};

/// Statuses (SPEC): info/verify/convert 0 ok, 1 unsafe or invalid image, 2 could not do the
/// job; check: qemu-img's (0 clean, 1 cannot check, 2 corruptions, 3 leaks, 63 no check).
fn cases() -> Vec<Case> {
    let e = |info, check, verify, qcow2, raw| Expect {
        info,
        check,
        verify,
        qcow2,
        raw,
    };
    vec![
        Case {
            build: l1_size_claims_terabytes,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "l1_size above QEMU's 32 MiB L1 limit: invalid-header; qemu-img cannot open it",
        },
        Case {
            build: l1_size_2_pow_31,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "2^31 L1 entries: invalid-header, refused before any allocation",
        },
        Case {
            build: refcount_table_claims_terabytes,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "refcount table above QEMU's 8 MiB limit: invalid-header",
        },
        Case {
            build: l1_offset_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "the L1 table lies past the end: truncated",
        },
        Case {
            build: refcount_table_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "the refcount table lies past the end: truncated",
        },
        Case {
            build: l2_table_past_the_end,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "info reads headers only, so the image looks valid; check finds the L2 table past the end (qemu-img: corruption); convert cannot read guest data there: invalid image",
        },
        Case {
            build: data_cluster_past_the_end,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "a data cluster past the end: check's corruption, convert's invalid image",
        },
        Case {
            build: l1_table_on_the_header,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "the L1 table on top of the header: info's invalid-header (stricter than QEMU, which opens it and reads the header as L1 entries), so verify and convert refuse it; check gives qemu-img's corruption verdict",
        },
        Case {
            build: l1_table_on_the_refcount_table,
            expect: e(0, AsQemu, 0, 0, 0),
            why: "QEMU opens it (it checks overlaps only before writing), so info and convert read it as QEMU does: the refcount table's entries as L1 entries, whose L2 table (the refcount block) reads as zero clusters; check finds the corruption",
        },
        Case {
            build: l2_table_on_the_l1_table,
            expect: e(0, AsQemu, 0, 0, 0),
            why: "the L1 table doubles as an L2 table: check's corruption; convert reads what QEMU reads (the L1 entries as L2 entries)",
        },
        Case {
            build: l2_entry_points_at_the_l1_table,
            expect: e(0, AsQemu, 0, 0, 0),
            why: "a data cluster on the L1 table: check's corruption; convert copies those bytes as qemu-img convert does",
        },
        Case {
            build: refcount_block_points_at_itself,
            expect: e(0, AsQemu, 0, 0, 0),
            why: "refcounts are not used to read guest data: check finds the corruption, the rest is unaffected",
        },
        Case {
            build: refcount_block_on_the_l1_table,
            expect: e(0, AsQemu, 0, 0, 0),
            why: "a refcount block on the L1 table: check's corruption only",
        },
        Case {
            build: l1_entries_share_one_l2_table,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "4096 L1 entries share one L2 table: check's corruption; convert refuses it (the guest data is multiplied 4096 times by the metadata)",
        },
        Case {
            build: l2_entries_share_one_data_cluster,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "8192 L2 entries share one data cluster: check's corruption; convert refuses it",
        },
        Case {
            build: compressed_descriptor_longer_than_the_file,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "the compressed data runs past the end and is not a valid stream: invalid image for convert",
        },
        Case {
            build: compressed_zstd_bomb,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "a zstd frame of 256 MiB in one 64 KiB cluster: decompression stops at the cluster size and, as in QEMU, an unfinished frame is an invalid cluster; check does not read data clusters",
        },
        Case {
            build: compressed_zstd_bomb_in_a_short_last_cluster,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "the same in the last cluster of a disk that ends inside it: a read up to the disk's end checks the whole frame, as QEMU's does",
        },
        Case {
            build: compressed_zlib_bomb,
            expect: e(0, AsQemu, 0, 0, 0),
            why: "a deflate stream of 100 MiB in one 64 KiB cluster: inflation stops when the cluster is full and, as in QEMU, the cluster is its first 64 KiB (zeros here)",
        },
        Case {
            build: l2_entries_share_one_compressed_cluster,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "1024 guest clusters read one compressed cluster: check's corruption; convert refuses it",
        },
        Case {
            build: header_length_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "header_length past the cluster: invalid-header",
        },
        Case {
            build: header_extension_runs_past_the_cluster,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "an extension longer than the header cluster: invalid-header",
        },
        Case {
            build: snapshot_table_claims_too_much,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "65536 snapshot entries that are not there: truncated; check cannot read the snapshot table (1, as qemu-img)",
        },
        Case {
            build: virtual_size_2_pow_63,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "2^63 bytes: above QEMU's limit, invalid-header",
        },
        Case {
            build: virtual_size_8_eib_consistent_l1,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "8 EiB needs an L1 table above QEMU's 32 MiB limit: invalid-header",
        },
        Case {
            build: qcow2_and_iso_polyglot,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "qcow2 and ISO 9660 at once: multiple-formats; qemu-img checks it as qcow2",
        },
        Case {
            build: truncated_inside_the_l2_table,
            expect: e(0, AsQemu, 0, 1, 1),
            why: "the file ends inside the L2 table: check's corruption, convert's invalid image",
        },
        Case {
            build: backing_file_name_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a backing file name past the end: invalid-header",
        },
        Case {
            build: vmdk_descriptor_names_etc_passwd,
            expect: e(1, Is(1), 1, 1, 1),
            why: "a VMDK extent naming another file: vmdk-extent-path; check does not reproduce vmdk's check (exit 1; qemu-img would read /etc/passwd)",
        },
        Case {
            build: vhd_bat_entry_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a BAT entry past the end: truncated, as QEMU's vpc_open says; qemu-img check cannot open it (1)",
        },
        Case {
            build: vhd_bat_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "the BAT lies past the end: truncated; qemu-img check cannot open it (1)",
        },
        Case {
            build: vhd_block_size_2_gib,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a 2 GiB block size: invalid-header",
        },
        Case {
            build: vdi_claims_4_billion_blocks,
            expect: e(1, Is(1), 1, 1, 1),
            why: "2^32 - 1 blocks for an 8 EiB disk: invalid-header; check does not reproduce vdi's check (1, as when qemu-img cannot open it)",
        },
        Case {
            build: qed_table_claims_terabytes,
            expect: e(1, Is(1), 1, 1, 1),
            why: "a QED table of 2^32 - 1 clusters: invalid-header (QED is refused outright anyway); check does not reproduce qed's check (1)",
        },
        Case {
            build: vhdx_bat_entry_offset_overflows,
            expect: e(1, Is(1), 1, 1, 1),
            why: "a BAT entry whose block ends past 2^64: truncated, as QEMU's vhdx_open refuses it; check does not reproduce vhdx's check (1, as when qemu-img cannot open it)",
        },
        Case {
            build: vmdk_grain_table_entries_share_one_grain,
            expect: e(0, Is(1), 0, 1, 1),
            why: "grain table entries sharing one grain: info reads no grain table (safe, 0); convert refuses the grain bomb (1); check does not reproduce vmdk's check (1)",
        },
        Case {
            build: vmdk_capacity_2_pow_62_bytes,
            expect: e(0, Is(1), 0, 1, 1),
            why: "a 4 EiB capacity: QEMU's 32-bit L1 size wraps to 0, so qemu-img info opens it and so does info (0); convert refuses the 512 GiB grain directory it implies (1), never allocating it",
        },
        Case {
            build: vmdk_stream_marker_claims_4_gib,
            expect: e(0, Is(1), 0, 1, 1),
            why: "a grain marker claiming 4 GiB of compressed data: info reads no grain (0); convert refuses it without allocating it (1)",
        },
        Case {
            build: vdi_block_map_entries_share_one_block,
            expect: e(0, Is(1), 0, 1, 1),
            why: "block map entries sharing one block: info reads no block map (0); convert refuses it (1); check does not reproduce vdi's check (1)",
        },
        Case {
            build: vhdx_bat_entries_share_one_block,
            expect: e(0, Is(1), 0, 1, 1),
            why: "two BAT entries naming one block: info checks each entry's place, not sharing (0); convert refuses it (1); check does not reproduce vhdx's check (1)",
        },
        Case {
            build: qcow_v1_size_2_pow_63,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a qcow v1 of 8 EiB: the qcow rule and invalid-header (QEMU's \"Image too large\"), never an allocation",
        },
        Case {
            build: qcow_v1_size_wraps,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a qcow v1 whose size rounds up past 2^64: invalid-header, as QEMU",
        },
        Case {
            build: qcow_v1_cluster_bits_63,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a qcow v1 with 2^63-byte clusters: invalid-header, as QEMU",
        },
        Case {
            build: qcow_v1_l1_table_at_2_pow_64,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a qcow v1 whose L1 table ends past 2^64: invalid-header (QEMU's read fails)",
        },
        Case {
            build: qcow_v1_backing_name_past_the_end,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "a qcow v1 whose backing name lies past the end (zeros to QEMU, which opens it: check 63): the qcow rule refuses it",
        },
        Case {
            build: empty_file,
            expect: e(0, AsQemu, 1, 0, 0),
            why: "an empty file is an empty raw disk (no check: 63); verify is unverified (1) because the digests of empty input are placeholders, never a pass",
        },
        Case {
            build: qcow2_magic_only,
            expect: e(1, AsQemu, 1, 1, 1),
            why: "the qcow2 magic and nothing else: truncated",
        },
    ]
}

/// The commands every case runs, with the expected status of each.
fn commands(file: &str, md5: &str, sha512: &str) -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        ("info", s(&["info", file])),
        ("hash", s(&["hash", file])),
        ("check", s(&["check", file])),
        (
            "verify",
            s(&["verify", file, "--checksum", md5, "--os-hash-value", sha512]),
        ),
        ("qcow2", s(&["convert", file, "out.qcow2", "-O", "qcow2"])),
        ("raw", s(&["convert", file, "out.raw", "-O", "raw"])),
    ]
}

fn expected(e: &Expect, command: &str, qemu_check: i32) -> i32 {
    match command {
        "info" => e.info,
        // A digest is over the bytes as stored, whatever they claim: every readable file
        // hashes, and the digests must be coreutils' (checked in the loop).
        "hash" => 0,
        "check" => match e.check {
            AsQemu => qemu_check,
            Is(code) => code,
        },
        "verify" => e.verify,
        "qcow2" => e.qcow2,
        "raw" => e.raw,
        other => panic!("no expectation for {other}"),
    }
}

/// Files in `w` other than `keep`.
fn extra_files(w: &Workdir, keep: &[String]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(n))
        .collect();
    v.sort();
    v
}

#[test]
fn every_hostile_file_gets_the_documented_status_a_message_and_no_leftovers() {
    let mut failures = Vec::new();
    for case in cases() {
        let w = Workdir::new();
        let file = (case.build)(&w);
        let keep = extra_files(&w, &[]);
        let md5 = tool_hex(&w, "md5sum", &file);
        let sha512 = tool_hex(&w, "sha512sum", &file);
        let qemu_check = qemu_check_code(&w, &file);
        for (command, args) in commands(&file, &md5, &sha512) {
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let started = Instant::now();
            let out = run_bounded(&w, &argv);
            let took = started.elapsed();
            let want = expected(&case.expect, command, qemu_check);
            // Shown with --nocapture: the whole matrix, for review.
            println!(
                "{file:<28} {command:<7} exit {:<3} {:>9.1?}  {}",
                out.code,
                took,
                out.stderr.lines().next().unwrap_or("")
            );
            let mut problems = Vec::new();
            if out.code != want {
                problems.push(format!("exit {} (wanted {want})", out.code));
            }
            if out.stderr.contains("panicked") || out.stderr.contains("RUST_BACKTRACE") {
                problems.push("panicked".into());
            }
            // A failure says so on stderr, in sentences that start with the program name and
            // name the file; check's 2 and 3 are reports (on stdout), not failures to run.
            let is_report = command == "check" && (out.code == 2 || out.code == 3);
            if out.code != 0 && !is_report {
                let lines: Vec<&str> = out.stderr.lines().collect();
                if lines.is_empty() {
                    problems.push("nothing on stderr".into());
                }
                for l in &lines {
                    if !l.starts_with("vmimage: ") || !l.contains(&file) {
                        problems.push(format!("stderr line does not name the file: {l:?}"));
                    }
                }
            }
            // A conversion leaves its output when it succeeded, and nothing otherwise.
            let left = extra_files(&w, &keep);
            let allowed: &[&str] = match (command, out.code) {
                ("qcow2", 0) => &["out.qcow2"],
                ("raw", 0) => &["out.raw"],
                _ => &[],
            };
            if left.iter().any(|f| !allowed.contains(&f.as_str())) {
                problems.push(format!("left behind: {left:?}"));
            }
            for f in left {
                let _ = std::fs::remove_file(w.join(&f));
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{file} {command}: {} ({:?}; {})\n    stderr: {}",
                    problems.join("; "),
                    took,
                    case.why,
                    out.stderr.trim_end().replace('\n', "\n            ")
                ));
            }
            if command == "hash"
                && !(out.stdout.contains(&format!("MD5 ({file}) = {md5}"))
                    && out.stdout.contains(&format!("SHA512 ({file}) = {sha512}")))
            {
                problems.push(format!("digests differ from coreutils': {}", out.stdout));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_vmdk_extent_naming_etc_passwd_is_never_opened() {
    // The descriptor's extent is the one file that must not be read: info describes the
    // descriptor alone (its actual size counts the descriptor only).
    let w = Workdir::new();
    let file = vmdk_descriptor_names_etc_passwd(&w);
    let out = run_bounded(&w, &["info", "--json", &file]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("vmdk-extent-path"), "{text}");
    assert!(
        !text.contains("root:"),
        "/etc/passwd content leaked: {text}"
    );
}
