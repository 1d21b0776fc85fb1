//! `vmimage info` cost: inspecting an image reads a constant amount whatever its size.
//!
//! Images are made with qemu-img in a temporary directory: a 64 MiB qcow2, a 64 GiB qcow2 with
//! preallocated metadata (every L2 table present), a sparse 64 GiB raw disk, and a qcow2 with 256
//! internal snapshots (the snapshot table is the one structure `info` reads in full). The first
//! three should cost the same. Run with `cargo bench --bench info`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};

fn qemu_img(dir: &Path, args: &[&str]) {
    let ok = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("qemu-img")
        .status
        .success();
    assert!(ok, "qemu-img {args:?}");
}

fn bench_info(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    qemu_img(d, &["create", "-f", "qcow2", "small.qcow2", "64M"]);
    qemu_img(
        d,
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "preallocation=metadata",
            "big.qcow2",
            "64G",
        ],
    );
    qemu_img(d, &["create", "-f", "raw", "big.raw", "64G"]);
    qemu_img(d, &["create", "-f", "qcow2", "snaps.qcow2", "1G"]);
    for i in 0..256 {
        qemu_img(d, &["snapshot", "-c", &format!("s{i}"), "snaps.qcow2"]);
    }
    let mut group = c.benchmark_group("info");
    for name in ["small.qcow2", "big.qcow2", "big.raw", "snaps.qcow2"] {
        let path = d.join(name);
        group.bench_function(name, |b| {
            b.iter(|| vmimage::inspect_path(&path).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench_info);
criterion_main!(benches);
