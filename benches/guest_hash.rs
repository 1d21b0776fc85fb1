//! `vmimage hash --guest` cost: the blkhash guest hash of a qcow2 holding 64 MiB of data in a
//! 1 GiB disk, of the same disk compressed, and of a 16 GiB sparse raw file holding the same
//! 64 MiB (holes found with `SEEK_DATA`, never read). All three should cost about the same:
//! the digests of the data blocks, spread over every core. Run with
//! `cargo bench --bench guest_hash`; `benches/guest-hash-side-by-side.sh` compares with
//! `openssl dgst -sha256` over the allocated bytes alone.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmimage::guest_hash::{GuestHashOptions, hash_path};

fn run(dir: &Path, program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect(program)
        .status
        .success();
    assert!(ok, "{program} {args:?}");
}

fn bench_guest_hash(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(d, "qemu-img", &["create", "-f", "raw", "data.raw", "1G"]);
    // 64 MiB of random data in 16 runs of 4 MiB, 60 MiB apart.
    for i in 0..16u64 {
        run(
            d,
            "dd",
            &[
                "if=/dev/urandom",
                "of=data.raw",
                "bs=4M",
                "count=1",
                &format!("seek={}", i * 16),
                "conv=notrunc",
                "status=none",
            ],
        );
    }
    run(
        d,
        "qemu-img",
        &["convert", "-O", "qcow2", "data.raw", "data.qcow2"],
    );
    run(
        d,
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", "data.raw", "packed.qcow2"],
    );
    run(d, "truncate", &["-s", "16G", "data.raw"]);
    let options = GuestHashOptions::default();
    let mut group = c.benchmark_group("guest_hash");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(64 << 20));
    for name in ["data.qcow2", "packed.qcow2", "data.raw"] {
        let path = d.join(name);
        group.bench_function(name, |b| b.iter(|| hash_path(&path, &options).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, bench_guest_hash);
criterion_main!(benches);
